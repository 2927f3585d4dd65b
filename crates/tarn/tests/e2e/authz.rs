//! The role × route matrix (the built-in roles and a custom one), custom roles' lifecycle,
//! cross-workspace isolation, and authentication on every route.

use crate::harness::Server;
use serde_json::{Value, json};

/// The built-in roles and a custom one (`CURATOR`), defined as Azure writes role definitions.
const ROLES: [&str; 6] = [
    "Owner",
    "Contributor",
    "Reader",
    "Data Scientist",
    "Compute Operator",
    "Model Curator",
];

/// Reads the workspace and everything in it but computes; writes models only.
const CURATOR: &str = r#"{
  "Name": "Model Curator",
  "IsCustom": true,
  "Description": "Curates the model registry.",
  "Actions": [
    "Microsoft.MachineLearningServices/workspaces/read",
    "Microsoft.MachineLearningServices/workspaces/*/read",
    "Microsoft.MachineLearningServices/workspaces/models/*"
  ],
  "NotActions": ["Microsoft.MachineLearningServices/workspaces/computes/*"],
  "AssignableScopes": ["/subscriptions/x/resourceGroups/rg"]
}"#;

/// (operation, expected for Owner, Contributor, Reader, Data Scientist, Compute Operator,
/// Model Curator)
const MATRIX: &[(&str, [bool; 6])] = &[
    ("workspace.read", [true, true, true, true, false, true]),
    ("workspace.write", [true, true, false, false, false, false]),
    ("workspace.delete", [true, true, false, false, false, false]),
    ("compute.read", [true, true, true, true, true, false]),
    ("compute.write", [true, true, false, false, true, false]),
    ("compute.delete", [true, true, false, false, true, false]),
    ("model.read", [true, true, true, true, false, true]),
    ("model.write", [true, true, false, true, false, true]),
    (
        "datastore.listsecrets",
        [true, true, false, true, false, false],
    ),
    ("roles.read", [true, true, true, true, false, false]),
    ("roles.write", [true, false, false, false, false, false]),
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
    let dir = tempfile::tempdir().unwrap();
    let curator = dir.path().join("curator.json");
    std::fs::write(&curator, CURATOR).unwrap();
    s.cli(&["role", "create", "-f", curator.to_str().unwrap()])
        .success();
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

/// Custom roles: defined by administrators only, refused with the field named when wrong,
/// listed beside the built-in ones, assigned by name, and removed only when unassigned.
#[test]
fn custom_roles_are_defined_assigned_and_removed() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let curator = file("curator.json", CURATOR);
    let reader = s.user_with_role("rita", "Reader", "default");
    let out = s
        .cli_as(&reader, &["role", "create", "-f", &curator])
        .failure();
    assert!(out.stderr.contains("administrators"), "{}", out.stderr);
    // YAML as well as JSON; a pattern that matches nothing Tarn checks is a warning.
    let yaml = file(
        "ops.yml",
        "name: Night Ops\nactions:\n  - Microsoft.MachineLearningServices/workspaces/computes/*/action\n  - Microsoft.MachineLearningServices/workspaces/hubs/write\n",
    );
    let out = s.cli(&["role", "create", "-f", &yaml]).success();
    assert!(
        out.stderr.contains("warning") && out.stderr.contains("actions[1]"),
        "{}",
        out.stderr
    );
    for (text, field) in [
        ("{\"Actions\": [\"*\"]}", "Name"),
        ("{\"Name\": \"Owner\", \"Actions\": [\"*\"]}", "Name"),
        ("{\"Name\": \"x\", \"Actions\": []}", "Actions"),
        (
            "{\"Name\": \"x\", \"Actions\": [\"*\"], \"Colour\": 1}",
            "Colour",
        ),
        ("Name: [unclosed", "invalid YAML"),
    ] {
        let bad = file("bad.json", text);
        let out = s.cli(&["role", "create", "-f", &bad]).failure();
        assert!(out.stderr.contains(field), "{text}: {}", out.stderr);
    }
    s.cli(&["role", "create", "-f", &curator]).success();
    let again = s.cli(&["role", "create", "-f", &curator]).failure();
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let defs = s
        .cli(&["role", "definitions", "-o", "json"])
        .success()
        .json();
    let names: Vec<&str> = defs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Owner",
            "Contributor",
            "Reader",
            "Data Scientist",
            "Compute Operator",
            "Model Curator",
            "Night Ops"
        ]
    );
    let shown = s
        .cli(&["role", "show", "-n", "Data Scientist", "-o", "json"])
        .success()
        .json();
    assert!(
        shown["not_actions"]
            .to_string()
            .contains("computes/*/write"),
        "the built-in roles are in the same form: {shown:#}"
    );
    // Assigned by name; an unknown name lists the roles there are.
    let bad = s
        .cli(&[
            "role", "assign", "--user", "rita", "--role", "Curator", "-w", "default",
        ])
        .failure();
    assert!(bad.stderr.contains("Model Curator"), "{}", bad.stderr);
    s.cli(&[
        "role",
        "assign",
        "--user",
        "rita",
        "--role",
        "Model Curator",
        "-w",
        "default",
    ])
    .success();
    let (status, _) = s.http().with_token(Some(&reader)).post(
        "/api/v1/workspaces/default/models",
        &json!({"name": "m", "path": "./model"}),
    );
    assert_ne!(status, 403);
    // Not removed while assigned; removed once not.
    let out = s
        .cli(&["role", "delete-definition", "-n", "Model Curator"])
        .failure();
    assert!(out.stderr.contains("assigned"), "{}", out.stderr);
    s.cli(&["role", "delete", "--user", "rita", "-w", "default"])
        .success();
    s.cli(&["role", "delete-definition", "-n", "Model Curator"])
        .success();
    assert!(
        s.cli(&["role", "delete-definition", "-n", "Reader"])
            .failure()
            .stderr
            .contains("built-in")
    );
}
