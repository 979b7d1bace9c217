"""Host-side views of arrays, for the eager checks of data (no jaxmlp import: the bottom floor)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["local_values"]


def local_values(arr: Any) -> np.ndarray:
    """``np.asarray(arr)``; for a global array of several processes (``jax.distributed``)
    split by columns, the columns THIS process holds (n, m_local), in shard order: what an
    eager check of the data (finite values, the targets' domain) can inspect per process."""
    if (isinstance(arr, jax.Array) and not arr.is_fully_addressable
            and not arr.is_fully_replicated):
        shards = [np.asarray(s.data) for s in arr.addressable_shards]
        return np.concatenate(shards, axis=-1) if shards[0].ndim else np.stack(shards)
    return np.asarray(arr)
