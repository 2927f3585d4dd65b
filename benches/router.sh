#!/usr/bin/env bash
# Router benchmark: wrk (Debian) at fixed concurrency against
#   (a) one replica of a trivial deployment directly,
#   (b) nginx (Debian) as a weighted reverse proxy (50/50, keep-alive) to its two replicas,
#   (c) Tarn's router (key check, traffic split, least-outstanding balancing) to the same two,
# on the same machine in the same run; plus replica cold start with a warm environment.
#
#   benches/router.sh [--duration 10] [--connections 32] [--threads 2]
#
# The replicas are Tarn's scoring server (init()/run() of a scoring script that returns a
# constant), started by a release `tarn up` as for any deployment.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10; CONNS=32; THREADS=2
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx: apt-get install -y wrk nginx-light" >&2; exit 1; }
[ -x target/release/tarn ] || cargo build --release --locked -q
W=$(mktemp -d /var/tmp/tr.XXXXXX)
TARN_PID=; NGINX_PID=
cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  [ -n "$TARN_PID" ] && kill "$TARN_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

target/release/tarn up --home "$W/home" --port 0 > "$W/tarn.out" 2>"$W/tarn.err" &
TARN_PID=$!
for _ in $(seq 1 200); do grep -q "API:" "$W/tarn.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/.*API: *\(http[^ ]*\)\/api\/v1.*/\1/p' "$W/tarn.out")
T() { TARN_HOME=$W/home target/release/tarn "$@"; }

mkdir -p "$W/p/src"
printf 'def init():\n    pass\ndef run(raw_data):\n    return "ok"\n' > "$W/p/src/score.py"
printf 'name: bench\nauth_mode: key\n' > "$W/p/ep.yml"
dep() {
  printf 'name: %s\nendpoint_name: bench\ncode_configuration:\n  code: ./src\n  scoring_script: score.py\nenvironment:\n  image: python\ninstance_count: 2\nrequest_settings:\n  max_concurrent_requests_per_instance: 64\n  max_queue_wait_ms: 5000\n' "$1" > "$W/p/$1.yml"
}
dep blue; dep green
T online-endpoint create -f "$W/p/ep.yml" -q > /dev/null
T online-deployment create -f "$W/p/blue.yml" --all-traffic -q -o json > "$W/blue.json"
# Cold start with a warm environment: a second deployment of the same environment.
START=$(date +%s.%N)
T online-deployment create -f "$W/p/green.yml" -q > /dev/null
END=$(date +%s.%N)
COLD=$(python3 -c "print(f'{($END - $START) * 1000:.0f}')")
KEY=$(T online-endpoint get-credentials -n bench --query primaryKey -o tsv)
read -r P1 P2 < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(*[r["port"] for r in d["replicas"]])' "$W/blue.json")

NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx/logs"
cat > "$W/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream replicas {
    server 127.0.0.1:$P1 weight=50;
    server 127.0.0.1:$P2 weight=50;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /score {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
sleep 0.5

cat > "$W/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"data": [1, 2, 3]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests))
end
EOF

# CPU ticks (user, system) of the given processes and their threads.
ticks() { for p in "$@"; do awk '{print $14, $15}' "/proc/$p/stat"; done | awk '{u+=$1; s+=$2} END {print u, s}'; }
measure() { # name url [proxy pids…]: wrk's numbers, and the proxy's CPU per request
  local name=$1 url=$2; shift 2
  wrk -t "$THREADS" -c "$CONNS" -d 2s -s "$W/post.lua" "$url" > /dev/null   # warm-up
  local before after
  [ $# -gt 0 ] && before=$(ticks "$@")
  local out; out=$(wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --latency -s "$W/post.lua" "$url" | grep '^RESULT')
  local cpu="–"
  if [ $# -gt 0 ]; then
    after=$(ticks "$@")
    cpu=$(python3 -c "import sys,os; b=list(map(int,sys.argv[1].split())); a=list(map(int,sys.argv[2].split())); n=int(sys.argv[3]); hz=os.sysconf('SC_CLK_TCK'); us=lambda x: x*1e6/hz/n; print(f'{us(a[0]-b[0]):.0f} + {us(a[1]-b[1]):.0f}')" "$before" "$after" "$(echo "$out" | awk '{print $6}')")
  fi
  echo "$out" | awk -v n="$name" -v cpu="$cpu" '{printf "| %s | %s | %s | %s | %s | %s | %s |\n", n, $2, $3, $4, $5, $6, cpu}'
}
echo "wrk -t $THREADS -c $CONNS -d ${DURATION}s, POST of 20 bytes; $(nproc) cores"
echo
echo "| target | req/s | p50 ms | p99 ms | errors | requests | proxy CPU µs/request (user + system) |"
echo "|---|---|---|---|---|---|---|"
measure "direct, one replica" "http://127.0.0.1:$P1/score"
measure "nginx 1.22, 2 replicas" "http://127.0.0.1:$NGINX_PORT/score" "$NGINX_PID" $(pgrep -P "$NGINX_PID")
measure "Tarn router, 2 replicas" "$URL/endpoints/bench/score" "$TARN_PID"
echo
echo "replica cold start (warm environment): online-deployment create of 2 replicas until both are ready: ${COLD} ms"
