"""Cost functions (F3), (C1)-(C3) and mean squared error, with their backward seeds.

Every cost is written per example: ``loss(Z, A, Y, g)`` returns the row of
per-example losses L_i (shape ``(m,)``, or ``()`` for a single column), and
J = (1/m) sum_i L_i. The batched seed of the recurrences is then

    dA[L] = (1/m) dL/dA          (general path, followed by (B4) of g[L])
    dZ[L] = (1/m) (A[L] - Y)     (fused path, for the canonical pairs below)

Conventions (all documented in docs/rules.md):

* (C1) binary_cross_entropy: n[L] = 1, L_i = -(y log a + (1 - y) log(1 - a)).
* (C2) categorical_cross_entropy: n[L] >= 2, columns of Y sum to 1,
  L_i = -sum_rows(y * log a).
* (C3) multilabel_cross_entropy: the (C1) loss summed over the n[L] units.
* mean_squared_error: L_i = (1/2) sum_rows (a - y)^2, so J = (1/(2m)) sum (A - Y)^2
  and dA[L] = (1/m)(A - Y): the 1/2 convention, which makes the fused seed of the
  (linear, mean_squared_error) pair the same (1/m)(A - Y) as the other three.

Target domains (:meth:`Cost.check_targets`, called by the training and verification entry
points on concrete Y; the formulas above are only a cost on these):

* binary_cross_entropy, multilabel_cross_entropy: every entry of Y in [0, 1] (0/1 labels or
  probabilities);
* categorical_cross_entropy: entries >= 0 and every column summing to 1 within
  :func:`categorical_sum_tolerance` (one-hot or soft labels);
* mean_squared_error: any finite value.

Every domain requires finite entries.

Cross-entropy costs read log A and log(1 - A) from the output activation
(``Activation.log_output``), i.e. from Z[L] through log-sigmoid / log-softmax, so a
saturated output (|Z[L]| = 1e3) still gives a finite cost. Cross-entropy needs an
output activation with values in (0, 1): sigmoid or softmax.

:func:`rule_fingerprints` / :func:`check_rule_fingerprints`: the registered (not built-in)
activations and cost of a saved model, recorded by their values at fixed points (an
activation's g(z), g'(z) and g''(z) if given; a cost's L and dL/dA at fixed (A, Y)), in float64
to 6 significant digits, and compared with the rules registered under those names on load.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn.activations import ACTIVATIONS, Activation
from jaxmlp.nn.host import local_values

Array = jax.Array


class Cost(NamedTuple):
    """A cost f(A[L], Y) written per example.

    Attributes:
      name: registry name.
      loss: ``(Z, A, Y, g) -> L`` per-example losses, summed over axis 0 (units):
        shape ``(m,)`` for ``(n[L], m)`` inputs, ``()`` for one column.
      dloss_dA: ``(A, Y) -> dL/dA``, same shape as A (unscaled: no 1/m).
      canonical: the output activation whose fused seed is dZ[L] = (1/m)(A - Y).
      needs_unit_range: True for cross-entropy costs (outputs must lie in (0, 1)).
      min_outputs, max_outputs: allowed n[L] (max None: unbounded).
      domain: the targets the cost is defined on, in words (see the module docstring).
    """

    name: str
    loss: Callable[[Array, Array, Array, Activation], Array]
    dloss_dA: Callable[[Array, Array], Array]
    canonical: str
    needs_unit_range: bool
    min_outputs: int = 1
    max_outputs: int | None = None
    domain: str = "finite values"

    def check_targets(self, Y: Any, *, name: str = "Y", atol: Optional[float] = None) -> None:
        """Raises ValueError naming ``name`` if the targets Y (n[L], m) lie outside the domain.

        Eager only: a traced Y (inside ``jax.jit``) is not inspected. ``atol`` overrides the
        tolerance on categorical column sums (default :func:`categorical_sum_tolerance`).
        """
        if isinstance(Y, jax.core.Tracer):
            return
        _check_domain(self, local_values(Y), name, atol)

    def loss_from_output(self, A: Array, Y: Array) -> Array:
        """Per-example losses L_i, (m,), of an output A (n[L], m) known without its Z[L]
        (an ensemble's averaged prediction): :attr:`loss` itself, with log A and log(1 - A)
        read off A, clamped at the dtype's smallest normal number (so A = 0 or 1 gives a
        large finite loss, not infinity). Unchecked, jittable."""
        return self.loss(A, A, Y, _logs_of_output(A.dtype))


def _logs_of_output(dtype) -> Activation:
    """The logs :attr:`Cost.loss` reads, taken from the output itself (passed as its Z)."""
    tiny = jnp.finfo(dtype).tiny
    return Activation(name="output", forward=None, backward=None, init="", unit_range=True,
                      log_output=lambda A: jnp.log(jnp.maximum(A, tiny)),
                      log1m_output=lambda A, _: jnp.log(jnp.maximum(1 - A, tiny)))


def _bce_loss(Z, A, Y, g: Activation):
    """(C1)/(C3) per example: -sum_rows(Y log A + (1 - Y) log(1 - A)), logs from Z."""
    return -jnp.sum(Y * g.log_output(Z) + (1.0 - Y) * g.log1m_output(Z, A), axis=0)


def _bce_dA(A, Y):
    """(C1)/(C3) seed without 1/m: (1 - Y)/(1 - A) - Y/A."""
    return (1.0 - Y) / (1.0 - A) - Y / A


def _cce_loss(Z, A, Y, g: Activation):
    """(C2) per example: -sum_rows(Y log A), log A from Z."""
    return -jnp.sum(Y * g.log_output(Z), axis=0)


def _cce_dA(A, Y):
    """(C2) seed without 1/m: -(1/A) * Y."""
    return -Y / A


def _mse_loss(Z, A, Y, g: Activation):
    """Per example (1/2) sum_rows (A - Y)^2."""
    return 0.5 * jnp.sum(jnp.square(A - Y), axis=0)


def _mse_dA(A, Y):
    return A - Y


_UNIT = "entries in [0, 1] (0/1 labels or probabilities)"
_SIMPLEX = "entries >= 0, every column summing to 1 (one-hot or soft labels)"

COSTS: dict[str, Cost] = {
    c.name: c
    for c in [
        Cost("binary_cross_entropy", _bce_loss, _bce_dA, "sigmoid", True, 1, 1, _UNIT),
        Cost("categorical_cross_entropy", _cce_loss, _cce_dA, "softmax", True, 2, None, _SIMPLEX),
        Cost("multilabel_cross_entropy", _bce_loss, _bce_dA, "sigmoid", True, 1, None, _UNIT),
        Cost("mean_squared_error", _mse_loss, _mse_dA, "linear", False, 1, None, "finite values"),
    ]
}


def categorical_sum_tolerance(dtype) -> float:
    """How far from 1 a categorical target column may sum: max(1e-6, min(1e-2, 64 eps)).

    1e-6 for float64, 7.6e-6 for float32 (soft labels normalised in float32 pass), 1e-2 for
    the 16-bit floats.
    """
    dtype = jnp.dtype(dtype) if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float64)
    return max(1e-6, min(1e-2, 64 * float(jnp.finfo(dtype).eps)))


def _where(Y: np.ndarray, bad: np.ndarray) -> str:
    """``"[i, j] = v"`` for the first flagged entry."""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"[{', '.join(map(str, idx))}] = {float(Y[idx])!r}"  # every digit: 1.0000001


def _check_domain(cost: Cost, Y: np.ndarray, name: str, atol: Optional[float]) -> None:
    if Y.dtype == np.bool_ or np.issubdtype(Y.dtype, np.integer):
        Y = Y.astype(np.float64)
    if not jnp.issubdtype(Y.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {Y.dtype}.")
    Yf = Y.astype(np.float64)
    what = f"{cost.name} is defined for targets with {cost.domain}"
    nonfinite = ~np.isfinite(Yf)
    if nonfinite.any():
        raise ValueError(f"{name}: expected finite values ({what}); found {int(nonfinite.sum())} "
                         f"NaN or infinite entr{'y' if nonfinite.sum() == 1 else 'ies'}, first at "
                         f"{name}{_where(Yf, nonfinite)}.")
    if cost.name in ("binary_cross_entropy", "multilabel_cross_entropy"):
        bad = (Yf < 0) | (Yf > 1)
        if bad.any():
            raise ValueError(f"{name}: {what}; found {int(bad.sum())} entr"
                             f"{'y' if bad.sum() == 1 else 'ies'} outside [0, 1], first "
                             f"{name}{_where(Yf, bad)}.")
    elif cost.name == "categorical_cross_entropy":
        bad = Yf < 0
        if bad.any():
            raise ValueError(f"{name}: {what}; found {int(bad.sum())} negative entr"
                             f"{'y' if bad.sum() == 1 else 'ies'}, first {name}{_where(Yf, bad)}.")
        tol = categorical_sum_tolerance(Y.dtype) if atol is None else float(atol)
        sums = Yf.sum(axis=0)
        off = np.abs(sums - 1.0) > tol
        if off.any():
            j = int(np.flatnonzero(off)[0])
            raise ValueError(f"{name}: {what}; {int(off.sum())} of {off.size} columns do not sum "
                             f"to 1 within {tol:g}, first column {j} sums to {float(sums[j]):g}.")


def check_target_domain(net, Y: Any, *, name: str = "Y", atol: Optional[float] = None) -> None:
    """``get_cost(net.cost).check_targets(Y)``: ValueError if Y is outside the cost's domain."""
    COSTS[net.cost].check_targets(Y, name=name, atol=atol)


def get_cost(name: str) -> Cost:
    """Returns the registered cost ``name``; raises ValueError naming the choices."""
    if not isinstance(name, str) or name not in COSTS:
        raise ValueError(f"cost: expected one of {sorted(COSTS)}, got {name!r}.")
    return COSTS[name]


# ----------------------------------------------------------------------------- fingerprints
# A saved model records the registered rules it uses by their values at fixed points (not
# their source text), so that loading can tell another function under the same name.

#: The names of the built-in activations and costs (the rules that need no fingerprint).
BUILTIN_COST_NAMES = frozenset(COSTS)
BUILTIN_ACTIVATION_NAMES = frozenset(ACTIVATIONS)

#: The points z of an activation's fingerprint (kinks at 0 stay off them: g'(0) is a convention).
_FINGERPRINT_Z = (-4.0, -2.5, -1.3, -0.6, -0.25, -0.05, 0.05, 0.25, 0.6, 1.3, 2.5, 4.0)
#: Significant digits of the recorded values.
FINGERPRINT_DIGITS = 6
#: The largest |recorded - now| / max(|recorded|, |now|, 1) taken as the same rule.
FINGERPRINT_TOL = 1e-4


def _rounded(values) -> list:
    """float64 values as nested lists, each rounded to :data:`FINGERPRINT_DIGITS` significant
    digits (None where not finite): the same text in every dtype mode and on every machine."""
    a = np.asarray(values, dtype=np.float64)
    flat = [float(f"{v:.{FINGERPRINT_DIGITS}g}") if np.isfinite(v) else None
            for v in a.reshape(-1)]
    return np.array(flat, dtype=object).reshape(a.shape).tolist()


def _activation_points(elementwise: bool, n: int) -> dict:
    """Z (4, 3) of the points z (element-wise rules), or (n, 3) with the units of the layer
    and dA, for a rule with a full Jacobian, whose dZ = J^T dA mixes the units."""
    z = np.asarray(_FINGERPRINT_Z)
    if elementwise:
        return {"Z": z.reshape(4, 3)}
    idx = np.arange(n * 3).reshape(n, 3)
    return {"Z": z[idx % z.size], "dA": z[(5 * idx + 1) % z.size] / 4.0}


def _cost_points(n: int) -> dict:
    """A (n, 3) in (0, 1), its columns summing to 1 when n > 1 (a softmax output), and Y
    (n, 3) of one-hot columns (0/1 targets when n = 1)."""
    raw = 1.0 + np.arange(n * 3).reshape(n, 3) % 5
    A = raw / raw.sum(axis=0) if n > 1 else np.array([[0.2, 0.55, 0.9]])
    Y = (np.arange(n)[:, None] == (np.arange(3) % n)[None, :]).astype(np.float64)
    if n == 1:
        Y = np.array([[1.0, 0.0, 1.0]])
    return {"A": A, "Y": Y}


def _values(kind: str, rule, points: dict) -> dict:
    """The rule's values at ``points``, in float64 (whatever the process's dtype mode):
    activations g(z), dZ = dA g'(z) (B4) (g'(z) for element-wise rules, dA = 1) and g''(z)
    when the rule has it; costs L(A, Y) per example and dL/dA."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        p = {k: jnp.asarray(np.asarray(v, dtype=np.float64)) for k, v in points.items()}
        if kind == "activation":
            Z = p["Z"]
            A = rule.forward(Z)
            out = {"g(z)": A}
            if "dA" in p:
                out["dZ"] = rule.backward(p["dA"], Z, A)
            else:
                out["g'(z)"] = rule.backward(jnp.ones_like(Z), Z, A)
                if rule.second_derivative is not None:
                    out["g''(z)"] = rule.second_derivative(Z)
        else:
            A, Y = p["A"], p["Y"]
            out = {"L": rule.loss_from_output(A, Y), "dL/dA": rule.dloss_dA(A, Y)}
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def rule_fingerprints(net) -> dict:
    """The fingerprints of the registered (not built-in) rules a network uses, for a saved
    model: ``{"activations": {name: record}, "costs": {name: record}}`` (kinds without one
    left out; ``{}`` for built-in rules only). A record holds the fixed points
    (``"points"``: an activation's Z, and dA for a rule with a full Jacobian; a cost's A and
    Y) and the rule's values there (``"values"``, :func:`_values`), computed in float64 and
    rounded to :data:`FINGERPRINT_DIGITS` significant digits: the rule's values, not its
    source text, so the same function written otherwise has the same fingerprint."""
    A, C = ACTIVATIONS, COSTS

    acts, costs = {}, {}
    for l, name in enumerate(net.activations, start=1):
        if name in BUILTIN_ACTIVATION_NAMES or name in acts:
            continue
        act = A[name]
        points = _activation_points(act.elementwise, net.sizes[l])
        acts[name] = {"points": {k: _rounded(v) for k, v in points.items()},
                      "values": {k: _rounded(v) for k, v in _values("activation", act,
                                                                   points).items()}}
    if net.cost not in BUILTIN_COST_NAMES:
        points = _cost_points(net.sizes[-1])
        costs[net.cost] = {"points": {k: _rounded(v) for k, v in points.items()},
                           "values": {k: _rounded(v) for k, v in _values(
                               "cost", C[net.cost], points).items()}}
    return {**({"activations": acts} if acts else {}), **({"costs": costs} if costs else {})}


def check_rule_fingerprints(record) -> None:
    """Compares the rules registered now with the fingerprints ``record`` of
    :func:`rule_fingerprints` (a saved model's): ValueError naming the first rule whose
    values at the recorded points differ (error |recorded - now| / max(|recorded|, |now|, 1)
    above :data:`FINGERPRINT_TOL`), with the largest difference and the fix; ValueError
    "damaged" for a record that is not one. A rule of a recorded name that is not registered
    is left to building the Network."""
    A, C = ACTIVATIONS, COSTS

    def damaged(why):
        return ValueError(f"the rules' fingerprints are damaged ({why}).")

    if not isinstance(record, dict) or set(record) - {"activations", "costs"}:
        raise damaged(f"expected a dict with 'activations' and 'costs', got {record!r:.80}")
    for key, kind, registry in (("activations", "activation", A), ("costs", "cost", C)):
        rules = record.get(key, {})
        if not isinstance(rules, dict):
            raise damaged(f"{key}: {rules!r:.80}")
        for name, rec in rules.items():
            if name not in registry:
                continue
            try:
                points = {k: np.array(v, dtype=np.float64) for k, v in rec["points"].items()}
                want = {k: np.array(v, dtype=np.float64) for k, v in rec["values"].items()}
                if not all(np.all(np.isfinite(v)) for v in points.values()):
                    raise ValueError("points that are not finite numbers")
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise damaged(f"{kind} {name!r}: {e}") from None
            try:
                got = _values(kind, registry[name], points)
            except Exception as e:  # the rule now registered cannot take the recorded points
                raise ValueError(
                    f"the {kind} {name!r} registered in this process is not the one the model "
                    f"was trained with: it fails at the recorded points ({type(e).__name__}: "
                    f"{e}). Register the definition used at training (the file given to "
                    f"train.py --register; in this process: replace=True).") from None
            worst = None  # (error, quantity, index, recorded, now)
            for q in sorted(set(want) & set(got)):
                w, g = want[q], got[q]
                if w.shape != g.shape:
                    raise ValueError(
                        f"the {kind} {name!r} registered in this process is not the one the "
                        f"model was trained with: {q} has shape {g.shape} at the recorded "
                        f"points, {w.shape} at training. Register the definition used at "
                        f"training (the file given to train.py --register; in this process: "
                        f"replace=True).")
                same_nan = np.isnan(w) & ~np.isfinite(g)
                err = np.where(same_nan, 0.0, np.abs(w - g) / np.maximum(
                    np.maximum(np.abs(w), np.abs(g)), 1.0))
                err = np.where(np.isnan(err), np.inf, err)
                i = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else None
                if i is not None and (worst is None or err[i] > worst[0]):
                    worst = (float(err[i]), q, i, float(w[i]), float(g[i]))
            if worst is not None and worst[0] > FINGERPRINT_TOL:
                e, q, i, w, g = worst
                idx = ", ".join(str(int(j)) for j in i)
                at = (f"z = {points['Z'][i]:g}" if kind == "activation" and "dA" not in points
                      else f"Z[{idx}]" if kind == "activation"
                      else f"example {int(i[-1])} (A[:, {int(i[-1])}], Y[:, {int(i[-1])}])")
                raise ValueError(
                    f"the {kind} {name!r} registered in this process is not the one the model "
                    f"was trained with (a different definition under the same name): of the "
                    f"fixed points recorded in the model, the largest difference is in {q} at "
                    f"{at}: {g:.6g} now, {w:.6g} at training (difference {abs(w - g):.6g}, "
                    f"relative error {e:.3g} > {FINGERPRINT_TOL:g}). Register the same "
                    f"definition as at training before loading (the file given to train.py "
                    f"--register, e.g. predict.py --register FILE.py; in this process: "
                    f"jaxmlp.register_{kind}({name!r}, ..., replace=True)).")
