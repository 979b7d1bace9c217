"""Single-column forms of (F1), (F2), (F3) and (B1)-(B4): one example at a time.

The seeds write every equation twice, for one column ``a[:,i]`` and for the m columns
of ``A`` at once (docs/derivations.md). :mod:`jaxmlp.nn.propagation` is the batched edge;
this module is the per-column one, for one example

    x = a[0][:,i] of shape (n[0],),   y = y[:,i] of shape (n[L],),

    (F1)  z[l] = W[l] a[l-1] + b[l]                       (n[l],)
    (F2)  a[l] = g[l](z[l])                               (n[l],)
    (F3)  L_i  = cost of column i                          ()
    (B1)  dW[l] = dz[l] a[l-1]^T   (one outer product)    (n[l], n[l-1])
    (B2)  db[l] = dz[l]                                   (n[l],)
    (B3)  da[l-1] = W[l]^T dz[l]                          (n[l-1],)
    (B4)  dz[l] = (da[l]/dz[l]) da[l]                     (n[l],)

The kernels of :mod:`jaxmlp.nn.recurrences` act on axis 0 (units), so the same
``recurrences.forward_pass`` and ``recurrences.backpropagate`` run the column forms when given a column
of shape (n,): (B3)/(B4) are written once, for both. What is specific to one column is
(B1)/(B2): the gradient is ONE outer product dz a^T, not a sum over columns.

The 1/m convention. The batched cost is J = (1/m) sum_i L_i. The single-column
functions compute L_i itself (no 1/m) and, by default, its gradient dL_i/dtheta.
``backward_col`` and ``value_and_grad_col`` take ``m`` (default 1): the seed is then
that of the term (1/m) L_i of J, so that ``jax.vmap`` over the m columns followed by a
sum over examples gives exactly the batched gradient of ``jaxmlp.value_and_grad``:

    sum_i backward_col(..., m=m)[i] = grad J,     (1/m) sum_i backward_col(...)[i] = grad J.

Batching these functions with ``jax.vmap`` over the columns (``in_axes=(None, None, 1)``
and ``out_axes=1`` for ``forward_col``, giving the batched (n[l], m) cache;
``in_axes=(None, None, 1, 1)`` for ``loss_col``, ``backward_col`` and ``value_and_grad_col``,
whose per-example outputs stack on axis 0) turns every matrix-vector product ``W @ a``
into one matrix-matrix product (docs/per_example.md shows the jaxpr).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmlp.nn import recurrences
from jaxmlp.nn import checks
from jaxmlp.nn.recurrences import Cache
from jaxmlp.nn.network import Network

Array = jax.Array
Params = list  # [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]

__all__ = ["backward_col", "forward_col", "grad_col_kernel", "gradient_col",
           "linear_backward_col", "loss_col", "value_and_grad_col"]


def linear_backward_col(dz: Array, a_prev: Array) -> tuple[Array, Array]:
    """(B1) dW[l] = dz[l] a[l-1]^T (an outer product) and (B2) db[l] = dz[l], one column.

    Shapes: dz (n[l],), a_prev (n[l-1],) -> dW (n[l], n[l-1]), db (n[l],).
    """
    return jnp.outer(dz, a_prev), dz


def gradient_col(dzs: tuple, cache: Cache) -> Params:
    """(B1), (B2) of one column for every layer, read off a column sweep: from the sweep's
    dz[l] (n[l],) and the cache's a[l-1] (n[l-1],), ``[{"W": dz[l] a[l-1]^T, "b": dz[l]}]``
    (the column form of :func:`jaxmlp.nn.recurrences.gradient`)."""
    out = []
    for dz, a_prev in zip(dzs, cache.A[:-1]):
        dW, db = linear_backward_col(dz, a_prev)
        out.append({"W": dW, "b": db})
    return out


def grad_col_kernel(net: Network, params: Params, x: Array, y: Array, m: int) -> Params:
    """Unchecked kernel: the gradient of (1/m) L_i for one column x (n[0],), y (n[L],):
    forward (F1)-(F2), the sweep (B3)-(B4), then :func:`gradient_col` (B1)/(B2)."""
    s = recurrences.sweep(net, params, x, y, m)
    return gradient_col(s.dZs, s.cache)


def _prepare_col(net, params, x, y=None):
    net = checks.require_network(net)
    dtype = checks.check_params(net, params)
    x = checks.check_x(net, x, dtype)
    if y is None:
        return x
    return x, checks.check_y(net, y, dtype)


@functools.partial(jax.jit, static_argnums=0)
def forward_col(net: Network, params: Params, x: Array) -> tuple[Array, Cache]:
    """(F1), (F2) for one example.

    Arguments:
      net: the network (static).
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      x: one input column, shape (n[0],).

    Returns:
      ``(a[L], cache)``: a[L] of shape (n[L],) and a :class:`jaxmlp.nn.recurrences.Cache` whose
      entries are columns, a[l] of shape (n[l],), z[l] of shape (n[l],). Under
      ``jax.vmap(..., in_axes=(None, None, 1), out_axes=1)`` it is the batched cache.
    """
    x = _prepare_col(net, params, x)
    return recurrences.forward_pass(net, params, x)


@functools.partial(jax.jit, static_argnums=0)
def loss_col(net: Network, params: Params, x: Array, y: Array) -> Array:
    """(F3) for one example: L_i, a scalar, without the 1/m of J.

    x is (n[0],), y is (n[L],). J = mean of ``loss_col`` over the columns.
    """
    x, y = _prepare_col(net, params, x, y)
    a_L, cache = recurrences.forward_pass(net, params, x)
    return recurrences.losses(net, cache.Z[-1], a_L, y)


@functools.partial(jax.jit, static_argnums=(0, 4))
def backward_col(net: Network, params: Params, cache: Cache, y: Array, m: int = 1) -> Params:
    """(B1)-(B4) for one example, from the seed dz[L] down to layer 1.

    Arguments:
      net: the network (static).
      params: as for ``forward_col``.
      cache: the column cache from ``forward_col(net, params, x)``, in the params' dtype.
      y: the target column, shape (n[L],).
      m: (static) the gradient is that of (1/m) L_i. m = 1 (default): the gradient
        of the example's own loss L_i. m = batch size: example i's term of J, so the
        sum over the batch equals ``jaxmlp.value_and_grad``'s gradient.

    Returns:
      ``[{"W": dz[l] a[l-1]^T, "b": dz[l]}, ...]``, mirroring params.
    """
    net = checks.require_network(net)
    dtype = checks.check_params(net, params)
    m = checks.positive_int("m", m)
    if not isinstance(cache, Cache) or len(cache.A) != net.num_layers + 1:
        raise TypeError(
            "cache: expected the Cache returned by forward_col(net, params, x) for this "
            f"network, got {type(cache).__name__}."
        )
    for l, a in enumerate(cache.A):
        if tuple(a.shape) != (net.sizes[l],):
            raise ValueError(
                f"cache.A[{l}]: expected a column of shape ({net.sizes[l]},), got "
                f"{tuple(a.shape)}; use jaxmlp.backward for a batched cache."
            )
    checks.check_cache_dtype(cache, dtype, "forward_col(net, params, x)")
    y = checks.check_y(net, y, dtype)
    return checks.like_params(params, gradient_col(recurrences.backward_sweep(net, params, cache, y, m), cache))


@functools.partial(jax.jit, static_argnums=(0, 4))
def value_and_grad_col(
    net: Network, params: Params, x: Array, y: Array, m: int = 1
) -> tuple[Array, Params]:
    """(L_i / m, gradient of L_i / m) for one example: ``forward_col`` then ``backward_col``.

    x is (n[0],), y is (n[L],), m (static) as in :func:`backward_col`; with m = 1 this is
    (L_i, dL_i/dtheta).
    """
    m = checks.positive_int("m", m)
    x, y = _prepare_col(net, params, x, y)
    a_L, cache = recurrences.forward_pass(net, params, x)
    L_i = recurrences.losses(net, cache.Z[-1], a_L, y)
    return L_i / m, checks.like_params(
        params, gradient_col(recurrences.backward_sweep(net, params, cache, y, m), cache))
