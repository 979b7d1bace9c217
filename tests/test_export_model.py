"""jaxmlp.load_model -> Model in one process: predict / predict_proba on DataFrames and
batch-first arrays against a NumPy forward pass and the preprocessing written out by hand
(classification with a categorical column, binary, multilabel, regression in the target's
units, an ensemble's average), and the refusals of export.save / load / load_model (argument
named, expected vs given): damaged headers, a missing or wrong digest, float64 without 64-bit
mode, files that are not exports, no safetensors package."""

import json
import sys

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp.data import export
from jaxmlp.data.tabular import Preprocessing

pd = pytest.importorskip("pandas")

RNG = np.random.default_rng(7)


def _params(sizes, K=None):
    lead = () if K is None else (K,)
    return [{"W": RNG.normal(size=lead + (n, n_prev)), "b": RNG.normal(size=lead + (n,))}
            for n_prev, n in zip(sizes[:-1], sizes[1:])]


def _forward(params, acts, X):
    """A[L] (n[L], m) of (F1)-(F2) in NumPy, X (n[0], m)."""
    A = X
    for layer, g in zip(params, acts):
        Z = np.asarray(layer["W"]) @ A + np.asarray(layer["b"])[:, None]
        if g == "tanh":
            A = np.tanh(Z)
        elif g == "sigmoid":
            A = 1 / (1 + np.exp(-Z))
        elif g == "softmax":
            E = np.exp(Z - Z.max(axis=0))
            A = E / E.sum(axis=0)
        else:
            assert g == "linear"
            A = Z
    return A


# ----------------------------------------------------------------------------- classification

CLS_NET = jaxmlp.Network((4, 5, 3), ("tanh", "softmax"), "categorical_cross_entropy")
CLS_PREP = Preprocessing(
    task="classification", feature_columns=("x1", "color", "x2"),
    categories={"color": ["blue", "red"]},
    feature_names=("x1", "color=blue", "color=red", "x2"),
    feature_mean=(1.0, 0.5, 0.5, -2.0), feature_std=(2.0, 0.5, 0.5, 4.0),
    target_columns=("y",), class_names=("ant", "bee", "cat"))
ROWS = pd.DataFrame({"x2": [3.0, -1.0, 0.5, 8.0], "y": ["?"] * 4,  # any order, target ignored
                     "color": ["red", "blue", "blue", "red"], "x1": [0.0, 2.5, -3.0, 1.0]})


def _cls_inputs(rows):
    """X (4, m) by hand: x1, one-hot color (blue, red), x2; standardised."""
    F = np.stack([rows["x1"], rows["color"] == "blue", rows["color"] == "red", rows["x2"]], 1)
    return ((F.astype(float) - CLS_PREP.feature_mean) / CLS_PREP.feature_std).T


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    params = _params(CLS_NET.sizes)
    export.save(folder / "model.npz", params, CLS_NET,
                metadata={"preprocessing": CLS_PREP.to_dict(), "epochs": 3})
    return folder, params


def test_classification_model_from_a_run_folder(cls):
    folder, params = cls
    model = jaxmlp.load_model(folder)  # the folder: its model.npz
    assert repr(model) == "Model(classification, network 4-5-3)"
    assert model.task == "classification" and model.ensemble is None
    assert list(model.classes_) == ["ant", "bee", "cat"] and model.metadata["epochs"] == 3
    want = _forward(params, CLS_NET.activations, _cls_inputs(ROWS)).T
    proba = model.predict_proba(ROWS)
    assert proba.shape == (4, 3) and np.allclose(proba, want, rtol=1e-12, atol=0)
    assert list(model.predict(ROWS)) == [CLS_PREP.class_names[i] for i in want.argmax(1)]
    # the same rows as a batch-first array of the feature columns in training order
    A = ROWS[["x1", "color", "x2"]].to_numpy(dtype=object)
    assert np.allclose(model.predict_proba(A), want, rtol=1e-12, atol=0)
    assert np.array_equal(model.predict(A), model.predict(ROWS))
    # and as a plain Python list of rows, text beside numbers
    assert np.allclose(model.predict_proba(A.tolist()), want, rtol=1e-12, atol=0)
    for empty in (ROWS.iloc[:0], [], A[:0]):
        with pytest.raises(ValueError, match=r"^X: expected at least one row to predict, got "
                                             r"none \(0 rows\)\.$"):
            model.predict(empty)


def test_a_list_of_rows_with_a_missing_number_is_imputed(cls):
    """A Python list mixing text and numbers, with NaN for a missing number, in a model
    trained with impute: the cell is filled as in a DataFrame (not read as the text 'nan')."""
    _, params = cls
    prep = CLS_PREP._replace(impute="mean", impute_values={"x1": 1.0, "x2": -2.0})
    model = export.Model(CLS_NET, params, {"preprocessing": prep.to_dict()})
    rows = [[float("nan"), "red", 3.0], [2.5, "blue", float("nan")]]
    filled = pd.DataFrame({"x1": [1.0, 2.5], "color": ["red", "blue"], "x2": [3.0, -2.0]})
    want = _forward(params, CLS_NET.activations, _cls_inputs(filled)).T
    assert np.allclose(model.predict_proba(rows), want, rtol=1e-12, atol=0)


def test_classification_model_refuses_other_shapes_and_columns(cls):
    model = jaxmlp.load_model(cls[0] / "model.npz")
    with pytest.raises(ValueError, match=r"X: expected a DataFrame or an array \(n_samples, 3\) "
                                         r"of the feature columns \['x1', 'color', 'x2'\], got "
                                         r"shape \(4, 4\)"):
        model.predict(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="got shape \\(3,\\)"):
        model.predict_proba(np.zeros(3))

    with pytest.raises(ValueError, match=r"data: its columns differ from the training data's: "
                                         r"missing \['x2'\]"):
        model.predict(ROWS.drop(columns="x2"))
    with pytest.raises(ValueError, match=r"column 'color' holds \['green'\]"):
        model.predict(ROWS.assign(color=["green", "red", "red", "red"]))


def test_values_beyond_a_float32_networks_range_are_refused(tmp_path, cls):
    """A float32 model refuses a feature too large for float32 (not a NaN probability and
    class 0), whatever the precision the preprocessing computes in."""
    p32 = [{k: np.asarray(v, np.float32) for k, v in layer.items()} for layer in cls[1]]
    export.save(tmp_path / "m32.npz", p32, CLS_NET, metadata={"preprocessing": CLS_PREP.to_dict()})
    model = jaxmlp.load_model(tmp_path / "m32.npz")
    with pytest.raises(ValueError, match=r"data: feature column 'x1' holds 1e\+39 \(row 1, "
                                         r"counting from 0\), too large to standardise: "
                                         r"expected \|values\| <= 3.4e\+38 \(float32 network"):
        model.predict(ROWS.assign(x1=[0.0, 1e39, 0.0, 0.0]))
    assert model.predict_proba(ROWS).dtype == np.float64  # within range: served


def test_load_model_refuses_what_holds_no_model(tmp_path, cls):
    with pytest.raises(ValueError, match=r"path: the folder .* holds no model.npz \(train.py "
                                         "writes it when a run completes\\)"):
        jaxmlp.load_model(tmp_path)
    with pytest.raises(TypeError, match="path: expected a folder or file path, got int"):
        jaxmlp.load_model(3)
    with pytest.raises(FileNotFoundError, match=r"path: '.*runs/typo' does not exist"):
        jaxmlp.load_model(tmp_path / "runs" / "typo")
    # preprocessing that does not fit the network: named as damaged metadata
    prep = CLS_PREP._replace(feature_names=("x1", "x2", "x3"), feature_mean=(0.0,) * 3,
                             feature_std=(1.0,) * 3)
    export.save(tmp_path / "m.npz", cls[1], CLS_NET, metadata={"preprocessing": prep.to_dict()})
    with pytest.raises(ValueError, match=r"path: .*m.npz': damaged preprocessing metadata "
                                         r"\(metadata: the preprocessing gives 3 inputs, the "
                                         r"network takes n\[0\] = 4.\)"):
        jaxmlp.load_model(tmp_path / "m.npz")
    export.save(tmp_path / "n.npz", cls[1], CLS_NET, metadata={"preprocessing": {"task": "x"}})
    with pytest.raises(ValueError, match="damaged preprocessing metadata .*preprocessing: missing"):
        jaxmlp.load_model(tmp_path / "n.npz")


# ----------------------------------------------------------------------------- other tasks


def test_binary_model_without_preprocessing(tmp_path):
    net = jaxmlp.Network((2, 1), ("sigmoid",), "binary_cross_entropy")
    params = _params(net.sizes)
    export.save(tmp_path / "b.safetensors", params, net)
    model = jaxmlp.load_model(tmp_path / "b.safetensors")
    assert model.preprocessing is None and model.task == "classification"
    assert list(model.classes_) == [0, 1]
    X = RNG.normal(size=(5, 2))
    p = _forward(params, net.activations, X.T)[0]
    proba = model.predict_proba(X)
    assert proba.shape == (5, 2) and np.allclose(proba, np.stack([1 - p, p], 1), rtol=1e-12)
    assert np.array_equal(model.predict(X), (p > 0.5).astype(int))
    with pytest.raises(ValueError, match=r"X: expected an array \(n_samples, 2\), got shape \(5, 3\)"):
        model.predict(np.zeros((5, 3)))


def test_multilabel_model_thresholds_each_label(tmp_path):
    net = jaxmlp.Network((3, 2), ("sigmoid",), "multilabel_cross_entropy")
    params = _params(net.sizes)
    export.save(tmp_path / "m.npz", params, net)
    model = jaxmlp.load_model(tmp_path / "m.npz")
    assert model.task == "multilabel" and model.classes_ is None
    X = RNG.normal(size=(6, 3)) * 3
    P = _forward(params, net.activations, X.T).T
    assert np.allclose(model.predict_proba(X), P, rtol=1e-12)
    got = model.predict(X)
    assert got.dtype == np.int64 and np.array_equal(got, (P >= 0.5).astype(np.int64))


def test_regression_in_the_targets_units(tmp_path):
    net = jaxmlp.Network((2, 4, 2), ("tanh", "linear"), "mean_squared_error")
    params = _params(net.sizes)
    prep = Preprocessing(
        task="regression", feature_columns=("a", "b"), categories={}, feature_names=("a", "b"),
        feature_mean=(10.0, -1.0), feature_std=(5.0, 0.5), target_columns=("t1", "t2"),
        class_names=(), target_mean=(100.0, -3.0), target_std=(20.0, 0.1))
    export.save(tmp_path / "r.npz", params, net, metadata={"preprocessing": prep.to_dict()})
    model = jaxmlp.load_model(tmp_path / "r.npz")
    assert model.task == "regression" and model.classes_ is None
    rows = pd.DataFrame({"b": [-1.5, 0.0, 2.0], "a": [10.0, 3.0, 22.0]})
    X = ((rows[["a", "b"]].to_numpy() - [10.0, -1.0]) / [5.0, 0.5]).T
    Y = _forward(params, net.activations, X).T * [20.0, 0.1] + [100.0, -3.0]
    assert np.allclose(model.predict(rows), Y, rtol=1e-12)
    with pytest.raises(ValueError, match="predict_proba: a regression model has no class "
                                         "probabilities; use predict"):
        model.predict_proba(rows)
    # one target, no preprocessing: (n_samples,), the network's output itself
    net1 = jaxmlp.Network((2, 1), ("linear",), "mean_squared_error")
    p1 = _params(net1.sizes)
    export.save(tmp_path / "r1.npz", p1, net1)
    m1 = jaxmlp.load_model(tmp_path / "r1.npz")
    X1 = RNG.normal(size=(4, 2))
    got = m1.predict(X1)
    assert got.shape == (4,) and np.allclose(got, _forward(p1, ("linear",), X1.T)[0], rtol=1e-12)


# ----------------------------------------------------------------------------- ensembles


def test_ensemble_saved_whole_and_averaged(tmp_path):
    K = 3
    params = _params(CLS_NET.sizes, K)
    export.save(tmp_path / "e.npz", params, CLS_NET, ensemble=K,
                metadata={"preprocessing": CLS_PREP.to_dict()})
    net, back, meta = export.load(tmp_path / "e.npz")
    assert net == CLS_NET and meta["ensemble"] == K
    assert all(np.array_equal(np.asarray(a), b) for a, b in
               zip(jax.tree.leaves(back), jax.tree.leaves(params)))
    model = jaxmlp.load_model(tmp_path / "e.npz")
    assert model.ensemble == K and repr(model) == "Model(classification, network 4-5-3, ensemble of 3)"
    X = _cls_inputs(ROWS)
    want = np.mean([_forward([{n: a[k] for n, a in layer.items()} for layer in params],
                             CLS_NET.activations, X) for k in range(K)], axis=0).T
    assert np.allclose(model.predict_proba(ROWS), want, rtol=1e-12)


def test_ensemble_save_refuses_params_that_are_not_k_members(tmp_path):
    single = _params(CLS_NET.sizes)
    for params, K in ((_params(CLS_NET.sizes, 4), 3), (_params(CLS_NET.sizes, 2), 3)):
        with pytest.raises(ValueError, match=rf"params: expected {K} members stacked along axis 0 "
                                             rf"\(ensemble={K}\)"):
            export.save(tmp_path / "e.npz", params, CLS_NET, ensemble=K)
    with pytest.raises(ValueError, match="params: expected ensemble parameters stacked"):
        export.save(tmp_path / "e.npz", [{"W": single[0]["W"], "b": single[0]["b"]},
                                         single[1]], CLS_NET, ensemble=2)
    with pytest.raises(ValueError, match="ensemble: expected a positive integer"):
        export.save(tmp_path / "e.npz", single, CLS_NET, ensemble=0)
    assert not (tmp_path / "e.npz").exists()


# ----------------------------------------------------------------------------- damaged files


def _rewrite(src, dst, edit_header=None, drop=None):
    """Copy of the .npz ``src`` with its header edited (digest left as it was)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = dict(z)
    header = json.loads(str(arrays.pop("__jaxmlp__")))
    if edit_header:
        edit_header(header)
    if drop:
        arrays.pop(drop)
    np.savez(dst, **arrays, __jaxmlp__=np.array(json.dumps(header)))
    return dst


def test_damaged_headers_refused_naming_the_file(tmp_path, cls):
    src = cls[0] / "model.npz"
    cases = [
        (lambda h: h.update(format_version=2), r"has format version 2; this jaxmlp reads version 1"),
        (lambda h: h.update(ensemble=0), r"the network description is damaged .*ensemble 0 is not "
                                         r"a positive integer"),
        (lambda h: h.pop("network"), r"the network description is damaged \(KeyError\('network'\)\)"),
        (lambda h: h["network"].update(activations=["tanh", "mish2"]),
         r"describes a network this process cannot build: .*mish2.*\(register it first with "
         r"jaxmlp.register_activation; predict.py: --register FILE.py\)"),
        (lambda h: h["metadata"].update(epochs=4), r"its arrays or metadata do not match the digest "
                                                   r"recorded when it was written \(sha256\): the "
                                                   r"file is damaged"),
        (lambda h: h.pop("sha256"), r"carries no digest \(written before exports had one\); load "
                                    r"it with verify=False if you trust it"),
    ]
    for i, (edit, message) in enumerate(cases):
        path = _rewrite(src, tmp_path / f"d{i}.npz", edit)
        with pytest.raises(ValueError, match=rf"path: '{path}'.*{message}"):
            export.load(path)
    # verify=False reads a file without a digest, unchanged
    net, params, meta = export.load(tmp_path / f"d{len(cases) - 1}.npz", verify=False)
    assert net == CLS_NET and np.array_equal(np.asarray(params[1]["W"]), cls[1][1]["W"])
    path = _rewrite(src, tmp_path / "few.npz", drop="b[2]")
    with pytest.raises(ValueError, match=r"holds arrays \['W\[1\]', 'W\[2\]', 'b\[1\]'\], expected "
                                         r"\['W\[1\]', 'W\[2\]', 'b\[1\]', 'b\[2\]'\] for sizes "
                                         r"\(4, 5, 3\)"):
        export.load(path)


def test_float64_needs_64_bit_mode(cls):
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match=r"holds float64 parameters; turn on 64-bit mode first"):
            export.load(cls[0] / "model.npz")


def test_safetensors_that_is_not_an_export_and_no_package(tmp_path, monkeypatch, cls):
    import safetensors.numpy as stn

    stn.save_file({"W": np.ones((2, 2))}, str(tmp_path / "x.safetensors"), metadata={"a": "b"})
    with pytest.raises(ValueError, match=r"path: '.*x.safetensors' is a .safetensors file but not "
                                         r"a jaxmlp export \(no 'jaxmlp' entry in its metadata\)"):
        export.load(tmp_path / "x.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # as if not installed
    with pytest.raises(ValueError, match=r"path: .safetensors files need the safetensors package "
                                         r"\(pip install 'jaxmlp\[export\]'"):
        export.save(tmp_path / "y.safetensors", cls[1], CLS_NET)
    assert not (tmp_path / "y.safetensors").exists()


def test_save_and_load_refuse_bad_arguments(tmp_path, cls):
    params = cls[1]
    with pytest.raises(TypeError, match="path: expected a file path, got int"):
        export.save(5, params, CLS_NET)
    with pytest.raises(TypeError, match="path: expected a file path, got NoneType"):
        export.load(None)
    with pytest.raises(TypeError, match="metadata: expected a dict or None, got list"):
        export.save(tmp_path / "m.npz", params, CLS_NET, metadata=["a"])
    with pytest.raises(ValueError, match="metadata: expected a JSON-serialisable dict"):
        export.save(tmp_path / "m.npz", params, CLS_NET, metadata={"x": np.float32(1)})
    bad = [dict(layer) for layer in params]
    bad[1] = {"W": np.full_like(params[1]["W"], np.nan), "b": params[1]["b"]}
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\] \(layer 2\): holds non-finite values"):
        export.save(tmp_path / "m.npz", bad, CLS_NET)
    assert list(tmp_path.iterdir()) == []  # nothing written by a refused save


@pytest.mark.parametrize("y", [np.array([3, 7, 3, 9, 7, 9] * 3), np.array([0.5, 2.0] * 9),
                               np.array([True, False, False] * 6), np.array(["b", "a", "c"] * 6)],
                         ids=["int", "float", "bool", "text"])
def test_predicted_classes_keep_the_target_columns_type(tmp_path, y):
    """A table whose class column holds ints (floats, bools) predicts ints (floats, bools), as
    scikit-learn's classes_ do; text classes stay text. The classes as the column holds them
    are stored with the preprocessing (class_values) and survive save -> load_model."""
    from jaxmlp.data import tabular

    frame = pd.DataFrame({"x1": RNG.normal(size=len(y)), "x2": RNG.normal(size=len(y)), "y": y})
    frame.to_csv(tmp_path / "t.csv", index=False)
    data, prep = tabular.load_table(tmp_path / "t.csv", target="y", task="classification")
    net = jaxmlp.Network((data.n_inputs, 3, data.n_outputs), ("tanh", data.output_activation),
                         data.cost)
    export.save(tmp_path / "model.npz", _params(net.sizes), net,
                metadata={"preprocessing": json.loads(json.dumps(prep.to_dict()))})
    model = jaxmlp.load_model(tmp_path / "model.npz")
    want = np.unique(y)
    np.testing.assert_array_equal(model.classes_, want)
    predicted = model.predict(frame.drop(columns="y"))
    assert predicted.dtype.kind == want.dtype.kind or (want.dtype.kind == "U" and predicted.dtype == object)
    assert set(predicted.tolist()) <= set(want.tolist())
    # a record of an earlier version (no class_values) still loads, with text class names
    old = {k: v for k, v in prep.to_dict().items() if k != "class_values"}
    export.save(tmp_path / "old.npz", _params(net.sizes), net, metadata={"preprocessing": old})
    assert list(jaxmlp.load_model(tmp_path / "old.npz").classes_) == [str(c) for c in want]


def test_load_model_refuses_a_model_left_by_another_run(tmp_path, cls):
    """A run folder's model.npz must be the one its results.json records (final_params_sha256);
    another run's model copied in is refused naming both digests, as predict.py does."""
    from jaxmlp.train.checkpoint import params_digest

    run = tmp_path / "run"
    run.mkdir()
    export.save(run / "model.npz", cls[1], CLS_NET, metadata={"preprocessing": CLS_PREP.to_dict()})
    (run / "results.json").write_text(json.dumps({"status": "completed",
                                                  "final_params_sha256": params_digest(cls[1])}))
    assert jaxmlp.load_model(run).predict(ROWS).shape == (4,)
    (run / "results.json").write_text(json.dumps({"status": "completed",
                                                  "final_params_sha256": "ab" * 32}))
    with pytest.raises(ValueError, match=r"path: .*model.npz is not the model of the run whose "
                                         r"results.json is beside it \(status 'completed'; "
                                         r"params sha256 [0-9a-f]{16}\.\.\. in the model, "
                                         r"abababababababab\.\.\. in results.json\)"):
        jaxmlp.load_model(run)
    # a copy under another name beside it is an export, not the run's model: it loads
    (run / "backup.npz").write_bytes((run / "model.npz").read_bytes())
    assert jaxmlp.load_model(run / "backup.npz").predict(ROWS).shape == (4,)
    # predict.py checks the run's model.npz named as a file as it checks the folder
    from helpers import load_script

    predict_cli = load_script("predict", "predict_cli")
    ROWS.to_csv(tmp_path / "new.csv", index=False)
    for source in (run, run / "model.npz"):
        assert predict_cli.main(["--checkpoint", str(source), "--data", str(tmp_path / "new.csv"),
                                 "--out", str(tmp_path / "p.csv")]) == 2
        assert not (tmp_path / "p.csv").exists()
    assert predict_cli.main(["--checkpoint", str(run / "backup.npz"), "--data",
                             str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")]) == 0


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_bundled_dataset_models_predict_scikit_learns_integer_targets(tmp_path, name):
    """A model of a bundled dataset (train.py --dataset: bundled_preprocessing) predicts the
    classes as scikit-learn's target holds them, ints that compare equal to it; a record
    written before the integer classes were stored (class_values None, with the dataset
    named in its metadata or its checkpoint's config) predicts the same ints, while a table
    of another name keeps its text classes. The network is the least-squares linear
    classifier W = argmin ||W X + b - T||^2 on the standardised train split."""
    from jaxmlp.data import datasets, tabular

    data = datasets.load(name, dtype=np.float64)
    prep = tabular.bundled_preprocessing(name)
    n0, nL = data.n_inputs, data.n_outputs
    T = 2 * data.Y_train - 1  # +-1 targets: the sign (sigmoid) or the argmax (softmax) classifies
    A = np.vstack([data.X_train, np.ones(data.X_train.shape[1])]).T
    Wb = np.linalg.lstsq(A, T.T, rcond=None)[0].T
    params = [{"W": Wb[:, :n0], "b": Wb[:, n0]}]
    g_L = data.output_activation
    net = jaxmlp.Network((n0, nL), (g_L,), data.cost)
    X_raw, y = datasets._read_sklearn_files(name)
    rows = pd.DataFrame(X_raw, columns=datasets.feature_names(name))
    Z = Wb[:, :n0] @ ((X_raw - data.feature_mean) / data.feature_std).T + Wb[:, n0:]
    want = np.argmax(Z, axis=0) if nL > 1 else (Z[0] > 0).astype(int)  # class index = value

    def model_of(metadata):
        export.save(tmp_path / "m.npz", [{k: v.astype(np.float32) for k, v in p.items()}
                                         for p in params], net, metadata=metadata)
        return jaxmlp.load_model(tmp_path / "m.npz")

    model = model_of({"preprocessing": prep.to_dict(), "dataset": name})
    predicted = model.predict(rows)
    assert model.classes_.tolist() == list(range(len(prep.class_names)))
    assert predicted.dtype.kind == "i" and np.array_equal(predicted, want)
    assert np.mean(predicted == y) > 0.9  # labels compare equal to scikit-learn's targets
    old = {**prep.to_dict(), "class_values": None}
    for meta in ({"dataset": name}, {"config": {"dataset": name, "data": None}}):
        m = model_of({"preprocessing": old, **meta})
        assert m.predict(rows[:20]).tolist() == want[:20].tolist()
    renamed = {**old, "feature_columns": [f"x{j}" for j in range(n0)],
               "feature_names": [f"x{j}" for j in range(n0)]}
    m = model_of({"preprocessing": renamed, "dataset": name})  # an own table named so
    assert m.classes_.tolist() == list(prep.class_names)
