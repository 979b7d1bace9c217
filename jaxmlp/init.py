"""Parameter initialisation: ``init_params(net, key) -> [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.

The parameters are a plain list of dicts, a pytree that optax, ``jax.tree_util``,
orbax and ``jax.sharding`` take as it is. Weights are drawn from a zero-mean normal
whose standard deviation depends on the scheme; biases start at zero. A random start
breaks the symmetry between the units of a layer (seed 000).

Schemes (n_in = n[l-1], n_out = n[l]):

* ``"he"``:     std = sqrt(2 / n_in)            (ReLU family; default for relu, leaky_relu,
  elu, softplus, silu, gelu)
* ``"glorot"``: std = sqrt(2 / (n_in + n_out))  (Xavier; default for tanh, sigmoid, softmax)
* ``"lecun"``:  std = sqrt(1 / n_in)            (default for linear)
* ``"normal"``: std = ``scale`` (default 0.01)  (the seeds' small random start)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jaxmlp import validation
from jaxmlp.validation import require_network
from jaxmlp.network import Network

SCHEMES = ("he", "glorot", "lecun", "normal")


def _std(scheme: str, n_in: int, n_out: int, scale: float) -> float:
    if scheme == "he":
        return math.sqrt(2.0 / n_in)
    if scheme == "glorot":
        return math.sqrt(2.0 / (n_in + n_out))
    if scheme == "lecun":
        return math.sqrt(1.0 / n_in)
    return scale


def init_params(
    net: Network,
    key: jax.Array,
    scheme: Optional[Union[str, Sequence[str]]] = None,
    *,
    dtype=jnp.float32,
    scale: float = 0.01,
) -> list[dict[str, jax.Array]]:
    """Draws the initial parameters of ``net``.

    Arguments:
      net: the network.
      key: a ``jax.random`` key (typed or raw) or an integer seed (``jax.random.key(seed)``,
        the same parameters as ``jax.random.PRNGKey(seed)``); the same key gives the same
        parameters. Anything else is a TypeError saying how to make a key.
      scheme: one of ``"he"``, ``"glorot"``, ``"lecun"``, ``"normal"``, one name per
        layer, or None for each layer's activation default.
      dtype: a floating dtype (float64 needs ``jax_enable_x64``).
      scale: the standard deviation of the ``"normal"`` scheme.

    Returns:
      ``[{"W": (n[l], n[l-1]), "b": (n[l],)} for l = 1..L]``.
    """
    net = require_network(net)
    L = net.num_layers
    if scheme is None:
        schemes = tuple(g.init for g in net.layer_activations)
    elif isinstance(scheme, str):
        schemes = (scheme,) * L
    else:
        schemes = tuple(scheme)
        if len(schemes) != L:
            raise ValueError(f"scheme: expected one name or {L} names, got {len(schemes)}.")
    for s in schemes:
        if s not in SCHEMES:
            raise ValueError(f"scheme: expected one of {list(SCHEMES)}, got {s!r}.")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {jnp.dtype(dtype)}.")
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise TypeError(
            "dtype: float64 parameters need 64-bit mode; call "
            "jax.config.update('jax_enable_x64', True) first (got dtype=float64)."
        )
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale: expected a positive number, got {scale!r}.")
    keys = jax.random.split(validation.prng_key(key), L)
    params = []
    for k, s, (n_in, n_out) in zip(keys, schemes, zip(net.sizes[:-1], net.sizes[1:])):
        std = _std(s, n_in, n_out, scale)
        W = std * jax.random.normal(k, (n_out, n_in), dtype=dtype)
        params.append({"W": W, "b": jnp.zeros((n_out,), dtype=dtype)})
    return params
