"""Private training's edges: resumed runs that change the sampling, a padded batch that
overflows, stops decided by raw costs, a stopped run's privacy report, mask weights, a 0-d
clip, and the documented figures."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import privacy
from jaxmlp.privacy import DPSGD, dpsgd
from jaxmlp.train.step import TrainState

pytest.importorskip("dp_accounting")
binom = pytest.importorskip("scipy.stats").binom

N = 200
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def _problem(n=N):
    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (4, n), jnp.float32)
    Y = jax.nn.one_hot(jnp.arange(n) % 3, 3, dtype=jnp.float32).T
    return net, params, X, Y


def _resumed(history_rows, epoch=4):
    """A state at ``epoch`` with the given history (nothing trained: the refusals come first)."""
    net, params, X, Y = _problem()
    opt = optax.sgd(0.1)
    state = TrainState(params, opt.init(params), jax.random.PRNGKey(2), epoch)
    return net, params, opt, X, Y, state, history_rows


def _rows(epoch=4, spe=2, q=0.5, sigma=1.0, recorded=True):
    rows = []
    for e in range(1, epoch + 1):
        row = {"epoch": e, "running_cost": 1.0, "first_cost": 1.0, "steps": e * spe,
               "noise_multiplier": sigma, "epsilon": 1.0}
        if recorded:
            row.update(sampling_rate=q, steps_per_epoch=spe)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- 1. resuming


def test_history_rows_record_the_sampling_of_their_steps():
    net, params, X, Y = _problem()
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.5, delta=1e-5)
    fr = jaxmlp.fit(net, params, optax.sgd(0.1), X, Y, epochs=2, key=jax.random.PRNGKey(2),
                    dp=dp)
    assert [(r["sampling_rate"], r["steps_per_epoch"], r["steps"]) for r in fr.history] == [
        (0.5, 2, 2), (0.5, 2, 4)]
    assert fr.privacy["steps_per_epoch"] == 2 and fr.privacy["steps"] == 4
    assert fr.privacy["overflows"] == sum(r["overflow"] for r in fr.history) == 0
    assert fr.privacy["max_batch_size"] == privacy.padded_batch_size(N, 0.5, 4)


@pytest.mark.parametrize("change, name, was, now", [
    ({"sampling_rate": 0.02}, "sampling_rate", "0.5", "0.02"),
    ({"steps_per_epoch": 1}, "steps_per_epoch", "2", "1"),
])
def test_resume_with_other_sampling_is_refused(change, name, was, now):
    """8 steps at q = 0.5 then more at q = 0.02 (or 1 step per epoch) were reported as
    epoch * new steps_per_epoch steps at the new q: an epsilon far below the spend."""
    net, params, opt, X, Y, state, history = _resumed(_rows())
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.5, delta=1e-5)._replace(
        **change)
    with pytest.raises(ValueError) as e:
        jaxmlp.fit(net, params, opt, X, Y, epochs=5, key=0, state=state, history=history, dp=dp)
    msg = str(e.value)
    assert msg.startswith("dp: ") and f"records {name} {was}, this call would use {now};" in msg
    assert f"dp=dp._replace({name}={was})" in msg


def test_resume_reads_steps_per_epoch_of_an_old_history_from_steps_over_epoch():
    """A history without the new entries still records steps and epoch: 8 / 4 = 2."""
    net, params, opt, X, Y, state, history = _resumed(_rows(recorded=False))
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.5, delta=1e-5,
               steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"^dp: .* records steps_per_epoch 2, this call "
                                         r"would use 1;"):
        jaxmlp.fit(net, params, opt, X, Y, epochs=5, key=0, state=state, history=history, dp=dp)


def test_resume_with_the_same_sampling_counts_all_steps():
    """The same q and steps per epoch go on: epsilon of 5 epochs x 2 steps at (1.0, 0.5)."""
    net, params, opt, X, Y, state, history = _resumed(_rows(recorded=False))
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.5, delta=1e-5,
               accountant="rdp")  # delta and accountant only say how the spend is reported
    fr = jaxmlp.fit(net, params, opt, X, Y, epochs=5, key=0, state=state, history=history,
                    dp=dp)
    assert fr.status == "completed" and fr.privacy["steps"] == 10
    assert fr.privacy["epsilon"] == privacy.epsilon(noise_multiplier=1.0, sampling_rate=0.5,
                                                    steps=10, delta=1e-5, accountant="rdp")


# ----------------------------------------------------------------------------- 2. overflow


def test_max_batch_size_that_overflows_is_refused():
    """q = 0.5 on n = 200 selects 100 on average: 10 overflows at every step."""
    net, params, X, Y = _problem()
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.5, delta=1e-5,
               max_batch_size=10)
    steps = 2 * 2
    need = next(B for B in range(N + 1) if steps * binom.sf(B, N, 0.5) <= 1e-6)
    with pytest.raises(ValueError) as e:
        jaxmlp.fit(net, params, optax.sgd(0.1), X, Y, epochs=2, key=0, dp=dp)
    msg = str(e.value)
    assert msg.startswith("dp.max_batch_size: ") and "got 10: overflow probability 1 at " in msg
    assert f"The smallest size that meets the bound is {need} " in msg


def test_max_batch_size_at_the_bound_is_accepted_one_below_refused():
    net = _problem()[0]
    steps = 3 * 10  # 3 epochs of round(1/q) steps
    need = next(B for B in range(N + 1) if steps * binom.sf(B, N, 0.1) <= 1e-6)
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.1, delta=1e-5)
    assert dpsgd.check_dpsgd(dp._replace(max_batch_size=need), net, N, 3).max_batch_size == need
    p = steps * binom.sf(need - 1, N, 0.1)
    with pytest.raises(ValueError, match=rf"got {need - 1}: overflow probability {p:.3g} "):
        dpsgd.check_dpsgd(dp._replace(max_batch_size=need - 1), net, N, 3)


# ----------------------------------------------------------------------------- 3. stopping


def test_one_outlier_does_not_stop_a_private_run():
    """D' = D + one example with y = 1e5: its raw cost is ~1e10 times the first one, which
    stopped the run (explode test) with D' but not with D; the stop now reads only the
    private outputs, so both runs take all their epochs."""
    net = jaxmlp.Network((3, 8, 1), ("tanh", "linear"), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 200)), np.float32)
    Y = np.asarray(X[:1] * 0.5, np.float32)
    Xo = np.concatenate([X, np.zeros((3, 1), np.float32)], 1)
    Yo = np.concatenate([Y, np.full((1, 1), 1e5, np.float32)], 1)
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=50.0, sampling_rate=0.1, delta=1e-5)
    # with this key the outlier's batch (step 3) cost 2.2e8, 1e6 times the first cost 0.33
    fr = jaxmlp.fit(net, params, optax.sgd(0.01), Xo, Yo, epochs=1, key=jax.random.PRNGKey(0),
                    dp=dp)
    assert fr.status == "completed" and fr.state.epoch == 1, fr.message
    assert fr.history[0]["running_cost"] > 1e6 * fr.history[0]["first_cost"]  # raw, unread


def test_a_diverged_private_run_counts_the_failing_epochs_steps():
    """An infinite learning rate makes the parameters non-finite in the first
    epoch: the run stops, and its 10 steps, which ran on the data, are accounted."""
    net, params, X, Y = _problem()
    dp = DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.1, delta=1e-5)
    fr = jaxmlp.fit(net, params, optax.sgd(math.inf), X, Y, epochs=2, key=0, dp=dp)
    assert fr.status == "diverged" and fr.state.epoch == 0 and fr.history == []
    assert fr.message.startswith("training stopped: the ")
    assert "non-finite at epoch 1" in fr.message and "cost" not in fr.message
    assert fr.privacy["steps"] == 10
    assert fr.privacy["epsilon"] == privacy.epsilon(noise_multiplier=1.0, sampling_rate=0.1,
                                                    steps=10, delta=1e-5) > 0


# ----------------------------------------------------------------------------- 4, 5. arguments


@pytest.mark.parametrize("bad", [5.0, -1.0, 0.5, math.nan])
def test_mask_weights_other_than_0_and_1_are_refused(bad):
    net, params, X, Y = _problem(n=3)
    mask = jnp.array([1.0, 0.0, bad])
    with pytest.raises(ValueError, match=r"^mask: expected weights 0 or 1 only .* at index 2 "
                                         r"\(1 of 3 entries outside \{0, 1\}\)"):
        privacy.dp_value_and_grad(net, params, X, Y, 0, l2_norm_clip=1.0,
                                  noise_multiplier=0.0, mask=mask)


def test_mask_of_zeros_and_ones_equals_the_boolean_mask():
    net, params, X, Y = _problem(n=3)
    kw = dict(l2_norm_clip=1.0, noise_multiplier=0.0)
    a = privacy.dp_value_and_grad(net, params, X, Y, 0, mask=jnp.array([1.0, 0.0, 1.0]), **kw)
    b = privacy.dp_value_and_grad(net, params, X, Y, 0, mask=np.array([True, False, True]), **kw)
    for x, y in zip(jax.tree.leaves(a.grads), jax.tree.leaves(b.grads)):
        np.testing.assert_array_equal(x, y)


def test_a_0d_array_clip_is_a_single_threshold():
    net, params, X, Y = _problem(n=5)
    assert dpsgd.check_clip(np.array(1.5)) == 1.5 and dpsgd.check_clip(jnp.array(2.0), 2) == 2.0
    kw = dict(noise_multiplier=0.0)
    a = privacy.dp_value_and_grad(net, params, X, Y, 0, l2_norm_clip=np.array(0.1), **kw)
    b = privacy.dp_value_and_grad(net, params, X, Y, 0, l2_norm_clip=0.1, **kw)
    for x, y in zip(jax.tree.leaves(a.grads), jax.tree.leaves(b.grads)):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------ 6. documented figures


def test_padded_batch_size_docstring_figure():
    B = privacy.padded_batch_size(1438, 0.5, 100)
    z = (B - 719) / math.sqrt(1438 * 0.25)
    assert f"B_max is {B} = 719 + {z:.1f} sqrt(n q (1 - q))" in " ".join(
        privacy.padded_batch_size.__doc__.split())


def test_calibrate_noise_at_its_lower_limit_spends_less_than_the_target():
    """The documented case: target 100 at q = 0.1, 10 steps, delta 1e-5 gives sigma 0.3,
    epsilon 35.7, not within 1e-3 of the target."""
    sigma = privacy.calibrate_noise(target_epsilon=100.0, delta=1e-5, sampling_rate=0.1,
                                    steps=10)
    eps = privacy.epsilon(noise_multiplier=sigma, sampling_rate=0.1, steps=10, delta=1e-5)
    assert sigma == dpsgd.SIGMA_RANGE[0] == 0.3 and f"{eps:.1f}" == "35.7"
    for doc in (privacy.calibrate_noise.__doc__, DOCS.joinpath("privacy.md").read_text()):
        assert "epsilon 35.7" in " ".join(doc.split())
