//! A server killed with SIGKILL in the middle of a burst of creates restarts with a consistent
//! store: every acknowledged create is there, nothing is half-written, versions stay unique.

use crate::harness::Server;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[test]
fn sigkill_during_a_burst_of_creates_loses_no_acknowledged_write() {
    let s = Server::start();
    let acked_computes = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_versions = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = vec![];
    for t in 0..6 {
        let http = s.http();
        let (computes, versions, stop) =
            (acked_computes.clone(), acked_versions.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let result = if t % 2 == 0 {
                    let name = format!("c{t}-{i}");
                    let body = json!({"name": name, "type": "amlcompute", "max_instances": 2});
                    http.try_post("/api/v1/workspaces/default/computes", &body)
                        .map(|(status, _)| {
                            (status == 201).then(|| computes.lock().unwrap().push(name))
                        })
                } else {
                    let body = json!({"name": "burst-model", "path": format!("./m{t}-{i}")});
                    http.try_post("/api/v1/workspaces/default/models", &body)
                        .map(|(status, reply)| {
                            (status == 201).then(|| {
                                versions
                                    .lock()
                                    .unwrap()
                                    .push(reply["version"].as_str().unwrap().to_string())
                            })
                        })
                };
                match result {
                    Some(Some(())) => {}
                    _ => break, // the server is gone
                }
            }
        }));
    }
    while acked_computes.lock().unwrap().len() + acked_versions.lock().unwrap().len() < 300 {
        std::thread::yield_now();
    }
    let home = s.kill();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let s = Server::start_on(home);
    let computes = s.cli(&["compute", "list", "-o", "json"]).success().json();
    let present: BTreeSet<String> = computes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for name in acked_computes.lock().unwrap().iter() {
        assert!(
            present.contains(name),
            "acknowledged compute {name} was lost"
        );
    }
    for c in computes.as_array().unwrap() {
        assert_eq!(
            c["spec"]["max_instances"], 2,
            "a compute was half-written: {c}"
        );
    }
    let versions = s
        .cli(&["model", "list", "-n", "burst-model", "-o", "json"])
        .success()
        .json();
    let stored: Vec<u64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().parse().unwrap())
        .collect();
    let unique: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "duplicate versions: {stored:?}");
    assert_eq!(
        unique.iter().copied().collect::<Vec<_>>(),
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "versions have gaps"
    );
    for v in acked_versions.lock().unwrap().iter() {
        assert!(
            unique.contains(&v.parse().unwrap()),
            "acknowledged model version {v} was lost"
        );
    }
    // The store still takes writes.
    s.cli(&[
        "compute",
        "create",
        "-f",
        crate::harness::corpus("valid")
            .join("compute-cluster.yml")
            .to_str()
            .unwrap(),
    ])
    .success();
}
