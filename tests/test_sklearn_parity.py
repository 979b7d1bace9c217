"""jaxmlp.sklearn against scikit-learn's own MLP where a user can see the difference:
probabilities its metrics accept, the reported loss of several targets, editable
coefs_ / intercepts_, sparse X, predict_log_proba, loss_ / t_ / out_activation_, and the
checks of verbose, random_state and weight_decay."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
import scipy.sparse as sp  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import cross_validate  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

from jaxmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _blobs(n=60, classes=4, features=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(n, features)) + y[:, None]
    return X, y


def _forward(est, X, output):
    """A[L] from coefs_ / intercepts_ in NumPy float64: relu hidden layers, then ``output``."""
    A = X
    for l, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        A = A @ W + b
        if l < len(est.coefs_) - 1:
            A = np.maximum(A, 0.0)
    return output(A)


def _softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def test_probabilities_sum_to_one_in_float64_for_log_loss_scoring():
    """scikit-learn's log_loss warns when predict_proba's rows do not sum to 1 within
    sqrt(eps) ~ 1.5e-8 (float64): no warning."""
    X, y = _blobs(80, classes=10, features=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cross_validate(MLPClassifier((8,), max_iter=5, random_state=0), X, y, cv=2,
                       scoring="neg_log_loss", error_score="raise")
    assert [str(w.message) for w in caught
            if issubclass(w.category, UserWarning)
            and not issubclass(w.category, ConvergenceWarning)] == []


def test_probabilities_of_the_laplace_predictive_sum_to_one_and_sigmoids_are_kept():
    """The rows of predict_proba sum to 1 to float64 rounding, also the Laplace predictive
    (LA11); a label-indicator y's sigmoids are A[L] of coefs_ / intercepts_, not rescaled."""
    X, y = _blobs(40, classes=10, features=4)
    for laplace in (None, "diag"):
        P = MLPClassifier((4,), max_iter=3, random_state=0, laplace=laplace).fit(X, y) \
            .predict_proba(X)
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=4e-16)
    Y = np.c_[y % 2, y > 4, y < 2].astype(int)
    multi = MLPClassifier((4,), max_iter=3, random_state=0).fit(X, Y)
    np.testing.assert_allclose(multi.predict_proba(X),
                               _forward(multi, X, lambda Z: 1 / (1 + np.exp(-Z))), rtol=1e-5)


@pytest.mark.parametrize("tol", [1e-4, 0.05])
def test_the_loss_of_several_targets_is_scikit_learns_average_over_them(tol):
    """scikit-learn's squared loss is 0.5 mean_outputs mean_samples (y - p)^2 + its L2 term,
    its gradient that of the sum over outputs: the same curve, best_loss_, loss_ and epochs
    as its own SGD (momentum 0) from the same random_state; tol 0.05 stops it early."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(31, 3))
    Y = np.c_[X[:, 0] - X[:, 1], np.tanh(X[:, 2])] + 0.1 * rng.normal(size=(31, 2))
    settings = dict(learning_rate_init=0.05, alpha=0.3, max_iter=12, batch_size=7,
                    random_state=2, tol=tol, n_iter_no_change=2)
    ours = MLPRegressor((5,), optimizer="sgd", **settings).fit(X, Y)
    theirs = SkRegressor(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0,
                         nesterovs_momentum=False, **settings).fit(X, Y)
    assert ours.n_iter_ == theirs.n_iter_
    if tol > 0.01:
        assert theirs.n_iter_ < 12
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-5)
    assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-5)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    assert ours.t_ == theirs.t_ == 31 * theirs.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_coefs_and_intercepts_are_the_model_as_in_scikit_learn():
    """coefs_ / intercepts_ are writable float64; predictions (a NumPy forward pass of the
    edited values) and partial_fit (scikit-learn's SGD step from the same edited values, the
    whole set one minibatch) use them; pickling keeps them; an unedited model predicts as
    its fitted float32 parameters."""
    X, y = _blobs(40, classes=3)
    clf = MLPClassifier((6,), max_iter=5, random_state=0).fit(X, y)
    before = clf.predict_proba(X)
    clf.coefs_ = [W.copy() for W in clf.coefs_]
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert all(W.dtype == np.float64 and W.flags.writeable for W in clf.coefs_ + clf.intercepts_)
    clf.coefs_[0] *= 0.5
    clf.intercepts_[1][:] = [1.0, -1.0, 0.0]
    np.testing.assert_allclose(clf.predict_proba(X), _forward(clf, X, _softmax), rtol=1e-5)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    clf.coefs_ = [np.zeros_like(W) for W in clf.coefs_]
    clf.intercepts_ = [np.zeros_like(b) for b in clf.intercepts_]
    np.testing.assert_allclose(clf.predict_proba(X), 1 / 3, rtol=1e-12)

    target = X[:, 0] - X[:, 1]
    settings = dict(learning_rate_init=0.05, alpha=0.1, max_iter=1, batch_size=40,
                    random_state=0)
    ours = MLPRegressor((4,), optimizer="sgd", **settings).fit(X, target)
    theirs = SkRegressor(hidden_layer_sizes=(4,), solver="sgd", momentum=0.0,
                         nesterovs_momentum=False, **settings).fit(X, target)
    start = np.random.default_rng(1)
    edited = [start.uniform(-0.5, 0.5, a.shape) for a in theirs.coefs_ + theirs.intercepts_]
    for est in (ours, theirs):
        est.coefs_, est.intercepts_ = [a.copy() for a in edited[:2]], [a.copy() for a in edited[2:]]
        est.partial_fit(X, target)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_x_is_densified_as_the_dense_fit(fmt):
    X, y = _blobs(40, classes=3)
    dense = MLPClassifier((6,), max_iter=3, random_state=0).fit(X, y)
    sparse = MLPClassifier((6,), max_iter=3, random_state=0).fit(sp.csr_matrix(X).asformat(fmt), y)
    for a, b in zip(dense.coefs_ + dense.intercepts_, sparse.coefs_ + sparse.intercepts_,
                    strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sparse.predict_proba(sp.csr_matrix(X).asformat(fmt)),
                                  dense.predict_proba(X))
    reg = MLPRegressor((6,), max_iter=3, random_state=0).fit(sp.csr_matrix(X), X[:, 0])
    np.testing.assert_array_equal(reg.predict(sp.csc_matrix(X)), reg.predict(X))
    assert MLPClassifier().__sklearn_tags__().input_tags.sparse
    assert MLPRegressor().__sklearn_tags__().input_tags.sparse


def test_predict_log_proba_loss_t_and_out_activation_are_scikit_learns():
    X, y = _blobs(40, classes=3)
    clf = MLPClassifier((6,), max_iter=4, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.predict_log_proba(X), np.log(clf.predict_proba(X)))
    assert clf.loss_ == clf.loss_curve_[-1] and clf.t_ == 4 * 40
    clf.partial_fit(X, y)
    assert clf.loss_ == clf.loss_curve_[-1] and clf.t_ == 5 * 40
    assert clf.out_activation_ == "softmax"
    Y = np.c_[y == 0, y == 1].astype(int)
    for ours, theirs, target in [(MLPClassifier, SkClassifier, Y),
                                 (MLPRegressor, SkRegressor, X[:, 0])]:
        a = ours((4,), max_iter=2, random_state=0).fit(X, target)
        b = theirs(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, target)
        assert a.out_activation_ == b.out_activation_ and a.t_ == b.t_


def test_verbose_takes_integers_and_random_state_and_weight_decay_are_checked(capsys):
    X, y = _blobs(20, classes=2)
    MLPClassifier((4,), max_iter=2, verbose=1, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 1", "Iteration 2"]
    with pytest.raises(ValueError, match=r"^verbose: expected a bool \(True or False\), got -1 "
                                         r"\(an integer >= 0 is taken too"):
        MLPClassifier((4,), max_iter=2, verbose=-1).fit(X, y)
    for state in (-1, 2**40, "x", 1.5):
        with pytest.raises(ValueError) as error:
            MLPClassifier((4,), max_iter=2, random_state=state).fit(X, y)
        assert str(error.value) == (f"random_state: expected None, an integer in [0, 2**32 - 1] "
                                    f"or a numpy.random.RandomState instance, got {state!r}.")
    with pytest.raises(ValueError, match=r"^weight_decay: expected a number >= 0, got 'x'\.$"):
        MLPRegressor((4,), max_iter=2, weight_decay="x").fit(X, y)
