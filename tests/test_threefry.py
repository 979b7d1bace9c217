"""jaxmlp.privacy.threefry: JAX's threefry numbers, bit for bit, by an unrolled hash in one fused kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp.privacy import threefry


SHAPES = [(), (1,), (5,), (3, 4), (7, 5, 3), (401_920,)]
# Every shape in float32; the half-precision casts at three shapes by default, all when slow.
DTYPE_SHAPES = [(jnp.float32, s) for s in SHAPES] + [
    pytest.param(d, s, marks=[pytest.mark.slow] if s in ((1,), (3, 4), (401_920,)) else [])
    for d in (jnp.bfloat16, jnp.float16) for s in SHAPES]


@pytest.mark.parametrize("dtype, shape", DTYPE_SHAPES)
def test_same_numbers_as_jax_random_normal(shape, dtype):
    draw = jax.jit(lambda k: threefry.normal(k, shape, dtype))  # one compile per kind of key
    for key in (jax.random.PRNGKey(0), jax.random.PRNGKey(2**31 + 5), jax.random.key(7),
                jax.random.split(jax.random.PRNGKey(3))[1]):
        ours = draw(key)
        theirs = jax.random.normal(key, shape, dtype)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))


def test_under_vmap_and_eagerly():
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    ours = jax.vmap(lambda k: threefry.normal(k, (6,)))(keys)
    theirs = jax.vmap(lambda k: jax.random.normal(k, (6,)))(keys)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_array_equal(np.asarray(threefry.normal(keys[0], (6,))),
                                  np.asarray(jax.random.normal(keys[0], (6,))))


def test_hash_against_jax_threefry():
    # the unrolled hash equals JAX's (rolled) threefry_2x32 on arbitrary words
    rng = np.random.default_rng(0)
    k = rng.integers(0, 2**32, 2, dtype=np.uint32)
    x = rng.integers(0, 2**32, (2, 1000), dtype=np.uint32)
    from jax.extend.random import threefry_2x32

    ref = np.asarray(threefry_2x32(jnp.asarray(k), jnp.asarray(x.ravel())))
    y1, y2 = threefry.threefry2x32(jnp.uint32(k[0]), jnp.uint32(k[1]), jnp.asarray(x[0]), jnp.asarray(x[1]))
    np.testing.assert_array_equal(np.concatenate([np.asarray(y1), np.asarray(y2)]), ref)


def test_other_key_kinds_go_to_jax():
    key = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(np.asarray(threefry.normal(key, (8,))),
                                  np.asarray(jax.random.normal(key, (8,))))


def test_the_draw_is_one_fused_kernel_without_a_loop():
    f = jax.jit(lambda k, g: g + threefry.normal(k, g.shape, g.dtype))
    compiled = f.lower(jax.random.PRNGKey(0), jnp.zeros(100_000, jnp.float32)).compile()
    assert " while(" not in compiled.as_text()  # JAX's CPU lowering of the hash is a loop
    looped = jax.jit(lambda k, g: g + jax.random.normal(k, g.shape, g.dtype))
    mem, ref = (c.lower(jax.random.PRNGKey(0), jnp.zeros(100_000, jnp.float32)).compile().memory_analysis()
                for c in (f, looped))
    if mem is not None and ref is not None:
        assert mem.temp_size_in_bytes < ref.temp_size_in_bytes


def test_unrolled_key_folds_and_draws_bits_like_jax():
    for key in (jax.random.PRNGKey(11), jax.random.key(12)):
        k = threefry.unrolled_key(key)
        for shape in ((1,), (1438,), (3, 5)):
            draw = jax.jit(lambda k, j: jax.random.bits(jax.random.fold_in(k, j), shape, jnp.uint32))
            for j in (0, 1, 7):
                ours = draw(k, j)
                theirs = jax.random.bits(jax.random.fold_in(key, j), shape, jnp.uint32)
                np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert threefry.unrolled_key(jax.random.key(0, impl="rbg")) is None
    assert threefry.unrolled_key(jnp.zeros((3,), jnp.uint32)) is None
