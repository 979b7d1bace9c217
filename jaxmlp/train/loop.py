"""The training loop: epochs of one compiled call each, evaluation, divergence detection.

:func:`fit` runs the scanned epoch of :func:`jaxmlp.train.step.make_train_epoch` (shuffle,
minibatches, the optax update on the hand-derived gradient) ``epochs`` times, evaluates
the given sets after every epoch, and stops as soon as training goes wrong:

* a minibatch cost or gradient norm that is NaN or infinite (step named);
* parameters that are not finite after an update;
* a minibatch cost above ``explode_factor`` times the baseline b (default 1e6, ``None``
  disables): a run that explodes while staying finite. b = |J_1|, J_1 the run's first
  NON-ZERO minibatch cost (b = 0 would make every later positive cost an "explosion");
  until such a cost has come, the test is off. A resumed run reads b back from its history
  (``first_cost`` of the first row where it is non-zero).

With ``dp`` only the private outputs decide the stop (:func:`diagnose_private`): a noisy
gradient norm or parameters that are not finite (post-processing of DP-SGD's outputs). The
minibatch costs are raw, non-private values of the sampled examples: a stop decided by them
(the cost tests above, ``explode_factor``) would make the run's outcome depend on one example
outside the accountant, so they are not read (``explode_factor`` has no effect with ``dp``).
The history's cost entries are still written, and are not private outputs (docs/privacy.md).

A stopped run returns the LAST GOOD state, the one before the failing epoch, never the
damaged one; ``on_epoch_end`` (e.g. a checkpoint writer) is only ever called with good
states. The data are checked once, before the first epoch: non-finite X or Y, and targets
outside the cost's domain (:meth:`jaxmlp.nn.costs.Cost.check_targets`), are refused.

Private training (``dp=jaxmlp.privacy.DPSGD(...)``): each epoch is the Poisson-sampled
DP-SGD epoch of :func:`jaxmlp.privacy.make_dp_train_epoch` (``steps_per_epoch`` steps, the
batch size only in expectation, q n), and after every epoch the history row holds
``epsilon``, the privacy spent so far (all completed steps, ``dp.accountant``, at
``dp.delta``, shown on the progress bar), ``steps``, and the ``noise_multiplier`` sigma,
``sampling_rate`` q and ``steps_per_epoch`` of its steps. The accounting composes ONE sigma
over all the run's steps, so a resumed private run (``state.epoch > 0``) must use the sigma
its history records: another one (a sigma calibrated over the new call's ``epochs``, or
given) is refused, as is a calibrated sigma when the history given does not record the
earlier one (:func:`_check_resumed_noise`); so is a q or a steps_per_epoch other than the
recorded ones (:func:`_check_resumed_sampling`). With ``dp.target_epsilon`` the run stops
(status ``"budget"``) before an epoch whose steps would spend more than the target; without
``dp.noise_multiplier`` the noise is calibrated so that the run's ``epochs`` spend the target
(:class:`jaxmlp.privacy.DPSGD`). ``FitResult.privacy`` reports the epsilon spent by every step
taken (a diverged run's failing epoch included) and the target.

Ensembles (``ensemble=K``) are the same loop over K stacked members
(:func:`jaxmlp.train.ensemble.fit_ensemble`): every run goes through
:func:`jaxmlp.train.epoch_loop.run_epochs`, which this module hands an
:class:`~jaxmlp.train.epoch_loop.EpochPlan` and the arguments it checked once.

``experiments/train.py`` is argument parsing and file output around this function.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.privacy import dpsgd
from jaxmlp.train import ensemble as ensemble_lib
from jaxmlp.train import step
from jaxmlp.train.epoch_loop import EpochPlan, run_epochs
from jaxmlp.train.metrics import cost_and_metrics_kernel, metric_name
from jaxmlp.train.monitor import (
    DEFAULT_EXPLODE_FACTOR, FitResult, all_finite, check_history, check_loop_args,
    check_run_data, diagnose, scalars,
)
from jaxmlp.train.private_epoch import dp_max_batch_size, make_dp_train_epoch_from_settings
from jaxmlp.train.step import TrainState

__all__ = ["DEFAULT_EXPLODE_FACTOR", "FitResult", "fit"]


def fit(
    net: Network,
    params: Any,
    optimizer: Any,
    X: Any,
    Y: Any,
    *,
    epochs: int,
    batch_size: Optional[int] = None,
    key: Any,
    eval_sets: Optional[Mapping[str, tuple]] = None,
    state: Optional[TrainState] = None,
    history: Optional[list] = None,
    on_epoch_end: Optional[Callable[[TrainState, dict], Optional[bool]]] = None,
    explode_factor: Optional[float] = DEFAULT_EXPLODE_FACTOR,
    progress: bool = False,
    progress_desc: str = "train",
    compute_dtype=None,
    batch_sharding=None,
    permutation=None,
    dp: Optional[dpsgd.DPSGD] = None,
    ensemble: Optional[int] = None,
    learning_rates: Any = None,
    shared_batches: bool = False,
) -> FitResult:
    """Trains ``params`` on X (n[0], m), Y (n[L], m) for ``epochs`` epochs.

    Arguments:
      net: the network.
      params: the initial parameters (ignored when ``state`` is given).
      optimizer: an optax ``GradientTransformation``.
      X, Y: the training set, columns are examples.
      epochs: the epoch to train up to (a resumed ``state`` at epoch e runs e+1..epochs).
      batch_size: columns per minibatch (the m % batch_size left over are skipped per epoch);
        None with ``dp`` (the batches are Poisson samples of expected size q m).
      key: the PRNG key of the first epoch's shuffle (ignored when ``state`` is given).
      eval_sets: ``{"train": (X, Y), "test": (X_te, Y_te)}``: evaluated after every epoch
        (:func:`jaxmlp.train.metrics.cost_and_metrics`); each scalar metric lands in the history as
        ``<name>_<metric>`` (a registered cost: ``<name>_cost`` only). Names whose entries would
        overwrite the loop's own (``running``, ``first``, ...:
        :data:`jaxmlp.train.monitor.RESERVED_SET_NAMES`) are refused.
      state: a :class:`TrainState` to resume (from a checkpoint); ``history`` its epochs.
      on_epoch_end: ``f(state, row)`` after every good epoch (checkpoints, logging);
        returning False stops the run (status ``"stopped"``).
      explode_factor: stop when a minibatch cost exceeds this multiple of the run's first
        non-zero minibatch cost (module docstring); None: never. No effect with ``dp``.
      progress: show a tqdm bar on stderr.
      compute_dtype, batch_sharding, permutation: as for
        :func:`jaxmlp.train.step.make_train_epoch` (the last two not with ``dp``).
      dp: None, or a :class:`jaxmlp.privacy.DPSGD`: private training (module docstring).
        A ``sampling_rate`` q with q m < 1 (most Poisson batches empty) is refused before
        anything is compiled (ValueError naming ``dp.sampling_rate``), as train.py refuses it.
        Its ``max_batch_size`` defaults to :func:`jaxmlp.train.private_epoch.dp_max_batch_size`
        for all the run's steps (overflow probability below 1e-9 over the run); a given one
        above that bound is refused (ValueError naming ``dp.max_batch_size``).
      ensemble, learning_rates, shared_batches: K members trained at once, ``params``
        stacked along a leading axis K (:func:`jaxmlp.train.ensemble.init_ensemble`), optionally
        with K learning rates; runs :func:`jaxmlp.train.ensemble.fit_ensemble` (its docstring;
        not with ``dp`` or ``batch_sharding``; with a K-FAC optimizer each member's step
        uses the Kronecker factors of its own sweep).

    Returns:
      :class:`FitResult`. Nothing is raised for divergence: check ``status``.
    """
    _refuse_kfac_with(optimizer, dp=dp is not None)
    from jaxmlp.parallel.sharding import check_batch_sharding

    check_batch_sharding(batch_sharding)  # a mesh with Explicit axes, before any work
    if ensemble is not None or learning_rates is not None or shared_batches:
        if batch_sharding is not None:
            raise ValueError("batch_sharding: not supported with ensemble (the members are "
                             "vmapped on one device set); got a sharding.")
        if dp is not None:
            raise ValueError("dp: not supported with ensemble; got a DPSGD.")
        return ensemble_lib.fit_ensemble(
            net, params, optimizer, X, Y, epochs=epochs, batch_size=batch_size, key=key,
            ensemble=ensemble, learning_rates=learning_rates, shared_batches=shared_batches,
            eval_sets=eval_sets, state=state, history=history, on_epoch_end=on_epoch_end,
            explode_factor=explode_factor, progress=progress, progress_desc=progress_desc,
            compute_dtype=compute_dtype, permutation=permutation)
    net, epochs, explode_factor = check_loop_args(net, epochs, explode_factor, on_epoch_end)
    if state is not None and not isinstance(state, TrainState):
        raise TypeError(f"state: expected a jaxmlp.train.step.TrainState or None, got "
                        f"{type(state).__name__}.")
    history = check_history(history, 0 if state is None else state.epoch)
    # the data and params first: the optimizer's init then runs on checked params (a
    # transformation that needs its own params container, optax.lookahead, is refused by
    # name at its update: step.optimizer_update)
    X, Y, eval_sets = check_run_data(net, params if state is None else state.params, X, Y,
                                     eval_sets)
    if state is None:
        opt_state = optimizer.init(params) if hasattr(optimizer, "init") else None
        if isinstance(batch_sharding, jax.sharding.NamedSharding) and opt_state is not None:
            # the state whole on every device of the mesh, as the epoch returns it: a fresh
            # state's scalars (Adam's count) otherwise enter the first epoch with another
            # sharding than the second's, which compiled the epoch twice
            whole = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
            opt_state = jax.jit(lambda s: s, out_shardings=whole)(opt_state)
        state = TrainState(params, opt_state, checks.prng_key(key), 0)
    else:
        state = state._replace(key=checks.prng_key(state.key, "state.key"))
    last: dict = {}  # the latest epoch's metrics (private training)
    if dp is None:
        if batch_size is None:
            raise TypeError("batch_size: expected a positive integer (None only with dp), got None.")
        epoch_fn = step.make_train_epoch(net, optimizer, batch_size,
                                         batch_sharding=batch_sharding, permutation=permutation,
                                         compute_dtype=compute_dtype, check_data=False)
        metric_entries = budget = None
    else:
        calibrated = dp.noise_multiplier is None if isinstance(dp, dpsgd.DPSGD) else False
        dp, epoch_fn, metric_entries, budget = _private_epoch(
            net, optimizer, dp, X.shape[1], epochs, compute_dtype,
            batch_size=batch_size, batch_sharding=batch_sharding, permutation=permutation)
        if state.epoch > 0:
            _check_resumed_noise(dp, calibrated, history, state.epoch)
            _check_resumed_sampling(dp, history, state.epoch)
        epoch_fn = _keeping_last_metrics(epoch_fn, last)

    def set_entries(name, params, Xe, Ye):
        return {f"{name}_{k}": v for k, v in
                scalars(cost_and_metrics_kernel(net, params, Xe, Ye)).items()}

    def diagnose_epoch(epoch, costs, gnorms, params, baseline):
        if dp is not None:  # the private outputs only: no raw cost decides the stop
            return diagnose_private(epoch, gnorms, bool(all_finite(params)))
        return diagnose(epoch, costs, gnorms, bool(all_finite(params)), baseline, explode_factor)

    plan = EpochPlan(
        epoch_fn=epoch_fn, split_key=step.split_key_kernel, baseline=_first_nonzero_cost,
        baseline_entry="first_cost", diagnose=diagnose_epoch,
        cost_entries=lambda costs: {"running_cost": float(np.mean(costs)),
                                    "first_cost": float(costs[0])},
        set_entries=set_entries, metric_entries=metric_entries, budget=budget,
        bar_metric=metric_name(net),
        baseline_steps=None if dp is None else lambda mt: np.asarray(mt.batch_size) > 0)
    fr = run_epochs(plan, state, X, Y, epochs=epochs, eval_sets=eval_sets, history=history,
                    on_epoch_end=on_epoch_end, progress=progress, progress_desc=progress_desc)
    if dp is None:
        return fr
    # every step taken counts, the failing epoch's too (its updates ran on the data)
    epochs_run = fr.state.epoch + (1 if fr.status == "diverged" else 0)
    steps = epochs_run * dp.steps_per_epoch
    overflows = sum(int(row.get("overflow", 0)) for row in fr.history)
    if fr.status == "diverged" and "metrics" in last:
        overflows += int(np.sum(np.asarray(last["metrics"].overflow)))
    return fr._replace(privacy={
        "epsilon": dpsgd.epsilon(noise_multiplier=dp.noise_multiplier,
                                 sampling_rate=dp.sampling_rate, steps=steps, delta=dp.delta,
                                 accountant=dp.accountant),
        "target_epsilon": dp.target_epsilon, "delta": dp.delta,
        "noise_multiplier": dp.noise_multiplier, "noise_calibrated": calibrated,
        "sampling_rate": dp.sampling_rate, "steps_per_epoch": dp.steps_per_epoch,
        "steps": steps, "accountant": dp.accountant, "max_batch_size": dp.max_batch_size,
        "overflows": overflows})


def _keeping_last_metrics(epoch_fn, last: dict):
    """``epoch_fn`` storing its latest metrics in ``last["metrics"]``: the privacy report of a
    run stopped by a failing epoch counts that epoch's overflows (it writes no row)."""
    def run(*args):
        params, opt_state, mt = epoch_fn(*args)
        last["metrics"] = mt
        return params, opt_state, mt
    return run


def diagnose_private(epoch: int, grad_norms, params_ok: bool) -> Optional[str]:
    """The divergence test of a private run, on its private outputs only: the noisy
    gradients' norms and the parameters (post-processing of DP-SGD's outputs). The raw
    minibatch costs are not read: a stop decided by them would depend on single examples
    outside the accountant."""
    n = len(grad_norms)
    for s in range(n):
        if not math.isfinite(grad_norms[s]):
            return (f"the noisy gradient became non-finite at epoch {epoch}, step {s + 1} "
                    f"of {n}")
    if not params_ok:
        return (f"the parameters became non-finite at epoch {epoch}, step {n} of {n} "
                f"(the last update)")
    return None


def _first_nonzero_cost(costs) -> Optional[float]:
    """The explode test's baseline b = |J_1| from an epoch's eligible minibatch costs: J_1 the
    first non-zero one (inf when it is not finite: the diagnosis names it); None when all
    are zero (no baseline yet, the test waits for the next epoch)."""
    nonzero = np.asarray(costs)[np.asarray(costs) != 0]
    if nonzero.size == 0:
        return None
    first = float(nonzero[0])
    return abs(first) if math.isfinite(first) else math.inf


def _check_resumed_noise(dp: dpsgd.DPSGD, calibrated: bool, history: list, epoch: int) -> None:
    """A private run resumed at ``epoch`` > 0 goes on with the noise multiplier of its first
    ``epoch`` epochs, or is refused: epsilon (the history's and ``FitResult.privacy``'s)
    composes T = epochs * steps_per_epoch steps of the Poisson-subsampled Gaussian mechanism
    at one sigma, and is wrong (too small when the new sigma is larger) for steps taken at
    another. The earlier sigma is the ``noise_multiplier`` the history rows record."""
    sigma = dp.noise_multiplier
    recorded = [row["noise_multiplier"] for row in history
                if isinstance(row, Mapping) and row.get("noise_multiplier") is not None]
    other = [float(s) for s in recorded if float(s) != sigma]
    how = (f"calibrated to target_epsilon {dp.target_epsilon:g} over {dp.epochs} epochs"
           if calibrated else "given as dp.noise_multiplier")
    if other:
        raise ValueError(
            f"dp: the history of the resumed run (epoch {epoch}) records noise_multiplier "
            f"{other[0]!r}, this call would use {sigma!r} ({how}); the privacy accounting "
            f"composes all steps at one noise multiplier. Continue with "
            f"dp=dp._replace(noise_multiplier={other[0]!r}) (a target_epsilon then stops the "
            f"run, status \"budget\", before an epoch that would exceed it), or with "
            f"DPSGD(epochs=<the first call's epochs>, ...) so that the calibration is the same.")
    if calibrated and not recorded:
        given = ("no history was given" if not history
                 else "the history given does not record noise_multiplier")
        raise ValueError(
            f"dp: the noise multiplier is calibrated ({how}) for a run resumed at epoch "
            f"{epoch}, but {given}, so the noise of the earlier steps is unknown and the privacy "
            f"spent cannot be accounted. Pass the first call's history (history=fr.history), "
            f"or dp=dp._replace(noise_multiplier=<the first call's noise multiplier>).")


def _check_resumed_sampling(dp: dpsgd.DPSGD, history: list, epoch: int) -> None:
    """A private run resumed at ``epoch`` > 0 goes on with the sampling rate q and the
    steps per epoch of its first ``epoch`` epochs, or is refused: epsilon composes
    T = epoch * steps_per_epoch steps of the Poisson-subsampled Gaussian mechanism at ONE q,
    so steps taken at another q, or another number of them per epoch, are counted wrongly
    (8 steps at q = 0.5 then 50 at q = 0.02 were reported as 250 steps at q = 0.02). The
    earlier values are the ``sampling_rate`` and ``steps_per_epoch`` the history rows record;
    a history written before they were recorded gives steps_per_epoch as ``steps`` /
    ``epoch``, and its q is not known (then not checked). ``delta`` and ``accountant`` may
    change: they only say how the composition of all the steps is reported, and epsilon is
    recomputed over all of them."""
    checked = (("sampling_rate", float(dp.sampling_rate)),
               ("steps_per_epoch", int(dp.steps_per_epoch)))
    for name, value in checked:
        recorded = []
        for row in history:
            if not isinstance(row, Mapping):
                continue
            if row.get(name) is not None:
                recorded.append(row[name])
            elif (name == "steps_per_epoch" and row.get("steps") is not None
                  and row.get("epoch")):
                recorded.append(row["steps"] / row["epoch"])
        other = [r for r in recorded if float(r) != value]
        if other:
            was = int(other[0]) if name == "steps_per_epoch" else float(other[0])
            raise ValueError(
                f"dp: the history of the resumed run (epoch {epoch}) records {name} {was!r}, "
                f"this call would use {value!r}; the privacy accounting composes all steps at "
                f"one sampling rate and counts epoch * steps_per_epoch steps, so a change "
                f"would misreport epsilon. Continue with the same settings, "
                f"dp=dp._replace({name}={was!r}).")


def _refuse_kfac_with(optimizer, *, dp: bool) -> None:
    """K-FAC's step reads the Kronecker factors of the minibatch's own sweep, which the
    DP-SGD epoch (clipped, noised gradients) does not provide: refused up front, by name,
    before anything is built. The vmapped ensemble epoch does provide them (each member's
    own sweep, :func:`jaxmlp.train.ensemble.fit_ensemble`), so ``ensemble=`` is allowed."""
    from jaxmlp.train.kfac import KFAC

    if not isinstance(optimizer, KFAC):
        return
    if dp:
        raise ValueError("optimizer: K-FAC is not available with dp (the private step computes "
                         "clipped, noised gradients, not the Kronecker factors K-FAC needs); "
                         "use sgd, momentum or adam with dp, or K-FAC without dp.")


def _private_epoch(net: Network, optimizer, dp, m: int, epochs: int, compute_dtype, **single):
    """The DP-SGD epoch of a run of ``epochs`` epochs on m examples, the history entries it
    adds (privacy spent, steps, noise multiplier, batch sizes, overflows) and the budget
    check."""
    dp = dpsgd.check_dpsgd(dp, net, m, epochs)
    for name, value in single.items():
        if value is not None:
            raise ValueError(f"{name}: expected None with dp (private training samples "
                             f"its batches by Poisson sampling), got {value!r}.")
    dp = dp._replace(max_batch_size=dp_max_batch_size(
        m, dp.sampling_rate, epochs * dp.steps_per_epoch, dp.max_batch_size))
    epoch_fn = make_dp_train_epoch_from_settings(net, optimizer, dp, compute_dtype=compute_dtype)

    @functools.lru_cache(maxsize=None)
    def spent(epoch: int) -> float:
        return dpsgd.epsilon(noise_multiplier=dp.noise_multiplier,
                             sampling_rate=dp.sampling_rate, steps=epoch * dp.steps_per_epoch,
                             delta=dp.delta, accountant=dp.accountant)

    def metric_entries(epoch, mt):
        return {"epsilon": spent(epoch), "steps": epoch * dp.steps_per_epoch,
                "noise_multiplier": float(dp.noise_multiplier),
                "sampling_rate": float(dp.sampling_rate), "steps_per_epoch": dp.steps_per_epoch,
                "mean_batch_size": float(np.mean(np.asarray(mt.batch_size))),
                "overflow": int(np.sum(np.asarray(mt.overflow)))}

    def budget(epoch):
        if dp.target_epsilon is None or spent(epoch) <= dp.target_epsilon:
            return None
        return (f"privacy budget: epoch {epoch} would spend epsilon {spent(epoch):.4g} > "
                f"target_epsilon {dp.target_epsilon:g} (delta {dp.delta:g}); "
                f"stopped after epoch {epoch - 1}")

    return dp, epoch_fn, metric_entries, budget
