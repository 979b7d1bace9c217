"""``train.py``'s K-FAC options (``--optimizer kfac``): the flags, their checks and the keyword
arguments of ``jaxmlp.train.make_optimizer("kfac", ...)``.

The defaults are those of :func:`jaxmlp.train.kfac.kfac` (``kfac.DEFAULTS``), and K-FAC's own
learning-rate default :data:`KFAC_LR` replaces the dataset's (Adam's) when ``--lr`` is not
given. K-FAC is refused by name (UsageError, exit 2) where the training loop cannot give it
its factors: ``--dp`` (noised, clipped gradients: no factors of the same sweep); and
``--member-lrs``, per-member learning rates, an injected optax rate that K-FAC does not take.
``--ensemble K`` trains K K-FAC members at one ``--lr`` (each member its own factors, as
``jaxmlp.fit(..., ensemble=K)``).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from jaxmlp.train import kfac

from _common.cli import UsageError

__all__ = ["KFAC_LR", "add_arguments", "optimizer_kwargs", "resolve"]

#: ``--lr`` of ``--optimizer kfac`` when not given (with the default KL clip, the step is
#: mostly sized by the clip; docs/curvature.md, the autoencoder race).
KFAC_LR = 0.1

_FLAGS = ("kfac_damping", "kfac_inverse_every", "kfac_curvature_every", "kfac_kind",
          "kfac_kl_clip", "kfac_adaptive", "kfac_adaptive_damping")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = kfac.DEFAULTS
    g = p.add_argument_group("K-FAC (--optimizer kfac; jaxmlp.train.kfac)")
    g.add_argument("--kfac-damping", type=float, metavar="LAMBDA",
                   help=f"Tikhonov damping (initial value with --kfac-adaptive-damping; default "
                        f"{d['damping']:g})")
    g.add_argument("--kfac-inverse-every", type=int, metavar="K",
                   help=f"refresh the factors' inverses every K steps (default {d['inverse_every']})")
    g.add_argument("--kfac-curvature-every", type=int, metavar="K",
                   help=f"factor statistics every K steps (default {d['curvature_every']})")
    g.add_argument("--kfac-kind", choices=("mc", "exact", "empirical"),
                   help=f"the factors: Monte Carlo, exact (KFLR) or empirical Fisher (default "
                        f"{d['kind']})")
    g.add_argument("--kfac-kl-clip", type=float, metavar="C",
                   help=f"KL clip of a fixed learning rate's step, 0 for none (default "
                        f"{d['kl_clip']:g}; none with --kfac-adaptive)")
    g.add_argument("--kfac-adaptive", action="store_true", default=None,
                   help="learning rate and momentum from the quadratic model each step (no "
                        "--lr then)")
    g.add_argument("--kfac-adaptive-damping", action="store_true", default=None,
                   help="Levenberg-Marquardt damping every 5 steps")
    p.set_defaults(_kfac_lr_default=KFAC_LR)


def resolve(args: argparse.Namespace, cfg: dict, lr_given: bool,
            saved_config: dict | None = None) -> None:
    """Checks the K-FAC flags against the resolved ``cfg`` and stores ``cfg["kfac"]`` (a dict,
    or None for another optimizer); fills K-FAC's ``--lr`` default. UsageError naming the flag.

    ``saved_config``: the checkpoint's ``config`` of a resumed run (None for a new run). Its
    ``"kfac"`` flags are the run's: a flag given again with another value is refused, as
    train.py refuses a changed --lr; flags left out take the saved values (not the defaults).
    A checkpoint written before the flags were saved has no ``"kfac"``: its run used the
    flags then given, which were not recorded, so a resume with K-FAC flags is refused and
    one without them continues with the defaults (the only configuration it can check)."""
    given = {k: getattr(args, k, None) for k in _FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    if saved_config is not None and cfg["optimizer"] == "kfac":
        saved = saved_config.get("kfac")
        if saved is None:
            if given:
                name = next(iter(given)).replace("_", "-")
                raise UsageError(f"--resume: --{name} given, but the checkpoint does not record "
                                 "its K-FAC flags (written before they were saved); resume "
                                 "without K-FAC flags, or start a new run.")
        else:
            for k, v in given.items():
                if saved.get(k) != v:
                    raise UsageError(
                        f"--resume: --{k.replace('_', '-')} {v} differs from the checkpoint's "
                        f"{saved.get(k, 'default')}; a resumed run continues the saved one "
                        "(leave the option out).")
            given = {k: v for k, v in saved.items() if k in _FLAGS and v is not None}
    if cfg["optimizer"] != "kfac":
        if given:
            name = next(iter(given)).replace("_", "-")
            raise UsageError(f"--{name}: a K-FAC option; add --optimizer kfac (got --optimizer "
                             f"{cfg['optimizer']}).")
        cfg["kfac"] = None
        return
    if cfg.get("member_lrs") is not None:
        raise UsageError("--member-lrs: not with --optimizer kfac (per-member learning rates "
                         "are an injected optax rate, which K-FAC does not take); give one "
                         "--lr for all members of --ensemble K.")
    if cfg.get("dp"):
        raise UsageError("--optimizer: kfac is not available with --dp (the private step's "
                         "clipped, noised gradient has no factors of its sweep).")
    adaptive = bool(given.get("kfac_adaptive"))
    if adaptive and lr_given and saved_config is None:  # a resume keeps the saved --lr
        raise UsageError("--lr: --kfac-adaptive chooses the learning rate by the quadratic "
                         "model; leave --lr out.")
    if adaptive and cfg.get("schedule", "constant") != "constant":
        raise UsageError(f"--schedule: --kfac-adaptive chooses the learning rate; expected "
                         f"constant, got {cfg['schedule']}.")
    if not lr_given:
        cfg["lr"] = KFAC_LR
    for k in ("kfac_inverse_every", "kfac_curvature_every"):
        if k in given and given[k] < 1:
            raise UsageError(f"--{k.replace('_', '-')}: expected a positive integer, got {given[k]}.")
    if "kfac_damping" in given and not (math.isfinite(given["kfac_damping"])
                                        and given["kfac_damping"] > 0):
        raise UsageError(f"--kfac-damping: expected a finite number > 0, got {given['kfac_damping']}.")
    if "kfac_kl_clip" in given:
        c = given["kfac_kl_clip"]
        if not (math.isfinite(c) and c >= 0):
            raise UsageError(f"--kfac-kl-clip: expected a finite number >= 0, got {c}.")
        if adaptive and c > 0:
            raise UsageError("--kfac-kl-clip: bounds a fixed learning rate; not with --kfac-adaptive.")
    cfg["kfac"] = given


def optimizer_kwargs(cfg: dict) -> dict[str, Any]:
    """Keyword arguments of ``make_optimizer("kfac", ...)`` from ``cfg["kfac"]``."""
    k = cfg.get("kfac") or {}
    d = kfac.DEFAULTS
    clip = k.get("kfac_kl_clip", "auto")
    return {"damping": k.get("kfac_damping", d["damping"]),
            "inverse_every": k.get("kfac_inverse_every", d["inverse_every"]),
            "kfac_curvature_every": k.get("kfac_curvature_every", d["curvature_every"]),
            "kfac_kind": k.get("kfac_kind", d["kind"]),
            "kfac_kl_clip": None if clip == 0 else clip,
            "kfac_adaptive": bool(k.get("kfac_adaptive", False)),
            "kfac_adaptive_damping": bool(k.get("kfac_adaptive_damping", False))}
