"""Training: optimizers, the optax step and scanned epoch, the one loop, ensembles, K-FAC,
checkpoints.

=====================  ==================================================================
module                 what lives there
=====================  ==================================================================
``optimizers``         optimizers by name (:func:`make_optimizer`), optimizer/state checks
``step``               :class:`TrainState`, the data checks, the step and the scanned epoch
``metrics``            :func:`cost_and_metrics` of a set, the task's metrics of an output
``loop``               :func:`fit`: the public entry; checks once, picks the epoch
``epoch_loop``         :func:`run_epochs`, the one loop every run goes through
``monitor``            what the loop checks and reports (:class:`FitResult`)
``private_epoch``      the Poisson-sampled DP-SGD epoch
``ensemble``           K networks trained at once (vmap over the same step)
``kfac``               K-FAC as an optax transformation (factors from the sweep)
``marglik``            :func:`marglik_training`: the prior precision learned during training
                       (Immer et al.), the epochs above; imported on first use
``shuffle``            the epoch permutation
``checkpoint``         orbax checkpoints of a run (digest-verified)
``outdir``             one run per output folder (lock), atomic result files
=====================  ==================================================================
"""

from jaxmlp.train import (
    checkpoint, ensemble, epoch_loop, kfac, metrics, optimizers, outdir, shuffle, step,
)
from jaxmlp.train.loop import DEFAULT_EXPLODE_FACTOR, FitResult, fit
from jaxmlp.train.metrics import (
    cost_and_metrics, cost_and_metrics_kernel, metric_name, output_metrics,
)
from jaxmlp.train.optimizers import (
    OPTIMIZERS, SCHEDULES, check_opt_state, check_optimizer, make_optimizer,
)
from jaxmlp.train.private_epoch import make_dp_train_epoch
from jaxmlp.train.step import (
    StepMetrics, TrainState, apply_update, check_data, epoch_batches, first_nonfinite,
    make_train_epoch, make_train_step, split_key, with_data_check,
)

# marglik imports jaxmlp.laplace: loaded when one of its names is first used, so that
# importing the training package does not import the Laplace package.
_MARGLIK = ("MarglikResult", "PriorDecayState", "marglik_training", "prior_decay")


def __getattr__(name):
    if name == "marglik" or name in _MARGLIK:
        import importlib

        marglik = importlib.import_module("jaxmlp.train.marglik")
        return marglik if name == "marglik" else getattr(marglik, name)
    raise AttributeError(f"module 'jaxmlp.train' has no attribute {name!r}")


__all__ = [
    "DEFAULT_EXPLODE_FACTOR", "FitResult", "MarglikResult", "OPTIMIZERS", "PriorDecayState",
    "SCHEDULES", "StepMetrics", "TrainState", "apply_update", "check_data", "check_opt_state",
    "check_optimizer", "checkpoint", "cost_and_metrics", "cost_and_metrics_kernel", "ensemble",
    "epoch_batches", "epoch_loop", "first_nonfinite", "fit", "kfac", "make_dp_train_epoch",
    "make_optimizer", "make_train_epoch", "make_train_step", "marglik", "marglik_training",
    "metric_name", "metrics", "optimizers", "outdir", "output_metrics", "prior_decay",
    "shuffle", "split_key", "step", "with_data_check",
]
