"""The epoch shuffle: a uniform random permutation of the m examples, drawn inside the graph.

* :func:`permutation` -- ``permutation(key, m) -> int32 (m,)``.
* :func:`epoch_batches` -- the permutation cut into ``(m // batch_size, batch_size)`` rows,
  one per minibatch (the ``m % batch_size`` left over are skipped for that epoch).

What is drawn
-------------
For ``m <= FAST_MAX`` (2048) and a threefry key, 2m words of JAX's threefry-2x32 on counters,
``w = threefry_2x32(key, [0, 1, ..., 2m-1])``: example i gets the word r[i] = w[i], sorted
position k gets the coin c[k] = w[m + k]. With nb = ceil(log2 m) index bits, the examples are
ordered by the high 32 - nb bits h(i) = r[i] >> nb of their words (at least 21 random bits),
one single-operand sort of the packed ``(h(i) << nb) | i``. Ties in h are then settled:

* two examples with equal h (probability about m^2 / 2^(65 - 2 nb): about 0.5 per epoch at
  m = 1438) are swapped when bit 0 of the coin at their sorted position is 1: a fair coin
  independent of the words, so their order is uniform;
* three or more with equal h (probability at most C(m, 3) 2^(2 nb - 64): 1.1e-4 at m = 1438,
  3.3e-4 at m = 2048) send the draw to the exact stable argsort of the full 32-bit words
  (``lax.cond``; the two-operand sort).

The words are i.i.d. and the coins fair, so the permutation is uniform over all m! orders,
except that in the rare three-way branch examples whose full 32-bit words are equal keep their
index order (the tie rule of ``jax.random.permutation``, whose sort by 32-bit keys meets such
ties with probability about m^2 / 2^33 on every draw). For larger m, or a key of another
PRNG implementation than threefry, :func:`permutation` IS ``jax.random.permutation``.
``tests/test_shuffle.py`` checks validity, the tie rules on adversarial words, the bit
identity of the threefry with JAX's, and uniformity (chi-square over all 120 orders of m = 5;
the positions of examples at m = 1438).

Why not ``jax.random.permutation`` itself
-----------------------------------------
Time. On XLA:CPU it runs the partitionable threefry (a rolled loop of small kernels) and a
two-operand ``sort_key_val`` whose comparator is called per comparison; for a digits epoch
(1438 examples, 11 minibatches of 128 through a 64-128-10 network) that was about a quarter
of the epoch (``experiments/epoch_speed.py``). Here the threefry is unrolled into one fused
kernel and the sort has one uint32 operand: 3-4x cheaper (``experiments/shuffle_speed.py``).
Nothing here is specific to a device.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

__all__ = ["FAST_MAX", "epoch_batches", "order_by_words", "permutation", "words"]

#: Largest m for which :func:`permutation` takes the packed-sort path (at most 11 index
#: bits, so at least 21 random bits per key; a three-way tie has probability <= 3.3e-4).
FAST_MAX = 2048


def _check_m(m: Any) -> int:
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"m: expected a positive int (the number of examples), got {m!r}.")
    return int(m)


def _threefry_key_data(key: Any):
    """The uint32 (2,) data of a threefry key, or None for a key of another implementation."""
    if not hasattr(key, "dtype"):
        raise TypeError(
            "key: expected a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
            f"got {type(key).__name__}."
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key: expected a single PRNG key of shape (), got shape {key.shape}.")
        data = jax.random.key_data(key)
        return data if data.shape == (2,) and data.dtype == jnp.uint32 else None
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(
            "key: expected a PRNG key (jax.random.PRNGKey(seed): uint32 of shape (2,), or "
            f"jax.random.key(seed)), got dtype {key.dtype} and shape {tuple(key.shape)}."
        )
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
    n = _check_m(n)
    data = _threefry_key_data(key)
    if data is None:
        raise ValueError("key: words() needs a threefry key; this key uses another PRNG implementation.")
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
      coin: maps uint32 values (k,) to bool (k,): the fair coin of a tie value v, applied to
        h at every sorted position (both members of a tied pair see the same v, so each
        position needs only its own value). :func:`permutation` uses bit 0 of threefry under a
        key derived from the epoch's key.
      exact: returns the order for the rare branch (three or more share h):
        :func:`permutation` recomputes the words there and takes their stable argsort, so
        the common branch does not pay for them.

    Let nb = ceil(log2 m) and h(i) = r[i] >> nb, the high 32 - nb bits. Returns the order of
    0, ..., m-1 by h, a pair of examples with equal h swapped when ``coin(h)`` is True; if any
    three share h, ``exact()``. The work is one single-operand sort of ``(h(i) << nb) | i``;
    under ``vmap`` both branches are computed (``lax.cond`` becomes a select).
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


def permutation(key: Any, m: int) -> Array:
    """A uniform random permutation of 0, ..., m-1: int32 (m,), jittable, vmappable over keys.

    Arguments:
      key: a PRNG key (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``).
      m: the number of examples (a Python int; it fixes the shape).

    For m <= :data:`FAST_MAX` and a threefry key: :func:`order_by_words` of the words
    ``r = words(key, m)`` with the coin ``bit 0 of threefry_2x32(key', [v, v])``, key' the
    threefry of the counters (2^32 - 1, 2^32 - 2), which r never uses. Otherwise
    ``jax.random.permutation(key, m)``. Raises TypeError/ValueError for a bad key or m.
    """
    m = _check_m(m)
    data = _threefry_key_data(key)
    if data is None or m > FAST_MAX:
        return jax.random.permutation(key, m).astype(jnp.int32)
    r = _threefry_2x32(data, lax.iota(jnp.uint32, m))
    # K: a random 32-bit mask from a counter pair r never uses. coin(v) = parity(v & K).
    K = _threefry_block(data, jnp.uint32(0xFFFFFFFF), jnp.uint32(0xFFFFFFFE))[0]

    def coin(v):
        return (lax.population_count(v & K) & jnp.uint32(1)) == 1

    def exact():  # recomputed here so that only the rare branch pays for it
        return _stable_argsort(_threefry_2x32(data, lax.iota(jnp.uint32, m)))

    return order_by_words(r, coin, exact)


def epoch_batches(key: Any, m: int, batch_size: int) -> Array:
    """Column indices of one epoch: int32 (m // batch_size, batch_size).

    Row s holds the columns of minibatch s: the first ``(m // batch_size) * batch_size``
    entries of :func:`permutation` ``(key, m)``; the remaining ``m % batch_size`` are skipped
    this epoch. Raises ValueError when ``batch_size`` is not an int in [1, m].
    """
    m = _check_m(m)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}.")
    if batch_size > m:
        raise ValueError(
            f"batch_size: expected at most the number of training examples m = {m}, "
            f"got {batch_size}."
        )
    num_batches = m // batch_size
    return permutation(key, m)[: num_batches * batch_size].reshape(num_batches, batch_size)
