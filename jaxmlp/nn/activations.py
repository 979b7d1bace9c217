"""Activation functions g[l] with their hand-derived backward rules (F2) and (B4).

Every entry of the registry is one :class:`Activation`: the forward map ``A = g(Z)``
next to the backward rule ``dZ = (dA[l]/dZ[l]) dA`` written out, as in (B4) of
docs/derivations.md. All rules act on axis 0 (units), so the same function serves a
single column ``z`` of shape ``(n,)`` and a batch ``Z`` of shape ``(n, m)``.

The four activations of the seeds (ReLU, sigmoid, tanh, softmax) follow the
derivations. The others are derived below in the seeds' notation; for an
element-wise g the Jacobian ``da[:,i]/dz[:,i]`` is diagonal, so (B4) becomes
``dZ = dA * g'(Z)`` and each derivation only needs ``g'``.

Derivations beyond the seeds (element-wise, so dZ = dA * g'(Z)):

* linear:      g(z) = z,                      g'(z) = 1.
* leaky ReLU:  g(z) = z if z > 0 else a z,    g'(z) = 1 if z > 0 else a  (a = 0.01;
  g'(0) := a, matching ReLU's convention g'(0) := 0 for a = 0).
* ELU:         g(z) = z if z > 0 else exp(z) - 1,  g'(z) = 1 if z > 0 else exp(z)
  (alpha = 1; exp(z) = g(z) + 1 on the negative side; g'(0) := 1).
* softplus:    g(z) = log(1 + exp(z)),        g'(z) = exp(z) / (1 + exp(z)) = sigmoid(z).
* SiLU:        g(z) = z sigmoid(z),           g'(z) = sigmoid(z) + z sigmoid'(z)
  = sigmoid(z) (1 + z sigmoid(-z)), using sigmoid'(z) = sigmoid(z) sigmoid(-z).
* GELU (tanh): g(z) = (z/2)(1 + tanh(u)), u = c (z + k z^3), c = sqrt(2/pi), k = 0.044715.
  Since (1 + tanh(u))/2 = sigmoid(2u), g(z) = z sigmoid(2u) and
  g'(z) = sigmoid(2u) + z * 2 sigmoid(2u) sigmoid(-2u) * c (1 + 3 k z^2).

Numerical forms (all algebraically equal to the seeds' formulas):

* At the kinks the derivative is a convention: ReLU g'(0) := 0, leaky ReLU a, ELU 1.
  The forward maps are written with ``where`` so that autodiff (used only as an oracle)
  follows the same conventions: ``jnp.maximum(Z, 0)`` would give 1/2 at 0.
* NaN propagates: g(NaN) = NaN and g'(NaN) = NaN for every activation, so a NaN anywhere
  in Z reaches A, the cost and the gradient (non-finite data never yields a finite cost).
  A comparison with NaN is False, so ``where(Z > 0, Z, 0)`` would map NaN to 0 (and the
  rule I(Z > 0) would give g'(NaN) = 0): ReLU is written ``where(Z <= 0, 0, Z)`` instead, and
  the piecewise-constant derivatives (linear, ReLU, leaky ReLU) go through
  :func:`_nan_where_z_is`. Infinite Z follows the limits (ReLU(-inf) = 0, g'(+inf) = 1).
* sigmoid'(z) = sigmoid(z) sigmoid(-z) instead of A (1 - A): at z = 40 this is
  4.2e-18, where 1 - A cancels to 0 (jax PR #40825).
* tanh'(z) = 1 - tanh(z)^2 = 4 e^{-2|z|} / (1 + e^{-2|z|})^2, the same quantity without
  the cancellation of 1 - A*A when |A| is close to 1.
* softmax subtracts the column maximum before exponentiating; softplus is
  ``logaddexp(z, 0)``; both stay finite and exact for |z| up to 1e4 and beyond.

Second derivatives g''(z) (``Activation.second_derivative``), for the curvature quantities of
:mod:`jaxmlp.quantities.curvature` (the residual terms (H10)-(H12) of docs/derivations.md). With
s = sigmoid(z), sbar = sigmoid(-z) = 1 - s, and sbar - s = -tanh(z/2) (no cancellation
near z = 0):

* linear, ReLU, leaky ReLU: g'' = 0 (ReLU family: 0 on both sides of the kink).
* ELU:       g''(z) = 0 if z > 0 else exp(z)  (at 0 the left branch, as autodiff of
  the where-form gives).
* sigmoid:   g'' = s sbar (sbar - s) = -s sbar tanh(z/2).
* tanh:      g'' = -2 tanh(z) tanh'(z), tanh' in its cancellation-free form.
* softplus:  g'' = sigmoid'(z) = s sbar.
* SiLU:      g'' = s sbar (2 + z (sbar - s)) = s sbar (2 - z tanh(z/2)).
* GELU:      with S = sigmoid(2u), P = S (1 - S) = sigmoid(2u) sigmoid(-2u),
  u' = c (1 + 3 k z^2), u'' = 6 c k z: g' = S + 2 z P u' and
  g'' = 2 P (2 u' - 2 z u'^2 tanh(u) + z u'').
* softmax: not element-wise (``second_derivative`` is None); its second-order rule, the matrix
  sum_p dA_p d^2 a_p / dz^2 = diag(dZ) - dZ a^T - a dZ^T with dZ its (B4), is written in
  :mod:`jaxmlp.quantities.curvature` (H11).

Each is a product of bounded factors and a decaying factor (s sbar ~ e^{-|z|}), so it
stays finite at saturation (|z| = 1e3) and goes to 0 there, as the exact value does.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array


class Activation(NamedTuple):
    """One activation g: its forward map and its backward rule (B4).

    Attributes:
      name: registry name, e.g. ``"relu"``.
      forward: ``Z -> A``, shapes ``(n,)`` or ``(n, m)``, (F2).
      backward: ``(dA, Z, A) -> dZ``, all of the shape of Z, (B4).
      init: default initialisation scheme name (see ``jaxmlp.nn.init``).
      unit_range: True when every output lies in (0, 1), so cross-entropy costs
        may be evaluated on it.
      log_output: ``Z -> log A`` computed from Z without forming A (None when
        ``unit_range`` is False); used to evaluate cross-entropy costs stably.
      log1m_output: ``(Z, A) -> log(1 - A)`` computed stably (None likewise).
      elementwise: False only for softmax (and rules registered as such), whose Jacobian
        is full.
      second_derivative: ``Z -> g''(Z)`` (same shape as Z): every built-in element-wise
        g (derived in the module docstring) and the registered rules that supply it
        (``jaxmlp.register_activation(..., second_derivative=...)``); None for softmax.
        Used by the curvature quantities of :mod:`jaxmlp.quantities.curvature`.
    """

    name: str
    forward: Callable[[Array], Array]
    backward: Callable[[Array, Array, Array], Array]
    init: str
    unit_range: bool = False
    log_output: Optional[Callable[[Array], Array]] = None
    log1m_output: Optional[Callable[[Array, Array], Array]] = None
    elementwise: bool = True
    second_derivative: Optional[Callable[[Array], Array]] = None


def _elementwise(name: str, g: Callable, g_prime: Callable, init: str, second: Callable,
                 **kw) -> Activation:
    """Lifts an element-wise g with derivative ``g_prime(Z, A)`` to (B4): dZ = dA * g'(Z),
    and records its second derivative ``second(Z)`` = g''(Z)."""
    return Activation(
        name=name,
        forward=g,
        backward=lambda dA, Z, A: dA * g_prime(Z, A),
        init=init,
        second_derivative=second,
        **kw,
    )


LEAKY_RELU_SLOPE = 0.01
_GELU_C = 0.7978845608028654  # sqrt(2 / pi)
_GELU_K = 0.044715


def _nan_where_z_is(Z, G):
    """g'(Z) = G where Z is a number, NaN where Z is NaN (G constant on each piece)."""
    return jnp.where(jnp.isnan(Z), Z, G).astype(Z.dtype)


def _tanh_prime(Z, A):
    # 1 - tanh(z)^2 written as 4 e^{-2|z|} / (1 + e^{-2|z|})^2: no cancellation near |A| = 1.
    e = jnp.exp(-2.0 * jnp.abs(Z))
    return 4.0 * e / jnp.square(1.0 + e)


def _zero(Z):
    return jnp.zeros_like(Z)


def _sigmoid_pair(Z):
    """sigmoid(z) sigmoid(-z) = s (1 - s), without the cancellation of 1 - s."""
    return jax.nn.sigmoid(Z) * jax.nn.sigmoid(-Z)


def _elu_second(Z):
    return jnp.where(Z > 0, 0.0, jnp.exp(jnp.where(Z > 0, 0, Z))).astype(Z.dtype)


def _sigmoid_second(Z):
    return -_sigmoid_pair(Z) * jnp.tanh(0.5 * Z)


def _tanh_second(Z):
    return -2.0 * jnp.tanh(Z) * _tanh_prime(Z, None)


def _silu_second(Z):
    return _sigmoid_pair(Z) * (2.0 - Z * jnp.tanh(0.5 * Z))


def _gelu_second(Z):
    # |U| > 40: P = sech^2(U) / 4 < 1e-34, so g''(z) is 0 to any float dtype's precision, while
    # the polynomial factor (~ z^5) overflows past |z| ~ 1e8 in float32 (0 x inf = NaN): such
    # z give exactly 0, as autodiff's g'' does there
    far = jnp.abs(_GELU_C * (Z + _GELU_K * Z * Z * Z)) > 40.0
    Z = jnp.where(far, jnp.zeros_like(Z), Z)
    U = _GELU_C * (Z + _GELU_K * Z * Z * Z)
    P = jax.nn.sigmoid(2.0 * U) * jax.nn.sigmoid(-2.0 * U)
    dU = _GELU_C * (1.0 + 3.0 * _GELU_K * Z * Z)
    d2 = 2.0 * P * (2.0 * dU - 2.0 * (Z * dU) * (dU * jnp.tanh(U)) + Z * (6.0 * _GELU_C * _GELU_K * Z))
    return jnp.where(far, jnp.zeros_like(d2), d2)


def _column_shift(Z):
    """The shift of each column of Z before exponentiating: its maximum, or 0 where that
    maximum is not finite (the convention of ``jax.nn.logsumexp``), as a constant.

    Softmax and log-softmax are invariant to the shift, so the guard changes no value;
    it also keeps the column reduction a kernel of its own: XLA:CPU otherwise fuses
    a bare maximum over Z[L] into the YNNPACK matrix product (F1) that produces Z[L],
    and that fused product is slower than the product plus a separate reduction
    (docs/performance.md, "Softmax output").
    """
    M = jnp.max(Z, axis=0, keepdims=True)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(M), M, jnp.zeros_like(M)))


def _softmax_forward(Z):
    """A = exp(Z) / broadcast(sum_rows exp(Z)), column-wise, max-shifted."""
    Zs = Z - _column_shift(Z)
    E = jnp.exp(Zs)
    return E / jnp.sum(E, axis=0, keepdims=True)


def _softmax_backward(dA, Z, A):
    """(B4-softmax): dZ = A * (dA - broadcast(sum_rows(dA * A))), the full Jacobian."""
    return A * (dA - jnp.sum(dA * A, axis=0, keepdims=True))


def _log_softmax(Z):
    Zs = Z - _column_shift(Z)
    return Zs - jnp.log(jnp.sum(jnp.exp(Zs), axis=0, keepdims=True))


def _gelu_s(Z):
    U = _GELU_C * (Z + _GELU_K * Z * Z * Z)
    return U, jax.nn.sigmoid(2.0 * U)


def _gelu_forward(Z):
    _, S = _gelu_s(Z)
    return Z * S


def _gelu_prime(Z, A):
    U, S = _gelu_s(Z)
    return S + Z * 2.0 * S * jax.nn.sigmoid(-2.0 * U) * _GELU_C * (1.0 + 3.0 * _GELU_K * Z * Z)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        _elementwise("linear", lambda Z: Z, lambda Z, A: _nan_where_z_is(Z, 1.0), "lecun", _zero),
        _elementwise(
            "relu",
            lambda Z: jnp.where(Z <= 0, 0, Z).astype(Z.dtype),  # NaN stays NaN
            # I(Z > 0), g'(0) := 0, read off A = relu(Z) (A > 0 exactly where Z > 0, NaN
            # exactly where Z is NaN): the backward pass then needs no Z[l] of a hidden
            # relu layer, and XLA keeps one (n[l], m) array per layer instead of two.
            lambda Z, A: _nan_where_z_is(A, jnp.where(A > 0, 1.0, 0.0)),
            "he",
            _zero,
        ),
        _elementwise(
            "leaky_relu",
            lambda Z: jnp.where(Z > 0, Z, LEAKY_RELU_SLOPE * Z),
            lambda Z, A: _nan_where_z_is(A, jnp.where(A > 0, 1.0, LEAKY_RELU_SLOPE)),  # as relu
            "he",
            _zero,
        ),
        _elementwise(
            "elu",
            lambda Z: jnp.where(Z > 0, Z, jnp.expm1(jnp.where(Z > 0, 0, Z))),
            lambda Z, A: jnp.where(Z > 0, 1.0, jnp.exp(jnp.where(Z > 0, 0, Z))).astype(Z.dtype),
            "he",
            _elu_second,
        ),
        _elementwise(
            "sigmoid",
            jax.nn.sigmoid,
            lambda Z, A: jax.nn.sigmoid(Z) * jax.nn.sigmoid(-Z),  # = A (1 - A), no cancellation
            "glorot",
            _sigmoid_second,
            unit_range=True,
            log_output=jax.nn.log_sigmoid,
            log1m_output=lambda Z, A: jax.nn.log_sigmoid(-Z),
        ),
        _elementwise("tanh", jnp.tanh, _tanh_prime, "glorot", _tanh_second),
        _elementwise(
            "softplus",
            lambda Z: jnp.logaddexp(Z, 0),
            lambda Z, A: jax.nn.sigmoid(Z),
            "he",
            _sigmoid_pair,
        ),
        _elementwise(
            "silu",
            lambda Z: Z * jax.nn.sigmoid(Z),
            lambda Z, A: jax.nn.sigmoid(Z) * (1.0 + Z * jax.nn.sigmoid(-Z)),
            "he",
            _silu_second,
        ),
        _elementwise("gelu", _gelu_forward, _gelu_prime, "he", _gelu_second),
        Activation(
            name="softmax",
            forward=_softmax_forward,
            backward=_softmax_backward,
            init="glorot",
            unit_range=True,
            log_output=_log_softmax,
            log1m_output=lambda Z, A: jnp.log1p(-A),
            elementwise=False,
        ),
    ]
}


def get_activation(name: str) -> Activation:
    """Returns the registered activation ``name``; raises ValueError naming the choices."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}"
            + (" (an activation of your own is registered per process: call "
               "jaxmlp.register_activation in this process before building, loading or "
               "unpickling a model that uses it)." if isinstance(name, str) else ".")
        )
    return ACTIVATIONS[name]
