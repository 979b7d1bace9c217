"""jaxmlp: feedforward networks with hand-derived forward and backward propagation in JAX.

Public surface (pure functions over a parameter pytree, column-major data):

* :class:`Network` — static description (sizes, activations, cost).
* :func:`init_params` — ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
* :func:`forward`, :func:`loss`, :func:`predict` — (F1)-(F3).
* :func:`backward`, :func:`value_and_grad` — (B1)-(B4), no autodiff.
"""

from jaxmlp import accumulation, verification
from jaxmlp.activations import ACTIVATIONS, Activation, get_activation
from jaxmlp.costs import COSTS, Cost, get_cost
from jaxmlp.init import SCHEMES, init_params
from jaxmlp.network import Network
from jaxmlp.propagation import Cache, backward, forward, loss, predict, value_and_grad

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "accumulation",
    "verification",
    "Activation",
    "COSTS",
    "Cache",
    "Cost",
    "Network",
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
