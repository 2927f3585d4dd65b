"""Tracking benchmark driver: the same stock-client calls (mlflow-skinny) against an MLflow server
and a Tarn workspace. Run by benches/tracking.sh, which starts both and passes their URIs, tokens
and process ids (server CPU is read from /proc for the server's whole process tree)."""
import argparse, os, statistics, threading, time
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    """User + system CPU seconds of a process and all its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            kids.setdefault(int(fields[1]), []).append((int(d), fields))
    total, todo = 0.0, [pid]
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        pass
    while todo:
        p = todo.pop()
        for child, fields in kids.get(p, []):
            total += (int(fields[11]) + int(fields[12])) / TICK
            todo.append(child)
    return total


def timed(fn, n):
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def raw_ms(method, url, token, **kw):
    """Median time of a plain HTTP call with JSON decoding (no client-side entity building), on
    a kept-alive connection (as the client's own session keeps it)."""
    session = requests.Session()
    if token:
        session.headers["Authorization"] = "Bearer " + token
    session.request(method, url, timeout=120, **kw).raise_for_status()  # connect, warm up
    lat = []
    for _ in range(9):
        t = time.perf_counter()
        r = session.request(method, url, timeout=120, **kw)
        r.raise_for_status()
        r.json()
        lat.append(time.perf_counter() - t)
    return statistics.median(lat) * 1000


def server_cpu_ms(pid, method, url, token, n, **kw):
    """Server CPU (its process tree's user + system time) per call, over `n` calls."""
    session = requests.Session()
    if token:
        session.headers["Authorization"] = "Bearer " + token
    cpu0 = tree_cpu(pid)
    for _ in range(n):
        session.request(method, url, timeout=120, **kw).raise_for_status()
    return (tree_cpu(pid) - cpu0) * 1000 / n


def bench(name, uri, token, pid, big):
    os.environ["MLFLOW_TRACKING_URI"] = uri
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    else:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    c = MlflowClient(uri)
    exp = c.create_experiment(f"bench-{time.time_ns()}")
    run = c.create_run(exp).info.run_id
    out = {}
    out["log_metric calls/s"] = timed(lambda i: c.log_metric(run, "m", i, step=i), 500)
    cpu0 = tree_cpu(pid)
    t0 = time.perf_counter()
    n_batches = 100
    for b in range(n_batches):
        c.log_batch(run, metrics=[Metric("b", float(i), 0, b * 1000 + i) for i in range(1000)])
    elapsed = time.perf_counter() - t0
    out["log_batch(1000) metrics/s"] = n_batches * 1000 / elapsed
    out["server CPU ms per log_batch(1000)"] = (tree_cpu(pid) - cpu0) * 1000 / n_batches
    out["create_run calls/s"] = timed(lambda i: c.create_run(exp), 200)

    # Searches over 200 runs (an experiment of its own) and over `big` runs.
    for count in (200, big):
        e = c.create_experiment(f"search-{count}-{time.time_ns()}")
        def make(lo, hi):
            cl = MlflowClient(uri)
            for i in range(lo, hi):
                r = cl.create_run(e).info.run_id
                cl.log_batch(r, metrics=[Metric("acc", (i % 100) / 100, 0, 0)], params=[])
        threads = [threading.Thread(target=make, args=(k * count // 8, (k + 1) * count // 8)) for k in range(8)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        lat = []
        for _ in range(5):
            t = time.perf_counter()
            runs = c.search_runs([e], "metrics.acc > 0.5", order_by=["metrics.acc DESC"], max_results=1000)
            lat.append(time.perf_counter() - t)
        assert len(runs) > 0
        out[f"search_runs over {count} runs (filtered + ordered), ms"] = statistics.median(lat) * 1000
        body = {"experiment_ids": [e], "filter": "metrics.acc > 0.5", "order_by": ["metrics.acc DESC"], "max_results": 1000}
        out[f"  same, raw HTTP + JSON decode (server side), ms [{count}]"] = raw_ms(
            "POST", uri + "/api/2.0/mlflow/runs/search", token, json=body)
        out[f"  same, server CPU per call, ms [{count}]"] = server_cpu_ms(
            pid, "POST", uri + "/api/2.0/mlflow/runs/search", token, 50 if count <= 200 else 10, json=body)
    # A search answering all 200 runs of an experiment whose runs each carry 2 metrics,
    # 2 params and 5 tags (MLflow's own system tags among them): the answer is bigger per run.
    e = c.create_experiment(f"shape-{time.time_ns()}")
    def shaped(lo, hi):
        cl = MlflowClient(uri)
        for i in range(lo, hi):
            r = cl.create_run(e, tags={"mlflow.user": "bench", "mlflow.source.name": "train.py",
                                       "mlflow.source.type": "LOCAL", "mlflow.runName": f"run-{i}",
                                       "team": "a"}).info.run_id
            cl.log_batch(r, metrics=[Metric("acc", (i % 100) / 100, 0, 0), Metric("loss", i / 7, 0, 0)],
                         params=[Param("lr", str(i)), Param("depth", "3")])
    threads = [threading.Thread(target=shaped, args=(k * 25, (k + 1) * 25)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    body = {"experiment_ids": [e], "max_results": 1000}
    assert len(c.search_runs([e], max_results=1000)) == 200
    out["search_runs answering 200 runs of 2 metrics, 2 params, 5 tags: raw HTTP, ms"] = raw_ms(
        "POST", uri + "/api/2.0/mlflow/runs/search", token, json=body)
    out["  same, server CPU per call, ms [shaped]"] = server_cpu_ms(
        pid, "POST", uri + "/api/2.0/mlflow/runs/search", token, 100, json=body)
    # Metric history of 20,000 points.
    hist = c.create_run(exp).info.run_id
    for b in range(20):
        c.log_batch(hist, metrics=[Metric("h", float(i), 0, b * 1000 + i) for i in range(1000)])
    lat = []
    for _ in range(5):
        t = time.perf_counter()
        h = c.get_metric_history(hist, "h")
        lat.append(time.perf_counter() - t)
    assert len(h) == 20000, len(h)
    out["get_metric_history(20,000 points), ms"] = statistics.median(lat) * 1000
    params = {"run_id": hist, "metric_key": "h", "max_results": 25000}
    out["  same, raw HTTP + JSON decode (server side), ms"] = raw_ms(
        "GET", uri + "/api/2.0/mlflow/metrics/get-history", token, params=params)
    out["  same, server CPU per call, ms"] = server_cpu_ms(
        pid, "GET", uri + "/api/2.0/mlflow/metrics/get-history", token, 20, params=params)
    print(name, out, flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mlflow"), ap.add_argument("--mlflow-pid", type=int)
    ap.add_argument("--tarn"), ap.add_argument("--tarn-pid", type=int), ap.add_argument("--token")
    ap.add_argument("--big", type=int, default=10000)
    ap.add_argument("--extra", nargs="*", default=[], help="name=value rows measured by the shell")
    a = ap.parse_args()
    t = bench("Tarn", a.tarn, a.token, a.tarn_pid, a.big)
    m = bench("MLflow", a.mlflow, None, a.mlflow_pid, a.big)
    print("\n| measure | MLflow 3.17.2 server | Tarn | ratio |")
    print("|---|---|---|---|")
    for k in t:
        higher_is_better = "/s" in k
        ratio = t[k] / m[k] if higher_is_better else m[k] / t[k]
        print(f"| {k} | {m[k]:.1f} | {t[k]:.1f} | {ratio:.1f}x {'faster' if higher_is_better else 'less'} |")
    for row in a.extra:
        print(row)


if __name__ == "__main__":
    main()
