//! A request happens whole or not at all: each request below writes several things when it
//! succeeds, and fails part-way through on bad input. After each failure, everything a user
//! can read of the workspace — resources, registered models and versions, experiments, runs
//! and their data, jobs, roles — is exactly what it was before.

use crate::harness::{Server, corpus};
use crate::jobs::{HOST_ENV, write};
use serde_json::{Value, json};

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";

/// Everything a user can read of the default workspace.
fn state(s: &Server) -> Value {
    let http = s.http();
    let mut out = serde_json::Map::new();
    for collection in [
        "datastores",
        "computes",
        "environments",
        "models",
        "data",
        "components",
        "online-endpoints",
        "jobs",
    ] {
        let (code, list) = http.get(&format!("/api/v1/workspaces/default/{collection}"));
        assert_eq!(code, 200, "{collection}: {list}");
        out.insert(collection.into(), list);
    }
    let (_, endpoints) = http.get("/api/v1/workspaces/default/online-endpoints");
    for e in endpoints["value"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap();
        let (_, deployments) = http.get(&format!(
            "/api/v1/workspaces/default/online-endpoints/{name}/deployments"
        ));
        out.insert(format!("deployments of {name}"), deployments);
    }
    out.insert("workspaces".into(), http.get("/api/v1/workspaces").1);
    out.insert(
        "roles".into(),
        http.get("/api/v1/workspaces/default/roles").1,
    );
    for (rpc, body) in [
        ("registered-models/search", json!({"max_results": 1000})),
        (
            "experiments/search",
            json!({"max_results": 1000, "view_type": "ALL"}),
        ),
    ] {
        let (code, reply) = http.post(&format!("{MLFLOW}/{rpc}"), &body);
        assert_eq!(code, 200, "{rpc}: {reply}");
        out.insert(rpc.into(), reply);
    }
    let (_, versions) = http.get(&format!("{MLFLOW}/model-versions/search?max_results=1000"));
    out.insert("model-versions".into(), versions);
    let (_, experiments) = http.post(
        &format!("{MLFLOW}/experiments/search"),
        &json!({"max_results": 1000, "view_type": "ALL"}),
    );
    let ids: Vec<Value> = experiments["experiments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["experiment_id"].clone())
        .collect();
    let (_, runs) = http.post(
        &format!("{MLFLOW}/runs/search"),
        &json!({"experiment_ids": ids, "max_results": 1000, "run_view_type": "ALL"}),
    );
    out.insert("runs".into(), runs);
    Value::Object(out)
}

/// Runs `bad`, which must fail, and checks that nothing changed.
fn changes_nothing(s: &Server, what: &str, bad: impl FnOnce() -> (u16, Value)) {
    let before = state(s);
    let (code, reply) = bad();
    assert!(
        (400..500).contains(&code),
        "{what}: refused with a 4xx, got {code}: {reply}"
    );
    let after = state(s);
    if before != after {
        let (b, a) = (before.as_object().unwrap(), after.as_object().unwrap());
        let changed: Vec<&String> = b.keys().filter(|k| b[*k] != a[*k]).collect();
        panic!(
            "{what} ({code} {reply}) changed {changed:?}:\nbefore {}\nafter  {}",
            changed
                .iter()
                .map(|k| b[*k].to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            changed
                .iter()
                .map(|k| a[*k].to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn cli_code(run: crate::harness::Run) -> (u16, Value) {
    assert!(!run.ok, "expected a failure: {}", run.stdout);
    (400, json!(run.stderr))
}

#[test]
fn bad_input_changes_nothing_in_requests_that_write_several_things() {
    let s = Server::start();
    let http = s.http();
    let dir = tempfile::tempdir().unwrap();

    // A registered model with two versions, one in Production; a model known only as an asset.
    let post = |rpc: &str, body: Value| {
        let (code, reply) = http.post(&format!("{MLFLOW}/{rpc}"), &body);
        assert_eq!(code, 200, "{rpc}: {reply}");
        reply
    };
    post("registered-models/create", json!({"name": "churn"}));
    for _ in 0..2 {
        post(
            "model-versions/create",
            json!({"name": "churn", "source": "mlflow-artifacts:/churn/model"}),
        );
    }
    post(
        "model-versions/transition-stage",
        json!({"name": "churn", "version": "1", "stage": "Production", "archive_existing_versions": false}),
    );
    let model = write(
        dir.path(),
        "model.yml",
        &format!(
            "name: asset-model\npath: {}\n",
            corpus("valid").join("model").display()
        ),
    );
    s.create_from("model", &model, &[]);
    let asset_model = s.cli(&["model", "list", "-o", "json"]).success().json()[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, exp) = http.post(
        &format!("{MLFLOW}/experiments/create"),
        &json!({"name": "atomic"}),
    );
    let (_, run) = http.post(
        &format!("{MLFLOW}/runs/create"),
        &json!({"experiment_id": exp["experiment_id"], "start_time": 1}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let endpoint = write(
        dir.path(),
        "endpoint.yml",
        "name: atomic-ep\nauth_mode: key\n",
    );
    s.create_from("online-endpoint", &endpoint, &[]);

    changes_nothing(
        &s,
        "promoting a version that does not exist, archiving the others",
        || {
            http.post(
                &format!("{MLFLOW}/model-versions/transition-stage"),
                &json!({"name": "churn", "version": "99", "stage": "Production", "archive_existing_versions": true}),
            )
        },
    );
    changes_nothing(&s, "renaming a model to a name that is taken", || {
        http.post(
            &format!("{MLFLOW}/registered-models/rename"),
            &json!({"name": asset_model, "new_name": "churn"}),
        )
    });
    changes_nothing(&s, "a batch whose metric names an unknown model", || {
        http.post(
            &format!("{MLFLOW}/runs/log-batch"),
            &json!({"run_id": run_id,
                    "params": [{"key": "lr", "value": "0.1"}],
                    "metrics": [{"key": "acc", "value": 1.0, "timestamp": 1, "step": 0, "model_id": "m-unknown"}]}),
        )
    });
    changes_nothing(&s, "a batch with one parameter too long", || {
        http.post(
            &format!("{MLFLOW}/runs/log-batch"),
            &json!({"run_id": run_id,
                    "params": [{"key": "ok", "value": "1"}, {"key": "long", "value": "x".repeat(6001)}],
                    "metrics": [{"key": "acc", "value": 1.0, "timestamp": 1, "step": 0}]}),
        )
    });
    changes_nothing(&s, "a datastore whose storage does not answer", || {
        let ds = write(
            dir.path(),
            "dead.yml",
            "name: dead\ntype: azure_blob\naccount_name: devstoreaccount1\ncontainer_name: c\n\
             endpoint: 127.0.0.1:1\nprotocol: http\ncredentials:\n  account_key: a2V5\n",
        );
        cli_code(s.cli(&["datastore", "create", "-f", ds.to_str().unwrap()]))
    });
    changes_nothing(
        &s,
        "a job on a compute that does not exist, in a new experiment",
        || {
            let job = write(
                dir.path(),
                "job.yml",
                &format!(
                    "command: echo hi\nexperiment_name: brand-new\ncompute: azureml:nowhere\n{HOST_ENV}"
                ),
            );
            cli_code(s.cli(&["job", "create", "-f", job.to_str().unwrap()]))
        },
    );
    changes_nothing(&s, "traffic to a deployment that does not exist", || {
        let ep = write(
            dir.path(),
            "endpoint2.yml",
            "name: atomic-ep\nauth_mode: key\ntraffic:\n  nowhere: 100\n",
        );
        cli_code(s.cli(&["online-endpoint", "update", "-f", ep.to_str().unwrap()]))
    });
    changes_nothing(&s, "a role that does not exist", || {
        cli_code(s.cli(&[
            "role", "assign", "--user", "admin", "--role", "Wizard", "-w", "default",
        ]))
    });
    changes_nothing(
        &s,
        "a workspace whose artifact store does not answer",
        || {
            let store = write(
                dir.path(),
                "art.yml",
                "name: art\ntype: azure_blob\naccount_name: devstoreaccount1\ncontainer_name: c\n\
             endpoint: 127.0.0.1:1\nprotocol: http\ncredentials:\n  account_key: a2V5\n",
            );
            cli_code(s.cli(&[
                "workspace",
                "create",
                "-n",
                "second",
                "--artifact-store",
                store.to_str().unwrap(),
            ]))
        },
    );
    changes_nothing(
        &s,
        "a version of a registered model that does not exist",
        || {
            http.post(
                &format!("{MLFLOW}/model-versions/create"),
                &json!({"name": "nonexistent", "source": "mlflow-artifacts:/x/model"}),
            )
        },
    );
    changes_nothing(&s, "a version whose logged model does not exist", || {
        http.post(
            &format!("{MLFLOW}/model-versions/create"),
            &json!({"name": "churn", "source": "models:/m-0123456789abcdef0123456789abcdef", "model_id": "m-0123456789abcdef0123456789abcdef"}),
        )
    });
}
