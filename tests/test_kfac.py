"""K-FAC as an optax transformation (jaxmlp.train.kfac) and inside the scanned training epoch.

* on one linear layer with mean squared error, kron(G, A) is the exact Hessian, so one
  undamped K-FAC step with learning rate 1 is the Newton step: it lands on the
  least-squares solution (checked against NumPy's lstsq), from the optax API and from
  jaxmlp.train.step's step;
* inverses are refreshed every k steps and kept in between;
* the one-call epoch runs K-FAC (exact and Monte Carlo factors) and lowers the cost;
* bad input;
* the quadratic model (K5): its learning rate and momentum equal the brute-force solution
  of the 2 x 2 system with the dense GGN of autodiff (float64, <= 1e-10), and the GGN Gram
  matrix (H13) equals <V_i, ggn_vp(V_j)>;
* Levenberg-Marquardt damping (K6) goes down on a quadratic problem (rho = 1) and up where
  the model overshoots;
* amortised inverses (K2) / (K2e) equal recomputed ones on the refresh steps, statistics
  (K1) change only every curvature_every steps, and the compiled epoch keeps the lax.cond as
  a conditional;
* the factors' statistics on a 4-device data mesh equal the one-device ones (a subprocess
  with forced host devices, as tests/test_sharding.py).
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

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


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """LAPACK (LU, eigh) on one OpenBLAS thread: on a loaded 2-core machine its default of
    one thread per core measured 100x slower (docs/curvature.md)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def regression():
    net = jaxmlp.Network((4, 3), ("linear",), "mean_squared_error")
    params, X, Y = random_problem(net, jax.random.PRNGKey(0), 32)
    return net, params, X, Y


def test_kfac_step_is_newton_step_on_linear_regression(regression):
    net, params, X, Y = regression
    opt = kfac.kfac(1.0, damping=1e-24, inverse_every=1, kl_clip=None)
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
    opt = train.make_optimizer("kfac", 1.0, damping=1e-24, kfac_kind="exact",
                               kfac_kl_clip=None)
    step = train.make_train_step(net, opt)
    new, state, metrics = step(params, opt.init(params), X, Y)
    got = np.hstack([np.asarray(new[0]["W"]), np.asarray(new[0]["b"])[:, None]])
    np.testing.assert_allclose(got, lstsq_solution(X, Y), rtol=1e-8, atol=1e-10)
    assert int(state.count) == 1
    assert float(metrics.cost) == pytest.approx(float(jaxmlp.loss(net, params, X, Y)), rel=1e-12)


@pytest.mark.slow  # the default suite checks the same schedule in test_amortised_inverses_...
def test_inverses_refreshed_every_k_steps():
    net = jaxmlp.Network((3, 4, 2), ("tanh", "linear"), "mean_squared_error")
    params, X, Y = random_problem(net, jax.random.PRNGKey(1), 8)
    opt = kfac.kfac(0.1, damping=1e-2, inverse_every=3, curvature_every=1, kl_clip=None)
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


@pytest.mark.slow  # the default suite trains the default (mc) K-FAC in the epoch below
@pytest.mark.parametrize("kind", ["exact", "mc", "empirical"])
def test_kfac_in_the_scanned_epoch(kind):
    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    params, X, _ = random_problem(net, jax.random.PRNGKey(2), 64, jnp.float32)
    T = jax.random.normal(jax.random.PRNGKey(4), (3, 4), jnp.float32)  # learnable labels
    Y = jax.nn.one_hot(jnp.argmax(T @ X, axis=0), 3, dtype=jnp.float32).T
    opt = train.make_optimizer("kfac", 0.5, damping=1e-2, kfac_kind=kind, inverse_every=1,
                               kfac_curvature_every=1, kfac_kl_clip=None)
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
    # wrapped, the training step cannot see it is K-FAC: the error says so
    wrapped = optax.chain(optax.clip_by_global_norm(1.0), opt)
    with pytest.raises(ValueError, match="not one wrapped in optax.chain"):
        train.make_train_step(net, wrapped)(params, wrapped.init(params), X, Y)
    with pytest.raises(ValueError, match="damping"):
        kfac.kfac(1.0, damping=0.0)
    with pytest.raises(ValueError, match="inverse_every"):
        kfac.kfac(1.0, inverse_every=0)
    with pytest.raises(ValueError, match="kind"):
        kfac.kfac(1.0, kind="kflr")
    with pytest.raises(ValueError, match="optimizer"):
        train.make_optimizer("kfacc", 1.0)


def test_learning_rate_as_an_array_and_held_in_the_state(regression):
    """A concrete 0-d rate is the number it holds; a traced one (optax.inject_hyperparams
    under jax.jit) is the state's: with the state's rate set to 1/2 the undamped first step
    on least squares goes half way to the solution (K3)-(K4); a 1-d rate is refused."""
    net, params, X, Y = regression
    assert kfac.kfac(jnp.float64(0.3), damping=jnp.asarray(1e-2)).options == kfac.kfac(
        0.3, damping=1e-2).options
    make = lambda learning_rate: kfac.kfac(learning_rate, damping=1e-24, kl_clip=None)  # noqa: E731
    opt = optax.inject_hyperparams(make)(learning_rate=1.0)
    state = opt.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.5)
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    factors = curvature.kfac_factors(net, params, X, Y)
    u, state = jax.jit(lambda s: opt.update(grads, s, params, kfac_factors=factors))(state)
    new = optax.apply_updates(params, u)
    got = np.hstack([np.asarray(new[0]["W"]), np.asarray(new[0]["b"])[:, None]])
    old = np.hstack([np.asarray(params[0]["W"]), np.asarray(params[0]["b"])[:, None]])
    np.testing.assert_allclose(got, old + 0.5 * (lstsq_solution(X, Y) - old), rtol=1e-8,
                               atol=1e-10)
    assert float(state.inner_state.alpha) == 0.5
    with pytest.raises(TypeError, match=r"learning_rate: expected a number > 0 or a 0-d floating "
                                        r"array, got an array of shape \(2,\) and dtype float64"):
        jax.jit(lambda r: make(r).init(params))(jnp.ones(2))
    # optax.inject_hyperparams(kfac) itself holds the seed too, as an array: refused with the
    # form that works
    with pytest.raises(TypeError, match=r"seed: expected a Python integer, got an array .*"
                                        r"optax.inject_hyperparams\(lambda learning_rate"):
        optax.inject_hyperparams(kfac.kfac)(learning_rate=0.1).init(params)


def test_kl_clip_bounds_the_step(regression):
    """With kl_clip = c the step satisfies eta_eff^2 v.g = c whenever unclipped it exceeds c."""
    net, params, X, Y = regression
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    factors = curvature.kfac_factors(net, params, X, Y)
    free = kfac.kfac(1.0, damping=1e-3, inverse_every=1, kl_clip=None)
    u0, _ = free.update(grads, free.init(params), params, kfac_factors=factors)
    v_dot_g = sum(float(jnp.vdot(-a, g)) for a, g in zip(jax.tree.leaves(u0), jax.tree.leaves(grads)))
    c = 1e-3 * v_dot_g
    clipped = kfac.kfac(1.0, damping=1e-3, kl_clip=c, inverse_every=1)
    u, _ = clipped.update(grads, clipped.init(params), params, kfac_factors=factors)
    scale = np.sqrt(c / v_dot_g)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u0)):
        np.testing.assert_allclose(np.asarray(a), scale * np.asarray(b), rtol=1e-10)


def test_make_optimizer_passes_the_kl_clip(regression):
    """train.make_optimizer("kfac", kfac_kl_clip=c) is kfac.kfac(..., kl_clip=c) in the step."""
    net, params, X, Y = regression
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    factors = curvature.kfac_factors(net, params, X, Y)
    ref = kfac.kfac(0.5, damping=1e-3, kl_clip=1e-6, kind="exact")
    u_ref, _ = ref.update(grads, ref.init(params), params, kfac_factors=factors)
    opt = train.make_optimizer("kfac", 0.5, kfac_kl_clip=1e-6, kfac_kind="exact")
    step = train.make_train_step(net, opt)
    new, _, _ = step(params, opt.init(params), X, Y)
    for p, n, u in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(u_ref)):
        np.testing.assert_allclose(np.asarray(n) - np.asarray(p), np.asarray(u), rtol=1e-9, atol=1e-15)
    free = kfac.kfac(0.5, damping=1e-3, kl_clip=None)  # the clip is active here: the free step is longer
    u_free, _ = free.update(grads, free.init(params), params, kfac_factors=factors)
    assert optax.tree.norm(u_free) > 10 * optax.tree.norm(u_ref)
    with pytest.raises(ValueError, match="^kl_clip"):
        train.make_optimizer("kfac", 0.5, kfac_kl_clip=0.0)
    # make_optimizer's K-FAC defaults are kfac's (kfac.DEFAULTS)
    assert train.make_optimizer("kfac", 0.5).options == kfac.kfac(0.5).options
    assert (train.make_optimizer("kfac", None, kfac_adaptive=True).options
            == kfac.kfac(None, adaptive_lr=True, adaptive_momentum=True).options)


# ----------------------------------------------------------------------------- quadratic model


def _model(net, params, X, Y):
    """The QuadraticModel of the training step, built from the public API."""
    return kfac.QuadraticModel(
        cost=jaxmlp.loss(net, params, X, Y),
        loss=lambda p: jaxmlp.loss(net, p, X, Y),
        gram=lambda Vs: curvature.ggn_gram(net, params, X, Y, list(Vs)))


@functools.partial(jax.jit, static_argnums=0)
def _dense_ggn(net, params, X, Y):
    """G = J^T H J by autodiff: J = jax.jacobian of Z[L] in the flat parameters, H =
    jax.hessian of the cost in Z[L] (the split of every cost used here), one compiled call."""
    from jax.flatten_util import ravel_pytree

    from jaxmlp.nn import recurrences

    flat, unravel = ravel_pytree(params)

    def out(theta):
        return recurrences.forward_pass(net, unravel(theta), X)[1].Z[-1]

    z = out(flat)
    Jac = jax.jacobian(out)(flat).reshape(z.size, flat.size)
    cost = lambda z: recurrences.cost(net, z, net.layer_activations[-1].forward(z), Y)  # noqa: E731
    H = jax.hessian(cost)(z).reshape(z.size, z.size)
    return Jac.T @ H @ Jac


@pytest.mark.parametrize("spec", [
    ((3, 5, 2), ("tanh", "linear"), "mean_squared_error"),
    pytest.param(((4, 6, 3), ("tanh", "softmax"), "categorical_cross_entropy"),
                 marks=pytest.mark.slow),
])
def test_quadratic_model_solves_the_2x2_system(spec):
    """(K5) alpha, mu equal -C^{-1} b with C from the dense GGN of jax.jacobian/jax.hessian."""
    from jax.flatten_util import ravel_pytree


    net = jaxmlp.Network(*spec)
    params, X, Y = random_problem(net, jax.random.PRNGKey(5), 12)
    wd, lam = 1e-2, 3e-2
    opt = kfac.kfac(None, adaptive_lr=True, adaptive_momentum=True, damping=lam, weight_decay=wd,
                    kind="exact", inverse_every=1, curvature_every=1)
    # a previous update delta_prev: a random direction, at step 1
    prev = jax.tree.map(lambda a: 0.1 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape,
                                                          a.dtype), params)
    state0 = opt.init(params)._replace(count=jnp.asarray(1, jnp.int32), velocity=prev)
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)

    @jax.jit
    def update(g, s, p, cost_scale):  # cost_scale < 1: a J small enough for (K5'') to act
        model = _model(net, p, X, Y)
        return opt.update(g, s, p, kfac_factors=curvature.kfac_factors(net, p, X, Y),
                          kfac_model=model._replace(cost=cost_scale * model.cost))
    # brute force at the last step's params
    G = _dense_ggn(net, params, X, Y)
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    g = ravel_pytree(grads)[0] + wd * ravel_pytree([{"W": p["W"], "b": 0 * p["b"]} for p in params])[0]
    w_mask = ravel_pytree([{"W": jnp.ones_like(p["W"]), "b": jnp.zeros_like(p["b"])} for p in params])[0]
    C = np.asarray(G) + np.diag(lam + wd * np.asarray(w_mask))
    f = [(np.asarray(A), np.asarray(Gf)) for A, Gf in curvature.kfac_factors(net, params, X, Y)]
    lt = np.sqrt(lam + wd)
    Delta_layers = []  # (K3) with the first statistics (weight 1, (K1)) and (K2)
    for (A, Gf), gl, p in zip(f, grads, params):
        Gam = np.hstack([np.asarray(gl["W"]) + wd * np.asarray(p["W"]), np.asarray(gl["b"])[:, None]])
        pA = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(Gf) / Gf.shape[0]))
        P = np.linalg.solve(Gf + lt / pA * np.eye(Gf.shape[0]),
                            Gam) @ np.linalg.inv(A + pA * lt * np.eye(A.shape[0]))
        Delta_layers.append({"W": -P[:, :-1], "b": -P[:, -1]})
    D = np.asarray(ravel_pytree(Delta_layers)[0])
    d0 = np.asarray(ravel_pytree(prev)[0])
    M = np.array([[D @ C @ D, D @ C @ d0], [d0 @ C @ D, d0 @ C @ d0]])
    b = np.array([g @ D, g @ d0])
    alpha, mu = -np.linalg.solve(M, b)
    assert abs(np.linalg.det(M)) > 1e-3 * M[0, 0] * M[1, 1]  # a real 2 x 2
    if not 0 <= mu <= kfac.MAX_MOMENTUM:  # (K5'): mu clamped, alpha the model's best given it
        mu = min(max(mu, 0.0), kfac.MAX_MOMENTUM)
        alpha = -(b[0] + mu * M[0, 1]) / M[0, 0]
    coef = np.array([alpha, mu])
    decrease = -(0.5 * coef @ M @ coef + b @ coef)  # -M(delta) of the model's step
    J = float(jaxmlp.loss(net, params, X, Y))
    for cost_scale in (1.0, 1e-3 * decrease / J):
        upd, state = update(grads, state0, params, cost_scale)
        # (K5''): the step scaled so that its predicted decrease is at most J
        s = min(1.0, cost_scale * J / decrease)
        assert (s < 1) == (cost_scale < 1)  # the unclipped step predicts less than J here
        assert abs(float(state.alpha) - s * alpha) <= 1e-10 * abs(s * alpha)
        assert abs(float(state.mu) - s * mu) <= 1e-10 * max(abs(s * mu), abs(s * alpha))
        got = np.asarray(ravel_pytree(upd)[0])
        np.testing.assert_allclose(got, s * (alpha * D + mu * d0), rtol=1e-10,
                                   atol=1e-12 * np.abs(got).max())


def test_ggn_gram_equals_ggn_vp_products():
    """(H13) v_i^T G v_j by the R-forward sweep alone = <v_i, ggn_vp(v_j)>, both pair kinds."""
    for spec in [((3, 5, 2), ("tanh", "linear"), "mean_squared_error"),
                 ((3, 5, 2), ("tanh", "sigmoid"), "mean_squared_error")]:
        net = jaxmlp.Network(*spec)
        params, X, Y = random_problem(net, jax.random.PRNGKey(6), 9)
        Vs = [jax.tree.map(lambda a, k=k: jax.random.normal(jax.random.PRNGKey(k), a.shape, a.dtype),
                           params) for k in range(3)]
        gram = np.asarray(curvature.ggn_gram(net, params, X, Y, Vs))
        ref = np.array([[float(sum(jnp.vdot(a, b) for a, b in zip(
            jax.tree.leaves(Vi), jax.tree.leaves(curvature.ggn_vp(net, params, X, Y, Vj)))))
            for Vj in Vs] for Vi in Vs])
        np.testing.assert_allclose(gram, ref, rtol=1e-12)
    with pytest.raises(TypeError, match="^Vs"):
        curvature.ggn_gram(net, params, X, Y, [])


def _lm_run(net, params, X, Y, lr, steps):
    opt = kfac.kfac(lr, adaptive_damping=True, damping=1e-2, damping_every=1, kind="exact",
                    kl_clip=None, inverse_every=1)
    state = opt.init(params)
    lams, rhos = [float(state.damping)], []
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, kfac_factors=curvature.kfac_factors(
        net, p, X, Y), kfac_model=_model(net, p, X, Y)))
    for _ in range(steps):
        _, grads = jaxmlp.value_and_grad(net, params, X, Y)
        upd, state = update(grads, state, params)
        params = optax.apply_updates(params, upd)
        lams.append(float(state.damping))
        rhos.append(float(state.rho))
    return lams, rhos


def test_damping_adapts_in_the_right_direction(regression):
    """(K6) on linear least squares the model is exact (rho = 1 > 3/4): lambda shrinks by
    omega each time; with steps 30x too long on a tanh network the cost rises (rho < 1/4):
    lambda grows by 1/omega."""
    net, params, X, Y = regression
    lams, rhos = _lm_run(net, params, X, Y, 0.5, 3)
    omega = 19 / 20
    np.testing.assert_allclose(rhos, 1.0, rtol=1e-8)
    np.testing.assert_allclose(lams[1:], [1e-2 * omega ** k for k in (1, 2, 3)], rtol=1e-12)
    net2 = jaxmlp.Network((3, 8, 2), ("tanh", "linear"), "mean_squared_error")
    params2, X2, Y2 = random_problem(net2, jax.random.PRNGKey(8), 16)
    lams, rhos = _lm_run(net2, params2, X2, Y2, 30.0, 3)
    assert all(r < 0.25 for r in rhos), rhos
    np.testing.assert_allclose(lams[1:], [1e-2 / omega ** k for k in (1, 2, 3)], rtol=1e-12)


# ----------------------------------------------------------------------------- amortisation


def _same(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow  # a long test (10 s): the slow suite (scripts/test.sh --slow)
@pytest.mark.parametrize("adaptive", [False, True])
def test_amortised_inverses_equal_recomputed_ones(adaptive):
    """(K2)/(K2e): on refresh steps (and, adaptive, when lambda changed) the inverses are the
    damped inverses of the current averages; in between they are kept. (K1): the averages
    change on statistics steps only."""
    net = jaxmlp.Network((3, 6, 2), ("tanh", "linear"), "mean_squared_error")
    params, X, Y = random_problem(net, jax.random.PRNGKey(9), 10)
    opt = kfac.kfac(0.1, inverse_every=3, curvature_every=2, kind="exact",
                    adaptive_damping=adaptive, damping=1e-2, damping_every=2)
    state = opt.init(params)
    update = jax.jit(lambda g, s, p: opt.update(
        g, s, p, kfac_factors=lambda: curvature.kfac_factors(net, p, X, Y),
        **({"kfac_model": _model(net, p, X, Y)} if adaptive else {})))
    rebuilt = 0
    for c in range(7):
        old = state
        _, grads = jaxmlp.value_and_grad(net, params, X, Y)
        upd, state = update(grads, state, params)
        params = optax.apply_updates(params, upd)
        assert _same(state.factors, old.factors) == (c % 2 != 0), c
        lam_used = float(old.damping)
        if c % 3 == 0:
            refreshed = state.factors  # the factors of the last factorisation
        rebuild = adaptive and c % 3 != 0 and lam_used != float(old.inverse_damping)
        rebuilt += rebuild
        if c % 3 == 0 or rebuild:  # a new damping: the last factorisation, the new lambda
            want = kfac._damped_inverses(refreshed, lam_used)
            for (a, g), (wa, wg) in zip(state.inverses, want):
                np.testing.assert_allclose(np.asarray(a), np.asarray(wa), rtol=1e-9, atol=1e-10,
                                           err_msg=f"step {c}")
                np.testing.assert_allclose(np.asarray(g), np.asarray(wg), rtol=1e-9, atol=1e-10,
                                           err_msg=f"step {c}")
        else:
            assert _same(state.inverses, old.inverses), c
    if adaptive:
        assert rebuilt >= 1 and float(state.damping) != 1e-2  # it moved, and the inverses followed it


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_epoch_keeps_the_conditionals_and_trains_with_defaults():
    """kfac(lr) with its defaults trains in the scanned epoch; the compiled epoch holds the
    lax.cond branches as conditionals (only the taken branch runs)."""
    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    params, X, _ = random_problem(net, jax.random.PRNGKey(2), 64, jnp.float32)
    T = jax.random.normal(jax.random.PRNGKey(4), (3, 4), jnp.float32)
    Y = jax.nn.one_hot(jnp.argmax(T @ X, axis=0), 3, dtype=jnp.float32).T
    for opt in (kfac.kfac(0.3), kfac.kfac(None, adaptive_lr=True, adaptive_momentum=True,
                                          adaptive_damping=True)):
        epoch = train.make_train_epoch(net, opt, batch_size=16, check_data=False)
        state = opt.init(params)
        text = epoch.lower(params, state, jax.random.PRNGKey(0), X, Y).compile().as_text()
        assert text.count(" conditional(") >= 2
        p, key = params, jax.random.PRNGKey(3)
        for _ in range(5):
            key, k = train.split_key(key)
            p, state, _ = epoch(p, state, k, X, Y)
        assert float(jaxmlp.loss(net, p, X, Y)) < 0.6 * float(jaxmlp.loss(net, params, X, Y))


def test_bad_adaptive_options():
    with pytest.raises(ValueError, match="^learning_rate"):
        kfac.kfac(0.1, adaptive_lr=True)
    with pytest.raises(ValueError, match="^learning_rate"):
        kfac.kfac(None)
    with pytest.raises(ValueError, match="^adaptive_momentum"):
        kfac.kfac(0.1, adaptive_momentum=True)
    with pytest.raises(ValueError, match="^kl_clip"):
        kfac.kfac(None, adaptive_lr=True, kl_clip=1e-2)
    with pytest.raises(ValueError, match="^curvature_every"):
        kfac.kfac(0.1, curvature_every=0)
    with pytest.raises(TypeError, match="^adaptive_damping"):
        kfac.kfac(0.1, adaptive_damping=1)
    net = jaxmlp.Network((3, 2), ("linear",), "mean_squared_error")
    params, X, Y = random_problem(net, jax.random.PRNGKey(0), 4)
    opt = kfac.kfac(None, adaptive_lr=True)
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    with pytest.raises(ValueError, match="^kfac_model"):
        opt.update(grads, opt.init(params), params,
                   kfac_factors=curvature.kfac_factors(net, params, X, Y))
    # Monte Carlo samples with exact or empirical factors: refused, as kfac_factors does
    with pytest.raises(ValueError, match=r"^mc_samples: only kind='mc' draws samples, got "
                                         r"mc_samples=3 with kind='exact'\.$"):
        kfac.kfac(0.1, kind="exact", mc_samples=3)
    # factors that are not (A, G) pairs of arrays: the module's own messages
    fixed = kfac.kfac(0.1)
    state = fixed.init(params)
    for bad, message in (("x", r"^kfac_factors: expected 1 layers of \(A, G\) pairs, got str"),
                         ([(1, 2, 3)], r"^kfac_factors\[0\] \(layer 1\): expected an \(A, G\) "
                                       r"pair of arrays of shapes \(4, 4\) and \(2, 2\)"),
                         ([(1, 2)], r"^kfac_factors\[0\] \(layer 1\): expected an \(A, G\)"),
                         (lambda: "x", r"^kfac_factors: the function given returned no \(A, G\) "
                                       r"arrays")):
        with pytest.raises(ValueError, match=message):
            fixed.update(grads, state, params, kfac_factors=bad)


# ----------------------------------------------------------------------------- data parallel

_CHILD = textwrap.dedent(r"""
    import json, jax, jax.numpy as jnp, numpy as np
    import jaxmlp
    from jaxmlp import train
    from jaxmlp.train import kfac
    from jaxmlp.parallel import sharding
    mesh = sharding.make_mesh(4)
    net = jaxmlp.Network((5, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 64)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, rng.integers(0, 3, 64)]
    opt = kfac.kfac(None, adaptive_lr=True, adaptive_momentum=True, adaptive_damping=True,
                    kind="exact", inverse_every=2)
    out = {}
    from jax.sharding import NamedSharding, PartitionSpec as P
    for name, sh in (("one", None), ("four", NamedSharding(mesh, P(None, "data")))):
        epoch = train.make_train_epoch(net, opt, 16, batch_sharding=sh)
        p = params if sh is None else sharding.replicate(mesh, params)
        s = opt.init(p)
        p, s, mt = epoch(p, s, jax.random.PRNGKey(2), jnp.asarray(X), jnp.asarray(Y))
        out[name] = {"params": [np.asarray(l).tolist() for l in jax.tree.leaves(p)],
                     "factors": [np.asarray(l).tolist() for l in jax.tree.leaves(s.factors)],
                     "damping": float(s.damping)}
        if sh is not None:
            hlo = epoch.lower(p, s, jax.random.PRNGKey(2), jnp.asarray(X), jnp.asarray(Y)).compile().as_text()
            out["all_reduce"] = hlo.count("all-reduce")
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_factor_statistics_on_a_data_mesh_equal_one_device():
    """Columns split over 4 devices: XLA sums the factors' statistics over the data axis like
    the gradient; the K-FAC epoch (adaptive, exact factors) equals the one-device epoch."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][6:])
    assert out["all_reduce"] > 0
    for key in ("params", "factors"):
        for a, b in zip(out["one"][key], out["four"][key]):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-5)
    assert out["one"]["damping"] == pytest.approx(out["four"]["damping"], rel=1e-5)


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_train_py_saves_the_kfac_flags_and_a_resume_uses_them(tmp_path, capsys):
    """train.py --optimizer kfac writes its --kfac-* flags into the checkpoint's config; a
    resume without them gets the saved ones (not the defaults), a resume with another value
    is refused (exit 2) naming the flag, as a changed --lr is."""
    from helpers import load_script

    cli = load_script("train", "train_cli_kfac")
    from _common import train_config

    out = str(tmp_path / "run")
    flags = ["--kfac-damping", "0.01", "--kfac-inverse-every", "3", "--kfac-adaptive-damping"]
    assert cli.main(["--dataset", "breast_cancer", "--hidden", "4", "--batch-size", "128",
                     "--epochs", "1", "--checkpoint-every", "1", "--optimizer", "kfac",
                     "--no-progress", "--no-plot", "--out", out, *flags]) == 0
    want = {"kfac_damping": 0.01, "kfac_inverse_every": 3, "kfac_adaptive_damping": True}
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["config"]["kfac"] == want
    cfg, _ = train_config.resolve(cli.build_parser().parse_args(["--resume", out, "--epochs", "2"]))
    assert cfg["kfac"] == want
    kw = train_config.kfac_flags.optimizer_kwargs(cfg)
    assert kw["damping"] == 0.01 and kw["inverse_every"] == 3 and kw["kfac_adaptive_damping"]
    capsys.readouterr()
    assert cli.main(["--resume", out, "--epochs", "2", "--kfac-damping", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--kfac-damping 0.1 differs from the checkpoint's 0.01" in err, err


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_train_py_trains_a_kfac_ensemble_at_one_rate(tmp_path, capsys):
    """train.py --optimizer kfac --ensemble K trains K members, each with the factors of its
    own sweep, at one --lr; per-member rates (--member-lrs) are refused naming the flag."""
    from helpers import load_script

    cli = load_script("train", "train_cli_kfac_ensemble")
    out = str(tmp_path / "run")
    base = ["--dataset", "breast_cancer", "--hidden", "4", "--batch-size", "128", "--epochs",
            "1", "--optimizer", "kfac", "--no-progress", "--no-plot"]
    assert cli.main([*base, "--ensemble", "2", "--out", out]) == 0
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["config"]["optimizer"] == "kfac" and res["ensemble"]["K"] == 2
    model = jaxmlp.load_model(out)
    W1 = np.asarray(model.params[0]["W"])
    assert W1.shape[0] == 2 and np.all(np.isfinite(W1))
    assert not np.allclose(W1[0], W1[1])  # two members, two initialisations
    capsys.readouterr()
    assert cli.main([*base, "--member-lrs", "0.1", "0.2", "--out", str(tmp_path / "b")]) == 2
    assert "--member-lrs: not with --optimizer kfac" in capsys.readouterr().err
