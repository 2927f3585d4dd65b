//! Jobs: submission (validated and resolved into a run plan), queries, cancel and archive; the
//! calls a job's runner makes with its job-scoped token (plan, status reports, log appends);
//! reading the live log. The scheduler and the local backend are in `controller.rs`; the
//! decisions they apply are the pure functions in `sched.rs`.

mod controller;
pub(crate) use controller::pool_key;
mod pipeliner;
mod plan;
pub mod sched;
mod spark;
pub use spark::java_runtime;
mod state;
mod status;
pub mod sweep;
mod sweeper;

pub use crate::process::machine_cpus;
pub use controller::{NodeCapacity, NodeView};
pub use plan::scalar_text;
pub use plan::{ARTIFACT_DATASTORE, ENV_READY};
pub use state::{
    BestTrial, EngineState, JobState, NodeReport, PipelineState, StepState, SweepState,
};
pub use status::JobStatus;

use crate::Core;
use crate::authz::{Action, JobScope, Principal, Target};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::resources::Resources;
use crate::resources::Scope;
use crate::tracking::Tracking;
use crate::users::Users;
use plan::RunsOn;
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::sync::Arc;
use tarn_spec::runplan::RunPlan;
use tarn_spec::{Diagnostic, Kind, Node};
use tarn_store::{JobFilter, JobRow, StoreError, WorkspaceRow};

/// The most log bytes one read returns.
const LOG_READ_MAX: usize = 1 << 20;
/// How often a follower of a live log looks for bytes appended through another server.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// The log tail kept in `job show` when a job fails.
pub const LOG_TAIL_BYTES: usize = 4096;

/// The jobs machinery's in-memory state: wake-ups and the pools' nodes.
#[derive(Default)]
pub(crate) struct Runtime {
    /// Wakes the scheduler: a job was queued, a job ended, a compute changed.
    pub(crate) wake: std::sync::Arc<tokio::sync::Notify>,
    /// Bumped whenever a job's log grows or its status changes (wakes log followers).
    pub(crate) change_tx: std::sync::OnceLock<tokio::sync::watch::Sender<u64>>,
    pub(crate) pools: std::sync::Mutex<controller::Pools>,
    /// The backend of jobs on this machine's node slots.
    pub(crate) local: std::sync::OnceLock<crate::backends::LocalBackend>,
    /// The backends of engine-placed computes.
    pub(crate) engines: std::sync::Mutex<controller::Engines>,
}

impl Runtime {
    fn sender(&self) -> &tokio::sync::watch::Sender<u64> {
        self.change_tx
            .get_or_init(|| tokio::sync::watch::channel(0).0)
    }

    pub(crate) fn notify_change(&self) {
        self.sender().send_modify(|v| *v += 1);
    }
}

pub struct JobView {
    pub row: JobRow,
    pub status: JobStatus,
    pub warnings: Vec<Diagnostic>,
    /// The job's MLflow run data (latest metrics, params, tags), in `show`.
    pub run: Option<tarn_store::RunData>,
}

/// What a runner reports.
#[derive(Clone, Debug)]
pub struct Report {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_tail: Option<String>,
    pub pid: Option<u32>,
    /// The engine's id for the job (`slurm:1234`), when an engine runs it.
    pub engine_id: Option<String>,
    /// The node the runner runs on, as the engine names it.
    pub node: Option<String>,
    /// Which node of a multi-node job reports: 0 (the lead, which reports the job's status)
    /// or another, whose report only records how its node is doing.
    pub node_rank: Option<u32>,
    /// The lead's `host:port` where rank 0 listens (`MASTER_ADDR`/`MASTER_PORT`).
    pub master: Option<String>,
    /// A Spark job's application, once the runner found it.
    pub spark: Option<tarn_spec::runplan::SparkApp>,
}

/// What the server answers a runner: the job's status now, and whether to stop.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: JobStatus,
    pub cancel_requested: bool,
    /// For the lead of a multi-node job: the exit codes the other nodes have reported.
    pub node_exits: std::collections::BTreeMap<u32, i32>,
}

impl Reply {
    fn of(row: &JobRow, status: JobStatus) -> Reply {
        let node_exits = JobState::of(row)
            .node_reports
            .iter()
            .filter_map(|(k, r)| Some((k.parse().ok()?, r.exit_code? as i32)))
            .collect();
        Reply {
            status,
            cancel_requested: status == JobStatus::CancelRequested,
            node_exits,
        }
    }
}

pub struct LogChunk {
    pub data: Vec<u8>,
    /// The log's size on the server (the offset to read from next).
    pub size: u64,
    pub status: JobStatus,
}

/// Which jobs to list.
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    pub parent: Option<String>,
    pub status: Option<JobStatus>,
    pub include_archived: bool,
    pub limit: Option<i64>,
    /// The next page: jobs submitted before the job with this `seq`.
    pub before_seq: Option<i64>,
    pub experiment: Option<String>,
}

/// A job's next `updated_at`: now, and always after the one it replaces (a compare-and-set
/// tells writes apart by it).
fn later_than(previous: i64) -> i64 {
    now_ms().max(previous + 1)
}

fn status_of(row: &JobRow) -> JobStatus {
    JobStatus::parse(&row.status).unwrap_or(JobStatus::Failed)
}

fn job_what(ws: &str, name: &str) -> String {
    format!("job {name:?} in workspace {ws:?}")
}

/// A name like Azure ML's (`happy_river_x1y2z3w4q5`) for jobs submitted without one.
fn generated_name() -> String {
    const ADJ: &[&str] = &[
        "amber", "brave", "calm", "eager", "quiet", "lucid", "nimble", "sunny", "witty", "zesty",
    ];
    const NOUN: &[&str] = &[
        "river", "kettle", "falcon", "meadow", "lantern", "pebble", "harbor", "cedar", "comet",
        "otter",
    ];
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = bytes[2..]
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect();
    format!(
        "{}_{}_{tail}",
        ADJ[bytes[0] as usize % ADJ.len()],
        NOUN[bytes[1] as usize % NOUN.len()]
    )
}

/// Jobs: submitting, planning, scheduling onto computes, sweeps and pipelines, logs.
pub struct Jobs {
    core: Arc<Core>,
    /// The scheduler's wake-ups and the pools' nodes.
    runtime: Runtime,
    users: Arc<Users>,
    resources: Arc<Resources>,
    tracking: Arc<Tracking>,
}

crate::service_on_core!(Jobs);

impl Jobs {
    pub(crate) fn new(
        core: Arc<Core>,
        users: Arc<Users>,
        resources: Arc<Resources>,
        tracking: Arc<Tracking>,
    ) -> Self {
        Jobs {
            core,
            runtime: Default::default(),
            users,
            resources,
            tracking,
        }
    }
}

impl Jobs {
    /// Has the scheduler look again now (a compute changed).
    pub(crate) fn wake_scheduler(&self) {
        self.runtime.wake.notify_one();
    }

    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.config.home.join("logs")
    }

    pub(crate) fn log_path(&self, workspace_id: &str, job: &str) -> PathBuf {
        self.logs_dir()
            .join(workspace_id)
            .join(format!("{job}.log"))
    }

    async fn job_workspace(&self, p: &Principal, ws: &str, action: Action) -> Result<WorkspaceRow> {
        self.authorized_workspace(p, ws, Target::Resource(Kind::Job), action)
            .await
    }

    async fn find_job(&self, ws: &WorkspaceRow, name: &str) -> Result<JobRow> {
        self.store
            .get_job(&ws.id, name)
            .await?
            .ok_or_else(|| Error::not_found(job_what(&ws.name, name)))
    }

    /// Submits a job: validates it, resolves it into a run plan, queues it.
    pub async fn create_job(&self, p: &Principal, workspace: &str, spec: &Json) -> Result<JobView> {
        let ws = self.job_workspace(p, workspace, Action::Write).await?;
        let doc =
            tarn_spec::validate(&Node::from_json(spec), Some(Kind::Job)).map_err(Error::Invalid)?;
        self.check_registry_references(p, &doc.spec).await?;
        let row = self.submit(&ws, &p.name, doc.spec.clone(), "").await?;
        Ok(JobView {
            status: status_of(&row),
            row,
            warnings: doc.warnings,
            run: None,
        })
    }

    /// Stores a validated job as Queued (with its MLflow run) and wakes the scheduler. Command
    /// jobs get their run plan here; sweeps are checked whole (a sample trial is planned).
    pub(crate) async fn submit(
        &self,
        ws: &WorkspaceRow,
        created_by: &str,
        mut spec: Json,
        parent: &str,
    ) -> Result<JobRow> {
        let job_type = spec
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or("command")
            .to_string();
        let name = spec
            .get("name")
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(generated_name);
        if self.store.get_job(&ws.id, &name).await?.is_some() {
            return Err(Error::Conflict(format!(
                "{} already exists; job names are unique in a workspace",
                job_what(&ws.name, &name)
            )));
        }
        // A pipeline is shown on its steps' default compute when it names none itself.
        let compute = spec.get("compute").and_then(Json::as_str).or_else(|| {
            (job_type == "pipeline")
                .then(|| spec["settings"]["default_compute"].as_str())
                .flatten()
        });
        let placement = self.placement(ws, compute).await?;
        let now = now_ms();
        let (mut state, experiment) = match job_type.as_str() {
            "command" => {
                if placement.spark_master.is_some() {
                    return Err(Error::invalid(
                        "compute",
                        format!(
                            "compute {:?} is a Spark cluster: it runs `type: spark` jobs",
                            placement.compute
                        ),
                    ));
                }
                let plan = self.build_plan(ws, &name, &spec, &placement).await?;
                let experiment = plan.experiment.clone();
                let state = JobState {
                    plan: Some(plan),
                    ..Default::default()
                };
                (state, experiment)
            }
            "spark" => {
                let master = match (&placement.runs_on, &placement.spark_master) {
                    (_, Some(master)) => master.clone(),
                    (RunsOn::Slots(_), None)
                        if matches!(placement.compute.as_str(), "serverless" | "local") =>
                    {
                        spark::serverless_master(&spec)
                    }
                    _ => {
                        return Err(Error::invalid(
                            "compute",
                            format!(
                                "Spark jobs run on serverless Spark (no `compute`), on this machine (`compute: local`) or on an attached Spark cluster (a `synapsespark` compute with a `master`), not on {:?}",
                                placement.compute
                            ),
                        ));
                    }
                };
                spark::check_java()?;
                let command = spark::as_command(&spec, &name, &master);
                let mut plan = self.build_plan(ws, &name, &command, &placement).await?;
                spark::with_runtime(&spec, &mut plan.environment)?;
                if master.starts_with("local") {
                    // Its node is sized from `conf` (raised from the slot's share, within
                    // the machine), so `local[N]` gets the N CPUs it runs N tasks on.
                    let (cpus, memory_mb) = spark::serverless_share(&spec);
                    plan.cpus_per_node = plan.cpus_per_node.max(cpus).min(machine_cpus());
                    plan.memory_mb_per_node = plan
                        .memory_mb_per_node
                        .max(memory_mb)
                        .min(crate::process::user_memory_mb());
                }
                plan.spark_app = Some(name.clone());
                plan.spark_ships_env = !master.starts_with("local");
                let experiment = plan.experiment.clone();
                let state = JobState {
                    plan: Some(plan),
                    ..Default::default()
                };
                (state, experiment)
            }
            "sweep" => {
                let sweep = sweeper::Sweep::parse(&spec)?;
                // Everything a trial can get wrong is found now, on a sample trial.
                let sample = sweep.trial_spec(
                    &spec,
                    &format!("{name}_sample"),
                    &sweep.sample_point(0, &[])?,
                );
                let sample = tarn_spec::validate(&Node::from_json(&sample), Some(Kind::Job))
                    .map_err(Error::Invalid)?;
                self.build_plan(ws, &format!("{name}_sample"), &sample.spec, &placement)
                    .await?;
                let experiment = spec
                    .get("experiment_name")
                    .and_then(Json::as_str)
                    .unwrap_or("Default")
                    .to_string();
                let state = JobState {
                    sweep: Some(SweepState {
                        trials: Some(0),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                (state, experiment)
            }
            "pipeline" => {
                // Components, bindings and input values are checked now, not mid-pipeline.
                self.check_pipeline(ws, &name, created_by, &spec).await?;
                let experiment = spec
                    .get("experiment_name")
                    .and_then(Json::as_str)
                    .unwrap_or("Default")
                    .to_string();
                let state = JobState {
                    pipeline: Some(PipelineState::default()),
                    ..Default::default()
                };
                (state, experiment)
            }
            other => {
                return Err(Error::invalid(
                    "type",
                    format!("{other} jobs are not run by this Tarn"),
                ));
            }
        };
        if let Some(obj) = spec.as_object_mut() {
            obj.insert("name".into(), Json::String(name.clone()));
        }
        state.stamp(JobStatus::NotStarted, now);
        state.stamp(JobStatus::Queued, now);
        let row = JobRow {
            workspace_id: ws.id.clone(),
            workspace: ws.name.clone(),
            name: name.clone(),
            seq: 0,
            parent: parent.to_string(),
            job_type,
            experiment,
            compute: placement.compute.clone(),
            priority: plan::priority(&spec),
            status: JobStatus::Queued.as_str().to_string(),
            spec,
            state: state.to_json(),
            archived: false,
            created_by: created_by.to_string(),
            created_at: now,
            updated_at: now,
        };
        match self.store.insert_job(&row).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                return Err(Error::Conflict(format!(
                    "{} already exists",
                    job_what(&ws.name, &name)
                )));
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = self.create_job_run(ws, &row).await {
            tracing::warn!(job = %name, "could not create the job's MLflow run: {e}");
        }
        // Read back before waking the scheduler: the reply shows the job as submitted (Queued).
        let row = self.find_job(ws, &name).await?;
        self.runtime.wake.notify_one();
        Ok(row)
    }

    pub async fn show_job(&self, p: &Principal, workspace: &str, name: &str) -> Result<JobView> {
        let ws = self.job_workspace(p, workspace, Action::Read).await?;
        let row = self.find_job(&ws, name).await?;
        let run = self
            .store
            .get_run(&ws.id, name)
            .await?
            .map(|(_, data)| data);
        Ok(JobView {
            status: status_of(&row),
            row,
            warnings: vec![],
            run,
        })
    }

    pub async fn list_jobs(
        &self,
        p: &Principal,
        workspace: &str,
        q: &JobQuery,
    ) -> Result<Vec<JobView>> {
        let ws = self.job_workspace(p, workspace, Action::Read).await?;
        let filter = JobFilter {
            parent: q.parent.as_deref(),
            status: q.status.map(JobStatus::as_str),
            include_archived: q.include_archived,
            limit: q.limit,
            before_seq: q.before_seq,
            experiment: q.experiment.as_deref(),
        };
        Ok(self
            .store
            .list_jobs(&ws.id, &filter)
            .await?
            .into_iter()
            .map(|row| JobView {
                status: status_of(&row),
                row,
                warnings: vec![],
                run: None,
            })
            .collect())
    }

    /// Cancels a job: a queued job is canceled at once; a running one is asked to stop (its
    /// runner stops the process tree and reports Canceled).
    /// The jobs `user` submitted that have not ended, in every workspace.
    pub async fn active_jobs_of(&self, user: &str) -> Result<Vec<JobRow>> {
        let active: Vec<&str> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .map(JobStatus::as_str)
            .collect();
        let mut rows = self.store.jobs_in_status(&active).await?;
        rows.retain(|r| r.created_by == user);
        Ok(rows)
    }

    /// Cancels every job `user` submitted that has not ended, in every workspace (their user
    /// is being disabled or deleted); how many were canceled. Administrators only.
    pub async fn cancel_jobs_of(&self, p: &Principal, user: &str) -> Result<usize> {
        if !p.is_admin {
            return Err(Error::Forbidden(
                "only administrators can cancel another user's jobs".into(),
            ));
        }
        let mut canceled = 0;
        for row in self.active_jobs_of(user).await? {
            // A pipeline's or sweep's children end with it.
            if !row.parent.is_empty() {
                continue;
            }
            match self.cancel_job(p, &row.workspace, &row.name).await {
                Ok(_) => canceled += 1,
                // It ended meanwhile.
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(canceled)
    }

    pub async fn cancel_job(&self, p: &Principal, workspace: &str, name: &str) -> Result<JobView> {
        let ws = self.job_workspace(p, workspace, Action::Write).await?;
        for _ in 0..10 {
            let row = self.find_job(&ws, name).await?;
            let current = status_of(&row);
            if current.is_terminal() {
                return Err(Error::Conflict(format!(
                    "{} is already {current}",
                    job_what(&ws.name, name)
                )));
            }
            // A job handed to an engine is the engine's until the scheduler takes it back.
            let handed = JobState::of(&row)
                .engine
                .is_some_and(|e| e.handed_at.is_some());
            let target = match current {
                JobStatus::NotStarted => JobStatus::Canceled,
                JobStatus::Queued if !handed => JobStatus::Canceled,
                _ => JobStatus::CancelRequested,
            };
            let mut state = JobState::of(&row);
            state.stamp(target, now_ms());
            if target == JobStatus::Canceled {
                state.error = Some(format!("canceled by {} before it started", p.name));
            }
            state.canceled_by = Some(p.name.clone());
            if self.transition(&row, target, state).await? {
                return self.show_job(p, workspace, name).await;
            }
        }
        Err(Error::Conflict(format!(
            "{} is changing state; try again",
            job_what(&ws.name, name)
        )))
    }

    /// Archives (hides from `job list`) or restores a job.
    pub async fn set_job_archived(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        archived: bool,
    ) -> Result<JobView> {
        let ws = self.job_workspace(p, workspace, Action::Write).await?;
        for _ in 0..10 {
            let expected = self.find_job(&ws, name).await?;
            let row = JobRow {
                archived,
                updated_at: later_than(expected.updated_at),
                ..expected.clone()
            };
            if self.store.update_job(&row, &expected).await? {
                return self.show_job(p, workspace, name).await;
            }
        }
        Err(Error::Conflict(format!(
            "{} is changing state; try again",
            job_what(&ws.name, name)
        )))
    }

    /// Writes a new status and state if the job is still as `row` was read (compare-and-set),
    /// and wakes whoever waits. Returns false when another writer changed the job first.
    pub(crate) async fn transition(
        &self,
        row: &JobRow,
        target: JobStatus,
        state: JobState,
    ) -> Result<bool> {
        let updated = JobRow {
            status: target.as_str().to_string(),
            state: state.to_json(),
            updated_at: later_than(row.updated_at),
            ..row.clone()
        };
        if !self.store.update_job(&updated, row).await? {
            return Ok(false);
        }
        // State-only updates (a sweep's or pipeline's bookkeeping) leave the run alone: its
        // status and times follow status changes only.
        if target.as_str() != row.status
            && let Err(e) = self.sync_job_run(&updated, target).await
        {
            tracing::warn!(job = %row.name, "could not update the job's MLflow run: {e}");
        }
        if target.is_terminal() {
            self.job_ended(&updated).await;
        }
        self.runtime.notify_change();
        Ok(true)
    }

    /// Every job is an MLflow run: its id is the job's name, its experiment is
    /// `experiment_name` (made when missing), its artifacts are the job's artifact folder.
    async fn create_job_run(&self, ws: &WorkspaceRow, row: &JobRow) -> Result<()> {
        self.tracking.ensure_default_experiment(ws).await?;
        let exp = match self
            .store
            .experiment_by_name(&ws.id, &row.experiment)
            .await?
        {
            Some(e) => e.experiment_id,
            None => match self
                .tracking
                .create_experiment_in(ws, &row.experiment, None, vec![])
                .await
            {
                Ok(id) => id,
                Err(Error::AlreadyExists { .. }) => self
                    .store
                    .experiment_by_name(&ws.id, &row.experiment)
                    .await?
                    .map(|e| e.experiment_id)
                    .unwrap_or(0),
                Err(e) => return Err(e),
            },
        };
        let display = row.spec["display_name"]
            .as_str()
            .unwrap_or(&row.name)
            .to_string();
        let run = tarn_store::RunRow {
            workspace_id: ws.id.clone(),
            run_id: row.name.clone(),
            experiment_id: exp,
            run_name: display.clone(),
            user_id: row.created_by.clone(),
            status: JobStatus::Queued.mlflow().into(),
            start_time: Some(row.created_at),
            end_time: None,
            lifecycle_stage: "active".into(),
            artifact_uri: format!("mlflow-artifacts:/ExperimentRun/dcid.{}", row.name),
        };
        let mut tags = vec![
            ("mlflow.runName".to_string(), display),
            ("mlflow.user".to_string(), row.created_by.clone()),
            ("mlflow.source.type".to_string(), "JOB".to_string()),
            ("mlflow.source.name".to_string(), row.name.clone()),
        ];
        if !row.parent.is_empty() {
            tags.push(("mlflow.parentRunId".to_string(), row.parent.clone()));
        }
        for (k, v) in row.spec["tags"].as_object().into_iter().flatten() {
            tags.push((k.clone(), plan::scalar_text(v)));
        }
        match self.store.create_run(&run, &tags).await {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps the job's run status and times in step with the job.
    async fn sync_job_run(&self, row: &JobRow, status: JobStatus) -> Result<()> {
        let Some((mut run, _)) = self.store.get_run(&row.workspace_id, &row.name).await? else {
            return Ok(());
        };
        run.status = status.mlflow().to_string();
        if status == JobStatus::Running {
            run.start_time = Some(now_ms());
        }
        if status.is_terminal() {
            run.end_time = Some(now_ms());
        }
        self.store.update_run(&run).await?;
        Ok(())
    }

    /// What happens once when a job reaches a terminal state: its token dies, its nodes free
    /// up, and named outputs of a completed job are registered as data assets.
    async fn job_ended(&self, row: &JobRow) {
        let scope = JobScope {
            workspace_id: row.workspace_id.clone(),
            job: row.name.clone(),
        };
        if let Err(e) = self.users.revoke_job_token(&scope).await {
            tracing::warn!(job = %row.name, "could not revoke the job's token: {e}");
        }
        if status_of(row) == JobStatus::Completed
            && let Err(e) = self.register_outputs(row).await
        {
            tracing::warn!(job = %row.name, "could not register the job's outputs: {e}");
        }
        self.runtime.wake.notify_one();
    }

    /// Registers outputs that have `name` (and perhaps `version`) as data assets: a command
    /// job's own, a sweep's best trial's, a pipeline's bound outputs.
    async fn register_outputs(&self, row: &JobRow) -> Result<()> {
        let state = JobState::of(row);
        let uris = state.shown_outputs();
        let system = Principal {
            user_id: String::new(),
            name: row.created_by.clone(),
            is_admin: true,
            job: None,
            limit: None,
            groups: vec![],
            token_id: String::new(),
            kind: "job".into(),
        };
        for (name, output) in row
            .spec
            .get("outputs")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
        {
            let Some(asset) = output.get("name").and_then(Json::as_str) else {
                continue;
            };
            let Some(uri) = uris.get(name) else {
                continue;
            };
            let mut spec = json!({
                "name": asset,
                "type": state
                    .plan
                    .as_ref()
                    .and_then(|p| p.outputs.get(name))
                    .map(|o| o.type_.as_str())
                    .or_else(|| output.get("type").and_then(Json::as_str))
                    .unwrap_or("uri_folder"),
                "path": uri,
                "description": format!("Output {name:?} of job {:?}", row.name),
                "tags": {"job": row.name},
            });
            if let Some(v) = output.get("version") {
                spec["version"] = json!(plan::scalar_text(v));
            }
            let scope = Scope {
                workspace: &row.workspace,
                kind: Kind::Data,
                parent: None,
            };
            self.resources
                .create_resource(&system, scope, &spec, Default::default())
                .await?;
        }
        Ok(())
    }

    /// The caller must be the runner of exactly this job.
    async fn runner_job(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
    ) -> Result<(WorkspaceRow, JobRow)> {
        let ws = self.job_workspace(p, workspace, Action::Read).await?;
        if p.job
            .as_ref()
            .is_none_or(|j| j.workspace_id != ws.id || j.job != name)
        {
            return Err(Error::Forbidden(format!(
                "only the runner of {} may do this",
                job_what(&ws.name, name)
            )));
        }
        let row = self.find_job(&ws, name).await?;
        Ok((ws, row))
    }

    /// The run plan, with the nodes the job was given.
    pub async fn runner_plan(&self, p: &Principal, workspace: &str, name: &str) -> Result<RunPlan> {
        let (ws, row) = self.runner_job(p, workspace, name).await?;
        let mut plan: RunPlan = serde_json::from_value(row.state["plan"].clone())
            .map_err(|e| Error::Conflict(format!("the job's plan is unreadable: {e}")))?;
        self.with_index_credentials(&ws, &mut plan.environment)
            .await?;
        if let Some(code) = &mut plan.git_code {
            self.with_git_credentials(&ws, code).await?;
        }
        let state = JobState::of(&row);
        // Nodes not heard from yet are left out, as they were before they were named.
        plan.nodes = state.nodes.into_iter().filter(|n| !n.is_empty()).collect();
        plan.master = state.master;
        Ok(plan)
    }

    /// A runner's status report.
    pub async fn runner_report(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        report: &Report,
    ) -> Result<Reply> {
        for _ in 0..20 {
            let (ws, row) = self.runner_job(p, workspace, name).await?;
            let current = status_of(&row);
            if let Some(rank) = report.node_rank.filter(|r| *r > 0) {
                // Another node of a multi-node job: its own progress, never the job's status.
                if current.is_terminal() {
                    return Err(Error::Conflict(format!(
                        "{} is {current}",
                        job_what(&ws.name, name)
                    )));
                }
                let known = JobState::of(&row);
                let nodes = known.instance_count();
                if rank >= nodes {
                    return Err(Error::invalid(
                        "node_rank",
                        format!("the job runs on {nodes} nodes; there is no node {rank}"),
                    ));
                }
                let mut state = known.clone();
                let entry = NodeReport {
                    status: report.status.as_str().to_string(),
                    exit_code: report.exit_code.map(i64::from),
                    error: report.error.clone(),
                };
                state.node_reports.insert(rank.to_string(), entry);
                if let Some(node) = &report.node {
                    state.set_node(rank, node);
                }
                if state == known || self.transition(&row, current, state).await? {
                    let row = self
                        .store
                        .get_job(&row.workspace_id, name)
                        .await?
                        .unwrap_or(row);
                    return Ok(Reply::of(&row, status_of(&row)));
                }
                continue;
            }
            let Some(target) = status::next(current, report.status) else {
                return Err(Error::Conflict(format!(
                    "{} is {current} and cannot become {}",
                    job_what(&ws.name, name),
                    report.status
                )));
            };
            let known = JobState::of(&row);
            let mut state = known.clone();
            state.stamp(target, now_ms());
            if let Some(code) = report.exit_code {
                state.exit_code = Some(code.into());
            }
            if let Some(e) = &report.error {
                state.error = Some(e.clone());
            }
            // A cancel the system asked for (a sweep's policy) keeps its reason.
            if target == JobStatus::Canceled
                && let Some(reason) = &known.cancel_reason
            {
                state.error = Some(reason.clone());
            }
            if let Some(tail) = &report.log_tail {
                state.log_tail = Some(tail.clone());
            }
            if let Some(pid) = report.pid {
                state.runner_pid = Some(pid);
            }
            if let Some(id) = &report.engine_id {
                // The engine's waiting state is over; when it was handed stays.
                state.engine = Some(EngineState {
                    id: Some(id.clone()),
                    state: None,
                    handed_at: state.engine.as_ref().and_then(|e| e.handed_at),
                });
            }
            if let Some(node) = &report.node {
                state.set_node(0, node);
            }
            if let Some(master) = &report.master {
                state.master = Some(master.clone());
            }
            if let Some(spark) = &report.spark {
                state.spark = Some(spark.clone());
            }
            if target == current && state == known {
                return Ok(Reply::of(&row, current));
            }
            if self.transition(&row, target, state).await? {
                return Ok(Reply::of(&row, target));
            }
        }
        Err(Error::Conflict(format!(
            "job {name:?} is changing state; try again"
        )))
    }

    /// Appends to the job's live log at `offset` (idempotent: bytes the server has already are
    /// skipped, so a runner may resend after a lost reply). Fails with the server's size when
    /// `offset` is past it.
    pub async fn append_log(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        offset: u64,
        data: &[u8],
        node_rank: u32,
    ) -> Result<(u64, Reply)> {
        let (ws, row) = self.runner_job(p, workspace, name).await?;
        // In the store, so that whichever server the runner reaches appends to one log.
        let size = self
            .store
            .append_job_log(&ws.id, name, node_rank, offset, data)
            .await?
            .map_err(|size| {
                Error::Conflict(format!("log offset {offset} is past the log's end {size}"))
            })?;
        self.runtime.notify_change();
        let status = status_of(&row);
        Ok((size, Reply::of(&row, status)))
    }

    /// Reads the job's log from `offset`. With `wait`, blocks up to that long for new bytes
    /// while the job is still going (so `tarn job stream` follows without polling fast).
    pub async fn read_log(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        offset: u64,
        wait: std::time::Duration,
    ) -> Result<LogChunk> {
        let ws = self.job_workspace(p, workspace, Action::Read).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.runtime.sender().subscribe();
        loop {
            let row = self.find_job(&ws, name).await?;
            let status = status_of(&row);
            let (data, size) = self.job_log(&ws.id, name, offset, LOG_READ_MAX).await?;
            if !data.is_empty() {
                return Ok(LogChunk { data, size, status });
            }
            if status.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(LogChunk {
                    data: vec![],
                    size,
                    status,
                });
            }
            // Woken by appends through this server; those through another are seen within
            // half a second.
            let soon = (tokio::time::Instant::now() + LOG_POLL).min(deadline);
            let _ = tokio::time::timeout_at(soon, changes.changed()).await;
        }
    }

    /// Up to `max` bytes of a job's log from `offset`, and its size. Logs from before the
    /// store kept them are read from their file under the home.
    pub(crate) async fn job_log(
        &self,
        workspace_id: &str,
        name: &str,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64)> {
        let (data, size) = self
            .store
            .read_job_log(workspace_id, name, 0, offset, max)
            .await?;
        if size > 0 {
            return Ok((data, size));
        }
        let Ok(all) = tokio::fs::read(self.log_path(workspace_id, name)).await else {
            return Ok((data, size));
        };
        let from = (offset as usize).min(all.len());
        let to = (from + max).min(all.len());
        Ok((all[from..to].to_vec(), all.len() as u64))
    }

    /// The last `bytes` of a job's log.
    pub(crate) async fn job_log_tail(
        &self,
        workspace_id: &str,
        name: &str,
        bytes: usize,
    ) -> Vec<u8> {
        let Ok((_, size)) = self.job_log(workspace_id, name, u64::MAX, 0).await else {
            return vec![];
        };
        self.job_log(workspace_id, name, size.saturating_sub(bytes as u64), bytes)
            .await
            .map(|(data, _)| data)
            .unwrap_or_default()
    }

    /// The nodes of a compute (or of `serverless` / `local`), as the autoscaler keeps them.
    pub async fn compute_nodes(
        &self,
        p: &Principal,
        workspace: &str,
        compute: &str,
    ) -> Result<Vec<NodeView>> {
        let (key, spec, backend) = self.compute_backend(p, workspace, compute).await?;
        if let Some(tarn_spec::compute::ComputeSpec::SparkPool(spark)) = &spec {
            // A Spark cluster's workers, where its executors run.
            let workers = crate::backends::spark::workers(spark).await?;
            return Ok(workers
                .into_iter()
                .map(|w| controller::node_view(w, None))
                .collect());
        }
        match backend {
            Some(backend) => self.engine_nodes(&*backend).await,
            None => Ok(self.nodes_of(&key)),
        }
    }

    /// The instance types a job on a compute may ask for, where its engine has them.
    pub async fn compute_instance_types(
        &self,
        p: &Principal,
        workspace: &str,
        compute: &str,
    ) -> Result<Vec<(String, tarn_spec::compute::InstanceType)>> {
        match self.compute_backend(p, workspace, compute).await?.2 {
            Some(backend) => backend.instance_types().await,
            None => Ok(vec![]),
        }
    }

    /// A compute's pool key, its spec (none for `serverless` and `local`), and its engine's
    /// backend when an engine runs its jobs.
    async fn compute_backend(
        &self,
        p: &Principal,
        workspace: &str,
        compute: &str,
    ) -> Result<(
        String,
        Option<tarn_spec::compute::ComputeSpec>,
        Option<std::sync::Arc<dyn crate::backends::ComputeBackend>>,
    )> {
        let ws = self
            .authorized_workspace(p, workspace, Target::Resource(Kind::Compute), Action::Read)
            .await?;
        let key = controller::pool_key(&ws.id, compute);
        if compute == "serverless" || compute == "local" {
            return Ok((key, None, None));
        }
        let scope = Scope {
            workspace,
            kind: Kind::Compute,
            parent: None,
        };
        let row = self
            .store
            .get_resource(&scope.key(&ws.id, compute, ""))
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("compute {compute:?} in workspace {workspace:?}"))
            })?;
        let spec = self.compute_spec(&ws.id, &row).await?;
        let backend = self.engine_backend(&key, &spec);
        Ok((key, Some(spec), backend))
    }
}
