"""jaxmlp.sklearn.MLPClassifier against scikit-learn's MLPClassifier: accuracy and fit time.

    python experiments/sklearn_compare.py              # a new runs/sklearn_compare-<time>/
    python experiments/sklearn_compare.py --results    # rewrites results/sklearn_compare/
    python experiments/sklearn_compare.py --profile 3 --sets iris breast_cancer --results
                                     # where a new process's first fit spends its time
    python experiments/sklearn_compare.py --grid 3 --results   # a whole GridSearchCV, each
                                     # estimator in a new process: compilation included

Both estimators run with scikit-learn's defaults (Adam, learning rate 1e-3, alpha 1e-4,
batch_size "auto" = min(200, n), shuffled every epoch, at most ``--max-iter`` epochs, stop
when the training loss has not improved by tol = 1e-4 for 10 epochs), the same hidden
sizes and the same ``random_state`` (jaxmlp draws its initial weights as scikit-learn does,
so both start from the same weights) on every bundled classification set: jaxmlp's
``digits``, ``breast_cancer`` and ``multilabel`` (:func:`jaxmlp.data.datasets.load`) and
scikit-learn's ``iris`` and ``wine``, split 80/20 stratified and standardised the same way.
Test accuracy (subset accuracy for multilabel) for ``--seeds`` seeds (split and
initialisation); mean and spread (population std) over the seeds.

Fit time, in one process, by the repository's paired protocol
(``_common.benchmarking.time_paired``: warm-up, interleaved rounds, paired ratios), on the
seed-0 split of each set, three variants:

* ``scikit-learn``: its ``fit``;
* ``jaxmlp``: our ``fit`` with its compiled program reused (compile excluded: what every
  later fit of the same shapes in a process costs, e.g. in a grid search);
* ``jaxmlp_first``: our ``fit`` after ``jax.clear_caches()``, so each call traces and
  compiles again (compile included: the first fit of a setting in a new process);
* ``jaxmlp_xla_defaults`` and ``jaxmlp_first_xla_defaults``: the same two with the
  training program compiled with XLA's default options instead of the estimator's
  (``jaxmlp.sklearn._COMPILER_OPTIONS``, set aside for these calls): what those options
  save in compilation and cost in run time, paired (``--no-xla-defaults`` leaves them out;
  with them, each compile-excluded variant has one untimed call right before its sample,
  as a cold variant's ``jax.clear_caches()`` drops the other options' program).

JAX's persistent compilation cache is switched off in this process (``scripts/run.sh``
sets it for scripts), so ``jaxmlp_first`` is a cold compile. The first fit of each set is
also run with ``jax_log_compiles`` to list what it compiles. With the cache: ``--processes``
new Python processes per set, after one that fills an empty temporary cache, each time
scikit-learn's fit and then jaxmlp's first fit (its program read from the cache), paired.

Import time, not hidden in either fit: ``--import-rounds`` rounds of new Python processes,
each round one process per statement of :data:`IMPORTS` (``import jaxmlp.sklearn``, which
imports jax, optax and jaxmlp.train, everything its fit needs; scikit-learn's ``from
sklearn.neural_network import MLPClassifier``; ``import jax`` alone, for scale), in an order
that alternates between rounds; each process times its one statement
(``time.perf_counter``); medians [IQR] over the rounds and the paired ratios, in
``compare.json``'s ``import_s``.

``--grid R`` instead times a whole grid search, the way a user tunes the estimator:
``GridSearchCV`` over :data:`GRID` (learning rate x alpha, 9 points) with 5-fold
cross-validation and the refit, 46 fits, on the seed-0 training split of each set, each
estimator in a new Python process with JAX's persistent cache off (every compilation
included, the imports not), R rounds with the order alternating; paired ratios, the number
of programs jaxmlp compiled, and both searches' best point and test accuracy; writes
``grid_search.json``.

``--profile N`` instead cuts the first fit of N new processes per set into phases (imports
during the fit, scikit-learn's input checks, JAX's tracing, lowering and compilation or the
persistent cache's read, the run, Python's garbage collection), cold and with the cache
filled, and writes ``first_fit_profile.json``.

scikit-learn runs with one BLAS thread (``threadpoolctl``; ``--sklearn-threads 0`` leaves
OpenBLAS's default): on the loaded 2-core machine its default two threads made its fits
4-10x slower, and the comparison is with its best setting.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Collection

import numpy as np

from _common import benchmarking, cli
from _common.output import add_out_arguments, resolve_out, write_json

SETS = ("digits", "breast_cancer", "multilabel", "iris", "wine")
#: The import statements timed in new processes (:func:`import_times`).
IMPORTS = {"jaxmlp.sklearn": "import jaxmlp.sklearn",
           "sklearn.neural_network": "from sklearn.neural_network import MLPClassifier",
           "jax": "import jax"}

#: The grid of ``--grid``: scikit-learn's two usual knobs of MLPClassifier.
GRID = {"learning_rate_init": [1e-3, 3e-3, 1e-2], "alpha": [1e-4, 1e-3, 1e-2]}
GRID_FOLDS = 5


def split(name: str, seed: int):
    """(X_train, X_test, y_train, y_test), batch-first; y a label vector, or a 0/1 indicator
    matrix for multilabel."""
    from jaxmlp.data import datasets

    if name in datasets.DATASETS:
        d = datasets.load(name, seed=seed, dtype=np.float64)
        if d.cost == "categorical_cross_entropy":
            return d.X_train.T, d.X_test.T, d.Y_train.argmax(0), d.Y_test.argmax(0)
        if d.Y_train.shape[0] == 1:
            return (d.X_train.T, d.X_test.T, d.Y_train[0].astype(int),
                    d.Y_test[0].astype(int))
        return d.X_train.T, d.X_test.T, d.Y_train.T.astype(int), d.Y_test.T.astype(int)
    from sklearn import datasets as skd

    X, y = getattr(skd, f"load_{name}")(return_X_y=True)
    train, test = datasets.split_indices(y, len(y), 0.2, seed)
    Xtr, Xte, _, _ = datasets.standardise(X[train], X[test])
    return Xtr, Xte, y[train], y[test]


def blas_threads(n: int):
    """A context with scikit-learn's BLAS limited to n threads (0: unchanged)."""
    if not n:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n)


def child(name: str, hidden: tuple, max_iter: int, threads: int) -> None:
    """One new process (``--child``): scikit-learn's fit, then jaxmlp's first fit of the
    set's seed-0 split; prints their seconds as one JSON line."""
    Xtr, _, ytr, _ = split(name, 0)
    models = estimators(hidden, max_iter, 0)
    with blas_threads(threads):
        t0 = time.perf_counter()
        models["scikit-learn"].fit(Xtr, ytr)
        t1 = time.perf_counter()
    models["jaxmlp"].fit(Xtr, ytr)
    t2 = time.perf_counter()
    print(json.dumps({"scikit-learn": t1 - t0, "jaxmlp_first": t2 - t1}))


def grid_child(name: str, who: str, hidden: tuple, max_iter: int, threads: int) -> None:
    """One new process (``--grid-child``): ``GridSearchCV`` of one estimator over
    :data:`GRID` on the set's seed-0 training split; prints its seconds, the programs JAX
    compiled, the best point and the test accuracy of the refitted model as one JSON line."""
    import jax
    from sklearn.model_selection import GridSearchCV

    jax.config.update("jax_enable_compilation_cache", False)
    Xtr, Xte, ytr, yte = split(name, 0)
    search = GridSearchCV(estimators(hidden, max_iter, 0)[who], GRID, cv=GRID_FOLDS)
    log = CompileLog()
    logger = logging.getLogger("jax")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(log)
    with jax.log_compiles(True), blas_threads(threads if who == "scikit-learn" else 0):
        t0 = time.perf_counter()
        search.fit(Xtr, ytr)
        seconds = time.perf_counter() - t0
    fits = len(search.cv_results_["params"]) * GRID_FOLDS + 1
    print(json.dumps({"seconds": seconds, "fits": fits, "best_params": search.best_params_,
                      "test_accuracy": float(search.score(Xte, yte)),
                      "compiled": [q["program"] for q in log.programs],
                      "compile_s": sum(q["seconds"] for q in log.programs)}))


def grid_search(name: str, args) -> dict:
    """``args.grid`` rounds of :func:`grid_child` for both estimators, the order alternating;
    seconds per search and the paired ratio jaxmlp / scikit-learn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    runs = {"jaxmlp": [], "scikit-learn": []}
    for r in range(args.grid):
        for who in (("scikit-learn", "jaxmlp") if r % 2 == 0 else ("jaxmlp", "scikit-learn")):
            cmd = [sys.executable, os.path.abspath(__file__), "--grid-child", name, who,
                   "--hidden", *map(str, args.hidden), "--max-iter", str(args.max_iter),
                   "--sklearn-threads", str(args.sklearn_threads)]
            done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs[who].append(json.loads(done.stdout.strip().splitlines()[-1]))
    sec = {who: [run["seconds"] for run in v] for who, v in runs.items()}
    fits = runs["jaxmlp"][0]["fits"]
    return {"runs": runs, "fits": fits,
            "seconds": {who: benchmarking.spread(v) for who, v in sec.items()},
            "per_fit_s": {who: benchmarking.spread(np.asarray(v) / fits)
                          for who, v in sec.items()},
            "ratio": benchmarking.spread(np.asarray(sec["jaxmlp"])
                                         / np.asarray(sec["scikit-learn"]))}


def run_grid(args, out: str) -> int:
    """``--grid R``: :func:`grid_search` of each of ``--sets``, a table, grid_search.json."""
    info = benchmarking.machine_info()
    load_before = benchmarking.load_average()
    sets = {}
    for name in args.sets:
        sets[name] = g = grid_search(name, args)
        j, k = g["runs"]["jaxmlp"][0], g["runs"]["scikit-learn"][0]
        print(f"{name:14s} {g['fits']} fits: scikit-learn {g['seconds']['scikit-learn']['median']:.2f} s, "
              f"jaxmlp {g['seconds']['jaxmlp']['median']:.2f} s, paired ratio "
              f"{g['ratio']['median']:.3f} [{g['ratio']['q25']:.3f}, {g['ratio']['q75']:.3f}]; "
              f"jaxmlp compiled {len(j['compiled'])} programs ({j['compile_s']:.2f} s); best "
              f"{j['best_params']} test {j['test_accuracy']:.4f}, scikit-learn's "
              f"{k['best_params']} test {k['test_accuracy']:.4f}", flush=True)
    print(f"GridSearchCV over {GRID}, {GRID_FOLDS}-fold, refit; MLPClassifier{tuple(args.hidden)}, "
          f"max_iter {args.max_iter}; each search in a new process, persistent cache off, "
          f"{args.grid} rounds; {benchmarking.describe(info)}")
    path = write_json(f"{out}/grid_search.json", {
        "machine": info, "load_before": load_before, "load_after": benchmarking.load_average(),
        "hidden": list(args.hidden), "max_iter": args.max_iter, "grid": GRID,
        "folds": GRID_FOLDS, "rounds": args.grid,
        "sklearn_blas_threads": args.sklearn_threads or "default", "sets": sets})
    print(f"wrote {path}")
    return 0


def import_seconds(stderr: str, inside: Collection[str] = ()) -> tuple:
    """(seconds, modules) of the imports after the line ``--fit--`` of a child's stderr
    under ``python -X importtime``: the cumulative time of each outermost import, less those
    in ``inside`` (imported by JAX while it traced, lowered or compiled: in those phases)."""
    seconds, modules = 0.0, 0
    for line in stderr.split("--fit--", 1)[-1].splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m:
            modules += 1
            if not m.group(2) and m.group(3) not in inside:  # outermost: its imports inside
                seconds += int(m.group(1)) * 1e-6
    return seconds, modules


def profile_child(name: str, hidden: tuple, max_iter: int, freeze: bool = False) -> None:
    """One new process (``--profile-child``): jaxmlp's first fit of the set's seed-0 split,
    its wall time cut into phases, printed as one JSON line. The phases: modules imported
    during the fit (``-X importtime``, read by :func:`profile`; those JAX imports while it
    traces or lowers are in those phases); scikit-learn's input validation
    (``validate_data`` and the targets' ``LabelBinarizer``); JAX's tracing, lowering (jaxpr
    to MLIR) and XLA compilation, or the read from the persistent cache
    (``jax_log_compiles``' own timings); the compiled program's run (its calls, blocked on,
    less the three before); Python's garbage collection (``gc.callbacks``; it falls inside
    the other phases); the rest. ``freeze``:
    ``gc.freeze()`` right before the fit (the objects of every import so far are never
    traversed again by the collector)."""
    import gc

    import jax

    import jaxmlp.sklearn as sk

    Xtr, _, ytr, _ = split(name, 0)
    est = estimators(hidden, max_iter, 0)["jaxmlp"]
    phases = {"imports": 0.0, "validation": 0.0, "tracing": 0.0, "lowering": 0.0,
              "compile_or_cache_read": 0.0, "run": 0.0}
    calls, cache_hits, gc_s, gc_start, inside = [0.0], [], [0.0], [0.0], set()

    def on_gc(phase, info):
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_start[0]

    class Log(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            for key, pattern in (("tracing", r"Finished tracing \+? ?(?:transforming )?\S+ for "
                                  r"\S+ in ([0-9.eE+-]+) sec"),
                                 ("lowering", r"Finished jaxpr to MLIR module conversion \S+ in "
                                  r"([0-9.eE+-]+) sec"),
                                 ("compile_or_cache_read", r"Finished XLA compilation of \S+ in "
                                  r"([0-9.eE+-]+) sec")):
                m = re.match(pattern, msg)
                if m:
                    phases[key] += float(m.group(1))
            if msg.startswith("Persistent compilation cache hit"):
                cache_hits.append(msg.split("'")[1])

    def timed(f, key):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                phases[key] += time.perf_counter() - t0
        return wrapper

    program = sk._fit_program

    def fit_program(*a, **k):
        run = program(*a, **k)

        def call(*args):
            before = set(sys.modules)
            t0 = time.perf_counter()
            out = jax.block_until_ready(run(*args))
            calls[0] += time.perf_counter() - t0
            inside.update(set(sys.modules) - before)
            return out
        return call

    sk.validate_data = timed(sk.validate_data, "validation")
    type(est)._targets = timed(type(est)._targets, "validation")
    sk._fit_program = fit_program
    logger = logging.getLogger("jax")
    logger.addHandler(Log(logging.DEBUG))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if freeze:  # Python's own remedy: what exists now is never traversed again
        gc.freeze()
    print("--fit--", file=sys.stderr, flush=True)
    gc.callbacks.append(on_gc)
    with jax.log_compiles(True):
        t0 = time.perf_counter()
        est.fit(Xtr, ytr)
        wall = time.perf_counter() - t0
    gc.callbacks.remove(on_gc)
    print("--done--", file=sys.stderr, flush=True)
    phases["run"] = calls[0] - phases["tracing"] - phases["lowering"] - phases[
        "compile_or_cache_read"]
    phases["other"] = wall - sum(phases.values())  # imports are filled in by profile()
    print(json.dumps({"wall_s": wall, "phases": phases, "gc_s": gc_s[0],
                      "cache_hits": cache_hits, "n_iter": est.n_iter_,
                      "imported_by_jax": sorted(inside)}))


def profile(name: str, args, count: int) -> dict:
    """``count`` new processes with JAX's persistent cache off (cold), then ``count`` with it
    filled by one more process before them (cached): :func:`profile_child`'s phases, and
    those of the process of median wall time in each mode."""
    out = {}
    for mode in ("cold", "cached"):
        runs = []
        with tempfile.TemporaryDirectory() as cache:
            env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
            if mode == "cached":
                env.update(JAX_COMPILATION_CACHE_DIR=cache,
                           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
            cmd = [sys.executable, "-X", "importtime", os.path.abspath(__file__),
                   "--profile-child", name, *(["--gc-freeze"] if args.gc_freeze else []),
                   "--hidden", *map(str, args.hidden), "--max-iter", str(args.max_iter)]
            for i in range(count + (mode == "cached")):
                done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                run = json.loads(done.stdout.strip().splitlines()[-1])
                seconds, run["imported_modules"] = import_seconds(
                    done.stderr.split("--done--")[0], set(run.pop("imported_by_jax")))
                run["phases"]["imports"] = seconds
                run["phases"]["other"] -= seconds
                runs.append(run)
        if mode == "cached":
            runs = runs[1:]  # the first filled the cache
            assert all(r["cache_hits"] for r in runs), "no persistent cache hit"
        # the process of median wall time, whose phases add up to it
        mid = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
        out[mode] = {"runs": runs, "median_run": runs.index(mid), "wall_s": mid["wall_s"],
                     "gc_s": mid["gc_s"], "phases": mid["phases"]}
    return out


def new_processes(name: str, args, count: int) -> dict:
    """``count`` + 1 processes sharing a new persistent compilation cache: the first fills
    it; the others' paired (scikit-learn, jaxmlp first fit) seconds and ratios."""
    runs = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
        for _ in range(count + 1):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
                   "--hidden", *map(str, args.hidden), "--max-iter", str(args.max_iter),
                   "--sklearn-threads", str(args.sklearn_threads)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    read = runs[1:]
    ratios = [r["jaxmlp_first"] / r["scikit-learn"] for r in read]
    return {"filling": runs[0], "reading": read, "ratio": benchmarking.spread(ratios),
            "jaxmlp_first_s": benchmarking.spread([r["jaxmlp_first"] for r in read]),
            "scikit-learn_s": benchmarking.spread([r["scikit-learn"] for r in read])}


def import_times(rounds: int) -> dict:
    """Seconds of each statement of :data:`IMPORTS`, each in its own new process, ``rounds``
    rounds (the order reversed every other round); medians [IQR], and each statement's
    paired ratio to scikit-learn's import in the same round."""
    names = list(IMPORTS)
    seconds = {name: [] for name in names}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            code = (f"import time; t0 = time.perf_counter(); {IMPORTS[name]}; "
                    "print(time.perf_counter() - t0)")
            done = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                  capture_output=True, text=True)
            seconds[name].append(float(done.stdout.strip().splitlines()[-1]))
    ref = np.asarray(seconds["sklearn.neural_network"])
    return {"statements": dict(IMPORTS), "rounds": rounds, "samples": seconds,
            "seconds": {name: benchmarking.spread(v) for name, v in seconds.items()},
            "ratio_to_sklearn": {name: benchmarking.spread(np.asarray(v) / ref)
                                 for name, v in seconds.items()
                                 if name != "sklearn.neural_network"}}


def estimators(hidden: tuple, max_iter: int, seed: int) -> dict:
    from sklearn.neural_network import MLPClassifier as SkMLP

    from jaxmlp.sklearn import MLPClassifier

    return {"jaxmlp": MLPClassifier(hidden, max_iter=max_iter, random_state=seed),
            "scikit-learn": SkMLP(hidden, max_iter=max_iter, random_state=seed)}


class CompileLog(logging.Handler):
    """Collects JAX's "Finished XLA compilation of jit(NAME) in S sec" lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.programs: list = []

    def emit(self, record):
        m = re.match(r"Finished XLA compilation of (\S+) in ([0-9.eE+-]+) sec",
                     record.getMessage())
        if m:
            self.programs.append({"program": m.group(1), "seconds": float(m.group(2))})


def first_fit_compiles(est, X, y) -> dict:
    """The first fit of ``est`` with ``jax_log_compiles``: wall time and what it compiled."""
    import jax

    log = CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            t0 = time.perf_counter()
            est.fit(X, y)
            wall = time.perf_counter() - t0
    finally:
        logger.removeHandler(log)
    return {"wall_s": wall, "programs": log.programs,
            "compile_s": sum(p["seconds"] for p in log.programs)}


@contextlib.contextmanager
def xla_defaults():
    """jaxmlp's fits inside compile the training program with XLA's default options (the
    estimator's own XLA options set aside; a separate compiled program, cached apart)."""
    import jaxmlp.sklearn as sk

    saved = sk._COMPILER_OPTIONS
    sk._COMPILER_OPTIONS = {}
    try:
        yield
    finally:
        sk._COMPILER_OPTIONS = saved


def clear_compiled() -> None:
    """Forget every compiled program of this process: the next call of any jitted function
    traces and compiles again (from scratch unless the persistent cache is on)."""
    import jax

    jax.clear_caches()


PROG = "sklearn_compare.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, metavar="SET",
                   help=f"data sets to compare on, of {', '.join(SETS)}")
    p.add_argument("--hidden", type=cli.positive_int, nargs="+", default=[100], metavar="N",
                   help="hidden layer sizes (each >= 1)")
    p.add_argument("--max-iter", type=cli.positive_int, default=200,
                   help="epochs at most (max_iter, >= 1)")
    p.add_argument("--seeds", type=cli.positive_int, default=5,
                   help="splits and initialisations per set (>= 1)")
    p.add_argument("--rounds", type=cli.positive_int, default=5,
                   help="paired timing rounds per set (>= 1)")
    p.add_argument("--processes", type=cli.nonnegative_int, default=3,
                   help="new processes per set reading a filled persistent cache (0: none)")
    p.add_argument("--sklearn-threads", type=cli.nonnegative_int, default=1,
                   help="BLAS threads of scikit-learn's fits (0: OpenBLAS's default)")
    p.add_argument("--import-rounds", type=cli.nonnegative_int, default=7,
                   help="rounds of new processes timing each import statement (0: none)")
    p.add_argument("--no-xla-defaults", action="store_true",
                   help="leave out the variants with XLA's default compile options")
    p.add_argument("--profile", type=cli.nonnegative_int, default=0, metavar="N",
                   help="only profile the first fit: N new processes per set, cold and with a "
                        "filled persistent cache, its wall time cut into phases; writes "
                        "first_fit_profile.json (first_fit_profile_gc_freeze.json with "
                        "--gc-freeze) instead of the comparison (0: the comparison)")
    p.add_argument("--gc-freeze", action="store_true",
                   help="with --profile: gc.freeze() in each process right before the fit")
    p.add_argument("--grid", type=cli.nonnegative_int, default=0, metavar="R",
                   help="only time GridSearchCV over GRID (5-fold, refit), each estimator in "
                        "a new process, R rounds; writes grid_search.json instead of the "
                        "comparison (0: the comparison)")
    p.add_argument("--grid-child", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile-child", default=None, help=argparse.SUPPRESS)
    add_out_arguments(p, "results/sklearn_compare")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not (args.child or args.profile_child or args.grid_child):
            out = resolve_out(args, "sklearn_compare")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)
    hidden = tuple(args.hidden)

    import jax
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    if args.child:
        child(args.child, hidden, args.max_iter, args.sklearn_threads)
        return 0
    if args.profile_child:
        profile_child(args.profile_child, hidden, args.max_iter, args.gc_freeze)
        return 0
    if args.grid_child:
        grid_child(*args.grid_child, hidden, args.max_iter, args.sklearn_threads)
        return 0
    if args.profile:
        return run_profile(args, out)
    if args.grid:
        return run_grid(args, out)
    jax.config.update("jax_enable_compilation_cache", False)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("jax").setLevel(logging.DEBUG)
    logging.getLogger("jax").propagate = False  # the compile lines go to CompileLog only

    imports = None
    if args.import_rounds:
        load = benchmarking.load_average()
        imports = import_times(args.import_rounds)
        imports["load_before"], imports["load_after"] = load, benchmarking.load_average()
        print(f"import in a new process, seconds, median [IQR] of {args.import_rounds} rounds:")
        for name, v in imports["seconds"].items():
            ratio = imports["ratio_to_sklearn"].get(name)
            print(f"  {IMPORTS[name]:52s} {v['median']:6.3f} [{v['q25']:.3f}, {v['q75']:.3f}]"
                  + (f"  / scikit-learn's, paired: {ratio['median']:.2f}" if ratio else ""),
                  flush=True)

    sets = {}
    for name in args.sets:
        rows = []
        for seed in range(args.seeds):
            Xtr, Xte, ytr, yte = split(name, seed)
            row = {"seed": seed, "n_train": len(Xtr), "n_test": len(Xte)}
            for who, est in estimators(hidden, args.max_iter, seed).items():
                if who == "jaxmlp" and seed == 0:
                    clear_compiled()
                    row["first_fit"] = first_fit_compiles(est, Xtr, ytr)
                else:
                    with blas_threads(args.sklearn_threads):
                        est.fit(Xtr, ytr)
                row[f"{who}_accuracy"] = float(est.score(Xte, yte))
                row[f"{who}_n_iter"] = int(est.n_iter_)
            rows.append(row)
            print(f"{name:14s} seed {seed}: accuracy jaxmlp {row['jaxmlp_accuracy']:.4f} "
                  f"({row['jaxmlp_n_iter']} epochs), scikit-learn "
                  f"{row['scikit-learn_accuracy']:.4f} ({row['scikit-learn_n_iter']} epochs)",
                  flush=True)
        first = rows[0]["first_fit"]
        print(f"{name:14s} first fit {first['wall_s']:.2f} s compiled "
              + ", ".join(f"{q['program']} {q['seconds']:.2f} s" for q in first["programs"]),
              flush=True)
        Xtr, _, ytr, _ = split(name, 0)
        models = estimators(hidden, args.max_iter, 0)

        def cold_fit(est=models["jaxmlp"]):
            clear_compiled()
            est.fit(Xtr, ytr)

        def sklearn_fit(est=models["scikit-learn"]):
            with blas_threads(args.sklearn_threads):
                est.fit(Xtr, ytr)

        def defaults_fit(est=models["jaxmlp"]):
            with xla_defaults():
                est.fit(Xtr, ytr)

        def defaults_cold_fit():
            with xla_defaults():
                cold_fit()

        variants = {"scikit-learn": sklearn_fit,
                    "jaxmlp": lambda: models["jaxmlp"].fit(Xtr, ytr),
                    "jaxmlp_first": cold_fit}
        if not args.no_xla_defaults:
            variants.update(jaxmlp_xla_defaults=defaults_fit,
                            jaxmlp_first_xla_defaults=defaults_cold_fit)
        # jax.clear_caches() in a cold variant also drops the other options' program: each
        # compile-excluded variant gets one untimed call right before its sample.
        timing = benchmarking.time_paired(
            variants, reference="scikit-learn", rounds=args.rounds, inner=1, warmup=1,
            handover=[] if args.no_xla_defaults else ["jaxmlp", "jaxmlp_xla_defaults"])
        summary = {
            who: {"mean": float(np.mean([r[f"{who}_accuracy"] for r in rows])),
                  "std": float(np.std([r[f"{who}_accuracy"] for r in rows])),
                  "epochs_mean": float(np.mean([r[f"{who}_n_iter"] for r in rows]))}
            for who in ("jaxmlp", "scikit-learn")}
        sets[name] = {"rows": rows, "accuracy": summary, "timing": timing.to_json(),
                      "fit_s": {n: timing.median(n) for n in timing.names},
                      "ratio_warm": timing.paired_ratio("jaxmlp"),
                      "ratio_first": timing.paired_ratio("jaxmlp_first")}
        if not args.no_xla_defaults:  # the estimator's XLA options / XLA's defaults, paired
            sets[name]["options_vs_defaults"] = {
                "first": timing.paired_ratio("jaxmlp_first", "jaxmlp_first_xla_defaults"),
                "warm": timing.paired_ratio("jaxmlp", "jaxmlp_xla_defaults")}
        print(timing.table(unit="s"), flush=True)
        if args.processes:
            sets[name]["new_process_cached"] = cached = new_processes(name, args, args.processes)
            print(f"{name:14s} new processes, persistent cache filled: jaxmlp first fit "
                  f"{cached['jaxmlp_first_s']['median']:.3f} s, scikit-learn "
                  f"{cached['scikit-learn_s']['median']:.3f} s, paired ratio "
                  f"{cached['ratio']['median']:.3f}", flush=True)

    info = benchmarking.machine_info()
    print(f"\nhidden {hidden}, scikit-learn's defaults (Adam 1e-3, alpha 1e-4, batch "
          f"min(200, n), tol 1e-4 for 10 epochs, max_iter {args.max_iter}), "
          f"{args.seeds} seeds; scikit-learn with "
          f"{args.sklearn_threads or 'default'} BLAS thread(s); {benchmarking.describe(info)}")
    print(f"{'set':14s} {'accuracy jaxmlp':>17s} {'accuracy sklearn':>17s} "
          f"{'sklearn fit':>11s} {'first/sklearn':>19s} {'warm/sklearn':>19s} {'cached':>6s}")
    for name, s in sets.items():
        a = s["accuracy"]
        rf, rw = s["ratio_first"], s["ratio_warm"]
        print(f"{name:14s} {a['jaxmlp']['mean']:9.4f} ± {a['jaxmlp']['std']:.4f} "
              f"{a['scikit-learn']['mean']:9.4f} ± {a['scikit-learn']['std']:.4f} "
              f"{s['fit_s']['scikit-learn']:9.2f} s "
              f"{rf['median']:6.3f} [{rf['q25']:.3f}, {rf['q75']:.3f}] "
              f"{rw['median']:6.3f} [{rw['q25']:.3f}, {rw['q75']:.3f}] "
              + (f"{s['new_process_cached']['ratio']['median']:6.3f}"
                 if "new_process_cached" in s else f"{'-':>6s}"))
    print("(accuracy: mean ± std over seeds; sklearn fit: median seconds; first: jaxmlp's fit "
          "compile included (persistent cache off), warm: compile excluded, each / "
          "scikit-learn's fit in the same round, paired median [IQR]; cached: the first fit "
          "in a new process reading a filled persistent cache / scikit-learn's fit in that "
          "process, median over processes)")
    for name, s in sets.items():
        if "options_vs_defaults" in s:
            f, w = s["options_vs_defaults"]["first"], s["options_vs_defaults"]["warm"]
            print(f"{name:14s} estimator's XLA options / XLA's defaults: first fit "
                  f"{f['median']:.3f} [{f['q25']:.3f}, {f['q75']:.3f}], warm fit "
                  f"{w['median']:.3f} [{w['q25']:.3f}, {w['q75']:.3f}]")
    import jaxmlp.sklearn as sk

    path = write_json(f"{out}/compare.json", {
        "machine": info, "hidden": list(hidden), "max_iter": args.max_iter,
        "training_compiler_options": dict(sk._COMPILER_OPTIONS),
        "seeds": args.seeds, "sklearn_blas_threads": args.sklearn_threads or "default",
        "import_s": imports, "sets": sets})
    print(f"wrote {path}")
    return 0


def run_profile(args, out: str) -> int:
    """``--profile N``: :func:`profile` of each of ``--sets``, a table, first_fit_profile.json."""
    info = benchmarking.machine_info()
    load_before = benchmarking.load_average()
    sets = {name: profile(name, args, args.profile) for name in args.sets}
    keys = list(next(iter(sets.values()))["cold"]["phases"])
    print(f"first fit of jaxmlp's MLPClassifier{tuple(args.hidden)} in a new process, seconds "
          f"(the process of median wall time of {args.profile}); "
          f"{benchmarking.describe(info)}")
    print(f"{'set':14s} {'mode':7s} {'wall':>6s} " + " ".join(f"{k[:10]:>10s}" for k in keys)
          + f" {'(gc)':>6s}")
    for name, s in sets.items():
        for mode in ("cold", "cached"):
            m = s[mode]
            print(f"{name:14s} {mode:7s} {m['wall_s']:6.3f} "
                  + " ".join(f"{m['phases'][k]:10.3f}" for k in keys) + f" {m['gc_s']:6.3f}")
    print("(imports: modules imported during the fit; validation: scikit-learn's checks of X "
          "and y; compile_or_cache_read: XLA's compilation, or the program read from the "
          "persistent cache; run: the compiled program; gc: Python's garbage collection, "
          "inside the other phases)")
    path = write_json(f"{out}/first_fit_profile{'_gc_freeze' if args.gc_freeze else ''}.json", {
        "machine": info, "load_before": load_before, "load_after": benchmarking.load_average(),
        "hidden": list(args.hidden), "max_iter": args.max_iter, "processes": args.profile,
        "gc_freeze": args.gc_freeze,
        "training_compiler_options": _compiler_options(), "sets": sets})
    print(f"wrote {path}")
    return 0


def _compiler_options() -> dict:
    import jaxmlp.sklearn as sk

    return dict(sk._COMPILER_OPTIONS)


if __name__ == "__main__":
    raise SystemExit(main())
