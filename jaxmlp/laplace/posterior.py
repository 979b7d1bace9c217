"""The Laplace posterior N(theta*, P^{-1}) at the boundary: one pytree (LA1)-(LA5).

:class:`Posterior` is a frozen dataclass registered as a JAX pytree: its arrays (the MAP
params, the curvature of its structure, the prior precision, temperature, noise scale and
the summed loss at the MAP) are leaves; the network, the structure, the prior's kind and
the number of training examples are static. It can be passed through ``jax.jit`` and
``jax.tree.map``, and its methods run under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (the
value checks, finite X, positive prior precision, finite evidence, only on concrete inputs;
shape and dtype checks always); :func:`dataclasses.replace` (or :meth:`Posterior.replace`)
gives a new posterior with another prior precision or noise scale without refitting.

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

:meth:`Posterior.to_arrays` and :meth:`Posterior.from_arrays` write the posterior as named
NumPy arrays and its three static scalars / strings, and rebuild it (checked) from them:
what :func:`jaxmlp.data.export.save_posterior` stores.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.laplace import evidence, flat, predictive, structures
from jaxmlp.laplace.flat import check_prior_precision
from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.nn.scalars import real_number
from jaxmlp.quantities import curvature as curvature_lib

__all__ = ["Posterior"]

#: The curvature arrays of each structure, per layer for "kron" (named ``eig_A[l]`` ...,
#: l = 1..L as in a model export); "full" / "last_layer" with a scalar prior may also hold
#: ``eig``, G's eigenvalues (added by the evidence ascent).
_CURVATURE_NAMES = {"diag": ("ggn",), "kron": ("eig_A", "U_A", "eig_G", "U_G"),
                    "full": ("ggn",), "last_layer": ("ggn",)}
_SCALARS = ("temperature", "sigma_noise", "loss")


def _array_shapes(net: Network, structure: str, prior_kind: str, with_eig: bool) -> dict:
    """name -> shape of every array :meth:`Posterior.to_arrays` writes (module docstring)."""
    shapes = {}
    for l, layer in enumerate(net.param_shapes(), start=1):
        shapes.update({f"W[{l}]": tuple(layer["W"]), f"b[{l}]": tuple(layer["b"])})
    L = net.num_layers
    layers = [L - 1] if structure == "last_layer" else list(range(L))
    P = sum(r * c for r, c in flat.block_sizes(net, layers))
    if structure == "kron":
        for l, (r, c) in enumerate(flat.block_sizes(net, layers), start=1):
            shapes.update({f"eig_A[{l}]": (c,), f"U_A[{l}]": (c, c), f"eig_G[{l}]": (r,),
                           f"U_G[{l}]": (r, r)})
    else:
        shapes["ggn"] = (P,) if structure == "diag" else (P, P)
        if with_eig:
            shapes["eig"] = (P,)
    shapes["prior_precision"] = {"scalar": (), "layer": (len(layers),),
                                 "parameter": (P,)}[prior_kind]
    shapes.update({k: () for k in _SCALARS})
    return shapes


def _check_eig(ggn: np.ndarray, eig: np.ndarray) -> None:
    """``eig`` must be G's eigenvalues in ascending order (the negative ones clipped at 0 or
    not): within sqrt(eps) max|lambda| of those of ``ggn``, recomputed in float64."""
    ref = np.linalg.eigvalsh(ggn.astype(np.float64))
    got = eig.astype(np.float64)
    eps = float(jnp.finfo(eig.dtype).eps)
    tol = np.sqrt(eps) * max(float(np.max(np.abs(ref))), float(jnp.finfo(eig.dtype).tiny))
    diff = np.abs(got - ref)
    err = float(np.max(np.where(ref < 0, np.minimum(diff, np.abs(got)), diff)))
    if err > tol:
        raise ValueError(f"arrays: eig is not the ascending eigenvalues of ggn (largest "
                         f"difference {err:.3g}, tolerance {tol:.3g}).")


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

    def to_arrays(self) -> tuple[dict, dict]:
        """``(fields, arrays)``: the static fields but the network as JSON values
        (``{"structure", "prior_kind", "n_data"}``) and every leaf as a NumPy array of its
        dtype, by name: the MAP ``W[l]``, ``b[l]`` (l = 1..L, as a model export names
        them), ``prior_precision`` (shape (), (layers,) or (P,)), ``temperature``,
        ``sigma_noise``, ``loss`` (shape ()) and the curvature: ``ggn`` (diag (P,); full,
        last_layer (P, P); with ``eig`` (P,) where the evidence ascent added it) or, for
        kron, per layer ``eig_A[l]`` (n[l-1]+1,), ``U_A[l]``, ``eig_G[l]`` (n[l],), ``U_G[l]``
        (LA4). :meth:`from_arrays` inverts it, bit for bit."""
        arrays = {}
        for l, layer in enumerate(self.params, start=1):
            arrays.update({f"W[{l}]": layer["W"], f"b[{l}]": layer["b"]})
        cv = self.curvature
        if self.structure == "kron":
            for name in _CURVATURE_NAMES["kron"]:
                arrays.update({f"{name}[{l}]": a for l, a in enumerate(cv[name], start=1)})
        else:
            arrays.update({k: cv[k] for k in ("ggn", "eig") if k in cv})
        arrays["prior_precision"] = self.prior_precision
        arrays.update({k: getattr(self, k) for k in _SCALARS})
        arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}
        return ({"structure": self.structure, "prior_kind": self.prior_kind,
                 "n_data": int(self.n_data)}, arrays)

    @classmethod
    def from_arrays(cls, net: Network, fields: dict, arrays: dict) -> "Posterior":
        """The posterior that :meth:`to_arrays` wrote, for ``net``: ``fields`` holds
        ``structure``, ``prior_kind``, ``n_data``; ``arrays`` the named arrays, every one
        floating-point of the MAP's dtype and finite, of the shapes ``net`` and the
        structure give (the prior precision positive, the temperature positive, the noise
        scale 1 for the cross-entropies; an ``eig`` G's eigenvalues, :func:`_check_eig`).
        ValueError naming what differs otherwise; TypeError
        for float64 arrays while 64-bit mode is off."""
        net = curvature_lib.check_supported(net, "laplace", second_order=False)
        try:
            structure, kind, n = fields["structure"], fields["prior_kind"], fields["n_data"]
        except (KeyError, TypeError):
            raise ValueError(f"fields: expected 'structure', 'prior_kind' and 'n_data', got "
                             f"{fields!r}.") from None
        if structure not in structures.STRUCTURES:
            raise ValueError(f"structure: expected one of {list(structures.STRUCTURES)}, got "
                             f"{structure!r}.")
        if kind not in flat.PRIOR_KINDS or (kind == "parameter" and structure == "kron"):
            raise ValueError(f"prior_kind: expected one of {list(flat.PRIOR_KINDS)} (not "
                             f"'parameter' for 'kron'), got {kind!r} with {structure!r}.")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n_data: expected a positive integer, got {n!r}.")
        with_eig = "eig" in arrays and structure in ("full", "last_layer") and kind == "scalar"
        want = _array_shapes(net, structure, kind, with_eig)
        if set(arrays) != set(want):
            raise ValueError(f"arrays: a {structure!r} posterior of the network {net.sizes} "
                             f"with a {kind} prior holds {sorted(want)}, got {sorted(arrays)}.")
        dtype = np.asarray(arrays["W[1]"]).dtype
        for name, shape in want.items():
            a = np.asarray(arrays[name])
            if a.shape != shape or a.dtype != dtype or not jnp.issubdtype(a.dtype, jnp.floating):
                raise ValueError(f"arrays: {name} has shape {a.shape} {a.dtype}, expected "
                                 f"{shape} {dtype} (floating, the MAP's dtype).")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"arrays: {name} holds non-finite values.")
        if dtype == np.float64 and not jax.config.jax_enable_x64:
            raise TypeError("arrays: a float64 posterior needs 64-bit mode "
                            "(jax.config.update('jax_enable_x64', True)).")
        if with_eig:
            _check_eig(np.asarray(arrays["ggn"]), np.asarray(arrays["eig"]))
        prior = np.asarray(arrays["prior_precision"])
        if np.any(prior <= 0):
            raise ValueError(f"arrays: prior_precision holds a precision <= 0 "
                             f"({prior.ravel()[np.argmin(prior.ravel())]!r}).")
        real_number("temperature", float(arrays["temperature"]), low=0.0, low_open=True)
        j = lambda name: jnp.asarray(arrays[name])  # noqa: E731
        L = net.num_layers
        params = [{"W": j(f"W[{l}]"), "b": j(f"b[{l}]")} for l in range(1, L + 1)]
        if structure == "kron":
            cv = {name: tuple(j(f"{name}[{l}]") for l in range(1, L + 1))
                  for name in _CURVATURE_NAMES["kron"]}
        else:
            cv = {k: j(k) for k in ("ggn", "eig") if k in want}
        return cls(net=net, structure=structure, prior_kind=kind, n_data=int(n), params=params,
                   curvature=cv, prior_precision=j("prior_precision"),
                   temperature=j("temperature"),
                   sigma_noise=structures.check_sigma_noise(net, float(arrays["sigma_noise"]),
                                                            dtype),
                   loss=j("loss"))

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
            cv = self.curvature
            if kind != "scalar" and "eig" in cv:  # G's eigenvalues serve a scalar prior only
                cv = {k: v for k, v in cv.items() if k != "eig"}
            out = dataclasses.replace(out, prior_kind=kind, prior_precision=arr, curvature=cv)
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
        and kron). X's finiteness is checked when it is concrete (not under a transform)."""
        X = checks.check_X(self.net, X, self.temperature.dtype)
        if flat.concrete(X):
            checks.check_finite(X=X)
        return structures.functional_covariance(self, X)

    def sample(self, key, n: int) -> list:
        """(LA12) n parameter samples theta ~ N(theta*, P^{-1}): params-shaped (the container
        of the params fitted, list or tuple) with a leading axis n on every leaf (layers
        outside "last_layer" repeat the MAP)."""
        key = checks.prng_key(key)
        n = checks.positive_int("n", n)
        return checks.like_params(self.params, structures.sample(self, key, n))
