//! MLflow-compatible tracking, driven by the stock `mlflow` client from PyPI (mlflow-skinny in
//! `.venv`, installed by `scripts/test`): the calls users make, MLflow's errors and limits,
//! roles, 100 concurrent writers, and jobs as runs.

use crate::harness::{Home, Server};
use crate::jobs::{submit, wait_end, write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.is_file(),
        "scripts/test installs the mlflow client into .venv; run it first"
    );
    p
}

fn mlflow_env(s: &Server, token: &str) -> Vec<(String, String)> {
    vec![
        (
            "MLFLOW_TRACKING_URI".into(),
            format!("{}/ws/default/mlflow", s.url),
        ),
        ("MLFLOW_TRACKING_TOKEN".into(), token.into()),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES".into(), "0".into()),
        ("MLFLOW_DISABLE_TELEMETRY".into(), "true".into()),
        ("DO_NOT_TRACK".into(), "true".into()),
    ]
}

/// Runs Python code with the mlflow client pointed at the server; returns (ok, output).
pub fn run_python(s: &Server, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .args(args)
        .envs(mlflow_env(s, token))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_stock_mlflow_client_works_unchanged() {
    let s = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tracking/client_calls.py");
    let (ok, out) = run_python(&s, &s.token, &[script.to_str().unwrap()]);
    assert!(ok && out.lines().any(|l| l == "ALL OK"), "{out}");
}

/// MLflow 3 tracing through the stock client: traced functions (nested spans, an exception,
/// one in a run), a foreign OTLP/JSON export, searches with every filter kind, tags,
/// assessments and deletes (tests/tracking/trace_calls.py).
#[test]
fn traces_spans_and_assessments_work_through_the_stock_client() {
    let s = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tracking/trace_calls.py");
    let (ok, out) = run_python(&s, &s.token, &[script.to_str().unwrap()]);
    assert!(ok && out.lines().any(|l| l == "ALL OK"), "{out}");
}

/// MLflow 3 GenAI evaluation through the stock client: evaluation datasets from dicts and
/// from traces, and `mlflow.genai.evaluate` with two code scorers whose results are a run,
/// traces linked to it and their feedback (tests/tracking/genai_calls.py).
#[test]
fn evaluation_datasets_and_genai_evaluate_work_through_the_stock_client() {
    let s = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tracking/genai_calls.py");
    let (ok, out) = run_python(&s, &s.token, &[script.to_str().unwrap()]);
    assert!(ok && out.lines().any(|l| l == "ALL OK"), "{out}");
}

/// A workspace's `trace_retention_days`: the leader's retention task deletes traces that
/// started longer ago (with their spans and assessments) and keeps younger ones; a value that
/// is not a positive whole number of days is refused and changes nothing.
#[test]
fn traces_older_than_the_workspace_retention_are_deleted() {
    let s = Server::start();
    let http = s.http();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = |id: &str, age_days: i64| {
        let at = tarn_spec::trigger::rfc3339_ms(now - age_days * 86_400_000);
        let body = serde_json::json!({"trace": {"trace_info": {
            "trace_id": id,
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "0"}},
            "request_time": at, "execution_duration": "0.100s", "state": "OK",
        }}});
        let (status, reply) = http.post("/ws/default/mlflow/api/3.0/mlflow/traces", &body);
        assert_eq!(status, 200, "{reply}");
    };
    let old = "tr-0000000000000000000000000000aaaa";
    let young = "tr-0000000000000000000000000000bbbb";
    start(old, 40);
    start(young, 2);
    let exists = |id: &str| {
        http.get(&format!("/ws/default/mlflow/api/3.0/mlflow/traces/{id}"))
            .0
            == 200
    };
    assert!(exists(old) && exists(young));
    for bad in ["0", "-3", "soon"] {
        let out = s
            .cli(&[
                "workspace",
                "update",
                "-n",
                "default",
                "--set",
                &format!("trace_retention_days={bad}"),
            ])
            .failure();
        assert!(
            out.stderr.contains("trace_retention_days"),
            "{}",
            out.stderr
        );
    }
    assert!(exists(old), "a refused setting deletes nothing");
    s.cli(&[
        "workspace",
        "update",
        "-n",
        "default",
        "--set",
        "trace_retention_days=30",
    ])
    .success();
    let began = std::time::Instant::now();
    while exists(old) {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(30),
            "the 40-day-old trace outlived a 30-day retention"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(exists(young), "a 2-day-old trace is kept");
}

#[test]
fn a_reader_can_read_runs_but_not_write_them() {
    let s = Server::start();
    let reader = s.user_with_role("rita", "Reader", "default");
    let code = "import mlflow\nfrom mlflow import MlflowClient\nc = MlflowClient()\nr = c.create_run('0')\nprint('RUN=' + r.info.run_id)\n";
    let (ok, out) = run_python(&s, &s.token, &["-c", code]);
    assert!(ok, "{out}");
    let run_id = out.split("RUN=").nth(1).unwrap().trim().to_string();
    let code = format!(
        "from mlflow import MlflowClient\nfrom mlflow.exceptions import MlflowException\nc = MlflowClient()\n\
         print('read', c.get_run('{run_id}').info.status)\n\
         try:\n    c.log_metric('{run_id}', 'x', 1)\nexcept MlflowException as e:\n    print('write', e.error_code)\n"
    );
    let (ok, out) = run_python(&s, &reader, &["-c", &code]);
    assert!(ok, "{out}");
    assert!(out.contains("read RUNNING"), "{out}");
    assert!(out.contains("write PERMISSION_DENIED"), "{out}");
    // The UI's calls follow the same roles: a Reader reads, but neither uploads nor renames.
    let mlflow = "/ws/default/mlflow";
    let as_reader = s.http().with_token(Some(&reader));
    let (status, body) = as_reader.get(&format!(
        "{mlflow}/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id={run_id}&metric_key=x"
    ));
    assert_eq!(status, 200, "{body}");
    let (status, body) = as_reader.raw(
        "POST",
        &format!("{mlflow}/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run_id}&path=x.txt"),
        b"data".to_vec(),
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    let (status, body) = as_reader.post(
        &format!("{mlflow}/api/2.0/mlflow/registered-models/rename"),
        &serde_json::json!({"name": "a", "new_name": "b"}),
    );
    assert_eq!(status, 403, "{body}");
    let (_, out) = run_python(&s, "tarn_not-a-token", &["-c", &code]);
    assert!(
        out.contains("UNAUTHENTICATED") || out.contains("401"),
        "{out}"
    );
}

#[test]
fn a_job_is_an_mlflow_run_and_its_metrics_land_on_it() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/train.py",
        "import mlflow, os\nfor step in range(3):\n    mlflow.log_metric('loss', 1.0 / (step + 1), step=step)\nmlflow.log_param('epochs', 3)\nos.makedirs('outputs/model', exist_ok=True)\nopen('outputs/model/MLmodel', 'w').write('flavors: {}\\n')\nprint('logged')\n",
    );
    let file = write(
        dir.path(),
        "job.yml",
        "command: python train.py\ncode: ./src\nexperiment_name: job-runs\ndisplay_name: tracked\n\
         environment:\n  image: python\n  conda_file:\n    dependencies:\n      - python=3.11\n      - pip:\n        - mlflow-skinny==3.17.2\n",
    );
    let name = submit(&s, &file, &[]);
    let job = wait_end(&s, &name);
    assert_eq!(
        job["status"],
        "Completed",
        "{job:#}\n{}",
        s.cli(&["job", "stream", "-n", &name]).stdout
    );
    let shown = s
        .cli(&["job", "show", "-n", &name, "-o", "json"])
        .success()
        .json();
    assert!(
        (shown["metrics"]["loss"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
        "{shown:#}"
    );
    assert_eq!(shown["params"]["epochs"], "3");
    let code = format!(
        "from mlflow import MlflowClient\nc = MlflowClient()\nr = c.get_run('{name}')\n\
         print(r.info.status, c.get_experiment(r.info.experiment_id).name, r.info.run_name, len(c.get_metric_history('{name}', 'loss')))\n\
         print('experiment 0 is', c.get_experiment('0').name)\n"
    );
    let (ok, out) = run_python(&s, &s.token, &["-c", &code]);
    assert!(ok, "{out}");
    assert!(out.contains("FINISHED job-runs tracked 3"), "{out}");
    assert!(
        out.contains("experiment 0 is Default"),
        "a job's experiment never takes the Default's id: {out}"
    );

    // The job's ./outputs/model registers as a model, by any of the URIs users know.
    let job_uri = format!("azureml://jobs/{name}/outputs/artifacts/paths/outputs/model");
    let run_uri = format!("runs:/{name}/outputs/model");
    for (model, path) in [
        ("from-job", job_uri.as_str()),
        ("from-run", run_uri.as_str()),
        ("copied", "models:/from-job/1"),
    ] {
        let m = s
            .cli(&[
                "model",
                "create",
                "--name",
                model,
                "--path",
                path,
                "--type",
                "mlflow_model",
                "-o",
                "json",
            ])
            .success()
            .json();
        assert_eq!(
            m["spec"]["path"],
            format!(
                "azureml://datastores/workspaceartifactstore/paths/ExperimentRun/dcid.{name}/outputs/model"
            ),
            "{m}"
        );
    }
    let bad = s
        .cli(&[
            "model",
            "create",
            "--name",
            "nope",
            "--path",
            &format!("runs:/{name}/missing"),
            "--type",
            "mlflow_model",
        ])
        .failure();
    assert!(
        bad.stderr.contains("needs an MLmodel file"),
        "{}",
        bad.stderr
    );
    let dl = dir.path().join("dl");
    s.cli(&[
        "model",
        "download",
        "-n",
        "from-run",
        "-p",
        dl.to_str().unwrap(),
    ])
    .success();
    let found = std::fs::read_dir(&dl).unwrap().next().is_some();
    assert!(found, "the model downloads");
}

#[test]
fn the_model_registry_is_one_behind_both_surfaces() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "m/model.pkl", "bytes");
    let model = write(
        dir.path(),
        "model.yml",
        "name: tarn-made\nversion: \"1\"\npath: ./m\n",
    );
    s.cli(&["model", "create", "-f", model.to_str().unwrap()])
        .success();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tracking/registry_calls.py");
    let (ok, out) = run_python(&s, &s.token, &[script.to_str().unwrap()]);
    assert!(ok && out.lines().any(|l| l == "ALL OK"), "{out}");

    // MLflow's rename is Tarn's too: the copy's version lives under its new name.
    let renamed = s
        .cli(&["model", "show", "-n", "churn-renamed", "-o", "json"])
        .success()
        .json();
    assert_eq!(renamed["version"], "1", "{renamed}");
    s.cli(&["model", "show", "-n", "churn-copy"]).failure();
    // What MLflow registered is a Tarn model asset.
    let v2 = s
        .cli(&["model", "show", "-n", "churn", "-v", "2", "-o", "json"])
        .success()
        .json();
    assert_eq!(v2["type"], "mlflow_model");
    assert_eq!(v2["spec"]["stage"], "Production");
    assert_eq!(v2["spec"]["description"], "second");
    assert!(
        v2["spec"]["path"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/workspaceartifactstore/paths/"),
        "{v2}"
    );
    let latest = s
        .cli(&["model", "show", "-n", "churn", "-o", "json"])
        .success()
        .json();
    assert_eq!(latest["version"], "2");
    // MLflow's delete archived version 1: still there for Tarn, hidden from `@latest`.
    let all = s
        .cli(&[
            "model",
            "list",
            "-n",
            "churn",
            "--include-archived",
            "-o",
            "json",
        ])
        .success()
        .json();
    let archived: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["archived"] == true)
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(archived, ["1"]);
    // A model logged with mlflow.pyfunc.log_model and registered from its models:/ URI.
    let echo = s
        .cli(&["model", "show", "-n", "echo", "-o", "json"])
        .success()
        .json();
    assert!(
        echo["spec"]["path"]
            .as_str()
            .unwrap()
            .contains("/models/m-"),
        "{echo}"
    );
    let dl = dir.path().join("dl");
    s.cli(&[
        "model",
        "download",
        "-n",
        "echo",
        "-p",
        dl.to_str().unwrap(),
    ])
    .success();
    let mlmodel = std::fs::read_dir(&dl).unwrap().count();
    assert!(
        mlmodel > 0,
        "the logged model's files download with `tarn model download`"
    );
}

/// Edges a newer copy of MLflow's own tracking tests checks, answered as `mlflow server`
/// 3.17.2 answers them: per-run sampling of bulk histories, non-positive page sizes refused,
/// an oversize UI upload refused in MLflow's error format, the protocol's version.
#[test]
fn mlflow_edges_answer_as_mlflow_server_does() {
    let s = Server::start();
    let h = s.http();
    let api = "/ws/default/mlflow/api/2.0/mlflow";
    let ajax = "/ws/default/mlflow/ajax-api/2.0/mlflow";
    let (_, exp) = h.post(
        &format!("{api}/experiments/create"),
        &serde_json::json!({"name": "edges"}),
    );
    let exp_id = exp["experiment_id"].as_str().unwrap().to_string();
    let (_, run) = h.post(
        &format!("{api}/runs/create"),
        &serde_json::json!({"experiment_id": exp_id}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let metrics: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"key": "loss", "value": i, "timestamp": 1000 + i, "step": i}))
        .collect();
    let (status, body) = h.post(
        &format!("{api}/runs/log-batch"),
        &serde_json::json!({"run_id": run_id, "metrics": metrics}),
    );
    assert_eq!(status, 200, "{body}");

    // 10 steps, 5 per run: evenly sampled, the last point kept in the last one's place.
    let (status, sampled) = h.get(&format!(
        "{ajax}/metrics/get-history-bulk-interval?run_ids={run_id}&metric_key=loss&max_results=5"
    ));
    assert_eq!(status, 200, "{sampled}");
    let steps: Vec<i64> = sampled["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [0, 2, 4, 6, 9]);

    for bad in ["0", "-1"] {
        let (status, body) = h.get(&format!(
            "{api}/metrics/get-history?run_id={run_id}&metric_key=loss&max_results={bad}"
        ));
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
    }
    let (status, body) = h.get(&format!(
        "{api}/metrics/get-history?run_id={run_id}&metric_key=loss&max_results=3"
    ));
    assert_eq!(status, 200, "{body}");

    // The UI's upload: up to 10 MB; over it, MLflow's error, as JSON.
    let (status, body) = h.raw(
        "POST",
        &format!("{ajax}/upload-artifact?run_uuid={run_id}&path=ok.bin"),
        vec![b'x'; 5 * 1024 * 1024],
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.raw(
        "POST",
        &format!("{ajax}/upload-artifact?run_uuid={run_id}&path=big.bin"),
        vec![b'x'; 11 * 1024 * 1024],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Artifact size is too large"),
        "{body}"
    );

    // The MLflow surface speaks MLflow 3.17.2's protocol; Tarn's own version stays its own.
    let (status, version) = h.get("/ws/default/mlflow/version");
    assert_eq!((status, version.as_str()), (200, Some("3.17.2")));
    let (_, health) = h.get("/api/v1/health");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
}

/// Files under `dir`, relative, as text.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// A run with one artifact uploaded through the MLflow surface of `ws`; the run's id.
fn run_with_artifact(s: &Server, ws: &str, file: &str) -> String {
    let h = s.http();
    let api = format!("/ws/{ws}/mlflow/api/2.0/mlflow");
    let (_, run) = h.post(
        &format!("{api}/runs/create"),
        &serde_json::json!({"experiment_id": "0"}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (status, body) = h.raw(
        "POST",
        &format!(
            "/ws/{ws}/mlflow/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run_id}&path={file}"
        ),
        b"weights".to_vec(),
    );
    assert_eq!(status, 200, "{body}");
    run_id
}

/// Where a workspace's MLflow artifacts go is chosen as `mlflow server --artifacts-destination`
/// chooses it: a folder at creation, another later (new runs' artifacts go there), never a
/// place that does not answer; and `tarn up --artifact-store` for the default workspace.
#[test]
fn a_workspace_artifact_store_is_put_where_asked_and_moved_later() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    s.cli(&[
        "workspace",
        "create",
        "-n",
        "lab",
        "--artifact-store",
        first.to_str().unwrap(),
    ])
    .success();
    let run = run_with_artifact(&s, "lab", "model.bin");
    assert!(
        files_under(&first)
            .iter()
            .any(|f| f.contains(&run) && f.ends_with("model.bin")),
        "{:?}",
        files_under(&first)
    );
    s.cli(&[
        "workspace",
        "update",
        "-n",
        "lab",
        "--artifact-store",
        second.to_str().unwrap(),
    ])
    .success();
    let later = run_with_artifact(&s, "lab", "later.bin");
    assert!(
        files_under(&second).iter().any(|f| f.contains(&later)),
        "{:?}",
        files_under(&second)
    );
    // A bucket that does not answer is refused, and the store stays where it was.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = dir.path().join("dead.yml");
    std::fs::write(
        &dead,
        format!(
            "name: x\ntype: s3\nbucket: b\nendpoint_url: http://127.0.0.1:{closed}\ncredentials:\n  access_key_id: k\n  secret_access_key: never-shown\n"
        ),
    )
    .unwrap();
    let out = s
        .cli(&[
            "workspace",
            "update",
            "-n",
            "lab",
            "--artifact-store",
            dead.to_str().unwrap(),
        ])
        .failure();
    assert!(!out.stderr.contains("never-shown"), "{}", out.stderr);
    let store = s
        .cli(&[
            "datastore",
            "show",
            "-n",
            "workspaceartifactstore",
            "-w",
            "lab",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(store["spec"]["path"], second.to_str().unwrap(), "{store:#}");

    // `tarn up --artifact-store DIR`: the default workspace's artifacts go there.
    let home = Home::temp();
    let chosen = dir.path().join("chosen");
    let up = Server::start_with(home, &[], &["--artifact-store", chosen.to_str().unwrap()]);
    let run = run_with_artifact(&up, "default", "m.bin");
    assert!(
        files_under(&chosen).iter().any(|f| f.contains(&run)),
        "{:?}",
        files_under(&chosen)
    );
}

/// A `log-batch` is written whole or not at all: a metric naming a logged model that does not
/// exist refuses the request, and none of its metrics, params or tags are kept — through the
/// fast path (a well-formed batch) and `log-metric` alike.
#[test]
fn a_batch_naming_an_unknown_logged_model_changes_nothing() {
    let s = Server::start();
    let h = s.http();
    let api = "/ws/default/mlflow/api/2.0/mlflow";
    let (_, run) = h.post(
        &format!("{api}/runs/create"),
        &serde_json::json!({"experiment_id": "0"}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let before = h.get(&format!("{api}/runs/get?run_id={run_id}")).1;
    let (status, body) = h.post(
        &format!("{api}/runs/log-batch"),
        &serde_json::json!({
            "run_id": run_id,
            "metrics": [
                {"key": "loss", "value": 0.5, "timestamp": 1, "step": 0},
                {"key": "acc", "value": 0.9, "timestamp": 1, "step": 0, "model_id": "m-does-not-exist"}
            ],
            "params": [{"key": "lr", "value": "0.1"}],
            "tags": [{"key": "stage", "value": "dev"}]
        }),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = h.post(
        &format!("{api}/runs/log-metric"),
        &serde_json::json!({"run_id": run_id, "key": "f1", "value": 0.3, "timestamp": 2, "model_id": "m-does-not-exist"}),
    );
    assert_eq!(status, 404, "{body}");
    let after = h.get(&format!("{api}/runs/get?run_id={run_id}")).1;
    assert_eq!(before["run"]["data"], after["run"]["data"], "{after:#}");
    let (_, history) = h.get(&format!(
        "{api}/metrics/get-history?run_id={run_id}&metric_key=loss"
    ));
    assert!(
        history["metrics"].as_array().is_none_or(Vec::is_empty),
        "{history}"
    );
}
