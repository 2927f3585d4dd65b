//! `tarn backup`: a backup taken while an MLflow client keeps logging restores into a new
//! home whole — every resource with its secret, users and their tokens, roles, the job, runs,
//! metric histories, the registered model — and the run being written to is restored as of
//! one instant (a prefix of what was logged, never a torn batch). The vault key travels only
//! wrapped; a wrong passphrase, a damaged file or a used home are refused with nothing
//! written. Backups also go to a datastore, and `tarn up --backup-every` keeps the newest N.

use crate::harness::{BIN, Home, Server, spawn_up_as};
use crate::store::{fill, views};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";
const PASSPHRASE: &str = "correct horse battery staple";

fn restore(home: &std::path::Path, args: &[&str]) -> crate::harness::Run {
    Command::new(BIN)
        .args(["backup", "restore"])
        .args(args)
        .env("TARN_HOME", home)
        .env_remove("TARN_BACKUP_PASSPHRASE")
        .output()
        .unwrap()
        .into()
}

#[test]
fn a_backup_taken_under_load_restores_whole_into_a_new_home() {
    let s = Server::start();
    let filled = fill(&s);
    let before = views(&s, &filled);
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let backups = dir.path().join("backups");

    // An MLflow client logs one step per batch, with a parameter, while the backup is taken.
    let http = s.http();
    let (_, exp) = http.post(
        &format!("{MLFLOW}/experiments/create"),
        &json!({"name": "under-load"}),
    );
    let (_, run) = http.post(
        &format!("{MLFLOW}/runs/create"),
        &json!({"experiment_id": exp["experiment_id"], "start_time": 1}),
    );
    let load_run = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let acked = Arc::new(AtomicI64::new(-1));
    let stop = Arc::new(AtomicBool::new(false));
    let logger = {
        let (http, run, acked, stop) = (s.http(), load_run.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut step = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let (code, reply) = http.post(
                    &format!("{MLFLOW}/runs/log-batch"),
                    &json!({"run_id": run,
                            "metrics": [{"key": "acc", "value": step as f64, "timestamp": 1000 + step, "step": step}],
                            "params": [{"key": format!("p{step}"), "value": "v"}]}),
                );
                assert_eq!(code, 200, "{reply}");
                acked.store(step, Ordering::SeqCst);
                step += 1;
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 20 {
        std::thread::yield_now();
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let made = s
        .cli_with(
            &[
                "backup",
                "create",
                "--to",
                backups.to_str().unwrap(),
                "--include-vault-key",
                "-o",
                "json",
            ],
            &[("TARN_BACKUP_PASSPHRASE", PASSPHRASE)],
        )
        .success()
        .json();
    let acked_after = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    logger.join().unwrap();
    assert_eq!(made["vault_key"], true, "{made}");
    let location = std::path::PathBuf::from(made["location"].as_str().unwrap());
    assert!(location.starts_with(&backups), "{made}");
    assert!(made["tables"]["runs"].as_u64().unwrap() >= 3, "{made}");
    let listed = s
        .cli(&[
            "backup",
            "list",
            "--from",
            backups.to_str().unwrap(),
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], made["name"]);
    let names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        vec![made["name"].as_str().unwrap().to_string()],
        "no partial folder left"
    );
    let key_json = std::fs::read_to_string(location.join("vault-key.json")).unwrap();
    let own_key = std::fs::read_to_string(s.home.join("vault.key")).unwrap();
    assert!(
        !key_json.contains(own_key.trim()),
        "the vault key is in the backup only wrapped"
    );

    // Only an administrator takes backups.
    let bob = s
        .cli_as(
            &filled.bob,
            &[
                "backup",
                "create",
                "--to",
                dir.path().join("b").to_str().unwrap(),
            ],
        )
        .failure();
    assert!(bob.stderr.contains("administrators"), "{}", bob.stderr);

    // A wrong passphrase, or none, restores nothing; neither does a damaged backup.
    let new_home = dir.path().join("restored");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase at all").unwrap();
    let refused = restore(
        &new_home,
        &[
            "--from",
            backups.to_str().unwrap(),
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
    )
    .failure();
    assert!(
        refused.stderr.contains("passphrase does not open"),
        "{}",
        refused.stderr
    );
    assert!(!new_home.exists(), "a wrong passphrase writes nothing");
    let refused = restore(&new_home, &["--from", backups.to_str().unwrap()]).failure();
    assert!(
        refused.stderr.contains("--passphrase-file"),
        "{}",
        refused.stderr
    );
    assert!(!new_home.exists());
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for f in ["manifest.json", "tarn.db", "vault-key.json"] {
        std::fs::copy(location.join(f), damaged.join(f)).unwrap();
    }
    let mut db = std::fs::read(damaged.join("tarn.db")).unwrap();
    let last = db.len() - 1;
    db[last] ^= 0xff;
    std::fs::write(damaged.join("tarn.db"), db).unwrap();
    let refused = restore(
        &new_home,
        &[
            "--from",
            damaged.to_str().unwrap(),
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
    )
    .failure();
    assert!(refused.stderr.contains("damaged"), "{}", refused.stderr);
    assert!(!new_home.exists());

    // The right passphrase restores it; a second restore into that home is refused.
    restore(
        &new_home,
        &[
            "--from",
            backups.to_str().unwrap(),
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
    )
    .success();
    let again = restore(
        &new_home,
        &[
            "--from",
            backups.to_str().unwrap(),
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
    )
    .failure();
    assert!(
        again.stderr.contains("never overwrites"),
        "{}",
        again.stderr
    );

    // Served from the new home on the old address: everything reads back the same.
    let url = s.url.clone();
    let _old = s.stop();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    // On SQLite in the new home, whatever store the backup came from (PostgreSQL as well).
    let sqlite = format!("sqlite:{}", new_home.join("tarn.db").display());
    let (child, url) = spawn_up_as(&new_home, port, &[], &[], &["--store", &sqlite])
        .unwrap_or_else(|e| panic!("{e}"));
    let r = Server::adopt(
        Home::kept_in(new_home.clone(), tempfile::tempdir().unwrap()),
        child,
        url,
    );
    let after = views(&r, &filled);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "the same before the backup and after the restore");
    }
    assert_eq!(
        after[2]["spec"]["credentials"]["secret_access_key"], "s3-secret-access-key-value",
        "the secret opens with the restored vault key"
    );
    // The run under load: as of one instant — steps 0..n with n between what was
    // acknowledged before and after the backup, each with its parameter (no torn batch).
    let (code, history) = r.http().get(&format!(
        "{MLFLOW}/metrics/get-history?run_id={load_run}&metric_key=acc&max_results=100000"
    ));
    assert_eq!(code, 200, "{history}");
    let steps: Vec<i64> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    let n = steps.len() as i64;
    assert_eq!(steps, (0..n).collect::<Vec<_>>(), "a prefix of the steps");
    assert!(
        n > acked_before && n <= acked_after + 2,
        "{n} steps restored; {acked_before} acknowledged before the backup, {acked_after} after"
    );
    let (_, got) = r
        .http()
        .get(&format!("{MLFLOW}/runs/get?run_id={load_run}"));
    let params = got["run"]["data"]["params"].as_array().map(Vec::len);
    assert_eq!(
        params,
        Some(n as usize),
        "each restored step has its parameter"
    );
}

#[test]
fn backups_go_to_a_datastore_and_on_a_schedule_keeping_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let scheduled = dir.path().join("scheduled");
    let s = Server::start_with(
        Home::temp(),
        &[],
        &[
            "--backup-every",
            "1s",
            "--backup-to",
            scheduled.to_str().unwrap(),
            "--backup-keep",
            "2",
        ],
    );
    // To a datastore, written by the server (the manifest last).
    let made = s
        .cli(&[
            "backup",
            "create",
            "--to",
            "azureml://datastores/workspaceblobstore/paths/tarn/backups",
            "-o",
            "json",
        ])
        .success()
        .json();
    let name = made["name"].as_str().unwrap();
    let (code, listing) = s.http().get(&format!(
        "/api/v1/workspaces/default/datastores/workspaceblobstore/ls?path=tarn/backups/{name}/"
    ));
    assert_eq!(code, 200, "{listing}");
    let files: Vec<&str> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("manifest.json"))
            && files.iter().any(|f| f.ends_with("tarn.db"))
            && !files.iter().any(|f| f.ends_with("vault-key.json")),
        "{listing}"
    );
    // A folder on the server's machine is not the API's to write.
    let (code, reply) = s
        .http()
        .post("/api/v1/backups", &json!({"to": "/tmp/elsewhere"}));
    assert_eq!(code, 400, "{reply}");
    let (code, reply) = s
        .http()
        .post("/api/v1/backups", &json!({"passphrase": "short"}));
    assert_eq!(code, 400, "{reply}");
    assert!(reply.to_string().contains("12 characters"), "{reply}");

    // Scheduled: a new backup every second, the newest two kept.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed: Value = s
            .cli(&[
                "backup",
                "list",
                "--from",
                scheduled.to_str().unwrap(),
                "-o",
                "json",
            ])
            .success()
            .json();
        let names: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        seen.extend(names.iter().cloned());
        if seen.len() >= 4 && names.len() == 2 {
            assert_eq!(
                names,
                seen.iter().rev().take(2).rev().cloned().collect::<Vec<_>>(),
                "the newest two are kept"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scheduled backups: seen {seen:?}, now {names:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
