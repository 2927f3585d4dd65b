//! Spark jobs (`type: spark`) end to end on real Spark: `pyspark` from PyPI (built into the
//! job's environment by uv, as Tarn does for every job) and the machine's Java 17, run by the
//! job's runner as `spark-submit` in client mode on serverless Spark (`local[N]`).

use crate::harness::Server;
use crate::jobs::{submit, wait_end, wait_for, write};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A word count over a folder of text files, with a helper shipped as `py_files`, that also
/// logs a metric to its MLflow run with the variables the runner injects.
const WORDCOUNT: &str = r#"
import argparse, json, os, urllib.request
from pyspark.sql import SparkSession
from helper import words_of

p = argparse.ArgumentParser()
p.add_argument("--input")
p.add_argument("--output")
a = p.parse_args()
spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
print("driver memory", sc.getConf().get("spark.driver.memory"), "master", sc.master)
counts = dict(sc.textFile(os.path.join(a.input, "*.txt")).flatMap(words_of).map(lambda w: (w, 1)).reduceByKey(lambda x, y: x + y).collect())
with open(os.path.join(a.output, "counts.json"), "w") as f:
    json.dump(counts, f, sort_keys=True)
uri, run, token = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"], os.environ["MLFLOW_TRACKING_TOKEN"]
req = urllib.request.Request(uri + "/api/2.0/mlflow/runs/log-metric",
    data=json.dumps({"run_id": run, "key": "distinct_words", "value": len(counts), "timestamp": 0, "step": 0}).encode(),
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
urllib.request.urlopen(req).read()
spark.stop()
"#;

fn project(dir: &Path) {
    write(dir, "src/wordcount.py", WORDCOUNT);
    write(
        dir,
        "src/helper.py",
        "def words_of(line):\n    return line.lower().split()\n",
    );
    write(dir, "data/a.txt", "the cat sat\non the mat\n");
    write(dir, "data/b.txt", "The dog\n");
}

/// A serverless Spark job reads a folder input, writes an output folder, ships `py_files`, is
/// sized by `conf`, logs to its MLflow run, and its driver's log is the job's log.
#[test]
fn a_serverless_spark_job_counts_words_and_logs_to_mlflow() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let file = write(
        dir.path(),
        "spark-job.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/sparkJob.schema.json\n\
         type: spark\ncode: ./src\nentry:\n  file: wordcount.py\npy_files:\n  - helper.py\n\
         conf:\n  spark.driver.cores: 1\n  spark.driver.memory: 600m\n  spark.executor.cores: 1\n  spark.executor.memory: 600m\n  spark.executor.instances: 2\n\
         inputs:\n  text:\n    type: uri_folder\n    path: ./data\n\
         outputs:\n  counts:\n    type: uri_folder\n\
         args: --input ${{inputs.text}} --output ${{outputs.counts}}\n\
         identity:\n  type: user_identity\n\
         resources:\n  instance_type: standard_e4s_v3\n  runtime_version: \"3.5\"\n",
    );
    let name = submit(&s, &file, &[]);
    let job = wait_for(&s, &name, Duration::from_secs(400), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    let log = s.cli(&["job", "stream", "-n", &name]).stdout;
    assert_eq!(job["status"], "Completed", "{job:#}\n{log}");
    assert_eq!(job["type"], "spark", "{job:#}");
    assert!(
        log.contains("driver memory 600m master local[2]"),
        "the driver's own output, sized from conf: {log}"
    );
    assert_eq!(job["metrics"]["distinct_words"], 6.0, "{job:#}");
    let out = dir.path().join("dl");
    s.cli(&[
        "job",
        "download",
        "-n",
        &name,
        "--output-name",
        "counts",
        "-p",
        out.to_str().unwrap(),
    ])
    .success();
    let counts: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("named-outputs/counts/counts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(counts["the"], 3, "{counts}");
    assert_eq!(counts["dog"], 1, "{counts}");
}

/// A driver that fails fails the job with its exit code and its error in the log; a driver
/// that is canceled stops (no Java process of it is left).
#[test]
fn a_failing_spark_driver_fails_the_job_and_cancel_stops_one() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/fail.py",
        "from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\nraise SystemExit('the input is empty (on purpose)')\n",
    );
    write(
        dir.path(),
        "src/slow.py",
        "import time\nfrom pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\nprint('driver up', flush=True)\ntime.sleep(600)\n",
    );
    let job = |entry: &str| {
        write(
            dir.path(),
            &format!("{entry}.yml"),
            &format!("type: spark\ncode: ./src\nentry:\n  file: {entry}.py\n"),
        )
    };
    let failing = submit(&s, &job("fail"), &[]);
    let slow = submit(&s, &job("slow"), &[]);
    let failed = wait_for(&s, &failing, Duration::from_secs(400), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    let log = s.cli(&["job", "stream", "-n", &failing]).stdout;
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    assert!(log.contains("the input is empty (on purpose)"), "{log}");
    wait_for(&s, &slow, Duration::from_secs(400), |_| {
        crate::jobs::log(&s, &slow).contains("driver up")
    });
    s.cli(&["job", "cancel", "-n", &slow]).success();
    let canceled = wait_end(&s, &slow);
    assert_eq!(canceled["status"], "Canceled", "{canceled:#}");
    let start = std::time::Instant::now();
    while java_running(&slow) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the canceled driver still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a Java process runs the Spark application named `name`.
fn java_running(name: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("java") && c.contains(name)
        })
    })
}

/// Bad Spark jobs are refused at submission with the field named; nothing is stored.
#[test]
fn bad_spark_jobs_are_refused_naming_the_field() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/x.py", "print(1)\n");
    for (yaml, field, words) in [
        ("type: spark\ncode: ./src\n", "entry", "required"),
        (
            "type: spark\ncode: ./src\nentry:\n  file: x.py\n  class_name: org.x.Main\n",
            "entry",
            "exactly one",
        ),
        (
            "type: spark\ncode: ./src\nentry:\n  file: x.py\nconf:\n  spark.driver.memory: 2 gigs\n",
            "conf.spark.driver.memory",
            "not a size",
        ),
        (
            "type: spark\ncode: ./src\nentry:\n  file: x.py\nconf:\n  driver.memory: 2g\n",
            "conf.driver.memory",
            "spark.",
        ),
        (
            "type: spark\ncode: ./src\nentry:\n  file: x.py\nconf:\n  spark.executor.instances: 0\n",
            "conf.spark.executor.instances",
            "positive",
        ),
        (
            "type: spark\ncode: ./src\nentry:\n  file: x.py\nargs: --in ${{inputs.missing}}\n",
            "args",
            "missing",
        ),
        (
            "type: spark\ncode: ./src\nentry:\n  file: x.py\nresources:\n  runtime_version: latest\n",
            "resources.runtime_version",
            "3.5",
        ),
    ] {
        let file = write(dir.path(), "bad.yml", yaml);
        let out = s
            .cli(&["job", "create", "-f", file.to_str().unwrap()])
            .failure();
        assert!(
            out.stderr.contains(field) && out.stderr.contains(words),
            "{yaml}: {}",
            out.stderr
        );
    }
    let jobs = s.cli(&["job", "list", "-o", "json"]).success().json();
    assert_eq!(jobs.as_array().unwrap().len(), 0, "{jobs:#}");

    // A server with no Java: refused at submission, saying what to install.
    let bare = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        crate::harness::Home::temp(),
        &[("PATH", bare.path().to_str().unwrap()), ("JAVA_HOME", "")],
    );
    let file = write(
        dir.path(),
        "ok.yml",
        "type: spark\ncode: ./src\nentry:\n  file: x.py\n",
    );
    let out = s
        .cli(&["job", "create", "-f", file.to_str().unwrap()])
        .failure();
    assert!(
        out.stderr.contains("Java runtime") && out.stderr.contains("openjdk-17-jre-headless"),
        "{}",
        out.stderr
    );
}
