"""One writer per checkpoint folder, readers that never touch a writer's files.

A writer's unfinished save lives in ``DIR/<epoch>.orbax-checkpoint-tmp*`` until orbax renames
it; a reader opened meanwhile must leave it alone, and only the writer holding the folder's
lock removes leftovers. A second writer is refused by name at its first save or claim, and
a closed Checkpoints at any use."""

import fcntl
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from jaxmlp import train
from jaxmlp.nn.network import Network
from jaxmlp.train.checkpoint import (CheckpointError, Checkpoints, latest_epoch, newest_intact,
                                     newest_readable_meta, resume)

from helpers import load_script  # noqa: E402

cli = load_script("train", "train_cli")

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


def _hold_lock(d):
    """An exclusive flock on folder ``d`` through a new open file description: it conflicts
    with every other one, of this process too, as another writer's would."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_closed_checkpoints_refuses_every_use(tmp_path):
    """Closed, an object is no writer any more: it cannot save beside the folder's next one."""
    d = str(tmp_path / "ck")
    a, b = Checkpoints(d), Checkpoints(d)
    a.save(_state(1, 1))
    a.close()
    b.save(_state(2, 2))  # b is the writer now
    closed = (rf"checkpoint folder {d}: this Checkpoints is closed; open a new Checkpoints on "
              r"the folder to use it again\.")
    like = _state(0, 0)
    uses = [lambda: a.save(_state(3, 3)), a.claim, lambda: a.restore(like), a.meta, a.epochs,
            a.latest_epoch, lambda: a.newest_intact(like)]
    for use in uses:
        with pytest.raises(CheckpointError, match=closed) as e:
            use()
        assert e.value.path == d
    a.close()  # closing again does nothing
    assert b.epochs() == [1, 2] and sorted(os.listdir(d)) == ["1", "2"]
    b.close()
    with Checkpoints(d) as c:  # b's close released the folder
        c.save(_state(3, 3))
        assert c.epochs() == [1, 2, 3]


def test_claim_makes_the_writer_before_any_save(tmp_path):
    d = str(tmp_path / "ck")
    first = Checkpoints(d)
    tmp = _fake_unfinished(d, 2)
    first.claim()
    first.claim()  # once is enough: again does nothing
    assert not os.path.exists(tmp)  # the writer removed the killed writer's leftover
    with Checkpoints(d) as second:
        for use in (second.claim, lambda: second.save(_state(1, 1))):
            with pytest.raises(CheckpointError, match=rf"checkpoint folder {d}: another process "
                               r"is writing there .* One writer per checkpoint folder"):
                use()
    with Checkpoints(d, read_only=True) as reader:
        with pytest.raises(ValueError, match=rf"claim: this Checkpoints of {d} was opened with "
                           r"read_only=True; open it without read_only to write\."):
            reader.claim()
    first.save(_state(1, 1))
    assert first.epochs() == [1]
    first.close()
    fd = _hold_lock(d)  # after close the folder is free: another writer gets the lock
    os.close(fd)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_does_not_keep_the_writer_lock(tmp_path):
    """flock belongs to the open file description, which a forked child shares: the child
    closes its copy at once, so the parent's close() releases the folder while it runs."""
    d = str(tmp_path / "ck")
    w = Checkpoints(d)
    w.save(_state(1, 1))
    r, wr = os.pipe()
    ready_r, ready_w = os.pipe()
    with warnings.catch_warnings():  # JAX warns on fork: the child only waits and exits
        warnings.simplefilter("ignore", RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # the child (fork's hooks have run): says so, waits for the parent, exits
        try:
            os.close(wr)
            os.write(ready_w, b"1")
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        with pytest.raises(BlockingIOError):
            _hold_lock(d)  # w holds it
        w.close()
        fd = _hold_lock(d)  # free while the child is alive
        os.close(fd)
        with Checkpoints(d) as w2:
            w2.save(_state(2, 2))
            assert w2.epochs() == [1, 2]
    finally:
        os.close(wr)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_py_refuses_a_held_folder_before_removing_anything(tmp_path, capsys, overwrite):
    """--resume (a resumed run removes its stale model.npz) and --overwrite (an earlier run's
    files) with the checkpoint folder held by another writer: exit 2 naming the folder, the
    earlier files untouched, nothing trained."""
    out = tmp_path / "run"
    cdir = out / "checkpoints"
    if overwrite:  # an earlier run's files (its checkpoint folder empty): --overwrite replaces them
        cdir.mkdir(parents=True)
        for name, data in (("model.npz", b"earlier model"), ("results.json", b"{}")):
            (out / name).write_bytes(data)
        argv = ["--dataset", "breast_cancer", "--hidden", "4", "--epochs", "1",
                "--checkpoint-every", "1", "--overwrite", "--out", str(out)]
    else:  # a run of 1 epoch, resumed to 2 (which removes its model.npz first)
        assert cli.main(["--dataset", "breast_cancer", "--hidden", "4", "--epochs", "1",
                         "--checkpoint-every", "1", "--no-progress", "--no-plot",
                         "--out", str(out)]) == 0
        argv = ["--resume", str(out), "--epochs", "2"]
    files = {name: (out / name).read_bytes() for name in ("model.npz", "results.json")}
    capsys.readouterr()
    fd = _hold_lock(str(cdir))
    try:
        assert cli.main([*argv, "--no-progress", "--no-plot"]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert (f"train.py: error: checkpoint folder {cdir}: another process is writing there"
            in err), err
    assert "removed" not in err
    assert {name: (out / name).read_bytes() for name in files} == files
    assert latest_epoch(cdir) == (None if overwrite else 1)  # no epoch trained or saved
