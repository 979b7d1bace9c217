"""Laplace approximations on the bundled sets: MAP against Laplace (docs/laplace.md).

For digits and breast_cancer (``--seeds``, default 0,1,2), a network is trained (Adam, float64),
then ``jaxmlp.laplace.laplace(structure=--structure)`` is fitted on the training split, its
scalar prior precision chosen by the evidence (``optimize_prior_precision``, "marglik"), and
the GLM probit predictive is compared with the MAP's on the test split: accuracy, NLL,
expected calibration error (15 equal-width confidence bins) and the out-of-distribution AUROC
of the max-probability score (in-distribution: the test split; out-of-distribution: the test
inputs with their features permuted by one fixed random permutation per seed). For diabetes
the MAP's Gaussian NLL uses the training residuals' variance as noise variance; Laplace fits
the noise scale with the prior precision by the evidence.

Cost (digits, seed 0, ``_common.benchmarking.time_paired``): fitting the Laplace posterior
against one training epoch of the same network (target <= 2 epochs), and the GLM predictive
of the test split against one value_and_grad of that split (target <= 3x).

    python experiments/laplace.py [--seeds 0,1,2] [--structure kron] [--out results/laplace]

Writes ``laplace.json`` and ``reliability_digits.svg`` (MAP and Laplace, seed 0) under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxmlp  # noqa: E402
from jaxmlp import laplace as lp  # noqa: E402
from jaxmlp import train  # noqa: E402
from jaxmlp.data import datasets  # noqa: E402

from _common import benchmarking, output  # noqa: E402

CONFIG = {  # dataset: hidden sizes, hidden activation, epochs, batch size, learning rate,
    # weight decay lambda (Adam on the mean cost + lambda/2 ||W||^2: a Gaussian prior of
    # precision lambda n_train on the weights, the MAP the Laplace approximation expands at)
    "digits": ((64,), "tanh", 60, 64, 3e-3, 1e-3),
    "breast_cancer": ((32,), "tanh", 100, 32, 3e-3, 1e-3),
    "diabetes": ((32,), "tanh", 150, 32, 3e-3, 1e-3),
}
BINS = 15


def train_map(name, seed):
    ds = datasets.load(name, seed=seed, dtype=np.float64)
    hidden, act, epochs, bs, lr, wd = CONFIG[name]
    sizes = (ds.X_train.shape[0],) + hidden + (ds.Y_train.shape[0],)
    net = jaxmlp.Network(sizes, (act,) * len(hidden) + (ds.output_activation,), ds.cost)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=jnp.float64)
    res = jaxmlp.fit(net, params, train.make_optimizer("adam", lr, weight_decay=wd),
                     ds.X_train, ds.Y_train,
                     epochs=epochs, batch_size=bs, key=jax.random.PRNGKey(100 + seed))
    if res.status != "completed":
        raise RuntimeError(f"{name} seed {seed}: training {res.status}: {res.message}")
    return ds, net, res.state.params


def confidences(P, binary):
    """(confidence, predicted class) per column."""
    P = np.asarray(P)
    if binary:
        return np.maximum(P[0], 1 - P[0]), (P[0] >= 0.5).astype(int)
    return P.max(0), P.argmax(0)


def labels(Y, binary):
    Y = np.asarray(Y)
    return Y[0].astype(int) if binary else Y.argmax(0)


def ece(conf, correct, bins=BINS):
    """Expected calibration error: sum_b (n_b / n) |accuracy_b - confidence_b|, and the bins."""
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


def classification(name, seed, structure):
    ds, net, params = train_map(name, seed)
    binary = ds.output_activation == "sigmoid"
    rng = np.random.default_rng(1000 + seed)
    X_ood = ds.X_test[rng.permutation(ds.X_test.shape[0])]
    t0 = time.perf_counter()
    la = lp.laplace(net, params, ds.X_train, ds.Y_train, structure=structure)
    la = lp.optimize_prior_precision(la, method="marglik")
    fit_s = time.perf_counter() - t0
    y = labels(ds.Y_test, binary)
    out = {"prior_precision": float(la.prior_precision), "fit_and_prior_seconds": fit_s}
    for which in ("map", "laplace"):
        if which == "map":
            P, P_ood = jaxmlp.predict(net, params, ds.X_test), jaxmlp.predict(net, params, X_ood)
        else:
            P, P_ood = la.predictive(ds.X_test), la.predictive(X_ood)
        conf, pred = confidences(P, binary)
        e, rows = ece(conf, (pred == y).astype(float))
        out[which] = {"accuracy": float(np.mean(pred == y)),
                      "nll": lp.negative_log_likelihood(net, P, ds.Y_test), "ece": e,
                      "ood_auroc": auroc(conf, confidences(P_ood, binary)[0]),
                      "reliability": rows}
    return out, (net, params, ds, la)


def regression(seed, structure):
    ds, net, params = train_map("diabetes", seed)
    mu_tr = np.asarray(jaxmlp.predict(net, params, ds.X_train))
    s2 = float(np.mean((mu_tr - np.asarray(ds.Y_train)) ** 2))
    mu = jaxmlp.predict(net, params, ds.X_test)
    map_nll = lp.negative_log_likelihood(net, (mu, jnp.full_like(mu, s2)), ds.Y_test)
    la = lp.laplace(net, params, ds.X_train, ds.Y_train, structure=structure,
                    sigma_noise=float(np.sqrt(s2)))
    la = lp.optimize_prior_precision(la, method="marglik", fit_sigma_noise=True)
    la_nll = lp.negative_log_likelihood(net, la.predictive(ds.X_test), ds.Y_test)
    return {"map": {"nll": map_nll, "noise_variance": s2},
            "laplace": {"nll": la_nll, "noise_variance": float(la.sigma_noise) ** 2,
                        "prior_precision": float(la.prior_precision)}}


def cost(net, params, ds, structure, rounds):
    """Paired timings on digits: one epoch, the Laplace fit, value_and_grad and the GLM
    predictive of the test split."""
    bs = CONFIG["digits"][3]
    opt = train.make_optimizer("adam", 1e-3)
    epoch = train.make_train_epoch(net, opt, bs)
    state = opt.init(params)
    key = jax.random.PRNGKey(0)
    la = lp.laplace(net, params, ds.X_train, ds.Y_train, structure=structure)
    variants = {
        "one epoch": lambda: epoch(params, state, key, ds.X_train, ds.Y_train)[0],
        f"laplace {structure} fit": lambda: lp.laplace(net, params, ds.X_train, ds.Y_train,
                                                       structure=structure).curvature,
        f"laplace {structure} fit, 1 MC column": lambda: lp.laplace(
            net, params, ds.X_train, ds.Y_train, structure=structure, mc_samples=1,
            key=key).curvature,
    }
    t_fit = benchmarking.time_paired(variants, reference="one epoch", rounds=rounds,
                                     target_s=0.05)
    variants = {
        "value_and_grad (test split)": lambda: jaxmlp.value_and_grad(net, params, ds.X_test,
                                                                     ds.Y_test),
        "GLM predictive (test split)": lambda: la.predictive(ds.X_test),
    }
    t_pred = benchmarking.time_paired(variants, reference="value_and_grad (test split)",
                                      rounds=rounds, target_s=0.05)
    return {"fit": t_fit, "predictive": t_pred}


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--structure", default="kron", choices=lp.STRUCTURES)
    ap.add_argument("--rounds", type=int, default=15, help="timing rounds (0: no timing)")
    output.add_out_arguments(ap, "results/laplace")
    args = ap.parse_args(argv)
    output.resolve_out(args, "laplace")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"--seeds: expected comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    doc = {"machine": benchmarking.machine_info(), "structure": args.structure,
           "config": {k: list(v) for k, v in CONFIG.items()}, "results": {}}
    print(f"{'set':>14} {'seed':>4} {'':>8} {'acc':>7} {'NLL':>8} {'ECE':>7} {'AUROC':>7}")
    keep = None
    for name in ("digits", "breast_cancer"):
        for seed in seeds:
            r, extra = classification(name, seed, args.structure)
            doc["results"].setdefault(name, {})[seed] = r
            if name == "digits" and keep is None:
                keep = extra
                svg_reliability(os.path.join(args.out, "reliability_digits.svg"),
                                [("MAP", r["map"]["reliability"]),
                                 (f"Laplace ({args.structure}, probit)",
                                  r["laplace"]["reliability"])],
                                f"digits, seed {seed}: reliability ({BINS} bins)")
            for w in ("map", "laplace"):
                m = r[w]
                print(f"{name:>14} {seed:>4} {w:>8} {m['accuracy']:7.4f} {m['nll']:8.4f} "
                      f"{m['ece']:7.4f} {m['ood_auroc']:7.4f}", flush=True)
    for seed in seeds:
        r = regression(seed, args.structure)
        doc["results"].setdefault("diabetes", {})[seed] = r
        print(f"{'diabetes':>14} {seed:>4} NLL MAP {r['map']['nll']:.4f} (noise var "
              f"{r['map']['noise_variance']:.3f})  Laplace {r['laplace']['nll']:.4f} (noise var "
              f"{r['laplace']['noise_variance']:.3f})", flush=True)
    if args.rounds > 0 and keep is not None:
        net, params, ds, _ = keep
        t = cost(net, params, ds, args.structure, args.rounds)
        doc["cost"] = {k: v.to_json() for k, v in t.items()}
        doc["load_average"] = benchmarking.load_average()
        for k, v in t.items():
            print(v.table())
    output.write_json(os.path.join(args.out, "laplace.json"), doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
