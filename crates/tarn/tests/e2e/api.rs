//! API contract: error format, body limits, malformed requests, server-side validation.

use crate::harness::Server;
use serde_json::json;

#[test]
fn errors_have_one_shape_and_bad_requests_change_nothing() {
    let s = Server::start();
    let http = s.http();

    let (status, reply) = http.get("/api/v1/no/such/route");
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (404, Some("NotFound"))
    );

    let (status, reply) = http.raw(
        "POST",
        "/api/v1/workspaces/default/models",
        b"{not json".to_vec(),
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("BadRequest")),
        "{reply}"
    );

    // A body over the limit is refused from its declared length, before it is read.
    let (status, code) = oversize_request(&s.url, &s.token, 5 * 1024 * 1024);
    assert_eq!((status, code.as_str()), (413, "PayloadTooLarge"));

    // JSON specs are validated on the server too, with every finding listed.
    let (status, reply) = http.post(
        "/api/v1/workspaces/default/computes",
        &json!({"name": "Bad_Name!", "type": "amlcompute", "max_instance": 3, "min_instances": "zero"}),
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["code"], "ValidationError");
    let details: Vec<String> = reply["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}: {}", d["path"], d["message"]))
        .collect();
    assert_eq!(details.len(), 3, "{details:?}");
    assert!(
        details
            .iter()
            .any(|d| d.contains("max_instance") && d.contains("did you mean `max_instances`")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("min_instances") && d.contains("expected an integer")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("name") && d.contains("not a valid compute name")),
        "{details:?}"
    );

    let (status, reply) = http.post(
        "/api/v1/workspaces/default/jobs",
        &json!({"command": "echo"}),
    );
    assert_eq!(status, 400, "a command job without an environment: {reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("environment"),
        "{reply}"
    );
    let (_, jobs) = http.get("/api/v1/workspaces/default/jobs");
    assert_eq!(jobs["value"], json!([]), "no job was queued");

    let (_, computes) = http.get("/api/v1/workspaces/default/computes");
    assert_eq!(computes["value"], json!([]), "nothing was created");
}

#[test]
fn the_served_openapi_document_is_the_committed_one() {
    let s = Server::start();
    let served = reqwest::blocking::get(format!("{}/api/v1/openapi.json", s.url))
        .unwrap()
        .text()
        .unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is stale: regenerate it (see README)"
    );
}

/// Sends the headers of a JSON request with a `Content-Length` over the limit and a little of
/// its body, then reads the answer: the server must refuse without waiting for the rest.
fn oversize_request(base: &str, token: &str, length: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/v1/workspaces/default/models HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"name\": \"m\", \"path\": \""
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    let code = serde_json::from_str::<serde_json::Value>(body.trim())
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code)
}

/// The background tasks are named and recorded: `tarn server status` shows each with its
/// passes (administrators only; others get the health answer), and `/metrics` carries them.
#[test]
fn server_status_and_metrics_show_the_background_tasks() {
    let s = crate::harness::Server::start();
    let start = std::time::Instant::now();
    let status = loop {
        let status = s.cli(&["server", "status", "-o", "json"]).success().json();
        let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
        if tasks.len() == 6 && tasks.iter().all(|t| t["passes"].as_u64() > Some(0)) {
            break status;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{status:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let names: Vec<&str> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "leadership",
            "scheduler",
            "endpoints",
            "instances",
            "schedules",
            "traces"
        ],
        "{status:#}"
    );
    assert_eq!(status["status"], "ok");
    // One server on its home's SQLite store: it is the only one listed, and it leads.
    assert_eq!(status["leader"], true, "{status:#}");
    let servers = status["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{status:#}");
    assert_eq!(servers[0]["id"], status["server_id"]);
    assert_eq!(servers[0]["url"], s.url.as_str());
    assert!(servers[0]["leader"] == true && servers[0]["this"] == true);
    for t in status["tasks"].as_array().unwrap() {
        assert_eq!(t["errors"], 0, "{t}");
        assert!(t["lag_s"].as_f64().unwrap() < 5.0, "{t}");
    }
    let user = s.user_with_role("ann", "Reader", "default");
    let plain = s
        .cli_as(&user, &["server", "status", "-o", "json"])
        .success()
        .json();
    assert_eq!(plain["status"], "ok");
    assert!(plain.get("tasks").is_none(), "{plain:#}");
    let metrics = reqwest::blocking::get(format!("{}/metrics", s.url))
        .unwrap()
        .text()
        .unwrap();
    for task in ["scheduler", "endpoints", "instances", "schedules", "traces"] {
        assert!(
            metrics.contains(&format!("tarn_task_passes_total{{task=\"{task}\"}}")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("tarn_task_lag_seconds"), "{metrics}");
    assert!(metrics.contains("\ntarn_leader 1\n"), "{metrics}");
}
