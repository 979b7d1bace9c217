"""Wall time of the main job, ``bash scripts/run.sh``, next to a scikit-learn process.

    bash scripts/run.sh startup [--samples 5]

Three whole processes are timed from the outside (``time.perf_counter`` around
``subprocess.run``), interleaved with the order rotating each sample:

* ``warm``: ``bash scripts/run.sh --out TMP``: the main job (digits, 60 epochs, progress bar,
  results.json and learning_curves.svg) with the persistent compilation cache in ``.cache/jax``
  already filled (one untimed run fills it first);
* ``cold``: the same with ``JAX_COMPILATION_CACHE_DIR`` pointing at a new empty folder, i.e. the
  first run on a fresh clone after ``scripts/setup.sh`` (every XLA program compiled and written);
* ``sklearn``: ``experiments/_sklearn_mlp.py``: a Python process that trains
  ``MLPClassifier`` on the same split, network (64-128-10, ReLU, softmax), optimizer (Adam
  lr 1e-3, batches of 64) and number of epochs (60), and prints its test accuracy.

Reports medians and the paired median of warm / sklearn per sample; writes
``results/startup.json``. Targets: warm <= sklearn, cold <= 3.5 s.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cli, output

ROOT = Path(__file__).resolve().parents[1]
COLD_TARGET_S = 3.5


def _timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"startup.py: {' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    return dt, proc


PROG = "startup.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=cli.positive_int, default=5,
                   help="timed process starts per command (>= 1)")
    output.add_out_arguments(p, "results/startup.json", what="JSON file")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "startup")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)

    tmp = Path(tempfile.mkdtemp(prefix="jaxmlp-startup-"))
    env = dict(os.environ)
    for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
        env.pop(k, None)  # run.sh's own defaults
    job = ["bash", "scripts/run.sh", "--out", str(tmp / "run"), "--overwrite"]  # the same folder
    sk = [sys.executable, "experiments/_sklearn_mlp.py"]
    runs = {"warm": [], "cold": [], "sklearn": []}
    accuracy = {}
    try:
        _timed(job, env)  # fills .cache/jax (a no-op when it is already filled)
        names = list(runs)
        for i in range(args.samples):
            for name in names[i % 3:] + names[:i % 3]:
                if name == "sklearn":
                    dt, proc = _timed(sk, env)
                    accuracy["sklearn"] = json.loads(proc.stdout.strip().splitlines()[-1])["test_accuracy"]
                else:
                    e = dict(env)
                    if name == "cold":
                        cache = tmp / f"cache{i}"
                        e["JAX_COMPILATION_CACHE_DIR"] = str(cache)
                    dt, _ = _timed(job, e)
                    with open(tmp / "run" / "results.json") as f:
                        accuracy["jaxmlp"] = json.load(f)["final"]["test"]["accuracy"]
                runs[name].append(dt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    paired = statistics.median(w / s for w, s in zip(runs["warm"], runs["sklearn"]))
    load = os.getloadavg()
    print(f"whole-process wall time, median of {args.samples} interleaved samples (s)")
    print(f"{'process':<44}{'median':>8}{'min':>8}{'max':>8}  test accuracy")
    labels = {"warm": "bash scripts/run.sh (warm compilation cache)",
              "cold": "bash scripts/run.sh (empty cache: fresh clone)",
              "sklearn": "scikit-learn MLPClassifier process"}
    for k in ("warm", "cold", "sklearn"):
        acc = accuracy["sklearn" if k == "sklearn" else "jaxmlp"]
        print(f"{labels[k]:<44}{med[k]:>8.2f}{min(runs[k]):>8.2f}{max(runs[k]):>8.2f}  {acc:.4f}")
    print(f"paired median warm / sklearn: {paired:.2f} (target <= 1); cold: {med['cold']:.2f} s "
          f"(target <= {COLD_TARGET_S} s)")
    print(f"machine: {os.cpu_count()}-core {platform.machine()}, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    result = {"runs_seconds": runs, "median_seconds": med, "paired_median_warm_over_sklearn": paired,
              "targets": {"warm_over_sklearn_max": 1.0, "cold_max_seconds": COLD_TARGET_S},
              "targets_met": {"warm": paired <= 1.0, "cold": med["cold"] <= COLD_TARGET_S},
              "test_accuracy": accuracy, "samples": args.samples, "cpu_count": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(),
              "load_average": list(load)}
    output.write_json(os.path.abspath(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
