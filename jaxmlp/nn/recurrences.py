"""The core: (F1)-(F3) forward, the output seed, and ONE backward sweep (B3)-(B4).

These are the unchecked kernels the rest of the library is built from. They take a
network, a parameter pytree and arrays that are already valid (the public, checked
entry points live in :mod:`jaxmlp.nn.propagation`, :mod:`jaxmlp.quantities.first_order`,
:mod:`jaxmlp.privacy.dpsgd`, ...), and they never call an autodiff transform.

Layout is column-major as in docs/derivations.md: X = A[0] is (n[0], m), Z[l] and A[l]
are (n[l], m), W[l] is (n[l], n[l-1]), b[l] is (n[l],), broadcast over the m columns.

The data flow of every quantity in the library::

    X --forward_pass--> (A[L], Cache) --output_seed--> dZ[L]
      --backpropagate--> (dZ[1], ..., dZ[L])   (the only batched (B3)/(B4) in jaxmlp)
      --jaxmlp.quantities.first_order--> gradient (B1)/(B2), per-example gradients, norms, variance,
                             clipped gradients, curvature, ...

Each quantity is a short function of the sweep's (dZ[l], A[l-1]) pairs.

``compute_dtype`` (None, or e.g. ``jnp.bfloat16``) is the dtype of the operands of the
three matrix products (F1), (B1), (B3); products accumulate in the params' dtype
(``preferred_element_type``) and everything else, activations, cost, seed, sums,
stays in the params' dtype.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxmlp.nn.network import Network

Array = jax.Array
Params = list  # [{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]

__all__ = [
    "Cache",
    "Sweep",
    "backpropagate",
    "backward_step",
    "backward_sweep",
    "cost",
    "forward_pass",
    "gradient",
    "linear_backward",
    "linear_forward",
    "matmul",
    "output_seed",
    "sweep",
]


class Cache(NamedTuple):
    """What the backward sweep needs from the forward pass (F2).

    Attributes:
      A: ``(A[0], A[1], ..., A[L])``, A[l] of shape (n[l], m); A[0] = X.
      Z: ``(Z[1], ..., Z[L])``, Z[l] of shape (n[l], m).
    """

    A: tuple
    Z: tuple


def matmul(a: Array, b: Array, compute_dtype=None, *, contract: tuple = (1, 0)) -> Array:
    """The matrix products of (F1), (B1), (B3): contracts axis ``contract[0]`` of a with
    axis ``contract[1]`` of b; (1, 0) is a @ b, (1, 1) is a @ b^T, (0, 0) is a^T @ b.

    The transpose stays in the dot's dimension numbers (no transposed copy). With
    ``compute_dtype`` the operands are cast to it and the product is accumulated and
    returned in a's dtype. Leading batch axes of b beyond its last two are not supported:
    a is a matrix, b is a matrix.
    """
    dims = (((contract[0],), (contract[1],)), ((), ()))
    if compute_dtype is None:
        return jax.lax.dot_general(a, b, dims)
    return jax.lax.dot_general(
        a.astype(compute_dtype), b.astype(compute_dtype), dims, preferred_element_type=a.dtype
    )


def linear_forward(W: Array, b: Array, A_prev: Array, compute_dtype=None) -> Array:
    """(F1) Z[l] = W[l] A[l-1] + broadcast(b[l]).

    Shapes: W (n[l], n[l-1]), b (n[l],), A_prev (n[l-1], m) -> Z (n[l], m); or, the
    single-column form z[l] = W[l] a[l-1] + b[l], a_prev (n[l-1],) -> z (n[l],).
    """
    return matmul(W, A_prev, compute_dtype) + (b[:, None] if A_prev.ndim == 2 else b)


def linear_backward(dZ: Array, A_prev: Array, compute_dtype=None) -> tuple[Array, Array]:
    """(B1) dW[l] = dZ[l] A[l-1]^T and (B2) db[l] = sum_cols dZ[l].

    Shapes: dZ (n[l], m), A_prev (n[l-1], m) -> dW (n[l], n[l-1]), db (n[l],).
    """
    return matmul(dZ, A_prev, compute_dtype, contract=(1, 1)), jnp.sum(dZ, axis=1)


def forward_pass(net: Network, params: Params, X: Array, compute_dtype=None) -> tuple[Array, Cache]:
    """(F1), (F2) for l = 1..L. X (n[0], m) -> (A[L] (n[L], m), :class:`Cache`).

    A single column x (n[0],) gives the per-example forms, a[L] (n[L],) and a column cache.
    """
    A = X
    As, Zs = [X], []
    for layer, g in zip(params, net.layer_activations):
        Z = linear_forward(layer["W"], layer["b"], A, compute_dtype)  # (F1)
        A = g.forward(Z)  # (F2)
        Zs.append(Z)
        As.append(A)
    return A, Cache(A=tuple(As), Z=tuple(Zs))


def losses(net: Network, Z_L: Array, A_L: Array, Y: Array) -> Array:
    """(F3) per example: the row of losses L_i, shape (m,) (or () for one column)."""
    return net.cost_fn.loss(Z_L, A_L, Y, net.layer_activations[-1])


def cost(net: Network, Z_L: Array, A_L: Array, Y: Array) -> Array:
    """(F3) J = (1/m) sum_i L_i, a scalar. Z_L, A_L, Y are (n[L], m)."""
    return jnp.mean(losses(net, Z_L, A_L, Y))


def output_seed(net: Network, Z_L: Array, A_L: Array, Y: Array, m) -> Array:
    """The seed dZ[L] of the recurrences, of the cost (1/m) sum_i L_i.

    Canonical pairs (sigmoid + binary / multi-label, softmax + categorical, linear +
    mean squared error): fused dZ[L] = (1/m)(A[L] - Y) of (C1)-(C3). Any other pair:
    dA[L] = (1/m) dL/dA from the cost, then (B4) of g[L].
    ``m`` is the number the cost divides by: the batch size for J, 1 for the losses
    L_i themselves (column i of dZ[L] is then dL_i/dz[L]).

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


def backward_step(
    net: Network, params: Params, cache: Cache, l: int, dZ: Array, compute_dtype=None
) -> Array:
    """(B3) then (B4) for one layer: dZ[l] -> dZ[l-1], for l = L, ..., 2 (1-indexed).

    (B3) dA[l-1] = W[l]^T dZ[l]; (B4) dZ[l-1] = (dA[l-1]/dZ[l-1]) dA[l-1] with g[l-1].
    Shapes: dZ (n[l], m) -> (n[l-1], m), or one column (n[l],) -> (n[l-1],).
    """
    dA_prev = matmul(params[l - 1]["W"], dZ, compute_dtype, contract=(0, 0))  # (B3)
    return net.layer_activations[l - 2].backward(dA_prev, cache.Z[l - 2], cache.A[l - 1])  # (B4)


def backpropagate(
    net: Network, params: Params, cache: Cache, dZ_L: Array, compute_dtype=None, *,
    top: Optional[int] = None, sources: Optional[tuple] = None,
) -> tuple:
    """(B3), (B4) from a seed dZ[L] down to layer 1: every dZ[l] of the batch.

    This is the one place where the batched recurrences (B3) dA[l-1] = W[l]^T dZ[l] and
    (B4) dZ[l-1] = (dA[l-1]/dZ[l-1]) dA[l-1] are applied (:func:`backward_step`).

    Shapes: dZ_L (n[L], m) -> ``(dZ[1], ..., dZ[L])``, dZ[l] of shape (n[l], m); a single
    column dz_L (n[L],) gives the per-example forms dz[l] (n[l],). Any seed
    may be backpropagated: the seed of J, of the losses L_i, or a column of a matrix
    factor of the output Hessian (:mod:`jaxmlp.quantities.curvature`, under ``jax.vmap``).

    ``top``: start at layer ``top`` instead of L (``dZ_L`` is then dZ[top]); the result has
    ``top`` entries. ``sources``: None, or one term per layer 1..top (None or an array of
    dZ[l]'s shape) added to dZ[l] after its (B4): the R-operator's backward pass
    (:mod:`jaxmlp.quantities.curvature`, (H9)) is (B3)/(B4) with such terms.
    """
    top = net.num_layers if top is None else top
    dZs = [None] * top
    dZ = dZs[top - 1] = dZ_L
    for l in range(top, 1, -1):  # l = top, ..., 2 (1-indexed as in the derivations)
        dZ = backward_step(net, params, cache, l, dZ, compute_dtype)
        if sources is not None and sources[l - 2] is not None:
            dZ = dZ + sources[l - 2]
        dZs[l - 2] = dZ
    return tuple(dZs)


def backward_sweep(
    net: Network, params: Params, cache: Cache, Y: Array, m: Optional[int] = None,
    compute_dtype=None,
) -> tuple:
    """The seed of (1/m) sum_i L_i, then :func:`backpropagate`: ``(dZ[1], ..., dZ[L])``.

    ``m`` None is the batch size Y.shape[1] (the dZ[l] of J; 1 for a single column y of
    shape (n[L],)); ``m = 1`` gives the losses' own deltas, column i of dZ[l] =
    dL_i/dz[l][:,i] (what clipping needs).
    """
    if m is None:
        m = Y.shape[1] if Y.ndim == 2 else 1
    dZ_L = output_seed(net, cache.Z[-1], cache.A[-1], Y, m)
    return backpropagate(net, params, cache, dZ_L, compute_dtype)



def gradient(dZs: tuple, cache: Cache, compute_dtype=None) -> Params:
    """(B1), (B2) for every layer: the gradient read off the sweep.

    Shapes: dZ[l] (n[l], m), A[l-1] (n[l-1], m) ->
    ``[{"W": dZ[l] A[l-1]^T (n[l], n[l-1]), "b": sum_cols dZ[l] (n[l],)}, ...]``.
    """
    out = []
    for dZ, A_prev in zip(dZs, cache.A[:-1]):
        dW, db = linear_backward(dZ, A_prev, compute_dtype)
        out.append({"W": dW, "b": db})
    return out


class Sweep(NamedTuple):
    """One forward pass and one backward sweep: what every quantity is read off.

    Attributes:
      J: (F3) the cost (1/m) sum_i L_i of the batch, a scalar.
      A_L: A[L], shape (n[L], m).
      cache: the forward pass's :class:`Cache` (A[0..L], Z[1..L]).
      dZs: ``(dZ[1], ..., dZ[L])``, dZ[l] of shape (n[l], m), of the cost divided by ``m``.
    """

    J: Array
    A_L: Array
    cache: Cache
    dZs: tuple


def sweep(
    net: Network, params: Params, X: Array, Y: Array, m: Optional[int] = None,
    compute_dtype=None,
) -> Sweep:
    """(F1)-(F3), the seed, then (B3)-(B4) down to layer 1: a :class:`Sweep`.

    X (n[0], m), Y (n[L], m), or one column x (n[0],), y (n[L],) for the per-example
    forms. ``m`` as :func:`backward_sweep`: None for the dZ's of J, 1 for those of the
    losses L_i (column i of dZ[l] is dL_i/dz[l]). Unchecked: the public entry points
    check their arguments first. Under ``jax.jit`` whatever a caller does not use (J, say)
    is not computed.
    """
    A_L, cache = forward_pass(net, params, X, compute_dtype)
    dZs = backward_sweep(net, params, cache, Y, m, compute_dtype)
    return Sweep(cost(net, cache.Z[-1], A_L, Y), A_L, cache, dZs)
