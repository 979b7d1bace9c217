"""Edges of jaxmlp.oracle.verification: float32 gradients judged against the float64 gradient
when float32 autodiff is itself off, float16 / bfloat16 tolerances (a right rule passes, one
off by 1.05 fails), float64 arrays outside 64-bit mode refused, argument refusals (argument,
expected and given named, before any work), finite differences always in float64, a loss
that overflows named as such (not its seed), and the scripts' output lines."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.oracle import verification as V

from helpers import load_script

F = lambda t: jnp.sum(jnp.tanh(t["s"] * t["w"]) ** 2)  # noqa: E731


def grad_F(t, factor=1.0):
    """The hand-derived gradient of F: d/dw = 2 u (1 - u^2) s, d/ds = sum 2 u (1 - u^2) w."""
    u = jnp.tanh(t["s"] * t["w"])
    du = 2 * u * (1 - u ** 2)
    return {"w": factor * du * t["s"], "s": factor * jnp.sum(du * t["w"])}


def problem(net, seed, m, dtype):
    """(params, X, Y) drawn with NumPy: W, X ~ N(0, 1), b ~ N(0, 0.1^2), one-hot Y for a
    categorical cost, else Y ~ N(0, 1); rounded to dtype."""
    rng = np.random.default_rng(seed)
    p = [{"W": jnp.asarray(rng.normal(size=s["W"]), dtype),
          "b": jnp.asarray(0.1 * rng.normal(size=s["b"]), dtype)} for s in net.param_shapes()]
    X = jnp.asarray(rng.normal(size=(net.sizes[0], m)), dtype)
    if net.cost == "categorical_cross_entropy":
        Y = jnp.asarray(np.eye(net.sizes[-1])[:, rng.integers(0, net.sizes[-1], m)], dtype)
    else:
        Y = jnp.asarray(rng.normal(size=(net.sizes[-1], m)), dtype)
    return p, X, Y


def theta(dtype):
    return {"w": jnp.array([0.3, -1.2, 2.0], dtype), "s": jnp.array(0.7, dtype)}


# ----------------------------------------------------------------------------- float32


def test_float32_gradient_decided_against_float64_when_float32_autodiff_is_off():
    """A problem (seed 133) where float32 jax.grad is 4.6e-5 off the float64 gradient and
    jaxmlp's float32 gradient 3.9e-6: it passes, decided by the float64 reference, and the
    report's errors are those computed here against jax.grad in float64 at the same point."""
    net = jaxmlp.Network((2, 3, 2), ("tanh", "softmax"), "mean_squared_error")
    p, X, Y = problem(net, 133, 1, jnp.float32)
    report = V.check_gradients(net, p, X, Y, finite_differences="off")
    assert report.passed and report.reference == V.FLOAT64_AUTODIFF
    assert report.max_autodiff > report.tol_autodiff == 1e-5
    p64, X64, Y64 = jax.tree.map(lambda a: a.astype(jnp.float64), (p, X, Y))
    truth = jax.tree.leaves(jax.grad(lambda q: jaxmlp.loss(net, q, X64, Y64))(p64))
    man = jax.tree.leaves(jaxmlp.value_and_grad(net, p, X, Y)[1])
    ad = jax.tree.leaves(jax.grad(lambda q: jaxmlp.loss(net, q, X, Y))(p))
    assert report.manual_vs_float64 == V.worst(V.relative_error(a, t) for a, t in zip(man, truth))
    assert report.autodiff_vs_float64 == V.worst(V.relative_error(a, t) for a, t in zip(ad, truth))
    assert report.manual_vs_float64 < 1e-5 < report.autodiff_vs_float64
    assert "decided against float64 autodiff" in report.table()


def test_float64_reference_still_refuses_a_wrong_float32_rule_and_float64_is_unchanged():
    wrong = V.check_rule(F, lambda t: grad_F(t, 1.0001), theta(jnp.float32),
                         finite_differences=False)
    assert not wrong.passed and wrong.reference == V.FLOAT64_AUTODIFF
    assert wrong.manual_vs_float64 > 9e-5  # the 1e-4 off, against float64 truth
    right = V.check_rule(F, grad_F, theta(jnp.float32))
    assert right.passed and right.reference == V.AUTODIFF and math.isnan(right.manual_vs_float64)
    r64 = V.check_rule(F, lambda t: grad_F(t, 1 + 1e-9), theta(jnp.float64),
                       finite_differences=False)
    assert not r64.passed and r64.reference == V.AUTODIFF  # no fallback in float64
    assert r64.table().splitlines()[-1].startswith("passed: False (tolerances 1e-10 / 1e-06")


# ----------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype, tol", [(jnp.bfloat16, 3e-2), (jnp.float16, 1e-2)])
def test_half_precision_rules_right_pass_and_off_by_five_percent_fail(dtype, tol):
    assert V.DEFAULT_TOLERANCES[f"autodiff_{jnp.dtype(dtype).name}"] == tol
    assert V.DEFAULT_TOLERANCES[f"finite_diff_{jnp.dtype(dtype).name}"] == tol
    right = V.check_rule(F, grad_F, theta(dtype))
    assert right.passed, right.table()
    assert (right.tol_autodiff, right.tol_finite_diff) == (tol, tol)
    wrong = V.check_rule(F, lambda t: grad_F(t, 1.05), theta(dtype))
    assert not wrong.passed
    assert wrong.max_finite_diff > tol  # 0.05 / 1.05 against the float64 differences


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_network_gradient_passes(dtype):
    net = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    p, X, Y = problem(net, 0, 5, dtype)
    report = V.check_gradients(net, p, X, Y)
    assert report.passed and report.dtype == jnp.dtype(dtype).name, report.table()


# ----------------------------------------------------------------------------- 64-bit mode


def test_float64_arrays_outside_64_bit_mode_refused():
    net = jaxmlp.Network((2, 2), ("softmax",), "categorical_cross_entropy")
    p, X, Y = problem(net, 0, 3, jnp.float64)
    t64 = theta(jnp.float64)
    msg = (r"float64 parameters need 64-bit mode; call jax.config.update\('jax_enable_x64', "
           r"True\) first, or run inside jax.enable_x64\(True\) \(got dtype=float64\)")
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="^params: " + msg):
            V.check_gradients(net, p, X, Y)
        with pytest.raises(TypeError, match="^theta: " + msg):
            V.check_rule(F, grad_F, t64)


# ----------------------------------------------------------------------------- arguments


def test_tolerances_refused_unless_numbers_at_least_zero():
    net = jaxmlp.Network((2, 2), ("softmax",), "categorical_cross_entropy")
    p, X, Y = problem(net, 0, 3, jnp.float32)
    for name in ("tol_autodiff", "tol_finite_diff"):
        with pytest.raises(TypeError,
                           match=rf"^{name}: expected a real number, got '1e-5' \(str\)"):
            V.check_gradients(net, p, X, Y, **{name: "1e-5"})
        with pytest.raises(ValueError, match=rf"^{name}: expected a number >= 0, got -1e-05"):
            V.check_rule(F, grad_F, theta(jnp.float32), **{name: -1e-5})
        with pytest.raises(ValueError, match=rf"^{name}: expected a number >= 0, got nan"):
            V.check_gradients(net, p, X, Y, **{name: float("nan")})


def test_counts_and_steps_refused():
    net = jaxmlp.Network((2, 2), ("softmax",), "categorical_cross_entropy")
    p, X, Y = problem(net, 0, 3, jnp.float32)
    for n in (0, -3):
        with pytest.raises(ValueError, match=rf"^num_directions: expected a positive integer, "
                                             rf"got {n}"):
            V.check_gradients(net, p, X, Y, finite_differences="directions", num_directions=n)
        with pytest.raises(ValueError, match=rf"^num_directions: expected a positive integer, "
                                             rf"got {n}"):
            V.finite_difference_grad(jnp.sum, jnp.ones(3), num_directions=n)
    with pytest.raises(TypeError, match=r"^num_directions: expected a positive integer, got 2.5 "
                                        r"\(float\)"):
        V.check_gradients(net, p, X, Y, num_directions=2.5)
    with pytest.raises(ValueError, match=r"^chunk_size: expected a positive integer, got 0"):
        V.finite_difference_grad(jnp.sum, jnp.ones(3), chunk_size=0)
    for call in (lambda: V.finite_difference_grad(jnp.sum, jnp.ones(3), eps=math.inf),
                 lambda: V.check_gradients(net, p, X, Y, eps=math.inf),
                 lambda: V.check_rule(F, grad_F, theta(jnp.float32), eps=math.inf)):
        with pytest.raises(ValueError, match=r"^eps: expected a positive float, got inf; it "
                                             r"must be finite"):
            call()


def test_check_rule_callables_and_scalar_output_refused():
    t = theta(jnp.float32)
    with pytest.raises(TypeError, match=r"^f: expected a callable, got NoneType"):
        V.check_rule(None, grad_F, t)
    with pytest.raises(TypeError, match=r"^grad_f: expected a callable, got NoneType"):
        V.check_rule(F, None, t)
    with pytest.raises(TypeError, match=r"^f: expected a callable theta -> scalar, got str"):
        V.finite_difference_grad("sum", jnp.ones(3))
    with pytest.raises(ValueError, match=r"^f: expected a scalar \(shape \(\)\) at theta, got "
                                         r"shape \(3,\)"):
        V.check_rule(lambda t: jnp.tanh(t["w"]), grad_F, t)


# ----------------------------------------------------------------------------- finite differences


def test_finite_differences_of_float32_input_are_float64():
    """sum(sin(w)) at float32 w: the central differences are float64 and within 1e-9 of
    cos(w) (in float32 the quotient's rounding alone is ~eps_32 / h ~ 1e-2)."""
    w = jnp.array([0.3, -1.2, 2.0], jnp.float32)
    g = V.finite_difference_grad(lambda v: jnp.sum(jnp.sin(v)), w)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(g), np.cos(np.asarray(w, np.float64)), rtol=0, atol=1e-9)
    with jax.enable_x64(False):
        g = V.finite_difference_grad(lambda v: jnp.sum(jnp.sin(v)), w)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(g), np.cos(np.asarray(w, np.float64)), rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- costs


def test_overflowing_loss_named_not_its_correct_seed():
    """log(cosh(A - Y)) overflows at |A - Y| = 1e3 (cosh > 1.8e308): the loss is named; the
    correct seed tanh(A - Y) agrees wherever the loss is finite; points and non-finite count
    examples."""
    naive = lambda A, Y: jnp.sum(jnp.log(jnp.cosh(A - Y)), 0)  # noqa: E731
    seed = lambda A, Y: jnp.tanh(A - Y)  # noqa: E731
    report = V.check_cost_rule(naive, seed)
    assert not report.passed
    bad = {r.region: r.nonfinite for r in report.rows if r.nonfinite or r.max_error > r.tol}
    assert bad == {"saturation": 64, "saturation, float32": 64}
    assert all(r.quantity == V.LOSS_FINITE and r.points == 64 for r in report.rows
               if r.nonfinite)
    assert all(r.max_error <= r.tol for r in report.rows if r.quantity == "dL/dA")
    with pytest.raises(ValueError, match=r"^loss: the loss of 'edge_logcosh' or its autodiff "
                                         r"gradient is NaN or infinite at test points "
                                         r"\(saturation: 64 of 64 examples; saturation, float32: "
                                         r"64 of 64 examples\), where dloss_dA cannot be judged"):
        jaxmlp.register_cost("edge_logcosh", naive, seed)
    assert "edge_logcosh" not in jaxmlp.COSTS


# ----------------------------------------------------------------------------- scripts


def test_curvature_check_says_where_it_wrote(tmp_path, capsys, monkeypatch):
    script = load_script("curvature_check")
    monkeypatch.setattr(script, "cases", lambda quick: iter([("mean_squared_error", "linear",
                                                             "tanh", 1, 1, 1)]))
    err = V.CurvatureError(1, "W", "ggn_diag", 0.0)
    monkeypatch.setattr(script, "check_curvature",
                        lambda *a, **k: V.CurvatureReport((err,), 0.0, 1e-10, "float64", True))
    monkeypatch.setattr(script, "CURVATURE_QUANTITIES", ("ggn_diag",))
    assert script.main(["--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {tmp_path / 'check.json'}"
    assert (tmp_path / "check.json").exists()


def test_gradcheck_quick_help_lists_quick_hidden():
    script = load_script("gradcheck")
    text = " ".join(script.build_parser().format_help().split())
    assert f"hidden activations {'/'.join(sorted(script.QUICK_HIDDEN))} only" in text


def test_a_function_that_runs_only_in_float32_is_judged_by_same_dtype_autodiff():
    """check_rule's float64 reference cannot be computed for an f that refuses float64: the
    wrong rule still fails (decided against float32 autodiff), no exception of f escapes."""
    def f(t):
        if t["w"].dtype != jnp.float32:
            raise AssertionError("float32 only")
        return jnp.sum(jnp.sin(t["w"]))

    theta = {"w": jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32)}
    wrong = lambda t: {"w": jnp.cos(t["w"]) * 1.001}  # noqa: E731
    report = V.check_rule(f, wrong, theta, finite_differences=False)
    assert not report.passed and report.reference == "autodiff"
    right = lambda t: {"w": jnp.cos(t["w"])}  # noqa: E731
    assert V.check_rule(f, right, theta, finite_differences=False).passed
