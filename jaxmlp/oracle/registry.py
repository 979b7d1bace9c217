"""Adding activation functions and costs you derived yourself, checked before they are used.

::

    jaxmlp.register_activation("mish", mish, mish_prime)        # verified, then usable by name
    net = jaxmlp.Network((64, 128, 10), ("mish", "softmax"), "categorical_cross_entropy")

Registration runs :func:`jaxmlp.oracle.verification.check_activation_rule` (or
:func:`~jaxmlp.oracle.verification.check_cost_rule`): the derivative you wrote is compared with
autodiff of your forward map (the oracle) at random points, at saturation (|z| up to 500) and
on both sides of the kink at z = 0, in float64 and in float32. A rule that disagrees anywhere,
or gives NaN or infinity, is refused with a ValueError that carries the table of errors, and
nothing is registered. A name that is already taken (built-in or registered) is refused, unless
``replace=True`` replaces an earlier registration (never a built-in).

Once registered, the rule is an entry of :data:`jaxmlp.ACTIVATIONS` / :data:`jaxmlp.COSTS`
like the built-ins, so every part of the library that takes a name takes it: ``Network``,
``init_params`` (its ``init`` scheme), ``forward``/``backward`` ((F2) and (B4) use your
rule, never autodiff), ``verification.check_gradients``, the single-column and per-example
quantities, and ``experiments/train.py --activation NAME`` (with ``--register FILE``, a
Python file that registers it). Registrations live in the process: a saved model that uses
one loads in a process that registered the same name with the same definition. The model
records each registered rule's fingerprint (:func:`rule_fingerprints`: its values at fixed
points, in float64, rounded to 6 significant digits), and loading compares the rule now
registered under that name with it (:func:`check_rule_fingerprints`; both in
:mod:`jaxmlp.nn.costs`): another function under
the same name is refused, as it would give other predictions.
"""

from __future__ import annotations

from typing import Callable, Optional

from jaxmlp.nn.activations import ACTIVATIONS, Activation
from jaxmlp.nn.costs import (BUILTIN_ACTIVATION_NAMES, BUILTIN_COST_NAMES, COSTS, Cost,
                             check_rule_fingerprints, rule_fingerprints)

__all__ = ["check_rule_fingerprints", "is_registered", "register_activation", "register_cost",
           "rule_fingerprints"]


def _check_name(name, registry: dict, what: str, replace=False, builtin=frozenset()) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}.")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name: expected letters, digits, '_' or '-', got {name!r}.")
    if not isinstance(replace, bool):
        raise TypeError(f"replace: expected True or False, got {replace!r}.")
    if name in builtin:
        raise ValueError(f"name: the {what} {name!r} is already registered (built in, never "
                         f"replaced); choose another name (registered: {sorted(registry)}).")
    if name in registry and not replace:
        raise ValueError(f"name: the {what} {name!r} is already registered; choose another name, "
                         f"or pass replace=True to replace it (registered: {sorted(registry)}).")


def _store(registry: dict, name: str, rule) -> None:
    """``registry[name] = rule``; when it replaces an earlier rule, JAX's compiled functions
    are cleared (jax.clear_caches): a Network is a static jit argument compared by its names,
    so a function compiled with the earlier rule would otherwise be reused."""
    replaced = name in registry
    registry[name] = rule
    if replaced:
        import jax

        jax.clear_caches()


def register_activation(name: str, forward: Callable, derivative: Callable, *,
                        second_derivative: Optional[Callable] = None, init: str = "he",
                        elementwise: bool = True, check: bool = True,
                        replace: bool = False) -> Activation:
    """Verifies a hand-derived activation rule and adds it to :data:`jaxmlp.ACTIVATIONS`.

    Arguments:
      name: the new name (letters, digits, ``_``, ``-``); a taken name is refused (a
        built-in one always; a registered one unless ``replace=True``).
      forward: ``Z -> A = g(Z)`` in jax.numpy (F2), acting on axis 0 (units): shapes (n,)
        and (n, m).
      derivative: element-wise rules: ``Z -> g'(Z)`` or ``(Z, A) -> g'(Z)`` (A = g(Z) may be
        reused), so that (B4) is dZ = dA * g'(Z). Otherwise (``elementwise=False``): the
        backward rule ``(dA, Z, A) -> dZ`` itself, a Jacobian-vector product over axis 0.
      second_derivative: optional ``Z -> g''(Z)`` (element-wise rules), verified as well and
        kept on the record.
      init: the default initialisation scheme of layers using it (``jaxmlp.nn.SCHEMES``).
      elementwise: whether g acts on each unit separately (diagonal Jacobian).
      check: run the verification (default True; False registers an unchecked rule, for
        rules whose kinks are away from 0 and checked by other means).
      replace: True replaces an earlier registration of ``name`` once the new rule is
        verified (e.g. to load a model trained with another definition: the one of its
        training), and clears JAX's compiled functions (``jax.clear_caches``), which may hold
        the earlier rule.

    Returns:
      the registered :class:`~jaxmlp.Activation`.

    Raises:
      ValueError with the table of errors when the rule disagrees with autodiff, or for a
      taken name or an unknown ``init``; TypeError for arguments of the wrong type.
    """
    from jaxmlp.nn.init import SCHEMES
    from jaxmlp.oracle.verification import check_activation_rule, takes_activation_output

    _check_name(name, ACTIVATIONS, "activation", replace, _BUILTIN_ACTIVATIONS)
    for arg, fn in (("forward", forward), ("derivative", derivative)):
        if not callable(fn):
            raise TypeError(f"{arg}: expected a callable, got {type(fn).__name__}.")
    if second_derivative is not None and not callable(second_derivative):
        raise TypeError(f"second_derivative: expected a callable or None, got "
                        f"{type(second_derivative).__name__}.")
    if not isinstance(elementwise, bool):
        raise TypeError(f"elementwise: expected True or False, got {elementwise!r}.")
    if second_derivative is not None and not elementwise:
        raise ValueError("second_derivative: only for element-wise rules (elementwise=True).")
    if init not in SCHEMES:
        raise ValueError(f"init: expected one of {list(SCHEMES)}, got {init!r}.")
    if check:
        report = check_activation_rule(forward, derivative, second_derivative=second_derivative,
                                       elementwise=elementwise)
        if not report.passed:
            failing = {r.quantity for r in report.rows if not r.max_error <= r.tol}
            if failing == {"g(z)"}:  # the forward map itself (non-finite where it saturates)
                raise ValueError(f"forward: the forward map of {name!r} fails its own check "
                                 f"(non-finite or inaccurate values); the derivative rows "
                                 f"pass; nothing was registered.\n{report.table()}")
            arg = "second_derivative" if failing == {"g''(z)"} else "derivative"
            raise ValueError(f"{arg}: the rule for {name!r} disagrees with autodiff of its "
                             f"forward map; nothing was registered.\n{report.table()}")
    if elementwise:
        if takes_activation_output(derivative):
            backward = lambda dA, Z, A: dA * derivative(Z, A)  # noqa: E731  (B4)
        else:
            backward = lambda dA, Z, A: dA * derivative(Z)  # noqa: E731  (B4)
    else:
        backward = derivative
    second = None
    if second_derivative is not None:
        second = (second_derivative if not takes_activation_output(second_derivative)
                  else (lambda Z: second_derivative(Z, forward(Z))))
    act = Activation(name=name, forward=forward, backward=backward, init=init,
                     elementwise=elementwise, second_derivative=second)
    _store(ACTIVATIONS, name, act)
    return act


def register_cost(name: str, loss: Callable, dloss_dA: Callable, *, unit_range: bool = False,
                  min_outputs: int = 1, max_outputs: Optional[int] = None,
                  check: bool = True, replace: bool = False) -> Cost:
    """Verifies a hand-derived cost and its seed and adds it to :data:`jaxmlp.COSTS`.

    Arguments:
      name: the new name; a taken name is refused (a built-in one always; a registered one
        unless ``replace=True``).
      loss: ``(A, Y) -> L``, the per-example losses summed over the units (axis 0): shape (m,)
        for (n[L], m) inputs, () for one column; J = (1/m) sum_i L_i (F3).
      dloss_dA: ``(A, Y) -> dL/dA`` of A's shape, without the 1/m; the seed of backward is
        dA[L] = (1/m) dL/dA, followed by (B4) of the output activation.
      unit_range: True when the loss needs outputs in (0, 1) (checked at such points; the
        network then needs a sigmoid or softmax output).
      min_outputs, max_outputs: the allowed n[L].
      check: run the verification (default True).
      replace: True replaces an earlier registration of ``name`` (as for
        :func:`register_activation`).

    Returns:
      the registered :class:`~jaxmlp.Cost` (never fused: backward starts at dA[L]).

    Raises:
      ValueError with the table of errors when ``dloss_dA`` disagrees with ``jax.grad`` of
      ``loss`` (naming ``dloss_dA``), when the loss or its ``jax.grad`` is NaN or infinite at
      test points (naming ``loss``: the seed cannot be judged there), or for a taken name;
      TypeError for arguments of the wrong type.
    """
    from jaxmlp.oracle.verification import LOSS_FINITE, check_cost_rule

    _check_name(name, COSTS, "cost", replace, _BUILTIN_COSTS)
    for arg, fn in (("loss", loss), ("dloss_dA", dloss_dA)):
        if not callable(fn):
            raise TypeError(f"{arg}: expected a callable, got {type(fn).__name__}.")
    if isinstance(min_outputs, bool) or not isinstance(min_outputs, int) or min_outputs < 1:
        raise ValueError(f"min_outputs: expected a positive integer, got {min_outputs!r}.")
    if max_outputs is not None and (not isinstance(max_outputs, int) or max_outputs < min_outputs):
        raise ValueError(f"max_outputs: expected None or an integer >= min_outputs, got {max_outputs!r}.")
    if check:
        report = check_cost_rule(loss, dloss_dA, unit_range=bool(unit_range))
        if not report.passed:
            # the loss (or its autodiff) non-finite at test points is the loss's fault, and
            # the seed cannot be judged there: name the loss, not dloss_dA
            bad = [r for r in report.rows if r.quantity == LOSS_FINITE and r.nonfinite]
            if bad:
                where = "; ".join(f"{r.region}: {r.nonfinite} of {r.points} examples"
                                  for r in bad)
                raise ValueError(f"loss: the loss of {name!r} or its autodiff gradient is NaN or "
                                 f"infinite at test points ({where}), where dloss_dA cannot be "
                                 f"judged; write the loss so that it stays finite there (e.g. "
                                 f"log(cosh(x)) as |x| + log1p(exp(-2|x|)) - log(2)); nothing "
                                 f"was registered.\n{report.table()}")
            raise ValueError(f"dloss_dA: the seed of {name!r} disagrees with autodiff of its "
                             f"loss; nothing was registered.\n{report.table()}")
    cost = Cost(name=name, loss=lambda Z, A, Y, g: loss(A, Y), dloss_dA=dloss_dA,
                canonical="", needs_unit_range=bool(unit_range), min_outputs=min_outputs,
                max_outputs=max_outputs)
    _store(COSTS, name, cost)
    return cost


def is_registered(name: str) -> bool:
    """Whether ``name`` is an activation or cost added by :func:`register_activation` or
    :func:`register_cost` in this process (not a built-in one): a process that loads a
    network using it must register it again first."""
    from jaxmlp.nn.activations import ACTIVATIONS as A
    from jaxmlp.nn.costs import COSTS as C

    return ((name in A and name not in _BUILTIN_ACTIVATIONS)
            or (name in C and name not in _BUILTIN_COSTS))


def _unregister(name: str) -> None:
    """Removes a name registered by this module (tests only; built-ins stay)."""
    from jaxmlp.nn.activations import ACTIVATIONS as A
    from jaxmlp.nn.costs import COSTS as C

    for reg, builtin in ((A, _BUILTIN_ACTIVATIONS), (C, _BUILTIN_COSTS)):
        if name in reg and name not in builtin:
            del reg[name]


_BUILTIN_ACTIVATIONS = BUILTIN_ACTIVATION_NAMES
_BUILTIN_COSTS = BUILTIN_COST_NAMES
