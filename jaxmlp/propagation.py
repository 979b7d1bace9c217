"""Forward (F1)-(F3) and backward (B1)-(B4) propagation over a batch of columns.

Layout is column-major: X = A[0] is (n[0], m), Z[l] and A[l] are (n[l], m), W[l] is
(n[l], n[l-1]), b[l] is (n[l],) and is broadcast over the m columns. The gradient
comes from the recurrences below, layer by layer; no autodiff transform is used.

All public functions are jitted with ``net`` static; shape and dtype checks run at
trace time, so they cost nothing once compiled.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp import _checks
from jaxmlp.network import Network

Array = jax.Array
Params = list  # [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]


class Cache(NamedTuple):
    """What backward needs from forward (F2).

    Attributes:
      A: ``(A[0], A[1], ..., A[L])``, A[l] of shape (n[l], m); A[0] = X.
      Z: ``(Z[1], ..., Z[L])``, Z[l] of shape (n[l], m).
    """

    A: tuple
    Z: tuple


def matmul(a: Array, b: Array, compute_dtype=None, *, contract: tuple = (1, 0)) -> Array:
    """The matrix products of (F1), (B1), (B3), contracting axis ``contract[0]`` of a with
    axis ``contract[1]`` of b: (1, 0) is a @ b, (1, 1) is a @ b^T, (0, 0) is a^T @ b.

    With ``compute_dtype`` (e.g. bfloat16, see ``jaxmlp.precision``) the operands are cast
    to it and the product is accumulated and returned in a's dtype; the transpose stays in
    the dot's dimension numbers (casting a transposed operand would copy it). None (the
    default) is the plain product in the operands' dtype.
    """
    if compute_dtype is None:
        return {(1, 0): lambda: a @ b, (1, 1): lambda: a @ b.T, (0, 0): lambda: a.T @ b}[contract]()
    return jax.lax.dot_general(
        a.astype(compute_dtype), b.astype(compute_dtype),
        (((contract[0],), (contract[1],)), ((), ())),
        preferred_element_type=a.dtype,
    )


def linear_forward(W: Array, b: Array, A_prev: Array, compute_dtype=None) -> Array:
    """(F1) Z[l] = W[l] A[l-1] + broadcast(b[l]).

    Shapes: W (n[l], n[l-1]), b (n[l],), A_prev (n[l-1], m) -> Z (n[l], m).
    """
    return matmul(W, A_prev, compute_dtype) + b[:, None]


def linear_backward(dZ: Array, A_prev: Array, compute_dtype=None) -> tuple[Array, Array]:
    """(B1) dW[l] = dZ[l] A[l-1]^T and (B2) db[l] = sum_cols dZ[l].

    Shapes: dZ (n[l], m), A_prev (n[l-1], m) -> dW (n[l], n[l-1]), db (n[l],).
    """
    return matmul(dZ, A_prev, compute_dtype, contract=(1, 1)), jnp.sum(dZ, axis=1)


def _forward(net: Network, params: Params, X: Array, compute_dtype=None) -> tuple[Array, Cache]:
    A = X
    As, Zs = [X], []
    for layer, g in zip(params, net.layer_activations):
        Z = linear_forward(layer["W"], layer["b"], A, compute_dtype)  # (F1)
        A = g.forward(Z)  # (F2)
        Zs.append(Z)
        As.append(A)
    return A, Cache(A=tuple(As), Z=tuple(Zs))


def _cost(net: Network, Z_L: Array, A_L: Array, Y: Array) -> Array:
    """(F3) J = (1/m) sum_i L_i, the cost's per-example losses averaged over columns."""
    return jnp.mean(net.cost_fn.loss(Z_L, A_L, Y, net.layer_activations[-1]))


def output_seed(net: Network, Z_L: Array, A_L: Array, Y: Array, m: int) -> Array:
    """The seed dZ[L] of the recurrences.

    Canonical pairs (sigmoid + binary / multi-label, softmax + categorical, linear +
    mean squared error): fused dZ[L] = (1/m)(A[L] - Y) of (C1)-(C3). Any other pair:
    dA[L] = (1/m) dL/dA from the cost, then (B4) of g[L].
    ``m`` is the batch size the cost averages over (1 for per-example forms).

    For a sigmoid output, A - Y is evaluated as (1 - Y) A - Y sigmoid(-Z): the same
    number (1 - A = sigmoid(-Z)), without the cancellation of 1 - A when a correct
    prediction saturates (A -> 1, Y = 1), where A - Y would keep no significant digit.
    """
    if net.fused:
        if net.activations[-1] == "sigmoid":
            return ((1.0 - Y) * A_L - Y * jax.nn.sigmoid(-Z_L)) / m
        return (A_L - Y) / m
    dA_L = net.cost_fn.dloss_dA(A_L, Y) / m
    return net.layer_activations[-1].backward(dA_L, Z_L, A_L)  # (B4)


def _backward(net: Network, params: Params, cache: Cache, Y: Array, compute_dtype=None) -> Params:
    L = net.num_layers
    m = Y.shape[-1]
    gs = net.layer_activations
    dZ = output_seed(net, cache.Z[-1], cache.A[-1], Y, m)
    grads = [None] * L
    for l in range(L, 0, -1):  # l = L, ..., 1 (1-indexed as in the derivations)
        W = params[l - 1]["W"]
        dW, db = linear_backward(dZ, cache.A[l - 1], compute_dtype)  # (B1), (B2)
        grads[l - 1] = {"W": dW, "b": db}
        if l > 1:  # dA[0] = dX is not needed
            dA_prev = matmul(W, dZ, compute_dtype, contract=(0, 0))  # (B3) W^T dZ
            dZ = gs[l - 2].backward(dA_prev, cache.Z[l - 2], cache.A[l - 1])  # (B4)
    return grads


def _prepare(net, params, X, Y=None):
    net = _checks.require_network(net)
    dtype = _checks.check_params(net, params)
    X = _checks.check_X(net, X, dtype)
    if Y is None:
        return X
    return X, _checks.check_Y(net, Y, X.shape[1], dtype)


@functools.partial(jax.jit, static_argnums=0)
def forward(net: Network, params: Params, X: Array) -> tuple[Array, Cache]:
    """Forward propagation (F1), (F2) over all layers.

    Arguments:
      net: the network (static).
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs, shape (n[0], m); columns are examples.

    Returns:
      ``(A[L], cache)``: A[L] of shape (n[L], m) and the :class:`Cache` for ``backward``.
    """
    X = _prepare(net, params, X)
    return _forward(net, params, X)


@functools.partial(jax.jit, static_argnums=0)
def loss(net: Network, params: Params, X: Array, Y: Array) -> Array:
    """The cost J (F3) of ``params`` on (X, Y): a scalar of the params' dtype.

    X is (n[0], m), Y is (n[L], m). Cross-entropy costs are evaluated from Z[L]
    (log-sigmoid / log-softmax), so saturated outputs give a finite J.
    """
    X, Y = _prepare(net, params, X, Y)
    A_L, cache = _forward(net, params, X)
    return _cost(net, cache.Z[-1], A_L, Y)


@functools.partial(jax.jit, static_argnums=0)
def predict(net: Network, params: Params, X: Array) -> Array:
    """A[L] = Yhat, shape (n[L], m): probabilities for cross-entropy costs, values for MSE."""
    X = _prepare(net, params, X)
    return _forward(net, params, X)[0]


@functools.partial(jax.jit, static_argnums=0)
def backward(net: Network, params: Params, cache: Cache, Y: Array) -> Params:
    """Backward propagation (B1)-(B4), from the seed dZ[L] down to layer 1.

    Arguments:
      net: the network (static).
      params: as for ``forward``.
      cache: the :class:`Cache` returned by ``forward(net, params, X)``.
      Y: targets, shape (n[L], m).

    Returns:
      grads with the structure of params: ``[{"W": dW[l], "b": db[l]}, ...]``,
      the gradient of J = (1/m) sum_i L_i.
    """
    net = _checks.require_network(net)
    dtype = _checks.check_params(net, params)
    if not isinstance(cache, Cache) or len(cache.A) != net.num_layers + 1 or len(
        cache.Z
    ) != net.num_layers:
        raise TypeError(
            "cache: expected the Cache returned by jaxmlp.forward(net, params, X) for this "
            f"network ({net.num_layers + 1} activations A[0..L]), got {type(cache).__name__}."
        )
    for l, A in enumerate(cache.A):
        if A.ndim != 2 or A.shape[0] != net.sizes[l] or A.shape[1] != cache.A[0].shape[1]:
            raise ValueError(
                f"cache.A[{l}]: expected shape ({net.sizes[l]}, {cache.A[0].shape[1]}), "
                f"got {tuple(A.shape)}; was the cache built for another network?"
            )
    Y = _checks.check_Y(net, Y, cache.A[0].shape[1], dtype)
    return _backward(net, params, cache, Y)


@functools.partial(jax.jit, static_argnums=0)
def value_and_grad(net: Network, params: Params, X: Array, Y: Array) -> tuple[Array, Params]:
    """J and its gradient by forward (F1)-(F3) then backward (B1)-(B4).

    X is (n[0], m), Y is (n[L], m). Returns ``(J, grads)``, grads mirroring params.
    """
    X, Y = _prepare(net, params, X, Y)
    A_L, cache = _forward(net, params, X)
    J = _cost(net, cache.Z[-1], A_L, Y)
    return J, _backward(net, params, cache, Y)
