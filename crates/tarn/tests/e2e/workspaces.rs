//! Workspace lifecycle, default datastores, CLI defaults, and the start-up contract.

use crate::harness::{Server, spawn_up};
use std::path::Path;

const DEFAULT_STORES: [&str; 4] = [
    "workspaceartifactstore",
    "workspaceblobstore",
    "workspacefilestore",
    "workspaceworkingdirectory",
];

fn datastores(s: &Server, ws: &str) -> serde_json::Value {
    s.cli(&["datastore", "list", "-w", ws, "-o", "json"])
        .success()
        .json()
}

#[test]
fn first_start_makes_the_default_workspace_with_four_datastores() {
    let s = Server::start();
    let home = &s.home;
    assert!(home.join("tarn.db").exists());
    let key_mode = std::fs::metadata(home.join("vault.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        key_mode.permissions().mode() & 0o777,
        0o600,
        "vault key must be private"
    );
    let creds_mode = std::fs::metadata(home.join("credentials.json")).unwrap();
    assert_eq!(
        creds_mode.permissions().mode() & 0o777,
        0o600,
        "credentials must be private"
    );

    let ws = s
        .cli(&["workspace", "show", "-n", "default", "-o", "json"])
        .success()
        .json();
    assert_eq!(
        ws["mlflow_tracking_uri"],
        format!("{}/ws/default/mlflow", s.url)
    );
    assert_eq!(ws["default_datastore"], "workspaceblobstore");
    let root = ws["storage_root"].as_str().unwrap();

    let stores = datastores(&s, "default");
    let names: Vec<&str> = stores
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, DEFAULT_STORES);
    for d in stores.as_array().unwrap() {
        assert_eq!(d["is_default"], d["name"] == "workspaceblobstore", "{d}");
        let path = d["spec"]["path"].as_str().unwrap();
        assert!(
            path.starts_with(root) && Path::new(path).is_dir(),
            "{path} is not a directory under {root}"
        );
    }
    // The studio's place answers.
    let (status, _) = s.http().get("/");
    assert_eq!(status, 200);
}

#[test]
fn workspace_create_show_update_delete() {
    let s = Server::start();
    s.cli(&["workspace", "create", "--name", "team-a"])
        .success();
    let file = crate::harness::corpus("valid").join("workspace.yml");
    let created = s
        .cli(&[
            "workspace",
            "create",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .success();
    assert!(
        created
            .stderr
            .contains("location: accepted and stored, but not honoured"),
        "the location warning is shown: {}",
        created.stderr
    );
    assert_eq!(
        created.json()["spec"]["location"],
        "westeurope",
        "unhonoured fields are kept"
    );

    let list = s.cli(&["workspace", "list", "-o", "json"]).success().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "research-ws", "team-a"]);
    assert_eq!(datastores(&s, "team-a").as_array().unwrap().len(), 4);

    let updated = s
        .cli(&[
            "workspace",
            "update",
            "-n",
            "team-a",
            "--set",
            "description=Team A's work",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(updated["description"], "Team A's work");
    assert_eq!(
        s.cli(&["workspace", "show", "-n", "team-a", "-o", "json"])
            .success()
            .json()["description"],
        "Team A's work"
    );
    s.cli(&[
        "workspace",
        "update",
        "-n",
        "team-a",
        "--set",
        "name=team-b",
    ])
    .failure();

    let dup = s
        .cli(&["workspace", "create", "--name", "team-a"])
        .failure();
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);

    let root = s
        .cli(&["workspace", "show", "-n", "team-a", "-o", "json"])
        .success()
        .json()["storage_root"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = s.cli(&["workspace", "delete", "-n", "team-a"]).failure();
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    s.cli(&["workspace", "delete", "-n", "team-a", "--yes"])
        .success();
    assert!(
        Path::new(&root).is_dir(),
        "storage is kept without --all-resources"
    );
    let gone = s.cli(&["workspace", "show", "-n", "team-a"]).failure();
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);

    let root_b = s
        .cli(&["workspace", "show", "-n", "research-ws", "-o", "json"])
        .success()
        .json()["storage_root"]
        .as_str()
        .unwrap()
        .to_string();
    s.cli(&[
        "workspace",
        "delete",
        "-n",
        "research-ws",
        "--yes",
        "--all-resources",
    ])
    .success();
    assert!(
        !Path::new(&root_b).exists(),
        "--all-resources removes the storage"
    );
}

#[test]
fn bad_workspace_names_are_refused_and_change_nothing() {
    let s = Server::start();
    for bad in ["ab", "../evil", "has space", "-dash"] {
        let r = s
            .cli(&["workspace", "create", &format!("--name={bad}")])
            .failure();
        assert!(
            r.stderr.contains("not a valid workspace name"),
            "{bad}: {}",
            r.stderr
        );
    }
    let list = s.cli(&["workspace", "list", "-o", "json"]).success().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let dirs = std::fs::read_dir(s.home.join("workspaces"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "no storage was made for refused workspaces");
}

#[test]
fn configure_sets_the_default_workspace() {
    let s = Server::start();
    s.cli(&["workspace", "create", "--name", "proj"]).success();
    let model = crate::harness::corpus("valid").join("model-triton.yml");
    s.cli(&["configure", "--defaults", "workspace=proj"])
        .success();
    s.cli(&["model", "create", "-f", model.to_str().unwrap()])
        .success();
    let in_proj = s.cli(&["model", "list", "-o", "json"]).success().json();
    assert_eq!(in_proj.as_array().unwrap().len(), 1);
    let in_default = s
        .cli(&["model", "list", "-w", "default", "-o", "json"])
        .success()
        .json();
    assert_eq!(in_default.as_array().unwrap().len(), 0);
}

#[test]
fn one_server_per_home_and_restart_keeps_state() {
    let s = Server::start();
    s.cli(&["workspace", "create", "--name", "kept"]).success();
    let second = spawn_up(&s.home, &[]);
    let err = second.expect_err("a second server on the same home must refuse to start");
    assert!(err.contains("already using"), "{err}");

    let token = s.token.clone();
    let home = s.stop();
    let s2 = Server::start_on(home);
    assert_eq!(s2.token, token, "the local credentials survive a restart");
    s2.cli(&["workspace", "show", "-n", "kept"]).success();
    let list = s2
        .cli(&["workspace", "list", "-o", "json"])
        .success()
        .json();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "the default workspace is not made twice"
    );
}

#[test]
fn the_cli_finds_the_server_from_flags_environment_or_home() {
    let s = Server::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(crate::harness::BIN);
        cmd.args(args)
            .env("TARN_HOME", elsewhere.path())
            .env_remove("TARN_SERVER")
            .env_remove("TARN_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        crate::harness::Run::from(cmd.output().unwrap())
    };
    // No credentials in this home: a clear error naming what to set.
    let none = run(&["workspace", "list"], &[]).failure();
    assert!(
        none.stderr.contains("TARN_SERVER") && none.stderr.contains("tarn up"),
        "{}",
        none.stderr
    );
    // Environment.
    run(
        &["workspace", "show", "-n", "default"],
        &[("TARN_SERVER", &s.url), ("TARN_TOKEN", &s.token)],
    )
    .success();
    // Flags win over the environment.
    run(
        &[
            "--server",
            &s.url,
            "--token",
            &s.token,
            "workspace",
            "show",
            "-n",
            "default",
        ],
        &[("TARN_TOKEN", "tarn_wrong")],
    )
    .success();
    let wrong = run(
        &["workspace", "show", "-n", "default"],
        &[("TARN_SERVER", &s.url), ("TARN_TOKEN", "tarn_wrong")],
    )
    .failure();
    assert!(wrong.stderr.contains("Unauthenticated"), "{}", wrong.stderr);
    // And the home's credentials, with no flags at all.
    s.cli(&["workspace", "show", "-n", "default"]).success();
}
