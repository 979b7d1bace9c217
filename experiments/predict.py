"""Predictions of a trained network for new rows: ``train.py``'s output folder + a table -> a table.

    python experiments/predict.py --checkpoint results/train/shop --data new_rows.csv --out pred.csv

``--checkpoint`` is a run's ``--out`` folder (its ``model.npz``, written by train.py at the end
of a completed run), a folder of orbax checkpoints (``DIR`` or ``DIR/checkpoints``: the newest
one), or an exported ``.npz``/``.safetensors`` file (``jaxmlp.data.export``) whose metadata holds
the preprocessing. The preprocessing saved with the network (feature columns, one-hot
categories, imputation, standardisation, class names) is applied to ``--data`` (CSV, Parquet or
.npz, as in training); its columns must be the training features (any order; target columns
may be present and are ignored).

Written to ``--out`` (.csv or .parquet), one row per input row, first the row's id: the
``--id`` column, else a column named ``id`` that is not a feature, else ``row`` (the row
number, from 0); then

* classification: ``prediction`` (the most probable class) and ``probability[<class>]`` for
  every class;
* multilabel: ``<label>`` (0/1, probability >= 0.5) and ``probability[<label>]`` per label;
* regression: ``<target>`` per target column, in the targets' units.

``--laplace``: the Laplace predictive of the posterior that ``train.py --laplace`` saved in
the run folder (``laplace.npz``; ``jaxmlp.load_model(folder).predict_proba(rows,
laplace=True)``), beside the MAP's columns: classification ``laplace_prediction`` (the most
probable class under the GLM probit predictive) and ``laplace_probability[<class>]``;
multilabel ``laplace_<label>`` and ``laplace_probability[<label>]``; regression
``std[<target>]``, the predictive standard deviation sqrt(diag J P^{-1} J^T + sigma^2) in the
target's units (the mean is the MAP's ``<target>``). Refused (exit 2) when ``--checkpoint``
holds no posterior.

Relative paths are taken from the folder you run in (``scripts/run.sh`` passes it). Missing
feature values are refused (every such column named) unless the model was trained with
``--impute``, which then fills them with the training split's values.

Exit status: 0 done; 2 bad input (one message on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--id", metavar="COLUMN", help="the column of row ids copied to the output "
                   "(default: a column named 'id' that is not a feature, else the row number)")
    p.add_argument("--register", metavar="FILE.py", action="append",
                   help="a Python file registering the activations/costs the network uses "
                   "(default: none)")
    p.add_argument("--laplace", action="store_true",
                   help="add the Laplace predictive of the run's posterior (train.py --laplace "
                   "writes laplace.npz): probabilities, or the regression's std")
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
        K = (meta.get("config") or {}).get("ensemble")
        if K is not None:
            raise UsageError(f"--checkpoint: the checkpoints in {cdir} are an ensemble's ({K} "
                             "members), which only train.py --resume reads; predict from the "
                             "run folder's model.npz (every member), written when the run "
                             "completes.")
        try:
            d = meta["network"]
            built["net"] = net = jaxmlp.Network(tuple(d["sizes"]), tuple(d["activations"]),
                                                d["cost"])
            c = meta["config"]
            opt = train.make_optimizer(c["optimizer"], c["lr"], schedule=c["schedule"],
                                       total_steps=(None if c["schedule"] == "constant"
                                                    else c["total_steps"]),
                                       weight_decay=c["weight_decay"])
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"--checkpoint: {cdir}: unusable metadata ({e}).") from None
        params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
        return train.TrainState(params, opt.init(params), jax.random.PRNGKey(0), 0)

    # damaged checkpoints are skipped (named on stderr), as --resume does
    state, meta = guards.restore_newest_intact(cdir, like)
    return built["net"], state.params, meta, int(state.epoch)


def _run_status(path: str) -> str:
    """``" (the run's results.json: status 'diverged', 12 epochs)"`` for a run folder whose
    results.json does not say it completed; ``""`` otherwise."""
    folder = path if os.path.basename(os.path.normpath(path)) != "checkpoints" else \
        os.path.dirname(os.path.normpath(path))
    try:
        with open(os.path.join(folder, "results.json")) as f:
            r = json.load(f)
        status, epochs = r.get("status"), r.get("epochs_done")
    except (OSError, ValueError, AttributeError):
        return " (the run wrote no results.json: it did not finish)"
    return "" if status == "completed" else f" (the run's results.json: status {status!r}, " \
        f"{epochs} epochs)"


def load_model(path: str, laplace: bool = False):
    """The :class:`jaxmlp.data.export.Model` of ``--checkpoint`` (preprocessing included;
    a run folder's ``laplace.npz`` as its posterior); UsageError when unusable, or with
    ``laplace`` when it has no usable posterior."""
    from jaxmlp.train import checkpoint as ckpt_lib
    from jaxmlp.data import export

    posterior, note = None, None
    if os.path.isfile(path):
        model_file = path
    elif os.path.isdir(path):
        model_file = os.path.join(path, "model.npz")
        if os.path.exists(os.path.join(path, export.POSTERIOR_FILE)):
            posterior = os.path.join(path, export.POSTERIOR_FILE)
    else:
        raise UsageError(f"--checkpoint: {path!r} does not exist.")
    if os.path.isfile(model_file):
        try:
            net, params, meta = export.load(model_file)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--checkpoint: {str(e).partition(': ')[2] or e}") from None
        guards.check_model_of_run(model_file, params)  # in a run folder: results.json's model
    else:
        cdir = ckpt_lib.checkpoint_dir(path)
        if ckpt_lib.latest_epoch(cdir) is None:
            raise UsageError(f"--checkpoint: {path!r} holds neither model.npz (written by "
                             "train.py when a run completes) nor orbax checkpoints.")
        net, params, meta, epoch = _from_orbax(cdir)
        note = (f"predict.py: no model.npz in {path}: predicting with its newest intact "
                f"checkpoint, epoch {epoch}{_run_status(path)}")
    if "preprocessing" not in meta:
        raise UsageError(f"--checkpoint: {model_file} has no preprocessing metadata (feature "
                         "names, standardisation, classes); export it with "
                         "metadata={'preprocessing': prep.to_dict()}.")
    try:
        model = export.Model(net, params, meta, posterior=posterior if os.path.isfile(
            model_file) else None, path=path)
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"--checkpoint: damaged preprocessing metadata ({e}).") from None
    if laplace:
        try:
            la = model.posterior  # read and checked against the model now
        except (TypeError, ValueError) as e:
            raise UsageError(f"--laplace: {str(e).partition(': ')[2] or e}") from None
        if la is None:
            where = (f"the folder {path!r} holds no {export.POSTERIOR_FILE}"
                     if os.path.isfile(model_file) and os.path.isdir(path) else
                     f"{path!r} is not a run folder with a {export.POSTERIOR_FILE}")
            raise UsageError(f"--laplace: the Laplace predictive needs the posterior that "
                             f"`train.py --laplace kron` (or diag, full, last_layer) saves; "
                             f"{where}.")
    if note is not None:  # said once the model is usable (an error stays one line)
        print(note, file=sys.stderr)
    return model


def row_ids(frame, prep, id_column: Optional[str]):
    """(name, values) of the output's id column: ``--id``, else a non-feature column named
    ``id`` (any case), else ``row`` = the row numbers from 0."""
    if id_column is not None:
        if id_column not in frame.columns:
            raise UsageError(f"--id: column {id_column!r} is not in --data; its columns are "
                             f"{list(frame.columns)[:10]}.")
        if id_column in prep.feature_columns:
            raise UsageError(f"--id: column {id_column!r} is one of the model's features.")
        return id_column, frame[id_column].to_numpy()
    for c in frame.columns:
        if c.lower() == "id" and c not in prep.feature_columns:
            return c, frame[c].to_numpy()
    return "row", np.arange(len(frame))


def predictions_frame(model, frame, id_column: Optional[str] = None, laplace: bool = False):
    """The output table for the rows of ``frame`` (a DataFrame): the row ids, then the
    predictions, and with ``laplace`` the Laplace predictive's columns (the module
    docstring)."""
    import pandas as pd

    prep = model.preprocessing
    name, ids = row_ids(frame, prep, id_column)
    rows = frame.drop(columns=[name]) if name in frame.columns else frame
    out = {name: ids}
    if prep.task == "classification":
        for pre, lap in (("", False), ("laplace_", True))[:1 + laplace]:
            P = model.predict_proba(rows, laplace=lap)  # (m, classes)
            out[f"{pre}prediction"] = model.classes_[np.argmax(P, axis=1)]
            for c, col in zip(prep.class_names, P.T):
                out[f"{pre}probability[{c}]"] = col
    elif prep.task == "multilabel":
        for pre, lap in (("", False), ("laplace_", True))[:1 + laplace]:
            A = model.predict_proba(rows, laplace=lap)
            for c, col in zip(prep.class_names, A.T):
                out[f"{pre}{c}"] = (col >= 0.5).astype(np.int64)
            for c, col in zip(prep.class_names, A.T):
                out[f"{pre}probability[{c}]"] = col
    else:
        Y = model.predict(rows).reshape(len(frame), -1)
        for c, col in zip(prep.target_columns, Y.T):
            out[c] = col
        if laplace:
            S = model.predict(rows, return_std=True)[1].reshape(len(frame), -1)
            for c, col in zip(prep.target_columns, S.T):
                out[f"std[{c}]"] = col
    return pd.DataFrame(out)


def predict(argv: Optional[Sequence[str]] = None) -> int:
    from _common import output

    args = build_parser().parse_args(argv)
    args.checkpoint, args.data, args.out = (output.user_path(p) for p in
                                            (args.checkpoint, args.data, args.out))
    out_ext = os.path.splitext(args.out)[1].lower()
    if out_ext not in (".csv", ".parquet"):
        raise UsageError(f"--out: expected a file ending in .csv or .parquet, got {args.out!r}.")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out: the folder {out_dir!r} does not exist.")
    guards.refuse_same_file(args.data, args.out)  # never write over the input rows
    from jaxmlp.data import tabular

    cli.run_registrations(args.register or [])
    model = load_model(args.checkpoint, laplace=args.laplace)
    net, prep = model.net, model.preprocessing
    try:
        frame = tabular.read_table(args.data)
        table = predictions_frame(model, frame, args.id, laplace=args.laplace)
    except tabular.MissingValuesError as e:
        raise UsageError(f"--data: {e.listing}; the model was trained without --impute, so it "
                         "cannot fill them (fill them, or retrain with --impute mean|median)."
                         ) from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"--data: {str(e).partition(': ')[2] or e}") from None
    if out_ext == ".csv":
        table.to_csv(args.out, index=False)
    else:
        table.to_parquet(args.out, index=False)
    print(f"wrote {len(table)} predictions ({prep.task}, network "
          f"{'-'.join(map(str, net.sizes))}{f', ensemble of {model.ensemble}' if model.ensemble else ''}"
          f"{f', Laplace {model.posterior.structure} beside the MAP' if args.laplace else ''}"
          f"; row ids: {table.columns[0]!r}) to {args.out}")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return predict(argv)
    except UsageError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
