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

import functools
import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn import checks
from jaxmlp.nn.checks import require_network
from jaxmlp.nn.network import Network

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
    dtype = jnp.dtype(dtype)
    shapes = tuple((n_out, n_in) for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:]))
    normals = _standard_normals(checks.prng_key(key), shapes, dtype)
    params = []
    traced = any(isinstance(N, jax.core.Tracer) for N in normals)  # under jit / vmap
    for N, s, (n_out, n_in) in zip(normals, schemes, shapes):
        std = _std(s, n_in, n_out, scale)
        if traced:
            params.append({"W": std * N, "b": jnp.zeros((n_out,), dtype=dtype)})
        else:
            # W = std * N in NumPy: the same IEEE product as the eager jnp multiply, bit for
            # bit, without one compiled program per layer shape (the scripts' start-up)
            params.append({"W": jax.device_put(np.asarray(std, dtype=dtype) * np.asarray(N)),
                           "b": jax.device_put(np.zeros((n_out,), dtype=dtype))})
    return params


@functools.partial(jax.jit, static_argnums=(1, 2))
def _standard_normals(key: jax.Array, shapes: tuple, dtype) -> list[jax.Array]:
    """N(0, 1) draws of each shape, the l-th from the l-th of ``jax.random.split(key, L)``.

    One compiled program for the split and every layer's draw (the same values as calling
    ``jax.random.normal`` layer by layer, which compiles one program per shape).
    """
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(keys[l], shape, dtype=dtype) for l, shape in enumerate(shapes)]
