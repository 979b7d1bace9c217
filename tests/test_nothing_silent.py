"""Nothing lost, nothing silent: users' own tables, predictions, exports, registered rules,
DP, ensembles and several processes (issue 23). Each case: a clear error naming the
argument, column or option (exit 2 from the CLI) before any file is written, or a correct
result."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

import jaxmlp
from jaxmlp import train
from jaxmlp.data import export, tabular
from jaxmlp.train import checkpoint as ckpt_lib

from helpers import ROOT, load_script  # noqa: E402

train_cli = load_script("train", "train_cli_nothing_silent")
predict_cli = load_script("predict", "predict_cli_nothing_silent")
FAST = ["--hidden", "4", "--epochs", "2", "--batch-size", "16", "--no-progress", "--no-plot"]


def _table(m=120, seed=0):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({"size": rng.normal(10, 3, m), "w": rng.normal(0, 1, m),
                      "colour": rng.choice(["red", "blue"], m)})
    f["kind"] = np.where(f["size"] > 10, "big", "small")
    f["price"] = 2 * f["size"] + rng.normal(0, 0.5, m)
    return f


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One completed --data run with checkpoints of epochs 1, 2, 3."""
    d = tmp_path_factory.mktemp("ns")
    _table().to_csv(d / "shop.csv", index=False)
    out = d / "run"
    argv = ["--data", str(d / "shop.csv"), "--target", "kind", *FAST, "--epochs", "3",
            "--checkpoint-every", "1", "--out", str(out)]
    assert train_cli.main(argv) == 0
    return d, out


# ----------------------------------------------------------------------------- data loss, stale state


def test_predict_refuses_to_overwrite_its_input(run, tmp_path, capsys):
    d, out = run
    data = tmp_path / "new.csv"
    _table(10, seed=1).drop(columns=["kind"]).to_csv(data, index=False)
    before = data.read_bytes()
    os.symlink(data, tmp_path / "link.csv")
    for spelling in (str(data), str(tmp_path / "." / "new.csv"), str(tmp_path / "link.csv")):
        code = predict_cli.main(["--checkpoint", str(out), "--data", str(data), "--out", spelling])
        assert code == 2
        err = capsys.readouterr().err
        assert "--out:" in err and "is the --data file" in err, err
        assert data.read_bytes() == before


def test_resume_after_the_table_changed_is_refused(tmp_path, capsys):
    f = _table()
    f.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "r"
    assert train_cli.main(["--data", str(tmp_path / "t.csv"), "--target", "kind", *FAST,
                           "--epochs", "1", "--checkpoint-every", "1", "--out", str(out)]) == 0
    pd.concat([f, _table(24, seed=5)]).to_csv(tmp_path / "t.csv", index=False)  # rows appended
    capsys.readouterr()
    assert train_cli.main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--resume:" in err and "t.csv" in err and "changed since" in err, err
    assert ckpt_lib.latest_epoch(str(out / "checkpoints")) == 1  # nothing new written


def test_resume_compares_the_refitted_preprocessing(tmp_path, capsys):
    """The same bytes, but preprocessing that differs (e.g. saved by another version): named."""
    f = _table()
    f.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "r"
    assert train_cli.main(["--data", str(tmp_path / "t.csv"), "--target", "kind", *FAST,
                           "--epochs", "1", "--checkpoint-every", "1", "--out", str(out)]) == 0
    saved = train_cli.train_config.load_data
    try:
        def shifted(cfg):
            data, prep = saved(cfg)
            return data, prep._replace(feature_mean=tuple(v + 1 for v in prep.feature_mean))
        train_cli.train_config.load_data = shifted
        capsys.readouterr()
        assert train_cli.main(["--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    finally:
        train_cli.train_config.load_data = saved
    err = capsys.readouterr().err
    assert "preprocessing" in err and "feature_mean" in err, err


def test_a_diverged_run_leaves_no_stale_model(run, tmp_path, capsys):
    d, out = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "checkpoints")
    assert (copy / "model.npz").is_file()
    policy = (["--overwrite"] if "--overwrite" in train_cli.build_parser()._option_string_actions
              else [])  # a folder holding an earlier run may be refused unless replaced
    code = train_cli.main(["--data", str(d / "shop.csv"), "--target", "price", *FAST,
                           "--lr", "1e30", "--out", str(copy), *policy])
    assert code == 3, capsys.readouterr().err
    assert json.loads((copy / "results.json").read_text())["status"] == "diverged"
    assert not (copy / "model.npz").exists()
    assert predict_cli.main(["--checkpoint", str(copy), "--data", str(d / "shop.csv"),
                             "--out", str(tmp_path / "p.csv")]) == 2
    assert not (tmp_path / "p.csv").exists()


def test_predict_refuses_a_model_that_is_not_the_runs(run, tmp_path, capsys):
    """A model.npz beside a results.json of another run (digest of the params differs)."""
    d, out = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    net, params, meta = export.load(copy / "model.npz")
    params[0]["W"] = params[0]["W"] + 1
    export.save(copy / "model.npz", params, net, metadata=meta)
    capsys.readouterr()
    assert predict_cli.main(["--checkpoint", str(copy), "--data", str(d / "shop.csv"),
                             "--out", str(tmp_path / "p.csv")]) == 2
    assert "not the model of" in capsys.readouterr().err


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_every_export_format_carries_a_digest_checked_on_load(tmp_path, ext):
    if ext == ".safetensors":
        pytest.importorskip("safetensors")
    net = jaxmlp.Network((4, 8, 3), ("tanh", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    path = tmp_path / f"m{ext}"
    export.save(path, params, net, metadata={"preprocessing": {"x": 1}})
    export.load(path)
    data = bytearray(path.read_bytes())
    if ext == ".safetensors":  # 16 bytes of the tensor data (after the header)
        start = 8 + int.from_bytes(data[:8], "little") + 4
    else:
        with np.load(path) as z:
            raw = z["W[1]"].tobytes()
        start = bytes(data).index(raw[:16])
    for i in range(start, start + 16):
        data[i] ^= 0x5A
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"bad{ext}.*(digest|CRC|cannot read)"):
        export.load(bad)
    # the metadata (the preprocessing) is covered too
    if ext == ".npz":
        with np.load(path) as z:
            arrays = dict(z)
        header = json.loads(str(arrays["__jaxmlp__"]))
        header["metadata"]["preprocessing"]["x"] = 2
        arrays["__jaxmlp__"] = np.array(json.dumps(header))
        np.savez(tmp_path / "meta.npz", **arrays)
        with pytest.raises(ValueError, match="meta.npz.*digest"):
            export.load(tmp_path / "meta.npz")


# ----------------------------------------------------------------------------- own tables


def test_a_stray_text_cell_in_a_numeric_column_is_named(tmp_path):
    f = _table().astype({"w": object})
    f.loc[17, "w"] = "?"
    f.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'w'.*row 17.*'\?'.*categorical"):
        tabular.load_table(tmp_path / "t.csv", "kind")
    # a column meant categorical is said so, and one-hot encoded
    data, prep = tabular.load_table(tmp_path / "t.csv", "kind", categorical=["w"])
    assert "w" in prep.categories and data.n_inputs == len(prep.feature_names)


def test_duplicate_column_names_are_refused_before_pandas_renames_them(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,a,kind\n1,2,3,x\n4,5,6,y\n7,8,9,x\n")
    with pytest.raises(ValueError, match=r"duplicate column names \['a'\]"):
        tabular.read_table(tmp_path / "d.csv")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    t = pa.table([pa.array([1, 2]), pa.array([3, 4]), pa.array(["x", "y"])], names=["a", "a", "k"])
    pq.write_table(t, tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=r"^data: .*d.parquet' has duplicate column names \['a'\]"):
        tabular.read_table(tmp_path / "d.parquet")


def test_npz_column_names_that_collide_are_refused(tmp_path):
    np.savez(tmp_path / "c.npz", a=np.ones((5, 2)), **{"a[0]": np.zeros(5)}, k=np.arange(5) % 2)
    with pytest.raises(ValueError, match=r"column 'a\[0\]'.*array 'a'.*array 'a\[0\]'"):
        tabular.read_table(tmp_path / "c.npz")


def test_an_infinite_regression_target_is_refused_naming_the_column(tmp_path):
    f = _table()
    f.loc[[4, 9], "price"] = np.inf
    f.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"target column 'price' holds infinite values \(rows 4, 9"):
        tabular.load_table(tmp_path / "t.csv", "price")


def test_a_huge_value_is_refused_without_numpy_warnings(tmp_path):
    f = _table()
    f.loc[7, "w"] = 1e200
    f.to_csv(tmp_path / "t.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"feature column 'w' holds 1e\+200 \(row 7"):
            tabular.load_table(tmp_path / "t.csv", "kind")


def test_an_infinite_value_in_a_new_row_is_refused(run, tmp_path, capsys):
    d, out = run
    new = _table(6, seed=3).drop(columns=["kind"])
    new.loc[4, "size"] = -np.inf
    new.to_csv(tmp_path / "new.csv", index=False)
    assert predict_cli.main(["--checkpoint", str(out), "--data", str(tmp_path / "new.csv"),
                             "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "column 'size'" in err and "row 4" in err, err
    assert not (tmp_path / "p.csv").exists()


def test_predict_falls_back_from_a_damaged_orbax_checkpoint(run, tmp_path, capsys):
    d, out = run
    cdir = tmp_path / "checkpoints"
    shutil.copytree(out / "checkpoints", cdir)
    files = [os.path.join(r, f) for r, _, fs in os.walk(cdir / "3") for f in fs
             if os.path.getsize(os.path.join(r, f)) > 0]
    for path in files:
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(path, "wb").write(bytes(data))
    new = tmp_path / "new.csv"
    _table(6, seed=3).drop(columns=["kind"]).to_csv(new, index=False)
    capsys.readouterr()
    assert predict_cli.main(["--checkpoint", str(cdir), "--data", str(new),
                             "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert "skipped checkpoint of epoch 3" in err and "epoch 2" in err, err
    for e in ("1", "2"):
        shutil.rmtree(cdir / e)
    assert predict_cli.main(["--checkpoint", str(cdir), "--data", str(new),
                             "--out", str(tmp_path / "q.csv")]) == 2
    assert "no intact checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "q.csv").exists()


# ----------------------------------------------------------------------------- rules, DP, K-FAC, ensembles


def test_register_activation_refuses_a_rule_that_is_not_element_wise():
    from jaxmlp.oracle import registry

    fwd = lambda Z: Z * jnp.mean(Z, axis=0, keepdims=True)  # noqa: E731  (couples the units)

    def deriv(Z):  # the derivative of the one-unit case: 2 z
        return 2 * Z

    with pytest.raises(ValueError, match="several units|off-diagonal"):
        jaxmlp.register_activation("meanmix", fwd, deriv)
    assert "meanmix" not in jaxmlp.ACTIVATIONS
    registry._unregister("meanmix")


def _dp_problem():
    net = jaxmlp.Network((3, 4, 1), ("tanh", "sigmoid"), "binary_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 40)).astype(np.float32)
    Y = (rng.random((1, 40)) > 0.5).astype(np.float32)
    return net, params, X, Y


def test_fit_refuses_dp_with_kfac_by_name():
    from jaxmlp import privacy

    net, params, X, Y = _dp_problem()
    dp = privacy.DPSGD(l2_norm_clip=1.0, noise_multiplier=1.0, sampling_rate=0.25)
    with pytest.raises(ValueError, match="^optimizer: K-FAC .* not .*dp"):
        jaxmlp.fit(net, params, train.make_optimizer("kfac", 0.1), X, Y, epochs=1, key=0, dp=dp)


def test_dp_epoch_refuses_another_optimizers_state():
    net, params, X, Y = _dp_problem()
    epoch = train.make_dp_train_epoch(net, optax.adam(1e-2), sampling_rate=0.25,
                                      l2_norm_clip=1.0, noise_multiplier=1.0, max_batch_size=20)
    with pytest.raises(ValueError, match="^opt_state: expected the state of this optimizer"):
        epoch(params, optax.sgd(1e-2).init(params), jax.random.PRNGKey(0), X, Y)


@pytest.mark.parametrize("argv, message", [
    (["--dp", "--noise-multiplier", "1", "--optimizer", "kfac"], "--optimizer: kfac"),
    (["--dp", "--noise-multiplier", "1", "--sampling-rate", "1e-6"],
     "--sampling-rate: expected q n >= 1"),
    (["--optimizer", "kfac", "--member-lrs", "0.1", "0.2"], "--member-lrs: not with --optimizer kfac"),
    (["--ensemble", "10000000", "--hidden", "1024"], "--ensemble: 10000000 members"),
])
def test_cli_refuses_impossible_combinations_by_name(tmp_path, capsys, argv, message):
    pytest.importorskip("dp_accounting")
    out = tmp_path / "o"
    code = train_cli.main(["--dataset", "breast_cancer", "--hidden", "4", "--epochs", "1",
                           "--no-progress", "--no-plot", "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists() or {p.name for p in out.iterdir()} <= {".jaxmlp.lock"}


# ----------------------------------------------------------------------------- several processes


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_coordinator_and_missing_peer_exit_2_naming_the_coordinator(capsys):
    port = _free_port()
    t0 = time.monotonic()
    code = train_cli.main(["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                           "--process-id", "1", "--init-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and f"--coordinator: 127.0.0.1:{port}" in err and "unreachable" in err, err
    code = train_cli.main(["--coordinator", f"127.0.0.1:{port}", "--num-processes", "3",
                           "--process-id", "0", "--init-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "process(es) [1, 2]" in err and "--init-timeout 1" in err, err
    assert time.monotonic() - t0 < 10
    assert train_cli.main(["--init-timeout", "0"]) == 2
    assert "--init-timeout: expected" in capsys.readouterr().err


@pytest.mark.slow
def test_a_peer_lost_during_training_ends_the_other_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env.update(JAX_PLATFORMS="cpu")
    port = _free_port()
    out = tmp_path / "o"
    argv = ["--dataset", "digits", "--hidden", "32", "--batch-size", "2", "--epochs", "400",
            "--checkpoint-every", "1", "--no-plot", "--no-progress", "--out", str(out),
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--init-timeout", "60"]
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "train.py"),
                               *argv, "--process-id", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 120
        while (ckpt_lib.latest_epoch(str(out / "checkpoints")) or 0) < 2:
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()
            time.sleep(0.2)
        procs[1].kill()
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        assert time.monotonic() - t0 < 60
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 4, err[-3000:]
    assert "lost" in err and "--resume" in err, err[-3000:]
    assert "Traceback" not in err
    epoch = ckpt_lib.latest_epoch(str(out / "checkpoints"))
    with ckpt_lib.Checkpoints(str(out / "checkpoints")) as store:
        assert store.meta(epoch)["network"]["sizes"][0] == 64


# ----------------------------------------------------------------------------- smaller


def test_r2_of_a_constant_target_row_is_nan():
    net = jaxmlp.Network((2, 2), ("linear",), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float64)
    X = np.random.default_rng(0).normal(size=(2, 8))
    Y = np.stack([np.full(8, 3.0), np.linspace(0, 1, 8)])
    r2 = float(train.cost_and_metrics(net, params, X, Y)["r2"])
    assert np.isnan(r2)


def test_x_none_is_named():
    net = jaxmlp.Network((2, 2), ("linear",), "mean_squared_error")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="^X: expected an array"):
        train.cost_and_metrics(net, params, None, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="^X: expected an array"):
        jaxmlp.predict(net, params, None)
    with pytest.raises(TypeError, match="^Y: expected an array"):
        train.cost_and_metrics(net, params, np.zeros((2, 3), np.float32), None)


@pytest.mark.parametrize("name, where", [("make_train_epoch", "jaxmlp.train.make_train_epoch"),
                                         ("make_dp_grad_fn", "jaxmlp.privacy.make_dp_grad_fn")])
def test_old_top_level_names_point_to_their_new_place(name, where):
    with pytest.raises(AttributeError, match=f"it is now {where}"):
        getattr(jaxmlp, name)
    mod, _, attr = where.rpartition(".")
    import importlib

    assert callable(getattr(importlib.import_module(mod), attr))


def test_a_missing_optional_package_is_named_with_how_to_install_it(monkeypatch):
    """tqdm (progress bars), orbax (checkpoints) and scikit-learn (jaxmlp.sklearn) are
    optional: without them the call says which package and which extra, not a raw
    ModuleNotFoundError."""
    import importlib
    import sys

    from jaxmlp.train import checkpoint, monitor

    for name in ("tqdm", "orbax", "orbax.checkpoint", "sklearn"):
        monkeypatch.setitem(sys.modules, name, None)  # import of it raises ImportError
    with pytest.raises(ValueError, match=r"progress: a progress bar needs tqdm, which is not "
                                         r"installed \(pip install 'jaxmlp\[experiments\]'\)"):
        monitor.progress_bar(3, 0, "x")
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints need orbax-checkpoint"):
        checkpoint._ocp()
    monkeypatch.delitem(sys.modules, "jaxmlp.sklearn", raising=False)
    with pytest.raises(ImportError, match=r"jaxmlp.sklearn needs scikit-learn, which is not "
                                          r"installed \(pip install 'jaxmlp\[sklearn\]'\)"):
        importlib.import_module("jaxmlp.sklearn")


@pytest.mark.slow  # a training process, started and interrupted
@pytest.mark.parametrize("signame, status, what", [("SIGINT", 130, "interrupted"),
                                                   ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path, signame, status, what):
    """SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler) during a checkpointed run: exit 130 /
    143 and one line naming the kept checkpoints and the --resume command, no traceback."""
    import signal

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "train.py"),
                             "--dataset", "breast_cancer", "--epochs", "100000",
                             "--checkpoint-every", "20", "--no-progress", "--no-plot",
                             "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a test worker may ignore SIGINT, and a child would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    try:
        while not (out / "checkpoints").is_dir() or not any(
                p.name.isdigit() for p in (out / "checkpoints").iterdir()):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never left running
    assert proc.returncode == status, err
    assert err.strip() == (f"train.py: {what}; its checkpoints in {out / 'checkpoints'} are "
                           f"kept (an interrupted write is skipped); continue with --resume "
                           f"{out}.")


def test_a_full_disk_at_the_end_is_one_line_and_no_results_claim_the_run(tmp_path, monkeypatch):
    """The model file cannot be written (ENOSPC): exit 5, one line naming the file and the
    kept checkpoints, and no results.json saying "completed" beside a missing model."""
    import errno

    cli = load_script("train", "train_full_disk")
    out = tmp_path / "run"

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(export, "save", full)
    status = cli.main(["--dataset", "breast_cancer", "--epochs", "1", "--hidden", "4",
                       "--checkpoint-every", "1", "--no-progress", "--no-plot", "--out", str(out)])
    assert status == 5
    assert not (out / "results.json").exists() and not (out / "model.npz").exists()
    monkeypatch.undo()  # space again: --resume, as the message says, writes what was missing
    assert cli.main(["--resume", str(out), "--no-progress", "--no-plot"]) == 0
    assert json.loads((out / "results.json").read_text())["status"] == "completed"
    assert export.load_model(str(out)).predict(np.zeros((2, 30))).shape == (2,)
