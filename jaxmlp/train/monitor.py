"""What the training loop checks and reports (:func:`jaxmlp.train.epoch_loop.run_epochs`,
for :func:`jaxmlp.train.fit` and the ensembles): the loop's arguments and the run's data,
checked once at the public boundary, each epoch's diagnosis, the progress bar and
:class:`FitResult`."""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.train.step import TrainState

__all__ = ["DEFAULT_EXPLODE_FACTOR", "FitResult", "LOOP_ENTRIES", "RESERVED_SET_NAMES",
           "all_finite", "check_loop_args", "check_run_data", "diagnose", "progress_bar",
           "scalars"]

#: A minibatch cost above this multiple of the run's first minibatch cost stops the run.
DEFAULT_EXPLODE_FACTOR = 1e6

#: The history entries the loop itself writes (:func:`jaxmlp.train.epoch_loop.run_epochs`:
#: the cost entries of one network and of ensembles, the epoch's time, private training's
#: privacy entries).
LOOP_ENTRIES = ("epoch", "running_cost", "running_cost_members", "first_cost",
                "first_cost_members", "seconds", "epsilon", "steps", "noise_multiplier",
                "sampling_rate", "steps_per_epoch", "mean_batch_size", "overflow")

#: Eval set names refused: a set's entries ``<name>_<metric>`` (``_members``, ...) would
#: overwrite the loop's own entries starting ``<name>_`` (a set "first" writes ``first_cost``,
#: which a resumed run's explode test reads back as its baseline).
RESERVED_SET_NAMES = tuple(sorted({e[:i] for e in LOOP_ENTRIES for i, c in enumerate(e)
                                   if c == "_"}))


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the last good :class:`~jaxmlp.train.step.TrainState` (params, opt_state, the key
        of the next epoch, epochs completed).
      history: one dict per completed epoch: ``epoch``, ``running_cost`` (mean minibatch
        cost), ``first_cost`` (the epoch's first minibatch cost), ``seconds`` (the epoch's
        compiled call), and ``<set>_<metric>`` for every evaluated set and metric.
      status: ``"completed"``, ``"diverged"`` (see :mod:`jaxmlp.train.loop`; with ``dp`` only
        non-finite noisy gradients or parameters, never a cost), ``"stopped"``
        (``on_epoch_end`` returned False) or ``"budget"`` (private training: the next
        epoch would have spent more than ``dp.target_epsilon``).
      message: None, or what went wrong, naming the epoch and step.
      epoch_seconds: the wall time of each epoch run here (compiled call only).
      privacy: private training only (else None): ``epsilon`` spent by ALL the steps taken
        (``steps``: those of the epochs done, and of the failing epoch of a diverged run,
        whose updates ran on the data), ``target_epsilon``, ``delta``, ``noise_multiplier``
        (``noise_calibrated``: chosen by fit for the target), ``sampling_rate``,
        ``steps_per_epoch``, ``accountant``, ``max_batch_size`` and ``overflows`` (selected
        examples that did not fit the padded batch, summed over those steps; 0 unless a
        probability below 1e-9 came true).
    """

    state: TrainState
    history: list
    status: str
    message: Optional[str]
    epoch_seconds: list
    privacy: Optional[dict] = None


@jax.jit
def all_finite(tree) -> jax.Array:
    """True when every leaf of ``tree`` holds only finite numbers (one compiled reduction)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def scalars(ev: dict) -> dict[str, float]:
    """The 0-d entries of an evaluation as Python floats (a history row)."""
    return {k: float(v) for k, v in ev.items() if np.ndim(v) == 0}


def check_loop_args(net: Any, epochs: Any, explode_factor: Any, on_epoch_end: Any) -> tuple:
    """The checks of the loop's own arguments: ``(net, epochs, explode_factor)`` checked
    (a Network, an int >= 1, None or a number > 1); TypeError unless ``on_epoch_end`` is
    None or a function."""
    net = checks.require_network(net)
    epochs = checks.positive_int("epochs", epochs)
    if explode_factor is not None:
        explode_factor = checks.real_number("explode_factor", explode_factor, low=1,
                                            low_open=True)
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end: expected a function (state, row) or None, got "
                        f"{type(on_epoch_end).__name__}.")
    return net, epochs, explode_factor


def check_history(history: Any, epoch: int) -> list:
    """``history`` (None, or the list of per-epoch dicts a previous run returned) cut to the
    ``epoch`` epochs of the state being resumed; TypeError naming ``history`` otherwise."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)) or not all(isinstance(r, Mapping) for r in history):
        got = type(history).__name__ if not isinstance(history, (list, tuple)) else (
            "a " + type(history).__name__ + " holding " + ", ".join(sorted(
                {type(r).__name__ for r in history if not isinstance(r, Mapping)})))
        raise TypeError(f"history: expected None or the list of per-epoch dicts of a previous "
                        f"run (FitResult.history), got {got}.")
    return list(history)[:epoch]


def check_run_data(net: Network, params: Any, X: Any, Y: Any,
                   eval_sets: Optional[Mapping[str, tuple]] = None) -> tuple:
    """The checks of a training run's data, once, before the first epoch: shapes and dtypes
    against ``params``, finite values, targets inside the cost's domain, for the training set
    and every ``eval_sets`` pair (errors naming ``eval_sets[name] X`` / ``Y``); set names of
    :data:`RESERVED_SET_NAMES` are refused. Returns ``(X, Y, eval_sets)`` as arrays."""
    X, Y = checks.check_problem(net, params, X, Y)
    checks.check_finite(X=X, Y=Y)
    net.cost_fn.check_targets(Y)  # inside the cost's domain (jaxmlp.nn.costs)
    if eval_sets is None:
        eval_sets = {}
    if not isinstance(eval_sets, Mapping):
        raise TypeError(f"eval_sets: expected a mapping {{name: (X, Y)}}, e.g. "
                        f"eval_sets={{'test': (X_test, Y_test)}}, got {type(eval_sets).__name__}.")
    checked = {}
    for name, pair in eval_sets.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"eval_sets: expected names that are non-empty strings (the history's "
                            f"'<name>_cost', '<name>_accuracy'), got {name!r}.")
        if name in RESERVED_SET_NAMES:
            raise ValueError(f"eval_sets: the name {name!r} is reserved: its entries "
                             f"'{name}_<metric>' would overwrite the loop's own history entries "
                             f"({', '.join(e for e in LOOP_ENTRIES if e.startswith(name + '_'))}"
                             f"); reserved names: {list(RESERVED_SET_NAMES)}. Choose another "
                             f"name, e.g. 'train' or 'test'.")
    for name, pair in eval_sets.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"eval_sets[{name!r}]: expected a pair (X, Y), got "
                            f"{type(pair).__name__}.")
        Xe, Ye = _check_set(net, params, name, *pair)
        checks.check_finite(**{f"eval_sets[{name!r}] X": Xe, f"eval_sets[{name!r}] Y": Ye})
        net.cost_fn.check_targets(Ye, name=f"eval_sets[{name!r}] Y")
        checked[name] = (Xe, Ye)
    return X, Y, checked


def _check_set(net: Network, params: Any, name: str, X: Any, Y: Any) -> tuple:
    """``checks.check_problem`` on an eval set, its shape and dtype errors naming
    ``eval_sets[name] X`` / ``Y`` rather than the training arrays."""
    try:
        return checks.check_problem(net, params, X, Y)
    except (TypeError, ValueError) as e:
        msg = str(e)
        for arg in ("X", "Y"):
            if msg.startswith(f"{arg}: "):
                raise type(e)(f"eval_sets[{name!r}] {msg}") from None
        raise


def progress_bar(total: int, initial: int, desc: str):
    """A tqdm bar over epochs on stderr (tqdm is imported only when a bar is asked for)."""
    try:
        from tqdm import tqdm
    except ImportError:
        raise ValueError("progress: a progress bar needs tqdm, which is not installed (pip "
                         "install 'jaxmlp[experiments]'); or pass progress=False.") from None

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", file=sys.stderr,
                dynamic_ncols=True)


def diagnose(epoch: int, costs: np.ndarray, gnorms: np.ndarray, params_ok: bool,
              baseline: float, explode_factor: Optional[float]) -> Optional[str]:
    """The first thing wrong with an epoch's metrics, as a sentence; None when it is good."""
    n = len(costs)
    for s in range(n):
        if not math.isfinite(costs[s]):
            return (f"the minibatch cost became {'NaN' if math.isnan(costs[s]) else 'infinite'} "
                    f"at epoch {epoch}, step {s + 1} of {n}")
        if not math.isfinite(gnorms[s]):
            return (f"the gradient became non-finite at epoch {epoch}, step {s + 1} of {n} "
                    f"(cost {costs[s]:.4g})")
        # in Python floats: explode_factor * baseline overflows a float16 cost's dtype
        if explode_factor is not None and float(costs[s]) > explode_factor * float(baseline):
            return (f"the minibatch cost exploded to {costs[s]:.4g} at epoch {epoch}, step "
                    f"{s + 1} of {n}, more than {explode_factor:g} times the first cost "
                    f"{baseline:.4g} (explode_factor)")
    if not params_ok:
        return f"the parameters became non-finite at epoch {epoch}, step {n} of {n} (the last update)"
    return None
