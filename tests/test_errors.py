"""Every bad input of the core API raises a ValueError/TypeError naming the argument,
with the expected and the given value; checks run at trace time (also under jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.oracle.verification import check_gradients, check_rule

NET = jaxmlp.Network((3, 4, 2), ("relu", "softmax"), "categorical_cross_entropy")
PARAMS = jaxmlp.init_params(NET, jax.random.PRNGKey(0))
X = np.zeros((3, 5), np.float32)
Y = np.tile(np.array([[1.0], [0.0]], np.float32), (1, 5))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(sizes=(3, 0, 2)), ValueError, r"sizes\[1\]: expected a positive integer, got 0"),
    (dict(sizes=(3, -4, 2)), ValueError, r"sizes\[1\]: expected a positive integer, got -4"),
    (dict(sizes=(3, 2.5, 2)), TypeError, r"sizes\[1\]: expected a positive integer, got 2.5"),
    (dict(sizes=(3,)), ValueError, r"sizes: expected at least two entries"),
    (dict(sizes="34"), TypeError, r"sizes: expected a sequence"),
    (dict(activations=("relu",)), ValueError, r"activations: expected 2 names .* got 1"),
    (dict(activations=("relu", "softmax", "tanh")), ValueError, r"expected 2 names .* got 3"),
    (dict(activations=("relu6", "softmax")), ValueError,
     r"activations\[0\] \(layer 1\): expected one of .* got 'relu6'"),
    (dict(cost="hinge"), ValueError, r"cost: expected one of .* got 'hinge'"),
    (dict(cost="binary_cross_entropy", activations=("relu", "sigmoid")), ValueError,
     r"cost: 'binary_cross_entropy' needs n\[L\] == 1, got n\[L\] = 2"),
    (dict(sizes=(3, 4, 1), activations=("relu", "sigmoid")), ValueError,
     r"cost: 'categorical_cross_entropy' needs n\[L\] >= 2, got n\[L\] = 1"),
    (dict(sizes=(3, 4, 1), activations=("relu", "softmax"), cost="mean_squared_error"),
     ValueError, r"softmax needs at least 2 units, but layer 2 has n\[2\] = 1"),
    (dict(sizes=(3, 1, 2), activations=("softmax", "softmax")), ValueError,
     r"activations\[0\]: softmax needs at least 2 units"),
    (dict(activations=("relu", "tanh")), ValueError,
     r"activations\[-1\]: cost 'categorical_cross_entropy' .* needs outputs in \(0, 1\)"),
])
def test_network_validation(kwargs, exc, match):
    args = dict(sizes=(3, 4, 2), activations=("relu", "softmax"), cost="categorical_cross_entropy")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        jaxmlp.Network(**args)


def test_network_is_hashable_static_and_immutable():
    a = jaxmlp.Network([3, 4, 2], ["relu", "softmax"], "categorical_cross_entropy")
    b = jaxmlp.Network((3, 4, 2), "relu softmax".split(), "categorical_cross_entropy")
    assert a == b and hash(a) == hash(b) and a.sizes == (3, 4, 2)
    assert jaxmlp.Network((3, 4, 2), "tanh", "mean_squared_error").activations == ("tanh", "tanh")
    with pytest.raises(Exception):
        a.sizes = (1, 2)  # frozen
    f = jax.jit(jaxmlp.loss, static_argnums=0)
    assert np.isfinite(float(f(a, PARAMS, X, Y)))


def _bad_params():
    p = [dict(l) for l in PARAMS]
    yield "not a list", {"W": 1}, TypeError, r"params: expected a list of 2 dicts"
    yield "too few layers", p[:1], ValueError, r"params: expected 2 layers .* got 1"
    yield "missing key", [p[0], {"W": p[1]["W"]}], ValueError, \
        r"params\[1\] \(layer 2\): expected a dict with keys \['W', 'b'\], got \['W'\]"
    yield "W transposed", [{"W": p[0]["W"].T, "b": p[0]["b"]}, p[1]], ValueError, \
        r"params\[0\]\['W'\] \(layer 1\): expected shape \(4, 3\), got \(3, 4\)"
    yield "b as column", [p[0], {"W": p[1]["W"], "b": p[1]["b"][:, None]}], ValueError, \
        r"params\[1\]\['b'\] \(layer 2\): expected shape \(2,\), got \(2, 1\)"
    yield "integer W", [{"W": jnp.zeros((4, 3), jnp.int32), "b": p[0]["b"]}, p[1]], TypeError, \
        r"params\[0\]\['W'\]: expected a floating dtype, got int32"
    yield "mixed dtypes", [p[0], {"W": p[1]["W"].astype(jnp.float64), "b": p[1]["b"]}], \
        TypeError, r"params\[1\]\['W'\]: expected dtype float32 like params\[0\]\['W'\], got float64"


@pytest.mark.parametrize("name,params,exc,match", list(_bad_params()))
def test_bad_params(name, params, exc, match):
    with pytest.raises(exc, match=match):
        jaxmlp.value_and_grad(NET, params, X, Y)
    with pytest.raises(exc, match=match):
        jaxmlp.forward(NET, params, X)


@pytest.mark.parametrize("fn", ["forward", "predict", "loss", "value_and_grad"])
def test_bad_X(fn):
    args = (Y,) if fn in ("loss", "value_and_grad") else ()
    with pytest.raises(ValueError, match=r"X: expected shape \(n\[0\], m\) = \(3, m\) .* got \(4, 5\)"):
        getattr(jaxmlp, fn)(NET, PARAMS, np.zeros((4, 5), np.float32), *args)
    with pytest.raises(ValueError, match=r"got \(5, 3\) \(columns are examples: pass X.T"):
        getattr(jaxmlp, fn)(NET, PARAMS, np.zeros((5, 3), np.float32), *args)
    with pytest.raises(ValueError, match=r"X: expected shape .* got \(3,\)"):
        getattr(jaxmlp, fn)(NET, PARAMS, np.zeros((3,), np.float32), *args)
    with pytest.raises(TypeError, match=r"X: expected a real numeric array, got dtype complex64"):
        getattr(jaxmlp, fn)(NET, PARAMS, np.zeros((3, 5), np.complex64), *args)


@pytest.mark.parametrize("fn", ["loss", "value_and_grad"])
def test_bad_Y(fn):
    f = getattr(jaxmlp, fn)
    with pytest.raises(ValueError, match=r"Y: expected shape \(n\[L\], m\) = \(2, 5\), got \(2, 4\)"):
        f(NET, PARAMS, X, Y[:, :4])
    with pytest.raises(ValueError, match=r"Y: expected shape .* got \(5,\) \(a row of labels"):
        f(NET, PARAMS, X, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"got \(5, 2\)"):
        f(NET, PARAMS, X, Y.T)


def test_checks_run_at_trace_time_under_jit():
    f = jax.jit(lambda p, x, y: jaxmlp.value_and_grad(NET, p, x, y))
    with pytest.raises(ValueError, match=r"Y: expected shape"):
        f(PARAMS, X, Y[:, :4])
    # and once traced with good shapes, the compiled function has no check left to run
    J, _ = f(PARAMS, X, Y)
    assert np.isfinite(float(J))


def test_concrete_0d_jax_arrays_are_the_numbers_they_hold():
    """Sizes and real numbers given as concrete 0-d JAX arrays equal the Python numbers'
    results; a 0-d bool array, a 1-d array and a traced one are refused, named."""
    net = jaxmlp.Network((jnp.int32(3), jnp.asarray(4), 2), ("relu", "softmax"),
                         "categorical_cross_entropy")
    assert net == NET and all(type(n) is int for n in net.sizes)
    eps = jaxmlp.privacy.epsilon(noise_multiplier=jnp.float32(1.5), sampling_rate=0.5, steps=40,
                                 delta=1e-5)
    assert eps == jaxmlp.privacy.epsilon(noise_multiplier=1.5, sampling_rate=0.5, steps=40,
                                         delta=1e-5)
    with pytest.raises(ValueError, match=r"noise_multiplier: expected a number >= 0, got -1.0\."):
        jaxmlp.privacy.epsilon(noise_multiplier=jnp.float32(-1.0), sampling_rate=0.5, steps=40,
                               delta=1e-5)
    with pytest.raises(TypeError, match=r"sizes\[1\]: expected a positive integer, got an array "
                                        r"of shape \(\) and dtype bool"):
        jaxmlp.Network((3, jnp.asarray(True), 2), ("relu", "softmax"), "categorical_cross_entropy")
    with pytest.raises(TypeError, match=r"sizes\[1\]: expected a positive integer, got an array "
                                        r"of shape \(\) and dtype float32"):
        jaxmlp.Network((3, jnp.float32(4), 2), ("relu", "softmax"), "categorical_cross_entropy")
    with pytest.raises(TypeError, match=r"noise_multiplier: expected a real number, got an array "
                                        r"of shape \(1,\) and dtype float32"):
        jaxmlp.privacy.epsilon(noise_multiplier=jnp.ones(1, jnp.float32), sampling_rate=0.5,
                               steps=40, delta=1e-5)
    with pytest.raises(TypeError, match=r"noise_multiplier: expected a real number, got a traced "
                                        r"array of shape \(\) and dtype float32"):
        jax.jit(lambda s: jaxmlp.privacy.epsilon(noise_multiplier=s, sampling_rate=0.5, steps=40,
                                                 delta=1e-5))(jnp.float32(1.5))


def test_integer_targets_are_cast_exactly():
    J1 = jaxmlp.loss(NET, PARAMS, X, Y)
    J2 = jaxmlp.loss(NET, PARAMS, X, Y.astype(np.int32))
    assert float(J1) == float(J2)


def test_backward_rejects_a_foreign_cache():
    _, cache = jaxmlp.forward(NET, PARAMS, X)
    with pytest.raises(TypeError, match=r"cache: expected the Cache returned by jaxmlp.forward"):
        jaxmlp.backward(NET, PARAMS, (cache.A,), Y)
    other = jaxmlp.Network((3, 5, 2), ("relu", "softmax"), "categorical_cross_entropy")
    _, cache_other = jaxmlp.forward(other, jaxmlp.init_params(other, jax.random.PRNGKey(0)), X)
    with pytest.raises(ValueError, match=r"cache.A\[1\]: expected shape \(4, 5\), got \(5, 5\)"):
        jaxmlp.backward(NET, PARAMS, cache_other, Y)


def test_net_must_be_a_network():
    with pytest.raises(TypeError, match=r"net: expected a jaxmlp.Network, got tuple"):
        jaxmlp.init_params((3, 4, 2), jax.random.PRNGKey(0))


def test_init_params_bad_arguments():
    k = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"scheme: expected one of .* got 'kaiming'"):
        jaxmlp.init_params(NET, k, "kaiming")
    with pytest.raises(ValueError, match=r"scheme: expected one name or 2 names, got 3"):
        jaxmlp.init_params(NET, k, ("he", "he", "he"))
    with pytest.raises(TypeError, match=r"dtype: expected a floating dtype, got int32"):
        jaxmlp.init_params(NET, k, dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"scale: expected a positive number, got -1"):
        jaxmlp.init_params(NET, k, "normal", scale=-1)


def test_verification_reports_non_finite_data():
    Xbad = X.copy()
    Xbad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X: expected finite values, found 1 NaN or infinite entry"):
        check_gradients(NET, PARAMS, Xbad, Y)
    Ybad = Y.copy()
    Ybad[:, 1] = np.inf
    with pytest.raises(ValueError, match=r"Y: expected finite values, found 2 NaN or infinite"):
        check_gradients(NET, PARAMS, X, Ybad)
    with pytest.raises(ValueError, match=r"finite_differences: expected one of"):
        check_gradients(NET, PARAMS, X, Y, finite_differences="yes")


def test_check_rule_for_a_user_derived_gradient():
    """Users check their own rules: right rule passes, a wrong one fails with a clear report."""
    theta = {"w": jnp.array([0.3, -1.2, 2.0]), "s": jnp.array(0.7)}

    def f(t):
        return jnp.sum(jnp.tanh(t["s"] * t["w"]) ** 2)

    def good(t):
        u = jnp.tanh(t["s"] * t["w"])
        du = 2 * u * (1 - u**2)
        return {"w": du * t["s"], "s": jnp.sum(du * t["w"])}

    def bad(t):  # forgets the chain-rule factor of tanh
        u = jnp.tanh(t["s"] * t["w"])
        return {"w": 2 * u * t["s"], "s": jnp.sum(2 * u * t["w"])}

    r = check_rule(f, good, theta)
    assert r.passed and r.max_autodiff < 1e-12 and r.max_finite_diff < 1e-6
    r_bad = check_rule(f, bad, theta)
    assert not r_bad.passed and r_bad.max_autodiff > 0.1 and r_bad.max_finite_diff > 0.1
    assert "passed: False" in r_bad.table()
    with pytest.raises(ValueError, match=r"grad_f: expected a gradient with the structure"):
        check_rule(f, lambda t: [t["w"]], theta)


def test_check_gradients_directions_mode_for_large_networks():
    net = jaxmlp.Network((20, 64, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, jax.random.PRNGKey(1), dtype=jnp.float64)
    Xr = jax.random.normal(jax.random.PRNGKey(2), (20, 8))
    Yr = jax.nn.one_hot(jnp.arange(8) % 3, 3).T
    r = check_gradients(net, p, Xr, Yr, max_fd_params=100, num_directions=16)
    assert r.fd_mode == "directions" and r.passed and r.max_finite_diff < 1e-6
