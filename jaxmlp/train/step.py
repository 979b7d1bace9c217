"""Training with optax on jaxmlp's own gradients: a jitted step, a whole epoch as one scan.

The gradient is the hand-derived one, ``jaxmlp.value_and_grad`` (forward (F1)-(F3), then
backward (B1)-(B4)); optax only turns it into an update, so any ``GradientTransformation``
works: plain gradient descent theta <- theta - eta dJ/dtheta as in the seeds (``optax.sgd``),
momentum, Adam, with schedules and weight decay (:func:`make_optimizer` builds the usual ones).

* :func:`make_train_step` -- ``step(params, opt_state, X, Y) -> (params, opt_state, metrics)``,
  one update on one minibatch, jitted.
* :func:`make_train_epoch` -- ``epoch(params, opt_state, key, X, Y) -> (params, opt_state,
  metrics)``: shuffle the m columns with ``key``, cut them into ``m // batch_size`` minibatches
  and ``jax.lax.scan`` the same update over them, all in ONE compiled call, so Python dispatch
  does not dominate small networks. The ``m % batch_size`` columns left over after the
  shuffle are skipped for that epoch (like ``drop_last``); the next epoch draws a new
  permutation, so a different remainder is skipped and every example keeps being used.
  :func:`epoch_batches` returns the column indices an epoch uses.
* :func:`evaluate` -- cost and the task's metric on a whole set, jitted.

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
import weakref
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.nn import recurrences
from jaxmlp.nn import checks
from jaxmlp.nn.costs import COSTS
from jaxmlp.nn.network import Network
from jaxmlp.nn.propagation import value_and_grad_kernel
from jaxmlp.nn.recurrences import gradient
from jaxmlp.train.shuffle import epoch_batches

Array = jax.Array

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "StepMetrics",
    "build_optimizer",
    "TrainState",
    "check_data",
    "check_opt_state",
    "epoch_batches",
    "evaluate",
    "first_nonfinite",
    "make_optimizer",
    "make_train_epoch",
    "make_train_step",
    "metric_name",
    "output_metrics",
    "split_key",
    "apply_update", "check_optimizer", "evaluate_kernel", "with_data_check",
]

#: Optimizer names accepted by :func:`make_optimizer`.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "kfac")
#: Learning-rate schedules accepted by :func:`make_optimizer`.
SCHEDULES = ("constant", "cosine", "warmup_cosine")


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


# ----------------------------------------------------------------------------- optimizers


def _wd_mask(params):
    """Weight decay on the weights W[l] only, never on the biases b[l]."""
    return checks.like_params(params, [{"W": True, "b": False} for _ in params])


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    schedule: str = "constant",
    total_steps: Optional[int] = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    damping: float = 1e-3,
    inverse_every: int = 1,
    kfac_kind: str = "exact",
    kfac_kl_clip: Optional[float] = None,
) -> optax.GradientTransformation:
    """The usual optax optimizers by name.

    Arguments:
      name: one of :data:`OPTIMIZERS`: ``"sgd"`` (theta <- theta - eta g, the seeds' rule),
        ``"momentum"`` / ``"nesterov"`` (heavy-ball / Nesterov with ``momentum``), ``"adam"``,
        ``"adamw"`` (Adam with decoupled weight decay), ``"rmsprop"``, ``"kfac"``
        (:func:`jaxmlp.train.kfac.kfac`, no momentum; the train step and epoch compute its
        Kronecker factors (H6) from the same forward pass as the gradient).
      learning_rate: eta > 0, the peak value when a schedule is used.
      schedule: one of :data:`SCHEDULES`: constant eta; cosine decay from eta to 0 over
        ``total_steps``; linear warm-up over the first 5 % of ``total_steps`` then cosine.
      total_steps: number of updates of the whole run (needed by the schedules).
      weight_decay: lambda >= 0, applied to the weights W[l] only (not b[l]): decoupled for
        ``adamw``, and for the other optimizers added to the gradient (lambda W, the gradient
        of the L2 penalty (lambda/2) ||W||^2) before the optimizer sees it.
      momentum: the momentum coefficient of ``"momentum"`` and ``"nesterov"``, in [0, 1).
      damping, inverse_every, kfac_kind, kfac_kl_clip: ``"kfac"`` only: Tikhonov damping,
        refresh of the factors' inverses every k steps, the factors' kind ("exact", "mc",
        "empirical"), and the KL clip c of :func:`jaxmlp.train.kfac.kfac` (None: no clipping).

    Returns:
      an ``optax.GradientTransformation``.
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}.")
    learning_rate = checks.real_number("learning_rate", learning_rate, low=0, low_open=True)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {list(SCHEDULES)}, got {schedule!r}.")
    weight_decay = checks.real_number("weight_decay", weight_decay, low=0)
    momentum = checks.real_number("momentum", momentum, low=0, high=1, high_open=True)
    if schedule != "constant":
        if total_steps is None:
            raise ValueError(f"total_steps: expected a positive integer for schedule {schedule!r} "
                             "(the number of updates of the whole run), got None.")
        total_steps = checks.positive_int("total_steps", total_steps)
    return build_optimizer(name, float(learning_rate), schedule=schedule,
                           total_steps=None if total_steps is None else int(total_steps),
                           weight_decay=float(weight_decay), momentum=float(momentum),
                           damping=damping, inverse_every=inverse_every, kfac_kind=kfac_kind,
                           kfac_kl_clip=kfac_kl_clip)


def build_optimizer(name: str, learning_rate: Any, *, schedule: str = "constant",
                    total_steps: Optional[int] = None, weight_decay: float = 0.0,
                    momentum: float = 0.9, damping: float = 1e-3, inverse_every: int = 1,
                    kfac_kind: str = "exact",
                    kfac_kl_clip: Optional[float] = None) -> optax.GradientTransformation:
    """:func:`make_optimizer` without the argument checks, for a learning rate that may be a
    traced array (``optax.inject_hyperparams``, per-member rates of :mod:`jaxmlp.train.ensemble`)."""
    lr: Any = learning_rate
    if schedule != "constant":
        if schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, int(total_steps))
        else:
            warmup = max(1, int(total_steps) // 20)
            lr = optax.warmup_cosine_decay_schedule(
                0.0, lr, warmup_steps=warmup, decay_steps=max(int(total_steps), warmup + 1))
    if name == "kfac":
        from jaxmlp.train import kfac

        return kfac.kfac(lr, damping=damping, inverse_every=inverse_every, kind=kfac_kind,
                         weight_decay=float(weight_decay), kl_clip=kfac_kl_clip)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay, mask=_wd_mask)
    base = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
        "adam": lambda: optax.adam(lr),
        "rmsprop": lambda: optax.rmsprop(lr),
    }[name]()
    if weight_decay > 0:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=_wd_mask), base)
    return base


def check_optimizer(optimizer: Any) -> optax.GradientTransformation:
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            "optimizer: expected an optax.GradientTransformation (with .init and .update), "
            f"got {type(optimizer).__name__}; e.g. optax.sgd(0.1) or jaxmlp.train.step."
            "make_optimizer('adam', 1e-3)."
        )
    return optimizer


def _outline(tree: Any, depth: int = 2) -> str:
    """A short picture of a pytree's containers, e.g. ``(ScaleByAdamState(count, mu, nu),
    EmptyState())``, for error messages."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return f"{type(tree).__name__}({', '.join(tree._fields)})"
    if isinstance(tree, tuple):
        return "(" + ", ".join(_outline(t, depth - 1) for t in tree) + ")" if depth > 0 else "(...)"
    if isinstance(tree, list):
        return f"[{len(tree)} items]"
    if isinstance(tree, dict):
        return "{" + ", ".join(map(str, tree)) + "}"
    if hasattr(tree, "shape"):
        return f"array{tuple(tree.shape)}"
    return type(tree).__name__


def check_opt_state(optimizer: optax.GradientTransformation, params: Any, opt_state: Any) -> None:
    """Raises ValueError if ``opt_state`` is not a state of ``optimizer`` for ``params``.

    Compares the tree structure, shapes and dtypes with ``optimizer.init(params)`` (evaluated
    abstractly, nothing is computed); works on concrete and traced values alike (the step
    and epoch functions call it at trace time, so it costs nothing per call).
    """
    want = jax.eval_shape(optimizer.init, params)
    if jax.tree.structure(want) != jax.tree.structure(opt_state):
        raise ValueError(
            f"opt_state: expected the state of this optimizer for these params, "
            f"optimizer.init(params) = {_outline(want)}, got {_outline(opt_state)}; was it made "
            "by another optimizer (or for other params)? Use opt_state = optimizer.init(params)."
        )
    got_leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    for (path, w), (_, g) in zip(jax.tree_util.tree_flatten_with_path(want)[0], got_leaves):
        g_shape, g_dtype = tuple(getattr(g, "shape", ())), jnp.result_type(g)
        if g_shape != tuple(w.shape) or g_dtype != w.dtype:
            raise ValueError(
                f"opt_state{jax.tree_util.keystr(path)}: expected shape {tuple(w.shape)} "
                f"{w.dtype} as in optimizer.init(params), got shape {g_shape} {g_dtype}."
            )


_CHECKED: dict = {}  # (id(array), what) -> weakref: jax.Arrays already checked (immutable)


def _seen(a: Any, what: Any) -> bool:
    ref = _CHECKED.get((id(a), what))
    return ref is not None and ref() is a


def _remember(a: Any, what: Any) -> None:
    key = (id(a), what)
    try:
        _CHECKED[key] = weakref.ref(a, lambda _, key=key: _CHECKED.pop(key, None))
    except TypeError:  # not weak-referenceable: simply checked again next time
        pass


def check_data(net: Network, X: Any, Y: Any) -> None:
    """The value checks of the training entry points, on concrete X (n[0], m), Y (n[L], m).

    X must be finite; Y must be finite and inside the cost's domain
    (:meth:`jaxmlp.nn.costs.Cost.check_targets`). ValueError naming the argument otherwise.
    Traced values (inside ``jax.jit``) and arrays of the wrong shape are left alone (the
    shape checks report those); a ``jax.Array`` that passed once is not inspected again.
    """
    for name, a in (("X", X), ("Y", Y)):
        if isinstance(a, jax.core.Tracer) or not hasattr(a, "shape") or not hasattr(a, "dtype"):
            continue
        n = net.sizes[0] if name == "X" else net.sizes[-1]
        if len(a.shape) != 2 or a.shape[0] != n or not (
                jnp.issubdtype(a.dtype, jnp.number) or a.dtype == jnp.bool_):
            continue
        what = "finite" if name == "X" else net.cost
        if isinstance(a, jax.Array) and _seen(a, what):
            continue
        if name == "X":
            if jnp.issubdtype(a.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(a))):
                checks.check_finite(X=a)
        else:
            COSTS[net.cost].check_targets(a)
        if isinstance(a, jax.Array):
            _remember(a, what)


def with_data_check(net: Network, jitted: Callable, x_pos: int,
                     key_pos: Optional[int] = None) -> Callable:
    """``jitted`` preceded by :func:`check_data` on its arguments x_pos (X) and x_pos + 1 (Y),
    and by :func:`jaxmlp.nn.checks.prng_key` on argument ``key_pos`` (an integer seed
    becomes ``jax.random.key(seed)``); ``.lower`` / ``.trace`` / ``.eval_shape`` of the
    jitted function stay available."""

    @functools.wraps(jitted)
    def run(*args):
        if len(args) > x_pos + 1:
            check_data(net, args[x_pos], args[x_pos + 1])
        if key_pos is not None and len(args) > key_pos:
            args = (*args[:key_pos], checks.prng_key(args[key_pos]), *args[key_pos + 1:])
        return jitted(*args)

    for attr in ("lower", "trace", "eval_shape"):
        if hasattr(jitted, attr):
            setattr(run, attr, getattr(jitted, attr))
    return run


# ----------------------------------------------------------------------------- step and epoch


def _needs_kfac_factors(optimizer) -> bool:
    from jaxmlp.train.kfac import KFAC

    return isinstance(optimizer, KFAC)


def _kfac_update_inputs(net: Network, optimizer, params, opt_state, X, Y, compute_dtype=None):
    """(J, grads, factors) from ONE forward pass: the gradient's sweep and the factors' (H6)."""
    from jaxmlp.quantities import curvature

    J, _, cache, dZs = recurrences.sweep(net, params, X, Y, None, compute_dtype)
    key = jax.random.fold_in(opt_state.key, opt_state.count) if optimizer.kind == "mc" else None
    mc = optimizer.mc_samples if optimizer.kind == "mc" else None
    factors = curvature.kfac_kernel(net, params, X, Y, key, optimizer.kind, mc, cache=cache)
    return J, checks.like_params(params, gradient(dZs, cache, compute_dtype)), factors


def apply_update(net: Network, optimizer, params, opt_state, X: Array, Y: Array, compute_dtype=None):
    """One update: (J, dJ/dtheta) by (F1)-(F3), (B1)-(B4), then the optax transformation
    (for K-FAC also the Kronecker factors of the same forward pass, passed as an extra arg)."""
    if _needs_kfac_factors(optimizer):
        J, grads, factors = _kfac_update_inputs(net, optimizer, params, opt_state, X, Y,
                                                compute_dtype)
        updates, opt_state = optimizer.update(grads, opt_state, params, kfac_factors=factors)
    else:
        J, grads = value_and_grad_kernel(net, params, X, Y, compute_dtype)
        updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, StepMetrics(cost=J, grad_norm=optax.tree.norm(grads))


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
    if _needs_kfac_factors(optimizer):
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
        reproduce runs made with it, or ``lambda key, m: jnp.arange(m)`` for no shuffle.

    Concrete X and Y holding NaN or infinity are refused (ValueError naming them) before the
    epoch runs, once per array object (the dataset is scanned once, not every epoch).

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
    if _needs_kfac_factors(optimizer):
        from jaxmlp.quantities.curvature import check_supported

        check_supported(net, "K-FAC", second_order=False)
    batch_size = checks.positive_int("batch_size", batch_size)
    compute_dtype = checks.compute_dtype(compute_dtype)
    if permutation is not None and not callable(permutation):
        raise TypeError(
            "permutation: expected a function (key, m) -> int array (m,), e.g. "
            f"jax.random.permutation, got {type(permutation).__name__}."
        )

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

    return with_data_check(net, epoch, 3, key_pos=2)


@jax.jit
def _split(key):
    return tuple(jax.random.split(key))


def split_key(key: Any) -> tuple[Array, Array]:
    """``key, epoch_key = jax.random.split(key)`` in ONE compiled call: same values.

    The eager spelling dispatches the split and then two indexing ops to unpack it, three
    dispatches per epoch (docs/training.md gives their cost). Use this (or draw all epoch
    keys at once with ``jax.random.split(key, epochs)``) in epoch loops.
    """
    return _split(checks.prng_key(key))


def first_nonfinite(costs: Any) -> Optional[int]:
    """Index of the first NaN or infinite entry of an epoch's ``metrics.cost`` (None if all finite)."""
    c = np.atleast_1d(np.asarray(costs))
    bad = np.flatnonzero(~np.isfinite(c))
    return int(bad[0]) if bad.size else None


# ----------------------------------------------------------------------------- evaluation


def metric_name(net: Network) -> str:
    """The headline metric :func:`evaluate` reports for the network's cost.

    ``"accuracy"`` (categorical and binary cross-entropy), ``"label_accuracy"`` (multi-label:
    the mean over labels of the per-label accuracy) or ``"r2"`` (mean squared error).
    """
    net = checks.require_network(net)
    return {
        "categorical_cross_entropy": "accuracy",
        "binary_cross_entropy": "accuracy",
        "multilabel_cross_entropy": "label_accuracy",
        "mean_squared_error": "r2",
    }[net.cost]


def evaluate_kernel(net: Network, params, X: Array, Y: Array) -> dict:
    A_L, cache = recurrences.forward_pass(net, params, X)  # (F1), (F2)
    out = {"cost": recurrences.cost(net, cache.Z[-1], A_L, Y)}  # (F3)
    out.update(output_metrics(net, A_L, Y))
    return out


def output_metrics(net: Network, A_L: Array, Y: Array) -> dict:
    """The task's metrics of an output A[L] (n[L], m) against Y (see :func:`evaluate`),
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
    else:  # mean squared error: coefficient of determination, averaged over outputs
        ss_res = jnp.sum(jnp.square(Y - A_L), axis=1)
        ss_tot = jnp.sum(jnp.square(Y - jnp.mean(Y, axis=1, keepdims=True)), axis=1)
        out["r2"] = jnp.mean(1.0 - ss_res / ss_tot)
    return out


_evaluate_jit = jax.jit(evaluate_kernel, static_argnums=0)


def evaluate(net: Network, params, X: Any, Y: Any, *, check_finite: bool = True) -> dict:
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
      set (R^2 is undefined there).

    ``check_finite=False`` skips the (host-side) scan of X and Y for NaN and infinity, for
    callers that checked the set once already (:func:`jaxmlp.train.loop.fit`).
    """
    X, Y = checks.check_problem(net, params, X, Y)
    if check_finite and not any(isinstance(a, jax.core.Tracer) for a in (X, Y)):
        checks.check_finite(X=X, Y=Y)  # a clear error rather than a NaN cost
        COSTS[net.cost].check_targets(Y)
    return _evaluate_jit(net, params, X, Y)
