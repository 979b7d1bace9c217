"""register_activation / register_cost: verified against autodiff, refused when wrong, then
usable by name everywhere (Network, init, forward/backward, gradient check, per-example, CLI)."""

import os
import runpy
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
import jaxmlp.nn.single_column  # noqa: F401  (used as jaxmlp.nn.single_column below)
from jaxmlp.oracle import registry
from jaxmlp.oracle import verification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mish():
    """examples/mish.py run once (it registers "mish", verified against autodiff): at the first
    test that needs it, not when the module is collected, so a worker that runs none of
    these tests does not pay for the verification."""
    if "mish" not in jaxmlp.ACTIVATIONS:
        runpy.run_path(os.path.join(ROOT, "examples", "mish.py"))
    return "mish"


def _selu_like(alpha=1.7, lam=1.05):
    fwd = lambda Z: lam * jnp.where(Z > 0, Z, alpha * jnp.expm1(jnp.where(Z > 0, 0.0, Z)))  # noqa: E731
    d1 = lambda Z: lam * jnp.where(Z > 0, 1.0, alpha * jnp.exp(jnp.where(Z > 0, 0.0, Z)))  # noqa: E731
    return fwd, d1


@pytest.fixture
def fresh():
    names = []
    yield names
    for n in names:
        registry._unregister(n)


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_registered_activation_is_used_by_name_everywhere(fresh, mish):
    """mish from examples/mish.py: Network, init scheme, the batched recurrences against
    jax.grad, single-column and per-example gradients."""
    assert "mish" in jaxmlp.ACTIVATIONS and jaxmlp.nn.activations.get_activation("mish").init == "he"
    net = jaxmlp.Network((4, 6, 5, 3), ("mish", "mish", "softmax"), "categorical_cross_entropy")
    params, X, Y = verification.random_problem(net, jax.random.PRNGKey(1), 9, jnp.float64)
    report = verification.check_gradients(net, params, X, Y)
    assert report.passed, report.table()
    # forward really is mish
    A1 = jaxmlp.forward(net, params, X)[1].A[1]
    Z1 = params[0]["W"] @ X + params[0]["b"][:, None]
    np.testing.assert_allclose(A1, Z1 * np.tanh(np.logaddexp(Z1, 0)), rtol=1e-12)
    # per-example gradients (each with the 1/m of J) sum to the batch gradient
    per = jaxmlp.per_example_grads(net, params, X, Y)
    _, g = jaxmlp.value_and_grad(net, params, X, Y)
    np.testing.assert_allclose(per[0]["W"].sum(0), g[0]["W"], rtol=1e-10, atol=1e-13)
    _, gcol = jaxmlp.nn.single_column.value_and_grad_col(net, params, X[:, 0], Y[:, 0])
    _, g1 = jaxmlp.value_and_grad(net, params, X[:, :1], Y[:, :1])
    np.testing.assert_allclose(gcol[1]["W"], g1[1]["W"], rtol=1e-10)


def test_scaled_elu_with_second_derivative_and_both_derivative_signatures(fresh):
    fwd, d1 = _selu_like()
    d2 = lambda Z: 1.05 * jnp.where(Z > 0, 0.0, 1.7 * jnp.exp(jnp.where(Z > 0, 0.0, Z)))  # noqa: E731
    act = jaxmlp.register_activation("t_selu", fwd, d1, second_derivative=d2, init="lecun")
    fresh.append("t_selu")
    assert act.second_derivative is d2 and jaxmlp.nn.activations.get_activation("t_selu").init == "lecun"
    act2 = jaxmlp.register_activation("t_selu_za", fwd, lambda Z, A: d1(Z))
    fresh.append("t_selu_za")
    Z = jnp.linspace(-3, 3, 7)
    np.testing.assert_array_equal(act2.backward(jnp.ones(7), Z, fwd(Z)), d1(Z))


def test_wrong_derivative_refused_with_the_table(fresh):
    fwd, d1 = _selu_like()
    with pytest.raises(ValueError) as e:
        jaxmlp.register_activation("t_wrong", fwd, lambda Z: jnp.where(Z > 0, 1.0, jnp.exp(Z)))
    msg = str(e.value)
    assert msg.startswith("derivative: the rule for 't_wrong' disagrees with autodiff")
    assert "g'(z)      random" in msg and "NO" in msg and "passed: False" in msg
    assert "t_wrong" not in jaxmlp.ACTIVATIONS


def test_wrong_only_near_the_kink_or_at_saturation_is_caught(fresh):
    # right away from 0, wrong for 0 < z < 1e-2 only: only the kink region sees it
    relu = lambda Z: jnp.where(Z > 0, Z, 0.0)  # noqa: E731
    bad_kink = lambda Z: jnp.where(Z > 1e-2, 1.0, 0.0)  # noqa: E731
    with pytest.raises(ValueError, match=r"near kinks\s+\d+\s+1\.00e\+00"):
        jaxmlp.register_activation("t_kink", relu, bad_kink)
    # exact in float64 but overflowing in float32 at saturation
    with pytest.raises(ValueError, match=r"saturation, float32.*NO"):
        jaxmlp.register_activation("t_sat", lambda Z: jnp.log1p(jnp.exp(Z)),
                                   lambda Z: jnp.exp(Z) / (1 + jnp.exp(Z)))
    assert "t_kink" not in jaxmlp.ACTIVATIONS and "t_sat" not in jaxmlp.ACTIVATIONS
    report = verification.check_activation_rule(lambda Z: jnp.log1p(jnp.exp(Z)),
                                                lambda Z: jnp.exp(Z) / (1 + jnp.exp(Z)))
    rows = {r.region: r for r in report.rows if r.quantity == "g'(z)"}
    assert rows["saturation"].max_error < 1e-12 and rows["saturation, float32"].nonfinite > 0


def test_is_registered_tells_added_names_from_built_in_ones(fresh):
    from jaxmlp.oracle.registry import is_registered

    fwd, d1 = _selu_like()
    jaxmlp.register_activation("t_reg", fwd, d1)
    assert is_registered("t_reg")
    assert not is_registered("relu") and not is_registered("mean_squared_error")
    assert not is_registered("never_registered")


def test_wrong_second_derivative_refused(fresh):
    fwd, d1 = _selu_like()
    with pytest.raises(ValueError, match="(?s)^second_derivative: the rule for 't_d2' "
                                         "disagrees.*g''\\(z\\)"):
        jaxmlp.register_activation("t_d2", fwd, d1, second_derivative=lambda Z: jnp.zeros_like(Z))


def test_non_elementwise_rule_checked_by_vjp(fresh):
    fwd = lambda Z: jax.nn.softmax(2.0 * Z, axis=0)  # noqa: E731
    right = lambda dA, Z, A: 2.0 * A * (dA - jnp.sum(dA * A, axis=0, keepdims=True))  # noqa: E731
    jaxmlp.register_activation("t_softmax2", fwd, right, elementwise=False, init="glorot")
    fresh.append("t_softmax2")
    net = jaxmlp.Network((3, 4, 2), ("t_softmax2", "linear"), "mean_squared_error")
    params, X, Y = verification.random_problem(net, jax.random.PRNGKey(0), 5, jnp.float64)
    assert verification.check_gradients(net, params, X, Y).passed
    with pytest.raises(ValueError, match="dZ \\(B4\\)"):
        jaxmlp.register_activation("t_softmax_bad", fwd, lambda dA, Z, A: A * dA, elementwise=False)


def test_taken_names_and_bad_arguments_refused(mish):
    fwd, d1 = _selu_like()
    for name in ("relu", "mish"):
        with pytest.raises(ValueError, match=f"name: the activation '{name}' is already registered"):
            jaxmlp.register_activation(name, fwd, d1)
    with pytest.raises(ValueError, match="name: the cost 'mean_squared_error' is already registered"):
        jaxmlp.register_cost("mean_squared_error", lambda A, Y: A, lambda A, Y: A)
    with pytest.raises(TypeError, match="name: expected a string"):
        jaxmlp.register_activation(3, fwd, d1)
    with pytest.raises(ValueError, match="name: expected letters"):
        jaxmlp.register_activation("has space", fwd, d1)
    with pytest.raises(TypeError, match="derivative: expected a callable"):
        jaxmlp.register_activation("t_x", fwd, 1.0)
    with pytest.raises(ValueError, match="init: expected one of"):
        jaxmlp.register_activation("t_x", fwd, d1, init="zeros")


def test_registered_cost_verified_and_trainable(fresh):
    """A pseudo-Huber cost: L = sum_rows sqrt(1 + (A - Y)^2) - 1, dL/dA = (A - Y)/sqrt(1 + (A - Y)^2)."""
    loss = lambda A, Y: jnp.sum(jnp.sqrt(1 + jnp.square(A - Y)) - 1, axis=0)  # noqa: E731
    seed = lambda A, Y: (A - Y) / jnp.sqrt(1 + jnp.square(A - Y))  # noqa: E731
    jaxmlp.register_cost("t_huber", loss, seed)
    fresh.append("t_huber")
    net = jaxmlp.Network((3, 5, 2), ("tanh", "linear"), "t_huber")
    assert not net.fused
    params, X, Y = verification.random_problem(net, jax.random.PRNGKey(2), 6, jnp.float64)
    assert verification.check_gradients(net, params, X, Y).passed
    with pytest.raises(ValueError, match="dloss_dA: the seed of 't_bad' disagrees") as e:
        jaxmlp.register_cost("t_bad", loss, lambda A, Y: A - Y)
    assert "dL/dA" in str(e.value) and "t_bad" not in jaxmlp.COSTS
    with pytest.raises(ValueError, match="loss: expected per-example losses of shape"):
        jaxmlp.register_cost("t_shape", lambda A, Y: jnp.sum(A - Y), lambda A, Y: jnp.ones_like(A))


@pytest.mark.slow
def test_train_cli_with_a_registered_activation(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    script = os.path.join(ROOT, "experiments", "train.py")
    out = tmp_path / "run"
    ok = subprocess.run([sys.executable, script, "--register", os.path.join(ROOT, "examples", "mish.py"),
                         "--activation", "mish", "--dataset", "breast_cancer", "--hidden", "8",
                         "--epochs", "2", "--no-progress", "--no-plot", "--out", str(out)],
                        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "relu" not in ok.stdout and "(mish / sigmoid" in ok.stdout
    # the printed predict command carries --register, and says which file
    assert f"predict:     bash scripts/run.sh predict --register FILE.py --checkpoint {out}" in ok.stdout
    assert "FILE.py: the file that registered mish" in ok.stdout
    bad_rule = tmp_path / "bad.py"
    bad_rule.write_text("import jax.numpy as jnp, jaxmlp\n"
                        "jaxmlp.register_activation('bad', jnp.tanh, lambda z: 1 - z**2)\n")
    bad = subprocess.run([sys.executable, script, "--register", str(bad_rule), "--activation", "bad"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"train.py: error: --register: {bad_rule}: ValueError: derivative:")
    assert "passed: False" in bad.stderr


def test_an_optional_parameter_or_a_ufunc_out_is_not_the_activation_output(fresh):
    """g'(Z) vs g'(Z, A) is read from the REQUIRED positional parameters: a derivative with an
    optional slope (``def d(Z, alpha=0.01)``) or a NumPy ufunc (whose ``out`` is optional) is
    called with Z alone, so the registered (B4) is dA * g'(Z), not dA * g'(Z, A)."""
    take = verification.takes_activation_output
    assert take(lambda Z, A: Z) and take(lambda *zs: zs[0])
    assert not take(lambda Z: Z) and not take(lambda Z, alpha=0.01: Z) and not take(np.cos)
    assert not take(lambda Z, *, alpha=0.01: Z)

    def leaky(Z, alpha=0.25):
        return jnp.where(Z > 0, Z, alpha * Z)

    def dleaky(Z, alpha=0.25):
        return jnp.where(Z > 0, 1.0, alpha)

    fresh.append("leaky_quarter")
    act = registry.register_activation("leaky_quarter", leaky, dleaky, check=False)
    Z = jnp.array([[-2.0, 3.0], [0.5, -1.0]])
    dA = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(act.backward(dA, Z, leaky(Z)), dA * np.where(Z > 0, 1.0, 0.25))
    assert verification.check_activation_rule(leaky, dleaky).passed
