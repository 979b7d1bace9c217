#!/usr/bin/env bash
# The main job. Creates .venv and installs jaxmlp on first use, then runs an experiment.
#
#   bash scripts/run.sh                      # train on digits (experiments/train.py --dataset digits)
#                                            # into a new runs/<name>-<time>/ folder (ignored by git);
#                                            # --results rewrites the committed results/ instead
#   bash scripts/run.sh train_all            # all four datasets, final table
#   bash scripts/run.sh gradcheck [--quick]  # manual gradients vs autodiff and finite differences
#   bash scripts/run.sh --data t.csv --target y           # your own table
#   bash scripts/run.sh predict --checkpoint DIR --data new.csv --out pred.csv   # paths from here
#   bash scripts/run.sh startup              # this job's wall time vs a scikit-learn process
#   bash scripts/run.sh --epochs 10          # options alone go to experiments/train.py
#   bash scripts/run.sh NAME [ARGS...]       # any experiments/NAME.py with its arguments
#
# NAME is an experiment's name (letters, digits, underscores; "train" or "train.py"), never a
# path: anything else exits 2 before the environment is set up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Relative paths you give (--data, --out, --checkpoint, ...) are taken from the folder you ran
# this from, not from the repository root the script changes to (experiments/_common/output.py).
export JAXMLP_CALLER_DIR="$PWD"
cd "$root"
# JAX's persistent compilation cache for the scripts (never set by the library itself): XLA
# programs compiled by one run are read back by the next (~1 s saved per run). The folder is
# inside the repository and ignored by git; delete it to start cold. Override any of the three.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$root/.cache/jax}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="${JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES:--1}"
if [ $# -eq 0 ]; then
    set -- train --dataset digits
elif [ "${1#-}" != "$1" ]; then
    set -- train "$@"   # options only: they are train.py's
fi
name="${1%.py}"
shift
if ! [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_]*$ ]] || [ ! -f "experiments/$name.py" ]; then
    echo "run.sh: unknown experiment '$name'; expected one of:" \
        $(cd experiments && ls *.py | sed 's/\.py$//' | grep -v '^_') >&2
    exit 2
fi
bash scripts/setup.sh
exec .venv/bin/python "experiments/$name.py" "$@"
