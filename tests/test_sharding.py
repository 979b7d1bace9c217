"""Data-parallel step on a device mesh (jaxmlp.parallel.sharding) equals the one-device step.

The multi-device checks run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``: the flag must be set before
jax initialises its CPU backend, which this test process has already done.
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp.parallel import sharding

_CHILD = textwrap.dedent(
    r"""
    import json, jax, jax.numpy as jnp, numpy as np
    import jaxmlp
    from jaxmlp.parallel import sharding

    out = {"devices": len(jax.devices())}
    mesh = sharding.make_mesh(4)
    cases = [
        ((8, 16, 4), ("relu", "softmax"), "categorical_cross_entropy", 32),
        ((5, 7, 6, 1), ("tanh", "gelu", "sigmoid"), "binary_cross_entropy", 12),
        ((3, 9, 2), ("silu", "linear"), "mean_squared_error", 8),
    ]
    lr = 0.1

    def sgd_step(net, params, X, Y):
        J, grads = jaxmlp.value_and_grad(net, params, X, Y)
        return J, jax.tree.map(lambda w, d: w - lr * d, params, grads)

    step = jax.jit(sgd_step, static_argnums=0)
    errs = []
    for sizes, acts, cost, m in cases:
        net = jaxmlp.Network(sizes, acts, cost)
        params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
        rng = np.random.default_rng(1)
        X = rng.normal(size=(sizes[0], m)).astype(np.float32)
        if cost == "categorical_cross_entropy":
            Y = np.eye(sizes[-1], dtype=np.float32)[:, rng.integers(0, sizes[-1], m)]
        elif cost == "binary_cross_entropy":
            Y = rng.integers(0, 2, (1, m)).astype(np.float32)
        else:
            Y = rng.normal(size=(sizes[-1], m)).astype(np.float32)
        # one device: plain arrays on jax.devices()[0]
        p1, J1 = params, []
        for _ in range(3):
            J, p1 = step(net, p1, jnp.asarray(X), jnp.asarray(Y))
            J1.append(float(J))
        # four devices: the same jitted step on sharded arrays
        pk = sharding.replicate(mesh, params)
        Xs, Ys = sharding.shard_batch(mesh, X, Y)
        assert Xs.sharding.spec == jax.sharding.PartitionSpec(None, "data"), Xs.sharding
        assert len(Xs.addressable_shards) == 4
        assert Xs.addressable_shards[0].data.shape == (sizes[0], m // 4)
        Jk = []
        for _ in range(3):
            J, pk = step(net, pk, Xs, Ys)
            Jk.append(float(J))
        hlo = step.lower(net, pk, Xs, Ys).compile().as_text()
        g1 = jaxmlp.value_and_grad(net, params, jnp.asarray(X), jnp.asarray(Y))[1]
        gk = jaxmlp.value_and_grad(net, sharding.replicate(mesh, params), Xs, Ys)[1]
        rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-30))
        errs.append({
            "sizes": sizes,
            "J1": J1, "Jk": Jk,
            "grad_rel": max(rel(a, b) for a, b in zip(jax.tree.leaves(gk), jax.tree.leaves(g1))),
            "param_rel": max(rel(a, b) for a, b in zip(jax.tree.leaves(pk), jax.tree.leaves(p1))),
            "all_reduce": "all-reduce" in hlo,
            "params_replicated": all(l.sharding.is_fully_replicated for l in jax.tree.leaves(pk)),
        })
    out["cases"] = errs
    msgs = {}
    try:
        sharding.shard_columns(mesh, np.zeros((8, 30), np.float32), name="X")
    except ValueError as e:
        msgs["shard_columns"] = str(e)
    try:
        sharding.check_batch_size(mesh, 30)
    except ValueError as e:
        msgs["check_batch_size"] = str(e)
    try:
        sharding.make_mesh(5)
    except ValueError as e:
        msgs["make_mesh"] = str(e)
    try:
        sharding.shard_batch(mesh, np.zeros((8, 32), np.float32), np.zeros((4, 30), np.float32))
    except ValueError as e:
        msgs["shard_batch"] = str(e)
    out["errors"] = msgs

    # fit's data-parallel epoch compiles once: a fresh optimizer state enters the first epoch
    # with the sharding the epoch returns (Adam's count scalar compiled it twice before)
    import logging, optax
    from jaxmlp.parallel import placement

    seen = []

    class Compiles(logging.Handler):
        def emit(self, record):
            if "Compiling" in record.getMessage() and "epoch" in record.getMessage():
                seen.append(record.getMessage()[:80])

    logging.getLogger("jax").addHandler(Compiles())
    net = jaxmlp.Network((8, 16, 4), ("relu", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    rng = np.random.default_rng(2)
    X = rng.normal(size=(8, 96)).astype(np.float32)
    Y = np.eye(4, dtype=np.float32)[:, rng.integers(0, 4, 96)]
    pl = placement.data_parallel(X, Y, X[:, :16], Y[:, :16], params, batch_size=16)
    jax.config.update("jax_log_compiles", True)
    fr = jaxmlp.fit(net, pl.replicated, optax.adam(1e-2), pl.X_train, pl.Y_train, epochs=3,
                    batch_size=16, key=0, batch_sharding=pl.batch_sharding)
    jax.config.update("jax_log_compiles", False)
    out["fit_epoch_compiles"] = len(seen)
    out["fit_status"] = fr.status
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    from helpers import run_on_four_cpu_devices

    return run_on_four_cpu_devices(_CHILD)


def test_subprocess_has_four_devices(four_devices):
    assert four_devices["devices"] == 4


def test_sharded_step_equals_single_device(four_devices):
    for case in four_devices["cases"]:
        np.testing.assert_allclose(case["Jk"], case["J1"], rtol=1e-5, err_msg=str(case["sizes"]))
        assert case["grad_rel"] < 1e-5, case
        assert case["param_rel"] < 1e-5, case


def test_gradient_reduction_is_inserted_by_xla(four_devices):
    for case in four_devices["cases"]:
        assert case["all_reduce"], case["sizes"]
        assert case["params_replicated"], case["sizes"]


def test_data_parallel_fit_compiles_its_epoch_once(four_devices):
    assert four_devices["fit_status"] == "completed"
    assert four_devices["fit_epoch_compiles"] == 1


def test_indivisible_batch_errors_name_the_argument(four_devices):
    errs = four_devices["errors"]
    assert errs["shard_columns"].startswith("X:") and "4 devices" in errs["shard_columns"]
    assert "(8, 30)" in errs["shard_columns"]
    assert errs["check_batch_size"].startswith("batch_size:") and "30" in errs["check_batch_size"]
    assert errs["make_mesh"].startswith("num_devices:") and "5" in errs["make_mesh"]
    assert errs["shard_batch"].startswith("Y:")


def test_one_device_mesh_in_process():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.devices.size == len(jax.devices())
    net = jaxmlp.Network((3, 4, 2), ("relu", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = np.ones((3, 6), np.float32)
    Y = np.eye(2, dtype=np.float32)[:, [0, 1, 0, 1, 0, 1]]
    Xs, Ys = sharding.shard_batch(mesh, X, Y)
    J, _ = jaxmlp.value_and_grad(net, sharding.replicate(mesh, params), Xs, Ys)
    J0, _ = jaxmlp.value_and_grad(net, params, jnp.asarray(X), jnp.asarray(Y))
    np.testing.assert_allclose(float(J), float(J0), rtol=1e-6)


def test_bad_arguments_in_process():
    with pytest.raises(ValueError, match="num_devices"):
        sharding.make_mesh(len(jax.devices()) + 1)
    with pytest.raises(TypeError, match="num_devices"):
        sharding.make_mesh(1.5)
    mesh = sharding.make_mesh(1)
    with pytest.raises(ValueError, match="axis_name"):
        sharding.shard_columns(mesh, np.zeros((2, 4)), axis_name="model")
    with pytest.raises(ValueError, match=r"^Y: expected a 2-D"):
        sharding.shard_columns(mesh, np.zeros(4), name="Y")
    with pytest.raises(TypeError, match="mesh"):
        sharding.replicate("cpu", {"W": np.zeros(2)})
    with pytest.raises(ValueError, match="batch_size"):
        sharding.check_batch_size(mesh, 0)
