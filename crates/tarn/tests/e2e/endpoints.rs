//! Online endpoints end to end: real replicas (`tarn replica` running the scoring server on the
//! host Python or an environment built by uv), scored through the router with real HTTP.

use crate::harness::Server;
use crate::jobs::write;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A scoring script that says which deployment answered and reads a file of its model.
const SCORE_PY: &str = r#"
import json, os, time
def init():
    global weight
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "weight.txt")) as f:
        weight = int(f.read())
    print("init called", flush=True)
    if os.environ.get("FAIL_INIT"):
        raise RuntimeError("the model file is corrupt (FAIL_INIT)")
def run(raw_data):
    data = json.loads(raw_data)
    time.sleep(float(data.get("sleep", 0)))
    out = {"total": weight * sum(data["data"]), "who": os.environ["WHO"]}
    if any(k.startswith("TARN_") for k in os.environ):
        out["leak"] = sorted(k for k in os.environ if k.startswith("TARN_"))
    if "pad" in data:
        out["pad"] = "x" * data["pad"]
    return out
"#;

/// Writes an endpoint folder: model, code, and a deployment file per name.
pub(crate) fn project(dir: &Path, endpoint: &str, auth: &str) -> PathBuf {
    write(dir, "model/weight.txt", "10");
    write(dir, "src/score.py", SCORE_PY);
    write(
        dir,
        "endpoint.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\nname: {endpoint}\nauth_mode: {auth}\n"
        ),
    )
}

/// A deployment file; `extra` is more YAML at the top level.
pub(crate) fn deployment(dir: &Path, endpoint: &str, name: &str, extra: &str) -> PathBuf {
    deployment_with_env(dir, endpoint, name, extra, "")
}

/// A deployment file with more environment variables (`env`: indented YAML lines).
fn deployment_with_env(dir: &Path, endpoint: &str, name: &str, extra: &str, env: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.yml"),
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n\
             name: {name}\nendpoint_name: {endpoint}\n\
             model:\n  path: ./model\n\
             code_configuration:\n  code: ./src\n  scoring_script: score.py\n\
             environment:\n  image: mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest\n\
             environment_variables:\n  WHO: {name}\n{env}{extra}"
        ),
    )
}

pub(crate) fn key(s: &Server, endpoint: &str) -> (String, String) {
    let c = s
        .cli(&[
            "online-endpoint",
            "get-credentials",
            "-n",
            endpoint,
            "-o",
            "json",
        ])
        .success()
        .json();
    (
        c["primaryKey"].as_str().unwrap().to_string(),
        c["secondaryKey"].as_str().unwrap().to_string(),
    )
}

fn score_uri(s: &Server, endpoint: &str) -> String {
    format!("{}/endpoints/{endpoint}/score", s.url)
}

/// One scoring request: status, deployment header, body.
pub(crate) fn score(
    client: &reqwest::blocking::Client,
    uri: &str,
    key: &str,
    body: &Value,
    deployment: Option<&str>,
) -> (u16, String, Value) {
    let mut req = client.post(uri).bearer_auth(key).json(body);
    if let Some(d) = deployment {
        req = req.header("azureml-model-deployment", d);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let who = resp
        .headers()
        .get("azureml-model-deployment")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().unwrap();
    (
        status,
        who,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Sends `n` requests from 8 threads; counts (status, deployment).
fn burst(uri: &str, key: &str, n: usize) -> HashMap<(u16, String), usize> {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (uri, key) = (uri.to_string(), key.to_string());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut counts = HashMap::new();
                for _ in (t..n).step_by(8) {
                    let (status, who, _) = score(&client, &uri, &key, &json!({"data": [1]}), None);
                    *counts.entry((status, who)).or_insert(0) += 1;
                }
                counts
            })
        })
        .collect();
    let mut all = HashMap::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *all.entry(k).or_insert(0) += v;
        }
    }
    all
}

fn metric(s: &Server, name: &str, labels: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", s.url))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{{labels}")))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

/// Scoring requests from 4 threads until finished, counted by (status, who answered).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<HashMap<(u16, String), usize>>>,
}

impl Load {
    pub(crate) fn start(uri: &str, key: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..4)
            .map(|_| {
                let (uri, key, stop) = (uri.to_string(), key.to_string(), stop.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let mut seen: HashMap<(u16, String), usize> = HashMap::new();
                    while !stop.load(Ordering::Relaxed) {
                        let (status, _, answer) =
                            score(&client, &uri, &key, &json!({"data": [1]}), None);
                        let who = match answer["who"].as_str() {
                            Some(who) => who.to_string(),
                            None => answer.to_string(),
                        };
                        *seen.entry((status, who)).or_insert(0) += 1;
                    }
                    seen
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the load; asserts that every request was answered 200; returns the counts.
    #[track_caller]
    pub(crate) fn finish(self) -> HashMap<(u16, String), usize> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen: HashMap<(u16, String), usize> = HashMap::new();
        for t in self.threads {
            for (k, v) in t.join().unwrap() {
                *seen.entry(k).or_insert(0) += v;
            }
        }
        let failed: usize = seen
            .iter()
            .filter(|((c, _), _)| *c != 200)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(failed, 0, "failed requests under load: {seen:?}");
        seen
    }
}

pub(crate) fn show_deployment(s: &Server, endpoint: &str, name: &str) -> Value {
    s.cli(&[
        "online-deployment",
        "show",
        "-n",
        name,
        "-e",
        endpoint,
        "-o",
        "json",
    ])
    .success()
    .json()
}

#[test]
fn an_endpoint_scores_with_keys_a_traffic_split_header_routing_and_mirroring() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let ep = project(dir.path(), "adder", "key");
    let out = s
        .cli(&[
            "online-endpoint",
            "create",
            "-f",
            ep.to_str().unwrap(),
            "-o",
            "json",
        ])
        .success()
        .json();
    assert!(out.to_string().find("keys").is_none(), "{out}");
    let blue = deployment(
        dir.path(),
        "adder",
        "blue",
        "instance_count: 2\nrequest_settings:\n  max_concurrent_requests_per_instance: 4\n",
    );
    let run = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            blue.to_str().unwrap(),
            "--all-traffic",
            "-o",
            "json",
        ])
        .success();
    let d = run.json();
    assert_eq!(d["provisioning_state"], "Succeeded", "{d:#}");
    assert_eq!(d["replicas"].as_array().unwrap().len(), 2, "{d:#}");
    assert!(run.stderr.contains("all traffic to blue"), "{}", run.stderr);

    // Invoke through the CLI: init() read the model under AZUREML_MODEL_DIR/<last segment>.
    let req = write(dir.path(), "req.json", r#"{"data": [1, 2, 3]}"#);
    let out = s
        .cli(&[
            "online-endpoint",
            "invoke",
            "-n",
            "adder",
            "--request-file",
            req.to_str().unwrap(),
        ])
        .success();
    let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    // Exactly this: no TARN_* variable (token, home) reached the scoring code.
    assert_eq!(answer, json!({"total": 60, "who": "blue"}));
    let shown = s
        .cli(&["online-endpoint", "show", "-n", "adder", "-o", "json"])
        .success()
        .json();
    assert_eq!(shown["scoring_uri"], score_uri(&s, "adder"));

    // Keys: none or a wrong one is 401; both keys work.
    let uri = score_uri(&s, "adder");
    let client = reqwest::blocking::Client::new();
    let (primary, secondary) = key(&s, "adder");
    let body = json!({"data": [1]});
    assert_eq!(score(&client, &uri, "wrong", &body, None).0, 401);
    let no_auth = client.post(&uri).json(&body).send().unwrap();
    assert_eq!(no_auth.status().as_u16(), 401);
    assert_eq!(score(&client, &uri, &primary, &body, None).0, 200);
    assert_eq!(score(&client, &uri, &secondary, &body, None).0, 200);
    // An unknown endpoint is 404.
    assert_eq!(
        score(&client, &score_uri(&s, "nope"), &primary, &body, None).0,
        404
    );

    // A second deployment with a 90/10 split: the observed split is within ±3 %.
    let green = deployment(
        dir.path(),
        "adder",
        "green",
        "request_settings:\n  max_concurrent_requests_per_instance: 4\n",
    );
    s.cli(&["online-deployment", "create", "-f", green.to_str().unwrap()])
        .success();
    s.cli(&[
        "online-endpoint",
        "update",
        "-n",
        "adder",
        "--traffic",
        "blue=90 green=10",
    ])
    .success();
    let counts = burst(&uri, &primary, 5000);
    let blue_n = counts.get(&(200, "blue".into())).copied().unwrap_or(0);
    let green_n = counts.get(&(200, "green".into())).copied().unwrap_or(0);
    assert_eq!(blue_n + green_n, 5000, "{counts:?}");
    let share = green_n as f64 / 5000.0;
    assert!(
        (0.07..=0.13).contains(&share),
        "green got {share}: {counts:?}"
    );

    // The header picks a deployment, bypassing the split; an unknown one is 404.
    let (status, who, answer) = score(&client, &uri, &primary, &body, Some("green"));
    assert_eq!((status, who.as_str()), (200, "green"));
    assert_eq!(answer["who"], "green");
    assert_eq!(score(&client, &uri, &primary, &body, Some("red")).0, 404);

    // Mirror 20 % to green with all live traffic on blue: callers only see blue's answers,
    // green gets its share of copies, and its live request count does not move.
    s.cli(&[
        "online-endpoint",
        "update",
        "-n",
        "adder",
        "--traffic",
        "blue=100",
        "--mirror-traffic",
        "green=20",
    ])
    .success();
    let green_live = metric(
        &s,
        "tarn_endpoint_requests_total",
        "endpoint=\"adder\",deployment=\"green\",code=\"200\"",
    );
    let counts = burst(&uri, &primary, 1000);
    assert_eq!(counts.get(&(200, "blue".into())), Some(&1000), "{counts:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mirrored = loop {
        let m = metric(
            &s,
            "tarn_endpoint_mirrored_requests_total",
            "endpoint=\"adder\",deployment=\"green\"",
        );
        if m >= 140.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!((140.0..=260.0).contains(&mirrored), "mirrored {mirrored}");
    assert_eq!(
        metric(
            &s,
            "tarn_endpoint_requests_total",
            "endpoint=\"adder\",deployment=\"green\",code=\"200\""
        ),
        green_live
    );
    // Metrics count what was answered, with a latency histogram.
    assert!(
        metric(
            &s,
            "tarn_endpoint_request_duration_seconds_count",
            "endpoint=\"adder\",deployment=\"blue\""
        ) >= 5000.0 * 0.87 + 1000.0
    );

    // Bodies: malformed JSON makes the user's run() fail (500, with the reason); a declared
    // oversize body is refused before it is read (413).
    let resp = client
        .post(&uri)
        .bearer_auth(&primary)
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    assert!(resp.text().unwrap().contains("JSONDecodeError"));
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "POST /endpoints/adder/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {primary}\r\nContent-Length: 200000000\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // Large bodies stream both ways: a 3 MB request (past the router's buffer) and a 2 MB answer.
    let big = json!({"data": vec![1; 1_000_000], "pad": 2_000_000});
    let (status, who, answer) = score(&client, &uri, &primary, &big, None);
    assert_eq!((status, who.as_str()), (200, "blue"));
    assert_eq!(answer["total"], 10_000_000);
    assert_eq!(answer["pad"].as_str().unwrap().len(), 2_000_000);

    // Rotation: the regenerated primary key stops working at once; the secondary still works.
    s.cli(&[
        "online-endpoint",
        "regenerate-keys",
        "-n",
        "adder",
        "--key-type",
        "primary",
    ])
    .success();
    let (new_primary, same_secondary) = key(&s, "adder");
    assert_ne!(new_primary, primary);
    assert_eq!(same_secondary, secondary);
    assert_eq!(score(&client, &uri, &primary, &body, None).0, 401);
    assert_eq!(score(&client, &uri, &new_primary, &body, None).0, 200);
    assert_eq!(score(&client, &uri, &secondary, &body, None).0, 200);

    // A Reader sees the endpoint but not its keys.
    let reader = s.user_with_role("rita", "Reader", "default");
    s.cli_as(&reader, &["online-endpoint", "show", "-n", "adder"])
        .success();
    let denied = s
        .cli_as(
            &reader,
            &["online-endpoint", "get-credentials", "-n", "adder"],
        )
        .failure();
    assert!(denied.stderr.contains("Reader"), "{}", denied.stderr);

    // Logs: the replica's output; keys appear in no log and no show.
    let logs = s
        .cli(&[
            "online-deployment",
            "get-logs",
            "-n",
            "blue",
            "-e",
            "adder",
            "--lines",
            "50",
        ])
        .success()
        .stdout;
    assert!(logs.contains("init called"), "{logs}");
    let mut everything = std::fs::read_to_string(s.home.join("server.log")).unwrap();
    everything.push_str(&logs);
    everything.push_str(&shown.to_string());
    for k in [&primary, &new_primary, &secondary] {
        assert!(!everything.contains(k.as_str()), "a key leaked");
    }

    // aml_token endpoints take the token get-credentials hands out, not a made-up one.
    let tok_ep = write(
        dir.path(),
        "tok.yml",
        "name: adder-tok\nauth_mode: aml_token\n",
    );
    s.cli(&["online-endpoint", "create", "-f", tok_ep.to_str().unwrap()])
        .success();
    let tok_dep = deployment(dir.path(), "adder-tok", "only", "");
    s.cli(&[
        "online-deployment",
        "create",
        "-f",
        tok_dep.to_str().unwrap(),
        "--all-traffic",
    ])
    .success();
    let creds = s
        .cli(&[
            "online-endpoint",
            "get-credentials",
            "-n",
            "adder-tok",
            "-o",
            "json",
        ])
        .success()
        .json();
    let token = creds["accessToken"].as_str().unwrap();
    assert!(creds["expiryTimeUtc"].is_string());
    let tok_uri = score_uri(&s, "adder-tok");
    assert_eq!(score(&client, &tok_uri, token, &body, None).0, 200);
    assert_eq!(score(&client, &tok_uri, &new_primary, &body, None).0, 401);
    let regen = s
        .cli(&[
            "online-endpoint",
            "regenerate-keys",
            "-n",
            "adder-tok",
            "--key-type",
            "primary",
        ])
        .failure();
    assert!(regen.stderr.contains("aml_token"), "{}", regen.stderr);

    // Endpoint names are unique on the server (the scoring URI has no workspace).
    s.cli(&["workspace", "create", "-n", "other"]).success();
    let dup = s
        .cli(&[
            "online-endpoint",
            "create",
            "-f",
            ep.to_str().unwrap(),
            "-w",
            "other",
        ])
        .failure();
    assert!(dup.stderr.contains("unique"), "{}", dup.stderr);

    // Deleting the endpoint stops its replicas and its route.
    s.cli(&["online-endpoint", "delete", "-n", "adder", "--yes"])
        .success();
    assert_eq!(score(&client, &uri, &new_primary, &body, None).0, 404);
}

#[test]
fn replicas_roll_restart_and_queue_without_failed_requests() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let ep = project(dir.path(), "roller", "key");
    s.cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
    let file = deployment(
        dir.path(),
        "roller",
        "blue",
        "instance_count: 2\nrequest_settings:\n  max_concurrent_requests_per_instance: 2\n  max_queue_wait_ms: 2000\n",
    );
    s.cli(&[
        "online-deployment",
        "create",
        "-f",
        file.to_str().unwrap(),
        "--all-traffic",
    ])
    .success();
    let uri = score_uri(&s, "roller");
    let (primary, _) = key(&s, "roller");

    // Load from 4 threads for the whole test; every answer must be a 200.
    let load = Load::start(&uri, &primary);

    // A new revision rolls replica by replica.
    let rolled = s
        .cli(&[
            "online-deployment",
            "update",
            "-n",
            "blue",
            "-e",
            "roller",
            "--set",
            "environment_variables.WHO=blue-v2",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(rolled["provisioning_state"], "Succeeded", "{rolled:#}");
    let replicas = rolled["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    assert!(
        replicas
            .iter()
            .all(|r| r["current"] == true && r["state"] == "Ready")
    );

    // Scale out to 3, then kill one scoring server: it is restarted, requests go on.
    let scaled = s
        .cli(&[
            "online-deployment",
            "update",
            "-n",
            "blue",
            "-e",
            "roller",
            "--set",
            "instance_count=3",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        scaled["replicas"].as_array().unwrap().len(),
        3,
        "{scaled:#}"
    );
    let port = scaled["replicas"][0]["port"].as_u64().unwrap();
    let victim = scoring_server_pid(port as u16).expect("the replica's scoring server");
    std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = show_deployment(&s, "roller", "blue");
        let restarted = d["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["restarts"] == 1 && r["state"] == "Ready");
        if restarted {
            break;
        }
        assert!(Instant::now() < deadline, "no restart: {d:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = s
        .cli(&[
            "online-deployment",
            "get-logs",
            "-n",
            "blue",
            "-e",
            "roller",
            "--lines",
            "400",
        ])
        .success()
        .stdout;
    assert!(logs.contains("exited"), "the crash is in the log: {logs}");
    let seen = load.finish();
    assert!(seen.contains_key(&(200, "blue".into())), "{seen:?}");
    assert!(seen.contains_key(&(200, "blue-v2".into())), "{seen:?}");

    // A full queue is 429; a slow answer past request_timeout_ms is 408.
    let slow = deployment(
        dir.path(),
        "roller",
        "slow",
        "request_settings:\n  max_concurrent_requests_per_instance: 1\n  max_queue_wait_ms: 100\n  request_timeout_ms: 1500\n",
    );
    s.cli(&["online-deployment", "create", "-f", slow.to_str().unwrap()])
        .success();
    let burst: Vec<_> = (0..3)
        .map(|_| {
            let (uri, key) = (uri.clone(), primary.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                score(
                    &client,
                    &uri,
                    &key,
                    &json!({"data": [1], "sleep": 1}),
                    Some("slow"),
                )
                .0
            })
        })
        .collect();
    let mut codes: Vec<u16> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    codes.sort();
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 2, "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
    let client = reqwest::blocking::Client::new();
    let (status, _, answer) = score(
        &client,
        &uri,
        &primary,
        &json!({"data": [1], "sleep": 3}),
        Some("slow"),
    );
    assert_eq!(status, 408, "{answer}");

    // A deployment whose init() fails never becomes ready: create fails with its log's tail.
    let bad = deployment_with_env(dir.path(), "roller", "broken", "", "  FAIL_INIT: \"1\"\n");
    let run = s
        .cli(&["online-deployment", "create", "-f", bad.to_str().unwrap()])
        .failure();
    assert!(
        run.stderr.contains("the model file is corrupt (FAIL_INIT)"),
        "{}",
        run.stderr
    );
    let d = show_deployment(&s, "roller", "broken");
    assert_eq!(d["provisioning_state"], "Failed");
    // The other deployments keep serving.
    assert_eq!(
        score(&client, &uri, &primary, &json!({"data": [2]}), None).0,
        200
    );
}

/// The pid of the scoring server listening on `port` (found by its PORT environment variable).
fn scoring_server_pid(port: u16) -> Option<u32> {
    let wanted = format!("PORT={port}");
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmdline).contains("tarn_scoring_server.py") {
            return None;
        }
        let env = std::fs::read(e.path().join("environ")).ok()?;
        env.split(|b| *b == 0)
            .any(|v| v == wanted.as_bytes())
            .then_some(pid)
    })
}

#[test]
fn replicas_stop_with_the_server() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let ep = project(dir.path(), "brief", "key");
    s.cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
    let file = deployment(dir.path(), "brief", "blue", "");
    let d = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .success()
        .json();
    let port = d["replicas"][0]["port"].as_u64().unwrap() as u16;
    assert!(scoring_server_pid(port).is_some());
    let _home = s.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while scoring_server_pid(port).is_some() {
        assert!(
            Instant::now() < deadline,
            "the scoring server outlived its server"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_mlflow_model_is_served_and_batch_scored_with_no_code_and_no_environment() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.is_file(),
        "scripts/test installs the mlflow client into .venv; run it first"
    );
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // A real MLflow pyfunc model, saved by the stock client.
    let made = std::process::Command::new(&python)
        .current_dir(dir.path())
        .args([
            "-c",
            "import mlflow.pyfunc\n\
             class Doubler(mlflow.pyfunc.PythonModel):\n\
             \x20   def predict(self, context, model_input, params=None):\n\
             \x20       return model_input['x'] * 2 + model_input['y']\n\
             mlflow.pyfunc.save_model('doubler', python_model=Doubler())\n",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    s.cli(&[
        "model",
        "create",
        "--name",
        "doubler",
        "--path",
        dir.path().join("doubler").to_str().unwrap(),
        "--type",
        "mlflow_model",
    ])
    .success();
    let ep = write(dir.path(), "ep.yml", "name: doubler-ep\n");
    s.cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
    let dep = write(
        dir.path(),
        "dep.yml",
        "name: blue\nendpoint_name: doubler-ep\nmodel: azureml:doubler@latest\ninstance_count: 1\n",
    );
    let d = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            dep.to_str().unwrap(),
            "--all-traffic",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(d["provisioning_state"], "Succeeded", "{d:#}");
    assert_eq!(d["spec"]["model"], "azureml:doubler:1", "@latest is pinned");
    let uri = score_uri(&s, "doubler-ep");
    let (primary, _) = key(&s, "doubler-ep");
    let client = reqwest::blocking::Client::new();
    // Azure ML's input_data (split orientation), and MLflow's own formats.
    let bodies = [
        json!({"input_data": {"columns": ["x", "y"], "index": [0, 1], "data": [[1, 10], [2, 20]]}}),
        json!({"dataframe_split": {"columns": ["x", "y"], "data": [[1, 10], [2, 20]]}}),
        json!({"dataframe_records": [{"x": 1, "y": 10}, {"x": 2, "y": 20}]}),
    ];
    for body in bodies {
        let (status, _, answer) = score(&client, &uri, &primary, &body, None);
        assert_eq!((status, answer.clone()), (200, json!([12, 24])), "{body}");
    }
    // Malformed input is the caller's fault: 400 with the reason.
    let (status, _, answer) = score(&client, &uri, &primary, &json!({"rows": []}), None);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("input_data"), "{answer}");
    let logs = s
        .cli(&[
            "online-deployment",
            "get-logs",
            "-n",
            "blue",
            "-e",
            "doubler-ep",
            "--lines",
            "200",
        ])
        .success()
        .stdout;
    assert!(
        logs.contains("environment from the MLflow model's requirements: mlflow-skinny==3.17.2"),
        "{logs}"
    );
    // A custom model needs code and an environment: refused at create, nothing stored.
    let custom = write(
        dir.path(),
        "custom.yml",
        "name: green\nendpoint_name: doubler-ep\nmodel:\n  path: ./doubler\n",
    );
    let run = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            custom.to_str().unwrap(),
        ])
        .failure();
    assert!(run.stderr.contains("code_configuration"), "{}", run.stderr);
    let list = s
        .cli(&[
            "online-deployment",
            "list",
            "-e",
            "doubler-ep",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // The same model batch-scores files with no code and no environment (the replica's
    // environment is reused: same requirements, same build).
    write(dir.path(), "rows/a.csv", "x,y\n1,10\n2,20\n");
    write(dir.path(), "rows/b.csv", "x,y\n3,30\n");
    write(dir.path(), "rows/c.jsonl", "{\"x\": 4, \"y\": 40}\n");
    let bep = write(dir.path(), "bep.yml", "name: doubler-batch\n");
    s.cli(&["batch-endpoint", "create", "-f", bep.to_str().unwrap()])
        .success();
    let bdep = write(
        dir.path(),
        "bdep.yml",
        "name: nocode\nendpoint_name: doubler-batch\nmodel: azureml:doubler@latest\nsettings:\n  mini_batch_size: 2\n",
    );
    s.cli(&["batch-deployment", "create", "-f", bdep.to_str().unwrap()])
        .success();
    let rows = dir.path().join("rows");
    let run = s
        .cli(&[
            "batch-endpoint",
            "invoke",
            "-n",
            "doubler-batch",
            "--input",
            rows.to_str().unwrap(),
            "--stream",
        ])
        .success();
    assert!(
        run.stdout.contains("3 of 3 file(s) scored"),
        "{}",
        run.stdout
    );
    let job = s
        .cli(&[
            "batch-endpoint",
            "list-jobs",
            "-n",
            "doubler-batch",
            "-o",
            "json",
        ])
        .success()
        .json()[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = dir.path().join("scores");
    s.cli(&[
        "job",
        "download",
        "-n",
        &job,
        "--output-name",
        "score",
        "--download-path",
        out.to_str().unwrap(),
    ])
    .success();
    let text = std::fs::read_to_string(out.join("named-outputs/score/predictions.csv")).unwrap();
    let mut rows: Vec<&str> = text.lines().collect();
    rows.sort();
    assert_eq!(rows, ["a.csv,12", "a.csv,24", "b.csv,36", "c.jsonl,48"]);
}
