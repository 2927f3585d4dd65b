//! The local backend: runners are processes on this machine, placed on node slots by Tarn's
//! own scheduler (`jobs/sched.rs`).
//!
//! Runners are started in their own process group with a cleared environment and a job-scoped
//! token, so they outlive a crash of the server and carry none of its secrets. A runner this
//! process started is waited on; one from before a restart is found in `/proc` by its
//! `--job-id`.

use super::{ComputeBackend, EngineNode, INHERITED_ENV, Launch, Observed, Phase};
use crate::Config;
use crate::error::{Error, Result};
use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Bytes of the runner's own log quoted when it dies.
const ENGINE_LOG_BYTES: usize = 1000;

pub(crate) struct LocalBackend {
    config: Config,
    /// Woken when a runner exits, so the scheduler sees it at once.
    wake: Arc<Notify>,
    /// Runners this process started: job id → pid while it runs, then how it exited until
    /// the scheduler has seen that.
    children: Arc<Mutex<HashMap<String, Child>>>,
}

#[derive(Clone, Debug)]
enum Child {
    Running(u32),
    Exited(String),
}

impl LocalBackend {
    pub(crate) fn new(config: Config, wake: Arc<Notify>) -> LocalBackend {
        LocalBackend {
            config,
            wake,
            children: Default::default(),
        }
    }

    fn run_dir(&self, job_id: &str) -> PathBuf {
        self.config.home.join("runs").join(job_id)
    }

    /// Stops what the runner of job `job` left running, once the runner is gone.
    pub(crate) async fn stop_leftovers(&self, job: &str) {
        stop_job_processes(job).await;
    }
}

impl LocalBackend {
    /// How the runners of `jobs` (the active jobs on node slots) are doing, for the scheduler's
    /// pass: `/proc` is read only when one of them is not a runner this process started (one
    /// from before a restart), not on every pass.
    pub(crate) async fn observe_jobs(&self, jobs: &[String]) -> Result<HashMap<String, Observed>> {
        let mut seen = self.children_seen();
        if jobs.iter().any(|j| !seen.contains_key(j)) {
            self.add_live(&mut seen).await?;
        }
        Ok(seen)
    }

    /// The runners this process started: running ones, and ended ones, each reported once and
    /// then forgotten.
    fn children_seen(&self) -> HashMap<String, Observed> {
        let mut seen = HashMap::new();
        self.children
            .lock()
            .expect("children lock")
            .retain(|id, child| match child {
                Child::Running(pid) => {
                    seen.insert(id.clone(), running(*pid));
                    true
                }
                Child::Exited(how) => {
                    seen.insert(
                        id.clone(),
                        Observed {
                            engine_id: "local".into(),
                            phase: Phase::Ended,
                            state: "exited".into(),
                            reason: Some(how.clone()),
                            nodes: vec![],
                        },
                    );
                    false
                }
            });
        seen
    }

    /// Adds the runners alive on this machine by one pass over `/proc` (those from before a
    /// restart too); a live runner counts over an ended one of the same job.
    async fn add_live(&self, seen: &mut HashMap<String, Observed>) -> Result<()> {
        let live = tokio::task::spawn_blocking(live_runners)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| Error::Io(std::io::Error::other("/proc cannot be read")))?;
        for (id, pid) in live {
            seen.entry(id)
                .and_modify(|o| {
                    if o.phase == Phase::Ended {
                        *o = running(pid);
                    }
                })
                .or_insert_with(|| running(pid));
        }
        Ok(())
    }
}

/// `tarn <subcommand>` as the server starts it (a runner, a replica, an instance): its own
/// process group, a cleared environment but for [`INHERITED_ENV`], a scoped token, output to
/// `log`.
pub(crate) fn tarn_command(
    config: &Config,
    subcommand: &str,
    token: &str,
    log: std::fs::File,
) -> Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(&config.runner_program);
    cmd.arg(subcommand)
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .env("TARN_RUNNER_TOKEN", token)
        .env("TARN_HOME", &config.home)
        .envs(config.isolation.env())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(Error::Io)?)
        .stderr(log);
    Ok(cmd)
}

/// The job ids (`--job-id <id>`) of the runners alive on this machine, with their pids, from
/// one pass over `/proc`; `None` when that cannot be read.
fn live_runners() -> Option<HashMap<String, u32>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut found = HashMap::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.iter().any(|a| *a == b"runner") {
            continue;
        }
        for w in args.windows(2) {
            if w[0] == b"--job-id" {
                found.insert(String::from_utf8_lossy(w[1]).into_owned(), pid);
            }
        }
    }
    Some(found)
}

/// Kills what a job's runner started (it gives every command `MLFLOW_RUN_ID=<job>`), for a
/// runner that was killed before it could: from a blocking thread, as it reads `/proc`. A
/// command the runner was starting as it died (forked, not yet running as the job) can only
/// be seen a moment later, so the sweep is made again, after 1 s and 3 s, in the background.
async fn stop_job_processes(job: &str) {
    let marker = format!("MLFLOW_RUN_ID={job}");
    let sweep = |marker: String| {
        tokio::task::spawn_blocking(move || {
            crate::isolation::leftovers::kill_by_environment(&marker)
        })
    };
    let _ = sweep(marker.clone()).await;
    tokio::spawn(async move {
        for wait in [1, 2] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            let _ = sweep(marker.clone()).await;
        }
    });
}

fn running(pid: u32) -> Observed {
    Observed {
        engine_id: format!("local:{pid}"),
        phase: Phase::Running,
        state: "running".into(),
        reason: None,
        nodes: vec![],
    }
}

#[async_trait]
impl ComputeBackend for LocalBackend {
    fn engine(&self) -> &'static str {
        "local"
    }

    async fn check(&self) -> Result<String> {
        Ok(format!(
            "this machine ({} CPUs)",
            crate::process::machine_cpus()
        ))
    }

    async fn launch(&self, job: &Launch) -> Result<String> {
        let run_dir = self.run_dir(&job.job_id);
        tokio::fs::create_dir_all(&run_dir)
            .await
            .map_err(Error::Io)?;
        let log = std::fs::File::create(run_dir.join("runner.log")).map_err(Error::Io)?;
        let mut cmd = tarn_command(&self.config, "runner", &job.token, log)?;
        cmd.arg("--server")
            .arg(&self.config.public_url)
            .arg("--workspace")
            .arg(&job.workspace)
            .arg("--job")
            .arg(&job.job)
            .arg("--job-id")
            .arg(&job.job_id)
            .arg("--dir")
            .arg(&run_dir)
            .arg("--envs")
            .arg(self.config.home.join("envs"));
        let mut child = cmd.spawn().map_err(Error::Io)?;
        let pid = child.id().unwrap_or(0);
        self.children
            .lock()
            .expect("children lock")
            .insert(job.job_id.clone(), Child::Running(pid));
        let (children, wake, id) = (self.children.clone(), self.wake.clone(), job.job_id.clone());
        let job_name = job.job.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            // A runner that ends normally has stopped its job's processes; one that was killed
            // has not: stop them.
            stop_job_processes(&job_name).await;
            children
                .lock()
                .expect("children lock")
                .insert(id, Child::Exited(how));
            wake.notify_one();
        });
        Ok(format!("local:{pid}"))
    }

    async fn observe(&self) -> Result<HashMap<String, Observed>> {
        let mut seen = self.children_seen();
        self.add_live(&mut seen).await?;
        Ok(seen)
    }

    async fn stop(&self, job_id: &str) -> Result<()> {
        let pid = match self.children.lock().expect("children lock").get(job_id) {
            Some(Child::Running(pid)) => Some(*pid),
            _ => None,
        };
        let pid = match pid {
            Some(pid) => Some(pid),
            None => tokio::task::spawn_blocking(live_runners)
                .await
                .ok()
                .flatten()
                .and_then(|live| live.get(job_id).copied()),
        };
        if let Some(pid) = pid {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        Ok(())
    }

    async fn engine_log(&self, job_id: &str) -> Result<String> {
        let path = self.run_dir(job_id).join("runner.log");
        Ok(
            tokio::task::spawn_blocking(move || crate::process::tail(&path, ENGINE_LOG_BYTES))
                .await
                .unwrap_or_default(),
        )
    }

    async fn nodes(&self) -> Result<Vec<EngineNode>> {
        Ok(vec![EngineNode {
            name: "localhost".into(),
            state: "idle".into(),
            cpus: crate::process::machine_cpus(),
            gpus: 0,
            memory_mb: 0,
        }])
    }
}
