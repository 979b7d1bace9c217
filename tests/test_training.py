"""jaxmlp.train.step: the optax step on the hand-derived gradient, the scanned epoch, metrics."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import r2_score

import jaxmlp
from jaxmlp.train import shuffle
from jaxmlp import train

from helpers import numpy_targets  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NETS = {
    "categorical": (jaxmlp.Network((5, 7, 4), ("tanh", "softmax"), "categorical_cross_entropy")),
    "binary": (jaxmlp.Network((5, 6, 1), ("relu", "sigmoid"), "binary_cross_entropy")),
    "multilabel": (jaxmlp.Network((5, 6, 3), ("sigmoid", "sigmoid"), "multilabel_cross_entropy")),
    "regression": (jaxmlp.Network((5, 8, 6, 2), ("elu", "tanh", "linear"), "mean_squared_error")),
}


def _data(net, m, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(net.sizes[0], m))
    return X.astype(dtype), numpy_targets(net, rng, m).astype(dtype)


def _params(net, seed=1, dtype=jnp.float64):
    """Params drawn with NumPy (no compiled draw per network): W ~ N(0, 1/n[l-1]), b ~ N(0, 0.01)."""
    rng = np.random.default_rng(seed)
    return [{"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1]), dtype),
             "b": jnp.asarray(0.1 * rng.normal(size=s["b"]), dtype)} for s in net.param_shapes()]


def _oracle_grad(net, params, X, Y):
    """dJ/dtheta by autodiff (an oracle, allowed in tests) of jaxmlp.loss."""
    return jax.grad(lambda p: jaxmlp.loss(net, p, X, Y))(params)


# ----------------------------------------------------------------------------- step


@pytest.mark.parametrize("kind", list(NETS))
def test_sgd_step_is_params_minus_lr_times_gradient(kind):
    net = NETS[kind]
    X, Y = _data(net, 9)
    params = _params(net)
    lr = 0.3
    opt = optax.sgd(lr)
    step = train.make_train_step(net, opt)
    new, _, metrics = step(params, opt.init(params), X, Y)
    g = jax.tree.map(np.asarray, _oracle_grad(net, params, X, Y))  # NumPy from here on
    manual = jax.tree.map(lambda p, g: np.asarray(p) - lr * g, params, g)
    chex.assert_trees_all_close(new, manual, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(metrics.cost, jaxmlp.loss(net, params, X, Y), rtol=1e-14)
    norm = np.sqrt(sum(float(np.sum(x * x)) for x in jax.tree.leaves(g)))
    np.testing.assert_allclose(metrics.grad_norm, norm, rtol=1e-12)


def test_step_with_adam_matches_optax_on_the_oracle_gradient():
    net = NETS["categorical"]
    X, Y = _data(net, 12)
    params = _params(net)
    opt = optax.adam(1e-2)
    step = train.make_train_step(net, opt)
    p1, s1, _ = step(params, opt.init(params), X, Y)
    p1, s1, _ = step(p1, s1, X, Y)
    p2, s2 = params, opt.init(params)
    for _ in range(2):
        u, s2 = opt.update(_oracle_grad(net, p2, X, Y), s2, p2)
        p2 = optax.apply_updates(p2, u)
    chex.assert_trees_all_close(p1, p2, rtol=1e-10, atol=1e-13)
    chex.assert_trees_all_close(s1, s2, rtol=1e-10, atol=1e-13)


def test_step_passes_the_cost_as_value_to_transformations_that_read_it():
    """optax.contrib.reduce_on_plateau reads value=J: the step equals the oracle loop that
    passes jax.value_and_grad's cost, and the plateau scale moves (value is used); an
    optimizer needing arguments the step does not give (optax.lbfgs) is refused by name."""
    net = NETS["categorical"]
    X, Y = _data(net, 12)
    params = _params(net)
    opt = optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(
        patience=0, factor=0.5, rtol=0.5, accumulation_size=1))
    step = train.make_train_step(net, opt)
    p1, s1, p2, s2 = params, opt.init(params), params, opt.init(params)
    for _ in range(4):
        p1, s1, _ = step(p1, s1, X, Y)
        J, g = jax.value_and_grad(lambda p: jaxmlp.loss(net, p, X, Y))(p2)
        u, s2 = opt.update(g, s2, p2, value=J)
        p2 = optax.apply_updates(p2, u)
    chex.assert_trees_all_close(p1, p2, rtol=1e-10, atol=1e-13)
    assert float(s1[1].scale) < 1.0 and float(s1[1].scale) == float(s2[1].scale)
    lbfgs = optax.lbfgs()
    with pytest.raises(TypeError, match=r"optimizer: its update needs 'grad' and 'value_fn', "
                                        r"which the training step does not give"):
        train.make_train_step(net, lbfgs)(params, lbfgs.init(params), X, Y)


def test_step_float32_and_dtype_mismatch():
    net = NETS["binary"]
    X, Y = _data(net, 10, dtype=np.float32)
    params = _params(net, dtype=jnp.float32)
    opt = optax.sgd(0.1)
    step = train.make_train_step(net, opt)
    new, state, m = step(params, opt.init(params), X, Y)
    assert new[0]["W"].dtype == jnp.float32 and m.cost.dtype == jnp.float32
    with pytest.raises(TypeError, match="X: expected dtype float32"):
        step(params, opt.init(params), X.astype(np.float64), Y)


def test_kfac_options_with_another_optimizer_are_refused_not_dropped():
    for kw in ({"damping": 5.0}, {"inverse_every": 3}, {"kfac_kind": "exact"},
               {"kfac_kl_clip": None}, {"kfac_adaptive_damping": True}):
        (arg, value), = kw.items()
        with pytest.raises(ValueError, match=rf"^{arg}: a K-FAC option, only with name='kfac'; "
                                             rf"got {arg}={value!r} with 'adam'"):
            train.make_optimizer("adam", 1e-3, **kw)
    # the defaults passed explicitly, and the options with "kfac", are fine
    train.make_optimizer("adam", 1e-3, damping=1e-3, inverse_every=20, kfac_kind="mc")
    assert train.make_optimizer("kfac", 0.1, damping=5.0).options["damping"] == 5.0


def test_step_bad_input():
    net = NETS["binary"]
    with pytest.raises(TypeError, match="optimizer: expected an optax.GradientTransformation"):
        train.make_train_step(net, "adam")
    with pytest.raises(TypeError, match="net: expected a jaxmlp.Network"):
        train.make_train_step((5, 6, 1), optax.sgd(0.1))
    opt = optax.sgd(0.1)
    step = train.make_train_step(net, opt)
    params = _params(net)
    X, Y = _data(net, 10)
    with pytest.raises(ValueError, match=r"X: expected shape \(n\[0\], m\) = \(5, m\)"):
        step(params, opt.init(params), X.T, Y)
    with pytest.raises(ValueError, match=r"Y: expected shape"):
        step(params, opt.init(params), X, Y[:, :5])


# ----------------------------------------------------------------------------- epoch


@pytest.mark.parametrize(
    "kind, opt",
    [("categorical", optax.sgd(0.2)), ("regression", optax.adam(3e-3)),
     ("multilabel", train.make_optimizer("nesterov", 0.1, weight_decay=1e-3))],
)
def test_scan_epoch_equals_python_loop_of_steps(kind, opt):
    net = NETS[kind]
    m, bs = 50, 8  # 6 minibatches, 2 columns skipped per epoch
    X, Y = _data(net, m, seed=2)
    params = _params(net)
    epoch = train.make_train_epoch(net, opt, bs)
    step = train.make_train_step(net, opt)
    key = jax.random.PRNGKey(7)
    p_scan, s_scan = params, opt.init(params)
    p_loop, s_loop = params, opt.init(params)
    for e in range(3):
        key, k = jax.random.split(key)
        p_scan, s_scan, ms = epoch(p_scan, s_scan, k, X, Y)
        idx = np.asarray(train.epoch_batches(k, m, bs))
        costs = []
        for s in range(idx.shape[0]):
            p_loop, s_loop, ml = step(p_loop, s_loop, X[:, idx[s]], Y[:, idx[s]])
            costs.append(float(ml.cost))
        assert ms.cost.shape == (6,) and ms.grad_norm.shape == (6,)
        np.testing.assert_allclose(ms.cost, costs, rtol=1e-12)
        chex.assert_trees_all_close(p_scan, p_loop, rtol=1e-12, atol=1e-14)
        chex.assert_trees_all_close(s_scan, s_loop, rtol=1e-12, atol=1e-14)


def test_epoch_batches_is_a_fresh_permutation_with_the_remainder_skipped():
    m, bs = 23, 5
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    idx = np.asarray(train.epoch_batches(k1, m, bs))
    assert idx.shape == (4, 5)
    assert len(set(idx.ravel())) == 20 and set(idx.ravel()) <= set(range(m))
    np.testing.assert_array_equal(idx.ravel(), np.asarray(shuffle.permutation(k1, m))[:20])
    assert not np.array_equal(idx, np.asarray(train.epoch_batches(k2, m, bs)))
    assert train.epoch_batches(k1, m, m).shape == (1, m)  # full batch
    with pytest.raises(ValueError, match="batch_size: expected at most the number of training examples m = 23, got 24"):
        train.epoch_batches(k1, m, 24)


def test_epoch_bad_input():
    net = NETS["binary"]
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        train.make_train_epoch(net, opt, 0)
    with pytest.raises(TypeError, match="batch_size"):
        train.make_train_epoch(net, opt, 2.5)
    epoch = train.make_train_epoch(net, opt, 16)
    params = _params(net)
    X, Y = _data(net, 10)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="batch_size: expected at most the number of training examples m = 10, got 16"):
        epoch(params, opt.init(params), key, X, Y)
    epoch = train.make_train_epoch(net, opt, 4)
    with pytest.raises(TypeError, match="key: expected a PRNG key"):
        epoch(params, opt.init(params), jnp.zeros(3), X, Y)
    new, _, m = epoch(params, opt.init(params), jax.random.key(0), X, Y)  # typed keys work too
    assert m.cost.shape == (2,)
    with pytest.raises(TypeError, match="permutation: expected a function .*got str"):
        train.make_train_epoch(net, opt, 4, permutation="random")
    bad = train.make_train_epoch(net, opt, 4, permutation=lambda key, m: jnp.arange(m - 1))
    with pytest.raises(ValueError, match=r"permutation: expected the shuffle to return shape \(10,\), got \(9,\)"):
        bad(params, opt.init(params), key, X, Y)


def test_epoch_with_another_permutation_is_the_loop_over_its_batches():
    """``permutation=jax.random.permutation`` (e.g. to reproduce older runs) and no shuffle."""
    net = NETS["categorical"]
    opt = optax.sgd(0.05)
    m, bs = 30, 7
    X, Y = _data(net, m, seed=3)
    params = _params(net)
    key = jax.random.PRNGKey(5)
    step = train.make_train_step(net, opt)
    for perm in (jax.random.permutation, lambda k, m: jnp.arange(m)):
        p_scan, s_scan, _ = train.make_train_epoch(net, opt, bs, permutation=perm)(
            params, opt.init(params), key, X, Y)
        idx = np.asarray(train.epoch_batches(key, m, bs, perm))
        np.testing.assert_array_equal(idx.ravel(), np.asarray(perm(key, m))[: 4 * bs])
        p_loop, s_loop = params, opt.init(params)
        for row in idx:
            p_loop, s_loop, _ = step(p_loop, s_loop, X[:, row], Y[:, row])
        chex.assert_trees_all_close(p_scan, p_loop, rtol=1e-12, atol=1e-14)


def test_nonfinite_cost_is_reported():
    net = jaxmlp.Network((5, 2), ("linear",), "mean_squared_error")
    X, Y = _data(net, 32, dtype=np.float32)
    params = _params(net, dtype=jnp.float32)
    opt = optax.sgd(1e4)  # b <- b - 1e4 (b - mean y): |b| grows 1e4-fold per step
    epoch = train.make_train_epoch(net, opt, 4)
    _, _, m = epoch(params, opt.init(params), jax.random.PRNGKey(0), X, Y)
    bad = train.first_nonfinite(m.cost)
    assert bad is not None and bad >= 1 and not np.isfinite(np.asarray(m.cost)[bad])
    assert np.all(np.isfinite(np.asarray(m.cost)[:bad]))
    assert train.first_nonfinite(np.array([1.0, 2.0])) is None


# ----------------------------------------------------------------------------- optimizers


def test_make_optimizer_weight_decay_only_on_weights():
    net = NETS["binary"]
    X, Y = _data(net, 10)
    params = _params(net)
    lr, wd = 0.1, 0.5
    opt = train.make_optimizer("sgd", lr, weight_decay=wd)
    new, _, _ = train.make_train_step(net, opt)(params, opt.init(params), X, Y)
    g = _oracle_grad(net, params, X, Y)
    for p, q, gl in zip(params, new, g):
        np.testing.assert_allclose(q["W"], p["W"] - lr * (gl["W"] + wd * p["W"]), rtol=1e-12)
        np.testing.assert_allclose(q["b"], p["b"] - lr * gl["b"], rtol=1e-12, atol=1e-15)


def test_make_optimizer_schedules_and_names():
    for name in train.OPTIMIZERS:
        assert callable(train.make_optimizer(name, 1e-3).update)
    net = NETS["binary"]
    X, Y = _data(net, 10)
    params = _params(net)
    opt = train.make_optimizer("sgd", 1.0, schedule="cosine", total_steps=4)
    step = train.make_train_step(net, opt)
    p, s = params, opt.init(params)
    for _ in range(4):
        p, s, _ = step(p, s, X, Y)
    p5, _, _ = step(p, s, X, Y)  # step 5: the cosine schedule has reached 0
    chex.assert_trees_all_close(p5, p, atol=1e-15)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("adagrad", 0.1), {}, "optimizer: expected one of"),
        (("sgd", 0.0), {}, "learning_rate: expected a number > 0, got 0.0"),
        (("sgd", -1.0), {}, "learning_rate"),
        (("sgd", float("nan")), {}, "learning_rate"),
        (("sgd", 0.1), {"weight_decay": -1.0}, "weight_decay"),
        (("sgd", 0.1), {"schedule": "step"}, "schedule: expected one of"),
        (("sgd", 0.1), {"schedule": "cosine"}, "total_steps"),
        (("momentum", 0.1), {"momentum": 1.0}, "momentum"),
    ],
)
def test_make_optimizer_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.make_optimizer(*args, **kwargs)


# ----------------------------------------------------------------------------- cost_and_metrics


def test_cost_and_metrics_metrics_against_numpy_and_sklearn():
    params_by = {k: _params(net, seed=3) for k, net in NETS.items()}
    for kind, net in NETS.items():
        X, Y = _data(net, 40, seed=4)
        params = params_by[kind]
        ev = train.cost_and_metrics(net, params, X, Y)
        A = np.asarray(jaxmlp.predict(net, params, X))
        np.testing.assert_allclose(ev["cost"], jaxmlp.loss(net, params, X, Y), rtol=1e-14)
        name = train.metric_name(net)
        if kind == "categorical":
            want = np.mean(A.argmax(0) == Y.argmax(0))
        elif kind == "binary":
            want = np.mean((A[0] > 0.5) == (Y[0] == 1))
        elif kind == "multilabel":
            per = np.mean((A > 0.5) == (Y == 1), axis=1)
            np.testing.assert_allclose(ev["per_label_accuracy"], per)
            np.testing.assert_allclose(ev["exact_match"], np.mean(np.all((A > 0.5) == (Y == 1), axis=0)))
            want = per.mean()
        else:
            want = r2_score(Y.T, A.T)
        np.testing.assert_allclose(ev[name], want, rtol=1e-12)
    assert [train.metric_name(n) for n in NETS.values()] == ["accuracy", "accuracy", "label_accuracy", "r2"]


def test_cost_and_metrics_bad_input():
    net = NETS["binary"]
    X, Y = _data(net, 10)
    with pytest.raises(ValueError, match="Y: expected shape"):
        train.cost_and_metrics(net, _params(net), X, Y[:, :3])


# ----------------------------------------------------------------------------- data parallel


@pytest.mark.slow
def test_data_parallel_epoch_on_two_cpu_devices():
    """The same epoch with minibatch columns split over 2 (simulated) devices: XLA inserts
    the all-reduce of (B1), (B2), (F3) and the result matches the single-device epoch."""
    if not os.path.exists(os.path.join(ROOT, "jaxmlp", "sharding.py")):
        pytest.skip("jaxmlp.parallel.sharding not available")
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, jaxmlp
        from jaxmlp import train
        from jaxmlp.parallel import sharding
        from jax.sharding import NamedSharding, PartitionSpec as P
        mesh = sharding.make_mesh()
        assert mesh.devices.size == 2
        net = jaxmlp.Network((8, 16, 3), ("relu", "softmax"), "categorical_cross_entropy")
        opt = train.make_optimizer("adam", 1e-2)
        p = jaxmlp.init_params(net, jax.random.PRNGKey(0)); s = opt.init(p)
        X = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
        Y = np.eye(3, dtype=np.float32)[:, np.arange(64) % 3]
        ep = train.make_train_epoch(net, opt, 16, batch_sharding=NamedSharding(mesh, P(None, "data")))
        ps, ss, k = sharding.replicate(mesh, (p, s, jax.random.PRNGKey(1)))
        Xs, Ys = sharding.shard_columns(mesh, X), sharding.shard_columns(mesh, Y, name="Y")
        assert "all-reduce" in ep.lower(ps, ss, k, Xs, Ys).compile().as_text()
        r1 = ep(ps, ss, k, Xs, Ys)
        r2 = train.make_train_epoch(net, opt, 16)(p, s, jax.random.PRNGKey(1), X, Y)
        err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(r1), jax.tree.leaves(r2)))
        assert err < 1e-5, err
        print("OK", err)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_cost_and_metrics_rejects_non_finite_data():
    net = jaxmlp.Network((2, 3, 1), ("relu", "sigmoid"), "binary_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    X = np.ones((2, 4), np.float32)
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X: expected finite values, found 1 NaN"):
        jaxmlp.train.cost_and_metrics(net, params, X, np.zeros((1, 4), np.float32))


def test_split_key_is_jax_random_split():
    def data(k):
        return np.asarray(jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k)

    for key in (jax.random.PRNGKey(3), jax.random.key(3)):
        ref = jax.random.split(key)
        for got, want in zip(train.split_key(key), ref):
            np.testing.assert_array_equal(data(got), data(want))
    with pytest.raises(TypeError, match="key: expected a PRNG key"):
        train.split_key(jnp.zeros(3))
