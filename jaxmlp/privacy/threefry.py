"""JAX's threefry random numbers, computed by an unrolled hash that XLA fuses.

One place for the counter-based generator that :mod:`jaxmlp.train.shuffle` (the epoch's random
words) and :mod:`jaxmlp.privacy.dpsgd` (the DP noise) draw from:

* :func:`unrolled_key` -- the same key under a PRNG implementation whose random bits and
  fold_in are computed by :func:`threefry2x32` written out; ``jax.random.bits``,
  ``jax.random.normal`` and ``jax.random.fold_in`` of it give exactly the numbers of the
  original key (tested).
* :func:`normal` -- ``jax.random.normal(key, shape, dtype)`` through that key.

Why: on CPU, JAX lowers the threefry-2x32 hash as a loop of 5 iterations (to keep compile
times short) whose carried state, two uint32 arrays of the output's size, is written to
memory every iteration, and XLA cannot fuse the loop with what consumes the bits. Written
out (as JAX's own lowering does on GPU), counters, hash, the transform to the wanted
distribution and the consumer become one elementwise kernel: for the 669,706 DP noise
numbers of 784-512-512-10 the draw takes about 0.7x the time and no temporary buffer
(docs/privacy.md, "Noise", ``python experiments/dp.py noise``); a digits epoch takes
1.2-1.3x less time than with ``jax.random.permutation`` (docs/training.md).

The hash is Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy
as 1, 2, 3", SC 2011); counters and 32-bit output are those of JAX's
``jax_threefry_partitionable`` mode (the default): counter i is the pair (0, i) of the
row-major index, and the output word is the XOR of the two hash words. Under the other mode,
or for 8/16/64-bit draws, the bits come from JAX's own threefry, so the numbers are JAX's in
every case.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import random as jex_random

from jaxmlp.nn import checks

__all__ = ["normal", "threefry2x32", "unrolled_key"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x, d: int):
    return lax.shift_left(x, np.uint32(d)) | lax.shift_right_logical(x, np.uint32(32 - d))


def threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32, 20 rounds, unrolled: key words k1, k2 (uint32 scalars), counter words
    x1, x2 (uint32 arrays of one shape) -> the two output words (same shape)."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, r)
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


_THREEFRY = jex_random.threefry_prng_impl


def _random_bits(key, bit_width, shape):
    size = math.prod(shape)
    partitionable = getattr(jax.config, "jax_threefry_partitionable", True)
    if bit_width != 32 or size >= 2**32 or not partitionable:
        return _THREEFRY.random_bits(key, bit_width, shape)
    lo = lax.iota(np.uint32, size).reshape(shape)  # counter i = (0, i), row-major
    b1, b2 = threefry2x32(key[0], key[1], jnp.zeros(shape, np.uint32), lo)
    return b1 ^ b2


def _fold_in(key, data):
    """JAX's threefry fold_in: the hash of the counter pair (0, data) under the key."""
    y1, y2 = threefry2x32(key[0], key[1], np.uint32(0), lax.convert_element_type(data, np.uint32))
    return jnp.stack([y1, y2])


_UNROLLED = jex_random.define_prng_impl(
    key_shape=_THREEFRY.key_shape, seed=_THREEFRY.seed, split=_THREEFRY.split,
    random_bits=_random_bits, fold_in=_fold_in, name="threefry2x32_unrolled")


def unrolled_key(key) -> Optional[jax.Array]:
    """``key`` (a raw uint32 (2,) key or a typed threefry key, unbatched) under the unrolled
    implementation, the same key words; None for any other kind of key."""
    key = key if hasattr(key, "dtype") else jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0)) or key.shape:
            return None
        data = jax.random.key_data(key)
    elif key.shape == (2,) and key.dtype == jnp.uint32:
        data = key
    else:
        return None
    return jax.random.wrap_key_data(data, impl=_UNROLLED)


def normal(key, shape, dtype=float):
    """``jax.random.normal(key, shape, dtype)``, the same numbers, drawn in one fused kernel
    for a threefry key; any other key goes to JAX directly. ``key``: a PRNG key or an integer
    seed (:func:`jaxmlp.nn.checks.prng_key`)."""
    key = checks.prng_key(key)
    k = unrolled_key(key)
    return jax.random.normal(key if k is None else k, shape, dtype)
