"""The oracle: autodiff and finite differences, to check hand-derived rules against.

``verification``: gradients, per-layer rules, activations and costs, curvature, each checked
against ``jax.grad`` / ``jax.jacobian`` / ``jax.hessian`` and finite differences.
``registry``: :func:`register_activation`, :func:`register_cost`: your own rules, verified
by the oracle before they enter the registries of :mod:`jaxmlp.nn`.

Autodiff appears here and in tests only, never in a path users train with.
"""

from jaxmlp.oracle.registry import register_activation, register_cost
from jaxmlp.oracle.verification import (
    GradCheckReport, check_activation_rule, check_cost_rule, check_curvature,
    check_gradients, check_rule, finite_difference_grad, relative_error,
)

__all__ = [
    "GradCheckReport", "check_activation_rule", "check_cost_rule", "check_curvature",
    "check_gradients", "check_rule", "finite_difference_grad", "register_activation",
    "register_cost", "relative_error",
]
