# Sourced by the benchmarks that compare Tarn with the MLflow server (benches/tracking.sh,
# benches/traces.sh): builds Tarn (release), installs `mlflow==3.17.2` into .venv-mlflow, and
# starts both on the store `$STORE` names (sqlite, or postgres: one throwaway PostgreSQL server,
# a database each) in the work folder `$W`, each stopped on exit. Sets MP (MLflow's port),
# MLFLOW_PID, TARN_PID, URL (Tarn's), TOKEN, MLFLOW_READY / TARN_READY (ms from start to health)
# and MLFLOW_RSS / TARN_RSS (KiB, idle). KEEP_W=1 keeps the work folder (the servers' logs).
[ -x .venv/bin/uv ] || { echo "run ./scripts/test once (it installs uv and mlflow-skinny into .venv)" >&2; exit 1; }
# Always built (a no-op when fresh), so a stale binary is never measured; CARGO_TARGET_DIR is
# honoured.
cargo build --release --locked -q -p tarn
TARN_BIN="${CARGO_TARGET_DIR:-target}/release/tarn"
if [ ! -x .venv-mlflow/bin/mlflow ]; then
  .venv/bin/uv venv -q .venv-mlflow && .venv/bin/uv pip install -q --python .venv-mlflow/bin/python 'mlflow==3.17.2'
fi
W=$(mktemp -d /var/tmp/tt.XXXXXX)
PG_DIR=""
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$PG_DIR" ] || scripts/pg-temp stop "$PG_DIR"
  [ -n "${KEEP_W:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
case $STORE in
  sqlite)
    MLFLOW_STORE="sqlite:///$W/mlflow.db"; TARN_STORE=() ;;
  postgres)
    .venv/bin/uv pip install -q --python .venv-mlflow/bin/python psycopg2-binary
    PG_DIR=$(mktemp -u /tmp/tarn-bench-pg.XXXXXX)
    PG=$(scripts/pg-temp start "$PG_DIR")
    psql "$PG" -qc "CREATE DATABASE mlflow" -c "CREATE DATABASE tarn"
    MLFLOW_STORE="postgresql+psycopg2://${PG#postgres://}"; MLFLOW_STORE="${MLFLOW_STORE%/postgres}/mlflow"
    TARN_STORE=(--store "${PG%/postgres}/tarn") ;;
  *) echo "--store is sqlite or postgres" >&2; exit 2 ;;
esac
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
rss_kib() { # resident memory of a process tree
  local total=0 p
  for p in $(ps -o pid= --ppid "$1") "$1"; do
    total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

MP=$(free_port)
T0=$(now)
setsid .venv-mlflow/bin/mlflow server --backend-store-uri "$MLFLOW_STORE" \
  --default-artifact-root "$W/mlruns" --host 127.0.0.1 --port "$MP" --workers 1 > "$W/mlflow.log" 2>&1 &
MLFLOW_PID=$!; PIDS+=($MLFLOW_PID)
until curl -sf "http://127.0.0.1:$MP/health" >/dev/null; do
  kill -0 "$MLFLOW_PID" 2>/dev/null || { echo "mlflow server exited:" >&2; tail -20 "$W/mlflow.log" >&2; exit 1; }
  sleep 0.02
done
MLFLOW_READY=$(python3 -c "print(round(($(now) - $T0) * 1000))")

T0=$(now)
setsid "$TARN_BIN" up --home "$W/home" --port 0 "${TARN_STORE[@]}" > "$W/tarn.out" 2> "$W/tarn.err" &
TARN_PID=$!; PIDS+=($TARN_PID)
until grep -q "API:" "$W/tarn.out" 2>/dev/null; do
  kill -0 "$TARN_PID" 2>/dev/null || { echo "tarn up exited:" >&2; cat "$W/tarn.err" >&2; exit 1; }
  sleep 0.005
done
URL=$(sed -n 's/.*API: *\(http[^ ]*\)\/api\/v1.*/\1/p' "$W/tarn.out")
until curl -sf "$URL/api/v1/health" >/dev/null; do sleep 0.005; done
TARN_READY=$(python3 -c "print(round(($(now) - $T0) * 1000))")
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$W/home/credentials.json")
sleep 2
MLFLOW_RSS=$(rss_kib "$MLFLOW_PID"); TARN_RSS=$(rss_kib "$TARN_PID")

