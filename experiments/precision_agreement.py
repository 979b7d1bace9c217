"""Gradient agreement of low-precision matrix products (compute_dtype=) with float32.

    python experiments/precision_agreement.py

Medium network 784-512-512-10 (relu, softmax + categorical cross-entropy), m = 256, random
data: relative Frobenius error of each gradient leaf (W1 b1 W2 b2 W3 b3) of
``jaxmlp.value_and_grad(..., compute_dtype=...)`` against ``jaxmlp.value_and_grad``
in float32, and the difference in J. Writes ``precision_agreement.json`` into a new
``runs/precision_agreement-<time>/`` (``--out FILE``; ``--results``: the committed
``results/benchmark/precision_agreement.json``).
"""

import sys

import jax
import jax.numpy as jnp

import jaxmlp
from _common import benchmarking
from _common import cli, output


PROG = "precision_agreement.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    output.add_out_arguments(p, "results/benchmark/precision_agreement.json", what="JSON file")
    return p


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "precision_agreement")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    net = jaxmlp.Network((784, 512, 512, 10), ("relu", "relu", "softmax"),
                         "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (784, 256), jnp.float32)
    labels = jax.random.randint(jax.random.PRNGKey(2), (256,), 0, 10)
    Y = jax.nn.one_hot(labels, 10, dtype=jnp.float32).T
    J, g = jaxmlp.value_and_grad(net, params, X, Y)
    print(f"{'compute dtype':<14}" + "".join(f"{n:>8}" for n in ("W1", "b1", "W2", "b2", "W3", "b3"))
          + f"{'|dJ|':>10}")
    rows = []
    for cd in ("bfloat16", "float16"):
        Jc, gc = jaxmlp.value_and_grad(net, params, X, Y, compute_dtype=cd)
        errs = [float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                for a, b in zip(jax.tree.leaves(gc), jax.tree.leaves(g))]
        rows.append({"compute_dtype": cd, "relative_error": dict(zip(("W1", "b1", "W2", "b2", "W3", "b3"), errs)),
                     "abs_dJ": abs(float(Jc - J))})
        print(f"{cd:<14}" + "".join(f"{100 * e:>7.2f}%" for e in errs) + f"{abs(float(Jc - J)):>10.1e}")
    path = benchmarking.write_json(args.out,
                                   {"sizes": list(net.sizes), "m": 256, "rows": rows,
                                    "machine": benchmarking.machine_info()})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
