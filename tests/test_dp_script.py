"""experiments/dp.py's speed and noise measurements, on small sizes (a smoke test of the
script's bookkeeping; the timings themselves are not asserted)."""

import json

import numpy as np
import pytest

from helpers import load_script

dp = load_script("dp")


@pytest.mark.slow
def test_speed_rows_hold_every_variant_and_memory(tmp_path):
    sp = dp.speed([8], rounds=2, vmap_max_m=8, opacus=False)
    (row,) = sp["results"]
    names = {"nonprivate", "dp_flat", "dp_flat_no_noise", "noise_only", "dp_per_layer", "vmap_route"}
    assert set(row["median_ms"]) - {"jax_privacy"} == names  # jax-privacy: when installed
    assert row["paired_ratio_to_nonprivate"]["nonprivate"] == 1.0
    assert all(np.isfinite(v) and v > 0 for v in row["median_ms"].values())
    mem = row["xla_memory_bytes"]
    # clipping keeps at most the deltas dZ[l] of the batch (sum_l n[l] x m floats) more;
    # the vmap route's per-example gradients take far more
    assert mem["dp_flat_no_noise"]["total"] <= mem["nonprivate"]["total"] + 4 * (512 + 512 + 10) * 8
    assert mem["vmap_route"]["total"] > 2 * mem["nonprivate"]["total"]
    assert "vmap_route_over_dp_flat" in row
    assert "| 8 |" in dp.speed_table(sp)


@pytest.mark.slow
def test_noise_subcommand_writes_its_table(tmp_path):
    assert dp.main(["noise", "--rounds", "2", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "noise.json").read_text())
    assert doc["num_params"] == 669_706
    assert {"privacy.add_noise (unrolled, fused)", "jax.random.normal per leaf"} <= set(doc["timing"]["variants"])
    t = doc["temp_bytes"]  # the fused draw keeps less than JAX's looped one
    assert t["privacy.add_noise (unrolled, fused)"] < t["jax.random.normal per leaf"]


def test_opacus_steps_run_when_installed():
    import pytest

    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(784, 8)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[:, rng.integers(0, 10, 8)]
    for mode in ("ghost", "hooks"):
        step = dp._opacus_step(X, Y, mode)
        step()  # one private step of the same network on the same batch
        step()
