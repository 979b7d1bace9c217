"""Checkpoints of a training run with orbax: params, optimizer state, PRNG key, epoch.

One directory holds a series of checkpoints numbered by epoch (the orbax "step")::

    DIR/<epoch>/state/   params, opt_state, key (arrays, orbax StandardSave)
    DIR/<epoch>/meta/    JSON: epoch, whatever the caller adds (network, config, history),
                         and the integrity record (below)

Writes are synchronous (a checkpoint is on disk when :meth:`Checkpoints.save` returns; the
states here are kilobytes) and atomic: orbax writes into ``DIR/<epoch>.orbax-checkpoint-tmp``
and renames it to ``DIR/<epoch>`` only once every file is written. A process killed during a
save leaves only the temporary directory, which :func:`latest_epoch` and :meth:`restore`
ignore and the next writer on DIR deletes (at its first save); the previous checkpoint stays
intact (``tests/test_checkpoint.py`` kills a writer inside orbax's finalize step to check this).

One writer per folder. A :class:`Checkpoints` becomes DIR's writer at its first
:meth:`~Checkpoints.save` (or at :meth:`~Checkpoints.claim`, which a run calls before it
removes or trains anything): it takes an exclusive advisory lock (``fcntl.flock``) on the
folder DIR itself (no lock file is added to it), held until :meth:`~Checkpoints.close` or the
process's exit, killed or not. A second writer (another process, or another open
Checkpoints of this one) is refused at its first save or claim with a CheckpointError naming
DIR. A closed Checkpoints refuses every use (CheckpointError: open a new one), so it can never
write beside the folder's next writer. The lock's descriptor is close-on-exec, and a child
made by ``os.fork`` closes its copy at once (it never holds the parent's lock): the parent's
:meth:`~Checkpoints.close` releases the folder even while such a child runs.
Only the writer, holding the lock, removes leftover ``*.orbax-checkpoint-tmp*`` folders: no
live writer owns them then. Readers (a Checkpoints that never saves, one opened with
``read_only=True``, and :func:`newest_readable_meta`, :func:`newest_intact`, :func:`resume`,
which open read-only) take no lock and delete nothing, so a folder can be read while a run
saves into it. After each save the finalized checkpoint's JSON files are read back, so a
save never returns for a checkpoint that is not on disk. In a multi-process JAX run only
process 0 (orbax's primary host, which writes the folders) takes the lock and cleans up.

Integrity. Each checkpoint's meta item carries ``"integrity"``: the sha256 of every array of
params, opt_state and key (path, dtype, shape and bytes) together with the epoch, one sha256
per array, and the sha256 of the rest of the meta JSON. It is written inside the same orbax
save as the arrays, so it is renamed into place with them. :meth:`Checkpoints.meta` checks
the JSON's digest; :meth:`Checkpoints.restore` recomputes the arrays' digest from what it
read and compares. A mismatch, a missing, truncated or unreadable file, and every error
raised by orbax or tensorstore become one :class:`CheckpointError` (a ValueError) naming the
checkpoint and, where known, the file; orbax's stray asyncio tracebacks ("Event loop is
closed", "Task exception was never retrieved") and log lines about those files are silenced.
:meth:`Checkpoints.newest_intact` restores the newest checkpoint that passes and lists the
ones it skipped. ``tests/test_checkpoint.py`` damages every file of a checkpoint in turn:
each is either reported or harmless (the restored arrays and meta are bit-identical).

Restoring needs a ``like`` :class:`~jaxmlp.train.step.TrainState` with the structure, shapes and
dtypes expected (``init_params`` + ``optimizer.init``); a checkpoint written for another
architecture or optimizer is refused with a CheckpointError naming the first differing
array, before anything is read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import hashlib
import json
import logging
import numbers
import os
import re
import shutil
import sys
import warnings
import weakref
from typing import Any, NamedTuple, Optional, Sequence

import jax
import numpy as np

from jaxmlp.train.step import TrainState

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "EpochWriter",
    "Intact",
    "Readable",
    "checkpoint_dir",
    "latest_epoch",
    "newest_intact",
    "newest_readable_meta",
    "params_digest",
    "resume",
    "set_aside_damaged",
    "state_digest",
]

#: Version of the integrity record written into each checkpoint's meta.
INTEGRITY_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, unreadable, or of another architecture.

    Attributes:
      path: the checkpoint folder or file the error is about.
      skipped: for "no intact checkpoint" (:meth:`Checkpoints.newest_intact`), the
        ``[(epoch, reason), ...]`` of every checkpoint refused, newest first; else None.
    """

    def __init__(self, message: str, path: Optional[str] = None, skipped: Optional[list] = None):
        super().__init__(message)
        self.path = path
        self.skipped = skipped


class Intact(NamedTuple):
    """What :meth:`Checkpoints.newest_intact` returns.

    Attributes:
      state: the restored, verified TrainState.
      meta: its JSON metadata (without the integrity record).
      skipped: ``[(epoch, reason), ...]`` for each newer checkpoint that failed, newest first.
    """

    state: TrainState
    meta: dict
    skipped: list


# ----------------------------------------------------------------------------- orbax, quietly

_QUIET = {"depth": 0}  # > 0 while jaxmlp runs orbax code (orbax logs from its own threads too)
_MARKERS = ("orbax", "tensorstore", "zarr", "ocdbt", "OCDBT", "Event loop is closed")


def _is_orbax_noise(text: str) -> bool:
    return any(m in text for m in _MARKERS)


class _AsyncioNoiseFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records left behind by a failed orbax read."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "exception was never retrieved" not in str(record.msg):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_orbax_noise(f"{record.getMessage()} {exc!r}")


class _OrbaxLogFilter(logging.Filter):
    """While jaxmlp reads or writes a checkpoint, orbax's own log lines about damaged files are
    dropped: the failure reaches the caller as one CheckpointError instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _QUIET["depth"] and "orbax" in (record.pathname or ""):
            return record.levelno > logging.ERROR
        return True


def _unraisable_filter(previous):
    def hook(unraisable):
        exc, obj = unraisable.exc_value, unraisable.object
        code = getattr(obj, "cr_code", None)
        if (isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)) or (
                code is not None and "orbax" in code.co_filename):
            return  # a tensorstore callback after orbax's event loop ended: not the user's error
        previous(unraisable)

    hook._jaxmlp_checkpoint = True
    return hook


_installed = False


def _install_noise_filters() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    logging.getLogger("asyncio").addFilter(_AsyncioNoiseFilter())
    logging.getLogger("absl").addFilter(_OrbaxLogFilter())
    if not getattr(sys.unraisablehook, "_jaxmlp_checkpoint", False):
        sys.unraisablehook = _unraisable_filter(sys.unraisablehook)


def _ocp():
    try:
        import orbax.checkpoint as ocp  # imported lazily: ~2 s, and only the CLI needs it
    except ImportError:
        raise CheckpointError("checkpoints need orbax-checkpoint, which is not installed "
                              "(pip install 'jaxmlp[experiments]').") from None

    _install_noise_filters()
    return ocp


_FILE_IN_MESSAGE = (
    re.compile(r'local file "([^"]+)"'),
    re.compile(r"File (\S+) not found"),
    re.compile(r"Metadata file: (\S+?),"),
    re.compile(r"No such file or directory: '([^']+)'"),
)


def _short(e: BaseException) -> str:
    text = str(e).split(" [tensorstore_spec=")[0].strip().splitlines()
    text = text[0] if text else ""
    if len(text) > 240:
        text = text[:237] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _file_in(e: BaseException) -> Optional[str]:
    """The innermost file named in an orbax/tensorstore error message, if any."""
    found = None
    text = str(e)
    for pattern in _FILE_IN_MESSAGE:
        for match in pattern.finditer(text):
            found = match.group(1)
    return found


@contextlib.contextmanager
def _orbax_call(what: str, path: str):
    """Runs orbax code: its logs about damaged files are dropped and any exception it raises
    becomes a CheckpointError naming ``path`` (and the file, when the message names one)."""
    _QUIET["depth"] += 1
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # orbax/tensorstore/json/OS errors: all one kind for the caller
        file = _file_in(e)
        where = f"{path} (file {file})" if file and file.rstrip("/") != path.rstrip("/") else path
        err = CheckpointError(f"checkpoint {where}: {what} failed: {_short(e)}.", file or path)
        with warnings.catch_warnings():  # orbax's abandoned coroutines, collected here
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
            gc.collect()
        raise err from None
    finally:
        _QUIET["depth"] -= 1


# ----------------------------------------------------------------------------- digests


def _key_str(k) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    """``[("params/0/W", leaf), ...]``: every array leaf with its path; NamedTuple fields by name."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_array)
    return [("/".join(_key_str(k) for k in path), leaf) for path, leaf in leaves]


def _specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"params/0/W": (shape, dtype), ...}`` for every array leaf."""
    return {p: (tuple(leaf.shape), np.dtype(leaf.dtype).name) for p, leaf in _leaves(tree)}


def _is_typed_key(x) -> bool:
    return _is_array(x) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _raw_key(key):
    """A typed key (``jax.random.key``) as its uint32 data: what is written to disk."""
    return jax.random.key_data(key) if _is_typed_key(key) else key


def _host(leaf) -> np.ndarray:
    if _is_array(leaf) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(np.asarray(leaf))


def state_digest(state: TrainState) -> dict:
    """The integrity record of a TrainState: sha256 of its arrays and epoch.

    Returns ``{"version", "algorithm": "sha256", "state": hex, "arrays": {path: hex}}``;
    ``arrays[path]`` hashes the path, dtype, shape and bytes (native order) of one array of
    params / opt_state / key, and ``state`` hashes the epoch followed by every
    ``(path, arrays[path])`` in path order. Bit-identical states give identical records.
    """
    tree = {"params": state.params, "opt_state": state.opt_state, "key": state.key}
    arrays = {}
    for path, leaf in _leaves(tree):
        a = _host(leaf)
        h = hashlib.sha256(f"{path}|{a.dtype.name}|{a.shape}|".encode())
        h.update(a.tobytes())
        arrays[path] = h.hexdigest()
    return {"version": INTEGRITY_VERSION, "algorithm": "sha256",
            "state": _total_digest(int(state.epoch), arrays), "arrays": arrays}


def _total_digest(epoch: int, arrays: dict) -> str:
    total = hashlib.sha256(f"epoch={epoch}".encode())
    for path in sorted(arrays):
        total.update(f"|{path}={arrays[path]}".encode())
    return total.hexdigest()


def _meta_digest(meta: dict) -> str:
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the folder

#: Every Checkpoints object alive in this process: a forked child closes their lock descriptors.
_LIVE: "weakref.WeakSet[Checkpoints]" = weakref.WeakSet()


def _drop_locks_in_child() -> None:
    """After ``os.fork``, in the child: closes its copies of the writer locks' descriptors.

    ``flock`` belongs to the open file description, which the child shares with the parent:
    while the child kept a copy, the parent's close() would not release the folder. Closing the
    copy (never ``LOCK_UN``, which would unlock the parent's too) leaves the lock to the
    parent alone; the child's Checkpoints is no longer a writer (a save there asks for the lock
    again, and is refused while the parent holds it)."""
    for store in list(_LIVE):
        fd, unlock = store._lock_fd, store._unlock
        store._lock_fd, store._unlock = None, None
        if unlock is not None:
            unlock.detach()  # the finalizer would close the number again, maybe reused by then
        if fd is not None and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


def _finalized_epochs(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(name)
        for name in os.listdir(directory)
        if name.isdigit() and os.path.isdir(os.path.join(directory, name, "state"))
    )


def latest_epoch(directory: str) -> Optional[int]:
    """The epoch of the newest complete checkpoint in ``directory``; None if there is none.

    Unfinished writes (``<epoch>.orbax-checkpoint-tmp``) are not counted. Reads the directory
    listing only (no orbax import), so it is cheap to call before anything else; it says
    nothing about whether the checkpoint is intact (see :meth:`Checkpoints.newest_intact`).
    """
    epochs = _finalized_epochs(os.fspath(directory))
    return epochs[-1] if epochs else None


#: JSON files orbax reads when restoring (relative to DIR/<epoch>); required ones first.
_JSON_FILES_REQUIRED = ("meta/metadata", "state/_METADATA")
_JSON_FILES_OPTIONAL = ("state/_sharding", "state/array_metadatas/process_0")


def _check_json_files(step_dir: str, names) -> None:
    """Missing required files and unparsable JSON files, reported with their path."""
    for name in names:
        path = os.path.join(step_dir, name)
        if not os.path.exists(path):
            if name in _JSON_FILES_REQUIRED:
                raise CheckpointError(f"checkpoint {step_dir}: file {path} is missing.", path)
            continue
        try:
            with open(path, "rb") as f:
                json.loads(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {step_dir}: file {path} is damaged (not readable as JSON: "
                f"{_short(e)}).", path) from None


class Checkpoints:
    """Epoch-numbered checkpoints of a :class:`~jaxmlp.train.step.TrainState` in one directory.

    Arguments:
      directory: where the checkpoints live (created when opened, unless ``read_only``).
      max_to_keep: how many of the newest checkpoints to keep (None: all).
      read_only: open for reading only: :meth:`save` is refused, the folder is neither
        created nor locked and nothing in it is deleted (``max_to_keep`` is not used).

    The first :meth:`save` (or :meth:`claim`) makes this object the folder's only writer
    (module docstring): a CheckpointError if another writer holds the folder; then leftover
    temporary folders of killed writers are removed. A Checkpoints that never saves or claims
    only reads. After :meth:`close` every method but ``close`` raises a CheckpointError.

    Use as a context manager, or call :meth:`close`::

        with Checkpoints("runs/digits/checkpoints") as ckpt:
            ckpt.save(TrainState(params, opt_state, key, epoch), {"network": ...})
            state = ckpt.restore(like)            # the newest one, verified
            meta = ckpt.meta()                    # its JSON
            state, meta, skipped = ckpt.newest_intact(like)   # falls back past damaged ones

    Every failure of orbax or of the files is a :class:`CheckpointError`.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: Optional[int] = 3,
                 read_only: bool = False):
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, numbers.Integral)
            or max_to_keep < 1
        ):
            raise ValueError(f"max_to_keep: expected a positive integer or None, got {max_to_keep!r}.")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only: expected True or False, got {read_only!r}.")
        ocp = _ocp()
        self.read_only = read_only
        self._lock_fd: Optional[int] = None
        self._unlock = None
        self._closed = False
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"checkpoint {self.directory}: exists and is not a folder; "
                                  "give a folder for the checkpoints (it is created if missing).",
                                  self.directory)
        # never orbax's clean-up when opened: it would delete a live writer's temporary
        # folder (the writer cleans up at its first save, under the folder's lock)
        with _orbax_call("opening the checkpoint folder", self.directory):
            options = ocp.CheckpointManagerOptions(
                max_to_keep=None if read_only else max_to_keep,
                save_interval_steps=0 if read_only else 1,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=False,
                create=not read_only,
                read_only=read_only,
            )
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(),
                               "meta": ocp.JsonCheckpointHandler()},
            )
        _LIVE.add(self)

    # -- context manager
    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the folder's writer lock (if this object holds it) and orbax's manager.
        Closing twice is allowed; any other use afterwards raises a CheckpointError."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        try:
            with _orbax_call("closing", self.directory):
                self._manager.close()
        finally:
            unlock, self._unlock, self._lock_fd = self._unlock, None, None
            if unlock is not None:
                unlock()  # closes the folder's descriptor: the lock is released

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"checkpoint folder {self.directory}: this Checkpoints is "
                                  "closed; open a new Checkpoints on the folder to use it "
                                  "again.", self.directory)

    # -- the writer's lock
    def claim(self) -> None:
        """Makes this object the folder's writer now, as its first :meth:`save` would: takes
        the folder's lock and removes leftover temporary folders of killed writers.

        A run calls it before it removes or computes anything, so that a folder another
        writer holds is refused at once rather than at the first save. Calling it again
        (or saving afterwards) does nothing more. In a multi-process JAX run only process 0
        takes the lock.

        Raises:
          CheckpointError naming the folder if another writer (another process, or another
          open Checkpoints of this one) holds it, or if this object is closed; ValueError if
          it was opened with ``read_only=True``.
        """
        self._check_open()
        if self.read_only:
            raise ValueError(f"claim: this Checkpoints of {self.directory} was opened with "
                             "read_only=True; open it without read_only to write.")
        self._become_writer()

    def _become_writer(self) -> None:
        """Takes the folder's writer lock (once), then removes leftover temporary folders."""
        self._check_open()
        if self._unlock is not None or self._lock_fd == -1:
            return
        if jax.process_count() > 1 and jax.process_index() != 0:
            self._lock_fd = -1  # orbax's primary host writes the folders and holds the lock
            return
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CheckpointError(
                    f"checkpoint folder {self.directory}: another process is writing there "
                    "(it holds the folder's writer lock, as does an open Checkpoints of this "
                    "process that has saved or claimed there). One writer per checkpoint "
                    "folder: wait for it to finish (or close it), or save into another folder.",
                    self.directory) from None
            raise CheckpointError(f"checkpoint folder {self.directory}: cannot lock it for "
                                  f"writing ({_short(e)}).", self.directory) from None
        self._lock_fd = fd
        self._unlock = weakref.finalize(self, os.close, fd)
        for name in sorted(os.listdir(self.directory)):
            if ".orbax-checkpoint-tmp" in name:  # a killed writer's: no live writer owns it
                path = os.path.join(self.directory, name)
                try:
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise CheckpointError(f"checkpoint folder {self.directory}: cannot remove "
                                          f"the unfinished write {path} ({_short(e)}).",
                                          path) from None

    # -- queries
    def epochs(self) -> list[int]:
        """Epochs of the complete checkpoints, oldest first (intact or not)."""
        self._check_open()
        with _orbax_call("listing", self.directory):
            self._manager.reload()  # the folder may have changed (another process, a kill)
            return sorted(int(s) for s in self._manager.all_steps())

    def latest_epoch(self) -> Optional[int]:
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def _epoch_or_latest(self, epoch: Optional[int]) -> int:
        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f"directory: no checkpoint in {self.directory}.")
        if epoch is None:
            return epochs[-1]
        if epoch not in epochs:
            raise ValueError(f"epoch: expected one of the saved epochs {epochs}, got {epoch!r}.")
        return int(epoch)

    def _step_dir(self, epoch: int) -> str:
        return os.path.join(self.directory, str(int(epoch)))

    def _read_meta(self, epoch: int, verify: bool) -> tuple[dict, Optional[dict]]:
        """(meta without the integrity record, the record) of checkpoint ``epoch``."""
        ocp = _ocp()
        step_dir = self._step_dir(epoch)
        _check_json_files(step_dir, ("meta/metadata",))
        with _orbax_call("reading the metadata", step_dir):
            restored = self._manager.restore(
                epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        meta = restored.meta
        meta_file = os.path.join(step_dir, "meta", "metadata")
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {step_dir}: file {meta_file} does not hold a "
                                  "JSON object.", meta_file)
        meta = dict(meta)
        record = meta.pop("integrity", None)
        if not verify:
            return meta, record
        if not (isinstance(record, dict) and record.get("version") == INTEGRITY_VERSION
                and isinstance(record.get("arrays"), dict)
                and all(isinstance(v, str) for v in record["arrays"].values())):
            raise CheckpointError(
                f"checkpoint {step_dir}: file {meta_file} holds no integrity record (written "
                "by an older jaxmlp, or damaged), so the checkpoint cannot be verified; "
                "restore it with verify=False only if you trust it.", meta_file)
        if (record.get("meta") != _meta_digest(meta) or not isinstance(meta.get("epoch"), int)
                or record.get("state") != _total_digest(meta["epoch"], record["arrays"])):
            raise CheckpointError(
                f"checkpoint {step_dir}: file {meta_file} does not match the digest recorded "
                "when it was saved (the metadata is damaged or was edited).", meta_file)
        if meta["epoch"] != int(epoch):
            raise CheckpointError(
                f"checkpoint {step_dir}: its metadata is for epoch {meta['epoch']}, "
                f"not {epoch} (the folder was renamed or mixed up).", step_dir)
        return meta, record

    def meta(self, epoch: Optional[int] = None, *, verify: bool = True) -> dict:
        """The JSON metadata saved with checkpoint ``epoch`` (default: the newest).

        With ``verify`` (the default) its digest is checked: CheckpointError if it is
        missing, damaged or edited. The integrity record itself is not returned.
        """
        self._check_open()
        epoch = self._epoch_or_latest(epoch)
        return self._read_meta(epoch, verify)[0]

    # -- save / restore
    def save(self, state: TrainState, meta: Optional[dict] = None) -> None:
        """Writes ``state`` as checkpoint ``state.epoch`` (atomically), with JSON ``meta``.

        ``meta`` must be JSON-serialisable; ``"epoch"`` and ``"integrity"`` (see
        :func:`state_digest`) are added to it. Overwriting an existing epoch is refused
        (ValueError); an orbax or file-system failure is a CheckpointError.
        """
        self._check_open()
        if not isinstance(state, TrainState):
            raise TypeError(f"state: expected a jaxmlp.train.step.TrainState, got {type(state).__name__}.")
        epoch = state.epoch
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"state.epoch: expected a non-negative integer, got {epoch!r}.")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta: expected a dict or None, got {type(meta).__name__}.")
        if meta is not None and "integrity" in meta:
            raise ValueError("meta: the key 'integrity' is reserved for the checkpoint's digest.")
        if self.read_only:
            raise ValueError(f"save: this Checkpoints of {self.directory} was opened with "
                             "read_only=True; open it without read_only to write.")
        self._become_writer()
        if int(epoch) in self.epochs():
            raise ValueError(f"state.epoch: a checkpoint for epoch {epoch} already exists in {self.directory}.")
        ocp = _ocp()
        meta = dict(meta or {})
        meta["epoch"] = int(epoch)
        try:
            meta = json.loads(json.dumps(meta))  # the JSON as it will be read back
        except (TypeError, ValueError) as e:
            raise TypeError(f"meta: expected JSON-serialisable values ({e}).") from None
        record = state_digest(state)
        record["meta"] = _meta_digest(meta)
        tree = {"params": state.params, "opt_state": state.opt_state, "key": _raw_key(state.key)}
        with _orbax_call(f"saving epoch {int(epoch)}", self.directory):
            self._manager.save(
                int(epoch),
                args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                        meta=ocp.args.JsonSave({**meta, "integrity": record})),
            )
            self._manager.wait_until_finished()
        step_dir = self._step_dir(epoch)
        try:  # never a success for a checkpoint that cannot be read back
            _check_json_files(step_dir, _JSON_FILES_REQUIRED)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {step_dir}: saving epoch {int(epoch)} did not "
                                  f"leave a readable checkpoint ({e}).", e.path) from None

    def restore(self, like: TrainState, epoch: Optional[int] = None, *,
                verify: bool = True) -> TrainState:
        """Reads checkpoint ``epoch`` (default: the newest) into the structure of ``like``.

        Arguments:
          like: a TrainState whose params, opt_state and key have the expected structure,
            shapes, dtypes (and shardings); its epoch is ignored.
          epoch: which checkpoint; None for the newest.
          verify: check the recorded digests (default). ``False`` skips them (for
            checkpoints written before digests were recorded); orbax errors still raise.

        Returns:
          the saved TrainState, bit for bit, with ``epoch`` set to the checkpoint's epoch.

        Raises:
          FileNotFoundError if there is no checkpoint; CheckpointError (a ValueError) if the
          checkpoint is damaged (digest mismatch, missing/truncated/unreadable file, any
          orbax or tensorstore error) or its arrays do not match ``like`` (another
          architecture or optimizer), naming the checkpoint, the file or the first difference;
          CheckpointError if this object is closed.
        """
        self._check_open()
        if not isinstance(like, TrainState):
            raise TypeError(f"like: expected a jaxmlp.train.step.TrainState, got {type(like).__name__}.")
        ocp = _ocp()
        epoch = self._epoch_or_latest(epoch)
        step_dir = self._step_dir(epoch)
        _check_json_files(step_dir, _JSON_FILES_REQUIRED + _JSON_FILES_OPTIONAL)
        _, record = self._read_meta(epoch, verify)
        target = {"params": like.params, "opt_state": like.opt_state, "key": _raw_key(like.key)}
        with _orbax_call("reading the array metadata", os.path.join(step_dir, "state")):
            saved = _specs(self._manager.item_metadata(epoch).state.tree)
        wanted = _specs(target)
        # params first: a different architecture is then reported on its weights
        for path in sorted(set(saved) | set(wanted), key=lambda p: (not p.startswith("params"), p)):
            s, w = saved.get(path), wanted.get(path)
            if s != w:
                show = lambda spec: "nothing" if spec is None else f"shape {spec[0]} {spec[1]}"
                raise CheckpointError(
                    f"checkpoint {step_dir}: {path} holds {show(s)}, expected "
                    f"{show(w)}; it was written for another architecture or optimizer.", step_dir)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        with _orbax_call("reading the arrays", os.path.join(step_dir, "state")):
            restored = self._manager.restore(
                epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            ).state
            key = restored["key"]
            if _is_typed_key(like.key):  # saved as its data; typed again like ``like``
                key = jax.random.wrap_key_data(key, impl=jax.random.key_impl(like.key))
            state = TrainState(
                params=restored["params"],
                opt_state=restored["opt_state"],
                key=key,
                epoch=int(epoch),
            )
            jax.block_until_ready((state.params, state.opt_state, state.key))
        if verify:
            got = state_digest(state)
            if got["state"] != record.get("state") or got["arrays"] != record["arrays"]:
                want = record["arrays"]
                differ = sorted(p for p in set(got["arrays"]) | set(want)
                                if got["arrays"].get(p) != want.get(p))
                shown = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
                raise CheckpointError(
                    f"checkpoint {step_dir}: the arrays read from {os.path.join(step_dir, 'state')} "
                    f"do not match the digest recorded when they were saved "
                    f"({shown or 'the epoch or the digest record'}): the files are damaged.",
                    os.path.join(step_dir, "state"))
        return state

    def newest_intact(self, like: TrainState, *, at_most: Optional[int] = None) -> Intact:
        """The newest checkpoint (of epoch <= ``at_most``, if given) that restores and verifies.

        Tries the checkpoints newest first with :meth:`restore` and :meth:`meta`; each one
        that raises CheckpointError is recorded in ``skipped`` as ``(epoch, message)``.

        Returns:
          :class:`Intact` ``(state, meta, skipped)``.

        Raises:
          FileNotFoundError if there is no checkpoint at all; CheckpointError if none is
          intact, listing why each was refused.
        """
        self._check_open()
        if not isinstance(like, TrainState):
            raise TypeError(f"like: expected a jaxmlp.train.step.TrainState, got {type(like).__name__}.")
        epochs = self.epochs()
        if at_most is not None:
            epochs = [e for e in epochs if e <= at_most]
        if not epochs:
            raise FileNotFoundError(f"directory: no checkpoint in {self.directory}.")
        skipped = []
        for epoch in reversed(epochs):
            try:
                state = self.restore(like, epoch)
                meta = self.meta(epoch)
            except CheckpointError as e:
                skipped.append((epoch, str(e)))
                continue
            return Intact(state, meta, skipped)
        lines = "\n".join(f"  epoch {e}: {why}" for e, why in skipped)
        raise CheckpointError(f"no intact checkpoint in {self.directory}; every one was refused:\n"
                              f"{lines}", self.directory, skipped)


def newest_intact(directory: str | os.PathLike, like: TrainState, *,
                  at_most: Optional[int] = None) -> Intact:
    """:meth:`Checkpoints.newest_intact` on ``directory`` (opened and closed here)."""
    with Checkpoints(directory, read_only=True) as store:
        return store.newest_intact(like, at_most=at_most)


# ----------------------------------------------------------------------------- resuming a run


class Readable(NamedTuple):
    """What :func:`newest_readable_meta` returns.

    Attributes:
      epoch: the epoch of the newest checkpoint whose metadata verifies.
      meta: that metadata (the JSON the run saved, integrity record removed).
      skipped: ``[(epoch, reason), ...]`` for each newer checkpoint whose metadata was
        refused, newest first.
    """

    epoch: int
    meta: dict
    skipped: list


def checkpoint_dir(path: str | os.PathLike) -> str:
    """``path/checkpoints`` when ``path`` is a run's output folder (it holds such a folder),
    else ``path`` itself: where a run given either writes or finds its checkpoints."""
    path = os.fspath(path)
    sub = os.path.join(path, "checkpoints")
    return sub if os.path.isdir(sub) else path


def newest_readable_meta(directory: str | os.PathLike) -> Readable:
    """The newest checkpoint in ``directory`` whose metadata verifies (digest of its JSON).

    Only the metadata is read (no arrays), so a run can check its configuration against the
    saved one before building anything; :func:`resume` then restores the arrays.

    Returns:
      :class:`Readable` ``(epoch, meta, skipped)``.

    Raises:
      FileNotFoundError: no checkpoint at all in ``directory``.
      CheckpointError: the directory cannot be read, or every checkpoint's metadata is
        damaged (``skipped`` lists them, newest first).
    """
    directory = os.fspath(directory)
    skipped = []
    with Checkpoints(directory, read_only=True) as store:
        epochs = store.epochs()
        if not epochs:
            raise FileNotFoundError(f"directory: no checkpoint in {directory}.")
        for epoch in reversed(epochs):
            try:
                return Readable(epoch, store.meta(epoch), skipped)
            except CheckpointError as e:
                skipped.append((epoch, str(e)))
    lines = "\n".join(f"  epoch {e}: {why}" for e, why in skipped)
    raise CheckpointError(f"no intact checkpoint in {directory}; every one was refused:\n"
                          f"{lines}", directory, skipped)


def resume(directory: str | os.PathLike, like: TrainState, *, at_most: Optional[int] = None,
           skipped: Sequence = ()) -> Intact:
    """:func:`newest_intact` (epoch <= ``at_most``) with the checkpoints refused earlier
    (``skipped``, e.g. :func:`newest_readable_meta`'s) listed first in its ``skipped``.

    Returns :class:`Intact` ``(state, meta, skipped)``: the restored state (arrays and meta
    verified against their digests) and every refused checkpoint, newest first.

    Raises:
      FileNotFoundError: no checkpoint of epoch <= ``at_most``.
      CheckpointError: none is intact; its ``skipped`` holds ``skipped`` and the new ones.
    """
    try:
        intact = newest_intact(directory, like, at_most=at_most)
    except CheckpointError as e:
        if e.skipped is None:
            raise
        every = list(skipped) + list(e.skipped)
        lines = "\n".join(f"  epoch {ep}: {why}" for ep, why in every)
        raise CheckpointError(f"no intact checkpoint in {os.fspath(directory)}; every one was "
                              f"refused:\n{lines}", os.fspath(directory), every) from None
    return intact._replace(skipped=list(skipped) + list(intact.skipped))


def set_aside_damaged(directory: str | os.PathLike, epochs: Sequence[int]) -> list[tuple[int, str]]:
    """Renames each damaged checkpoint ``directory/<epoch>`` to ``<epoch>.damaged`` (or
    ``<epoch>.damaged2``, ... when that name is taken): kept for inspection, ignored by orbax
    and :func:`latest_epoch`, so that a resumed run can write those epochs again.

    Epochs without a folder are passed over. Returns ``[(epoch, new_path), ...]`` of the
    folders moved, in the order given.
    """
    moved = []
    for epoch in epochs:
        src = os.path.join(os.fspath(directory), str(_epoch(epoch)))
        if os.path.isdir(src):
            dst, n = src + ".damaged", 1
            while os.path.exists(dst):
                n += 1
                dst = f"{src}.damaged{n}"
            os.rename(src, dst)
            moved.append((int(epoch), dst))
    return moved


def _epoch(epoch: Any) -> int:
    """``epoch`` as an int; TypeError/ValueError naming ``epoch`` unless it is an integer >= 0."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise TypeError(f"epoch: expected an integer >= 0, got {type(epoch).__name__} {epoch!r}.")
    if epoch < 0:
        raise ValueError(f"epoch: expected an integer >= 0, got {epoch}.")
    return int(epoch)


def params_digest(params: Any) -> str:
    """sha256 (hex) of a parameter pytree: for every leaf in ``jax.tree.leaves`` order, its
    ``(shape, dtype)`` and its bytes (C order). Equal digests mean bit-identical parameters
    (how a resumed run is compared with an uninterrupted one)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.name)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class EpochWriter:
    """An ``on_epoch_end`` callback for :func:`jaxmlp.fit` that checkpoints a run.

    Saves the state into ``store`` (a :class:`Checkpoints`) after every epoch that is a
    multiple of ``every`` and after ``last_epoch``, with the metadata ``{**meta, "history":
    rows}``: ``rows`` are ``history`` (a resumed run's earlier epochs) followed by the row of
    every epoch seen so far, so that each checkpoint carries the history up to its own epoch.
    ``last_saved`` is the newest epoch on disk (``latest_epoch`` of the store at the start).
    Returns None (never stops the run).
    """

    def __init__(self, store: Checkpoints, every: int, last_epoch: int, meta: dict,
                 history: Sequence[dict] = ()):
        if not isinstance(store, Checkpoints):
            raise TypeError(f"store: expected a jaxmlp.train.checkpoint.Checkpoints, got "
                            f"{type(store).__name__}.")
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every: expected a positive integer, got {every!r}.")
        self.store, self.every, self.last_epoch = store, int(every), _epoch(last_epoch)
        self.meta, self.rows = dict(meta), list(history)
        self.last_saved = store.latest_epoch()

    def __call__(self, state: TrainState, row: dict) -> None:
        self.rows.append(row)
        if state.epoch % self.every == 0 or state.epoch == self.last_epoch:
            self.store.save(state, {**self.meta, "history": list(self.rows)})
            self.last_saved = int(state.epoch)
