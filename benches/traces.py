"""Trace benchmark driver: the same trace traffic against an MLflow server and a Tarn workspace.
Run by benches/traces.sh, which starts both (each on SQLite) and passes their URIs, tokens,
process ids and database files. Server CPU is read from /proc for the server's process tree.

- Ingest: N traces of 20 spans (a root and 19 children with MLflow's attributes: inputs,
  outputs, span type), each sent as MLflow's client sends a trace once its spans have ended on
  a batching exporter: one OTLP/protobuf export of its spans (`POST /v1/traces`), then its info
  (`StartTraceV3`). Server CPU per trace.
- Real client: a few hundred traces made by the stock client (`@mlflow.trace`, 20 spans,
  synchronous export: one OTLP request per span as it ends, then StartTraceV3).
- Search: the ingested traces are copied by SQL in each server's own database to reach the
  search size (ids and times shifted; the copy is not measured), then the first page (100) of
  a filtered `SearchTracesV3` is asked for repeatedly. Server CPU and latency per search.
  First, the filter's pages are walked in turn (each call the next page, by its token), so
  that each call lists traces no call listed before: what a search costs where nothing of an
  earlier answer can be reused (Tarn keeps each trace's info as it answered it)."""
import argparse, json, os, sqlite3, statistics, subprocess, sys, threading, time
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

sys.path.insert(0, os.path.dirname(__file__))
from tracking import tree_cpu  # noqa: E402

SPANS = 20


def export_body(trace_no, now_ns):
    """An OTLP export of one trace's 20 spans, as MLflow's client writes them."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    trace_id = (trace_no + 1).to_bytes(16, "big")
    hex_id = "tr-" + trace_id.hex()
    start = now_ns
    for i in range(SPANS):
        s = spans.add()
        s.trace_id = trace_id
        s.span_id = (trace_no * 100 + i + 1).to_bytes(8, "big")
        if i:
            s.parent_span_id = (trace_no * 100 + 1).to_bytes(8, "big")
        s.name = "agent" if i == 0 else f"step-{i % 5}"
        s.start_time_unix_nano = start + i * 1000
        s.end_time_unix_nano = start + 1_000_000 + (SPANS - i) * 1000
        s.status.code = Status.STATUS_CODE_OK
        for k, v in [
            ("mlflow.traceRequestId", json.dumps(hex_id)),
            ("mlflow.spanType", json.dumps("CHAIN" if i == 0 else "TOOL")),
            ("mlflow.spanInputs", json.dumps({"question": f"question {trace_no}", "step": i})),
            ("mlflow.spanOutputs", json.dumps({"answer": "x" * 200})),
        ]:
            a = s.attributes.add()
            a.key = k
            a.value.string_value = v
    return hex_id, req.SerializeToString()


def trace_info(hex_id, experiment, now_ms, trace_no):
    return {
        "trace": {
            "trace_info": {
                "trace_id": hex_id,
                "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}},
                "request_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms / 1000)) + f".{now_ms % 1000:03d}Z",
                "execution_duration": "0.001s",
                "state": "OK",
                "request_preview": json.dumps({"question": f"question {trace_no}"}),
                "response_preview": json.dumps({"answer": "x" * 200}),
                "trace_metadata": {"mlflow.trace_schema.version": "3", "mlflow.user": "bench"},
                "tags": {"mlflow.traceName": "agent", "env": "prod" if trace_no % 2 else "dev"},
            }
        }
    }


def ingest(base, token, pid, experiment, n, threads=4):
    headers = {"Authorization": "Bearer " + token} if token else {}
    now_ns = time.time_ns()
    todo = list(range(n))
    lock = threading.Lock()

    def work():
        s = requests.Session()
        s.headers.update(headers)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            t_ns = now_ns - (n - i) * 1_000_000_000
            hex_id, body = export_body(i, t_ns)
            r = s.post(f"{base}/v1/traces", data=body, timeout=120, headers={
                "Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment})
            r.raise_for_status()
            r = s.post(f"{base}/api/3.0/mlflow/traces", json=trace_info(hex_id, experiment, t_ns // 1_000_000, i), timeout=120)
            r.raise_for_status()

    cpu0, t0 = tree_cpu(pid), time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (tree_cpu(pid) - cpu0) * 1000 / n, n / (time.perf_counter() - t0)


REAL_CLIENT = """
import os, sys, mlflow
mlflow.set_experiment(sys.argv[1])

@mlflow.trace(span_type="TOOL")
def step(i):
    return {"answer": "x" * 200, "step": i}

@mlflow.trace(span_type="CHAIN")
def agent(q):
    return [step(i) for i in range(%d)]

agent("warm up")
print("READY", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    agent(f"question {i}")
print("DONE", flush=True)
""" % (SPANS - 1)


def real_client(base, token, pid, experiment_name, n):
    """Traces made by the stock client (in a process of its own): synchronous export."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=base, MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false")
    env.pop("MLFLOW_TRACKING_TOKEN", None)
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    p = subprocess.Popen([sys.executable, "-c", REAL_CLIENT, experiment_name, str(n)], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY"
    cpu0 = tree_cpu(pid)
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "DONE"
    cpu = (tree_cpu(pid) - cpu0) * 1000 / n
    p.wait()
    return cpu


def copy_sql(db, kind, times):
    """Copies the ingested traces `times` more times, in the server's own SQLite database."""
    con = sqlite3.connect(db, timeout=60)
    day = 86_400_000
    if kind == "mlflow":
        cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")] for t in
                ["trace_info", "trace_tags", "trace_request_metadata", "spans"]}
        for k in range(1, times + 1):
            for table, c in cols.items():
                sel = []
                for name in c:
                    if name in ("request_id", "trace_id"):
                        sel.append(f"{name} || '#{k}'")
                    elif name == "timestamp_ms":
                        sel.append(f"timestamp_ms - {k * day}")
                    else:
                        sel.append(name)
                src = "request_id" if "request_id" in c else "trace_id"
                con.execute(f"INSERT INTO {table} ({', '.join(c)}) SELECT {', '.join(sel)} FROM {table} WHERE {src} NOT LIKE '%#%'")
    else:
        for k in range(1, times + 1):
            for table in ["traces", "trace_tags", "trace_metadata", "trace_spans"]:
                c = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
                # A copy has no kept `info` (it would name the original's id): as for a trace
                # ingested and not listed yet, the first search builds it.
                sel = [f"trace_id || '#{k}'" if n == "trace_id" else (f"request_time - {k * day}" if n == "request_time" else ("NULL" if n == "info" else n)) for n in c]
                con.execute(f"INSERT INTO {table} ({', '.join(c)}) SELECT {', '.join(sel)} FROM {table} WHERE trace_id NOT LIKE '%#%'")
    con.commit()
    # The copy's pages go into the database file now, so that no server spends the
    # measured searches checkpointing them.
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def search(base, token, pid, experiment, filter_string, n=2000, budget_s=10):
    """Server CPU and median latency of one search, over as many calls as fit in `budget_s`
    (at least 3, at most `n`): /proc counts CPU in 10 ms ticks, so a fast server needs
    hundreds of calls for a figure finer than a tick over the calls."""
    s = requests.Session()
    if token:
        s.headers["Authorization"] = "Bearer " + token
    body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}],
            "filter": filter_string, "max_results": 100, "order_by": ["timestamp_ms DESC"]}
    # Warm-up calls, not measured (10, or one when a call is slow): each of a server's
    # connections reads the pages once.
    warm = time.perf_counter()
    for _ in range(10):
        if _ and time.perf_counter() - warm > 10:
            break
        r = s.post(f"{base}/api/3.0/mlflow/traces/search", json=body, timeout=600)
        r.raise_for_status()
    got = len(r.json().get("traces", []))
    lat = []
    cpu0, start = tree_cpu(pid), time.perf_counter()
    while len(lat) < n and (len(lat) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        s.post(f"{base}/api/3.0/mlflow/traces/search", json=body, timeout=600).raise_for_status()
        lat.append(time.perf_counter() - t)
    return (tree_cpu(pid) - cpu0) * 1000 / len(lat), statistics.median(lat) * 1000, got


def walk(base, token, pid, experiment, filter_string, pages=20):
    """Server CPU and median latency per page, walking the filter's first `pages` pages of 100
    in turn: each call lists traces no call listed before."""
    s = requests.Session()
    if token:
        s.headers["Authorization"] = "Bearer " + token
    body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}],
            "filter": filter_string, "max_results": 100, "order_by": ["timestamp_ms DESC"]}
    lat = []
    cpu0 = tree_cpu(pid)
    for _ in range(pages):
        t = time.perf_counter()
        r = s.post(f"{base}/api/3.0/mlflow/traces/search", json=body, timeout=600)
        r.raise_for_status()
        lat.append(time.perf_counter() - t)
        page = r.json()
        assert len(page.get("traces", [])) == 100, len(page.get("traces", []))
        body["page_token"] = page["next_page_token"]
    # Tarn keeps the pages' trace info within a second of answering: that is counted too.
    time.sleep(1.5)
    return (tree_cpu(pid) - cpu0) * 1000 / pages, statistics.median(lat) * 1000


def count(db, kind):
    con = sqlite3.connect(db, timeout=60)
    n = con.execute("SELECT COUNT(*) FROM " + ("trace_info" if kind == "mlflow" else "traces")).fetchone()[0]
    con.close()
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mlflow"), ap.add_argument("--mlflow-pid", type=int), ap.add_argument("--mlflow-db")
    ap.add_argument("--tarn"), ap.add_argument("--tarn-pid", type=int), ap.add_argument("--tarn-db")
    ap.add_argument("--token")
    ap.add_argument("--traces", type=int, default=10_000)
    ap.add_argument("--search-size", type=int, default=100_000)
    ap.add_argument("--real", type=int, default=200)
    a = ap.parse_args()
    rows = []
    servers = [("mlflow", a.mlflow, None, a.mlflow_pid, a.mlflow_db), ("tarn", a.tarn, a.token, a.tarn_pid, a.tarn_db)]
    result = {}
    for kind, base, token, pid, db in servers:
        h = {"Authorization": "Bearer " + token} if token else {}
        name = f"traces-bench-{time.time_ns()}"
        r = requests.post(f"{base}/api/2.0/mlflow/experiments/create", json={"name": name}, headers=h, timeout=60)
        r.raise_for_status()
        exp = r.json()["experiment_id"]
        out = result[kind] = {}
        out["ingest: server CPU ms per trace (20 spans)"], out["ingest: traces/s (4 client threads)"] = ingest(base, token, pid, exp, a.traces)
        out["real client (@mlflow.trace, 20 spans, sync export): server CPU ms per trace"] = real_client(base, token, pid, name + "-client", a.real)
        copy_sql(db, kind, a.search_size // a.traces - 1)
        assert count(db, kind) >= a.search_size, count(db, kind)
        cpu, ms = walk(base, token, pid, exp, "tags.env = 'prod' AND trace.status = 'OK'")
        out[f"search {a.search_size:,} traces, tag + status, 20 pages in turn (none listed before): server CPU ms per page"] = cpu
        out[f"search {a.search_size:,} traces, tag + status, 20 pages in turn (none listed before): latency ms"] = ms
        for label, f in [("tag + status", "tags.env = 'prod' AND trace.status = 'OK'"),
                         ("span name", "span.name = 'step-3'")]:
            cpu, ms, got = search(base, token, pid, exp, f)
            assert got == 100, (kind, label, got)
            out[f"search {a.search_size:,} traces, {label}, first page of 100: server CPU ms"] = cpu
            out[f"search {a.search_size:,} traces, {label}, first page of 100: latency ms"] = ms
        print(kind, json.dumps(out), flush=True)
    m, t = result["mlflow"], result["tarn"]
    print("\n| measure | MLflow 3.17.2 server | Tarn | ratio |")
    print("|---|---|---|---|")
    for k in t:
        faster = "/s" in k
        ratio = t[k] / m[k] if faster else m[k] / max(t[k], 1e-9)
        print(f"| {k} | {m[k]:.2f} | {t[k]:.2f} | {ratio:.1f}x {'faster' if faster else 'less'} |")


if __name__ == "__main__":
    main()
