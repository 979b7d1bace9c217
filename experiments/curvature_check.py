"""Cross-check every curvature quantity against autodiff over every activation x cost.

For each valid (output activation, cost) pair and each hidden activation, a random network
(depth cycling 1-4, widths 3) and batch (m cycling 1-3) are drawn and
``jaxmlp.oracle.verification.check_curvature`` compares, in float64, ggn_diag,
per_example_ggn_diag, the exact K-FAC factors, ggn_vp, hvp and hessian_diag with their
autodiff definitions (jax.jacobian, jax.hessian, jax.jvp of jax.grad).

    python experiments/curvature_check.py [--quick] [--out results/curvature]

Prints one line per case with the largest error of each quantity, writes every case
to ``check.json`` and prints ``wrote <path>``. Exit code 1 if any case exceeds 1e-10.
"""

from __future__ import annotations

import os
import sys
import time

import jax

from _common import cli, compiled, output

jax.config.update("jax_enable_x64", True)

import jaxmlp
from jaxmlp.oracle.verification import CURVATURE_QUANTITIES, check_curvature, random_problem

QUICK_HIDDEN = ("tanh", "softmax", "gelu")


def cases(quick: bool):
    acts = sorted(jaxmlp.ACTIVATIONS)
    i = 0
    for cost in sorted(jaxmlp.COSTS):
        c = jaxmlp.nn.costs.get_cost(cost)
        nL = 1 if c.max_outputs == 1 else 3
        for out in acts:
            g = jaxmlp.nn.activations.get_activation(out)
            if (c.needs_unit_range and not g.unit_range) or (out == "softmax" and nL == 1):
                continue
            for hidden in (QUICK_HIDDEN if quick else acts):
                yield cost, out, hidden, nL, 1 + i % 4, 1 + i % 3
                i += 1


PROG = "curvature_check.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"hidden activations {QUICK_HIDDEN} only")
    output.add_out_arguments(p, "results/curvature")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "curvature_check")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    rows, t0 = [], time.perf_counter()
    cols = [q for q in CURVATURE_QUANTITIES]
    print(f"{'cost':>26} {'output':>10} {'hidden':>10} {'L':>2} {'m':>2} "
          + " ".join(f"{q[:12]:>12}" for q in cols))
    for k, (cost, out, hidden, nL, depth, m) in enumerate(cases(args.quick)):
        net = jaxmlp.Network((3,) + (3,) * (depth - 1) + (nL,), (hidden,) * (depth - 1) + (out,),
                             cost)
        params, X, Y = random_problem(net, jax.random.PRNGKey(k), m)
        rep = check_curvature(net, params, X, Y, key=jax.random.PRNGKey(10_000 + k))
        worst = {q: max(e.error for e in rep.errors if e.quantity == q) for q in cols}
        rows.append(dict(cost=cost, output=out, hidden=hidden if depth > 1 else None, depth=depth,
                         m=m, max_error=rep.max_error, passed=rep.passed, per_quantity=worst))
        print(f"{cost:>26} {out:>10} {hidden if depth > 1 else '-':>10} {depth:>2} {m:>2} "
              + " ".join(f"{worst[q]:12.1e}" for q in cols), flush=True)
        compiled.release_if_many()  # ~700 memory mappings per network: stay under the limit
    failed = [r for r in rows if not r["passed"]]
    worst = max(r["max_error"] for r in rows)
    print(f"{len(rows) - len(failed)}/{len(rows)} cases within 1e-10 (largest error {worst:.1e}), "
          f"{time.perf_counter() - t0:.0f} s")
    path = output.write_json(os.path.abspath(os.path.join(args.out, "check.json")),
                             {"quick": args.quick, "jax": jax.__version__, "tolerance": 1e-10,
                              "cases": rows})
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
