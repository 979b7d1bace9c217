"""What experiments/train.py moved into the library: checkpoint repair
(jaxmlp.train.checkpoint), device placement (jaxmlp.parallel.placement) and DP calibration
(jaxmlp.privacy.calibrate_run, privacy_report): values and errors."""

import importlib.util
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import privacy
from jaxmlp.parallel import placement, sharding
from jaxmlp.train import TrainState, make_optimizer
from jaxmlp.train import checkpoint as ckpt

# ----------------------------------------------------------------------------- checkpoints


def _state(epoch, seed=0):
    net = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=jnp.float32)
    opt = make_optimizer("sgd", 0.1)
    return TrainState(params, opt.init(params), jax.random.PRNGKey(seed), epoch)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Checkpoints of epochs 1, 2 and 3 written by EpochWriter(every=2, last_epoch=3)."""
    cdir = str(tmp_path_factory.mktemp("ck") / "checkpoints")
    with ckpt.Checkpoints(cdir, max_to_keep=None) as store:
        writer = ckpt.EpochWriter(store, 2, 3, {"config": {"lr": 0.1}}, history=[{"epoch": 0}])
        assert writer.last_saved is None
        for e in (1, 2, 3):
            writer(_state(e, seed=e), {"epoch": e})
        assert writer.last_saved == 3
    return cdir


def test_epoch_writer_saves_every_nth_and_the_last_epoch_with_the_history(written):
    with ckpt.Checkpoints(written) as store:
        assert store.epochs() == [2, 3]
        assert store.meta(2)["history"] == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}]
        assert store.meta(3)["history"][-1] == {"epoch": 3}
        assert store.meta(3)["config"] == {"lr": 0.1}


def test_epoch_writer_refuses_bad_arguments(written):
    with ckpt.Checkpoints(written) as store:
        with pytest.raises(ValueError, match=r"every: expected a positive integer, got 0"):
            ckpt.EpochWriter(store, 0, 3, {})
        with pytest.raises(ValueError, match=r"epoch: expected an integer >= 0, got -1"):
            ckpt.EpochWriter(store, 1, -1, {})
    with pytest.raises(TypeError, match="store: expected a jaxmlp.train.checkpoint.Checkpoints"):
        ckpt.EpochWriter(written, 1, 3, {})


def test_checkpoint_dir_prefers_the_checkpoints_subfolder(written, tmp_path):
    run = os.path.dirname(written)
    assert ckpt.checkpoint_dir(run) == written
    assert ckpt.checkpoint_dir(written) == written
    assert ckpt.checkpoint_dir(str(tmp_path)) == str(tmp_path)


def _damage_meta(cdir, epoch):
    path = os.path.join(cdir, str(epoch), "meta", "metadata")
    with open(path, "rb") as f:
        head = f.read()[:40]
    with open(path, "wb") as f:
        f.write(head)


def test_newest_readable_meta_and_resume_skip_damaged_checkpoints(written, tmp_path):
    cdir = str(tmp_path / "c")
    shutil.copytree(written, cdir)
    found = ckpt.newest_readable_meta(cdir)
    assert found.epoch == 3 and found.skipped == [] and found.meta["epoch"] == 3
    _damage_meta(cdir, 3)
    found = ckpt.newest_readable_meta(cdir)
    assert found.epoch == 2 and [e for e, _ in found.skipped] == [3]
    assert "metadata is damaged" in found.skipped[0][1]
    intact = ckpt.resume(cdir, _state(0), at_most=found.epoch, skipped=found.skipped)
    assert intact.state.epoch == 2 and [e for e, _ in intact.skipped] == [3]
    want = _state(2, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(intact.state.params),
                                                    jax.tree.leaves(want.params)))
    _damage_meta(cdir, 2)
    with pytest.raises(ckpt.CheckpointError, match="no intact checkpoint") as info:
        ckpt.newest_readable_meta(cdir)
    assert [e for e, _ in info.value.skipped] == [3, 2]
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.resume(cdir, _state(0), at_most=2, skipped=[(3, "earlier")])
    assert info.value.skipped[0] == (3, "earlier") and info.value.skipped[1][0] == 2
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.newest_readable_meta(str(tmp_path / "empty"))


def test_set_aside_damaged_renames_without_overwriting(tmp_path):
    for name in ("4", "4.damaged", "5"):
        (tmp_path / name).mkdir()
    moved = ckpt.set_aside_damaged(str(tmp_path), [4, 5, 6])
    assert moved == [(4, str(tmp_path / "4.damaged2")), (5, str(tmp_path / "5.damaged"))]
    assert sorted(os.listdir(tmp_path)) == ["4.damaged", "4.damaged2", "5.damaged"]
    assert ckpt.latest_epoch(str(tmp_path)) is None
    with pytest.raises(TypeError, match="epoch: expected an integer >= 0"):
        ckpt.set_aside_damaged(str(tmp_path), ["4"])


def test_params_digest_changes_with_any_bit_and_with_the_dtype():
    p = _state(0).params
    d = ckpt.params_digest(p)
    assert len(d) == 64 and d == ckpt.params_digest(jax.tree.map(np.array, p))
    flipped = jax.tree.map(lambda a: a, p)
    flipped[0]["b"] = flipped[0]["b"].at[0].set(np.float32(1e-30))
    assert ckpt.params_digest(flipped) != d
    assert ckpt.params_digest(jax.tree.map(lambda a: a.astype(jnp.float64), p)) != d


# ----------------------------------------------------------------------------- placement


def test_data_parallel_places_columns_and_replicates_the_rest():
    mesh = sharding.make_mesh()
    D = mesh.devices.size
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3, 4 * D)), rng.normal(size=(2, 4 * D))
    Xt, Yt = rng.normal(size=(3, 4 * D + 1)), rng.normal(size=(2, 4 * D + 1))
    tree = {"w": np.arange(6.0).reshape(2, 3)}
    pl = placement.data_parallel(X, Y, Xt, Yt, tree, batch_size=2 * D, mesh=mesh)
    assert pl.dropped == 0 and pl.mesh is mesh
    assert pl.batch_sharding.spec == jax.sharding.PartitionSpec(None, "data")
    for got, want in zip((pl.X_train, pl.Y_train, pl.X_test, pl.Y_test), (X, Y, Xt, Yt)):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert pl.X_train.sharding.spec == jax.sharding.PartitionSpec(None, "data")
    assert pl.X_test.sharding.is_fully_replicated  # m_test + 1 does not split over D
    assert pl.replicated["w"].sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(pl.replicated["w"]), tree["w"])


def test_multi_process_on_one_process_drops_the_remainder_columns():
    mesh = sharding.make_mesh()
    D = mesh.devices.size
    X, Y = np.arange(3.0 * (2 * D + 1)).reshape(3, -1), np.ones((1, 2 * D + 1))
    pl = placement.multi_process(X, Y, X, Y, (np.zeros(2),), batch_size=D, mesh=mesh)
    assert pl.dropped == (2 * D + 1) % D
    np.testing.assert_array_equal(np.asarray(pl.X_train), X[:, :2 * D + 1 - pl.dropped])
    np.testing.assert_array_equal(np.asarray(pl.X_test), X)


def test_placement_refuses_a_batch_that_does_not_split():
    mesh = sharding.make_mesh()
    D = mesh.devices.size
    X = np.zeros((2, 4))
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        placement.data_parallel(X, X, X, X, (), batch_size=0, mesh=mesh)
    if D > 1:
        with pytest.raises(ValueError, match=f"batch_size: expected a multiple of the {D} devices"):
            placement.multi_process(X, X, X, X, (), batch_size=D + 1, mesh=mesh)


# ----------------------------------------------------------------------------- DP calibration

pytestmark_dp = pytest.mark.skipif(importlib.util.find_spec("dp_accounting") is None,
                                   reason="dp-accounting is not installed")

BASE = dict(num_examples=1000, clip=[1.0], num_layers=2, delta=1e-5)


@pytestmark_dp
def test_calibrate_run_spends_exactly_the_target_over_the_run():
    dp = privacy.calibrate_run(**BASE, expected_batch_size=250, target_epsilon=2.0, epochs=3)
    assert dp.sampling_rate == 0.25 and dp.steps_per_epoch == 4
    assert dp.l2_norm_clip == 1.0 and dp.target_epsilon == 2.0 and dp.accountant == "pld"
    eps = privacy.epsilon(noise_multiplier=dp.noise_multiplier, sampling_rate=0.25, steps=12,
                          delta=1e-5)
    assert 0.99 * 2.0 < eps <= 2.0
    assert dp.noise_multiplier == privacy.calibrate_noise(target_epsilon=2.0, delta=1e-5,
                                                          sampling_rate=0.25, steps=12)
    assert dp.max_batch_size == privacy.padded_batch_size(1000, 0.25, 12)
    # a given sigma is kept (a resumed run); steps fix the padded batch
    kept = privacy.calibrate_run(**BASE, sampling_rate=0.25, noise_multiplier=1.3,
                                 target_epsilon=2.0, steps=40)
    assert kept.noise_multiplier == 1.3 and kept.max_batch_size == privacy.padded_batch_size(1000, 0.25, 40)


@pytestmark_dp
def test_calibrate_run_splits_one_threshold_over_the_layers():
    dp = privacy.calibrate_run(**{**BASE, "num_layers": 4}, sampling_rate=0.1,
                               per_layer_clipping=True, noise_multiplier=1.0, epochs=1)
    assert dp.l2_norm_clip == pytest.approx((0.5,) * 4)
    assert math.isclose(privacy.total_clip(dp.l2_norm_clip), 1.0)
    two = privacy.calibrate_run(**{**BASE, "clip": [1.0, 2.0]}, sampling_rate=0.1,
                                per_layer_clipping=True, noise_multiplier=1.0, epochs=1)
    assert two.l2_norm_clip == (1.0, 2.0)


@pytestmark_dp
@pytest.mark.parametrize("kw, match", [
    (dict(expected_batch_size=1001, noise_multiplier=1.0, epochs=1),
     r"expected_batch_size: expected at most the 1000 training examples of toy, got 1001"),
    (dict(sampling_rate=0.1, expected_batch_size=10, noise_multiplier=1.0, epochs=1),
     "sampling_rate: give it or expected_batch_size, exactly one"),
    (dict(sampling_rate=0.1, noise_multiplier=1.0, epochs=1, delta=1e-3),
     r"delta: expected a value below 1/n = 0.001 \(1000 training examples of toy\), got 0.001"),
    (dict(sampling_rate=0.1, noise_multiplier=1.0, epochs=1, clip=[1.0, 1.0]),
     "clip: expected one threshold"),
    (dict(sampling_rate=0.1, noise_multiplier=1.0, epochs=1, clip=[1.0, 1.0, 1.0],
          per_layer_clipping=True), "clip: expected 1 or 2 thresholds"),
    (dict(sampling_rate=0.1, noise_multiplier=1.0, epochs=1, clip=[0.0]), r"clip\[0\]"),
    (dict(sampling_rate=0.1, epochs=1), "target_epsilon: give it"),
    (dict(sampling_rate=1.0, target_epsilon=1e-3, epochs=2000),
     "target_epsilon: 0.001 cannot be reached in 2000 steps"),
    (dict(sampling_rate=0.1, noise_multiplier=1.0, epochs=1, accountant="gdp"),
     r"accountant: expected one of \['pld', 'rdp'\]"),
])
def test_calibrate_run_errors_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        privacy.calibrate_run(**{**BASE, "data_name": "toy", **kw})


@pytestmark_dp
def test_privacy_report_counts_the_steps_taken():
    dp = privacy.calibrate_run(**BASE, sampling_rate=0.5, noise_multiplier=1.5, epochs=3,
                               accountant="rdp")
    r = privacy.privacy_report(dp, 1000, 2, steps=6, overflows=1)
    assert r["steps"] == 4 and r["steps_per_epoch"] == 2 and r["overflows"] == 1
    assert r["epsilon"] == privacy.epsilon(noise_multiplier=1.5, sampling_rate=0.5, steps=4,
                                           delta=1e-5, accountant="rdp")
    assert r["expected_batch_size"] == 500 and r["clip"] == [1.0] and not r["per_layer_clipping"]
    assert r["overflow_probability_bound"] == privacy.overflow_probability(
        1000, 0.5, dp.max_batch_size, 6) <= 1e-9
    assert privacy.privacy_report(dp, 1000, 0, steps=6)["epsilon"] == 0.0
    with pytest.raises(TypeError, match="dp: expected a DPSGD with steps_per_epoch"):
        privacy.privacy_report(dp._replace(max_batch_size=None), 1000, 1, steps=6)
