//! Where a job's runner runs. Tarn is the control plane (specs, queue, environments, data,
//! tracking); a backend is the engine that puts `tarn runner` on nodes and says how it is
//! doing. Every backend is reached through [`ComputeBackend`], and the scheduler
//! (`jobs/controller.rs`) is the only caller.
//!
//! Jobs are known to an engine by their Tarn id (`<workspace id>/<job>`), given at launch, so a
//! restarted server finds its jobs again by asking the engine, and nothing is launched twice.
//!
//! **Adding a backend** is this folder only: implement [`ComputeBackend`] in a new module, give
//! its compute type a variant in `tarn_spec::compute::ComputeSpec` (and its fields in
//! `tarn_spec::tables::COMPUTE`), and return it from [`for_spec`]. The conformance suite in
//! `crates/tarn/tests/e2e/backends.rs` says what it must do.

mod kubernetes;
pub(crate) mod local;
mod ray;
mod slurm;
pub(crate) mod spark;

pub(crate) use local::LocalBackend;

use crate::Config;
use crate::error::Result;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use tarn_spec::compute::ComputeSpec;

/// One job, as the scheduler hands it to a backend.
#[derive(Clone, Debug)]
pub struct Launch {
    /// `<workspace id>/<job>`: how the engine names the job, and how the runner says who it is.
    pub job_id: String,
    pub workspace_id: String,
    /// The workspace's name (what the runner's API calls use).
    pub workspace: String,
    pub job: String,
    /// The job-scoped token the runner calls the server with.
    pub token: String,
    /// Nodes the job asks for (`resources.instance_count`).
    pub nodes: u32,
    /// `limits.timeout`: the engine may stop the runner a little after it.
    pub timeout_s: Option<u64>,
    /// `queue_settings.priority` as a number, higher first.
    pub priority: i64,
    /// `resources.instance_type`, for engines that know machine kinds.
    pub instance_type: Option<String>,
    /// The environment's Docker image, for engines that run containers.
    pub image: Option<String>,
}

/// Where a job is in its engine's life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for nodes.
    Pending,
    /// The runner runs (or is being set up) on its nodes.
    Running,
    /// The engine is done with it.
    Ended,
}

/// What an engine says of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The engine's own id, as users see it: `slurm:1234`, `local:4321`.
    pub engine_id: String,
    pub phase: Phase,
    /// The engine's word for the state (`PENDING`, `NODE_FAIL`, `exited`).
    pub state: String,
    /// Why, when the engine says (`Resources`, `exit status 1`).
    pub reason: Option<String>,
    /// The nodes it runs on.
    pub nodes: Vec<String>,
}

impl Observed {
    /// `PENDING (Resources)`, as `job show` names the engine's view.
    pub fn summary(&self) -> String {
        match &self.reason {
            Some(r) if !r.is_empty() && r != "None" => format!("{} ({r})", self.state),
            _ => self.state.clone(),
        }
    }
}

/// A node of an engine, as `compute list-nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineNode {
    pub name: String,
    /// The engine's word (`idle`, `allocated`, `down`).
    pub state: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
}

/// An engine that runs job runners on nodes.
#[async_trait]
pub trait ComputeBackend: Send + Sync {
    /// `local`, `slurm`: shown with jobs and computes.
    fn engine(&self) -> &'static str;

    /// Checks that the engine answers; returns a one-line description of it.
    async fn check(&self) -> Result<String>;

    /// Hands one job to the engine. Returns its engine id.
    async fn launch(&self, job: &Launch) -> Result<String>;

    /// Every Tarn job the engine knows of, by Tarn job id (pending, running, or recently
    /// ended). A job that is not in the answer is unknown to the engine.
    async fn observe(&self) -> Result<HashMap<String, Observed>>;

    /// Stops a job's runner wherever it is (pending or running).
    async fn stop(&self, job_id: &str) -> Result<()>;

    /// What the engine itself says about a job: for a job that never got to run its runner.
    async fn engine_log(&self, job_id: &str) -> Result<String>;

    /// The engine's nodes.
    async fn nodes(&self) -> Result<Vec<EngineNode>>;

    /// The kinds of machine a job may ask for (`resources.instance_type`), where the engine
    /// has them (Kubernetes' instance types).
    async fn instance_types(&self) -> Result<Vec<(String, tarn_spec::compute::InstanceType)>> {
        Ok(vec![])
    }

    /// Wakes `wake` whenever what the engine says of Tarn's jobs or replicas may have changed,
    /// where the engine can tell (a Kubernetes watch); every engine is also looked at on every
    /// pass.
    async fn watch(&self, _wake: Arc<tokio::sync::Notify>) {}

    /// The engine's way of running online deployments' replicas, where it has one
    /// (Kubernetes); the endpoint controller runs the others' replicas on this machine.
    fn serving(&self) -> Option<&dyn ServingBackend> {
        None
    }
}

/// One online deployment, as the endpoint controller hands it to an engine that serves.
#[derive(Clone, Debug)]
pub struct Serve {
    /// `<workspace id>/<endpoint>/<deployment>`: how the engine names the deployment.
    pub id: String,
    pub workspace: String,
    pub endpoint: String,
    pub deployment: String,
    /// The spec's revision: replicas of another revision are replaced, one at a time.
    pub revision: String,
    /// `instance_count`.
    pub replicas: u32,
    /// The replicas' token (they read the model and code with it).
    pub token: String,
    /// The serve plan (`tarn_spec::runplan::ServePlan`) as JSON.
    pub plan: String,
    /// The environment's image, where it has one.
    pub image: Option<String>,
    /// `instance_type`, and the deployment's own `resources` (`requests`, `limits`).
    pub instance_type: Option<String>,
    pub resources: Option<serde_json::Value>,
    /// The deployment's `readiness_probe` and `liveness_probe`.
    pub readiness: ProbeSettings,
    pub liveness: ProbeSettings,
    /// `request_settings.request_timeout_ms`: how long a stopping replica keeps serving.
    pub request_timeout: std::time::Duration,
}

/// A probe as Azure ML's deployments write it (`initial_delay`, `period`, … in seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    pub initial_delay: u32,
    pub period: u32,
    pub timeout: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// What an engine says of one deployment's replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Whether the engine has the deployment at all (else it must be handed again).
    pub exists: bool,
    /// The revision and replica count the engine was last given.
    pub revision: String,
    pub replicas: u32,
    pub pods: Vec<ServedReplica>,
}

/// One replica as the engine runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedReplica {
    /// The engine's name for it (a pod's name).
    pub name: String,
    /// Where its scoring server answers, once it has an address.
    pub addr: Option<std::net::SocketAddr>,
    pub revision: String,
    /// Ready for requests (its readiness probe passes).
    pub ready: bool,
    /// Being stopped: it takes no new requests.
    pub terminating: bool,
    pub restarts: u32,
    /// What it waits on or died of (`CrashLoopBackOff`, `ImagePullBackOff: …`).
    pub reason: Option<String>,
}

/// An engine that runs online deployments' replicas itself (with its own rolling updates and
/// restarts); Tarn's router sends requests to the ready ones.
#[async_trait]
pub trait ServingBackend: Send + Sync {
    /// Checks that the engine lets Tarn run deployments (says what to grant if not).
    async fn check_serving(&self) -> Result<()>;

    /// Makes the engine run the deployment as given (creating or updating it).
    async fn apply(&self, serve: &Serve) -> Result<()>;

    /// The deployment's replicas as the engine runs them.
    async fn served(&self, id: &str) -> Result<Served>;

    /// The ids of every deployment the engine runs for Tarn (to find those left behind).
    async fn served_ids(&self) -> Result<Vec<String>>;

    /// Stops and removes the deployment (nothing left if it was not there).
    async fn unserve(&self, id: &str) -> Result<()>;

    /// The end of a replica's log (`name` from [`ServedReplica`]).
    async fn replica_log(&self, id: &str, name: &str) -> Result<String>;
}

/// The backend of an engine-placed compute (`None` for computes whose nodes Tarn's own
/// scheduler places on this machine: the local backend runs those).
pub(crate) fn for_spec(spec: &ComputeSpec, config: &Config) -> Option<Arc<dyn ComputeBackend>> {
    match spec {
        ComputeSpec::Slurm(s) => Some(Arc::new(slurm::SlurmBackend::new(s.clone(), config))),
        ComputeSpec::Ray(r) => Some(Arc::new(ray::RayBackend::new(r.clone(), config))),
        ComputeSpec::Kubernetes(k) => Some(Arc::new(kubernetes::KubernetesBackend::new(
            k.clone(),
            config,
        ))),
        ComputeSpec::Cluster { .. }
        | ComputeSpec::Instance
        | ComputeSpec::SparkPool(_)
        | ComputeSpec::Other(_) => None,
    }
}

/// Environment variables a runner inherits from the server; everything else is dropped.
pub(crate) const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "JAVA_HOME",
    "TARN_UV",
    "UV_CACHE_DIR",
    "UV_INDEX_URL",
    "PIP_INDEX_URL",
    "SSL_CERT_FILE",
];

/// The shell script that starts a job's runner on an engine's node, which needs nothing but a
/// POSIX shell (the `tarn` binary comes from [`fetch_binary`]); the runner logs into its run
/// folder under `work_dir`.
/// `engine_id` and `node` are shell words that name the job and the node to the runner;
/// `node_rank`, for a job on several nodes, the words for this node's rank and the count.
pub(crate) async fn node_script(
    config: &Config,
    work_dir: &str,
    job: &Launch,
    engine_id: &str,
    node: &str,
    node_rank: Option<(&str, &str)>,
) -> Result<String> {
    use tarn_spec::expr::shell_quote as sq;
    let work = std::path::Path::new(work_dir);
    let dir = work.join("runs").join(&job.job_id);
    Ok(format!(
        r#"#!/bin/sh
set -eu
umask 077
dir={dir}{node_dir}
mkdir -p "$dir"
exec >>"$dir/runner.log" 2>&1
# When the engine started this node (nanoseconds where `date` has them): the engine's part
# of a job's start, told apart from Tarn's (benches/engines.py).
echo "tarn: node script started at $(date +%s%N)"
{fetch}export TARN_ENGINE_ID={engine_id} TARN_NODE={node}{ranks}
exec "$cache/tarn" runner --server {server} --workspace {ws} --job {name} --job-id {id} --dir "$dir" --envs {envs}
"#,
        dir = sq(&dir.display().to_string()),
        fetch = fetch_binary(config, work).await?,
        server = sq(&config.public_url),
        ws = sq(&job.workspace),
        name = sq(&job.job),
        id = sq(&job.job_id),
        envs = sq(&work.join("envs").display().to_string()),
        // Each node of a multi-node job its own folder (nodes may share a disk).
        node_dir = node_rank
            .map(|(rank, _)| format!("/node-{rank}"))
            .unwrap_or_default(),
        ranks = node_rank
            .map(|(rank, count)| format!(" TARN_NODE_RANK={rank} TARN_NODE_COUNT={count}"))
            .unwrap_or_default(),
    ))
}

/// The shell lines that leave the server's `tarn` binary at `$cache/tarn` on a node: from the
/// node's cache (by checksum), else the server's own path when the node shares it, else a
/// download from the server (`curl`, `wget` or, in slim Python images, `python3`) with
/// `$TARN_RUNNER_TOKEN`, checked against the checksum.
pub(crate) async fn fetch_binary(config: &Config, work: &std::path::Path) -> Result<String> {
    use tarn_spec::expr::shell_quote as sq;
    let sha = &crate::process::runner_binary_sha(&config.runner_program)
        .await
        .map_err(crate::Error::Io)?;
    let cache = work.join("bin").join(sha);
    let url = format!(
        "{}/api/v1/runner/binary",
        config.public_url.trim_end_matches('/')
    );
    Ok(format!(
        r#"cache={cache}
if [ ! -x "$cache/tarn" ]; then
  mkdir -p "$cache"
  tmp="$cache/tarn.$$"
  if [ -x {program} ] && [ "$(sha256sum {program} | cut -d' ' -f1)" = {sha} ]; then
    cp {program} "$tmp"
  elif command -v curl >/dev/null; then
    curl -fsS -H "Authorization: Bearer $TARN_RUNNER_TOKEN" -o "$tmp" {url}
  elif command -v wget >/dev/null; then
    wget -q --header="Authorization: Bearer $TARN_RUNNER_TOKEN" -O "$tmp" {url}
  else
    # Slim Python images have neither curl nor wget.
    python3 -c 'import os, sys, urllib.request as u
r = u.Request(sys.argv[1], headers={{"Authorization": "Bearer " + os.environ["TARN_RUNNER_TOKEN"]}})
open(sys.argv[2], "wb").write(u.urlopen(r).read())' {url} "$tmp"
  fi
  if [ "$(sha256sum "$tmp" | cut -d' ' -f1)" != {sha} ]; then
    echo "the tarn binary from {url} does not match its checksum {sha}" >&2
    rm -f "$tmp"
    exit 1
  fi
  chmod 755 "$tmp"
  mv -f "$tmp" "$cache/tarn"
fi
"#,
        cache = sq(&cache.display().to_string()),
        program = sq(&config.runner_program.display().to_string()),
        sha = sq(sha),
        url = sq(&url),
    ))
}

/// The environment a runner on an engine's node gets from the server: the job's token, how to
/// isolate (the node probes what it can, unless the server was told not to), which folder to
/// hide (the server's home, where the node shares its disk), and the server's settings for
/// package indexes, uv and certificates.
pub(crate) fn node_env(config: &Config, token: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED_ENV
        .iter()
        .filter(|k| !matches!(**k, "PATH" | "HOME" | "USER" | "LOGNAME" | "TMPDIR"))
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let isolation = match config.isolation.to_env().as_str() {
        "none" => "none",
        _ => "probe",
    };
    env.extend([
        ("TARN_RUNNER_TOKEN".to_string(), token.to_string()),
        (crate::isolation::ENV.to_string(), isolation.to_string()),
        ("TARN_HIDE".to_string(), config.home.display().to_string()),
    ]);
    env
}
