"""A Laplace approximation of a trained result: :func:`from_fit`.

``jaxmlp.fit`` returns a ``FitResult`` whose ``state.params`` is the MAP (the last good
state); :func:`from_fit` fits :func:`jaxmlp.laplace.laplace` there on the training split
and chooses the prior precision and, for mean squared error, the noise scale (each unless
given) by the evidence (LA6) with the gradient (LA8), (LA9). The result is duck-typed
(anything with ``.state.params``, ``.params``, or a params list itself), so this package
does not import the training package (docs/architecture.md).
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from jaxmlp.laplace.fitting import laplace
from jaxmlp.laplace.posterior import Posterior
from jaxmlp.laplace.prior import optimize_prior_precision
from jaxmlp.nn.network import Network
from jaxmlp.nn.scalars import positive_int

__all__ = ["from_fit"]


def _params_of(result):
    status = getattr(result, "status", None)
    if status == "diverged":
        raise ValueError("result: the training diverged (status 'diverged'); a Laplace "
                         "approximation expands around a trained optimum, refit first.")
    state = getattr(result, "state", None)
    params = getattr(state, "params", None) if state is not None else getattr(
        result, "params", result)
    if not isinstance(params, (list, tuple)) or not all(
            isinstance(p, dict) and set(p) == {"W", "b"} for p in params):
        raise TypeError(f"result: expected a FitResult (jaxmlp.fit), a TrainState or params "
                        f"[{{'W', 'b'}}, ...], got {type(result).__name__}.")
    return params


def from_fit(net: Network, result, X, Y, *, structure: str = "kron",
             prior_precision=None, sigma_noise: Optional[float] = None,
             temperature: float = 1.0, batch_size: Optional[int] = None,
             mc_samples: Optional[int] = None, key=None, steps: int = 300) -> Posterior:
    """The Laplace posterior at a trained result's params, prior chosen by the evidence.

    Arguments:
      net: the network trained. result: a ``FitResult`` (its ``state.params``), a
        ``TrainState`` or params; a diverged result is refused. An ensemble's stacked params
        are refused, naming the member to take (fit one member's params).
      X, Y: the training split (n[0], n_data), (n[L], n_data) the posterior conditions on.
      structure, temperature, batch_size, mc_samples, key: as :func:`laplace`.
      prior_precision: None (default): a scalar chosen by ``steps`` steps of the evidence
        ascent (LA6), (LA8) from 1; otherwise that prior (any kind :func:`laplace` takes),
        not optimised.
      sigma_noise: the Gaussian noise scale of mean squared error (the cross-entropies take
        only None or 1); a number: that noise scale, not optimised. None (default): with
        ``prior_precision=None``, for mean squared error chosen together with the prior by
        the evidence (LA9), from the training residuals' root mean square; with a given
        prior, refused for mean squared error (ValueError naming ``sigma_noise``: the noise
        scale would silently be 1 in the predictive variance), 1 for the cross-entropies.

    Returns:
      a :class:`Posterior`.
    """
    params = _params_of(result)
    W1 = getattr(params[0]["W"], "ndim", None) if isinstance(params, (list, tuple)) and params \
        and isinstance(params[0], dict) and "W" in params[0] else None
    if W1 == 3:  # an ensemble's stacked params: (K, n[l], n[l-1])
        raise ValueError(
            f"result: an ensemble's params (K = {params[0]['W'].shape[0]} members stacked on a "
            "leading axis); a posterior is of one network: fit one member's, e.g. "
            "from_fit(net, jax.tree.map(lambda a: a[k], params), X, Y).")
    steps = positive_int("steps", steps)
    fit_prior = prior_precision is None
    if net.cost == "mean_squared_error" and sigma_noise is None and not fit_prior:
        raise ValueError(
            "sigma_noise: a regression posterior with a given prior_precision needs its noise "
            "scale (it enters the predictive variance): pass sigma_noise=... (for instance the "
            "training residuals' root mean square), or prior_precision=None to choose both by "
            "the evidence; got None.")
    fit_sigma = net.cost == "mean_squared_error" and sigma_noise is None and fit_prior
    la = laplace(net, params, X, Y, structure=structure,
                 prior_precision=1.0 if fit_prior else prior_precision, temperature=temperature,
                 sigma_noise=1.0 if sigma_noise is None else sigma_noise,
                 batch_size=batch_size, mc_samples=mc_samples, key=key)
    if fit_sigma:  # 0.5 sum ||a - y||^2 = la.loss: residual mean square per output
        sigma = float(jnp.sqrt(2.0 * la.loss / (la.n_data * net.sizes[-1])))
        la = la.with_prior(sigma_noise=max(sigma, 1e-6))
    if fit_prior:
        return optimize_prior_precision(la, "marglik", steps=steps, fit_sigma_noise=fit_sigma)
    return la
