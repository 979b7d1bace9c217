"""Tests of jaxmlp.forward_reverse_modes: the seed's worked example (002_*.txt, 2021-10-12 post).

y1 = x1 (x2 - x3), y2 = x3 log(1 - x1). Hand-coded sweeps are checked against the seed's
closed forms (docs/derivations.md), against its iteration tables entry by entry, and against
jax.jacfwd / jax.jacrev / jax.jvp / jax.vjp as oracles.
"""

import ast
import inspect
import math

import jax

jax.config.update("jax_enable_x64", True)

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxmlp import forward_reverse_modes as acc  # noqa: E402

POINTS = [
    (0.5, 1.5, -2.0),
    (0.0, 0.0, 0.0),
    (-3.0, 2.0, 7.0),
    (0.25, -1.0, 0.5),
    (0.9, 4.0, -0.3),
    (1.0 - 1e-6, 2.0, 3.0),  # x1 near 1: log(1 - x1) and x3 / (1 - x1) large
    (-1e3, 1e-3, -1e-3),
]


def f(x):
    """The example as a plain function, for the autodiff oracles."""
    return jnp.stack([x[0] * (x[1] - x[2]), x[2] * jnp.log(1 - x[0])])


def closed_form(x1, x2, x3):
    """The seed's Jacobian, computed in Python floats (independent of the module)."""
    return np.array(
        [
            [x2 - x3, x1, -x1],
            [-x3 / (1 - x1), 0.0, math.log(1 - x1)],
        ]
    )


@pytest.fixture(params=POINTS, ids=[f"x={p}" for p in POINTS])
def point(request):
    return request.param


# --------------------------------------------------------------------------- closed forms


def test_evaluate_matches_definition(point):
    x1, x2, x3 = point
    y, u = acc.evaluate(jnp.array(point))
    chex.assert_shape(y, (2,))
    np.testing.assert_allclose(y, [x1 * (x2 - x3), x3 * math.log(1 - x1)], rtol=1e-12)
    # the seed's decomposition
    np.testing.assert_allclose(
        list(u),
        [x1, x2, x3, x2 - x3, 1 - x1, math.log(1 - x1), x1 * (x2 - x3), x3 * math.log(1 - x1)],
        rtol=1e-12,
    )


@pytest.mark.parametrize("jacobian_fn", [acc.jacobian_forward, acc.jacobian_reverse])
def test_jacobian_matches_closed_form(point, jacobian_fn):
    J, _ = jacobian_fn(jnp.array(point))
    chex.assert_shape(J, (2, 3))
    np.testing.assert_allclose(J, closed_form(*point), rtol=1e-12, atol=1e-15)


def test_closed_form_jacobian_function(point):
    np.testing.assert_allclose(
        acc.closed_form_jacobian(jnp.array(point)), closed_form(*point), rtol=1e-12, atol=1e-15
    )


# --------------------------------------------------------------------------- autodiff oracles


def test_jacobians_match_jacfwd_and_jacrev(point):
    x = jnp.array(point)
    J_fwd, _ = acc.jacobian_forward(x)
    J_rev, _ = acc.jacobian_reverse(x)
    np.testing.assert_allclose(J_fwd, jax.jacfwd(f)(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(J_rev, jax.jacrev(f)(x), rtol=1e-12, atol=1e-15)


def test_sweeps_match_jvp_and_vjp_in_random_directions(point):
    x = jnp.array(point)
    key = jax.random.PRNGKey(0)
    for k in jax.random.split(key, 4):
        k1, k2 = jax.random.split(k)
        dx = jax.random.normal(k1, (3,), dtype=x.dtype)
        dy = jax.random.normal(k2, (2,), dtype=x.dtype)
        y, Jdx = acc.forward_sweep(x, dx)
        y_ref, Jdx_ref = jax.jvp(f, (x,), (dx,))
        np.testing.assert_allclose(y, y_ref, rtol=1e-12)
        np.testing.assert_allclose(Jdx, Jdx_ref, rtol=1e-10, atol=1e-12)
        y2, JTdy = acc.reverse_sweep(x, dy)
        y_ref2, vjp = jax.vjp(f, x)
        np.testing.assert_allclose(y2, y_ref2, rtol=1e-12)
        np.testing.assert_allclose(JTdy, vjp(dy)[0], rtol=1e-10, atol=1e-12)


def test_forward_and_reverse_agree_by_duality():
    # dy . (J dx) == (J^T dy) . dx for any dx, dy
    x = jnp.array([0.3, -0.7, 1.9])
    dx = jnp.array([0.2, -1.1, 0.4])
    dy = jnp.array([1.7, -0.6])
    _, Jdx = acc.forward_sweep(x, dx)
    _, JTdy = acc.reverse_sweep(x, dy)
    np.testing.assert_allclose(jnp.dot(dy, Jdx), jnp.dot(JTdy, dx), rtol=1e-12)


# --------------------------------------------------------------------------- sweep counts


def test_sweep_counts_are_n_and_m():
    x = jnp.array([0.5, 1.5, -2.0])
    _, n_fwd = acc.jacobian_forward(x)
    _, n_rev = acc.jacobian_reverse(x)
    assert n_fwd == 3 and isinstance(n_fwd, int)  # one per input
    assert n_rev == 2 and isinstance(n_rev, int)  # one per output


def test_jacobian_functions_call_the_sweeps_once_per_iteration(monkeypatch):
    calls = {"forward": 0, "reverse": 0}
    fwd, rev = acc.forward_sweep, acc.reverse_sweep

    def counting_fwd(*a, **k):
        calls["forward"] += 1
        return fwd(*a, **k)

    def counting_rev(*a, **k):
        calls["reverse"] += 1
        return rev(*a, **k)

    monkeypatch.setattr(acc, "forward_sweep", counting_fwd)
    monkeypatch.setattr(acc, "reverse_sweep", counting_rev)
    x = jnp.array([0.5, 1.5, -2.0])
    acc.jacobian_forward(x)
    acc.jacobian_reverse(x)
    assert calls == {"forward": 3, "reverse": 2}


# --------------------------------------------------------------------------- the seed's tables


def seed_forward_tables(x1, x2, x3):
    """The seed's "The Forward Accumulation Mode", iterations 1-3: du_k/dx_j, k = -2..5."""
    return [
        [1, 0, 0, 0, -1, -1 / (1 - x1), x2 - x3, -x3 / (1 - x1)],
        [0, 1, 0, 1, 0, 0, x1, 0],
        [0, 0, 1, -1, 0, 0, -x1, math.log(1 - x1)],
    ]


def seed_reverse_tables(x1, x2, x3):
    """The seed's "The Reverse Accumulation Mode", iterations 1-2: dy_i/du_k, k = -2..5."""
    return [
        [x2 - x3, x1, -x1, x1, 0, 0, 1, 0],
        [-x3 / (1 - x1), 0, math.log(1 - x1), 0, x3 / (1 - x1), x3, 0, 1],
    ]


def test_forward_tables_match_the_seed(point):
    J, sweeps, tables = acc.jacobian_forward(jnp.array(point), return_tables=True)
    assert sweeps == len(tables) == 3
    for table, expected in zip(tables, seed_forward_tables(*point)):
        assert isinstance(table, acc.Trace)
        np.testing.assert_allclose(list(table), expected, rtol=1e-12, atol=1e-15)
    # the last two rows of iteration j are column j of the Jacobian
    for j, table in enumerate(tables):
        np.testing.assert_allclose([table.u_4, table.u_5], J[:, j], rtol=1e-15)


def test_reverse_tables_match_the_seed(point):
    J, sweeps, tables = acc.jacobian_reverse(jnp.array(point), return_tables=True)
    assert sweeps == len(tables) == 2
    for table, expected in zip(tables, seed_reverse_tables(*point)):
        np.testing.assert_allclose(list(table), expected, rtol=1e-12, atol=1e-15)
    # the first three entries (u_-2, u_-1, u_0 = x1, x2, x3) of iteration i are row i
    for i, table in enumerate(tables):
        np.testing.assert_allclose([table.u_m2, table.u_m1, table.u_0], J[i], rtol=1e-15)


def test_sweep_return_table_and_as_dict():
    x = jnp.array([0.5, 1.5, -2.0])
    y, dy, table = acc.forward_sweep(x, jnp.array([1.0, 0.0, 0.0]), return_table=True)
    d = table.as_dict()
    assert tuple(d) == acc.LABELS == ("u_-2", "u_-1", "u_0", "u_1", "u_2", "u_3", "u_4", "u_5")
    assert float(d["u_3"]) == pytest.approx(-1 / (1 - 0.5))
    y2, dx, rtable = acc.reverse_sweep(x, jnp.array([0.0, 1.0]), return_table=True)
    assert float(rtable.as_dict()["u_2"]) == pytest.approx(-2.0 / (1 - 0.5))
    np.testing.assert_array_equal(y, y2)


def test_format_table_prints_seed_order():
    x = jnp.array([0.5, 1.5, -2.0])
    _, _, ftab = acc.forward_sweep(x, jnp.array([0.0, 1.0, 0.0]), return_table=True)
    _, _, rtab = acc.reverse_sweep(x, jnp.array([1.0, 0.0]), return_table=True)
    flines = acc.format_table(ftab, "forward", 2).splitlines()
    rlines = acc.format_table(rtab, "reverse", 1).splitlines()
    assert len(flines) == len(rlines) == 9
    assert flines[1].strip() == "du_-2/dx_2 = +0"  # no "-0"
    assert flines[-2].strip() == "du_4/dx_2 = +0.5"
    assert rlines[1].strip() == "dy_1/du_5 = +0"  # reverse: outside-in, u_5 first
    assert rlines[-1].strip() == "dy_1/du_-2 = +3.5"
    with pytest.raises(ValueError, match="mode"):
        acc.format_table(ftab, "sideways", 1)
    with pytest.raises(TypeError, match="table"):
        acc.format_table((1.0, 2.0), "forward", 1)


# --------------------------------------------------------------------------- jit, vmap, dtype


def test_jit_and_vmap():
    xs = jnp.array([[0.5, 1.5, -2.0], [0.1, 0.2, 0.3], [-2.0, 1.0, 4.0]])
    J_fwd = jax.vmap(lambda x: acc.jacobian_forward(x)[0])(xs)
    J_rev = jax.jit(jax.vmap(lambda x: acc.jacobian_reverse(x)[0]))(xs)
    J_ref = jax.vmap(jax.jacrev(f))(xs)
    np.testing.assert_allclose(J_fwd, J_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(J_rev, J_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_is_preserved(dtype):
    x = jnp.array([0.5, 1.5, -2.0], dtype=dtype)
    y, dy = acc.forward_sweep(x, jnp.ones(3, dtype))
    _, dx = acc.reverse_sweep(x, jnp.ones(2, dtype))
    J, _ = acc.jacobian_reverse(x)
    for a in (y, dy, dx, J):
        assert a.dtype == dtype


# --------------------------------------------------------------------------- bad input


X0 = jnp.zeros(3)


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: acc.evaluate(jnp.ones(4) * 0.1),
         ValueError, r"x must have shape \(3,\).*\(4,\)"),
        (lambda: acc.evaluate(jnp.ones((3, 1)) * 0.1),
         ValueError, r"x must have shape.*\(3, 1\)"),
        (lambda: acc.jacobian_forward(jnp.array([0, 1, 2])),
         TypeError, r"x must have a real floating.*int"),
        (lambda: acc.jacobian_reverse(jnp.array([0.1, 1, 2], dtype=jnp.complex64)),
         TypeError, r"x must.*complex64"),
        (lambda: acc.evaluate(0.5), TypeError, r"x must be an array.*float"),
        (lambda: acc.evaluate([0.1, [0.2], 0.3]), TypeError, r"x must be an array.*convert"),
        (lambda: acc.forward_sweep(X0, jnp.ones(2)),
         ValueError, r"dx must have shape \(3,\).*\(2,\)"),
        (lambda: acc.forward_sweep(X0, jnp.array([1, 0, 0])),
         TypeError, r"dx must have a real floating.*int"),
        (lambda: acc.forward_sweep(X0, [0.1, None, 0.2]),
         TypeError, r"dx must be an array.*convert"),
        (lambda: acc.reverse_sweep(X0, jnp.ones(3)),
         ValueError, r"dy must have shape \(2,\).*\(3,\)"),
        (lambda: acc.reverse_sweep(X0, jnp.array([True, False])),
         TypeError, r"dy must have a real floating.*bool"),
        (lambda: acc.reverse_sweep(X0, "ab"), TypeError, r"dy must be an array.*str"),
    ],
)
def test_bad_shapes_and_dtypes_raise_naming_the_argument(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_shape_errors_raise_under_jit_too():
    with pytest.raises(ValueError, match="dy must have shape"):
        jax.jit(acc.reverse_sweep)(jnp.zeros(3), jnp.ones(5))


@pytest.mark.parametrize("x1", [1.0, 1.0 + 1e-12, 2.0, 100.0])
@pytest.mark.parametrize(
    "fn",
    [
        acc.evaluate,
        acc.jacobian_forward,
        acc.jacobian_reverse,
        acc.closed_form_jacobian,
        lambda x: acc.forward_sweep(x, jnp.ones(3)),
        lambda x: acc.reverse_sweep(x, jnp.ones(2)),
    ],
)
def test_x1_at_or_above_one_raises_when_concrete(fn, x1):
    with pytest.raises(ValueError, match=r"x\[0\] \(x1\) must be < 1.*log\(1 - x1\)"):
        fn(jnp.array([x1, 2.0, 3.0]))


def test_x1_just_below_one_is_accepted_and_accurate():
    x = jnp.array([np.nextafter(1.0, 0.0), 2.0, 3.0])
    J, _ = acc.jacobian_reverse(x)
    assert bool(jnp.all(jnp.isfinite(J)))
    np.testing.assert_allclose(J, jax.jacfwd(f)(x), rtol=1e-12)


def test_documented_behaviour_under_jit_for_x1_at_or_above_one():
    """Under jit nothing can raise: the result is non-finite where u_3 or 1/u_2 enter (doc)."""
    jac = jax.jit(lambda x: acc.jacobian_reverse(x)[0])
    J1 = jac(jnp.array([1.0, 2.0, 3.0]))
    assert bool(jnp.isneginf(J1[1, 0]))  # dy2/dx1 = -x3 / 0
    assert bool(jnp.isneginf(J1[1, 2]))  # dy2/dx3 = log 0
    J2 = jac(jnp.array([2.0, 2.0, 3.0]))
    assert bool(jnp.isnan(J2[1, 2]))  # log of a negative number
    assert not bool(jnp.all(jnp.isfinite(J2)))


# --------------------------------------------------------------------------- hand-coded only


def test_module_uses_no_autodiff_transform():
    tree = ast.parse(inspect.getsource(acc))
    banned = {"jvp", "vjp", "jacfwd", "jacrev", "grad", "value_and_grad", "linearize", "hessian"}
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not (used & banned), used & banned
