"""jaxmlp.data.datasets: layout, split, standardisation fitted on train only, labels."""

import numpy as np
import pytest
from sklearn import datasets as skd

from jaxmlp.data import datasets

SHAPES = {  # name: (n[0], n[L], m total)
    "digits": (64, 10, 1797),
    "breast_cancer": (30, 1, 569),
    "multilabel": (64, 5, 1797),
    "diabetes": (10, 1, 442),
}


@pytest.fixture(scope="module", params=datasets.DATASETS)
def data(request):
    return datasets.load(request.param, seed=0)


def _raw(name):
    if name in ("digits", "multilabel"):
        d = skd.load_digits()
        return d.data, d.target
    if name == "breast_cancer":
        d = skd.load_breast_cancer()
        return d.data, d.target
    d = skd.load_diabetes(scaled=False)
    return d.data, d.target


def test_layout_dtype_and_sizes(data):
    n0, nL, m = SHAPES[data.name]
    assert data.X_train.dtype == np.float32 and data.Y_test.dtype == np.float32
    assert data.X_train.shape[0] == n0 and data.X_test.shape[0] == n0
    assert data.Y_train.shape == (nL, data.X_train.shape[1])
    assert data.Y_test.shape == (nL, data.X_test.shape[1])
    assert data.X_train.shape[1] + data.X_test.shape[1] == m
    assert abs(data.X_test.shape[1] - 0.2 * m) <= 10  # 20 % held out (rounded per class)
    assert (data.n_inputs, data.n_outputs) == (n0, nL)
    assert len(data.target_names) == nL


def test_split_is_a_partition_of_the_original_examples(data):
    """Undoing the standardisation gives back the original rows, each exactly once."""
    raw, _ = _raw(data.name)
    back = np.concatenate([data.X_train, data.X_test], axis=1).T.astype(np.float64)
    back = back * data.feature_std.astype(np.float64) + data.feature_mean.astype(np.float64)
    rows_back = np.round(back, 3)
    rows_raw = np.round(raw, 3)
    order_b = np.lexsort(rows_back.T[::-1])
    order_r = np.lexsort(rows_raw.T[::-1])
    np.testing.assert_allclose(rows_back[order_b], rows_raw[order_r], atol=2e-3)


def test_standardisation_fitted_on_train_only(data):
    raw, _ = _raw(data.name)
    Xtr = data.X_train.astype(np.float64)
    varying = raw.std(axis=0) > 0
    np.testing.assert_allclose(Xtr.mean(axis=1), 0.0, atol=1e-5)
    std = Xtr.std(axis=1)
    # features constant on the train split (some digit pixels) stay centred, unscaled (std 0)
    assert np.all((np.abs(std - 1) < 1e-4) | (std < 1e-6))
    assert np.sum(np.abs(std - 1) < 1e-4) >= 0.9 * np.sum(varying)
    # the test split was NOT used: its mean is not exactly 0
    assert np.max(np.abs(data.X_test.mean(axis=1))) > 1e-3


def test_targets(data):
    if data.name == "digits":
        for Y in (data.Y_train, data.Y_test):
            assert set(np.unique(Y)) <= {0.0, 1.0}
            np.testing.assert_array_equal(Y.sum(axis=0), 1.0)
    elif data.name in ("breast_cancer", "multilabel"):
        assert set(np.unique(data.Y_train)) == {0.0, 1.0}
    else:  # diabetes: target standardised with the train split's statistics
        np.testing.assert_allclose(data.Y_train.mean(), 0.0, atol=1e-5)
        np.testing.assert_allclose(data.Y_train.std(), 1.0, atol=1e-5)


def test_multilabel_labels_are_properties_of_the_digit():
    d = datasets.load("digits", seed=3)
    ml = datasets.load("multilabel", seed=3)
    np.testing.assert_array_equal(d.X_train, ml.X_train)  # same stratified split
    digit = np.argmax(d.Y_train, axis=0)
    for row, (name, classes) in enumerate(datasets.MULTILABEL_LABELS.items()):
        np.testing.assert_array_equal(ml.Y_train[row], np.isin(digit, classes).astype(np.float32))
    assert ml.target_names == tuple(datasets.MULTILABEL_LABELS)
    assert np.any(ml.Y_train.sum(axis=0) >= 2)  # truly multi-label


def test_stratified_split_keeps_class_proportions():
    d = datasets.load("breast_cancer", seed=1)
    p_train, p_test = d.Y_train.mean(), d.Y_test.mean()
    assert abs(p_train - p_test) < 0.01
    dg = datasets.load("digits", seed=1)
    counts = dg.Y_test.sum(axis=1)
    assert counts.min() >= 35 and counts.max() <= 37  # about 180 * 0.2 per class


def test_deterministic_by_seed():
    a, b, c = (datasets.load("diabetes", seed=s) for s in (5, 5, 6))
    for x, y in zip(a[1:5], b[1:5]):
        np.testing.assert_array_equal(x, y)
    assert a.X_test.shape == c.X_test.shape and not np.array_equal(a.Y_test, c.Y_test)


def test_dtype_option():
    d = datasets.load("breast_cancer", dtype=np.float64)
    assert d.X_train.dtype == np.float64 and d.Y_train.dtype == np.float64


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(name="mnist"), ValueError, "name: expected one of"),
        (dict(name="digits", seed=-1), ValueError, "seed"),
        (dict(name="digits", seed=1.5), ValueError, "seed"),
        (dict(name="digits", test_fraction=0.0), ValueError, "test_fraction"),
        (dict(name="digits", test_fraction=1.0), ValueError, "test_fraction"),
        (dict(name="digits", dtype=np.int32), TypeError, "dtype"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        datasets.load(**kwargs)
