"""The cost of privacy: accuracy against epsilon, and the time and memory of a DP-SGD step.

    python experiments/dp.py accuracy                 # digits (all bundled sets: --datasets all)
    python experiments/dp.py speed                    # 784-512-512-10 at m = 256, 1024, 4096
    python experiments/dp.py accuracy --quick         # 1 seed, smaller grid (a smoke test)
    python experiments/dp.py noise                    # JAX's generators for the P noise draws

**accuracy** (results/dp/accuracy.json, accuracy.png). For each dataset and each epsilon in
{0.5, 1, 2, 4, 8, inf} (delta = 1e-5, PLD accountant, Poisson sampling; inf = the same
pipeline with clipping and no noise) the hyper-parameters are chosen on a VALIDATION split
carved from the train split (20 % of it, fixed seed), never on the test split: every point of
a small grid (learning rate x sampling rate q x number of steps) is trained on the remaining
80 % with its noise calibrated to epsilon, and the point with the best validation metric
wins. The winner is then retrained on the whole train split (same q and steps, noise
calibrated again for them, which gives the same sigma) with 3 seeds and evaluated once on
the test split; the table reports the test mean and standard deviation. The non-private
reference is ``experiments/train.py``'s default configuration for the dataset (its own
network and Adam), trained with the same 3 seeds. Caveat: the tuning runs read the
private training data, and their privacy cost is not counted in epsilon (as in most of
the literature).

Network: one hidden tanh layer (64 units for digits and multilabel, 32 for the two small
sets), SGD with momentum 0.9, per-example clip C = 1 (flat).

**speed** (results/dp/speed.json). One training step (gradient + SGD update) of the medium
network 784-512-512-10 (relu, softmax + cross-entropy, float32) on a fixed batch of m
columns, for: the non-private step; the jaxmlp DP step (flat and per-layer clipping,
noise on, sigma = 1); the vmap route of the JAX ecosystem (``jax.vmap(jax.grad)`` per-example
gradients, then ``optax.contrib.differentially_private_aggregate``); and, when torch and
opacus import (the ``compare`` extra), Opacus's ghost clipping and per-sample (hooks) steps
of the same network on the same batch. Two diagnostics split the DP step's extra time: the
DP step with sigma = 0 (clipping only: no random numbers are drawn) and the noise draw alone
(one Gaussian per parameter, JAX's default threefry generator). Timing: the repository's
protocol, ``_common.benchmarking.time_paired`` (compiled and warmed up first, rounds in a
shuffled order, ``block_until_ready``, ratios as medians of per-round ratios, paired); the
slow vmap route and Opacus per-sample steps run in the first 3 rounds only. XLA memory:
``jax.jit(f).lower(...).compile().memory_analysis()`` (temporaries + arguments + outputs),
which needs no execution, so the vmap route's memory is reported at m = 4096 too, where
running it is skipped (``--vmap-max-m``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from _common import networks
from _common import cli, output
import jaxmlp
from _common import benchmarking
from jaxmlp.data import datasets
from jaxmlp import privacy
from jaxmlp import train
from jaxmlp.train.loop import fit

OUT = "results/dp"  # relative to the repository root (benchmarking.output_path)
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
DELTA = 1e-5
SEEDS = (0, 1, 2)
VAL_FRACTION = 0.2
VAL_SEED = 1234
CLIP = 1.0
#: The grid searched on the validation split, per dataset.
GRIDS = {
    "digits": dict(hidden=[64], lr=(0.25, 0.5), q=(0.5, 0.7), steps=(40, 80)),
    "breast_cancer": dict(hidden=[32], lr=(0.25, 0.5), q=(0.5, 0.7), steps=(40, 80)),
    "multilabel": dict(hidden=[64], lr=(0.25, 0.5), q=(0.5, 0.7), steps=(40, 80)),
    "diabetes": dict(hidden=[32], lr=(0.05, 0.2), q=(0.5, 0.7), steps=(40, 80)),
}
QUICK_GRID = dict(lr=(0.5,), q=(0.5,), steps=(80,))
#: jax-privacy's clipped_grad takes seconds per step here (about 2 s at m = 256): run it up to
#: this m only.
JAX_PRIVACY_MAX_M = 256
STEPS_PER_EPOCH = 10  # fit evaluates (and accounts) once per 10 steps


# ----------------------------------------------------------------------------- accuracy


def _network(data, hidden):
    return jaxmlp.Network((data.n_inputs, *hidden, data.n_outputs),
                          (*(["tanh"] * len(hidden)), data.output_activation), data.cost)


def _dp_run(net, X, Y, Xe, Ye, *, eps, lr, q, steps, seed):
    """Trains privately (or with sigma = 0 for eps = inf); returns (metric on (Xe, Ye), sigma, eps spent)."""
    n = X.shape[1]
    sigma = 0.0 if math.isinf(eps) else privacy.calibrate_noise(
        target_epsilon=eps, delta=DELTA, sampling_rate=q, steps=steps)
    dp = privacy.DPSGD(l2_norm_clip=CLIP, noise_multiplier=sigma, sampling_rate=q, delta=DELTA,
                       steps_per_epoch=STEPS_PER_EPOCH,
                       target_epsilon=None if math.isinf(eps) else eps)
    init_key, key = jax.random.split(jax.random.PRNGKey(seed))
    params = jaxmlp.init_params(net, init_key, dtype=jnp.float32)
    fr = fit(net, params, optax.sgd(lr, momentum=0.9), X, Y, epochs=steps // STEPS_PER_EPOCH,
             key=key, dp=dp)
    if fr.status != "completed":
        return -math.inf, sigma, None, fr.status
    metric = train.metric_name(net)
    value = float(train.cost_and_metrics(net, fr.state.params, Xe, Ye)[metric])
    spent = fr.history[-1]["epsilon"] if fr.history else None
    assert n > 0
    return value, sigma, spent, fr.status


def _split_validation(data):
    n = data.X_train.shape[1]
    perm = np.random.default_rng(VAL_SEED).permutation(n)
    n_val = int(round(VAL_FRACTION * n))
    val, sub = perm[:n_val], perm[n_val:]
    return ((jnp.asarray(data.X_train[:, sub]), jnp.asarray(data.Y_train[:, sub])),
            (jnp.asarray(data.X_train[:, val]), jnp.asarray(data.Y_train[:, val])))


def _nonprivate_reference(name, data, seeds):
    """experiments/train.py's default configuration for the dataset, test metric per seed."""
    from _common import train_config  # train.py's defaults, not a copy of them

    cfg = train_config.DEFAULTS[name]
    net = jaxmlp.Network(
        (data.n_inputs, *cfg["hidden"], data.n_outputs),
        (*([cfg["activation"]] * len(cfg["hidden"])), data.output_activation), data.cost)
    X, Y = jnp.asarray(data.X_train), jnp.asarray(data.Y_train)
    Xt, Yt = jnp.asarray(data.X_test), jnp.asarray(data.Y_test)
    metric = train.metric_name(net)
    out = []
    for seed in seeds:
        init_key, key = jax.random.split(jax.random.PRNGKey(seed))
        params = jaxmlp.init_params(net, init_key, dtype=jnp.float32)
        opt = train.make_optimizer(cfg["optimizer"], cfg["lr"])
        fr = fit(net, params, opt, X, Y, epochs=cfg["epochs"], batch_size=cfg["batch_size"], key=key)
        out.append(float(train.cost_and_metrics(net, fr.state.params, Xt, Yt)[metric]))
    return {"config": {k: v for k, v in cfg.items()}, "test": out}


def accuracy(names, seeds, quick):
    rows = {}
    for name in names:
        data = datasets.load(name, seed=0)
        grid = dict(GRIDS[name])
        if quick:
            grid.update(QUICK_GRID)
        net = _network(data, grid["hidden"])
        metric = train.metric_name(net)
        (Xs, Ys), (Xv, Yv) = _split_validation(data)
        X, Y = jnp.asarray(data.X_train), jnp.asarray(data.Y_train)
        Xt, Yt = jnp.asarray(data.X_test), jnp.asarray(data.Y_test)
        per_eps = []
        for eps in EPSILONS:
            t0 = time.perf_counter()
            trials = []
            for lr in grid["lr"]:
                for q in grid["q"]:
                    for steps in grid["steps"]:
                        v, sigma, _, status = _dp_run(net, Xs, Ys, Xv, Yv, eps=eps, lr=lr, q=q,
                                                      steps=steps, seed=100)
                        trials.append({"lr": lr, "q": q, "steps": steps, "sigma": sigma,
                                       "validation": v, "status": status})
            best = max(trials, key=lambda t: t["validation"])
            tests, spent = [], []
            for seed in seeds:
                v, sigma, e, status = _dp_run(net, X, Y, Xt, Yt, eps=eps, lr=best["lr"],
                                              q=best["q"], steps=best["steps"], seed=seed)
                tests.append(v)
                spent.append(e)
            row = {"epsilon": None if math.isinf(eps) else eps, "delta": DELTA,
                   "chosen": {k: best[k] for k in ("lr", "q", "steps")},
                   "expected_batch_size": best["q"] * X.shape[1], "noise_multiplier": sigma,
                   "epsilon_spent": spent, "validation_best": best["validation"],
                   "test": tests, "test_mean": float(np.mean(tests)),
                   "test_std": float(np.std(tests)), "grid": trials,
                   "seconds": time.perf_counter() - t0}
            per_eps.append(row)
            print(f"{name:>13} eps={eps:<4g} {metric} {row['test_mean']:.4f} +- {row['test_std']:.4f}"
                  f"  (lr {best['lr']}, q {best['q']}, {best['steps']} steps, sigma {sigma:.3g};"
                  f" val {best['validation']:.4f}; {row['seconds']:.0f} s)", flush=True)
        ref = _nonprivate_reference(name, data, seeds)
        ref["test_mean"], ref["test_std"] = float(np.mean(ref["test"])), float(np.std(ref["test"]))
        print(f"{name:>13} non-private reference {metric} {ref['test_mean']:.4f} +- "
              f"{ref['test_std']:.4f}", flush=True)
        rows[name] = {"metric": metric, "m_train": int(X.shape[1]), "network": list(net.sizes),
                      "activations": list(net.activations), "rows": per_eps,
                      "nonprivate_reference": ref}
    return rows


def accuracy_table(rows) -> str:
    lines = []
    for name, r in rows.items():
        lines.append(f"{name} ({r['metric']}, test split, mean +- std over seeds; network "
                     f"{'-'.join(map(str, r['network']))} tanh, delta {DELTA:g}, PLD)")
        lines.append(f"{'epsilon':>8} {'test':>16} {'lr':>6} {'q':>5} {'E[B]':>6} {'steps':>6} {'sigma':>8}")
        for row in r["rows"]:
            e = "inf" if row["epsilon"] is None else f"{row['epsilon']:g}"
            c = row["chosen"]
            lines.append(f"{e:>8} {row['test_mean']:>9.4f} +- {row['test_std']:.3f} {c['lr']:>6g} "
                         f"{c['q']:>5g} {row['expected_batch_size']:>6.0f} {c['steps']:>6} "
                         f"{row['noise_multiplier']:>8.3g}")
        ref = r["nonprivate_reference"]
        lines.append(f"{'non-DP':>8} {ref['test_mean']:>9.4f} +- {ref['test_std']:.3f}  "
                     f"(train.py defaults: {ref['config']['hidden']} {ref['config']['activation']}, "
                     f"{ref['config']['optimizer']} lr {ref['config']['lr']:g}, batch "
                     f"{ref['config']['batch_size']}, {ref['config']['epochs']} epochs)")
        lines.append("")
    return "\n".join(lines)


def accuracy_markdown(rows) -> str:
    """docs/privacy.md's accuracy table: one column per dataset, the chosen point next to each mean."""
    names = list(rows)
    labels = ["inf" if r["epsilon"] is None else f"{r['epsilon']:g}" for r in rows[names[0]]["rows"]]
    lines = ["| epsilon | " + " | ".join(f"{n} ({rows[n]['metric']})" for n in names) + " |",
             "|---:|" + "---:|" * len(names)]
    for i, label in enumerate(labels):
        cells = []
        for n in names:
            r = rows[n]["rows"][i]
            c = r["chosen"]
            cells.append(f"{r['test_mean']:.3f} +- {r['test_std']:.3f} (lr {c['lr']:g}, E[B] "
                         f"{r['expected_batch_size']:.0f}, {c['steps']} steps, sigma "
                         f"{r['noise_multiplier']:.3g})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ref = [rows[n]["nonprivate_reference"] for n in names]
    lines.append("| non-DP | " + " | ".join(f"{r['test_mean']:.3f} +- {r['test_std']:.3f}"
                                            for r in ref) + " |")
    nets = "; ".join(f"{n}: {'-'.join(map(str, rows[n]['network']))}, n = {rows[n]['m_train']}"
                     for n in names)
    return "\n".join(lines) + f"\n\nNetworks and train sizes: {nets}."


def accuracy_plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], rows.items()):
        finite = [row for row in r["rows"] if row["epsilon"] is not None]
        xs = [row["epsilon"] for row in finite]
        ax.errorbar(xs, [row["test_mean"] for row in finite],
                    yerr=[row["test_std"] for row in finite], marker="o", capsize=3,
                    label="DP-SGD (Poisson, PLD)")
        inf_row = [row for row in r["rows"] if row["epsilon"] is None]
        if inf_row:
            ax.axhline(inf_row[0]["test_mean"], ls=":", color="gray", label="clipped, no noise")
        ax.axhline(r["nonprivate_reference"]["test_mean"], ls="--", color="k",
                   label="non-private reference")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"epsilon (delta = {DELTA:g})")
        ax.set_ylabel(f"test {r['metric']}")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- speed


def _speed_functions(net, m, sigma=1.0, C=1.0):
    """name -> step(params, X, Y, key) -> params (to be jitted); jax-privacy's when installed."""
    L = net.num_layers
    opt = optax.sgd(0.1)
    C_layers = np.full(L, C / math.sqrt(L))

    def nonprivate(params, X, Y, key):
        _, g = train.step.value_and_grad_kernel(net, params, X, Y)
        u, _ = opt.update(g, opt.init(params), params)
        return optax.apply_updates(params, u)

    def dp_step(Cs, sens, sigma=sigma):
        def step(params, X, Y, key):
            out = privacy.dp_gradient_kernel(net, params, X, Y, key, Cs, None, X.shape[1],
                                             sigma=sigma, sensitivity=sens)
            u, _ = opt.update(out.grads, opt.init(params), params)
            return optax.apply_updates(params, u)
        return step

    agg = optax.chain(optax.contrib.differentially_private_aggregate(
        l2_norm_clip=C, noise_multiplier=sigma, key=jax.random.key(0)), opt)

    def vmap_route(params, X, Y, key):
        def L_i(p, x, y):  # autodiff of the one-column loss: the ecosystem's per-example route
            return jaxmlp.loss(net, p, x[:, None], y[:, None])

        G = jax.vmap(jax.grad(L_i), in_axes=(None, 1, 1))(params, X, Y)
        u, _ = agg.update(G, agg.init(params), params)
        return optax.apply_updates(params, u)

    def noise_only(params, X, Y, key):  # the P Gaussian draws of a DP step, alone
        return privacy.add_noise(key, params, jnp.float32(sigma * C), jnp.float32)

    fns = {}
    if jax_privacy_available():
        from jax_privacy import clipped_grad, noise_addition

        def loss_rows(p, x, y):  # x (b, n[0]), y (b, n[L]): jax-privacy slices the first axis
            return jaxmlp.loss(net, p, x.T, y.T)

        clipped = clipped_grad(loss_rows, l2_clip_norm=C, batch_argnums=(1, 2))
        privatizer = noise_addition.gaussian_privatizer(stddev=sigma * C, prng_key=0)

        def jax_privacy_step(params, X, Y, key):
            G = clipped(params, X.T, Y.T)  # sum of the clipped per-example gradients
            noisy, _ = privatizer.update(G, privatizer.init(G))
            g = jax.tree.map(lambda x: x / X.shape[1], noisy)
            u, _ = opt.update(g, opt.init(params), params)
            return optax.apply_updates(params, u)

        fns["jax_privacy"] = jax_privacy_step
    return {"nonprivate": nonprivate, "dp_flat": dp_step(np.float32(C), C),
            "dp_flat_no_noise": dp_step(np.float32(C), C, sigma=0.0), "noise_only": noise_only,
            "dp_per_layer": dp_step(C_layers.astype(np.float32), C), "vmap_route": vmap_route} | fns


def _memory(compiled):
    ma = compiled.memory_analysis()
    if ma is None:
        return None
    return {"temp": int(ma.temp_size_in_bytes), "argument": int(ma.argument_size_in_bytes),
            "output": int(ma.output_size_in_bytes),
            "total": int(ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes)}


def jax_privacy_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jax_privacy") is not None


def opacus_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "opacus"))


def _opacus_step(X, Y, mode, sigma=1.0, C=1.0):
    """One Opacus DP-SGD step of the same network (rows as examples, torch's layout) on the
    same batch: ``grad_sample_mode`` "hooks" (per-sample gradients) or "ghost" (ghost
    clipping, no per-sample gradients stored). A zero-argument callable."""
    import warnings

    torch = networks.import_torch()
    from opacus import PrivacyEngine
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Xr = torch.from_numpy(np.ascontiguousarray(np.asarray(X).T))
    y = torch.from_numpy(np.asarray(Y).argmax(axis=0).astype(np.int64))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xr, y),
                                         batch_size=Xr.shape[0])
    with warnings.catch_warnings():  # opacus warns about secure RNG and the accountant
        warnings.simplefilter("ignore")
        engine = PrivacyEngine()
        if mode == "ghost":
            model, opt, criterion, _ = engine.make_private(
                module=model, optimizer=opt, data_loader=loader, criterion=nn.CrossEntropyLoss(),
                noise_multiplier=sigma, max_grad_norm=C, grad_sample_mode="ghost",
                poisson_sampling=False)
        else:
            model, opt, _ = engine.make_private(
                module=model, optimizer=opt, data_loader=loader, noise_multiplier=sigma,
                max_grad_norm=C, grad_sample_mode="hooks", poisson_sampling=False)
            criterion = nn.CrossEntropyLoss()

    def call():  # eager: done when it returns
        opt.zero_grad(set_to_none=True)
        criterion(model(Xr), y).backward()
        opt.step()

    return call


def noise_generators(rounds):
    """P = 669,706 normals (the medium network's parameter count) added to a zero gradient,
    by each way JAX offers: ``privacy.add_noise`` (``jaxmlp.privacy.threefry.normal``: JAX's threefry
    normals, the hash unrolled and fused; a key per leaf), ``jax.random.normal`` per leaf
    and in one draw of all P (JAX's CPU lowering: the hash in a 5-iteration loop), the
    "rbg" and "unsafe_rbg" key implementations (XLA's RngBitGenerator), and threefry's raw
    bits alone. Times (paired) and XLA temporaries."""
    net = jaxmlp.Network((784, 512, 512, 10), ("relu", "relu", "softmax"),
                         "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    P = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    key = jax.random.PRNGKey(3)
    zero = jax.tree.map(jnp.zeros_like, params)

    def per_leaf(k, grads, impl=None):
        leaves, treedef = jax.tree.flatten(grads)
        ks = jax.random.split(k, len(leaves))
        if impl is not None:  # the same 2 x 32 bits, re-keyed for the other generator
            ks = [jax.random.wrap_key_data(jax.random.bits(kk, (4,), jnp.uint32), impl=impl)
                  for kk in ks]
        return jax.tree.unflatten(treedef, [g + jax.random.normal(kk, g.shape, g.dtype)
                                            for g, kk in zip(leaves, ks)])

    def one_draw(k, grads):
        leaves, treedef = jax.tree.flatten(grads)
        z, out, start = jax.random.normal(k, (P,), jnp.float32), [], 0
        for g in leaves:
            out.append(g + z[start:start + g.size].reshape(g.shape))
            start += g.size
        return jax.tree.unflatten(treedef, out)

    fns = {"privacy.add_noise (unrolled, fused)": lambda k, g: privacy.add_noise(k, g, 1.0, jnp.float32),
           "jax.random.normal per leaf": per_leaf,
           "jax.random.normal, one draw of P": one_draw,
           "rbg keys per leaf": lambda k, g: per_leaf(k, g, "rbg"),
           "unsafe_rbg keys per leaf": lambda k, g: per_leaf(k, g, "unsafe_rbg"),
           "threefry bits only (JAX)": lambda k, g: jax.random.bits(k, (P,), jnp.uint32)}
    calls, temp = {}, {}
    for name, f in fns.items():
        c = jax.jit(f).lower(key, zero).compile()
        temp[name] = _memory(c)["temp"]
        calls[name] = (lambda c=c: c(key, zero))
    timing = benchmarking.time_paired(calls, reference="jax.random.normal per leaf",
                                      rounds=rounds, target_s=0.02)
    print(timing.table())
    for name, t in temp.items():
        print(f"{name:>40}: XLA temporaries {t / 2**20:.1f} MiB")
    return {"num_params": P, "temp_bytes": temp, "timing": timing.to_json()}


def speed(sizes, rounds, vmap_max_m, opacus=True):
    """Paired timings (``_common.benchmarking.time_paired``) and XLA memory per batch size."""
    net = jaxmlp.Network((784, 512, 512, 10), ("relu", "relu", "softmax"),
                         "categorical_cross_entropy")
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0), dtype=jnp.float32)
    results = []
    rng = np.random.default_rng(0)
    for m in sizes:
        X = jnp.asarray(rng.normal(size=(784, m)).astype(np.float32))
        Y = jnp.asarray(np.eye(10, dtype=np.float32)[:, rng.integers(0, 10, m)])
        key = jax.random.PRNGKey(1)
        calls, memory = {}, {}
        for name, f in _speed_functions(net, m).items():
            c = jax.jit(f).lower(params, X, Y, key).compile()
            memory[name] = _memory(c)
            if (name == "vmap_route" and m > vmap_max_m) or (
                    name == "jax_privacy" and m > JAX_PRIVACY_MAX_M):
                continue  # memory only: O(m * num_params) per-example gradients
            calls[name] = (lambda c=c: c(params, X, Y, key))
        if opacus:  # per-sample gradients: m * P floats, skipped with the vmap route
            for mode in ("ghost", "hooks") if m <= vmap_max_m else ("ghost",):
                calls[f"opacus_{mode}"] = _opacus_step(X, Y, mode)
        slow = {k: 3 for k in calls if k in ("vmap_route", "opacus_hooks", "jax_privacy")}
        timing = benchmarking.time_paired(
            calls, reference="nonprivate", rounds=rounds, max_samples=slow,
            warmup={k: 1 for k in slow} or 2, target_s=0.02, seed=m)
        med = {k: 1e3 * timing.median(k) for k in calls}
        ratio = {k: timing.paired_ratio(k) for k in calls}
        row = {"m": m, "rounds": timing.rounds, "median_ms": med,
               "paired_ratio_to_nonprivate": {k: v["median"] for k, v in ratio.items()},
               "paired_ratio_iqr": {k: [v["q25"], v["q75"]] for k, v in ratio.items()},
               "xla_memory_bytes": memory,
               "memory_ratio_to_nonprivate": {
                   k: (v["total"] / memory["nonprivate"]["total"] if v and memory["nonprivate"] else None)
                   for k, v in memory.items()},
               "timing": timing.to_json()}
        for other in ("vmap_route", "jax_privacy", "opacus_ghost", "opacus_hooks"):
            if other in calls:  # paired, in the rounds where both ran
                row[f"{other}_over_dp_flat"] = timing.paired_ratio(other, "dp_flat")["median"]
        results.append(row)
        print(timing.table(), flush=True)
    return {"network": list(net.sizes), "dtype": "float32", "sigma": 1.0, "clip": 1.0,
            "results": results}


#: Columns of :func:`speed_table`: (variant, heading); a variant no row measured is left out.
SPEED_COLUMNS = (("nonprivate", "non-private"), ("dp_flat", "DP flat"),
                 ("dp_per_layer", "DP per-layer"), ("dp_flat_no_noise", "DP, sigma = 0"),
                 ("noise_only", "noise alone"), ("vmap_route", "vmap route"),
                 ("jax_privacy", "jax-privacy"), ("opacus_ghost", "Opacus ghost"),
                 ("opacus_hooks", "Opacus per-sample"))


def speed_table(sp) -> str:
    """Markdown: absolute times of the non-private step and of the noise alone, every other
    variant as its time / the non-private step's (paired median); then the paired ratios to
    the DP flat step and the memory ratio."""
    cols = [(k, h) for k, h in SPEED_COLUMNS
            if any(k in row["median_ms"] or k in row["xla_memory_bytes"] for row in sp["results"])]
    lines = ["| m | " + " | ".join(h for _, h in cols) +
             " | vmap / DP flat | Opacus ghost / DP flat | memory DP / non-private |",
             "|---:|" + "---:|" * (len(cols) + 3)]
    for row in sp["results"]:
        t, r = row["median_ms"], row["paired_ratio_to_nonprivate"]
        cells = [f"{t[k]:.2f} ms" if k in ("nonprivate", "noise_only") else
                 f"{r[k]:.2f}x" if k in t else "not run" for k, _ in cols]
        over = [f"{row[key]:.1f}x" if key in row else "-"
                for key in ("vmap_route_over_dp_flat", "opacus_ghost_over_dp_flat")]
        lines.append(f"| {row['m']} | " + " | ".join(cells + over) +
                     f" | {row['memory_ratio_to_nonprivate']['dp_flat']:.2f}x |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


PROG = "dp.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", default="all", choices=("accuracy", "speed", "noise", "all"),
                   help="which experiment: accuracy, speed, noise or all")
    p.add_argument("--datasets", nargs="+", default=["digits"], metavar="NAME",
                   help=f"datasets for accuracy, of {', '.join(datasets.DATASETS)} "
                        "('all' = every one)")
    p.add_argument("--seeds", type=cli.positive_int, default=len(SEEDS),
                   help="seeds of the final runs, >= 1 (default 3)")
    p.add_argument("--quick", action="store_true", help="one grid point, for a smoke test")
    p.add_argument("--sizes", nargs="+", type=cli.positive_int, default=[256, 1024, 4096],
                   metavar="M", help="batch sizes m of the speed experiment (each >= 1)")
    p.add_argument("--rounds", type=cli.positive_int, default=20,
                   help="timing rounds of the speed and noise experiments (>= 1)")
    p.add_argument("--no-opacus", action="store_true",
                   help="skip Opacus even when torch and opacus import")
    p.add_argument("--vmap-max-m", type=cli.nonnegative_int, default=1024,
                   help="largest m at which the vmap route is run, >= 0 (memory is reported "
                        "anyway)")
    output.add_out_arguments(p, str(OUT))
    return p


def main(argv=None) -> int:
    p = build_parser()
    try:
        args = p.parse_args(argv)
        names = list(datasets.DATASETS) if args.datasets == ["all"] else args.datasets
        for n in names:
            if n not in datasets.DATASETS:
                p.error(f"--datasets: expected names from {list(datasets.DATASETS)} or 'all', "
                        f"got {n!r}")
        output.resolve_out(args, f"dp-{args.what}")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    args.out = str(benchmarking.output_path(args.out))
    os.makedirs(args.out, exist_ok=True)
    env = benchmarking.machine_info()
    if args.what in ("accuracy", "all"):
        t0 = time.perf_counter()
        rows = accuracy(names, SEEDS[: args.seeds] if args.seeds <= 3 else range(args.seeds),
                        args.quick)
        suffix = "_quick" if args.quick else ""
        path = os.path.join(args.out, f"accuracy{suffix}.json")
        if os.path.exists(path):  # datasets run before (separately) stay in the table
            with open(path) as f:
                rows = {**json.load(f)["datasets"], **rows}
        rows = {n: rows[n] for n in datasets.DATASETS if n in rows}
        table = accuracy_table(rows)
        print(table)
        print(accuracy_markdown(rows))
        written = output.write_json(os.path.abspath(os.path.join(args.out, f"accuracy{suffix}.json")), {
            "datasets": rows, "table": table,
            "epsilons": [None if math.isinf(e) else e for e in EPSILONS],
            "delta": DELTA, "accountant": "pld", "clip": CLIP,
            "validation": {"fraction_of_train": VAL_FRACTION, "seed": VAL_SEED},
            "seconds": time.perf_counter() - t0, "environment": env})
        accuracy_plot(rows, os.path.join(args.out, f"accuracy{suffix}.png"))
        print(f"wrote {written} and {os.path.join(os.path.dirname(written), f'accuracy{suffix}.png')}")
    if args.what == "noise":
        doc = noise_generators(args.rounds) | {"environment": env}
        print(f"wrote {benchmarking.write_json(os.path.join(args.out, 'noise.json'), doc)}")
    if args.what in ("speed", "all"):
        use_opacus = opacus_available() and not args.no_opacus
        if not use_opacus and not args.no_opacus:
            print("Opacus not measured: torch and opacus do not import (bash "
                  "scripts/setup_compare.sh, then run with .venv-compare/bin/python)",
                  file=sys.stderr)
        sp = speed(args.sizes, args.rounds, args.vmap_max_m, use_opacus)
        sp["table"] = speed_table(sp)
        sp["environment"] = env
        print(sp["table"])
        name = "speed.json" if env["backend"] == "cpu" else f"speed_{env['backend']}.json"
        print(f"wrote {benchmarking.write_json(os.path.join(args.out, name), sp)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
