//! Serving runners and users on other machines: HTTPS with the server's own certificate
//! (`--tls-cert/--tls-key`), plain HTTP refused on a reachable address unless asked for, and
//! the `tarn` binary that nodes of an engine download, with its checksum.

use crate::harness::{BIN, Home, Server, spawn_up_as};
use crate::jobs::{HOST_ENV, write};
use sha2::Digest;
use std::path::Path;
use std::process::Command;

/// A test CA and a certificate it signed for 127.0.0.1 (openssl's CLI): (ca, cert, key).
fn certificates(dir: &Path) -> (String, String, String) {
    let p = |f: &str| dir.join(f).display().to_string();
    let ext = write(
        dir,
        "ext.cnf",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=tarn-test-ca",
            ],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &p("key.pem"),
                "-out",
                &p("leaf.csr"),
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect(),
        [
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p("cert.pem"),
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

#[test]
fn https_serves_the_cli_and_jobs_and_only_with_a_trusted_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    // Runners reach the server through the same certificate check: the server passes its
    // trust settings (`SSL_CERT_FILE`) on to them.
    let s = Server::start_with(
        Home::temp(),
        &[("SSL_CERT_FILE", &ca)],
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let trusted = [("SSL_CERT_FILE", ca.as_str())];
    // Five hundred clients that connect and never start their handshake hold up no one, and
    // each is let go when its 10 s to finish the handshake are over.
    let addr = s.url.trim_start_matches("https://").to_string();
    let silent: Vec<std::net::TcpStream> = (0..500)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    s.cli_with(&["workspace", "list"], &trusted).success();
    let mut first = silent.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut first, &mut buf);
    assert!(
        matches!(&read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a client silent past the handshake limit is disconnected (not still waiting after 30 s): {read:?}"
    );
    let untrusted = s
        .cli_with(&["workspace", "list"], &[("SSL_CERT_FILE", "/nonexistent")])
        .failure();
    assert!(
        untrusted.stderr.contains("certificate"),
        "{}",
        untrusted.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "job.yml",
        &format!("command: echo over https\n{HOST_ENV}"),
    );
    let run = s
        .cli_with(
            &["job", "create", "-f", file.to_str().unwrap(), "--stream"],
            &trusted,
        )
        .success();
    assert!(run.stdout.contains("over https"), "{}", run.stdout);

    // Plain HTTP on the TLS port gets nowhere.
    let plain = s.url.replace("https://", "http://");
    let got = reqwest::blocking::get(format!("{plain}/api/v1/health"));
    assert!(got.is_err() || !got.unwrap().status().is_success());
}

#[test]
fn plain_http_on_a_reachable_address_is_refused_unless_asked_for() {
    let home = Home::temp();
    // Refused before anything listens.
    let err = spawn_up_as(&home.path, 0, &[], &[], &["--host", "0.0.0.0"]).unwrap_err();
    assert!(
        err.contains("--insecure-http") && err.contains("--tls-cert"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = spawn_up_as(
        &home.path,
        0,
        &[],
        &[],
        &[
            "--tls-cert",
            &write(dir.path(), "c.pem", "not a certificate")
                .display()
                .to_string(),
            "--tls-key",
            "/nonexistent.pem",
        ],
    )
    .unwrap_err();
    assert!(err.contains("c.pem"), "a bad certificate is named: {err}");
}

#[test]
fn nodes_download_the_runner_binary_with_its_checksum() {
    let s = Server::start();
    let url = format!("{}/api/v1/runner/binary", s.url);
    let client = reqwest::blocking::Client::new();
    assert_eq!(client.get(&url).send().unwrap().status(), 401);
    let got = client.get(&url).bearer_auth(&s.token).send().unwrap();
    assert_eq!(got.status(), 200);
    let sha = got.headers()["x-tarn-sha256"].to_str().unwrap().to_string();
    let body = got.bytes().unwrap();
    let own = std::fs::read(BIN).unwrap();
    assert_eq!(body.len(), own.len());
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(&sha2::Sha256::digest(&body)), sha);
    assert_eq!(
        hex(&sha2::Sha256::digest(&own)),
        sha,
        "the server's own binary"
    );
}
