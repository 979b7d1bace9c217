"""Train a jaxmlp network on a bundled real dataset: progress bar, JSON, plots, checkpoints.

    python experiments/train.py                          # digits, its defaults
    python experiments/train.py --dataset diabetes --epochs 100 --lr 3e-3
    python experiments/train.py --dataset digits --checkpoint-every 5 --out my_run
    python experiments/train.py --resume my_run          # continue from the newest checkpoint
    python experiments/train.py --data shop.csv --target kind   # your own table (jaxmlp.data.tabular)
    python experiments/train.py --dp --target-epsilon 2  # differentially private (DP-SGD)

Parse -> resolve the configuration (``_common/train_config.py``: per-dataset defaults, a
resumed run's saved options) -> ``jaxmlp.fit`` (every epoch ONE compiled call; the train
and test splits evaluated after each) -> report from its ``FitResult``. Written to ``--out``
(relative to the folder you run from; default a new ``runs/train-<dataset>-<time>/``, ignored
by git; ``--results``: the committed ``results/train/<dataset>``; a folder holding an earlier
run is refused unless resumed or ``--overwrite``); the paths are printed at the end:

* ``results.json``: configuration, network, per-epoch history, final train/test metrics,
  wall time, examples/s, JAX version, backend and devices; ``learning_curves.svg``;
* ``checkpoints/<epoch>/`` every ``--checkpoint-every`` epochs and after the last (orbax);
* ``model.npz`` (``jaxmlp.data.export``; an ensemble's K members) when the run completes:
  params, network, preprocessing (``predict.py``, ``load_model``); ``--laplace``: ``laplace.npz``.

Exit status: 0 done; 2 bad input or unusable files (message on stderr, nothing trained); 3
the cost became NaN or infinite (the epoch and step named; earlier checkpoints kept); 5 a
file of the run could not be written (e.g. a full disk; checkpoints kept); 130 interrupted
(Ctrl-C; 143 for SIGTERM: one line saying how to resume; the checkpoints written are kept). One
run per output folder: ``--out`` is locked (``DIR/.jaxmlp.lock``) and checked writable
before training. Run as a script the process ends with ``os._exit`` once every file is
written (skipping ~0.3 s of JAX teardown).

``--dp``: DP-SGD with Poisson batches (q = ``--sampling-rate`` or ``--expected-batch-size``
/ n), clipping to ``--clip`` (``--per-layer-clipping``) and noise sigma C; sigma is
``--noise-multiplier`` or calibrated to spend exactly ``--target-epsilon`` at ``--delta``
(``jaxmlp.privacy.calibrate_run``); results.json has a ``privacy`` block; with a target the
run stops before an epoch that would exceed it. ``--resume DIR`` continues the newest intact
checkpoint (damaged ones skipped and moved aside; given options must agree with the saved
ones, ``--epochs`` may grow, not past a decaying schedule's horizon) bit for bit. ``--data-parallel`` splits minibatch columns over
all devices (``jaxmlp.parallel.placement``). ``--ensemble K`` trains K networks
in one compiled epoch (``--member-lrs``, ``--shared-batches``). Several processes: the same
command with ``--coordinator HOST:PORT --num-processes N --process-id I`` in each (or none
on a detected cluster; ``scripts/launch_local.sh N``); process 0 writes the files. Before
training, every process compares its resolved options and data (the ``--data`` file's
sha256) with process 0's and learns whether process 0 got the ``--out`` lock: any
difference or refusal stops every process with exit 2 and the same message.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from jaxmlp import privacy
from jaxmlp import train as train_lib
from jaxmlp.data import datasets, tabular
from jaxmlp.train import checkpoint as ckpt_lib
from jaxmlp.train import ensemble as ensemble_lib

from _common import cli, guards, kfac_flags, laplace_report, output, plotting, train_config, train_report
from _common.cli import EXIT_OK, EXIT_USAGE, UsageError
from _common.train_config import ARCH_KEYS, DP_KEYS, ENSEMBLE_DEFAULTS, RUN_KEYS

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="train.py", description=__doc__.split("\n\n")[0],
                epilog="exit status: 0 done; 2 bad input (nothing trained); 3 the cost became "
                       "NaN or infinite (the checkpoints written before are kept); 5 a file "
                       "could not be written; 130 interrupted (Ctrl-C; 143 SIGTERM; resume "
                       "with --resume)")
    p.add_argument("--dataset", help=f"one of {', '.join(datasets.DATASETS)} (default digits)")
    p.add_argument("--data", metavar="FILE", help="your own table instead of --dataset: .csv, "
                   ".parquet or .npz (jaxmlp.data.tabular); needs --target")
    p.add_argument("--target", metavar="COLUMN[,COLUMN...]", help="with --data: the target column(s)")
    p.add_argument("--task", choices=tabular.TASKS, help="with --data: the task (default: "
                   "inferred from the target, and printed)")
    p.add_argument("--impute", choices=("mean", "median"), help="with --data: fill missing "
                   "feature values (default: refuse them)")
    p.add_argument("--hidden", nargs="+", metavar="N",
                   help="hidden layer sizes, e.g. --hidden 128 64 (or 128,64) (default: 128 "
                   "digits/multilabel, 32 breast_cancer/diabetes, 64 --data; --dp: 64/32/32)")
    p.add_argument("--register", metavar="FILE.py", action="append",
                   help="run a Python file that registers activations (jaxmlp.register_activation"
                   "; select one with --activation) before anything else; repeatable")
    p.add_argument("--activation", help="hidden activation (default relu); output and cost "
                   "follow the dataset (a registered cost is for jaxmlp.fit, not train.py)")
    p.add_argument("--optimizer", help=f"one of {', '.join(train_lib.OPTIMIZERS)} (default adam)")
    p.add_argument("--lr", type=float, help="learning rate > 0, peak value with a schedule "
                   "(default 1e-3; --dp: 0.25, diabetes 0.05)")
    p.add_argument("--schedule", help=f"one of {', '.join(train_lib.SCHEDULES)} (default constant)")
    p.add_argument("--weight-decay", type=float, help="weight decay on W[l] (default 0)")
    p.add_argument("--epochs", type=int, help="number of epochs (passes over the train split) "
                   "(default 60; --dp: 20, diabetes 40)")
    p.add_argument("--batch-size", type=int, help="examples per minibatch, 1..m_train (default "
                   "64 digits/multilabel, 32 otherwise; --dp: Poisson batches instead)")
    p.add_argument("--seed", type=int, help="seed of the split, the init and the shuffles (default 0)")
    p.add_argument("--out", help="output folder, from the folder you run in (default: a new "
                   "runs/train-<dataset>-<time>/, ignored by git)")
    p.add_argument("--results", action="store_true", help="write the committed "
                   "results/train/<dataset> (bundled datasets; replaces what is there)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out "
                   "(default: refuse a folder that holds one)")
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
                   help="q n, the expected Poisson batch size (default 720 digits/multilabel, "
                        "228 breast_cancer, 248 diabetes; --data: q = 0.5)")
    g.add_argument("--sampling-rate", type=float, metavar="Q",
                   help="q, each example's probability of joining a step (instead of "
                        "--expected-batch-size)")
    g.add_argument("--per-layer-clipping", action="store_true", default=None,
                   help="clip each layer's part of every example's gradient separately")
    g.add_argument("--accountant", help="pld (tight) or rdp (default pld)")
    p.add_argument("--ensemble", type=int, metavar="K", help="train K networks at once, each "
                   "its own init and shuffle (default: one network; jaxmlp.train.ensemble)")
    p.add_argument("--member-lrs", nargs="+", metavar="LR",
                   help="one learning rate per ensemble member (K values; implies --ensemble K)")
    p.add_argument("--shared-batches", action="store_true",
                   help="ensemble members draw the same minibatches (one shuffle key)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="several processes: process 0's "
                   "address, with --num-processes, --process-id (default: a detected cluster's)")
    p.add_argument("--num-processes", type=int, metavar="N", help="number of processes "
                   "(default: one, or the detected cluster's)")
    p.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="do not write learning_curves.svg")
    kfac_flags.add_arguments(p)
    guards.add_arguments(p)  # --categorical, --init-timeout
    return p


@jax.jit
def _seed_keys(seed):
    """``jax.random.split(jax.random.PRNGKey(seed))`` as (init_key, key), one compiled program."""
    init_key, key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, key


def _template(cfg, optimizer, params, key) -> train_lib.TrainState:
    """The state a fresh run starts from: what a checkpoint is restored into (shapes, dtypes,
    placement); ``jaxmlp.fit`` builds the same from (params, key) for a fresh run."""
    K = cfg["ensemble"]
    if K is None:
        return train_lib.TrainState(params, jax.jit(optimizer.init)(params), key, 0)
    return train_lib.TrainState(
        params, ensemble_lib.init_opt_state(optimizer, params, cfg["member_lrs"]),
        key if cfg["shared_batches"] else ensemble_lib.member_keys(key, K), 0)


def _restore(resume_meta: dict, network: dict, like) -> ckpt_lib.Intact:
    """The newest checkpoint that verifies (at most the one ``resume_meta`` read); the
    skipped ones are reported on stderr. UsageError when none is intact."""
    if resume_meta.get("network") != network:
        raise UsageError(f"--resume: the checkpoint's network {resume_meta.get('network')} "
                         f"is not the requested {network}.")
    return guards.resume_reporting(resume_meta["checkpoint_dir"], like,
                                   at_most=resume_meta["epoch"], skipped=resume_meta["skipped"],
                                   flag="--resume", prog="train.py", doing="resuming from")


def run(cfg: dict, resume_meta: Optional[dict], progress: bool = True,
        plot: bool = True) -> tuple[int, dict]:
    """Trains with a resolved configuration (``jaxmlp.fit``); returns (exit status, results)."""
    t_start = time.perf_counter()
    data, prep = guards.load_data(cfg, resume_meta)  # a resumed run: the same file, preprocessing
    guards.check_sizes(cfg, data)  # --sampling-rate, --ensemble K against memory
    net, optimizer, dp = train_config.build(cfg, data)
    laplace_report.check_network(cfg, net)  # --laplace: output, cost and P x P size, untrained
    K = cfg["ensemble"]
    init_key, key = _seed_keys(cfg["seed"])
    params = (jaxmlp.init_params(net, init_key, dtype=jnp.float32) if K is None
              else ensemble_lib.init_ensemble(net, init_key, K, dtype=jnp.float32))
    sets = tuple(jax.device_put(a) for a in  # no program (jnp.asarray: one per shape)
                 (data.X_train, data.Y_train, data.X_test, data.Y_test))
    network = {"sizes": list(net.sizes), "activations": list(net.activations), "cost": net.cost}
    tree = (params, key) if resume_meta is None else _template(cfg, optimizer, params, key)
    pl, (X_tr, Y_tr, X_te, Y_te), tree = guards.place(cfg, sets, tree)
    m_train = X_tr.shape[1]
    state, history = None, []
    if resume_meta is not None:
        intact = _restore(resume_meta, network, tree)
        state, history = intact.state, list(intact.meta.get("history", []))[:intact.state.epoch]
    else:
        params, key = tree

    config_saved = {k: cfg[k] for k in ARCH_KEYS + RUN_KEYS + ("epochs", "total_steps", "data")
                    + DP_KEYS + ("noise_calibrated", "placement")}
    config_saved["kfac"] = cfg["kfac"]  # the --kfac-* flags given (a resume reuses them)
    if K is not None:
        config_saved.update({k: cfg[k] for k in ENSEMBLE_DEFAULTS})
    cdir = os.path.join(cfg["out"], "checkpoints")
    start = state.epoch if state is not None else 0
    # several processes: process 0 alone moves and removes files in --out, the others wait
    first, multi = jax.process_index() == 0, jax.process_count() > 1
    if multi:
        from jax.experimental import multihost_utils
    store = ckpt_lib.Checkpoints(cdir) if cfg["checkpoint_every"] > 0 else None
    try:  # the folder's writer lock first: another writer's is exit 2, before any removal
        if store is not None:
            store.claim()
        if (first and resume_meta is not None and cfg["checkpoint_every"] > 0
                and os.path.abspath(resume_meta["checkpoint_dir"]) == os.path.abspath(cdir)):
            damaged = [e for e, _ in intact.skipped if e > start]
            for epoch, dst in ckpt_lib.set_aside_damaged(cdir, damaged):
                print(f"train.py: moved the damaged checkpoint of epoch {epoch} to {dst}",
                      file=sys.stderr)
        if multi:  # every process reads the folder as process 0 left it
            multihost_utils.sync_global_devices("train.py: damaged checkpoints set aside")
        if cfg["checkpoint_every"] > 0 and (ckpt_lib.latest_epoch(cdir) or 0) > start:
            raise UsageError(
                f"--out: {cdir} already holds checkpoints up to epoch {ckpt_lib.latest_epoch(cdir)}; "
                f"continue them with --resume {cfg['out']}, or choose another --out (nothing is "
                "overwritten).")
        if first:
            train_report.clear_earlier(cfg)  # --overwrite; a resumed run's stale model.npz
        os.makedirs(cfg["out"], exist_ok=True)
        if multi:
            multihost_utils.sync_global_devices("train.py: earlier files removed")
        if store is not None and not os.path.isdir(cdir):  # --overwrite removed the folder
            store.close()
            store = ckpt_lib.Checkpoints(cdir)
            store.claim()
        writer = None if store is None else ckpt_lib.EpochWriter(
            store, cfg["checkpoint_every"], cfg["epochs"], history=history,
            meta={"network": network, "preprocessing": prep.to_dict(),
                  "config": {**config_saved, "checkpoint_every": cfg["checkpoint_every"]}})
        t_train = time.perf_counter()
        fr = jaxmlp.fit(
            net, params if state is None else None, optimizer, X_tr, Y_tr,
            epochs=cfg["epochs"], batch_size=cfg["batch_size"],
            key=key if state is None else None, state=state, history=history, dp=dp,
            eval_sets={"train": (X_tr, Y_tr), "test": (X_te, Y_te)}, on_epoch_end=writer,
            progress=progress and jax.process_index() == 0, progress_desc=cfg["dataset"],
            batch_sharding=None if pl is None else pl.batch_sharding, ensemble=K,
            learning_rates=cfg["member_lrs"], shared_batches=bool(cfg["shared_batches"]))
    finally:
        if store is not None:
            store.close()
    train_seconds = time.perf_counter() - t_train
    message = fr.message
    if fr.status == "diverged":
        last = None if writer is None else writer.last_saved
        kept = (f"the last good checkpoint, epoch {last}, is kept in {cdir}"
                if last is not None else "no checkpoint was written")
        rates = (f"--member-lrs (now {' '.join(f'{r:g}' for r in cfg['member_lrs'])})"
                 if cfg.get("member_lrs") else f"--lr (now {cfg['lr']:g})")
        message = f"{fr.message}; {kept}. Try a smaller {rates}."
    result = _report(cfg, net, data, prep, dp, fr, (X_tr, Y_tr, X_te, Y_te), pl)
    steps = train_config.steps_per_epoch(cfg, dp, m_train)
    examples = steps * (cfg["expected_batch_size"] if dp else cfg["batch_size"]) * (K or 1)
    steady = fr.epoch_seconds[1:] or fr.epoch_seconds
    result.update({
        "status": fr.status, "message": message,
        "config": {**config_saved, "out": train_report.display_path(cfg["out"]),
                   "checkpoint_every": cfg["checkpoint_every"],
                   "data_parallel": cfg["data_parallel"] or jax.process_count() > 1},
        "network": network,
        "dataset": {"name": data.name, "m_train": int(m_train),
                    "m_test": int(data.X_test.shape[1]), "n_inputs": data.n_inputs,
                    "n_outputs": data.n_outputs, "target_names": list(data.target_names),
                    "steps_per_epoch": steps,
                    "examples_skipped_per_epoch": 0 if dp else int(m_train - examples)},
        "resumed_from_epoch": start if resume_meta is not None else None,
        "wall_seconds": time.perf_counter() - t_start, "train_seconds": train_seconds,
        "first_epoch_seconds": fr.epoch_seconds[0] if fr.epoch_seconds else None,
        "examples_per_second": examples / statistics.median(steady) if steady else 0.0})
    if fr.status == "budget":
        print(f"train.py: {message}", file=sys.stderr)
    if jax.process_index() != 0:  # the other processes computed the same numbers
        return (EXIT_DIVERGED if fr.status == "diverged" else EXIT_OK), result
    guards.remove_stale_model(cfg["out"])  # never an earlier run's model beside these results
    model = train_report.write_model(cfg, fr, net, prep, data)  # then results.json, naming it
    output.write_json(os.path.abspath(os.path.join(cfg["out"], "results.json")), result)
    svg = os.path.join(cfg["out"], "learning_curves.svg") if plot and fr.history else None
    if svg:
        plotting.write_plot(svg, fr.history,
                            result["metric"],
                            f"{data.name}: {'-'.join(map(str, net.sizes))}, {cfg['optimizer']} "
                            f"{train_report.rate_words(cfg)}, {train_report.batch_words(cfg)}")
    if fr.status == "diverged":
        print(f"train.py: {message}", file=sys.stderr)
        print(train_report.where(cfg, model, svg), file=sys.stderr)
        return EXIT_DIVERGED, result
    print(train_report.final_table(result))
    print(train_report.where(cfg, model, svg) + laplace_report.where(cfg, result))
    return EXIT_OK, result


def _report(cfg, net, data, prep, dp, fr, sets, pl) -> dict:
    """The numbers of results.json read off ``fr`` (its last history row holds the final
    state's train and test metrics); evaluated here only when no epoch was run, and for the
    per-label accuracies (a vector, not in the history)."""
    X_tr, Y_tr, X_te, Y_te = sets
    K, params = cfg["ensemble"], fr.state.params
    row = fr.history[-1] if fr.history else train_report.evaluated_row(net, params, sets, K)
    metric = train_lib.metric_name(net)
    ensemble = None
    if K is None:
        final = {s: {k[len(s) + 1:]: v for k, v in row.items() if k.startswith(s + "_")}
                 for s in ("train", "test")}
    else:
        names = [k[6:-8] for k in row if k.startswith("train_") and k.endswith("_members")]
        final = {s: {k: row[f"{s}_{k}"] for k in names} for s in ("train", "test")}
        ensemble = {"K": K, "member_lrs": cfg["member_lrs"],
                    "shared_batches": cfg["shared_batches"]}
        for part, suffix in (("members", "_members"), ("std", "_std"), ("min", "_min"),
                             ("max", "_max"), ("averaged_prediction", "_ensemble")):
            ensemble[part] = {s: {k: row[f"{s}_{k}{suffix}"] for k in names}
                              for s in ("train", "test")}
    per_label = None
    if metric == "label_accuracy":
        ev = (train_lib.cost_and_metrics(net, params, X_te, Y_te) if K is None
              else ensemble_lib.ensemble_cost_and_metrics(net, params, X_te, Y_te)["ensemble"])
        per_label = dict(zip(data.target_names, np.asarray(ev["per_label_accuracy"]).tolist()))
    pr = None
    if dp is not None:
        pr = {**privacy.privacy_report(  # fit's count: a diverged run's last epoch ran too
            dp, X_tr.shape[1], fr.privacy["steps"] // dp.steps_per_epoch,
            steps=cfg["total_steps"], overflows=fr.privacy["overflows"]),
            "noise_calibrated": cfg["noise_calibrated"], **train_report.PRIVACY_COVERAGE}
    devices = pl.mesh.devices.flat if pl is not None else jax.devices()[:1]
    return laplace_report.attach(cfg, net, fr, sets, {"num_params": net.num_params, "metric": metric,
            "privacy": pr, "epochs_done": fr.state.epoch, "history": fr.history, "final": final,
            "final_per_label_accuracy": per_label, "ensemble": ensemble,
            "jax": {"version": jax.__version__, "backend": jax.default_backend(),
                    "devices": [str(d) for d in devices]},
            "platform": {"python": platform.python_version(), "machine": platform.machine(),
                         "cpu_count": os.cpu_count()},
            "final_params_sha256": ckpt_lib.params_digest(params), "preprocessing": prep.to_dict(),
            "processes": {"count": jax.process_count(),
                          "examples_dropped_to_split_over_devices":
                              0 if pl is None else int(pl.dropped)}})  # + --laplace's block


def train(argv: Optional[Sequence[str]] = None) -> tuple[int, Optional[dict]]:
    """Runs the command line ``argv``; returns (exit status, results dict or None on bad input)."""
    cfg = None
    try:
        args = build_parser().parse_args(argv)
        guards.init_processes(args)  # within --init-timeout, or exit 2 naming the coordinator
        with contextlib.ExitStack() as held:  # process 0: the --out lock, until the end
            cfg, resume_meta = guards.agreed_config(args, held)
            return run(cfg, resume_meta, progress=not args.no_progress, plot=not args.no_plot)
    except (UsageError, ckpt_lib.CheckpointError) as e:
        if guards.peer_lost(e, cfg):  # a checkpoint's gather whose peer process is gone
            return guards.EXIT_PEER_LOST, None
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE, None
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: one line, not orbax's traceback
        print(guards.interrupted(cfg, e), file=sys.stderr)
        return (guards.EXIT_TERMINATED if isinstance(e, guards.Terminated)
                else EXIT_INTERRUPTED), None
    except OSError as e:  # a file of the run could not be written (a full disk)
        print(guards.write_failed(cfg, e), file=sys.stderr)
        return guards.EXIT_WRITE_FAILED, None
    except Exception as e:  # several processes: a peer lost in a collective
        if not guards.peer_lost(e, cfg):
            raise
        return guards.EXIT_PEER_LOST, None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    with guards.terminate_as_interrupt():  # SIGTERM: as Ctrl-C, exit 143
        return train(argv)[0]


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # every file is written and closed: skip ~0.3 s of JAX runtime teardown
