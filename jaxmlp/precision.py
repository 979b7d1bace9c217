"""Mixed precision: low-precision matrix products, parameters and sums in the params' dtype.

The recurrences are those of :mod:`jaxmlp.propagation`; only their three matrix
products change. Each casts its two operands to ``compute_dtype`` (bfloat16 by
default) and asks XLA for a result in the params' dtype (float32), i.e. products of
bf16 numbers accumulated in float32 (``preferred_element_type``):

  (F1) Z[l]     = W[l] A[l-1] + b[l]      product in compute_dtype, + b in float32
  (B1) dW[l]    = dZ[l] A[l-1]^T          product in compute_dtype
  (B3) dA[l-1]  = W[l]^T dZ[l]            product in compute_dtype

Everything else -- activations (F2), (B4), the cost (F3) and its seed, (B2) db[l],
the parameters and the update -- stays in the params' dtype. These functions run the
core recurrences (``propagation._forward`` / ``_backward``) with ``compute_dtype`` passed
to their ``matmul``; ``jaxmlp.value_and_grad`` (compute_dtype None) remains the
full-precision reference.

On accelerators with bf16 matrix units (TPU, recent GPUs) this raises the product
throughput; on a CPU it depends on bf16 support (measured in docs/performance.md:
0.69x the float32 step time on the large shape of a 2-core AVX512_BF16 CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmlp import propagation
from jaxmlp.network import Network

Array = jax.Array

_SUPPORTED = ("bfloat16", "float16", "float32", "float64")


def check_compute_dtype(compute_dtype) -> jnp.dtype:
    """Validates ``compute_dtype`` (trace time); returns it as a numpy dtype."""
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise TypeError(
            f"compute_dtype: expected one of {_SUPPORTED}, got {compute_dtype!r}."
        ) from None
    if dtype.name not in _SUPPORTED:
        raise TypeError(f"compute_dtype: expected one of {_SUPPORTED}, got {dtype.name}.")
    if dtype.name == "float64" and not jax.config.jax_enable_x64:
        raise TypeError(
            "compute_dtype: float64 needs jax.config.update('jax_enable_x64', True); "
            "without it the backend computes in float32."
        )
    return dtype


@functools.partial(jax.jit, static_argnums=0, static_argnames="compute_dtype")
def forward(net: Network, params, X: Array, *, compute_dtype="bfloat16"):
    """(F1), (F2) with ``compute_dtype`` products; returns ``(A[L], Cache)`` as jaxmlp.forward.

    X is (n[0], m) in the params' dtype; A[L] is (n[L], m) in the params' dtype.
    """
    compute_dtype = check_compute_dtype(compute_dtype)
    X = propagation._prepare(net, params, X)
    return propagation._forward(net, params, X, compute_dtype)


@functools.partial(jax.jit, static_argnums=0, static_argnames="compute_dtype")
def value_and_grad(net: Network, params, X: Array, Y: Array, *, compute_dtype="bfloat16"):
    """J (F3) and its gradient by (F1)-(B4) with ``compute_dtype`` matrix products.

    X is (n[0], m), Y is (n[L], m), both in the params' dtype. Returns ``(J, grads)``
    with grads mirroring params, in the params' dtype.
    """
    compute_dtype = check_compute_dtype(compute_dtype)
    X, Y = propagation._prepare(net, params, X, Y)
    A_L, cache = propagation._forward(net, params, X, compute_dtype)
    J = propagation._cost(net, cache.Z[-1], A_L, Y)
    return J, propagation._backward(net, params, cache, Y, compute_dtype)
