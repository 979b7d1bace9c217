"""Classifier on digits: momentum SGD, Adam and K-FAC raced to Adam's final training cost.

The network is 64-512-512-10, relu hidden layers, softmax output, categorical
cross-entropy, on the digits training split (``jaxmlp.data.datasets``: the largest bundled
set, 1438 training images of 64 pixels; the issue's 784-512-512-10 needs MNIST, which does
not ship, so the first layer is 64 wide), minibatches of ``--batch-size`` (256). The race
is the autoencoder's (``_common/race.py``; grids below): each optimizer's best final
training cost of a small grid, and the steps and seconds to reach Adam's final cost.

    python experiments/classifier_kfac.py [--steps 500] [--out DIR | --results]

Writes ``results.json`` and ``classifier.svg`` (``--results``: ``results/classifier_kfac/``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # LAPACK on one thread (docs/curvature.md)

import argparse
import sys
import time

import jax.numpy as jnp

import jaxmlp
from _common import benchmarking, output, race
from jaxmlp.data import datasets

SIZES = (64, 512, 512, 10)
GRIDS = {
    "momentum": [{"lr": lr} for lr in (0.03, 0.1, 0.3)],
    "adam": [{"lr": lr} for lr in (1e-4, 3e-4, 1e-3)],
    "kfac": [{"lr": lr, "damping": d} for lr in (0.1, 0.3) for d in (1e-3, 1e-2)],
    "kfac adaptive": [{}],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--only", default=",".join(GRIDS), help="optimizers to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="races run one after the other (the "
                    "same trajectories, new timings); the first one's histories are kept")
    output.add_out_arguments(ap, "results/classifier_kfac")
    args = ap.parse_args(argv)
    out_dir = output.resolve_out(args, "classifier_kfac")
    data = datasets.load("digits", seed=args.seed)
    X = jnp.asarray(data.X_train, jnp.float32)
    Y = jnp.asarray(data.Y_train, jnp.float32)
    net = jaxmlp.Network(SIZES, ("relu", "relu", "softmax"), "categorical_cross_entropy")
    t0 = time.perf_counter()
    grids = {k: v for k, v in GRIDS.items() if k in args.only.split(",")}
    repeats = []
    for r in range(args.repeat):
        runs_r = race.race(net, X, Y, grids, args.steps, args.batch_size, args.seed)
        repeats.append(race.summary(runs_r))
        if r == 0:
            runs = runs_r
        print(f"race {r + 1} of {args.repeat} done", flush=True)
    summ = repeats[0]
    for r, summ_r in enumerate(repeats):
        print(f"\nrace {r + 1}: target: Adam's final training cost {summ_r['target_cost']:.5f}")
        for name, s in summ_r.items():
            if isinstance(s, dict):
                reach = ("never" if s["steps_to_target"] is None else
                         f"{s['steps_to_target']} steps ({s['fraction_of_reference_steps']:.3f}), "
                         f"{s['seconds_to_target']:.2f} s ({s['fraction_of_reference_seconds']:.2f})")
                print(f"{name:>14} {s['setting']} final {s['final_cost']:.5f}, "
                      f"{1e3 * s['seconds_per_step']:.2f} ms/step; reaches the target: {reach}")
    output.write_json(os.path.join(out_dir, "results.json"), {
        "network": {"sizes": SIZES, "activations": net.activations, "cost": net.cost},
        "data": "digits train split (1438 x 64), standardised", "steps": args.steps,
        "batch_size": args.batch_size, "grids": grids, "summary": summ,
        "repeats": repeats, "runs": runs,
        "machine": benchmarking.machine_info(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "seconds_total": time.perf_counter() - t0})
    race.write_svg(os.path.join(out_dir, "classifier.svg"), runs, summ["target_cost"],
                   f"digits classifier {'-'.join(map(str, SIZES))}, relu, softmax, m = "
                   f"{args.batch_size}")
    print(f"wrote {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
