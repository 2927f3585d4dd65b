//! `tarn-api`: the HTTP surface. Thin axum handlers: extract the caller and the request,
//! call one `tarn-core` function, convert the result to a wire type. The OpenAPI document is
//! generated from these handlers and committed (`docs/openapi.json`).

mod audit;
mod backups;
pub mod bundle;
pub mod computes;
pub mod endpoints;
pub mod error;
mod identity;
pub mod jobs;
pub mod mlflow;
pub mod mlflow_schema;
mod otlp;
pub mod registries;
pub mod router;
pub mod schedules;
pub mod studio;
pub mod to_leader;
mod upstream;
pub mod views;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use error::{ApiError, Code, ErrorBody};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value as JsonValue;
use std::sync::Arc;
use tarn_core::{Assignee, Principal, Scope, Tarn};
use tarn_spec::Kind;
use utoipa::OpenApi;
use views::*;

/// Requests larger than this are refused with 413 before they are parsed.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

type AppState = Arc<Tarn>;
type ApiResult<T> = Result<T, ApiError>;

/// The credential in `Authorization: Bearer <token>` (the scheme's case ignored, as MLflow's
/// clients differ).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        Ok(Caller(
            state.users.authenticate(bearer(&parts.headers)).await?,
        ))
    }
}

/// A JSON body whose rejections use the API's error format.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, ApiError> {
        // Refuse from the declared length, before reading a byte of an oversize body.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            ));
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    Code::PayloadTooLarge,
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                ))
            }
            Err(e) => Err(ApiError::new(Code::BadRequest, e.body_text())),
        }
    }
}

/// Merges repeated slashes in a request's path before it is routed, as MLflow's server does:
/// a tracking URI written with a trailing slash makes the client ask for `…/mlflow//api/2.0/…`.
/// Tarn's own paths never have empty segments, so nothing else changes meaning.
pub async fn merge_slashes(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    if uri.path().contains("//") {
        let mut path = String::with_capacity(uri.path().len());
        for c in uri.path().chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        let with_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(pq) = with_query.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(merged) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = merged;
            }
        }
    }
    req
}

/// The whole router: API, and the studio's place at `/`.
pub fn router(state: AppState) -> Router {
    let ws = "/api/v1/workspaces/{workspace}";
    Router::new()
        .merge(studio::routes())
        .route("/api/v1/health", get(health))
        .route("/api/v1/runner/binary", get(runner_binary))
        .route("/api/v1/server/status", get(server_status))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route(
            "/api/v1/workspaces",
            get(list_workspaces).post(create_workspace),
        )
        .route(
            ws,
            get(show_workspace)
                .put(update_workspace)
                .delete(delete_workspace),
        )
        .route(
            &format!("{ws}/role-assignments"),
            get(list_roles).put(assign_role),
        )
        .route(
            &format!("{ws}/role-assignments/{{user}}"),
            axum::routing::delete(remove_role),
        )
        .route(
            &format!("{ws}/group-role-assignments/{{group}}"),
            axum::routing::delete(remove_group_role),
        )
        .route(
            &format!("{ws}/{{collection}}"),
            get(list_resources).post(create_resource),
        )
        .route(
            &format!("{ws}/{{collection}}/{{name}}"),
            get(show_resource)
                .put(update_resource)
                .delete(delete_resource),
        )
        .route(
            &format!("{ws}/{{collection}}/{{name}}/archive"),
            post(archive_resource),
        )
        .route(
            &format!("{ws}/{{collection}}/{{name}}/restore"),
            post(restore_resource),
        )
        .route(
            &format!("{ws}/{{collection}}/{{name}}/list-secrets"),
            post(list_secrets),
        )
        .route(
            &format!("{ws}/{{collection}}/{{name}}/paths/{{*path}}"),
            get(download_file)
                .put(upload_file)
                .head(stat_file)
                .delete(delete_file),
        )
        .route(&format!("{ws}/{{collection}}/{{name}}/ls"), get(list_files))
        .route(
            &format!("{ws}/{{collection}}/{{name}}/bundle"),
            post(upload_bundle).layer(DefaultBodyLimit::max(
                bundle::MAX_BUNDLE_BYTES + 1024 * 1024,
            )),
        )
        .route(
            &format!("{ws}/{{collection}}/{{name}}/bundle-get"),
            post(download_bundle),
        )
        .route(
            &format!("{ws}/{{collection}}/{{endpoint}}/deployments"),
            get(list_deployments).post(create_deployment),
        )
        .route(
            &format!("{ws}/{{collection}}/{{endpoint}}/deployments/{{name}}"),
            get(show_deployment)
                .put(update_deployment)
                .delete(delete_deployment),
        )
        .merge(identity::routes())
        .merge(audit::routes())
        .merge(backups::routes())
        .merge(schedules::routes())
        .merge(registries::routes())
        .merge(jobs::routes())
        .merge(endpoints::routes())
        .merge(computes::routes())
        .merge(mlflow::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The data plane: scoring requests stream and have their own size limit.
        .route(
            "/endpoints/{name}/score",
            axum::routing::any(router::score).layer(DefaultBodyLimit::disable()),
        )
        .route("/metrics", get(router::metrics))
        // Inside `to_leader`: a forwarded call is audited where it is answered.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            to_leader::layer,
        ))
        .with_state(state)
}

/// A resource for the wire, with what the controllers know of it (endpoints' state).
fn with_state(t: &Tarn, workspace: &str, view: tarn_core::ResourceView) -> Resource {
    let ws_id = view.row.key.workspace_id.clone();
    let mut resource: Resource = view.into();
    endpoints::add_state(t, &ws_id, &mut resource);
    computes::add_state(t, &ws_id, workspace, &mut resource);
    resource
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route")
}

#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = Health)))]
async fn health(State(t): State<AppState>) -> Json<Health> {
    Json(health_of(&t))
}

fn health_of(t: &AppState) -> Health {
    let iso = &t.config().isolation;
    Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        isolation: views::Isolation {
            isolated: iso.is_isolated(),
            summary: iso.summary(),
            mechanisms: iso.mechanisms().iter().map(|m| m.to_string()).collect(),
        },
    }
}

/// The health answer, the servers on this store (which one leads: it runs the background
/// tasks) and the background tasks: when each last ran, how long it took, its errors and how
/// far behind it is. For administrators (errors name workspaces and engines).
#[utoipa::path(get, path = "/api/v1/server/status", responses((status = 200, body = views::ServerStatus), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn server_status(
    State(t): State<AppState>,
    Caller(p): Caller,
) -> ApiResult<Json<views::ServerStatus>> {
    if !p.is_admin {
        return Err(ApiError::new(
            Code::Forbidden,
            "only administrators see the server's background tasks",
        ));
    }
    let (reports, started) = t.task_reports();
    let now = tarn_core::now_ms();
    let tasks = reports
        .iter()
        .map(|r| views::TaskView {
            name: r.name.to_string(),
            interval_s: r.interval.as_secs_f64(),
            passes: r.passes,
            errors: r.errors,
            last_pass: r.last_pass_at.map(views::time),
            last_pass_ms: r.last_pass_duration.as_secs_f64() * 1000.0,
            lag_s: r.lag(now, started).as_secs_f64(),
            last_error: r.last_error.clone(),
            last_error_at: r.last_error_at.map(views::time),
        })
        .collect();
    let servers = t
        .servers()
        .await?
        .into_iter()
        .map(|s| views::ServerView {
            id: s.id,
            url: s.url,
            host: s.host,
            pid: s.pid,
            version: s.version,
            started_at: views::time(s.started_at),
            lag_s: s.lag.as_secs_f64(),
            leader: s.leader,
            this: s.this,
        })
        .collect();
    Ok(Json(views::ServerStatus {
        health: health_of(&t),
        server_id: t.server_id().to_string(),
        leader: t.leads(),
        servers,
        tasks,
    }))
}

/// The `tarn` binary that runs jobs, for nodes of an engine that do not have it: runners
/// fetch it once per version (its SHA-256 in `x-tarn-sha256`) and check it.
#[utoipa::path(get, path = "/api/v1/runner/binary", responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn runner_binary(
    State(t): State<AppState>,
    Caller(_): Caller,
) -> ApiResult<axum::response::Response> {
    let program = t.config().runner_program.clone();
    let internal = |e: std::io::Error| ApiError::from(tarn_core::Error::Io(e));
    let sha = tarn_core::process::runner_binary_sha(&program)
        .await
        .map_err(internal)?;
    let file = tokio::fs::File::open(tarn_core::process::own_binary(&program))
        .await
        .map_err(internal)?;
    let size = file.metadata().await.map_err(internal)?.len();
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut response = axum::response::Response::new(axum::body::Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("a valid header"),
    );
    headers.insert(header::CONTENT_LENGTH, size.into());
    headers.insert(SHA256_HEADER, sha.parse().expect("hex is a valid header"));
    Ok(response)
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
}

/// The OpenAPI document, pretty-printed (the same text as `docs/openapi.json`).
pub fn openapi_document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

// --- workspaces ---------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteWorkspaceQuery {
    /// Also delete the workspace's storage (datastore directories).
    #[serde(default)]
    all_resources: bool,
}

#[utoipa::path(get, path = "/api/v1/workspaces", responses((status = 200, body = List<Workspace>)), security(("bearer" = [])))]
async fn list_workspaces(
    State(t): State<AppState>,
    Caller(p): Caller,
) -> ApiResult<Json<List<Workspace>>> {
    let value = t
        .workspaces
        .list_workspaces(&p)
        .await?
        .into_iter()
        .map(Workspace::from)
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(post, path = "/api/v1/workspaces", request_body = Object, responses((status = 201, body = Workspace), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn create_workspace(
    State(t): State<AppState>,
    Caller(p): Caller,
    Body(spec): Body<JsonValue>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let (view, warnings) = t.workspaces.create_workspace(&p, &spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(Workspace::from(view).with_warnings(&warnings)),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}", params(("workspace" = String, Path)), responses((status = 200, body = Workspace), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn show_workspace(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Workspace>> {
    Ok(Json(t.workspaces.show_workspace(&p, &ws).await?.into()))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{workspace}", params(("workspace" = String, Path)), request_body = Object, responses((status = 200, body = Workspace)), security(("bearer" = [])))]
async fn update_workspace(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    Body(spec): Body<JsonValue>,
) -> ApiResult<Json<Workspace>> {
    let (view, warnings) = t.workspaces.update_workspace(&p, &ws, &spec).await?;
    Ok(Json(Workspace::from(view).with_warnings(&warnings)))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}", params(("workspace" = String, Path), DeleteWorkspaceQuery), responses((status = 204)), security(("bearer" = [])))]
async fn delete_workspace(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    Query(q): Query<DeleteWorkspaceQuery>,
) -> ApiResult<StatusCode> {
    t.workspaces
        .delete_workspace(&p, &ws, q.all_resources)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- role assignments, users, tokens --------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/role-assignments", params(("workspace" = String, Path)), responses((status = 200, body = List<RoleAssignment>)), security(("bearer" = [])))]
async fn list_roles(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<List<RoleAssignment>>> {
    let value = t
        .users
        .list_roles(&p, &ws)
        .await?
        .into_iter()
        .map(RoleAssignment::from)
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{workspace}/role-assignments", params(("workspace" = String, Path)), request_body = AssignRole, responses((status = 200, body = RoleAssignment)), security(("bearer" = [])))]
async fn assign_role(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(ws): Path<String>,
    Body(body): Body<AssignRole>,
) -> ApiResult<Json<RoleAssignment>> {
    let to = match (&body.user, &body.group) {
        (Some(user), None) => Assignee::User(user),
        (None, Some(group)) => Assignee::Group(group),
        _ => {
            return Err(tarn_core::Error::invalid(
                "user",
                "name either a user or a group to give the role to",
            )
            .into());
        }
    };
    Ok(Json(
        t.users.assign_role(&p, &ws, to, &body.role).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}/role-assignments/{user}", params(("workspace" = String, Path), ("user" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
async fn remove_role(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    t.users.remove_role(&p, &ws, Assignee::User(&user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}/group-role-assignments/{group}", params(("workspace" = String, Path), ("group" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
async fn remove_group_role(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, group)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    t.users
        .remove_role(&p, &ws, Assignee::Group(&group))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- resources --------------------------------------------------------------------------------

/// The kind a top-level collection segment names (deployments are only reachable under
/// their endpoint).
fn collection_kind(collection: &str) -> ApiResult<Kind> {
    Kind::from_collection(collection)
        .filter(|k| Kind::RESOURCES.contains(k) && k.parent().is_none())
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no such collection {collection:?}")))
}

/// The scope of a top-level collection in a workspace.
fn top_scope<'a>(workspace: &'a str, collection: &str) -> ApiResult<Scope<'a>> {
    Ok(Scope {
        workspace,
        kind: collection_kind(collection)?,
        parent: None,
    })
}

/// The scope of an endpoint's deployments.
fn deployment_scope<'a>(
    workspace: &'a str,
    collection: &str,
    endpoint: &'a str,
) -> ApiResult<Scope<'a>> {
    Ok(Scope {
        workspace,
        kind: deployment_kind(collection)?,
        parent: Some(endpoint),
    })
}

/// The deployment kind under an endpoint collection.
fn deployment_kind(collection: &str) -> ApiResult<Kind> {
    match collection_kind(collection)? {
        Kind::OnlineEndpoint => Ok(Kind::OnlineDeployment),
        Kind::BatchEndpoint => Ok(Kind::BatchDeployment),
        _ => Err(ApiError::new(
            Code::NotFound,
            format!("{collection:?} has no deployments"),
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only versions of this asset name.
    name: Option<String>,
    /// Include archived versions.
    #[serde(default)]
    include_archived: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WriteQuery {
    /// An asset version (updates); the latest when omitted.
    version: Option<String>,
    /// Store a datastore without checking that its storage answers.
    #[serde(default)]
    skip_check: bool,
}

impl WriteQuery {
    fn options(&self) -> tarn_core::WriteOptions {
        tarn_core::WriteOptions {
            skip_storage_check: self.skip_check,
            ..Default::default()
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionQuery {
    /// An asset version; the latest when omitted.
    version: Option<String>,
}

/// The collections of resources in a workspace (`{collection}` in the paths below): the
/// OpenAPI document lists them, so a client or a fuzzer knows which exist.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)] // a schema only: handlers read the segment as `Kind::from_collection`
enum Collection {
    Computes,
    Datastores,
    Data,
    Environments,
    Components,
    Models,
    OnlineEndpoints,
    BatchEndpoints,
    Schedules,
    Connections,
}

/// The collections of endpoints, which hold deployments.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)] // a schema only
enum EndpointCollection {
    OnlineEndpoints,
    BatchEndpoints,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/{collection}", params(("workspace" = String, Path), ("collection" = Collection, Path), ListQuery), responses((status = 200, body = List<Resource>)), security(("bearer" = [])))]
async fn list_resources(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<List<Resource>>> {
    let scope = top_scope(&ws, &c)?;
    let mut value = vec![];
    for v in t
        .resources
        .list_resources(&p, scope, q.name.as_deref(), q.include_archived)
        .await?
    {
        let row = (scope.kind == Kind::Schedule).then(|| v.row.clone());
        let mut resource = with_state(&t, &ws, v);
        if let Some(row) = row {
            schedules::add_status(&t, &p, &ws, &mut resource, &row, false).await?;
        }
        value.push(resource);
    }
    Ok(Json(List { value }))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/{collection}", params(("workspace" = String, Path), ("collection" = Collection, Path), WriteQuery), request_body = Object, responses((status = 201, body = Resource), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
async fn create_resource(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c)): Path<(String, String)>,
    Query(q): Query<WriteQuery>,
    Body(spec): Body<JsonValue>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    let scope = top_scope(&ws, &c)?;
    Ok((
        StatusCode::CREATED,
        Json(
            t.resources
                .create_resource(&p, scope, &spec, q.options())
                .await?
                .into(),
        ),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/{collection}/{name}", params(("workspace" = String, Path), ("collection" = Collection, Path), ("name" = String, Path), VersionQuery), responses((status = 200, body = Resource), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn show_resource(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Resource>> {
    let scope = top_scope(&ws, &c)?;
    let view = t
        .resources
        .show_resource(&p, scope, &name, q.version.as_deref())
        .await?;
    let row = (scope.kind == Kind::Schedule).then(|| view.row.clone());
    let mut resource = with_state(&t, &ws, view);
    if let Some(row) = row {
        schedules::add_status(&t, &p, &ws, &mut resource, &row, true).await?;
    }
    if scope.kind == Kind::Compute {
        match t.jobs.compute_nodes(&p, &ws, &name).await {
            Ok(nodes) => {
                resource.nodes = Some(nodes.into_iter().map(jobs::ComputeNode::from).collect())
            }
            // The compute is shown even when its engine does not answer, with why.
            Err(e @ tarn_core::Error::Engine { .. }) => resource.error = Some(e.to_string()),
            Err(e) => return Err(e.into()),
        }
        if resource.error.is_none() {
            match t.jobs.compute_instance_types(&p, &ws, &name).await {
                Ok(types) if types.is_empty() => {}
                Ok(types) => {
                    resource.instance_types = Some(types.into_iter().map(Into::into).collect())
                }
                Err(e @ tarn_core::Error::Engine { .. }) => resource.error = Some(e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Json(resource))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{workspace}/{collection}/{name}", params(("workspace" = String, Path), ("collection" = Collection, Path), ("name" = String, Path), WriteQuery), request_body = Object, responses((status = 200, body = Resource)), security(("bearer" = [])))]
async fn update_resource(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<WriteQuery>,
    Body(spec): Body<JsonValue>,
) -> ApiResult<Json<Resource>> {
    let scope = top_scope(&ws, &c)?;
    Ok(Json(
        t.resources
            .update_resource(&p, scope, &name, q.version.as_deref(), &spec, q.options())
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}/{collection}/{name}", params(("workspace" = String, Path), ("collection" = Collection, Path), ("name" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
async fn delete_resource(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let scope = top_scope(&ws, &c)?;
    t.resources.delete_resource(&p, scope, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/{collection}/{name}/archive", params(("workspace" = String, Path), ("collection" = Collection, Path), ("name" = String, Path), VersionQuery), responses((status = 204)), security(("bearer" = [])))]
async fn archive_resource(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<StatusCode> {
    let scope = top_scope(&ws, &c)?;
    t.resources
        .set_archived(&p, scope, &name, q.version.as_deref(), true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/{collection}/{name}/restore", params(("workspace" = String, Path), ("collection" = Collection, Path), ("name" = String, Path), VersionQuery), responses((status = 204)), security(("bearer" = [])))]
async fn restore_resource(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<StatusCode> {
    let scope = top_scope(&ws, &c)?;
    t.resources
        .set_archived(&p, scope, &name, q.version.as_deref(), false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/{collection}/{name}/list-secrets", params(("workspace" = String, Path), ("collection" = Collection, Path), ("name" = String, Path), VersionQuery), responses((status = 200, body = Resource), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_secrets(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Resource>> {
    let scope = top_scope(&ws, &c)?;
    Ok(Json(
        t.resources
            .show_secrets(&p, scope, &name, q.version.as_deref())
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/{collection}/{endpoint}/deployments", params(("workspace" = String, Path), ("collection" = EndpointCollection, Path), ("endpoint" = String, Path)), responses((status = 200, body = List<Resource>)), security(("bearer" = [])))]
async fn list_deployments(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, ep)): Path<(String, String, String)>,
) -> ApiResult<Json<List<Resource>>> {
    let scope = deployment_scope(&ws, &c, &ep)?;
    let value = t
        .resources
        .list_resources(&p, scope, None, false)
        .await?
        .into_iter()
        .map(|v| with_state(&t, &ws, v))
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/{collection}/{endpoint}/deployments", params(("workspace" = String, Path), ("collection" = EndpointCollection, Path), ("endpoint" = String, Path), WriteQuery), request_body = Object, responses((status = 201, body = Resource)), security(("bearer" = [])))]
async fn create_deployment(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, ep)): Path<(String, String, String)>,
    Query(q): Query<WriteQuery>,
    Body(spec): Body<JsonValue>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    let scope = deployment_scope(&ws, &c, &ep)?;
    Ok((
        StatusCode::CREATED,
        Json(
            t.resources
                .create_resource(&p, scope, &spec, q.options())
                .await?
                .into(),
        ),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/{collection}/{endpoint}/deployments/{name}", params(("workspace" = String, Path), ("collection" = EndpointCollection, Path), ("endpoint" = String, Path), ("name" = String, Path)), responses((status = 200, body = Resource)), security(("bearer" = [])))]
async fn show_deployment(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, ep, name)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Resource>> {
    let scope = deployment_scope(&ws, &c, &ep)?;
    Ok(Json(with_state(
        &t,
        &ws,
        t.resources.show_resource(&p, scope, &name, None).await?,
    )))
}

#[utoipa::path(put, path = "/api/v1/workspaces/{workspace}/{collection}/{endpoint}/deployments/{name}", params(("workspace" = String, Path), ("collection" = EndpointCollection, Path), ("endpoint" = String, Path), ("name" = String, Path), WriteQuery), request_body = Object, responses((status = 200, body = Resource)), security(("bearer" = [])))]
async fn update_deployment(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, ep, name)): Path<(String, String, String, String)>,
    Query(q): Query<WriteQuery>,
    Body(spec): Body<JsonValue>,
) -> ApiResult<Json<Resource>> {
    let scope = deployment_scope(&ws, &c, &ep)?;
    Ok(Json(
        t.resources
            .update_resource(&p, scope, &name, None, &spec, q.options())
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}/{collection}/{endpoint}/deployments/{name}", params(("workspace" = String, Path), ("collection" = EndpointCollection, Path), ("endpoint" = String, Path), ("name" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
async fn delete_deployment(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, ep, name)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let scope = deployment_scope(&ws, &c, &ep)?;
    t.resources.delete_resource(&p, scope, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- datastore files ---------------------------------------------------------------------------

/// The header carrying a file's hex SHA-256, on uploads (to verify) and downloads.
pub const SHA256_HEADER: &str = "x-tarn-sha256";

fn datastores_only(collection: &str) -> ApiResult<()> {
    if collection == Kind::Datastore.collection() {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NotFound,
            format!("{collection:?} holds no files"),
        ))
    }
}

#[utoipa::path(put, path = "/api/v1/workspaces/{workspace}/datastores/{name}/paths/{path}", params(("workspace" = String, Path), ("name" = String, Path), ("path" = String, Path, description = "a file path inside the datastore"), ("x-tarn-sha256" = Option<String>, Header, description = "hex SHA-256 of the body; a mismatch fails the upload")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, body = FileInfo), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn upload_file(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name, path)): Path<(String, String, String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<FileInfo>)> {
    datastores_only(&c)?;
    let sha = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let info = t
        .storage
        .upload(
            &p,
            &ws,
            &name,
            &path,
            body.into_data_stream(),
            sha.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(FileInfo {
            path,
            size: info.size,
            sha256: info.sha256,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/datastores/{name}/paths/{path}", params(("workspace" = String, Path), ("name" = String, Path), ("path" = String, Path)), responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn download_file(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name, path)): Path<(String, String, String, String)>,
) -> ApiResult<axum::response::Response> {
    datastores_only(&c)?;
    let (info, stream) = t.storage.download(&p, &ws, &name, &path).await?;
    let mut response = axum::response::Response::new(axum::body::Body::from_stream(stream));
    file_headers(response.headers_mut(), &info);
    Ok(response)
}

fn file_headers(headers: &mut axum::http::HeaderMap, info: &tarn_core::ObjectInfo) {
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("a valid header"),
    );
    headers.insert(header::CONTENT_LENGTH, info.size.into());
    if let Some(sha) = info.sha256.as_deref().and_then(|s| s.parse().ok()) {
        headers.insert(SHA256_HEADER, sha);
    }
}

#[utoipa::path(head, path = "/api/v1/workspaces/{workspace}/datastores/{name}/paths/{path}", params(("workspace" = String, Path), ("name" = String, Path), ("path" = String, Path)), responses((status = 200), (status = 404)), security(("bearer" = [])))]
async fn stat_file(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name, path)): Path<(String, String, String, String)>,
) -> ApiResult<axum::response::Response> {
    datastores_only(&c)?;
    match t.storage.stat(&p, &ws, &name, &path).await? {
        Some(info) => {
            let mut response = axum::response::Response::new(axum::body::Body::empty());
            file_headers(response.headers_mut(), &info);
            Ok(response)
        }
        None => Err(ApiError::new(
            Code::NotFound,
            format!("{path:?} not found in datastore {name:?}"),
        )),
    }
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}/datastores/{name}/paths/{path}", params(("workspace" = String, Path), ("name" = String, Path), ("path" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
async fn delete_file(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name, path)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    datastores_only(&c)?;
    t.storage.delete_path(&p, &ws, &name, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListFilesQuery {
    /// The folder to list (the datastore's root when omitted).
    #[serde(default)]
    path: String,
    /// Every file below the folder, instead of its files and sub-folders.
    #[serde(default)]
    recursive: bool,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/datastores/{name}/ls", params(("workspace" = String, Path), ("name" = String, Path), ListFilesQuery), responses((status = 200, body = FileListing)), security(("bearer" = [])))]
async fn list_files(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<ListFilesQuery>,
) -> ApiResult<Json<FileListing>> {
    datastores_only(&c)?;
    Ok(Json(
        t.storage
            .list_paths(&p, &ws, &name, &q.path, q.recursive)
            .await?
            .into(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BundleQuery {
    /// The folder the bundle's paths are relative to.
    #[serde(default)]
    dest: String,
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/datastores/{name}/bundle", params(("workspace" = String, Path), ("name" = String, Path), BundleQuery), request_body(content = Vec<u8>, content_type = "application/x-tarn-bundle", description = "many small files; see tarn_api::bundle"), responses((status = 201, body = List<FileInfo>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
async fn upload_bundle(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Query(q): Query<BundleQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<List<FileInfo>>)> {
    datastores_only(&c)?;
    let entries =
        bundle::parse(&body).map_err(|e| ApiError::new(Code::BadRequest, e.to_string()))?;
    if entries.len() > bundle::MAX_BUNDLE_FILES {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("a bundle holds at most {} files", bundle::MAX_BUNDLE_FILES),
        ));
    }
    let files = entries
        .into_iter()
        .map(|(h, data)| (h.path, data, h.sha256))
        .collect();
    let stored = t
        .storage
        .upload_many(&p, &ws, &name, &q.dest, files)
        .await?;
    let value = stored
        .into_iter()
        .map(|(path, info)| FileInfo {
            path,
            size: info.size,
            sha256: info.sha256,
        })
        .collect();
    Ok((StatusCode::CREATED, Json(List { value })))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/datastores/{name}/bundle-get", params(("workspace" = String, Path), ("name" = String, Path)), request_body = BundleRequest, responses((status = 200, content_type = "application/x-tarn-bundle", body = Vec<u8>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
async fn download_bundle(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, c, name)): Path<(String, String, String)>,
    Body(req): Body<BundleRequest>,
) -> ApiResult<axum::response::Response> {
    datastores_only(&c)?;
    if req.paths.len() > bundle::MAX_BUNDLE_FILES {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("a bundle holds at most {} files", bundle::MAX_BUNDLE_FILES),
        ));
    }
    let files = t.storage.download_many(&p, &ws, &name, &req.paths).await?;
    let total: u64 = files.iter().map(|(_, info, _)| info.size).sum();
    if total > bundle::MAX_BUNDLE_BYTES as u64 {
        return Err(ApiError::new(
            Code::BadRequest,
            format!(
                "the files exceed a bundle's {} bytes; ask for fewer",
                bundle::MAX_BUNDLE_BYTES
            ),
        ));
    }
    let mut out = bytes::BytesMut::with_capacity(total as usize + files.len() * 128);
    for (path, info, data) in &files {
        bundle::put_entry(
            &mut out,
            &bundle::EntryHeader {
                path: path.clone(),
                size: info.size,
                sha256: info.sha256.clone(),
            },
            data,
        );
    }
    bundle::finish(&mut out);
    let mut response = axum::response::Response::new(axum::body::Body::from(out.freeze()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/x-tarn-bundle".parse().expect("a valid header"),
    );
    Ok(response)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tarn API", description = "Tarn's resource API. Every call but /api/v1/health needs `Authorization: Bearer <token>`.", license(name = "Apache-2.0")),
    paths(
        health, server_status, runner_binary, list_workspaces, create_workspace, show_workspace, update_workspace, delete_workspace,
        list_roles, assign_role, remove_role, remove_group_role,
        identity::list_users, identity::create_user, identity::show_user, identity::disable_user,
        identity::enable_user, identity::delete_user, identity::list_tokens, identity::create_token,
        identity::revoke_token, identity::list_role_definitions, identity::create_role_definition,
        identity::show_role_definition, identity::delete_role_definition, identity::login_options,
        identity::device_begin, identity::device_poll, audit::list, backups::create,
        list_resources, create_resource, show_resource, update_resource, delete_resource,
        archive_resource, restore_resource, list_secrets,
        list_deployments, create_deployment, show_deployment, update_deployment, delete_deployment,
        upload_file, download_file, stat_file, delete_file, list_files, upload_bundle, download_bundle,
        jobs::create_job, jobs::list_jobs, jobs::show_job, jobs::cancel_job, jobs::archive_job,
        jobs::restore_job, jobs::read_log, jobs::runner_plan, jobs::runner_status, jobs::runner_log,
        jobs::list_nodes,
        endpoints::get_credentials, endpoints::regenerate_keys, endpoints::deployment_logs,
        endpoints::invoke_batch, endpoints::batch_jobs,
        computes::start, computes::stop, computes::restart, computes::logs,
        schedules::enable, schedules::disable,
        registries::list, registries::create, registries::show, registries::delete, registries::share,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, error::DiagnosticView, Collection, EndpointCollection)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[cfg(test)]
mod tests {
    /// The committed document is what the code generates. To refresh it after changing the API:
    /// `TARN_UPDATE_OPENAPI=1 cargo test -p tarn-api`.
    #[test]
    fn committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = super::openapi_document();
        if std::env::var_os("TARN_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run `TARN_UPDATE_OPENAPI=1 cargo test -p tarn-api`"
        );
    }
}
