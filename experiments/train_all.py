"""Train all four bundled datasets on their defaults and print one table against the targets.

    python experiments/train_all.py            # ~1 s of training per dataset on a 2-core CPU

Each dataset runs ``experiments/train.py --dataset NAME`` in a child process (its results.json
and learning_curves.svg go to ``<out>/<NAME>/``, read back here); the table is printed and
written to ``<out>/summary.json``. ``<out>``: a new ``runs/train_all-<time>/`` folder, or
``--out DIR``, or with ``--results`` the committed ``results/train`` (its runs replaced). Exit status 0 when every target holds, 1
otherwise (a failed run's own exit status when one fails).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from _common import benchmarking, cli
from _common import output

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")

#: The issue's targets on the test split: (metric, threshold).
TARGETS = {
    "digits": ("accuracy", 0.97),
    "breast_cancer": ("accuracy", 0.96),
    "multilabel": ("label_accuracy", 0.97),
    "diabetes": ("r2", 0.40),
}


def table(rows: list[dict]) -> str:
    head = (f"{'dataset':<14}{'network':<12}{'metric':<16}{'target':>8}{'train':>9}{'test':>9}"
            f"{'met':>5}{'epochs':>8}{'train s':>9}{'examples/s':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['dataset']:<14}{r['network']:<12}{r['metric']:<16}{r['target']:>8.2f}"
            f"{r['train']:>9.4f}{r['test']:>9.4f}{'yes' if r['met'] else 'NO':>5}{r['epochs']:>8}"
            f"{r['train_seconds']:>9.2f}{r['examples_per_second']:>12,.0f}")
    return "\n".join(lines)


PROG = "train_all.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    output.add_out_arguments(p, "results/train")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0,
                   help="train.py's --seed for every dataset: split, init and shuffles (>= 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        out = benchmarking.output_path(output.resolve_out(args, "train_all"))
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    t0 = time.perf_counter()
    rows = []
    for name, (metric, target) in TARGETS.items():
        argv_ds = ["--dataset", name, "--seed", str(args.seed), "--out", str(out / name)]
        if args.no_progress:
            argv_ds.append("--no-progress")
        if args.results:  # on purpose: the committed runs are replaced
            argv_ds.append("--overwrite")
        status = subprocess.run([sys.executable, TRAIN, *argv_ds]).returncode
        if status != 0:
            print(f"train_all.py: {name} failed with exit status {status}", file=sys.stderr)
            return status
        with open(out / name / "results.json") as f:
            res = json.load(f)
        rows.append({
            "dataset": name,
            "network": "-".join(map(str, res["network"]["sizes"])),
            "metric": metric,
            "target": target,
            "train": res["final"]["train"][metric],
            "test": res["final"]["test"][metric],
            "met": res["final"]["test"][metric] >= target,
            "epochs": res["epochs_done"],
            "train_seconds": res["train_seconds"],
            "examples_per_second": res["examples_per_second"],
            "config": res["config"],
        })
    total = time.perf_counter() - t0
    print()
    print(table(rows))
    info = benchmarking.machine_info()
    print(f"total wall {total:.1f} s (training loops {sum(r['train_seconds'] for r in rows):.1f} s, "
          f"including compilation); {benchmarking.describe(info)}")
    summary = {"rows": rows, "total_wall_seconds": total, "jax": res["jax"],
               "platform": res["platform"], "machine": info,
               "all_targets_met": all(r["met"] for r in rows)}
    path = benchmarking.write_json(out / "summary.json", summary)
    print(f"wrote {path}")
    return 0 if summary["all_targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
