"""Optimizers by name: the usual optax transformations, schedules, K-FAC, and the checks of
an optimizer and of its state.

* :func:`make_optimizer` -- ``"sgd"`` (theta <- theta - eta dJ/dtheta, the seeds' rule),
  momentum, Nesterov, Adam, AdamW, RMSprop, K-FAC, with a schedule and weight decay on the
  W[l] only;
* :func:`check_optimizer`, :func:`check_opt_state` -- an optax ``GradientTransformation``,
  and a state that has the structure of ``optimizer.init(params)``.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from jaxmlp.nn import checks

__all__ = ["OPTIMIZERS", "SCHEDULES", "check_opt_state", "check_optimizer", "make_optimizer"]

#: Optimizer names accepted by :func:`make_optimizer`.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "kfac")
#: Learning-rate schedules accepted by :func:`make_optimizer`.
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _wd_mask(params):
    """Weight decay on the weights W[l] only, never on the biases b[l]."""
    return checks.like_params(params, [{"W": True, "b": False} for _ in params])


def _learning_rate(learning_rate: Any) -> Any:
    """eta > 0 as a float; a 0-d floating array (a rate held in an optimizer state, possibly
    traced) unchanged."""
    if isinstance(learning_rate, (jax.Array, jax.core.Tracer)) and not isinstance(
            learning_rate, numbers.Real):
        if learning_rate.ndim != 0 or not jnp.issubdtype(learning_rate.dtype, jnp.floating):
            raise TypeError(f"learning_rate: expected a number > 0 or a 0-d floating array, got "
                            f"an array of shape {tuple(learning_rate.shape)} and dtype "
                            f"{learning_rate.dtype}.")
        return learning_rate
    return checks.real_number("learning_rate", learning_rate, low=0, low_open=True)


def make_optimizer(
    name: str,
    learning_rate: Optional[float],
    *,
    schedule: str = "constant",
    total_steps: Optional[int] = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    damping: float = 1e-3,
    inverse_every: int = 20,  # jaxmlp.train.kfac.DEFAULTS
    kfac_kind: str = "mc",
    kfac_kl_clip: Any = "auto",
    kfac_curvature_every: int = 20,  # jaxmlp.train.kfac.DEFAULTS
    kfac_adaptive: bool = False,
    kfac_adaptive_damping: bool = False,
) -> optax.GradientTransformation:
    """The usual optax optimizers by name.

    Arguments:
      name: one of :data:`OPTIMIZERS`: ``"sgd"`` (theta <- theta - eta g, the seeds' rule),
        ``"momentum"`` / ``"nesterov"`` (heavy-ball / Nesterov with ``momentum``), ``"adam"``,
        ``"adamw"`` (Adam with decoupled weight decay), ``"rmsprop"``, ``"kfac"``
        (:func:`jaxmlp.train.kfac.kfac`, no momentum unless ``kfac_adaptive``; the train
        step and epoch compute its Kronecker factors (H6) from the same forward pass as the
        gradient).
      learning_rate: eta > 0, the peak value when a schedule is used (None exactly for
        ``"kfac"`` with ``kfac_adaptive``, whose quadratic model chooses it); or a 0-d floating
        array, possibly traced, for a rate held in the optimizer's state
        (``optax.inject_hyperparams(make_optimizer)``, as
        :func:`jaxmlp.train.ensemble.make_ensemble_optimizer` does): its value is then the
        caller's to check.
      schedule: one of :data:`SCHEDULES`: constant eta; cosine decay from eta to 0 over
        ``total_steps``; linear warm-up over the first 5 % of ``total_steps`` then cosine.
      total_steps: number of updates of the whole run (needed by the schedules; refused with
        ``"constant"``, which would ignore it).
      weight_decay: lambda >= 0, applied to the weights W[l] only (not b[l]): decoupled for
        ``adamw``, and for the other optimizers added to the gradient (lambda W, the gradient
        of the L2 penalty (lambda/2) ||W||^2) before the optimizer sees it.
      momentum: the momentum coefficient of ``"momentum"`` and ``"nesterov"``, in [0, 1);
        another value with another optimizer is refused (it would be ignored).
      damping, inverse_every, kfac_kind, kfac_kl_clip, kfac_curvature_every: ``"kfac"`` only:
        Tikhonov damping, refresh of the factors' inverses every k steps, the factors' kind
        ("mc", "exact", "empirical"), the KL clip c ("auto", None: no clipping) and the
        statistics every k steps of :func:`jaxmlp.train.kfac.kfac` (same defaults).
      kfac_adaptive: ``"kfac"``: learning rate and momentum from the quadratic model (K5)
        (``learning_rate`` must then be None); kfac_adaptive_damping: Levenberg-Marquardt
        damping (K6).

    Returns:
      an ``optax.GradientTransformation``.
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}.")
    if not isinstance(kfac_adaptive, bool):
        raise TypeError(f"kfac_adaptive: expected True or False, got {kfac_adaptive!r}.")
    if name != "kfac":  # K-FAC's options would be dropped without a word
        given = {"damping": damping, "inverse_every": inverse_every, "kfac_kind": kfac_kind,
                 "kfac_kl_clip": kfac_kl_clip, "kfac_curvature_every": kfac_curvature_every,
                 "kfac_adaptive": kfac_adaptive, "kfac_adaptive_damping": kfac_adaptive_damping}
        defaults = make_optimizer.__kwdefaults__  # this signature's own defaults
        for arg, value in given.items():
            if value is not defaults[arg] and value != defaults[arg]:
                raise ValueError(f"{arg}: a K-FAC option, only with name='kfac'; got "
                                 f"{arg}={value!r} with {name!r}.")
    if name not in ("momentum", "nesterov") and momentum != make_optimizer.__kwdefaults__[
            "momentum"]:  # would be dropped without a word, e.g. ("sgd", eta, momentum=0.5)
        raise ValueError(f"momentum: used by 'momentum' and 'nesterov' only; got "
                         f"momentum={momentum!r} with {name!r} (for heavy-ball SGD pass "
                         f"name='momentum').")
    if total_steps is not None and schedule == "constant":
        raise ValueError(f"total_steps: the horizon of a schedule, used with schedule='cosine' "
                         f"or 'warmup_cosine' only; got total_steps={total_steps!r} with "
                         f"schedule='constant'.")
    if name == "kfac" and kfac_adaptive:
        if learning_rate is not None:
            raise ValueError(f"learning_rate: K-FAC's quadratic model chooses it with "
                             f"kfac_adaptive=True; pass None, got {learning_rate!r}.")
        if schedule != "constant":
            raise ValueError(f"schedule: K-FAC's quadratic model chooses the learning rate with "
                             f"kfac_adaptive=True; expected 'constant', got {schedule!r}.")
        from jaxmlp.train import kfac

        return kfac.kfac(None, damping=damping, inverse_every=inverse_every, kind=kfac_kind,
                         weight_decay=float(checks.real_number("weight_decay", weight_decay,
                                                               low=0)),
                         kl_clip=None if kfac_kl_clip == "auto" else kfac_kl_clip,
                         curvature_every=kfac_curvature_every, adaptive_lr=True,
                         adaptive_momentum=True, adaptive_damping=kfac_adaptive_damping)
    learning_rate = _learning_rate(learning_rate)
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {list(SCHEDULES)}, got {schedule!r}.")
    weight_decay = checks.real_number("weight_decay", weight_decay, low=0)
    momentum = checks.real_number("momentum", momentum, low=0, high=1, high_open=True)
    if schedule != "constant":
        if total_steps is None:
            raise ValueError(f"total_steps: expected a positive integer for schedule {schedule!r} "
                             "(the number of updates of the whole run), got None.")
        total_steps = checks.positive_int("total_steps", total_steps)
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
                         weight_decay=float(weight_decay), kl_clip=kfac_kl_clip,
                         curvature_every=kfac_curvature_every,
                         adaptive_damping=kfac_adaptive_damping)
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
    """``optimizer`` unchanged when it has ``.init`` and ``.update`` (an optax
    ``GradientTransformation``); TypeError naming ``optimizer`` otherwise."""
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            "optimizer: expected an optax.GradientTransformation (with .init and .update), "
            f"got {type(optimizer).__name__}; e.g. optax.sgd(0.1) or jaxmlp.train."
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


_LEAF = jax.tree.structure(0)


def _describe(node: Any) -> str:
    """One node of a pytree for error messages: its container type and size (``list of 2``,
    ``dict with keys ['W', 'b']``, ``ScaleByAdamState(count, mu, nu)``), or an array's shape
    and dtype."""
    if node is None:
        return "None"
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return f"{type(node).__name__}({', '.join(node._fields)})"
    if isinstance(node, (tuple, list)):
        return f"{type(node).__name__} of {len(node)}"
    if isinstance(node, dict):
        return f"dict with keys {list(node)}"
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        return f"an array of shape {tuple(node.shape)} {node.dtype}"
    if jax.tree.structure(node) == _LEAF:
        return f"a leaf {type(node).__name__}"
    return type(node).__name__


def _children(node: Any) -> tuple[list, Any]:
    """The (key path string, child) pairs of one pytree node and its one-level structure."""
    pairs, tree = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    return [(jax.tree_util.keystr(path), child) for path, child in pairs], tree


def _first_difference(want: Any, got: Any, path: str = "") -> Optional[tuple[str, str, str]]:
    """``(path, expected, got)`` at the first node (depth first, in flattening order) where
    the trees ``want`` and ``got`` differ in container type, keys or length; None when their
    structures agree (leaves are compared by the caller)."""
    want_leaf = jax.tree.structure(want) == _LEAF
    got_leaf = jax.tree.structure(got) == _LEAF
    if want_leaf and got_leaf:
        return None
    if want_leaf or got_leaf or type(want) is not type(got):
        return path, _describe(want), _describe(got)
    (w_kids, w_tree), (g_kids, g_tree) = _children(want), _children(got)
    if [k for k, _ in w_kids] != [k for k, _ in g_kids]:
        return path, _describe(want), _describe(got)
    for (key, w), (_, g) in zip(w_kids, g_kids):
        found = _first_difference(w, g, path + key)
        if found is not None:
            return found
    if w_tree != g_tree:  # same children, other node data (e.g. a static field)
        return path, str(w_tree), str(g_tree)
    return None


def check_opt_state(optimizer: optax.GradientTransformation, params: Any, opt_state: Any) -> None:
    """Raises ValueError if ``opt_state`` is not a state of ``optimizer`` for ``params``.

    Compares the tree structure, shapes and dtypes with ``optimizer.init(params)`` (evaluated
    abstractly, nothing is computed); works on concrete and traced values alike (the step
    and epoch functions call it at trace time, so it costs nothing per call). A structure
    that differs is reported at the first node where it does (its path, e.g.
    ``opt_state[0].mu``, and the two containers: ``expected list of 2, got tuple of 2``).
    """
    want = jax.eval_shape(optimizer.init, params)
    if jax.tree.structure(want) != jax.tree.structure(opt_state):
        where = _first_difference(want, opt_state)
        first = "" if where is None else (f" they first differ at opt_state{where[0]}: "
                                          f"expected {where[1]}, got {where[2]};")
        raise ValueError(
            f"opt_state: expected the state of this optimizer for these params, "
            f"optimizer.init(params) = {_outline(want)}, got {_outline(opt_state)};{first} was "
            "it made by another optimizer (or for other params)? Use opt_state = "
            "optimizer.init(params)."
        )
    got_leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    for (path, w), (_, g) in zip(jax.tree_util.tree_flatten_with_path(want)[0], got_leaves):
        g_shape, g_dtype = tuple(getattr(g, "shape", ())), jnp.result_type(g)
        if g_shape != tuple(w.shape) or g_dtype != w.dtype:
            raise ValueError(
                f"opt_state{jax.tree_util.keystr(path)}: expected shape {tuple(w.shape)} "
                f"{w.dtype} as in optimizer.init(params), got shape {g_shape} {g_dtype}."
            )
