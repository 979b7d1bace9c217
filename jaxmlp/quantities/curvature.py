"""Second-order quantities: each a short rule over backpropagated columns and A[l-1].

The first-order sweep backpropagates ONE seed, dZ[L]. Backpropagating the columns of a
factor S of the output Hessian (H = S S^T) through the same (B3)/(B4)
(:func:`jaxmlp.nn.recurrences.backpropagate` under ``jax.vmap`` over the columns) gives, per
layer, Q[l] of shape (n[l], C, m): the Jacobian-transposed columns J^T S of every example
at Z[l]. Every curvature quantity of J = (1/m) sum_i L_i is read off the pairs
(Q[l], A[l-1]) (equations in docs/derivations.md, section "Curvature"):

==========================  =====================================================  =====
quantity                    rule per layer                                         eq.
==========================  =====================================================  =====
:func:`ggn_diag`            (1/m) (sum_c Q*Q) (A*A)^T, (1/m) sum_cols sum_c Q*Q    (H5)
:func:`per_example_ggn_diag`  the same per column i (leading axis m)              (H5)
:func:`kfac_factors`        A: (1/m) Abar Abar^T; G: (1/m) sum_{c,i} q q^T         (H6)
:func:`ggn_vp`              R-forward (H7), seed (1/m) H R{f}, (B3)/(B4), (B1)/(B2) (H8)
:func:`ggn_gram`            v_i^T G v_j = sum R_i{Z[L]} * (H8)'s seed of v_j: R-forward only  (H13)
:func:`hvp`                 R-forward, first-order sweep, R-backward with sources  (H9)
:func:`hessian_diag`        (H5) with signed weights and the residual columns      (H10)
==========================  =====================================================  =====

The output factors (H1)-(H4): the GGN splits the network at Z[L] for the canonical
pairs (sigmoid + binary / multi-label, softmax + categorical, linear + mean squared
error) and at A[L] for every other pair; a factor at A[L] is carried to Z[L] by (B4) of
g[L], column by column. Monte Carlo factors (``mc_samples`` = k columns) satisfy
E[S S^T] = H: sampled targets for the canonical pairs and mean squared error, random
signs for the other cross-entropy pairs (whose Hessian at A[L] depends on Y).

No autodiff transform is used: the R-operator (H7)-(H9) is written out (Pearlmutter
1994), with the second derivative g'' of each element-wise activation
(``Activation.second_derivative``) and the softmax rule (H11) for the residual terms.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from jaxmlp.nn import recurrences
from jaxmlp.nn import checks
from jaxmlp.nn.recurrences import Cache, matmul
from jaxmlp.nn.network import Network
from jaxmlp.nn.recurrences import gradient

Array = jax.Array
Params = list

__all__ = [
    "KINDS",
    "backpropagate_columns",
    "check_supported",
    "ggn_diag",
    "ggn_diag_rule",
    "ggn_gram",
    "ggn_gram_kernel",
    "ggn_vp",
    "ggn_vp_kernel",
    "hessian_diag",
    "hvp",
    "kfac_factors",
    "kfac_rule",
    "output_factor",
    "output_factor_mc",
    "per_example_ggn_diag",
    "per_example_ggn_diag_rule",
    "r_forward",
]

#: Kinds of :func:`kfac_factors`.
KINDS = ("exact", "mc", "empirical")

_NO_SECOND = ("linear", "relu", "leaky_relu")  # g'' = 0: no residual columns
_BUILTIN_COSTS = ("binary_cross_entropy", "categorical_cross_entropy",
                  "multilabel_cross_entropy", "mean_squared_error")


def check_supported(net: Network, quantity: str, *, second_order: bool) -> Network:
    """The output-Hessian rules (H1)-(H3) are written for the four built-in costs; the
    R-forward sweep (H7) needs a symmetric activation Jacobian (element-wise or softmax);
    the residual terms (H10)/(H11) need g'' (``second_derivative``) of element-wise rules.
    A registered rule outside these gets a ValueError naming it (and its layer)."""
    net = checks.require_network(net)
    if net.cost not in _BUILTIN_COSTS:
        raise ValueError(f"net: {quantity} has output-Hessian rules (H1)-(H3) for the costs "
                         f"{list(_BUILTIN_COSTS)}, not for the registered cost {net.cost!r}.")
    for l, g in enumerate(net.layer_activations, start=1):
        if not g.elementwise and g.name != "softmax":
            if second_order or quantity == "ggn_vp":
                raise ValueError(f"net: {quantity} needs the second-order rule of every "
                                 f"activation; layer {l}'s {g.name!r} is a registered "
                                 "non-element-wise rule without one.")
        elif second_order and g.elementwise and g.second_derivative is None:
            raise ValueError(f"net: {quantity} needs g'' of every element-wise activation; layer "
                             f"{l}'s {g.name!r} was registered without second_derivative=.")
    return net


# ----------------------------------------------------------------------------- output factors


def _split_at_Z(net: Network) -> bool:
    """True for the canonical pairs, whose GGN splits at Z[L] (the cost is convex in Z[L])."""
    return net.fused


def _hessian_diag_at_A(net: Network, A_L: Array, Y: Array) -> Array:
    """(H3) the diagonal Hessian d^2 L_i / dA[L]^2 of a non-canonical pair, (n[L], m).

    mean squared error: 1; binary / multi-label cross-entropy: Y/A^2 + (1-Y)/(1-A)^2;
    categorical cross-entropy: Y/A^2. Non-negative for targets in [0, 1].
    """
    if net.cost == "mean_squared_error":
        return jnp.ones_like(A_L)
    if net.cost == "categorical_cross_entropy":
        return Y / jnp.square(A_L)
    return Y / jnp.square(A_L) + (1.0 - Y) / jnp.square(1.0 - A_L)


def _columns_to_Z(net: Network, S_A: Array, Z_L: Array, A_L: Array) -> Array:
    """(H4) a factor at A[L], (n[L], C, m), carried to Z[L] by (B4) of g[L] per column."""
    g = net.layer_activations[-1]
    return jax.vmap(lambda s: g.backward(s, Z_L, A_L), in_axes=1, out_axes=1)(S_A)


def output_factor(net: Network, Z_L: Array, A_L: Array, Y: Array) -> Array:
    """(H1)-(H4) the exact factor S at Z[L] of the GGN's output Hessian, (n[L], n[L], m).

    Column c of example i is S_i[:, c]; S_i S_i^T = H_i, the Hessian of L_i (no 1/m) with
    respect to the split output, pulled back to Z[L] for the pairs split at A[L]:

    * sigmoid + binary / multi-label: S = diag(sqrt(s sbar)), s = sigmoid(Z) (H1);
    * softmax + categorical: S = diag(sqrt(a)) - a sqrt(a)^T (H2), so that
      S S^T = diag(a) - a a^T (columns of Y sum to 1);
    * linear + mean squared error: S = I;
    * any other pair: diag(sqrt(h)) with h of (H3), then (B4) of g[L] (H4).
    """
    n, m = Z_L.shape
    eye = jnp.eye(n, dtype=Z_L.dtype)[:, :, None]  # (n, n, 1)
    if _split_at_Z(net):
        out = net.activations[-1]
        if out == "sigmoid":
            return eye * jnp.sqrt(jax.nn.sigmoid(Z_L) * jax.nn.sigmoid(-Z_L))[None, :, :]
        if out == "softmax":
            return (eye - A_L[:, None, :]) * jnp.sqrt(A_L)[None, :, :]
        return jnp.broadcast_to(eye, (n, n, m))
    S_A = eye * jnp.sqrt(_hessian_diag_at_A(net, A_L, Y))[None, :, :]
    return _columns_to_Z(net, S_A, Z_L, A_L)


def output_factor_mc(net: Network, Z_L: Array, A_L: Array, Y: Array, key, k: int) -> Array:
    """(H12) a Monte Carlo factor at Z[L], (n[L], k, m), with E[S S^T] = the exact S S^T.

    Each column is one draw, scaled by 1/sqrt(k):

    * canonical cross-entropy pairs: a - yhat with yhat ~ Bernoulli(a) per unit (sigmoid)
      or a one-hot yhat ~ Categorical(a) (softmax): E[(a - yhat)(a - yhat)^T] is the
      covariance of yhat, s sbar on the diagonal / diag(a) - a a^T;
    * mean squared error (any output): eps ~ N(0, I), the residual of yhat ~ N(a, I),
      carried to Z[L] by (B4) when the output is not linear;
    * the other cross-entropy pairs (Hessian at A[L] depends on Y): sqrt(h) * xi with
      Rademacher signs xi, then (B4).
    """
    n, m = Z_L.shape
    dtype = Z_L.dtype
    scale = 1.0 / math.sqrt(k)
    if net.cost == "mean_squared_error":
        S_A = jax.random.normal(key, (n, k, m), dtype)
        S = S_A if _split_at_Z(net) else _columns_to_Z(net, S_A, Z_L, A_L)
        return scale * S
    if _split_at_Z(net):
        if net.activations[-1] == "sigmoid":
            yhat = jax.random.bernoulli(key, A_L[:, None, :], (n, k, m)).astype(dtype)
        else:
            idx = jax.random.categorical(key, Z_L, axis=0, shape=(k, m))  # (k, m)
            yhat = jnp.moveaxis(jax.nn.one_hot(idx, n, dtype=dtype), -1, 0)  # (n, k, m)
        return scale * (A_L[:, None, :] - yhat)
    xi = jax.random.rademacher(key, (n, k, m), dtype)
    S_A = jnp.sqrt(_hessian_diag_at_A(net, A_L, Y))[:, None, :] * xi
    return scale * _columns_to_Z(net, S_A, Z_L, A_L)


def backpropagate_columns(net: Network, params: Params, cache: Cache, S: Array,
                          top: Optional[int] = None) -> tuple:
    """(B3)/(B4) for every column of S (n[top], C, m): ``(Q[1], ..., Q[top])``, Q[l] of
    shape (n[l], C, m): :func:`jaxmlp.nn.recurrences.backpropagate` under ``vmap`` over axis 1."""
    return jax.vmap(lambda s: recurrences.backpropagate(net, params, cache, s, top=top),
                    in_axes=1, out_axes=1)(S)


# ----------------------------------------------------------------------------- the rules


def ggn_diag_rule(Qs: tuple, cache: Cache, weights, m) -> Params:
    """(H5) diag G: W[l] entry (j, k) = (1/m) sum_i sum_c w Q[l][j,c,i]^2 A[l-1][k,i]^2.

    ``weights``: None (every column weight 1) or, per layer, (C, m) signed weights (the
    residual columns of (H10)). Shapes: Q[l] (n[l], C, m) -> W (n[l], n[l-1]), b (n[l],).
    """
    out = []
    for l, (Q, A_prev) in enumerate(zip(Qs, cache.A[:-1])):
        Q2 = Q * Q if weights is None else Q * Q * weights[l][None, :, :]
        q2 = jnp.sum(Q2, axis=1) / m  # (n[l], m)
        out.append({"W": matmul(q2, A_prev * A_prev, contract=(1, 1)), "b": jnp.sum(q2, axis=1)})
    return out


def per_example_ggn_diag_rule(Qs: tuple, cache: Cache, m) -> Params:
    """(H5) per column: W (m, n[l], n[l-1]) = (1/m) (sum_c q_c^2) a^2^T, b (m, n[l])."""
    out = []
    for Q, A_prev in zip(Qs, cache.A[:-1]):
        q2 = jnp.sum(Q * Q, axis=1) / m
        out.append({"W": jnp.einsum("ji,ki->ijk", q2, A_prev * A_prev), "b": q2.T})
    return out


def kfac_rule(Qs: tuple, cache: Cache, m) -> list:
    """(H6) per layer (A_factor, G_factor): A = (1/m) Abar Abar^T with Abar = [A[l-1]; 1]
    ((n[l-1]+1) square), G = (1/m) sum_{i,c} Q[:,c,i] Q[:,c,i]^T ((n[l]) square)."""
    out = []
    for Q, A_prev in zip(Qs, cache.A[:-1]):
        Abar = jnp.concatenate([A_prev, jnp.ones((1, A_prev.shape[1]), A_prev.dtype)], axis=0)
        Qf = Q.reshape(Q.shape[0], -1)  # (n[l], C m)
        out.append((matmul(Abar, Abar, contract=(1, 1)) / m, matmul(Qf, Qf, contract=(1, 1)) / m))
    return out


# ----------------------------------------------------------------------------- R-operator


def r_forward(net: Network, params: Params, cache: Cache, V: Params) -> tuple:
    """(H7) the forward sweep of directional derivatives R{.} = d/dt (.)(theta + t V):

    R{Z[l]} = W[l] R{A[l-1]} + V_W[l] A[l-1] + V_b[l]  (R{A[0]} = 0),
    R{A[l]} = (dA[l]/dZ[l]) R{Z[l]}, the (B4) map of g[l] applied to R{Z[l]} (every g's
    Jacobian is symmetric: diagonal, or diag(a) - a a^T for softmax).

    Returns ``(RZ, RA)``: tuples of (n[l], m) for l = 1..L (RA[l-1] is R{A[l]}).
    """
    RZs, RAs = [], []
    RA = None
    for l, (layer, v, g) in enumerate(zip(params, V, net.layer_activations)):
        RZ = recurrences.linear_forward(v["W"], v["b"], cache.A[l])
        if RA is not None:
            RZ = RZ + matmul(layer["W"], RA)
        RA = g.backward(RZ, cache.Z[l], cache.A[l + 1])
        RZs.append(RZ)
        RAs.append(RA)
    return tuple(RZs), tuple(RAs)


def _output_hessian_vp(net: Network, Z_L, A_L, Y, RZ_L, RA_L, m) -> Array:
    """(H8) the GGN seed (1/m) H R{f} at Z[L]: H_z R{Z[L]} for canonical pairs (sigmoid:
    s sbar R; softmax: a*(R - sum_rows(a*R)); linear: R); (B4)(h * R{A[L]}) otherwise."""
    if _split_at_Z(net):
        out = net.activations[-1]
        if out == "sigmoid":
            return jax.nn.sigmoid(Z_L) * jax.nn.sigmoid(-Z_L) * RZ_L / m
        if out == "softmax":
            return net.layer_activations[-1].backward(RZ_L, Z_L, A_L) / m
        return RZ_L / m
    dA = _hessian_diag_at_A(net, A_L, Y) * RA_L / m
    return net.layer_activations[-1].backward(dA, Z_L, A_L)


def _residual_vp(g, dA, dZ, Z, A, RZ) -> Array:
    """(H10)/(H11) the residual term M R{Z} of (B4)'s R-derivative, M = sum_p dA_p d^2a_p/dz^2:
    element-wise g: dA * g''(Z) * R{Z}; softmax: dZ*R - dZ sum_rows(a*R) - a sum_rows(dZ*R)."""
    if g.elementwise:
        return dA * g.second_derivative(Z) * RZ
    return (dZ * RZ - dZ * jnp.sum(A * RZ, axis=0, keepdims=True)
            - A * jnp.sum(dZ * RZ, axis=0, keepdims=True))


def _residual_columns(g, dA, dZ, Z, A):
    """(H10)/(H11) M = sum over columns c of w_c e_c e_c^T (+ two rank-one columns for
    softmax): ``(columns (n, C, m), weights (C, m))``, or None when g'' = 0."""
    if g.name in _NO_SECOND:
        return None
    n, m = Z.shape
    eye = jnp.broadcast_to(jnp.eye(n, dtype=Z.dtype)[:, :, None], (n, n, m))
    if g.elementwise:
        return eye, dA * g.second_derivative(Z)
    # softmax: M = diag(dZ) - 1/2 (dZ + a)(dZ + a)^T + 1/2 (dZ - a)(dZ - a)^T
    cols = jnp.concatenate([eye, (dZ + A)[:, None, :], (dZ - A)[:, None, :]], axis=1)
    half = jnp.full((1, m), 0.5, Z.dtype)
    return cols, jnp.concatenate([dZ, -half, half], axis=0)


def _dA_L(net: Network, A_L, Y, m):
    return net.cost_fn.dloss_dA(A_L, Y) / m


# ----------------------------------------------------------------------------- kernels


def _mc_or_exact(net, cache, Y, mc_samples, key):
    Z_L, A_L = cache.Z[-1], cache.A[-1]
    if mc_samples is None:
        return output_factor(net, Z_L, A_L, Y)
    return output_factor_mc(net, Z_L, A_L, Y, key, mc_samples)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("mc_samples", "per_example"))
def _ggn_diag(net, params, X, Y, key, *, mc_samples, per_example):
    X, Y = checks.check_problem(net, params, X, Y)
    _, cache = recurrences.forward_pass(net, params, X)  # (F1), (F2)
    Qs = backpropagate_columns(net, params, cache, _mc_or_exact(net, cache, Y, mc_samples, key))
    if per_example:
        return checks.like_params(params, per_example_ggn_diag_rule(Qs, cache, X.shape[1]))
    return checks.like_params(params, ggn_diag_rule(Qs, cache, None, X.shape[1]))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("kind", "mc_samples"))
def _kfac_factors(net, params, X, Y, key, *, kind, mc_samples):
    X, Y = checks.check_problem(net, params, X, Y)
    return kfac_kernel(net, params, X, Y, key, kind, mc_samples)


def kfac_kernel(net, params, X, Y, key, kind, mc_samples, cache=None):
    """Unchecked (H6) factors; ``cache`` reuses a forward pass already made (training)."""
    m = X.shape[1]
    if cache is None:
        _, cache = recurrences.forward_pass(net, params, X)
    Z_L, A_L = cache.Z[-1], cache.A[-1]
    if kind == "empirical":  # (H6e) the per-example gradients dL_i/dZ[L], one column
        S = recurrences.output_seed(net, Z_L, A_L, Y, 1)[:, None, :]
    elif kind == "mc":
        S = output_factor_mc(net, Z_L, A_L, Y, key, mc_samples)
    else:
        S = output_factor(net, Z_L, A_L, Y)
    return kfac_rule(backpropagate_columns(net, params, cache, S), cache, m)


def ggn_vp_kernel(net, params, cache: Cache, Y, V) -> Params:
    """Unchecked (H7), (H8): G V on the batch of ``cache`` (a forward pass already made)."""
    m = cache.A[0].shape[1]
    RZs, RAs = r_forward(net, params, cache, V)  # (H7)
    seed = _output_hessian_vp(net, cache.Z[-1], cache.A[-1], Y, RZs[-1], RAs[-1], m)  # (H8)
    grads = gradient(recurrences.backpropagate(net, params, cache, seed), cache)  # (B3)/(B4), (B1)/(B2)
    return checks.like_params(params, grads)


def ggn_gram_kernel(net, params, cache: Cache, Y, Vs) -> Array:
    """Unchecked (H13): the (K, K) matrix v_i^T G v_j of K directions on the batch of ``cache``.

    v_i^T G v_j = (1/m) sum_e R_i{f_e}^T H_e R_j{f_e}: the R-forward sweep (H7) of each
    direction (vmapped over the K stacked directions) and (H8)'s seed of each, contracted
    with the other's R{Z[L]} (every Jacobian of g[L] is symmetric, so a pair split at A[L]
    needs no backward step). No backward sweep: about 2/3 of a value_and_grad per direction.
    """
    m = cache.A[0].shape[1]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *Vs)

    def top(V):
        RZs, RAs = r_forward(net, params, cache, V)
        return RZs[-1], RAs[-1]

    RZ, RA = jax.vmap(top)(stacked)  # (K, n[L], m)
    seed = jax.vmap(lambda rz, ra: _output_hessian_vp(net, cache.Z[-1], cache.A[-1], Y, rz, ra,
                                                      m))(RZ, RA)
    gram = jnp.einsum("inm,jnm->ij", RZ, seed)
    return 0.5 * (gram + gram.T)


@functools.partial(jax.jit, static_argnums=0)
def _ggn_vp(net, params, X, Y, V):
    X, Y = checks.check_problem(net, params, X, Y)
    _, cache = recurrences.forward_pass(net, params, X)  # (F1), (F2)
    return ggn_vp_kernel(net, params, cache, Y, V)


@functools.partial(jax.jit, static_argnums=0)
def _ggn_gram(net, params, X, Y, Vs):
    X, Y = checks.check_problem(net, params, X, Y)
    _, cache = recurrences.forward_pass(net, params, X)  # (F1), (F2)
    return ggn_gram_kernel(net, params, cache, Y, Vs)


@functools.partial(jax.jit, static_argnums=0)
def _hvp(net, params, X, Y, V):
    X, Y = checks.check_problem(net, params, X, Y)
    m = X.shape[1]
    L = net.num_layers
    gs = net.layer_activations
    _, A_L, cache, dZs = recurrences.sweep(net, params, X, Y)  # (F1)-(F2), first order (B3)/(B4)
    RZs, RAs = r_forward(net, params, cache, V)  # (H7)
    Z_L = cache.Z[-1]
    # (H9) R{dZ[L]}: the exact Hessian of the loss at Z[L] applied to R{Z[L]}.
    seed = _output_hessian_vp(net, Z_L, A_L, Y, RZs[-1], RAs[-1], m)
    if not _split_at_Z(net):
        seed = seed + _residual_vp(gs[-1], _dA_L(net, A_L, Y, m), dZs[-1], Z_L, A_L, RZs[-1])
    # (H9) sources at Z[l], l < L: (B4)(V_W[l+1]^T dZ[l+1]) + M[l] R{Z[l]}.
    sources = []
    for l in range(1, L):  # 1-indexed layer l receives from layer l + 1
        src = recurrences.backward_step(net, V, cache, l + 1, dZs[l])
        if gs[l - 1].name not in _NO_SECOND:
            dA = matmul(params[l]["W"], dZs[l], contract=(0, 0))  # dA[l] of the sweep
            src = src + _residual_vp(gs[l - 1], dA, dZs[l - 1], cache.Z[l - 1], cache.A[l], RZs[l - 1])
        sources.append(src)
    RdZs = recurrences.backpropagate(net, params, cache, seed, sources=tuple(sources))
    # R{dW[l]} = R{dZ[l]} A[l-1]^T + dZ[l] R{A[l-1]}^T, R{db[l]} = sum_cols R{dZ[l]}.
    out = gradient(RdZs, cache)
    for l in range(1, L):
        out[l]["W"] = out[l]["W"] + matmul(dZs[l], RAs[l - 1], contract=(1, 1))
    return checks.like_params(params, out)


@functools.partial(jax.jit, static_argnums=0)
def _hessian_diag(net, params, X, Y):
    X, Y = checks.check_problem(net, params, X, Y)
    m = X.shape[1]
    L = net.num_layers
    gs = net.layer_activations
    _, A_L, cache, dZs = recurrences.sweep(net, params, X, Y)  # (F1)-(F2), (B3)/(B4)
    Z_L = cache.Z[-1]
    Q = output_factor(net, Z_L, A_L, Y)  # (H1)-(H4)
    w = jnp.full(Q.shape[1:], 1.0 / m, Q.dtype)  # (C, m)
    if not _split_at_Z(net):
        res = _residual_columns(gs[-1], _dA_L(net, A_L, Y, m), dZs[-1], Z_L, A_L)
        if res is not None:
            Q, w = jnp.concatenate([Q, res[0]], axis=1), jnp.concatenate([w, res[1]], axis=0)
    out = [None] * L
    for l in range(L, 0, -1):  # (H10): diag at layer l, then one (B3)/(B4) step for every column
        out[l - 1] = ggn_diag_rule((Q,), Cache(A=(cache.A[l - 1], None), Z=()), (w,), 1)[0]
        if l == 1:
            break
        Q = jax.vmap(lambda s, l=l: recurrences.backward_step(net, params, cache, l, s),
                     in_axes=1, out_axes=1)(Q)
        g = gs[l - 2]
        if g.name not in _NO_SECOND:
            dA = matmul(params[l - 1]["W"], dZs[l - 1], contract=(0, 0))  # dA[l-1] of the sweep
            cols, wts = _residual_columns(g, dA, dZs[l - 2], cache.Z[l - 2], cache.A[l - 1])
            Q, w = jnp.concatenate([Q, cols], axis=1), jnp.concatenate([w, wts], axis=0)
    return checks.like_params(params, out)


# ----------------------------------------------------------------------------- public, checked


def _check_mc(mc_samples, key, *, required: bool):
    """mc_samples None (exact) or a positive int; a key exactly when Monte Carlo is asked."""
    if mc_samples is None and not required:
        if key is not None:
            raise ValueError("key: given, but mc_samples is None (the exact quantity uses no "
                             "randomness); pass mc_samples=k for a Monte Carlo estimate.")
        return None, None
    mc_samples = checks.positive_int("mc_samples", mc_samples)
    if key is None:
        raise ValueError(f"key: Monte Carlo with mc_samples={mc_samples} needs a PRNG key "
                         "(jax.random.key(seed)), got None.")
    return mc_samples, checks.prng_key(key)


def ggn_diag(net: Network, params: Params, X: Array, Y: Array, *, mc_samples: Optional[int] = None,
             key=None) -> Params:
    """The diagonal of the generalised Gauss-Newton matrix G of J = (1/m) sum_i L_i (H5).

    Arguments:
      net, params: the network and ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      X: inputs (n[0], m); Y: targets (n[L], m).
      mc_samples: None for the exact diagonal (n[L] backpropagated columns, (H1)-(H4)), or
        k >= 1 for the Monte Carlo estimate with k sampled columns (H12), unbiased.
      key: the PRNG key of the Monte Carlo draws (required with ``mc_samples``).

    Returns:
      params-shaped ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``, non-negative.

    Memory: the exact diagonal keeps the n[L] backpropagated columns of every example,
    Q[l] (n[l], n[L], m) for every layer, so its temporaries are about
    n[L] x m x (n[1] + ... + n[L]) numbers (XLA's buffers for 784-256-784 at m = 256 in
    float32: 1202 MiB, against 4.3 MiB with ``mc_samples=1``; docs/curvature.md, "Memory",
    gives the command). Two ways to bound it: ``mc_samples=k`` (k columns instead of
    n[L]), or chunks of the m columns: (H5) is (1/m) times a sum over the examples, so for
    chunks X_j, Y_j of m_j columns, ``ggn_diag(X, Y) = sum_j (m_j / m) ggn_diag(X_j, Y_j)``
    (with ``mc_samples``, a key per chunk, e.g. ``jax.random.fold_in(key, j)``).
    """
    net = check_supported(net, "ggn_diag", second_order=False)
    mc_samples, key = _check_mc(mc_samples, key, required=False)
    return _ggn_diag(net, params, X, Y, key, mc_samples=mc_samples, per_example=False)


def per_example_ggn_diag(net: Network, params: Params, X: Array, Y: Array, *,
                         mc_samples: Optional[int] = None, key=None) -> Params:
    """(H5) per example: entry i is the diagonal of (1/m) J_i^T H_i J_i, so the sum over the
    leading axis is :func:`ggn_diag` (same arguments). Returns ``[{"W": (m, n[l], n[l-1]),
    "b": (m, n[l])}, ...]``; memory O(m * num_params)."""
    net = check_supported(net, "per_example_ggn_diag", second_order=False)
    mc_samples, key = _check_mc(mc_samples, key, required=False)
    return _ggn_diag(net, params, X, Y, key, mc_samples=mc_samples, per_example=True)


def check_kind(kind) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}.")
    return kind


def kfac_factors(net: Network, params: Params, X: Array, Y: Array, *, kind: str = "exact",
                 mc_samples: Optional[int] = None, key=None) -> list:
    """Kronecker factors of the GGN blocks (H6), one ``(A_factor, G_factor)`` per layer.

    A_factor = (1/m) sum_i abar_i abar_i^T with abar = [a[l-1]; 1], shape
    (n[l-1]+1, n[l-1]+1); G_factor = (1/m) sum_i S_i' S_i'^T with S_i' the backpropagated
    output factor at Z[l], shape (n[l], n[l]):

    * ``kind="exact"``: the exact factor (KFLR), n[L] columns;
    * ``kind="mc"``: ``mc_samples`` sampled columns (KFAC; None: 1), needs ``key``;
    * ``kind="empirical"``: the per-example gradients dL_i/dZ[l] (empirical Fisher).

    Ordering: the parameters of layer l are the matrix [W[l] b[l]] (n[l], n[l-1]+1), bias
    as the last column, flattened row-major; ``jnp.kron(G_factor, A_factor)`` then
    approximates that block of G, exactly for one layer and one example.

    Memory: ``kind="exact"`` keeps the n[L] backpropagated columns of every example,
    Q[l] (n[l], n[L], m) for every layer, about n[L] x m x (n[1] + ... + n[L]) numbers of
    temporaries (784-256-784 at m = 256 in float32: 796 MiB of XLA's buffers, against 3.3 MiB
    for ``kind="mc"`` with one sample; docs/curvature.md, "Memory"). To bound it use
    ``kind="mc"`` (``mc_samples`` columns), or chunks of the m columns: both factors of (H6)
    are (1/m) times sums over the examples, so for chunks X_j, Y_j of m_j columns with
    factors (A_j, G_j), ``A = sum_j (m_j / m) A_j`` and ``G = sum_j (m_j / m) G_j`` (combine
    the factors, not their Kronecker products; with ``kind="mc"``, a key per chunk).
    """
    net = check_supported(net, "kfac_factors", second_order=False)
    kind = check_kind(kind)
    if kind == "mc":
        mc_samples, key = _check_mc(1 if mc_samples is None else mc_samples, key, required=True)
    else:
        if key is not None:
            raise ValueError(f"key: only kind='mc' draws samples, got a key with kind={kind!r}.")
        if mc_samples is not None:
            raise ValueError(f"mc_samples: only kind='mc' draws samples, got mc_samples="
                             f"{mc_samples!r} with kind={kind!r}.")
    return _kfac_factors(net, params, X, Y, key, kind=kind, mc_samples=mc_samples)


def _check_V(net, params, V, quantity):
    net = check_supported(net, quantity, second_order=quantity == "hvp")
    dtype = checks.check_params(net, params)
    return net, checks.check_params_like("V", V, net, dtype)


def ggn_vp(net: Network, params: Params, X: Array, Y: Array, V: Params) -> Params:
    """G V, the GGN of J times a params-shaped direction V, by the R-operator (H7), (H8):
    a forward sweep of directional derivatives, the seed (1/m) H R{f} and one backward
    sweep (B3)/(B4), (B1)/(B2). Returns params-shaped ``[{"W", "b"}, ...]``."""
    net, V = _check_V(net, params, V, "ggn_vp")
    return _ggn_vp(net, params, X, Y, V)


def ggn_gram(net: Network, params: Params, X: Array, Y: Array, Vs) -> Array:
    """The (K, K) matrix of v_i^T G v_j for K params-shaped directions ``Vs`` (a non-empty
    list or tuple), (H13): equal to ``vdot(Vs[i], ggn_vp(..., Vs[j]))``, by the R-forward
    sweep (H7) and the output Hessian (H8) alone (no backward sweep). K-FAC's quadratic
    model (:mod:`jaxmlp.train.kfac`, (K5)) reads its 2 x 2 system off it."""
    if not isinstance(Vs, (list, tuple)) or not Vs:
        raise TypeError(f"Vs: expected a non-empty list of params-shaped directions, got "
                        f"{type(Vs).__name__}{'' if Vs else ' (empty)'}.")
    net = check_supported(net, "ggn_vp", second_order=False)  # (H7) needs symmetric Jacobians
    dtype = checks.check_params(net, params)
    checked = [checks.check_params_like(f"Vs[{i}]", V, net, dtype) for i, V in enumerate(Vs)]
    return _ggn_gram(net, params, X, Y, tuple(checked))


def hvp(net: Network, params: Params, X: Array, Y: Array, V: Params) -> Params:
    """H V, the Hessian of J times a params-shaped direction V (Pearlmutter's R-operator,
    (H7), (H9)): forward and first-order sweeps, the R-forward sweep, then the backward
    sweep (B3)/(B4) with the second-order terms (residuals with g'', (H10)/(H11)) as
    sources. Returns params-shaped ``[{"W", "b"}, ...]``."""
    net, V = _check_V(net, params, V, "hvp")
    return _hvp(net, params, X, Y, V)


def hessian_diag(net: Network, params: Params, X: Array, Y: Array) -> Params:
    """The exact diagonal of the Hessian of J (BackPACK's DiagHessian), (H10), (H11).

    The Hessian of J with respect to Z[l] is carried down as signed weighted columns: the
    output factor (weights 1/m) plus, at every layer with g'' != 0 (and at A[L] for pairs
    split there), the residual M = sum_p dA_p d^2 a_p/dz^2 (diagonal with weights dA g''
    for element-wise g; for softmax diag(dZ) minus two rank-one terms). Cost grows with
    sum_l n[l] columns: meant for small and medium layers.
    Returns params-shaped ``[{"W", "b"}, ...]``.
    """
    net = check_supported(net, "hessian_diag", second_order=True)
    return _hessian_diag(net, params, X, Y)
