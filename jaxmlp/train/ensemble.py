"""Ensembles: K networks of one architecture trained at once, in one compiled epoch.

The K members' parameters are stacked along a new leading axis: member k's W[l] is
``params[l]["W"][k]`` of shape (n[l], n[l-1]), so the stack is (K, n[l], n[l-1]) and b[l]
is (K, n[l]). The epoch is the single network's scanned epoch
(:func:`jaxmlp.train.step.make_train_epoch`: shuffle, minibatches, (F1)-(F3), the one
backward sweep (B3)-(B4), (B1)-(B2), the optax update) with ``jax.vmap`` of the same update
over that axis inside the scan: nothing about the recurrences changes, XLA sees K-batched
products.

Each member has its own key (initial parameters and shuffle) and, optionally, its own
learning rate: member k trains exactly as the single run

    params_k = init_params(net, member_keys(key, K)[k])
    fit(net, params_k, make_optimizer(name, lr_k), X, Y, key=member_keys(shuffle_key, K)[k], ...)

would (``tests/test_ensemble.py`` checks the parameters to float32 tolerance). With
``shared_batches=True`` all members see the same minibatches (one shuffle key): the
minibatch X_s (n[0], b) is then not batched, and vmap turns the first layer's (F1) of all
members into ONE dense product (K n[1], n[0]) x (n[0], b) and its (B1) into
(K n[1], b) x (b, n[0]) (``experiments/ensemble_speed.py`` compares the formulations).

Uses: seeds (the spread of a metric over initialisations), learning-rate sweeps in one
call, and the averaged prediction (1/K) sum_k A[L]_k (:func:`ensemble_predict`).

* :func:`init_ensemble`, :func:`member_keys`, :func:`member`, :func:`ensemble_size`;
* :func:`make_ensemble_optimizer` (per-member learning rates via
  ``optax.inject_hyperparams``), :func:`init_opt_state`;
* :func:`make_ensemble_epoch`;
* :func:`ensemble_predict`, :func:`ensemble_cost_and_metrics`;
* :func:`fit_ensemble` (what ``jaxmlp.train.loop.fit(..., ensemble=K)`` runs): the one loop
  of :func:`jaxmlp.train.epoch_loop.run_epochs`, diagnosing each member.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.nn import checks, recurrences
from jaxmlp.nn.init import init_params
from jaxmlp.nn.network import Network
from jaxmlp.train import monitor, step
from jaxmlp.train.epoch_loop import EpochPlan, run_epochs
from jaxmlp.train.metrics import cost_and_metrics_kernel, output_metrics
from jaxmlp.train.optimizers import check_optimizer, make_optimizer
from jaxmlp.train.shuffle import epoch_batches
from jaxmlp.nn.datacheck import check_data
from jaxmlp.train.step import TrainState

Array = jax.Array

__all__ = [
    "ensemble_cost_and_metrics",
    "ensemble_predict",
    "ensemble_size",
    "fit_ensemble",
    "init_ensemble",
    "init_opt_state",
    "make_ensemble_epoch",
    "make_ensemble_optimizer",
    "member",
    "member_keys",
    "summary_row",
]

#: How a number of members is described in error messages.
_MEMBERS = "the number of members K >= 1"


def member_keys(key: Any, K: int) -> Array:
    """The K member keys of ``key``: ``jax.random.split(key, K)``, (K, 2) for a raw key."""
    K = checks.positive_int("K", K, _MEMBERS)
    return jax.random.split(checks.prng_key(key), K)


def init_ensemble(net: Network, key: Any, K: int, scheme=None, *, dtype=jnp.float32,
                  scale: float = 0.01) -> list:
    """K members' initial parameters, stacked: ``[{"W": (K, n[l], n[l-1]), "b": (K, n[l])}]``.

    Member k is ``init_params(net, member_keys(key, K)[k], scheme, dtype=dtype)``.
    """
    net = checks.require_network(net)
    keys = member_keys(key, K)
    init_params(net, keys[0], scheme, dtype=dtype, scale=scale)  # argument checks, eagerly
    return jax.vmap(lambda k: init_params(net, k, scheme, dtype=dtype, scale=scale))(keys)


def member(tree: Any, k: int) -> Any:
    """Member k of a stacked pytree (params, opt_state, metrics): every leaf's ``[k]``."""
    return jax.tree.map(lambda a: a[k], tree)


def ensemble_size(net: Network, params: Any, name: str = "params") -> int:
    """K of stacked ensemble parameters; ValueError naming ``name`` when they are not a stack
    of ``net``'s parameters with one common leading axis."""
    net = checks.require_network(net)
    leaves = jax.tree.leaves(params)
    if not leaves or any(np.ndim(a) < 2 for a in leaves):
        raise ValueError(f"{name}: expected ensemble parameters stacked along a leading axis K "
                         f"(from jaxmlp.train.ensemble.init_ensemble), got leaves of shapes "
                         f"{[tuple(np.shape(a)) for a in leaves]}.")
    K = int(np.shape(leaves[0])[0])
    if any(int(np.shape(a)[0]) != K for a in leaves):
        raise ValueError(f"{name}: expected every leaf to have the same leading axis K, got "
                         f"{[int(np.shape(a)[0]) for a in leaves]}.")
    try:
        checks.check_params(net, jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            np.shape(a)[1:], jnp.result_type(a)), params))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: one member (a slice [k]) does not fit the network: {e}") from None
    return K


# ----------------------------------------------------------------------------- optimizers


def make_ensemble_optimizer(name: str, learning_rate: float, *, schedule: str = "constant",
                            total_steps: Optional[int] = None, weight_decay: float = 0.0,
                            momentum: float = 0.9) -> optax.GradientTransformation:
    """:func:`jaxmlp.train.optimizers.make_optimizer` with the learning rate held in the
    optimizer state (``optax.inject_hyperparams``), so that each member can have its own
    (:func:`init_opt_state` with ``learning_rates``). ``learning_rate`` is the default rate.

    Member k with rate lr_k updates as ``make_optimizer(name, lr_k, ...)`` does.
    """
    make_optimizer(name, learning_rate, schedule=schedule, total_steps=total_steps,
                   weight_decay=weight_decay, momentum=momentum)  # the checks, on numbers
    if name == "kfac":
        raise ValueError("optimizer: 'kfac' is not available for ensembles with per-member "
                         "rates (the rate held in an optax.inject_hyperparams state wraps K-FAC, "
                         "and the step passes the Kronecker factors only to a K-FAC it is given "
                         "itself); for one rate for all members pass jaxmlp.train.kfac.kfac(lr) "
                         "to fit(..., ensemble=K); got 'kfac'.")

    def factory(learning_rate):  # a 0-d array: the rate held in the state
        return make_optimizer(name, learning_rate, schedule=schedule, total_steps=total_steps,
                              weight_decay=float(weight_decay), momentum=float(momentum))

    return optax.inject_hyperparams(factory)(learning_rate=float(learning_rate))


def _learning_rates(learning_rates: Any, K: int) -> np.ndarray:
    try:
        lrs = np.asarray(learning_rates, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"learning_rates: expected {K} numbers > 0, one per member, got "
                        f"{learning_rates!r}.") from None
    if lrs.shape != (K,):
        raise ValueError(f"learning_rates: expected one rate per member, shape ({K},), got "
                         f"shape {lrs.shape}.")
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"learning_rates: expected finite rates > 0, got {lrs.tolist()}.")
    return lrs


def init_opt_state(optimizer: Any, params: Any, learning_rates: Any = None) -> Any:
    """The stacked optimizer state of K members: ``vmap(optimizer.init)(params)``.

    ``learning_rates`` (K,): member k's rate; needs an optimizer whose state holds its
    ``learning_rate`` hyperparameter as a number (:func:`make_ensemble_optimizer`, or
    ``optax.inject_hyperparams(...)(learning_rate=<a number>)``). An injected SCHEDULE is
    refused: ``inject_hyperparams`` writes schedule(count) into ``hyperparams`` at every
    step, the same rate for every member, so the K rates would be overwritten at the first
    step. A per-member schedule is :func:`make_ensemble_optimizer` with ``schedule=``
    (member k's rate lr_k is the schedule's peak, the schedule applied inside).
    """
    optimizer = check_optimizer(optimizer)
    leaves = jax.tree.leaves(params)
    K = int(np.shape(leaves[0])[0])
    opt_state = jax.vmap(optimizer.init)(params)
    if learning_rates is None:
        return opt_state
    lrs = _learning_rates(learning_rates, K)
    hp = getattr(opt_state, "hyperparams", None)
    if not isinstance(hp, dict) or "learning_rate" not in hp:
        raise TypeError(
            "optimizer: per-member learning_rates need an optimizer that holds a constant "
            "learning rate in its state, e.g. jaxmlp.train.ensemble.make_ensemble_optimizer("
            "'adam', 1e-3) or optax.inject_hyperparams(optax.adam)(learning_rate=1e-3) (a "
            "number, not a schedule); got a state of type "
            f"{type(opt_state).__name__}.")
    hp_states = getattr(opt_state, "hyperparams_states", None)
    if isinstance(hp_states, dict) and "learning_rate" in hp_states:
        raise ValueError(
            "learning_rates: the optimizer's injected learning_rate is a schedule, which "
            "optax.inject_hyperparams writes into the state at every step, the same for every "
            "member, so per-member learning_rates would be overwritten at the first step. For "
            "per-member rates inject a constant rate (optax.inject_hyperparams(optax.adam)("
            "learning_rate=1e-3)); for per-member schedules use jaxmlp.train.ensemble."
            "make_ensemble_optimizer('adam', 1e-3, schedule='cosine', total_steps=...) (each "
            "member's rate is its schedule's peak); or leave learning_rates out to give all "
            "members the schedule.")
    lr = jnp.asarray(lrs, dtype=jnp.result_type(hp["learning_rate"]))
    return opt_state._replace(hyperparams={**hp, "learning_rate": lr})


# ----------------------------------------------------------------------------- the epoch


def make_ensemble_epoch(
    net: Network,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    *,
    shared_batches: bool = False,
    permutation: Optional[Callable[[Any, int], Array]] = None,
    compute_dtype=None,
):
    """A jitted ``epoch(params, opt_state, key, X, Y) -> (params, opt_state, StepMetrics)``
    for K stacked members.

    ``params``, ``opt_state``: stacked (leading axis K). ``key``: the members' shuffle keys,
    (K, 2) (raw) or (K,) (typed); with ``shared_batches`` ONE key, the same minibatches for
    all members. X (n[0], m), Y (n[L], m) are shared. Metrics have fields of shape
    (K, m // batch_size). Member k's result is that of
    ``step.make_train_epoch(net, optimizer, batch_size)`` on member k's slices: the same
    permutation (:func:`jaxmlp.train.shuffle.epoch_batches`), then ``lax.scan`` over the
    minibatches of ``vmap`` of the same update (F1)-(F3), (B1)-(B4), optax.

    Each step gathers the members' minibatches as ROWS of X^T (m, n[0]) (contiguous
    n[0]-vectors; (K, b, n[0]), then viewed as (K, n[0], b)) rather than as K strided
    gathers of columns of X; the numbers are the same.

    The same (network, optimizer object, batch size, ``shared_batches``, ``permutation``,
    compute dtype) returns the same jitted epoch, whose compiled programs are reused (as
    :func:`jaxmlp.train.step.make_train_epoch`'s): fitting again compiles nothing new.
    """
    net = checks.require_network(net)
    optimizer = check_optimizer(optimizer)
    batch_size = checks.positive_int("batch_size", batch_size)
    compute_dtype = checks.compute_dtype(compute_dtype)
    if permutation is not None and not callable(permutation):
        raise TypeError("permutation: expected a function (key, m) -> int array (m,), got "
                        f"{type(permutation).__name__}.")
    shared_batches = bool(shared_batches)
    if step.needs_kfac_factors(optimizer):
        from jaxmlp.quantities.curvature import check_supported

        check_supported(net, "K-FAC", second_order=False)
    args = (net, optimizer, batch_size, shared_batches, permutation, compute_dtype)
    try:
        return _cached_ensemble_epoch(*args)
    except TypeError:  # an argument that cannot be hashed: no reuse, the same function
        return _ensemble_epoch_program(*args)


def _ensemble_epoch_program(net, optimizer, batch_size, shared_batches, permutation,
                            compute_dtype):
    """The jitted epoch of :func:`make_ensemble_epoch` for checked arguments."""

    def update(p, o, X_s, Y_s):
        return step.apply_update(net, optimizer, p, o, X_s, Y_s, compute_dtype)

    @jax.jit
    def epoch(params, opt_state, key, X, Y):
        X, Y = checks.check_problem(net, member(params, 0), X, Y)
        m = X.shape[1]
        if shared_batches:
            checks.prng_key(key)
            idx = epoch_batches(key, m, batch_size, permutation)  # (S, b)
        else:
            jax.vmap(checks.prng_key)(key)
            idx = jax.vmap(lambda k: epoch_batches(k, m, batch_size, permutation))(key)
            idx = jnp.swapaxes(idx, 0, 1)  # (S, K, b)
        XT, YT = X.T, Y.T  # (m, n[0]), (m, n[L]): a minibatch is a gather of rows

        def body(carry, idx_s):
            p, o = carry
            X_s = jnp.swapaxes(jnp.take(XT, idx_s, axis=0), -1, -2)  # ([K,] n[0], b)
            Y_s = jnp.swapaxes(jnp.take(YT, idx_s, axis=0), -1, -2)  # ([K,] n[L], b)
            axes = None if shared_batches else 0
            p, o, metrics = jax.vmap(update, in_axes=(0, 0, axes, axes))(p, o, X_s, Y_s)
            return (p, o), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), idx)
        return params, opt_state, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), metrics)

    return epoch


# One jitted epoch per (network, optimizer object, batch size, ...), as
# jaxmlp.train.step._cached_epoch: fit(..., ensemble=K) called again reuses its programs.
_cached_ensemble_epoch = functools.lru_cache(maxsize=64)(_ensemble_epoch_program)


_split_keys = jax.jit(jax.vmap(lambda k: tuple(jax.random.split(k))))


# ----------------------------------------------------------------------------- prediction


def _member_outputs(net: Network, params, X: Array) -> Array:
    return jax.vmap(lambda p: recurrences.forward_pass(net, p, X)[0])(params)  # (K, n[L], m)


@jax.jit
def _mean0(A):
    return jnp.mean(A, axis=0)


_outputs_jit = jax.jit(_member_outputs, static_argnums=0)


def ensemble_predict(net: Network, params: Any, X: Any) -> Array:
    """The averaged prediction (1/K) sum_k A[L]_k, (n[L], m), of the members' (F1)-(F2)."""
    ensemble_size(net, params)
    X = checks.check_X(net, X, jnp.result_type(jax.tree.leaves(params)[0]))
    check_data(net, X, None)  # concrete X: finite (a ValueError naming X)
    return _mean0(_outputs_jit(net, params, X))


def _cost_and_metrics(net: Network, params, X: Array, Y: Array) -> tuple[dict, dict]:
    members = jax.vmap(lambda p: cost_and_metrics_kernel(net, p, X, Y))(params)
    A = jnp.mean(_member_outputs(net, params, X), axis=0)
    ens = {"cost": jnp.mean(net.cost_fn.loss_from_output(A, Y)), **output_metrics(net, A, Y)}
    return members, ens


_cost_and_metrics_jit = jax.jit(_cost_and_metrics, static_argnums=0)


def ensemble_cost_and_metrics(net: Network, params: Any, X: Any, Y: Any, *,
                              check_finite: bool = True) -> dict:
    """Members' and ensemble's cost and metrics on a set X (n[0], m), Y (n[L], m).

    Returns ``{"members": {name: (K,) or (K, ...)}, "ensemble": {name: ...}}``: the metrics
    of :func:`jaxmlp.train.metrics.cost_and_metrics` for every member, and for the averaged
    prediction A = (1/K) sum_k A[L]_k (its cost (F3) is the network's cost on A,
    :meth:`jaxmlp.nn.costs.Cost.loss_from_output`).
    """
    ensemble_size(net, params)
    X, Y = checks.check_problem(net, member(params, 0), X, Y)
    if check_finite:
        checks.check_finite(X=X, Y=Y)
    members, ens = _cost_and_metrics_jit(net, params, X, Y)
    return {"members": members, "ensemble": ens}


def summary_row(name: str, ev: dict) -> dict:
    """History entries of one evaluated set: ``<name>_<metric>`` (mean over members),
    ``_std`` (their spread), ``_min``, ``_max``, ``_ensemble`` (the averaged prediction) and
    ``_members`` (the list)."""
    row = {}
    for k, v in ev["members"].items():
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 1:
            continue
        row[f"{name}_{k}"] = float(np.mean(v))
        row[f"{name}_{k}_std"] = float(np.std(v))
        row[f"{name}_{k}_min"] = float(np.min(v))
        row[f"{name}_{k}_max"] = float(np.max(v))
        row[f"{name}_{k}_ensemble"] = float(ev["ensemble"][k])
        row[f"{name}_{k}_members"] = v.tolist()
    return row


# ----------------------------------------------------------------------------- training loop


@jax.jit
def _members_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1)
                              for a in jax.tree.leaves(tree)]), axis=0)


def fit_ensemble(
    net: Network,
    params: Any,
    optimizer: Any,
    X: Any,
    Y: Any,
    *,
    epochs: int,
    batch_size: int,
    key: Any,
    ensemble: Optional[int] = None,
    learning_rates: Any = None,
    shared_batches: bool = False,
    eval_sets: Optional[Mapping[str, tuple]] = None,
    state: Optional[TrainState] = None,
    history: Optional[list] = None,
    on_epoch_end: Optional[Callable[[TrainState, dict], Optional[bool]]] = None,
    explode_factor: Optional[float] = monitor.DEFAULT_EXPLODE_FACTOR,
    progress: bool = False,
    progress_desc: str = "ensemble",
    compute_dtype=None,
    permutation=None,
) -> monitor.FitResult:
    """:func:`jaxmlp.train.loop.fit` for K stacked members (``params`` from :func:`init_ensemble`).

    Arguments as :func:`jaxmlp.train.loop.fit`, plus:
      ensemble: K (checked against the parameters' leading axis), or None to read it there.
      learning_rates: None, or K rates (needs :func:`make_ensemble_optimizer`-style state);
        with ``state``, only the rates the state carries (other ones are refused).
      shared_batches: all members draw the same minibatches from ``key``; otherwise member
        k's shuffle key is ``member_keys(key, K)[k]`` (``key`` a single key), or ``key[k]``
        when ``key`` is already K keys. A resumed ``state`` must be resumed the way it was
        trained (``state.key`` one key, or K keys).

    The optimizer may be a :class:`jaxmlp.train.kfac.KFAC`: the vmapped step computes each
    member's Kronecker factors from its own minibatch sweep, so member k trains as its own
    K-FAC run (``tests/test_fit_edges.py`` checks it in float64).

    One compiled call per epoch trains all members, in the loop every run goes through
    (:func:`jaxmlp.train.epoch_loop.run_epochs`). The run stops (status ``"diverged"``,
    last good state kept) as soon as ANY member's minibatch cost or gradient becomes
    non-finite or explodes; the message names the member. History rows hold
    ``running_cost`` (mean over members), ``running_cost_members``, and for every set the
    entries of :func:`summary_row`.
    """
    net, epochs, explode_factor = monitor.check_loop_args(net, epochs, explode_factor,
                                                          on_epoch_end)
    batch_size = checks.positive_int("batch_size", batch_size)
    if ensemble is not None:
        ensemble = checks.positive_int("ensemble", ensemble, _MEMBERS)
    shared_batches = bool(shared_batches)
    if state is None:
        K = ensemble_size(net, params)
        if ensemble is not None and ensemble != K:
            raise ValueError(f"ensemble: expected K = {K}, the leading axis of params, got "
                             f"{ensemble}.")
        key = _member_shuffle_keys(key, K, shared_batches)
        opt_state = init_opt_state(optimizer, params, learning_rates)
        state = TrainState(params, opt_state, key, 0)
    elif not isinstance(state, TrainState):
        raise TypeError(f"state: expected a jaxmlp.train.step.TrainState or None, got "
                        f"{type(state).__name__}.")
    else:
        K = ensemble_size(net, state.params, "state.params")
        if ensemble is not None and ensemble != K:
            raise ValueError(f"ensemble: expected K = {K}, the leading axis of state.params, "
                             f"got {ensemble}.")
        state = state._replace(key=_resumed_keys(state.key, K, shared_batches))
        if learning_rates is not None:
            _check_resumed_rates(learning_rates, state.opt_state, K)
    history = monitor.check_history(history, state.epoch)
    X, Y, eval_sets = monitor.check_run_data(net, member(state.params, 0), X, Y, eval_sets)
    epoch_fn = make_ensemble_epoch(net, optimizer, batch_size, shared_batches=shared_batches,
                                   permutation=permutation, compute_dtype=compute_dtype)

    def diagnose_members(epoch, costs, gnorms, params, baselines):
        ok = np.asarray(_members_finite(params))
        for k in range(K):
            problem = monitor.diagnose(epoch, costs[k], gnorms[k], bool(ok[k]), baselines[k],
                                       explode_factor)
            if problem is not None:
                return f"member {k} of {K} (counting from 0): {problem}"
        return None

    def cost_entries(costs):  # costs (K, steps)
        member_costs = costs.mean(axis=1)
        return {"running_cost": float(np.mean(member_costs)),
                "running_cost_members": member_costs.tolist(),
                "first_cost": float(np.mean(costs[:, 0])),
                "first_cost_members": costs[:, 0].tolist()}

    def set_entries(name, params, Xe, Ye):
        members, ens = _cost_and_metrics_jit(net, params, Xe, Ye)
        return summary_row(name, {"members": members, "ensemble": ens})

    plan = EpochPlan(
        epoch_fn=epoch_fn,
        split_key=step.split_key_kernel if shared_batches else _split_keys,
        baseline=lambda costs: [abs(float(c[0])) if math.isfinite(c[0]) else math.inf
                                for c in costs],
        baseline_entry="first_cost_members", diagnose=diagnose_members,
        cost_entries=cost_entries, set_entries=set_entries)
    return run_epochs(plan, state, X, Y, epochs=epochs, eval_sets=eval_sets, history=history,
                      on_epoch_end=on_epoch_end, progress=progress, progress_desc=progress_desc)


def _key_kind(key: Any, K: int) -> Optional[str]:
    """'single' for one PRNG key, 'members' for K keys ((K, 2) raw or (K,) typed), else None."""
    shape, dtype = tuple(getattr(key, "shape", ())), getattr(key, "dtype", None)
    if dtype is None:
        return None
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return {(): "single", (K,): "members"}.get(shape)
    if dtype == jnp.uint32:
        return {(2,): "single", (K, 2): "members"}.get(shape)
    return None


def _resumed_keys(key: Any, K: int, shared: bool) -> Array:
    """The shuffle key(s) of a resumed state: ONE key with ``shared_batches``, else the K
    members' keys; a state trained the other way is refused naming both arguments."""
    kind = _key_kind(key, K)
    if shared and kind == "members":
        raise ValueError(
            f"state.key: holds the {K} members' own shuffle keys (shape {tuple(key.shape)}): the "
            f"state was trained without shared batches, and shared_batches=True needs one key. "
            f"Resume it with shared_batches=False.")
    if not shared and kind == "single":
        raise ValueError(
            f"state.key: holds one shuffle key (shape {tuple(key.shape)}), not one per member "
            f"(shape ({K}, 2) or ({K},)): the state was trained with shared batches. Resume it "
            f"with shared_batches=True.")
    if shared:
        return checks.prng_key(key, "state.key")
    if kind is None:
        raise ValueError(
            f"state.key: expected the {K} members' shuffle keys, uint32 of shape ({K}, 2) or "
            f"typed of shape ({K},) (or one key with shared_batches=True), got "
            f"{type(key).__name__} of shape {tuple(getattr(key, 'shape', ()))}.")
    return key


def _check_resumed_rates(learning_rates: Any, opt_state: Any, K: int) -> None:
    """``learning_rates`` given with a resumed state: the state carries its members' rates
    (``opt_state.hyperparams["learning_rate"]``); other rates are refused, not dropped."""
    lrs = _learning_rates(learning_rates, K)
    hp = getattr(opt_state, "hyperparams", None)
    held = None
    if isinstance(hp, dict) and "learning_rate" in hp:
        held = np.asarray(hp["learning_rate"], dtype=np.float64)
        if held.shape == (K,) and np.allclose(held, lrs, rtol=1e-6, atol=0):
            return
    got = "no learning rates" if held is None else f"the rates {held.tolist()}"
    raise ValueError(
        f"learning_rates: a resumed state carries its members' rates in state.opt_state "
        f"({got}); leave learning_rates out to go on with them (given {lrs.tolist()}), or, to "
        f"change them, replace state.opt_state.hyperparams['learning_rate'] (shape ({K},)).")


def _member_shuffle_keys(key: Any, K: int, shared: bool) -> Array:
    if shared:
        return checks.prng_key(key)
    if hasattr(key, "dtype") and key.dtype == jnp.uint32 and tuple(key.shape) == (K, 2):
        return key
    if (hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            and tuple(key.shape) == (K,)):
        return key
    return member_keys(key, K)
