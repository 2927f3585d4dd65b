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
print("cpu share", os.environ.get("MKL_NUM_THREADS"))
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
         inputs:\n  text:\n    type: uri_folder\n    path: ./data\n    mode: direct\n\
         outputs:\n  counts:\n    type: uri_folder\n    mode: direct\n\
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
    // Its node has the CPUs `local[2]` runs on (a serverless slot has one), within the machine.
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    assert!(log.contains(&format!("cpu share {cpus}\n")), "{log}");
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
/// that is canceled, or runs past `limits.timeout`, stops (no Java process of it is left).
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
    // The same slow driver with `limits.timeout`: stopped, and the job fails saying why.
    let timed = write(
        dir.path(),
        "timed.yml",
        "type: spark\ncode: ./src\nentry:\n  file: slow.py\nlimits:\n  timeout: 20\n",
    );
    let timed = submit(&s, &timed, &[]);
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
    // `job show` names the application and links its driver's web UI, which answers.
    let running = wait_for(&s, &slow, Duration::from_secs(120), |j| {
        j["spark"]["application_id"].is_string()
    });
    assert!(
        running["spark"]["application_id"]
            .as_str()
            .unwrap()
            .starts_with("local-"),
        "{running:#}"
    );
    let ui = running["spark"]["ui_url"].as_str().unwrap();
    let apps = reqwest::blocking::get(format!("{ui}/api/v1/applications"))
        .unwrap()
        .text()
        .unwrap();
    assert!(apps.contains(&slow), "{apps}");
    s.cli(&["job", "cancel", "-n", &slow]).success();
    let canceled = wait_end(&s, &slow);
    assert_eq!(canceled["status"], "Canceled", "{canceled:#}");
    let out_of_time = wait_end(&s, &timed);
    assert_eq!(out_of_time["status"], "Failed", "{out_of_time:#}");
    assert!(
        out_of_time["error"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.timeout of 20 s"),
        "{out_of_time:#}"
    );
    let start = std::time::Instant::now();
    while java_running(&slow) || java_running(&timed) {
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

/// An attached Spark standalone cluster: creating the `synapsespark` compute checks that its
/// master answers, `compute show` lists its workers with their cores and memory, and a Spark
/// job on it runs its executors there (its driver here); a command job is refused on it, and a
/// master that does not answer is refused at create.
#[test]
fn a_spark_job_runs_on_an_attached_standalone_cluster() {
    let spark = crate::spark_peer::Spark::start();
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // A master that does not answer: refused, nothing stored.
    let dead = write(
        dir.path(),
        "dead.yml",
        "name: dead\ntype: synapsespark\nmaster: spark://127.0.0.1:9\nweb_ui: http://127.0.0.1:9\n",
    );
    let out = s
        .cli(&["compute", "create", "-f", dead.to_str().unwrap()])
        .failure();
    assert!(
        out.stderr.contains("dead") && out.stderr.contains("does not answer"),
        "{}",
        out.stderr
    );
    let compute = write(
        dir.path(),
        "pool.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/synapseSparkCompute.schema.json\n\
             name: pool\ntype: synapsespark\n\
             resource_id: /subscriptions/x/resourceGroups/rg/providers/Microsoft.Synapse/workspaces/w/bigDataPools/p\n\
             master: {}\nweb_ui: {}\n",
            spark.master_url, spark.web_ui
        ),
    );
    s.cli(&["compute", "create", "-f", compute.to_str().unwrap()])
        .success();
    let shown = s
        .cli(&["compute", "show", "-n", "pool", "-o", "json"])
        .success()
        .json();
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{shown:#}");
    assert_eq!(nodes[0]["state"], "ALIVE", "{shown:#}");
    assert_eq!(nodes[0]["cpus"], 2, "{shown:#}");
    assert_eq!(nodes[0]["memory_mb"], 1024, "{shown:#}");

    write(
        dir.path(),
        "src/sum.py",
        "from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\nsc = spark.sparkContext\n\
         total = sc.parallelize(range(1000), 4).map(lambda x: x * 2).sum()\n\
         print('master', sc.master, 'total', total, flush=True)\n\
         def where(_):\n    import sys, tabulate\n    return [(tabulate.__file__, sys.executable)]\n\
         print('executor', sc.parallelize([0], 1).mapPartitions(where).collect()[0], flush=True)\nspark.stop()\n",
    );
    // The environment's package reaches the executors, on the worker's own Python.
    let job = write(
        dir.path(),
        "sum.yml",
        "type: spark\ncompute: azureml:pool\ncode: ./src\nentry:\n  file: sum.py\n\
         conf:\n  spark.executor.memory: 512m\n  spark.executor.cores: 1\n  spark.cores.max: 2\n\
         environment:\n  conda_file:\n    dependencies:\n      - pip:\n        - tabulate==0.9.0\n",
    );
    let name = submit(&s, &job, &[]);
    let done = wait_for(&s, &name, Duration::from_secs(400), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    let log = s.cli(&["job", "stream", "-n", &name]).stdout;
    assert_eq!(done["status"], "Completed", "{done:#}\n{log}");
    assert!(
        log.contains(&format!("master {} total 999000", spark.master_url)),
        "{log}"
    );
    let executor = log
        .lines()
        .find(|l| l.starts_with("executor "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        executor.contains("/tarn-env/tabulate/__init__.py")
            && !executor.contains(&format!("{}/envs/", s.home.display())),
        "{executor}"
    );
    // The application ran on the cluster: its master knows it.
    let state: Value = reqwest::blocking::get(format!("{}/json/", spark.web_ui))
        .unwrap()
        .json()
        .unwrap();
    let apps = state["completedapps"].to_string();
    assert!(apps.contains(&name), "{state:#}");

    let command = write(
        dir.path(),
        "cmd.yml",
        "compute: azureml:pool\ncommand: echo hi\nenvironment:\n  image: python:3.11\n",
    );
    let out = s
        .cli(&["job", "create", "-f", command.to_str().unwrap()])
        .failure();
    assert!(out.stderr.contains("Spark cluster"), "{}", out.stderr);
}

/// A pipeline whose first step is a Spark component (a component file, as Azure ML writes
/// one) feeding a command step through `${{parent.jobs.count.outputs.counts}}`.
#[test]
fn a_pipeline_feeds_a_spark_steps_output_to_a_command_step() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    write(
        dir.path(),
        "src/count.py",
        "import argparse, json, os\nfrom pyspark.sql import SparkSession\n\
         p = argparse.ArgumentParser(); p.add_argument('--input'); p.add_argument('--output'); a = p.parse_args()\n\
         sc = SparkSession.builder.getOrCreate().sparkContext\n\
         counts = dict(sc.textFile(os.path.join(a.input, '*.txt')).flatMap(lambda l: l.lower().split()).map(lambda w: (w, 1)).reduceByKey(lambda x, y: x + y).collect())\n\
         json.dump(counts, open(os.path.join(a.output, 'counts.json'), 'w'))\n",
    );
    write(
        dir.path(),
        "comp/count.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/sparkComponent.schema.json\n\
         name: word_count\nversion: \"1\"\ntype: spark\ncode: ../src\nentry:\n  file: count.py\n\
         inputs:\n  text:\n    type: uri_folder\n\
         outputs:\n  counts:\n    type: uri_folder\n\
         args: --input ${{inputs.text}} --output ${{outputs.counts}}\n\
         conf:\n  spark.driver.memory: 600m\n  spark.executor.instances: 1\n",
    );
    let pipeline = write(
        dir.path(),
        "pipeline.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json\n\
         type: pipeline\n\
         inputs:\n  text:\n    type: uri_folder\n    path: ./data\n\
         jobs:\n\
         \x20 count:\n    type: spark\n    component: ./comp/count.yml\n    inputs:\n      text: ${{parent.inputs.text}}\n\
         \x20 report:\n    type: command\n    inputs:\n      counts: ${{parent.jobs.count.outputs.counts}}\n\
         \x20   command: python3 -c \"import json; print('THE', json.load(open('${{inputs.counts}}/counts.json'))['the'])\"\n\
         \x20   environment:\n      image: python:3.11-slim\n",
    );
    let name = submit(&s, &pipeline, &[]);
    let done = wait_for(&s, &name, Duration::from_secs(400), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    assert_eq!(done["status"], "Completed", "{done:#}");
    let report = s
        .cli(&["job", "stream", "-n", &format!("{name}_report")])
        .stdout;
    assert!(report.contains("THE 3"), "{report}");
    let count = s
        .cli(&["job", "show", "-n", &format!("{name}_count"), "-o", "json"])
        .success()
        .json();
    assert_eq!(count["type"], "spark", "{count:#}");
}
