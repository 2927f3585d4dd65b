#!/usr/bin/env bash
# Job scheduling benchmark: Tarn against a local Ray head (`ray[default]` from PyPI, Jobs REST
# API), the same trivial commands submitted over HTTP by the same driver (benches/jobs.py), on
# the same machine in the same run.
#
#   benches/jobs.sh [--n 200] [--ray-n 50] [--no-ray]
#
# Tarn: a release build on a fresh home; jobs use a conda-file environment (built once before
# measuring, then cached: "a warm env"); latency on serverless compute, throughput through a
# 4-node cluster. Ray: a head with 2 CPUs (this machine's), installed into .venv-ray.
set -euo pipefail
cd "$(dirname "$0")/.."
N=200; RAY_N=50; RAY=1
while [ $# -gt 0 ]; do
  case $1 in
    --n) N=$2; shift 2 ;;
    --ray-n) RAY_N=$2; shift 2 ;;
    --no-ray) RAY=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/uv ] || { echo "run ./scripts/test once (it installs uv into .venv)" >&2; exit 1; }
[ -x target/release/tarn ] || cargo build --release --locked -q
if [ "$RAY" = 1 ] && [ ! -x .venv-ray/bin/ray ]; then
  .venv/bin/uv venv -q .venv-ray && .venv/bin/uv pip install -q --python .venv-ray/bin/python 'ray[default]==2.60.0'
fi
W=$(mktemp -d /var/tmp/tj.XXXXXX)
TARN_PID=
cleanup() {
  [ -n "$TARN_PID" ] && kill "$TARN_PID" 2>/dev/null || true
  [ "$RAY" = 1 ] && PATH="$PWD/.venv-ray/bin:$PATH" ray stop --force >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

TARN_UV=$PWD/.venv/bin/uv target/release/tarn up --home "$W/home" --port 0 > "$W/tarn.out" 2>"$W/tarn.err" &
TARN_PID=$!
for _ in $(seq 1 200); do grep -q "API:" "$W/tarn.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/.*API: *\(http[^ ]*\)\/api\/v1.*/\1/p' "$W/tarn.out")
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$W/home/credentials.json")
printf 'name: bench4\ntype: amlcompute\nmin_instances: 0\nmax_instances: 4\nidle_time_before_scale_down: 600\n' > "$W/c.yml"
TARN_HOME=$W/home target/release/tarn compute create -f "$W/c.yml" -q > /dev/null
ENV='{"image": "python", "conda_file": {"dependencies": ["python=3.11", {"pip": ["six"]}]}}'

RAY_ARGS=()
if [ "$RAY" = 1 ]; then
  PATH="$PWD/.venv-ray/bin:$PATH" ray start --head --node-ip-address 127.0.0.1 --port 6380 \
    --dashboard-host 127.0.0.1 --dashboard-port 8265 --ray-client-server-port 10001 \
    --num-cpus "$(nproc)" --object-store-memory 500000000 --disable-usage-stats \
    --temp-dir "$W/ray" > "$W/ray.out" 2>&1
  for _ in $(seq 1 240); do curl -sf http://127.0.0.1:8265/api/version >/dev/null && break; sleep 0.25; done
  RAY_ARGS=(--ray http://127.0.0.1:8265)
fi
python3 benches/jobs.py --tarn "$URL" --token "$TOKEN" --env "$ENV" --n "$N" --ray-n "$RAY_N" "${RAY_ARGS[@]}"
