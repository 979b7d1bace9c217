"""experiments/train.py --dp: inconsistent options exit 2 before training; results; budget."""

import json
import os

import pytest

from jaxmlp import privacy

pytest.importorskip("dp_accounting")

from helpers import load_script  # noqa: E402

cli = load_script("train", "train_cli_dp")

# breast cancer: 456 train examples; expected batch 228 (q = 0.5, 2 steps per epoch)
SMALL = ["--dataset", "breast_cancer", "--hidden", "8", "--no-progress", "--no-plot", "--dp",
         "--expected-batch-size", "228"]


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("argv, message", [
    (["--dp"], "--dp: give exactly one of --target-epsilon (the noise is calibrated to it) and --noise-multiplier"),
    (["--dp", "--target-epsilon", "1", "--noise-multiplier", "1"], "--dp: give exactly one of"),
    (["--clip", "1"], "--clip: a private-training option; add --dp"),
    (["--target-epsilon", "1"], "--target-epsilon: a private-training option; add --dp"),
    (["--dp", "--target-epsilon", "0"], "--target-epsilon: expected a finite number > 0, got 0.0"),
    (["--dp", "--target-epsilon", "-2"], "--target-epsilon: expected a finite number > 0"),
    (["--dp", "--noise-multiplier", "nan"], "--noise-multiplier: expected a finite number > 0"),
    (["--dp", "--target-epsilon", "1", "--delta", "0"], "--delta: expected a number in (0, 1), got 0.0"),
    (["--dp", "--target-epsilon", "1", "--delta", "1"], "--delta: expected a number in (0, 1)"),
    (["--dp", "--target-epsilon", "1", "--delta", "0.001"],
     "--delta: expected a value below 1/n = 0.000695 (1438 training examples of digits), got 0.001"),
    (["--dp", "--target-epsilon", "1", "--sampling-rate", "0"], "--sampling-rate: expected a number in (0, 1], got 0.0"),
    (["--dp", "--target-epsilon", "1", "--sampling-rate", "1.5"], "--sampling-rate: expected a number in (0, 1]"),
    (["--dp", "--target-epsilon", "1", "--sampling-rate", "0.5", "--expected-batch-size", "100"],
     "--expected-batch-size: give it or --sampling-rate, not both"),
    (["--dp", "--target-epsilon", "1", "--expected-batch-size", "2000"],
     "--expected-batch-size: expected at most the 1438 training examples of digits, got 2000"),
    (["--dp", "--target-epsilon", "1", "--batch-size", "64"], "--batch-size: not with --dp"),
    (["--dp", "--target-epsilon", "1", "--clip", "0"], "--clip: expected finite thresholds > 0, got 0.0"),
    (["--dp", "--target-epsilon", "1", "--clip", "nan"], "--clip: expected finite thresholds > 0"),
    (["--dp", "--target-epsilon", "1", "--clip", "1", "2"], "--clip: expected one threshold (or add --per-layer-clipping), got 2"),
    (["--dp", "--target-epsilon", "1", "--per-layer-clipping", "--clip", "1", "2", "3"],
     "--clip: expected 1 or 2 thresholds (one per layer of 2 layers) with --per-layer-clipping, got 3"),
    (["--dp", "--target-epsilon", "1", "--accountant", "gdp"], "--accountant: expected one of ['pld', 'rdp']"),
    (["--dp", "--target-epsilon", "1", "--data-parallel"], "--data-parallel: not available with --dp"),
    (["--dp", "--target-epsilon", "0.001", "--sampling-rate", "1", "--epochs", "2000"],
     "--target-epsilon: 0.001 cannot be reached in 2000 steps at sampling rate 1"),
])
def test_inconsistent_dp_options_exit_2(argv, message, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main([*argv, "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and message in err, err
    assert not os.path.exists(out)


def test_dp_run_records_privacy_and_reaches_its_target(tmp_path):
    out = str(tmp_path / "dp")
    assert cli.main([*SMALL, "--target-epsilon", "3", "--epochs", "5", "--out", out]) == 0
    res = _results(out)
    pr = res["privacy"]
    assert pr["steps"] == 10 and pr["steps_per_epoch"] == 2 and pr["accountant"] == "pld"
    assert pr["delta"] == 1e-5 and pr["sampling_rate"] == pytest.approx(0.5)
    assert pr["noise_calibrated"] and pr["target_epsilon"] == 3.0
    from _common import train_report  # what epsilon covers, and the raw-data outputs it does not
    assert {k: pr[k] for k in ("covers", "not_covered")} == train_report.PRIVACY_COVERAGE
    assert 0.97 * 3 < pr["epsilon"] <= 3.0
    assert pr["epsilon"] == privacy.epsilon(noise_multiplier=pr["noise_multiplier"],
                                            sampling_rate=pr["sampling_rate"], steps=10,
                                            delta=1e-5)
    assert pr["overflow_probability_bound"] < 1e-9 and pr["overflows"] == 0
    eps = [h["epsilon"] for h in res["history"]]
    assert eps == sorted(eps) and eps[-1] == pr["epsilon"]
    assert res["status"] == "completed" and res["config"]["dp"] is True


def test_dp_resume_with_more_epochs_stops_at_the_budget(tmp_path, capsys):
    out = str(tmp_path / "dp")
    assert cli.main([*SMALL, "--target-epsilon", "2", "--epochs", "3", "--per-layer-clipping",
                     "--checkpoint-every", "3", "--out", out]) == 0
    first = _results(out)
    assert first["privacy"]["clip"] == pytest.approx([1 / 2 ** 0.5] * 2)
    capsys.readouterr()
    assert cli.main(["--resume", out, "--epochs", "6", "--no-progress", "--no-plot"]) == 0
    res = _results(out)
    assert "privacy budget: epoch 4 would spend epsilon" in capsys.readouterr().err
    assert res["status"] == "budget" and res["epochs_done"] == 3
    assert res["privacy"]["noise_multiplier"] == first["privacy"]["noise_multiplier"]
    assert res["privacy"]["epsilon"] <= 2.0


def test_dp_with_fixed_noise_multiplier(tmp_path):
    out = str(tmp_path / "dp")
    assert cli.main([*SMALL, "--noise-multiplier", "1.5", "--epochs", "2", "--accountant", "rdp",
                     "--out", out]) == 0
    pr = _results(out)["privacy"]
    assert pr["noise_multiplier"] == 1.5 and not pr["noise_calibrated"]
    assert pr["epsilon"] == privacy.epsilon(noise_multiplier=1.5, sampling_rate=pr["sampling_rate"],
                                            steps=4, delta=1e-5, accountant="rdp")
