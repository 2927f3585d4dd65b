//! Schedules (`tarn schedule`, Azure ML's `az ml schedule`): a resource whose `trigger` says
//! when and whose `create_job` says what — a job, a job already submitted (`azureml:<name>`)
//! with changes, or a batch endpoint's invocation. The leader's `schedules` task decides each
//! schedule's fires with `tarn_spec::trigger::due` (a pure function of the trigger, the clock
//! and what was decided before, kept in the store's `schedule_states`) and submits them.
//!
//! Exactly once per due time: a fired job is named after its schedule and due time
//! (`nightly-20260701T090000`), and job names are unique in a workspace, so a due time fired
//! twice — by a server that died before recording it, or by two servers during a leadership
//! change — is refused the second time by the store and counted as fired. Fires missed while
//! no server ran follow the schedule's `missed_fires` (none, latest — the default — or all).
//! A disabled schedule decides nothing; enabling it, or changing its trigger, starts it
//! afresh from that moment (what was due meanwhile is not made up).

use crate::Core;
use crate::authz::{Action, Principal};
use crate::endpoints::Endpoints;
use crate::endpoints::batch::BatchInvoke;
use crate::error::{Error, Result};
use crate::jobs::{JobQuery, Jobs};
use crate::now_ms;
use crate::resources::{KindHooks, Resources, Scope, WriteOptions};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;
use tarn_spec::trigger::{self, MissedFires, Trigger};
use tarn_spec::{Document, Kind, Node};
use tarn_store::{ResourceFilter, ResourceRow, ScheduleStateRow, WorkspaceRow};
use tokio::sync::Notify;

/// The tag every fired job carries: the schedule's name.
pub const SCHEDULE_TAG: &str = "azureml.schedule";
/// The tag with the due time a job was fired for (RFC 3339, UTC).
pub const DUE_TAG: &str = "azureml.schedule.due";

/// How many fires `show` lists ahead.
const NEXT_FIRES: usize = 5;

pub struct Schedules {
    core: Arc<Core>,
    resources: Arc<Resources>,
    jobs: Arc<Jobs>,
    endpoints: Arc<Endpoints>,
    wake: Arc<Notify>,
    /// Since when this server has been deciding without a break, and its last pass (seconds):
    /// what fell due before that was missed.
    deciding: std::sync::Mutex<Option<(i64, i64)>>,
}

/// A break between passes longer than this (a server that stopped leading, or was stopped)
/// starts a new deciding period: what fell due meanwhile was missed.
const BREAK_S: i64 = 30;

crate::service_on_core!(Schedules);

/// What `show` adds to a schedule: what comes next and how its fires went.
pub struct ScheduleStatus {
    pub is_enabled: bool,
    /// The next fires (ms since the epoch), soonest first; none when disabled or ended.
    pub next_fires: Vec<i64>,
    pub fired: i64,
    pub skipped: i64,
    /// Why the last fire failed, if it did.
    pub last_error: Option<String>,
    /// The jobs it fired, newest first (`show` only).
    pub recent_jobs: Vec<crate::jobs::JobView>,
}

fn schedule_scope(workspace: &str) -> Scope<'_> {
    Scope {
        workspace,
        kind: Kind::Schedule,
        parent: None,
    }
}

/// `nightly-20260701T090000`: the one name a due time's job can have.
fn job_name(schedule: &str, due_s: i64) -> String {
    format!("{schedule}-{}", trigger::compact(due_s))
}

/// What decides a schedule's fires: a changed one starts it afresh.
fn rule_digest(spec: &Json) -> String {
    let rule = json!([spec.get("trigger"), is_enabled(spec)]);
    tarn_spec::digest::sha256_hex(rule.to_string().as_bytes())
}

fn is_enabled(spec: &Json) -> bool {
    spec.get("is_enabled").and_then(Json::as_bool) != Some(false)
}

/// The batch endpoint a `create_job.job` id names (`…/batchEndpoints/<e>[/deployments/<d>]`).
fn batch_endpoint_of(reference: &str) -> Option<(String, Option<String>)> {
    let (_, rest) = reference.split_once("batchEndpoints/")?;
    let mut parts = rest.split('/');
    let endpoint = parts.next().filter(|e| !e.is_empty())?.to_string();
    let deployment = match (parts.next(), parts.next()) {
        (Some("deployments"), Some(d)) if !d.is_empty() => Some(d.to_string()),
        _ => None,
    };
    Some((endpoint, deployment))
}

/// Fills in what a schedule's job may say of its own fire, as Azure ML's schedules do:
/// `${{name}}` (the fired job's name) and `${{creation_context.trigger_time}}` (its due time).
fn fill_fire_values(v: &mut Json, name: &str, due: &str) {
    match v {
        Json::String(s) if s.contains("${{") => {
            *s = s
                .replace("${{name}}", name)
                .replace("${{creation_context.trigger_time}}", due);
        }
        Json::Array(items) => items
            .iter_mut()
            .for_each(|x| fill_fire_values(x, name, due)),
        Json::Object(map) => map
            .values_mut()
            .for_each(|x| fill_fire_values(x, name, due)),
        _ => {}
    }
}

/// Applies `create_job`'s changes to the job they change: maps are merged key by key, other
/// fields replaced.
fn apply_overrides(job: &mut Json, overrides: &serde_json::Map<String, Json>) -> Result<()> {
    let base_type = job
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or("command")
        .to_string();
    for (key, value) in overrides {
        match key.as_str() {
            "job" => {}
            "type" => {
                if value.as_str() != Some(base_type.as_str()) {
                    return Err(Error::invalid(
                        "create_job.type",
                        format!("{value} does not match the job's type {base_type:?}"),
                    ));
                }
            }
            "inputs" | "outputs" | "tags" | "properties" | "environment_variables" | "settings" => {
                let slot = &mut job[key.as_str()];
                if !slot.is_object() {
                    *slot = json!({});
                }
                for (k, v) in value.as_object().into_iter().flatten() {
                    slot[k.as_str()] = v.clone();
                }
            }
            _ => job[key.as_str()] = value.clone(),
        }
    }
    Ok(())
}

impl Schedules {
    pub(crate) fn new(
        core: Arc<Core>,
        resources: Arc<Resources>,
        jobs: Arc<Jobs>,
        endpoints: Arc<Endpoints>,
    ) -> Self {
        Schedules {
            core,
            resources,
            jobs,
            endpoints,
            wake: Default::default(),
            deciding: Default::default(),
        }
    }

    /// The job a schedule fires for `due_s`, checked as a job document: named after the
    /// schedule and due time, tagged with both.
    async fn job_for(
        &self,
        ws: &WorkspaceRow,
        schedule: &str,
        spec: &Json,
        owner: &Principal,
        due_s: i64,
    ) -> Result<Json> {
        let create = spec.get("create_job").unwrap_or(&Json::Null);
        let (base, overrides) = match create {
            Json::String(reference) => (self.named_job(ws, reference, owner, None).await?, None),
            Json::Object(o) => match o.get("job") {
                Some(Json::String(reference)) => (
                    self.named_job(ws, reference, owner, Some(o)).await?,
                    Some(o),
                ),
                Some(inline) => (inline.clone(), Some(o)),
                None => (create.clone(), None),
            },
            _ => {
                return Err(Error::invalid(
                    "create_job",
                    "a schedule fires a job: give `create_job` as a job, a job file, or `azureml:<job name>`",
                ));
            }
        };
        let mut job = base;
        if let Some(o) = overrides {
            let mut o = o.clone();
            if let Some(Json::String(reference)) = o.get("job")
                && batch_endpoint_of(reference).is_some()
            {
                // The invocation took its inputs, outputs and experiment; Azure ML's schedules
                // write `type: pipeline` for any endpoint, whatever job its deployment runs.
                for taken in ["type", "inputs", "outputs", "experiment_name"] {
                    o.remove(taken);
                }
            }
            apply_overrides(&mut job, &o)?;
        }
        let name = job_name(schedule, due_s);
        let due = trigger::rfc3339(due_s);
        fill_fire_values(&mut job, &name, &due);
        let Some(fields) = job.as_object_mut() else {
            return Err(Error::invalid("create_job", "is not a job"));
        };
        fields.insert("name".into(), Json::String(name));
        let tags = fields.entry("tags").or_insert_with(|| json!({}));
        if !tags.is_object() {
            *tags = json!({});
        }
        tags[SCHEDULE_TAG] = Json::String(schedule.to_string());
        tags[DUE_TAG] = Json::String(due);
        let doc = tarn_spec::validate(&Node::from_json(&job), Some(Kind::Job)).map_err(|errs| {
            Error::Invalid(
                errs.into_iter()
                    .map(|mut d| {
                        d.path = tarn_spec::diag::join("create_job", &d.path);
                        d
                    })
                    .collect(),
            )
        })?;
        Ok(doc.spec)
    }

    /// A job `create_job` names: a job submitted before (`azureml:<name>`), or a batch
    /// endpoint to invoke (with the overrides' inputs and outputs).
    async fn named_job(
        &self,
        ws: &WorkspaceRow,
        reference: &str,
        owner: &Principal,
        overrides: Option<&serde_json::Map<String, Json>>,
    ) -> Result<Json> {
        if let Some((endpoint, deployment)) = batch_endpoint_of(reference) {
            let ep = self.endpoints.batch_endpoint_in(ws, &endpoint).await?;
            let field = |f: &str| {
                overrides
                    .and_then(|o| o.get(f))
                    .and_then(Json::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            let req = BatchInvoke {
                deployment,
                inputs: field("inputs"),
                outputs: field("outputs"),
                experiment_name: overrides
                    .and_then(|o| o.get("experiment_name"))
                    .and_then(Json::as_str)
                    .map(str::to_string),
                ..Default::default()
            };
            let mut job = self
                .endpoints
                .batch_invocation_job(owner, ws, &ep, &req)
                .await?;
            // The invocation took its inputs and outputs; what is left applies as changes.
            if let Some(o) = job.as_object_mut() {
                o.remove("name");
            }
            return Ok(job);
        }
        let Some(name) = reference
            .strip_prefix("azureml:")
            .map(|n| n.trim_start_matches('/'))
        else {
            return Err(Error::invalid(
                "create_job",
                format!(
                    "{reference:?} is a local path: `tarn schedule create` reads job files; the API takes the job itself or `azureml:<job name>`"
                ),
            ));
        };
        let row = self.store.get_job(&ws.id, name).await?.ok_or_else(|| {
            Error::invalid(
                "create_job",
                format!("no job {name:?} in workspace {:?} to repeat", ws.name),
            )
        })?;
        let mut job = row.spec;
        if let Some(o) = job.as_object_mut() {
            o.remove("name");
        }
        Ok(job)
    }

    /// The principal a schedule fires as: whoever made it, while they may still submit jobs.
    async fn owner(&self, row: &ResourceRow) -> Result<Principal> {
        let user = self.store.get_user(&row.created_by).await?;
        match user {
            Some(u) if !u.disabled => Ok(Principal {
                user_id: u.id,
                name: u.name,
                is_admin: u.is_admin,
                job: None,
                limit: None,
                groups: vec![],
                token_id: String::new(),
                kind: "user".into(),
            }),
            Some(_) => Err(Error::Forbidden(format!(
                "the schedule's owner {:?} is disabled",
                row.created_by
            ))),
            // Made by Tarn itself (a system principal): fires as that.
            None if row.created_by.starts_with("tarn:") => Ok(Principal::system(
                row.created_by.trim_start_matches("tarn:"),
            )),
            None => Err(Error::Forbidden(format!(
                "the schedule's owner {:?} no longer exists",
                row.created_by
            ))),
        }
    }

    /// Submits the job for one due time; `Ok(false)` when it was fired already.
    async fn fire(&self, ws: &WorkspaceRow, row: &ResourceRow, due_s: i64) -> Result<bool> {
        let owner = self.owner(row).await?;
        // The owner must still be allowed to submit jobs here.
        self.authorized_workspace(
            &owner,
            &ws.name,
            crate::authz::Target::Resource(Kind::Job),
            Action::Write,
        )
        .await?;
        let job = self
            .job_for(ws, &row.key.name, &row.spec, &owner, due_s)
            .await?;
        match self.jobs.submit(ws, &owner.name, job, "").await {
            Ok(fired) => {
                tracing::info!(workspace = %ws.name, schedule = %row.key.name, job = %fired.name, "schedule fired");
                Ok(true)
            }
            Err(Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts the leader's task that fires schedules (every second, and at once when one is
    /// written).
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.spawn_task(
            "schedules",
            Duration::from_secs(1),
            self.wake.clone(),
            self,
            |s| async move { s.pass(now_ms() / 1000).await },
        )
    }

    /// One pass: every schedule of every workspace decided at `now_s`.
    pub async fn pass(&self, now_s: i64) -> Result<()> {
        let deciding_since = {
            let mut deciding = self.deciding.lock().expect("deciding lock");
            let since = match *deciding {
                Some((since, last)) if now_s - last <= BREAK_S => since,
                _ => now_s,
            };
            *deciding = Some((since, now_s));
            since
        };
        let states = self.store.schedule_states().await?;
        for ws in self.store.list_workspaces().await? {
            let filter = ResourceFilter {
                parent: "",
                name: None,
                include_archived: false,
                latest_only: true,
            };
            let rows = self
                .store
                .list_resources(&ws.id, Kind::Schedule.collection(), &filter)
                .await?;
            for row in rows {
                let known = states.iter().find(|s| {
                    s.workspace_id == ws.id
                        && s.name == row.key.name
                        && s.created_at == row.created_at
                });
                if let Err(e) = self
                    .decide(&ws, &row, known.cloned(), now_s, deciding_since)
                    .await
                {
                    tracing::warn!(workspace = %ws.name, schedule = %row.key.name, "schedule not decided: {e}");
                }
            }
        }
        Ok(())
    }

    async fn decide(
        &self,
        ws: &WorkspaceRow,
        row: &ResourceRow,
        known: Option<ScheduleStateRow>,
        now_s: i64,
        deciding_since: i64,
    ) -> Result<()> {
        let created_s = row.created_at / 1000;
        let rule = rule_digest(&row.spec);
        let mut changed = known.is_none();
        let mut state = known.unwrap_or_else(|| ScheduleStateRow {
            workspace_id: ws.id.clone(),
            name: row.key.name.clone(),
            created_at: row.created_at,
            rule: rule.clone(),
            // A recurrence without `start_time` fires the moment it is made.
            through: created_s - 1,
            ..Default::default()
        });
        if state.rule != rule {
            state.rule = rule;
            state.through = state.through.max(now_s - 1);
            changed = true;
        }
        if is_enabled(&row.spec) {
            match Trigger::parse(row.spec.get("trigger").unwrap_or(&Json::Null), created_s) {
                Err((field, message)) => {
                    let error = format!("{field}: {message}");
                    changed |= state.last_error != error;
                    state.last_error = error;
                }
                Ok(trigger) => {
                    let missed =
                        MissedFires::parse(row.spec.get("missed_fires").and_then(Json::as_str));
                    let decision =
                        trigger::due(&trigger, state.through, now_s, missed, deciding_since);
                    for due_s in &decision.fire {
                        match self.fire(ws, row, *due_s).await {
                            Ok(true) => {
                                state.fired += 1;
                                state.last_error.clear();
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(workspace = %ws.name, schedule = %row.key.name, "schedule's job not submitted: {e}");
                                state.last_error = e.to_string();
                            }
                        }
                    }
                    if let Some(through) = decision.through {
                        state.through = through;
                        state.skipped += decision.skipped as i64;
                        changed = true;
                    }
                }
            }
        }
        if changed {
            state.updated_at = now_ms();
            self.store.set_schedule_state(&state).await?;
        }
        Ok(())
    }

    /// What comes next for a schedule and how its fires went; with its jobs when `jobs`.
    pub async fn status(
        &self,
        p: &Principal,
        workspace: &str,
        row: &ResourceRow,
        jobs: bool,
    ) -> Result<ScheduleStatus> {
        let enabled = is_enabled(&row.spec);
        let state = self.store.schedule_states().await?.into_iter().find(|s| {
            s.workspace_id == row.key.workspace_id
                && s.name == row.key.name
                && s.created_at == row.created_at
        });
        let now_s = now_ms() / 1000;
        let next_fires = match Trigger::parse(
            row.spec.get("trigger").unwrap_or(&Json::Null),
            row.created_at / 1000,
        ) {
            Ok(t) if enabled => {
                let after = state
                    .as_ref()
                    .map_or(row.created_at / 1000 - 1, |s| s.through)
                    .max(now_s - 1);
                t.upcoming(after, NEXT_FIRES)
                    .into_iter()
                    .map(|s| s * 1000)
                    .collect()
            }
            _ => vec![],
        };
        let recent_jobs = if jobs {
            let query = JobQuery {
                limit: Some(1000),
                ..Default::default()
            };
            self.jobs
                .list_jobs(p, workspace, &query)
                .await?
                .into_iter()
                .filter(|j| {
                    j.row.parent.is_empty()
                        && j.row
                            .spec
                            .pointer(&format!("/tags/{SCHEDULE_TAG}"))
                            .and_then(Json::as_str)
                            == Some(row.key.name.as_str())
                })
                .take(10)
                .collect()
        } else {
            vec![]
        };
        Ok(ScheduleStatus {
            is_enabled: enabled,
            next_fires,
            fired: state.as_ref().map_or(0, |s| s.fired),
            skipped: state.as_ref().map_or(0, |s| s.skipped),
            last_error: state.map(|s| s.last_error).filter(|e| !e.is_empty()),
            recent_jobs,
        })
    }

    /// `tarn schedule enable|disable`: an update of `is_enabled`, audited as one.
    pub async fn set_enabled(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        enabled: bool,
    ) -> Result<crate::resources::ResourceView> {
        let scope = schedule_scope(workspace);
        let current = self.resources.show_resource(p, scope, name, None).await?;
        let mut spec = current.row.spec;
        spec["is_enabled"] = Json::Bool(enabled);
        self.resources
            .update_resource(p, scope, name, None, &spec, WriteOptions::default())
            .await
    }
}

#[async_trait::async_trait]
impl KindHooks for Schedules {
    async fn check(
        &self,
        w: &crate::resources::Write<'_>,
        doc: &mut Document,
        _full: &Json,
    ) -> Result<()> {
        let now_s = now_ms() / 1000;
        Trigger::parse(doc.spec.get("trigger").unwrap_or(&Json::Null), now_s)
            .map_err(|(field, message)| Error::invalid(&field, message))?;
        // The job it fires must be one Tarn takes, now rather than at its first fire.
        let job = self.job_for(w.ws, w.name, &doc.spec, w.p, now_s).await?;
        let compute = job.get("compute").and_then(Json::as_str).or_else(|| {
            job.pointer("/settings/default_compute")
                .and_then(Json::as_str)
        });
        self.jobs
            .placement(w.ws, compute)
            .await
            .map_err(|e| match e {
                Error::Invalid(mut d) => {
                    for d in &mut d {
                        d.path = tarn_spec::diag::join("create_job", &d.path);
                    }
                    Error::Invalid(d)
                }
                other => other,
            })?;
        Ok(())
    }

    async fn written(&self, w: &crate::resources::Write<'_>, spec: Option<&Json>) -> Result<()> {
        if spec.is_none() {
            self.store.delete_schedule_state(&w.ws.id, w.name).await?;
        }
        self.wake.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fired_jobs_are_named_after_their_schedule_and_due_time() {
        assert_eq!(
            job_name("nightly", 1_782_896_400),
            "nightly-20260701T090000"
        );
    }

    #[test]
    fn batch_endpoint_ids_are_read() {
        assert_eq!(
            batch_endpoint_of(
                "azureml:/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w/batchEndpoints/churn"
            ),
            Some(("churn".into(), None))
        );
        assert_eq!(
            batch_endpoint_of("azureml:batchEndpoints/churn/deployments/blue"),
            Some(("churn".into(), Some("blue".into())))
        );
        assert_eq!(batch_endpoint_of("azureml:my-job"), None);
    }

    #[test]
    fn overrides_merge_maps_and_replace_the_rest() {
        let mut job = json!({"type": "pipeline", "inputs": {"a": 1, "b": 2}, "settings": {"x": true}, "compute": "c1"});
        let o = json!({"job": "azureml:j", "type": "pipeline", "inputs": {"b": 3}, "settings": {"continue_on_step_failure": true}, "compute": "c2", "tags": {"t": "v"}});
        apply_overrides(&mut job, o.as_object().unwrap()).unwrap();
        assert_eq!(
            job,
            json!({"type": "pipeline", "inputs": {"a": 1, "b": 3}, "settings": {"x": true, "continue_on_step_failure": true}, "compute": "c2", "tags": {"t": "v"}})
        );
        let wrong = json!({"type": "command"});
        let err = apply_overrides(&mut job, wrong.as_object().unwrap()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
