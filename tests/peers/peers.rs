//! Real storage peers for tests: Azurite (Azure Blob) and moto (S3, and GCS through its XML
//! API), each started on a free loopback port and stopped when dropped. `scripts/test`
//! installs them (`tests/peers/package.json`, `tests/peers/requirements.txt`); a missing
//! peer fails the test that needs it, with the command that installs it.
//!
//! Shared by the storage suite and the end-to-end tests through `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn repo() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("tests/peers").is_dir() {
        assert!(dir.pop(), "cannot find the repository root");
    }
    dir
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports that were free a moment ago (held together while chosen, so none is
/// chosen twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running peer; stopped (killed) when dropped.
pub struct Peer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
}

impl Peer {
    fn start(program: PathBuf, args: &[String], port: u16, what: &str) -> Peer {
        assert!(
            program.exists(),
            "{what} is not installed at {}: run ./scripts/test (or see its install steps)",
            program.display()
        );
        let mut child = Command::new(&program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        wait_port(port, &mut child, what);
        Peer {
            child: Some(child),
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Azure Blob: Azurite, in memory.
    pub fn azurite() -> Peer {
        Peer::azurite_with_memory(2048)
    }

    /// Azurite that refuses writes once it holds `megabytes` of data: a server that fails
    /// part-way through an upload, deterministically.
    pub fn azurite_with_memory(megabytes: u32) -> Peer {
        let port = free_port();
        let bin = repo().join("tests/peers/node_modules/.bin/azurite-blob");
        let args: Vec<String> = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            &megabytes.to_string(),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut peer = Peer::start(bin, &args, port, "azurite");
        peer.url = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
        peer
    }

    /// GCS's XML API: moto's S3 server behind `moto_gcs.py` (see there why), in memory.
    pub fn moto_gcs() -> Peer {
        let port = free_port();
        let python = repo().join(".venv/bin/python");
        let script = repo().join("tests/peers/moto_gcs.py");
        Peer::start(
            python,
            &[script.display().to_string(), port.to_string()],
            port,
            "moto (as GCS)",
        )
    }

    /// S3: moto's server, in memory.
    pub fn moto() -> Peer {
        let port = free_port();
        let bin = repo().join(".venv/bin/moto_server");
        Peer::start(
            bin,
            &[
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ],
            port,
            "moto",
        )
    }

    /// Kills the peer now (to test failures mid-transfer).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Creates an Azure container (object_store cannot), signed with the account key.
    pub fn azure_container(&self, container: &str) {
        self.create_azure_container(container, false)
    }

    /// Creates an Azure container that anyone may list and read, without credentials.
    pub fn public_azure_container(&self, container: &str) {
        self.create_azure_container(container, true)
    }

    fn create_azure_container(&self, container: &str, public: bool) {
        let date = httpdate();
        let version = "2021-08-06";
        let resource =
            format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container");
        let access = if public {
            "x-ms-blob-public-access:container\n"
        } else {
            ""
        };
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\n{access}x-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = base64_decode(AZURITE_KEY);
        let signature = base64_encode(&hmac_sha256(&key, to_sign.as_bytes()));
        let mut req = reqwest::blocking::Client::new()
            .put(format!("{}/{container}?restype=container", self.url));
        if public {
            req = req.header("x-ms-blob-public-access", "container");
        }
        let resp = req
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("Content-Length", "0")
            .header(
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            )
            .send()
            .unwrap();
        assert!(
            resp.status().is_success(),
            "creating container {container}: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }

    /// Creates an S3 bucket (moto accepts unsigned requests).
    pub fn s3_bucket(&self, bucket: &str) {
        let resp = reqwest::blocking::Client::new()
            .put(format!("{}/{bucket}", self.url))
            .send()
            .unwrap();
        assert!(
            resp.status().is_success(),
            "creating bucket {bucket}: {}",
            resp.status()
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn httpdate() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}
