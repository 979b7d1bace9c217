"""jaxmlp.train.loop.fit: the training loop: epochs, evaluation, divergence, callbacks, resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.train.loop import fit

NET = jaxmlp.Network((5, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")


def _data(m=48, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(5, m)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, rng.integers(0, 3, size=m)]
    return jnp.asarray(X), jnp.asarray(Y)


def _params():
    return jaxmlp.init_params(NET, jax.random.PRNGKey(1))


def test_fit_equals_the_epoch_function_called_by_hand():
    X, Y = _data()
    opt = optax.adam(1e-2)
    key = jax.random.PRNGKey(7)
    fr = fit(NET, _params(), opt, X, Y, epochs=3, batch_size=16, key=key,
             eval_sets={"train": (X, Y)})
    assert fr.status == "completed" and fr.message is None
    assert [h["epoch"] for h in fr.history] == [1, 2, 3] and fr.state.epoch == 3
    # the same epochs by hand: split the key, run the compiled epoch
    epoch = train.make_train_epoch(NET, opt, 16)
    params, st, k = _params(), opt.init(_params()), key
    for _ in range(3):
        k, ek = jax.random.split(k)
        params, st, mt = epoch(params, st, ek, X, Y)
    for a, b in zip(jax.tree.leaves(fr.state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    ev = train.cost_and_metrics(NET, params, X, Y)
    assert fr.history[-1]["train_accuracy"] == pytest.approx(float(ev["accuracy"]))
    assert fr.history[-1]["train_cost"] == pytest.approx(float(ev["cost"]))
    assert fr.history[-1]["running_cost"] == pytest.approx(float(np.mean(mt.cost)))


def test_resume_from_a_state_reaches_the_uninterrupted_parameters():
    X, Y = _data()
    opt = optax.sgd(0.1, momentum=0.9)
    key = jax.random.PRNGKey(3)
    full = fit(NET, _params(), opt, X, Y, epochs=4, batch_size=8, key=key)
    half = fit(NET, _params(), opt, X, Y, epochs=2, batch_size=8, key=key)
    rest = fit(NET, None, opt, X, Y, epochs=4, batch_size=8, key=None, state=half.state,
               history=half.history)
    assert [h["epoch"] for h in rest.history] == [1, 2, 3, 4]
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(rest.state.params)):
        np.testing.assert_array_equal(a, b)


def test_nan_parameters_stop_the_run_and_return_the_last_good_state():
    X, Y = _data()
    calls = []
    # an infinite learning rate makes the parameters inf/NaN after the first update
    fr = fit(NET, _params(), optax.sgd(float("inf")), X, Y, epochs=5, batch_size=16,
             key=jax.random.PRNGKey(0), explode_factor=None,
             on_epoch_end=lambda st, row: calls.append(st.epoch))
    assert fr.status == "diverged"
    assert "epoch 1, step 2 of 3" in fr.message, fr.message
    assert fr.state.epoch == 0 and calls == []  # nothing damaged reached the callback
    for a, b in zip(jax.tree.leaves(fr.state.params), jax.tree.leaves(_params())):
        np.testing.assert_array_equal(a, b)  # the last good state: the initial one


def test_nonfinite_parameters_after_the_last_update_are_caught():
    X, Y = _data(m=16)
    # one step per epoch: the cost of that step is finite, the parameters after it are not
    fr = fit(NET, _params(), optax.sgd(float("inf")), X, Y, epochs=2, batch_size=16,
             key=jax.random.PRNGKey(0), explode_factor=None)
    assert fr.status == "diverged" and "parameters became non-finite" in fr.message
    assert fr.state.epoch == 0


def _grow_tenfold():
    """An 'optimizer' whose update multiplies every parameter by 10: a finite explosion."""
    return optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda u, s, p: (jax.tree.map(lambda x: 9.0 * x, p), s))


def test_a_finite_explosion_stops_the_run_and_the_factor_is_adjustable():
    X, Y = _data(m=16)
    key = jax.random.PRNGKey(0)
    # one step per epoch; the cost grows about tenfold per step and stays finite
    fr = fit(NET, _params(), _grow_tenfold(), X, Y, epochs=6, batch_size=16, key=key,
             explode_factor=100.0)
    assert fr.status == "diverged" and "explode_factor" in fr.message, fr.message
    stopped_at = fr.state.epoch + 1
    assert 2 <= stopped_at <= 4
    # a larger factor lets the same run go further; None disables the check
    later = fit(NET, _params(), _grow_tenfold(), X, Y, epochs=6, batch_size=16, key=key,
                explode_factor=1e4)
    assert later.state.epoch > fr.state.epoch
    off = fit(NET, _params(), _grow_tenfold(), X, Y, epochs=3, batch_size=16, key=key,
              explode_factor=None)
    assert off.status == "completed"
    assert off.history[-1]["running_cost"] > 50 * off.history[0]["first_cost"]


def test_on_epoch_end_can_stop():
    X, Y = _data()
    fr = fit(NET, _params(), optax.sgd(0.1), X, Y, epochs=5, batch_size=16,
             key=jax.random.PRNGKey(0), on_epoch_end=lambda st, row: st.epoch < 2)
    assert fr.status == "stopped" and fr.state.epoch == 2 and len(fr.history) == 2


def test_bad_input_is_refused_before_training():
    X, Y = _data()
    opt = optax.sgd(0.1)
    key = jax.random.PRNGKey(0)
    Xn = X.at[2, 3].set(jnp.nan)
    with pytest.raises(ValueError, match="^X: expected finite values"):
        fit(NET, _params(), opt, Xn, Y, epochs=1, batch_size=8, key=key)
    with pytest.raises(ValueError, match=r"eval_sets\['test'\] X: expected finite"):
        fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key=key,
            eval_sets={"test": (Xn, Y)})
    for wrong, got in (((X, Y), "tuple"), ([(X, Y)], "list")):
        with pytest.raises(TypeError, match=r"^eval_sets: expected a mapping \{name: \(X, Y\)\}, "
                                            rf"e.g. .* got {got}\.$"):
            fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key=key, eval_sets=wrong)
    with pytest.raises(TypeError, match="^eval_sets: expected names that are non-empty strings"):
        fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key=key, eval_sets={1: (X, Y)})
    for bad, got in ((3, "int"), ([1, 2], "a list holding int")):
        with pytest.raises(TypeError, match=rf"^history: expected None or the list of per-epoch "
                                            rf"dicts of a previous run \(FitResult.history\), "
                                            rf"got {got}\.$"):
            fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key=key, history=bad)
    # a transformation that needs its own params container: refused by name, not optax's error
    with pytest.raises(TypeError, match=r"^optimizer: its update fails on the network's params .*"
                                        r"'fast'.*optax.lookahead"):
        fit(NET, _params(), optax.lookahead(optax.adam(1e-3), 5, 0.5), X, Y, epochs=1,
            batch_size=8, key=key)
    with pytest.raises(ValueError, match="^epochs: expected a positive integer, got 0"):
        fit(NET, _params(), opt, X, Y, epochs=0, batch_size=8, key=key)
    with pytest.raises(TypeError, match="^epochs: expected a positive integer"):
        fit(NET, _params(), opt, X, Y, epochs=2.0, batch_size=8, key=key)
    with pytest.raises(ValueError, match="^explode_factor: expected a number > 1"):
        fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key=key, explode_factor=0.5)
    with pytest.raises(TypeError, match="^key: expected a PRNG key"):
        fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key="seed")
    with pytest.raises(TypeError, match="^on_epoch_end"):
        fit(NET, _params(), opt, X, Y, epochs=1, batch_size=8, key=key, on_epoch_end=3)
    with pytest.raises(ValueError, match="^X: expected shape"):
        fit(NET, _params(), opt, X.T, Y, epochs=1, batch_size=8, key=key)


def test_epoch_and_step_functions_refuse_nonfinite_data():
    X, Y = _data()
    opt = optax.sgd(0.1)
    params = _params()
    epoch = train.make_train_epoch(NET, opt, 16)
    step = train.make_train_step(NET, opt)
    with pytest.raises(ValueError, match="^X: expected finite values, found 1 NaN"):
        epoch(params, opt.init(params), jax.random.PRNGKey(0), X.at[0, 0].set(jnp.nan), Y)
    with pytest.raises(ValueError, match="^Y: expected finite values"):
        step(params, opt.init(params), X, Y.at[1, 2].set(jnp.inf))
    # inside a user's jit the data are tracers: no value check, no error
    jax.jit(lambda p, s: step.__wrapped__(p, s, X, Y))(params, opt.init(params))


def test_explode_test_in_float16_costs_warns_nothing():
    """diagnose compares a float16 cost with explode_factor x baseline in Python floats: the
    product (1e6 x 2.9) overflows float16, which gave a RuntimeWarning and a test that could
    never fire; it fires at its threshold in float16 as in float32."""
    import warnings

    from jaxmlp.train.monitor import diagnose

    ok = np.ones(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert diagnose(1, np.array([2.9, 2.5, 2.0], np.float16), ok, True, 2.9, 1e6) is None
        msg = diagnose(1, np.array([2.9, 40.0, 2.0], np.float16), ok, True, 2.9, 10.0)
    assert msg.startswith("the minibatch cost exploded to 40 at epoch 1, step 2 of 3")
