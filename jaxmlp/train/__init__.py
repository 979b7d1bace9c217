"""Training: the optax step and scanned epoch, the loop, ensembles, K-FAC, checkpoints.

=====================  ==================================================================
module                 what lives there
=====================  ==================================================================
``step``               optimizers, :class:`TrainState`, the step and the scanned epoch,
                       evaluation
``loop``               :func:`fit`: epochs, evaluation, divergence, budget, callbacks
``monitor``            what the loops check and report (:class:`FitResult`)
``private_epoch``      the Poisson-sampled DP-SGD epoch
``ensemble``           K networks trained at once (vmap over the same step)
``kfac``               K-FAC as an optax transformation (factors from the sweep)
``shuffle``            the epoch permutation
``checkpoint``         orbax checkpoints of a run (digest-verified)
``outdir``             one run per output folder (lock), atomic result files
=====================  ==================================================================
"""

from jaxmlp.train import checkpoint, ensemble, kfac, outdir, shuffle, step
from jaxmlp.train.loop import DEFAULT_EXPLODE_FACTOR, FitResult, fit
from jaxmlp.train.private_epoch import make_dp_train_epoch
from jaxmlp.train.step import (
    OPTIMIZERS, SCHEDULES, StepMetrics, TrainState, apply_update, build_optimizer,
    check_data, check_opt_state, check_optimizer, epoch_batches, evaluate, evaluate_kernel,
    first_nonfinite, make_optimizer, make_train_epoch, make_train_step, metric_name,
    output_metrics, split_key, with_data_check,
)

__all__ = [
    "DEFAULT_EXPLODE_FACTOR", "FitResult", "OPTIMIZERS", "SCHEDULES", "StepMetrics",
    "TrainState", "apply_update", "build_optimizer", "check_data", "check_opt_state",
    "check_optimizer", "checkpoint", "ensemble", "epoch_batches", "evaluate",
    "evaluate_kernel", "first_nonfinite", "fit", "kfac", "make_dp_train_epoch",
    "make_optimizer", "make_train_epoch", "make_train_step", "metric_name", "outdir",
    "output_metrics", "shuffle", "split_key", "step", "with_data_check",
]
