//! `tarn store migrate`: a home filled through the CLI and the MLflow REST API on SQLite, copied
//! to a new PostgreSQL database and served from there, reads back the same — resources with
//! their secrets, users and their tokens, roles, jobs, runs, metric histories, registered
//! models — and keeps taking writes. A running server's store, a password in the URL and a
//! target that already holds data are refused. A store reached over verified TLS with its
//! password in a password file, as a team's database asks.

use crate::harness::{BIN, Home, PgDatabase, PgServer, Server, corpus, spawn_up_as};
use crate::jobs::{HOST_ENV, submit, wait_end, write};
use serde_json::{Value, json};
use std::process::Command;

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";

fn migrate(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["store", "migrate"])
        .args(args)
        .env("TARN_HOME", home)
        .output()
        .unwrap()
}

/// What `fill` made: the names the views read.
pub(crate) struct Filled {
    pub experiment: String,
    pub run: String,
    pub job: String,
    pub bob: String,
}

/// What a user can read of the home: the views a migration (or a backup) must keep.
pub(crate) fn views(s: &Server, f: &Filled) -> Vec<Value> {
    let (experiment, run, job, bob) = (&f.experiment, &f.run, &f.job, &f.bob);
    let cli = |args: &[&str]| s.cli(args).success().json();
    let mut out = vec![
        cli(&["workspace", "list", "-o", "json"]),
        cli(&["datastore", "list", "-o", "json"]),
        cli(&[
            "datastore",
            "show",
            "-n",
            "s3_models",
            "--include-secrets",
            "-o",
            "json",
        ]),
        cli(&["environment", "list", "-o", "json"]),
        cli(&["user", "list", "-o", "json"]),
        cli(&["role", "list", "-w", "default", "-o", "json"]),
        cli(&["job", "show", "-n", job, "-o", "json"]),
        s.cli_as(bob, &["datastore", "list", "-o", "json"])
            .success()
            .json(),
    ];
    let http = s.http();
    for (path, body) in [
        (
            "runs/search",
            Some(json!({"experiment_ids": [experiment], "max_results": 100})),
        ),
        ("registered-models/search", Some(json!({}))),
        (
            &*format!("metrics/get-history?run_id={run}&metric_key=loss&max_results=1000"),
            None,
        ),
        (&*format!("runs/get?run_id={run}"), None),
    ] {
        let path = format!("{MLFLOW}/{path}");
        let (code, reply) = match body {
            Some(b) => http.post(&path, &b),
            None => http.get(&path),
        };
        assert_eq!(code, 200, "{path}: {reply}");
        out.push(reply);
    }
    out
}

/// Fills a home through the CLI and MLflow's REST API: resources with a secret, a user with a
/// token and a role, a finished job, a run with a metric history, a registered model.
pub(crate) fn fill(s: &Server) -> Filled {
    // Resources with a secret, a user with a token and a role, a job, MLflow runs and a model.
    let s3 = corpus("valid").join("datastore-s3.yml");
    s.cli(&[
        "datastore",
        "create",
        "-f",
        s3.to_str().unwrap(),
        "--skip-check",
    ])
    .success();
    let env = corpus("valid").join("environment.yml");
    s.cli(&["environment", "create", "-f", env.to_str().unwrap()])
        .success();
    let bob = s.user_with_role("bob", "Data Scientist", "default");
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "job.yml",
        &format!("command: echo moved\n{HOST_ENV}"),
    );
    let job = submit(s, &file, &[]);
    assert_eq!(wait_end(s, &job)["status"], "Completed");
    let http = s.http();
    let (_, exp) = http.post(
        &format!("{MLFLOW}/experiments/create"),
        &json!({"name": "moved"}),
    );
    let experiment = exp["experiment_id"].as_str().unwrap().to_string();
    let (_, run) = http.post(
        &format!("{MLFLOW}/runs/create"),
        &json!({"experiment_id": experiment, "run_name": "before", "start_time": 1}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let metrics: Vec<Value> = (0..300)
        .map(|i| json!({"key": "loss", "value": 1.0 / (i as f64 + 1.0), "timestamp": 1000 + i, "step": i}))
        .collect();
    let (code, reply) = http.post(
        &format!("{MLFLOW}/runs/log-batch"),
        &json!({"run_id": run_id, "metrics": metrics,
                "params": [{"key": "lr", "value": "0.1"}],
                "tags": [{"key": "team", "value": "ml"}]}),
    );
    assert_eq!(code, 200, "{reply}");
    let (code, reply) = http.post(
        &format!("{MLFLOW}/registered-models/create"),
        &json!({"name": "churn", "description": "moves too"}),
    );
    assert_eq!(code, 200, "{reply}");
    Filled {
        experiment,
        run: run_id,
        job,
        bob,
    }
}

#[test]
fn a_populated_sqlite_home_moves_to_postgresql_whole() {
    let db = PgDatabase::new();
    let home = crate::harness::Home::temp();
    let sqlite = format!("sqlite:{}", home.path.join("tarn.db").display());
    let s = Server::start_with(home, &[], &["--store", &sqlite]);

    let filled = fill(&s);
    let (experiment, run_id) = (filled.experiment.clone(), filled.run.clone());
    let before = views(&s, &filled);
    let [.., runs, models, history, _] = &before[..] else {
        unreachable!()
    };
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(models["registered_models"][0]["name"], "churn", "{models}");
    assert_eq!(history["metrics"].as_array().map(Vec::len), Some(300));
    assert_eq!(
        before[2]["spec"]["credentials"]["secret_access_key"], "s3-secret-access-key-value",
        "the secret opens before the move (and after: compared below)"
    );

    // Not while a server writes to it; never a password in the URL (and never echoed).
    let busy = migrate(&s.home, &["--to", &db.url]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    let with_password = db.url.replacen("postgres@", "postgres:hunter2@", 1);
    let refused = migrate(&s.home, &["--to", &with_password]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("PGPASSWORD") && !stderr.contains("hunter2"),
        "{stderr}"
    );

    let url = s.url.clone();
    let home = s.stop();
    let moved = migrate(&home.path, &["--to", &db.url]);
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let count = |table: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| {
                let (t, n) = l.split_once(' ')?;
                (t == table).then(|| n.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no count for {table} in {stdout}"))
    };
    assert_eq!(
        count("runs"),
        2,
        "the job's run and the one logged: {stdout}"
    );
    assert!(
        count("metric_chunks") >= 1 && count("secrets") >= 1,
        "{stdout}"
    );
    let again = migrate(&home.path, &["--to", &db.url]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "a second copy into the filled database is refused: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Served from PostgreSQL, on the same address: everything reads back the same.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let (child, _) = spawn_up_as(&home.path, port, &[], &[], &["--store", &db.url])
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Server::adopt(home, child, url);
    let after = views(&s, &filled);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "the same before and after the move");
    }
    // And it takes new writes: a second run, metrics on the first.
    let http = s.http();
    let (code, reply) = http.post(
        &format!("{MLFLOW}/runs/create"),
        &json!({"experiment_id": experiment, "run_name": "after", "start_time": 2}),
    );
    assert_eq!(code, 200, "{reply}");
    let (code, reply) = http.post(
        &format!("{MLFLOW}/runs/log-metric"),
        &json!({"run_id": run_id, "key": "loss", "value": 0.0, "timestamp": 5000, "step": 300}),
    );
    assert_eq!(code, 200, "{reply}");
    let (_, history) = http.get(&format!(
        "{MLFLOW}/metrics/get-history?run_id={run_id}&metric_key=loss&max_results=1000"
    ));
    assert_eq!(history["metrics"].as_array().unwrap().len(), 301);
}

/// A team's database: TLS verified against its CA (`sslmode=verify-full`, `PGSSLROOTCERT`), the
/// password in a password file (`PGPASSFILE`). A certificate from another CA and a wrong
/// password are refused at start-up, saying why and never showing the password; the server
/// that starts talks to PostgreSQL over TLS only.
#[test]
fn postgresql_over_verified_tls_with_the_password_from_a_file() {
    let pg = PgServer::start(true);
    let password = format!("pw-{}", uuid_like());
    pg.psql(&format!("CREATE ROLE tarn LOGIN PASSWORD '{password}'"));
    pg.psql("CREATE DATABASE tarn OWNER tarn");
    let port = pg
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let store = format!("postgres://tarn@127.0.0.1:{port}/tarn?sslmode=verify-full");
    let secrets = tempfile::tempdir().unwrap();
    let passfile = secrets.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{port}:tarn:tarn:{password}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = pg.dir.join("tls/ca.crt");
    let other_ca = pg.dir.join("tls/other-ca.crt");
    let (ca, other_ca, passfile) = (
        ca.to_str().unwrap(),
        other_ca.to_str().unwrap(),
        passfile.to_str().unwrap(),
    );

    let refused = |env: &[(&str, &str)]| -> String {
        let home = Home::temp();
        let err = spawn_up_as(&home.path, 0, env, &[], &["--store", store.as_str()])
            .expect_err("the server must not start");
        let log = std::fs::read_to_string(home.path.join("server.log")).unwrap_or_default();
        assert!(
            !err.contains(&password) && !log.contains(&password),
            "{err}"
        );
        err
    };
    let err = refused(&[("PGSSLROOTCERT", other_ca), ("PGPASSFILE", passfile)]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let err = refused(&[("PGSSLROOTCERT", ca), ("PGPASSWORD", "not-the-password")]);
    assert!(err.contains("password authentication failed"), "{err}");
    let plain = format!("postgres://tarn@127.0.0.1:{port}/tarn?sslmode=disable");
    let home = Home::temp();
    let err = spawn_up_as(
        &home.path,
        0,
        &[("PGPASSFILE", passfile)],
        &[],
        &["--store", plain.as_str()],
    )
    .expect_err("plain connections are rejected by the database");
    assert!(err.contains("no encryption"), "{err}");

    let s = Server::start_with(
        Home::temp(),
        &[("PGSSLROOTCERT", ca), ("PGPASSFILE", passfile)],
        &["--store", store.as_str()],
    );
    let listed = s.cli(&["workspace", "list", "-o", "json"]).success().json();
    assert_eq!(listed[0]["name"], "default", "{listed:#}");
    let over_tls = pg.psql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'tarn'",
    );
    let (tls, all) = over_tls.split_once('|').unwrap();
    assert!(
        all != "0" && tls == all,
        "connections over TLS | all: {over_tls}"
    );
    let log = std::fs::read_to_string(s.home.join("server.log")).unwrap();
    assert!(!log.contains(&password), "the password is in the log");
}

/// Random enough for a test password.
fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
