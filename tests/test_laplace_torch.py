"""jaxmlp.laplace against laplace-torch, float64, <= 1e-8 relative (docs/laplace.md,
"Conventions against laplace-torch"; experiments/laplace_torch_compare.py is the full run).

laplace-torch is an independent implementation (torch.func / BackPACK / curvlinops Jacobians
and Kronecker factors, torch.linalg): on the same weights and data each structure's posterior
precision, log marginal likelihood and its gradient, and GLM covariance and predictive must
agree. Skipped where torch or laplace-torch is missing (the default environment); run with
``.venv-compare/bin/python -m pytest -q -p no:cacheprovider tests/test_laplace_torch.py``.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "laplace_torch_compare.py")
TOL = 1e-8
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # BackPACK's hook notices


@pytest.fixture(scope="module")
def ltc():
    """The comparison script as a module (it imports torch and laplace-torch)."""
    pytest.importorskip("torch")
    laplace = pytest.importorskip("laplace")
    if not hasattr(laplace, "FullLLLaplace"):
        pytest.skip(f"`import laplace` is {laplace.__file__}, not laplace-torch")
    import laplace_torch_compare
    return laplace_torch_compare


def check(errs, expected):
    """Every expected quantity was compared, and every compared one is within TOL."""
    assert expected <= set(errs), f"missing {expected - set(errs)} in {sorted(errs)}"
    bad = {k: v for k, v in errs.items() if not k.startswith("_") and not v <= TOL}
    assert not bad, bad


COMMON = {"log marginal likelihood", "d lml / d log prior precision", "GLM mean z[L]",
          "GLM covariance J P^-1 J^T"}


def test_diag_softmax(ltc):
    case = ltc.make_case("softmax", n=12, m_test=3, sizes=(3, 4, 3))
    check(ltc.compare(case, "diag", "curvlinops"),
          {"precision", "GLM probit predictive"} | COMMON)


def test_full_regression(ltc):
    case = ltc.make_case("regression", n=12, m_test=3, sizes=(3, 4, 2), seed=1)
    check(ltc.compare(case, "full", "backpack"),
          {"precision", "d lml / d log sigma", "GLM predictive variance (+ sigma^2)"} | COMMON)


def test_full_sigmoid_as_two_logits(ltc):
    case = ltc.make_case("sigmoid", n=12, m_test=3, sizes=(3, 4, 1), seed=2)
    check(ltc.compare(case, "full", "curvlinops"), {"precision", "GLM probit predictive"} | COMMON)


def test_last_layer_softmax(ltc):
    case = ltc.make_case("softmax", n=12, m_test=3, sizes=(3, 4, 3), seed=3)
    check(ltc.compare(case, "last_layer", "backpack"),
          {"precision", "GLM probit predictive"} | COMMON)


def test_kron_minibatches(ltc):
    """Minibatches of 5 of 12 columns (5 + 5 + 2): the factors of both equal their
    whole-data sums; like-for-like where the W-b cross terms vanish (x -> -x, zero hidden
    biases), and the precision without its cross blocks on general data, where the cross
    blocks are a visible share of P (so the conversion is doing something)."""
    sym = ltc.make_case("regression", n=12, m_test=3, sizes=(3, 4, 2), seed=4, symmetric=True)
    errs = ltc.compare(sym, "kron", "curvlinops", batch_size=5)
    check(errs, {"precision (no W-b cross blocks)", "d lml / d log sigma (differences of its lml)",
                 "GLM predictive variance (+ sigma^2)"} | COMMON)
    assert errs["_kron W-b cross blocks' share of P (not compared)"] < 1e-14
    gen = ltc.make_case("softmax", n=12, m_test=3, sizes=(3, 4, 3), seed=5)
    errs = ltc.compare(gen, "kron", "backpack", batch_size=5)
    check(errs, {"precision (no W-b cross blocks)"})
    assert errs["_kron W-b cross blocks' share of P (not compared)"] > 1e-3


def test_script_names_the_setup_without_the_peers(tmp_path):
    """Without torch the script exits at once with a message naming scripts/setup_compare.sh."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed in this environment")
    r = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "scripts/setup_compare.sh" in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())
