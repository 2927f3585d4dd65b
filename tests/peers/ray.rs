//! A real Ray cluster on this machine for the Ray backend's tests: `ray[default]` from PyPI
//! (installed by `scripts/test` into `.venv-ray`), a head node on 127.0.0.1 with two CPUs and
//! a worker node with one (`ray_worker.py`: `ray start --address` would move a second node of
//! one machine to its external address), every port its own (so clusters of parallel tests
//! never meet), each started in a process group of its own and stopped with it on drop (`ray
//! stop` would stop every Ray on the machine).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Ray {
    child: Option<Child>,
    worker: Option<Child>,
    _dir: tempfile::TempDir,
    /// The dashboard, where the Jobs API answers.
    pub address: String,
}

/// Ray's worker ports: `WORKER_PORTS` consecutive ports that are all free now and none of the
/// component ports `taken` (Ray refuses to start when a component's port falls in
/// the worker range).
fn free_worker_range(taken: &[u16]) -> u16 {
    // Below the kernel's ephemeral range (32768-60999), where outgoing connections would take
    // ports from under a range that was free a moment ago.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    for attempt in 0..200u32 {
        let base = 10_000 + (seed.wrapping_add(attempt.wrapping_mul(7919)) % 22_000) as u16;
        let Some(end) = base.checked_add(WORKER_PORTS - 1) else {
            continue;
        };
        let range = base..=end;
        if taken.iter().any(|p| range.contains(p)) {
            continue;
        }
        let held: Result<Vec<_>, _> = range
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no {WORKER_PORTS} consecutive free ports for Ray's workers");
}

const WORKER_PORTS: u16 = 41;

/// The Ray installation the tests use.
pub fn ray_bin() -> PathBuf {
    super::peers::repo().join(".venv-ray/bin")
}

impl Ray {
    /// A head and a worker node, both alive. A start that does not get ready in time (the
    /// machine loaded by parallel tests, a port taken between choosing and binding it) is
    /// stopped and tried again on fresh ports; the third failure panics with every try's logs.
    pub fn start() -> Ray {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Ray::try_start() {
                Ok(ray) => return ray,
                Err(why) => failures.push(why),
            }
        }
        panic!("Ray did not start:\n{}", failures.join("\n---\n"));
    }

    fn try_start() -> Result<Ray, String> {
        // Short: Ray's unix sockets live under it.
        let dir = tempfile::Builder::new()
            .prefix("ray")
            .tempdir_in("/tmp")
            .unwrap();
        let bin = ray_bin();
        assert!(
            bin.join("ray").exists(),
            "Ray is not installed in .venv-ray (run scripts/test)"
        );
        let p = super::peers::free_ports(10);
        let workers = free_worker_range(&p);
        let arg = |flag: &str, port: u16| format!("--{flag}={port}");
        let log = std::fs::File::create(dir.path().join("ray.log")).unwrap();
        let mut cmd = Command::new(bin.join("ray"));
        cmd.args([
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            "--include-dashboard=true",
        ])
        .arg(arg("port", p[0]))
        .arg(arg("dashboard-port", p[1]))
        .arg(arg("ray-client-server-port", p[2]))
        .arg(arg("node-manager-port", p[3]))
        .arg(arg("object-manager-port", p[4]))
        .arg(arg("dashboard-agent-listen-port", p[5]))
        .arg(arg("dashboard-agent-grpc-port", p[6]))
        .arg(arg("metrics-export-port", p[7]))
        .arg(arg("runtime-env-agent-port", p[8]))
        .arg(arg("min-worker-port", workers))
        .arg(arg("max-worker-port", workers + (WORKER_PORTS - 1)))
        .arg(format!("--temp-dir={}", dir.path().display()))
        // Keeps Ray on 127.0.0.1 (see test-peers.md).
        .env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        // On a loaded machine (tests run side by side) the raylet may take longer than Ray's
        // 30 s to register; the test's own limit (`wait_ready`) still holds.
        .env("RAY_raylet_start_wait_time_s", "120");
        let child = detached(&mut cmd, &bin, log).spawn().expect("starting ray");
        let mut ray = Ray {
            child: Some(child),
            worker: None,
            _dir: dir,
            address: format!("http://127.0.0.1:{}", p[1]),
        };
        ray.wait_ready(1, Duration::from_secs(90))?;
        let w = super::peers::free_ports(6);
        let workers = free_worker_range(&[p.as_slice(), w.as_slice()].concat());
        let log = std::fs::File::create(ray._dir.path().join("worker.log")).unwrap();
        let mut cmd = Command::new(bin.join("python"));
        cmd.arg(super::peers::repo().join("tests/peers/ray_worker.py"))
            .arg(format!("127.0.0.1:{}", p[0]))
            .arg("1")
            .args(w.iter().map(u16::to_string))
            .arg(workers.to_string())
            .arg((workers + WORKER_PORTS - 1).to_string())
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("RAY_raylet_start_wait_time_s", "120");
        let worker = detached(&mut cmd, &bin, log)
            .spawn()
            .expect("starting a Ray worker node");
        ray.worker = Some(worker);
        ray.wait_ready(2, Duration::from_secs(90))?;
        Ok(ray)
    }

    /// Waits until the Jobs API answers and `nodes` nodes are alive; says why not, with the
    /// tails of the nodes' logs.
    fn wait_ready(&mut self, nodes: usize, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let client = reqwest::blocking::Client::new();
        loop {
            let alive = client
                .get(format!("{}/api/v0/nodes", self.address))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.text().ok())
                .unwrap_or_default()
                .matches("\"ALIVE\"")
                .count();
            if alive >= nodes {
                return Ok(());
            }
            let exited = [(&mut self.child, "head"), (&mut self.worker, "worker")]
                .into_iter()
                .find_map(|(child, name)| {
                    let status = child.as_mut()?.try_wait().ok().flatten()?;
                    Some(format!("the {name} node exited ({status})"))
                });
            if let Some(exited) = exited {
                return Err(format!(
                    "{exited} before it was ready\n{}",
                    self.log_tails()
                ));
            }
            if start.elapsed() >= limit {
                return Err(format!(
                    "{alive} of {nodes} nodes alive after {limit:?}\n{}",
                    self.log_tails()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the head's and the worker's output.
    fn log_tails(&self) -> String {
        ["ray.log", "worker.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self._dir.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("{name}:\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Ray {
    fn drop(&mut self) {
        // The worker node first: its raylet would otherwise look for the head a while.
        for child in [self.worker.take(), self.child.take()]
            .into_iter()
            .flatten()
        {
            stop_group(child);
        }
    }
}

/// A Ray process: Ray's installation first on its `PATH` (jobs' entrypoints run with it), in
/// a process group of its own, its output to `log`.
fn detached<'c>(
    cmd: &'c mut Command,
    bin: &std::path::Path,
    log: std::fs::File,
) -> &'c mut Command {
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .process_group(0)
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log)
}

/// SIGTERM to a process group (`ray start --block` and the worker stop their processes on
/// it), SIGKILL to whatever is left after 15 s.
fn stop_group(mut child: Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}
