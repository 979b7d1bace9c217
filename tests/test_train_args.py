"""Ensemble training's refusals before anything is compiled (stacks with two leading axes,
K-FAC for members, a permutation that is not a function, a resumed state that is not a
TrainState or has another K), an evaluated set's history entries, and the checkpoint digest
of a typed key (that of its raw data, which is what a checkpoint stores)."""

import jax
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.train import ensemble as E
from jaxmlp.train.checkpoint import state_digest

NET = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
RNG = np.random.default_rng(3)


def _stack(K):
    return [{"W": RNG.normal(size=(K,) + s["W"]), "b": RNG.normal(size=(K,) + s["b"])}
            for s in NET.param_shapes()]


def test_stack_with_two_leading_axes_refused():
    params = _stack(2)
    params[1] = _stack(3)[1]
    with pytest.raises(ValueError, match=r"params: expected every leaf to have the same leading "
                                         r"axis K, got \[2, 2, 3, 3\]"):
        E.ensemble_size(NET, params)
    assert E.ensemble_size(NET, _stack(3)) == 3


def test_ensemble_optimizer_and_epoch_refusals():
    with pytest.raises(ValueError, match="optimizer: 'kfac' is not available for ensembles .*got 'kfac'"):
        E.make_ensemble_optimizer("kfac", 0.1)
    with pytest.raises(TypeError, match=r"permutation: expected a function \(key, m\) -> int "
                                        r"array \(m,\), got list"):
        E.make_ensemble_epoch(NET, optax.sgd(0.1), 4, permutation=[0, 1, 2, 3])


def test_fit_ensemble_refuses_a_state_of_another_kind_or_size():
    X, Y = RNG.normal(size=(3, 8)), np.eye(2)[:, RNG.integers(0, 2, 8)]
    kw = dict(epochs=1, batch_size=4, key=jax.random.PRNGKey(0))
    params = _stack(2)
    with pytest.raises(TypeError, match="state: expected a jaxmlp.train.step.TrainState or None, "
                                        "got dict"):
        E.fit_ensemble(NET, optax.sgd(0.1), params, X, Y, state={"params": params}, **kw)
    state = train.TrainState(params, None, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="ensemble: expected K = 2, the leading axis of "
                                         "state.params, got 3"):
        E.fit_ensemble(NET, optax.sgd(0.1), params, X, Y, state=state, ensemble=3, **kw)


def test_summary_row_of_one_set():
    ev = {"members": {"cost": np.array([0.5, 1.5, 1.0]), "accuracy": np.array([0.75, 0.5, 1.0]),
                      "confusion": np.zeros((3, 2, 2))},  # per-member matrices: not a row entry
          "ensemble": {"cost": 0.8, "accuracy": 0.9, "confusion": np.zeros((2, 2))}}
    row = E.summary_row("test", ev)
    assert sorted(row) == sorted(f"test_{m}{s}" for m in ("cost", "accuracy")
                                 for s in ("", "_std", "_min", "_max", "_ensemble", "_members"))
    assert row["test_cost"] == 1.0 and row["test_cost_min"] == 0.5 and row["test_cost_max"] == 1.5
    assert row["test_cost_std"] == pytest.approx(np.sqrt(1 / 6), rel=1e-15)
    assert row["test_accuracy_ensemble"] == 0.9 and row["test_accuracy_members"] == [0.75, 0.5, 1.0]


def test_digest_of_a_typed_key_is_that_of_its_data():
    params = [{"W": np.ones((2, 3)), "b": np.zeros(2)}]
    typed = jax.random.key(5)
    a = state_digest(train.TrainState(params, (), typed, 4))
    b = state_digest(train.TrainState(params, (), jax.random.key_data(typed), 4))
    c = state_digest(train.TrainState(params, (), jax.random.key_data(jax.random.key(6)), 4))
    assert a == b and a["state"] != c["state"]
    assert a["arrays"]["params/0/W"] == c["arrays"]["params/0/W"]
