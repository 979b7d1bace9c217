"""jaxmlp.data.tabular on tables as people write them: a byte-order mark, padded names, codes
read as floats, decimal commas, empty columns, booleans as text, infinite targets."""

import numpy as np
import pandas as pd
import pytest

from jaxmlp.data import datasets, tabular


def _codes(m=40):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=m), "code": [1, 2, 3, 4] * (m // 4),
                         "y": [0, 1] * (m // 2)})


def _onehot(prep, X, column):
    """The one-hot block of ``column`` in X (n[0], m), unstandardised: X * std + mean."""
    j = [i for i, n in enumerate(prep.feature_names) if n.startswith(column + "=")]
    F = X.T * np.asarray(prep.feature_std) + np.asarray(prep.feature_mean)
    return np.round(F[:, j], 6)


@pytest.mark.parametrize("task", ["classification", "regression", None])
def test_an_infinite_target_is_refused_for_every_task(tmp_path, task):
    """inf is no class: refused before training (a saved model's class names could not be
    written as JSON), with the regression message."""
    frame = _codes().astype({"y": float})
    frame.loc[[0, 1], "y"] = np.inf
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "t.csv", "y", task)
    assert str(e.value) == ("data: target column 'y' holds infinite values (rows 0, 1, counting "
                            "from 0); expected finite numbers.")


def test_a_byte_order_mark_does_not_hide_duplicate_column_names(tmp_path):
    path = tmp_path / "bom.csv"
    pd.DataFrame([[1.0, 2.0, 0], [3.0, 4.0, 1]], columns=["a", "b", "a"]).to_csv(
        path, index=False, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfa,b,a")
    with pytest.raises(ValueError, match=r"data: '.*bom.csv' has duplicate column names \['a'\]; "
                                         r"rename them so that every column has its own name\."):
        tabular.read_table(path)
    pd.DataFrame({"a": [1.0], "b": [2.0]}).to_csv(path, index=False, encoding="utf-8-sig")
    assert list(tabular.read_table(path).columns) == ["a", "b"]


def test_numeric_codes_match_whether_read_as_ints_or_floats(tmp_path):
    """A categorical column of codes read as floats (one empty cell) gives the categories of
    the same codes read as ints; new rows match them as ints, floats or text, and a model saved
    with the old keys ('1.0') gives the same X."""
    ints = _codes()
    gap = ints.astype({"code": float})
    gap.loc[0, "code"] = np.nan
    ints.to_csv(tmp_path / "ints.csv", index=False)
    gap.to_csv(tmp_path / "gap.csv", index=False)
    _, p_int = tabular.load_table(tmp_path / "ints.csv", "y", categorical=["code"])
    _, prep = tabular.load_table(tmp_path / "gap.csv", "y", categorical=["code"], impute="median")
    assert p_int.categories == prep.categories == {"code": ["1", "2", "3", "4"]}
    assert prep.impute_values["code"] in ("1", "2", "3", "4")
    new = ints.drop(columns="y").head(8)
    X = tabular.transform(prep, new)
    np.testing.assert_array_equal(_onehot(prep, X, "code"), np.eye(4)[new["code"] - 1])
    for codes in (new["code"].astype(float), new["code"].astype(str),
                  new["code"].map(lambda v: f"{v}.0")):
        np.testing.assert_array_equal(tabular.transform(prep, new.assign(code=codes)), X)
    old = prep._replace(categories={"code": ["1.0", "2.0", "3.0", "4.0"]},
                        impute_values={**prep.impute_values,
                                       "code": prep.impute_values["code"] + ".0"})
    old = tabular.Preprocessing.from_dict(old.to_dict())  # as a saved model reads it back
    for rows in (new, new.assign(code=new["code"].astype(float)),
                 new.assign(code=[np.nan] + [float(v) for v in new["code"][1:]])):
        np.testing.assert_array_equal(tabular.transform(old, rows), tabular.transform(prep, rows))
    text = prep._replace(categories={"code": ["01", "02", "03", "04"]})  # text codes: as written
    with pytest.raises(ValueError, match=r"data: column 'code' holds \['1', '2', '3', '4'\], "):
        tabular.transform(text, new)
    with pytest.raises(ValueError, match=r"data: column 'code' holds \['5'\], categories that the "
                                         r"training data did not have \(it had 4: \['1.0', "):
        tabular.transform(old, new.assign(code=5.0))


def test_column_names_with_spaces_are_named_exactly_or_stripped(tmp_path):
    frame = _codes().rename(columns={"y": "label ", "code": " code"})
    frame.to_csv(tmp_path / "t.csv", index=False)
    for target in ("label ", "label", ["label"]):  # the scripts strip what their flags give
        _, prep = tabular.load_table(tmp_path / "t.csv", target, categorical=["code"])
        assert prep.target_columns == ("label ",) and prep.categories == {
            " code": ["1", "2", "3", "4"]}
    _, prep = tabular.load_table(tmp_path / "t.csv", "label ", exclude="code")
    assert prep.feature_columns == ("x",) and prep.excluded_columns == (" code",)
    frame.assign(**{" label": frame["label "]}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "two.csv", "label")
    assert str(e.value) == ("target: 'label' is not a column, and 2 columns differ from it only "
                            "in leading or trailing spaces: ['label ', ' label']; name one of "
                            "them exactly.")
    _, prep = tabular.load_table(tmp_path / "two.csv", " label", exclude=["label "])
    assert prep.target_columns == (" label",)


def test_new_rows_with_duplicate_column_names_are_refused(tmp_path):
    frame = _codes().assign(flag=[True, False] * 20, colour=["red", "blue"] * 20)
    frame.to_csv(tmp_path / "t.csv", index=False)
    _, prep = tabular.load_table(tmp_path / "t.csv", "y")
    new = frame.drop(columns="y").head(3)
    for dup in ("flag", "colour"):
        with pytest.raises(ValueError) as e:
            tabular.transform(prep, pd.concat([new, new[[dup]]], axis=1))
        assert str(e.value) == (f"data: duplicate column names [{dup!r}]; expected each of the "
                                "training features ['x', 'code', 'flag', 'colour'] once.")


def test_a_boolean_column_given_as_text(tmp_path):
    frame = _codes().assign(flag=[True, False, False, True] * 10)
    frame.to_csv(tmp_path / "t.csv", index=False)
    _, prep = tabular.load_table(tmp_path / "t.csv", "y", impute="mean")
    new = frame.drop(columns="y").head(4)
    X = tabular.transform(prep, new)
    j = prep.feature_names.index("flag")
    flag = X[j] * prep.feature_std[j] + prep.feature_mean[j]
    np.testing.assert_allclose(flag, [1, 0, 0, 1], atol=1e-6)
    for text in (["True", "False", "False", "True"], [" TRUE", "false", "False", "true"]):
        np.testing.assert_array_equal(tabular.transform(prep, new.assign(flag=text)), X)
    rows = new.assign(flag=["True", None, "False", "True"])
    filled = tabular.transform(prep, rows)  # the missing cell: the train split's mean flag
    np.testing.assert_array_equal(filled[:, [0, 2, 3]], X[:, [0, 2, 3]])
    train, _ = datasets.split_indices(frame["y"].to_numpy(), len(frame), 0.2, 0)  # stratified
    mode = bool(frame["flag"].to_numpy()[train].mean() >= 0.5)  # the train split's mean, rounded
    assert prep.impute_values["flag"] is mode
    np.testing.assert_array_equal(filled[:, 1], tabular.transform(prep, new.assign(flag=mode))[:, 1])
    with pytest.raises(ValueError) as e:
        tabular.transform(prep, new.assign(flag=["1", "yes", "0", "1"]))
    assert str(e.value) == (
        "data: feature column 'flag' was numeric in training but holds 1 cell(s) that are not "
        "numbers: row 1 holds 'yes' (rows counted from 0); expected numbers (or, for a column of "
        "booleans in training, True/False in every cell). Fix those cells, or leave them empty "
        "if the model was trained with impute.")


def test_numbers_with_decimal_commas_are_refused_unless_categorical(tmp_path):
    frame = _codes().assign(x=[f"{v:.1f}".replace(".", ",") for v in _codes()["x"]])
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "t.csv", "y")
    assert str(e.value) == (
        f"data: column 'x' holds text such as {frame['x'][0]!r} that reads as numbers written "
        "with a decimal comma (all 40 present cells); one-hot encoded, every number would be a "
        "category of its own. Write the numbers with a decimal point (convert the file, or read "
        "it with pandas.read_csv(path, decimal=',') and save it again), or if the column is "
        "categorical say so: categorical=['x'] (train.py --categorical x); commas between "
        "thousands (1,000) read with thousands=','.")
    _, prep = tabular.load_table(tmp_path / "t.csv", "y", categorical="x")
    assert prep.categories["x"] == sorted(set(frame["x"]))
    # pandas' decimal="," reads the same file as numbers: the fix the message names
    fixed = pd.read_csv(tmp_path / "t.csv", decimal=",")
    np.testing.assert_allclose(fixed["x"], np.round(_codes()["x"], 1), atol=1e-12)
    # text with commas that are not all numbers stays categories
    frame.assign(x=["a,b", "1,5"] * 20).to_csv(tmp_path / "words.csv", index=False)
    _, prep = tabular.load_table(tmp_path / "words.csv", "y")
    assert prep.categories == {"x": ["1,5", "a,b"]}


def test_an_empty_column_is_refused_with_how_to_leave_it_out(tmp_path):
    """A trailing comma on every line of a CSV makes an empty column 'Unnamed: 3': neither
    trained on nor imputed (it has no value), so the message says to leave it out."""
    text = "x,code,y,\n" + "".join(f"{i * 0.5},{i % 3},{i % 2},\n" for i in range(20))
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "t.csv", "y")
    assert str(e.value) == ("data: feature column 'Unnamed: 3' is empty in every row: no value "
                            "to learn from, nor to impute from; leave it out with "
                            "exclude=['Unnamed: 3'] (train.py --id 'Unnamed: 3'), or delete it "
                            "from the file.")
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "t.csv", "y", impute="median")
    assert str(e.value) == ("impute: feature column 'Unnamed: 3' has no value in the train split "
                            "to compute its median from: it is empty in every row, leave it out "
                            "with exclude=['Unnamed: 3'] (train.py --id 'Unnamed: 3'), or delete "
                            "it from the file.")
    _, prep = tabular.load_table(tmp_path / "t.csv", "y", exclude=["Unnamed: 3"])
    assert prep.feature_columns == ("x", "code")


def test_a_boolean_target_with_a_lone_class_is_not_told_to_regress(tmp_path):
    """Regression needs numbers: suggested for an integer target only."""
    (tmp_path / "b.csv").write_text("x,y\n1.0,True\n2.0,True\n3.0,False\n")
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "b.csv", "y")
    assert str(e.value) == ("data: 3 rows leave an empty train or test split with "
                            "test_fraction=0.2 (a split stratified by the 2 classes of target "
                            "'y', 1 of them with a single row: add rows of each class).")
    (tmp_path / "i.csv").write_text("x,y\n1.0,1\n2.0,1\n3.0,0\n")
    with pytest.raises(ValueError, match=r"is it an id or a quantity\? .* pass task='regression'"):
        tabular.load_table(tmp_path / "i.csv", "y")
