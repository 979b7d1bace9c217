"""Where a K-FAC step's time goes, and the amortised K-FAC step against an Adam step.

Two networks (float32): the deep autoencoder 64-256-128-32-128-256-64 (tanh, linear output,
mean squared error, m = 128) and the classifier 64-512-512-10 (relu, softmax, categorical
cross-entropy, m = 256) on the digits images (``jaxmlp.data.datasets``, the largest bundled
set; 64 features, so the classifier's first layer is 64 wide, not 784). Every variant is ONE
jitted call that ``lax.scan``s ``--steps`` training steps (``jaxmlp.train.step.apply_update``)
over fixed minibatches from the same starting state, so Python dispatch is out of the
per-step time and an amortised schedule (inverses every 20 steps) is counted exactly: the
first step of the call refreshes, as the first step of a run does. Variants:

* ``adam`` (the reference), ``sgd`` (momentum 0.9), ``value_and_grad`` alone;
* ``kfac: precondition only``: statistics and inverses never refreshed (the state's count
  starts at 1 with ``curvature_every = inverse_every`` larger than the call), so the step is
  gradient + (K3) + (K4) + (K7), with both ``lax.cond``s present and not taken;
* ``kfac: precondition by hand (no lax.cond)``: the same arithmetic written without the
  transformation (fixed inverses, no conditionals): the cost of the untaken conditionals is
  the difference;
* ``kfac: + MC statistics every step``: and (H6)/(H12) factors every step (K1);
* ``kfac default``: ``kfac(lr)`` as it is (MC statistics and inverses every 20 steps);
* ``kfac: statistics every step (old default)``: the old default's statistics every step,
  inverses every 20 (the old default refreshed them every 10);
  ``kfac: statistics and inverses every 20`` (the default, spelt out);
* ``kfac: MC, inverses every step`` and ``kfac: exact factors, inverses every step`` (KFLR):
  against the default they show that the untaken inverse branch costs nothing;
* ``kfac adaptive`` (lr, momentum and damping, (K5)/(K6)).

Protocol: ``_common.benchmarking.time_paired`` (compile first, interleaved rounds in a fresh
order, paired per-round ratios to adam). Also the FLOPs of one step (XLA's ``cost_analysis``
of the compiled call, which counts the scan body once and both branches of a conditional,
and no LAPACK call) and whether its HLO holds ``conditional`` instructions (lax.cond kept as
a branch, not both sides computed and selected).

    python experiments/kfac_speed.py [--rounds 15] [--steps 40] [--repeat 3] [--batch-size M]
                                     [--only V1,V2] [--out DIR | --results]

Writes ``kfac_speed.json`` (``kfac_speed_m<M>.json`` with ``--batch-size M``; ``--results``:
``results/kfac/``) and prints a table per network and run (``--repeat``, default 3).
"""

from __future__ import annotations

import os

# LAPACK (the factors' LU and eigh) through scipy's OpenBLAS: with its default of one thread
# per core, a factorisation on a loaded 2-core machine waits on descheduled threads and
# measured 100-300x slower (docs/curvature.md); one thread, unless the caller chose.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from _common import benchmarking, cli, output
from jaxmlp import train
from jaxmlp.data import datasets
from jaxmlp.nn.propagation import value_and_grad_kernel
from jaxmlp.train import kfac
from jaxmlp.train.step import apply_update

NETWORKS = {
    "autoencoder": dict(sizes=(64, 256, 128, 32, 128, 256, 64), hidden="tanh", m=128),
    "classifier": dict(sizes=(64, 512, 512, 10), hidden="relu", m=256),
}


def problem(name):
    spec = NETWORKS[name]
    d = datasets.load("digits", seed=0)
    L = len(spec["sizes"]) - 1
    if name == "autoencoder":
        net = jaxmlp.Network(spec["sizes"], (spec["hidden"],) * (L - 1) + ("linear",),
                             "mean_squared_error")
        X = Y = jnp.asarray(d.X_train, jnp.float32)
    else:
        net = jaxmlp.Network(spec["sizes"], (spec["hidden"],) * (L - 1) + ("softmax",),
                             "categorical_cross_entropy")
        X, Y = jnp.asarray(d.X_train, jnp.float32), jnp.asarray(d.Y_train, jnp.float32)
    return net, X, Y, spec["m"]


def variants(net, X, Y, m, steps, only=None):
    params = jaxmlp.init_params(net, jax.random.PRNGKey(0))
    idx = (np.arange(steps * m) % X.shape[1]).reshape(steps, m)
    Xs = jnp.stack([X[:, i] for i in idx])
    Ys = jnp.stack([Y[:, i] for i in idx])
    never = 10 ** 9
    opts = {
        "adam": (train.make_optimizer("adam", 1e-3), 0),
        "sgd momentum": (train.make_optimizer("momentum", 1e-2), 0),
        "kfac: precondition only": (kfac.kfac(0.1, kl_clip=1e-2, curvature_every=never,
                                              inverse_every=never), 1),
        "kfac: + MC statistics every step": (kfac.kfac(0.1, kl_clip=1e-2, curvature_every=1,
                                                       inverse_every=never), 1),
        "kfac default": (kfac.kfac(0.1), 0),
        "kfac: statistics every step (old default)": (kfac.kfac(0.1, curvature_every=1,
                                                                inverse_every=20), 0),
        "kfac: statistics and inverses every 20": (kfac.kfac(0.1, curvature_every=20,
                                                             inverse_every=20), 0),
        "kfac: MC, inverses every step": (kfac.kfac(0.1, curvature_every=1, inverse_every=1), 0),
        "kfac: exact factors, inverses every step": (kfac.kfac(0.1, kind="exact", curvature_every=1,
                                                               inverse_every=1), 0),
        "kfac adaptive": (kfac.kfac(None, adaptive_lr=True, adaptive_momentum=True,
                                    adaptive_damping=True), 0),
    }
    if only is not None:
        unknown = set(only) - set(opts) - {"value_and_grad",
                                           "kfac: precondition by hand (no lax.cond)"}
        if unknown:
            raise ValueError(f"--only: unknown variants {sorted(unknown)}; known: "
                             f"{list(opts) + ['value_and_grad']}.")
        opts = {k: v for k, v in opts.items() if k in only or k == "adam"}
    out, flops, conds = {}, {}, {}
    for name, (opt, count0) in opts.items():
        state0 = opt.init(params)
        if count0:
            state0 = state0._replace(count=jnp.asarray(count0, jnp.int32))

        @jax.jit
        def run(p, s, Xs, Ys, opt=opt):
            def body(carry, xy):
                p, s = carry
                p, s, mt = apply_update(net, opt, p, s, xy[0], xy[1])
                return (p, s), mt.cost
            (p, s), costs = jax.lax.scan(body, (p, s), (Xs, Ys))
            return p, costs

        compiled = run.lower(params, state0, Xs, Ys).compile()
        flops[name] = _flops(compiled)
        conds[name] = compiled.as_text().count(" conditional(")
        out[name] = (lambda run=run, s=state0: run(params, s, Xs, Ys))

    name = "kfac: precondition by hand (no lax.cond)"
    if only is None or name in only:
        inv = [(jnp.eye(w["W"].shape[1] + 1), jnp.eye(w["W"].shape[0])) for w in params]

        @jax.jit
        def by_hand(p, inv, Xs, Ys):  # gradient, (K3), (K4), (K7): what precondition-only runs
            def body(p, xy):
                J, g = value_and_grad_kernel(net, p, xy[0], xy[1])
                d = jax.tree.map(lambda x: -0.1 * x, kfac.precondition(g, inv))
                dg = jnp.abs(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(d),
                                                                jax.tree.leaves(g))))
                c = jnp.minimum(1.0, jnp.sqrt(1e-2 / jnp.maximum(0.1 * dg, 1e-30)))
                return jax.tree.map(lambda a, b: a + c * b, p, d), J
            return jax.lax.scan(body, p, (Xs, Ys))

        compiled = by_hand.lower(params, inv, Xs, Ys).compile()
        flops[name] = _flops(compiled)
        conds[name] = compiled.as_text().count(" conditional(")
        out[name] = lambda: by_hand(params, inv, Xs, Ys)

    if only is not None and "value_and_grad" not in only:
        return out, flops, conds

    @jax.jit
    def vag(p, Xs, Ys):
        def body(acc, xy):
            J, g = value_and_grad_kernel(net, p, xy[0], xy[1])
            return acc + J + sum(jnp.sum(x) for x in jax.tree.leaves(g)), None
        return jax.lax.scan(body, jnp.zeros(()), (Xs, Ys))[0]

    flops["value_and_grad"] = _flops(vag.lower(params, Xs, Ys).compile())
    conds["value_and_grad"] = 0
    out["value_and_grad"] = lambda: vag(params, Xs, Ys)
    return out, flops, conds


def _flops(compiled):
    try:
        ca = compiled.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return float(ca.get("flops", float("nan")))
    except Exception:  # noqa: BLE001 - a backend without cost analysis
        return float("nan")


PROG = "kfac_speed.py"
#: the variants :func:`variants` times (``--only``)
VARIANTS = ("adam", "sgd momentum", "kfac: precondition only", "kfac: + MC statistics every step",
            "kfac default", "kfac: statistics every step (old default)",
            "kfac: statistics and inverses every 20", "kfac: MC, inverses every step",
            "kfac: exact factors, inverses every step", "kfac adaptive",
            "kfac: precondition by hand (no lax.cond)", "value_and_grad")


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    ap = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=cli.positive_int, default=15,
                    help="paired timing rounds per run (>= 1)")
    ap.add_argument("--steps", type=cli.bounded_int(10, multiple_of=10), default=40,
                    help="steps per timed call (a multiple of 10, >= 10)")
    ap.add_argument("--networks", default="autoencoder,classifier", type=cli.name_list(NETWORKS),
                    metavar="NAME[,NAME...]",
                    help=f"comma-separated networks, of {', '.join(NETWORKS)}")
    ap.add_argument("--repeat", type=cli.positive_int, default=3,
                    help="independent timing runs, >= 1 (3: the issue's 'report 3 runs')")
    ap.add_argument("--batch-size", type=cli.positive_int, default=None,
                    help="minibatch columns m (>= 1) for every network (default: 128 for the "
                         "autoencoder, 256 for the classifier)")
    ap.add_argument("--only", default=None, type=cli.name_list(VARIANTS), metavar="V[,V...]",
                    help="comma-separated variants (adam always runs), e.g. 'kfac default' for "
                         f"the step-time ratio alone; of: {', '.join(VARIANTS)}")
    output.add_out_arguments(ap, "results/kfac")
    return ap


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        out_dir = output.resolve_out(args, "kfac_speed")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    doc = {"machine": benchmarking.machine_info(), "steps_per_call": args.steps,
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "networks": {}}
    for name in args.networks:
        net, X, Y, m = problem(name)
        m = args.batch_size or m
        var, flops, conds = variants(net, X, Y, m, args.steps, args.only)
        runs = []
        for r in range(args.repeat):  # independent timings of the same compiled variants
            timing = benchmarking.time_paired(var, reference="adam", rounds=args.rounds, warmup=1)
            print(f"\n{name}: {net.sizes}, m = {m}, {args.steps} steps per call, run "
                  f"{r + 1} of {args.repeat} (times are per call; ratios to adam, paired)")
            print(timing.table())
            runs.append({"timing": timing.to_json(),
                         "ratio_to_adam": {v: timing.paired_ratio(v) for v in var}})
        print(f"{'variant':<45} {'GFLOP/step':>10} {'/ adam':>7} {'conditionals':>12}")
        for v in var:  # cost_analysis counts the scan body once (one step), both cond branches
            print(f"{v:<45} {flops[v] / 1e9:>10.4f} "
                  f"{flops[v] / flops['adam']:>7.2f} {conds[v]:>12}")
        doc["networks"][name] = {
            "sizes": net.sizes, "m": m, "runs": runs,
            "flops_per_step": flops,
            "conditionals_in_hlo": conds}
    stem = "kfac_speed" if args.batch_size is None else f"kfac_speed_m{args.batch_size}"
    path = output.write_json(f"{out_dir}/{stem}.json", doc)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
