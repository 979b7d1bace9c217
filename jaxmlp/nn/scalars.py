"""Checks of scalar arguments: positive integers and real numbers in an interval.

The lowest module of jaxmlp (it imports nothing of jaxmlp), so that :class:`Network` checks
its sizes with the same function every other entry point uses;
:mod:`jaxmlp.nn.checks` re-exports these. The message names the argument, what was
expected and what was given.

Besides Python and NumPy numbers, both accept a concrete 0-d JAX array of a real dtype
(integer for :func:`positive_int`, integer or floating for :func:`real_number`), read as
the Python number it holds (``optax.inject_hyperparams`` hands its factory's numeric
arguments over as such arrays); a boolean array is refused like ``bool``, and so is a traced
array (inside ``jax.jit`` it has no Python value to check).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp

__all__ = ["optional_positive_int", "positive_int", "real_number"]


def _array_number(name: str, value: Any, what: str, integral: bool) -> Any:
    """A concrete 0-d JAX array of an integer (or, unless ``integral``, floating) dtype as the
    Python number it holds; any other JAX array a TypeError naming its shape and dtype (a
    tracer: also that it is traced); anything else unchanged."""
    if not isinstance(value, jax.Array):
        return value
    shape, dtype = tuple(value.shape), value.dtype
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name}: expected {what}, got a traced array of shape {shape} and dtype "
                        f"{dtype} (inside jax.jit or another transformation it has no Python "
                        f"value to check).")
    real = jnp.issubdtype(dtype, jnp.integer) or (
        not integral and jnp.issubdtype(dtype, jnp.floating))
    if value.ndim != 0 or not real:
        raise TypeError(f"{name}: expected {what}, got an array of shape {shape} and dtype "
                        f"{dtype}.")
    return value.item()


def positive_int(name: str, value: Any, what: str = "a positive integer") -> int:
    """``value`` as an int >= 1: TypeError if it is not an integer (bools refused), ValueError
    if < 1; the message reads ``"{name}: expected {what}, got ..."`` (``what`` says what the
    integer counts, e.g. ``"the number of members K >= 1"``); a concrete 0-d integer JAX
    array is read as the int it holds."""
    value = _array_number(name, value, what, integral=True)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {what}, got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name}: expected {what}, got {value!r}.")
    return int(value)


def optional_positive_int(name: str, value: Any) -> Optional[int]:
    """None, or :func:`positive_int`."""
    return None if value is None else positive_int(name, value)


def real_number(name: str, value: Any, *, low: float = -math.inf, low_open: bool = False,
                high: float = math.inf, high_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float in the interval [low, high] (ends open as asked).

    TypeError if it is not a real number; ValueError if NaN, infinite (unless
    ``allow_inf``) or outside the interval. A concrete 0-d JAX array of an integer or
    floating dtype is read as the number it holds (same checks, same messages).
    """
    value = _array_number(name, value, "a real number", integral=False)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r} ({type(value).__name__}).")
    v = float(value)
    if math.isinf(low) and math.isinf(high):
        bound = ""
    elif math.isinf(high):
        bound = f" {'>' if low_open else '>='} {low:g}"
    elif math.isinf(low):
        bound = f" {'<' if high_open else '<='} {high:g}"
    else:
        bound = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name}: expected a finite number{bound}, got {value!r}.")
    if math.isnan(v) or v < low or (low_open and v == low) or v > high or (high_open and v == high):
        raise ValueError(f"{name}: expected a number{bound}, got {value!r}.")
    return v
