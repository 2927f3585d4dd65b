"""Sweep scheduling overhead: a sweep of N trivial trials, one at a time (max_concurrent_trials: 1),
so each trial's dependency (a free slot) is satisfied the moment the previous trial ends. The
overhead of a trial is its Running time minus the previous trial's end time, both as Tarn
recorded them. Run by benches/sweep.sh."""
import argparse, datetime, json, statistics, time, urllib.request


def call(method, url, token, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def ms(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tarn"), ap.add_argument("--token"), ap.add_argument("--n", type=int, default=200)
    a = ap.parse_args()
    jobs = f"{a.tarn}/api/v1/workspaces/default/jobs"
    log = ("import os, json, time, urllib.request as u; "
           "r = u.Request(os.environ['MLFLOW_TRACKING_URI'] + '/api/2.0/mlflow/runs/log-metric', method='POST', "
           "data=json.dumps({'run_id': os.environ['MLFLOW_RUN_ID'], 'key': 'm', 'value': 1, 'timestamp': 0}).encode(), "
           "headers={'Authorization': 'Bearer ' + os.environ['MLFLOW_TRACKING_TOKEN'], 'Content-Type': 'application/json'}); "
           "u.urlopen(r)")
    spec = {
        "type": "sweep", "compute": "local",
        "trial": {"command": "python3 -c " + json.dumps(log) + " ${{search_space.x}}", "environment": {"image": "python"}},
        "sampling_algorithm": {"type": "random", "seed": 1},
        "search_space": {"x": {"type": "uniform", "min_value": 0, "max_value": 1}},
        "objective": {"primary_metric": "m", "goal": "maximize"},
        "limits": {"max_total_trials": a.n, "max_concurrent_trials": 1},
    }
    sweep = call("POST", jobs, a.token, spec)["name"]
    while call("GET", f"{jobs}/{sweep}", a.token)["status"] not in ("Completed", "Failed", "Canceled"):
        time.sleep(0.5)
    trials = call("GET", f"{jobs}?parent={sweep}&max_results=100000", a.token)["value"]
    trials.sort(key=lambda t: int(t["name"].rsplit("_", 1)[1]))
    overhead = []
    for prev, cur in zip(trials, trials[1:]):
        end = ms(prev["status_times"]["Completed"])
        overhead.append(ms(cur["status_times"]["Running"]) - end)
    overhead.sort()
    p95 = overhead[int(round(0.95 * (len(overhead) - 1)))]
    print(f"| trials | dependency satisfied → trial running, p50 | p95 | max |")
    print(f"|---|---|---|---|")
    print(f"| {len(trials)} | {statistics.median(overhead):.1f} ms | {p95:.1f} ms | {overhead[-1]:.1f} ms |")


if __name__ == "__main__":
    main()
