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

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.laplace import evidence, predictive
from jaxmlp.nn import checks
from jaxmlp.nn.scalars import real_number

__all__ = ["METHODS", "optimize_prior_precision"]

METHODS = ("marglik", "grid")


@functools.partial(jax.jit, static_argnames=("steps", "fit_sigma"))
def _adam(la, rho, s, lr, *, steps, fit_sigma):
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


def _with_eigenvalues(la):
    """full / last_layer with a scalar prior: G's eigenvalues once, so that each ascent step's
    log det P and tr P^{-1} (LA7) are sums over h lambda + delta, not a Cholesky factor."""
    if la.structure not in ("full", "last_layer") or la.prior_kind != "scalar":
        return la
    eig = jnp.maximum(jnp.linalg.eigvalsh(la.curvature["ggn"]), 0.0)
    return la.replace(curvature={**la.curvature, "eig": eig})


def optimize_prior_precision(la, method: str = "marglik", *, steps: int = 300,
                             learning_rate: float = 0.1, fit_sigma_noise: bool = False,
                             X_val=None, Y_val=None, grid=None, link=None):
    """A new posterior with the prior precision (of the posterior's kind) chosen by ``method``.

    ``"marglik"``: ``steps`` Adam steps (``learning_rate``) on log prior precision, and on
    log sigma_noise with ``fit_sigma_noise=True`` (mean squared error only), maximising
    (LA6) with the gradients (LA8), (LA9). ``"grid"``: a scalar prior precision from ``grid``
    (default ``np.logspace(-4, 4, 41)``) minimising the validation NLL of the predictive
    with ``link`` on ``X_val`` (n[0], m), ``Y_val`` (n[L], m).
    Raises ValueError / TypeError naming the argument; ValueError if the result is not finite.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}.")
    if method == "marglik":
        steps = checks.positive_int("steps", steps)
        lr = real_number("learning_rate", learning_rate, low=0.0, low_open=True)
        if not isinstance(fit_sigma_noise, bool):
            raise TypeError(f"fit_sigma_noise: expected a bool, got {fit_sigma_noise!r}.")
        if fit_sigma_noise and la.net.cost != "mean_squared_error":
            raise ValueError(f"fit_sigma_noise: only mean_squared_error has a noise scale, the "
                             f"cost is {la.net.cost!r}.")
        for name, v in (("X_val", X_val), ("Y_val", Y_val), ("grid", grid), ("link", link)):
            if v is not None:
                raise ValueError(f"{name}: only method='grid' uses it, got method='marglik'.")
        rho, s, trace = _adam(_with_eigenvalues(la), jnp.log(la.prior_precision), jnp.log(la.sigma_noise),
                              jnp.asarray(lr, la.temperature.dtype), steps=steps,
                              fit_sigma=fit_sigma_noise)
        if not (bool(jnp.all(jnp.isfinite(rho))) and bool(jnp.isfinite(s))):
            raise ValueError(f"optimize_prior_precision: the evidence ascent left non-finite values "
                             f"(learning_rate={lr}); last log marginal likelihoods "
                             f"{np.asarray(trace[-3:])}.")
        return la.replace(prior_precision=jnp.exp(rho), sigma_noise=jnp.exp(s))
    if X_val is None or Y_val is None:
        raise ValueError("X_val, Y_val: method='grid' needs a validation split, got "
                         f"X_val={type(X_val).__name__}, Y_val={type(Y_val).__name__}.")
    if fit_sigma_noise:
        raise ValueError("fit_sigma_noise: only method='marglik' fits the noise scale.")
    dtype = la.temperature.dtype
    X_val = checks.check_X(la.net, X_val, dtype)
    Y_val = checks.check_Y(la.net, Y_val, X_val.shape[1], dtype)
    checks.check_finite(X_val=X_val, Y_val=Y_val)
    grid = np.logspace(-4, 4, 41) if grid is None else np.asarray(grid, np.float64)
    if grid.ndim != 1 or grid.size < 1 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"grid: expected a 1-D array of positive finite precisions, got "
                         f"{grid!r}.")
    key = jax.random.key(0) if link == "mc" else None
    nlls = []
    for d in grid:
        cand = la.with_prior(float(d))
        nlls.append(predictive.negative_log_likelihood(
            la.net, predictive.predictive(cand, X_val, link, key=key), Y_val))
    return la.with_prior(float(grid[int(np.nanargmin(nlls))]))
