//! `tarn runner`: runs one job on its node(s), for every backend alike. It fetches the run plan
//! with the job's own token, prepares the environment, materialises the code and the inputs,
//! runs the command (one process per rank, each in its own process group), streams the log,
//! uploads outputs and artifacts, and reports each status. It outlives a crash of the server:
//! reports and log appends are retried with backoff until the server is back.

mod env;
mod log;
mod overlay;

pub use env::find_uv;
pub(crate) use env::{host_python, prepare as prepare_env};
pub(crate) use log::Log;

use crate::client::{ApiError, Client, enc};
use crate::transfer;
use anyhow::{Context, bail};
use log::Shipper;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tarn_core::isolation;
use tarn_spec::runplan::{Input, Location, RunPlan};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long processes get between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a runner keeps trying to reach a server that is down.
const SERVER_PATIENCE: Duration = Duration::from_secs(600);
/// How often a running job's log is copied to `user_logs/std_log.txt` in its artifacts.
const LOG_ARTIFACT_EVERY: Duration = Duration::from_secs(10);
/// Bytes of log kept with a failed job.
const TAIL: u64 = 4096;
/// Batch endpoints' scoring driver; a batch job's command runs it as `$AZUREML_BATCH_DRIVER`.
const BATCH_DRIVER: &str = include_str!("batch_driver.py");

#[derive(clap::Args)]
pub struct RunnerCmd {
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub workspace: String,
    #[arg(long)]
    pub job: String,
    /// `<workspace id>/<job>`: how the server recognises this process after a restart.
    #[arg(long)]
    pub job_id: String,
    /// The run folder on this node.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where environments are cached.
    #[arg(long)]
    pub envs: PathBuf,
}

struct Runner {
    client: Arc<Client>,
    ws: String,
    job: String,
    dir: PathBuf,
    token: String,
    /// This runner's node, when the job runs on several nodes of an engine.
    role: Option<NodeRole>,
    /// Rank 0's port (the lead picks it; the others learn it from the plan).
    master_port: u16,
}

/// Which node of a multi-node job this runner is (`TARN_NODE_RANK` of `TARN_NODE_COUNT`, set by
/// an engine's node script). Node 0, the lead, reports the job's status, waits for the other
/// nodes and finishes the job; every other node runs its ranks, ships its own log
/// (`user_logs/std_log_node_<k>.txt`), uploads its outputs and reports only its own end.
/// Without it one runner runs every rank (the local backend's nodes share its machine).
#[derive(Clone, Copy, Debug)]
struct NodeRole {
    rank: u32,
    count: u32,
}

impl NodeRole {
    fn from_env() -> Option<NodeRole> {
        let var = |k: &str| std::env::var(k).ok()?.trim().parse::<u32>().ok();
        let (rank, count) = (var("TARN_NODE_RANK")?, var("TARN_NODE_COUNT")?);
        (count > 1 && rank < count).then_some(NodeRole { rank, count })
    }

    fn is_lead(&self) -> bool {
        self.rank == 0
    }
}

/// The address other nodes reach this one at: the one this machine uses towards the server.
fn reachable_address(server: &str) -> String {
    let host_port = server
        .split("://")
        .nth(1)
        .unwrap_or(server)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let target = if host_port.contains(':') {
        host_port
    } else {
        format!("{host_port}:80")
    };
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect(&target)?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

/// How the command ended.
enum Ending {
    Exited(i32),
    /// Exited after the kernel killed a process for the node's memory limit.
    OutOfMemory {
        code: i32,
        limit_mb: u64,
    },
    Canceled,
    TimedOut(u64),
}

/// Whether to keep waiting for an unreachable server: not once its home's lock file is gone (the
/// server was removed, not restarted — e.g. a test's temporary home). The lock file, not the
/// home folder: the runner itself writes under the home (its run folder), the lock file only the
/// server makes, and it is there whichever store holds the metadata.
pub(crate) fn server_may_return() -> bool {
    std::env::var_os("TARN_HOME").is_none_or(|h| Path::new(&h).join("tarn.lock").exists())
}

/// Is this an error the server gave (as opposed to not reaching it)?
fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
    e.downcast_ref::<ApiError>()
}

/// Did this fail for want of the server (not reached, or the connection lost mid-request), as
/// opposed to an answer it gave or a local error?
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.status().is_none())
    })
}

/// Runs `op` until it succeeds, again and again (backing off, for up to `SERVER_PATIENCE`)
/// while it fails for want of a server that may come back (a restart, a leader killed); an
/// error that `final_error` picks out is returned at once.
async fn while_server_away<T, Fut>(
    final_error: impl Fn(&anyhow::Error) -> bool,
    op: impl Fn() -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + SERVER_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e)
                if final_error(&e)
                    || tokio::time::Instant::now() >= deadline
                    || !server_may_return() =>
            {
                return Err(e);
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

pub async fn run(cmd: RunnerCmd) -> anyhow::Result<ExitCode> {
    let token = std::env::var("TARN_RUNNER_TOKEN").context("TARN_RUNNER_TOKEN is not set")?;
    let home = std::env::var_os("TARN_HOME").map(PathBuf::from);
    let client = Arc::new(Client::new(
        Some(&cmd.server),
        Some(&token),
        home.as_deref().unwrap_or(Path::new(".")),
    )?);
    // Orphans of the job's processes come to this runner, which kills them when the job ends.
    isolation::leftovers::adopt_orphans().context("becoming the job's subreaper")?;
    let role = NodeRole::from_env();
    let runner = Runner {
        client,
        ws: cmd.workspace.clone(),
        job: cmd.job.clone(),
        dir: cmd.dir.clone(),
        token,
        role,
        master_port: free_port()?,
    };
    tokio::fs::create_dir_all(&runner.dir).await?;
    let (log_name, log_url) = match role {
        Some(r) if !r.is_lead() => (
            format!("std_log_node_{}.txt", r.rank),
            format!("{}?node={}", runner.url("runner/log"), r.rank),
        ),
        _ => ("std_log.txt".to_string(), runner.url("runner/log")),
    };
    let log = Log::create(&runner.dir.join(log_name))?;
    let shipper = Shipper::start(runner.client.clone(), log_url.clone(), log.clone());
    let pid = std::process::id();
    let mut hello = json!({"pid": pid});
    for (var, field) in [("TARN_ENGINE_ID", "engine_id"), ("TARN_NODE", "node")] {
        if let Ok(value) = std::env::var(var) {
            hello[field] = json!(value);
        }
    }
    if role.is_some_and(|r| r.is_lead()) {
        hello["master"] = json!(format!(
            "{}:{}",
            reachable_address(&cmd.server),
            runner.master_port
        ));
    }
    if let Err(e) = runner.report("Preparing", hello).await {
        eprintln!("runner: the server refused the job: {e}");
        return Ok(ExitCode::FAILURE);
    }
    // On an engine's node the server's home is not this runner's: it is only hidden from
    // user code (when the node shares the server's disk).
    let hidden = home
        .clone()
        .or_else(|| std::env::var_os("TARN_HIDE").map(PathBuf::from));
    let outcome = runner
        .execute(&cmd, hidden.as_deref(), &log, &shipper)
        .await;
    let (status, extra) = match outcome {
        Ok((Ending::Exited(0), Ok(()))) => ("Completed", json!({"exit_code": 0})),
        Ok((Ending::Exited(code), uploads)) => {
            let mut error = format!("the command exited with code {code}");
            if let Err(e) = uploads {
                error.push_str(&format!("; and uploading its outputs failed: {e:#}"));
            }
            log.note(&error);
            ("Failed", json!({"exit_code": code, "error": error}))
        }
        Ok((Ending::OutOfMemory { code, limit_mb }, _)) => {
            let error = format!(
                "the job ran out of memory: a node may use {:.1} GiB, and the kernel stopped the command when it needed more (exit code {code}); use a compute with a bigger size or fewer nodes",
                limit_mb as f64 / 1024.0
            );
            log.note(&error);
            ("Failed", json!({"exit_code": code, "error": error}))
        }
        Ok((Ending::Canceled, _)) => {
            log.note("canceled: the processes were stopped");
            ("Canceled", json!({"error": "canceled by the user"}))
        }
        Ok((Ending::TimedOut(s), _)) => {
            let error = format!("the job ran past its limits.timeout of {s} s and was stopped");
            log.note(&error);
            ("Failed", json!({"error": error}))
        }
        Err(e) => {
            let error = format!("{e:#}");
            log.note(&format!("error: {error}"));
            ("Failed", json!({"error": error}))
        }
    };
    shipper
        .finish(&runner.client, &log_url, &log, SERVER_PATIENCE)
        .await;
    let mut body = extra;
    if status != "Completed" {
        body["log_tail"] = json!(log.tail(TAIL));
    }
    if let Err(e) = runner.report(status, body).await {
        eprintln!("runner: could not report {status}: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

impl Runner {
    fn url(&self, tail: &str) -> String {
        format!(
            "/workspaces/{}/jobs/{}/{tail}",
            enc(&self.ws),
            enc(&self.job)
        )
    }

    /// Reports a status, retrying while the server cannot be reached. Returns the reply.
    async fn report(&self, status: &str, mut body: Json) -> anyhow::Result<Json> {
        body["status"] = json!(status);
        if let Some(r) = self.role.filter(|r| !r.is_lead()) {
            body["node_rank"] = json!(r.rank);
        }
        let url = self.url("runner/status");
        while_server_away(|e| api_error(e).is_some(), || self.client.post(&url, &body)).await
    }

    async fn plan(&self) -> anyhow::Result<RunPlan> {
        let deadline = tokio::time::Instant::now() + SERVER_PATIENCE;
        loop {
            match self.client.get(&self.url("runner/plan")).await {
                Ok(v) => {
                    let plan: RunPlan =
                        serde_json::from_value(v).context("the run plan is unreadable")?;
                    // The other nodes start their ranks once the lead said where rank 0 is.
                    let waiting = self.role.is_some_and(|r| !r.is_lead()) && plan.master.is_none();
                    if !waiting {
                        return Ok(plan);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        bail!("node 0 of the job never started");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e)
                    if api_error(&e).is_some()
                        || tokio::time::Instant::now() >= deadline
                        || !server_may_return() =>
                {
                    return Err(e);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Everything between Preparing and the final report: the command's ending, and whether
    /// its outputs were uploaded.
    async fn execute(
        &self,
        cmd: &RunnerCmd,
        home: Option<&Path>,
        log: &Log,
        shipper: &Shipper,
    ) -> anyhow::Result<(Ending, anyhow::Result<()>)> {
        let plan = self.plan().await?;
        log.note(&format!(
            "job {} on {} ({} process{})",
            plan.job,
            plan.nodes.join(", "),
            plan.world_size(),
            if plan.world_size() == 1 { "" } else { "es" }
        ));
        let venv = env::prepare(&plan.environment, &cmd.envs, home, log).await?;
        // The job's own `python` and `pip`, over the shared environment (or the host's).
        let pip = overlay::shared_pip(&cmd.envs, home, log).await;
        let own_env = overlay::make(
            &self.dir.join("python"),
            venv.as_deref(),
            &env::host_python(),
            pip.as_deref(),
            &cmd.envs,
        )
        .context("making the job's Python environment")?;

        let cwd = match (&plan.code, &plan.git_code) {
            (Some(code), _) => {
                let dest = self.dir.join("code");
                self.fetch(code, &dest, true, log)
                    .await
                    .context("downloading the code")?;
                dest
            }
            (None, Some(git)) => clone_code(git, &self.dir.join("code"), log)
                .await
                .context("cloning the code")?,
            (None, None) => self.dir.join("wd"),
        };
        tokio::fs::create_dir_all(&cwd).await?;
        let mut values: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut env_vars: BTreeMap<String, String> = BTreeMap::new();
        let mut grants = isolation::Grants {
            cwd: cwd.clone(),
            ..Default::default()
        };
        for (name, input) in &plan.inputs {
            let (value, linked) = self.materialise(name, input, log).await?;
            grants.read.extend(linked);
            env_vars.insert(format!("AZURE_ML_INPUT_{name}"), value.clone());
            values.insert(vec!["inputs".into(), name.clone()], value);
        }
        let mut output_paths = BTreeMap::new();
        for (name, output) in &plan.outputs {
            let folder = self.dir.join("outputs").join(name);
            tokio::fs::create_dir_all(&folder).await?;
            let local = if output.type_ == "uri_file" {
                folder.join(file_name(&output.location.path))
            } else {
                folder
            };
            let text = local.display().to_string();
            env_vars.insert(format!("AZURE_ML_OUTPUT_{name}"), text.clone());
            values.insert(vec!["outputs".into(), name.clone()], text);
            output_paths.insert(name.clone(), local);
        }
        values.insert(vec!["name".into()], plan.job.clone());
        let segments =
            tarn_spec::expr::parse(&plan.command).map_err(|e| anyhow::anyhow!("command: {e}"))?;
        let command =
            tarn_spec::expr::render(&segments, &|path: &[String]| values.get(path).cloned())
                .map_err(|e| anyhow::anyhow!("command: {e}"))?;

        env_vars.extend(plan.environment_variables.clone());
        if plan.command.contains("AZUREML_BATCH_DRIVER") {
            // The driver's folder is the ranks' shared scratch (model link, mini-batch state).
            let folder = self.dir.join("batch");
            tokio::fs::create_dir_all(&folder).await?;
            let driver = folder.join("tarn_batch_driver.py");
            tokio::fs::write(&driver, BATCH_DRIVER).await?;
            env_vars.insert("AZUREML_BATCH_DRIVER".into(), driver.display().to_string());
            grants.write.push(folder);
        }
        if plan.spark_ships_env {
            let archive = env::spark_archive(venv.as_deref(), &self.dir).await?;
            env_vars.insert("TARN_SPARK_ENV".into(), archive.display().to_string());
            grants.read.push(archive);
        }
        env_vars.insert("MLFLOW_TRACKING_URI".into(), plan.tracking_uri.clone());
        env_vars.insert("MLFLOW_TRACKING_TOKEN".into(), self.token.clone());
        // Tarn's own API, for what a job asks of its workspace with the same token (a
        // connection's secrets: `POST $TARN_API_URL/workspaces/$TARN_WORKSPACE/connections/<name>/list-secrets`).
        if let Some((server, _)) = plan.tracking_uri.rsplit_once("/ws/") {
            env_vars.insert("TARN_API_URL".into(), format!("{server}/api/v1"));
            env_vars.insert("TARN_WORKSPACE".into(), plan.workspace.clone());
        }
        env_vars.insert("MLFLOW_RUN_ID".into(), plan.job.clone());
        env_vars.insert("MLFLOW_EXPERIMENT_NAME".into(), plan.experiment.clone());
        env_vars.insert("AZUREML_RUN_ID".into(), plan.job.clone());
        env_vars.insert("AZUREML_EXPERIMENT_NAME".into(), plan.experiment.clone());
        env_vars.insert("PYTHONUNBUFFERED".into(), "1".into());
        let cpus = match plan.cpus_per_node {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            n => n,
        };
        for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
            env_vars
                .entry(var.into())
                .or_insert_with(|| cpus.to_string());
        }
        let mut path = std::env::var("PATH").unwrap_or_default();
        if let Some(venv) = &venv {
            path = format!("{}:{path}", venv.join("bin").display());
            crate::usercode::grant_venv(&mut grants, venv);
        }
        env_vars.insert(
            "PATH".into(),
            format!("{}:{path}", own_env.join("bin").display()),
        );
        env_vars.insert("VIRTUAL_ENV".into(), own_env.display().to_string());
        grants.write.push(own_env.clone());
        grants
            .read
            .extend(tarn_core::isolation::interpreter_folders(&own_env));
        grants.read.extend(pip);
        let limits = crate::usercode::limits(plan.cpus_per_node, plan.memory_mb_per_node);
        let (sandbox, identity) = self.sandbox(home, grants, limits, &mut env_vars).await?;

        log.note(&format!("running: {command}"));
        // While the command runs, its log is also copied to the run's artifacts now and then.
        let log_dest = format!("{}/user_logs", plan.artifacts.path.trim_end_matches('/'));
        let copier = async {
            loop {
                tokio::time::sleep(LOG_ARTIFACT_EVERY).await;
                let _ = self
                    .push(log.path(), &plan.artifacts.datastore, &log_dest)
                    .await;
            }
        };
        let ending = tokio::select! {
            ending = self.run_command(&plan, &command, &cwd, &env_vars, sandbox.as_ref(), log, shipper) => ending?,
            never = copier => never,
        };
        // A command the kernel stopped at the node's memory limit fails saying so.
        let out_of_memory = identity.as_ref().is_some_and(|i| i.oom_kills() > 0);
        // Nothing the job started is left running while its files are read and uploaded: not
        // under its uid, and not among this runner's descendants (a `setsid` daemon included).
        drop(identity);
        tokio::task::spawn_blocking(isolation::leftovers::kill_descendants).await?;
        // The lead of a multi-node job ends it once every node has.
        let ending = match (ending, self.role) {
            (Ending::Exited(code), Some(role)) if role.is_lead() => {
                self.wait_for_nodes(role, code, log).await?
            }
            (ending, _) => ending,
        };
        let ending = match ending {
            Ending::Exited(code) if code != 0 && out_of_memory => Ending::OutOfMemory {
                code,
                limit_mb: limits.memory_bytes >> 20,
            },
            ending => ending,
        };
        // A node other than the lead uploads its outputs and log before it reports its end:
        // the lead ends the job once every node has, and the job's files are then all there.
        let member = self.role.is_some_and(|r| !r.is_lead());
        let uploaded_first = if member {
            Some(self.upload_results(&plan, &cwd, &output_paths, log).await)
        } else {
            None
        };
        if let Ending::Exited(code) | Ending::OutOfMemory { code, .. } = ending {
            self.report("Finalizing", json!({"exit_code": code}))
                .await?;
        }
        let uploads = match uploaded_first {
            Some(uploads) => uploads,
            None => self.upload_results(&plan, &cwd, &output_paths, log).await,
        };
        if let Err(e) = &uploads {
            log.note(&format!("error: uploading the results failed: {e:#}"));
        }
        let uploads = match (&ending, uploads) {
            (Ending::Exited(0), Err(e)) => return Err(e.context("uploading the outputs")),
            (_, u) => u,
        };
        Ok((ending, uploads))
    }

    /// The policy every rank runs under (none when this host isolates nothing): its own
    /// folders in the run folder (home, `/tmp`, outputs, working folder) writable, inputs and
    /// environment read-only, `TARN_HOME` otherwise hidden, and its own uid where it can, under
    /// `limits` (dropping it kills whatever the job left running).
    async fn sandbox(
        &self,
        home: Option<&Path>,
        mut grants: isolation::Grants,
        limits: isolation::cgroup::Limits,
        env_vars: &mut BTreeMap<String, String>,
    ) -> anyhow::Result<(
        Option<isolation::SandboxPolicy>,
        Option<isolation::Identity>,
    )> {
        let outputs = self.dir.join("outputs");
        tokio::fs::create_dir_all(&outputs).await?;
        let inputs = self.dir.join("inputs");
        if inputs.exists() {
            grants.read.push(inputs);
        }
        grants.write.extend([grants.cwd.clone(), outputs]);
        let path = env_vars
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        // One identity per node of the job (nodes of an engine may share a machine).
        let key = match self.role {
            Some(r) => format!("{}/{}/node-{}", self.ws, self.job, r.rank),
            None => format!("{}/{}", self.ws, self.job),
        };
        let identity = crate::usercode::identity(&key, None, limits).await?;
        let user = crate::usercode::prepare(identity, home, &self.dir, grants, &path).await?;
        env_vars.extend(user.env);
        Ok((user.policy, user.identity))
    }

    /// Waits until every other node of the job has reported its end; the job's exit code is
    /// the lead's own, else the first other node's that failed.
    async fn wait_for_nodes(&self, role: NodeRole, own: i32, log: &Log) -> anyhow::Result<Ending> {
        log.note(&format!("waiting for the other {} node(s)", role.count - 1));
        loop {
            let reply = self.report("Running", json!({})).await?;
            if reply["cancel_requested"].as_bool() == Some(true) {
                return Ok(Ending::Canceled);
            }
            let exits: BTreeMap<u32, i32> =
                serde_json::from_value(reply["node_exits"].clone()).unwrap_or_default();
            if (1..role.count).all(|k| exits.contains_key(&k)) {
                for (k, code) in &exits {
                    log.note(&format!("node {k} exited with code {code}"));
                }
                let code = if own != 0 {
                    own
                } else {
                    exits.values().copied().find(|c| *c != 0).unwrap_or(0)
                };
                return Ok(Ending::Exited(code));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Runs the command on every rank, following the log, the cancel flag and the timeout.
    #[allow(clippy::too_many_arguments)] // the command and what it runs with, each once
    async fn run_command(
        &self,
        plan: &RunPlan,
        command: &str,
        cwd: &Path,
        env_vars: &BTreeMap<String, String>,
        sandbox: Option<&isolation::SandboxPolicy>,
        log: &Log,
        shipper: &Shipper,
    ) -> anyhow::Result<Ending> {
        let world = plan.world_size();
        let per_node = world / plan.instance_count.max(1);
        // This node's ranks (every rank when one runner runs them all), and where rank 0 is.
        let ranks = match self.role {
            Some(r) => r.rank * per_node..(r.rank + 1) * per_node,
            None => 0..world,
        };
        let master = match (self.role, &plan.master) {
            (Some(_), Some(m)) => m
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?))),
            _ => None,
        }
        .unwrap_or_else(|| ("127.0.0.1".to_string(), self.master_port));
        let mut children = vec![];
        let mut groups = vec![];
        let mut copiers = vec![];
        for rank in ranks {
            let mut child_cmd = isolation::command(sandbox, "/bin/sh")?;
            child_cmd
                .arg("-c")
                .arg(command)
                .current_dir(cwd)
                .env_clear()
                .envs(base_env())
                .envs(env_vars)
                .envs(distribution_env(plan, rank, per_node, &master))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = child_cmd
                .spawn()
                .with_context(|| format!("starting the command (rank {rank})"))?;
            groups.push(child.id().map(|id| Pid::from_raw(id as i32)));
            let prefix = if world > 1 {
                format!("[rank {rank}] ")
            } else {
                String::new()
            };
            for stream in [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let (log, prefix) = (log.clone(), prefix.clone());
                copiers.push(tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut line = Vec::new();
                    while let Ok(n) = reader.read_until(b'\n', &mut line).await {
                        if n == 0 {
                            break;
                        }
                        if !line.ends_with(b"\n") {
                            line.push(b'\n');
                        }
                        let mut out = prefix.clone().into_bytes();
                        out.extend_from_slice(&line);
                        log.write(&out);
                        line.clear();
                    }
                }));
            }
            children.push(child);
        }
        let reply = match self.report("Running", json!({})).await {
            Ok(reply) => reply,
            Err(e) => {
                // The server will not have the job run (it ended, or it was deleted): stop.
                stop_groups(&groups, &mut children).await;
                return Err(e.context("the server refused the job"));
            }
        };
        let canceled_early = reply["cancel_requested"].as_bool() == Some(true);

        let wait_all = async {
            let mut first_failure = 0;
            for child in children.iter_mut() {
                let status = child.wait().await?;
                let code = status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                });
                if code != 0 && first_failure == 0 {
                    first_failure = code;
                }
            }
            Ok::<i32, std::io::Error>(first_failure)
        };
        let timeout = plan.timeout_s.map(Duration::from_secs);
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let canceled = async {
            if canceled_early {
                return;
            }
            while !shipper.cancel.load(Ordering::SeqCst) {
                let notified = shipper.cancel_notify.notified();
                if shipper.cancel.load(Ordering::SeqCst) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
            }
        };
        let orphaned = async {
            while server_may_return() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        // A Spark job's application: found in its driver's web UI, reported once.
        let spark = async {
            if let Some(app) = &plan.spark_app
                && let Some(found) = find_spark_app(app).await
            {
                log.note(&format!(
                    "Spark application {} (web UI {})",
                    found.application_id, found.ui_url
                ));
                let _ = self.report("Running", json!({ "spark": found })).await;
            }
            std::future::pending::<()>().await
        };
        let ending = tokio::select! {
            code = wait_all => Ending::Exited(code?),
            _ = spark => unreachable!("it never ends"),
            _ = canceled => Ending::Canceled,
            _ = orphaned => Ending::Canceled,
            _ = deadline => Ending::TimedOut(plan.timeout_s.unwrap_or(0)),
        };
        if !matches!(ending, Ending::Exited(_)) {
            stop_groups(&groups, &mut children).await;
        }
        // Nothing of a job outlives it: background processes it left are stopped too (and
        // they would otherwise hold its output pipes open).
        for pid in groups.iter().flatten() {
            let _ = killpg(*pid, Signal::SIGKILL);
        }
        for c in copiers {
            let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
        }
        Ok(ending)
    }

    /// Downloads a datastore location into `dest` (a folder; a single file lands inside it).
    async fn fetch(
        &self,
        loc: &Location,
        dest: &Path,
        folder: bool,
        log: &Log,
    ) -> anyhow::Result<()> {
        // A server that goes away meanwhile (a leader that stopped) is waited for, as for
        // reports: the download starts again once it (or the next leader) answers.
        while_server_away(
            |e| !unreachable(e),
            || {
                // A shared asset's files are read in its registry, with the job's token.
                let ws = loc.workspace.as_deref().unwrap_or(&self.ws);
                fetch(&self.client, ws, loc, dest, folder, log)
            },
        )
        .await
    }

    /// Makes an input available and returns what `${{inputs.<name>}}` becomes, and a path
    /// outside the run folder that the user's code must be able to read (a linked input).
    async fn materialise(
        &self,
        name: &str,
        input: &Input,
        log: &Log,
    ) -> anyhow::Result<(String, Option<PathBuf>)> {
        let dest = self.dir.join("inputs").join(name);
        match input {
            Input::Literal { value } => Ok((value.clone(), None)),
            Input::Data { mode, uri, .. }
                if mode == "direct" || mode == "eval_mount" || mode == "eval_download" =>
            {
                Ok((uri.clone(), None))
            }
            Input::Data {
                type_,
                mode,
                location,
                ..
            } => {
                let is_file = type_ == "uri_file";
                if mode == "ro_mount"
                    && let Some(local) = location.local_path.as_ref().map(PathBuf::from)
                    && local.exists()
                {
                    // A local datastore on this machine: link to the data instead of copying it.
                    log.note(&format!(
                        "input {name}: linked read-only from {}",
                        local.display()
                    ));
                    if is_file {
                        return Ok((local.display().to_string(), Some(local)));
                    }
                    if let Some(parent) = dest.parent() {
                        tokio::fs::create_dir_all(parent).await?;
                    }
                    let _ = tokio::fs::remove_file(&dest).await;
                    tokio::fs::symlink(&local, &dest).await?;
                    return Ok((dest.display().to_string(), Some(local)));
                }
                self.fetch(location, &dest, !is_file, log)
                    .await
                    .with_context(|| format!("input {name}"))?;
                Ok((
                    if is_file {
                        dest.join(file_name(&location.path)).display().to_string()
                    } else {
                        dest.display().to_string()
                    },
                    None,
                ))
            }
            Input::PublicBlob { mode, uri, .. } if mode == "direct" => Ok((uri.clone(), None)),
            Input::PublicBlob {
                type_,
                uri,
                account,
                container,
                endpoint,
                path,
                ..
            } => {
                log.note(&format!("input {name}: reading {uri} anonymously"));
                let spec = serde_json::json!({
                    "type": "azure_blob",
                    "account_name": account,
                    "container_name": container,
                    "endpoint": endpoint,
                });
                let target = fetch_public(&spec, path, type_ == "uri_file", &dest)
                    .await
                    .with_context(|| format!("input {name}: {uri}"))?;
                Ok((target.display().to_string(), None))
            }
            Input::Web { url, .. } => {
                tokio::fs::create_dir_all(&dest).await?;
                let target = dest.join(file_name(url.split('?').next().unwrap_or(url)));
                log.note(&format!("input {name}: downloading {url}"));
                let resp = reqwest::get(url)
                    .await
                    .with_context(|| format!("input {name}: cannot fetch {url}"))?;
                if !resp.status().is_success() {
                    bail!("input {name}: {url} answered {}", resp.status());
                }
                let bytes = resp.bytes().await?;
                tokio::fs::write(&target, &bytes).await?;
                Ok((target.display().to_string(), None))
            }
        }
    }

    /// Uploads named outputs, then `./outputs`, `./logs` and the log as run artifacts.
    async fn upload_results(
        &self,
        plan: &RunPlan,
        cwd: &Path,
        outputs: &BTreeMap<String, PathBuf>,
        log: &Log,
    ) -> anyhow::Result<()> {
        for (name, local) in outputs {
            let output = &plan.outputs[name];
            if !local.exists() {
                if output.type_ == "uri_file" {
                    bail!(
                        "output {name}: the command did not write {}",
                        local.display()
                    );
                }
                continue;
            }
            let dest = if output.type_ == "uri_file" {
                parent_of(&output.location.path)
            } else {
                output.location.path.trim_end_matches('/').to_string()
            };
            let n = self
                .push(local, &output.location.datastore, &dest)
                .await
                .with_context(|| format!("output {name}"))?;
            log.note(&format!("output {name}: {n} file(s) to {}", output.uri));
        }
        let artifacts = plan.artifacts.path.trim_end_matches('/');
        for folder in ["outputs", "logs"] {
            let local = cwd.join(folder);
            if local.is_dir() {
                let n = self
                    .push(
                        &local,
                        &plan.artifacts.datastore,
                        &format!("{artifacts}/{folder}"),
                    )
                    .await
                    .with_context(|| format!("artifacts ./{folder}"))?;
                log.note(&format!("artifacts: {n} file(s) from ./{folder}"));
            }
        }
        log.note("uploading user_logs/std_log.txt");
        self.push(
            log.path(),
            &plan.artifacts.datastore,
            &format!("{artifacts}/user_logs"),
        )
        .await
        .context("the log")?;
        Ok(())
    }

    /// Uploads a file or a folder's files under `dest`; returns how many files. An upload cut
    /// off by the server going away (a restart, a leader killed) is sent again, as reports are:
    /// uploads land at fixed paths, so sending twice is harmless, and the job's work is kept.
    async fn push(&self, local: &Path, datastore: &str, dest: &str) -> anyhow::Result<usize> {
        let files = transfer::scan_untrusted(local).await?;
        let bar = indicatif::ProgressBar::hidden();
        while_server_away(
            |e| !unreachable(e),
            || transfer::upload(&self.client, &self.ws, datastore, dest, &files, &bar),
        )
        .await?;
        Ok(files.len())
    }
}

/// Clones a job's git code into `dest` (its `subdirectory` is the job's folder, returned),
/// with the connection's credentials as an HTTP header; logs the commit it got.
async fn clone_code(
    git: &tarn_spec::runplan::GitCode,
    dest: &Path,
    log: &Log,
) -> anyhow::Result<PathBuf> {
    let source = &git.source;
    let run = |args: Vec<std::ffi::OsString>| {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .envs(git.git_env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    // A commit id is fetched whole; a branch or tag, just its tip.
    let commit = source
        .reference
        .as_deref()
        .filter(|r| r.len() >= 7 && r.chars().all(|c| c.is_ascii_hexdigit()));
    let mut args: Vec<std::ffi::OsString> = vec!["clone".into(), "--quiet".into()];
    if commit.is_none() {
        args.extend(["--depth".into(), "1".into()]);
        if let Some(r) = &source.reference {
            args.extend(["--branch".into(), r.into()]);
        }
    }
    args.extend(["--".into(), source.url.clone().into(), dest.into()]);
    let mut out = run(args.clone()).output().await?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("shallow") {
        // A server on git's "dumb" HTTP protocol serves whole clones only.
        let _ = tokio::fs::remove_dir_all(dest).await;
        args.retain(|a| a != "--depth" && a != "1");
        out = run(args).output().await?;
    }
    if !out.status.success() {
        bail!(
            "git clone {}: {}",
            source.url,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if let Some(commit) = commit {
        let out = run(vec![
            "-C".into(),
            dest.into(),
            "checkout".into(),
            "--quiet".into(),
            commit.into(),
        ])
        .output()
        .await?;
        if !out.status.success() {
            bail!(
                "git checkout {commit}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let head = run(vec![
        "-C".into(),
        dest.into(),
        "rev-parse".into(),
        "HEAD".into(),
    ])
    .output()
    .await?;
    log.note(&format!(
        "code: {} at commit {}{}",
        source.url,
        String::from_utf8_lossy(&head.stdout).trim(),
        git.connection
            .as_deref()
            .map(|c| format!(" (credentials of connection {c})"))
            .unwrap_or_default()
    ));
    match &source.subdirectory {
        Some(dir) => {
            let dir = tarn_spec::uri::StorePath::parse(dir)?;
            let folder = dest.join(dir.as_str());
            if !folder.is_dir() {
                bail!("the repository has no folder {:?}", dir.as_str());
            }
            Ok(folder)
        }
        None => Ok(dest.to_path_buf()),
    }
}

/// The runner's own environment, minus what only the runner may see.
fn base_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| !k.starts_with("TARN_"))
        .collect()
}

/// What distributed training frameworks read, per process (Azure ML's contract).
fn distribution_env(
    plan: &RunPlan,
    rank: u32,
    per_node: u32,
    (master_addr, master_port): &(String, u16),
) -> Vec<(String, String)> {
    let master_port = *master_port;
    let world = plan.world_size();
    let node_rank = rank / per_node.max(1);
    let local_rank = rank % per_node.max(1);
    let mut vars = vec![];
    let mut set = |k: &str, v: String| vars.push((k.to_string(), v));
    if plan.distribution.is_none() && world == 1 {
        return vec![];
    }
    set("MASTER_ADDR", master_addr.clone());
    set("MASTER_PORT", master_port.to_string());
    set("WORLD_SIZE", world.to_string());
    set("RANK", rank.to_string());
    set("NODE_RANK", node_rank.to_string());
    set("LOCAL_RANK", local_rank.to_string());
    set("LOCAL_WORLD_SIZE", per_node.to_string());
    set("AZUREML_NODE_COUNT", plan.instance_count.to_string());
    if let Some(node) = plan.nodes.get(node_rank as usize) {
        set("AZUREML_NODE_NAME", node.clone());
    }
    match plan.distribution.as_ref().map(|d| d.type_.as_str()) {
        Some("mpi") => {
            set("OMPI_COMM_WORLD_RANK", rank.to_string());
            set("OMPI_COMM_WORLD_SIZE", world.to_string());
            set("OMPI_COMM_WORLD_LOCAL_RANK", local_rank.to_string());
            set("OMPI_COMM_WORLD_LOCAL_SIZE", per_node.to_string());
        }
        Some("tensorflow") => {
            let workers: Vec<String> = (0..world)
                .map(|r| format!("127.0.0.1:{}", master_port as u32 + 1 + r))
                .collect();
            let tf_config =
                json!({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}});
            set("TF_CONFIG", tf_config.to_string());
        }
        _ => {}
    }
    vars
}

/// A free TCP port on 127.0.0.1 for rank 0 to listen on.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// SIGTERM to every process group, SIGKILL to what is left after the grace period.
async fn stop_groups(groups: &[Option<Pid>], children: &mut [tokio::process::Child]) {
    for pid in groups.iter().flatten() {
        let _ = killpg(*pid, Signal::SIGTERM);
    }
    let all_done = async {
        for c in children.iter_mut() {
            let _ = c.wait().await;
        }
    };
    if tokio::time::timeout(KILL_GRACE, all_done).await.is_err() {
        for pid in groups.iter().flatten() {
            let _ = killpg(*pid, Signal::SIGKILL);
        }
        for c in children.iter_mut() {
            let _ = c.wait().await;
        }
    }
}

fn file_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("data")
        .to_string()
}

fn parent_of(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some((parent, _)) => parent.to_string(),
        None => String::new(),
    }
}

/// Downloads a file (into `dest/<name>`) or every file below a folder (into `dest`, keeping
/// their paths) from storage opened without credentials; returns what the input becomes.
async fn fetch_public(
    spec: &serde_json::Value,
    path: &str,
    file: bool,
    dest: &Path,
) -> anyhow::Result<PathBuf> {
    use futures::TryStreamExt;
    let store = tarn_storage::open(spec)?;
    let store_path = tarn_spec::uri::StorePath::parse(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files: Vec<String> = if file {
        vec![path.to_string()]
    } else {
        let listing = store.list(&store_path, true).await?;
        anyhow::ensure!(!listing.files.is_empty(), "there are no files at {path:?}");
        listing.files.into_iter().map(|f| f.path).collect()
    };
    let base = if file {
        path.rsplit_once('/')
            .map_or(String::new(), |(p, _)| format!("{p}/"))
    } else if path.is_empty() || path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    for f in &files {
        let rel = f.strip_prefix(&base).unwrap_or(f);
        // Names come from the storage service: never write outside `dest`.
        tarn_spec::uri::StorePath::parse(rel)
            .map_err(|e| anyhow::anyhow!("refusing to write {rel:?}: {e}"))?;
        let target = dest.join(rel);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let (_, stream) = store
            .get_stream(&tarn_spec::uri::StorePath::parse(f).map_err(|e| anyhow::anyhow!("{e}"))?)
            .await?;
        let mut out = tokio::fs::File::create(&target).await?;
        let mut reader = tokio_util::io::StreamReader::new(
            stream.map_err(|e| std::io::Error::other(e.to_string())),
        );
        tokio::io::copy(&mut reader, &mut out).await?;
    }
    Ok(if file {
        dest.join(file_name(path))
    } else {
        dest.to_path_buf()
    })
}

/// Downloads a datastore location into `dest` (a folder; a single file lands inside it).
pub(crate) async fn fetch(
    client: &Client,
    ws: &str,
    loc: &Location,
    dest: &Path,
    folder: bool,
    log: &Log,
) -> anyhow::Result<()> {
    let files = transfer::remote_files(client, ws, &loc.datastore, &loc.path).await?;
    if files.is_empty() && folder {
        // An empty folder (a step that wrote nothing to an output) is still a folder.
        log.note(&format!("{}/{} is empty", loc.datastore, loc.path));
        tokio::fs::create_dir_all(dest).await?;
        return Ok(());
    }
    if files.is_empty() {
        bail!(
            "nothing at azureml://datastores/{}/paths/{}",
            loc.datastore,
            loc.path
        );
    }
    let size: u64 = files.iter().map(|f| f.size).sum();
    log.note(&format!(
        "downloading {} file(s), {size} bytes, from {}/{}",
        files.len(),
        loc.datastore,
        loc.path
    ));
    tokio::fs::create_dir_all(dest).await?;
    let base = if folder {
        loc.path.trim_end_matches('/').to_string()
    } else {
        parent_of(&loc.path)
    };
    let bar = indicatif::ProgressBar::hidden();
    transfer::download(client, ws, &loc.datastore, &base, &files, dest, &bar).await
}

/// The Spark application named `name`, from its driver's web UI on this node: Spark binds it
/// to 4040, or the next free port up to 4056 when several drivers run here. Looked for while
/// the driver starts (at most two minutes); `None` when its UI is off or never answered.
async fn find_spark_app(name: &str) -> Option<tarn_spec::runplan::SparkApp> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        for port in 4040..=4056 {
            let url = format!("http://127.0.0.1:{port}");
            let Ok(answer) = http.get(format!("{url}/api/v1/applications")).send().await else {
                continue;
            };
            let Ok(apps) = answer.json::<Vec<Json>>().await else {
                continue;
            };
            if let Some(app) = apps.iter().find(|a| a["name"] == name) {
                return Some(tarn_spec::runplan::SparkApp {
                    application_id: app["id"].as_str().unwrap_or_default().to_string(),
                    ui_url: url,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}
