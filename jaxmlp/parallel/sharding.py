"""Data-parallel training on a device mesh through the XLA SPMD partitioner.

The examples axis (columns, m) of X and Y is split over one mesh axis; the parameters
are replicated on every device. Nothing else changes: the SAME jitted function
(``jaxmlp.value_and_grad``, a train step, a ``lax.scan`` epoch) is called on the
sharded arrays, ``jax.jit`` reads the input shardings, and XLA's SPMD partitioner
compiles one program per device. Every column-local operation -- (F1) Z = W A + b,
(F2), (B4), the seed dZ[L] -- runs on the device's own columns; the products that
sum over the examples axis, (B1) dW[l] = dZ[l] A[l-1]^T and (B2) db[l] = sum_cols
dZ[l], and the cost J = (1/m) sum_i L_i (F3), become a per-device partial sum
followed by an all-reduce that XLA inserts. There is no hand-written collective.

Usage::

    mesh = jaxmlp.parallel.sharding.make_mesh()                  # all devices, axis "data"
    params = jaxmlp.parallel.sharding.replicate(mesh, params)
    X = jaxmlp.parallel.sharding.shard_columns(mesh, X, name="X")  # (n[0], m), m % devices == 0
    Y = jaxmlp.parallel.sharding.shard_columns(mesh, Y, name="Y")
    J, grads = jaxmlp.value_and_grad(net, params, X, Y)   # unchanged call

On CPU, several devices are simulated by setting
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax is imported. On
several hosts, call ``jax.distributed.initialize()`` first on every process;
``jax.devices()`` then lists the devices of all hosts and :func:`make_mesh` spans
them (each process must then pass only its addressable shards, e.g. with
``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmlp.nn import checks


def make_mesh(num_devices: int | None = None, axis_name: str = "data") -> Mesh:
    """A one-axis mesh over the first ``num_devices`` devices of ``jax.devices()``.

    Arguments:
      num_devices: how many devices; ``None`` uses all of them.
      axis_name: the name of the mesh axis the examples are split over.

    Returns:
      ``jax.sharding.Mesh`` of shape ``{axis_name: num_devices}``.
    """
    devices = jax.devices()
    if not isinstance(axis_name, str) or not axis_name:
        raise TypeError(f"axis_name: expected a non-empty string, got {axis_name!r}.")
    if num_devices is None:
        num_devices = len(devices)
    num_devices = checks.positive_int("num_devices", num_devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices: expected 1 <= num_devices <= {len(devices)} (the devices of "
            f"backend {jax.default_backend()!r}), got {num_devices}. On CPU, more devices "
            "are simulated with XLA_FLAGS=--xla_force_host_platform_device_count=N set "
            "before jax is imported."
        )
    return Mesh(np.asarray(devices[: int(num_devices)]), (axis_name,))


def _require_mesh(mesh: Any, name: str = "mesh") -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{name}: expected a jax.sharding.Mesh (from make_mesh), got {type(mesh).__name__}."
        )
    _require_auto_axes(mesh, name)


def _require_auto_axes(mesh: Any, name: str) -> None:
    """ValueError naming ``name`` unless every axis of ``mesh`` is ``AxisType.Auto``.

    Explicit (and Manual) axes make the sharding part of every array's type: JAX then refuses
    the products that sum over the split examples axis, (B1) dW = dZ A^T and the mean of
    (F3), with a ShardingTypeError, instead of XLA's SPMD partitioner computing per-device
    partial sums and an all-reduce."""
    types = tuple(getattr(mesh, "axis_types", ()))
    if all(t == jax.sharding.AxisType.Auto for t in types):
        return
    names = [f"AxisType.{t.name}" for t in types]
    given = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    auto = "(" + ", ".join(["jax.sharding.AxisType.Auto"] * len(names)) + (
        "," if len(names) == 1 else "") + ")"
    raise ValueError(
        f"{name}: expected a mesh whose axes are all AxisType.Auto (the data-parallel step "
        f"leaves the sums over the examples to XLA's SPMD partitioner), got axis_types={given} "
        f"for axes {tuple(mesh.axis_names)} (jax.make_mesh makes Explicit axes by default); "
        f"build it with jax.make_mesh(..., axis_types={auto}) or with "
        f"jaxmlp.parallel.sharding.make_mesh."
    )


def check_batch_sharding(batch_sharding: Any) -> None:
    """Raises ValueError naming ``batch_sharding`` when it is a ``NamedSharding`` on a mesh
    with Explicit or Manual axes (the data-parallel step needs Auto axes); None and other
    shardings pass."""
    if isinstance(batch_sharding, NamedSharding):
        _require_auto_axes(batch_sharding.mesh, "batch_sharding")


def _axis_size(mesh: Mesh, axis_name: str) -> int:
    _require_mesh(mesh)
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"axis_name: expected one of the mesh axes {tuple(mesh.axis_names)}, "
            f"got {axis_name!r}."
        )
    return int(mesh.shape[axis_name])


def check_batch_size(mesh: Mesh, batch_size: int, axis_name: str = "data") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over the mesh axis.

    Call it before compiling a data-parallel step: every device gets
    ``batch_size // mesh.shape[axis_name]`` columns.
    """
    k = _axis_size(mesh, axis_name)
    batch_size = checks.positive_int("batch_size", batch_size)
    if batch_size % k:
        raise ValueError(
            f"batch_size: expected a multiple of the {k} devices on mesh axis {axis_name!r}, "
            f"got {batch_size}; use {max(k, batch_size - batch_size % k)} or "
            f"{batch_size + k - batch_size % k}."
        )


def shard_columns(mesh: Mesh, X: Any, axis_name: str = "data", *, name: str = "X") -> jax.Array:
    """Places a column-major batch with its examples axis split over ``axis_name``.

    Arguments:
      mesh: from :func:`make_mesh`.
      X: array of shape (n, m), columns are examples (X or Y of the recurrences).
      axis_name: the mesh axis to split the m columns over.
      name: the argument name used in error messages (e.g. ``"Y"``).

    Returns:
      ``X`` as a global ``jax.Array`` with ``NamedSharding(mesh, P(None, axis_name))``:
      each device holds (n, m / k) columns, k = ``mesh.shape[axis_name]``.
    """
    k = _axis_size(mesh, axis_name)
    shape = tuple(np.shape(X))
    if len(shape) != 2:
        raise ValueError(
            f"{name}: expected a 2-D array (n, m) with examples as columns, got shape {shape}."
        )
    m = shape[1]
    if m % k:
        raise ValueError(
            f"{name}: expected the number of columns m to be a multiple of the {k} devices on "
            f"mesh axis {axis_name!r}, got shape {shape} (m = {m}); choose a batch size "
            f"divisible by {k}."
        )
    return jax.device_put(X, NamedSharding(mesh, P(None, axis_name)))


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places every leaf of ``tree`` (parameters, optimizer state, key) whole on every device
    of ``mesh``: the one replicate, for one process and several.

    On a mesh of this process's devices it is ``jax.device_put``. On a mesh that spans
    several processes (:mod:`jaxmlp.parallel.distributed`; all processes must pass equal
    values) host data cannot be put on the other processes' devices, so each leaf is
    assembled with ``jax.make_array_from_callback`` (typed PRNG keys, which have no host
    form, are put as they are)."""
    _require_mesh(mesh)
    sharding = NamedSharding(mesh, P())
    if not mesh.is_multi_process:
        return jax.device_put(tree, sharding)

    def put(a):
        if hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.device_put(a, sharding)
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(put, tree)


def shard_batch(
    mesh: Mesh, X: Any, Y: Any, axis_name: str = "data"
) -> tuple[jax.Array, jax.Array]:
    """``(shard_columns(X), shard_columns(Y))`` after checking they have the same m."""
    _require_mesh(mesh)
    mX, mY = np.shape(X)[-1], np.shape(Y)[-1]
    if np.ndim(Y) != 2 or mY != mX:
        raise ValueError(
            f"Y: expected shape (n[L], {mX}) to match X's m = {mX}, got {tuple(np.shape(Y))}."
        )
    return (
        shard_columns(mesh, X, axis_name, name="X"),
        shard_columns(mesh, Y, axis_name, name="Y"),
    )
