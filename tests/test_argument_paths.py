"""Refusals and edge paths of small modules, each named by its argument with what was expected
and what was given: register_activation / register_cost's arguments (refused before any
verification runs), a derivative without an inspectable signature, the one-process mesh and
batch checks, the range sentences of real_number, FolderLock held twice, released twice, on a
file system without flock, on a folder removed under it, and a holder whose lock file is not
JSON; the curvature quantities' refusal of registered rules they have no second order for.
Nothing is compiled."""

import errno
import math
import os
import shutil

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp.nn.activations import ACTIVATIONS
from jaxmlp.nn.scalars import real_number
from jaxmlp.parallel import sharding
from jaxmlp.train import outdir

from helpers import NoSignature  # noqa: E402


def _f(Z):
    return Z


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(second_derivative=3), TypeError, "second_derivative: expected a callable or None, got int"),
    (dict(elementwise=1), TypeError, "elementwise: expected True or False, got 1"),
    (dict(second_derivative=_f, elementwise=False), ValueError,
     r"second_derivative: only for element-wise rules \(elementwise=True\)"),
    (dict(init="zeros?"), ValueError, r"init: expected one of \[.*\], got 'zeros\?'"),
])
def test_register_activation_refuses_bad_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        jaxmlp.register_activation("refused_act", _f, _f, **kwargs)
    assert "refused_act" not in ACTIVATIONS


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(loss=None), TypeError, "loss: expected a callable, got NoneType"),
    (dict(dloss_dA="x"), TypeError, "dloss_dA: expected a callable, got str"),
    (dict(min_outputs=0), ValueError, "min_outputs: expected a positive integer, got 0"),
    (dict(min_outputs=True), ValueError, "min_outputs: expected a positive integer, got True"),
    (dict(min_outputs=2, max_outputs=1), ValueError,
     "max_outputs: expected None or an integer >= min_outputs, got 1"),
    (dict(max_outputs=2.0), ValueError, "max_outputs: expected None or an integer >= min_outputs, got 2.0"),
])
def test_register_cost_refuses_bad_arguments(kwargs, exc, message):
    args = dict(loss=lambda A, Y: A, dloss_dA=lambda A, Y: A)
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        jaxmlp.register_cost("refused_cost", args.pop("loss"), args.pop("dloss_dA"), **args)
    assert "refused_cost" not in jaxmlp.COSTS


def test_derivative_without_a_signature_takes_z_only():
    import inspect

    deriv = NoSignature(np.cos)
    with pytest.raises(ValueError):
        inspect.signature(deriv)
    try:
        # read as a rule of Z alone: (B4) dZ = dA g'(Z)
        act = jaxmlp.register_activation("sin_nosig_test", np.sin, deriv, check=False)
        Z, dA = np.linspace(-2, 2, 5), np.arange(5.0)
        assert np.allclose(act.backward(dA, Z, np.sin(Z)), dA * np.cos(Z))
        assert ACTIVATIONS["sin_nosig_test"] is act
    finally:
        ACTIVATIONS.pop("sin_nosig_test", None)


# ----------------------------------------------------------------------------- sharding


def test_mesh_and_batch_refusals_in_one_process():
    for bad in ("", 3):
        with pytest.raises(TypeError, match=rf"axis_name: expected a non-empty string, got {bad!r}"):
            sharding.make_mesh(axis_name=bad)
    mesh = sharding.make_mesh(1)
    with pytest.raises(ValueError, match=r"Y: expected shape \(n\[L\], 4\) to match X's m = 4, "
                                         r"got \(2, 3\)"):
        sharding.shard_batch(mesh, np.ones((3, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Y: expected shape \(n\[L\], 4\) .* got \(4,\)"):
        sharding.shard_batch(mesh, np.ones((3, 4)), np.ones(4))
    X, Y = sharding.shard_batch(mesh, np.ones((3, 4)), np.zeros((2, 4)))
    assert X.shape == (3, 4) and Y.shape == (2, 4) and np.all(np.asarray(Y) == 0)


# ----------------------------------------------------------------------------- real_number


@pytest.mark.parametrize("value, bounds, message", [
    (math.inf, {}, "x: expected a finite number, got inf"),
    (math.nan, {}, "x: expected a number, got nan"),
    (2.0, dict(high=1.0), "x: expected a number <= 1, got 2.0"),
    (1.0, dict(high=1.0, high_open=True), "x: expected a number < 1, got 1.0"),
    (-math.inf, dict(high=1.0), "x: expected a finite number <= 1, got -inf"),
])
def test_real_number_states_its_range(value, bounds, message):
    with pytest.raises(ValueError) as e:
        real_number("x", value, **bounds)
    assert str(e.value) == message + "."


def test_real_number_inside_its_range():
    assert real_number("x", -1e300) == -1e300
    assert real_number("x", -math.inf, high=0.0, allow_inf=True) == -math.inf
    assert real_number("x", np.float32(0.5), high=1.0, high_open=True) == 0.5


# ----------------------------------------------------------------------------- FolderLock


def test_lock_held_twice_by_one_object_and_released_twice(tmp_path):
    lock = outdir.FolderLock(tmp_path / "run").acquire()
    with pytest.raises(RuntimeError, match=r"\.jaxmlp\.lock: already held by this FolderLock"):
        lock.acquire()
    with lock:  # entering a lock already held keeps it
        assert lock._fd is not None
    assert lock._fd is None and not (tmp_path / "run").exists()  # unused: removed
    lock.release()  # a second release does nothing


def test_lock_on_a_file_system_without_flock_is_an_os_error(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(outdir.fcntl, "flock", no_locks)
    with pytest.raises(OSError) as e:
        outdir.FolderLock(tmp_path).acquire()
    assert e.value.errno == errno.ENOLCK and not isinstance(e.value, outdir.FolderInUse)


def test_lock_released_after_its_folder_was_removed(tmp_path):
    lock = outdir.FolderLock(tmp_path / "gone").acquire()
    shutil.rmtree(tmp_path / "gone")
    lock.release()  # nothing left to clean: no error
    assert lock._fd is None
    with outdir.FolderLock(tmp_path / "gone"):  # and the folder can be locked again
        assert (tmp_path / "gone" / outdir.LOCK_NAME).exists()


def test_holder_whose_lock_file_is_not_json(tmp_path):
    first = outdir.FolderLock(tmp_path).acquire()
    try:
        with open(tmp_path / outdir.LOCK_NAME, "w") as f:
            f.write("{half a record")
        with pytest.raises(outdir.FolderInUse) as e:
            outdir.FolderLock(tmp_path).acquire()
        assert e.value.holder == {}
        assert "is in use by another run: a process that is starting." in str(e.value)
    finally:
        first.release()
    assert os.path.isdir(tmp_path)


# ----------------------------------------------------------------------------- curvature


def test_curvature_refuses_registered_rules_it_has_no_second_order_for():
    from jaxmlp.quantities import curvature

    costs, acts = jaxmlp.COSTS, ACTIVATIONS
    try:
        jaxmlp.register_cost("cov_half_sq", lambda A, Y: 0.5 * jax.numpy.sum((A - Y) ** 2, axis=0),
                             lambda A, Y: A - Y, check=False)
        jaxmlp.register_activation("cov_cube", lambda Z: Z ** 3, lambda Z: 3 * Z ** 2, check=False)
        jaxmlp.register_activation("cov_mix", lambda Z: Z * Z.mean(axis=0),
                                   lambda dA, Z, A: dA, elementwise=False, check=False)
        net = jaxmlp.Network((2, 3, 1), ("tanh", "linear"), "cov_half_sq")
        with pytest.raises(ValueError, match=r"net: ggn_diag has output-Hessian rules \(H1\)-\(H3\) "
                                             r"for the costs \[.*\], not for the registered cost "
                                             r"'cov_half_sq'"):
            curvature.check_supported(net, "ggn_diag", second_order=False)
        params = [{"W": np.ones((3, 2)), "b": np.zeros(3)}, {"W": np.ones((1, 3)), "b": np.zeros(1)}]
        with pytest.raises(ValueError, match="not for the registered cost 'cov_half_sq'"):
            curvature.hessian_diag(net, params, np.ones((2, 4)), np.ones((1, 4)))
        cube = jaxmlp.Network((2, 3, 1), ("cov_cube", "linear"), "mean_squared_error")
        with pytest.raises(ValueError, match=r"net: hvp needs g'' of every element-wise activation; "
                                             r"layer 1's 'cov_cube' was registered without "
                                             r"second_derivative="):
            curvature.check_supported(cube, "hvp", second_order=True)
        assert curvature.check_supported(cube, "ggn_diag", second_order=False) is cube
        mix = jaxmlp.Network((2, 3, 1), ("cov_mix", "linear"), "mean_squared_error")
        with pytest.raises(ValueError, match=r"net: ggn_vp needs the second-order rule of every "
                                             r"activation; layer 1's 'cov_mix' is a registered "
                                             r"non-element-wise rule without one"):
            curvature.check_supported(mix, "ggn_vp", second_order=False)
        assert curvature.check_supported(mix, "ggn_diag", second_order=False) is mix
    finally:
        costs.pop("cov_half_sq", None)
        acts.pop("cov_cube", None)
        acts.pop("cov_mix", None)
