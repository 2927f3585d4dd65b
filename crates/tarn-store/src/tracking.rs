//! Tracking rows and the store's tracking methods (MLflow experiments, runs, params, tags,
//! metrics). Each method is one transaction, like the rest of [`crate::Store`].

use crate::Result;
use async_trait::async_trait;
use tarn_spec::mlflow_search::{Clause, OrderBy};

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentRow {
    pub workspace_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub workspace_id: String,
    pub run_id: String,
    pub experiment_id: i64,
    pub run_name: String,
    pub user_id: String,
    /// MLflow's: RUNNING, SCHEDULED, FINISHED, FAILED, KILLED.
    pub status: String,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub lifecycle_stage: String,
    pub artifact_uri: String,
}

/// One metric value. `value` is `f64::NAN` for NaN (stored as NULL with a flag).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

/// A run's params, tags and latest metrics, and the datasets it used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunData {
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub metrics: Vec<MetricRow>,
    /// MLflow dataset inputs: (dataset JSON object, input tags JSON object).
    pub inputs: Vec<(serde_json::Value, serde_json::Value)>,
    /// MLflow 3 logged models the run used.
    pub model_inputs: Vec<String>,
    /// MLflow 3 logged models the run produced, with the step each was produced at.
    pub model_outputs: Vec<(String, i64)>,
}

/// A metric of an MLflow 3 logged model: measured in a run, perhaps on a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetricRow {
    pub model_id: String,
    pub run_id: String,
    pub metric: MetricRow,
    pub dataset_name: String,
    pub dataset_digest: String,
}

/// Which way a run and a logged model are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLink {
    /// The run used the model (`log_inputs`).
    Input,
    /// The run produced the model (`log_outputs`).
    Output,
}

impl ModelLink {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelLink::Input => "input",
            ModelLink::Output => "output",
        }
    }
}

/// A dataset experiments' runs used, as MLflow's UI lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    pub experiment_id: i64,
    pub name: String,
    pub digest: String,
    /// The input's `mlflow.data.context` tag (training, eval, …).
    pub context: Option<String>,
}

/// A registered model's name-level facts; its versions are model assets.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModelRow {
    pub workspace_id: String,
    pub name: String,
    pub description: String,
    /// A JSON object of tags.
    pub tags: serde_json::Value,
    /// A JSON object: alias → version.
    pub aliases: serde_json::Value,
    pub creation_time: i64,
    pub last_updated_time: i64,
}

/// An MLflow 3 logged model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModelRow {
    pub workspace_id: String,
    pub model_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub artifact_uri: String,
    /// LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED.
    pub status: String,
    pub model_type: String,
    pub source_run_id: String,
    pub creator_id: String,
    pub creation_time: i64,
    pub last_updated_time: i64,
    /// JSON objects.
    pub tags: serde_json::Value,
    pub params: serde_json::Value,
    pub deleted: bool,
}

/// Which runs to find.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub experiment_ids: Vec<i64>,
    /// `active`, `deleted`, or `None` for both.
    pub lifecycle_stage: Option<String>,
    pub clauses: Vec<Clause>,
    pub order_by: Vec<OrderBy>,
    pub offset: i64,
    pub limit: i64,
}

/// A log-batch refused as a whole (nothing of it written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchRefused {
    /// No such run in the workspace.
    NoRun,
    /// The run is not active (`deleted`): it takes no more data.
    RunNotActive { stage: String },
    /// A param that exists with another value.
    ParamConflict {
        key: String,
        old: String,
        new: String,
    },
}

#[async_trait]
pub trait Tracking: Send + Sync {
    /// Creates an experiment numbered one past the workspace's highest; `{experiment_id}` in
    /// `artifact_location` is replaced by that number. `Conflict` when the name is taken.
    async fn create_experiment(&self, row: &ExperimentRow) -> Result<i64>;
    async fn get_experiment(
        &self,
        workspace_id: &str,
        experiment_id: i64,
    ) -> Result<Option<ExperimentRow>>;
    async fn experiment_by_name(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Option<ExperimentRow>>;
    async fn list_experiments(&self, workspace_id: &str) -> Result<Vec<ExperimentRow>>;
    /// Renames and/or sets the lifecycle stage; `Conflict` when the new name is taken.
    async fn update_experiment(&self, row: &ExperimentRow) -> Result<bool>;
    async fn set_experiment_tag(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        key: &str,
        value: Option<&str>,
    ) -> Result<()>;

    /// Inserts a run with its first tags; `Conflict` when the id exists.
    async fn create_run(&self, row: &RunRow, tags: &[(String, String)]) -> Result<()>;
    async fn get_run(&self, workspace_id: &str, run_id: &str) -> Result<Option<(RunRow, RunData)>>;
    /// The run alone, without its data.
    async fn run_row(&self, workspace_id: &str, run_id: &str) -> Result<Option<RunRow>>;
    /// Writes a run's status, times, name and lifecycle stage.
    async fn update_run(&self, row: &RunRow) -> Result<bool>;
    /// Writes metrics (history and latest), params and tags in one transaction, to an active
    /// run. A missing or deleted run, or a param that exists with another value, refuses the
    /// whole batch. (The run is checked inside the write, not by a read before it: on SQLite
    /// every read after a write starts on an emptied page cache, which on a big store was
    /// most of a log_batch's extra cost.)
    async fn log_batch(
        &self,
        workspace_id: &str,
        run_id: &str,
        metrics: &[MetricRow],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<std::result::Result<(), BatchRefused>> {
        self.log_batch_with_models(workspace_id, run_id, metrics, params, tags, &[])
            .await
    }
    /// As [`Tracking::log_batch`], with metrics of logged models (`log_metric(model_id=…)`)
    /// in the same transaction: the whole request is written, or none of it.
    async fn log_batch_with_models(
        &self,
        workspace_id: &str,
        run_id: &str,
        metrics: &[MetricRow],
        params: &[(String, String)],
        tags: &[(String, String)],
        models: &[ModelMetricRow],
    ) -> Result<std::result::Result<(), BatchRefused>>;
    async fn delete_run_tag(&self, workspace_id: &str, run_id: &str, key: &str) -> Result<bool>;
    /// Records datasets a run used (name, digest, the dataset object, the input's tags); the
    /// same (name, digest) again replaces it.
    async fn log_inputs(
        &self,
        workspace_id: &str,
        run_id: &str,
        inputs: &[(String, String, serde_json::Value, serde_json::Value)],
    ) -> Result<()>;
    /// Links logged models to a run (`(model_id, step)`; a link made again keeps the new step).
    async fn link_models(
        &self,
        workspace_id: &str,
        run_id: &str,
        link: ModelLink,
        models: &[(String, i64)],
    ) -> Result<()>;
    /// The distinct datasets (with their context) the runs of these experiments used, at most
    /// 1000.
    async fn dataset_summaries(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
    ) -> Result<Vec<DatasetSummary>>;
    async fn log_model_metrics(&self, workspace_id: &str, rows: &[ModelMetricRow]) -> Result<()>;
    /// A logged model's metrics, in the order they were logged.
    async fn model_metrics(
        &self,
        workspace_id: &str,
        model_id: &str,
    ) -> Result<Vec<ModelMetricRow>>;
    /// A metric's history, in (step, timestamp) order.
    async fn metric_history(
        &self,
        workspace_id: &str,
        run_id: &str,
        key: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<MetricRow>>;
    /// At most `points` rows of a metric's history for a chart: the whole history when it is
    /// that short, else the first value at each of `points` evenly spaced steps (the first and
    /// last always in), found by index seeks without reading the rest.
    async fn metric_history_sampled(
        &self,
        workspace_id: &str,
        run_id: &str,
        key: &str,
        points: i64,
    ) -> Result<Vec<MetricRow>>;
    /// Inserts or replaces a registered model's row; with `must_be_new`, `Conflict` if it exists.
    async fn put_registered_model(&self, row: &RegisteredModelRow, must_be_new: bool)
    -> Result<()>;
    async fn get_registered_model(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Option<RegisteredModelRow>>;
    async fn list_registered_models(&self, workspace_id: &str) -> Result<Vec<RegisteredModelRow>>;
    async fn delete_registered_model(&self, workspace_id: &str, name: &str) -> Result<bool>;
    /// Renames a model: every version (archived ones too, with the name in its spec) and its
    /// registered-model row, in one transaction. `Conflict` if `to` is taken.
    async fn rename_model(&self, workspace_id: &str, from: &str, to: &str, now: i64) -> Result<()>;

    /// Inserts or replaces a logged model.
    async fn put_logged_model(&self, row: &LoggedModelRow) -> Result<()>;
    async fn get_logged_model(
        &self,
        workspace_id: &str,
        model_id: &str,
    ) -> Result<Option<LoggedModelRow>>;
    /// Logged models of these experiments (not deleted), newest first.
    async fn list_logged_models(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
    ) -> Result<Vec<LoggedModelRow>>;

    /// Runs matching the query, in its order (then newest first), with their data.
    async fn search_runs(
        &self,
        workspace_id: &str,
        query: &RunQuery,
    ) -> Result<Vec<(RunRow, RunData)>>;
}
