"""DP-SGD gradients: per-example clipping and Gaussian noise, without per-example gradients.

DP-SGD (Abadi et al. 2016) replaces the batch gradient by

    g~ = (1/m) ( sum_i clip_C(grad L_i) + N(0, sigma^2 C^2 I) ),
    clip_C(g) = g * c_i,   c_i = min(1, C / ||g||),

with C = ``l2_norm_clip`` and sigma = ``noise_multiplier``; the clipping is of the
gradient of each example's own loss L_i (not of its 1/m-scaled term of J), so C is in
the units of one example's gradient.

The trick: no per-example gradient is formed. Example i's gradient of layer l is the
outer product dz[l][:,i] a[l-1][:,i]^T (B1) and its bias gradient dz[l][:,i] (B2). So

1. one batched forward pass (F1)-(F2) and one batched backward pass keeping every
   dZ[l] (seed of sum_i L_i: column i of dZ[l] is dL_i/dz[l][:,i]);
2. the norms ||grad L_i||^2 = sum_l ||dz[l][:,i]||^2 (||a[l-1][:,i]||^2 + 1)
   (``jaxmlp.per_example_stats``), then c_i = min(1, C / ||grad L_i||);
3. rescale the columns, dZ~[l] = dZ[l] * broadcast_rows(c): column i scaled by c_i;
4. (B1)/(B2) on the rescaled columns: dW~[l] = dZ~[l] A[l-1]^T = sum_i c_i dz a^T and
   db~[l] = sum_cols dZ~[l], the sum of the clipped per-example gradients;
5. add the noise, divide by m.

Memory O(m * units + num_params): the same order as an ordinary backward pass.

With C = inf and sigma = 0 the result is exactly ``jaxmlp.value_and_grad``'s gradient.
The returned gradients have the params' structure, so they feed ``optax`` directly
(``updates, state = opt.update(grads, state, params)``).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp import _checks
from jaxmlp.network import Network
from jaxmlp.per_example_gradients import deltas
from jaxmlp.per_example_statistics import norms_from_sq, sq_norms
from jaxmlp.propagation import _cost, _forward

Array = jax.Array
Params = list


class DPGradient(NamedTuple):
    """The result of :func:`dp_value_and_grad`.

    Attributes:
      loss: J = (1/m) sum_i L_i at params (before any clipping; not privatised).
      grads: the DP-SGD gradient g~, mirroring params.
      norms: (m,), ||grad L_i|| before clipping.
      clip_factors: (m,), c_i = min(1, C / ||grad L_i||).
    """

    loss: Array
    grads: Params
    norms: Array
    clip_factors: Array


def _check_positive(name: str, value, *, allow_zero: bool, allow_inf: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r} ({type(value).__name__}).")
    v = float(value)
    bound = ">= 0" if allow_zero else "> 0"
    if math.isnan(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: expected a number {bound}, got {value!r}.")
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}.")
    return v


def check_dp_args(l2_norm_clip, noise_multiplier) -> tuple[float, float]:
    """C > 0 (inf allowed: no clipping), sigma >= 0 finite, and not (C = inf with sigma > 0)."""
    C = _check_positive("l2_norm_clip", l2_norm_clip, allow_zero=False, allow_inf=True)
    sigma = _check_positive("noise_multiplier", noise_multiplier, allow_zero=True, allow_inf=False)
    if math.isinf(C) and sigma > 0:
        raise ValueError(
            f"noise_multiplier: the noise std is noise_multiplier * l2_norm_clip, infinite "
            f"for l2_norm_clip = inf; got noise_multiplier = {noise_multiplier!r}. Use a "
            f"finite l2_norm_clip, or noise_multiplier = 0 for clipping-free gradients."
        )
    return C, sigma


@functools.partial(jax.jit, static_argnums=0)
def _dp_value_and_grad(net, params, X, Y, key, C, sigma):
    dtype = _checks.check_params(net, params)
    X = _checks.check_X(net, X, dtype)
    Y = _checks.check_Y(net, Y, X.shape[1], dtype)
    m = X.shape[1]
    A_L, cache = _forward(net, params, X)  # (F1), (F2)
    dZs = deltas(net, params, cache, Y, 1)  # column i of dZ[l] = dL_i/dz[l][:,i]
    norms = norms_from_sq(sq_norms(dZs, cache)).norms  # ||grad L_i||
    C = jnp.asarray(C, dtype)
    # c_i = min(1, C/||g_i||); a zero gradient (C/0 = inf) or C = inf gives c_i = 1.
    c = jnp.minimum(1.0, C / norms).astype(dtype)
    leaves = 2 * net.num_layers
    keys = list(jax.random.split(key, leaves))
    std = jnp.where(sigma > 0, sigma * C, 0.0).astype(dtype)  # avoids 0 * inf
    grads = []
    for dZ, A_prev in zip(dZs, cache.A[:-1]):
        dZc = dZ * c[None, :]  # column i rescaled by c_i
        dW, db = dZc @ A_prev.T, jnp.sum(dZc, axis=1)  # (B1), (B2): sums of clipped terms
        dW = dW + std * jax.random.normal(keys.pop(0), dW.shape, dtype)
        db = db + std * jax.random.normal(keys.pop(0), db.shape, dtype)
        grads.append({"W": dW / m, "b": db / m})
    return DPGradient(_cost(net, cache.Z[-1], A_L, Y), grads, norms, c)


def dp_value_and_grad(
    net: Network, params: Params, X: Array, Y: Array, key: Array, *,
    l2_norm_clip: float, noise_multiplier: float,
) -> DPGradient:
    """J and the DP-SGD gradient (1/m)(sum_i clip_C(grad L_i) + N(0, (sigma C)^2 I)).

    Arguments:
      net: the network.
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs (n[0], m); Y: targets (n[L], m).
      key: a ``jax.random`` key for the noise (one draw per parameter).
      l2_norm_clip: C > 0, the bound on each example's gradient norm ||grad L_i||;
        ``float("inf")`` disables clipping.
      noise_multiplier: sigma >= 0; the noise added to the sum has std sigma * C.

    Returns:
      :class:`DPGradient` (loss, grads, norms, clip_factors). Each example's contribution
      c_i grad L_i has norm <= C. No per-example gradient is stored: memory O(m * units).
    """
    net = _checks.require_network(net)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier)
    return _dp_value_and_grad(net, params, X, Y, key, C, sigma)


def make_dp_grad_fn(net: Network, *, l2_norm_clip: float, noise_multiplier: float):
    """An optax-ready gradient function ``(params, X, Y, key) -> (J, grads)`` for DP-SGD.

    The arguments are checked once, here. ``grads`` mirrors params, so a training step is
    ``J, g = grad_fn(params, X, Y, key); updates, state = opt.update(g, state, params);
    params = optax.apply_updates(params, updates)``. Use a fresh key every step.
    """
    net = _checks.require_network(net)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier)

    def grad_fn(params, X, Y, key):
        out = _dp_value_and_grad(net, params, X, Y, key, C, sigma)
        return out.loss, out.grads

    return grad_fn
