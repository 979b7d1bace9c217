"""jaxmlp.sklearn.MLPClassifier against scikit-learn's MLPClassifier: accuracy and fit time.

    python experiments/sklearn_compare.py                       # table only
    python experiments/sklearn_compare.py --out results/sklearn # also writes compare.json

Both estimators get the same data (scikit-learn's bundled digits and breast cancer sets,
a stratified 75/25 split per seed, features standardised on the training split), the same
hidden sizes, epochs, batch size (200), Adam learning rate (1e-3) and no L2 penalty
(scikit-learn's ``alpha=0``); scikit-learn's early stop on a flat training loss is turned
off (``n_iter_no_change=epochs``), so both run every epoch. Test accuracy is reported per
seed. Fit time, two ways, in one process:

* compile included: the first ``fit`` of each setting in the process (jaxmlp traces and
  compiles its epoch; scikit-learn has nothing to compile);
* compile excluded: later fits of the same setting, timed with the repository's paired
  protocol (``_common.benchmarking.time_paired``: warm-up, interleaved rounds, paired
  ratios), jaxmlp reusing its compiled epoch.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.preprocessing import StandardScaler

from _common import benchmarking
from _common.output import write_json
from jaxmlp.sklearn import MLPClassifier

DATASETS = {"digits": load_digits, "breast_cancer": load_breast_cancer}


def split(name: str, seed: int):
    X, y = DATASETS[name](return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr, yte


def estimators(hidden: tuple, epochs: int, seed: int):
    ours = MLPClassifier(hidden, max_iter=epochs, batch_size=200, learning_rate_init=1e-3,
                         n_iter_no_change=epochs, random_state=seed)
    theirs = SkMLP(hidden, max_iter=epochs, batch_size=200, learning_rate_init=1e-3, alpha=0.0,
                   n_iter_no_change=epochs, random_state=seed)
    return {"jaxmlp": ours, "scikit-learn": theirs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[100], help="hidden layer sizes")
    p.add_argument("--epochs", type=int, default=50, help="epochs of every fit")
    p.add_argument("--seeds", type=int, default=3, help="splits and initialisations per set")
    p.add_argument("--rounds", type=int, default=5, help="paired timing rounds per setting")
    p.add_argument("--out", default=None, help="folder for compare.json (none: table only)")
    args = p.parse_args(argv)
    hidden = tuple(args.hidden)
    warnings.simplefilter("ignore", ConvergenceWarning)
    rows = []
    for name in DATASETS:
        for seed in range(args.seeds):
            Xtr, Xte, ytr, yte = split(name, seed)
            row = {"dataset": name, "seed": seed, "n_train": len(Xtr)}
            models = estimators(hidden, args.epochs, seed)
            for who, est in models.items():
                t0 = time.perf_counter()
                est.fit(Xtr, ytr)
                row[f"{who}_first_fit_s"] = time.perf_counter() - t0
                row[f"{who}_accuracy"] = float(est.score(Xte, yte))
            if seed == 0:  # compile excluded: paired rounds of later fits of the same setting
                timing = benchmarking.time_paired(
                    {who: (lambda est=est: est.fit(Xtr, ytr)) for who, est in models.items()},
                    reference="scikit-learn", rounds=args.rounds, inner=1, warmup=1)
                row["timing"] = timing.to_json()
                row["fit_ratio_jaxmlp_to_sklearn"] = timing.paired_ratio("jaxmlp")
            rows.append(row)
            print(f"{name:14s} seed {seed}: accuracy jaxmlp {row['jaxmlp_accuracy']:.4f} "
                  f"scikit-learn {row['scikit-learn_accuracy']:.4f}; first fit "
                  f"{row['jaxmlp_first_fit_s']:.2f} s vs {row['scikit-learn_first_fit_s']:.2f} s",
                  flush=True)
    print(f"\nhidden {hidden}, {args.epochs} epochs, batch 200, Adam 1e-3; "
          f"{benchmarking.describe(benchmarking.machine_info())}")
    print(f"{'set':14s} {'acc jaxmlp':>11s} {'acc sklearn':>11s} {'first fit (s)':>16s} "
          f"{'warm fit ratio':>15s}")
    for name in DATASETS:
        rs = [r for r in rows if r["dataset"] == name]
        acc_j = np.mean([r["jaxmlp_accuracy"] for r in rs])
        acc_s = np.mean([r["scikit-learn_accuracy"] for r in rs])
        first = f"{rs[0]['jaxmlp_first_fit_s']:.2f} / {rs[0]['scikit-learn_first_fit_s']:.2f}"
        ratio = rs[0]["fit_ratio_jaxmlp_to_sklearn"]
        print(f"{name:14s} {acc_j:11.4f} {acc_s:11.4f} {first:>16s} "
              f"{ratio['median']:8.2f} [{ratio['q25']:.2f}, {ratio['q75']:.2f}]")
    print("(accuracy: mean over seeds; first fit: seed 0, jaxmlp / scikit-learn, compile "
          "included; warm fit ratio: jaxmlp / scikit-learn, paired median [IQR])")
    if args.out:
        path = write_json(f"{args.out}/compare.json", {
            "machine": benchmarking.machine_info(), "hidden": list(hidden),
            "epochs": args.epochs, "rows": rows})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
