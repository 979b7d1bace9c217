"""The experiment scripts' command lines: a bad flag value is refused with exit status 2 and
one line on stderr that names the flag, before any work (nothing is written to ``--out``);
every flag has a help. The scripts are loaded by path and run in process (``main(argv)``)."""

import argparse
import os
import sys
import types

import subprocess

import pytest

from _common import cli, output
from helpers import ROOT, load_script

#: script -> (a bad command line, the flag its one-line error names). The command lines
#: are the ones a user reported (a traceback, a ZeroDivisionError at the end of a run, a
#: value silently ignored or a run that never ends) or the same kind of value.
BAD = {
    "curvature": (["--reps", "0"], "--reps"),
    "benchmark": (["--pause", "-1"], "--pause"),
    "ensemble_speed": (["--ks", "abc"], "--ks"),
    "shuffle_speed": (["--target-ms", "nan"], "--target-ms"),
    "epoch_speed": (["--epochs-per-sample", "0"], "--epochs-per-sample"),
    "startup": (["--samples", "0"], "--samples"),
    "precision_agreement": (["--out", "{file}/x.json"], "--out"),
    "curvature_check": (["--out", "{file}/x"], "--out"),
    "gradcheck": (["--seed", "-1"], "--seed"),
    "softmax_epilogue": (["--sizes", "8,16"], "--sizes"),
    "kfac_speed": (["--steps", "7"], "--steps"),
    "accumulation_modes": (["--chunk", "0"], "--chunk"),
    "dp": (["--seeds", "0"], "--seeds"),
    "mesh_2d": (["--batch", "0"], "--batch"),
    "train_all": (["--seed", "x"], "--seed"),
    "_sklearn_mlp": (["--epochs", "0"], "--epochs"),
    "laplace": (["--study-decays", "1e-4,nan"], "--study-decays"),
    "scaling": (["--devices", "3"], "--devices"),  # m = 256 is not divisible by 3
    "per_example_vs_batched": (["--reps", "0"], "--reps"),
    "sklearn_compare": (["--hidden", "0"], "--hidden"),
}
#: the scripts whose parser is built by ``build_parser()`` without running anything
PARSERS = [s for s in BAD if s != "laplace_torch_compare"]

_loaded = {}


def script(name):
    if name not in _loaded:
        if name == "_sklearn_mlp":  # its command line only: scikit-learn's 2 s import stubbed
            with pytest.MonkeyPatch.context() as mp:
                stub = types.ModuleType("sklearn.neural_network")
                stub.MLPClassifier = None
                mp.setitem(sys.modules, "sklearn.neural_network", stub)
                _loaded[name] = load_script(name, f"script_flags_{name}")
        else:
            _loaded[name] = load_script(name, f"script_flags_{name}")
    return _loaded[name]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_value_is_one_line_exit_2_before_any_work(name, tmp_path, capsys):
    argv, flag = BAD[name]
    afile = tmp_path / "afile"
    afile.write_text("")
    out = tmp_path / "out"
    argv = [a.format(file=afile) for a in argv]
    if "--out" not in argv and name != "_sklearn_mlp":  # _sklearn_mlp prints, writes nothing
        argv += ["--out", str(out)]
    assert script(name).main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{name}.py: error: ") and flag in lines[0], err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("argv, flag", [
    (["--sizes", "64,130,128,10"], "--sizes: expected hidden widths that are multiples of 4"),
    (["--batch", "30"], "--batch: expected a multiple of 4"),
])
def test_mesh_2d_refuses_what_its_meshes_cannot_split(argv, flag, tmp_path, capsys):
    """mesh_2d.py runs meshes of up to 4 devices: a hidden width or a batch they cannot
    split is refused before the child process starts (it gave the child's traceback)."""
    assert script("mesh_2d").main([*argv, "--out", str(tmp_path / "out")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"mesh_2d.py: error: {flag}"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BAD))
def test_script_process_exits_2(name, tmp_path):
    """``python experiments/NAME.py BAD``: the process's exit status is 2, stderr one line."""
    argv, flag = BAD[name]
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = [a.format(file=afile) for a in argv]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", f"{name}.py"), *argv],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}.py: error: ") and flag in lines[0]


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_has_a_help(name):
    parser = script(name).build_parser()
    assert isinstance(parser, cli.Parser)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # internal: a child process's flag
            continue
        assert action.help and action.help.strip(), (name, action.option_strings or action.dest)
    assert parser.format_help().startswith(f"usage: {name}.py")  # a stray % would raise


def test_the_reported_values_are_refused():
    """Each value of the report, against the parser only."""
    cases = {
        "curvature": [["--target", "-1"], ["--target", "nan"], ["--shapes", "foo"]],
        "ensemble_speed": [["--ks", "0"], ["--reps", "0"], ["--n", "0"], ["--n", "0", "--quick"]],
        "kfac_speed": [["--rounds", "0"], ["--networks", "foo"], ["--batch-size", "0"],
                       ["--only", "kfac x"]],
        "accumulation_modes": [["--examples", "0"], ["--rounds", "0"],
                               ["--fm-call-limit", "-1"]],
        "dp": [["--sizes", "0"], ["--rounds", "0"]],
        "shuffle_speed": [["--target-ms", "-1"]],
    }
    for name, argvs in cases.items():
        parser = script(name).build_parser()
        for argv in argvs:
            with pytest.raises(cli.UsageError, match=f"argument {argv[0]}: expected"):
                parser.parse_args(argv)


def test_ensemble_speed_n_is_kept_with_quick():
    parse = script("ensemble_speed").parse_args
    assert parse(["--quick", "--n", "64", "--out", "x"]).n == 64
    assert parse(["--quick", "--out", "x"]).n == 1024
    assert parse(["--out", "x"]).n == 2048


def test_type_helpers():
    assert cli.positive_int("3") == 3 and cli.nonnegative_int("0") == 0
    assert cli.positive_float("0.5") == 0.5 and cli.nonnegative_float("0") == 0.0
    assert cli.positive_int_list("1,4,16") == [1, 4, 16]
    assert cli.int_list(0)("0,2") == [0, 2]
    assert cli.positive_float_list("1e-4,0.5") == [1e-4, 0.5]
    assert cli.bounded_int(10, multiple_of=10)("40") == 40
    for f, text, msg in [
            (cli.positive_int, "0", "expected an integer >= 1, got '0'"),
            (cli.positive_int, "1.5", "expected an integer >= 1, got '1.5'"),
            (cli.nonnegative_int, "-1", "expected an integer >= 0, got '-1'"),
            (cli.positive_float, "0", "expected a finite number > 0, got '0'"),
            (cli.positive_float, "inf", "expected a finite number > 0, got 'inf'"),
            (cli.nonnegative_float, "nan", "expected a finite number >= 0, got 'nan'"),
            (cli.positive_int_list, "1,,2", "expected a comma-separated list of integers >= 1, "
                                            "got '1,,2'"),
            (cli.bounded_int(10, multiple_of=10), "7", "expected an integer >= 10 that is a "
                                                       "multiple of 10, got '7'")]:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            f(text)
        assert str(e.value) == msg


def test_name_list_matches_names_holding_a_comma():
    names = cli.name_list(["adam", "kfac: MC, inverses every step", "sgd"])
    assert names(" adam,kfac: MC, inverses every step,sgd") == [
        "adam", "kfac: MC, inverses every step", "sgd"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"\('kfac: MC' is none of them\)"):
        names("adam,kfac: MC")
    with pytest.raises(argparse.ArgumentTypeError, match=r"\('' is none of them\)"):
        names("adam,,sgd")


@pytest.mark.parametrize("what", ["folder", "JSON file"])
def test_out_under_a_file_names_out(what, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    p = cli.Parser(prog="x.py")
    output.add_out_arguments(p, "results/x", what=what)
    with pytest.raises(cli.UsageError, match=r"^--out: cannot create .*afile' is a file"):
        output.resolve_out(p.parse_args(["--out", str(afile / "a" / "b")]), "x")
    if what == "folder":
        with pytest.raises(cli.UsageError, match=r"^--out: .*exists and is not a folder"):
            output.resolve_out(p.parse_args(["--out", str(afile)]), "x")
    else:
        with pytest.raises(cli.UsageError, match=r"^--out: .*is a folder, expected a JSON file"):
            output.resolve_out(p.parse_args(["--out", str(tmp_path)]), "x")
    assert output.resolve_out(p.parse_args(["--out", str(tmp_path / "new")]), "x") == str(
        tmp_path / "new")
