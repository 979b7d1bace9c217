"""Laplace approximations of a trained network (docs/laplace.md, equations (LA1)-(LA12)).

``laplace(net, params, X, Y, structure=...)`` fits N(theta*, P^{-1}) with
P = G / (T sigma^2) + P0 (G: the GGN of the summed loss, from the recurrences' curvature
quantities) in the structures "diag", "kron", "full" and "last_layer", and returns a
:class:`Posterior` with ``log_marginal_likelihood``, ``predictive`` (the linearised GLM
predictive), ``functional_covariance`` and ``sample``; ``optimize_prior_precision`` fits the
prior precision (and the noise scale) by the evidence or by a validation grid.

    fitting.py      laplace(): one pass over the data, minibatch sums       (LA2)-(LA5)
    posterior.py    Posterior: the pytree at the boundary                  (LA1), (LA2)
    structures.py   per structure: log det, diag P^{-1}, J P^{-1} J^T, samples  (LA7), (LA10), (LA12)
    evidence.py     the log marginal likelihood and its gradient           (LA6), (LA8), (LA9)
    predictive.py   probit / extended probit / Monte Carlo, regression     (LA11)
    prior.py        optimize_prior_precision: evidence ascent, validation grid
    trained.py      from_fit: the posterior of a jaxmlp.fit result, prior by the evidence
    flat.py         the parameter ordering and the prior precision's kinds (LA1)
"""

from jaxmlp.laplace.fitting import FULL_MAX_PARAMS, laplace
from jaxmlp.laplace.flat import flatten, unflatten
from jaxmlp.laplace.posterior import Posterior
from jaxmlp.laplace.predictive import LINKS, negative_log_likelihood
from jaxmlp.laplace.prior import optimize_prior_precision
from jaxmlp.laplace.structures import STRUCTURES
from jaxmlp.laplace.trained import from_fit

__all__ = ["FULL_MAX_PARAMS", "LINKS", "Posterior", "STRUCTURES", "flatten", "from_fit",
           "laplace", "negative_log_likelihood", "optimize_prior_precision", "unflatten"]
