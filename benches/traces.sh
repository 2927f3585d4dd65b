#!/usr/bin/env bash
# Trace benchmark: the MLflow server (PyPI `mlflow==3.17.2`, `--workers 1`) and Tarn (release
# build, fresh home), both on SQLite, on the same machine in the same run, driven by the same
# script (benches/traces.py): ingest of N traces of 20 spans (OTLP export + StartTraceV3), the
# stock client's own export, and filtered searches over the traces copied up to the search size.
#
#   benches/traces.sh [--traces 10000] [--search-size 100000] [--real 200]
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --traces|--search-size|--real) ARGS+=("$1" "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
STORE=sqlite
source benches/mlflow_and_tarn.sh

.venv/bin/python benches/traces.py --tarn "$URL/ws/default/mlflow" --tarn-pid "$TARN_PID" --token "$TOKEN" \
  --tarn-db "$W/home/tarn.db" --mlflow "http://127.0.0.1:$MP" --mlflow-pid "$MLFLOW_PID" \
  --mlflow-db "$W/mlflow.db" "${ARGS[@]}"
