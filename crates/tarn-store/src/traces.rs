//! Trace rows and the store's trace methods (MLflow 3 tracing and GenAI evaluation: traces,
//! their spans and assessments; evaluation datasets and their records). Each method is one transaction, like the rest of [`crate::Store`].

use crate::Result;
use async_trait::async_trait;
use tarn_spec::mlflow_search::{Clause, Entity, OrderBy};

/// A trace's info: what `TraceInfoV3` carries, less its location (the experiment) and
/// assessments (read with [`Traces::assessments`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub workspace_id: String,
    /// `tr-` and 32 hex digits, from the OpenTelemetry trace id.
    pub trace_id: String,
    pub experiment_id: i64,
    /// When the trace started, in milliseconds since the epoch.
    pub request_time: i64,
    pub execution_duration: Option<i64>,
    /// `OK`, `ERROR`, `IN_PROGRESS` or `STATE_UNSPECIFIED`.
    pub state: String,
    pub client_request_id: Option<String>,
    pub request_preview: Option<String>,
    pub response_preview: Option<String>,
    pub tags: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    /// Its assessments (MLflow's JSON each, oldest first), as read; not written with it.
    pub assessments: Vec<serde_json::Value>,
}

/// A trace of a search's page: the MLflow `trace_info` text kept for it, or, where none is
/// (it changed since, or was never listed), its row and version.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedTrace {
    Info(String),
    Row(Box<TraceRow>, i64),
}

/// A trace's MLflow `trace_info` text, built from the row read at `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptInfo {
    pub trace_id: String,
    pub version: i64,
    pub info: String,
}

/// One span, as stored: the OpenTelemetry span JSON clients read back (`content`), and the
/// fields searches and the studio look at beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    /// MLflow's `mlflow.spanType` (LLM, CHAIN, TOOL, …), if set.
    pub span_type: Option<String>,
    /// `OK`, `ERROR` or `UNSET`.
    pub status: String,
    pub start_ns: i64,
    pub end_ns: Option<i64>,
    pub content: String,
    /// The span as MLflow's span dict (name, attributes by key, events, status): what the
    /// `text` and `span.content` filters match, as MLflow's SQL store matches them. Its
    /// attributes' values are texts (see [`value_text`]): what `span.attributes.<key>`
    /// filters compare.
    pub search_text: String,
}

/// An attribute's value as a filter compares it: a string's text (a string that holds a JSON
/// string, as MLflow writes span attributes, decoded: `"\"LLM\""` is `LLM`), anything else as
/// its JSON.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => {
            serde_json::from_str::<String>(s).unwrap_or_else(|_| s.clone())
        }
        other => other.to_string(),
    }
}

/// What `feedback.<name>` / `expectation.<name>` filters compare of an assessment (MLflow's
/// JSON): its kind, whether it still counts (an overridden one does not), its value as text and,
/// when it is a number, as one. An expectation kept serialized compares by its serialized text.
pub fn assessment_value(
    content: &serde_json::Value,
) -> (&'static str, bool, Option<String>, Option<f64>) {
    let kind = if content.get("feedback").is_some() {
        "feedback"
    } else if content.get("issue").is_some() {
        // A reference to a GenAI issue (MLflow's `IssueReference`): its name is the issue's id.
        "issue"
    } else {
        "expectation"
    };
    let valid = content.get("valid") != Some(&serde_json::Value::Bool(false));
    let value = content.get(kind).and_then(|k| k.get("value"));
    let text = match value {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v) => Some(v.to_string()),
        None => content
            .pointer("/expectation/serialized_value/value")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    };
    (kind, valid, text, value.and_then(|v| v.as_f64()))
}

/// What spans of one trace say about the trace, for a trace that exists only through its
/// spans so far (or whose client has not finalized it).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanBatch {
    /// The trace as its spans describe it: its start, duration and state, previews and tags
    /// from its root span when that is among them.
    pub trace: TraceRow,
    /// Whether the root span is among the spans (then its state and timing are the trace's).
    pub has_root: bool,
    pub spans: Vec<SpanRow>,
}

/// A feedback or expectation on a trace (or one of its spans), as MLflow's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessmentRow {
    pub trace_id: String,
    pub assessment_id: String,
    pub name: String,
    pub created: i64,
    /// The whole assessment: MLflow's `Assessment` message as a JSON object.
    pub content: serde_json::Value,
}

/// A trace search: experiments, filter clauses (of the trace grammar), order, page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceQuery {
    pub experiment_ids: Vec<i64>,
    pub clauses: Vec<Clause>,
    pub order_by: Vec<OrderBy>,
    pub start: PageStart,
    pub limit: i64,
}

/// A trace's values of what a search orders by (the query's order, then newest first, then
/// by id), as [`Traces::search_trace_infos`] gives them: where the page after it starts.
pub type SortKey = Vec<serde_json::Value>;

/// Where a page of a trace search starts.
#[derive(Debug, Clone, PartialEq)]
pub enum PageStart {
    /// After this many traces: each page walks every trace before it.
    Offset(i64),
    /// After the trace with this key (a keyset): a page deep in the results costs what the
    /// first does. A key that does not fit the query's order is refused
    /// ([`crate::StoreError::Refused`]).
    After(SortKey),
}

impl Default for PageStart {
    fn default() -> PageStart {
        PageStart::Offset(0)
    }
}

/// Which traces a delete takes.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceDeletion {
    /// These traces (of the experiment).
    Ids(Vec<String>),
    /// The experiment's oldest traces that started before the time, at most `max_traces`.
    Before {
        max_timestamp_ms: i64,
        max_traces: Option<i64>,
    },
}

/// What trace metrics (MLflow's `QueryTraceMetrics`) aggregate of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceFacts {
    pub request_time: i64,
    pub execution_duration: Option<i64>,
    pub state: String,
    /// Its `mlflow.traceName` tag.
    pub name: Option<String>,
    /// Its `mlflow.trace.tokenUsage` metadata (a JSON object of token counts).
    pub token_usage: Option<String>,
}

/// A GenAI issue: what searches filter and order by, the rest as MLflow's JSON (`name`,
/// `description`, `root_causes`, `categories`, `created_by`, `last_updated_timestamp`).
#[derive(Debug, Clone, PartialEq)]
pub struct IssueRow {
    pub workspace_id: String,
    /// `iss-` and 32 hex digits.
    pub issue_id: String,
    pub experiment_id: i64,
    /// `pending`, `rejected` or `resolved`.
    pub status: String,
    /// `not_an_issue`, `low`, `medium` or `high`.
    pub severity: Option<String>,
    pub source_run_id: Option<String>,
    pub created: i64,
    pub content: serde_json::Value,
    /// How many traces reference it (issue references: assessments of kind `issue` named by
    /// its id), when a search counted them.
    pub trace_count: Option<i64>,
}

/// What span metrics aggregate of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFacts {
    pub start_ns: i64,
    pub end_ns: Option<i64>,
    pub name: String,
    pub span_type: Option<String>,
    pub status: String,
    /// Its `mlflow.llm.model`, `mlflow.llm.provider` and `mlflow.llm.cost` attributes (the
    /// last a JSON object of costs), as texts.
    pub model: Option<String>,
    pub provider: Option<String>,
    pub cost: Option<String>,
}

/// What assessment metrics aggregate of an assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessmentFacts {
    pub created: i64,
    pub name: String,
    /// `feedback` or `expectation`.
    pub kind: String,
    /// MLflow's JSON of the assessment.
    pub content: serde_json::Value,
}

/// One version of a registered scorer (MLflow's `ScorerVersion`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerRow {
    pub workspace_id: String,
    pub experiment_id: i64,
    pub name: String,
    /// 1, 2, ... per name; given by the store.
    pub version: i64,
    /// The same for every version of a name: the first version's.
    pub scorer_id: String,
    /// The scorer as the client serialized it (a JSON text).
    pub serialized: String,
    pub created: i64,
}

/// An evaluation dataset: its name and times, the rest (digest, tags, schema, profile, who
/// made and changed it) as MLflow's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRow {
    pub workspace_id: String,
    /// `d-` and 32 hex digits.
    pub dataset_id: String,
    pub name: String,
    pub created_time: i64,
    pub last_update_time: i64,
    pub content: serde_json::Value,
}

impl DatasetRow {
    /// The record count its profile holds (MLflow's `profile`, a JSON text; 0 for a new one).
    pub fn record_count(&self) -> i64 {
        self.content["profile"]
            .as_str()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| p["num_records"].as_i64())
            .unwrap_or(0)
    }

    /// Sets the record count its profile holds.
    pub fn set_record_count(&mut self, n: i64) {
        self.content["profile"] =
            serde_json::Value::String(serde_json::json!({ "num_records": n }).to_string());
    }
}

/// A record of an evaluation dataset: MLflow's record JSON (inputs, expectations, outputs,
/// source, tags, times) and the hash of its inputs, which names it within the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRecordRow {
    pub record_id: String,
    pub input_hash: String,
    pub created_time: i64,
    pub content: serde_json::Value,
}

#[async_trait]
pub trait Traces: Send + Sync {
    /// Writes a trace's spans (replacing spans of the same ids). A trace they name that does
    /// not exist yet is made from `trace`; one that is not finalized takes the root span's
    /// timing, state and previews; tags in `trace.tags` are added where absent.
    async fn log_spans(&self, batches: &[SpanBatch]) -> Result<()>;
    /// Writes the trace the client finalized (its info, tags and metadata win over what its
    /// spans said; previews the spans gave are kept where it has none) and marks it final.
    /// Returns its tags and assessments as stored now.
    async fn finalize_trace(&self, row: &TraceRow) -> Result<TraceRow>;
    /// Traces by id (those that exist), in no order.
    async fn get_traces(&self, workspace_id: &str, ids: &[String]) -> Result<Vec<TraceRow>>;
    /// The traces' spans, ordered by trace, then start.
    async fn trace_spans(&self, workspace_id: &str, ids: &[String]) -> Result<Vec<SpanRow>>;
    /// A page of traces matching the query, in its order then newest first; each with its
    /// key, for the next page to start after it.
    async fn search_traces(
        &self,
        workspace_id: &str,
        query: &TraceQuery,
    ) -> Result<Vec<(TraceRow, SortKey)>>;
    /// The page [`Traces::search_traces`] finds, each trace as the MLflow `trace_info` text
    /// kept for it ([`Traces::keep_trace_infos`]) where it has one, else as its row; with its
    /// key, for the next page to start after it.
    async fn search_trace_infos(
        &self,
        workspace_id: &str,
        query: &TraceQuery,
    ) -> Result<Vec<(CachedTrace, SortKey)>>;
    /// Keeps each trace's MLflow `trace_info` text, where the trace is still at the version
    /// it was read at (a change since has emptied it, and wins).
    async fn keep_trace_infos(&self, workspace_id: &str, infos: &[KeptInfo]) -> Result<()>;
    /// What trace metrics aggregate, of each of the experiments' traces matching the
    /// clauses, oldest first.
    async fn trace_facts(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
    ) -> Result<Vec<TraceFacts>>;
    /// What span metrics aggregate, of the spans of the experiments' traces matching the
    /// clauses whose `name`, `type` or `status` equal the values given.
    async fn span_facts(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
        span_filters: &[(String, String)],
    ) -> Result<Vec<SpanFacts>>;
    /// What assessment metrics aggregate, of the assessments of the experiments' traces
    /// matching the clauses whose `name` or `type` (`feedback`, `expectation`) equal the
    /// values given.
    async fn assessment_facts(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
        filters: &[(String, String)],
    ) -> Result<Vec<AssessmentFacts>>;
    /// The distinct texts the workspace's traces hold where a clause on `entity` and `key`
    /// looks: a tag's or metadata's values of the key, a string attribute, spans' names,
    /// types, statuses or values of an attribute, valid assessments' text values. What an
    /// `RLIKE` pattern is matched against (see `Op::RLike`).
    async fn trace_values(
        &self,
        workspace_id: &str,
        entity: Entity,
        key: &str,
    ) -> Result<Vec<String>>;
    /// How many of the experiments' traces match each set of clauses (an empty set: all of
    /// them), in one read.
    async fn count_traces(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clause_sets: &[Vec<Clause>],
    ) -> Result<Vec<i64>>;
    /// Sets a tag; false when there is no such trace.
    async fn set_trace_tag(
        &self,
        workspace_id: &str,
        trace_id: &str,
        key: &str,
        value: &str,
    ) -> Result<bool>;
    /// Deletes a tag; false when the trace has no such tag.
    async fn delete_trace_tag(&self, workspace_id: &str, trace_id: &str, key: &str)
    -> Result<bool>;
    /// Deletes traces of an experiment (with their spans, tags and assessments); how many.
    async fn delete_traces(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        which: &TraceDeletion,
    ) -> Result<u64>;
    /// Links traces to a run (besides the run they were made in), whether or not they have
    /// arrived yet: a search for the run's traces finds them.
    async fn link_traces_to_run(
        &self,
        workspace_id: &str,
        trace_ids: &[String],
        run_id: &str,
    ) -> Result<()>;
    /// Deletes the workspace's traces (of every experiment) that started before `before_ms`,
    /// oldest first, at most `max`; how many went.
    async fn expire_traces(&self, workspace_id: &str, before_ms: i64, max: i64) -> Result<u64>;
    /// Writes assessments (new ones, or existing ones changed) and deletes `delete` (a trace
    /// id and assessment id), all in one transaction: an override and the feedback it
    /// invalidates, or a deleted override and the one it restores, change together. Whether
    /// the deleted one was there.
    async fn write_assessments(
        &self,
        workspace_id: &str,
        put: &[AssessmentRow],
        delete: Option<(&str, &str)>,
    ) -> Result<bool>;
    /// The traces' assessments, oldest first.
    async fn assessments(&self, workspace_id: &str, ids: &[String]) -> Result<Vec<AssessmentRow>>;

    /// Writes a dataset; `experiments`, when given, replace its experiments. `Conflict` when
    /// `must_be_new` and it exists.
    async fn put_dataset(
        &self,
        row: &DatasetRow,
        experiments: Option<&[i64]>,
        must_be_new: bool,
    ) -> Result<()>;
    /// Datasets with their experiments: one by id, or all of the workspace's (`None`), oldest
    /// first.
    async fn datasets(
        &self,
        workspace_id: &str,
        dataset_id: Option<&str>,
    ) -> Result<Vec<(DatasetRow, Vec<i64>)>>;
    /// Deletes a dataset and its records; false when there is none.
    async fn delete_dataset(&self, workspace_id: &str, dataset_id: &str) -> Result<bool>;
    /// A page of a dataset's records, oldest first.
    async fn dataset_records(
        &self,
        workspace_id: &str,
        dataset_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<DatasetRecordRow>>;
    /// The dataset's records with these input hashes.
    async fn records_by_hash(
        &self,
        workspace_id: &str,
        dataset_id: &str,
        hashes: &[String],
    ) -> Result<Vec<DatasetRecordRow>>;
    /// Writes records (new, or merged ones replacing theirs) and the dataset row, at once.
    async fn put_records(&self, dataset: &DatasetRow, records: &[DatasetRecordRow]) -> Result<()>;
    /// Deletes records by id and writes the dataset row, its record count lowered by how many
    /// went, at once; how many went.
    async fn delete_records(&self, dataset: &DatasetRow, record_ids: &[String]) -> Result<u64>;

    /// Writes an issue (new, or changed in place).
    async fn put_issue(&self, row: &IssueRow) -> Result<()>;
    async fn get_issue(&self, workspace_id: &str, issue_id: &str) -> Result<Option<IssueRow>>;
    /// A page of issues (of one experiment, or all) matching the clauses (attributes only:
    /// `status`, `source_run_id`, `severity`, `name`), the most severe first, then newest.
    async fn search_issues(
        &self,
        workspace_id: &str,
        experiment_id: Option<i64>,
        clauses: &[Clause],
        page: (i64, i64),
        count_traces: bool,
    ) -> Result<Vec<IssueRow>>;

    /// Adds the next version of a scorer: `version` and `scorer_id` (kept when the name has
    /// versions, else the one given) come back as stored.
    async fn register_scorer(&self, row: &ScorerRow) -> Result<ScorerRow>;
    /// An experiment's scorer versions, of one name or all, by name then version.
    async fn scorers(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        name: Option<&str>,
    ) -> Result<Vec<ScorerRow>>;
    /// Deletes one version of a scorer, or all of them; how many went.
    async fn delete_scorer(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        name: &str,
        version: Option<i64>,
    ) -> Result<u64>;
}
