"""A new user's runs: outputs kept out of the repository, paths from the caller's folder, the
own-table path of docs/own-data.md (train -> predict with ids -> jaxmlp.load_model -> DP to a
target epsilon), and the commands of that page run as written."""

import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, load_script

train_cli = load_script("train", "train_user_runs")
predict_cli = load_script("predict", "predict_user_runs")
from _common import output  # noqa: E402  (the scripts' own module, on the path by conftest)

DATA = Path(ROOT) / "examples" / "data"
FAST = ["--hidden", "16", "--no-progress", "--no-plot"]


@pytest.fixture
def user(tmp_path, monkeypatch):
    """(a fake repository root with a committed results/ file, the user's folder holding
    the example tables): the scripts write as if that were the repository, and take
    relative paths from the user's folder (JAXMLP_CALLER_DIR, as scripts/run.sh sets it)."""
    repo, home = tmp_path / "repo", tmp_path / "user"
    (repo / "results" / "train" / "wine").mkdir(parents=True)
    (repo / "results" / "train" / "wine" / "results.json").write_text("{}\n")
    home.mkdir()
    for f in ("wine.csv", "wine_new.csv"):
        shutil.copy(DATA / f, home / f)
    monkeypatch.setattr(output, "repo_root", lambda: repo)
    monkeypatch.setenv(output.CALLER_ENV, str(home))
    monkeypatch.chdir(tmp_path)  # not the user's folder: paths must come from the variable
    return repo, home


def _files(folder: Path) -> list:
    return sorted(f for f in os.listdir(folder) if f != ".jaxmlp.lock")  # the run's lock file


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_user_run_goes_to_a_new_runs_folder_never_results(user, capsys):
    repo, home = user
    committed = _tree(repo / "results")
    argv = ["--data", "wine.csv", "--target", "cultivar", "--impute", "median", "--epochs", "1",
            *FAST]
    assert train_cli.main(argv) == 0
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    runs = sorted((repo / "runs").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"train-wine-\d{8}-\d{6}(-\d+)?", r.name)
                                  for r in runs)
    for r in runs:
        assert {"results.json", "model.npz"} <= set(os.listdir(r))
        assert f"results:     {r / 'results.json'}" in out and f"model:       {r / 'model.npz'}" in out
    assert _tree(repo / "results") == committed
    assert "task inferred: classification (target 'cultivar' holds 3 distinct integer" in out


def test_relative_out_is_the_callers_and_an_earlier_run_is_never_written_beside(user, capsys):
    repo, home = user
    base = ["--data", "wine.csv", "--target", "cultivar", "--impute", "median", "--epochs", "2",
            "--out", "mine", *FAST[:-1]]
    assert train_cli.main(base) == 0
    assert _files(home / "mine") == ["learning_curves.svg", "model.npz", "results.json"]
    before = _tree(home / "mine")
    capsys.readouterr()
    assert train_cli.main([*base, "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert f"--out: {home / 'mine'} holds an earlier run (results.json, model.npz, " in err
    assert "--overwrite" in err and _tree(home / "mine") == before
    # --overwrite replaces the earlier run whole: no file of it is left (the plot is off now)
    assert train_cli.main([*base, "--epochs", "3", "--no-plot", "--overwrite"]) == 0
    assert _files(home / "mine") == ["model.npz", "results.json"]
    import json

    assert json.loads((home / "mine" / "results.json").read_text())["epochs_done"] == 3
    assert not (repo / "runs").exists() and not (Path.cwd() / "mine").exists()


def test_results_only_on_purpose():
    """Every experiment that writes files takes --out/--results (experiments/_common/output.py):
    none defaults to a path under results/."""
    scripts = [p for p in sorted((Path(ROOT) / "experiments").glob("*.py"))
               if not p.name.startswith("_") and p.name not in ("predict.py", "train.py")]
    writers = [p for p in scripts if "write_json" in p.read_text() or "savefig" in p.read_text()]
    assert len(writers) >= 15
    for p in writers:
        text = p.read_text()
        assert not re.search(r"default=[^,)]*results", text), p.name
        writes_only_when_asked = '"--out", default=None' in text  # sklearn_compare: a table
        assert ("add_out_arguments" in text and "resolve_out" in text) or writes_only_when_asked, p.name


def test_resolve_out_convention(user, monkeypatch):
    import argparse

    repo, home = user
    p = argparse.ArgumentParser()
    output.add_out_arguments(p, "results/gradcheck")
    new = output.resolve_out(p.parse_args([]), "gradcheck")
    assert Path(new).parent == repo / "runs" and Path(new).name.startswith("gradcheck-")
    assert output.resolve_out(p.parse_args(["--out", "g"]), "gradcheck") == str(home / "g")
    assert output.resolve_out(p.parse_args(["--results"]), "gradcheck") == str(repo / "results" / "gradcheck")
    with pytest.raises(SystemExit):  # argparse: not allowed with argument --out
        p.parse_args(["--results", "--out", "g"])
    (repo / "runs").mkdir()
    Path(new).mkdir()  # a folder of this second exists: the next run gets another one
    assert output.resolve_out(p.parse_args([]), "gradcheck") not in (new,)


@pytest.mark.slow  # ~20 s: five training runs
def test_the_new_user_path(user, capsys):
    """Own CSV (a text column, missing values) -> train.py -> predict.py on new rows with ids
    -> jaxmlp.load_model in Python -> DP to a target epsilon on the same table."""
    import jaxmlp
    import sys

    sys.path.insert(0, ROOT)
    from examples.data.make_examples import tables
    from sklearn.datasets import load_wine

    repo, home = user
    # without --impute: every column with missing values in one message, CLI spelling
    assert train_cli.main(["--data", "wine.csv", "--target", "cultivar", "--out", "w", *FAST]) == 2
    err = capsys.readouterr().err
    assert all(f"'{c}' (" in err for c in ("alcohol", "vineyard", "magnesium")), err
    assert err.count("error:") == 1 and "--impute mean or --impute median" in err
    assert "impute=" not in err and not (home / "w").exists()

    assert train_cli.main(["--data", "wine.csv", "--target", "cultivar", "--impute", "median",
                           "--lr", "0.01", "--epochs", "30", "--out", "w", *FAST]) == 0
    assert predict_cli.main(["--checkpoint", "w", "--data", "wine_new.csv", "--out", "p.csv"]) == 0
    new = pd.read_csv(home / "wine_new.csv")
    p = pd.read_csv(home / "p.csv")
    assert list(p.columns) == ["id", "prediction", "probability[0]", "probability[1]",
                               "probability[2]"]
    assert list(p["id"]) == list(new["id"])
    np.testing.assert_allclose(p.filter(like="probability").sum(axis=1), 1.0, rtol=1e-5)
    # the true cultivars of the new rows, from scikit-learn's data (matched on the measurements)
    raw = load_wine(as_frame=True)
    truth = [int(raw.target[np.isclose(raw.data["proline"], v)].iloc[0]) for v in new["proline"]]
    assert np.mean(p["prediction"].to_numpy() == np.asarray(truth)) >= 0.8

    model = jaxmlp.load_model(home / "w")
    proba = model.predict_proba(new.set_index("id"))  # a DataFrame (the id as its index)
    np.testing.assert_allclose(proba, p.filter(like="probability").to_numpy(), rtol=1e-6)
    cols = [c for c in new.columns if c != "id"]
    np.testing.assert_allclose(model.predict_proba(new[cols].to_numpy(dtype=object)), proba,
                               rtol=1e-6)  # a batch-first array of the feature columns
    assert list(model.predict(new.set_index("id"))) == list(p["prediction"])  # the column's ints

    # a model trained without --impute refuses new rows with missing values
    complete = pd.read_csv(home / "wine.csv").dropna()
    complete.to_csv(home / "complete.csv", index=False)
    assert train_cli.main(["--data", "complete.csv", "--target", "cultivar", "--epochs", "1",
                           "--out", "c", *FAST]) == 0
    capsys.readouterr()
    assert predict_cli.main(["--checkpoint", "c", "--data", "wine_new.csv", "--out", "q.csv"]) == 2
    err = capsys.readouterr().err
    assert "'magnesium' (1: row 3)" in err and "trained without --impute" in err
    assert not (home / "q.csv").exists()

    # DP on the same table: the noise calibrated so that the run spends the target
    code, res = train_cli.train(["--data", "wine.csv", "--target", "cultivar", "--impute",
                                 "median", "--dp", "--target-epsilon", "1", "--out", "dp", *FAST])
    assert code == 0 and res["status"] == "completed"
    pr = res["privacy"]
    assert pr["noise_calibrated"] and pr["target_epsilon"] == 1.0
    assert 0.99 <= pr["epsilon"] <= 1.0
    assert jaxmlp.load_model(home / "dp").predict(new.set_index("id")).shape == (10,)
    assert tables()[1]["id"].tolist() == new["id"].tolist()  # the shipped files are the script's


def _doc_commands(page: str) -> list[list[str]]:
    text = (Path(ROOT) / page).read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines()
            if line.startswith("bash scripts/run.sh")]


@pytest.mark.slow  # ~20 s: the docs' default epochs
def test_the_own_data_commands_of_the_docs_run_as_written(user, capsys):
    """docs/own-data.md's commands, in a user's copy of the repository layout (examples/data):
    each exits 0 and writes where it says."""
    repo, home = user
    shutil.copytree(DATA, home / "examples" / "data")
    commands = _doc_commands("docs/own-data.md")
    assert len(commands) >= 3
    for argv in commands:
        args = argv[2:]
        script = predict_cli if args and args[0] == "predict" else train_cli
        args = args[1:] if script is predict_cli else [*args, "--no-progress"]
        assert script.main(args) == 0, (argv, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "task inferred: classification" in out and "of target epsilon" in out
    assert (home / "runs" / "wine" / "model.npz").is_file()
    assert (home / "runs" / "wine" / "predictions.csv").is_file()


#: The experiment commands of README.md and docs/own-data.md in their quick forms, as a user
#: runs them (no --out, no --results). startup.py is left out: it installs a fresh .venv.
README_COMMANDS = [
    ["train.py", "--epochs", "1", "--no-progress"],
    ["gradcheck.py", "--quick"],
    ["accumulation_modes.py", "--quick", "--no-plots"],
    ["per_example_vs_batched.py", "--quick"],
    ["benchmark.py", "--quick", "--shapes", "tiny"],
    ["dp.py", "speed", "--quick", "--no-opacus", "--sizes", "256", "--rounds", "2"],
    ["ensemble_speed.py", "--quick", "--ks", "1,4", "--reps", "1", "--no-torch"],
    ["epoch_speed.py", "--samples", "1", "--epochs-per-sample", "1"],
    ["curvature.py", "--reps", "1", "--shapes", "small"],
    ["autoencoder.py", "--steps", "5", "--only", "adam"],
    ["train.py", "--data", "examples/data/wine.csv", "--target", "cultivar", "--impute",
     "median", "--epochs", "2", "--out", "runs/wine", "--no-progress"],
    ["predict.py", "--checkpoint", "runs/wine", "--data", "examples/data/wine_new.csv",
     "--out", "runs/wine/predictions.csv"],
]


@pytest.mark.slow  # minutes: every experiment once
def test_the_readme_commands_leave_a_clean_clone_clean(tmp_path):
    """Each experiment command of the README (quick forms), run in a fresh clone of the
    committed repository with this .venv's Python: every one exits 0 and `git status` is
    clean afterwards (user runs go to runs/, ignored by git; results/ is untouched)."""
    import subprocess
    import sys

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True)
    env = {**os.environ, "PYTHONPATH": str(clone), "JAXMLP_CALLER_DIR": str(clone)}
    env.pop("JAX_ENABLE_X64", None)
    for cmd in README_COMMANDS:
        proc = subprocess.run([sys.executable, f"experiments/{cmd[0]}", *cmd[1:]], cwd=clone,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=clone, capture_output=True, text=True, check=True).stdout
    assert status == "", status
    assert len(list((clone / "runs").iterdir())) >= len(README_COMMANDS) - 2
