"""The epoch shuffle: a uniform random permutation of the m examples, drawn inside the graph.

* :func:`permutation` -- ``permutation(key, m) -> int32 (m,)``.
* :func:`epoch_batches` -- the permutation cut into ``(m // batch_size, batch_size)`` rows,
  one per minibatch (the ``m % batch_size`` left over are skipped for that epoch).

What is drawn: ``jax.random.permutation``'s algorithm, one uint32 operand per sort
---------------------------------------------------------------------------------
``jax.random.permutation(key, m)`` sorts the current order by fresh random 32-bit keys,
stably, in R rounds, R chosen so that the keys hold 3 log2 m random bits in all (two
positions then tie on every bit with probability about 1 / (2m) per draw, and keep their
order). :func:`permutation` does the same rounds, with two changes of implementation:

* each round sorts ONE packed uint32 operand, ``(random high bits | position)``, with
  nb = ceil(log2 m) bits of position and 32 - nb random bits, and gathers the order with the
  sorted positions, where JAX sorts (32-bit key, value) pairs with a comparator; narrower
  keys take more rounds (:func:`rounds`: 2 at m = 1,438, 3 at m = 60,000);
* round j's words are ``jax.random.bits(jax.random.fold_in(key, j), (m,), jnp.uint32)``; for
  a threefry key they are computed by :mod:`jaxmlp.privacy.threefry`'s unrolled hash, equal bit for
  bit to JAX's, that XLA fuses into one elementwise kernel, where JAX's own lowers to a
  rolled loop of small kernels on CPU.

Uniformity is JAX's argument: the final order is lexicographic in (round R-1 bits, ...,
round 0 bits, index), the words are i.i.d. uniform, so it is a uniform random order unless two
examples tie on all their 3 log2 m bits. ``tests/test_shuffle.py`` checks the order against a
NumPy reference built from ``jax.random.bits``, the words bit for bit, and uniformity
(chi-square over all 120 orders of m = 5; positions at m = 1,438 and m = 3,000).

Why not ``jax.random.permutation`` itself: it costs a digits epoch (1,438 examples, 11 minibatch
updates) about a quarter more time on CPU; the measurement and the command that makes it are
in docs/training.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jaxmlp.privacy import threefry
from jaxmlp.nn import checks

Array = jax.Array

__all__ = ["epoch_batches", "permutation", "rounds", "words"]


def rounds(m: int) -> int:
    """Sorting rounds R for m examples: the fewest with R (32 - ceil(log2 m)) >= 3 log2 m random
    bits, JAX's rule for ``jax.random.permutation`` (2^bits >= m^3); at least 1."""
    m = checks.positive_int("m", m)
    if m == 1:
        return 1
    bits = 32 - (m - 1).bit_length()
    if bits < 1:
        raise ValueError(f"m: expected at most 2**31 examples, got {m}.")
    return max(1, math.ceil(3 * math.log2(m) / bits))


def words(key: Any, j: int, m: int) -> Array:
    """Round j's words: ``jax.random.bits(jax.random.fold_in(key, j), (m,), jnp.uint32)``,
    for a threefry key through :func:`jaxmlp.privacy.threefry.unrolled_key` (the same bits, one
    fused kernel)."""
    key = checks.prng_key(key)
    unrolled = threefry.unrolled_key(key)
    return jax.random.bits(jax.random.fold_in(key if unrolled is None else unrolled, j), (m,),
                           jnp.uint32)


def permutation(key: Any, m: int) -> Array:
    """A uniform random permutation of 0, ..., m-1: int32 (m,), jittable, vmappable over keys.

    Arguments:
      key: a PRNG key (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``).
      m: the number of examples (a Python int; it fixes the shape), at most 2^31.

    R = :func:`rounds` (m) rounds; round j sorts the positions p of the current order by the
    packed key ``((words(key, j, m)[p] >> nb) << nb) | p`` (one uint32 operand) and gathers
    the current order with the sorted positions, so the final order is by (round R-1 bits,
    ..., round 0 bits, index). Raises TypeError/ValueError for a bad key or m.
    """
    key = checks.prng_key(key)
    R = rounds(m)
    if m == 1:
        return jnp.zeros((1,), jnp.int32)
    low = jnp.uint32((1 << (m - 1).bit_length()) - 1)  # the position bits
    positions = lax.iota(jnp.uint32, m)
    order = lax.iota(jnp.int32, m)  # order[p]: the example at position p
    for j in range(R):
        s = lax.sort((words(key, j, m) & ~low) | positions)
        order = order.at[(s & low).astype(jnp.int32)].get(mode="promise_in_bounds")
    return order


def epoch_batches(
    key: Any, m: int, batch_size: int, permutation_fn: Optional[Callable[[Any, int], Array]] = None
) -> Array:
    """Column indices of one epoch: int (m // batch_size, batch_size).

    Row s holds the columns of minibatch s: the first ``(m // batch_size) * batch_size``
    entries of ``permutation_fn(key, m)`` (default :func:`permutation`); the remaining
    ``m % batch_size`` are skipped this epoch. Raises ValueError when ``batch_size`` is not an
    int in [1, m], or when ``permutation_fn`` does not return shape (m,).
    """
    m = checks.positive_int("m", m)
    batch_size = checks.positive_int("batch_size", batch_size)
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
