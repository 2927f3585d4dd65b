//! The endpoint controller: keeps every online deployment's replicas running at its spec.
//! Each pass reads the endpoints and deployments from the store, rebuilds the routing table,
//! and for each deployment starts, restarts (with backoff), retires and replaces replicas:
//!
//! - a replica is a `tarn replica` process (same binary) in its own process group; it
//!   downloads the model and code, builds the environment and runs the scoring server;
//! - it joins the routing table when its readiness probe (`GET /`) first answers 200, and is
//!   killed after `liveness_probe.failure_threshold` failed probes;
//! - a changed spec (a new revision) is rolled out one replica at a time: a new replica starts,
//!   and only when it is ready does an old one leave the table, finish its requests and stop;
//! - a replica that crashes is restarted after 1, 2, 4 … 30 s; three that die before ever
//!   becoming ready fail the deployment with the log's tail, until its spec changes.
//!
//! Replicas do not outlive the server (the router is in the server): each watches its
//! parent and exits when it goes, and a restarted server starts them again from the store.

use super::Endpoints;
use super::routes::{AuthMode, DeploymentRoute, EndpointRoute, Limits, Replica};
use super::{DeploymentStatus, ReplicaStatus, keys, revision};
use crate::authz::JobScope;
use crate::backends::{ComputeBackend, ProbeSettings, Serve, ServedReplica};
use crate::error::{Error, Result};
use crate::process::{KILL_GRACE, free_port, signal, stop_group, tail, tail_of};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

/// How often the controller looks at everything even when nothing woke it.
const PASS_EVERY: Duration = Duration::from_secs(1);
/// How often a starting replica is probed until it first answers.
const READY_POLL: Duration = Duration::from_millis(50);
/// Replicas that die before ever being ready, in a row, that fail a deployment.
const FAILURES_TO_GIVE_UP: u32 = 3;
/// How long a stopped replica's requests may take to finish before it is killed anyway.
/// Bytes of a replica's log kept with a failed deployment.
const TAIL: usize = 3000;

/// How a failed hand-over of a deployment to its engine starts its error (it is retried).
const HAND_OVER: &str = "cannot hand the deployment to its compute";

/// (workspace id, endpoint, deployment)
type DeploymentKey = (String, String, String);
/// An online endpoint as stored, with its workspace and its deployments.
type StoredEndpoint = (
    tarn_store::WorkspaceRow,
    tarn_store::ResourceRow,
    Vec<tarn_store::ResourceRow>,
);

#[derive(Default)]
pub struct Runtime {
    pub(crate) table: super::routes::Table,
    pub(crate) wake: Arc<Notify>,
    runs: Mutex<HashMap<DeploymentKey, DeploymentRun>>,
    /// Engines were swept of deployments Tarn no longer has, since this server leads.
    swept: std::sync::atomic::AtomicBool,
}

struct DeploymentRun {
    route: Arc<DeploymentRoute>,
    revision: String,
    replicas: Vec<ReplicaRun>,
    next_index: u32,
    /// Replicas of this revision that died before they were ever ready, in a row.
    early_deaths: u32,
    /// The deployment failed at this revision, with this error.
    failed: Option<String>,
    dir: PathBuf,
    token: Option<String>,
    /// `instance_count`.
    desired: u32,
    /// All `desired` replicas of this revision and count have been ready (so a later crash
    /// is a restart, not a failed creation).
    reached: bool,
    /// Some revision was ready once: what happens now is an update, not a creation.
    served: bool,
    /// Set when an engine (Kubernetes) runs the replicas instead of this machine.
    engine: Option<EngineRun>,
}

/// A deployment whose replicas an engine runs (a Kubernetes compute's): what the engine was
/// handed, and what it says of the replicas.
struct EngineRun {
    backend: Arc<dyn ComputeBackend>,
    /// The revision and replica count last handed to the engine.
    applied: Option<(String, u32)>,
    replicas: Vec<ServedReplica>,
    /// The routing table's index of each replica, by the engine's name for it.
    indexes: HashMap<String, u32>,
}

struct ReplicaRun {
    index: u32,
    revision: String,
    port: u16,
    restarts: u32,
    shared: Arc<Mutex<Phase>>,
    stop: watch::Sender<bool>,
    /// Set once its death has been counted (so a dead replica is handled once).
    handled: bool,
}

#[derive(Clone, Debug)]
enum Phase {
    Starting,
    Ready,
    Stopping,
    Exited { was_ready: bool, at: Instant },
}

fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Starting => "Starting",
        Phase::Ready => "Ready",
        Phase::Stopping => "Stopping",
        Phase::Exited { .. } => "Restarting",
    }
}

fn backoff(restarts: u32) -> Duration {
    Duration::from_secs((1u64 << restarts.min(5)).min(30))
}

/// Probe settings of `liveness_probe` / `readiness_probe`, with Azure ML's defaults.
#[derive(Clone, Copy, Debug)]
struct Probe {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
}

fn probe_of(spec: &Json, field: &str) -> Probe {
    let s = probe_settings(spec, field);
    let secs = |n: u32| Duration::from_secs(u64::from(n));
    Probe {
        initial_delay: secs(s.initial_delay),
        period: secs(s.period.max(1)),
        timeout: secs(s.timeout.max(1)),
        failure_threshold: s.failure_threshold.max(1),
    }
}

fn limits_of(spec: &Json) -> Limits {
    let get = |k: &str, d: u64| {
        spec.pointer(&format!("/request_settings/{k}"))
            .and_then(Json::as_u64)
            .unwrap_or(d)
    };
    Limits {
        request_timeout: Duration::from_millis(get("request_timeout_ms", 5000).max(1)),
        max_concurrent_per_replica: get("max_concurrent_requests_per_instance", 1).max(1) as usize,
        max_queue_wait: Duration::from_millis(get("max_queue_wait_ms", 500)),
    }
}

impl Runtime {
    /// What the controller has done with a deployment whose stored spec is `spec`.
    pub(crate) fn status(
        &self,
        ws: &str,
        ep: &str,
        dep: &str,
        spec: &Json,
    ) -> Option<DeploymentStatus> {
        let runs = self.runs.lock().expect("endpoint runs lock");
        let run = runs.get(&(ws.to_string(), ep.to_string(), dep.to_string()))?;
        // A change the controller has not picked up yet is an update in progress.
        let desired = instance_count(spec);
        let behind = run.revision != revision(spec) || run.desired != desired;
        let replicas: Vec<ReplicaStatus> = match &run.engine {
            Some(engine) => engine
                .replicas
                .iter()
                .map(|r| ReplicaStatus {
                    index: engine.indexes.get(&r.name).copied().unwrap_or_default(),
                    state: if r.terminating {
                        "Stopping"
                    } else if r.ready {
                        "Ready"
                    } else if r.restarts > 0 {
                        "Restarting"
                    } else {
                        "Starting"
                    },
                    port: r.addr.map_or(0, |a| a.port()),
                    restarts: r.restarts,
                    current: r.revision == run.revision,
                    pod: Some(r.name.clone()),
                    reason: r.reason.clone(),
                })
                .collect(),
            None => run
                .replicas
                .iter()
                .map(|r| ReplicaStatus {
                    index: r.index,
                    state: phase_name(&r.shared.lock().expect("phase lock")),
                    port: r.port,
                    restarts: r.restarts,
                    current: r.revision == run.revision,
                    pod: None,
                    reason: None,
                })
                .collect(),
        };
        let provisioning_state = if behind {
            "Updating"
        } else if run.failed.is_some() {
            "Failed"
        } else if replicas.iter().any(|r| !r.current) {
            "Updating"
        } else if run.reached {
            "Succeeded"
        } else if run.served {
            "Updating"
        } else {
            "Creating"
        };
        Some(DeploymentStatus {
            provisioning_state,
            error: run.failed.clone(),
            replicas,
        })
    }

    /// Where the log of a deployment's first current replica is.
    pub(crate) fn log_of(&self, ws: &str, ep: &str, dep: &str) -> Option<ReplicaLog> {
        let key = (ws.to_string(), ep.to_string(), dep.to_string());
        let runs = self.runs.lock().expect("endpoint runs lock");
        let run = runs.get(&key)?;
        if let Some(engine) = &run.engine {
            let first = engine
                .replicas
                .iter()
                .filter(|r| r.revision == run.revision)
                .min_by_key(|r| engine.indexes.get(&r.name))
                .or(engine.replicas.first())?;
            return Some(ReplicaLog::Engine {
                backend: engine.backend.clone(),
                id: served_id(&key),
                replica: first.name.clone(),
            });
        }
        let index = run
            .replicas
            .iter()
            .filter(|r| r.revision == run.revision)
            .map(|r| r.index)
            .min()
            .or(run.next_index.checked_sub(1))?;
        Some(ReplicaLog::File(
            run.dir.join(format!("replica-{index}.log")),
        ))
    }
}

/// Where a replica's log is read from.
pub(crate) enum ReplicaLog {
    /// A replica on this machine logs into a file.
    File(PathBuf),
    /// An engine's replica: the engine has its log (`kubectl logs`).
    Engine {
        backend: Arc<dyn ComputeBackend>,
        id: String,
        replica: String,
    },
}

/// How a deployment is named to an engine: `<workspace id>/<endpoint>/<deployment>`.
fn served_id(key: &DeploymentKey) -> String {
    format!("{}/{}/{}", key.0, key.1, key.2)
}

fn instance_count(spec: &Json) -> u32 {
    spec.get("instance_count")
        .and_then(Json::as_u64)
        .unwrap_or(1) as u32
}

fn probe_settings(spec: &Json, field: &str) -> ProbeSettings {
    let get = |k: &str, d: u64| {
        spec.get(field)
            .and_then(|p| p.get(k))
            .and_then(Json::as_u64)
            .unwrap_or(d) as u32
    };
    ProbeSettings {
        initial_delay: get("initial_delay", 10),
        period: get("period", 10),
        timeout: get("timeout", 2),
        success_threshold: get("success_threshold", 1),
        failure_threshold: get("failure_threshold", 30),
    }
}

/// A replica the engine cannot start at all: its image cannot be had. (A missing Secret,
/// `CreateContainerConfigError`, is waited out: the Secret is made just after the Deployment.)
fn stuck(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| {
        ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"]
            .iter()
            .any(|w| r.starts_with(w))
    })
}

impl Endpoints {
    /// Starts the endpoint controller (once, with the server).
    pub fn start_endpoints(self: &Arc<Endpoints>) -> tokio::task::JoinHandle<()> {
        let wake = self.runtime.wake.clone();
        self.spawn_task(
            "endpoints",
            PASS_EVERY,
            wake,
            self,
            |endpoints| async move { endpoints.reconcile_endpoints().await },
        )
    }

    /// Stops every replica and empties the routing table: this server no longer leads, and
    /// the new leader runs the replicas (followers send scoring requests to it).
    pub(crate) fn stand_down_endpoints(&self) {
        let runs = std::mem::take(&mut *self.runtime.runs.lock().expect("endpoint runs lock"));
        for run in runs.values() {
            for r in &run.replicas {
                let _ = r.stop.send(true);
            }
        }
        self.runtime.table.replace(HashMap::new());
        self.runtime
            .swept
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Rebuilds the routing table from the store and the ready replicas.
    pub(crate) async fn rebuild_routes(&self) -> Result<()> {
        self.reconcile(false).await.map(|_| ())
    }

    async fn reconcile_endpoints(self: &Arc<Self>) -> Result<()> {
        let wanted = self.reconcile(true).await?;
        use std::sync::atomic::Ordering;
        if !self.runtime.swept.swap(true, Ordering::AcqRel)
            && let Err(e) = self.sweep_engines(&wanted).await
        {
            self.runtime.swept.store(false, Ordering::Release);
            tracing::warn!("looking for deployments left on Kubernetes: {e}");
        }
        let keys: Vec<DeploymentKey> = self
            .runtime
            .runs
            .lock()
            .expect("endpoint runs lock")
            .keys()
            .cloned()
            .collect();
        for key in keys {
            let spec = wanted.iter().find_map(|(ws, ep, deps)| {
                (ws.id == key.0 && ep.key.name == key.1)
                    .then(|| deps.iter().find(|d| d.key.name == key.2))
                    .flatten()
                    .map(|d| (ws.clone(), ep.clone(), d.clone()))
            });
            if let Err(e) = self.reconcile_deployment(&key, spec).await {
                tracing::warn!(deployment = %key.2, endpoint = %key.1, "{e}");
            }
        }
        Ok(())
    }

    /// Builds the routing table; with `track`, also makes sure every stored deployment has a
    /// run for the controller to reconcile. Returns the stored endpoints it was built from.
    async fn reconcile(&self, track: bool) -> Result<Vec<StoredEndpoint>> {
        let all = self.all_online_endpoints().await?;
        let mut table = HashMap::new();
        for (ws, ep, deployments) in &all {
            let mut routes = HashMap::new();
            for d in deployments {
                let key = (ws.id.clone(), ep.key.name.clone(), d.key.name.clone());
                let route = {
                    let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
                    if !runs.contains_key(&key) && !track {
                        continue;
                    }
                    let run = runs.entry(key.clone()).or_insert_with(|| DeploymentRun {
                        route: Arc::new(DeploymentRoute::new(&d.key.name, limits_of(&d.spec))),
                        revision: revision(&d.spec),
                        replicas: vec![],
                        next_index: 0,
                        early_deaths: 0,
                        failed: None,
                        dir: self
                            .config
                            .home
                            .join("endpoints")
                            .join(&ws.id)
                            .join(&ep.key.name)
                            .join(&d.key.name),
                        token: None,
                        desired: 1,
                        reached: false,
                        served: false,
                        engine: None,
                    });
                    run.route.set_limits(limits_of(&d.spec));
                    run.route.clone()
                };
                routes.insert(d.key.name.clone(), route);
            }
            let shares = |field: &str| -> Vec<(Arc<DeploymentRoute>, u32)> {
                ep.spec
                    .get(field)
                    .and_then(Json::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(name, pct)| {
                        Some((routes.get(name)?.clone(), pct.as_u64()? as u32))
                    })
                    .filter(|(_, pct)| *pct > 0)
                    .collect()
            };
            let secrets = self.endpoint_secrets(&ws.id, ep).await?;
            let digest = |k: &str| {
                secrets
                    .get(k)
                    .map(|v| tarn_spec::digest::sha256_bytes(v.as_bytes()))
            };
            let route = EndpointRoute {
                workspace_id: ws.id.clone(),
                name: ep.key.name.clone(),
                auth_mode: match ep.spec.get("auth_mode").and_then(Json::as_str) {
                    Some("key") | None => AuthMode::Key,
                    _ => AuthMode::Token,
                },
                key_digests: [digest(keys::PRIMARY), digest(keys::SECONDARY)]
                    .into_iter()
                    .flatten()
                    .collect(),
                signing_key: secrets
                    .get(keys::SIGNING)
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
                traffic: shares("traffic"),
                mirror: shares("mirror_traffic"),
                deployments: routes,
            };
            table.insert(ep.key.name.clone(), Arc::new(route));
        }
        self.runtime.table.replace(table);
        Ok(all)
    }

    /// Moves one deployment's replicas toward its spec (`None`: it was deleted).
    async fn reconcile_deployment(
        self: &Arc<Self>,
        key: &DeploymentKey,
        wanted: Option<(
            tarn_store::WorkspaceRow,
            tarn_store::ResourceRow,
            tarn_store::ResourceRow,
        )>,
    ) -> Result<()> {
        let Some((ws, ep, row)) = wanted else {
            // Deleted: stop everything, forget it, revoke its token. An engine's deployment
            // is removed first (the run stays, and is tried again, until the engine has).
            let engine = self
                .runtime
                .runs
                .lock()
                .expect("endpoint runs lock")
                .get(key)
                .and_then(|r| r.engine.as_ref().map(|e| e.backend.clone()));
            if let Some(serving) = engine.as_deref().and_then(|b| b.serving()) {
                serving.unserve(&served_id(key)).await?;
            }
            let run = self
                .runtime
                .runs
                .lock()
                .expect("endpoint runs lock")
                .remove(key);
            if let Some(run) = run {
                for r in &run.replicas {
                    let _ = r.stop.send(true);
                }
                self.users.revoke_job_token(&replica_scope(key)).await?;
            }
            return Ok(());
        };
        if let Some(engine) = self.serving_engine(&ws, &ep.spec).await? {
            return self.reconcile_served(key, &ws, &row, engine).await;
        }
        let rev = revision(&row.spec);
        let desired = instance_count(&row.spec) as usize;
        // Decide under the lock, act after it.
        let mut to_start: Vec<(u32, u32)> = vec![]; // (index, restarts)
        {
            let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
            let Some(run) = runs.get_mut(key) else {
                return Ok(());
            };
            if run.revision != rev || run.desired != desired as u32 {
                if run.revision != rev {
                    run.failed = None;
                    run.early_deaths = 0;
                }
                run.revision = rev.clone();
                run.desired = desired as u32;
                run.reached = false;
            }
            // Dead replicas: count early deaths, schedule restarts, drop old revisions.
            let now = Instant::now();
            let mut restart = vec![];
            run.replicas.retain_mut(|r| {
                let phase = r.shared.lock().expect("phase lock").clone();
                match phase {
                    Phase::Exited { was_ready, at, .. } => {
                        if !r.handled {
                            r.handled = true;
                            if !was_ready && r.revision == rev {
                                run.early_deaths += 1;
                            }
                        }
                        if r.revision != rev || *r.stop.borrow() {
                            return false;
                        }
                        if now >= at + backoff(r.restarts) {
                            restart.push((r.index, r.restarts + 1));
                            return false;
                        }
                        true
                    }
                    _ => true,
                }
            });
            if run.early_deaths >= FAILURES_TO_GIVE_UP && run.failed.is_none() {
                let index = run.next_index.saturating_sub(1);
                let log = run.dir.join(format!("replica-{index}.log"));
                run.failed = Some(format!(
                    "the deployment's replicas did not become ready ({} tries); the end of replica {index}'s log:\n{}",
                    run.early_deaths,
                    tail(&log, TAIL)
                ));
                restart.clear();
                for r in run.replicas.iter().filter(|r| r.revision == rev) {
                    let _ = r.stop.send(true);
                }
            }
            if run.failed.is_some() {
                run.replicas.retain(|r| {
                    !matches!(*r.shared.lock().expect("phase lock"), Phase::Exited { .. })
                });
                // Keep old-revision replicas serving; nothing new starts.
            } else {
                to_start.extend(restart);
                let phase_of = |r: &ReplicaRun| r.shared.lock().expect("phase lock").clone();
                let live = |r: &ReplicaRun| !*r.stop.borrow();
                let current: Vec<&ReplicaRun> = run
                    .replicas
                    .iter()
                    .filter(|r| r.revision == rev && live(r))
                    .collect();
                let current_count = current.len() + to_start.len();
                let current_ready = current
                    .iter()
                    .filter(|r| matches!(phase_of(r), Phase::Ready))
                    .count();
                let current_starting = current.len() - current_ready;
                if current_ready >= desired {
                    run.reached = true;
                    run.served = true;
                }
                let old: Vec<u32> = run
                    .replicas
                    .iter()
                    .filter(|r| r.revision != rev && live(r))
                    .map(|r| r.index)
                    .collect();
                if current_count < desired {
                    // Rolling: one new replica at a time while old ones serve.
                    let room = if old.is_empty() {
                        desired - current_count
                    } else if current_starting == 0 && to_start.is_empty() {
                        1
                    } else {
                        0
                    };
                    for _ in 0..room {
                        to_start.push((run.next_index, 0));
                        run.next_index += 1;
                    }
                }
                // Retire old replicas as new ones are ready: keep `desired` ready in total.
                let old_ready = run
                    .replicas
                    .iter()
                    .filter(|r| r.revision != rev && live(r) && matches!(phase_of(r), Phase::Ready))
                    .count();
                let mut surplus = (current_ready + old_ready).saturating_sub(desired);
                if current_ready >= desired {
                    surplus = usize::MAX; // all of the new revision is ready
                }
                for r in run.replicas.iter().filter(|r| r.revision != rev && live(r)) {
                    let ready = matches!(phase_of(r), Phase::Ready);
                    if surplus == 0 && ready {
                        break;
                    }
                    if ready {
                        surplus -= 1;
                    }
                    let _ = r.stop.send(true);
                }
                // Scale down: the newest current replicas go first, unready before ready.
                let mut extra = current_count.saturating_sub(desired);
                let mut candidates: Vec<&ReplicaRun> = run
                    .replicas
                    .iter()
                    .filter(|r| r.revision == rev && live(r))
                    .collect();
                candidates.sort_by_key(|r| {
                    (
                        matches!(phase_of(r), Phase::Ready),
                        std::cmp::Reverse(r.index),
                    )
                });
                for r in candidates {
                    if extra == 0 {
                        break;
                    }
                    let _ = r.stop.send(true);
                    extra -= 1;
                }
                // Stopped replicas that have exited are gone for good.
                run.replicas.retain(|r| {
                    !(*r.stop.borrow()
                        && matches!(*r.shared.lock().expect("phase lock"), Phase::Exited { .. }))
                });
            }
        }
        for (index, restarts) in to_start {
            if let Err(e) = self.start_replica(key, &ws, &row, index, restarts).await {
                // Could not even start (e.g. the model was removed): fail the deployment.
                let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
                if let Some(run) = runs.get_mut(key) {
                    run.failed = Some(format!("cannot start a replica: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Removes what engines run for deployments Tarn no longer has (deleted while this server
    /// was down, or while the engine did not answer): once each time this server starts to
    /// lead. Only deployments of this server's workspaces are touched.
    async fn sweep_engines(&self, wanted: &[StoredEndpoint]) -> Result<()> {
        let known: std::collections::HashSet<String> = wanted
            .iter()
            .flat_map(|(ws, ep, deps)| {
                deps.iter()
                    .map(move |d| format!("{}/{}/{}", ws.id, ep.key.name, d.key.name))
            })
            .collect();
        for ws in self.store.list_workspaces().await? {
            let filter = tarn_store::ResourceFilter {
                parent: "",
                name: None,
                include_archived: false,
                latest_only: false,
            };
            let computes = self
                .store
                .list_resources(&ws.id, tarn_spec::Kind::Compute.collection(), &filter)
                .await?;
            for row in computes {
                if row.spec.get("type").and_then(Json::as_str) != Some("kubernetes") {
                    continue;
                }
                let spec = self.compute_spec(&ws.id, &row).await?;
                let key = crate::jobs::pool_key(&ws.id, &row.key.name);
                let Some(engine) = self.jobs.engine_backend(&key, &spec) else {
                    continue;
                };
                let Some(serving) = engine.serving() else {
                    continue;
                };
                let ours = format!("{}/", ws.id);
                // A cluster that does not answer is looked at again when this server next
                // starts to lead.
                let ids = match serving.served_ids().await {
                    Ok(ids) => ids,
                    Err(e) => {
                        tracing::warn!(compute = %row.key.name, "{e}");
                        continue;
                    }
                };
                for id in ids {
                    if id.starts_with(&ours) && !known.contains(&id) {
                        tracing::info!(deployment = %id, compute = %row.key.name, "removing a deployment Tarn no longer has");
                        if let Err(e) = serving.unserve(&id).await {
                            tracing::warn!(deployment = %id, "{e}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The engine that runs the replicas of the endpoint's deployments: its `compute`'s, when
    /// it names one (a Kubernetes compute); `None` when they run on this machine.
    pub(crate) async fn serving_engine(
        &self,
        ws: &tarn_store::WorkspaceRow,
        endpoint: &Json,
    ) -> Result<Option<Arc<dyn ComputeBackend>>> {
        let Some(compute) = endpoint.get("compute").and_then(Json::as_str) else {
            return Ok(None);
        };
        let name = compute.strip_prefix("azureml:").unwrap_or(compute);
        let scope = crate::resources::Scope {
            workspace: &ws.name,
            kind: tarn_spec::Kind::Compute,
            parent: None,
        };
        let row = self
            .store
            .get_resource(&scope.key(&ws.id, name, ""))
            .await?
            .ok_or_else(|| {
                Error::invalid(
                    "compute",
                    format!("the endpoint's compute {name:?} does not exist"),
                )
            })?;
        let spec = self.compute_spec(&ws.id, &row).await?;
        match self
            .jobs
            .engine_backend(&crate::jobs::pool_key(&ws.id, name), &spec)
        {
            Some(engine) if engine.serving().is_some() => Ok(Some(engine)),
            _ => Err(Error::invalid(
                "compute",
                format!(
                    "compute {name:?} cannot run online deployments: only a Kubernetes compute can \
                     (an endpoint without `compute` runs its replicas on the Tarn server's machine)"
                ),
            )),
        }
    }

    /// Moves a deployment whose replicas an engine runs toward its spec: hands the engine the
    /// spec when its revision or count changed (or the engine lost it), then takes what the
    /// engine says of the replicas into the routing table (ready ones in, stopping ones out)
    /// and the status. The engine rolls and restarts; Tarn routes and reports.
    async fn reconcile_served(
        self: &Arc<Self>,
        key: &DeploymentKey,
        ws: &tarn_store::WorkspaceRow,
        row: &tarn_store::ResourceRow,
        engine: Arc<dyn ComputeBackend>,
    ) -> Result<()> {
        let serving = engine.serving().expect("a serving engine");
        // Pods that become ready or start stopping wake the controller at once.
        engine.watch(self.runtime.wake.clone()).await;
        let id = served_id(key);
        let rev = revision(&row.spec);
        let desired = instance_count(&row.spec);
        let wanted = (rev.clone(), desired);
        let (applied, token) = {
            let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
            let Some(run) = runs.get_mut(key) else {
                return Ok(());
            };
            let run_engine = run.engine.get_or_insert_with(|| EngineRun {
                backend: engine.clone(),
                applied: None,
                replicas: vec![],
                indexes: HashMap::new(),
            });
            run_engine.backend = engine.clone();
            let applied = run_engine.applied.clone();
            if run.revision != rev || run.desired != desired {
                if run.revision != rev {
                    run.failed = None;
                }
                run.revision = rev.clone();
                run.desired = desired;
                run.reached = false;
            }
            (applied, run.token.clone())
        };
        let mut served = serving.served(&id).await?;
        if !served.exists
            || applied.as_ref() != Some(&wanted)
            || (served.revision.as_str(), served.replicas) != (rev.as_str(), desired)
        {
            let token = match token {
                Some(t) => t,
                None => self.replica_token(key, &row.created_by).await?,
            };
            let handed = async {
                let plan = self.serve_plan(ws, &key.1, &row.spec).await?;
                let serve = Serve {
                    id: id.clone(),
                    workspace: ws.name.clone(),
                    endpoint: key.1.clone(),
                    deployment: key.2.clone(),
                    revision: rev.clone(),
                    replicas: desired,
                    token,
                    image: plan.environment.as_ref().and_then(|e| e.image.clone()),
                    plan: serde_json::to_string(&plan).expect("a plan serialises"),
                    instance_type: row
                        .spec
                        .get("instance_type")
                        .and_then(Json::as_str)
                        .map(str::to_string),
                    resources: row.spec.get("resources").cloned(),
                    readiness: probe_settings(&row.spec, "readiness_probe"),
                    liveness: probe_settings(&row.spec, "liveness_probe"),
                    request_timeout: limits_of(&row.spec).request_timeout,
                };
                serving.apply(&serve).await
            };
            let outcome = handed.await;
            let handed_over = {
                let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
                let Some(run) = runs.get_mut(key) else {
                    return Ok(());
                };
                match outcome {
                    Ok(()) => {
                        if let Some(e) = run.engine.as_mut() {
                            e.applied = Some(wanted);
                        }
                        // An earlier hand-over that failed is over; a crash loop is not undone.
                        if run
                            .failed
                            .as_deref()
                            .is_some_and(|f| f.starts_with(HAND_OVER))
                        {
                            run.failed = None;
                        }
                        true
                    }
                    Err(e) => {
                        // Tried again on the next pass.
                        run.failed = Some(format!("{HAND_OVER}: {e}"));
                        false
                    }
                }
            };
            if !handed_over {
                return Ok(());
            }
            served = serving.served(&id).await?;
        }
        // The engine's view into the route and the status.
        let failing = {
            let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
            let Some(run) = runs.get_mut(key) else {
                return Ok(());
            };
            let DeploymentRun {
                engine: Some(run_engine),
                route,
                next_index,
                ..
            } = run
            else {
                return Ok(());
            };
            run_engine
                .indexes
                .retain(|name, _| served.pods.iter().any(|p| &p.name == name));
            let mut routable = vec![];
            for pod in &served.pods {
                let index = *run_engine
                    .indexes
                    .entry(pod.name.clone())
                    .or_insert_with(|| {
                        *next_index += 1;
                        *next_index - 1
                    });
                if let (true, false, Some(addr)) = (pod.ready, pod.terminating, pod.addr) {
                    routable.push((index, addr));
                }
            }
            let in_route = route.ready_replicas();
            for r in &in_route {
                if !routable.iter().any(|(i, a)| *i == r.index && *a == r.addr) {
                    route.leave(r.index);
                }
            }
            for (index, addr) in routable {
                if !in_route.iter().any(|r| r.index == index && r.addr == addr) {
                    route.join(Arc::new(Replica::new(index, addr)));
                }
            }
            run_engine.replicas = served.pods.clone();
            let current_ready = served
                .pods
                .iter()
                .filter(|p| p.revision == rev && p.ready && !p.terminating)
                .count() as u32;
            let old_left = served.pods.iter().any(|p| p.revision != rev);
            if current_ready >= desired && !old_left {
                run.reached = true;
                run.served = true;
            }
            // Replicas of this revision that keep dying before they are ever ready, or that
            // cannot start at all, fail the deployment (the engine keeps the old ones serving).
            if run.reached || run.failed.is_some() {
                None
            } else {
                served
                    .pods
                    .iter()
                    .find(|p| {
                        p.revision == rev
                            && !p.ready
                            && (p.restarts >= FAILURES_TO_GIVE_UP || stuck(p.reason.as_deref()))
                    })
                    .cloned()
            }
        };
        if let Some(pod) = failing {
            let log = serving
                .replica_log(&id, &pod.name)
                .await
                .unwrap_or_else(|e| e.to_string());
            let tail = tail_of(log.as_bytes(), TAIL);
            let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
            if let Some(run) = runs.get_mut(key) {
                run.failed = Some(format!(
                    "replica {} did not become ready ({}, {} restarts); the end of its log:\n{tail}",
                    pod.name,
                    pod.reason.as_deref().unwrap_or("not ready"),
                    pod.restarts,
                ));
            }
        }
        Ok(())
    }

    /// The deployment's replica token, made (and the old one revoked) once per server run.
    async fn replica_token(&self, key: &DeploymentKey, owner: &str) -> Result<String> {
        let scope = replica_scope(key);
        self.users.revoke_job_token(&scope).await?;
        let t = self.users.create_job_token(owner, &scope).await?;
        if let Some(run) = self
            .runtime
            .runs
            .lock()
            .expect("endpoint runs lock")
            .get_mut(key)
        {
            run.token = Some(t.clone());
        }
        Ok(t)
    }

    async fn start_replica(
        self: &Arc<Self>,
        key: &DeploymentKey,
        ws: &tarn_store::WorkspaceRow,
        row: &tarn_store::ResourceRow,
        index: u32,
        restarts: u32,
    ) -> Result<()> {
        let mut plan = self.serve_plan(ws, &key.1, &row.spec).await?;
        // This replica builds its environment from the workspace's package feeds with their
        // credentials: its plan file is in the server's own folder. (A Kubernetes pod's plan
        // is in its manifest, so it has none.)
        if let Some(env) = plan.environment.as_mut() {
            self.jobs.with_index_credentials(ws, env).await?;
        }
        let (dir, token, route) = {
            let runs = self.runtime.runs.lock().expect("endpoint runs lock");
            let run = runs
                .get(key)
                .ok_or_else(|| Error::Conflict("the deployment is gone".into()))?;
            (run.dir.clone(), run.token.clone(), run.route.clone())
        };
        let token = match token {
            Some(t) => t,
            None => self.replica_token(key, &row.created_by).await?,
        };
        let replica_dir = dir.join(format!("replica-{index}"));
        tokio::fs::create_dir_all(&replica_dir)
            .await
            .map_err(Error::Io)?;
        let plan_path = replica_dir.join("plan.json");
        tokio::fs::write(
            &plan_path,
            serde_json::to_vec_pretty(&plan).expect("a plan serialises"),
        )
        .await
        .map_err(Error::Io)?;
        let port = free_port().map_err(Error::Io)?;
        let log_path = dir.join(format!("replica-{index}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::Io)?;
        {
            use std::io::Write;
            let _ = writeln!(
                log,
                "[tarn] starting replica {index} of deployment {} (revision {}, attempt {}) on port {port}",
                key.2,
                revision(&row.spec),
                restarts + 1
            );
        }
        let mut cmd = self.jobs.tarn_process("replica", &token, log)?;
        cmd.arg("--server")
            .arg(&self.config.public_url)
            .arg("--plan")
            .arg(&plan_path)
            .arg("--port")
            .arg(port.to_string())
            .arg("--envs")
            .arg(self.jobs.envs_dir())
            .arg("--log")
            .arg(&log_path);
        let child = cmd.spawn().map_err(Error::Io)?;
        let shared = Arc::new(Mutex::new(Phase::Starting));
        let (stop_tx, stop_rx) = watch::channel(false);
        let rev = revision(&row.spec);
        {
            let mut runs = self.runtime.runs.lock().expect("endpoint runs lock");
            let Some(run) = runs.get_mut(key) else {
                return Ok(());
            };
            run.replicas.push(ReplicaRun {
                index,
                revision: rev,
                port,
                restarts,
                shared: shared.clone(),
                stop: stop_tx,
                handled: false,
            });
        }
        let supervisor = Supervisor {
            endpoints: self.clone(),
            route,
            index,
            port,
            shared,
            readiness: probe_of(&row.spec, "readiness_probe"),
            liveness: probe_of(&row.spec, "liveness_probe"),
            log_path,
        };
        tokio::spawn(supervisor.run(child, stop_rx));
        Ok(())
    }
}

/// The token scope of a deployment's replicas: they read its model and code.
fn replica_scope(key: &DeploymentKey) -> JobScope {
    JobScope {
        workspace_id: key.0.clone(),
        job: format!("deployment/{}/{}", key.1, key.2),
    }
}

/// Watches one replica process: readiness, then liveness, then its end.
struct Supervisor {
    endpoints: Arc<Endpoints>,
    route: Arc<DeploymentRoute>,
    index: u32,
    port: u16,
    shared: Arc<Mutex<Phase>>,
    readiness: Probe,
    liveness: Probe,
    log_path: PathBuf,
}

impl Supervisor {
    fn set(&self, phase: Phase) {
        *self.shared.lock().expect("phase lock") = phase;
        self.endpoints.runtime.wake.notify_one();
    }

    fn note(&self, text: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "[tarn] {text}");
        }
    }

    async fn run(self, mut child: tokio::process::Child, mut stop: watch::Receiver<bool>) {
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let started = Instant::now();
        // Readiness: poll quickly until the first 200, within the probe's whole budget.
        let budget =
            self.readiness.initial_delay + self.readiness.period * self.readiness.failure_threshold;
        loop {
            tokio::select! {
                exit = child.wait() => {
                    // What it left in its process group (its server, a child) goes with it.
                    signal(pid, Signal::SIGKILL);
                    let how = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    self.note(&format!("replica {} exited before it was ready: {how}", self.index));
                    self.set(Phase::Exited { was_ready: false, at: Instant::now() });
                    return;
                }
                _ = stop.changed() => {
                    self.set(Phase::Stopping);
                    stop_group(pid, &mut child).await;
                    self.set(Phase::Exited { was_ready: false, at: Instant::now() });
                    return;
                }
                _ = tokio::time::sleep(READY_POLL) => {
                    if probe(self.port, self.readiness.timeout).await {
                        break;
                    }
                    if started.elapsed() > budget {
                        self.note(&format!(
                            "replica {} was not ready after {} s (readiness_probe: initial_delay + period × failure_threshold); stopping it",
                            self.index,
                            budget.as_secs()
                        ));
                        stop_group(pid, &mut child).await;
                        self.set(Phase::Exited { was_ready: false, at: Instant::now() });
                        return;
                    }
                }
            }
        }
        let replica = Arc::new(Replica::new(
            self.index,
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
        ));
        self.note(&format!(
            "replica {} is ready after {} ms",
            self.index,
            started.elapsed().as_millis()
        ));
        self.route.join(replica.clone());
        self.set(Phase::Ready);
        let mut failures = 0;
        loop {
            tokio::select! {
                exit = child.wait() => {
                    // What it left in its process group (its server, a child) goes with it.
                    signal(pid, Signal::SIGKILL);
                    self.route.leave(self.index);
                    let how = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    self.note(&format!("replica {} exited: {how}", self.index));
                    self.set(Phase::Exited { was_ready: true, at: Instant::now() });
                    return;
                }
                _ = stop.changed() => {
                    // Leave the table first, let requests in flight finish, then stop.
                    self.route.leave(self.index);
                    self.set(Phase::Stopping);
                    let deadline = Instant::now() + self.route.limits().request_timeout + KILL_GRACE;
                    while replica.in_flight() > 0 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    stop_group(pid, &mut child).await;
                    self.set(Phase::Exited { was_ready: true, at: Instant::now() });
                    return;
                }
                _ = tokio::time::sleep(self.liveness.period) => {
                    if probe(self.port, self.liveness.timeout).await {
                        failures = 0;
                    } else {
                        failures += 1;
                        if failures >= self.liveness.failure_threshold {
                            self.note(&format!(
                                "replica {} failed {failures} liveness probes in a row; restarting it",
                                self.index
                            ));
                            self.route.leave(self.index);
                            signal(pid, Signal::SIGKILL);
                        }
                    }
                }
            }
        }
    }
}

/// `GET /` on a replica: does it answer 200 within `timeout`?
async fn probe(port: u16, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = [0u8; 16];
        let mut n = 0;
        while n < 12 {
            let got = s.read(&mut buf[n..]).await?;
            if got == 0 {
                break;
            }
            n += got;
        }
        Ok::<bool, std::io::Error>(
            buf[..n].starts_with(b"HTTP/1.") && buf[9..n].starts_with(b"200"),
        )
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}
