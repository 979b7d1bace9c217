#!/usr/bin/env bash
# Create .venv (if missing) and install jaxmlp with everything the experiments and tests need.
# Idempotent: a second run only re-checks the install. Usage: bash scripts/setup.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.jaxmlp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing jaxmlp and its dependencies into .venv (log: .venv/setup.log)..." >&2
    if ! { .venv/bin/python -m pip install --upgrade pip \
           && .venv/bin/python -m pip install -e ".[experiments,test]"; } > .venv/setup.log 2>&1; then
        tail -n 30 .venv/setup.log >&2
        echo "setup: pip install failed; full log in .venv/setup.log" >&2
        exit 1
    fi
    touch "$stamp"
    echo "setup: done" >&2
fi
