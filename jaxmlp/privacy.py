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
   (rule (Q2), :func:`jaxmlp.quantities.sq_norms`), then c_i = min(1, C / ||grad L_i||);
3. rule (Q5), :func:`jaxmlp.quantities.clipped_gradient`: rescale the columns,
   dZ~[l] = dZ[l] * broadcast_rows(c), then (B1)/(B2) on them: dW~[l] = dZ~[l] A[l-1]^T
   = sum_i c_i dz a^T and db~[l] = sum_cols dZ~[l], the sum of the clipped gradients;
4. add the noise (only when sigma > 0: sigma = 0 draws no random numbers), divide by m.

Memory O(m * units + num_params): the same order as an ordinary backward pass.

With C = inf and sigma = 0 the result is exactly ``jaxmlp.value_and_grad``'s gradient.
The returned gradients have the params' structure, so they feed ``optax`` directly
(``updates, state = opt.update(grads, state, params)``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp import core, validation
from jaxmlp.network import Network
from jaxmlp.quantities import clipped_gradient, norms_from_sq, sq_norms

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


def check_dp_args(l2_norm_clip, noise_multiplier) -> tuple[float, float]:
    """C > 0 (inf allowed: no clipping), sigma >= 0 finite, and not (C = inf with sigma > 0)."""
    C = validation.real_number("l2_norm_clip", l2_norm_clip, low=0, low_open=True, allow_inf=True)
    sigma = validation.real_number("noise_multiplier", noise_multiplier, low=0)
    if math.isinf(C) and sigma > 0:
        raise ValueError(
            f"noise_multiplier: the noise std is noise_multiplier * l2_norm_clip, infinite "
            f"for l2_norm_clip = inf; got noise_multiplier = {noise_multiplier!r}. Use a "
            f"finite l2_norm_clip, or noise_multiplier = 0 for clipping-free gradients."
        )
    return C, sigma


def add_noise(key, grads: Params, std, dtype) -> Params:
    """grads + N(0, std^2 I), one independent draw per parameter (leaf keys from ``key``)."""
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    noisy = [g + std * jax.random.normal(k, g.shape, dtype) for g, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("sigma", "compute_dtype"))
def _dp_value_and_grad(net, params, X, Y, key, C, *, sigma, compute_dtype=None):
    X, Y = validation.check_problem(net, params, X, Y)
    dtype = X.dtype
    m = X.shape[1]
    A_L, cache = core.forward_pass(net, params, X, compute_dtype)  # (F1), (F2)
    dZs = core.backward_sweep(net, params, cache, Y, 1, compute_dtype)  # dZ[l][:,i] = dL_i/dz
    norms = norms_from_sq(sq_norms(dZs, cache)).norms  # ||grad L_i||, (Q2)
    C = jnp.asarray(C, dtype)
    # c_i = min(1, C/||g_i||); a zero gradient (C/0 = inf) or C = inf gives c_i = 1.
    c = jnp.minimum(1.0, C / norms).astype(dtype)
    grads = clipped_gradient(dZs, cache, c, compute_dtype)  # (Q5): sum_i c_i grad L_i
    if sigma > 0:  # static: a noise-free step draws nothing
        grads = add_noise(key, grads, (sigma * C).astype(dtype), dtype)
    grads = validation.like_params(params, jax.tree.map(lambda g: g / m, grads))
    return DPGradient(core.cost(net, cache.Z[-1], A_L, Y), grads, norms, c)


def dp_value_and_grad(
    net: Network, params: Params, X: Array, Y: Array, key: Array, *,
    l2_norm_clip: float, noise_multiplier: float, compute_dtype=None,
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
      compute_dtype: operand dtype of the sweep's matrix products (None: the params').

    Returns:
      :class:`DPGradient` (loss, grads, norms, clip_factors). Each example's contribution
      c_i grad L_i has norm <= C. No per-example gradient is stored: memory O(m * units).
    """
    net = validation.require_network(net)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier)
    key = validation.prng_key(key)
    return _dp_value_and_grad(net, params, X, Y, key, C, sigma=sigma,
                              compute_dtype=validation.compute_dtype(compute_dtype))


def make_dp_grad_fn(net: Network, *, l2_norm_clip: float, noise_multiplier: float,
                    compute_dtype=None):
    """An optax-ready gradient function ``(params, X, Y, key) -> (J, grads)`` for DP-SGD.

    The arguments are checked once, here. ``grads`` mirrors params, so a training step is
    ``J, g = grad_fn(params, X, Y, key); updates, state = opt.update(g, state, params);
    params = optax.apply_updates(params, updates)``. Use a fresh key every step.
    """
    net = validation.require_network(net)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier)
    compute_dtype = validation.compute_dtype(compute_dtype)

    def grad_fn(params, X, Y, key):
        key = validation.prng_key(key)  # a bad key is named here, not deep inside jax.random
        out = _dp_value_and_grad(net, params, X, Y, key, C, sigma=sigma,
                                 compute_dtype=compute_dtype)
        return out.loss, out.grads

    return grad_fn
