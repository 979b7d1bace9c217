"""First-order quantities: each a short function of the backward sweep's (dZ[l], A[l-1]).

One batched forward pass (F1)-(F2) and ONE backward sweep (:func:`jaxmlp.nn.recurrences.backward_sweep`)
give every dZ[l] (n[l], m) next to the cached A[l-1] (n[l-1], m). The gradient of example
i's term of the cost in layer l is the outer product dz a^T, with dz = dZ[l][:,i],
a = A[l-1][:,i] (B1), and its bias gradient is dz (B2). Every quantity below is read off
these pairs, the way BackPACK writes one rule per quantity (the rule's equation in
docs/derivations.md is cited):

=========================  =====================================================  ======
quantity                   rule over (dZ, A) per layer                            eq.
=========================  =====================================================  ======
:func:`gradient`           dW = dZ A^T, db = sum_cols dZ                          (B1-2)
:func:`per_example`        dW_i = dz_i a_i^T, db_i = dz_i (stacked, axis 0)       (Q1)
:func:`sq_norms`           ||dW_i||^2 = ||dz_i||^2 ||a_i||^2, ||db_i||^2 = ||dz_i||^2  (Q2)
:func:`sum_of_squares`     sum_i dW_i^2 = (dZ*dZ)(A*A)^T, sum_i db_i^2             (Q3)
:func:`variance`           sum_sq/m - (grad/m)^2                                   (Q4)
:func:`clipped_gradient`   (B1-2) on dZ * broadcast_rows(c): sum_i c_i g_i         (Q5)
=========================  =====================================================  ======

Adding a quantity is adding one such function (and its test); :mod:`jaxmlp.privacy.dpsgd` and
:mod:`jaxmlp.quantities.curvature` add theirs the same way.

Convention (the 1/m): with the sweep of J (``m`` = batch size, the default) entry i is the
gradient g_i of example i's term (1/m) L_i, so sum_i g_i = grad J. With ``m = 1`` the
sweep gives the gradients of the losses L_i themselves (what DP-SGD clips).

The public functions at the bottom check their arguments once and run forward, sweep and
rule in one compiled call; all take ``compute_dtype`` for the sweep's matrix products.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp.nn import recurrences
from jaxmlp.nn import checks
from jaxmlp.nn.recurrences import Cache, gradient
from jaxmlp.nn.network import Network

Array = jax.Array
Params = list

__all__ = [
    "METHODS",
    "PerExampleNorms",
    "PerExampleStats",
    "clipped_gradient",
    "gradient",
    "map_column_blocks",
    "norms_from_sq",
    "per_example",
    "per_example_grads",
    "per_example_norms",
    "per_example_stats",
    "sq_norms",
    "sum_of_squares",
    "variance",
]

METHODS = ("outer", "vmap")


# ----------------------------------------------------------------------------- the rules


def per_example(dZs: tuple, cache: Cache) -> Params:
    """(Q1) (B1), (B2) per column: ``{"W": dz_i a_i^T, "b": dz_i}`` stacked on axis 0.

    Shapes: dZ[l] (n[l], m), A[l-1] (n[l-1], m) -> W (m, n[l], n[l-1]), b (m, n[l]).
    """
    return [
        {"W": jnp.einsum("ji,ki->ijk", dZ, A_prev), "b": dZ.T}
        for dZ, A_prev in zip(dZs, cache.A[:-1])
    ]


def sq_norms(dZs: tuple, cache: Cache) -> Params:
    """(Q2) ||dW[l]_i||_F^2 = ||dz_i||^2 ||a_i||^2 (rank one) and ||db[l]_i||^2 = ||dz_i||^2.

    Shapes: dZ[l] (n[l], m), A[l-1] (n[l-1], m) -> ``[{"W": (m,), "b": (m,)}, ...]``.
    """
    out = []
    for dZ, A_prev in zip(dZs, cache.A[:-1]):
        dz2 = jnp.sum(dZ * dZ, axis=0)
        out.append({"W": dz2 * jnp.sum(A_prev * A_prev, axis=0), "b": dz2})
    return out


def sum_of_squares(dZs: tuple, cache: Cache) -> Params:
    """(Q3) sum_i g_i * g_i entry-wise: (dZ*dZ)(A*A)^T (one product) and sum_cols dZ*dZ.

    Shapes as :func:`gradient`.
    """
    return gradient(tuple(dZ * dZ for dZ in dZs), Cache(A=tuple(A * A for A in cache.A), Z=()))


def variance(sum_sq: Params, grads: Params, m) -> Params:
    """(Q4) Var_i[g_i] = (1/m) sum_i g_i^2 - ((1/m) sum_i g_i)^2 per parameter (ddof = 0).

    Evaluated as E[g^2] - E[g]^2, which loses relative accuracy when the spread is far
    below the mean (about eps E[g]^2 absolute); clamped at 0.
    """
    return jax.tree.map(lambda s, g: jnp.maximum(s / m - jnp.square(g / m), 0), sum_sq, grads)


def norms_from_sq(sq: Params) -> "PerExampleNorms":
    """Layer norms (L, m) and total norms (m,) from :func:`sq_norms`."""
    layer_sq = jnp.stack([s["W"] + s["b"] for s in sq])
    return PerExampleNorms(layer_norms=jnp.sqrt(layer_sq), norms=jnp.sqrt(jnp.sum(layer_sq, 0)))


def clipped_gradient(dZs: tuple, cache: Cache, factors, compute_dtype=None) -> Params:
    """(Q5) sum_i c_i g_i without forming g_i: column i of every dZ[l] scaled, then (B1)/(B2).

    ``factors`` is (m,) (one c_i per example, flat clipping) or (L, m) (one per layer and
    example, per-layer clipping). A factor of 0 drops a column (a masked example).
    """
    factors = jnp.asarray(factors)
    if factors.ndim == 1:
        factors = jnp.broadcast_to(factors, (len(dZs),) + factors.shape)
    return gradient(tuple(dZ * c[None, :] for dZ, c in zip(dZs, factors)), cache, compute_dtype)


# ----------------------------------------------------------------------------- public, checked


class PerExampleNorms(NamedTuple):
    """Per-example gradient L2 norms.

    Attributes:
      layer_norms: (L, m); entry (l-1, i) = ||(dW[l]_i, db[l]_i)||, layer l of example i.
      norms: (m,); the norm of example i's whole gradient, sqrt(sum_l layer_norms^2).
    """

    layer_norms: Array
    norms: Array


class PerExampleStats(NamedTuple):
    """What one batched pass gives about the per-example gradients g_i.

    Attributes:
      loss: J, a scalar.
      grads: sum_i g_i = grad J, mirroring params.
      sq_norms: ``[{"W": (m,), "b": (m,)}, ...]``, ||dW[l]_i||^2 and ||db[l]_i||^2 (Q2).
      layer_norms, norms: as in :class:`PerExampleNorms`.
      sum_sq: sum_i g_i * g_i (entry-wise), mirroring params (Q3).
      variance: (1/m) sum_i (g_i - mean_i g_i)^2 per parameter, mirroring params (Q4).
    """

    loss: Array
    grads: Params
    sq_norms: Params
    layer_norms: Array
    norms: Array
    sum_sq: Params
    variance: Params


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


def _block_outer(net, params, X, Y, m, compute_dtype):
    s = recurrences.sweep(net, params, X, Y, m, compute_dtype)
    return per_example(s.dZs, s.cache)


def _block_vmap(net, params, X, Y, m, compute_dtype):
    # The single-column forms of the seeds under vmap: the contrast with the batched rule.
    from jaxmlp.nn import single_column

    def one(x, y):
        return single_column.grad_col_kernel(net, params, x, y, m)

    return jax.vmap(one, in_axes=(1, 1), out_axes=0)(X, Y)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _per_example_grads(net, params, X, Y, method, chunk_size, compute_dtype):
    X, Y = checks.check_problem(net, params, X, Y)
    m = X.shape[1]
    block = _block_vmap if method == "vmap" else _block_outer
    return checks.like_params(params, map_column_blocks(
        lambda Xc, Yc: block(net, params, Xc, Yc, m, compute_dtype), X, Y, chunk_size
    ))


def per_example_grads(
    net: Network, params: Params, X: Array, Y: Array, *, method: str = "outer",
    chunk_size: int | None = None, compute_dtype=None,
) -> Params:
    """The gradient of every example's term (1/m) L_i of J, stacked on a leading axis (Q1).

    Arguments:
      net: the network.
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs (n[0], m); Y: targets (n[L], m).
      method: ``"outer"`` (the outer products dz_i a_i^T of (B1) read off one batched
        sweep) or ``"vmap"`` (``jax.vmap`` of the single-column backward of
        :mod:`jaxmlp.nn.single_column`); the same numbers.
      chunk_size: None (all columns at once) or a positive int: columns are processed in
        blocks of at most this many (it need not divide m).
      compute_dtype: dtype of the sweep's matrix products (``"outer"`` only), or None.

    Returns:
      ``[{"W": (m, n[l], n[l-1]), "b": (m, n[l])}, ...]``; entry i is d((1/m) L_i)/dtheta,
      so ``jax.tree.map(lambda g: g.sum(0), result)`` equals ``value_and_grad``'s grads.
      Multiply by m for the gradient of L_i. Memory: O(m * num_params).
    """
    net = checks.require_network(net)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}.")
    chunk_size = checks.optional_positive_int("chunk_size", chunk_size)
    compute_dtype = checks.compute_dtype(compute_dtype)
    if method == "vmap" and compute_dtype is not None:
        raise ValueError(
            "compute_dtype: the single-column forms (method='vmap') run in the params' dtype; "
            f"use method='outer' for compute_dtype={compute_dtype.name!r}."
        )
    return _per_example_grads(net, params, X, Y, method, chunk_size, compute_dtype)


@functools.partial(jax.jit, static_argnums=0, static_argnames="compute_dtype")
def _per_example_norms(net, params, X, Y, *, compute_dtype=None):
    X, Y = checks.check_problem(net, params, X, Y)
    s = recurrences.sweep(net, params, X, Y, None, compute_dtype)
    return norms_from_sq(sq_norms(s.dZs, s.cache))


def per_example_norms(
    net: Network, params: Params, X: Array, Y: Array, *, compute_dtype=None
) -> PerExampleNorms:
    """Per-example gradient norms (Q2), per layer and total, from one batched sweep.

    X is (n[0], m), Y is (n[L], m). Returns :class:`PerExampleNorms` for g_i = the
    gradient of (1/m) L_i (multiply by m for the gradient of L_i). Memory O(m * units).
    """
    net = checks.require_network(net)
    return _per_example_norms(net, params, X, Y, compute_dtype=checks.compute_dtype(compute_dtype))


@functools.partial(jax.jit, static_argnums=0, static_argnames="compute_dtype")
def _per_example_stats(net, params, X, Y, *, compute_dtype=None):
    X, Y = checks.check_problem(net, params, X, Y)
    J, _, cache, dZs = recurrences.sweep(net, params, X, Y, None, compute_dtype)
    grads = gradient(dZs, cache, compute_dtype)
    sum_sq = sum_of_squares(dZs, cache)
    sq = sq_norms(dZs, cache)
    nrm = norms_from_sq(sq)
    like = functools.partial(checks.like_params, params)
    return PerExampleStats(
        loss=J,
        grads=like(grads),
        sq_norms=like(sq),
        layer_norms=nrm.layer_norms,
        norms=nrm.norms,
        sum_sq=like(sum_sq),
        variance=like(variance(sum_sq, grads, X.shape[1])),
    )


def per_example_stats(
    net: Network, params: Params, X: Array, Y: Array, *, compute_dtype=None
) -> PerExampleStats:
    """J, grad J, per-example norms, sum of squares and variance, from one batched sweep.

    X is (n[0], m), Y is (n[L], m). See :class:`PerExampleStats`; g_i is the gradient of
    (1/m) L_i. No per-example gradient is formed: memory O(m * units).
    """
    net = checks.require_network(net)
    return _per_example_stats(net, params, X, Y, compute_dtype=checks.compute_dtype(compute_dtype))
