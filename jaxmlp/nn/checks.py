"""Argument checks shared by every public function: the one place they are written.

The same mistake raises the same error everywhere: a wrong type is a TypeError, a wrong
value or shape a ValueError, and the message names the argument, what was expected and
what was given.

Shapes and dtypes are static under ``jax.jit``, so these checks run once, at trace
time, and cost nothing in the compiled function. Value checks (non-finite data) are
separate (:func:`check_finite`) and only called from eager entry points
(verification, training), since a traced value cannot be inspected.

Public entry points check their arguments once, at the edge, then call the unchecked
kernels of :mod:`jaxmlp.nn.recurrences` and :mod:`jaxmlp.quantities.first_order`.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn.host import local_values
from jaxmlp.nn.network import Network
from jaxmlp.nn.scalars import optional_positive_int, positive_int, real_number

__all__ = [
    "check_X", "check_Y", "check_cache_dtype", "check_finite", "check_params",
    "check_params_like", "check_problem", "check_x", "check_y", "compute_dtype", "like_params",
    "not_numeric", "optional_positive_int", "positive_int", "prng_key", "real_number",
    "require_network",
]


_HOW_TO_MAKE_A_KEY = ("a PRNG key (jax.random.key(seed): typed, shape (); or "
                      "jax.random.PRNGKey(seed): uint32, shape (2,)) or an integer seed")


def prng_key(key: Any, name: str = "key") -> Any:
    """ONE PRNG key from what a user means by one; the key helper every function taking a key uses.

    Accepts ``jax.random.key(seed)`` (typed, shape ()) and ``jax.random.PRNGKey(seed)`` (raw
    uint32 of shape (2,)), returned unchanged, and an integer seed (a Python int, or an
    integer scalar array, traced or not), returned as ``jax.random.key(seed)``: the same
    random bits as ``jax.random.PRNGKey(seed)``. Anything else is a TypeError saying how to
    make a key; a batch of keys or a seed out of range is a ValueError.
    """
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"{name}: expected {_HOW_TO_MAKE_A_KEY}, got a bool.")
    if isinstance(key, numbers.Integral):
        limit = 2**64 if jax.config.jax_enable_x64 else 2**32
        if not 0 <= int(key) < limit:
            raise ValueError(f"{name}: an integer seed must be in [0, 2**{limit.bit_length() - 1}), "
                             f"got {int(key)}.")
        return jax.random.key(int(key))
    if not hasattr(key, "dtype"):
        raise TypeError(f"{name}: expected {_HOW_TO_MAKE_A_KEY}, got {type(key).__name__}.")
    if _is_typed_key(key):
        if key.shape != ():
            raise ValueError(f"{name}: expected a single PRNG key of shape (), got shape "
                             f"{tuple(key.shape)}; pick one, e.g. {name}[0].")
        return key
    if key.dtype == jnp.uint32 and tuple(key.shape) == (2,):
        return key
    if jnp.issubdtype(key.dtype, jnp.integer) and tuple(key.shape) == ():
        return jax.random.key(key)  # an integer seed held in an array (possibly traced)
    if key.dtype == jnp.uint32 and len(key.shape) == 2 and key.shape[-1] == 2:
        raise ValueError(f"{name}: expected a single PRNG key, got {key.shape[0]} raw keys of shape "
                         f"{tuple(key.shape)}; pick one, e.g. {name}[0].")
    raise TypeError(f"{name}: expected {_HOW_TO_MAKE_A_KEY}, got dtype {key.dtype} and shape "
                    f"{tuple(key.shape)}.")


def _is_typed_key(key: Any) -> bool:
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


_COMPUTE_DTYPES = ("bfloat16", "float16", "float32", "float64")


def compute_dtype(value: Any):
    """None, or the dtype of the matrix products' operands (one of bfloat16, float16,
    float32, float64) as a numpy dtype."""
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"compute_dtype: expected None or one of {_COMPUTE_DTYPES}, got {value!r}.") from None
    if dtype.name not in _COMPUTE_DTYPES:
        raise TypeError(f"compute_dtype: expected None or one of {_COMPUTE_DTYPES}, got {dtype.name}.")
    if dtype.name == "float64" and not jax.config.jax_enable_x64:
        raise TypeError(
            "compute_dtype: float64 needs jax.config.update('jax_enable_x64', True); "
            "without it the backend computes in float32."
        )
    return dtype


def require_network(net: Any) -> Network:
    if not isinstance(net, Network):
        raise TypeError(
            f"net: expected a jaxmlp.Network, got {type(net).__name__}. "
            "Build one with jaxmlp.Network(sizes=..., activations=..., cost=...)."
        )
    return net


def check_params(net: Network, params: Any) -> jnp.dtype:
    """Checks that params mirrors ``net.param_shapes()``; returns their common dtype."""
    L = net.num_layers
    if type(params) not in (list, tuple):
        hint = ("; convert it with list(params)" if isinstance(params, Sequence)
                and not isinstance(params, (str, bytes)) else "")
        raise TypeError(
            f"params: expected a list of {L} dicts {{'W', 'b'}} (from jaxmlp.init_params; a "
            f"tuple works too), got {type(params).__name__}{hint}. Gradients mirror the "
            "container, so only plain lists and tuples are taken."
        )
    if len(params) != L:
        raise ValueError(
            f"params: expected {L} layers for sizes {net.sizes}, got {len(params)}."
        )
    dtype = None
    for l, (layer, want) in enumerate(zip(params, net.param_shapes()), start=1):
        if not isinstance(layer, dict) or set(layer) != {"W", "b"}:
            got = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(
                f"params[{l - 1}] (layer {l}): expected a dict with keys ['W', 'b'], got {got}."
            )
        if type(layer) is not dict:
            raise TypeError(
                f"params[{l - 1}] (layer {l}): expected a plain dict {{'W', 'b'}}, got "
                f"{type(layer).__name__}; gradients are plain dicts, so convert it with dict(...)."
            )
        for key in ("W", "b"):
            leaf = layer[key]
            shape = tuple(getattr(leaf, "shape", ()))
            if shape != want[key]:
                raise ValueError(
                    f"params[{l - 1}]['{key}'] (layer {l}): expected shape {want[key]}, "
                    f"got {shape}."
                )
            leaf_dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(leaf_dtype, jnp.floating):
                raise TypeError(
                    f"params[{l - 1}]['{key}']: expected a floating dtype, got {leaf_dtype}."
                )
            if dtype is None:
                dtype = leaf_dtype
            elif leaf_dtype != dtype:
                raise TypeError(
                    f"params[{l - 1}]['{key}']: expected dtype {dtype} like params[0]['W'], "
                    f"got {leaf_dtype}; cast all parameters to one dtype."
                )
    return dtype


def _as_data(name: str, value: Any, dtype) -> jax.Array:
    """Converts data to an array of ``dtype``: integers/bools are cast, floats must match."""
    if value is None:
        raise TypeError(f"{name}: expected an array, got None.")
    if isinstance(value, jax.Array):
        arr = value
    else:
        if not_numeric(getattr(value, "dtype", None)):  # before jnp.asarray, whose error
            # prints the whole array
            raise _not_numeric_error(name, value)
        try:
            arr = jnp.asarray(value)
        except (TypeError, ValueError):
            raise _not_numeric_error(name, value) from None
    if jnp.issubdtype(arr.dtype, jnp.floating):
        if arr.dtype != dtype:
            raise TypeError(
                f"{name}: expected dtype {dtype} (the dtype of params), got {arr.dtype}. "
                f"Cast with {name}.astype({jnp.dtype(dtype).name!r}) or init_params(..., "
                f"dtype={arr.dtype.name!r}); jaxmlp never changes dtypes silently."
            )
        return arr
    if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
        return arr.astype(dtype)
    raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}.")


#: numpy dtype kinds that are not numbers: objects, text, bytes, records, dates, durations.
_NOT_NUMERIC = frozenset("OUSVMm")


def not_numeric(dtype: Any) -> bool:
    """Whether a NumPy ``dtype`` holds no numbers: objects, text, bytes, records, dates or
    durations (kinds O U S V M m). ml_dtypes' bfloat16 and float8 types are kind V too, and
    numbers: they are not caught. None (no dtype) is False."""
    kind = getattr(dtype, "kind", None)
    return kind in _NOT_NUMERIC and not (kind == "V" and jnp.issubdtype(dtype, jnp.number))


def _given_dtype(value: Any) -> str:
    """The dtype of ``value`` in words, short whatever its size: a DataFrame's distinct column
    dtypes, an array's dtype, or what numpy makes of a list."""
    dtypes = getattr(value, "dtypes", None)
    if dtypes is not None and not hasattr(dtypes, "kind"):  # a DataFrame: one dtype a column
        names = sorted({str(d) for d in dtypes})
        return (f"a {type(value).__name__} with column dtypes "
                f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}")
    dt = getattr(value, "dtype", None)
    if dt is None:
        try:
            dt = np.asarray(value).dtype
        except (TypeError, ValueError):
            return f"a ragged {type(value).__name__} (numpy cannot make one array of it)"
    return f"dtype {dt}"


def _not_numeric_error(name: str, value: Any) -> TypeError:
    return TypeError(
        f"{name}: expected a real numeric array, got {_given_dtype(value)}. Convert numbers "
        f"held as objects or text with np.asarray({name}, dtype=np.float32) (or "
        f"{name}.astype(np.float32)); text columns need encoding: for a table, "
        "jaxmlp.data.tabular.load_table encodes them."
    )


def check_X(net: Network, X: Any, dtype) -> jax.Array:
    """X must be (n[0], m) with m >= 1."""
    X = _as_data("X", X, dtype)
    if X.ndim != 2 or X.shape[0] != net.sizes[0] or X.shape[1] < 1:
        hint = ""
        if X.ndim == 2 and X.shape[1] == net.sizes[0]:
            hint = " (columns are examples: pass X.T if your rows are examples)"
        elif X.ndim == 1 and X.shape[0] == net.sizes[0]:
            hint = " (one example is a column: pass X[:, None] or X.reshape(-1, 1))"
        elif X.ndim == 1 and net.sizes[0] == 1:
            hint = (" (a one-input network takes a row of m examples: pass X[None, :] or "
                    "X.reshape(1, -1))")
        raise ValueError(
            f"X: expected shape (n[0], m) = ({net.sizes[0]}, m) with m >= 1, "
            f"got {tuple(X.shape)}{hint}."
        )
    return X


def check_Y(net: Network, Y: Any, m: int, dtype) -> jax.Array:
    """Y must be (n[L], m)."""
    Y = _as_data("Y", Y, dtype)
    want = (net.sizes[-1], m)
    if tuple(Y.shape) != want:
        hint = ""
        if Y.ndim == 1 and Y.shape[0] == m:
            hint = " (a row of labels: use Y[None, :] for one output, or one-hot columns)"
        elif Y.ndim == 2 and tuple(Y.shape) == want[::-1]:
            hint = " (columns are examples: pass Y.T if your rows are examples)"
        raise ValueError(f"Y: expected shape (n[L], m) = {want}, got {tuple(Y.shape)}{hint}.")
    return Y


def check_x(net: Network, x: Any, dtype) -> jax.Array:
    """A single example x must be (n[0],)."""
    x = _as_data("x", x, dtype)
    if tuple(x.shape) != (net.sizes[0],):
        raise ValueError(f"x: expected shape (n[0],) = ({net.sizes[0]},), got {tuple(x.shape)}.")
    return x


def check_y(net: Network, y: Any, dtype) -> jax.Array:
    y = _as_data("y", y, dtype)
    if tuple(y.shape) != (net.sizes[-1],):
        raise ValueError(f"y: expected shape (n[L],) = ({net.sizes[-1]},), got {tuple(y.shape)}.")
    return y


def check_cache_dtype(cache: Any, dtype, made_by: str) -> None:
    """Every entry of a forward cache (A[0..L], then Z[1..L]; tuple indices in the message)
    must have the params' dtype, as X and Y must: the gradient of (B1) inherits the cache's
    dtype, so a cache of another dtype would change the gradients' dtype silently.
    ``made_by`` names the call that builds a matching cache."""
    for field in ("A", "Z"):
        for l, entry in enumerate(getattr(cache, field)):
            got = jnp.result_type(entry)
            if got != dtype:
                raise TypeError(
                    f"cache.{field}[{l}]: expected dtype {dtype} (the dtype of params), got "
                    f"{got}. Build the cache with {made_by} from these params; jaxmlp never "
                    "changes dtypes silently."
                )


def like_params(params: Any, tree: list) -> Any:
    """``tree`` (a list of per-layer entries, e.g. gradients) in the container type of
    ``params``: a tuple for tuple params, else the list itself. Gradients then have exactly
    the pytree structure of params, which optax needs."""
    return tuple(tree) if type(params) is tuple else tree


#: ``check_problem``'s default: the entry point takes no Y (an explicit ``Y=None`` is refused).
_NO_Y = object()


def check_problem(net: Any, params: Any, X: Any, Y: Any = _NO_Y):
    """The checks of every ``(net, params, X[, Y])`` entry point: X, or (X, Y), cast and checked.
    Without a Y argument it returns X alone; a Y given as None is a TypeError naming Y."""
    net = require_network(net)
    dtype = check_params(net, params)
    X = check_X(net, X, dtype)
    if Y is _NO_Y:
        return X
    return X, check_Y(net, Y, X.shape[1], dtype)


def check_finite(**arrays) -> None:
    """Raises ValueError naming the first argument that holds NaN or infinity (eager only)."""
    for name, arr in arrays.items():
        a = local_values(arr)
        if not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(
                f"{name}: expected finite values, found {bad} NaN or infinite entr"
                f"{'y' if bad == 1 else 'ies'} of {a.size}."
            )


def check_params_like(name: str, value: Any, net: Network, dtype) -> list:
    """``value`` must mirror params: a list of L dicts {"W": (n[l], n[l-1]), "b": (n[l],)} of
    ``dtype`` (a direction V for a curvature-vector product, say); returned as a list of
    dicts of arrays. TypeError for a wrong container or dtype, ValueError for a wrong
    length, keys or shape; the message names ``name`` and the offending entry."""
    L = net.num_layers
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name}: expected a list of {L} dicts {{'W', 'b'}} shaped like params, "
            f"got {type(value).__name__}."
        )
    if len(value) != L:
        raise ValueError(f"{name}: expected {L} layers like params (sizes {net.sizes}), "
                         f"got {len(value)}.")
    out = []
    for l, (layer, want) in enumerate(zip(value, net.param_shapes()), start=1):
        if not isinstance(layer, dict) or set(layer) != {"W", "b"}:
            got = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(f"{name}[{l - 1}] (layer {l}): expected a dict with keys "
                             f"['W', 'b'] like params, got {got}.")
        entry = {}
        for key in ("W", "b"):
            leaf = layer[key]
            shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
            if shape != want[key]:
                raise ValueError(f"{name}[{l - 1}]['{key}'] (layer {l}): expected shape "
                                 f"{want[key]} like params, got {shape}.")
            leaf_dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
            if leaf_dtype != dtype:
                raise TypeError(f"{name}[{l - 1}]['{key}']: expected dtype {dtype} (the dtype "
                                f"of params), got {leaf_dtype}.")
            entry[key] = leaf
        out.append(entry)
    return out
