#!/usr/bin/env bash
# Optional: a second environment, .venv-compare, with the peer libraries the comparison
# experiments use as baselines (never needed by the library or the default tests):
#   torch 2.13.0 (CPU build), equinox, opacus, laplace-torch and its curvature back-ends,
#   kfac-jax.
# Usage: bash scripts/setup_compare.sh, then e.g.
#   .venv-compare/bin/python experiments/laplace_torch_compare.py
# BackPACK, curvlinops and laplace-torch are installed without their torchvision requirement
# (none imports it; PyPI's torchvision wants a newer, CUDA torch and fails beside the CPU one), and kfac-jax 0.0.8 needs a one-line
# adapter on JAX >= 0.9.2 that the experiments apply (experiments/_common/peers.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
venv=.venv-compare
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi
stamp="$venv/.jaxmlp-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
    echo "setup_compare: installing into $venv (log: $venv/setup.log)..." >&2
    pip=("$venv/bin/python" -m pip install)
    if ! { "${pip[@]}" --upgrade pip \
           && "${pip[@]}" "torch==2.13.0" \
           && "${pip[@]}" -e ".[experiments,test,compare]" \
           && "${pip[@]}" --no-deps "backpack-for-pytorch==1.7.1" "unfoldNd>=0.2" \
                "curvlinops-for-pytorch==3.0.1" "laplace-torch==0.3" "asdfghjkl==0.1a4" \
           && "${pip[@]}" "einops>=0.3" "einconv>=0.1" "linear_operator>=0.2" \
                "torchmetrics>=1.0" "opt-einsum>=3.4" \
           && "${pip[@]}" "kfac-jax==0.0.8"; } > "$venv/setup.log" 2>&1; then
        tail -n 30 "$venv/setup.log" >&2
        echo "setup_compare: pip install failed; full log in $venv/setup.log" >&2
        exit 1
    fi
    touch "$stamp"
    echo "setup_compare: done" >&2
fi
