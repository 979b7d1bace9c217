"""Edge cases where two features meet: a mesh from ``jax.make_mesh`` (Explicit axes) with the
data-parallel helpers, a traced clip threshold with DP-SGD, and an optimizer state of the
wrong containers.

The four-device checks run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before jax initialises its CPU
backend, which this test process has already done), as in tests/test_sharding.py.
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmlp
from jaxmlp import privacy
from jaxmlp.parallel import placement, sharding

NET = jaxmlp.Network((4, 6, 3), ("tanh", "softmax"), "categorical_cross_entropy")


def _problem():
    """The child's problem: float32 params, X (4, 8), one-hot Y (3, 8)."""
    params = jaxmlp.init_params(NET, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32))
    Y = jnp.asarray(np.eye(3, dtype=np.float32)[:, np.arange(8) % 3])
    return params, X, Y


_CHILD = textwrap.dedent(
    r"""
    import json, jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import jaxmlp
    from jaxmlp.parallel import placement, sharding

    net = jaxmlp.Network((4, 6, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    p = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, np.arange(8) % 3]
    out = {"devices": len(jax.devices())}

    explicit = jax.make_mesh((4,), ("data",))
    out["explicit_types"] = [t.name for t in explicit.axis_types]
    calls = {
        "replicate": lambda: sharding.replicate(explicit, p),
        "shard_batch": lambda: sharding.shard_batch(explicit, X, Y),
        "shard_columns": lambda: sharding.shard_columns(explicit, X),
        "check_batch_size": lambda: sharding.check_batch_size(explicit, 8),
        "data_parallel": lambda: placement.data_parallel(X, Y, X, Y, p, batch_size=4,
                                                         mesh=explicit),
        "make_train_epoch": lambda: jaxmlp.train.make_train_epoch(
            net, optax.sgd(0.1), 4, batch_sharding=NamedSharding(explicit, P(None, "data"))),
        "fit": lambda: jaxmlp.fit(net, p, optax.sgd(0.1), X, Y, epochs=1, batch_size=4, key=0,
                                  batch_sharding=NamedSharding(explicit, P(None, "data"))),
    }
    out["errors"] = {}
    for name, call in calls.items():
        try:
            call()
            out["errors"][name] = None
        except Exception as e:
            out["errors"][name] = f"{type(e).__name__}: {e}"

    auto = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    Xs, Ys = sharding.shard_batch(auto, X, Y)
    J4, g4 = jaxmlp.value_and_grad(net, sharding.replicate(auto, p), Xs, Ys)
    out["J"] = float(J4)
    out["grads"] = [np.asarray(g).tolist() for g in jax.tree.leaves(g4)]
    out["shards"] = len(Xs.addressable_shards)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    from helpers import run_on_four_cpu_devices

    return run_on_four_cpu_devices(_CHILD)


def _auto_fix(n):
    return "(" + ", ".join(["jax.sharding.AxisType.Auto"] * n) + ("," if n == 1 else "") + ")"


@pytest.mark.slow  # a 4-device subprocess (3 s); refused in process by the tests below
def test_explicit_mesh_is_refused_by_name_on_four_devices(four_devices):
    assert four_devices["devices"] == 4
    assert four_devices["explicit_types"] == ["Explicit"]  # jax.make_mesh's default
    for name, message in four_devices["errors"].items():
        arg = "batch_sharding" if name in ("make_train_epoch", "fit") else "mesh"
        assert message is not None, name
        assert message.startswith(f"ValueError: {arg}: expected a mesh whose axes are all "
                                  f"AxisType.Auto"), (name, message)
        assert "got axis_types=(AxisType.Explicit,) for axes ('data',)" in message, message
        assert f"axis_types={_auto_fix(1)}) or with jaxmlp.parallel.sharding.make_mesh" in message


@pytest.mark.slow  # the 4-device subprocess; an Auto mesh's results: also test_sharding
def test_auto_mesh_matches_one_device(four_devices):
    """(B1)-(B2) and (F3) summed over the 4 devices' columns equal the unsharded sums."""
    assert four_devices["shards"] == 4
    params, X, Y = _problem()
    J1, g1 = jaxmlp.value_and_grad(NET, params, X, Y)
    np.testing.assert_allclose(four_devices["J"], float(J1), rtol=1e-6)
    for a, b in zip(four_devices["grads"], jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_auto_mesh_epoch_with_batch_sharding_is_the_sgd_step():
    """An Auto mesh from jax.make_mesh passes as batch_sharding: one minibatch of all m
    columns gives theta - eta dJ/dtheta (the mean over columns does not depend on the
    shuffle)."""
    params, X, Y = _problem()
    mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,))
    opt = optax.sgd(0.1)
    epoch = jaxmlp.train.make_train_epoch(NET, opt, 8,
                                          batch_sharding=NamedSharding(mesh, P(None, "data")))
    new, _, metrics = epoch(params, opt.init(params), jax.random.key(0), X, Y)
    J, grads = jaxmlp.value_and_grad(NET, params, X, Y)
    np.testing.assert_allclose(np.asarray(metrics.cost), [float(J)], rtol=1e-6)
    for a, p, g in zip(jax.tree.leaves(new), jax.tree.leaves(params), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(p - 0.1 * g), rtol=1e-6, atol=1e-7)


def test_explicit_mesh_refused_in_process():
    mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))
    msg = (r"^mesh: expected a mesh whose axes are all AxisType\.Auto .* got "
           r"axis_types=\(AxisType\.Explicit,\) for axes \('data',\) .*jax\.make_mesh\(\.\.\., "
           r"axis_types=\(jax\.sharding\.AxisType\.Auto,\)\) or with "
           r"jaxmlp\.parallel\.sharding\.make_mesh\.$")
    X, Y = np.zeros((4, 2), np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=msg):
        sharding.replicate(mesh, {"W": np.zeros(2)})
    with pytest.raises(ValueError, match=msg):
        sharding.shard_batch(mesh, X, Y)
    with pytest.raises(ValueError, match=msg):
        placement.data_parallel(X, Y, X, Y, {}, batch_size=2, mesh=mesh)
    with pytest.raises(ValueError, match=r"^batch_sharding: expected a mesh whose axes are all "
                                         r"AxisType\.Auto"):
        jaxmlp.train.make_train_epoch(NET, optax.sgd(0.1), 2,
                                      batch_sharding=NamedSharding(mesh, P(None, "data")))
    manual = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Manual,))
    with pytest.raises(ValueError, match=r"got axis_types=\(AxisType\.Manual,\)"):
        sharding.shard_columns(manual, X)


@pytest.mark.parametrize("clip, shape", [(lambda c: c, r"\(\)"),
                                          (lambda c: jnp.stack([c, c]), r"\(2,\)")])
def test_traced_clip_is_named(clip, shape):
    params, X, Y = _problem()

    def private(c):
        return privacy.dp_value_and_grad(NET, params, X, Y, jax.random.key(0),
                                         l2_norm_clip=clip(c), noise_multiplier=1.0)

    with pytest.raises(TypeError, match=rf"^l2_norm_clip: expected a real number, got a traced "
                                        rf"array of shape {shape} and dtype float\d+ \(inside "
                                        rf"jax\.jit .*no Python value to check\)\."):
        jax.jit(private)(1.0)


def test_traced_per_layer_clip_is_named():
    params, X, Y = _problem()
    with pytest.raises(TypeError, match=r"^l2_norm_clip\[1\]: expected a real number, got a "
                                        r"traced array"):
        jax.jit(lambda c: privacy.dp_value_and_grad(
            NET, params, X, Y, jax.random.key(0), l2_norm_clip=[1.0, c],
            noise_multiplier=1.0))(1.0)


def test_opt_state_names_the_first_difference():
    params, X, Y = _problem()
    adam = optax.adam(1e-3)
    step = jaxmlp.train.make_train_step(NET, adam)
    with pytest.raises(ValueError, match=r"\); they first differ at opt_state\[0\]\.mu: expected "
                                         r"list of 2, got tuple of 2; was it made by another"):
        step(params, adam.init(tuple(params)), X, Y)
    fewer = adam.init([{"W": layer["W"]} for layer in params])
    with pytest.raises(ValueError, match=r"they first differ at opt_state\[0\]\.mu\[0\]: expected "
                                         r"dict with keys \['W', 'b'\], got dict with keys \['W'\];"):
        step(params, fewer, X, Y)
    with pytest.raises(ValueError, match=r"they first differ at opt_state\[0\]: expected "
                                         r"ScaleByAdamState\(count, mu, nu\), got EmptyState\(\);"):
        step(params, optax.sgd(1e-3).init(params), X, Y)
    with pytest.raises(ValueError, match=r"they first differ at opt_state\[0\]\.count: expected an "
                                         r"array of shape \(\) int32, got None;"):
        jaxmlp.train.check_opt_state(adam, params, (adam.init(params)[0]._replace(count=None),
                                                    optax.EmptyState()))
    jaxmlp.train.check_opt_state(adam, params, adam.init(params))  # its own state passes
