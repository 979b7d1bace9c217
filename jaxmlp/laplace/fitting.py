"""Fitting a Laplace approximation at trained params from one pass over the data
(LA2)-(LA5): the GGN quantities of :mod:`jaxmlp.quantities.curvature`, summed over
minibatches.

Per minibatch (one forward pass (F1)-(F2), the output factor S of (H1)-(H4) or its Monte
Carlo form (H12), its columns backpropagated by (B3)/(B4)):

* "diag" (LA3): the rule (H5) without the 1/m, summed: diag G = sum_i sum_c (q*q)(abar*abar)^T;
* "kron" (LA4): the rule (H6) without the 1/m: A_sum = sum_i abar abar^T,
  G_sum = sum_i sum_c q q^T; after the pass A = A_sum / n_data, G = G_sum and the block is
  G (x) A (= n_data G_mean (x) A_mean: the expectation of the Kronecker product replaced by
  the product of the expectations, independent of the batch size); each factor is
  eigendecomposed once (``jnp.linalg.eigh``, eigenvalues clipped at 0);
* "full" (LA5): G = sum_i sum_c v v^T with v = (vec(q_c abar^T))_l, the rows of the
  Jacobian-transposed factor in the order (LA1);
* "last_layer" (LA5): the same for layer L's [W b] alone (q_c = the columns of S), summed as
  G = sum_i H_i (x) abar_i abar_i^T (H_i = S_i S_i^T, n[L] x n[L]): n[L] times fewer
  products than the n[L] rows' outer products.

Minibatches: ``batch_size`` columns at a time (None: all at once), every sum exact; the full
minibatches run under ``lax.scan`` and a smaller last one after them, with the
eigendecompositions, in ONE compiled call (one dispatch per fit).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from jaxmlp.laplace import flat, structures
from jaxmlp.laplace.posterior import Posterior
from jaxmlp.nn import checks, recurrences
from jaxmlp.nn.network import Network
from jaxmlp.nn.scalars import real_number
from jaxmlp.quantities import curvature

__all__ = ["FULL_MAX_PARAMS", "laplace"]

#: The largest number of parameters "full" and "last_layer" accept (a dense P x P matrix:
#: 4096 parameters are 128 MiB in float64, and a Cholesky factor as much again).
FULL_MAX_PARAMS = 4096


def _batch_terms(net, params, X, Y, key, *, structure, mc_samples):
    """Sum of the losses and the structure's curvature sums of one minibatch (traced)."""
    _, cache = recurrences.forward_pass(net, params, X)  # (F1), (F2)
    Z_L, A_L = cache.Z[-1], cache.A[-1]
    loss = jnp.sum(recurrences.losses(net, Z_L, A_L, Y))  # (F3), summed
    if mc_samples is None:
        S = curvature.output_factor(net, Z_L, A_L, Y)  # (H1)-(H4)
    else:
        S = curvature.output_factor_mc(net, Z_L, A_L, Y, key, mc_samples)  # (H12)
    if structure == "last_layer":  # rows s_c (x) abar: G = sum_i H_i (x) abar_i abar_i^T
        H = jnp.einsum("cai,dai->cdi", S, S)  # (n[L], n[L], m), H_i = S_i S_i^T
        Ab = structures.abar(cache.A[-2])
        G = jnp.einsum("cdi,ki,li->ckdl", H, Ab, Ab)
        return loss, {"ggn": G.reshape(G.shape[0] * G.shape[1], -1)}
    Qs = curvature.backpropagate_columns(net, params, cache, S)  # (B3)/(B4) per column
    if structure == "diag":
        return loss, {"ggn": flat.flatten(curvature.ggn_diag_rule(Qs, cache, None, 1))}
    if structure == "kron":
        return loss, {"factors": curvature.kfac_rule(Qs, cache, 1)}
    V = structures.jacobian_columns(Qs, cache.A[:-1])
    V = V.reshape(V.shape[0], -1)
    return loss, {"ggn": V @ V.T}


def _kron_eig(factors, n):
    """(LA4) eigendecompositions of A = A_sum / n and G = G_sum, eigenvalues clipped at 0.
    Half precision (float16, bfloat16, which eigh has no kernel for): of the same matrix
    taken to float32, the eigenvalues and eigenvectors rounded back to its dtype."""
    cv = {"eig_A": [], "U_A": [], "eig_G": [], "U_G": []}
    for A_sum, G_sum in factors:
        for name, M in (("A", A_sum / n), ("G", G_sum)):
            wide = jnp.promote_types(M.dtype, jnp.float32)
            lam, U = (a.astype(M.dtype) for a in jnp.linalg.eigh(M.astype(wide)))
            cv["eig_" + name].append(jnp.maximum(lam, 0.0))
            cv["U_" + name].append(U)
    return {k: tuple(v) for k, v in cv.items()}


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("structure", "mc_samples", "batch_size"))
def _fit(net, params, X, Y, key, *, structure, mc_samples, batch_size):
    """The whole pass in one compiled call: the n // batch_size full minibatches under
    ``lax.scan`` (minibatch b uses ``fold_in(key, b)``), the remainder after them, the sums
    added; for "kron" the eigendecompositions (LA4). Returns ``(loss, curvature)``."""
    n = X.shape[1]
    nb, rem = divmod(n, batch_size)

    def terms(b, Xb, Yb):
        k = None if key is None else jax.random.fold_in(key, b)
        return _batch_terms(net, params, Xb, Yb, k, structure=structure, mc_samples=mc_samples)

    if nb == 1:
        loss, acc = terms(0, X[:, :batch_size], Y[:, :batch_size])
    else:
        cut = nb * batch_size
        Xs = jnp.moveaxis(X[:, :cut].reshape(X.shape[0], nb, batch_size), 1, 0)
        Ys = jnp.moveaxis(Y[:, :cut].reshape(Y.shape[0], nb, batch_size), 1, 0)
        first = terms(0, Xs[0], Ys[0])

        def body(carry, inp):
            b, Xb, Yb = inp
            return jax.tree.map(jnp.add, carry, terms(b, Xb, Yb)), None

        (loss, acc), _ = jax.lax.scan(body, first, (jnp.arange(1, nb), Xs[1:], Ys[1:]))
    if rem:
        lb, tb = terms(nb, X[:, nb * batch_size:], Y[:, nb * batch_size:])
        loss, acc = loss + lb, jax.tree.map(jnp.add, acc, tb)
    if structure == "kron":
        return loss, _kron_eig(acc["factors"], jnp.asarray(n, X.dtype))
    return loss, {"ggn": acc["ggn"]}


def _check_structure(structure):
    if not isinstance(structure, str) or structure not in structures.STRUCTURES:
        raise ValueError(f"structure: expected one of {list(structures.STRUCTURES)}, got "
                         f"{structure!r}.")
    return structure


def laplace(net: Network, params, X, Y, *, structure: str = "kron", prior_precision=1.0,
            temperature: float = 1.0, sigma_noise: float = 1.0,
            batch_size: Optional[int] = None, mc_samples: Optional[int] = None,
            key=None) -> Posterior:
    """A Laplace approximation N(params, P^{-1}) at trained ``params`` (LA1)-(LA5).

    Arguments:
      net, params: the network and its trained (MAP) ``[{"W", "b"}, ...]``.
      X: training inputs (n[0], n_data); Y: targets (n[L], n_data) (finite, inside the
        cost's domain: :meth:`jaxmlp.nn.costs.Cost.check_targets`).
      structure: "diag", "kron", "full" or "last_layer" (module docstring).
      prior_precision: a positive number, one per layer (a sequence), or per parameter (a
        params-shaped pytree; not for "kron"; for "last_layer" one layer's [{"W", "b"}]).
      temperature: T > 0; the posterior precision is P = G / (T sigma_noise^2) + P0 (LA2)
        with G the GGN of the SUMMED loss sum_i L_i over the n_data examples.
      sigma_noise: the Gaussian noise scale of mean squared error (1 otherwise).
      batch_size: columns per minibatch (None: one batch).
      mc_samples, key: Monte Carlo output factors (H12) for "diag" and "kron" (KFAC);
        None for the exact ones.

    Returns:
      a :class:`Posterior`. "full" and "last_layer" are refused above
      :data:`FULL_MAX_PARAMS` parameters, and for float16 / bfloat16 params (TypeError: no
      half-precision Cholesky); "kron" in half precision eigendecomposes its factors in
      float32 and keeps them in the params' dtype.
    """
    net = curvature.check_supported(net, "laplace", second_order=False)
    structure = _check_structure(structure)
    X, Y = checks.check_problem(net, params, X, Y)
    dtype = X.dtype
    if structure in ("full", "last_layer") and jnp.dtype(dtype).itemsize < 4:
        raise TypeError(f"params: {structure!r} needs a Cholesky factorisation, which has no "
                        f"{jnp.dtype(dtype).name} kernel; got {jnp.dtype(dtype).name} params "
                        "and X. Cast them to float32 (or use structure 'diag' or 'kron').")
    checks.check_finite(X=X, Y=Y)
    net.cost_fn.check_targets(Y)  # inside the cost's domain (jaxmlp.nn.costs), as fit
    checks.check_finite(**{f"params[{l}]['{k}']": layer[k]
                           for l, layer in enumerate(params) for k in ("W", "b")})
    T = real_number("temperature", temperature, low=0.0, low_open=True)
    sigma = structures.check_sigma_noise(net, sigma_noise, dtype)
    batch_size = checks.optional_positive_int("batch_size", batch_size)
    if mc_samples is not None:
        if structure not in ("diag", "kron"):
            raise ValueError(f"mc_samples: Monte Carlo factors are for 'diag' and 'kron', got "
                             f"structure={structure!r}.")
        mc_samples = checks.positive_int("mc_samples", mc_samples)
        if key is None:
            raise ValueError(f"key: mc_samples={mc_samples} needs a PRNG key, got None.")
        key = checks.prng_key(key)
    elif key is not None:
        raise ValueError("key: given, but mc_samples is None (the exact factors use no "
                         "randomness).")
    L = net.num_layers
    layers = [L - 1] if structure == "last_layer" else list(range(L))
    P = sum(r * c for r, c in flat.block_sizes(net, layers))
    if structure in ("full", "last_layer") and P > FULL_MAX_PARAMS:
        raise ValueError(structures.full_size_message(structure, P, FULL_MAX_PARAMS))
    kind, prior = flat.check_prior_precision(net, prior_precision, structure, layers, dtype)
    mean = [{"W": jnp.asarray(p["W"]), "b": jnp.asarray(p["b"])} for p in params]

    n = X.shape[1]
    bs = n if batch_size is None else min(batch_size, n)
    loss, cv = _fit(net, mean, X, Y, key, structure=structure, mc_samples=mc_samples,
                    batch_size=bs)
    return Posterior(net=net, structure=structure, prior_kind=kind, n_data=n,
                     params=checks.like_params(params, mean),  # a tuple stays a tuple
                     curvature=cv, prior_precision=prior, temperature=jnp.asarray(T, dtype),
                     sigma_noise=sigma, loss=loss)
