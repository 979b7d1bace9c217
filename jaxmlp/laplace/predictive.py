"""The linearised (GLM) predictive (LA10), (LA11) and its negative log-likelihood.

f(x; theta) ~ z[L](x; theta*) + J (theta - theta*) under theta ~ N(theta*, P^{-1}) gives
f ~ N(z[L], Sigma), Sigma = J P^{-1} J^T (LA10, :func:`structures.functional_covariance`).

(LA11), per column, with mu = z[L] and Sigma from (LA10):

* softmax, ``"probit"``: p = softmax(mu_c / sqrt(1 + pi/8 Sigma_cc)) (MacKay 1992);
* softmax, ``"extended_probit"``: p_c proportional to
  1 / (1 + sum_{d != c} exp(-(mu_c - mu_d) / sqrt(1 + pi/8 (Sigma_cc + Sigma_dd - 2 Sigma_cd))))
  (the pairwise-sigmoid form of Daunizeau 2017, with the probit constant; it uses the
  off-diagonal covariance), columns normalised;
* sigmoid (binary, multi-label): p = sigmoid(mu / sqrt(1 + pi/8 Sigma_jj)) for both probit
  links (they coincide for one logit);
* ``"mc"``: the mean of softmax / sigmoid over n_samples draws mu + U sqrt(Lambda) eps of the
  logits (Sigma = U Lambda U^T per column);
* linear output with mean squared error (regression): the mean mu and the variance
  diag Sigma + sigma_noise^2, in closed form.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxmlp.laplace import flat, structures
from jaxmlp.nn import checks

__all__ = ["LINKS", "negative_log_likelihood", "predictive", "task"]

#: The links of classification.
LINKS = ("probit", "extended_probit", "mc")
_K = math.pi / 8.0


def task(net) -> str:
    """"softmax", "sigmoid" or "regression" for the canonical pairs; ValueError otherwise."""
    out = net.activations[-1]
    if net.fused and out in ("softmax", "sigmoid"):
        return out
    if net.fused and net.cost == "mean_squared_error":
        return "regression"
    raise ValueError(f"net: the GLM predictive is written for the canonical pairs (softmax + "
                     "categorical, sigmoid + binary / multi-label cross-entropy, linear + mean "
                     f"squared error), got output {out!r} with cost {net.cost!r}.")


@functools.partial(jax.jit, static_argnames=("link", "n_samples"))
def _predict(la, X, key, *, link, n_samples):
    kind = task(la.net)
    if kind == "regression" or link == "probit" or (kind == "sigmoid" and link != "mc"):
        mu, var = structures.functional_covariance(la, X, diagonal=True)  # (n[L], m)
        Sigma = None
    else:
        mu, Sigma = structures.functional_covariance(la, X)
        var = jnp.diagonal(Sigma, axis1=0, axis2=1).T  # (n[L], m)
    if kind == "regression":
        return mu, var + jnp.square(la.sigma_noise)
    if link == "mc":
        lam, U = jnp.linalg.eigh(jnp.moveaxis(Sigma, -1, 0))  # (m, n), (m, n, n)
        R = U * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None, :]
        eps = jax.random.normal(key, (n_samples,) + mu.T.shape, mu.dtype)  # (k, m, n)
        F = mu.T + jnp.einsum("mab,kmb->kma", R, eps)
        P = jax.nn.softmax(F, axis=-1) if kind == "softmax" else jax.nn.sigmoid(F)
        return jnp.mean(P, axis=0).T
    if kind == "sigmoid":
        return jax.nn.sigmoid(mu / jnp.sqrt(1.0 + _K * var))
    if link == "probit":
        return jax.nn.softmax(mu / jnp.sqrt(1.0 + _K * var), axis=0)
    # extended probit: pairwise differences
    dmu = mu[:, None, :] - mu[None, :, :]  # (c, d, m)
    dvar = var[:, None, :] + var[None, :, :] - 2.0 * Sigma
    off = ~jnp.eye(mu.shape[0], dtype=bool)[:, :, None]
    s = jnp.where(off, jnp.exp(-dmu / jnp.sqrt(1.0 + _K * jnp.maximum(dvar, 0.0))), 0.0)
    p = 1.0 / (1.0 + jnp.sum(s, axis=1))
    return p / jnp.sum(p, axis=0, keepdims=True)


def predictive(la, X, link=None, *, n_samples: int = 100, key=None):
    """(LA10), (LA11): class probabilities (n[L], m), or ``(mean, variance)`` for regression.

    ``link``: None (the default: "probit" for classification, the closed form for
    regression), or one of :data:`LINKS` for classification; "mc" needs ``key`` and takes
    ``n_samples`` draws. Raises ValueError / TypeError naming the argument. Runs under
    ``jax.jit`` / ``jax.vmap`` / ``jax.grad``; X's finiteness is checked when it is concrete.
    """
    kind = task(la.net)
    X = checks.check_X(la.net, X, la.temperature.dtype)
    if flat.concrete(X):
        checks.check_finite(X=X)
    if kind == "regression":
        if link is not None:
            raise ValueError(f"link: regression has the closed-form Gaussian predictive; pass "
                             f"link=None, got {link!r}.")
        if key is not None:
            raise ValueError("key: regression's predictive is closed form; got a key.")
        return _predict(la, X, None, link=None, n_samples=1)
    link = "probit" if link is None else link
    if not isinstance(link, str) or link not in LINKS:
        raise ValueError(f"link: expected one of {list(LINKS)} (or None), got {link!r}.")
    if link == "mc":
        n_samples = checks.positive_int("n_samples", n_samples)
        if key is None:
            raise ValueError("key: link='mc' draws the logits and needs a PRNG key "
                             "(jax.random.key(seed)), got None.")
        key = checks.prng_key(key)
    elif key is not None:
        raise ValueError(f"key: only link='mc' draws samples, got a key with link={link!r}.")
    else:
        n_samples = 1
    return _predict(la, X, key, link=link, n_samples=n_samples)


def negative_log_likelihood(net, prediction, Y) -> float:
    """Mean over the m columns of -log p(y | x) of a predictive: class probabilities
    (n[L], m) for softmax (categorical) and sigmoid (per unit Bernoulli, summed over units);
    ``(mean, variance)`` for regression (Gaussian). Y is (n[L], m)."""
    kind = task(net)
    eps = jnp.finfo(jnp.result_type(Y)).tiny if jnp.issubdtype(jnp.result_type(Y), jnp.floating) else 1e-300
    if kind == "regression":
        mu, var = prediction
        ll = -0.5 * (jnp.log(2 * math.pi * var) + jnp.square(Y - mu) / var)
    elif kind == "softmax":
        ll = Y * jnp.log(jnp.maximum(prediction, eps))
    else:
        ll = (Y * jnp.log(jnp.maximum(prediction, eps))
              + (1.0 - Y) * jnp.log(jnp.maximum(1.0 - prediction, eps)))
    return float(-jnp.mean(jnp.sum(ll, axis=0)))
