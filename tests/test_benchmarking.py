"""_common.benchmarking: the paired protocol's bookkeeping, statistics and output files.

No timing assertions: the variants here are counters, and the clock is replaced where a
test needs known durations.
"""

import json
import math
import random

import jax.numpy as jnp
import numpy as np
import pytest

from _common import benchmarking


def _counters(names):
    calls = {n: 0 for n in names}
    log = []

    def make(n):
        def fn():
            calls[n] += 1
            log.append(n)
            return jnp.float32(calls[n])
        return fn

    return {n: make(n) for n in names}, calls, log


def test_every_variant_runs_once_per_round_in_shuffled_orders():
    variants, calls, log = _counters(["a", "b", "c"])
    t = benchmarking.time_paired(variants, rounds=12, inner=3, warmup=2, seed=1)
    assert t.reference == "a" and t.rounds == 12
    assert calls == {"a": 2 + 12 * 3, "b": 2 + 12 * 3, "c": 2 + 12 * 3}
    # warm-up (compilation) of every variant comes before any timed call
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]
    assert all(sorted(o) == ["a", "b", "c"] for o in t.order)
    assert len({tuple(o) for o in t.order}) > 1  # the order changes between rounds
    # the calls of one sample are consecutive, samples follow the recorded order
    timed = log[6:]
    assert timed == [n for o in t.order for n in o for _ in range(3)]
    for n in "abc":
        assert t.per_round(n).shape == (12,) and np.all(t.per_round(n) > 0)


def test_handover_adds_one_untimed_call_per_sample():
    variants, calls, _ = _counters(["a", "b"])
    benchmarking.time_paired(variants, rounds=4, inner=2, warmup=1, handover=True)
    assert calls == {"a": 1 + 4 * 3, "b": 1 + 4 * 3}
    variants, calls, _ = _counters(["a", "b"])
    benchmarking.time_paired(variants, rounds=4, inner=2, warmup=1, handover=["b"])
    assert calls == {"a": 1 + 4 * 2, "b": 1 + 4 * 3}


def test_paired_ratios_are_per_round_quotients(monkeypatch):
    # a fake clock: variant "b" takes twice as long as "a" in every round, and the whole
    # machine slows down from round to round; the paired ratio stays exactly 2
    now = [0.0]
    slow = {"a": 1.0, "b": 2.0}
    round_no = [0]

    def fake_clock():
        return now[0]

    def make(n):
        def fn():
            now[0] += slow[n] * (1 + round_no[0])
        return fn

    monkeypatch.setattr(benchmarking.time, "perf_counter", fake_clock)
    variants = {"a": make("a"), "b": make("b")}

    orig_shuffle = random.Random.shuffle

    def shuffle_and_count(self, x):  # one shuffle per round: use it to advance the "drift"
        round_no[0] += 1
        return orig_shuffle(self, x)

    monkeypatch.setattr(random.Random, "shuffle", shuffle_and_count)
    t = benchmarking.time_paired(variants, reference="a", rounds=5, inner=1, warmup=1)
    np.testing.assert_allclose(t.paired("b", "a"), 2.0)
    r = t.paired_ratio("b")
    assert r == {"median": 2.0, "q25": 2.0, "q75": 2.0, "n": 5}
    assert t.paired_ratio("a")["median"] == 1.0
    np.testing.assert_allclose(t.per_round("a"), [2, 3, 4, 5, 6])  # the drift is visible
    s = t.summary("b")
    assert s["median_s"] == 8.0 and s["samples"] == 5 and s["paired_ratio"]["median"] == 2.0


def test_inner_from_target_duration_and_per_variant():
    variants, _, _ = _counters(["a", "b"])
    t = benchmarking.time_paired(variants, rounds=2, target_s=1e-9)
    assert t.inner == {"a": 1, "b": 1}
    t = benchmarking.time_paired(variants, rounds=2, inner={"b": 4})
    assert t.inner == {"a": 1, "b": 4}


def test_max_samples_leaves_nan_and_pairs_only_common_rounds():
    variants, calls, _ = _counters(["fast", "slow"])
    t = benchmarking.time_paired(variants, rounds=6, inner=1, warmup={"slow": 1},
                                 max_samples={"slow": 2})
    assert calls["slow"] == 1 + 2 and calls["fast"] == 2 + 6
    assert np.isnan(t.per_round("slow")).sum() == 4
    assert t.paired_ratio("slow")["n"] == 2
    assert t.summary("slow")["times_s"].count(None) == 4


def test_table_and_json_name_every_variant():
    variants, _, _ = _counters(["ref", "other"])
    t = benchmarking.time_paired(variants, rounds=3, inner=1)
    text = t.table()
    assert "ref" in text and "other" in text and "3 rounds" in text
    doc = json.loads(json.dumps(t.to_json()))
    assert doc["reference"] == "ref" and doc["rounds"] == 3
    assert set(doc["variants"]) == {"ref", "other"}
    assert len(doc["variants"]["other"]["times_s"]) == 3


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"variants": {}}, TypeError, "variants"),
    ({"variants": [lambda: 0]}, TypeError, "variants"),
    ({"variants": {"a": 3}}, TypeError, "variants['a']"),
    ({"reference": "z"}, ValueError, "reference"),
    ({"rounds": 0}, ValueError, "rounds"),
    ({"rounds": 2.5}, TypeError, "rounds"),
    ({"inner": {"zz": 2}}, ValueError, "inner"),
    ({"warmup": 0}, ValueError, "warmup"),
    ({"target_s": 0.0}, ValueError, "target_s"),
    ({"handover": ["zz"]}, ValueError, "handover"),
])
def test_bad_arguments_are_named(kwargs, exc, words):
    args = {"variants": {"a": lambda: 0}} | kwargs
    calls = []
    if isinstance(args["variants"], dict):  # nothing may run before the checks
        args["variants"] = {k: (lambda: calls.append(1)) if callable(v) else v
                            for k, v in args["variants"].items()}
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        benchmarking.time_paired(**args)
    assert calls == []


def test_spread_ignores_nan():
    s = benchmarking.spread([1.0, math.nan, 3.0, 2.0, 4.0])
    assert s == {"median": 2.5, "q25": 1.75, "q75": 3.25, "n": 4}
    assert benchmarking.spread([math.nan])["n"] == 0


def test_output_paths_are_relative_to_the_repo_root(tmp_path, monkeypatch):
    root = benchmarking.repo_root()
    assert (root / "pyproject.toml").is_file() and (root / "experiments").is_dir()
    monkeypatch.chdir(tmp_path)  # the working directory does not matter
    assert benchmarking.output_path("results/x/y.json") == root / "results" / "x" / "y.json"
    assert benchmarking.output_path(tmp_path / "a.json") == tmp_path / "a.json"


def test_write_json_creates_folders_and_converts_numpy(tmp_path):
    path = benchmarking.write_json(tmp_path / "deep" / "er" / "out.json",
                                   {"a": np.float32(1.5), "b": np.arange(3), "c": (np.int64(2),)})
    assert path == tmp_path / "deep" / "er" / "out.json"
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": [2]}


def test_machine_info_has_what_a_timing_depends_on():
    info = benchmarking.machine_info()
    assert {"cpu_model", "cpu_count", "jax", "backend", "devices", "load_average",
            "python", "xla_flags"} <= set(info)
    assert info["cpu_count"] >= 1 and info["backend"] in ("cpu", "gpu", "tpu")
    line = benchmarking.describe(info)
    assert info["jax"] in line and "load" in line
