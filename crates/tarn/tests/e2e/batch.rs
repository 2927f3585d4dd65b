//! Batch endpoints end to end: invocations run as real jobs on a real cluster (runner, batch
//! driver, scoring script on the host Python), and their `score` output is downloaded as users
//! do. MLflow models are batch-scored in `endpoints.rs`, which has the MLflow model at hand.

use crate::harness::Server;
use crate::jobs::{wait_end, write};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// A scoring script: each file holds a number; the answer is the number times the model's
/// weight. File 13 always fails; file 27 fails on its first try only (a marker file remembers).
const SCORE_PY: &str = r#"
import os, time
def init():
    global weight
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "weight.txt")) as f:
        weight = int(f.read())
def run(mini_batch):
    out = []
    for path in mini_batch:
        n = int(open(path).read())
        if n == 13:
            raise ValueError("unlucky 13")
        if n == 27:
            os.makedirs(os.environ["MARKER_DIR"], exist_ok=True)
            marker = os.path.join(os.environ["MARKER_DIR"], "27")
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("flaky on the first try")
        if n == int(os.environ.get("SLOW_FILE", "0")):
            time.sleep(60)
        out.append([os.path.basename(path), n * weight])
    return out
"#;

/// A project: 50 numbered files, a model, the script, a cluster and a batch endpoint.
fn project(s: &Server, dir: &Path) {
    for i in 1..=50 {
        write(dir, &format!("data/f{i:02}.txt"), &i.to_string());
    }
    write(dir, "model/weight.txt", "3");
    write(dir, "src/score.py", SCORE_PY);
    let cluster = write(
        dir,
        "cluster.yml",
        "name: cpu\ntype: amlcompute\nmax_instances: 2\n",
    );
    s.cli(&["compute", "create", "-f", cluster.to_str().unwrap()])
        .success();
    let ep = write(
        dir,
        "endpoint.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json\nname: numbers\n",
    );
    s.cli(&["batch-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
}

/// A model deployment file; `settings` and `env` are indented YAML lines.
fn deployment(dir: &Path, name: &str, settings: &str, env: &str) -> String {
    write(
        dir,
        &format!("{name}.yml"),
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json\n\
             name: {name}\nendpoint_name: numbers\ntype: model\n\
             model:\n  path: ./model\n\
             code_configuration:\n  code: ./src\n  scoring_script: score.py\n\
             environment:\n  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest\n\
             compute: azureml:cpu\n\
             environment_variables:\n  MARKER_DIR: /tmp/markers\n{env}\
             settings:\n{settings}"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// The rows of a job's `predictions.csv` (downloaded with `--output-name score`), if any.
fn predictions(s: &Server, job: &str, dir: &Path, file: &str) -> Option<Vec<String>> {
    let out = dir.join(format!("out-{job}"));
    let run = s.cli(&[
        "job",
        "download",
        "-n",
        job,
        "--output-name",
        "score",
        "--download-path",
        out.to_str().unwrap(),
    ]);
    if !run.ok {
        assert!(run.stderr.contains("is empty"), "{}", run.stderr);
        return None;
    }
    let text = std::fs::read_to_string(out.join("named-outputs/score").join(file)).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

fn invoke(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["batch-endpoint", "invoke", "-n", "numbers", "-o", "json"];
    all.extend_from_slice(args);
    s.cli(&all).success().json()
}

#[test]
fn batch_invoke_scores_fifty_files_in_mini_batches_with_retries_and_a_failing_mini_batch() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("markers")).unwrap();
    project(&s, d);
    let blue = deployment(
        d,
        "blue",
        "  mini_batch_size: 5\n  max_concurrency_per_instance: 2\n  error_threshold: 10\n  \
         retry_settings:\n    max_retries: 2\n    timeout: 30\n",
        "",
    );
    // Two ranks (one per instance), two workers each.
    let created = s
        .cli(&[
            "batch-deployment",
            "create",
            "-f",
            &blue,
            "--set-default",
            "--set",
            "resources.instance_count=2",
            "-o",
            "json",
        ])
        .success();
    assert!(
        created.stderr.contains("default deployment is blue"),
        "{}",
        created.stderr
    );
    let ep = s
        .cli(&["batch-endpoint", "show", "-n", "numbers", "-o", "json"])
        .success()
        .json();
    assert_eq!(ep["spec"]["defaults"]["deployment_name"], "blue");

    // --stream follows the log and exits with the job's outcome.
    let run = s.cli(&[
        "batch-endpoint",
        "invoke",
        "-n",
        "numbers",
        "--input",
        d.join("data").to_str().unwrap(),
        "--stream",
    ]);
    let run = run.success();
    assert!(
        run.stdout.contains("[rank 1]"),
        "two ranks ran: {}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("try 1 of 3 failed: RuntimeError: flaky on the first try"),
        "the flaky mini-batch was retried: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ValueError: unlucky 13"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("45 of 50 file(s) scored, 5 failed"),
        "{}",
        run.stdout
    );

    let jobs = s
        .cli(&["batch-endpoint", "list-jobs", "-n", "numbers", "-o", "json"])
        .success()
        .json();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = jobs[0]["name"].as_str().unwrap().to_string();
    assert_eq!(jobs[0]["status"], "Completed");
    let by_deployment = s
        .cli(&[
            "batch-deployment",
            "list-jobs",
            "-n",
            "blue",
            "-e",
            "numbers",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(by_deployment.as_array().unwrap().len(), 1);

    let rows = predictions(&s, &job, d, "predictions.csv").expect("predictions.csv in score");
    assert_eq!(rows.len(), 45, "{rows:?}");
    let scored: BTreeSet<String> = rows
        .iter()
        .map(|r| {
            let (file, value) = r.split_once(',').unwrap();
            let n: i64 = file[1..3].parse().unwrap();
            assert_eq!(
                value,
                (n * 3).to_string(),
                "row {r}: the model's weight applied"
            );
            file.to_string()
        })
        .collect();
    // Mini-batch 2 (files 11-15) holds file 13: all five failed; file 27 made it on a retry.
    let expected: BTreeSet<String> = (1..=50)
        .filter(|i| !(11..=15).contains(i))
        .map(|i| format!("f{i:02}.txt"))
        .collect();
    assert_eq!(scored, expected);

    // The job is an MLflow run with the summary as metrics, and the endpoint as its experiment.
    let shown = s
        .cli(&["job", "show", "-n", &job, "-o", "json"])
        .success()
        .json();
    assert_eq!(shown["experiment_name"], "numbers");
    assert_eq!(shown["metrics"]["files_scored"], 45.0, "{shown:#}");
    assert_eq!(shown["metrics"]["files_failed"], 5.0);
    assert_eq!(shown["tags"]["azureml.batch_deployment"], "blue");
}

#[test]
fn batch_scoring_stops_past_the_error_threshold_and_times_out_slow_mini_batches() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("markers")).unwrap();
    project(&s, d);
    // summary_only, no error limit, a 1 s timeout and a file that takes a minute.
    let summary = deployment(
        d,
        "summary",
        "  mini_batch_size: 10\n  output_action: summary_only\n  \
         retry_settings:\n    max_retries: 1\n    timeout: 1\n",
        "  SLOW_FILE: \"42\"\n",
    );
    s.cli(&["batch-deployment", "create", "-f", &summary])
        .success();
    let job = invoke(&s, &["--input", d.join("data").to_str().unwrap()]);
    let job = job["name"].as_str().unwrap().to_string();
    let end = wait_end(&s, &job);
    assert_eq!(end["status"], "Completed", "{end:#}");
    let log = s.cli(&["job", "stream", "-n", &job]).stdout;
    assert!(
        log.contains("mini-batch 4, try 1 of 2 failed: run() took longer than the timeout of 1 s"),
        "{log}"
    );
    assert!(log.contains("mini-batch 4 failed after 2 tries"), "{log}");
    // 1 (file 13's batch) + 1 (the slow one) mini-batches of 10 failed.
    assert!(log.contains("30 of 50 file(s) scored, 20 failed"), "{log}");
    assert_eq!(
        predictions(&s, &job, d, "predictions.csv"),
        None,
        "summary_only writes no predictions file"
    );

    // error_threshold 4: file 13's mini-batch of 5 is one too many; the job fails, saying why.
    let strict = deployment(
        d,
        "strict",
        "  mini_batch_size: 5\n  error_threshold: 4\n  output_file_name: scores.csv\n  \
         retry_settings:\n    max_retries: 0\n",
        "",
    );
    s.cli(&["batch-deployment", "create", "-f", &strict])
        .success();
    let job = invoke(
        &s,
        &[
            "--deployment-name",
            "strict",
            "--input",
            d.join("data").to_str().unwrap(),
        ],
    );
    let job = job["name"].as_str().unwrap().to_string();
    let end = wait_end(&s, &job);
    assert_eq!(end["status"], "Failed", "{end:#}");
    let log = s.cli(&["job", "stream", "-n", &job]).stdout;
    assert!(
        log.contains("batch scoring stopped: 5 file(s) failed, more than error_threshold 4"),
        "{log}"
    );
    // What was scored before the stop is kept, under the file name the deployment asked for.
    let rows = predictions(&s, &job, d, "scores.csv").unwrap_or_default();
    assert!(rows.len() < 50, "{rows:?}");

    // A single file as input (uri_file) is one mini-batch of one file.
    let job = invoke(
        &s,
        &[
            "--deployment-name",
            "strict",
            "--input",
            d.join("data/f07.txt").to_str().unwrap(),
            "--input-type",
            "uri_file",
        ],
    );
    let job = job["name"].as_str().unwrap().to_string();
    assert_eq!(wait_end(&s, &job)["status"], "Completed");
    assert_eq!(
        predictions(&s, &job, d, "scores.csv"),
        Some(vec!["f07.txt,21".to_string()])
    );
    let all = s
        .cli(&["batch-endpoint", "list-jobs", "-n", "numbers", "-o", "json"])
        .success()
        .json();
    assert_eq!(all.as_array().unwrap().len(), 3);
}

#[test]
fn bad_batch_deployments_and_invocations_are_refused_and_change_nothing() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(&s, d);
    let data = d.join("data");
    let data = data.to_str().unwrap();

    // No deployment yet.
    let run = s
        .cli(&["batch-endpoint", "invoke", "-n", "numbers", "--input", data])
        .failure();
    assert!(
        run.stderr.contains("has no deployments yet"),
        "{}",
        run.stderr
    );
    // A custom model without a scoring script cannot be run.
    let no_code = write(
        d,
        "nocode.yml",
        "name: nocode\nendpoint_name: numbers\nmodel:\n  path: ./model\ncompute: azureml:cpu\n",
    );
    let run = s
        .cli(&[
            "batch-deployment",
            "create",
            "-f",
            no_code.to_str().unwrap(),
        ])
        .failure();
    assert!(run.stderr.contains("code_configuration"), "{}", run.stderr);
    // A compute that does not exist.
    let blue = deployment(d, "blue", "  mini_batch_size: 5\n", "");
    let run = s
        .cli(&[
            "batch-deployment",
            "create",
            "-f",
            &blue,
            "--set",
            "compute=azureml:gpu",
        ])
        .failure();
    assert!(
        run.stderr.contains("compute \"gpu\" does not exist"),
        "{}",
        run.stderr
    );
    let listed = s
        .cli(&["batch-deployment", "list", "-e", "numbers", "-o", "json"])
        .success()
        .json();
    assert_eq!(listed, Value::Array(vec![]), "nothing was stored");

    // Two deployments and no default: the error names them.
    s.cli(&["batch-deployment", "create", "-f", &blue])
        .success();
    let green = deployment(d, "green", "  mini_batch_size: 5\n", "");
    s.cli(&["batch-deployment", "create", "-f", &green])
        .success();
    let run = s
        .cli(&["batch-endpoint", "invoke", "-n", "numbers", "--input", data])
        .failure();
    assert!(
        run.stderr.contains("no default deployment") && run.stderr.contains("blue, green"),
        "{}",
        run.stderr
    );
    for (args, expect) in [
        (
            vec!["-n", "numbers", "-d", "nope", "--input", data],
            "batch deployment \"nope\"",
        ),
        (
            vec!["-n", "nowhere", "-d", "blue", "--input", data],
            "batch endpoint \"nowhere\"",
        ),
        (vec!["-n", "numbers", "-d", "blue"], "scores an --input"),
        (
            vec!["-n", "numbers", "-d", "blue", "--input", "./missing-folder"],
            "does not exist",
        ),
        (
            vec![
                "-n",
                "numbers",
                "-d",
                "blue",
                "--input",
                "azureml:nodata@latest",
            ],
            "nodata",
        ),
    ] {
        let mut all = vec!["batch-endpoint", "invoke"];
        all.extend(args.iter().copied());
        let run = s.cli(&all).failure();
        assert!(run.stderr.contains(expect), "{args:?}: {}", run.stderr);
    }
    let jobs = s.cli(&["job", "list", "-o", "json"]).success().json();
    assert_eq!(jobs, Value::Array(vec![]), "no job was submitted");

    // A Reader sees the endpoint's jobs but may not run it.
    let reader = s.user_with_role("rita", "Reader", "default");
    s.cli_as(&reader, &["batch-endpoint", "list-jobs", "-n", "numbers"])
        .success();
    let run = s
        .cli_as(
            &reader,
            &[
                "batch-endpoint",
                "invoke",
                "-n",
                "numbers",
                "-d",
                "blue",
                "--input",
                "azureml://datastores/workspaceblobstore/paths/x/",
            ],
        )
        .failure();
    assert!(
        run.stderr.contains("403")
            || run.stderr.contains("Forbidden")
            || run.stderr.contains("not allowed"),
        "{}",
        run.stderr
    );
}

/// A pipeline component, deployed as a batch deployment: each invocation is a pipeline job.
#[test]
fn a_pipeline_deployment_runs_its_component_as_a_pipeline_job() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(&s, d);
    write(
        d,
        "counter/src/count.py",
        "import os, sys\nsrc, out = sys.argv[1], sys.argv[2]\nos.makedirs(out, exist_ok=True)\n\
         open(os.path.join(out, 'count.txt'), 'w').write(str(len(os.listdir(src))))\n",
    );
    write(
        d,
        "counter/pipeline.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/pipelineComponent.schema.json\n\
         name: counter\ntype: pipeline\n\
         inputs:\n  input_data:\n    type: uri_folder\n\
         outputs:\n  result:\n    type: uri_folder\n\
         jobs:\n  count:\n    type: command\n\
         \x20   inputs:\n      src: ${{parent.inputs.input_data}}\n\
         \x20   outputs:\n      out: ${{parent.outputs.result}}\n\
         \x20   component:\n      code: src\n      environment:\n        image: python:3.11\n\
         \x20     command: python count.py ${{inputs.src}} ${{outputs.out}}\n\
         \x20     inputs:\n        src:\n          type: uri_folder\n\
         \x20     outputs:\n        out:\n          type: uri_folder\n",
    );
    let dep = write(
        d,
        "count.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/pipelineComponentBatchDeployment.schema.json\n\
         name: count-all\nendpoint_name: numbers\ntype: pipeline\ncomponent: counter/pipeline.yml\n\
         settings:\n  default_compute: cpu\n",
    );
    s.cli(&[
        "batch-deployment",
        "create",
        "-f",
        dep.to_str().unwrap(),
        "--set-default",
    ])
    .success();
    // --input binds the component's one data input; --file names inputs as Azure's does.
    write(d, "few/a.txt", "1");
    write(d, "few/b.txt", "2");
    let inputs = write(
        d,
        "inputs.yml",
        "inputs:\n  input_data:\n    type: uri_folder\n    path: ./few\n",
    );
    for (args, expected) in [
        (
            vec![
                "--input".to_string(),
                d.join("data").to_str().unwrap().to_string(),
            ],
            "50",
        ),
        (
            vec!["--file".to_string(), inputs.to_str().unwrap().to_string()],
            "2",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let job = invoke(&s, &args);
        assert_eq!(job["type"], "pipeline", "{job:#}");
        assert_eq!(
            job["compute"], "cpu",
            "shown on the deployment's cluster: {job:#}"
        );
        let name = job["name"].as_str().unwrap().to_string();
        assert_eq!(wait_end(&s, &name)["status"], "Completed");
        let out = d.join(format!("out-{name}"));
        s.cli(&[
            "job",
            "download",
            "-n",
            &format!("{name}_count"),
            "--output-name",
            "out",
            "--download-path",
            out.to_str().unwrap(),
        ])
        .success();
        let count = std::fs::read_to_string(out.join("named-outputs/out/count.txt")).unwrap();
        assert_eq!(count, expected);
    }
    let jobs = s
        .cli(&[
            "batch-deployment",
            "list-jobs",
            "-n",
            "count-all",
            "-e",
            "numbers",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        jobs.as_array().unwrap().len(),
        2,
        "child steps are not the endpoint's jobs"
    );
}

/// A schedule that invokes a batch endpoint, as Azure ML's batch scheduling writes it: the
/// endpoint by its id, its data input by name, the fired job scored like an invocation.
#[test]
fn a_schedule_invokes_a_batch_endpoint() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    project(&s, d);
    let blue = deployment(d, "blue", "  mini_batch_size: 10\n", "");
    s.cli(&["batch-deployment", "create", "-f", &blue, "--set-default"])
        .success();
    let data = write(
        d,
        "data.yml",
        "name: numbers-data\nversion: 1\ntype: uri_folder\npath: ./data\n",
    );
    s.cli(&["data", "create", "-f", data.to_str().unwrap()])
        .success();
    let schedule = write(
        d,
        "scoring.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/schedule.schema.json
name: daily-scoring
trigger:
  type: recurrence
  frequency: day
  interval: 1
create_job:
  type: pipeline
  job: azureml:/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/default/batchEndpoints/numbers
  inputs:
    numbers:
      type: uri_folder
      path: azureml:numbers-data@latest
  tags:
    purpose: nightly
",
    );
    s.cli(&["schedule", "create", "-f", schedule.to_str().unwrap()])
        .success();
    // A recurrence fires when it is made: the endpoint's job, tagged with both.
    let start = std::time::Instant::now();
    let job = loop {
        let shown = s
            .cli(&["schedule", "show", "-n", "daily-scoring", "-o", "json"])
            .success()
            .json();
        if let Some(name) = shown["schedule"]["last_jobs"][0]["name"].as_str() {
            break name.to_string();
        }
        assert!(start.elapsed().as_secs() < 30, "{shown:#}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let ended = wait_end(&s, &job);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    assert_eq!(
        ended["tags"]["azureml.batch_endpoint"], "numbers",
        "{ended:#}"
    );
    assert_eq!(ended["tags"]["azureml.schedule"], "daily-scoring");
    assert_eq!(ended["tags"]["purpose"], "nightly");
    let rows = predictions(&s, &job, d, "predictions.csv").unwrap();
    // Every file scored but the mini-batch of ten that holds file 13 (it always fails).
    assert_eq!(rows.len(), 40, "{rows:?}");
    assert!(rows.contains(&"f50.txt,150".to_string()), "{rows:?}");
    let listed = s
        .cli(&["batch-endpoint", "list-jobs", "-n", "numbers", "-o", "json"])
        .success()
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == job.as_str())
    );
}
