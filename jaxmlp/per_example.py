"""Single-column forms of (F1), (F2), (F3) and (B1)-(B4): one example at a time.

The seeds write every equation twice, for one column ``a[:,i]`` and for the m columns
of ``A`` at once (DERIVATIONS.md). ``jaxmlp.propagation`` implements the batched
forms; this module implements the per-column ones, for one example

    x = a[0][:,i] of shape (n[0],),   y = y[:,i] of shape (n[L],),

    (F1)  z[l] = W[l] a[l-1] + b[l]                       (n[l],)
    (F2)  a[l] = g[l](z[l])                               (n[l],)
    (F3)  L_i  = cost of column i                          ()
    (B1)  dW[l] = dz[l] a[l-1]^T   (one outer product)    (n[l], n[l-1])
    (B2)  db[l] = dz[l]                                   (n[l],)
    (B3)  da[l-1] = W[l]^T dz[l]                          (n[l-1],)
    (B4)  dz[l] = (da[l]/dz[l]) da[l]                     (n[l],)

The activations and costs of the core act on axis 0, so ``g.forward(z)`` and
``g.backward(da, z, a)`` take a column of shape (n,), and ``cost.loss(z, a, y, g)``
returns the scalar L_i of one column.

The 1/m convention. The batched cost is J = (1/m) sum_i L_i. The single-column
functions compute L_i itself (no 1/m) and, by default, its gradient dL_i/dtheta.
``backward_col`` and ``value_and_grad_col`` take ``m`` (default 1): the seed is then
that of the term (1/m) L_i of J, so that ``jax.vmap`` over the m columns followed by a
sum over examples gives exactly the batched gradient of ``jaxmlp.value_and_grad``:

    sum_i backward_col(..., m=m)[i] = grad J,     (1/m) sum_i backward_col(...)[i] = grad J.

Batching these functions with ``jax.vmap(f, in_axes=(None, None, 1, 1), out_axes=1)``
turns every matrix-vector product ``W @ a`` into one matrix-matrix product
(docs/per_example.md shows the jaxpr).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from jaxmlp import _checks
from jaxmlp.network import Network
from jaxmlp.propagation import Cache, output_seed

Array = jax.Array
Params = list  # [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]


def linear_forward_col(W: Array, b: Array, a_prev: Array) -> Array:
    """(F1) per column: z[l] = W[l] a[l-1] + b[l].

    Shapes: W (n[l], n[l-1]), b (n[l],), a_prev (n[l-1],) -> z (n[l],).
    """
    return W @ a_prev + b


def linear_backward_col(dz: Array, a_prev: Array) -> tuple[Array, Array]:
    """(B1) dW[l] = dz[l] a[l-1]^T (an outer product) and (B2) db[l] = dz[l], one column.

    Shapes: dz (n[l],), a_prev (n[l-1],) -> dW (n[l], n[l-1]), db (n[l],).
    """
    return jnp.outer(dz, a_prev), dz


def _forward_col(net: Network, params: Params, x: Array) -> tuple[Array, Cache]:
    a = x
    As, Zs = [x], []
    for layer, g in zip(params, net.layer_activations):
        z = linear_forward_col(layer["W"], layer["b"], a)  # (F1)
        a = g.forward(z)  # (F2), g acts on axis 0 = the units of this column
        Zs.append(z)
        As.append(a)
    return a, Cache(A=tuple(As), Z=tuple(Zs))


def _loss_col(net: Network, z_L: Array, a_L: Array, y: Array) -> Array:
    """(F3) per column: the scalar L_i (no 1/m)."""
    return net.cost_fn.loss(z_L, a_L, y, net.layer_activations[-1])


def _backward_col(net: Network, params: Params, cache: Cache, y: Array, m: int) -> Params:
    L = net.num_layers
    gs = net.layer_activations
    # Seed of the term (1/m) L_i: fused dz[L] = (a[L] - y)/m, else (B4) of (1/m) dL_i/da[L].
    dz = output_seed(net, cache.Z[-1], cache.A[-1], y, m)
    grads = [None] * L
    for l in range(L, 0, -1):
        dW, db = linear_backward_col(dz, cache.A[l - 1])  # (B1), (B2)
        grads[l - 1] = {"W": dW, "b": db}
        if l > 1:
            da_prev = params[l - 1]["W"].T @ dz  # (B3)
            dz = gs[l - 2].backward(da_prev, cache.Z[l - 2], cache.A[l - 1])  # (B4)
    return grads


def _check_m(m) -> int:
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(
            f"m: expected a positive int (the batch size J averages over; 1 for the "
            f"gradient of L_i itself), got {m!r}."
        )
    return int(m)


def _prepare_col(net, params, x, y=None):
    net = _checks.require_network(net)
    dtype = _checks.check_params(net, params)
    x = _checks.check_x(net, x, dtype)
    if y is None:
        return x
    return x, _checks.check_y(net, y, dtype)


@functools.partial(jax.jit, static_argnums=0)
def forward_col(net: Network, params: Params, x: Array) -> tuple[Array, Cache]:
    """(F1), (F2) for one example.

    Arguments:
      net: the network (static).
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      x: one input column, shape (n[0],).

    Returns:
      ``(a[L], cache)``: a[L] of shape (n[L],) and a :class:`jaxmlp.Cache` whose entries
      are columns, a[l] of shape (n[l],), z[l] of shape (n[l],). Under
      ``jax.vmap(..., in_axes=(None, None, 1), out_axes=1)`` it is the batched cache.
    """
    x = _prepare_col(net, params, x)
    return _forward_col(net, params, x)


@functools.partial(jax.jit, static_argnums=0)
def loss_col(net: Network, params: Params, x: Array, y: Array) -> Array:
    """(F3) for one example: L_i, a scalar, without the 1/m of J.

    x is (n[0],), y is (n[L],). J = mean of ``loss_col`` over the columns.
    """
    x, y = _prepare_col(net, params, x, y)
    a_L, cache = _forward_col(net, params, x)
    return _loss_col(net, cache.Z[-1], a_L, y)


@functools.partial(jax.jit, static_argnums=(0, 4))
def backward_col(net: Network, params: Params, cache: Cache, y: Array, m: int = 1) -> Params:
    """(B1)-(B4) for one example, from the seed dz[L] down to layer 1.

    Arguments:
      net: the network (static).
      params: as for ``forward_col``.
      cache: the column cache from ``forward_col(net, params, x)``.
      y: the target column, shape (n[L],).
      m: (static) the gradient is that of (1/m) L_i. m = 1 (default): the gradient
        of the example's own loss L_i. m = batch size: example i's term of J, so the
        sum over the batch equals ``jaxmlp.value_and_grad``'s gradient.

    Returns:
      ``[{"W": dz[l] a[l-1]^T, "b": dz[l]}, ...]``, mirroring params.
    """
    net = _checks.require_network(net)
    dtype = _checks.check_params(net, params)
    m = _check_m(m)
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
    y = _checks.check_y(net, y, dtype)
    return _backward_col(net, params, cache, y, m)


@functools.partial(jax.jit, static_argnums=(0, 4))
def value_and_grad_col(
    net: Network, params: Params, x: Array, y: Array, m: int = 1
) -> tuple[Array, Params]:
    """(L_i / m, gradient of L_i / m) for one example: ``forward_col`` then ``backward_col``.

    x is (n[0],), y is (n[L],), m (static) as in :func:`backward_col`; with m = 1 this is
    (L_i, dL_i/dtheta).
    """
    m = _check_m(m)
    x, y = _prepare_col(net, params, x, y)
    a_L, cache = _forward_col(net, params, x)
    return _loss_col(net, cache.Z[-1], a_L, y) / m, _backward_col(net, params, cache, y, m)
