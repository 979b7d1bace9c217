"""Bad data and mismatched state through the library: each failure of issue 14 reproduced.

NaN in X or Y, targets outside a cost's domain, an optimizer state of another optimizer:
reported with a clear error before training (or, inside jit where values cannot be
inspected, never hidden behind a finite cost).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.oracle import verification
from jaxmlp.nn.costs import COSTS, categorical_sum_tolerance, check_target_domain

NET = jaxmlp.Network((4, 6, 4), ("relu", "softmax"), "categorical_cross_entropy")
BIN = jaxmlp.Network((4, 5, 1), ("relu", "sigmoid"), "binary_cross_entropy")


def _data(net=NET, m=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(net.sizes[0], m)).astype(np.float32)
    nL = net.sizes[-1]
    if net.cost == "categorical_cross_entropy":
        Y = np.eye(nL, dtype=np.float32)[:, rng.integers(0, nL, m)]
    else:
        Y = (rng.random((nL, m)) < 0.5).astype(np.float32)
    return X, Y


def _setup(net=NET, opt=None):
    opt = opt or optax.adam(1e-2)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    return opt, params, opt.init(params)


# ----------------------------------------------------------------------------- non-finite data


def test_one_nan_in_X_is_rejected_by_the_epoch_and_step_functions():
    """Issue: one NaN in X gave costs [3.044 1.376 1.439], first_nonfinite None, NaN weights."""
    X, Y = _data()
    X[1, 5] = np.nan
    opt, params, state = _setup()
    epoch = train.make_train_epoch(NET, opt, 8)
    step = train.make_train_step(NET, opt)
    for call in (lambda: epoch(params, state, jax.random.PRNGKey(1), X, Y),
                 lambda: epoch(params, state, jax.random.PRNGKey(1), jnp.asarray(X), Y),
                 lambda: step(params, state, X, Y)):
        with pytest.raises(ValueError, match=r"X: expected finite values, found 1 NaN or infinite entry of 96"):
            call()
    Y2 = Y.copy()
    Y2[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"Y: expected finite values .* first at Y\[0, 0\] = inf"):
        epoch(params, state, jax.random.PRNGKey(1), _data()[0], Y2)


def test_nan_inside_jit_is_never_hidden_behind_a_finite_cost():
    """Inside an outer jit the values cannot be inspected; NaN then reaches the cost of the
    minibatch holding it (ReLU no longer maps NaN to 0), and first_nonfinite finds it."""
    X, Y = _data()
    X[1, 9] = np.nan
    opt, params, state = _setup()
    epoch = train.make_train_epoch(NET, opt, 8, permutation=lambda key, m: jnp.arange(m))
    new_params, _, metrics = jax.jit(epoch)(params, state, jax.random.PRNGKey(1), X, Y)
    costs = np.asarray(metrics.cost)
    assert np.isfinite(costs[0]) and np.isnan(costs[1])  # column 9 is in the second minibatch
    assert train.first_nonfinite(costs) == 1
    assert all(np.isnan(np.asarray(leaf)).any() for leaf in jax.tree.leaves(new_params))
    assert np.isnan(float(train.cost_and_metrics(NET, new_params, *_data())["cost"]))


def test_checked_once_per_dataset():
    """A jax.Array that passed is not inspected again (the check is per dataset, not per
    epoch); a new array is."""
    X, Y = (jnp.asarray(a) for a in _data())
    opt, params, state = _setup()
    epoch = train.make_train_epoch(NET, opt, 8)
    assert not jaxmlp.nn.datacheck._seen(X, "finite")
    epoch(params, state, jax.random.PRNGKey(1), X, Y)
    assert jaxmlp.nn.datacheck._seen(X, "finite") and jaxmlp.nn.datacheck._seen(Y, NET.cost)
    assert not jaxmlp.nn.datacheck._seen(X + 0, "finite")


# ----------------------------------------------------------------------------- target domains


@pytest.mark.parametrize("cost, domain", [
    ("binary_cross_entropy", "entries in [0, 1]"),
    ("multilabel_cross_entropy", "entries in [0, 1]"),
    ("categorical_cross_entropy", "entries >= 0, every column summing to 1"),
    ("mean_squared_error", "finite values"),
])
def test_each_cost_states_its_domain(cost, domain):
    assert COSTS[cost].domain.startswith(domain)


def test_binary_labels_outside_0_1_are_rejected_everywhere():
    """Issue: binary cross-entropy with labels 2 was accepted."""
    X, Y = _data(BIN)
    Y[0, 3] = 2.0
    opt, params, state = _setup(BIN)
    msg = r"Y: binary_cross_entropy is defined for targets with entries in \[0, 1\].* 1 entry outside \[0, 1\], first Y\[0, 3\] = 2"
    with pytest.raises(ValueError, match=msg):
        train.make_train_epoch(BIN, opt, 8)(params, state, jax.random.PRNGKey(0), X, Y)
    with pytest.raises(ValueError, match=msg):
        train.make_train_step(BIN, opt)(params, state, X, Y)
    with pytest.raises(ValueError, match=msg):
        train.cost_and_metrics(BIN, params, X, Y)
    with pytest.raises(ValueError, match=msg):
        verification.check_gradients(BIN, params, X, Y)
    Y[0, 3] = -0.5
    with pytest.raises(ValueError, match=r"first Y\[0, 3\] = -0.5"):
        check_target_domain(BIN, Y)
    Y[0, 3] = 0.7  # probabilities are inside the domain
    check_target_domain(BIN, Y)


def test_categorical_columns_must_be_distributions():
    """Issue: categorical cross-entropy with columns summing to 3 was accepted."""
    X, Y = _data()
    opt, params, state = _setup()
    bad = 3.0 * Y
    with pytest.raises(ValueError, match=r"24 of 24 columns do not sum to 1 within 7.6\d*e-06, first column 0 sums to 3"):
        train.make_train_epoch(NET, opt, 8)(params, state, jax.random.PRNGKey(0), X, bad)
    neg = Y.copy()
    neg[:, 0] = [1.5, -0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"1 negative entry, first Y\[1, 0\] = -0.5"):
        COSTS["categorical_cross_entropy"].check_targets(neg)
    soft = np.full((4, 24), 0.25, np.float32)  # soft labels
    soft[:, 0] = np.float32([0.1, 0.2, 0.3, 0.4])
    COSTS["categorical_cross_entropy"].check_targets(soft)
    nearly = Y.copy()
    nearly[:, 0] *= np.float32(1 + 5e-6)  # float32 rounding of a normalisation passes ...
    check_target_domain(NET, nearly)
    with pytest.raises(ValueError, match="within 1e-08"):  # ... unless the tolerance is tightened
        check_target_domain(NET, nearly, atol=1e-8)
    assert categorical_sum_tolerance(np.float64) == 1e-6
    assert categorical_sum_tolerance(jnp.bfloat16) == 1e-2


def test_targets_are_not_inspected_under_jit():
    """Eager only: a traced Y is skipped (shapes are still checked at trace time)."""
    f = jax.jit(lambda Y: (COSTS["binary_cross_entropy"].check_targets(Y), Y)[1])
    np.testing.assert_array_equal(f(jnp.full((1, 3), 2.0)), 2.0)


def test_mse_accepts_any_finite_target_only():
    net = jaxmlp.Network((3, 2), ("linear",), "mean_squared_error")
    check_target_domain(net, np.array([[1e6, -3.0], [0.0, 7.0]]))
    with pytest.raises(ValueError, match=r"Y: expected finite values \(mean_squared_error is defined for "
                       r"targets with finite values\); found 1 NaN or infinite entry, first at Y\[1, 1\] = nan"):
        check_target_domain(net, np.array([[1.0, 2.0], [3.0, np.nan]]))


# ----------------------------------------------------------------------------- optimizer state


def test_optimizer_state_of_another_optimizer_is_reported():
    """Issue: the state of another optimizer failed inside optax."""
    X, Y = _data()
    params = jaxmlp.init_params(NET, jax.random.PRNGKey(0))
    adam = optax.adam(1e-2)
    momentum_state = optax.sgd(1e-2, momentum=0.9).init(params)
    msg = (r"opt_state: expected the state of this optimizer for these params, optimizer.init\(params\) = "
           r"\(ScaleByAdamState\(count, mu, nu\), EmptyState\(\)\), got \(TraceState\(trace\), EmptyState\(\)\)")
    with pytest.raises(ValueError, match=msg):
        train.make_train_step(NET, adam)(params, momentum_state, X, Y)
    with pytest.raises(ValueError, match=msg):
        train.make_train_epoch(NET, adam, 8)(params, momentum_state, jax.random.PRNGKey(0), X, Y)
    other = jaxmlp.init_params(jaxmlp.Network((4, 7, 4), ("relu", "softmax"), "categorical_cross_entropy"),
                               jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"opt_state\[0\]\.mu\[0\]\['W'\]: expected shape \(6, 4\) float32 as "
                       r"in optimizer.init\(params\), got shape \(7, 4\) float32"):
        train.check_opt_state(adam, params, adam.init(other))
    train.check_opt_state(adam, params, adam.init(params))


# ----------------------------------------------------------------------------- pytrees


def _problem():
    X, Y = _data(m=6)
    return jaxmlp.init_params(NET, jax.random.PRNGKey(0)), X, Y


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_tuple_params_give_tuple_gradients_everywhere():
    """Issue: tuple params came back as a list, so the README's optax step failed in optax."""
    params, X, Y = _problem()
    tp = tuple(params)
    _, grads = jaxmlp.value_and_grad(NET, tp, X, Y)
    assert type(grads) is tuple and jax.tree.structure(grads) == jax.tree.structure(tp)
    _, cache = jaxmlp.forward(NET, tp, X)
    assert jax.tree.structure(jaxmlp.backward(NET, tp, cache, Y)) == jax.tree.structure(tp)
    for tree in (jaxmlp.per_example_grads(NET, tp, X, Y),
                 jaxmlp.per_example_grads(NET, tp, X, Y, method="vmap"),
                 jaxmlp.per_example_stats(NET, tp, X, Y).grads,
                 jaxmlp.per_example_stats(NET, tp, X, Y).variance,
                 jaxmlp.privacy.make_dp_grad_fn(NET, l2_norm_clip=1.0, noise_multiplier=0.5)(
                     tp, X, Y, jax.random.PRNGKey(1))[1],
                 jaxmlp.nn.single_column.value_and_grad_col(NET, tp, X[:, 0], Y[:, 0])[1]):
        assert type(tree) is tuple, type(tree)
    # the README's optax step, on tuple params
    opt = optax.adam(1e-2)
    state = opt.init(tp)
    updates, state = opt.update(grads, state, tp)
    new = optax.apply_updates(tp, updates)
    assert type(new) is tuple
    # and the library's own step and epoch keep the container
    p2, _, _ = train.make_train_step(NET, opt)(tp, opt.init(tp), X, Y)
    p3, _, _ = train.make_train_epoch(NET, opt, 3)(tp, opt.init(tp), jax.random.PRNGKey(0), X, Y)
    assert type(p2) is tuple and type(p3) is tuple
    # the numbers do not depend on the container
    _, g_list = jaxmlp.value_and_grad(NET, params, X, Y)
    for a, b in zip(jax.tree.leaves(g_list), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_other_containers_are_refused_with_a_clear_message():
    from collections import OrderedDict, namedtuple

    params, X, Y = _problem()
    Pair = namedtuple("Pair", "first second")
    with pytest.raises(TypeError, match=r"params: expected a list of 2 dicts .*got Pair; convert it with list\(params\)"):
        jaxmlp.value_and_grad(NET, Pair(*params), X, Y)
    ordered = [OrderedDict(W=l["W"], b=l["b"]) for l in params]
    with pytest.raises(TypeError, match=r"params\[0\] \(layer 1\): expected a plain dict \{'W', 'b'\}, got OrderedDict"):
        jaxmlp.value_and_grad(NET, ordered, X, Y)


# ----------------------------------------------------------------------------- keys


def test_one_key_helper_for_every_function_taking_a_key():
    """Issue: bad keys to init_params or the DP gradient function failed inside JAX."""
    same = [jaxmlp.init_params(NET, k) for k in (7, jax.random.PRNGKey(7), jax.random.key(7),
                                                 np.int64(7), jnp.int32(7))]
    for p in same[1:]:
        for a, b in zip(jax.tree.leaves(same[0]), jax.tree.leaves(p)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params, X, Y = _problem()
    opt = optax.sgd(0.1)
    grad_fn = jaxmlp.privacy.make_dp_grad_fn(NET, l2_norm_clip=1.0, noise_multiplier=1.0)
    epoch = train.make_train_epoch(NET, opt, 3)
    calls = {
        "init_params": lambda k: jaxmlp.init_params(NET, k),
        "dp grad_fn": lambda k: grad_fn(params, X, Y, k),
        "dp_value_and_grad": lambda k: jaxmlp.privacy.dp_value_and_grad(
            NET, params, X, Y, k, l2_norm_clip=1.0, noise_multiplier=1.0),
        "epoch": lambda k: epoch(params, opt.init(params), k, X, Y),
        "split_key": train.split_key,
        "permutation": lambda k: jaxmlp.train.shuffle.permutation(k, 6),
    }
    how = r"key: expected a PRNG key \(jax.random.key\(seed\): .* or an integer seed, got "
    for name, call in calls.items():
        with pytest.raises(TypeError, match=how + "float"):
            call(0.5)
        with pytest.raises(TypeError, match=how + "str"):
            call("seed")
        with pytest.raises(TypeError, match=how + r"dtype float32 and shape \(2,\)"):
            call(np.zeros(2, np.float32))
        with pytest.raises(ValueError, match=r"key: expected a single PRNG key, got 3 raw keys"):
            call(jax.random.split(jax.random.PRNGKey(0), 3))
        with pytest.raises(ValueError, match=r"key: an integer seed must be in \[0, 2\*\*(32|64)\), got -1"):
            call(-1)
        call(3)  # an integer seed is jax.random.key(3)
    # a seed gives what jax.random.key(seed) gives
    a = grad_fn(params, X, Y, 3)[1]
    b = grad_fn(params, X, Y, jax.random.key(3))[1]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_step_data_check_can_be_left_to_the_caller():
    """check_data=False (for a loop over minibatches of a set checked once): no scan, and a
    NaN then shows as a NaN cost rather than an error."""
    X, Y = _data()
    X[0, 0] = np.nan
    opt, params, state = _setup()
    with pytest.raises(ValueError, match="X: expected finite values"):
        train.check_data(NET, X, Y)
    _, _, m = train.make_train_step(NET, opt, check_data=False)(params, state, X, Y)
    assert np.isnan(float(m.cost))
    with pytest.raises(TypeError, match="check_data: expected True or False, got 1"):
        train.make_train_step(NET, opt, check_data=1)


def test_the_core_functions_refuse_infinite_X_that_tanh_would_hide():
    """An infinite feature saturates tanh to a finite output (J finite before): the public
    core functions refuse concrete non-finite X (and Y outside the cost's domain) before the
    call, positional or keyword; inside jit the values are tracers and pass through."""
    from jaxmlp.train.ensemble import ensemble_predict, init_ensemble

    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = np.zeros((4, 5), np.float32)
    X[2, 0] = np.inf
    Y = np.eye(3, dtype=np.float32)[:, [0, 1, 2, 0, 1]]
    assert np.isfinite(np.asarray(jax.jit(lambda X: jaxmlp.predict(net, p, X))(X))).all()
    calls = {"predict": lambda: jaxmlp.predict(net, p, X),
             "forward": lambda: jaxmlp.forward(net, p, X=X),
             "loss": lambda: jaxmlp.loss(net, p, X, Y),
             "value_and_grad": lambda: jaxmlp.value_and_grad(net, p, X, Y=Y),
             "ensemble_predict": lambda: ensemble_predict(net, init_ensemble(net, 0, 2), X)}
    for name, call in calls.items():
        with pytest.raises(ValueError, match="^X: expected finite values, found 1 NaN or "
                                             "infinite entry of 20"):
            call()
    ok = np.zeros((4, 5), np.float32)
    _, cache = jaxmlp.forward(net, p, ok)
    with pytest.raises(ValueError, match="^Y: expected finite values"):
        jaxmlp.backward(net, p, cache, Y * np.nan)
    with pytest.raises(ValueError, match="^Y: .*categorical_cross_entropy"):
        jaxmlp.loss(net, p, ok, 2 * Y)
    np.testing.assert_allclose(  # the checked call is the jitted one, net= by name too
        np.asarray(jaxmlp.loss(net=net, params=p, X=ok, Y=Y)),
        np.asarray(jaxmlp.loss.lower(net, p, ok, Y).compile()(p, ok, Y)), rtol=0)
    assert callable(jaxmlp.loss.clear_cache)
    # a jax.Array is not inspected by the core functions (no device sync in a user's loop):
    # the check is the host's, so the jitted program and its result are the unchecked ones
    Xd = jnp.asarray(X)
    np.testing.assert_array_equal(np.asarray(jaxmlp.predict(net, p, Xd)),
                                  np.asarray(jaxmlp.predict.__wrapped__(net, p, Xd)))


def test_the_core_functions_name_text_and_pandas_data():
    """Text X and a pandas DataFrame reach the checks' TypeError naming X, not JAX's
    "not a valid JAX type" (the jitted function never sees them)."""
    pd = pytest.importorskip("pandas")
    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match=r"^X: expected a real numeric array, got dtype <U"):
        jaxmlp.predict(net, p, X.astype(str))
    with pytest.raises(TypeError, match=r"^X: expected an array of shape \(4, m\), columns are "
                                        r"examples; got a pandas DataFrame.*to_numpy\(np.float32\).T"):
        jaxmlp.predict(net, p, pd.DataFrame(X.T))
    with pytest.raises(TypeError, match=r"^Y: .*got dtype object"):
        jaxmlp.loss(net, p, X, np.eye(3)[:, [0, 1, 2, 0, 1]].astype(object))


def test_data_closed_over_by_a_traced_function_is_checked_while_tracing():
    """Concrete X, Y closed over inside the user's jit or scan: checked at trace time (a
    finite X traces and runs; an infinite one is refused), not a TracerBoolConversionError."""
    net = jaxmlp.Network((4, 6, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, np.arange(8) % 3]
    opt = optax.sgd(0.1)
    step = train.make_train_step(net, opt)
    J = jax.jit(lambda p, s: step(p, s, X, Y))(p, opt.init(p))[2].cost
    assert float(J) == float(jaxmlp.loss(net, p, X, Y))
    costs = jax.lax.scan(lambda c, _: (c, jaxmlp.value_and_grad(net, p, X, Y)[0]), 0, None,
                         length=2)[1]
    np.testing.assert_array_equal(np.asarray(costs), [J, J])
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="^X: expected finite values"):
        jax.jit(lambda p: jaxmlp.value_and_grad(net, p, X, Y))(p)


def test_bfloat16_numpy_data_is_numeric_not_text():
    """ml_dtypes' bfloat16 is NumPy dtype kind 'V' (as records are): it is data, accepted
    by the checks of the core and of fit's conversion, while records are refused."""
    import ml_dtypes

    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, 0, dtype=jnp.bfloat16)
    X = np.ones((4, 3), ml_dtypes.bfloat16)
    out = jaxmlp.predict(net, p, X)
    assert out.dtype == jnp.bfloat16 and out.shape == (3, 3)
    assert not jaxmlp.nn.checks.not_numeric(X.dtype)
    assert jaxmlp.nn.checks.not_numeric(np.dtype([("a", "f4")]))


def test_host_lists_are_checked_like_arrays_and_messages_show_every_digit():
    """A Python list is host data like a NumPy array: a NaN in X and a categorical Y whose
    columns sum to 2 are refused (before: a NaN prediction and J = 2.05); an out-of-range
    target is printed with all its digits (1.0000001..., not "1")."""
    net = jaxmlp.Network((4, 6, 2), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, 0)
    X = np.zeros((4, 5)).tolist()
    X[0][0] = float("nan")
    with pytest.raises(ValueError, match="^X: expected finite values, found 1 NaN"):
        jaxmlp.predict(net, p, X)
    with pytest.raises(ValueError, match="^Y: categorical_cross_entropy .* sums to 2"):
        jaxmlp.loss(net, p, np.zeros((4, 5), np.float32), [[2.0] * 5, [0.0] * 5])
    bce = jaxmlp.Network((3, 1), ("sigmoid",), "binary_cross_entropy")
    Y = np.array([[0, 1, 0, 1]], np.float32)
    Y[0, 1] += np.float32(1e-7)
    with pytest.raises(ValueError, match=r"first Y\[0, 1\] = 1\.00000011920928"):
        jaxmlp.loss(bce, jaxmlp.init_params(bce, 0), np.zeros((3, 4), np.float32), Y)


def test_a_forward_map_that_fails_is_named_not_its_derivative():
    """softplus as log1p(exp(z)) overflows at z = 100 while its derivative (sigmoid) is
    right: register_activation names forward."""
    with pytest.raises(ValueError, match="^forward: the forward map of 'sp_naive' fails"):
        jaxmlp.register_activation("sp_naive", lambda Z: jnp.log1p(jnp.exp(Z)), jax.nn.sigmoid)
    assert "sp_naive" not in jaxmlp.ACTIVATIONS
