"""Each activation's forward and hand-derived backward rule (B4), on its own.

The backward rule is checked against the vector-Jacobian product of autodiff (the
oracle), softmax additionally against its full Jacobian; forward values against
independent NumPy formulas; and the numerical-range requirements of the issue.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp

ACTS = sorted(jaxmlp.ACTIVATIONS)


def _np_forward(name, Z):
    """Independent float64 NumPy forward formulas."""
    from scipy.special import expit, erf  # noqa: F401  (scipy ships with scikit-learn)

    Z = np.asarray(Z, dtype=np.float64)
    if name == "linear":
        return Z
    if name == "relu":
        return np.where(Z > 0, Z, 0.0)
    if name == "leaky_relu":
        return np.where(Z > 0, Z, 0.01 * Z)
    if name == "elu":
        return np.where(Z > 0, Z, np.expm1(np.minimum(Z, 0)))
    if name == "sigmoid":
        return expit(Z)
    if name == "tanh":
        return np.tanh(Z)
    if name == "softplus":
        return np.logaddexp(0.0, Z)
    if name == "silu":
        return Z * expit(Z)
    if name == "gelu":
        return 0.5 * Z * (1 + np.tanh(np.sqrt(2 / np.pi) * (Z + 0.044715 * Z**3)))
    if name == "softmax":
        E = np.exp(Z - Z.max(axis=0, keepdims=True))
        return E / E.sum(axis=0, keepdims=True)
    raise AssertionError(name)


def _Z(key, shape, dtype):
    # Keep away from the kinks at 0 (ReLU family), where derivatives are conventions.
    Z = 3.0 * jax.random.normal(key, shape, dtype=dtype)
    return jnp.where(jnp.abs(Z) < 1e-3, 0.5, Z)


@pytest.mark.parametrize("name", ACTS)
def test_forward_matches_numpy(name):
    g = jaxmlp.nn.activations.get_activation(name)
    Z = _Z(jax.random.PRNGKey(0), (4, 6), jnp.float64)
    np.testing.assert_allclose(np.asarray(g.forward(Z)), _np_forward(name, Z), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
@pytest.mark.parametrize("name", ACTS)
def test_backward_rule_matches_autodiff_vjp(name, dtype, tol):
    g = jaxmlp.nn.activations.get_activation(name)
    kz, ka = jax.random.split(jax.random.PRNGKey(1))
    Z = _Z(kz, (5, 7), dtype)
    dA = jax.random.normal(ka, (5, 7), dtype=dtype)
    A, vjp = jax.vjp(g.forward, Z)
    dZ = g.backward(dA, Z, A)
    (dZ_oracle,) = vjp(dA)
    assert dZ.dtype == dtype
    chex.assert_trees_all_close(dZ, dZ_oracle, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ACTS)
def test_backward_rule_single_column(name):
    """The same rule applies to one column z of shape (n,)."""
    g = jaxmlp.nn.activations.get_activation(name)
    z = _Z(jax.random.PRNGKey(2), (5,), jnp.float64)
    da = jnp.linspace(-1.0, 1.0, 5)
    a, vjp = jax.vjp(g.forward, z)
    chex.assert_trees_all_close(g.backward(da, z, a), vjp(da)[0], rtol=1e-12, atol=1e-14)


def test_softmax_backward_is_full_jacobian_product():
    """(B4-softmax): dz[:,i] = J_i^T da[:,i] with J_i[j, p] = d a[p,i] / d z[j,i] (DERIVATIONS)."""
    g = jaxmlp.nn.activations.get_activation("softmax")
    Z = jax.random.normal(jax.random.PRNGKey(3), (4, 3), dtype=jnp.float64)
    dA = jax.random.normal(jax.random.PRNGKey(4), (4, 3), dtype=jnp.float64)
    A = g.forward(Z)
    dZ = g.backward(dA, Z, A)
    for i in range(3):
        J = jax.jacfwd(g.forward)(Z[:, i])  # J[p, j] = d a_p / d z_j
        # closed form: diag(a) - a a^T (symmetric)
        a = A[:, i]
        chex.assert_trees_all_close(J, jnp.diag(a) - jnp.outer(a, a), atol=1e-15)
        chex.assert_trees_all_close(dZ[:, i], J.T @ dA[:, i], rtol=1e-13, atol=1e-15)
    # Not element-wise: a perturbation of one output's dA moves every dZ entry.
    e0 = jnp.zeros_like(dA).at[0, 0].set(1.0)
    assert jnp.all(g.backward(e0, Z, A)[1:, 0] != 0)


def test_sigmoid_derivative_has_no_cancellation():
    """sigmoid'(40) = 4.25e-18; A (1 - A) would give exactly 0 in float64 (jax PR #40825)."""
    g = jaxmlp.nn.activations.get_activation("sigmoid")
    z = jnp.array([40.0, -40.0, 0.0], dtype=jnp.float64)
    dz = g.backward(jnp.ones(3), z, g.forward(z))
    exact = np.exp(-40.0) / (1 + np.exp(-40.0)) ** 2
    np.testing.assert_allclose(np.asarray(dz), [exact, exact, 0.25], rtol=1e-12)
    assert exact == pytest.approx(4.248354255291589e-18, rel=1e-12)


def test_tanh_derivative_has_no_cancellation():
    g = jaxmlp.nn.activations.get_activation("tanh")
    z = jnp.array([12.0, -20.0], dtype=jnp.float64)
    dz = g.backward(jnp.ones(2), z, g.forward(z))
    exact = 1.0 / np.cosh(np.array([12.0, -20.0])) ** 2
    np.testing.assert_allclose(np.asarray(dz), exact, rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", ACTS)
def test_finite_for_large_inputs(name, dtype):
    """Forward and backward stay finite for |z| up to 1e4 (jax #777: NaN at -200)."""
    g = jaxmlp.nn.activations.get_activation(name)
    Z = jnp.array([[-1e4, -200.0, -40.0, 0.0, 40.0, 200.0, 1e4]], dtype=dtype).T
    if name == "softmax":
        Z = jnp.concatenate([Z, -Z, jnp.zeros_like(Z)], axis=1).T  # (3, 7) columns
    A = g.forward(Z)
    dZ = g.backward(jnp.ones_like(Z), Z, A)
    assert A.dtype == dtype and dZ.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(A))) and bool(jnp.all(jnp.isfinite(dZ)))


def test_exact_values_at_large_inputs():
    z = jnp.array([-1e4, 1e4], dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(jaxmlp.nn.activations.get_activation("sigmoid").forward(z)), [0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(jaxmlp.nn.activations.get_activation("softplus").forward(z)), [0.0, 1e4])
    s = jaxmlp.nn.activations.get_activation("softmax").forward(jnp.array([[1e4, -1e4], [1e4 - 1.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(s[:, 0]), [1 / (1 + np.exp(-1)), 1 / (1 + np.e)], rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(s[:, 1]), [0.0, 1.0])


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu"])
def test_kink_conventions(name):
    """Derivatives at z = 0 are conventions (documented): ReLU 0, leaky ReLU 0.01, ELU 1."""
    g = jaxmlp.nn.activations.get_activation(name)
    z = jnp.zeros(1)
    want = {"relu": 0.0, "leaky_relu": 0.01, "elu": 1.0}[name]
    assert float(g.backward(jnp.ones(1), z, g.forward(z))[0]) == pytest.approx(want)
    # The forward map is written so that the autodiff oracle follows the same convention
    # (jnp.maximum(z, 0) would give 1/2 at 0 and make dead-unit networks disagree).
    assert float(jax.grad(lambda z: g.forward(z).sum())(z)[0]) == pytest.approx(want)


def test_unknown_activation_name():
    with pytest.raises(ValueError, match=r"activation: expected one of .* got 'relu6'"):
        jaxmlp.nn.activations.get_activation("relu6")


@pytest.mark.parametrize("name", sorted(jaxmlp.ACTIVATIONS))
def test_nan_propagates_through_forward_and_backward(name):
    """g(NaN) = NaN and g'(NaN) = NaN (dZ = NaN even where dA is finite), and the other
    entries of the column are untouched (element-wise) -- ReLU's where(Z > 0, Z, 0) used
    to map NaN to 0, which hid NaN weights behind a finite cost."""
    g = jaxmlp.nn.activations.get_activation(name)
    Z = jnp.array([[np.nan, 0.5], [0.0, -0.5], [2.0, 1.5]], jnp.float32)  # (3 units, 2 columns)
    A = g.forward(Z)
    dZ = g.backward(jnp.ones_like(Z), Z, A)
    if g.elementwise:
        assert np.isnan(np.asarray(A)[0, 0]) and np.isnan(np.asarray(dZ)[0, 0])
        assert np.all(np.isfinite(np.asarray(A).ravel()[1:])) and np.all(np.isfinite(np.asarray(dZ).ravel()[1:]))
        ref = g.forward(jnp.where(jnp.isnan(Z), 1.0, Z))  # the same map on the finite entries
        np.testing.assert_array_equal(np.asarray(A).ravel()[1:], np.asarray(ref).ravel()[1:])
    else:  # softmax: the NaN column is NaN throughout, the other column is finite
        assert np.all(np.isnan(np.asarray(A)[:, 0])) and np.all(np.isnan(np.asarray(dZ)[:, 0]))
        assert np.all(np.isfinite(np.asarray(A)[:, 1])) and np.all(np.isfinite(np.asarray(dZ)[:, 1]))


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu"])
def test_piecewise_constant_derivatives_keep_their_values(name):
    """The NaN guard changes nothing at numbers, infinities included: g'(+-inf) are the limits."""
    g = jaxmlp.nn.activations.get_activation(name)
    z = jnp.array([-np.inf, -2.0, 0.0, 3.0, np.inf], jnp.float32)
    a = {"linear": 1.0, "relu": 0.0, "leaky_relu": 0.01}[name]
    want = np.array([a, a, a, 1.0, 1.0], np.float32)
    np.testing.assert_array_equal(np.asarray(g.backward(jnp.ones_like(z), z, g.forward(z))), want)


@pytest.mark.parametrize("name", sorted(set(jaxmlp.ACTIVATIONS) - {"softmax"}))
def test_nan_in_X_gives_a_nan_cost_and_nan_gradient(name):
    """One NaN in X through a hidden layer of every activation, inside jit (values not
    inspected): J is NaN (never finite) and the gradient of every layer is NaN somewhere.
    Outside jit the concrete X is refused before the call."""
    net = jaxmlp.Network((4, 5, 3), (name, "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    X[2, 3] = np.nan
    Y = np.eye(3, dtype=np.float32)[:, [0, 1, 2, 0, 1, 2]]
    J, grads = jax.jit(lambda X: jaxmlp.value_and_grad(net, params, X, Y))(X)
    assert np.isnan(float(J))
    assert np.isnan(float(jax.jit(lambda X: jaxmlp.loss(net, params, X, Y))(X)))
    with pytest.raises(ValueError, match="^X: expected finite values, found 1 NaN"):
        jaxmlp.value_and_grad(net, params, X, Y)
    for layer in grads:
        assert np.isnan(np.asarray(layer["W"])).any()


def test_second_derivatives_stay_finite_past_float32s_polynomial_overflow():
    """g''(z) of every element-wise activation at |z| up to 2e8, in float32 and float64:
    finite and equal to autodiff's (GELU's closed form multiplied sech^2(U) ~ 0 by a
    polynomial ~ z^5 that overflows float32 near |z| = 1.6e8: 0 x inf = NaN before)."""
    z = np.array([-2e8, -1e6, -1e4, -50.0, -9.0, 9.0, 50.0, 1e4, 1e6, 2e8])
    with jax.enable_x64(True):
        for name in ACTS:
            g = jaxmlp.nn.activations.get_activation(name)
            if not g.elementwise or g.second_derivative is None:
                continue
            ad = jax.vmap(jax.grad(jax.grad(lambda t: g.forward(t[None])[0])))(jnp.asarray(z))
            for dtype in (jnp.float32, jnp.float64):
                r = np.asarray(g.second_derivative(jnp.asarray(z, dtype)), np.float64)
                assert np.all(np.isfinite(r)), (name, dtype, r)
                np.testing.assert_allclose(r, np.asarray(ad), atol=1e-6, rtol=0,
                                           err_msg=f"{name} {dtype}")
