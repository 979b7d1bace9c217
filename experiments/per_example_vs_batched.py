"""Per-example versus batched columns: time and memory, m = 1 ... 4096.

Two groups of variants, timed together at each m by :func:`_common.benchmarking.time_paired`
(compiled first; ``--reps`` rounds, each variant once per round in a shuffled order,
``block_until_ready``); medians, and paired ratios to ``batched`` and ``pe_outer``.

Gradient of J (the sum over the batch):
  batched        jaxmlp.value_and_grad: (F1)-(F3), (B1)-(B4) on the (n, m) matrices
  vmap_columns   jax.vmap of the single-column forms (jaxmlp.nn.single_column), summed
  python_loop    a Python loop over the m columns calling the jitted single-column
                 value_and_grad and accumulating (one dispatch per column)

Per-example quantities:
  pe_vmap        per_example_grads(method="vmap")     (m, ...) on every leaf
  pe_outer       per_example_grads(method="outer")    dz[:,i] a[:,i]^T from one batched pass
  pe_outer_c256  the same with chunk_size=256
  pe_oracle      jax.vmap(jax.grad(loss of one column))   (autodiff, for comparison)
  norms_fused_outer  the norms written as sqrt(sum of squares) of pe_outer's stacked
                 gradients, inside one jit: XLA fuses the outer products into the
                 reductions, so the (m, n[l], n[l-1]) arrays are never allocated
  norms_only     per_example_norms: ||dz||^2 (||a||^2 + 1), no per-example gradient

Memory: CPU has no device memory statistics, so the script reports XLA's buffer
assignment of each compiled executable, ``jax.jit(f).lower(*args).compile()
.memory_analysis()``: ``argument_size_in_bytes`` (inputs), ``output_size_in_bytes``
(results) and ``temp_size_in_bytes`` (scratch buffers live during the call). The column
"footprint" is argument + output + temp - alias: the bytes the executable needs at once,
an upper bound on its peak. For python_loop it is the footprint of ONE column call (the
loop keeps one call's buffers plus the running sum alive).

Run:  .venv/bin/python experiments/per_example_vs_batched.py          (CPU, a few minutes)
      .venv/bin/python experiments/per_example_vs_batched.py --quick  (~30 s)
Writes per_example_vs_batched.{json,png} and vmap_matvec.txt into a new ``runs/`` folder
(``--out DIR``: DIR, relative to the folder you run from; ``--results``: the committed
results/per_example/).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from _common import benchmarking, cli
from _common import output  # noqa: E402
from jaxmlp.nn.single_column import value_and_grad_col
from jaxmlp.quantities import per_example_grads
from jaxmlp.quantities import per_example_norms

OUT_DIR = "results/per_example"
GROUP_J = ("batched", "vmap_columns", "python_loop")
GROUP_PE = ("pe_vmap", "pe_outer", "pe_outer_c256", "pe_oracle", "norms_fused_outer",
            "norms_only")


def make_variants(net, m):
    """name -> (jitted function of (params, X, Y), whether it is a loop)."""

    def batched(p, X, Y):
        return jaxmlp.value_and_grad(net, p, X, Y)

    def vmap_columns(p, X, Y):
        J_i, g_i = jax.vmap(lambda x, y: value_and_grad_col(net, p, x, y, m), in_axes=(1, 1))(X, Y)
        return jnp.sum(J_i), jax.tree.map(lambda g: jnp.sum(g, 0), g_i)

    def pe_oracle(p, X, Y):
        def term(p, x, y):  # autodiff of example i's term (1/m) L_i, an oracle
            return jaxmlp.loss(net, p, x[:, None], y[:, None]) / m

        return jax.vmap(jax.grad(term), in_axes=(None, 1, 1))(p, X, Y)

    def norms_fused_outer(p, X, Y):
        G = per_example_grads(net, p, X, Y, method="outer")
        return jnp.sqrt(sum(jnp.sum(g.reshape(m, -1) ** 2, axis=1) for g in jax.tree.leaves(G)))

    fns = {
        "batched": batched,
        "vmap_columns": vmap_columns,
        "pe_vmap": lambda p, X, Y: per_example_grads(net, p, X, Y, method="vmap"),
        "pe_outer": lambda p, X, Y: per_example_grads(net, p, X, Y, method="outer"),
        "pe_outer_c256": lambda p, X, Y: per_example_grads(
            net, p, X, Y, method="outer", chunk_size=256),
        "pe_oracle": pe_oracle,
        "norms_fused_outer": norms_fused_outer,
        "norms_only": lambda p, X, Y: per_example_norms(net, p, X, Y).norms,
    }
    return {k: jax.jit(f) for k, f in fns.items()}


def memory(fn, *args):
    ma = fn.lower(*args).compile().memory_analysis()
    if ma is None:
        return None
    d = {
        "argument": int(ma.argument_size_in_bytes),
        "output": int(ma.output_size_in_bytes),
        "temp": int(ma.temp_size_in_bytes),
        "alias": int(ma.alias_size_in_bytes),
    }
    d["footprint"] = d["argument"] + d["output"] + d["temp"] - d["alias"]
    d["peak_reported"] = int(getattr(ma, "peak_memory_in_bytes", 0) or 0)
    return d


def run_m(net, params, m, reps, loop_max_m, rng):
    X = jnp.asarray(rng.normal(size=(net.sizes[0], m)), jnp.float32)
    Y = jnp.asarray(np.eye(net.sizes[-1])[:, rng.integers(0, net.sizes[-1], m)], jnp.float32)
    fns = make_variants(net, m)
    calls = {k: (lambda f=f: f(params, X, Y)) for k, f in fns.items()}
    mem = {k: memory(f, params, X, Y) for k, f in fns.items()}

    if m <= loop_max_m:
        col = jax.jit(lambda p, x, y: value_and_grad_col(net, p, x, y, m))
        add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
        cols = [(X[:, i], Y[:, i]) for i in range(m)]  # sliced once, outside the timing

        def loop():
            acc = col(params, *cols[0])
            for x, y in cols[1:]:
                acc = add(acc, col(params, x, y))
            return acc

        calls["python_loop"] = loop
        mem["python_loop"] = memory(col, params, X[:, 0], Y[:, 0])

    timing = benchmarking.time_paired(calls, reference="batched", rounds=reps, inner=1,
                                      warmup=1, seed=m)
    return {
        k: timing.summary(k) | {"paired_ratio_to_pe_outer": timing.paired_ratio(k, "pe_outer"),
                                "memory": mem[k]}
        for k in calls
    }


def vmap_matvec_text():
    """The jaxpr and the optimised HLO of vmap over columns of a matrix-vector product.

    W (5, 3) and A (3, 7) are arguments (not constants, which XLA would fold).
    """
    W = jnp.ones((5, 3), jnp.float32)
    A = jnp.ones((3, 7), jnp.float32)
    f = jax.vmap(lambda W, a: W @ a, in_axes=(None, 1), out_axes=1)
    jaxpr = str(jax.make_jaxpr(f)(W, A))
    hlo = jax.jit(f).lower(W, A).compile().as_text()
    dots = [ln.split(", metadata=")[0].strip() for ln in hlo.splitlines() if " dot(" in ln]
    return jaxpr, hlo, dots


def plot(results, ms, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for col, group in enumerate((GROUP_J, GROUP_PE)):
        for name in group:
            pts = [(m, results[str(m)][name]) for m in ms if name in results[str(m)]]
            if not pts:
                continue
            x = [p[0] for p in pts]
            axes[0, col].plot(x, [p[1]["median_s"] * 1e3 for p in pts], "o-", label=name)
            axes[1, col].plot(x, [p[1]["memory"]["footprint"] / 2**20 for p in pts], "o-",
                              label=name)
        axes[0, col].set_title(("gradient of J" if col == 0 else "per-example quantities")
                               + ": median time")
        axes[0, col].set_ylabel("ms")
        axes[1, col].set_title("XLA buffer footprint (argument + output + temp)")
        axes[1, col].set_ylabel("MiB")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("m (examples)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"jaxmlp per-example vs batched, sizes {results['_sizes']}, float32, "
                 f"{jax.default_backend()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


PROG = "per_example_vs_batched.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="m in (1, 64, 4096), 3 reps (~30 s)")
    ap.add_argument("--ms", type=cli.positive_int, nargs="+", default=None, metavar="M",
                    help="batch sizes m to time, each >= 1 (default 1 4 16 64 256 1024 4096; "
                         "1 64 4096 with --quick)")
    ap.add_argument("--sizes", type=cli.positive_int, nargs="+", default=[32, 128, 128, 10],
                    metavar="N", help="layer widths n[0] ... n[L], at least two, each >= 1")
    ap.add_argument("--reps", type=cli.positive_int, default=None,
                    help="timed repetitions per m, >= 1 (default 7; 3 with --quick)")
    ap.add_argument("--loop-max-m", type=cli.positive_int, default=None,
                    help="largest m for the Python loop over columns, >= 1 (default 4096; 256 "
                         "with --quick)")
    output.add_out_arguments(ap, OUT_DIR)
    return ap


def main(argv=None):
    p = build_parser()
    try:
        args = p.parse_args(argv)
        if len(args.sizes) < 2:
            p.error(f"--sizes: expected at least two widths n[0] n[L], got {args.sizes}")
        output.resolve_out(args, "per_example_vs_batched")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    ms = args.ms or ([1, 64, 4096] if args.quick else [1, 4, 16, 64, 256, 1024, 4096])
    reps = args.reps or (3 if args.quick else 7)
    loop_max_m = args.loop_max_m or (256 if args.quick else 4096)
    out = benchmarking.output_path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sizes = tuple(args.sizes)
    net = jaxmlp.Network(sizes, ("relu",) * (len(sizes) - 2) + ("softmax",),
                         "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.key(0), dtype=jnp.float32)
    rng = np.random.default_rng(0)
    t_start = time.time()
    results = {"_sizes": list(sizes)}
    for m in ms:
        results[str(m)] = run_m(net, params, m, reps, loop_max_m, rng)
        print(f"m = {m} done ({time.time() - t_start:.0f} s)", flush=True)

    jaxpr, hlo, dots = vmap_matvec_text()
    with open(out / "vmap_matvec.txt", "w") as f:
        f.write("# jax.vmap(lambda W, a: W @ a, in_axes=(None, 1), out_axes=1), W (5, 3), A (3, 7)\n")
        f.write("## jaxpr\n" + jaxpr + "\n## optimised HLO (CPU)\n" + hlo)

    # Table.
    head = (f"{'m':>5} {'variant':<19} {'median ms':>10} {'x ref (paired)':>15} {'footprint MiB':>14} "
            f"{'temp MiB':>9}")
    lines = [head, "-" * len(head)]
    for m in ms:
        r = results[str(m)]
        for group, ref in ((GROUP_J, "batched"), (GROUP_PE, "pe_outer")):
            for name in group:
                if name not in r:
                    continue
                v = r[name]
                mem = v["memory"]
                ratio = (v["paired_ratio"] if ref == "batched" else v["paired_ratio_to_pe_outer"])
                lines.append(
                    f"{m:>5} {name:<19} {v['median_s'] * 1e3:>10.3f} "
                    f"{ratio['median']:>15.2f} "
                    f"{mem['footprint'] / 2**20:>14.3f} {mem['temp'] / 2**20:>9.3f}"
                )
    table = "\n".join(lines)
    print(table)
    big = str(max(ms))
    rb = results[big]
    mib = {k: rb[k]["memory"]["footprint"] / 2**20 for k in GROUP_PE}
    summary = (
        f"m = {big}, num_params = {net.num_params}: per-example norms without materialising "
        f"(norms_only) {mib['norms_only']:.2f} MiB and {rb['norms_only']['median_s'] * 1e3:.1f} ms; "
        f"materialised per-example gradients (pe_outer) {mib['pe_outer']:.2f} MiB "
        f"({mib['pe_outer'] / mib['norms_only']:.0f}x) and {rb['pe_outer']['median_s'] * 1e3:.1f} ms; "
        f"norms from the outer products fused by XLA {mib['norms_fused_outer']:.2f} MiB, "
        f"{rb['norms_fused_outer']['median_s'] * 1e3:.1f} ms."
    )
    print(summary)
    print("vmap of W @ a over columns, optimised HLO dot:", *dots, sep="\n  ")

    meta = {
        "sizes": list(sizes),
        "num_params": net.num_params,
        "dtype": "float32",
        "ms": ms,
        "reps": reps,
        "loop_max_m": loop_max_m,
        "machine": benchmarking.machine_info(),
        "wall_s": time.time() - t_start,
        "memory_measure": "XLA buffer assignment of the compiled executable "
                          "(jax.jit(f).lower(...).compile().memory_analysis()): footprint = "
                          "argument + output + temp - alias bytes; python_loop: one column call",
        "summary": summary,
        "vmap_matvec_jaxpr": jaxpr,
        "vmap_matvec_hlo_dots": dots,
    }
    benchmarking.write_json(out / "per_example_vs_batched.json",
                            {"meta": meta, "results": {k: v for k, v in results.items() if k != "_sizes"},
                             "table": table})
    plot(results, ms, out / "per_example_vs_batched.png")
    print(f"wrote {out}/per_example_vs_batched.json, .png, vmap_matvec.txt")


if __name__ == "__main__":
    sys.exit(main())
