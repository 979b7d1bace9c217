"""Data-parallel scaling of one jaxmlp SGD step over 1, 2, 4, 8 devices.

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the flag must be set before
jax starts); on a machine with accelerators pass ``--real-devices`` to use the first
N real devices instead. The global batch is fixed (strong scaling): X and Y are
split by columns over the mesh (``jaxmlp.parallel.sharding.shard_columns``), the parameters
are replicated, and the same jitted step is called; XLA's SPMD partitioner inserts
the all-reduce of (B1), (B2) and J. Each run also checks that its gradient equals
the one-device gradient (max relative error) and that the compiled step contains
an all-reduce.

Forced CPU devices share the host's cores, so on a 2-core CPU this table shows the
mechanics and the partitioning overhead, not a speed-up.

Run:  python experiments/scaling.py [--shape medium] [--devices 1,2,4,8] [--reps 20]
Writes results/scaling/scaling.json (or ``--out DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common.networks import SHAPES, step_flops  # the benchmark shape suite
from _common import benchmarking, cli
from _common import output  # noqa: E402


def worker(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxmlp
    from jaxmlp.parallel import sharding

    sizes, m = SHAPES[args.shape]
    m = args.batch or m
    L = len(sizes) - 1
    net = jaxmlp.Network(sizes, ("relu",) * (L - 1) + ("softmax",), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((sizes[0], m)).astype(np.float32)
    Y = np.eye(sizes[-1], dtype=np.float32)[:, rng.integers(0, sizes[-1], m)]
    mesh = sharding.make_mesh(args.worker)
    sharding.check_batch_size(mesh, m)  # before compiling

    @jax.jit
    def step(p, X, Y):
        J, grads = jaxmlp.value_and_grad(net, p, X, Y)
        return J, jax.tree.map(lambda w, d: w - 1e-3 * d, p, grads)

    g_one = jaxmlp.value_and_grad(net, params, jnp.asarray(X), jnp.asarray(Y))[1]
    p = sharding.replicate(mesh, params)
    Xs, Ys = sharding.shard_batch(mesh, X, Y)
    g_mesh = jaxmlp.value_and_grad(net, p, Xs, Ys)[1]
    rel = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-30))
              for a, b in zip(jax.tree.leaves(g_mesh), jax.tree.leaves(g_one)))
    hlo = step.lower(p, Xs, Ys).compile().as_text()
    state = {"p": p}

    def call():
        J, state["p"] = step(state["p"], Xs, Ys)
        return J, state["p"]

    # one variant per process (the device count is fixed when jax starts): the protocol's
    # rounds are then repeated samples of this step
    timing = benchmarking.time_paired({"step": call}, rounds=args.reps, inner=args.inner,
                                      warmup=3, pause_s=0.002)
    p, times, med = state["p"], timing.per_round("step").tolist(), timing.median("step")
    print("RESULT" + json.dumps({
        "devices": args.worker, "device_kind": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(), "m": m, "per_device_m": m // args.worker,
        "median_s": med, "times_s": times, "iqr_s": [timing.summary("step")["q25_s"],
                                                     timing.summary("step")["q75_s"]],
        "load_before": timing.load_before, "load_after": timing.load_after, "examples_per_s": m / med,
        "gflops": step_flops(sizes, m) / med / 1e9, "grad_max_rel_err_vs_1_device": rel,
        "all_reduce_in_hlo": "all-reduce" in hlo, "params_replicated":
            all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(p)),
    }))


PROG = "scaling.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="medium", choices=list(SHAPES),
                   help=f"the network, one of {', '.join(SHAPES)}")
    p.add_argument("--batch", type=cli.positive_int, default=None,
                   help="global batch m, >= 1 (default: the shape's m)")
    p.add_argument("--devices", default="1,2,4,8", type=cli.positive_int_list, metavar="N[,N...]",
                   help="comma-separated device counts (each >= 1, dividing the batch m)")
    p.add_argument("--reps", type=cli.positive_int, default=20,
                   help="timed samples per device count (>= 1)")
    p.add_argument("--inner", type=cli.positive_int, default=3,
                   help="steps per timed sample (>= 1)")
    p.add_argument("--real-devices", action="store_true", help="use real accelerators, no forced CPU devices")
    output.add_out_arguments(p, "results/scaling")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    p = build_parser()
    try:
        args = p.parse_args(argv)
        if args.worker is None:
            counts = args.devices
            m = args.batch or SHAPES[args.shape][1]
            bad = [n for n in counts if m % n]
            if bad:
                p.error(f"--devices: the batch m = {m} must be divisible by every device count, "
                        f"got {bad}")
            output.resolve_out(args, "scaling")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    if args.worker is not None:
        return worker(args)
    rows = []
    for n in counts:
        env = dict(os.environ)
        if not args.real_devices:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
            env["JAX_PLATFORMS"] = "cpu"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--shape", args.shape,
               "--reps", str(args.reps), "--inner", str(args.inner)] + (["--batch", str(m)])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            sys.exit(f"scaling: the {n}-device run failed (exit {proc.returncode})")
        rows.append(json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][6:]))
        print(f"  {n} device(s) done", flush=True)
    base = rows[0]["median_s"]
    print(f"\n{'devices':>7s} {'m/device':>8s} {'ms/step':>9s} {'examples/s':>11s} {'speed-up':>8s} "
          f"{'grad err vs 1':>13s} {'all-reduce':>10s}")
    for r in rows:
        r["speedup_vs_first"] = base / r["median_s"]
        print(f"{r['devices']:7d} {r['per_device_m']:8d} {r['median_s'] * 1e3:9.2f} {r['examples_per_s']:11.0f} "
              f"{r['speedup_vs_first']:8.2f} {r['grad_max_rel_err_vs_1_device']:13.1e} "
              f"{str(r['all_reduce_in_hlo'] if r['devices'] > 1 else '-'):>10s}")
    doc = {"shape": args.shape, "sizes": list(SHAPES[args.shape][0]), "m": m,
           "forced_cpu_devices": not args.real_devices, "machine": benchmarking.machine_info(),
           "rows": rows}
    path = benchmarking.write_json(benchmarking.output_path(args.out) / "scaling.json", doc)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
