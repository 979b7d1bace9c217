"""Mish, g(z) = z tanh(softplus(z)), derived by hand and registered with jaxmlp.

Derivation (s = softplus(z) = log(1 + e^z), s'(z) = sigmoid(z); t = tanh(s), t' = 1 - t^2):

    g(z)  = z t
    g'(z) = t + z (1 - t^2) sigmoid(z)                           (product and chain rules)
    g''(z) = (1 - t^2) sigmoid(z) [2 + z (1 - sigmoid(z) - 2 t sigmoid(z))]
             (d/dz of (1 - t^2) sigma is -2 t t' sigma + (1 - t^2) sigma (1 - sigma), t' = (1 - t^2) sigma)

Numerical form: softplus as logaddexp(z, 0) (finite for any z, where log(1 + exp(z))
overflows in float32 at z = 89), sigmoid from jax.nn (stable on both sides). At saturation
g'(z) -> 1 (z -> +inf, t -> 1) and g'(z) -> 0 (z -> -inf, sigmoid -> 0), both kept finite.

g'' makes the curvature functions (Hessian diagonal, Hessian-vector products: the residual
terms (H10)) accept it. Use it from Python, in the repository root (``examples`` is a
namespace package there): ``import examples.mish``; or from the scripts:

    bash scripts/run.sh --register examples/mish.py --activation mish
"""

import jax
import jax.numpy as jnp

import jaxmlp


def mish(Z):
    """(F2) A = Z tanh(softplus(Z)), element-wise."""
    return Z * jnp.tanh(jnp.logaddexp(Z, 0.0))


def mish_prime(Z):
    """g'(Z) = t + Z (1 - t^2) sigmoid(Z), t = tanh(softplus(Z)); (B4) is dZ = dA * g'(Z)."""
    t = jnp.tanh(jnp.logaddexp(Z, 0.0))
    return t + Z * (1.0 - t * t) * jax.nn.sigmoid(Z)


def mish_second(Z):
    """g''(Z) = (1 - t^2) sigmoid(Z) [2 + Z (1 - sigmoid(Z) - 2 t sigmoid(Z))]."""
    t = jnp.tanh(jnp.logaddexp(Z, 0.0))
    s = jax.nn.sigmoid(Z)
    return (1.0 - t * t) * s * (2.0 + Z * (1.0 - s - 2.0 * t * s))


if "mish" not in jaxmlp.ACTIVATIONS:  # a second import of this file is harmless
    jaxmlp.register_activation("mish", mish, mish_prime, second_derivative=mish_second,
                               init="he")
