//! Registries across workspaces, as teams share through them: a model made in one workspace
//! and shared into a registry (its files copied, its lineage kept), a component created in the
//! registry with its code, both used from another workspace's job and pipeline by
//! `azureml://registries/…` — by someone with a registry role, and refused to someone with a
//! role in that workspace only. What a registry is not (jobs, computes) is refused plainly.

use crate::harness::Server;
use crate::jobs::write;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn corpus(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/azml-corpus/cli/resources/registry")
        .join(file)
}

const REGISTRY: &str = "shared-assets";

#[test]
fn registries_share_assets_across_workspaces_to_those_with_a_role_in_them() {
    let s = Server::start();
    for ws in ["team-a", "team-b"] {
        s.cli(&["workspace", "create", "--name", ws]).success();
    }
    let created = s
        .cli(&[
            "registry",
            "create",
            "-f",
            corpus("registry.yml").to_str().unwrap(),
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(created["uri"], format!("azureml://registries/{REGISTRY}"));
    // A registry is not a workspace: not listed as one, no jobs or computes in it.
    let workspaces = s.cli(&["workspace", "list", "-o", "json"]).success().stdout;
    assert!(!workspaces.contains(REGISTRY), "{workspaces}");
    let refused = s
        .cli(&["job", "list", "-w", &format!("registry:{REGISTRY}")])
        .failure();
    assert!(
        refused
            .stderr
            .contains("holds models, components, environments and data"),
        "{}",
        refused.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let cluster = write(dir.path(), "cpu.yml", "name: cpu\ntype: amlcompute\n");
    let refused = s
        .cli(&[
            "compute",
            "create",
            "-f",
            cluster.to_str().unwrap(),
            "--registry-name",
            REGISTRY,
        ])
        .failure();
    assert!(
        refused
            .stderr
            .contains("holds models, components, environments and data"),
        "{}",
        refused.stderr
    );

    // Alice works in team-a and adds to the registry; Bob works in team-b only; Carol works in
    // team-b and may read the registry.
    let alice = s.user_with_role("alice", "AzureML Data Scientist", "team-a");
    s.cli(&[
        "role",
        "assign",
        "--user",
        "alice",
        "--role",
        "Contributor",
        "--registry-name",
        REGISTRY,
    ])
    .success();
    let bob = s.user_with_role("bob", "AzureML Data Scientist", "team-b");
    let carol = s.user_with_role("carol", "AzureML Data Scientist", "team-b");
    s.cli(&[
        "role",
        "assign",
        "--user",
        "carol",
        "--role",
        "Reader",
        "--registry-name",
        REGISTRY,
    ])
    .success();

    // A model made in team-a, shared into the registry under another name.
    write(dir.path(), "model/weights.txt", "weights from team-a\n");
    let model = write(
        dir.path(),
        "model.yml",
        "name: churn\nversion: 4\ntype: custom_model\npath: ./model\ndescription: churn model\n",
    );
    s.cli_as(
        &alice,
        &[
            "model",
            "create",
            "-f",
            model.to_str().unwrap(),
            "-w",
            "team-a",
        ],
    )
    .success();
    let shared = s
        .cli_as(
            &alice,
            &[
                "model",
                "share",
                "-n",
                "churn",
                "-v",
                "4",
                "-w",
                "team-a",
                "--registry-name",
                REGISTRY,
                "--share-with-name",
                "churn-shared",
                "--share-with-version",
                "1",
                "-o",
                "json",
            ],
        )
        .success()
        .json();
    assert_eq!(
        shared["spec"]["properties"]["azureml.shared_from.workspace"], "team-a",
        "{shared:#}"
    );
    assert_eq!(
        shared["spec"]["properties"]["azureml.shared_from.asset"],
        "azureml:churn:4"
    );
    // The registry has its own copy: deleting team-a's files would not touch it.
    let path = shared["spec"]["path"].as_str().unwrap();
    assert!(
        path.contains(&format!("/workspaces/registry:{REGISTRY}/")),
        "{path}"
    );
    // A component created in the registry itself, its code uploaded there.
    s.cli_as(
        &alice,
        &[
            "component",
            "create",
            "-f",
            corpus("prep/prep.yml").to_str().unwrap(),
            "--registry-name",
            REGISTRY,
        ],
    )
    .success();
    // Registry assets are immutable.
    let changed = s
        .cli_as(
            &alice,
            &[
                "model",
                "update",
                "-n",
                "churn-shared",
                "-v",
                "1",
                "--registry-name",
                REGISTRY,
                "--set",
                "path=azureml://datastores/workspaceblobstore/paths/other/",
            ],
        )
        .failure();
    assert!(changed.stderr.contains("immutable"), "{}", changed.stderr);

    // From team-b: a job reading the shared model, and a pipeline whose step is the shared
    // component.
    let job = write(
        dir.path(),
        "read.yml",
        &format!(
            "command: cat ${{{{inputs.model}}}}/weights.txt\ncompute: azureml:local\n\
             environment:\n  image: python\ninputs:\n  model:\n    type: custom_model\n\
             \x20   path: azureml://registries/{REGISTRY}/models/churn-shared/versions/1\n"
        ),
    );
    let pipeline = write(
        dir.path(),
        "pipeline.yml",
        &format!(
            "type: pipeline\nsettings:\n  default_compute: azureml:local\njobs:\n  prep:\n\
             \x20   component: azureml://registries/{REGISTRY}/components/prep/labels/latest\n\
             \x20   inputs:\n      rows: 5\n"
        ),
    );
    // Bob has no role in the registry: his submissions are refused, and he cannot list it.
    for file in [&job, &pipeline] {
        let refused = s
            .cli_as(
                &bob,
                &[
                    "job",
                    "create",
                    "-f",
                    file.to_str().unwrap(),
                    "-w",
                    "team-b",
                ],
            )
            .failure();
        assert!(
            refused.stderr.contains(&format!("registry \"{REGISTRY}\"")),
            "{}",
            refused.stderr
        );
    }
    s.cli_as(&bob, &["model", "list", "--registry-name", REGISTRY])
        .failure();
    // Carol may read it: both run, on the registry's files.
    let read = s
        .cli_as(
            &carol,
            &[
                "job",
                "create",
                "-f",
                job.to_str().unwrap(),
                "-w",
                "team-b",
                "--query",
                "name",
                "-o",
                "tsv",
            ],
        )
        .success()
        .stdout
        .trim()
        .to_string();
    let ended = job_end(&s, &read, "team-b");
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    assert!(job_log(&s, &read, "team-b").contains("weights from team-a"));
    let run = s
        .cli_as(
            &carol,
            &[
                "job",
                "create",
                "-f",
                pipeline.to_str().unwrap(),
                "-w",
                "team-b",
                "--query",
                "name",
                "-o",
                "tsv",
            ],
        )
        .success()
        .stdout
        .trim()
        .to_string();
    let ended = job_end(&s, &run, "team-b");
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let steps = s
        .cli(&[
            "job",
            "list",
            "-w",
            "team-b",
            "--parent-job-name",
            &run,
            "-o",
            "json",
        ])
        .success()
        .json();
    let step = steps[0]["name"].as_str().unwrap().to_string();
    assert!(
        job_log(&s, &step, "team-b").contains("prepared 5 rows with the registry's component"),
        "{}",
        job_log(&s, &step, "team-b")
    );
    // Carol reads but does not add.
    let refused = s
        .cli_as(
            &carol,
            &[
                "model",
                "create",
                "-f",
                model.to_str().unwrap(),
                "--registry-name",
                REGISTRY,
            ],
        )
        .failure();
    assert!(refused.stderr.contains("Reader"), "{}", refused.stderr);
    // Carol lists it with her registry role; it names where each asset came from.
    let models = s
        .cli_as(
            &carol,
            &["model", "list", "--registry-name", REGISTRY, "-o", "json"],
        )
        .success()
        .json();
    assert_eq!(models.as_array().unwrap().len(), 1, "{models:#}");
    let registries = s
        .cli_as(&carol, &["registry", "list", "-o", "json"])
        .success()
        .json();
    assert_eq!(registries[0]["name"], REGISTRY);
    assert_eq!(
        s.cli_as(&bob, &["registry", "list", "-o", "json"])
            .success()
            .json(),
        Value::Array(vec![])
    );

    // Carol serves the shared model from team-b: the replica reads the registry's files.
    write(
        dir.path(),
        "score/score.py",
        "import os\nweights = None\ndef init():\n    global weights\n    for root, _, files in os.walk(os.environ['AZUREML_MODEL_DIR'], followlinks=True):\n        if 'weights.txt' in files:\n            weights = open(os.path.join(root, 'weights.txt')).read().strip()\ndef run(raw):\n    return {'weights': weights}\n",
    );
    let endpoint = write(dir.path(), "ep.yml", "name: churn-ep\nauth_mode: key\n");
    s.cli_as(
        &carol,
        &[
            "online-endpoint",
            "create",
            "-f",
            endpoint.to_str().unwrap(),
            "-w",
            "team-b",
        ],
    )
    .success();
    let deployment = write(
        dir.path(),
        "blue.yml",
        &format!(
            "name: blue\nendpoint_name: churn-ep\nmodel: azureml://registries/{REGISTRY}/models/churn-shared/versions/1\n\
             code_configuration:\n  code: ./score\n  scoring_script: score.py\nenvironment:\n  image: python\ninstance_count: 1\n"
        ),
    );
    let refused = s
        .cli_as(
            &bob,
            &[
                "online-deployment",
                "create",
                "-f",
                deployment.to_str().unwrap(),
                "-w",
                "team-b",
            ],
        )
        .failure();
    assert!(
        refused.stderr.contains(&format!("registry \"{REGISTRY}\"")),
        "{}",
        refused.stderr
    );
    s.cli_as(
        &carol,
        &[
            "online-deployment",
            "create",
            "-f",
            deployment.to_str().unwrap(),
            "-w",
            "team-b",
            "--all-traffic",
        ],
    )
    .success();
    let request = write(dir.path(), "req.json", "{}");
    let answer = s
        .cli_as(
            &carol,
            &[
                "online-endpoint",
                "invoke",
                "-n",
                "churn-ep",
                "-w",
                "team-b",
                "--request-file",
                request.to_str().unwrap(),
            ],
        )
        .success()
        .stdout;
    assert!(answer.contains("weights from team-a"), "{answer}");

    // Deleted with its assets.
    s.cli(&["registry", "delete", "-n", REGISTRY, "--yes"])
        .success();
    s.cli(&["registry", "show", "-n", REGISTRY]).failure();
}

fn job_end(s: &Server, name: &str, ws: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let job = s
            .cli(&["job", "show", "-n", name, "-w", ws, "-o", "json"])
            .success()
            .json();
        if matches!(
            job["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        ) {
            return job;
        }
        assert!(
            start.elapsed().as_secs() < 180,
            "{name} did not end: {job:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn job_log(s: &Server, name: &str, ws: &str) -> String {
    s.cli(&["job", "stream", "-n", name, "-w", ws]).stdout
}
