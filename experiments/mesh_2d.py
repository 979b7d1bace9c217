"""A wide network on a ("data", "model") mesh: per-device parameter memory and step time.

    python experiments/mesh_2d.py [--sizes 2048,4096,4096,10] [--batch 256] [--reps 3]

Runs itself in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(forced CPU devices) and times one training step (``jaxmlp.value_and_grad``, plain SGD,
jitted) on meshes of 1, 2 and 4 devices: (data, model) = (1, 1), (2, 1), (1, 2), (2, 2),
(1, 4), (4, 1). The hidden layers' W[l] rows and b[l] are split over "model"
(``jaxmlp.parallel.distributed.shard_params_2d``), X's columns over "data"; the output layer is
replicated. Reported per mesh: parameter bytes held by one device, the step's median
seconds, and the collectives in the compiled HLO.

Forced CPU devices share the machine's cores, so the step times show the partitioning's
overhead, not a speed-up; the memory column is what a model axis buys: the parameters per
device shrink by the model-axis size (minus the replicated output layer). The issue's
4096-8192-8192-10 (101 M parameters, 403 MB in float32) runs with ``--sizes
4096,8192,8192,10``; the default is a quarter of it, for a shared 2-core machine.
Writes ``results/mesh_2d/mesh_2d.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
MESHES = ((1, 1), (2, 1), (1, 2), (2, 2), (1, 4), (4, 1))


def child(args):
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    import jaxmlp
    from jaxmlp.parallel import distributed as D

    sizes = tuple(args.sizes)
    L = len(sizes) - 1
    net = jaxmlp.Network(sizes, ("relu",) * (L - 1) + ("softmax",), "categorical_cross_entropy")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((sizes[0], args.batch)).astype(np.float32)
    Y = np.eye(sizes[-1], dtype=np.float32)[:, rng.integers(0, sizes[-1], args.batch)]
    p0 = jaxmlp.init_params(net, jax.random.PRNGKey(0))

    @jax.jit
    def step(p, X, Y):
        J, g = jaxmlp.value_and_grad(net, p, X, Y)
        return J, jax.tree.map(lambda w, d: w - 0.01 * d, p, g)

    rows = []
    for data, model in MESHES:
        devices = jax.devices()[: data * model]
        mesh = D.make_mesh_2d(data, model, devices)
        p = D.shard_params_2d(net, mesh, p0)
        Xs = jax.device_put(X, NamedSharding(mesh, P(None, "data")))
        Ys = jax.device_put(Y, NamedSharding(mesh, P(None, "data")))
        hlo = step.lower(p, Xs, Ys).compile().as_text()
        per_device = sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(p))
        J, q = step(p, Xs, Ys)
        jax.block_until_ready(q)
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            J, q = step(q, Xs, Ys)
            jax.block_until_ready(q)
            ts.append(time.perf_counter() - t0)
        rows.append({"data": data, "model": model, "devices": data * model,
                     "param_bytes_per_device": int(per_device),
                     "param_bytes_total": int(sum(l.nbytes for l in jax.tree.leaves(p0))),
                     "step_median_s": float(np.median(ts)), "step_times_s": ts,
                     "collectives": sorted({c for c in ("all-reduce", "all-gather", "reduce-scatter",
                                                        "collective-permute", "all-to-all")
                                            if c in hlo}),
                     "cost": float(J)})
        print(json.dumps(rows[-1]), flush=True)
        del p, q, Xs, Ys
    return {"sizes": list(sizes), "batch": args.batch, "num_params": net.num_params, "rows": rows}


PROG = "mesh_2d.py"


def build_parser():
    """The command line (nothing run)."""
    from _common import cli, output

    ap = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2048,4096,4096,10", type=cli.positive_int_list,
                    metavar="N0,N1,...,NL",
                    help="layer widths n[0],...,n[L] of the network, at least two, each >= 1")
    ap.add_argument("--batch", type=cli.positive_int, default=256,
                    help="global batch m, examples per step (>= 1)")
    ap.add_argument("--reps", type=cli.positive_int, default=3,
                    help="timed steps per mesh, the median reported (>= 1)")
    output.add_out_arguments(ap, "results/mesh_2d")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    from _common import cli, output

    try:
        args = build_parser().parse_args(argv)
        if len(args.sizes) < 2:
            raise cli.UsageError(f"--sizes: expected at least two widths n[0],n[L], got "
                                 f"{args.sizes}")
        # the meshes run split the columns over up to 4 devices and the hidden layers' rows
        k = max(d * m for d, m in MESHES)
        hidden = [n for n in args.sizes[1:-1] if n % k]
        if hidden:
            raise cli.UsageError(f"--sizes: expected hidden widths that are multiples of {k} "
                                 f"(their rows are split over up to {k} devices), got "
                                 f"{','.join(map(str, args.sizes))}")
        if args.batch % k:
            raise cli.UsageError(f"--batch: expected a multiple of {k} (the columns are split "
                                 f"over up to {k} devices), got {args.batch}")
        if not args.child:
            output.resolve_out(args, "mesh_2d")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    if args.child:
        print("RESULT" + json.dumps(child(args)))
        return 0
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    load = os.getloadavg()
    proc = subprocess.run([sys.executable, __file__, "--child", "--sizes",
                           ",".join(map(str, args.sizes)), "--batch",
                           str(args.batch), "--reps", str(args.reps)], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    res = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][6:])
    res["load_average"] = [load, os.getloadavg()]
    res["cpu_count"] = os.cpu_count()
    print(f"network {'-'.join(map(str, res['sizes']))} ({res['num_params']:,} parameters), "
          f"batch {res['batch']}, float32, forced CPU devices on {os.cpu_count()} cores")
    print(f"{'data':>4} {'model':>5} {'devices':>7} {'MB params/device':>17} {'step s':>8}  collectives")
    for r in res["rows"]:
        print(f"{r['data']:4d} {r['model']:5d} {r['devices']:7d} "
              f"{r['param_bytes_per_device'] / 1e6:17.1f} {r['step_median_s']:8.3f}  "
              f"{', '.join(r['collectives']) or '-'}")
    from _common import benchmarking

    res["machine"] = benchmarking.machine_info()
    path = benchmarking.write_json(os.path.join(args.out, "mesh_2d.json"), res)
    print(f"load average {res['load_average'][0]} -> {res['load_average'][1]}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
