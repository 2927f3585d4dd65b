//! Every resource type round-trips through the CLI; assets are versioned and immutable;
//! references resolve; deployments live under their endpoints.

use crate::harness::{Server, corpus};
use serde_json::Value;

/// The valid corpus in dependency order: (CLI group, file, endpoint for deployments).
const ORDER: &[(&str, &str)] = &[
    ("compute", "compute-cluster.yml"),
    ("compute", "compute-instance.yml"),
    ("compute", "compute-kubernetes.yml"),
    ("compute", "compute-vm.yml"),
    ("compute", "compute-synapse.yml"),
    ("datastore", "datastore-blob.yml"),
    ("datastore", "datastore-file.yml"),
    ("datastore", "datastore-adls2.yml"),
    ("datastore", "datastore-adls1.yml"),
    ("datastore", "datastore-s3.yml"),
    ("datastore", "datastore-gcs.yml"),
    ("datastore", "datastore-local.yml"),
    ("data", "data-file.yml"),
    ("data", "data-folder.yml"),
    ("data", "data-mltable.yml"),
    ("environment", "environment.yml"),
    ("environment", "environment-build.yml"),
    ("component", "component-command.yml"),
    ("model", "model-custom.yml"),
    ("model", "model-mlflow.yml"),
    ("model", "model-triton.yml"),
    ("online-endpoint", "online-endpoint.yml"),
    ("online-deployment", "online-deployment.yml"),
    ("online-deployment", "online-deployment-k8s.yml"),
    ("batch-endpoint", "batch-endpoint.yml"),
    ("batch-deployment", "batch-deployment.yml"),
    ("batch-deployment", "batch-deployment-legacy.yml"),
    ("batch-deployment", "batch-deployment-pipeline.yml"),
];

/// Fields the server fills in or pins on create (versions, `@latest` references).
const SERVER_SET: &[&str] = &[
    "version",
    "model",
    "environment",
    "component",
    "endpoint_name",
];
/// Fields holding local paths, which the CLI uploads and replaces with datastore URIs.
const UPLOADED: &[&str] = &["path", "code", "code_configuration"];

fn path(file: &str) -> String {
    corpus("valid").join(file).display().to_string()
}

#[test]
fn every_resource_type_round_trips() {
    let s = Server::start();
    for (group, file) in ORDER {
        let f = path(file);
        // Online deployments are stored here, not served (endpoints.rs serves them): no waiting.
        let no_wait: &[&str] = if *group == "online-deployment" {
            &["--no-wait"]
        } else {
            &[]
        };
        let understood = s
            .cli(&["validate", "-f", &f, "-o", "json"])
            .success()
            .json();
        // Models registered from a job's or a run's files need that job or run: the corpus
        // names ones that do not exist here, and that is refused with the reference named.
        if *file == "model-custom.yml" || *file == "model-mlflow.yml" {
            let refused = s.cli(&[group, "create", "-f", &f, "-o", "json"]).failure();
            assert!(
                refused.stderr.contains("does not exist"),
                "{file}: {}",
                refused.stderr
            );
            // The deployments below use churn-model: register it from local files instead.
            if *file == "model-custom.yml" {
                s.cli(&[group, "create", "-f", &f, "--set", "path=./models/triton"])
                    .success();
            }
            continue;
        }
        // The corpus points at storage that does not exist: the connectivity check is
        // datastores.rs's subject, not this test's.
        let created = s
            .cli(
                &[
                    &[*group, "create", "-f", &f, "--skip-check", "-o", "json"],
                    no_wait,
                ]
                .concat(),
            )
            .success()
            .json();
        let name = created["name"].as_str().unwrap().to_string();
        assert_eq!(created["kind"], *group, "{file}");
        for (k, v) in understood.as_object().unwrap() {
            if k == "kind" || SERVER_SET.contains(&k.as_str()) {
                continue;
            }
            if UPLOADED.contains(&k.as_str()) && created["spec"][k] != *v {
                let stored = created["spec"][k].to_string();
                assert!(
                    stored.contains("azureml://datastores/workspaceblobstore/paths/LocalUpload/"),
                    "{file}: {k} was not uploaded: {stored}"
                );
                continue;
            }
            assert_eq!(
                &created["spec"][k], v,
                "{file}: field {k} was not stored as understood"
            );
        }
        let mut show_args = vec![*group, "show", "-n", &name, "-o", "json"];
        let endpoint = created["endpoint_name"].as_str().map(str::to_string);
        if let Some(ep) = &endpoint {
            show_args.extend(["-e", ep]);
        }
        let shown = s.cli(&show_args).success().json();
        assert_eq!(
            shown["spec"], created["spec"],
            "{file}: show differs from create"
        );

        let mut list_args = vec![*group, "list", "-o", "json"];
        if let Some(ep) = &endpoint {
            list_args.extend(["-e", ep]);
        }
        let listed = s.cli(&list_args).success().json();
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == name.as_str()),
            "{file}: {name} not listed"
        );

        let mut update_args = vec![
            *group,
            "update",
            "-n",
            &name,
            "--set",
            "description=changed by test",
            "--skip-check",
            "-o",
            "json",
        ];
        if let Some(ep) = &endpoint {
            update_args.extend(["-e", ep]);
        }
        update_args.extend(no_wait);
        let updated = s.cli(&update_args).success().json();
        assert_eq!(updated["spec"]["description"], "changed by test", "{file}");
        assert_eq!(
            s.cli(&show_args).success().json()["spec"]["description"],
            "changed by test",
            "{file}"
        );
    }
    // A model that deployments use cannot be renamed through MLflow: their next rollout would
    // not find it. Nothing moves.
    let (status, body) = s.http().post(
        "/ws/default/mlflow/api/2.0/mlflow/registered-models/rename",
        &serde_json::json!({"name": "churn-model", "new_name": "churn-model-2"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is used by deployment"),
        "{body}"
    );
    s.cli(&["model", "show", "-n", "churn-model"]).success();
    s.cli(&["model", "show", "-n", "churn-model-2"]).failure();
    // Jobs are not stored until the scheduler exists, but every job document parses.
    for job in ["job-command.yml", "job-sweep.yml", "job-pipeline.yml"] {
        let understood = s
            .cli(&["validate", "-f", &path(job), "-o", "json"])
            .success()
            .json();
        assert_eq!(understood["kind"], "job", "{job}");
    }
}

#[test]
fn assets_are_versioned_and_immutable() {
    let s = Server::start();
    let f = path("data-file.yml");
    let v1 = s
        .cli(&["data", "create", "-f", &f, "-o", "json"])
        .success()
        .json();
    let v2 = s
        .cli(&["data", "create", "-f", &f, "-o", "json"])
        .success()
        .json();
    assert_eq!(
        (v1["version"].as_str(), v2["version"].as_str()),
        (Some("1"), Some("2")),
        "versions are numbered when omitted"
    );

    let latest = s
        .cli(&["data", "show", "-n", "churn-csv", "-o", "json"])
        .success()
        .json();
    assert_eq!(latest["version"], "2");
    let first = s
        .cli(&["data", "show", "-n", "churn-csv", "-v", "1", "-o", "json"])
        .success()
        .json();
    assert_eq!(first["version"], "1");

    let again = s
        .cli(&["data", "create", "-f", &f, "--set", "version=2"])
        .failure();
    assert!(
        again.stderr.contains("already exists") && again.stderr.contains("immutable"),
        "{}",
        again.stderr
    );

    let changed = s
        .cli(&[
            "data",
            "update",
            "-n",
            "churn-csv",
            "-v",
            "1",
            "--set",
            "path=./elsewhere",
        ])
        .failure();
    assert!(changed.stderr.contains("immutable"), "{}", changed.stderr);
    s.cli(&[
        "data",
        "update",
        "-n",
        "churn-csv",
        "-v",
        "1",
        "--set",
        "tags.reviewed=yes",
    ])
    .success();
    let renamed = s
        .cli(&[
            "data",
            "update",
            "-n",
            "churn-csv",
            "-v",
            "1",
            "--set",
            "name=other",
        ])
        .failure();
    assert!(renamed.stderr.contains("renamed"), "{}", renamed.stderr);

    let deleted = s
        .cli(&["data", "delete", "-n", "churn-csv", "--yes"])
        .failure();
    assert!(deleted.stderr.contains("archive"), "{}", deleted.stderr);

    s.cli(&["data", "archive", "-n", "churn-csv", "-v", "2"])
        .success();
    assert_eq!(
        s.cli(&["data", "show", "-n", "churn-csv", "-o", "json"])
            .success()
            .json()["version"],
        "1",
        "@latest skips archived versions"
    );
    let all = s
        .cli(&[
            "data",
            "list",
            "-n",
            "churn-csv",
            "--include-archived",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    s.cli(&["data", "archive", "-n", "churn-csv"]).success();
    assert_eq!(
        s.cli(&["data", "list", "-o", "json"]).success().json(),
        Value::Array(vec![])
    );
    s.cli(&["data", "restore", "-n", "churn-csv"]).success();
    assert_eq!(
        s.cli(&["data", "show", "-n", "churn-csv", "-o", "json"])
            .success()
            .json()["version"],
        "2"
    );
}

#[test]
fn references_must_exist_and_latest_is_pinned() {
    let s = Server::start();
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        &path("online-endpoint.yml"),
    ])
    .success();
    let missing = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            &path("online-deployment.yml"),
        ])
        .failure();
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
    assert_eq!(
        s.cli(&[
            "online-deployment",
            "list",
            "-e",
            "churn-endpoint",
            "-o",
            "json"
        ])
        .success()
        .json(),
        Value::Array(vec![])
    );

    // (The corpus model points at a job that does not exist here; local files stand in.)
    let local = ["--set", "path=./models/triton"];
    s.cli(
        &[
            &["model", "create", "-f", &path("model-custom.yml")][..],
            &local,
        ]
        .concat(),
    )
    .success();
    s.cli(
        &[
            &["model", "create", "-f", &path("model-custom.yml")][..],
            &local,
        ]
        .concat(),
    )
    .success();
    s.cli(&["environment", "create", "-f", &path("environment.yml")])
        .success();
    let blue = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            &path("online-deployment.yml"),
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        blue["spec"]["model"], "azureml:churn-model:2",
        "@latest is pinned at creation"
    );
    assert_eq!(blue["spec"]["environment"], "azureml:sklearn-env:1");

    // --endpoint-name overrides the file, as in `az ml`; the endpoint must exist.
    let nowhere = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            &path("online-deployment.yml"),
            "--endpoint-name",
            "no-such-ep",
        ])
        .failure();
    assert!(
        nowhere.stderr.contains("does not exist"),
        "{}",
        nowhere.stderr
    );

    s.cli(&[
        "online-endpoint",
        "update",
        "-n",
        "churn-endpoint",
        "--set",
        "traffic.blue=100",
    ])
    .success();
    let ghost = s
        .cli(&[
            "online-endpoint",
            "update",
            "-n",
            "churn-endpoint",
            "--set",
            "traffic.blue=50",
            "--set",
            "traffic.ghost=50",
        ])
        .failure();
    assert!(ghost.stderr.contains("ghost"), "{}", ghost.stderr);

    let confirm = s
        .cli(&["online-endpoint", "delete", "-n", "churn-endpoint"])
        .failure();
    assert!(confirm.stderr.contains("--yes"), "{}", confirm.stderr);
    s.cli(&["online-endpoint", "delete", "-n", "churn-endpoint", "--yes"])
        .success();
    s.cli(&[
        "online-deployment",
        "show",
        "-n",
        "blue",
        "-e",
        "churn-endpoint",
    ])
    .failure();
}

#[test]
fn default_datastores_cannot_be_removed_or_changed() {
    let s = Server::start();
    let r = s
        .cli(&["datastore", "delete", "-n", "workspaceblobstore", "--yes"])
        .failure();
    assert!(r.stderr.contains("default datastore"), "{}", r.stderr);
    s.cli(&[
        "datastore",
        "update",
        "-n",
        "workspaceblobstore",
        "--set",
        "path=/etc",
    ])
    .failure();
    let shown = s
        .cli(&[
            "datastore",
            "show",
            "-n",
            "workspaceblobstore",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_ne!(shown["spec"]["path"], "/etc");
}
