//! Identity: tokens that expire, are narrowed to one workspace and role, are listed without
//! their secrets and revoked at once on every surface; users disabled, enabled and deleted
//! (their jobs left to finish or canceled); service principals apart from people; the
//! bootstrap administrator token given by environment.

use crate::harness::{Home, Server};
use crate::jobs::{wait_end, wait_for, write};
use serde_json::json;
use std::time::{Duration, Instant};

/// Polls `check` until it holds or `limit` passes; how long it took.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The status a token gets on the REST API, the MLflow surface and the studio's pages.
fn statuses(s: &Server, token: &str) -> [u16; 2] {
    let h = s.http().with_token(Some(token));
    [
        h.get("/api/v1/workspaces/default/models").0,
        h.post(
            "/ws/default/mlflow/api/2.0/mlflow/experiments/search",
            &json!({"max_results": 1}),
        )
        .0,
    ]
}

#[test]
fn tokens_expire_are_listed_without_secrets_and_revoked_at_once() {
    let s = Server::start();
    let alice = s.user_with_role("alice", "Data Scientist", "default");
    assert_eq!(statuses(&s, &alice), [200, 200]);

    // A second token, described and expiring: printed once with its id and expiry.
    let made = s
        .cli_as(
            &alice,
            &[
                "token",
                "create",
                "--description",
                "laptop",
                "--expires-in",
                "30d",
                "-o",
                "json",
            ],
        )
        .success()
        .json();
    let laptop = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(made["expires_at"].is_string(), "{made:#}");
    assert_eq!(statuses(&s, &laptop), [200, 200]);

    // Listed with when it was last used and when it expires, never the secret.
    let listed = s.cli_as(&alice, &["token", "list", "-o", "json"]).success();
    assert!(
        !listed.stdout.contains(&laptop) && !listed.stdout.contains(&alice),
        "{}",
        listed.stdout
    );
    let tokens = listed.json();
    let row = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{tokens:#}"))
        .clone();
    assert_eq!(row["description"], "laptop", "{row:#}");
    assert!(row["last_used_at"].is_string(), "{row:#}");
    assert!(row["expires_at"].is_string(), "{row:#}");
    assert_eq!(
        tokens.as_array().unwrap().len(),
        2,
        "her first token and this one"
    );
    // Someone else's tokens are an administrator's business.
    let out = s.cli_as(&alice, &["token", "list", "--all"]).failure();
    assert!(out.stderr.contains("administrators"), "{}", out.stderr);
    let everyone = s
        .cli(&["token", "list", "--all", "-o", "json"])
        .success()
        .json();
    assert!(
        everyone
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["user"] == "admin"),
        "{everyone:#}"
    );

    // A studio session signed in with it ends with it.
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        // A token is URL-safe as it is.
        .body(format!("token={laptop}&next=%2F"))
        .send()
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_string();
    let page = |session: &str| {
        client
            .get(format!("{}/ws/default/jobs", s.url))
            .header("cookie", session)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(page(&session), 200);

    // Revoked: refused at once on every surface; her other token still works.
    s.cli_as(&alice, &["token", "revoke", &id]).success();
    assert_eq!(statuses(&s, &laptop), [401, 401]);
    assert_eq!(page(&session), 303, "the session went with its token");
    assert_eq!(statuses(&s, &alice), [200, 200]);
    let out = s.cli_as(&alice, &["token", "revoke", &id]).failure();
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    // Nobody revokes another's token but an administrator.
    let bob = s.user_with_role("bob", "Reader", "default");
    let bobs = s
        .cli_as(&bob, &["token", "list", "-o", "json"])
        .success()
        .json();
    let bob_id = bobs[0]["id"].as_str().unwrap().to_string();
    s.cli_as(&alice, &["token", "revoke", &bob_id]).failure();
    assert_eq!(statuses(&s, &bob), [200, 200]);
    s.cli(&["token", "revoke", &bob_id]).success();
    assert_eq!(statuses(&s, &bob), [401, 401]);

    // An expiring token stops working when it expires.
    let short = s
        .cli_as(
            &alice,
            &["token", "create", "--expires-in", "2s", "-o", "json"],
        )
        .success()
        .json();
    let short = short["token"].as_str().unwrap().to_string();
    assert_eq!(statuses(&s, &short), [200, 200]);
    assert!(
        within(Duration::from_secs(10), || statuses(&s, &short)
            == [401, 401])
        .is_some(),
        "an expired token still works"
    );

    // Bad lifetimes are refused naming the field.
    for bad in ["soon", "0s", "-3d"] {
        let out = s
            .cli_as(&alice, &["token", "create", &format!("--expires-in={bad}")])
            .failure();
        assert!(out.stderr.contains("expires_in"), "{bad}: {}", out.stderr);
    }
}

#[test]
fn a_narrowed_token_acts_in_one_workspace_within_its_role() {
    let s = Server::start();
    s.cli(&["workspace", "create", "--name", "other"]).success();
    let alice = s.user_with_role("alice", "Data Scientist", "default");
    s.cli(&[
        "role", "assign", "--user", "alice", "--role", "Owner", "-w", "other",
    ])
    .success();
    let reader = s
        .cli_as(
            &alice,
            &[
                "token", "create", "-w", "default", "--role", "Reader", "-o", "json",
            ],
        )
        .success()
        .json();
    let token = reader["token"].as_str().unwrap();
    let h = s.http().with_token(Some(token));
    assert_eq!(h.get("/api/v1/workspaces/default/models").0, 200);
    let (status, body) = h.post(
        "/api/v1/workspaces/default/environments",
        &json!({"name": "e", "version": "1", "image": "python:3.11"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("limited to Reader"), "{body}");
    // Other workspaces do not exist for it, though its user owns one.
    assert_eq!(h.get("/api/v1/workspaces/other/models").0, 404);
    let listed = h.get("/api/v1/workspaces").1;
    let names: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["default"]);
    // Nor does it mint tokens.
    assert_eq!(h.post("/api/v1/tokens", &json!({})).0, 403);
    // It is listed as narrowed.
    let tokens = s
        .cli_as(&alice, &["token", "list", "-o", "json"])
        .success()
        .json();
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["limited_to"] == "workspace default as Reader"),
        "{tokens:#}"
    );
    // It is no more than its user: a Reader's token narrowed to Owner is still a Reader.
    let bob = s.user_with_role("bob", "Reader", "default");
    let owner = s
        .cli_as(
            &bob,
            &[
                "token", "create", "-w", "default", "--role", "Owner", "-o", "json",
            ],
        )
        .success()
        .json();
    let hb = s.http().with_token(owner["token"].as_str());
    let (status, _) = hb.post(
        "/api/v1/workspaces/default/environments",
        &json!({"name": "e", "version": "1", "image": "python:3.11"}),
    );
    assert_eq!(status, 403);
    // An administrator's narrowed token is not an administrator's.
    let admin = s
        .cli(&[
            "token",
            "create",
            "-w",
            "default",
            "--role",
            "Contributor",
            "-o",
            "json",
        ])
        .success()
        .json();
    let ha = s.http().with_token(admin["token"].as_str());
    assert_eq!(ha.post("/api/v1/users", &json!({"name": "mallory"})).0, 403);
    let (status, body) = ha.post(
        "/api/v1/workspaces/default/environments",
        &json!({"name": "e", "version": "1", "image": "python:3.11"}),
    );
    assert_eq!(status, 201, "{body}");
    // Asking for half of a narrowing, a role that is not one, or a workspace the user has no
    // role in, is refused.
    for (args, says) in [
        (vec!["-w", "default"], "role"),
        (vec!["--role", "Reader"], "workspace"),
        (vec!["-w", "default", "--role", "Janitor"], "unknown role"),
        (vec!["-w", "nowhere", "--role", "Reader"], "not found"),
    ] {
        let mut all = vec!["token", "create"];
        all.extend(args);
        let out = s.cli_as(&bob, &all).failure();
        assert!(out.stderr.contains(says), "{all:?}: {}", out.stderr);
    }
}

#[test]
fn disabled_and_deleted_users_lose_access_and_their_jobs_finish_or_are_canceled() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_with_role("alice", "Data Scientist", "default");
    s.cli(&["workspace", "create", "--name", "other"]).success();
    s.cli(&[
        "role", "assign", "--user", "alice", "--role", "Reader", "-w", "other",
    ])
    .success();
    let shown = s
        .cli(&["user", "show", "-n", "alice", "-o", "json"])
        .success()
        .json();
    assert_eq!(
        shown["role_assignments"],
        json!([{"workspace": "default", "role": "Data Scientist"}, {"workspace": "other", "role": "Reader"}]),
        "{shown:#}"
    );
    // Anyone shows themselves; only administrators show others.
    s.cli_as(&alice, &["user", "show", "-n", "alice"]).success();
    let bob = s.user_with_role("bob", "Reader", "default");
    s.cli_as(&bob, &["user", "show", "-n", "alice"]).failure();

    let job = |name: &str, seconds: u32| {
        let file = write(
            dir.path(),
            &format!("{name}.yml"),
            &format!(
                "name: {name}\ncommand: sleep {seconds} && echo finished\nenvironment:\n  image: python:3.11\n"
            ),
        );
        s.cli_as(&alice, &["job", "create", "-f", file.to_str().unwrap()])
            .success();
        wait_for(&s, name, Duration::from_secs(120), |j| {
            j["status"] == "Running"
        });
    };
    // Disabled: her tokens are refused at once; her running job finishes.
    job("finishes", 4);
    let out = s
        .cli(&["user", "disable", "-n", "alice", "-o", "json"])
        .success()
        .json();
    assert_eq!(out["disabled"], true, "{out:#}");
    assert_eq!(out["canceled_jobs"], 0, "{out:#}");
    assert_eq!(statuses(&s, &alice), [401, 401]);
    let users = s.cli(&["user", "list", "-o", "json"]).success().json();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "alice" && u["disabled"] == true),
        "{users:#}"
    );
    assert_eq!(wait_end(&s, "finishes")["status"], "Completed");
    // Nobody disables themselves, and only administrators disable anyone.
    assert!(
        s.cli(&["user", "disable", "-n", "admin"])
            .failure()
            .stderr
            .contains("yourself")
    );
    s.cli_as(&bob, &["user", "disable", "-n", "admin"])
        .failure();

    // Enabled again: her token works again.
    s.cli(&["user", "enable", "-n", "alice"]).success();
    assert_eq!(statuses(&s, &alice), [200, 200]);

    // Disabled with --cancel-jobs: her running job is canceled.
    job("canceled", 600);
    let out = s
        .cli(&[
            "user",
            "disable",
            "-n",
            "alice",
            "--cancel-jobs",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(out["canceled_jobs"], 1, "{out:#}");
    let ended = wait_end(&s, "canceled");
    assert_eq!(ended["status"], "Canceled", "{ended:#}");

    // Deleted: gone from the lists and every workspace; what she made stays hers.
    s.cli(&["user", "enable", "-n", "alice"]).success();
    job("at-delete", 600);
    s.cli(&["user", "delete", "-n", "alice"]).success();
    assert_eq!(statuses(&s, &alice), [401, 401]);
    assert_eq!(wait_end(&s, "at-delete")["status"], "Canceled");
    let users = s.cli(&["user", "list", "-o", "json"]).success().json();
    assert!(!users.to_string().contains("alice"), "{users:#}");
    let roles = s
        .cli(&["role", "list", "-w", "other", "-o", "json"])
        .success()
        .json();
    assert!(!roles.to_string().contains("alice"), "{roles:#}");
    let kept = s
        .cli(&["job", "show", "-n", "finishes", "-o", "json"])
        .success()
        .json();
    assert_eq!(kept["created_by"], "alice", "{kept:#}");
    assert!(
        s.cli(&["user", "delete", "-n", "alice"])
            .failure()
            .stderr
            .contains("not found")
    );
}

#[test]
fn service_principals_have_tokens_and_roles_and_are_listed_apart() {
    let s = Server::start();
    let token = s
        .cli(&["sp", "create", "-n", "ci-bot"])
        .success()
        .stdout
        .trim()
        .to_string();
    assert_eq!(statuses(&s, &token)[0], 404, "no role anywhere yet");
    s.cli(&[
        "role", "assign", "--user", "ci-bot", "--role", "Reader", "-w", "default",
    ])
    .success();
    assert_eq!(statuses(&s, &token), [200, 200]);
    let sps = s.cli(&["sp", "list", "-o", "json"]).success().json();
    assert_eq!(sps.as_array().unwrap().len(), 1, "{sps:#}");
    assert_eq!(sps[0]["name"], "ci-bot");
    let people = s.cli(&["user", "list", "-o", "json"]).success().json();
    assert!(!people.to_string().contains("ci-bot"), "{people:#}");
    let shown = s
        .cli(&["sp", "show", "-n", "ci-bot", "-o", "json"])
        .success()
        .json();
    assert_eq!(shown["kind"], "service_principal", "{shown:#}");
    // Its name is taken for people too.
    assert!(
        s.cli(&["user", "create", "-n", "ci-bot"])
            .failure()
            .stderr
            .contains("already exists")
    );
    s.cli(&["sp", "delete", "-n", "ci-bot"]).success();
    assert_eq!(statuses(&s, &token)[0], 401);
}

#[test]
fn an_administrator_token_given_by_environment_works_and_a_weak_one_is_refused() {
    let given = format!("tarn_{}", "k".repeat(43));
    let s = Server::start_with_env(Home::temp(), &[("TARN_ADMIN_TOKEN", &given)]);
    let h = s.http().with_token(Some(&given));
    let (status, users) = h.get("/api/v1/users");
    assert_eq!(status, 200, "{users}");
    let listed = s
        .cli(&["token", "list", "--user", "admin", "-o", "json"])
        .success()
        .json();
    assert!(
        listed.to_string().contains("TARN_ADMIN_TOKEN") && !listed.to_string().contains(&given),
        "{listed:#}"
    );
    // Restarted with another: the old one stops working.
    let home = s.stop();
    let next = format!("tarn_{}", "n".repeat(43));
    let s = Server::start_with_env(home, &[("TARN_ADMIN_TOKEN", &next)]);
    assert_eq!(s.http().with_token(Some(&next)).get("/api/v1/users").0, 200);
    assert_eq!(
        s.http().with_token(Some(&given)).get("/api/v1/users").0,
        401
    );
    let home = s.stop();
    // A weak one: the server does not start, and says why.
    let err = crate::harness::spawn_up(&home.path, &[("TARN_ADMIN_TOKEN", "tarn_short")])
        .expect_err("the server refuses a short TARN_ADMIN_TOKEN");
    assert!(err.contains("TARN_ADMIN_TOKEN"), "{err}");
    assert!(
        !err.contains("tarn_short"),
        "the value is not repeated: {err}"
    );
}

/// An `aml_token` endpoint's token is bound to the Tarn token that fetched it: revoking that
/// token, or disabling its user, shuts the scoring router to it too.
#[test]
fn an_endpoint_token_stops_with_the_token_that_fetched_it() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_with_role("alice", "Data Scientist", "default");
    let ep = write(
        dir.path(),
        "ep.yml",
        "name: guarded\nauth_mode: aml_token\n",
    );
    s.cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
    let laptop = s
        .cli_as(&alice, &["token", "create", "-o", "json"])
        .success()
        .json();
    let (laptop_token, laptop_id) = (
        laptop["token"].as_str().unwrap().to_string(),
        laptop["id"].as_str().unwrap().to_string(),
    );
    let fetch = |token: &str| {
        let creds = s
            .cli_as(
                token,
                &[
                    "online-endpoint",
                    "get-credentials",
                    "-n",
                    "guarded",
                    "-o",
                    "json",
                ],
            )
            .success()
            .json();
        creds["accessToken"].as_str().unwrap().to_string()
    };
    let client = reqwest::blocking::Client::new();
    let score = |token: &str| {
        client
            .post(format!("{}/endpoints/guarded/score", s.url))
            .bearer_auth(token)
            .json(&json!({"data": [1]}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Let in (no deployment takes traffic yet, so not 200 either), until its token is revoked.
    let from_laptop = fetch(&laptop_token);
    let opened = within(Duration::from_secs(30), || score(&from_laptop) != 401);
    assert!(opened.is_some(), "the endpoint never took its own token");
    let from_first = fetch(&alice);
    assert_ne!(score(&from_first), 401);
    s.cli_as(&alice, &["token", "revoke", &laptop_id]).success();
    assert_eq!(
        score(&from_laptop),
        401,
        "revoked with the token that fetched it"
    );
    assert_ne!(score(&from_first), 401, "another token's stays good");
    // A disabled user's endpoint tokens stop too.
    s.cli(&["user", "disable", "-n", "alice"]).success();
    assert_eq!(score(&from_first), 401);
    s.cli(&["user", "enable", "-n", "alice"]).success();
    assert_ne!(score(&from_first), 401);
}

/// Two servers on one PostgreSQL store: a token revoked (or a user disabled) through one is
/// refused by the other within a second — its cache remembers a token for one second at most.
#[test]
fn a_revocation_reaches_every_server_within_a_second() {
    let db = crate::harness::PgDatabase::new();
    let args = ["--store", db.url.as_str()];
    let start = |home: Home| -> Server {
        let (child, url) = crate::harness::spawn_up_as(&home.path, 0, &[], &[], &args)
            .unwrap_or_else(|e| panic!("{e}"));
        Server::adopt(home, child, url)
    };
    let a = start(Home::temp());
    let home_b = Home::temp();
    std::fs::copy(a.home.join("vault.key"), home_b.path.join("vault.key")).unwrap();
    let b = start(home_b);
    let alice = a.user_with_role("alice", "Reader", "default");
    let made = a
        .cli_as(&alice, &["token", "create", "-o", "json"])
        .success()
        .json();
    let (token, id) = (
        made["token"].as_str().unwrap().to_string(),
        made["id"].as_str().unwrap().to_string(),
    );
    // B knows the token (and caches it).
    assert_eq!(statuses(&b, &token), [200, 200]);
    a.cli_as(&alice, &["token", "revoke", &id]).success();
    let took = within(Duration::from_secs(5), || {
        statuses(&b, &token) == [401, 401]
    })
    .expect("the other server still takes the revoked token");
    assert!(took <= Duration::from_millis(1500), "took {took:?}");
    // Disabling reaches it alike.
    assert_eq!(statuses(&b, &alice), [200, 200]);
    a.cli(&["user", "disable", "-n", "alice"]).success();
    let took = within(Duration::from_secs(5), || {
        statuses(&b, &alice) == [401, 401]
    })
    .expect("the other server still takes a disabled user's token");
    assert!(took <= Duration::from_millis(1500), "took {took:?}");
}
