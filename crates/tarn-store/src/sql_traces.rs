//! [`Traces`] for [`SqlStore`], SQLite or PostgreSQL. A search is one statement over `traces`
//! walking `traces_by_time`: each filter clause on a tag, metadata or span becomes an
//! `EXISTS` on that table. Every read of traces is one statement: each trace comes packed with
//! its tags, metadata and assessments (see [`SqlStore::trace_items`]).

use crate::sql::{db, json};
use crate::statement::{Batch, Statement};
use crate::traces::*;
use crate::{Result, SqlStore, StoreError};
use async_trait::async_trait;
use serde_json::Value as Json;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;
use tarn_spec::mlflow_search::{Clause, Entity, Op, OrderBy, Value};

/// Spans written per statement (11 values each, well under SQLite's 32766 parameters).
const SPANS_PER_STATEMENT: usize = 500;

/// The columns of `traces` a packed trace starts with, in [`PackedTrace`]'s order (its tags,
/// metadata and assessments follow: [`SqlStore::trace_items`]).
const TRACE_COLUMNS: &str = "t.trace_id, t.experiment_id, t.request_time, t.execution_duration, \
     t.state, t.client_request_id, t.request_preview, t.response_preview";

/// The columns a packed list of spans carries, in [`span_row`]'s order.
const SPAN_COLUMNS: &str =
    "trace_id, span_id, parent_id, name, span_type, status, start_ns, end_ns, content";

fn text(v: &Json) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn opt_text(v: &Json) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The items of a packed result: one text holding a JSON array of rows, each an array (the
/// database builds it, so a page crosses from the database in one value, not a row at a time).
fn packed(text: &str) -> Result<Vec<Vec<Json>>> {
    serde_json::from_str(text).map_err(StoreError::Corrupt)
}

/// A trace as [`SqlStore::trace_items`] packs it: its columns, tags, metadata, assessments.
type PackedTrace = (
    String,
    i64,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<(String, String)>,
    Vec<(String, String)>,
    Vec<Json>,
);

/// The traces of a packed page, read straight into rows (no JSON tree in between: a search's
/// page is read on every call).
fn traces_of(workspace_id: &str, page: &str) -> Result<Vec<TraceRow>> {
    let rows: Vec<PackedTrace> = serde_json::from_str(page).map_err(StoreError::Corrupt)?;
    Ok(rows
        .into_iter()
        .map(|r| trace_row(workspace_id, r))
        .collect())
}

fn trace_row(workspace_id: &str, r: PackedTrace) -> TraceRow {
    TraceRow {
        workspace_id: workspace_id.to_string(),
        trace_id: r.0,
        experiment_id: r.1,
        request_time: r.2,
        execution_duration: r.3,
        state: r.4,
        client_request_id: r.5,
        request_preview: r.6,
        response_preview: r.7,
        tags: r.8,
        metadata: r.9,
        assessments: r.10,
    }
}

fn span_row(r: &[Json]) -> SpanRow {
    SpanRow {
        trace_id: text(&r[0]),
        span_id: text(&r[1]),
        parent_id: opt_text(&r[2]),
        name: text(&r[3]),
        span_type: opt_text(&r[4]),
        status: text(&r[5]),
        start_ns: r[6].as_i64().unwrap_or_default(),
        end_ns: r[7].as_i64(),
        content: text(&r[8]),
        // Not read back: only searches look at it.
        search_text: String::new(),
    }
}

/// The SQL of a trace attribute (canonical keys of the trace grammar).
fn attribute_column(key: &str) -> &'static str {
    match key {
        "request_id" => "t.trace_id",
        "status" => "t.state",
        "client_request_id" => "t.client_request_id",
        "timestamp_ms" => "t.request_time",
        "execution_time_ms" => "t.execution_duration",
        "end_time_ms" => "(t.request_time + t.execution_duration)",
        "experiment_id" => "t.experiment_id",
        // The grammar admits no other key.
        _ => "NULL",
    }
}

fn span_column(key: &str) -> &'static str {
    match key {
        "name" => "s.name",
        "type" => "s.span_type",
        "status" => "s.status",
        _ => "s.search_text",
    }
}

/// The table of a trace's key-value entity: tags or metadata.
fn pairs_table(entity: Entity) -> &'static str {
    if entity == Entity::Tag {
        "trace_tags"
    } else {
        "trace_metadata"
    }
}

/// The `kind` of the assessments a `feedback.`/`expectation.` clause looks at.
fn assessment_kind(entity: Entity) -> &'static str {
    if entity == Entity::Feedback {
        "feedback"
    } else {
        "expectation"
    }
}

/// A column a trace search orders by.
struct SortTerm {
    column: &'static str,
    ascending: bool,
    /// Traces may have none (NULL): they sort after those that have one.
    nullable: bool,
    /// An integer; else text.
    integer: bool,
}

/// What a search orders by: the asked order, then newest first, ties by id (so the order is
/// total: a key names one place in it). A column already ordered by is not named again: it
/// would change nothing but cost SQLite a sort (it no longer sees that `traces_by_time` gives
/// the order).
fn sort_terms(order_by: &[OrderBy]) -> Vec<SortTerm> {
    let asked = order_by.iter().map(|o| (o.key.as_str(), o.ascending));
    let mut terms: Vec<SortTerm> = vec![];
    for (key, ascending) in asked.chain([("timestamp_ms", false), ("request_id", false)]) {
        let column = attribute_column(key);
        if terms.iter().any(|t| t.column == column) {
            continue;
        }
        terms.push(SortTerm {
            column,
            ascending,
            nullable: matches!(
                key,
                "execution_time_ms" | "end_time_ms" | "client_request_id"
            ),
            integer: matches!(
                key,
                "timestamp_ms" | "execution_time_ms" | "end_time_ms" | "experiment_id"
            ),
        });
    }
    terms
}

/// The columns of [`sort_terms`], comma-separated: a trace's [`SortKey`].
fn sort_columns(order_by: &[OrderBy]) -> String {
    let columns: Vec<&str> = sort_terms(order_by).iter().map(|t| t.column).collect();
    columns.join(", ")
}

/// ` AND <the trace comes after the one with this key>`, in the order of `terms`: for some
/// term, the trace is past the key's value and equal to it on every term before. The first
/// term's bound is said again on its own, so that the walk starts at the key in
/// `traces_by_time` rather than at its top. A key that does not fit the terms (another
/// order's, or forged) is refused: compared with the wrong type, PostgreSQL would fail.
fn push_after(q: &mut Statement, terms: &[SortTerm], key: &[Json]) -> Result<()> {
    let fits = key.len() == terms.len()
        && terms.iter().zip(key).all(|(t, v)| match v {
            Json::Null => t.nullable,
            Json::Number(n) => t.integer && n.is_i64(),
            Json::String(_) => !t.integer,
            _ => false,
        });
    if !fits {
        return Err(StoreError::Refused(
            "the page token does not belong to this search's order".into(),
        ));
    }
    let bind = |q: &mut Statement, t: &SortTerm, v: &Json| {
        match v {
            Json::Number(n) if t.integer => q.bind(n.as_i64().unwrap_or_default()),
            v => q.bind(v.as_str().unwrap_or_default().to_string()),
        };
    };
    let past = |t: &SortTerm| if t.ascending { ">" } else { "<" };
    q.push(" AND (");
    if let (Some(first), Some(v)) = (terms.first(), key.first())
        && !first.nullable
    {
        q.push(format!("{} {}= ", first.column, past(first)));
        bind(q, first, v);
        q.push(" AND ");
    }
    q.push("(");
    let mut any = false;
    for (i, (t, v)) in terms.iter().zip(key).enumerate() {
        // Nothing is past a NULL within its term: those traces sort last, all alike.
        if v.is_null() {
            continue;
        }
        if any {
            q.push(" OR ");
        }
        any = true;
        q.push("(");
        for (before, value) in terms[..i].iter().zip(key) {
            match value {
                Json::Null => q.push(format!("{} IS NULL AND ", before.column)),
                value => {
                    q.push(format!("{} = ", before.column));
                    bind(q, before, value);
                    q.push(" AND ")
                }
            };
        }
        if t.nullable {
            q.push(format!(
                "({} IS NULL OR {} {} ",
                t.column,
                t.column,
                past(t)
            ));
            bind(q, t, v);
            q.push("))");
        } else {
            q.push(format!("{} {} ", t.column, past(t)));
            bind(q, t, v);
            q.push(")");
        }
    }
    q.push("))");
    Ok(())
}

/// The JSON array a `text_list` parameter reads.
fn id_list(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

impl SqlStore {
    /// Appends the condition on `traces t` of the experiments' traces that match `clauses`:
    /// what every trace search, count and metric reads.
    fn push_traces_matching(
        &self,
        q: &mut Statement,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
    ) {
        q.push("t.workspace_id = ");
        q.bind(workspace_id.to_string());
        q.push(" AND t.experiment_id IN (");
        q.bind_all(experiment_ids.iter().copied());
        q.push(")");
        for c in clauses {
            self.push_trace_clause(q, c);
        }
    }

    /// The SQL of a span attribute's text (of `trace_spans s`: the span dict's attributes,
    /// by key; see `value_text`), its name bound in `q`.
    fn span_attribute(&self, q: &mut Statement, name: &str) -> String {
        let (before, after) = self.dialect.object_text("s.search_text", "attributes");
        format!("{before}{}{after}", q.placeholder(name.to_string()))
    }

    /// The SQL of what a `span.<key>` clause compares (of `trace_spans s`): a column, or
    /// an attribute's text.
    fn span_value(&self, q: &mut Statement, key: &str) -> String {
        match key.strip_prefix("attributes.") {
            Some(name) => self.span_attribute(q, name),
            None => span_column(key).to_string(),
        }
    }

    /// Pushes ` AND <clause>` for a trace search.
    fn push_trace_clause(&self, q: &mut Statement, c: &Clause) {
        q.push(" AND ");
        let condition = |q: &mut Statement, column: &str| {
            crate::sql_tracking::push_condition(q, self.dialect, column, c.op, &c.value)
        };
        match c.entity {
            Entity::Tag | Entity::Metadata => {
                let table = pairs_table(c.entity);
                // A run's traces: those made in it (their metadata) and those linked to it.
                let linked =
                    c.entity == Entity::Metadata && c.key == "mlflow.sourceRun" && c.op == Op::Eq;
                if linked {
                    q.push("(EXISTS (SELECT 1 FROM trace_runs l WHERE l.workspace_id = t.workspace_id AND l.trace_id = t.trace_id AND l.run_id = ");
                    q.bind(match &c.value {
                        Value::Str(run) => run.clone(),
                        _ => String::new(),
                    });
                    q.push(") OR ");
                }
                if c.op == Op::IsNull {
                    q.push("NOT ");
                }
                q.push(format!(
                    "EXISTS (SELECT 1 FROM {table} g WHERE g.workspace_id = t.workspace_id AND g.trace_id = t.trace_id AND g.key = "
                ));
                q.bind(c.key.clone());
                if !matches!(c.op, Op::IsNull | Op::IsNotNull) {
                    q.push(" AND");
                    condition(q, "g.value");
                }
                q.push(if linked { "))" } else { ")" });
            }
            Entity::Span => {
                q.push(
                    "EXISTS (SELECT 1 FROM trace_spans s WHERE s.workspace_id = t.workspace_id AND s.trace_id = t.trace_id AND",
                );
                let value = self.span_value(q, &c.key);
                condition(q, &value);
                q.push(")");
            }
            Entity::Feedback | Entity::Expectation => {
                // The trace's valid assessment of that kind and name; a number compares with
                // a number, anything else with the value's text.
                if c.op == Op::IsNull {
                    q.push("NOT ");
                }
                q.push("EXISTS (SELECT 1 FROM trace_assessments a WHERE a.workspace_id = t.workspace_id AND a.trace_id = t.trace_id AND a.valid = 1 AND a.kind = ");
                q.bind(assessment_kind(c.entity).to_string());
                q.push(" AND a.name = ");
                q.bind(c.key.clone());
                if !matches!(c.op, Op::IsNull | Op::IsNotNull) {
                    q.push(" AND");
                    let column = match c.value {
                        Value::Num(_) => "a.value_number",
                        _ => "a.value_text",
                    };
                    condition(q, column);
                }
                q.push(")");
            }
            Entity::Issue => {
                // Linked by an issue reference: an assessment of kind `issue` named by the
                // issue's id (valid or not, as MLflow matches them).
                q.push("EXISTS (SELECT 1 FROM trace_assessments a WHERE a.workspace_id = t.workspace_id AND a.trace_id = t.trace_id AND a.kind = 'issue' AND a.name = ");
                q.bind(match &c.value {
                    Value::Str(id) => id.clone(),
                    _ => String::new(),
                });
                q.push(")");
            }
            _ => condition(q, attribute_column(&c.key)),
        }
    }

    /// The items of a packed trace of `traces t` (for `Dialect::json_rows`): its columns, then
    /// its tags and metadata (`[key, value]` each, by key) and its assessments (MLflow's JSON
    /// each, oldest first), each a nested array. One statement reads a page whole: reading the
    /// details by id after cost a second trip and a sort of all of them.
    fn trace_items(&self) -> String {
        let d = self.dialect;
        let of_trace = "WHERE g.workspace_id = t.workspace_id AND g.trace_id = t.trace_id";
        format!(
            "{TRACE_COLUMNS}, {}, {}, {}",
            d.nested_rows(
                &d.array("g.key, g.value"),
                &format!("FROM trace_tags g {of_trace}"),
                "g.key"
            ),
            d.nested_rows(
                &d.array("g.key, g.value"),
                &format!("FROM trace_metadata g {of_trace}"),
                "g.key"
            ),
            d.nested_rows(
                &d.json_value("g.content"),
                &format!("FROM trace_assessments g {of_trace}"),
                "g.created, g.assessment_id"
            ),
        )
    }

    /// `SELECT <aggregate> FROM (<the page of traces t the query finds>) AS t`: a LIMIT
    /// subquery feeds the aggregate in its order, and only the page's traces have their
    /// details read. The page starts at the query's offset, or after its key (see
    /// [`push_after`]).
    fn search_page(
        &self,
        workspace_id: &str,
        query: &TraceQuery,
        aggregate: &str,
    ) -> Result<Statement> {
        let mut q = Statement::new(format!(
            "SELECT {aggregate} FROM (SELECT t.* FROM traces t WHERE "
        ));
        self.push_traces_matching(&mut q, workspace_id, &query.experiment_ids, &query.clauses);
        let terms = sort_terms(&query.order_by);
        if let PageStart::After(key) = &query.start {
            push_after(&mut q, &terms, key)?;
        }
        let order: Vec<String> = terms
            .iter()
            .map(|t| {
                let direction = if t.ascending { "ASC" } else { "DESC" };
                // Traces without the value (no duration yet) sort last, either way.
                match t.nullable {
                    true => format!("{} IS NULL, {} {direction}", t.column, t.column),
                    false => format!("{} {direction}", t.column),
                }
            })
            .collect();
        q.push(format!(" ORDER BY {}", order.join(", ")));
        q.limit(query.limit);
        if let PageStart::Offset(offset) = query.start {
            q.push(" OFFSET ");
            q.bind(offset.max(0));
        }
        q.push(") AS t");
        Ok(q)
    }

    /// The traces a `SELECT <packed items> FROM traces t …` statement packed.
    async fn read_traces(&self, workspace_id: &str, q: Statement) -> Result<Vec<TraceRow>> {
        let page: String = q.build().fetch_one(&self.reader).await.map_err(db)?.get(0);
        traces_of(workspace_id, &page)
    }
}

/// Upserts key-value rows of a trace: `replace` overwrites existing values, else they stay.
fn put_pairs(
    b: &mut Batch,
    table: &str,
    workspace_id: &str,
    trace_id: &str,
    pairs: &[(String, String)],
    replace: bool,
) {
    if pairs.is_empty() {
        return;
    }
    let q = b.next(format!(
        "INSERT INTO {table} (workspace_id, trace_id, key, value) VALUES "
    ));
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(");
        q.bind(workspace_id.to_string()).push(", ");
        q.bind(trace_id.to_string()).push(", ");
        q.bind(k.clone()).push(", ");
        q.bind(v.clone()).push(")");
    }
    q.push(if replace {
        " ON CONFLICT (workspace_id, trace_id, key) DO UPDATE SET value = excluded.value"
    } else {
        " ON CONFLICT (workspace_id, trace_id, key) DO NOTHING"
    });
}

/// Writes a trace's row (`on_conflict` says what becomes of one that exists), then its tags
/// and metadata: a finalized trace's replace those stored, others' only add to them.
fn write_trace(b: &mut Batch, t: &TraceRow, finalized: bool, on_conflict: &str) {
    let q = b.next(
        "INSERT INTO traces (workspace_id, trace_id, experiment_id, request_time, execution_duration, state, client_request_id, request_preview, response_preview, finalized) VALUES (",
    );
    q.bind(t.workspace_id.clone()).push(", ");
    q.bind(t.trace_id.clone()).push(", ");
    q.bind(t.experiment_id).push(", ");
    q.bind(t.request_time).push(", ");
    q.bind(t.execution_duration).push(", ");
    q.bind(t.state.clone()).push(", ");
    q.bind(t.client_request_id.clone()).push(", ");
    q.bind(t.request_preview.clone()).push(", ");
    q.bind(t.response_preview.clone()).push(format!(
        ", {}) ON CONFLICT (workspace_id, trace_id) {on_conflict}",
        i32::from(finalized)
    ));
    for (table, pairs) in [("trace_tags", &t.tags), ("trace_metadata", &t.metadata)] {
        put_pairs(b, table, &t.workspace_id, &t.trace_id, pairs, finalized);
    }
}

fn put_spans(b: &mut Batch, workspace_id: &str, spans: &[SpanRow]) {
    for chunk in spans.chunks(SPANS_PER_STATEMENT) {
        let q = b.next(
            "INSERT INTO trace_spans (workspace_id, trace_id, span_id, parent_id, name, span_type, status, start_ns, end_ns, content, search_text) VALUES ",
        );
        for (i, s) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(");
            q.bind(workspace_id.to_string()).push(", ");
            q.bind(s.trace_id.clone()).push(", ");
            q.bind(s.span_id.clone()).push(", ");
            q.bind(s.parent_id.clone()).push(", ");
            q.bind(s.name.clone()).push(", ");
            q.bind(s.span_type.clone()).push(", ");
            q.bind(s.status.clone()).push(", ");
            q.bind(s.start_ns).push(", ");
            q.bind(s.end_ns).push(", ");
            q.bind(s.content.clone()).push(", ");
            q.bind(s.search_text.clone()).push(")");
        }
        q.push(
            " ON CONFLICT (workspace_id, trace_id, span_id) DO UPDATE SET parent_id = excluded.parent_id, \
             name = excluded.name, span_type = excluded.span_type, status = excluded.status, \
             start_ns = excluded.start_ns, end_ns = excluded.end_ns, content = excluded.content, \
             search_text = excluded.search_text",
        );
    }
}

#[async_trait]
impl Traces for SqlStore {
    async fn log_spans(&self, batches: &[SpanBatch]) -> Result<()> {
        let mut batch = Batch::new(self.dialect);
        for b in batches {
            let t = &b.trace;
            // A trace its spans made takes its root span's timing, state and previews, until
            // the client finalizes it.
            let on_conflict = if b.has_root {
                "DO UPDATE SET request_time = excluded.request_time, execution_duration = excluded.execution_duration, \
                 state = excluded.state, request_preview = COALESCE(traces.request_preview, excluded.request_preview), \
                 response_preview = COALESCE(traces.response_preview, excluded.response_preview) \
                 WHERE traces.finalized = 0"
            } else {
                "DO NOTHING"
            };
            write_trace(&mut batch, t, false, on_conflict);
            put_spans(&mut batch, &t.workspace_id, &b.spans);
        }
        batch.commit(&self.writer).await?;
        Ok(())
    }

    async fn finalize_trace(&self, t: &TraceRow) -> Result<TraceRow> {
        // The client's values win; previews the spans gave stay where it sends none.
        let on_conflict = "DO UPDATE SET experiment_id = excluded.experiment_id, \
             request_time = excluded.request_time, execution_duration = excluded.execution_duration, \
             state = excluded.state, client_request_id = excluded.client_request_id, \
             request_preview = COALESCE(excluded.request_preview, traces.request_preview), \
             response_preview = COALESCE(excluded.response_preview, traces.response_preview), \
             finalized = 1";
        let mut batch = Batch::new(self.dialect);
        write_trace(&mut batch, t, true, on_conflict);
        // The trace as stored: its tags and metadata, those its spans gave included.
        let q = batch.next(format!(
            "SELECT {} FROM traces t WHERE t.workspace_id = ",
            self.dialect.json_rows(&self.trace_items())
        ));
        q.bind(t.workspace_id.clone());
        q.push(" AND t.trace_id = ");
        q.bind(t.trace_id.clone());
        let rows = batch.commit(&self.writer).await?;
        let page: String = rows
            .first()
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?
            .get(0);
        traces_of(&t.workspace_id, &page)?
            .pop()
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    async fn get_traces(&self, workspace_id: &str, ids: &[String]) -> Result<Vec<TraceRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut q = Statement::new(format!(
            "SELECT {} FROM traces t WHERE t.workspace_id = ",
            self.dialect.json_rows(&self.trace_items())
        ));
        q.bind(workspace_id.to_string());
        let ids = self.dialect.text_list(&q.placeholder(id_list(ids)));
        q.push(format!(" AND t.trace_id IN ({ids})"));
        self.read_traces(workspace_id, q).await
    }

    async fn trace_spans(&self, workspace_id: &str, ids: &[String]) -> Result<Vec<SpanRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT {} FROM (SELECT * FROM trace_spans WHERE workspace_id = $1 AND trace_id IN ({}) \
             ORDER BY trace_id, start_ns, span_id) AS s",
            self.dialect.json_rows(SPAN_COLUMNS),
            self.dialect.text_list("$2")
        );
        let spans: String = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(id_list(ids))
            .fetch_one(&self.reader)
            .await
            .map_err(db)?
            .get(0);
        Ok(packed(&spans)?.iter().map(|r| span_row(r)).collect())
    }

    async fn search_traces(
        &self,
        workspace_id: &str,
        query: &TraceQuery,
    ) -> Result<Vec<(TraceRow, SortKey)>> {
        if query.experiment_ids.is_empty() {
            return Ok(vec![]);
        }
        let d = self.dialect;
        let items = format!(
            "{}, {}",
            d.array(&sort_columns(&query.order_by)),
            d.array(&self.trace_items())
        );
        let q = self.search_page(workspace_id, query, &d.json_rows(&items))?;
        let page: String = q.build().fetch_one(&self.reader).await.map_err(db)?.get(0);
        let rows: Vec<(SortKey, PackedTrace)> =
            serde_json::from_str(&page).map_err(StoreError::Corrupt)?;
        Ok(rows
            .into_iter()
            .map(|(key, r)| (trace_row(workspace_id, r), key))
            .collect())
    }

    async fn search_trace_infos(
        &self,
        workspace_id: &str,
        query: &TraceQuery,
    ) -> Result<Vec<(CachedTrace, SortKey)>> {
        if query.experiment_ids.is_empty() {
            return Ok(vec![]);
        }
        // Each trace is its key (a JSON array), then its kept text, or `!` and `[version,
        // <packed trace>]`; the page is one text, the traces apart by a record separator
        // (JSON text has none raw). Only a trace without its text has its details read (SQL
        // evaluates a CASE's branch only when taken).
        let d = self.dialect;
        let item = format!(
            "CAST({} AS TEXT) || CASE WHEN t.info IS NOT NULL THEN t.info ELSE '!' || CAST({} AS TEXT) END",
            d.array(&sort_columns(&query.order_by)),
            d.array(&format!("t.version, {}", d.array(&self.trace_items())))
        );
        let q = self.search_page(workspace_id, query, &d.text_rows(&item))?;
        let page: Option<String> = q.build().fetch_one(&self.reader).await.map_err(db)?.get(0);
        let mut out = vec![];
        for item in page.as_deref().unwrap_or_default().split('\u{1e}') {
            if item.is_empty() {
                continue;
            }
            let mut key = serde_json::Deserializer::from_str(item).into_iter::<SortKey>();
            let sort_key = key
                .next()
                .unwrap_or_else(|| Err(serde::de::Error::custom("a trace without its key")))
                .map_err(StoreError::Corrupt)?;
            let rest = &item[key.byte_offset()..];
            let trace = match rest.strip_prefix('!') {
                Some(packed) => {
                    let (version, trace): (i64, PackedTrace) =
                        serde_json::from_str(packed).map_err(StoreError::Corrupt)?;
                    CachedTrace::Row(Box::new(trace_row(workspace_id, trace)), version)
                }
                None => CachedTrace::Info(rest.to_string()),
            };
            out.push((trace, sort_key));
        }
        Ok(out)
    }

    async fn keep_trace_infos(&self, workspace_id: &str, infos: &[KeptInfo]) -> Result<()> {
        let mut batch = Batch::new(self.dialect);
        for k in infos {
            let q = batch.next("UPDATE traces SET info = ");
            q.bind(k.info.clone());
            q.push(" WHERE workspace_id = ");
            q.bind(workspace_id.to_string());
            q.push(" AND trace_id = ");
            q.bind(k.trace_id.clone());
            q.push(" AND version = ");
            q.bind(k.version);
        }
        batch.commit(&self.writer).await?;
        Ok(())
    }

    async fn trace_facts(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
    ) -> Result<Vec<TraceFacts>> {
        if experiment_ids.is_empty() {
            return Ok(vec![]);
        }
        let of_trace = "g.workspace_id = t.workspace_id AND g.trace_id = t.trace_id";
        let mut q = Statement::new(format!(
            "SELECT {} FROM (SELECT t.* FROM traces t WHERE ",
            self.dialect.json_rows(&format!(
                "t.request_time, t.execution_duration, t.state, \
                 (SELECT g.value FROM trace_tags g WHERE {of_trace} AND g.key = 'mlflow.traceName'), \
                 (SELECT g.value FROM trace_metadata g WHERE {of_trace} AND g.key = 'mlflow.trace.tokenUsage')"
            ))
        ));
        self.push_traces_matching(&mut q, workspace_id, experiment_ids, clauses);
        q.push(" ORDER BY t.request_time, t.trace_id) AS t");
        let page: String = q.build().fetch_one(&self.reader).await.map_err(db)?.get(0);
        let rows: Vec<(i64, Option<i64>, String, Option<String>, Option<String>)> =
            serde_json::from_str(&page).map_err(StoreError::Corrupt)?;
        Ok(rows
            .into_iter()
            .map(|r| TraceFacts {
                request_time: r.0,
                execution_duration: r.1,
                state: r.2,
                name: r.3,
                token_usage: r.4,
            })
            .collect())
    }

    async fn span_facts(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
        span_filters: &[(String, String)],
    ) -> Result<Vec<SpanFacts>> {
        if experiment_ids.is_empty() {
            return Ok(vec![]);
        }
        let mut q = Statement::default();
        let items = format!(
            "s.start_ns, s.end_ns, s.name, s.span_type, s.status, {}, {}, {}",
            self.span_attribute(&mut q, "mlflow.llm.model"),
            self.span_attribute(&mut q, "mlflow.llm.provider"),
            self.span_attribute(&mut q, "mlflow.llm.cost"),
        );
        q.push(format!(
            "SELECT {} FROM trace_spans s JOIN traces t ON t.workspace_id = s.workspace_id AND t.trace_id = s.trace_id \
             WHERE ",
            self.dialect.json_rows(&items)
        ));
        self.push_traces_matching(&mut q, workspace_id, experiment_ids, clauses);
        for (key, value) in span_filters {
            let column = match key.as_str() {
                "name" => "s.name",
                "type" => "s.span_type",
                _ => "s.status",
            };
            q.push(format!(" AND {column} = "));
            q.bind(value.clone());
        }
        let page: String = q.build().fetch_one(&self.reader).await.map_err(db)?.get(0);
        type Row = (
            i64,
            Option<i64>,
            String,
            Option<String>,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = serde_json::from_str(&page).map_err(StoreError::Corrupt)?;
        Ok(rows
            .into_iter()
            .map(|r| SpanFacts {
                start_ns: r.0,
                end_ns: r.1,
                name: r.2,
                span_type: r.3,
                status: r.4,
                model: r.5,
                provider: r.6,
                cost: r.7,
            })
            .collect())
    }

    async fn assessment_facts(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clauses: &[Clause],
        filters: &[(String, String)],
    ) -> Result<Vec<AssessmentFacts>> {
        if experiment_ids.is_empty() {
            return Ok(vec![]);
        }
        let mut q = Statement::new(format!(
            "SELECT {} FROM trace_assessments a JOIN traces t ON t.workspace_id = a.workspace_id AND t.trace_id = a.trace_id \
             WHERE ",
            self.dialect.json_rows(&format!(
                "a.created, a.name, a.kind, {}",
                self.dialect.json_value("a.content")
            ))
        ));
        self.push_traces_matching(&mut q, workspace_id, experiment_ids, clauses);
        for (key, value) in filters {
            q.push(if key == "type" {
                " AND a.kind = "
            } else {
                " AND a.name = "
            });
            q.bind(value.clone());
        }
        let page: String = q.build().fetch_one(&self.reader).await.map_err(db)?.get(0);
        let rows: Vec<(i64, String, String, Json)> =
            serde_json::from_str(&page).map_err(StoreError::Corrupt)?;
        Ok(rows
            .into_iter()
            .map(|(created, name, kind, content)| AssessmentFacts {
                created,
                name,
                kind,
                content,
            })
            .collect())
    }

    async fn trace_values(
        &self,
        workspace_id: &str,
        entity: Entity,
        key: &str,
    ) -> Result<Vec<String>> {
        // Over the whole workspace: a value only in other experiments' traces matches none
        // of the searched ones, and no join with `traces` is needed to leave it out.
        let mut q = Statement::new("SELECT DISTINCT ");
        match entity {
            Entity::Tag | Entity::Metadata => {
                let table = pairs_table(entity);
                q.push(format!("g.value FROM {table} g WHERE g.workspace_id = "));
                q.bind(workspace_id.to_string());
                q.push(" AND g.key = ");
                q.bind(key.to_string());
            }
            Entity::Attribute => {
                let column = attribute_column(key);
                q.push(format!(
                    "CAST({column} AS TEXT) FROM traces t WHERE {column} IS NOT NULL AND t.workspace_id = "
                ));
                q.bind(workspace_id.to_string());
            }
            Entity::Span => {
                let value = self.span_value(&mut q, key);
                q.push(format!(
                    "{value} AS v FROM trace_spans s WHERE s.workspace_id = "
                ));
                q.bind(workspace_id.to_string());
            }
            Entity::Feedback | Entity::Expectation => {
                q.push("a.value_text FROM trace_assessments a WHERE a.value_text IS NOT NULL AND a.valid = 1 AND a.workspace_id = ");
                q.bind(workspace_id.to_string());
                q.push(" AND a.kind = ");
                q.bind(assessment_kind(entity).to_string());
                q.push(" AND a.name = ");
                q.bind(key.to_string());
            }
            // Not a place a pattern may look (the grammar refuses RLIKE there).
            _ => return Ok(vec![]),
        }
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<Option<String>, _>(0))
            .collect())
    }

    async fn count_traces(
        &self,
        workspace_id: &str,
        experiment_ids: &[i64],
        clause_sets: &[Vec<Clause>],
    ) -> Result<Vec<i64>> {
        if experiment_ids.is_empty() || clause_sets.is_empty() {
            return Ok(vec![0; clause_sets.len()]);
        }
        let mut q = Statement::new("SELECT ");
        for (i, clauses) in clause_sets.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(SELECT COUNT(*) FROM traces t WHERE ");
            self.push_traces_matching(&mut q, workspace_id, experiment_ids, clauses);
            q.push(format!(") AS c{i}"));
        }
        let row = q.build().fetch_one(&self.reader).await.map_err(db)?;
        Ok((0..clause_sets.len())
            .map(|i| row.get::<i64, _>(i))
            .collect())
    }

    async fn set_trace_tag(
        &self,
        workspace_id: &str,
        trace_id: &str,
        key: &str,
        value: &str,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let exists = sqlx::query("SELECT 1 FROM traces WHERE workspace_id = $1 AND trace_id = $2")
            .bind(workspace_id)
            .bind(trace_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        if exists {
            let pair = [(key.to_string(), value.to_string())];
            let mut batch = Batch::new(self.dialect);
            put_pairs(
                &mut batch,
                "trace_tags",
                workspace_id,
                trace_id,
                &pair,
                true,
            );
            batch.execute(&mut tx).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(exists)
    }

    async fn delete_trace_tag(
        &self,
        workspace_id: &str,
        trace_id: &str,
        key: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM trace_tags WHERE workspace_id = $1 AND trace_id = $2 AND key = $3",
        )
        .bind(workspace_id)
        .bind(trace_id)
        .bind(key)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_traces(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        which: &TraceDeletion,
    ) -> Result<u64> {
        let mut q = Statement::new("DELETE FROM traces WHERE workspace_id = ");
        q.bind(workspace_id.to_string());
        q.push(" AND experiment_id = ");
        q.bind(experiment_id);
        match which {
            TraceDeletion::Ids(ids) => {
                if ids.is_empty() {
                    return Ok(0);
                }
                q.push(" AND trace_id IN (");
                q.bind_all(ids.iter().cloned());
                q.push(")");
            }
            TraceDeletion::Before {
                max_timestamp_ms,
                max_traces,
            } => {
                q.push(" AND trace_id IN (SELECT trace_id FROM traces WHERE workspace_id = ");
                q.bind(workspace_id.to_string());
                q.push(" AND experiment_id = ");
                q.bind(experiment_id);
                q.push(" AND request_time <= ");
                q.bind(*max_timestamp_ms);
                q.push(" ORDER BY request_time, trace_id");
                q.limit(max_traces.unwrap_or(i64::MAX));
                q.push(")");
            }
        }
        let done = q.build().execute(&self.writer).await.map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn link_traces_to_run(
        &self,
        workspace_id: &str,
        trace_ids: &[String],
        run_id: &str,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        for trace_id in trace_ids {
            sqlx::query(
                "INSERT INTO trace_runs (workspace_id, trace_id, run_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (workspace_id, trace_id, run_id) DO NOTHING",
            )
            .bind(workspace_id)
            .bind(trace_id)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn expire_traces(&self, workspace_id: &str, before_ms: i64, max: i64) -> Result<u64> {
        let mut q = Statement::default();
        let ws = q.placeholder(workspace_id.to_string());
        let before = q.placeholder(before_ms);
        q.push(format!(
            "DELETE FROM traces WHERE workspace_id = {ws} AND trace_id IN \
             (SELECT trace_id FROM traces WHERE workspace_id = {ws} AND request_time < {before} \
              ORDER BY request_time, trace_id"
        ));
        q.limit(max).push(")");
        let done = q.build().execute(&self.writer).await.map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn write_assessments(
        &self,
        workspace_id: &str,
        put: &[AssessmentRow],
        delete: Option<(&str, &str)>,
    ) -> Result<bool> {
        let mut batch = Batch::new(self.dialect);
        if let Some((trace_id, assessment_id)) = delete {
            let q = batch.next("DELETE FROM trace_assessments WHERE workspace_id = ");
            q.bind(workspace_id.to_string()).push(" AND trace_id = ");
            q.bind(trace_id.to_string()).push(" AND assessment_id = ");
            q.bind(assessment_id.to_string())
                .push(" RETURNING assessment_id");
        }
        for a in put {
            let (kind, valid, text, number) = assessment_value(&a.content);
            let q = batch.next(
                "INSERT INTO trace_assessments (workspace_id, trace_id, assessment_id, name, created, content, kind, valid, value_text, value_number) VALUES (",
            );
            q.bind(workspace_id.to_string()).push(", ");
            q.bind(a.trace_id.clone()).push(", ");
            q.bind(a.assessment_id.clone()).push(", ");
            q.bind(a.name.clone()).push(", ");
            q.bind(a.created).push(", ");
            q.bind(a.content.to_string()).push(", ");
            q.bind(kind.to_string()).push(", ");
            q.bind(i64::from(valid)).push(", ");
            q.bind(text).push(", ");
            q.bind(number).push(
                ") ON CONFLICT (workspace_id, trace_id, assessment_id) DO UPDATE SET name = excluded.name, \
                 content = excluded.content, kind = excluded.kind, valid = excluded.valid, \
                 value_text = excluded.value_text, value_number = excluded.value_number",
            );
        }
        let rows = batch.commit(&self.writer).await?;
        Ok(!rows.is_empty())
    }

    async fn assessments(&self, workspace_id: &str, ids: &[String]) -> Result<Vec<AssessmentRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT * FROM trace_assessments WHERE workspace_id = $1 AND trace_id IN ({}) ORDER BY created, assessment_id",
            self.dialect.text_list("$2")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(id_list(ids))
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(AssessmentRow {
                    trace_id: r.get("trace_id"),
                    assessment_id: r.get("assessment_id"),
                    name: r.get("name"),
                    created: r.get("created"),
                    content: json(r.get::<String, _>("content").as_str())?,
                })
            })
            .collect()
    }

    async fn put_dataset(
        &self,
        d: &DatasetRow,
        experiments: Option<&[i64]>,
        must_be_new: bool,
    ) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let upsert = if must_be_new {
            ""
        } else {
            " ON CONFLICT (workspace_id, dataset_id) DO UPDATE SET name = excluded.name, \
             last_update_time = excluded.last_update_time, content = excluded.content"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO eval_datasets (workspace_id, dataset_id, name, created_time, last_update_time, content) \
             VALUES ($1, $2, $3, $4, $5, $6){upsert}"
        )))
        .bind(&d.workspace_id)
        .bind(&d.dataset_id)
        .bind(&d.name)
        .bind(d.created_time)
        .bind(d.last_update_time)
        .bind(d.content.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(experiments) = experiments {
            sqlx::query(
                "DELETE FROM eval_dataset_experiments WHERE workspace_id = $1 AND dataset_id = $2",
            )
            .bind(&d.workspace_id)
            .bind(&d.dataset_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            for e in experiments {
                sqlx::query(
                    "INSERT INTO eval_dataset_experiments (workspace_id, dataset_id, experiment_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (workspace_id, dataset_id, experiment_id) DO NOTHING",
                )
                .bind(&d.workspace_id)
                .bind(&d.dataset_id)
                .bind(*e)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn datasets(
        &self,
        workspace_id: &str,
        dataset_id: Option<&str>,
    ) -> Result<Vec<(DatasetRow, Vec<i64>)>> {
        let only = dataset_id.map_or("", |_| " AND dataset_id = $2");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM eval_datasets WHERE workspace_id = $1{only} ORDER BY created_time, dataset_id"
        )))
        .bind(workspace_id);
        if let Some(id) = dataset_id {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.reader).await.map_err(db)?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT dataset_id, experiment_id FROM eval_dataset_experiments WHERE workspace_id = $1{only} ORDER BY experiment_id"
        )))
        .bind(workspace_id);
        if let Some(id) = dataset_id {
            q = q.bind(id);
        }
        let mut experiments: HashMap<String, Vec<i64>> = HashMap::new();
        for r in q.fetch_all(&self.reader).await.map_err(db)? {
            experiments
                .entry(r.get("dataset_id"))
                .or_default()
                .push(r.get("experiment_id"));
        }
        rows.iter()
            .map(|r| {
                let row = DatasetRow {
                    workspace_id: r.get("workspace_id"),
                    dataset_id: r.get("dataset_id"),
                    name: r.get("name"),
                    created_time: r.get("created_time"),
                    last_update_time: r.get("last_update_time"),
                    content: json(r.get::<String, _>("content").as_str())?,
                };
                let linked = experiments.remove(&row.dataset_id).unwrap_or_default();
                Ok((row, linked))
            })
            .collect()
    }

    async fn delete_dataset(&self, workspace_id: &str, dataset_id: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM eval_datasets WHERE workspace_id = $1 AND dataset_id = $2")
                .bind(workspace_id)
                .bind(dataset_id)
                .execute(&self.writer)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn dataset_records(
        &self,
        workspace_id: &str,
        dataset_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<DatasetRecordRow>> {
        let mut q = Statement::new("SELECT * FROM eval_dataset_records WHERE workspace_id = ");
        q.bind(workspace_id.to_string());
        q.push(" AND dataset_id = ");
        q.bind(dataset_id.to_string());
        q.push(" ORDER BY created_time, record_id");
        q.limit(limit).push(" OFFSET ");
        q.bind(offset.max(0));
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        rows.iter().map(record_row).collect()
    }

    async fn records_by_hash(
        &self,
        workspace_id: &str,
        dataset_id: &str,
        hashes: &[String],
    ) -> Result<Vec<DatasetRecordRow>> {
        if hashes.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT * FROM eval_dataset_records WHERE workspace_id = $1 AND dataset_id = $2 AND input_hash IN ({})",
            self.dialect.text_list("$3")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace_id)
            .bind(dataset_id)
            .bind(id_list(hashes))
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.iter().map(record_row).collect()
    }

    async fn put_records(&self, d: &DatasetRow, records: &[DatasetRecordRow]) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        for r in records {
            sqlx::query(
                "INSERT INTO eval_dataset_records (workspace_id, dataset_id, record_id, input_hash, created_time, content) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (workspace_id, dataset_id, record_id) DO UPDATE SET content = excluded.content",
            )
            .bind(&d.workspace_id)
            .bind(&d.dataset_id)
            .bind(&r.record_id)
            .bind(&r.input_hash)
            .bind(r.created_time)
            .bind(r.content.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        update_dataset(&mut tx, d).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn delete_records(&self, d: &DatasetRow, record_ids: &[String]) -> Result<u64> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let sql = format!(
            "DELETE FROM eval_dataset_records WHERE workspace_id = $1 AND dataset_id = $2 AND record_id IN ({})",
            self.dialect.text_list("$3")
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&d.workspace_id)
            .bind(&d.dataset_id)
            .bind(id_list(record_ids))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // The count goes down by what went (ids that were not there take nothing).
        let mut d = d.clone();
        let gone = done.rows_affected();
        d.set_record_count((d.record_count() - gone as i64).max(0));
        update_dataset(&mut tx, &d).await?;
        tx.commit().await.map_err(db)?;
        Ok(gone)
    }

    async fn put_issue(&self, row: &IssueRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO genai_issues (workspace_id, issue_id, experiment_id, status, severity, source_run_id, created, content) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (workspace_id, issue_id) DO UPDATE SET \
             status = excluded.status, severity = excluded.severity, content = excluded.content",
        )
        .bind(&row.workspace_id)
        .bind(&row.issue_id)
        .bind(row.experiment_id)
        .bind(&row.status)
        .bind(row.severity.as_deref())
        .bind(row.source_run_id.as_deref())
        .bind(row.created)
        .bind(row.content.to_string())
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_issue(&self, workspace_id: &str, issue_id: &str) -> Result<Option<IssueRow>> {
        let row =
            sqlx::query("SELECT * FROM genai_issues WHERE workspace_id = $1 AND issue_id = $2")
                .bind(workspace_id)
                .bind(issue_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        row.map(|r| issue_row(&r)).transpose()
    }

    async fn search_issues(
        &self,
        workspace_id: &str,
        experiment_id: Option<i64>,
        clauses: &[Clause],
        (offset, limit): (i64, i64),
        count_traces: bool,
    ) -> Result<Vec<IssueRow>> {
        // The traces an issue's references name, counted as MLflow counts them.
        let counted = if count_traces {
            ", (SELECT COUNT(DISTINCT a.trace_id) FROM trace_assessments a \
             WHERE a.workspace_id = genai_issues.workspace_id AND a.kind = 'issue' \
             AND a.name = genai_issues.issue_id) AS trace_count"
        } else {
            ""
        };
        let mut q = Statement::new(format!(
            "SELECT *{counted} FROM genai_issues WHERE workspace_id = "
        ));
        q.bind(workspace_id.to_string());
        if let Some(id) = experiment_id {
            q.push(" AND experiment_id = ");
            q.bind(id);
        }
        for c in clauses {
            let column = match c.key.as_str() {
                "status" | "source_run_id" | "severity" => c.key.clone(),
                "name" => self.dialect.json_text("content", "name"),
                // The grammar admits no other key.
                _ => "NULL".into(),
            };
            q.push(" AND");
            crate::sql_tracking::push_condition(&mut q, self.dialect, &column, c.op, &c.value);
        }
        // MLflow's order: the most severe first (no severity last), then (when counted) the
        // most traces, then newest.
        q.push(format!(
            " ORDER BY CASE severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 \
             WHEN 'not_an_issue' THEN 0 ELSE -1 END DESC, {}created DESC, issue_id DESC",
            if count_traces {
                "trace_count DESC, "
            } else {
                ""
            }
        ));
        q.limit(limit).push(" OFFSET ");
        q.bind(offset.max(0));
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        rows.iter().map(issue_row).collect()
    }

    async fn register_scorer(&self, row: &ScorerRow) -> Result<ScorerRow> {
        // One statement: the next version and the name's id are read where they are written.
        // Two servers adding a version of one name at once: one gets `Conflict`.
        let mut q = Statement::default();
        let ws = q.placeholder(row.workspace_id.clone());
        let exp = q.placeholder(row.experiment_id);
        let name = q.placeholder(row.name.clone());
        let id = q.placeholder(row.scorer_id.clone());
        let serialized = q.placeholder(row.serialized.clone());
        let created = q.placeholder(row.created);
        q.push(format!(
            "INSERT INTO scorer_versions (workspace_id, experiment_id, name, version, scorer_id, serialized, created) \
             SELECT {ws}, {exp}, {name}, COALESCE(MAX(version), 0) + 1, COALESCE(MIN(scorer_id), {id}), {serialized}, {created} \
             FROM scorer_versions WHERE workspace_id = {ws} AND experiment_id = {exp} AND name = {name} \
             RETURNING version, scorer_id"
        ));
        let stored = q.build().fetch_one(&self.writer).await.map_err(db)?;
        Ok(ScorerRow {
            version: stored.get("version"),
            scorer_id: stored.get("scorer_id"),
            ..row.clone()
        })
    }

    async fn scorers(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        name: Option<&str>,
    ) -> Result<Vec<ScorerRow>> {
        let mut q = Statement::new("SELECT * FROM scorer_versions WHERE workspace_id = ");
        q.bind(workspace_id.to_string());
        q.push(" AND experiment_id = ");
        q.bind(experiment_id);
        if let Some(name) = name {
            q.push(" AND name = ");
            q.bind(name.to_string());
        }
        q.push(" ORDER BY name, version");
        let rows = q.build().fetch_all(&self.reader).await.map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| ScorerRow {
                workspace_id: workspace_id.to_string(),
                experiment_id,
                name: r.get("name"),
                version: r.get("version"),
                scorer_id: r.get("scorer_id"),
                serialized: r.get("serialized"),
                created: r.get("created"),
            })
            .collect())
    }

    async fn delete_scorer(
        &self,
        workspace_id: &str,
        experiment_id: i64,
        name: &str,
        version: Option<i64>,
    ) -> Result<u64> {
        let mut q = Statement::new("DELETE FROM scorer_versions WHERE workspace_id = ");
        q.bind(workspace_id.to_string());
        q.push(" AND experiment_id = ");
        q.bind(experiment_id);
        q.push(" AND name = ");
        q.bind(name.to_string());
        if let Some(version) = version {
            q.push(" AND version = ");
            q.bind(version);
        }
        let done = q.build().execute(&self.writer).await.map_err(db)?;
        Ok(done.rows_affected())
    }
}

fn issue_row(r: &AnyRow) -> Result<IssueRow> {
    Ok(IssueRow {
        workspace_id: r.get("workspace_id"),
        issue_id: r.get("issue_id"),
        experiment_id: r.get("experiment_id"),
        status: r.get("status"),
        severity: r.get("severity"),
        source_run_id: r.get("source_run_id"),
        created: r.get("created"),
        content: json(r.get::<String, _>("content").as_str())?,
        trace_count: r.try_get("trace_count").ok(),
    })
}

fn record_row(r: &AnyRow) -> Result<DatasetRecordRow> {
    Ok(DatasetRecordRow {
        record_id: r.get("record_id"),
        input_hash: r.get("input_hash"),
        created_time: r.get("created_time"),
        content: json(r.get::<String, _>("content").as_str())?,
    })
}

async fn update_dataset(tx: &mut Transaction<'static, Any>, d: &DatasetRow) -> Result<()> {
    sqlx::query(
        "UPDATE eval_datasets SET last_update_time = $3, content = $4 WHERE workspace_id = $1 AND dataset_id = $2",
    )
    .bind(&d.workspace_id)
    .bind(&d.dataset_id)
    .bind(d.last_update_time)
    .bind(d.content.to_string())
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}
