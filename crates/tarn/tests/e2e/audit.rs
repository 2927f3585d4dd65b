//! The audit log: state-changing calls on the API, the MLflow surface and the studio, and reads
//! of secrets, recorded with who (people apart from service principals), from where, on what
//! and with what outcome — never a secret value; listed by administrators, and by a
//! workspace's Owners for their workspace.

use crate::harness::Server;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Audit events as `tarn audit list` gives them to the administrator, once `ready` holds.
fn events_until(s: &Server, args: &[&str], ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let mut all = vec!["audit", "list", "-o", "json"];
        all.extend_from_slice(args);
        let list = s.cli(&all).success().json();
        let events = list.as_array().cloned().unwrap_or_default();
        if ready(&events) || start.elapsed() > Duration::from_secs(10) {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has(events: &[Value], actor: &str, method: &str, path_part: &str, status: i64) -> bool {
    events.iter().any(|e| {
        e["actor"] == actor
            && e["method"] == method
            && e["path"].as_str().is_some_and(|p| p.contains(path_part))
            && e["status"] == status
    })
}

#[test]
fn state_changing_calls_and_secret_reads_are_audited_without_secrets() {
    let s = Server::start();
    let alice = s.user_with_role("alice", "Owner", "default");
    let rita = s.user_with_role("rita", "Reader", "default");
    let bot = s
        .cli(&["sp", "create", "-n", "ci-bot"])
        .success()
        .stdout
        .trim()
        .to_string();
    s.cli(&[
        "role",
        "assign",
        "--user",
        "ci-bot",
        "--role",
        "Data Scientist",
        "-w",
        "default",
    ])
    .success();
    let h = |token: &str| s.http().with_token(Some(token));

    // The API: a datastore with a secret, its secrets read back; a refused write.
    let (status, body) = h(&alice).post(
        "/api/v1/workspaces/default/datastores?skip_check=true",
        &json!({"name": "vault_s3", "type": "s3", "bucket": "b",
                "credentials": {"access_key_id": "AKIA", "secret_access_key": "audit-secret-value"}}),
    );
    assert_eq!(status, 201, "{body}");
    // An update: which fields changed is recorded, a new secret by name only.
    let (status, body) = h(&alice).call(
        "PUT",
        "/api/v1/workspaces/default/datastores/vault_s3?skip_check=true",
        Some(&json!({"name": "vault_s3", "type": "s3", "bucket": "b", "description": "renewed",
                "credentials": {"access_key_id": "AKIA", "secret_access_key": "audit-secret-rotated"}})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = h(&alice).post(
        "/api/v1/workspaces/default/datastores/vault_s3/list-secrets",
        &json!({}),
    );
    assert_eq!(status, 200);
    let (status, _) = h(&rita).post(
        "/api/v1/workspaces/default/models",
        &json!({"name": "m", "path": "./model"}),
    );
    assert_eq!(status, 403);
    // The MLflow surface, by a service principal; a read is not audited.
    let (status, _) = h(&bot).post(
        "/ws/default/mlflow/api/2.0/mlflow/experiments/create",
        &json!({"name": "audited"}),
    );
    assert_eq!(status, 200);
    h(&bot)
        .get("/ws/default/mlflow/api/2.0/mlflow/experiments/get-by-name?experiment_name=audited");
    // A search is a read too, though MLflow's client makes it with POST.
    let (status, _) = h(&bot).post(
        "/ws/default/mlflow/api/2.0/mlflow/runs/search",
        &json!({"experiment_ids": ["0"]}),
    );
    assert_eq!(status, 200);
    // The studio's login form (a wrong token: no one known).
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    client
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=tarn_wrong&next=%2F")
        .send()
        .unwrap();

    let events = events_until(&s, &[], |e| {
        has(e, "alice", "POST", "/datastores", 201)
            && has(e, "alice", "PUT", "/vault_s3", 200)
            && has(e, "alice", "POST", "/list-secrets", 200)
            && has(e, "rita", "POST", "/models", 403)
            && has(e, "ci-bot", "POST", "/experiments/create", 200)
            && has(e, "", "POST", "/login", 401)
    });
    let text = serde_json::to_string(&events).unwrap();
    for (actor, method, path, status) in [
        ("alice", "POST", "/datastores", 201),
        ("alice", "POST", "/list-secrets", 200),
        ("rita", "POST", "/models", 403),
        ("ci-bot", "POST", "/experiments/create", 200),
        ("", "POST", "/login", 401),
    ] {
        assert!(
            has(&events, actor, method, path, status),
            "{actor} {method} {path}: {text}"
        );
    }
    assert!(
        !text.contains("audit-secret-value") && !text.contains("audit-secret-rotated"),
        "a secret reached the audit log"
    );
    let update = events
        .iter()
        .find(|e| e["method"] == "PUT" && e["path"].as_str().unwrap().ends_with("/vault_s3"))
        .unwrap_or_else(|| panic!("no update event: {text}"));
    let changes = update["changes"].as_str().unwrap();
    assert!(
        changes.contains("description")
            && changes.contains("credentials (secret)")
            && !changes.contains("bucket"),
        "{update}"
    );
    assert!(
        !text.contains("get-by-name") && !text.contains("runs/search"),
        "reads are not audited: {text}"
    );
    let bot_event = events.iter().find(|e| e["actor"] == "ci-bot").unwrap();
    assert_eq!(bot_event["actor_kind"], "service_principal", "{bot_event}");
    assert_eq!(bot_event["workspace"], "default", "{bot_event}");
    assert_eq!(bot_event["address"], "127.0.0.1", "{bot_event}");
    let alice_event = events.iter().find(|e| e["actor"] == "alice").unwrap();
    assert_eq!(alice_event["actor_kind"], "user", "{alice_event}");

    // Filters: by user, by time.
    let mine = events_until(&s, &["--user", "alice"], |_| true);
    assert!(
        !mine.is_empty() && mine.iter().all(|e| e["actor"] == "alice"),
        "{mine:?}"
    );
    let future = events_until(&s, &["--since", "2999-01-01T00:00:00Z"], |_| true);
    assert!(future.is_empty(), "{future:?}");
    let recent = events_until(&s, &["--since", "1h"], |_| true);
    assert!(!recent.is_empty());

    // A workspace's Owner sees its events; others see none.
    let out = s
        .cli_as(&alice, &["audit", "list", "-w", "default", "-o", "json"])
        .success()
        .json();
    assert!(out.as_array().is_some_and(|a| !a.is_empty()), "{out}");
    let refused = s.cli_as(&alice, &["audit", "list"]).failure();
    assert!(
        refused.stderr.contains("administrators"),
        "{}",
        refused.stderr
    );
    s.cli_as(&rita, &["audit", "list", "-w", "default"])
        .failure();
}

/// The studio's audit page: a workspace's Owners see its calls; others are refused.
#[test]
fn the_studio_shows_owners_their_workspaces_audit_log() {
    let s = Server::start();
    let rita = s.user_with_role("rita", "Reader", "default");
    s.cli(&[
        "workspace",
        "update",
        "-n",
        "default",
        "--set",
        "description=audited",
    ])
    .success();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = |token: &str| {
        let login = client
            .post(format!("{}/login", s.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next=%2F"))
            .send()
            .unwrap();
        login.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let page = |cookie: &str| {
        let resp = client
            .get(format!("{}/ws/default/audit", s.url))
            .header("cookie", cookie)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    let admin = session(&s.token);
    let start = Instant::now();
    let (status, html) = loop {
        let (status, html) = page(&admin);
        if html.contains("PUT /api/v1/workspaces/default")
            || start.elapsed() > Duration::from_secs(10)
        {
            break (status, html);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200);
    assert!(
        html.contains("PUT /api/v1/workspaces/default") && html.contains("admin"),
        "{html}"
    );
    let (status, _) = page(&session(&rita));
    assert_eq!(status, 403);
}
