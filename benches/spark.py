"""Submit -> driver running and submit -> done for a trivial PySpark job, through Tarn (a
serverless Spark job: `tarn job create`, the runner, `spark-submit` in the job's environment)
and by plain `spark-submit --master local[1]`, one after the other, taking turns, in one run.
Driven by benches/spark.sh; see docs/benchmarks.md.

The driver prints `STARTED <ns>` as its first statement (before the SparkSession: the JVM
start that follows is Spark's own, on both sides); "done" is when the plain process exits,
and for Tarn when the job's record says Completed.
"""
import datetime, json, os, re, statistics, subprocess, sys, time

n = int(sys.argv[1])
work, binary = os.environ["W"], os.environ["BIN"]
STAMP = re.compile(r"STARTED (\d{19})")
job_py = os.path.join(work, "src", "job.py")
os.makedirs(os.path.dirname(job_py), exist_ok=True)
with open(job_py, "w") as f:
    f.write("import time\nprint('STARTED', time.time_ns(), flush=True)\n"
            "from pyspark.sql import SparkSession\n"
            "spark = SparkSession.builder.getOrCreate()\n"
            "print('sum', spark.sparkContext.parallelize(range(100), 1).sum())\nspark.stop()\n")
spec = os.path.join(work, "job.yml")
with open(spec, "w") as f:
    f.write("type: spark\ncode: ./src\nentry:\n  file: job.py\nconf:\n  spark.ui.enabled: false\n"
            "resources:\n  runtime_version: \"3.5\"\n")


def tarn(*args):
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout


def ms(t):
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000


def through_tarn():
    t0 = time.time_ns()
    name = json.loads(tarn("job", "create", "-f", spec, "-o", "json"))["name"]
    while True:
        job = json.loads(tarn("job", "show", "-n", name, "-o", "json"))
        if job["status"] in ("Completed", "Failed", "Canceled"):
            break
        time.sleep(0.05)
    assert job["status"] == "Completed", job
    log = tarn("job", "stream", "-n", name)
    started = int(STAMP.search(log).group(1))
    return (started - t0) / 1e6, ms(job["status_times"]["Completed"]) - t0 / 1e6


def plain(cpus=None):
    # The venv's own Python first: pyspark's scripts find Spark with whatever `python3` is.
    venv = os.path.abspath(".venv-spark/bin")
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PATH=venv + os.pathsep + os.environ["PATH"])
    # Tarn gives a serverless job its node's share of the machine's CPUs; `taskset` gives plain
    # spark-submit the same, to tell Tarn's own time apart from a smaller share.
    pin = ["taskset", "-c", ",".join(str(c) for c in range(cpus))] if cpus else []
    t0 = time.time_ns()
    out = subprocess.run([*pin, ".venv-spark/bin/spark-submit", "--master", "local[1]", "--conf",
                          "spark.ui.enabled=false", job_py], check=True, capture_output=True,
                         text=True, env=env).stdout
    end = time.time_ns()
    return (int(STAMP.search(out).group(1)) - t0) / 1e6, (end - t0) / 1e6


through_tarn()  # builds the job environment once (pyspark), untimed
share = 1  # a serverless node's CPUs: serverless has a node per CPU of the machine
runs = {"spark-submit": [], f"ditto, {share} CPU": [], "tarn": []}
for _ in range(n):
    runs["spark-submit"].append(plain())
    runs[f"ditto, {share} CPU"].append(plain(share))
    runs["tarn"].append(through_tarn())


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


print(f"{n} runs each, trivial PySpark job (local[1]); milliseconds")
print(f"{'':18} {'driver p50':>11} {'driver p95':>11} {'done p50':>9} {'done p95':>9}")
for side, xs in runs.items():
    d, t = [x[0] for x in xs], [x[1] for x in xs]
    print(f"{side:18} {q(d, .5):11.0f} {q(d, .95):11.0f} {q(t, .5):9.0f} {q(t, .95):9.0f}")
a = [x[1] for x in runs["spark-submit"]]
b = [x[1] for x in runs["tarn"]]
da = [x[0] for x in runs["spark-submit"]]
db = [x[0] for x in runs["tarn"]]
print(f"Tarn adds: driver running {statistics.median(db) - statistics.median(da):+.0f} ms, "
      f"done {statistics.median(b) - statistics.median(a):+.0f} ms "
      f"({statistics.median(b) / statistics.median(a):.2f}x)")
c = [x[1] for x in runs[f"ditto, {share} CPU"]]
print(f"with the same CPUs: done {statistics.median(b) - statistics.median(c):+.0f} ms "
      f"({statistics.median(b) / statistics.median(c):.2f}x)")
