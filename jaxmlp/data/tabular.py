"""Your own data: a CSV, Parquet or .npz table as a column-major :class:`~jaxmlp.data.datasets.Dataset`.

::

    data, prep = jaxmlp.data.tabular.load_table("houses.csv", target="price")   # task inferred
    data, prep = jaxmlp.data.tabular.load_table("cells.parquet", target="kind", task="classification",
                                           impute="median")
    X = jaxmlp.data.tabular.transform(prep, new_frame)                          # (n[0], m) for predict

A table is a set of named columns of one length m (rows are examples). ``target`` names the
target column(s); every other column is a feature. Formats (by extension): ``.csv``
(``pandas.read_csv``), ``.parquet`` / ``.pq`` (pandas with pyarrow), ``.npz`` (each array is a
column; a 2-D array ``a`` of shape (m, k) gives the columns ``a[0]`` ... ``a[k-1]``).

Tasks and what they need from the target:

=============  ========================================  ===================================
task           target                                    output / cost
=============  ========================================  ===================================
classification one column, >= 2 distinct values          2 classes: sigmoid / binary (C1)
                                                          more: softmax / categorical (C2)
multilabel     >= 1 columns of 0/1 or booleans            sigmoid / multilabel (C3)
regression     numeric columns                            linear / mean squared error
=============  ========================================  ===================================

Inference (``task=None``), printed by the scripts, scikit-learn's ``type_of_target`` rule: a
text or boolean target is classification; several 0/1 columns are multilabel; numbers that
are not all integers, or several numeric columns, are regression; one integer column is
classification with at most :data:`MAX_CLASSES` (20) distinct values ("binary",
"multiclass"), regression with more (diabetes' 214 values). ``task=`` overrides it.

Preprocessing, with everything learned from the TRAIN split only and kept in the returned
:class:`Preprocessing` (JSON-able, saved with checkpoints so new rows get the same treatment):

1. missing values (NaN, empty cells) are refused, naming every such column in one
   :class:`MissingValuesError`, unless ``impute`` is
   ``"mean"`` or ``"median"``: numeric feature columns are then filled with that statistic of
   the train split, categorical ones with their most frequent train value; a missing target
   is always refused;
2. categorical feature columns (text, pandas categories, booleans are 0/1) are one-hot
   encoded, one column per category seen in the file (sorted), named ``column=value``.
   Refused, naming the column and what to do instead: a column of dates or times (a pandas
   datetime, timedelta or period column, or text whose every cell is a date such as
   ``2020-01-31``), which would be one input per date; and a text column with more than
   :data:`MAX_SPARSE_CATEGORIES` (50) distinct values and fewer than two rows per value on
   average (names, free text, ids), unless named in ``categorical``; text whose every cell is
   a number written with a decimal comma (``0,5``), unless named in ``categorical``; a feature
   column empty in every row. Numeric codes are named as they read (1 and 1.0: ``'1'``), so
   a column of codes read as floats and one read as ints have the same categories;
3. the same split and standardisation as the bundled datasets (:func:`jaxmlp.data.datasets.load`):
   stratified by class for classification, then every feature column standardised with the
   train split's mean and standard deviation; regression targets are standardised too
   (``target_mean``/``target_std`` undo it).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from jaxmlp.data import datasets
from jaxmlp.data.datasets import Dataset, split_indices, standardise

__all__ = ["TASKS", "FORMATS", "MAX_CLASSES", "MAX_SPARSE_CATEGORIES", "MissingValuesError", "Preprocessing", "load_table", "read_table", "infer_task",
           "transform", "inverse_target", "bundled_preprocessing", "names_text"]

TASKS = ("classification", "multilabel", "regression")
FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet", ".npz": "NumPy .npz"}
IMPUTE = ("mean", "median")
#: One integer target column with at most this many distinct values is inferred to hold classes
#: (scikit-learn's ``type_of_target``: "binary"/"multiclass"); more is a quantity (regression).
MAX_CLASSES = 20
#: A text feature column with more distinct values than this, fewer than two rows per value on
#: average (names, free text, ids), is refused rather than one-hot encoded into that many
#: inputs each seen about once; ``categorical=[column]`` encodes it anyway.
MAX_SPARSE_CATEGORIES = 50


class MissingValuesError(ValueError):
    """Missing values in a table: ``columns`` maps each column to its rows (from 0) with a
    missing value, every such column at once; ``kind`` is ``"feature"`` or ``"target"``;
    ``listing`` the message without the advice (the scripts add their own flags)."""

    def __init__(self, listing: str, hint: str, columns: dict, kind: str):
        super().__init__(f"data: {listing}{hint}.")
        self.listing, self.columns, self.kind = listing, columns, kind


def missing_values_error(frame, columns, kind: str, hint: str) -> Optional[MissingValuesError]:
    """One :class:`MissingValuesError` naming every column of ``columns`` with missing values
    (count and first rows of each), or None when there is none."""
    found = {}
    for c in columns:
        rows = np.flatnonzero(frame[c].isna().to_numpy())
        if rows.size:
            found[c] = rows
    if not found:
        return None
    parts = []
    for c, rows in found.items():
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if rows.size > 5 else "")
        parts.append(f"{c!r} ({rows.size}: row{'s' if rows.size > 1 else ''} {shown})")
    cols = f"{kind} column" if len(found) == 1 else f"{len(found)} {kind} columns"
    return MissingValuesError(f"missing values in {cols}, rows counted from 0: "
                              f"{'; '.join(parts)}", hint,
                              {c: rows.tolist() for c, rows in found.items()}, kind)


class Preprocessing(NamedTuple):
    """What turns a table's rows into the network's X, and its outputs back into labels.

    Attributes:
      task: one of :data:`TASKS`.
      feature_columns: the table's feature columns, in order.
      categories: ``{column: [category, ...]}`` of the one-hot encoded columns.
      feature_names: the n[0] names of the rows of X (``column`` or ``column=category``).
      feature_mean, feature_std: (n[0],) train-split statistics of the standardisation.
      target_columns: the target column(s).
      class_names: classification: the classes (in output order: for two classes A[L] is the
        probability of ``class_names[1]``); multilabel: the target columns; regression: ().
      class_values: classification on a numeric target column: the classes as the column
        holds them (ints, floats or bools, in the order of ``class_names``), so predictions
        come back in the column's type; None for text classes and the other tasks.
      excluded_columns: columns left out at training (``load_table(exclude=...)``: row ids,
        notes); new rows may hold them, and they are ignored like the target columns.
      target_mean, target_std: regression only, the targets' train statistics (else None).
      impute: None, ``"mean"`` or ``"median"``; impute_values: ``{column: fill value}``.
      task_reason: why the task was inferred (None when it was given).
    """

    task: str
    feature_columns: tuple[str, ...]
    categories: dict
    feature_names: tuple[str, ...]
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    target_columns: tuple[str, ...]
    class_names: tuple[str, ...]
    target_mean: Optional[tuple[float, ...]] = None
    target_std: Optional[tuple[float, ...]] = None
    impute: Optional[str] = None
    impute_values: Optional[dict] = None
    task_reason: Optional[str] = None
    class_values: Optional[tuple] = None
    excluded_columns: tuple = ()

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (for checkpoints and results.json)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._asdict().items()}

    @classmethod
    def from_dict(cls, d: Any) -> "Preprocessing":
        """The inverse of :meth:`to_dict`; ValueError naming what is missing or wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing: expected a dict, got {type(d).__name__}.")
        required = [f for f in cls._fields if f not in cls._field_defaults]
        missing = [f for f in required if f not in d]
        if missing:
            raise ValueError(f"preprocessing: missing {missing}.")
        if d["task"] not in TASKS:
            raise ValueError(f"preprocessing.task: expected one of {list(TASKS)}, got {d['task']!r}.")
        kw = {f: (tuple(d[f]) if isinstance(d.get(f), list) else d.get(f, cls._field_defaults.get(f)))
              for f in cls._fields}
        kw["categories"] = {str(k): [str(c) for c in v] for k, v in (d["categories"] or {}).items()}
        n0 = len(kw["feature_names"])
        if len(kw["feature_mean"]) != n0 or len(kw["feature_std"]) != n0:
            raise ValueError(f"preprocessing: {n0} feature names but {len(kw['feature_mean'])} "
                             f"means and {len(kw['feature_std'])} standard deviations.")
        return cls(**kw)

    @property
    def n_inputs(self) -> int:
        return len(self.feature_names)


# ----------------------------------------------------------------------------- reading


def pandas_module():
    """pandas, imported on first use (only tables need it); a ValueError saying how to
    install it when it is missing."""
    try:
        import pandas as pd  # imported lazily: only tables need it
    except ImportError:
        raise ValueError("data: reading tables needs pandas (pip install 'jaxmlp[experiments]').") from None
    return pd


def read_table(path: Union[str, os.PathLike]):
    """Reads ``path`` (CSV, Parquet or .npz, by extension) into a pandas DataFrame.

    Raises ValueError naming the file when it does not exist, has another extension, cannot
    be parsed, or holds no rows or no columns.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"data: expected a file path, got {type(path).__name__}.")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"data: expected a file ending in one of {sorted(FORMATS)}, got {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"data: file {path!r} does not exist.")
    pd = pandas_module()
    try:
        if ext == ".csv":
            _check_header(path, _csv_header(path))  # before pandas renames a to a.1
            frame = pd.read_csv(path)
        elif ext in (".parquet", ".pq"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ValueError("data: reading Parquet needs pyarrow (pip install "
                                 "'jaxmlp[experiments]').") from None
            import pyarrow.parquet as pq

            _check_header(path, pq.read_schema(path).names)  # before pyarrow's FieldRef error
            frame = pd.read_parquet(path)
        else:
            frame = _read_npz(path, pd)
    except ValueError as e:
        if str(e).startswith("data:"):
            raise
        raise ValueError(f"data: cannot parse {path!r} as {FORMATS[ext]}: {e}") from None
    except Exception as e:  # the readers' own parse errors (pandas, pyarrow, zipfile)
        raise ValueError(f"data: cannot parse {path!r} as {FORMATS[ext]}: "
                         f"{type(e).__name__}: {e}") from None
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise ValueError(f"data: {path!r} holds {frame.shape[0]} rows and {frame.shape[1]} "
                         "columns; expected a table with a header and at least one row.")
    frame.columns = [str(c) for c in frame.columns]
    _check_header(path, frame.columns)
    return frame


def _csv_header(path: str) -> list:
    """The names of a CSV file's header row as written (pandas would rename a repeated
    ``a`` to ``a.1``): the first non-blank row, read with Python's csv module."""
    import csv

    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:  # as pandas: no BOM
        for row in csv.reader(f):
            if any(cell.strip() for cell in row):
                return row
    return []


def _check_header(path: str, names) -> None:
    """ValueError naming ``path`` and the names that appear more than once (empty names,
    which pandas numbers ``Unnamed: i``, excepted)."""
    names = [str(c) for c in names]
    dupes = sorted({c for c in names if c and names.count(c) > 1})
    if dupes:
        raise ValueError(f"data: {path!r} has duplicate column names {names_text(dupes)}; rename "
                         "them so that every column has its own name.")


def _read_npz(path: str, pd):
    with np.load(path, allow_pickle=False) as z:
        columns, source = {}, {}

        def add(column, values, array):
            if column in columns:
                raise ValueError(f"data: {path!r}: column {column!r} would come from array "
                                 f"{source[column]!r} and from array {array!r}; rename one of "
                                 "the arrays (a 2-D array a gives the columns a[0], a[1], ...).")
            columns[column], source[column] = values, array

        shapes = {}  # array name -> shape, for the rows' message
        for name in z.files:
            a = z[name]
            shapes[name] = a.shape
            if a.ndim == 1:
                add(name, a, name)
            elif a.ndim == 2:
                for j in range(a.shape[1]):
                    add(f"{name}[{j}]", a[:, j], name)
            else:
                raise ValueError(f"data: array {name!r} of {path!r} has shape {a.shape}; expected "
                                 "1-D columns or 2-D (rows, columns) arrays.")
    if len({shape[0] for shape in shapes.values()}) > 1:
        raise ValueError(_rows_differ(path, shapes))
    return pd.DataFrame(columns)


def _rows_differ(path: str, shapes: dict, limit: int = 6) -> str:
    """The message for the arrays of an .npz file whose numbers of rows differ: each array
    and its shape (the first ``limit``), and for a 2-D array whose columns match the others'
    rows, the transpose to save."""
    def described(name):
        shape = shapes[name]
        return (f"{name!r} has {shape[0]} rows" if len(shape) == 1
                else f"{name!r} has shape {shape}")

    names = list(shapes)
    listing = ", ".join(described(n) for n in names[:limit])
    if len(names) > limit:
        listing += f" (and {len(names) - limit} more arrays)"
    counts = [shape[0] for shape in shapes.values()]
    rows = max(set(counts), key=lambda n: (counts.count(n), n))  # the most common count
    flipped = [n for n in names if len(shapes[n]) == 2 and shapes[n][1] == rows
               and shapes[n][0] != rows]
    hint = ""
    if flipped:
        hint = (f"; a 2-D array is (rows, columns): save {flipped[0]}.T if your columns are "
                "examples")
    return (f"data: the arrays of {path!r} have different numbers of rows: {listing}{hint}.")


# ----------------------------------------------------------------------------- columns


def _is_numeric(pd, s) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _is_bool(pd, s) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return True
    vals = s.dropna().unique()
    return s.dtype == object and len(vals) > 0 and all(isinstance(v, (bool, np.bool_)) for v in vals)


def _is_binary01(pd, s) -> bool:
    if _is_bool(pd, s):
        return True
    return _is_numeric(pd, s) and set(np.unique(s.dropna().to_numpy())) <= {0, 1}


def _column_named(name: str, columns, arg: str) -> str:
    """The column ``name`` names: itself when it is a column (``'label '`` with its space),
    else the one column whose name equals it without leading and trailing spaces on both
    sides (``'label'`` or ``' label'`` for a column ``'label '``; the scripts strip the names
    given to their flags); ``name`` unchanged when none is (the caller says it is not in the
    table). ValueError naming ``arg`` when several columns differ from it only in spaces."""
    columns = [str(c) for c in columns]
    if name in columns:
        return name
    alike = [c for c in columns if c.strip() == name.strip()]
    if len(alike) > 1:
        raise ValueError(f"{arg}: {name!r} is not a column, and {len(alike)} columns differ from "
                         f"it only in leading or trailing spaces: {names_text(alike)}; name one of "
                         "them exactly.")
    return alike[0] if alike else name


def _parse_targets(target, columns) -> tuple[str, ...]:
    if isinstance(target, str):
        names = target.split(",")
    elif isinstance(target, Sequence) and all(isinstance(t, str) for t in target):
        names = list(target)
    else:
        raise TypeError(f"target: expected a column name or a list of names, got {target!r}.")
    if not names or any(not t.strip() for t in names):
        raise ValueError(f"target: expected column names separated by commas, got {target!r}.")
    names = [_column_named(t, columns, "target") for t in names]
    if len(set(names)) != len(names):
        raise ValueError(f"target: a column is named twice in {names}.")
    unknown = [t for t in names if t not in columns]
    if unknown:
        raise ValueError(f"target: column {unknown[0]!r} is not in the table; its columns are "
                         f"{names_text(columns)}.")
    if len(names) == len(columns):
        raise ValueError(f"target: {names_text(names)} are all the table's columns; no feature is left.")
    return tuple(names)


def infer_task(frame, target_columns: Sequence[str]) -> tuple[str, str]:
    """(task, reason) inferred from the target column(s); ValueError when ambiguous."""
    pd = pandas_module()
    cols = [frame[c] for c in target_columns]
    if len(cols) > 1:
        if all(_is_binary01(pd, s) for s in cols):
            return "multilabel", f"{len(cols)} target columns of 0/1 values"
        if all(_is_numeric(pd, s) for s in cols):
            return "regression", f"{len(cols)} numeric target columns, not all 0/1"
        bad = next(c for c, s in zip(target_columns, cols) if not _is_numeric(pd, s))
        raise ValueError(f"task: cannot infer it: several target columns need numbers (regression) "
                         f"or 0/1 values (multilabel), but {bad!r} holds {frame[bad].dtype} "
                         "values; pass task='classification' with one target column.")
    (name,), (s,) = target_columns, cols
    if not _is_numeric(pd, s):
        return "classification", f"target {name!r} holds {'booleans' if _is_bool(pd, s) else 'text'}"
    v = s.dropna().to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
        return "regression", f"target {name!r} holds non-integer numbers"
    n = len(np.unique(v))
    if n <= MAX_CLASSES:
        return "classification", (f"target {name!r} holds {n} distinct integer values, at most "
                                  f"{MAX_CLASSES}: classes")
    return "regression", (f"target {name!r} holds {n} distinct integer values, more than "
                          f"{MAX_CLASSES}: a quantity")


def _check_task(frame, target_columns, task) -> None:
    pd = pandas_module()
    if task == "classification":
        if len(target_columns) != 1:
            raise ValueError(f"task: classification takes one target column (its values are the "
                             f"classes), got {list(target_columns)}; use task='multilabel' for "
                             "several 0/1 columns.")
        name = target_columns[0]
        n = frame[name].nunique(dropna=True)
        if n < 2:
            raise ValueError(f"task: classification needs at least 2 classes, but target "
                             f"{name!r} holds {n} distinct value(s).")
        s = frame[name]
        if _is_numeric(pd, s) and not _is_bool(pd, s):
            v = s.dropna().to_numpy(dtype=np.float64)
            frac = v[np.isfinite(v) & (v != np.round(v))]
            if frac.size and n > MAX_CLASSES:  # a few float labels (0.5, 2.0) stay classes
                raise ValueError(
                    f"task: classification needs class labels, but target {name!r} holds "
                    f"non-integer numbers such as {np.unique(frac)[:3].tolist()} ({n} distinct "
                    f"values, more than {MAX_CLASSES}): a quantity. Use task='regression' "
                    f"(train.py --task regression), or bin the values into classes first.")
    elif task == "multilabel":
        for c in target_columns:
            if not _is_binary01(pd, frame[c]):
                vals = frame[c].dropna().unique()[:5].tolist()
                raise ValueError(f"task: multilabel needs target columns of 0/1 or booleans, but "
                                 f"{c!r} holds {frame[c].dtype} values such as {vals}.")
    else:
        for c in target_columns:
            if not _is_numeric(pd, frame[c]):
                vals = frame[c].dropna().unique()[:3].tolist()
                raise ValueError(f"task: regression needs numeric targets, but {c!r} holds "
                                 f"{frame[c].dtype} values such as {vals}.")


def names_text(names, limit: int = 10) -> str:
    """``['a', 'b']``; a longer list shows its first ``limit`` values, then ``... and N more``:
    ``['a', ..., 'j', ... and 140 more]`` (messages stay readable for thousands of values)."""
    names = list(names)
    shown = repr(names[:limit])
    return shown if len(names) <= limit else shown[:-1] + f", ... and {len(names) - limit} more]"


# ----------------------------------------------------------------------------- encoding


def _feature_matrix(pd, frame, feature_columns, categories, impute_values) -> np.ndarray:
    """(m, n[0]) float64: numeric columns as they are, booleans 0/1, categories one-hot."""
    blocks = []
    for c in feature_columns:
        s = frame[c]
        if impute_values and c in impute_values and s.isna().any():
            fill = impute_values[c]
            if c in categories:  # the category's name, in a column of any type
                s = s.astype(object)
            elif isinstance(fill, bool) and not _is_bool(pd, s):  # True/False read as 1/0
                fill = float(fill)
            s = s.fillna(fill)
        if c in categories:
            cats = categories[c]
            index = _category_index(cats)
            keys = [None if pd.isna(v) else _category_key(v) for v in s.astype(object)]
            pos = [None if k is None else index.get(k, index.get(_number_key(k))) for k in keys]
            bad = [i for i, (k, j) in enumerate(zip(keys, pos)) if k is not None and j is None]
            if bad:
                unseen = sorted({keys[i] for i in bad})
                shown = ", ".join(str(r) for r in bad[:5]) + (", ..." if len(bad) > 5 else "")
                raise ValueError(f"data: column {c!r} holds {names_text(unseen)}, categories that "
                                 f"the training data did not have (it had {len(cats)}: "
                                 f"{names_text(cats)}), in row{'s' if len(bad) > 1 else ''} "
                                 f"{shown} (counting from 0).")
            block = np.zeros((len(keys), len(cats)))
            rows = [i for i, j in enumerate(pos) if j is not None]
            block[rows, [pos[i] for i in rows]] = 1.0
            blocks.append(block)
        elif _is_bool(pd, s):
            blocks.append(s.astype(np.float64).to_numpy()[:, None])
        else:
            blocks.append(s.to_numpy(dtype=np.float64)[:, None])
    return np.concatenate(blocks, axis=1)


def _category_key(v) -> str:
    """A feature value as its category's name: text as it is, a boolean ``True``/``False``, a
    number as written, a whole number without its ``.0`` (1, 1.0 and numpy's 1.0 are all
    ``'1'``): codes read as floats from one file (a column with an empty cell) and as ints
    from another are the same categories."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v) == np.trunc(v):
        return str(int(v))
    return str(v)


def _number_key(text: Optional[str]) -> Optional[str]:
    """:func:`_category_key` of the finite number ``text`` is as Python writes it (``'1.0'``
    and ``'1'`` -> ``'1'``, ``'2.5'`` -> ``'2.5'``), None for any other text (``'01'``, ``'1e3'``,
    words: text codes match only as written)."""
    try:
        f = float(text)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(f) or text not in (str(f), _category_key(f)):
        return None
    return _category_key(f)


def _category_index(cats) -> dict:
    """{name: position} of the categories ``cats``, and of each category that reads as a
    number under its :func:`_number_key` too, unless two categories share it: a model saved
    with the categories ``'1.0'``, ``'2.0'`` (before whole numbers lost their ``.0``) matches
    the codes 1, 2 as it matches 1.0, 2.0, and a new one (``'1'``, ``'2'``) matches all
    three."""
    index = {c: j for j, c in enumerate(cats)}
    alias: dict = {}
    for j, c in enumerate(cats):
        k = _number_key(c)
        if k is not None:
            alias.setdefault(k, []).append(j)
    for k, js in alias.items():
        if len(js) == 1:
            index.setdefault(k, js[0])
    return index


def _is_categorical(pd, s) -> bool:
    return not _is_numeric(pd, s) and not _is_bool(pd, s)


def _parse_categorical(categorical, features, targets, arg: str = "categorical") -> frozenset:
    """The feature columns named by ``categorical`` (None, names, or names separated by
    commas); ValueError naming ``arg`` for a target or an unknown column."""
    if categorical is None:
        return frozenset()
    names = categorical.split(",") if isinstance(categorical, str) else list(categorical)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise TypeError(f"{arg}: expected feature column names, got {categorical!r}.")
    names = [_column_named(n, list(features) + list(targets), arg) for n in names]
    for n in names:
        if n in targets:
            raise ValueError(f"{arg}: {n!r} is a target column; name feature columns.")
        if n not in features:
            raise ValueError(f"{arg}: column {n!r} is not in the table; its feature "
                             f"columns are {names_text(features)}.")
    return frozenset(names)


def _leave_out_advice(columns) -> str:
    """``leave it out with exclude=['c'] (train.py --id c), or delete it from the file``."""
    it = "it" if len(columns) == 1 else "them"
    return (f"leave {it} out with exclude={list(columns)!r} (train.py --id "
            f"{shlex.quote(','.join(columns))}), or delete {it} from the file")


def _refuse_empty_columns(frame, features) -> None:
    """ValueError naming every feature column without a value in any row (the unnamed column
    of a comma at the end of every line of a CSV): nothing to learn from, nor to impute."""
    empty = [c for c in features if frame[c].isna().all()]
    if empty:
        cols = (f"feature column {empty[0]!r} is" if len(empty) == 1
                else f"{len(empty)} feature columns {names_text(empty)} are")
        raise ValueError(f"data: {cols} empty in every row: no value to learn from, nor to "
                         f"impute from; {_leave_out_advice(empty)}.")


def _refuse_row_ids(frame, features) -> None:
    """ValueError when a feature column is named ``id`` (any case) and every value in it is
    distinct: row ids, which would be trained on as an input."""
    for c in features:
        if str(c).strip().lower() == "id" and len(frame) > 1 and frame[c].is_unique:
            raise ValueError(f"exclude: column {c!r} holds a distinct value in every row (row "
                             f"ids), and would be a feature; pass exclude=[{c!r}] (train.py "
                             f"--id {c}) to leave it out, or rename it to train on it.")


#: A date written as text, with an optional time of day and zone: ``2020-01-31``,
#: ``2020/1/31 10:00``, ``31.01.2020``, ``01/31/2020``, ``2020-01-31T10:00:00Z``. Cells must also
#: parse as dates (``pandas.to_datetime``): ``2020-02-30`` or ``12-34-5678`` are not.
_DATE_TEXT = (r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
              r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})?)?")


def _date_kind(pd, s) -> Optional[str]:
    """What a column of dates or times holds (``"dates and times (datetime64[us])"``), or None
    for any other column: a pandas datetime, timedelta or period dtype; Python date, time or
    duration objects (Parquet ``date32``); or text whose every present cell is a date
    (:data:`_DATE_TEXT`, and parsed by pandas). Numbers and other text are never dates."""
    import datetime

    if pd.api.types.is_datetime64_any_dtype(s):
        return f"dates and times ({s.dtype})"
    if pd.api.types.is_timedelta64_dtype(s):
        return f"durations ({s.dtype})"
    if isinstance(s.dtype, pd.PeriodDtype):
        return f"periods ({s.dtype})"
    if not (s.dtype == object or pd.api.types.is_string_dtype(s)):
        return None
    values = pd.Series(pd.unique(s.dropna()))
    if values.empty:
        return None
    kinds = (datetime.date, datetime.time, datetime.timedelta, np.datetime64, np.timedelta64)
    if all(isinstance(v, kinds) for v in values):
        return "dates or times (Python objects)"
    if not all(isinstance(v, str) for v in values):
        return None
    text = values.str.strip()
    if not text.str.fullmatch(_DATE_TEXT).all():
        return None
    parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    return "dates written as text" if parsed.notna().all() else None


def _refuse_dates(pd, frame, features) -> None:
    """ValueError naming the first feature column of dates or times (:func:`_date_kind`): one-hot
    encoded, it would be one input per distinct date, and a new date would be refused."""
    for c in features:
        kind = _date_kind(pd, frame[c])
        if kind is None:
            continue
        first = frame[c].dropna()
        example = f", such as {str(first.iloc[0])!r}" if len(first) else ""
        raise ValueError(
            f"data: feature column {c!r} holds {kind}{example}; as categories it would be one "
            f"one-hot input per distinct value, and a new value could not be predicted. Leave it "
            f"out with exclude=[{c!r}] (train.py --id {c}), or derive numeric features from it "
            f"yourself (the year, the day of the year, the days since a start date, a duration "
            f"in seconds) as columns of their own.")


def _refuse_sparse_categories(frame, categories, forced) -> None:
    """ValueError naming the first text column with more than :data:`MAX_SPARSE_CATEGORIES`
    distinct values and fewer than two rows per value on average (names, free text, ids):
    each of its one-hot inputs would be seen about once. Columns in ``forced`` (named in
    ``categorical``) are encoded as asked."""
    for c, cats in categories.items():
        present = int(frame[c].notna().sum())
        if c in forced or len(cats) <= MAX_SPARSE_CATEGORIES or 2 * len(cats) <= present:
            continue
        raise ValueError(
            f"data: text column {c!r} holds {len(cats)} distinct values in {present} rows "
            f"(such as {names_text(cats, 3)}): most values occur once, like names, free text or "
            f"ids, and one-hot encoding would make {len(cats)} inputs each seen about once. "
            f"Leave it out with exclude=[{c!r}] (train.py --id {c}), replace it with fewer "
            f"categories or numbers derived from it, or encode it anyway with "
            f"categorical=[{c!r}] (train.py --categorical {c}).")


def _refuse_decimal_commas(pd, frame, column: str) -> None:
    """ValueError naming the column when it is text whose every present cell reads as a
    number once its one comma is a decimal point (``0,5``, ``-1,25``; at least one comma):
    numbers written with a decimal comma, which would become one category per number."""
    s = frame[column]
    if _is_numeric(pd, s) or _is_bool(pd, s) or isinstance(s.dtype, pd.CategoricalDtype):
        return
    present = s.dropna()
    if present.empty or not all(isinstance(v, str) for v in present):
        return
    text = present.str.strip()
    if not (text.str.count(",") == 1).any() or (text.str.count(",") > 1).any():
        return
    if pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce").isna().any():
        return
    example = next(v for v in present if "," in v)
    raise ValueError(
        f"data: column {column!r} holds text such as {example!r} that reads as numbers written "
        f"with a decimal comma (all {len(present)} present cells); one-hot encoded, every number "
        f"would be a category of its own. Write the numbers with a decimal point (convert the "
        f"file, or read it with pandas.read_csv(path, decimal=',') and save it again), or if "
        f"the column is categorical say so: categorical=[{column!r}] (train.py --categorical "
        f"{shlex.quote(column)}); commas between thousands (1,000) read with thousands=','.")


def _refuse_stray_text(pd, frame, column: str) -> None:
    """ValueError naming the column, rows and values when a column of numbers holds a few
    text cells (``?``, ``n/a``): read as text, it would become one category per number."""
    s = frame[column]
    if _is_numeric(pd, s) or _is_bool(pd, s) or isinstance(s.dtype, pd.CategoricalDtype):
        return
    as_number, rows = _text_cells(pd, s)
    numbers = int(as_number.notna().sum())
    if numbers == 0 or numbers * 2 < numbers + rows.size:  # mostly text: a categorical column
        return
    raise ValueError(
        f"data: column {column!r} holds numbers ({numbers} cells) and {rows.size} text cell(s): "
        f"{_shown_cells(s, rows)} (rows counted from 0). Fix or remove those cells, leave them empty "
        f"(missing, see impute), or if the column is categorical say so: "
        f"categorical=[{column!r}] (train.py --categorical {column}).")


def _numbers_or_refuse(pd, s, column: str):
    """A feature column numeric or boolean in training, given as text (rows of strings, or a
    table whose column pandas read as text): its cells as numbers when every present cell is
    one (``'2.5'``), as 1/0 when every present cell is ``True``/``False`` (any case, as
    ``str`` writes booleans), else ValueError naming the rows and cells that are neither."""
    present = s.notna()
    words = s.astype(str).str.strip().str.lower()
    if present.any() and words[present].isin(["true", "false"]).all():
        return (words == "true").astype(np.float64).where(present)
    as_number, bad = _text_cells(pd, s)
    if bad.size == 0:
        return as_number.astype(np.float64)
    raise ValueError(f"data: feature column {column!r} was numeric in training but holds "
                     f"{bad.size} cell(s) that are not numbers: {_shown_cells(s, bad)} (rows "
                     f"counted from 0); expected numbers (or, for a column of booleans in "
                     f"training, True/False in every cell). Fix those cells, or leave them "
                     f"empty if the model was trained with impute.")


def _text_cells(pd, s):
    """(the column's cells read as numbers, NaN where missing or not a number; the row
    positions of the present cells that are not numbers)."""
    present = s.notna().to_numpy()
    as_number = pd.to_numeric(s.astype(str).str.strip().where(present), errors="coerce")
    return as_number, np.flatnonzero(present & as_number.isna().to_numpy())


def _shown_cells(s, rows) -> str:
    """``row 4 holds 'abc', ...`` for the first five of ``rows`` (and how many more)."""
    more = f" and {rows.size - 5} more" if rows.size > 5 else ""
    return ", ".join(f"row {r} holds {s.iloc[r]!r}" for r in rows[:5]) + more


def _largest_value(dtype, m: int) -> float:
    """The largest |value| a column may hold: representable in ``dtype``, and small enough
    that m squares sum without overflow in float64 (the standard deviation)."""
    return float(min(np.finfo(np.dtype(dtype)).max,
                     np.sqrt(np.finfo(np.float64).max / max(int(m), 1))))


def _refuse_nonfinite(values: np.ndarray, what: str, column: str, limit: Optional[float] = None,
                      dtype=None) -> None:
    """ValueError naming the column and rows of infinite (or NaN) values, or of values
    beyond ``limit`` (too large to standardise in ``dtype``)."""
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        shown = ", ".join(str(r) for r in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(f"data: {what} column {column!r} holds infinite values "
                         f"(row{'s' if bad.size > 1 else ''} {shown}, counting from 0); expected "
                         "finite numbers.")
    if limit is not None:
        big = np.flatnonzero(np.abs(v) > limit)
        if big.size:
            r = int(big[0])
            raise ValueError(
                f"data: {what} column {column!r} holds {v[r]:g} (row {r}, counting from 0"
                f"{f', and {big.size - 1} more' if big.size > 1 else ''}), too large to "
                f"standardise: expected |values| <= {limit:.3g} ({np.dtype(dtype).name} "
                "network, and a standard deviation that does not overflow).")


def load_table(path: Union[str, os.PathLike], target: Union[str, Sequence[str]],
               task: Optional[str] = None, *, impute: Optional[str] = None, seed: int = 0,
               test_fraction: float = 0.2, dtype=np.float32,
               categorical: Optional[Sequence[str]] = None,
               exclude: Optional[Sequence[str]] = None) -> tuple[Dataset, Preprocessing]:
    """Reads a table, encodes, splits and standardises it like the bundled datasets.

    Arguments:
      path: a ``.csv``, ``.parquet``/``.pq`` or ``.npz`` file.
      target: the target column, or several (a list, or names separated by commas).
      task: one of :data:`TASKS`, or None to infer it (see the module docstring).
      impute: None (missing feature values are refused), ``"mean"`` or ``"median"``.
      seed, test_fraction, dtype: as for :func:`jaxmlp.data.datasets.load`.
      categorical: feature columns to one-hot encode even though they hold numbers (codes,
        or a column of numbers and text). Without it, a column of numbers with a few text
        cells (``?``, ``n/a``) is refused, naming the cells, rather than silently becoming
        one category per distinct number.
      exclude: columns that are neither features nor targets (row ids, free-text notes):
        left out of X. A feature column named ``id`` whose values are all distinct is refused
        unless it is excluded here (train.py ``--id id``) or renamed: row ids are not inputs.

    Returns:
      (a :class:`~jaxmlp.data.datasets.Dataset` named after the file, X (n[0], m) and Y (n[L], m);
      the :class:`Preprocessing` that :func:`transform` applies to new rows).

    Raises:
      ValueError naming the argument (``data``, ``target``, ``task``, ``impute``) for a file
      that does not exist or cannot be parsed, an unknown target column, a task that does not
      fit the target, missing values without ``impute``, text cells in a column of numbers,
      a feature column of dates or times, a text column of mostly distinct values (see the
      module docstring), infinite values or values too large to standardise in ``dtype`` (column and rows
      named); TypeError for wrong types.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)} or None, got {task!r}.")
    if impute is not None and impute not in IMPUTE:
        raise ValueError(f"impute: expected one of {list(IMPUTE)} or None, got {impute!r}.")
    datasets.check_split_args(seed, test_fraction, dtype)
    frame = read_table(path)
    pd = pandas_module()
    targets = _parse_targets(target, frame.columns)
    err = missing_values_error(frame, targets, "target", "; drop those rows: a missing target "
                               "is never imputed")
    if err is not None:
        raise err
    for c in targets:  # inf is no class, label or quantity, whatever the task
        if _is_numeric(pd, frame[c]):
            _refuse_nonfinite(frame[c].to_numpy(dtype=np.float64), "target", c)
    reason = None
    if task is None:
        task, reason = infer_task(frame, targets)
    _check_task(frame, targets, task)
    excluded = _parse_categorical(exclude, tuple(c for c in frame.columns if c not in targets),
                                  targets, "exclude")
    features = tuple(c for c in frame.columns if c not in targets and c not in excluded)
    if impute is None:  # with impute: refused below, naming the statistic it lacks
        _refuse_empty_columns(frame, features)
    _refuse_row_ids(frame, features)
    _refuse_dates(pd, frame, features)
    forced = _parse_categorical(categorical, features, targets)
    for c in features:
        if c not in forced:
            _refuse_decimal_commas(pd, frame, c)
            _refuse_stray_text(pd, frame, c)
    categories = {c: sorted({_category_key(v) for v in frame[c].dropna()}) for c in features
                  if c in forced or _is_categorical(pd, frame[c])}
    _refuse_sparse_categories(frame, categories, forced)
    if impute is None:
        err = missing_values_error(frame, features, "feature", "; fill them with impute='mean' "
                                   "or 'median' (train.py --impute mean|median)")
        if err is not None:
            raise err
    m = len(frame)

    # targets and strata
    if task == "classification":
        col = frame[targets[0]]
        raw = col.astype(object).map(str).to_numpy() if not _is_numeric(pd, col) else col.to_numpy()
        classes = np.unique(raw)
        labels = np.searchsorted(classes, raw)
        class_names = tuple(str(c.item() if hasattr(c, "item") else c) for c in classes)
        class_values = (tuple(c.item() for c in classes) if _is_numeric(pd, col)
                        else tuple(c == "True" for c in classes)
                        if pd.api.types.is_bool_dtype(col) else None)
        if len(classes) == 2:
            Y = labels[:, None].astype(np.float64)
            cost, g_L, target_names = "binary_cross_entropy", "sigmoid", (class_names[1],)
        else:
            Y = np.eye(len(classes))[labels]
            cost, g_L, target_names = "categorical_cross_entropy", "softmax", class_names
        strata = labels
    elif task == "multilabel":
        Y = np.stack([frame[c].astype(np.float64).to_numpy() for c in targets], axis=1)
        cost, g_L, target_names, class_names, strata = (
            "multilabel_cross_entropy", "sigmoid", targets, targets, None)
        class_values = None
    else:
        Y = np.stack([frame[c].to_numpy(dtype=np.float64) for c in targets], axis=1)
        cost, g_L, target_names, class_names, strata = (
            "mean_squared_error", "linear", targets, (), None)
        class_values = None
    if m < 2:
        raise ValueError(f"data: {os.fspath(path)!r} has {m} row(s); a train/test split needs at least 2.")
    train, test = split_indices(strata, m, float(test_fraction), int(seed))
    if train.size == 0 or test.size == 0:
        why = ""
        if strata is not None:
            counts = np.bincount(strata)
            col = frame[targets[0]]
            advice = ("is it an id or a quantity? then name it as --id / exclude, or pass "
                      "task='regression' (train.py --task regression)" if _is_numeric(pd, col)
                      else "add rows of each class" if _is_bool(pd, col)
                      else "is it an id? then name it as --id / exclude; else add rows of each "
                      "class")  # a regression needs numbers: never suggested for text, bools
            why = (f" (a split stratified by the {counts.size} classes of target "
                   f"{targets[0]!r}, {int(np.sum(counts == 1))} of them with a single row: "
                   f"{advice})")
        raise ValueError(f"data: {m} rows leave an empty train or test split with "
                         f"test_fraction={test_fraction}{why}.")

    impute_values = None
    if impute is not None:
        impute_values = {}
        tr = frame.iloc[train]
        for c in features:
            if c in categories:
                mode = tr[c].dropna().astype(object).map(_category_key).mode()
                impute_values[c] = str(mode.iloc[0]) if len(mode) else categories[c][0]
            elif _is_bool(pd, frame[c]):
                impute_values[c] = bool(tr[c].dropna().astype(float).mean() >= 0.5)
            else:
                v = tr[c].to_numpy(dtype=np.float64)
                v = v[~np.isnan(v)]
                if v.size == 0:
                    empty = (f": it is empty in every row, {_leave_out_advice([c])}"
                             if frame[c].isna().all() else "")
                    raise ValueError(f"impute: feature column {c!r} has no value in the train "
                                     f"split to compute its {impute} from{empty}.")
                impute_values[c] = float(np.mean(v) if impute == "mean" else np.median(v))
    F = _feature_matrix(pd, frame, features, categories, impute_values)
    limit = _largest_value(dtype, m)
    j = 0
    for c in features:
        if c in categories:
            j += len(categories[c])
            continue
        _refuse_nonfinite(F[:, j], "feature", c, limit, dtype)
        j += 1
    if task == "regression":
        for k, c in enumerate(targets):
            _refuse_nonfinite(Y[:, k], "target", c, limit, dtype)
    X_tr, X_te, mean, std = standardise(F[train], F[test])
    Y_tr, Y_te = Y[train], Y[test]
    t_mean = t_std = None
    if task == "regression":
        Y_tr, Y_te, tm, ts = standardise(Y_tr, Y_te)
        t_mean, t_std = tuple(float(v) for v in tm), tuple(float(v) for v in ts)
    names = tuple(n for c in features
                  for n in ([f"{c}={v}" for v in categories[c]] if c in categories else [c]))
    dt = np.dtype(dtype)
    data = Dataset(
        name=os.path.splitext(os.path.basename(os.fspath(path)))[0],
        X_train=np.ascontiguousarray(X_tr.T, dtype=dt), Y_train=np.ascontiguousarray(Y_tr.T, dtype=dt),
        X_test=np.ascontiguousarray(X_te.T, dtype=dt), Y_test=np.ascontiguousarray(Y_te.T, dtype=dt),
        output_activation=g_L, cost=cost, target_names=tuple(target_names),
        feature_mean=mean.astype(dt), feature_std=std.astype(dt))
    prep = Preprocessing(
        task=task, feature_columns=features, categories=categories, feature_names=names,
        feature_mean=tuple(float(v) for v in mean), feature_std=tuple(float(v) for v in std),
        target_columns=targets, class_names=tuple(class_names), target_mean=t_mean,
        target_std=t_std, impute=impute, impute_values=impute_values, task_reason=reason,
        class_values=class_values, excluded_columns=tuple(sorted(excluded)))
    return data, prep


def transform(prep: Preprocessing, frame, dtype=np.float32) -> np.ndarray:
    """New rows (a DataFrame) as the network's standardised X, shape (n[0], m).

    The frame must have exactly the training feature columns (in any order; the target
    columns and the columns excluded at training may be present and are ignored); ValueError naming the missing or unexpected
    columns, missing values (when training did not impute), or unseen categories.
    """
    if not isinstance(prep, Preprocessing):
        raise TypeError(f"prep: expected a jaxmlp.data.tabular.Preprocessing, got {type(prep).__name__}.")
    pd = pandas_module()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}.")
    cols = [str(c) for c in frame.columns]
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise ValueError(f"data: duplicate column names {names_text(dupes)}; expected each of the "
                         f"training features {names_text(prep.feature_columns)} once.")
    missing = [c for c in prep.feature_columns if c not in cols]
    extra = [c for c in cols if c not in prep.feature_columns and c not in prep.target_columns
             and c not in prep.excluded_columns]
    if missing or extra:
        parts = (([f"missing {names_text(missing)}"] if missing else [])
                 + ([f"unexpected {names_text(extra)}"] if extra else []))
        raise ValueError(f"data: its columns differ from the training data's: {'; '.join(parts)} "
                         f"(training features: {names_text(prep.feature_columns)}).")
    frame = frame.rename(columns=str)
    if prep.impute is None:
        err = missing_values_error(frame, prep.feature_columns, "feature", "; the model was "
                                   "trained without impute (train.py --impute), so it cannot "
                                   "fill them")
        if err is not None:
            raise err
    for c in prep.feature_columns:  # a column numeric in training must be numeric here
        if c not in prep.categories and not (_is_numeric(pd, frame[c]) or _is_bool(pd, frame[c])
                                             or frame[c].isna().all()):
            frame = frame.assign(**{c: _numbers_or_refuse(pd, frame[c], c)})
    F = _feature_matrix(pd, frame, prep.feature_columns, prep.categories, prep.impute_values)
    if F.shape[1] != prep.n_inputs:
        raise AssertionError((F.shape, prep.n_inputs))
    j = 0
    for c in prep.feature_columns:  # infinite, or beyond the network's dtype: named
        if c in prep.categories:
            j += len(prep.categories[c])
            continue
        _refuse_nonfinite(F[:, j], "feature", c, float(np.finfo(np.dtype(dtype)).max), dtype)
        j += 1
    X = (F - np.asarray(prep.feature_mean)) / np.asarray(prep.feature_std)
    return np.ascontiguousarray(X.T, dtype=np.dtype(dtype))


def inverse_target(prep: Preprocessing, Y: np.ndarray) -> np.ndarray:
    """Regression outputs (n[L], m) back in the targets' units (the identity for other tasks)."""
    Y = np.asarray(Y, dtype=np.float64)
    if prep.task != "regression" or prep.target_mean is None:
        return Y
    return Y * np.asarray(prep.target_std)[:, None] + np.asarray(prep.target_mean)[:, None]


def bundled_preprocessing(name: str, seed: int = 0, test_fraction: float = 0.2) -> Preprocessing:
    """The :class:`Preprocessing` of bundled dataset ``name`` as :func:`jaxmlp.data.datasets.load`
    splits and standardises it: columns named as in scikit-learn, so that new rows of the
    same features (a CSV with those column names) can be predicted; a classification's
    ``class_values`` are scikit-learn's integer targets (:data:`jaxmlp.data.datasets.CLASSES`),
    so predictions compare equal to them."""
    from jaxmlp.data import datasets

    if name not in datasets.DATASETS:
        raise ValueError(f"name: expected one of {list(datasets.DATASETS)}, got {name!r}.")
    features, targets, strata, (_, cost, target_names) = datasets.raw_arrays(name)
    train, test = split_indices(strata, features.shape[0], float(test_fraction), int(seed))
    _, _, mean, std = standardise(features[train], features[test])
    names = datasets.feature_names(name)
    task = {"categorical_cross_entropy": "classification", "binary_cross_entropy": "classification",
            "multilabel_cross_entropy": "multilabel", "mean_squared_error": "regression"}[cost]
    t_mean = t_std = None
    if task == "regression":
        _, _, tm, ts = standardise(targets[train], targets[test])
        t_mean, t_std = tuple(float(v) for v in tm), tuple(float(v) for v in ts)
    classes, values = datasets.CLASSES.get(name, (target_names, None))
    target_columns = ("target",) if task != "multilabel" else tuple(target_names)
    return Preprocessing(
        task=task, feature_columns=names, categories={}, feature_names=names,
        feature_mean=tuple(float(v) for v in mean), feature_std=tuple(float(v) for v in std),
        target_columns=target_columns, class_names=tuple(classes) if task != "regression" else (),
        target_mean=t_mean, target_std=t_std, class_values=values)
