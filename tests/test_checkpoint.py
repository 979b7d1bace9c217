"""jaxmlp.checkpoint: bit-exact save/restore of a TrainState, atomic writes, mismatches refused."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import training
from jaxmlp.checkpoint import Checkpoints, latest_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = jaxmlp.Network((6, 5, 3), ("relu", "softmax"), "categorical_cross_entropy")


def _state(net=NET, optimizer="adam", seed=0, epoch=1, steps=2):
    """A TrainState after a few real Adam steps (non-trivial opt_state)."""
    opt = training.make_optimizer(optimizer, 1e-2)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=jnp.float32)
    opt_state = opt.init(params)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(net.sizes[0], 8)).astype(np.float32)
    Y = np.eye(net.sizes[-1], dtype=np.float32)[:, rng.integers(0, net.sizes[-1], 8)]
    step = training.make_train_step(net, opt)
    for _ in range(steps):
        params, opt_state, _ = step(params, opt_state, X, Y)
    return training.TrainState(params, opt_state, jax.random.PRNGKey(seed + 100), epoch)


def _np_state(seed, epoch):
    """A TrainState built in NumPy only: the same bits with or without jax_enable_x64."""
    rng = np.random.default_rng(seed)
    opt = training.make_optimizer("adam", 1e-2)
    params = [{"W": rng.normal(size=s["W"]).astype(np.float32),
               "b": rng.normal(size=s["b"]).astype(np.float32)} for s in NET.param_shapes()]
    return training.TrainState(params, opt.init(params), np.array([seed, 7], np.uint32), epoch)


def _like(net=NET, optimizer="adam"):
    opt = training.make_optimizer(optimizer, 1e-2)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(99), dtype=jnp.float32)
    return training.TrainState(params, opt.init(params), jax.random.PRNGKey(0), 0)


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
        with pytest.raises(TypeError, match="state: expected a jaxmlp.training.TrainState"):
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
        from jaxmlp.checkpoint import Checkpoints
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
