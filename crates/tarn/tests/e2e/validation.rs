//! The invalid-YAML corpus: each file says which errors it must produce (`# expect:` lines:
//! group, line:column, field path, message). `validate` and `create` must both report them,
//! exit non-zero, and leave nothing behind.

use crate::harness::{Server, corpus};

struct Expect {
    group: String,
    place: String,
    path: String,
    message: String,
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| {
            let (left, message) = l
                .split_once(" | ")
                .expect("`# expect: group L:C path | message`");
            let mut parts = left.splitn(3, ' ');
            Expect {
                group: parts.next().unwrap().to_string(),
                place: parts.next().unwrap().to_string(),
                path: parts.next().unwrap_or("").trim().to_string(),
                message: message.to_string(),
            }
        })
        .collect()
}

#[track_caller]
fn assert_reported(stderr: &str, file: &str, e: &Expect) {
    let head = format!("{file}:{}: error: ", e.place);
    let found = stderr.lines().any(|line| {
        let Some(rest) = line.strip_prefix(&head) else {
            return false;
        };
        let rest = if e.path.is_empty() {
            rest.to_string()
        } else {
            match rest.strip_prefix(&format!("{}: ", e.path)) {
                Some(r) => r.to_string(),
                None => return false,
            }
        };
        rest.contains(&e.message)
    });
    assert!(
        found,
        "expected `{head}{}: …{}…` in:\n{stderr}",
        e.path, e.message
    );
}

fn count(s: &Server, group: &str) -> usize {
    let mut args = vec![group, "list", "-o", "json", "--include-archived"];
    if group.ends_with("deployment") {
        args.extend(["-e", "churn-endpoint"]);
    }
    s.cli(&args).success().json().as_array().unwrap().len()
}

#[test]
fn invalid_documents_are_reported_with_positions_and_change_nothing() {
    let s = Server::start();
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        corpus("valid")
            .join("online-endpoint.yml")
            .to_str()
            .unwrap(),
    ])
    .success();
    let mut files: Vec<_> = std::fs::read_dir(corpus("invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the invalid corpus is missing");
    for path in files {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let expects = expectations(&text);
        assert!(!expects.is_empty(), "{file} has no `# expect:` line");
        let group = expects[0].group.clone();

        let validated = s
            .cli(&["validate", "-f", &file, "--kind", &group])
            .failure();
        for e in &expects {
            assert_reported(&validated.stderr, &file, e);
        }
        let before = count(&s, &group);
        let created = s.cli(&[&group, "create", "-f", &file]).failure();
        for e in &expects {
            assert_reported(&created.stderr, &file, e);
        }
        assert_eq!(
            count(&s, &group),
            before,
            "{file}: a failed create changed the store"
        );
    }
}

#[test]
fn set_overrides_apply_before_validation() {
    let s = Server::start();
    let f = corpus("valid")
        .join("compute-cluster.yml")
        .display()
        .to_string();
    let out = s
        .cli(&[
            "validate",
            "-f",
            &f,
            "--set",
            "max_instances=8",
            "--set",
            "tier=Low_Priority",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(out["max_instances"], 8);
    assert_eq!(out["tier"], "low_priority", "enum spellings are normalised");
    let bad = s
        .cli(&["validate", "-f", &f, "--set", "max_instances=many"])
        .failure();
    assert!(
        bad.stderr.contains("max_instances: expected an integer"),
        "{}",
        bad.stderr
    );
    let typo = s
        .cli(&["validate", "-f", &f, "--set", "max_instnces=3"])
        .failure();
    assert!(
        typo.stderr.contains("did you mean `max_instances`"),
        "{}",
        typo.stderr
    );
}

#[test]
fn files_without_schema_need_a_kind_hint() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("thing.yml");
    std::fs::write(&f, "name: thing\ndescription: no schema, no telling type\n").unwrap();
    let r = s.cli(&["validate", "-f", f.to_str().unwrap()]).failure();
    assert!(r.stderr.contains("--kind"), "{}", r.stderr);
    s.cli(&[
        "validate",
        "-f",
        f.to_str().unwrap(),
        "--kind",
        "online-endpoint",
    ])
    .success();
}
