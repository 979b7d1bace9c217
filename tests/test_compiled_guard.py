"""experiments/_common/compiled.py: a long sweep drops JAX's caches before the process reaches
vm.max_map_count, and only then."""

import pytest

from _common import compiled


def test_the_mapping_count_is_this_process_s_own():
    count = compiled.mapping_count()
    if count is None:
        pytest.skip("no /proc/self/maps (not Linux)")
    with open("/proc/self/maps", "rb") as f:
        assert abs(count - f.read().count(b"\n")) < 200
    assert compiled.mapping_limit() >= 1000


def test_release_drops_the_caches_over_the_limit_only(monkeypatch):
    """The threshold, not JAX's cache clearing (jax.clear_caches is JAX's own; calling it for
    real here would make every later test of this worker compile again)."""
    if compiled.mapping_count() is None:
        pytest.skip("no /proc/self/maps (not Linux)")
    calls = []
    monkeypatch.setattr(compiled.jax, "clear_caches", lambda: calls.append(1))
    count = compiled.mapping_count()
    assert compiled.release_if_many(limit=count + 10_000) is False and calls == []
    assert compiled.release_if_many(limit=max(count - 200, 0)) is True and calls == [1]
    monkeypatch.setattr(compiled, "mapping_limit", lambda: 2 * count + 20_000)
    assert compiled.release_if_many() is False and calls == [1]   # default: half the limit
    monkeypatch.setattr(compiled, "mapping_limit", lambda: count)
    assert compiled.release_if_many() is True and calls == [1, 1]
