#!/usr/bin/env bash
# Compute instance start time with a warm environment: `tarn compute start` until JupyterLab
# answers through Tarn's proxy, against starting `jupyter lab` by hand from the same
# environment until it answers; same machine, same run (release `tarn up` on a fresh home).
#
#   benches/instance.sh [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
[ "${1:-}" = "--runs" ] && RUNS=$2
[ -x target/release/tarn ] || cargo build --release --locked -q
UV=$(command -v uv || echo "$PWD/.venv/bin/uv")
W=$(mktemp -d /var/tmp/inst.XXXXXX)
TARN_PID=
cleanup() { [ -n "$TARN_PID" ] && kill "$TARN_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
TARN_UV=$UV target/release/tarn up --home "$W/home" --port 0 > "$W/tarn.out" 2>"$W/tarn.err" &
TARN_PID=$!
for _ in $(seq 1 200); do grep -q "API:" "$W/tarn.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/.*API: *\(http[^ ]*\)\/api\/v1.*/\1/p' "$W/tarn.out")
T() { TARN_HOME=$W/home target/release/tarn "$@"; }
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$W/home/credentials.json")
printf 'name: bench-box\ntype: computeinstance\n' > "$W/box.yml"
T compute create -f "$W/box.yml" -q > /dev/null
T compute start -n bench-box -q > /dev/null   # the first start builds the environment
ms() { python3 -c 'import sys; print(f"{(int(sys.argv[2]) - int(sys.argv[1])) / 1e6:.0f}")' "$1" "$2"; }
tarn_times=(); hand_times=()
for _ in $(seq 1 "$RUNS"); do
  T compute stop -n bench-box -q > /dev/null
  t0=$(date +%s%N)
  T compute start -n bench-box --no-wait -q > /dev/null
  until curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL/ws/default/computes/bench-box/lab/api/status"; do sleep 0.02; done
  tarn_times+=("$(ms "$t0" "$(date +%s%N)")")
done
VENV=$(dirname "$(dirname "$(find "$W/home/computes" -path '*/bin/jupyter' | head -1)")")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for _ in $(seq 1 "$RUNS"); do
  mkdir -p "$W/hand"
  t0=$(date +%s%N)
  JUPYTER_CONFIG_DIR=$W/hand/cfg JUPYTER_DATA_DIR=$W/hand/data JUPYTER_RUNTIME_DIR=$W/hand/rt \
    setsid "$VENV/bin/jupyter" lab --no-browser --ip 127.0.0.1 --port "$PORT" \
    --IdentityProvider.token=XYZ --ServerApp.root_dir="$W/hand" --allow-root > "$W/hand.log" 2>&1 &
  HAND=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/status?token=XYZ"; do sleep 0.02; done
  hand_times+=("$(ms "$t0" "$(date +%s%N)")")
  kill -- "-$HAND" 2>/dev/null; wait "$HAND" 2>/dev/null || true
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "instance start, warm environment, $RUNS runs each; $(nproc) cores"
echo
echo "| how | median | runs (ms) |"
echo "|---|---|---|"
echo "| tarn compute start → JupyterLab answers through the proxy | $(median "${tarn_times[@]}") ms | ${tarn_times[*]} |"
echo "| jupyter lab by hand → answers | $(median "${hand_times[@]}") ms | ${hand_times[*]} |"
