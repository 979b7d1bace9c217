"""Real datasets that ship with scikit-learn, as column-major float matrices.

Four tasks, one per cost of the library (no download: scikit-learn bundles the files, which
are read here with NumPy, without importing scikit-learn):

=============  ==========================  =========  ========================================
name           source                      n[0] n[L]  output / cost
=============  ==========================  =========  ========================================
digits         8x8 handwritten digits      64   10    softmax / categorical_cross_entropy (C2)
breast_cancer  Wisconsin diagnostic        30   1     sigmoid / binary_cross_entropy (C1)
multilabel     digits, 5 yes/no labels     64   5     sigmoid / multilabel_cross_entropy (C3)
diabetes       disease progression         10   1     linear / mean_squared_error
=============  ==========================  =========  ========================================

The features are scikit-learn's, unscaled: those of ``load_digits().data``,
``load_breast_cancer().data`` and, for diabetes, ``load_diabetes(scaled=False).data`` (age in
years, bmi in kg/m^2, ...; tested equal), NOT the default ``load_diabetes().data``, whose
columns scikit-learn has already centred and scaled. A model trained on the bundled diabetes
takes raw rows like ``load_diabetes(scaled=False, as_frame=True).data`` (its own
standardisation is step 2 below); the scaled rows are accepted without error, since their
columns have the same names, and give predictions far off (about -300 for targets near 150).

The multi-label task reuses the digit images with five properties of the digit shown
(:data:`MULTILABEL_LABELS`): even, >= 5, prime, a multiple of 3, and drawn with a closed
loop (0, 6, 8, 9). Each column of Y holds several ones at once.

Every loader does the same, deterministically:

1. a split into train and test by ``seed`` (``numpy.random.default_rng(seed)``), stratified by
   class for the three classification tasks, so both splits keep the class proportions;
2. standardisation of every feature with the mean and standard deviation of the TRAIN split
   only (features constant on the train split are centred and left unscaled); for diabetes
   the target is standardised the same way (R^2 is unchanged by this affine map);
3. transposition to the layout of the derivations: X is (n[0], m), Y is (n[L], m), columns
   are examples; Y is one-hot for digits, 0/1 rows for the sigmoid tasks;
4. a cast to ``dtype`` (float32 by default), as NumPy arrays.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np

__all__ = ["CLASSES", "DATASETS", "MULTILABEL_LABELS", "Dataset", "feature_names", "load"]

#: Dataset names accepted by :func:`load`.
DATASETS = ("digits", "breast_cancer", "multilabel", "diabetes")

#: The multi-label task's labels: name -> the digit classes for which the label is 1.
MULTILABEL_LABELS: dict[str, tuple[int, ...]] = {
    "even": (0, 2, 4, 6, 8),
    "at_least_5": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "multiple_of_3": (0, 3, 6, 9),
    "closed_loop": (0, 6, 8, 9),
}


#: The classification datasets' classes, in output order: (names, values), the values as
#: scikit-learn's ``target`` holds them (``load_digits().target``: 0 ... 9;
#: ``load_breast_cancer().target``: 0 malignant, 1 benign), so that a trained model's
#: predictions compare equal to them.
CLASSES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "digits": (tuple(str(k) for k in range(10)), tuple(range(10))),
    "breast_cancer": (("malignant", "benign"), (0, 1)),
}


_CANCER = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
           "concave points", "symmetry", "fractal dimension")


def feature_names(name: str) -> tuple[str, ...]:
    """The n[0] feature names of dataset ``name`` (scikit-learn's names), in row order of X."""
    if name in ("digits", "multilabel"):
        return tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
    if name == "breast_cancer":
        return tuple([f"mean {b}" for b in _CANCER] + [f"{b} error" for b in _CANCER]
                     + [f"worst {b}" for b in _CANCER])
    if name == "diabetes":
        return ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    raise ValueError(f"name: expected one of {list(DATASETS)}, got {name!r}.")


class Dataset(NamedTuple):
    """A train/test split in the column-major layout of the derivations.

    Attributes:
      name: one of :data:`DATASETS`.
      X_train: (n[0], m_train) standardised features. X_test: (n[0], m_test).
      Y_train: (n[L], m_train) targets. Y_test: (n[L], m_test).
      output_activation: the activation g[L] that pairs with ``cost``.
      cost: the ``jaxmlp.COSTS`` name for this task.
      target_names: one name per output row of Y.
      feature_mean, feature_std: (n[0],) statistics of the train split used to standardise.
    """

    name: str
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    output_activation: str
    cost: str
    target_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray

    @property
    def n_inputs(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.Y_train.shape[0])


def split_indices(labels: np.ndarray | None, m: int, test_fraction: float, seed: int):
    """Indices (train, test); stratified by ``labels`` when given, both sorted."""
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(m)
        n_test = int(round(test_fraction * m))
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardise(train: np.ndarray, test: np.ndarray):
    """Row-major (m, n) arrays standardised with the train split's mean and std."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels: centre only
    return (train - mean) / std, (test - mean) / std, mean, std


def _data_dir() -> str:
    """The folder of scikit-learn's bundled data files, found WITHOUT importing scikit-learn.

    ``importlib.util.find_spec`` of a top-level package only locates it; importing
    scikit-learn would cost ~0.7 s (scipy and its own modules) that reading four small
    CSV files does not need. Raises ValueError when scikit-learn is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "datasets: the bundled datasets are the files scikit-learn ships; install it "
            "(pip install 'jaxmlp[experiments]' or 'scikit-learn>=1.3').")
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")


def _read(filename: str, **kwargs) -> np.ndarray:
    """``numpy.loadtxt`` of scikit-learn's data file ``filename`` (``.gz`` decompressed),
    as float64: the values scikit-learn's own loaders return, bit for bit."""
    path = os.path.join(_data_dir(), filename)
    if filename.endswith(".gz"):
        import gzip

        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            return np.loadtxt(f, dtype=np.float64, **kwargs)
    return np.loadtxt(path, dtype=np.float64, **kwargs)


def _read_sklearn_files(name: str):
    """(features (m, n0), integer labels or regression targets (m,)) read from the files."""
    if name in ("digits", "multilabel"):  # 64 pixels, then the digit; like load_digits()
        data = _read("digits.csv.gz", delimiter=",")
        return data[:, :-1], data[:, -1].astype(np.int64)
    if name == "breast_cancer":  # header "569,30,malignant,benign"; 30 features, then 0/1
        data = _read("breast_cancer.csv", delimiter=",", skiprows=1)
        return data[:, :-1], data[:, -1].astype(np.int64)
    # diabetes, like load_diabetes(scaled=False): whitespace-separated raw features
    return _read("diabetes_data_raw.csv.gz"), _read("diabetes_target.csv.gz")


def _read_with_sklearn(name: str):
    """The same arrays through scikit-learn's loaders (used only if its files moved)."""
    from sklearn import datasets as skd

    if name in ("digits", "multilabel"):
        d = skd.load_digits()
        return d.data, d.target.astype(np.int64)
    if name == "breast_cancer":
        d = skd.load_breast_cancer()
        return d.data, d.target.astype(np.int64)
    d = skd.load_diabetes(scaled=False)
    return d.data, d.target


@functools.lru_cache(maxsize=None)
def _features_and_targets(name: str):
    """Read once per process (the arrays are made read-only: callers index, never write)."""
    _data_dir()  # scikit-learn not installed: ValueError saying so
    try:
        arrays = _read_sklearn_files(name)
    except (OSError, ValueError):  # another scikit-learn file layout: its own loaders
        arrays = _read_with_sklearn(name)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def raw_arrays(name: str):
    """(features (m, n0), targets (m, nL), stratification labels or None, meta)."""
    features, target = _features_and_targets(name)
    if name in ("digits", "multilabel"):
        digit = target
        if name == "digits":
            Y = np.eye(10)[digit]
            return features, Y, digit, ("softmax", "categorical_cross_entropy",
                                        tuple(str(k) for k in range(10)))
        Y = np.stack([np.isin(digit, cls) for cls in MULTILABEL_LABELS.values()], axis=1)
        return features, Y.astype(np.float64), digit, (
            "sigmoid", "multilabel_cross_entropy", tuple(MULTILABEL_LABELS))
    if name == "breast_cancer":
        y = target  # 1 = benign, 0 = malignant (scikit-learn's coding)
        return features, y[:, None].astype(np.float64), y, (
            "sigmoid", "binary_cross_entropy", ("benign",))
    if name == "diabetes":
        return features, target[:, None].astype(np.float64), None, (
            "linear", "mean_squared_error", ("progression",))
    raise AssertionError(name)


def check_split_args(seed, test_fraction, dtype) -> None:
    """The checks shared by every loader (bundled datasets and :mod:`jaxmlp.data.tabular`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}.")
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}.")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(f"dtype: expected a floating dtype, got {np.dtype(dtype)}.")


def load(name: str, seed: int = 0, test_fraction: float = 0.2, dtype=np.float32) -> Dataset:
    """Loads dataset ``name`` split by ``seed``, standardised on its train split.

    Arguments:
      name: one of :data:`DATASETS`.
      seed: integer seed of the train/test split (same seed, same split, on any machine).
      test_fraction: share of the examples held out for testing, in (0, 1).
      dtype: floating dtype of the returned arrays (float32 by default, the params' default).

    Returns:
      a :class:`Dataset` with X (n[0], m) and Y (n[L], m) for both splits, standardised from
      scikit-learn's raw features (diabetes: ``load_diabetes(scaled=False)``, see the module
      docstring).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name: expected one of {list(DATASETS)}, got {name!r}.")
    check_split_args(seed, test_fraction, dtype)
    features, targets, strata, (g_L, cost, names) = raw_arrays(name)
    train, test = split_indices(strata, features.shape[0], float(test_fraction), int(seed))
    X_tr, X_te, mean, std = standardise(features[train], features[test])
    Y_tr, Y_te = targets[train], targets[test]
    if cost == "mean_squared_error":
        Y_tr, Y_te, _, _ = standardise(Y_tr, Y_te)
    dt = np.dtype(dtype)
    return Dataset(
        name=name,
        X_train=np.ascontiguousarray(X_tr.T, dtype=dt),
        Y_train=np.ascontiguousarray(Y_tr.T, dtype=dt),
        X_test=np.ascontiguousarray(X_te.T, dtype=dt),
        Y_test=np.ascontiguousarray(Y_te.T, dtype=dt),
        output_activation=g_L,
        cost=cost,
        target_names=names,
        feature_mean=mean.astype(dt),
        feature_std=std.astype(dt),
    )
