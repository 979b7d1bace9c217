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

The metrics, the OOD set and the reliability diagram are ``_common/laplace_report.py``'s (the
same as ``train.py --laplace``). Diagnostic: the MAP's test-optimal temperature T*
(``map_temperature``): the probit predictive only softens the MAP's logits, so it can lower
the NLL only where T* > 1 (an over-confident MAP).

Cost (digits, seed 0, ``_common.benchmarking.time_paired``, LAPACK on one thread): fitting
"kron" (exact factors and one Monte Carlo column) and "last_layer" against one training epoch
of the same network (target <= 2 epochs), and the GLM predictive of the test split against
one value_and_grad of that split (target <= 3x).

    python experiments/laplace.py [--seeds 0,1,2] [--structure kron] [--epochs N]
                                  [--weight-decay W] [--hidden N] [--prior evidence]
                                  [--rounds 15]
                                  [--out DIR | --results]

Writes ``laplace.json`` and ``reliability_digits.svg`` (MAP and Laplace, seed 0) under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # LAPACK on one thread (docs/curvature.md)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jaxmlp  # noqa: E402
from jaxmlp import laplace as lp  # noqa: E402
from jaxmlp import train  # noqa: E402
from jaxmlp.data import datasets  # noqa: E402

from _common import benchmarking, output  # noqa: E402
from _common import laplace_report as report  # noqa: E402

CONFIG = {  # dataset: hidden sizes, hidden activation, epochs, batch size, learning rate,
    # weight decay lambda (Adam on the mean cost + lambda/2 ||W||^2: a Gaussian prior of
    # precision lambda n_train on the weights, the MAP the Laplace approximation expands at)
    "digits": ((64,), "tanh", 60, 64, 3e-3, 1e-3),
    "breast_cancer": ((32,), "tanh", 100, 32, 3e-3, 1e-3),
    "diabetes": ((32,), "tanh", 150, 32, 3e-3, 1e-3),
}
BINS = report.BINS


def train_map(name, seed, holdout=0.0):
    """Trains the MAP on the training split; with ``holdout`` > 0 on all but that fraction of
    it (a random subset drawn from the seed). Returns ``(ds, net, params, (X_val, Y_val))``
    (the held-out columns; None without ``holdout``)."""
    ds = datasets.load(name, seed=seed, dtype=np.float64)
    val = None
    if holdout > 0:
        n = ds.X_train.shape[1]
        perm = np.random.default_rng(2000 + seed).permutation(n)
        v, f = perm[:int(holdout * n)], perm[int(holdout * n):]
        val = (ds.X_train[:, v], ds.Y_train[:, v])
        ds = ds._replace(X_train=ds.X_train[:, f], Y_train=ds.Y_train[:, f])
    hidden, act, epochs, bs, lr, wd = CONFIG[name]
    sizes = (ds.X_train.shape[0],) + hidden + (ds.Y_train.shape[0],)
    net = jaxmlp.Network(sizes, (act,) * len(hidden) + (ds.output_activation,), ds.cost)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=jnp.float64)
    res = jaxmlp.fit(net, params, train.make_optimizer("adam", lr, weight_decay=wd),
                     ds.X_train, ds.Y_train,
                     epochs=epochs, batch_size=bs, key=jax.random.PRNGKey(100 + seed))
    if res.status != "completed":
        raise RuntimeError(f"{name} seed {seed}: training {res.status}: {res.message}")
    return ds, net, res.state.params, val


def map_temperature(net, params, ds, binary):
    """Diagnostic: the temperature T of softmax(z / T) (sigmoid) with the smallest test NLL of
    the MAP, on a grid of 161 values in [0.1, 10]. T < 1 means the MAP is under-confident
    (sharpening helps), T > 1 over-confident; a probit predictive (LA11) only softens."""
    Z = jaxmlp.nn.recurrences.forward_pass(net, params, jnp.asarray(ds.X_test))[1].Z[-1]
    best = (None, np.inf)
    for T in np.logspace(-1, 1, 161):
        P = jax.nn.sigmoid(Z / T) if binary else jax.nn.softmax(Z / T, axis=0)
        nll = lp.negative_log_likelihood(net, P, ds.Y_test)
        best = (float(T), nll) if nll < best[1] else best
    return {"temperature": best[0], "nll": best[1]}


PRIORS = ("evidence", "evidence_per_layer", "weight_decay", "grid")


def classification(name, seed, structure, prior="evidence"):
    ds, net, params, val = train_map(name, seed, 0.2 if prior == "grid" else 0.0)
    binary = ds.output_activation == "sigmoid"
    t0 = time.perf_counter()
    la = lp.laplace(net, params, ds.X_train, ds.Y_train, structure=structure)
    if prior == "weight_decay":  # the prior the training's penalty implies: lambda n_train
        la = la.with_prior(CONFIG[name][5] * ds.X_train.shape[1])
    elif prior == "grid":  # validation NLL on the 20 % held out of training
        la = lp.optimize_prior_precision(la, method="grid", X_val=val[0], Y_val=val[1])
    else:
        start = 1.0 if prior == "evidence" else [1.0] * len(la.layers)
        la = lp.optimize_prior_precision(la.with_prior(start), method="marglik")
    fit_s = (jax.block_until_ready(la.prior_precision), time.perf_counter() - t0)[1]
    out = {"prior_precision": np.asarray(la.prior_precision).tolist(),
           "fit_and_prior_seconds": fit_s,
           **report.compare(net, params, la, ds.X_test, ds.Y_test, seed),
           "map_temperature": map_temperature(net, params, ds, binary)}
    return out, (net, params, ds, la)


def regression(seed, structure):
    ds, net, params, _ = train_map("diabetes", seed)
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


def cost(net, params, ds, rounds):
    """Paired timings on digits: one epoch against the Laplace fits (kron exact (KFLR), kron
    with one Monte Carlo column (KFAC), last_layer); value_and_grad of the test split against
    the GLM predictive of the test split (kron, last_layer)."""
    bs = CONFIG["digits"][3]
    opt = train.make_optimizer("adam", 1e-3)
    epoch = train.make_train_epoch(net, opt, bs)
    state = opt.init(params)
    key = jax.random.PRNGKey(0)
    X, Y = ds.X_train, ds.Y_train
    variants = {
        "one epoch": lambda: epoch(params, state, key, X, Y)[0],
        "laplace kron fit (exact factors)": lambda: lp.laplace(
            net, params, X, Y, structure="kron").curvature,
        "laplace kron fit (1 MC column)": lambda: lp.laplace(
            net, params, X, Y, structure="kron", mc_samples=1, key=key).curvature,
        "laplace last_layer fit": lambda: lp.laplace(
            net, params, X, Y, structure="last_layer").curvature,
    }
    t_fit = benchmarking.time_paired(variants, reference="one epoch", rounds=rounds,
                                     target_s=0.05)
    la = {s: lp.laplace(net, params, X, Y, structure=s) for s in ("kron", "last_layer")}
    variants = {
        "value_and_grad (test split)": lambda: jaxmlp.value_and_grad(net, params, ds.X_test,
                                                                     ds.Y_test),
        "GLM predictive kron (test split)": lambda: la["kron"].predictive(ds.X_test),
        "GLM predictive last_layer (test split)": lambda: la["last_layer"].predictive(ds.X_test),
    }
    t_pred = benchmarking.time_paired(variants, reference="value_and_grad (test split)",
                                      rounds=rounds, target_s=0.05)
    return {"fit": t_fit, "predictive": t_pred}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--structure", default="kron", choices=lp.STRUCTURES)
    ap.add_argument("--rounds", type=int, default=15, help="timing rounds (0: no timing)")
    ap.add_argument("--epochs", type=int, help="training epochs of digits and breast_cancer "
                    "(default: CONFIG's)")
    ap.add_argument("--weight-decay", type=float, help="weight decay of digits and "
                    "breast_cancer (default: CONFIG's)")
    ap.add_argument("--prior", default="evidence", choices=PRIORS,
                    help="classification's prior precision: a scalar by the evidence, one per "
                         "layer by the evidence, the training's weight decay times n_train, or "
                         "a scalar by the NLL of 20%% of the training split held out of training")
    ap.add_argument("--hidden", type=int, help="one hidden layer of this width for digits and "
                    "breast_cancer (default: CONFIG's)")
    output.add_out_arguments(ap, "results/laplace")
    args = ap.parse_args(argv)
    output.resolve_out(args, "laplace")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"--seeds: expected comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    for name in ("digits", "breast_cancer"):
        c = list(CONFIG[name])
        c[2] = c[2] if args.epochs is None else args.epochs
        c[5] = c[5] if args.weight_decay is None else args.weight_decay
        c[0] = c[0] if args.hidden is None else (args.hidden,)
        CONFIG[name] = tuple(c)
    doc = {"machine": benchmarking.machine_info(), "structure": args.structure,
           "prior": args.prior,
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "config": {k: list(v) for k, v in CONFIG.items()}, "results": {}}
    print(f"{'set':>14} {'seed':>4} {'':>8} {'acc':>7} {'NLL':>8} {'ECE':>7} {'AUROC':>7}")
    keep = None
    for name in ("digits", "breast_cancer"):
        for seed in seeds:
            r, extra = classification(name, seed, args.structure, args.prior)
            doc["results"].setdefault(name, {})[seed] = r
            if name == "digits" and keep is None:
                keep = extra
                report.svg_reliability(os.path.join(args.out, "reliability_digits.svg"),
                                [("MAP", r["map"]["reliability"]),
                                 (f"Laplace ({args.structure}, probit)",
                                  r["laplace"]["reliability"])],
                                f"digits, seed {seed}: reliability ({BINS} bins)")
            for w in ("map", "laplace"):
                m = r[w]
                extra = (f"  T* {r['map_temperature']['temperature']:.3f}" if w == "map"
                         else f"  prior {np.round(r['prior_precision'], 3)}")
                print(f"{name:>14} {seed:>4} {w:>8} {m['accuracy']:7.4f} {m['nll']:8.4f} "
                      f"{m['ece']:7.4f} {m['ood_auroc']:7.4f}{extra}", flush=True)
    for seed in seeds:
        r = regression(seed, args.structure)
        doc["results"].setdefault("diabetes", {})[seed] = r
        print(f"{'diabetes':>14} {seed:>4} NLL MAP {r['map']['nll']:.4f} (noise var "
              f"{r['map']['noise_variance']:.3f})  Laplace {r['laplace']['nll']:.4f} (noise var "
              f"{r['laplace']['noise_variance']:.3f})", flush=True)
    if args.rounds > 0 and keep is not None and args.hidden is None:
        net, params, ds, _ = keep
        t = cost(net, params, ds, args.rounds)
        doc["cost"] = {k: v.to_json() for k, v in t.items()}
        doc["load_average"] = benchmarking.load_average()
        for k, v in t.items():
            print(v.table())
    output.write_json(os.path.join(args.out, "laplace.json"), doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
