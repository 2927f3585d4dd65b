//! Endpoint routes beyond create/show/update/delete. Online endpoints: credentials (Azure's
//! `listKeys` and `token`), key regeneration, deployment logs, and the run-time state `show`
//! adds. Batch endpoints: invoke (which submits a job) and the jobs an endpoint ran.

use crate::jobs::Job;
use crate::views::List;
use crate::views::Resource;
use crate::{ApiResult, AppState, Body, Caller};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tarn_core::endpoints::Credentials;
use tarn_core::endpoints::batch::BatchInvoke;
use utoipa::{IntoParams, ToSchema};

const BASE: &str = "/api/v1/workspaces/{workspace}/online-endpoints/{endpoint}";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{BASE}/credentials"), post(get_credentials))
        .route(&format!("{BASE}/regenerate-keys"), post(regenerate_keys))
        .route(
            &format!("{BASE}/deployments/{{deployment}}/logs"),
            get(deployment_logs),
        )
        .route(&format!("{BATCH}/invoke"), post(invoke_batch))
        .route(&format!("{BATCH}/jobs"), get(batch_jobs))
}

const BATCH: &str = "/api/v1/workspaces/{workspace}/batch-endpoints/{endpoint}";

/// What `batch-endpoint invoke` sends.
#[derive(Deserialize, ToSchema)]
pub struct InvokeBatch {
    /// The deployment to run; the endpoint's `defaults.deployment_name` when absent.
    #[serde(default)]
    pub deployment_name: Option<String>,
    /// The data to score: `azureml:<data>:<version>`, `azureml:<data>@latest`, a datastore URI
    /// or a job output URI.
    #[serde(default)]
    pub input: Option<String>,
    /// `uri_folder` (default) or `uri_file`.
    #[serde(default)]
    pub input_type: Option<String>,
    /// Where the `score` output goes (a datastore URI).
    #[serde(default)]
    pub output_path: Option<String>,
    #[serde(default)]
    pub experiment_name: Option<String>,
    /// Named inputs (`invoke --file`): a pipeline deployment's component inputs, or a model
    /// deployment's one input.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Named outputs with their `path` (a model deployment has one, `score`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/batch-endpoints/{endpoint}/invoke", params(("workspace" = String, Path), ("endpoint" = String, Path)), request_body = InvokeBatch, responses((status = 201, body = Job), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn invoke_batch(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, ep)): Path<(String, String)>,
    Body(req): Body<InvokeBatch>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let req = BatchInvoke {
        deployment: req.deployment_name,
        input: req.input,
        input_type: req.input_type,
        output_path: req.output_path,
        experiment_name: req.experiment_name,
        inputs: req.inputs,
        outputs: req.outputs,
    };
    let job = t
        .endpoints
        .invoke_batch_endpoint(&p, &ws, &ep, &req)
        .await?;
    Ok((StatusCode::CREATED, Json(job.into())))
}

#[derive(Deserialize, IntoParams)]
pub struct BatchJobsQuery {
    /// Only the jobs of this deployment.
    pub deployment: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/batch-endpoints/{endpoint}/jobs", params(("workspace" = String, Path), ("endpoint" = String, Path), BatchJobsQuery), responses((status = 200, body = List<Job>)), security(("bearer" = [])))]
pub async fn batch_jobs(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, ep)): Path<(String, String)>,
    Query(q): Query<BatchJobsQuery>,
) -> ApiResult<Json<List<Job>>> {
    let value = t
        .endpoints
        .batch_endpoint_jobs(&p, &ws, &ep, q.deployment.as_deref())
        .await?
        .into_iter()
        .map(Job::from)
        .collect();
    Ok(Json(List { value }))
}

/// What `get-credentials` returns: keys, or a token, spelt as `az ml online-endpoint
/// get-credentials` prints them (`primaryKey`, `accessToken`, …), so scripts read them unchanged.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCredentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// When the token expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry_time_utc: Option<String>,
    pub token_type: String,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/online-endpoints/{endpoint}/credentials", params(("workspace" = String, Path), ("endpoint" = String, Path)), responses((status = 200, body = EndpointCredentials)), security(("bearer" = [])))]
pub async fn get_credentials(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, ep)): Path<(String, String)>,
) -> ApiResult<Json<EndpointCredentials>> {
    Ok(Json(
        match t.endpoints.endpoint_credentials(&p, &ws, &ep).await? {
            Credentials::Keys { primary, secondary } => EndpointCredentials {
                primary_key: Some(primary),
                secondary_key: Some(secondary),
                access_token: None,
                expiry_time_utc: None,
                token_type: "key".into(),
            },
            Credentials::Token { token, expires_ms } => EndpointCredentials {
                primary_key: None,
                secondary_key: None,
                access_token: Some(token),
                expiry_time_utc: Some(crate::views::time(expires_ms)),
                token_type: "Bearer".into(),
            },
        },
    ))
}

#[derive(Deserialize, ToSchema)]
pub struct RegenerateKeys {
    /// `primary` or `secondary`.
    pub key_type: String,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/online-endpoints/{endpoint}/regenerate-keys", params(("workspace" = String, Path), ("endpoint" = String, Path)), request_body = RegenerateKeys, responses((status = 204)), security(("bearer" = [])))]
pub async fn regenerate_keys(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, ep)): Path<(String, String)>,
    Body(req): Body<RegenerateKeys>,
) -> ApiResult<StatusCode> {
    t.endpoints
        .regenerate_endpoint_key(&p, &ws, &ep, &req.key_type)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
pub struct LogsQuery {
    /// How many lines from the end (default 100).
    pub lines: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/online-endpoints/{endpoint}/deployments/{deployment}/logs", params(("workspace" = String, Path), ("endpoint" = String, Path), ("deployment" = String, Path), LogsQuery), responses((status = 200, body = String, content_type = "text/plain")), security(("bearer" = [])))]
pub async fn deployment_logs(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, ep, dep)): Path<(String, String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<String> {
    Ok(t.endpoints
        .deployment_logs(&p, &ws, &ep, &dep, q.lines.unwrap_or(100))
        .await?)
}

/// One replica of a deployment, in `show`.
#[derive(Serialize, ToSchema)]
pub struct ReplicaView {
    pub index: u32,
    /// `Starting`, `Ready`, `Restarting` or `Stopping`.
    pub state: String,
    pub port: u16,
    pub restarts: u32,
    /// Whether it runs the current spec (false for the old ones during a rolling update).
    pub current: bool,
    /// The Kubernetes pod that runs it, for a deployment on a Kubernetes compute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What it waits on or died of, as Kubernetes says (`CrashLoopBackOff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Adds what the controller knows to an online endpoint or deployment being shown.
pub fn add_state(t: &tarn_core::Tarn, workspace_id: &str, resource: &mut Resource) {
    match resource.kind.as_str() {
        "online-endpoint" => {
            resource.scoring_uri = Some(t.endpoints.scoring_uri(&resource.name));
            resource.provisioning_state = Some("Succeeded".into());
        }
        "online-deployment" => {
            let Some(ep) = resource.endpoint_name.clone() else {
                return;
            };
            let status =
                t.endpoints
                    .deployment_status(workspace_id, &ep, &resource.name, &resource.spec);
            resource.provisioning_state = Some(
                status
                    .as_ref()
                    .map_or("Creating", |s| s.provisioning_state)
                    .into(),
            );
            if let Some(s) = status {
                resource.error = s.error;
                resource.replicas = Some(
                    s.replicas
                        .into_iter()
                        .map(|r| ReplicaView {
                            index: r.index,
                            state: r.state.into(),
                            port: r.port,
                            restarts: r.restarts,
                            current: r.current,
                            pod: r.pod,
                            reason: r.reason,
                        })
                        .collect(),
                );
            }
        }
        _ => {}
    }
}
