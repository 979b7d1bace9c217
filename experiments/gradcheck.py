"""Cross-check jaxmlp's hand-derived gradients over every activation x cost x depth.

For each cost, each output activation the cost accepts (the canonical one uses the
fused seed dZ[L] = (1/m)(A - Y); any other goes through dA[L] and (B4)), each hidden
activation and each depth L = 1..4, a random network and batch are drawn and the
manual gradient is compared with jax.grad (float64 and float32) and with central
finite differences in float64 (jaxmlp.oracle.verification.check_gradients).

    python experiments/gradcheck.py [--quick] [--out results/gradcheck]

Prints a summary table per (cost, output) and writes every row to JSON. Exit code 1
if any float64 check fails.
"""

from __future__ import annotations

import itertools
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmlp  # noqa: E402
from _common import benchmarking  # noqa: E402
from _common import cli, compiled, output  # noqa: E402
from jaxmlp.oracle.verification import check_gradients, random_problem, relative_error  # noqa: E402


QUICK_HIDDEN = ("relu", "sigmoid", "tanh", "softmax", "gelu")


def combinations(quick: bool):
    """(cost, output activation, hidden activation or None, depth) for every combination.

    For each cost: every activation as the hidden activation of depths 2-4 with the
    cost's canonical output (fused seed); every output activation the cost accepts at
    depth 1; and every non-canonical output (general path dA[L] -> (B4)) at depths 2-4
    with tanh hidden layers.
    """
    acts = sorted(jaxmlp.ACTIVATIONS)
    hidden = QUICK_HIDDEN if quick else acts
    depths = (2, 4) if quick else (2, 3, 4)
    for cost in sorted(jaxmlp.COSTS):
        c = jaxmlp.nn.costs.get_cost(cost)
        outputs = [a for a in acts if not c.needs_unit_range or jaxmlp.nn.activations.get_activation(a).unit_range]
        if c.max_outputs == 1:  # binary: n[L] = 1, softmax impossible
            outputs = [a for a in outputs if a != "softmax"]
        outputs.sort(key=lambda a: a != c.canonical)  # canonical first
        for out in outputs:
            yield cost, out, None, 1
            for h, depth in itertools.product(hidden if out == c.canonical else ("tanh",), depths):
                yield cost, out, h, depth


def build(cost, out, hidden, depth, rng):
    c = jaxmlp.nn.costs.get_cost(cost)
    nL = 1 if c.max_outputs == 1 else int(rng.integers(max(2, c.min_outputs), 5))
    widths = [int(rng.integers(1, 6)) for _ in range(depth - 1)]
    if hidden == "softmax":
        widths = [max(w, 2) for w in widths]
    sizes = (int(rng.integers(1, 5)), *widths, nL)
    acts = (hidden,) * (depth - 1) + (out,)
    return jaxmlp.Network(sizes, acts, cost), int(rng.choice([1, 2, 7]))


PROG = "gradcheck.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"hidden activations {'/'.join(sorted(QUICK_HIDDEN))} only, depths 2 and 4")
    output.add_out_arguments(p, "results/gradcheck")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0,
                   help="seed of the random networks, data and directions (>= 0)")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "gradcheck")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    rng = np.random.default_rng(args.seed)
    key = jax.random.PRNGKey(args.seed)
    rows = []
    t0 = time.perf_counter()
    for cost, out, hidden, depth in combinations(args.quick):
        net, m = build(cost, out, hidden, depth, rng)
        key, k = jax.random.split(key)
        # non-zero biases: see random_problem (keeps layers after dead ReLUs off the kink)
        p64, X, Y = random_problem(net, k, m, jnp.float64)
        r64 = check_gradients(net, p64, X, Y, finite_differences="full")
        p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p64)
        X32, Y32 = X.astype(jnp.float32), Y.astype(jnp.float32)
        r32 = check_gradients(net, p32, X32, Y32, finite_differences="off")
        # float32 rounding can dominate in ill-conditioned cases (gradients that are sums
        # of nearly cancelling terms); there the fair question is whether the manual
        # float32 gradient is as accurate as autodiff's float32 gradient, both measured
        # against the float64 gradient.
        truth = jax.tree.leaves(jax.grad(lambda p: jaxmlp.loss(net, p, X, Y))(p64))
        man32 = jax.tree.leaves(jaxmlp.value_and_grad(net, p32, X32, Y32)[1])
        ad32 = jax.tree.leaves(jax.grad(lambda p: jaxmlp.loss(net, p, X32, Y32))(p32))
        err_man32 = max(relative_error(a, t) for a, t in zip(man32, truth))
        err_ad32 = max(relative_error(a, t) for a, t in zip(ad32, truth))
        ok32 = r32.passed or err_man32 <= 2 * err_ad32
        rows.append(dict(cost=cost, output=out, hidden=hidden, depth=depth, sizes=net.sizes,
                         m=m, fused=net.fused, autodiff_f64=r64.max_autodiff,
                         finite_diff_f64=r64.max_finite_diff, autodiff_f32=r32.max_autodiff,
                         manual_f32_vs_f64=err_man32, autodiff_f32_vs_f64=err_ad32,
                         passed_f64=r64.passed, passed_f32=ok32))
        compiled.release_if_many()  # thousands of small programs: stay under vm.max_map_count
    wall = time.perf_counter() - t0

    print(f"{'cost':<27} {'output':<10} {'path':<7} {'nets':>5} {'max err f64 vs AD':>18} "
          f"{'vs FD':>9} {'f32 vs AD':>10} {'f32 man/AD vs f64':>18} {'pass':>6}")
    key_fn = lambda r: (r["cost"], r["output"])  # noqa: E731
    for (cost, out), grp in itertools.groupby(rows, key=key_fn):
        grp = list(grp)
        ok = sum(r["passed_f64"] and r["passed_f32"] for r in grp)
        print(f"{cost:<27} {out:<10} {'fused' if grp[0]['fused'] else 'dA[L]':<7} {len(grp):>5} "
              f"{max(r['autodiff_f64'] for r in grp):>18.1e} "
              f"{max(r['finite_diff_f64'] for r in grp):>9.1e} "
              f"{max(r['autodiff_f32'] for r in grp):>10.1e} "
              f"{max(r['manual_f32_vs_f64'] for r in grp):>8.1e}/"
              f"{max(r['autodiff_f32_vs_f64'] for r in grp):<9.1e} {ok:>3}/{len(grp):<3}")
    n_ok64 = sum(r["passed_f64"] for r in rows)
    n_ok32 = sum(r["passed_f32"] for r in rows)
    print(f"\n{len(rows)} networks (activations x costs x depths 1-4): float64 passed "
          f"{n_ok64}/{len(rows)} (tol 1e-10 vs autodiff, 1e-6 vs finite differences), float32 "
          f"passed {n_ok32}/{len(rows)} (tol 1e-5 vs autodiff, or at most 2x autodiff's own "
          f"float32 error against float64); {wall:.0f} s")
    path = benchmarking.write_json(
        benchmarking.output_path(args.out) / "gradcheck.json",
        dict(rows=rows, wall_s=wall, machine=benchmarking.machine_info(), quick=args.quick))
    print(f"wrote {path}")
    return 0 if n_ok64 == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
