"""Test configuration: 64-bit mode is on so float64 oracles are available.

With x64 enabled, float32 tests must create float32 arrays explicitly
(``init_params(..., dtype=jnp.float32)`` is the default; data is cast with
``.astype(jnp.float32)``).
"""

import os
import sys

#: XLA:CPU compile flags for the test processes (and the scripts they start, which inherit the
#: environment). The suite compiles thousands of small programs that each run for microseconds,
#: so compilation, mostly LLVM's optimisation passes, is most of its time; the tests check
#: values, never speed. Set before JAX is imported; a caller's own XLA_FLAGS are kept.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

# The scripts in experiments/ import their shared helpers (experiments/_common) the way
# `python experiments/NAME.py` finds them, from the script's folder; tests that load a script
# by path get the same folder on the path.
_EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
if _EXPERIMENTS not in sys.path:
    sys.path.append(_EXPERIMENTS)

from _common import compiled as _compiled  # noqa: E402


#: A worker that compiles thousands of programs (the slow curvature sweep: about 40 networks,
#: each with its oracles) would reach vm.max_map_count and crash in XLA
#: (experiments/_common/compiled.py). Every 10 tests a worker over this many memory mappings
#: drops JAX's caches.
MAX_MAPPINGS = 30_000
_tests_torn_down = 0


def pytest_runtest_teardown(item, nextitem):
    global _tests_torn_down
    _tests_torn_down += 1
    if _tests_torn_down % 10 == 0:
        _compiled.release_if_many(MAX_MAPPINGS)
