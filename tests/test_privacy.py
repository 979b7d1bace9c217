"""DP-SGD gradients by rescaled dZ columns, against materialised per-example clipping."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.quantities import per_example_grads
from jaxmlp.quantities import per_example_norms
from jaxmlp.privacy import dp_value_and_grad, make_dp_grad_fn

from helpers import dense_problem  # noqa: E402

INF = float("inf")


def _problem(dtype=jnp.float64, sizes=(4, 6, 5, 3), m=9, seed=0):
    """Network, parameters and one-hot data, drawn with numpy (no per-shape compiles)."""
    return dense_problem(("relu", "tanh", "softmax"), dtype, sizes, m, seed)


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def _rel(a, b):
    errs = [
        float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
        for x, y in zip(jax.tree.leaves(_np(a)), jax.tree.leaves(_np(b)), strict=True)
    ]
    return max(errs)


def _materialised_clipped(net, params, X, Y, C):
    """Per-example gradients of L_i (m times the terms of J), clipped one by one (numpy)."""
    m = X.shape[1]
    G = jax.tree.map(lambda g: m * g, _np(per_example_grads(net, params, X, Y, method="vmap")))
    flat = np.concatenate([g.reshape(m, -1) for g in jax.tree.leaves(G)], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    c = np.minimum(1.0, C / norms)
    clipped = jax.tree.map(lambda g: g * c.reshape((m,) + (1,) * (g.ndim - 1)), G)
    return clipped, norms


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)], ids=["f64", "f32"])
def test_no_clip_no_noise_is_plain_gradient(dtype, tol):
    net, params, X, Y = _problem(dtype)
    out = dp_value_and_grad(net, params, X, Y, jax.random.key(1), l2_norm_clip=INF,
                            noise_multiplier=0.0)
    J, grads = jaxmlp.value_and_grad(net, params, X, Y)
    chex.assert_trees_all_equal_shapes_and_dtypes(out.grads, grads)
    assert _rel(out.grads, grads) <= tol
    assert _rel(out.loss, J) <= tol
    assert np.all(np.asarray(out.clip_factors) == 1.0)
    # The norms are those of grad L_i: m times the norms of the terms of J.
    assert _rel(out.norms, X.shape[1] * per_example_norms(net, params, X, Y).norms) <= tol


def test_small_clip_clips_every_example():
    net, params, X, Y = _problem()
    m = X.shape[1]
    C = 1e-3
    out = dp_value_and_grad(net, params, X, Y, jax.random.key(1), l2_norm_clip=C,
                            noise_multiplier=0.0)
    clipped, norms = _materialised_clipped(net, params, X, Y, C)
    c, n = np.asarray(out.clip_factors), np.asarray(out.norms)
    assert np.all(norms > C) and np.all(c < 1.0)
    assert _rel(n, norms) <= 1e-12
    # Each example's contribution c_i grad L_i has norm C (<= C up to rounding).
    assert np.all(c * n <= C * (1 + 1e-12))
    assert np.max(np.abs(c * n - C)) <= 1e-15
    flat = np.concatenate([g.reshape(m, -1) for g in jax.tree.leaves(clipped)], axis=1)
    assert np.all(np.linalg.norm(flat, axis=1) <= C * (1 + 1e-12))
    # The rescaled-dZ sum equals the materialised clip-then-sum, divided by m.
    assert _rel(out.grads, jax.tree.map(lambda g: g.sum(0) / m, clipped)) <= 1e-12
    # And the whole update has norm <= C (mean of m vectors of norm <= C).
    total = math.sqrt(sum(float(np.sum(g * g)) for g in jax.tree.leaves(_np(out.grads))))
    assert total <= C * (1 + 1e-12)


def test_partial_clipping_matches_materialised():
    net, params, X, Y = _problem(m=12, seed=4)
    norms = dp_value_and_grad(net, params, X, Y, jax.random.key(0), l2_norm_clip=INF,
                              noise_multiplier=0.0).norms
    C = float(np.median(np.asarray(norms)))  # about half the examples are clipped
    out = dp_value_and_grad(net, params, X, Y, jax.random.key(0), l2_norm_clip=C,
                            noise_multiplier=0.0)
    n_clipped = int(np.sum(np.asarray(out.clip_factors) < 1.0))
    assert 0 < n_clipped < X.shape[1]
    clipped, _ = _materialised_clipped(net, params, X, Y, C)
    assert _rel(out.grads, jax.tree.map(lambda g: g.sum(0) / X.shape[1], clipped)) <= 1e-12


def test_noise_has_std_sigma_C_over_m():
    # ~2.3k parameters; noise = m (g_noisy - g_clean) / (sigma C) should be N(0, 1) entries.
    net, params, X, Y = _problem(sizes=(20, 60, 15, 4), m=8)
    m, C, sigma = X.shape[1], 0.3, 1.7
    kw = dict(l2_norm_clip=C)
    clean = dp_value_and_grad(net, params, X, Y, jax.random.key(0), noise_multiplier=0.0, **kw)
    noisy = dp_value_and_grad(net, params, X, Y, jax.random.key(42), noise_multiplier=sigma, **kw)
    z = np.concatenate([
        ((n - c) * m / (sigma * C)).ravel()
        for n, c in zip(jax.tree.leaves(_np(noisy.grads)), jax.tree.leaves(_np(clean.grads)))
    ])
    P = net.num_params
    assert z.size == P
    # Fixed key: deterministic. Tolerances are ~6 standard errors (SE(std) = 1/sqrt(2P),
    # SE(mean) = 1/sqrt(P)), so a change of JAX's generator would not flake either.
    assert abs(float(np.std(z)) - 1.0) < 6 / math.sqrt(2 * P)
    assert abs(float(np.mean(z))) < 6 / math.sqrt(P)
    # Noise touches every parameter, and a different key gives different noise.
    assert np.all(z != 0)
    other = dp_value_and_grad(net, params, X, Y, jax.random.key(43), noise_multiplier=sigma, **kw)
    assert _rel(other.grads, noisy.grads) > 1e-3
    again = dp_value_and_grad(net, params, X, Y, jax.random.key(42), noise_multiplier=sigma, **kw)
    assert _rel(again.grads, noisy.grads) == 0.0


@pytest.mark.slow  # a long test (3 s): DP training also in test_dp and test_no_recompiles
def test_optax_training_with_dp_grad_fn():
    net, params, X, Y = _problem(dtype=jnp.float32, m=32, seed=2)
    grad_fn = make_dp_grad_fn(net, l2_norm_clip=1.0, noise_multiplier=0.1)
    opt = optax.sgd(0.5)

    @jax.jit
    def step(params, state, key):
        key, sub = jax.random.split(key)
        J, g = grad_fn(params, X, Y, sub)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, key, g

    state = opt.init(params)
    J0 = float(jaxmlp.loss(net, params, X, Y))
    key = jax.random.key(7)
    for _ in range(200):
        params, state, key, g = step(params, state, key)
    chex.assert_trees_all_equal_shapes_and_dtypes(g, params)
    assert float(jaxmlp.loss(net, params, X, Y)) < 0.7 * J0


@pytest.mark.parametrize(
    "kw,exc,pattern",
    [
        (dict(l2_norm_clip=0.0, noise_multiplier=1.0), ValueError, "^l2_norm_clip: expected a number > 0"),
        (dict(l2_norm_clip=-1.0, noise_multiplier=1.0), ValueError, "^l2_norm_clip: expected a number > 0"),
        (dict(l2_norm_clip=float("nan"), noise_multiplier=1.0), ValueError, "^l2_norm_clip"),
        (dict(l2_norm_clip="1", noise_multiplier=1.0), TypeError, "^l2_norm_clip: expected a real"),
        (dict(l2_norm_clip=True, noise_multiplier=1.0), TypeError, "^l2_norm_clip"),
        (dict(l2_norm_clip=1.0, noise_multiplier=-0.1), ValueError, "^noise_multiplier: expected a number >= 0"),
        (dict(l2_norm_clip=1.0, noise_multiplier=INF), ValueError, "^noise_multiplier: expected a finite"),
        (dict(l2_norm_clip=1.0, noise_multiplier=float("nan")), ValueError, "^noise_multiplier"),
        (dict(l2_norm_clip=INF, noise_multiplier=0.5), ValueError, "^noise_multiplier: the noise std"),
    ],
)
def test_bad_dp_arguments(kw, exc, pattern):
    net, params, X, Y = _problem()
    with pytest.raises(exc, match=pattern):
        dp_value_and_grad(net, params, X, Y, jax.random.key(0), **kw)
    with pytest.raises(exc, match=pattern):
        make_dp_grad_fn(net, **kw)


def test_mismatched_columns_named():
    net, params, X, Y = _problem()
    with pytest.raises(ValueError, match=r"^Y: expected shape \(n\[L\], m\) = \(3, 9\)"):
        dp_value_and_grad(net, params, X, Y[:, :5], jax.random.key(0), l2_norm_clip=1.0,
                          noise_multiplier=1.0)


def test_add_noise_draws_every_leaf_from_its_own_part_of_one_stream():
    # Two leaves of the same shape must not get the same (or overlapping) noise.
    from jaxmlp.privacy import add_noise

    zeros = [{"W": jnp.zeros((30, 20)), "b": jnp.zeros((30,))},
             {"W": jnp.zeros((30, 20)), "b": jnp.zeros((30,))}]
    out = add_noise(jax.random.key(5), zeros, jnp.float32(2.0), jnp.float32)
    W1, W2 = np.asarray(out[0]["W"]).ravel(), np.asarray(out[1]["W"]).ravel()
    assert out[0]["W"].shape == (30, 20) and out[1]["b"].shape == (30,)
    assert not np.any(np.isin(W1, W2))  # no shared draws
    flat = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(out)]) / 2.0
    assert np.unique(flat).size == flat.size
    assert abs(np.std(flat) - 1) < 6 / math.sqrt(2 * flat.size)
