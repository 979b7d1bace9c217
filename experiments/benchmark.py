"""Benchmark one training step (forward, gradient, SGD update) across frameworks.

Variants, on a fixed suite of shapes (relu hidden layers, softmax output,
categorical cross-entropy, float32, column-major for JAX):

  (a) jaxmlp      jaxmlp.value_and_grad: the hand-derived recurrences (F1)-(B4).
  (b) autodiff    jax.value_and_grad of jaxmlp.loss, the same SGD update.
  (c) torch       PyTorch eager autograd (nn.Linear stack, F.cross_entropy,
                  torch.optim.SGD), when torch is importable; default threads, OpenMP
                  waiting passively (OMP_WAIT_POLICY=PASSIVE unless set).
  (d) equinox     an equinox.nn.MLP with optax.sgd, when equinox is importable.

plus the machine's matrix-multiply peak: a float32 N x N matmul (XLA, and
torch.matmul when torch is loaded), timed inside the same repetition loop.

FLOPs are counted per matrix product only, 2 * rows * inner * cols each:
(F1) Z[l] = W[l] A[l-1] and (B1) dW[l] = dZ[l] A[l-1]^T for every layer, and
(B3) dA[l-1] = W[l]^T dZ[l] for l >= 2 (dA[0] is never formed). Elementwise work
(bias, activations, softmax, update) is not counted, so "fraction of peak" is a
lower bound of how busy the matrix units are.

Protocol: :func:`_common.benchmarking.time_paired` (compile first, then ``--reps``
rounds in which every variant runs once in a shuffled order, each sample after a short
pause (and, for the steps, one untimed hand-over step), ``block_until_ready``, per-round
ratios to (a)).
A step sample lasts >= ~20 ms (several steps on small shapes); the peak matmul is one call.
Two passes: a JAX-only pass ((a), (b), (d), XLA matmul) before torch is imported, then a
mixed pass ((a), (c), both matmuls). Reported: median seconds per step, the paired ratio
to (a) (median and IQR of the per-round ratios), GFLOP/s, and the paired fraction of the
peak (this round's step rate over this round's matmul rate).

Run:  python experiments/benchmark.py [--shapes tiny,medium] [--reps 20] [--quick]
Writes benchmark.json and benchmark.png to a new runs/benchmark-<time>/ folder (``--out DIR``:
DIR, relative to the working folder; ``--results``: results/benchmark/).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np

from _common import benchmarking, cli
from _common import output
from _common.networks import (  # noqa: F401  (names the tests and other code read here)
    SHAPES, Product, available, hlo_summary, import_torch, make_matmul_xla, matrix_products, mlp,
    step_flops, synthetic_data)

VARIANTS = ("jaxmlp", "autodiff", "torch", "equinox")
F32_MATMULS = ("matmul_xla", "matmul_torch")  # the peak is a float32 matmul
LR = 1e-3


# ----------------------------------------------------------------------------- variants
def _jax_step_runner(step, params, X, Y):
    """One chained step per call: p <- step(p, X, Y); returns (J, p) for blocking."""
    state = {"p": params}

    def call():
        J, state["p"] = step(state["p"], X, Y)
        return J, state["p"]

    return call


def jax_step(variant, sizes, m, compute_dtype=None):
    """The jitted SGD step of (a) or (b) and its arguments: (step, params, X, Y).

    (a) "jaxmlp": jaxmlp.value_and_grad (no autodiff); (b) "autodiff": jax.value_and_grad
    of jaxmlp.loss (the oracle, as a compared variant); the same update.
    """
    import jax
    import jax.numpy as jnp

    import jaxmlp

    net = mlp(sizes)
    X, Y, _ = synthetic_data(sizes, m)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    if variant == "jaxmlp":
        def value_and_grad(p, X, Y):
            return jaxmlp.value_and_grad(net, p, X, Y, compute_dtype=compute_dtype)
    else:
        def value_and_grad(p, X, Y):
            return jax.value_and_grad(lambda q: jaxmlp.loss(net, q, X, Y))(p)

    @jax.jit
    def step(p, X, Y):
        J, grads = value_and_grad(p, X, Y)
        return J, jax.tree.map(lambda w, d: w - LR * d, p, grads)

    return step, params, jnp.asarray(X), jnp.asarray(Y)


def make_jaxmlp(sizes, m, compute_dtype=None):
    """(a) SGD on jaxmlp.value_and_grad (no autodiff)."""
    return _jax_step_runner(*jax_step("jaxmlp", sizes, m, compute_dtype))


def make_autodiff(sizes, m):
    """(b) SGD on jax.value_and_grad of jaxmlp.loss (the oracle, as a compared variant)."""
    return _jax_step_runner(*jax_step("autodiff", sizes, m))


def dump_hlo(shapes, out):
    """Compiled HLO of (a) and (b) per shape, written to ``out``; returns the summaries."""
    summaries = {}
    for s in shapes:
        sizes, m = SHAPES[s]
        for v in ("jaxmlp", "autodiff"):
            step, params, X, Y = jax_step(v, sizes, m)
            compiled = step.lower(params, X, Y).compile()
            text = compiled.as_text()
            (out / f"hlo_{s}_{v}.txt").write_text(text)
            mem = compiled.memory_analysis()
            summaries.setdefault(s, {})[v] = hlo_summary(text) | (
                {"temp_bytes": int(mem.temp_size_in_bytes)} if mem is not None else {})
    return summaries


def make_equinox(sizes, m):
    """(d) equinox.nn.MLP (per-example W x, vmapped over rows) with optax.sgd."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    widths = set(sizes[1:-1])
    if len(widths) != 1:
        raise ValueError(f"equinox.nn.MLP needs equal hidden widths, got {sizes}")
    model = eqx.nn.MLP(sizes[0], sizes[-1], sizes[1], len(sizes) - 2,
                       activation=jax.nn.relu, key=jax.random.PRNGKey(0))
    opt = optax.sgd(LR)
    X, _, labels = synthetic_data(sizes, m)
    Xr = jnp.asarray(X.T)  # (m, n[0]): equinox batches rows with vmap
    y = jnp.asarray(labels)

    def loss(model, Xr, y):
        logits = jax.vmap(model)(Xr)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @eqx.filter_jit
    def step(carry, Xr, y):
        model, opt_state = carry
        J, grads = eqx.filter_value_and_grad(loss)(model, Xr, y)
        updates, opt_state = opt.update(grads, opt_state)
        return J, (eqx.apply_updates(model, updates), opt_state)

    carry = (model, opt.init(eqx.filter(model, eqx.is_array)))
    return _jax_step_runner(step, carry, Xr, y)


def make_torch(sizes, m):
    """(c) PyTorch eager: nn.Linear stack on rows (m, n[0]), autograd, torch.optim.SGD."""
    torch = import_torch()
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    layers = []
    for l in range(1, len(sizes)):
        layers.append(nn.Linear(sizes[l - 1], sizes[l]))
        if l < len(sizes) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    X, _, labels = synthetic_data(sizes, m)
    Xr = torch.from_numpy(np.ascontiguousarray(X.T))
    y = torch.from_numpy(labels.astype(np.int64))

    def call():  # eager: done when it returns
        opt.zero_grad(set_to_none=True)
        J = F.cross_entropy(model(Xr), y)
        J.backward()
        opt.step()

    return call


def make_matmul_torch(N):
    torch = import_torch()

    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(N, N, generator=g), torch.randn(N, N, generator=g)
    return lambda: torch.matmul(A, B)


# ----------------------------------------------------------------------------- timing
def run_shape(name, variants, reps, quick, N, seed, pause, compute_dtype):
    """Both passes of one shape: {"sizes", "m", "flops_per_step", "products", "passes"}."""
    sizes, m = SHAPES[name]
    flops = step_flops(sizes, m)
    makers = {"jaxmlp": lambda: make_jaxmlp(sizes, m),
              "autodiff": lambda: make_autodiff(sizes, m),
              "equinox": lambda: make_equinox(sizes, m),
              "torch": lambda: make_torch(sizes, m)}
    if compute_dtype is not None:
        makers["jaxmlp_" + compute_dtype] = lambda: make_jaxmlp(sizes, m, compute_dtype)
    mm_flops = 2 * N**3
    result = {"sizes": list(sizes), "m": m, "flops_per_step": flops,
              "products": [dataclasses.asdict(p) | {"flops": p.flops} for p in matrix_products(sizes, m)],
              "passes": {}}

    def do_pass(label, names, matmuls):
        calls = {v: makers[v]() for v in names} | matmuls
        timing = benchmarking.time_paired(
            calls, reference="jaxmlp", rounds=reps, target_s=0.005 if quick else 0.02,
            inner={v: 1 for v in matmuls}, handover=[v for v in calls if v not in matmuls],
            pause_s=pause, seed=seed)
        peak_name = max((v for v in matmuls if v in F32_MATMULS),
                        key=lambda v: mm_flops / timing.median(v))
        peak_t = timing.per_round(peak_name)
        rows = {}
        for v in calls:
            fl = mm_flops if v in matmuls else flops
            row = timing.summary(v) | {"gflops": fl / timing.median(v) / 1e9}
            if v not in matmuls:
                # paired: this round's step rate over this round's matmul rate
                row["paired_fraction_of_peak"] = benchmarking.spread(
                    (flops / timing.per_round(v)) / (mm_flops / peak_t))
            rows[v] = row
        result["passes"][label] = {"peak_gflops": rows[peak_name]["gflops"], "peak_from": peak_name,
                                   "load_before": timing.load_before,
                                   "load_after": timing.load_after, "order": timing.order,
                                   "variants": rows}

    jax_names = [v for v in variants if v != "torch"]
    if compute_dtype is not None:
        jax_names.append("jaxmlp_" + compute_dtype)
    jax_matmuls = {"matmul_xla": make_matmul_xla(N)}
    if compute_dtype is not None:  # reported next to it, not used as the peak
        jax_matmuls["matmul_xla_" + compute_dtype] = make_matmul_xla(N, compute_dtype)
    do_pass("jax", jax_names, jax_matmuls)
    if "torch" in variants:
        do_pass("mixed", ["jaxmlp", "torch"],
                {"matmul_xla": make_matmul_xla(N), "matmul_torch": make_matmul_torch(N)})
    return result


def print_table(results):
    print(f"\n{'shape':12s} {'variant':16s} {'ms/step':>9s} {'/(a) med':>9s} {'/(a) pair':>9s}"
          f" {'IQR':>11s} {'GFLOP/s':>8s} {'%peak':>6s}  pass")
    for shape, r in results.items():
        for label, ps in r["passes"].items():
            for v, row in ps["variants"].items():
                frac = row.get("paired_fraction_of_peak", {}).get("median")
                pr = row["paired_ratio"]
                print(f"{shape:12s} {v:16s} {row['median_s'] * 1e3:9.3f} "
                      f"{row['ratio_of_medians']:9.3f} {pr['median']:9.3f} "
                      f"{pr['q25']:5.3f}-{pr['q75']:5.3f} {row['gflops']:8.1f} "
                      f"{'' if frac is None else f'{100 * frac:5.1f}%':>6s}  {label}")
            print(f"{'':12s} peak {ps['peak_gflops']:.1f} GFLOP/s from {ps['peak_from']}; "
                  f"load {ps['load_before'][0] if ps['load_before'] else '?'}")


def markdown_table(results) -> str:
    """The docs table: per shape, (a)'s time and rate, and every variant's paired ratio to (a)."""
    def get(shape, label, v, *keys):
        x = results[shape]["passes"].get(label, {}).get("variants", {}).get(v, {})
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        return x

    def fmt(x, spec, scale=1.0):
        return "-" if x is None else format(scale * x, spec)

    lines = ["| shape | (a) ms | (b)/(a) | (d)/(a) | (c)/(a) | (a) GFLOP/s | (a) % of peak "
             "| peak GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in results:
        lines.append(
            f"| {s} | {fmt(get(s, 'jax', 'jaxmlp', 'median_s'), '.3g', 1e3)} "
            f"| {fmt(get(s, 'jax', 'autodiff', 'paired_ratio', 'median'), '.2f')} "
            f"| {fmt(get(s, 'jax', 'equinox', 'paired_ratio', 'median'), '.2f')} "
            f"| {fmt(get(s, 'mixed', 'torch', 'paired_ratio', 'median'), '.2f')} "
            f"| {fmt(get(s, 'jax', 'jaxmlp', 'gflops'), '.0f')} "
            f"| {fmt(get(s, 'jax', 'jaxmlp', 'paired_fraction_of_peak', 'median'), '.0f', 100)} "
            f"| {fmt(results[s]['passes']['jax']['peak_gflops'], '.0f')} |")
    return "\n".join(lines)


def plot(results, path, info):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    shapes = list(results)
    series = {}
    for i, s in enumerate(shapes):
        for label, ps in results[s]["passes"].items():
            for v, row in ps["variants"].items():
                if v.startswith("matmul") or (label == "mixed" and v == "jaxmlp"):
                    continue
                series.setdefault(v, {})[i] = row
    width = 0.8 / max(1, len(series))
    for j, (v, rows) in enumerate(series.items()):
        xs = [i + j * width for i in rows]
        axes[0].bar(xs, [rows[i]["paired_ratio"]["median"] for i in rows], width, label=v)
        axes[1].bar(xs, [100 * rows[i]["paired_fraction_of_peak"]["median"] for i in rows], width,
                    label=v)
    for ax in axes:
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))], shapes)
        ax.legend(fontsize=8)
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("time / time of (a) jaxmlp (paired median, log)")
    axes[1].set_ylabel("% of float32 matmul peak (matrix products only)")
    fig.suptitle(f"one SGD training step, float32, {info['cpu_count']}-core {info['backend']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PROG = "benchmark.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(SHAPES), type=cli.name_list(SHAPES),
                   metavar="NAME[,NAME...]",
                   help=f"comma-separated subset of {', '.join(SHAPES)}")
    p.add_argument("--variants", default=",".join(VARIANTS), type=cli.name_list(VARIANTS),
                   metavar="NAME[,NAME...]",
                   help=f"comma-separated subset of {', '.join(VARIANTS)} that includes jaxmlp "
                        "(missing frameworks are skipped)")
    p.add_argument("--reps", type=cli.positive_int, default=None,
                   help="timed repetitions per variant, >= 1 (default 30; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="few repetitions, small peak matmul: a smoke run")
    p.add_argument("--matmul-n", type=cli.positive_int, default=None,
                   help="N of the N x N peak matmul, >= 1 (default 2048; 512 with --quick)")
    p.add_argument("--compute-dtype", choices=["bfloat16", "float16"], default=None,
                   help="also time (a) with bf16/f16 matrix products (compute_dtype=)")
    p.add_argument("--pause", type=cli.nonnegative_float, default=0.005,
                   help="seconds of pause before each sample (>= 0)")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0,
                   help="seed of the synthetic data and initialisation (>= 0)")
    p.add_argument("--hlo", action="store_true",
                   help="no timing: write the compiled HLO of (a) and (b) per shape (hlo_*.txt) "
                        "and print how each product is lowered")
    output.add_out_arguments(p, "results/benchmark")
    p.add_argument("--summarize", nargs="+", metavar="DIR",
                   help="no timing: the table of paired ratios of earlier runs (their "
                        "benchmark.json, e.g. results/benchmark/quiet1 quiet2 quiet3), one row per "
                        "shape and run")
    return p


def parse_args(argv=None):
    """The parsed command line with ``args.out`` resolved; UsageError on a bad value."""
    p = build_parser()
    args = p.parse_args(argv)
    if "jaxmlp" not in args.variants:
        p.error(f"--variants: expected a subset of {list(VARIANTS)} that includes 'jaxmlp', "
                f"got {args.variants}")
    output.resolve_out(args, "benchmark")
    args.reps = args.reps if args.reps is not None else (3 if args.quick else 30)
    args.matmul_n = args.matmul_n or (512 if args.quick else 2048)
    return args


def summarize(dirs) -> str:
    """Markdown: per shape and run, (b)/(a), (d)/(a), (c)/(a) (paired medians and IQRs; (c)
    from the mixed pass) and (a)'s paired fraction of the matmul peak."""
    runs = []
    for d in dirs:
        path = benchmarking.output_path(d) / "benchmark.json"
        if not path.is_file():
            raise SystemExit(f"--summarize: no benchmark.json in {d!r} ({path})")
        runs.append((d, json.loads(path.read_text())))

    def cell(row, key="paired_ratio", scale=1.0, digits=3):
        if row is None:
            return "-"
        r = row[key]
        return f"{scale * r['median']:.{digits}f} ({scale * r['q25']:.{digits}f}-{scale * r['q75']:.{digits}f})"

    lines = ["| shape | run | (b)/(a) autodiff | (d)/(a) Equinox | (c)/(a) torch | (a) % of peak |",
             "|---|---|---:|---:|---:|---:|"]
    for shape in SHAPES:
        for d, doc in runs:
            r = doc["shapes"].get(shape)
            if r is None:
                continue
            jp = r["passes"]["jax"]["variants"]
            mixed = r["passes"].get("mixed", {}).get("variants", {})
            lines.append(f"| {shape} | {d} | {cell(jp.get('autodiff'))} | {cell(jp.get('equinox'))} | "
                         f"{cell(mixed.get('torch'))} | "
                         f"{cell(jp['jaxmlp'], 'paired_fraction_of_peak', 100, 1)} |")
    return "\n".join(lines)


def main(argv=None):
    try:
        args = parse_args(argv)
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    if args.summarize:
        table = summarize(args.summarize)
        print(table)
        return table
    skipped = [v for v in args.variants if not available(v)]
    variants = [v for v in args.variants if available(v)]
    for v in skipped:
        print(f"note: variant {v!r} skipped: its framework is not installed", file=sys.stderr)
    if args.compute_dtype is not None:
        from jaxmlp.nn import checks

        checks.compute_dtype(args.compute_dtype)  # before compiling
    if args.hlo:
        out = benchmarking.output_path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summaries = dump_hlo(args.shapes, out)
        for s, by_variant in summaries.items():
            for v, h in by_variant.items():
                print(f"{s} {v}: {h['entry_instructions']} entry instructions, {h['fusions']} fusions, "
                      f"temp {h.get('temp_bytes', 0) / 2**20:.1f} MiB")
                for d in h["dots"]:
                    print(f"    {d['result']:<22s} {d['dims']:<52s} {d['runs_in']}")
        path = benchmarking.write_json(out / "hlo_summary.json", summaries)
        print(f"wrote {path} and hlo_*.txt")
        return summaries
    load_start = benchmarking.load_average()
    results = {}
    t_start = time.time()
    for s in args.shapes:
        print(f"shape {s} {SHAPES[s]} ...", flush=True)
        results[s] = run_shape(s, variants, args.reps, args.quick, args.matmul_n, args.seed,
                               args.pause, args.compute_dtype)
    info = benchmarking.machine_info()  # after the runs: torch's version when it was loaded
    print_table(results)
    print("\n" + markdown_table(results))
    print(benchmarking.describe(info))
    out = benchmarking.output_path(args.out)
    doc = {"machine": info, "config": {"reps": args.reps, "quick": args.quick, "variants": variants,
                                       "skipped": skipped, "matmul_n": args.matmul_n,
                                       "pause_s": args.pause, "lr": LR, "dtype": "float32",
                                       "compute_dtype": args.compute_dtype, "seed": args.seed,
                                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                       "command": " ".join(["experiments/benchmark.py",
                                                            *(sys.argv[1:] if argv is None else argv)])},
           "load_average_start": load_start, "load_average_end": benchmarking.load_average(),
           "wall_s": time.time() - t_start, "markdown": markdown_table(results), "shapes": results}
    path = benchmarking.write_json(out / "benchmark.json", doc)
    try:
        plot(results, out / "benchmark.png", info)
    except ImportError as e:  # matplotlib is an optional extra
        print(f"note: no plot ({e})", file=sys.stderr)
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    sys.exit(2 if main() == 2 else 0)
