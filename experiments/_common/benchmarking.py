"""The timing protocol, machine information and output files shared by ``experiments/``.

Every benchmark in the repository times its variants with :func:`time_paired`, ONE
interleaved, paired protocol:

1. **Compile first.** Every variant is called ``warmup`` times before any timing, so no
   sample contains a compilation or a cold cache.
2. **Rounds.** In each of ``rounds`` rounds every variant runs once, in a freshly shuffled
   order (seeded). One run of a variant is one *sample*: an optional untimed hand-over
   call, then ``inner`` consecutive calls timed together, the last result passed to
   ``jax.block_until_ready``; the sample is its time divided by ``inner``.
3. **Paired ratios.** For every variant and round, ``t[variant] / t[reference]`` of the
   SAME round. The samples of one round are adjacent in time, so a slow drift of the
   machine (other jobs on a shared host) moves both terms of a ratio together; the
   median of these per-round ratios, with its interquartile range, is the comparison to
   report (:meth:`Timing.paired_ratio`), rather than the ratio of two medians.
4. **Load.** The load averages before and after the rounds are kept with the samples.

A variant is a zero-argument callable that performs ONE call (e.g. one training step)
and returns its output; anything it returns is blocked on (non-JAX values pass through).
A stateful variant (chained steps) keeps its state in a closure.

Example::

    import jax, jax.numpy as jnp
    from _common import benchmarking

    A = jnp.ones((256, 256))
    f = jax.jit(lambda A: A @ A)
    g = jax.jit(lambda A: jnp.einsum("ij,kj->ik", A, A))   # A @ A^T
    timing = benchmarking.time_paired({"A @ A": lambda: f(A), "A @ A^T": lambda: g(A)},
                                      reference="A @ A", rounds=20)
    print(timing.table())                   # median ms, paired ratio to A @ A and its IQR
    r = timing.paired_ratio("A @ A^T")      # {"median": ..., "q25": ..., "q75": ..., "n": 20}
    benchmarking.write_json("results/example/example.json",   # relative to the repo root
                            {"machine": benchmarking.machine_info(), "timing": timing.to_json()})

Output paths: :func:`output_path` resolves a relative path against the repository root
(not the working directory), so a script writes to the same ``results/`` wherever it is
started from; :func:`write_json` creates the folders and writes NumPy numbers as plain
JSON numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Optional, Union

import numpy as np

from jaxmlp.nn import checks

__all__ = [
    "Timing",
    "describe",
    "load_average",
    "machine_info",
    "output_path",
    "repo_root",
    "spread",
    "time_paired",
    "write_json",
]

IntOrPerVariant = Union[int, Mapping[str, int]]


# ----------------------------------------------------------------------------- statistics
def spread(values) -> dict:
    """Median and interquartile range of ``values``, NaNs ignored.

    Returns ``{"median", "q25", "q75", "n"}`` (floats; NaN and n = 0 when nothing is left).
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "n": 0}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "n": int(v.size)}


@dataclasses.dataclass(frozen=True)
class Timing:
    """The samples of one :func:`time_paired` run.

    Attributes:
      reference: the variant the paired ratios divide by.
      seconds: variant -> array of shape (rounds,), seconds per call of each round's
        sample; NaN in the rounds a variant skipped (``max_samples``).
      inner: variant -> calls per sample.
      order: the order the variants ran in, one list per round.
      load_before, load_after: :func:`load_average` around the rounds.
    """

    reference: str
    seconds: Mapping[str, np.ndarray]
    inner: Mapping[str, int]
    order: list
    load_before: Optional[list]
    load_after: Optional[list]

    @property
    def names(self) -> list:
        return list(self.seconds)

    @property
    def rounds(self) -> int:
        return len(self.order)

    def per_round(self, name: str) -> np.ndarray:
        """Seconds per call of ``name`` in each round (NaN where it did not run)."""
        return np.asarray(self.seconds[_known(self, name)])

    def median(self, name: str) -> float:
        """Median seconds per call of ``name`` over its samples."""
        return spread(self.per_round(name))["median"]

    def paired(self, name: str, other: str) -> np.ndarray:
        """Per-round ratios ``t[name] / t[other]`` (NaN in rounds where either is missing)."""
        return self.per_round(name) / self.per_round(other)

    def paired_ratio(self, name: str, reference: Optional[str] = None) -> dict:
        """:func:`spread` of the per-round ratios of ``name`` to ``reference`` (default: the
        run's reference): above 1 means ``name`` is slower."""
        return spread(self.paired(name, reference or self.reference))

    def summary(self, name: str) -> dict:
        """JSON-ready statistics of one variant (times in seconds per call)."""
        s = spread(self.per_round(name))
        ref = self.median(self.reference)
        return {"median_s": s["median"], "q25_s": s["q25"], "q75_s": s["q75"], "samples": s["n"],
                "inner": self.inner[name], "ratio_of_medians": s["median"] / ref,
                "paired_ratio": self.paired_ratio(name),
                "times_s": [None if math.isnan(t) else float(t) for t in self.per_round(name)]}

    def to_json(self) -> dict:
        """Everything, JSON-ready: protocol, load, per-variant summaries and raw samples."""
        return {"protocol": "interleaved, paired (_common.benchmarking.time_paired)",
                "reference": self.reference, "rounds": self.rounds,
                "load_before": self.load_before, "load_after": self.load_after,
                "order": self.order, "variants": {n: self.summary(n) for n in self.names}}

    def table(self, unit: str = "ms") -> str:
        """A text table: median time per call, its IQR, the paired ratio to the reference."""
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
        width = max(12, *(len(n) for n in self.names))
        lines = [f"{'variant':<{width}} {'median ' + unit:>11} {'IQR ' + unit:>17} "
                 f"{'/ ' + self.reference + ' (paired)':>24} {'IQR':>13}"]
        for n in self.names:
            s, r = spread(self.per_round(n)), self.paired_ratio(n)
            lines.append(f"{n:<{width}} {s['median'] * scale:>11.4g} "
                         f"{s['q25'] * scale:>8.4g}-{s['q75'] * scale:<8.4g} "
                         f"{r['median']:>24.3f} {r['q25']:>6.3f}-{r['q75']:<6.3f}")
        lines.append(f"{self.rounds} rounds; load average {_fmt_load(self.load_before)} before, "
                     f"{_fmt_load(self.load_after)} after")
        return "\n".join(lines)


def _known(timing: Timing, name: str) -> str:
    if name not in timing.seconds:
        raise ValueError(f"name: expected one of the timed variants {timing.names}, got {name!r}.")
    return name


def _fmt_load(load) -> str:
    return "?" if not load else "/".join(f"{x:.1f}" for x in load)


# ----------------------------------------------------------------------------- the protocol
def _block(out):
    import jax

    return jax.block_until_ready(out)


def _per_variant(arg: str, value, names, default) -> dict:
    """An int for every variant, or a mapping from some variants to ints (others: default)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{arg}: names {unknown} are not variants; expected a subset of {list(names)}.")
        return {n: checks.positive_int(f"{arg}[{n!r}]", value[n]) if n in value else default
                for n in names}
    value = checks.positive_int(arg, value)
    return {n: value for n in names}


def time_paired(variants: Mapping[str, Callable[[], Any]], *, reference: Optional[str] = None,
                rounds: int = 30, inner: Optional[IntOrPerVariant] = None,
                target_s: float = 0.02, warmup: IntOrPerVariant = 2,
                handover: Union[bool, Collection[str]] = False,
                pause_s: float = 0.0, max_samples: Optional[Mapping[str, int]] = None,
                seed: int = 0) -> Timing:
    """Time ``variants`` by the interleaved, paired protocol of this module.

    Args:
      variants: name -> zero-argument callable doing one call (its result is blocked on).
      reference: the variant paired ratios divide by (default: the first).
      rounds: rounds of the protocol (samples per variant).
      inner: calls per sample, one int for all or per variant; None: per variant, enough
        calls for a sample of about ``target_s`` seconds, estimated from one call after
        the warm-up (at most 10,000).
      target_s: sample duration aimed at when ``inner`` is None.
      warmup: untimed calls of each variant before the rounds (>= 1: compiles), one int or
        per variant (e.g. 1 for a variant whose call takes seconds).
      handover: one untimed call of each variant right before its sample (evicts the
        previous variant's data from the caches; doubles the time of each sample): True for
        every variant, or the names of the variants that get one.
      pause_s: sleep before each sample.
      max_samples: variant -> at most this many samples (taken in the first rounds it
        runs), for variants too slow to run every round; their other rounds are NaN.
      seed: seed of the per-round shuffles.

    Returns:
      a :class:`Timing`.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise TypeError(f"variants: expected a non-empty mapping from names to callables, got "
                        f"{type(variants).__name__} {variants!r:.80}.")
    names = list(variants)
    for n, fn in variants.items():
        if not callable(fn):
            raise TypeError(f"variants[{n!r}]: expected a zero-argument callable, got {type(fn).__name__}.")
    reference = names[0] if reference is None else reference
    if reference not in variants:
        raise ValueError(f"reference: expected one of {names}, got {reference!r}.")
    rounds = checks.positive_int("rounds", rounds)
    warm = _per_variant("warmup", warmup, names, 2)
    caps = _per_variant("max_samples", max_samples or {}, names, rounds)
    target_s = checks.real_number("target_s", target_s, low=0.0, low_open=True)
    pause_s = checks.real_number("pause_s", pause_s, low=0.0)
    fixed = None if inner is None else _per_variant("inner", inner, names, 1)
    if isinstance(handover, bool):
        handover = set(names) if handover else set()
    else:
        handover = set(handover)
        if handover - set(names):
            raise ValueError(f"handover: names {sorted(handover - set(names))} are not variants; "
                             f"expected True, False or a subset of {names}.")

    counts = {}
    for n in names:  # compile and warm up; estimate a call's duration on the last warm-up call
        for _ in range(warm[n] - 1):
            _block(variants[n]())
        t0 = time.perf_counter()
        _block(variants[n]())
        est = max(time.perf_counter() - t0, 1e-7)
        counts[n] = fixed[n] if fixed else max(1, min(10_000, math.ceil(target_s / est)))

    rng = random.Random(seed)
    seconds = {n: np.full(rounds, np.nan) for n in names}
    done = dict.fromkeys(names, 0)
    order_log = []
    load_before = load_average()
    for r in range(rounds):
        order = [n for n in names if done[n] < caps[n]]
        rng.shuffle(order)
        order_log.append(order)
        for n in order:
            fn, k = variants[n], counts[n]
            if pause_s:
                time.sleep(pause_s)
            if n in handover:
                _block(fn())
            t0 = time.perf_counter()
            for _ in range(k - 1):
                fn()
            _block(fn())
            seconds[n][r] = (time.perf_counter() - t0) / k
            done[n] += 1
    return Timing(reference=reference, seconds=seconds, inner=counts, order=order_log,
                  load_before=load_before, load_after=load_average())


# ----------------------------------------------------------------------------- machine
def load_average() -> Optional[list]:
    """The 1-, 5- and 15-minute load averages, or None where the OS has none."""
    try:
        return [float(x) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What a timing depends on: CPU, cores, OS, Python, jax and its backend and devices,
    XLA_FLAGS, the versions of torch / equinox when they are already imported, and the
    current load average."""
    import jax

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": load_average(),
    }
    for mod in ("torch", "equinox"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    return info


def describe(info: Mapping) -> str:
    """One line for a table's footer, from :func:`machine_info`."""
    load = info.get("load_average")
    return (f"{info['cpu_count']}-core {info['cpu_model']}, jax {info['jax']} "
            f"({info['backend']}), load average {_fmt_load(load)}")


# ----------------------------------------------------------------------------- files
# One implementation for every script: _common/output.py (re-exported here).
from _common.output import output_path, repo_root, write_json  # noqa: E402
