"""Fast checks of experiments/benchmark.py (FLOP counting, CLI errors, output format)"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp

from helpers import ROOT, load_script  # noqa: E402
from _common import networks  # noqa: E402


_load_script = load_script


benchmark = _load_script("benchmark")


def _dot_flops_of_jaxpr(jaxpr) -> int:
    """Independent count: 2 * |output| * |contracted dims| for every dot_general traced."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = int(np.prod([lhs[d] for d in lhs_contract]))
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * k
        for v in eqn.params.values():
            if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                total += _dot_flops_of_jaxpr(v.jaxpr)
            elif hasattr(v, "eqns"):
                total += _dot_flops_of_jaxpr(v)
    return total


def test_flops_by_hand_tiny():
    # 64-128-10, m = 128: (F1) x2 layers, (B1) x2 layers, (B3) for layer 2 only
    m = 128
    f1 = 2 * 128 * 64 * m + 2 * 10 * 128 * m
    b1 = f1
    b3 = 2 * 128 * 10 * m
    assert benchmark.step_flops((64, 128, 10), m) == f1 + b1 + b3
    eqs = [p.equation for p in benchmark.matrix_products((64, 128, 10), m)]
    assert eqs.count("F1") == 2 and eqs.count("B1") == 2 and eqs.count("B3") == 1


@pytest.mark.parametrize("shape", ["tiny", "medium", "deep-narrow"])
def test_flops_match_the_traced_products(shape):
    sizes, m = benchmark.SHAPES[shape]
    net = networks.mlp(sizes)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = jnp.zeros((sizes[0], m), jnp.float32)
    Y = jnp.zeros((sizes[-1], m), jnp.float32).at[0].set(1.0)  # one-hot: checked while tracing
    jaxpr = jax.make_jaxpr(lambda p: jaxmlp.value_and_grad(net, p, X, Y))(params).jaxpr
    assert _dot_flops_of_jaxpr(jaxpr) == benchmark.step_flops(sizes, m)


def _run(*args, timeout=120):
    # PYTHONPATH: this checkout's jaxmlp, whichever checkout the environment installed
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_unknown_shape_and_variant_exit_2(tmp_path, capsys):
    """In process (the script's main), before any timing: exit 2 naming the unknown name and
    the known ones (the script as a process: tests/test_script_flags.py, slow)."""
    bench = benchmark
    assert bench.main(["--shapes", "tiny,huge", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "huge" in err and "deep-narrow" in err
    assert bench.main(["--variants", "jaxmlp,tensorflow", "--out", str(tmp_path / "b")]) == 2
    assert "tensorflow" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow  # the benchmark script end to end
def test_quick_run_writes_json(tmp_path):
    proc = _run("--quick", "--shapes", "tiny", "--variants", "jaxmlp,autodiff", "--reps", "2",
                "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["config"]["reps"] == 2
    assert {"platform", "cpu_count", "jax", "backend", "load_average"} <= set(doc["machine"])
    tiny = doc["shapes"]["tiny"]
    assert tiny["flops_per_step"] == benchmark.step_flops((64, 128, 10), 128)
    jp = tiny["passes"]["jax"]
    assert jp["peak_gflops"] > 0 and jp["peak_from"] == "matmul_xla"
    # the paired protocol: every round ran every variant once
    assert len(jp["order"]) == 2
    assert all(sorted(o) == ["autodiff", "jaxmlp", "matmul_xla"] for o in jp["order"])
    for v in ("jaxmlp", "autodiff"):
        row = jp["variants"][v]
        assert len(row["times_s"]) == 2 and row["median_s"] > 0
        assert row["paired_ratio"]["n"] == 2
        for x in (row["ratio_of_medians"], row["paired_ratio"]["median"], row["gflops"],
                  row["paired_fraction_of_peak"]["median"]):
            assert np.isfinite(x)
        # the paired ratio is the median of the per-round quotients of the raw samples
        ratios = np.asarray(row["times_s"]) / np.asarray(jp["variants"]["jaxmlp"]["times_s"])
        assert row["paired_ratio"]["median"] == pytest.approx(float(np.median(ratios)))
    assert jp["variants"]["jaxmlp"]["paired_ratio"]["median"] == 1.0
    assert "| tiny |" in doc["markdown"]
    assert (tmp_path / "benchmark.png").exists()


def test_hlo_summary_lists_every_product_of_both_steps():
    sizes, m = benchmark.SHAPES["tiny"]
    L = len(sizes) - 1
    dots = {}
    for v in ("jaxmlp", "autodiff"):
        step, params, X, Y = benchmark.jax_step(v, sizes, m)
        h = benchmark.hlo_summary(step.lower(params, X, Y).compile().as_text())
        assert h["entry_instructions"] > 0
        dots[v] = sorted((d["result"], d["dims"]) for d in h["dots"])
        assert len(dots[v]) == len(benchmark.matrix_products(sizes, m)) == 3 * L - 1
    # the hand-derived and the autodiff step compile to the same products
    assert dots["jaxmlp"] == dots["autodiff"]


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_softmax_output_keeps_its_column_reduction_out_of_the_product():
    """The softmax shift is guarded (activations._column_shift), so XLA:CPU does not fuse
    the column maximum of Z[L] into the (F1) product, a pattern that is slower than the
    product plus a separate reduction (docs/performance.md, "Softmax output")."""
    import jax
    import jax.numpy as jnp

    W = jnp.ones((256, 512)) / 512
    A = jnp.ones((512, 256))

    def bare(W, A):  # the unguarded shift: the pattern the guard avoids
        Z = W @ A
        return Z - jnp.max(Z, axis=0, keepdims=True)

    found = benchmark.hlo_summary(jax.jit(bare).lower(W, A).compile().as_text())
    if not found["dot_reduce_fusions"]:
        pytest.skip("this XLA does not fuse a reduction into a dot; nothing to guard against")
    for shape in ("medium", "large"):
        sizes, m = benchmark.SHAPES[shape]
        step, params, X, Y = benchmark.jax_step("jaxmlp", sizes, m)
        h = benchmark.hlo_summary(step.lower(params, X, Y).compile().as_text())
        assert h["dot_reduce_fusions"] == [], shape


def test_softmax_epilogue_script(tmp_path):
    import json

    import softmax_epilogue

    assert softmax_epilogue.main(["--sizes", "32,64,16", "--reps", "2", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "softmax_epilogue.json").read_text())
    assert doc["dot_reduce_fusions"]["guarded shift"] == []
    assert doc["max_abs_diff_dZ"] < 1e-6 and doc["abs_diff_J"] < 1e-5  # the shift changes nothing
    assert set(doc["timing"]["variants"]) == {"bare shift", "guarded shift", "product only"}
    assert softmax_epilogue.main(["--sizes", "32,0,16"]) == 2


@pytest.mark.slow  # a long test (5 s): the slow suite (scripts/test.sh --slow)
def test_relu_backward_needs_no_Z_so_the_step_keeps_less_than_autodiff():
    """relu's (B4) mask is read off A (A > 0 exactly where Z > 0), so the hand-derived step
    keeps no Z[l] of a hidden layer; autodiff's keeps them for the mask (docs/performance.md)."""
    sizes, m = benchmark.SHAPES["large"]
    temp = {}
    for v in ("jaxmlp", "autodiff"):
        step, params, X, Y = benchmark.jax_step(v, sizes, m)
        mem = step.lower(params, X, Y).compile().memory_analysis()
        if mem is None:
            pytest.skip("no memory analysis on this backend")
        temp[v] = mem.temp_size_in_bytes
    # large (jax 0.10.2): 16 MiB against 28 MiB; at least one 2048 x 1024 float32 Z fewer
    assert temp["jaxmlp"] <= temp["autodiff"] - 2048 * 1024 * 4, temp


def test_summarize_reads_earlier_runs(tmp_path):
    doc = {"shapes": {"tiny": {"passes": {"jax": {"variants": {
        "jaxmlp": {"paired_ratio": {"median": 1.0, "q25": 1.0, "q75": 1.0},
                   "paired_fraction_of_peak": {"median": 0.14, "q25": 0.12, "q75": 0.15}},
        "autodiff": {"paired_ratio": {"median": 1.091, "q25": 0.914, "q75": 1.206}}}}}}}}
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "benchmark.json").write_text(json.dumps(doc))
    table = benchmark.main(["--summarize", str(tmp_path / "r1")])
    assert "| tiny |" in table and "1.091 (0.914-1.206)" in table and "14.0 (12.0-15.0)" in table
    with pytest.raises(SystemExit):
        benchmark.main(["--summarize", str(tmp_path / "missing")])
