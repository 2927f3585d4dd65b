//! Kept-alive HTTP/1.1 connections to replicas, driven by the task of the request that uses
//! them. A pooled client (hyper-util's) runs each connection in a task of its own, so every
//! request and response crosses tasks, and often threads, several times; on a loaded
//! machine those wake-ups cost more than the proxying. Here the request's own task polls the
//! connection while it sends the request and reads a response of known, modest size, then
//! puts the connection back. A larger or chunked response is streamed: its connection is
//! handed to a task of its own and not reused.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest, handshake};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use tokio::net::TcpStream;

/// Responses up to this size (with a Content-Length) are read whole, in the request's task.
const WHOLE_RESPONSE: u64 = 1024 * 1024;
/// Idle connections kept per replica.
const IDLE_PER_REPLICA: usize = 256;

type Conn = (
    SendRequest<Full<Bytes>>,
    Connection<TokioIo<TcpStream>, Full<Bytes>>,
);

static IDLE: LazyLock<Mutex<HashMap<SocketAddr, Vec<Conn>>>> = LazyLock::new(Default::default);

/// Why an exchange failed, and whether the replica may have seen the request.
pub struct Failed {
    /// No response began: the connection was refused, or closed or reset before answering.
    pub never_answered: bool,
    pub message: String,
}

fn failed(never_answered: bool, e: impl std::fmt::Display) -> Failed {
    Failed {
        never_answered,
        message: e.to_string(),
    }
}

/// A connection ready to send: an idle one, or a new one.
async fn ready_conn(addr: SocketAddr) -> Result<Conn, Failed> {
    loop {
        let idle = IDLE
            .lock()
            .expect("idle connections lock")
            .get_mut(&addr)
            .and_then(Vec::pop);
        let Some((mut tx, mut conn)) = idle else {
            break;
        };
        if tx.is_closed() {
            continue;
        }
        // A kept-alive connection the replica closed meanwhile fails here: try the next.
        if let Some(Ok(Ok(()))) = drive(&mut conn, tx.ready()).await {
            return Ok((tx, conn));
        }
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| failed(true, e))?;
    let _ = stream.set_nodelay(true);
    let (mut tx, mut conn) = handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(true, e))?;
    match drive(&mut conn, tx.ready()).await {
        Some(Ok(Ok(()))) => Ok((tx, conn)),
        _ => Err(failed(true, "the replica closed a new connection")),
    }
}

/// Sends `req` to the replica at `addr` and returns its answer.
pub async fn exchange(
    addr: SocketAddr,
    mut req: axum::http::Request<Full<Bytes>>,
) -> Result<axum::http::Response<Body>, Failed> {
    // On a connection of our own the request line carries the path only, and Host the address.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .expect("a path taken from a valid URI");
    *req.uri_mut() = path;
    if let Ok(host) = axum::http::HeaderValue::from_str(&addr.to_string()) {
        req.headers_mut().insert(axum::http::header::HOST, host);
    }
    let (mut tx, mut conn) = ready_conn(addr).await?;
    let sent = tx.send_request(req);
    let resp = match drive(&mut conn, sent).await {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(e))) | Some(Err(e)) => return Err(failed(never_answered(&e), e)),
        None => return Err(failed(true, "the replica closed the connection")),
    };
    let whole = resp
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= WHOLE_RESPONSE);
    let (parts, body) = resp.into_parts();
    if !whole {
        // Stream it: the connection is driven by its own task until the body ends.
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await;
        });
        return Ok(axum::http::Response::from_parts(parts, Body::new(body)));
    }
    let bytes = match drive(&mut conn, body.collect()).await {
        Some(Ok(Ok(collected))) => collected.to_bytes(),
        Some(Ok(Err(e))) | Some(Err(e)) => return Err(failed(false, e)),
        None => {
            return Err(failed(
                false,
                "the replica closed the connection mid-answer",
            ));
        }
    };
    if !tx.is_closed() {
        let mut idle = IDLE.lock().expect("idle connections lock");
        let list = idle.entry(addr).or_default();
        if list.len() < IDLE_PER_REPLICA {
            list.push((tx, conn));
        }
    }
    Ok(axum::http::Response::from_parts(parts, Body::from(bytes)))
}

/// Polls `conn` while waiting for `fut`: `None` if the connection ended without `fut`'s answer.
async fn drive<F: Future>(
    conn: &mut Connection<TokioIo<TcpStream>, Full<Bytes>>,
    fut: F,
) -> Option<Result<F::Output, hyper::Error>> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(Ok(out)));
        }
        match conn.poll_without_shutdown(cx) {
            std::task::Poll::Ready(Ok(())) => match fut.as_mut().poll(cx) {
                std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(Ok(out))),
                std::task::Poll::Pending => std::task::Poll::Ready(None),
            },
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Some(Err(e))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// Whether a hyper error means no response began (closed, reset, canceled before answering).
pub fn never_answered(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), BrokenPipe | ConnectionAborted | ConnectionReset)
        {
            return true;
        }
        source = s.source();
    }
    false
}
