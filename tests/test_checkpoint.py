"""jaxmlp.train.checkpoint: bit-exact save/restore of a TrainState, atomic writes, mismatches refused,
damaged checkpoints reported (never restored silently), fallback to the newest intact one."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.train.checkpoint import CheckpointError, Checkpoints, latest_epoch, newest_intact, state_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = jaxmlp.Network((6, 5, 3), ("relu", "softmax"), "categorical_cross_entropy")


def _state(net=NET, optimizer="adam", seed=0, epoch=1, steps=2):
    """A TrainState after a few real Adam steps (non-trivial opt_state)."""
    opt = train.make_optimizer(optimizer, 1e-2)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=jnp.float32)
    opt_state = opt.init(params)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(net.sizes[0], 8)).astype(np.float32)
    Y = np.eye(net.sizes[-1], dtype=np.float32)[:, rng.integers(0, net.sizes[-1], 8)]
    step = train.make_train_step(net, opt)
    for _ in range(steps):
        params, opt_state, _ = step(params, opt_state, X, Y)
    return train.TrainState(params, opt_state, jax.random.PRNGKey(seed + 100), epoch)


def _np_state(seed, epoch):
    """A TrainState built in NumPy only: the same bits with or without jax_enable_x64."""
    rng = np.random.default_rng(seed)
    opt = train.make_optimizer("adam", 1e-2)
    params = [{"W": rng.normal(size=s["W"]).astype(np.float32),
               "b": rng.normal(size=s["b"]).astype(np.float32)} for s in NET.param_shapes()]
    return train.TrainState(params, opt.init(params), np.array([seed, 7], np.uint32), epoch)


def _like(net=NET, optimizer="adam"):
    opt = train.make_optimizer(optimizer, 1e-2)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(99), dtype=jnp.float32)
    return train.TrainState(params, opt.init(params), jax.random.PRNGKey(0), 0)


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_roundtrip_is_bit_exact_with_meta(tmp_path):
    state = _state(epoch=4)
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(state, {"network": {"sizes": [6, 5, 3]}, "history": [{"epoch": 4, "cost": 0.5}]})
        restored = ck.restore(_like())
        meta = ck.meta()
    assert restored.epoch == 4
    _assert_bitwise_equal(restored.params, state.params)
    _assert_bitwise_equal(restored.opt_state, state.opt_state)
    _assert_bitwise_equal(restored.key, state.key)
    assert type(restored.opt_state[0]) is type(state.opt_state[0])  # ScaleByAdamState kept
    assert meta == {"network": {"sizes": [6, 5, 3]}, "history": [{"epoch": 4, "cost": 0.5}], "epoch": 4}


def test_epochs_latest_and_max_to_keep(tmp_path):
    d = tmp_path / "ck"
    assert latest_epoch(d) is None  # no folder yet
    with Checkpoints(d, max_to_keep=2) as ck:
        assert ck.latest_epoch() is None
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ck.restore(_like())
        states = {e: _state(seed=e, epoch=e) for e in (1, 2, 3)}
        for e in (1, 2, 3):
            ck.save(states[e])
        assert ck.epochs() == [2, 3] and ck.latest_epoch() == 3
        _assert_bitwise_equal(ck.restore(_like(), epoch=2).params, states[2].params)
        with pytest.raises(ValueError, match=r"epoch: expected one of the saved epochs \[2, 3\], got 1"):
            ck.restore(_like(), epoch=1)
        with pytest.raises(ValueError, match="a checkpoint for epoch 3 already exists"):
            ck.save(states[3])
    assert latest_epoch(d) == 3


def test_restore_refuses_another_architecture_or_optimizer(tmp_path):
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(_state(epoch=1))
        other = jaxmlp.Network((6, 7, 3), ("relu", "softmax"), "categorical_cross_entropy")
        with pytest.raises(ValueError, match=r"params/0/W holds shape \(5, 6\) float32, expected shape \(7, 6\) float32"):
            ck.restore(_like(net=other))
        deeper = jaxmlp.Network((6, 5, 4, 3), ("relu", "relu", "softmax"), "categorical_cross_entropy")
        with pytest.raises(ValueError, match="another architecture or optimizer"):
            ck.restore(_like(net=deeper))
        with pytest.raises(ValueError, match=r"opt_state/0/count holds shape \(\) int32, expected nothing"):
            ck.restore(_like(optimizer="momentum"))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpoints(tmp_path, max_to_keep=0)
    with Checkpoints(tmp_path / "ck") as ck:
        with pytest.raises(TypeError, match="state: expected a jaxmlp.train.step.TrainState"):
            ck.save({"params": 1})
        with pytest.raises(ValueError, match="state.epoch"):
            ck.save(_state(epoch=-1))
        with pytest.raises(TypeError, match="like: expected"):
            ck.restore(None)


def test_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path):
    """A writer killed (os._exit) inside orbax's finalize step of epoch 2 -- all files written,
    the rename not done -- leaves epoch 1 as the newest complete checkpoint; the leftover
    temporary folder is ignored, then removed (in the background) by the next Checkpoints on
    the folder, and saving epoch 2 again works."""
    d = str(tmp_path / "ck")
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        from orbax.checkpoint._src.path import atomicity
        from test_checkpoint import _np_state
        from jaxmlp.train.checkpoint import Checkpoints
        ck = Checkpoints({d!r})
        ck.save(_np_state(1, epoch=1))
        def die(self, *a, **k):
            print("killed while finalizing", self.get(), flush=True)
            os._exit(17)
        atomicity.AtomicRenameTemporaryPath.finalize = die
        atomicity.CommitFileTemporaryPath.finalize = die
        ck.save(_np_state(2, epoch=2))
        print("not reached")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 17, out.stderr[-3000:]
    assert "killed while finalizing" in out.stdout and "not reached" not in out.stdout
    leftovers = [n for n in os.listdir(d) if "tmp" in n]
    assert leftovers and leftovers[0].startswith("2.")  # the half-done epoch 2
    assert latest_epoch(d) == 1
    with Checkpoints(d) as ck:
        assert ck.epochs() == [1]
        restored = ck.restore(_like())
        _assert_bitwise_equal(restored.params, _np_state(1, 1).params)
        _assert_bitwise_equal(restored.key, _np_state(1, 1).key)
        ck.save(_np_state(2, epoch=2))  # waits for orbax's clean-up of leftovers first
        assert ck.epochs() == [1, 2]
        assert not [n for n in os.listdir(d) if "tmp" in n]
        _assert_bitwise_equal(ck.restore(_like()).params, _np_state(2, 2).params)


# ----------------------------------------------------------------------------- integrity

BIG = jaxmlp.Network((64, 128, 10), ("relu", "softmax"), "categorical_cross_entropy")


def _np_state_of(net, seed, epoch):
    """A TrainState of ``net`` built in NumPy (Adam state with non-zero moments)."""
    rng = np.random.default_rng(seed)
    opt = train.make_optimizer("adam", 1e-2)
    params = [{"W": rng.normal(size=s["W"]).astype(np.float32),
               "b": rng.normal(size=s["b"]).astype(np.float32)} for s in net.param_shapes()]
    opt_state = jax.tree.map(lambda a: np.asarray(a) + np.float32(rng.normal()) if np.ndim(a) else a,
                             opt.init(params))
    return train.TrainState(params, opt_state, np.array([seed, 7], np.uint32), epoch)


def _bitwise_same(a, b) -> bool:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(np.asarray(x).dtype == np.asarray(y).dtype
                            and np.asarray(x).tobytes() == np.asarray(y).tobytes()
                            for x, y in zip(la, lb))


def _damage(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "delete":
        os.remove(path)
        return
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "first byte":
        data[0] ^= 0xFF
    elif how == "last byte":
        data[-1] ^= 0xFF
    elif how == "middle bit":
        data[len(data) // 2] ^= 0x01
    elif how == "16 bytes at 1/3":
        start = len(data) // 3
        for i in range(start, min(start + 16, len(data))):
            data[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.slow
def test_every_file_damaged_in_turn_is_detected_or_harmless(tmp_path):
    """Each file of a checkpoint (orbax's JSON, its OCDBT manifests and data files, the meta
    JSON with the digest) damaged in six ways, one at a time: restore either raises a
    CheckpointError (a ValueError) or returns arrays AND meta bit-identical to those saved.
    Never anything else, never different numbers. A network with a 128x64 weight matrix so
    that orbax writes raw data files, whose corruption only the digest can see."""
    like = _np_state_of(BIG, 5, 0)
    saved = _np_state_of(BIG, 1, 1)
    src = tmp_path / "src"
    with Checkpoints(src) as ck:
        ck.save(saved, {"network": "64-128-10", "history": [1.5, 0.25]})
    files = sorted(os.path.relpath(os.path.join(r, f), src) for r, _, fs in os.walk(src) for f in fs)
    assert len(files) >= 10 and any("/d/" in f for f in files)
    outcome = {}
    for rel in files:
        for how in ("first byte", "last byte", "middle bit", "16 bytes at 1/3", "truncate", "delete"):
            work = tmp_path / "work"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(src, work)
            _damage(os.path.join(work, rel), how)
            try:
                with Checkpoints(work) as ck:
                    restored = ck.restore(like)
                    meta = ck.meta()
            except CheckpointError as e:
                assert str(work) in str(e)  # names the checkpoint (and the file where known)
                outcome[rel, how] = "detected: " + str(e)
                continue
            assert _bitwise_same(restored.params, saved.params), (rel, how)
            assert _bitwise_same(restored.opt_state, saved.opt_state), (rel, how)
            assert _bitwise_same(restored.key, saved.key), (rel, how)
            assert restored.epoch == 1 and meta == {"network": "64-128-10", "history": [1.5, 0.25],
                                                    "epoch": 1}, (rel, how)
            outcome[rel, how] = "harmless"
    detected = [k for k, v in outcome.items() if v.startswith("detected")]
    by_digest = [k for k, v in outcome.items() if "do not match the digest" in v]
    # the files orbax needs are all guarded; raw data damage is caught by the digest alone
    for rel in ("meta/metadata", "state/_METADATA", "state/manifest.ocdbt"):
        assert all(outcome[f"1/{rel}", how].startswith("detected") for how in
                   ("first byte", "truncate", "delete")), rel
    assert by_digest and all("ocdbt.process_0/d/" in rel for rel, _ in by_digest)
    assert any(outcome[f"1/meta/metadata", how].startswith("detected: checkpoint") and
               "meta/metadata" in outcome[f"1/meta/metadata", how] for how in ("middle bit",))
    assert len(detected) >= 20


def test_digest_mismatch_names_the_arrays(tmp_path):
    """Well-formed arrays that are not the ones saved (epoch 2's state files moved under
    epoch 1): orbax reads them happily; the digest refuses them."""
    d = tmp_path / "ck"
    with Checkpoints(d) as ck:
        ck.save(_np_state(1, epoch=1))
        ck.save(_np_state(2, epoch=2))
    shutil.rmtree(d / "1" / "state")
    shutil.copytree(d / "2" / "state", d / "1" / "state")
    with Checkpoints(d) as ck:
        with pytest.raises(CheckpointError, match=r"1/state do not match the digest recorded when "
                           r"they were saved \(key, params/0/W, params/0/b, params/1/W and 1 more\)"):
            ck.restore(_like(), epoch=1)
        _assert_bitwise_equal(ck.restore(_like(), epoch=2).params, _np_state(2, 2).params)


def test_edited_meta_and_missing_record_are_refused(tmp_path):
    d = tmp_path / "ck"
    with Checkpoints(d) as ck:
        ck.save(_np_state(1, epoch=1), {"config": {"lr": 0.1}})
    meta_file = d / "1" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert set(meta["integrity"]) == {"version", "algorithm", "state", "arrays", "meta"}
    assert meta["integrity"]["state"] == state_digest(_np_state(1, epoch=1))["state"]
    meta["config"]["lr"] = 0.2  # edited by hand
    meta_file.write_text(json.dumps(meta))
    with Checkpoints(d) as ck:
        with pytest.raises(CheckpointError, match=r"metadata does not match the digest"):
            ck.meta()
        with pytest.raises(CheckpointError, match=r"metadata does not match the digest"):
            ck.restore(_like())
        assert ck.meta(verify=False)["config"] == {"lr": 0.2}
    del meta["integrity"]  # as written before digests were recorded
    meta_file.write_text(json.dumps(meta))
    with Checkpoints(d) as ck:
        with pytest.raises(CheckpointError, match="holds no integrity record"):
            ck.restore(_like())
        _assert_bitwise_equal(ck.restore(_like(), verify=False).params, _np_state(1, 1).params)


def test_renamed_checkpoint_is_refused(tmp_path):
    d = tmp_path / "ck"
    with Checkpoints(d) as ck:
        ck.save(_np_state(1, epoch=1))
    os.rename(d / "1", d / "5")
    with Checkpoints(d) as ck:
        with pytest.raises(CheckpointError, match="its metadata is for epoch 1, not 5"):
            ck.restore(_like())


def test_newest_intact_skips_damaged_checkpoints(tmp_path):
    d = tmp_path / "ck"
    with Checkpoints(d, max_to_keep=None) as ck:
        for e in (1, 2, 3):
            ck.save(_np_state(e, epoch=e), {"e": e})
    os.remove(d / "3" / "state" / "manifest.ocdbt")
    meta_file = d / "2" / "meta" / "metadata"
    meta_file.write_bytes(meta_file.read_bytes()[:40])
    with Checkpoints(d) as ck:
        state, meta, skipped = ck.newest_intact(_like())
        assert state.epoch == 1 and meta == {"e": 1, "epoch": 1}
        _assert_bitwise_equal(state.params, _np_state(1, 1).params)
        assert [e for e, _ in skipped] == [3, 2]
        assert "3/state" in skipped[0][1] and "2/meta/metadata is damaged" in skipped[1][1]
        assert ck.newest_intact(_like(), at_most=1).skipped == []
    os.remove(d / "1" / "state" / "_METADATA")
    with pytest.raises(CheckpointError, match=r"(?s)no intact checkpoint in .*epoch 3: .*epoch 2: "
                       r".*epoch 1: .*1/state/_METADATA is missing"):
        newest_intact(d, _like())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        newest_intact(tmp_path / "empty", _like())


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_orbax_failures_are_one_quiet_error(tmp_path):
    """A damaged checkpoint read in a fresh process: one CheckpointError, and nothing on
    stderr (no asyncio "Event loop is closed" / "Task exception was never retrieved"
    tracebacks, no orbax log lines)."""
    d = tmp_path / "ck"
    with Checkpoints(d) as ck:
        ck.save(_np_state(1, epoch=1))
    os.remove(d / "1" / "state" / "manifest.ocdbt")
    ckpt_meta = d / "1" / "_CHECKPOINT_METADATA"
    ckpt_meta.write_bytes(ckpt_meta.read_bytes()[:30])
    code = textwrap.dedent(f"""
        import sys, gc
        sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        from test_checkpoint import _like
        from jaxmlp.train.checkpoint import Checkpoints, CheckpointError
        try:
            with Checkpoints({str(d)!r}) as ck:
                ck.restore(_like())
        except CheckpointError as e:
            print("CheckpointError:", e)
        gc.collect()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("CheckpointError: checkpoint ") and "NOT_FOUND" in out.stdout
    assert out.stderr == "", out.stderr[-3000:]


def test_a_file_where_the_folder_should_be_is_refused_at_once(tmp_path):
    """Checkpoints(path) with path a file: one CheckpointError naming it when opened, before
    any save (orbax printed a traceback from its background thread at the first save)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(CheckpointError, match=r"^checkpoint .*afile: exists and is not a "
                                              r"folder; give a folder") as e:
        Checkpoints(afile)
    assert e.value.path == str(afile)
