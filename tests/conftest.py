"""Test configuration: 64-bit mode is on so float64 oracles are available.

With x64 enabled, float32 tests must create float32 arrays explicitly
(``init_params(..., dtype=jnp.float32)`` is the default; data is cast with
``.astype(jnp.float32)``).
"""

import jax

jax.config.update("jax_enable_x64", True)
