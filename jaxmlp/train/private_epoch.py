"""The DP-SGD epoch: Poisson-sampled steps of the private gradient in one ``lax.scan``.

Each step draws its batch by Poisson sampling with a fixed padded shape
(:func:`jaxmlp.privacy.poisson_batch`, :func:`jaxmlp.privacy.padded_batch_size`), computes
the DP-SGD gradient of :func:`jaxmlp.privacy.dp_value_and_grad` from one sweep, and applies
the optax update. The privacy pieces live in :mod:`jaxmlp.privacy`; this module is where
they meet the training step.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.privacy.dpsgd import (
    DPSGD, Clip, DPStepMetrics, check_dp_args, check_expected_batch, check_sampling_rate,
    default_steps_per_epoch,
    dp_gradient_kernel, in_params_dtype, noise_std, padded_batch_size, poisson_batch,
)
from jaxmlp.train.optimizers import check_opt_state, check_optimizer
from jaxmlp.train.step import with_data_check

__all__ = ["dp_max_batch_size", "make_dp_train_epoch", "make_dp_train_epoch_from_settings"]


def dp_max_batch_size(num_examples: int, sampling_rate: float, steps: int,
                      max_batch_size: Optional[int] = None) -> int:
    """B_max, the padded batch of the Poisson-sampled steps: ``max_batch_size`` when given,
    else :func:`jaxmlp.privacy.padded_batch_size` (n, q, steps) (overflow probability over
    ``steps`` steps below 1e-9); at most n. The one place a DP run's B_max is decided."""
    B = (padded_batch_size(num_examples, sampling_rate, steps) if max_batch_size is None
         else max_batch_size)
    return min(B, num_examples)


def make_dp_train_epoch(
    net: Network,
    optimizer: optax.GradientTransformation,
    *,
    sampling_rate: float,
    l2_norm_clip: Clip,
    noise_multiplier: float,
    steps_per_epoch: Optional[int] = None,
    max_batch_size: Optional[int] = None,
    compute_dtype=None,
    check_data: bool = True,
):
    """A jitted DP-SGD ``epoch(params, opt_state, key, X, Y) -> (params, opt_state,
    DPStepMetrics)``: ``steps_per_epoch`` Poisson-sampled steps in ONE ``lax.scan``.

    Each step draws its batch (every column of X (n[0], n) independently with probability
    q), gathers it into a padded (n[0], B_max) block with a mask, computes the DP-SGD
    gradient of :func:`dp_value_and_grad` divided by the expected batch size q n (masked
    columns weigh 0), and applies the optax update.

    Arguments:
      net, optimizer: the network and any optax ``GradientTransformation``.
      sampling_rate: q in (0, 1].
      l2_norm_clip: C, or one C_l per layer.
      noise_multiplier: sigma >= 0 (0 draws no noise).
      steps_per_epoch: None (round(1/q)) or a positive int.
      max_batch_size: B_max, or None: :func:`dp_max_batch_size` (n, q, steps_per_epoch),
        overflow probability per epoch below 1e-9 (``jaxmlp.train.loop`` passes the run's steps).
      compute_dtype: operand dtype of the matrix products.
      check_data: True (default): concrete X, Y with NaN or infinity are refused
        (ValueError), once per array object, and an integer seed becomes a key; False: the
        jitted epoch alone (as :func:`jaxmlp.train.step.make_train_epoch`).

    Metrics are :class:`DPStepMetrics`, each field of shape (steps_per_epoch,).

    The compiled epoch is kept per (network, optimizer object, q, steps_per_epoch,
    max_batch_size, compute_dtype), as :func:`jaxmlp.train.step.make_train_epoch`'s is; C
    and the noise std sigma C are its arguments, so an epoch made again, or with another
    ``l2_norm_clip`` or ``noise_multiplier``, compiles nothing new (per-layer clipping and
    sigma = 0 are programs of their own).
    """
    net = checks.require_network(net)
    optimizer = check_optimizer(optimizer)
    q = check_sampling_rate(sampling_rate)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier, net.num_layers)
    spe = (default_steps_per_epoch(q) if steps_per_epoch is None
           else checks.positive_int("steps_per_epoch", steps_per_epoch))
    if max_batch_size is not None:
        max_batch_size = checks.positive_int("max_batch_size", max_batch_size)
    if not isinstance(check_data, bool):
        raise TypeError(f"check_data: expected True or False, got {check_data!r}.")
    epoch = _dp_epoch(net, optimizer, q, C, sigma, spe, max_batch_size,
                      checks.compute_dtype(compute_dtype))
    checked = with_data_check(net, epoch, 3, key_pos=2) if check_data else epoch
    checked.max_batch_size = max_batch_size
    checked.steps_per_epoch = spe
    return checked


def make_dp_train_epoch_from_settings(net: Network, optimizer: optax.GradientTransformation,
                                      dp: DPSGD, *, compute_dtype=None):
    """:func:`make_dp_train_epoch` for a :class:`jaxmlp.privacy.DPSGD` that
    :func:`jaxmlp.privacy.check_dpsgd` returned (checked, defaults filled in): its settings
    are not checked again, and the epoch expects checked X, Y and a PRNG key (no host-side
    checks; :func:`jaxmlp.train.loop.fit` checks them once per run)."""
    epoch = _dp_epoch(checks.require_network(net), check_optimizer(optimizer), dp.sampling_rate,
                      dp.l2_norm_clip, dp.noise_multiplier, dp.steps_per_epoch,
                      dp.max_batch_size, checks.compute_dtype(compute_dtype))
    epoch.max_batch_size = dp.max_batch_size
    epoch.steps_per_epoch = dp.steps_per_epoch
    return epoch


def _dp_epoch(net, optimizer, q: float, C, sigma: float, spe: int,
              max_batch_size: Optional[int], compute_dtype):
    """The epoch of checked settings (see :func:`make_dp_train_epoch`): the compiled program
    of its structure (:func:`_dp_epoch_program`, cached), called with the values of C and
    of the noise std sigma * sensitivity, so that a new clip or noise multiplier compiles
    nothing. ``.lower`` / ``.trace`` / ``.eval_shape`` take the epoch's own arguments."""
    args = (net, optimizer, q, spe, max_batch_size, compute_dtype)
    try:
        program = _cached_dp_epoch(*args)
    except TypeError:  # an argument that cannot be hashed: no reuse, the same function
        program = _dp_epoch_program(*args)
    std = noise_std(sigma, C)

    def values(params):  # rounded once to the params' dtype, as a constant would be
        return in_params_dtype(params, C), in_params_dtype(params, std)

    def bound(method):
        return lambda params, *rest: method(params, *rest, *values(params))

    epoch = bound(program)
    for attr in ("lower", "trace", "eval_shape"):
        setattr(epoch, attr, bound(getattr(program, attr)))
    return epoch


def _dp_epoch_program(net, optimizer, q: float, spe: int, max_batch_size: Optional[int],
                      compute_dtype):
    """The jitted ``epoch(params, opt_state, key, X, Y, C, std)``: C (a scalar, or (L,) per
    layer) and the noise std (None: no noise) are arguments, values of one program."""

    @jax.jit
    def epoch(params, opt_state, key, X, Y, C, std):
        X, Y = checks.check_problem(net, params, X, Y)
        check_opt_state(optimizer, params, opt_state)  # at trace time: free
        key = checks.prng_key(key)
        n = X.shape[1]
        check_expected_batch(q, n)  # n is static: at trace time, before any step
        B = dp_max_batch_size(n, q, spe, max_batch_size)
        divisor = q * n  # the expected batch size (Opacus's convention)

        def body(carry, step_key):
            params, opt_state = carry
            k_sample, k_noise = jax.random.split(step_key)
            idx, valid, count = poisson_batch(k_sample, n, q, B)
            X_s = jnp.take(X, idx, axis=1)  # (n[0], B)
            Y_s = jnp.take(Y, idx, axis=1)  # (n[L], B)
            out = dp_gradient_kernel(net, params, X_s, Y_s, k_noise, C, valid, divisor,
                                     noise_std=std, compute_dtype=compute_dtype)
            updates, opt_state = optimizer.update(out.grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = DPStepMetrics(out.loss, optax.tree.norm(out.grads), count,
                                    jnp.maximum(count - B, 0))
            return (params, opt_state), metrics

        keys = jax.random.split(key, spe)
        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), keys)
        return params, opt_state, metrics

    return epoch


# The same (network, optimizer object, q, steps, B_max, compute dtype) gives the same jitted
# epoch, as :func:`jaxmlp.train.step.make_train_epoch`'s cache does for the non-private one:
# fitting again (a refitted scikit-learn estimator, fit called per run, a sweep over
# l2_norm_clip or noise_multiplier, whose values are arguments) compiles nothing new.
_cached_dp_epoch = functools.lru_cache(maxsize=64)(_dp_epoch_program)
