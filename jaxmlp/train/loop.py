"""The training loop: epochs of one compiled call each, evaluation, divergence detection.

:func:`fit` runs the scanned epoch of :func:`jaxmlp.train.step.make_train_epoch` (shuffle,
minibatches, the optax update on the hand-derived gradient) ``epochs`` times, evaluates
the given sets after every epoch, and stops as soon as training goes wrong:

* a minibatch cost or gradient norm that is NaN or infinite (step named);
* parameters that are not finite after an update;
* a minibatch cost above ``explode_factor`` times the run's first minibatch cost (the
  cost at the initial parameters; default 1e6, ``None`` disables): a run that explodes
  while staying finite.

A stopped run returns the LAST GOOD state, the one before the failing epoch, never the
damaged one; ``on_epoch_end`` (e.g. a checkpoint writer) is only ever called with good
states. The data are checked once, before the first epoch: non-finite X or Y, and targets
outside the cost's domain (:meth:`jaxmlp.nn.costs.Cost.check_targets`), are refused.

Private training (``dp=jaxmlp.privacy.DPSGD(...)``): each epoch is the Poisson-sampled
DP-SGD epoch of :func:`jaxmlp.privacy.make_dp_train_epoch` (``steps_per_epoch`` steps, the
batch size only in expectation, q n), and after every epoch the history row holds
``epsilon``, the privacy spent so far (all completed steps, ``dp.accountant``, at
``dp.delta``), shown on the progress bar. With ``dp.target_epsilon`` the run stops
(status ``"budget"``) before an epoch whose steps would spend more than the target.

``experiments/train.py`` is argument parsing and file output around this function.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.privacy import dpsgd
from jaxmlp.train import step
from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.train.monitor import FitResult, all_finite, check_run_data, diagnose, progress_bar, scalars
from jaxmlp.train.private_epoch import make_dp_train_epoch
from jaxmlp.train.step import TrainState

__all__ = ["DEFAULT_EXPLODE_FACTOR", "FitResult", "fit"]

#: A minibatch cost above this multiple of the run's first minibatch cost stops the run.
DEFAULT_EXPLODE_FACTOR = 1e6


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
        (:func:`jaxmlp.train.step.evaluate`); each scalar metric lands in the history as
        ``<name>_<metric>``.
      state: a :class:`TrainState` to resume (from a checkpoint); ``history`` its epochs.
      on_epoch_end: ``f(state, row)`` after every good epoch (checkpoints, logging);
        returning False stops the run (status ``"stopped"``).
      explode_factor: stop when a minibatch cost exceeds this multiple of the run's first
        minibatch cost; None: never.
      progress: show a tqdm bar on stderr.
      compute_dtype, batch_sharding, permutation: as for
        :func:`jaxmlp.train.step.make_train_epoch` (the last two not with ``dp``).
      dp: None, or a :class:`jaxmlp.privacy.DPSGD`: private training (module docstring).
        Its ``max_batch_size`` defaults to :func:`jaxmlp.privacy.padded_batch_size` for all
        the run's steps (overflow probability below 1e-9 over the run).
      ensemble, learning_rates, shared_batches: K members trained at once, ``params``
        stacked along a leading axis K (:func:`jaxmlp.train.ensemble.init_ensemble`), optionally
        with K learning rates; runs :func:`jaxmlp.train.ensemble.fit_ensemble` (its docstring;
        not with ``dp`` or ``batch_sharding``).

    Returns:
      :class:`FitResult`. Nothing is raised for divergence: check ``status``.
    """
    if ensemble is not None or learning_rates is not None or shared_batches:
        if batch_sharding is not None:
            raise ValueError("batch_sharding: not supported with ensemble (the members are "
                             "vmapped on one device set); got a sharding.")
        if dp is not None:
            raise ValueError("dp: not supported with ensemble; got a DPSGD.")
        from jaxmlp.train import ensemble as ensemble_lib

        return ensemble_lib.fit_ensemble(
            net, params, optimizer, X, Y, epochs=epochs, batch_size=batch_size, key=key,
            ensemble=ensemble, learning_rates=learning_rates, shared_batches=shared_batches,
            eval_sets=eval_sets, state=state, history=history, on_epoch_end=on_epoch_end,
            explode_factor=explode_factor, progress=progress, progress_desc=progress_desc,
            compute_dtype=compute_dtype, permutation=permutation)
    net = checks.require_network(net)
    epochs = checks.positive_int("epochs", epochs)
    if explode_factor is not None:
        explode_factor = checks.real_number("explode_factor", explode_factor, low=1,
                                                low_open=True)
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end: expected a function (state, row) or None, got "
                        f"{type(on_epoch_end).__name__}.")
    if state is None:
        opt_state = optimizer.init(params) if hasattr(optimizer, "init") else None
        state = TrainState(params, opt_state, checks.prng_key(key), 0)
    elif not isinstance(state, TrainState):
        raise TypeError(f"state: expected a jaxmlp.train.step.TrainState or None, got "
                        f"{type(state).__name__}.")
    history = list(history or [])[: state.epoch]
    X, Y, eval_sets = check_run_data(net, state.params, X, Y, eval_sets)
    m = X.shape[1]
    if dp is None:
        if batch_size is None:
            raise TypeError("batch_size: expected a positive integer (None only with dp), got None.")
        epoch_fn = step.make_train_epoch(net, optimizer, batch_size,
                                             batch_sharding=batch_sharding,
                                             permutation=permutation, compute_dtype=compute_dtype)
    else:
        dp = dpsgd.check_dpsgd(dp, net, m)
        for name, value in (("batch_size", batch_size), ("batch_sharding", batch_sharding),
                            ("permutation", permutation)):
            if value is not None:
                raise ValueError(f"{name}: expected None with dp (private training samples "
                                 f"its batches by Poisson sampling), got {value!r}.")
        if dp.max_batch_size is None:
            dp = dp._replace(max_batch_size=dpsgd.padded_batch_size(
                m, dp.sampling_rate, epochs * dp.steps_per_epoch))
        epoch_fn = make_dp_train_epoch(
            net, optimizer, sampling_rate=dp.sampling_rate, l2_norm_clip=dp.l2_norm_clip,
            noise_multiplier=dp.noise_multiplier, steps_per_epoch=dp.steps_per_epoch,
            max_batch_size=dp.max_batch_size, compute_dtype=compute_dtype)

    def spent(epoch: int) -> float:
        return dpsgd.epsilon(noise_multiplier=dp.noise_multiplier,
                               sampling_rate=dp.sampling_rate, steps=epoch * dp.steps_per_epoch,
                               delta=dp.delta, accountant=dp.accountant)

    metric = step.metric_name(net)
    baseline = history[0].get("first_cost") if history else None

    bar = progress_bar(epochs, state.epoch, progress_desc) if progress else None
    status, message, seconds = "completed", None, []
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            eps = None
            if dp is not None and dp.target_epsilon is not None:
                eps = spent(epoch)
                if eps > dp.target_epsilon:
                    status = "budget"
                    message = (f"privacy budget: epoch {epoch} would spend epsilon {eps:.4g} > "
                               f"target_epsilon {dp.target_epsilon:g} (delta {dp.delta:g}); "
                               f"stopped after epoch {epoch - 1}")
                    break
            t0 = time.perf_counter()
            key, epoch_key = step.split_key(state.key)
            params, opt_state, mt = epoch_fn(state.params, state.opt_state, epoch_key, X, Y)
            costs = np.asarray(mt.cost)  # waits for the epoch
            dt = time.perf_counter() - t0
            gnorms = np.asarray(mt.grad_norm)
            if baseline is None:
                baseline = abs(float(costs[0])) if math.isfinite(costs[0]) else math.inf
            problem = diagnose(epoch, costs, gnorms, bool(all_finite(params)), baseline,
                                explode_factor)
            if problem is not None:
                status, message = "diverged", f"training stopped: {problem}"
                break
            state = TrainState(params, opt_state, key, epoch)
            seconds.append(dt)
            row = {"epoch": epoch, "running_cost": float(np.mean(costs)),
                   "first_cost": float(costs[0]), "seconds": dt}
            if dp is not None:
                row["epsilon"] = spent(epoch) if eps is None else eps
                row["steps"] = epoch * dp.steps_per_epoch
                row["mean_batch_size"] = float(np.mean(np.asarray(mt.batch_size)))
                row["overflow"] = int(np.sum(np.asarray(mt.overflow)))
            for name, (Xe, Ye) in eval_sets.items():
                ev = scalars(step.evaluate(net, params, Xe, Ye, check_finite=False))
                row.update({f"{name}_{k}": v for k, v in ev.items()})
            history.append(row)
            if on_epoch_end is not None and on_epoch_end(state, row) is False:
                status, message = "stopped", f"stopped by on_epoch_end after epoch {epoch}"
                break
            if bar is not None:
                shown = {"cost": f"{row['running_cost']:.4f}"}
                shown.update({f"{n}_{metric}": f"{row[f'{n}_{metric}']:.4f}" for n in eval_sets
                              if f"{n}_{metric}" in row})
                if "epsilon" in row:
                    shown["eps"] = f"{row['epsilon']:.3g}"
                shown.update(row.get("postfix", {}))
                bar.set_postfix(shown, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(state, history, status, message, seconds)
