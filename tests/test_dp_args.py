"""jaxmlp.privacy.dpsgd's settings in one process: the noise calibrated to a loose target
(below sigma = 1, down to the search's floor), DPSGD records checked against n (missing
sampling rate or delta, a padded batch above n, calibrated over the record's or the run's
epochs, neither sigma nor a target), calibrate_run without a length, the mask's refusals.
The Renyi accountant (milliseconds per epsilon); one small network compiled once."""

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp.privacy import dpsgd
from jaxmlp.privacy.dpsgd import DPSGD

NET = jaxmlp.Network((3, 2), ("softmax",), "categorical_cross_entropy")
RDP = dict(delta=1e-5, sampling_rate=0.5, steps=4, accountant="rdp")


def _eps(sigma):
    return dpsgd.epsilon(noise_multiplier=sigma, **RDP)


def test_loose_target_calibrates_below_one_and_stops_at_the_floor():
    assert _eps(1.0) < 20.0 < _eps(0.5)  # the target lies below sigma = 1
    sigma = dpsgd.calibrate_noise(target_epsilon=20.0, **RDP)
    assert 0.5 < sigma < 1.0 and _eps(sigma) <= 20.0
    assert _eps(sigma / (1 + 2e-3)) > 20.0  # the smallest such sigma, to rtol
    lo = dpsgd.SIGMA_RANGE[0]
    assert _eps(lo) < 1e4
    assert dpsgd.calibrate_noise(target_epsilon=1e4, **RDP) == lo  # met at the floor already


def test_bad_steps_and_clip_lists():
    with pytest.raises(ValueError, match=r"steps: expected a non-negative integer, got -1\."):
        dpsgd.epsilon(noise_multiplier=1.0, sampling_rate=0.5, steps=-1, delta=1e-5)
    assert dpsgd.epsilon(noise_multiplier=1.0, sampling_rate=0.5, steps=0, delta=1e-5) == 0.0
    with pytest.raises(ValueError, match=r"l2_norm_clip: expected a number > 0 or a non-empty "
                                         r"list, got \[\]\."):
        dpsgd.check_clip([])
    assert dpsgd.check_clip(np.array([1.0, 2.0])) == (1.0, 2.0)


@pytest.mark.parametrize("fields, exc, message", [
    (dict(sampling_rate=None), TypeError,
     r"sampling_rate: DPSGD needs it \(sampling_rate q in \(0, 1\], delta in \(0, 1/n\)\); got None"),
    (dict(delta=None), TypeError, r"delta: DPSGD needs it .*got None"),
    (dict(max_batch_size=101), ValueError, "max_batch_size: expected at most n = 100, got 101"),
    (dict(noise_multiplier=None), ValueError,
     r"noise_multiplier: give it, or target_epsilon \(the noise is then calibrated to spend it "
     r"over the run\); got neither"),
    (dict(noise_multiplier=None, target_epsilon=5.0), TypeError,
     r"epochs: calibrating the noise to target_epsilon needs the run's epochs "
     r"\(DPSGD\(epochs=...\) or fit's epochs\); got None"),
    (dict(noise_multiplier=None, target_epsilon=5.0, epochs=0), ValueError, "epochs"),
])
def test_check_dpsgd_refusals(fields, exc, message):
    dp = DPSGD(**{**dict(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.5,
                         delta=1e-5, accountant="rdp"), **fields})
    with pytest.raises(exc, match=message):
        dpsgd.check_dpsgd(dp, NET, 100)


@pytest.mark.parametrize("record_epochs, run_epochs", [(None, 3), (2, 5)])
def test_check_dpsgd_calibrates_over_the_records_or_the_runs_epochs(record_epochs, run_epochs):
    dp = DPSGD(l2_norm_clip=1.0, sampling_rate=0.25, delta=1e-5, accountant="rdp",
               target_epsilon=8.0, epochs=record_epochs)
    got = dpsgd.check_dpsgd(dp, NET, 100, epochs=run_epochs)
    E = record_epochs or run_epochs  # the record's epochs win
    want = dpsgd.calibrate_noise(target_epsilon=8.0, delta=1e-5, sampling_rate=0.25,
                                 steps=E * 4, accountant="rdp")  # round(1/q) = 4 steps/epoch
    assert got.noise_multiplier == want and got.epochs == E and got.steps_per_epoch == 4
    assert dpsgd.epsilon(noise_multiplier=want, sampling_rate=0.25, steps=E * 4, delta=1e-5,
                         accountant="rdp") <= 8.0


def test_calibrate_run_needs_epochs_or_steps():
    with pytest.raises(TypeError, match=r"epochs: expected the run's number of epochs \(or "
                                        r"steps\), got None"):
        dpsgd.calibrate_run(num_examples=100, clip=[1.0], num_layers=1, sampling_rate=0.1,
                            noise_multiplier=1.0)
    dp = dpsgd.calibrate_run(num_examples=100, clip=[1.0], num_layers=1, sampling_rate=0.1,
                             noise_multiplier=1.0, steps=7)
    assert dp.steps_per_epoch == 10 and dp.noise_multiplier == 1.0


def test_mask_list_accepted_and_bad_masks_refused():
    rng = np.random.default_rng(0)
    params = [{"W": rng.normal(size=(2, 3)), "b": rng.normal(size=2)}]
    X = rng.normal(size=(3, 4))
    Y = np.eye(2)[:, [0, 1, 1, 0]]
    key = jax.random.key(0)
    kw = dict(l2_norm_clip=0.5, noise_multiplier=0.0)
    as_list = dpsgd.dp_value_and_grad(NET, params, X, Y, key, mask=[True, False, True, True], **kw)
    as_array = dpsgd.dp_value_and_grad(NET, params, X, Y, key,
                                       mask=np.array([True, False, True, True]), **kw)
    for a, b in zip(jax.tree.leaves(as_list.grads), jax.tree.leaves(as_array.grads)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(as_list.clip_factors)[1] == 0.0
    with pytest.raises(TypeError, match="mask: expected booleans or 0/1 numbers, got dtype <U1"):
        dpsgd.dp_value_and_grad(NET, params, X, Y, key, mask=["a", "b", "c", "d"], **kw)
    with pytest.raises(ValueError, match=r"mask: expected shape \(m,\) = \(4,\), got \(3,\)"):
        dpsgd.dp_value_and_grad(NET, params, X, Y, key, mask=np.ones(3, bool), **kw)
