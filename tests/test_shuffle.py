"""The epoch shuffle (jaxmlp.shuffle): validity, the tie rules, uniformity, bad input.

The reference implementations here are NumPy: a stable lexicographic sort for the order and
JAX's own ``jax.extend.random.threefry_2x32`` for the words.
"""

import collections
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from jaxmlp import shuffle

_perm = jax.jit(shuffle.permutation, static_argnums=1)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _reference(key, m):
    """NumPy: the documented order, from JAX's threefry words."""
    w = np.asarray(threefry_2x32(key, jnp.arange(m, dtype=jnp.uint32)))
    K = int(np.asarray(threefry_2x32(key, jnp.array([0xFFFFFFFF, 0xFFFFFFFE], jnp.uint32)))[0])
    nb = (m - 1).bit_length()
    h = w >> np.uint32(nb + 1)
    coin = np.array([bin(int(v) & K).count("1") % 2 for v in h])
    order = list(np.lexsort((np.arange(m), h)))  # by h, then index
    hs = h[order]
    if any(hs[k] == hs[k + 1] == hs[k + 2] for k in range(m - 2)):  # rare branch
        return np.argsort(w, kind="stable")
    for k in range(m - 1):
        if hs[k] == hs[k + 1] and coin[order[k]]:
            order[k], order[k + 1] = order[k + 1], order[k]
    return np.array(order)


def test_unrolled_threefry_is_jax_threefry_bit_for_bit():
    for n in (1, 2, 3, 10, 1438, 2877):
        for s in range(3):
            key = jax.random.PRNGKey(_seed(f"tf{n}{s}"))
            count = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(7919)
            np.testing.assert_array_equal(shuffle._threefry_2x32(key, count), threefry_2x32(key, count))
        np.testing.assert_array_equal(shuffle.words(key, n), threefry_2x32(key, jnp.arange(n, dtype=jnp.uint32)))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 64, 1000, 1438, shuffle.ONE_SORT_MAX])
def test_permutation_is_the_documented_order(m):
    for s in range(8):
        key = jax.random.PRNGKey(_seed(f"perm{m}-{s}"))
        p = np.asarray(_perm(key, m))
        assert p.dtype == np.int32 and p.shape == (m,)
        np.testing.assert_array_equal(np.sort(p), np.arange(m))
        np.testing.assert_array_equal(p, _reference(key, m))


def test_pair_ties_are_met_and_settled_at_m_1438():
    """At m = 1438 about half the draws hold a tie in h: check they occur and obey the rule."""
    m, nb, draws_with_ties = 1438, 11, 0
    for s in range(40):
        key = jax.random.PRNGKey(_seed(f"ties{s}"))
        h = np.asarray(shuffle.words(key, m)) >> np.uint32(nb + 1)
        draws_with_ties += len(np.unique(h)) < m
        np.testing.assert_array_equal(_perm(key, m), _reference(key, m))
    assert 5 <= draws_with_ties <= 35


def _check_order(r, coin, exact, got):
    m = len(r)
    nb = (m - 1).bit_length()
    h = r >> np.uint32(nb + 1)
    order = list(np.lexsort((np.arange(m), h)))
    hs = h[order]
    if any(hs[k] == hs[k + 1] == hs[k + 2] for k in range(m - 2)):
        np.testing.assert_array_equal(got, exact)
        return "exact"
    ties = 0
    for k in range(m - 1):
        ties += hs[k] == hs[k + 1]
        if hs[k] == hs[k + 1] and coin(hs[k]):
            order[k], order[k + 1] = order[k + 1], order[k]
    np.testing.assert_array_equal(got, order)
    return "pairs" if ties else "no tie"


def test_tie_rules_on_adversarial_words():
    """Words with few distinct high parts: pairs, runs of 3+, all equal, ties at the ends."""
    rng = np.random.default_rng(_seed("adversarial"))
    branches = collections.Counter()
    f = jax.jit(shuffle.order_by_words, static_argnums=(1, 2))
    exact = {m: (lambda m=m: jnp.arange(m, dtype=jnp.int32)[::-1]) for m in (2, 3, 5, 17, 64)}
    coin = lambda v: (v % 3) == 1  # noqa: E731  any bool function of v will do here
    for trial in range(120):
        m = (2, 3, 5, 17, 64)[trial % 5]
        nb = (m - 1).bit_length()
        distinct = int(rng.integers(1, m + 2)) if trial % 3 else m * m // 4 + 1  # many / few ties
        hv = rng.integers(0, distinct, m).astype(np.uint32) * np.uint32(7)
        r = (hv << np.uint32(nb + 1)) | rng.integers(0, 1 << (nb + 1), m).astype(np.uint32)
        got = np.asarray(f(jnp.asarray(r), coin, exact[m]))
        branches[_check_order(r, lambda v: (v % 3) == 1, np.arange(m)[::-1], got)] += 1
    assert min(branches["exact"], branches["pairs"], branches["no tie"]) >= 5, branches


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


def _reference_rounds(key, m):
    """NumPy: jax.random.permutation's rounds with packed keys, from JAX's threefry words."""
    R = shuffle.rounds(m)
    nb = (m - 1).bit_length()
    x = np.arange(m)
    for j in range(R):
        w = np.asarray(threefry_2x32(key, jnp.arange(j * m, (j + 1) * m, dtype=jnp.uint32)))
        x = x[np.lexsort((np.arange(m), w >> np.uint32(nb)))]  # by high bits, then position
    return x


@pytest.mark.parametrize("m", [shuffle.ONE_SORT_MAX + 1, 4096, 10_000])
def test_multi_round_path_is_the_documented_order(m):
    for s in range(3):
        key = jax.random.PRNGKey(_seed(f"rounds{m}-{s}"))
        p = np.asarray(_perm(key, m))
        np.testing.assert_array_equal(np.sort(p), np.arange(m))
        np.testing.assert_array_equal(p, _reference_rounds(key, m))


def test_rounds_follow_jax_rule():
    # total random bits R (32 - ceil(log2 m)) >= 3 log2 m, with the fewest rounds
    for m in (2049, 4096, 4097, 10_000, 60_000, 2**20, 2**24):
        R, b = shuffle.rounds(m), 32 - (m - 1).bit_length()
        assert R * b >= 3 * np.log2(m) > (R - 1) * b, m
    assert shuffle.rounds(2**24) == shuffle.MAX_ROUNDS < shuffle.rounds(2**24 + 1)


def test_positions_uniform_on_the_multi_round_path():
    m, n = 3000, 2000
    keys = jax.random.split(jax.random.PRNGKey(_seed("positions3000")), n)
    P = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, m)))(keys))
    pos = np.argsort(P, axis=1)
    for i in (0, 1, 1500, m - 1):
        counts = np.bincount(pos[:, i] * 10 // m, minlength=10)
        chi2 = np.sum((counts - n / 10) ** 2 / (n / 10))
        assert chi2 < 27.9, (i, chi2)


def test_beyond_the_rounds_and_other_key_implementations_are_jax_random_permutation(monkeypatch):
    key = jax.random.PRNGKey(_seed("large"))
    monkeypatch.setattr(shuffle, "MAX_ROUNDS", 1)  # as if m were beyond 2^24
    m = shuffle.ONE_SORT_MAX + 1
    np.testing.assert_array_equal(shuffle.permutation(key, m), jax.random.permutation(key, m))
    rbg = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(shuffle.permutation(rbg, 100), jax.random.permutation(rbg, 100))


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
    (lambda: shuffle.epoch_batches(jax.random.PRNGKey(0), 10, 0), ValueError, r"batch_size: expected a positive integer, got 0"),
    (lambda: shuffle.epoch_batches(jax.random.PRNGKey(0), 10, 11), ValueError, r"batch_size: expected at most the number of training examples m = 10, got 11"),
])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()
