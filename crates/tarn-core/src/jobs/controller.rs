//! The scheduler loop and the local backend. Each pass reads the active jobs from the store
//! (the truth, also after a restart), rebuilds which nodes they hold, asks `sched::decide`
//! what to do, and does it: nodes added and removed, jobs moved Queued → Preparing
//! (compare-and-set, so nothing starts twice) and handed to a `tarn runner` process.
//!
//! Runners are started in their own process group with a cleared environment and a job-scoped
//! token, so they outlive a crash of the server and carry none of its secrets. A runner this
//! process started is waited on; one from before a restart is looked for in `/proc`. A job
//! whose runner is gone without reporting an end is marked Failed with the reason.

use super::sched::{self, Action, Node, NodeState, Pool, PoolSpec, Waiting};
use super::{JobStatus, LOG_TAIL_BYTES, stamp, status_of};
use crate::authz::JobScope;
use crate::error::{Error, Result};
use crate::{Tarn, now_ms};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tarn_store::JobRow;

/// How often the scheduler runs when nothing wakes it (idle scale-down, orphan checks).
const TICK: Duration = Duration::from_millis(1000);

/// Environment variables a runner inherits from the server; everything else is dropped.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "TARN_UV",
    "UV_CACHE_DIR",
    "UV_INDEX_URL",
    "PIP_INDEX_URL",
    "SSL_CERT_FILE",
];

/// The pools' nodes, as the autoscaler keeps them (rebuilt from the store after a restart).
#[derive(Default)]
pub(crate) struct Pools {
    pools: BTreeMap<String, Pool>,
    next: BTreeMap<String, u64>,
}

/// A node as `compute list-nodes` shows it.
pub struct NodeView {
    pub name: String,
    /// `idle` or `busy`.
    pub state: &'static str,
    pub job: Option<String>,
    /// When an idle node became idle (ms since the epoch).
    pub idle_since: Option<i64>,
}

/// A pool's key: `serverless` and `local` are shared by the machine; clusters are per workspace.
pub(crate) fn pool_key(workspace_id: &str, compute: &str) -> String {
    match compute {
        "serverless" | "local" => compute.to_string(),
        name => format!("{workspace_id}/{name}"),
    }
}

/// The job ids (`--job-id <id>`) of the runners alive on this machine, from one pass over
/// `/proc`; `None` when that cannot be read (then no job is failed on a guess).
fn live_runners() -> Option<HashSet<String>> {
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut found = HashSet::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.iter().any(|a| *a == b"runner") {
            continue;
        }
        for w in args.windows(2) {
            if w[0] == b"--job-id" {
                found.insert(String::from_utf8_lossy(w[1]).into_owned());
            }
        }
    }
    Some(found)
}

fn job_id(row: &JobRow) -> String {
    format!("{}/{}", row.workspace_id, row.name)
}

fn tail(text: &str, bytes: usize) -> String {
    if text.len() <= bytes {
        return text.to_string();
    }
    let mut start = text.len() - bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

impl Tarn {
    /// Starts the scheduler (and autoscaler) as a background task.
    pub fn start_scheduler(self: &Arc<Tarn>) -> tokio::task::JoinHandle<()> {
        let tarn = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("scheduler");
            let _enter = span.enter();
            loop {
                if let Err(e) = tarn.schedule_once().await {
                    tracing::warn!("scheduler pass failed: {e}");
                }
                tokio::select! {
                    _ = tarn.jobs.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
            }
        })
    }

    pub(crate) fn nodes_of(&self, key: &str) -> Vec<NodeView> {
        let pools = self.jobs.pools.lock().expect("pools lock");
        pools
            .pools
            .get(key)
            .map(|p| {
                p.nodes
                    .iter()
                    .map(|n| match &n.state {
                        NodeState::Idle { since } => NodeView {
                            name: n.id.clone(),
                            state: "idle",
                            job: None,
                            idle_since: Some(*since),
                        },
                        NodeState::Busy { job } => NodeView {
                            name: n.id.clone(),
                            state: "busy",
                            job: Some(job.1.clone()),
                            idle_since: None,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One scheduling pass.
    async fn schedule_once(self: &Arc<Self>) -> Result<()> {
        let now = now_ms();
        let statuses: Vec<&str> = std::iter::once(JobStatus::Queued)
            .chain(JobStatus::ON_NODES)
            .map(JobStatus::as_str)
            .collect();
        let active = self.store.jobs_in_status(&statuses).await?;
        let mut specs: BTreeMap<String, PoolSpec> = BTreeMap::new();
        let mut waiting = vec![];
        let mut rows: HashMap<(String, String), JobRow> = HashMap::new();
        // Per pool: (node, job holding it).
        let mut held: HashMap<String, Vec<(String, sched::JobId)>> = HashMap::new();
        let mut workspaces = HashMap::new();
        // Sweeps hold no nodes: they are advanced after the pass (their trials are jobs).
        let (active, sweeps): (Vec<JobRow>, Vec<JobRow>) =
            active.into_iter().partition(|r| r.job_type == "command");
        for row in active {
            let key = pool_key(&row.workspace_id, &row.compute);
            let status = status_of(&row);
            if !specs.contains_key(&key) {
                if !workspaces.contains_key(&row.workspace) {
                    let ws = self.store.get_workspace(&row.workspace).await?;
                    workspaces.insert(row.workspace.clone(), ws);
                }
                let Some(Some(ws)) = workspaces.get(&row.workspace) else {
                    continue;
                };
                match self.placement(ws, Some(&row.compute)).await {
                    Ok(p) => {
                        specs.insert(
                            key.clone(),
                            PoolSpec {
                                min_nodes: p.min_nodes,
                                max_nodes: p.max_nodes,
                                idle_ms: p.idle_ms,
                            },
                        );
                    }
                    Err(e) if status == JobStatus::Queued => {
                        self.fail_job(&row, &format!("cannot be scheduled: {e}"))
                            .await?;
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            let id = (row.workspace_id.clone(), row.name.clone());
            if status == JobStatus::Queued {
                let nodes = row.state["plan"]["instance_count"]
                    .as_u64()
                    .unwrap_or(1)
                    .max(1) as u32;
                waiting.push(Waiting {
                    id: id.clone(),
                    pool: key.clone(),
                    priority: row.priority,
                    seq: row.seq,
                    nodes,
                });
            } else {
                for node in row.state["nodes"].as_array().into_iter().flatten() {
                    if let Some(node) = node.as_str() {
                        held.entry(key.clone())
                            .or_default()
                            .push((node.to_string(), id.clone()));
                    }
                }
            }
            rows.insert(id, row);
        }

        let starts = {
            let mut guard = self.jobs.pools.lock().expect("pools lock");
            let state = &mut *guard;
            // Pools with nothing active keep their last spec (for scale-down and min nodes).
            for (key, spec) in &specs {
                let pool = state.pools.entry(key.clone()).or_insert_with(|| Pool {
                    spec: spec.clone(),
                    nodes: vec![],
                });
                pool.spec = spec.clone();
            }
            for (key, pool) in state.pools.iter_mut() {
                let holders = held.remove(key).unwrap_or_default();
                for node in pool.nodes.iter_mut() {
                    let holder = holders.iter().find(|(n, _)| *n == node.id);
                    node.state = match (holder, &node.state) {
                        (Some((_, job)), _) => NodeState::Busy { job: job.clone() },
                        (None, NodeState::Busy { .. }) => NodeState::Idle { since: now },
                        (None, idle) => idle.clone(),
                    };
                }
                for (node, job) in holders {
                    if !pool.nodes.iter().any(|n| n.id == node) {
                        // A node held by a job from before a restart.
                        pool.nodes.push(Node {
                            id: node,
                            state: NodeState::Busy { job },
                        });
                    }
                }
                let next = state.next.entry(key.clone()).or_insert(0);
                for node in &pool.nodes {
                    if let Some(i) = node
                        .id
                        .rsplit("-node-")
                        .next()
                        .and_then(|i| i.parse::<u64>().ok())
                    {
                        *next = (*next).max(i + 1);
                    }
                }
            }
            let actions = sched::decide(&state.pools, &state.next, &waiting, now);
            let mut starts = vec![];
            for action in actions {
                match action {
                    Action::AddNodes { pool, count } => {
                        let next = state.next.entry(pool.clone()).or_insert(0);
                        if let Some(p) = state.pools.get_mut(&pool) {
                            for _ in 0..count {
                                p.nodes.push(Node {
                                    id: sched::node_name(&pool, *next),
                                    state: NodeState::Idle { since: now },
                                });
                                *next += 1;
                            }
                        }
                    }
                    Action::RemoveNode { pool, node } => {
                        if let Some(p) = state.pools.get_mut(&pool) {
                            p.nodes.retain(|n| n.id != node);
                        }
                    }
                    Action::Start { job, pool, nodes } => {
                        if let Some(p) = state.pools.get_mut(&pool) {
                            for n in p.nodes.iter_mut().filter(|n| nodes.contains(&n.id)) {
                                n.state = NodeState::Busy { job: job.clone() };
                            }
                        }
                        starts.push((job, nodes));
                    }
                }
            }
            state
                .pools
                .retain(|key, p| !p.nodes.is_empty() || specs.contains_key(key));
            starts
        };

        for (id, nodes) in starts {
            if let Some(row) = rows.remove(&id)
                && let Err(e) = self.start_job(&row, nodes).await
            {
                tracing::warn!(job = %row.name, "could not start: {e}");
                self.fail_job(&row, &format!("could not start: {e}"))
                    .await?;
            }
        }

        // Runners that died while nobody was waiting on them (before a restart).
        let children = self.jobs.children.lock().expect("children lock").clone();
        let orphans: Vec<&JobRow> = rows
            .values()
            .filter(|row| {
                status_of(row) != JobStatus::Queued
                    && !children.contains(&(row.workspace_id.clone(), row.name.clone()))
            })
            .collect();
        if !orphans.is_empty()
            && let Some(alive) = live_runners()
        {
            for row in orphans {
                if !alive.contains(&job_id(row)) {
                    self.fail_job(row, "the job's runner stopped while the server was down")
                        .await?;
                }
            }
        }
        let (pipelines, sweeps): (Vec<JobRow>, Vec<JobRow>) =
            sweeps.into_iter().partition(|r| r.job_type == "pipeline");
        self.advance_sweeps(sweeps).await;
        self.advance_pipelines(pipelines).await;
        Ok(())
    }

    /// Queued → Preparing on `nodes`, then a runner for it.
    async fn start_job(self: &Arc<Self>, row: &JobRow, nodes: Vec<String>) -> Result<()> {
        let mut state = row.state.clone();
        state["nodes"] = json!(nodes);
        stamp(&mut state, JobStatus::Preparing, now_ms());
        if !self.transition(row, JobStatus::Preparing, state).await? {
            return Ok(()); // canceled meanwhile; its nodes free up on the next pass
        }
        let scope = JobScope {
            workspace_id: row.workspace_id.clone(),
            job: row.name.clone(),
        };
        let token = self.create_job_token(&row.created_by, &scope).await?;
        let run_dir = self.runs_dir().join(&row.workspace_id).join(&row.name);
        tokio::fs::create_dir_all(&run_dir)
            .await
            .map_err(Error::Io)?;
        let log = std::fs::File::create(run_dir.join("runner.log")).map_err(Error::Io)?;
        let mut cmd = self.tarn_process("runner", &token, log)?;
        cmd.arg("--server")
            .arg(&self.config.public_url)
            .arg("--workspace")
            .arg(&row.workspace)
            .arg("--job")
            .arg(&row.name)
            .arg("--job-id")
            .arg(job_id(row))
            .arg("--dir")
            .arg(&run_dir)
            .arg("--envs")
            .arg(self.envs_dir());
        let mut child = cmd.spawn().map_err(Error::Io)?;
        let key = (row.workspace_id.clone(), row.name.clone());
        self.jobs
            .children
            .lock()
            .expect("children lock")
            .insert(key.clone());
        let tarn = self.clone();
        let row = row.clone();
        tokio::spawn(async move {
            let exit = child.wait().await;
            tarn.jobs
                .children
                .lock()
                .expect("children lock")
                .remove(&key);
            let how = match exit {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            if let Err(e) = tarn.runner_exited(&row, &how).await {
                tracing::warn!(job = %row.name, "after its runner exited: {e}");
            }
        });
        Ok(())
    }

    /// `tarn <subcommand>` as the server starts it (a runner, a replica): its own process
    /// group, a cleared environment but for `INHERITED_ENV`, a scoped token, output to `log`.
    pub(crate) fn tarn_process(
        &self,
        subcommand: &str,
        token: &str,
        log: std::fs::File,
    ) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(&self.config.runner_program);
        cmd.arg(subcommand)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
            )
            .env("TARN_RUNNER_TOKEN", token)
            .env("TARN_HOME", &self.config.home)
            .env(crate::isolation::ENV, self.config.isolation.to_env())
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(Error::Io)?)
            .stderr(log);
        Ok(cmd)
    }

    pub(crate) fn runs_dir(&self) -> std::path::PathBuf {
        self.config.home.join("runs")
    }

    pub(crate) fn envs_dir(&self) -> std::path::PathBuf {
        self.config.home.join("envs")
    }

    /// A runner ended; if the job is not finished, the runner failed it by dying.
    async fn runner_exited(&self, row: &JobRow, how: &str) -> Result<()> {
        let Some(current) = self.store.get_job(&row.workspace_id, &row.name).await? else {
            return Ok(());
        };
        if status_of(&current).is_terminal() {
            self.jobs.wake.notify_one();
            return Ok(());
        }
        let log = tokio::fs::read_to_string(
            self.runs_dir()
                .join(&row.workspace_id)
                .join(&row.name)
                .join("runner.log"),
        )
        .await
        .unwrap_or_default();
        self.fail_job(
            &current,
            &format!(
                "the runner exited ({how}) before the job finished: {}",
                tail(&log, 1000).trim()
            ),
        )
        .await
    }

    /// Marks a job Failed with `reason`, whatever non-terminal state it is in.
    pub(crate) async fn fail_job(&self, row: &JobRow, reason: &str) -> Result<()> {
        let mut row = row.clone();
        for _ in 0..10 {
            if status_of(&row).is_terminal() {
                return Ok(());
            }
            let mut state = row.state.clone();
            stamp(&mut state, JobStatus::Failed, now_ms());
            state["error"] = Json::String(reason.to_string());
            if state.get("log_tail").is_none() {
                let log = tokio::fs::read(self.log_path(&row.workspace_id, &row.name))
                    .await
                    .unwrap_or_default();
                state["log_tail"] = json!(tail(&String::from_utf8_lossy(&log), LOG_TAIL_BYTES));
            }
            if self.transition(&row, JobStatus::Failed, state).await? {
                tracing::info!(job = %row.name, "failed: {reason}");
                return Ok(());
            }
            match self.store.get_job(&row.workspace_id, &row.name).await? {
                Some(fresh) => row = fresh,
                None => return Ok(()),
            }
        }
        Ok(())
    }
}
