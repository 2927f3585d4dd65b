//! The data plane of online endpoints: `/endpoints/{name}/score`, proxied to a replica of one
//! of the endpoint's deployments, and `/metrics`. Per request: check the key or token, pick a
//! deployment (the `azureml-model-deployment` header, else the weighted traffic split), claim
//! a slot on its least-busy ready replica (waiting up to `max_queue_wait_ms`, then 429),
//! forward over a kept-alive connection (`upstream.rs`) under `request_timeout_ms` (then 408), retry once on
//! another replica if that one never answered (refused, or closed the connection before
//! responding), and stream the answer back. A mirrored copy is
//! sent from a task of its own, and its answer is dropped, so it never slows the caller.
//!
//! Bodies up to `BUFFER_LIMIT` with a declared length are held in memory (that is what lets
//! a request be retried and mirrored); larger or chunked bodies are streamed through, up to
//! `MAX_SCORING_BODY`, with neither.

use crate::AppState;
use crate::upstream;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, LazyLock};
use std::time::Instant;
use tarn_core::endpoints::routes::{DeploymentRoute, EndpointRoute, NoReplica, Opened, Slot};

/// Bodies this small (with a Content-Length) are buffered, so they can be retried and mirrored.
pub const BUFFER_LIMIT: usize = 1024 * 1024;
/// The largest scoring request body (Azure ML's managed endpoints take up to 100 MB too).
pub const MAX_SCORING_BODY: usize = 100 * 1024 * 1024;
/// The header that picks a deployment, bypassing the traffic split (Azure ML's name).
pub const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";

static CLIENT: LazyLock<Client<HttpConnector, Body>> = LazyLock::new(|| {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
});

fn deployment_header() -> HeaderName {
    HeaderName::from_static(DEPLOYMENT_HEADER)
}

/// Why the router answered a request itself; sent in the API's error shape.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// `GET /metrics`: every deployment's counters, in Prometheus' text format.
pub async fn metrics(State(t): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let (tasks, started) = t.task_reports();
        let mut text = tarn_core::endpoints::routes::render_metrics(t.endpoints.routes());
        text.push_str(&tarn_core::tasks::render_metrics(
            &tasks,
            tarn_core::now_ms(),
            started,
        ));
        text.push_str(&format!(
            "# HELP tarn_leader Whether this server runs the background tasks.\n# TYPE tarn_leader gauge\ntarn_leader {}\n",
            u8::from(t.leads())
        ));
        text
    })
        .into_response()
}

/// `POST /endpoints/{name}/score`.
pub async fn score(State(t): State<AppState>, Path(name): Path<String>, req: Request) -> Response {
    let started = Instant::now();
    let Some(endpoint) = t.endpoints.routes().get(&name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("online endpoint {name:?} not found"),
        )
        .into_response();
    };
    let opened = match crate::bearer(req.headers()).map(|b| endpoint.authorize(b)) {
        Some(Opened::Key) => true,
        // An `aml_token` token works while the Tarn token that fetched it does.
        Some(Opened::BoundTo(token_id)) => t.users.token_alive(&token_id).await.unwrap_or(false),
        Some(Opened::No) | None => false,
    };
    if !opened {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "send `Authorization: Bearer <key>` with a key or token of this endpoint (tarn online-endpoint get-credentials)",
        )
        .into_response();
    }
    let deployment = match pick_deployment(&endpoint, req.headers()) {
        Ok(d) => d.clone(),
        Err(refusal) => return refusal.into_response(),
    };
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_SCORING_BODY) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body exceeds {MAX_SCORING_BODY} bytes"),
        )
        .into_response();
    }
    let body = match declared {
        Some(n) if n <= BUFFER_LIMIT => match axum::body::to_bytes(body, BUFFER_LIMIT).await {
            Ok(bytes) => Payload::Buffered(bytes),
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("reading the request body: {e}"),
                )
                .into_response();
            }
        },
        _ => Payload::Streamed(Body::new(http_body_util::Limited::new(
            body,
            MAX_SCORING_BODY,
        ))),
    };
    if let Payload::Buffered(bytes) = &body
        && let Some(mirror) = endpoint.mirror_for(fastrand::u32(0..100))
        && !Arc::ptr_eq(mirror, &deployment)
    {
        tokio::spawn(send_mirror(
            mirror.clone(),
            parts.uri.query().map(str::to_string),
            parts.headers.clone(),
            bytes.clone(),
        ));
    }
    let resp = forward(&deployment, &parts, body).await;
    let mut resp = match resp {
        Ok(r) => r,
        Err(refusal) => refusal.into_response(),
    };
    deployment
        .metrics
        .record(resp.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::from_str(&deployment.name) {
        resp.headers_mut().insert(deployment_header(), v);
    }
    resp
}

enum Payload {
    Buffered(Bytes),
    Streamed(Body),
}

fn pick_deployment<'a>(
    endpoint: &'a EndpointRoute,
    headers: &HeaderMap,
) -> Result<&'a Arc<DeploymentRoute>, Refusal> {
    if let Some(wanted) = headers.get(DEPLOYMENT_HEADER).and_then(|v| v.to_str().ok()) {
        return endpoint.deployments.get(wanted).ok_or_else(|| {
            refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!(
                    "online endpoint {:?} has no deployment {wanted:?} ({DEPLOYMENT_HEADER} header)",
                    endpoint.name
                ),
            )
        });
    }
    endpoint.choose(fastrand::u32(0..100)).ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "NoTraffic",
            format!(
                "online endpoint {:?} sends no traffic to any deployment: set it with `tarn online-endpoint update --traffic \"<deployment>=100\"` or send the {DEPLOYMENT_HEADER} header",
                endpoint.name
            ),
        )
    })
}

/// Claims a replica and sends the request; one retry elsewhere if the connection failed.
async fn forward(
    deployment: &Arc<DeploymentRoute>,
    parts: &axum::http::request::Parts,
    body: Payload,
) -> Result<Response, Refusal> {
    let limits = deployment.limits();
    let mut avoid = None;
    let mut body = Some(body);
    for attempt in 0..2 {
        let slot = deployment.acquire(avoid).await.map_err(|e| match e {
            NoReplica::NoneReady => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoReadyReplica",
                format!("no replica of deployment {:?} is ready", deployment.name),
            ),
            NoReplica::Busy => refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "every replica of deployment {:?} is at max_concurrent_requests_per_instance ({}) and none freed up within max_queue_wait_ms ({} ms)",
                    deployment.name,
                    limits.max_concurrent_per_replica,
                    limits.max_queue_wait.as_millis()
                ),
            ),
        })?;
        let timed_out = || {
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!(
                    "deployment {:?} did not answer within request_timeout_ms ({} ms)",
                    deployment.name,
                    limits.request_timeout.as_millis()
                ),
            )
        };
        let bad_gateway = |message: String| {
            refuse(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                format!(
                    "replica {} of deployment {:?} failed: {message}",
                    slot.replica.index, deployment.name
                ),
            )
        };
        match body.take().expect("a body per attempt") {
            Payload::Buffered(bytes) => {
                let req = upstream_request(&slot, parts, Full::new(bytes.clone()));
                body = Some(Payload::Buffered(bytes));
                let sent = upstream::exchange(slot.replica.addr, req);
                match tokio::time::timeout(limits.request_timeout, sent).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Ok(resp)) => return Ok(respond(resp, slot)),
                    Ok(Err(f)) if f.never_answered && attempt == 0 => {
                        tracing::warn!(deployment = %deployment.name, replica = slot.replica.index, "no answer, retrying on another replica: {}", f.message);
                        avoid = Some(slot.replica.index);
                    }
                    Ok(Err(f)) => return Err(bad_gateway(f.message)),
                }
            }
            Payload::Streamed(stream) => {
                // Streamed bodies cannot be sent twice: no retry.
                let req = upstream_request(&slot, parts, stream);
                return match tokio::time::timeout(limits.request_timeout, CLIENT.request(req)).await
                {
                    Err(_) => Err(timed_out()),
                    Ok(Ok(resp)) => Ok(respond(resp.map(Body::new), slot)),
                    Ok(Err(e)) => Err(bad_gateway(e.to_string())),
                };
            }
        }
    }
    unreachable!("the second attempt always returns")
}

/// The request as the replica gets it: `/score` with the caller's query and headers, less the
/// credential and hop-by-hop headers.
fn upstream_request<B>(
    slot: &Slot,
    parts: &axum::http::request::Parts,
    body: B,
) -> axum::http::Request<B> {
    let uri = match parts.uri.query() {
        Some(q) => format!("http://{}/score?{q}", slot.replica.addr),
        None => format!("http://{}/score", slot.replica.addr),
    };
    let mut req = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)
        .expect("a valid request");
    copy_headers(&parts.headers, req.headers_mut());
    req
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if name == header::AUTHORIZATION
            || name == header::HOST
            || name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name.as_str() == "keep-alive"
            || name == header::UPGRADE
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Sends the replica's answer back; the slot is freed when the body has been sent.
fn respond(resp: axum::http::Response<Body>, slot: Slot) -> Response {
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |frame| {
        let _hold = &slot;
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

/// Sends a mirrored copy and drops the answer.
async fn send_mirror(
    deployment: Arc<DeploymentRoute>,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) {
    let Ok(slot) = deployment.acquire(None).await else {
        return;
    };
    deployment
        .metrics
        .mirrored
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let uri = match query {
        Some(q) => format!("http://{}/score?{q}", slot.replica.addr),
        None => format!("http://{}/score", slot.replica.addr),
    };
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri(uri)
        .body(Full::new(body))
        .expect("a valid request");
    copy_headers(&headers, req.headers_mut());
    let timeout = deployment.limits().request_timeout;
    let sent = upstream::exchange(slot.replica.addr, req);
    if let Ok(Ok(resp)) = tokio::time::timeout(timeout, sent).await {
        let _ = resp.into_body().collect().await;
    }
}
