"""Where a training run's arrays live: data parallelism on one process or on several.

A run's data are column-major, X (n[0], m) and Y (n[L], m). Data parallelism splits the
columns (examples) of every minibatch over the devices of a one-axis mesh ``"data"``
(:func:`jaxmlp.parallel.sharding.make_mesh`), holds the parameters, optimizer state and
PRNG key whole on every device, and lets XLA insert the reductions of (B1)-(B2) (the
gradient sums over the batch's columns). Both functions here return a :class:`Placement`
whose ``batch_sharding`` is what :func:`jaxmlp.fit` takes (``batch_sharding=``):

* :func:`data_parallel`: one process. Each set is split by columns when its m divides
  over the devices, else held whole on every device (it is then only slower);
* :func:`multi_process`: several ``jax.distributed`` processes
  (:func:`jaxmlp.parallel.distributed.initialize`). Every process passes the same full
  sets and keeps only its block of columns; the train split is cut to a multiple of the
  device count D (the last m_train % D columns are dropped, ``Placement.dropped``) so that
  its blocks are equal; the test split is split the same way when it divides, else held
  whole by every process.

A batch size that does not split over the D devices is refused (ValueError naming
``batch_size``) before anything is placed.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmlp.parallel import distributed, sharding

__all__ = ["Placement", "data_parallel", "multi_process"]


class Placement(NamedTuple):
    """The placed arrays of a data-parallel run.

    Attributes:
      mesh: the one-axis ``"data"`` mesh of D devices.
      batch_sharding: ``NamedSharding(mesh, P(None, "data"))``: a minibatch (n, b) split by
        columns; :func:`jaxmlp.fit`'s ``batch_sharding``.
      X_train, Y_train, X_test, Y_test: the sets, (n[0], m') and (n[L], m') global arrays
        (m' = m_train - dropped for the train split).
      replicated: the pytree given (params, optimizer state, key), every leaf whole on
        every device.
      dropped: train columns dropped so that the split divides over the devices (0 on one
        process).
    """

    mesh: Mesh
    batch_sharding: NamedSharding
    X_train: jax.Array
    Y_train: jax.Array
    X_test: jax.Array
    Y_test: jax.Array
    replicated: Any
    dropped: int


def data_parallel(X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, replicated: Any, *,
                  batch_size: int, mesh: Optional[Mesh] = None) -> Placement:
    """One process: each set's columns split over ``mesh`` (default
    :func:`~jaxmlp.parallel.sharding.make_mesh`, all devices) when its m divides by the D
    devices, else the set whole on every device; ``replicated`` whole on every device.

    ValueError naming ``batch_size`` unless it splits evenly over the D devices
    (:func:`~jaxmlp.parallel.sharding.check_batch_size`); TypeError for a non-integer.
    Returns a :class:`Placement` with ``dropped = 0``.
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(mesh, batch_size)
    D = mesh.devices.size

    def place(A, name):
        if A.shape[1] % D == 0:
            return sharding.shard_columns(mesh, A, name=name)
        return sharding.replicate(mesh, A)

    return Placement(mesh, NamedSharding(mesh, P(None, "data")),
                     place(X_train, "X_train"), place(Y_train, "Y_train"),
                     place(X_test, "X_test"), place(Y_test, "Y_test"),
                     sharding.replicate(mesh, replicated), 0)


def multi_process(X_train: Any, Y_train: Any, X_test: Any, Y_test: Any, replicated: Any, *,
                  batch_size: int, mesh: Optional[Mesh] = None) -> Placement:
    """Several processes: every process passes the full sets (equal in all processes) and
    keeps its block of columns; the global arrays span every device of every process.

    The train split is cut to m' = m_train - m_train % D columns (D = all devices of all
    processes; ``dropped`` = m_train % D), and process i holds its block of
    :func:`~jaxmlp.parallel.distributed.process_columns` (m', ``batch_size``). The test
    split is split the same way when m_test % D == 0, else held whole on every device.
    ValueError naming ``batch_size`` unless it splits over the D devices. Returns a
    :class:`Placement`.
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(mesh, batch_size)
    D = mesh.devices.size
    m_train = X_train.shape[1]
    m_use = m_train - m_train % D
    cols = distributed.process_columns(m_use, batch_size)
    X_tr = distributed.global_columns(mesh, X_train[:, :m_use][:, cols], name="X_train")
    Y_tr = distributed.global_columns(mesh, Y_train[:, :m_use][:, cols], name="Y_train")
    if X_test.shape[1] % D == 0:
        tcols = distributed.process_columns(X_test.shape[1])
        X_te = distributed.global_columns(mesh, X_test[:, tcols], name="X_test")
        Y_te = distributed.global_columns(mesh, Y_test[:, tcols], name="Y_test")
    else:
        X_te, Y_te = sharding.replicate(mesh, (X_test, Y_test))
    return Placement(mesh, NamedSharding(mesh, P(None, "data")), X_tr, Y_tr, X_te, Y_te,
                     sharding.replicate(mesh, replicated), m_train - m_use)
