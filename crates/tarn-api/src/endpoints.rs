//! Online endpoint routes beyond create/show/update/delete: credentials (Azure's `listKeys`
//! and `token`), key regeneration, deployment logs; and the run-time state `show` adds.

use crate::views::Resource;
use crate::{ApiResult, AppState, Body, Caller};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tarn_core::endpoints::Credentials;
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
}

/// What `get-credentials` returns: keys, or a token.
#[derive(Serialize, ToSchema)]
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
    Ok(Json(match t.endpoint_credentials(&p, &ws, &ep).await? {
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
    }))
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
    t.regenerate_endpoint_key(&p, &ws, &ep, &req.key_type)
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
    Ok(
        t.deployment_logs(&p, &ws, &ep, &dep, q.lines.unwrap_or(100))
            .await?,
    )
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
}

/// Adds what the controller knows to an online endpoint or deployment being shown.
pub fn add_state(t: &tarn_core::Tarn, workspace_id: &str, resource: &mut Resource) {
    match resource.kind.as_str() {
        "online-endpoint" => {
            resource.scoring_uri = Some(t.scoring_uri(&resource.name));
            resource.provisioning_state = Some("Succeeded".into());
        }
        "online-deployment" => {
            let Some(ep) = resource.endpoint_name.clone() else {
                return;
            };
            let status = t.deployment_status(workspace_id, &ep, &resource.name, &resource.spec);
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
                        })
                        .collect(),
                );
            }
        }
        _ => {}
    }
}
