"""jaxmlp.parallel.distributed in one process: the TCP rendezvous (peers as threads on
localhost: all meet, an unreachable coordinator, missing processes, a mismatched P, an id taken
twice, strangers on the port, a port already taken), initialize's translation of its arguments
(jax.distributed stubbed: nothing joins a real cluster), global_columns' refusals and the 2-D
placement on a 1 x 1 mesh. Pure Python and sockets: no process is started."""

import socket
import threading
import time

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxmlp
from jaxmlp.parallel import distributed as D


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fn, *args):
    """Starts ``fn(*args)`` in a thread; returns (thread, box): box["error"] or box["ok"]."""
    box = {}

    def target():
        try:
            fn(*args)
            box["ok"] = True
        except BaseException as e:  # noqa: BLE001  (re-raised by the test's assertions)
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def _serve(coordinator, P_, timeout):
    """Process 0 in a thread, listening before the peers start."""
    t, box = _run(D.rendezvous, coordinator, P_, 0, timeout)
    port = int(coordinator.rpartition(":")[2])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # wait until the port accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    return t, box


def _join(*threads):
    for t in threads:
        t.join(10)
        assert not t.is_alive()


def test_three_processes_meet_and_strangers_are_ignored():
    coord = f"127.0.0.1:{_free_port()}"
    t0, b0 = _serve(coord, 3, 5.0)
    # strangers on the port: one says something else, one closes at once, one floods it
    # without a newline (cut after 1 KiB); process 0 drops them and keeps waiting
    for payload in (b"hello there\n", b"", b"x" * 2000):
        with socket.create_connection(("127.0.0.1", int(coord.rpartition(":")[2]))) as s:
            if payload:
                s.sendall(payload)
    peers = [_run(D.rendezvous, coord, 3, pid, 5.0) for pid in (1, 2)]
    _join(t0, *(t for t, _ in peers))
    for box in [b0] + [b for _, b in peers]:
        assert box.get("ok"), box.get("error")


def test_unreachable_coordinator_is_a_timeout_naming_it():
    coord = f"127.0.0.1:{_free_port()}"  # nobody listens there
    t = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"coordinator: {coord} is unreachable: process 0 did "
                                           r"not answer within 0.3 s"):
        D.rendezvous(coord, 2, 1, 0.3)
    assert time.monotonic() - t < 3


def test_missing_processes_named_by_process_0_and_the_peers_told():
    coord = f"127.0.0.1:{_free_port()}"
    t0, b0 = _serve(coord, 4, 1.5)  # process 3 never comes
    t1, b1 = _run(D.rendezvous, coord, 4, 1, 5.0)  # told by process 0 closing at its deadline
    t2, b2 = _run(D.rendezvous, coord, 4, 2, 0.5)  # gives up first, at its own deadline
    _join(t0, t1, t2)
    assert isinstance(b0.get("error"), TimeoutError), b0
    assert f"coordinator: {coord}: process(es) [3] of 4 did not reach process 0" in str(b0["error"])
    for box, timeout in ((b1, "5"), (b2, "0.5")):
        assert isinstance(box.get("error"), TimeoutError), box
        assert (f"coordinator: {coord} answered, but: not every one of the 4 processes reached "
                f"it within {timeout} s") in str(box["error"])


def test_silent_stranger_does_not_hold_process_0_past_its_deadline():
    coord = f"127.0.0.1:{_free_port()}"
    t0, b0 = _serve(coord, 2, 0.6)
    with socket.create_connection(("127.0.0.1", int(coord.rpartition(":")[2]))):
        _join(t0)  # connected, says nothing: process 0's read times out at its deadline
    assert isinstance(b0.get("error"), TimeoutError), b0
    assert "process(es) [1] of 2" in str(b0["error"])


def test_other_number_of_processes_refused_on_both_sides():
    coord = f"127.0.0.1:{_free_port()}"
    t0, b0 = _serve(coord, 2, 5.0)
    t1, b1 = _run(D.rendezvous, coord, 3, 1, 5.0)
    _join(t0, t1)
    assert isinstance(b0.get("error"), ValueError), b0
    assert str(b0["error"]) == (f"coordinator: {coord}: process 1 was started with 3 processes, "
                                "process 0 with 2.")
    assert isinstance(b1.get("error"), TimeoutError), b1
    assert "answered, but: process 1 was started with 3 processes, process 0 with 2" in str(b1["error"])


def test_process_id_taken_twice_refused():
    coord = f"127.0.0.1:{_free_port()}"
    t0, b0 = _serve(coord, 3, 5.0)
    (t1, b1), (t2, b2) = (_run(D.rendezvous, coord, 3, 1, 5.0) for _ in range(2))
    _join(t0, t1, t2)
    assert isinstance(b0.get("error"), ValueError), b0
    assert "process id 1 is taken twice" in str(b0["error"])
    errors = [b.get("error") for b in (b1, b2)]
    assert all(isinstance(e, TimeoutError) for e in errors), errors
    assert any("process id 1 is taken twice" in str(e) for e in errors)


def test_port_in_use_is_an_os_error_naming_the_port():
    with socket.create_server(("", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"coordinator: process 0 cannot listen on port {port} "
                                          rf"of 127.0.0.1:{port}: .*choose a free port"):
            D.rendezvous(f"127.0.0.1:{port}", 2, 0, 0.5)


@pytest.mark.parametrize("coordinator", ["localhost", "host:", ":123", "h:0", "h:70000", "h:8a", 5])
def test_rendezvous_refuses_a_bad_coordinator(coordinator):
    with pytest.raises(ValueError, match="coordinator: expected 'host:port'"):
        D.rendezvous(coordinator, 2, 1, 1.0)


# ----------------------------------------------------------------------------- initialize


@pytest.fixture
def fake_cluster(monkeypatch):
    """jax.distributed.initialize, process_count and the rendezvous recorded, not run."""
    calls = []
    monkeypatch.setattr(D, "rendezvous", lambda *a: calls.append(("rendezvous", a)))
    monkeypatch.setattr(jax.distributed, "initialize",
                        lambda *a, **kw: calls.append(("initialize", a, kw)))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    for v in D.CLUSTER_ENV:
        monkeypatch.delenv(v, raising=False)
    collectives = jax.config.jax_cpu_collectives_implementation  # initialize selects gloo
    yield calls
    jax.config.update("jax_cpu_collectives_implementation", collectives)


def test_initialize_with_a_coordinator_meets_then_joins(fake_cluster):
    assert D.initialize("127.0.0.1:1234", 2, 1, initialization_timeout=2.4,
                        heartbeat_timeout=7.9) is True
    assert fake_cluster == [
        ("rendezvous", ("127.0.0.1:1234", 2, 1, 2.4)),
        ("initialize", ("127.0.0.1:1234", 2, 1),
         {"initialization_timeout": 2, "heartbeat_timeout_seconds": 7}),
    ]
    assert jax.config.jax_cpu_collectives_implementation == "gloo"


def test_initialize_short_timeout_rounds_up_to_one_second(fake_cluster):
    D.initialize("127.0.0.1:1234", 3, 0, initialization_timeout=0.2)
    assert fake_cluster[-1][2]["initialization_timeout"] == 1


def test_initialize_from_a_detected_cluster(fake_cluster, monkeypatch):
    assert D.initialize() is False  # no cluster in the environment: one process
    assert fake_cluster == []
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert D.cluster_detected()
    assert D.initialize() is True
    assert fake_cluster == [("initialize", (), {"initialization_timeout": D.DEFAULT_INIT_TIMEOUT,
                                                "heartbeat_timeout_seconds":
                                                    D.DEFAULT_HEARTBEAT_TIMEOUT})]


def test_initialize_single_process_and_bad_timeout(fake_cluster):
    assert D.initialize("127.0.0.1:1234", 1, 0) is False  # P = 1: nothing to join
    for bad in (0, -1.0, "5", None):
        with pytest.raises(ValueError, match=rf"initialization_timeout: expected seconds > 0, "
                                             rf"got {bad!r}"):
            D.initialize("127.0.0.1:1234", 2, 0, initialization_timeout=bad)
    assert fake_cluster == []  # refused before any rendezvous


# ----------------------------------------------------------------------------- arrays


def test_global_columns_refuses_a_block_that_is_not_2d():
    mesh = D.make_mesh_2d(1, 1)
    with pytest.raises(ValueError, match=r"Y_local: expected a 2-D block \(n, m_local\) of "
                                         r"columns, got shape \(4,\)"):
        D.global_columns(mesh, np.ones(4), name="Y_local")


def test_global_columns_one_process_is_the_block():
    mesh = D.make_mesh_2d(1, 1)
    X = np.arange(12.0).reshape(3, 4)
    G = D.global_columns(mesh, X)
    assert G.shape == (3, 4) and G.sharding.spec == P(None, "data")
    assert np.array_equal(np.asarray(G), X)


def _host_params(net):
    rng = np.random.default_rng(0)
    return [{"W": rng.normal(size=s["W"]).astype(np.float32),
             "b": rng.normal(size=s["b"]).astype(np.float32)} for s in net.param_shapes()]


@pytest.mark.parametrize("shard_output", [False, True])
def test_shard_params_2d_places_rows_over_model(shard_output):
    net = jaxmlp.Network((3, 4, 4, 2), ("tanh", "relu", "linear"), "mean_squared_error")
    params = _host_params(net)
    mesh = D.make_mesh_2d(1, 1)
    placed = D.shard_params_2d(net, mesh, params, shard_output=shard_output)
    specs = D.param_specs_2d(net, shard_output=shard_output)
    assert specs[:2] == [{"W": P("model", None), "b": P("model")}] * 2
    assert specs[2] == ({"W": P("model", None), "b": P("model")} if shard_output
                        else {"W": P(), "b": P()})
    for layer, spec, orig in zip(placed, specs, params):
        for k in ("W", "b"):
            assert layer[k].sharding.spec == spec[k]
            assert np.array_equal(np.asarray(layer[k]), np.asarray(orig[k]))


def test_shard_params_2d_checks_mesh_and_params():
    net = jaxmlp.Network((3, 4, 2), ("tanh", "linear"), "mean_squared_error")
    params = _host_params(net)
    with pytest.raises(ValueError, match="mesh: expected a jax.sharding.Mesh with an axis 'model'"):
        D.shard_params_2d(net, "mesh", params)
    with pytest.raises(ValueError, match="mesh: expected a jax.sharding.Mesh with an axis 'rows'"):
        D.shard_params_2d(net, D.make_mesh_2d(1, 1), params, model_axis="rows")
    with pytest.raises((TypeError, ValueError), match="params"):
        D.shard_params_2d(net, D.make_mesh_2d(1, 1), params[:1])
