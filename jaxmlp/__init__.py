"""jaxmlp: feedforward networks with hand-derived forward and backward propagation in JAX.

The top level holds the network description and the core functions (pure, jitted,
column-major: X is (n[0], m), W[l] is (n[l], n[l-1])):

* :class:`Network`, :func:`init_params`;
* :func:`forward`, :func:`loss`, :func:`predict` -- (F1)-(F3);
* :func:`backward`, :func:`value_and_grad` -- one backward sweep (B3)-(B4), then (B1)-(B2);
* :func:`per_example_grads`, :func:`per_example_norms`, :func:`per_example_stats` --
  first-order quantities of the same sweep.

Everything else is a submodule, imported on first use (``jaxmlp.training`` and so on):

========================  ==============================================================
``core``                  unchecked kernels: forward_pass, cost, output_seed, backward_sweep
``quantities``            gradient, per-example gradients/norms, variance, clipping (rules)
``privacy``               DP-SGD gradients (clipping + noise) from the same sweep
``threefry``              JAX's threefry numbers by an unrolled, fused hash (noise, shuffle)
``single_column``         the seeds' per-example (one column) forms, to contrast with vmap
``training``, ``fit``     optax step, scanned epoch, evaluation; the training loop
``checkpoint``            orbax checkpoints of a run (digest-verified)
``outdir``                one run per output folder (lock), atomic result files
``sharding``              data parallelism by sharding annotations
``ensemble``              K networks trained at once (vmap over the same step)
``distributed``           several processes (jax.distributed); the 2-D (data, model) mesh
``shuffle``               the epoch permutation
``verification``          the autodiff / finite-difference oracle checks
``datasets``              bundled real datasets
``tabular``               your own CSV / Parquet / .npz tables, with their preprocessing
``export``                params + network description to .npz / .safetensors and back
``validation``            the argument checks every entry point shares
``activations``, ``costs``  the registries of g[l] and costs
``registry``              register_activation / register_cost: your own rules, verified
``accumulation``          the forward/reverse accumulation worked example
``benchmarking``          the paired timing protocol and output files of experiments/
========================  ==============================================================
"""

import importlib as _importlib

from jaxmlp.activations import ACTIVATIONS
from jaxmlp.costs import COSTS
from jaxmlp.init import init_params
from jaxmlp.network import Network
from jaxmlp.propagation import backward, forward, loss, predict, value_and_grad
from jaxmlp.quantities import per_example_grads, per_example_norms, per_example_stats
from jaxmlp.registry import register_activation, register_cost

__version__ = "0.1.0"

_SUBMODULES = (
    "accumulation", "activations", "benchmarking", "checkpoint", "core", "costs", "curvature",
    "datasets", "distributed", "ensemble", "export", "fit", "init", "kfac", "network", "outdir",
    "privacy", "propagation", "quantities", "sharding", "shuffle", "single_column", "tabular",
    "threefry", "training", "validation", "verification",
)

__all__ = [
    "ACTIVATIONS",
    "COSTS",
    "Network",
    "backward",
    "forward",
    "init_params",
    "loss",
    "per_example_grads",
    "per_example_norms",
    "per_example_stats",
    "predict",
    "register_activation",
    "register_cost",
    "value_and_grad",
    *_SUBMODULES,
]


def __getattr__(name):  # PEP 562: submodules load on first use (orbax, tqdm... only when needed)
    if name in _SUBMODULES:
        return _importlib.import_module(f"jaxmlp.{name}")
    raise AttributeError(f"module 'jaxmlp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
