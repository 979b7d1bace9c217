"""The network and its recurrences: (F1)-(F3) forward, (B1)-(B4) backward.

=====================  ==================================================================
module                 what lives there
=====================  ==================================================================
``network``            :class:`Network`: sizes, activations g[l], cost (static, hashable)
``activations``        g[l], g'[l], g''[l] of the ten activations (the registry of g)
``costs``              the costs and their seeds (C1)-(C3) (the registry of costs)
``init``               :func:`init_params`: parameter pytrees [{"W", "b"}, ...]
``recurrences``        the unchecked kernels: forward_pass, backward_sweep, :func:`sweep`
``propagation``        the checked, jitted API: forward, loss, predict, backward, value_and_grad
``single_column``      the per-example (one column) forms, to contrast with vmap
``checks``             the argument checks every entry point shares
``host``               host-side views of (multi-process) arrays for eager checks
=====================  ==================================================================
"""

from jaxmlp.nn.activations import ACTIVATIONS, Activation, get_activation
from jaxmlp.nn.costs import COSTS, Cost, get_cost
from jaxmlp.nn.init import SCHEMES, init_params
from jaxmlp.nn.network import Network
from jaxmlp.nn.propagation import backward, forward, loss, predict, value_and_grad
from jaxmlp.nn.recurrences import Cache, Sweep, sweep

__all__ = [
    "ACTIVATIONS", "Activation", "COSTS", "Cache", "Cost", "Network", "SCHEMES", "Sweep",
    "backward", "forward", "get_activation", "get_cost", "init_params", "loss", "predict",
    "sweep", "value_and_grad",
]
