"""The one epoch loop every training run goes through: one network, K members, DP-SGD.

:func:`run_epochs` runs a compiled epoch function ``epochs`` times and, after each epoch,
diagnoses it, writes the history row, evaluates the sets, calls ``on_epoch_end`` and moves
the progress bar; it stops as soon as an epoch goes wrong and returns the LAST GOOD state
(:class:`~jaxmlp.train.monitor.FitResult`). What differs between the runs is an
:class:`EpochPlan`: the epoch function, how the key is split, how the costs become row
entries and a baseline, how an epoch is diagnosed (per member for ensembles), how a set is
evaluated, and for private training the privacy entries and the budget.

Nothing is checked here: :func:`jaxmlp.train.loop.fit` and
:func:`jaxmlp.train.ensemble.fit_ensemble` check the arguments, the data (once, before the
first epoch) and the key at the public boundary and hand the checked records on.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np

from jaxmlp.train.monitor import FitResult, progress_bar
from jaxmlp.train.step import TrainState

__all__ = ["EpochPlan", "run_epochs"]


class EpochPlan(NamedTuple):
    """What one kind of training run does in each epoch of :func:`run_epochs`.

    Attributes:
      epoch_fn: ``(params, opt_state, key, X, Y) -> (params, opt_state, metrics)``, the
        compiled epoch on checked data (``metrics.cost`` and ``metrics.grad_norm`` of shape
        (steps,), or (K, steps) for K members).
      split_key: ``key -> (key of the next epoch, key of this epoch)``.
      baseline: ``costs -> b``, from an epoch's eligible costs (``baseline_steps``): what
        ``diagnose`` compares a cost with (the run's first minibatch cost, per member for
        ensembles), or None when these costs give none yet (then ``diagnose`` gets b = inf
        and the next epoch's costs are tried).
      baseline_entry: the history entry a resumed run reads ``b`` back from (the first row
        where it is neither missing nor 0).
      diagnose: ``(epoch, costs, grad_norms, params, b) -> None`` for a good epoch, else
        the sentence saying what went wrong first (step, and member).
      cost_entries: ``costs -> dict``, the row's cost entries (``running_cost``, ...).
      set_entries: ``(name, params, X, Y) -> dict``, the row's entries of one evaluated set.
      metric_entries: None, or ``(epoch, metrics) -> dict`` of further entries (private
        training: ``epsilon``, ``steps``, ...).
      budget: None, or ``epoch -> None | str``: why that epoch may not run (status
        ``"budget"``), checked before it runs.
      bar_metric: the ``<set>_<metric>`` entries the progress bar shows (None: cost only).
      baseline_steps: None (every step's cost is eligible for ``baseline``), or ``metrics ->
        mask (steps,)`` of the eligible ones (private training: the non-empty Poisson batches;
        an empty batch costs exactly 0).
    """

    epoch_fn: Callable
    split_key: Callable
    baseline: Callable
    baseline_entry: str
    diagnose: Callable
    cost_entries: Callable
    set_entries: Callable
    metric_entries: Optional[Callable] = None
    budget: Optional[Callable] = None
    bar_metric: Optional[str] = None
    baseline_steps: Optional[Callable] = None


def run_epochs(plan: EpochPlan, state: TrainState, X: Any, Y: Any, *, epochs: int,
               eval_sets: Mapping[str, tuple], history: list,
               on_epoch_end: Optional[Callable[[TrainState, dict], Optional[bool]]],
               progress: bool, progress_desc: str) -> FitResult:
    """Epochs ``state.epoch + 1 .. epochs`` of ``plan`` on checked X (n[0], m), Y (n[L], m).

    ``history``: the rows of the ``state.epoch`` epochs already run (a resumed run); the
    new rows are appended. A row is ``{"epoch", **cost_entries, "seconds",
    **metric_entries, **set_entries of every set}``; ``on_epoch_end(state, row)`` returning
    False stops the run (status ``"stopped"``). A set's entries never replace the loop's own
    (``running_cost``, ``first_cost``, ...): such set names are refused when the data are
    checked (:data:`jaxmlp.train.monitor.RESERVED_SET_NAMES`).
    """
    history = list(history)
    baseline = _read_baseline(history, plan.baseline_entry)
    bar = progress_bar(epochs, state.epoch, progress_desc) if progress else None
    status, message, seconds = "completed", None, []
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            if plan.budget is not None:
                message = plan.budget(epoch)
                if message is not None:
                    status = "budget"
                    break
            t0 = time.perf_counter()
            key, epoch_key = plan.split_key(state.key)
            params, opt_state, mt = plan.epoch_fn(state.params, state.opt_state, epoch_key, X, Y)
            costs = np.asarray(mt.cost)  # waits for the epoch
            dt = time.perf_counter() - t0
            if baseline is None:
                eligible = (costs if plan.baseline_steps is None
                            else costs[np.asarray(plan.baseline_steps(mt), dtype=bool)])
                baseline = plan.baseline(eligible) if eligible.size else None
            problem = plan.diagnose(epoch, costs, np.asarray(mt.grad_norm), params,
                                    math.inf if baseline is None else baseline)
            if problem is not None:
                status, message = "diverged", f"training stopped: {problem}"
                break
            state = TrainState(params, opt_state, key, epoch)
            seconds.append(dt)
            row = {"epoch": epoch, **plan.cost_entries(costs), "seconds": dt}
            if plan.metric_entries is not None:
                row.update(plan.metric_entries(epoch, mt))
            for name, (Xe, Ye) in eval_sets.items():
                row.update(plan.set_entries(name, params, Xe, Ye))
            history.append(row)
            if on_epoch_end is not None and on_epoch_end(state, row) is False:
                status, message = "stopped", f"stopped by on_epoch_end after epoch {epoch}"
                break
            if bar is not None:
                bar.set_postfix(_bar_entries(row, plan.bar_metric, eval_sets), refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(state, history, status, message, seconds)


def _read_baseline(history: list, entry: str):
    """The baseline a resumed run reads back: ``entry`` of the first row where it is present
    and not 0 (a first cost of 0, e.g. of an empty Poisson batch, is no baseline); None."""
    for row in history:
        b = row.get(entry) if isinstance(row, Mapping) else None
        if b is not None and not (isinstance(b, (int, float)) and b == 0):
            return b
    return None


def _bar_entries(row: dict, metric: Optional[str], eval_sets: Mapping[str, tuple]) -> dict:
    shown = {"cost": f"{row['running_cost']:.4f}"}
    if metric is not None:
        shown.update({f"{n}_{metric}": f"{row[f'{n}_{metric}']:.4f}" for n in eval_sets
                      if f"{n}_{metric}" in row})
    if "epsilon" in row:
        shown["eps"] = f"{row['epsilon']:.3g}"
    shown.update(row.get("postfix", {}))
    return shown
