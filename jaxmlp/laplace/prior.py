"""Choosing the prior precision (and the noise scale): evidence ascent or a validation grid.

``method="marglik"``: Adam ascent on (rho, log sigma) of the log marginal likelihood (LA6),
with its hand-derived gradient (LA8), (LA9); the curvature is fixed, so each step is the
structure's log det / trace (LA7) (eigenvalues only for "diag" and "kron", and for "full" and
"last_layer" with a scalar prior, whose G is eigendecomposed once before the ascent).
``method="grid"``: the scalar prior precision of a grid whose GLM predictive (LA11) has the
smallest negative log-likelihood on a validation split.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.laplace import evidence, predictive
from jaxmlp.laplace.posterior import Posterior
from jaxmlp.nn import checks
from jaxmlp.nn.scalars import real_number

__all__ = ["METHODS", "optimize_prior_precision"]

METHODS = ("marglik", "grid")


@functools.partial(jax.jit, static_argnames=("steps", "fit_sigma"))
def _adam(la, rho, s, lr, *, steps, fit_sigma):
    """Adam on x = (rho, log sigma) in the dtype of ``rho`` (the caller's: float32 at least,
    so eps = 1e-8 and 1 - 0.999^t are not rounded to 0 as in float16 / bfloat16)."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    x0 = jnp.concatenate([jnp.ravel(rho), jnp.reshape(s, (1,))])
    mask = jnp.ones_like(x0).at[-1].set(1.0 if fit_sigma else 0.0)

    def split(x):
        return x[:-1].reshape(rho.shape), x[-1]

    def step(carry, t):
        x, m, v = carry
        lml, g_rho, g_s = evidence.log_marginal_likelihood_and_grad(la, *split(x))
        g = -jnp.concatenate([jnp.ravel(g_rho), jnp.reshape(g_s, (1,))]) * mask
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh = m / (1 - b1 ** t)
        vh = v / (1 - b2 ** t)
        return (x - lr * mh / (jnp.sqrt(vh) + eps), m, v), lml

    (x, _, _), trace = jax.lax.scan(step, (x0, jnp.zeros_like(x0), jnp.zeros_like(x0)),
                                    jnp.arange(1, steps + 1, dtype=x0.dtype))
    return (*split(x), trace)


def _widened(la, wide):
    """The posterior with every floating leaf in ``wide`` (float16 / bfloat16 -> float32)."""
    return jax.tree.map(lambda a: a.astype(wide) if jnp.issubdtype(a.dtype, jnp.floating)
                        else a, la)


def _with_eigenvalues(la):
    """full / last_layer with a scalar prior: G's eigenvalues once, so that each ascent step's
    log det P and tr P^{-1} (LA7) are sums over h lambda + delta, not a Cholesky factor."""
    if la.structure not in ("full", "last_layer") or la.prior_kind != "scalar":
        return la
    eig = jnp.maximum(jnp.linalg.eigvalsh(la.curvature["ggn"]), 0.0)
    return la.replace(curvature={**la.curvature, "eig": eig})


def _ascent(la, steps, lr, *, fit_sigma):
    """``steps`` Adam steps on (LA6) in float32 at least; the posterior with the result in
    its own dtype."""
    dtype = la.temperature.dtype
    wide = jnp.promote_types(dtype, jnp.float32)
    rho, s, trace = _adam(_widened(_with_eigenvalues(la), wide),
                          jnp.log(la.prior_precision.astype(wide)),
                          jnp.log(la.sigma_noise.astype(wide)),
                          jnp.asarray(lr, wide), steps=steps, fit_sigma=fit_sigma)
    delta, sigma = jnp.exp(rho).astype(dtype), jnp.exp(s).astype(dtype)
    if not (bool(jnp.all(jnp.isfinite(delta)) & jnp.all(delta > 0))
            and bool(jnp.isfinite(sigma) & (sigma > 0))):
        raise ValueError(f"optimize_prior_precision: the evidence ascent left non-finite "
                         f"values or values that {jnp.dtype(dtype).name} rounds to 0 "
                         f"(learning_rate={lr}); last log marginal likelihoods "
                         f"{np.asarray(trace[-3:])}.")
    return la.replace(prior_precision=delta, sigma_noise=sigma)


def _check_grid(grid) -> np.ndarray:
    if grid is None:
        return np.logspace(-4, 4, 41)
    try:
        g = np.asarray(grid)
    except (TypeError, ValueError):
        g = None
    if g is None or g.dtype == bool or not (jnp.issubdtype(g.dtype, jnp.floating)
                                            or jnp.issubdtype(g.dtype, jnp.integer)):
        raise ValueError(f"grid: expected a 1-D array of positive finite precisions, got "
                         f"{grid!r}.")
    g = g.astype(np.float64)
    if g.ndim != 1 or g.size < 1 or not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ValueError(f"grid: expected a 1-D array of positive finite precisions, got "
                         f"{grid!r}.")
    return g


def optimize_prior_precision(la, method: str = "marglik", *, steps: Optional[int] = None,
                             learning_rate: Optional[float] = None,
                             fit_sigma_noise: bool = False,
                             X_val=None, Y_val=None, grid=None, link=None):
    """A new posterior with the prior precision (of the posterior's kind) chosen by ``method``.

    ``"marglik"``: ``steps`` (None: 300) Adam steps of ``learning_rate`` (None: 0.1) on log
    prior precision, and on log sigma_noise with ``fit_sigma_noise=True`` (mean squared error
    only), maximising (LA6) with the gradients (LA8), (LA9); the ascent runs in float32 (or
    the posterior's dtype if wider) and its result is rounded to the posterior's dtype.
    ``"grid"``: a scalar prior precision from ``grid`` (default ``np.logspace(-4, 4, 41)``)
    minimising the validation NLL of the predictive with ``link`` on ``X_val`` (n[0], m),
    ``Y_val`` (n[L], m) (finite, inside the cost's domain). Each method refuses, by name, an
    argument only the other one uses.
    Raises ValueError / TypeError naming the argument; ValueError if the result is not finite.
    """
    if not isinstance(la, Posterior):
        raise TypeError(f"la: expected a Posterior (jaxmlp.laplace.laplace), got "
                        f"{type(la).__name__}.")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}.")
    if not isinstance(fit_sigma_noise, bool):
        raise TypeError(f"fit_sigma_noise: expected a bool, got {fit_sigma_noise!r}.")
    if method == "marglik":
        for name, v in (("X_val", X_val), ("Y_val", Y_val), ("grid", grid), ("link", link)):
            if v is not None:
                raise ValueError(f"{name}: only method='grid' uses it, got method='marglik'.")
        steps = checks.positive_int("steps", 300 if steps is None else steps)
        lr = real_number("learning_rate", 0.1 if learning_rate is None else learning_rate,
                         low=0.0, low_open=True)
        if fit_sigma_noise and la.net.cost != "mean_squared_error":
            raise ValueError(f"fit_sigma_noise: only mean_squared_error has a noise scale, the "
                             f"cost is {la.net.cost!r}.")
        return _ascent(la, steps, lr, fit_sigma=fit_sigma_noise)
    for name, v in (("steps", steps), ("learning_rate", learning_rate)):
        if v is not None:
            raise ValueError(f"{name}: only method='marglik' uses it, got method='grid'.")
    if fit_sigma_noise:
        raise ValueError("fit_sigma_noise: only method='marglik' fits the noise scale.")
    if X_val is None or Y_val is None:
        raise ValueError("X_val, Y_val: method='grid' needs a validation split, got "
                         f"X_val={type(X_val).__name__}, Y_val={type(Y_val).__name__}.")
    dtype = la.temperature.dtype
    try:  # the shared checks name X and Y: here they are the validation split's
        X_val = checks.check_X(la.net, X_val, dtype)
        Y_val = checks.check_Y(la.net, Y_val, X_val.shape[1], dtype)
    except (TypeError, ValueError) as e:
        text = str(e)
        name = "X_val" if text.startswith("X:") else "Y_val" if text.startswith("Y:") else None
        if name is None:
            raise
        raise type(e)(f"{name}:{text[2:]}") from None
    checks.check_finite(X_val=X_val, Y_val=Y_val)
    la.net.cost_fn.check_targets(Y_val, name="Y_val")  # inside the cost's domain, as laplace
    grid = _check_grid(grid)
    key = jax.random.key(0) if link == "mc" else None
    nlls = []
    for d in grid:
        cand = la.with_prior(float(d))
        nlls.append(predictive.negative_log_likelihood(
            la.net, predictive.predictive(cand, X_val, link, key=key), Y_val))
    return la.with_prior(float(grid[int(np.nanargmin(nlls))]))
