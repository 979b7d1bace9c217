"""The Laplace evidence (LA6) and its hand-derived gradient (LA8), (LA9).

    log p(D | delta, sigma) ~= -h sum_i L_i(theta*) - c(sigma)
                               - 1/2 [log det P - sum_p log delta_p + sum_p delta_p theta*_p^2]   (LA6)

with h = 1/(T sigma^2) (LA2), c = n_data n[L] log(sigma sqrt(2 pi)) for mean squared error
(the Gaussian likelihood's normaliser, not tempered, as laplace-torch) and 0 for the
cross-entropies, P = h G + P0 and log det P from the structure (LA7) (for "kron" from the
eigenvalues alone). The prior mean is 0. With rho_g = log delta_g for each prior group g
(n_g parameters, t_g = sum over the group of diag P^{-1}):

    d/d rho_g  = -1/2 (delta_g t_g - n_g + delta_g ||theta*_g||^2)                               (LA8)
    d/d log sigma = 2 h sum_i L_i - n_data n[L] + (P - sum_g delta_g t_g)                        (LA9)

(LA9) from d log det P / d log sigma = tr(P^{-1} (-2 h G)) = -2 tr(P^{-1} (P - P0)). No autodiff.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmlp.laplace import flat, structures

__all__ = ["log_marginal_likelihood", "log_marginal_likelihood_and_grad"]


def _normaliser(la, sigma):
    if la.net.cost != "mean_squared_error":
        return jnp.zeros((), sigma.dtype), jnp.zeros((), sigma.dtype)
    c = la.n_data * la.net.sizes[-1]
    return c * structures.log_two_pi_sigma(sigma), jnp.asarray(c, sigma.dtype)


@functools.partial(jax.jit)
def log_marginal_likelihood_and_grad(la, log_delta, log_sigma):
    """(LA6), (LA8), (LA9): ``(lml, d lml / d log_delta, d lml / d log_sigma)`` at prior
    precision exp(log_delta) (the prior's kind: shape () / (layers,) / (P,)) and noise
    scale exp(log_sigma) (0 for the cross-entropies, whose derivative is then returned as 0)."""
    delta = jnp.exp(log_delta)
    sigma = jnp.exp(log_sigma)
    h = structures.scale(la, sigma)
    logdet, t = structures.precision_terms(la, delta, h)
    th = structures.theta(la)
    groups = jnp.asarray(flat.prior_groups(la.net, la.prior_kind, structures.layers(la)))
    k = structures.num_groups(la)
    n_g = jax.ops.segment_sum(jnp.ones_like(th), groups, num_segments=k)
    sq_g = jax.ops.segment_sum(th * th, groups, num_segments=k)
    d = jnp.broadcast_to(delta, (k,)) if delta.ndim == 0 else delta
    log_prior_det = jnp.sum(n_g * jnp.log(d))
    scatter = jnp.sum(d * sq_g)
    norm, c = _normaliser(la, sigma)
    lml = -h * la.loss - norm - 0.5 * (logdet - log_prior_det + scatter)
    g_rho = -0.5 * (d * t - n_g + d * sq_g)
    g_rho = jnp.sum(g_rho) if delta.ndim == 0 else g_rho
    P = th.shape[0]
    g_sigma = jnp.where(c > 0, 2.0 * h * la.loss - c + (P - jnp.sum(d * t)), 0.0)
    return lml, g_rho, g_sigma


def log_marginal_likelihood(la) -> jax.Array:
    """(LA6) at the posterior's own prior precision and noise scale; a scalar array.
    Raises ValueError if it is not finite (it is for finite data and positive precisions);
    a traced value (under ``jax.jit`` / ``jax.vmap`` / ``jax.grad``) is returned unchecked."""
    lml = log_marginal_likelihood_and_grad(la, jnp.log(la.prior_precision),
                                           jnp.log(la.sigma_noise))[0]
    if flat.concrete(lml) and not bool(jnp.isfinite(lml)):
        raise ValueError(f"log_marginal_likelihood: got {float(lml)} (prior_precision "
                         f"{la.prior_precision}, sigma_noise {float(la.sigma_noise)}); the "
                         "posterior precision is not positive definite in this precision.")
    return lml
