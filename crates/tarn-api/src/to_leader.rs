//! Requests only the leader can answer, sent on to it. Online deployments' replicas and
//! compute instances' JupyterLabs run on the server that leads (their controllers run there),
//! and their live state (ready replicas, the routing table, an instance's port and token) is
//! in its memory. So a follower hands every request about online endpoints and computes, and
//! every scoring request, to the leader's advertised URL whole: method, path, headers, the body
//! streamed both ways, a websocket joined once both sides agree. The leader checks the caller
//! as it checks any request. A request already forwarded is answered where it lands, and with
//! no leader known (a failover under way) the follower answers it itself.

use crate::AppState;
use crate::error::error_chain;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use hyper_util::rt::TokioIo;
use std::sync::LazyLock;

/// Set on a forwarded request: the id of the server that sent it on.
pub const FORWARDED: &str = "x-tarn-forwarded-by";

static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client")
});

/// Whether the answer to a request on `path` lives with the leader: scoring, and the API's and
/// studio's online endpoints and computes (`/api/v1/workspaces/{ws}/…` and `/ws/{ws}/…`).
pub fn leader_only(path: &str) -> bool {
    if path.starts_with("/endpoints/") {
        return true;
    }
    let in_workspace = path
        .strip_prefix("/api/v1/workspaces/")
        .or_else(|| path.strip_prefix("/ws/"))
        .and_then(|rest| rest.split('/').nth(1));
    matches!(
        in_workspace,
        Some("online-endpoints" | "endpoints" | "computes")
    )
}

/// The middleware: sends leader-only requests on when this server follows.
pub async fn layer(State(t): State<AppState>, req: Request, next: Next) -> Response {
    if !leader_only(req.uri().path()) || req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let Some(leader) = t.leader_url() else {
        return next.run(req).await;
    };
    match forward(t.server_id(), &leader, req).await {
        Ok(resp) => resp,
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            axum::Json(serde_json::json!({"error": {
                "code": "LeaderUnavailable",
                "message": format!("the server that runs online endpoints and compute instances ({leader}) did not answer: {message}; try again in a few seconds"),
            }})),
        )
            .into_response(),
    }
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), less those a
/// websocket upgrade needs.
const HOP_BY_HOP: &[HeaderName] = &[
    header::HOST,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
];

async fn forward(me: &str, leader: &str, mut req: Request) -> Result<Response, String> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let client_upgrade = upgrade
        .then(|| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let (parts, body) = req.into_parts();
    let url = format!(
        "{leader}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers;
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    headers.insert(
        FORWARDED,
        HeaderValue::from_str(me).map_err(|e| e.to_string())?,
    );
    let resp = CLIENT
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for (k, v) in resp.headers() {
        if k != header::TRANSFER_ENCODING && (upgrade || k != header::CONNECTION) {
            out = out.header(k, v);
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let server = resp.upgrade().await.map_err(|e| error_chain(&e))?;
        tokio::spawn(async move {
            let Ok(client) = client_upgrade.await else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut server = server;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        return out.body(Body::empty()).map_err(|e| e.to_string());
    }
    out.body(Body::from_stream(
        resp.bytes_stream().map_err(std::io::Error::other),
    ))
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::leader_only;

    #[test]
    fn only_endpoints_computes_and_scoring_go_to_the_leader() {
        for path in [
            "/endpoints/fraud/score",
            "/api/v1/workspaces/default/online-endpoints/fraud/deployments/blue/logs",
            "/api/v1/workspaces/default/online-endpoints",
            "/api/v1/workspaces/default/computes/nb/start",
            "/ws/default/computes/nb/lab/api/kernels",
            "/ws/default/endpoints/fraud",
        ] {
            assert!(leader_only(path), "{path}");
        }
        for path in [
            "/api/v1/workspaces/default/jobs/j1",
            "/api/v1/workspaces/computes/jobs",
            "/ws/default/mlflow/api/2.0/mlflow/runs/search",
            "/ws/default/jobs",
            "/api/v1/health",
            "/metrics",
        ] {
            assert!(!leader_only(path), "{path}");
        }
    }
}
