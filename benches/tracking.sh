#!/usr/bin/env bash
# Tracking benchmark: the MLflow server (PyPI `mlflow==3.17.2`, `--workers 1`) and Tarn
# (release build, fresh home) on the same machine in the same run, driven by the same
# stock-client script (benches/tracking.py, mlflow-skinny from .venv). Both on SQLite, or with
# `--store postgres` both on one throwaway PostgreSQL server (scripts/pg-temp; MLflow through
# psycopg2-binary), each in a database of its own.
#
#   benches/tracking.sh [--big 10000] [--store sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
BIG=10000
STORE=sqlite
while [ $# -gt 0 ]; do
  case $1 in
    --big) BIG=$2; shift 2 ;;
    --store) STORE=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source benches/mlflow_and_tarn.sh

.venv/bin/python benches/tracking.py --tarn "$URL/ws/default/mlflow" --tarn-pid "$TARN_PID" --token "$TOKEN" \
  --mlflow "http://127.0.0.1:$MP" --mlflow-pid "$MLFLOW_PID" --big "$BIG" --extra \
  "| time to ready (start → health answers), ms | $MLFLOW_READY | $TARN_READY | $(python3 -c "print(f'{$MLFLOW_READY/$TARN_READY:.1f}x less')") |" \
  "| idle RSS (process tree), MiB | $((MLFLOW_RSS / 1024)) | $((TARN_RSS / 1024)) | $(python3 -c "print(f'{$MLFLOW_RSS/$TARN_RSS:.1f}x less')") |"
