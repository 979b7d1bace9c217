"""Classifier on digits: momentum SGD, Adam and K-FAC raced to Adam's final training cost.

The network is 64-512-512-10, relu hidden layers, softmax output, categorical
cross-entropy, on the digits training split (``jaxmlp.data.datasets``: the largest bundled
set, 1438 training images of 64 pixels; the issue's 784-512-512-10 needs MNIST, which does
not ship, so the first layer is 64 wide), minibatches of ``--batch-size`` (256). The race
is the autoencoder's (``_common/race.py``; grids below): each optimizer's best final
training cost of a small grid, and the steps and seconds to reach Adam's final cost;
kfac-jax's row where it is installed.

    python experiments/classifier_kfac.py [--steps 500] [--out DIR | --results]

Writes ``results.json`` and ``classifier.svg`` (``--results``: ``results/classifier_kfac/``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # LAPACK on one thread (docs/curvature.md)

import sys

import jax.numpy as jnp

import jaxmlp
from _common import race
from jaxmlp.data import datasets

SIZES = (64, 512, 512, 10)
GRIDS = {
    "momentum": [{"lr": lr} for lr in (0.03, 0.1, 0.3)],
    "adam": [{"lr": lr} for lr in (1e-4, 3e-4, 1e-3)],
    "kfac": [{"lr": lr, "damping": d} for lr in (0.1, 0.3) for d in (1e-3, 1e-2)],
    "kfac adaptive": [{}],
}


def problem(seed):
    """The network, X, Y and their descriptions (``race.main``'s ``problem``)."""
    data = datasets.load("digits", seed=seed)
    X = jnp.asarray(data.X_train, jnp.float32)
    Y = jnp.asarray(data.Y_train, jnp.float32)
    net = jaxmlp.Network(SIZES, ("relu", "relu", "softmax"), "categorical_cross_entropy")
    return (net, X, Y, "digits train split (1438 x 64), standardised",
            f"digits classifier {'-'.join(map(str, SIZES))}, relu, softmax")


def main(argv=None):
    return race.main(argv, doc=__doc__, name="classifier_kfac", figure="classifier.svg",
                     steps=500, batch_size=256, grids=GRIDS, problem=problem)


if __name__ == "__main__":
    sys.exit(main())
