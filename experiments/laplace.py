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

``--prior marglik_training`` (``marglik_training_per_layer``: one prior per layer): the
network is trained by ``jaxmlp.train.marglik_training`` (the prior precision learned
during training, the weight decay following it) with the same network, initialisation,
Adam rate, batch size and epochs; its MAP and its posterior (the last epochs' prior) are
compared, and the fixed-decay MAP's numbers are kept beside them (``fixed_decay_map``).

``--study``: issue 22's target over a grid of standard trainings (weight decay x epochs x
seeds, "kron" and "last_layer" with the scalar prior by the evidence at each MAP), every cell
and a per-setting summary in ``study.json``.

    python experiments/laplace.py [--seeds 0,1,2] [--structure kron] [--epochs N]
                                  [--weight-decay W] [--hidden N] [--prior evidence]
                                  [--rounds 15]
                                  [--out DIR | --results]
    python experiments/laplace.py --study [--study-decays 1e-4,3e-4,1e-3]
                                  [--study-epochs 60,200] [--seeds 0,1,2]
                                  [--out DIR | --results]

Writes ``laplace.json`` and ``reliability_digits.svg`` (MAP and Laplace, seed 0) under --out
(``--results``: results/laplace, results/laplace/<prior> with ``--prior marglik_training``
or ``marglik_training_per_layer``, results/laplace/study with ``--study``).
"""

from __future__ import annotations

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

from _common import benchmarking, cli, output  # noqa: E402
from _common import laplace_report as report  # noqa: E402

CONFIG = {  # dataset: hidden sizes, hidden activation, epochs, batch size, learning rate,
    # weight decay lambda (Adam on the mean cost + lambda/2 ||W||^2: a Gaussian prior of
    # precision lambda n_train on the weights, the MAP the Laplace approximation expands at)
    "digits": ((64,), "tanh", 60, 64, 3e-3, 1e-3),
    "breast_cancer": ((32,), "tanh", 100, 32, 3e-3, 1e-3),
    "diabetes": ((32,), "tanh", 150, 32, 3e-3, 1e-3),
}
BINS = report.BINS


def train_map(name, seed, holdout=0.0, *, epochs=None, weight_decay=None):
    """Trains the MAP on the training split; with ``holdout`` > 0 on all but that fraction of
    it (a random subset drawn from the seed). ``epochs``, ``weight_decay``: CONFIG's unless
    given. Returns ``(ds, net, params, (X_val, Y_val))`` (the held-out columns; None without
    ``holdout``)."""
    ds = datasets.load(name, seed=seed, dtype=np.float64)
    val = None
    if holdout > 0:
        n = ds.X_train.shape[1]
        perm = np.random.default_rng(2000 + seed).permutation(n)
        v, f = perm[:int(holdout * n)], perm[int(holdout * n):]
        val = (ds.X_train[:, v], ds.Y_train[:, v])
        ds = ds._replace(X_train=ds.X_train[:, f], Y_train=ds.Y_train[:, f])
    hidden, act, ep, bs, lr, wd = CONFIG[name]
    epochs = ep if epochs is None else epochs
    wd = wd if weight_decay is None else weight_decay
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


PRIORS = ("evidence", "evidence_per_layer", "weight_decay", "grid", "marglik_training",
          "marglik_training_per_layer")


def marglik_classification(name, seed, structure, per_layer=False):
    """``--prior marglik_training``: the same network, initialisation, Adam rate, batch size,
    epochs and minibatches (the same key, split as fit splits it) as train_map, trained by
    ``jaxmlp.train.marglik_training`` (laplace-torch's defaults: prior 1 at the start, updated
    after every epoch by 10 evidence steps of rate 0.1; the decay on W and b; ``per_layer``:
    one prior per layer, as laplace-torch's default "layerwise") instead of a fixed weight
    decay. Returns the marglik-trained network's MAP and Laplace numbers, and the fixed-decay
    MAP's (train_map) for reference."""
    ds = datasets.load(name, seed=seed, dtype=np.float64)
    hidden, act, epochs, bs, lr, _ = CONFIG[name]
    sizes = (ds.X_train.shape[0],) + hidden + (ds.Y_train.shape[0],)
    net = jaxmlp.Network(sizes, (act,) * len(hidden) + (ds.output_activation,), ds.cost)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=jnp.float64)
    t0 = time.perf_counter()
    r = train.marglik_training(net, params, ds.X_train, ds.Y_train, epochs=epochs,
                               batch_size=bs, optimizer=train.make_optimizer("adam", lr),
                               structure=structure, key=jax.random.PRNGKey(100 + seed),
                               prior_precision=[1.0] * len(sizes[1:]) if per_layer else 1.0)
    fit_s = (jax.block_until_ready(r.posterior.prior_precision), time.perf_counter() - t0)[1]
    binary = ds.output_activation == "sigmoid"
    out = {"prior_precision": np.asarray(r.posterior.prior_precision).tolist(),
           "marglik_training_seconds": fit_s,
           **report.compare(net, r.params, r.posterior, ds.X_test, ds.Y_test, seed),
           "map_temperature": map_temperature(net, r.params, ds, binary),
           "history": {k: v.tolist() for k, v in r.history.items()}}
    _, net0, params0, _ = train_map(name, seed)
    la0 = lp.laplace(net0, params0, ds.X_train, ds.Y_train, structure=structure)
    fixed = report.compare(net0, params0, la0, ds.X_test, ds.Y_test, seed)["map"]
    fixed.pop("reliability")
    out["fixed_decay_map"] = {**fixed, "weight_decay": CONFIG[name][5],
                              "map_temperature": map_temperature(net0, params0, ds, binary)}
    return out, (net, r.params, ds, r.posterior)


def classification(name, seed, structure, prior="evidence"):
    if prior.startswith("marglik_training"):
        return marglik_classification(name, seed, structure, prior.endswith("per_layer"))
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


STUDY_STRUCTURES = ("kron", "last_layer")


def study(names, seeds, decays, epochs_list):
    """Issue 22's target over a grid of standard MAP trainings: for every set, weight decay,
    epoch count and seed, one MAP (CONFIG's network, Adam) and, at it, each of
    STUDY_STRUCTURES with a scalar prior by the evidence (as ``--prior evidence``). Returns
    the cells: MAP and Laplace metrics, T*, the prior precision."""
    cells = []
    print(f"{'set':>14} {'wd':>7} {'ep':>4} {'seed':>4} {'T*':>5} {'structure':>10} "
          f"{'prior':>7} {'dacc':>7} {'NLL map':>8} {'NLL la':>8} {'ECE map':>8} "
          f"{'ECE la':>8} {'AUROC map':>9} {'AUROC la':>8}")
    for name in names:
        for wd in decays:
            for ep in epochs_list:
                for seed in seeds:
                    ds, net, params, _ = train_map(name, seed, epochs=ep, weight_decay=wd)
                    T = map_temperature(net, params, ds, ds.output_activation == "sigmoid")
                    for structure in STUDY_STRUCTURES:
                        la = lp.laplace(net, params, ds.X_train, ds.Y_train,
                                        structure=structure)
                        la = lp.optimize_prior_precision(la.with_prior(1.0), method="marglik")
                        r = report.compare(net, params, la, ds.X_test, ds.Y_test, seed)
                        for w in ("map", "laplace"):
                            r[w].pop("reliability")
                        m, a = r["map"], r["laplace"]
                        cell = {"set": name, "weight_decay": wd, "epochs": ep, "seed": seed,
                                "structure": structure,
                                "prior_precision": float(la.prior_precision),
                                "map_temperature": T["temperature"], **r,
                                "nll_lower": a["nll"] < m["nll"],
                                "ece_lower": a["ece"] < m["ece"],
                                "auroc_higher": a["ood_auroc"] > m["ood_auroc"],
                                "accuracy_within_0.5": abs(a["accuracy"] - m["accuracy"])
                                <= 0.005}
                        cells.append(cell)
                        print(f"{name:>14} {wd:7.0e} {ep:4d} {seed:4d} {T['temperature']:5.2f} "
                              f"{structure:>10} {cell['prior_precision']:7.3g} "
                              f"{a['accuracy'] - m['accuracy']:+7.4f} {m['nll']:8.4f} "
                              f"{a['nll']:8.4f} {m['ece']:8.4f} {a['ece']:8.4f} "
                              f"{m['ood_auroc']:9.4f} {a['ood_auroc']:8.4f}", flush=True)
    return cells


def study_summary(cells):
    """Per (set, weight decay, epochs, structure): in how many seeds each part of the target
    holds, and whether the whole target holds in every seed."""
    groups = {}
    for c in cells:
        k = (c["set"], c["weight_decay"], c["epochs"], c["structure"])
        groups.setdefault(k, []).append(c)
    out = []
    for (name, wd, ep, structure), cs in groups.items():
        parts = {p: sum(c[p] for c in cs) for p in
                 ("nll_lower", "ece_lower", "auroc_higher", "accuracy_within_0.5")}
        out.append({"set": name, "weight_decay": wd, "epochs": ep, "structure": structure,
                    "seeds": len(cs), **parts,
                    "target_met": all(v == len(cs) for v in parts.values())})
    return out


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


PROG = "laplace.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", type=cli.int_list(0), metavar="S[,S...]",
                    help="comma-separated seeds (>= 0) of the splits and trainings")
    ap.add_argument("--structure", default="kron", choices=lp.STRUCTURES,
                    help=f"the Hessian approximation, one of {', '.join(lp.STRUCTURES)}")
    ap.add_argument("--rounds", type=cli.nonnegative_int, default=15,
                    help="timing rounds, >= 0 (0: no timing)")
    ap.add_argument("--epochs", type=cli.positive_int, help="training epochs (>= 1) of digits "
                    "and breast_cancer (default: CONFIG's)")
    ap.add_argument("--weight-decay", type=cli.nonnegative_float, help="weight decay (>= 0) of "
                    "digits and breast_cancer (default: CONFIG's)")
    ap.add_argument("--prior", default="evidence", choices=PRIORS,
                    help="classification's prior precision: a scalar by the evidence, one per "
                         "layer by the evidence, the training's weight decay times n_train, or "
                         "a scalar by the NLL of 20%% of the training split held out of "
                         "training, or learned during training (jaxmlp.train."
                         "marglik_training, a scalar or one per layer; with --results: "
                         "results/laplace/<this prior>)")
    ap.add_argument("--hidden", type=cli.positive_int, help="one hidden layer of this width "
                    "(>= 1) for digits and breast_cancer (default: CONFIG's)")
    ap.add_argument("--study", action="store_true",
                    help="issue 22's target over a grid of MAP trainings (--study-decays x "
                         "--study-epochs x --seeds, structures kron and last_layer, scalar "
                         "prior by the evidence): study.json, in results/laplace/study with "
                         "--results")
    ap.add_argument("--study-decays", default="1e-4,3e-4,1e-3", type=cli.positive_float_list,
                    metavar="WD[,WD...]",
                    help="with --study: comma-separated weight decays of the grid (each > 0)")
    ap.add_argument("--study-epochs", default="60,200", type=cli.positive_int_list,
                    metavar="E[,E...]",
                    help="with --study: comma-separated training epochs of the grid (each >= 1)")
    output.add_out_arguments(ap, "results/laplace")
    return ap


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if args.study:
            args._results_path = "results/laplace/study"
        elif args.prior.startswith("marglik_training"):
            args._results_path = "results/laplace/" + args.prior
        output.resolve_out(args, "laplace")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    seeds = args.seeds
    if args.study:
        decays, epochs_list = args.study_decays, args.study_epochs
        doc = {"machine": benchmarking.machine_info(), "structures": list(STUDY_STRUCTURES),
               "prior": "evidence (scalar)", "seeds": seeds,
               "config": {k: list(v) for k, v in CONFIG.items()},
               "load_average_start": benchmarking.load_average()}
        doc["cells"] = study(("digits", "breast_cancer"), seeds, decays, epochs_list)
        doc["summary"] = study_summary(doc["cells"])
        doc["load_average_end"] = benchmarking.load_average()
        for g in doc["summary"]:
            print(f"{g['set']:>14} wd {g['weight_decay']:.0e} {g['epochs']:4d} ep "
                  f"{g['structure']:>10}: NLL lower {g['nll_lower']}/{g['seeds']}, ECE lower "
                  f"{g['ece_lower']}/{g['seeds']}, AUROC higher {g['auroc_higher']}/"
                  f"{g['seeds']}, acc within 0.5 {g['accuracy_within_0.5']}/{g['seeds']}"
                  f"{'  TARGET MET' if g['target_met'] else ''}")
        print(f"wrote {output.write_json(os.path.join(args.out, 'study.json'), doc)}")
        return 0
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
            for w in ("fixed_decay_map", "map", "laplace"):
                if w not in r:
                    continue
                m = r[w]
                extra = (f"  T* {r['map_temperature']['temperature']:.3f}" if w == "map"
                         else f"  prior {np.round(r['prior_precision'], 3)}" if w == "laplace"
                         else f"  T* {m['map_temperature']['temperature']:.3f} (weight decay "
                              f"{m['weight_decay']:g}, CONFIG's training)")
                w = "wd MAP" if w == "fixed_decay_map" else w
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
    print(f"wrote {output.write_json(os.path.join(args.out, 'laplace.json'), doc)}"
          + (f" and {os.path.join(os.path.abspath(args.out), 'reliability_digits.svg')}"
             if keep is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
