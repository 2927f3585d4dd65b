//! Serving connections with limits a hostile client cannot get around. `axum::serve` has no
//! header or body read timeout and no cap on connections: a client that opens connections and
//! sends nothing, or sends its headers or body a byte at a time (slowloris), held them open
//! for ever. Here each connection is HTTP/1.1 from hyper with:
//! - a **header read timeout**: a request's headers must arrive whole within it, and an idle
//!   kept-alive connection is closed when it passes with no new request;
//! - a **body idle timeout**: a request body that sends nothing for this long fails (the
//!   handler answers with an error and the connection closes);
//! - a **cap on open connections**: beyond it new connections wait in the kernel's backlog
//!   until one closes (the file-descriptor limit is raised to its hard limit at start, and
//!   the cap kept below it, so accepting never fails for want of descriptors).
//!
//! Upgrades (JupyterLab's websockets) pass through. Shutdown stops accepting, asks each
//! connection to finish its request, and waits for them a bounded time.

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// The limits (`tarn up --max-connections --header-timeout --body-timeout`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
}

/// How long a shutdown waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// The connection cap that leaves room under the descriptor limit for the store, datastores,
/// runners' pipes and outgoing connections.
pub fn default_max_connections(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(256) * 3 / 4).clamp(64, 50_000) as usize
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve<L, S>(
    mut listener: L,
    app: S,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    S: tower_service::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let limits = limits.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let mut req = req.map(|body| {
                    axum::body::Body::new(tower_http::timeout::TimeoutBody::new(
                        limits.body_idle_timeout,
                        body,
                    ))
                });
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { app.call(req).await }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // Every connection has returned its permit once all of them can be taken again.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, permits.acquire_many(all)).await;
}
