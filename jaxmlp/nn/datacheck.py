"""The value checks of concrete data: X finite, Y finite and in the cost's domain, data
numeric.

Shape and dtype checks run at trace time (:mod:`jaxmlp.nn.checks`) and cost nothing once
compiled; VALUES can only be inspected on concrete arrays, before the jitted call, and
inspecting a device array waits for it and copies a flag to the host. Two uses:

* :func:`with_data_check` -- the training step and epoch (and ``fit``, the private epoch):
  X and Y, NumPy or ``jax.Array``, checked once per dataset: a ``jax.Array`` that passed is
  trusted afterwards (arrays are immutable: a weak reference per (array, check)); NumPy
  arrays are scanned at every call, since they may have changed. ``check_data=False`` of the
  factories skips it (documented there with its cost).
* :func:`checked_entry` -- the core's :func:`jaxmlp.forward`, :func:`jaxmlp.loss`,
  :func:`jaxmlp.predict`, :func:`jaxmlp.value_and_grad` and :func:`jaxmlp.backward`: HOST
  data only (NumPy arrays, and text or pandas objects, refused by name), scanned on the host
  at every call. A ``jax.Array`` is not inspected by them: they are the building blocks of
  your own loops, where a new device array every step would cost a device sync each
  (3.5x on a small network's eager minibatch loop). Non-finite device data propagates (NaN
  to NaN; an infinite input saturates tanh or sigmoid to a finite value): check it once with
  :func:`jaxmlp.nn.checks.check_finite`, or train through the entry points above.

Data passed INTO your own ``jax.jit`` (or ``vmap``, ``scan``) is traced and never inspected;
concrete data closed over by a traced function is inspected while tracing
(``jax.ensure_compile_time_eval``).
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn import checks
from jaxmlp.nn.costs import COSTS
from jaxmlp.nn.network import Network

__all__ = ["check_data", "checked_entry", "with_data_check"]


_Tracer = jax.core.Tracer
_CHECKED: dict = {}  # (id(array), what) -> weakref: jax.Arrays already checked (immutable)


def _seen(a: Any, what: Any) -> bool:
    ref = _CHECKED.get((id(a), what))
    return ref is not None and ref() is a


def _remember(a: Any, what: Any) -> None:
    key = (id(a), what)
    try:
        _CHECKED[key] = weakref.ref(a, lambda _, key=key: _CHECKED.pop(key, None))
    except TypeError:  # not weak-referenceable: simply checked again next time
        pass


def _all_finite(a: Any) -> bool:
    """NumPy data on the host (no program compiled); a jax.Array where it lives."""
    if isinstance(a, np.ndarray):
        return bool(np.isfinite(a).all())
    return bool(jnp.all(jnp.isfinite(a)))


def check_data(net: Network, X: Any, Y: Any) -> None:
    """The value checks of the public entry points, on concrete X (n[0], m), Y (n[L], m)
    (None: not given).

    X must be finite; Y must be finite and inside the cost's domain
    (:meth:`jaxmlp.nn.costs.Cost.check_targets`). ValueError naming the argument otherwise.
    Traced values (inside ``jax.jit``) and arrays of the wrong shape are left alone (the
    shape checks report those); a ``jax.Array`` that passed once is not inspected again.
    """
    for name, a in (("X", X), ("Y", Y)):
        if a is None or isinstance(a, _Tracer):
            continue
        what = "finite" if name == "X" else net.cost
        if isinstance(a, jax.Array) and _seen(a, what):  # the fast path: checked before
            continue
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            continue
        n = net.sizes[0] if name == "X" else net.sizes[-1]
        if len(a.shape) != 2 or a.shape[0] != n or not (
                jnp.issubdtype(a.dtype, jnp.number) or a.dtype == jnp.bool_):
            continue
        with jax.ensure_compile_time_eval():  # concrete data met while tracing: checked now
            if name == "X":
                if jnp.issubdtype(a.dtype, jnp.inexact) and not _all_finite(a):
                    checks.check_finite(X=a)
            else:
                COSTS[net.cost].check_targets(a)
        if isinstance(a, jax.Array):
            _remember(a, what)


def with_data_check(net: Network, jitted: Callable, x_pos: int,
                     key_pos: Optional[int] = None) -> Callable:
    """``jitted`` preceded by :func:`check_data` on its arguments x_pos (X) and x_pos + 1 (Y),
    and by :func:`jaxmlp.nn.checks.prng_key` on argument ``key_pos`` (an integer seed
    becomes ``jax.random.key(seed)``); ``.lower`` / ``.trace`` / ``.eval_shape`` of the
    jitted function stay available."""

    @functools.wraps(jitted)
    def run(*args):
        if len(args) > x_pos + 1:
            check_data(net, args[x_pos], args[x_pos + 1])
        if key_pos is not None and len(args) > key_pos:
            args = (*args[:key_pos], checks.prng_key(args[key_pos]), *args[key_pos + 1:])
        return jitted(*args)

    return _keep_jit_methods(run, jitted)


def _refuse_non_numeric(net: Network, name: str, a: Any) -> None:
    """A NumPy array of text, objects, dates or bytes is refused here, by the checks' own
    TypeError naming ``name``, and so is a pandas DataFrame or Series (batch-first, and no JAX
    type): JAX would fail converting either before any check ran."""
    if hasattr(a, "to_numpy") and not isinstance(a, (np.ndarray, jax.Array)):
        shape = f"({net.sizes[0] if name == 'X' else net.sizes[-1]}, m)"
        raise TypeError(
            f"{name}: expected an array of shape {shape}, columns are examples; got a "
            f"{type(a).__module__.split('.')[0]} {type(a).__name__}, whose rows are examples: "
            f"pass {name}.to_numpy(np.float32).T, or use a batch-first entry point "
            "(jaxmlp.sklearn's estimators, jaxmlp.load_model(...).predict).")
    if isinstance(a, np.ndarray) and checks.not_numeric(a.dtype):
        if name == "X":
            checks.check_X(net, a, None)
        else:
            checks.check_Y(net, a, a.shape[-1] if a.ndim else 1, None)


def _host(a: Any) -> Any:
    """``a`` unless it is a ``jax.Array`` (None then: not inspected by the core functions); a
    list or tuple of numbers as the NumPy array it converts to (what the call will see)."""
    if isinstance(a, jax.Array):
        return None
    if isinstance(a, (list, tuple)):
        try:
            return np.asarray(a)
        except (TypeError, ValueError):  # ragged: the function's own check names it
            return None
    return a


def checked_entry(jitted: Callable, x_pos: Optional[int], y_pos: Optional[int]) -> Callable:
    """A public core function ``jitted(net, params, ...)`` preceded by :func:`check_data` on
    its X (argument ``x_pos`` or ``X=``; None: it takes none) and Y (argument ``y_pos`` or
    ``Y=``; None: none) when they are host data (not a ``jax.Array``: see the module
    docstring), when ``net`` is a :class:`Network` (anything else is reported by the
    function itself). ``.lower`` / ``.trace`` / ``.eval_shape`` / ``.clear_cache`` of
    ``jitted`` stay."""

    def arg(pos, name, args, kwargs):
        if pos is None:
            return None
        return args[pos] if len(args) > pos else kwargs.get(name)

    @functools.wraps(jitted)
    def run(*args, **kwargs):
        net = args[0] if args else kwargs.get("net")
        if isinstance(net, Network):
            X, Y = arg(x_pos, "X", args, kwargs), arg(y_pos, "Y", args, kwargs)
            _refuse_non_numeric(net, "X", X)
            _refuse_non_numeric(net, "Y", Y)
            check_data(net, _host(X), _host(Y))
        return jitted(*args, **kwargs)

    return _keep_jit_methods(run, jitted)


def _keep_jit_methods(run: Callable, jitted: Callable) -> Callable:
    """``run`` (a checking wrapper of ``jitted``) with the jitted function's ``.lower``,
    ``.trace``, ``.eval_shape`` and ``.clear_cache``."""
    for attr in ("lower", "trace", "eval_shape", "clear_cache"):
        if hasattr(jitted, attr):
            setattr(run, attr, getattr(jitted, attr))
    return run
