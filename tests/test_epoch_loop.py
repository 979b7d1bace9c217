"""The one epoch loop and the pieces the boundary hands it: run_epochs over an EpochPlan,
the unchecked epoch / key / evaluation kernels, the one make_optimizer, B_max decided once,
one replicate, the cost of an output known without its Z, the column gradient's names."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.nn import checks
from jaxmlp.nn.costs import COSTS
from jaxmlp.nn.single_column import grad_col_kernel, gradient_col, value_and_grad_col
from jaxmlp.parallel import distributed, sharding
from jaxmlp.train.epoch_loop import run_epochs
from jaxmlp.train.private_epoch import (
    dp_max_batch_size, make_dp_train_epoch, make_dp_train_epoch_from_settings,
)

from helpers import host_plan  # noqa: E402

NET = jaxmlp.Network((5, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(5, 40)).astype(np.float32))
Y = jnp.asarray(np.eye(3, dtype=np.float32)[:, RNG.integers(0, 3, 40)])


def _params():
    return jaxmlp.init_params(NET, jax.random.PRNGKey(1))


# ----------------------------------------------------------------------------- run_epochs


_plan = host_plan


def _run(plan, epochs, state=None, history=(), on_epoch_end=None):
    state = state or train.TrainState(0, None, 10, 0)
    return run_epochs(plan, state, None, None, epochs=epochs, eval_sets={"s": (None, None)},
                      history=list(history), on_epoch_end=on_epoch_end, progress=False,
                      progress_desc="t")


def test_run_epochs_rows_keys_and_last_good_state():
    fr = _run(_plan([[2.0, 4.0], [1.0, 3.0], [np.nan, 1.0]]), 3)
    assert fr.status == "diverged" and fr.message == "training stopped: bad epoch 3"
    assert fr.state == train.TrainState(2, None, 12, 2)  # the state after epoch 2
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in fr.history] == [
        {"epoch": 1, "running_cost": 3.0, "first_cost": 2.0, "s_p": 1.0},
        {"epoch": 2, "running_cost": 2.0, "first_cost": 1.0, "s_p": 2.0}]
    assert list(fr.history[0]) == ["epoch", "running_cost", "first_cost", "seconds", "s_p"]
    assert len(fr.epoch_seconds) == 2


def test_run_epochs_baseline_read_back_from_a_resumed_history():
    seen = []
    plan = _plan([[5.0]], diagnose=lambda e, c, g, p, b: seen.append(b))
    _run(plan, 2, state=train.TrainState(0, None, 0, 1), history=[{"first_cost": 7.5}])
    assert seen == [7.5]  # not the new epoch's 5.0


def test_run_epochs_budget_and_callback_stop():
    plan = _plan([[1.0]] * 5, budget=lambda e: "over" if e == 3 else None,
                  metric_entries=lambda e, mt: {"extra": e * 10})
    fr = _run(plan, 5)
    assert fr.status == "budget" and fr.message == "over" and fr.state.epoch == 2
    assert [r["extra"] for r in fr.history] == [10, 20]
    fr = _run(_plan([[1.0]] * 5), 5, on_epoch_end=lambda st, row: st.epoch < 2)
    assert fr.status == "stopped" and fr.state.epoch == 2
    assert fr.message == "stopped by on_epoch_end after epoch 2"


# ----------------------------------------------------------------------------- unchecked pieces


def test_unchecked_epoch_equals_checked_and_leaves_values_to_the_caller():
    opt = optax.sgd(0.1)
    p = _params()
    key = jax.random.PRNGKey(2)
    a = train.make_train_epoch(NET, opt, 8)(p, opt.init(p), key, X, Y)
    b = train.make_train_epoch(NET, opt, 8, check_data=False)(p, opt.init(p), key, X, Y)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    Xbad = np.asarray(X).copy()
    Xbad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X: expected finite values"):
        train.make_train_epoch(NET, opt, 8)(p, opt.init(p), key, Xbad, Y)
    _, _, m = train.make_train_epoch(NET, opt, 40, check_data=False)(p, opt.init(p), key, Xbad, Y)
    assert np.isnan(float(m.cost[0]))
    with pytest.raises(TypeError, match="check_data: expected True or False, got 'no'"):
        train.make_train_epoch(NET, opt, 8, check_data="no")


def test_split_key_kernel_is_jax_random_split():
    key = jax.random.PRNGKey(9)
    for got, want in zip(train.step.split_key_kernel(key), jax.random.split(key)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_cost_and_metrics_kernel_equals_the_checked_call_and_numpy():
    p = _params()
    got = train.cost_and_metrics_kernel(NET, p, X, Y)
    want = train.cost_and_metrics(NET, p, X, Y)
    assert float(got["cost"]) == float(want["cost"])
    A = np.asarray(jaxmlp.predict(NET, p, X), np.float64)
    np.testing.assert_allclose(float(got["cost"]),
                               np.mean(-np.sum(np.asarray(Y) * np.log(A), axis=0)), rtol=1e-5)
    np.testing.assert_allclose(float(got["accuracy"]),
                               np.mean(A.argmax(0) == np.asarray(Y).argmax(0)))


# ----------------------------------------------------------------------------- one make_optimizer


def test_make_optimizer_takes_a_rate_held_in_the_state():
    p = _params()
    g = jax.tree.map(jnp.ones_like, p)
    for name in ("sgd", "adam", "momentum"):
        want, _ = train.make_optimizer(name, 0.05).update(g, train.make_optimizer(name, 0.05).init(p), p)
        opt = optax.inject_hyperparams(lambda learning_rate: train.make_optimizer(name, learning_rate))(
            learning_rate=0.05)
        got, _ = opt.update(g, opt.init(p), p)
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6)
    with pytest.raises(TypeError, match=r"^learning_rate: expected a number > 0 or a 0-d floating "
                                        r"array, got an array of shape \(2,\)"):
        train.make_optimizer("sgd", jnp.ones(2))
    with pytest.raises(ValueError, match=r"^learning_rate: expected a number > 0, got -1"):
        train.make_optimizer("sgd", -1)


def test_positive_int_says_what_it_counts():
    assert checks.positive_int("K", 3, "the number of members K >= 1") == 3
    with pytest.raises(ValueError, match=r"^K: expected the number of members K >= 1, got 0\.$"):
        checks.positive_int("K", 0, "the number of members K >= 1")
    with pytest.raises(TypeError, match=r"^sizes\[1\]: expected a positive integer, got 2.5 \(float\)"):
        jaxmlp.Network((3, 2.5, 2), ("tanh", "softmax"), "categorical_cross_entropy")


# ----------------------------------------------------------------------------- DP: B_max once


def test_dp_max_batch_size_is_the_padded_batch_or_the_given_one():
    assert dp_max_batch_size(200, 0.1, 30) == jaxmlp.privacy.padded_batch_size(200, 0.1, 30)
    assert dp_max_batch_size(200, 0.1, 30, 50) == 50
    assert dp_max_batch_size(20, 0.5, 1, 500) == 20  # never more than n


def test_dp_epoch_from_checked_settings_equals_the_checked_factory():
    opt = optax.sgd(0.1)
    dp = jaxmlp.privacy.check_dpsgd(jaxmlp.privacy.DPSGD(
        l2_norm_clip=1.0, noise_multiplier=0.7, sampling_rate=0.25, delta=1e-3), NET, 40)
    dp = dp._replace(max_batch_size=dp_max_batch_size(40, dp.sampling_rate, 8))
    a_fn = make_dp_train_epoch(NET, opt, sampling_rate=0.25, l2_norm_clip=1.0,
                               noise_multiplier=0.7, max_batch_size=dp.max_batch_size)
    b_fn = make_dp_train_epoch_from_settings(NET, opt, dp)
    assert b_fn.steps_per_epoch == a_fn.steps_per_epoch == 4
    p, key = _params(), jax.random.PRNGKey(5)
    a = a_fn(p, opt.init(p), key, X, Y)
    b = b_fn(p, opt.init(p), key, X, Y)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# ----------------------------------------------------------------------------- one replicate


def test_one_replicate_for_one_process_and_several():
    assert distributed.replicate is sharding.replicate
    mesh = sharding.make_mesh()
    tree = (_params(), jax.random.PRNGKey(0), jax.random.key(1))
    out = sharding.replicate(mesh, tree)
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(out)):
        assert b.sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(tree[:2]), jax.tree.leaves(out[:2])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match=r"^mesh: expected a jax.sharding.Mesh"):
        distributed.replicate("cpu", tree)


# ----------------------------------------------------------------------------- one cost


@pytest.mark.parametrize("cost, n_out", [("categorical_cross_entropy", 3),
                                         ("binary_cross_entropy", 1),
                                         ("multilabel_cross_entropy", 4),
                                         ("mean_squared_error", 2)])
def test_loss_from_output_against_numpy(cost, n_out):
    rng = np.random.default_rng(1)
    A = rng.random((n_out, 7)).astype(np.float32) * 0.98 + 0.01
    if cost == "categorical_cross_entropy":
        A /= A.sum(axis=0)
        Yc = np.eye(n_out, dtype=np.float32)[:, rng.integers(0, n_out, 7)]
        want = -np.sum(Yc * np.log(A), axis=0)
    elif cost == "mean_squared_error":
        Yc = rng.normal(size=(n_out, 7)).astype(np.float32)
        want = 0.5 * np.sum((A - Yc) ** 2, axis=0)
    else:
        Yc = (rng.random((n_out, 7)) > 0.5).astype(np.float32)
        want = -np.sum(Yc * np.log(A) + (1 - Yc) * np.log(1 - A), axis=0)
    got = COSTS[cost].loss_from_output(jnp.asarray(A), jnp.asarray(Yc))
    assert got.shape == (7,)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_loss_from_output_is_finite_at_saturated_outputs():
    A = jnp.asarray([[0.0, 1.0]], jnp.float32)
    L = COSTS["binary_cross_entropy"].loss_from_output(A, jnp.asarray([[1.0, 0.0]]))
    tiny = float(jnp.finfo(jnp.float32).tiny)
    np.testing.assert_allclose(np.asarray(L), [-math.log(tiny)] * 2, rtol=1e-6)


# ----------------------------------------------------------------------------- column gradient


def test_column_gradient_names_against_the_batched_gradient():
    p = _params()
    x, y = X[:, 3], Y[:, 3]
    _, want = jaxmlp.value_and_grad(NET, p, X[:, 3:4], Y[:, 3:4])  # batched, m = 1
    got = grad_col_kernel(NET, p, x, y, 1)
    s = jaxmlp.nn.sweep(NET, p, x, y, 1)
    read = gradient_col(s.dZs, s.cache)
    _, checked = value_and_grad_col(NET, p, x, y)
    for g in (got, read, checked):
        for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-7)


def test_the_same_epoch_settings_reuse_one_compiled_epoch():
    """make_train_epoch returns the same jitted epoch for the same (net, optimizer object,
    batch size, ...): refitting traces and compiles nothing new; other settings get their own."""
    import optax

    from jaxmlp import train

    net = jaxmlp.Network((3, 4, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    opt = optax.sgd(0.1)
    a = train.make_train_epoch(net, opt, 4, check_data=False)
    assert train.make_train_epoch(net, opt, 4, check_data=False) is a
    assert train.make_train_epoch(net, opt, 2, check_data=False) is not a
    assert train.make_train_epoch(net, optax.sgd(0.1), 4, check_data=False) is not a
    params = jaxmlp.init_params(net, 0)
    X = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    Y = np.eye(2, dtype=np.float32)[:, np.arange(8) % 2]
    out1 = a(params, opt.init(params), jax.random.key(1), X, Y)
    n_compiled = a._cache_size()
    out2 = train.make_train_epoch(net, opt, 4, check_data=False)(params, opt.init(params),
                                                                  jax.random.key(1), X, Y)
    assert a._cache_size() == n_compiled == 1
    for u, v in zip(jax.tree.leaves(out1), jax.tree.leaves(out2)):
        np.testing.assert_array_equal(u, v)
