"""Deep autoencoder on digits: momentum SGD, Adam and K-FAC raced to Adam's final cost.

The network is 64-256-128-32-128-256-64, tanh hidden layers, linear output, mean squared
error, reconstructing the standardised digits images (X -> X), minibatches of
``--batch-size`` (128). Each optimizer runs a small grid from the same initialisation in
the one-call scanned epoch (``_common/race.py``) and keeps its best final training cost:
momentum 0.9 and Adam over learning rates, K-FAC (``jaxmlp.train.kfac.kfac`` at its
defaults: Monte Carlo factors from the same forward pass, statistics and inverses every 20
steps, KL clip) over learning rate and damping, and K-FAC with the quadratic model's learning
rate and momentum and Levenberg-Marquardt damping (K5), (K6), one run, no grid. All runs
advance together, epoch by epoch (``race.race``), so the machine's load falls on all alike.
Reported: the steps and the seconds each needs to reach Adam's final training cost.
kfac-jax is not run: its newest release (0.0.8) fails on JAX >= 0.9.2 (docs/curvature.md).

    python experiments/autoencoder.py [--steps 1100] [--out DIR | --results]

Writes ``results.json`` and ``autoencoder.svg`` (cost against steps and against seconds;
``--results``: ``results/autoencoder/``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # LAPACK on one thread (docs/curvature.md)

import argparse
import sys
import time

import jax
import jax.numpy as jnp

import jaxmlp
from _common import benchmarking, output, race
from jaxmlp.data import datasets

SIZES = (64, 256, 128, 32, 128, 256, 64)
GRIDS = {
    "momentum": [{"lr": lr} for lr in (0.01, 0.03, 0.1)],
    "adam": [{"lr": lr} for lr in (1e-3, 3e-3, 1e-2)],
    "kfac": [{"lr": lr, "damping": d} for lr in (0.1, 0.3) for d in (1e-3, 1e-2)],
    "kfac adaptive": [{}],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--only", default=",".join(GRIDS), help="optimizers to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="races run one after the other (the "
                    "same trajectories, new timings); the first one's histories are kept")
    output.add_out_arguments(ap, "results/autoencoder")
    args = ap.parse_args(argv)
    out_dir = output.resolve_out(args, "autoencoder")
    data = datasets.load("digits", seed=args.seed)
    X = jnp.asarray(data.X_train, jnp.float32)  # (64, m)
    net = jaxmlp.Network(SIZES, ("tanh",) * 5 + ("linear",), "mean_squared_error")
    t0 = time.perf_counter()
    grids = {k: v for k, v in GRIDS.items() if k in args.only.split(",")}
    repeats = []
    for r in range(args.repeat):
        runs_r = race.race(net, X, X, grids, args.steps, args.batch_size, args.seed)
        repeats.append(race.summary(runs_r))
        if r == 0:
            runs = runs_r
        print(f"race {r + 1} of {args.repeat} done", flush=True)
    summ = repeats[0]
    for r, summ_r in enumerate(repeats):
        print(f"\nrace {r + 1}:", end="")
        _print(summ_r)
    output.write_json(os.path.join(out_dir, "results.json"), {
        "network": {"sizes": SIZES, "activations": net.activations, "cost": net.cost},
        "data": "digits train split, standardised, X -> X", "steps": args.steps,
        "batch_size": args.batch_size, "grids": grids, "summary": summ,
        "repeats": repeats, "runs": runs,
        "machine": benchmarking.machine_info(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "seconds_total": time.perf_counter() - t0})
    race.write_svg(os.path.join(out_dir, "autoencoder.svg"), runs, summ["target_cost"],
                   f"digits autoencoder {'-'.join(map(str, SIZES))}, tanh, MSE, m = "
                   f"{args.batch_size}")
    print(f"wrote {out_dir}")
    return 0


def _print(summ):
    print(f"\ntarget: Adam's final training cost {summ['target_cost']:.5f}")
    for name, s in summ.items():
        if not isinstance(s, dict):
            continue
        reach = ("never" if s["steps_to_target"] is None else
                 f"{s['steps_to_target']} steps ({s['fraction_of_reference_steps']:.3f} of Adam's), "
                 f"{s['seconds_to_target']:.2f} s ({s['fraction_of_reference_seconds']:.2f} of Adam's)")
        print(f"{name:>14} {s['setting']} final {s['final_cost']:.5f}, "
              f"{1e3 * s['seconds_per_step']:.2f} ms/step; reaches the target: {reach}")


if __name__ == "__main__":
    sys.exit(main())
