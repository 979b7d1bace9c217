"""Gradient verification: the oracle module.

This is the one module of the package where autodiff appears. Its job is to
cross-check gradients computed by hand-derived recurrences against two independent
references:

* reverse-mode autodiff, ``jax.grad`` of the cost, and
* central finite differences, (J(theta + h e_k) - J(theta - h e_k)) / (2h), for every
  scalar parameter theta_k (or for ``num_directions`` random unit directions when the
  network is large), computed in float64.

Relative error, per parameter array (norm-wise):

    rel(a, b) = ||a - b||_2 / max(||a||_2, ||b||_2)      (0 when both are 0)

Against finite differences, whose rounding noise is absolute (~1e-16 |J| / h per entry),
the denominator is max(||a||, ||b||, 1e-4 ||whole manual gradient||): a parameter array
whose gradient is exactly 0 (behind dead ReLUs, say) is then judged against the noise
level of the whole check, not against itself.

Documented thresholds (``DEFAULT_TOLERANCES``): against autodiff 1e-10 for float64
gradients, 1e-5 for float32, 1e-2 for float16 and 3e-2 for bfloat16; against finite
differences (always evaluated in float64) 1e-6 for float64 gradients, 1e-4 for float32 ones,
whose own rounding is ~1e-7 relative per operation, 1e-2 for float16 (unit roundoff
u = 2^-11 ~ 4.9e-4) and 3e-2 for bfloat16 (u = 2^-8 ~ 3.9e-3). A check passes when every
parameter array is within its threshold.

Below float64 the autodiff reference is computed in the same dtype and carries its own
rounding error, as large as the manual gradient's in ill-conditioned problems (terms that
nearly cancel). When the comparison with it fails, both are measured against the float64
gradient (``jax.grad`` of the same function at the same, exactly converted, point, in
64-bit mode): an array passes when

    rel(manual, g64) <= tol_autodiff   or   rel(manual, g64) <= rel(autodiff, g64),

i.e. the manual gradient is as close to the float64 truth as autodiff in its own dtype (or
within the dtype's tolerance of it). The report's ``reference`` names which reference decided.

Two entry points:

* :func:`check_gradients` for a jaxmlp network (manual = ``jaxmlp.value_and_grad``);
* :func:`check_rule` for any gradient rule a user derived: a scalar function
  ``f(theta)`` and the user's ``grad_f(theta)`` over the same pytree.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.nn import checks
from jaxmlp.nn.network import Network
from jaxmlp.nn.init import init_params
from jaxmlp.nn.propagation import loss, value_and_grad

DEFAULT_TOLERANCES = {
    "autodiff_float64": 1e-10,
    "autodiff_float32": 1e-5,
    "autodiff_float16": 1e-2,
    "autodiff_bfloat16": 3e-2,
    "finite_diff_float64": 1e-6,
    "finite_diff_float32": 1e-4,
    "finite_diff_float16": 1e-2,
    "finite_diff_bfloat16": 3e-2,
}


FD_FLOOR = 1e-4  # see _summarise

#: the reference of a report decided by the same-dtype autodiff gradient
AUTODIFF = "autodiff"
#: the reference of a report decided by the float64 autodiff gradient (the fallback)
FLOAT64_AUTODIFF = "float64 autodiff"


def _default_tol(kind: str, dtype) -> float:
    name = jnp.dtype(dtype).name
    key = f"{kind}_{name}"
    if key not in DEFAULT_TOLERANCES:
        dtypes = sorted({k.rsplit("_", 1)[1] for k in DEFAULT_TOLERANCES})
        arg = "tol_autodiff" if kind == "autodiff" else "tol_finite_diff"
        raise TypeError(f"{arg}: no default tolerance for dtype {name} (defaults exist for "
                        f"{dtypes}); pass {arg} explicitly.")
    return DEFAULT_TOLERANCES[key]


def _tolerance(name: str, value) -> Optional[float]:
    """None (the dtype's default), or a real number >= 0 (infinity: that comparison off)."""
    if value is None:
        return None
    return checks.real_number(name, value, low=0.0, allow_inf=True)


def _require_x64(name: str, dtype) -> None:
    """float64 arrays outside 64-bit mode would be computed in float32: refused, as
    :func:`jaxmlp.init_params` refuses dtype=float64 there."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise TypeError(
            f"{name}: float64 parameters need 64-bit mode; call "
            "jax.config.update('jax_enable_x64', True) first, or run inside "
            "jax.enable_x64(True) (got dtype=float64)."
        )


class ParamError(NamedTuple):
    """Relative errors of one parameter array (e.g. layer 2, "W")."""

    layer: Optional[int]  # 1-based layer for networks, None for a user rule
    name: str  # "W", "b", or the pytree path of a user rule
    shape: tuple
    autodiff: float  # rel(manual, jax.grad)
    finite_diff: float  # rel(manual, finite differences) (NaN if not computed)


class GradCheckReport(NamedTuple):
    """The outcome of a gradient check.

    Attributes:
      errors: one :class:`ParamError` per parameter array.
      max_autodiff, max_finite_diff: the largest relative errors.
      tol_autodiff, tol_finite_diff: the thresholds applied.
      dtype: the dtype the manual and autodiff gradients were compared in.
      fd_mode: ``"full"`` (every coordinate), ``"directions"`` (random directions) or ``"off"``.
      passed: True when every error is within its threshold.
      reference: which autodiff reference decided: :data:`AUTODIFF` (``jax.grad`` in
        ``dtype``) or :data:`FLOAT64_AUTODIFF` (below float64, when the comparison in
        ``dtype`` failed: see the module doc).
      manual_vs_float64, autodiff_vs_float64: with the float64 reference, the largest
        rel(manual, g64) and rel(autodiff in dtype, g64) over the arrays (NaN otherwise).
    """

    errors: tuple
    max_autodiff: float
    max_finite_diff: float
    tol_autodiff: float
    tol_finite_diff: float
    dtype: str
    fd_mode: str
    passed: bool
    reference: str = AUTODIFF
    manual_vs_float64: float = float("nan")
    autodiff_vs_float64: float = float("nan")

    def table(self) -> str:
        """A plain-text table of the per-array errors."""
        rows = [f"{'layer':>5} {'param':>6} {'shape':>12} {'vs autodiff':>12} {'vs fin.diff':>12}"]
        for e in self.errors:
            layer = "-" if e.layer is None else str(e.layer)
            rows.append(
                f"{layer:>5} {e.name:>6} {str(e.shape):>12} {e.autodiff:12.2e} "
                # "-": not computed per array (random directions, or off); a NaN computed
                # (a rule that returned NaN or infinity) prints as nan
                + (f"{e.finite_diff:12.2e}" if self.fd_mode == "full" else f"{'-':>12}")
            )
        if self.fd_mode == "directions":
            rows.append(f"vs finite differences along random directions (whole gradient): "
                        f"{self.max_finite_diff:.2e}")
        if self.reference == FLOAT64_AUTODIFF:
            rows.append(f"{self.dtype} vs {self.dtype} autodiff above tolerance; decided against "
                        f"float64 autodiff: manual {self.manual_vs_float64:.2e}, {self.dtype} "
                        f"autodiff {self.autodiff_vs_float64:.2e} (manual must be <= "
                        f"max(autodiff, tolerance) per array)")
        rows.append(f"passed: {self.passed} (tolerances {self.tol_autodiff:.0e} / "
                    f"{self.tol_finite_diff:.0e}, {self.dtype}, finite differences: {self.fd_mode})")
        return "\n".join(rows)


def worst(errors) -> float:
    """The largest error, NaN when any is NaN (a rule that returns NaN anywhere fails; Python's
    ``max`` would skip a NaN unless it came first)."""
    errors = [float(e) for e in errors]
    return float("nan") if any(math.isnan(e) for e in errors) else max(errors)


def relative_error(a, b, floor: float = 0.0) -> float:
    """||a - b|| / max(||a||, ||b||, floor), computed in float64 NumPy; 0 when all are 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")  # a non-finite value agrees with nothing (and fails the check)
    den = max(np.linalg.norm(a), np.linalg.norm(b), floor)
    if den == 0.0:
        return 0.0
    return float(np.linalg.norm(a - b) / den)


@contextlib.contextmanager
def _x64():
    with jax.enable_x64(True):
        yield


def _to64(tree):
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x, dtype=np.float64)), tree)


def _check_eps(eps) -> None:
    if not (isinstance(eps, float) and eps > 0):
        raise ValueError(f"eps: expected a positive float, got {eps!r}.")
    if math.isinf(eps):
        raise ValueError(f"eps: expected a positive float, got {eps!r}; it must be finite "
                         f"(f(theta +- inf) has no difference quotient).")


def finite_difference_grad(
    f: Callable[[Any], jax.Array],
    theta: Any,
    *,
    eps: float = 1e-5,
    num_directions: Optional[int] = None,
    key: Optional[jax.Array] = None,
    chunk_size: int = 256,
):
    """Central finite differences of a scalar ``f`` at ``theta`` (a pytree), in float64.

    Full mode (``num_directions=None``): returns the gradient pytree, one pair of
    evaluations per scalar parameter, vmapped in chunks of ``chunk_size``.
    Direction mode: returns ``(V, d)`` with V of shape (k, P) random unit directions and
    d the k directional derivatives; compare with ``V @ ravel(grad)``.

    Always in float64, whatever the dtype of ``theta`` and whether 64-bit mode is on: theta
    is converted to float64 (exactly, from any lower precision) and ``f`` is evaluated inside
    ``jax.enable_x64(True)``; the results are float64 arrays.

    Raises:
      TypeError / ValueError naming the argument, before any evaluation: ``f`` not callable,
      ``eps`` not a positive finite float, ``num_directions`` or ``chunk_size`` not a
      positive integer, a bad ``key``.
    """
    from jax.flatten_util import ravel_pytree

    _check_eps(eps)
    if not callable(f):
        raise TypeError(f"f: expected a callable theta -> scalar, got {type(f).__name__}.")
    num_directions = checks.optional_positive_int("num_directions", num_directions)
    chunk_size = checks.positive_int("chunk_size", chunk_size)
    key = None if key is None else checks.prng_key(key)
    with _x64():
        return _finite_difference_grad64(f, _to64(theta), eps, num_directions, key, chunk_size)


def _finite_difference_grad64(f, theta, eps, num_directions, key, chunk_size):
    """:func:`finite_difference_grad` on checked arguments, inside 64-bit mode."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(theta)
    P = flat.shape[0]
    f_flat = jax.jit(lambda v: f(unravel(v)))

    @jax.jit
    def directional(V):  # V: (k, P) -> (k,)
        return jax.vmap(lambda v: (f_flat(flat + eps * v) - f_flat(flat - eps * v)) / (2 * eps))(V)

    if num_directions is None:
        out = []
        for start in range(0, P, chunk_size):
            idx = jnp.arange(start, min(start + chunk_size, P))
            out.append(directional(jax.nn.one_hot(idx, P, dtype=flat.dtype)))
        return unravel(jnp.concatenate(out))
    key = jax.random.PRNGKey(0) if key is None else key
    V = jax.random.normal(key, (num_directions, P), dtype=flat.dtype)
    V = V / jnp.linalg.norm(V, axis=1, keepdims=True)
    return V, jnp.concatenate(
        [directional(V[s:s + chunk_size]) for s in range(0, num_directions, chunk_size)]
    )


def _summarise(names, manual, auto, fd, tol_ad, tol_fd, dtype, fd_mode, *, truth=None,
               directional=None) -> GradCheckReport:
    # Finite differences carry an absolute rounding noise of ~eps_mach |J| / h per entry, so
    # an array whose true gradient is 0 (e.g. behind dead ReLUs) would show a relative error
    # of 1 against pure noise. Their errors are therefore measured against
    # max(||a||, ||b||, FD_FLOOR * ||whole gradient||); the autodiff comparison has no floor.
    total = float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64))) for g in manual)))
    errors = []
    for (layer, name), g, a, d in zip(names, manual, auto, fd):
        errors.append(ParamError(
            layer=layer, name=name, shape=tuple(np.shape(g)),
            autodiff=relative_error(g, a),
            finite_diff=float("nan") if d is None else relative_error(g, d, FD_FLOOR * total),
        ))
    max_ad = worst(e.autodiff for e in errors)
    ad_ok = max_ad <= tol_ad  # NaN compares False: fails
    reference, man64, ad64 = AUTODIFF, float("nan"), float("nan")
    if not ad_ok and truth is not None:
        # below float64: both gradients against the float64 one (module doc)
        try:
            t = truth()
        except Exception:  # noqa: BLE001 -- a function that runs only below float64: the
            t = None  # same-dtype autodiff decides (the report fails, as without a reference)
        if t is not None:
            m_err = [relative_error(g, r) for g, r in zip(manual, t)]
            a_err = [relative_error(a, r) for a, r in zip(auto, t)]
            ad_ok = all(m <= tol_ad or m <= a for m, a in zip(m_err, a_err))  # NaN m: fails
            reference, man64, ad64 = FLOAT64_AUTODIFF, worst(m_err), worst(a_err)
    fds = [e.finite_diff for e, d in zip(errors, fd) if d is not None]  # computed, NaN kept
    max_fd = worst(fds) if fds else float("nan")
    if directional is not None:
        max_fd, fds = directional, [directional]
    passed = ad_ok and (not fds or max_fd <= tol_fd)  # NaN compares False: fails
    return GradCheckReport(tuple(errors), max_ad, max_fd, tol_ad, tol_fd, dtype, fd_mode, passed,
                           reference, man64, ad64)


def _directional_error(manual, V, d) -> float:
    """rel(V @ ravel(manual), d): directional derivatives of the manual gradient vs finite ones."""
    from jax.flatten_util import ravel_pytree

    g_flat = np.asarray(ravel_pytree(manual)[0], dtype=np.float64)
    return relative_error(np.asarray(V, dtype=np.float64) @ g_flat, d)


def check_rule(
    f: Callable[[Any], jax.Array],
    grad_f: Callable[[Any], Any],
    theta: Any,
    *,
    finite_differences: bool = True,
    eps: float = 1e-5,
    tol_autodiff: Optional[float] = None,
    tol_finite_diff: Optional[float] = None,
) -> GradCheckReport:
    """Checks a user-derived gradient rule ``grad_f`` of a scalar function ``f``.

    Arguments:
      f: ``theta -> scalar``, written in jax.numpy.
      grad_f: the hand-derived gradient, ``theta -> pytree`` with the structure of theta.
      theta: the point (a pytree of floating arrays).
      finite_differences: also compare with central finite differences in float64.
      eps: the finite-difference step.
      tol_autodiff: threshold against ``jax.grad`` (default by dtype, see module doc; below
        float64 a failed comparison is decided against the float64 gradient).
      tol_finite_diff: threshold against finite differences (default by dtype).

    Returns:
      a :class:`GradCheckReport` with one row per leaf of theta.

    Raises:
      TypeError / ValueError naming the argument before anything is differentiated: ``f`` or
      ``grad_f`` not callable, ``f`` not returning a scalar, a tolerance that is not a number
      >= 0, theta empty or not floating, float64 theta outside 64-bit mode, a gradient whose
      structure or shapes differ from theta's.
    """
    for arg, fn in (("f", f), ("grad_f", grad_f)):
        if not callable(fn):
            raise TypeError(f"{arg}: expected a callable, got {type(fn).__name__}.")
    _check_eps(eps)
    tol_autodiff = _tolerance("tol_autodiff", tol_autodiff)
    tol_finite_diff = _tolerance("tol_finite_diff", tol_finite_diff)
    leaves, treedef = jax.tree.flatten(theta)
    if not leaves:
        raise ValueError("theta: expected a pytree with at least one array, got none.")
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"theta: expected floating arrays, got dtype {dtype}.")
    _require_x64("theta", dtype)
    out = jax.eval_shape(f, theta)  # by tracing alone
    if not (hasattr(out, "shape") and tuple(out.shape) == ()):
        got = f"shape {tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"f: expected a scalar (shape ()) at theta, got {got}; sum (or take "
                         f"the one entry) before returning.")
    manual = grad_f(theta)
    m_leaves, m_def = jax.tree.flatten(manual)
    if m_def != treedef:
        raise ValueError(
            f"grad_f: expected a gradient with the structure of theta ({treedef}), got {m_def}."
        )
    for i, (g, t) in enumerate(zip(m_leaves, leaves)):
        if np.shape(g) != np.shape(t):
            raise ValueError(f"grad_f: leaf {i}: expected shape {np.shape(t)}, got {np.shape(g)}.")
    checks.check_finite(theta=np.concatenate([np.ravel(np.asarray(x)) for x in leaves]))
    auto = jax.tree.leaves(jax.grad(f)(theta))
    tol_autodiff = _default_tol("autodiff", dtype) if tol_autodiff is None else tol_autodiff
    tol_finite_diff = (
        _default_tol("finite_diff", dtype) if tol_finite_diff is None else tol_finite_diff
    )
    fd = [None] * len(leaves)
    if finite_differences:
        fd = jax.tree.leaves(finite_difference_grad(f, theta, eps=eps))

    def truth():  # the float64 gradient at the same point (below float64 only)
        with _x64():
            return jax.tree.leaves(jax.grad(f)(_to64(theta)))

    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(theta)[0]]
    names = [(None, p or "theta") for p in paths]
    return _summarise(names, m_leaves, auto, fd, tol_autodiff, tol_finite_diff, str(dtype),
                      "full" if finite_differences else "off",
                      truth=None if dtype == jnp.float64 else truth)


def check_gradients(
    net: Network,
    params: Any,
    X: Any,
    Y: Any,
    *,
    finite_differences: str = "auto",
    max_fd_params: int = 5000,
    num_directions: int = 64,
    eps: float = 1e-5,
    key: Optional[jax.Array] = None,
    tol_autodiff: Optional[float] = None,
    tol_finite_diff: Optional[float] = None,
) -> GradCheckReport:
    """Compares ``jaxmlp.value_and_grad`` (the recurrences) with autodiff and finite differences.

    Arguments:
      net, params, X, Y: as for ``jaxmlp.value_and_grad``; X (n[0], m), Y (n[L], m).
      finite_differences: ``"full"`` (every parameter), ``"directions"`` (``num_directions``
        random unit directions), ``"off"``, or ``"auto"``: full when the network has at most
        ``max_fd_params`` parameters, directions otherwise.
      eps: central-difference step (the differences run in float64 whatever the params'
        dtype: params, X and Y are converted for that comparison only).
      key: PRNG key for the random directions.
      tol_autodiff: threshold against ``jax.grad`` (default 1e-10 for float64 params, 1e-5
        float32, 1e-2 float16, 3e-2 bfloat16); below float64, when the comparison with
        ``jax.grad`` in the params' dtype fails, the manual and autodiff gradients are both
        measured against the float64 gradient (module doc; ``report.reference`` says which
        decided). tol_finite_diff: threshold against finite differences (1e-6 float64, 1e-4
        float32, 1e-2 float16, 3e-2 bfloat16). Both: a number >= 0.

    Returns:
      a :class:`GradCheckReport`, one row per (layer, "W"/"b").

    Raises:
      ValueError if X or Y holds NaN or infinity, Y is outside the cost's domain
      (:meth:`jaxmlp.nn.costs.Cost.check_targets`), or on any shape mismatch; TypeError for
      float64 params outside 64-bit mode (they would be computed in float32); TypeError /
      ValueError naming the argument for a bad ``eps``, ``num_directions``, ``key`` or
      tolerance, before any gradient is computed.
    """
    modes = ("auto", "full", "directions", "off")
    if finite_differences not in modes:
        raise ValueError(f"finite_differences: expected one of {modes}, got {finite_differences!r}.")
    _check_eps(eps)
    num_directions = checks.positive_int("num_directions", num_directions)
    key = None if key is None else checks.prng_key(key)
    tol_autodiff = _tolerance("tol_autodiff", tol_autodiff)
    tol_finite_diff = _tolerance("tol_finite_diff", tol_finite_diff)
    dtype = checks.check_params(checks.require_network(net), params)
    _require_x64("params", dtype)
    tol_autodiff = _default_tol("autodiff", dtype) if tol_autodiff is None else tol_autodiff
    tol_finite_diff = (
        _default_tol("finite_diff", dtype) if tol_finite_diff is None else tol_finite_diff
    )
    X = checks.check_X(net, X, dtype)
    Y = checks.check_Y(net, Y, X.shape[1], dtype)
    checks.check_finite(X=X, Y=Y)
    net.cost_fn.check_targets(Y)
    _, manual = value_and_grad(net, params, X, Y)
    auto = jax.grad(lambda p: loss(net, p, X, Y))(params)
    mode = finite_differences
    if mode == "auto":
        mode = "full" if net.num_params <= max_fd_params else "directions"
    names = [(l, k) for l in range(1, net.num_layers + 1) for k in ("W", "b")]
    flat = lambda tree: [layer[k] for layer in tree for k in ("W", "b")]  # noqa: E731
    fd = [None] * len(names)
    directional = None

    def truth():  # the float64 gradient at the same point (below float64 only)
        with _x64():
            p64, X64, Y64 = _to64(params), _to64(X), _to64(Y)
            return flat(jax.grad(lambda p: loss(net, p, X64, Y64))(p64))

    if mode != "off":
        with _x64():
            X64, Y64 = _to64(X), _to64(Y)
            J = lambda p: loss(net, p, X64, Y64)  # noqa: E731
            if mode == "full":
                fd = flat(finite_difference_grad(J, params, eps=eps))
            else:
                V, d = finite_difference_grad(J, params, eps=eps, num_directions=num_directions,
                                              key=key)
                # One aggregate row: directional derivatives of the whole gradient.
                directional = _directional_error(manual, V, d)
    return _summarise(names, flat(manual), flat(auto), fd, tol_autodiff, tol_finite_diff,
                      str(dtype), mode, truth=None if dtype == jnp.float64 else truth,
                      directional=directional)


def random_targets(net: Network, key: jax.Array, m: int, dtype=jnp.float32) -> jax.Array:
    """Valid targets Y of shape (n[L], m) for ``net.cost``: 0/1 labels for binary and
    multi-label costs, one-hot columns for categorical, standard normal for squared error.
    ``key``: a PRNG key or an integer seed (:func:`jaxmlp.nn.checks.prng_key`)."""
    key = checks.prng_key(key)
    nL = net.sizes[-1]
    if net.cost == "categorical_cross_entropy":
        return jax.nn.one_hot(jax.random.randint(key, (m,), 0, nL), nL, dtype=dtype).T
    if net.cost == "mean_squared_error":
        return jax.random.normal(key, (nL, m), dtype=dtype)
    return jax.random.bernoulli(key, 0.5, (nL, m)).astype(dtype)


def random_problem(net: Network, key: jax.Array, m: int, dtype=None, *, bias_scale: float = 0.1):
    """A random ``(params, X, Y)`` for checking ``net``: X (n[0], m), Y (n[L], m).

    Weights come from ``init_params``; biases are drawn from N(0, bias_scale^2) rather than
    left at zero, since with zero biases a layer after dead ReLUs has Z = 0 exactly, where
    derivatives are conventions and finite differences straddle the kink. Values are drawn
    in float64 when 64-bit mode is on (then cast to ``dtype``), so a float32 problem is the
    rounded float64 one. ``key``: a PRNG key or an integer seed
    (:func:`jaxmlp.nn.checks.prng_key`).
    """
    key = checks.prng_key(key)
    m = checks.positive_int("m", m)
    base = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    dtype = base if dtype is None else dtype
    kp, kb, kx, ky = jax.random.split(key, 4)
    params = [
        {"W": layer["W"], "b": bias_scale * jax.random.normal(k, layer["b"].shape, base)}
        for layer, k in zip(init_params(net, kp, dtype=base), jax.random.split(kb, net.num_layers))
    ]
    X = jax.random.normal(kx, (net.sizes[0], m), dtype=base)
    Y = random_targets(net, ky, m, base)
    return jax.tree.map(lambda a: a.astype(dtype), (params, X, Y))


# ----------------------------------------------------------------------------- user rules


class RegionError(NamedTuple):
    """The worst disagreement of a rule with autodiff over one region of test points."""

    quantity: str  # "g'(z)", "g''(z)", "dZ (B4)", "dL/dA"
    region: str  # "random", "saturation", "near kinks", ...
    points: int
    max_error: float  # max over points of |rule - autodiff| / max(|rule|, |autodiff|, 1)
    worst_at: str  # where the largest error occurred
    nonfinite: int  # points (the unit of ``points``) where a compared value is NaN or infinite
    tol: float = 0.0  # the threshold of this row


class RuleCheckReport(NamedTuple):
    """The outcome of :func:`check_activation_rule` or :func:`check_cost_rule`."""

    rows: tuple
    tol: float
    passed: bool

    def table(self) -> str:
        lines = [f"{'quantity':<10} {'region':<18} {'points':>6} {'max error':>10} {'tol':>7} "
                 f"{'non-finite':>10}  {'ok':<3} worst at"]
        for r in self.rows:
            ok = "yes" if r.nonfinite == 0 and r.max_error <= r.tol else "NO"
            lines.append(f"{r.quantity:<10} {r.region:<18} {r.points:>6} {r.max_error:>10.2e} "
                         f"{r.tol:>7.0e} {r.nonfinite:>10}  {ok:<3} {r.worst_at}")
        lines.append(f"passed: {self.passed} (error |rule - autodiff| / max(|rule|, |autodiff|, 1); "
                     "float64 rule vs float64 autodiff, float32 rule vs float64 autodiff; every "
                     "value finite)")
        return "\n".join(lines)


#: Test points of activation rules (float64): a random spread, saturation (|z| large), and
#: both sides of the kink at 0 of piecewise rules (0 itself is a convention, not checked).
ACTIVATION_REGIONS = {
    "saturation": (-500.0, -100.0, -50.0, -20.0, -10.0, 10.0, 20.0, 50.0, 100.0, 500.0),
    "near kinks": (-1e-3, -1e-6, -1e-9, -1e-12, 1e-12, 1e-9, 1e-6, 1e-3),
}
#: The region of z = 0 itself: values must be finite there (not compared with autodiff).
AT_ZERO = "z = 0, finite"
RULE_TOL = 1e-8
RULE_TOL_FLOAT32 = 1e-4


def _mixed_errors(rule, oracle):
    rule = np.asarray(rule, np.float64)
    oracle = np.asarray(oracle, np.float64)
    finite = np.isfinite(rule) & np.isfinite(oracle)
    den = np.maximum(np.maximum(np.abs(rule), np.abs(oracle)), 1.0)
    err = np.where(finite, np.abs(rule - oracle) / np.where(finite, den, 1.0), np.inf)
    return err, int(np.size(err) - np.count_nonzero(finite))


def _region_row(quantity, region, rule, oracle, where, tol) -> RegionError:
    """One row over the points of a region: axis 0 of rule / oracle indexes the points (a
    point may hold several values, e.g. an example's units); ``nonfinite`` counts points
    with any non-finite value, in the unit of ``points``."""
    err, _ = _mixed_errors(rule, oracle)
    flat = err.reshape(err.shape[0], -1).max(axis=1) if err.ndim > 1 else err
    i = int(np.argmax(flat))
    bad = int(np.count_nonzero(~np.isfinite(flat)))
    return RegionError(quantity, region, int(flat.size), float(flat[i]), where(i), bad, float(tol))


#: the quantity of :func:`check_cost_rule`'s rows that check the loss and its autodiff
#: gradient are finite at the test points (not the seed's fault when they are not)
LOSS_FINITE = "loss, AD"


def takes_activation_output(derivative: Callable) -> bool:
    """Whether an element-wise rule is ``g'(Z, A)`` (True) or ``g'(Z)`` (False): it is called
    with A when it has two required positional parameters (or ``*args``). Optional parameters
    (``def d(Z, alpha=0.01)``) and a NumPy ufunc's ``out`` are not counted."""
    import inspect

    try:
        params = inspect.signature(derivative).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in positional and p.default is inspect.Parameter.empty for p in params) >= 2


def _call_derivative(derivative, Z, A):
    return derivative(Z, A) if takes_activation_output(derivative) else derivative(Z)


def check_activation_rule(forward: Callable, derivative: Callable, *,
                          second_derivative: Optional[Callable] = None,
                          elementwise: bool = True, tol: float = RULE_TOL,
                          tol_float32: float = RULE_TOL_FLOAT32,
                          key: Optional[jax.Array] = None) -> RuleCheckReport:
    """Checks a hand-derived activation rule against autodiff of its forward map, in float64.

    Element-wise rules (``elementwise=True``): ``derivative(Z)`` (or ``derivative(Z, A)``)
    must return g'(Z); the oracle is ``jax.grad`` of g on each scalar z. ``second_derivative``
    (optional) is checked against ``jax.grad(jax.grad(g))``. Points: 512 random z ~ N(0, 3^2),
    the saturation points and both sides of the kink at 0 (:data:`ACTIVATION_REGIONS`), and
    z = 0 itself, where g and the rules need only be finite (:data:`AT_ZERO`); then
    on columns of 6 units, where ``jax.jacobian`` of the forward map must be diagonal (zero
    off-diagonal: g acts on each unit alone) with the rule's g'(Z) on its diagonal.

    Other rules (``elementwise=False``): ``derivative(dA, Z, A)`` must return dZ of (B4); the
    oracle is ``jax.vjp`` of the forward map, on (6, 9) matrices Z at the same scales.

    Each region is evaluated twice: the rule in float64 against autodiff in float64 (``tol``),
    and the rule (and forward map) in float32, training's default dtype, against the float64
    autodiff values (``tol_float32``): a formula that overflows or cancels in float32 at
    saturation (``log(1 + exp(z))`` at z = 100) is caught there.

    Returns a :class:`RuleCheckReport`; the rule passes when every value is finite and every
    error is within its row's threshold.
    """
    if not callable(forward) or not callable(derivative):
        raise TypeError("forward, derivative: expected callables.")
    tol = checks.real_number("tol", tol, low=0.0, low_open=True)
    tol_float32 = checks.real_number("tol_float32", tol_float32, low=0.0, low_open=True)
    key = jax.random.PRNGKey(0) if key is None else checks.prng_key(key)
    rows = []
    with _x64():
        if elementwise:
            g = lambda s: forward(jnp.reshape(s, (1,)))[0]  # noqa: E731
            d1 = jax.vmap(jax.grad(g))
            d2 = jax.vmap(jax.grad(jax.grad(g)))
            regions = {"random": np.asarray(3.0 * jax.random.normal(key, (512,), jnp.float64)),
                       **{k: np.asarray(v, np.float64) for k, v in ACTIVATION_REGIONS.items()},
                       AT_ZERO: np.zeros(1)}
            # shapes first, by tracing alone (nothing compiled or run)
            spec = jax.ShapeDtypeStruct(regions["random"].shape, jnp.float64)
            A_shape = jax.eval_shape(forward, spec).shape
            if A_shape != spec.shape:
                raise ValueError(f"forward: expected an output of the input's shape {spec.shape}, "
                                 f"got {A_shape}.")
            rule_shape = jax.eval_shape(lambda Z: _call_derivative(derivative, Z, forward(Z)),
                                        spec).shape
            if rule_shape != spec.shape:
                raise ValueError(f"derivative: expected g'(Z) of Z's shape {spec.shape}, got "
                                 f"{rule_shape}.")

            # every region in one vector, each quantity in one compiled program per dtype
            @jax.jit
            def evaluate(Z):
                Zr = Z.astype(jnp.float64)  # the same (rounded) points, for autodiff
                A = forward(Z)
                out = {"A": A, "A64": forward(Zr), "rule": _call_derivative(derivative, Z, A),
                       "oracle1": d1(Zr)}
                if second_derivative is not None:
                    out["rule2"] = _call_derivative(second_derivative, Z, A)
                    out["oracle2"] = d2(Zr)
                return out

            z_all = np.concatenate(list(regions.values()))
            at64 = jax.tree.map(np.asarray, evaluate(jnp.asarray(z_all, jnp.float64)))
            at32 = jax.tree.map(np.asarray, evaluate(jnp.asarray(z_all, jnp.float32)))
            bounds = np.cumsum([0] + [z.size for z in regions.values()])
            for (region, z), lo, hi in zip(regions.items(), bounds[:-1], bounds[1:]):
                where = lambda i, z=z: f"z = {z[i]:.6g}"  # noqa: E731
                if region == AT_ZERO:
                    # z = 0 exactly (a zero input column with zero biases reaches it): finite
                    # values only; g'(0) of a kink is a convention, not checked against autodiff
                    for quantity, name, values in (("g'(z)", "rule", at64), ("g(z)", "A", at64),
                                                   ("g'(z)", "rule", at32), ("g(z)", "A", at32)):
                        if name in values:
                            v = values[name][lo:hi]
                            suffix = ", float32" if values is at32 else ""
                            rows.append(_region_row(quantity, region + suffix, v,
                                                    np.where(np.isfinite(v), v, 0.0), where, tol))
                    if second_derivative is not None:
                        v = at64["rule2"][lo:hi]
                        rows.append(_region_row("g''(z)", region, v, np.where(np.isfinite(v), v,
                                                                                0.0), where, tol))
                    continue
                rows.append(_region_row("g'(z)", region, at64["rule"][lo:hi],
                                        at64["oracle1"][lo:hi], where, tol))
                if second_derivative is not None:
                    rows.append(_region_row("g''(z)", region, at64["rule2"][lo:hi],
                                            at64["oracle2"][lo:hi], where, tol))
                # the same rule evaluated in float32 (training's default), against float64
                # autodiff at the same (rounded) points
                rows.append(_region_row("g'(z)", region + ", float32", at32["rule"][lo:hi],
                                        at32["oracle1"][lo:hi], where, tol_float32))
                rows.append(_region_row("g(z)", region + ", float32", at32["A"][lo:hi],
                                        at32["A64"][lo:hi], where, tol_float32))
            # several units at once: g must act on each unit alone. The Jacobian of the
            # forward map on columns of 6 units (jax.jacobian) must be diagonal, its diagonal
            # the rule's g'(Z): a g that mixes units (z times the mean over units) agrees with
            # its rule on one unit only, and is refused here.
            Zc = 3.0 * jax.random.normal(jax.random.fold_in(key, 1), (6, 4), jnp.float64)
            jac, rule = jax.jit(lambda Zc: (
                jax.vmap(jax.jacobian(forward), in_axes=1)(Zc),  # (4 columns, 6, 6)
                _call_derivative(derivative, Zc, forward(Zc))))(Zc)
            jac = np.asarray(jac)
            off = jac * (1.0 - np.eye(6))[None]
            where_c = lambda i: f"column {i} of a (6, 4) Z = 3 N(0, 1)"  # noqa: E731
            rows.append(_region_row("g'(z) on several units", "random (6, 4)",
                                    np.asarray(rule).T, np.diagonal(jac, axis1=1, axis2=2),
                                    where_c, tol))
            rows.append(_region_row("Jacobian off-diagonal (must be 0)", "random (6, 4)",
                                    np.asarray(off).reshape(4, -1), np.zeros((4, 36)), where_c,
                                    tol))
        else:
            k1, k2 = jax.random.split(key)
            base = jax.random.normal(k1, (6, 9), jnp.float64)
            dA = jax.random.normal(k2, (6, 9), jnp.float64)
            rule_shape = jax.eval_shape(lambda dA, Z: derivative(dA, Z, forward(Z)), dA,
                                        base).shape
            if rule_shape != base.shape:
                raise ValueError(f"derivative: expected dZ of Z's shape {base.shape}, got "
                                 f"{rule_shape}.")

            @jax.jit
            def evaluate(dA, Z):  # the rule in Z's dtype; the oracle in float64 at the same Z
                _, vjp = jax.vjp(forward, Z.astype(jnp.float64))
                return derivative(dA, Z, forward(Z)), vjp(dA.astype(jnp.float64))[0]

            for region, scale in (("random", 3.0), ("saturation", 100.0), ("near kinks", 1e-9)):
                Z = scale * base
                where = lambda i, s=scale: f"column {i} of Z = {s:g} N(0, 1)"  # noqa: E731
                for suffix, dtype, tol_ in (("", jnp.float64, tol),
                                            (", float32", jnp.float32, tol_float32)):
                    rule, oracle = evaluate(dA.astype(dtype), Z.astype(dtype))
                    rows.append(_region_row("dZ (B4)", region + suffix, np.asarray(rule).T,
                                            np.asarray(oracle).T, where, tol_))
    passed = all(r.nonfinite == 0 and r.max_error <= r.tol for r in rows)
    return RuleCheckReport(tuple(rows), float(tol), passed)


def check_cost_rule(loss_fn: Callable, dloss_dA: Callable, *, unit_range: bool = False,
                    tol: float = RULE_TOL, tol_float32: float = RULE_TOL_FLOAT32,
                    key: Optional[jax.Array] = None) -> RuleCheckReport:
    """Checks a hand-derived cost seed ``dloss_dA(A, Y)`` against ``jax.grad`` of the loss.

    ``loss_fn(A, Y)`` returns the per-example losses (summed over the units, axis 0): shape
    (m,) for (n, m) inputs and () for one column (n,). Points, in float64: random A and Y
    (A in (0.02, 0.98) and Y in {0, 1} when ``unit_range``, else A ~ N(0, 3^2), Y ~ N(0, 1)),
    saturation (A within 1e-6 of 0 or 1; else |A| = 1e3) and A near Y (within 1e-6 when
    ``unit_range``, else 1e-9). As for activations, every region is also evaluated with the
    rule in float32 against float64 autodiff at the same rounded points.

    Each evaluation has two rows: :data:`LOSS_FINITE` counts the examples where the loss
    itself or its ``jax.grad`` (the oracle) is NaN or infinite (e.g. ``log(cosh(A - Y))``,
    whose cosh overflows at |A - Y| > 710): a fault of the loss, where the seed cannot be
    judged; ``dL/dA`` compares the seed with the oracle on the other examples.
    """
    if not callable(loss_fn) or not callable(dloss_dA):
        raise TypeError("loss, dloss_dA: expected callables.")
    tol = checks.real_number("tol", tol, low=0.0, low_open=True)
    tol_float32 = checks.real_number("tol_float32", tol_float32, low=0.0, low_open=True)
    key = jax.random.PRNGKey(0) if key is None else checks.prng_key(key)
    k1, k2, k3 = jax.random.split(key, 3)
    rows = []
    with _x64():
        shape = (4, 64)
        if unit_range:
            Y = jax.random.bernoulli(k2, 0.5, shape).astype(jnp.float64)
            regions = {
                "random": jax.random.uniform(k1, shape, jnp.float64, 0.02, 0.98),
                "saturation": jnp.where(jax.random.bernoulli(k3, 0.5, shape), 1e-6, 1 - 1e-6),
                "A near Y": jnp.clip(Y, 1e-6, 1 - 1e-6),
            }
        else:
            Y = jax.random.normal(k2, shape, jnp.float64)
            regions = {
                "random": 3.0 * jax.random.normal(k1, shape, jnp.float64),
                "saturation": 1e3 * jnp.sign(jax.random.normal(k3, shape, jnp.float64)),
                "A near Y": Y + 1e-9 * jnp.sign(jax.random.normal(k3, shape, jnp.float64)),
            }
        # shapes first, by tracing alone (nothing compiled or run)
        L = jax.eval_shape(loss_fn, regions["random"], Y)
        if L.shape != (shape[1],):
            raise ValueError(f"loss: expected per-example losses of shape (m,) = ({shape[1]},) for "
                             f"(n, m) = {shape} inputs, got {L.shape}; sum over axis 0 only.")
        L1 = jax.eval_shape(loss_fn, regions["random"][:, 0], Y[:, 0])
        if L1.shape != ():
            raise ValueError(f"loss: expected a scalar for one column of shape ({shape[0]},), got "
                             f"shape {L1.shape}; sum over axis 0 only.")
        rule = jax.eval_shape(dloss_dA, regions["random"], Y)
        if rule.shape != shape:
            raise ValueError(f"dloss_dA: expected dL/dA of A's shape {shape}, got {rule.shape}.")

        @jax.jit
        def evaluate(A, Y):  # the rule in A's dtype; the oracle in float64 at the same points
            Ar, Yr = A.astype(jnp.float64), Y.astype(jnp.float64)
            return (dloss_dA(A, Y), jax.grad(lambda a: jnp.sum(loss_fn(a, Yr)))(Ar),
                    loss_fn(Ar, Yr))

        where = lambda i: f"example {i}"  # noqa: E731
        for region, A in regions.items():
            for suffix, dtype, tol_ in (("", jnp.float64, tol),
                                        (", float32", jnp.float32, tol_float32)):
                rule, oracle, L = (np.asarray(v) for v in evaluate(A.astype(dtype),
                                                                    Y.astype(dtype)))
                # per example: the loss and its autodiff gradient must be finite
                ref = np.concatenate([L[None, :], oracle], axis=0).T  # (m, 1 + n)
                rows.append(_region_row(LOSS_FINITE, region + suffix, ref,
                                        np.where(np.isfinite(ref), ref, 0.0), where, tol_))
                # the seed is judged where its oracle exists
                ok = np.all(np.isfinite(ref), axis=1)[None, :]
                rows.append(_region_row("dL/dA", region + suffix,
                                        np.where(ok, rule, 0.0).T, np.where(ok, oracle, 0.0).T,
                                        where, tol_))
    passed = all(r.nonfinite == 0 and r.max_error <= r.tol for r in rows)
    return RuleCheckReport(tuple(rows), float(tol), passed)
# ----------------------------------------------------------------------------- curvature

CURVATURE_QUANTITIES = ("ggn_diag", "per_example_ggn_diag", "kfac_G", "kfac_A", "ggn_vp", "hvp",
                        "hessian_diag")


class CurvatureError(NamedTuple):
    """Relative error of one quantity on one parameter array (or one layer's factor)."""

    layer: int
    name: str  # "W", "b", or "A"/"G" for the Kronecker factors
    quantity: str
    error: float


class CurvatureReport(NamedTuple):
    """The outcome of :func:`check_curvature`: one row per (quantity, layer, array)."""

    errors: tuple
    max_error: float
    tol: float
    dtype: str
    passed: bool

    def table(self) -> str:
        """Plain text: one line per layer and array, one column per quantity."""
        quantities = [q for q in CURVATURE_QUANTITIES if any(e.quantity == q for e in self.errors)]
        cells = {(e.layer, e.name, e.quantity): e.error for e in self.errors}
        keys = sorted({(e.layer, e.name) for e in self.errors})
        rows = [f"{'layer':>5} {'param':>5} " + " ".join(f"{q:>20}" for q in quantities)]
        for layer, name in keys:
            rows.append(f"{layer:>5} {name:>5} " + " ".join(
                f"{cells[(layer, name, q)]:20.2e}" if (layer, name, q) in cells else f"{'-':>20}"
                for q in quantities))
        rows.append(f"max {self.max_error:.2e}, passed: {self.passed} (tolerance {self.tol:.0e}, "
                    f"{self.dtype})")
        return "\n".join(rows)


def _loss_of_split_output(net: Network, f, y):
    """L_i as a function of the split output f = z[L] (canonical pairs) or a[L] (others)."""
    if net.fused:
        g = net.layer_activations[-1]
        return net.cost_fn.loss(f, g.forward(f), y, g)
    if net.cost == "mean_squared_error":
        return 0.5 * jnp.sum(jnp.square(f - y))
    if net.cost == "categorical_cross_entropy":
        return -jnp.sum(y * jnp.log(f))
    return -jnp.sum(y * jnp.log(f) + (1.0 - y) * jnp.log(1.0 - f))


def _output_hessians(net: Network, F, Y):
    """jax.hessian of L_i with respect to the split output, per example: (m, n[L], n[L])."""
    return jax.vmap(jax.hessian(lambda f, y: _loss_of_split_output(net, f, y)), in_axes=(1, 1))(F, Y)


def curvature_oracles(net: Network, params, X, Y, V):
    """The autodiff definitions of every curvature quantity (float64, small networks):
    G = (1/m) sum_i J_i^T H_i J_i with J_i from ``jax.jacobian`` and H_i from ``jax.hessian``
    of L_i at the split output; H = ``jax.hessian`` of J; H V = ``jax.jvp`` of ``jax.grad``.
    Returns a dict of params-shaped pytrees (and per-layer G factors). The autodiff part is
    one compiled program per network and shapes."""
    out = dict(_autodiff_curvature(net, params, X, Y, V))
    A_factors = []
    for A_prev in out.pop("A_prev"):
        Abar = np.vstack([np.asarray(A_prev, np.float64), np.ones((1, X.shape[1]))])
        A_factors.append(Abar @ Abar.T / X.shape[1])
    out["kfac_A"] = A_factors
    return out


@functools.partial(jax.jit, static_argnums=0)
def _autodiff_curvature(net: Network, params, X, Y, V):
    from jax.flatten_util import ravel_pytree

    from jaxmlp.nn import recurrences

    flat, unravel = ravel_pytree(params)
    m = X.shape[1]

    def split_output(theta):
        _, cache = recurrences.forward_pass(net, unravel(theta), X)
        return cache.Z[-1] if net.fused else cache.A[-1]

    Jac = jax.jacobian(split_output)(flat)  # (n[L], m, P)
    Hout = _output_hessians(net, split_output(flat), Y)  # (m, n[L], n[L])
    per_ex = jnp.einsum("aip,iab,biq->ipq", Jac, Hout, Jac) / m  # (m, P, P)
    G = jnp.sum(per_ex, axis=0)
    J = lambda theta: loss(net, unravel(theta), X, Y)  # noqa: E731
    H = jax.hessian(J)(flat)
    vflat = ravel_pytree(V)[0]
    hv = jax.jvp(jax.grad(lambda p: loss(net, p, X, Y)), (params,), (V,))[1]
    per_example_diag = jax.vmap(lambda M: unravel(jnp.diag(M)))(per_ex)
    # G factors: (1/m) sum_i Jz_i^T H_i Jz_i, Jz_i the Jacobian of the split output of
    # example i with respect to z[l] of that example (forward from Z[l] upwards).
    _, cache = recurrences.forward_pass(net, params, X)
    G_factors = []
    for l in range(1, net.num_layers + 1):
        def from_z(z, l=l):  # one column z[l] -> split output column
            a = net.layer_activations[l - 1].forward(z)
            for k in range(l, net.num_layers):
                z = params[k]["W"] @ a + params[k]["b"]
                a = net.layer_activations[k].forward(z)
            return z if net.fused else a
        Jz = jax.vmap(jax.jacobian(from_z), in_axes=1)(cache.Z[l - 1])  # (m, n[L], n[l])
        G_factors.append(jnp.einsum("iak,iab,ibj->kj", Jz, Hout, Jz) / m)
    return {
        "ggn_diag": unravel(jnp.diag(G)),
        "per_example_ggn_diag": per_example_diag,
        "ggn_vp": unravel(G @ vflat),
        "hvp": hv,
        "hvp_matrix": unravel(H @ vflat),
        "hessian_diag": unravel(jnp.diag(H)),
        "kfac_G": G_factors,
        "A_prev": list(cache.A[:-1]),  # the A factors are formed in NumPy
        "G": G,
        "H": H,
    }


def check_curvature(
    net: Network,
    params: Any,
    X: Any,
    Y: Any,
    *,
    V: Any = None,
    key: Optional[jax.Array] = None,
    tol: float = 1e-10,
    max_params: int = 2000,
) -> CurvatureReport:
    """Compares every quantity of :mod:`jaxmlp.quantities.curvature` with its autodiff definition.

    Runs in float64 (params, X, Y and V are converted for the check): ``ggn_diag``,
    ``per_example_ggn_diag``, the exact ``kfac_factors`` (G against the Jacobian of the
    split output with respect to Z[l] and jax.hessian of L_i; A against NumPy), ``ggn_vp``
    (against G V, G = (1/m) sum_i J_i^T H_i J_i from jax.jacobian / jax.hessian), ``hvp``
    (against ``jax.jvp(jax.grad(J))``), ``hessian_diag`` (against the diagonal of
    ``jax.hessian``). V defaults to a random direction drawn with ``key``.

    Relative error per array, norm-wise (:func:`relative_error`); passed when all are
    <= ``tol``. The oracles form P x P matrices: networks above ``max_params`` parameters
    are refused (ValueError).
    """
    from jaxmlp.quantities import curvature

    net = checks.require_network(net)
    dtype = checks.check_params(net, params)
    X = checks.check_X(net, X, dtype)
    Y = checks.check_Y(net, Y, X.shape[1], dtype)
    checks.check_finite(X=X, Y=Y)
    net.cost_fn.check_targets(Y)  # inside the cost's domain, as check_gradients
    key = jax.random.PRNGKey(0) if key is None else checks.prng_key(key)
    if net.num_params > max_params:
        raise ValueError(f"net: the autodiff oracles form {net.num_params}^2 matrices; expected at "
                         f"most max_params={max_params} parameters, got {net.num_params}.")
    with _x64():
        p, X64, Y64 = _to64(params), _to64(X), _to64(Y)
        if V is None:
            k = key

            @jax.jit
            def direction(k):  # one compiled program for every layer's draws
                keys = jax.random.split(k, 2 * net.num_layers)
                return [{"W": jax.random.normal(keys[2 * i], layer["W"].shape, jnp.float64),
                         "b": jax.random.normal(keys[2 * i + 1], layer["b"].shape, jnp.float64)}
                        for i, layer in enumerate(p)]

            V = direction(k)
        else:
            V = _to64(checks.check_params_like("V", V, net, dtype))
        ref = curvature_oracles(net, p, X64, Y64, V)
        got = {
            "ggn_diag": curvature.ggn_diag(net, p, X64, Y64),
            "per_example_ggn_diag": curvature.per_example_ggn_diag(net, p, X64, Y64),
            "ggn_vp": curvature.ggn_vp(net, p, X64, Y64, V),
            "hvp": curvature.hvp(net, p, X64, Y64, V),
            "hessian_diag": curvature.hessian_diag(net, p, X64, Y64),
        }
        factors = curvature.kfac_factors(net, p, X64, Y64)
        errors = []
        for q in ("ggn_diag", "per_example_ggn_diag", "ggn_vp", "hvp", "hessian_diag"):
            for l in range(net.num_layers):
                for name in ("W", "b"):
                    errors.append(CurvatureError(l + 1, name, q,
                                                 relative_error(got[q][l][name], ref[q][l][name])))
        for l, (A, G) in enumerate(factors):
            errors.append(CurvatureError(l + 1, "G", "kfac_G", relative_error(G, ref["kfac_G"][l])))
            errors.append(CurvatureError(l + 1, "A", "kfac_A", relative_error(A, ref["kfac_A"][l])))
    max_err = worst(e.error for e in errors)
    return CurvatureReport(tuple(errors), max_err, tol, "float64", max_err <= tol)
