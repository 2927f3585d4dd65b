//! The HTTP side of the audit log (`tarn_core::audit`): a middleware that reports every call
//! that changes state — any method but GET, HEAD and OPTIONS, less MLflow's searches made
//! with POST (`MLFLOW_READS`) — and every read of secrets
//! (`include_secrets`), with the caller (from its bearer token or studio session), its address
//! and the response's status. Runners' reports about their own job and the scoring data plane
//! are not audited (the job's own lifecycle and each prediction are not control-plane calls,
//! as in Azure's activity log). A request this server forwards to the leader is audited there.

use crate::views::{List, time};
use crate::{ApiResult, AppState, Caller};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tarn_core::audit::Call;
use utoipa::{IntoParams, ToSchema};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(list))
}

/// One audited call.
#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    pub at: String,
    /// Who: a user's or service principal's name ("" when the caller was not known).
    pub actor: String,
    /// `user`, `service_principal`, `job` or `anonymous`.
    pub actor_kind: String,
    pub address: String,
    pub method: String,
    pub path: String,
    pub workspace: String,
    /// The response's HTTP status: the outcome.
    pub status: i64,
    /// The fields an update changed (names only, never values), comma-separated.
    pub changes: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this user's (or service principal's) calls.
    pub user: Option<String>,
    /// Only calls in this workspace (required for a workspace's Owners).
    pub workspace: Option<String>,
    /// Only calls since this time: RFC 3339, or a duration ago (`24h`, `7d`).
    pub since: Option<String>,
    /// At most this many, newest first (default 1000).
    pub limit: Option<usize>,
}

/// The audit log, newest first: administrators see all of it, a workspace's Owners their
/// workspace's (`?workspace=`).
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery), responses((status = 200, body = List<AuditEvent>)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(t): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<List<AuditEvent>>> {
    let since = match q.since.as_deref() {
        None => None,
        Some(text) => Some(since_ms(text)?),
    };
    let value = t
        .audit
        .list(
            &p,
            q.user.as_deref(),
            q.workspace.as_deref(),
            since,
            q.limit.unwrap_or(1000),
        )
        .await?
        .into_iter()
        .map(|e| AuditEvent {
            at: time(e.at),
            actor: e.actor,
            actor_kind: e.actor_kind,
            address: e.address,
            method: e.method,
            path: e.path,
            workspace: e.workspace,
            status: e.status,
            changes: e.changes,
        })
        .collect();
    Ok(Json(List { value }))
}

/// `since` as ms since the epoch: a time (RFC 3339) or a duration ago.
fn since_ms(text: &str) -> Result<i64, tarn_core::Error> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64));
    }
    let ago = tarn_core::parse_lifetime_ms(text).map_err(|_| {
        tarn_core::Error::invalid(
            "since",
            format!("{text:?} is neither a time (2026-12-01T00:00:00Z) nor a duration (24h, 7d)"),
        )
    })?;
    Ok(tarn_core::now_ms() - ago)
}

/// MLflow's calls that change nothing but are made with POST (a search's filter travels in
/// the body): reads, not audited — and not written to the store on every search a UI polls.
const MLFLOW_READS: [&str; 10] = [
    "experiments/search",
    "experiments/search-datasets",
    "runs/search",
    "logged-models/search",
    "registered-models/get-latest-versions",
    "traces/search",
    "traces/calculate-filter-correlation",
    "traces/metrics",
    "datasets/search",
    "issues/search",
];

/// Whether a call is audited.
fn audited(method: &Method, path: &str, query: &str) -> bool {
    let reads_secrets = query.split('&').any(|kv| kv == "include_secrets=true");
    let mlflow_read = path
        .rsplit_once("/mlflow/")
        .is_some_and(|(surface, call)| surface.starts_with("/ws/") && MLFLOW_READS.contains(&call));
    let writes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !mlflow_read;
    (writes || reads_secrets) && !path.contains("/runner/") && !path.starts_with("/endpoints/")
}

pub async fn layer(State(t): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if !audited(&method, &path, req.uri().query().unwrap_or_default()) {
        return next.run(req).await;
    }
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    // Who: the token or the studio session the request carries (a bad one: anonymous).
    let who = match crate::bearer(req.headers()) {
        Some(token) => t.users.authenticate(Some(token)).await.ok(),
        None => match crate::studio::session_id(req.headers()) {
            Some(id) => t.users.session(&id).await.ok().map(|s| s.principal),
            None => None,
        },
    };
    let (response, changes) = tarn_core::audit::collecting(next.run(req)).await;
    t.audit.record(Call {
        who: who.as_ref(),
        address,
        method: method.as_str(),
        path: &path,
        status: response.status().as_u16(),
        changes,
    });
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_and_secret_reads_are_audited_runner_reports_and_scoring_are_not() {
        use super::audited;
        use axum::http::Method;
        assert!(audited(&Method::POST, "/api/v1/workspaces/w/models", ""));
        assert!(audited(&Method::DELETE, "/api/v1/tokens/x", ""));
        assert!(!audited(&Method::GET, "/api/v1/workspaces/w/models", ""));
        assert!(audited(
            &Method::GET,
            "/api/v1/workspaces/w/datastores/d",
            "include_secrets=true"
        ));
        assert!(!audited(
            &Method::POST,
            "/api/v1/workspaces/w/jobs/j/runner/status",
            ""
        ));
        assert!(!audited(&Method::POST, "/endpoints/e/score", ""));
        // MLflow's searches are reads, though POSTs; its writes are audited.
        for read in [
            "/ws/w/mlflow/api/2.0/mlflow/runs/search",
            "/ws/w/mlflow/ajax-api/2.0/mlflow/experiments/search",
            "/ws/w/mlflow/api/3.0/mlflow/traces/search",
            "/ws/w/mlflow/api/3.0/mlflow/traces/metrics",
        ] {
            assert!(!audited(&Method::POST, read, ""), "{read}");
        }
        for write in [
            "/ws/w/mlflow/api/2.0/mlflow/runs/log-batch",
            "/ws/w/mlflow/api/3.0/mlflow/traces",
            "/ws/w/mlflow/api/2.0/mlflow/runs/search/x",
        ] {
            assert!(audited(&Method::POST, write, ""), "{write}");
        }
    }
}
