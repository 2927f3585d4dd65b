//! The live routing table of online endpoints: what the router (`tarn-api`'s `router.rs`)
//! reads on every scoring request, and what the endpoint controller rewrites as endpoints
//! change and replicas come and go. The hot path takes one read lock (to find the endpoint)
//! and otherwise touches only atomics; a whole endpoint is swapped at once when it changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Every online endpoint that can take requests, by name (names are unique on a server, as in
/// an Azure region: the scoring URI is `/endpoints/<name>/score`).
#[derive(Default)]
pub struct Table {
    endpoints: RwLock<HashMap<String, Arc<EndpointRoute>>>,
}

impl Table {
    pub fn get(&self, name: &str) -> Option<Arc<EndpointRoute>> {
        self.endpoints
            .read()
            .expect("routes lock")
            .get(name)
            .cloned()
    }

    pub(crate) fn replace(&self, all: HashMap<String, Arc<EndpointRoute>>) {
        *self.endpoints.write().expect("routes lock") = all;
    }

    pub(crate) fn all(&self) -> Vec<Arc<EndpointRoute>> {
        self.endpoints
            .read()
            .expect("routes lock")
            .values()
            .cloned()
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer <primary or secondary key>`.
    Key,
    /// `Authorization: Bearer <token from get-credentials>`, which expires.
    Token,
}

pub struct EndpointRoute {
    pub workspace_id: String,
    pub name: String,
    pub auth_mode: AuthMode,
    /// SHA-256 of the primary and secondary keys: keys are compared by digest.
    pub(crate) key_digests: Vec<[u8; 32]>,
    /// Signs and checks `aml_token` tokens.
    pub(crate) signing_key: Vec<u8>,
    /// Live traffic in percent, and mirrored traffic in percent of all requests.
    pub traffic: Vec<(Arc<DeploymentRoute>, u32)>,
    pub mirror: Vec<(Arc<DeploymentRoute>, u32)>,
    pub deployments: HashMap<String, Arc<DeploymentRoute>>,
}

/// What a scoring request's credential is.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    No,
    Key,
    /// An `aml_token` token, good while the Tarn token it is bound to is.
    BoundTo(String),
}

impl EndpointRoute {
    /// Whether a bearer credential opens this endpoint: a key, or a token bound to a Tarn token
    /// (whose liveness the caller checks: `Users::token_alive`).
    pub fn authorize(&self, bearer: &str) -> Opened {
        match self.auth_mode {
            AuthMode::Key => {
                let digest = tarn_spec::digest::sha256_bytes(bearer.as_bytes());
                if self.key_digests.contains(&digest) {
                    Opened::Key
                } else {
                    Opened::No
                }
            }
            AuthMode::Token => {
                match super::keys::check_token(
                    &self.signing_key,
                    &self.name,
                    bearer,
                    crate::now_ms(),
                ) {
                    Some(token_id) => Opened::BoundTo(token_id),
                    None => Opened::No,
                }
            }
        }
    }

    /// The deployment a request goes to, for a roll in `0..100`: weighted by `traffic`.
    pub fn choose(&self, roll: u32) -> Option<&Arc<DeploymentRoute>> {
        pick(&self.traffic, roll)
    }

    /// The deployment that gets a copy of the request, if this request is mirrored.
    pub fn mirror_for(&self, roll: u32) -> Option<&Arc<DeploymentRoute>> {
        pick(&self.mirror, roll)
    }
}

/// Cumulative weights: `roll` (0..100) falls into one share, or past all of them.
fn pick<T>(shares: &[(T, u32)], roll: u32) -> Option<&T> {
    let mut upto = 0;
    for (item, share) in shares {
        upto += share;
        if roll < upto {
            return Some(item);
        }
    }
    None
}

/// How a deployment takes requests (`request_settings`), changeable without a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_concurrent_per_replica: usize,
    pub max_queue_wait: Duration,
}

pub struct DeploymentRoute {
    pub name: String,
    limits: RwLock<Limits>,
    /// Ready replicas only: a replica joins when its readiness probe passes and leaves before
    /// it is stopped.
    replicas: RwLock<Vec<Arc<Replica>>>,
    /// Signalled when a slot frees up or a replica joins.
    freed: Notify,
    pub metrics: Metrics,
}

pub struct Replica {
    pub index: u32,
    pub addr: SocketAddr,
    in_flight: AtomicUsize,
}

impl Replica {
    pub fn new(index: u32, addr: SocketAddr) -> Replica {
        Replica {
            index,
            addr,
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Why no replica took a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NoReplica {
    /// No replica is ready at all.
    NoneReady,
    /// Every replica was busy for the whole `max_queue_wait`.
    Busy,
}

/// A request's claim on one replica; dropping it frees the slot.
pub struct Slot {
    pub replica: Arc<Replica>,
    route: Arc<DeploymentRoute>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.route.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.route.freed.notify_waiters();
    }
}

impl DeploymentRoute {
    pub fn new(name: &str, limits: Limits) -> DeploymentRoute {
        DeploymentRoute {
            name: name.to_string(),
            limits: RwLock::new(limits),
            replicas: RwLock::new(vec![]),
            freed: Notify::new(),
            metrics: Metrics::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read().expect("limits lock")
    }

    pub(crate) fn set_limits(&self, limits: Limits) {
        *self.limits.write().expect("limits lock") = limits;
    }

    pub fn ready_replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().expect("replicas lock").clone()
    }

    pub(crate) fn join(&self, replica: Arc<Replica>) {
        self.replicas.write().expect("replicas lock").push(replica);
        self.freed.notify_waiters();
    }

    pub(crate) fn leave(&self, index: u32) {
        self.replicas
            .write()
            .expect("replicas lock")
            .retain(|r| r.index != index);
    }

    /// Claims a slot on the ready replica with the fewest requests in flight, waiting up to
    /// `max_queue_wait` when every replica is at `max_concurrent_requests_per_instance`.
    /// `avoid` skips a replica (a retry after it refused the connection) unless it is the only one.
    pub async fn acquire(self: &Arc<Self>, avoid: Option<u32>) -> Result<Slot, NoReplica> {
        let limits = self.limits();
        let deadline = tokio::time::Instant::now() + limits.max_queue_wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_acquire(limits.max_concurrent_per_replica, avoid) {
                Ok(slot) => return Ok(slot),
                Err(NoReplica::NoneReady) if limits.max_queue_wait.is_zero() => {
                    return Err(NoReplica::NoneReady);
                }
                Err(_) => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(if self.replicas.read().expect("replicas lock").is_empty() {
                    NoReplica::NoneReady
                } else {
                    NoReplica::Busy
                });
            }
        }
    }

    fn try_acquire(self: &Arc<Self>, max: usize, avoid: Option<u32>) -> Result<Slot, NoReplica> {
        let replicas = self.replicas.read().expect("replicas lock");
        if replicas.is_empty() {
            return Err(NoReplica::NoneReady);
        }
        // Least outstanding requests; among equals, a rotating start spreads the load.
        let n = replicas.len();
        let start = self.metrics.requests.load(Ordering::Relaxed) as usize % n;
        loop {
            let mut best: Option<&Arc<Replica>> = None;
            for i in 0..n {
                let r = &replicas[(start + i) % n];
                if avoid == Some(r.index) && n > 1 {
                    continue;
                }
                let load = r.in_flight();
                if load < max.max(1) && best.is_none_or(|b| load < b.in_flight()) {
                    best = Some(r);
                }
            }
            let Some(best) = best else {
                return Err(NoReplica::Busy);
            };
            let seen = best.in_flight();
            if seen < max.max(1)
                && best
                    .in_flight
                    .compare_exchange(seen, seen + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
                return Ok(Slot {
                    replica: best.clone(),
                    route: self.clone(),
                });
            }
            // Another request took that slot meanwhile: look again.
        }
    }
}

/// Upper bounds of the latency histogram, in seconds (Prometheus' defaults, plus 1 ms steps).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Per-deployment counters, rendered at `/metrics`.
pub struct Metrics {
    pub requests: AtomicU64,
    /// Responses by status code (index = code - 100).
    codes: Vec<AtomicU64>,
    pub in_flight: AtomicU64,
    pub mirrored: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: AtomicU64::new(0),
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicU64::new(0),
            mirrored: AtomicU64::new(0),
            buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records one answered request (mirrored copies are counted apart).
    pub fn record(&self, code: u16, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.codes.get(code.saturating_sub(100) as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The Prometheus text exposition of every endpoint's deployments.
pub fn render_metrics(table: &Table) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut endpoints = table.all();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    header(
        &mut out,
        "tarn_endpoint_requests_total",
        "counter",
        "Scoring requests answered, by deployment and status code.",
    );
    for_each(&endpoints, |e, d, labels| {
        for (i, c) in d.metrics.codes.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "tarn_endpoint_requests_total{{{labels},code=\"{}\"}} {n}",
                    i + 100
                );
            }
        }
        let _ = e;
    });
    header(
        &mut out,
        "tarn_endpoint_errors_total",
        "counter",
        "Scoring requests answered with a 4xx or 5xx status.",
    );
    for_each(&endpoints, |_, d, labels| {
        let errors: u64 = d.metrics.codes[300..]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(out, "tarn_endpoint_errors_total{{{labels}}} {errors}");
    });
    header(
        &mut out,
        "tarn_endpoint_in_flight_requests",
        "gauge",
        "Scoring requests a deployment's replicas are working on now.",
    );
    for_each(&endpoints, |_, d, labels| {
        let n = d.metrics.in_flight.load(Ordering::Relaxed);
        let _ = writeln!(out, "tarn_endpoint_in_flight_requests{{{labels}}} {n}");
    });
    header(
        &mut out,
        "tarn_endpoint_mirrored_requests_total",
        "counter",
        "Copies of requests sent to a deployment as mirror traffic.",
    );
    for_each(&endpoints, |_, d, labels| {
        let n = d.metrics.mirrored.load(Ordering::Relaxed);
        let _ = writeln!(out, "tarn_endpoint_mirrored_requests_total{{{labels}}} {n}");
    });
    header(
        &mut out,
        "tarn_endpoint_ready_replicas",
        "gauge",
        "Replicas that passed their readiness probe and take requests.",
    );
    for_each(&endpoints, |_, d, labels| {
        let n = d.ready_replicas().len();
        let _ = writeln!(out, "tarn_endpoint_ready_replicas{{{labels}}} {n}");
    });
    header(
        &mut out,
        "tarn_endpoint_request_duration_seconds",
        "histogram",
        "Time from the router receiving a request to the replica's response headers.",
    );
    for_each(&endpoints, |_, d, labels| {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += d.metrics.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tarn_endpoint_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = d.metrics.requests.load(Ordering::Relaxed);
        let sum = d.metrics.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "tarn_endpoint_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n\
             tarn_endpoint_request_duration_seconds_sum{{{labels}}} {sum}\n\
             tarn_endpoint_request_duration_seconds_count{{{labels}}} {count}"
        );
    });
    out
}

fn for_each(
    endpoints: &[Arc<EndpointRoute>],
    mut f: impl FnMut(&EndpointRoute, &DeploymentRoute, &str),
) {
    for e in endpoints {
        let mut names: Vec<&String> = e.deployments.keys().collect();
        names.sort();
        for name in names {
            let labels = format!("endpoint=\"{}\",deployment=\"{name}\"", e.name);
            f(e, &e.deployments[name], &labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(max: usize, wait_ms: u64) -> Arc<DeploymentRoute> {
        Arc::new(DeploymentRoute::new(
            "blue",
            Limits {
                request_timeout: Duration::from_secs(5),
                max_concurrent_per_replica: max,
                max_queue_wait: Duration::from_millis(wait_ms),
            },
        ))
    }

    fn replica(i: u32) -> Arc<Replica> {
        Arc::new(Replica::new(i, ([127, 0, 0, 1], 1000 + i as u16).into()))
    }

    #[test]
    fn weighted_choice_follows_the_shares() {
        let shares = vec![("blue", 90), ("green", 10)];
        assert_eq!(pick(&shares, 0), Some(&"blue"));
        assert_eq!(pick(&shares, 89), Some(&"blue"));
        assert_eq!(pick(&shares, 90), Some(&"green"));
        assert_eq!(pick(&shares, 99), Some(&"green"));
        let mirror = vec![("green", 10)];
        assert_eq!(pick(&mirror, 9), Some(&"green"));
        assert_eq!(pick(&mirror, 10), None);
        assert_eq!(pick::<&str>(&[], 0), None);
    }

    #[tokio::test]
    async fn least_outstanding_requests_and_a_full_queue() {
        let d = route(2, 50);
        assert_eq!(d.acquire(None).await.err(), Some(NoReplica::NoneReady));
        d.join(replica(0));
        d.join(replica(1));
        let a = d.acquire(None).await.unwrap();
        let b = d.acquire(None).await.unwrap();
        assert_ne!(
            a.replica.index, b.replica.index,
            "the idle replica goes first"
        );
        let c = d.acquire(None).await.unwrap();
        let _d2 = d.acquire(None).await.unwrap();
        // Four slots taken (2 replicas × 2): the fifth waits, then is refused.
        assert_eq!(d.acquire(None).await.err(), Some(NoReplica::Busy));
        // A slot freed while waiting is taken.
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.acquire(None).await.map(|s| s.replica.index) })
        };
        tokio::task::yield_now().await;
        let freed = c.replica.index;
        drop(c);
        assert_eq!(waiter.await.unwrap(), Ok(freed));
        drop((a, b));
        assert_eq!(d.metrics.in_flight.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_retry_avoids_the_replica_that_failed() {
        let d = route(1, 0);
        d.join(replica(0));
        d.join(replica(1));
        for _ in 0..5 {
            let s = d.acquire(Some(0)).await.unwrap();
            assert_eq!(s.replica.index, 1);
        }
        d.leave(1);
        // Alone, the avoided replica is still used.
        assert_eq!(d.acquire(Some(0)).await.unwrap().replica.index, 0);
    }
}
