//! The HTTP side of registries (`tarn_core::registries`): `/api/v1/registries` to create, list,
//! show and delete them, and `POST …/workspaces/{ws}/{collection}/{name}/share` to share an
//! asset version into one. A registry's assets and roles are reached as a workspace's, under
//! `/api/v1/workspaces/registry:<name>/…` (what `--registry-name` sends).

use crate::error::{DiagnosticView, ErrorBody};
use crate::views::{Resource, time};
use crate::{ApiResult, AppState, Body, Caller, List};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use tarn_core::registries::RegistryRow;
use utoipa::ToSchema;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/registries", get(list).post(create))
        .route("/api/v1/registries/{name}", get(show).delete(delete))
        .route(
            "/api/v1/workspaces/{workspace}/{collection}/{name}/share",
            post(share),
        )
}

/// A registry: models, components, environments and data every workspace may use.
#[derive(Serialize, ToSchema)]
pub struct Registry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What workspaces write to use an asset of it: `azureml://registries/<name>/…`.
    pub uri: String,
    /// The workspace its assets and roles are reached as (`--registry-name` sends this).
    pub workspace: String,
    pub created_at: String,
    pub spec: JsonValue,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<DiagnosticView>,
}

impl From<RegistryRow> for Registry {
    fn from(row: RegistryRow) -> Registry {
        let name = tarn_core::registries::shown_name(&row.name).to_string();
        Registry {
            uri: format!("azureml://registries/{name}"),
            description: row
                .spec
                .get("description")
                .and_then(JsonValue::as_str)
                .map(str::to_string),
            workspace: row.name,
            name,
            created_at: time(row.created_at),
            spec: row.spec,
            warnings: vec![],
        }
    }
}

#[utoipa::path(get, path = "/api/v1/registries", responses((status = 200, body = List<Registry>)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(t): State<AppState>,
    Caller(p): Caller,
) -> ApiResult<Json<List<Registry>>> {
    let value = t
        .registries
        .list_registries(&p)
        .await?
        .into_iter()
        .map(Registry::from)
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(post, path = "/api/v1/registries", request_body = Object, responses((status = 201, body = Registry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(t): State<AppState>,
    Caller(p): Caller,
    Body(spec): Body<JsonValue>,
) -> ApiResult<(StatusCode, Json<Registry>)> {
    let (row, warnings) = t.registries.create_registry(&p, &spec).await?;
    let mut view = Registry::from(row);
    view.warnings = warnings.iter().map(DiagnosticView::from).collect();
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/registries/{name}", params(("name" = String, Path)), responses((status = 200, body = Registry), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn show(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Registry>> {
    Ok(Json(t.registries.show_registry(&p, &name).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/registries/{name}", params(("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    t.registries.delete_registry(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `tarn model share`: which version, into which registry, under which name and version.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    pub version: String,
    pub registry_name: String,
    /// The name in the registry; the asset's own when absent.
    pub share_with_name: Option<String>,
    /// The version in the registry; the asset's own when absent.
    pub share_with_version: Option<String>,
}

/// Shares an asset version into a registry: its files are copied there, and it keeps where it
/// came from in its properties.
#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/{collection}/{name}/share", params(("workspace" = String, Path), ("collection" = crate::Collection, Path), ("name" = String, Path)), request_body = ShareRequest, responses((status = 201, body = Resource), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn share(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, collection, name)): Path<(String, String, String)>,
    Body(req): Body<ShareRequest>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    let kind = crate::collection_kind(&collection)?;
    let view = t
        .registries
        .share(
            &p,
            &ws,
            kind,
            &name,
            &req.version,
            &req.registry_name,
            req.share_with_name.as_deref(),
            req.share_with_version.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}
