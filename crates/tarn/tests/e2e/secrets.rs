//! Secrets live only in the vault: never in the database file, responses, logs or errors;
//! a wrong or missing vault key stops the server with a clear message.

use crate::harness::{Server, corpus, spawn_up};

/// The secret values in the valid corpus.
const SECRETS: &[&str] = &[
    "b2xkLWJsb2Ita2V5LXZhbHVlLXNlY3JldA==",
    "c2FzLXNpZ25hdHVyZS1zZWNyZXQ",
    "sp-client-secret-value-9f8e7d",
    "s3-secret-access-key-value",
    "gcs-private-key-material",
    "vm-Pa55word-never-shown",
];

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn secrets_never_reach_the_database_responses_or_logs() {
    let s = Server::start();
    let mut shown = String::new();
    for (group, file) in [
        ("datastore", "datastore-blob.yml"),
        ("datastore", "datastore-file.yml"),
        ("datastore", "datastore-adls2.yml"),
        ("datastore", "datastore-s3.yml"),
        ("datastore", "datastore-gcs.yml"),
        ("compute", "compute-vm.yml"),
    ] {
        let f = corpus("valid").join(file);
        let r = s
            .cli(&[
                group,
                "create",
                "-f",
                f.to_str().unwrap(),
                "--skip-check",
                "-o",
                "json",
            ])
            .success();
        shown.push_str(&r.stdout);
        shown.push_str(&r.stderr);
        shown.push_str(&s.cli(&[group, "list", "-o", "yaml"]).success().stdout);
    }
    let stored = s
        .cli(&["datastore", "show", "-n", "raw_blob", "-o", "json"])
        .success()
        .json();
    assert_eq!(stored["spec"]["credentials"], "<stored in vault>");
    // A failing request that carries a secret does not echo it.
    let (status, reply) = s.http().post(
        "/api/v1/workspaces/default/datastores?skip_check=true",
        &serde_json::json!({"name": "raw_blob", "type": "azure_blob", "account_name": "a", "container_name": "c", "credentials": {"account_key": SECRETS[0]}}),
    );
    assert_eq!(status, 409);
    shown.push_str(&reply.to_string());

    let home = s.stop();
    shown.push_str(&std::fs::read_to_string(home.path.join("server.log")).unwrap());
    for secret in SECRETS {
        assert!(
            !shown.contains(secret),
            "{secret} appeared in CLI output, an API response or the log"
        );
    }
    for file in files_under(&home.path) {
        if file.ends_with("vault.key") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        for secret in SECRETS {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(
                !found,
                "{secret} is stored in plaintext in {}",
                file.display()
            );
        }
    }
}

#[test]
fn include_secrets_needs_the_listsecrets_permission() {
    let s = Server::start();
    let f = corpus("valid").join("datastore-s3.yml");
    s.cli(&[
        "datastore",
        "create",
        "-f",
        f.to_str().unwrap(),
        "--skip-check",
    ])
    .success();
    let full = s
        .cli(&[
            "datastore",
            "show",
            "-n",
            "s3_models",
            "--include-secrets",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        full["spec"]["credentials"]["secret_access_key"],
        "s3-secret-access-key-value"
    );

    let reader = s.user_with_role("rita", "Reader", "default");
    let plain = s
        .cli_as(
            &reader,
            &["datastore", "show", "-n", "s3_models", "-o", "json"],
        )
        .success()
        .json();
    assert_eq!(plain["spec"]["credentials"], "<stored in vault>");
    let denied = s
        .cli_as(
            &reader,
            &["datastore", "show", "-n", "s3_models", "--include-secrets"],
        )
        .failure();
    assert!(
        denied.stderr.contains("Forbidden") && denied.stderr.contains("secrets"),
        "{}",
        denied.stderr
    );
    assert!(!denied.stderr.contains("s3-secret-access-key-value"));

    // Updating other fields keeps the stored secret; giving new credentials replaces it.
    s.cli(&[
        "datastore",
        "update",
        "-n",
        "s3_models",
        "--set",
        "region=eu-west-1",
        "--skip-check",
    ])
    .success();
    let kept = s
        .cli(&[
            "datastore",
            "show",
            "-n",
            "s3_models",
            "--include-secrets",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        kept["spec"]["credentials"]["secret_access_key"],
        "s3-secret-access-key-value"
    );
    assert_eq!(kept["spec"]["region"], "eu-west-1");
    s.cli(&[
        "datastore",
        "update",
        "-n",
        "s3_models",
        "--set",
        "credentials={access_key_id: NEWKEY, secret_access_key: rotated-secret}",
        "--skip-check",
    ])
    .success();
    let rotated = s
        .cli(&[
            "datastore",
            "show",
            "-n",
            "s3_models",
            "--include-secrets",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        rotated["spec"]["credentials"]["secret_access_key"],
        "rotated-secret"
    );
}

#[test]
fn a_wrong_or_missing_vault_key_is_a_clear_error_at_start() {
    let s = Server::start();
    let f = corpus("valid").join("datastore-s3.yml");
    s.cli(&[
        "datastore",
        "create",
        "-f",
        f.to_str().unwrap(),
        "--skip-check",
    ])
    .success();
    let home = s.stop();
    let key = home.path.join("vault.key");
    let original = std::fs::read_to_string(&key).unwrap();

    std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let err = spawn_up(&home.path, &[]).expect_err("a wrong key must stop the server");
    assert!(err.contains("does not open this database's vault"), "{err}");

    std::fs::remove_file(&key).unwrap();
    let err = spawn_up(&home.path, &[]).expect_err("a missing key must stop the server");
    assert!(
        err.contains("vault key file") && err.contains("missing"),
        "{err}"
    );

    std::fs::write(&key, "not base64 at all").unwrap();
    let err = spawn_up(&home.path, &[]).expect_err("a garbled key must stop the server");
    assert!(err.contains("32-byte base64 key"), "{err}");

    // The right key, from a file the operator keeps elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("master.key");
    std::fs::write(&moved, original).unwrap();
    std::fs::remove_file(&key).unwrap();
    let (mut child, _) = spawn_up(
        &home.path,
        &[("TARN_VAULT_KEY_FILE", moved.to_str().unwrap())],
    )
    .expect("the moved key opens the vault");
    child.kill().unwrap();
    child.wait().unwrap();
}
