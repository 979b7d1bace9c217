"""Predictions of a trained network for new rows: ``train.py``'s output folder + a table -> a table.

    python experiments/predict.py --checkpoint results/train/shop --data new_rows.csv --out pred.csv

``--checkpoint`` is a run's ``--out`` folder (its ``model.npz``, written by train.py at the end
of a completed run), a folder of orbax checkpoints (``DIR`` or ``DIR/checkpoints``: the newest
one), or an exported ``.npz``/``.safetensors`` file (``jaxmlp.data.export``) whose metadata holds
the preprocessing. The preprocessing saved with the network (feature columns, one-hot
categories, imputation, standardisation, class names) is applied to ``--data`` (CSV, Parquet or
.npz, as in training); its columns must be the training features (any order; target columns
may be present and are ignored).

Written to ``--out`` (.csv or .parquet), one row per input row:

* classification: ``prediction`` (the most probable class) and ``probability[<class>]`` for
  every class;
* multilabel: ``<label>`` (0/1, probability >= 0.5) and ``probability[<label>]`` per label;
* regression: ``<target>`` per target column, in the targets' units.

Exit status: 0 done; 2 bad input (one message on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from _common import cli, guards  # noqa: E402
from _common.cli import EXIT_OK, EXIT_USAGE, UsageError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="predict.py", description=__doc__.split("\n\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter,
                   epilog="exit status: 0 done; 2 bad input (nothing written)")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a train.py output folder, a checkpoints folder, or an exported model file")
    p.add_argument("--data", required=True, metavar="FILE", help="new rows: .csv, .parquet or .npz")
    p.add_argument("--out", required=True, metavar="FILE", help="predictions: .csv or .parquet")
    p.add_argument("--register", metavar="FILE.py", action="append",
                   help="a Python file registering the activations/costs the network uses")
    return p


def _from_orbax(cdir: str):
    """(net, params, metadata) from the newest orbax checkpoint of a train.py run."""
    import jax

    import jaxmlp
    from jaxmlp.train import checkpoint as ckpt_lib
    from jaxmlp import train

    built = {}

    def like(meta):  # the state the newest readable checkpoint is restored into
        if "preprocessing" not in meta:
            raise UsageError(f"--checkpoint: the checkpoints in {cdir} have no preprocessing "
                             "metadata (feature names, standardisation, classes): written by an "
                             "older train.py; retrain to predict with them.")
        try:
            d = meta["network"]
            built["net"] = net = jaxmlp.Network(tuple(d["sizes"]), tuple(d["activations"]),
                                                d["cost"])
            c = meta["config"]
            opt = train.make_optimizer(c["optimizer"], c["lr"], schedule=c["schedule"],
                                       total_steps=c["total_steps"],
                                       weight_decay=c["weight_decay"])
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"--checkpoint: {cdir}: unusable metadata ({e}).") from None
        params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
        return train.TrainState(params, opt.init(params), jax.random.PRNGKey(0), 0)

    # damaged checkpoints are skipped (named on stderr), as --resume does
    state, meta = guards.restore_newest_intact(cdir, like)
    return built["net"], state.params, meta


def load_model(path: str):
    """(net, params, Preprocessing) from ``--checkpoint``; UsageError when unusable."""
    from jaxmlp.train import checkpoint as ckpt_lib
    from jaxmlp.data import export
    from jaxmlp.data import tabular

    if os.path.isfile(path):
        model_file = path
    elif os.path.isdir(path):
        model_file = os.path.join(path, "model.npz")
    else:
        raise UsageError(f"--checkpoint: {path!r} does not exist.")
    if os.path.isfile(model_file):
        try:
            net, params, meta = export.load(model_file)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--checkpoint: {str(e).partition(': ')[2] or e}") from None
        if os.path.isdir(path):  # a run folder: its results.json must record this model
            guards.check_model_of_run(model_file, params)
    else:
        cdir = ckpt_lib.checkpoint_dir(path)
        if ckpt_lib.latest_epoch(cdir) is None:
            raise UsageError(f"--checkpoint: {path!r} holds neither model.npz (written by "
                             "train.py when a run completes) nor orbax checkpoints.")
        net, params, meta = _from_orbax(cdir)
    if "preprocessing" not in meta:
        raise UsageError(f"--checkpoint: {model_file} has no preprocessing metadata (feature "
                         "names, standardisation, classes); export it with "
                         "metadata={'preprocessing': prep.to_dict()}.")
    try:
        prep = tabular.Preprocessing.from_dict(meta["preprocessing"])
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"--checkpoint: damaged preprocessing metadata ({e}).") from None
    if prep.n_inputs != net.sizes[0]:
        raise UsageError(f"--checkpoint: the preprocessing gives {prep.n_inputs} inputs, the "
                         f"network takes n[0] = {net.sizes[0]}.")
    return net, params, prep


def predictions_frame(net, params, prep, X: np.ndarray):
    """The output table for X (n[0], m)."""
    import jax.numpy as jnp
    import pandas as pd

    import jaxmlp
    from jaxmlp.data import tabular

    dtype = params[0]["W"].dtype
    A = np.asarray(jaxmlp.predict(net, params, jnp.asarray(X, dtype=dtype)), dtype=np.float64)
    out = {}
    if prep.task == "classification":
        P = np.concatenate([1.0 - A, A]) if A.shape[0] == 1 else A  # (classes, m)
        out["prediction"] = np.asarray(prep.class_names, dtype=object)[np.argmax(P, axis=0)]
        for c, row in zip(prep.class_names, P):
            out[f"probability[{c}]"] = row
    elif prep.task == "multilabel":
        for c, row in zip(prep.class_names, A):
            out[c] = (row >= 0.5).astype(np.int64)
        for c, row in zip(prep.class_names, A):
            out[f"probability[{c}]"] = row
    else:
        for c, row in zip(prep.target_columns, tabular.inverse_target(prep, A)):
            out[c] = row
    return pd.DataFrame(out)


def predict(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out_ext = os.path.splitext(args.out)[1].lower()
    if out_ext not in (".csv", ".parquet"):
        raise UsageError(f"--out: expected a file ending in .csv or .parquet, got {args.out!r}.")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out: the folder {out_dir!r} does not exist.")
    guards.refuse_same_file(args.data, args.out)  # never write over the input rows
    from jaxmlp.data import tabular

    cli.run_registrations(args.register or [])
    net, params, prep = load_model(args.checkpoint)
    try:
        frame = tabular.read_table(args.data)
        X = tabular.transform(prep, frame)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--data: {str(e).partition(': ')[2] or e}") from None
    table = predictions_frame(net, params, prep, X)
    if out_ext == ".csv":
        table.to_csv(args.out, index=False)
    else:
        table.to_parquet(args.out, index=False)
    print(f"wrote {len(table)} predictions ({prep.task}, network "
          f"{'-'.join(map(str, net.sizes))}) to {args.out}")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return predict(argv)
    except UsageError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
