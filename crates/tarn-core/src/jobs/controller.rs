//! The scheduler loop. Each pass reads the active jobs from the store (the truth, also after a
//! restart) and places them through their compute's backend (`crate::backends`):
//!
//! - jobs on node slots of this machine (clusters, instances, serverless, `local`): rebuild
//!   which nodes they hold, ask `sched::decide` what to do, and do it — nodes added and
//!   removed, jobs moved Queued → Preparing (compare-and-set, so nothing starts twice) and
//!   handed to the local backend;
//! - jobs on an engine (Slurm): handed to the engine once (marked in the job's state before the
//!   engine is asked, and found again by name after a restart); while the engine holds them
//!   pending, its reason is shown with the job.
//!
//! Then every backend is asked what it sees: a job whose runner is gone (or that its engine
//! ended) without reporting an end is marked Failed with the engine's reason, and engine jobs
//! whose Tarn job is over are stopped.

use super::Jobs;
use super::plan::RunsOn;
use super::sched::{self, Action, Node, NodeState, Pool, PoolSpec, Waiting};
use super::{EngineState, JobState, JobStatus, LOG_TAIL_BYTES, status_of};
use crate::authz::JobScope;
use crate::backends::{self, ComputeBackend, Launch, LocalBackend, Observed, Phase};
use crate::error::Result;
use crate::now_ms;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tarn_spec::compute::ComputeSpec;
use tarn_store::JobRow;

/// How often the scheduler runs when nothing wakes it (idle scale-down, orphan checks).
const TICK: Duration = Duration::from_millis(1000);
/// How long an engine may not list a job it was handed before the job is failed.
const ENGINE_GRACE_MS: i64 = 30_000;

/// The pools' nodes, as the autoscaler keeps them (rebuilt from the store after a restart).
#[derive(Default)]
pub(crate) struct Pools {
    pools: BTreeMap<String, Pool>,
    next: BTreeMap<String, u64>,
}

/// A node as `compute list-nodes` shows it.
pub struct NodeView {
    pub name: String,
    /// `idle` or `busy` for node slots; the engine's word (`idle`, `allocated`, `down`) for
    /// an engine's nodes.
    pub state: String,
    pub job: Option<String>,
    /// When an idle node became idle (ms since the epoch).
    pub idle_since: Option<i64>,
    /// What an engine's node has to give (allocatable), where the engine says.
    pub capacity: Option<NodeCapacity>,
}

/// CPUs, memory and GPUs of an engine's node.
#[derive(Clone, Debug)]
pub struct NodeCapacity {
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
}

/// A pool's key: `serverless` and `local` are shared by the machine; clusters are per workspace.
/// An engine's node as `compute list-nodes` shows it, with the Tarn job running there.
pub(crate) fn node_view(n: crate::backends::EngineNode, job: Option<String>) -> NodeView {
    NodeView {
        name: n.name,
        state: n.state,
        job,
        idle_since: None,
        capacity: Some(NodeCapacity {
            cpus: n.cpus,
            memory_mb: n.memory_mb,
            gpus: n.gpus,
        }),
    }
}

/// Jobs whose runner runs a command (a Spark job's is `spark-submit`); the others (sweeps,
/// pipelines) are driven by the scheduler through their children.
fn runs_a_runner(job_type: &str) -> bool {
    matches!(job_type, "command" | "spark")
}

pub(crate) fn pool_key(workspace_id: &str, compute: &str) -> String {
    match compute {
        "serverless" | "local" => compute.to_string(),
        name => format!("{workspace_id}/{name}"),
    }
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

/// The engines of engine-placed computes, by pool key, made again when a compute's spec
/// changes.
#[derive(Default)]
pub(crate) struct Engines {
    by_pool: HashMap<String, (ComputeSpec, Arc<dyn ComputeBackend>)>,
}

/// The active jobs of one engine-placed compute.
struct EnginePool {
    backend: Arc<dyn ComputeBackend>,
    max_nodes: Option<u32>,
    rows: Vec<JobRow>,
}

impl Jobs {
    /// Starts the scheduler (and autoscaler) as a background task.
    pub fn start_scheduler(self: &Arc<Jobs>) -> tokio::task::JoinHandle<()> {
        let wake = self.runtime.wake.clone();
        self.spawn_task("scheduler", TICK, wake, self, |jobs| async move {
            jobs.schedule_once().await
        })
    }

    /// The backend that runs jobs on this machine's node slots.
    pub(crate) fn local_backend(&self) -> &LocalBackend {
        self.runtime
            .local
            .get_or_init(|| LocalBackend::new(self.config.clone(), self.runtime.wake.clone()))
    }

    /// The backend of an engine-placed compute (one per compute, kept while its spec holds).
    pub(crate) fn engine_backend(
        &self,
        key: &str,
        spec: &ComputeSpec,
    ) -> Option<Arc<dyn ComputeBackend>> {
        let mut engines = self.runtime.engines.lock().expect("engines lock");
        if let Some((known, backend)) = engines.by_pool.get(key)
            && known == spec
        {
            return Some(backend.clone());
        }
        let backend = backends::for_spec(spec, &self.config)?;
        engines
            .by_pool
            .insert(key.to_string(), (spec.clone(), backend.clone()));
        Some(backend)
    }

    pub(crate) fn nodes_of(&self, key: &str) -> Vec<NodeView> {
        let pools = self.runtime.pools.lock().expect("pools lock");
        pools
            .pools
            .get(key)
            .map(|p| {
                p.nodes
                    .iter()
                    .map(|n| match &n.state {
                        NodeState::Idle { since } => NodeView {
                            name: n.id.clone(),
                            state: "idle".into(),
                            job: None,
                            idle_since: Some(*since),
                            capacity: None,
                        },
                        NodeState::Busy { job } => NodeView {
                            name: n.id.clone(),
                            state: "busy".into(),
                            job: Some(job.1.clone()),
                            idle_since: None,
                            capacity: None,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An engine's nodes, each with the Tarn job running there (if any).
    pub(crate) async fn engine_nodes(&self, backend: &dyn ComputeBackend) -> Result<Vec<NodeView>> {
        let nodes = backend.nodes().await?;
        let jobs = backend.observe().await.unwrap_or_default();
        Ok(nodes
            .into_iter()
            .map(|n| {
                let job = jobs
                    .iter()
                    .find(|(_, o)| o.phase == Phase::Running && o.nodes.contains(&n.name))
                    .map(|(id, _)| id.rsplit('/').next().unwrap_or(id).to_string());
                node_view(n, job)
            })
            .collect())
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
        let mut engine_pools: BTreeMap<String, EnginePool> = BTreeMap::new();
        let mut unplaceable: Vec<String> = vec![];
        let mut waiting = vec![];
        let mut rows: HashMap<(String, String), JobRow> = HashMap::new();
        // Per pool: (node, job holding it).
        let mut held: HashMap<String, Vec<(String, sched::JobId)>> = HashMap::new();
        let mut workspaces = HashMap::new();
        // Sweeps hold no nodes: they are advanced after the pass (their trials are jobs).
        let (active, sweeps): (Vec<JobRow>, Vec<JobRow>) =
            active.into_iter().partition(|r| runs_a_runner(&r.job_type));
        for row in active {
            let key = pool_key(&row.workspace_id, &row.compute);
            let status = status_of(&row);
            if !specs.contains_key(&key)
                && !engine_pools.contains_key(&key)
                && !unplaceable.contains(&key)
            {
                if !workspaces.contains_key(&row.workspace) {
                    let ws = self.store.get_workspace(&row.workspace).await?;
                    workspaces.insert(row.workspace.clone(), ws);
                }
                let Some(Some(ws)) = workspaces.get(&row.workspace) else {
                    continue;
                };
                match self.placement(ws, Some(&row.compute)).await {
                    Ok(p) => match p.runs_on {
                        RunsOn::Slots(pool) => {
                            specs.insert(key.clone(), pool);
                        }
                        RunsOn::Engine(spec) => {
                            if let Some(backend) = self.engine_backend(&key, &spec) {
                                engine_pools.insert(
                                    key.clone(),
                                    EnginePool {
                                        backend,
                                        max_nodes: spec.engine_max_instances(),
                                        rows: vec![],
                                    },
                                );
                            }
                        }
                    },
                    Err(e) if status == JobStatus::Queued => {
                        self.fail_job(&row, &format!("cannot be scheduled: {e}"))
                            .await?;
                        continue;
                    }
                    Err(_) => {
                        // The compute is gone; its running jobs are still watched.
                        unplaceable.push(key.clone());
                    }
                }
            }
            if let Some(pool) = engine_pools.get_mut(&key) {
                pool.rows.push(row);
                continue;
            }
            let id = (row.workspace_id.clone(), row.name.clone());
            if status == JobStatus::Queued {
                if !specs.contains_key(&key) {
                    continue;
                }
                let nodes = nodes_of_job(&row);
                waiting.push(Waiting {
                    id: id.clone(),
                    pool: key.clone(),
                    priority: row.priority,
                    seq: row.seq,
                    nodes,
                });
            } else {
                for node in JobState::of(&row).nodes {
                    held.entry(key.clone())
                        .or_default()
                        .push((node, id.clone()));
                }
            }
            rows.insert(id, row);
        }

        // What the local backend sees, before anything new starts.
        let on_nodes: Vec<String> = rows
            .values()
            .filter(|r| status_of(r) != JobStatus::Queued)
            .map(job_id)
            .collect();
        let local_seen = self.local_backend().observe_jobs(&on_nodes).await;

        let starts = {
            let mut guard = self.runtime.pools.lock().expect("pools lock");
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

        // Runners that ended (or vanished, e.g. while the server was down) without reporting.
        match local_seen {
            Ok(seen) => {
                for row in rows.values() {
                    if status_of(row) == JobStatus::Queued {
                        continue;
                    }
                    match seen.get(&job_id(row)) {
                        Some(o) if o.phase != Phase::Ended => {}
                        Some(o) => {
                            let log = self.local_backend().engine_log(&job_id(row)).await?;
                            let how = o.reason.as_deref().unwrap_or("unknown status");
                            self.fail_job(
                                row,
                                &format!(
                                    "the runner exited ({how}) before the job finished: {}",
                                    log.trim()
                                ),
                            )
                            .await?;
                        }
                        // The server stopped between marking the job Preparing and starting
                        // its runner (which had not reported yet): queued again, once.
                        None if status_of(row) == JobStatus::Preparing
                            && JobState::of(row).runner_pid.is_none()
                            && !JobState::of(row).requeued =>
                        {
                            let mut state = JobState::of(row);
                            state.requeued = true;
                            state.nodes.clear();
                            tracing::info!(job = %row.name, "its runner never started: queued again");
                            self.transition(row, JobStatus::Queued, state).await?;
                        }
                        None => {
                            // What the runner had started for the job goes too.
                            self.local_backend().stop_leftovers(&row.name).await;
                            self.fail_job(
                                row,
                                "the job's runner stopped without reporting how the job ended (killed, or its machine restarted)",
                            )
                            .await?;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot see this machine's runners: {e}"),
        }

        for (id, nodes) in starts {
            if let Some(row) = rows.remove(&id)
                && let Err(e) = self.start_job(&row, nodes).await
            {
                tracing::warn!(job = %row.name, "could not start: {e}");
                self.fail_job(&row, &format!("could not start: {e}"))
                    .await?;
            }
        }

        // An engine that does not answer holds up only its own compute's jobs; the pass
        // reports it (in `tarn server status`) once everything else is done.
        let mut engine_error = None;
        for pool in engine_pools.into_values() {
            if let Err(e) = self.drive_engine(pool, now).await {
                engine_error.get_or_insert(e);
            }
        }

        let (pipelines, sweeps): (Vec<JobRow>, Vec<JobRow>) =
            sweeps.into_iter().partition(|r| r.job_type == "pipeline");
        self.advance_sweeps(sweeps).await;
        self.advance_pipelines(pipelines).await;
        engine_error.map_or(Ok(()), Err)
    }

    /// One pass over an engine-placed compute: what the engine sees is reconciled with the
    /// jobs' states, and queued jobs are handed to it, oldest and most urgent first, within
    /// the compute's `max_instances`.
    async fn drive_engine(self: &Arc<Self>, pool: EnginePool, now: i64) -> Result<()> {
        let engine = pool.backend.engine();
        pool.backend.watch(self.runtime.wake.clone()).await;
        let mut seen = pool.backend.observe().await?;
        let mut in_use: u32 = 0;
        let mut queued = vec![];
        for row in &pool.rows {
            let id = job_id(row);
            let observed = seen.remove(&id);
            let handed = JobState::of(row).engine.and_then(|e| e.handed_at);
            let status = status_of(row);
            if observed.as_ref().is_some_and(|o| o.phase != Phase::Ended)
                || (status == JobStatus::Queued && handed.is_some())
            {
                in_use += nodes_of_job(row);
            }
            match (status, observed, handed) {
                // Not handed to the engine yet.
                (JobStatus::Queued, None, None) => queued.push(row),
                // Canceled while the engine held it: taken back.
                (JobStatus::CancelRequested, Some(o), _) if o.phase == Phase::Pending => {
                    pool.backend.stop(&id).await?;
                    self.cancel_before_start(row).await?;
                }
                (JobStatus::CancelRequested, None, Some(at)) => {
                    if now - at > ENGINE_GRACE_MS {
                        self.cancel_before_start(row).await?;
                    }
                }
                (JobStatus::Queued, None, Some(at)) if now - at > ENGINE_GRACE_MS => {
                    self.fail_job(
                        row,
                        &format!("{engine} no longer knows the job it was handed"),
                    )
                    .await?;
                }
                (JobStatus::Queued, None, Some(_)) => {}
                (_, Some(o), _) if o.phase == Phase::Ended => {
                    let log = pool.backend.engine_log(&id).await.unwrap_or_default();
                    self.fail_job(
                        row,
                        &format!(
                            "{engine} ended the job: {} {}; its runner did not report an end. {}",
                            o.engine_id,
                            o.summary(),
                            log.trim()
                        ),
                    )
                    .await?;
                }
                (JobStatus::Queued, Some(o), _) => self.show_engine_state(row, &o).await?,
                (_, Some(o), _) if o.phase == Phase::Pending => {
                    // The engine took the job back from its nodes (requeued it): the runner
                    // that ran it is gone.
                    pool.backend.stop(&id).await?;
                    self.fail_job(
                        row,
                        &format!(
                            "{engine} took the job off its nodes: {} {}",
                            o.engine_id,
                            o.summary()
                        ),
                    )
                    .await?;
                }
                (_, Some(_), _) => {}
                (_, None, _) => {
                    self.fail_job(
                        row,
                        &format!(
                            "{engine} no longer knows the job; its runner did not report an end"
                        ),
                    )
                    .await?;
                }
            }
        }
        // Engine jobs whose Tarn job is over: stopped (at once while pending; a running
        // runner gets the time to stop its processes and report first).
        for (id, o) in seen {
            if o.phase == Phase::Ended {
                continue;
            }
            let Some((ws, name)) = id.split_once('/') else {
                continue;
            };
            if let Some(row) = self.store.get_job(ws, name).await?
                && status_of(&row).is_terminal()
                && (o.phase == Phase::Pending
                    || now - row.updated_at > crate::process::KILL_GRACE.as_millis() as i64 * 6)
            {
                tracing::info!(job = %name, "stopping {} of a job that is over", o.engine_id);
                pool.backend.stop(&id).await?;
            }
        }
        queued.sort_by_key(|r| (-r.priority, r.seq));
        for row in queued {
            let nodes = nodes_of_job(row);
            if pool.max_nodes.is_some_and(|max| in_use + nodes > max) {
                continue;
            }
            in_use += nodes;
            if let Err(e) = self.hand_to_engine(&*pool.backend, row, now).await {
                tracing::warn!(job = %row.name, "could not hand to {engine}: {e}");
                self.fail_job(row, &format!("could not start: {e}")).await?;
            }
        }
        Ok(())
    }

    /// Marks a queued job as handed to its engine (so it is never handed twice), then hands it.
    async fn hand_to_engine(
        &self,
        backend: &dyn ComputeBackend,
        row: &JobRow,
        now: i64,
    ) -> Result<()> {
        let mut state = JobState::of(row);
        state.engine = Some(EngineState {
            handed_at: Some(now),
            ..Default::default()
        });
        if !self.transition(row, JobStatus::Queued, state).await? {
            return Ok(()); // canceled meanwhile
        }
        let launch = self.launch_of(row).await?;
        let engine_id = backend.launch(&launch).await?;
        tracing::info!(job = %row.name, "handed to {engine_id}");
        if let Some(fresh) = self.store.get_job(&row.workspace_id, &row.name).await?
            && status_of(&fresh) == JobStatus::Queued
        {
            let mut state = JobState::of(&fresh);
            state.engine_mut().id = Some(engine_id);
            self.transition(&fresh, JobStatus::Queued, state).await?;
        }
        Ok(())
    }

    /// Shows what the engine says of a job it holds pending (`PENDING (Resources)`).
    async fn show_engine_state(&self, row: &JobRow, o: &Observed) -> Result<()> {
        let shown = o.summary();
        let mut state = JobState::of(row);
        let engine = state.engine_mut();
        if engine.state.as_ref() == Some(&shown) && engine.id.as_ref() == Some(&o.engine_id) {
            return Ok(());
        }
        engine.id = Some(o.engine_id.clone());
        engine.state = Some(shown);
        self.transition(row, JobStatus::Queued, state).await?;
        Ok(())
    }

    /// What a backend gets to run a job, with a fresh job-scoped token.
    async fn launch_of(&self, row: &JobRow) -> Result<Launch> {
        let scope = JobScope {
            workspace_id: row.workspace_id.clone(),
            job: row.name.clone(),
        };
        let plan = JobState::of(row).plan;
        Ok(Launch {
            job_id: job_id(row),
            workspace_id: row.workspace_id.clone(),
            workspace: row.workspace.clone(),
            job: row.name.clone(),
            token: self.users.create_job_token(&row.created_by, &scope).await?,
            nodes: nodes_of_job(row),
            timeout_s: plan.as_ref().and_then(|p| p.timeout_s),
            image: plan.and_then(|p| p.environment.image),
            priority: row.priority,
            instance_type: row
                .spec
                .pointer("/resources/instance_type")
                .and_then(Json::as_str)
                .map(str::to_string),
        })
    }

    /// Queued → Preparing on `nodes`, then a runner for it.
    async fn start_job(self: &Arc<Self>, row: &JobRow, nodes: Vec<String>) -> Result<()> {
        let mut state = JobState::of(row);
        state.nodes = nodes;
        state.stamp(JobStatus::Preparing, now_ms());
        if !self.transition(row, JobStatus::Preparing, state).await? {
            return Ok(()); // canceled meanwhile; its nodes free up on the next pass
        }
        let launch = self.launch_of(row).await?;
        self.local_backend().launch(&launch).await?;
        Ok(())
    }

    /// `tarn <subcommand>` as the server starts it (a replica, an instance).
    pub(crate) fn tarn_process(
        &self,
        subcommand: &str,
        token: &str,
        log: std::fs::File,
    ) -> Result<tokio::process::Command> {
        backends::local::tarn_command(&self.config, subcommand, token, log)
    }

    pub(crate) fn envs_dir(&self) -> std::path::PathBuf {
        self.config.home.join("envs")
    }

    /// Ends a job canceled before its runner started (a canceled job an engine held).
    async fn cancel_before_start(&self, row: &JobRow) -> Result<()> {
        let mut state = JobState::of(row);
        state.stamp(JobStatus::Canceled, now_ms());
        state.error = Some(format!(
            "canceled by {} before it started",
            state.canceled_by.as_deref().unwrap_or("a user")
        ));
        self.transition(row, JobStatus::Canceled, state).await?;
        Ok(())
    }

    /// Marks a job Failed with `reason`, whatever non-terminal state it is in.
    pub(crate) async fn fail_job(&self, row: &JobRow, reason: &str) -> Result<()> {
        let mut row = row.clone();
        for _ in 0..10 {
            if status_of(&row).is_terminal() {
                return Ok(());
            }
            let mut state = JobState::of(&row);
            state.stamp(JobStatus::Failed, now_ms());
            state.error = Some(reason.to_string());
            if state.log_tail.is_none() {
                let log = self
                    .job_log_tail(&row.workspace_id, &row.name, LOG_TAIL_BYTES)
                    .await;
                state.log_tail = Some(tail(&String::from_utf8_lossy(&log), LOG_TAIL_BYTES));
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

/// Nodes a job asks for.
fn nodes_of_job(row: &JobRow) -> u32 {
    JobState::of(row).instance_count()
}
