"""Cost functions (F3), (C1)-(C3) and mean squared error, with their backward seeds.

Every cost is written per example: ``loss(Z, A, Y, g)`` returns the row of
per-example losses L_i (shape ``(m,)``, or ``()`` for a single column), and
J = (1/m) sum_i L_i. The batched seed of the recurrences is then

    dA[L] = (1/m) dL/dA          (general path, followed by (B4) of g[L])
    dZ[L] = (1/m) (A[L] - Y)     (fused path, for the canonical pairs below)

Conventions (all documented in docs/rules.md):

* (C1) binary_cross_entropy: n[L] = 1, L_i = -(y log a + (1 - y) log(1 - a)).
* (C2) categorical_cross_entropy: n[L] >= 2, columns of Y sum to 1,
  L_i = -sum_rows(y * log a).
* (C3) multilabel_cross_entropy: the (C1) loss summed over the n[L] units.
* mean_squared_error: L_i = (1/2) sum_rows (a - y)^2, so J = (1/(2m)) sum (A - Y)^2
  and dA[L] = (1/m)(A - Y): the 1/2 convention, which makes the fused seed of the
  (linear, mean_squared_error) pair the same (1/m)(A - Y) as the other three.

Target domains (:meth:`Cost.check_targets`, called by the training and verification entry
points on concrete Y; the formulas above are only a cost on these):

* binary_cross_entropy, multilabel_cross_entropy: every entry of Y in [0, 1] (0/1 labels or
  probabilities);
* categorical_cross_entropy: entries >= 0 and every column summing to 1 within
  :func:`categorical_sum_tolerance` (one-hot or soft labels);
* mean_squared_error: any finite value.

Every domain requires finite entries.

Cross-entropy costs read log A and log(1 - A) from the output activation
(``Activation.log_output``), i.e. from Z[L] through log-sigmoid / log-softmax, so a
saturated output (|Z[L]| = 1e3) still gives a finite cost. Cross-entropy needs an
output activation with values in (0, 1): sigmoid or softmax.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn.activations import Activation
from jaxmlp.nn.host import local_values

Array = jax.Array


class Cost(NamedTuple):
    """A cost f(A[L], Y) written per example.

    Attributes:
      name: registry name.
      loss: ``(Z, A, Y, g) -> L`` per-example losses, summed over axis 0 (units):
        shape ``(m,)`` for ``(n[L], m)`` inputs, ``()`` for one column.
      dloss_dA: ``(A, Y) -> dL/dA``, same shape as A (unscaled: no 1/m).
      canonical: the output activation whose fused seed is dZ[L] = (1/m)(A - Y).
      needs_unit_range: True for cross-entropy costs (outputs must lie in (0, 1)).
      min_outputs, max_outputs: allowed n[L] (max None: unbounded).
      domain: the targets the cost is defined on, in words (see the module docstring).
    """

    name: str
    loss: Callable[[Array, Array, Array, Activation], Array]
    dloss_dA: Callable[[Array, Array], Array]
    canonical: str
    needs_unit_range: bool
    min_outputs: int = 1
    max_outputs: int | None = None
    domain: str = "finite values"

    def check_targets(self, Y: Any, *, name: str = "Y", atol: Optional[float] = None) -> None:
        """Raises ValueError naming ``name`` if the targets Y (n[L], m) lie outside the domain.

        Eager only: a traced Y (inside ``jax.jit``) is not inspected. ``atol`` overrides the
        tolerance on categorical column sums (default :func:`categorical_sum_tolerance`).
        """
        if isinstance(Y, jax.core.Tracer):
            return
        _check_domain(self, local_values(Y), name, atol)

    def loss_from_output(self, A: Array, Y: Array) -> Array:
        """Per-example losses L_i, (m,), of an output A (n[L], m) known without its Z[L]
        (an ensemble's averaged prediction): :attr:`loss` itself, with log A and log(1 - A)
        read off A, clamped at the dtype's smallest normal number (so A = 0 or 1 gives a
        large finite loss, not infinity). Unchecked, jittable."""
        return self.loss(A, A, Y, _logs_of_output(A.dtype))


def _logs_of_output(dtype) -> Activation:
    """The logs :attr:`Cost.loss` reads, taken from the output itself (passed as its Z)."""
    tiny = jnp.finfo(dtype).tiny
    return Activation(name="output", forward=None, backward=None, init="", unit_range=True,
                      log_output=lambda A: jnp.log(jnp.maximum(A, tiny)),
                      log1m_output=lambda A, _: jnp.log(jnp.maximum(1 - A, tiny)))


def _bce_loss(Z, A, Y, g: Activation):
    """(C1)/(C3) per example: -sum_rows(Y log A + (1 - Y) log(1 - A)), logs from Z."""
    return -jnp.sum(Y * g.log_output(Z) + (1.0 - Y) * g.log1m_output(Z, A), axis=0)


def _bce_dA(A, Y):
    """(C1)/(C3) seed without 1/m: (1 - Y)/(1 - A) - Y/A."""
    return (1.0 - Y) / (1.0 - A) - Y / A


def _cce_loss(Z, A, Y, g: Activation):
    """(C2) per example: -sum_rows(Y log A), log A from Z."""
    return -jnp.sum(Y * g.log_output(Z), axis=0)


def _cce_dA(A, Y):
    """(C2) seed without 1/m: -(1/A) * Y."""
    return -Y / A


def _mse_loss(Z, A, Y, g: Activation):
    """Per example (1/2) sum_rows (A - Y)^2."""
    return 0.5 * jnp.sum(jnp.square(A - Y), axis=0)


def _mse_dA(A, Y):
    return A - Y


_UNIT = "entries in [0, 1] (0/1 labels or probabilities)"
_SIMPLEX = "entries >= 0, every column summing to 1 (one-hot or soft labels)"

COSTS: dict[str, Cost] = {
    c.name: c
    for c in [
        Cost("binary_cross_entropy", _bce_loss, _bce_dA, "sigmoid", True, 1, 1, _UNIT),
        Cost("categorical_cross_entropy", _cce_loss, _cce_dA, "softmax", True, 2, None, _SIMPLEX),
        Cost("multilabel_cross_entropy", _bce_loss, _bce_dA, "sigmoid", True, 1, None, _UNIT),
        Cost("mean_squared_error", _mse_loss, _mse_dA, "linear", False, 1, None, "finite values"),
    ]
}


def categorical_sum_tolerance(dtype) -> float:
    """How far from 1 a categorical target column may sum: max(1e-6, min(1e-2, 64 eps)).

    1e-6 for float64, 7.6e-6 for float32 (soft labels normalised in float32 pass), 1e-2 for
    the 16-bit floats.
    """
    dtype = jnp.dtype(dtype) if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float64)
    return max(1e-6, min(1e-2, 64 * float(jnp.finfo(dtype).eps)))


def _where(Y: np.ndarray, bad: np.ndarray) -> str:
    """``"[i, j] = v"`` for the first flagged entry."""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"[{', '.join(map(str, idx))}] = {float(Y[idx]):g}"


def _check_domain(cost: Cost, Y: np.ndarray, name: str, atol: Optional[float]) -> None:
    if Y.dtype == np.bool_ or np.issubdtype(Y.dtype, np.integer):
        Y = Y.astype(np.float64)
    if not jnp.issubdtype(Y.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {Y.dtype}.")
    Yf = Y.astype(np.float64)
    what = f"{cost.name} is defined for targets with {cost.domain}"
    nonfinite = ~np.isfinite(Yf)
    if nonfinite.any():
        raise ValueError(f"{name}: expected finite values ({what}); found {int(nonfinite.sum())} "
                         f"NaN or infinite entr{'y' if nonfinite.sum() == 1 else 'ies'}, first at "
                         f"{name}{_where(Yf, nonfinite)}.")
    if cost.name in ("binary_cross_entropy", "multilabel_cross_entropy"):
        bad = (Yf < 0) | (Yf > 1)
        if bad.any():
            raise ValueError(f"{name}: {what}; found {int(bad.sum())} entr"
                             f"{'y' if bad.sum() == 1 else 'ies'} outside [0, 1], first "
                             f"{name}{_where(Yf, bad)}.")
    elif cost.name == "categorical_cross_entropy":
        bad = Yf < 0
        if bad.any():
            raise ValueError(f"{name}: {what}; found {int(bad.sum())} negative entr"
                             f"{'y' if bad.sum() == 1 else 'ies'}, first {name}{_where(Yf, bad)}.")
        tol = categorical_sum_tolerance(Y.dtype) if atol is None else float(atol)
        sums = Yf.sum(axis=0)
        off = np.abs(sums - 1.0) > tol
        if off.any():
            j = int(np.flatnonzero(off)[0])
            raise ValueError(f"{name}: {what}; {int(off.sum())} of {off.size} columns do not sum "
                             f"to 1 within {tol:g}, first column {j} sums to {float(sums[j]):g}.")


def check_target_domain(net, Y: Any, *, name: str = "Y", atol: Optional[float] = None) -> None:
    """``get_cost(net.cost).check_targets(Y)``: ValueError if Y is outside the cost's domain."""
    COSTS[net.cost].check_targets(Y, name=name, atol=atol)


def get_cost(name: str) -> Cost:
    """Returns the registered cost ``name``; raises ValueError naming the choices."""
    if not isinstance(name, str) or name not in COSTS:
        raise ValueError(f"cost: expected one of {sorted(COSTS)}, got {name!r}.")
    return COSTS[name]
