"""jaxmlp.train.ensemble: member k of a K-member run equals the independent single run of member k."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.train import ensemble as E
from jaxmlp.train import loop as F
from jaxmlp import train

NET = jaxmlp.Network((6, 12, 3), ("tanh", "softmax"), "categorical_cross_entropy")
RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 90)).astype(np.float32)
Y = np.eye(3, dtype=np.float32)[:, RNG.integers(0, 3, 90)]
KEY, SKEY = jax.random.PRNGKey(3), jax.random.PRNGKey(4)


def _maxdiff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_init_ensemble_members_are_init_params_of_member_keys():
    P = E.init_ensemble(NET, KEY, 4)
    assert P[0]["W"].shape == (4, 12, 6) and P[1]["b"].shape == (4, 3)
    keys = E.member_keys(KEY, 4)
    for k in range(4):
        single = jaxmlp.init_params(NET, keys[k])
        assert _maxdiff(E.member(P, k), single) == 0.0
    assert E.ensemble_size(NET, P) == 4


@pytest.mark.slow  # a long test (6 s; members equal their own runs: also test_no_recompiles)
@pytest.mark.parametrize("name, shared", [("adam", False), ("momentum", True)])
def test_members_equal_independent_runs(name, shared):
    K, lrs = 3, [3e-3, 1e-2, 3e-2]
    P = E.init_ensemble(NET, KEY, K)
    fr = F.fit(NET, P, E.make_ensemble_optimizer(name, 1e-3), X, Y, epochs=3, batch_size=16, key=SKEY,
               ensemble=K, learning_rates=lrs, shared_batches=shared)
    assert fr.status == "completed" and fr.state.epoch == 3
    keys = E.member_keys(KEY, K)
    skeys = [SKEY] * K if shared else E.member_keys(SKEY, K)
    for k in range(K):
        r = F.fit(NET, jaxmlp.init_params(NET, keys[k]), train.make_optimizer(name, lrs[k]),
                  X, Y, epochs=3, batch_size=16, key=skeys[k])
        assert _maxdiff(r.state.params, E.member(fr.state.params, k)) < 2e-6, k
        np.testing.assert_allclose(fr.history[-1]["running_cost_members"][k],
                                   r.history[-1]["running_cost"], rtol=1e-5)
    # the learning rates matter: the members differ from one another
    assert _maxdiff(E.member(fr.state.params, 0), E.member(fr.state.params, 1)) > 1e-3


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_shared_optimizer_without_rates_and_resume():
    P = E.init_ensemble(NET, KEY, 2)
    opt = optax.sgd(0.1)
    full = F.fit(NET, P, opt, X, Y, epochs=4, batch_size=30, key=SKEY, ensemble=2)
    half = F.fit(NET, P, opt, X, Y, epochs=2, batch_size=30, key=SKEY, ensemble=2)
    rest = F.fit(NET, None, opt, X, Y, epochs=4, batch_size=30, key=None, ensemble=2,
                 state=half.state, history=half.history)
    assert _maxdiff(full.state.params, rest.state.params) == 0.0
    assert [h["running_cost"] for h in rest.history] == [h["running_cost"] for h in full.history]


def test_predict_and_evaluate_average_the_members():
    P = E.init_ensemble(NET, KEY, 3)
    A = E.ensemble_predict(NET, P, X)
    want = np.mean([np.asarray(jaxmlp.predict(NET, E.member(P, k), X)) for k in range(3)], axis=0)
    np.testing.assert_allclose(np.asarray(A), want, rtol=1e-5, atol=1e-7)
    ev = E.ensemble_cost_and_metrics(NET, P, X, Y)
    acc = np.mean(np.argmax(want, 0) == np.argmax(Y, 0))
    np.testing.assert_allclose(float(ev["ensemble"]["accuracy"]), acc, rtol=1e-6)
    np.testing.assert_allclose(float(ev["ensemble"]["cost"]),
                               np.mean(-np.sum(Y * np.log(want), axis=0)), rtol=1e-5)
    for k in range(3):
        single = train.cost_and_metrics(NET, E.member(P, k), X, Y)
        np.testing.assert_allclose(float(ev["members"]["cost"][k]), float(single["cost"]), rtol=1e-5)
    row = E.summary_row("train", ev)
    assert row["train_accuracy_ensemble"] == pytest.approx(acc)
    assert len(row["train_accuracy_members"]) == 3


def test_divergent_member_is_named():
    P = E.init_ensemble(NET, KEY, 2)
    fr = F.fit(NET, P, E.make_ensemble_optimizer("sgd", 0.1), X, Y, epochs=3, batch_size=30, key=SKEY,
               ensemble=2, learning_rates=[0.1, 1e30])
    assert fr.status == "diverged" and "member 1 of 2 (counting from 0)" in fr.message
    assert fr.state.epoch == 0


def test_bad_input():
    with pytest.raises(ValueError, match=r"^K: expected the number of members K >= 1, got 0"):
        E.init_ensemble(NET, KEY, 0)
    with pytest.raises(TypeError, match=r"^K: expected the number of members"):
        E.init_ensemble(NET, KEY, 2.0)
    P = E.init_ensemble(NET, KEY, 2)
    with pytest.raises(ValueError, match=r"^ensemble: expected the number of members K >= 1, got -1"):
        F.fit(NET, P, optax.sgd(0.1), X, Y, epochs=1, batch_size=30, key=SKEY, ensemble=-1)
    with pytest.raises(ValueError, match=r"^ensemble: expected K = 2"):
        F.fit(NET, P, optax.sgd(0.1), X, Y, epochs=1, batch_size=30, key=SKEY, ensemble=3)
    with pytest.raises(ValueError, match=r"^learning_rates: expected one rate per member, shape \(2,\)"):
        F.fit(NET, P, E.make_ensemble_optimizer("sgd", 0.1), X, Y, epochs=1, batch_size=30, key=SKEY,
              ensemble=2, learning_rates=[0.1])
    with pytest.raises(ValueError, match=r"^learning_rates: expected finite rates > 0"):
        E.init_opt_state(E.make_ensemble_optimizer("sgd", 0.1), P, [0.1, -1.0])
    with pytest.raises(TypeError, match=r"^learning_rates: expected 2 numbers > 0, one per "
                                        r"member, got \['a', 'b'\]\.$"):
        E.init_opt_state(E.make_ensemble_optimizer("sgd", 0.1), P, ["a", "b"])
    with pytest.raises(TypeError, match=r"^optimizer: per-member learning_rates need"):
        E.init_opt_state(optax.sgd(0.1), P, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"^params: expected ensemble parameters stacked"):
        F.fit(NET, jaxmlp.init_params(NET, KEY), optax.sgd(0.1), X, Y, epochs=1,
              batch_size=30, key=SKEY, ensemble=2)
    with pytest.raises(ValueError, match=r"^params: one member"):
        E.ensemble_size(NET, E.init_ensemble(jaxmlp.Network((6, 5, 3), ("tanh", "softmax"),
                                                            "categorical_cross_entropy"), KEY, 2))


# ----------------------------------------------------------------------------- train.py --ensemble

import json  # noqa: E402
import os  # noqa: E402

from helpers import load_script  # noqa: E402

cli = load_script("train", "train_cli_ens")
SMALL = ["--dataset", "breast_cancer", "--hidden", "8", "--batch-size", "64", "--no-progress",
         "--no-plot", "--member-lrs", "1e-3", "1e-2", "3e-2"]


@pytest.mark.parametrize("argv, message", [
    (["--ensemble", "0"], "--ensemble: expected the number of members K >= 1, got 0."),
    (["--ensemble", "2", "--member-lrs", "1", "2", "3"],
     "--member-lrs: expected 2 learning rates (one per member of --ensemble 2), got 3."),
    (["--member-lrs", "0.1", "-1"], "--member-lrs: expected finite learning rates > 0, got [0.1, -1.0]."),
    (["--member-lrs", "fast"], "--member-lrs: expected numbers, got 'fast'."),
    (["--shared-batches"], "--shared-batches: only with --ensemble K."),
])
def test_cli_bad_ensemble_input(argv, message, capsys):
    assert cli.main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"train.py: error: {message}"


@pytest.mark.slow
def test_cli_ensemble_reports_and_resumes_bit_for_bit(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main([*SMALL, "--epochs", "2", "--checkpoint-every", "2", "--out", a]) == 0
    assert cli.main(["--resume", a, "--epochs", "3", "--no-progress", "--no-plot"]) == 0
    assert cli.main([*SMALL, "--epochs", "3", "--out", b]) == 0
    ra, rb = (json.load(open(os.path.join(d, "results.json"))) for d in (a, b))
    assert ra["final_params_sha256"] == rb["final_params_sha256"]
    ens = rb["ensemble"]
    assert ens["K"] == 3 and ens["member_lrs"] == [1e-3, 1e-2, 3e-2]
    acc = ens["members"]["test"]["accuracy"]
    assert len(acc) == 3 and rb["final"]["test"]["accuracy"] == pytest.approx(np.mean(acc))
    assert ens["std"]["test"]["accuracy"] == pytest.approx(np.std(acc))
    assert 0.5 < ens["averaged_prediction"]["test"]["accuracy"] <= 1.0
    assert rb["history"][-1]["test_accuracy_members"] == pytest.approx(acc)
