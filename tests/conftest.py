"""Test configuration: 64-bit mode is on so float64 oracles are available.

With x64 enabled, float32 tests must create float32 arrays explicitly
(``init_params(..., dtype=jnp.float32)`` is the default; data is cast with
``.astype(jnp.float32)``).
"""

import jax

jax.config.update("jax_enable_x64", True)

import os  # noqa: E402
import sys  # noqa: E402

# The scripts in experiments/ import their shared helpers (experiments/_common) the way
# `python experiments/NAME.py` finds them, from the script's folder; tests that load a script
# by path get the same folder on the path.
_EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
if _EXPERIMENTS not in sys.path:
    sys.path.append(_EXPERIMENTS)
