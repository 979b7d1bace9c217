"""Long sweeps and the memory mappings of compiled XLA:CPU programs.

Every program XLA:CPU compiles keeps its memory mappings until it is freed, and Linux lets a
process hold ``vm.max_map_count`` of them (65,530 by default). A sweep that compiles
thousands of small programs (``curvature_check.py`` over 150 networks, each with its autodiff
oracles: about 700 mappings per network; the slow test suite's curvature sweep) reaches the
limit and dies inside XLA with a segmentation fault or an abort, with no Python traceback.
:func:`release_if_many` drops JAX's caches (``jax.clear_caches()``: compiled programs and
traces; arrays are kept) when the process holds more than half the limit, so such a loop
runs to the end; a program used again after that is compiled again.
"""

from __future__ import annotations

from typing import Optional

import jax

__all__ = ["mapping_count", "mapping_limit", "release_if_many"]

_DEFAULT_MAX_MAP_COUNT = 65_530


def mapping_count() -> Optional[int]:
    """The memory mappings this process holds (lines of /proc/self/maps); None off Linux."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def mapping_limit() -> int:
    """``vm.max_map_count`` (65,530 when it cannot be read)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return _DEFAULT_MAX_MAP_COUNT


def release_if_many(limit: Optional[int] = None) -> bool:
    """Drop JAX's caches if this process holds more than ``limit`` memory mappings (default:
    half of ``vm.max_map_count``). Returns whether it did."""
    count = mapping_count()
    if count is None or count <= (mapping_limit() // 2 if limit is None else limit):
        return False
    jax.clear_caches()
    return True
