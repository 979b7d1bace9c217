"""experiments/_common/compiled.py: a long sweep drops JAX's caches before the process reaches
vm.max_map_count, and only then."""

import jax
import jax.numpy as jnp
import pytest

from _common import compiled


def _compiled_once():
    f = jax.jit(lambda x: x * 3.0 + 1.0)
    f(jnp.ones(3)).block_until_ready()
    assert f._cache_size() == 1
    return f


def test_the_mapping_count_is_this_process_s_own():
    count = compiled.mapping_count()
    if count is None:
        pytest.skip("no /proc/self/maps (not Linux)")
    with open("/proc/self/maps", "rb") as f:
        assert abs(count - f.read().count(b"\n")) < 200
    assert compiled.mapping_limit() >= 1000


def test_release_drops_the_compiled_programs_over_the_limit_only():
    if compiled.mapping_count() is None:
        pytest.skip("no /proc/self/maps (not Linux)")
    f = _compiled_once()
    assert compiled.release_if_many(limit=10**9) is False
    assert f._cache_size() == 1                      # under the limit: nothing dropped
    assert compiled.release_if_many(limit=0) is True
    assert f._cache_size() == 0                      # over it: the program is gone
    assert float(f(jnp.ones(3))[0]) == 4.0           # and is compiled again when used
