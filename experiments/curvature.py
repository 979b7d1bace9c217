"""Time of each curvature quantity as a multiple of one value_and_grad, vs autodiff routes.

Shapes (float32, tanh hidden layers, softmax + categorical cross-entropy):
medium 784-512-512-10 with m = 256, deep-narrow 100-(100 x 8)-10 with m = 64, and a small
20-16-16-4 (m = 32) for the Hessian diagonal against ``jax.hessian``. Routes a JAX user
would write without jaxmlp.quantities.curvature:

* H V: ``jax.jvp(jax.grad(J), (params,), (V,))``;
* G V: ``jax.jvp`` of the split output, the output Hessian, then ``jax.vjp``;
* diag G: for each of the C = n[L] columns of the output factor (``lax.map``), the
  per-example vector-Jacobian products under ``vmap`` over the m examples, squared and
  summed;
* diag H (small shape only): the diagonal of ``jax.hessian`` of J.

Every variant is compiled and warmed up first, then the variants run interleaved in a
fresh random order in every round (``_common.benchmarking.time_paired``), each sample ended
by ``block_until_ready``; reported: the median of the per-round ratios to the
value_and_grad of the same round (paired), with quartiles.

    python experiments/curvature.py [--shapes medium,deep-narrow,small] [--reps 7]

Writes ``results/curvature/curvature.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

import jaxmlp
from _common import benchmarking, cli
from _common import output
from jaxmlp.quantities import curvature
from _common.benchmarking import load_average, machine_info

SHAPES = {
    "medium": ((784, 512, 512, 10), 256),
    "deep-narrow": ((100,) + (100,) * 8 + (10,), 64),
    "small": ((20, 16, 16, 4), 32),
}


def problem(sizes, m, seed=0):
    L = len(sizes) - 1
    net = jaxmlp.Network(sizes, ("tanh",) * (L - 1) + ("softmax",), "categorical_cross_entropy")
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = jaxmlp.init_params(net, k[0])
    X = jax.random.normal(k[1], (sizes[0], m), jnp.float32)
    Y = jax.nn.one_hot(jax.random.randint(k[2], (m,), 0, sizes[-1]), sizes[-1], dtype=jnp.float32).T
    V = jax.tree.map(lambda a: jax.random.normal(k[3], a.shape, a.dtype), params)
    return net, params, X, Y, V


def autodiff_routes(net, params, X, Y, V):
    """The autodiff spellings (oracles used as baselines only)."""
    loss = lambda p: jaxmlp.loss(net, p, X, Y)  # noqa: E731

    @jax.jit
    def hvp_ad(p, V):
        return jax.jvp(jax.grad(loss), (p,), (V,))[1]

    def logits(p, x):  # split output z[L] of one or many columns
        A = x
        for layer, g in zip(p, net.layer_activations):
            Z = layer["W"] @ A + (layer["b"][:, None] if A.ndim == 2 else layer["b"])
            A = g.forward(Z)
        return Z

    @jax.jit
    def ggn_vp_ad(p, V):
        m = X.shape[1]
        Z, Jv = jax.jvp(lambda q: logits(q, X), (p,), (V,))
        A = jax.nn.softmax(Z, axis=0)
        HJv = (A * Jv - A * jnp.sum(A * Jv, axis=0, keepdims=True)) / m
        return jax.vjp(lambda q: logits(q, X), p)[1](HJv)[0]

    @jax.jit
    def ggn_diag_ad(p):
        m = X.shape[1]
        Z = logits(p, X)
        A = jax.nn.softmax(Z, axis=0)
        n = A.shape[0]
        S = (jnp.eye(n, dtype=A.dtype)[:, :, None] - A[:, None, :]) * jnp.sqrt(A)[None]  # (n, C, m)

        def column(s):  # s (n, m): per-example VJPs under vmap, squared, summed over examples
            per_ex = jax.vmap(lambda x, si: jax.vjp(lambda q: logits(q, x), p)[1](si)[0],
                              in_axes=(1, 1))(X, s)
            return jax.tree.map(lambda g: jnp.sum(g * g, axis=0), per_ex)

        cols = jax.lax.map(column, jnp.moveaxis(S, 1, 0))
        return jax.tree.map(lambda g: jnp.sum(g, axis=0) / m, cols)

    @jax.jit
    def hessian_diag_ad(p):
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree(p)
        return unravel(jnp.diag(jax.hessian(lambda t: loss(unravel(t)))(flat)))

    return hvp_ad, ggn_vp_ad, ggn_diag_ad, hessian_diag_ad


def run_shape(name, reps, seed, target):
    sizes, m = SHAPES[name]
    net, p, X, Y, V = problem(sizes, m)
    key = jax.random.PRNGKey(1)
    hvp_ad, ggn_vp_ad, ggn_diag_ad, hessian_diag_ad = autodiff_routes(net, p, X, Y, V)
    fns = {
        "value_and_grad": lambda: jaxmlp.value_and_grad(net, p, X, Y),
        "ggn_diag_mc1": lambda: curvature.ggn_diag(net, p, X, Y, mc_samples=1, key=key),
        "ggn_diag_exact": lambda: curvature.ggn_diag(net, p, X, Y),
        "kfac_factors_mc1": lambda: curvature.kfac_factors(net, p, X, Y, kind="mc", key=key),
        "kfac_factors_exact": lambda: curvature.kfac_factors(net, p, X, Y),
        "ggn_vp": lambda: curvature.ggn_vp(net, p, X, Y, V),
        "hvp": lambda: curvature.hvp(net, p, X, Y, V),
        "autodiff_hvp_jvp_of_grad": lambda: hvp_ad(p, V),
        "autodiff_ggn_vp_jvp_vjp": lambda: ggn_vp_ad(p, V),
        "autodiff_ggn_diag_vmap_vjp": lambda: ggn_diag_ad(p),
    }
    if name != "medium":  # columns grow with sum_l n[l]: meant for small and medium layers
        fns["hessian_diag"] = lambda: curvature.hessian_diag(net, p, X, Y)
    if name == "small":
        fns["autodiff_hessian_diag_jax_hessian"] = lambda: hessian_diag_ad(p)
    timing = benchmarking.time_paired(fns, reference="value_and_grad", rounds=reps,
                                      target_s=target, seed=seed)
    out = {}
    for k in fns:
        r = timing.paired_ratio(k)
        out[k] = {"median_s": timing.median(k),
                  "times_s": [float(t) for t in timing.per_round(k)],
                  "paired_ratio_median": r["median"],
                  "paired_ratio_q25_q75": [r["q25"], r["q75"]]}
    return {"sizes": sizes, "m": m, "activations": net.activations, "cost": net.cost,
            "n_L": sizes[-1], "timings": out}


PROG = "curvature.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="medium,deep-narrow,small", type=cli.name_list(SHAPES),
                    metavar="NAME[,NAME...]",
                    help=f"comma-separated networks to time, of {', '.join(SHAPES)}")
    ap.add_argument("--reps", type=cli.positive_int, default=7,
                    help="paired timing rounds per shape (>= 1)")
    ap.add_argument("--target", type=cli.positive_float, default=0.1,
                    help="seconds per timed sample (> 0)")
    output.add_out_arguments(ap, "results/curvature")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    """The parsed command line with ``args.out`` resolved; UsageError on a bad value."""
    args = build_parser().parse_args(argv)
    output.resolve_out(args, "curvature")
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    shapes = args.shapes
    results = {"machine": machine_info(), "load_average_start": load_average(), "shapes": {}}
    t0 = time.perf_counter()
    for s in shapes:
        print(f"shape {s} {SHAPES[s]} ...", flush=True)
        results["shapes"][s] = run_shape(s, args.reps, 0, args.target)
    results["load_average_end"] = load_average()
    results["seconds"] = time.perf_counter() - t0
    print(f"\n{'quantity':>36} " + " ".join(f"{s:>24}" for s in shapes))
    names = list(dict.fromkeys(k for s in shapes for k in results["shapes"][s]["timings"]))
    for k in names:
        cells = []
        for s in shapes:
            t = results["shapes"][s]["timings"].get(k)
            cells.append(f"{'-':>24}" if t is None else
                         f"{t['median_s'] * 1e3:9.2f} ms {t['paired_ratio_median']:8.2f}x   ")
        print(f"{k:>36} " + " ".join(cells))
    print(f"(ratio: paired median of time / value_and_grad; load average "
          f"{results['load_average_start']} -> {results['load_average_end']})")
    print(f"wrote {output.write_json(os.path.abspath(os.path.join(args.out, 'curvature.json')), results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
