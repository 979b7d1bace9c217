"""K-FAC as an optax transformation (jaxmlp.train.kfac) and inside the scanned training epoch.

* on one linear layer with mean squared error, kron(G, A) is the exact Hessian, so one
  undamped K-FAC step with learning rate 1 is the Newton step: it lands on the
  least-squares solution (checked against NumPy's lstsq), from the optax API and from
  jaxmlp.train.step's step;
* inverses are refreshed every k steps and kept in between;
* the one-call epoch runs K-FAC (exact and Monte Carlo factors) and lowers the cost;
* bad input.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.quantities import curvature
from jaxmlp.train import kfac
from jaxmlp import train
from jaxmlp.oracle.verification import random_problem


def lstsq_solution(X, Y):
    """[W b] minimising sum (W x + b - y)^2, by NumPy."""
    Xb = np.vstack([np.asarray(X), np.ones((1, X.shape[1]))])  # (n0 + 1, m)
    sol, *_ = np.linalg.lstsq(Xb.T, np.asarray(Y).T, rcond=None)  # (n0 + 1, nL)
    return sol.T


@pytest.fixture(scope="module")
def regression():
    net = jaxmlp.Network((4, 3), ("linear",), "mean_squared_error")
    params, X, Y = random_problem(net, jax.random.PRNGKey(0), 32)
    return net, params, X, Y


def test_kfac_step_is_newton_step_on_linear_regression(regression):
    net, params, X, Y = regression
    opt = kfac.kfac(1.0, damping=1e-24)
    state = opt.init(params)
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    factors = curvature.kfac_factors(net, params, X, Y)
    updates, state = opt.update(grads, state, params, kfac_factors=factors)
    new = optax.apply_updates(params, updates)
    got = np.hstack([np.asarray(new[0]["W"]), np.asarray(new[0]["b"])[:, None]])
    np.testing.assert_allclose(got, lstsq_solution(X, Y), rtol=1e-8, atol=1e-10)
    # The gradient at the solution is zero.
    _, g = jaxmlp.value_and_grad(net, new, X, Y)
    assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g)) <= 1e-10


def test_training_step_computes_factors_and_takes_newton_step(regression):
    net, params, X, Y = regression
    opt = train.make_optimizer("kfac", 1.0, damping=1e-24)
    step = train.make_train_step(net, opt)
    new, state, metrics = step(params, opt.init(params), X, Y)
    got = np.hstack([np.asarray(new[0]["W"]), np.asarray(new[0]["b"])[:, None]])
    np.testing.assert_allclose(got, lstsq_solution(X, Y), rtol=1e-8, atol=1e-10)
    assert int(state.count) == 1
    assert float(metrics.cost) == pytest.approx(float(jaxmlp.loss(net, params, X, Y)), rel=1e-12)


def test_inverses_refreshed_every_k_steps():
    net = jaxmlp.Network((3, 4, 2), ("tanh", "linear"), "mean_squared_error")
    params, X, Y = random_problem(net, jax.random.PRNGKey(1), 8)
    opt = kfac.kfac(0.1, damping=1e-2, inverse_every=3)
    state = opt.init(params)
    update = jax.jit(lambda g, s, p, f: opt.update(g, s, p, kfac_factors=f))
    inverses = []
    for _ in range(4):
        _, grads = jaxmlp.value_and_grad(net, params, X, Y)
        f = curvature.kfac_factors(net, params, X, Y)
        upd, state = update(grads, state, params, f)
        params = optax.apply_updates(params, upd)
        inverses.append(state.inverses)
    same = lambda a, b: all(bool(jnp.array_equal(x, y))  # noqa: E731
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(inverses[0], inverses[1]) and same(inverses[1], inverses[2])  # steps 1, 2 reuse
    assert not same(inverses[2], inverses[3])  # step 3 refreshes
    # The refreshed inverse is the damped inverse of the running factors.
    A, G = state.factors[0]
    A_inv, G_inv = state.inverses[0]
    lam = np.sqrt(1e-2)
    pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    np.testing.assert_allclose(A_inv @ (A + pi * lam * np.eye(A.shape[0])), np.eye(A.shape[0]),
                               atol=1e-9)
    np.testing.assert_allclose(G_inv @ (G + lam / pi * np.eye(G.shape[0])), np.eye(G.shape[0]),
                               atol=1e-9)


@pytest.mark.parametrize("kind", ["exact", "mc", "empirical"])
def test_kfac_in_the_scanned_epoch(kind):
    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    params, X, _ = random_problem(net, jax.random.PRNGKey(2), 64, jnp.float32)
    T = jax.random.normal(jax.random.PRNGKey(4), (3, 4), jnp.float32)  # learnable labels
    Y = jax.nn.one_hot(jnp.argmax(T @ X, axis=0), 3, dtype=jnp.float32).T
    opt = train.make_optimizer("kfac", 0.5, damping=1e-2, kfac_kind=kind)
    epoch = train.make_train_epoch(net, opt, batch_size=16)
    state = opt.init(params)
    J0 = float(jaxmlp.loss(net, params, X, Y))
    key = jax.random.PRNGKey(3)
    for _ in range(5):
        key, k = train.split_key(key)
        params, state, metrics = epoch(params, state, k, X, Y)
    assert metrics.cost.shape == (4,)
    assert int(state.count) == 20
    assert float(jaxmlp.loss(net, params, X, Y)) < 0.6 * J0


def test_missing_factors_and_bad_options(regression):
    net, params, X, Y = regression
    opt = kfac.kfac(1.0)
    state = opt.init(params)
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    with pytest.raises(ValueError, match="kfac_factors"):
        opt.update(grads, state, params)
    with pytest.raises(ValueError, match="kfac_factors"):
        opt.update(grads, state, params, kfac_factors=[])
    with pytest.raises(ValueError, match="damping"):
        kfac.kfac(1.0, damping=0.0)
    with pytest.raises(ValueError, match="inverse_every"):
        kfac.kfac(1.0, inverse_every=0)
    with pytest.raises(ValueError, match="kind"):
        kfac.kfac(1.0, kind="kflr")
    with pytest.raises(ValueError, match="optimizer"):
        train.make_optimizer("kfacc", 1.0)


def test_kl_clip_bounds_the_step(regression):
    """With kl_clip = c the step satisfies eta_eff^2 v.g = c whenever unclipped it exceeds c."""
    net, params, X, Y = regression
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    factors = curvature.kfac_factors(net, params, X, Y)
    free = kfac.kfac(1.0, damping=1e-3)
    u0, _ = free.update(grads, free.init(params), params, kfac_factors=factors)
    v_dot_g = sum(float(jnp.vdot(-a, g)) for a, g in zip(jax.tree.leaves(u0), jax.tree.leaves(grads)))
    c = 1e-3 * v_dot_g
    clipped = kfac.kfac(1.0, damping=1e-3, kl_clip=c)
    u, _ = clipped.update(grads, clipped.init(params), params, kfac_factors=factors)
    scale = np.sqrt(c / v_dot_g)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u0)):
        np.testing.assert_allclose(np.asarray(a), scale * np.asarray(b), rtol=1e-10)


def test_make_optimizer_passes_the_kl_clip(regression):
    """train.make_optimizer("kfac", kfac_kl_clip=c) is kfac.kfac(..., kl_clip=c) in the step."""
    net, params, X, Y = regression
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    factors = curvature.kfac_factors(net, params, X, Y)
    ref = kfac.kfac(0.5, damping=1e-3, kl_clip=1e-6)
    u_ref, _ = ref.update(grads, ref.init(params), params, kfac_factors=factors)
    step = train.make_train_step(net, train.make_optimizer("kfac", 0.5, kfac_kl_clip=1e-6))
    opt = train.make_optimizer("kfac", 0.5, kfac_kl_clip=1e-6)
    new, _, _ = step(params, opt.init(params), X, Y)
    for p, n, u in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(u_ref)):
        np.testing.assert_allclose(np.asarray(n) - np.asarray(p), np.asarray(u), rtol=1e-9, atol=1e-15)
    free = kfac.kfac(0.5, damping=1e-3)  # the clip is active here: the free step is longer
    u_free, _ = free.update(grads, free.init(params), params, kfac_factors=factors)
    assert optax.global_norm(u_free) > 10 * optax.global_norm(u_ref)
    with pytest.raises(ValueError, match="^kl_clip"):
        train.make_optimizer("kfac", 0.5, kfac_kl_clip=0.0)
