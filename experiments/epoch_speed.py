"""Examples/s of one training epoch: lax.scan epoch vs Python loop of jitted steps vs PyTorch.

    python experiments/epoch_speed.py [--samples 30] [--epochs-per-sample 5]

Network 64-128-10 (relu, softmax, categorical cross-entropy), float32, plain SGD (lr 0.1),
minibatch 128, on the digits train split (1438 examples: 11 minibatches, 1408 examples per
epoch). Each variant shuffles, cuts the minibatches and runs 11 updates per epoch:

* ``jax scan``: ``jaxmlp.train.step.make_train_epoch``, the whole epoch ONE compiled call,
  shuffled by ``jaxmlp.train.shuffle.permutation`` (the default);
* ``jax scan with jax.random.permutation``: the same with ``permutation=jax.random.permutation``
  (what the library used before ``jaxmlp.train.shuffle``; shows what the shuffle costs);
* ``jax loop``: one jitted call draws the permutation and gathers the minibatches
  (``epoch_batches``), then a Python loop calls the jitted ``make_train_step`` 11 times
  (``check_data=False``: the set is checked once before, not every minibatch);
* ``torch eager Nt`` (when torch imports; OpenMP waiting passively, ``OMP_WAIT_POLICY=PASSIVE``
  unless set): ``nn.Sequential(Linear, ReLU, Linear)``,
  ``CrossEntropyLoss``, ``optim.SGD``, a ``randperm`` and the usual zero_grad / backward / step
  loop, rows as examples (torch's layout); with torch's default thread count N and, when
  N > 1, also with 1 thread (intra-op threads spin and lose badly on a shared, loaded machine).

The JAX variants draw each epoch's key with ``train.split_key`` (the split in one compiled
call; the eager ``key, k = jax.random.split(key)`` costs ~0.2 ms of Python per epoch).
Timing: :func:`_common.benchmarking.time_paired` (compiled first; ``--samples`` rounds, each
variant once per round in a shuffled order; a sample is ``--epochs-per-sample`` epochs ended by
``block_until_ready``). Reports the median ms per epoch, examples/s and the paired ratio to
the scan (median and IQR of the per-round ratios), and writes ``epoch_speed.json`` into a new
``runs/`` folder (``--out FILE``, relative to the folder you run from; ``--results``: the
committed ``results/train/epoch_speed.json``).
"""

from __future__ import annotations

import re
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp
from _common import benchmarking, cli
from _common import output  # noqa: E402
from jaxmlp.data import datasets
from jaxmlp import train

SIZES = (64, 128, 10)
BATCH = 128
LR = 0.1
SCAN = "jax scan"  # the reference of the paired ratios
#: the names of :func:`jax_variants`, known before anything is built
JAX_VARIANTS = ("jax scan", "jax loop", "jax scan with jax.random.permutation",
                "jax scan over fixed batches")


def jax_variants(X, Y, seed):
    net = jaxmlp.Network(sizes=SIZES, activations=("relu", "softmax"),
                         cost="categorical_cross_entropy")
    opt = optax.sgd(LR)
    m = X.shape[1]
    epoch = train.make_train_epoch(net, opt, BATCH)
    epoch_jaxperm = train.make_train_epoch(net, opt, BATCH, permutation=jax.random.permutation)
    train.check_data(net, X, Y)  # once, for the whole set: the timed loop does not rescan
    step = train.make_train_step(net, opt, check_data=False)  # its minibatches every step

    @jax.jit
    def batches(key, X, Y):
        idx = train.epoch_batches(key, m, BATCH)
        return jnp.moveaxis(X[:, idx], 1, 0), jnp.moveaxis(Y[:, idx], 1, 0)

    def init():
        params = jaxmlp.init_params(net, jax.random.PRNGKey(seed))
        return [params, opt.init(params), jax.random.PRNGKey(seed + 1)]

    def make_run_scan(epoch_fn):
        def run_scan(state):
            params, opt_state, key = state
            key, k = train.split_key(key)
            params, opt_state, _ = epoch_fn(params, opt_state, k, X, Y)
            state[:] = [params, opt_state, key]
            return params
        return run_scan

    def run_loop(state):
        params, opt_state, key = state
        key, k = train.split_key(key)
        Xb, Yb = batches(k, X, Y)
        for s in range(Xb.shape[0]):
            params, opt_state, _ = step(params, opt_state, Xb[s], Yb[s])
        state[:] = [params, opt_state, key]
        return params

    # Diagnostic: the same scan over minibatches cut once, in a fixed order (no shuffle), so
    # the difference to "jax scan" is the in-graph column gather of the shuffle.
    @jax.jit
    def epoch_fixed(params, opt_state, Xb, Yb):
        def body(carry, XY):
            params, opt_state, metrics = step(carry[0], carry[1], XY[0], XY[1])
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (Xb, Yb))
        return params, opt_state, metrics

    Xb_fixed, Yb_fixed = batches(jax.random.PRNGKey(seed + 2), X, Y)

    def run_scan_fixed(state):
        params, opt_state, key = state
        params, opt_state, _ = epoch_fixed(params, opt_state, Xb_fixed, Yb_fixed)
        state[:] = [params, opt_state, key]
        return params

    return {"jax scan": (init, make_run_scan(epoch)), "jax loop": (init, run_loop),
            "jax scan with jax.random.permutation": (init, make_run_scan(epoch_jaxperm)),
            "jax scan over fixed batches": (init, run_scan_fixed)}


def torch_variants(X, Y, seed):
    # optional: .venv-compare (scripts/setup_compare.sh). OpenMP waiters sleep instead of spinning
    # (must be set before torch's first import): on a shared, oversubscribed machine
    # spinning waiters starve torch's working threads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    default_threads = torch.get_num_threads()
    torch.manual_seed(seed)
    Xt = torch.from_numpy(np.ascontiguousarray(X.T))  # (m, 64): rows are examples in torch
    yt = torch.from_numpy(np.argmax(Y, axis=0)).long()
    m = Xt.shape[0]
    nb = m // BATCH

    def init():
        model = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(),
                                    torch.nn.Linear(SIZES[1], SIZES[2]))
        return [model, torch.optim.SGD(model.parameters(), lr=LR), torch.nn.CrossEntropyLoss()]

    def make_run(threads):
        def run(state):
            torch.set_num_threads(threads)
            _run(state)
        return run

    def _run(state):
        model, opt, loss_fn = state
        perm = torch.randperm(m)
        for s in range(nb):
            idx = perm[s * BATCH:(s + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()

    variants = {f"torch eager {default_threads}t": (init, make_run(default_threads))}
    if default_threads != 1:
        variants["torch eager 1t"] = (init, make_run(1))
    return variants, torch.__version__, default_threads


PROG = "epoch_speed.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=cli.positive_int, default=30,
                   help="timed samples (rounds) per variant (>= 1)")
    p.add_argument("--epochs-per-sample", type=cli.positive_int, default=5,
                   help="epochs timed in one sample (>= 1)")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0,
                   help="seed of the digits split, the initialisation and the shuffles (>= 0)")
    p.add_argument("--variants", default=None, metavar="NAME[,NAME...]",
                   help=f"comma-separated subset of the variants, including {SCAN!r}: "
                        f"{', '.join(JAX_VARIANTS)}, 'torch eager <N>t' (default: all)")
    output.add_out_arguments(p, "results/train/epoch_speed.json", what="JSON file")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "epoch_speed")
        wanted = None
        if args.variants is not None:
            wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
            bad = [v for v in wanted
                   if v not in JAX_VARIANTS and not re.fullmatch(r"torch eager \d+t", v)]
            if bad or SCAN not in wanted:
                raise cli.UsageError(f"--variants: expected a comma-separated subset of "
                                     f"{list(JAX_VARIANTS)} or 'torch eager <N>t' including "
                                     f"{SCAN!r}, got {args.variants!r}")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)

    data = datasets.load("digits", seed=args.seed)
    X, Y = jnp.asarray(data.X_train), jnp.asarray(data.Y_train)
    m = X.shape[1]
    examples = (m // BATCH) * BATCH
    variants = jax_variants(X, Y, args.seed)
    notes = []
    torch_info = None
    try:
        tv, torch_version, torch_threads = torch_variants(data.X_train, data.Y_train, args.seed)
        variants.update(tv)
        torch_info = {"version": torch_version, "threads": torch_threads}
    except ImportError:
        notes.append("torch is not installed: the torch eager row is skipped "
                     "(bash scripts/setup_compare.sh, then run with .venv-compare/bin/python).")
    if wanted is not None:
        bad = [v for v in wanted if v not in variants]
        if bad:  # a torch row of another thread count, or torch is not installed
            return cli.report_usage(PROG, cli.UsageError(
                f"--variants: {bad} not available here; expected a subset of {list(variants)} "
                f"including {SCAN!r}"))
        variants = {v: variants[v] for v in wanted}

    states = {name: init() for name, (init, _) in variants.items()}
    calls = {name: (lambda run=run, st=states[name]: run(st)) for name, (_, run) in variants.items()}
    timing = benchmarking.time_paired(calls, reference=SCAN, rounds=args.samples,
                                      inner=args.epochs_per_sample, seed=args.seed)
    info = benchmarking.machine_info()
    rows = []
    for n in variants:
        med = timing.median(n)
        r = timing.paired_ratio(n)
        rows.append({"variant": n, "median_epoch_ms": 1e3 * med, "examples_per_s": examples / med,
                     "time_over_scan": r["median"], "time_over_scan_iqr": [r["q25"], r["q75"]]})
    print(f"one epoch of digits ({m} train examples, {m // BATCH} minibatches of {BATCH}), "
          f"network {'-'.join(map(str, SIZES))}, SGD, float32; median of {args.samples} rounds x "
          f"{args.epochs_per_sample} epochs, paired ratios to the scan")
    print(f"{'variant':<34}{'ms/epoch':>10}{'examples/s':>14}{'time / scan':>13}{'IQR':>14}")
    for r in rows:
        lo, hi = r["time_over_scan_iqr"]
        print(f"{r['variant']:<34}{r['median_epoch_ms']:>10.3f}{r['examples_per_s']:>14,.0f}"
              f"{r['time_over_scan']:>13.2f}{lo:>8.2f}-{hi:<5.2f}")
    for n in notes:
        print("note:", n)
    print("machine:", benchmarking.describe(info)
          + (f", torch {torch_info['version']} (default {torch_info['threads']} threads)" if torch_info else ""))
    result = {"rows": rows, "samples": args.samples, "epochs_per_sample": args.epochs_per_sample,
              "batch_size": BATCH, "sizes": SIZES, "m_train": int(m), "examples_per_epoch": examples,
              "notes": notes, "torch": torch_info, "machine": info, "timing": timing.to_json()}
    path = benchmarking.write_json(args.out, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
