"""Per-example gradients: the m terms of (B1)-(B2) kept apart instead of summed.

(B1) writes the batched gradient as a sum of per-example outer products,

    dW[l] = dZ[l] A[l-1]^T = sum_i dz[l][:,i] a[l-1][:,i]^T,    db[l] = sum_i dz[l][:,i],

so the gradient of example i's term of J is ``dW[l]_i = dz[l][:,i] a[l-1][:,i]^T`` and
``db[l]_i = dz[l][:,i]``, read off the batched cache once dZ[l] is known.

Convention (the 1/m): entry i is the gradient of example i's *term of J*, (1/m) L_i,
where J = (1/m) sum_i L_i. So the sum of the entries over axis 0 equals the gradient
of ``jaxmlp.value_and_grad``; multiply by m for the gradient of L_i itself (the one
DP-SGD clips; see ``jaxmlp.privacy``).

Two implementations, giving the same numbers:

* ``method="vmap"``: ``jax.vmap`` of the single-column backward
  (``jaxmlp.per_example.backward_col``) over the columns;
* ``method="outer"``: one batched forward (F1)-(F2), one batched backward keeping every
  dZ[l] (:func:`deltas`), then the outer products above as one einsum per layer.
  No second pass.

``chunk_size`` processes the columns in blocks of at most that many (``jax.lax.map``
over full blocks, then the remainder), bounding the working memory of the vmapped or
batched intermediates; the result itself is O(m * num_params) whatever the chunking.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from jaxmlp import _checks
from jaxmlp.network import Network
from jaxmlp.per_example import _backward_col, _forward_col
from jaxmlp.propagation import Cache, _forward, output_seed

Array = jax.Array
Params = list

METHODS = ("vmap", "outer")


def deltas(net: Network, params: Params, cache: Cache, Y: Array, m: int) -> tuple:
    """All the dZ[l] = dJ/dZ[l] of a batched backward pass, (B3)-(B4), seed scaled by 1/m.

    Arguments:
      net, params: the network and its parameters.
      cache: the batched :class:`jaxmlp.Cache` of ``X`` (A[l] of shape (n[l], mc)).
      Y: targets, (n[L], mc).
      m: the seed is that of (1/m) sum_i L_i: m = batch size gives the dZ[l] of J (the
        core's), m = 1 gives column i of dZ[l] = dL_i/dz[l][:,i].

    Returns:
      ``(dZ[1], ..., dZ[L])``, dZ[l] of shape (n[l], mc). Memory O(mc * units).
    """
    L = net.num_layers
    gs = net.layer_activations
    dZ = output_seed(net, cache.Z[-1], cache.A[-1], Y, m)
    dZs = [None] * L
    dZs[L - 1] = dZ
    for l in range(L, 1, -1):
        dA_prev = params[l - 1]["W"].T @ dZ  # (B3)
        dZ = gs[l - 2].backward(dA_prev, cache.Z[l - 2], cache.A[l - 1])  # (B4)
        dZs[l - 2] = dZ
    return tuple(dZs)


def outer_products(dZs: tuple, cache: Cache) -> Params:
    """(B1), (B2) per example: ``{"W": dz[:,i] a[l-1][:,i]^T, "b": dz[:,i]}`` stacked on axis 0.

    Shapes: dZ[l] (n[l], mc), A[l-1] (n[l-1], mc) -> W (mc, n[l], n[l-1]), b (mc, n[l]).
    """
    return [
        {"W": jnp.einsum("ji,ki->ijk", dZ, A_prev), "b": dZ.T}
        for dZ, A_prev in zip(dZs, cache.A[:-1])
    ]


def _block_outer(net, params, X, Y, m):
    _, cache = _forward(net, params, X)  # (F1), (F2), batched
    return outer_products(deltas(net, params, cache, Y, m), cache)


def _block_vmap(net, params, X, Y, m):
    def one(x, y):
        _, cache = _forward_col(net, params, x)
        return _backward_col(net, params, cache, y, m)

    return jax.vmap(one, in_axes=(1, 1), out_axes=0)(X, Y)


def map_column_blocks(fn, X: Array, Y: Array, chunk_size):
    """``fn(X_block, Y_block)`` over blocks of at most ``chunk_size`` columns.

    ``fn`` returns a pytree whose leaves have a leading axis of size ``mc`` (the block's
    columns); the blocks are concatenated back in column order. Full blocks run under
    ``jax.lax.map`` (one compiled body, one block live at a time), the remainder
    (m mod chunk_size columns) in one more call. ``chunk_size=None``: one block.
    """
    m = X.shape[1]
    if chunk_size is None or chunk_size >= m:
        return fn(X, Y)
    k, r = divmod(m, chunk_size)
    c = chunk_size
    Xb = X[:, : k * c].reshape(X.shape[0], k, c).transpose(1, 0, 2)  # (k, n0, c)
    Yb = Y[:, : k * c].reshape(Y.shape[0], k, c).transpose(1, 0, 2)
    out = jax.lax.map(lambda xy: fn(*xy), (Xb, Yb))  # leaves (k, c, ...)
    out = jax.tree.map(lambda g: g.reshape((k * c,) + g.shape[2:]), out)
    if r:
        rest = fn(X[:, k * c :], Y[:, k * c :])
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), out, rest)
    return out


def check_chunk_size(chunk_size):
    """chunk_size must be None or a positive int (not bool)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(
            f"chunk_size: expected None or a positive int, got {chunk_size!r} "
            f"({type(chunk_size).__name__})."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected None or a positive int, got {chunk_size!r}.")
    return int(chunk_size)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _per_example_grads(net, params, X, Y, method, chunk_size):
    dtype = _checks.check_params(net, params)
    X = _checks.check_X(net, X, dtype)
    Y = _checks.check_Y(net, Y, X.shape[1], dtype)
    m = X.shape[1]
    block = _block_vmap if method == "vmap" else _block_outer
    return map_column_blocks(
        lambda Xc, Yc: block(net, params, Xc, Yc, m), X, Y, chunk_size
    )


def per_example_grads(
    net: Network, params: Params, X: Array, Y: Array, *, method: str = "vmap",
    chunk_size: int | None = None,
) -> Params:
    """The gradient of every example's term (1/m) L_i of J, stacked on a leading axis.

    Arguments:
      net: the network.
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs (n[0], m); Y: targets (n[L], m).
      method: ``"vmap"`` (vmap of the single-column backward) or ``"outer"`` (per-example
        outer products dz[:,i] a[:,i]^T of (B1) read off one batched pass).
      chunk_size: None (all columns at once) or a positive int: columns are processed in
        blocks of at most this many (it need not divide m).

    Returns:
      ``[{"W": (m, n[l], n[l-1]), "b": (m, n[l])}, ...]``; entry i is d((1/m) L_i)/dtheta,
      so ``jax.tree.map(lambda g: g.sum(0), result)`` equals ``value_and_grad``'s grads.
      Multiply by m for the gradient of L_i. Memory: O(m * num_params).
    """
    net = _checks.require_network(net)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}.")
    chunk_size = check_chunk_size(chunk_size)
    return _per_example_grads(net, params, X, Y, method, chunk_size)
