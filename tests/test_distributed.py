"""jaxmlp.parallel.distributed: 2 processes on jax.distributed (CPU, gloo, 2 forced devices each) train
to the parameters of a single-process run; checkpoints written by both resume; bad input."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

import jaxmlp
from jaxmlp.parallel import distributed as D
from jaxmlp.train import loop as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = jaxmlp.Network((6, 12, 3), ("tanh", "softmax"), "categorical_cross_entropy")
M, BATCH, EPOCHS, LR = 96, 16, 3, 1e-2


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, M)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, rng.integers(0, 3, M)]
    return X, Y


_CHILD = textwrap.dedent(
    r"""
    import json, os, sys
    import numpy as np
    sys.path.insert(0, os.environ["JAXMLP_ROOT"])
    from jaxmlp.parallel import distributed as D
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    assert D.initialize(f"127.0.0.1:{port}", 2, pid)
    import jax, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxmlp
    from jaxmlp.train import loop as F
    from jaxmlp.parallel import sharding
    from jaxmlp import train
    from jaxmlp.train.checkpoint import Checkpoints
    net = jaxmlp.Network((6, 12, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    rng = np.random.default_rng(0)
    M, BATCH, EPOCHS = 96, 16, 3
    X = rng.normal(size=(6, M)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[:, rng.integers(0, 3, M)]
    mesh = sharding.make_mesh()  # 4 devices: 2 per process
    cols = D.process_columns(M, BATCH)
    Xg = D.global_columns(mesh, X[:, cols], name="X")  # this process's 48 columns only
    Yg = D.global_columns(mesh, Y[:, cols], name="Y")
    opt = optax.adam(1e-2)
    p0 = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    state = train.TrainState(*D.replicate(mesh, (p0, opt.init(p0), jax.random.PRNGKey(1))), 0)
    bs = NamedSharding(mesh, P(None, "data"))
    kw = dict(batch_size=BATCH, key=None, batch_sharding=bs)
    ck = os.path.join(out, "ckpt")
    with Checkpoints(ck) as store:
        half = F.fit(net, None, opt, Xg, Yg, epochs=2, state=state,
                     on_epoch_end=lambda st, row: store.save(st, {"history": [row]}), **kw)
    with Checkpoints(ck) as store:
        restored = store.restore(state, epoch=2)
    resumed = F.fit(net, None, opt, Xg, Yg, epochs=EPOCHS, state=restored, **kw)
    full = F.fit(net, None, opt, Xg, Yg, epochs=EPOCHS, state=state,
                 eval_sets={"train": (Xg, Yg)}, **kw)
    flat = lambda t: np.concatenate([np.asarray(a).ravel() for a in jax.tree.leaves(t)])
    res = {"pid": pid, "processes": jax.process_count(), "devices": len(jax.devices()),
           "local_devices": len(jax.local_devices()),
           "local_columns": [int(s.data.shape[1]) for s in Xg.addressable_shards],
           "status": full.status, "costs": [h["running_cost"] for h in full.history],
           "train_accuracy": full.history[-1]["train_accuracy"],
           "params": flat(full.state.params).tolist(),
           "resume_diff": float(np.max(np.abs(flat(resumed.state.params) - flat(full.state.params)))),
           "checkpoints": sorted(os.listdir(ck))}
    with open(os.path.join(out, f"result-{pid}.json"), "w") as f:
        json.dump(res, f)
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mp"))
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env.update(JAX_PLATFORMS="cpu", JAXMLP_ROOT=ROOT, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(i), port, out], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        errs.append((p.returncode, err[-6000:]))
    assert all(rc == 0 for rc, _ in errs), errs
    return [json.load(open(os.path.join(out, f"result-{i}.json"))) for i in range(2)]


@pytest.mark.slow
def test_two_processes_equal_one_process(two_processes):
    r0, r1 = two_processes
    assert r0["processes"] == 2 and r0["devices"] == 4 and r0["local_devices"] == 2
    assert r0["local_columns"] == [24, 24] and r1["local_columns"] == [24, 24]
    X, Y = _data()
    single = F.fit(NET, jaxmlp.init_params(NET, jax.random.PRNGKey(0)), optax.adam(LR), X, Y,
                   epochs=EPOCHS, batch_size=BATCH, key=jax.random.PRNGKey(1),
                   eval_sets={"train": (X, Y)})
    want = np.concatenate([np.asarray(a).ravel() for a in jax.tree.leaves(single.state.params)])
    assert want.dtype == np.float32
    for r in (r0, r1):
        assert r["status"] == "completed"
        np.testing.assert_allclose(r["params"], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["costs"], [h["running_cost"] for h in single.history],
                                   rtol=1e-5)
        assert r["train_accuracy"] == pytest.approx(single.history[-1]["train_accuracy"])
    assert r0["params"] == r1["params"]  # replicated: both processes hold the same numbers


@pytest.mark.slow
def test_multiprocess_checkpoint_written_once_and_resumed(two_processes):
    r0, r1 = two_processes
    assert r0["checkpoints"] == ["1", "2"] == r1["checkpoints"]
    assert r0["resume_diff"] == 0.0 and r1["resume_diff"] == 0.0


# ----------------------------------------------------------------------------- bad input


def test_process_columns():
    assert D.process_columns(96, 16, num_processes=2, process_id=1) == slice(48, 96)
    assert D.process_columns(10) == slice(0, 10)  # one process holds everything
    with pytest.raises(ValueError, match=r"^X_train: expected the number of examples m to be a "
                       r"multiple of the 2 processes, got m = 97"):
        D.process_columns(97, name="X_train", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match=r"^batch_size: expected a multiple of the 3 processes"):
        D.process_columns(96, 16, num_processes=3, process_id=0)


@pytest.mark.parametrize("args, exc, message", [
    (("localhost:1234", 2, None), ValueError, "process_id: expected coordinator, num_processes and "
     "process_id together"),
    (("localhost", 2, 0), ValueError, "coordinator: expected 'host:port'"),
    (("localhost:99999", 2, 0), ValueError, "coordinator: expected 'host:port' with a port"),
    (("localhost:1234", 0, 0), ValueError, "num_processes: "),
    (("localhost:1234", 2, 2), ValueError, "process_id: expected 0 <= process_id < num_processes = 2, got 2"),
    (("localhost:1234", 2, "0"), TypeError, "process_id: expected an integer"),
])
def test_process_arguments(args, exc, message):
    with pytest.raises(exc, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        D.check_process_args(*args)


def test_train_cli_process_flags_exit_2():
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py"),
                           "--num-processes", "2", "--process-id", "0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("train.py: error: --coordinator: expected coordinator, "
                                          "num_processes and process_id together"), proc.stderr


@pytest.mark.slow
def test_train_cli_two_processes_resume_bit_for_bit(tmp_path):
    """scripts/launch_local.sh: 2 processes x 2 devices of experiments/train.py; a run resumed
    from the checkpoint both processes wrote reaches the uninterrupted run's parameters."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env.update(PYTHON=sys.executable, DEVICES_PER_PROCESS="2", OUT_LOGS=str(tmp_path / "logs"))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    small = ["--dataset", "breast_cancer", "--hidden", "8", "--batch-size", "64", "--no-plot",
             "--no-progress"]
    launch = ["bash", os.path.join(ROOT, "scripts", "launch_local.sh"), "2"]
    for argv in ([*small, "--epochs", "2", "--checkpoint-every", "2", "--out", a],
                 ["--resume", a, "--epochs", "3", "--no-plot", "--no-progress"],
                 [*small, "--epochs", "3", "--out", b]):
        proc = subprocess.run([*launch, *argv], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    ra, rb = (json.load(open(os.path.join(d, "results.json"))) for d in (a, b))
    assert ra["final_params_sha256"] == rb["final_params_sha256"]
    assert rb["processes"]["count"] == 2 and rb["dataset"]["m_train"] % 4 == 0
    assert len(rb["jax"]["devices"]) == 4 and rb["config"]["data_parallel"]
    assert sorted(os.listdir(os.path.join(a, "checkpoints"))) == ["2", "3"]
