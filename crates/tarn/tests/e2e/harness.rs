//! Starting and stopping a real server, running the CLI against it, and calling its API.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_tarn");

/// The repository's YAML corpus.
pub fn corpus(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus")
        .join(dir)
}

/// A `TARN_HOME` that outlives the servers started on it (a temp dir, removed at the end).
pub struct Home {
    pub path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Home {
    /// A home at `path`, inside `keep`, which is removed at the end.
    pub fn kept_in(path: PathBuf, keep: tempfile::TempDir) -> Home {
        Home {
            path,
            _tmp: Some(keep),
        }
    }

    pub fn temp() -> Home {
        let tmp = tempfile::tempdir().unwrap();
        Home {
            path: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
        }
    }
}

pub struct Server {
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub home: PathBuf,
    pub url: String,
    pub token: String,
}

pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert!(
            self.ok,
            "command failed ({:?})\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failure(self) -> Run {
        assert!(
            !self.ok,
            "command succeeded but should not have\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Starts `tarn up` in `home`, returning the child and its API base URL once it is serving.
pub fn spawn_up(home: &Path, extra_env: &[(&str, &str)]) -> Result<(Child, String), String> {
    spawn_up_on(home, 0, extra_env)
}

/// The repository's uv (installed by `scripts/test` into `.venv`), which builds job environments.
pub fn repo_uv() -> Option<PathBuf> {
    let uv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/uv");
    uv.is_file().then_some(uv)
}

/// Starts `tarn up` on `port` (0: any free port).
pub fn spawn_up_on(
    home: &Path,
    port: u16,
    extra_env: &[(&str, &str)],
) -> Result<(Child, String), String> {
    spawn_up_as(home, port, extra_env, &[], &[])
}

/// Starts `tarn up` through `wrapper` (e.g. `setpriv` to run it as another user), with
/// `extra_args` after `up`.
pub fn spawn_up_as(
    home: &Path,
    port: u16,
    extra_env: &[(&str, &str)],
    wrapper: &[&str],
    extra_args: &[&str],
) -> Result<(Child, String), String> {
    spawn_binary(Path::new(BIN), home, port, extra_env, wrapper, extra_args)
}

/// Under `TARN_E2E_STORE=postgres`, the `--store` of a server on `home`: a database of its own
/// on the PostgreSQL server at `TARN_TEST_POSTGRES` (which `scripts/test` starts), named after
/// the home so that a restarted server finds its data again. `None` keeps SQLite in the home.
fn postgres_store(home: &Path) -> Option<String> {
    if std::env::var("TARN_E2E_STORE").ok()?.as_str() != "postgres" {
        return None;
    }
    let base = std::env::var("TARN_TEST_POSTGRES")
        .expect("TARN_E2E_STORE=postgres needs TARN_TEST_POSTGRES (scripts/test sets both)");
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    home.hash(&mut h);
    Some(create_database(&base, &format!("e2e_{:016x}", h.finish())))
}

/// Makes database `name` (unless it exists) on the server at `base` (a URL ending in `/postgres`);
/// returns its URL.
fn create_database(base: &str, name: &str) -> String {
    let out = Command::new("psql")
        .args([base, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("running psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("already exists"),
        "cannot make the test database: {stderr}"
    );
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

/// A throwaway PostgreSQL server of a test's own (`scripts/pg-temp`), stopped on drop. A
/// `secure` one also serves TLS with a certificate for 127.0.0.1 signed by `tls/ca.crt` in its
/// folder (`tls/other-ca.crt` signed nothing of it) and lets the role `tarn` in only over TLS
/// with a password.
pub struct PgServer {
    /// The superuser's URL (trust authentication).
    pub url: String,
    pub dir: PathBuf,
}

const PG_TEMP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-temp");

impl PgServer {
    pub fn start(secure: bool) -> PgServer {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/tarn-e2e-pg-{}-{n}", std::process::id()));
        let mut cmd = Command::new(PG_TEMP);
        cmd.arg("start").arg(&dir);
        if secure {
            cmd.arg("--secure");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "cannot start PostgreSQL (install Debian's `postgresql`, or set TARN_TEST_POSTGRES): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PgServer {
            url: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            dir,
        }
    }

    /// Runs SQL as the superuser; its output, unaligned.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                self.url.as_str(),
                "-qtA",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new(PG_TEMP).arg("stop").arg(&self.dir).status();
    }
}

/// A new, empty PostgreSQL database: on the server `scripts/test` started
/// (`TARN_TEST_POSTGRES`), or else on a throwaway server of this test's own, stopped on drop.
pub struct PgDatabase {
    pub url: String,
    _own_server: Option<PgServer>,
}

impl PgDatabase {
    pub fn new() -> PgDatabase {
        let (base, own_server) = match std::env::var("TARN_TEST_POSTGRES") {
            Ok(url) => (url, None),
            Err(_) => {
                let server = PgServer::start(false);
                (server.url.clone(), Some(server))
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("e2e_{}_{nanos}", std::process::id());
        PgDatabase {
            url: create_database(&base, &name),
            _own_server: own_server,
        }
    }
}

/// Starts `tarn up` from the binary at `bin` (a copy of the one under test).
pub fn spawn_binary(
    bin: &Path,
    home: &Path,
    port: u16,
    extra_env: &[(&str, &str)],
    wrapper: &[&str],
    extra_args: &[&str],
) -> Result<(Child, String), String> {
    std::fs::create_dir_all(home).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("server.log"))
        .unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["up", "--port", &port.to_string(), "--home"])
        .arg(home)
        .args(extra_args)
        .args(
            postgres_store(home)
                .filter(|_| !extra_args.contains(&"--store"))
                .map(|url| ["--store".to_string(), url])
                .into_iter()
                .flatten(),
        )
        .env_remove("TARN_SERVER")
        .env_remove("TARN_TOKEN")
        .env_remove("TARN_VAULT_KEY_FILE")
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(uv) = repo_uv() {
        cmd.env("TARN_UV", uv);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("starting tarn up");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.trim().strip_prefix("API:") {
                    break rest.trim().trim_end_matches("/api/v1").to_string();
                }
            }
            _ => {
                let status = child.wait().unwrap();
                let log = std::fs::read_to_string(home.join("server.log")).unwrap_or_default();
                return Err(format!("tarn up exited ({status}) before serving:\n{log}"));
            }
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, url))
}

impl Server {
    pub fn start() -> Server {
        Server::start_on(Home::temp())
    }

    /// Starts (or restarts) a server on a home.
    pub fn start_on(home: Home) -> Server {
        let mut s = Server::start_in(&home.path);
        s._tmp = home._tmp;
        s
    }

    /// Starts a server with extra environment variables.
    pub fn start_with_env(home: Home, env: &[(&str, &str)]) -> Server {
        let mut s = Server::start_in_with(&home.path, env);
        s._tmp = home._tmp;
        s
    }

    fn start_in(home: &Path) -> Server {
        Server::start_in_with(home, &[])
    }

    /// Restarts a server on a home at the port it had (runners know the server by its URL).
    pub fn restart_on(home: Home, url: &str) -> Server {
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let (child, url) = spawn_up_on(&home.path, port, &[]).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Server::from_child(&home.path, child, url);
        s._tmp = home._tmp;
        s
    }

    fn start_in_with(home: &Path, env: &[(&str, &str)]) -> Server {
        let (child, url) = spawn_up(home, env).unwrap_or_else(|e| panic!("{e}"));
        Server::from_child(home, child, url)
    }

    /// Starts a server from another copy of the binary.
    pub fn start_binary(home: Home, bin: &Path) -> Server {
        let (child, url) =
            spawn_binary(bin, &home.path, 0, &[], &[], &[]).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Server::from_child(&home.path, child, url);
        s._tmp = home._tmp;
        s
    }

    /// Starts a server with extra environment variables and `tarn up` arguments.
    pub fn start_with(home: Home, env: &[(&str, &str)], args: &[&str]) -> Server {
        let (child, url) =
            spawn_up_as(&home.path, 0, env, &[], args).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Server::from_child(&home.path, child, url);
        s._tmp = home._tmp;
        s
    }

    /// Starts a server on `home` through `wrapper`, with extra `tarn up` arguments.
    pub fn start_as(home: Home, wrapper: &[&str], args: &[&str]) -> Server {
        let (child, url) =
            spawn_up_as(&home.path, 0, &[], wrapper, args).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Server::from_child(&home.path, child, url);
        s._tmp = home._tmp;
        s
    }

    /// A server started by hand (`spawn_up_as`) on `home`, handled like the others from here.
    pub fn adopt(home: Home, child: Child, url: String) -> Server {
        let mut s = Server::from_child(&home.path, child, url);
        s._tmp = home._tmp;
        s
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    fn from_child(home: &Path, child: Child, url: String) -> Server {
        let creds: Value =
            serde_json::from_str(&std::fs::read_to_string(home.join("credentials.json")).unwrap())
                .unwrap();
        let token = creds["token"].as_str().unwrap().to_string();
        Server {
            child: Some(child),
            _tmp: None,
            home: home.to_path_buf(),
            url,
            token,
        }
    }

    /// Runs the CLI as the local administrator (credentials from TARN_HOME, no flags).
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_with(args, &[])
    }

    pub fn cli_as(&self, token: &str, args: &[&str]) -> Run {
        self.cli_with(args, &[("TARN_TOKEN", token)])
    }

    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TARN_HOME", &self.home)
            .env_remove("TARN_SERVER")
            .env_remove("TARN_TOKEN")
            .env_remove("TARN_WORKSPACE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running tarn").into()
    }

    /// `tarn <group> create -f <file>` (`extra` after it), which must succeed.
    pub fn create_from(&self, group: &str, file: &Path, extra: &[&str]) -> Run {
        let file = file.to_str().expect("a UTF-8 path");
        let mut args = vec![group, "create", "-f", file];
        args.extend(extra);
        self.cli(&args).success()
    }

    /// Creates a user with `role` in `workspace`; returns their token.
    pub fn user_with_role(&self, name: &str, role: &str, workspace: &str) -> String {
        let token = self
            .cli(&["user", "create", "--name", name])
            .success()
            .stdout
            .trim()
            .to_string();
        self.cli(&[
            "role", "assign", "--user", name, "--role", role, "-w", workspace,
        ])
        .success();
        token
    }

    pub fn http(&self) -> Http {
        Http {
            base: self.url.clone(),
            token: Some(self.token.clone()),
            client: reqwest::blocking::Client::new(),
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) -> Home {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        Home {
            path: self.home.clone(),
            _tmp: self._tmp.take(),
        }
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(mut self) -> Home {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "tarn up exited with {status} on SIGTERM");
        Home {
            path: self.home.clone(),
            _tmp: self._tmp.take(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub token: Option<String>,
    client: reqwest::blocking::Client,
}

impl Http {
    pub fn with_token(&self, token: Option<&str>) -> Http {
        Http {
            base: self.base.clone(),
            token: token.map(str::to_string),
            client: self.client.clone(),
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A POST that returns `None` when the server cannot be reached (e.g. it was killed).
    pub fn try_post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().ok()?;
        Some((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }
}

/// A folder that tests and jobs share (a gate file a job waits for, a file it appends to).
/// User code sees neither `/tmp` (its own is private) nor folders other users cannot enter,
/// so this one lives in the build's scratch folder and anyone may write in it.
pub fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("shared-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}
