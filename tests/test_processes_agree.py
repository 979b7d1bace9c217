"""experiments/train.py with several processes: before anything is trained or written, every
process compares its resolved options and data with process 0's (guards.fingerprint,
guards.disagreements, guards.agree) and all stop with exit 2 naming what differs."""

import hashlib
import os
import subprocess
import sys

import pytest

from _common import guards, train_config
from _common.cli import UsageError
from helpers import ROOT, load_script  # noqa: E402
from test_distributed import _free_port

train_cli = load_script("train", "train_agree")


def _cfg(*argv):
    args = train_cli.build_parser().parse_args(list(argv))
    cfg, resume_meta = train_config.resolve(args)
    guards.check_config(cfg, args)
    return cfg


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "run")


def test_equal_configurations_have_equal_fingerprints(out):
    a = _cfg("--dataset", "breast_cancer", "--hidden", "8", "--out", out)
    b = _cfg("--dataset", "breast_cancer", "--hidden", "8", "--out", out)
    b["replace"] = ["model.npz"]  # process 0 removes the earlier files: not compared
    assert guards.fingerprint(a) == guards.fingerprint(b)
    assert guards.disagreements([guards.fingerprint(a), guards.fingerprint(b)]) == []


def test_one_differing_option_is_named_with_both_values(out):
    a = _cfg("--dataset", "breast_cancer", "--out", out)
    b = _cfg("--dataset", "breast_cancer", "--out", out, "--lr", "0.1")
    fa, fb = guards.fingerprint(a), guards.fingerprint(b)
    assert {k for k in fa if fa[k] != fb[k]} == {"lr"}
    assert guards.disagreements([fa, fb, fa]) == ["--lr: process 1 has 0.1, process 0 has 0.001"]
    assert guards.disagreements([fa, fb, fb]) == [
        "--lr: process 1 has 0.1, process 2 has 0.1, process 0 has 0.001"]


def test_out_compared_only_when_given(tmp_path):
    a = _cfg("--dataset", "digits", "--out", str(tmp_path / "a"))
    b = _cfg("--dataset", "digits", "--out", str(tmp_path / "b"))
    assert guards.disagreements([guards.fingerprint(a), guards.fingerprint(b)]) == [
        f"--out: process 1 has {tmp_path / 'b'}, process 0 has {tmp_path / 'a'}"]
    # no --out: each process made up its own runs/ folder; process 0's is taken
    fa, fb = (guards.fingerprint(c, out_given=False) for c in (a, b))
    assert fa == fb and fa["out"] is None


def test_data_compared_by_bytes_not_path(tmp_path, out):
    rows = "x,y,target\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    flipped = "x,y,target\n" + "".join(f"{i},{i % 3},{1 - i % 2}\n" for i in range(20))
    files = {}
    for name, text in (("a.csv", rows), ("copy.csv", rows), ("flipped.csv", flipped)):
        files[name] = str(tmp_path / name)
        with open(files[name], "w") as f:
            f.write(text)
    cfgs = {name: _cfg("--data", path, "--target", "target", "--out", out)
            for name, path in files.items()}
    fps = {name: guards.fingerprint(c) for name, c in cfgs.items()}
    sha = {name: hashlib.sha256(open(p, "rb").read()).hexdigest() for name, p in files.items()}
    assert fps["a.csv"]["data.sha256"] == sha["a.csv"]
    assert fps["a.csv"] == fps["copy.csv"]  # the same bytes under another name agree
    assert guards.disagreements([fps["a.csv"], fps["flipped.csv"]],
                                [files["a.csv"], files["flipped.csv"]]) == [
        f"--data: process 1's file {files['flipped.csv']} (sha256 {sha['flipped.csv'][:16]}...) "
        f"differs from process 0's {files['a.csv']} (sha256 {sha['a.csv'][:16]}...); every "
        "process must read the same file"]
    other_target = guards.fingerprint(_cfg("--data", files["a.csv"], "--target", "y", "--out", out))
    assert guards.disagreements([fps["a.csv"], other_target]) == [
        "--target: process 1 has y, process 0 has target"]


def test_one_process_agree_returns_or_raises_unchanged(out):
    cfg = _cfg("--dataset", "digits", "--out", out)
    assert guards.agree(cfg, None, None) is cfg
    e = UsageError("--lr: expected a finite learning rate > 0, got -1.0.")
    with pytest.raises(UsageError) as info:
        guards.agree(None, None, e)
    assert info.value is e


def _two_processes(tmp_path, extra):
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["JAX_PLATFORMS"] = "cpu"
    port = str(_free_port())
    out = str(tmp_path / "run")
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "experiments", "train.py"), "--coordinator",
         f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i), "--no-progress",
         "--dataset", "breast_cancer", "--hidden", "4", "--epochs", "1", "--out", out,
         *extra[i]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, [line for line in err.splitlines()
                                       if line.startswith("train.py")]))
    return results, out


@pytest.mark.slow
def test_two_processes_with_another_lr_both_exit_2_naming_it(tmp_path):
    results, out = _two_processes(tmp_path, (["--lr", "0.1"], ["--lr", "0.001"]))
    want = ("train.py: error: --lr: process 1 has 0.001, process 0 has 0.1. The 2 processes "
            "of a run must be started with the same options and data; nothing was trained.")
    assert results == [(2, [want]), (2, [want])]
    assert not os.path.exists(out)  # the lock's new folder removed, nothing written
