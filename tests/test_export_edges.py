"""jaxmlp.data.export at its edges: every floating dtype bit for bit (bfloat16 included, in
.npz and .safetensors, models and Laplace posteriors), the reserved metadata key, metadata
keys, paths (``~``, missing folders, folders), a file of the other format, rows a model
without preprocessing cannot take, and Laplace fits in half precision."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import laplace as lp
from jaxmlp.data import export

pytest.importorskip("safetensors")

NET = jaxmlp.Network((4, 6, 3), ("tanh", "softmax"), "categorical_cross_entropy")
REG = jaxmlp.Network((3, 5, 1), ("tanh", "linear"), "mean_squared_error")
DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]


def _params(net=NET, dtype=jnp.float32):
    return jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=dtype)


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _data(net, m=16, dtype=jnp.float32):
    X = jax.random.normal(jax.random.PRNGKey(1), (net.sizes[0], m), jnp.float32)
    if net.cost == "mean_squared_error":
        Y = jax.random.normal(jax.random.PRNGKey(2), (net.sizes[-1], m), jnp.float32)
    else:
        Y = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(2), (m,), 0, net.sizes[-1]),
                           net.sizes[-1], dtype=jnp.float32).T
    return X.astype(dtype), Y.astype(dtype)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_every_floating_dtype_round_trips_bit_for_bit(tmp_path, ext, dtype):
    params = _params(dtype=dtype)
    export.save(tmp_path / f"m{ext}", params, NET, metadata={"k": 1})
    net, back, meta = export.load(tmp_path / f"m{ext}")
    assert net == NET and meta == {"k": 1}
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert _bits(a) == _bits(b)


def test_npz_holds_bfloat16_as_uint16_bits_named_in_the_header(tmp_path):
    """NumPy's format has no bfloat16: the .npz holds the same 16 bits as uint16 and the
    header's "dtypes" names those arrays; a float32 file keeps the layout without it."""
    params = _params(dtype=jnp.bfloat16)
    export.save(tmp_path / "b.npz", params, NET)
    export.save(tmp_path / "f.npz", _params(), NET)
    with np.load(tmp_path / "b.npz", allow_pickle=False) as z:
        header = json.loads(str(z["__jaxmlp__"]))
        assert z["W[1]"].dtype == np.uint16
        assert np.array_equal(z["W[1]"], np.asarray(params[0]["W"]).view(np.uint16))
    assert header["dtypes"] == {k: "bfloat16" for k in ("W[1]", "W[2]", "b[1]", "b[2]")}
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        assert "dtypes" not in json.loads(str(z["__jaxmlp__"]))


def test_a_damaged_bfloat16_npz_is_refused_by_its_digest(tmp_path):
    export.save(tmp_path / "b.npz", _params(dtype=jnp.bfloat16), NET)
    with np.load(tmp_path / "b.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["b[2]"] = arrays["b[2]"] ^ np.uint16(1)  # one bit of one bfloat16
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=r"d\.npz.*the file is damaged"):
        export.load(tmp_path / "d.npz")


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_bfloat16_posterior_round_trips_bit_for_bit(tmp_path, ext):
    """A "diag" posterior of bfloat16 params, its arrays (Posterior.to_arrays's names) made
    here: the file gives back every leaf, bit for bit."""
    params = _params(dtype=jnp.bfloat16)
    P = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    bf = lambda a: np.asarray(a, np.float32).astype(jnp.bfloat16)  # noqa: E731
    arrays = {f"{k}[{l}]": np.asarray(layer[k]) for l, layer in enumerate(params, start=1)
              for k in ("W", "b")}
    arrays.update(ggn=bf(np.linspace(0.0, 3.0, P)), prior_precision=bf(2.0),
                  temperature=bf(1.0), sigma_noise=bf(1.0), loss=bf(7.25))
    la = lp.Posterior.from_arrays(NET, {"structure": "diag", "prior_kind": "scalar",
                                        "n_data": 16}, arrays)
    export.save_posterior(tmp_path / f"la{ext}", la)
    back = export.load_posterior(tmp_path / f"la{ext}")
    assert jax.tree.structure(back) == jax.tree.structure(la)
    for a, b in zip(jax.tree.leaves(la), jax.tree.leaves(back)):
        assert _bits(a) == _bits(b) and np.asarray(b).dtype == jnp.bfloat16
    assert back.to_arrays()[1].keys() == arrays.keys()
    assert all(_bits(back.to_arrays()[1][k]) == _bits(a) for k, a in arrays.items())


# ----------------------------------------------------------------------------- metadata


def test_reserved_ensemble_key_is_refused_in_metadata(tmp_path):
    with pytest.raises(ValueError, match=r"metadata: the key 'ensemble' is reserved.* = 3"):
        export.save(tmp_path / "m.npz", _params(), NET, metadata={"ensemble": 3})
    assert not os.listdir(tmp_path)
    from jaxmlp.train.ensemble import init_ensemble

    P = init_ensemble(NET, jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match=r"metadata: the key 'ensemble' is reserved.*= 99"):
        export.save(tmp_path / "e.npz", P, NET, ensemble=3, metadata={"ensemble": 99})
    # load's own metadata (which reports the size) saves again unchanged
    export.save(tmp_path / "e.npz", P, NET, ensemble=3, metadata={"a": 1})
    net, back, meta = export.load(tmp_path / "e.npz")
    assert meta == {"a": 1, "ensemble": 3}
    export.save(tmp_path / "e2.npz", back, net, ensemble=3, metadata=meta)
    assert export.load(tmp_path / "e2.npz")[2] == meta


@pytest.mark.parametrize("meta, where", [({1: "x", "k": 2}, r"metadata: .*the key 1 \(int\)"),
                                         ({"a": {"b": [{2: 3}]}},
                                          r"metadata\['a'\]\['b'\]\[0\]: .*the key 2")])
def test_metadata_keys_must_be_text(tmp_path, meta, where):
    with pytest.raises(TypeError, match=where):
        export.save(tmp_path / "m.npz", _params(), NET, metadata=meta)
    la = lp.laplace(NET, _params(), *_data(NET), structure="diag")
    with pytest.raises(TypeError, match=where):
        export.save_posterior(tmp_path / "la.npz", la, metadata=meta)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_missing_folder_and_folder_paths_are_refused_naming_them(tmp_path, ext):
    path = tmp_path / "no" / "sub" / f"m{ext}"
    with pytest.raises(FileNotFoundError, match=rf"path: cannot write '{path}': the folder "
                                                rf"'{path.parent}' does not exist"):
        export.save(path, _params(), NET)
    (tmp_path / f"d{ext}").mkdir()
    with pytest.raises(IsADirectoryError, match=rf"path: '{tmp_path / f'd{ext}'}' is a folder"):
        export.save(tmp_path / f"d{ext}", _params(), NET)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"the folder .*file' is not a folder"):
        export.save(tmp_path / "file" / f"m{ext}", _params(), NET)
    assert sorted(os.listdir(tmp_path)) == [f"d{ext}", "file"]
    assert not os.listdir(tmp_path / f"d{ext}")


def test_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    params = _params()
    export.save("~/m.npz", params, NET)
    assert os.listdir(tmp_path) == ["m.npz"]
    back = export.load("~/m.npz")[1]
    assert _bits(back[0]["W"]) == _bits(params[0]["W"])
    assert jaxmlp.load_model("~/m.npz").path == str(tmp_path / "m.npz")


def test_a_file_of_the_other_format_is_named_as_such(tmp_path):
    export.save(tmp_path / "m.safetensors", _params(), NET)
    os.rename(tmp_path / "m.safetensors", tmp_path / "s.npz")
    with pytest.raises(ValueError) as e:
        export.load(tmp_path / "s.npz")
    assert str(e.value) == (f"path: cannot read '{tmp_path / 's.npz'}' as a .npz file: it is a "
                            ".safetensors file, not a .npz one: rename it to end in "
                            ".safetensors.")
    (tmp_path / "r.npz").write_bytes(b"\x80\x04junk that np.load would unpickle")
    with pytest.raises(ValueError, match=r"as a \.npz file: it is not a zip archive") as e:
        export.load(tmp_path / "r.npz")
    assert "pickle" not in str(e.value)
    export.save(tmp_path / "m.npz", _params(), NET)
    os.rename(tmp_path / "m.npz", tmp_path / "z.safetensors")
    with pytest.raises(ValueError, match=r"it looks like a \.npz file: rename it"):
        export.load(tmp_path / "z.safetensors")


# ----------------------------------------------------------------------------- predictions


def test_model_without_preprocessing_refuses_rows_it_cannot_take_naming_rows():
    model = export.Model(NET, _params())
    rows = [{"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}]
    with pytest.raises(TypeError, match=r"rows: this model was saved without preprocessing.*"
                                        r"\(n_samples, 4\).*got a list of dicts"):
        model.predict(rows)
    with pytest.raises(TypeError, match=r"rows: .*got a dict"):
        model.predict_proba({"a": [1.0]})
    X = np.arange(8.0).reshape(2, 4) / 8
    want = np.asarray(jaxmlp.predict(NET, _params(), jnp.asarray(X.T, jnp.float32))).T
    assert np.allclose(model.predict_proba(X.tolist()), want, rtol=1e-6)


def test_laplace_hint_names_the_call_of_the_task(tmp_path):
    """train.py's line for the posterior: a regression's call is predict(rows,
    return_std=True) (predict_proba refuses regression), which gives the predictive std
    sqrt(diag J P^{-1} J^T + sigma^2) (LA11)."""
    from _common import laplace_report

    cfg = {"out": str(tmp_path)}
    doc = {"posterior_file": "laplace.npz"}
    reg = laplace_report.where(cfg, {"laplace": {**doc, "map": {"nll": 1.0,
                                                               "noise_variance": 0.5}},
                                     "network": {"cost": "mean_squared_error"}})
    cls = laplace_report.where(cfg, {"laplace": {**doc, "map": {"nll": 1.0, "accuracy": 1.0}},
                                     "network": {"cost": "categorical_cross_entropy"}})
    assert reg.endswith("jaxmlp.load_model(folder).predict(rows, return_std=True))")
    assert cls.endswith("jaxmlp.load_model(folder).predict_proba(rows, laplace=True))")
    params = _params(REG)
    X, Y = _data(REG)
    la = lp.laplace(REG, params, X, Y, structure="diag")
    model = export.Model(REG, params, posterior=la)
    mean, std = model.predict(np.asarray(X[:, :3].T), return_std=True)
    mu, var = la.predictive(X[:, :3])
    assert np.allclose(mean, np.asarray(mu)[0]) and np.allclose(std, np.sqrt(var)[0])
    with pytest.raises(ValueError, match="predict_proba: a regression model"):
        model.predict_proba(np.asarray(X[:, :3].T), laplace=True)


# ----------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
def test_half_precision_kron_eigendecomposes_its_factors(dtype):
    """(LA4) A = (1/n) sum_i abar abar^T, G = sum_i sum_c q q^T: U diag(eig) U^T gives back
    the factor (computed here in float64 from the same half-precision data) to half
    precision's accuracy, in the params' dtype."""
    params = _params(dtype=dtype)
    X, Y = _data(NET, dtype=dtype)
    la = lp.laplace(NET, params, X, Y, structure="kron")
    cv = la.curvature
    assert all(a.dtype == jnp.dtype(dtype) for a in jax.tree.leaves(la))
    abar = np.vstack([np.asarray(X, np.float64), np.ones((1, X.shape[1]))])
    A1 = abar @ abar.T / X.shape[1]
    U, e = np.asarray(cv["U_A"][0], np.float64), np.asarray(cv["eig_A"][0], np.float64)
    tol = 0.05 if dtype == jnp.bfloat16 else 0.01
    assert np.allclose(U @ np.diag(e) @ U.T, A1, atol=tol * np.abs(A1).max())
    assert np.allclose(U.T @ U, np.eye(U.shape[0]), atol=tol)


@pytest.mark.parametrize("structure", ["full", "last_layer"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=lambda d: jnp.dtype(d).name)
def test_half_precision_full_and_last_layer_are_refused_naming_the_dtype(structure, dtype):
    X, Y = _data(NET, dtype=dtype)
    name = jnp.dtype(dtype).name
    with pytest.raises(TypeError, match=rf"params: '{structure}' needs a Cholesky "
                                        rf"factorisation, which has no {name} kernel; got "
                                        rf"{name} params"):
        lp.laplace(NET, _params(dtype=dtype), X, Y, structure=structure)
