//! A real OpenID Connect provider for the sign-in tests: `tests/peers/oidc.mjs` (npm's
//! `oidc-provider`, installed by `scripts/test`) on a loopback port chosen before Tarn starts
//! (Tarn learns its issuer URL at start, the provider Tarn's redirect URI at its own), in a
//! process group of its own, stopped on drop. Restarting it on the same port with other keys
//! rotates its signing key.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Oidc {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    redirect: String,
}

pub fn issuer(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub fn script(name: &str) -> PathBuf {
    super::peers::repo().join("tests/peers").join(name)
}

impl Oidc {
    /// Starts the provider on `port` for Tarn at `tarn_url`, publishing key `k1`.
    pub fn start(port: u16, tarn_url: &str) -> Oidc {
        let dir = tempfile::tempdir().unwrap();
        let redirect = format!("{tarn_url}/login/oidc/callback");
        let child = spawn(port, &redirect, &dir.path().join("keys.json"), "k1");
        Oidc {
            child,
            port,
            dir,
            redirect,
        }
    }

    /// Stops it and starts it again on the same port, publishing `keys` (the first signs).
    pub fn restart(&mut self, keys: &str) {
        stop(&mut self.child);
        self.child = spawn(
            self.port,
            &self.redirect,
            &self.dir.path().join("keys.json"),
            keys,
        );
    }

    pub fn issuer(&self) -> String {
        issuer(self.port)
    }

    /// Makes the provider spoil the next ID token it issues (`expired`, `wrong-aud`, …).
    pub fn spoil_next(&self, mode: &str) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/test/next-id-token?mode={mode}", self.issuer()))
            .send()
            .unwrap();
        assert!(resp.status().is_success());
    }
}

fn spawn(port: u16, redirect: &str, keys: &std::path::Path, sign_with: &str) -> Child {
    let node_modules = super::peers::repo().join("tests/peers/node_modules");
    assert!(
        node_modules.join("oidc-provider").is_dir(),
        "oidc-provider is missing: scripts/test installs it (cd tests/peers && npm ci)"
    );
    let mut child = Command::new("node")
        .arg(script("oidc.mjs"))
        .env("OIDC_PORT", port.to_string())
        .env("TARN_REDIRECT", redirect)
        .env("OIDC_KEYS", keys)
        .env("OIDC_SIGN_WITH", sign_with)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting node tests/peers/oidc.mjs");
    let start = Instant::now();
    loop {
        let up =
            reqwest::blocking::get(format!("{}/.well-known/openid-configuration", issuer(port)))
                .is_ok_and(|r| r.status().is_success());
        if up {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the OpenID provider exited ({status}) before it answered");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the OpenID provider did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(child: &mut Child) {
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

impl Drop for Oidc {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
