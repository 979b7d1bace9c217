"""Peer libraries the benchmarks race against, imported only when installed.

Never imported by ``jaxmlp`` or by a default test; the optional ``.venv-compare``
environment (``scripts/setup_compare.sh``) installs them.

:func:`kfac_jax` imports kfac-jax (0.0.8, its newest release) and, on a JAX whose
``Primitive.get_bind_params`` returns the bind parameters alone (JAX >= 0.9.2; it returned
``(subfuns, params)`` before), replaces the one function of kfac-jax that unpacks the old
pair, ``kfac_jax._src.tag_graph_matcher.eval_jaxpr_eqn``, by the same function written for
the new convention (the subfunctions now travel inside the parameters, as in JAX's own
``core.eval_jaxpr``). Every caller in kfac-jax reaches it as a module attribute
(``tgm.eval_jaxpr_eqn`` in ``tracer.py``), so the replacement is seen everywhere; nothing
in JAX is changed. Without it kfac-jax's first ``Optimizer.step`` fails while tracing the
layers' factors with ``ValueError: too many values to unpack (expected 2)``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, NamedTuple, Optional

__all__ = ["KFAC_JAX_ADAPTER", "Peer", "kfac_jax"]

#: What :func:`kfac_jax` changes, in words (recorded with the results that use it).
KFAC_JAX_ADAPTER = (
    "kfac_jax._src.tag_graph_matcher.eval_jaxpr_eqn replaced by the same function for JAX's "
    "new Primitive.get_bind_params (returns the bind parameters alone, subfuns inside them): "
    "bind_params = eqn.primitive.get_bind_params(eqn.params); "
    "output = eqn.primitive.bind(*in_values, **bind_params)"
)


class Peer(NamedTuple):
    """An optional peer library: ``module`` (None when it cannot be used) and ``note`` (why
    not, or the adapter applied; "" when it is used as released)."""

    module: Optional[Any]
    note: str


def _bind_params_alone() -> bool:
    """Whether this JAX's ``Primitive.get_bind_params`` returns the parameters alone."""
    from jax.extend.core import Primitive

    out = Primitive("jaxmlp_probe").get_bind_params({})
    return not (isinstance(out, tuple) and len(out) == 2)


def _eval_jaxpr_eqn(eqn, in_values):
    """``tag_graph_matcher.eval_jaxpr_eqn`` of kfac-jax 0.0.8 for JAX >= 0.9.2: the outputs
    of one Jaxpr equation on ``in_values`` (a list of outputs, as the original returns)."""
    from jax.extend import source_info_util

    bind_params = eqn.primitive.get_bind_params(eqn.params)
    with source_info_util.user_context(eqn.source_info.traceback):
        output = eqn.primitive.bind(*in_values, **bind_params)
    return output if isinstance(output, list) else [output]


def kfac_jax() -> Peer:
    """kfac-jax, adapted to this JAX where it needs it (module docstring).

    Returns ``Peer(module, note)``: ``module`` is ``kfac_jax`` or None; ``note`` is the reason
    it is None (not installed, or its import failed and how), or :data:`KFAC_JAX_ADAPTER`
    when the adapter was applied, or "" when kfac-jax runs as released."""
    try:
        kj = importlib.import_module("kfac_jax")
        tgm = importlib.import_module("kfac_jax._src.tag_graph_matcher")
    except ImportError as e:
        return Peer(None, f"kfac-jax is not installed ({e}); `bash scripts/setup_compare.sh` "
                          "installs it in .venv-compare")
    except Exception as e:  # noqa: BLE001 - a release that no longer imports on this JAX
        return Peer(None, f"kfac-jax failed to import: {type(e).__name__}: {e}")
    if getattr(tgm.eval_jaxpr_eqn, "_jaxmlp_adapter", False):
        return Peer(kj, KFAC_JAX_ADAPTER)
    if not _bind_params_alone():
        return Peer(kj, "")
    try:
        source = inspect.getsource(tgm.eval_jaxpr_eqn)
    except (OSError, TypeError):
        source = ""
    if "subfuns, bind_params" not in source:  # a kfac-jax written for the new convention
        return Peer(kj, "")
    _eval_jaxpr_eqn._jaxmlp_adapter = True
    tgm.eval_jaxpr_eqn = _eval_jaxpr_eqn
    return Peer(kj, KFAC_JAX_ADAPTER)
