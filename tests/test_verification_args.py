"""jaxmlp.oracle.verification's refusals (argument named, expected vs given), raised before
any oracle runs, and its reports' tables read back: the gradient table in direction mode, the
curvature table with a quantity missing for an array. Nothing is differentiated. (The shape
checks of non-element-wise and cost rules come after their random test points are drawn,
seconds of compilation on a cold process: not here.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.oracle import verification as V

from helpers import NoSignature  # noqa: E402


def test_finite_difference_step_must_be_a_positive_float():
    for eps in (0, -1e-5, 1, "1e-5"):
        with pytest.raises(ValueError, match=rf"eps: expected a positive float, got {eps!r}"):
            V.finite_difference_grad(lambda t: jnp.sum(t), jnp.ones(3), eps=eps)


def test_check_rule_refusals():
    with pytest.raises(ValueError, match="theta: expected a pytree with at least one array, got none"):
        V.check_rule(lambda t: 0.0, lambda t: t, {})
    with pytest.raises(TypeError, match="theta: expected floating arrays, got dtype int"):
        V.check_rule(lambda t: jnp.sum(t), lambda t: t, jnp.arange(3))
    with pytest.raises(ValueError, match=r"grad_f: leaf 1: expected shape \(2,\), got \(3,\)"):
        V.check_rule(lambda t: jnp.sum(t[0]) + jnp.sum(t[1]), lambda t: [t[0], jnp.ones(3)],
                     [jnp.ones(4), jnp.ones(2)])


def test_activation_rule_shapes_refused():
    with pytest.raises(TypeError, match="forward, derivative: expected callables"):
        V.check_activation_rule(jnp.tanh, "1 - tanh^2")
    with pytest.raises(ValueError, match=r"forward: expected an output of the input's shape "
                                         r"\(512,\), got \(1,\)"):
        V.check_activation_rule(lambda Z: jnp.sum(Z, keepdims=True), lambda Z: Z)
    # a derivative whose signature cannot be read is called with Z alone
    with pytest.raises(ValueError, match=r"derivative: expected g'\(Z\) of Z's shape \(512,\), "
                                         r"got \(\)"):
        V.check_activation_rule(jnp.tanh, NoSignature(lambda *args: (len(args) == 1) + 0.0))


def test_cost_rule_needs_callables():
    with pytest.raises(TypeError, match="loss, dloss_dA: expected callables"):
        V.check_cost_rule(None, lambda A, Y: A)


def test_curvature_oracles_refuse_large_networks():
    net = jaxmlp.Network((5, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    rng = np.random.default_rng(0)
    params = [{"W": rng.normal(size=s["W"]), "b": rng.normal(size=s["b"])}
              for s in net.param_shapes()]
    X, Y = rng.normal(size=(5, 3)), np.eye(2)[:, [0, 1, 1]]
    with pytest.raises(ValueError, match=r"net: the autodiff oracles form 34\^2 matrices; expected "
                                         r"at most max_params=20 parameters, got 34"):
        V.check_curvature(net, params, X, Y, max_params=20)


def test_gradient_table_in_direction_mode():
    errors = (V.ParamError(1, "W", (3, 2), 1e-15, math.nan), V.ParamError(1, "b", (3,), 0.0, math.nan))
    report = V.GradCheckReport(errors, 1e-15, 2.5e-9, 1e-10, 1e-6, "float64", "directions", True)
    lines = report.table().splitlines()
    assert lines[1].split() == ["1", "W", "(3,", "2)", "1.00e-15", "-"]
    assert lines[-2] == ("vs finite differences along random directions (whole gradient): "
                         "2.50e-09")
    assert lines[-1] == ("passed: True (tolerances 1e-10 / 1e-06, float64, finite differences: "
                         "directions)")


def test_curvature_table_one_column_per_quantity_dash_where_missing():
    errors = (V.CurvatureError(1, "W", "ggn_diag", 1e-16), V.CurvatureError(1, "b", "ggn_diag", 0.0),
              V.CurvatureError(1, "W", "hvp", 3e-15), V.CurvatureError(1, "A", "kfac_A", 5e-17))
    report = V.CurvatureReport(errors, 3e-15, 1e-10, "float64", True)
    header, *rows, last = report.table().splitlines()
    assert header.split() == ["layer", "param", "ggn_diag", "kfac_A", "hvp"]  # CURVATURE_QUANTITIES order
    assert [r.split() for r in rows] == [["1", "A", "-", "5.00e-17", "-"],
                                         ["1", "W", "1.00e-16", "-", "3.00e-15"],
                                         ["1", "b", "0.00e+00", "-", "-"]]
    assert last == "max 3.00e-15, passed: True (tolerance 1e-10, float64)"


def test_a_rule_that_returns_nan_anywhere_fails():
    """A hand-derived gradient with a NaN in its second array: the report's maximum is NaN and
    it does not pass (Python's max would skip a NaN that is not first), in float32 and float64;
    the same rule without the NaN passes."""
    f = lambda t: jnp.sum(jnp.tanh(t["s"] * t["w"]) ** 2)  # noqa: E731

    def grad(t, nan):
        u = jnp.tanh(t["s"] * t["w"])
        du = 2 * u * (1 - u ** 2)
        gw = du * t["s"]
        return {"w": gw.at[1].set(jnp.nan) if nan else gw, "s": jnp.sum(du * t["w"])}

    for dtype in (jnp.float32, jnp.float64):
        theta = {"w": jnp.array([0.3, -1.2, 2.0], dtype), "s": jnp.array(0.7, dtype)}
        good = V.check_rule(f, lambda t: grad(t, False), theta)
        bad = V.check_rule(f, lambda t: grad(t, True), theta)
        assert good.passed and not bad.passed
        assert math.isnan(bad.max_autodiff) and math.isnan(bad.max_finite_diff)
        # the table prints the NaN it computed (only errors not computed show "-")
        w_row = next(line for line in bad.table().splitlines() if "['w']" in line)
        assert w_row.split()[-2:] == ["nan", "nan"]
    assert V.worst([0.1, float("nan"), 0.2]) != V.worst([0.1, float("nan"), 0.2])  # NaN
    assert V.worst([0.1, 0.3, 0.2]) == 0.3


def test_an_activation_rule_that_is_nan_at_zero_is_refused():
    """z = 0 exactly (a zero input column with zero biases) is checked for finite values:
    g'(z) = g(z)/z + z (1 - (g(z)/z)^2) for g = z tanh(z) agrees with autodiff at every z != 0
    and is NaN at 0, so register_activation refuses it; the rule written without the division
    passes, and relu's derivative at its kink (a convention) is not compared there."""
    f = lambda Z: Z * jnp.tanh(Z)  # noqa: E731
    bad = lambda Z, A: A / Z + Z * (1 - (A / Z) ** 2)  # noqa: E731
    good = lambda Z: jnp.tanh(Z) + Z * (1 - jnp.tanh(Z) ** 2)  # noqa: E731
    report = V.check_activation_rule(f, bad)
    assert not report.passed
    failed = {(r.quantity, r.region) for r in report.rows
              if r.nonfinite or r.max_error > r.tol}
    assert failed == {("g'(z)", V.AT_ZERO), ("g'(z)", V.AT_ZERO + ", float32")}
    assert V.check_activation_rule(f, good).passed
    half = lambda Z: jnp.where(Z > 0, 1.0, jnp.where(Z < 0, 0.0, 0.5))  # relu'(0) := 1/2
    assert V.check_activation_rule(jax.nn.relu, half).passed
    with pytest.raises(ValueError, match="z = 0, finite"):
        jaxmlp.register_activation("ztanh_by_division", f, bad)
