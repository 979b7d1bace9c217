"""``experiments/train.py``'s configuration: per-dataset defaults and option resolution.

:func:`resolve` turns the parsed command line into one dict holding every option (the
dataset's defaults filled in; a resumed run takes the saved run's values and refuses given
ones that differ), reading only files; :func:`load_data` loads the data it names and
:func:`build` makes the network, the optimizer and the DP settings
(:func:`jaxmlp.privacy.calibrate_run`). Every refusal is a :class:`_common.cli.UsageError`
naming the flag. ``experiments/dp.py`` reads :data:`DEFAULTS` for its non-private reference.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Optional

import jaxmlp
from jaxmlp import privacy
from jaxmlp import train as train_lib
from jaxmlp.data import datasets, tabular
from jaxmlp.train import checkpoint as ckpt_lib
from jaxmlp.train import ensemble as ensemble_lib

from _common import cli, kfac_flags, output
from _common.cli import UsageError

__all__ = ["ARCH_KEYS", "DATA_DEFAULTS", "DEFAULTS", "DP_DEFAULTS", "DP_KEYS", "ENSEMBLE_DEFAULTS",
           "RUN_KEYS", "build", "check_dp_options", "explicit", "load_data", "parse_hidden",
           "resolve", "steps_per_epoch"]

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
#: ``--dp`` defaults for your own table: digits' recipe with q = 0.5 (two steps an epoch).
DATA_DP_DEFAULTS = dict(hidden=[32], activation="tanh", optimizer="momentum", lr=0.25, epochs=20,
                        sampling_rate=0.5, clip=[1.0])
COMMON_DEFAULTS = dict(schedule="constant", weight_decay=0.0, seed=0)
#: What a run writes into its --out folder: one of them there means an earlier run.
RUN_FILES = ("results.json", "model.npz", "learning_curves.svg", "checkpoints", "laplace.npz",
             "laplace_reliability.svg")
#: What a resumed run removes before it trains: it rewrites them from its new parameters.
STALE_ON_RESUME = ("model.npz", "laplace.npz", "laplace_reliability.svg")
#: Options that fix the architecture, and those that fix the rest of the training run.
ARCH_KEYS = ("dataset", "hidden", "activation")
RUN_KEYS = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "seed")
#: The private-training options (saved with a checkpoint; a resumed run keeps them).
DP_KEYS = ("dp", "target_epsilon", "noise_multiplier", "delta", "clip", "expected_batch_size",
           "sampling_rate", "per_layer_clipping", "accountant")
DP_OPTION_DEFAULTS = dict(delta=1e-5, accountant="pld", per_layer_clipping=False)
#: Ensemble options (``--ensemble K``) and their values for a single network; part of a run.
ENSEMBLE_DEFAULTS = {"ensemble": None, "member_lrs": None, "shared_batches": False}


def parse_hidden(values) -> list[int]:
    """Hidden layer sizes from ``--hidden`` words (``128 64`` or ``128,64``); UsageError
    naming ``--hidden`` unless every one is a positive integer."""
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


def explicit(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line (None means not given)."""
    out = {k: getattr(args, k) for k in ARCH_KEYS + RUN_KEYS + ("epochs",) + DP_KEYS}
    if out["hidden"] is not None:
        out["hidden"] = parse_hidden(out["hidden"])
    out["ensemble"] = args.ensemble
    out["member_lrs"] = None if args.member_lrs is None else cli.parse_floats("--member-lrs",
                                                                            args.member_lrs)
    out["shared_batches"] = True if args.shared_batches else None
    return {k: v for k, v in out.items() if v is not None}


def check_dp_options(given: dict) -> None:
    """Refuses (UsageError) the ``--dp`` options out of range or in impossible combinations,
    before anything is loaded; ``given`` holds the options given (:func:`explicit`)."""
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


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], Optional[dict]]:
    """The full configuration of a run (a dict of every option, defaults filled in), and the
    metadata of the checkpoint to resume (None for a new run; with ``"epoch"``,
    ``"checkpoint_dir"`` and ``"skipped"`` [(epoch, reason)] of checkpoints whose metadata
    was damaged). Only files are read (no data, no arrays). UsageError naming the flag."""
    given = explicit(args)
    resume_meta = None
    if args.resume is not None:
        if args.data is not None:
            raise UsageError("--data: a resumed run reads the data of the saved run; leave it out.")
        args.resume = output.user_path(args.resume)
        cdir = ckpt_lib.checkpoint_dir(args.resume)
        if not os.path.isdir(args.resume):
            raise UsageError(f"--resume: {args.resume!r} is not a directory.")
        if ckpt_lib.latest_epoch(cdir) is None:  # the listing only: no orbax import
            raise UsageError(
                f"--resume: no checkpoint in {args.resume!r} (expected <epoch>/ folders written "
                "with --checkpoint-every N, in DIR or DIR/checkpoints).")
        try:
            found = ckpt_lib.newest_readable_meta(cdir)
        except ckpt_lib.CheckpointError as e:
            raise cli.checkpoint_error(e, "--resume", cdir) from None
        resume_meta = {**found.meta, "epoch": found.epoch, "checkpoint_dir": cdir,
                       "skipped": found.skipped}
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
            if (given["epochs"] > saved["epochs"] and cfg.get("schedule", "constant") != "constant"
                    and cfg.get("total_steps") is not None):
                raise UsageError(
                    f"--epochs: the run's {cfg['schedule']} schedule ends at its first run's "
                    f"{saved['epochs']} epochs ({cfg['total_steps']} steps), after which the "
                    f"learning rate is 0: epochs past it would train nothing; got --epochs "
                    f"{given['epochs']}. Start a new run with --epochs {given['epochs']}, or "
                    f"resume up to {saved['epochs']}.")
            cfg["epochs"] = given["epochs"]
        cfg["data"] = saved.get("data")
        cfg["saved_placement"] = saved.get("placement")  # compared when placed (guards.place)
    elif args.data is not None:
        if args.target is None:
            raise UsageError("--target: --data needs the target column(s), e.g. --target price.")
        if "dataset" in given:
            raise UsageError("--data: give either --dataset or --data, not both.")
        name = os.path.splitext(os.path.basename(args.data))[0]
        cfg = _new_run(name, given, DATA_DEFAULTS, DATA_DP_DEFAULTS)
        cfg["data"] = {"file": output.user_path(args.data), "target": args.target,
                       "task": args.task, "impute": args.impute}
    else:
        dataset = given.get("dataset", "digits")
        if dataset not in datasets.DATASETS:
            raise UsageError(f"--dataset: expected one of {list(datasets.DATASETS)}, got {dataset!r}.")
        cfg = _new_run(dataset, given, DEFAULTS[dataset], DP_DEFAULTS[dataset])
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
    cfg["out"], cfg["replace"] = _out_folder(args, cfg, resume_meta)
    cfg["checkpoint_every"] = every
    cfg["data_parallel"] = bool(args.data_parallel)
    kfac_flags.resolve(args, cfg, lr_given="lr" in given or resume_meta is not None,
                       saved_config=None if resume_meta is None else resume_meta.get("config", {}))
    return cfg, resume_meta


def _new_run(name: str, given: dict, defaults: dict, dp_defaults: dict) -> dict:
    """The configuration of a new run on ``name`` (a bundled dataset or a table): its
    defaults, or with ``--dp`` its private-training defaults, under the given options."""
    dp_given = sorted(k for k in DP_KEYS if k in given and k != "dp")
    if not given.get("dp") and dp_given:
        raise UsageError(f"--{dp_given[0].replace('_', '-')}: a private-training option; "
                         "add --dp.")
    if given.get("dp"):
        check_dp_options(given)
        defaults = {**defaults, **DP_OPTION_DEFAULTS, **dp_defaults, "batch_size": None}
        for a, b in (("sampling_rate", "expected_batch_size"),
                     ("expected_batch_size", "sampling_rate")):
            if a in given:
                defaults.pop(b, None)
        cfg = {"dataset": name, **COMMON_DEFAULTS, **defaults, **given}
        for k in DP_KEYS:
            cfg.setdefault(k, None)
    else:
        cfg = {"dataset": name, **COMMON_DEFAULTS, **defaults, **given}
        cfg.update({k: None for k in DP_KEYS})
        cfg["dp"] = False
    cfg["noise_calibrated"] = False
    for k, v in ENSEMBLE_DEFAULTS.items():
        cfg.setdefault(k, v)
    cfg["total_steps"] = None
    return cfg


def _out_folder(args, cfg: dict, resume_meta: Optional[dict]) -> tuple[str, list]:
    """(the run's output folder, the earlier run's files that ``--overwrite`` replaces).

    No --out: a new ``runs/train-<name>-<time>/`` (a resumed run: the resumed folder);
    ``--results``: ``results/train/<dataset>`` (bundled datasets only); relative paths from
    the caller's folder. A folder holding an earlier run (:data:`RUN_FILES`) is refused
    unless it is the one resumed, or ``--overwrite`` is given."""
    if getattr(args, "results", False):
        if args.out is not None or cfg.get("data"):
            raise UsageError("--results: writes the committed results/train/<dataset> of a "
                             "bundled --dataset; not with --out or --data.")
        out = str(output.output_path(os.path.join("results", "train", cfg["dataset"])))
    elif args.out is not None:
        out = output.user_path(args.out)
    elif resume_meta is not None:
        cdir = resume_meta["checkpoint_dir"]
        out = os.path.dirname(cdir) if os.path.basename(cdir) == "checkpoints" else cdir
    else:
        out = str(output.new_run_dir(f"train-{cfg['dataset']}"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out: {out!r} exists and is not a directory.")
    for f in RUN_FILES:  # a result file that is a folder can be neither kept nor replaced
        path = os.path.join(out, f)
        if f != "checkpoints" and os.path.isdir(path):
            raise UsageError(f"--out: {path!r} exists and is not a file.")
    earlier = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    resumed = resume_meta is not None and os.path.abspath(
        ckpt_lib.checkpoint_dir(out)) == os.path.abspath(resume_meta["checkpoint_dir"])
    if earlier and not resumed and not getattr(args, "overwrite", False):
        raise UsageError(
            f"--out: {out} holds an earlier run ({', '.join(earlier)}); a new run never writes "
            "beside one. Leave --out out (a new runs/ folder), choose another --out, "
            + (f"continue it with --resume {out}, " if "checkpoints" in earlier else "")
            + "or add --overwrite to replace it.")
    if resumed:  # the resumed run's model (and posterior) is rewritten, never kept stale
        earlier = [f for f in earlier if f in STALE_ON_RESUME]
    return out, earlier


def load_data(cfg: dict):
    """(Dataset, jaxmlp.data.tabular.Preprocessing) of a bundled dataset or of ``--data FILE``
    (X (n[0], m) and Y (n[L], m) of each split; the preprocessing predict.py re-applies)."""
    if not cfg.get("data"):
        return (datasets.load(cfg["dataset"], seed=cfg["seed"]),
                tabular.bundled_preprocessing(cfg["dataset"], seed=cfg["seed"]))
    d = cfg["data"]
    try:
        data, prep = tabular.load_table(d["file"], d["target"], d["task"], impute=d["impute"],
                                        seed=cfg["seed"], categorical=d.get("categorical"),
                                        exclude=d.get("exclude"))
    except tabular.MissingValuesError as e:
        advice = ("drop those rows: a missing target is never imputed" if e.kind == "target"
                  else "fill them with --impute mean or --impute median")
        raise UsageError(f"--data: {e.listing}; {advice}.") from None
    except (TypeError, ValueError) as e:  # "data: ...", "target: ..." -> "--data: ..."
        if str(e).startswith("exclude: "):  # the library's exclude= is the CLI's --id
            raise UsageError("--id: " + str(e).partition(": ")[2]) from None
        raise cli.flag_error(e, ("data", "target", "task", "impute", "categorical"),
                             "data") from None
    if prep.task_reason is not None:
        print(f"train.py: task inferred: {prep.task} ({prep.task_reason}; --task to choose "
              "another)")
    return data, prep


def build(cfg: dict, data) -> tuple:
    """The network, optimizer and DP settings (None unless ``--dp``) of a resolved
    configuration on its data; fills in ``cfg``'s ``total_steps`` (the first run's: the
    schedule's and the privacy accounting's horizon) and, with ``--dp``, ``sampling_rate``,
    ``expected_batch_size``, ``clip_thresholds`` and a calibrated ``noise_multiplier``.
    UsageError naming the flag when impossible."""
    m_train = data.X_train.shape[1]
    dp = None
    if cfg["dp"]:
        L, n_clip = len(cfg["hidden"]) + 1, len(cfg["clip"])
        if cfg["per_layer_clipping"] and n_clip not in (1, L):
            raise UsageError(f"--clip: expected 1 or {L} thresholds (one per layer of {L} "
                             f"layers) with --per-layer-clipping, got {n_clip}.")
        if not cfg["per_layer_clipping"] and n_clip != 1:
            raise UsageError(f"--clip: expected one threshold (or add --per-layer-clipping), "
                             f"got {n_clip}.")
        try:
            dp = privacy.calibrate_run(
                num_examples=m_train, clip=cfg["clip"], num_layers=L,
                per_layer_clipping=bool(cfg["per_layer_clipping"]),
                sampling_rate=cfg["sampling_rate"],
                expected_batch_size=(cfg["expected_batch_size"] if cfg["sampling_rate"] is None
                                     else None),
                noise_multiplier=cfg["noise_multiplier"], target_epsilon=cfg["target_epsilon"],
                delta=cfg["delta"], accountant=cfg["accountant"], epochs=cfg["epochs"],
                steps=cfg["total_steps"], data_name=cfg["dataset"])
        except (TypeError, ValueError) as e:
            raise cli.flag_error(e) from None
        if cfg["noise_multiplier"] is None:
            cfg["noise_multiplier"], cfg["noise_calibrated"] = dp.noise_multiplier, True
        cfg["sampling_rate"] = dp.sampling_rate
        cfg["expected_batch_size"] = dp.sampling_rate * m_train
        cfg["clip_thresholds"] = (list(dp.l2_norm_clip) if isinstance(dp.l2_norm_clip, tuple)
                                  else [dp.l2_norm_clip])
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
        cfg["total_steps"] = cfg["epochs"] * steps_per_epoch(cfg, dp, m_train)
    make = (train_lib.make_optimizer
            if cfg.get("ensemble") is None or cfg["optimizer"] == "kfac"  # one rate for all
            else ensemble_lib.make_ensemble_optimizer)
    kw = kfac_flags.optimizer_kwargs(cfg) if cfg["optimizer"] == "kfac" else {}
    lr = None if kw.get("kfac_adaptive") else cfg["lr"]
    optimizer = make(cfg["optimizer"], lr, schedule=cfg["schedule"],
                     total_steps=None if cfg["schedule"] == "constant" else cfg["total_steps"],
                     weight_decay=cfg["weight_decay"], **kw)
    return net, optimizer, dp


def steps_per_epoch(cfg: dict, dp, m_train: int) -> int:
    """Optimizer steps per epoch: ``dp.steps_per_epoch`` (round(1/q)) for a private run, else
    m_train // batch_size (the remainder of the split is skipped each epoch)."""
    return dp.steps_per_epoch if dp is not None else m_train // cfg["batch_size"]
