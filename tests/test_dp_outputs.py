"""What a private fit reads and writes outside the privacy accountant.

The (epsilon, delta) of DP-SGD covers the noisy, clipped training steps. The estimators'
private fit must not stop on the raw training cost (the stop would depend on the data
outside the accountant), nor print raw costs in its divergence error; train.py's --dp model
records what epsilon does not cover (its preprocessing statistics) and says so on stderr.
"""

import os
import warnings
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import jaxmlp
import jaxmlp.sklearn as skl
from jaxmlp import privacy
from jaxmlp.data import export
from jaxmlp.sklearn import MLPRegressor
from jaxmlp.train.monitor import FitResult
from jaxmlp.train.step import TrainState

from _common import train_report  # noqa: E402  (experiments/ is on the path: conftest)


def _data(n=60, seed=0):
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, 3))
    return X, 0.5 * X[:, 0]


def _run(tmp_path, dp):
    net = jaxmlp.Network((2, 3, 1), ("tanh", "linear"), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    prep = SimpleNamespace(to_dict=lambda: {"feature_mean": [311.3, 0.0],
                                            "feature_std": [1.0, 2.0]})
    fr = SimpleNamespace(status="completed", state=SimpleNamespace(params=params))
    cfg = {"out": str(tmp_path), "ensemble": None, "dp": dp}
    return train_report.write_model(cfg, fr, net, prep, SimpleNamespace(name="toy"))


def test_dp_model_records_what_epsilon_does_not_cover(tmp_path, capsys):
    """A --dp run's model.npz holds PRIVACY_COVERAGE beside its preprocessing statistics,
    which it lists as not covered, and the run says so on stderr; a run without --dp
    writes neither."""
    path = _run(tmp_path, dp=True)
    assert capsys.readouterr().err == train_report.PRIVACY_NOTE + "\n"
    _, _, meta = export.load(path)
    assert meta["preprocessing"] == {"feature_mean": [311.3, 0.0], "feature_std": [1.0, 2.0]}
    assert meta["privacy_coverage"] == train_report.PRIVACY_COVERAGE
    assert meta["privacy_coverage"]["covers"].startswith("the parameters' training steps")
    assert meta["privacy_coverage"]["not_covered"][0].startswith("preprocessing statistics")
    assert "not private" in train_report.PRIVACY_NOTE
    os.remove(path)
    _, _, meta = export.load(_run(tmp_path, dp=False))
    assert "privacy_coverage" not in meta and capsys.readouterr().err == ""


def _fixed_noise(monkeypatch, sigma=20.0):
    """The noise calibration (a PLD search, tested in test_privacy) replaced by sigma."""
    monkeypatch.setattr(skl.privacy, "calibrate_noise", lambda **kw: sigma)


def test_private_fit_trains_max_iter_epochs_whatever_the_loss(monkeypatch):
    """jaxmlp.fit replaced by one whose epochs report rising running costs 1, 2, 3, 4 (one
    target: loss_curve_ = the costs, _loss_scale 1): scikit-learn's stop test with
    n_iter_no_change = 1 (a bad epoch: loss > best - tol; stop after more than 1 in a row)
    would stop after epoch 3; the private fit's callback never stops, so n_iter_ is
    max_iter = 4 (the accountant's count), no ConvergenceWarning is raised, and epsilon_ is
    privacy.epsilon of 4 epochs' steps at q = batch_size / n = 1."""
    _fixed_noise(monkeypatch)
    costs = [1.0, 2.0, 3.0, 4.0]
    seen = []

    def epochs(*args, epochs, state, on_epoch_end, **kwargs):
        for e in range(1, epochs + 1):
            state = TrainState(state.params, state.opt_state, state.key, e)
            seen.append(e)
            if on_epoch_end(state, {"epoch": e, "running_cost": costs[e - 1]}) is False:
                return FitResult(state, [], "stopped", f"stopped after epoch {e}", [])
        return FitResult(state, [], "completed", None, [])

    monkeypatch.setattr(skl.jaxmlp, "fit", epochs)
    X, y = _data()
    kw = dict(hidden_layer_sizes=(4,), max_iter=4, n_iter_no_change=1, tol=1e-4,
              batch_size=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning: no convergence test ran
        m = MLPRegressor(target_epsilon=1.0, delta=1e-4, **kw).fit(X, y)
    best, bad, stop = np.inf, 0, None
    for epoch, loss in enumerate(costs, 1):
        bad = 0 if loss <= best - kw["tol"] else bad + 1
        best = min(best, loss)
        if bad > kw["n_iter_no_change"] and stop is None:
            stop = epoch
    assert stop == 3
    assert seen == [1, 2, 3, 4] and m.n_iter_ == 4 and m.t_ == 4 * 60
    assert m.loss_curve_ == costs and m.loss_ == 4.0 and m.best_loss_ == 1.0
    q = 1.0
    assert m.noise_multiplier_ == 20.0 and m.sampling_rate_ == q
    assert m.epsilon_ == pytest.approx(privacy.epsilon(
        noise_multiplier=20.0, sampling_rate=q,
        steps=4 * privacy.default_steps_per_epoch(q), delta=1e-4))


def test_private_divergence_error_names_no_cost(monkeypatch):
    """A private fit whose jaxmlp.fit reports "diverged" with a message quoting a raw cost
    raises a FloatingPointError without that number."""
    _fixed_noise(monkeypatch)

    def diverging(*args, state, **kwargs):
        return FitResult(state, [], "diverged", (
            "training stopped: the minibatch cost exploded to 4.762e+05 at epoch 1, step 1 "
            "of 2, more than 100 times the first cost 0.4 (explode_factor)"), [])

    monkeypatch.setattr(skl.jaxmlp, "fit", diverging)
    X, y = _data()
    with pytest.raises(FloatingPointError) as error:
        MLPRegressor((4,), max_iter=1, batch_size=30, target_epsilon=1.0,
                     learning_rate_init=0.5, random_state=0).fit(X, y)
    assert str(error.value) == (
        "training diverged: the parameters or the minibatch cost became non-finite or "
        "exploded (the values are not shown: they are computed from the training data "
        "outside the privacy accountant); lower learning_rate_init (got 0.5).")
