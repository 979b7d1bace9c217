"""Time of one epoch shuffle: jaxmlp.train.shuffle.permutation vs jax.random.permutation.

    python experiments/shuffle_speed.py [--samples 40] [--target-ms 10]

For m in 128, 512, 1438 (the digits train split), 4096, 10,000 and 60,000, both variants
are jitted and timed by :func:`_common.benchmarking.time_paired` (compiled first; every round
runs each variant once, in a shuffled order, ``block_until_ready``), one run per m, with a
jitted no-op alongside (the dispatch floor). Reports the median microseconds per call and the
paired ratio jax.random.permutation / jaxmlp (median and IQR of the per-round ratios), and
writes ``shuffle_speed.json`` into a new ``runs/`` folder (``--out FILE``, relative to the
folder you run from; ``--results``: the committed ``results/train/shuffle_speed.json``).
"""

from __future__ import annotations

import sys

import jax

from _common import benchmarking, cli
from _common import output  # noqa: E402
from jaxmlp.train import shuffle

SIZES = (128, 512, 1438, 4096, 10_000, 60_000)


PROG = "shuffle_speed.py"


def build_parser() -> cli.Parser:
    """The command line (nothing run)."""
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=cli.positive_int, default=40,
                   help="timing rounds per batch count m (>= 1)")
    p.add_argument("--target-ms", type=cli.positive_float, default=10.0,
                   help="milliseconds of one timed sample (> 0)")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0,
                   help="seed of the shuffle keys (>= 0)")
    output.add_out_arguments(p, "results/train/shuffle_speed.json", what="JSON file")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        output.resolve_out(args, "shuffle_speed")
    except cli.UsageError as e:
        return cli.report_usage(PROG, e)

    key = jax.random.PRNGKey(args.seed)
    noop = jax.jit(lambda k: k + 1)
    rows, timings = [], {}
    print(f"one permutation of m examples, jitted; median us per call, {args.samples} paired rounds")
    print(f"{'m':>6}{'rounds':>8}{'jaxmlp us':>12}{'jax.random us':>15}{'jax.random / jaxmlp':>21}"
          f"{'IQR':>13}{'no-op us':>10}")
    for m in SIZES:
        f = jax.jit(lambda k, m=m: shuffle.permutation(k, m))
        g = jax.jit(lambda k, m=m: jax.random.permutation(k, m))
        t = benchmarking.time_paired(
            {"jaxmlp": lambda: f(key), "jax.random": lambda: g(key), "no-op": lambda: noop(key)},
            reference="jaxmlp", rounds=args.samples, target_s=args.target_ms / 1e3,
            seed=args.seed + m)
        r = t.paired_ratio("jax.random")
        row = {"m": m, "rounds": shuffle.rounds(m), "jaxmlp_us": 1e6 * t.median("jaxmlp"),
               "jax_random_us": 1e6 * t.median("jax.random"), "noop_us": 1e6 * t.median("no-op"),
               "ratio": r["median"], "ratio_iqr": [r["q25"], r["q75"]]}
        rows.append(row)
        timings[str(m)] = t.to_json()
        print(f"{m:>6}{row['rounds']:>8}{row['jaxmlp_us']:>12.1f}{row['jax_random_us']:>15.1f}"
              f"{r['median']:>21.2f}{r['q25']:>7.2f}-{r['q75']:<5.2f}{row['noop_us']:>10.1f}")
    info = benchmarking.machine_info()
    print("machine:", benchmarking.describe(info))
    path = benchmarking.write_json(args.out, {"rows": rows, "samples": args.samples,
                                              "machine": info, "timings": timings})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
