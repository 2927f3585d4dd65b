//! The examples in `examples/jobs/` stay true: each validates, and each runs to completion.

use crate::harness::Server;
use crate::jobs::wait_for;
use std::path::PathBuf;
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/jobs")
        .join(name)
}

fn run(s: &Server, name: &str) -> serde_json::Value {
    let file = example(name);
    let job = s
        .cli(&["job", "create", "-f", file.to_str().unwrap(), "-o", "json"])
        .success()
        .json();
    let job_name = job["name"].as_str().unwrap().to_string();
    wait_for(s, &job_name, Duration::from_secs(240), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    })
}

#[test]
fn the_job_examples_run() {
    let s = Server::start();
    for name in ["hello.yml", "sweep.yml", "pipeline.yml"] {
        s.cli(&["validate", "-f", example(name).to_str().unwrap()])
            .success();
    }
    let hello = run(&s, "hello.yml");
    assert_eq!(hello["status"], "Completed", "{hello:#}");
    let pipeline = run(&s, "pipeline.yml");
    assert_eq!(pipeline["status"], "Completed", "{pipeline:#}");
    let report = pipeline["steps"]["report"]["job"].as_str().unwrap();
    let log = s.cli(&["job", "stream", "-n", report]).success().stdout;
    assert!(log.contains("sum of 1..n = 5050"), "{log}");
    let sweep = run(&s, "sweep.yml");
    assert_eq!(sweep["status"], "Completed", "{sweep:#}");
    assert_eq!(sweep["trials"], 8);
    assert!(sweep["best_trial"]["value"].as_f64().is_some(), "{sweep:#}");
}
