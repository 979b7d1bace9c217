"""experiments/train.py: bad input exits 2 before training, outputs, NaN stop, resume bit for bit."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.train.checkpoint import Checkpoints, latest_epoch

from helpers import ROOT, load_script  # noqa: E402

SCRIPT = os.path.join(ROOT, "experiments", "train.py")

cli = load_script("train", "train_cli")

# a small, fast configuration (breast cancer: 455 train examples, 7 minibatches of 64)
SMALL = ["--dataset", "breast_cancer", "--hidden", "8", "--batch-size", "64", "--no-progress"]


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One checkpointed run: 4 epochs, checkpoints at epochs 2 and 4."""
    out = str(tmp_path_factory.mktemp("cli") / "run")
    assert cli.main([*SMALL, "--epochs", "4", "--checkpoint-every", "2", "--out", out]) == 0
    return out


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "mnist"], "--dataset: expected one of ['digits', 'breast_cancer', 'multilabel', 'diabetes'], got 'mnist'"),
        (["--optimizer", "adagrad"], "--optimizer: expected one of ['sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop', 'kfac'], got 'adagrad'"),
        (["--lr", "0"], "--lr: expected a finite learning rate > 0, got 0.0"),
        (["--lr", "-0.1"], "--lr: expected a finite learning rate > 0, got -0.1"),
        (["--lr", "nan"], "--lr: expected a finite learning rate > 0, got nan"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
        (["--batch-size", "-5"], "--batch-size: expected a positive integer, got -5"),
        (["--batch-size", "1439"], "--batch-size: expected at most the 1438 training examples of digits, got 1439"),
        (["--hidden", "0"], "--hidden: expected positive integers, got 0"),
        (["--hidden", "64", "-3"], "--hidden: expected positive integers, got -3"),
        (["--hidden", "12.5"], "--hidden: expected positive integers, got '12.5'"),
        (["--hidden", "wide"], "--hidden: expected positive integers, got 'wide'"),
        (["--hidden", ","], "--hidden: expected at least one positive integer"),
        (["--activation", "swish"], "--activation: expected one of"),
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--schedule", "step"], "--schedule: expected one of"),
        (["--weight-decay", "-1"], "--weight-decay: expected a finite number >= 0"),
        (["--checkpoint-every", "-1"], "--checkpoint-every: expected an integer >= 0, got -1"),
        (["--seed", "-1"], "--seed: expected a non-negative integer"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_exits_2_before_training(argv, message, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main([*argv, "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and message in err, err
    assert not os.path.exists(out)  # nothing trained, nothing written


def test_resume_past_a_decaying_schedules_horizon_is_refused(tmp_path, capsys):
    """A cosine schedule's horizon is its first run's epochs (the rate is 0 past it): a resume
    with more epochs would train nothing, so it exits 2 saying so; the same --epochs resumes."""
    out = str(tmp_path / "cos")
    assert cli.main([*SMALL, "--epochs", "2", "--schedule", "cosine", "--checkpoint-every", "1",
                     "--no-plot", "--out", out]) == 0
    capsys.readouterr()
    assert cli.main(["--resume", out, "--epochs", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--epochs: the run's cosine schedule ends at its first run's 2 epochs" in err
    assert "the learning rate is 0" in err and "got --epochs 4" in err


def test_bad_resume_exits_2(run_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--resume", str(empty)], f"--resume: no checkpoint in {str(empty)!r}"),
        (["--resume", str(tmp_path / "missing")], "is not a directory"),
        (["--resume", run_dir, "--hidden", "16"],
         "is of another architecture: --hidden [16] was given, the checkpoint has [8] "
         "(network [30, 8, 1])"),
        (["--resume", run_dir, "--dataset", "diabetes"], "is of another architecture: --dataset diabetes"),
        (["--resume", run_dir, "--activation", "tanh"], "is of another architecture: --activation tanh"),
        (["--resume", run_dir, "--lr", "0.5"], "--lr 0.5 differs from the checkpoint's 0.001"),
        (["--resume", run_dir, "--optimizer", "sgd"], "--optimizer sgd differs from the checkpoint's adam"),
        (["--resume", run_dir, "--epochs", "3"], "the checkpoint is at epoch 4, more than --epochs 3"),
    ]
    # a fresh run must not write over the checkpoints of another run
    assert cli.main([*SMALL, "--epochs", "4", "--checkpoint-every", "2", "--out", run_dir]) == 2
    err = capsys.readouterr().err
    assert f"--out: {run_dir} holds an earlier run (results.json, model.npz" in err
    assert f"continue it with --resume {run_dir}" in err
    for argv, message in cases:
        assert cli.main([*argv, "--out", out, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
    assert not os.path.exists(out)


def test_resume_refuses_arrays_of_another_architecture(run_dir, tmp_path, capsys):
    """The saved arrays themselves are checked, not only the saved configuration (the meta
    is rewritten WITH a valid digest, as another writer would; an edit without one is
    refused as damage, below)."""
    from jaxmlp.train.checkpoint import _meta_digest

    bad = str(tmp_path / "bad")
    shutil.copytree(run_dir, bad)
    for epoch in (2, 4):
        meta_file = os.path.join(bad, "checkpoints", str(epoch), "meta", "metadata")
        with open(meta_file) as f:
            meta = json.load(f)
        meta["config"]["hidden"] = [16]  # the arrays stay (30, 8), (1, 8)
        meta["network"]["sizes"] = [30, 16, 1]
        record = meta.pop("integrity")
        record["meta"] = _meta_digest(meta)
        with open(meta_file, "w") as f:
            json.dump({**meta, "integrity": record}, f)
    assert cli.main(["--resume", bad, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and "epoch 4: " in err and "epoch 2: " in err, err
    assert "params/0/W holds shape (8, 30) float32, expected shape (16, 30) float32" in err, err


def test_resume_falls_back_past_a_damaged_checkpoint(run_dir, tmp_path, capsys):
    """Epoch 4's array files replaced by epoch 2's (well-formed, wrong numbers: what a bit
    flip in a data file gives): --resume says it skips epoch 4, continues from epoch 2 and
    reaches the uninterrupted run's parameters bit for bit; the damaged checkpoint is moved
    aside and epoch 4 is written again."""
    bad = str(tmp_path / "bad")
    shutil.copytree(run_dir, bad)
    cdir = os.path.join(bad, "checkpoints")
    shutil.rmtree(os.path.join(cdir, "4", "state"))
    shutil.copytree(os.path.join(cdir, "2", "state"), os.path.join(cdir, "4", "state"))
    assert cli.main(["--resume", bad, "--no-progress", "--no-plot"]) == 0
    err = capsys.readouterr().err
    assert "skipped checkpoint of epoch 4: checkpoint " in err, err
    assert "do not match the digest recorded when they were saved" in err, err
    assert "resuming from epoch 2, the newest intact checkpoint" in err, err
    assert f"moved the damaged checkpoint of epoch 4 to {os.path.join(cdir, '4.damaged')}" in err
    res = _results(bad)
    assert res["resumed_from_epoch"] == 2 and res["epochs_done"] == 4
    assert res["final_params_sha256"] == _results(run_dir)["final_params_sha256"]
    with Checkpoints(cdir) as ck:
        assert ck.epochs() == [2, 4] and ck.newest_intact(_like_small()).skipped == []
    assert os.path.isdir(os.path.join(cdir, "4.damaged"))


def test_resume_refuses_an_edited_meta_and_exits_2_when_nothing_is_intact(run_dir, tmp_path):
    """Damaged metadata (epoch 4: truncated) and a missing array file (epoch 2): exit 2, one
    message listing both, in a fresh process so that stray orbax/asyncio output would show."""
    bad = str(tmp_path / "bad")
    shutil.copytree(run_dir, bad)
    cdir = os.path.join(bad, "checkpoints")
    meta_file = os.path.join(cdir, "4", "meta", "metadata")
    with open(meta_file, "rb") as f:
        head = f.read()[:50]
    with open(meta_file, "wb") as f:
        f.write(head)
    os.remove(os.path.join(cdir, "2", "state", "manifest.ocdbt"))
    out = subprocess.run([sys.executable, SCRIPT, "--resume", bad, "--no-progress"],
                         env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith("train.py: error: --resume: no intact checkpoint in "), out.stderr
    assert "4/meta/metadata is damaged" in out.stderr and "epoch 2: checkpoint " in out.stderr
    assert out.stderr.count("train.py") == 1, out.stderr
    assert "Traceback" not in out.stderr and "Event loop" not in out.stderr, out.stderr


def _like_small():
    net = jaxmlp.Network((30, 8, 1), ("relu", "sigmoid"), "binary_cross_entropy")
    opt = train.make_optimizer("adam", 1e-3)
    params = jaxmlp.init_params(net, np.array([0, 0], np.uint32))
    return train.TrainState(params, opt.init(params), np.zeros(2, np.uint32), 0)


# ----------------------------------------------------------------------------- outputs


def test_outputs_of_a_run(run_dir):
    res = _results(run_dir)
    assert res["status"] == "completed" and res["epochs_done"] == 4
    assert res["network"] == {"sizes": [30, 8, 1], "activations": ["relu", "sigmoid"],
                              "cost": "binary_cross_entropy"}
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4]
    for key in ("train_cost", "test_cost", "train_accuracy", "test_accuracy", "running_cost"):
        assert np.isfinite(res["history"][-1][key])
    assert set(res["final"]) == {"train", "test"} and "accuracy" in res["final"]["test"]
    assert res["final"]["test"] == {k[5:]: v for k, v in res["history"][-1].items() if k.startswith("test_")}
    m_train = res["dataset"]["m_train"]
    assert res["dataset"]["steps_per_epoch"] == m_train // 64 == 7
    assert res["dataset"]["examples_skipped_per_epoch"] == m_train - 7 * 64
    assert res["jax"]["backend"] == "cpu" and res["wall_seconds"] > 0 and res["examples_per_second"] > 0
    with open(os.path.join(run_dir, "learning_curves.svg")) as f:
        svg = f.read()
    assert svg.startswith("<svg") and svg.count("<polyline") == 5 and "cost J" in svg
    assert Checkpoints(os.path.join(run_dir, "checkpoints")).epochs() == [2, 4]


def test_resume_in_process_reaches_the_same_parameters_bit_for_bit(tmp_path):
    full = str(tmp_path / "full")
    assert cli.main([*SMALL, "--epochs", "5", "--checkpoint-every", "2", "--out", full, "--no-plot"]) == 0
    # keep only the checkpoint of epoch 2, as if the run had died during epoch 3
    cdir = os.path.join(full, "checkpoints")
    for e in (4, 5):
        shutil.rmtree(os.path.join(cdir, str(e)))
    resumed = str(tmp_path / "resumed")
    assert cli.main(["--resume", full, "--out", resumed, "--no-progress", "--no-plot"]) == 0
    a, b = _results(full), _results(resumed)
    assert b["resumed_from_epoch"] == 2 and b["epochs_done"] == 5
    assert b["final_params_sha256"] == a["final_params_sha256"]
    drop = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [drop(h) for h in b["history"]] == [drop(h) for h in a["history"]]
    assert b["config"]["checkpoint_every"] == 2  # inherited from the saved run
    assert Checkpoints(os.path.join(resumed, "checkpoints")).epochs() == [4, 5]


def test_data_parallel_flag_on_one_device_gives_the_same_run(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main([*SMALL, "--epochs", "2", "--out", a, "--no-plot"]) == 0
    assert cli.main([*SMALL, "--epochs", "2", "--out", b, "--no-plot", "--data-parallel"]) == 0
    ra, rb = _results(a), _results(b)
    assert rb["config"]["data_parallel"] and len(rb["jax"]["devices"]) >= 1
    np.testing.assert_allclose(rb["final"]["test"]["cost"], ra["final"]["test"]["cost"], rtol=1e-5)


# ----------------------------------------------------------------------------- divergence


def test_divergence_stops_with_epoch_and_step(tmp_path, capsys):
    out = str(tmp_path / "nan")
    code = cli.main(["--dataset", "diabetes", "--optimizer", "sgd", "--lr", "1000", "--out", out,
                     "--no-progress", "--no-plot"])
    err = capsys.readouterr().err
    assert code == 3
    assert "training stopped: the minibatch cost" in err and "at epoch 1, step " in err
    assert "no checkpoint was written" in err
    assert _results(out)["status"] == "diverged"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """The epoch function is wrapped so that epoch 3 turns NaN at its second step."""
    real = train.step.make_train_epoch

    def poisoned(net, optimizer, batch_size, **kw):
        epoch_fn = real(net, optimizer, batch_size, **kw)
        calls = []

        def wrapped(params, opt_state, key, X, Y):
            calls.append(1)
            params, opt_state, m = epoch_fn(params, opt_state, key, X, Y)
            if len(calls) == 3:
                params = [{k: v * np.nan for k, v in layer.items()} for layer in params]
                m = m._replace(cost=m.cost.at[1:].set(np.nan))
            return params, opt_state, m

        return wrapped

    monkeypatch.setattr(train.step, "make_train_epoch", poisoned)
    out = str(tmp_path / "run")
    assert cli.main([*SMALL, "--epochs", "6", "--checkpoint-every", "1", "--out", out, "--no-plot"]) == 3
    err = capsys.readouterr().err
    cdir = os.path.join(out, "checkpoints")
    assert (f"the minibatch cost became NaN at epoch 3, step 2 of 7; the last good checkpoint, "
            f"epoch 2, is kept in {cdir}") in err, err
    with Checkpoints(cdir) as ck:
        assert ck.epochs() == [1, 2]
        net = jaxmlp.Network((30, 8, 1), ("relu", "sigmoid"), "binary_cross_entropy")
        opt = train.make_optimizer("adam", 1e-3)
        params = jaxmlp.init_params(net, np.array([0, 0], np.uint32))
        state = ck.restore(train.TrainState(params, opt.init(params), np.zeros(2, np.uint32), 0))
        assert state.epoch == 2 and all(np.all(np.isfinite(x)) for x in jaxmlp_leaves(state.params))
    res = _results(out)
    assert res["status"] == "diverged" and res["epochs_done"] == 2


def jaxmlp_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------- kill and resume


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters_bit_for_bit(tmp_path):
    """A training subprocess is SIGKILLed after its second checkpoint (possibly in the middle
    of writing the next one); resuming reaches the parameters of an uninterrupted run."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    args = [*SMALL, "--epochs", "150", "--no-plot"]
    killed, full, resumed = (str(tmp_path / n) for n in ("killed", "full", "resumed"))
    py = [sys.executable, SCRIPT]
    p_kill = subprocess.Popen([*py, *args, "--checkpoint-every", "1", "--out", killed], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p_full = subprocess.Popen([*py, *args, "--out", full], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cdir = os.path.join(killed, "checkpoints")
    deadline = time.monotonic() + 120
    while (latest_epoch(cdir) or 0) < 2:
        assert p_kill.poll() is None, p_kill.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    p_kill.kill()
    p_kill.wait()
    at = latest_epoch(cdir)
    assert 2 <= at < 150, at
    assert p_full.wait(timeout=120) == 0, p_full.stderr.read().decode()[-2000:]
    out = subprocess.run([*py, "--resume", killed, "--checkpoint-every", "0", "--out", resumed,
                          "--no-progress", "--no-plot"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = _results(full), _results(resumed)
    assert b["resumed_from_epoch"] >= 2 and b["epochs_done"] == 150
    assert b["final_params_sha256"] == a["final_params_sha256"]
    assert b["final"] == a["final"]


# ----------------------------------------------------------------------------- slow: targets


_load_script = load_script


@pytest.mark.slow
def test_train_all_meets_the_targets_on_the_defaults(tmp_path):
    train_all = _load_script("train_all")
    assert train_all.main(["--out", str(tmp_path), "--no-progress"]) == 0
    with open(tmp_path / "summary.json") as f:
        summary = json.load(f)
    assert summary["all_targets_met"]
    assert [r["dataset"] for r in summary["rows"]] == ["digits", "breast_cancer", "multilabel", "diabetes"]


@pytest.mark.slow
def test_epoch_speed_script_runs(tmp_path):
    epoch_speed = _load_script("epoch_speed")
    out = tmp_path / "speed.json"
    assert epoch_speed.main(["--samples", "2", "--epochs-per-sample", "1", "--out", str(out)]) == 0
    with open(out) as f:
        rows = json.load(f)["rows"]
    assert rows[0]["variant"] == "jax scan" and rows[1]["variant"] == "jax loop"
    assert "jax scan with jax.random.permutation" in [r["variant"] for r in rows]


@pytest.mark.slow
def test_shuffle_speed_script_runs(tmp_path):
    shuffle_speed = _load_script("shuffle_speed")
    out = tmp_path / "shuffle.json"
    assert shuffle_speed.main(["--samples", "2", "--target-ms", "1", "--out", str(out)]) == 0
    with open(out) as f:
        rows = json.load(f)["rows"]
    assert [r["m"] for r in rows] == list(shuffle_speed.SIZES)
    assert all(r["jaxmlp_us"] > 0 and r["jax_random_us"] > 0 for r in rows)


def test_resume_of_a_bundled_run_recorded_with_text_classes_is_accepted():
    """Checkpoints of bundled datasets written before their classes were integers recorded
    class_values null: a resume reads the same data and preprocessing, so it goes on; the
    class names and every other field are still compared."""
    guards = sys.modules["_common.guards"]
    cfg = {"dataset": "breast_cancer", "data": None, "seed": 0}
    from _common import train_config

    _, prep = train_config.load_data(cfg)
    saved = json.loads(json.dumps(prep.to_dict()))
    assert saved["class_values"] is not None
    old = dict(saved, class_values=None)
    guards.load_data(dict(cfg), {"preprocessing": old})  # accepted
    with pytest.raises(cli.UsageError, match=r"differs from the checkpoint's in \['class_names'\]"):
        guards.load_data(dict(cfg), {"preprocessing": dict(old, class_names=["a", "b"])})


def test_the_printed_predict_command_pastes_from_the_folder_the_run_started_in(monkeypatch):
    """From the repository root: ``bash scripts/run.sh predict ...``; from any other folder
    the script's absolute path, so that the line runs where it was printed."""
    report = sys.modules["_common.train_report"]
    output = sys.modules["_common.output"]
    cfg = {"out": "/somewhere/run", "checkpoint_every": 0}
    root = str(output.repo_root())
    monkeypatch.setenv(output.CALLER_ENV, root)
    assert "predict:     bash scripts/run.sh predict --checkpoint /somewhere/run " in \
        report.where(cfg, "/somewhere/run/model.npz", None)
    monkeypatch.setenv(output.CALLER_ENV, "/tmp")
    assert (f"predict:     bash {os.path.join(root, 'scripts', 'run.sh')} predict --checkpoint "
            "/somewhere/run ") in report.where(cfg, "/somewhere/run/model.npz", None)


def test_resume_on_another_placement_is_refused():
    """A checkpoint records the processes and devices its run was placed on; a resume placed
    otherwise (another process count, or without --data-parallel) would split other examples
    over the devices: refused before training, naming both placements."""
    guards = sys.modules["_common.guards"]
    cfg = {"data_parallel": False, "ensemble": None, "batch_size": 8,
           "saved_placement": {"processes": 2, "devices": 4}}
    with pytest.raises(cli.UsageError, match=r"^--resume: the checkpoint's run was placed on 2 "
                                             r"process\(es\) and 4 device\(s\), this one on 1 "
                                             r"process\(es\) and 1 device\(s\)"):
        guards.place(cfg, (), ())
    cfg["saved_placement"] = {"processes": 1, "devices": 1}  # as saved: placed as before
    assert guards.place(cfg, ("sets",), "tree") == (None, ("sets",), "tree")
    assert cfg["placement"] == {"processes": 1, "devices": 1}
