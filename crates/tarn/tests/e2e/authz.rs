//! The role × route matrix, cross-workspace isolation, and authentication on every route.

use crate::harness::Server;
use serde_json::{Value, json};

const ROLES: [&str; 5] = [
    "Owner",
    "Contributor",
    "Reader",
    "Data Scientist",
    "Compute Operator",
];

/// (operation, expected for Owner, Contributor, Reader, Data Scientist, Compute Operator)
const MATRIX: &[(&str, [bool; 5])] = &[
    ("workspace.read", [true, true, true, true, false]),
    ("workspace.write", [true, true, false, false, false]),
    ("workspace.delete", [true, true, false, false, false]),
    ("compute.read", [true, true, true, true, true]),
    ("compute.write", [true, true, false, false, true]),
    ("compute.delete", [true, true, false, false, true]),
    ("model.read", [true, true, true, true, false]),
    ("model.write", [true, true, false, true, false]),
    ("datastore.listsecrets", [true, true, false, true, false]),
    ("roles.read", [true, true, true, true, false]),
    ("roles.write", [true, false, false, false, false]),
];

fn slug(role: &str) -> String {
    role.to_lowercase().replace(' ', "")
}

/// The request that performs `op` as the user with `role`.
fn request(op: &str, role: &str) -> (&'static str, String, Option<Value>) {
    let s = slug(role);
    let ws = "/api/v1/workspaces/lab";
    match op {
        "workspace.read" => ("GET", ws.into(), None),
        "workspace.write" => (
            "PUT",
            ws.into(),
            Some(json!({"name": "lab", "description": format!("edited by {s}")})),
        ),
        "workspace.delete" => ("DELETE", format!("/api/v1/workspaces/tmp-{s}"), None),
        "compute.read" => ("GET", format!("{ws}/computes"), None),
        "compute.write" => (
            "POST",
            format!("{ws}/computes"),
            Some(json!({"name": format!("c-{s}"), "type": "amlcompute"})),
        ),
        "compute.delete" => ("DELETE", format!("{ws}/computes/victim-{s}"), None),
        "model.read" => ("GET", format!("{ws}/models"), None),
        "model.write" => (
            "POST",
            format!("{ws}/models"),
            Some(json!({"name": format!("m-{s}"), "path": "./model"})),
        ),
        "datastore.listsecrets" => (
            "POST",
            format!("{ws}/datastores/secretstore/list-secrets"),
            Some(json!({})),
        ),
        "roles.read" => ("GET", format!("{ws}/role-assignments"), None),
        "roles.write" => (
            "PUT",
            format!("{ws}/role-assignments"),
            Some(json!({"user": "bystander", "role": "Reader"})),
        ),
        _ => unreachable!("unknown operation {op}"),
    }
}

#[test]
fn every_role_may_do_exactly_what_azure_ml_allows() {
    let s = Server::start();
    let admin = s.http();
    s.cli(&["workspace", "create", "--name", "lab"]).success();
    s.cli(&["user", "create", "--name", "bystander"]).success();
    let (st, _) = admin.post(
        "/api/v1/workspaces/lab/datastores?skip_check=true",
        &json!({"name": "secretstore", "type": "s3", "bucket": "b", "credentials": {"access_key_id": "AKIA", "secret_access_key": "matrix-secret"}}),
    );
    assert_eq!(st, 201);
    let mut tokens = vec![];
    for role in ROLES {
        let s_role = slug(role);
        let token = s.user_with_role(&s_role, role, "lab");
        s.cli(&["workspace", "create", "--name", &format!("tmp-{s_role}")])
            .success();
        s.cli(&[
            "role",
            "assign",
            "--user",
            &s_role,
            "--role",
            role,
            "-w",
            &format!("tmp-{s_role}"),
        ])
        .success();
        let (st, _) = admin.post(
            "/api/v1/workspaces/lab/computes",
            &json!({"name": format!("victim-{s_role}"), "type": "amlcompute"}),
        );
        assert_eq!(st, 201);
        tokens.push(token);
    }
    let mut failures = vec![];
    for (op, expected) in MATRIX {
        for (i, role) in ROLES.iter().enumerate() {
            let http = admin.with_token(Some(&tokens[i]));
            let (method, path, body) = request(op, role);
            let (status, reply) = http.call(method, &path, body.as_ref());
            let allowed = (200..300).contains(&status);
            if allowed != expected[i] || (!allowed && status != 403) {
                failures.push(format!("{role} {op}: {method} {path} -> {status} {reply}"));
            }
            if op == &"datastore.listsecrets" && !allowed {
                assert!(
                    !reply.to_string().contains("matrix-secret"),
                    "a refusal leaked the secret"
                );
            }
            if op == &"datastore.listsecrets" && allowed {
                assert_eq!(
                    reply["spec"]["credentials"]["secret_access_key"],
                    "matrix-secret"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_token_for_one_workspace_sees_nothing_of_another() {
    let s = Server::start();
    s.cli(&["workspace", "create", "--name", "alpha"]).success();
    s.cli(&["workspace", "create", "--name", "bravo"]).success();
    s.cli(&[
        "model",
        "create",
        "-w",
        "bravo",
        "-f",
        crate::harness::corpus("valid")
            .join("model-triton.yml")
            .to_str()
            .unwrap(),
    ])
    .success();
    let alice = s.user_with_role("alice", "Owner", "alpha");
    let http = s.http().with_token(Some(&alice));

    let (_, list) = http.get("/api/v1/workspaces");
    let names: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
    for (method, path) in [
        ("GET", "/api/v1/workspaces/bravo"),
        ("GET", "/api/v1/workspaces/bravo/models"),
        ("GET", "/api/v1/workspaces/bravo/models/densenet"),
        ("POST", "/api/v1/workspaces/bravo/models"),
        ("GET", "/api/v1/workspaces/bravo/role-assignments"),
        ("DELETE", "/api/v1/workspaces/bravo"),
    ] {
        let body = (method == "POST").then(|| json!({"name": "x", "path": "./x"}));
        let (status, reply) = http.call(method, path, body.as_ref());
        assert_eq!(status, 404, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], "NotFound");
    }
    // The CLI says the same.
    let r = s
        .cli_as(&alice, &["model", "list", "-w", "bravo"])
        .failure();
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    s.cli_as(&alice, &["model", "list", "-w", "alpha"])
        .success();
}

#[test]
fn only_administrators_manage_users_and_workspaces() {
    let s = Server::start();
    let bob = s.user_with_role("bob", "Owner", "default");
    let http = s.http().with_token(Some(&bob));
    assert_eq!(
        http.post("/api/v1/users", &json!({"name": "mallory"})).0,
        403
    );
    assert_eq!(http.get("/api/v1/users").0, 403);
    assert_eq!(
        http.post("/api/v1/workspaces", &json!({"name": "bobs-ws"}))
            .0,
        403
    );
    assert_eq!(
        http.post("/api/v1/tokens", &json!({"user": "admin"})).0,
        403
    );
    let (status, mine) = http.post("/api/v1/tokens", &json!({"description": "laptop"}));
    assert_eq!(status, 201);
    let second = mine["token"].as_str().unwrap();
    assert_eq!(
        s.http()
            .with_token(Some(second))
            .get("/api/v1/workspaces/default")
            .0,
        200,
        "a new token works"
    );
    // Owners manage access in their workspace.
    s.cli(&["user", "create", "--name", "carol"]).success();
    s.cli_as(
        &bob,
        &[
            "role", "assign", "--user", "carol", "--role", "reader", "-w", "default",
        ],
    )
    .success();
    let roles = s
        .cli_as(&bob, &["role", "list", "-w", "default", "-o", "json"])
        .success()
        .json();
    assert!(
        roles
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user"] == "carol" && r["role"] == "Reader"),
        "{roles}"
    );
    s.cli_as(
        &bob,
        &["role", "delete", "--user", "carol", "-w", "default"],
    )
    .success();
    let bad = s
        .cli_as(
            &bob,
            &[
                "role", "assign", "--user", "carol", "--role", "janitor", "-w", "default",
            ],
        )
        .failure();
    assert!(bad.stderr.contains("unknown role"), "{}", bad.stderr);
}

#[test]
fn every_route_but_health_needs_a_valid_token() {
    let s = Server::start();
    let anon = s.http().with_token(None);
    let forged = s.http().with_token(Some("tarn_forged-token-value"));
    assert_eq!(anon.get("/api/v1/health").0, 200);
    let routes = [
        ("GET", "/api/v1/workspaces"),
        ("POST", "/api/v1/workspaces"),
        ("GET", "/api/v1/workspaces/default"),
        ("PUT", "/api/v1/workspaces/default"),
        ("DELETE", "/api/v1/workspaces/default"),
        ("GET", "/api/v1/workspaces/default/role-assignments"),
        ("PUT", "/api/v1/workspaces/default/role-assignments"),
        (
            "DELETE",
            "/api/v1/workspaces/default/role-assignments/admin",
        ),
        ("GET", "/api/v1/workspaces/default/datastores"),
        ("POST", "/api/v1/workspaces/default/models"),
        (
            "GET",
            "/api/v1/workspaces/default/datastores/workspaceblobstore",
        ),
        (
            "PUT",
            "/api/v1/workspaces/default/datastores/workspaceblobstore",
        ),
        ("DELETE", "/api/v1/workspaces/default/computes/x1"),
        ("POST", "/api/v1/workspaces/default/models/m/archive"),
        ("POST", "/api/v1/workspaces/default/models/m/restore"),
        (
            "POST",
            "/api/v1/workspaces/default/datastores/workspaceblobstore/list-secrets",
        ),
        (
            "GET",
            "/api/v1/workspaces/default/online-endpoints/e1/deployments",
        ),
        (
            "POST",
            "/api/v1/workspaces/default/online-endpoints/e1/deployments",
        ),
        (
            "GET",
            "/api/v1/workspaces/default/online-endpoints/e1/deployments/d1",
        ),
        (
            "PUT",
            "/api/v1/workspaces/default/online-endpoints/e1/deployments/d1",
        ),
        (
            "DELETE",
            "/api/v1/workspaces/default/online-endpoints/e1/deployments/d1",
        ),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/tokens"),
    ];
    for (method, path) in routes {
        let body = (method == "POST" || method == "PUT").then(|| json!({"name": "x"}));
        for http in [&anon, &forged] {
            let (status, reply) = http.call(method, path, body.as_ref());
            assert_eq!(status, 401, "{method} {path}: {reply}");
            assert_eq!(reply["error"]["code"], "Unauthenticated");
        }
    }
    // Nothing changed.
    s.cli(&["workspace", "show", "-n", "default"]).success();
}
