#!/usr/bin/env bash
# A trivial PySpark job through Tarn (a serverless Spark job) and by plain `spark-submit
# --master local[1]`, taking turns in one run on one machine (issue 20's measure): submit ->
# driver running, and submit -> done. Plain spark-submit is .venv-spark's (scripts/test
# installs it); Tarn's job environment (pyspark 3.5, built by uv) is built once, untimed.
#   benches/spark.sh [--n 10]    (TARN_BIN picks the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
N=10
while [ $# -gt 0 ]; do
  case "$1" in
    --n) N=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BIN=${TARN_BIN:-target/release/tarn}
[ -x "$BIN" ] || cargo build --release --locked -q
BIN=$(realpath "$BIN")
[ -x .venv-spark/bin/spark-submit ] || { echo "run scripts/test first (it installs .venv-spark)" >&2; exit 1; }
W=$(mktemp -d /tmp/sbench.XXXXXX); chmod 755 "$W"
export W BIN
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  pkill -f "$W" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" up --home "$W/home" --port 0 > "$W/up.out" 2> "$W/up.err" &
PID=$!
until grep -q "Try " "$W/up.out" 2>/dev/null; do sleep 0.05; done
export TARN_HOME="$W/home"
python3 benches/spark.py "$N"
