"""The cache handed to ``backward`` / ``backward_col``: its layout and its dtype are checked
like X and Y (the message names the argument, what was expected and what was given), and
the documented ways of building one (``forward``, ``vmap`` of ``forward_col``) work as written.
Also: the bundled diabetes features are scikit-learn's unscaled ones, as documented.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.data import datasets
from jaxmlp.nn.recurrences import Cache
from jaxmlp.nn.single_column import backward_col, forward_col

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
P64 = jaxmlp.init_params(NET, jax.random.PRNGKey(0), dtype=jnp.float64)
P32 = jax.tree.map(lambda a: a.astype(jnp.float32), P64)
X64 = jax.random.normal(jax.random.PRNGKey(1), (3, 5), dtype=jnp.float64)
Y64 = jax.nn.one_hot(jnp.arange(5) % 2, 2, dtype=jnp.float64).T
X32, Y32 = X64.astype(jnp.float32), Y64.astype(jnp.float32)


def _max_abs(a, b):
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_backward_refuses_a_column_cache():
    _, col = forward_col(NET, P64, X64[:, 0])
    with pytest.raises(ValueError, match=r"^cache.A\[0\]: expected shape \(3, m\), got \(3,\); "
                                         r"use jaxmlp.nn.single_column.backward_col for a "
                                         r"column cache\.(?:\n|$)"):
        jaxmlp.backward(NET, P64, col, Y64[:, :1])


@pytest.mark.parametrize("params, cache_params, X, Y, want, got", [
    (P32, P64, X64, Y32, "float32", "float64"),
    (P64, P32, X32, Y64, "float64", "float32"),
])
def test_backward_refuses_a_cache_of_another_dtype(params, cache_params, X, Y, want, got):
    _, cache = jaxmlp.forward(NET, cache_params, X)
    msg = (rf"^cache.A\[0\]: expected dtype {want} \(the dtype of params\), got {got}\. Build the "
           r"cache with jaxmlp.forward\(net, params, X\) from these params; jaxmlp never "
           r"changes dtypes silently\.(?:\n|$)")
    with pytest.raises(TypeError, match=msg):
        jaxmlp.backward(NET, params, cache, Y)
    _, col = forward_col(NET, cache_params, X[:, 0])
    with pytest.raises(TypeError, match=rf"^cache.A\[0\]: expected dtype {want} \(the dtype of "
                                        rf"params\), got {got}\. Build the cache with "
                                        r"forward_col\(net, params, x\)"):
        backward_col(NET, params, col, Y[:, 0])


def test_every_cache_entry_is_checked():
    # A hand-made cache whose activations match but whose Z[2] (tuple index 1) does not.
    _, cache = jaxmlp.forward(NET, P32, X32)
    bad = Cache(A=cache.A, Z=(cache.Z[0], cache.Z[1].astype(jnp.float64)))
    with pytest.raises(TypeError, match=r"^cache.Z\[1\]: expected dtype float32 \(the dtype of "
                                        r"params\), got float64\."):
        jaxmlp.backward(NET, P32, bad, Y32)


def test_matching_caches_still_work_under_jit_and_vmap():
    # float32 throughout: the gradient of (B1)-(B4) equals value_and_grad's, in float32.
    _, want = jaxmlp.value_and_grad(NET, P32, X32, Y32)
    _, cache = jaxmlp.forward(NET, P32, X32)
    got = jax.jit(lambda p, c, Y: jaxmlp.backward(NET, p, c, Y))(P32, cache, Y32)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(got))
    assert _max_abs(got, want) <= 1e-6
    # vmap over columns: the per-column terms of J (m = 5) sum to grad J.
    _, col_cache = jax.vmap(forward_col, in_axes=(None, None, 1), out_axes=1)(NET, P32, X32)
    per_col = jax.vmap(backward_col, in_axes=(None, None, 1, 1, None))(NET, P32, col_cache, Y32, 5)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(per_col))
    assert _max_abs(jax.tree.map(lambda g: g.sum(0), per_col), want) <= 1e-6


def test_per_example_doc_vmap_of_forward_col_runs_as_written():
    with open(os.path.join(ROOT, "docs", "per_example.md"), encoding="utf-8") as f:
        text = f.read()
    calls = re.findall(r"`(jax\.vmap\(forward_col, [^`]*\)\(net, params, X\))`", text)
    assert calls, "docs/per_example.md no longer shows jax.vmap(forward_col, ...)(net, params, X)"
    A, cache = jaxmlp.forward(NET, P64, X64)
    for call in calls:  # the doc's expression, as written
        A_v, cache_v = eval(call, {"jax": jax, "forward_col": forward_col, "net": NET,
                                   "params": P64, "X": X64})
        assert _max_abs((A_v, cache_v), (A, cache)) <= 1e-12, call


def test_bundled_diabetes_features_are_sklearns_unscaled_ones():
    skd = pytest.importorskip("sklearn.datasets")
    raw = skd.load_diabetes(scaled=False)
    features, targets, _, _ = datasets.raw_arrays("diabetes")
    np.testing.assert_array_equal(features, raw.data)
    np.testing.assert_array_equal(targets[:, 0], raw.target)
    assert not np.allclose(features, skd.load_diabetes().data)  # the default is scaled
    # load() standardises these raw columns with its train split's statistics.
    ds = datasets.load("diabetes", seed=3, dtype=np.float64)
    train, _ = datasets.split_indices(None, raw.data.shape[0], 0.2, 3)
    np.testing.assert_allclose(ds.feature_mean, raw.data[train].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ds.feature_std, raw.data[train].std(axis=0), rtol=1e-12)
    # ... and the docs say which scikit-learn call gives these features.
    with open(os.path.join(ROOT, "docs", "own-data.md"), encoding="utf-8") as f:
        assert "load_diabetes(scaled=False, as_frame=True).data" in f.read()
    assert "load_diabetes(scaled=False).data" in datasets.__doc__
