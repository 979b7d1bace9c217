"""What several test files share: the repository root, loading an experiment script as a
module, the norm-wise relative error, and a small dense check problem drawn with NumPy."""

import importlib.util
import os
import sys

import jax.numpy as jnp
import numpy as np

import jaxmlp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str, module_name: str | None = None):
    """experiments/NAME.py as a module (the folder holds scripts, not a package).

    ``module_name`` (default NAME) keys it in ``sys.modules``, where dataclasses look their
    module up; give different names to load one script into independent modules.
    """
    module_name = module_name or name
    spec = importlib.util.spec_from_file_location(
        module_name, os.path.join(ROOT, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def rel(a, b) -> float:
    """||a - b|| / max(||a||, ||b||) in float64 (0 when both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


def dense_problem(activations, dtype=jnp.float64, sizes=(4, 6, 5, 3), m=9, seed=0):
    """A categorical network with ``activations`` and its params, X, one-hot Y, drawn with
    NumPy (no per-shape compiles): weights N(0, 1/n[l-1]), biases N(0, 0.01)."""
    net = jaxmlp.Network(sizes, activations, "categorical_cross_entropy")
    rng = np.random.default_rng(seed)
    params = [
        {"W": jnp.asarray(rng.normal(size=s["W"]) / np.sqrt(s["W"][1]), dtype),
         "b": jnp.asarray(0.1 * rng.normal(size=s["b"]), dtype)}
        for s in net.param_shapes()
    ]
    X = jnp.asarray(rng.normal(size=(sizes[0], m)), dtype)
    Y = jnp.asarray(np.eye(sizes[-1])[:, rng.integers(0, sizes[-1], m)], dtype)
    return net, params, X, Y


class NoSignature:
    """A callable whose signature cannot be read (as many extension functions)."""

    def __init__(self, fn):
        self.fn = fn

    @property
    def __signature__(self):
        raise ValueError("no signature found")

    def __call__(self, *args):
        return self.fn(*args)


def numpy_targets(net, rng, m) -> np.ndarray:
    """Valid float64 targets Y (n[L], m) for ``net.cost`` drawn with ``rng``: one-hot columns
    (categorical), N(0, 1) (squared error), 0/1 (binary and multi-label)."""
    nL = net.sizes[-1]
    if net.cost == "categorical_cross_entropy":
        return np.eye(nL)[:, rng.integers(0, nL, size=m)]
    if net.cost == "mean_squared_error":
        return rng.normal(size=(nL, m))
    return (rng.random((nL, m)) < 0.5).astype(np.float64)


class HostMetrics:
    """An epoch's metrics as run_epochs reads them: per-minibatch costs and gradient norms."""

    def __init__(self, cost, grad_norm):
        self.cost, self.grad_norm = np.asarray(cost), np.asarray(grad_norm)


def host_plan(costs_per_epoch, **fields):
    """A ``jaxmlp.train.epoch_loop.EpochPlan`` whose epoch adds 1 to a counter (the params) and
    reports the given per-minibatch costs: run_epochs' bookkeeping with nothing compiled.
    ``fields`` replace the plan's defaults (e.g. ``set_entries``)."""
    from jaxmlp.train.epoch_loop import EpochPlan

    calls = iter(costs_per_epoch)

    def epoch_fn(params, opt_state, key, X, Y):
        return params + 1, opt_state, HostMetrics(next(calls), [1.0, 1.0])

    plan = dict(
        epoch_fn=epoch_fn, split_key=lambda k: (k + 1, k),
        baseline=lambda c: float(c[0]), baseline_entry="first_cost",
        diagnose=lambda e, c, g, p, b: None if np.all(np.isfinite(c)) else f"bad epoch {e}",
        cost_entries=lambda c: {"running_cost": float(np.mean(c)), "first_cost": float(c[0])},
        set_entries=lambda name, p, Xe, Ye: {f"{name}_p": float(p)})
    plan.update(fields)
    return EpochPlan(**plan)


def run_on_four_cpu_devices(code: str) -> dict:
    """Runs ``code`` in a fresh interpreter with four forced CPU devices and returns the JSON
    it prints after ``RESULT`` on its last such line (device counts are fixed at JAX's start,
    so a test needing four devices cannot run in the pytest process)."""
    import json
    import subprocess

    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])
