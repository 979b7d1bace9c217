"""A Laplace posterior saved and loaded (jaxmlp.data.export.save_posterior / load_posterior)
and served by a model (jaxmlp.load_model(folder).predict_proba(rows, laplace=True),
predict(rows, return_std=True), predict.py --laplace), in float64 on tiny networks.

Checks: the round trip is bit for bit (the same pytree: static fields, treedef, every
leaf's dtype and bits) for each structure and prior kind, so the loaded predictive equals
the in-memory one; the model's Laplace probabilities equal the posterior's predictive at
inputs standardised by hand; the regression std equals an independent computation,
sqrt(J P^{-1} J^T + sigma^2) * target_std with J of the one-hidden-layer network written
out in NumPy and P dense; refusals name the file or folder (no posterior, a damaged, truncated, mismatched or
newer file, a model export read as a posterior, float64 without 64-bit mode).
"""

import json
import os
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import laplace as lp
from jaxmlp.data import export
from jaxmlp.data.tabular import Preprocessing

from helpers import load_script

pd = pytest.importorskip("pandas")

CLS_NET = jaxmlp.Network((3, 4, 3), ("tanh", "softmax"), "categorical_cross_entropy")
CLS_PREP = Preprocessing(
    task="classification", feature_columns=("x1", "x2", "x3"), categories={},
    feature_names=("x1", "x2", "x3"), feature_mean=(1.0, -2.0, 0.5),
    feature_std=(2.0, 4.0, 0.5), target_columns=("y",), class_names=("ant", "bee", "cat"))
M = 7  # rows per prediction: every predictive is one compiled program per network
REG_NET = jaxmlp.Network((3, 4, 1), ("tanh", "linear"), "mean_squared_error")
REG_PREP = CLS_PREP._replace(task="regression", target_columns=("price",), class_names=(),
                             target_mean=(20.0,), target_std=(3.0,))


def _params(net, seed):
    rng = np.random.default_rng(seed)
    return [{"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1])),
             "b": jnp.asarray(0.3 * rng.normal(size=s["b"]))} for s in net.param_shapes()]


def _rows(m, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x3": rng.normal(0.5, 0.5, m), "x1": rng.normal(1, 2, m),
                         "x2": rng.normal(-2, 4, m)})  # any column order


def _inputs(rows):
    """X (3, m) standardised by hand (feature order x1, x2, x3)."""
    F = np.stack([rows["x1"], rows["x2"], rows["x3"]], 1)
    return jnp.asarray(((F - CLS_PREP.feature_mean) / CLS_PREP.feature_std).T)


def _leaves_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb  # the same static fields (net, structure, prior kind, n_data) and keys
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A classification run folder (model.npz + laplace.npz, kron, fitted) and a regression
    one (diag, noise scale 0.6, temperature 0.7, per-layer prior), and a folder without one."""
    base = tmp_path_factory.mktemp("runs")
    X = _inputs(_rows(24, 1))
    rng = np.random.default_rng(2)
    out = {}
    cls_params = _params(CLS_NET, 0)
    Y = jnp.asarray(np.eye(3)[:, rng.integers(0, 3, 24)])
    la = lp.laplace(CLS_NET, cls_params, X, Y, structure="kron", prior_precision=0.7)
    reg_params = _params(REG_NET, 3)  # diag by the constructor: the fit is test_laplace's
    lr_ = lp.Posterior(net=REG_NET, structure="diag", prior_kind="layer", n_data=24,
                       params=reg_params, curvature={"ggn": jnp.asarray(rng.gamma(2.0, 3.0, 21))},
                       prior_precision=jnp.asarray([0.5, 2.0]), temperature=jnp.asarray(0.7),
                       sigma_noise=jnp.asarray(0.6), loss=jnp.asarray(4.5))
    for name, net, params, prep, post in (("cls", CLS_NET, cls_params, CLS_PREP, la),
                                          ("reg", REG_NET, reg_params, REG_PREP, lr_),
                                          ("none", CLS_NET, cls_params, CLS_PREP, None)):
        d = base / name
        d.mkdir()
        export.save(d / "model.npz", params, net, metadata={"preprocessing": prep.to_dict()})
        if post is not None:
            export.save_posterior(d / export.POSTERIOR_FILE, post)
        out[name] = (d, post)
    return out


def test_round_trip_is_bit_for_bit_for_every_structure_and_prior_kind(folders, tmp_path):
    """The fitted kron and diag posteriors with each prior kind, and full / last_layer ones
    built by the constructor (a random symmetric positive definite G; full with the
    eigenvalues the evidence ascent adds), saved and loaded."""
    cls, reg = folders["cls"][1], folders["reg"][1]
    rng = np.random.default_rng(6)

    def dense(structure, P):
        B = rng.normal(size=(P, P))
        G = jnp.asarray(B @ B.T)
        cv = {"ggn": G, **({"eig": jnp.linalg.eigvalsh(G)} if structure == "full" else {})}
        return lp.Posterior(net=CLS_NET, structure=structure, prior_kind="scalar", n_data=24,
                            params=cls.params, curvature=cv, prior_precision=jnp.asarray(2.5),
                            temperature=jnp.asarray(1.3), sigma_noise=jnp.asarray(1.0),
                            loss=jnp.asarray(7.25))

    per_param = [{"W": np.full((4, 3), 0.5), "b": np.full(4, 2.0)},
                 {"W": np.full((1, 4), 1.5), "b": np.full(1, 0.25)}]
    cases = [cls, cls.with_prior([0.3, 4.0]), reg, reg.with_prior(per_param),
             dense("full", 31), dense("last_layer", 15)]
    for la in cases:
        path = tmp_path / f"{la.structure}-{la.prior_kind}.npz"
        export.save_posterior(path, la, metadata={"note": la.structure})
        back = export.load_posterior(path)
        _leaves_equal(la, back)
        assert (back.structure, back.prior_kind) == (la.structure, la.prior_kind)
    assert [la.prior_kind for la in cases] == ["scalar", "layer", "layer", "parameter",
                                              "scalar", "scalar"]


def test_loaded_predictive_equals_the_in_memory_one(folders):
    d, la = folders["cls"]
    back = export.load_posterior(d / export.POSTERIOR_FILE)
    X = _inputs(_rows(M, 9))
    np.testing.assert_allclose(np.asarray(back.predictive(X)), np.asarray(la.predictive(X)),
                               rtol=0, atol=1e-12)
    d, lr_ = folders["reg"]
    back = export.load_posterior(d / export.POSTERIOR_FILE)
    for a, b in zip(back.predictive(X), lr_.predictive(X)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


def test_load_model_serves_the_probit_predictive(folders):
    d, la = folders["cls"]
    model = jaxmlp.load_model(d)
    rows = _rows(M, 11)
    P = model.predict_proba(rows, laplace=True)
    expect = np.asarray(la.predictive(_inputs(rows))).T  # (LA11) at inputs made by hand
    np.testing.assert_allclose(P, expect, rtol=0, atol=1e-12)
    assert P.shape == (M, 3) and not np.allclose(P, model.predict_proba(rows), atol=1e-3)
    assert list(model.predict(rows, laplace=True)) == [
        ("ant", "bee", "cat")[k] for k in expect.argmax(1)]
    assert model.posterior.structure == "kron" and model.path == os.fspath(d)


def test_regression_std_in_the_targets_units_against_the_jacobian(folders):
    d, la = folders["reg"]
    model = jaxmlp.load_model(d)
    rows = _rows(M, 12)
    mean, std = model.predict(rows, return_std=True)
    assert mean.shape == std.shape == (M,)
    X = np.asarray(_inputs(rows))
    # the oracle: J = dz[L]/dtheta of z = W2 tanh(W1 x + b1) + b2 by hand, in the order
    # (LA1) ([W1 b1] row-major, then [W2 b2]), and P dense (LA2)
    W1, b1, W2, b2 = (np.asarray(la.params[l][k]) for l in (0, 1) for k in ("W", "b"))
    A1 = np.tanh(W1 @ X + b1[:, None])  # (4, m)
    Xb = np.vstack([X, np.ones((1, X.shape[1]))])  # (4, m): [x; 1]
    D = W2[0][:, None] * (1 - A1 ** 2)  # dz/dz1 (4, m)
    J = np.concatenate([np.einsum("jm,km->mjk", D, Xb).reshape(X.shape[1], -1),
                        np.vstack([A1, np.ones((1, X.shape[1]))]).T], axis=1)  # (m, 21)
    z = (W2 @ A1 + b2[:, None])[0]
    h = 1.0 / (0.7 * 0.6 ** 2)
    prior = np.repeat([0.5, 2.0], [4 * 4, 1 * 5])
    P = h * np.diag(np.asarray(la.curvature["ggn"])) + np.diag(prior)
    var = np.einsum("ip,pq,iq->i", J, np.linalg.inv(P), J) + 0.6 ** 2
    np.testing.assert_allclose(std, np.sqrt(var) * 3.0, rtol=1e-10)
    np.testing.assert_allclose(mean, z * 3.0 + 20.0, rtol=1e-12)
    np.testing.assert_allclose(model.predict(rows, laplace=True), mean, rtol=1e-12)
    np.testing.assert_allclose(model.predict(rows), mean, rtol=1e-12)  # the MAP's mean


def test_predict_cli_laplace_std_column_equals_the_model(folders, tmp_path):
    predict_cli = load_script("predict", "predict_cli_laplace_export")
    d, _ = folders["reg"]
    rows = _rows(M, 13)
    rows.to_csv(tmp_path / "new.csv", index=False)
    assert predict_cli.main(["--checkpoint", str(d), "--data", str(tmp_path / "new.csv"),
                             "--out", str(tmp_path / "p.csv"), "--laplace"]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["row", "price", "std[price]"]
    mean, std = jaxmlp.load_model(d).predict(rows, return_std=True)
    np.testing.assert_allclose(p["std[price]"], std, rtol=1e-12)
    np.testing.assert_allclose(p["price"], mean, rtol=1e-12)


def test_no_posterior_is_refused_naming_the_folder_and_train_laplace(folders):
    d, _ = folders["none"]
    model = jaxmlp.load_model(d)
    assert model.posterior is None
    rows = _rows(M, 14)
    with pytest.raises(ValueError, match=rf"predict_proba: .*the folder '{re.escape(str(d))}' "
                                         r"holds no laplace.npz.*train.py --laplace kron"):
        model.predict_proba(rows, laplace=True)
    with pytest.raises(ValueError, match=r"model file .*load the folder"):
        jaxmlp.load_model(d / "model.npz").predict(rows, laplace=True)
    with pytest.raises(ValueError, match="return_std: a classification model"):
        model.predict(rows, return_std=True)
    with pytest.raises(TypeError, match="laplace: expected True or False"):
        model.predict_proba(rows, laplace="yes")
    reg = jaxmlp.load_model(folders["reg"][0])
    with pytest.raises(ValueError, match=r"regression model .*return_std=True"):
        reg.predict_proba(rows, laplace=True)


def _copy(folder, to):
    to.mkdir()
    for name in ("model.npz", export.POSTERIOR_FILE):
        (to / name).write_bytes((folder / name).read_bytes())
    return to


def _rewrite(path, change):
    """Rewrites the .npz at ``path`` with ``change(arrays, header)`` applied (the digest
    kept as it was, unless ``change`` sets it)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays.pop("__jaxmlp__")))
    change(arrays, header)
    with open(path, "wb") as f:
        np.savez(f, **arrays, __jaxmlp__=np.array(json.dumps(header)))


def test_damaged_mismatched_and_newer_posteriors_are_refused_naming_the_file(folders, tmp_path):
    src, la = folders["cls"]
    rows = _rows(M, 15)

    def refused(folder, match):
        with pytest.raises(ValueError, match=match) as e:
            jaxmlp.load_model(folder).predict_proba(rows, laplace=True)
        assert f"'{os.path.join(folder, export.POSTERIOR_FILE)}'" in str(e.value)

    d = _copy(src, tmp_path / "damaged")
    _rewrite(d / export.POSTERIOR_FILE, lambda a, h: a.__setitem__(
        "U_A[1]", a["U_A[1]"] + 1e-9 * np.eye(4)))
    refused(d, "do not match the digest .* damaged")
    d = _copy(src, tmp_path / "truncated")
    blob = (d / export.POSTERIOR_FILE).read_bytes()
    (d / export.POSTERIOR_FILE).write_bytes(blob[: len(blob) // 2])
    refused(d, "cannot read .* as a .npz file")
    d = _copy(src, tmp_path / "newer")
    _rewrite(d / export.POSTERIOR_FILE, lambda a, h: h.__setitem__("format_version", 2))
    refused(d, "format version 2; this jaxmlp reads version 1")
    d = _copy(src, tmp_path / "other")  # a posterior of other params beside the model
    other = la.replace(params=_params(CLS_NET, 99))
    export.save_posterior(d / export.POSTERIOR_FILE, other)
    refused(d, "the posterior is not the model's")
    with pytest.raises(ValueError, match="posterior: the posterior is not the model's"):
        export.Model(CLS_NET, _params(CLS_NET, 0), posterior=other)
    fields, arrays = la.to_arrays()  # the rebuild's own checks, behind the digest
    with pytest.raises(ValueError, match=r"arrays: a 'kron' posterior .* holds .*got"):
        lp.Posterior.from_arrays(CLS_NET, fields, {k: v for k, v in arrays.items()
                                                   if k != "U_G[2]"})
    with pytest.raises(ValueError, match=r"arrays: eig_G\[1\] has shape \(4,\) float32"):
        lp.Posterior.from_arrays(CLS_NET, fields, {**arrays, "eig_G[1]": arrays[
            "eig_G[1]"].astype(np.float32)})
    with pytest.raises(ValueError, match="prior_precision holds a precision <= 0"):
        lp.Posterior.from_arrays(CLS_NET, fields, {**arrays, "prior_precision": -arrays[
            "prior_precision"]})
    with pytest.raises(ValueError, match="structure: expected one of"):
        lp.Posterior.from_arrays(CLS_NET, {**fields, "structure": "dense"}, arrays)
    with pytest.raises(ValueError, match=r"model.npz' is a model export .*not a Laplace posterior"):
        export.load_posterior(src / "model.npz")
    with pytest.raises(ValueError, match=r"laplace.npz' is a Laplace posterior .*load_posterior"):
        export.load(src / export.POSTERIOR_FILE)
    with pytest.raises(TypeError, match="posterior: expected a jaxmlp.laplace.Posterior"):
        export.save_posterior(tmp_path / "x.npz", {"W": 1})
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="float64 posterior; turn on 64-bit mode"):
            export.load_posterior(src / export.POSTERIOR_FILE)
    assert zipfile.is_zipfile(src / export.POSTERIOR_FILE)  # the source folder untouched


def test_predict_cli_multilabel_laplace_columns(tmp_path):
    """A multi-label posterior (saved by hand: train.py --laplace takes softmax, one sigmoid
    unit and regression): laplace_<label> and laplace_probability[<label>] beside the MAP's."""
    predict_cli = load_script("predict", "predict_cli_laplace_export")
    net = jaxmlp.Network((3, 2), ("sigmoid",), "multilabel_cross_entropy")
    prep = CLS_PREP._replace(task="multilabel", target_columns=("u", "v"), class_names=("u", "v"))
    params = _params(net, 21)
    la = lp.Posterior(net=net, structure="diag", prior_kind="scalar", n_data=9, params=params,
                      curvature={"ggn": jnp.asarray(np.arange(1.0, 9.0))},
                      prior_precision=jnp.asarray(0.5), temperature=jnp.asarray(1.0),
                      sigma_noise=jnp.asarray(1.0), loss=jnp.asarray(3.0))
    export.save(tmp_path / "model.npz", params, net, metadata={"preprocessing": prep.to_dict()})
    export.save_posterior(tmp_path / export.POSTERIOR_FILE, la)
    rows = _rows(M, 16)
    rows.to_csv(tmp_path / "new.csv", index=False)
    assert predict_cli.main(["--checkpoint", str(tmp_path), "--data", str(tmp_path / "new.csv"),
                             "--out", str(tmp_path / "p.csv"), "--laplace"]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["row", "u", "v", "probability[u]", "probability[v]", "laplace_u",
                               "laplace_v", "laplace_probability[u]", "laplace_probability[v]"]
    P = np.asarray(la.predictive(_inputs(rows))).T  # (LA11), sigmoid per label
    np.testing.assert_allclose(p[["laplace_probability[u]", "laplace_probability[v]"]], P,
                               rtol=1e-12)
    np.testing.assert_array_equal(p[["laplace_u", "laplace_v"]], (P >= 0.5).astype(int))
