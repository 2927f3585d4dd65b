"""Job scheduling benchmark driver: Tarn and a local Ray head, the same trivial commands through
their HTTP APIs, measured by the same code. Run by benches/jobs.sh, which starts both.

Latency: submit -> user process running. Each job runs `date +%s%N`; the latency is the time that
command printed minus the time just before the submit request, for jobs submitted one after the
other (no queueing). Throughput: N jobs of `true` submitted at once; jobs per second until the
last one has finished.
"""
import argparse, concurrent.futures, json, statistics, time, urllib.request


def call(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
        return raw, r.headers


def first_number_line(text):
    for line in text.splitlines():
        if line.strip().isdigit():
            return int(line.strip())
    return None


class Tarn:
    name = "Tarn"

    def __init__(self, base, token, env, compute):
        self.base, self.token, self.env, self.compute = base, token, env, compute

    def jobs_url(self):
        return f"{self.base}/api/v1/workspaces/default/jobs"

    def submit(self, command, compute=None):
        body = {"command": command, "environment": self.env, "compute": compute or self.compute}
        raw, _ = call("POST", self.jobs_url(), body, self.token)
        return json.loads(raw)["name"]

    def started_ns(self, job):
        offset, text = 0, ""
        while True:
            raw, headers = call("GET", f"{self.jobs_url()}/{job}/log?offset={offset}&wait=10", token=self.token)
            text += raw.decode()
            offset = int(headers["x-tarn-log-size"])
            found = first_number_line(text)
            if found is not None:
                return found
            if headers["x-tarn-job-status"] in ("Failed", "Canceled"):
                raise SystemExit(f"tarn job {job} failed: {text}")

    def finished(self, jobs):
        raw, _ = call("GET", f"{self.jobs_url()}?status=Completed&max_results=100000", token=self.token)
        done = {j["name"] for j in json.loads(raw)["value"]}
        return all(j in done for j in jobs)


class Ray:
    name = "Ray"

    def __init__(self, base):
        self.base = base

    def submit(self, command, compute=None):
        raw, _ = call("POST", f"{self.base}/api/jobs/", {"entrypoint": command})
        return json.loads(raw)["submission_id"]

    def started_ns(self, job):
        while True:
            raw, _ = call("GET", f"{self.base}/api/jobs/{job}/logs")
            found = first_number_line(json.loads(raw)["logs"])
            if found is not None:
                return found
            raw, _ = call("GET", f"{self.base}/api/jobs/{job}")
            if json.loads(raw)["status"] in ("FAILED", "STOPPED"):
                raise SystemExit(f"ray job {job} failed")
            time.sleep(0.01)

    def finished(self, jobs):
        raw, _ = call("GET", f"{self.base}/api/jobs/")
        done = {j["submission_id"] for j in json.loads(raw) if j["status"] == "SUCCEEDED"}
        return all(j in done for j in jobs)


def latency(system, n):
    out = []
    for _ in range(n):
        t0 = time.time_ns()
        job = system.submit("date +%s%N")
        out.append((system.started_ns(job) - t0) / 1e6)
    return out


def throughput(system, n, compute=None):
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda _: system.submit("true", compute), range(n)))
    while not system.finished(jobs):
        time.sleep(0.02)
    return n / (time.perf_counter() - t0)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tarn"), ap.add_argument("--token"), ap.add_argument("--ray")
    ap.add_argument("--n", type=int, default=200), ap.add_argument("--ray-n", type=int, default=50)
    ap.add_argument("--env", required=True, help="the environment (JSON) Tarn jobs use")
    a = ap.parse_args()
    tarn = Tarn(a.tarn, a.token, json.loads(a.env), "serverless")
    systems = [(tarn, a.n)] + ([(Ray(a.ray), a.ray_n)] if a.ray else [])
    rows = {}
    for system, n in systems:
        latency(system, 1)  # warm-up: waits until it ran (Tarn builds the environment here)
        lat = latency(system, n)
        tput = throughput(system, n, "azureml:bench4" if system is tarn else None)
        rows[system.name] = (n, statistics.median(lat), pct(lat, 95), tput)
        print(f"{system.name}: n={n} p50={rows[system.name][1]:.1f} ms p95={rows[system.name][2]:.1f} ms, {tput:.1f} jobs/s", flush=True)
    print()
    print("| system | jobs | submit -> running p50 | p95 | throughput (4 nodes / Ray head) |")
    print("|---|---|---|---|---|")
    for name, (n, p50, p95, tput) in rows.items():
        print(f"| {name} | {n} | {p50:.1f} ms | {p95:.1f} ms | {tput:.1f} jobs/s |")
    if "Ray" in rows:
        t, r = rows["Tarn"], rows["Ray"]
        print(f"\nRatio (Ray / Tarn): latency p50 {r[1] / t[1]:.1f}x, p95 {r[2] / t[2]:.1f}x; throughput (Tarn / Ray) {t[3] / r[3]:.1f}x")


if __name__ == "__main__":
    main()
