"""K-FAC for optax: a preconditioner that takes the Kronecker factors as an extra argument.

The factors (H6) of docs/derivations.md come from :func:`jaxmlp.quantities.curvature.kfac_factors`
(or, inside training, from the same forward pass as the gradient:
:mod:`jaxmlp.train.step` computes them whenever the optimizer is a :class:`KFAC`). The
transformation is an ``optax.GradientTransformationExtraArgs``::

    opt = jaxmlp.train.kfac.kfac(1.0, damping=1e-3)
    state = opt.init(params)
    factors = jaxmlp.quantities.curvature.kfac_factors(net, params, X, Y)
    updates, state = opt.update(grads, state, params, kfac_factors=factors)

Per layer, with Gamma = [dW b] (n[l], n[l-1]+1) the gradient of [W[l] b[l]] (bias last
column), the K-FAC direction is

    (kron(G, A) + damping)^{-1} vec(Gamma) ~ vec((G + lambda/pi I)^{-1} Gamma (A + pi lambda I)^{-1})

(row-major vec, (H6)), with lambda = sqrt(damping) and pi = sqrt((tr A / dim A) / (tr G /
dim G)), the factored Tikhonov damping of Martens & Grosse (2015). The factors are running
averages (``factor_decay``; the first step takes the new factors as they are); their
inverses are recomputed every ``inverse_every`` steps (``jax.lax.cond``) and reused in
between. The update is ``-learning_rate * v`` with v = momentum v + direction.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from jaxmlp.nn import checks
from jaxmlp.quantities.curvature import KINDS

Array = jax.Array

__all__ = ["KFAC", "KfacState", "kfac", "precondition"]


class KfacState(NamedTuple):
    """The state of :func:`kfac`.

    Attributes:
      count: steps done (int32 scalar).
      factors: per layer ``(A (n[l-1]+1, n[l-1]+1), G (n[l], n[l]))``, running averages.
      inverses: per layer ``(A_inv, G_inv)`` of the damped factors, last refreshed at a
        step that is a multiple of ``inverse_every``.
      velocity: params-shaped momentum buffer.
      key: raw PRNG key (uint32 (2,)); the training step folds ``count`` into it for the
        Monte Carlo factors of ``kind="mc"``.
    """

    count: Array
    factors: list
    inverses: list
    velocity: Any
    key: Array


class KFAC(optax.GradientTransformationExtraArgs):
    """A ``GradientTransformationExtraArgs`` whose ``update`` needs ``kfac_factors=``.

    Attributes (read by :mod:`jaxmlp.train.step`): ``kind`` and ``mc_samples``, how the
    training step computes the factors (:func:`jaxmlp.quantities.curvature.kfac_factors`).
    """


def _spd_inverse(M, d):
    """(M + d I)^{-1} for a symmetric positive semi-definite M and d > 0, symmetrised.

    LU (``jnp.linalg.inv``): on XLA's CPU backend a Cholesky solve of a 65 x 65 system
    measured ~700 times slower (its triangular solve), for the same result here.
    """
    inv = jnp.linalg.inv(M + d * jnp.eye(M.shape[0], dtype=M.dtype))
    return 0.5 * (inv + inv.T)


def _damped_inverses(factors, damping):
    lam = jnp.sqrt(damping)
    out = []
    for A, G in factors:
        dA, dG = A.shape[0], G.shape[0]
        tA, tG = jnp.trace(A) / dA, jnp.trace(G) / dG
        tiny = jnp.finfo(A.dtype).tiny
        pi = jnp.sqrt(jnp.maximum(tA, tiny) / jnp.maximum(tG, tiny))
        out.append((_spd_inverse(A, pi * lam), _spd_inverse(G, lam / pi)))
    return out


def precondition(grads, inverses):
    """(H6) per layer G_inv [dW db] A_inv, split back into ``{"W", "b"}``."""
    out = []
    for g, (A_inv, G_inv) in zip(grads, inverses):
        Gam = jnp.concatenate([g["W"], g["b"][:, None]], axis=1)  # (n[l], n[l-1] + 1)
        P = G_inv @ Gam @ A_inv
        out.append({"W": P[:, :-1], "b": P[:, -1]})
    return checks.like_params(grads, out)


def kfac(
    learning_rate: Union[float, optax.Schedule],
    *,
    damping: float = 1e-3,
    inverse_every: int = 1,
    factor_decay: float = 0.95,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    kind: str = "exact",
    mc_samples: int = 1,
    seed: int = 0,
    kl_clip: Optional[float] = None,
) -> KFAC:
    """The K-FAC optimizer as an optax transformation taking ``kfac_factors`` as extra arg.

    Arguments:
      learning_rate: eta > 0 or an optax schedule of the step count.
      damping: Tikhonov damping > 0 added to kron(G, A) (split between the factors).
      inverse_every: recompute the inverses every k >= 1 steps (``lax.cond``).
      factor_decay: in [0, 1): running average F <- decay F + (1 - decay) F_new.
      momentum: in [0, 1); weight_decay: >= 0, lambda W added to the gradient of W[l].
      kind, mc_samples: how :mod:`jaxmlp.train.step` computes the factors ("exact" = KFLR,
        "mc" = KFAC with ``mc_samples`` draws, "empirical"); ``seed`` seeds the draws.
      kl_clip: None, or c > 0: the update is scaled by min(1, sqrt(c / (eta^2 v.g))) (the
        "KL clipping" of Ba, Grosse & Martens 2017), which bounds the step where the
        curvature model is poor.

    Returns:
      a :class:`KFAC`; ``update(grads, state, params, *, kfac_factors)``.
    """
    if not callable(learning_rate):
        learning_rate = checks.real_number("learning_rate", learning_rate, low=0, low_open=True)
    damping = checks.real_number("damping", damping, low=0, low_open=True)
    inverse_every = checks.positive_int("inverse_every", inverse_every)
    factor_decay = checks.real_number("factor_decay", factor_decay, low=0, high=1, high_open=True)
    momentum = checks.real_number("momentum", momentum, low=0, high=1, high_open=True)
    weight_decay = checks.real_number("weight_decay", weight_decay, low=0)
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}.")
    mc_samples = checks.positive_int("mc_samples", mc_samples)
    if kl_clip is not None:
        kl_clip = checks.real_number("kl_clip", kl_clip, low=0, low_open=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an integer, got {seed!r}.")

    def init(params):
        dtype = params[0]["W"].dtype
        factors = []
        for layer in params:
            n, p = layer["W"].shape
            factors.append((jnp.eye(p + 1, dtype=dtype), jnp.eye(n, dtype=dtype)))
        return KfacState(
            count=jnp.zeros((), jnp.int32),
            factors=factors,
            inverses=[(jnp.eye(A.shape[0], dtype=dtype), jnp.eye(G.shape[0], dtype=dtype))
                      for A, G in factors],
            velocity=jax.tree.map(jnp.zeros_like, params),
            key=jax.random.PRNGKey(seed),
        )

    def update(grads, state, params=None, *, kfac_factors=None, **extra):
        del extra
        if kfac_factors is None:
            raise ValueError(
                "kfac_factors: K-FAC needs the Kronecker factors of this step, e.g. "
                "update(grads, state, params, kfac_factors=jaxmlp.quantities.curvature.kfac_factors(net, "
                "params, X, Y)); got None.")
        if len(kfac_factors) != len(state.factors):
            raise ValueError(f"kfac_factors: expected {len(state.factors)} layers, got "
                             f"{len(kfac_factors)}.")
        for l, ((A, G), (A0, G0)) in enumerate(zip(kfac_factors, state.factors), start=1):
            if A.shape != A0.shape or G.shape != G0.shape:
                raise ValueError(f"kfac_factors[{l - 1}] (layer {l}): expected shapes "
                                 f"{A0.shape} and {G0.shape}, got {A.shape} and {G.shape}.")
        c = state.count
        first = c == 0
        factors = jax.tree.map(
            lambda old, new: jnp.where(first, new, factor_decay * old + (1.0 - factor_decay) * new),
            state.factors, [tuple(f) for f in kfac_factors])
        inverses = jax.lax.cond(
            c % inverse_every == 0,
            lambda f: _damped_inverses(f, damping),
            lambda f: state.inverses,
            factors)
        if weight_decay > 0:
            if params is None:
                raise ValueError("params: weight_decay > 0 needs update(..., params).")
            grads = checks.like_params(grads, [{"W": g["W"] + weight_decay * p["W"], "b": g["b"]}
                                                   for g, p in zip(grads, params)])
        direction = precondition(grads, inverses)
        velocity = jax.tree.map(lambda v, d: momentum * v + d, state.velocity, direction)
        lr = learning_rate(c) if callable(learning_rate) else learning_rate
        if kl_clip is not None:
            vg = sum(jnp.vdot(v, g) for v, g in zip(jax.tree.leaves(velocity), jax.tree.leaves(grads)))
            lr = lr * jnp.minimum(1.0, jnp.sqrt(kl_clip / jnp.maximum(lr * lr * vg, 1e-30)))
        updates = jax.tree.map(lambda v: -lr * v, velocity)
        return updates, KfacState(c + 1, factors, inverses, velocity, state.key)

    t = KFAC(init, update)
    t.kind = kind
    t.mc_samples = mc_samples
    return t
