"""Checkpoints of a training run with orbax: params, optimizer state, PRNG key, epoch.

One directory holds a series of checkpoints numbered by epoch (the orbax "step")::

    DIR/<epoch>/state/   params, opt_state, key (arrays, orbax StandardSave)
    DIR/<epoch>/meta/    JSON: epoch plus whatever the caller adds (network, config, history)

Writes are synchronous (a checkpoint is on disk when :meth:`Checkpoints.save` returns; the
states here are kilobytes) and atomic: orbax writes into ``DIR/<epoch>.orbax-checkpoint-tmp``
and renames it to ``DIR/<epoch>`` only once every file is written. A process killed during a
save leaves only the temporary directory, which :func:`latest_epoch` and :meth:`restore`
ignore and the next :class:`Checkpoints` on DIR deletes (in the background, finished before
its first save); the previous checkpoint stays intact (``tests/test_checkpoint.py`` kills a
writer inside orbax's finalize step to check this).

Restoring needs a ``like`` :class:`~jaxmlp.training.TrainState` with the structure, shapes and
dtypes expected (``init_params`` + ``optimizer.init``); a checkpoint written for another
architecture or optimizer is refused with a ValueError naming the first differing array,
before anything is read.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Optional

import jax
import numpy as np

from jaxmlp.training import TrainState

__all__ = ["Checkpoints", "latest_epoch"]

def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: ~2 s, and only the CLI needs it

    return ocp


def _key_str(k) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{"params/0/W": (shape, dtype), ...}`` for every array leaf; NamedTuple fields by name."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    )
    return {
        "/".join(_key_str(k) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype).name)
        for path, leaf in leaves
    }


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
    listing only (no orbax import), so it is cheap to call before anything else.
    """
    epochs = _finalized_epochs(os.fspath(directory))
    return epochs[-1] if epochs else None


class Checkpoints:
    """Epoch-numbered checkpoints of a :class:`~jaxmlp.training.TrainState` in one directory.

    Arguments:
      directory: where the checkpoints live (created on the first save).
      max_to_keep: how many of the newest checkpoints to keep (None: all).

    Use as a context manager, or call :meth:`close`::

        with Checkpoints("runs/digits/checkpoints") as ckpt:
            ckpt.save(TrainState(params, opt_state, key, epoch), {"network": ...})
            state = ckpt.restore(like)            # the newest one
            meta = ckpt.meta()                    # its JSON
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: Optional[int] = 3):
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, numbers.Integral)
            or max_to_keep < 1
        ):
            raise ValueError(f"max_to_keep: expected a positive integer or None, got {max_to_keep!r}.")
        ocp = _ocp()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
        )

    # -- context manager
    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._manager.close()

    # -- queries
    def epochs(self) -> list[int]:
        """Epochs of the complete checkpoints, oldest first."""
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

    def meta(self, epoch: Optional[int] = None) -> dict:
        """The JSON metadata saved with checkpoint ``epoch`` (default: the newest)."""
        ocp = _ocp()
        epoch = self._epoch_or_latest(epoch)
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored.meta)

    # -- save / restore
    def save(self, state: TrainState, meta: Optional[dict] = None) -> None:
        """Writes ``state`` as checkpoint ``state.epoch`` (atomically), with JSON ``meta``.

        ``meta`` must be JSON-serialisable; ``"epoch"`` is added to it. Overwriting an
        existing epoch is refused (ValueError).
        """
        if not isinstance(state, TrainState):
            raise TypeError(f"state: expected a jaxmlp.training.TrainState, got {type(state).__name__}.")
        epoch = state.epoch
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"state.epoch: expected a non-negative integer, got {epoch!r}.")
        if int(epoch) in self.epochs():
            raise ValueError(f"state.epoch: a checkpoint for epoch {epoch} already exists in {self.directory}.")
        ocp = _ocp()
        meta = dict(meta or {})
        meta["epoch"] = int(epoch)
        tree = {"params": state.params, "opt_state": state.opt_state, "key": state.key}
        self._manager.save(
            int(epoch),
            args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
        )
        self._manager.wait_until_finished()

    def restore(self, like: TrainState, epoch: Optional[int] = None) -> TrainState:
        """Reads checkpoint ``epoch`` (default: the newest) into the structure of ``like``.

        Arguments:
          like: a TrainState whose params, opt_state and key have the expected structure,
            shapes, dtypes (and shardings); its epoch is ignored.
          epoch: which checkpoint; None for the newest.

        Returns:
          the saved TrainState, bit for bit, with ``epoch`` set to the checkpoint's epoch.

        Raises:
          FileNotFoundError if there is no checkpoint; ValueError if the saved arrays do not
          match ``like`` (another architecture or optimizer), naming the first difference.
        """
        if not isinstance(like, TrainState):
            raise TypeError(f"like: expected a jaxmlp.training.TrainState, got {type(like).__name__}.")
        ocp = _ocp()
        epoch = self._epoch_or_latest(epoch)
        target = {"params": like.params, "opt_state": like.opt_state, "key": like.key}
        saved = _specs(self._manager.item_metadata(epoch).state.tree)
        wanted = _specs(target)
        # params first: a different architecture is then reported on its weights
        for path in sorted(set(saved) | set(wanted), key=lambda p: (not p.startswith("params"), p)):
            s, w = saved.get(path), wanted.get(path)
            if s != w:
                show = lambda spec: "nothing" if spec is None else f"shape {spec[0]} {spec[1]}"
                raise ValueError(
                    f"checkpoint {self.directory}/{epoch}: {path} holds {show(s)}, expected "
                    f"{show(w)}; it was written for another architecture or optimizer."
                )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        ).state
        return TrainState(
            params=restored["params"],
            opt_state=restored["opt_state"],
            key=restored["key"],
            epoch=int(epoch),
        )
