#!/usr/bin/env bash
# Submit -> user process running through Tarn on Slurm and on Ray, side by side with each
# engine's own client, in one run (issue 16's measure). Starts a two-node Slurm and a Ray head
# on this machine (as the tests do: scripts/test installs them) and a release-built server.
#   benches/engines.sh [--n 100] [--engines "slurm ray"]    (TARN_BIN picks the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
N=100
ENGINES="slurm ray"
while [ $# -gt 0 ]; do
  case "$1" in
    --n) N=$2; shift 2 ;;
    --engines) ENGINES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BIN=${TARN_BIN:-target/release/tarn}
[ -x "$BIN" ] || cargo build --release --locked -q
BIN=$(realpath "$BIN")
W=$(mktemp -d /tmp/tbench.XXXXXX); chmod 755 "$W"
export W
PIDS=()
cleanup() {
  [ -n "${SLURM_CONF:-}" ] && scontrol shutdown 2>/dev/null || true
  [ -f "$W/munge/pid" ] && kill "$(cat "$W/munge/pid")" 2>/dev/null || true
  [ -n "${RAY_PID:-}" ] && kill -TERM -- "-$RAY_PID" 2>/dev/null || true
  kill "${PIDS[@]}" 2>/dev/null || true
  pkill -f "$W" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BIN" up --home "$W/home" --port 0 > "$W/up.out" 2> "$W/up.err" &
PIDS+=($!)
until grep -q "Try " "$W/up.out" 2>/dev/null; do sleep 0.05; done
export TARN_URL=$(sed -n 's/^ *API: *\(.*\)\/api\/v1$/\1/p' "$W/up.out")
export TARN_TOKEN=$(python3 -c "import json; print(json.load(open('$W/home/credentials.json'))['token'])")

for engine in $ENGINES; do
  case "$engine" in
    slurm)
      mkdir -p "$W"/{state,spool/n1,spool/n2,log,munge}; chmod 755 "$W/munge"
      head -c 1024 /dev/urandom > "$W/munge/munge.key"; chmod 400 "$W/munge/munge.key"
      munged --key-file="$W/munge/munge.key" --socket="$W/munge/sock" --pid-file="$W/munge/pid" \
        --log-file="$W/munge/log" --seed-file="$W/munge/seed"
      H=$(hostname -s)
      cat > "$W/slurm.conf" <<C
ClusterName=bench
SlurmctldHost=$H
SlurmctldPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$W/munge/sock
CredType=cred/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool/%n
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd-%n.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmUser=root
NodeName=n1 NodeHostname=$H Port=$(free_port) CPUs=1 RealMemory=2000
NodeName=n2 NodeHostname=$H Port=$(free_port) CPUs=1 RealMemory=2000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
C
      export SLURM_CONF="$W/slurm.conf"
      slurmctld -f "$SLURM_CONF"; slurmd -f "$SLURM_CONF" -N n1; slurmd -f "$SLURM_CONF" -N n2
      until [ "$(sinfo -h -t idle -N -o %N | wc -l)" = 2 ]; do sleep 0.1; done
      printf 'name: target\ntype: slurm\nslurm_conf: %s\nwork_dir: %s/nodes\n' "$SLURM_CONF" "$W" > "$W/c.yml"
      ;;
    ray)
      RAY_DASH=$(free_port)
      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 setsid .venv-ray/bin/ray start --head --block \
        --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --num-cpus=2 \
        --object-store-memory=100000000 --disable-usage-stats --port="$(free_port)" \
        --dashboard-port="$RAY_DASH" --ray-client-server-port="$(free_port)" \
        --dashboard-agent-listen-port="$(free_port)" --dashboard-agent-grpc-port="$(free_port)" \
        --temp-dir="$W/ray" > "$W/ray.log" 2>&1 &
      RAY_PID=$!
      export RAY_URL="http://127.0.0.1:$RAY_DASH"
      until curl -sf "$RAY_URL/api/v0/nodes" 2>/dev/null | grep -q ALIVE; do
        kill -0 "$RAY_PID" 2>/dev/null || { echo "ray did not start:" >&2; tail -5 "$W/ray.log" >&2; exit 1; }
        sleep 0.2
      done
      printf 'name: target\ntype: ray\naddress: %s\nwork_dir: %s/nodes\n' "$RAY_URL" "$W" > "$W/c.yml"
      ;;
  esac
  TARN_HOME="$W/home" "$BIN" compute delete -n target > /dev/null 2>&1 || true
  TARN_HOME="$W/home" "$BIN" compute create -f "$W/c.yml" > /dev/null
  python3 benches/engines.py "$engine" "$N"
done
