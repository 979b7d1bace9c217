"""jaxmlp.data.tabular: CSV / Parquet / .npz tables, task inference, one-hot, missing values, errors."""

import numpy as np
import pandas as pd
import pytest

from jaxmlp.data import datasets
from jaxmlp.data import tabular


def _digits_frame():
    X, y = datasets._read_sklearn_files("digits")
    frame = pd.DataFrame(X, columns=[f"p{i}" for i in range(64)])
    frame["digit"] = y
    return frame


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".npz"])
def test_digits_as_a_file_gives_the_bundled_dataset_bit_for_bit(tmp_path, ext):
    """Same split (stratified, seed), same standardisation, same Y as datasets.load."""
    frame = _digits_frame()
    path = tmp_path / f"digits{ext}"
    if ext == ".csv":
        frame.to_csv(path, index=False)
    elif ext == ".parquet":
        frame.to_parquet(path)
    else:
        np.savez(path, pixels=frame.iloc[:, :64].to_numpy(), digit=frame["digit"].to_numpy())
    data, prep = tabular.load_table(path, "digit", "classification", seed=3)
    ref = datasets.load("digits", seed=3)
    for k in ("X_train", "Y_train", "X_test", "Y_test", "feature_mean", "feature_std"):
        assert np.array_equal(getattr(data, k), getattr(ref, k)), k
    assert (data.cost, data.output_activation) == (ref.cost, ref.output_activation)
    assert prep.class_names == tuple(str(k) for k in range(10)) and prep.n_inputs == 64
    assert data.name == "digits"


def _mixed(m=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "size": rng.normal(10, 3, m),
        "colour": rng.choice(["red", "green", "blue"], m),
        "flag": rng.random(m) > 0.5,
        "kind": rng.choice(["cat", "dog"], m),
        "price": rng.normal(100, 20, m),
        "a": rng.integers(0, 2, m), "b": rng.integers(0, 2, m),
    })


def test_task_inference_and_the_reason_given():
    f = _mixed()
    assert tabular.infer_task(f, ["kind"])[0] == "classification"
    assert tabular.infer_task(f, ["flag"])[0] == "classification"
    assert tabular.infer_task(f, ["price"])[0] == "regression"
    assert tabular.infer_task(f, ["a", "b"])[0] == "multilabel"
    assert tabular.infer_task(f, ["price", "size"])[0] == "regression"
    assert tabular.infer_task(f, ["a"]) == (
        "classification", "target 'a' holds 2 distinct integer values, at most 20: classes")


@pytest.mark.parametrize("n_values, task", [(3, "classification"), (20, "classification"),
                                            (21, "regression"), (214, "regression")])
def test_integer_targets_follow_the_type_of_target_rule(n_values, task):
    """Few distinct integers are classes (scikit-learn's 'binary'/'multiclass'); many (like
    diabetes' 214) are a quantity; the reason names the count."""
    m = 424
    f = pd.DataFrame({"x": np.linspace(0, 1, m), "y": np.arange(m) % n_values + 25})
    got, why = tabular.infer_task(f, ["y"])
    assert got == task and f"holds {n_values} distinct integer values" in why
    if n_values <= 20:
        from sklearn.utils.multiclass import type_of_target

        assert type_of_target(f["y"].to_numpy()) in ("binary", "multiclass")


def test_categorical_columns_are_one_hot_with_train_statistics(tmp_path):
    f = _mixed()
    f.to_csv(tmp_path / "t.csv", index=False)
    data, prep = tabular.load_table(tmp_path / "t.csv", "kind", seed=1)
    assert prep.task == "classification" and data.cost == "binary_cross_entropy"
    assert prep.class_names == ("cat", "dog") and data.target_names == ("dog",)
    assert prep.categories == {"colour": ["blue", "green", "red"]}
    assert prep.feature_names == ("size", "colour=blue", "colour=green", "colour=red", "flag",
                                  "price", "a", "b")
    # undo the standardisation: the one-hot block is 0/1 with exactly one 1 per row
    X = data.X_train.astype(np.float64).T * np.asarray(prep.feature_std) + np.asarray(prep.feature_mean)
    np.testing.assert_allclose(X[:, 1:4].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.sort(np.unique(np.round(X[:, 1:4], 4))), [0.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(data.X_train.mean(axis=1), 0.0, atol=1e-5)  # train statistics
    # transform() gives the same X for the same rows
    Xt = tabular.transform(prep, f)
    assert Xt.shape == (prep.n_inputs, len(f))
    allX = np.concatenate([data.X_train, data.X_test], axis=1)
    assert {tuple(np.round(c, 4)) for c in allX.T} == {tuple(np.round(c, 4)) for c in Xt.T}


def test_regression_targets_standardised_and_inverted(tmp_path):
    f = _mixed()
    f.to_parquet(tmp_path / "t.parquet")
    data, prep = tabular.load_table(tmp_path / "t.parquet", "price")
    assert prep.task == "regression" and data.cost == "mean_squared_error"
    back = tabular.inverse_target(prep, data.Y_train)
    rows = set(np.round(f["price"].to_numpy(), 3))
    assert set(np.round(back[0], 3)) <= rows
    np.testing.assert_allclose(data.Y_train.mean(), 0.0, atol=1e-5)


def test_multilabel_from_two_columns(tmp_path):
    f = _mixed()
    f.to_csv(tmp_path / "t.csv", index=False)
    data, prep = tabular.load_table(tmp_path / "t.csv", "a,b")
    assert prep.task == "multilabel" and data.Y_train.shape[0] == 2
    assert data.cost == "multilabel_cross_entropy" and prep.class_names == ("a", "b")


def test_missing_values_refused_naming_the_column_or_imputed(tmp_path):
    f = _mixed()
    f.loc[[3, 17], "size"] = np.nan
    f.loc[5, "colour"] = None
    f.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(tabular.MissingValuesError, match=r"missing values in 2 feature columns, "
                       r"rows counted from 0: 'size' \(2: rows 3, 17\); 'colour' \(1: row 5\)") as e:
        tabular.load_table(tmp_path / "t.csv", "kind")
    assert e.value.columns == {"size": [3, 17], "colour": [5]} and e.value.kind == "feature"
    data, prep = tabular.load_table(tmp_path / "t.csv", "kind", impute="median", seed=2)
    assert np.all(np.isfinite(data.X_train)) and np.all(np.isfinite(data.X_test))
    train, _ = datasets.split_indices(np.searchsorted(["cat", "dog"], f["kind"]), len(f), 0.2, 2)
    assert prep.impute_values["size"] == pytest.approx(np.nanmedian(f["size"].to_numpy()[train]))
    assert prep.impute_values["colour"] in ("blue", "green", "red")
    g = _mixed()
    g.loc[0, "kind"] = None
    g.to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(ValueError, match=r"missing values in target column, rows counted from 0: "
                       r"'kind' \(1: row 0\); drop those rows"):
        tabular.load_table(tmp_path / "u.csv", "kind", impute="mean")


@pytest.mark.parametrize("make, target, task, match", [
    (None, "kind", None, "does not exist"),
    ("bad.csv", "kind", None, "cannot parse"),
    ("bad.parquet", "kind", None, "cannot parse"),
    ("bad.npz", "kind", None, "cannot parse"),
    ("t.xlsx", "kind", None, "expected a file ending in"),
    ("t.csv", "nope", None, "target: column 'nope' is not in the table"),
    ("t.csv", "colour", "regression", "task: regression needs numeric targets, but 'colour'"),
    ("t.csv", "a,b", "classification", "classification takes one target column"),
    ("t.csv", "price,size", "multilabel", "multilabel needs target columns of 0/1"),
    ("t.csv", "kind", "clustering", "task: expected one of"),
    ("t.csv", "size,colour,flag,kind,price,a,b", None, "no feature is left"),
    ("empty.csv", "kind", None, "data:"),
])
def test_bad_input_is_one_clear_value_error(tmp_path, make, target, task, match):
    _mixed().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "bad.csv").write_text('a,b\n1,"2\n')
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "t.xlsx").write_bytes(b"x")
    (tmp_path / "empty.csv").write_text("")
    path = tmp_path / (make or "missing.csv")
    with pytest.raises(ValueError, match=match):
        tabular.load_table(path, target, task)


def test_bad_argument_types_and_values():
    with pytest.raises(TypeError, match="data: expected a file path"):
        tabular.read_table(3)
    with pytest.raises(ValueError, match="impute: expected one of"):
        tabular.load_table("x.csv", "y", impute="zero")


def test_transform_refuses_other_columns_and_unseen_categories(tmp_path):
    f = _mixed()
    f.to_csv(tmp_path / "t.csv", index=False)
    _, prep = tabular.load_table(tmp_path / "t.csv", "kind")
    with pytest.raises(ValueError, match=r"columns differ.*missing \['flag'\]; unexpected \['extra'\]"):
        tabular.transform(prep, f.drop(columns=["flag"]).assign(extra=1))
    g = f.copy()
    g.loc[0, "colour"] = "purple"
    with pytest.raises(ValueError, match="column 'colour' holds \\['purple'\\]"):
        tabular.transform(prep, g)
    h = f.drop(columns=["kind"])[list(reversed(prep.feature_columns))]  # order does not matter
    np.testing.assert_array_equal(tabular.transform(prep, h), tabular.transform(prep, f))


def test_preprocessing_round_trips_through_json():
    import json

    prep = tabular.Preprocessing("classification", ("x", "c"), {"c": ["a", "b"]},
                                 ("x", "c=a", "c=b"), (0.0, 0.5, 0.5), (1.0, 0.5, 0.5),
                                 ("y",), ("no", "yes"))
    back = tabular.Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict())))
    assert back == prep
    with pytest.raises(ValueError, match="preprocessing: missing"):
        tabular.Preprocessing.from_dict({"task": "regression"})


def test_excluded_columns_and_row_ids(tmp_path):
    """exclude= leaves row ids and notes out of X (the preprocessing's features too, so new
    rows may carry them); a feature column named id with a distinct value in every row is
    refused, naming exclude and train.py's --id; unknown or target columns are refused."""
    rng = np.random.default_rng(3)
    m = 40
    frame = pd.DataFrame({"id": np.arange(100, 100 + m), "x": rng.normal(size=m),
                          "note": rng.choice(["a", "b"], m), "y": rng.integers(0, 2, m)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"exclude: column 'id' holds a distinct value in every "
                                         r"row .*exclude=\['id'\] \(train.py --id id\)"):
        tabular.load_table(tmp_path / "t.csv", "y")
    data, prep = tabular.load_table(tmp_path / "t.csv", "y", exclude=["id", "note"])
    assert prep.feature_columns == ("x",) and data.n_inputs == 1
    X = tabular.transform(prep, frame.drop(columns="y"))
    np.testing.assert_allclose(X[0], (frame["x"] - prep.feature_mean[0]) / prep.feature_std[0],
                               rtol=1e-6)
    data, prep = tabular.load_table(tmp_path / "t.csv", "y", exclude="id")
    assert prep.feature_columns == ("x", "note")
    with pytest.raises(ValueError, match=r"exclude: column 'ID' is not in the table"):
        tabular.load_table(tmp_path / "t.csv", "y", exclude=["ID"])
    with pytest.raises(ValueError, match=r"exclude: 'y' is a target column"):
        tabular.load_table(tmp_path / "t.csv", "y", exclude=["id", "y"])
    frame.assign(id=[1, 1] + list(range(m - 2))).to_csv(tmp_path / "dup.csv", index=False)
    data, prep = tabular.load_table(tmp_path / "dup.csv", "y")  # repeated values: not row ids
    assert "id" in prep.feature_columns


def _dated(m=30, seed=5):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=m), "y": rng.integers(0, 2, m),
                         "when": pd.date_range("2020-01-01", periods=m)})


DATE_ADVICE = ("; as categories it would be one one-hot input per distinct value, and a new "
               "value could not be predicted. Leave it out with exclude=['when'] (train.py --id "
               "when), or derive numeric features from it yourself (the year, the day of the "
               "year, the days since a start date, a duration in seconds) as columns of their own.")


@pytest.mark.parametrize("column, ext, kind", [
    (pd.date_range("2020-01-01", periods=30), ".parquet",
     "dates and times (datetime64[us]), such as '2020-01-01 00:00:00'"),
    (pd.date_range("2020-01-01", periods=30, tz="UTC"), ".parquet",
     "dates and times (datetime64[us, UTC]), such as '2020-01-01 00:00:00+00:00'"),
    (pd.to_timedelta(np.arange(30), unit="D"), ".parquet",
     "durations (timedelta64[us]), such as '0 days 00:00:00'"),
    (pd.date_range("2020-01-01", periods=30).date, ".parquet",
     "dates or times (Python objects), such as '2020-01-01'"),
    (pd.date_range("2020-01-01", periods=30), ".csv", "dates written as text, such as '2020-01-01'"),
    (pd.date_range("2020-01-01 08:30", periods=30, freq="h").strftime("%d/%m/%Y %H:%M"), ".csv",
     "dates written as text, such as '01/01/2020 08:30'"),
], ids=["datetime64", "utc", "timedelta", "date32", "csv-iso", "csv-day-first"])
def test_date_and_time_columns_are_refused_naming_the_column(tmp_path, column, ext, kind):
    """A feature column of dates or times would be one one-hot input per distinct date (a new
    date then unpredictable): refused, naming the column and what to do; exclude= trains
    without it."""
    frame = _dated().assign(when=column)
    path = tmp_path / f"t{ext}"
    frame.to_csv(path, index=False) if ext == ".csv" else frame.to_parquet(path)
    with pytest.raises(ValueError) as e:
        tabular.load_table(path, "y")
    assert str(e.value) == f"data: feature column 'when' holds {kind}{DATE_ADVICE}"
    _, prep = tabular.load_table(path, "y", exclude=["when"])
    assert prep.feature_columns == ("x",) and prep.categories == {}


@pytest.mark.parametrize("values", [
    ["Jan", "Feb", "Mar"],            # month names (pandas reads 'Jan' as a date of year 1)
    ["2020-02-30", "2020-01-01", "2020-01-02"],  # not all dates
    ["12-34-5678", "11-22-3333", "10-11-2222"],  # date-shaped codes that are not dates
    ["2020-01", "2020-02", "2020-03"],  # year-months: categories
    [20200101, 20200102, 20200103],  # numbers
], ids=["months", "one-not-a-date", "codes", "year-month", "yyyymmdd-numbers"])
def test_text_and_numbers_that_are_not_all_dates_are_not_misread(tmp_path, values):
    """Only a column whose every cell is a date is refused: month names, invalid dates,
    date-shaped codes and year-months stay categories, and numbers stay numbers."""
    frame = _dated().assign(when=values * 10)
    frame.to_csv(tmp_path / "t.csv", index=False)
    _, prep = tabular.load_table(tmp_path / "t.csv", "y")
    assert "when" in prep.feature_columns
    if isinstance(values[0], str):  # text: one-hot encoded, one input per category
        assert prep.categories == {"when": sorted(values)}
    else:  # numbers: one input
        assert prep.categories == {} and prep.n_inputs == 2


def test_text_columns_of_mostly_distinct_values_are_refused_unless_named_categorical(tmp_path):
    """More than 50 distinct text values with fewer than two rows per value (names, free
    text) are refused, naming the column and what to do; categorical= encodes them anyway;
    50 values, or 60 values in 120 rows, are one-hot encoded as before."""
    rng = np.random.default_rng(1)

    def table(n_values, m):
        names = [f"v{k:03d}" for k in range(n_values)] * (m // n_values)
        return pd.DataFrame({"x": rng.normal(size=m), "name": names, "y": [0, 1] * (m // 2)})

    table(60, 60).to_csv(tmp_path / "names.csv", index=False)
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "names.csv", "y")
    assert str(e.value) == (
        "data: text column 'name' holds 60 distinct values in 60 rows (such as ['v000', "
        "'v001', 'v002', ... and 57 more]): most values occur once, like names, free text or "
        "ids, and one-hot encoding would make 60 inputs each seen about once. Leave it out "
        "with exclude=['name'] (train.py --id name), replace it with fewer categories or "
        "numbers derived from it, or encode it anyway with categorical=['name'] (train.py "
        "--categorical name).")
    _, prep = tabular.load_table(tmp_path / "names.csv", "y", categorical=["name"])
    assert prep.n_inputs == 61
    for n_values, m in ((50, 50), (60, 120)):
        table(n_values, m).to_csv(tmp_path / "ok.csv", index=False)
        _, prep = tabular.load_table(tmp_path / "ok.csv", "y")
        assert len(prep.categories["name"]) == n_values and prep.n_inputs == 1 + n_values


def test_unseen_categories_message_shows_ten_values_and_how_many_more(tmp_path):
    m = 40
    frame = pd.DataFrame({"x": np.arange(m, dtype=float), "c": [f"c{k:02d}" for k in range(20)] * 2,
                          "y": [0, 1] * (m // 2)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    _, prep = tabular.load_table(tmp_path / "t.csv", "y")
    new = frame.drop(columns="y").assign(c=[f"n{k:02d}" for k in range(m)])
    with pytest.raises(ValueError) as e:
        tabular.transform(prep, new)
    assert str(e.value) == (
        "data: column 'c' holds ['n00', 'n01', 'n02', 'n03', 'n04', 'n05', 'n06', 'n07', "
        "'n08', 'n09', ... and 30 more], categories that the training data did not have (it "
        "had 20: ['c00', 'c01', 'c02', 'c03', 'c04', 'c05', 'c06', 'c07', 'c08', 'c09', ... "
        "and 10 more]), in rows 0, 1, 2, 3, 4, ... (counting from 0).")
