"""train.py --data and experiments/predict.py: own tables in, predictions out, bad input exit 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, load_script  # noqa: E402


def _load(name):
    return load_script(name, f"{name}_cli")


train_cli, predict_cli = _load("train"), _load("predict")
FAST = ["--hidden", "8", "--epochs", "3", "--no-progress", "--no-plot"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    d = tmp_path_factory.mktemp("shop")
    rng = np.random.default_rng(0)
    m = 240
    f = pd.DataFrame({"size": rng.normal(10, 3, m), "colour": rng.choice(["red", "green", "blue"], m),
                      "w": rng.normal(0, 1, m)})
    f["kind"] = np.where(f["size"] + 3 * (f["colour"] == "red") > 11.5, "big", "small")
    f["price"] = 2 * f["size"] + 5 * (f["colour"] == "blue") + rng.normal(0, 0.5, m)
    f.to_csv(d / "shop.csv", index=False)
    runs = {}
    saved = []  # train.py --laplace's posterior as it was in memory when written
    write = train_cli.laplace_report.write_posterior
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_cli.laplace_report, "write_posterior",
                   lambda cfg, la: (saved.append(la), write(cfg, la))[1])
        for target, extra in (("kind", ["--laplace", "kron"]), ("price", [])):
            out = d / f"run_{target}"
            assert train_cli.main(["--data", str(d / "shop.csv"), "--target", target, *FAST,
                                   "--checkpoint-every", "3", "--out", str(out), *extra]) == 0
            runs[target] = out
    runs["kind_posterior"] = saved[0]
    return d, f, runs


def test_train_on_a_csv_infers_the_task_and_saves_what_predicting_needs(shop, capsys):
    d, f, runs = shop
    with open(runs["kind"] / "results.json") as fh:
        res = json.load(fh)
    assert res["network"]["cost"] == "binary_cross_entropy" and res["network"]["sizes"][0] == 6
    prep = res["preprocessing"]
    assert prep["class_names"] == ["big", "small"] and prep["categories"] == {"colour": ["blue", "green", "red"]}
    assert res["config"]["data"]["target"] == "kind" and res["dataset"]["name"] == "shop"
    assert (runs["kind"] / "model.npz").is_file()
    assert res["laplace"]["posterior_file"] == "laplace.npz" and (runs["kind"] / "laplace.npz").is_file()
    assert not (runs["price"] / "laplace.npz").exists()  # written only with --laplace
    out = d / "again"
    assert train_cli.main(["--data", str(d / "shop.csv"), "--target", "price", *FAST, "--out", str(out)]) == 0
    assert "task inferred: regression (target 'price' holds non-integer numbers" in capsys.readouterr().out


def test_predict_classification_probabilities_match_the_network(shop, tmp_path):
    import jaxmlp
    from jaxmlp.data import export
    from jaxmlp.data import tabular

    d, f, runs = shop
    new = f.drop(columns=["kind"]).iloc[:20]
    new.to_parquet(tmp_path / "new.parquet")
    assert predict_cli.main(["--checkpoint", str(runs["kind"]), "--data", str(tmp_path / "new.parquet"),
                             "--out", str(tmp_path / "p.csv")]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["row", "prediction", "probability[big]", "probability[small]"]
    assert list(p["row"]) == list(range(20))  # no id column: the row numbers
    net, params, meta = export.load(runs["kind"] / "model.npz")
    prep = tabular.Preprocessing.from_dict(meta["preprocessing"])
    A = np.asarray(jaxmlp.predict(net, params, tabular.transform(prep, new)))[0]
    np.testing.assert_allclose(p["probability[small]"], A, rtol=1e-6)
    np.testing.assert_allclose(p["probability[big]"] + p["probability[small]"], 1.0, rtol=1e-6)
    assert list(p["prediction"]) == ["small" if a >= 0.5 else "big" for a in A]


def test_predict_laplace_columns_equal_load_model_and_the_posterior_in_memory(shop, tmp_path):
    """predict.py --laplace: the MAP's columns, then the Laplace predictive's, equal to
    load_model(folder).predict_proba(rows, laplace=True) and to the posterior train.py held
    in memory when it wrote laplace.npz (float32)."""
    import jax.numpy as jnp

    import jaxmlp
    from jaxmlp.data import tabular

    d, f, runs = shop
    new = f.drop(columns=["kind"]).iloc[:20]
    new.to_csv(tmp_path / "new.csv", index=False)
    assert predict_cli.main(["--checkpoint", str(runs["kind"]), "--data", str(tmp_path / "new.csv"),
                             "--out", str(tmp_path / "p.csv"), "--laplace"]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert list(p.columns) == ["row", "prediction", "probability[big]", "probability[small]",
                               "laplace_prediction", "laplace_probability[big]",
                               "laplace_probability[small]"]
    model = jaxmlp.load_model(runs["kind"])
    P = model.predict_proba(new, laplace=True)
    np.testing.assert_allclose(p[["laplace_probability[big]", "laplace_probability[small]"]], P,
                               rtol=1e-12)
    assert list(p["laplace_prediction"]) == list(model.classes_[P.argmax(1)])
    np.testing.assert_allclose(p["probability[small]"], model.predict_proba(new)[:, 1], rtol=1e-12)
    la = runs["kind_posterior"]
    X = jnp.asarray(tabular.transform(model.preprocessing, new), jnp.float32)
    np.testing.assert_allclose(P[:, 1], np.asarray(la.predictive(X))[0], rtol=1e-6)
    assert model.posterior.params[0]["W"].dtype == jnp.float32


def test_predict_laplace_refused_without_a_usable_posterior(shop, tmp_path, capsys):
    d, f, runs = shop
    ok = ["--data", str(d / "shop.csv"), "--out", str(tmp_path / "p.csv"), "--laplace"]
    err = _stderr_of(predict_cli.main, ["--checkpoint", str(runs["price"]), *ok], capsys)
    assert f"the folder '{runs['price']}' holds no laplace.npz" in err
    assert "train.py --laplace kron" in err
    err = _stderr_of(predict_cli.main, ["--checkpoint", str(runs["kind"] / "checkpoints"), *ok],
                     capsys)
    assert "--laplace:" in err and "is not a run folder with a laplace.npz" in err
    bad = tmp_path / "damaged"
    bad.mkdir()
    for name in ("model.npz", "results.json", "laplace.npz"):
        (bad / name).write_bytes((runs["kind"] / name).read_bytes())
    (bad / "laplace.npz").write_bytes((bad / "laplace.npz").read_bytes()[:-100])
    err = _stderr_of(predict_cli.main, ["--checkpoint", str(bad), *ok], capsys)
    assert f"--laplace: cannot read '{bad / 'laplace.npz'}'" in err
    assert not (tmp_path / "p.csv").exists()


def test_predict_regression_in_target_units_and_from_orbax_checkpoints(shop, tmp_path, capsys):
    d, f, runs = shop
    for source in (runs["price"], runs["price"] / "checkpoints"):
        out = tmp_path / f"p{len(str(source))}.csv"
        assert predict_cli.main(["--checkpoint", str(source), "--data", str(d / "shop.csv"),
                                 "--out", str(out)]) == 0
        p = pd.read_csv(out)
        assert list(p.columns) == ["row", "price"] and len(p) == len(f)
        assert abs(p["price"].mean() - f["price"].mean()) < 0.5 * f["price"].std()
    a, b = (pd.read_csv(tmp_path / f"p{len(str(s))}.csv") for s in (runs["price"], runs["price"] / "checkpoints"))
    np.testing.assert_allclose(a["price"], b["price"], rtol=1e-6)
    # from the checkpoints, the epoch used is said (the run completed: no status note)
    err = capsys.readouterr().err
    assert f"predict.py: no model.npz in {runs['price'] / 'checkpoints'}: predicting with its " \
           "newest intact checkpoint, epoch " in err and "status" not in err


def test_predict_bundled_dataset_run_with_named_columns(tmp_path):
    from jaxmlp.data import datasets

    out = tmp_path / "bc"
    assert train_cli.main(["--dataset", "breast_cancer", *FAST, "--out", str(out)]) == 0
    X, _ = datasets._read_sklearn_files("breast_cancer")
    pd.DataFrame(X[:5], columns=datasets.feature_names("breast_cancer")).to_csv(tmp_path / "x.csv", index=False)
    assert predict_cli.main(["--checkpoint", str(out), "--data", str(tmp_path / "x.csv"),
                             "--out", str(tmp_path / "p.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "p.csv").columns) == ["row", "prediction", "probability[malignant]",
                                                            "probability[benign]"]


def _stderr_of(fn, argv, capsys):
    assert fn(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.mark.parametrize("argv, match", [
    (["--data", "{d}/none.csv", "--target", "kind"], "--data: file '.*none.csv' does not exist"),
    (["--data", "{d}/bad.csv", "--target", "kind"], "--data: cannot parse"),
    (["--data", "{d}/shop.csv", "--target", "nope"], "--target: column 'nope' is not in the table"),
    (["--data", "{d}/shop.csv", "--target", "colour", "--task", "regression"],
     "--task: regression needs numeric targets"),
    (["--data", "{d}/shop.csv"], "--target: --data needs the target"),
    (["--target", "kind"], "--target: only with --data"),
    (["--data", "{d}/shop.csv", "--target", "kind", "--dataset", "digits"], "either --dataset or --data"),
    (["--data", "{d}/holes.csv", "--target", "kind"], r"--data: missing values in feature "
     r"column, rows counted from 0: 'w' \(1: row 4\); fill them with --impute mean or --impute median"),
])
def test_train_bad_data_exits_2_with_one_message(shop, capsys, argv, match):
    d, f, _ = shop
    (d / "bad.csv").write_text('a,b\n1,"2\n')
    g = f.copy()
    g.loc[4, "w"] = np.nan
    g.to_csv(d / "holes.csv", index=False)
    import re
    err = _stderr_of(train_cli.main, [a.format(d=d) for a in argv] + FAST + ["--out", str(d / "x")], capsys)
    assert re.search(match, err), err


def test_predict_bad_input_exits_2_with_one_message(shop, tmp_path, capsys):
    from jaxmlp.data import export

    d, f, runs = shop
    ok = ["--data", str(d / "shop.csv"), "--out", str(tmp_path / "p.csv")]
    f.drop(columns=["w"]).to_csv(tmp_path / "fewer.csv", index=False)
    cases = [
        (["--checkpoint", str(tmp_path / "none"), *ok], "--checkpoint: .* does not exist"),
        (["--checkpoint", str(tmp_path), *ok], "holds neither model.npz"),
        (["--checkpoint", str(runs["kind"]), "--data", str(tmp_path / "fewer.csv"), "--out",
          str(tmp_path / "p.csv")], r"--data: its columns differ .*missing \['w'\]"),
        (["--checkpoint", str(runs["kind"]), "--data", str(tmp_path / "nope.csv"), "--out",
          str(tmp_path / "p.csv")], "--data: file .* does not exist"),
        (["--checkpoint", str(runs["kind"]), "--data", str(d / "shop.csv"), "--out",
          str(tmp_path / "p.txt")], "--out: expected a file ending in .csv or .parquet"),
        (["--checkpoint", str(runs["kind"]), "--data", str(d / "shop.csv"), "--out",
          str(tmp_path / "no" / "p.csv")], "--out: the folder .* does not exist"),
        (["--checkpoint", str(runs["kind"])], "required: --data, --out"),
    ]
    # an export without preprocessing metadata
    net, params, _ = export.load(runs["kind"] / "model.npz")
    bare = tmp_path / "bare"
    bare.mkdir()
    export.save(bare / "model.npz", params, net)
    cases.append((["--checkpoint", str(bare), *ok], "no preprocessing metadata"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.npz").write_bytes(b"junk")
    cases.append((["--checkpoint", str(tmp_path / "junk"), *ok], "cannot read"))
    import re
    for argv, match in cases:
        err = _stderr_of(predict_cli.main, argv, capsys)
        assert re.search(match, err), (argv, err)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_predict_as_a_script(shop, tmp_path):
    d, f, runs = shop
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "predict.py"),
                           "--checkpoint", str(runs["kind"]), "--data", str(d / "shop.csv"),
                           "--out", str(tmp_path / "p.csv")], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(f)


def test_a_data_run_resumes_from_its_checkpoint_with_the_same_table(shop, tmp_path):
    d, f, runs = shop
    out = tmp_path / "resumed"
    assert train_cli.main(["--resume", str(runs["kind"]), "--epochs", "4", "--out", str(out),
                           "--no-progress", "--no-plot"]) == 0
    with open(out / "results.json") as fh:
        res = json.load(fh)
    assert res["resumed_from_epoch"] == 3 and res["epochs_done"] == 4
    assert res["config"]["data"]["target"] == "kind" and res["preprocessing"]["task"] == "classification"


def test_train_id_column_is_left_out_and_refused_when_unnamed(shop, tmp_path, capsys):
    """train.py --id COLUMN: the row ids are not a feature (saved in the run's config, so a
    resume keeps them out); without --id a column named id of distinct values exits 2 naming --id."""
    d, f, _ = shop
    f.assign(id=np.arange(len(f))).to_csv(tmp_path / "ids.csv", index=False)
    assert train_cli.main(["--data", str(tmp_path / "ids.csv"), "--target", "kind", *FAST,
                           "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--id: column 'id' holds a distinct value in every row" in err
    assert not (tmp_path / "bad").exists()
    assert train_cli.main(["--data", str(tmp_path / "ids.csv"), "--target", "kind", "--id", "id",
                           *FAST, "--out", str(tmp_path / "ok")]) == 0
    res = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert "id" not in res["preprocessing"]["feature_columns"]
    assert res["config"]["data"]["exclude"] == ["id"]
    assert train_cli.main(["--dataset", "breast_cancer", "--id", "id", *FAST,
                           "--out", str(tmp_path / "bc")]) == 2
    assert "--id: only with --data FILE" in capsys.readouterr().err


@pytest.mark.slow  # an ensemble run
def test_an_ensembles_checkpoints_point_to_its_model_file(tmp_path, capsys):
    """predict.py from an ensemble run's checkpoints/ says they are read by --resume only and
    names model.npz (not "damaged"); the run folder's model.npz predicts, averaging members."""
    from jaxmlp.data import datasets

    out = tmp_path / "ens"
    assert train_cli.main(["--dataset", "breast_cancer", "--ensemble", "2", "--checkpoint-every",
                           "1", *FAST, "--out", str(out)]) == 0
    X, _ = datasets._read_sklearn_files("breast_cancer")
    pd.DataFrame(X[:5], columns=datasets.feature_names("breast_cancer")).to_csv(tmp_path / "x.csv", index=False)
    capsys.readouterr()
    assert predict_cli.main(["--checkpoint", str(out / "checkpoints"), "--data",
                             str(tmp_path / "x.csv"), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "are an ensemble's (2 members), which only train.py --resume reads" in err
    assert "damaged" not in err and "another architecture" not in err
    assert predict_cli.main(["--checkpoint", str(out), "--data", str(tmp_path / "x.csv"),
                             "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 5
