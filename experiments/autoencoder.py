"""Deep autoencoder on digits: momentum SGD, Adam and K-FAC raced to Adam's final cost.

The network is 64-256-128-32-128-256-64, tanh hidden layers, linear output, mean squared
error, reconstructing the standardised digits images (X -> X), minibatches of
``--batch-size`` (128). Each optimizer runs a small grid from the same initialisation in
the one-call scanned epoch (``_common/race.py``) and keeps its best final training cost:
momentum 0.9 and Adam over learning rates, K-FAC (``jaxmlp.train.kfac.kfac`` at its
defaults: Monte Carlo factors from the same forward pass, statistics and inverses every 20
steps, KL clip) over learning rate and damping, and K-FAC with the quadratic model's learning
rate and momentum and Levenberg-Marquardt damping (K5), (K6), one run, no grid. All runs
advance together, epoch by epoch (``race.race``), so the machine's load falls on all alike.
kfac-jax's ``Optimizer`` with its adaptive learning rate, momentum and damping races on the
same network, initialisation, minibatches and batch size over its initial damping and once
at its own schedule (``race.KFAC_JAX_GRID``), where it is installed (``_common/peers.py``:
kfac-jax 0.0.8 needs a one-function adapter on JAX >= 0.9.2; ``race.py`` says how its timing
differs). Reported: the steps and the seconds each needs to reach Adam's final training cost.

    python experiments/autoencoder.py [--steps 1100] [--out DIR | --results]

Writes ``results.json`` and ``autoencoder.svg`` (cost against steps and against seconds;
``--results``: ``results/autoencoder/``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # LAPACK on one thread (docs/curvature.md)

import sys

import jax.numpy as jnp

import jaxmlp
from _common import race
from jaxmlp.data import datasets

SIZES = (64, 256, 128, 32, 128, 256, 64)
GRIDS = {
    "momentum": [{"lr": lr} for lr in (0.01, 0.03, 0.1)],
    "adam": [{"lr": lr} for lr in (1e-3, 3e-3, 1e-2)],
    "kfac": [{"lr": lr, "damping": d} for lr in (0.1, 0.3) for d in (1e-3, 1e-2)],
    "kfac adaptive": [{}],
}


def problem(seed):
    """The network, X -> X and their descriptions (``race.main``'s ``problem``)."""
    data = datasets.load("digits", seed=seed)
    X = jnp.asarray(data.X_train, jnp.float32)  # (64, m)
    net = jaxmlp.Network(SIZES, ("tanh",) * 5 + ("linear",), "mean_squared_error")
    return (net, X, X, "digits train split, standardised, X -> X",
            f"digits autoencoder {'-'.join(map(str, SIZES))}, tanh, MSE")


def main(argv=None):
    return race.main(argv, doc=__doc__, name="autoencoder", figure="autoencoder.svg",
                     steps=1100, batch_size=128, grids=GRIDS, problem=problem)


if __name__ == "__main__":
    sys.exit(main())
