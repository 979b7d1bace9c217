"""Training with optax on jaxmlp's own gradients: a jitted step, a whole epoch as one scan.

The gradient is the hand-derived one, ``jaxmlp.value_and_grad`` (forward (F1)-(F3), then
backward (B1)-(B4)); optax only turns it into an update, so any ``GradientTransformation``
works: plain gradient descent theta <- theta - eta dJ/dtheta as in the seeds (``optax.sgd``),
momentum, Adam, with schedules and weight decay (:func:`jaxmlp.train.optimizers.make_optimizer`
builds the usual ones).

* :func:`make_train_step` -- ``step(params, opt_state, X, Y) -> (params, opt_state, metrics)``,
  one update on one minibatch, jitted.
* :func:`make_train_epoch` -- ``epoch(params, opt_state, key, X, Y) -> (params, opt_state,
  metrics)``: shuffle the m columns with ``key``, cut them into ``m // batch_size`` minibatches
  and ``jax.lax.scan`` the same update over them, all in ONE compiled call, so Python dispatch
  does not dominate small networks. The ``m % batch_size`` columns left over after the
  shuffle are skipped for that epoch (like ``drop_last``); the next epoch draws a new
  permutation, so a different remainder is skipped and every example keeps being used.
  :func:`epoch_batches` returns the column indices an epoch uses.
* :func:`split_key` -- ``key, epoch_key = jax.random.split(key)`` in one dispatch.

The cost and metrics of a whole set are :func:`jaxmlp.train.metrics.cost_and_metrics`; the
optimizers by name are :mod:`jaxmlp.train.optimizers`.

Metrics cross the boundary as :class:`StepMetrics` (per step; stacked along a leading
axis of length ``m // batch_size`` for an epoch). The state a training run carries from one
epoch to the next is a :class:`TrainState`, the unit that ``jaxmlp.train.checkpoint`` saves.

Shape and dtype checks run at trace time (ValueError/TypeError naming the argument), and so
does the check that ``opt_state`` has the structure of ``optimizer.init(params)`` (a state
made by another optimizer is reported, not left to fail inside optax). The step and epoch
functions check concrete X and Y before running (:func:`check_data`: finite, Y in the cost's
domain), once per dataset: a ``jax.Array`` already checked is not checked again. A minibatch
cost that becomes NaN or infinite is not hidden: it shows in ``metrics.cost`` (NaN
propagates through every activation); :func:`first_nonfinite` finds the first such step.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.nn import checks, recurrences
from jaxmlp.nn.datacheck import check_data, with_data_check  # noqa: F401 (public here too)
from jaxmlp.nn.network import Network
from jaxmlp.nn.propagation import value_and_grad_kernel
from jaxmlp.nn.recurrences import gradient
from jaxmlp.train.optimizers import check_opt_state, check_optimizer
from jaxmlp.train.shuffle import epoch_batches

Array = jax.Array

__all__ = [
    "StepMetrics", "TrainState", "apply_update", "check_data", "epoch_batches",
    "first_nonfinite", "kfac_update_inputs", "make_train_epoch", "make_train_step",
    "needs_kfac_factors", "optimizer_update", "split_key", "split_key_kernel", "with_data_check",
]


class StepMetrics(NamedTuple):
    """What one update reports (for an epoch: each field stacked, shape (num_batches,)).

    Attributes:
      cost: J on the minibatch at the parameters BEFORE the update, (F3).
      grad_norm: the global L2 norm of dJ/dtheta over all W[l], b[l].
    """

    cost: Array
    grad_norm: Array


class TrainState(NamedTuple):
    """Everything a training run carries between epochs (what a checkpoint holds).

    Attributes:
      params: ``[{"W": (n[l], n[l-1]), "b": (n[l],)}, ...]``.
      opt_state: the optax state of the optimizer.
      key: the PRNG key the NEXT epoch's shuffle is drawn from (raw uint32 (2,)).
      epoch: number of epochs completed.
    """

    params: Any
    opt_state: Any
    key: Any
    epoch: int


# ----------------------------------------------------------------------------- step and epoch


def needs_kfac_factors(optimizer) -> bool:
    """Whether the step must pass ``optimizer`` the extra arguments of
    :func:`kfac_update_inputs`: it is a :class:`jaxmlp.train.kfac.KFAC` itself."""
    from jaxmlp.train.kfac import KFAC

    return isinstance(optimizer, KFAC)


def kfac_update_inputs(net: Network, optimizer, params, opt_state, X, Y, compute_dtype=None):
    """(J, grads, extra args) from ONE forward pass: the gradient's sweep, and what K-FAC
    reads of the same minibatch (:mod:`jaxmlp.train.kfac`):

    * ``kfac_factors``: a function returning the (H6) factors of this forward pass (one more
      backward sweep of the output factor's columns, (H12) for ``kind="mc"``), which the
      transformation calls only on its statistics steps (``lax.cond``, (K1));
    * ``kfac_model`` (adaptive learning rate or damping only): the
      :class:`jaxmlp.train.kfac.QuadraticModel` of this minibatch: J, the loss at other
      parameters (a forward pass) and the GGN Gram matrix of directions by the R-forward
      sweep (H13) from this forward pass's cache.
    """
    from jaxmlp.quantities import curvature
    from jaxmlp.train.kfac import QuadraticModel

    J, _, cache, dZs = recurrences.sweep(net, params, X, Y, None, compute_dtype)
    key = jax.random.fold_in(opt_state.key, opt_state.count) if optimizer.kind == "mc" else None
    mc = optimizer.mc_samples if optimizer.kind == "mc" else None
    extra = {"kfac_factors": lambda: curvature.kfac_kernel(net, params, X, Y, key, optimizer.kind,
                                                           mc, cache=cache)}
    if optimizer.needs_model:
        def loss(p):
            A_L, c = recurrences.forward_pass(net, p, X, compute_dtype)  # (F1), (F2)
            return recurrences.cost(net, c.Z[-1], A_L, Y)  # (F3)

        extra["kfac_model"] = QuadraticModel(
            cost=J, loss=loss,
            gram=lambda Vs: curvature.ggn_gram_kernel(net, params, cache, Y, Vs))  # (H13)
    return J, checks.like_params(params, gradient(dZs, cache, compute_dtype)), extra


def optimizer_update(optimizer, grads, opt_state, params, **extra):
    """``optimizer.update(grads, opt_state, params, **extra)`` for any optax transformation:
    extra arguments reach the transformations that take them (``optax.with_extra_args_support``:
    ``value`` for ``optax.contrib.reduce_on_plateau`` or ``optax.polyak_sgd``, K-FAC's factors)
    and are dropped for the others. A transformation that needs an extra argument the step does
    not give (``optax.lbfgs``: ``value_fn``, ``grad``) is refused by a TypeError naming them,
    instead of optax's own, as are one that checks for such an argument itself
    (``optax.contrib.sophia``: ``obj_fn``) and one whose update takes no extra argument
    (``optax.contrib.sam``, which needs ``grad_fn`` or a loop of its own); their TypeError
    names ``optimizer`` and keeps optax's message."""
    passes = f"it passes {sorted(extra) or 'no extra argument'} (value = the minibatch cost J)"
    use = ("Use a transformation that reads at most those, e.g. optax.adam, or "
           "optax.contrib.reduce_on_plateau and optax.polyak_sgd, which read value.")
    try:
        return optax.with_extra_args_support(optimizer).update(grads, opt_state, params, **extra)
    except AttributeError as e:
        raise TypeError(
            f"optimizer: its update fails on the network's params (a list of {{'W', 'b'}} per "
            f"layer): AttributeError: {e}. Transformations that need a params container of "
            f"their own (optax.lookahead's LookaheadParams) do not train these networks; use "
            f"e.g. optax.adam or an optax.chain of transformations that take any pytree.") from None
    except ValueError as e:
        needed = re.match(r"(\w+) must be provided", str(e))
        if needed is None:
            raise
        raise TypeError(
            f"optimizer: its update needs {needed.group(1)!r}, which the training step does not "
            f"give: {passes}. optax: ValueError: {e} {use}") from None
    except TypeError as e:
        missing = re.search(r"missing \d+ required keyword-only arguments?: (.+)$", str(e))
        if missing is not None:
            raise TypeError(
                f"optimizer: its update needs {missing.group(1)}, which the training step does "
                f"not give: {passes}. {use}") from None
        unexpected = re.search(r"got an unexpected keyword argument '(\w+)'", str(e))
        if unexpected is None or unexpected.group(1) not in extra:
            raise
        raise TypeError(
            f"optimizer: its update takes no extra argument, though it is an "
            f"optax.GradientTransformationExtraArgs: {passes}; optax: TypeError: {e}. A "
            f"transformation with a loop of its own (optax.contrib.sam: the adversarial "
            f"gradient grad_fn in opaque mode, alternating steps driven by the caller otherwise) "
            f"is not trained by this step. {use}") from None


def apply_update(net: Network, optimizer, params, opt_state, X: Array, Y: Array, compute_dtype=None,
                 *, grad_norm: bool = True):
    """One update: (J, dJ/dtheta) by (F1)-(F3), (B1)-(B4), then the optax transformation
    (for K-FAC also what it reads of the same forward pass, passed as extra args:
    ``kfac_factors`` and, when it adapts, ``kfac_model``; see :func:`kfac_update_inputs`),
    by :func:`optimizer_update`, which also passes ``value=J`` (the minibatch cost (F3)).

    ``grad_norm``: compute ``metrics.grad_norm`` (default); False leaves it None, so a
    caller that reads only ``metrics.cost`` traces no norm (the update is the same)."""
    if needs_kfac_factors(optimizer):
        J, grads, extra = kfac_update_inputs(net, optimizer, params, opt_state, X, Y,
                                              compute_dtype)
    else:
        J, grads = value_and_grad_kernel(net, params, X, Y, compute_dtype)
        extra = {}
    updates, opt_state = optimizer_update(optimizer, grads, opt_state, params, value=J, **extra)
    params = optax.apply_updates(params, updates)
    return params, opt_state, StepMetrics(
        cost=J, grad_norm=optax.tree.norm(grads) if grad_norm else None)


def make_train_step(net: Network, optimizer: optax.GradientTransformation, *, compute_dtype=None,
                    check_data: bool = True):
    """A jitted ``step(params, opt_state, X, Y) -> (params, opt_state, StepMetrics)``.

    Arguments:
      net: the network.
      optimizer: any optax ``GradientTransformation`` (``opt_state = optimizer.init(params)``).

    Concrete X and Y holding NaN or infinity, and Y outside the cost's domain, are refused
    (ValueError naming them) before the update, once per array object (:func:`check_data`).

    The returned step computes J and grads = dJ/dtheta with ``jaxmlp.value_and_grad`` on the
    minibatch X (n[0], b), Y (n[L], b), then ``updates, opt_state = optimizer.update(grads,
    opt_state, params)`` and ``params + updates``. With ``optax.sgd(eta)`` this is
    W[l] <- W[l] - eta dW[l], b[l] <- b[l] - eta db[l]. ``metrics.cost`` is J before the update.
    ``compute_dtype``: operand dtype of the matrix products (None: the params').

    ``check_data``: run those value checks (default). A minibatch sliced anew every step is
    a new array, so they scan every step and wait for the device each time (~35 % slower
    for a 64-128-10 network, batch 128, on a loaded 2-core CPU); in such a loop check the
    whole set once with :func:`check_data` and pass ``check_data=False``. The epoch
    function takes the whole set, checks it once per dataset and needs no such switch.
    """
    net = checks.require_network(net)
    optimizer = check_optimizer(optimizer)
    if needs_kfac_factors(optimizer):
        from jaxmlp.quantities.curvature import check_supported

        check_supported(net, "K-FAC", second_order=False)
    compute_dtype = checks.compute_dtype(compute_dtype)
    if not isinstance(check_data, bool):
        raise TypeError(f"check_data: expected True or False, got {check_data!r}.")

    @jax.jit
    def step(params, opt_state, X, Y):
        X, Y = checks.check_problem(net, params, X, Y)
        check_opt_state(optimizer, params, opt_state)
        return apply_update(net, optimizer, params, opt_state, X, Y, compute_dtype)

    return with_data_check(net, step, 2) if check_data else step


def make_train_epoch(
    net: Network,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    *,
    batch_sharding: Optional[jax.sharding.Sharding] = None,
    permutation: Optional[Callable[[Any, int], Array]] = None,
    compute_dtype=None,
    check_data: bool = True,
):
    """A jitted ``epoch(params, opt_state, key, X, Y) -> (params, opt_state, StepMetrics)``.

    Arguments:
      net: the network.
      optimizer: any optax ``GradientTransformation``.
      batch_size: columns per minibatch, 1 <= batch_size <= m.
      batch_sharding: optional ``jax.sharding.Sharding`` for each (n, batch_size) minibatch,
        e.g. ``NamedSharding(mesh, P(None, "data"))`` to split its columns over devices (data
        parallelism; XLA's SPMD partitioner inserts the sums of (B1), (B2) and (F3)).
      permutation: ``(key, m) -> int (m,)``, the epoch's shuffle; default
        :func:`jaxmlp.train.shuffle.permutation` (``jax.random.permutation``'s rounds of sorts by
        random keys, one packed uint32 operand per sort). Pass ``jax.random.permutation`` to
        reproduce runs made with it, or ``lambda key, m: jnp.arange(m)`` for no shuffle (then
        the last m % batch_size columns are skipped in EVERY epoch, never used: choose a
        batch size dividing m, or shuffle the columns once beforehand).

      check_data: True (default): concrete X and Y holding NaN or infinity, or Y outside the
        cost's domain, are refused (ValueError naming them) before the epoch runs, once per
        array object (the dataset is scanned once, not every epoch), and an integer seed
        becomes ``jax.random.key(seed)`` (:func:`with_data_check`). False: the jitted epoch
        alone, for a caller that checked its data and key once (:func:`jaxmlp.train.loop.fit`);
        shapes and dtypes are still checked when it is traced.

    The epoch takes X (n[0], m), Y (n[L], m) and a PRNG key; it draws the permutation of
    :func:`epoch_batches` (:mod:`jaxmlp.train.shuffle`) and ``lax.scan``s over its rows: each
    iteration gathers its minibatch's columns and applies the update of :func:`make_train_step`; one compiled call
    per epoch (gathering inside the scan, rather than gathering the whole epoch first, does
    not copy the data). Returned metrics are
    :class:`StepMetrics` with fields of shape (m // batch_size,), one entry per update.
    Calling the step of :func:`make_train_step` on ``X[:, idx[s]]``, ``Y[:, idx[s]]`` for
    s = 0, 1, ... with ``idx = epoch_batches(key, m, batch_size)`` gives the same result.
    """
    net = checks.require_network(net)
    optimizer = check_optimizer(optimizer)
    if needs_kfac_factors(optimizer):
        from jaxmlp.quantities.curvature import check_supported

        check_supported(net, "K-FAC", second_order=False)
    batch_size = checks.positive_int("batch_size", batch_size)
    compute_dtype = checks.compute_dtype(compute_dtype)
    if permutation is not None and not callable(permutation):
        raise TypeError(
            "permutation: expected a function (key, m) -> int array (m,), e.g. "
            f"jax.random.permutation, got {type(permutation).__name__}."
        )
    if not isinstance(check_data, bool):
        raise TypeError(f"check_data: expected True or False, got {check_data!r}.")
    from jaxmlp.parallel.sharding import check_batch_sharding

    check_batch_sharding(batch_sharding)  # a mesh with Explicit axes, refused by name
    args = (net, optimizer, batch_size, batch_sharding, permutation, compute_dtype)
    try:
        epoch = _cached_epoch(*args)
    except TypeError:  # an argument that cannot be hashed: no reuse, the same function
        epoch = _epoch_program(*args)
    return with_data_check(net, epoch, 3, key_pos=2) if check_data else epoch


def _epoch_program(net, optimizer, batch_size, batch_sharding, permutation, compute_dtype):
    """The jitted epoch of :func:`make_train_epoch` for checked arguments."""

    @jax.jit
    def epoch(params, opt_state, key, X, Y):
        X, Y = checks.check_problem(net, params, X, Y)
        check_opt_state(optimizer, params, opt_state)
        key = checks.prng_key(key)
        idx = epoch_batches(key, X.shape[1], batch_size, permutation)  # (num_batches, batch_size)

        def body(carry, idx_s):
            params, opt_state = carry
            X_s = jnp.take(X, idx_s, axis=1)  # (n[0], batch_size): minibatch s, gathered here
            Y_s = jnp.take(Y, idx_s, axis=1)  # (n[L], batch_size)
            if batch_sharding is not None:
                X_s = jax.lax.with_sharding_constraint(X_s, batch_sharding)
                Y_s = jax.lax.with_sharding_constraint(Y_s, batch_sharding)
            params, opt_state, metrics = apply_update(net, optimizer, params, opt_state, X_s, Y_s,
                                                 compute_dtype)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), idx)
        return params, opt_state, metrics

    return epoch


# The same (network, optimizer object, batch size, ...) gives the same jitted epoch, so its
# compiled programs are reused: fitting again with the same optimizer (a grid search, a
# scikit-learn estimator refitted, fit called per run) traces and compiles nothing new.
_cached_epoch = functools.lru_cache(maxsize=64)(_epoch_program)


@jax.jit
def split_key_kernel(key: Array) -> tuple[Array, Array]:
    """Unchecked :func:`split_key`: ``key`` must already be one PRNG key (typed, shape (), or
    raw uint32 (2,)), as :func:`jaxmlp.nn.checks.prng_key` returns it."""
    return tuple(jax.random.split(key))


def split_key(key: Any) -> tuple[Array, Array]:
    """``key, epoch_key = jax.random.split(key)`` in ONE compiled call: same values.

    The eager spelling dispatches the split and then two indexing ops to unpack it, three
    dispatches per epoch (docs/training.md gives their cost). Use this (or draw all epoch
    keys at once with ``jax.random.split(key, epochs)``) in epoch loops.
    """
    return split_key_kernel(checks.prng_key(key))


def first_nonfinite(costs: Any) -> Optional[int]:
    """Index of the first NaN or infinite entry of an epoch's ``metrics.cost`` (None if all finite)."""
    c = np.atleast_1d(np.asarray(costs))
    bad = np.flatnonzero(~np.isfinite(c))
    return int(bad[0]) if bad.size else None
