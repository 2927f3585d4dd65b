//! MLflow 3 tracing: the traces of LLM applications and agents, their spans and assessments
//! (feedback and expectations), kept per workspace as MLflow's SQL tracking server keeps them.
//!
//! Spans arrive as they end (OpenTelemetry's OTLP export, `log_spans`); a trace that exists
//! only through its spans takes its timing, state and previews from its root span. When the
//! trace ends the client sends its info (`StartTraceV3`), which then wins: it is *finalized*.
//! A trace whose spans the store holds is tagged `mlflow.trace.spansLocation: TRACKING_STORE`,
//! so clients read its spans from here; every trace is tagged `mlflow.artifactLocation` (its
//! folder in the experiment's artifact store) for the attachments clients upload there. The
//! rules (limits, MLflow's messages) are here; `tarn-api`'s `mlflow_traces` speaks the wire
//! protocol.

use crate::Core;
use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::pending::Pending;
use crate::tracking::Tracking;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use tarn_spec::mlflow_search::{self, Clause, Op, Subject, Value};
pub use tarn_store::{
    AssessmentRow, CachedTrace, KeptInfo, SpanRow, TraceDeletion, TraceRow, value_text,
};
use tarn_store::{PageStart, SortKey, SpanBatch, StoreError, TraceQuery, WorkspaceRow};

/// How long the trace info searches built waits to be kept, gathered into one write.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The most trace info waiting to be kept (beyond it the oldest is not).
const MAX_KEEPING: usize = 10_000;

/// MLflow's limits and keys for traces.
pub mod limits {
    /// Traces one retention pass deletes per workspace (the rest go in the next passes).
    pub const EXPIRE_PER_PASS: i64 = 10_000;
    /// Characters of a request or response preview (MLflow's, for its SQL store).
    pub const PREVIEW: usize = 1000;
    pub const TAG_KEY: usize = 250;
    pub const TAG_VALUE: usize = 8000;
    /// The largest page of a trace search.
    pub const SEARCH_MAX_RESULTS: i64 = 50_000;
    /// Traces one delete by id takes (MLflow's clients send at most 100).
    pub const DELETE_IDS: usize = 1000;
    /// Traces one `LinkTracesToRun` links (MLflow's).
    pub const LINKS_PER_REQUEST: usize = 100;
    /// Characters of a trace id (MLflow's column holds 50; clients make 35).
    pub const TRACE_ID: usize = 50;
    /// Bytes an `RLIKE` pattern may compile to (a filter of a few KB cannot ask for more
    /// memory than this).
    pub const PATTERN_BYTES: usize = 1 << 20;
}

/// Tags Tarn sets on traces, as MLflow names them.
pub mod keys {
    pub const SPANS_LOCATION: &str = "mlflow.trace.spansLocation";
    pub const TRACKING_STORE: &str = "TRACKING_STORE";
    pub const ARTIFACT_LOCATION: &str = "mlflow.artifactLocation";
    pub const TRACE_NAME: &str = "mlflow.traceName";
    pub const SOURCE_RUN: &str = "mlflow.sourceRun";
}

/// A span as the protocol layer read it: its row, and its inputs and outputs (the JSON text of
/// its `mlflow.spanInputs` / `mlflow.spanOutputs` attributes), which preview its trace.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSpan {
    pub row: SpanRow,
    pub inputs: Option<String>,
    pub outputs: Option<String>,
}

/// How a trace ends, in MLflow 2's `EndTrace`.
#[derive(Debug, Clone)]
pub struct TraceEnd {
    pub timestamp_ms: i64,
    /// `OK`, `ERROR`, `IN_PROGRESS` or `STATE_UNSPECIFIED`.
    pub state: String,
    pub metadata: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

/// A whole trace: its info and spans, ordered by start.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Its info, with its assessments.
    pub info: TraceRow,
    pub spans: Vec<SpanRow>,
}

/// A trace search's page of keyed `rows` (read with one more than `max_results`, to see
/// whether there is a next page), and the page token of the next one if there is one: the
/// key of the page's last trace (see [`PageStart::After`]), as base64url JSON.
fn keyset_page<T>(mut rows: Vec<(T, SortKey)>, max_results: i64) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > max_results;
    rows.truncate(max_results.max(0) as usize);
    let next = match rows.last() {
        Some((_, key)) if more => {
            let key = serde_json::to_string(key).expect("a key serializes");
            Some(URL_SAFE_NO_PAD.encode(key))
        }
        _ => None,
    };
    (rows.into_iter().map(|(row, _)| row).collect(), next)
}

/// Where a trace search's page token starts its page: a number is an offset (the tokens Tarn
/// gave before its pages were keyed), anything else a key [`keyset_page`] wrote.
fn page_start(token: Option<&str>) -> Result<PageStart> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(PageStart::Offset(0));
    };
    if let Ok(offset) = token.parse::<i64>() {
        return Ok(PageStart::Offset(offset.max(0)));
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|key| serde_json::from_slice(&key).ok())
        .map(PageStart::After)
        .ok_or_else(|| invalid("Invalid page token: it is not one a trace search gave"))
}

/// A store error of a trace search: a page token of another search's order is the
/// client's mistake.
fn search_error(e: StoreError) -> Error {
    match e {
        StoreError::Refused(why) => invalid(format!("Invalid page token: {why}")),
        e => e.into(),
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

fn no_trace(trace_id: &str) -> Error {
    Error::not_found(format!("Trace with ID '{trace_id}'"))
}

/// A preview of a request or response: at most [`limits::PREVIEW`] characters.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(limits::PREVIEW) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

fn check_tag(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.len() > limits::TAG_KEY {
        return Err(invalid(format!(
            "Invalid tag key '{key}': it must be 1 to {} characters",
            limits::TAG_KEY
        )));
    }
    if value.len() > limits::TAG_VALUE {
        return Err(invalid(format!(
            "Tag value for '{key}' exceeds the maximum length of {} characters",
            limits::TAG_VALUE
        )));
    }
    Ok(())
}

/// A trace search: MLflow's `SearchTracesV3`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSearch {
    pub experiment_ids: Vec<String>,
    /// MLflow's trace filter (`trace.status = 'OK' AND span.name = 'retrieve'`).
    pub filter: String,
    pub order_by: Vec<String>,
    pub max_results: i64,
    /// Where the page starts: the token the page before gave (none: the first page).
    pub page_token: Option<String>,
}

/// MLflow 3 traces and assessments.
pub struct Traces {
    core: Arc<Core>,
    pub(crate) tracking: Arc<Tracking>,
    /// The trace info searches built, waiting to be kept (see [`Traces::keep_infos`]).
    keeping: Mutex<Pending<(String, KeptInfo)>>,
    keeper: OnceLock<()>,
}

crate::service_on_core!(Traces);

impl Traces {
    pub(crate) fn new(core: Arc<Core>, tracking: Arc<Tracking>) -> Self {
        Traces {
            core,
            tracking,
            keeping: Mutex::new(Pending::new(MAX_KEEPING)),
            keeper: OnceLock::new(),
        }
    }

    /// The leader's retention task: every 10 s, each workspace's traces older than its
    /// `trace_retention_days` are deleted (with their spans, tags and assessments).
    pub fn start_retention(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.spawn_task(
            "traces",
            std::time::Duration::from_secs(10),
            Arc::new(tokio::sync::Notify::new()),
            self,
            |t| async move { t.expire(now_ms()).await },
        )
    }

    /// One retention pass at `now`.
    pub async fn expire(&self, now: i64) -> Result<()> {
        for ws in self.store.list_workspaces().await? {
            let Ok(Some(days)) = crate::workspaces::trace_retention_days(&ws.spec) else {
                continue;
            };
            let before = now - days * 86_400_000;
            let gone = self
                .store
                .expire_traces(&ws.id, before, limits::EXPIRE_PER_PASS)
                .await?;
            if gone > 0 {
                tracing::info!(workspace = %ws.name, gone, "traces past their retention deleted");
            }
        }
        Ok(())
    }

    /// The workspace and the experiment a trace is written to, which must be active.
    async fn writable_experiment(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
    ) -> Result<(WorkspaceRow, tarn_store::ExperimentRow)> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let exp = self.tracking.experiment(&ws, experiment_id).await?;
        Tracking::ensure_active(&exp)?;
        Ok((ws, exp))
    }

    /// A trace filter's clauses, each `RLIKE` pattern resolved to the values it matches among
    /// those the workspace's traces hold where it looks. SQLite has no regular expressions
    /// (and sqlx offers no way to give it one), so the pattern is matched here, by the
    /// `regex` crate (linear time: no pattern can hang a search), the same on SQLite and
    /// PostgreSQL; the database then compares with the matched values.
    pub(crate) async fn filter_clauses(
        &self,
        ws: &WorkspaceRow,
        filter: &str,
    ) -> Result<Vec<Clause>> {
        let mut clauses =
            mlflow_search::parse_filter_of(Subject::Traces, filter).map_err(invalid)?;
        for c in clauses.iter_mut().filter(|c| c.op == Op::RLike) {
            let Value::Str(pattern) = &c.value else {
                continue;
            };
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(limits::PATTERN_BYTES)
                .build()
                .map_err(|e| {
                    invalid(format!(
                        "Invalid regular expression '{pattern}' for RLIKE: {e}"
                    ))
                })?;
            let values = self.store.trace_values(&ws.id, c.entity, &c.key).await?;
            c.value = Value::List(values.into_iter().filter(|v| re.is_match(v)).collect());
        }
        Ok(clauses)
    }

    /// The ids of the workspace's experiments named, each of which must exist.
    pub(crate) async fn experiment_ids(
        &self,
        ws: &WorkspaceRow,
        ids: &[String],
    ) -> Result<Vec<i64>> {
        let mut experiments = vec![];
        for id in ids {
            experiments.push(self.tracking.experiment_id(ws, id).await?);
        }
        Ok(experiments)
    }

    /// Where a trace's files (attachments, or spans a client keeps there) go.
    fn artifact_location(exp: &tarn_store::ExperimentRow, trace_id: &str) -> String {
        format!(
            "{}/traces/{trace_id}/artifacts",
            exp.artifact_location.trim_end_matches('/')
        )
    }

    /// Stores spans sent to an experiment (OTLP export). Spans of several traces may come
    /// together; each trace is made or brought up to date in the same transaction.
    pub async fn log_spans(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        spans: Vec<IngestSpan>,
    ) -> Result<()> {
        let (ws, exp) = self
            .writable_experiment(p, workspace, experiment_id)
            .await?;
        let mut by_trace: BTreeMap<String, Vec<IngestSpan>> = BTreeMap::new();
        for s in spans {
            by_trace.entry(s.row.trace_id.clone()).or_default().push(s);
        }
        let batches: Vec<SpanBatch> = by_trace
            .into_iter()
            .map(|(trace_id, spans)| {
                let root = spans.iter().find(|s| s.row.parent_id.is_none());
                let start_ns = spans.iter().map(|s| s.row.start_ns).min().unwrap_or(0);
                let (request_time, execution_duration, state) = match root {
                    Some(r) => (
                        r.row.start_ns / 1_000_000,
                        r.row.end_ns.map(|e| (e - r.row.start_ns) / 1_000_000),
                        match (r.row.status.as_str(), r.row.end_ns) {
                            ("ERROR", _) => "ERROR",
                            (_, Some(_)) => "OK",
                            (_, None) => "IN_PROGRESS",
                        },
                    ),
                    None => (start_ns / 1_000_000, None, "IN_PROGRESS"),
                };
                let mut tags = vec![
                    (keys::SPANS_LOCATION.into(), keys::TRACKING_STORE.into()),
                    (
                        keys::ARTIFACT_LOCATION.into(),
                        Self::artifact_location(&exp, &trace_id),
                    ),
                ];
                if let Some(r) = root {
                    tags.push((keys::TRACE_NAME.into(), r.row.name.clone()));
                }
                SpanBatch {
                    trace: TraceRow {
                        workspace_id: ws.id.clone(),
                        trace_id,
                        experiment_id: exp.experiment_id,
                        request_time,
                        execution_duration,
                        state: state.into(),
                        client_request_id: None,
                        request_preview: root.and_then(|r| r.inputs.as_deref()).map(preview),
                        response_preview: root.and_then(|r| r.outputs.as_deref()).map(preview),
                        tags,
                        metadata: vec![],
                        assessments: vec![],
                    },
                    has_root: root.is_some(),
                    spans: spans.into_iter().map(|s| s.row).collect(),
                }
            })
            .collect();
        self.store.log_spans(&batches).await?;
        Ok(())
    }

    /// MLflow 2's `StartTrace`: a trace begun at `timestamp_ms` with tags and metadata, in
    /// progress until its `EndTrace` ([`Traces::end_trace_v2`]). Its id is new.
    pub async fn start_trace_v2(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        timestamp_ms: i64,
        metadata: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    ) -> Result<TraceRow> {
        let row = TraceRow {
            workspace_id: String::new(),
            trace_id: format!("tr-{}", uuid::Uuid::new_v4().simple()),
            experiment_id: 0,
            request_time: timestamp_ms,
            execution_duration: Some(0),
            state: "IN_PROGRESS".into(),
            client_request_id: None,
            request_preview: None,
            response_preview: None,
            tags,
            metadata,
            assessments: vec![],
        };
        self.start_trace(p, workspace, experiment_id, row, vec![])
            .await
    }

    /// MLflow 2's `EndTrace`: the trace ends at `timestamp_ms` in `state`; the metadata and
    /// tags given are merged into its own (a key given wins).
    pub async fn end_trace_v2(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        end: TraceEnd,
    ) -> Result<TraceRow> {
        let TraceEnd {
            timestamp_ms,
            state,
            metadata,
            tags,
        } = end;
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let mut row = self.info(&ws, trace_id).await?;
        row.execution_duration = Some((timestamp_ms - row.request_time).max(0));
        row.state = state;
        let merge = |pairs: &mut Vec<(String, String)>, given: Vec<(String, String)>| {
            for (k, v) in given {
                pairs.retain(|(key, _)| *key != k);
                pairs.push((k, v));
            }
        };
        merge(&mut row.metadata, metadata);
        merge(&mut row.tags, tags);
        let experiment = row.experiment_id.to_string();
        self.start_trace(p, workspace, &experiment, row, vec![])
            .await
    }

    /// Stores the info of a trace that ended (`StartTraceV3`), with its assessments, and
    /// answers with the trace as stored (its spans' tags included).
    pub async fn start_trace(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        mut row: TraceRow,
        assessments: Vec<Map<String, Json>>,
    ) -> Result<TraceRow> {
        let (ws, exp) = self
            .writable_experiment(p, workspace, experiment_id)
            .await?;
        check_trace_id(&row.trace_id)?;
        for (k, v) in &row.tags {
            check_tag(k, v)?;
        }
        // Checked before anything is written: a bad assessment leaves no trace behind.
        for a in &assessments {
            check_assessment(a)?;
        }
        row.workspace_id = ws.id.clone();
        row.experiment_id = exp.experiment_id;
        row.request_preview = row.request_preview.as_deref().map(preview);
        row.response_preview = row.response_preview.as_deref().map(preview);
        row.tags.retain(|(k, _)| k != keys::ARTIFACT_LOCATION);
        row.tags.push((
            keys::ARTIFACT_LOCATION.into(),
            Self::artifact_location(&exp, &row.trace_id),
        ));
        let trace_id = row.trace_id.clone();
        let stored = self.store.finalize_trace(&row).await?;
        if assessments.is_empty() {
            return Ok(stored);
        }
        for a in assessments {
            self.put_new_assessment(&ws, &trace_id, a).await?;
        }
        self.info(&ws, &trace_id).await
    }

    async fn info(&self, ws: &WorkspaceRow, trace_id: &str) -> Result<TraceRow> {
        self.store
            .get_traces(&ws.id, &[trace_id.to_string()])
            .await?
            .pop()
            .ok_or_else(|| no_trace(trace_id))
    }

    /// A trace's info and assessments.
    pub async fn get_trace_info(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
    ) -> Result<TraceRow> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        self.info(&ws, trace_id).await
    }

    /// Whole traces, in the order asked, those that exist; `experiments`, when given, bounds
    /// which experiments they may be in.
    pub async fn get_traces(
        &self,
        p: &Principal,
        workspace: &str,
        trace_ids: &[String],
    ) -> Result<Vec<Trace>> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        let infos = self.store.get_traces(&ws.id, trace_ids).await?;
        let mut spans: BTreeMap<String, Vec<SpanRow>> = BTreeMap::new();
        for s in self.store.trace_spans(&ws.id, trace_ids).await? {
            spans.entry(s.trace_id.clone()).or_default().push(s);
        }
        let mut by_id: BTreeMap<String, TraceRow> =
            infos.into_iter().map(|i| (i.trace_id.clone(), i)).collect();
        Ok(trace_ids
            .iter()
            .filter_map(|id| {
                let info = by_id.remove(id)?;
                Some(Trace {
                    spans: spans.remove(id).unwrap_or_default(),
                    info,
                })
            })
            .collect())
    }

    /// A page of the experiments' traces matching MLflow's trace filter, in `order_by`'s order
    /// (then newest first), and the page token of the next page if there may be one.
    pub async fn search(
        &self,
        p: &Principal,
        workspace: &str,
        search: &TraceSearch,
    ) -> Result<(Vec<TraceRow>, Option<String>)> {
        let (ws, query) = self.search_query(p, workspace, search).await?;
        let rows = self
            .store
            .search_traces(&ws.id, &query)
            .await
            .map_err(search_error)?;
        Ok(keyset_page(rows, search.max_results))
    }

    /// As [`Traces::search`], each trace as the MLflow `trace_info` text kept for it where
    /// it has one (see [`Traces::keep_infos`]); and the workspace's id.
    pub async fn search_cached(
        &self,
        p: &Principal,
        workspace: &str,
        search: &TraceSearch,
    ) -> Result<(String, Vec<CachedTrace>, Option<String>)> {
        let (ws, query) = self.search_query(p, workspace, search).await?;
        let rows = self
            .store
            .search_trace_infos(&ws.id, &query)
            .await
            .map_err(search_error)?;
        let (rows, next) = keyset_page(rows, search.max_results);
        Ok((ws.id, rows, next))
    }

    /// Keeps the MLflow `trace_info` text a search built for traces that had none, for the
    /// next search to answer with as it is: gathered and written within [`KEEP_EVERY`], off
    /// the search's path. A write makes every SQLite reader read its pages anew, so a client
    /// walking page after page is not slowed by a write per page. It is a cache: what a full
    /// queue or a failed write loses, the next search builds again.
    pub fn keep_infos(self: &Arc<Self>, workspace_id: String, infos: Vec<KeptInfo>) {
        if infos.is_empty() {
            return;
        }
        {
            let mut keeping = self.keeping.lock().expect("kept trace info");
            for info in infos {
                keeping.push((workspace_id.clone(), info));
            }
        }
        self.keeper.get_or_init(|| {
            let traces = self.clone();
            tokio::spawn(async move { traces.keep_loop().await });
        });
    }

    async fn keep_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(KEEP_EVERY).await;
            let (waiting, dropped) = {
                let mut keeping = self.keeping.lock().expect("kept trace info");
                let dropped = std::mem::take(&mut keeping.dropped);
                (keeping.take(), dropped)
            };
            if dropped > 0 {
                // A cache: the next search builds them again.
                tracing::debug!(
                    "{dropped} traces' info not kept: more than {MAX_KEEPING} waited to be"
                );
            }
            let mut by_workspace: BTreeMap<String, Vec<KeptInfo>> = BTreeMap::new();
            for (workspace_id, info) in waiting {
                by_workspace.entry(workspace_id).or_default().push(info);
            }
            for (workspace_id, infos) in by_workspace {
                if let Err(e) = self.store.keep_trace_infos(&workspace_id, &infos).await {
                    tracing::debug!("could not keep traces' info for the next search: {e}");
                }
            }
        }
    }

    /// The workspace and the store query a search asks for, checked.
    async fn search_query(
        &self,
        p: &Principal,
        workspace: &str,
        search: &TraceSearch,
    ) -> Result<(WorkspaceRow, TraceQuery)> {
        let TraceSearch {
            experiment_ids,
            filter,
            order_by,
            max_results,
            page_token,
        } = search;
        let max_results = *max_results;
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        if !(1..=limits::SEARCH_MAX_RESULTS).contains(&max_results) {
            return Err(invalid(format!(
                "Invalid value {max_results} for parameter 'max_results' supplied. It must be between 1 and {}.",
                limits::SEARCH_MAX_RESULTS
            )));
        }
        let experiments = self.experiment_ids(&ws, experiment_ids).await?;
        let clauses = self.filter_clauses(&ws, filter).await?;
        let order_by = order_by
            .iter()
            .map(|o| mlflow_search::parse_order_by_of(Subject::Traces, o))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let query = TraceQuery {
            experiment_ids: experiments,
            clauses,
            order_by,
            start: page_start(page_token.as_deref())?,
            // One more than asked: whether there is a next page.
            limit: max_results + 1,
        };
        Ok((ws, query))
    }

    pub async fn set_tag(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        key: &str,
        value: &str,
    ) -> Result<()> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        check_tag(key, value)?;
        if !self
            .store
            .set_trace_tag(&ws.id, trace_id, key, value)
            .await?
        {
            return Err(no_trace(trace_id));
        }
        Ok(())
    }

    pub async fn delete_tag(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        key: &str,
    ) -> Result<()> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        if !self.store.delete_trace_tag(&ws.id, trace_id, key).await? {
            self.info(&ws, trace_id).await?;
            return Err(Error::not_found(format!(
                "No trace tag with key '{key}' for trace with ID '{trace_id}'"
            )));
        }
        Ok(())
    }

    /// Deletes an experiment's traces by id, or those that started before a time (at most
    /// `max_traces` of them, oldest first): MLflow's `DeleteTraces`. How many went.
    pub async fn delete(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_id: &str,
        which: TraceDeletion,
    ) -> Result<u64> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let exp = self.tracking.experiment(&ws, experiment_id).await?;
        match &which {
            TraceDeletion::Ids(ids) if ids.len() > limits::DELETE_IDS => {
                return Err(invalid(format!(
                    "At most {} traces can be deleted at once; got {}",
                    limits::DELETE_IDS,
                    ids.len()
                )));
            }
            TraceDeletion::Before {
                max_traces: Some(n),
                ..
            } if *n <= 0 => {
                return Err(invalid(format!(
                    "Invalid value {n} for parameter 'max_traces': it must be positive"
                )));
            }
            _ => {}
        }
        Ok(self
            .store
            .delete_traces(&ws.id, exp.experiment_id, &which)
            .await?)
    }

    /// Links traces to a run (MLflow's `LinkTracesToRun`, at most
    /// [`limits::LINKS_PER_REQUEST`]): searches for the run's traces find them.
    pub async fn link_to_run(
        &self,
        p: &Principal,
        workspace: &str,
        trace_ids: &[String],
        run_id: &str,
    ) -> Result<()> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        if trace_ids.len() > limits::LINKS_PER_REQUEST {
            return Err(invalid(format!(
                "Cannot link more than {} traces to a run in a single request. Provided {} traces.",
                limits::LINKS_PER_REQUEST,
                trace_ids.len()
            )));
        }
        if self.store.run_row(&ws.id, run_id).await?.is_none() {
            return Err(Error::not_found(format!("Run with id={run_id}")));
        }
        self.store
            .link_traces_to_run(&ws.id, trace_ids, run_id)
            .await?;
        Ok(())
    }

    async fn assessment_row(
        &self,
        ws: &WorkspaceRow,
        trace_id: &str,
        assessment_id: &str,
    ) -> Result<AssessmentRow> {
        self.store
            .assessments(&ws.id, &[trace_id.to_string()])
            .await?
            .into_iter()
            .find(|a| a.assessment_id == assessment_id)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Assessment with ID '{assessment_id}' for trace '{trace_id}'"
                ))
            })
    }

    /// Stores a new assessment: its id and times are given here; one that `overrides` another
    /// makes that one invalid.
    async fn put_new_assessment(
        &self,
        ws: &WorkspaceRow,
        trace_id: &str,
        mut a: Map<String, Json>,
    ) -> Result<Json> {
        let name = check_assessment(&a)?;
        let now = now_ms();
        let created = a
            .get("create_time")
            .and_then(Json::as_str)
            .and_then(tarn_spec::trigger::parse_rfc3339_ms)
            .unwrap_or(now);
        let assessment_id = format!("a-{}", uuid::Uuid::new_v4().simple());
        a.insert("assessment_id".into(), json!(assessment_id));
        a.insert("trace_id".into(), json!(trace_id));
        a.insert(
            "create_time".into(),
            json!(tarn_spec::trigger::rfc3339_ms(created)),
        );
        a.insert(
            "last_update_time".into(),
            json!(tarn_spec::trigger::rfc3339_ms(now)),
        );
        a.entry("valid").or_insert(json!(true));
        serialize_expectation(&mut a);
        // An override invalidates the one it overrides, in the same write.
        let mut rows = vec![];
        if let Some(overridden) = a
            .get("overrides")
            .and_then(Json::as_str)
            .map(str::to_string)
        {
            let mut old = self.assessment_row(ws, trace_id, &overridden).await?;
            if let Some(o) = old.content.as_object_mut() {
                o.insert("valid".into(), json!(false));
            }
            rows.push(old);
        }
        let content = Json::Object(a);
        rows.push(AssessmentRow {
            trace_id: trace_id.into(),
            assessment_id,
            name,
            created,
            content: content.clone(),
        });
        self.store.write_assessments(&ws.id, &rows, None).await?;
        Ok(content)
    }

    /// Logs a feedback or expectation on a trace.
    pub async fn create_assessment(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        a: Map<String, Json>,
    ) -> Result<Json> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        self.info(&ws, trace_id).await?;
        self.put_new_assessment(&ws, trace_id, a).await
    }

    pub async fn get_assessment(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        assessment_id: &str,
    ) -> Result<Json> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        Ok(self
            .assessment_row(&ws, trace_id, assessment_id)
            .await?
            .content)
    }

    /// Changes the fields `mask` names (`assessment_name`, `feedback`, `expectation`,
    /// `rationale`, `metadata` — merged) from `change`; the source and span stay.
    pub async fn update_assessment(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        assessment_id: &str,
        change: Map<String, Json>,
        mask: &[String],
    ) -> Result<Json> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let mut row = self.assessment_row(&ws, trace_id, assessment_id).await?;
        let Json::Object(current) = &mut row.content else {
            return Err(Error::Invalid(vec![]));
        };
        for field in mask {
            let kind_clash = match field.as_str() {
                "feedback" => current.contains_key("expectation"),
                "expectation" => current.contains_key("feedback"),
                "assessment_name" | "rationale" | "metadata" => false,
                other => {
                    return Err(invalid(format!(
                        "Field '{other}' of an assessment cannot be updated"
                    )));
                }
            };
            if kind_clash {
                return Err(invalid(format!(
                    "Cannot update {field} value on an assessment of the other kind."
                )));
            }
            let Some(value) = change.get(field.as_str()) else {
                continue;
            };
            if field == "metadata" {
                let merged = current
                    .entry("metadata")
                    .or_insert_with(|| json!({}))
                    .as_object_mut();
                if let (Some(merged), Some(new)) = (merged, value.as_object()) {
                    merged.extend(new.clone());
                }
            } else {
                current.insert(field.clone(), value.clone());
            }
        }
        serialize_expectation(current);
        if let Some(name) = current.get("assessment_name").and_then(Json::as_str) {
            row.name = name.to_string();
        }
        current.insert(
            "last_update_time".into(),
            json!(tarn_spec::trigger::rfc3339_ms(now_ms())),
        );
        self.store
            .write_assessments(&ws.id, std::slice::from_ref(&row), None)
            .await?;
        Ok(row.content)
    }

    /// Deletes an assessment; one it overrode is valid again.
    pub async fn delete_assessment(
        &self,
        p: &Principal,
        workspace: &str,
        trace_id: &str,
        assessment_id: &str,
    ) -> Result<()> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Write)
            .await?;
        let row = self.assessment_row(&ws, trace_id, assessment_id).await?;
        // The one it overrode is valid again, in the same write.
        let mut restored = vec![];
        if let Some(overridden) = row.content.get("overrides").and_then(Json::as_str)
            && let Ok(mut old) = self.assessment_row(&ws, trace_id, overridden).await
        {
            if let Some(o) = old.content.as_object_mut() {
                o.insert("valid".into(), json!(true));
            }
            restored.push(old);
        }
        self.store
            .write_assessments(&ws.id, &restored, Some((trace_id, assessment_id)))
            .await?;
        Ok(())
    }
}

/// An assessment's name, if it is one: named, and exactly one of a feedback or an expectation.
fn check_assessment(a: &Map<String, Json>) -> Result<String> {
    let name = a
        .get("assessment_name")
        .and_then(Json::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("An assessment needs a name ('assessment_name')"))?;
    let kinds = ["feedback", "expectation", "issue"]
        .iter()
        .filter(|k| a.get(**k).is_some_and(Json::is_object))
        .count();
    if kinds != 1 {
        return Err(invalid(
            "Exactly one of `expectation`, `feedback`, or `issue` should be specified.",
        ));
    }
    Ok(name.to_string())
}

/// A trace id as a client may choose it (MLflow's are `tr-` and 32 hex digits, but its server
/// takes any): 1 to [`limits::TRACE_ID`] characters, none of them control characters.
pub fn check_trace_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > limits::TRACE_ID || id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "Invalid trace ID {id:?}: it must be 1 to {} characters, without control characters",
            limits::TRACE_ID
        )));
    }
    Ok(())
}

/// An expectation whose value is not a plain value (an object or a list) is kept serialized,
/// as MLflow's server keeps it (`serialized_value` in JSON format); clients read either form.
fn serialize_expectation(a: &mut Map<String, Json>) {
    let Some(Json::Object(expectation)) = a.get_mut("expectation") else {
        return;
    };
    if let Some(value) = expectation
        .get("value")
        .filter(|v| v.is_object() || v.is_array())
    {
        let text = value.to_string();
        expectation.remove("value");
        expectation.insert(
            "serialized_value".into(),
            json!({"serialization_format": "JSON_FORMAT", "value": text}),
        );
    }
}
