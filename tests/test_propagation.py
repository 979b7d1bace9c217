"""Forward (F1)-(F3) and backward (B1)-(B4) against independent computations.

* the manual gradient against jax.grad of jaxmlp.loss (the oracle) for every
  activation and cost, depths 1-4, shapes including m = 1 and layers of width 1 (the
  default suite: every activation, every cost and every depth at least once; the whole
  activation x cost sweep and every non-canonical output are marked slow);
* against central finite differences in float64 (each network at one depth; every depth slow);
* loss values against an independent NumPy forward pass;
* saturated outputs, dtype preservation, jit / no-jit agreement.
"""

import itertools
import zlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, log_expit, log_softmax

import jaxmlp
from jaxmlp.oracle.verification import check_gradients

from helpers import numpy_targets, rel  # noqa: E402

ACTS = sorted(jaxmlp.ACTIVATIONS)
COSTS = sorted(jaxmlp.COSTS)




def problem(net, seed, m, dtype=jnp.float64):
    """Random params (non-zero biases, away from ReLU kinks), X, Y for ``net``, drawn with
    NumPy in float64 (no compiled draw per network; a float32 problem is the rounded float64
    one): W ~ N(0, 1/n[l-1]), b ~ N(0, 0.01), X ~ N(0, 1), Y valid for the cost.
    verification.random_problem, the JAX-drawn equivalent, serves test_curvature and test_kfac."""
    rng = np.random.default_rng(1000 + seed)
    params = [{"W": rng.normal(size=s["W"]) / np.sqrt(s["W"][1]), "b": 0.1 * rng.normal(size=s["b"])}
              for s in net.param_shapes()]
    X = rng.normal(size=(net.sizes[0], m))
    Y = numpy_targets(net, rng, m)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), (params, X, Y))


def valid_outputs(cost):
    c = jaxmlp.nn.costs.get_cost(cost)
    outs = [a for a in ACTS if not c.needs_unit_range or jaxmlp.nn.activations.get_activation(a).unit_range]
    return [a for a in outs if not (c.max_outputs == 1 and a == "softmax")]


def make_net(hidden, out, cost, depth, seed):
    """Random widths in 1..4 (softmax layers >= 2), n[0] in 1..4, output size valid for cost."""
    rng = np.random.default_rng(seed)
    c = jaxmlp.nn.costs.get_cost(cost)
    nL = 1 if c.max_outputs == 1 else int(rng.integers(2, 5))
    lo = 2 if hidden == "softmax" else 1
    widths = [int(rng.integers(lo, 5)) for _ in range(depth - 1)]
    if depth >= 3 and hidden != "softmax":
        widths[0] = 1  # a layer of width 1
    return jaxmlp.Network((int(rng.integers(1, 5)), *widths, nL), (hidden,) * (depth - 1) + (out,),
                          cost)


# Every activation (in the hidden layers) x every cost (canonical output), depth 1..4
# cycling with the index so all depths meet every cost; m cycles over 1, 3, 8.
CANONICAL_CASES = [
    (h, c, 1 + (i % 4), (1, 3, 8)[i % 3])
    for i, (h, c) in enumerate(itertools.product(ACTS, COSTS))
]
# Every non-canonical output pair: the general path dA[L] -> (B4).
GENERAL_CASES = [(o, c) for c in COSTS for o in valid_outputs(c) if o != jaxmlp.nn.costs.get_cost(c).canonical]


def _default_canonical(case):
    """The default suite's share of the sweep (the rest is marked slow): every activation in
    the hidden layers once, with a cost at depth 2-4 (the depth follows the cost, and depth 1
    has no hidden layer), plus the one-layer binary cross-entropy net; m = 1, 3, 8 all occur."""
    hidden, cost, depth, _ = case
    a = ACTS.index(hidden)
    return cost == COSTS[1 + a % 3] or (depth == 1 and a == 0)


# The default suite's general-path cases: the sigmoid output under categorical cross-entropy,
# the softmax output (not element-wise) under two costs, and an element-wise output under MSE.
_DEFAULT_GENERAL = {("sigmoid", "categorical_cross_entropy"), ("softmax", "mean_squared_error"),
                    ("softmax", "multilabel_cross_entropy"), ("relu", "mean_squared_error")}


def _slow_unless(keep, cases):
    return [case if keep(case) else pytest.param(*case, marks=pytest.mark.slow) for case in cases]


def _grad_checks(net, seed, m):
    p64, X, Y = problem(net, seed, m)
    _, g = jaxmlp.value_and_grad(net, p64, X, Y)
    g_ad = jax.grad(lambda p: jaxmlp.loss(net, p, X, Y))(p64)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ad)):
        assert rel(a, b) <= 1e-10
    p32, X32, Y32 = problem(net, seed, m, jnp.float32)
    J32, g32 = jaxmlp.value_and_grad(net, p32, X32, Y32)
    g32_ad = jax.grad(lambda p: jaxmlp.loss(net, p, X32, Y32))(p32)
    assert J32.dtype == jnp.float32
    for a, b, t in zip(jax.tree.leaves(g32), jax.tree.leaves(g32_ad), jax.tree.leaves(g_ad)):
        assert a.dtype == jnp.float32
        if rel(a, b) > 1e-5:
            # Rounding-limited case (a gradient made of nearly cancelling float32 terms):
            # the manual gradient must then be as accurate as float32 autodiff, both
            # measured against the float64 gradient.
            assert rel(a, t) <= 2 * rel(b, t), (rel(a, b), rel(a, t), rel(b, t))


@pytest.mark.parametrize("hidden,cost,depth,m", _slow_unless(_default_canonical, CANONICAL_CASES))
def test_manual_grad_matches_autodiff_canonical_output(hidden, cost, depth, m):
    c = jaxmlp.nn.costs.get_cost(cost)
    # zlib.crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED).
    net = make_net(hidden, c.canonical, cost, depth, seed=zlib.crc32(f"{hidden}/{cost}".encode()) % 1000)
    assert net.fused
    _grad_checks(net, seed=depth, m=m)


@pytest.mark.parametrize("out,cost", _slow_unless(_DEFAULT_GENERAL.__contains__, GENERAL_CASES))
def test_manual_grad_matches_autodiff_general_path(out, cost):
    net = make_net("tanh", out, cost, depth=3, seed=7)
    assert not net.fused
    _grad_checks(net, seed=11, m=5)


FD_NETS = [
    ("relu", "softmax", "categorical_cross_entropy"),
    ("tanh", "sigmoid", "binary_cross_entropy"),
    ("gelu", "tanh", "mean_squared_error"),
    ("softmax", "softmax", "multilabel_cross_entropy"),
]
# The default suite checks each network at one depth (1-4, each once); every depth of every
# network is marked slow.
_FD_DEFAULT = {("gelu", 1), ("relu", 2), ("tanh", 3), ("softmax", 4)}


@pytest.mark.parametrize("hidden,out,cost,depth", _slow_unless(
    lambda case: (case[0], case[3]) in _FD_DEFAULT,
    [(*n, depth) for depth in (1, 2, 3, 4) for n in FD_NETS]))
def test_manual_grad_matches_finite_differences(hidden, out, cost, depth):
    net = make_net(hidden, out, cost, depth, seed=depth)
    params, X, Y = problem(net, seed=depth, m=1 + depth)
    report = check_gradients(net, params, X, Y, finite_differences="full")
    assert report.fd_mode == "full"
    assert report.max_finite_diff <= 1e-6, report.table()
    assert report.max_autodiff <= 1e-10
    assert report.passed


# ---------------------------------------------------------------- loss values (NumPy)

def _np_act(name, Z):
    from test_activations import _np_forward

    return _np_forward(name, Z)


def _np_loss(net, params, X, Y):
    """Independent (F1)-(F3) in float64 NumPy, cross-entropy from Z via scipy."""
    A = np.asarray(X, np.float64)
    for p, g in zip(params, net.activations):
        Z = np.asarray(p["W"]) @ A + np.asarray(p["b"])[:, None]
        A = _np_act(g, Z)
    Y = np.asarray(Y, np.float64)
    m = Y.shape[1]
    g = net.activations[-1]
    if net.cost == "mean_squared_error":
        return np.sum((A - Y) ** 2) / (2 * m)
    if g == "sigmoid":
        logA, log1mA = log_expit(Z), log_expit(-Z)
    else:
        logA, log1mA = log_softmax(Z, axis=0), np.log1p(-A)
    if net.cost == "categorical_cross_entropy":
        return -np.sum(Y * logA) / m
    return -np.sum(Y * logA + (1 - Y) * log1mA) / m


@pytest.mark.parametrize("out,cost", [(c_.canonical, c) for c, c_ in jaxmlp.COSTS.items()]
                         + GENERAL_CASES[:4])
def test_loss_matches_numpy(out, cost):
    net = make_net("relu", out, cost, depth=3, seed=3)
    params, X, Y = problem(net, seed=5, m=6)
    np.testing.assert_allclose(float(jaxmlp.loss(net, params, X, Y)), _np_loss(net, params, X, Y),
                               rtol=1e-12)


def test_cost_formulas_by_hand():
    """(C1) on a 1-layer net with a known Z[L]: J = mean of -log sigmoid(+-z)."""
    net = jaxmlp.Network((1, 1), "sigmoid", "binary_cross_entropy")
    params = [{"W": jnp.array([[2.0]]), "b": jnp.array([0.5])}]
    X = jnp.array([[1.0, -1.0]])
    Y = jnp.array([[1.0, 0.0]])
    z = np.array([2.5, -1.5])
    want = -(np.log(expit(z[0])) + np.log(1 - expit(z[1]))) / 2
    assert float(jaxmlp.loss(net, params, X, Y)) == pytest.approx(want, rel=1e-14)
    mse = jaxmlp.Network((1, 1), "linear", "mean_squared_error")
    assert float(jaxmlp.loss(mse, params, X, Y)) == pytest.approx((1.5**2 + 1.5**2) / 4, rel=1e-14)


def test_forward_cache_holds_what_backward_needs():
    net = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    params, X, Y = problem(net, 0, 5)
    AL, cache = jaxmlp.forward(net, params, X)
    assert isinstance(cache, jaxmlp.nn.recurrences.Cache)
    assert [a.shape for a in cache.A] == [(3, 5), (4, 5), (2, 5)]
    assert [z.shape for z in cache.Z] == [(4, 5), (2, 5)]
    chex.assert_trees_all_close(cache.A[0], X)
    chex.assert_trees_all_close(AL, cache.A[-1])
    chex.assert_trees_all_close(jaxmlp.predict(net, params, X), AL)
    chex.assert_trees_all_close(cache.Z[0], params[0]["W"] @ X + params[0]["b"][:, None])
    grads = jaxmlp.backward(net, params, cache, Y)
    _, grads2 = jaxmlp.value_and_grad(net, params, X, Y)
    chex.assert_trees_all_equal_structs(grads, params)
    chex.assert_trees_all_close(grads, grads2, rtol=1e-14)


def test_first_layer_gradient_is_the_outer_product_B1():
    """dW[1] = dZ[1] X^T, db[1] = sum_cols dZ[1] for a one-layer fused net: dZ = (A - Y)/m."""
    net = jaxmlp.Network((3, 4), "softmax", "categorical_cross_entropy")
    params, X, Y = problem(net, 2, 6)
    A = jaxmlp.predict(net, params, X)
    _, g = jaxmlp.value_and_grad(net, params, X, Y)
    dZ = (A - Y) / 6
    chex.assert_trees_all_close(g[0]["W"], dZ @ X.T, rtol=1e-14)
    chex.assert_trees_all_close(g[0]["b"], dZ.sum(axis=1), rtol=1e-14)


# ---------------------------------------------------------------- saturation

@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("out,cost,nL", [
    ("sigmoid", "binary_cross_entropy", 1),
    ("sigmoid", "multilabel_cross_entropy", 3),
    ("softmax", "categorical_cross_entropy", 3),
])
def test_saturated_outputs_give_finite_cost_and_fused_gradient(out, cost, nL, dtype):
    """|Z[L]| = 1e3 with the wrong label: J is finite (~1e3) and grads equal (1/m)(A - Y) X^T."""
    net = jaxmlp.Network((2, nL), out, cost)
    W = jnp.zeros((nL, 2), dtype).at[:, 0].set(1e3 * jnp.array([1.0, -1.0, 1.0][:nL], dtype))
    params = [{"W": W, "b": jnp.zeros((nL,), dtype)}]
    X = jnp.array([[1.0, -1.0], [0.0, 0.0]], dtype)  # Z[L] = +-1e3
    if cost == "categorical_cross_entropy":
        Y = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype)
    else:
        Y = jnp.zeros((nL, 2), dtype).at[0, 0].set(0.0).at[0, 1].set(1.0)
    J, g = jaxmlp.value_and_grad(net, params, X, Y)
    assert bool(jnp.isfinite(J)) and 100.0 < float(J) < 1e4
    A = jaxmlp.predict(net, params, X)
    dZ = (A - Y) / 2
    chex.assert_trees_all_close(g[0]["W"], dZ @ X.T, rtol=1e-6)
    chex.assert_trees_all_close(g[0]["b"], dZ.sum(axis=1), rtol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))


# ---------------------------------------------------------------- jit, dtypes, composition

def test_jit_and_no_jit_agree():
    net = jaxmlp.Network((3, 5, 2), ("silu", "softmax"), "categorical_cross_entropy")
    params, X, Y = problem(net, 4, 7)
    f = lambda p, x, y: jaxmlp.value_and_grad(net, p, x, y)  # noqa: E731
    J, g = jax.jit(f)(params, X, Y)
    with jax.disable_jit():
        J0, g0 = f(params, X, Y)
    chex.assert_trees_all_close((J, g), (J0, g0), rtol=1e-12)


class JitVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_variants(self):
        net = jaxmlp.Network((3, 4, 1), ("elu", "sigmoid"), "binary_cross_entropy")
        params, X, Y = problem(net, 9, 4)

        @self.variant
        def f(p, x, y):
            return jaxmlp.value_and_grad(net, p, x, y)

        J, g = f(params, X, Y)
        J_ref = jaxmlp.loss(net, params, X, Y)
        chex.assert_trees_all_close(J, J_ref, rtol=1e-13)
        g_ref = jax.grad(lambda p: jaxmlp.loss(net, p, X, Y))(params)
        chex.assert_trees_all_close(g, g_ref, rtol=1e-10, atol=1e-14)


def test_float32_default_and_no_silent_upcast():
    net = jaxmlp.Network((3, 4, 2), ("relu", "linear"), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    X = np.ones((3, 2), np.float32)
    Y = np.zeros((2, 2), np.float32)
    J, g = jaxmlp.value_and_grad(net, params, X, Y)
    assert J.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g))
    _, cache = jaxmlp.forward(net, params, X)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(cache))
    with pytest.raises(TypeError, match=r"X: expected dtype float32 .* got float64"):
        jaxmlp.loss(net, params, X.astype(np.float64), Y)


def test_composes_with_vmap_over_parameter_sets():
    """vmap over a stack of parameter pytrees (an ensemble) gives each member's gradient."""
    net = jaxmlp.Network((2, 3, 1), ("tanh", "linear"), "mean_squared_error")
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    stacked = jax.vmap(lambda k: jaxmlp.init_params(net, k, dtype=jnp.float64))(keys)
    X = jnp.ones((2, 5))
    Y = jnp.zeros((1, 5))
    Js, gs = jax.vmap(lambda p: jaxmlp.value_and_grad(net, p, X, Y))(stacked)
    for i in range(4):
        p_i = jax.tree.map(lambda a: a[i], stacked)
        J_i, g_i = jaxmlp.value_and_grad(net, p_i, X, Y)
        chex.assert_trees_all_close((Js[i], jax.tree.map(lambda a: a[i], gs)), (J_i, g_i),
                                    rtol=1e-12)


def test_init_params_schemes_and_determinism():
    net = jaxmlp.Network((400, 300, 10), ("relu", "softmax"), "categorical_cross_entropy")
    k = jax.random.PRNGKey(0)
    p1, p2 = jaxmlp.init_params(net, k), jaxmlp.init_params(net, k)
    chex.assert_trees_all_equal(p1, p2)
    assert not np.allclose(p1[0]["W"], jaxmlp.init_params(net, jax.random.PRNGKey(1))[0]["W"])
    # default: He for ReLU, Glorot for softmax
    assert float(jnp.std(p1[0]["W"])) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert float(jnp.std(p1[1]["W"])) == pytest.approx(np.sqrt(2 / 310), rel=0.05)
    for scheme, std in [("he", np.sqrt(2 / 400)), ("glorot", np.sqrt(2 / 700)),
                        ("lecun", np.sqrt(1 / 400)), ("normal", 0.01)]:
        p = jaxmlp.init_params(net, k, scheme)
        assert float(jnp.std(p[0]["W"])) == pytest.approx(std, rel=0.02)
        assert float(jnp.abs(p[0]["b"]).max()) == 0.0
    chex.assert_trees_all_equal_shapes(p1, [{"W": np.zeros((300, 400)), "b": np.zeros(300)},
                                            {"W": np.zeros((10, 300)), "b": np.zeros(10)}])


@pytest.mark.parametrize("cost", ["binary_cross_entropy", "multilabel_cross_entropy"])
def test_fused_sigmoid_seed_keeps_digits_of_saturated_correct_predictions(cost):
    """Z = 20, Y = 1 in float32: A = 1 exactly, yet dZ = -sigmoid(-20) = -2.06e-9, not 0."""
    net = jaxmlp.Network((1, 1), "sigmoid", cost)
    params = [{"W": jnp.array([[20.0]], jnp.float32), "b": jnp.zeros(1, jnp.float32)}]
    X = jnp.ones((1, 1), jnp.float32)
    Y = jnp.ones((1, 1), jnp.float32)
    assert float(jaxmlp.predict(net, params, X)[0, 0]) == 1.0
    _, g = jaxmlp.value_and_grad(net, params, X, Y)
    exact = -np.exp(-20.0) / (1 + np.exp(-20.0))
    assert float(g[0]["b"][0]) == pytest.approx(exact, rel=1e-6)


def test_relative_error_of_two_zero_arrays_is_zero():
    """The checks' norm-wise error is 0 when both sides are 0 (a dead unit's gradient); the
    slow finite-difference sweep meets this case, the default one states it directly."""
    from jaxmlp.oracle.verification import relative_error

    assert relative_error(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0
    assert relative_error(np.zeros(2), np.array([0.0, 0.5]), floor=1.0) == 0.5
