"""Ensembles: member-examples/s and % of the matmul peak of K networks trained in one call.

    python experiments/ensemble_speed.py [--ks 1,4,16,64,256] [--reps 7] [--quick]
    python experiments/ensemble_speed.py --breakdown 64   # each product of one K = 64 step, alone

Shapes (relu hidden layers, softmax output, categorical cross-entropy, float32, plain SGD):
``tiny`` 64-128-10, minibatch 128, and ``deep-narrow`` 100-(100 x 8)-10, minibatch 64 (the
shapes of ``experiments/benchmark.py``). One epoch = 8 minibatches (m = 8 b), shuffled.

Variants, for every K:

* ``vmap``: ``jaxmlp.train.ensemble.make_ensemble_epoch`` -- one compiled call trains K members,
  each with its own shuffle (its minibatch X_s is (K, n[0], b): every product is a
  K-batched matmul);
* ``vmap shared``: the same with ``shared_batches=True`` (one minibatch for all members:
  X_s is (n[0], b), and vmap makes layer 1's (F1) ONE dense product (K n[1], n[0]) x (n[0], b)
  and its (B1) (K n[1], b) x (b, n[0]); the script prints the dots of the compiled HLO);
* ``separate``: K calls of the single network's compiled epoch
  (``jaxmlp.train.step.make_train_epoch``), one per member, dispatched back to back;
* ``torch.func`` (when torch imports): ``torch.func.stack_module_state`` + ``vmap`` of
  ``grad(functional_call)`` over K ``nn.Sequential`` members, one shared minibatch, SGD
  update on the stacked tensors, 8 steps per epoch (rows as examples, torch's layout), one
  intra-op thread.

plus the peak: a float32 N x N matmul (XLA), timed in the same repetitions. FLOPs count the
matrix products only (``benchmark.step_flops``: (F1), (B1), (B3)), so % of peak is a lower
bound. Every variant is compiled and warmed up first, then the variants run interleaved
(``_common.benchmarking.time_paired``: order shuffled every round, block_until_ready); %
of peak and the ratio to ``separate`` are medians of per-repetition (paired) ratios; the
"best" columns compare each variant's fastest sample with the matmul's / separate's fastest
(on a machine shared with other jobs, the least disturbed samples).

Writes ``results/ensemble/ensemble_speed.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from _common import networks
from _common import output  # noqa: E402
from _common import benchmarking, cli
from jaxmlp.train import ensemble as E
from jaxmlp import train

SHAPES = {"tiny": networks.SHAPES["tiny"], "deep-narrow": networks.SHAPES["deep-narrow"]}
STEPS = 8
LR = 0.1


def _problem(sizes, b):
    X, Y, _ = networks.synthetic_data(sizes, STEPS * b)
    return jnp.asarray(X), jnp.asarray(Y)


def _chain(fn, state):
    """A zero-argument variant: one epoch ``state = fn(state)`` per call (chained)."""
    box = {"s": state}

    def call():
        box["s"] = fn(box["s"])
        return box["s"]

    return call


def make_vmap(net, K, b, X, Y, shared):
    opt = optax.sgd(LR)
    params = E.init_ensemble(net, jax.random.PRNGKey(0), K)
    opt_state = E.init_opt_state(opt, params)
    epoch = E.make_ensemble_epoch(net, opt, b, shared_batches=shared)
    key0 = jax.random.PRNGKey(1)
    keys = key0 if shared else E.member_keys(key0, K)
    split = train.split_key if shared else E._split_keys

    def one(s):
        p, o, k = s
        k, ek = split(k)
        p, o, _ = epoch(p, o, ek, X, Y)
        return p, o, k

    hlo = epoch.lower(params, opt_state, keys, X, Y).compile().as_text()
    return _chain(one, (params, opt_state, keys)), hlo


def make_separate(net, K, b, X, Y):
    opt = optax.sgd(LR)
    params = E.init_ensemble(net, jax.random.PRNGKey(0), K)
    members = [E.member(params, k) for k in range(K)]
    states = [(p, opt.init(p), k) for p, k in zip(members, E.member_keys(jax.random.PRNGKey(1), K))]
    epoch = train.make_train_epoch(net, opt, b)

    def one(ss):
        out = []
        for p, o, k in ss:
            k, ek = train.split_key(k)
            p, o, _ = epoch(p, o, ek, X, Y)
            out.append((p, o, k))
        return out

    return _chain(one, states)


def make_torch_func(sizes, K, b, X, Y):
    import torch
    from torch import nn
    from torch.func import functional_call, grad, stack_module_state, vmap

    torch.manual_seed(0)
    torch.set_num_threads(1)  # intra-op threads spin and lose on a shared, loaded machine
    L = len(sizes) - 1

    def mlp():
        layers = []
        for l in range(L):
            layers.append(nn.Linear(sizes[l], sizes[l + 1]))
            if l < L - 1:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    models = [mlp() for _ in range(K)]
    params, _ = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = mlp().to("meta")
    Xr = torch.from_numpy(np.asarray(X).T.copy())  # (m, n[0]): rows are examples
    yr = torch.from_numpy(np.argmax(np.asarray(Y), axis=0))
    m = Xr.shape[0]

    def loss(p, x, y):
        return nn.functional.cross_entropy(functional_call(base, p, (x,)), y)

    g = vmap(grad(loss), in_dims=(0, None, None))
    box = {"p": params}

    def call():
        p = box["p"]
        perm = torch.randperm(m)
        for s in range(STEPS):
            idx = perm[s * b:(s + 1) * b]
            grads = g(p, Xr[idx], yr[idx])
            p = {n: p[n] - LR * grads[n] for n in p}
        box["p"] = p
        return None

    return call


def dots(hlo: str) -> list[str]:
    """The dot instructions of a compiled HLO text: output shape and dimension numbers."""
    out = []
    for line in hlo.splitlines():
        if " dot(" in line:
            lhs = line.split("=", 1)[1].strip()
            shape = lhs.split(" ", 1)[0]
            dims = [t for t in line.split(", ") if "dims=" in t]
            out.append(f"{shape} {' '.join(d.split('metadata')[0] for d in dims)}".strip())
    return out


def run(args):
    Ks = args.ks
    torch_ok = networks.available("torch") and not args.no_torch
    N = args.n
    mm = networks.make_matmul_xla(N)
    mm_flops = 2 * N ** 3
    result = {"protocol": __doc__.split("\n\n")[1], "steps_per_epoch": STEPS, "matmul_N": N,
              "machine": benchmarking.machine_info(),
              "load_average_start": benchmarking.load_average(), "shapes": {}}
    for shape in args.shapes:
        sizes, b = SHAPES[shape]
        net = networks.mlp(sizes)
        X, Y = _problem(sizes, b)
        epoch_flops = STEPS * networks.step_flops(sizes, b)
        result["shapes"][shape] = {"sizes": list(sizes), "batch_size": b, "Ks": {}}
        for K in Ks:
            runners, hlos = {"matmul": mm}, {}
            runners["vmap"], hlos["vmap"] = make_vmap(net, K, b, X, Y, shared=False)
            runners["vmap shared"], hlos["vmap shared"] = make_vmap(net, K, b, X, Y, shared=True)
            runners["separate"] = make_separate(net, K, b, X, Y)
            if torch_ok:
                runners["torch.func"] = make_torch_func(sizes, K, b, X, Y)
            timing = benchmarking.time_paired(runners, reference="separate", rounds=args.reps,
                                              target_s=args.target, pause_s=args.pause,
                                              seed=len(result["shapes"]) * 1000 + K)
            times = {n: timing.per_round(n) for n in runners}
            t_mm = np.asarray(times["matmul"])
            t_sep = np.asarray(times["separate"])
            rows = {}
            for name, ts in times.items():
                ts = np.asarray(ts)
                if name == "matmul":
                    rows[name] = {"median_s": float(np.median(ts)),
                                  "gflops": mm_flops / float(np.median(ts)) / 1e9,
                                  "best_gflops": mm_flops / float(ts.min()) / 1e9,
                                  "times_s": ts.tolist()}
                    continue
                flops = K * epoch_flops
                rows[name] = {
                    "median_s_per_epoch": float(np.median(ts)),
                    "member_examples_per_s": K * STEPS * b / float(np.median(ts)),
                    "gflops": flops / float(np.median(ts)) / 1e9,
                    "fraction_of_peak_paired": float(np.median((flops / ts) / (mm_flops / t_mm))),
                    "speedup_vs_separate_paired": float(np.median(t_sep / ts)),
                    # best sample of each (the least disturbed one on a shared machine)
                    "fraction_of_peak_best": float((flops / ts.min()) / (mm_flops / t_mm.min())),
                    "speedup_vs_separate_best": float(t_sep.min() / ts.min()),
                    "times_s": ts.tolist(),
                }
            rows["dots"] = {n: dots(h) for n, h in hlos.items()}
            result["shapes"][shape]["Ks"][str(K)] = rows
            _print_row(shape, K, rows)
    result["load_average_end"] = benchmarking.load_average()
    summarize_vs_run_peak(result)
    path = benchmarking.write_json(os.path.join(args.out, "ensemble_speed.json"), result)
    print(f"peak: float32 {N}x{N} matmul, {rows['matmul']['gflops']:.1f} GFLOP/s in the last "
          f"block; load average {result['load_average_start']} -> {result['load_average_end']}")
    print(f"wrote {path}")
    return result


def breakdown(shape, K, reps, N=2048):
    """Where one step of K members with shared minibatches spends its time: each matrix
    product of the step, timed alone with the operand shapes of the compiled step (layer 1's
    (F1) and (B1) as ONE dense product over the K members, the other layers' products
    K-batched), against the whole step (an epoch / STEPS) and the N^3 matmul peak, in one
    paired run. The products' summed time bounds the step from below: its % of peak is the
    most the step could reach if everything else (bias, activations, seed, sums, update,
    minibatch gather) were free."""
    sizes, b = SHAPES[shape]
    net = networks.mlp(sizes)
    X, Y = _problem(sizes, b)
    runner, _ = make_vmap(net, K, b, X, Y, shared=True)
    r = np.random.default_rng(0)

    def arr(*shape):
        return jnp.asarray(r.normal(size=shape).astype(np.float32))

    dn = lambda lc, rc, batch=False: (((lc,), (rc,)), (((0,), (0,)) if batch else ((), ())))
    dot = jax.jit(lambda a, c, dims: jax.lax.dot_general(a, c, dims), static_argnums=2)
    n = sizes
    products = {  # name -> (operands, dimension numbers, flops)
        "(F1) layer 1, dense over K": ((arr(K * n[1], n[0]), arr(b, n[0])), dn(1, 1), 2 * K * n[1] * n[0] * b),
        "(B1) layer 1, dense over K": ((arr(K * n[1], b), arr(b, n[0])), dn(1, 0), 2 * K * n[1] * n[0] * b)}
    for l in range(2, len(n)):
        f = 2 * K * n[l] * n[l - 1] * b
        products[f"(F1) layer {l}, K-batched"] = ((arr(K, n[l], n[l - 1]), arr(K, n[l - 1], b)), dn(2, 1, True), f)
        products[f"(B1) layer {l}, K-batched"] = ((arr(K, n[l], b), arr(K, n[l - 1], b)), dn(2, 2, True), f)
        products[f"(B3) layer {l}, K-batched"] = ((arr(K, n[l], n[l - 1]), arr(K, n[l], b)), dn(1, 1, True), f)
    calls = {"step (epoch / %d)" % STEPS: runner, "matmul": networks.make_matmul_xla(N)}
    for name, (ops, dims, _) in products.items():
        calls[name] = (lambda ops=ops, dims=dims: dot(*ops, dims))
    timing = benchmarking.time_paired(calls, reference="matmul", rounds=reps, target_s=0.05)
    peak = 2 * N ** 3 / timing.median("matmul")
    step_s = timing.median("step (epoch / %d)" % STEPS) / STEPS
    step_flops = K * networks.step_flops(sizes, b)
    rows = {}
    print(f"{shape}, K = {K}, shared minibatches of {b}: one step = {step_flops / 1e6:.0f} MFLOP "
          f"of products; peak {peak / 1e9:.1f} GFLOP/s ({N}^3 matmul, same run)")
    print(f"{'':34s} {'ms':>8s} {'GFLOP/s':>8s} {'% peak':>7s}")
    total = 0.0
    for name, (_, _, f) in products.items():
        t = timing.median(name)
        total += t
        rows[name] = {"median_s": t, "flops": f, "fraction_of_peak": f / t / peak}
        print(f"{name:34s} {1e3 * t:8.3f} {f / t / 1e9:8.1f} {100 * f / t / peak:7.1f}")
    rows["products, summed"] = {"median_s": total, "flops": step_flops,
                                "fraction_of_peak": step_flops / total / peak}
    rows["step"] = {"median_s": step_s, "flops": step_flops,
                    "fraction_of_peak": step_flops / step_s / peak}
    for name in ("products, summed", "step"):
        row = rows[name]
        print(f"{name:34s} {1e3 * row['median_s']:8.3f} {step_flops / row['median_s'] / 1e9:8.1f} "
              f"{100 * row['fraction_of_peak']:7.1f}")
    print(f"the step outside its products: {1e3 * (step_s - total):.3f} ms "
          f"({100 * (step_s - total) / step_s:.0f} % of the step)")
    return {"shape": shape, "K": K, "batch_size": b, "peak_gflops": peak / 1e9, "rows": rows,
            "timing": timing.to_json(), "machine": benchmarking.machine_info()}


_HEADER = False


def summarize_vs_run_peak(result):
    """Adds, and prints, each variant's best sample against the run's best matmul sample.

    On a machine shared with other jobs the paired ratios swing with the neighbours' load
    (the multi-threaded peak matmul suffers more than a small network); the fastest sample of
    each is the least disturbed, so this column is the steadier estimate of % of peak.
    """
    peak = max(r["matmul"]["best_gflops"] for sh in result["shapes"].values()
               for r in sh["Ks"].values())
    result["run_peak_gflops"] = peak
    print(f"\nbest samples against the run's best matmul, {peak:.1f} GFLOP/s:")
    print(f"{'shape':12s} {'K':>4s} " + " ".join(f"{v:>24s}" for v in
                                                ("vmap", "vmap shared", "separate", "torch.func")))
    for shape, sh in result["shapes"].items():
        flops_epoch = STEPS * networks.step_flops(tuple(sh["sizes"]), sh["batch_size"])
        for K, rows in sh["Ks"].items():
            cells = []
            for v in ("vmap", "vmap shared", "separate", "torch.func"):
                if v not in rows:
                    cells.append(f"{'-':>24s}")
                    continue
                best = min(rows[v]["times_s"])
                frac = int(K) * flops_epoch / best / 1e9 / peak
                rows[v]["fraction_of_run_peak_best"] = frac
                ex = int(K) * STEPS * sh["batch_size"] / best
                cells.append(f"{100 * frac:7.1f}% {ex:>12,.0f} ex/s")
            print(f"{shape:12s} {int(K):4d} " + " ".join(cells))


def _print_row(shape, K, rows):
    global _HEADER
    if not _HEADER:
        print(f"{'shape':12s} {'K':>4s} {'variant':12s} {'member-ex/s':>12s} {'GFLOP/s':>8s} "
              f"{'%peak':>6s} {'x separate':>10s} {'%peak best':>10s} {'x sep. best':>11s}")
        _HEADER = True
    for name, row in rows.items():
        if name in ("matmul", "dots"):
            continue
        print(f"{shape:12s} {K:4d} {name:12s} {row['member_examples_per_s']:12,.0f} "
              f"{row['gflops']:8.1f} {100 * row['fraction_of_peak_paired']:6.1f} "
              f"{row['speedup_vs_separate_paired']:10.2f} "
              f"{100 * row['fraction_of_peak_best']:10.1f} {row['speedup_vs_separate_best']:11.2f}")
    dense = [d for d in rows["dots"]["vmap shared"] if "lhs_batch" not in d]
    print(f"{'':12s} {'':4s} peak {rows['matmul']['gflops']:.1f} GFLOP/s (median); "
          + (f"un-batched dots of 'vmap shared' (layer 1's (F1), (B1)): {dense}" if K > 1 else ""))
    sys.stdout.flush()


PROG = "ensemble_speed.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="tiny,deep-narrow", type=cli.name_list(SHAPES),
                   metavar="NAME[,NAME...]",
                   help=f"comma-separated networks to time, of {', '.join(SHAPES)}")
    p.add_argument("--ks", default="1,4,16,64,256", type=cli.positive_int_list,
                   metavar="K[,K...]", help="comma-separated ensemble sizes K (members, >= 1)")
    p.add_argument("--reps", type=cli.positive_int, default=7,
                   help="paired timing rounds per shape and K (>= 1)")
    p.add_argument("--target", type=cli.positive_float, default=0.1,
                   help="seconds per timed sample (> 0)")
    p.add_argument("--pause", type=cli.nonnegative_float, default=0.02,
                   help="seconds of pause before each sample (>= 0)")
    p.add_argument("--n", type=cli.positive_int, default=None,
                   help="N of the N x N peak matmul, >= 1 (default 2048; 1024 with --quick)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave out the torch.func variant even when torch is installed")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: N = 1024 unless --n is given")
    output.add_out_arguments(p, "results/ensemble")
    p.add_argument("--breakdown", metavar="K", type=cli.positive_int,
                   help="instead of the table: the products of one shared-minibatch step of K "
                        "members (>= 1) of each shape, timed alone, against the step")
    return p


def parse_args(argv=None):
    """The parsed command line with ``args.out`` resolved; UsageError on a bad value."""
    args = build_parser().parse_args(argv)
    output.resolve_out(args, "ensemble_speed")
    if args.n is None:
        args.n = 1024 if args.quick else 2048
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    t0 = time.perf_counter()
    if args.breakdown is not None:
        doc = {s: breakdown(s, args.breakdown, args.reps) for s in args.shapes}
        path = benchmarking.write_json(
            os.path.join(args.out, f"breakdown_K{args.breakdown}.json"), doc)
        print(f"wrote {path}")
    else:
        run(args)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
