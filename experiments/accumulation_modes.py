"""Forward versus reverse accumulation: the seed's worked example and the cost of each mode.

The 2021-10-12 seed post (docs/seeds/002_878ef2f648d696d9.txt) argues that for f: R^n -> R^m forward accumulation
needs n sweeps and reverse accumulation m sweeps, so for a cost (m = 1) of P parameters
(n = P) reverse mode, i.e. backpropagation, wins. This script makes that executable:

1. The worked example y1 = x1 (x2 - x3), y2 = x3 log(1 - x1) (``jaxmlp.forward_reverse_modes``):
   the seed's iteration tables at one point, the sweep counts (3 and 2), and a check against
   ``jax.jacfwd`` / ``jax.jacrev``.
2. A network cost J(theta), theta in R^P: time to the full gradient by (a) jaxmlp's
   hand-derived backward (B1)-(B4), (b) reverse-mode autodiff (``jax.value_and_grad``),
   (c) forward mode, one JVP per parameter (basis directions batched with ``vmap``, in
   chunks under ``lax.map`` so memory stays bounded), for growing P, next to the time of
   one forward pass (``jaxmlp.loss``).
3. A network map R^n -> R^k with its full Jacobian: ``jax.jacfwd`` against ``jax.jacrev``
   over a grid of (n, k), and the crossover against n/k.

Timing: :func:`_common.benchmarking.time_paired` per configuration (compiled first; rounds in
which every variant runs once in a shuffled order, ``block_until_ready``); medians reported.

Usage (from the repository root):

    .venv/bin/python experiments/accumulation_modes.py            # a few minutes on CPU
    .venv/bin/python experiments/accumulation_modes.py --quick    # ~30 s smoke run
    .venv/bin/python experiments/accumulation_modes.py --out results/accumulation

Writes ``accumulation_modes.json``, ``gradient_cost.png`` and ``jacobian_crossover.png``
to ``--out``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jaxmlp
from jaxmlp import forward_reverse_modes as acc
from _common import benchmarking, cli
from _common import output  # noqa: E402

# ----------------------------------------------------------------------------- helpers


def block(tree):
    return jax.block_until_ready(tree)


def time_interleaved(fns: dict, rounds: int, *, max_rounds: dict | None = None,
                     warm: dict | None = None) -> dict:
    """Seconds per call of each ``fns[name]()`` by :func:`_common.benchmarking.time_paired`.

    Samples of about 20 ms (inner repeats chosen per function); ``max_rounds[name]`` caps the
    samples of a slow function (forward mode), ``warm`` lists functions the caller has
    already compiled (one warm-up call instead of two). Returns, per name, the summary of
    :meth:`Timing.summary` plus ``rounds`` (its number of samples).
    """
    warmup = {name: 1 for name in (warm or ())}
    t = benchmarking.time_paired(fns, rounds=rounds, target_s=0.02, warmup=warmup,
                                 max_samples=max_rounds or None)
    return {name: t.summary(name) | {"rounds": t.summary(name)["samples"]} for name in fns}


def loglog_slope(x, y):
    """Least-squares slope b and intercept a of log y = a + b log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2:
        return float("nan"), float("nan")
    b, a = np.polyfit(lx, ly, 1)
    return float(b), float(a)


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    print(fmt.format(*headers))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))


# ----------------------------------------------------------------------------- part 1


def worked_example(point) -> dict:
    x = jnp.asarray(point, jnp.float32)
    print(f"\n=== 1. The seed's worked example at x = {tuple(point)} ===")
    print("y1 = x1 (x2 - x3), y2 = x3 log(1 - x1)\n")
    y, _ = acc.evaluate(x)
    J_fwd, n_fwd, t_fwd = acc.jacobian_forward(x, return_tables=True)
    J_rev, n_rev, t_rev = acc.jacobian_reverse(x, return_tables=True)
    for j, table in enumerate(t_fwd, start=1):
        print(acc.format_table(table, "forward", j))
    print()
    for i, table in enumerate(t_rev, start=1):
        print(acc.format_table(table, "reverse", i))
    f = lambda x: acc.evaluate(x)[0]  # noqa: E731
    J_jacfwd, J_jacrev = jax.jacfwd(f)(x), jax.jacrev(f)(x)
    J_closed = acc.closed_form_jacobian(x)
    err = {
        "forward_vs_closed_form": float(jnp.max(jnp.abs(J_fwd - J_closed))),
        "reverse_vs_closed_form": float(jnp.max(jnp.abs(J_rev - J_closed))),
        "forward_vs_jacfwd": float(jnp.max(jnp.abs(J_fwd - J_jacfwd))),
        "reverse_vs_jacrev": float(jnp.max(jnp.abs(J_rev - J_jacrev))),
    }
    print(f"\ny = {np.asarray(y)}")
    print(f"Jacobian (forward mode, {n_fwd} sweeps = n inputs):\n{np.asarray(J_fwd)}")
    print(f"Jacobian (reverse mode, {n_rev} sweeps = m outputs):\n{np.asarray(J_rev)}")
    print("max |difference| (float32): " + ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
    return {
        "x": list(point),
        "y": np.asarray(y).tolist(),
        "jacobian": np.asarray(J_fwd).tolist(),
        "sweeps_forward": n_fwd,
        "sweeps_reverse": n_rev,
        "forward_tables": [{k: float(v) for k, v in t.as_dict().items()} for t in t_fwd],
        "reverse_tables": [{k: float(v) for k, v in t.as_dict().items()} for t in t_rev],
        "max_abs_error": err,
    }


# ----------------------------------------------------------------------------- part 2


def forward_mode_gradient(loss_flat, chunk: int):
    """dJ/dtheta by forward accumulation: one JVP per basis direction e_p, p = 1..P.

    The P directions are processed ``chunk`` at a time (vmap of ``jax.jvp`` over a (chunk, P)
    block of one-hot rows), the chunks sequentially under ``lax.map``, so memory is
    O(chunk * (P + activations)) whatever P is. Returns (J, flat gradient).
    """

    def grad_fn(flat):
        P = flat.shape[0]
        n_chunks = -(-P // chunk)
        ids = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

        def one_chunk(idx):
            V = jax.nn.one_hot(idx, P, dtype=flat.dtype)  # rows with idx >= P are all zero
            return jax.vmap(lambda v: jax.jvp(loss_flat, (flat,), (v,))[1])(V)

        g = jax.lax.map(one_chunk, ids).reshape(-1)[:P]
        return loss_flat(flat), g

    return grad_fn


def gradient_cost(widths, *, n0, m, rounds, chunk, fm_call_limit, fm_total, seed) -> dict:
    print("\n=== 2. Full gradient of a network cost J(theta), theta in R^P (m = 1 output) ===")
    print(f"Network (n0={n0}, h, h, 1), tanh/tanh/linear, mean squared error, {m} examples, float32")
    key = jax.random.PRNGKey(seed)
    rows, records = [], []
    fm_active, last_fm = True, None
    for h in widths:
        # tanh, smooth: the autodiff gradients then agree with (B1)-(B4) everywhere. With relu
        # and zero initial biases, dead units give Z = 0 exactly, where (B4) takes g'(0) = 0
        # and autodiff of jnp.maximum(Z, 0) takes 1/2, so the gradients would differ there.
        net = jaxmlp.Network(sizes=(n0, h, h, 1), activations=("tanh", "tanh", "linear"),
                             cost="mean_squared_error")
        kp, kx, ky, key = jax.random.split(key, 4)
        params = jaxmlp.init_params(net, kp)
        X = jax.random.normal(kx, (n0, m), jnp.float32)
        Y = jax.random.normal(ky, (1, m), jnp.float32)
        P = net.num_params
        flat, unravel = ravel_pytree(params)

        def loss_flat(theta, net=net, unravel=unravel, X=X, Y=Y):
            return jaxmlp.loss(net, unravel(theta), X, Y)

        f_pass = jax.jit(lambda p, net=net, X=X, Y=Y: jaxmlp.loss(net, p, X, Y))
        f_hand = jax.jit(lambda p, net=net, X=X, Y=Y: jaxmlp.value_and_grad(net, p, X, Y))
        f_rev = jax.jit(jax.value_and_grad(lambda p, net=net, X=X, Y=Y: jaxmlp.loss(net, p, X, Y)))
        fns = {
            "forward_pass": lambda f=f_pass, p=params: f(p),
            "hand_backward": lambda f=f_hand, p=params: f(p),
            "reverse_autodiff": lambda f=f_rev, p=params: f(p),
        }
        # forward mode: skip once the previous P predicts (cost ~ P^2 at fixed m) a call over
        # the limit
        if fm_active and last_fm is not None:
            predicted = last_fm[1] * (P / last_fm[0]) ** 2
            if predicted > fm_call_limit:
                fm_active = False
                print(f"  forward mode stopped before P = {P}: predicted {predicted:.1f} s/call "
                      f"> limit {fm_call_limit:g} s")
        c = min(chunk, P)
        if fm_active:
            f_fm = jax.jit(forward_mode_gradient(loss_flat, c))
            fns["forward_mode"] = lambda f=f_fm, t=flat: f(t)

        # correctness of every gradient against the hand-derived one
        _, g_hand = f_hand(params)
        g_hand_flat = ravel_pytree(g_hand)[0]
        scale = float(jnp.max(jnp.abs(g_hand_flat)))
        errs = {"reverse_autodiff": float(jnp.max(jnp.abs(ravel_pytree(f_rev(params)[1])[0]
                                                          - g_hand_flat))) / scale}
        fm_rounds = rounds
        if fm_active:
            _, g_fm = block(fns["forward_mode"]())  # compiles
            errs["forward_mode"] = float(jnp.max(jnp.abs(g_fm - g_hand_flat))) / scale
            t0 = time.perf_counter()
            block(fns["forward_mode"]())
            est = time.perf_counter() - t0
            fm_rounds = max(1, min(rounds, int(fm_total / max(est, 1e-9))))
        res = time_interleaved(fns, rounds, max_rounds={"forward_mode": fm_rounds} if fm_active else None,
                               warm=("forward_mode",) if fm_active else ())
        t_pass = res["forward_pass"]["median_s"]
        rec = {"width": h, "P": P, "chunk": c if fm_active else None,
               "relative_error_vs_hand": errs, "timings": res,
               "multiple_of_forward_pass": {k: v["median_s"] / t_pass for k, v in res.items()}}
        if "forward_mode" in res:
            # one sweep per parameter: the cost of one JVP direction, against one forward pass
            per_dir = res["forward_mode"]["median_s"] / P
            rec["forward_mode_per_direction_s"] = per_dir
            rec["forward_mode_per_direction_over_forward_pass"] = per_dir / t_pass
        records.append(rec)
        if fm_active:
            last_fm = (P, res["forward_mode"]["median_s"])
        mult = rec["multiple_of_forward_pass"]
        rows.append([
            P, f"{t_pass * 1e3:.3f}",
            f"{res['hand_backward']['median_s'] * 1e3:.3f} ({mult['hand_backward']:.1f}x)",
            f"{res['reverse_autodiff']['median_s'] * 1e3:.3f} ({mult['reverse_autodiff']:.1f}x)",
            (f"{res['forward_mode']['median_s'] * 1e3:.1f} ({mult['forward_mode']:.0f}x)"
             if "forward_mode" in res else "-"),
            (f"{rec['forward_mode_per_direction_s'] * 1e6:.1f} "
             f"({rec['forward_mode_per_direction_over_forward_pass']:.2f}x)"
             if "forward_mode" in res else "-"),
        ])
        print(f"  P = {P:>8d} done" + (f" (forward mode: {res['forward_mode']['rounds']} rounds)"
                                       if "forward_mode" in res else ""), flush=True)
    print()
    print_table(["P", "fwd pass ms", "hand backward ms (x pass)", "reverse AD ms (x pass)",
                 "forward mode ms (x pass)", "fwd mode / P, us (x pass)"], rows)

    fits = {}
    for name in ("forward_pass", "hand_backward", "reverse_autodiff", "forward_mode"):
        pts = [(r["P"], r["timings"][name]["median_s"], r["multiple_of_forward_pass"][name])
               for r in records if name in r["timings"]]
        big = [p for p in pts if p[0] >= 1000] or pts
        fits[name] = {
            "fit_P_min": big[0][0] if big else None,
            "time_slope": loglog_slope([p[0] for p in big], [p[1] for p in big])[0],
            "time_intercept": loglog_slope([p[0] for p in big], [p[1] for p in big])[1],
            "multiple_slope": loglog_slope([p[0] for p in big], [p[2] for p in big])[0],
            "multiple_intercept": loglog_slope([p[0] for p in big], [p[2] for p in big])[1],
        }
    mult_hand = [r["multiple_of_forward_pass"]["hand_backward"] for r in records]
    mult_rev = [r["multiple_of_forward_pass"]["reverse_autodiff"] for r in records]
    summary = {
        "hand_backward_multiple_median": statistics.median(mult_hand),
        "hand_backward_multiple_range": [min(mult_hand), max(mult_hand)],
        "reverse_autodiff_multiple_median": statistics.median(mult_rev),
        "reverse_autodiff_multiple_range": [min(mult_rev), max(mult_rev)],
        "forward_mode_max_P": max((r["P"] for r in records if "forward_mode" in r["timings"]),
                                  default=None),
    }
    print("\nlog-log slopes, fitted over P >= 1000 (time ~ P^slope; multiple ~ P^slope):")
    for name, ft in fits.items():
        print(f"  {name:17s} time slope {ft['time_slope']:+.2f}   "
              f"multiple-of-forward-pass slope {ft['multiple_slope']:+.2f}")
    print(f"reverse mode, multiple of one forward pass: hand-derived median "
          f"{summary['hand_backward_multiple_median']:.2f} (range "
          f"{summary['hand_backward_multiple_range'][0]:.2f}-"
          f"{summary['hand_backward_multiple_range'][1]:.2f}), autodiff median "
          f"{summary['reverse_autodiff_multiple_median']:.2f} (range "
          f"{summary['reverse_autodiff_multiple_range'][0]:.2f}-"
          f"{summary['reverse_autodiff_multiple_range'][1]:.2f})")
    worst = max(max(r["relative_error_vs_hand"].values()) for r in records)
    print(f"max relative gradient difference from the hand-derived backward: {worst:.1e}")
    return {"setup": {"n0": n0, "m": m, "widths": list(widths), "rounds": rounds,
                      "chunk": chunk, "forward_mode_call_limit_s": fm_call_limit,
                      "dtype": "float32", "activations": ["tanh", "tanh", "linear"],
                      "cost": "mean_squared_error"},
            "records": records, "fits": fits, "summary": summary}


# ----------------------------------------------------------------------------- part 3


def jacobian_crossover(dims, *, hidden, batch, rounds, seed) -> dict:
    print("\n=== 3. Full Jacobian of a network map R^n -> R^k: jacfwd against jacrev ===")
    print(f"Network (n, {hidden}, {hidden}, k), tanh/tanh/linear, Jacobian (k, n) at each of "
          f"{batch} points (vmap), float32")
    key = jax.random.PRNGKey(seed)
    records = []
    for n in dims:
        for k in dims:
            net = jaxmlp.Network(sizes=(n, hidden, hidden, k), activations=("tanh", "tanh", "linear"),
                                 cost="mean_squared_error")
            kp, kx, key = jax.random.split(key, 3)
            params = jaxmlp.init_params(net, kp)
            Xs = jax.random.normal(kx, (batch, n), jnp.float32)

            def g(p, x, net=net):  # R^n -> R^k, one example as a column
                return jaxmlp.predict(net, p, x[:, None])[:, 0]

            jf = jax.jit(jax.vmap(jax.jacfwd(g, argnums=1), in_axes=(None, 0)))
            jr = jax.jit(jax.vmap(jax.jacrev(g, argnums=1), in_axes=(None, 0)))
            diff = float(jnp.max(jnp.abs(jf(params, Xs) - jr(params, Xs))))
            res = time_interleaved({"jacfwd": lambda f=jf, p=params, X=Xs: f(p, X),
                                    "jacrev": lambda f=jr, p=params, X=Xs: f(p, X)}, rounds)
            tf, tr = res["jacfwd"]["median_s"], res["jacrev"]["median_s"]
            records.append({"n": n, "k": k, "n_over_k": n / k, "jacfwd_s": tf, "jacrev_s": tr,
                            "ratio_fwd_over_rev": tf / tr, "max_abs_diff": diff,
                            "timings": res})
        print(f"  n = {n} done", flush=True)

    rows = [[r["n"], r["k"], f"{r['n_over_k']:.3g}", f"{r['jacfwd_s'] * 1e3:.3f}",
             f"{r['jacrev_s'] * 1e3:.3f}", f"{r['ratio_fwd_over_rev']:.2f}",
             "jacfwd" if r["ratio_fwd_over_rev"] < 1 else "jacrev"] for r in records]
    print()
    print_table(["n", "k", "n/k", "jacfwd ms", "jacrev ms", "fwd/rev", "faster"], rows)
    ratios = [r["n_over_k"] for r in records]
    b, a = loglog_slope(ratios, [r["ratio_fwd_over_rev"] for r in records])
    crossover = math.exp(-a / b) if b > 0 else float("nan")
    by_ratio = {}
    for r in records:
        by_ratio.setdefault(r["n_over_k"], []).append(r["ratio_fwd_over_rev"])
    geo = {q: float(np.exp(np.mean(np.log(v)))) for q, v in sorted(by_ratio.items())}
    fwd_wins = [r for r in records if r["ratio_fwd_over_rev"] < 1]
    rev_wins = [r for r in records if r["ratio_fwd_over_rev"] >= 1]
    print("\nfwd/rev time ratio (geometric mean) by n/k:")
    print("  " + ", ".join(f"{q:.3g}: {v:.2f}" for q, v in geo.items()))
    print(f"fit: t_jacfwd / t_jacrev = {math.exp(a):.2f} * (n/k)^{b:.2f}; crossover "
          f"(ratio = 1) at n/k = {crossover:.2f}")
    print(f"jacfwd faster in {len(fwd_wins)} of {len(records)} configurations "
          f"(n/k <= {max((r['n_over_k'] for r in fwd_wins), default=float('nan')):.3g}); "
          f"jacrev faster in {len(rev_wins)} "
          f"(n/k >= {min((r['n_over_k'] for r in rev_wins), default=float('nan')):.3g})")
    return {"setup": {"dims": list(dims), "hidden": hidden, "batch": batch, "rounds": rounds,
                      "activations": ["tanh", "tanh", "linear"], "dtype": "float32"},
            "records": records,
            "fit": {"slope": b, "intercept": a, "crossover_n_over_k": crossover},
            "geomean_ratio_by_n_over_k": {str(q): v for q, v in geo.items()}}


# ----------------------------------------------------------------------------- plots


def plot(grad: dict, jac: dict, out: Path, device: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    labels = {"forward_pass": "one forward pass", "hand_backward": "(a) hand-derived backward",
              "reverse_autodiff": "(b) reverse-mode autodiff",
              "forward_mode": "(c) forward mode, P JVPs"}
    markers = {"forward_pass": "s", "hand_backward": "o", "reverse_autodiff": "^",
               "forward_mode": "D"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, lab in labels.items():
        pts = [(r["P"], r["timings"][name]["median_s"], r["multiple_of_forward_pass"][name])
               for r in grad["records"] if name in r["timings"]]
        if not pts:
            continue
        P = np.array([p[0] for p in pts], float)
        ft = grad["fits"][name]
        Pfit = P[P >= (ft["fit_P_min"] or 0)]
        line = axes[0].loglog(P, [p[1] for p in pts], marker=markers[name],
                              label=f"{lab} (slope {ft['time_slope']:.2f})")[0]
        if len(Pfit) >= 2:
            axes[0].loglog(Pfit, np.exp(ft["time_intercept"]) * Pfit ** ft["time_slope"], ls=":",
                           color=line.get_color())
        if name != "forward_pass":
            line = axes[1].loglog(P, [p[2] for p in pts], marker=markers[name],
                                  label=f"{lab} (slope {ft['multiple_slope']:.2f})")[0]
            if len(Pfit) >= 2:
                axes[1].loglog(Pfit, np.exp(ft["multiple_intercept"]) * Pfit ** ft["multiple_slope"],
                               ls=":", color=line.get_color())
    axes[0].set(xlabel="P (parameters)", ylabel="median seconds per call",
                title="Time to the full gradient dJ/dθ")
    axes[1].axhline(1.0, color="gray", lw=0.8)
    axes[1].set(xlabel="P (parameters)", ylabel="multiple of one forward pass",
                title="Gradient time / forward-pass time")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Forward vs reverse accumulation, network cost R^P -> R (fits: P >= 1000; {device})",
                 fontsize=10)
    fig.tight_layout()
    path = out / "gradient_cost.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(str(path))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    recs = jac["records"]
    q = np.array([r["n_over_k"] for r in recs])
    ratio = np.array([r["ratio_fwd_over_rev"] for r in recs])
    sc = axes[0].scatter(q, ratio, c=np.log2([r["k"] for r in recs]), cmap="viridis", zorder=3)
    fig.colorbar(sc, ax=axes[0], label="log2 k (outputs)")
    fit = jac["fit"]
    qq = np.geomspace(q.min(), q.max(), 50)
    axes[0].plot(qq, np.exp(fit["intercept"]) * qq ** fit["slope"], "k:",
                 label=f"fit: ratio ∝ (n/k)^{fit['slope']:.2f}")
    axes[0].axhline(1.0, color="gray", lw=0.8)
    if np.isfinite(fit["crossover_n_over_k"]):
        axes[0].axvline(fit["crossover_n_over_k"], color="red", lw=0.8,
                        label=f"crossover n/k = {fit['crossover_n_over_k']:.2f}")
    axes[0].set(xscale="log", yscale="log", xlabel="n / k (inputs / outputs)",
                ylabel="t(jacfwd) / t(jacrev)",
                title="jacfwd wins below 1, jacrev wins above 1")
    axes[0].grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    dims = jac["setup"]["dims"]
    grid = np.full((len(dims), len(dims)), np.nan)
    for r in recs:
        grid[dims.index(r["k"]), dims.index(r["n"])] = np.log2(r["ratio_fwd_over_rev"])
    lim = np.nanmax(np.abs(grid))
    im = axes[1].imshow(grid, origin="lower", cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[1].set_xticks(range(len(dims)), dims)
    axes[1].set_yticks(range(len(dims)), dims)
    axes[1].set(xlabel="n (inputs)", ylabel="k (outputs)",
                title="log2 t(jacfwd)/t(jacrev): blue = jacfwd faster")
    for i in range(len(dims)):
        for j in range(len(dims)):
            axes[1].text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[1])
    fig.suptitle(f"Full Jacobian of an MLP R^n -> R^k ({device})", fontsize=10)
    fig.tight_layout()
    path = out / "jacobian_crossover.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(str(path))
    return files


# ----------------------------------------------------------------------------- main


PROG = "accumulation_modes.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, ~30 s")
    output.add_out_arguments(ap, "results/accumulation")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0,
                    help="seed of the random networks and inputs (>= 0)")
    ap.add_argument("--rounds", type=cli.positive_int, default=None,
                    help="timing rounds per configuration, >= 1 (default 9; 5 with --quick)")
    ap.add_argument("--examples", type=cli.positive_int, default=64,
                    help="m, examples in the cost's batch (>= 1)")
    ap.add_argument("--chunk", type=cli.positive_int, default=128,
                    help="forward mode: basis directions per vmapped chunk (>= 1)")
    ap.add_argument("--fm-call-limit", type=cli.positive_float, default=None,
                    help="stop forward mode when its predicted seconds per call exceed this "
                         "(> 0; default 12, 0.5 with --quick)")
    ap.add_argument("--no-plots", action="store_true", help="do not write the figures")
    return ap


def main(argv=None) -> dict:
    """Runs the command line ``argv``; returns the results, or 2 after a one-line error."""
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "accumulation_modes")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)

    if args.quick:
        widths, dims, rounds, fm_limit, fm_total = (6, 16, 32, 64, 128, 256), (2, 16, 128), 5, 0.5, 1.0
    else:
        widths = (6, 16, 32, 64, 128, 256, 512, 1024)
        dims, rounds, fm_limit, fm_total = (2, 8, 32, 128, 512), 9, 12.0, 30.0
    rounds = args.rounds or rounds
    fm_limit = args.fm_call_limit or fm_limit
    out = benchmarking.output_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = benchmarking.machine_info()
    device = f"{dev['backend'].upper()}: {dev['cpu_model']}, {dev['cpu_count']} cores"
    print(f"device: {device}; jax {dev['jax']}; load {dev['load_average']}; quick={args.quick}")
    t_start = time.perf_counter()

    example = worked_example((0.5, 1.5, -2.0))
    grad = gradient_cost(widths, n0=8, m=args.examples, rounds=rounds, chunk=args.chunk,
                         fm_call_limit=fm_limit, fm_total=fm_total, seed=args.seed)
    jac = jacobian_crossover(dims, hidden=64, batch=16, rounds=rounds, seed=args.seed + 1)
    files = [] if args.no_plots else plot(grad, jac, out, device)
    result = {
        "claim": "Forward accumulation needs n sweeps and reverse accumulation m sweeps for "
                 "f: R^n -> R^m; for a cost (m = 1) of P parameters reverse mode "
                 "(backpropagation) wins (seed post 2021-10-12, docs/seeds/002_878ef2f648d696d9.txt).",
        "device": dev, "device_summary": device, "quick": args.quick,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "worked_example": example, "gradient_cost": grad, "jacobian_crossover": jac,
        "wall_s": time.perf_counter() - t_start,
    }
    path = benchmarking.write_json(out / "accumulation_modes.json", result)
    files.append(str(path))
    print(f"\nwrote {', '.join(files)} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    status = main()
    sys.exit(status if isinstance(status, int) else 0)
