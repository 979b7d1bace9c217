#!/usr/bin/env bash
# The test command. Creates .venv and installs jaxmlp with its test extras on first use.
#
#   bash scripts/test.sh            # default suite (excludes tests marked slow), 2 workers
#   bash scripts/test.sh --slow     # only the long tests
#   bash scripts/test.sh ARGS...    # extra pytest arguments, e.g. tests/test_errors.py -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
marker=()
if [ "${1:-}" = "--slow" ]; then
    shift
    marker=(-m slow)
fi
workers="${PYTEST_WORKERS:-2}"
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile -q "${marker[@]}" "$@"
