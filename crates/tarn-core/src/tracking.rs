//! MLflow-compatible experiment tracking: each workspace is an MLflow tracking server. This
//! module holds the rules (MLflow's limits and messages, lifecycle, the job ↔ run link); the
//! store holds the rows; `tarn-api`'s `mlflow` module speaks the wire protocol.

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::now_ms;
use std::sync::Arc;
use tarn_spec::Kind;
use tarn_spec::mlflow_search;
use tarn_store::{BatchRefused, ModelLink, RunQuery, StoreError, WorkspaceRow};
pub use tarn_store::{DatasetSummary, ExperimentRow, MetricRow, ModelMetricRow, RunData, RunRow};

/// MLflow's limits (mlflow/utils/validation.py).
pub mod limits {
    pub const METRICS_PER_BATCH: usize = 1000;
    pub const PARAMS_PER_BATCH: usize = 100;
    pub const TAGS_PER_BATCH: usize = 100;
    pub const ENTITIES_PER_BATCH: usize = 1000;
    pub const PARAM_VALUE: usize = 6000;
    pub const TAG_VALUE: usize = 8000;
    pub const KEY: usize = 250;
    pub const EXPERIMENT_NAME: usize = 500;
    pub const SEARCH_MAX_RESULTS: i64 = 50_000;
    pub const HISTORY_PAGE: i64 = 25_000;
}

/// The experiment every workspace has, as in MLflow.
pub const DEFAULT_EXPERIMENT: &str = "Default";

/// MLflow's run statuses.
pub const RUN_STATUSES: &[&str] = &["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// Which lifecycle stages a search covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewType {
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    pub fn parse(text: Option<&str>) -> Result<ViewType> {
        match text.unwrap_or("ACTIVE_ONLY") {
            "ACTIVE_ONLY" | "1" => Ok(ViewType::ActiveOnly),
            "DELETED_ONLY" | "2" => Ok(ViewType::DeletedOnly),
            "ALL" | "3" => Ok(ViewType::All),
            other => Err(Error::invalid(
                "view_type",
                format!("Invalid view type '{other}'"),
            )),
        }
    }

    fn stage(self) -> Option<String> {
        match self {
            ViewType::ActiveOnly => Some("active".into()),
            ViewType::DeletedOnly => Some("deleted".into()),
            ViewType::All => None,
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

/// MLflow's words for a run that is not there.
fn no_run(run_id: &str) -> Error {
    Error::not_found(format!("Run with id={run_id}"))
}

/// MLflow's words for writing to a run that is not active.
fn not_active(run_id: &str, stage: &str) -> Error {
    invalid(format!(
        "The run {run_id} must be in the 'active' state. Current state is {stage}."
    ))
}

fn check_key(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > limits::KEY {
        return Err(invalid(format!(
            "Invalid value '{key}' for parameter '{kind}' supplied: it must be 1 to {} characters",
            limits::KEY
        )));
    }
    // MLflow's rule: alphanumerics, underscores, dashes, periods, spaces, slashes; no `..`.
    let ok = key
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':'));
    if !ok || key.split('/').any(|p| p == ".." || p == ".") || key.starts_with('/') {
        return Err(invalid(format!(
            "Invalid {kind} name: '{key}'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), and slashes (/)."
        )));
    }
    Ok(())
}

/// A new run id: 32 hex digits, as MLflow makes them.
fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// MLflow tracking: experiments, runs, metrics, datasets and logged models.
pub struct Tracking {
    core: Arc<Core>,
    /// Workspaces known to have their Default experiment (checked once per process).
    tracking_ready: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Experiments seen to exist, by workspace id (see [`Tracking::experiment_id`]).
    known_experiments: std::sync::Mutex<std::collections::HashSet<(String, i64)>>,
}

/// Experiments remembered to exist; beyond this many the memory starts afresh.
const KNOWN_EXPERIMENTS: usize = 100_000;

crate::service_on_core!(Tracking);

impl Tracking {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Tracking {
            core,
            tracking_ready: Default::default(),
            known_experiments: Default::default(),
        }
    }
}

impl Tracking {
    /// The workspace, if the caller may `action` on tracking data (jobs' permissions: a Reader
    /// reads, a Data Scientist writes). Makes the Default experiment on first use.
    pub async fn tracking_workspace(
        &self,
        p: &Principal,
        workspace: &str,
        action: Action,
    ) -> Result<WorkspaceRow> {
        let ws = self
            .authorized_workspace(p, workspace, Target::Resource(Kind::Job), action)
            .await?;
        self.ensure_default_experiment(&ws).await?;
        Ok(ws)
    }

    /// Makes the workspace's Default experiment (id 0) unless it exists.
    pub(crate) async fn ensure_default_experiment(&self, ws: &WorkspaceRow) -> Result<()> {
        let known = self.tracking_ready.lock().expect("lock").contains(&ws.id);
        if !known && self.store.get_experiment(&ws.id, 0).await?.is_none() {
            let now = now_ms();
            let row = ExperimentRow {
                workspace_id: ws.id.clone(),
                experiment_id: 0,
                name: DEFAULT_EXPERIMENT.into(),
                artifact_location: "mlflow-artifacts:/{experiment_id}".into(),
                lifecycle_stage: "active".into(),
                creation_time: now,
                last_update_time: now,
                tags: vec![],
            };
            match self.store.create_experiment(&row).await {
                Ok(_) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !known {
            self.tracking_ready
                .lock()
                .expect("lock")
                .insert(ws.id.clone());
        }
        Ok(())
    }

    pub async fn create_experiment(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        artifact_location: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> Result<i64> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        self.create_experiment_in(&ws, name, artifact_location, tags)
            .await
    }

    pub(crate) async fn create_experiment_in(
        &self,
        ws: &WorkspaceRow,
        name: &str,
        artifact_location: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> Result<i64> {
        if name.is_empty() {
            return Err(invalid("Invalid experiment name: ''"));
        }
        if name.len() > limits::EXPERIMENT_NAME {
            return Err(invalid(format!(
                "Experiment name exceeds the maximum length of {}",
                limits::EXPERIMENT_NAME
            )));
        }
        let now = now_ms();
        // A relative local path means one on the server, as MLflow resolves it.
        let artifact_location = match artifact_location {
            Some(loc)
                if tarn_spec::uri::split_scheme(loc).0.is_empty() && !loc.starts_with('/') =>
            {
                std::env::current_dir()
                    .map(|d| d.join(loc).display().to_string())
                    .unwrap_or_else(|_| loc.to_string())
            }
            Some(loc) => loc.to_string(),
            None => "mlflow-artifacts:/{experiment_id}".to_string(),
        };
        let row = ExperimentRow {
            workspace_id: ws.id.clone(),
            experiment_id: 0,
            name: name.to_string(),
            artifact_location,
            lifecycle_stage: "active".into(),
            creation_time: now,
            last_update_time: now,
            tags,
        };
        match self.store.create_experiment(&row).await {
            Ok(id) => Ok(id),
            Err(StoreError::Conflict) => Err(Error::AlreadyExists {
                what: format!("Experiment '{name}'"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn experiment(&self, ws: &WorkspaceRow, id: &str) -> Result<ExperimentRow> {
        let not_found = || Error::not_found(format!("Experiment with id '{id}'"));
        let n: i64 = id.parse().map_err(|_| not_found())?;
        self.store
            .get_experiment(&ws.id, n)
            .await?
            .ok_or_else(not_found)
    }

    /// The number of an experiment of the workspace, refused as [`Tracking::experiment`]
    /// refuses it when there is none. An experiment is never removed but with its workspace
    /// (whose id is never used again), so one seen to exist is remembered: a trace search
    /// names the same experiments call after call, and reading each again cost a trip to
    /// the database per search.
    pub(crate) async fn experiment_id(&self, ws: &WorkspaceRow, id: &str) -> Result<i64> {
        if let Ok(n) = id.parse::<i64>() {
            let key = (ws.id.clone(), n);
            if self.known_experiments.lock().expect("lock").contains(&key) {
                return Ok(n);
            }
        }
        let n = self.experiment(ws, id).await?.experiment_id;
        let mut known = self.known_experiments.lock().expect("lock");
        if known.len() >= KNOWN_EXPERIMENTS {
            known.clear();
        }
        known.insert((ws.id.clone(), n));
        Ok(n)
    }

    /// Refuses a write to an experiment that is not active, in MLflow's words.
    pub(crate) fn ensure_active(exp: &ExperimentRow) -> Result<()> {
        if exp.lifecycle_stage != "active" {
            return Err(invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is {}.",
                exp.experiment_id, exp.lifecycle_stage
            )));
        }
        Ok(())
    }

    pub async fn get_experiment(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
    ) -> Result<ExperimentRow> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        self.experiment(&ws, id).await
    }

    pub async fn experiment_by_name(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
    ) -> Result<ExperimentRow> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        self.store
            .experiment_by_name(&ws.id, name)
            .await?
            .ok_or_else(|| Error::not_found(format!("Experiment '{name}'")))
    }

    /// Experiments in the view, filtered by `name` / `tags.<k>` clauses (`=`, `!=`, `LIKE`,
    /// `ILIKE`), ordered by `name`, `experiment_id`, `creation_time` or `last_update_time`.
    pub async fn search_experiments(
        &self,
        p: &Principal,
        workspace: &str,
        view: ViewType,
        filter: &str,
        order_by: &[String],
    ) -> Result<Vec<ExperimentRow>> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        let mut rows = self.store.list_experiments(&ws.id).await?;
        if let Some(stage) = view.stage() {
            rows.retain(|e| e.lifecycle_stage == stage);
        }
        let clauses = parse_experiment_filter(filter)?;
        rows.retain(|e| clauses.iter().all(|c| c.matches(e)));
        let mut orders = vec![];
        for o in order_by {
            let mut parts = o.split_whitespace();
            let field = parts
                .next()
                .unwrap_or_default()
                .trim_start_matches("attributes.")
                .to_string();
            let asc = !matches!(
                parts.next().map(str::to_ascii_uppercase).as_deref(),
                Some("DESC")
            );
            if !["name", "experiment_id", "creation_time", "last_update_time"]
                .contains(&field.as_str())
            {
                return Err(invalid(format!("Invalid order_by entity: {o}")));
            }
            orders.push((field, asc));
        }
        rows.sort_by(|a, b| {
            for (field, asc) in &orders {
                let ord = match field.as_str() {
                    "name" => a.name.cmp(&b.name),
                    "experiment_id" => a.experiment_id.cmp(&b.experiment_id),
                    "creation_time" => a.creation_time.cmp(&b.creation_time),
                    _ => a.last_update_time.cmp(&b.last_update_time),
                };
                let ord = if *asc { ord } else { ord.reverse() };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            // MLflow's default: newest first.
            b.creation_time
                .cmp(&a.creation_time)
                .then(b.experiment_id.cmp(&a.experiment_id))
        });
        Ok(rows)
    }

    pub async fn update_experiment(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        new_name: Option<&str>,
        stage: Option<&str>,
    ) -> Result<()> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let mut row = self.experiment(&ws, id).await?;
        if let Some(name) = new_name {
            if row.lifecycle_stage != "active" {
                return Err(invalid("Cannot rename a non-active experiment."));
            }
            if name.is_empty() {
                return Err(invalid("Invalid experiment name: ''"));
            }
            row.name = name.to_string();
        }
        if let Some(stage) = stage {
            if stage == "deleted" && row.experiment_id == 0 {
                return Err(invalid(
                    "Cannot delete the default experiment '0'. This is an internally reserved experiment.",
                ));
            }
            row.lifecycle_stage = stage.to_string();
        }
        row.last_update_time = now_ms();
        match self.store.update_experiment(&row).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => Err(Error::AlreadyExists {
                what: format!("Experiment '{}'", row.name),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn set_experiment_tag(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let row = self.experiment(&ws, id).await?;
        check_key("tag", key)?;
        Self::ensure_active(&row)?;
        self.store
            .set_experiment_tag(&ws.id, row.experiment_id, key, value)
            .await?;
        Ok(())
    }

    async fn run(&self, ws: &WorkspaceRow, run_id: &str) -> Result<(RunRow, RunData)> {
        self.store
            .get_run(&ws.id, run_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Run with id={run_id}")))
    }

    async fn run_only(&self, ws: &WorkspaceRow, run_id: &str) -> Result<RunRow> {
        self.store
            .run_row(&ws.id, run_id)
            .await?
            .ok_or_else(|| no_run(run_id))
    }

    /// A run that may be written to: it exists and is not deleted.
    async fn active_run(&self, ws: &WorkspaceRow, run_id: &str) -> Result<RunRow> {
        let row = self.run_only(ws, run_id).await?;
        if row.lifecycle_stage != "active" {
            return Err(not_active(run_id, &row.lifecycle_stage));
        }
        Ok(row)
    }

    /// Creates a run (in the Default experiment when `experiment_id` is empty).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_run(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        user_id: Option<&str>,
        run_name: Option<&str>,
        start_time: Option<i64>,
        mut tags: Vec<(String, String)>,
    ) -> Result<(RunRow, RunData)> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let exp = self
            .experiment(
                &ws,
                if experiment_id.is_empty() {
                    "0"
                } else {
                    experiment_id
                },
            )
            .await?;
        Self::ensure_active(&exp)?;
        for (k, v) in &tags {
            check_key("tag", k)?;
            check_len("tag", k, v, limits::TAG_VALUE)?;
        }
        let run_id = new_run_id();
        let name = run_name
            .map(str::to_string)
            .or_else(|| {
                tags.iter()
                    .find(|(k, _)| k == "mlflow.runName")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| format!("run-{}", &run_id[..8]));
        if !tags.iter().any(|(k, _)| k == "mlflow.runName") {
            tags.push(("mlflow.runName".into(), name.clone()));
        }
        let row = RunRow {
            workspace_id: ws.id.clone(),
            run_id: run_id.clone(),
            experiment_id: exp.experiment_id,
            run_name: name,
            user_id: user_id.unwrap_or(&p.name).to_string(),
            status: "RUNNING".into(),
            start_time: Some(start_time.unwrap_or_else(now_ms)),
            end_time: None,
            lifecycle_stage: "active".into(),
            artifact_uri: format!(
                "{}/{run_id}/artifacts",
                exp.artifact_location.trim_end_matches('/')
            ),
        };
        self.store.create_run(&row, &tags).await?;
        self.run(&ws, &run_id).await
    }

    pub async fn get_run(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
    ) -> Result<(RunRow, RunData)> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        self.run(&ws, run_id).await
    }

    pub async fn update_run(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunRow> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let mut row = self.run_only(&ws, run_id).await?;
        if let Some(s) = status {
            if !RUN_STATUSES.contains(&s) {
                return Err(invalid(format!(
                    "Invalid value '{s}' for parameter 'status' supplied"
                )));
            }
            row.status = s.to_string();
        }
        if end_time.is_some() {
            row.end_time = end_time;
        }
        if let Some(n) = run_name.filter(|n| !n.is_empty()) {
            row.run_name = n.to_string();
            self.store
                .log_batch(
                    &ws.id,
                    run_id,
                    &[],
                    &[],
                    &[("mlflow.runName".into(), n.to_string())],
                )
                .await?
                .ok();
        }
        self.store.update_run(&row).await?;
        Ok(row)
    }

    pub async fn set_run_lifecycle(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        deleted: bool,
    ) -> Result<()> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let mut row = self.run_only(&ws, run_id).await?;
        row.lifecycle_stage = if deleted { "deleted" } else { "active" }.into();
        self.store.update_run(&row).await?;
        Ok(())
    }

    /// Logs metrics, params and tags in one transaction, with MLflow's limits and rules.
    pub async fn log_batch(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        batch: Batch,
    ) -> Result<()> {
        let Batch {
            metrics,
            params,
            tags,
            of_models,
        } = batch;
        if metrics.len() > limits::METRICS_PER_BATCH
            || params.len() > limits::PARAMS_PER_BATCH
            || tags.len() > limits::TAGS_PER_BATCH
            || metrics.len() + params.len() + tags.len() > limits::ENTITIES_PER_BATCH
        {
            return Err(invalid(format!(
                "A batch logging request can contain at most {} metrics, {} params, and {} tags, and at most {} entities in total. Got {} metrics, {} params, and {} tags",
                limits::METRICS_PER_BATCH,
                limits::PARAMS_PER_BATCH,
                limits::TAGS_PER_BATCH,
                limits::ENTITIES_PER_BATCH,
                metrics.len(),
                params.len(),
                tags.len()
            )));
        }
        for m in &metrics {
            check_key("metric", &m.key)?;
        }
        for (k, v) in &params {
            check_key("param", k)?;
            check_len("param", k, v, limits::PARAM_VALUE)?;
        }
        for (k, v) in &tags {
            check_key("tag", k)?;
            check_len("tag", k, v, limits::TAG_VALUE)?;
        }
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        // A batch may repeat a param with the same value, but not change it.
        let mut seen = std::collections::HashMap::new();
        for (k, v) in &params {
            if let Some(old) = seen.insert(k.clone(), v.clone())
                && &old != v
            {
                return Err(invalid(format!(
                    "Duplicate parameter keys have been submitted: key '{k}' with values '{old}' and '{v}'"
                )));
            }
        }
        // Metrics that name a logged model need it to exist: checked before anything is
        // written, and written in the batch's transaction (all of the request, or none).
        let mut known = std::collections::HashSet::new();
        for r in &of_models {
            if known.insert(r.model_id.clone()) {
                self.logged_model(&ws, &r.model_id).await?;
            }
        }
        match self
            .store
            .log_batch_with_models(&ws.id, run_id, &metrics, &params, &tags, &of_models)
            .await?
        {
            Ok(()) => Ok(()),
            Err(BatchRefused::NoRun) => Err(no_run(run_id)),
            Err(BatchRefused::RunNotActive { stage }) => Err(not_active(run_id, &stage)),
            Err(BatchRefused::ParamConflict { key, old, new }) => Err(invalid(format!(
                "Changing param values is not allowed. Param with key='{key}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'."
            ))),
        }
    }

    /// Records the datasets a run used. Each input is `{dataset: {name, digest, source_type,
    /// source, schema?, profile?}, tags: [{key, value}]}`, with MLflow's length limits.
    pub async fn log_inputs(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        inputs: &[serde_json::Value],
        models: &[(String, i64)],
    ) -> Result<()> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        self.active_run(&ws, run_id).await?;
        let mut rows = vec![];
        for input in inputs {
            let d = &input["dataset"];
            let field = |k: &str, max: usize, required: bool| -> Result<Option<String>> {
                match d.get(k).and_then(serde_json::Value::as_str) {
                    Some(v) if v.len() > max => Err(invalid(format!(
                        "Dataset {k} exceeds the maximum length of {max}"
                    ))),
                    Some(v) => Ok(Some(v.to_string())),
                    None if required => Err(invalid(format!(
                        "Missing value for required parameter 'datasets.dataset.{k}'"
                    ))),
                    None => Ok(None),
                }
            };
            let name = field("name", 500, true)?.unwrap_or_default();
            let digest = field("digest", 36, true)?.unwrap_or_default();
            field("source_type", 500, true)?;
            field("source", 65_535, true)?;
            field("schema", 1_048_575, false)?;
            field("profile", 16_777_215, false)?;
            let mut tags = serde_json::Map::new();
            for t in input["tags"].as_array().into_iter().flatten() {
                let (Some(k), Some(v)) = (t["key"].as_str(), t["value"].as_str()) else {
                    return Err(invalid("Input tags need a key and a value"));
                };
                if k.len() > 255 || v.len() > 500 {
                    return Err(invalid(
                        "Input tag keys are at most 255 characters, values at most 500",
                    ));
                }
                tags.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            }
            rows.push((name, digest, d.clone(), serde_json::Value::Object(tags)));
        }
        self.store.log_inputs(&ws.id, run_id, &rows).await?;
        self.link_models(&ws, run_id, ModelLink::Input, models)
            .await
    }

    /// Records the logged models a run produced (MLflow 3 `log_outputs`), each at a step.
    pub async fn log_outputs(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        models: &[(String, i64)],
    ) -> Result<()> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        self.active_run(&ws, run_id).await?;
        self.link_models(&ws, run_id, ModelLink::Output, models)
            .await
    }

    async fn link_models(
        &self,
        ws: &WorkspaceRow,
        run_id: &str,
        link: ModelLink,
        models: &[(String, i64)],
    ) -> Result<()> {
        for (id, _) in models {
            self.logged_model(ws, id).await?;
        }
        self.store.link_models(&ws.id, run_id, link, models).await?;
        Ok(())
    }

    /// A logged model's metrics.
    pub async fn model_metrics(
        &self,
        p: &Principal,
        workspace: &str,
        model_id: &str,
    ) -> Result<Vec<ModelMetricRow>> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        Ok(self.store.model_metrics(&ws.id, model_id).await?)
    }

    /// The datasets the runs of some experiments used (MLflow's UI lists them).
    pub async fn dataset_summaries(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_ids: &[String],
    ) -> Result<Vec<DatasetSummary>> {
        if experiment_ids.is_empty() {
            return Err(invalid(
                "SearchDatasets request must specify at least one experiment_id.",
            ));
        }
        if experiment_ids.len() > 20 {
            return Err(invalid(format!(
                "SearchDatasets request cannot specify more than 20 experiment_ids. Received {} experiment_ids.",
                experiment_ids.len()
            )));
        }
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        let ids: Vec<i64> = experiment_ids
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect();
        Ok(self.store.dataset_summaries(&ws.id, &ids).await?)
    }

    pub async fn delete_run_tag(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        key: &str,
    ) -> Result<()> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        self.active_run(&ws, run_id).await?;
        if !self.store.delete_run_tag(&ws.id, run_id, key).await? {
            return Err(Error::not_found(format!(
                "No tag with name: {key} in run with id {run_id}"
            )));
        }
        Ok(())
    }

    /// A page of a metric's history: (values, next offset if there are more).
    pub async fn metric_history(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        key: &str,
        offset: i64,
        max: Option<i64>,
    ) -> Result<(Vec<MetricRow>, Option<i64>)> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        self.run(&ws, run_id).await?;
        let limit = max
            .unwrap_or(limits::HISTORY_PAGE)
            .clamp(1, limits::HISTORY_PAGE);
        let mut rows = self
            .store
            .metric_history(&ws.id, run_id, key, offset, limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, more.then_some(offset + limit)))
    }

    /// A metric's history for a chart: at most about `points` values, sampled in the store.
    pub async fn metric_chart(
        &self,
        p: &Principal,
        workspace: &str,
        run_id: &str,
        key: &str,
        points: i64,
    ) -> Result<Vec<MetricRow>> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        self.run(&ws, run_id).await?;
        Ok(self
            .store
            .metric_history_sampled(&ws.id, run_id, key, points)
            .await?)
    }

    /// Runs matching a filter, ordered, one page: (runs, next offset if there are more).
    #[allow(clippy::too_many_arguments)]
    pub async fn search_runs(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_ids: &[String],
        filter: &str,
        view: ViewType,
        max_results: Option<i64>,
        order_by: &[String],
        offset: i64,
    ) -> Result<(Vec<(RunRow, RunData)>, Option<i64>)> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        let limit = max_results.unwrap_or(1000);
        if !(1..=limits::SEARCH_MAX_RESULTS).contains(&limit) {
            return Err(invalid(format!(
                "Invalid value {limit} for parameter 'max_results' supplied. It must be at most {}",
                limits::SEARCH_MAX_RESULTS
            )));
        }
        let clauses = mlflow_search::parse_filter(filter).map_err(invalid)?;
        let order = order_by
            .iter()
            .map(|o| mlflow_search::parse_order_by(o))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let ids = experiment_ids
            .iter()
            .filter_map(|e| e.parse::<i64>().ok())
            .collect();
        let query = RunQuery {
            experiment_ids: ids,
            lifecycle_stage: view.stage(),
            clauses,
            order_by: order,
            offset,
            limit: limit + 1,
        };
        let mut runs = self.store.search_runs(&ws.id, &query).await?;
        let more = runs.len() as i64 > limit;
        runs.truncate(limit as usize);
        Ok((runs, more.then_some(offset + limit)))
    }
}

fn check_len(kind: &str, key: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(invalid(format!(
            "{kind} '{key}' had length {}, which exceeded length limit of {max}",
            value.len()
        )));
    }
    Ok(())
}

/// One `search_experiments` clause: `name LIKE 'a%'`, `tags.team = 'ml'`.
struct ExperimentClause {
    field: String,
    op: mlflow_search::Op,
    value: String,
}

impl ExperimentClause {
    fn matches(&self, e: &ExperimentRow) -> bool {
        let actual = if self.field == "name" {
            Some(e.name.as_str())
        } else {
            e.tags
                .iter()
                .find(|(k, _)| Some(k.as_str()) == self.field.strip_prefix("tags."))
                .map(|(_, v)| v.as_str())
        };
        let Some(actual) = actual else { return false };
        use mlflow_search::Op;
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ne => actual != self.value,
            Op::Like => like(actual, &self.value, false),
            Op::ILike => like(actual, &self.value, true),
            _ => false,
        }
    }
}

fn parse_experiment_filter(filter: &str) -> Result<Vec<ExperimentClause>> {
    let clauses = mlflow_search::parse_filter_of(mlflow_search::Subject::Experiments, filter)
        .map_err(invalid)?;
    clauses
        .into_iter()
        .map(|c| {
            let field = match (c.entity, c.key.as_str()) {
                (mlflow_search::Entity::Attribute, "name") => "name".to_string(),
                (mlflow_search::Entity::Tag, k) => format!("tags.{k}"),
                _ => {
                    return Err(invalid(format!(
                        "Invalid attribute key '{}' specified for experiments",
                        c.key
                    )));
                }
            };
            let mlflow_search::Value::Str(value) = c.value else {
                return Err(invalid("experiment filters compare with quoted strings"));
            };
            Ok(ExperimentClause {
                field,
                op: c.op,
                value,
            })
        })
        .collect()
}

/// What one logging request writes to a run (`log-batch`, `log-metric`, `log-parameter`,
/// `set-tag`): all of it, or none.
#[derive(Debug, Default)]
pub struct Batch {
    pub metrics: Vec<MetricRow>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// Metrics that are also logged models' (`log_metric(model_id=…)`).
    pub of_models: Vec<ModelMetricRow>,
}

/// The points of one run's history a chart shows, as MLflow's `get_metric_history_bulk_interval`
/// samples them (since 3.17, each run on its own): the run's values within `range` (all of them
/// without one) in order of step, timestamp and value, cut into `max` buckets of equal length (the
/// first ones one longer when `max` does not divide them), each giving its first point; and the
/// last point always kept, in place of the last sampled one when there are `max` already.
pub fn sample_history(
    history: &[MetricRow],
    range: Option<(i64, i64)>,
    max: usize,
) -> Vec<MetricRow> {
    let mut rows: Vec<&MetricRow> = history
        .iter()
        .filter(|m| range.is_none_or(|(start, end)| (start..=end).contains(&m.step)))
        .collect();
    rows.sort_by(|a, b| {
        (a.step, a.timestamp)
            .cmp(&(b.step, b.timestamp))
            .then(a.value.total_cmp(&b.value))
    });
    let Some(&last) = rows.last() else {
        return vec![];
    };
    let (n, k) = (rows.len(), max.max(1));
    let (q, r) = (n / k, n % k);
    let mut out: Vec<MetricRow> = (0..k.min(n))
        .map(|bucket| rows[bucket * q + bucket.min(r)].clone())
        .collect();
    let same = |a: &MetricRow| {
        (a.step, a.timestamp, a.value.to_bits())
            == (last.step, last.timestamp, last.value.to_bits())
    };
    if !out.last().is_some_and(same) {
        if out.len() >= k {
            out.pop();
        }
        out.push(last.clone());
    }
    out
}

/// SQL LIKE on a string: `%` any run, `_` one character.
pub fn like(text: &str, pattern: &str, case_insensitive: bool) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            text.to_lowercase().chars().collect(),
            pattern.to_lowercase().chars().collect(),
        )
    } else {
        (text.chars().collect(), pattern.chars().collect())
    };
    fn go(t: &[char], p: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
            Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
            Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
        }
    }
    go(&t, &p)
}

pub use tarn_store::LoggedModelRow;

/// What to change on a logged model.
#[derive(Default)]
pub struct LoggedModelChange {
    pub status: Option<String>,
    /// A key with `None` is deleted.
    pub tags: Vec<(String, Option<String>)>,
    pub params: Vec<(String, String)>,
    pub delete: bool,
}

/// What logged models can be ordered by.
const LOGGED_MODEL_ORDER_FIELDS: &[&str] = &[
    "name",
    "model_id",
    "creation_timestamp",
    "last_updated_timestamp",
];

/// MLflow 3 logged-model statuses.
pub const LOGGED_MODEL_STATUSES: &[&str] = &[
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];

fn kv_object(items: Vec<(String, String)>, into: &mut serde_json::Value) {
    for (k, v) in items {
        set_or_remove(into, k, Some(v));
    }
}

impl Tracking {
    /// Creates a logged model (what `mlflow.<flavor>.log_model` makes before uploading files).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_logged_model(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        name: Option<&str>,
        model_type: Option<&str>,
        source_run_id: Option<&str>,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> Result<LoggedModelRow> {
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let exp = self.experiment(&ws, experiment_id).await?;
        if exp.lifecycle_stage != "active" {
            return Err(invalid(format!(
                "The experiment {experiment_id} must be in the 'active' state."
            )));
        }
        for (k, _) in params.iter().chain(&tags) {
            check_key("param", k)?;
        }
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let now = now_ms();
        let mut row = LoggedModelRow {
            workspace_id: ws.id.clone(),
            model_id: model_id.clone(),
            experiment_id: exp.experiment_id,
            // Like a run, a model without a name gets one of its own.
            name: name
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("model-{}", &model_id[2..10])),
            artifact_uri: format!(
                "{}/models/{model_id}/artifacts",
                exp.artifact_location.trim_end_matches('/')
            ),
            status: "LOGGED_MODEL_PENDING".into(),
            model_type: model_type.unwrap_or_default().to_string(),
            source_run_id: source_run_id.unwrap_or_default().to_string(),
            creator_id: p.name.clone(),
            creation_time: now,
            last_updated_time: now,
            tags: serde_json::json!({}),
            params: serde_json::json!({}),
            deleted: false,
        };
        kv_object(tags, &mut row.tags);
        kv_object(params, &mut row.params);
        self.store.put_logged_model(&row).await?;
        Ok(row)
    }

    async fn logged_model(&self, ws: &WorkspaceRow, id: &str) -> Result<LoggedModelRow> {
        self.store
            .get_logged_model(&ws.id, id)
            .await?
            .filter(|m| !m.deleted)
            .ok_or_else(|| Error::not_found(format!("Logged model with ID '{id}'")))
    }

    pub async fn get_logged_model(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
    ) -> Result<LoggedModelRow> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        self.logged_model(&ws, id).await
    }

    /// Changes a logged model: its status, tags, params, or deletes it.
    pub async fn change_logged_model(
        &self,
        p: &Principal,
        workspace: &str,
        id: &str,
        change: LoggedModelChange,
    ) -> Result<LoggedModelRow> {
        let LoggedModelChange {
            status,
            tags,
            params,
            delete,
        } = change;
        let ws = self.tracking_workspace(p, workspace, Action::Write).await?;
        let mut row = self.logged_model(&ws, id).await?;
        if let Some(s) = status.as_deref() {
            if !LOGGED_MODEL_STATUSES.contains(&s) {
                return Err(invalid(format!("Invalid logged model status '{s}'")));
            }
            row.status = s.to_string();
        }
        for (k, v) in tags {
            if v.is_none() && row.tags.get(&k).is_none() {
                return Err(Error::not_found(format!(
                    "No tag with key '{k}' for model with ID '{id}'"
                )));
            }
            set_or_remove(&mut row.tags, k, v);
        }
        kv_object(params, &mut row.params);
        row.deleted = delete;
        row.last_updated_time = now_ms();
        self.store.put_logged_model(&row).await?;
        Ok(row)
    }

    /// Logged models of the experiments matching `<field> = '<value>'` clauses joined by AND
    /// (fields: name, source_run_id, status, model_type), with a metric measured on one of
    /// `datasets` (name, and digest if given) when any are given, newest first unless
    /// `order_by` (attribute, ascending) says otherwise.
    pub async fn search_logged_models(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_ids: &[String],
        filter: &str,
        datasets: &[(String, Option<String>)],
        order_by: &[(String, bool)],
    ) -> Result<Vec<LoggedModelRow>> {
        let ws = self.tracking_workspace(p, workspace, Action::Read).await?;
        let ids: Vec<i64> = experiment_ids
            .iter()
            .filter_map(|e| e.parse().ok())
            .collect();
        let mut wanted = vec![];
        for clause in filter
            .split(" AND ")
            .flat_map(|c| c.split(" and "))
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let (field, value) = clause
                .split_once('=')
                .map(|(f, v)| {
                    (
                        f.trim().trim_start_matches("attributes."),
                        v.trim().trim_matches(['\'', '"']),
                    )
                })
                .ok_or_else(|| {
                    invalid(format!("Unsupported logged model filter clause: {clause}"))
                })?;
            if !["name", "source_run_id", "status", "model_type", "model_id"].contains(&field) {
                return Err(invalid(format!(
                    "Unsupported logged model filter field: {field}"
                )));
            }
            wanted.push((field.to_string(), value.to_string()));
        }
        for (field, _) in order_by {
            if !LOGGED_MODEL_ORDER_FIELDS.contains(&field.as_str()) {
                return Err(invalid(format!(
                    "Invalid order by field '{field}' for logged models. Valid fields are {LOGGED_MODEL_ORDER_FIELDS:?}"
                )));
            }
        }
        let rows = self.store.list_logged_models(&ws.id, &ids).await?;
        let mut out = vec![];
        for m in rows {
            let matches = wanted.iter().all(|(f, v)| match f.as_str() {
                "name" => &m.name == v,
                "source_run_id" => &m.source_run_id == v,
                "status" => &m.status == v,
                "model_type" => &m.model_type == v,
                _ => &m.model_id == v,
            });
            if !matches {
                continue;
            }
            if !datasets.is_empty() {
                let metrics = self.store.model_metrics(&ws.id, &m.model_id).await?;
                let measured = metrics.iter().any(|r| {
                    datasets.iter().any(|(name, digest)| {
                        &r.dataset_name == name
                            && digest.as_ref().is_none_or(|d| &r.dataset_digest == d)
                    })
                });
                if !measured {
                    continue;
                }
            }
            out.push(m);
        }
        for (field, ascending) in order_by.iter().rev() {
            out.sort_by(|a, b| {
                let o = match field.as_str() {
                    "name" => a.name.cmp(&b.name),
                    "model_id" => a.model_id.cmp(&b.model_id),
                    "last_updated_timestamp" => a.last_updated_time.cmp(&b.last_updated_time),
                    _ => a.creation_time.cmp(&b.creation_time),
                };
                if *ascending { o } else { o.reverse() }
            });
        }
        Ok(out)
    }

    /// The artifact URI of a logged model, for registering it (`models:/m-…`).
    pub(crate) async fn logged_model_uri(&self, ws: &WorkspaceRow, id: &str) -> Result<String> {
        Ok(self.logged_model(ws, id).await?.artifact_uri)
    }
}

/// Sets a key of a JSON object of strings (making the object if needed), or removes it.
pub(crate) fn set_or_remove(target: &mut serde_json::Value, key: String, value: Option<String>) {
    if !target.is_object() {
        *target = serde_json::json!({});
    }
    let map = target.as_object_mut().expect("an object");
    match value {
        Some(v) => {
            map.insert(key, serde_json::Value::String(v));
        }
        None => {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::*;

    fn history(steps: impl IntoIterator<Item = i64>) -> Vec<MetricRow> {
        steps
            .into_iter()
            .map(|step| MetricRow {
                key: "loss".into(),
                value: step as f64,
                timestamp: step,
                step,
            })
            .collect()
    }

    fn steps(rows: &[MetricRow]) -> Vec<i64> {
        rows.iter().map(|m| m.step).collect()
    }

    #[test]
    fn each_run_is_sampled_on_its_own_keeping_its_last_point() {
        let ten = history(0..10);
        assert_eq!(steps(&sample_history(&ten, None, 5)), [0, 2, 4, 6, 9]);
        assert_eq!(steps(&sample_history(&ten, None, 1)), [9]);
        assert_eq!(
            steps(&sample_history(&ten, None, 20)),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(steps(&sample_history(&ten, None, 3)), [0, 4, 9]);
        assert_eq!(steps(&sample_history(&ten, Some((2, 5)), 2)), [2, 5]);
        assert!(sample_history(&ten, Some((20, 30)), 5).is_empty());
        // Many values at one step (log_metric's default step 0) are sampled by row, not step.
        let flat: Vec<MetricRow> = (0..100)
            .map(|i| MetricRow {
                key: "x".into(),
                value: i as f64,
                timestamp: i,
                step: 0,
            })
            .collect();
        assert_eq!(sample_history(&flat, None, 4).len(), 4);
    }
}
