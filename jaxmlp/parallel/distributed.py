"""Several processes on ``jax.distributed``: data parallelism over hosts, and a 2-D mesh.

Multi-process data parallelism (JAX's multi-controller runtime): the SAME program runs in
every process (one per host, or several on one machine); after :func:`initialize`,
``jax.devices()`` lists the devices of all processes and a mesh spans them. Each process
holds only its own block of the examples, columns ``[i m/P, (i+1) m/P)`` of X (n[0], m) for
process i of P (:func:`process_columns`), and :func:`global_columns` assembles the global
array (``jax.make_array_from_process_local_data``) whose columns are split over the mesh
axis "data". The training code does not change: ``jaxmlp.train.loop.fit`` jits the same epoch
on the global arrays, and XLA's SPMD partitioner inserts the all-reduces of (B1), (B2) and
(F3) (the sums over examples) across processes; nothing here is a hand-written collective.
Parameters, optimizer state and key are replicated (:func:`replicate`, the same function as
:func:`jaxmlp.parallel.sharding.replicate`).

The 2-D mesh ("data", "model") (:func:`make_mesh_2d`, :func:`shard_params_2d`): W[l]'s
rows (the units of layer l) and b[l] are split over "model" and X's columns over "data",
by sharding annotations only, so (F1) Z[l] = W[l] A[l-1] + b[l], (B3) dA[l-1] = W[l]^T dZ[l]
and (B1) dW[l] = dZ[l] A[l-1]^T become sharded products; XLA inserts the collectives.

On CPU, the processes talk over gloo (:func:`initialize` selects it); several CPU devices
per process are simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
``scripts/launch_local.sh N`` starts N local processes of ``experiments/train.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmlp.nn import checks
from jaxmlp.parallel.sharding import replicate  # the one replicate, re-exported here

__all__ = [
    "check_model_axis",
    "cluster_detected",
    "global_columns",
    "initialize",
    "allgather_json",
    "make_mesh_2d",
    "param_specs_2d",
    "process_columns",
    "rendezvous",
    "replicate",
    "shard_params_2d",
]

#: Environment variables by which ``jax.distributed.initialize()`` finds a cluster
#: (SLURM, Open MPI, Cloud TPU / GKE, and JAX's own).
CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
               "JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def cluster_detected() -> bool:
    """True when the environment names a cluster that ``jax.distributed.initialize()``
    can configure itself from (see :data:`CLUSTER_ENV`)."""
    return any(os.environ.get(v) for v in CLUSTER_ENV)


def _check_coordinator(coordinator: Any) -> str:
    if not isinstance(coordinator, str) or ":" not in coordinator:
        raise ValueError(f"coordinator: expected 'host:port' (process 0's address), got "
                         f"{coordinator!r}.")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator: expected 'host:port' with a port in 1..65535, got "
                         f"{coordinator!r}.")
    return coordinator


def check_process_args(coordinator: Any, num_processes: Any, process_id: Any) -> tuple:
    """Validated (coordinator, num_processes, process_id): all three given, or none."""
    given = [a is not None for a in (coordinator, num_processes, process_id)]
    if not any(given):
        return None, None, None
    if not all(given):
        missing = [n for n, g in zip(("coordinator", "num_processes", "process_id"), given) if not g]
        raise ValueError(f"{missing[0]}: expected coordinator, num_processes and process_id "
                         f"together (or none, to detect a cluster), missing {missing}.")
    coordinator = _check_coordinator(coordinator)
    num_processes = checks.positive_int("num_processes", num_processes)
    if isinstance(process_id, bool) or not isinstance(process_id, (int, np.integer)):
        raise TypeError(f"process_id: expected an integer, got {type(process_id).__name__}.")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: expected 0 <= process_id < num_processes = "
                         f"{num_processes}, got {process_id}.")
    return coordinator, int(num_processes), int(process_id)


#: Seconds :func:`initialize` waits for the coordinator and the peers (``train.py
#: --init-timeout``), and after which a silent peer is declared lost.
DEFAULT_INIT_TIMEOUT = 30
DEFAULT_HEARTBEAT_TIMEOUT = 20
_HELLO = b"jaxmlp-rendezvous"


def _recv_line(conn: socket.socket, deadline: float) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = conn.recv(256)
        if not chunk:
            break
        data += chunk
        if len(data) > 1024:
            break
    return data.strip()


def rendezvous(coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    """Waits, at most ``timeout`` seconds, until all ``num_processes`` processes have reached
    process 0 at ``coordinator`` ("host:port"), over a plain TCP socket on that port, BEFORE
    ``jax.distributed.initialize`` binds it: XLA's coordination client aborts the process
    (SIGABRT) when the coordinator or a peer is missing, which no ``except`` can catch.

    Process 0 listens on the port; every other process connects (retrying until the
    deadline) and says hello with its id and P; process 0 answers "go" once all have come,
    and the peers close first (so the port is free again for JAX's coordination service).

    Raises TimeoutError naming ``coordinator``: unreachable (a peer), or the processes that
    did not come (process 0); ValueError for a peer that gives another number of processes
    or an id already taken; OSError naming the port when process 0 cannot listen on it.
    """
    host, _, port = _check_coordinator(coordinator).rpartition(":")
    port, deadline = int(port), time.monotonic() + float(timeout)
    if process_id == 0:
        _serve_rendezvous(coordinator, port, num_processes, deadline, timeout)
        return
    last = None
    while True:
        try:
            conn = socket.create_connection(
                (host.strip("[]"), port), timeout=max(min(1.0, deadline - time.monotonic()), 0.01))
            break
        except OSError as e:
            last = e
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"coordinator: {coordinator} is unreachable: process 0 did not answer within "
                    f"{timeout:g} s ({type(last).__name__}: {last}); start process 0 there, or "
                    "check the address and the port.") from None
            time.sleep(0.2)
    with conn:
        conn.sendall(_HELLO + f" {process_id} {num_processes}\n".encode())
        try:
            answer = _recv_line(conn, deadline)
        except OSError:
            answer = b""
        if answer != b"go":
            why = answer.decode(errors="replace") or (
                f"not every one of the {num_processes} processes reached it within {timeout:g} s")
            raise TimeoutError(f"coordinator: {coordinator} answered, but: {why}.")


def _serve_rendezvous(coordinator: str, port: int, P: int, deadline: float, timeout: float):
    try:
        if socket.has_dualstack_ipv6():
            srv = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            srv = socket.create_server(("", port))
    except OSError as e:
        raise OSError(f"coordinator: process 0 cannot listen on port {port} of {coordinator}: "
                      f"{e.strerror or e}; choose a free port.") from None
    joined: dict[int, socket.socket] = {}
    try:
        while len(joined) < P - 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [i for i in range(1, P) if i not in joined]
                raise TimeoutError(
                    f"coordinator: {coordinator}: process(es) {missing} of {P} did not reach "
                    f"process 0 within {timeout:g} s; start them with the same --coordinator, "
                    "or check --num-processes.")
            srv.settimeout(remaining)
            try:
                conn, _ = srv.accept()
            except (socket.timeout, TimeoutError):
                continue
            try:
                words = _recv_line(conn, min(deadline, time.monotonic() + 5)).split()
            except OSError:
                conn.close()
                continue
            if len(words) != 3 or words[0] != _HELLO:
                conn.close()  # not one of ours
                continue
            pid, n = int(words[1]), int(words[2])
            problem = (f"process {pid} was started with {n} processes, process 0 with {P}"
                       if n != P else f"process id {pid} is taken twice" if pid in joined
                       else None)
            if problem:
                conn.sendall(problem.encode() + b"\n")
                conn.close()
                raise ValueError(f"coordinator: {coordinator}: {problem}.")
            joined[pid] = conn
        for conn in joined.values():
            conn.sendall(b"go\n")
        for conn in joined.values():  # the peers close first: no TIME_WAIT on the port here
            try:
                _recv_line(conn, time.monotonic() + 5)
            except OSError:
                pass
    finally:
        for conn in joined.values():
            conn.close()
        srv.close()


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               initialization_timeout: float = DEFAULT_INIT_TIMEOUT,
               heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT) -> bool:
    """Joins the multi-process runtime; returns True when several processes take part.

    Arguments:
      coordinator, num_processes, process_id: process 0's ``"host:port"``, the number of
        processes P and this one's index i; all three, or none: then
        ``jax.distributed.initialize()`` configures itself when :func:`cluster_detected`
        (SLURM, Open MPI, TPU pods), else the run is a single process (returns False).

    Must be called before anything touches a JAX device. On CPU it selects gloo for the
    cross-process collectives. With a ``coordinator``, :func:`rendezvous` first waits at
    most ``initialization_timeout`` seconds for every process (TimeoutError naming the
    coordinator, or the processes missing, instead of XLA's abort); a peer silent for
    ``heartbeat_timeout`` seconds afterwards is declared lost by JAX's coordination service.
    """
    coordinator, num_processes, process_id = check_process_args(coordinator, num_processes,
                                                                process_id)
    if coordinator is None and not cluster_detected():
        return False
    if num_processes == 1:
        return False
    if not (isinstance(initialization_timeout, (int, float)) and initialization_timeout > 0):
        raise ValueError(f"initialization_timeout: expected seconds > 0, got "
                         f"{initialization_timeout!r}.")
    if coordinator is not None:
        rendezvous(coordinator, num_processes, process_id, initialization_timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw = dict(initialization_timeout=max(1, int(round(initialization_timeout))),
              heartbeat_timeout_seconds=int(heartbeat_timeout))
    if coordinator is None:
        jax.distributed.initialize(**kw)
    else:
        jax.distributed.initialize(coordinator, num_processes, process_id, **kw)
    return jax.process_count() > 1


def allgather_json(value: Any) -> list:
    """Every process's ``value`` (anything ``json.dumps`` takes), in process order; each
    process must call it at the same point. One process: ``[value]``.

    The JSON text travels as bytes through two ``jax.experimental.multihost_utils
    .process_allgather`` calls: the lengths (int32), then the bytes (uint8) padded to the
    longest. ``train.py`` exchanges its resolved configuration this way before training, so
    that processes started with other options or data stop with a message naming them
    instead of running collectives of other shapes (which wait forever) or other values.
    """
    text = json.dumps(value, sort_keys=True).encode()
    if jax.process_count() == 1:
        return [json.loads(text)]
    from jax.experimental import multihost_utils

    lengths = np.asarray(multihost_utils.process_allgather(
        np.asarray([len(text)], np.int32))).reshape(-1)
    buf = np.zeros(int(lengths.max()), np.uint8)
    buf[:len(text)] = np.frombuffer(text, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(lengths), -1)
    return [json.loads(gathered[i, :int(n)].tobytes()) for i, n in enumerate(lengths)]


def process_columns(m: int, batch_size: Optional[int] = None, *, name: str = "X",
                    num_processes: Optional[int] = None, process_id: Optional[int] = None) -> slice:
    """The columns of an m-example set that this process holds: ``slice(i m/P, (i+1) m/P)``.

    ValueError naming ``name`` unless P divides m, and naming ``batch_size`` unless the
    global batch splits evenly over the processes (P divides batch_size).
    """
    P_ = jax.process_count() if num_processes is None else num_processes
    i = jax.process_index() if process_id is None else process_id
    m = checks.positive_int("m", m)
    if m % P_:
        raise ValueError(f"{name}: expected the number of examples m to be a multiple of the "
                         f"{P_} processes, got m = {m}; drop {m % P_} example(s) or pad to "
                         f"{m + P_ - m % P_}.")
    if batch_size is not None and checks.positive_int("batch_size", batch_size) % P_:
        raise ValueError(f"batch_size: expected a multiple of the {P_} processes (each takes "
                         f"batch_size / {P_} columns), got {batch_size}.")
    k = m // P_
    return slice(i * k, (i + 1) * k)


def global_columns(mesh: Mesh, X_local: Any, axis_name: str = "data", *,
                   name: str = "X") -> jax.Array:
    """The global (n, P m_local) array of the processes' blocks (n, m_local) of columns,
    split over ``axis_name``: ``jax.make_array_from_process_local_data``. Process i's block
    is global columns [i m_local, (i+1) m_local) (devices are ordered by process)."""
    X_local = np.asarray(X_local)
    if X_local.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D block (n, m_local) of columns, got shape "
                         f"{X_local.shape}.")
    k = int(mesh.shape[axis_name])
    per_process = k // jax.process_count() if k >= jax.process_count() else 1
    if X_local.shape[1] % per_process:
        raise ValueError(f"{name}: expected this process's m_local = {X_local.shape[1]} columns "
                         f"to split over its {per_process} devices of mesh axis {axis_name!r}.")
    global_shape = (X_local.shape[0], X_local.shape[1] * jax.process_count())
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, P(None, axis_name)), X_local, global_shape)


# ----------------------------------------------------------------------------- 2-D mesh


def make_mesh_2d(data: int, model: int, devices: Optional[list] = None) -> Mesh:
    """A ("data", "model") mesh of ``data * model`` devices (default ``jax.devices()``).

    ValueError naming ``mesh_shape`` unless data * model equals the number of devices.
    """
    data = checks.positive_int("data", data)
    model = checks.positive_int("model", model)
    devices = list(jax.devices() if devices is None else devices)
    if data * model != len(devices):
        raise ValueError(f"mesh_shape: expected data x model = the {len(devices)} devices, got "
                         f"({data}, {model}) = {data * model} devices. On CPU, simulate devices "
                         "with XLA_FLAGS=--xla_force_host_platform_device_count=N.")
    return Mesh(np.asarray(devices).reshape(data, model), ("data", "model"))


def check_model_axis(net, mesh: Mesh, axis_name: str = "model", *,
                     shard_output: bool = False) -> None:
    """ValueError naming the layer unless the ``axis_name`` size divides n[l] of every layer
    whose rows are split (the hidden layers; the output layer too with ``shard_output``)."""
    checks.require_network(net)
    if not isinstance(mesh, Mesh) or axis_name not in mesh.axis_names:
        raise ValueError(f"mesh: expected a jax.sharding.Mesh with an axis {axis_name!r} "
                         f"(make_mesh_2d), got {mesh!r}.")
    k = int(mesh.shape[axis_name])
    L = net.num_layers
    for l, n in enumerate(net.sizes[1:], start=1):
        if (l < L or shard_output) and n % k:
            raise ValueError(f"net.sizes[{l}]: expected layer {l}'s width n[{l}] = {n} to be a "
                             f"multiple of the {k} devices of mesh axis {axis_name!r} (the rows "
                             f"of W[{l}] are split over them), got {n}.")


def param_specs_2d(net, model_axis: str = "model", *, shard_output: bool = False) -> list:
    """PartitionSpecs of the params: W[l] (n[l], n[l-1]) split by rows over ``model_axis``
    and b[l] (n[l],) likewise, for the hidden layers; the output layer (n[L] is small, and
    its softmax runs over the units) is replicated unless ``shard_output``."""
    L = net.num_layers
    return [{"W": P(model_axis, None), "b": P(model_axis)} if (l < L or shard_output)
            else {"W": P(), "b": P()} for l in range(1, L + 1)]


def shard_params_2d(net, mesh: Mesh, params: Any, model_axis: str = "model", *,
                    shard_output: bool = False) -> Any:
    """``params`` placed by :func:`param_specs_2d` on ``mesh`` (replicated over its other
    axes); checks the widths first (:func:`check_model_axis`)."""
    check_model_axis(net, mesh, model_axis, shard_output=shard_output)
    checks.check_params(net, params)
    specs = param_specs_2d(net, model_axis, shard_output=shard_output)
    return [{k: jax.device_put(layer[k], NamedSharding(mesh, spec[k])) for k in ("W", "b")}
            for layer, spec in zip(params, specs)]
