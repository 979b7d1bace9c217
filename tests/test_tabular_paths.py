"""jaxmlp.data.tabular's refusals on small tables written here (each names the argument, what
was expected and what was given): targets given as lists, empty names or twice, several
targets that are neither numbers nor 0/1, one class, categorical columns that are targets or
absent, tables too small to split, a column with nothing to impute from, new rows with gaps or
text where training had numbers, damaged preprocessing records, .npz arrays that are not
columns, missing pandas / pyarrow. Host-only: nothing is compiled."""

import sys

import numpy as np
import pytest

from jaxmlp.data import tabular

pd = pytest.importorskip("pandas")


def _csv(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def table(tmp_path):
    return _csv(tmp_path, "a,b,c,y\n" + "".join(
        f"{i % 3},{i * 0.5},{'xy'[i % 2]},{'pq'[i % 2]}\n" for i in range(10)))


@pytest.mark.parametrize("target, exc, message", [
    (["y"], None, None),
    ([" y "], None, None),
    (3, TypeError, "target: expected a column name or a list of names, got 3"),
    (["y", 4], TypeError, r"target: expected a column name or a list of names, got \['y', 4\]"),
    ("a,,y", ValueError, "target: expected column names separated by commas, got 'a,,y'"),
    (["y", "y"], ValueError, r"target: a column is named twice in \['y', 'y'\]"),
])
def test_target_as_a_list_and_its_refusals(table, target, exc, message):
    if exc is None:
        data, prep = tabular.load_table(table, target)
        assert prep.target_columns == ("y",) and prep.class_names == ("p", "q")
        assert prep.feature_columns == ("a", "b", "c") and prep.categories == {"c": ["x", "y"]}
        return
    with pytest.raises(exc, match=message):
        tabular.load_table(table, target)


def test_several_targets_multilabel_from_booleans_or_refused_for_text(tmp_path):
    path = _csv(tmp_path, "a,u,v\n" + "".join(f"{i},{i % 2 == 0},{i % 3 == 0}\n" for i in range(10)))
    data, prep = tabular.load_table(path, "u,v")
    assert prep.task == "multilabel" and prep.task_reason == "2 target columns of 0/1 values"
    assert data.cost == "multilabel_cross_entropy"
    path = _csv(tmp_path, "a,u,v\n" + "".join(f"{i},{i},{'st'[i % 2]}\n" for i in range(10)))
    with pytest.raises(ValueError, match=r"task: cannot infer it: several target columns need "
                                         r"numbers \(regression\) or 0/1 values \(multilabel\), "
                                         r"but 'v' holds (object|str) values"):
        tabular.load_table(path, ["u", "v"])


def test_one_class_and_categorical_refusals(table, tmp_path):
    path = _csv(tmp_path, "a,y\n" + "".join(f"{i},same\n" for i in range(5)), "one.csv")
    with pytest.raises(ValueError, match=r"task: classification needs at least 2 classes, but "
                                         r"target 'y' holds 1 distinct value\(s\)"):
        tabular.load_table(path, "y")
    with pytest.raises(TypeError, match=r"categorical: expected feature column names, got \['a', 3\]"):
        tabular.load_table(table, "y", categorical=["a", 3])
    with pytest.raises(ValueError, match="categorical: 'y' is a target column; name feature columns"):
        tabular.load_table(table, "y", categorical="a,y")
    with pytest.raises(ValueError, match=r"categorical: column 'z' is not in the table; its feature "
                                         r"columns are \['a', 'b', 'c'\]"):
        tabular.load_table(table, "y", categorical=["z"])
    data, prep = tabular.load_table(table, "y", categorical="a")  # codes 0, 1, 2 one-hot
    assert prep.categories["a"] == ["0", "1", "2"] and prep.n_inputs == 3 + 1 + 2


def test_tables_too_small_to_split(tmp_path):
    one = _csv(tmp_path, "a,t\n1.0,2.5\n", "one.csv")
    with pytest.raises(ValueError, match=r"data: '.*one.csv' has 1 row\(s\); a train/test split "
                                         r"needs at least 2"):
        tabular.load_table(one, "t", task="regression")
    two = _csv(tmp_path, "a,t\n1.0,2.5\n2.0,3.5\n", "two.csv")
    with pytest.raises(ValueError, match=r"data: 2 rows leave an empty train or test split with "
                                         r"test_fraction=0.2"):
        tabular.load_table(two, "t", task="regression")
    empty = _csv(tmp_path, "a,t\n", "empty.csv")
    with pytest.raises(ValueError, match=r"data: '.*empty.csv' holds 0 rows and 2 columns; "
                                         r"expected a table with a header and at least one row"):
        tabular.read_table(empty)


def test_impute_needs_a_value_in_the_train_split(tmp_path):
    path = _csv(tmp_path, "a,b,t\n" + "".join(f"{i},,{i * 1.5}\n" for i in range(10)))
    with pytest.raises(ValueError, match=r"impute: feature column 'b' has no value in the train "
                                         r"split to compute its median from"):
        tabular.load_table(path, "t", task="regression", impute="median")


def test_new_rows_refused_for_gaps_and_text_in_a_numeric_column(table):
    data, prep = tabular.load_table(table, "y")
    rows = pd.DataFrame({"a": [1.0, np.nan], "b": [0.5, 1.0], "c": ["x", "y"]})
    with pytest.raises(tabular.MissingValuesError, match="'a'"):
        tabular.transform(prep, rows)
    rows = pd.DataFrame({"a": ["2.5", "two", " 3"], "b": [0.5, 1.0, 2.0], "c": ["x", "y", "x"]})
    with pytest.raises(ValueError, match=r"data: feature column 'a' was numeric in training but "
                                         r"holds 1 cell\(s\) that are not numbers: row 1 holds "
                                         r"'two' \(rows counted from 0\)"):
        tabular.transform(prep, rows)
    # numbers given as text (rows of strings) are read as the numbers they are
    as_text = tabular.transform(prep, rows.assign(a=["2.5", "4", " 3"]))
    np.testing.assert_array_equal(as_text, tabular.transform(prep, rows.assign(a=[2.5, 4.0, 3.0])))
    with pytest.raises(TypeError, match="prep: expected a jaxmlp.data.tabular.Preprocessing, got dict"):
        tabular.transform(prep.to_dict(), rows)
    with pytest.raises(TypeError, match="frame: expected a pandas DataFrame, got ndarray"):
        tabular.transform(prep, np.zeros((2, 3)))
    # classification outputs are not mapped back: the identity
    Y = np.array([[0.25, 0.75]])
    assert np.array_equal(tabular.inverse_target(prep, Y), Y)
    good = pd.DataFrame({"c": ["y"], "b": [2.0], "a": [1.0]})
    want = (np.array([1.0, 2.0, 0.0, 1.0]) - prep.feature_mean) / prep.feature_std
    assert np.allclose(tabular.transform(prep, good, dtype=np.float64)[:, 0], want, rtol=1e-15)


@pytest.mark.parametrize("record, message", [
    ([1, 2], "preprocessing: expected a dict, got list"),
    ("task", "preprocessing: expected a dict, got str"),
    ({"task": "ranking"}, r"preprocessing: missing \["),
])
def test_preprocessing_records_refused(table, record, message):
    with pytest.raises(ValueError, match=message):
        tabular.Preprocessing.from_dict(record)


def test_preprocessing_record_with_a_wrong_task_or_lengths(table):
    d = tabular.load_table(table, "y")[1].to_dict()
    assert tabular.Preprocessing.from_dict(d) == tabular.load_table(table, "y")[1]
    with pytest.raises(ValueError, match=r"preprocessing.task: expected one of \['classification', "
                                         r"'multilabel', 'regression'\], got 'ranking'"):
        tabular.Preprocessing.from_dict({**d, "task": "ranking"})
    with pytest.raises(ValueError, match="preprocessing: 4 feature names but 3 means and 4 "
                                         "standard deviations"):
        tabular.Preprocessing.from_dict({**d, "feature_mean": d["feature_mean"][:3]})
    with pytest.raises(ValueError, match=r"name: expected one of \[.*\], got 'mnist'"):
        tabular.bundled_preprocessing("mnist")


def test_npz_arrays_that_are_not_columns(tmp_path):
    np.savez(tmp_path / "cube.npz", x=np.zeros((2, 2, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"data: array 'x' of '.*cube.npz' has shape \(2, 2, 2\); "
                                         r"expected 1-D columns or 2-D \(rows, columns\) arrays"):
        tabular.read_table(tmp_path / "cube.npz")
    np.savez(tmp_path / "ragged.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match=r"data: the arrays of '.*ragged.npz' have different "
                                         r"numbers of rows: 'x' has shape \(3, 2\), 'y' has 4 rows\."):
        tabular.read_table(tmp_path / "ragged.npz")
    np.savez(tmp_path / "ok.npz", x=np.arange(6.0).reshape(3, 2), y=np.ones(3))
    frame = tabular.read_table(tmp_path / "ok.npz")
    assert list(frame.columns) == ["x[0]", "x[1]", "y"] and frame["x[1]"].tolist() == [1.0, 3.0, 5.0]


def test_missing_pandas_and_pyarrow_said_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ValueError, match=r"data: reading Parquet needs pyarrow \(pip install "
                                         r"'jaxmlp\[experiments\]'\)"):
        tabular.read_table(tmp_path / "t.parquet")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ValueError, match=r"data: reading tables needs pandas \(pip install "
                                         r"'jaxmlp\[experiments\]'\)"):
        tabular.pandas_module()


def test_classification_of_a_quantity_and_of_ids_is_refused_with_the_reason(tmp_path):
    """task='classification' on more than 20 distinct non-integer numbers names them (a
    few float labels stay classes: test_export_model); a text target with a value
    per row (ids) leaves a stratified split empty, and the error says which target and why."""
    rows = "".join(f"{i},{i * 0.37:.2f}\n" for i in range(30))
    path = _csv(tmp_path, "a,t\n" + rows)
    with pytest.raises(ValueError, match=r"task: classification needs class labels, but target "
                                         r"'t' holds non-integer numbers such as \[0.37, 0.74, "
                                         r"1.11\] \(30 distinct values, more than 20\)"):
        tabular.load_table(path, "t", task="classification")
    ids = _csv(tmp_path, "a,t\n" + "".join(f"{i},r{i}\n" for i in range(30)), "ids.csv")
    with pytest.raises(ValueError, match=r"data: 30 rows leave an empty train or test split with "
                                         r"test_fraction=0.2 \(a split stratified by the 30 "
                                         r"classes of target 't', 30 of them with a single row"):
        tabular.load_table(ids, "t")
