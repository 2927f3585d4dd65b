"""Submit -> user process running, for Tarn on an engine and for the engine's own client, in
one run on one machine (issue 16's measure). Driven by benches/engines.sh, which starts the
engines and the server; see docs/benchmarks.md.

Each trivial job prints (or writes) `date +%s%N` when its process starts; the latency is that
time minus the moment just before the submit call. Jobs run one after another, the engine's
own and Tarn's taking turns, each submitted when the engine runs nothing else, after a random
part of a second (so that neither side meets the engine's cycles at a fixed point).

A job through Tarn is also cut in three, from its own records: Tarn before the engine (the
POST to the moment the scheduler hands the job over, `handed_to_engine_at`), the engine (to
the moment its node script starts, stamped in the node's `runner.log`), and Tarn on the node
(the script's start to the user's process: the binary check, the runner, its first report).
The first and the last are what Tarn adds; the engine's part moves by seconds from job to
job, which the difference of the two sides' medians cannot tell apart from Tarn's.
"""
import datetime, glob, json, os, random, re, statistics, subprocess, sys, time, urllib.request

engine, n = sys.argv[1], int(sys.argv[2])
work = os.environ["W"]
tarn_url, token = os.environ["TARN_URL"], os.environ["TARN_TOKEN"]
STAMP = re.compile(r"^(\d{19})$", re.M)


def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req) as r:
        return r.read().decode()


def wait_file(path):
    while True:
        try:
            text = open(path).read()
            if STAMP.search(text):
                return int(STAMP.search(text).group(1))
        except FileNotFoundError:
            pass
        time.sleep(0.002)


def wait_idle():
    """Until the engine runs nothing, then a random part of a second: every submission meets
    an idle engine at a random point of its own cycles (Slurm starts jobs on a cycle of about
    a second, and sooner when another job is just ending)."""
    while True:
        if engine == "slurm":
            busy = subprocess.run(["squeue", "-h", "-t", "PD,CF,R,CG", "-o", "%i"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        else:
            jobs = json.loads(call("GET", os.environ["RAY_URL"] + "/api/jobs/"))
            busy = [j for j in jobs if j["status"] in ("PENDING", "RUNNING")]
        if not busy:
            time.sleep(random.random())
            return
        time.sleep(0.02)


def native(i):
    out = f"{work}/{engine}-native-{i}"
    t0 = time.time_ns()
    if engine == "slurm":
        # ENGINES_SBATCH_ARGS: extra options for the engine's own side (to try Tarn's on it).
        extra = os.environ.get("ENGINES_SBATCH_ARGS", "").split()
        subprocess.run(["sbatch", "--quiet", "--output=/dev/null", *extra,
                        f"--wrap=date +%s%N > {out}"], check=True)
    else:
        call("POST", os.environ["RAY_URL"] + "/api/jobs/",
             {"entrypoint": f"date +%s%N > {out}", "entrypoint_num_cpus": 1})
    return wait_file(out) - t0


def tarn(i):
    name = f"{engine}-bench-{i}"
    auth = {"Authorization": "Bearer " + token}
    t0 = time.time_ns()
    call("POST", f"{tarn_url}/api/v1/workspaces/default/jobs",
         {"name": name, "command": "date +%s%N", "compute": "azureml:target",
          "environment": {"image": "python"}}, auth)
    while True:
        log = call("GET", f"{tarn_url}/api/v1/workspaces/default/jobs/{name}/log", None, auth)
        m = STAMP.search(log)
        if m:
            user = int(m.group(1))
            break
        time.sleep(0.005)
    job = json.loads(call("GET", f"{tarn_url}/api/v1/workspaces/default/jobs/{name}", None, auth))
    handed = datetime.datetime.fromisoformat(job["handed_to_engine_at"].replace("Z", "+00:00"))
    handed = int(handed.timestamp() * 1000) * 1_000_000
    (runner_log,) = glob.glob(f"{work}/nodes/runs/*/{name}/runner.log")
    script = int(re.search(r"node script started at (\d{19})", open(runner_log).read()).group(1))
    parts.append((handed - t0, script - handed, user - script))
    return user - t0


def report(label, lat):
    lat = sorted(x / 1e6 for x in lat)
    p50, p95 = statistics.median(lat), lat[max(0, int(len(lat) * 0.95) - 1)]
    print(f"{label}: p50 {p50:.0f} ms, p95 {p95:.0f} ms over {len(lat)} jobs")
    return p50


# Interleaved, so that the engine warming up or slowing down weighs on both alike.
alone, through, parts = [], [], []
for i in range(n):
    wait_idle()
    alone.append(native(i))
    wait_idle()
    through.append(tarn(i))
own = report(f"{engine} alone ({'sbatch --wrap' if engine == 'slurm' else 'Ray Jobs API'})", alone)
via = report(f"Tarn on {engine} (POST /jobs)", through)
print(f"Tarn adds {via - own:.0f} ms at p50 ({via / own:.2f}x the engine alone)", flush=True)
before, eng, node = (sorted(p[k] / 1e6 for p in parts) for k in range(3))
added = sorted((p[0] + p[2]) / 1e6 for p in parts)
pct = lambda v, q: v[max(0, int(len(v) * q + 0.5) - 1)]
print(f"through Tarn, cut in three (p50 / p95): Tarn before the engine {pct(before, .5):.0f} / "
      f"{pct(before, .95):.0f} ms, the engine {pct(eng, .5):.0f} / {pct(eng, .95):.0f} ms, "
      f"Tarn on the node {pct(node, .5):.0f} / {pct(node, .95):.0f} ms", flush=True)
print(f"Tarn's own part per job: p50 {pct(added, .5):.0f} ms, p95 {pct(added, .95):.0f} ms", flush=True)
