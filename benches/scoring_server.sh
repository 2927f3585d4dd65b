#!/usr/bin/env bash
# Scoring server benchmark: Tarn's embedded scoring server (crates/tarn/src/replica/
# scoring_server.py, standard library only) against Microsoft's azureml-inference-server-http
# (PyPI, what Azure ML's inference images run: Flask behind gunicorn), serving the same
# scoring script on the same machine in the same run:
#   - time from start to the first 200 on GET / (ready),
#   - idle memory (RSS of the server's whole process tree),
#   - wrk throughput and latency on POST /score at a fixed concurrency,
#   - install size and dependencies.
#
#   benches/scoring_server.sh [--duration 10] [--connections 8] [--threads 2]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10; CONNS=8; THREADS=2
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
UV=$(command -v uv || echo .venv/bin/uv)
VENV=.venv-azinf
if [ ! -x "$VENV/bin/azmlinfsrv" ]; then
  "$UV" venv -q "$VENV" --python 3.11
  "$UV" pip install -q --python "$VENV/bin/python" azureml-inference-server-http
fi
W=$(mktemp -d /var/tmp/ss.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

cat > "$W/score.py" <<'EOF'
import json
def init():
    global weight
    weight = 2
def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"total": weight * sum(data)}
EOF
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a server in its own process group; prints "<pid> <ms to ready>".
start() { # port command...
  local port=$1; shift
  local t0; t0=$(date +%s%N)
  setsid "$@" > "$W/log.$port" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 3000); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/"; then
      echo "$pid $(( ($(date +%s%N) - t0) / 1000000 ))"; return
    fi
    sleep 0.01
  done
  echo "server on $port never got ready:" >&2; cat "$W/log.$port" >&2; exit 1
}
rss_mb() { # pid: RSS of the process group, MB
  ps -o rss= -g "$1" | awk '{s+=$1} END {printf "%.1f", s/1024}'
}

cat > "$W/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"data": [1, 2, 3]}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF
measure() { # url -> "req/s p50 p99 errors"
  wrk -t "$THREADS" -c "$CONNS" -d 2s -s "$W/post.lua" "$1" > /dev/null
  wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --latency -s "$W/post.lua" "$1" | awk '/^RESULT/ {print $2, $3, $4, $5}'
}

PY=$VENV/bin/python
TP=$(free_port)
read -r TPID TREADY < <(start "$TP" env PORT="$TP" AZUREML_ENTRY_SCRIPT="$W/score.py" PYTHONUNBUFFERED=1 \
  "$PY" crates/tarn/src/replica/scoring_server.py)
AP=$(free_port); AH=$(free_port)
read -r APID AREADY < <(start "$AP" "$VENV/bin/azmlinfsrv" --entry_script "$W/score.py" --port "$AP" --health_port "$AH")
sleep 1
TRSS=$(rss_mb "$TPID"); ARSS=$(rss_mb "$APID")
# Both answer the same thing.
curl -sf -X POST -H 'Content-Type: application/json' -d '{"data": [1, 2, 3]}' "http://127.0.0.1:$TP/score" > "$W/t.out"
curl -sf -X POST -H 'Content-Type: application/json' -d '{"data": [1, 2, 3]}' "http://127.0.0.1:$AP/score" > "$W/a.out"
echo "answers: tarn $(cat "$W/t.out"); azureml-inference-server-http $(cat "$W/a.out")"
read -r TRPS TP50 TP99 TERR < <(measure "http://127.0.0.1:$TP/score")
read -r ARPS AP50 AP99 AERR < <(measure "http://127.0.0.1:$AP/score")
DEPS=$("$UV" pip list --python "$PY" 2>/dev/null | tail -n +3 | wc -l)
SIZE=$(du -sm "$VENV/lib" | cut -f1)
echo "wrk -t $THREADS -c $CONNS -d ${DURATION}s, POST of 20 bytes; $(nproc) cores; $("$PY" --version)"
echo
echo "| server | ready ms | idle RSS MB | req/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|---|"
echo "| Tarn scoring_server.py (stdlib) | $TREADY | $TRSS | $TRPS | $TP50 | $TP99 | $TERR |"
echo "| azureml-inference-server-http $("$PY" -c 'import importlib.metadata as m; print(m.version("azureml-inference-server-http"))') | $AREADY | $ARSS | $ARPS | $AP50 | $AP99 | $AERR |"
echo
echo "azureml-inference-server-http installs $DEPS packages (${SIZE} MB); Tarn's needs none."
