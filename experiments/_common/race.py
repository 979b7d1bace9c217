"""Optimizers raced to a target training cost: a small grid each, one process, one table.

Used by ``experiments/autoencoder.py`` and ``experiments/classifier_kfac.py``, whose common
command line, repeats, printout and output files are :func:`main`'s. Every jaxmlp run goes
through the one-call scanned epoch (``jaxmlp.train.step.make_train_epoch``) from the same
initialisation and the same shuffle keys; after each epoch the cost of the whole training
set is recorded with the step count and the seconds of the compiled epoch calls
(compilation excluded: each configuration runs one throw-away epoch first). All runs of a
race advance together, one epoch each per round in a fresh random order, so a change of the
machine's load falls on all of them alike; the load averages are recorded around the race.

The ``"kfac-jax"`` row is kfac-jax's ``Optimizer`` (``_common.peers``; skipped, with the
reason recorded, where kfac-jax is not installed) on the same network, initialisation
(W[l] transposed into its batch-first layout), minibatches (the same shuffle keys and
:func:`jaxmlp.train.epoch_batches`) and batch size, with its adaptive learning rate,
momentum and damping. It cannot run inside the scanned epoch: ``Optimizer.step`` is a
Python method that picks one of several compiled programs per step from the Python step
count (curvature statistics on this step or not, damping adjusted on this step or not:
static arguments of its jitted ``_step``), and kfac-jax says not to jit it. So its epoch is
one compiled call that draws and gathers the epoch's minibatches (and the step keys) plus
one ``step`` call per minibatch, the last result blocked on; those seconds are counted
(its compilation excluded by a throw-away run of every program first), so its times carry
one dispatch per step that the scanned epochs do not. Its history also records
``host_seconds``: the seconds until the epoch's last ``step`` call returned, before blocking
on the result (kfac-jax's Python and the dispatches; JAX dispatches asynchronously, so this
overlaps the computation rather than adding to it).
"""

from __future__ import annotations

import functools
import math
import os
import time
from html import escape

import jax
import jax.numpy as jnp
import numpy as np

import jaxmlp
from jaxmlp import train
from jaxmlp.train import kfac

from _common import benchmarking, cli, output, peers

__all__ = ["KFAC_JAX", "OPTIMIZERS", "first_reaching", "main", "make", "race", "run",
           "summary", "write_svg"]

#: The label of kfac-jax's row (:class:`_KfacJaxRun`; grid settings are its constructor's
#: keyword arguments, e.g. ``{"initial_damping": 1e-2}``).
KFAC_JAX = "kfac-jax"

#: Optimizer labels of a race and how each is built from one grid setting (a dict).
OPTIMIZERS = ("momentum", "adam", "kfac", "kfac adaptive", KFAC_JAX)


def make(name: str, setting: dict):
    """The optax transformation of ``name`` at one grid ``setting``."""
    if name == "momentum":
        return train.make_optimizer("momentum", setting["lr"], momentum=0.9)
    if name == "adam":
        return train.make_optimizer("adam", setting["lr"])
    if name == "kfac":
        return kfac.kfac(setting["lr"], **{k: v for k, v in setting.items() if k != "lr"})
    if name == "kfac adaptive":
        return kfac.kfac(None, adaptive_lr=True, adaptive_momentum=True, adaptive_damping=True,
                         **setting)
    raise ValueError(f"name: expected one of {list(OPTIMIZERS[:-1])}, got {name!r}.")


class _Run:
    """One configuration of a race: compiled, then advanced one epoch at a time."""

    def __init__(self, net, opt, X, Y, batch_size: int, seed: int):
        self.epoch_fn = train.make_train_epoch(net, opt, batch_size)
        params0 = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=X.dtype)
        self.key = jax.random.PRNGKey(seed + 1)
        jax.block_until_ready(self.epoch_fn(params0, opt.init(params0), self.key, X, Y))  # compile
        self.net, self.X, self.Y = net, X, Y
        self.per_epoch = X.shape[1] // batch_size
        self.params, self.state = params0, opt.init(params0)
        self.seconds = 0.0
        self.hist = [{"step": 0, "seconds": 0.0, "cost": self.cost()}]

    def cost(self) -> float:
        return float(train.cost_and_metrics(self.net, self.params, self.X, self.Y,
                                            check_finite=False)["cost"])

    @property
    def done(self) -> bool:
        return not np.isfinite(self.hist[-1]["cost"])

    def epoch(self) -> None:
        self.key, k = train.split_key(self.key)
        t0 = time.perf_counter()
        self.params, self.state, _ = self.epoch_fn(self.params, self.state, k, self.X, self.Y)
        jax.block_until_ready(self.params)
        self.seconds += time.perf_counter() - t0
        self.hist.append({"step": self.hist[-1]["step"] + self.per_epoch,
                          "seconds": self.seconds, "cost": self.cost()})


#: kfac-jax's grid: its initial damping (its adaptive damping's starting point; kfac-jax
#: requires one) with :data:`KFAC_JAX_OPTIONS`, and once with kfac-jax's own default
#: schedule (statistics every step, inverses every 5).
KFAC_JAX_GRID = [{"initial_damping": d} for d in (1e-3, 1e-2, 1e-1)] + [
    {"initial_damping": 1e-3, "curvature_update_period": 1, "inverse_update_period": 5}]

#: kfac-jax's options in the race: its adaptive learning rate, momentum and damping (the
#: Levenberg-Marquardt rule every 5 steps, as jaxmlp's (K6)), statistics and inverses every
#: 20 steps (jaxmlp's K-FAC defaults), no burn-in steps (jaxmlp's K-FAC has none), no weight
#: decay; its curvature estimator and everything else at kfac-jax's defaults.
KFAC_JAX_OPTIONS = {
    "use_adaptive_learning_rate": True, "use_adaptive_momentum": True,
    "use_adaptive_damping": True, "damping_adaptation_interval": kfac.DEFAULTS["damping_every"],
    "curvature_update_period": kfac.DEFAULTS["curvature_every"],
    "inverse_update_period": kfac.DEFAULTS["inverse_every"],
    "num_burnin_steps": 0, "l2_reg": 0.0, "multi_device": False,
}


def kfac_jax_loss(kj, net):
    """kfac-jax's value function of ``net``: ``loss(params, (X, Y))`` with params
    ``[{"w": W[l].T (n[l-1], n[l]), "b": (n[l],)}]`` and batch-first X (b, n[0]), Y (b, n[L]);
    the same cost J as jaxmlp's (mean squared error 1/(2b) sum (A - Y)^2, or categorical
    cross-entropy -1/b sum Y log softmax(Z)), its output loss registered with kfac-jax."""
    hidden = {"tanh": jnp.tanh, "relu": jax.nn.relu}
    acts = tuple(net.activations)
    pairs = {("linear", "mean_squared_error"), ("softmax", "categorical_cross_entropy")}
    if any(a not in hidden for a in acts[:-1]) or (acts[-1], net.cost) not in pairs:
        raise ValueError(f"net: kfac-jax's row supports hidden {sorted(hidden)} and outputs "
                         f"{sorted(pairs)}, got activations {acts} and cost {net.cost!r}.")

    def loss(params, batch):
        x, y = batch
        for p, a in zip(params[:-1], acts):
            x = hidden[a](x @ p["w"] + p["b"])
        z = x @ params[-1]["w"] + params[-1]["b"]
        if net.cost == "mean_squared_error":
            kj.register_squared_error_loss(z, y, weight=0.5)  # weight sum (z - y)^2 / b
            return 0.5 * jnp.sum((z - y) ** 2) / x.shape[0]
        kj.register_softmax_cross_entropy_loss(z, y)
        return -jnp.sum(y * jax.nn.log_softmax(z)) / x.shape[0]

    return loss


@functools.lru_cache(maxsize=None)
def _kfac_jax_programs(net, setting: tuple, m: int, batch_size: int):
    """kfac-jax's ``Optimizer`` at one grid ``setting`` (its compiled programs are kept by the
    instance, so the races of ``--repeat`` compile once, as the scanned epochs do) and the
    jitted function drawing an epoch's minibatches, batch-first, and step keys."""
    kj, note = peers.kfac_jax()
    if kj is None:
        raise RuntimeError(f"{KFAC_JAX}: {note}")
    opt = kj.Optimizer(value_and_grad_func=jax.value_and_grad(kfac_jax_loss(kj, net)),
                       **{**KFAC_JAX_OPTIONS, **dict(setting)})
    steps = m // batch_size

    @jax.jit
    def batches(key, X, Y):  # the scanned epoch's minibatches (same key, same columns)
        idx = train.epoch_batches(key, m, batch_size)  # (steps, batch_size)
        xs, ys = X.T[idx], Y.T[idx]
        keys = jax.random.split(jax.random.fold_in(key, 1), steps)
        return tuple((xs[s], ys[s], keys[s]) for s in range(steps))

    return opt, batches


class _KfacJaxRun(_Run):
    """kfac-jax's ``Optimizer`` as a race configuration (module docstring): the same
    initialisation, minibatches and cost record as :class:`_Run`, one ``step`` call per
    minibatch."""

    def __init__(self, net, setting, X, Y, batch_size: int, seed: int):
        m = X.shape[1]
        self.per_epoch = m // batch_size
        self.opt, self.batches = _kfac_jax_programs(net, tuple(sorted(setting.items())), m,
                                                    batch_size)
        self.net, self.X, self.Y = net, X, Y
        self.key = jax.random.PRNGKey(seed + 1)
        params0 = jaxmlp.init_params(net, jax.random.PRNGKey(seed), dtype=X.dtype)
        # Compile first: every program the race's steps will call (kfac-jax compiles one per
        # (statistics step, damping step) pair), on a throw-away copy (steps donate their input).
        first = self.batches(self.key, X, Y)
        throwaway = self._theirs(params0)
        state = self.opt.init(throwaway, first[0][2], first[0][:2])
        for s in range(self._steps_to_compile()):
            x, y, k = first[s % self.per_epoch]
            throwaway, state, _ = self.opt.step(throwaway, state, k, batch=(x, y),
                                                global_step_int=s)
        jax.block_until_ready(throwaway)
        self.params = self._theirs(params0)
        self.state = self.opt.init(self.params, first[0][2], first[0][:2])
        self.steps = 0
        self.seconds = self.host_seconds = 0.0
        self.hist = [{"step": 0, "seconds": 0.0, "cost": self.cost(), "host_seconds": 0.0}]

    def _steps_to_compile(self) -> int:
        """Steps from 0 after which every (statistics, damping) pair of kfac-jax's step
        schedule has occurred (its ``_should_update_*`` rules)."""
        o = self.opt

        def pair(s):
            return o._should_update_estimate_curvature(s), o._should_update_damping(s)

        every = {pair(s) for s in range(1000)}
        seen, s = set(), 0
        while seen != every:
            seen.add(pair(s))
            s += 1
        return s

    @staticmethod
    def _theirs(params):
        return [{"w": jnp.array(p["W"].T), "b": jnp.array(p["b"])} for p in params]

    def cost(self) -> float:
        ours = [{"W": p["w"].T, "b": p["b"]} for p in self.params]
        return float(train.cost_and_metrics(self.net, ours, self.X, self.Y,
                                            check_finite=False)["cost"])

    def epoch(self) -> None:
        self.key, k = train.split_key(self.key)
        t0 = time.perf_counter()
        for x, y, ks in self.batches(k, self.X, self.Y):
            self.params, self.state, _ = self.opt.step(self.params, self.state, ks, batch=(x, y),
                                                       global_step_int=self.steps)
            self.steps += 1
        t1 = time.perf_counter()
        jax.block_until_ready(self.params)
        self.seconds += time.perf_counter() - t0
        self.host_seconds += t1 - t0
        self.hist.append({"step": self.steps, "seconds": self.seconds, "cost": self.cost(),
                          "host_seconds": self.host_seconds})


def _make_run(name, setting, net, X, Y, batch_size, seed):
    if name == KFAC_JAX:
        return _KfacJaxRun(net, setting, X, Y, batch_size, seed)
    return _Run(net, make(name, setting), X, Y, batch_size, seed)


def run(net, opt, X, Y, steps: int, batch_size: int, seed: int) -> list:
    """History of one run: ``[{"step", "seconds", "cost"}, ...]``, one entry per epoch."""
    r = _Run(net, opt, X, Y, batch_size, seed)
    for _ in range(int(math.ceil(steps / r.per_epoch))):
        r.epoch()
        if r.done:
            break
    return r.hist


def first_reaching(hist, target):
    """The first history entry with cost <= target (None if never)."""
    return next((h for h in hist if h["cost"] <= target), None)


def race(net, X, Y, grids: dict, steps: int, batch_size: int, seed: int) -> dict:
    """Every setting of every optimizer's grid; the best (lowest final cost) kept per name.

    The runs advance together, one epoch each per round in a fresh random order (the
    benchmarks' interleaving, ``_common.benchmarking``): a change of the machine's load
    during the race falls on every optimizer alike, so their seconds compare.

    Returns ``{name: {"setting", "final_cost", "history", "grid": [{setting, final_cost,
    seconds, load}, ...]}}``."""
    runs = [(name, setting, _make_run(name, setting, net, X, Y, batch_size, seed))
            for name, settings in grids.items() for setting in settings]
    load0 = list(os.getloadavg())
    epochs = int(math.ceil(steps / (X.shape[1] // batch_size)))
    order = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in order.permutation(len(runs)):
            if not runs[i][2].done:
                runs[i][2].epoch()
    load1 = list(os.getloadavg())
    out = {}
    for name, settings in grids.items():
        best, tried = None, []
        for n, setting, r in runs:
            if n != name:
                continue
            hist = r.hist
            final = hist[-1]["cost"]
            tried.append({"setting": setting, "final_cost": final,
                          "seconds": hist[-1]["seconds"], "steps": hist[-1]["step"],
                          "load_before": load0, "load_after": load1, "history": hist})
            print(f"{name:>14} {setting} final train cost {final:.5f} after {hist[-1]['step']} "
                  f"steps, {hist[-1]['seconds']:.2f} s", flush=True)
            if np.isfinite(final) and (best is None or final < best["final_cost"]):
                best = {"setting": setting, "final_cost": final, "history": hist}
        if best is not None:
            out[name] = {**best, "grid": tried}
    return out


def summary(runs: dict, reference: str = "adam") -> dict:
    """Steps and seconds each best run needs to reach the reference's final cost."""
    ref = runs[reference]
    target = ref["final_cost"]
    ref_steps, ref_seconds = ref["history"][-1]["step"], ref["history"][-1]["seconds"]
    out = {"target_cost": target, "reference": reference}
    for name, r in runs.items():
        hit = first_reaching(r["history"], target)
        out[name] = {
            "setting": r["setting"], "final_cost": r["final_cost"],
            "steps_to_target": None if hit is None else hit["step"],
            "seconds_to_target": None if hit is None else hit["seconds"],
            "fraction_of_reference_steps": None if hit is None else hit["step"] / ref_steps,
            "fraction_of_reference_seconds": None if hit is None else hit["seconds"] / ref_seconds,
            "seconds_per_step": r["history"][-1]["seconds"] / max(r["history"][-1]["step"], 1),
        }
    return out


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _panel(x0, series, xkey, xlabel, target, W=420, H=280, top=50):
    pts = [(h[xkey], h["cost"]) for _, hist in series for h in hist
           if h["cost"] > 0 and math.isfinite(h["cost"])]
    xs = [p[0] for p in pts]
    ys = [math.log10(p[1]) for p in pts]
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ylo, yhi = min(ys + [math.log10(target)]), max(ys)
    pad = 0.05 * (yhi - ylo or 1)
    ylo, yhi = ylo - pad, yhi + pad
    px = lambda x: x0 + (x - xlo) / (xhi - xlo) * W  # noqa: E731
    py = lambda v: top + H - (math.log10(v) - ylo) / (yhi - ylo) * H  # noqa: E731
    out = [f'<rect x="{x0}" y="{top}" width="{W}" height="{H}" fill="none" stroke="#333"/>']
    for k in range(math.ceil(ylo), math.floor(yhi) + 1):
        y = py(10.0 ** k)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + W}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">1e{k}</text>')
    for v in (xlo, (xlo + xhi) / 2, xhi):
        out.append(f'<text x="{px(v):.1f}" y="{top + H + 16}" text-anchor="middle">{v:.3g}</text>')
    yt = py(target)
    out.append(f'<line x1="{x0}" y1="{yt:.1f}" x2="{x0 + W}" y2="{yt:.1f}" stroke="#888" '
               'stroke-dasharray="4,3"/>')
    for i, (label, hist) in enumerate(series):
        c = _COLOURS[i % len(_COLOURS)]
        line = " ".join(f"{px(h[xkey]):.1f},{py(h['cost']):.1f}" for h in hist
                        if h["cost"] > 0 and math.isfinite(h["cost"]))
        out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        ly = top + 16 + 16 * i
        out.append(f'<line x1="{x0 + W - 200}" y1="{ly - 4}" x2="{x0 + W - 182}" y2="{ly - 4}" '
                   f'stroke="{c}" stroke-width="2"/><text x="{x0 + W - 178}" y="{ly}">'
                   f'{escape(label)}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{top + H + 36}" text-anchor="middle">{xlabel}</text>')
    return out


def write_svg(path: str, runs: dict, target: float, title: str) -> None:
    """Training cost (log) against steps and against seconds, one line per optimizer's best
    run, the target cost dashed."""
    series = [(f"{name}", r["history"]) for name, r in runs.items()]
    body = _panel(70, series, "step", "steps", target)
    body += _panel(570, series, "seconds", "seconds (compiled epochs)", target)
    W, H = 1030, 380
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">'
           f'<rect width="{W}" height="{H}" fill="white"/>'
           f'<text x="{W / 2}" y="28" text-anchor="middle" font-size="15">{escape(title)}</text>'
           f'<text transform="translate(20,190) rotate(-90)" text-anchor="middle">training cost J'
           f'</text>' + "".join(body) + "</svg>\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(svg)


def main(argv, *, doc: str, name: str, figure: str, steps: int, batch_size: int, grids: dict,
         problem) -> int:
    """The command line of a race script (``autoencoder.py``, ``classifier_kfac.py``).

    ``doc``: the script's docstring (its first line is the description); ``name``: its
    ``results/<name>/`` folder; ``figure``: the SVG's file name; ``steps``, ``batch_size``:
    the defaults of ``--steps``, ``--batch-size``; ``grids``: the jaxmlp optimizers' grids
    (:func:`make`), to which kfac-jax's row (:data:`KFAC_JAX_GRID`) is added;
    ``problem(seed) -> (net, X, Y, description, title)``: the network, the training data
    (n[0], m) and (n[L], m), the data's description for the JSON and the figure's title.

    Runs ``--repeat`` races one after the other (the same trajectories, new timings; the
    first one's histories are kept), prints each race's summary and writes ``results.json``
    and the figure to ``--out`` (``--results``: ``results/<name>/``). kfac-jax's row is left
    out, with the reason printed and recorded under ``peers``, when kfac-jax cannot be used.
    """
    grids = {**grids, KFAC_JAX: KFAC_JAX_GRID}
    prog = f"{name if name in ('autoencoder', 'classifier_kfac') else 'race'}.py"
    try:
        ap = cli.Parser(prog=prog, description=doc.splitlines()[0])
        ap.add_argument("--steps", type=cli.positive_int, default=steps,
                        help="training steps of every optimizer in a race, rounded up to whole "
                        "epochs (results.json: steps as given, steps_run as trained)")
        ap.add_argument("--batch-size", type=cli.positive_int, default=batch_size,
                        help="examples per minibatch (the same minibatches for every optimizer)")
        ap.add_argument("--only", default=",".join(grids), help="optimizers to run, a comma-"
                        f"separated list of {', '.join(grids)} that includes adam")
        ap.add_argument("--seed", type=cli.nonnegative_int, default=0,
                        help="seed of the initialisation, the data split and the minibatches")
        ap.add_argument("--repeat", type=cli.positive_int, default=3, help="races run one after "
                        "the other (the same trajectories, new timings); the first one's "
                        "histories are kept")
        output.add_out_arguments(ap, f"results/{name}")
        args = ap.parse_args(argv)
        only = args.only.split(",")
        if "adam" not in only or not set(only) <= set(grids):
            raise cli.UsageError(f"--only: expected a comma-separated list of "
                                 f"{', '.join(grids)} that includes adam (the target is Adam's "
                                 f"final cost), got {args.only!r}")
        out_dir = output.resolve_out(args, name)
    except cli.UsageError as e:
        return cli.report_usage(prog, e)
    net, X, Y, data, title = problem(args.seed)
    per_epoch = X.shape[1] // args.batch_size  # the race trains whole epochs
    t0 = time.perf_counter()
    grids = {k: v for k, v in grids.items() if k in only}
    peer = {}
    if KFAC_JAX in grids:
        kj, note = peers.kfac_jax()
        peer = {KFAC_JAX: {"version": getattr(kj, "__version__", None), "note": note,
                           "options": KFAC_JAX_OPTIONS, "run": kj is not None}}
        if kj is None:
            print(f"{KFAC_JAX} left out: {note}", flush=True)
            del grids[KFAC_JAX]
    repeats = []
    for r in range(args.repeat):
        runs_r = race(net, X, Y, grids, args.steps, args.batch_size, args.seed)
        repeats.append(summary(runs_r))
        if r == 0:
            runs = runs_r
        print(f"race {r + 1} of {args.repeat} done", flush=True)
    for r, summ_r in enumerate(repeats):
        print(f"\nrace {r + 1}: target: Adam's final training cost {summ_r['target_cost']:.5f}")
        for label, s in summ_r.items():
            if isinstance(s, dict):
                reach = ("never" if s["steps_to_target"] is None else
                         f"{s['steps_to_target']} steps ({s['fraction_of_reference_steps']:.3f} "
                         f"of Adam's), {s['seconds_to_target']:.2f} s "
                         f"({s['fraction_of_reference_seconds']:.2f} of Adam's)")
                print(f"{label:>14} {s['setting']} final {s['final_cost']:.5g}, "
                      f"{1e3 * s['seconds_per_step']:.2f} ms/step; reaches the target: {reach}")
    summ = repeats[0]
    output.write_json(os.path.join(out_dir, "results.json"), {
        "network": {"sizes": net.sizes, "activations": net.activations, "cost": net.cost},
        "data": data, "steps": args.steps, "batch_size": args.batch_size, "grids": grids,
        "steps_run": per_epoch * int(math.ceil(args.steps / per_epoch)),
        "peers": peer, "summary": summ, "repeats": repeats, "runs": runs,
        "machine": benchmarking.machine_info(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "seconds_total": time.perf_counter() - t0})
    write_svg(os.path.join(out_dir, figure), runs, summ["target_cost"],
              f"{title}, m = {args.batch_size}")
    print(f"wrote {out_dir}")
    return 0
