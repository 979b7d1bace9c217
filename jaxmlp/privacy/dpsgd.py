"""Differentially private training: DP-SGD gradients from one sweep, Poisson sampling, accounting.

DP-SGD (Abadi et al. 2016) replaces the batch gradient by

    g~ = (1/D) ( sum_{i in B} clip(grad L_i) + N(0, sigma^2 C^2 I) ),

with C = ``l2_norm_clip``, sigma = ``noise_multiplier`` and D the divisor: the batch
size m for a fixed batch, the EXPECTED batch size q n for a Poisson-sampled one (each of
the n examples joins the batch B independently with probability q), as Opacus does, so
that the divisor does not depend on the sample. The clipping is of the gradient of each
example's own loss L_i (not of its 1/m-scaled term of J), so C is in the units of one
example's gradient. Two clippings:

* flat: clip(g) = c_i g, c_i = min(1, C / ||g||) over the whole gradient;
* per layer (Opacus's option): a threshold C_l per layer, layer l of g scaled by
  c_{l,i} = min(1, C_l / ||g^l||), where g^l = (dW[l]_i, db[l]_i). The clipped gradient
  then has norm <= C = sqrt(sum_l C_l^2), the sensitivity the noise is scaled by.

The trick: no per-example gradient is formed. Example i's gradient of layer l is the
outer product dz[l][:,i] a[l-1][:,i]^T (B1) and its bias gradient dz[l][:,i] (B2). So

1. one batched forward pass (F1)-(F2) and one batched backward sweep keeping every
   dZ[l] (seed of sum_i L_i: column i of dZ[l] is dL_i/dz[l][:,i]);
2. the norms ||g^l_i||^2 = ||dz[l][:,i]||^2 (||a[l-1][:,i]||^2 + 1) (rule (Q2),
   :func:`jaxmlp.quantities.sq_norms`), summed over l for the flat norm; then the
   factors c (m,) or (L, m), multiplied by the sampling mask (a column that is not in the
   batch weighs 0: the same column scaling);
3. rule (Q5), :func:`jaxmlp.quantities.clipped_gradient`: rescale the columns of each
   dZ[l], then (B1)/(B2) on them: the sum of the clipped gradients;
4. add the noise (only when sigma > 0: sigma = 0 draws no random numbers), divide by D.

Memory O(m * units + num_params): the same order as an ordinary backward pass.

Poisson sampling with fixed shapes (:func:`make_dp_train_epoch`): every step draws n
Bernoulli(q) bits, gathers the selected columns into a padded batch of B_max columns
(:func:`padded_batch_size`: the smallest B_max whose overflow probability
P(Binomial(n, q) > B_max), summed over the run's steps, is below 1e-9, computed exactly
from the binomial tail) and masks the padding. An overflow (more than B_max selected)
is counted in the step metrics (``overflow``), never hidden.

Accounting (:func:`epsilon`, :func:`calibrate_noise`) is Google's ``dp-accounting``:
the Poisson-subsampled Gaussian mechanism composed over the steps, add-or-remove-one
neighbours, by privacy loss distributions (``"pld"``, default; pessimistic estimate on a
grid of 1e-3, an upper bound on epsilon) or Renyi DP (``"rdp"``, integer orders 2..256).

With C = inf and sigma = 0 the gradient is exactly ``jaxmlp.value_and_grad``'s.
The returned gradients have the params' structure, so they feed ``optax`` directly.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.nn import recurrences
from jaxmlp.privacy import threefry
from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.quantities.first_order import clipped_gradient, norms_from_sq, sq_norms

Array = jax.Array
Params = list
Clip = Union[float, Sequence[float]]

__all__ = [
    "ACCOUNTANTS",
    "DPGradient",
    "DPSGD",
    "DPStepMetrics",
    "calibrate_noise",
    "calibrate_run",
    "check_dp_args",
    "check_expected_batch",
    "dp_value_and_grad",
    "epsilon",
    "make_dp_grad_fn",
    "overflow_probability",
    "padded_batch_size",
    "poisson_batch",
    "privacy_report",
    "check_sampling_rate",
    "check_dpsgd",
    "default_steps_per_epoch",
    "dp_gradient_kernel",
    "in_params_dtype",
    "noise_std",
    "total_clip",
]

#: Accountants of :func:`epsilon`: privacy loss distributions, Renyi DP.
ACCOUNTANTS = ("pld", "rdp")
#: The grid of the PLD accountant's privacy losses (pessimistic: epsilon is an upper bound).
PLD_GRID = 1e-3
#: The Renyi orders of the RDP accountant (integer orders: exact, no series to converge).
RDP_ORDERS = tuple(range(2, 65)) + (72, 80, 96, 128, 160, 192, 256)
#: The overflow probability :func:`padded_batch_size` keeps the padded batch under.
OVERFLOW_PROBABILITY = 1e-9
#: The overflow probability over the run above which a GIVEN ``max_batch_size`` is refused
#: (a checkpoint's padded size continued for more epochs passes; one that overflows is not).
GIVEN_OVERFLOW_PROBABILITY = 1e-6


class DPGradient(NamedTuple):
    """The result of :func:`dp_value_and_grad`.

    Attributes:
      loss: the mean loss of the batch's examples at params (before any clipping; not
        privatised). With a mask: the mean over the selected examples.
      grads: the DP-SGD gradient g~, mirroring params.
      norms: (m,), ||grad L_i|| before clipping.
      clip_factors: (m,) flat or (L, m) per layer: c_i = min(1, C / ||grad L_i||) (or
        min(1, C_l / ||grad^l L_i||)) times the mask.
      layer_norms: (L, m), ||grad^l L_i|| of each layer's (dW[l]_i, db[l]_i).
    """

    loss: Array
    grads: Params
    norms: Array
    clip_factors: Array
    layer_norms: Array


class DPStepMetrics(NamedTuple):
    """What one step of :func:`make_dp_train_epoch` reports (stacked over an epoch's steps).

    Attributes:
      cost: mean loss of the sampled examples at the parameters before the update (not
        privatised; for monitoring).
      grad_norm: the global L2 norm of the noisy gradient g~ the optimizer received.
      batch_size: the number of examples Poisson sampling selected.
      overflow: how many selected examples did not fit the padded batch (0 but with
        probability below the bound of :func:`padded_batch_size`).
    """

    cost: Array
    grad_norm: Array
    batch_size: Array
    overflow: Array


# ----------------------------------------------------------------------------- arguments


def check_clip(l2_norm_clip: Any, num_layers: Optional[int] = None):
    """C > 0 (inf allowed), or a sequence of one C_l > 0 (finite) per layer; returns a
    float or a tuple of floats. A 0-d array (``np.array(1.0)``) is a single C; a traced array
    (inside ``jax.jit``) is refused by :func:`jaxmlp.nn.checks.real_number`'s TypeError (it
    has no Python value to check)."""
    if isinstance(l2_norm_clip, jax.core.Tracer):
        checks.real_number("l2_norm_clip", l2_norm_clip)  # raises: a traced array
    if isinstance(l2_norm_clip, (np.ndarray, jax.Array)) and np.ndim(l2_norm_clip) == 0:
        l2_norm_clip = np.asarray(l2_norm_clip).item()
    if isinstance(l2_norm_clip, (list, tuple, np.ndarray)) or (
            isinstance(l2_norm_clip, jax.Array) and l2_norm_clip.ndim == 1):
        values = list(np.asarray(l2_norm_clip).tolist()) if not isinstance(
            l2_norm_clip, (list, tuple)) else list(l2_norm_clip)
        if num_layers is not None and len(values) != num_layers:
            raise ValueError(
                f"l2_norm_clip: expected one threshold per layer ({num_layers} for this "
                f"network) or a single number, got {len(values)}: {values!r}.")
        if not values:
            raise ValueError("l2_norm_clip: expected a number > 0 or a non-empty list, got [].")
        return tuple(
            checks.real_number(f"l2_norm_clip[{l}]", v, low=0, low_open=True)
            for l, v in enumerate(values))
    return checks.real_number("l2_norm_clip", l2_norm_clip, low=0, low_open=True,
                                  allow_inf=True)


def total_clip(C) -> float:
    """The sensitivity of the clipped sum: C (flat) or sqrt(sum_l C_l^2) (per layer)."""
    return math.sqrt(sum(c * c for c in C)) if isinstance(C, tuple) else C


def check_dp_args(l2_norm_clip, noise_multiplier, num_layers: Optional[int] = None):
    """C > 0 (inf allowed: no clipping) or one C_l per layer, sigma >= 0 finite, and not
    (C = inf with sigma > 0). Returns (C, sigma)."""
    C = check_clip(l2_norm_clip, num_layers)
    sigma = checks.real_number("noise_multiplier", noise_multiplier, low=0)
    if math.isinf(total_clip(C)) and sigma > 0:
        raise ValueError(
            f"noise_multiplier: the noise std is noise_multiplier * l2_norm_clip, infinite "
            f"for l2_norm_clip = inf; got noise_multiplier = {noise_multiplier!r}. Use a "
            f"finite l2_norm_clip, or noise_multiplier = 0 for clipping-free gradients."
        )
    return C, sigma


def check_sampling_rate(q) -> float:
    return checks.real_number("sampling_rate", q, low=0, low_open=True, high=1)


def _delta(delta) -> float:
    return checks.real_number("delta", delta, low=0, low_open=True, high=1, high_open=True)


def _accountant(name) -> str:
    if not isinstance(name, str) or name not in ACCOUNTANTS:
        raise ValueError(f"accountant: expected one of {list(ACCOUNTANTS)}, got {name!r}.")
    return name


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps: expected a non-negative integer, got {steps!r} "
                        f"({type(steps).__name__}).")
    if steps < 0:
        raise ValueError(f"steps: expected a non-negative integer, got {steps!r}.")
    return int(steps)


# ----------------------------------------------------------------------------- accounting


@functools.lru_cache(maxsize=32)
def _pld(sigma: float, q: float):
    from dp_accounting.pld import privacy_loss_distribution as pld

    return pld.from_gaussian_mechanism(sigma, sampling_prob=q,
                                       value_discretization_interval=PLD_GRID)


@functools.lru_cache(maxsize=1024)
def _epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if accountant == "pld":
        return float(_pld(sigma, q).self_compose(steps).get_epsilon_for_delta(delta))
    import dp_accounting
    from dp_accounting import rdp

    acc = rdp.RdpAccountant(list(RDP_ORDERS))
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
    return float(acc.get_epsilon(delta))


def epsilon(*, noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
            accountant: str = "pld") -> float:
    """The epsilon of ``steps`` DP-SGD steps at (sigma, q), for the given delta.

    The mechanism is the Poisson-subsampled Gaussian (each example in a step's batch
    with probability q = ``sampling_rate``, noise std sigma times the sensitivity),
    composed ``steps`` times, add-or-remove-one neighbours. ``accountant``: ``"pld"``
    (privacy loss distributions, tight; pessimistic grid :data:`PLD_GRID`) or ``"rdp"``
    (Renyi DP, looser). noise_multiplier 0 gives inf; steps 0 gives 0. Computed by
    Google's ``dp-accounting`` (results are cached per argument tuple).
    """
    sigma = checks.real_number("noise_multiplier", noise_multiplier, low=0)
    q = check_sampling_rate(sampling_rate)
    steps = _steps(steps)
    delta = _delta(delta)
    return _epsilon(sigma, q, steps, delta, _accountant(accountant))


#: The noise multipliers :func:`calibrate_noise` searches.
SIGMA_RANGE = (0.3, 1000.0)


def calibrate_noise(*, target_epsilon: float, delta: float, sampling_rate: float, steps: int,
                    accountant: str = "pld", rtol: float = 1e-3) -> float:
    """The smallest noise multiplier sigma (to relative ``rtol``) whose :func:`epsilon`
    over ``steps`` steps is <= ``target_epsilon``.

    Bisection on log sigma in :data:`SIGMA_RANGE`; the returned sigma always satisfies
    ``epsilon(...) <= target_epsilon``. A target so loose that sigma = 0.3 already meets it
    returns that lower limit 0.3, whose epsilon may be far BELOW the target (no longer within
    ``rtol``: target 100 at q = 0.1, 10 steps, delta 1e-5 gives sigma 0.3, epsilon 35.7).
    ValueError naming ``target_epsilon`` when even sigma = 1000 does not.
    """
    target = checks.real_number("target_epsilon", target_epsilon, low=0, low_open=True)
    delta = _delta(delta)
    q = check_sampling_rate(sampling_rate)
    steps = checks.positive_int("steps", steps)
    accountant = _accountant(accountant)
    rtol = checks.real_number("rtol", rtol, low=0, low_open=True, high=1, high_open=True)
    lo_bound, hi_bound = SIGMA_RANGE

    def eps(s):
        return _epsilon(s, q, steps, delta, accountant)

    e_hi = eps(hi_bound)
    if e_hi > target:
        raise ValueError(
            f"target_epsilon: {target:g} cannot be reached in {steps} steps at sampling rate "
            f"{q:g} and delta {delta:g}: even noise_multiplier {hi_bound:g} spends epsilon "
            f"{e_hi:.4g}. Use fewer steps, a smaller sampling rate or a larger target.")
    # bracket: eps(lo) > target >= eps(hi), by doubling from sigma = 1
    hi = 1.0
    if eps(hi) > target:
        lo = hi
        while eps(hi) > target:
            lo, hi = hi, min(2 * hi, hi_bound)
    else:
        lo = hi / 2
        while eps(lo) <= target:
            if lo <= lo_bound:
                return lo_bound
            hi, lo = lo, max(lo / 2, lo_bound)
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


# ----------------------------------------------------------------------------- Poisson sampling


def overflow_probability(num_examples: int, sampling_rate: float, max_batch_size: int,
                         steps: int = 1) -> float:
    """Union bound on the probability that some of ``steps`` Poisson batches (n examples,
    rate q) selects more than ``max_batch_size`` examples: steps * P(Binomial(n, q) > B).
    The binomial tail is computed exactly (``scipy.stats.binom.sf``)."""
    from scipy.stats import binom

    return min(1.0, steps * float(binom.sf(max_batch_size, num_examples, sampling_rate)))


def padded_batch_size(num_examples: int, sampling_rate: float, steps: int = 1,
                      overflow: float = OVERFLOW_PROBABILITY) -> int:
    """The smallest B_max with :func:`overflow_probability` (n, q, B_max, steps) <= ``overflow``.

    For digits (n = 1438, q = 0.5, 100 steps) B_max is 846 = 719 + 6.7 sqrt(n q (1 - q));
    the padding is compute spent on masked columns.
    """
    n = checks.positive_int("num_examples", num_examples)
    q = check_sampling_rate(sampling_rate)
    steps = checks.positive_int("steps", steps)
    overflow = checks.real_number("overflow", overflow, low=0, low_open=True, high=1)
    lo, hi = max(0, math.floor(q * n) - 1), n  # P(X > n) = 0
    while hi - lo > 1:  # invariant: bound(lo) > overflow >= bound(hi)
        mid = (lo + hi) // 2
        if overflow_probability(n, q, mid, steps) <= overflow:
            hi = mid
        else:
            lo = mid
    return max(hi, 1)


def poisson_batch(key, num_examples: int, sampling_rate: float, max_batch_size: int):
    """One Poisson sample of the n columns, padded: ``(idx (B,), valid (B,), count)``.

    Each column joins independently with probability q; the selected indices come first
    in ``idx`` (in increasing order), the rest of ``idx`` is padding (index 0) with
    ``valid`` False. ``count`` is the number selected (it may exceed B: overflow).
    ``key``: a PRNG key or an integer seed (:func:`jaxmlp.nn.checks.prng_key`).
    """
    key = checks.prng_key(key)
    selected = jax.random.bernoulli(key, sampling_rate, (num_examples,))
    count = jnp.sum(selected, dtype=jnp.int32)
    idx = jnp.nonzero(selected, size=max_batch_size, fill_value=0)[0]
    valid = jnp.arange(max_batch_size) < count
    return idx, valid, count


# ----------------------------------------------------------------------------- the gradient


def add_noise(key, grads: Params, std, dtype) -> Params:
    """grads + N(0, std^2 I), one independent draw per parameter (a key per leaf from
    ``key``). The draws are ``jax.random.normal``'s, in one fused kernel per leaf with the
    addition (:func:`jaxmlp.privacy.threefry.normal`): no buffer of the P noise numbers is kept.
    ``key``: a PRNG key or an integer seed (:func:`jaxmlp.nn.checks.prng_key`)."""
    key = checks.prng_key(key)
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    noisy = [g + std * threefry.normal(k, g.shape, dtype) for g, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def dp_gradient_kernel(net, params, X, Y, key, C, mask, divisor, *, noise_std=None, sigma=None,
                       sensitivity=None, compute_dtype=None) -> DPGradient:
    """Unchecked DP-SGD gradient (steps 1-4 of the module docstring).

    C: a scalar (flat) or an (L,) array (per layer); mask: None or (m,) 0/1 weights;
    divisor: D. The noise, N(0, std^2 I) with std = sigma * sensitivity, is given either as
    ``noise_std`` (a number or a 0-d array, traced or not: a compiled caller passes it as
    an argument, so a new sigma or C reuses the program; None draws no noise), or as Python
    numbers ``sigma`` and ``sensitivity`` (sigma = 0 draws no noise). Whether noise is drawn
    is part of the program; its std is a value.
    """
    if sigma is not None or sensitivity is not None:
        if noise_std is not None or sigma is None or sensitivity is None:
            raise TypeError(
                f"noise_std: give it alone, or sigma and sensitivity (the std is their "
                f"product); got noise_std={noise_std!r}, sigma={sigma!r}, "
                f"sensitivity={sensitivity!r}.")
        noise_std = sigma * sensitivity if sigma > 0 else None  # sigma = 0: no draws
    dtype = X.dtype
    _, A_L, cache, dZs = recurrences.sweep(net, params, X, Y, 1, compute_dtype)  # dZ[l][:,i] = dL_i/dz
    nrm = norms_from_sq(sq_norms(dZs, cache))  # (Q2): layer norms (L, m), norms (m,)
    C = jnp.asarray(C, dtype)
    # c = min(1, C/||g||); a zero gradient (C/0 = inf) or C = inf gives 1.
    if C.ndim == 0:
        c = jnp.minimum(1.0, C / nrm.norms)  # (m,)
    else:
        c = jnp.minimum(1.0, C[:, None] / nrm.layer_norms)  # (L, m)
    losses = recurrences.losses(net, cache.Z[-1], A_L, Y)
    if mask is None:
        loss = jnp.mean(losses)
    else:
        w = mask.astype(dtype)
        c = c * w  # a masked column weighs 0
        loss = jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1)
    c = c.astype(dtype)
    grads = clipped_gradient(dZs, cache, c, compute_dtype)  # (Q5): sum_i c_i grad L_i
    if noise_std is not None:  # part of the program: a noise-free step draws nothing
        grads = add_noise(key, grads, jnp.asarray(noise_std, dtype), dtype)
    grads = checks.like_params(params, jax.tree.map(lambda g: g / jnp.asarray(divisor, dtype), grads))
    return DPGradient(loss, grads, nrm.norms, c, nrm.layer_norms)


def noise_std(sigma: float, C) -> Optional[float]:
    """The std sigma * :func:`total_clip` (C) of the noise added to the clipped sum, computed
    in float64 on the host; None for sigma = 0 (no noise is drawn)."""
    return sigma * total_clip(C) if sigma > 0 else None


def in_params_dtype(params, value):
    """``value`` (Python floats, or a NumPy float64 array) rounded ONCE to the floating dtype
    of ``params``' leaves, as the kernel's ``jnp.asarray(value, dtype)`` of a Python number
    rounds it (an argument passed as float64 would first be rounded to float32 where x64 is
    off, then again to a half-precision dtype). None stays None; params whose dtype cannot
    be read yet (refused later by the checks) leave ``value`` as float64."""
    if value is None:
        return None
    leaves = jax.tree.leaves(params)
    dtype = getattr(leaves[0], "dtype", None) if leaves else None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return np.asarray(value, dtype=np.float64)
    return np.asarray(value, dtype=np.float64).astype(dtype)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("compute_dtype",))
def _dp_value_and_grad(net, params, X, Y, key, C, mask, divisor, std, *, compute_dtype=None):
    """The checked DP-SGD gradient as ONE program per structure: the thresholds C, the
    divisor and the noise std are arguments (values), so a new l2_norm_clip or
    noise_multiplier compiles nothing; flat or per-layer clipping (C's shape), a mask or
    none, and noise or none (std None) are its structure."""
    X, Y = checks.check_problem(net, params, X, Y)
    if mask is not None and tuple(mask.shape) != (X.shape[1],):
        raise ValueError(f"mask: expected shape (m,) = ({X.shape[1]},), got {tuple(mask.shape)}.")
    if divisor is None:
        divisor = X.shape[1]
    return dp_gradient_kernel(net, params, X, Y, key, C, mask, divisor, noise_std=std,
                              compute_dtype=compute_dtype)


def dp_value_and_grad(
    net: Network, params: Params, X: Array, Y: Array, key: Array, *,
    l2_norm_clip: Clip, noise_multiplier: float, mask: Optional[Array] = None,
    divisor: Optional[float] = None, compute_dtype=None,
) -> DPGradient:
    """The DP-SGD gradient (1/D)(sum_i mask_i clip(grad L_i) + N(0, (sigma C)^2 I)).

    Arguments:
      net: the network.
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs (n[0], m); Y: targets (n[L], m).
      key: a ``jax.random`` key for the noise (one draw per parameter).
      l2_norm_clip: C > 0, the bound on each example's gradient norm ||grad L_i||
        (``float("inf")`` disables clipping); or a list of one C_l > 0 per layer
        (per-layer clipping, sensitivity sqrt(sum_l C_l^2)).
      noise_multiplier: sigma >= 0; the noise added to the sum has std sigma times the
        sensitivity.
      mask: None (every column), or (m,) booleans / 0-1 weights: the examples in the batch.
        A concrete mask with any other value (5, -1, 0.5, NaN) is refused (ValueError): the
        sensitivity C holds only for weights in {0, 1}. Under ``jit`` it is not checked.
      divisor: D, the number the noisy sum is divided by (None: m). Poisson sampling
        divides by the expected batch size q n.
      compute_dtype: operand dtype of the sweep's matrix products (None: the params').

    Returns:
      :class:`DPGradient`. Each example's contribution has norm <= the sensitivity.
      No per-example gradient is stored: memory O(m * units).

    C, the divisor and the noise std sigma C are arguments of the compiled program, not
    constants: a sweep over ``l2_norm_clip`` or ``noise_multiplier`` (adaptive clipping, a
    grid) compiles nothing new. A program is compiled per structure only: flat or per-layer
    clipping, noise or none (sigma = 0), a mask or none, shapes and dtypes.
    """
    net = checks.require_network(net)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier, net.num_layers)
    key = checks.prng_key(key)
    if divisor is not None:
        divisor = checks.real_number("divisor", divisor, low=0, low_open=True)
    if mask is not None:
        if not hasattr(mask, "shape"):
            mask = np.asarray(mask)
        if not (jnp.issubdtype(mask.dtype, jnp.bool_) or jnp.issubdtype(mask.dtype, jnp.number)):
            raise TypeError(f"mask: expected booleans or 0/1 numbers, got dtype {mask.dtype}.")
        if not isinstance(mask, jax.core.Tracer):  # concrete: the values are checked here
            values = np.asarray(mask)
            bad = ~((values == 0) | (values == 1))  # NaN is neither
            if np.any(bad):
                i = int(np.flatnonzero(np.ravel(bad))[0])
                raise ValueError(
                    f"mask: expected weights 0 or 1 only (another weight w scales example "
                    f"{i}'s clipped gradient to norm up to |w| C, beyond the sensitivity C the "
                    f"noise is scaled by), got {np.ravel(values)[i]!r} at index {i} "
                    f"({int(np.sum(bad))} of {values.size} entries outside {{0, 1}}).")
        mask = jnp.asarray(mask)
    return _dp_value_and_grad(net, params, X, Y, key, in_params_dtype(params, C), mask, divisor,
                              in_params_dtype(params, noise_std(sigma, C)),
                              compute_dtype=checks.compute_dtype(compute_dtype))


def make_dp_grad_fn(net: Network, *, l2_norm_clip: Clip, noise_multiplier: float,
                    compute_dtype=None):
    """An optax-ready gradient function ``(params, X, Y, key) -> (J, grads)`` for DP-SGD
    on a fixed batch (divided by its size m).

    The arguments are checked once, here. ``grads`` mirrors params, so a training step is
    ``J, g = grad_fn(params, X, Y, key); updates, state = opt.update(g, state, params);
    params = optax.apply_updates(params, updates)``. Use a fresh key every step. The clip and
    noise values are arguments of the compiled program (as in :func:`dp_value_and_grad`):
    functions made with other values share it.
    """
    net = checks.require_network(net)
    C, sigma = check_dp_args(l2_norm_clip, noise_multiplier, net.num_layers)
    compute_dtype = checks.compute_dtype(compute_dtype)
    std = noise_std(sigma, C)

    def grad_fn(params, X, Y, key):
        key = checks.prng_key(key)  # a bad key is named here, not deep inside jax.random
        out = _dp_value_and_grad(net, params, X, Y, key, in_params_dtype(params, C), None, None,
                                 in_params_dtype(params, std), compute_dtype=compute_dtype)
        return out.loss, out.grads

    return grad_fn


# ----------------------------------------------------------------------------- training


class DPSGD(NamedTuple):
    """The privacy settings of a DP training run (:func:`jaxmlp.train.loop.fit`'s ``dp``).

    Ask for a budget and the noise is calibrated for you::

        DPSGD(l2_norm_clip=1.0, sampling_rate=0.5, delta=1e-5, target_epsilon=2.0)

    ``jaxmlp.fit(..., epochs=E, dp=...)`` then picks sigma (:func:`calibrate_noise`) so that
    the run's E * steps_per_epoch steps spend ``target_epsilon`` (to within the bisection's
    1e-3 relative in sigma, unless sigma reaches :func:`calibrate_noise`'s lower limit 0.3,
    which then spends less than the target), never more; a given ``noise_multiplier`` is used as it is (the target is then
    only a cap). ``FitResult.privacy`` reports the epsilon spent against the target.

    Attributes:
      l2_norm_clip: C (flat) or one C_l per layer.
      noise_multiplier: sigma; None: calibrated to ``target_epsilon`` over the run.
      sampling_rate: q, each example's probability of joining a step's batch (required).
      delta: the delta epsilon is reported for, in (0, 1); below 1/n (required).
      accountant: ``"pld"`` or ``"rdp"``.
      steps_per_epoch: Poisson steps per epoch (None: round(1/q), one expected pass).
      target_epsilon: None, or the budget: training stops before an epoch that would
        spend more.
      max_batch_size: the padded batch B_max (None: :func:`padded_batch_size` for the run).
      epochs: the epochs the noise is calibrated over (None: those of the ``fit`` call).
    """

    l2_norm_clip: Clip
    noise_multiplier: Optional[float] = None
    sampling_rate: Optional[float] = None
    delta: Optional[float] = None
    accountant: str = "pld"
    steps_per_epoch: Optional[int] = None
    target_epsilon: Optional[float] = None
    max_batch_size: Optional[int] = None
    epochs: Optional[int] = None


def default_steps_per_epoch(sampling_rate: float) -> int:
    """round(1/q), at least 1: one expected pass over the data per epoch."""
    return max(1, round(1.0 / check_sampling_rate(sampling_rate)))


def check_expected_batch(q: float, num_examples: int, name: str = "sampling_rate") -> None:
    """ValueError naming ``name`` when q n < 1 (fewer than one expected example per Poisson
    batch: most batches would be empty), with the smallest rate that works, 1/n. Compared as
    q < 1/n: (1/49) * 49 rounds below 1."""
    if q < 1.0 / num_examples:
        raise ValueError(
            f"{name}: expected q n >= 1 (at least one expected example per batch), "
            f"got q = {q:g} with n = {num_examples} examples: q n = {q * num_examples:.3g} "
            f"expected examples per batch, {default_steps_per_epoch(q)} steps per epoch. The "
            f"smallest rate that works is 1/n = {1.0 / num_examples!r}.")


def check_dpsgd(dp: Any, net: Network, num_examples: int,
                epochs: Optional[int] = None) -> DPSGD:
    """Checks a :class:`DPSGD` against the network and n (a sampling rate q with q n < 1,
    mostly empty batches, is refused before any calibration); fills in its defaults. Without a
    noise multiplier, sigma is calibrated to ``dp.target_epsilon`` over ``dp.epochs`` (else
    ``epochs``, the run's) epochs of ``steps_per_epoch`` steps; the returned record holds
    that sigma and those epochs. A given ``max_batch_size`` whose overflow probability over
    the run's steps (``epochs``, else ``dp.epochs``, else one epoch, times steps_per_epoch)
    exceeds :data:`OVERFLOW_PROBABILITY` is refused (ValueError naming ``dp.max_batch_size``
    with the probability and the smallest size that meets it)."""
    if not isinstance(dp, DPSGD):
        raise TypeError(f"dp: expected a jaxmlp.privacy.DPSGD or None, got {type(dp).__name__}.")
    if dp.sampling_rate is None or dp.delta is None:
        name = "sampling_rate" if dp.sampling_rate is None else "delta"
        raise TypeError(f"{name}: DPSGD needs it (sampling_rate q in (0, 1], delta in (0, 1/n)); "
                        "got None.")
    q = check_sampling_rate(dp.sampling_rate)
    check_expected_batch(q, num_examples, "dp.sampling_rate")
    if dp.noise_multiplier is None:
        dp = _calibrated(dp, epochs)
    C, sigma = check_dp_args(dp.l2_norm_clip, dp.noise_multiplier, net.num_layers)
    if math.isinf(total_clip(C)):
        raise ValueError("l2_norm_clip: expected a finite threshold for private training, got inf.")
    delta = _delta(dp.delta)
    if delta >= 1.0 / num_examples:
        raise ValueError(f"delta: expected a value below 1/n = {1.0 / num_examples:.3g} for "
                         f"n = {num_examples} examples (delta >= 1/n allows releasing an "
                         f"example), got {delta:g}.")
    spe = (default_steps_per_epoch(q) if dp.steps_per_epoch is None
           else checks.positive_int("steps_per_epoch", dp.steps_per_epoch))
    target = (None if dp.target_epsilon is None else checks.real_number(
        "target_epsilon", dp.target_epsilon, low=0, low_open=True))
    bmax = (None if dp.max_batch_size is None
            else checks.positive_int("max_batch_size", dp.max_batch_size))
    if bmax is not None and bmax > num_examples:
        raise ValueError(f"max_batch_size: expected at most n = {num_examples}, got {bmax}.")
    run_epochs = None if dp.epochs is None else checks.positive_int("epochs", dp.epochs)
    if bmax is not None:
        _check_max_batch_size(bmax, num_examples, q,
                              (epochs if epochs is not None else run_epochs or 1) * spe)
    return DPSGD(C, sigma, q, delta, _accountant(dp.accountant), spe, target, bmax, run_epochs)


def _check_max_batch_size(bmax: int, num_examples: int, q: float, steps: int) -> None:
    """ValueError naming ``dp.max_batch_size`` when its :func:`overflow_probability` over the
    run's ``steps`` exceeds :data:`GIVEN_OVERFLOW_PROBABILITY` (the default padded size meets
    :data:`OVERFLOW_PROBABILITY`; a given one, such as a checkpoint's size continued for more
    epochs, gets the looser bound): an overflowing step trains only the lowest selected
    indices, so the batch is no longer a Poisson sample and the accountant's epsilon does not
    hold. The run's report carries the bound (``overflow_probability_bound``)."""
    p = overflow_probability(num_examples, q, bmax, steps)
    if p > GIVEN_OVERFLOW_PROBABILITY:
        need = padded_batch_size(num_examples, q, steps, GIVEN_OVERFLOW_PROBABILITY)
        default = padded_batch_size(num_examples, q, steps)
        raise ValueError(
            f"dp.max_batch_size: expected a padded batch whose overflow probability over the "
            f"run's {steps} steps is at most {GIVEN_OVERFLOW_PROBABILITY:g} (an overflowing "
            f"step drops selected examples: the batch is no longer a Poisson sample and "
            f"epsilon does not hold), got {bmax}: overflow probability {p:.3g} at q = {q:g}, "
            f"n = {num_examples}. The smallest size that meets the bound is {need} "
            f"(max_batch_size=None picks {default}, the size that meets "
            f"{OVERFLOW_PROBABILITY:g}).")


def _calibrated(dp: DPSGD, epochs: Optional[int]) -> DPSGD:
    """``dp`` with the noise multiplier that spends ``dp.target_epsilon`` over its run."""
    if dp.target_epsilon is None:
        raise ValueError("noise_multiplier: give it, or target_epsilon (the noise is then "
                         "calibrated to spend it over the run); got neither.")
    n_epochs = dp.epochs if dp.epochs is not None else epochs
    if n_epochs is None:
        raise TypeError("epochs: calibrating the noise to target_epsilon needs the run's epochs "
                        "(DPSGD(epochs=...) or fit's epochs); got None.")
    n_epochs = checks.positive_int("epochs", n_epochs)
    q = check_sampling_rate(dp.sampling_rate)
    spe = (default_steps_per_epoch(q) if dp.steps_per_epoch is None
           else checks.positive_int("steps_per_epoch", dp.steps_per_epoch))
    sigma = calibrate_noise(target_epsilon=dp.target_epsilon, delta=_delta(dp.delta),
                            sampling_rate=q, steps=n_epochs * spe,
                            accountant=_accountant(dp.accountant))
    return dp._replace(noise_multiplier=sigma, epochs=n_epochs)


# ----------------------------------------------------------------------------- a run's settings


def calibrate_run(*, num_examples: int, clip: Sequence[float], num_layers: int,
                  per_layer_clipping: bool = False, sampling_rate: Optional[float] = None,
                  expected_batch_size: Optional[float] = None,
                  noise_multiplier: Optional[float] = None,
                  target_epsilon: Optional[float] = None, delta: float = 1e-5,
                  accountant: str = "pld", epochs: Optional[int] = None,
                  steps: Optional[int] = None, data_name: Optional[str] = None) -> DPSGD:
    """The :class:`DPSGD` of a private run on n = ``num_examples`` examples.

    * q: ``sampling_rate``, or ``expected_batch_size`` / n (at most n);
    * the clip: exactly one C (flat), or with ``per_layer_clipping`` one C_l per layer
      (``num_layers`` of them) or one C split as C_l = C / sqrt(L), which keeps the
      sensitivity sqrt(sum_l C_l^2) = C;
    * the run's steps T: ``steps``, or ``epochs`` * round(1/q) (:func:`default_steps_per_epoch`);
      a resumed run passes the first run's T so that nothing below changes;
    * sigma: ``noise_multiplier`` when given (e.g. one calibrated by an earlier run), else
      :func:`calibrate_noise` so that T steps spend exactly ``target_epsilon`` at ``delta``;
    * B_max = :func:`padded_batch_size` (n, q, T).

    ``delta`` must be below 1/n. ``data_name`` is only named in the messages ("the 455
    training examples of breast_cancer").

    Returns:
      ``DPSGD(l2_norm_clip, noise_multiplier, sampling_rate, delta, accountant,
      steps_per_epoch, target_epsilon, max_batch_size)``; l2_norm_clip is a float (flat) or
      a tuple of L floats (per layer).

    Raises:
      ValueError naming the argument (``expected_batch_size``, ``delta``, ``clip``,
      ``target_epsilon``, ...): out of range, the wrong number of thresholds, neither or
      both of sampling_rate / expected_batch_size, neither noise_multiplier nor
      target_epsilon, or a target that even sigma = 1000 cannot meet in T steps.
    """
    n = checks.positive_int("num_examples", num_examples)
    L = checks.positive_int("num_layers", num_layers)
    of = f" of {data_name}" if data_name else ""
    if (sampling_rate is None) == (expected_batch_size is None):
        raise ValueError(f"sampling_rate: give it or expected_batch_size, exactly one; got "
                         f"sampling_rate={sampling_rate!r}, expected_batch_size="
                         f"{expected_batch_size!r}.")
    if sampling_rate is None:
        b = checks.real_number("expected_batch_size", expected_batch_size, low=0, low_open=True)
        if b > n:
            raise ValueError(f"expected_batch_size: expected at most the {n} training examples"
                             f"{of}, got {expected_batch_size}.")
        sampling_rate = b / n
    q = check_sampling_rate(sampling_rate)
    delta = _delta(delta)
    if delta >= 1.0 / n:
        raise ValueError(f"delta: expected a value below 1/n = {1.0 / n:.3g} ({n} training "
                         f"examples{of}), got {delta:g}.")
    clip = [checks.real_number(f"clip[{i}]", c, low=0, low_open=True)
            for i, c in enumerate(clip)]
    if per_layer_clipping:
        if len(clip) == 1:
            clip = [clip[0] / math.sqrt(L)] * L  # the same total sensitivity C
        elif len(clip) != L:
            raise ValueError(f"clip: expected 1 or {L} thresholds (one per layer of {L} layers) "
                             f"with per-layer clipping, got {len(clip)}.")
        C = tuple(clip)
    elif len(clip) != 1:
        raise ValueError(f"clip: expected one threshold (or per-layer clipping), got {len(clip)}.")
    else:
        C = clip[0]
    spe = default_steps_per_epoch(q)
    if steps is None:
        if epochs is None:
            raise TypeError("epochs: expected the run's number of epochs (or steps), got None.")
        steps = checks.positive_int("epochs", epochs) * spe
    steps = checks.positive_int("steps", steps)
    accountant = _accountant(accountant)
    if target_epsilon is not None:
        target_epsilon = checks.real_number("target_epsilon", target_epsilon, low=0,
                                            low_open=True)
    if noise_multiplier is None:
        if target_epsilon is None:
            raise ValueError("target_epsilon: give it (the noise is calibrated to it) or "
                             "noise_multiplier; got neither.")
        noise_multiplier = calibrate_noise(target_epsilon=target_epsilon, delta=delta,
                                           sampling_rate=q, steps=steps, accountant=accountant)
    sigma = checks.real_number("noise_multiplier", noise_multiplier, low=0)
    return DPSGD(C, sigma, q, delta, accountant, spe, target_epsilon,
                 padded_batch_size(n, q, steps))


def privacy_report(dp: DPSGD, num_examples: int, epochs_done: int, *, steps: int,
                   overflows: int = 0) -> dict:
    """What a run records of its privacy after ``epochs_done`` epochs (a JSON-ready dict).

    ``epsilon`` is :func:`epsilon` of the epochs_done * ``dp.steps_per_epoch`` steps taken
    at ``dp.delta``; ``overflow_probability_bound`` is :func:`overflow_probability` of
    ``dp.max_batch_size`` over the run's planned ``steps``; ``overflows`` the number of
    selected examples that did not fit the padded batch, summed over the steps taken (the
    sum of :class:`DPStepMetrics` ``overflow``, given here; nonzero means those examples
    were dropped and epsilon does not hold). ``clip`` is the list of
    thresholds (one, or one per layer with ``per_layer_clipping``). ``dp`` is a checked
    record (:func:`calibrate_run`, :func:`check_dpsgd`) with its defaults filled in.
    """
    if not isinstance(dp, DPSGD) or dp.steps_per_epoch is None or dp.max_batch_size is None:
        raise TypeError(f"dp: expected a DPSGD with steps_per_epoch and max_batch_size (from "
                        f"calibrate_run or check_dpsgd), got {dp!r}.")
    done = _steps(epochs_done) * dp.steps_per_epoch
    per_layer = isinstance(dp.l2_norm_clip, tuple)
    return {"epsilon": epsilon(noise_multiplier=dp.noise_multiplier,
                               sampling_rate=dp.sampling_rate, steps=done, delta=dp.delta,
                               accountant=dp.accountant),
            "delta": dp.delta, "noise_multiplier": dp.noise_multiplier,
            "target_epsilon": dp.target_epsilon, "sampling_rate": dp.sampling_rate,
            "expected_batch_size": dp.sampling_rate * num_examples, "steps": done,
            "steps_per_epoch": dp.steps_per_epoch, "accountant": dp.accountant,
            "clip": list(dp.l2_norm_clip) if per_layer else [dp.l2_norm_clip],
            "per_layer_clipping": per_layer, "max_batch_size": dp.max_batch_size,
            "overflow_probability_bound": overflow_probability(
                num_examples, dp.sampling_rate, dp.max_batch_size, checks.positive_int(
                    "steps", steps)),
            "overflows": int(overflows),
            "convention": "sum of clipped per-example gradients of L_i plus N(0, (sigma C)^2 I), "
                          "divided by the expected batch size q n; Poisson sampling; "
                          "add-or-remove-one neighbours"}
