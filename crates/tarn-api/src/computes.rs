//! Compute instance routes: start, stop, restart, logs, the state `show` adds, and the proxy
//! to an instance's JupyterLab at `/ws/{workspace}/computes/{name}/lab/…`. The proxy checks
//! Tarn's credentials (only the instance's user and Owners get through), swaps them for the
//! secret JupyterLab was started with (which never leaves the server), and passes HTTP and
//! websockets (kernels, terminals) both ways.

use crate::views::Resource;
use crate::{ApiResult, AppState, Caller};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tarn_core::computes::InstanceAction;
use utoipa::{IntoParams, ToSchema};

const BASE: &str = "/api/v1/workspaces/{workspace}/computes/{name}";
/// The header with which the proxy vouches for a request to JupyterLab (see `tarn_identity.py`).
const LAB_SECRET: &str = "x-tarn-lab-token";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{BASE}/start"), post(start))
        .route(&format!("{BASE}/stop"), post(stop))
        .route(&format!("{BASE}/restart"), post(restart))
        .route(&format!("{BASE}/logs"), get(logs))
        .route("/ws/{workspace}/computes/{name}/lab", any(lab))
        .route("/ws/{workspace}/computes/{name}/lab/", any(lab))
        .route("/ws/{workspace}/computes/{name}/lab/{*rest}", any(lab))
}

/// An application an instance serves (Azure ML's `services` of a compute instance).
#[derive(Serialize, ToSchema)]
pub struct ServiceView {
    pub display_name: String,
    pub endpoint_uri: String,
}

/// What `show` adds to a compute instance: its state and where its JupyterLab is.
pub fn add_state(t: &tarn_core::Tarn, workspace_id: &str, workspace: &str, r: &mut Resource) {
    if r.kind != "compute" || r.type_.as_deref() != Some("computeinstance") {
        return;
    }
    let status = t.computes.instance_status(workspace_id, &r.name);
    r.state = Some(status.as_ref().map_or("Stopped", |s| s.state).to_string());
    if let Some(s) = status {
        r.error = s.error;
        r.last_activity = s.last_activity;
        r.idle_seconds = s.idle_s;
    }
    r.services = Some(vec![ServiceView {
        display_name: "JupyterLab".into(),
        endpoint_uri: format!(
            "{}{}",
            t.config().public_url,
            tarn_core::computes::lab_path(workspace, &r.name)
        ),
    }]);
}

async fn act(
    t: &AppState,
    p: &tarn_core::Principal,
    ws: &str,
    name: &str,
    action: InstanceAction,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    t.computes
        .compute_instance_action(p, ws, name, action)
        .await?;
    let scope = tarn_core::Scope {
        workspace: ws,
        kind: tarn_spec::Kind::Compute,
        parent: None,
    };
    let view = t.resources.show_resource(p, scope, name, None).await?;
    let ws_id = view.row.key.workspace_id.clone();
    let mut resource: Resource = view.into();
    add_state(t, &ws_id, ws, &mut resource);
    Ok((StatusCode::ACCEPTED, Json(resource)))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/computes/{name}/start", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 202, body = Resource)), security(("bearer" = [])))]
pub async fn start(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    act(&t, &p, &ws, &name, InstanceAction::Start).await
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/computes/{name}/stop", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 202, body = Resource)), security(("bearer" = [])))]
pub async fn stop(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    act(&t, &p, &ws, &name, InstanceAction::Stop).await
}

#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/computes/{name}/restart", params(("workspace" = String, Path), ("name" = String, Path)), responses((status = 202, body = Resource)), security(("bearer" = [])))]
pub async fn restart(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    act(&t, &p, &ws, &name, InstanceAction::Restart).await
}

#[derive(Deserialize, IntoParams)]
pub struct LinesQuery {
    /// How many lines from the end (default 100).
    pub lines: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/computes/{name}/logs", params(("workspace" = String, Path), ("name" = String, Path), LinesQuery), responses((status = 200, content_type = "text/plain", body = String)), security(("bearer" = [])))]
pub async fn logs(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<LinesQuery>,
) -> ApiResult<String> {
    Ok(t.computes
        .instance_logs(&p, &ws, &name, q.lines.unwrap_or(100))
        .await?)
}

/// `/ws/{workspace}/computes/{name}/lab/…`: the instance's JupyterLab, for its user.
pub async fn lab(
    State(t): State<AppState>,
    caller: Result<Caller, crate::ApiError>,
    Path(params): Path<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (ws, name) = (get("workspace"), get("name"));
    // API clients send a bearer token; browsers have the studio's session cookie.
    // A page load from a browser without a session goes to the login page; others get 401.
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let bearer = req.headers().contains_key(header::AUTHORIZATION);
    let p = match caller {
        Ok(Caller(p)) => p,
        Err(e) => match crate::studio::session_id(req.headers()) {
            Some(id) if !bearer => match t.users.session(&id).await {
                Ok(s) => s.principal,
                Err(_) if browser => return login_redirect(&req),
                Err(_) => return e.into_response(),
            },
            None if browser && !bearer => return login_redirect(&req),
            _ => return e.into_response(),
        },
    };
    let target = match t.computes.open_instance(&p, &ws, &name).await {
        Ok(target) => target,
        Err(e) => return crate::ApiError::from(e).into_response(),
    };
    match proxy(req, target.port, &target.token).await {
        Ok(resp) => resp,
        Err(message) => (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({"error": {"code": "BadGateway", "message": format!("compute instance {name:?}: {message}")}})),
        )
            .into_response(),
    }
}

fn login_redirect(req: &Request) -> Response {
    let next = req.uri().path_and_query().map_or("/", |p| p.as_str());
    axum::response::Redirect::to(&format!("/login?next={}", crate::studio::urlencode(next)))
        .into_response()
}

/// Sends a request to JupyterLab with its token instead of the caller's credentials; an
/// upgrade (a websocket) is joined to the client's connection once both sides agree.
async fn proxy(mut req: Request, port: u16, token: &str) -> Result<Response, String> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let client_upgrade = upgrade
        .then(|| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let (parts, body) = req.into_parts();
    let mut builder = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in &parts.headers {
        // The caller's Tarn credentials stay here; JupyterLab gets its own token.
        if k == header::AUTHORIZATION || k.as_str() == LAB_SECRET {
            continue;
        }
        if k == header::COOKIE {
            // Jupyter's own cookies go through; the studio's session stays here.
            let kept: Vec<&str> = v
                .to_str()
                .unwrap_or("")
                .split(';')
                .map(str::trim)
                .filter(|c| !c.starts_with("tarn_session="))
                .collect();
            if !kept.is_empty() {
                builder = builder.header(k, kept.join("; "));
            }
            continue;
        }
        builder = builder.header(k, v);
    }
    let secret = HeaderValue::from_str(token).map_err(|e| e.to_string())?;
    let upstream = builder
        .header(LAB_SECRET, secret)
        .body(body)
        .map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("JupyterLab does not answer: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let resp = send
        .send_request(upstream)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let (head, body) = resp.into_parts();
        let mut upstream_resp = axum::http::Response::from_parts(head.clone(), body);
        let server_upgrade = hyper::upgrade::on(&mut upstream_resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(server)) = (client_upgrade.await, server_upgrade.await) else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut server = TokioIo::new(server);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        return Ok(Response::from_parts(head, Body::empty()));
    }
    Ok(resp.map(Body::new))
}
