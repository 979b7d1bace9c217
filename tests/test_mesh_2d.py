"""2-D mesh ("data", "model"): W[l]'s rows over "model", X's columns over "data", by
annotations only; equals one device on a 2x2 forced CPU mesh. Bad mesh shapes and widths."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp.parallel import distributed as D

_CHILD = textwrap.dedent(
    r"""
    import json, jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxmlp
    from jaxmlp.parallel import distributed as D
    from jaxmlp.train import loop as F
    from jaxmlp import train
    net = jaxmlp.Network((8, 16, 12, 4), ("relu", "tanh", "softmax"), "categorical_cross_entropy")
    rng = np.random.default_rng(0)
    m = 64
    X = rng.normal(size=(8, m)).astype(np.float32)
    Y = np.eye(4, dtype=np.float32)[:, rng.integers(0, 4, m)]
    p0 = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    mesh = D.make_mesh_2d(2, 2)
    p2 = D.shard_params_2d(net, mesh, p0)
    Xs = jax.device_put(X, NamedSharding(mesh, P(None, "data")))
    Ys = jax.device_put(Y, NamedSharding(mesh, P(None, "data")))
    out = {"mesh": dict(mesh.shape),
           "W1_shard": list(p2[0]["W"].addressable_shards[0].data.shape),
           "W3_shard": list(p2[2]["W"].addressable_shards[0].data.shape),
           "X_shard": list(Xs.addressable_shards[0].data.shape)}
    vg = jax.jit(lambda p, X, Y: jaxmlp.value_and_grad(net, p, X, Y))
    J1, g1 = vg(p0, jnp.asarray(X), jnp.asarray(Y))
    J2, g2 = vg(p2, Xs, Ys)
    hlo = vg.lower(p2, Xs, Ys).compile().as_text()
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-30))
    out["J_rel"] = abs(float(J2) - float(J1)) / abs(float(J1))
    out["grad_rel"] = max(rel(a, b) for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1)))
    out["collectives"] = sorted({c for c in ("all-reduce", "all-gather", "reduce-scatter",
                                             "collective-permute", "all-to-all") if c in hlo})
    opt = optax.adam(1e-2)
    kw = dict(epochs=3, batch_size=16, key=jax.random.PRNGKey(1))
    one = F.fit(net, p0, opt, X, Y, **kw)
    two = F.fit(net, p2, opt, Xs, Ys, batch_sharding=NamedSharding(mesh, P(None, "data")), **kw)
    out["param_rel"] = max(rel(a, b) for a, b in zip(jax.tree.leaves(two.state.params),
                                                     jax.tree.leaves(one.state.params)))
    out["trained_W1_spec"] = str(two.state.params[0]["W"].sharding.spec)
    out["costs"] = [[h["running_cost"] for h in r.history] for r in (one, two)]
    errs = {}
    for name, f in {"mesh": lambda: D.make_mesh_2d(3, 2),
                    "width": lambda: D.shard_params_2d(jaxmlp.Network((8, 15, 4), ("relu", "softmax"),
                                                       "categorical_cross_entropy"), mesh,
                                                       None)}.items():
        try:
            f()
        except ValueError as e:
            errs[name] = str(e)
    out["errors"] = errs
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def mesh_2x2():
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_params_rows_over_model_columns_over_data(mesh_2x2):
    assert mesh_2x2["mesh"] == {"data": 2, "model": 2}
    assert mesh_2x2["W1_shard"] == [8, 8]  # W[1] (16, 8): rows split over "model"
    assert mesh_2x2["W3_shard"] == [4, 12]  # the output layer is replicated
    assert mesh_2x2["X_shard"] == [8, 32]  # X (8, 64): columns split over "data"
    assert mesh_2x2["trained_W1_spec"] == str(jax.sharding.PartitionSpec("model", None))


def test_2x2_mesh_equals_one_device(mesh_2x2):
    assert mesh_2x2["J_rel"] < 1e-6
    assert mesh_2x2["grad_rel"] < 1e-5
    assert mesh_2x2["param_rel"] < 1e-5
    np.testing.assert_allclose(mesh_2x2["costs"][1], mesh_2x2["costs"][0], rtol=1e-5)
    assert "all-reduce" in mesh_2x2["collectives"] or "all-gather" in mesh_2x2["collectives"]


def test_2d_errors(mesh_2x2):
    e = mesh_2x2["errors"]
    assert e["mesh"].startswith("mesh_shape: expected data x model = the 4 devices, got (3, 2)")
    assert e["width"].startswith("net.sizes[1]: expected layer 1's width n[1] = 15 to be a "
                                 "multiple of the 2 devices of mesh axis 'model'")


def test_2d_errors_in_process():
    with pytest.raises(ValueError, match=r"^mesh_shape: expected data x model"):
        D.make_mesh_2d(len(jax.devices()) + 1, 1)
    with pytest.raises(ValueError, match=r"^data: "):
        D.make_mesh_2d(0, 1)
    mesh = D.make_mesh_2d(1, 1)
    net = jaxmlp.Network((3, 5, 2), ("relu", "softmax"), "categorical_cross_entropy")
    D.check_model_axis(net, mesh)  # a model axis of 1 divides every width
    with pytest.raises(ValueError, match=r"^mesh: expected a jax.sharding.Mesh with an axis 'model'"):
        D.check_model_axis(net, jaxmlp.parallel.sharding.make_mesh(1))
