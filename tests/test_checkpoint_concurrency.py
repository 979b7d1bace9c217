"""One writer per checkpoint folder, readers that never touch a writer's files.

A writer's unfinished save lives in ``DIR/<epoch>.orbax-checkpoint-tmp*`` until orbax renames
it; a reader opened meanwhile must leave it alone, and only the writer holding the folder's
lock removes leftovers. A second writer is refused by name at its first save."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxmlp import train
from jaxmlp.nn.network import Network
from jaxmlp.train.checkpoint import (CheckpointError, Checkpoints, newest_intact,
                                     newest_readable_meta, resume)

NET = Network((4, 3, 2), ("relu", "softmax"), "categorical_cross_entropy")


def _state(seed, epoch):
    rng = np.random.default_rng(seed)
    opt = train.make_optimizer("adam", 1e-2)
    params = [{"W": rng.normal(size=s["W"]).astype(np.float32),
               "b": rng.normal(size=s["b"]).astype(np.float32)} for s in NET.param_shapes()]
    return train.TrainState(params, opt.init(params), np.array([seed, 7], np.uint32), epoch)


def _fake_unfinished(d, epoch):
    """What a writer has on disk in the middle of saving ``epoch``."""
    tmp = os.path.join(d, f"{epoch}.orbax-checkpoint-tmp-1234567")
    os.makedirs(os.path.join(tmp, "state"))
    with open(os.path.join(tmp, "state", "partial"), "wb") as f:
        f.write(b"half")
    return tmp


def test_readers_leave_a_live_writers_unfinished_save_alone(tmp_path):
    d = str(tmp_path / "ck")
    writer = Checkpoints(d)
    writer.save(_state(1, 1), {"run": "a"})
    tmp = _fake_unfinished(d, 2)
    assert newest_readable_meta(d).epoch == 1
    assert newest_intact(d, _state(0, 0)).meta == {"run": "a", "epoch": 1}
    assert resume(d, _state(0, 0)).state.epoch == 1
    with Checkpoints(d) as reader:
        assert reader.epochs() == [1]
    with Checkpoints(d, read_only=True) as reader:
        assert reader.latest_epoch() == 1
        with pytest.raises(ValueError, match=r"opened with read_only=True"):
            reader.save(_state(2, 2))
    assert os.path.exists(os.path.join(tmp, "state", "partial"))
    writer.close()
    # the next writer owns the folder once the first has closed: it removes the leftover
    with Checkpoints(d) as second:
        second.save(_state(3, 3))
        assert second.epochs() == [1, 3]
    assert not [n for n in os.listdir(d) if "tmp" in n]
    assert sorted(os.listdir(d)) == ["1", "3"]  # no lock file added to the folder


def test_a_second_writer_is_refused_by_name(tmp_path):
    d = str(tmp_path / "ck")
    first = Checkpoints(d)
    first.save(_state(1, 1))
    tmp = _fake_unfinished(d, 2)
    second = Checkpoints(d)
    assert second.epochs() == [1]  # reading is allowed
    with pytest.raises(CheckpointError, match=rf"checkpoint folder {d}: another process is "
                       r"writing there .* One writer per checkpoint folder"):
        second.save(_state(2, 2))
    assert os.path.isdir(tmp) and first.epochs() == [1]
    first.save(_state(2, 4))
    first.close()
    second.save(_state(5, 5))
    assert second.epochs() == [1, 4, 5]
    second.close()


def test_a_writer_in_another_process_is_refused(tmp_path):
    """The lock is fcntl.flock on the folder: another process holding it refuses our save."""
    d = tmp_path / "ck"
    d.mkdir()
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(d)!r}, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("locked", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Checkpoints(d) as ck:
            with pytest.raises(CheckpointError, match="another process is writing there"):
                ck.save(_state(1, 1))
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with Checkpoints(d) as ck:  # released when the holder exited
        ck.save(_state(1, 1))
        assert ck.epochs() == [1]


def test_a_save_that_leaves_no_checkpoint_is_an_error(tmp_path):
    """save() reads the finalized checkpoint's JSON files back: a write that did not land
    (here orbax's save replaced by one that writes nothing) is not reported as a success."""
    d = str(tmp_path / "ck")
    with Checkpoints(d) as ck:
        ck._manager.save = lambda *a, **k: None
        with pytest.raises(CheckpointError, match=rf"checkpoint {d}/1: saving epoch 1 did not "
                           rf"leave a readable checkpoint \(.*file {d}/1/meta/metadata is missing"):
            ck.save(_state(1, 1))


def test_read_only_creates_nothing(tmp_path):
    d = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        newest_readable_meta(d)
    assert not d.exists()
    with pytest.raises(TypeError, match=r"read_only: expected True or False, got 1"):
        Checkpoints(d, read_only=1)
