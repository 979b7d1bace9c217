"""jaxmlp: feedforward networks with hand-derived forward and backward propagation in JAX.

Public surface (pure functions over a parameter pytree, column-major data):

* :class:`Network` — static description (sizes, activations, cost).
* :func:`init_params` — ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
* :func:`forward`, :func:`loss`, :func:`predict` — (F1)-(F3).
* :func:`backward`, :func:`value_and_grad` — (B1)-(B4), no autodiff.
"""

from jaxmlp import (
    accumulation,
    checkpoint,
    datasets,
    precision,
    sharding,
    shuffle,
    training,
    verification,
)
from jaxmlp.activations import ACTIVATIONS, Activation, get_activation
from jaxmlp.costs import COSTS, Cost, get_cost
from jaxmlp.init import SCHEMES, init_params
from jaxmlp.network import Network
from jaxmlp.per_example import backward_col, forward_col, loss_col, value_and_grad_col
from jaxmlp.per_example_gradients import per_example_grads
from jaxmlp.per_example_statistics import (
    PerExampleNorms,
    PerExampleStats,
    per_example_norms,
    per_example_stats,
)
from jaxmlp.privacy import DPGradient, dp_value_and_grad, make_dp_grad_fn
from jaxmlp.training import (
    StepMetrics,
    TrainState,
    evaluate,
    make_optimizer,
    make_train_epoch,
    make_train_step,
)
from jaxmlp.propagation import Cache, backward, forward, loss, predict, value_and_grad

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "StepMetrics",
    "TrainState",
    "accumulation",
    "checkpoint",
    "datasets",
    "evaluate",
    "make_optimizer",
    "make_train_epoch",
    "make_train_step",
    "precision",
    "sharding",
    "shuffle",
    "training",
    "verification",
    "Activation",
    "COSTS",
    "Cache",
    "Cost",
    "DPGradient",
    "Network",
    "PerExampleNorms",
    "PerExampleStats",
    "backward_col",
    "dp_value_and_grad",
    "forward_col",
    "loss_col",
    "make_dp_grad_fn",
    "per_example_grads",
    "per_example_norms",
    "per_example_stats",
    "value_and_grad_col",
    "SCHEMES",
    "backward",
    "forward",
    "get_activation",
    "get_cost",
    "init_params",
    "loss",
    "predict",
    "value_and_grad",
]
