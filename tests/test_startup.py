"""Start-up: what `import jaxmlp` and the bundled datasets import, the scripts' compilation cache."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxmlp.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("sklearn", "scipy", "orbax", "matplotlib", "tqdm", "pandas", "pyarrow")


def _python(code, env=None, timeout=120):
    env = dict(os.environ if env is None else env, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "diabetes"])
def test_bundled_files_read_with_numpy_equal_scikit_learns_loaders_bit_for_bit(name):
    X, y = datasets._read_sklearn_files(name)
    X_ref, y_ref = datasets._read_with_sklearn(name)
    assert X.dtype == X_ref.dtype == np.float64 and X.shape == X_ref.shape
    assert np.array_equal(X, X_ref) and np.array_equal(y, y_ref)
    assert y.dtype == y_ref.dtype


def test_import_and_loading_every_dataset_import_no_heavy_library():
    """`import jaxmlp` and loading the four datasets leave sklearn, scipy, orbax, matplotlib,
    tqdm, pandas and pyarrow unimported (measured in a fresh interpreter)."""
    code = ("import sys, json, jaxmlp\n"
            "before = [m for m in %r if m in sys.modules]\n"
            "from jaxmlp.data import datasets\n"
            "shapes = [datasets.load(n).X_train.shape for n in datasets.DATASETS]\n"
            "after = [m for m in %r if m in sys.modules]\n"
            "print(json.dumps([before, after, shapes]))" % (HEAVY, HEAVY))
    before, after, shapes = json.loads(_python(code))
    assert before == [] and after == []
    assert [s[0] for s in shapes] == [64, 30, 64, 10]


def test_loading_without_scikit_learn_is_a_clear_value_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    datasets._features_and_targets.cache_clear()  # another test in this process may have read digits already
    with pytest.raises(ValueError, match="scikit-learn"):
        datasets.load("digits")


def test_the_library_sets_no_global_jax_configuration():
    """Importing jaxmlp (and loading data) leaves JAX's compilation-cache settings at JAX's
    defaults: only the scripts' environment (scripts/run.sh) turns the cache on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    code = ("import jax, jaxmlp\n"
            "from jaxmlp.data import datasets; datasets.load('breast_cancer')\n"
            "c = jax.config\n"
            "print(c.jax_compilation_cache_dir, c.jax_persistent_cache_min_compile_time_secs,"
            " c.jax_persistent_cache_min_entry_size_bytes)")
    assert _python(code, env=env).split() == ["None", "1.0", "0"]


def test_run_sh_exports_a_cache_folder_ignored_by_git():
    with open(os.path.join(ROOT, "scripts", "run.sh")) as f:
        run_sh = f.read()
    assert 'JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$root/.cache/jax}"' in run_sh
    assert "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in run_sh
    ignored = subprocess.run(["git", "check-ignore", "-q", ".cache/jax/x"], cwd=ROOT)
    assert ignored.returncode == 0, ".cache/jax is not ignored by git"


@pytest.mark.slow
def test_train_script_fills_and_then_reads_the_persistent_cache(tmp_path):
    """With run.sh's variables, a first run writes the XLA programs to the cache folder and a
    second identical run adds none (every program read back), with the same parameters."""
    cache = tmp_path / "cache"
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", JAX_PLATFORMS="cpu")
    args = [sys.executable, os.path.join(ROOT, "experiments", "train.py"), "--dataset",
            "breast_cancer", "--hidden", "8", "--epochs", "2", "--no-progress", "--no-plot"]
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        proc = subprocess.run([*args, "--out", str(out)], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with open(out / "results.json") as f:
            digests.append(json.load(f)["final_params_sha256"])
        if run == "a":
            first = sorted(os.listdir(cache))
            assert any(name.startswith("jit_") for name in first), first
    assert sorted(os.listdir(cache)) == first
    assert digests[0] == digests[1]


@pytest.mark.slow  # a training process with matplotlib hidden
def test_train_script_writes_the_svg_plot_without_matplotlib(tmp_path):
    """Run as a script, train.py writes learning_curves.svg (5 curves, finite coordinates)
    and never imports matplotlib; bad input still exits 2 with one line."""
    import re

    script = os.path.join(ROOT, "experiments", "train.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = tmp_path / "run"
    code = ("import runpy, sys\n"
            f"sys.path.insert(0, {os.path.dirname(script)!r})  # as `python train.py` does\n"
            f"sys.argv = [{script!r}, '--dataset', 'breast_cancer', '--hidden', '8', '--epochs', '3',"
            f" '--no-progress', '--out', {str(out)!r}]\n"
            "import builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] == 'matplotlib': raise ImportError('matplotlib imported')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    svg = (out / "learning_curves.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 5
    coords = [float(v) for v in re.findall(r"[-0-9.]+", " ".join(re.findall(r'points="([^"]*)"', svg)))]
    assert len(coords) == 2 * 3 * 5 and all(0 <= c <= 1000 for c in coords)
    bad = subprocess.run([sys.executable, script, "--epochs", "0", "--out", str(tmp_path / "x")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "--epochs" in bad.stderr


@pytest.mark.slow  # a long test: the slow suite (scripts/test.sh --slow)
def test_init_params_equals_the_layer_by_layer_draws_bit_for_bit():
    """init_params draws all layers in one compiled program (and scales in NumPy): the values
    are those of jax.random.normal called layer by layer and scaled by a jnp product."""
    import jax
    import jax.numpy as jnp

    import jaxmlp

    net = jaxmlp.Network((64, 128, 32, 10), ("relu", "tanh", "softmax"), "categorical_cross_entropy")
    for dtype in (jnp.float32, jnp.float64):
        key = jax.random.PRNGKey(5)
        got = jaxmlp.init_params(net, key, dtype=dtype)
        keys = jax.random.split(key, 3)
        for l, (k, (n_in, n_out), s) in enumerate(zip(keys, zip(net.sizes[:-1], net.sizes[1:]),
                                                      ("he", "glorot", "glorot"))):
            std = np.sqrt(2.0 / n_in) if s == "he" else np.sqrt(2.0 / (n_in + n_out))
            want = float(std) * jax.random.normal(k, (n_out, n_in), dtype=dtype)
            assert got[l]["W"].dtype == want.dtype
            assert np.array_equal(np.asarray(got[l]["W"]), np.asarray(want)), (dtype, l)
            assert np.array_equal(np.asarray(got[l]["b"]), np.zeros(n_out))
    traced = jax.jit(lambda k: jaxmlp.init_params(net, k))(jax.random.PRNGKey(5))  # still traceable
    np.testing.assert_allclose(traced[0]["W"], jaxmlp.init_params(net, jax.random.PRNGKey(5))[0]["W"],
                               rtol=1e-6)
