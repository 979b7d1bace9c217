"""Curvature quantities (H1)-(H12) against their autodiff definitions, in float64.

* every quantity of jaxmlp.quantities.curvature vs jax.hessian / jax.jacobian / jvp of grad, through
  jaxmlp.oracle.verification.check_curvature and directly: a fast default set covering softmax in a
  hidden layer, every kind of output split, depths 1-4 and m = 1; the sweep over every
  activation x every (output, cost) pair is marked slow;
* g'' of every element-wise activation vs autodiff, finite at saturation;
* Monte Carlo estimators unbiased: the mean of N draws is within 5 standard errors
  (sigma_hat / sqrt(N)) of the exact value, entry by entry;
* kron(G_factor, A_factor) equals the GGN block of a layer for one example;
* bad input raises before any work.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxmlp
from jaxmlp.quantities import curvature
from jaxmlp.oracle.verification import check_curvature, curvature_oracles, random_problem

from helpers import rel  # noqa: E402

ACTS = sorted(jaxmlp.ACTIVATIONS)
COSTS = sorted(jaxmlp.COSTS)




def output_pairs():
    """Every valid (output activation, cost) pair with its n[L]."""
    pairs = []
    for cost, out in itertools.product(COSTS, ACTS):
        c = jaxmlp.nn.costs.get_cost(cost)
        g = jaxmlp.nn.activations.get_activation(out)
        if c.needs_unit_range and not g.unit_range:
            continue
        nL = 1 if c.max_outputs == 1 else 3
        if out == "softmax" and nL == 1:
            continue
        pairs.append((out, cost, nL))
    return pairs


PAIRS = output_pairs()


def net_for(hidden, out, cost, nL, depth, n0=3, width=3):
    return jaxmlp.Network((n0,) + (width,) * (depth - 1) + (nL,),
                          (hidden,) * (depth - 1) + (out,), cost)


def assert_check(net, m, seed=0):
    p, X, Y = random_problem(net, jax.random.PRNGKey(seed), m)
    report = check_curvature(net, p, X, Y, key=jax.random.PRNGKey(seed + 1))
    assert report.passed, report.table()
    assert report.max_error <= 1e-10


# Default set: each kind of output split (canonical sigmoid / softmax / linear, at A[L]
# with an element-wise and a softmax output, the cross-entropy pairs at A[L]), softmax and
# g''-carrying activations in hidden layers, depths 1-4, m = 1 included.
FAST_CASES = [
    ("softmax", "softmax", "categorical_cross_entropy", 3, 3, 1),
    pytest.param("gelu", "sigmoid", "binary_cross_entropy", 1, 4, 3, marks=pytest.mark.slow),
    pytest.param("tanh", "softmax", "mean_squared_error", 3, 2, 2, marks=pytest.mark.slow),
    pytest.param("elu", "sigmoid", "categorical_cross_entropy", 3, 3, 1, marks=pytest.mark.slow),
    pytest.param("silu", "softmax", "multilabel_cross_entropy", 3, 2, 3, marks=pytest.mark.slow),
    pytest.param("relu", "linear", "mean_squared_error", 2, 1, 1, marks=pytest.mark.slow),
    pytest.param("softplus", "tanh", "mean_squared_error", 2, 2, 1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("hidden,out,cost,nL,depth,m", FAST_CASES)
def test_every_quantity_matches_autodiff(hidden, out, cost, nL, depth, m):
    assert_check(net_for(hidden, out, cost, nL, depth), m)


# Every hidden activation x every (output, cost) pair, depth cycling 1-4, m over 1, 2, 3.
SWEEP = [(h, o, c, nL, 1 + i % 4, 1 + i % 3)
         for i, (h, (o, c, nL)) in enumerate(itertools.product(ACTS, PAIRS))]


@pytest.mark.slow
@pytest.mark.parametrize("hidden,out,cost,nL,depth,m", SWEEP)
def test_every_quantity_matches_autodiff_sweep(hidden, out, cost, nL, depth, m):
    assert_check(net_for(hidden, out, cost, nL, depth), m)


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_direct_oracles_hvp_and_hessian_diag():
    """Without the verification module: jvp of grad, and the diagonal of jax.hessian."""
    net = jaxmlp.Network((2, 3, 3, 2), ("tanh", "softmax", "sigmoid"), "multilabel_cross_entropy")
    p, X, Y = random_problem(net, jax.random.PRNGKey(4), 2)
    V = jax.tree.map(lambda a: jnp.cos(3.0 * a + 1.0), p)
    J = lambda q: jaxmlp.loss(net, q, X, Y)  # noqa: E731
    hv = jax.jvp(jax.grad(J), (p,), (V,))[1]
    for a, b in zip(jax.tree.leaves(curvature.hvp(net, p, X, Y, V)), jax.tree.leaves(hv)):
        assert rel(a, b) <= 1e-10
    flat, unravel = ravel_pytree(p)
    Hd = unravel(jnp.diag(jax.hessian(lambda t: J(unravel(t)))(flat)))
    for a, b in zip(jax.tree.leaves(curvature.hessian_diag(net, p, X, Y)), jax.tree.leaves(Hd)):
        assert rel(a, b) <= 1e-10


def test_ggn_equals_hessian_for_linear_models():
    """One linear layer with mean squared error: H = G. Two linear layers: H != G (the
    W[1]-W[2] coupling dZ R{A}^T of (H9)), but the diagonals agree (no g'', no residual)."""
    net1 = jaxmlp.Network((3, 2), ("linear",), "mean_squared_error")
    p, X, Y = random_problem(net1, jax.random.PRNGKey(5), 4)
    V = jax.tree.map(jnp.ones_like, p)
    for a, b in zip(jax.tree.leaves(curvature.ggn_vp(net1, p, X, Y, V)),
                    jax.tree.leaves(curvature.hvp(net1, p, X, Y, V))):
        assert rel(a, b) <= 1e-12
    net2 = jaxmlp.Network((3, 4, 2), ("linear", "linear"), "mean_squared_error")
    p, X, Y = random_problem(net2, jax.random.PRNGKey(5), 4)
    V = jax.tree.map(jnp.ones_like, p)
    gv = ravel_pytree(curvature.ggn_vp(net2, p, X, Y, V))[0]
    hv = ravel_pytree(curvature.hvp(net2, p, X, Y, V))[0]
    assert rel(gv, hv) > 1e-3
    for a, b in zip(jax.tree.leaves(curvature.ggn_diag(net2, p, X, Y)),
                    jax.tree.leaves(curvature.hessian_diag(net2, p, X, Y))):
        assert rel(a, b) <= 1e-12


def test_per_example_sums_to_ggn_diag_and_is_nonnegative():
    net = jaxmlp.Network((3, 4, 3), ("sigmoid", "softmax"), "categorical_cross_entropy")
    p, X, Y = random_problem(net, jax.random.PRNGKey(6), 5)
    pe = curvature.per_example_ggn_diag(net, p, X, Y)
    d = curvature.ggn_diag(net, p, X, Y)
    for a, b in zip(jax.tree.leaves(pe), jax.tree.leaves(d)):
        assert a.shape == (5,) + b.shape
        assert rel(a.sum(0), b) <= 1e-13
        assert float(jnp.min(a)) >= 0.0


# ----------------------------------------------------------------------------- g''


@pytest.mark.parametrize("name", [a for a in ACTS if a != "softmax"])
def test_second_derivative_matches_autodiff(name):
    g = jaxmlp.nn.activations.get_activation(name)
    Z = jnp.linspace(-8.0, 8.0, 2001) + 1e-3  # off the kinks
    d2 = jax.vmap(jax.grad(jax.grad(g.forward)))(Z)
    assert rel(g.second_derivative(Z), d2) <= 1e-12


@pytest.mark.parametrize("name", [a for a in ACTS if a != "softmax"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_second_derivative_finite_and_vanishing_at_saturation(name, dtype):
    g = jaxmlp.nn.activations.get_activation(name)
    Z = jnp.array([-1e4, -1e3, -100.0, 100.0, 1e3, 1e4], dtype)
    d2 = g.second_derivative(Z)
    assert d2.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(d2)))
    assert float(jnp.max(jnp.abs(d2))) <= 1e-30


def test_softmax_has_no_elementwise_second():
    assert jaxmlp.nn.activations.get_activation("softmax").second_derivative is None


# ----------------------------------------------------------------------------- Kronecker factors


@pytest.mark.parametrize("out,cost,nL", [("softmax", "categorical_cross_entropy", 3),
                                          pytest.param("tanh", "mean_squared_error", 2,
                                                       marks=pytest.mark.slow),
                                          pytest.param("sigmoid", "binary_cross_entropy", 1,
                                                       marks=pytest.mark.slow)])
def test_kron_factors_equal_ggn_block_for_one_example(out, cost, nL):
    """(H6): per example the block of [W b] (bias last column, row-major) is kron(G, A)."""
    net = net_for("gelu", out, cost, nL, 2)
    p, X, Y = random_problem(net, jax.random.PRNGKey(7), 1)
    G = curvature_oracles(net, p, X, Y, p)["G"]
    factors = curvature.kfac_factors(net, p, X, Y)
    start = 0
    for l, ((A_f, G_f), layer) in enumerate(zip(factors, p)):
        n, q = layer["W"].shape
        # ravel_pytree order within a layer: W row-major, then b. Map to rows of [W b].
        order = np.array([start + j * q + k if k < q else start + n * q + j
                          for j in range(n) for k in range(q + 1)])
        block = np.asarray(G)[np.ix_(order, order)]
        assert rel(np.kron(np.asarray(G_f), np.asarray(A_f)), block) <= 1e-10, l
        start += n * (q + 1)


def test_empirical_factor_is_mean_outer_product_of_loss_gradients():
    net = jaxmlp.Network((3, 4, 2), ("tanh", "sigmoid"), "multilabel_cross_entropy")
    p, X, Y = random_problem(net, jax.random.PRNGKey(8), 4)
    factors = curvature.kfac_factors(net, p, X, Y, kind="empirical")
    _, cache = jaxmlp.nn.recurrences.forward_pass(net, p, X)

    def loss_i(z1, i):  # L_i as a function of z[1] of example i
        a1 = jnp.tanh(z1)
        z2 = p[1]["W"] @ a1 + p[1]["b"]
        return jaxmlp.nn.recurrences.losses(net, z2, jax.nn.sigmoid(z2), Y[:, i])

    grads = np.stack([np.asarray(jax.grad(loss_i)(cache.Z[0][:, i], i)) for i in range(4)])
    assert rel(factors[0][1], grads.T @ grads / 4) <= 1e-12


# ----------------------------------------------------------------------------- Monte Carlo


def _z_scores(draws, exact):
    """(mean - exact) / (std / sqrt(N)) per entry; entries with no spread must be exact."""
    draws = np.asarray(draws, np.float64)
    N = draws.shape[0]
    mean, sd = draws.mean(0), draws.std(0, ddof=1)
    exact = np.asarray(exact, np.float64)
    flat = sd <= 1e-12 * np.abs(exact)  # no spread (e.g. one-hot Y: one non-zero h per column)
    assert np.allclose(mean[flat], exact[flat], rtol=1e-12, atol=1e-14)
    z = np.abs(mean - exact)[~flat] / (sd[~flat] / np.sqrt(N))
    # every entry flat: a rank-one output Hessian per column (a sigmoid output under
    # categorical cross-entropy with one-hot Y: H = diag(y / a^2)) makes each draw exact
    return np.append(z, 0.0)


MC_CASES = [("softmax", "categorical_cross_entropy", 3),
            pytest.param("sigmoid", "binary_cross_entropy", 1, marks=pytest.mark.slow),
            pytest.param("softmax", "multilabel_cross_entropy", 3, marks=pytest.mark.slow),
            pytest.param("tanh", "mean_squared_error", 2, marks=pytest.mark.slow),
            pytest.param("sigmoid", "categorical_cross_entropy", 3, marks=pytest.mark.slow)]


@pytest.mark.parametrize("out,cost,nL", MC_CASES)
def test_mc_estimators_are_unbiased(out, cost, nL):
    """The mean of N = 4000 one-sample draws is within 5 standard errors of the exact
    diag GGN and KFAC G factor, entry by entry (the 1/sqrt(N) rate of an unbiased mean)."""
    net = net_for("tanh", out, cost, nL, 2)
    p, X, Y = random_problem(net, jax.random.PRNGKey(9), 3)
    N = 4000
    keys = jax.random.split(jax.random.PRNGKey(10), N)
    draws = jax.vmap(lambda k: curvature._ggn_diag(net, p, X, Y, k, mc_samples=1,
                                                   per_example=False))(keys)
    exact = curvature.ggn_diag(net, p, X, Y)
    for d, e in zip(jax.tree.leaves(draws), jax.tree.leaves(exact)):
        assert np.max(_z_scores(d, e)) <= 5.0
    fdraws = jax.vmap(lambda k: curvature._kfac_factors(net, p, X, Y, k, kind="mc",
                                                        mc_samples=1))(keys)
    fexact = curvature.kfac_factors(net, p, X, Y)
    for (_, Gd), (_, Ge) in zip(fdraws, fexact):
        assert np.max(_z_scores(Gd, Ge)) <= 5.0
    # k samples in one call average k draws: error shrinks accordingly.
    many = curvature.ggn_diag(net, p, X, Y, mc_samples=20000, key=jax.random.PRNGKey(11))
    err = rel(ravel_pytree(many)[0], ravel_pytree(exact)[0])
    one = np.std(np.asarray(ravel_pytree(draws)[0]))  # scale of a single draw
    assert err <= 0.05 and one > 0


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    net = jaxmlp.Network((2, 3, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    p, X, Y = random_problem(net, jax.random.PRNGKey(0), 2)
    return net, p, X, Y


@pytest.mark.parametrize("mc,err", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                    (True, TypeError), ("3", TypeError)])
def test_bad_mc_samples(small, mc, err):
    net, p, X, Y = small
    with pytest.raises(err, match="mc_samples"):
        curvature.ggn_diag(net, p, X, Y, mc_samples=mc, key=jax.random.PRNGKey(0))
    with pytest.raises(err, match="mc_samples"):
        curvature.kfac_factors(net, p, X, Y, kind="mc", mc_samples=mc, key=jax.random.PRNGKey(0))


def test_mc_without_key_and_key_without_mc(small):
    net, p, X, Y = small
    with pytest.raises(ValueError, match="key"):
        curvature.ggn_diag(net, p, X, Y, mc_samples=2)
    with pytest.raises(ValueError, match="key"):
        curvature.per_example_ggn_diag(net, p, X, Y, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="key"):
        curvature.kfac_factors(net, p, X, Y, kind="mc")
    with pytest.raises(ValueError, match="key"):
        curvature.kfac_factors(net, p, X, Y, kind="exact", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"mc_samples: only kind='mc' draws samples, got "
                                         r"mc_samples=5 with kind='exact'"):
        curvature.kfac_factors(net, p, X, Y, kind="exact", mc_samples=5)
    with pytest.raises(TypeError, match="key"):
        curvature.ggn_diag(net, p, X, Y, mc_samples=2, key="seed")


def test_unknown_kind(small):
    net, p, X, Y = small
    with pytest.raises(ValueError, match="kind"):
        curvature.kfac_factors(net, p, X, Y, kind="kflr")


def test_bad_V(small):
    net, p, X, Y = small
    V = jax.tree.map(jnp.ones_like, p)
    for fn in (curvature.ggn_vp, curvature.hvp):
        with pytest.raises(ValueError, match=r"V\[1\]\['W'\]"):
            fn(net, p, X, Y, [V[0], {"W": jnp.ones((3, 3)), "b": V[1]["b"]}])
        with pytest.raises(ValueError, match="V: expected 2 layers"):
            fn(net, p, X, Y, V[:1])
        with pytest.raises(ValueError, match=r"V\[0\]"):
            fn(net, p, X, Y, [{"W": V[0]["W"]}, V[1]])
        with pytest.raises(TypeError, match="V"):
            fn(net, p, X, Y, {"W": 1})
        with pytest.raises(TypeError, match=r"V\[0\]\['W'\].*dtype"):
            fn(net, p, X, Y, [{"W": V[0]["W"].astype(jnp.float32), "b": V[0]["b"]}, V[1]])


def test_bad_problem_is_named(small):
    net, p, X, Y = small
    with pytest.raises(ValueError, match="Y"):
        curvature.hessian_diag(net, p, X, Y[:, :1])
    with pytest.raises(TypeError, match="net"):
        curvature.ggn_diag("net", p, X, Y)
