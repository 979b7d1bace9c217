"""Train a jaxmlp network on a bundled real dataset: progress bar, JSON, plots, checkpoints.

    python experiments/train.py                          # digits, its defaults
    python experiments/train.py --dataset diabetes --epochs 100 --lr 3e-3
    python experiments/train.py --dataset digits --checkpoint-every 5 --out runs/d
    python experiments/train.py --resume runs/d          # continue from the newest checkpoint
    python experiments/train.py --data shop.csv --target kind   # your own table (jaxmlp.data.tabular)
    python experiments/train.py --dp --target-epsilon 2  # differentially private (DP-SGD)

Every epoch is ONE compiled call (``jaxmlp.train.step.make_train_epoch``: shuffle, minibatches,
``lax.scan`` of the optax update on the hand-derived gradient). After each epoch the whole
train and test splits are evaluated. Written to ``--out`` (default ``results/train/<dataset>``):

* ``results.json``: configuration, network, per-epoch history, final train/test metrics,
  wall time, examples/s, JAX version, backend and devices;
* ``learning_curves.svg``: cost and metric per epoch, train and test;
* ``checkpoints/<epoch>/`` every ``--checkpoint-every`` epochs and after the last (orbax);
* ``model.npz`` (``jaxmlp.data.export``) when the run completes: params, network and the
  preprocessing that ``experiments/predict.py`` applies to new rows (also in results.json and
  the checkpoints' metadata).

The plot is a small SVG written without matplotlib (``experiments/_plotting.py``), and run as
a script the process ends with ``os._exit`` once every file is written, skipping the
interpreter's teardown of the JAX runtime (~0.3 s).

Exit status: 0 done; 2 bad input or unusable files (message on stderr, nothing trained); 3
the cost became NaN or infinite (message names the epoch and step; the checkpoints written
before are kept).

One run per output folder: ``--out`` is locked (``DIR/.jaxmlp.lock``, ``jaxmlp.train.outdir``)
before anything is written, and a second run on it exits 2 naming the holder's pid; the
folder is checked writable before training, and results.json / learning_curves.svg are
written atomically (temporary file, then rename).

``--dp`` trains with DP-SGD (``jaxmlp.train.loop`` with ``jaxmlp.privacy.DPSGD``): each step's batch is
a Poisson sample (every example independently with probability q = ``--sampling-rate``, or
``--expected-batch-size`` / n), each example's gradient is clipped to ``--clip`` (one threshold,
or one per layer with ``--per-layer-clipping``), Gaussian noise of std sigma C is added and the
sum is divided by q n. sigma is ``--noise-multiplier``, or calibrated so that the whole run spends
exactly ``--target-epsilon`` at ``--delta`` (default 1e-5; it must be below 1/n). An epoch is
round(1/q) steps. The progress bar shows the epsilon spent so far; ``results.json`` has a
``privacy`` block (epsilon, delta, sigma, q, steps, accountant); with a target the run stops
before an epoch that would exceed it (e.g. a resumed run given more ``--epochs``). Without
other options ``--dp`` uses the per-dataset private defaults of ``DP_DEFAULTS``.

``--resume DIR`` (DIR is a run's ``--out`` or its ``checkpoints`` folder) continues the newest
checkpoint: options not given take the saved run's values; given ones must agree with it
(``--epochs`` may be raised to train longer). It reaches bit for bit the parameters of an
uninterrupted run. ``--data-parallel`` splits each minibatch's columns over all devices of
``jaxmlp.parallel.sharding.make_mesh()`` (on CPU, simulate N devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``).

``--ensemble K`` trains K networks at once in one compiled epoch (``jaxmlp.train.ensemble``): member
k has its own initial parameters and shuffle, ``--member-lrs`` gives each its own learning
rate, ``--shared-batches`` gives all the same minibatches. The table reports the members'
mean ± spread and the metrics of their averaged prediction; results.json has an
``ensemble`` section with every member's metrics.

Several processes (``jax.distributed``): run the same command in every process with
``--coordinator HOST:PORT --num-processes N --process-id I`` (or with none of them on a
cluster whose environment ``jax.distributed.initialize()`` detects: SLURM, Open MPI, TPU
pods). Each process holds only its block of the training columns; the minibatches are split
over every device of every process and XLA inserts the reductions. The train split is cut to a
multiple of the total device count (the dropped examples are reported in results.json);
checkpoints are written by all processes together (orbax), and results.json, the plot and
the table by process 0 only. ``scripts/launch_local.sh N [options]`` starts N local processes.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
import _plotting  # noqa: E402  (experiments/, the script's folder; an SVG writer, no matplotlib)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmlp  # noqa: E402
from jaxmlp import train as train_lib  # noqa: E402
from jaxmlp.data import datasets
from jaxmlp.data import export
from jaxmlp import privacy
from jaxmlp.data import tabular
from jaxmlp.train import checkpoint as ckpt_lib  # noqa: E402
from jaxmlp.train import outdir  # noqa: E402
from jaxmlp.parallel import distributed  # noqa: E402
from jaxmlp.train import ensemble as ensemble_lib  # noqa: E402

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED = 0, 2, 3

#: Per-dataset defaults: ``python experiments/train.py --dataset NAME`` alone trains well.
DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(hidden=[128], activation="relu", optimizer="adam", lr=1e-3, epochs=60,
                   batch_size=64),
    "breast_cancer": dict(hidden=[32], activation="relu", optimizer="adam", lr=1e-3, epochs=60,
                          batch_size=32),
    "multilabel": dict(hidden=[128], activation="relu", optimizer="adam", lr=1e-3, epochs=60,
                       batch_size=64),
    "diabetes": dict(hidden=[32], activation="relu", optimizer="adam", lr=1e-3, epochs=60,
                     batch_size=32),
}
#: Defaults for your own table (``--data FILE --target COLUMN``).
DATA_DEFAULTS = dict(hidden=[64], activation="relu", optimizer="adam", lr=1e-3, epochs=60,
                     batch_size=32)
#: Per-dataset defaults with ``--dp``: the points experiments/dp.py's validation split (carved
#: from the train split) chose at epsilon 0.5-2 (digits, breast_cancer, diabetes); multilabel,
#: not tuned, borrows digits' (same inputs and size). Small tanh networks, momentum, large
#: expected batches, 40 steps.
DP_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(hidden=[64], activation="tanh", optimizer="momentum", lr=0.25, epochs=20,
                   expected_batch_size=720, clip=[1.0]),
    "breast_cancer": dict(hidden=[32], activation="tanh", optimizer="momentum", lr=0.25,
                          epochs=20, expected_batch_size=228, clip=[1.0]),
    "multilabel": dict(hidden=[64], activation="tanh", optimizer="momentum", lr=0.25, epochs=20,
                       expected_batch_size=720, clip=[1.0]),
    "diabetes": dict(hidden=[32], activation="tanh", optimizer="momentum", lr=0.05, epochs=40,
                     expected_batch_size=248, clip=[1.0]),
}
COMMON_DEFAULTS = dict(schedule="constant", weight_decay=0.0, seed=0)
#: Options that fix the architecture, and those that fix the rest of the training run.
ARCH_KEYS = ("dataset", "hidden", "activation")
RUN_KEYS = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "seed")
#: The private-training options (saved with a checkpoint; a resumed run keeps them).
DP_KEYS = ("dp", "target_epsilon", "noise_multiplier", "delta", "clip", "expected_batch_size",
           "sampling_rate", "per_layer_clipping", "accountant")
DP_OPTION_DEFAULTS = dict(delta=1e-5, accountant="pld", per_layer_clipping=False)
#: Ensemble options (``--ensemble K``) and their values for a single network; part of a run.
ENSEMBLE_DEFAULTS = {"ensemble": None, "member_lrs": None, "shared_batches": False}


class UsageError(Exception):
    """Bad input: reported on stderr with exit status 2, before any training."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors (unknown flag, not a number) -> exit 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="train.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="exit status: 0 done; 2 bad input (nothing trained); 3 the cost became "
                       "NaN or infinite (the checkpoints written before are kept)")
    p.add_argument("--dataset", help=f"one of {', '.join(datasets.DATASETS)} (default digits)")
    p.add_argument("--data", metavar="FILE", help="your own table instead of --dataset: .csv, "
                   ".parquet or .npz (jaxmlp.data.tabular); needs --target")
    p.add_argument("--target", metavar="COLUMN[,COLUMN...]", help="with --data: the target column(s)")
    p.add_argument("--task", choices=tabular.TASKS, help="with --data: the task (default: "
                   "inferred from the target, and printed)")
    p.add_argument("--impute", choices=("mean", "median"), help="with --data: fill missing "
                   "feature values (default: refuse them)")
    p.add_argument("--hidden", nargs="+", metavar="N",
                   help="hidden layer sizes, e.g. --hidden 128 64 (or 128,64)")
    p.add_argument("--register", metavar="FILE.py", action="append",
                   help="run a Python file that registers activations or costs "
                   "(jaxmlp.register_activation) before anything else; repeatable")
    p.add_argument("--activation", help="hidden activation (default relu); output and cost "
                   "follow the dataset")
    p.add_argument("--optimizer", help=f"one of {', '.join(train_lib.OPTIMIZERS)} (default adam)")
    p.add_argument("--lr", type=float, help="learning rate > 0 (peak value with a schedule)")
    p.add_argument("--schedule", help=f"one of {', '.join(train_lib.SCHEDULES)} (default constant)")
    p.add_argument("--weight-decay", type=float, help="weight decay on W[l] (default 0)")
    p.add_argument("--epochs", type=int, help="number of epochs (passes over the train split)")
    p.add_argument("--batch-size", type=int, help="examples per minibatch, 1..m_train")
    p.add_argument("--seed", type=int, help="seed of the split, the init and the shuffles (default 0)")
    p.add_argument("--out", help="output folder (default results/train/<dataset>)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="save a checkpoint every N epochs and after the last (default 0: none; "
                   "a resumed run keeps the saved run's N)")
    p.add_argument("--resume", metavar="DIR", help="continue from the newest checkpoint in DIR")
    p.add_argument("--data-parallel", action="store_true",
                   help="split minibatch columns over all devices (jaxmlp.parallel.sharding)")
    g = p.add_argument_group("private training (DP-SGD)")
    g.add_argument("--dp", action="store_true", default=None,
                   help="differentially private training: Poisson sampling, clipping, noise")
    g.add_argument("--target-epsilon", type=float, metavar="EPS",
                   help="privacy budget of the whole run: the noise is calibrated to it")
    g.add_argument("--noise-multiplier", type=float, metavar="SIGMA",
                   help="noise std / clip threshold (instead of --target-epsilon)")
    g.add_argument("--delta", type=float, help="delta of (epsilon, delta)-DP (default 1e-5; < 1/n)")
    g.add_argument("--clip", nargs="+", type=float, metavar="C",
                   help="per-example gradient norm bound C (default 1); with "
                        "--per-layer-clipping one C_l per layer, or one C split as C/sqrt(L)")
    g.add_argument("--expected-batch-size", type=int, metavar="B",
                   help="q n, the expected Poisson batch size (default per dataset)")
    g.add_argument("--sampling-rate", type=float, metavar="Q",
                   help="q, each example's probability of joining a step (instead of "
                        "--expected-batch-size)")
    g.add_argument("--per-layer-clipping", action="store_true", default=None,
                   help="clip each layer's part of every example's gradient separately")
    g.add_argument("--accountant", help="pld (default, tight) or rdp")
    p.add_argument("--ensemble", type=int, metavar="K",
                   help="train K networks at once (jaxmlp.train.ensemble; member k: its own init and "
                   "shuffle key); reports the members' mean and spread and the averaged prediction")
    p.add_argument("--member-lrs", nargs="+", metavar="LR",
                   help="one learning rate per ensemble member (K values; implies --ensemble K)")
    p.add_argument("--shared-batches", action="store_true",
                   help="ensemble members draw the same minibatches (one shuffle key)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process run (jax.distributed): process 0's address; with "
                   "--num-processes and --process-id (without them, a cluster's environment "
                   "is detected: SLURM, Open MPI, TPU pods)")
    p.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    p.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="do not write learning_curves.svg")
    return p


# ----------------------------------------------------------------------------- configuration


def _parse_hidden(values: Sequence[str]) -> list[int]:
    sizes = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                n = int(part)
            except ValueError:
                raise UsageError(f"--hidden: expected positive integers, got {part!r}.") from None
            if n < 1:
                raise UsageError(f"--hidden: expected positive integers, got {n}.")
            sizes.append(n)
    if not sizes:
        raise UsageError("--hidden: expected at least one positive integer.")
    return sizes


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line (None means not given)."""
    out = {k: getattr(args, k) for k in ARCH_KEYS + RUN_KEYS + ("epochs",) + DP_KEYS}
    if out["hidden"] is not None:
        out["hidden"] = _parse_hidden(out["hidden"])
    out["ensemble"] = args.ensemble
    out["member_lrs"] = None if args.member_lrs is None else _parse_floats("--member-lrs",
                                                                            args.member_lrs)
    out["shared_batches"] = True if args.shared_batches else None
    return {k: v for k, v in out.items() if v is not None}


def run_registrations(files: Sequence[str]) -> None:
    """Runs each ``--register`` file (which calls jaxmlp.register_activation / register_cost)."""
    import _register

    try:
        _register.run_registrations(files)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_dp_options(given: dict) -> None:
    """The option combinations of --dp that are refused before anything is loaded."""
    if ("target_epsilon" in given) == ("noise_multiplier" in given):
        raise UsageError("--dp: give exactly one of --target-epsilon (the noise is calibrated "
                         "to it) and --noise-multiplier.")
    if "expected_batch_size" in given and "sampling_rate" in given:
        raise UsageError("--expected-batch-size: give it or --sampling-rate, not both.")
    if "batch_size" in given:
        raise UsageError("--batch-size: not with --dp, whose batches are Poisson samples; use "
                         "--expected-batch-size or --sampling-rate.")
    checks = {"target_epsilon": (0, math.inf, "a finite number > 0"),
              "noise_multiplier": (0, math.inf, "a finite number > 0"),
              "delta": (0, 1, "a number in (0, 1)"),
              "sampling_rate": (0, 1, "a number in (0, 1]")}
    for k, (lo, hi, what) in checks.items():
        v = given.get(k)
        if v is None:
            continue
        ok = math.isfinite(v) and lo < v and (v <= hi if k == "sampling_rate" else v < hi)
        if not ok:
            raise UsageError(f"--{k.replace('_', '-')}: expected {what}, got {v}.")
    for c in given.get("clip") or []:
        if not (math.isfinite(c) and c > 0):
            raise UsageError(f"--clip: expected finite thresholds > 0, got {c}.")
    if given.get("expected_batch_size") is not None and given["expected_batch_size"] < 1:
        raise UsageError(f"--expected-batch-size: expected a positive integer, got "
                         f"{given['expected_batch_size']}.")
    if given.get("accountant") is not None and given["accountant"] not in ("pld", "rdp"):
        raise UsageError(f"--accountant: expected one of ['pld', 'rdp'], got {given['accountant']!r}.")


def _parse_floats(flag: str, values: Sequence[str]) -> list[float]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(float(part))
                except ValueError:
                    raise UsageError(f"{flag}: expected numbers, got {part.strip()!r}.") from None
    if not out:
        raise UsageError(f"{flag}: expected at least one number.")
    return out


def _checkpoint_dir(path: str) -> str:
    """``DIR/checkpoints`` when DIR is a run's output folder, else DIR itself."""
    sub = os.path.join(path, "checkpoints")
    return sub if os.path.isdir(sub) else path


def _newest_readable_meta(cdir: str) -> dict:
    """The verified metadata of the newest checkpoint whose metadata is intact, with the
    checkpoints skipped on the way in ``"skipped"`` [(epoch, reason)]; UsageError if none."""
    skipped = []
    try:
        with ckpt_lib.Checkpoints(cdir) as store:
            for epoch in reversed(store.epochs()):
                try:
                    meta = store.meta(epoch)
                except ckpt_lib.CheckpointError as e:
                    skipped.append((epoch, str(e)))
                    continue
                return {**meta, "checkpoint_dir": cdir, "skipped": skipped}
    except ckpt_lib.CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    lines = "".join(f"\n  epoch {e}: {why}" for e, why in skipped)
    raise UsageError(f"--resume: no intact checkpoint in {cdir}:{lines}")


def _set_aside_damaged(cdir: str, skipped: list) -> None:
    """Renames damaged checkpoints ``cdir/<epoch>`` to ``<epoch>.damaged`` (kept for
    inspection, ignored by orbax) so that the resumed run can write those epochs again."""
    for epoch, _ in skipped:
        src = os.path.join(cdir, str(epoch))
        if os.path.isdir(src):
            dst, n = src + ".damaged", 1
            while os.path.exists(dst):
                n += 1
                dst = f"{src}.damaged{n}"
            os.rename(src, dst)
            print(f"train.py: moved the damaged checkpoint of epoch {epoch} to {dst}",
                  file=sys.stderr)


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], Optional[dict]]:
    """The full configuration, and the checkpoint metadata when resuming. UsageError if bad."""
    given = _explicit(args)
    resume_meta = None
    if args.resume is not None:
        if args.data is not None:
            raise UsageError("--data: a resumed run reads the data of the saved run; leave it out.")
        cdir = _checkpoint_dir(args.resume)
        if not os.path.isdir(args.resume):
            raise UsageError(f"--resume: {args.resume!r} is not a directory.")
        epoch = ckpt_lib.latest_epoch(cdir)
        if epoch is None:
            raise UsageError(
                f"--resume: no checkpoint in {args.resume!r} (expected <epoch>/ folders written "
                "with --checkpoint-every N, in DIR or DIR/checkpoints).")
        resume_meta = _newest_readable_meta(cdir)
        epoch = resume_meta["epoch"]
        saved = resume_meta.get("config", {})
        for k in ARCH_KEYS:
            if k in given and given[k] != saved.get(k):
                raise UsageError(
                    f"--resume: the checkpoint in {cdir} (epoch {epoch}) is of another "
                    f"architecture: --{k.replace('_', '-')} {given[k]} was given, the checkpoint "
                    f"has {saved.get(k)} (network {resume_meta.get('network', {}).get('sizes')}).")
        for k in RUN_KEYS + DP_KEYS:
            if k in given and given[k] != saved.get(k):
                raise UsageError(
                    f"--resume: --{k.replace('_', '-')} {given[k]} differs from the checkpoint's "
                    f"{saved.get(k)}; a resumed run continues the saved one (leave the option out).")
        cfg = {k: saved[k] for k in ARCH_KEYS + RUN_KEYS + ("epochs", "total_steps")}
        cfg.update({k: saved.get(k) for k in DP_KEYS})
        cfg["noise_calibrated"] = saved.get("noise_calibrated", False)
        for k, default in ENSEMBLE_DEFAULTS.items():
            cfg[k] = saved.get(k, default)
            if k in given and given[k] != cfg[k]:
                raise UsageError(f"--resume: --{k.replace('_', '-')} {given[k]} differs from the "
                                 f"checkpoint's {cfg[k]}; a resumed run continues the saved one.")
        if "epochs" in given:
            cfg["epochs"] = given["epochs"]
        cfg["data"] = saved.get("data")
    elif args.data is not None:
        if args.target is None:
            raise UsageError("--target: --data needs the target column(s), e.g. --target price.")
        if "dataset" in given:
            raise UsageError("--data: give either --dataset or --data, not both.")
        name = os.path.splitext(os.path.basename(args.data))[0]
        cfg = {"dataset": name, **COMMON_DEFAULTS, **DATA_DEFAULTS, **ENSEMBLE_DEFAULTS, **given,
               "total_steps": None,
               "data": {"file": os.path.abspath(args.data), "target": args.target,
                        "task": args.task, "impute": args.impute}}
        if any(k in given for k in DP_KEYS):
            raise UsageError("--dp: private training runs on the bundled datasets (--dataset), "
                             "not yet on a --data table.")
        cfg.update({k: None for k in DP_KEYS})
        cfg["dp"], cfg["noise_calibrated"] = False, False
    else:
        dataset = given.get("dataset", "digits")
        if dataset not in datasets.DATASETS:
            raise UsageError(f"--dataset: expected one of {list(datasets.DATASETS)}, got {dataset!r}.")
        dp_given = sorted(k for k in DP_KEYS if k in given and k != "dp")
        if not given.get("dp") and dp_given:
            raise UsageError(f"--{dp_given[0].replace('_', '-')}: a private-training option; "
                             "add --dp.")
        if given.get("dp"):
            _check_dp_options(given)
            defaults = {**DEFAULTS[dataset], **DP_OPTION_DEFAULTS, **DP_DEFAULTS[dataset],
                        "batch_size": None}
            if "sampling_rate" in given:
                defaults.pop("expected_batch_size")
            cfg = {"dataset": dataset, **COMMON_DEFAULTS, **defaults, **given}
            for k in DP_KEYS:
                cfg.setdefault(k, None)
        else:
            cfg = {"dataset": dataset, **COMMON_DEFAULTS, **DEFAULTS[dataset], **given}
            cfg.update({k: None for k in DP_KEYS})
            cfg["dp"] = False
        cfg["noise_calibrated"] = False
        for k, v in ENSEMBLE_DEFAULTS.items():
            cfg.setdefault(k, v)
        cfg["total_steps"] = None
        cfg["data"] = None
    for flag in ("target", "task", "impute"):
        if getattr(args, flag) is not None and args.data is None:
            raise UsageError(f"--{flag}: only with --data FILE.")

    if cfg["optimizer"] not in train_lib.OPTIMIZERS:
        raise UsageError(f"--optimizer: expected one of {list(train_lib.OPTIMIZERS)}, "
                         f"got {cfg['optimizer']!r}.")
    if cfg["schedule"] not in train_lib.SCHEDULES:
        raise UsageError(f"--schedule: expected one of {list(train_lib.SCHEDULES)}, "
                         f"got {cfg['schedule']!r}.")
    if cfg["activation"] not in jaxmlp.ACTIVATIONS:
        raise UsageError(f"--activation: expected one of {sorted(jaxmlp.ACTIVATIONS)}, "
                         f"got {cfg['activation']!r} (add your own with --register FILE.py).")
    if not (math.isfinite(cfg["lr"]) and cfg["lr"] > 0):
        raise UsageError(f"--lr: expected a finite learning rate > 0, got {cfg['lr']}.")
    if not (math.isfinite(cfg["weight_decay"]) and cfg["weight_decay"] >= 0):
        raise UsageError(f"--weight-decay: expected a finite number >= 0, got {cfg['weight_decay']}.")
    if cfg["epochs"] < 1:
        raise UsageError(f"--epochs: expected a positive integer, got {cfg['epochs']}.")
    if cfg["batch_size"] is not None and cfg["batch_size"] < 1:
        raise UsageError(f"--batch-size: expected a positive integer, got {cfg['batch_size']}.")
    if cfg["seed"] < 0:
        raise UsageError(f"--seed: expected a non-negative integer, got {cfg['seed']}.")
    if cfg["member_lrs"] is not None:
        if cfg["ensemble"] is None:
            cfg["ensemble"] = len(cfg["member_lrs"])
        if len(cfg["member_lrs"]) != cfg["ensemble"]:
            raise UsageError(f"--member-lrs: expected {cfg['ensemble']} learning rates (one per "
                             f"member of --ensemble {cfg['ensemble']}), got "
                             f"{len(cfg['member_lrs'])}.")
        if not all(math.isfinite(v) and v > 0 for v in cfg["member_lrs"]):
            raise UsageError(f"--member-lrs: expected finite learning rates > 0, got "
                             f"{cfg['member_lrs']}.")
    if cfg["ensemble"] is not None and cfg["ensemble"] < 1:
        raise UsageError(f"--ensemble: expected the number of members K >= 1, got "
                         f"{cfg['ensemble']}.")
    if cfg["ensemble"] is not None and cfg.get("dp"):
        raise UsageError("--ensemble: not combined with --dp.")
    if cfg["shared_batches"] and cfg["ensemble"] is None:
        raise UsageError("--shared-batches: only with --ensemble K.")
    if cfg["ensemble"] is not None and args.data_parallel:
        raise UsageError("--ensemble: not combined with --data-parallel (the members are "
                         "vmapped; run them on one device set).")
    every = args.checkpoint_every
    if every is None:
        every = (resume_meta or {}).get("config", {}).get("checkpoint_every", 0)
    if cfg["dp"] and args.data_parallel:
        raise UsageError("--data-parallel: not available with --dp (private training runs on "
                         "one device).")
    if every < 0:
        raise UsageError(f"--checkpoint-every: expected an integer >= 0, got {every}.")
    if resume_meta is not None and cfg["epochs"] < resume_meta["epoch"]:
        raise UsageError(f"--epochs: the checkpoint is at epoch {resume_meta['epoch']}, "
                         f"more than --epochs {cfg['epochs']}.")
    if args.out is not None:
        out = args.out
    elif resume_meta is not None and os.path.basename(resume_meta["checkpoint_dir"]) == "checkpoints":
        out = os.path.dirname(resume_meta["checkpoint_dir"])
    else:
        out = str(ROOT / "results" / "train" / cfg["dataset"])
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out: {out!r} exists and is not a directory.")
    cfg["out"] = out
    cfg["checkpoint_every"] = every
    cfg["data_parallel"] = bool(args.data_parallel)
    return cfg, resume_meta


# ----------------------------------------------------------------------------- output


def _jsonable(tree):
    return jax.tree.map(lambda a: np.asarray(a).tolist(), tree)


def _fmt_metrics(ev: dict) -> dict[str, float]:
    return {k: float(v) for k, v in ev.items() if np.ndim(v) == 0}


def write_plot(path: str, history: list[dict], metric: str, title: str) -> None:
    _plotting.write_plot(path, history, metric, title)


def _batch_words(cfg: dict) -> str:
    if cfg.get("dp"):
        return f"DP-SGD, expected batch {cfg['expected_batch_size']:.0f}"
    return f"batch {cfg['batch_size']}"


def _privacy_block(cfg: dict, dp, fr, m_train: int) -> Optional[dict]:
    """What results.json records of a private run (None for a non-private one)."""
    if dp is None:
        return None
    steps = fr.state.epoch * privacy.default_steps_per_epoch(cfg["sampling_rate"])
    eps = privacy.epsilon(noise_multiplier=cfg["noise_multiplier"],
                          sampling_rate=cfg["sampling_rate"], steps=steps, delta=cfg["delta"],
                          accountant=cfg["accountant"])
    return {"epsilon": eps, "delta": cfg["delta"], "noise_multiplier": cfg["noise_multiplier"],
            "noise_calibrated": cfg["noise_calibrated"], "target_epsilon": cfg["target_epsilon"],
            "sampling_rate": cfg["sampling_rate"], "expected_batch_size": cfg["sampling_rate"] * m_train,
            "steps": steps, "steps_per_epoch": privacy.default_steps_per_epoch(cfg["sampling_rate"]),
            "accountant": cfg["accountant"], "clip": cfg["clip_thresholds"],
            "per_layer_clipping": bool(cfg["per_layer_clipping"]),
            "max_batch_size": dp.max_batch_size,
            "overflow_probability_bound": privacy.overflow_probability(
                m_train, cfg["sampling_rate"], dp.max_batch_size, cfg["total_steps"]),
            "overflows": int(sum(h.get("overflow", 0) for h in fr.history)),
            "convention": "sum of clipped per-example gradients of L_i plus N(0, (sigma C)^2 I), "
                          "divided by the expected batch size q n; Poisson sampling; "
                          "add-or-remove-one neighbours"}


def final_table(result: dict) -> str:
    cfg = result["config"]
    final = result["final"]
    cols = list(final["train"])
    lines = [
        f"{cfg['dataset']}: network {'-'.join(map(str, result['network']['sizes']))} "
        f"({cfg['activation']} / {result['network']['activations'][-1]}, "
        f"{result['network']['cost']}), {cfg['optimizer']} lr={cfg['lr']:g}, "
        f"{result['epochs_done']} epochs, {_batch_words(cfg)}, seed {cfg['seed']}",
        "split   " + "".join(f"{c:>16}" for c in cols),
    ]
    ens = result.get("ensemble")
    if ens is None:
        for split in ("train", "test"):
            lines.append(f"{split:<8}" + "".join(f"{final[split][c]:>16.4f}" for c in cols))
    else:
        lines[0] += f", ensemble of K = {ens['K']}" + (
            f" (lrs {', '.join(f'{v:g}' for v in ens['member_lrs'])})" if ens["member_lrs"] else "")
        for split in ("train", "test"):
            lines.append(f"{split:<8}" + "".join(
                f"{final[split][c]:>9.4f} ±{ens['std'][split][c]:<6.4f}" for c in cols)
                + "   (members: mean ± std)")
            avg = ens["averaged_prediction"][split]
            lines.append(f"{'':<8}" + "".join(f"{avg[c]:>16.4f}" for c in cols)
                         + "   (averaged prediction)")
    pr = result.get("privacy")
    if pr:
        lines.append(
            f"privacy: ({pr['epsilon']:.4g}, {pr['delta']:g})-DP by {pr['accountant'].upper()} "
            f"over {pr['steps']} Poisson steps (q = {pr['sampling_rate']:.4g}), noise multiplier "
            f"{pr['noise_multiplier']:.4g}{' (calibrated)' if pr['noise_calibrated'] else ''}, "
            f"clip {pr['clip']}{' per layer' if pr['per_layer_clipping'] else ''}")
    lines.append(
        f"wall {result['wall_seconds']:.1f} s (training loop {result['train_seconds']:.1f} s), "
        f"{result['examples_per_second']:,.0f} {'member-' if result.get('ensemble') else ''}"
        f"examples/s, backend {result['jax']['backend']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- training


def _setup_data_parallel(cfg, data, params, opt_state, key):
    try:
        from jaxmlp.parallel import sharding
    except ImportError as e:
        raise UsageError(f"--data-parallel: needs jaxmlp.parallel.sharding ({e}).") from None
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = sharding.make_mesh()
    try:
        sharding.check_batch_size(mesh, cfg["batch_size"])
    except (TypeError, ValueError) as e:
        raise UsageError(f"--data-parallel: {e}") from None

    def place(A, name):  # columns over the mesh when they split evenly, else whole on every device
        if A.shape[1] % mesh.devices.size == 0:
            return sharding.shard_columns(mesh, A, name=name)
        return sharding.replicate(mesh, A)

    arrays = (place(data.X_train, "X_train"), place(data.Y_train, "Y_train"),
              place(data.X_test, "X_test"), place(data.Y_test, "Y_test"))
    params, opt_state, key = sharding.replicate(mesh, (params, opt_state, key))
    return mesh, NamedSharding(mesh, P(None, "data")), arrays, params, opt_state, key


def load_data(cfg: dict):
    """(Dataset, jaxmlp.data.tabular.Preprocessing) of a bundled dataset or of ``--data FILE``."""
    if not cfg.get("data"):
        return (datasets.load(cfg["dataset"], seed=cfg["seed"]),
                tabular.bundled_preprocessing(cfg["dataset"], seed=cfg["seed"]))
    d = cfg["data"]
    try:
        data, prep = tabular.load_table(d["file"], d["target"], d["task"], impute=d["impute"],
                                        seed=cfg["seed"])
    except (TypeError, ValueError) as e:  # "data: ...", "target: ..." -> "--data: ..."
        arg, _, rest = str(e).partition(": ")
        raise UsageError(f"--{arg}: {rest}" if arg in ("data", "target", "task", "impute")
                         else f"--data: {e}") from None
    if prep.task_reason is not None:
        print(f"train.py: task inferred: {prep.task} ({prep.task_reason}; --task to choose)")
    return data, prep


def _steps_per_epoch(cfg: dict, m_train: int) -> int:
    if cfg["dp"]:
        return privacy.default_steps_per_epoch(cfg["sampling_rate"])
    return m_train // cfg["batch_size"]


def _resolve_dp(cfg: dict, n: int) -> None:
    """q, the clip thresholds and sigma (calibrated once, by the first run) of a --dp run."""
    if cfg.get("sampling_rate") is None:
        b = cfg["expected_batch_size"]
        if b > n:
            raise UsageError(f"--expected-batch-size: expected at most the {n} training examples "
                             f"of {cfg['dataset']}, got {b}.")
        cfg["sampling_rate"] = b / n
    cfg["expected_batch_size"] = cfg["sampling_rate"] * n
    if cfg["delta"] >= 1.0 / n:
        raise UsageError(f"--delta: expected a value below 1/n = {1.0 / n:.3g} ({n} training "
                         f"examples of {cfg['dataset']}), got {cfg['delta']:g}.")
    L = len(cfg["hidden"]) + 1
    clip = list(cfg["clip"])
    if cfg["per_layer_clipping"]:
        if len(clip) == 1:
            clip = [clip[0] / math.sqrt(L)] * L  # the same total sensitivity C
        elif len(clip) != L:
            raise UsageError(f"--clip: expected 1 or {L} thresholds (one per layer of "
                             f"{L} layers) with --per-layer-clipping, got {len(clip)}.")
    elif len(clip) != 1:
        raise UsageError(f"--clip: expected one threshold (or add --per-layer-clipping), got "
                         f"{len(clip)}.")
    cfg["clip_thresholds"] = clip
    if cfg["target_epsilon"] is not None and not cfg["noise_calibrated"]:
        steps = cfg["epochs"] * privacy.default_steps_per_epoch(cfg["sampling_rate"])
        try:
            cfg["noise_multiplier"] = privacy.calibrate_noise(
                target_epsilon=cfg["target_epsilon"], delta=cfg["delta"],
                sampling_rate=cfg["sampling_rate"], steps=steps, accountant=cfg["accountant"])
        except ValueError as e:
            raise UsageError(f"--target-epsilon: {str(e).split(': ', 1)[1]}") from None
        cfg["noise_calibrated"] = True


def _build(cfg: dict, data) -> tuple:
    """The network and optimizer of a resolved configuration (UsageError when impossible)."""
    m_train = data.X_train.shape[1]
    if cfg["dp"]:
        _resolve_dp(cfg, m_train)
    elif cfg["batch_size"] > m_train:
        raise UsageError(f"--batch-size: expected at most the {m_train} training examples of "
                         f"{cfg['dataset']}, got {cfg['batch_size']}.")
    try:
        net = jaxmlp.Network(
            sizes=(data.n_inputs, *cfg["hidden"], data.n_outputs),
            activations=(*([cfg["activation"]] * len(cfg["hidden"])), data.output_activation),
            cost=data.cost)
    except (TypeError, ValueError) as e:
        raise UsageError(f"network: {e}") from None
    if cfg["total_steps"] is None:  # the schedule's horizon is fixed by the first run
        cfg["total_steps"] = cfg["epochs"] * _steps_per_epoch(cfg, m_train)
    make = train_lib.make_optimizer if cfg.get("ensemble") is None else ensemble_lib.make_optimizer
    optimizer = make(cfg["optimizer"], cfg["lr"], schedule=cfg["schedule"],
                     total_steps=cfg["total_steps"], weight_decay=cfg["weight_decay"])
    return net, optimizer


def _restore(resume_meta: dict, network: dict,
             like: train_lib.TrainState) -> tuple[train_lib.TrainState, dict]:
    """The newest checkpoint that verifies (digest of its arrays, epoch and meta), at most
    the one ``resume_meta`` describes, and its metadata; the skipped ones are reported on
    stderr. UsageError when none is intact."""
    if resume_meta.get("network") != network:
        raise UsageError(f"--resume: the checkpoint's network {resume_meta.get('network')} "
                         f"is not the requested {network}.")
    try:
        intact = ckpt_lib.newest_intact(resume_meta["checkpoint_dir"], like,
                                        at_most=resume_meta["epoch"])
    except ckpt_lib.CheckpointError as e:
        if e.skipped is None:
            raise UsageError(f"--resume: {e}") from None
        lines = "".join(f"\n  epoch {ep}: {why}"
                        for ep, why in list(resume_meta["skipped"]) + list(e.skipped))
        raise UsageError(f"--resume: no intact checkpoint in {resume_meta['checkpoint_dir']}:"
                         f"{lines}") from None
    skipped = list(resume_meta["skipped"]) + list(intact.skipped)
    for epoch, why in skipped:
        print(f"train.py: skipped checkpoint of epoch {epoch}: {why}", file=sys.stderr)
    if skipped:
        print(f"train.py: resuming from epoch {intact.state.epoch}, the newest intact "
              "checkpoint", file=sys.stderr)
    return intact.state, {**intact.meta, "checkpoint_dir": resume_meta["checkpoint_dir"],
                          "skipped": skipped}


@jax.jit
def _seed_keys(seed):
    """``jax.random.split(jax.random.PRNGKey(seed))`` as (init_key, key), one compiled program
    (the same values; eagerly it is four programs, each a persistent-cache lookup)."""
    init_key, key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, key


def run(cfg: dict, resume_meta: Optional[dict], progress: bool = True,
        plot: bool = True) -> tuple[int, dict]:
    """Trains with a resolved configuration (``jaxmlp.train.loop``); returns (exit status, results)."""
    t_start = time.perf_counter()
    data, prep = load_data(cfg)
    m_train = data.X_train.shape[1]
    net, optimizer = _build(cfg, data)
    steps_per_epoch = _steps_per_epoch(cfg, m_train)
    init_key, key = _seed_keys(cfg["seed"])
    K = cfg.get("ensemble")
    if K is None:
        params = jaxmlp.init_params(net, init_key, dtype=jnp.float32)
        opt_state = jax.jit(optimizer.init)(params)  # zeros: one program, not one per shape
    else:  # member k: init key member_keys(init_key, K)[k], shuffle key member_keys(key, K)[k]
        params = ensemble_lib.init_ensemble(net, init_key, K, dtype=jnp.float32)
        opt_state = ensemble_lib.init_opt_state(optimizer, params, cfg["member_lrs"])
        if not cfg["shared_batches"]:
            key = ensemble_lib.member_keys(key, K)
    X_tr, Y_tr, X_te, Y_te = (jax.device_put(a) for a in  # no program (jnp.asarray: one per shape)
                              (data.X_train, data.Y_train, data.X_test, data.Y_test))
    batch_sharding, mesh, dropped = None, None, 0
    multi = jax.process_count() > 1
    lead = jax.process_index() == 0  # writes results.json and the plot, prints the table
    if multi:
        if K is not None:
            raise UsageError("--ensemble: not combined with several processes.")
        mesh, batch_sharding, (X_tr, Y_tr, X_te, Y_te), params, opt_state, key, dropped = \
            _setup_processes(cfg, data, params, opt_state, key)
        m_train -= dropped
        steps_per_epoch = m_train // cfg["batch_size"]
    elif cfg["data_parallel"]:
        mesh, batch_sharding, (X_tr, Y_tr, X_te, Y_te), params, opt_state, key = \
            _setup_data_parallel(cfg, data, params, opt_state, key)

    network = {"sizes": list(net.sizes), "activations": list(net.activations), "cost": net.cost}
    state = train_lib.TrainState(params, opt_state, key, 0)
    history: list[dict] = []
    if resume_meta is not None:
        state, resume_meta = _restore(resume_meta, network, state)
        history = list(resume_meta.get("history", []))[:state.epoch]

    config_saved = {k: cfg[k] for k in ARCH_KEYS + RUN_KEYS + ("epochs", "total_steps", "data")
                    + DP_KEYS + ("noise_calibrated",)}
    if K is not None:
        config_saved.update({k: cfg[k] for k in ENSEMBLE_DEFAULTS})
    dp = None
    if cfg["dp"]:
        dp = privacy.DPSGD(l2_norm_clip=cfg["clip_thresholds"] if cfg["per_layer_clipping"]
                           else cfg["clip_thresholds"][0],
                           noise_multiplier=cfg["noise_multiplier"],
                           sampling_rate=cfg["sampling_rate"], delta=cfg["delta"],
                           accountant=cfg["accountant"], target_epsilon=cfg["target_epsilon"],
                           max_batch_size=privacy.padded_batch_size(
                               m_train, cfg["sampling_rate"], cfg["total_steps"]))
    cdir = os.path.join(cfg["out"], "checkpoints")
    if (resume_meta is not None and cfg["checkpoint_every"] > 0
            and os.path.abspath(resume_meta["checkpoint_dir"]) == os.path.abspath(cdir)):
        _set_aside_damaged(cdir, [(e, w) for e, w in resume_meta["skipped"] if e > state.epoch])
    if cfg["checkpoint_every"] > 0 and (ckpt_lib.latest_epoch(cdir) or 0) > state.epoch:
        raise UsageError(
            f"--out: {cdir} already holds checkpoints up to epoch {ckpt_lib.latest_epoch(cdir)}; "
            f"continue them with --resume {cfg['out']}, or choose another --out (nothing is "
            "overwritten).")
    os.makedirs(cfg["out"], exist_ok=True)
    store = ckpt_lib.Checkpoints(cdir) if cfg["checkpoint_every"] > 0 else None
    last_ckpt = [ckpt_lib.latest_epoch(cdir) if store is not None else None]

    def save_checkpoint(st: train_lib.TrainState, row: dict) -> None:
        if store is not None and (st.epoch % cfg["checkpoint_every"] == 0
                                  or st.epoch == cfg["epochs"]):
            store.save(st, {"network": network, "history": history + [row],
                            "preprocessing": prep.to_dict(),
                            "config": {**config_saved,
                                       "checkpoint_every": cfg["checkpoint_every"]}})
            last_ckpt[0] = st.epoch

    t_train = time.perf_counter()
    try:
        fr = jaxmlp.train.loop.fit(
            net, None, optimizer, X_tr, Y_tr, epochs=cfg["epochs"],
            batch_size=cfg["batch_size"], key=None, state=state, history=history, dp=dp,
            eval_sets={"train": (X_tr, Y_tr), "test": (X_te, Y_te)},
            on_epoch_end=lambda st, row: save_checkpoint(st, row) or history.append(row),
            # fit's history is the one reported; the local copy feeds the checkpoints' meta
            progress=progress and lead, progress_desc=cfg["dataset"],
            batch_sharding=batch_sharding,
            ensemble=K, shared_batches=bool(cfg["shared_batches"]))
    finally:
        if store is not None:
            store.close()
    train_seconds = time.perf_counter() - t_train
    history = fr.history
    params = fr.state.params
    message = fr.message
    if fr.status == "diverged":
        kept = (f"the last good checkpoint, epoch {last_ckpt[0]}, is kept in {cdir}"
                if last_ckpt[0] is not None else "no checkpoint was written")
        message = f"{fr.message}; {kept}. Try a smaller --lr (now {cfg['lr']:g})."

    metric = train_lib.metric_name(net)
    ensemble_result = None
    if K is None:
        final = {"train": _fmt_metrics(train_lib.evaluate(net, params, X_tr, Y_tr)),
                 "test": _fmt_metrics(train_lib.evaluate(net, params, X_te, Y_te))}
    else:
        final, ensemble_result = _ensemble_final(net, params, cfg, (X_tr, Y_tr), (X_te, Y_te))
    steady = fr.epoch_seconds[1:] or fr.epoch_seconds
    examples = (steps_per_epoch * (cfg["expected_batch_size"] if dp else cfg["batch_size"])
                * (K or 1))  # member-examples per epoch for an ensemble
    result = {
        "status": fr.status,
        "message": message,
        "config": {**config_saved, "out": _display_path(cfg["out"]),
                   "checkpoint_every": cfg["checkpoint_every"],
                   "data_parallel": cfg["data_parallel"] or multi},
        "network": network,
        "num_params": net.num_params,
        "metric": metric,
        "dataset": {"name": data.name, "m_train": int(m_train), "m_test": int(data.X_test.shape[1]),
                    "n_inputs": data.n_inputs, "n_outputs": data.n_outputs,
                    "target_names": list(data.target_names),
                    "steps_per_epoch": steps_per_epoch,
                    "examples_skipped_per_epoch": 0 if dp else int(m_train - examples)},
        "privacy": _privacy_block(cfg, dp, fr, m_train),
        "resumed_from_epoch": state.epoch if resume_meta is not None else None,
        "epochs_done": fr.state.epoch,
        "history": history,
        "final": final,
        "final_per_label_accuracy": None,
        "ensemble": ensemble_result,
        "wall_seconds": time.perf_counter() - t_start,
        "train_seconds": train_seconds,
        "first_epoch_seconds": fr.epoch_seconds[0] if fr.epoch_seconds else None,
        "examples_per_second": examples / statistics.median(steady) if steady else 0.0,
        "jax": {"version": jax.__version__, "backend": jax.default_backend(),
                "devices": [str(d) for d in (mesh.devices.flat if mesh is not None else jax.devices()[:1])]},
        "platform": {"python": platform.python_version(), "machine": platform.machine(),
                     "cpu_count": os.cpu_count()},
        "final_params_sha256": _params_digest(params),
        "preprocessing": prep.to_dict(),
    }
    if fr.status == "budget":
        print(f"train.py: {message}", file=sys.stderr)
    if metric == "label_accuracy":
        ev = (train_lib.evaluate(net, params, X_te, Y_te) if K is None
              else ensemble_lib.evaluate(net, params, X_te, Y_te)["ensemble"])
        result["final_per_label_accuracy"] = dict(zip(data.target_names,
                                                      np.asarray(ev["per_label_accuracy"]).tolist()))
    result["processes"] = {"count": jax.process_count(),
                           "examples_dropped_to_split_over_devices": int(dropped)}
    if not lead:  # the other processes computed the same numbers; process 0 writes them
        return (EXIT_DIVERGED if fr.status == "diverged" else EXIT_OK), result
    outdir.write_json_atomic(os.path.join(cfg["out"], "results.json"), result, indent=1)
    # what experiments/predict.py needs: params, network, preprocessing (one network: an
    # ensemble's stacked members are in its checkpoints and results.json, not in model.npz)
    if fr.status == "completed" and K is None:
        export.save(os.path.join(cfg["out"], "model.npz"), params, net,
                    metadata={"preprocessing": prep.to_dict(), "dataset": data.name})
    if plot and history:
        write_plot(os.path.join(cfg["out"], "learning_curves.svg"), history, metric,
                   f"{data.name}: {'-'.join(map(str, net.sizes))}, {cfg['optimizer']} "
                   f"lr={cfg['lr']:g}, {_batch_words(cfg)}")
    if fr.status == "diverged":
        print(f"train.py: {message}", file=sys.stderr)
        return EXIT_DIVERGED, result
    print(final_table(result))
    print(f"wrote {os.path.join(cfg['out'], 'results.json')}")
    return EXIT_OK, result


def _ensemble_final(net, params, cfg, train, test) -> tuple[dict, dict]:
    """Members' mean metrics (the ``final`` table) and the ensemble section of results.json."""
    final, out = {}, {"K": cfg["ensemble"], "member_lrs": cfg["member_lrs"],
                      "shared_batches": cfg["shared_batches"], "members": {}, "std": {},
                      "min": {}, "max": {}, "averaged_prediction": {}}
    for split, (Xs, Ys) in (("train", train), ("test", test)):
        ev = ensemble_lib.evaluate(net, params, Xs, Ys)
        members = {k: np.asarray(v, np.float64) for k, v in ev["members"].items()
                   if np.ndim(v) == 1}
        final[split] = {k: float(v.mean()) for k, v in members.items()}
        out["members"][split] = {k: v.tolist() for k, v in members.items()}
        out["std"][split] = {k: float(v.std()) for k, v in members.items()}
        out["min"][split] = {k: float(v.min()) for k, v in members.items()}
        out["max"][split] = {k: float(v.max()) for k, v in members.items()}
        out["averaged_prediction"][split] = _fmt_metrics(ev["ensemble"])
    return final, out


def _display_path(path: str) -> str:
    """``path`` relative to the repository when inside it (results.json stays portable)."""
    full = os.path.abspath(path)
    return os.path.relpath(full, ROOT) if full.startswith(str(ROOT) + os.sep) else full


def _params_digest(params) -> str:
    import hashlib

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.name)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _claim_out(out: str) -> "outdir.FolderLock":
    """Locks --out (UsageError naming the holder if another run has it), then checks that it
    is writable and that results.json can be written there; returns the held lock."""
    lock = outdir.FolderLock(out)
    try:
        lock.acquire()
    except outdir.FolderInUse as e:
        raise UsageError(f"--out: {e}") from None
    except OSError as e:
        raise UsageError(f"--out: cannot use {out!r} as the output folder: "
                         f"{e.strerror or e}.") from None
    try:
        outdir.check_writable(out)
        results = os.path.join(out, "results.json")
        if os.path.exists(results) and not os.path.isfile(results):
            raise UsageError(f"--out: {results!r} exists and is not a file; results.json could "
                             "not be written (remove it or choose another --out).")
    except OSError as e:
        lock.release()
        raise UsageError(f"--out: {out!r} is not writable: {e.strerror or e}.") from None
    except UsageError:
        lock.release()
        raise
    return lock


def _init_processes(args) -> None:
    """Joins jax.distributed when asked (or on a detected cluster), before any device use."""
    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except (TypeError, ValueError) as e:
        msg = str(e)
        for name in ("coordinator", "num_processes", "process_id"):
            if msg.startswith(name + ":"):
                msg = "--" + name.replace("_", "-") + msg[len(name):]
        raise UsageError(msg) from None
    except RuntimeError as e:  # the coordinator is unreachable, or the runtime is already up
        raise UsageError(f"--coordinator: jax.distributed.initialize failed: {e}") from None


def _setup_processes(cfg, data, params, opt_state, key):
    """Multi-process data parallelism: the train split's columns, process i holding block i.

    Every device of every process is on the mesh axis "data"; the global batch must split
    over all of them. The train split is cut to a multiple of the device count (the last
    m_train % D examples are dropped, reported in results.json); the test split is sharded
    the same way when it divides, else held whole by every process (it is only evaluated).
    """
    from jax.sharding import NamedSharding, PartitionSpec as P

    from jaxmlp.parallel import sharding

    mesh = sharding.make_mesh()
    D = mesh.devices.size
    try:
        sharding.check_batch_size(mesh, cfg["batch_size"])
    except ValueError as e:
        raise UsageError(f"--batch-size: with {jax.process_count()} processes: {e}") from None
    m_train = data.X_train.shape[1]
    m_use = m_train - m_train % D
    cols = distributed.process_columns(m_use, cfg["batch_size"])
    X_tr = distributed.global_columns(mesh, data.X_train[:, :m_use][:, cols], name="X_train")
    Y_tr = distributed.global_columns(mesh, data.Y_train[:, :m_use][:, cols], name="Y_train")
    m_test = data.X_test.shape[1]
    if m_test % D == 0:
        tcols = distributed.process_columns(m_test)
        X_te = distributed.global_columns(mesh, data.X_test[:, tcols], name="X_test")
        Y_te = distributed.global_columns(mesh, data.Y_test[:, tcols], name="Y_test")
    else:
        X_te, Y_te = distributed.replicate(mesh, (data.X_test, data.Y_test))
    params, opt_state, key = distributed.replicate(mesh, (params, opt_state, key))
    return (mesh, NamedSharding(mesh, P(None, "data")), (X_tr, Y_tr, X_te, Y_te), params,
            opt_state, key, m_train - m_use)


def train(argv: Optional[Sequence[str]] = None) -> tuple[int, Optional[dict]]:
    """Runs the command line ``argv``; returns (exit status, results dict or None on bad input)."""
    try:
        args = build_parser().parse_args(argv)
        _init_processes(args)
        run_registrations(args.register or [])
        cfg, resume_meta = resolve(args)
        # one run per output folder, before anything is written; with several processes,
        # process 0 holds the lock for all of them (they write into the folder together)
        lock = _claim_out(cfg["out"]) if jax.process_index() == 0 else contextlib.nullcontext()
        with lock:
            return run(cfg, resume_meta, progress=not args.no_progress, plot=not args.no_plot)
    except (UsageError, ckpt_lib.CheckpointError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE, None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    return train(argv)[0]


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # every file is written and closed: skip ~0.3 s of JAX runtime teardown
