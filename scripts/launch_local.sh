#!/usr/bin/env bash
# Start N local processes of experiments/train.py on jax.distributed (one machine, CPU, gloo).
#
#   bash scripts/launch_local.sh N [train.py options...]
#   bash scripts/launch_local.sh 2 --dataset digits --epochs 5 --out results/train/digits-2p
#
# Each process sees DEVICES_PER_PROCESS forced CPU devices (default 1), joins the
# coordinator on 127.0.0.1:PORT (default: a free port), loads only its block of the training
# examples and runs the same program; process 0 prints the table and writes results.json, the
# others log to OUT_LOGS/process-<i>.log (default: a temporary folder). The exit status is
# the first non-zero status of the processes (0 when all succeed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch_local.sh: expected the number of processes N >= 1 first, got '${1:-}'" >&2
    exit 2
fi
n="$1"; shift
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
per="${DEVICES_PER_PROCESS:-1}"
port="${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
logs="${OUT_LOGS:-$(mktemp -d)}"
mkdir -p "$logs"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$per"
pids=()
for ((i = 1; i < n; i++)); do
    "$python" "$root/experiments/train.py" --coordinator "127.0.0.1:$port" --num-processes "$n" \
        --process-id "$i" --no-progress "$@" >"$logs/process-$i.log" 2>&1 &
    pids+=($!)
done
status=0
"$python" "$root/experiments/train.py" --coordinator "127.0.0.1:$port" --num-processes "$n" \
    --process-id 0 "$@" || status=$?
for pid in "${pids[@]}"; do
    wait "$pid" || { s=$?; [ "$status" -ne 0 ] || status=$s; }
done
[ "$n" -gt 1 ] && echo "logs of processes 1..$((n - 1)): $logs" >&2
exit "$status"
