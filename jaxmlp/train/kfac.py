"""K-FAC for optax: Kronecker-factored preconditioning, amortised, with an optional quadratic model.

The factors (H6) of docs/derivations.md come from :func:`jaxmlp.quantities.curvature.kfac_factors`
(or, inside training, from the same forward pass as the gradient: :mod:`jaxmlp.train.step`
hands them over whenever the optimizer is a :class:`KFAC`). The transformation is an
``optax.GradientTransformationExtraArgs``::

    opt = jaxmlp.train.kfac.kfac(0.3)                 # the defaults: keep them
    state = opt.init(params)
    factors = lambda: jaxmlp.quantities.curvature.kfac_factors(net, params, X, Y, kind="mc",
                                                          key=jax.random.key(0))
    updates, state = opt.update(grads, state, params, kfac_factors=factors)

Equations (K1)-(K7) are in docs/curvature.md ("K-FAC: the equations"):

* (K1) factor statistics every ``curvature_every`` steps, averaged with weight
  w_k = max(1 - factor_decay, 1/k) on the k-th statistics update (a running average first,
  an exponential one once 1/k < 1 - factor_decay);
* (K2) the damped inverses (G + lambda_G I)^{-1}, (A + lambda_A I)^{-1} with the factored
  Tikhonov split lambda_A = pi sqrt(lambda), lambda_G = sqrt(lambda) / pi,
  pi = sqrt((tr A / dim A) / (tr G / dim G)), every ``inverse_every`` steps: by LU when the
  damping is fixed, and from an eigendecomposition (K2e) Q diag(1 / (d + lambda_.)) Q^T when it
  adapts, so that a new damping costs two matrix products and no new factorisation;
* (K3) the proposal Delta = -G_inv [dW db] A_inv per layer;
* (K4) the update delta = alpha Delta + mu delta_prev, with alpha = ``learning_rate`` and
  mu = ``momentum`` (fixed), or
* (K5) alpha and mu from the 2 x 2 system of the quadratic model (Martens & Grosse 2015,
  section 7) on the minibatch, with GGN quadratic forms (H13) of Delta and delta_prev;
  (K5') mu clamped to [0, 0.99]; (K5'') the step scaled so that the model's predicted
  decrease -M(delta) is at most the minibatch cost J (``model_clip``);
* (K6) Levenberg-Marquardt damping: rho = (J(theta + delta) - J(theta)) / (M(delta) - M(0))
  every ``damping_every`` steps, lambda <- omega lambda if rho > 3/4, lambda / omega if
  rho < 1/4 (omega = (19/20)^damping_every);
* (K7) the KL clip of a fixed learning rate (Ba, Grosse & Martens 2017).

Extra arguments of ``update``:

* ``kfac_factors``: the (H6) factors of this minibatch, as a list of ``(A, G)`` pairs or as a
  zero-argument function returning them; a function is called only on statistics steps
  (inside ``lax.cond``), which is how the training step computes them;
* ``kfac_model``: a :class:`QuadraticModel` of this minibatch (cost, loss function, GGN Gram
  function), needed by ``adaptive_lr`` / ``adaptive_damping`` only.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from jaxmlp.nn import checks
from jaxmlp.quantities.curvature import KINDS

Array = jax.Array

__all__ = ["DEFAULTS", "KFAC", "KfacState", "QuadraticModel", "kfac", "precondition"]

#: The defaults of :func:`kfac` that decide a step's cost (chosen from the step-time
#: measurements of docs/curvature.md, "Where a K-FAC step's time goes").
DEFAULTS = {"kind": "mc", "mc_samples": 1, "curvature_every": 20, "inverse_every": 20,
            "damping": 1e-3, "factor_decay": 0.95, "damping_every": 5, "kl_clip": 1e-2}


#: (K5') the largest momentum the quadratic model may choose (its mu is clamped to
#: [0, MAX_MOMENTUM], alpha re-solved for the clamped mu).
MAX_MOMENTUM = 0.99


class QuadraticModel(NamedTuple):
    """What the quadratic model (K5) and the damping rule (K6) need of the minibatch.

    Attributes:
      cost: J(theta) on the minibatch, a scalar (F3).
      loss: ``params -> J(params)`` on the same minibatch (one forward pass, (F1)-(F3)).
      gram: ``[V_1, ..., V_K] -> (K, K)`` matrix of V_i^T G V_j, the GGN of J on the
        minibatch at theta ((H13), :func:`jaxmlp.quantities.curvature.ggn_gram_kernel`).
    """

    cost: Array
    loss: Callable[[Any], Array]
    gram: Callable[[list], Array]


class KfacState(NamedTuple):
    """The state of :func:`kfac`.

    Attributes:
      count: steps done (int32 scalar).
      factors: per layer ``(A (n[l-1]+1, n[l-1]+1), G (n[l], n[l]))``, the averages (K1).
      stats_count: statistics updates done (int32 scalar), the k of (K1).
      inverses: per layer ``(A_inv, G_inv)`` of the damped factors (K2).
      eigen: per layer ``((dA, QA), (dG, QG))`` of the factors at the last refresh when the
        damping adapts (K2e); ``()`` otherwise.
      inverse_damping: the lambda the inverses were built with.
      damping: the current lambda (fixed, or adapted by (K6)).
      velocity: the previous update delta_prev (params-shaped).
      alpha, mu: the learning rate and momentum of the last update (K4)/(K5).
      rho: the last reduction ratio of (K6) (NaN before the first).
      key: raw PRNG key (uint32 (2,)); the training step folds ``count`` into it for the
        Monte Carlo factors of ``kind="mc"``.
    """

    count: Array
    factors: list
    stats_count: Array
    inverses: list
    eigen: Any
    inverse_damping: Array
    damping: Array
    velocity: Any
    alpha: Array
    mu: Array
    rho: Array
    key: Array


class KFAC(optax.GradientTransformationExtraArgs):
    """A ``GradientTransformationExtraArgs`` whose ``update`` needs ``kfac_factors=`` (and
    ``kfac_model=`` when :attr:`needs_model`).

    Attributes (read by :mod:`jaxmlp.train.step`): ``kind`` and ``mc_samples``, how the
    training step computes the factors (:func:`jaxmlp.quantities.curvature.kfac_factors`);
    ``needs_model``, whether it must pass a :class:`QuadraticModel`; ``options``, the
    settings (a dict, for reports).
    """


# ----------------------------------------------------------------------------- inverses


def _pi(A, G):
    """pi of the factored Tikhonov damping (K2), from the traces of A and G."""
    tiny = jnp.finfo(A.dtype).tiny
    tA, tG = jnp.trace(A) / A.shape[0], jnp.trace(G) / G.shape[0]
    return jnp.sqrt(jnp.maximum(tA, tiny) / jnp.maximum(tG, tiny))


def _spd_inverse(M, d):
    """(K2) (M + d I)^{-1} for a symmetric positive semi-definite M and d > 0, symmetrised.

    LU (``jnp.linalg.inv``): of LU, Cholesky and eigh it measured the cheapest on XLA's CPU
    backend (docs/curvature.md), for the same result here.

    Half-precision factors (bfloat16, float16, which LAPACK does not take) are inverted in
    float32 and the inverse cast back (:func:`_solver_dtype`).
    """
    work = _solver_dtype(M.dtype)
    Mw = M.astype(work)
    inv = jnp.linalg.inv(Mw + jnp.asarray(d, work) * jnp.eye(M.shape[0], dtype=work))
    return (0.5 * (inv + inv.T)).astype(M.dtype)


def _solver_dtype(dtype):
    """The dtype the factorisations of (K2) / (K2e) run in: float32 for a half-precision
    factor (bfloat16, float16: no LAPACK kernels), the factor's own dtype otherwise."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def _damped_inverses(factors, damping):
    """(K2) per layer ((A + pi sqrt(lambda) I)^{-1}, (G + sqrt(lambda)/pi I)^{-1})."""
    lam = jnp.sqrt(damping)
    out = []
    for A, G in factors:
        pi = _pi(A, G)
        out.append((_spd_inverse(A, pi * lam), _spd_inverse(G, lam / pi)))
    return out


def _eigen(factors):
    """(K2e) per layer ((dA, QA), (dG, QG)), eigenvalues clipped at 0, and pi (traces);
    half-precision factors are decomposed in float32 (:func:`_solver_dtype`)."""
    out = []
    def eigh(M):  # in float32 for half-precision factors, cast back
        d, Q = jnp.linalg.eigh(M.astype(_solver_dtype(M.dtype)))
        return jnp.maximum(d, 0.0).astype(M.dtype), Q.astype(M.dtype)

    for A, G in factors:
        out.append((eigh(A), eigh(G), _pi(A, G)))
    return out


def _inverses_from_eigen(eigen, damping):
    """(K2e) Q diag(1 / (d + lambda_.)) Q^T of each factor: two matrix products, no new
    factorisation."""
    lam = jnp.sqrt(damping)
    inv = lambda d, Q, s: (Q / (d + s)[None, :]) @ Q.T  # noqa: E731
    return [(inv(*eA, pi * lam), inv(*eG, lam / pi)) for eA, eG, pi in eigen]


def precondition(grads, inverses):
    """(K3) per layer G_inv [dW db] A_inv, split back into ``{"W", "b"}`` (no sign change)."""
    out = []
    for g, (A_inv, G_inv) in zip(grads, inverses):
        Gam = jnp.concatenate([g["W"], g["b"][:, None]], axis=1)  # (n[l], n[l-1] + 1)
        P = G_inv @ Gam @ A_inv
        out.append({"W": P[:, :-1], "b": P[:, -1]})
    return checks.like_params(grads, out)


# ----------------------------------------------------------------------------- helpers


def _vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _vdot_W(a, b):
    """Inner product over the weights W[l] only (weight decay's curvature eta I is on W)."""
    return sum(jnp.vdot(x["W"], y["W"]) for x, y in zip(a, b))


def _axpy(alpha, x, mu, y):
    return jax.tree.map(lambda a, b: alpha * a + mu * b, x, y)


def _check_factor_shapes(got, want):
    if not isinstance(got, (list, tuple)) or len(got) != len(want):
        n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
        raise ValueError(f"kfac_factors: expected {len(want)} layers of (A, G) pairs, got {n}.")
    for l, (pair, (A0, G0)) in enumerate(zip(got, want), start=1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(hasattr(f, "shape") for f in pair)):
            raise ValueError(f"kfac_factors[{l - 1}] (layer {l}): expected an (A, G) pair of "
                             f"arrays of shapes {A0.shape} and {G0.shape}, got {pair!r:.80}.")
        A, G = pair
        if A.shape != A0.shape or G.shape != G0.shape:
            raise ValueError(f"kfac_factors[{l - 1}] (layer {l}): expected shapes "
                             f"{A0.shape} and {G0.shape}, got {A.shape} and {G.shape}.")


def _solve_2x2(C, b, has_prev):
    """(K5) [alpha, mu] = -C^{-1} b, or (alpha, 0) = (-b0 / C00, 0) without a previous update."""
    c00, c01, c11 = C[0, 0], C[0, 1], C[1, 1]
    det = c00 * c11 - c01 * c01
    tiny = jnp.finfo(C.dtype).tiny
    ok = has_prev & (det > 1e-12 * jnp.maximum(c00 * c11, tiny))
    safe_det = jnp.where(ok, det, 1.0)
    alpha2 = -(c11 * b[0] - c01 * b[1]) / safe_det
    mu2 = -(c00 * b[1] - c01 * b[0]) / safe_det
    alpha1 = -b[0] / jnp.maximum(c00, tiny)
    return jnp.where(ok, alpha2, alpha1), jnp.where(ok, mu2, 0.0)


# ----------------------------------------------------------------------------- the transformation


def kfac(
    learning_rate: Union[float, optax.Schedule, None],
    *,
    damping: float = DEFAULTS["damping"],
    curvature_every: int = DEFAULTS["curvature_every"],
    inverse_every: int = DEFAULTS["inverse_every"],
    factor_decay: float = DEFAULTS["factor_decay"],
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    kind: str = DEFAULTS["kind"],
    mc_samples: int = DEFAULTS["mc_samples"],
    seed: int = 0,
    kl_clip: Union[float, str, None] = "auto",
    adaptive_lr: bool = False,
    adaptive_momentum: bool = False,
    adaptive_damping: bool = False,
    damping_every: int = DEFAULTS["damping_every"],
    min_damping: float = 1e-8,
    max_damping: float = 1e3,
    model_clip: bool = True,
) -> KFAC:
    """K-FAC as an optax transformation taking ``kfac_factors`` (and ``kfac_model``) as extra args.

    Arguments:
      learning_rate: alpha > 0 or an optax schedule of the step count (K4); None exactly
        when ``adaptive_lr`` (the quadratic model chooses alpha, (K5)). A concrete 0-d array
        is read as the number it holds; a traced 0-d floating array is a rate held in an
        optimizer state, its value then the caller's to check (as for
        :func:`jaxmlp.train.make_optimizer`). For such a rate wrap a function of the rate
        alone, e.g. ``optax.inject_hyperparams(lambda learning_rate: kfac(learning_rate,
        damping=1e-2))(learning_rate=0.1)``: ``optax.inject_hyperparams(kfac)`` would hold every
        numeric argument, defaults included, in its state, traced inside ``jax.jit``, where
        the other arguments have no value to check. The wrapped transformation is no
        :class:`KFAC`, so the training step passes it no factors: call its ``update`` with
        ``kfac_factors=`` (and ``kfac_model=``) yourself.
      damping: lambda > 0 (the initial value when ``adaptive_damping``), split between the
        factors (K2); weight_decay is added to it (the penalty's curvature).
      curvature_every: statistics of the factors every k >= 1 steps (K1) (``lax.cond``:
        the factors of the other steps are not computed).
      inverse_every: inverses every k >= 1 steps (K2), reused in between (``lax.cond``).
      factor_decay: in [0, 1): the averages' weight w_k = max(1 - factor_decay, 1/k) (K1).
      momentum: mu in [0, 1) of (K4); with ``adaptive_momentum`` it is chosen by (K5).
      weight_decay: eta >= 0: eta W[l] added to the gradient of W[l], eta ||V_W||^2 to the
        quadratic model's curvature.
      kind, mc_samples: how the training step computes the factors ("mc" = KFAC with
        ``mc_samples`` sampled columns (H12), the default; "exact" = KFLR, n[L] columns;
        "empirical"); ``seed`` seeds the draws.
      kl_clip: None, or c > 0: a fixed-rate update is scaled by min(1, sqrt(c / (alpha
        |delta . g|))) (K7). Not with ``adaptive_lr``. ``"auto"`` (default): 1e-2 with a
        fixed learning rate (without it a fixed rate diverged at every rate and damping
        tried on the deep autoencoder, docs/curvature.md), None with ``adaptive_lr``.
      adaptive_lr: alpha from the quadratic model (K5), each step (two R-forward sweeps).
      adaptive_momentum: mu from the quadratic model too (needs ``adaptive_lr``).
      model_clip: with ``adaptive_lr``, scale (alpha, mu) so that the model's predicted
        decrease -M(delta) is at most |J| of the minibatch (K5''): no cost here is negative,
        so a larger predicted decrease is outside the model's trust region (without it the
        64-512-512-10 classifier diverged once its softmax saturated, docs/curvature.md).
      adaptive_damping: lambda by the Levenberg-Marquardt rule (K6) every ``damping_every``
        steps (one more forward pass, plus one R-forward sweep without ``adaptive_lr``),
        clipped to [min_damping, max_damping]; the inverses then come from eigenvectors (K2e).

    Returns:
      a :class:`KFAC`; ``update(grads, state, params, *, kfac_factors, kfac_model=None)``.
    """
    if adaptive_lr:
        if learning_rate is not None:
            raise ValueError(f"learning_rate: the quadratic model (K5) chooses the learning rate "
                             f"when adaptive_lr=True; pass learning_rate=None, got {learning_rate!r}.")
    elif learning_rate is None:
        raise ValueError("learning_rate: expected a number > 0 or an optax schedule (or "
                         "adaptive_lr=True, which chooses it), got None.")
    elif isinstance(learning_rate, jax.core.Tracer):
        # A rate held in an optimizer state, traced (optax.inject_hyperparams inside jax.jit):
        # its value is the caller's to check, as for jaxmlp.train.make_optimizer.
        if learning_rate.ndim != 0 or not jnp.issubdtype(learning_rate.dtype, jnp.floating):
            raise TypeError(f"learning_rate: expected a number > 0 or a 0-d floating array, got "
                            f"an array of shape {tuple(learning_rate.shape)} and dtype "
                            f"{learning_rate.dtype}.")
    elif not callable(learning_rate):
        learning_rate = checks.real_number("learning_rate", learning_rate, low=0, low_open=True)
    damping = checks.real_number("damping", damping, low=0, low_open=True)
    curvature_every = checks.positive_int("curvature_every", curvature_every)
    inverse_every = checks.positive_int("inverse_every", inverse_every)
    damping_every = checks.positive_int("damping_every", damping_every)
    factor_decay = checks.real_number("factor_decay", factor_decay, low=0, high=1, high_open=True)
    momentum = checks.real_number("momentum", momentum, low=0, high=1, high_open=True)
    weight_decay = checks.real_number("weight_decay", weight_decay, low=0)
    min_damping = checks.real_number("min_damping", min_damping, low=0, low_open=True)
    max_damping = checks.real_number("max_damping", max_damping, low=min_damping)
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}.")
    mc_samples = checks.positive_int("mc_samples", mc_samples)
    if kind != "mc" and mc_samples != DEFAULTS["mc_samples"]:  # as kfac_factors refuses it
        raise ValueError(f"mc_samples: only kind='mc' draws samples, got mc_samples="
                         f"{mc_samples} with kind={kind!r}.")
    for name, flag in (("adaptive_lr", adaptive_lr), ("adaptive_momentum", adaptive_momentum),
                       ("adaptive_damping", adaptive_damping), ("model_clip", model_clip)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False, got {flag!r}.")
    if adaptive_momentum and not adaptive_lr:
        raise ValueError("adaptive_momentum: the 2 x 2 system (K5) solves for the learning rate "
                         "and the momentum together; set adaptive_lr=True as well.")
    if adaptive_momentum and momentum != 0.0:
        raise ValueError(f"momentum: chosen by the quadratic model when adaptive_momentum=True; "
                         f"leave it at 0, got {momentum}.")
    if isinstance(kl_clip, str):
        if kl_clip != "auto":
            raise ValueError(f"kl_clip: expected None, a number > 0 or 'auto', got {kl_clip!r}.")
        kl_clip = None if adaptive_lr else DEFAULTS["kl_clip"]
    if kl_clip is not None:
        kl_clip = checks.real_number("kl_clip", kl_clip, low=0, low_open=True)
        if adaptive_lr:
            raise ValueError(f"kl_clip: bounds a fixed learning rate's step; with adaptive_lr "
                             f"the quadratic model (K5) sizes it. Pass kl_clip=None, got {kl_clip}.")
    if isinstance(seed, jax.Array):
        # optax.inject_hyperparams(kfac) holds every numeric argument, defaults included, in
        # its state as an array; the counts and the seed decide shapes and schedules.
        raise TypeError(
            f"seed: expected a Python integer, got an array ({seed!r}), as "
            "optax.inject_hyperparams(kfac) passes every numeric argument. For a varying rate "
            "in jaxmlp.fit / make_train_epoch / make_train_step, give kfac an optax schedule: "
            "kfac(optax.cosine_decay_schedule(0.1, steps)). To hold the rate in a state, inject "
            "a function of the rate alone, optax.inject_hyperparams(lambda learning_rate: "
            "kfac(learning_rate, damping=...))(learning_rate=0.1), and call its update with "
            "kfac_factors= yourself (the training step passes the factors to a kfac it is "
            "given directly).")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an integer, got {seed!r}.")
    if (damping < min_damping or damping > max_damping) and adaptive_damping:
        raise ValueError(f"damping: expected a value in [min_damping, max_damping] = "
                         f"[{min_damping}, {max_damping}], got {damping}.")
    needs_model = adaptive_lr or adaptive_damping
    omega = (19.0 / 20.0) ** damping_every

    def init(params):
        dtype = params[0]["W"].dtype
        factors, inverses, eigen = [], [], []
        for layer in params:
            n, p = layer["W"].shape
            A, G = jnp.eye(p + 1, dtype=dtype), jnp.eye(n, dtype=dtype)
            factors.append((A, G))
            inverses.append((A, G))
            eigen.append(((jnp.ones(p + 1, dtype), A), (jnp.ones(n, dtype), G),
                          jnp.ones((), dtype)))
        zero = jnp.zeros((), dtype)
        return KfacState(
            count=jnp.zeros((), jnp.int32), factors=factors,
            stats_count=jnp.zeros((), jnp.int32), inverses=inverses,
            eigen=eigen if adaptive_damping else (),
            inverse_damping=jnp.asarray(-1.0, dtype),  # none built yet: the first step builds
            damping=jnp.asarray(damping, dtype),
            velocity=jax.tree.map(jnp.zeros_like, params),
            alpha=zero, mu=zero, rho=jnp.asarray(jnp.nan, dtype),
            key=jax.random.PRNGKey(seed),
        )

    def update(grads, state, params=None, *, kfac_factors=None, kfac_model=None, **extra):
        del extra
        if kfac_factors is None:
            raise ValueError(
                "kfac_factors: K-FAC needs the Kronecker factors of this step (a list of (A, G) "
                "pairs or a function returning them), e.g. kfac_factors=lambda: "
                "jaxmlp.quantities.curvature.kfac_factors(net, params, X, Y); got None. The "
                "training step passes them only to a K-FAC transformation it is given itself: "
                "not one wrapped in optax.chain or another transformation (for L2, use "
                "kfac(..., weight_decay=...)).")
        if needs_model and not isinstance(kfac_model, QuadraticModel):
            raise ValueError(
                "kfac_model: adaptive_lr / adaptive_damping need the quadratic model of this "
                "minibatch, a jaxmlp.train.kfac.QuadraticModel(cost, loss, gram) (the training "
                f"step passes it); got {type(kfac_model).__name__}.")
        if (weight_decay > 0 or needs_model) and params is None:
            raise ValueError("params: weight_decay > 0 and the quadratic model need "
                             "update(..., params).")
        if callable(kfac_factors):
            get_factors = kfac_factors
            try:
                factor_shapes = jax.eval_shape(get_factors)
            except TypeError as e:  # a function returning something that is not arrays
                raise ValueError(f"kfac_factors: the function given returned no (A, G) arrays "
                                 f"per layer: {str(e).splitlines()[0]}") from None
        else:
            _check_factor_shapes(kfac_factors, state.factors)  # before tracing it
            get_factors, factor_shapes = (lambda: kfac_factors), kfac_factors
        _check_factor_shapes(factor_shapes, state.factors)
        c = state.count
        dtype = state.damping.dtype

        # (K1) statistics every curvature_every steps; the factors are computed only then.
        def new_stats(args):
            old, k = args
            w = jnp.maximum(1.0 - factor_decay, 1.0 / (k + 1).astype(dtype))
            new = [tuple(f) for f in get_factors()]
            return jax.tree.map(lambda o, n: (1.0 - w) * o + w * n.astype(o.dtype), old, new), k + 1

        factors, stats_count = jax.lax.cond(c % curvature_every == 0, new_stats, lambda a: a,
                                            (state.factors, state.stats_count))

        # (K2) / (K2e) inverses: refreshed every inverse_every steps; rebuilt from the
        # eigenvectors (no factorisation) when only the damping changed.
        lam = state.damping
        lam_total = lam + weight_decay
        refresh = c % inverse_every == 0
        if adaptive_damping:
            branch = jnp.where(refresh, 2, jnp.where(lam != state.inverse_damping, 1, 0))
            eigen, inverses = jax.lax.switch(branch, [
                lambda f, e, i: (e, i),
                lambda f, e, i: (e, _inverses_from_eigen(e, lam_total)),
                lambda f, e, i: (lambda e2: (e2, _inverses_from_eigen(e2, lam_total)))(_eigen(f)),
            ], factors, state.eigen, state.inverses)
        else:
            eigen = state.eigen
            inverses = jax.lax.cond(refresh, lambda f, i: _damped_inverses(f, lam_total),
                                    lambda f, i: i, factors, state.inverses)

        if weight_decay > 0:
            grads = checks.like_params(grads, [{"W": g["W"] + weight_decay * p["W"], "b": g["b"]}
                                               for g, p in zip(grads, params)])
        # (K3) the proposal, (K4)/(K5) its step.
        Delta = jax.tree.map(jnp.negative, precondition(grads, inverses))
        prev = state.velocity
        has_prev = c > 0
        gram = None
        if adaptive_lr:
            gram = kfac_model.gram([Delta, prev])  # (H13): [[D G D, D G p], [p G D, p G p]]
            Wd = jnp.array([[_vdot_W(Delta, Delta), _vdot_W(Delta, prev)],
                            [_vdot_W(Delta, prev), _vdot_W(prev, prev)]])
            plain = jnp.array([[_vdot(Delta, Delta), _vdot(Delta, prev)],
                               [_vdot(Delta, prev), _vdot(prev, prev)]])
            C = gram + weight_decay * Wd + lam * plain
            b = jnp.array([_vdot(grads, Delta), _vdot(grads, prev)])
            if adaptive_momentum:
                alpha, mu = _solve_2x2(C, b, has_prev)
                # (K5') mu outside [0, max_momentum]: the minibatch model's extrapolation along
                # a nearly collinear pair; clamp mu, then alpha minimises the model given mu.
                clamped = jnp.clip(mu, 0.0, MAX_MOMENTUM)
                alpha = jnp.where(clamped == mu, alpha, -(b[0] + clamped * C[0, 1])
                                  / jnp.maximum(C[0, 0], jnp.finfo(dtype).tiny))
                mu = clamped
            else:
                mu = jnp.asarray(momentum, dtype)
                alpha = -(b[0] + mu * C[0, 1]) / jnp.maximum(C[0, 0], jnp.finfo(dtype).tiny)
            if model_clip:
                # (K5'') the model's predicted decrease -M(delta) is capped at J >= 0: a
                # minibatch model that predicts more than the whole cost is outside its trust
                # region (a saturated softmax's GGN nearly vanishes along the step).
                coef = jnp.stack([alpha, mu])
                decrease = -(0.5 * coef @ C @ coef + b @ coef)
                J = jnp.abs(kfac_model.cost).astype(dtype)
                scale = jnp.where(decrease > J, J / jnp.maximum(decrease, jnp.finfo(dtype).tiny),
                                  1.0)
                alpha, mu = alpha * scale, mu * scale
        else:
            alpha = learning_rate(c) if callable(learning_rate) else learning_rate
            alpha = jnp.asarray(alpha, dtype)
            mu = jnp.asarray(momentum, dtype)
        delta = _axpy(alpha, Delta, mu, prev)
        if kl_clip is not None:  # (K7)
            dg = jnp.abs(_vdot(delta, grads))
            scale = jnp.minimum(1.0, jnp.sqrt(kl_clip / jnp.maximum(alpha * dg, 1e-30)))
            delta = jax.tree.map(lambda d: scale * d, delta)
            alpha, mu = alpha * scale, mu * scale

        # (K6) Levenberg-Marquardt damping every damping_every steps.
        rho, new_lam = state.rho, lam
        if adaptive_damping:
            def adapt(_):
                if gram is not None:
                    coef = jnp.stack([alpha, mu])
                    dGd = coef @ gram @ coef
                else:
                    dGd = kfac_model.gram([delta])[0, 0]
                predicted = 0.5 * (dGd + weight_decay * _vdot_W(delta, delta)) + _vdot(grads, delta)
                new_params = optax.apply_updates(params, delta)
                penalty = lambda p: 0.5 * weight_decay * sum(jnp.vdot(x["W"], x["W"]) for x in p)  # noqa: E731
                actual = (kfac_model.loss(new_params) + penalty(new_params)
                          - kfac_model.cost - penalty(params))
                r = jnp.where(predicted < 0, actual / jnp.where(predicted < 0, predicted, -1.0),
                              -jnp.inf)
                r = jnp.where(jnp.isnan(r), -jnp.inf, r)
                lam2 = jnp.where(r > 0.75, lam * omega, jnp.where(r < 0.25, lam / omega, lam))
                return r.astype(dtype), jnp.clip(lam2, min_damping, max_damping).astype(dtype)

            rho, new_lam = jax.lax.cond(c % damping_every == 0, adapt,
                                        lambda _: (state.rho, lam), None)
        inverse_damping = jnp.where(refresh | (lam != state.inverse_damping), lam,
                                    state.inverse_damping)
        updates = delta
        return updates, KfacState(c + 1, factors, stats_count, inverses, eigen, inverse_damping,
                                  new_lam, delta, jnp.asarray(alpha, dtype), jnp.asarray(mu, dtype),
                                  rho, state.key)

    t = KFAC(init, update)
    t.kind = kind
    t.mc_samples = mc_samples
    t.needs_model = needs_model
    t.options = {"learning_rate": None if callable(learning_rate) else learning_rate,
                 "damping": damping, "curvature_every": curvature_every,
                 "inverse_every": inverse_every, "factor_decay": factor_decay,
                 "momentum": momentum, "weight_decay": weight_decay, "kind": kind,
                 "mc_samples": mc_samples, "kl_clip": kl_clip, "adaptive_lr": adaptive_lr,
                 "adaptive_momentum": adaptive_momentum, "adaptive_damping": adaptive_damping,
                 "damping_every": damping_every, "model_clip": model_clip and adaptive_lr}
    return t
