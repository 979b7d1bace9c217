"""Mish, g(z) = z tanh(softplus(z)), derived by hand and registered with jaxmlp.

Derivation (s = softplus(z) = log(1 + e^z), s'(z) = sigmoid(z); t = tanh(s), t' = 1 - t^2):

    g(z)  = z t
    g'(z) = t + z (1 - t^2) sigmoid(z)                           (product and chain rules)

Numerical form: softplus as logaddexp(z, 0) (finite for any z, where log(1 + exp(z))
overflows in float32 at z = 89), sigmoid from jax.nn (stable on both sides). At saturation
g'(z) -> 1 (z -> +inf, t -> 1) and g'(z) -> 0 (z -> -inf, sigmoid -> 0), both kept finite.

Use it from Python (``import examples.mish``, or exec this file) or from the scripts:

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


if "mish" not in jaxmlp.ACTIVATIONS:  # a second import of this file is harmless
    jaxmlp.register_activation("mish", mish, mish_prime, init="he")
