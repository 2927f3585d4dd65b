//! Hostile clients: a thousand connections held open and idle, headers sent a byte at a time
//! (slowloris), a body that stops half-way. Each is cut off at its timeout, and none of them
//! stops anyone else from being served meanwhile. Beyond `--max-connections`, a connection
//! waits until one closes.

use crate::harness::{Home, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads until the server closes the connection (or the deadline passes); returns what it sent.
fn read_until_closed(mut s: TcpStream, within: Duration) -> Option<String> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).to_string()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).to_string());
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn hostile_clients_are_cut_off_and_others_are_still_served() {
    let s = Server::start_with(
        Home::temp(),
        &[],
        &["--header-timeout", "5s", "--body-timeout", "2s"],
    );
    let addr = s.url.trim_start_matches("http://").to_string();

    // A thousand connections, opened and left silent.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Slowloris: a request's headers started and never finished.
    let mut slow_headers = TcpStream::connect(&addr).unwrap();
    slow_headers
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .unwrap();
    // A body that stops after a few bytes of the hundred it announced.
    let mut slow_body = TcpStream::connect(&addr).unwrap();
    write!(
        slow_body,
        "POST /api/v1/workspaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na",
        s.token
    )
    .unwrap();

    // Meanwhile everyone else is served.
    let started = Instant::now();
    let listed = s.cli(&["workspace", "list", "-o", "json"]).success().json();
    assert_eq!(listed[0]["name"], "default", "{listed}");
    let (code, _) = s.http().get("/api/v1/health");
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served while the thousand connections were still held (before their 5 s timeout), not after: {:?}",
        started.elapsed()
    );

    // Each hostile connection is cut off at its timeout.
    let closed = read_until_closed(slow_headers, Duration::from_secs(15));
    assert_eq!(
        closed.as_deref(),
        Some(""),
        "headers not finished in 5 s: the connection is closed without an answer"
    );
    let answered = read_until_closed(slow_body, Duration::from_secs(15))
        .expect("a stalled body gets an answer and the connection is closed");
    assert!(answered.starts_with("HTTP/1.1 400"), "{answered}");
    let idle_closed = idle
        .into_iter()
        .take(3)
        .map(|c| read_until_closed(c, Duration::from_secs(15)))
        .collect::<Vec<_>>();
    assert!(
        idle_closed.iter().all(|c| c.as_deref() == Some("")),
        "connections idle past the header timeout are closed: {idle_closed:?}"
    );
    // No workspace was made from the half body.
    let listed = s.cli(&["workspace", "list", "-o", "json"]).success().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn beyond_the_connection_cap_new_connections_wait_until_one_closes() {
    let s = Server::start_with(
        Home::temp(),
        &[],
        &["--max-connections", "20", "--header-timeout", "60s"],
    );
    let addr = s.url.trim_start_matches("http://").to_string();
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // All twenty places are taken: a request is not served while they are held.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let health = format!("{}/api/v1/health", s.url);
    assert!(
        client.get(&health).send().is_err(),
        "a 21st connection was served beyond --max-connections 20"
    );
    // One place freed: the next one is served.
    drop(held);
    let reply = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(&health)
        .send()
        .expect("served once the held connections closed");
    assert!(reply.status().is_success());
}
