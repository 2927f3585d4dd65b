//! Job routes: submit, show, list, cancel, archive, the live log; the runner's calls (plan,
//! status, log appends — only with the job's own token); compute nodes.

use crate::error::{ApiError, Code, ErrorBody};
use crate::views::{List, time};
use crate::{ApiResult, AppState, Body, Caller};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use std::collections::BTreeMap;
use tarn_core::jobs::{JobQuery, JobStatus, JobView, NodeView, Report};
use utoipa::ToSchema;

/// Response header: the log's size on the server (read from there next).
pub const LOG_SIZE_HEADER: &str = "x-tarn-log-size";
/// Response header: the job's status when the log was read.
pub const JOB_STATUS_HEADER: &str = "x-tarn-job-status";

pub(crate) fn routes() -> Router<AppState> {
    let jobs = "/api/v1/workspaces/{workspace}/jobs";
    Router::new()
        .route(jobs, get(list_jobs).post(create_job))
        .route(&format!("{jobs}/{{name}}"), get(show_job))
        .route(&format!("{jobs}/{{name}}/cancel"), post(cancel_job))
        .route(&format!("{jobs}/{{name}}/archive"), post(archive_job))
        .route(&format!("{jobs}/{{name}}/restore"), post(restore_job))
        .route(&format!("{jobs}/{{name}}/log"), get(read_log))
        .route(&format!("{jobs}/{{name}}/runner/plan"), get(runner_plan))
        .route(
            &format!("{jobs}/{{name}}/runner/status"),
            post(runner_status),
        )
        .route(&format!("{jobs}/{{name}}/runner/log"), post(runner_log))
        .route(
            "/api/v1/workspaces/{workspace}/computes/{name}/nodes",
            get(list_nodes),
        )
}

/// A job as `tarn job show` prints it.
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub experiment_name: String,
    pub compute: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub created_by: String,
    pub created_at: String,
    /// When the job entered each status.
    pub status_times: BTreeMap<String, String>,
    /// Seconds from start (Running) to end, or to now while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of the job's log, for failed jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    pub nodes: Vec<String>,
    /// The engine that runs the job and its id there (`slurm:1234`), with the engine's view
    /// of it while it waits (`PENDING (Resources)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// When Tarn handed the job to its engine: the time from here to `Running` is the
    /// engine's (and the runner's start on its node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_to_engine_at: Option<String>,
    /// A Spark job's application: its id and its driver's web UI.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub spark: Option<tarn_spec::runplan::SparkApp>,
    /// Inputs as the job sees them: literal values, or the data's URI.
    pub inputs: BTreeMap<String, String>,
    /// Each output's URI.
    pub outputs: BTreeMap<String, String>,
    /// Where `./outputs`, `./logs` and `user_logs/std_log.txt` are kept.
    pub artifacts: String,
    /// Sweeps: trials started so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trials: Option<u64>,
    /// Sweeps: the best trial, its primary metric value and its parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_trial: Option<JsonValue>,
    /// Pipelines: each step's job and state (`Reused` with `reused_from`, `Skipped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<JsonValue>,
    /// The job's MLflow run: its id is the job's name.
    pub mlflow_run_id: String,
    /// The run's latest metric values (in `show`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, JsonValue>,
    /// The run's params (in `show`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    pub mlflow_status: String,
    pub archived: bool,
    #[serde(skip_serializing_if = "JsonValue::is_null")]
    pub tags: JsonValue,
    /// The submitted document, normalised.
    pub spec: JsonValue,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::error::DiagnosticView>,
}

impl From<JobView> for Job {
    fn from(v: JobView) -> Job {
        let state = tarn_core::jobs::JobState::of(&v.row);
        let times = &state.times;
        let started = times.get("Running").copied();
        let ended = [JobStatus::Completed, JobStatus::Failed, JobStatus::Canceled]
            .iter()
            .find_map(|s| times.get(s.as_str()).copied());
        let duration_s = started.map(|s| {
            let end = ended.unwrap_or_else(tarn_core::now_ms);
            (end - s).max(0) as f64 / 1000.0
        });
        let artifacts = state
            .plan
            .as_ref()
            .map(|p| {
                format!(
                    "azureml://datastores/{}/paths/{}",
                    p.artifacts.datastore, p.artifacts.path
                )
            })
            // Sweeps and pipelines: their MLflow run's artifacts, where every job's are.
            .unwrap_or_else(|| {
                format!(
                    "azureml://datastores/{}/paths/ExperimentRun/dcid.{}/",
                    tarn_core::jobs::ARTIFACT_DATASTORE,
                    v.row.name
                )
            });
        Job {
            name: v.row.name.clone(),
            type_: v.row.job_type.clone(),
            status: v.status.to_string(),
            display_name: v.row.spec["display_name"].as_str().map(str::to_string),
            experiment_name: v.row.experiment.clone(),
            compute: v.row.compute.clone(),
            parent: Some(v.row.parent.clone()).filter(|p| !p.is_empty()),
            created_by: v.row.created_by.clone(),
            created_at: time(v.row.created_at),
            status_times: times.iter().map(|(k, t)| (k.clone(), time(*t))).collect(),
            duration_s,
            exit_code: state.exit_code,
            error: state.error.clone(),
            log_tail: state
                .log_tail
                .clone()
                .filter(|_| v.status != JobStatus::Completed),
            nodes: state.nodes.clone(),
            engine: state.engine.as_ref().and_then(|e| {
                let id = e.id.clone()?;
                Some(match &e.state {
                    Some(s) => format!("{id} {s}"),
                    None => id,
                })
            }),
            handed_to_engine_at: state.engine.as_ref().and_then(|e| e.handed_at).map(time),
            spark: state.spark.clone(),
            inputs: match &state.plan {
                Some(_) => state.shown_inputs(),
                None => tarn_core::jobs::JobState::spec_inputs(&v.row.spec),
            },
            outputs: state.shown_outputs(),
            artifacts,
            trials: state.sweep.as_ref().and_then(|s| s.trials),
            steps: state
                .pipeline
                .as_ref()
                .and_then(|p| serde_json::to_value(&p.steps).ok()),
            best_trial: state.sweep.as_ref().and_then(|s| s.best.as_ref()).map(|b| {
                serde_json::json!({
                    "trial": b.trial,
                    "value": b.value,
                    "metric": b.metric,
                    "parameters": b.parameters,
                })
            }),
            mlflow_run_id: v.row.name.clone(),
            metrics: v
                .run
                .iter()
                .flat_map(|d| &d.metrics)
                .map(|m| {
                    let value = serde_json::Number::from_f64(m.value)
                        .map(JsonValue::Number)
                        .unwrap_or_else(|| JsonValue::String(m.value.to_string()));
                    (m.key.clone(), value)
                })
                .collect(),
            params: v.run.iter().flat_map(|d| d.params.clone()).collect(),
            mlflow_status: v.status.mlflow().to_string(),
            archived: v.row.archived,
            tags: v.row.spec["tags"].clone(),
            spec: v.row.spec,
            warnings: v
                .warnings
                .iter()
                .map(crate::error::DiagnosticView::from)
                .collect(),
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct JobListQuery {
    /// Only children of this job.
    parent: Option<String>,
    /// Only jobs in this status (Queued, Running, Completed, …).
    status: Option<String>,
    #[serde(default)]
    include_archived: bool,
    /// At most this many, newest first.
    max_results: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/jobs", params(("workspace" = String, Path)), request_body = Object, responses((status = 201, body = Job), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn create_job(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    Body(spec): Body<JsonValue>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((
        StatusCode::CREATED,
        Json(t.jobs.create_job(&p, &ws, &spec).await?.into()),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/jobs", params(("workspace" = String, Path), JobListQuery), responses((status = 200, body = List<Job>)), security(("bearer" = [])))]
async fn list_jobs(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    Query(q): Query<JobListQuery>,
) -> ApiResult<Json<List<Job>>> {
    let status =
        match q.status.as_deref() {
            Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
                ApiError::new(Code::BadRequest, format!("unknown job status {s:?}"))
            })?),
            None => None,
        };
    let query = JobQuery {
        parent: q.parent,
        status,
        include_archived: q.include_archived,
        limit: q.max_results,
        ..Default::default()
    };
    let value = t
        .jobs
        .list_jobs(&p, &ws, &query)
        .await?
        .into_iter()
        .map(Job::from)
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/jobs/{name}", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Job), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn show_job(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(t.jobs.show_job(&p, &ws, &name).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/jobs/{name}/cancel", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Job), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn cancel_job(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(t.jobs.cancel_job(&p, &ws, &name).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/jobs/{name}/archive", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Job)), security(("bearer" = [])))]
async fn archive_job(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(
        t.jobs.set_job_archived(&p, &ws, &name, true).await?.into(),
    ))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/jobs/{name}/restore", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Job)), security(("bearer" = [])))]
async fn restore_job(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(
        t.jobs.set_job_archived(&p, &ws, &name, false).await?.into(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Read from this byte.
    #[serde(default)]
    offset: u64,
    /// Wait up to this many seconds (at most 30) for new bytes while the job runs.
    #[serde(default)]
    wait: u64,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/jobs/{name}/log", params(("workspace" = String, Path), ("name" = String, Path), LogQuery), responses((status = 200, content_type = "text/plain", body = String, headers(("x-tarn-log-size" = u64), ("x-tarn-job-status" = String)))), security(("bearer" = [])))]
async fn read_log(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<axum::response::Response> {
    let wait = std::time::Duration::from_secs(q.wait.min(30));
    let chunk = t.jobs.read_log(&p, &ws, &name, q.offset, wait).await?;
    let mut response = axum::response::Response::new(axum::body::Body::from(chunk.data));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(LOG_SIZE_HEADER, chunk.size.into());
    headers.insert(
        JOB_STATUS_HEADER,
        HeaderValue::from_static(chunk.status.as_str()),
    );
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/jobs/{name}/runner/plan", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Object, description = "the run plan (tarn_spec::runplan::RunPlan)"), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn runner_plan(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<tarn_spec::runplan::RunPlan>> {
    Ok(Json(t.jobs.runner_plan(&p, &ws, &name).await?))
}

/// A runner's status report.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub status: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_tail: Option<String>,
    pub pid: Option<u32>,
    /// The engine's id for the job (`slurm:1234`), when an engine runs it.
    pub engine_id: Option<String>,
    /// The node the runner runs on, as the engine names it.
    pub node: Option<String>,
    /// Which node of a multi-node job reports (0: the lead, which reports the job's status).
    pub node_rank: Option<u32>,
    /// The lead's `host:port` for rank 0 (`MASTER_ADDR`/`MASTER_PORT` of every rank).
    pub master: Option<String>,
    /// A Spark job's application, once the runner found it.
    #[schema(value_type = Option<Object>)]
    pub spark: Option<tarn_spec::runplan::SparkApp>,
}

/// The server's answer to a runner.
#[derive(Serialize, ToSchema)]
pub struct RunnerReply {
    pub status: String,
    /// The user canceled: stop the processes and report Canceled.
    pub cancel_requested: bool,
    /// For log appends: the log's size on the server now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_size: Option<u64>,
    /// For the lead of a multi-node job: the exit codes the other nodes reported, by node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_exits: BTreeMap<u32, i32>,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/jobs/{name}/runner/status", params(("workspace" = String, Path), ("name" = String, Path)), request_body = StatusReport, responses((status = 200, body = RunnerReply), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn runner_status(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
    Body(report): Body<StatusReport>,
) -> ApiResult<Json<RunnerReply>> {
    let status = JobStatus::parse(&report.status).ok_or_else(|| {
        ApiError::new(
            Code::BadRequest,
            format!("unknown job status {:?}", report.status),
        )
    })?;
    let reply = t
        .jobs
        .runner_report(
            &p,
            &ws,
            &name,
            &Report {
                status,
                exit_code: report.exit_code,
                error: report.error,
                log_tail: report.log_tail,
                pid: report.pid,
                engine_id: report.engine_id,
                node: report.node,
                node_rank: report.node_rank,
                master: report.master,
                spark: report.spark,
            },
        )
        .await?;
    Ok(Json(RunnerReply {
        status: reply.status.to_string(),
        cancel_requested: reply.cancel_requested,
        log_size: None,
        node_exits: reply.node_exits,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AppendQuery {
    /// Where these bytes start in the log.
    offset: u64,
    /// Which node's log (0, the default: the lead's, which is the job's log).
    #[serde(default)]
    node: u32,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/jobs/{name}/runner/log", params(("workspace" = String, Path), ("name" = String, Path), AppendQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 200, body = RunnerReply), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn runner_log(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<AppendQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Json<RunnerReply>> {
    let (size, reply) = t
        .jobs
        .append_log(&p, &ws, &name, q.offset, &body, q.node)
        .await?;
    Ok(Json(RunnerReply {
        status: reply.status.to_string(),
        cancel_requested: reply.cancel_requested,
        log_size: Some(size),
        node_exits: reply.node_exits,
    }))
}

/// A node of a compute cluster (or of the serverless or local pool).
#[derive(Serialize, ToSchema)]
pub struct ComputeNode {
    pub name: String,
    /// `idle` or `busy`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<String>,
    /// An engine's node: the CPUs, memory (MiB) and GPUs it can give (allocatable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
}

impl From<NodeView> for ComputeNode {
    fn from(n: NodeView) -> ComputeNode {
        ComputeNode {
            name: n.name,
            state: n.state.to_string(),
            job: n.job,
            idle_since: n.idle_since.map(time),
            cpus: n.capacity.as_ref().map(|c| c.cpus),
            memory_mb: n.capacity.as_ref().map(|c| c.memory_mb),
            gpus: n.capacity.as_ref().map(|c| c.gpus),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/computes/{name}/nodes", params(("workspace" = String, Path), ("name" = String, Path, description = "a compute, or `serverless` / `local`")), responses((status = 200, body = List<ComputeNode>)), security(("bearer" = [])))]
async fn list_nodes(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<List<ComputeNode>>> {
    let value = t
        .jobs
        .compute_nodes(&p, &ws, &name)
        .await?
        .into_iter()
        .map(ComputeNode::from)
        .collect();
    Ok(Json(List { value }))
}
