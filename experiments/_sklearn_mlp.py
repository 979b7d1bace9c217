"""The scikit-learn side of experiments/startup.py: one whole process that trains
``MLPClassifier`` on the split, network, optimizer and epochs of ``bash scripts/run.sh``.

    python experiments/_sklearn_mlp.py [--dataset digits] [--epochs 60] [--seed 0]

Digits, seed 0: the same train/test split and standardisation as jaxmlp (``jaxmlp/data/datasets.py``
is executed on its own, NumPy only, so JAX is not imported), one hidden layer of 128 ReLU
units, softmax output with cross-entropy, Adam lr 1e-3, minibatches of 64, 60 epochs, no L2
term and no early stopping. Prints one JSON line: test accuracy and the in-process seconds.
"""

import importlib.util
import json
import os
import sys
import time
import warnings

t_start = time.perf_counter()

import numpy as np  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from _common import cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _datasets():
    spec = importlib.util.spec_from_file_location(
        "jaxmlp_datasets", os.path.join(ROOT, "jaxmlp", "data", "datasets.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PROG = "_sklearn_mlp.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="digits", choices=["digits", "breast_cancer"],
                    help="digits or breast_cancer")
    ap.add_argument("--hidden", type=cli.positive_int, default=128,
                    help="units of the one hidden layer (>= 1)")
    ap.add_argument("--epochs", type=cli.positive_int, default=60,
                    help="epochs (MLPClassifier's max_iter, >= 1)")
    ap.add_argument("--batch-size", type=cli.positive_int, default=64,
                    help="examples per minibatch (>= 1)")
    ap.add_argument("--lr", type=cli.positive_float, default=1e-3,
                    help="Adam's learning rate (> 0)")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0,
                    help="seed of the split, the initialisation and the shuffles (>= 0)")
    return ap


def main(argv=None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    d = _datasets().load(a.dataset, seed=a.seed, dtype=np.float64)
    y_train, y_test = d.Y_train.argmax(0), d.Y_test.argmax(0)
    if d.n_outputs == 1:
        y_train, y_test = d.Y_train[0], d.Y_test[0]
    clf = MLPClassifier(hidden_layer_sizes=(a.hidden,), activation="relu", solver="adam",
                        learning_rate_init=a.lr, batch_size=a.batch_size, max_iter=a.epochs,
                        alpha=0.0, tol=0.0, n_iter_no_change=10**9, shuffle=True,
                        random_state=a.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "max_iter reached": the epochs are the budget
        clf.fit(d.X_train.T, y_train)
    accuracy = float(np.mean(clf.predict(d.X_test.T) == y_test))
    print(json.dumps({"test_accuracy": accuracy, "epochs": int(clf.n_iter_),
                      "in_process_seconds": time.perf_counter() - t_start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
