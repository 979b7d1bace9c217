"""Single-column forms, per-example gradients and per-example statistics.

Oracles: the batched core (jaxmlp.forward / value_and_grad) for the single-column forms;
``jax.vmap(jax.grad(...))`` of the cost of one column for the per-example gradients; the
materialised per-example gradients for the norms, sums of squares and variances.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.nn.single_column import backward_col, forward_col, loss_col, value_and_grad_col
from jaxmlp.quantities import per_example_grads
from jaxmlp.quantities import per_example_norms, per_example_stats


def _cases():
    """(hidden activation, output activation, cost, n[L]): every activation and cost."""
    cases = [(a, a, "mean_squared_error", 3) for a in sorted(jaxmlp.ACTIVATIONS)]
    cases += [
        ("tanh", "sigmoid", "binary_cross_entropy", 1),
        ("relu", "softmax", "categorical_cross_entropy", 3),
        ("gelu", "sigmoid", "categorical_cross_entropy", 3),  # non-fused seed
        ("silu", "sigmoid", "multilabel_cross_entropy", 3),
        ("elu", "softmax", "multilabel_cross_entropy", 3),  # non-fused seed
    ]
    return cases


def _problem(hidden, out, cost, nL, m=6, dtype=jnp.float64, seed=0):
    """A 3-layer network, parameters with non-zero biases, data; drawn with numpy (no compiles)."""
    net = jaxmlp.Network((4, 5, 3, nL), (hidden, hidden, out), cost)
    rng = np.random.default_rng(seed)
    params = [
        {"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1]), dtype),
         "b": jnp.asarray(0.1 * rng.normal(size=s["b"]), dtype)}
        for s in net.param_shapes()
    ]
    X = jnp.asarray(rng.normal(size=(4, m)), dtype)
    if cost == "categorical_cross_entropy":
        Y = np.eye(nL)[:, rng.integers(0, nL, m)]
    elif cost in ("binary_cross_entropy", "multilabel_cross_entropy"):
        Y = rng.integers(0, 2, (nL, m))
    else:
        Y = rng.normal(size=(nL, m))
    return net, params, X, jnp.asarray(Y, dtype)


def _max_rel_err(a, b):
    """max over leaves of max|a - b| / max|b|, in numpy."""
    errs = [
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) / max(float(np.max(np.abs(y))), 1e-300)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return max(errs)


# --- single-column forms ---------------------------------------------------------------


def _column_cases():
    """Every case in float64; in float32 the default suite keeps the five cost cases and
    two of the activation-only (MSE) cases, the other float32 ones are marked slow."""
    f64, f32 = (jnp.float64, 1e-12), (jnp.float32, 1e-5)
    cases = []
    for case in _cases():
        cases.append(pytest.param(*case, *f64, id="-".join(map(str, case)) + "-f64"))
        slow = case[2] == "mean_squared_error" and case[0] not in ("relu", "softmax")
        cases.append(pytest.param(*case, *f32, id="-".join(map(str, case)) + "-f32",
                                  marks=[pytest.mark.slow] if slow else []))
    return cases


@pytest.mark.parametrize("hidden,out,cost,nL,dtype,tol", _column_cases())
def test_vmapped_columns_reproduce_batched(hidden, out, cost, nL, dtype, tol):
    net, params, X, Y = _problem(hidden, out, cost, nL, dtype=dtype)
    m = X.shape[1]

    @jax.jit  # one compilation per case: the column forms vmapped, and the batched core
    def both(params, X, Y):
        cols = jax.vmap(lambda x: forward_col(net, params, x), in_axes=1, out_axes=1)(X)
        L_i = jax.vmap(lambda x, y: loss_col(net, params, x, y), in_axes=(1, 1))(X, Y)
        vg = jax.vmap(lambda x, y: value_and_grad_col(net, params, x, y, m), in_axes=(1, 1))
        J_terms, g_cols = vg(X, Y)
        _, g_unit = jax.vmap(lambda x, y: value_and_grad_col(net, params, x, y), in_axes=(1, 1))(X, Y)
        g_sum = jax.tree.map(lambda g: jnp.sum(g, axis=0), g_cols)
        batched = jaxmlp.forward(net, params, X), jaxmlp.value_and_grad(net, params, X, Y)
        return cols, L_i, J_terms, g_cols, g_unit, g_sum, batched

    cols, L_i, J_terms, g_cols, g_unit, g_sum, (fwd_b, (J_b, grads_b)) = both(params, X, Y)
    # (F1), (F2): vmap of the column forward over axis 1 is the batched forward, cache too.
    assert _max_rel_err(cols, fwd_b) <= tol
    # (F3): the mean of the column losses L_i is J.
    assert L_i.shape == (m,) and L_i.dtype == dtype
    assert _max_rel_err(np.mean(np.asarray(L_i, np.float64)), J_b) <= tol
    # (B1)-(B4): column gradients of L_i / m summed over the batch are the batched grads.
    chex.assert_trees_all_equal_structs(g_sum, grads_b)
    chex.assert_trees_all_equal_shapes_and_dtypes(g_sum, grads_b)
    assert _max_rel_err(g_sum, grads_b) <= tol
    assert _max_rel_err(np.sum(np.asarray(J_terms, np.float64)), J_b) <= tol
    # m = 1 (default): the gradient of L_i itself, m times the term of J.
    assert _max_rel_err(jax.tree.map(lambda g: np.asarray(g) / m, g_unit), g_cols) <= tol


def test_backward_col_matches_autodiff_of_one_column():
    net, params, X, Y = _problem("tanh", "softmax", "categorical_cross_entropy", 3)
    x, y = X[:, 2], Y[:, 2]
    _, cache = forward_col(net, params, x)
    grads = backward_col(net, params, cache, y)
    oracle = jax.grad(lambda p: loss_col(net, p, x, y))(params)
    assert _max_rel_err(grads, oracle) <= 1e-12
    # (B1) is one outer product per layer: rank one.
    assert np.linalg.matrix_rank(np.asarray(grads[0]["W"])) == 1


def test_single_column_bad_inputs():
    net, params, X, Y = _problem("relu", "linear", "mean_squared_error", 3)
    with pytest.raises(ValueError, match=r"^x: expected shape \(n\[0\],\) = \(4,\)"):
        forward_col(net, params, X)
    with pytest.raises(ValueError, match=r"^y: expected shape"):
        loss_col(net, params, X[:, 0], Y)
    _, cache_b = jaxmlp.forward(net, params, X)
    with pytest.raises(ValueError, match=r"^cache.A\[0\]: expected a column"):
        backward_col(net, params, cache_b, Y[:, 0])
    with pytest.raises(ValueError, match=r"^m: expected a positive int"):
        value_and_grad_col(net, params, X[:, 0], Y[:, 0], 0)


# --- per-example gradients -------------------------------------------------------------


def _oracle_per_example(net, params, X, Y):
    """jax.vmap(jax.grad(...)) of example i's term (1/m) L_i of J, from the core's loss."""
    m = X.shape[1]

    def term(p, x, y):
        return jaxmlp.loss(net, p, x[:, None], y[:, None]) / m

    return jax.vmap(jax.grad(term), in_axes=(None, 1, 1))(params, X, Y)


@pytest.fixture(scope="module")
def pe_problem():
    net, params, X, Y = _problem("tanh", "softmax", "categorical_cross_entropy", 3, m=10)
    return net, params, X, Y, _oracle_per_example(net, params, X, Y)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4, 10, 16])
@pytest.mark.parametrize("method", ["vmap", "outer"])
def test_per_example_grads_match_oracle(pe_problem, method, chunk_size):
    net, params, X, Y, oracle = pe_problem
    G = per_example_grads(net, params, X, Y, method=method, chunk_size=chunk_size)
    chex.assert_trees_all_equal_structs(G, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(G, oracle)
    assert G[0]["W"].shape == (10, 5, 4) and G[2]["b"].shape == (10, 3)
    assert _max_rel_err(G, oracle) <= 1e-12
    _, grads = jaxmlp.value_and_grad(net, params, X, Y)
    assert _max_rel_err(jax.tree.map(lambda g: g.sum(0), G), grads) <= 1e-12


@pytest.mark.parametrize("method", ["vmap", "outer"])
def test_per_example_grads_float32_non_fused(method):
    net, params, X, Y = _problem("gelu", "sigmoid", "categorical_cross_entropy", 3, m=9,
                                 dtype=jnp.float32)
    G = per_example_grads(net, params, X, Y, method=method, chunk_size=4)
    oracle = _oracle_per_example(net, params, X, Y)
    chex.assert_trees_all_equal_shapes_and_dtypes(G, oracle)
    assert _max_rel_err(G, oracle) <= 1e-5


@pytest.mark.parametrize(
    "chunk_size,exc", [(0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError),
                       ("3", TypeError), (np.float64(4.0), TypeError)]
)
def test_per_example_grads_bad_chunk_size(pe_problem, chunk_size, exc):
    net, params, X, Y, _ = pe_problem
    with pytest.raises(exc, match=r"^chunk_size: expected a positive integer"):
        per_example_grads(net, params, X, Y, chunk_size=chunk_size)


def test_per_example_grads_accepts_numpy_int_chunk(pe_problem):
    net, params, X, Y, oracle = pe_problem
    G = per_example_grads(net, params, X, Y, method="outer", chunk_size=np.int64(3))
    assert _max_rel_err(G, oracle) <= 1e-12


def test_per_example_bad_method_and_mismatched_columns(pe_problem):
    net, params, X, Y, _ = pe_problem
    with pytest.raises(ValueError, match=r"^method: expected one of"):
        per_example_grads(net, params, X, Y, method="loop")
    for fn in (per_example_grads, per_example_stats, per_example_norms):
        with pytest.raises(ValueError, match=r"^Y: expected shape \(n\[L\], m\) = \(3, 10\)"):
            fn(net, params, X, Y[:, :7])


# --- norms, sums of squares, variances without materialising ---------------------------


@pytest.mark.parametrize(
    "hidden,out,cost,nL",
    [("relu", "softmax", "categorical_cross_entropy", 3), ("tanh", "linear", "mean_squared_error", 2)],
)
def test_stats_match_materialised(hidden, out, cost, nL):
    net, params, X, Y = _problem(hidden, out, cost, nL, m=11, seed=3)
    m = X.shape[1]
    G = per_example_grads(net, params, X, Y, method="outer")
    s = per_example_stats(net, params, X, Y)
    J, grads = jaxmlp.value_and_grad(net, params, X, Y)
    assert _max_rel_err(s.loss, J) <= 1e-12
    assert _max_rel_err(s.grads, grads) <= 1e-12
    # Norms per layer and total, from the materialised gradients (numpy).
    G = jax.tree.map(np.asarray, G)
    sq_W = [np.sum(g["W"] ** 2, axis=(1, 2)) for g in G]
    sq_b = [np.sum(g["b"] ** 2, axis=1) for g in G]
    assert _max_rel_err(s.sq_norms, [{"W": w, "b": b} for w, b in zip(sq_W, sq_b)]) <= 1e-12
    layer = np.sqrt(np.stack([w + b for w, b in zip(sq_W, sq_b)]))
    assert s.layer_norms.shape == (net.num_layers, m) and s.norms.shape == (m,)
    assert _max_rel_err(s.layer_norms, layer) <= 1e-12
    flat = np.concatenate([g.reshape(m, -1) for g in jax.tree.leaves(G)], axis=1)
    assert _max_rel_err(s.norms, np.linalg.norm(flat, axis=1)) <= 1e-12
    # Sum of squares and variance (ddof = 0) per parameter.
    assert _max_rel_err(s.sum_sq, jax.tree.map(lambda g: np.sum(g * g, 0), G)) <= 1e-12
    assert _max_rel_err(s.variance, jax.tree.map(lambda g: np.var(g, 0), G)) <= 1e-10
    # The norm-only entry point agrees.
    n = per_example_norms(net, params, X, Y)
    assert _max_rel_err((n.layer_norms, n.norms), (s.layer_norms, s.norms)) <= 1e-14


def test_norm_path_holds_no_per_example_gradient():
    """The compiled norm path's buffers are O(m * units); the materialised ones O(m * P)."""
    net = jaxmlp.Network((32, 64, 64, 4), "tanh", "mean_squared_error")
    params = [{"W": jnp.full(s["W"], 0.1, jnp.float32), "b": jnp.zeros(s["b"], jnp.float32)}
              for s in net.param_shapes()]
    m = 256
    X = jnp.ones((32, m), jnp.float32)
    Y = jnp.zeros((4, m), jnp.float32)

    def mem(f):
        ma = jax.jit(f).lower(params, X, Y).compile().memory_analysis()
        return ma.temp_size_in_bytes + ma.output_size_in_bytes

    norms_only = mem(lambda p, X, Y: per_example_norms(net, p, X, Y).norms)
    materialised = mem(functools.partial(per_example_grads, net, method="outer"))
    assert materialised >= 4 * m * net.num_params  # the stacked gradients themselves
    assert norms_only < 4 * m * sum(net.sizes) * 4  # a few (units, m) buffers
    assert norms_only * 10 < materialised
