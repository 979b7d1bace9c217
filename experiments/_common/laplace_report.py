"""MAP against its Laplace approximation, side by side: ``train.py --laplace STRUCTURE`` and
``experiments/laplace.py`` (docs/laplace.md).

Classification (softmax, or one sigmoid unit): test accuracy, negative log-likelihood,
expected calibration error (:data:`BINS` equal-width bins of the max probability) and the
out-of-distribution AUROC of the max-probability score (in: the test split; out: the test
inputs with their features permuted by one random permutation drawn from the seed), for
the MAP's probabilities and the GLM probit predictive (LA11), and a reliability diagram
(SVG). Regression (mean squared error): the Gaussian NLL of the MAP with the training
residuals' variance as noise, and the Laplace predictive with the noise fitted by the
evidence (LA9). The posterior: :func:`jaxmlp.laplace.from_fit`; ``train.py`` saves it as
``laplace.npz`` in the run folder, beside ``model.npz`` (:func:`write_posterior`), for
``jaxmlp.load_model`` and ``predict.py --laplace``.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

import jaxmlp
from jaxmlp import laplace as lp
from jaxmlp.data import export
from jaxmlp.data.export import POSTERIOR_FILE
from jaxmlp.laplace import flat

from _common import output
from _common.cli import UsageError

__all__ = ["BINS", "add_arguments", "attach", "auroc", "check_network", "compare", "configure",
           "confidences", "ece", "labels", "remove_stale_posterior", "show", "svg_reliability",
           "where", "write_posterior"]

BINS = 15


def confidences(P, binary):
    """(confidence, predicted class) per column of probabilities P (n[L], m)."""
    P = np.asarray(P)
    if binary:
        return np.maximum(P[0], 1 - P[0]), (P[0] >= 0.5).astype(int)
    return P.max(0), P.argmax(0)


def labels(Y, binary):
    Y = np.asarray(Y)
    return Y[0].astype(int) if binary else Y.argmax(0)


def ece(conf, correct, bins=BINS):
    """Expected calibration error sum_b (n_b / n) |accuracy_b - confidence_b| over ``bins``
    equal-width bins of the confidence, and the bins' rows (for the reliability diagram)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    out, rows = 0.0, []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            acc, cf = correct[sel].mean(), conf[sel].mean()
            out += sel.mean() * abs(acc - cf)
            rows.append({"bin": b, "n": int(sel.sum()), "accuracy": float(acc),
                         "confidence": float(cf)})
    return float(out), rows


def auroc(score_in, score_out):
    """P(score_in > score_out) + 1/2 P(tie): the Mann-Whitney statistic."""
    s_in, s_out = np.asarray(score_in)[:, None], np.asarray(score_out)[None, :]
    return float(np.mean((s_in > s_out) + 0.5 * (s_in == s_out)))


def kind(net) -> str:
    """"softmax", "binary" or "regression"; UsageError for other outputs."""
    out = net.activations[-1]
    if out == "softmax" and net.cost == "categorical_cross_entropy":
        return "softmax"
    if out == "sigmoid" and net.sizes[-1] == 1 and net.cost == "binary_cross_entropy":
        return "binary"
    if out == "linear" and net.cost == "mean_squared_error":
        return "regression"
    raise UsageError(f"--laplace: written for softmax classification, one sigmoid unit and "
                     f"regression (linear + mean squared error); this network has output "
                     f"{out!r} ({net.sizes[-1]} units) with cost {net.cost!r}.")


def compare(net, params, la, X_test, Y_test, seed, Y_train_fit=None):
    """The side-by-side numbers: ``{"map": {...}, "laplace": {...}}`` (module docstring).
    ``Y_train_fit``: for regression, (MAP predictions, targets) on the training split."""
    k = kind(net)
    if k == "regression":
        mu_tr, Y_tr = Y_train_fit
        s2 = float(np.mean((np.asarray(mu_tr) - np.asarray(Y_tr)) ** 2))
        mu = jaxmlp.predict(net, params, X_test)
        return {"map": {"nll": lp.negative_log_likelihood(net, (mu, mu * 0 + s2), Y_test),
                        "noise_variance": s2},
                "laplace": {"nll": lp.negative_log_likelihood(net, la.predictive(X_test), Y_test),
                            "noise_variance": float(la.sigma_noise) ** 2}}
    binary = k == "binary"
    rng = np.random.default_rng(1000 + seed)
    X_ood = np.asarray(X_test)[rng.permutation(X_test.shape[0])]
    y = labels(Y_test, binary)
    out = {}
    for which in ("map", "laplace"):
        if which == "map":
            P, P_ood = jaxmlp.predict(net, params, X_test), jaxmlp.predict(net, params, X_ood)
        else:
            P, P_ood = la.predictive(X_test), la.predictive(X_ood)
        conf, pred = confidences(P, binary)
        e, rows = ece(conf, (pred == y).astype(float))
        out[which] = {"accuracy": float(np.mean(pred == y)),
                      "nll": lp.negative_log_likelihood(net, P, Y_test), "ece": e,
                      "ood_auroc": auroc(conf, confidences(P_ood, binary)[0]),
                      "reliability": rows}
    return out


def svg_reliability(path, curves, title):
    """A reliability diagram: accuracy against confidence per bin, one polyline per curve."""
    W, H, x0, y0, S = 460, 420, 60, 40, 320
    colours = ("#1f77b4", "#ff7f0e")
    px = lambda v: x0 + v * S  # noqa: E731
    py = lambda v: y0 + S - v * S  # noqa: E731
    el = [f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
          f'<rect x="{x0}" y="{y0}" width="{S}" height="{S}" fill="none" stroke="#333"/>',
          f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#999" '
          'stroke-dasharray="4,4"/>']
    for t in np.linspace(0, 1, 6):
        el.append(f'<text x="{px(t):.1f}" y="{y0 + S + 18}" text-anchor="middle">{t:.1f}</text>')
        el.append(f'<text x="{x0 - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
    el.append(f'<text x="{px(0.5)}" y="{y0 + S + 38}" text-anchor="middle">confidence</text>')
    el.append(f'<text x="16" y="{py(0.5)}" transform="rotate(-90 16 {py(0.5)})" '
              'text-anchor="middle">accuracy</text>')
    for k, (label, rows) in enumerate(curves):
        pts = " ".join(f"{px(r['confidence']):.1f},{py(r['accuracy']):.1f}" for r in rows)
        el.append(f'<polyline points="{pts}" fill="none" stroke="{colours[k]}" stroke-width="2"/>')
        for r in rows:
            el.append(f'<circle cx="{px(r["confidence"]):.1f}" cy="{py(r["accuracy"]):.1f}" '
                      f'r="3" fill="{colours[k]}"/>')
        el.append(f'<text x="{x0 + 10}" y="{y0 + 18 + 18 * k}" fill="{colours[k]}">{label}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">' + "".join(el) + "</svg>\n")
    p = output.output_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(svg)


# ----------------------------------------------------------------------------- train.py


def add_arguments(p) -> None:
    p.add_argument("--laplace", choices=lp.STRUCTURES, metavar="STRUCTURE",
                   help="after training, a Laplace approximation (one of "
                        f"{', '.join(lp.STRUCTURES)}; prior by the evidence): MAP and Laplace "
                        "side by side in results.json and laplace_reliability.svg, the "
                        "posterior in laplace.npz (predict.py --laplace)")


def configure(cfg: dict, args) -> None:
    """Records ``--laplace`` in ``cfg`` and refuses what it is not combined with:
    ``--ensemble``, several processes or ``--data-parallel``, and ``--dp``."""
    cfg["laplace"] = getattr(args, "laplace", None)
    if cfg["laplace"] is None:
        return
    if cfg.get("ensemble") is not None:
        raise UsageError(f"--laplace: not combined with --ensemble {cfg['ensemble']} (one "
                         "network's posterior; fit the members separately).")
    if jax.process_count() > 1 or cfg.get("data_parallel"):
        raise UsageError("--laplace: runs on one device; not combined with several processes "
                         "or --data-parallel.")
    if cfg.get("dp"):
        raise UsageError(f"--laplace: not combined with --dp (the posterior's curvature and "
                         f"prior sum over the training rows outside the privacy accountant, so "
                         f"the saved model would not be private); got --laplace "
                         f"{cfg['laplace']} with --dp.")


def check_network(cfg: dict, net) -> None:
    """With ``--laplace``, once the network is built and before any training: UsageError
    naming ``--laplace`` for an output and cost the comparison is not written for
    (:func:`kind`), and for a dense posterior ("full": all P parameters; "last_layer": the
    n[L] (n[L-1] + 1) of the last layer) over :data:`jaxmlp.laplace.FULL_MAX_PARAMS`, the
    limit of :func:`jaxmlp.laplace.laplace`, naming P, the limit and what fits instead."""
    structure = cfg.get("laplace")
    if structure is None:
        return
    kind(net)
    if structure not in ("full", "last_layer"):
        return
    L, limit = net.num_layers, lp.FULL_MAX_PARAMS
    last = sum(r * c for r, c in flat.block_sizes(net, [L - 1]))
    P = net.num_params if structure == "full" else last
    if P <= limit:
        return
    units = limit // net.sizes[-1] - 1  # the widest last hidden layer "last_layer" takes
    instead = "--laplace kron or diag" + (f" (or last_layer: P = {last})"
                                          if structure == "full" and last <= limit else "")
    smaller = (f"at most {limit} parameters (--hidden)" if structure == "full" else
               f"at most {units} units in the last hidden layer (--hidden)" if units >= 1 else
               f"another --laplace: {net.sizes[-1]} outputs exceed it at any width")
    raise UsageError(f"--laplace {structure}: a dense posterior of P = {P} parameters (network "
                     f"{'-'.join(map(str, net.sizes))}) needs a P x P matrix; the limit is "
                     f"jaxmlp.laplace.FULL_MAX_PARAMS = {limit}. Use {instead}, or a network "
                     f"with {smaller}; nothing was trained.")


def attach(cfg: dict, net, fr, sets, result: dict) -> dict:
    """With ``--laplace``: the posterior of the trained params on the training split, the
    side-by-side numbers in ``result["laplace"]`` (printed), ``laplace_reliability.svg``
    (classification) and the posterior, ``laplace.npz``, in the run folder. Returns
    ``result``; unchanged without ``--laplace`` or for a run that did not complete. An
    earlier run's ``laplace.npz`` in the folder is removed first, in every case."""
    if jax.process_index() == 0:
        remove_stale_posterior(cfg["out"])
    structure = cfg.get("laplace")
    if structure is None:
        return result
    if fr.status != "completed":
        print(f"train.py: --laplace {structure}: skipped, the run ended with status "
              f"{fr.status!r} (the posterior expands around a completed fit)", file=sys.stderr)
        return result
    kind(net)
    X_tr, Y_tr, X_te, Y_te = sets
    params = fr.state.params
    la = lp.from_fit(net, fr, X_tr, Y_tr, structure=structure,
                     batch_size=min(1024, X_tr.shape[1]))
    fit = (jaxmlp.predict(net, params, X_tr), Y_tr)
    r = compare(net, params, la, X_te, Y_te, cfg["seed"], fit)
    doc = {"structure": structure, "link": "probit", "bins": BINS,
           "prior_precision": np.asarray(la.prior_precision).tolist(),
           "log_marginal_likelihood": float(la.log_marginal_likelihood()), **r}
    if "ece" in r["map"]:
        svg = os.path.join(cfg["out"], "laplace_reliability.svg")
        svg_reliability(svg, [("MAP", r["map"]["reliability"]),
                              (f"Laplace ({structure}, probit)", r["laplace"]["reliability"])],
                        f"{cfg['dataset']}: reliability ({BINS} bins)")
        doc["reliability_svg"] = "laplace_reliability.svg"
    doc["posterior_file"] = write_posterior(cfg, la)
    result["laplace"] = doc
    show(result)
    return result


def remove_stale_posterior(out: str) -> None:
    """Removes ``out/laplace.npz``: one there before :func:`attach` writes is an earlier
    run's (``jaxmlp.load_model`` would refuse it: other params than model.npz's)."""
    path = os.path.join(out, POSTERIOR_FILE)
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)


def write_posterior(cfg: dict, posterior) -> str:
    """Writes ``posterior`` to ``laplace.npz`` in the run folder
    (:func:`jaxmlp.data.export.save_posterior`), beside the model.npz train.py writes next,
    where ``jaxmlp.load_model(folder)`` and ``predict.py --laplace`` read it; returns the
    file's name in the folder."""
    export.save_posterior(os.path.join(cfg["out"], POSTERIOR_FILE), posterior,
                          metadata={"dataset": cfg["dataset"]})
    return POSTERIOR_FILE


def where(cfg: dict, result: dict) -> str:
    """The line that tells where ``--laplace``'s posterior is ("" without one), after
    train.py's other paths."""
    doc = result.get("laplace") or {}
    if not doc.get("posterior_file"):
        return ""
    path = os.path.join(cfg["out"], doc["posterior_file"])
    regression = ((result.get("network") or {}).get("cost") == "mean_squared_error"
                  or "noise_variance" in (doc.get("map") or {}))
    call = ("predict(rows, return_std=True)" if regression  # predict_proba: classes only
            else "predict_proba(rows, laplace=True)")
    return (f"\nposterior:   {path}   (predict.py --laplace; Python: "
            f"jaxmlp.load_model(folder).{call})")


def show(result: dict) -> None:
    """Prints the side-by-side table of ``result["laplace"]`` (if any)."""
    doc = result.get("laplace")
    if not doc:
        return
    cols = [c for c in ("accuracy", "nll", "ece", "ood_auroc", "noise_variance")
            if c in doc["map"]]
    print(f"Laplace ({doc['structure']}, prior precision "
          f"{np.round(doc['prior_precision'], 4)}):")
    print(f"{'':>8} " + " ".join(f"{c:>14}" for c in cols))
    for w in ("map", "laplace"):
        print(f"{w:>8} " + " ".join(f"{doc[w][c]:14.4f}" for c in cols))
