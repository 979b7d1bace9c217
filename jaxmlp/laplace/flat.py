"""The parameter vector of the posterior (LA1) and the prior precision (LA2).

Ordering (LA1), the one of the Kronecker factors (H6): layer l's parameters are the matrix
[W[l] b[l]] of shape (n[l], n[l-1] + 1), bias as the last column, flattened row-major; the
layers follow each other, l = 1..L. Entry (j, k) of layer l's block is then entry
j (n[l-1] + 1) + k, and ``kron(G, A)`` of (H6) is that block's matrix. ``"last_layer"``
uses the same ordering restricted to layer L.

The prior precision (LA2) is one of three kinds: a scalar (one precision for every
parameter), one per layer (a sequence of L positive numbers), or one per parameter (a
params-shaped pytree, not for ``"kron"``, whose eigenbasis needs a multiple of the identity
per layer). :func:`prior_groups` maps each parameter to its group.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn.network import Network

__all__ = ["PRIOR_KINDS", "block_sizes", "check_prior_precision", "concrete", "flatten",
           "prior_groups", "unflatten"]

PRIOR_KINDS = ("scalar", "layer", "parameter")


def concrete(*values) -> bool:
    """True when no leaf of ``values`` is a tracer (``jax.jit``, ``jax.vmap``, ``jax.grad``):
    the value checks (finite, positive) run on concrete values only; shape and dtype checks
    run always."""
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


def block_sizes(net: Network, layers: Sequence[int]) -> list:
    """Per layer index l (0-based) in ``layers``: (n[l+1], n[l] + 1), the shape of [W b]."""
    return [(net.sizes[l + 1], net.sizes[l] + 1) for l in layers]


def flatten(params, layers: Sequence[int] = None) -> jax.Array:
    """(LA1) the vector of ``params`` (of the layers ``layers``, 0-based; default all):
    concatenated row-major [W[l] b[l]] blocks, shape (P,)."""
    layers = range(len(params)) if layers is None else layers
    return jnp.concatenate([jnp.concatenate([params[l]["W"], params[l]["b"][:, None]], axis=1)
                            .ravel() for l in layers])


def unflatten(net: Network, theta: jax.Array, layers: Sequence[int] = None) -> list:
    """Inverse of :func:`flatten`: ``[{"W", "b"}, ...]`` for the layers ``layers``; a leading
    batch axis of ``theta`` (k, P) gives leaves with a leading axis k."""
    layers = list(range(net.num_layers)) if layers is None else list(layers)
    out, start = [], 0
    for rows, cols in block_sizes(net, layers):
        blk = theta[..., start:start + rows * cols].reshape(theta.shape[:-1] + (rows, cols))
        out.append({"W": blk[..., :-1], "b": blk[..., -1]})
        start += rows * cols
    return out


def prior_groups(net: Network, kind: str, layers: Sequence[int]) -> np.ndarray:
    """(P,) int group index of every parameter: all 0 (scalar), the layer's position in
    ``layers`` (per layer), or 0..P-1 (per parameter)."""
    sizes = [r * c for r, c in block_sizes(net, layers)]
    if kind == "scalar":
        return np.zeros(sum(sizes), np.int32)
    if kind == "layer":
        return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    return np.arange(sum(sizes), dtype=np.int32)


def _traced(name: str, value: Any, dtype) -> jax.Array:
    """A traced prior precision as an array of ``dtype``: real numbers, values unchecked."""
    try:
        a = jnp.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected numbers, got {value!r}.") from None
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)):
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}.")
    return a.astype(dtype)


def _positive_finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        bad = a[~(np.isfinite(a) & (a > 0))].ravel()[0]
        raise ValueError(f"{name}: expected positive finite precisions, got an entry {bad!r}.")


def check_prior_precision(net: Network, value: Any, structure: str, layers: Sequence[int],
                          dtype, name: str = "prior_precision"):
    """(kind, array): a positive number -> ("scalar", shape ()); a sequence of len(layers)
    positive numbers -> ("layer", (len(layers),)); a params-shaped pytree of the layers
    ``layers`` -> ("parameter", (P,) in the order (LA1)). TypeError / ValueError naming
    ``name`` otherwise. A traced value (under ``jax.jit`` / ``jax.vmap`` / ``jax.grad``) is
    checked for its kind, shape and dtype; its values only when concrete."""
    n = len(layers)
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a positive number, {n} per-layer numbers or a "
                        f"params-shaped pytree, got {value!r}.")
    if isinstance(value, numbers.Real) or (hasattr(value, "shape") and np.ndim(value) == 0):
        if not concrete(value):
            return "scalar", _traced(name, value, dtype)
        a = np.asarray(value, np.float64)
        _positive_finite(name, a)
        return "scalar", jnp.asarray(a, dtype)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        if structure == "kron":
            raise ValueError(f"{name}: structure='kron' takes a scalar or one precision per "
                             "layer (its eigenbasis needs a multiple of the identity per layer), "
                             "got a per-parameter pytree.")
        want = [{"W": (r, c - 1), "b": (r,)} for r, c in block_sizes(net, layers)]
        if len(value) != n:
            raise ValueError(f"{name}: expected a per-parameter pytree of {n} layer(s), got "
                             f"{len(value)}.")
        for i, (layer, w) in enumerate(zip(value, want)):
            if set(layer) != {"W", "b"} or any(np.shape(layer[k]) != w[k] for k in "Wb"):
                got = {k: np.shape(v) for k, v in layer.items()}
                raise ValueError(f"{name}[{i}]: expected shapes {w}, got {got}.")
        if not concrete(value):
            return "parameter", flatten([{k: _traced(f"{name}[{i}]['{k}']", layer[k], dtype)
                                          for k in "Wb"} for i, layer in enumerate(value)])
        a = np.asarray(flatten([{k: jnp.asarray(v, jnp.float64) for k, v in layer.items()}
                                for layer in value]))
        _positive_finite(name, a)
        return "parameter", jnp.asarray(a, dtype)
    if isinstance(value, (list, tuple, np.ndarray, jax.Array)):
        if not concrete(value):
            a = _traced(name, value, dtype)
            if a.shape != (n,):
                raise ValueError(f"{name}: expected a scalar, {n} per-layer precision(s) (shape "
                                 f"({n},)) or a params-shaped pytree, got shape {a.shape}.")
            return "layer", a
        try:
            a = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected numbers, got {value!r}.") from None
        if a.shape != (n,):
            raise ValueError(f"{name}: expected a scalar, {n} per-layer precision(s) (shape "
                             f"({n},)) or a params-shaped pytree, got shape {a.shape}.")
        _positive_finite(name, a)
        return "layer", jnp.asarray(a, dtype)
    raise TypeError(f"{name}: expected a positive number, {n} per-layer numbers or a "
                    f"params-shaped pytree, got {type(value).__name__}.")
