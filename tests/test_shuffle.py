"""The epoch shuffle (jaxmlp.train.shuffle): the documented order, uniformity, bad input.

The reference is NumPy: JAX's rounds of stable sorts by random keys, on the words of
``jax.random.bits(jax.random.fold_in(key, j))``, ordered by ``np.lexsort``.
"""

import collections
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp.train import shuffle

_perm = jax.jit(shuffle.permutation, static_argnums=1)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _reference(key, m):
    """NumPy: R rounds, each a stable sort of the current order by round j's high bits."""
    nb = (m - 1).bit_length()
    x = np.arange(m)
    for j in range(shuffle.rounds(m)):
        w = np.asarray(jax.random.bits(jax.random.fold_in(key, j), (m,), jnp.uint32))
        x = x[np.lexsort((np.arange(m), w >> np.uint32(nb)))]  # by high bits, then position
    return x


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_words_are_jax_random_bits_of_fold_in_bit_for_bit():
    jitted = jax.jit(shuffle.words, static_argnums=2)  # j traced: one compile per m and kind of key
    for key in (jax.random.PRNGKey(_seed("w")), jax.random.key(_seed("w2"))):
        for j in (0, 5):
            for m in (1, 2, 3, 2877):  # one word, a pair, a pair and one, many pairs and one
                want = jax.random.bits(jax.random.fold_in(key, j), (m,), jnp.uint32)
                np.testing.assert_array_equal(shuffle.words(key, j, m), want)
                np.testing.assert_array_equal(jitted(key, j, m), want)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 64, 1000, 1438, 2049, 4096, 10_000])
def test_permutation_is_the_documented_order(m):
    for s in range(4):
        key = jax.random.PRNGKey(_seed(f"perm{m}-{s}"))
        p = np.asarray(_perm(key, m))
        assert p.dtype == np.int32 and p.shape == (m,)
        np.testing.assert_array_equal(np.sort(p), np.arange(m))
        np.testing.assert_array_equal(p, _reference(key, m))


def test_rounds_follow_jax_rule():
    # total random bits R (32 - ceil(log2 m)) >= 3 log2 m, with the fewest rounds
    assert shuffle.rounds(1) == shuffle.rounds(2) == 1
    for m in (3, 128, 1438, 2049, 4096, 4097, 10_000, 60_000, 2**20, 2**24, 2**30):
        R, b = shuffle.rounds(m), 32 - (m - 1).bit_length()
        assert R * b >= 3 * np.log2(m) > (R - 1) * b, m
    assert shuffle.rounds(1438) == 2 and shuffle.rounds(60_000) == 3


def test_uniform_over_all_120_orders_of_5():
    keys = jax.random.split(jax.random.PRNGKey(_seed("uniform5")), 60_000)
    P = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, 5)))(keys))
    counts = collections.Counter(map(tuple, P))
    assert len(counts) == 120
    expected = len(P) / 120
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 172.4, chi2  # the 0.999 quantile of chi-square with 119 degrees of freedom


def test_positions_uniform_at_m_1438():
    m, n = 1438, 3000
    keys = jax.random.split(jax.random.PRNGKey(_seed("positions")), n)
    P = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, m)))(keys))
    pos = np.argsort(P, axis=1)  # pos[d, i]: where example i lands in draw d
    for i in (0, 1, 717, m - 1):  # chi-square over 10 position bins
        counts = np.bincount(pos[:, i] * 10 // m, minlength=10)
        chi2 = np.sum((counts - n / 10) ** 2 / (n / 10))
        assert chi2 < 27.9, (i, chi2)  # 0.999 quantile, 9 degrees of freedom
    # neighbours in index are not neighbours in the shuffle: mean |pos[i] - pos[i+1]| ~ m / 3
    gap = np.abs(pos[:, :-1] - pos[:, 1:]).mean()
    assert abs(gap - (m + 1) / 3) < 0.02 * m, gap


def test_positions_uniform_at_m_3000():
    m, n = 3000, 2000
    keys = jax.random.split(jax.random.PRNGKey(_seed("positions3000")), n)
    P = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, m)))(keys))
    pos = np.argsort(P, axis=1)
    for i in (0, 1, 1500, m - 1):
        counts = np.bincount(pos[:, i] * 10 // m, minlength=10)
        chi2 = np.sum((counts - n / 10) ** 2 / (n / 10))
        assert chi2 < 27.9, (i, chi2)


def test_other_key_implementations_draw_their_own_bits():
    rbg = jax.random.key(3, impl="rbg")
    for m in (5, 300):
        np.testing.assert_array_equal(shuffle.permutation(rbg, m), _reference(rbg, m))


def test_typed_and_raw_keys_agree_and_it_composes_with_jit_and_vmap():
    np.testing.assert_array_equal(shuffle.permutation(jax.random.key(11), 300),
                                  shuffle.permutation(jax.random.PRNGKey(11), 300))
    keys = jax.random.split(jax.random.PRNGKey(_seed("vmap")), 4)
    batched = jax.jit(jax.vmap(lambda k: shuffle.permutation(k, 300)))(keys)
    for k, row in zip(keys, batched):
        np.testing.assert_array_equal(row, shuffle.permutation(k, 300))


def test_epoch_batches_rows_are_the_permutation_prefix():
    key = jax.random.PRNGKey(_seed("batches"))
    idx = shuffle.epoch_batches(key, 1438, 128)
    assert idx.shape == (11, 128)
    np.testing.assert_array_equal(np.asarray(idx).ravel(), np.asarray(shuffle.permutation(key, 1438))[:1408])


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: shuffle.permutation(jax.random.PRNGKey(0), 0), ValueError, r"m: expected a positive integer, got 0"),
    (lambda: shuffle.permutation(jax.random.PRNGKey(0), 2.5), TypeError, r"m: expected a positive integer, got 2.5"),
    (lambda: shuffle.permutation(jax.random.PRNGKey(0), True), TypeError, r"m: expected a positive integer, got True"),
    (lambda: shuffle.permutation(jnp.zeros((3,), jnp.uint32), 5), TypeError, r"key: expected a PRNG key .*shape \(3,\)"),
    (lambda: shuffle.permutation(jnp.zeros((2,), jnp.float32), 5), TypeError, r"key: expected a PRNG key .*dtype float32"),
    (lambda: shuffle.permutation(jax.random.split(jax.random.key(0), 2), 5), ValueError, r"key: expected a single PRNG key of shape \(\), got shape \(2,\)"),
    (lambda: shuffle.permutation(7.0, 5), TypeError, r"key: expected a PRNG key .* or an integer seed, got float"),
    (lambda: shuffle.rounds(2**31 + 1), ValueError, r"m: expected at most 2\*\*31 examples"),
    (lambda: shuffle.epoch_batches(jax.random.PRNGKey(0), 10, 0), ValueError, r"batch_size: expected a positive integer, got 0"),
    (lambda: shuffle.epoch_batches(jax.random.PRNGKey(0), 10, 11), ValueError, r"batch_size: expected at most the number of training examples m = 10, got 11"),
])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
