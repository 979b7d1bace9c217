"""run_epochs' progress bar (what it shows per epoch, from where it starts on a resumed run,
closed on every way out), and monitor.diagnose's sentences for each way an epoch goes wrong.
Plans with host-side epoch functions: nothing is compiled."""

import math

import numpy as np
import pytest

from jaxmlp import train
from jaxmlp.train import epoch_loop, monitor
from jaxmlp.train.epoch_loop import run_epochs

from helpers import host_plan  # noqa: E402


def _plan(costs_per_epoch, **kw):
    """helpers.host_plan whose evaluation sets report a test accuracy and other sets a cost."""
    kw.setdefault("set_entries", lambda name, p, Xe, Ye: (
        {f"{name}_accuracy": p / 10} if name == "test" else {f"{name}_cost": p}))
    return host_plan(costs_per_epoch, **kw)


class _Bar:
    def __init__(self, total, initial, desc):
        self.args, self.postfixes, self.n, self.closed = (total, initial, desc), [], initial, False

    def set_postfix(self, d, refresh=True):
        self.postfixes.append(dict(d))

    def update(self, k):
        self.n += k

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    made = []

    def make(total, initial, desc):
        made.append(_Bar(total, initial, desc))
        return made[-1]

    monkeypatch.setattr(epoch_loop, "progress_bar", make)
    return made


def _run(plan, epochs, state=None, history=(), on_epoch_end=None, progress=True,
         eval_sets=("test", "train")):
    state = state or train.TrainState(0, None, 10, 0)
    return run_epochs(plan, state, None, None, epochs=epochs,
                      eval_sets={n: (None, None) for n in eval_sets}, history=list(history),
                      on_epoch_end=on_epoch_end, progress=progress, progress_desc="run")


def test_bar_shows_cost_metric_of_each_set_that_has_it_and_epsilon(bars):
    plan = _plan([[2.0, 4.0], [1.0, 2.0]], bar_metric="accuracy",
                 metric_entries=lambda e, mt: {"epsilon": 0.123456 * e})
    fr = _run(plan, 2)
    (bar,) = bars
    assert fr.status == "completed" and bar.args == (2, 0, "run") and bar.n == 2 and bar.closed
    # "train" has no train_accuracy entry: not shown; epsilon to 3 significant digits
    assert bar.postfixes == [{"cost": "3.0000", "test_accuracy": "0.1000", "eps": "0.123"},
                             {"cost": "1.5000", "test_accuracy": "0.2000", "eps": "0.247"}]


def test_bar_cost_only_without_a_metric_and_starts_at_a_resumed_epoch(bars):
    fr = _run(_plan([[0.5]]), 3, state=train.TrainState(4, None, 0, 2),
              history=[{"first_cost": 1.0}, {"first_cost": 1.0}])
    (bar,) = bars
    assert bar.args == (3, 2, "run") and bar.n == 3
    assert bar.postfixes == [{"cost": "0.5000"}]
    assert fr.state.epoch == 3 and [r["epoch"] for r in fr.history[2:]] == [3]


@pytest.mark.parametrize("how", ["diverged", "stopped", "budget", "raised"])
def test_bar_closed_on_every_way_out(bars, how):
    def boom(state, row):
        raise KeyboardInterrupt

    kw = {"diverged": dict(plan=_plan([[1.0], [math.nan]])),
          "stopped": dict(plan=_plan([[1.0]] * 3), on_epoch_end=lambda s, r: False),
          "budget": dict(plan=_plan([[1.0]] * 3, budget=lambda e: "spent" if e == 2 else None)),
          "raised": dict(plan=_plan([[1.0]] * 3), on_epoch_end=boom)}[how]
    if how == "raised":
        with pytest.raises(KeyboardInterrupt):
            _run(epochs=3, **kw)
    else:
        assert _run(epochs=3, **kw).status == how
    assert bars[0].closed


def test_no_bar_without_progress(bars):
    assert _run(_plan([[1.0]]), 1, progress=False).status == "completed"
    assert bars == []


def test_real_bar_writes_to_stderr(capsys):
    fr = _run(_plan([[0.25], [0.125]], bar_metric="accuracy"), 2)
    err = capsys.readouterr().err
    assert fr.status == "completed"
    assert "run" in err and "2/2" in err and "cost=0.1250" in err and "test_accuracy=0.2000" in err


# ----------------------------------------------------------------------------- diagnose


@pytest.mark.parametrize("costs, gnorms, params_ok, factor, expected", [
    ([1.0, 2.0], [1.0, 1.0], True, 1e6, None),
    ([1.0, math.nan], [1.0, 1.0], True, None,
     "the minibatch cost became NaN at epoch 3, step 2 of 2"),
    ([math.inf, 1.0], [1.0, 1.0], True, None,
     "the minibatch cost became infinite at epoch 3, step 1 of 2"),
    ([1.0, 2.5], [1.0, math.inf], True, None,
     "the gradient became non-finite at epoch 3, step 2 of 2 (cost 2.5)"),
    ([1.0, 30.0], [1.0, 1.0], True, 10.0,
     "the minibatch cost exploded to 30 at epoch 3, step 2 of 2, more than 10 times the first "
     "cost 2 (explode_factor)"),
    ([1.0, 30.0], [1.0, 1.0], True, None, None),  # no explode_factor: no limit
    ([1.0, 1.0], [1.0, 1.0], False, None,
     "the parameters became non-finite at epoch 3, step 2 of 2 (the last update)"),
])
def test_diagnose_names_the_first_thing_wrong(costs, gnorms, params_ok, factor, expected):
    got = monitor.diagnose(3, np.asarray(costs), np.asarray(gnorms), params_ok, 2.0, factor)
    assert got == expected
