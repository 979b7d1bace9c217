"""Cost functions (F3), (C1)-(C3) and mean squared error, with their backward seeds.

Every cost is written per example: ``loss(Z, A, Y, g)`` returns the row of
per-example losses L_i (shape ``(m,)``, or ``()`` for a single column), and
J = (1/m) sum_i L_i. The batched seed of the recurrences is then

    dA[L] = (1/m) dL/dA          (general path, followed by (B4) of g[L])
    dZ[L] = (1/m) (A[L] - Y)     (fused path, for the canonical pairs below)

Conventions (all documented in the README):

* (C1) binary_cross_entropy: n[L] = 1, L_i = -(y log a + (1 - y) log(1 - a)).
* (C2) categorical_cross_entropy: n[L] >= 2, columns of Y sum to 1,
  L_i = -sum_rows(y * log a).
* (C3) multilabel_cross_entropy: the (C1) loss summed over the n[L] units.
* mean_squared_error: L_i = (1/2) sum_rows (a - y)^2, so J = (1/(2m)) sum (A - Y)^2
  and dA[L] = (1/m)(A - Y): the 1/2 convention, which makes the fused seed of the
  (linear, mean_squared_error) pair the same (1/m)(A - Y) as the other three.

Cross-entropy costs read log A and log(1 - A) from the output activation
(``Activation.log_output``), i.e. from Z[L] through log-sigmoid / log-softmax, so a
saturated output (|Z[L]| = 1e3) still gives a finite cost. Cross-entropy needs an
output activation with values in (0, 1): sigmoid or softmax.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmlp.activations import Activation

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
    """

    name: str
    loss: Callable[[Array, Array, Array, Activation], Array]
    dloss_dA: Callable[[Array, Array], Array]
    canonical: str
    needs_unit_range: bool
    min_outputs: int = 1
    max_outputs: int | None = None


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


COSTS: dict[str, Cost] = {
    c.name: c
    for c in [
        Cost("binary_cross_entropy", _bce_loss, _bce_dA, "sigmoid", True, 1, 1),
        Cost("categorical_cross_entropy", _cce_loss, _cce_dA, "softmax", True, 2, None),
        Cost("multilabel_cross_entropy", _bce_loss, _bce_dA, "sigmoid", True, 1, None),
        Cost("mean_squared_error", _mse_loss, _mse_dA, "linear", False, 1, None),
    ]
}


def get_cost(name: str) -> Cost:
    """Returns the registered cost ``name``; raises ValueError naming the choices."""
    if not isinstance(name, str) or name not in COSTS:
        raise ValueError(f"cost: expected one of {sorted(COSTS)}, got {name!r}.")
    return COSTS[name]
