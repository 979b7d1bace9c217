"""jaxmlp: feedforward networks whose forward and backward propagation are the hand-derived
recurrences of docs/derivations.md, as pure jitted JAX functions over parameter pytrees.

Column-major, as in the derivations: X is (n[0], m) (features by examples), W[l] is
(n[l], n[l-1]), b[l] is (n[l],). No autodiff transform in any path you train with.

    The network      Network, init_params, ACTIVATIONS, COSTS
    Propagation      forward, loss, predict                  (F1)-(F3)
                     backward, value_and_grad                one sweep (B3)-(B4), (B1)-(B2)
    Quantities       per_example_grads, per_example_norms, per_example_stats   (Q1)-(Q4)
    Training         fit -> FitResult                        optax, one scanned call/epoch
    Trained models   load_model(folder) -> .predict(rows)     batch-first, preprocessing included
    Your own rules   register_activation, register_cost      verified against autodiff

The subpackages, one concept each (imported on first use):

    jaxmlp.nn           network, activations, costs, init, the recurrences, sweep()
    jaxmlp.quantities   first-order rules and curvature read off the sweep
    jaxmlp.privacy      the DP-SGD gradient, Poisson sampling, accounting
    jaxmlp.train        step, optimizers (K-FAC), fit, ensembles, checkpoints, marglik training
    jaxmlp.data         bundled datasets, your own tables, export
    jaxmlp.parallel     sharding, several processes, the 2-D mesh
    jaxmlp.laplace      Laplace approximations: posterior, evidence, GLM predictive
    jaxmlp.oracle       checks against autodiff and finite differences
    jaxmlp.sklearn      MLPClassifier, MLPRegressor: batch-first scikit-learn estimators
    jaxmlp.forward_reverse_modes   the seed post's forward/reverse-mode worked example

docs/architecture.md draws how they depend on each other.
"""

import importlib as _importlib

from jaxmlp.nn.activations import ACTIVATIONS
from jaxmlp.nn.costs import COSTS
from jaxmlp.nn.init import init_params
from jaxmlp.nn.network import Network
from jaxmlp.nn.propagation import backward, forward, loss, predict, value_and_grad
from jaxmlp.oracle.registry import register_activation, register_cost
from jaxmlp.quantities.first_order import per_example_grads, per_example_norms, per_example_stats

__version__ = "0.1.0"

_SUBPACKAGES = ("data", "forward_reverse_modes", "laplace", "nn", "oracle", "parallel",
                "privacy", "quantities", "sklearn", "train")
_LAZY = {"fit": "jaxmlp.train.loop", "FitResult": "jaxmlp.train.loop",  # optax on first use
         "load_model": "jaxmlp.data.export"}
# Where the names of the flat layout went (a pointer, not an alias).
_MOVED = {
    "core": "jaxmlp.nn.recurrences", "propagation": "jaxmlp.nn.propagation",
    "network": "jaxmlp.nn.network", "activations": "jaxmlp.nn.activations",
    "costs": "jaxmlp.nn.costs", "init": "jaxmlp.nn.init", "validation": "jaxmlp.nn.checks",
    "single_column": "jaxmlp.nn.single_column", "curvature": "jaxmlp.quantities.curvature",
    "threefry": "jaxmlp.privacy.threefry", "training": "jaxmlp.train",
    "ensemble": "jaxmlp.train.ensemble", "kfac": "jaxmlp.train.kfac",
    "checkpoint": "jaxmlp.train.checkpoint", "outdir": "jaxmlp.train.outdir",
    "shuffle": "jaxmlp.train.shuffle", "datasets": "jaxmlp.data.datasets",
    "tabular": "jaxmlp.data.tabular", "export": "jaxmlp.data.export",
    "sharding": "jaxmlp.parallel.sharding", "distributed": "jaxmlp.parallel.distributed",
    "verification": "jaxmlp.oracle.verification", "registry": "jaxmlp.oracle.registry",
    "accumulation": "jaxmlp.forward_reverse_modes",
    "make_train_epoch": "jaxmlp.train.make_train_epoch",
    "make_train_step": "jaxmlp.train.make_train_step",
    "make_dp_train_epoch": "jaxmlp.train.make_dp_train_epoch",
    "make_dp_grad_fn": "jaxmlp.privacy.make_dp_grad_fn",
}

__all__ = [
    "ACTIVATIONS", "COSTS", "FitResult", "Network", "backward", "fit", "forward",
    "init_params", "load_model", "loss", "per_example_grads", "per_example_norms", "per_example_stats",
    "predict", "register_activation", "register_cost", "value_and_grad",
]


def __getattr__(name):  # PEP 562: subpackages and fit load on first use
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"jaxmlp.{name}")
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    if name in _MOVED:
        raise AttributeError(f"module 'jaxmlp' has no attribute {name!r}: it is now "
                             f"{_MOVED[name]} (see docs/architecture.md).")
    raise AttributeError(f"module 'jaxmlp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_LAZY))
