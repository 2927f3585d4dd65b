#!/usr/bin/env bash
# Sweep scheduling overhead (issue 8's measure): benches/sweep.sh [--n 200]
set -euo pipefail
cd "$(dirname "$0")/.."
N=200
[ "${1:-}" = "--n" ] && N=$2
[ -x target/release/tarn ] || cargo build --release --locked -q
W=$(mktemp -d /var/tmp/ts.XXXXXX)
target/release/tarn up --home "$W/home" --port 0 > "$W/out" 2> "$W/err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
until grep -q "API:" "$W/out" 2>/dev/null; do sleep 0.05; done
URL=$(sed -n 's/.*API: *\(http[^ ]*\)\/api\/v1.*/\1/p' "$W/out")
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$W/home/credentials.json")
python3 benches/sweep.py --tarn "$URL" --token "$TOKEN" --n "$N"
