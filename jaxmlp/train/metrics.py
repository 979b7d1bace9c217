"""What a trained network scores on a set: its cost (F3) and the task's metrics.

* :func:`cost_and_metrics` -- checked, jitted: ``{"cost": J, "accuracy" | "label_accuracy" |
  "r2": ...}`` of ``params`` on X (n[0], m), Y (n[L], m);
* :func:`cost_and_metrics_kernel` -- the same without the checks, for sets checked once;
* :func:`output_metrics` -- the metrics of any output A[L] (a network's, or an ensemble's
  averaged prediction);
* :func:`metric_name` -- the headline metric of a network's cost.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxmlp.nn import checks, recurrences
from jaxmlp.nn.costs import COSTS
from jaxmlp.nn.network import Network

Array = jax.Array

__all__ = ["cost_and_metrics", "cost_and_metrics_kernel", "metric_name", "output_metrics"]


def metric_name(net: Network) -> str:
    """The headline metric :func:`cost_and_metrics` reports for the network's cost.

    ``"accuracy"`` (categorical and binary cross-entropy), ``"label_accuracy"`` (multi-label:
    the mean over labels of the per-label accuracy), ``"r2"`` (mean squared error) or
    ``"cost"`` for a cost added by :func:`jaxmlp.register_cost`: it names no task, so its
    metric is J (F3) itself.
    """
    net = checks.require_network(net)
    return _TASK_METRIC.get(net.cost, "cost")


#: The headline metric of each built-in cost (a registered cost has only its value J).
_TASK_METRIC = {
    "categorical_cross_entropy": "accuracy",
    "binary_cross_entropy": "accuracy",
    "multilabel_cross_entropy": "label_accuracy",
    "mean_squared_error": "r2",
}


@functools.partial(jax.jit, static_argnums=0)
def cost_and_metrics_kernel(net: Network, params, X: Array, Y: Array) -> dict:
    """Unchecked, jitted (``net`` static): :func:`cost_and_metrics` of X (n[0], m),
    Y (n[L], m) that a caller checked already (the training loop, once per run):
    (F1), (F2), the cost (F3) and :func:`output_metrics` of A[L]."""
    A_L, cache = recurrences.forward_pass(net, params, X)  # (F1), (F2)
    out = {"cost": recurrences.cost(net, cache.Z[-1], A_L, Y)}  # (F3)
    out.update(output_metrics(net, A_L, Y))
    return out


def output_metrics(net: Network, A_L: Array, Y: Array) -> dict:
    """The task's metrics of an output A[L] (n[L], m) against Y (see :func:`cost_and_metrics`),
    for any A[L]: a network's, or an ensemble's averaged prediction. Unchecked, jittable."""
    out = {}
    dtype = A_L.dtype
    if net.cost == "categorical_cross_entropy":
        hit = jnp.argmax(A_L, axis=0) == jnp.argmax(Y, axis=0)
        out["accuracy"] = jnp.mean(hit.astype(dtype))
    elif net.cost == "binary_cross_entropy":
        out["accuracy"] = jnp.mean(((A_L > 0.5) == (Y > 0.5)).astype(dtype))
    elif net.cost == "multilabel_cross_entropy":
        hit = (A_L > 0.5) == (Y > 0.5)  # (n[L], m)
        per_label = jnp.mean(hit.astype(dtype), axis=1)
        out["label_accuracy"] = jnp.mean(per_label)
        out["per_label_accuracy"] = per_label
        out["exact_match"] = jnp.mean(jnp.all(hit, axis=0).astype(dtype))
    elif net.cost == "mean_squared_error":  # coefficient of determination, averaged over outputs
        ss_res = jnp.sum(jnp.square(Y - A_L), axis=1)
        ss_tot = jnp.sum(jnp.square(Y - jnp.mean(Y, axis=1, keepdims=True)), axis=1)
        # a constant row has no R^2 (0/0, or -inf for a finite residual): NaN, as documented
        safe = jnp.where(ss_tot > 0, ss_tot, 1.0)
        out["r2"] = jnp.mean(jnp.where(ss_tot > 0, 1.0 - ss_res / safe, jnp.nan))
    # a registered cost (jaxmlp.register_cost) names no task: no metric beyond its cost
    return out


def cost_and_metrics(net: Network, params, X: Any, Y: Any, *, check_finite: bool = True) -> dict:
    """Cost and task metric of ``params`` on a whole set X (n[0], m), Y (n[L], m); jitted.

    Returns a dict of arrays:

    * ``"cost"``: J (F3), as ``jaxmlp.loss``;
    * softmax / categorical: ``"accuracy"``, share of columns whose argmax of A[L] is the
      argmax of Y;
    * binary: ``"accuracy"``, share of columns with (A[L] > 1/2) == Y;
    * multi-label: ``"label_accuracy"`` (mean of ``"per_label_accuracy"``, shape (n[L],)) and
      ``"exact_match"`` (share of columns with every label right);
    * mean squared error: ``"r2"``, 1 - sum (Y - A[L])^2 / sum (Y - mean Y)^2 per output row,
      averaged over rows (scikit-learn's ``r2_score``); NaN when a row of Y is constant on the
      set (R^2 is undefined there);
    * a registered cost (:func:`jaxmlp.register_cost`): ``"cost"`` only (it names no task,
      so no accuracy or R^2 is implied).

    ``check_finite=False`` skips the (host-side) scan of X and Y for NaN and infinity, for
    callers that checked the set once already; :func:`cost_and_metrics_kernel` skips every
    check (:func:`jaxmlp.train.loop.fit` calls it on the sets it checked before the first epoch).
    """
    if Y is None:
        raise TypeError("Y: expected an array (n[L], m) of targets, got None.")
    X, Y = checks.check_problem(net, params, X, Y)
    if check_finite and not any(isinstance(a, jax.core.Tracer) for a in (X, Y)):
        checks.check_finite(X=X, Y=Y)  # a clear error rather than a NaN cost
        COSTS[net.cost].check_targets(Y)
    return cost_and_metrics_kernel(net, params, X, Y)
