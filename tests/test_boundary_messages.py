"""Messages at the data boundary: a non-numeric X or Y (object, text, a DataFrame of text) is
the checks' TypeError naming the argument and the dtype (never the array); a transposed or
1-D X / Y names the transpose or reshape that fits; an .npz table whose arrays' rows differ
names each array and its shape, in a message of bounded length; a saved model's rows take
a Series, a dict of one row, a dict of columns or a list of dicts, and a transposed or 1-D
array is answered with the fix."""

import jax
import numpy as np
import pytest

import jaxmlp
from jaxmlp.data import export, tabular
from jaxmlp.data.tabular import Preprocessing

pd = pytest.importorskip("pandas")

NET = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
PARAMS = jaxmlp.init_params(NET, jax.random.PRNGKey(0))
X = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
Y = np.eye(3, dtype=np.float32)[np.arange(30) % 3].T


# ----------------------------------------------------------------------------- non-numeric data

@pytest.mark.parametrize("X_, Y_, name, dtype", [
    (X.astype(object), Y, "X", r"dtype object"),
    (X, Y.astype(str), "Y", r"dtype <U32"),
    (pd.DataFrame(X.astype(object)), Y, "X", r"a DataFrame with column dtypes object"),
])
def test_non_numeric_data_is_the_checks_type_error(X_, Y_, name, dtype):
    import optax

    with pytest.raises(TypeError, match=rf"^{name}: expected a real numeric array, got {dtype}\. "
                                        rf"Convert .*{name}\.astype\(np\.float32\).*"
                                        r"jaxmlp\.data\.tabular\.load_table") as e:
        jaxmlp.fit(NET, PARAMS, optax.adam(1e-2), X_, Y_, epochs=1, batch_size=10, key=0)
    assert len(str(e.value)) < 400  # never the array itself


def test_non_numeric_data_in_the_shared_checks_and_a_numeric_call_still_works():
    from jaxmlp.nn import checks

    with pytest.raises(TypeError, match=r"^X: expected a real numeric array, got dtype object"):
        checks.check_problem(NET, PARAMS, X.astype(object), Y)
    with pytest.raises(TypeError, match=r"^Y: expected a real numeric array, got dtype <U"):
        checks.check_problem(NET, PARAMS, X, Y.astype(str))
    with pytest.raises(TypeError, match=r"^x: expected a real numeric array, got dtype <U"):
        checks.check_x(NET, X[:, 0].astype(str), np.float32)
    X_, Y_ = checks.check_problem(NET, PARAMS, X.astype(np.int32), Y.astype(bool))
    assert X_.dtype == np.float32 and np.array_equal(Y_, Y)  # integers and bools are cast
    A = np.asarray(jaxmlp.predict(NET, PARAMS, X))
    Z1 = np.tanh(np.asarray(PARAMS[0]["W"]) @ X + np.asarray(PARAMS[0]["b"])[:, None])
    Z2 = np.asarray(PARAMS[1]["W"]) @ Z1 + np.asarray(PARAMS[1]["b"])[:, None]
    want = np.exp(Z2 - Z2.max(0)) / np.exp(Z2 - Z2.max(0)).sum(0)  # (F1)-(F2), softmax
    assert np.allclose(A, want, atol=1e-5)


def test_ragged_list_is_named_without_the_values():
    from jaxmlp.nn import checks

    with pytest.raises(TypeError, match=r"^X: expected a real numeric array, got a ragged list"):
        checks.check_X(NET, [[1.0, 2.0], [3.0]], np.float32)


# ----------------------------------------------------------------------------- transpose hints

def test_batch_first_Y_gets_the_transpose_hint():
    with pytest.raises(ValueError, match=r"Y: expected shape \(n\[L\], m\) = \(3, 30\), got "
                                         r"\(30, 3\) \(columns are examples: pass Y\.T if your "
                                         r"rows are examples\)\."):
        jaxmlp.loss(NET, PARAMS, X, Y.T)


def test_one_example_as_a_vector_gets_the_reshape_hint():
    with pytest.raises(ValueError, match=r"X: expected shape \(n\[0\], m\) = \(4, m\) with m >= 1, "
                                         r"got \(4,\) \(one example is a column: pass "
                                         r"X\[:, None\] or X\.reshape\(-1, 1\)\)\."):
        jaxmlp.predict(NET, PARAMS, X[:, 0])
    assert np.allclose(jaxmlp.predict(NET, PARAMS, X[:, 0][:, None]),
                       jaxmlp.predict(NET, PARAMS, X)[:, :1])


def test_one_input_network_row_vector_gets_the_row_hint():
    net = jaxmlp.Network((1, 1), ("linear",), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match=r"got \(5,\) \(a one-input network takes a row of m "
                                         r"examples: pass X\[None, :\] or X\.reshape\(1, -1\)\)"):
        jaxmlp.predict(net, params, np.ones(5, np.float32))


# ----------------------------------------------------------------------------- .npz tables

def test_npz_with_a_transposed_array_names_shapes_and_the_fix(tmp_path):
    rng = np.random.default_rng(3)
    F, y = rng.normal(size=(50, 6)), np.arange(50) % 2
    np.savez(tmp_path / "t.npz", X=F.T, y=y)
    with pytest.raises(ValueError) as e:
        tabular.load_table(tmp_path / "t.npz", target="y")
    assert str(e.value) == (f"data: the arrays of {str(tmp_path / 't.npz')!r} have different "
                            "numbers of rows: 'X' has shape (6, 50), 'y' has 50 rows; a 2-D "
                            "array is (rows, columns): save X.T if your columns are examples.")
    np.savez(tmp_path / "ok.npz", X=F, y=y)
    data, prep = tabular.load_table(tmp_path / "ok.npz", target="y")
    assert prep.feature_columns == tuple(f"X[{j}]" for j in range(6))


def test_npz_rows_message_is_bounded(tmp_path):
    np.savez(tmp_path / "m.npz", **{f"a{i}": np.zeros(3 + i % 2) for i in range(40)},
             wide=np.zeros((5, 3000)))
    with pytest.raises(ValueError, match=r"'a0' has 3 rows, 'a1' has 4 rows, .*"
                                         r"\(and 35 more arrays\)\.$") as e:
        tabular.read_table(tmp_path / "m.npz")
    assert len(str(e.value)) < 300


# ----------------------------------------------------------------------------- saved models

PREP = Preprocessing(
    task="classification", feature_columns=("x1", "color", "x2"),
    categories={"color": ["blue", "red"]},
    feature_names=("x1", "color=blue", "color=red", "x2"),
    feature_mean=(1.0, 0.5, 0.5, -2.0), feature_std=(2.0, 0.5, 0.5, 4.0),
    target_columns=("y",), class_names=("ant", "bee", "cat"))
ROWS = pd.DataFrame({"x1": [0.0, 2.5, -3.0], "color": ["red", "blue", "blue"],
                     "x2": [3.0, -1.0, 0.5]})


@pytest.fixture(scope="module")
def model():
    return export.Model(NET, PARAMS, {"preprocessing": PREP.to_dict()})


def test_model_takes_one_row_as_a_series_or_dict_and_records(model):
    X_by_hand = np.stack([ROWS["x1"], ROWS["color"] == "blue", ROWS["color"] == "red",
                          ROWS["x2"]], 1).astype(float)
    X_by_hand = ((X_by_hand - PREP.feature_mean) / PREP.feature_std).T
    want = np.asarray(jaxmlp.predict(NET, PARAMS, X_by_hand.astype(np.float32))).T
    assert np.allclose(model.predict_proba(ROWS), want, atol=1e-6)
    assert np.allclose(model.predict_proba(ROWS.iloc[1]), want[1:2], atol=1e-6)
    assert np.allclose(model.predict_proba(ROWS.iloc[1].to_dict()), want[1:2], atol=1e-6)
    assert np.allclose(model.predict_proba(ROWS.to_dict("records")), want, atol=1e-6)
    assert np.allclose(model.predict_proba(ROWS.to_dict("list")), want, atol=1e-6)


def test_model_refuses_a_mixed_dict_saying_what_to_pass(model):
    with pytest.raises(TypeError, match=r"rows: expected a DataFrame, a list of dicts .* of the "
                                        r"feature columns \['x1', 'color', 'x2'\]; got a dict "
                                        r"mixing single values and lists\.") as e:
        model.predict({"x1": 1.0, "color": ["red"], "x2": 2.0})
    assert "shape ()" not in str(e.value)


def test_model_transposed_and_vector_rows_get_the_fix(model):
    A = ROWS.to_numpy(dtype=object)
    assert np.allclose(model.predict_proba(A), model.predict_proba(ROWS))
    with pytest.raises(ValueError, match=r"got shape \(3, 2\); rows are examples: pass X\.T\.$"):
        model.predict(A[:2].T)
    with pytest.raises(ValueError, match=r"got shape \(3,\); one row is \(1, n_features\): "
                                         r"pass x\[None, :\]"):
        model.predict(A[0])
    bare = export.Model(NET, PARAMS)
    with pytest.raises(ValueError, match=r"X: expected an array \(n_samples, 4\), got shape "
                                         r"\(4, 5\); rows are examples: pass X\.T\.$"):
        bare.predict(X[:, :5])
    assert np.allclose(bare.predict_proba(X[:, :5].T),
                       np.asarray(jaxmlp.predict(NET, PARAMS, X[:, :5])).T, atol=1e-6)
