#!/usr/bin/env bash
# Isolation overhead (issue 15's measure): job submit → user process running, p50 over N
# trivial jobs, on a server with isolation and one with `--no-isolation`, in one run.
#   benches/isolation.sh [--n 200]        (TARN_BIN picks the binary; default target/release/tarn)
set -euo pipefail
cd "$(dirname "$0")/.."
N=200
[ "${1:-}" = "--n" ] && N=$2
BIN=${TARN_BIN:-target/release/tarn}
[ -x "$BIN" ] || cargo build --release --locked -q
W=$(mktemp -d /var/tmp/tiso.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
printf 'command: date +%%s%%N\nenvironment:\n  image: python\n' > "$W/job.yml"
for mode in isolated no-isolation; do
  args=()
  [ "$mode" = no-isolation ] && args=(--no-isolation)
  "$BIN" up --home "$W/$mode" --port 0 "${args[@]}" > "$W/$mode.out" 2> "$W/$mode.err" &
  PIDS+=($!)
  until grep -q "Try " "$W/$mode.out" 2>/dev/null; do sleep 0.05; done
  grep -E "Isolation:|WARNING:" "$W/$mode.out" | sed "s/^/$mode: /"
  for i in $(seq 1 "$N"); do
    name="b$i"
    TARN_HOME="$W/$mode" "$BIN" job create -f "$W/job.yml" --set "name=$name" --stream -q > "$W/$mode.$i.log" 2>&1
    TARN_HOME="$W/$mode" "$BIN" job show -n "$name" -o json > "$W/$mode.$i.json"
  done
  python3 - "$W" "$mode" "$N" <<'PY'
import json, re, sys, statistics, datetime
w, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lat = []
for i in range(1, n + 1):
    job = json.load(open(f"{w}/{mode}.{i}.json"))
    created = datetime.datetime.fromisoformat(job["created_at"].replace("Z", "+00:00")).timestamp()
    started = [int(l) for l in open(f"{w}/{mode}.{i}.log") if re.fullmatch(r"\d{19}\n?", l)]
    lat.append((started[0] / 1e9 - created) * 1000)
lat.sort()
print(f"{mode}: submit -> user process running over {n} jobs: p50 {statistics.median(lat):.1f} ms, p90 {lat[int(n*0.9)-1]:.1f} ms")
PY
done
