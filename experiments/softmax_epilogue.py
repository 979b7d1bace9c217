"""The softmax output's column shift and XLA:CPU's YNNPACK fusions: what each form costs.

    python experiments/softmax_epilogue.py [--sizes 1024,2048,1024] [--reps 20]

The last layer of a softmax network computes (F1) Z = W A + b, then softmax's column shift
M = max_rows Z. Given a bare ``jnp.max(Z, axis=0)``, XLA:CPU (jax 0.10) fuses the reduction
into the YNNPACK fusion of the product; jaxmlp's guarded shift (``activations._column_shift``,
the convention of ``jax.nn.logsumexp``: M where finite, else 0) keeps it a fusion of its own.
Variants, each jitted and fed W (n[L], n[L-1]), A (n[L-1], m), b, one-hot Y, all float32:

* ``bare shift``: Z - max(Z), then exp, the column sums, the cost and the seed (A[L] - Y)/m;
* ``guarded shift``: the same with the guard (what :mod:`jaxmlp.nn.activations` does);
* ``product only``: W A, the floor.

Timed with ``_common.benchmarking.time_paired`` (compiled first, interleaved, paired ratios
to ``bare shift``); the compiled HLO of each variant is checked for a fusion that holds both
a dot and a reduce. Writes ``results/softmax_epilogue/softmax_epilogue.json``.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from _common import networks
from _common import cli, output  # noqa: E402
from _common import benchmarking
from jaxmlp.nn.activations import _column_shift


def _seed_and_cost(Z, M, Y):
    """exp, column sums, J = mean(-sum Y log softmax) and dZ[L] = (softmax - Y) / m."""
    Zs = Z - jax.lax.stop_gradient(M)
    E = jnp.exp(Zs)
    s = jnp.sum(E, axis=0, keepdims=True)
    J = -jnp.mean(jnp.sum(Y * (Zs - jnp.log(s)), axis=0))
    return J, (E / s - Y) / Z.shape[1]


def variants():
    def bare(W, A, b, Y):
        Z = W @ A + b[:, None]
        return _seed_and_cost(Z, jnp.max(Z, axis=0, keepdims=True), Y)

    def guarded(W, A, b, Y):
        Z = W @ A + b[:, None]
        return _seed_and_cost(Z, _column_shift(Z), Y)

    def product(W, A, b, Y):
        return W @ A

    return {"bare shift": jax.jit(bare), "guarded shift": jax.jit(guarded),
            "product only": jax.jit(product)}


PROG = "softmax_epilogue.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048,1024", type=cli.positive_int_list,
                    metavar="NL,NPREV,M",
                    help="three integers >= 1: n[L],n[L-1],m (default: the last layer of "
                         "benchmark.py's large shape)")
    ap.add_argument("--reps", type=cli.positive_int, default=20,
                    help="paired timing rounds (>= 1)")
    output.add_out_arguments(ap, "results/softmax_epilogue")
    return ap


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if len(args.sizes) != 3:
            raise cli.UsageError(f"--sizes: expected three integers >= 1 n[L],n[L-1],m, got "
                                 f"{','.join(map(str, args.sizes))!r}")
        output.resolve_out(args, "softmax_epilogue")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    nL, nprev, m = args.sizes
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.standard_normal((nL, nprev), dtype=np.float32) / np.sqrt(nprev))
    A = jnp.asarray(rng.standard_normal((nprev, m), dtype=np.float32))
    b = jnp.zeros((nL,), jnp.float32)
    Y = jnp.asarray(np.eye(nL, dtype=np.float32)[:, rng.integers(0, nL, m)])
    fns = variants()
    fused = {k: networks.hlo_summary(f.lower(W, A, b, Y).compile().as_text())["dot_reduce_fusions"]
             for k, f in fns.items()}
    J0, d0 = fns["bare shift"](W, A, b, Y)
    J1, d1 = fns["guarded shift"](W, A, b, Y)
    agree = float(jnp.max(jnp.abs(d1 - d0))), float(abs(J1 - J0))
    timing = benchmarking.time_paired({k: (lambda f=f: f(W, A, b, Y)) for k, f in fns.items()},
                                      reference="bare shift", rounds=args.reps)
    print(timing.table())
    for k, v in fused.items():
        print(f"{k:>14}: dot + reduce in one fusion: {'yes' if v else 'no'}")
    print(f"guarded vs bare: max |dZ difference| {agree[0]:.1e}, |J difference| {agree[1]:.1e}")
    path = benchmarking.write_json(f"{args.out}/softmax_epilogue.json", {
        "machine": benchmarking.machine_info(), "sizes": {"n_L": nL, "n_prev": nprev, "m": m},
        "dot_reduce_fusions": fused, "max_abs_diff_dZ": agree[0], "abs_diff_J": agree[1],
        "timing": timing.to_json()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
