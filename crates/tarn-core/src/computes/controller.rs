//! The compute instance controller: keeps each compute instance's JupyterLab running or
//! stopped as its desired state (in the store) says. Each pass, once a second or when woken:
//!
//! - an instance that should run and does not is started: a `tarn instance` process (same
//!   binary, own process group) builds the instance's own environment (JupyterLab, ipykernel,
//!   mlflow-skinny), runs its setup scripts and starts `jupyter lab` on 127.0.0.1 with a random
//!   token that only the server knows; it is Running once `/api/status` answers;
//! - one that should not run is stopped (SIGTERM to its group, SIGKILL after 5 s);
//! - a running one whose JupyterLab has seen no activity for its idle time is stopped, and
//!   `schedules.compute_start_stop` triggers (read as schedules' are) start and stop instances;
//! - an instance whose process dies on its own is Failed, with its log's tail, until `start`.
//!
//! Instances do not outlive the server (the proxy to them is in the server): `tarn instance`
//! exits when its parent does, and a restarted server starts again those that should run.

use super::Computes;
use super::{InstanceStatus, idle_limit};
use crate::authz::JobScope;
use crate::error::{Error, Result};
use crate::process::{free_port, signal, stop_group, tail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tarn_spec::Kind;
use tarn_spec::compute::ComputeSpec;
use tarn_spec::runplan::InstancePlan;
use tarn_spec::trigger::{MissedFires, Trigger};
use tarn_store::{ComputeStateRow, ResourceFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

const PASS_EVERY: Duration = Duration::from_secs(1);
/// How often a starting instance is asked whether it is up.
const READY_POLL: Duration = Duration::from_millis(200);
/// How often a running instance's activity is read.
const ACTIVITY_POLL: Duration = Duration::from_secs(1);
/// Bytes of an instance's log kept with its failure.
const TAIL: usize = 3000;

/// (workspace id, compute name)
pub(crate) type InstanceKey = (String, String);

#[derive(Default)]
pub struct Instances {
    pub(crate) wake: Arc<Notify>,
    runs: Mutex<HashMap<InstanceKey, InstanceRun>>,
    /// When the last pass looked at schedules (seconds since the epoch).
    schedules_checked: Mutex<Option<i64>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Stopped,
    Starting,
    Running,
    Stopping,
    Failed(String),
}

struct InstanceRun {
    phase: Phase,
    /// Whether it has ever run (its first start is `Creating`).
    started_once: bool,
    port: u16,
    token: String,
    stop: Option<watch::Sender<bool>>,
    /// When JupyterLab's `last_activity` was last seen to change (or the instance started).
    active_at: Instant,
    last_activity: Option<String>,
    dir: PathBuf,
}

impl Instances {
    pub(crate) fn status(&self, key: &InstanceKey) -> Option<InstanceStatus> {
        let runs = self.runs.lock().expect("instance runs lock");
        let run = runs.get(key)?;
        let (state, error) = match &run.phase {
            Phase::Stopped => ("Stopped", None),
            Phase::Starting if run.started_once => ("Starting", None),
            Phase::Starting => ("Creating", None),
            Phase::Running => ("Running", None),
            Phase::Stopping => ("Stopping", None),
            Phase::Failed(e) => ("Failed", Some(e.clone())),
        };
        Some(InstanceStatus {
            state,
            error,
            idle_s: (run.phase == Phase::Running).then(|| run.active_at.elapsed().as_secs()),
            last_activity: run.last_activity.clone(),
        })
    }

    /// Where the proxy sends an instance's requests, and the token JupyterLab wants.
    pub(crate) fn target(&self, key: &InstanceKey) -> Option<(u16, String)> {
        let runs = self.runs.lock().expect("instance runs lock");
        let run = runs.get(key)?;
        (run.phase == Phase::Running).then(|| (run.port, run.token.clone()))
    }

    pub(crate) fn log_path(&self, key: &InstanceKey) -> Option<PathBuf> {
        let runs = self.runs.lock().expect("instance runs lock");
        runs.get(key).map(|r| r.dir.join("instance.log"))
    }

    /// A failed instance may be started again (`start` clears the failure).
    pub(crate) fn clear_failure(&self, key: &InstanceKey) {
        if let Some(run) = self.runs.lock().expect("instance runs lock").get_mut(key)
            && matches!(run.phase, Phase::Failed(_))
        {
            run.phase = Phase::Stopped;
        }
    }

    /// Stops a running instance now (restart: the next pass starts it again).
    pub(crate) fn stop_now(&self, key: &InstanceKey) {
        if let Some(run) = self.runs.lock().expect("instance runs lock").get_mut(key)
            && let Some(stop) = &run.stop
        {
            let _ = stop.send(true);
        }
    }

    fn set_phase(&self, key: &InstanceKey, phase: Phase) {
        if let Some(run) = self.runs.lock().expect("instance runs lock").get_mut(key) {
            if phase == Phase::Running {
                run.started_once = true;
                run.active_at = Instant::now();
            }
            if matches!(phase, Phase::Stopped | Phase::Failed(_)) {
                run.stop = None;
            }
            run.phase = phase;
        }
        self.wake.notify_one();
    }

    fn saw_activity(&self, key: &InstanceKey, last_activity: Option<String>) {
        if let Some(run) = self.runs.lock().expect("instance runs lock").get_mut(key)
            && last_activity.is_some()
            && run.last_activity != last_activity
        {
            if run.last_activity.is_some() {
                run.active_at = Instant::now();
            }
            run.last_activity = last_activity;
        }
    }
}

impl Computes {
    pub fn start_instances(self: &Arc<Computes>) -> tokio::task::JoinHandle<()> {
        let wake = self.instances.wake.clone();
        self.spawn_task("instances", PASS_EVERY, wake, self, |computes| async move {
            computes.reconcile_instances().await
        })
    }

    async fn reconcile_instances(self: &Arc<Self>) -> Result<()> {
        let desired: HashMap<InstanceKey, ComputeStateRow> = self
            .store
            .compute_states()
            .await?
            .into_iter()
            .map(|s| ((s.workspace_id.clone(), s.name.clone()), s))
            .collect();
        let now_s = crate::now_ms() / 1000;
        let checked = self
            .instances
            .schedules_checked
            .lock()
            .expect("schedules lock")
            .replace(now_s)
            .unwrap_or(now_s);
        let mut seen = vec![];
        for ws in self.store.list_workspaces().await? {
            let filter = ResourceFilter {
                parent: "",
                name: None,
                include_archived: false,
                latest_only: false,
            };
            for row in self
                .store
                .list_resources(&ws.id, Kind::Compute.collection(), &filter)
                .await?
            {
                if !ComputeSpec::parse(&row.spec).is_instance() {
                    continue;
                }
                let key = (ws.id.clone(), row.key.name.clone());
                seen.push(key.clone());
                let mut want = desired.get(&key).map_or("Running", |s| s.desired.as_str());
                // Schedules: the latest trigger since the last pass wins.
                if let Some(action) = scheduled_action(&row.spec, checked, now_s) {
                    let target = if action == "start" {
                        "Running"
                    } else {
                        "Stopped"
                    };
                    if target != want {
                        self.set_desired(&key, target, "schedule").await?;
                        if target == "Running" {
                            self.instances.clear_failure(&key);
                        }
                        want = target;
                    }
                }
                let phase = self
                    .instances
                    .runs
                    .lock()
                    .expect("instance runs lock")
                    .get(&key)
                    .map(|r| (r.phase.clone(), r.active_at.elapsed()));
                match (want, phase) {
                    ("Running", None | Some((Phase::Stopped, _))) => {
                        if let Err(e) = self.start_instance(&ws, &row, &key).await {
                            self.note_failure(&key, &ws.name, format!("{e}"));
                        }
                    }
                    ("Running", Some((Phase::Running, idle))) => {
                        if let Some(limit) = idle_limit(&row.spec)
                            && idle >= limit
                        {
                            self.instance_note(
                                &key,
                                &format!(
                                    "no activity for {} s (idle_time_before_shutdown): stopping",
                                    idle.as_secs()
                                ),
                            );
                            self.set_desired(&key, "Stopped", "idle shutdown").await?;
                            self.instances.stop_now(&key);
                        }
                    }
                    ("Stopped", Some((Phase::Running | Phase::Starting, _))) => {
                        self.instances.stop_now(&key);
                    }
                    _ => {}
                }
            }
        }
        // Instances whose compute was deleted are stopped and forgotten.
        let gone: Vec<InstanceKey> = self
            .instances
            .runs
            .lock()
            .expect("instance runs lock")
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for key in gone {
            let run = self
                .instances
                .runs
                .lock()
                .expect("instance runs lock")
                .remove(&key);
            if let Some(stop) = run.and_then(|r| r.stop) {
                let _ = stop.send(true);
            }
            self.users.revoke_job_token(&instance_scope(&key)).await?;
        }
        Ok(())
    }

    pub(crate) async fn set_desired(
        &self,
        key: &InstanceKey,
        desired: &str,
        reason: &str,
    ) -> Result<()> {
        self.store
            .set_compute_state(&ComputeStateRow {
                workspace_id: key.0.clone(),
                name: key.1.clone(),
                desired: desired.to_string(),
                reason: reason.to_string(),
                updated_at: crate::now_ms(),
            })
            .await?;
        self.instances.wake.notify_one();
        Ok(())
    }

    /// Stops every compute instance this server runs: it no longer leads, and the new
    /// leader starts those that should run (followers send their requests to it).
    pub(crate) fn stand_down_instances(&self) {
        let runs = std::mem::take(&mut *self.instances.runs.lock().expect("instance runs lock"));
        for run in runs.values() {
            if let Some(stop) = &run.stop {
                let _ = stop.send(true);
            }
        }
    }

    fn instance_dir(&self, key: &InstanceKey) -> PathBuf {
        self.config.home.join("computes").join(&key.0).join(&key.1)
    }

    fn instance_note(&self, key: &InstanceKey, text: &str) {
        use std::io::Write;
        let path = self.instance_dir(key).join("instance.log");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "[tarn] {text}");
        }
    }

    fn note_failure(&self, key: &InstanceKey, workspace: &str, error: String) {
        tracing::warn!(workspace, instance = %key.1, "compute instance failed: {error}");
        self.instance_note(key, &error);
        let mut runs = self.instances.runs.lock().expect("instance runs lock");
        let run = runs.entry(key.clone()).or_insert_with(|| InstanceRun {
            phase: Phase::Stopped,
            started_once: false,
            port: 0,
            token: String::new(),
            stop: None,
            active_at: Instant::now(),
            last_activity: None,
            dir: self.instance_dir(key),
        });
        run.phase = Phase::Failed(error);
        run.stop = None;
    }

    async fn start_instance(
        self: &Arc<Self>,
        ws: &tarn_store::WorkspaceRow,
        row: &tarn_store::ResourceRow,
        key: &InstanceKey,
    ) -> Result<()> {
        let plan: InstancePlan = self.instance_plan(ws, row).await?;
        let dir = self.instance_dir(key);
        tokio::fs::create_dir_all(&dir).await.map_err(Error::Io)?;
        let plan_path = dir.join("plan.json");
        tokio::fs::write(
            &plan_path,
            serde_json::to_vec_pretty(&plan).expect("a plan serialises"),
        )
        .await
        .map_err(Error::Io)?;
        let scope = instance_scope(key);
        self.users.revoke_job_token(&scope).await?;
        let api_token = self.users.create_job_token(&plan.user, &scope).await?;
        let lab_token = crate::endpoints::keys::new_key();
        let port = free_port().map_err(Error::Io)?;
        let log_path = dir.join("instance.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::Io)?;
        let mut cmd = self.jobs.tarn_process("instance", &api_token, log)?;
        cmd.arg("--server")
            .arg(&self.config.public_url)
            .arg("--plan")
            .arg(&plan_path)
            .arg("--port")
            .arg(port.to_string())
            .env("TARN_JUPYTER_TOKEN", &lab_token);
        self.instance_note(
            key,
            &format!("starting JupyterLab for {} on port {port}", plan.user),
        );
        let child = cmd.spawn().map_err(Error::Io)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            let mut runs = self.instances.runs.lock().expect("instance runs lock");
            let run = runs.entry(key.clone()).or_insert_with(|| InstanceRun {
                phase: Phase::Stopped,
                started_once: false,
                port,
                token: String::new(),
                stop: None,
                active_at: Instant::now(),
                last_activity: None,
                dir: dir.clone(),
            });
            run.phase = Phase::Starting;
            run.port = port;
            run.token = lab_token.clone();
            run.stop = Some(stop_tx);
            run.last_activity = None;
        }
        let watcher = Watcher {
            computes: self.clone(),
            key: key.clone(),
            port,
            token: lab_token,
            status_path: format!("{}api/status", plan.base_url),
            log_path,
        };
        tokio::spawn(watcher.run(child, stop_rx));
        Ok(())
    }
}

/// An instance's token acts for its user in the instance's workspace (MLflow from notebooks).
fn instance_scope(key: &InstanceKey) -> JobScope {
    JobScope {
        workspace_id: key.0.clone(),
        job: format!("compute/{}", key.1),
    }
}

/// What the instance's schedules say to do, if one fired in `(after_s, now_s]`.
fn scheduled_action(spec: &Json, after_s: i64, now_s: i64) -> Option<&'static str> {
    let mut latest: Option<(i64, &'static str)> = None;
    for s in spec
        .pointer("/schedules/compute_start_stop")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        if s.get("state").and_then(Json::as_str) == Some("disabled") {
            continue;
        }
        // Read as a schedule's trigger (cron or recurrence, in its time zone), in force from
        // the start of time unless it says otherwise.
        let Some(Ok(trigger)) = s.get("trigger").map(|t| Trigger::parse(t, 0)) else {
            continue;
        };
        let action = match s.get("action").and_then(Json::as_str) {
            Some("start") => "start",
            Some("stop") => "stop",
            _ => continue,
        };
        // Every due time in the window counts: the latest one wins below.
        let fired = tarn_spec::trigger::due(&trigger, after_s, now_s, MissedFires::Latest, after_s);
        if let Some(at) = fired.through
            && latest.is_none_or(|(t, _)| at > t)
        {
            latest = Some((at, action));
        }
    }
    latest.map(|(_, a)| a)
}

/// Watches one `tarn instance` process: up, activity, and its end.
struct Watcher {
    computes: Arc<Computes>,
    key: InstanceKey,
    port: u16,
    token: String,
    status_path: String,
    log_path: PathBuf,
}

impl Watcher {
    async fn run(self, mut child: tokio::process::Child, mut stop: watch::Receiver<bool>) {
        let instances = &self.computes.instances;
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let started = Instant::now();
        let mut running = false;
        loop {
            let poll = if running { ACTIVITY_POLL } else { READY_POLL };
            tokio::select! {
                exit = child.wait() => {
                    // What it left in its process group (its server, a child) goes with it.
                    signal(pid, Signal::SIGKILL);
                    let how = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    let error = format!(
                        "JupyterLab exited on its own ({how}); `tarn compute start` starts it again. The end of its log:\n{}",
                        tail(&self.log_path, TAIL)
                    );
                    self.computes.instance_note(&self.key, &format!("the instance process exited: {how}"));
                    instances.set_phase(&self.key, Phase::Failed(error));
                    let _ = self.computes.users.revoke_job_token(&instance_scope(&self.key)).await;
                    return;
                }
                _ = stop.changed() => {
                    instances.set_phase(&self.key, Phase::Stopping);
                    stop_group(pid, &mut child).await;
                    self.computes.instance_note(&self.key, "stopped");
                    instances.set_phase(&self.key, Phase::Stopped);
                    let _ = self.computes.users.revoke_job_token(&instance_scope(&self.key)).await;
                    return;
                }
                _ = tokio::time::sleep(poll) => {
                    let status = lab_status(self.port, &self.status_path, &self.token).await;
                    if !running && status.is_some() {
                        running = true;
                        self.computes.instance_note(&self.key, &format!(
                            "JupyterLab is up after {} ms", started.elapsed().as_millis()
                        ));
                        instances.set_phase(&self.key, Phase::Running);
                    }
                    if let Some(status) = status {
                        let last = status.get("last_activity").and_then(Json::as_str).map(str::to_string);
                        instances.saw_activity(&self.key, last);
                    }
                }
            }
        }
    }
}

/// JupyterLab's `/api/status`, if it answers 200.
async fn lab_status(port: u16, path: &str, token: &str) -> Option<Json> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Tarn-Lab-Token: {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<Vec<u8>, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_latest_schedule_that_fired_wins() {
        let spec = json!({"schedules": {"compute_start_stop": [
            {"action": "start", "trigger": {"type": "cron", "expression": "0 8 * * *"}},
            {"action": "stop", "trigger": {"type": "cron", "expression": "0 19 * * *"}},
            {"action": "start", "state": "disabled", "trigger": {"type": "cron", "expression": "30 19 * * *"}},
        ]}});
        let day = 1_795_737_600; // 2026-11-27 00:00 UTC
        let h = |hours: i64, minutes: i64| day + hours * 3600 + minutes * 60;
        assert_eq!(scheduled_action(&spec, h(7, 59), h(8, 0)), Some("start"));
        assert_eq!(scheduled_action(&spec, h(8, 0), h(8, 1)), None);
        assert_eq!(
            scheduled_action(&spec, h(18, 0), h(20, 0)),
            Some("stop"),
            "disabled ones do not fire"
        );
        assert_eq!(
            scheduled_action(&spec, h(7, 0), h(20, 0)),
            Some("stop"),
            "the latest wins"
        );
        assert_eq!(scheduled_action(&json!({}), h(0, 0), h(23, 0)), None);
        // Recurrences and time zones too: weekdays at 08:00 in Berlin (07:00 UTC in November).
        let berlin = json!({"schedules": {"compute_start_stop": [
            {"action": "start", "trigger": {"type": "recurrence", "frequency": "week", "interval": 1,
                "time_zone": "W. Europe Standard Time",
                "schedule": {"hours": 8, "minutes": 0, "week_days": ["friday"]}}},
        ]}});
        assert_eq!(scheduled_action(&berlin, h(6, 59), h(7, 0)), Some("start"));
        assert_eq!(scheduled_action(&berlin, h(7, 0), h(8, 0)), None);
    }
}
