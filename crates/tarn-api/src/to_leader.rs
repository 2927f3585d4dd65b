//! Requests only the leader can answer, sent on to it. Online deployments' replicas and
//! compute instances' JupyterLabs run on the server that leads (their controllers run there),
//! and their live state (ready replicas, the routing table, an instance's port and token) is
//! in its memory. So a follower hands every request about online endpoints and computes, and
//! every scoring request, to the leader's advertised URL whole: method, path, headers, the body
//! streamed both ways, a websocket joined once both sides agree. The leader checks the caller
//! as it checks any request. A request already forwarded is answered where it lands; with no
//! leader known, or one that cannot be reached (it died, and no other leads yet), the follower
//! answers it itself from the store, as far as it can (a body too big to hold, or a websocket,
//! gets 503 and Retry-After instead).

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

/// Bodies up to this size (or none) are held, so that a request the leader never received
/// can be answered here instead.
const REPLAYABLE: usize = 1024 * 1024;

/// The middleware: sends leader-only requests on when this server follows.
pub async fn layer(State(t): State<AppState>, mut req: Request, next: Next) -> Response {
    if !leader_only(req.uri().path()) || req.headers().contains_key(FORWARDED) {
        return next.run(req).await;
    }
    let Some(leader) = t.leader_url() else {
        return next.run(req).await;
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let client_upgrade = upgrade
        .then(|| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let (parts, body) = req.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let held = if !upgrade && !chunked && length.unwrap_or(0) <= REPLAYABLE {
        match axum::body::to_bytes(body, REPLAYABLE).await {
            Ok(bytes) => Ok(bytes),
            Err(e) => return unavailable(&leader, &format!("reading the request: {e}")),
        }
    } else {
        Err(body)
    };
    let (sent, held) = match held {
        Ok(bytes) => (reqwest::Body::from(bytes.clone()), Some(bytes)),
        Err(body) => (reqwest::Body::wrap_stream(body.into_data_stream()), None),
    };
    let target = Target {
        me: t.server_id(),
        leader: &leader,
        parts: &parts,
        upgrade: client_upgrade,
    };
    match (forward(target, sent).await, held) {
        (Ok(resp), _) => resp,
        // The leader never got it (gone, and no other leads yet): answered here, from the store.
        (Err(Failed { connect: true, .. }), Some(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        (Err(failed), _) => unavailable(&leader, &failed.message),
    }
}

fn unavailable(leader: &str, message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
        axum::Json(serde_json::json!({"error": {
            "code": "LeaderUnavailable",
            "message": format!("the server that runs online endpoints and compute instances ({leader}) did not answer: {message}; try again in a few seconds"),
        }})),
    )
        .into_response()
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

/// Where a request goes, and what of it is sent.
struct Target<'a> {
    me: &'a str,
    leader: &'a str,
    parts: &'a axum::http::request::Parts,
    /// The client's side of a websocket upgrade.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Why forwarding failed; `connect`: the leader was never reached.
struct Failed {
    connect: bool,
    message: String,
}

fn failed(e: &reqwest::Error) -> Failed {
    Failed {
        connect: e.is_connect(),
        message: error_chain(e),
    }
}

fn other(message: impl ToString) -> Failed {
    Failed {
        connect: false,
        message: message.to_string(),
    }
}

async fn forward(target: Target<'_>, body: reqwest::Body) -> Result<Response, Failed> {
    let Target {
        me,
        leader,
        parts,
        upgrade: client_upgrade,
    } = target;
    let upgrade = client_upgrade.is_some();
    let url = format!(
        "{leader}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    headers.insert(FORWARDED, HeaderValue::from_str(me).map_err(other)?);
    let resp = CLIENT
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| failed(&e))?;
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
        let server = resp.upgrade().await.map_err(|e| failed(&e))?;
        tokio::spawn(async move {
            let Ok(client) = client_upgrade.await else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut server = server;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        return out.body(Body::empty()).map_err(other);
    }
    out.body(Body::from_stream(
        resp.bytes_stream().map_err(std::io::Error::other),
    ))
    .map_err(other)
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
