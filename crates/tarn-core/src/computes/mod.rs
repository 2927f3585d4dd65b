//! Compute instances at run time: a compute of `type: computeinstance` is a JupyterLab server
//! for one user, started and stopped by `controller.rs`. This module is what users call:
//! start, stop and restart (which set the desired state in the store), the state `show`
//! adds, who may open an instance (its user and the workspace's Owners), where the proxy
//! sends their requests, its log, and the checks made when an instance is created.

mod controller;

pub use controller::Instances;

use crate::Core;
use crate::authz::{Action, Principal, Role, Target};
use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::resources::Scope;
use crate::resources::{KindHooks, Write};
use crate::users::Users;
use controller::InstanceKey;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;
use tarn_spec::Document;
use tarn_spec::Kind;
use tarn_spec::compute::ComputeSpec;
use tarn_spec::runplan::{EnvSpec, InstancePlan, SetupScript};
use tarn_store::{ResourceRow, WorkspaceRow};

/// The datastore whose `Users/<user>/` folder is an instance's root, as in Azure ML.
pub const WORKING_DIRECTORY: &str = "workspaceworkingdirectory";

/// What an instance runs besides the user's own packages (pip: `%pip install` in a notebook
/// installs into the instance's own environment; uv's venvs come without it).
const INSTANCE_PACKAGES: &[&str] = &["jupyterlab", "ipykernel", "mlflow-skinny", "pip"];

/// `start`, `stop`, `restart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceAction {
    Start,
    Stop,
    Restart,
}

/// An instance as the controller sees it.
pub struct InstanceStatus {
    /// `Creating`, `Starting`, `Running`, `Stopping`, `Stopped` or `Failed`.
    pub state: &'static str,
    pub error: Option<String>,
    /// Seconds since JupyterLab last saw activity, while Running.
    pub idle_s: Option<u64>,
    /// JupyterLab's own `last_activity`.
    pub last_activity: Option<String>,
}

/// Where the proxy sends an instance's requests: JupyterLab's port and the token it wants.
pub struct LabTarget {
    pub port: u16,
    pub token: String,
}

/// The path JupyterLab is served under (its `base_url`), the same through the proxy.
pub fn lab_path(workspace: &str, name: &str) -> String {
    format!("/ws/{workspace}/computes/{name}/lab/")
}

/// `idle_time_before_shutdown` (ISO 8601, e.g. `PT30M`) or `…_minutes`, if set.
pub(crate) fn idle_limit(spec: &Json) -> Option<Duration> {
    if let Some(m) = spec
        .get("idle_time_before_shutdown_minutes")
        .and_then(Json::as_u64)
    {
        return Some(Duration::from_secs(m * 60));
    }
    spec.get("idle_time_before_shutdown")
        .and_then(Json::as_str)
        .and_then(iso_duration)
}

/// `PT1H30M`, `PT45S`, `P1D`: the ISO 8601 durations Azure ML's YAML uses.
fn iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0u64;
    let mut add = |part: &str, units: &[(char, u64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                let (_, mult) = units.iter().find(|(u, _)| *u == c)?;
                secs += num.parse::<u64>().ok()? * mult;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    add(days, &[('D', 86_400), ('W', 604_800)])?;
    add(time, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The user an instance belongs to: `create_on_behalf_of`, else whoever created it.
fn assigned_user(row: &ResourceRow) -> String {
    row.spec
        .pointer("/create_on_behalf_of/user_object_id")
        .and_then(Json::as_str)
        .unwrap_or(&row.created_by)
        .to_string()
}

/// Computes: compute instances (JupyterLab) and what clusters report of their nodes.
pub struct Computes {
    core: Arc<Core>,
    /// Compute instances' JupyterLab processes.
    instances: controller::Instances,
    jobs: Arc<Jobs>,
    users: Arc<Users>,
}

crate::service_on_core!(Computes);

/// A compute is checked against its engine before it is stored; an instance starts once
/// created, and a resized cluster takes effect at once.
#[async_trait::async_trait]
impl KindHooks for Computes {
    async fn check(&self, w: &Write<'_>, doc: &mut Document, full: &Json) -> Result<()> {
        // Azure ML's attach YAML names the cluster by its Azure id only: kept, with what Tarn
        // needs before jobs can run there.
        if let ComputeSpec::Kubernetes(k) = ComputeSpec::parse(full)
            && k.kubeconfig.is_none()
            && !k.in_cluster
        {
            doc.warnings.push(tarn_spec::Diagnostic::warning(
                "kubeconfig",
                None,
                "stored, but Tarn cannot reach this cluster yet: give it `kubeconfig` (a file) or `in_cluster: true` before running jobs on it",
            ));
            return Ok(());
        }
        self.check_compute(w.ws, full).await
    }

    async fn written(&self, w: &Write<'_>, spec: Option<&Json>) -> Result<()> {
        match spec {
            Some(spec) if w.creating => self.compute_created(w.ws, spec, w.name).await,
            Some(_) => {
                self.jobs.wake_scheduler();
                Ok(())
            }
            None => self.compute_deleted(w.ws, w.name).await,
        }
    }
}

impl Computes {
    pub(crate) fn new(core: Arc<Core>, jobs: Arc<Jobs>, users: Arc<Users>) -> Self {
        Computes {
            core,
            instances: Default::default(),
            jobs,
            users,
        }
    }
}

impl Computes {
    async fn instance_row(&self, ws: &WorkspaceRow, name: &str) -> Result<ResourceRow> {
        let scope = Scope {
            workspace: &ws.name,
            kind: Kind::Compute,
            parent: None,
        };
        let row = self
            .store
            .get_resource(&scope.key(&ws.id, name, ""))
            .await?
            .ok_or_else(|| {
                Error::not_found(format!("compute {name:?} in workspace {:?}", ws.name))
            })?;
        if !ComputeSpec::parse(&row.spec).is_instance() {
            return Err(Error::invalid(
                "name",
                format!(
                    "compute {name:?} is not a compute instance; only instances start and stop"
                ),
            ));
        }
        Ok(row)
    }

    /// `tarn compute start|stop|restart`.
    pub async fn compute_instance_action(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        action: InstanceAction,
    ) -> Result<()> {
        let ws = self
            .authorized_workspace(
                p,
                workspace,
                Target::Resource(Kind::Compute),
                Action::Operate(match action {
                    InstanceAction::Start => "start",
                    InstanceAction::Stop => "stop",
                    InstanceAction::Restart => "restart",
                }),
            )
            .await?;
        self.instance_row(&ws, name).await?;
        let key: InstanceKey = (ws.id.clone(), name.to_string());
        match action {
            InstanceAction::Start => {
                self.instances.clear_failure(&key);
                self.set_desired(&key, "Running", "start").await
            }
            InstanceAction::Stop => self.set_desired(&key, "Stopped", "stop").await,
            InstanceAction::Restart => {
                self.instances.clear_failure(&key);
                self.set_desired(&key, "Running", "restart").await?;
                self.instances.stop_now(&key);
                Ok(())
            }
        }
    }

    /// What `show` adds to a compute instance.
    pub fn instance_status(&self, workspace_id: &str, name: &str) -> Option<InstanceStatus> {
        self.instances
            .status(&(workspace_id.to_string(), name.to_string()))
    }

    /// Where a user's request to an instance's JupyterLab goes: only the instance's user and
    /// the workspace's Owners may open it; others get 403 (or 404 without access to the
    /// workspace).
    pub async fn open_instance(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
    ) -> Result<LabTarget> {
        let ws = self
            .authorized_workspace(p, workspace, Target::Resource(Kind::Compute), Action::Read)
            .await?;
        let row = self.instance_row(&ws, name).await?;
        let user = assigned_user(&row);
        let owner = p.is_admin
            || self.store.role_of(&ws.id, &p.user_id).await?.as_deref()
                == Some(Role::Owner.as_str());
        if p.job.is_some() || (p.name != user && !owner) {
            return Err(Error::Forbidden(format!(
                "compute instance {name:?} belongs to {user:?}: only they and the workspace's Owners may open it"
            )));
        }
        let key: InstanceKey = (ws.id.clone(), name.to_string());
        let (port, token) = self.instances.target(&key).ok_or_else(|| {
            let state = self.instances.status(&key).map_or("Stopped", |s| s.state);
            Error::Conflict(format!(
                "compute instance {name:?} is {state}, not Running (`tarn compute start -n {name}`)"
            ))
        })?;
        Ok(LabTarget { port, token })
    }

    /// The end of an instance's log (environment build, setup scripts, JupyterLab).
    pub async fn instance_logs(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        lines: usize,
    ) -> Result<String> {
        let ws = self
            .authorized_workspace(p, workspace, Target::Resource(Kind::Compute), Action::Read)
            .await?;
        self.instance_row(&ws, name).await?;
        let key: InstanceKey = (ws.id.clone(), name.to_string());
        let path = self.instances.log_path(&key).unwrap_or_else(|| {
            self.config
                .home
                .join("computes")
                .join(&ws.id)
                .join(name)
                .join("instance.log")
        });
        let text = tokio::fs::read(&path).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Checks at create and update: an engine answers (like a datastore's storage); an
    /// instance's user exists and its schedules parse.
    pub(crate) async fn check_compute(&self, ws: &WorkspaceRow, spec: &Json) -> Result<()> {
        let parsed = ComputeSpec::parse(spec);
        let checked = match &parsed {
            ComputeSpec::SparkPool(spark) => Some(crate::backends::spark::check(spark).await),
            other => match crate::backends::for_spec(other, &self.config) {
                Some(backend) => Some(backend.check().await),
                None => None,
            },
        };
        if let Some(checked) = checked {
            let name = spec.get("name").and_then(Json::as_str).unwrap_or_default();
            let seen = checked.map_err(|e| match e {
                Error::Engine { engine, message } => Error::Engine {
                    engine,
                    message: format!("compute {name:?} cannot be reached: {message}"),
                },
                other => other,
            })?;
            tracing::info!(compute = %name, "{seen}");
            return Ok(());
        }
        if !parsed.is_instance() {
            return Ok(());
        }
        if let Some(user) = spec
            .pointer("/create_on_behalf_of/user_object_id")
            .and_then(Json::as_str)
            && self.store.get_user(user).await?.is_none()
        {
            return Err(Error::invalid(
                "create_on_behalf_of.user_object_id",
                format!("no Tarn user {user:?} (the instance is assigned to a Tarn user by name)"),
            ));
        }
        for (i, s) in spec
            .pointer("/schedules/compute_start_stop")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("schedules.compute_start_stop[{i}].trigger");
            let trigger = s.get("trigger").unwrap_or(&Json::Null);
            tarn_spec::trigger::Trigger::parse(trigger, 0).map_err(|(f, message)| {
                Error::invalid(&f.replacen("trigger", &field, 1), message)
            })?;
        }
        if let Some(text) = spec.get("idle_time_before_shutdown").and_then(Json::as_str)
            && iso_duration(text).is_none()
        {
            return Err(Error::invalid(
                "idle_time_before_shutdown",
                format!("{text:?} is not an ISO 8601 duration such as PT30M"),
            ));
        }
        let _ = ws;
        Ok(())
    }

    /// A new instance starts (as in Azure ML); a deleted one stops and is forgotten.
    pub(crate) async fn compute_created(
        &self,
        ws: &WorkspaceRow,
        spec: &Json,
        name: &str,
    ) -> Result<()> {
        if ComputeSpec::parse(spec).is_instance() {
            self.set_desired(&(ws.id.clone(), name.to_string()), "Running", "create")
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn compute_deleted(&self, ws: &WorkspaceRow, name: &str) -> Result<()> {
        self.store.delete_compute_state(&ws.id, name).await?;
        self.instances.wake.notify_one();
        Ok(())
    }

    /// Everything `tarn instance` needs to run one instance.
    pub(crate) async fn instance_plan(
        &self,
        ws: &WorkspaceRow,
        row: &ResourceRow,
    ) -> Result<InstancePlan> {
        let user = assigned_user(row);
        let location = self
            .jobs
            .location(ws, WORKING_DIRECTORY, &format!("Users/{user}"))
            .await?;
        let root_dir = location.local_path.ok_or_else(|| {
            Error::invalid(
                "type",
                format!(
                    "compute instances keep notebooks on the workspace's {WORKING_DIRECTORY} datastore, which must be a local directory on this machine"
                ),
            )
        })?;
        let env = serde_json::json!({
            "conda_file": {"dependencies": [{"pip": INSTANCE_PACKAGES}]}
        });
        let plan = tarn_spec::envplan::plan(&env).map_err(|e| Error::invalid("environment", e))?;
        let setup = ["creation_script", "startup_script"]
            .iter()
            .filter_map(|kind| {
                let s = row.spec.pointer(&format!("/setup_scripts/{kind}"))?;
                let (command, path) = match s {
                    Json::String(path) => (None, Some(path.clone())),
                    _ => (
                        s.get("command").and_then(Json::as_str).map(str::to_string),
                        s.get("path").and_then(Json::as_str).map(str::to_string),
                    ),
                };
                Some(SetupScript {
                    once: *kind == "creation_script",
                    command,
                    path,
                    timeout_s: s
                        .get("timeout_minutes")
                        .and_then(Json::as_u64)
                        .unwrap_or(15)
                        * 60,
                })
            })
            .collect();
        Ok(InstancePlan {
            workspace: ws.name.clone(),
            name: row.key.name.clone(),
            user,
            root_dir,
            base_url: lab_path(&ws.name, &row.key.name),
            tracking_uri: format!("{}/ws/{}/mlflow", self.config.public_url, ws.name),
            environment: EnvSpec::of(&plan, &env),
            setup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idle_limits_come_in_minutes_or_iso_durations() {
        assert_eq!(
            idle_limit(&json!({"idle_time_before_shutdown_minutes": 30})),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            idle_limit(&json!({"idle_time_before_shutdown": "PT1H30M"})),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            idle_limit(&json!({"idle_time_before_shutdown": "PT45S"})),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            idle_limit(&json!({"idle_time_before_shutdown": "P1D"})),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(idle_limit(&json!({})), None);
        assert_eq!(iso_duration("30 minutes"), None);
        assert_eq!(iso_duration("PT"), None);
        assert_eq!(iso_duration("PT5X"), None);
    }
}
