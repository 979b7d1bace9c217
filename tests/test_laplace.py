"""jaxmlp.laplace against its definitions, in float64 on small networks (docs/laplace.md).

The oracle of every check is independent of the library's paths: the dense GGN
sum_i J_i^T H_i J_i with J_i from ``jax.jacobian`` of the split output z[L] and H_i from
``jax.hessian`` of L_i, in the parameter order (LA1); log determinants by
``np.linalg.slogdet`` of dense matrices; the evidence's gradient by ``jax.grad`` of the
brute-force evidence; the GLM variance J P^{-1} J^T with J from ``jax.jacobian``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import block_diag

import jaxmlp
from jaxmlp import laplace as lp
from jaxmlp.nn import recurrences
from jaxmlp.quantities import curvature

from helpers import rel

TOL = 1e-10


def problem(kind, m=10, seed=0):
    """A small float64 network of each task, params and data drawn with NumPy."""
    rng = np.random.default_rng(seed)
    if kind == "softmax":
        net = jaxmlp.Network((3, 5, 4, 3), ("tanh", "gelu", "softmax"), "categorical_cross_entropy")
        Y = np.eye(3)[:, rng.integers(0, 3, m)]
    elif kind == "sigmoid":
        net = jaxmlp.Network((3, 4, 1), ("elu", "sigmoid"), "binary_cross_entropy")
        Y = rng.integers(0, 2, (1, m)).astype(float)
    else:
        net = jaxmlp.Network((3, 5, 2), ("tanh", "linear"), "mean_squared_error")
        Y = rng.normal(size=(2, m))
    params = [{"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1])),
               "b": jnp.asarray(0.3 * rng.normal(size=s["b"]))} for s in net.param_shapes()]
    X = jnp.asarray(rng.normal(size=(net.sizes[0], m)))
    return net, params, X, jnp.asarray(Y)


def split_output(net, layers, params):
    """theta (P,) of ``layers`` -> z[L] (n[L], m) with the other layers at ``params``."""
    def f(theta, X):
        blocks = lp.unflatten(net, theta, layers)
        p = list(params)
        for l, b in zip(layers, blocks):
            p[l] = b
        return recurrences.forward_pass(net, p, X)[1].Z[-1]
    return f


def dense_ggn(net, params, X, Y, layers):
    """The oracle: sum_i J_i^T H_i J_i (P, P) by jax.jacobian and jax.hessian."""
    return np.asarray(_dense_ggn(net, tuple(layers), params, X, Y))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _dense_ggn(net, layers, params, X, Y):
    f = split_output(net, layers, params)
    theta = lp.flatten(params, layers)
    J = jax.jacobian(f)(theta, X)  # (n[L], m, P)
    g = net.layer_activations[-1]

    def loss(z, y):
        return net.cost_fn.loss(z, g.forward(z), y, g)
    H = jax.vmap(jax.hessian(loss), in_axes=(1, 1))(f(theta, X), Y)  # (m, n[L], n[L])
    return jnp.einsum("aip,iab,biq->pq", J, H, J)


def glm_cov(net, params, X, layers, Pinv):
    """The oracle of (LA10): J P^{-1} J^T per column, J from jax.jacobian, (n[L], n[L], m)."""
    J = np.asarray(_jacobian(net, tuple(layers), params, X))  # (n[L], m, P)
    return np.einsum("aip,pq,biq->abi", J, Pinv, J)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jacobian(net, layers, params, X):
    return jax.jacobian(split_output(net, layers, params))(lp.flatten(params, layers), X)


def brute_lml(la, P_dense, delta_pp, sigma=1.0):
    """(LA6) from a dense precision: slogdet, the prior terms and the loss."""
    theta = np.asarray(lp.flatten(la.params, la.layers))
    h = 1.0 / (float(la.temperature) * sigma**2)
    norm = 0.0
    if la.net.cost == "mean_squared_error":
        norm = la.n_data * la.net.sizes[-1] * math.log(sigma * math.sqrt(2 * math.pi))
    sign, logdet = np.linalg.slogdet(P_dense)
    assert sign > 0
    return (-h * float(la.loss) - norm
            - 0.5 * (logdet - np.sum(np.log(delta_pp)) + np.sum(delta_pp * theta**2)))


def kron_dense(net, params, X, Y):
    """Block-diagonal kron(n G_mean, A_mean) from the (H6) factors, the dense matrix "kron"
    stands for (the factors themselves are checked against autodiff in test_curvature)."""
    n = X.shape[1]
    return block_diag(*[np.kron(n * np.asarray(G), np.asarray(A))
                        for A, G in curvature.kfac_factors(net, params, X, Y)])


@pytest.fixture(scope="module")
def softmax_problem():
    return problem("softmax")


# ----------------------------------------------------------------------------- the posterior


def test_full_diag_last_layer_equal_the_autodiff_ggn(softmax_problem):
    net, params, X, Y = softmax_problem
    T = 0.7
    G = dense_ggn(net, params, X, Y, list(range(net.num_layers)))
    la_full = lp.laplace(net, params, X, Y, structure="full", temperature=T, batch_size=4)
    assert rel(la_full.curvature["ggn"], G) <= TOL
    la_diag = lp.laplace(net, params, X, Y, structure="diag", temperature=T)
    assert rel(la_diag.curvature["ggn"], np.diag(G)) <= TOL
    GL = dense_ggn(net, params, X, Y, [net.num_layers - 1])
    la_last = lp.laplace(net, params, X, Y, structure="last_layer", temperature=T)
    assert rel(la_last.curvature["ggn"], GL) <= TOL
    PL = GL / T + 1.0 * np.eye(GL.shape[0])  # (LA10) of last_layer: its own contraction
    assert rel(la_last.functional_covariance(X)[1],
               glm_cov(net, params, X, la_last.layers, np.linalg.inv(PL))) <= TOL
    # the posterior precision (LA2) and the evidence (LA6) of "full" against the dense matrix
    delta = np.asarray([0.5, 2.0, 1.5])
    la = la_full.with_prior(list(delta))
    groups = np.repeat([0, 1, 2], [r * c for r, c in lp.flat.block_sizes(net, la.layers)])
    P = G / T + np.diag(delta[groups])
    assert rel(la.log_marginal_likelihood(), brute_lml(la, P, delta[groups])) <= TOL
    assert rel(la.functional_covariance(X)[1],
               glm_cov(net, params, X, la.layers, np.linalg.inv(P))) <= TOL


def test_kron_logdet_and_variance_equal_the_dense_kronecker_matrix(softmax_problem):
    net, params, X, Y = softmax_problem
    K = kron_dense(net, params, X, Y)
    delta = np.asarray([0.3, 1.0, 4.0])
    la = lp.laplace(net, params, X, Y, structure="kron", prior_precision=list(delta),
                    temperature=2.0, batch_size=3)
    groups = np.repeat([0, 1, 2], [r * c for r, c in lp.flat.block_sizes(net, la.layers)])
    P = K / 2.0 + np.diag(delta[groups])
    assert rel(la.log_marginal_likelihood(), brute_lml(la, P, delta[groups])) <= TOL
    logdet, _ = lp.structures.precision_terms(la, la.prior_precision, 0.5)
    assert rel(logdet, np.linalg.slogdet(P)[1]) <= TOL
    Xt = X[:, :4] * 1.5
    assert rel(la.functional_covariance(Xt)[1],
               glm_cov(net, params, Xt, la.layers, np.linalg.inv(P))) <= TOL


@pytest.mark.parametrize("kind", [pytest.param("sigmoid", marks=pytest.mark.slow), "regression"])
def test_glm_variance_and_evidence_other_tasks(kind):
    """diag and full for a sigmoid output and for regression with a noise scale."""
    net, params, X, Y = problem(kind, m=8, seed=1)
    sigma = 0.6 if kind == "regression" else 1.0
    L = list(range(net.num_layers))
    G = dense_ggn(net, params, X, Y, L)
    delta = 0.8
    for structure in ("diag", "full"):
        la = lp.laplace(net, params, X, Y, structure=structure, prior_precision=delta,
                        sigma_noise=sigma)
        Gs = np.diag(np.diag(G)) if structure == "diag" else G
        P = Gs / sigma**2 + delta * np.eye(G.shape[0])
        assert rel(la.log_marginal_likelihood(),
                   brute_lml(la, P, np.full(G.shape[0], delta), sigma)) <= TOL
        Sigma = glm_cov(net, params, X, L, np.linalg.inv(P))
        assert rel(la.functional_covariance(X)[1], Sigma) <= TOL
        pred = la.predictive(X)
        var = np.einsum("aai->ai", Sigma)
        if kind == "regression":
            mu = recurrences.forward_pass(net, params, X)[0]
            assert rel(pred[0], mu) <= TOL and rel(pred[1], var + sigma**2) <= TOL
        else:
            z = recurrences.forward_pass(net, params, X)[1].Z[-1]
            assert rel(pred, jax.nn.sigmoid(z / np.sqrt(1 + np.pi / 8 * var))) <= TOL


def test_minibatches_give_the_same_posterior(softmax_problem):
    """10 columns in one batch, in 3 scanned batches of 3 and a remainder of 1 (kron), and
    in one batch of 7 and a remainder of 3 (diag)."""
    net, params, X, Y = softmax_problem
    for structure, bs in (("kron", 3), ("diag", 7)):
        a = lp.laplace(net, params, X, Y, structure=structure)
        b = lp.laplace(net, params, X, Y, structure=structure, batch_size=bs)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            if structure == "kron" and x.ndim == 2:  # eigenvectors: up to sign
                continue
            assert rel(x, y) <= TOL


# ----------------------------------------------------------------------------- the evidence


def brute_lml_fn(la, G):
    """(LA6) as a function of (log delta, log sigma), dense and differentiable."""
    theta = lp.flatten(la.params, la.layers)
    groups = lp.flat.prior_groups(la.net, la.prior_kind, la.layers)
    c = la.n_data * la.net.sizes[-1] if la.net.cost == "mean_squared_error" else 0

    def f(rho, s):
        d = jnp.exp(rho)
        dpp = jnp.broadcast_to(d, groups.shape) if d.ndim == 0 else d[groups]
        h = 1.0 / (la.temperature * jnp.exp(2 * s))
        P = h * G + jnp.diag(dpp)
        return (-h * la.loss - c * (s + 0.5 * jnp.log(2 * jnp.pi))
                - 0.5 * (jnp.linalg.slogdet(P)[1] - jnp.sum(jnp.log(dpp))
                         + jnp.sum(dpp * theta**2)))
    return f


SLOW = pytest.mark.slow


@pytest.mark.parametrize("kind,structure,prior", [
    ("softmax", "diag", "parameter"), pytest.param("softmax", "full", "layer", marks=SLOW),
    ("softmax", "kron", "layer"), pytest.param("softmax", "last_layer", "scalar", marks=SLOW),
    ("regression", "full", "scalar"), pytest.param("regression", "kron", "scalar", marks=SLOW)])
def test_evidence_gradient_equals_autodiff(kind, structure, prior, softmax_problem):
    net, params, X, Y = softmax_problem if kind == "softmax" else problem(kind, m=8, seed=2)
    rng = np.random.default_rng(3)
    layers = [net.num_layers - 1] if structure == "last_layer" else list(range(net.num_layers))
    sizes = [r * c for r, c in lp.flat.block_sizes(net, layers)]
    value = {"scalar": 0.7, "layer": list(rng.uniform(0.3, 3, len(layers))),
             "parameter": lp.unflatten(net, jnp.asarray(rng.uniform(0.3, 3, sum(sizes))),
                                       layers)}[prior]
    sigma = 0.8 if kind == "regression" else 1.0
    la = lp.laplace(net, params, X, Y, structure=structure, prior_precision=value,
                    temperature=1.3, sigma_noise=sigma)
    if structure == "kron":
        G = jnp.asarray(kron_dense(net, params, X, Y))
    else:
        G = jnp.asarray(dense_ggn(net, params, X, Y, layers))
        G = jnp.diag(jnp.diag(G)) if structure == "diag" else G
    f = brute_lml_fn(la, G)
    rho, s = jnp.log(la.prior_precision), jnp.log(la.sigma_noise)
    lml, g_rho, g_s = lp.evidence.log_marginal_likelihood_and_grad(la, rho, s)
    assert rel(lml, f(rho, s)) <= TOL
    ad_rho, ad_s = jax.grad(f, argnums=(0, 1))(rho, s)
    assert rel(g_rho, ad_rho) <= TOL
    if kind == "regression":
        assert rel(g_s, ad_s) <= TOL


def test_methods_run_under_jit_vmap_and_grad(softmax_problem):
    """Under one jax.jit (the posterior and X traced): the predictive, the functional
    covariance (LA10) and the evidence (LA6) equal the eager values; jax.vmap of the
    predictive over a stacked batch equals each batch's eager predictive; jax.grad of (LA6)
    in the prior precision delta equals the hand-derived (LA8) divided by delta. The value
    checks skip the traced inputs; eager ones still run (test_bad_input_names_the_argument)."""
    net, params, X, Y = softmax_problem
    la = lp.laplace(net, params, X, Y, structure="diag", prior_precision=0.9)
    Xs = jnp.stack([X, -2.0 * X])

    @jax.jit
    def transformed(la, X, Xs):
        lml = jax.grad(lambda d: la.log_marginal_likelihood(prior_precision=d))
        return ((la.predictive(X), la.functional_covariance(X), la.log_marginal_likelihood()),
                jax.vmap(la.predictive)(Xs), lml(la.prior_precision))

    values, batched, dlml = transformed(la, X, Xs)
    eager = (la.predictive(X), la.functional_covariance(X), la.log_marginal_likelihood())
    for got, want in zip(jax.tree.leaves(values), jax.tree.leaves(eager), strict=True):
        assert rel(got, want) <= 1e-12
    for b in range(2):
        assert rel(batched[b], la.predictive(Xs[b])) <= 1e-12
    _, g_rho, _ = lp.evidence.log_marginal_likelihood_and_grad(
        la, jnp.log(la.prior_precision), jnp.log(la.sigma_noise))
    assert rel(dlml, g_rho / la.prior_precision) <= TOL


def test_optimize_prior_precision_marglik_and_grid(softmax_problem):
    net, params, X, Y = softmax_problem
    la = lp.laplace(net, params, X, Y, structure="kron", prior_precision=[10.0, 10.0, 10.0])
    opt = lp.optimize_prior_precision(la, steps=400)
    _, g_rho, _ = lp.evidence.log_marginal_likelihood_and_grad(
        opt, jnp.log(opt.prior_precision), jnp.log(opt.sigma_noise))
    assert float(jnp.max(jnp.abs(g_rho))) < 1e-3  # a stationary point of (LA6)
    assert opt.log_marginal_likelihood() > la.log_marginal_likelihood()
    # grid: the grid point of smallest validation NLL, computed here independently
    grid = [0.1, 1.0, 10.0]
    Xv, Yv = X[:, :5], Y[:, :5]
    chosen = lp.optimize_prior_precision(la, method="grid", X_val=Xv, Y_val=Yv, grid=grid)
    nll = [-np.mean(np.sum(np.asarray(Yv) * np.log(np.asarray(la.with_prior(d).predictive(Xv))),
                           axis=0)) for d in grid]
    assert float(chosen.prior_precision) == grid[int(np.argmin(nll))]


@pytest.mark.slow
def test_optimize_noise_scale_reaches_a_stationary_point():
    """regression: the prior precision and the noise scale, at a stationary point in both."""
    net_r, params_r, X_r, Y_r = problem("regression", m=20, seed=4)
    la_r = lp.laplace(net_r, params_r, X_r, Y_r, structure="diag")
    opt_r = lp.optimize_prior_precision(la_r, fit_sigma_noise=True, steps=600)
    _, g_rho, g_s = lp.evidence.log_marginal_likelihood_and_grad(
        opt_r, jnp.log(opt_r.prior_precision), jnp.log(opt_r.sigma_noise))
    assert abs(float(g_rho)) < 1e-3 and abs(float(g_s)) < 1e-3


# ----------------------------------------------------------------------------- predictive, samples


def test_links_against_their_formulas(softmax_problem):
    net, params, X, Y = softmax_problem
    la = lp.laplace(net, params, X, Y, structure="full", prior_precision=0.5)
    mu, S = (np.asarray(a) for a in la.functional_covariance(X))
    var = np.einsum("aai->ai", S)
    k = np.pi / 8
    z = mu / np.sqrt(1 + k * var)
    probit = np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
    assert rel(la.predictive(X), probit) <= TOL
    dvar = var[:, None] + var[None, :] - 2 * S
    e = np.exp(-(mu[:, None] - mu[None, :]) / np.sqrt(1 + k * dvar))
    p = 1 / (1 + e.sum(1) - 1)  # the diagonal terms are exp(0) = 1
    assert rel(la.predictive(X, "extended_probit"), p / p.sum(0)) <= TOL
    # Monte Carlo: the mean of softmax over draws of N(mu, Sigma), drawn here by Cholesky
    mc = np.asarray(la.predictive(X, "mc", key=jax.random.key(0), n_samples=20000))
    rng = np.random.default_rng(0)
    ref = np.zeros_like(mc)
    for i in range(mu.shape[1]):
        F = rng.multivariate_normal(mu[:, i], S[:, :, i], 20000)
        E = np.exp(F - F.max(1, keepdims=True))
        ref[:, i] = (E / E.sum(1, keepdims=True)).mean(0)
    assert np.max(np.abs(mc - ref)) < 0.01


@pytest.mark.parametrize("structure", [pytest.param("kron", marks=SLOW), "full",
                                       pytest.param("diag", marks=SLOW),
                                       pytest.param("last_layer", marks=SLOW)])
def test_samples_have_the_posterior_covariance(structure):
    net, params, X, Y = problem("sigmoid", m=10, seed=5)
    la = lp.laplace(net, params, X, Y, structure=structure, prior_precision=[2.0, 0.5]
                    if structure != "last_layer" else 2.0)
    n = 8000
    draws = la.sample(jax.random.key(1), n)
    assert draws[0]["W"].shape == (n,) + params[0]["W"].shape
    D = np.asarray(jax.vmap(lambda p: lp.flatten(p, la.layers))(draws))
    theta = np.asarray(lp.flatten(params, la.layers))
    if structure == "last_layer":
        assert np.array_equal(np.asarray(draws[0]["W"][3]), np.asarray(params[0]["W"]))
    # the precision P, dense: h G + P0 from the structure's own pieces
    if structure == "kron":
        cv = la.curvature
        G = block_diag(*[np.kron(UG * eg @ UG.T, UA * ea @ UA.T) for eg, UG, ea, UA in
                         zip(cv["eig_G"], cv["U_G"], cv["eig_A"], cv["U_A"])])
    else:
        G = np.asarray(la.curvature["ggn"])
        G = np.diag(G) if structure == "diag" else G
    P = G + np.diag(np.asarray(lp.structures.per_parameter(la, la.prior_precision)))
    Lc = np.linalg.cholesky(P)
    W = (D - theta) @ Lc  # whitened: covariance L^T P^{-1} L = I
    C = W.T @ W / n
    assert np.max(np.abs(C - np.eye(len(theta)))) < 6 / np.sqrt(n) * 3
    assert np.max(np.abs(W.mean(0))) < 5 / np.sqrt(n)



def test_tuple_params_give_tuple_samples_equal_to_the_list_ones():
    """(LA12) samples have the container of the params fitted: a tuple pytree gives tuple
    draws (usable wherever the tuple is), with the values of the list form's draws."""
    net, params, X, Y = problem("softmax", m=10, seed=1)
    key = jax.random.key(3)
    la = lp.laplace(net, tuple(params), X, Y, structure="kron")
    as_tuple = la.sample(key, 4)
    as_list = lp.structures.sample(la, key, 4)
    assert type(as_list) is list and type(as_tuple) is tuple
    assert jax.tree.structure(as_tuple) == jax.tree.structure(
        jax.tree.map(lambda a: a[None], tuple(params)))
    for a, b in zip(jax.tree.leaves(as_list), jax.tree.leaves(as_tuple)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    draw = jax.tree.map(lambda a: a[0], as_tuple)  # one draw, the user's own params type
    np.testing.assert_array_equal(np.asarray(jaxmlp.forward(net, draw, X)[0]),
                                  np.asarray(jaxmlp.forward(net, list(draw), X)[0]))

# ----------------------------------------------------------------------------- errors


def test_bad_input_names_the_argument(softmax_problem):
    net, params, X, Y = softmax_problem
    with pytest.raises(ValueError, match="structure: expected one of"):
        lp.laplace(net, params, X, Y, structure="kfac")
    with pytest.raises(ValueError, match="prior_precision: expected positive finite"):
        lp.laplace(net, params, X, Y, prior_precision=-1.0)
    with pytest.raises(ValueError, match=r"prior_precision: expected a scalar, 3 per-layer"):
        lp.laplace(net, params, X, Y, prior_precision=[1.0, 2.0])
    with pytest.raises(ValueError, match="prior_precision: structure='kron' takes a scalar"):
        lp.laplace(net, params, X, Y, prior_precision=jax.tree.map(jnp.ones_like, params))
    with pytest.raises(ValueError, match="temperature: expected a number > 0"):
        lp.laplace(net, params, X, Y, temperature=0.0)
    with pytest.raises(ValueError, match="sigma_noise: only the Gaussian likelihood"):
        lp.laplace(net, params, X, Y, sigma_noise=2.0)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        lp.laplace(net, params, X, Y, batch_size=0)
    with pytest.raises(ValueError, match="X: expected finite values"):
        lp.laplace(net, params, X.at[0, 0].set(jnp.nan), Y)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\]: expected finite"):
        bad = [dict(p) for p in params]
        bad[1]["b"] = bad[1]["b"].at[0].set(jnp.inf)
        lp.laplace(net, bad, X, Y)
    with pytest.raises(ValueError, match="Y: expected shape"):
        lp.laplace(net, params, X, Y[:, :3])
    with pytest.raises(ValueError, match="mc_samples: Monte Carlo factors are for"):
        lp.laplace(net, params, X, Y, structure="full", mc_samples=2, key=0)
    big = jaxmlp.Network((60, 70, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    with pytest.raises(ValueError, match="structure='full': a dense posterior of P = 4483"):
        lp.laplace(big, jaxmlp.init_params(big, 0, dtype=jnp.float64), structure="full",
                   X=jnp.zeros((60, 2)), Y=jnp.eye(3)[:, :2])
    wide = jaxmlp.Network((3, 600, 10), ("tanh", "softmax"), "categorical_cross_entropy")
    with pytest.raises(ValueError, match=r"structure='last_layer': a dense posterior of P = 6010 "
                                         r".* Use 'kron' or 'diag', or a network with a smaller "
                                         r"last layer\.$"):
        lp.laplace(wide, jaxmlp.init_params(wide, 0, dtype=jnp.float64), structure="last_layer",
                   X=jnp.zeros((3, 2)), Y=jnp.eye(10)[:, :2])
    la = lp.laplace(net, params, X, Y, structure="diag")
    with pytest.raises(ValueError, match="link: expected one of"):
        la.predictive(X, "logit")
    with pytest.raises(ValueError, match="key: link='mc' draws"):
        la.predictive(X, "mc")
    with pytest.raises(ValueError, match=r"X: expected shape \(n\[0\], m\)"):
        la.predictive(X.T)
    with pytest.raises(ValueError, match="method: expected one of"):
        lp.optimize_prior_precision(la, method="newton")
    with pytest.raises(ValueError, match="X_val, Y_val: method='grid' needs"):
        lp.optimize_prior_precision(la, method="grid")
    with pytest.raises(ValueError, match="fit_sigma_noise: only mean_squared_error"):
        lp.optimize_prior_precision(la, fit_sigma_noise=True)
    with pytest.raises(TypeError, match="n: expected a positive integer"):
        la.sample(jax.random.key(0), 2.5)


@pytest.mark.slow
def test_kfac_mc_is_unbiased_in_expectation(softmax_problem):
    """kron with Monte Carlo factors (KFAC): the mean of the G factor over draws is the exact
    factor within 5 standard errors (its eigendecomposition reassembled)."""
    net, params, X, Y = softmax_problem
    exact = lp.laplace(net, params, X, Y, structure="kron")

    def G_of(la, l):
        return np.asarray((la.curvature["U_G"][l] * la.curvature["eig_G"][l]) @ la.curvature["U_G"][l].T)
    draws = np.stack([G_of(lp.laplace(net, params, X, Y, structure="kron", mc_samples=50,
                                      key=jax.random.key(i)), 2) for i in range(20)])
    se = draws.std(0) / np.sqrt(len(draws)) + 1e-12
    assert np.all(np.abs(draws.mean(0) - G_of(exact, 2)) <= 5 * se + 1e-9)


# ----------------------------------------------------------------------------- use


def test_from_fit_is_a_stationary_point_of_the_evidence():
    """from_fit on a fit-result-like object (regression, "full": the ascent on G's eigenvalues):
    the prior precision and noise scale it returns have a zero evidence gradient (LA8), (LA9)
    by the Cholesky path; a given prior is kept; a diverged result and a wrong type are
    refused by name."""
    from types import SimpleNamespace

    net, params, X, Y = problem("regression", m=12)
    result = SimpleNamespace(status="completed", state=SimpleNamespace(params=params))
    la = lp.from_fit(net, result, X, Y, structure="full", steps=2000)  # eigenvalue ascent
    _, g_rho, g_s = lp.evidence.log_marginal_likelihood_and_grad(
        la, jnp.log(la.prior_precision), jnp.log(la.sigma_noise))
    assert abs(float(g_rho)) <= 1e-6 and abs(float(g_s)) <= 1e-6
    fixed = lp.from_fit(net, params, X, Y, structure="diag", prior_precision=2.0,
                        sigma_noise=0.5)
    assert float(fixed.prior_precision) == 2.0 and float(fixed.sigma_noise) == 0.5
    with pytest.raises(ValueError, match=r"^sigma_noise: a regression posterior with a given "
                                         r"prior_precision needs its noise scale"):
        lp.from_fit(net, params, X, Y, structure="diag", prior_precision=2.0)
    with pytest.raises(ValueError, match="result: the training diverged"):
        lp.from_fit(net, SimpleNamespace(status="diverged", state=None), X, Y)
    with pytest.raises(TypeError, match="result: expected a FitResult"):
        lp.from_fit(net, {"W": 1}, X, Y)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a, a]), params)  # an ensemble of K = 3
    with pytest.raises(ValueError, match=r"^result: an ensemble's params \(K = 3 members "
                                         r"stacked on a leading axis\); .*a\[k\]"):
        lp.from_fit(net, stacked, X, Y)


def test_report_metrics_against_independent_computations():
    """ECE (15 bins) against a histogram computation; AUROC against the rank-sum form of
    the Mann-Whitney statistic (average ranks for ties)."""
    from scipy.stats import rankdata

    from _common import laplace_report as rep_

    rng = np.random.default_rng(3)
    conf = rng.uniform(0.2, 1.0, 500)
    correct = (rng.uniform(size=500) < conf ** 2).astype(float)
    counts, edges = np.histogram(conf, bins=15, range=(0.0, 1.0))
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, 14)
    expect = sum(abs(correct[which == b].mean() - conf[which == b].mean()) * counts[b] / 500
                 for b in range(15) if counts[b])
    assert abs(rep_.ece(conf, correct)[0] - expect) <= 1e-12
    s_in, s_out = rng.normal(1.0, 1.0, 40), np.round(rng.normal(0.0, 1.0, 30), 1)
    ranks = rankdata(np.r_[s_in, s_out])[:40]
    auc = (ranks.sum() - 40 * 41 / 2) / (40 * 30)
    assert abs(rep_.auroc(s_in, s_out) - auc) <= 1e-12


def test_train_cli_laplace_refusals(tmp_path, capsys):
    """--laplace with --ensemble, and with --dp (the posterior would not be private), is
    refused (exit 2, naming both flags) before anything is trained."""
    from helpers import load_script

    cli = load_script("train", "train_cli_laplace")
    for i, other in enumerate([["--ensemble", "2"], ["--dp", "--target-epsilon", "2"]]):
        out = tmp_path / f"run{i}"
        assert cli.main(["--dataset", "breast_cancer", "--hidden", "4", "--epochs", "1",
                         "--no-progress", "--laplace", "kron", *other,
                         "--out", str(out)]) == 2
        assert not (out / "results.json").exists()
        err = capsys.readouterr().err
        assert "--laplace" in err and other[0] in err


@pytest.mark.slow
def test_train_cli_laplace_writes_the_side_by_side_block(tmp_path):
    """train.py --laplace kron: results.json's "laplace" block holds MAP and Laplace numbers,
    the MAP's equal the final test metrics, and the reliability SVG is written."""
    import json

    from helpers import load_script

    cli = load_script("train", "train_cli_laplace")
    out = tmp_path / "run"
    assert cli.main(["--dataset", "breast_cancer", "--hidden", "8", "--epochs", "3",
                     "--batch-size", "64", "--no-progress", "--laplace", "kron",
                     "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())["laplace"]
    assert doc["structure"] == "kron" and (out / doc["reliability_svg"]).exists()
    final = json.loads((out / "results.json").read_text())["final"]["test"]
    assert abs(doc["map"]["accuracy"] - final["accuracy"]) <= 1e-6
    for w in ("map", "laplace"):
        assert 0.0 <= doc[w]["ece"] <= 1.0 and 0.0 <= doc[w]["ood_auroc"] <= 1.0
