//! Generated requests against the whole API. Schemathesis (PyPI) reads the served OpenAPI
//! document and sends each operation generated valid and invalid requests, with path
//! parameters that exist (a resource named `fuzz` in every collection, a job, a user, a token,
//! a custom role, a file): no answer may be a server error. MLflow's surface is not in that
//! document: every MLflow route gets malformed bodies — wrong types, a huge string, deep
//! nesting, bad UTF-8, not JSON at all — and must answer each with a 4xx in MLflow's error
//! format, promptly.

use crate::harness::Server;
use crate::jobs::{HOST_ENV, submit, wait_end, write};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The resources the generated requests name: `fuzz` everywhere.
fn fixtures(s: &Server, dir: &Path) -> (String, String) {
    let files = [
        ("compute.yml", "name: fuzz\ntype: amlcompute\nmax_instances: 1\n".to_string()),
        (
            "datastore.yml",
            format!(
                "name: fuzz\ntype: local\npath: {}\n",
                dir.join("store").display()
            ),
        ),
        (
            "environment.yml",
            "name: fuzz\nversion: \"1\"\nimage: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04\n"
                .to_string(),
        ),
        (
            "data.yml",
            "name: fuzz\nversion: \"1\"\ntype: uri_file\npath: azureml://datastores/fuzz/paths/fuzz.txt\n"
                .to_string(),
        ),
        (
            "model.yml",
            "name: fuzz\nversion: \"1\"\ntype: mlflow_model\npath: azureml://datastores/fuzz/paths/model/\n".to_string(),
        ),
        (
            "component.yml",
            "name: fuzz\nversion: \"1\"\ntype: command\ncommand: echo hi\nenvironment: azureml:fuzz:1\n"
                .to_string(),
        ),
        ("online.yml", "name: fuzz\nauth_mode: key\n".to_string()),
        ("batch.yml", "name: fuzz\n".to_string()),
    ];
    let group = |f: &str| match f {
        "compute.yml" => "compute",
        "datastore.yml" => "datastore",
        "environment.yml" => "environment",
        "data.yml" => "data",
        "model.yml" => "model",
        "component.yml" => "component",
        "online.yml" => "online-endpoint",
        _ => "batch-endpoint",
    };
    std::fs::create_dir_all(dir.join("store/model")).unwrap();
    std::fs::write(dir.join("store/fuzz.txt"), "fuzz").unwrap();
    std::fs::copy(
        crate::harness::corpus("valid").join("model/MLmodel"),
        dir.join("store/model/MLmodel"),
    )
    .unwrap();
    for (file, text) in files {
        let path = write(dir, file, &text);
        s.create_from(group(file), &path, &[]);
    }
    let deployment = write(
        dir,
        "batch-deployment.yml",
        "name: fuzz\nendpoint_name: fuzz\ntype: model\nmodel: azureml:fuzz:1\ncompute: azureml:fuzz\n",
    );
    s.create_from("batch-deployment", &deployment, &[]);
    let job = write(
        dir,
        "job.yml",
        &format!("name: fuzz\ncommand: echo fuzz\n{HOST_ENV}"),
    );
    assert_eq!(submit(s, &job, &[]), "fuzz");
    wait_end(s, "fuzz");
    s.user_with_role("fuzzer", "Reader", "default");
    let token = s
        .cli(&["token", "create", "--description", "fuzz", "-o", "json"])
        .success()
        .json();
    let role = write(
        dir,
        "role.json",
        r#"{"Name": "fuzz", "Actions": ["Microsoft.MachineLearningServices/workspaces/*/read"], "NotActions": []}"#,
    );
    s.create_from("role", &role, &[]);
    (
        token["id"].as_str().unwrap().to_string(),
        "fuzz.txt".to_string(),
    )
}

#[test]
fn generated_requests_to_the_api_get_no_server_error() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (token_id, file) = fixtures(&s, dir.path());
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[parameters]
"path.workspace" = "default"
"path.name" = "fuzz"
"path.endpoint" = "fuzz"
"path.deployment" = "fuzz"
"path.user" = "fuzzer"
"path.group" = "fuzzers"
"path.id" = "{token_id}"
"path.path" = "{file}"
"#
        ),
    )
    .unwrap();
    let schemathesis = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/schemathesis");
    let out = std::process::Command::new(&schemathesis)
        .current_dir(dir.path())
        .args([
            "run",
            &format!("{}/api/v1/openapi.json", s.url),
            "-H",
            &format!("Authorization: Bearer {}", s.token),
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--request-timeout",
            "20",
            "--seed",
            "1",
            "--no-color",
            // Operations that would take the fixtures (or the caller) away mid-run.
            "--exclude-method",
            "DELETE",
            "--exclude-path-regex",
            "/(disable|login|runner/binary|bundle)$",
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", schemathesis.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found server errors:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The deleting operations, once each at the end, on what exists.
    let http = s.http();
    for path in [
        "/api/v1/workspaces/default/computes/fuzz",
        "/api/v1/workspaces/default/batch-endpoints/fuzz/deployments/fuzz",
        "/api/v1/workspaces/default/online-endpoints/fuzz",
        "/api/v1/workspaces/default/datastores/fuzz/paths/fuzz.txt",
        &format!("/api/v1/tokens/{token_id}"),
        "/api/v1/role-definitions/fuzz",
        "/api/v1/users/fuzzer",
    ] {
        let (code, reply) = http.call("DELETE", path, None);
        assert!(code < 500, "DELETE {path}: {code} {reply}");
    }
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("generated") || l.contains("passed"))
        .collect();
    eprintln!("schemathesis: {summary:?}");
}

/// MLflow's routes, as its REST API names them (method, path after `/api/2.0/mlflow/`).
const MLFLOW_ROUTES: &[(&str, &str)] = &[
    ("POST", "experiments/create"),
    ("POST", "experiments/search"),
    ("GET", "experiments/get"),
    ("GET", "experiments/get-by-name"),
    ("POST", "experiments/delete"),
    ("POST", "experiments/restore"),
    ("POST", "experiments/update"),
    ("POST", "experiments/set-experiment-tag"),
    ("POST", "experiments/delete-experiment-tag"),
    ("POST", "runs/create"),
    ("POST", "runs/update"),
    ("POST", "runs/delete"),
    ("POST", "runs/restore"),
    ("GET", "runs/get"),
    ("POST", "runs/search"),
    ("POST", "runs/log-metric"),
    ("POST", "runs/log-parameter"),
    ("POST", "runs/set-tag"),
    ("POST", "runs/delete-tag"),
    ("POST", "runs/log-batch"),
    ("POST", "runs/log-model"),
    ("POST", "runs/log-inputs"),
    ("POST", "runs/outputs"),
    ("GET", "metrics/get-history"),
    ("GET", "metrics/get-history-bulk-interval"),
    ("GET", "artifacts/list"),
    ("POST", "registered-models/create"),
    ("GET", "registered-models/get"),
    ("PATCH", "registered-models/update"),
    ("POST", "registered-models/rename"),
    ("DELETE", "registered-models/delete"),
    ("GET", "registered-models/search"),
    ("POST", "registered-models/get-latest-versions"),
    ("POST", "registered-models/set-tag"),
    ("DELETE", "registered-models/delete-tag"),
    ("POST", "registered-models/alias"),
    ("DELETE", "registered-models/alias"),
    ("GET", "registered-models/alias"),
    ("POST", "model-versions/create"),
    ("GET", "model-versions/get"),
    ("PATCH", "model-versions/update"),
    ("DELETE", "model-versions/delete"),
    ("GET", "model-versions/search"),
    ("GET", "model-versions/get-download-uri"),
    ("POST", "model-versions/transition-stage"),
    ("POST", "model-versions/set-tag"),
    ("DELETE", "model-versions/delete-tag"),
    ("POST", "logged-models"),
    ("GET", "logged-models/m-0123456789abcdef0123456789abcdef"),
    ("PATCH", "logged-models/m-0123456789abcdef0123456789abcdef"),
    ("POST", "logged-models/search"),
    (
        "PATCH",
        "logged-models/m-0123456789abcdef0123456789abcdef/tags",
    ),
    (
        "POST",
        "logged-models/m-0123456789abcdef0123456789abcdef/params",
    ),
];

/// Malformed bodies: each names its kind, for the failure message.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let wrong_types = serde_json::json!({
        "experiment_id": {"a": 1}, "experiment_ids": "0", "run_id": [1], "run_uuid": 7,
        "name": 12, "new_name": [], "key": [], "value": {}, "timestamp": "soon", "step": "x",
        "max_results": "many", "filter": 5, "filter_string": {}, "order_by": 3, "page_token": 7,
        "tags": "x", "metrics": 5, "params": {"a": 1}, "datasets": "d", "source": 1,
        "version": [], "stage": 2, "alias": {}, "description": [], "status": 9, "model_id": 1,
        "start_time": "later", "end_time": [], "lifecycle_stage": 0, "artifact_location": 1,
    });
    let mut deep = String::new();
    for _ in 0..100_000 {
        deep.push('[');
    }
    vec![
        ("wrong types", wrong_types.to_string().into_bytes()),
        ("a JSON array", b"[1, 2, 3]".to_vec()),
        (
            "a huge string",
            format!(r#"{{"name": "{}", "key": "k"}}"#, "x".repeat(5 << 20)).into_bytes(),
        ),
        (
            "deep nesting",
            format!(r#"{{"tags": {deep}}}"#).into_bytes(),
        ),
        (
            "bad UTF-8",
            b"{\"name\": \"\xff\xfe\xfd\", \"key\": \"\xc3\x28\"}".to_vec(),
        ),
        ("not JSON", b"name=fuzz&key=k".to_vec()),
    ]
}

#[test]
fn malformed_mlflow_requests_get_mlflow_errors_never_a_server_error() {
    let s = Server::start();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("{}/ws/default/mlflow/api/2.0/mlflow", s.url);
    let bodies = malformed_bodies();
    let mut failures = vec![];
    for (method, route) in MLFLOW_ROUTES {
        let url = format!("{base}/{route}");
        let mut attempts: Vec<(String, reqwest::blocking::RequestBuilder)> = vec![];
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let is_get = method == reqwest::Method::GET;
        if is_get {
            // GET routes read their query: malformed values, a huge one.
            for query in [
                "max_results=many&run_id=%FF%FE&experiment_id=&name=%00".to_string(),
                format!("filter={0}&name={0}&run_id={0}", "y".repeat(8_000)),
            ] {
                attempts.push((
                    format!("query {}", &query[..20]),
                    client
                        .request(method.clone(), format!("{url}?{query}"))
                        .bearer_auth(&s.token),
                ));
            }
        } else {
            for (what, body) in &bodies {
                attempts.push((
                    what.to_string(),
                    client
                        .request(method.clone(), &url)
                        .bearer_auth(&s.token)
                        .header("content-type", "application/json")
                        .body(body.clone()),
                ));
            }
        }
        for (what, request) in attempts {
            let reply = match request.send() {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{method} {route} with {what}: no answer ({e})"));
                    continue;
                }
            };
            let status = reply.status().as_u16();
            let text = reply.text().unwrap_or_default();
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let mlflow_error = (400..500).contains(&status)
                && json["error_code"].as_str().is_some_and(|c| !c.is_empty())
                && json["message"].is_string();
            // A query MLflow reads as valid may succeed; a malformed body never does.
            let ok = mlflow_error || (is_get && (200..300).contains(&status));
            if !ok {
                failures.push(format!(
                    "{method} {route} with {what}: {status} {}",
                    &text[..text.len().min(300)]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} malformed requests were not answered as MLflow answers them:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
