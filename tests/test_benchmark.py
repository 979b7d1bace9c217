"""Fast checks of experiments/benchmark.py (FLOP counting, CLI errors, output format)
and of the mixed-precision variant it can time (jaxmlp.precision)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import precision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import benchmark  # noqa: E402


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
    net = benchmark._network(sizes)
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = jnp.zeros((sizes[0], m), jnp.float32)
    Y = jnp.zeros((sizes[-1], m), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p: jaxmlp.value_and_grad(net, p, X, Y))(params).jaxpr
    assert _dot_flops_of_jaxpr(jaxpr) == benchmark.step_flops(sizes, m)


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_unknown_shape_exits_2():
    proc = _run("--shapes", "tiny,huge")
    assert proc.returncode == 2
    assert "huge" in proc.stderr and "deep-narrow" in proc.stderr


def test_unknown_variant_exits_2():
    proc = _run("--variants", "jaxmlp,tensorflow")
    assert proc.returncode == 2 and "tensorflow" in proc.stderr


def test_quick_run_writes_json(tmp_path):
    proc = _run("--quick", "--shapes", "tiny", "--variants", "jaxmlp,autodiff", "--reps", "2",
                "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["config"]["reps"] == 2
    assert {"platform", "cpu_count", "jax", "backend"} <= set(doc["machine"])
    tiny = doc["shapes"]["tiny"]
    assert tiny["flops_per_step"] == benchmark.step_flops((64, 128, 10), 128)
    jp = tiny["passes"]["jax"]
    assert jp["peak_gflops"] > 0 and jp["peak_from"] == "matmul_xla"
    for v in ("jaxmlp", "autodiff"):
        row = jp["variants"][v]
        assert len(row["times_s"]) == 2 and row["median_s"] > 0
        for key in ("ratio_of_medians", "paired_ratio_median", "gflops", "fraction_of_peak",
                    "paired_fraction_of_peak_median"):
            assert np.isfinite(row[key]), key
    assert jp["variants"]["jaxmlp"]["paired_ratio_median"] == 1.0
    assert (tmp_path / "benchmark.png").exists()


# ---- mixed precision (jaxmlp.precision), timed by benchmark --compute-dtype
def _problem():
    net = jaxmlp.Network((12, 16, 16, 4), ("relu", "tanh", "softmax"), "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    X = jax.random.normal(jax.random.PRNGKey(1), (12, 32), jnp.float32)
    Y = jax.nn.one_hot(jnp.arange(32) % 4, 4, dtype=jnp.float32).T
    return net, params, X, Y


def test_float32_compute_equals_core():
    net, params, X, Y = _problem()
    J, g = jaxmlp.value_and_grad(net, params, X, Y)
    J2, g2 = precision.value_and_grad(net, params, X, Y, compute_dtype="float32")
    np.testing.assert_allclose(J2, J, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_products_agree_with_float32():
    net, params, X, Y = _problem()
    J, g = jaxmlp.value_and_grad(net, params, X, Y)
    J2, g2 = precision.value_and_grad(net, params, X, Y, compute_dtype=jnp.bfloat16)
    assert abs(float(J2 - J)) < 1e-2 * abs(float(J))
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g2))
    flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])
    # whole gradient: bf16 rounding (2^-9 relative per operand) plus relu/tanh inputs
    # moved by it; measured ~4% here. The output layer (one bf16 product) is within 1%.
    assert float(jnp.linalg.norm(flat(g2) - flat(g)) / jnp.linalg.norm(flat(g))) < 0.08
    for a, b in zip(jax.tree.leaves(g2[-1]), jax.tree.leaves(g[-1])):
        assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 0.01
    hlo = jax.jit(lambda p: precision.value_and_grad(net, p, X, Y)).lower(params).as_text()
    assert "bf16" in hlo


def test_bad_compute_dtype():
    net, params, X, Y = _problem()
    with pytest.raises(TypeError, match="compute_dtype"):
        precision.value_and_grad(net, params, X, Y, compute_dtype="int8")
