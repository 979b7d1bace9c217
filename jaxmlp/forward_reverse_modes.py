"""Forward versus reverse accumulation, on the worked example of the 2021-10-12 seed post.

The post ("How backpropagation is able to reduce the time spent on computing gradients",
``002_*.txt``, sections "The Forward Accumulation Mode" and "The Reverse Accumulation Mode")
differentiates f: R^3 -> R^2,

    y1 = x1 (x2 - x3),        y2 = x3 log(1 - x1),

through the intermediate variables (docs/derivations.md, "Forward versus reverse accumulation")

    u_-2 = x1,  u_-1 = x2,  u_0 = x3,
    u_1 = u_-1 - u_0,  u_2 = 1 - u_-2,  u_3 = log u_2,
    u_4 = u_-2 u_1 = y1,  u_5 = u_0 u_3 = y2,

and counts the sweeps ("iterations") each mode needs for the full (2, 3) Jacobian:

- forward mode carries du_k/dx inside-out, du_i/dx = (du_i/du_{i-1}) (du_{i-1}/dx);
  one sweep gives one column of the Jacobian, so n = 3 sweeps;
- reverse mode carries dy/du_k outside-in, dy/du_i = (dy/du_{i+1}) (du_{i+1}/du_i);
  one sweep gives one row, so m = 2 sweeps.

Every derivative here is hand-coded, one line per local partial derivative of the seed; no
autodiff transform is used in this module (the tests use autodiff, ``jacfwd`` / ``jacrev``, as
oracles).

Shapes: ``x`` and a tangent ``dx`` are (3,); ``y`` and a cotangent ``dy`` are (2,); the
Jacobian is (2, 3) with ``J[i, j] = dy_i/dx_j``. All functions are pure and jit-compatible.

Domain: log(1 - x1) needs x1 < 1. With a concrete ``x`` (not traced), x1 >= 1 raises
``ValueError`` naming ``x[0]``. Under ``jax.jit`` / ``jax.vmap`` the value of x1 is unknown when
the checks run, so nothing is raised and IEEE arithmetic decides: at x1 == 1, u_2 = 0, so
u_3 = log u_2 = -inf and 1/u_2 = inf; for x1 > 1, u_3 = log(negative) = nan. These non-finite
values then spread through the sweeps' products with zero (0 * inf = nan, 0 / 0 = nan), so
entries that the seed's tables give as exact zeros become nan too, including y1-row entries
such as dy1/dx3 in reverse mode. Treat the whole result as invalid for x1 >= 1; guard traced
code with ``jnp.where(x[0] < 1, ...)`` or ``jax.experimental.checkify`` if it can happen.
Shape and dtype checks are static and raise under jit as well. Under jit the sweep count
returned by the ``jacobian_*`` functions comes back as a 0-d array instead of an ``int``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LABELS",
    "Trace",
    "evaluate",
    "forward_sweep",
    "reverse_sweep",
    "jacobian_forward",
    "jacobian_reverse",
    "closed_form_jacobian",
    "format_table",
]

#: Names of the intermediate variables, in the seed's order of evaluation.
LABELS = ("u_-2", "u_-1", "u_0", "u_1", "u_2", "u_3", "u_4", "u_5")

N_INPUTS = 3
N_OUTPUTS = 2


class Trace(NamedTuple):
    """One value per intermediate variable u_-2 .. u_5 of the seed (fields in LABELS order).

    The same container holds three different tables:

    - from :func:`evaluate`: the values u_k themselves;
    - from :func:`forward_sweep`: the tangents du_k/dx . dx (for dx = e_j, the seed's
      forward-mode iteration j: the column du_k/dx_j);
    - from :func:`reverse_sweep`: the adjoints sum_i dy_i dy_i/du_k (for dy = e_i, the seed's
      reverse-mode iteration i: the row dy_i/du_k).

    ``trace.as_dict()`` keys the entries by the seed's names ``"u_-2" .. "u_5"``.
    """

    u_m2: jax.Array
    u_m1: jax.Array
    u_0: jax.Array
    u_1: jax.Array
    u_2: jax.Array
    u_3: jax.Array
    u_4: jax.Array
    u_5: jax.Array

    def as_dict(self) -> dict[str, jax.Array]:
        """The entries keyed by the seed's names ``"u_-2"`` .. ``"u_5"``."""
        return dict(zip(LABELS, self))


# ----------------------------------------------------------------------------- validation


def _is_concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _check_vector(name: str, a, size: int, meaning: str) -> jax.Array:
    """Return ``a`` as a floating-point JAX array of shape (size,), or raise naming ``name``."""
    if not isinstance(a, (jax.Array, np.ndarray, np.generic, list, tuple)):
        raise TypeError(
            f"{name} must be an array of shape ({size},) ({meaning}); got {type(a).__name__}"
        )
    try:
        arr = jnp.asarray(a)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be an array of shape ({size},) ({meaning}) with real floating-point "
            f"entries; could not convert it: {err}"
        ) from None
    if arr.shape != (size,):
        raise ValueError(
            f"{name} must have shape ({size},) ({meaning}); got shape {tuple(arr.shape)}"
        )
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a real floating-point dtype (float32 or float64); "
            f"got dtype {arr.dtype}. Convert it, e.g. jnp.asarray({name}, jnp.float32)."
        )
    return arr


def _check_x(x) -> jax.Array:
    x = _check_vector("x", x, N_INPUTS, "the inputs x1, x2, x3")
    if _is_concrete(x):
        x1 = float(x[0])
        if x1 >= 1.0:
            raise ValueError(
                "x[0] (x1) must be < 1, since y2 = x3 log(1 - x1) needs 1 - x1 > 0; "
                f"got x1 = {x1!r}"
            )
    return x


# ----------------------------------------------------------------------------- the example


def _primal(x: jax.Array) -> Trace:
    """The seed's decomposition into u_-2 .. u_5 (no checks)."""
    u_m2, u_m1, u_0 = x[0], x[1], x[2]
    u_1 = u_m1 - u_0
    u_2 = 1 - u_m2
    u_3 = jnp.log(u_2)
    u_4 = u_m2 * u_1  # = y1
    u_5 = u_0 * u_3  # = y2
    return Trace(u_m2, u_m1, u_0, u_1, u_2, u_3, u_4, u_5)


def evaluate(x) -> tuple[jax.Array, Trace]:
    """Evaluate the example and its intermediate variables.

    Arguments:
        x: (3,) floating array (x1, x2, x3), x1 < 1.

    Returns:
        ``(y, values)``: y = (y1, y2) of shape (2,) and the :class:`Trace` of values u_k.
    """
    x = _check_x(x)
    u = _primal(x)
    return jnp.stack([u.u_4, u.u_5]), u


def forward_sweep(x, dx, *, return_table: bool = False):
    """One forward-accumulation sweep (one "iteration" of the seed): y and dy = J(x) dx.

    Visits u_-2 .. u_5 inside-out and carries the tangent du_k = (du_k/dx) dx through the
    recurrence du_i/dx = sum over parents p of (du_i/du_p)(du_p/dx), one line per local
    derivative of the seed:

        du_-2 = dx1,  du_-1 = dx2,  du_0 = dx3
        du_1 = du_-1 - du_0                 (du_1/du_-1 = 1, du_1/du_0 = -1)
        du_2 = -du_-2                       (du_2/du_-2 = -1)
        du_3 = du_2 / u_2                   (du_3/du_2 = 1/u_2)
        du_4 = u_1 du_-2 + u_-2 du_1        (du_4/du_-2 = u_1, du_4/du_1 = u_-2)
        du_5 = u_3 du_0 + u_0 du_3          (du_5/du_0 = u_3, du_5/du_3 = u_0)

    With dx = e_j this is the seed's forward iteration j and dy is column j of the Jacobian.

    Arguments:
        x: (3,) floating array, the point; x1 < 1 (checked when concrete, see module doc).
        dx: (3,) floating array, the direction (tangent) in input space.
        return_table: also return the :class:`Trace` of tangents du_k.

    Returns:
        ``(y, dy)`` with y, dy of shape (2,), or ``(y, dy, table)`` if ``return_table``.
    """
    x = _check_x(x)
    dx = _check_vector("dx", dx, N_INPUTS, "a tangent direction in input space")
    u = _primal(x)
    du_m2, du_m1, du_0 = dx[0], dx[1], dx[2]
    du_1 = du_m1 - du_0
    du_2 = -du_m2
    du_3 = du_2 / u.u_2
    du_4 = u.u_1 * du_m2 + u.u_m2 * du_1
    du_5 = u.u_3 * du_0 + u.u_0 * du_3
    y = jnp.stack([u.u_4, u.u_5])
    dy = jnp.stack([du_4, du_5])
    if return_table:
        return y, dy, Trace(du_m2, du_m1, du_0, du_1, du_2, du_3, du_4, du_5)
    return y, dy


def reverse_sweep(x, dy, *, return_table: bool = False):
    """One reverse-accumulation sweep (one "iteration" of the seed): y and dx = J(x)^T dy.

    Evaluates u_-2 .. u_5 forwards, then visits them outside-in carrying the adjoint
    ubar_k = sum_i dy_i (dy_i/du_k) through dy/du_i = sum over children c of
    (dy/du_c)(du_c/du_i), one line per local derivative of the seed:

        ubar_5 = dy2,  ubar_4 = dy1
        ubar_3 = ubar_5 u_0                      (du_5/du_3 = u_0)
        ubar_2 = ubar_3 / u_2                    (du_3/du_2 = 1/u_2)
        ubar_1 = ubar_4 u_-2                     (du_4/du_1 = u_-2)
        ubar_0 = -ubar_1 + ubar_5 u_3            (du_1/du_0 = -1, du_5/du_0 = u_3)
        ubar_-1 = ubar_1                         (du_1/du_-1 = 1)
        ubar_-2 = -ubar_2 + ubar_4 u_1           (du_2/du_-2 = -1, du_4/du_-2 = u_1)

    With dy = e_i this is the seed's reverse iteration i and dx is row i of the Jacobian.

    Arguments:
        x: (3,) floating array, the point; x1 < 1 (checked when concrete, see module doc).
        dy: (2,) floating array, the cotangent (weights of y1, y2).
        return_table: also return the :class:`Trace` of adjoints ubar_k.

    Returns:
        ``(y, dx)`` with y of shape (2,) and dx of shape (3,), or ``(y, dx, table)``.
    """
    x = _check_x(x)
    dy = _check_vector("dy", dy, N_OUTPUTS, "a cotangent on the outputs y1, y2")
    u = _primal(x)
    ubar_5 = dy[1]
    ubar_4 = dy[0]
    ubar_3 = ubar_5 * u.u_0
    ubar_2 = ubar_3 / u.u_2
    ubar_1 = ubar_4 * u.u_m2
    ubar_0 = -ubar_1 + ubar_5 * u.u_3
    ubar_m1 = ubar_1
    ubar_m2 = -ubar_2 + ubar_4 * u.u_1
    y = jnp.stack([u.u_4, u.u_5])
    dx = jnp.stack([ubar_m2, ubar_m1, ubar_0])
    if return_table:
        return y, dx, Trace(ubar_m2, ubar_m1, ubar_0, ubar_1, ubar_2, ubar_3, ubar_4, ubar_5)
    return y, dx


def jacobian_forward(x, *, return_tables: bool = False):
    """The (2, 3) Jacobian by forward accumulation: one :func:`forward_sweep` per input.

    Sweep j seeds dx = e_j and yields column j (the seed's "Iteration j" of
    "The Forward Accumulation Mode"); n = 3 inputs, so 3 sweeps.

    Arguments:
        x: (3,) floating array, x1 < 1.
        return_tables: also return the list of the 3 tangent tables (one :class:`Trace` each).

    Returns:
        ``(jacobian, sweeps)`` with jacobian (2, 3), ``J[i, j] = dy_i/dx_j``, and sweeps = 3;
        or ``(jacobian, sweeps, tables)``.
    """
    return _by_sweeps(forward_sweep, _check_x(x), N_INPUTS, 1, return_tables)


def jacobian_reverse(x, *, return_tables: bool = False):
    """The (2, 3) Jacobian by reverse accumulation: one :func:`reverse_sweep` per output.

    Sweep i seeds dy = e_i and yields row i (the seed's "Iteration i" of
    "The Reverse Accumulation Mode"); m = 2 outputs, so 2 sweeps.

    Arguments:
        x: (3,) floating array, x1 < 1.
        return_tables: also return the list of the 2 adjoint tables (one :class:`Trace` each).

    Returns:
        ``(jacobian, sweeps)`` with jacobian (2, 3) and sweeps = 2; or
        ``(jacobian, sweeps, tables)``.
    """
    return _by_sweeps(reverse_sweep, _check_x(x), N_OUTPUTS, 0, return_tables)


def _by_sweeps(sweep, x, n, axis: int, return_tables: bool):
    """One ``sweep(x, e_j)`` per unit seed e_j; its results stacked along ``axis``
    (columns of the Jacobian for forward sweeps, rows for reverse sweeps)."""
    eye = jnp.eye(n, dtype=x.dtype)
    parts, tables = [], []
    for j in range(n):  # one sweep per seeded variable
        _, d, table = sweep(x, eye[j], return_table=True)
        parts.append(d)
        tables.append(table)
    jacobian = jnp.stack(parts, axis=axis)
    if return_tables:
        return jacobian, n, tables
    return jacobian, n


def closed_form_jacobian(x) -> jax.Array:
    """The seed's closed-form Jacobian (docs/derivations.md), shape (2, 3):

        dy1/dx = (x2 - x3, x1, -x1),   dy2/dx = (-x3 / (1 - x1), 0, log(1 - x1)).
    """
    x = _check_x(x)
    x1, x2, x3 = x[0], x[1], x[2]
    zero = jnp.zeros_like(x1)
    return jnp.stack(
        [
            jnp.stack([x2 - x3, x1, -x1]),
            jnp.stack([-x3 / (1 - x1), zero, jnp.log(1 - x1)]),
        ]
    )


def format_table(table: Trace, mode: str, index: int, precision: int = 6) -> str:
    """Render one iteration's table in the seed's notation, one line per intermediate variable.

    Arguments:
        table: a :class:`Trace` from :func:`forward_sweep` or :func:`reverse_sweep`
            (concrete values, not traced).
        mode: ``"forward"`` (lines ``du_k/dx_j``, in evaluation order u_-2 .. u_5) or
            ``"reverse"`` (lines ``dy_i/du_k``, in the seed's order u_5 .. u_-2).
        index: the 1-based j (forward: input x_j) or i (reverse: output y_i) of the iteration.
        precision: significant digits printed.

    Returns:
        The table as a multi-line string.
    """
    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse'; got {mode!r}")
    if not isinstance(table, Trace):
        raise TypeError(f"table must be a Trace; got {type(table).__name__}")
    entries = list(zip(LABELS, (float(v) + 0.0 for v in table)))  # + 0.0: no "-0"
    if mode == "forward":
        head = f"Forward accumulation, iteration {index} (seed dx = e_{index})"
        lines = [f"  d{k}/dx_{index} = {v:+.{precision}g}" for k, v in entries]
    else:
        head = f"Reverse accumulation, iteration {index} (seed dy = e_{index})"
        lines = [f"  dy_{index}/d{k} = {v:+.{precision}g}" for k, v in reversed(entries)]
    return "\n".join([head, *lines])
