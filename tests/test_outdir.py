"""One run per output folder (lock), unusable --out exits 2 before training, atomic results,
run.sh takes experiment names only."""

import json
import os
import subprocess
import sys
import time

import pytest

from jaxmlp.train import outdir

from helpers import ROOT, load_script  # noqa: E402

SCRIPT = os.path.join(ROOT, "experiments", "train.py")
cli = load_script("train", "train_cli_outdir")

SMALL = ["--dataset", "breast_cancer", "--hidden", "8", "--batch-size", "64", "--no-progress",
         "--no-plot"]


# ----------------------------------------------------------------------------- the lock


def test_lock_excludes_a_second_holder_and_names_the_first(tmp_path):
    d = tmp_path / "run"
    with outdir.FolderLock(d) as lock:
        assert os.path.isfile(lock.path)
        with pytest.raises(outdir.FolderInUse, match=rf"{d} is in use by another run: pid {os.getpid()} on "):
            outdir.FolderLock(d).acquire()
    with outdir.FolderLock(d):  # released: free again
        pass
    assert not d.exists()  # created by the lock, nothing written: removed again


def test_lock_of_a_killed_holder_is_free(tmp_path):
    """The lock belongs to the open file: a SIGKILLed holder leaves the file, not the lock."""
    d = tmp_path / "run"
    code = (f"import sys, time; sys.path.insert(0, {ROOT!r}); from jaxmlp.train import outdir; "
            f"l = outdir.FolderLock({str(d)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(outdir.FolderInUse, match=f"pid {p.pid} "):
            outdir.FolderLock(d).acquire()
    finally:
        p.kill()
        p.wait()
    assert os.path.exists(d / outdir.LOCK_NAME)
    with outdir.FolderLock(d):
        pass


def test_second_run_on_the_same_out_is_refused(tmp_path, capsys):
    out = str(tmp_path / "run")
    with outdir.FolderLock(out):
        assert cli.main([*SMALL, "--epochs", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: --out: {out} is in use by another run: pid {os.getpid()}"), err
    assert err.count("\n") == 1
    assert not os.path.exists(os.path.join(out, "results.json"))


@pytest.mark.slow
def test_two_runs_started_together_one_trains_one_is_refused(tmp_path):
    """Issue: two runs into one --out died with orbax tracebacks, sometimes both."""
    out = str(tmp_path / "run")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, SCRIPT, *SMALL, "--epochs", "30", "--checkpoint-every", "1", "--out", out]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    winner = next(p for p, (code, _) in zip(procs, results) if code == 0)
    assert f"is in use by another run: pid {winner.pid} " in refused, refused
    assert "Traceback" not in refused and refused.count("\n") == 1, refused
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["epochs_done"] == 30


# ----------------------------------------------------------------------------- unusable --out


def test_out_below_a_file_exits_2_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = str(blocker / "run")
    t0 = time.perf_counter()
    assert cli.main([*SMALL, "--epochs", "50", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train.py: error: --out: cannot use {out!r} as the output folder: "), err
    assert time.perf_counter() - t0 < 20  # refused, not trained


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_exits_2_before_training(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert cli.main([*SMALL, "--epochs", "1", "--out", str(out)]) == 2
    finally:
        out.chmod(0o700)
    assert "--out: " in capsys.readouterr().err


def test_results_json_that_is_a_directory_exits_2_before_training(tmp_path, capsys):
    """Issue: this failed after training, and nothing was saved."""
    out = tmp_path / "run"
    (out / "results.json").mkdir(parents=True)
    t0 = time.perf_counter()
    assert cli.main([*SMALL, "--epochs", "50", "--checkpoint-every", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "results.json' exists and is not a file" in err, err
    assert not (out / "checkpoints").exists() and time.perf_counter() - t0 < 20


def test_an_earlier_posterior_alone_is_an_earlier_run(tmp_path, capsys):
    """A folder whose only trace of an earlier run is its Laplace posterior (or its reliability
    diagram) is refused like one with results.json: a new MAP never sits beside an old one's
    posterior."""
    for name in ("laplace.npz", "laplace_reliability.svg"):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text("x")
        assert cli.main([*SMALL, "--epochs", "50", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out: {out} holds an earlier run ({name})" in err, err
        assert not (out / "results.json").exists()


def test_results_are_written_atomically(tmp_path, monkeypatch):
    """A failure while writing leaves the previous results.json whole, and no temporary file."""
    path = tmp_path / "results.json"
    outdir.write_json_atomic(path, {"run": 1})

    class Boom(Exception):
        pass

    def failing_dump(obj, f, **kw):
        f.write('{"run": 2, "hist')
        raise Boom

    monkeypatch.setattr(outdir.json, "dump", failing_dump)
    with pytest.raises(Boom):
        outdir.write_json_atomic(path, {"run": 2})
    assert json.loads(path.read_text()) == {"run": 1}
    assert os.listdir(tmp_path) == ["results.json"]


# ----------------------------------------------------------------------------- run.sh


@pytest.mark.parametrize("name", ["../jaxmlp/__init__", "/etc/passwd", "train;ls", "_private",
                                  "train/../train", "nonexistent"])
def test_run_sh_takes_experiment_names_only(name):
    """Issue: ``scripts/run.sh ../jaxmlp/__init__`` ran a file outside experiments/."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run.sh"), name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith(f"run.sh: unknown experiment '{name}'; expected one of: ")
    assert " train " in out.stderr and "setup:" not in out.stderr
