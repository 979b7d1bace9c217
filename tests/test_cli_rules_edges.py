"""Edges of train.py's rules: ``--laplace full`` / ``last_layer`` past the dense posterior's
limit and ``--laplace`` on an output it is not written for are refused before training, and
``jaxmlp.fit`` trains a registered cost, reporting its value J (F3) as its only metric."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.laplace import FULL_MAX_PARAMS
from jaxmlp.oracle import registry

from helpers import load_script

cli = load_script("train", "train_cli_rules_edges")

from _common import laplace_report  # noqa: E402  (experiments/ on the path: load_script)
from _common.cli import UsageError  # noqa: E402


def _refused(argv, tmp_path, capsys) -> str:
    out = str(tmp_path / "out")
    assert cli.main([*argv, "--epochs", "1", "--no-progress", "--out", out]) == 2
    assert not os.path.exists(out)  # nothing trained, nothing written
    return capsys.readouterr().err


def test_laplace_full_past_the_dense_limit_exits_2_before_training(tmp_path, capsys):
    # digits: 64 inputs, 10 classes; --hidden 128: P = 128 (64 + 1) + 10 (128 + 1) = 9610
    P, last = 128 * 65 + 10 * 129, 10 * 129
    assert FULL_MAX_PARAMS == 4096 and P > FULL_MAX_PARAMS >= last
    err = _refused(["--dataset", "digits", "--hidden", "128", "--laplace", "full"],
                   tmp_path, capsys)
    assert err == (
        f"train.py: error: --laplace full: a dense posterior of P = {P} parameters (network "
        f"64-128-10) needs a P x P matrix; the limit is jaxmlp.laplace.FULL_MAX_PARAMS = 4096. "
        f"Use --laplace kron or diag (or last_layer: P = {last}), or a network with at most "
        "4096 parameters (--hidden); nothing was trained.\n")


def test_laplace_last_layer_counts_the_last_layer_only(tmp_path, capsys):
    """last_layer holds n[L] (n[L-1] + 1) parameters: 10 (408 + 1) = 4090 <= 4096 fits,
    10 (409 + 1) = 4100 does not, whatever the earlier layers hold."""
    cfg = {"laplace": "last_layer"}
    fits = jaxmlp.Network((64, 2000, 408, 10), ("relu", "relu", "softmax"),
                          "categorical_cross_entropy")
    laplace_report.check_network(cfg, fits)  # P of all layers far above the limit: not counted
    err = _refused(["--dataset", "digits", "--hidden", "409", "--laplace", "last_layer"],
                   tmp_path, capsys)
    assert err == (
        "train.py: error: --laplace last_layer: a dense posterior of P = 4100 parameters "
        "(network 64-409-10) needs a P x P matrix; the limit is jaxmlp.laplace.FULL_MAX_PARAMS "
        "= 4096. Use --laplace kron or diag, or a network with at most 408 units in the last "
        "hidden layer (--hidden); nothing was trained.\n")


def test_laplace_on_an_output_it_is_not_written_for_exits_2_before_training(tmp_path, capsys):
    err = _refused(["--dataset", "multilabel", "--hidden", "4", "--laplace", "kron"],
                   tmp_path, capsys)
    assert err == (
        "train.py: error: --laplace: written for softmax classification, one sigmoid unit and "
        "regression (linear + mean squared error); this network has output 'sigmoid' (5 units) "
        "with cost 'multilabel_cross_entropy'.\n")
    net = jaxmlp.Network((3, 4, 2), ("tanh", "sigmoid"), "multilabel_cross_entropy")
    laplace_report.check_network({"laplace": None}, net)  # no --laplace: nothing checked
    with pytest.raises(UsageError, match=r"^--laplace: written for softmax"):
        laplace_report.check_network({"laplace": "diag"}, net)


@pytest.fixture
def half_sq():
    name = "t_edges_half_sq"
    jaxmlp.register_cost(name, lambda A, Y: 0.5 * jnp.sum((A - Y) ** 2, axis=0),
                         lambda A, Y: A - Y)
    yield name
    registry._unregister(name)


def test_fit_trains_a_registered_cost_and_reports_its_value_only(half_sq):
    net = jaxmlp.Network((3, 8, 1), ("tanh", "linear"), half_sq)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = jax.random.normal(jax.random.PRNGKey(1), (3, 64), jnp.float32)
    Y = X[:1] * 2.0
    fr = jaxmlp.fit(net, params, optax.adam(1e-2), X, Y, epochs=2, batch_size=16, key=0,
                    eval_sets={"train": (X, Y)}, progress=False)
    assert fr.status == "completed" and fr.state.epoch == 2
    assert train.metric_name(net) == "cost"
    row = fr.history[-1]
    assert not any(k.endswith(("_r2", "_accuracy")) for k in row), sorted(row)
    A = jaxmlp.predict(net, fr.state.params, X)
    J = 0.5 * np.sum((np.asarray(A) - np.asarray(Y)) ** 2) / X.shape[1]  # (F3), by hand
    np.testing.assert_allclose(row["train_cost"], J, rtol=1e-5)
    metrics = train.cost_and_metrics(net, fr.state.params, X, Y)
    assert sorted(metrics) == ["cost"]
    np.testing.assert_allclose(metrics["cost"], J, rtol=1e-5)
