"""The Laplace posterior N(theta*, P^{-1}) at the boundary: one pytree (LA1)-(LA5).

:class:`Posterior` is a frozen dataclass registered as a JAX pytree: its arrays (the MAP
params, the curvature of its structure, the prior precision, temperature, noise scale and
the summed loss at the MAP) are leaves; the network, the structure, the prior's kind and
the number of training examples are static. It can be passed through ``jax.jit`` and
``jax.tree.map``; :func:`dataclasses.replace` (or :meth:`Posterior.replace`) gives a new
posterior with another prior precision or noise scale without refitting.

The posterior precision is (LA2)
    P = h G + P0,   h = 1 / (temperature * sigma_noise^2),
where G = sum_i J_i^T H_i J_i is the GGN of the SUMMED loss over the n_data training
examples (not of the mean the training cost J uses) and P0 = diag(prior precision);
``curvature`` holds G in the form of the structure:

============  ====================================================================  =====
structure     ``curvature``                                                         eq.
============  ====================================================================  =====
diag          ``{"ggn": (P,)}``: diag G in the order (LA1)                          (LA3)
kron          ``{"eig_A", "U_A", "eig_G", "U_G"}``: per layer the eigendecomposition (LA4)
              of A = (1/n_data) sum_i abar abar^T and G = sum_i sum_c q q^T
full          ``{"ggn": (P, P)}``                                                   (LA5)
last_layer    ``{"ggn": (P_L, P_L)}``, the GGN of layer L's [W b] alone              (LA5)
============  ====================================================================  =====
"""

from __future__ import annotations

import dataclasses
import functools

import jax

from jaxmlp.laplace import evidence, predictive, structures
from jaxmlp.laplace.flat import check_prior_precision
from jaxmlp.nn import checks
from jaxmlp.nn.network import Network

__all__ = ["Posterior"]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["params", "curvature", "prior_precision", "temperature", "sigma_noise", "loss"],
    meta_fields=["net", "structure", "prior_kind", "n_data"],
)
@dataclasses.dataclass(frozen=True)
class Posterior:
    """A Laplace approximation N(theta*, P^{-1}) (LA1), P = h G + P0 (LA2).

    Attributes:
      net: the network (static). structure: "diag", "kron", "full" or "last_layer".
      prior_kind: "scalar", "layer" or "parameter" (the shape of ``prior_precision``:
        (), (number of layers,) or (P,) in the order (LA1)).
      n_data: the number of training examples the curvature sums over.
      params: the MAP ``[{"W", "b"}, ...]`` (the mean of the posterior).
      curvature: G in the structure's form (module docstring).
      prior_precision, temperature, sigma_noise: arrays; sigma_noise is 1 for classification.
      loss: sum_i L_i at the MAP over the training set (the cost's per-example losses;
        for mean squared error 0.5 sum ||a - y||^2).
    """

    net: Network
    structure: str
    prior_kind: str
    n_data: int
    params: list
    curvature: dict
    prior_precision: jax.Array
    temperature: jax.Array
    sigma_noise: jax.Array
    loss: jax.Array

    @property
    def layers(self) -> list:
        """The 0-based layers the posterior covers: all, or [L-1] for "last_layer"."""
        return structures.layers(self)

    @property
    def num_params(self) -> int:
        """P, the number of parameters with a posterior (LA1)."""
        return structures.num_params(self)

    def replace(self, **changes) -> "Posterior":
        """A copy with fields changed (no check: use :meth:`with_prior`)."""
        return dataclasses.replace(self, **changes)

    def with_prior(self, prior_precision=None, sigma_noise=None) -> "Posterior":
        """A copy with a new prior precision (any kind the structure takes) and/or noise
        scale (mean squared error only), checked like :func:`jaxmlp.laplace.laplace`'s."""
        out = self
        dtype = self.temperature.dtype
        if prior_precision is not None:
            kind, arr = check_prior_precision(self.net, prior_precision, self.structure,
                                              self.layers, dtype)
            out = dataclasses.replace(out, prior_kind=kind, prior_precision=arr)
        if sigma_noise is not None:
            out = dataclasses.replace(out, sigma_noise=structures.check_sigma_noise(
                self.net, sigma_noise, dtype))
        return out

    def log_marginal_likelihood(self, prior_precision=None, sigma_noise=None) -> jax.Array:
        """(LA6) the Laplace evidence log p(D | prior) at this posterior, or at another
        prior precision / noise scale (the curvature is reused, nothing is refitted).
        A scalar array."""
        return evidence.log_marginal_likelihood(self.with_prior(prior_precision, sigma_noise))

    def predictive(self, X, link=None, *, n_samples: int = 100, key=None):
        """(LA10), (LA11) the linearised (GLM) predictive at the columns of X (n[0], m).

        Classification: class probabilities (n[L], m) with ``link`` "probit" (default),
        "extended_probit" or "mc" (``n_samples`` draws of the logits, needs ``key``).
        Regression (linear output, mean squared error): ``(mean, variance)``, each
        (n[L], m); variance = J P^{-1} J^T's diagonal + sigma_noise^2.
        """
        return predictive.predictive(self, X, link, n_samples=n_samples, key=key)

    def functional_covariance(self, X):
        """(LA10) ``(mean, Sigma)``: z[L] (n[L], m) and Sigma (n[L], n[L], m), column i
        J_i P^{-1} J_i^T with J_i = dz[L]_i / dtheta (no Jacobian materialised for diag
        and kron)."""
        X = checks.check_X(self.net, X, self.temperature.dtype)
        checks.check_finite(X=X)
        return structures.functional_covariance(self, X)

    def sample(self, key, n: int) -> list:
        """(LA12) n parameter samples theta ~ N(theta*, P^{-1}): params-shaped with a leading
        axis n on every leaf (layers outside "last_layer" repeat the MAP)."""
        key = checks.prng_key(key)
        n = checks.positive_int("n", n)
        return structures.sample(self, key, n)
