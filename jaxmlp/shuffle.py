"""The epoch shuffle: a uniform random permutation of the m examples, drawn inside the graph.

* :func:`permutation` -- ``permutation(key, m) -> int32 (m,)``.
* :func:`epoch_batches` -- the permutation cut into ``(m // batch_size, batch_size)`` rows,
  one per minibatch (the ``m % batch_size`` left over are skipped for that epoch).

What is drawn (m <= ONE_SORT_MAX = 2048, threefry key): one sort
----------------------------------------------------------------
* One word per example, ``r[i] = threefry_2x32(key, i)``: JAX's threefry-2x32 on the counters
  0, ..., m-1 (:func:`words`), and one mask ``K`` from the counter pair (2^32-1, 2^32-2).
* With nb = ceil(log2 m) index bits, the key of example i is h(i) = r[i] >> (nb + 1), its
  high 31 - nb >= 20 bits.
* ONE single-operand uint32 sort of ``(h(i) << (nb+1)) | (coin(h(i)) << nb) | i`` orders the
  examples by h, then by ``coin(v) = parity(v & K)``, then by index.
* Ties in h are then settled:
  - two examples with equal h (about C(m, 2) / 2^(31 - nb) pairs per draw: 1 at m = 1438)
    are swapped when coin(h) = 1;
  - three or more with equal h (probability at most C(m, 3) 2^(2 nb + 2 - 64): 4.5e-4 at
    m = 1438) send the draw to the stable argsort of the full words r (``lax.cond``; the
    two-operand sort, as ``jax.random.permutation``).

Why it is uniform. The words are i.i.d. uniform, so the order of the distinct h values is a
uniform random order of the examples. K is independent of r, so given the h values each
pair's coin parity(v & K) is fair (v != 0), and the coins of several pairs are independent
when their values v are linearly independent over GF(2) (always for one pair). The draw
deviates from uniform only when a tied value is 0 or three or more tied values are linearly
dependent (about e^(pairs per draw) 2^-20: < 1e-5 for m <= 2048), or, in the rare branch,
when two full 32-bit words are equal. For comparison, ``jax.random.permutation``'s own sort
by 32-bit keys meets such equal words on about C(m, 2) / 2^32 of its draws (2.4e-4 at
m = 1438) and orders them by index.

What is drawn (2048 < m <= 2^24, threefry key): rounds of packed sorts
-----------------------------------------------------------------------
``jax.random.permutation``'s own algorithm: R rounds, each sorting the current order by fresh
random keys, stably; R is chosen so that the keys hold 3 log2 m random bits in all, JAX's rule
(two positions then tie on every bit with probability about 1 / (2m) per draw, and keep
their order, as in JAX). Each round here sorts ONE packed uint32 operand, (32 - nb random
bits | position), and gathers the order with it, where JAX sorts (32-bit key, value) pairs;
narrower keys take more rounds (:func:`rounds`: 2 at m = 4096, 3 at m = 60,000, 9 at 2^24).
Round j's words are ``threefry_2x32(key, [j m, ..., (j+1) m - 1])``, drawn round by round.

Anything else (m > 2^24, or a key of another PRNG implementation than threefry):
:func:`permutation` IS ``jax.random.permutation``.

``tests/test_shuffle.py`` checks both paths against NumPy references built from
``jax.extend.random.threefry_2x32``, the tie rules on adversarial words, the threefry bit
for bit, and uniformity (chi-square over all 120 orders of m = 5; positions at m = 1438 and
m = 3000).

Why not ``jax.random.permutation`` itself
-----------------------------------------
Time. On XLA:CPU it runs the partitionable threefry (a rolled loop of small kernels) and a
two-operand ``sort_key_val`` whose comparator is called per comparison. For a digits epoch
(1438 examples, 11 minibatches of 128 through a 64-128-10 network) it made the whole epoch
1.24-1.26x slower (``experiments/epoch_speed.py``). Here the threefry is unrolled into one
fused kernel and each sort has one uint32 operand: 5.0x cheaper at m = 1438 and 3.7-6.9x up
to m = 60,000 (``python experiments/shuffle_speed.py``). Nothing here is specific to a device.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jaxmlp import validation

Array = jax.Array

__all__ = [
    "MAX_ROUNDS",
    "ONE_SORT_MAX",
    "epoch_batches",
    "order_by_rounds",
    "order_by_words",
    "permutation",
    "rounds",
    "words",
]

#: Largest m for which :func:`permutation` takes the one-sort path: at most 11 index bits,
#: so at least 20 random bits per key; a three-way tie has probability <= 1.3e-3 at m = 2048.
ONE_SORT_MAX = 2048

#: Largest number of packed sorting rounds of the multi-round path (m up to 2^24); beyond it
#: :func:`permutation` is ``jax.random.permutation``.
MAX_ROUNDS = 9


def rounds(m: int) -> int:
    """Sorting rounds of the multi-round path for m examples (m > ONE_SORT_MAX).

    Each round sorts by 32 - ceil(log2 m) random bits; rounds are added until the total
    reaches 3 log2 m bits, JAX's own rule for ``jax.random.permutation`` (2^bits >= m^3), so
    that two positions tie on all their bits with probability about 1 / (2m) per draw.
    """
    nb = (m - 1).bit_length()
    return math.ceil(3 * math.log2(m) / (32 - nb)) if nb < 32 else MAX_ROUNDS + 1


def _threefry_key_data(key: Any):
    """The uint32 (2,) data of a threefry key, or None for a key of another implementation."""
    key = validation.prng_key(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
        return data if data.shape == (2,) and data.dtype == jnp.uint32 else None
    return key


def _rotl(x: Array, d: int) -> Array:
    return (x << jnp.uint32(d)) | (x >> jnp.uint32(32 - d))


def _threefry_block(key_data: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """Threefry-2x32 (20 rounds) of the counter pairs (x0, x1), uint32 arrays of one shape."""
    k0, k1 = key_data[0], key_data[1]
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    for i in range(5):
        for d in rotations[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, d) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def _threefry_2x32(key_data: Array, count: Array) -> Array:
    """``jax.extend.random.threefry_2x32(key_data, count)``, bit for bit, unrolled.

    key_data: uint32 (2,); count: uint32 (n,). As JAX: pad to even length, threefry the two
    halves as the pairs (x0, x1), concatenate. JAX lowers its version to a rolled loop on CPU
    (5 iterations of small kernels, ~50 us for n = 1438); unrolled, XLA fuses the 20 rounds
    into one elementwise kernel. ``tests/test_shuffle.py`` checks the equality.
    """
    n = count.shape[0]
    if n % 2:
        count = jnp.concatenate([count, jnp.zeros((1,), jnp.uint32)])
    h = count.shape[0] // 2
    return jnp.concatenate(_threefry_block(key_data, count[:h], count[h:]))[:n]


def words(key: Any, n: int) -> Array:
    """The n uint32 words w[j] = threefry_2x32(key, j), j = 0, ..., n-1, of a threefry key."""
    n = validation.positive_int("n", n)
    data = _threefry_key_data(key)
    if data is None:
        raise ValueError(
            "key: words() needs a threefry key; this key uses another PRNG implementation."
        )
    return _threefry_2x32(data, lax.iota(jnp.uint32, n))


def _shift(x: Array, before: int, after: int) -> Array:
    """x (n,) padded with zeros / False: ``before`` in front, ``after`` behind."""
    return lax.pad(x, jnp.zeros((), x.dtype), [(before, after, 0)])


def _stable_argsort(r: Array) -> Array:
    """Stable argsort of uint32 words r (m,) by the two-operand sort: the exact reference."""
    return lax.sort_key_val(r, lax.iota(jnp.int32, r.shape[0]))[1]


def order_by_words(r: Array, coin: Callable[[Array], Array], exact: Callable[[], Array]) -> Array:
    """The examples ordered by the high bits of their words, int32 (m,); see the module docstring.

    Arguments:
      r: uint32 (m,), one random word per example.
      coin: maps uint32 values to bool, elementwise: the fair coin of a tie value v. It is
        applied to every h(i) before the sort and packed into the sort key, so both members
        of a tied pair carry the same coin. :func:`permutation` uses parity(v & K).
      exact: returns the order for the rare branch (three or more share h):
        :func:`permutation` recomputes the words there and takes their stable argsort, so
        the common branch does not pay for them.

    With nb = ceil(log2 m) and h(i) = r[i] >> (nb + 1) (the high 31 - nb bits), returns the
    order of 0, ..., m-1 by h, a pair of examples with equal h swapped when ``coin(h)``; if
    any three share h, ``exact()``. The work is one single-operand sort of
    ``(h(i) << (nb+1)) | (coin(h(i)) << nb) | i``; under ``vmap`` both branches are computed
    (``lax.cond`` becomes a select).
    """
    m = r.shape[0]
    if m == 1:
        return jnp.zeros((1,), jnp.int32)
    nb = (m - 1).bit_length()  # index bits: i < 2**nb
    h = r >> (nb + 1)  # the high 31 - nb bits
    c = coin(h).astype(jnp.uint32)  # computed before the sort, elementwise: vectorises
    # One uint32 key per example: h, then the coin of h (equal within a tie), then the index.
    s = lax.sort((h << (nb + 1)) | (c << nb) | lax.iota(jnp.uint32, m))
    idx = (s & jnp.uint32((1 << nb) - 1)).astype(jnp.int32)
    hs = s >> (nb + 1)
    flip = ((s >> nb) & jnp.uint32(1)) == 1
    tie = hs[:-1] == hs[1:]  # (m-1,): sorted positions k and k+1 share h
    first = _shift(tie, 0, 1)  # (m,): position k is the first of a tied pair
    second = _shift(tie, 1, 0)  # (m,): position k is the second of a tied pair
    fixed = jnp.where(flip & first, _shift(idx[1:], 0, 1),
                      jnp.where(flip & second, _shift(idx[:-1], 1, 0), idx))
    if m == 2:
        return fixed
    run3 = jnp.any(tie[:-1] & tie[1:])  # three or more share h: rare
    return lax.cond(run3, exact, lambda: fixed)


def order_by_rounds(round_words: Callable[[int], Array], m: int, num_rounds: int) -> Array:
    """The multi-round order, int32 (m,).

    Arguments:
      round_words: ``j -> uint32 (m,)``, the random words of round j, one per position.
      m: the number of examples.
      num_rounds: R.

    Round j sorts the positions p of the current order by the packed single-operand key
    ``((w_j[p] >> nb) << nb) | p`` and gathers the current order with the result, so the
    final order is by (round R-1 bits, ..., round 0 bits, index): ``jax.random.permutation``'s
    rounds of ``sort_key_val`` with random keys, each on one uint32 operand. The words are
    drawn round by round, so memory stays O(m).
    """
    nb = (m - 1).bit_length()
    low = jnp.uint32((1 << nb) - 1)
    x = lax.iota(jnp.int32, m)  # x[p]: the example at position p
    for j in range(num_rounds):
        s = lax.sort((round_words(j) & ~low) | lax.iota(jnp.uint32, m))
        x = x.at[(s & low).astype(jnp.int32)].get(mode="promise_in_bounds")
    return x


def permutation(key: Any, m: int) -> Array:
    """A uniform random permutation of 0, ..., m-1: int32 (m,), jittable, vmappable over keys.

    Arguments:
      key: a PRNG key (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``).
      m: the number of examples (a Python int; it fixes the shape).

    For m <= :data:`ONE_SORT_MAX` and a threefry key: :func:`order_by_words` of the words
    ``r = words(key, m)`` with the coin ``parity(v & K)``, K the first word of threefry on
    the counter pair (2^32 - 1, 2^32 - 2), which r never uses. For larger m up to 2^24:
    :func:`order_by_rounds` with round j's words ``threefry_2x32(key, [j m, ..., (j+1) m - 1])``,
    R = :func:`rounds` (m).
    Otherwise ``jax.random.permutation(key, m)``. Raises TypeError/ValueError for a bad key
    or m.
    """
    m = validation.positive_int("m", m)
    data = _threefry_key_data(key)
    if data is not None and m > ONE_SORT_MAX and rounds(m) <= MAX_ROUNDS:
        def round_words(j):  # threefry_2x32(key, [j m, ..., (j+1) m - 1])
            return _threefry_2x32(data, lax.iota(jnp.uint32, m) + jnp.uint32(j * m))

        return order_by_rounds(round_words, m, rounds(m))
    if data is None or m > ONE_SORT_MAX:
        return jax.random.permutation(key, m).astype(jnp.int32)
    r = _threefry_2x32(data, lax.iota(jnp.uint32, m))
    # K: a random 32-bit mask from a counter pair r never uses. coin(v) = parity(v & K).
    K = _threefry_block(data, jnp.uint32(0xFFFFFFFF), jnp.uint32(0xFFFFFFFE))[0]

    def coin(v):
        return (lax.population_count(v & K) & jnp.uint32(1)) == 1

    def exact():  # recomputed here so that only the rare branch pays for it
        return _stable_argsort(_threefry_2x32(data, lax.iota(jnp.uint32, m)))

    return order_by_words(r, coin, exact)


def epoch_batches(
    key: Any, m: int, batch_size: int, permutation_fn: Optional[Callable[[Any, int], Array]] = None
) -> Array:
    """Column indices of one epoch: int (m // batch_size, batch_size).

    Row s holds the columns of minibatch s: the first ``(m // batch_size) * batch_size``
    entries of ``permutation_fn(key, m)`` (default :func:`permutation`); the remaining
    ``m % batch_size`` are skipped this epoch. Raises ValueError when ``batch_size`` is not an
    int in [1, m], or when ``permutation_fn`` does not return shape (m,).
    """
    m = validation.positive_int("m", m)
    batch_size = validation.positive_int("batch_size", batch_size)
    if batch_size > m:
        raise ValueError(
            f"batch_size: expected at most the number of training examples m = {m}, "
            f"got {batch_size}."
        )
    num_batches = m // batch_size
    perm = (permutation if permutation_fn is None else permutation_fn)(key, m)
    if getattr(perm, "shape", None) != (m,):
        raise ValueError(
            f"permutation: expected the shuffle to return shape ({m},), got "
            f"{getattr(perm, 'shape', type(perm).__name__)}."
        )
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)
