"""What ``experiments/train.py`` prints and records about a finished run.

:func:`final_table` formats the results dict (the content of results.json);
:func:`display_path` keeps paths inside the repository relative, so results.json stays
portable; :func:`batch_words` says how the run batched.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Optional

import numpy as np

from jaxmlp import train as train_lib
from jaxmlp.train import ensemble as ensemble_lib

from _common import output

__all__ = ["PRIVACY_COVERAGE", "PRIVACY_NOTE", "batch_words", "clear_earlier", "display_path",
           "evaluated_row", "final_table", "rate_words", "where", "write_model"]

#: What the (epsilon, delta) of a ``--dp`` run covers and what it does not: the accountant
#: counts the noisy, clipped training steps only. Stored with the model (model.npz's
#: metadata ``"privacy_coverage"``) beside the preprocessing statistics it names.
PRIVACY_COVERAGE = {
    "covers": "the parameters' training steps (Poisson-sampled, clipped, noised DP-SGD "
              "updates)",
    "not_covered": [
        "preprocessing statistics (feature mean/std, categories, imputation values, "
        "regression target mean/std, class list) computed from the raw training data and "
        "stored with the model and in results.json",
        "history costs and metrics (cost, running_cost, train_/test_ entries) computed from "
        "the raw data",
    ],
}

#: The line a ``--dp`` run prints on stderr (:func:`write_model`).
PRIVACY_NOTE = ("train.py: note: epsilon covers the parameters' training steps only; the "
                "preprocessing statistics stored with the model and in results.json (feature "
                "mean/std, categories, target mean/std) are computed from the raw training "
                "data and are not private, nor are the history's costs.")


def display_path(path: str) -> str:
    """``path`` relative to the repository when inside it (results.json stays portable)."""
    full, root = os.path.abspath(path), str(output.repo_root())
    return os.path.relpath(full, root) if full.startswith(root + os.sep) else full


def batch_words(cfg: dict) -> str:
    """How the run batches: ``"batch 64"``, or the expected Poisson batch of a --dp run."""
    if cfg.get("dp"):
        return f"DP-SGD, expected batch {cfg['expected_batch_size']:.0f}"
    return f"batch {cfg['batch_size']}"


def rate_words(cfg: dict) -> str:
    """``"lr=0.1"``, or, for ``--kfac-adaptive``, that the quadratic model chooses it."""
    if (cfg.get("kfac") or {}).get("kfac_adaptive"):
        return "lr and momentum from the quadratic model"
    return f"lr={cfg['lr']:g}"


def final_table(result: dict) -> str:
    """The table printed at the end of a run, from its results.json dict: configuration,
    final train/test metrics (an ensemble's members' mean ± std and its averaged
    prediction), the privacy spent, wall time and throughput."""
    cfg = result["config"]
    final = result["final"]
    cols = list(final["train"])
    lines = [
        f"{cfg['dataset']}: network {'-'.join(map(str, result['network']['sizes']))} "
        f"({cfg['activation']} / {result['network']['activations'][-1]}, "
        f"{result['network']['cost']}), {cfg['optimizer']} {rate_words(cfg)}, "
        f"{result['epochs_done']} epochs, {batch_words(cfg)}, seed {cfg['seed']}",
        "split   " + "".join(f"{c:>16}" for c in cols),
    ]
    ens = result.get("ensemble")
    if ens is None:
        for split in ("train", "test"):
            lines.append(f"{split:<8}" + "".join(f"{final[split][c]:>16.4f}" for c in cols))
    else:
        lines[0] += f", ensemble of K = {ens['K']}" + (
            f" (lrs {', '.join(f'{v:g}' for v in ens['member_lrs'])})" if ens["member_lrs"] else "")
        for split in ("train", "test"):
            lines.append(f"{split:<8}" + "".join(
                f"{final[split][c]:>9.4f} ±{ens['std'][split][c]:<6.4f}" for c in cols)
                + "   (members: mean ± std)")
            avg = ens["averaged_prediction"][split]
            lines.append(f"{'':<8}" + "".join(f"{avg[c]:>16.4f}" for c in cols)
                         + "   (averaged prediction)")
    pr = result.get("privacy")
    if pr:
        lines.append(
            f"privacy: ({pr['epsilon']:.4g}, {pr['delta']:g})-DP"
            + (f" of target epsilon {pr['target_epsilon']:g}" if pr.get("target_epsilon") else "")
            + f" by {pr['accountant'].upper()} "
            f"over {pr['steps']} Poisson steps (q = {pr['sampling_rate']:.4g}), noise multiplier "
            f"{pr['noise_multiplier']:.4g}{' (calibrated)' if pr['noise_calibrated'] else ''}, "
            f"clip {pr['clip']}{' per layer' if pr['per_layer_clipping'] else ''}")
    lines.append(
        f"wall {result['wall_seconds']:.1f} s (training loop {result['train_seconds']:.1f} s), "
        f"{result['examples_per_second']:,.0f} {'member-' if result.get('ensemble') else ''}"
        f"examples/s, backend {result['jax']['backend']}")
    return "\n".join(lines)


def evaluated_row(net, params, sets, K: Optional[int]) -> dict:
    """The ``train_<metric>`` / ``test_<metric>`` entries that :func:`jaxmlp.fit` writes into a
    history row, for ``params`` on ``sets`` = (X_train, Y_train, X_test, Y_test): what the
    report reads when the run trained no epoch (K: an ensemble's size, or None)."""
    X_tr, Y_tr, X_te, Y_te = sets
    row = {}
    for s, (X, Y) in (("train", (X_tr, Y_tr)), ("test", (X_te, Y_te))):
        if K is None:
            ev = train_lib.cost_and_metrics(net, params, X, Y)
            row.update({f"{s}_{k}": float(v) for k, v in ev.items() if np.ndim(v) == 0})
        else:
            row.update(ensemble_lib.summary_row(s, ensemble_lib.ensemble_cost_and_metrics(net, params, X, Y)))
    return row


def clear_earlier(cfg: dict) -> None:
    """Removes what ``--overwrite`` replaces (an earlier run's files in ``--out``; a resumed
    run's model.npz, rewritten when it completes), each named on stderr."""
    for name in cfg.get("replace") or ():
        path = os.path.join(cfg["out"], name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        print(f"train.py: removed the earlier {path}", file=sys.stderr)


def write_model(cfg: dict, fr, net, prep, data) -> Optional[str]:
    """Writes ``model.npz`` (:func:`jaxmlp.data.export.save`: params, network, preprocessing;
    an ensemble's K members) when the run ends with usable parameters (completed, or stopped
    at its privacy budget); returns its path, or None. A ``--dp`` run's model also records
    :data:`PRIVACY_COVERAGE` (metadata ``"privacy_coverage"``), and the run prints
    :data:`PRIVACY_NOTE` on stderr (its results.json holds the same statistics)."""
    from jaxmlp.data import export

    private = bool(cfg.get("dp"))
    if private:
        print(PRIVACY_NOTE, file=sys.stderr)
    if fr.status not in ("completed", "budget"):
        return None
    path = os.path.join(cfg["out"], "model.npz")
    metadata = {"preprocessing": prep.to_dict(), "dataset": data.name}
    if private:
        metadata["privacy_coverage"] = PRIVACY_COVERAGE
    export.save(path, fr.state.params, net, ensemble=cfg["ensemble"], metadata=metadata)
    return path


def where(cfg: dict, model: Optional[str], plot: Optional[str]) -> str:
    """The lines that tell where a run's files are."""
    out = cfg["out"]
    lines = [f"results:     {os.path.join(out, 'results.json')}",
             f"model:       {model}" if model else "model:       none (the run did not complete)"]
    if plot:
        lines.append(f"plot:        {plot}")
    if cfg["checkpoint_every"] > 0:
        lines.append(f"checkpoints: {os.path.join(out, 'checkpoints')}")
    if model:
        from jaxmlp.oracle.registry import is_registered

        mine = sorted({a for a in (cfg.get("activation"), cfg.get("cost")) if a
                       and is_registered(a)})
        register = " --register FILE.py" if mine else ""
        root = output.repo_root()  # the command pastes from the folder the run was started in
        run_sh = ("scripts/run.sh" if os.path.abspath(output.caller_dir()) == str(root)
                  else os.path.join(root, "scripts", "run.sh"))
        lines.append(f"predict:     bash {run_sh} predict{register} --checkpoint {out} "
                     "--data NEW.csv --out predictions.csv   (Python: jaxmlp.load_model(folder))")
        if mine:
            lines.append(f"             FILE.py: the file that registered {', '.join(mine)} "
                         "(as this run's --register), before load_model in Python too")
    return "\n".join(lines)
