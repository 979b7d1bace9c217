"""What ``train.py`` and ``predict.py`` check so that nothing is lost and nothing is silent.

* :func:`load_data` -- a resumed ``--data`` run reads the same bytes (sha256 of the file,
  stored with the configuration in every checkpoint) and refits the same preprocessing
  (compared with the checkpoint's) as the run it continues; otherwise exit 2 naming what
  differs;
* :func:`remove_stale_model` -- an earlier run's ``model.npz`` never stays beside a new
  ``results.json`` (whatever the output-folder policy): removed before the new results
  are written, and written again only when this run completes;
* :func:`init_processes` -- several processes meet within ``--init-timeout`` seconds or stop
  with exit 2 naming the coordinator (:func:`jaxmlp.parallel.distributed.rendezvous`);
  :func:`peer_lost` turns a peer's loss during training into one message and exit 4;
* :func:`agree` -- before anything is trained or written, every process compares its
  resolved configuration and data (:func:`fingerprint`: the ``--data`` file's sha256) with
  process 0's, and learns whether any process refused (process 0's ``--out`` lock among
  them): all stop with exit 2 and the same message naming what differs, or go on together;
* :func:`refuse_same_file`, :func:`check_model_of_run`, :func:`restore_newest_intact` --
  ``predict.py`` never writes over its input, never reads a model.npz that is not its
  folder's run, and falls back to the newest intact orbax checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from typing import Optional

from _common import cli
from _common.cli import UsageError

__all__ = ["EXIT_PEER_LOST", "EXIT_TERMINATED", "EXIT_WRITE_FAILED", "Terminated", "add_arguments", "agree", "agreed_config", "check_config", "check_model_of_run", "check_sizes",
           "disagreements", "file_sha256", "fingerprint", "init_processes", "load_data", "peer_lost", "refuse_same_file",
           "remove_stale_model", "restore_newest_intact", "terminate_as_interrupt", "write_failed"]

#: Exit status of a multi-process run whose peer was lost during training.
EXIT_PEER_LOST = 4


def add_arguments(p) -> None:
    """train.py's ``--categorical``, ``--id``, ``--init-timeout`` and ``--laplace``
    (laplace_report)."""
    from jaxmlp.parallel.distributed import DEFAULT_INIT_TIMEOUT

    from _common import laplace_report

    laplace_report.add_arguments(p)

    p.add_argument("--categorical", metavar="COLUMN[,COLUMN...]", help="with --data: feature "
                   "columns to one-hot encode although they hold numbers (default: none; a "
                   "column of numbers with stray text cells is refused)")
    p.add_argument("--id", metavar="COLUMN", help="with --data: the column of row ids, left "
                   "out of the features (default: none; a column named id with a distinct value "
                   "in every row is refused until it is named here)")
    p.add_argument("--init-timeout", type=float, metavar="SECONDS", default=DEFAULT_INIT_TIMEOUT,
                   help="several processes: how long to wait for the coordinator and every "
                   f"peer before exit 2 (default {DEFAULT_INIT_TIMEOUT})")


def check_config(cfg: dict, args) -> None:
    """Refuses K-FAC with ``--dp`` (UsageError naming ``--optimizer``), and
    records ``--categorical`` and ``--id`` (as ``exclude``) in ``cfg["data"]`` (a new --data run; a resumed one keeps the
    saved value). Before the output folder is claimed: nothing is written."""
    from _common import laplace_report

    laplace_report.configure(cfg, args)  # --laplace: refused with --ensemble, several processes
    if cfg.get("optimizer") == "kfac" and cfg.get("dp"):
        raise UsageError("--optimizer: kfac is not combined with --dp: its step reads the "
                         "Kronecker factors of one network's own minibatch sweep, which the "
                         "private (clipped, noised) step does not compute; choose sgd, momentum "
                         "or adam.")
    for flag, value, key in (("--categorical", args.categorical, "categorical"),
                             ("--id", args.id, "exclude")):
        if value is None:
            continue
        if args.resume is not None or not cfg.get("data"):
            raise UsageError(f"{flag}: only with --data FILE (a resumed run keeps the "
                             "saved run's).")
        cfg["data"][key] = [c.strip() for c in value.split(",") if c.strip()]


#: Optimizer state per parameter (slots) of the optimizers by name, for the memory bound.
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


def available_memory() -> tuple[int, str]:
    """(bytes, where): the default device's memory limit on an accelerator; on CPU the
    host's available memory (``MemAvailable``, else free pages)."""
    import jax

    if jax.default_backend() != "cpu":
        try:
            stats = jax.local_devices()[0].memory_stats() or {}
            if stats.get("bytes_limit"):
                return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), \
                    f"{jax.default_backend()} device"
        except Exception:  # a backend without memory statistics
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host"
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host"


def check_sizes(cfg: dict, data) -> None:
    """Refuses, before anything is built, a ``--dp`` sampling rate whose expected batch q n
    is below one example, and an ``--ensemble K`` whose parameters and optimizer state
    (K x P x 4 bytes x (1 + optimizer slots)) exceed the memory available."""
    m = data.X_train.shape[1]
    q = cfg.get("sampling_rate")
    if cfg.get("dp") and q is not None and q * m < 1:
        raise UsageError(
            f"--sampling-rate: expected q n >= 1 (at least one expected example per batch; "
            f"n = {m} training examples of {cfg['dataset']}), got q = {q:g}: {q * m:.3g} "
            f"expected examples per batch, {round(1 / q)} steps per epoch.")
    K = cfg.get("ensemble")
    if K is None:
        return
    sizes = (data.n_inputs, *cfg["hidden"], data.n_outputs)
    P = sum(a * b + a for b, a in zip(sizes[:-1], sizes[1:]))
    slots = OPTIMIZER_SLOTS.get(cfg["optimizer"], 2)
    need = K * P * 4 * (1 + slots)
    avail, where = available_memory()
    if need > avail:
        raise UsageError(
            f"--ensemble: {K} members of {P} parameters need about {need / 2**30:.3g} GiB "
            f"(K x P x 4 bytes x (1 + {slots} {cfg['optimizer']} slots)), more than the "
            f"{avail / 2**30:.3g} GiB of {where} memory available; at most "
            f"{max(avail // (P * 4 * (1 + slots)), 0)} members fit.")


# ----------------------------------------------------------------------------- several processes


def init_processes(args) -> None:
    """Joins jax.distributed when asked (or on a detected cluster), before any device use;
    UsageError naming the flag (the coordinator unreachable, a peer missing, within
    ``--init-timeout`` seconds)."""
    from jaxmlp.parallel import distributed

    t = args.init_timeout
    if not (math.isfinite(t) and t > 0):
        raise UsageError(f"--init-timeout: expected seconds > 0, got {t:g}.")
    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               initialization_timeout=t)
    except TimeoutError as e:
        raise UsageError(f"{cli.flag_error(e, ('coordinator',))} (--init-timeout {t:g} s)") from None
    except (TypeError, ValueError, OSError) as e:
        raise cli.flag_error(e, ("coordinator", "num_processes", "process_id")) from None
    except RuntimeError as e:  # the runtime is already up, or JAX's own initialisation failed
        raise UsageError(f"--coordinator: jax.distributed.initialize failed: {e}") from None


def peer_lost(e: BaseException, cfg: Optional[dict]) -> bool:
    """True (and the message printed) when ``e`` is the runtime error of a collective whose
    peer process is gone: the run ends at once with :data:`EXIT_PEER_LOST` instead of a raw
    traceback and XLA's abort at shutdown; the checkpoints written before are intact."""
    import jax

    from jaxmlp.train.checkpoint import CheckpointError

    if jax.process_count() < 2:
        return False
    # a checkpoint's save gathers over the processes too: its error names the collective's
    if not (isinstance(e, jax.errors.JaxRuntimeError) or (isinstance(e, CheckpointError)
                                                          and "JaxRuntimeError" in str(e))):
        return False
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    out = (cfg or {}).get("out", "--out")
    print(f"train.py: error: process {jax.process_index()} lost a peer process during training "
          f"({first}); the checkpoints written before are intact in "
          f"{os.path.join(out, 'checkpoints')}; restart every process with --resume {out}.",
          file=sys.stderr)
    return True


#: Configuration keys that may differ between processes: the earlier files in ``--out``
#: that ``--overwrite`` replaces (process 0 removes them).
PROCESS_OWN_KEYS = ("replace",)
#: How a fingerprint key is named in a message when it is not ``--<key>``.
_NAMES = {"data.sha256": "--data", "data.exclude": "--id", "kfac": "--optimizer kfac's options",
          "total_steps": "the resumed run's total_steps",
          "noise_calibrated": "the resumed run's noise_calibrated",
          "saved_placement": "the resumed checkpoint's placement"}


def fingerprint(cfg: dict, resume_meta: Optional[dict] = None, *, out_given: bool = True) -> dict:
    """What every process of a run must agree on, as flat JSON values: every key of the
    resolved configuration ``cfg`` but :data:`PROCESS_OWN_KEYS`; ``--data``'s file by its
    bytes (``data.sha256``, None when it cannot be read) and how it is read (``data.target``,
    ...), not by its path or the name taken from it; ``--kfac-*`` one key each; the resumed
    checkpoint (folder and epoch). ``out`` is None unless ``out_given`` (a default folder is
    process 0's: the others take it)."""
    fp = {k: v for k, v in cfg.items() if k not in PROCESS_OWN_KEYS}
    if not out_given:
        fp["out"] = None
    d = fp.pop("data", None)
    if d:
        fp.pop("dataset", None)  # the file's name: the bytes decide
        try:
            digest = file_sha256(d["file"])
        except OSError:
            digest = None
        fp.update({f"data.{k}": v for k, v in d.items() if k not in ("file", "sha256")})
        fp["data.sha256"] = digest
    else:
        fp["data.sha256"] = None
    kfac = fp.pop("kfac", None)
    if isinstance(kfac, dict):
        fp.update({f"kfac.{k}": v for k, v in kfac.items()})
    else:
        fp["kfac"] = kfac
    fp["resume"] = None if resume_meta is None else {
        "checkpoints": os.path.abspath(resume_meta["checkpoint_dir"]), "epoch": resume_meta["epoch"]}
    return json.loads(json.dumps(fp, sort_keys=True, default=repr))


def _name(key: str) -> str:
    if key in _NAMES:
        return _NAMES[key]
    return "--" + key.rpartition(".")[2].replace("_", "-")


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else json.dumps(value) if not isinstance(value, str) else value


def disagreements(fingerprints: list, files: Optional[list] = None) -> list[str]:
    """One sentence per key of :func:`fingerprint` on which a process differs from process
    0, naming the option, the processes and their values (``--data``: each process's file
    and sha256); ``files`` holds each process's ``--data`` path (or None). Empty when all
    agree."""
    ref, files = fingerprints[0], files or [None] * len(fingerprints)
    missing = object()
    out = []
    for key in sorted(set().union(*fingerprints)):
        odd = [i for i in range(1, len(fingerprints))
               if fingerprints[i].get(key, missing) != ref.get(key, missing)]
        if not odd:
            continue
        if key == "data.sha256":
            sha = lambda v: f"sha256 {v[:16]}..." if v else "unreadable"  # noqa: E731
            theirs = ", ".join(f"process {i}'s file {files[i]} ({sha(fingerprints[i].get(key))})"
                               for i in odd)
            out.append(f"--data: {theirs} differs from process 0's {files[0]} "
                       f"({sha(ref.get(key))}); every process must read the same file")
            continue
        theirs = ", ".join(f"process {i} has {_show(fingerprints[i].get(key))}" for i in odd)
        out.append(f"{_name(key)}: {theirs}, process 0 has {_show(ref.get(key))}")
    return out


def agree(cfg: Optional[dict], resume_meta: Optional[dict], error: Optional[BaseException], *,
          out_given: bool = True) -> Optional[dict]:
    """Several processes, before anything is trained or written: every process contributes
    its refusal ``error`` (None when it has none; process 0's includes the ``--out`` lock) or
    its :func:`fingerprint`, and receives everyone's (one exchange,
    :func:`jaxmlp.parallel.distributed.allgather_json`). All processes then raise the same
    UsageError: the refusal of the first process that has one (``"process i: ..."`` for a
    process other than 0), or the options and data on which a process differs from process 0
    (:func:`disagreements`); process 0's own refusal, and an unexpected exception (not a
    UsageError or CheckpointError) on its own process, are raised unchanged. Returns the
    configuration to run: ``cfg``, with process 0's ``out`` unless ``out_given``. One
    process: raises ``error``, else returns ``cfg``."""
    import jax

    from jaxmlp.parallel import distributed
    from jaxmlp.train.checkpoint import CheckpointError

    if jax.process_count() == 1:
        if error is not None:
            raise error
        return cfg
    expected = isinstance(error, (UsageError, CheckpointError))
    if error is not None:
        mine = {"error": str(error) if expected else f"{type(error).__name__}: {error}"}
    else:
        mine = {"error": None, "fingerprint": fingerprint(cfg, resume_meta, out_given=out_given),
                "file": (cfg.get("data") or {}).get("file"), "out": cfg["out"]}
    everyone = distributed.allgather_json(mine)
    first = next((i for i, r in enumerate(everyone) if r["error"] is not None), None)
    if first is not None:
        if first == jax.process_index() and (first == 0 or not expected):
            raise error  # its own message (or traceback) unchanged
        msg = everyone[first]["error"]
        raise UsageError(msg if first == 0 else f"process {first}: {msg}")
    differ = disagreements([r["fingerprint"] for r in everyone], [r["file"] for r in everyone])
    if differ:
        raise UsageError("; ".join(differ) + f". The {len(everyone)} processes of a run must "
                         "be started with the same options and data; nothing was trained.")
    if not out_given:
        cfg["out"] = everyone[0]["out"]  # process 0's new folder, which it holds locked
    return cfg


# ----------------------------------------------------------------------------- data and model


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_data(cfg: dict, resume_meta: Optional[dict]):
    """:func:`_common.train_config.load_data`, guarded: a new ``--data`` run records the
    file's sha256 in ``cfg["data"]`` (saved with every checkpoint); a resumed run refuses a
    file whose bytes changed, and preprocessing (columns, categories, means, standard
    deviations, classes, ...) that differs from the checkpoint's, naming what differs."""
    from _common import train_config

    d = cfg.get("data")
    digest = None
    if d:
        try:
            digest = file_sha256(d["file"])
        except OSError:
            digest = None  # load_data names the file
        if resume_meta is not None and d.get("sha256") and digest != d["sha256"]:
            now = f"{digest[:16]}..." if digest else "no file"
            raise UsageError(
                f"--resume: the data file {d['file']} changed since the checkpoint was written "
                f"(sha256 {d['sha256'][:16]}... then, {now} now): its rows, split and "
                "standardisation would not be those the saved parameters were trained on. "
                "Restore the file, or start a new run without --resume.")
    data, prep = train_config.load_data(cfg)
    if d and resume_meta is None:
        d["sha256"] = digest
    saved = (resume_meta or {}).get("preprocessing")
    if saved is not None:
        now = json.loads(json.dumps(prep.to_dict()))
        from jaxmlp.data.tabular import Preprocessing

        # an optional field a record of an earlier version lacks is not compared; nor the
        # class values of a bundled dataset, which earlier records left null (text classes)
        optional_absent = {k for k in Preprocessing._field_defaults if k not in saved}
        if not d and saved.get("class_values") is None:
            optional_absent.add("class_values")
        differ = sorted(k for k in set(now) | set(saved)
                        if k != "task_reason" and k not in optional_absent
                        and now.get(k) != saved.get(k))
        if differ:
            raise UsageError(
                f"--resume: the preprocessing fitted to the data now differs from the "
                f"checkpoint's in {differ}: the saved parameters expect other inputs. Restore "
                "the data the run was started on, or start a new run without --resume.")
    return data, prep


def remove_stale_model(out: str) -> None:
    """Removes ``out/model.npz`` before a run writes its results.json: a model.npz there is
    an earlier run's (this run's is written after its results, and only when it completes)."""
    path = os.path.join(out, "model.npz")
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)


def refuse_same_file(data: str, out: str) -> None:
    """UsageError naming ``--out`` when it is the ``--data`` file (any spelling, a link)."""
    same = os.path.realpath(data) == os.path.realpath(out)
    if not same and os.path.exists(data) and os.path.exists(out):
        same = os.path.samefile(data, out)
    if same:
        raise UsageError(f"--out: {out!r} is the --data file {data!r}; the predictions would "
                         "replace the rows they are made from. Choose another --out.")


def check_model_of_run(model_file: str, params) -> None:
    """UsageError when the run folder's results.json records other parameters than
    ``model_file`` holds (:func:`jaxmlp.data.export.check_model_of_run`)."""
    from jaxmlp.data import export

    try:
        export.check_model_of_run(model_file, params)
    except ValueError as e:
        raise UsageError(f"--checkpoint: {str(e).partition(': ')[2]}") from None


def resume_reporting(cdir: str, like, *, at_most, skipped, flag: str, prog: str, doing: str):
    """:func:`jaxmlp.train.checkpoint.resume` for a script: the newest checkpoint of ``cdir``
    (at most epoch ``at_most``) that verifies, each damaged one named on stderr as
    ``"<prog>: skipped checkpoint of epoch E: why"``, then ``"<prog>: <doing> epoch E, the
    newest intact checkpoint"``. UsageError naming ``flag`` when none is intact."""
    from jaxmlp.train import checkpoint as ckpt_lib

    try:
        intact = ckpt_lib.resume(cdir, like, at_most=at_most, skipped=skipped)
    except ckpt_lib.CheckpointError as e:
        raise cli.checkpoint_error(e, flag, cdir) from None
    except FileNotFoundError as e:
        raise UsageError(f"{flag}: {e}") from None
    for epoch, why in intact.skipped:
        print(f"{prog}: skipped checkpoint of epoch {epoch}: {why}", file=sys.stderr)
    if intact.skipped:
        print(f"{prog}: {doing} epoch {intact.state.epoch}, the newest intact checkpoint",
              file=sys.stderr)
    return intact


def restore_newest_intact(cdir: str, like_from_meta):
    """(state, meta) of the newest orbax checkpoint in ``cdir`` whose metadata and arrays
    verify (:func:`resume_reporting`); ``like_from_meta(meta)`` builds the state to restore
    into. UsageError naming ``--checkpoint`` when none is intact."""
    from jaxmlp.train import checkpoint as ckpt_lib

    try:
        found = ckpt_lib.newest_readable_meta(cdir)
    except ckpt_lib.CheckpointError as e:
        raise cli.checkpoint_error(e, "--checkpoint", cdir) from None
    except FileNotFoundError as e:
        raise UsageError(f"--checkpoint: {e}") from None
    intact = resume_reporting(cdir, like_from_meta(found.meta), at_most=found.epoch,
                              skipped=found.skipped, flag="--checkpoint", prog="predict.py",
                              doing="predicting with")
    return intact.state, intact.meta


#: Exit status of a run stopped by SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = 143
#: Exit status of a run whose results, model or plot could not be written (a full disk).
EXIT_WRITE_FAILED = 5


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, a scheduler's preemption), raised where the main
    thread is, as Ctrl-C's KeyboardInterrupt is: the same one line, the checkpoints kept."""


@contextlib.contextmanager
def terminate_as_interrupt():
    """Inside: SIGTERM raises :class:`Terminated` in the main thread (train.py's ``main``);
    the previous handler is restored on the way out."""
    import signal

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_failed(cfg, e: OSError) -> str:
    """train.py's one line when a file of the run could not be written (e.g. a full disk)."""
    out = (cfg or {}).get("out")
    kept = (f"; the checkpoints in {os.path.join(out, 'checkpoints')} are kept: free space, then "
            f"--resume {out}" if out and (cfg or {}).get("checkpoint_every", 0) > 0 else "")
    return (f"train.py: error: {e.filename or out}: {e.strerror or e} (a file of the run could "
            f"not be written or read); the run's results were not all written{kept}.")


def interrupted(cfg, e: Optional[BaseException] = None) -> str:
    """train.py's one line on Ctrl-C or SIGTERM: where the checkpoints are and how to resume."""
    out = (cfg or {}).get("out")
    if out and (cfg or {}).get("checkpoint_every", 0) > 0:
        then = (f"its checkpoints in {os.path.join(out, 'checkpoints')} are kept (an "
                f"interrupted write is skipped); continue with --resume {out}")
    else:
        then = "no checkpoint was being written (--checkpoint-every N keeps them)"
    what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    return f"train.py: {what}; {then}."


def report_dropped(pl) -> None:
    """Says on stderr (process 0) how many training examples a placement left out so that
    the columns split evenly over the devices."""
    import jax

    if int(pl.dropped) > 0 and jax.process_index() == 0:
        print(f"train.py: {int(pl.dropped)} example(s) left out so that the columns split "
              f"evenly over {jax.device_count()} devices (results.json: "
              f"examples_dropped_to_split_over_devices)", file=sys.stderr)


def place(cfg, sets, tree):
    """(placement.Placement or None, sets, tree): train.py's arrays on its devices."""
    import jax

    from jaxmlp.parallel import placement

    multi = jax.process_count() > 1
    spread = multi or cfg["data_parallel"]
    cfg["placement"] = {"processes": jax.process_count(),
                        "devices": jax.device_count() if spread else 1}
    saved = cfg.get("saved_placement")  # a resumed run's (checkpoints since this was recorded)
    if saved is not None and saved != cfg["placement"]:
        words = lambda p: f"{p['processes']} process(es) and {p['devices']} device(s)"  # noqa: E731
        raise UsageError(
            f"--resume: the checkpoint's run was placed on {words(saved)}, this one on "
            f"{words(cfg['placement'])}: the examples split over the devices (and so the "
            "minibatches) would differ from the saved run's. Resume it as it was started "
            "(the same number of processes, --data-parallel as before).")
    if not spread:
        return None, sets, tree
    if multi and cfg["ensemble"] is not None:
        raise UsageError("--ensemble: not combined with several processes.")
    try:
        pl = (placement.multi_process if multi else placement.data_parallel)(
            *sets, tree, batch_size=cfg["batch_size"])
    except (TypeError, ValueError) as e:
        raise UsageError(f"--batch-size: with {jax.process_count()} processes: {e}" if multi
                         else f"--data-parallel: {e}") from None
    report_dropped(pl)
    return pl, (pl.X_train, pl.Y_train, pl.X_test, pl.Y_test), pl.replicated


def agreed_config(args, held: contextlib.ExitStack) -> tuple[dict, Optional[dict]]:
    """(cfg, resume_meta) of the command line, the same in every process: resolved and
    checked (only files read), ``--out`` locked by process 0 (one run per output folder,
    before anything is written; process 0 holds it for all the processes, which write into
    the folder together; released when ``held`` closes), then agreed (:func:`agree`): a
    refusal on any process (the lock's on process 0), or options or data that differ from
    process 0's, stop every process with exit 2 and the same message before any training,
    writing or removing."""
    import jax

    from _common import train_config

    cfg = resume_meta = error = None
    try:
        cli.run_registrations(args.register or [])
        cfg, resume_meta = train_config.resolve(args)
        check_config(cfg, args)
        if jax.process_index() == 0:
            held.enter_context(cli.claim_output_folder(cfg["out"]))
    except Exception as e:  # several processes: told to all of them first
        if jax.process_count() == 1:
            raise
        error = e
    out_given = args.out is not None or args.results or args.resume is not None
    return agree(cfg, resume_meta, error, out_given=out_given), resume_meta
