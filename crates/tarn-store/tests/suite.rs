//! The conformance suite every `Store` backend must pass. `store_suite!` instantiates it for a
//! backend constructor: SQLite in a temporary folder, and a real PostgreSQL server (the one
//! `scripts/test` starts, or a throwaway one this test starts), a fresh database per test.

use serde_json::json;
use std::sync::Arc;
use tarn_store::*;

fn ws(id: &str, name: &str) -> WorkspaceRow {
    WorkspaceRow {
        id: id.into(),
        name: name.into(),
        spec: json!({"name": name}),
        storage_root: format!("/srv/{id}"),
        created_at: 1,
        updated_at: 1,
    }
}

fn key(ws: &str, kind: &str, parent: &str, name: &str, version: &str) -> ResourceKey {
    ResourceKey {
        workspace_id: ws.into(),
        kind: kind.into(),
        parent: parent.into(),
        name: name.into(),
        version: version.into(),
    }
}

fn row(k: ResourceKey, spec: serde_json::Value) -> ResourceRow {
    ResourceRow {
        key: k,
        seq: 0,
        spec,
        archived: false,
        created_by: "test".into(),
        created_at: 1,
        updated_at: 1,
    }
}

fn secret(name: &str, byte: u8) -> SecretRow {
    SecretRow {
        name: name.into(),
        nonce: vec![byte; 24],
        ciphertext: vec![byte; 40],
    }
}

pub async fn workspaces_and_cascade(store: Arc<dyn Store>) {
    store
        .create_workspace(
            &ws("w1", "one"),
            &[row(
                key("w1", "datastores", "", "blob", ""),
                json!({"name": "blob"}),
            )],
            &[secret("datastores::blob@#c", 9)],
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_workspace(&ws("w2", "one"), &[], &[], &[])
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get_workspace("one").await.unwrap().unwrap().id, "w1");
    assert_eq!(store.list_workspaces().await.unwrap().len(), 1);
    assert_eq!(
        store
            .get_secrets("w1", "datastores::blob@")
            .await
            .unwrap()
            .len(),
        1,
        "secrets are created with the workspace"
    );
    let mut changed = ws("w1", "one");
    changed.spec = json!({"name": "one", "description": "d"});
    assert!(store.update_workspace(&changed).await.unwrap());
    assert_eq!(
        store.get_workspace("one").await.unwrap().unwrap().spec["description"],
        "d"
    );
    // With one of its resources: both written, or (the resource is gone) neither.
    let blob = row(
        key("w1", "datastores", "", "blob", ""),
        json!({"moved": true}),
    );
    changed.spec = json!({"name": "one", "description": "e"});
    assert!(
        store
            .update_workspace_with(
                &changed,
                Some((
                    &blob,
                    "datastores::blob@",
                    &[secret("datastores::blob@#k", 7)]
                ))
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_resource(&blob.key).await.unwrap().unwrap().spec["moved"],
        true
    );
    let gone = row(key("w1", "datastores", "", "nope", ""), json!({}));
    changed.spec = json!({"name": "one", "description": "f"});
    assert!(
        !store
            .update_workspace_with(&changed, Some((&gone, "datastores::nope@", &[])))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_workspace("one").await.unwrap().unwrap().spec["description"],
        "e",
        "nothing was written"
    );
    store
        .insert_resource(
            &row(key("w1", "models", "", "m", "1"), json!({})),
            &[secret("models::m@1#x", 1)],
        )
        .await
        .unwrap();
    assert!(store.delete_workspace("w1").await.unwrap());
    assert!(
        store
            .get_resource(&key("w1", "datastores", "", "blob", ""))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store.get_secrets("w1", "").await.unwrap().is_empty(),
        "secrets go with their workspace"
    );
}

pub async fn versions_are_numbered_and_unique(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store
        .insert_resource(&row(key("w1", "data", "", "d", "1.0.0"), json!({})), &[])
        .await
        .unwrap();
    let mut tasks = vec![];
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_next_version(
                    &row(key("w1", "data", "", "d", ""), json!({"name": "d"})),
                    &[],
                )
                .await
                .unwrap()
        }));
    }
    let mut versions: Vec<u32> = vec![];
    for t in tasks {
        versions.push(t.await.unwrap().parse().unwrap());
    }
    versions.sort();
    assert_eq!(
        versions,
        (1..=20).collect::<Vec<_>>(),
        "non-numeric versions do not count; numbers are unique"
    );
    let v7 = store
        .get_resource(&key("w1", "data", "", "d", "7"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        v7.spec["version"], "7",
        "the stored spec carries its version"
    );
    assert!(matches!(
        store
            .insert_resource(&row(key("w1", "data", "", "d", "7"), json!({})), &[])
            .await,
        Err(StoreError::Conflict)
    ));
}

pub async fn latest_and_archive(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    for v in ["1", "2", "3"] {
        store
            .insert_resource(&row(key("w1", "models", "", "m", v), json!({"v": v})), &[])
            .await
            .unwrap();
    }
    store
        .insert_resource(&row(key("w1", "models", "", "other", "9"), json!({})), &[])
        .await
        .unwrap();
    let latest = |s: Arc<dyn Store>| async move {
        s.latest_resource(&key("w1", "models", "", "m", ""))
            .await
            .unwrap()
            .map(|r| r.key.version)
    };
    assert_eq!(latest(store.clone()).await.as_deref(), Some("3"));
    assert_eq!(
        store
            .set_archived(&key("w1", "models", "", "m", "3"), true, 2)
            .await
            .unwrap(),
        1
    );
    assert_eq!(latest(store.clone()).await.as_deref(), Some("2"));
    let filter = ResourceFilter {
        latest_only: true,
        ..Default::default()
    };
    let names: Vec<(String, String)> = store
        .list_resources("w1", "models", &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key.name, r.key.version))
        .collect();
    assert_eq!(
        names,
        [
            ("m".to_string(), "2".to_string()),
            ("other".to_string(), "9".to_string())
        ]
    );
    let all = ResourceFilter {
        name: Some("m"),
        include_archived: true,
        ..Default::default()
    };
    assert_eq!(
        store
            .list_resources("w1", "models", &all)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .set_archived(&key("w1", "models", "", "m", ""), true, 3)
            .await
            .unwrap(),
        3
    );
    assert_eq!(latest(store.clone()).await, None);
}

pub async fn secrets_follow_their_resource(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let k = key("w1", "datastores", "", "s3", "");
    store
        .insert_resource(
            &row(k.clone(), json!({})),
            &[secret("datastores::s3@#credentials", 1)],
        )
        .await
        .unwrap();
    store
        .insert_resource(
            &row(key("w1", "datastores", "", "s3x", ""), json!({})),
            &[secret("datastores::s3x@#credentials", 2)],
        )
        .await
        .unwrap();
    assert!(
        store
            .update_resource(&row(k.clone(), json!({"a": 1})), "datastores::s3@", None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_secrets("w1", "datastores::s3@").await.unwrap()[0].nonce[0],
        1,
        "None keeps secrets"
    );
    store
        .update_resource(
            &row(k.clone(), json!({"a": 2})),
            "datastores::s3@",
            Some(&[secret("datastores::s3@#credentials", 3)]),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_secrets("w1", "datastores::s3@").await.unwrap()[0].nonce[0],
        3,
        "Some replaces them"
    );
    assert_eq!(
        store.delete_resource(&k, "datastores::s3@").await.unwrap(),
        1
    );
    assert!(
        store
            .get_secrets("w1", "datastores::s3@")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_secrets("w1", "datastores::s3x@")
            .await
            .unwrap()
            .len(),
        1,
        "a name sharing the prefix keeps its secrets"
    );
}

pub async fn children_go_with_their_parent(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store
        .insert_resource(
            &row(key("w1", "online-endpoints", "", "ep", ""), json!({})),
            &[],
        )
        .await
        .unwrap();
    store
        .insert_resource(
            &row(
                key(
                    "w1",
                    "online-deployments",
                    "online-endpoints/ep",
                    "blue",
                    "",
                ),
                json!({}),
            ),
            &[],
        )
        .await
        .unwrap();
    store
        .insert_resource(
            &row(
                key(
                    "w1",
                    "online-deployments",
                    "online-endpoints/ep2",
                    "blue",
                    "",
                ),
                json!({}),
            ),
            &[],
        )
        .await
        .unwrap();
    store
        .delete_resource(
            &key("w1", "online-endpoints", "", "ep", ""),
            "online-endpoints::ep@",
        )
        .await
        .unwrap();
    assert!(
        store
            .get_resource(&key(
                "w1",
                "online-deployments",
                "online-endpoints/ep",
                "blue",
                ""
            ))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_resource(&key(
                "w1",
                "online-deployments",
                "online-endpoints/ep2",
                "blue",
                ""
            ))
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn users_tokens_roles(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let u = UserRow {
        id: "u1".into(),
        name: "alice".into(),
        is_admin: false,
        created_at: 1,
        disabled: false,
        kind: "user".into(),
        subject: String::new(),
        groups: vec![],
    };
    store.create_user(&u).await.unwrap();
    assert!(matches!(
        store
            .create_user(&UserRow {
                id: "u2".into(),
                ..u.clone()
            })
            .await,
        Err(StoreError::Conflict)
    ));
    store
        .create_token(&TokenRow {
            id: "t1".into(),
            user_id: "u1".into(),
            hash: "h1".into(),
            description: "d".into(),
            created_at: 1,
            scope: String::new(),
            expires_at: 0,
            last_used_at: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        store.find_token("h1").await.unwrap().unwrap().1.name,
        "alice"
    );
    assert!(store.find_token("nope").await.unwrap().is_none());
    let role = RoleRow {
        workspace_id: "w1".into(),
        user_id: "u1".into(),
        user_name: "alice".into(),
        role: "Reader".into(),
        created_at: 1,
    };
    store.assign_role(&role).await.unwrap();
    store
        .assign_role(&RoleRow {
            role: "Owner".into(),
            ..role.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.role_of("w1", "u1").await.unwrap().as_deref(),
        Some("Owner"),
        "assigning again replaces the role"
    );
    assert_eq!(store.list_roles("w1").await.unwrap().len(), 1);
    let everywhere = store.roles_of_user("u1").await.unwrap();
    assert_eq!(everywhere.len(), 1);
    assert_eq!(
        (
            everywhere[0].workspace_id.as_str(),
            everywhere[0].role.as_str()
        ),
        ("w1", "Owner")
    );
    assert!(store.remove_role("w1", "u1").await.unwrap());
    assert_eq!(store.role_of("w1", "u1").await.unwrap(), None);

    // Token lifecycle: listed with their users, used, revoked (with their studio sessions).
    store
        .create_token(&TokenRow {
            id: "t2".into(),
            user_id: "u1".into(),
            hash: "h2".into(),
            description: "ci".into(),
            created_at: 2,
            scope: "ws:w1:Reader".into(),
            expires_at: 99,
            last_used_at: 0,
        })
        .await
        .unwrap();
    let listed = store.list_tokens(Some("u1")).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|(t, _)| t.id.as_str())
            .collect::<Vec<_>>(),
        ["t1", "t2"]
    );
    assert_eq!(listed[1].1, "alice");
    assert_eq!(listed[1].0.expires_at, 99);
    assert_eq!(store.list_tokens(None).await.unwrap().len(), 2);
    assert!(store.list_tokens(Some("nobody")).await.unwrap().is_empty());
    assert_eq!(
        store.find_token_by_id("t2").await.unwrap().unwrap().0.hash,
        "h2"
    );
    assert!(store.find_token_by_id("nope").await.unwrap().is_none());
    store.touch_token("t2", 1234).await.unwrap();
    assert_eq!(
        store
            .find_token("h2")
            .await
            .unwrap()
            .unwrap()
            .0
            .last_used_at,
        1234
    );
    store
        .create_session(
            &tarn_store::SessionRow {
                id_hash: "s2".into(),
                token_hash: "h2".into(),
                csrf: "c".into(),
                expires_at: i64::MAX,
                via: String::new(),
            },
            0,
        )
        .await
        .unwrap();
    assert_eq!(store.delete_token("t2").await.unwrap().unwrap().hash, "h2");
    assert!(store.delete_token("t2").await.unwrap().is_none());
    assert!(store.find_token("h2").await.unwrap().is_none());
    assert!(
        store.get_session("s2", 0).await.unwrap().is_none(),
        "its session ends with it"
    );

    // Disabling is a flag on the user; deleting takes their tokens and roles with them.
    assert!(store.set_user_disabled("u1", true).await.unwrap());
    assert!(store.find_token("h1").await.unwrap().unwrap().1.disabled);
    assert!(store.set_user_disabled("u1", false).await.unwrap());
    assert!(!store.set_user_disabled("nobody", true).await.unwrap());
    store.assign_role(&role).await.unwrap();
    assert!(store.delete_user("u1").await.unwrap());
    assert!(!store.delete_user("u1").await.unwrap());
    assert!(store.get_user("alice").await.unwrap().is_none());
    assert!(store.find_token("h1").await.unwrap().is_none());
    assert!(store.roles_of_user("u1").await.unwrap().is_empty());

    // Custom role definitions: unique by name, listed by name, known to be in use.
    store
        .create_role_definition("Ops", r#"{"actions":["*"]}"#, 1)
        .await
        .unwrap();
    assert!(matches!(
        store.create_role_definition("Ops", "{}", 2).await,
        Err(StoreError::Conflict)
    ));
    store
        .create_role_definition("Audit", "{}", 3)
        .await
        .unwrap();
    assert_eq!(
        store.get_role_definition("Ops").await.unwrap().as_deref(),
        Some(r#"{"actions":["*"]}"#)
    );
    let names: Vec<String> = store
        .list_role_definitions()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["Audit", "Ops"]);
    assert!(!store.role_in_use("Ops").await.unwrap());
    store
        .create_user(&UserRow {
            id: "u3".into(),
            name: "olga".into(),
            ..u.clone()
        })
        .await
        .unwrap();
    store
        .assign_role(&RoleRow {
            user_id: "u3".into(),
            role: "Ops".into(),
            ..role.clone()
        })
        .await
        .unwrap();
    assert!(store.role_in_use("Ops").await.unwrap());
    // Single sign-on: users by subject, their groups, roles given to groups.
    store
        .create_user(&UserRow {
            id: "u4".into(),
            name: "sso".into(),
            subject: "http://idp sub-4".into(),
            groups: vec!["ml".into()],
            ..u.clone()
        })
        .await
        .unwrap();
    let found = store
        .get_user_by_subject("http://idp sub-4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.name.as_str(), found.groups.clone()),
        ("sso", vec!["ml".to_string()])
    );
    assert!(store.get_user_by_subject("").await.unwrap().is_none());
    store
        .set_user_groups("u4", &["ml".into(), "ops".into()])
        .await
        .unwrap();
    assert_eq!(
        store.get_user("sso").await.unwrap().unwrap().groups,
        ["ml", "ops"]
    );
    store
        .assign_group_role("w1", "ml", "Reader", 1)
        .await
        .unwrap();
    store
        .assign_group_role("w1", "ml", "Audit", 2)
        .await
        .unwrap();
    store
        .assign_group_role("w1", "ops", "Owner", 3)
        .await
        .unwrap();
    assert_eq!(store.list_group_roles("w1").await.unwrap().len(), 2);
    let mut roles = store
        .group_roles_of("w1", &["ml".into(), "x".into()])
        .await
        .unwrap();
    roles.sort();
    assert_eq!(roles, ["Audit"]);
    assert!(
        store.role_in_use("Audit").await.unwrap(),
        "a group's role is in use"
    );
    assert!(store.remove_group_role("w1", "ml").await.unwrap());
    assert!(!store.remove_group_role("w1", "ml").await.unwrap());
    store.set_meta("k2", "third").await.unwrap();
    store.set_meta("k2", "fourth").await.unwrap();
    assert_eq!(
        store.get_meta("k2").await.unwrap().as_deref(),
        Some("fourth")
    );
    // The audit log: appended, listed newest first with filters, pruned by age.
    let event = |id: &str, at: i64, actor: &str, ws: &str| tarn_store::AuditRow {
        id: id.into(),
        at,
        actor: actor.into(),
        actor_kind: "user".into(),
        address: "127.0.0.1".into(),
        method: "POST".into(),
        path: "/api/v1/x".into(),
        workspace: ws.into(),
        status: 201,
        changes: if id == "e1" {
            "description, tags.team".into()
        } else {
            String::new()
        },
    };
    store
        .record_audit(&[
            event("e1", 10, "alice", "one"),
            event("e2", 20, "bob", ""),
            event("e3", 30, "alice", ""),
        ])
        .await
        .unwrap();
    let all = |f: tarn_store::AuditFilter<'static>| {
        let store = store.clone();
        async move {
            store
                .list_audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all(tarn_store::AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await,
        ["e3", "e2", "e1"]
    );
    assert_eq!(
        all(tarn_store::AuditFilter {
            actor: Some("alice"),
            limit: 10,
            ..Default::default()
        })
        .await,
        ["e3", "e1"]
    );
    assert_eq!(
        all(tarn_store::AuditFilter {
            workspace: Some("one"),
            limit: 10,
            ..Default::default()
        })
        .await,
        ["e1"]
    );
    let listed = store
        .list_audit(&tarn_store::AuditFilter {
            workspace: Some("one"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed[0].changes, "description, tags.team",
        "what changed is kept"
    );
    assert_eq!(
        all(tarn_store::AuditFilter {
            since: Some(20),
            limit: 10,
            ..Default::default()
        })
        .await,
        ["e3", "e2"]
    );
    assert_eq!(
        all(tarn_store::AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await,
        ["e3"]
    );
    assert_eq!(store.prune_audit(25).await.unwrap(), 2);
    assert!(store.delete_role_definition("Audit").await.unwrap());
    assert!(!store.delete_role_definition("Audit").await.unwrap());
    assert!(store.get_role_definition("Audit").await.unwrap().is_none());
    assert_eq!(store.init_meta("k", "first").await.unwrap(), "first");
    assert_eq!(
        store.init_meta("k", "second").await.unwrap(),
        "first",
        "init_meta never overwrites"
    );
}

fn job(ws: &str, name: &str, status: &str) -> JobRow {
    JobRow {
        workspace_id: ws.into(),
        workspace: String::new(),
        name: name.into(),
        seq: 0,
        parent: String::new(),
        job_type: "command".into(),
        experiment: "exp".into(),
        compute: "serverless".into(),
        priority: 0,
        status: status.into(),
        spec: json!({"command": "echo hi"}),
        state: json!({}),
        archived: false,
        created_by: "alice".into(),
        created_at: 1,
        updated_at: 1,
    }
}

/// Jobs: names unique per workspace, FIFO order across workspaces, compare-and-set status
/// transitions (the scheduler's guarantee that nothing starts twice), scoped tokens.
pub async fn jobs_and_job_tokens(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store
        .create_workspace(&ws("w2", "two"), &[], &[], &[])
        .await
        .unwrap();
    store.insert_job(&job("w1", "a", "Queued")).await.unwrap();
    store.insert_job(&job("w2", "a", "Queued")).await.unwrap();
    store
        .insert_job(&job("w1", "b", "Completed"))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_job(&job("w1", "a", "Queued")).await,
        Err(StoreError::Conflict)
    ));
    let queued = store.jobs_in_status(&["Queued", "Running"]).await.unwrap();
    let order: Vec<(&str, &str)> = queued
        .iter()
        .map(|j| (j.workspace.as_str(), j.name.as_str()))
        .collect();
    assert_eq!(order, [("one", "a"), ("two", "a")]);
    assert!(queued[0].seq < queued[1].seq);

    let read = store.get_job("w1", "a").await.unwrap().unwrap();
    assert_eq!(read.workspace, "one");
    let mut a = read.clone();
    a.status = "Preparing".into();
    a.state = json!({"nodes": ["n0"]});
    a.updated_at = read.updated_at + 1;
    assert!(store.update_job(&a, &read).await.unwrap());
    assert!(
        !store.update_job(&a, &read).await.unwrap(),
        "a second writer expecting Queued loses"
    );
    // A write that keeps the status but was made from an older read loses too: nothing it
    // did not see is overwritten.
    let fresh = store.get_job("w1", "a").await.unwrap().unwrap();
    let mut first = fresh.clone();
    first.state = json!({"nodes": ["n0"], "pid": 1});
    first.updated_at = fresh.updated_at + 1;
    let mut second = fresh.clone();
    second.state = json!({"nodes": ["n0"], "engine": "x"});
    second.updated_at = fresh.updated_at + 1;
    assert!(store.update_job(&first, &fresh).await.unwrap());
    assert!(!store.update_job(&second, &fresh).await.unwrap());
    let a = store.get_job("w1", "a").await.unwrap().unwrap();
    assert_eq!(
        (a.status.as_str(), &a.state),
        ("Preparing", &json!({"nodes": ["n0"], "pid": 1}))
    );

    let listed = store.list_jobs("w1", &JobFilter::default()).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    let done = JobFilter {
        status: Some("Completed"),
        ..Default::default()
    };
    assert_eq!(store.list_jobs("w1", &done).await.unwrap().len(), 1);

    store
        .create_user(&UserRow {
            id: "u1".into(),
            name: "alice".into(),
            is_admin: false,
            created_at: 1,
            disabled: false,
            kind: "user".into(),
            subject: String::new(),
            groups: vec![],
        })
        .await
        .unwrap();
    let token = TokenRow {
        id: "t1".into(),
        user_id: "u1".into(),
        hash: "h1".into(),
        description: "runner".into(),
        created_at: 1,
        scope: "job:w1:a".into(),
        expires_at: 0,
        last_used_at: 0,
    };
    store.create_token(&token).await.unwrap();
    assert_eq!(
        store.find_token("h1").await.unwrap().unwrap().0.scope,
        "job:w1:a"
    );
    assert_eq!(store.delete_tokens("job:w1:a").await.unwrap(), 1);
    assert!(store.find_token("h1").await.unwrap().is_none());
    assert_eq!(
        store.delete_tokens("").await.unwrap(),
        0,
        "user tokens are never bulk-deleted"
    );

    assert!(store.delete_workspace("w1").await.unwrap());
    assert!(
        store.get_job("w1", "b").await.unwrap().is_none(),
        "jobs go with their workspace"
    );
}

fn metric(key: &str, value: f64, step: i64, timestamp: i64) -> MetricRow {
    MetricRow {
        key: key.into(),
        value,
        timestamp,
        step,
    }
}

/// A finished run of alice's in workspace `w1`, named by its id.
fn finished_run(id: &str, experiment: i64, start_time: i64) -> RunRow {
    RunRow {
        workspace_id: "w1".into(),
        run_id: id.to_string(),
        experiment_id: experiment,
        run_name: id.to_string(),
        user_id: "alice".into(),
        status: "FINISHED".into(),
        start_time: Some(start_time),
        end_time: None,
        lifecycle_stage: "active".into(),
        artifact_uri: String::new(),
    }
}

/// The ids of the runs a search of workspace `w1` answers, in order.
async fn run_ids(store: &Arc<dyn Store>, query: &RunQuery) -> Vec<String> {
    store
        .search_runs("w1", query)
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.run_id)
        .collect()
}

/// Tracking: experiments numbered per workspace, latest metric by (step, timestamp), params
/// immutable, NaN kept, searches filtered and ordered in SQL.
pub async fn tracking_runs_metrics_and_search(store: Arc<dyn Store>) {
    use tarn_spec::mlflow_search::{parse_filter, parse_order_by};
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let exp = ExperimentRow {
        workspace_id: "w1".into(),
        experiment_id: 0,
        name: "Default".into(),
        artifact_location: "mlflow-artifacts:/{experiment_id}".into(),
        lifecycle_stage: "active".into(),
        creation_time: 1,
        last_update_time: 1,
        tags: vec![("team".into(), "ml".into())],
    };
    assert_eq!(store.create_experiment(&exp).await.unwrap(), 0);
    let second = ExperimentRow {
        name: "second".into(),
        ..exp.clone()
    };
    assert_eq!(store.create_experiment(&second).await.unwrap(), 1);
    assert!(matches!(
        store.create_experiment(&second).await,
        Err(StoreError::Conflict)
    ));
    let got = store
        .experiment_by_name("w1", "second")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.artifact_location.as_str(), got.tags.len()),
        ("mlflow-artifacts:/1", 1)
    );

    for (i, acc) in [0.5, 0.9, 0.7].iter().enumerate() {
        let run = RunRow {
            run_name: format!("run-{i}"),
            ..finished_run(&format!("r{i}"), 0, i as i64)
        };
        store
            .create_run(&run, &[("mlflow.user".into(), "alice".into())])
            .await
            .unwrap();
        let lr = format!("0.0{i}");
        store
            .log_batch(
                "w1",
                &run.run_id,
                &[metric("acc", *acc, 5, 10), metric("acc", 0.0, 1, 99)],
                &[("lr".into(), lr)],
                &[],
            )
            .await
            .unwrap()
            .unwrap();
    }
    let (_, data) = store.get_run("w1", "r1").await.unwrap().unwrap();
    assert_eq!(
        data.metrics,
        vec![metric("acc", 0.9, 5, 10)],
        "the highest step wins, not the last write"
    );
    assert_eq!(
        store
            .metric_history("w1", "r1", "acc", 0, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    // Charts: a long history is sampled in the store, first and last points kept, in order.
    let long: Vec<MetricRow> = (0..1000).map(|i| metric("loss", i as f64, i, i)).collect();
    store
        .log_batch("w1", "r2", &long, &[], &[])
        .await
        .unwrap()
        .unwrap();
    let sampled = store
        .metric_history_sampled("w1", "r2", "loss", 100)
        .await
        .unwrap();
    assert!((90..=101).contains(&sampled.len()), "{}", sampled.len());
    assert_eq!(sampled.first().map(|m| m.step), Some(0));
    assert_eq!(sampled.last().map(|m| m.step), Some(999));
    assert!(sampled.windows(2).all(|w| w[0].step < w[1].step));
    let short = store
        .metric_history_sampled("w1", "r1", "acc", 100)
        .await
        .unwrap();
    assert_eq!(short.len(), 2, "short histories come whole");
    let conflict = store
        .log_batch("w1", "r1", &[], &[("lr".into(), "9".into())], &[])
        .await
        .unwrap();
    assert!(
        matches!(&conflict, Err(BatchRefused::ParamConflict { old, .. }) if old == "0.01"),
        "{conflict:?}"
    );
    // A missing run, or a deleted one, takes nothing.
    let missing = store
        .log_batch("w1", "nope", &[metric("loss", 1.0, 0, 1)], &[], &[])
        .await
        .unwrap();
    assert_eq!(missing, Err(BatchRefused::NoRun));
    let (mut row, before) = store.get_run("w1", "r1").await.unwrap().unwrap();
    row.lifecycle_stage = "deleted".into();
    store.update_run(&row).await.unwrap();
    let refused = store
        .log_batch(
            "w1",
            "r1",
            &[metric("loss", 5.0, 0, 99)],
            &[("new".into(), "1".into())],
            &[("t".into(), "v".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(BatchRefused::RunNotActive {
            stage: "deleted".into()
        })
    );
    let (_, after) = store.get_run("w1", "r1").await.unwrap().unwrap();
    assert_eq!(
        format!("{after:?}"),
        format!("{before:?}"),
        "a refused batch writes nothing"
    );
    row.lifecycle_stage = "active".into();
    store.update_run(&row).await.unwrap();
    store
        .log_batch("w1", "r1", &[metric("loss", f64::NAN, 0, 1)], &[], &[])
        .await
        .unwrap()
        .unwrap();
    let (_, data) = store.get_run("w1", "r1").await.unwrap().unwrap();
    assert!(
        data.metrics
            .iter()
            .any(|m| m.key == "loss" && m.value.is_nan())
    );
    // History keeps every value exactly, infinities and NaN included, in step order, with
    // points of one step in the order they were logged.
    // NaN and real values, in turns, through every pooled connection: a statement prepared
    // with a NULL value still takes a real one.
    for i in 0..40 {
        let v = if i % 2 == 0 { f64::NAN } else { i as f64 };
        store
            .log_batch("w1", "r1", &[metric("turns", v, i, i)], &[], &[])
            .await
            .unwrap()
            .unwrap();
    }
    let odd = [
        0.1 + 0.2,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-300,
        -0.0,
        1.0 / 3.0,
    ];
    let batch: Vec<MetricRow> = odd
        .iter()
        .enumerate()
        .map(|(i, v)| metric("odd", *v, 10 - i as i64, 5))
        .collect();
    store
        .log_batch("w1", "r1", &batch, &[], &[])
        .await
        .unwrap()
        .unwrap();
    store
        .log_batch(
            "w1",
            "r1",
            &[metric("odd", 7.0, 10, 5), metric("odd", f64::NAN, 0, 9)],
            &[],
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    // A run's latest values are exact too (searches and `get_run` read them).
    let latest: Vec<MetricRow> = odd
        .iter()
        .enumerate()
        .map(|(i, v)| metric(&format!("exact{i}"), *v, 1, 1))
        .collect();
    store
        .log_batch("w1", "r1", &latest, &[], &[])
        .await
        .unwrap()
        .unwrap();
    let (_, data) = store.get_run("w1", "r1").await.unwrap().unwrap();
    for (i, v) in odd.iter().enumerate() {
        let got = data
            .metrics
            .iter()
            .find(|m| m.key == format!("exact{i}"))
            .unwrap();
        // (-0.0 == 0.0: SQLite keeps a zero, not its sign.)
        assert!(got.value == *v, "exact{i}: {v} came back as {}", got.value);
    }
    let history = store
        .metric_history("w1", "r1", "odd", 0, 100)
        .await
        .unwrap();
    let got: Vec<(i64, f64)> = history.iter().map(|m| (m.step, m.value)).collect();
    assert_eq!(got.len(), 8);
    assert!(
        got[0].0 == 0 && got[0].1.is_nan() && history[0].timestamp == 9,
        "{got:?}"
    );
    assert_eq!(
        got[1..].iter().map(|g| g.0).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9, 10, 10]
    );
    for (i, v) in odd.iter().enumerate() {
        let at = got.iter().find(|g| g.0 == 10 - i as i64).unwrap().1;
        assert_eq!(
            at.to_bits(),
            v.to_bits(),
            "value {v} comes back bit for bit"
        );
    }
    assert_eq!(
        got[7].1, 7.0,
        "the later point of step 10 comes after the earlier one"
    );
    let page = store
        .metric_history("w1", "r1", "odd", 6, 100)
        .await
        .unwrap();
    assert_eq!(page.len(), 2, "offsets page through the sorted history");

    let search = |filter: &str, order: &str| {
        let store = store.clone();
        let query = RunQuery {
            experiment_ids: vec![0],
            lifecycle_stage: Some("active".into()),
            clauses: parse_filter(filter).unwrap(),
            order_by: if order.is_empty() {
                vec![]
            } else {
                vec![parse_order_by(order).unwrap()]
            },
            offset: 0,
            limit: 100,
        };
        async move { run_ids(&store, &query).await }
    };
    assert_eq!(
        search("metrics.acc > 0.6", "metrics.acc DESC").await,
        ["r1", "r2"]
    );
    assert_eq!(search("params.lr = '0.00'", "").await, ["r0"]);
    assert_eq!(
        search(
            "tags.`mlflow.user` LIKE 'ali%'",
            "attributes.start_time ASC"
        )
        .await,
        ["r0", "r1", "r2"]
    );
    assert_eq!(
        search("tags.`mlflow.user` LIKE 'ALI%'", "").await,
        Vec::<String>::new(),
        "LIKE is case-sensitive"
    );
    assert_eq!(search("tags.`mlflow.user` ILIKE 'ALI%'", "").await.len(), 3);
    assert_eq!(
        search("attributes.run_name IN ('run-0', 'run-2')", "").await,
        ["r2", "r0"]
    );
    assert_eq!(
        search("", "").await,
        ["r2", "r1", "r0"],
        "newest first by default"
    );
}

/// Ordering by a metric: runs with a value in its order (ties by the next key, then newest
/// first), then runs without one (none logged, or NaN) in the order of the next key, the same whichever page boundary a
/// request crosses; filters on the ordering metric and on other keys narrow both parts.
pub async fn search_ordered_by_a_metric_pages_through_runs_without_it(store: Arc<dyn Store>) {
    use tarn_spec::mlflow_search::{parse_filter, parse_order_by};
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    for (id, name) in [(0, "Default"), (1, "other")] {
        let exp = ExperimentRow {
            workspace_id: "w1".into(),
            experiment_id: id,
            name: name.into(),
            artifact_location: "mlflow-artifacts:/x".into(),
            lifecycle_stage: "active".into(),
            creation_time: 1,
            last_update_time: 1,
            tags: vec![],
        };
        store.create_experiment(&exp).await.unwrap();
    }
    // (run, experiment, loss, lr); start times rise with the position in this list.
    let runs: [(&str, i64, Option<f64>, Option<&str>); 8] = [
        ("a", 0, Some(0.3), None),
        ("b", 0, Some(0.1), Some("0.2")),
        ("c", 0, Some(f64::NAN), Some("0.3")),
        ("d", 0, None, None),
        ("e", 0, Some(0.2), Some("0.9")),
        ("f", 0, Some(0.2), None),
        ("g", 0, None, Some("0.5")),
        ("x", 1, Some(0.0), Some("0.5")),
    ];
    for (i, (id, experiment, loss, lr)) in runs.iter().enumerate() {
        let run = finished_run(id, *experiment, i as i64);
        store.create_run(&run, &[]).await.unwrap();
        let metrics: Vec<MetricRow> = loss.iter().map(|v| metric("loss", *v, 1, 1)).collect();
        let params: Vec<(String, String)> = lr
            .iter()
            .map(|v| ("lr".to_string(), v.to_string()))
            .collect();
        store
            .log_batch("w1", id, &metrics, &params, &[])
            .await
            .unwrap()
            .unwrap();
    }
    let search = |filter: &str, order: &[&str], offset: i64, limit: i64| {
        let store = store.clone();
        let query = RunQuery {
            experiment_ids: vec![0],
            lifecycle_stage: Some("active".into()),
            clauses: parse_filter(filter).unwrap(),
            order_by: order.iter().map(|o| parse_order_by(o).unwrap()).collect(),
            offset,
            limit,
        };
        async move { run_ids(&store, &query).await.join("") }
    };
    let pages = |order: &'static [&'static str], size: i64| async move {
        let mut all = String::new();
        for offset in (0..9).step_by(size as usize) {
            all += &search("", order, offset, size).await;
        }
        all
    };
    let asc: &[&str] = &["metrics.loss ASC", "params.lr DESC"];
    let desc: &[&str] = &["metrics.loss DESC", "params.lr DESC"];
    assert_eq!(search("", asc, 0, 100).await, "befagcd");
    assert_eq!(search("", desc, 0, 100).await, "aefbgcd");
    for size in [1, 2, 3, 4] {
        assert_eq!(pages(asc, size).await, "befagcd", "pages of {size}");
        assert_eq!(pages(desc, size).await, "aefbgcd", "pages of {size}");
    }
    assert_eq!(search("", &["metrics.loss ASC"], 4, 2).await, "gd");
    assert_eq!(search("metrics.loss < 0.25", desc, 0, 100).await, "efb");
    assert_eq!(search("metrics.loss >= 0.2", asc, 1, 100).await, "fa");
    assert_eq!(search("params.lr = '0.5'", asc, 0, 100).await, "g");
    assert_eq!(search("params.lr LIKE '0.%'", asc, 0, 100).await, "begc");
    assert_eq!(search("metrics.loss < 0", asc, 0, 100).await, "");
}

/// MLflow 3 links and the registry's rename: models a run used and produced (a link made
/// again keeps its new step), a logged model's metrics (NaN and exact values kept), the datasets
/// an experiment's runs used, and a rename that moves every version and refuses a taken name.
pub async fn model_links_metrics_datasets_and_renames(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let exp = ExperimentRow {
        workspace_id: "w1".into(),
        experiment_id: 0,
        name: "Default".into(),
        artifact_location: "mlflow-artifacts:/0".into(),
        lifecycle_stage: "active".into(),
        creation_time: 1,
        last_update_time: 1,
        tags: vec![],
    };
    store.create_experiment(&exp).await.unwrap();
    let run = RunRow {
        workspace_id: "w1".into(),
        run_id: "r0".into(),
        experiment_id: 0,
        run_name: "run-0".into(),
        user_id: "alice".into(),
        status: "RUNNING".into(),
        start_time: Some(1),
        end_time: None,
        lifecycle_stage: "active".into(),
        artifact_uri: String::new(),
    };
    store.create_run(&run, &[]).await.unwrap();

    store
        .link_models("w1", "r0", ModelLink::Input, &[("m-a".into(), 0)])
        .await
        .unwrap();
    store
        .link_models("w1", "r0", ModelLink::Output, &[("m-b".into(), 1)])
        .await
        .unwrap();
    store
        .link_models("w1", "r0", ModelLink::Output, &[("m-b".into(), 7)])
        .await
        .unwrap();
    let (_, data) = store.get_run("w1", "r0").await.unwrap().unwrap();
    assert_eq!(data.model_inputs, ["m-a"]);
    assert_eq!(data.model_outputs, [("m-b".to_string(), 7)]);

    let measured = |value: f64, dataset: &str| ModelMetricRow {
        model_id: "m-b".into(),
        run_id: "r0".into(),
        metric: metric("auc", value, 1, 5),
        dataset_name: dataset.into(),
        dataset_digest: "d1".into(),
    };
    store
        .log_model_metrics("w1", &[measured(0.1 + 0.2, "iris"), measured(f64::NAN, "")])
        .await
        .unwrap();
    let got = store.model_metrics("w1", "m-b").await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0],
        measured(0.1 + 0.2, "iris"),
        "the value comes back exactly"
    );
    assert!(got[1].metric.value.is_nan());
    assert!(store.model_metrics("w1", "m-a").await.unwrap().is_empty());

    store
        .log_inputs(
            "w1",
            "r0",
            &[(
                "iris".into(),
                "abc".into(),
                json!({"name": "iris", "digest": "abc"}),
                json!({"mlflow.data.context": "training"}),
            )],
        )
        .await
        .unwrap();
    let summaries = store.dataset_summaries("w1", &[0]).await.unwrap();
    assert_eq!(
        summaries,
        [DatasetSummary {
            experiment_id: 0,
            name: "iris".into(),
            digest: "abc".into(),
            context: Some("training".into()),
        }]
    );
    assert!(
        store
            .dataset_summaries("w1", &[5])
            .await
            .unwrap()
            .is_empty()
    );

    for (name, version) in [("churn", "1"), ("churn", "2"), ("taken", "1")] {
        store
            .insert_resource(
                &row(
                    key("w1", "models", "", name, version),
                    json!({"name": name, "version": version}),
                ),
                &[],
            )
            .await
            .unwrap();
    }
    let facts = RegisteredModelRow {
        workspace_id: "w1".into(),
        name: "churn".into(),
        description: "predicts churn".into(),
        tags: json!({}),
        aliases: json!({"champion": "2"}),
        creation_time: 1,
        last_updated_time: 1,
    };
    store.put_registered_model(&facts, true).await.unwrap();
    assert!(matches!(
        store.rename_model("w1", "churn", "taken", 9).await,
        Err(StoreError::Conflict)
    ));
    store
        .rename_model("w1", "churn", "attrition", 9)
        .await
        .unwrap();
    assert!(
        store
            .get_registered_model("w1", "churn")
            .await
            .unwrap()
            .is_none()
    );
    let moved = store
        .get_registered_model("w1", "attrition")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            moved.description.as_str(),
            moved.aliases.clone(),
            moved.last_updated_time
        ),
        ("predicts churn", json!({"champion": "2"}), 9)
    );
    let v2 = store
        .get_resource(&key("w1", "models", "", "attrition", "2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.spec["name"], "attrition", "the spec names the new name");
    assert!(
        store
            .get_resource(&key("w1", "models", "", "churn", "1"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn compute_states_are_set_listed_and_go_with_their_workspace(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store
        .create_workspace(&ws("w2", "two"), &[], &[], &[])
        .await
        .unwrap();
    let state = |w: &str, name: &str, desired: &str, at: i64| ComputeStateRow {
        workspace_id: w.into(),
        name: name.into(),
        desired: desired.into(),
        reason: "test".into(),
        updated_at: at,
    };
    store
        .set_compute_state(&state("w1", "box", "Running", 1))
        .await
        .unwrap();
    store
        .set_compute_state(&state("w2", "box", "Running", 1))
        .await
        .unwrap();
    // A second write replaces the first.
    store
        .set_compute_state(&state("w1", "box", "Stopped", 2))
        .await
        .unwrap();
    let all = store.compute_states().await.unwrap();
    assert_eq!(
        all,
        vec![
            state("w1", "box", "Stopped", 2),
            state("w2", "box", "Running", 1)
        ]
    );
    store.delete_compute_state("w1", "box").await.unwrap();
    assert_eq!(
        store.compute_states().await.unwrap(),
        vec![state("w2", "box", "Running", 1)]
    );
    assert!(store.delete_workspace("w2").await.unwrap());
    assert!(
        store.compute_states().await.unwrap().is_empty(),
        "gone with the workspace"
    );
}

pub async fn schedule_states_are_set_listed_and_go_with_their_workspace(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store
        .create_workspace(&ws("w2", "two"), &[], &[], &[])
        .await
        .unwrap();
    let state = |w: &str, through: i64, error: &str| ScheduleStateRow {
        workspace_id: w.into(),
        name: "nightly".into(),
        created_at: 5,
        rule: "abc".into(),
        through,
        fired: through / 10,
        skipped: 1,
        last_error: error.into(),
        updated_at: through,
    };
    store
        .set_schedule_state(&state("w1", 100, ""))
        .await
        .unwrap();
    store
        .set_schedule_state(&state("w2", 100, ""))
        .await
        .unwrap();
    // A second write replaces the first.
    store
        .set_schedule_state(&state("w1", 160, "no compute"))
        .await
        .unwrap();
    assert_eq!(
        store.schedule_states().await.unwrap(),
        vec![state("w1", 160, "no compute"), state("w2", 100, "")]
    );
    store.delete_schedule_state("w1", "nightly").await.unwrap();
    assert_eq!(
        store.schedule_states().await.unwrap(),
        vec![state("w2", 100, "")]
    );
    assert!(store.delete_workspace("w2").await.unwrap());
    assert!(
        store.schedule_states().await.unwrap().is_empty(),
        "gone with the workspace"
    );
}

/// A job's live log: appends at the log's end grow it, bytes it has are skipped (a runner's
/// resend), an offset past the end is refused with the size, reads start anywhere and stop at
/// `max`; each node has its own log; logs go with their workspace.
pub async fn job_logs_append_once_and_read_anywhere(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store.insert_job(&job("w1", "j", "Running")).await.unwrap();
    let append = |offset: u64, data: &'static str, node: u32| {
        let store = store.clone();
        async move {
            store
                .append_job_log("w1", "j", node, offset, data.as_bytes())
                .await
                .unwrap()
        }
    };
    assert_eq!(append(0, "abc", 0).await, Ok(3));
    assert_eq!(
        append(0, "abcdef", 0).await,
        Ok(6),
        "a resend adds only what is new"
    );
    assert_eq!(append(3, "def", 0).await, Ok(6), "nothing new");
    assert_eq!(append(9, "xyz", 0).await, Err(6), "past the end");
    assert_eq!(append(6, "ghi\n", 0).await, Ok(10));
    assert_eq!(append(0, "node one", 1).await, Ok(8));
    let read = |offset: u64, max: usize, node: u32| {
        let store = store.clone();
        async move {
            let (data, size) = store
                .read_job_log("w1", "j", node, offset, max)
                .await
                .unwrap();
            (String::from_utf8(data).unwrap(), size)
        }
    };
    assert_eq!(read(0, 1 << 20, 0).await, ("abcdefghi\n".into(), 10));
    assert_eq!(read(2, 5, 0).await, ("cdefg".into(), 10));
    assert_eq!(read(10, 100, 0).await, (String::new(), 10));
    assert_eq!(read(0, 100, 1).await, ("node one".into(), 8));
    assert_eq!(read(0, 100, 2).await, (String::new(), 0));
    assert!(store.delete_workspace("w1").await.unwrap());
    assert_eq!(read(0, 100, 0).await, (String::new(), 0));
}

fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, start_ms: i64) -> SpanRow {
    SpanRow {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_id: parent.map(str::to_string),
        name: name.into(),
        span_type: Some("TOOL".into()),
        status: "OK".into(),
        start_ns: start_ms * 1_000_000,
        end_ns: Some((start_ms + 5) * 1_000_000),
        content: format!("{{\"name\": \"{name}\"}}"),
        search_text: format!("{{\"name\": \"{name}\", \"attributes\": {{\"step\": \"{name}\"}}}}"),
    }
}

fn trace_row(ws: &str, id: &str, experiment_id: i64, request_time: i64) -> TraceRow {
    TraceRow {
        workspace_id: ws.into(),
        trace_id: id.into(),
        experiment_id,
        request_time,
        execution_duration: Some(5),
        state: "OK".into(),
        client_request_id: None,
        request_preview: None,
        response_preview: None,
        tags: vec![],
        metadata: vec![],
        assessments: vec![],
    }
}

/// A search of experiment 0's traces: MLflow's filter and order (`""`: none), from `start`.
fn trace_query(filter: &str, order: &str, start: PageStart, limit: i64) -> TraceQuery {
    use tarn_spec::mlflow_search::{Subject, parse_filter_of, parse_order_by_of};
    TraceQuery {
        experiment_ids: vec![0],
        clauses: parse_filter_of(Subject::Traces, filter).unwrap(),
        order_by: (!order.is_empty())
            .then(|| parse_order_by_of(Subject::Traces, order).unwrap())
            .into_iter()
            .collect(),
        start,
        limit,
    }
}

async fn trace_ids(store: &Arc<dyn Store>, filter: &str, order: &str) -> Vec<String> {
    let query = trace_query(filter, order, PageStart::Offset(0), 100);
    store
        .search_traces("w1", &query)
        .await
        .unwrap()
        .into_iter()
        .map(|(t, _)| t.trace_id)
        .collect()
}

/// Pages of a trace search that start after the last trace's key list what offsets list, in
/// every order (ties in time, traces without a duration, ascending and descending), both
/// store searches alike; a key of another order is refused.
async fn trace_pages_start_after_a_key_as_after_an_offset(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    // Three traces share each time; every third has no duration yet.
    for i in 0..12i64 {
        let mut t = trace_row("w1", &format!("tr-{i:02}"), 0, 1000 + i / 3);
        t.execution_duration = (i % 3 != 0).then_some(100 - i);
        t.tags = vec![("half".into(), (i % 2).to_string())];
        store.finalize_trace(&t).await.unwrap();
    }
    for order in [
        "",
        "timestamp_ms ASC",
        "execution_time_ms ASC",
        "execution_time_ms DESC",
        "status ASC",
        "request_id ASC",
    ] {
        for filter in ["", "tags.half = '1'"] {
            let all: Vec<String> = trace_ids(&store, filter, order).await;
            assert!(all.len() >= 6, "{order}: {all:?}");
            for size in [1, 2, 5] {
                let (mut by_key, mut by_info) = (vec![], vec![]);
                let mut start = PageStart::Offset(0);
                for offset in (0..all.len() as i64).step_by(size as usize) {
                    let q = trace_query(filter, order, PageStart::Offset(offset), size);
                    let by_offset = store.search_traces("w1", &q).await.unwrap();
                    let q = trace_query(filter, order, start.clone(), size);
                    let page = store.search_traces("w1", &q).await.unwrap();
                    assert_eq!(page, by_offset, "{order} {filter}: the page at {offset}");
                    let infos = store.search_trace_infos("w1", &q).await.unwrap();
                    by_info.extend(infos.iter().map(|(t, _)| match t {
                        CachedTrace::Row(row, _) => row.trace_id.clone(),
                        CachedTrace::Info(text) => text.clone(),
                    }));
                    assert_eq!(
                        infos.iter().map(|(_, k)| k).collect::<Vec<_>>(),
                        page.iter().map(|(_, k)| k).collect::<Vec<_>>(),
                        "both searches key a trace alike"
                    );
                    by_key.extend(page.iter().map(|(t, _)| t.trace_id.clone()));
                    start = PageStart::After(page.last().unwrap().1.clone());
                }
                assert_eq!(by_key, all, "{order} {filter}: pages of {size}");
                assert_eq!(by_info, all, "{order} {filter}: pages of {size}");
                // After the last trace there is nothing.
                let q = trace_query(filter, order, start, size);
                assert!(store.search_traces("w1", &q).await.unwrap().is_empty());
            }
        }
    }
    // A key of another order (or forged) is refused, not compared with the wrong type.
    let (_, key) = store
        .search_traces("w1", &trace_query("", "", PageStart::Offset(0), 1))
        .await
        .unwrap()
        .remove(0);
    for (order, key) in [
        ("status ASC", key.clone()),
        ("", vec![json!("1000"), json!("tr-01")]),
        ("", vec![json!(1000)]),
        ("", vec![json!(1000), json!(null)]),
    ] {
        let q = trace_query("", order, PageStart::After(key), 1);
        assert!(
            matches!(
                store.search_traces("w1", &q).await,
                Err(StoreError::Refused(_))
            ),
            "{order}"
        );
    }
}

/// Spans make their trace (timing and state from the root), the client's info then wins and
/// later spans no longer change it; searches over attributes, tags, metadata and spans; tags,
/// assessments; deletes by id and by time take the spans, tags and assessments with them.
async fn traces_from_spans_finalize_search_and_delete(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    store
        .create_experiment(&ExperimentRow {
            workspace_id: "w1".into(),
            experiment_id: 0,
            name: "Default".into(),
            artifact_location: "mlflow-artifacts:/0".into(),
            lifecycle_stage: "active".into(),
            creation_time: 1,
            last_update_time: 1,
            tags: vec![],
        })
        .await
        .unwrap();
    // A child span first: the trace exists, in progress.
    let mut seed = trace_row("w1", "tr-a", 0, 1000);
    seed.state = "IN_PROGRESS".into();
    seed.execution_duration = None;
    seed.tags = vec![("mlflow.trace.spansLocation".into(), "TRACKING_STORE".into())];
    store
        .log_spans(&[SpanBatch {
            trace: seed.clone(),
            has_root: false,
            spans: vec![span("tr-a", "s2", Some("s1"), "retrieve", 1001)],
        }])
        .await
        .unwrap();
    let got = store.get_traces("w1", &["tr-a".into()]).await.unwrap();
    assert_eq!(got[0].state, "IN_PROGRESS");
    // The root: timing, state and previews come from it.
    let mut from_root = trace_row("w1", "tr-a", 0, 1000);
    from_root.execution_duration = Some(9);
    from_root.request_preview = Some("question".into());
    store
        .log_spans(&[SpanBatch {
            trace: from_root,
            has_root: true,
            spans: vec![span("tr-a", "s1", None, "answer", 1000)],
        }])
        .await
        .unwrap();
    let got = &store.get_traces("w1", &["tr-a".into()]).await.unwrap()[0];
    assert_eq!(
        (got.state.as_str(), got.execution_duration),
        ("OK", Some(9))
    );
    assert_eq!(got.request_preview.as_deref(), Some("question"));
    // The client's info wins, keeps the spans' tag and preview, and is final.
    let mut info = trace_row("w1", "tr-a", 0, 999);
    info.state = "ERROR".into();
    info.tags = vec![("mlflow.traceName".into(), "answer".into())];
    info.metadata = vec![("mlflow.sourceRun".into(), "r1".into())];
    store.finalize_trace(&info).await.unwrap();
    let mut late = trace_row("w1", "tr-a", 0, 5);
    late.state = "OK".into();
    store
        .log_spans(&[SpanBatch {
            trace: late,
            has_root: true,
            spans: vec![span("tr-a", "s1", None, "answer", 1000)],
        }])
        .await
        .unwrap();
    let got = &store.get_traces("w1", &["tr-a".into()]).await.unwrap()[0];
    assert_eq!((got.state.as_str(), got.request_time), ("ERROR", 999));
    assert_eq!(got.request_preview.as_deref(), Some("question"));
    assert_eq!(got.tags.len(), 2, "{:?}", got.tags);
    assert_eq!(got.metadata, vec![("mlflow.sourceRun".into(), "r1".into())]);
    let spans = store.trace_spans("w1", &["tr-a".into()]).await.unwrap();
    assert_eq!(
        spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["answer", "retrieve"]
    );
    // Two more traces, then searches.
    for (id, at) in [("tr-b", 2000), ("tr-c", 3000)] {
        store
            .finalize_trace(&trace_row("w1", id, 0, at))
            .await
            .unwrap();
    }
    store
        .log_spans(&[SpanBatch {
            trace: trace_row("w1", "tr-c", 0, 3000),
            has_root: false,
            spans: vec![span("tr-c", "s9", Some("s8"), "tool-call", 3001)],
        }])
        .await
        .unwrap();
    assert!(
        store
            .set_trace_tag("w1", "tr-b", "team", "search")
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_trace_tag("w1", "tr-zz", "team", "x")
            .await
            .unwrap()
    );
    assert_eq!(trace_ids(&store, "", "").await, ["tr-c", "tr-b", "tr-a"]);
    assert_eq!(
        trace_ids(&store, "", "timestamp_ms ASC").await,
        ["tr-a", "tr-b", "tr-c"]
    );
    assert_eq!(
        trace_ids(&store, "trace.status = 'ERROR'", "").await,
        ["tr-a"]
    );
    assert_eq!(
        trace_ids(&store, "trace.timestamp_ms > 1500", "").await,
        ["tr-c", "tr-b"]
    );
    assert_eq!(
        trace_ids(&store, "tags.team = 'search'", "").await,
        ["tr-b"]
    );
    assert_eq!(
        trace_ids(&store, "tags.team LIKE 'sea%'", "").await,
        ["tr-b"]
    );
    assert_eq!(trace_ids(&store, "run_id = 'r1'", "").await, ["tr-a"]);
    store
        .link_traces_to_run("w1", &["tr-b".into(), "tr-zz".into()], "r1")
        .await
        .unwrap();
    assert_eq!(
        trace_ids(&store, "run_id = 'r1'", "").await,
        ["tr-b", "tr-a"]
    );
    assert_eq!(
        trace_ids(&store, "run_id = 'r2'", "").await,
        Vec::<String>::new()
    );
    assert_eq!(
        trace_ids(&store, "metadata.`mlflow.sourceRun` IS NULL", "").await,
        ["tr-c", "tr-b"]
    );
    assert_eq!(
        trace_ids(&store, "span.name = 'tool-call'", "").await,
        ["tr-c"]
    );
    assert_eq!(
        trace_ids(&store, "span.name IN ('answer', 'tool-call')", "").await,
        ["tr-c", "tr-a"]
    );
    assert_eq!(
        trace_ids(&store, "text ILIKE '%RETRIEVE%'", "").await,
        ["tr-a"]
    );
    // One attribute of any span, by its key (dots and all) and value.
    assert_eq!(
        trace_ids(&store, "span.attributes.step = 'tool-call'", "").await,
        ["tr-c"]
    );
    assert_eq!(
        trace_ids(&store, "span.attributes.`step` LIKE 'ans%'", "").await,
        ["tr-a"]
    );
    assert_eq!(
        trace_ids(&store, "span.attributes.`no.such` != 'x'", "").await,
        Vec::<String>::new()
    );
    assert!(store.delete_trace_tag("w1", "tr-b", "team").await.unwrap());
    assert!(!store.delete_trace_tag("w1", "tr-b", "team").await.unwrap());
    // Assessments.
    let assessment = AssessmentRow {
        trace_id: "tr-a".into(),
        assessment_id: "a-1".into(),
        name: "relevance".into(),
        created: 7,
        content: json!({"assessment_name": "relevance", "feedback": {"value": 0.5}}),
    };
    store
        .write_assessments("w1", std::slice::from_ref(&assessment), None)
        .await
        .unwrap();
    let mut changed = assessment.clone();
    changed.content["feedback"]["value"] = json!(0.9);
    store
        .write_assessments("w1", std::slice::from_ref(&changed), None)
        .await
        .unwrap();
    assert_eq!(
        store.assessments("w1", &["tr-a".into()]).await.unwrap(),
        vec![changed.clone()]
    );
    // A read of the trace carries it, as MLflow's JSON.
    let read = store.get_traces("w1", &["tr-a".into()]).await.unwrap();
    assert_eq!(read[0].assessments, vec![changed.content.clone()]);
    // Searched by their values: numbers as numbers, the rest as text; only valid ones count.
    assert_eq!(
        trace_ids(&store, "feedback.relevance > 0.8", "").await,
        ["tr-a"]
    );
    assert_eq!(
        trace_ids(&store, "feedback.relevance <= 0.5", "").await,
        Vec::<String>::new()
    );
    assert_eq!(
        trace_ids(&store, "feedback.relevance IS NULL", "").await,
        ["tr-c", "tr-b"]
    );
    let mut expected = AssessmentRow {
        trace_id: "tr-c".into(),
        assessment_id: "a-2".into(),
        name: "answer".into(),
        created: 8,
        content: json!({"assessment_name": "answer", "expectation": {"value": "yes"}, "valid": false}),
    };
    store
        .write_assessments("w1", std::slice::from_ref(&expected), None)
        .await
        .unwrap();
    assert_eq!(
        trace_ids(&store, "expectation.answer = 'yes'", "").await,
        Vec::<String>::new()
    );
    expected.content["valid"] = json!(true);
    store
        .write_assessments("w1", std::slice::from_ref(&expected), None)
        .await
        .unwrap();
    assert_eq!(
        trace_ids(&store, "expectation.answer = 'yes'", "").await,
        ["tr-c"]
    );
    assert_eq!(
        trace_ids(&store, "feedback.answer = 'yes'", "").await,
        Vec::<String>::new()
    );
    // RLIKE: the values a pattern is matched against, each once, and a search by the
    // values it matched (tarn-core matches the pattern: see `Op::RLike`).
    {
        use tarn_spec::mlflow_search::{Clause, Entity, Op, Value};
        let values = async |entity, key: &str| {
            let mut v = store.trace_values("w1", entity, key).await.unwrap();
            v.sort();
            v
        };
        assert_eq!(values(Entity::Tag, "mlflow.traceName").await, ["answer"]);
        assert_eq!(
            values(Entity::Tag, "no-such-tag").await,
            Vec::<String>::new()
        );
        assert_eq!(
            values(Entity::Span, "name").await,
            ["answer", "retrieve", "tool-call"]
        );
        assert_eq!(
            values(Entity::Span, "attributes.step").await,
            ["answer", "retrieve", "tool-call"]
        );
        assert_eq!(values(Entity::Attribute, "status").await, ["ERROR", "OK"]);
        assert_eq!(values(Entity::Expectation, "answer").await, ["yes"]);
        let matched = |entity, key: &str, values: &[&str]| Clause {
            entity,
            key: key.into(),
            op: Op::RLike,
            value: Value::List(values.iter().map(|v| v.to_string()).collect()),
        };
        let search = async |clause: Clause| {
            let mut query = trace_query("", "", PageStart::Offset(0), 100);
            query.clauses = vec![clause];
            let found = store.search_traces("w1", &query).await.unwrap();
            found
                .into_iter()
                .map(|(t, _)| t.trace_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            search(matched(Entity::Span, "name", &["tool-call", "retrieve"])).await,
            ["tr-c", "tr-a"]
        );
        assert_eq!(
            search(matched(Entity::Span, "attributes.step", &["tool-call"])).await,
            ["tr-c"]
        );
        assert_eq!(
            search(matched(Entity::Tag, "mlflow.traceName", &["answer"])).await,
            ["tr-a"]
        );
        assert_eq!(
            search(matched(Entity::Expectation, "answer", &["yes"])).await,
            ["tr-c"]
        );
        // A pattern that matched nothing finds nothing.
        assert_eq!(
            search(matched(Entity::Attribute, "status", &[])).await,
            Vec::<String>::new()
        );
        let counts = store
            .count_traces(
                "w1",
                &[0],
                &[vec![matched(Entity::Attribute, "status", &["OK"])]],
            )
            .await
            .unwrap();
        assert_eq!(
            counts,
            [trace_ids(&store, "trace.status = 'OK'", "").await.len() as i64]
        );
    }
    // A delete and the writes that go with it happen together; deleting what is not there
    // says so.
    let mut restored = expected.clone();
    restored.content["expectation"]["value"] = json!("no");
    assert!(
        store
            .write_assessments("w1", &[restored], Some(("tr-a", "a-1")))
            .await
            .unwrap()
    );
    assert_eq!(
        trace_ids(&store, "expectation.answer = 'no'", "").await,
        ["tr-c"]
    );
    assert_eq!(
        trace_ids(&store, "feedback.relevance > 0.8", "").await,
        Vec::<String>::new()
    );
    assert!(
        !store
            .write_assessments("w1", &[], Some(("tr-a", "a-1")))
            .await
            .unwrap()
    );
    // Deletes: the oldest by time, then by id; spans, tags and assessments go with them.
    let before = TraceDeletion::Before {
        max_timestamp_ms: 2500,
        max_traces: Some(1),
    };
    assert_eq!(store.delete_traces("w1", 0, &before).await.unwrap(), 1);
    assert!(
        store
            .assessments("w1", &["tr-a".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .trace_spans("w1", &["tr-a".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let ids = TraceDeletion::Ids(vec!["tr-c".into(), "tr-zz".into()]);
    assert_eq!(store.delete_traces("w1", 0, &ids).await.unwrap(), 1);
    assert_eq!(trace_ids(&store, "", "").await, ["tr-b"]);

    // Evaluation datasets: made once, linked to experiments, records named by their inputs.
    let dataset = DatasetRow {
        workspace_id: "w1".into(),
        dataset_id: "d-1".into(),
        name: "qa".into(),
        created_time: 1,
        last_update_time: 1,
        content: json!({"tags": {}}),
    };
    store.put_dataset(&dataset, Some(&[0]), true).await.unwrap();
    assert!(matches!(
        store.put_dataset(&dataset, None, true).await,
        Err(StoreError::Conflict)
    ));
    let record = |id: &str, hash: &str, n: i64| DatasetRecordRow {
        record_id: id.into(),
        input_hash: hash.into(),
        created_time: n,
        content: json!({"n": n}),
    };
    let mut changed = dataset.clone();
    changed.last_update_time = 5;
    store
        .put_records(
            &changed,
            &[record("dr-1", "h1", 1), record("dr-2", "h2", 2)],
        )
        .await
        .unwrap();
    store
        .put_records(&changed, &[record("dr-1", "h1", 3)])
        .await
        .unwrap();
    let kept = store.dataset_records("w1", "d-1", 0, 10).await.unwrap();
    assert_eq!(
        kept.iter()
            .map(|r| r.content["n"].clone())
            .collect::<Vec<_>>(),
        [json!(3), json!(2)]
    );
    assert_eq!(
        store
            .records_by_hash("w1", "d-1", &["h2".into()])
            .await
            .unwrap()[0]
            .record_id,
        "dr-2"
    );
    let all = store.datasets("w1", None).await.unwrap();
    assert_eq!((all[0].0.last_update_time, all[0].1.clone()), (5, vec![0]));
    // A delete lowers the record count by what went: an id that is not there takes nothing.
    let mut changed = changed.clone();
    changed.set_record_count(2);
    assert_eq!(
        store
            .delete_records(&changed, &["dr-2".into(), "dr-none".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.datasets("w1", Some("d-1")).await.unwrap()[0]
            .0
            .record_count(),
        1
    );
    assert!(store.delete_dataset("w1", "d-1").await.unwrap());
    assert!(
        store
            .dataset_records("w1", "d-1", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.datasets("w1", Some("d-1")).await.unwrap().is_empty());
}

/// Registered scorers: versions numbered per name, one id for all of a name's versions, one
/// version or all deleted, and none outlive their workspace.
/// What a search kept of a trace's info is answered again as it is, until anything the info
/// shows changes — its row, tags, metadata or assessments, by whichever write — and a kept
/// text built from a version that has changed since is not kept.
async fn a_kept_trace_info_goes_with_any_change_to_its_trace(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let mut first = trace_row("w1", "tr-a", 0, 1000);
    first.tags = vec![("team".into(), "a".into())];
    store.finalize_trace(&first).await.unwrap();
    let query = TraceQuery {
        experiment_ids: vec![0],
        limit: 10,
        ..Default::default()
    };
    let search = || async {
        let found = store.search_trace_infos("w1", &query).await.unwrap();
        found.into_iter().map(|(t, _)| t).collect::<Vec<_>>()
    };
    // Read, keep, and answered as kept; `version` is the row's as read.
    let version = |found: Vec<CachedTrace>| match found.as_slice() {
        [CachedTrace::Row(row, v)] => {
            assert_eq!(row.trace_id, "tr-a");
            *v
        }
        other => panic!("expected the row, not a kept text: {other:?}"),
    };
    let keep = |v: i64, text: &str| {
        let infos = [KeptInfo {
            trace_id: "tr-a".into(),
            version: v,
            info: text.into(),
        }];
        let store = store.clone();
        async move { store.keep_trace_infos("w1", &infos).await.unwrap() }
    };
    let mut v = version(search().await);
    keep(v, "{\"kept\":0}").await;
    assert_eq!(search().await, [CachedTrace::Info("{\"kept\":0}".into())]);

    let assessment = AssessmentRow {
        trace_id: "tr-a".into(),
        assessment_id: "a-1".into(),
        name: "relevance".into(),
        created: 7,
        content: json!({"assessment_name": "relevance", "feedback": {"value": 0.5}}),
    };
    let mut done = first.clone();
    done.state = "ERROR".into();
    for (i, change) in [
        "set a tag",
        "change a tag",
        "delete a tag",
        "write an assessment",
        "delete an assessment",
        "finalize again",
    ]
    .into_iter()
    .enumerate()
    {
        match change {
            "set a tag" => assert!(
                store
                    .set_trace_tag("w1", "tr-a", "env", "prod")
                    .await
                    .unwrap()
            ),
            "change a tag" => assert!(
                store
                    .set_trace_tag("w1", "tr-a", "env", "dev")
                    .await
                    .unwrap()
            ),
            "delete a tag" => assert!(store.delete_trace_tag("w1", "tr-a", "env").await.unwrap()),
            "write an assessment" => {
                store
                    .write_assessments("w1", std::slice::from_ref(&assessment), None)
                    .await
                    .unwrap();
            }
            "delete an assessment" => {
                assert!(
                    store
                        .write_assessments("w1", &[], Some(("tr-a", "a-1")))
                        .await
                        .unwrap()
                );
            }
            _ => {
                store.finalize_trace(&done).await.unwrap();
            }
        }
        let found = search().await;
        let now = version(found.clone());
        assert!(now > v, "{change}: the version moved on ({v} -> {now})");
        if let [CachedTrace::Row(row, _)] = found.as_slice()
            && change == "finalize again"
        {
            assert_eq!(row.state, "ERROR", "the row is read as it is now");
        }
        // Text built from the version before the change is not kept; from this one, it is.
        keep(v, "{\"stale\":1}").await;
        assert_eq!(
            version(search().await),
            now,
            "{change}: a stale text was kept"
        );
        let text = format!("{{\"kept\":{}}}", i + 1);
        keep(now, &text).await;
        assert_eq!(search().await, [CachedTrace::Info(text)], "{change}");
        v = now;
    }
}

async fn scorer_versions_are_numbered_per_name(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let register = |name: &str, id: &str, text: &str| ScorerRow {
        workspace_id: "w1".into(),
        experiment_id: 3,
        name: name.into(),
        version: 0,
        scorer_id: id.into(),
        serialized: text.into(),
        created: 5,
    };
    let a1 = store
        .register_scorer(&register("a", "id-a", "{\"v\":1}"))
        .await
        .unwrap();
    let a2 = store
        .register_scorer(&register("a", "other", "{\"v\":2}"))
        .await
        .unwrap();
    let b1 = store
        .register_scorer(&register("b", "id-b", "{}"))
        .await
        .unwrap();
    assert_eq!((a1.version, a2.version, b1.version), (1, 2, 1));
    assert_eq!(
        (a2.scorer_id.as_str(), b1.scorer_id.as_str()),
        ("id-a", "id-b")
    );
    let all = store.scorers("w1", 3, None).await.unwrap();
    let names: Vec<(&str, i64, &str)> = all
        .iter()
        .map(|s| (s.name.as_str(), s.version, s.serialized.as_str()))
        .collect();
    assert_eq!(
        names,
        [("a", 1, "{\"v\":1}"), ("a", 2, "{\"v\":2}"), ("b", 1, "{}")]
    );
    assert!(store.scorers("w1", 4, None).await.unwrap().is_empty());
    assert_eq!(store.delete_scorer("w1", 3, "a", Some(1)).await.unwrap(), 1);
    assert_eq!(store.delete_scorer("w1", 3, "a", Some(1)).await.unwrap(), 0);
    assert_eq!(
        store.scorers("w1", 3, Some("a")).await.unwrap()[0].version,
        2
    );
    assert_eq!(store.delete_scorer("w1", 3, "b", None).await.unwrap(), 1);
    store.delete_workspace("w1").await.unwrap();
    assert!(store.scorers("w1", 3, None).await.unwrap().is_empty());
}

/// GenAI issues: written and changed in place, searched by experiment and attribute, the most
/// severe first, then newest, in pages.
async fn issues_are_searched_most_severe_first(store: Arc<dyn Store>) {
    store
        .create_workspace(&ws("w1", "one"), &[], &[], &[])
        .await
        .unwrap();
    let issue = |id: &str, exp: i64, severity: Option<&str>, created: i64| IssueRow {
        workspace_id: "w1".into(),
        issue_id: id.into(),
        experiment_id: exp,
        status: "pending".into(),
        severity: severity.map(str::to_string),
        source_run_id: None,
        created,
        content: json!({"name": id}),
        trace_count: None,
    };
    for row in [
        issue("old-low", 1, Some("low"), 1),
        issue("new-none", 1, None, 5),
        issue("high", 1, Some("high"), 2),
        issue("new-low", 1, Some("low"), 4),
        issue("elsewhere", 2, Some("high"), 3),
    ] {
        store.put_issue(&row).await.unwrap();
    }
    let ids = |rows: Vec<IssueRow>| rows.into_iter().map(|r| r.issue_id).collect::<Vec<_>>();
    let page = store
        .search_issues("w1", Some(1), &[], (0, 10), false)
        .await
        .unwrap();
    assert_eq!(ids(page), ["high", "new-low", "old-low", "new-none"]);
    assert_eq!(
        ids(store
            .search_issues("w1", Some(1), &[], (1, 2), false)
            .await
            .unwrap()),
        ["new-low", "old-low"]
    );
    // Issue references (assessments of kind `issue`, named by the issue's id) link traces:
    // counted per issue (a trace once however often it names it) and ordered by, after
    // severity; and a trace search finds the traces of an issue.
    for (trace, at) in [("tr-1", 10), ("tr-2", 20)] {
        store
            .finalize_trace(&trace_row("w1", trace, 0, at))
            .await
            .unwrap();
    }
    let reference = |trace: &str, id: &str, issue: &str| AssessmentRow {
        trace_id: trace.into(),
        assessment_id: id.into(),
        name: issue.into(),
        created: 7,
        content: json!({"assessment_name": issue, "issue": {"issue_name": issue}}),
    };
    store
        .write_assessments(
            "w1",
            &[
                reference("tr-1", "a-1", "old-low"),
                reference("tr-1", "a-2", "old-low"),
                reference("tr-2", "a-3", "old-low"),
                reference("tr-2", "a-4", "new-low"),
            ],
            None,
        )
        .await
        .unwrap();
    let counted = store
        .search_issues("w1", Some(1), &[], (0, 10), true)
        .await
        .unwrap();
    assert_eq!(
        counted
            .iter()
            .map(|r| (r.issue_id.as_str(), r.trace_count))
            .collect::<Vec<_>>(),
        [
            ("high", Some(0)),
            ("old-low", Some(2)),
            ("new-low", Some(1)),
            ("new-none", Some(0))
        ]
    );
    assert_eq!(
        trace_ids(&store, "issue.id = 'old-low'", "").await,
        ["tr-2", "tr-1"]
    );
    assert_eq!(
        trace_ids(&store, "issue.id = 'new-low'", "").await,
        ["tr-2"]
    );
    let mut resolved = issue("old-low", 1, Some("low"), 1);
    resolved.status = "resolved".into();
    store.put_issue(&resolved).await.unwrap();
    let clauses = tarn_spec::mlflow_search::parse_filter_of(
        tarn_spec::mlflow_search::Subject::Issues,
        "status = 'resolved'",
    )
    .unwrap();
    assert_eq!(
        ids(store
            .search_issues("w1", None, &clauses, (0, 10), false)
            .await
            .unwrap()),
        ["old-low"]
    );
    let by_name = tarn_spec::mlflow_search::parse_filter_of(
        tarn_spec::mlflow_search::Subject::Issues,
        "name = 'elsewhere'",
    )
    .unwrap();
    assert_eq!(
        ids(store
            .search_issues("w1", None, &by_name, (0, 10), false)
            .await
            .unwrap()),
        ["elsewhere"]
    );
    assert_eq!(
        store
            .get_issue("w1", "old-low")
            .await
            .unwrap()
            .unwrap()
            .status,
        "resolved"
    );
    assert!(store.get_issue("w1", "nope").await.unwrap().is_none());
}

macro_rules! store_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let dir = tempfile::tempdir().unwrap();
                        let (store, _server) = $open(dir.path()).await;
                        super::$name(store).await;
                    }
                };
            }
            case!(workspaces_and_cascade);
            case!(versions_are_numbered_and_unique);
            case!(latest_and_archive);
            case!(secrets_follow_their_resource);
            case!(children_go_with_their_parent);
            case!(users_tokens_roles);
            case!(jobs_and_job_tokens);
            case!(tracking_runs_metrics_and_search);
            case!(search_ordered_by_a_metric_pages_through_runs_without_it);
            case!(compute_states_are_set_listed_and_go_with_their_workspace);
            case!(schedule_states_are_set_listed_and_go_with_their_workspace);
            case!(model_links_metrics_datasets_and_renames);
            case!(job_logs_append_once_and_read_anywhere);
            case!(traces_from_spans_finalize_search_and_delete);
            case!(trace_pages_start_after_a_key_as_after_an_offset);
            case!(a_kept_trace_info_goes_with_any_change_to_its_trace);
            case!(scorer_versions_are_numbered_per_name);
            case!(issues_are_searched_most_severe_first);
        }
    };
}

async fn open_sqlite(dir: &std::path::Path) -> (Arc<dyn Store>, Option<PgServer>) {
    let store = SqlStore::open_sqlite(&dir.join("tarn.db")).await.unwrap();
    (Arc::new(store), None)
}

/// A PostgreSQL server for one test: the one `scripts/test` started (`TARN_TEST_POSTGRES`), or
/// else a throwaway one from `scripts/pg-temp`, stopped when this drops.
struct PgServer {
    url: String,
    dir: Option<std::path::PathBuf>,
}

const PG_TEMP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-temp");

impl PgServer {
    fn get() -> PgServer {
        if let Ok(url) = std::env::var("TARN_TEST_POSTGRES") {
            return PgServer { url, dir: None };
        }
        let dir =
            std::path::PathBuf::from(format!("/tmp/tarn-pg-{}-{}", std::process::id(), unique()));
        let out = std::process::Command::new(PG_TEMP)
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot start PostgreSQL for the suite (install Debian's `postgresql`, or set TARN_TEST_POSTGRES): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PgServer {
            url: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            dir: Some(dir),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::process::Command::new(PG_TEMP)
                .arg("stop")
                .arg(dir)
                .status();
        }
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

async fn open_postgres(_: &std::path::Path) -> (Arc<dyn Store>, Option<PgServer>) {
    let (server, _, store) = new_postgres().await;
    (Arc::new(store), Some(server))
}

/// A new, empty database on the test's PostgreSQL server: the server, the database's URL, and
/// the store on it.
async fn new_postgres() -> (PgServer, String, SqlStore) {
    use sqlx::{Connection, Executor};
    let server = PgServer::get();
    let name = format!("suite_{}", unique());
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(&server.url).await.unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let (base, _) = server.url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let store = SqlStore::connect_postgres(&url).await.unwrap();
    (server, url, store)
}

store_suite!(sqlite, open_sqlite);
store_suite!(postgres, open_postgres);

/// A row in the tables the tracking cases leave empty, in a workspace of its own: a datastore
/// with its secret, a user with a token and a role, a job, a compute's state, an experiment tag.
async fn top_up(store: &dyn Store) {
    store
        .create_workspace(
            &ws("w9", "nine"),
            &[row(
                key("w9", "datastores", "", "blob", ""),
                json!({"name": "blob"}),
            )],
            &[secret("datastores::blob@#account_key", 7)],
            &[],
        )
        .await
        .unwrap();
    store.init_meta("vault.check", "sealed").await.unwrap();
    store
        .create_user(&UserRow {
            id: "u9".into(),
            name: "nina".into(),
            is_admin: true,
            created_at: 1,
            disabled: false,
            kind: "service_principal".into(),
            subject: String::new(),
            groups: vec![],
        })
        .await
        .unwrap();
    store
        .create_token(&TokenRow {
            id: "t9".into(),
            user_id: "u9".into(),
            hash: "h9".into(),
            description: "laptop".into(),
            created_at: 1,
            scope: String::new(),
            expires_at: 1_900_000_000_000,
            last_used_at: 5,
        })
        .await
        .unwrap();
    store
        .create_role_definition("Ops", r#"{"actions":["*/read"]}"#, 1)
        .await
        .unwrap();
    store
        .assign_group_role("w9", "ml-team", "Reader", 1)
        .await
        .unwrap();
    store
        .record_audit(&[tarn_store::AuditRow {
            id: "a9".into(),
            at: 1,
            actor: "nina".into(),
            actor_kind: "service_principal".into(),
            address: "10.0.0.1".into(),
            method: "DELETE".into(),
            path: "/api/v1/workspaces/nine".into(),
            workspace: "nine".into(),
            status: 204,
            changes: String::new(),
        }])
        .await
        .unwrap();
    store
        .assign_role(&RoleRow {
            workspace_id: "w9".into(),
            user_id: "u9".into(),
            user_name: "nina".into(),
            role: "Owner".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    store
        .insert_job(&job("w9", "j9", "Completed"))
        .await
        .unwrap();
    for (offset, line) in [(0, "hello\n"), (6, "world\n")] {
        store
            .append_job_log("w9", "j9", 0, offset, line.as_bytes())
            .await
            .unwrap()
            .unwrap();
    }
    store
        .set_compute_state(&ComputeStateRow {
            workspace_id: "w9".into(),
            name: "box".into(),
            desired: "Stopped".into(),
            reason: "idle".into(),
            updated_at: 3,
        })
        .await
        .unwrap();
    store
        .set_schedule_state(&ScheduleStateRow {
            workspace_id: "w9".into(),
            name: "nightly".into(),
            created_at: 1,
            rule: "r".into(),
            through: 60,
            fired: 1,
            skipped: 0,
            last_error: String::new(),
            updated_at: 3,
        })
        .await
        .unwrap();
    let exp = ExperimentRow {
        workspace_id: "w9".into(),
        experiment_id: 0,
        name: "Default".into(),
        artifact_location: "mlflow-artifacts:/0".into(),
        lifecycle_stage: "active".into(),
        creation_time: 1,
        last_update_time: 1,
        tags: vec![],
    };
    let id = store.create_experiment(&exp).await.unwrap();
    store
        .set_experiment_tag("w9", id, "team", Some("ml"))
        .await
        .unwrap();
    let run = RunRow {
        workspace_id: "w9".into(),
        run_id: "r9".into(),
        experiment_id: id,
        run_name: "run-9".into(),
        user_id: "nina".into(),
        status: "FINISHED".into(),
        start_time: Some(1),
        end_time: Some(9),
        lifecycle_stage: "active".into(),
        artifact_uri: String::new(),
    };
    store
        .create_run(&run, &[("mlflow.user".into(), "nina".into())])
        .await
        .unwrap();
    let loss = [0.5, f64::NAN, f64::INFINITY, 1e-300, -0.1];
    let metrics: Vec<MetricRow> = (0..5)
        .map(|i| metric("loss", loss[i], i as i64, 10 + i as i64))
        .collect();
    store
        .log_batch(
            "w9",
            "r9",
            &metrics,
            &[("lr".into(), "0.01".into())],
            &[("note".into(), "ünïcode ✓".into())],
        )
        .await
        .unwrap()
        .unwrap();
    store
        .put_logged_model(&LoggedModelRow {
            workspace_id: "w9".into(),
            model_id: "m-9".into(),
            experiment_id: id,
            name: "model".into(),
            artifact_uri: "mlflow-artifacts:/0/models/m-9/artifacts".into(),
            status: "LOGGED_MODEL_READY".into(),
            model_type: String::new(),
            source_run_id: "r9".into(),
            creator_id: "nina".into(),
            creation_time: 2,
            last_updated_time: 3,
            tags: json!({"k": "v"}),
            params: json!({"alpha": "1"}),
            deleted: false,
        })
        .await
        .unwrap();
    store
        .put_registered_model(
            &RegisteredModelRow {
                workspace_id: "w9".into(),
                name: "churn".into(),
                description: "d".into(),
                tags: json!({}),
                aliases: json!({"prod": "1"}),
                creation_time: 1,
                last_updated_time: 1,
            },
            true,
        )
        .await
        .unwrap();
    let mut trace = trace_row("w9", "tr-9", id, 5);
    trace.tags = vec![("k".into(), "v".into())];
    trace.metadata = vec![("mlflow.sourceRun".into(), "r9".into())];
    store
        .log_spans(&[SpanBatch {
            trace: trace.clone(),
            has_root: true,
            spans: vec![span("tr-9", "s1", None, "root", 5)],
        }])
        .await
        .unwrap();
    store.finalize_trace(&trace).await.unwrap();
    store
        .link_traces_to_run("w9", &["tr-9".into()], "r9")
        .await
        .unwrap();
    let dataset = DatasetRow {
        workspace_id: "w9".into(),
        dataset_id: "d-9".into(),
        name: "qa".into(),
        created_time: 1,
        last_update_time: 2,
        content: json!({"tags": {"k": "v"}}),
    };
    store
        .put_dataset(&dataset, Some(&[id]), true)
        .await
        .unwrap();
    store
        .put_records(
            &dataset,
            &[DatasetRecordRow {
                record_id: "dr-9".into(),
                input_hash: "h".into(),
                created_time: 2,
                content: json!({"inputs": {"q": 1}}),
            }],
        )
        .await
        .unwrap();
    store
        .put_issue(&IssueRow {
            workspace_id: "w9".into(),
            issue_id: "iss-9".into(),
            experiment_id: id,
            status: "pending".into(),
            severity: Some("high".into()),
            source_run_id: None,
            created: 3,
            content: json!({"name": "slow", "description": "too slow"}),
            trace_count: None,
        })
        .await
        .unwrap();
    store
        .register_scorer(&ScorerRow {
            workspace_id: "w9".into(),
            experiment_id: id,
            name: "polite".into(),
            version: 0,
            scorer_id: "s-9".into(),
            serialized: "{}".into(),
            created: 3,
        })
        .await
        .unwrap();
    store
        .write_assessments(
            "w9",
            &[AssessmentRow {
                trace_id: "tr-9".into(),
                assessment_id: "a-9".into(),
                name: "relevance".into(),
                created: 6,
                content: json!({"feedback": {"value": 1}}),
            }],
            None,
        )
        .await
        .unwrap();
}

/// Every row of `table` at `url`, each value as text, sorted: what two stores must agree on.
async fn dump(url: &str, table: &str, columns: &[String]) -> Vec<Vec<Option<String>>> {
    use sqlx::{Connection, Row, ValueRef};
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let names = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {names} FROM {table}")))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let mut out: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| {
            (0..columns.len())
                .map(|i| {
                    if r.try_get_raw(i).unwrap().is_null() {
                        return None;
                    }
                    Some(
                        r.try_get::<i64, _>(i)
                            .map(|v| v.to_string())
                            .or_else(|_| r.try_get::<f64, _>(i).map(|v| format!("{v:?}")))
                            .or_else(|_| r.try_get::<String, _>(i))
                            .or_else(|_| r.try_get::<Vec<u8>, _>(i).map(|v| format!("{v:x?}")))
                            .unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// `tarn store migrate`: a SQLite store with rows in every table copies to PostgreSQL whole —
/// every row of every table equal on both sides, secrets as the same ciphertext — and the copy
/// reads back through the `Store` API; a target that holds data is refused and left as it was;
/// and the PostgreSQL store copies back to a new SQLite file just as whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_store_copies_to_postgresql_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(
        SqlStore::open_sqlite(&dir.path().join("tarn.db"))
            .await
            .unwrap(),
    );
    model_links_metrics_datasets_and_renames(source.clone()).await;
    top_up(&*source).await;
    let mut tables = source.tables().await.unwrap();
    tables.sort();
    let mut listed: Vec<String> = TABLES
        .iter()
        .chain(RUNTIME_TABLES)
        .map(|t| t.to_string())
        .collect();
    listed.sort();
    assert_eq!(
        tables, listed,
        "TABLES and RUNTIME_TABLES name every table of the SQLite schema"
    );
    for table in TABLES {
        assert!(
            source.count_rows(table).await.unwrap() > 0,
            "the source holds rows in {table}"
        );
    }

    let (_server, pg_url, target) = new_postgres().await;
    let mut pg_tables = target.tables().await.unwrap();
    pg_tables.sort();
    assert_eq!(
        pg_tables, listed,
        "TABLES and RUNTIME_TABLES name every table of the PostgreSQL schema"
    );
    let counts = source.copy_into(&target).await.unwrap();
    assert_eq!(counts.len(), TABLES.len());
    let sqlite_url = format!("sqlite://{}?mode=ro", dir.path().join("tarn.db").display());
    for table in TABLES {
        let columns: Vec<String> = pg_columns(&pg_url, table)
            .await
            .into_iter()
            .filter(|c| !DERIVED_COLUMNS.contains(&(table, c.as_str())))
            .collect();
        assert_eq!(
            dump(&sqlite_url, table, &columns).await,
            dump(&pg_url, table, &columns).await,
            "{table} is the same on both sides"
        );
    }
    assert_eq!(
        target.get_secrets("w9", "datastores::blob@").await.unwrap(),
        vec![secret("datastores::blob@#account_key", 7)]
    );
    assert_eq!(
        target.find_token("h9").await.unwrap().unwrap().1.name,
        "nina"
    );
    let history = target
        .metric_history("w9", "r9", "loss", 0, 1000)
        .await
        .unwrap();
    assert_eq!(history.len(), 5);
    assert!(history[1].value.is_nan() && history[2].value == f64::INFINITY);
    assert_eq!(history[3].value, 1e-300);
    // Ids drawn after the copy continue after the copied ones.
    target
        .log_batch("w9", "r9", &[metric("after", 1.0, 0, 5)], &[], &[])
        .await
        .unwrap()
        .unwrap();

    let before = target.count_rows("metric_chunks").await.unwrap();
    let again = source.copy_into(&target).await;
    assert!(
        matches!(&again, Err(StoreError::Refused(why)) if why.contains("not empty")),
        "{again:?}"
    );
    assert_eq!(target.count_rows("metric_chunks").await.unwrap(), before);

    let back = SqlStore::open_sqlite(&dir.path().join("back.db"))
        .await
        .unwrap();
    target.copy_into(&back).await.unwrap();
    let back_url = format!("sqlite://{}?mode=ro", dir.path().join("back.db").display());
    for table in TABLES {
        let columns = pg_columns(&pg_url, table).await;
        let columns: Vec<String> = columns
            .into_iter()
            .filter(|c| c != "rowid" && !DERIVED_COLUMNS.contains(&(table, c.as_str())))
            .collect();
        assert_eq!(
            dump(&back_url, table, &columns).await,
            dump(&pg_url, table, &columns).await,
            "{table} is the same after copying back"
        );
    }
}

async fn pg_columns(url: &str, table: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect()
}

/// SQLite: a committed write reaches the database file itself soon after, with no further
/// write and no shutdown: the WAL is checkpointed off the writer's path. A copy of the file
/// alone (as a naive backup makes it) holds the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_reach_the_database_file_without_another_write() {
    use sqlx::{Connection, Row};
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open_sqlite(&dir.path().join("tarn.db"))
        .await
        .unwrap();
    store.init_meta("probe", "checkpointed").await.unwrap();
    let copy = dir.path().join("copy.db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        std::fs::copy(dir.path().join("tarn.db"), &copy).unwrap();
        let url = format!("sqlite://{}?mode=ro&immutable=1", copy.display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        // Before the first checkpoint even the schema is only in the WAL.
        let found: Option<String> = sqlx::query("SELECT value FROM meta WHERE key = 'probe'")
            .fetch_optional(&mut conn)
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        conn.close().await.unwrap();
        if found.as_deref() == Some("checkpointed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the write is still only in the WAL after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await;
}
