#!/usr/bin/env bash
# Studio benchmark: server time of the jobs list and of a job page with a long metric, with
# 10,000 jobs in the workspace (a release `tarn up` on a fresh home; driver benches/studio.py).
#
#   benches/studio.sh [--jobs 10000] [--points 20000] [--reps 100]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/tarn ] || cargo build --release --locked -q
W=$(mktemp -d /var/tmp/studio.XXXXXX)
TARN_PID=
cleanup() { [ -n "$TARN_PID" ] && kill "$TARN_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
target/release/tarn up --home "$W/home" --port 0 > "$W/tarn.out" 2>"$W/tarn.err" &
TARN_PID=$!
for _ in $(seq 1 200); do grep -q "API:" "$W/tarn.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/.*API: *\(http[^ ]*\)\/api\/v1.*/\1/p' "$W/tarn.out")
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$W/home/credentials.json")
python3 benches/studio.py "$URL" "$TOKEN" "$@"
