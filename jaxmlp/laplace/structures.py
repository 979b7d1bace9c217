"""The linear algebra of each structure: log det P and diag P^{-1} (LA7), the functional
covariance J P^{-1} J^T (LA10) and samples (LA12), given a posterior (duck-typed: any object
with the fields of :class:`jaxmlp.laplace.posterior.Posterior`).

Every function is jitted with the posterior's static fields static; none uses an autodiff
transform. The Jacobian rows of z[L] with respect to layer l's [W b] are q_c abar^T
(rank one), q_c = column c of Q[l], the n[L] unit seeds backpropagated by (B3)/(B4)
(:func:`jaxmlp.quantities.curvature.backpropagate_columns`), abar = [a[l-1]; 1].
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxmlp.laplace import flat
from jaxmlp.nn import recurrences
from jaxmlp.nn.network import Network
from jaxmlp.nn.scalars import real_number
from jaxmlp.quantities import curvature

__all__ = ["STRUCTURES", "abar", "check_sigma_noise", "functional_covariance", "layers",
           "num_params", "num_groups", "precision_terms", "sample", "theta"]

#: The structures of the posterior precision.
STRUCTURES = ("diag", "kron", "full", "last_layer")


def layers(la) -> list:
    L = la.net.num_layers
    return [L - 1] if la.structure == "last_layer" else list(range(L))


def num_params(la) -> int:
    return sum(r * c for r, c in flat.block_sizes(la.net, layers(la)))


def num_groups(la) -> int:
    return {"scalar": 1, "layer": len(layers(la)), "parameter": num_params(la)}[la.prior_kind]


def theta(la) -> jax.Array:
    """(LA1) the MAP as a vector (P,)."""
    return flat.flatten(la.params, layers(la))


def check_sigma_noise(net: Network, value, dtype) -> jax.Array:
    """sigma_noise: a positive finite number; other than 1 only for mean squared error. A
    traced one (under ``jax.jit`` / ``jax.vmap`` / ``jax.grad``, mean squared error only) must
    be a real scalar; its value is not checked."""
    if not flat.concrete(value):
        if net.cost != "mean_squared_error":
            raise ValueError(f"sigma_noise: only the Gaussian likelihood of mean_squared_error "
                             f"has a noise scale; the cost is {net.cost!r}, got a traced value "
                             "(leave it at 1).")
        a = jnp.asarray(value)
        if a.shape != () or not (jnp.issubdtype(a.dtype, jnp.floating)
                                 or jnp.issubdtype(a.dtype, jnp.integer)):
            raise TypeError(f"sigma_noise: expected a real number, got a traced array of shape "
                            f"{a.shape} {a.dtype}.")
        return a.astype(dtype)
    v = real_number("sigma_noise", value, low=0.0, low_open=True)
    if net.cost != "mean_squared_error" and v != 1.0:
        raise ValueError(f"sigma_noise: only the Gaussian likelihood of mean_squared_error has "
                         f"a noise scale; the cost is {net.cost!r}, got sigma_noise={v!r} "
                         "(leave it at 1).")
    return jnp.asarray(v, dtype)


def scale(la, sigma=None) -> jax.Array:
    """(LA2) h = 1 / (temperature * sigma_noise^2)."""
    sigma = la.sigma_noise if sigma is None else sigma
    return 1.0 / (la.temperature * sigma * sigma)


def per_parameter(la, delta) -> jax.Array:
    """The prior precision of every parameter, (P,), from ``delta`` of the prior's kind."""
    groups = flat.prior_groups(la.net, la.prior_kind, layers(la))
    return jnp.broadcast_to(delta, groups.shape) if delta.ndim == 0 else delta[groups]


def _per_layer(la, delta) -> list:
    return [delta if delta.ndim == 0 else delta[l] for l in range(la.net.num_layers)]


def _blocks(la, vec) -> list:
    """(P,) -> per layer the (n[l], n[l-1]+1) block of (LA1)."""
    out, start = [], 0
    for r, c in flat.block_sizes(la.net, layers(la)):
        out.append(vec[start:start + r * c].reshape(r, c))
        start += r * c
    return out


def _kron_D(la, delta, h) -> list:
    """(LA4) per layer the eigenvalues of P_l: D = h eig_G eig_A^T + delta_l, (n[l], n[l-1]+1)."""
    cv = la.curvature
    return [h * jnp.outer(eg, ea) + d for eg, ea, d in
            zip(cv["eig_G"], cv["eig_A"], _per_layer(la, delta))]


def _cholesky(la, delta, h) -> jax.Array:
    """(LA5) the lower Cholesky factor of P = h G + diag(delta_p)."""
    G = la.curvature["ggn"]
    return jnp.linalg.cholesky(h * G + jnp.diag(per_parameter(la, delta)))


@functools.partial(jax.jit, static_argnames=())
def precision_terms(la, delta, h):
    """(LA7) ``(log det P, t)`` with t the per-group sums of diag P^{-1} (shape
    (num_groups,)), for P = h G + P0 at prior precision ``delta`` (the prior's kind) and
    scale h. diag: sums over 1/(h g + delta); kron: over 1/D of (LA4); full and last_layer:
    a Cholesky factor, diag P^{-1} = the squared column norms of its inverse; or, where the
    curvature also holds ``"eig"`` (G's eigenvalues, clipped at 0, which the evidence ascent
    adds) and the prior is a scalar, sums over 1/(h lambda + delta) (a per-layer or
    per-parameter P0 does not share G's eigenbasis: the Cholesky factor then)."""
    s = la.structure
    k = num_groups(la)
    if "eig" in la.curvature and s in ("full", "last_layer") and la.prior_kind == "scalar":
        # G's eigenvalues, computed once: P = U (h lambda + delta) U^T only for a scalar delta
        Pd = h * la.curvature["eig"] + delta
        return jnp.sum(jnp.log(Pd)), jnp.sum(1.0 / Pd)[None]
    if s == "kron":
        D = _kron_D(la, delta, h)
        logdet = sum(jnp.sum(jnp.log(d)) for d in D)
        traces = jnp.stack([jnp.sum(1.0 / d) for d in D])
        return logdet, (jnp.sum(traces)[None] if k == 1 else traces)
    if s == "diag":
        Pd = h * la.curvature["ggn"] + per_parameter(la, delta)
        logdet, tpp = jnp.sum(jnp.log(Pd)), 1.0 / Pd
    else:
        Lc = _cholesky(la, delta, h)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(Lc)))
        Linv = solve_triangular(Lc, jnp.eye(Lc.shape[0], dtype=Lc.dtype), lower=True)
        tpp = jnp.sum(Linv * Linv, axis=0)  # diag(L^-T L^-1)
    groups = jnp.asarray(flat.prior_groups(la.net, la.prior_kind, layers(la)))
    return logdet, jax.ops.segment_sum(tpp, groups, num_segments=k)


def abar(A_prev):
    """[A[l-1]; 1] (n[l-1]+1, m)."""
    return jnp.concatenate([A_prev, jnp.ones((1, A_prev.shape[1]), A_prev.dtype)], axis=0)



def unit_columns(la, cache) -> tuple:
    """(LA10) Q[l] (n[l], n[L], m) for the posterior's layers: the n[L] unit seeds at Z[L]
    backpropagated by (B3)/(B4) (for "last_layer" the seeds themselves)."""
    n_L, m = cache.Z[-1].shape
    S = jnp.broadcast_to(jnp.eye(n_L, dtype=cache.Z[-1].dtype)[:, :, None], (n_L, n_L, m))
    L = la.net.num_layers
    if la.structure == "last_layer" or L == 1:
        return (S,)
    # (B3) of a unit seed e_c is row c of W[L]: no product with the identity
    W_T = la.params[-1]["W"].T  # (n[L-1], n[L])
    g = la.net.layer_activations[L - 2]
    Q = jax.vmap(lambda w: g.backward(jnp.broadcast_to(w[:, None], (w.shape[0], m)),
                                      cache.Z[L - 2], cache.A[L - 1]),
                 in_axes=1, out_axes=1)(W_T)  # (B4): (n[L-1], n[L], m)
    return curvature.backpropagate_columns(la.net, la.params, cache, Q, top=L - 1) + (S,)


def jacobian_columns(Qs, As) -> jax.Array:
    """(LA5), (LA10) the rows of J stacked: vec(q_c abar^T) per layer in the order (LA1),
    shape (P, C, m). Used only by the dense structures (and the fit of "full")."""
    parts = []
    for Q, A_prev in zip(Qs, As):
        V = jnp.einsum("jci,ki->jkci", Q, abar(A_prev))
        parts.append(V.reshape((-1,) + Q.shape[1:]))
    return jnp.concatenate(parts, axis=0)


@functools.partial(jax.jit, static_argnames=("diagonal",))
def functional_covariance(la, X, *, diagonal=False):
    """(LA10) ``(z[L] (n[L], m), Sigma (n[L], n[L], m))``, Sigma_i = J_i P^{-1} J_i^T;
    with ``diagonal=True`` only its diagonal (n[L], m) (what the probit link and regression
    use: the last contraction keeps c = d, n[L] times fewer products).

    diag: Sigma[c,d] = sum_l sum_j Q[j,c] Q[j,d] (Pinv_l abar^2)_j (Pinv_l the (n[l], n[l-1]+1)
    block of 1/(h g + delta)); kron: the same in the eigenbases, Q~ = U_G^T Q,
    abar~ = U_A^T abar, Pinv_l -> 1/D; full and last_layer: the rows (LA5) and the
    Cholesky factor, Sigma = W^T W with W = L^{-1} J^T; last_layer: its rows are
    e_c (x) abar^T, so W[:, c] = L^{-1}[:, (c, .)] abar (J not materialised).
    """
    net = la.net
    _, cache = recurrences.forward_pass(net, la.params, X)
    Qs = unit_columns(la, cache)
    As = [cache.A[l] for l in layers(la)]
    h = scale(la)
    delta = la.prior_precision
    s = la.structure
    Sigma = 0.0
    if s == "diag":
        Pinv = _blocks(la, 1.0 / (h * la.curvature["ggn"] + per_parameter(la, delta)))
        for Q, A_prev, Pi in zip(Qs, As, Pinv):
            M = Pi @ jnp.square(abar(A_prev))  # (n[l], m)
            Sigma = Sigma + _gram(Q, Q, M, diagonal)
    elif s == "kron":
        cv = la.curvature
        for Q, A_prev, UA, UG, D in zip(Qs, As, cv["U_A"], cv["U_G"], _kron_D(la, delta, h)):
            Qt = jnp.einsum("jk,jci->kci", UG, Q)
            At = UA.T @ abar(A_prev)
            M = (1.0 / D) @ jnp.square(At)
            Sigma = Sigma + _gram(Qt, Qt, M, diagonal)
    elif s == "last_layer":  # J rows e_c (x) abar^T: W = L^{-1} J^T without J
        Lc = _cholesky(la, delta, h)
        Linv = solve_triangular(Lc, jnp.eye(Lc.shape[0], dtype=Lc.dtype), lower=True)
        n_L, Ab = Qs[0].shape[0], abar(As[0])
        W = jnp.einsum("pck,ki->pci", Linv.reshape(Linv.shape[0], n_L, -1), Ab)
        Sigma = _gram(W, W, None, diagonal)
    else:
        Jt = jacobian_columns(Qs, As)  # (P, n[L], m)
        Lc = _cholesky(la, delta, h)
        W = solve_triangular(Lc, Jt.reshape(Jt.shape[0], -1), lower=True).reshape(Jt.shape)
        Sigma = _gram(W, W, None, diagonal)
    return cache.Z[-1], Sigma


def _gram(U, V, M, diagonal):
    """sum_j U[j,c,i] V[j,d,i] M[j,i] -> (c, d, i), or its c = d entries (c, i)."""
    UM = U if M is None else U * M[:, None, :]
    return jnp.einsum("jci,jci->ci", UM, V) if diagonal else jnp.einsum("jci,jdi->cdi", UM, V)


@functools.partial(jax.jit, static_argnums=2)
def sample(la, key, n):
    """(LA12) theta* + P^{-1/2} eps: diag eps / sqrt(h g + delta); kron per layer
    U_G (E / sqrt(D)) U_A^T; full and last_layer L^{-T} eps (P = L L^T)."""
    net = la.net
    h = scale(la)
    delta = la.prior_precision
    mean = theta(la)
    P = mean.shape[0]
    s = la.structure
    if s == "diag":
        eps = jax.random.normal(key, (n, P), mean.dtype)
        draws = mean + eps / jnp.sqrt(h * la.curvature["ggn"] + per_parameter(la, delta))
    elif s == "kron":
        cv = la.curvature
        keys = jax.random.split(key, net.num_layers)
        parts = []
        for k, UA, UG, D in zip(keys, cv["U_A"], cv["U_G"], _kron_D(la, delta, h)):
            E = jax.random.normal(k, (n,) + D.shape, mean.dtype) / jnp.sqrt(D)
            parts.append(jnp.einsum("jk,nkl,ml->njm", UG, E, UA).reshape(n, -1))
        draws = mean + jnp.concatenate(parts, axis=1)
    else:
        Lc = _cholesky(la, delta, h)
        eps = jax.random.normal(key, (P, n), mean.dtype)
        draws = mean + solve_triangular(Lc.T, eps, lower=False).T
    blocks = flat.unflatten(net, draws, layers(la))
    if s != "last_layer":
        return blocks
    out = [jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), layer)
           for layer in la.params[:-1]]
    return out + blocks


def full_size_message(structure: str, P: int, limit: int) -> str:
    gib = P * P * 8 / 2**30
    return (f"structure={structure!r}: a dense posterior of P = {P} parameters needs a P x P "
            f"matrix ({gib:.2g} GiB in float64) and its Cholesky factor; the limit is "
            f"FULL_MAX_PARAMS = {limit}. Use "
            + ("'kron', 'diag' or 'last_layer'" if structure == "full"
               else "'kron' or 'diag', or a network with a smaller last layer") + ".")


def log_two_pi_sigma(sigma) -> jax.Array:
    return jnp.log(sigma) + 0.5 * math.log(2.0 * math.pi)


