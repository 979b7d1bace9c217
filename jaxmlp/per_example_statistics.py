"""Per-example gradient norms, sums of squares and variances, without per-example gradients.

Everything here comes from ONE batched forward pass and ONE batched backward pass that
keeps the dZ[l] (``jaxmlp.per_example_gradients.deltas``): memory O(m * units), never the
O(m * num_params) of the stacked per-example gradients. Per example i and layer l, with
dz = dz[l][:,i] and a = a[l-1][:,i] (the per-example gradient is dz a^T, (B1)):

    ||dW[l]_i||_F^2 = ||dz a^T||_F^2 = ||dz||^2 ||a||^2         (rank one)
    ||db[l]_i||^2   = ||dz||^2                                   (B2)
    ||g_i||^2       = sum_l ||dz[l]||^2 (||a[l-1]||^2 + 1)
    sum_i (dW[l]_i)^2 = (dZ[l] * dZ[l]) (A[l-1] * A[l-1])^T   (entry-wise squares; one matmul)
    sum_i (db[l]_i)^2 = sum_cols (dZ[l] * dZ[l])
    Var_i[g_i]      = (1/m) sum_i g_i^2 - ((1/m) sum_i g_i)^2     (per parameter, ddof = 0)

Convention: g_i is the gradient of example i's term (1/m) L_i of J, as in
``jaxmlp.per_example_grads`` (so sum_i g_i = grad J). For the gradient of L_i itself
multiply norms by m and sums of squares and variances by m^2.

The variance is evaluated as E[g^2] - E[g]^2, which loses relative accuracy when the
spread is much smaller than the mean (about eps * E[g]^2 absolute); it is clamped at 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp import _checks
from jaxmlp.network import Network
from jaxmlp.per_example_gradients import deltas
from jaxmlp.propagation import Cache, _cost, _forward

Array = jax.Array
Params = list


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
      sq_norms: ``[{"W": (m,), "b": (m,)}, ...]``, ||dW[l]_i||^2 and ||db[l]_i||^2.
      layer_norms, norms: as in :class:`PerExampleNorms`.
      sum_sq: sum_i g_i * g_i (entry-wise), mirroring params.
      variance: (1/m) sum_i (g_i - mean_i g_i)^2 per parameter, mirroring params.
    """

    loss: Array
    grads: Params
    sq_norms: Params
    layer_norms: Array
    norms: Array
    sum_sq: Params
    variance: Params


def sq_norms(dZs: tuple, cache: Cache) -> Params:
    """||dW[l]_i||^2 = ||dz||^2 ||a||^2 and ||db[l]_i||^2 = ||dz||^2, for every column i.

    Shapes: dZ[l] (n[l], m), A[l-1] (n[l-1], m) -> ``[{"W": (m,), "b": (m,)}, ...]``.
    """
    out = []
    for dZ, A_prev in zip(dZs, cache.A[:-1]):
        dz2 = jnp.sum(dZ * dZ, axis=0)
        out.append({"W": dz2 * jnp.sum(A_prev * A_prev, axis=0), "b": dz2})
    return out


def norms_from_sq(sq: Params) -> PerExampleNorms:
    """Layer norms (L, m) and total norms (m,) from :func:`sq_norms`."""
    layer_sq = jnp.stack([s["W"] + s["b"] for s in sq])
    return PerExampleNorms(layer_norms=jnp.sqrt(layer_sq), norms=jnp.sqrt(jnp.sum(layer_sq, 0)))


def _prepare(net, params, X, Y):
    net = _checks.require_network(net)
    dtype = _checks.check_params(net, params)
    X = _checks.check_X(net, X, dtype)
    return X, _checks.check_Y(net, Y, X.shape[1], dtype)


@functools.partial(jax.jit, static_argnums=0)
def per_example_norms(net: Network, params: Params, X: Array, Y: Array) -> PerExampleNorms:
    """Per-example gradient norms, per layer and total, from one batched pass.

    X is (n[0], m), Y is (n[L], m). Returns :class:`PerExampleNorms` for g_i = the
    gradient of (1/m) L_i (multiply by m for the gradient of L_i). Memory O(m * units).
    """
    X, Y = _prepare(net, params, X, Y)
    _, cache = _forward(net, params, X)
    dZs = deltas(net, params, cache, Y, X.shape[1])
    return norms_from_sq(sq_norms(dZs, cache))


@functools.partial(jax.jit, static_argnums=0)
def per_example_stats(net: Network, params: Params, X: Array, Y: Array) -> PerExampleStats:
    """J, grad J, per-example norms, sum of squares and variance, from one batched pass.

    X is (n[0], m), Y is (n[L], m). See :class:`PerExampleStats`; g_i is the gradient of
    (1/m) L_i. No per-example gradient is formed: memory O(m * units).
    """
    X, Y = _prepare(net, params, X, Y)
    m = X.shape[1]
    A_L, cache = _forward(net, params, X)
    dZs = deltas(net, params, cache, Y, m)
    grads, sum_sq, variance = [], [], []
    for dZ, A_prev in zip(dZs, cache.A[:-1]):
        g = {"W": dZ @ A_prev.T, "b": jnp.sum(dZ, axis=1)}  # (B1), (B2)
        s = {"W": (dZ * dZ) @ (A_prev * A_prev).T, "b": jnp.sum(dZ * dZ, axis=1)}
        grads.append(g)
        sum_sq.append(s)
        variance.append(
            jax.tree.map(lambda s_, g_: jnp.maximum(s_ / m - jnp.square(g_ / m), 0), s, g)
        )
    sq = sq_norms(dZs, cache)
    nrm = norms_from_sq(sq)
    return PerExampleStats(
        loss=_cost(net, cache.Z[-1], A_L, Y),
        grads=grads,
        sq_norms=sq,
        layer_norms=nrm.layer_norms,
        norms=nrm.norms,
        sum_sq=sum_sq,
        variance=variance,
    )
