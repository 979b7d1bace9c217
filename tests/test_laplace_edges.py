"""jaxmlp.laplace at its edges: the evidence ascent in half precision, G's eigenvalues
("eig") only with a scalar prior, the arguments of optimize_prior_precision and from_fit's
noise scale (docs/laplace.md). Tiny networks; oracles are dense float64 computations."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import laplace as lp
from jaxmlp.laplace import evidence, structures


def problem(kind="softmax", m=12, seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    if kind == "softmax":
        net = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
        Y = np.eye(2)[:, rng.integers(0, 2, m)]
    else:
        net = jaxmlp.Network((3, 4, 2), ("tanh", "linear"), "mean_squared_error")
        Y = rng.normal(size=(2, m))
    params = [{"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1]), dtype),
               "b": jnp.asarray(0.3 * rng.normal(size=s["b"]), dtype)}
              for s in net.param_shapes()]
    return net, params, jnp.asarray(rng.normal(size=(3, m)), dtype), jnp.asarray(Y, dtype)


def widened(la):
    return jax.tree.map(lambda a: a.astype(jnp.float32)
                        if jnp.issubdtype(a.dtype, jnp.floating) else a, la)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("structure", ["diag", "kron"])
def test_evidence_ascent_in_half_precision(dtype, structure):
    """A float16 / bfloat16 posterior's ascent runs in float32: its prior precision is the
    float32 ascent's on the same (widened) posterior rounded to the dtype, at which the
    float32 gradient (LA8) is ~0."""
    net, params, X, Y = problem(dtype=dtype)
    la = lp.laplace(net, params, X, Y, structure=structure)
    opt = lp.optimize_prior_precision(la, steps=400)
    assert opt.prior_precision.dtype == dtype and opt.sigma_noise.dtype == dtype
    ref = lp.optimize_prior_precision(widened(la), steps=400)
    assert ref.prior_precision.dtype == jnp.float32
    assert opt.prior_precision == ref.prior_precision.astype(dtype)
    _, g_rho, _ = evidence.log_marginal_likelihood_and_grad(
        widened(la), jnp.log(ref.prior_precision), jnp.log(ref.sigma_noise))
    assert abs(float(g_rho)) < 1e-3
    assert float(opt.sigma_noise) == 1.0


def test_eig_serves_only_a_scalar_prior_and_must_match_ggn():
    """A "full" posterior holding G's eigenvalues: the evidence at a per-layer and a
    per-parameter prior equals a dense slogdet oracle (LA6) (eig unused), with_prior drops
    eig for them; from_arrays refuses an eig that is not G's."""
    net, params, X, Y = problem(m=10)
    la = lp.laplace(net, params, X, Y, structure="full")
    fields, arrays = la.to_arrays()
    G = np.asarray(la.curvature["ggn"])
    arrays["eig"] = np.maximum(np.linalg.eigvalsh(G), 0.0)
    lb = lp.Posterior.from_arrays(net, fields, arrays)
    assert "eig" in lb.curvature
    theta = np.asarray(lp.flatten(params, [0, 1]))
    P = theta.size
    n1 = 4 * 4
    for prior, d in (([0.5, 3.0], np.r_[np.full(n1, 0.5), np.full(P - n1, 3.0)]),
                     ([{"W": np.full((4, 3), 0.7), "b": np.full(4, 1.3)},
                       {"W": np.full((2, 4), 2.0), "b": np.full(2, 0.4)}],
                      np.r_[np.tile(np.r_[np.full(3, 0.7), 1.3], 4),
                            np.tile(np.r_[np.full(4, 2.0), 0.4], 2)])):
        lml_oracle = (-float(la.loss) - 0.5 * (np.linalg.slogdet(G + np.diag(d))[1]
                                               - np.sum(np.log(d)) + np.sum(d * theta ** 2)))
        assert abs(float(lb.log_marginal_likelihood(prior)) - lml_oracle) < 1e-9
        assert "eig" not in lb.with_prior(prior).curvature
        # a posterior built holding eig with a non-scalar prior: eig is not used either
        direct = dataclasses.replace(lb.with_prior(prior), curvature=lb.curvature)
        logdet, _ = structures.precision_terms(direct, direct.prior_precision, 1.0)
        assert abs(float(logdet) - np.linalg.slogdet(G + np.diag(d))[1]) < 1e-9
    assert "eig" in lb.with_prior(2.0).curvature
    arrays["eig"] = arrays["eig"] * 10
    with pytest.raises(ValueError, match=r"^arrays: eig is not the ascending eigenvalues of "
                                         r"ggn"):
        lp.Posterior.from_arrays(net, fields, arrays)


def test_grid_refuses_targets_outside_the_costs_domain_and_bad_arguments():
    net, params, X, Y = problem()
    la = lp.laplace(net, params, X, Y, structure="diag")
    Xv, Yv = X[:, :5], Y[:, :5]
    for bad in (3 * Yv, -Yv, jnp.zeros_like(Yv)):
        with pytest.raises(ValueError, match=r"^Y_val: categorical_cross_entropy is defined"):
            lp.optimize_prior_precision(la, "grid", X_val=Xv, Y_val=bad)
    with pytest.raises(ValueError, match=r"^grid: expected a 1-D array of positive finite "
                                         r"precisions, got 'abc'"):
        lp.optimize_prior_precision(la, "grid", X_val=Xv, Y_val=Yv, grid="abc")
    with pytest.raises(ValueError, match=r"^grid: expected a 1-D array"):
        lp.optimize_prior_precision(la, "grid", X_val=Xv, Y_val=Yv, grid=[True, False])
    with pytest.raises(TypeError, match=r"^la: expected a Posterior .*, got str\.$"):
        lp.optimize_prior_precision("la")
    for kw in ({"steps": 5}, {"learning_rate": 0.1}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=rf"^{name}: only method='marglik' uses it, got "
                                             r"method='grid'\.$"):
            lp.optimize_prior_precision(la, "grid", X_val=Xv, Y_val=Yv, **kw)
    # marglik keeps its documented defaults: 300 steps of 0.1
    a = lp.optimize_prior_precision(la)
    b = lp.optimize_prior_precision(la, steps=300, learning_rate=0.1)
    assert a.prior_precision == b.prior_precision
    # the grid's choice is the grid value of the smallest validation NLL
    grid = np.array([1e-2, 1.0, 1e2])
    nll = [float(lp.negative_log_likelihood(net, la.with_prior(g).predictive(Xv), Yv))
           for g in grid]
    chosen = lp.optimize_prior_precision(la, "grid", X_val=Xv, Y_val=Yv, grid=grid)
    assert float(chosen.prior_precision) == grid[int(np.argmin(nll))]


def test_from_fit_noise_scale():
    """Regression: sigma_noise given is kept (with a fixed prior: the posterior of laplace
    with both; with the prior chosen: a zero of (LA8) at that noise scale); a fixed prior
    without it is refused naming sigma_noise. A cross-entropy refuses a noise scale other than 1."""
    net, params, X, Y = problem("regression", m=12)
    fixed = lp.from_fit(net, params, X, Y, structure="diag", prior_precision=2.0,
                        sigma_noise=0.5)
    assert float(fixed.sigma_noise) == 0.5 and float(fixed.prior_precision) == 2.0
    ref = lp.laplace(net, params, X, Y, structure="diag", prior_precision=2.0, sigma_noise=0.5)
    assert float(fixed.log_marginal_likelihood()) == float(ref.log_marginal_likelihood())
    with pytest.raises(ValueError, match=r"^sigma_noise: a regression posterior"):
        lp.from_fit(net, params, X, Y, structure="diag", prior_precision=2.0)
    both = lp.from_fit(net, params, X, Y, structure="diag", sigma_noise=0.5, steps=1500)
    assert float(both.sigma_noise) == 0.5
    _, g_rho, _ = evidence.log_marginal_likelihood_and_grad(
        both, jnp.log(both.prior_precision), jnp.log(both.sigma_noise))
    assert abs(float(g_rho)) < 1e-6
    netc, pc, Xc, Yc = problem()
    with pytest.raises(ValueError, match=r"^sigma_noise: only the Gaussian likelihood"):
        lp.from_fit(netc, pc, Xc, Yc, structure="diag", sigma_noise=2.0)


def test_grid_names_the_validation_split_in_shape_errors():
    net, params, X, Y = problem()
    la = lp.laplace(net, params, X, Y, structure="diag")
    with pytest.raises(ValueError, match=r"^X_val: expected shape \(n\[0\], m\)"):
        lp.optimize_prior_precision(la, "grid", X_val=X.T, Y_val=Y)
    with pytest.raises(ValueError, match=r"^Y_val: expected shape \(n\[L\], m\)"):
        lp.optimize_prior_precision(la, "grid", X_val=X, Y_val=Y[:, :2])
