"""The public, checked edge of the core: forward (F1)-(F3) and backward (B1)-(B4).

Layout is column-major: X = A[0] is (n[0], m), Z[l] and A[l] are (n[l], m), W[l] is
(n[l], n[l-1]), b[l] is (n[l],) and is broadcast over the m columns. The gradient
comes from the recurrences of :mod:`jaxmlp.nn.recurrences` (one backward sweep) and the rule
(B1)/(B2) of :mod:`jaxmlp.quantities.first_order`; no autodiff transform is used.

All functions are jitted with ``net`` static; shape and dtype checks run at trace time,
so they cost nothing once compiled. Host data (NumPy) is value-checked before the call
(:mod:`jaxmlp.nn.datacheck`: X finite, Y finite and in the cost's domain, a ValueError naming
it); a ``jax.Array`` is not inspected here (no device sync in your loops: see datacheck). ``compute_dtype`` (keyword, static; None or e.g.
``"bfloat16"``) is the operand dtype of the matrix products (F1), (B1), (B3), which
accumulate in the params' dtype; everything else stays in the params' dtype.
"""

from __future__ import annotations

import functools


import jax
import jax.numpy as jnp

from jaxmlp.nn import recurrences
from jaxmlp.nn import checks
from jaxmlp.nn.datacheck import checked_entry
from jaxmlp.nn.recurrences import Cache
from jaxmlp.nn.network import Network
from jaxmlp.nn.recurrences import gradient

Array = jax.Array
Params = list  # [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]

__all__ = ["Cache", "backward", "forward", "loss", "predict", "value_and_grad",
           "value_and_grad_kernel", "weighted_value_and_grad_kernel"]

_STATIC = dict(static_argnums=0, static_argnames=("net", "compute_dtype"))  # net= too


def _dtype(compute_dtype):
    return checks.compute_dtype(compute_dtype)


@functools.partial(jax.jit, **_STATIC)
def forward(net: Network, params: Params, X: Array, *, compute_dtype=None) -> tuple[Array, Cache]:
    """Forward propagation (F1), (F2) over all layers.

    Arguments:
      net: the network (static).
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs, shape (n[0], m); columns are examples.

    Returns:
      ``(A[L], cache)``: A[L] of shape (n[L], m) and the :class:`Cache` for ``backward``.
    """
    X = checks.check_problem(net, params, X)
    return recurrences.forward_pass(net, params, X, _dtype(compute_dtype))


@functools.partial(jax.jit, **_STATIC)
def loss(net: Network, params: Params, X: Array, Y: Array, *, compute_dtype=None) -> Array:
    """The cost J (F3) of ``params`` on (X, Y): a scalar of the params' dtype.

    X is (n[0], m), Y is (n[L], m). Cross-entropy costs are evaluated from Z[L]
    (log-sigmoid / log-softmax), so saturated outputs give a finite J.
    """
    X, Y = checks.check_problem(net, params, X, Y)
    A_L, cache = recurrences.forward_pass(net, params, X, _dtype(compute_dtype))
    return recurrences.cost(net, cache.Z[-1], A_L, Y)


@functools.partial(jax.jit, **_STATIC)
def predict(net: Network, params: Params, X: Array, *, compute_dtype=None) -> Array:
    """A[L] = Yhat, shape (n[L], m): probabilities for cross-entropy costs, values for MSE."""
    X = checks.check_problem(net, params, X)
    return recurrences.forward_pass(net, params, X, _dtype(compute_dtype))[0]


@functools.partial(jax.jit, **_STATIC)
def backward(net: Network, params: Params, cache: Cache, Y: Array, *, compute_dtype=None) -> Params:
    """Backward propagation (B1)-(B4), from the seed dZ[L] down to layer 1.

    Arguments:
      net: the network (static).
      params: as for ``forward``.
      cache: the :class:`Cache` returned by ``forward(net, params, X)``: every entry in
        the params' dtype (a cache of another dtype is a TypeError, as X and Y are).
      Y: targets, shape (n[L], m).

    Returns:
      grads with the structure of params: ``[{"W": dW[l], "b": db[l]}, ...]``,
      the gradient of J = (1/m) sum_i L_i.
    """
    net = checks.require_network(net)
    dtype = checks.check_params(net, params)
    if not isinstance(cache, Cache) or len(cache.A) != net.num_layers + 1 or len(
        cache.Z
    ) != net.num_layers:
        raise TypeError(
            "cache: expected the Cache returned by jaxmlp.forward(net, params, X) for this "
            f"network ({net.num_layers + 1} activations A[0..L]), got {type(cache).__name__}."
        )
    if cache.A[0].ndim != 2:
        hint = ("use jaxmlp.nn.single_column.backward_col for a column cache"
                if cache.A[0].ndim == 1 else "was the cache built for another network?")
        raise ValueError(f"cache.A[0]: expected shape ({net.sizes[0]}, m), got "
                         f"{tuple(cache.A[0].shape)}; {hint}.")
    m = cache.A[0].shape[1]
    for l, A in enumerate(cache.A):
        if A.ndim != 2 or A.shape[0] != net.sizes[l] or A.shape[1] != m:
            raise ValueError(
                f"cache.A[{l}]: expected shape ({net.sizes[l]}, {m}), "
                f"got {tuple(A.shape)}; was the cache built for another network?"
            )
    checks.check_cache_dtype(cache, dtype, "jaxmlp.forward(net, params, X)")
    Y = checks.check_Y(net, Y, m, dtype)
    compute_dtype = _dtype(compute_dtype)
    grads = gradient(recurrences.backward_sweep(net, params, cache, Y, None, compute_dtype), cache,
                     compute_dtype)
    return checks.like_params(params, grads)  # a tuple for tuple params


@functools.partial(jax.jit, **_STATIC)
def value_and_grad(
    net: Network, params: Params, X: Array, Y: Array, *, compute_dtype=None
) -> tuple[Array, Params]:
    """J and its gradient by forward (F1)-(F3), one backward sweep (B3)-(B4), then (B1)-(B2).

    X is (n[0], m), Y is (n[L], m). Returns ``(J, grads)``, grads mirroring params (the
    same container: a tuple for tuple params), in the params' dtype. ``compute_dtype``: the matrix products' operand dtype (None: the params').
    """
    X, Y = checks.check_problem(net, params, X, Y)
    return value_and_grad_kernel(net, params, X, Y, _dtype(compute_dtype))


def value_and_grad_kernel(net: Network, params: Params, X: Array, Y: Array,
                          compute_dtype=None) -> tuple[Array, Params]:
    """Unchecked (J, dJ/dtheta): :func:`jaxmlp.nn.recurrences.sweep`, then (B1)-(B2).

    The kernel of :func:`value_and_grad` and of every training step; X (n[0], m) and
    Y (n[L], m) already checked. grads mirror params' container.
    """
    s = recurrences.sweep(net, params, X, Y, None, compute_dtype)
    return s.J, checks.like_params(params, gradient(s.dZs, s.cache, compute_dtype))


def weighted_value_and_grad_kernel(net: Network, params: Params, X: Array, Y: Array, w: Array,
                                   compute_dtype=None) -> tuple[Array, Params]:
    """Unchecked (J_w, dJ_w/dtheta) of the weighted mean cost J_w = sum_i w_i L_i / sum_i w_i.

    X (n[0], m), Y (n[L], m), w (m,) weights >= 0 with sum_i w_i > 0. (F1), (F2) forward;
    the losses L_i of (F3); the seed of J_w, column i of dZ[L] = (w_i / sum_j w_j) dL_i/dz[L]
    (:func:`jaxmlp.nn.recurrences.output_seed` with m = 1, times w / sum(w)); then (B3), (B4)
    (:func:`jaxmlp.nn.recurrences.backpropagate`) and (B1), (B2). The sweep is linear in the
    seed, so a column of weight 0 contributes nothing to J_w or to the gradient (its values
    must be finite: any valid sample), and w = 1 gives :func:`value_and_grad_kernel`'s J and
    gradient. grads mirror params' container, in the params' dtype.
    """
    A_L, cache = recurrences.forward_pass(net, params, X, compute_dtype)  # (F1), (F2)
    w = w.astype(A_L.dtype)
    scale = w / jnp.sum(w)  # (m,)
    J = jnp.sum(scale * recurrences.losses(net, cache.Z[-1], A_L, Y))  # (F3), weighted
    dZ_L = recurrences.output_seed(net, cache.Z[-1], A_L, Y, 1) * scale  # (n[L], m)
    dZs = recurrences.backpropagate(net, params, cache, dZ_L, compute_dtype)  # (B3), (B4)
    return J, checks.like_params(params, gradient(dZs, cache, compute_dtype))  # (B1), (B2)


# The public names: the jitted functions above, preceded by the value checks of concrete data.
forward = checked_entry(forward, 2, None)
loss = checked_entry(loss, 2, 3)
predict = checked_entry(predict, 2, None)
backward = checked_entry(backward, None, 3)
value_and_grad = checked_entry(value_and_grad, 2, 3)
