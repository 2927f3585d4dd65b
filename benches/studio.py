"""Studio benchmark driver (benches/studio.sh): fills a workspace with many jobs and one long
metric, then times the studio's pages as a logged-in browser would fetch them.

    python studio.py <server URL> <admin token> [--jobs 10000] [--points 20000] [--reps 100]
"""

import argparse
import concurrent.futures
import json
import statistics
import time
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("token")
p.add_argument("--jobs", type=int, default=10000)
p.add_argument("--points", type=int, default=20000)
p.add_argument("--reps", type=int, default=100)
a = p.parse_args()
H = {"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"}


def call(method, path, body=None):
    req = urllib.request.Request(
        a.url + path, data=json.dumps(body).encode() if body is not None else None, headers=H, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}")


# A one-node cluster held by a long job: the others stay Queued, as a busy workspace's would.
call("POST", "/api/v1/workspaces/default/computes", {"name": "parked", "type": "amlcompute", "max_instances": 1})
call("POST", "/api/v1/workspaces/default/jobs", {
    "type": "command", "command": "sleep 3600", "environment": {"image": "python"},
    "compute": "azureml:parked", "display_name": "the long one",
})
job = {
    "type": "command",
    "command": "echo hi",
    "environment": {"image": "python"},
    "compute": "azureml:parked",
    "experiment_name": "bench",
}
t0 = time.time()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda i: call("POST", "/api/v1/workspaces/default/jobs", dict(job, display_name=f"job {i}")), range(a.jobs)))
print(f"submitted {a.jobs} jobs in {time.time() - t0:.1f} s")
jobs = call("GET", "/api/v1/workspaces/default/jobs?max_results=1")["value"]
target = jobs[0]["name"]
# One long metric on the newest job's run (the job is its MLflow run).
for start in range(0, a.points, 1000):
    metrics = [
        {"key": "loss", "value": 1.0 / (1 + i), "timestamp": 1_700_000_000_000 + i, "step": i}
        for i in range(start, min(start + 1000, a.points))
    ]
    call("POST", "/ws/default/mlflow/api/2.0/mlflow/runs/log-batch", {"run_id": target, "metrics": metrics})

# Log in as a browser does.
login = urllib.request.Request(
    a.url + "/login",
    data=f"token={a.token}&next=/".encode(),
    headers={"Content-Type": "application/x-www-form-urlencoded"},
    method="POST",
)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(NoRedirect)
try:
    opener.open(login)
except urllib.error.HTTPError as e:
    cookie = e.headers["Set-Cookie"].split(";")[0]


def page(path):
    req = urllib.request.Request(a.url + path, headers={"Cookie": cookie})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, len(body)


def measure(label, path):
    page(path)  # warm
    times = []
    size = 0
    for _ in range(a.reps):
        ms, size = page(path)
        times.append(ms)
    times.sort()
    p50 = statistics.median(times)
    p95 = times[int(len(times) * 0.95) - 1]
    print(f"| {label} | {p50:.2f} ms | {p95:.2f} ms | {size // 1024} KiB |")


print(f"\n{a.jobs} jobs; a {a.points}-point metric on job {target}; {a.reps} requests each\n")
print("| page | p50 | p95 | size |")
print("|---|---|---|---|")
measure("jobs list, first page (50)", "/ws/default/jobs")
measure("jobs list, filtered by status", "/ws/default/jobs?status=Queued")
measure("jobs list, a page 5,000 jobs deep", f"/ws/default/jobs?before={a.jobs // 2}")
measure(f"job page with a {a.points}-point metric chart", f"/ws/default/jobs/{target}")

# Leave nothing running: cancel the job that held the node.
for j in call("GET", "/api/v1/workspaces/default/jobs?status=Running")["value"]:
    call("POST", f"/api/v1/workspaces/default/jobs/{j['name']}/cancel")
