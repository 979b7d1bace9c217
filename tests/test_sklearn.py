"""jaxmlp.sklearn: scikit-learn's estimator contract, pipelines and searches, and the numbers
the estimators give against an independent NumPy forward pass and scikit-learn's own MLP."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer, load_digits, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from jaxmlp import privacy  # noqa: E402
from jaxmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

#: The instances scikit-learn's checks run on: small and quick, defaults otherwise; and with
#: a Laplace posterior (its predictive, and no partial_fit).
CHECKED = [MLPClassifier((16,), learning_rate_init=0.01, max_iter=50, random_state=0),
           MLPRegressor((16,), learning_rate_init=0.01, max_iter=100, random_state=0),
           MLPClassifier((8,), learning_rate_init=0.01, max_iter=50, random_state=0,
                         laplace="diag"),
           MLPRegressor((8,), learning_rate_init=0.01, max_iter=100, random_state=0,
                        laplace="kron")]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        yield


def _float32_equivalence(estimator):
    """The check of integer weights against repeated rows compares the predictions at
    rtol 1e-7 (float64 arithmetic); the float32 network agrees to its own rounding (~1e-6,
    test_sample_weight_is_duplication_and_zero_is_dropping asserts it at 1e-5)."""
    why = "float32 arithmetic: equal to ~1e-6 relative, the check asks for 1e-7"
    return {"check_sample_weight_equivalence_on_dense_data": why,
            "check_sample_weight_equivalence_on_sparse_data": why}  # sparse X is densified


@pytest.mark.slow
@parametrize_with_checks(CHECKED, expected_failed_checks=_float32_equivalence)
def test_every_check_of_scikit_learns_estimator_contract(estimator, check):
    check(estimator)


def digits(n=600):
    X, y = load_digits(return_X_y=True)
    return train_test_split(X[:n] / 16.0, y[:n], random_state=0)


def numpy_forward(est, X):
    """A[L]^T from coefs_ / intercepts_ with NumPy: relu hidden layers, softmax output."""
    A = X
    for l, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        Z = A @ W + b
        if l < len(est.coefs_) - 1:
            A = np.maximum(Z, 0)
        else:
            E = np.exp(Z - Z.max(axis=1, keepdims=True))
            A = E / E.sum(axis=1, keepdims=True)
    return A


def test_classifier_is_batch_first_and_matches_a_numpy_forward_pass():
    Xtr, Xte, ytr, yte = digits()
    clf = MLPClassifier((32,), learning_rate_init=0.01, max_iter=30, random_state=0)
    assert clf.fit(Xtr, ytr) is clf
    P = clf.predict_proba(Xte)
    assert P.shape == (len(Xte), 10) and list(clf.classes_) == list(range(10))
    np.testing.assert_allclose(P, numpy_forward(clf, Xte), rtol=2e-4, atol=1e-6)
    np.testing.assert_array_equal(clf.predict(Xte), clf.classes_[np.argmax(P, axis=1)])
    assert [W.shape for W in clf.coefs_] == [(64, 32), (32, 10)]
    assert clf.n_iter_ == 30 and len(clf.loss_curve_) == 30
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] / 5
    assert clf.score(Xte, yte) > 0.9


def test_string_labels_and_two_classes():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    labels = np.where(y == 1, "benign", "malignant")
    clf = MLPClassifier((8,), learning_rate_init=0.01, max_iter=20, random_state=1).fit(X, labels)
    assert list(clf.classes_) == ["benign", "malignant"]
    assert clf.predict_proba(X).shape == (len(X), 2)
    assert set(clf.predict(X)) <= {"benign", "malignant"} and clf.score(X, labels) > 0.9


def test_the_same_random_state_gives_the_same_model_and_another_does_not():
    Xtr, Xte, ytr, _ = digits(300)
    Xtr, ytr = Xtr[:100], ytr[:100]  # the shapes of the partial_fit test: one compiled program
    assert len(np.unique(ytr)) == 10
    a = MLPClassifier((8,), max_iter=3, random_state=5).fit(Xtr, ytr).predict_proba(Xte)
    b = MLPClassifier((8,), max_iter=3, random_state=5).fit(Xtr, ytr).predict_proba(Xte)
    c = MLPClassifier((8,), max_iter=3, random_state=6).fit(Xtr, ytr).predict_proba(Xte)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_pipeline_grid_search_cross_validation_and_pickle():
    Xtr, Xte, ytr, yte = digits(400)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=10, random_state=0,
                                                         learning_rate_init=0.01))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(4,), (32,)]}, cv=2)
    search.fit(Xtr, ytr)
    assert search.best_params_["mlpclassifier__hidden_layer_sizes"] == (32,)
    # the grid's (32,) point again: the folds have its shapes, nothing new is compiled
    scores = cross_val_score(make_pipeline(StandardScaler(), MLPClassifier(
        (32,), max_iter=10, random_state=1, learning_rate_init=0.01)), Xtr, ytr, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.75
    clone = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(clone.predict_proba(Xte), search.predict_proba(Xte))


def test_regressor_one_and_several_targets():
    X, y = make_regression(n_samples=200, n_features=5, n_targets=2, noise=0.1, random_state=0)
    y = (y - y.mean(0)) / y.std(0)
    two = MLPRegressor((32,), learning_rate_init=0.01, max_iter=200, random_state=0).fit(X, y)
    assert two.predict(X).shape == (200, 2) and two.score(X, y) > 0.95
    one = MLPRegressor((32,), learning_rate_init=0.01, max_iter=50, random_state=0).fit(X, y[:, 0])
    assert one.predict(X).shape == (200,)
    W, b = one.coefs_, one.intercepts_
    expected = (np.maximum(X @ W[0] + b[0], 0) @ W[1] + b[1])[:, 0]
    np.testing.assert_allclose(one.predict(X), expected, rtol=1e-4, atol=1e-5)


def test_multilabel_indicator_targets_give_sigmoid_outputs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5], axis=1).astype(int)
    clf = MLPClassifier((16,), learning_rate_init=0.02, max_iter=100, random_state=0).fit(X, Y)
    P = clf.predict_proba(X)
    assert P.shape == (200, 3) and not np.allclose(P.sum(1), 1)  # independent sigmoids
    assert clf.predict(X).shape == (200, 3) and clf.score(X, Y) > 0.8


def test_early_stopping_stops_and_keeps_the_best_validation_model():
    Xtr, _, ytr, _ = digits()
    clf = MLPClassifier((32,), learning_rate_init=0.05, max_iter=500, early_stopping=True,
                        n_iter_no_change=3, random_state=0).fit(Xtr, ytr)
    assert clf.n_iter_ < 500
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert len(clf.validation_scores_) == clf.n_iter_


def _iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize("case", ["three_classes", "two_classes", "regressor", "weighted",
                                  "multilabel"])
def test_the_validation_split_is_scikit_learns_own(case, monkeypatch):
    """The rows early stopping holds out, recorded from scikit-learn's own fit (its
    train_test_split call) and from ours, with the same random_state: the same validation
    rows and the training rows in the same order; for two classes stratified by class
    (scikit-learn's one sigmoid unit: other initial draws, the split drawn after them)."""
    import sklearn.neural_network._multilayer_perceptron as sk_mlp
    from sklearn.neural_network import MLPClassifier as SkMLP, MLPRegressor as SkReg

    import jaxmlp.sklearn as ours_module

    X, y = _iris()
    sw = None
    if case == "two_classes":
        X, y = X[30:], (y[30:] == 2).astype(int)  # 120 rows: 70 of class 0, 50 of class 1
    elif case == "regressor":
        y = X[:, 3].copy()
    elif case == "weighted":
        sw = np.arange(150) % 3 + 1.0
    elif case == "multilabel":
        y = np.stack([y == 0, y == 1, X[:, 0] > 0], 1).astype(int)
    X = np.hstack([X, np.arange(len(X))[:, None]])  # a row's index, to read the split back
    split = {}

    def recorder(key, function):
        def record(*arrays, **kwargs):
            out = function(*arrays, **kwargs)
            split[key] = out[0], out[1]  # (training rows, validation rows)
            return out
        return record

    monkeypatch.setattr(sk_mlp, "train_test_split", recorder("theirs", sk_mlp.train_test_split))
    monkeypatch.setattr(ours_module, "train_test_split",
                        recorder("ours", ours_module.train_test_split))
    settings = dict(max_iter=1, early_stopping=True, validation_fraction=0.15, random_state=3)
    Ours, Theirs = ((MLPRegressor, SkReg) if case == "regressor" else (MLPClassifier, SkMLP))
    Ours((4,), **settings).fit(X, y, sample_weight=sw)
    Theirs(hidden_layer_sizes=(4,), **settings).fit(X, y, sample_weight=sw)
    train, val = split["ours"]
    theirs_train, theirs_val = (rows[:, -1].astype(int) for rows in split["theirs"])
    assert len(val) == 23 if case != "two_classes" else len(val) == 18  # ceil(0.15 n)
    np.testing.assert_array_equal(train, theirs_train)
    np.testing.assert_array_equal(val, theirs_val)
    if case == "two_classes":  # stratified: each class's share of the 18 rows to a row
        assert np.all(np.abs(np.bincount(y[val]) - 18 * np.array([70, 50]) / 120) < 1)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_early_stopping_on_iris_is_scikit_learns_fit(optimizer):
    """Iris, one full-batch minibatch an epoch (135 training rows): with the same
    random_state, the same split and shuffles, so the same epochs as scikit-learn's early
    stopping, its validation accuracies to float32 rounding, and its best score."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = _iris()
    settings = dict(learning_rate_init=0.01, max_iter=200, early_stopping=True,
                    n_iter_no_change=5, random_state=1)
    ours = MLPClassifier((8,), optimizer=optimizer, **settings).fit(X, y)
    theirs = SkMLP((8,), solver=optimizer, momentum=0.0, **settings).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ < 200
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, atol=1e-6)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, abs=1e-6)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):  # both keep the best-scoring epoch's parameters
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_validation_split_under_two_samples_is_refused_as_scikit_learn_refuses_it():
    """ceil(validation_fraction n) < 2 validation rows: scikit-learn's ValueError ("The
    validation set is too small"), ours naming validation_fraction; 2 rows train."""
    from sklearn.neural_network import MLPRegressor as SkReg

    X = np.random.default_rng(0).normal(size=(10, 3))
    y = X[:, 0]
    with pytest.raises(ValueError, match="The validation set is too small"):
        SkReg(hidden_layer_sizes=(4,), early_stopping=True, validation_fraction=0.1).fit(X, y)
    with pytest.raises(ValueError, match=r"^validation_fraction: the validation set is too "
                                         r"small, expected at least 2 samples, got "
                                         r"ceil\(0.1 x 10\) = 1; increase validation_fraction "
                                         r"\(got 0.1\)"):
        MLPRegressor((4,), early_stopping=True, validation_fraction=0.1).fit(X, y)
    reg = MLPRegressor((4,), early_stopping=True, validation_fraction=0.11, max_iter=2,
                       random_state=0).fit(X, y)  # ceil(1.1) = 2 validation rows
    assert len(reg.validation_scores_) == 2
    with pytest.raises(ValueError, match=r"^validation_fraction: the validation split "
                                         r"stratified by class .* not possible: The least "
                                         r"populated class"):
        MLPClassifier((4,), early_stopping=True, validation_fraction=0.3).fit(
            X, np.r_[np.zeros(9), 1])


def test_a_diverging_fit_raises_and_keeps_the_last_finite_epoch():
    """Plain SGD at a too-large rate on unscaled targets: the loss grows without bound, the
    fit names the first non-finite epoch, and the model is the epoch before it."""
    X, y = make_regression(n_samples=64, n_features=3, random_state=0)
    reg = MLPRegressor((4,), optimizer="sgd", learning_rate_init=0.1, max_iter=50,
                       random_state=0)
    with pytest.raises(FloatingPointError, match="lower learning_rate_init") as error:
        reg.fit(X, y)
    assert 1 < reg.n_iter_ < 50 and f"in epoch {reg.n_iter_ + 1};" in str(error.value)
    assert len(reg.loss_curve_) == reg.n_iter_ and np.isfinite(reg.loss_curve_).all()
    assert reg.loss_curve_[-1] > 1e3 * reg.loss_curve_[0]  # it was diverging
    assert all(np.isfinite(np.asarray(a)).all() for p in reg._params() for a in p.values())


def test_partial_fit_adds_one_epoch_each_call_and_needs_the_classes_first():
    Xtr, _, ytr, _ = digits(300)
    clf = MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes: expected every label"):
        clf.partial_fit(Xtr, ytr)
    clf.partial_fit(Xtr[:100], ytr[:100], classes=np.arange(10))
    clf.partial_fit(Xtr[100:200], ytr[100:200])
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2 and len(clf.classes_) == 10
    with pytest.raises(ValueError, match="not among classes_"):
        clf.partial_fit(Xtr[:5], np.full(5, 11))
    with pytest.raises(ValueError, match="early_stopping: not with partial_fit"):
        MLPClassifier((8,), early_stopping=True).partial_fit(Xtr, ytr, classes=np.arange(10))
    laplace = MLPClassifier((8,), laplace="kron")
    assert not hasattr(laplace, "partial_fit") and hasattr(laplace.set_params(laplace=None),
                                                           "partial_fit")
    with pytest.raises(AttributeError, match="no attribute 'partial_fit'") as error:
        MLPRegressor(laplace="kron").partial_fit(Xtr, ytr)
    assert "partial_fit: not with laplace='kron'" in str(error.value.__cause__)  # the reason


@pytest.mark.slow  # a long test (5 s): private fits also in test_sklearn_parity
def test_private_training_spends_at_most_the_target_epsilon():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier((8,), learning_rate_init=0.05, batch_size=64, max_iter=4,
                        target_epsilon=2.0, delta=1e-4, random_state=0).fit(X, y)
    q = 64 / len(X)
    assert clf.sampling_rate_ == pytest.approx(q)
    spent = privacy.epsilon(noise_multiplier=clf.noise_multiplier_, sampling_rate=q,
                            steps=clf.n_iter_ * privacy.default_steps_per_epoch(q), delta=1e-4)
    assert clf.n_iter_ == 4 and 1.5 < spent <= 2.0 == clf.target_epsilon
    assert clf.epsilon_ == pytest.approx(spent)
    assert clf.score(X, y) > 0.7
    # delta_: the delta epsilon_ is for; for delta=None min(1e-5, 0.1 / n)
    assert clf.delta_ == 1e-4 and clf.set_params(delta=None)._dp(len(X)).delta == 1e-5
    # partial_fit after a private fit is refused before any work: its epochs would be
    # outside the accountant
    coefs = [W.copy() for W in clf.coefs_]
    with pytest.raises(ValueError) as error:
        clf.set_params(target_epsilon=None).partial_fit(X, y)
    assert str(error.value) == (
        "partial_fit: the model was trained privately (fit with target_epsilon=2.0); training "
        "it further outside the privacy accountant would spend privacy that epsilon_ does not "
        "count; fit anew instead.")
    assert clf.n_iter_ == 4 and all(np.array_equal(a, b) for a, b in zip(coefs, clf.coefs_))
    clf.fit(X, y).partial_fit(X, y)  # anew, not private: none of the private fit's attributes
    assert clf.n_iter_ == 5 and not any(hasattr(clf, a) for a in (
        "epsilon_", "delta_", "noise_multiplier_", "sampling_rate_"))


def test_laplace_refuses_weights_repeating_too_many_rows_and_targets_of_other_scales():
    """With laplace the posterior's samples are the rows repeated by their weights: a sum
    above max(n, min(100 n, 10^7)) rows is refused before the training; and one noise scale
    for every target: y = [y, y / 100] (diabetes) is refused, naming y's scales."""
    from sklearn.datasets import load_diabetes

    X, y = _iris()
    with pytest.raises(ValueError) as error:
        MLPClassifier((4,), laplace="kron").fit(X, y, sample_weight=np.full(150, 1e12))
    assert str(error.value) == (
        "sample_weight: with laplace='kron', the posterior conditions on each sample repeated "
        "as often as its weight, expected weights summing to at most 15000 rows (max(n, "
        "min(100 n, 10^7)), n = 150 samples), got a sum of 1.5e+14; scale the weights down.")
    Xd, yd = load_diabetes(return_X_y=True)
    Y = np.c_[yd, yd / 100]
    with pytest.raises(ValueError) as error:
        MLPRegressor((4,), laplace="diag").fit(Xd, Y)
    low, high = Y.std(axis=0).min(), Y.std(axis=0).max()
    assert str(error.value) == (
        f"y: with laplace='diag', the targets' standard deviations range from {low:.4g} to "
        f"{high:.4g}, more than a factor 2 apart: the posterior has one noise scale "
        f"sigma_noise for every target, so return_std would be miscalibrated per target; "
        f"standardise y's columns (e.g. sklearn.preprocessing.StandardScaler, then scale the "
        f"predicted mean and std back by each column's std) or fit one model per target.")
    assert f"{low:.4g}" == "0.7701" and f"{high:.4g}" == "77.01"


@pytest.mark.parametrize("params, message", [
    ({"hidden_layer_sizes": (8, 0)}, r"hidden_layer_sizes\[1\]: expected a positive integer, got 0"),
    ({"hidden_layer_sizes": "wide"}, r"hidden_layer_sizes\[0\]: expected a positive integer"),
    ({"activation": "swish"}, "activation: expected one of"),
    ({"optimizer": "lbfgs"}, "optimizer: expected one of"),
    ({"learning_rate_init": -1.0}, r"learning_rate_init: expected a finite number > 0, got -1.0"),
    ({"max_iter": 0}, "max_iter: expected a positive integer, got 0"),
    ({"batch_size": 0}, "batch_size: expected a positive integer, got 0"),
    ({"validation_fraction": 1.5, "early_stopping": True}, r"validation_fraction: expected a number in \(0, 1\)"),
    ({"target_epsilon": 1.0, "early_stopping": True}, "early_stopping: not with target_epsilon"),
    ({"alpha": -1.0}, r"alpha: expected a finite number >= 0, got -1.0"),
    ({"tol": float("nan")}, r"tol: expected a finite number >= 0, got nan"),
    ({"laplace": "kfac"}, r"laplace: expected None or one of \['kron', 'last_layer'"),
    ({"laplace": "kron", "target_epsilon": 1.0}, "laplace: not with target_epsilon .* not be private"),
    ({"delta": 1e-3}, r"^delta: used with target_epsilon only \(DP-SGD's setting\); got delta=0.001 with target_epsilon=None\.$"),
    ({"l2_norm_clip": 1.0}, r"^l2_norm_clip: used with target_epsilon only \(DP-SGD's setting\); got l2_norm_clip=1.0 with target_epsilon=None\.$"),
    ({"laplace": "full", "hidden_layer_sizes": (100,)}, r"laplace: 'full' .* P = 7510 parameters .*FULL_MAX_PARAMS = 4096"),
])
def test_bad_settings_name_the_parameter(params, message):
    Xtr, _, ytr, _ = digits(100)
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**{"max_iter": 2, **params}).fit(Xtr, ytr)


def test_one_class_and_non_finite_inputs_are_refused():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier(max_iter=2).fit(X, np.zeros(20))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPRegressor(max_iter=2).fit(X, np.zeros(20))


def test_the_initial_weights_and_the_l2_term_are_scikit_learns():
    """Same random_state: the same initial weights as scikit-learn's MLPClassifier (drawn as it
    draws them), and a first-epoch loss with its L2 term alpha ||W||^2 / (2 n): an epoch that
    is one minibatch of all n samples, with a learning rate too small to move the weights."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    X = np.random.default_rng(1).normal(size=(60, 4))
    y = np.arange(60) % 3
    settings = dict(learning_rate_init=1e-9, max_iter=1, alpha=0.5, random_state=7)
    ours = MLPClassifier((6,), **settings).fit(X, y)
    theirs = SkMLP((6,), **settings).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert ours.loss_curve_[0] == pytest.approx(theirs.loss_curve_[0], rel=1e-5)
    penalty = 0.5 * 0.5 * sum(np.sum(W ** 2) for W in theirs.coefs_) / 60
    assert penalty > 0.01  # the term is there, not lost in float32 rounding


@pytest.mark.parametrize("labels", [np.array([3, 7]), np.array([3, 7], np.uint8),
                                    np.array([False, True]), np.array(["no", "yes"]),
                                    np.array([1.0, 2.0])], ids=lambda a: a.dtype.name)
def test_classes_and_predictions_keep_the_dtype_of_y(labels):
    from sklearn.neural_network import MLPClassifier as SkMLP

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = labels[np.arange(40) % 2]
    clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    assert clf.classes_.dtype == y.dtype == SkMLP((4,), max_iter=2).fit(X, y).classes_.dtype
    assert clf.predict(X).dtype == y.dtype and set(clf.predict(X)) <= set(labels)
    np.testing.assert_array_equal(clf.classes_, labels)


def test_laplace_classifier_is_the_posterior_of_its_params_in_a_pipeline_and_pickles():
    """laplace="kron": laplace_ is jaxmlp.laplace.from_fit's posterior built from coefs_ /
    intercepts_ and NumPy one-hot targets of the scaled training set; predict_proba is its
    probit predictive (not the MAP's softmax), predict its argmax; clone and pickle keep it."""
    import jax
    from sklearn.base import clone
    from sklearn.datasets import load_iris

    import jaxmlp
    from jaxmlp import laplace

    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(
        (8,), learning_rate_init=0.01, max_iter=30, random_state=0, laplace="kron")).fit(X, y)
    clf, Xs = pipe[-1], pipe[0].transform(X)
    net = jaxmlp.Network(sizes=(4, 8, 3), activations=("relu", "softmax"),
                         cost="categorical_cross_entropy")
    params = [{"W": np.asarray(W.T, np.float32), "b": np.asarray(b, np.float32)}
              for W, b in zip(clf.coefs_, clf.intercepts_)]
    Y = (y[:, None] == clf.classes_[None, :]).astype(np.float32)
    direct = laplace.from_fit(net, params, Xs.T.astype(np.float32), Y.T, structure="kron")
    assert clf.laplace_.structure == "kron" and clf.laplace_.n_data == 150
    for a, b in zip(jax.tree.leaves(clf.laplace_), jax.tree.leaves(direct)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    P = pipe.predict_proba(X)
    np.testing.assert_allclose(P, np.asarray(direct.predictive(Xs.T.astype(np.float32))).T,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(P, numpy_forward(clf, Xs), atol=1e-3)  # not the MAP's softmax
    np.testing.assert_array_equal(pipe.predict(X), clf.classes_[np.argmax(P, axis=1)])
    assert clone(pipe).get_params()["mlpclassifier__laplace"] == "kron"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pipe)).predict_proba(X), P)
    with pytest.raises(ValueError, match="laplace: expected None or one of") as error:
        MLPClassifier(laplace="kfac").fit(X, y)  # the accepted ones are jaxmlp.laplace's
    accepted = str(error.value).split("one of ")[1].split("]")[0]
    assert sorted(accepted.replace("'", "").strip("[").split(", ")) == sorted(laplace.STRUCTURES)


def test_laplace_regressor_std_is_the_glm_predictive_against_a_numpy_jacobian():
    """laplace="full", 1-D y: predict(X, return_std=True) is (the network's output, std) with
    std^2 = diag(J (G / sigma^2 + lambda I)^{-1} J^T) + sigma^2 (LA2), (LA10), (LA11); J the
    output's Jacobian in the parameters (one ReLU layer, written out in NumPy), G = J^T J over
    the training samples (mean squared error's GGN), lambda and sigma the fitted ones."""
    X, y = make_regression(n_samples=64, n_features=3, noise=5.0, random_state=0)
    y = y / y.std()
    settings = dict(learning_rate_init=0.01, max_iter=100, random_state=0)
    reg = MLPRegressor((4,), laplace="full", **settings).fit(X, y)
    mean, std = reg.predict(X[:10], return_std=True)
    np.testing.assert_array_equal(mean, reg.predict(X[:10]))
    assert mean.shape == std.shape == (10,)

    def jacobian(X):  # (m, P): d output / d (W1, b1, W2, b2), any fixed order
        W1, W2 = reg.coefs_[0], reg.coefs_[1][:, 0]
        Z = X @ W1 + reg.intercepts_[0]
        on, H = (Z > 0).astype(float), np.maximum(Z, 0)
        dW1 = (on * W2)[:, None, :] * X[:, :, None]
        return np.hstack([dW1.reshape(len(X), -1), on * W2, H, np.ones((len(X), 1))])

    la = reg.laplace_
    lam, sigma = float(la.prior_precision), float(la.sigma_noise)
    J = jacobian(X)
    precision = J.T @ J / sigma ** 2 + lam * np.eye(J.shape[1])
    Jq = jacobian(X[:10])
    var = np.einsum("ip,pq,iq->i", Jq, np.linalg.inv(precision), Jq) + sigma ** 2
    np.testing.assert_allclose(std, np.sqrt(var), rtol=2e-3)
    assert 0.01 < sigma < 1 and std.min() > sigma  # the noise, and the parameters' share
    plain = MLPRegressor((4,), **settings).fit(X, y)  # the same training program
    with pytest.raises(ValueError, match="return_std: .* needs a Laplace posterior"):
        plain.predict(X, return_std=True)


class _Compiles:
    """The XLA programs JAX compiles inside the block (jax_log_compiles)."""

    def __enter__(self):
        import logging

        import jax

        self.names, self._logger = [], logging.getLogger("jax")
        self._handler = logging.Handler(logging.DEBUG)
        self._handler.emit = lambda r: (self.names.append(r.getMessage().split()[4])
                                        if r.getMessage().startswith("Finished XLA compilation")
                                        else None)
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self._handler)
        self._ctx = jax.log_compiles(True)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)


def test_one_compiled_program_per_fit_shape_and_none_for_refits_and_predictions():
    """A fit compiles one program (every epoch, the stop test inside); a refit, a fold with a
    sample more (the same minibatch shape) and predictions on sets of other sizes below the
    same power of two compile nothing."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(251, 5)), np.arange(251) % 3
    clf = MLPClassifier((7,), max_iter=3, random_state=0)
    with _Compiles() as first:
        clf.fit(X[:250], y[:250])
    assert first.names == ["jit(run)"]
    with _Compiles() as fit_predict:
        clf.predict(X[:20])
    with _Compiles() as again:
        clf.fit(X, y)
        clf.fit(X[:250], y[:250])
        clf.predict(X[:30])
        clf.score(X[:17], y[:17])
        MLPClassifier((7,), max_iter=5, random_state=1).fit(X[1:], y[1:])
    assert fit_predict.names == ["jit(predict)"] and again.names == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_learning_rate_and_alpha_are_arguments_of_one_program_trained_as_scikit_learns_sgd():
    """learning_rate_init and alpha are values of the optimizer's state, set by each call of
    the one compiled program: a second setting compiles nothing and trains with its own
    values. Checked against scikit-learn's full-batch SGD from the same initial weights
    (W <- W - eta (dW + alpha W / n), b <- b - eta db, three epochs)."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    X = np.random.default_rng(2).normal(size=(40, 4))
    y = np.arange(40) % 3
    compiled = []
    for lr, alpha in [(0.1, 1e-4), (0.3, 0.5)]:
        settings = dict(learning_rate_init=lr, alpha=alpha, max_iter=3, batch_size=40,
                        random_state=3)
        with _Compiles() as c:
            ours = MLPClassifier((5,), optimizer="sgd", **settings).fit(X, y)
        compiled.append(c.names)
        theirs = SkMLP((5,), solver="sgd", momentum=0.0, nesterovs_momentum=False,
                       shuffle=False, **settings).fit(X, y)
        moved = np.abs(theirs.coefs_[0] - SkMLP((5,), solver="sgd", max_iter=1,
                                                learning_rate_init=1e-12, random_state=3,
                                                batch_size=40).fit(X, y).coefs_[0]).max()
        assert moved > 1e-2  # the weights moved: the rate is not lost
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert compiled == [["jit(run)"], []]


def test_kfac_optimizer_gets_its_factors_and_alpha_as_its_weight_decay():
    """optimizer="kfac": the training step sees the K-FAC transformation itself (so it hands
    it the Kronecker factors), with scikit-learn's L2 term alpha W / b as K-FAC's weight
    decay; in 10 epochs it trains the digits network further than Adam at its default rate."""
    Xtr, _, ytr, _ = digits(400)
    clf = MLPClassifier((32,), optimizer="kfac", learning_rate_init=0.1, alpha=0.3,
                        max_iter=10, random_state=0).fit(Xtr, ytr)
    batch = clf._batch(len(Xtr))[0]
    assert clf._optimizer(batch).options["weight_decay"] == pytest.approx(0.3 / batch)
    adam = MLPClassifier((32,), alpha=0.3, max_iter=10, random_state=0).fit(Xtr, ytr)
    assert np.all(np.isfinite(clf.loss_curve_)) and clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    assert clf.loss_curve_[-1] < adam.loss_curve_[-1]


def test_the_update_without_grad_norm_is_the_same_update_and_traces_no_norm():
    """apply_update(grad_norm=False), the estimator's update: the same parameters, optimizer
    state and cost as the default, bit for bit, metrics.grad_norm None and fewer traced
    equations; the default's grad_norm is the L2 norm of jaxmlp.value_and_grad's gradient."""
    import jax
    import optax

    import jaxmlp
    from jaxmlp.train import apply_update

    rng = np.random.default_rng(0)
    net = jaxmlp.Network(sizes=(3, 4, 2), activations=("relu", "softmax"),
                         cost="categorical_cross_entropy")
    params = [{"W": rng.normal(size=(4, 3)).astype(np.float32),
               "b": rng.normal(size=4).astype(np.float32)},
              {"W": rng.normal(size=(2, 4)).astype(np.float32),
               "b": rng.normal(size=2).astype(np.float32)}]
    X = rng.normal(size=(3, 5)).astype(np.float32)
    Y = np.eye(2, dtype=np.float32)[:, rng.integers(0, 2, 5)]
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def updates(p, s):
        return (apply_update(net, opt, p, s, X, Y, grad_norm=True),
                apply_update(net, opt, p, s, X, Y, grad_norm=False),
                jaxmlp.value_and_grad(net, p, X, Y)[1])

    with_norm, without, grads = jax.jit(updates)(params, state)
    for a, b in zip(jax.tree.leaves(with_norm[:2]), jax.tree.leaves(without[:2]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(with_norm[2].cost) == np.asarray(without[2].cost)
    assert without[2].grad_norm is None
    norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(float(with_norm[2].grad_norm), norm, rtol=1e-5)
    eqns = {gn: len(jax.make_jaxpr(lambda p, s, gn=gn: apply_update(
        net, opt, p, s, X, Y, grad_norm=gn))(params, state).eqns) for gn in (True, False)}
    assert eqns[False] < eqns[True]


def test_fit_and_predict_import_nothing_at_call_time_but_the_laplace_package():
    """What fit needs is imported with jaxmlp.sklearn (as scikit-learn's estimators import
    theirs): no import statement inside a function of the module but jaxmlp.laplace's (a fit
    with laplace set)."""
    import ast
    import inspect

    import jaxmlp.sklearn as sk

    inside = set()
    for node in ast.walk(ast.parse(inspect.getsource(sk))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    inside.update(a.name for a in sub.names)
                elif isinstance(sub, ast.ImportFrom):
                    inside.add(sub.module)
    assert inside == {"jaxmlp.laplace"}


@pytest.mark.slow
def test_a_first_fit_in_a_new_process_imports_no_module_of_its_own():
    """In a new process that imported jaxmlp.sklearn, the first fit imports no module outside
    jax's own (JAX loads some of its lowering modules when it first lowers a program)."""
    import subprocess
    import sys

    code = ("import sys, warnings; warnings.simplefilter('ignore'); import numpy as np; "
            "import jaxmlp.sklearn as sk; X = np.random.RandomState(0).normal(size=(40, 3)); "
            "y = (X[:, 0] > 0).astype(int); before = set(sys.modules); "
            "sk.MLPClassifier((4,), max_iter=3, random_state=0).fit(X, y); "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    new = done.stdout.split()
    assert [m for m in new if m.split(".")[0] not in ("jax", "jaxlib")] == [], new


@pytest.mark.slow  # ~15 s: two new processes
def test_the_grid_search_benchmark_shares_one_training_program_over_its_points(tmp_path):
    """experiments/sklearn_compare.py --grid: a whole GridSearchCV (9 points x 5 folds and
    the refit) per estimator in new processes; jaxmlp's compiles ONE training program for
    the 45 fits of iris's equal folds and one for the refit on the whole split."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "experiments/sklearn_compare.py", "--grid", "1", "--sets",
                    "iris", "--hidden", "4", "--max-iter", "3", "--out", str(tmp_path)],
                   cwd=root, check=True, capture_output=True, text=True)
    data = json.loads((tmp_path / "grid_search.json").read_text())
    iris = data["sets"]["iris"]
    assert iris["fits"] == 9 * 5 + 1
    ours, theirs = iris["runs"]["jaxmlp"][0], iris["runs"]["scikit-learn"][0]
    assert ours["compiled"].count("jit(run)") == 2
    assert theirs["compiled"] == [] and ours["seconds"] > 0 and theirs["seconds"] > 0
    assert set(ours["best_params"]) == {"learning_rate_init", "alpha"}
    assert 0 <= ours["test_accuracy"] <= 1


def test_the_weighted_kernel_is_the_gradient_of_the_weighted_mean_cost():
    """weighted_value_and_grad_kernel: J = sum w_i L_i / sum w_i and its gradient by the
    recurrences, against jax.grad of that J (float64, the suite's x64), and against
    value_and_grad_kernel on the batch without its weight-0 columns."""
    import jax
    import jax.numpy as jnp

    import jaxmlp
    from jaxmlp.nn import recurrences
    from jaxmlp.nn.propagation import value_and_grad_kernel, weighted_value_and_grad_kernel

    rng = np.random.default_rng(0)
    for acts, cost, n_out in [(("tanh", "softmax"), "categorical_cross_entropy", 3),
                              (("relu", "linear"), "mean_squared_error", 2)]:
        net = jaxmlp.Network(sizes=(4, 5, n_out), activations=acts, cost=cost)
        params = [{"W": jnp.asarray(rng.normal(size=(5, 4))),
                   "b": jnp.asarray(rng.normal(size=5))},
                  {"W": jnp.asarray(rng.normal(size=(n_out, 5))),
                   "b": jnp.asarray(rng.normal(size=n_out))}]
        X = jnp.asarray(rng.normal(size=(4, 9)))
        Y = (jnp.asarray(np.eye(n_out)[:, rng.integers(0, n_out, 9)]) if n_out == 3
             else jnp.asarray(rng.normal(size=(n_out, 9))))
        w = jnp.asarray([2.0, 0.0, 1.0, 0.5, 0.0, 3.0, 1.0, 1.0, 0.0])

        keep = np.flatnonzero(np.asarray(w) > 0)  # weights 0 / 1: the mean over the kept

        def weighted(p):
            A_L, c = recurrences.forward_pass(net, p, X)
            return jnp.sum(w * recurrences.losses(net, c.Z[-1], A_L, Y)) / jnp.sum(w)

        @jax.jit
        def pairs(p):
            return ((weighted_value_and_grad_kernel(net, p, X, Y, w),
                     jax.value_and_grad(weighted)(p)),
                    (weighted_value_and_grad_kernel(net, p, X, Y, (w > 0) * 1.0),
                     value_and_grad_kernel(net, p, X[:, keep], Y[:, keep])))

        for (J, grads), (J_ref, g_ref) in pairs(params):
            np.testing.assert_allclose(J, J_ref, rtol=1e-12)
            for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_every_sample_every_epoch_in_scikit_learns_minibatches_and_loss(weighted):
    """batch_size not dividing n (31 = 4 x 7 + 3): scikit-learn's gen_batches of the epoch's
    permutation, the smaller last minibatch's L2 term alpha ||W||^2 / (2 s), and its epoch loss
    sum_s (batch loss) (batch size) / n; with sample weights too. Against scikit-learn's own
    SGD (momentum 0) from the same random_state: the same shuffles, parameters and losses."""
    from sklearn.neural_network import MLPRegressor as SkMLP

    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(31, 3)), rng.normal(size=31)
    sw = rng.integers(0, 4, 31).astype(float) if weighted else None
    settings = dict(learning_rate_init=0.05, alpha=0.3, max_iter=2, batch_size=7,
                    random_state=2)
    ours = MLPRegressor((5,), optimizer="sgd", **settings).fit(X, y, sample_weight=sw)
    theirs = SkMLP(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0,
                   nesterovs_momentum=False, **settings).fit(X, y, sample_weight=sw)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-5)


def test_no_sample_is_dropped_so_the_stop_test_does_not_fire_early():
    """Diabetes (442 = 2 x 200 + 42 samples): every epoch trains on every sample, so the
    epoch loss decreases smoothly and the fit runs as scikit-learn's (past epoch 100)."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    reg = MLPRegressor((32,), max_iter=150, random_state=0).fit(X, y)
    assert reg.n_iter_ == 150 and np.all(np.diff(reg.loss_curve_) < 0)


def test_sample_weight_is_duplication_and_zero_is_dropping():
    """Full-batch SGD (all samples in one minibatch): integer weights give the fit on the
    rows repeated each as often (weight 0: the row dropped); bad weights are refused."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(20, 3)), np.arange(20) % 3
    sw = rng.integers(0, 3, 20)
    settings = dict(optimizer="sgd", learning_rate_init=0.1, alpha=0.01, max_iter=5,
                    random_state=0)
    weighted = MLPClassifier((4,), **settings).fit(X, y, sample_weight=sw)
    repeated = MLPClassifier((4,), **settings).fit(np.repeat(X, sw, 0), np.repeat(y, sw))
    for a, b in zip(weighted.coefs_ + weighted.intercepts_,
                    repeated.coefs_ + repeated.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-5)
    assert (sw == 0).sum() > 2  # rows of weight 0: not repeated at all, dropped
    bad = sw * 1.0
    bad[2] = -1.0
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        MLPClassifier((4,), **settings).fit(X, y, sample_weight=bad)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="Input sample_weight contains NaN"):
        MLPClassifier((4,), **settings).fit(X, y, sample_weight=bad)
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(19,\), expected \(20,\)"):
        MLPClassifier((4,), **settings).fit(X, y, sample_weight=sw[1:])
    with pytest.raises(ValueError, match=r"^sample_weight: with laplace='kron', expected "
                                         r"integer weights .*, got 0.5\.$"):
        MLPClassifier((4,), laplace="kron").fit(X, y, sample_weight=np.full(20, 0.5))
    with pytest.raises(ValueError, match="^sample_weight: not with target_epsilon"):
        MLPClassifier((4,), target_epsilon=1.0).fit(X, y, sample_weight=sw)


def test_partial_fit_label_indices_one_sample_and_changed_classes():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(30, 3))
    Y = (rng.random((30, 4)) > 0.5).astype(int)
    multi = MLPClassifier((16,), random_state=0).partial_fit(X, Y, classes=[0, 1, 2, 3])
    assert multi.classes_.tolist() == [0, 1, 2, 3] and multi.predict(X).shape == (30, 4)
    clf = MLPClassifier((4,), random_state=0).partial_fit(X[:1], [2], classes=[0, 1, 2])
    clf.partial_fit(X[1:2], [0])
    assert clf.n_iter_ == 2
    with pytest.raises(ValueError, match=r"^`classes=\[0, 1, 2, 3\]` is not the same as on "
                                         r"last call to partial_fit, was: \[0, 1, 2\]$"):
        clf.partial_fit(X, np.arange(30) % 3, classes=[0, 1, 2, 3])


def test_one_sample_for_the_regressors_fit_and_partial_fit_as_scikit_learn():
    """One sample trains as scikit-learn's SGD trains on it (fit, then a partial_fit)."""
    from sklearn.neural_network import MLPRegressor as SkMLP

    X = np.random.default_rng(6).normal(size=(2, 3))
    settings = dict(learning_rate_init=0.1, max_iter=3, random_state=0)
    ours = MLPRegressor((4,), optimizer="sgd", **settings).fit(X[:1], [1.5])
    theirs = SkMLP(hidden_layer_sizes=(4,), solver="sgd", momentum=0.0, **settings)
    theirs.fit(X[:1], [1.5])
    ours.partial_fit(X[1:], [0.5])
    theirs.partial_fit(X[1:], [0.5])
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert ours.n_iter_ == 4 and ours.predict(X).shape == (2,)
    with pytest.raises(ValueError, match="validation_fraction: leaves no training sample"):
        MLPRegressor((4,), early_stopping=True).fit(X[:1], [1.5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier((4,)).fit(X[:1], [1])


def test_values_beyond_float32_and_non_bool_switches_are_refused():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    clf = MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"^X: values up to 7.9e\+39 in magnitude, beyond "
                                         r"float32's largest number 3.403e\+38 .* scale the data"):
        clf.predict_proba(X * 1e39)
    with pytest.raises(ValueError, match=r"^X: the network's outputs overflow float32"):
        clf.predict(np.full((2, 4), 3e38))
    with pytest.raises(ValueError, match=r"^y: values up to 7.9e\+19 .* the square root of "
                                         r"float32's largest number 1.845e\+19"):
        MLPRegressor((4,), max_iter=2).fit(X, X[:, 0] * 1e19)
    for name in ("early_stopping", "verbose"):
        with pytest.raises(ValueError, match=f"^{name}: expected a bool \\(True or False\\), "
                                             f"got 'yes'."):
            MLPClassifier((4,), max_iter=2, **{name: "yes"}).fit(X, y)
    MLPClassifier((4,), max_iter=2, early_stopping=np.bool_(False)).fit(X, y)
