"""kfac-jax as the K-FAC races' peer (experiments/_common/peers.py, race.py's kfac-jax row).

The first two tests run everywhere (no kfac-jax needed, nothing compiled); the others need
kfac-jax (``.venv-compare``, ``scripts/setup_compare.sh``) and are skipped without it.
"""

import sys

import numpy as np
import pytest

from _common import peers, race


def test_without_kfac_jax_the_peer_is_none_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "kfac_jax", None)  # `import kfac_jax` raises ImportError
    peer = peers.kfac_jax()
    assert peer.module is None
    assert "kfac-jax is not installed" in peer.note and "setup_compare.sh" in peer.note


def test_a_race_without_adam_is_refused_naming_only(capsys):
    kw = dict(doc="race\n", name="autoencoder", figure="x.svg", steps=1, batch_size=1,
              grids={"adam": [], "kfac": []},
              problem=lambda seed: pytest.fail("the problem is built after the check"))
    assert race.main(["--only", "kfac", "--out", "unused"], **kw) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoencoder.py: error: --only")
    assert "adam" in err and "'kfac'" in err
    for flag, bad in (("--steps", "0"), ("--batch-size", "-5"), ("--repeat", "0"),
                      ("--seed", "x")):
        assert race.main([flag, bad, "--out", "unused"], **kw) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument {flag}:" in err, err


@pytest.fixture(scope="module")
def kj():
    pytest.importorskip("kfac_jax")
    peer = peers.kfac_jax()
    assert peer.module is not None, peer.note
    return peer.module


@pytest.fixture(scope="module")
def problem():
    import jax
    import jax.numpy as jnp

    import jaxmlp

    # float64 throughout: the suite runs with x64 on, where kfac-jax's curvature estimator
    # draws float64 vectors and refuses float32 outputs (the races run without x64, float32).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 64))
    Y = np.tanh(rng.normal(size=(3, 4)) @ X)
    net = jaxmlp.Network((4, 8, 3), ("tanh", "linear"), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float64)
    return net, jnp.asarray(X), jnp.asarray(Y), params


def test_the_adapter_is_applied_once_and_recorded(kj):
    again = peers.kfac_jax()
    assert again.module is kj
    from jax.extend.core import Primitive

    new_convention = not isinstance(Primitive("probe").get_bind_params({}), tuple)
    assert (again.note == peers.KFAC_JAX_ADAPTER) == new_convention


def test_kfac_jax_loss_and_registration_equal_jaxmlps_cost(kj, problem):
    """kfac-jax's first step on the converted parameters and batch-first minibatch reports
    jaxmlp's cost J of the same columns, and its registered loss (weight 0.5) equals it."""
    import jax

    from jaxmlp import train

    net, X, Y, params = problem
    cols = np.arange(0, 64, 2)  # a minibatch of 32 columns
    J = float(train.cost_and_metrics(net, params, X[:, cols], Y[:, cols])["cost"])
    opt = kj.Optimizer(value_and_grad_func=jax.value_and_grad(race.kfac_jax_loss(kj, net)),
                       initial_damping=1e-2, include_registered_loss_in_stats=True,
                       **race.KFAC_JAX_OPTIONS)
    theirs = [{"w": p["W"].T, "b": p["b"]} for p in params]
    batch = (X[:, cols].T, Y[:, cols].T)
    key = jax.random.PRNGKey(1)
    state = opt.init(theirs, key, batch)
    _, _, stats = opt.step(theirs, state, key, batch=batch, global_step_int=0)
    assert float(stats["loss"]) == pytest.approx(J, rel=1e-5)
    assert float(stats["loss_registered"]) == pytest.approx(J, rel=1e-5)
    assert [type(b).__name__ for b in opt._estimator.blocks] == ["DenseTwoKroneckerFactored"] * 2


def test_kfac_jax_row_trains_the_tiny_network(kj, problem):
    """The race's kfac-jax row (same initialisation and minibatches as the scanned epochs):
    its steps run through the adapter and the training cost falls."""
    net, X, Y, _ = problem
    grids = {"adam": [{"lr": 1e-2}], race.KFAC_JAX: [{"initial_damping": 1e-2}]}
    runs = race.race(net, X, Y, grids, steps=48, batch_size=16, seed=0)
    hist = runs[race.KFAC_JAX]["history"]
    assert [h["step"] for h in hist] == list(range(0, 52, 4))
    assert runs["adam"]["history"][0]["cost"] == pytest.approx(hist[0]["cost"], rel=1e-6)
    assert np.all(np.isfinite([h["cost"] for h in hist]))
    assert hist[-1]["cost"] < 0.2 * hist[0]["cost"]
    assert all(h["seconds"] > 0 and 0 < h["host_seconds"] for h in hist[1:])


@pytest.mark.slow  # a long test (3 s): the slow suite
def test_a_race_records_the_steps_it_ran_rounded_up_to_whole_epochs(tmp_path, capsys):
    """--steps 5 at 4 minibatches per epoch trains 2 whole epochs: results.json records the
    5 asked for and the 8 run, as the histories end."""
    import json

    import jax
    import jaxmlp

    net = jaxmlp.Network((2, 3, 2), ("tanh", "linear"), "mean_squared_error")
    X = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 16)), np.float32)
    kw = dict(doc="race\n", name="autoencoder", figure="x.svg", steps=5, batch_size=4,
              grids={"adam": [{"lr": 1e-2}]}, problem=lambda seed: (net, X, X, "toy", "toy"))
    assert race.main(["--out", str(tmp_path / "r")], **kw) == 0
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["steps"] == 5 and doc["steps_run"] == 8
    steps = [h["step"] for h in _histories(doc["runs"])]
    assert max(steps) == 8
    assert f"wrote {tmp_path / 'r'}" in capsys.readouterr().out


def _histories(tree):
    """Every {"step", ...} entry of a results.json "runs" tree, wherever it is nested."""
    if isinstance(tree, dict):
        if "step" in tree and "cost" in tree:
            return [tree]
        return [h for v in tree.values() for h in _histories(v)]
    if isinstance(tree, list):
        return [h for v in tree for h in _histories(v)]
    return []
