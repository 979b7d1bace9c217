"""Time of one epoch shuffle: jaxmlp.shuffle.permutation vs jax.random.permutation.

    python experiments/shuffle_speed.py [--samples 100] [--calls-per-sample 10]

For m in 128, 512, 1438 (the digits train split), 2048 (the largest m of the one-sort path),
4096, 10,000 and 60,000 (the multi-round path), each variant is jitted, compiled,
then timed interleaved (order rotating each sample) with ``block_until_ready``. Reports the
median microseconds per call (dispatch included: a jitted no-op is timed alongside) and the
ratio jax.random.permutation / jaxmlp, and writes ``results/train/shuffle_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxmlp import shuffle  # noqa: E402

SIZES = (128, 512, 1438, 2048, 4096, 10_000, 60_000)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--calls-per-sample", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "results" / "train" / "shuffle_speed.json"))
    args = p.parse_args(argv)
    if args.samples < 1 or args.calls_per_sample < 1:
        p.error("--samples and --calls-per-sample must be positive")

    key = jax.random.PRNGKey(0)
    variants = {("no-op", 0): jax.jit(lambda k: k + 1)}
    for m in SIZES:
        variants[("jaxmlp", m)] = jax.jit(lambda k, m=m: shuffle.permutation(k, m))
        variants[("jax.random", m)] = jax.jit(lambda k, m=m: jax.random.permutation(k, m))
    for f in variants.values():  # compile
        f(key).block_until_ready()
    names = list(variants)
    times = {n: [] for n in names}
    for i in range(args.samples):
        for n in names[i % len(names):] + names[:i % len(names)]:
            f = variants[n]
            t0 = time.perf_counter()
            for _ in range(args.calls_per_sample):
                f(key).block_until_ready()
            times[n].append((time.perf_counter() - t0) / args.calls_per_sample)
    med = {n: 1e6 * statistics.median(t) for n, t in times.items()}
    load = os.getloadavg()[0]
    rows = []
    print(f"one permutation of m examples, jitted; median us per call of {args.samples} samples x "
          f"{args.calls_per_sample} calls (a jitted no-op: {med[('no-op', 0)]:.1f} us)")
    print(f"{'m':>6}{'jaxmlp us':>12}{'jax.random us':>15}{'jax.random / jaxmlp':>22}  path")
    for m in SIZES:
        a, b = med[("jaxmlp", m)], med[("jax.random", m)]
        path = ("one packed sort" if m <= shuffle.ONE_SORT_MAX else
                f"{shuffle.rounds(m)} packed rounds")
        rows.append({"m": m, "jaxmlp_us": a, "jax_random_us": b, "ratio": b / a, "path": path})
        print(f"{m:>6}{a:>12.1f}{b:>15.1f}{b / a:>22.2f}  {path}")
    print(f"machine: {os.cpu_count()}-core {platform.machine()} CPU, jax {jax.__version__} "
          f"({jax.default_backend()}), load average {load:.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "noop_us": med[("no-op", 0)], "samples": args.samples,
                   "calls_per_sample": args.calls_per_sample, "jax_version": jax.__version__,
                   "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
                   "load_average_1min": load}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
