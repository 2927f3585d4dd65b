//! The HTTP side of schedules (`tarn_core::schedules`): they are resources, so create, show,
//! list, update and delete are the generic resource routes under `schedules`; `show` and
//! `list` add what comes next and how the fires went ([`ScheduleView`]), and `enable` and
//! `disable` are their own calls, as in `az ml schedule`.

use crate::views::{Resource, time};
use crate::{ApiResult, AppState, Caller};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use tarn_core::Tarn;
use tarn_core::authz::Principal;
use utoipa::ToSchema;

pub(crate) fn routes() -> Router<AppState> {
    let at = "/api/v1/workspaces/{workspace}/schedules/{name}";
    Router::new()
        .route(&format!("{at}/enable"), post(enable))
        .route(&format!("{at}/disable"), post(disable))
}

/// What comes next for a schedule and how its fires went.
#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    pub is_enabled: bool,
    /// The next fires (RFC 3339), soonest first; none when disabled or past its end.
    pub next_run_times: Vec<String>,
    /// Jobs it fired, and due times it passed over (missed while no server ran).
    pub fired: i64,
    pub skipped: i64,
    /// Why its last fire failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The jobs it fired, newest first (in `show`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_jobs: Vec<ScheduledJob>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduledJob {
    pub name: String,
    pub status: String,
    pub created_at: String,
}

/// Adds a schedule's [`ScheduleView`] to it, with its jobs when `jobs`.
pub(crate) async fn add_status(
    t: &Tarn,
    p: &Principal,
    workspace: &str,
    resource: &mut Resource,
    row: &tarn_core::ResourceRow,
    jobs: bool,
) -> ApiResult<()> {
    let s = t.schedules.status(p, workspace, row, jobs).await?;
    resource.schedule = Some(ScheduleView {
        is_enabled: s.is_enabled,
        next_run_times: s.next_fires.into_iter().map(time).collect(),
        fired: s.fired,
        skipped: s.skipped,
        last_error: s.last_error,
        last_jobs: s
            .recent_jobs
            .into_iter()
            .map(|j| ScheduledJob {
                name: j.row.name,
                status: j.status.as_str().to_string(),
                created_at: time(j.row.created_at),
            })
            .collect(),
    });
    Ok(())
}

/// Turns a schedule on: it fires from now on (what was due while it was off is not made up).
#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/schedules/{name}/enable", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Resource), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn enable(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Resource>> {
    set_enabled(&t, &p, &ws, &name, true).await
}

/// Turns a schedule off: it fires nothing until enabled.
#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/schedules/{name}/disable", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 200, body = Resource), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn disable(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Resource>> {
    set_enabled(&t, &p, &ws, &name, false).await
}

async fn set_enabled(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    name: &str,
    enabled: bool,
) -> ApiResult<Json<Resource>> {
    let view = t.schedules.set_enabled(p, ws, name, enabled).await?;
    let row = view.row.clone();
    let mut resource: Resource = view.into();
    add_status(t, p, ws, &mut resource, &row, false).await?;
    Ok(Json(resource))
}
