"""Autoencoder on digits: SGD with momentum, Adam and K-FAC, cost against steps and time.

The network is 64-32-16-32-64, tanh hidden layers, linear output, mean squared error,
reconstructing the standardised digits images (X -> X). Every optimizer runs in the
one-call scanned epoch of ``jaxmlp.train.step.make_train_epoch`` (minibatches of
``--batch-size``); K-FAC's Kronecker factors (H6) come from the same forward pass as the
gradient (``train.make_optimizer("kfac", ...)``). A small learning-rate grid is run for
each optimizer and the best final training cost is kept. After every epoch the cost on the
whole training set is recorded, with the step count and the wall time of the compiled
epoch calls (compilation excluded: each configuration is compiled on a throw-away epoch
first).

    python experiments/autoencoder.py [--steps 1100] [--out results/autoencoder]

Writes ``results.json`` and ``autoencoder.png`` (cost vs steps and vs seconds) and prints
the steps and seconds K-FAC needs to reach Adam's final training cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

import jaxmlp
from jaxmlp.data import datasets
from jaxmlp.train import kfac
from jaxmlp import train

from _common import output

SIZES = (64, 32, 16, 32, 64)
GRID = {
    "momentum": [0.01, 0.03, 0.1],
    "adam": [1e-3, 3e-3, 1e-2, 3e-2],
    "kfac": [0.1, 0.3, 1.0],
}


def run(net, name, lr, X, steps, batch_size, seed, damping, inverse_every, kl_clip):
    opt = (kfac.kfac(lr, damping=damping, inverse_every=inverse_every, kl_clip=kl_clip)
           if name == "kfac" else train.make_optimizer(name, lr))
    epoch = train.make_train_epoch(net, opt, batch_size)
    params0 = jaxmlp.init_params(net, jax.random.PRNGKey(seed))
    key = jax.random.PRNGKey(seed + 1)
    jax.block_until_ready(epoch(params0, opt.init(params0), key, X, X))  # compile
    per_epoch = X.shape[1] // batch_size
    params, state = params0, opt.init(params0)
    hist = [{"step": 0, "seconds": 0.0,
             "cost": float(train.cost_and_metrics(net, params, X, X, check_finite=False)["cost"])}]
    seconds = 0.0
    for e in range(int(np.ceil(steps / per_epoch))):
        key, k = train.split_key(key)
        t0 = time.perf_counter()
        params, state, mt = epoch(params, state, k, X, X)
        jax.block_until_ready(params)
        seconds += time.perf_counter() - t0
        cost = float(train.cost_and_metrics(net, params, X, X, check_finite=False)["cost"])
        hist.append({"step": (e + 1) * per_epoch, "seconds": seconds, "cost": cost})
        if not np.isfinite(cost):
            break
    return hist


def first_reaching(hist, target):
    for h in hist:
        if h["cost"] <= target:
            return h
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--inverse-every", type=int, default=5)
    ap.add_argument("--kl-clip", type=float, default=1.0)
    ap.add_argument("--only", default="momentum,adam,kfac", help="optimizers to run")
    ap.add_argument("--kfac-lrs", default="0.1,0.3,1.0")
    ap.add_argument("--seed", type=int, default=0)
    output.add_out_arguments(ap, "results/autoencoder")
    args = ap.parse_args(argv)
    output.resolve_out(args, "autoencoder")
    data = datasets.load("digits", seed=args.seed)
    X = data.X_train  # (64, m)
    net = jaxmlp.Network(SIZES, ("tanh", "tanh", "tanh", "linear"), "mean_squared_error")
    runs = {}
    t0 = time.perf_counter()
    GRID["kfac"] = [float(x) for x in args.kfac_lrs.split(",")]
    for name, lrs in GRID.items():
        if name not in args.only.split(","):
            continue
        best = None
        for lr in lrs:
            hist = run(net, name, lr, X, args.steps, args.batch_size, args.seed, args.damping,
                       args.inverse_every, args.kl_clip)
            final = hist[-1]["cost"]
            print(f"{name:>9} lr={lr:<6g} final train cost {final:.5f} after {hist[-1]['step']} "
                  f"steps, {hist[-1]['seconds']:.2f} s", flush=True)
            if np.isfinite(final) and (best is None or final < best["final_cost"]):
                best = {"lr": lr, "final_cost": final, "history": hist}
        runs[name] = best
    adam_final = runs["adam"]["final_cost"]
    adam_steps = runs["adam"]["history"][-1]["step"]
    adam_seconds = runs["adam"]["history"][-1]["seconds"]
    summary = {}
    for name, r in runs.items():
        hit = first_reaching(r["history"], adam_final)
        summary[name] = {
            "lr": r["lr"], "final_cost": r["final_cost"],
            "steps_to_adam_final": None if hit is None else hit["step"],
            "seconds_to_adam_final": None if hit is None else hit["seconds"],
            "fraction_of_adam_steps": None if hit is None else hit["step"] / adam_steps,
            "fraction_of_adam_seconds": None if hit is None else hit["seconds"] / adam_seconds,
        }
    print(f"\nAdam's final training cost {adam_final:.5f} after {adam_steps} steps "
          f"({adam_seconds:.2f} s of compiled epochs)")
    for name, s in summary.items():
        reach = ("never" if s["steps_to_adam_final"] is None else
                 f"{s['steps_to_adam_final']} steps ({s['fraction_of_adam_steps']:.3f} of Adam's), "
                 f"{s['seconds_to_adam_final']:.2f} s ({s['fraction_of_adam_seconds']:.2f} of Adam's)")
        print(f"{name:>9} lr={s['lr']:<6g} final {s['final_cost']:.5f}; reaches Adam's final: {reach}")
    output.write_json(os.path.abspath(os.path.join(args.out, "results.json")), {
        "network": {"sizes": SIZES, "activations": net.activations, "cost": net.cost},
        "steps": args.steps, "batch_size": args.batch_size, "damping": args.damping,
        "inverse_every": args.inverse_every, "kl_clip": args.kl_clip,
        "grid": GRID, "summary": summary, "runs": runs,
        "load_average": list(os.getloadavg()), "jax": jax.__version__,
        "seconds_total": time.perf_counter() - t0})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for name, r in runs.items():
            h = r["history"]
            label = f"{name} (lr {r['lr']:g})"
            ax[0].semilogy([x["step"] for x in h], [x["cost"] for x in h], label=label)
            ax[1].semilogy([x["seconds"] for x in h], [x["cost"] for x in h], label=label)
        for a in ax:
            a.axhline(adam_final, color="gray", lw=0.8, ls="--")
            a.set_ylabel("training cost J")
            a.legend()
        ax[0].set_xlabel("steps")
        ax[1].set_xlabel("seconds (compiled epochs, shared 2-core CPU)")
        fig.suptitle("digits autoencoder 64-32-16-32-64, tanh, MSE")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "autoencoder.png"), dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
