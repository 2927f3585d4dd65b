//! Traces in the studio: an experiment's traces (MLflow's trace filter, newest first, paged),
//! and a trace's page — its facts, its spans as a timeline (nested by parent, each bar placed
//! and sized by its start and duration within the trace; inputs, outputs, attributes and
//! events folded under each span) and its assessments, which a Data Scientist adds, changes
//! and deletes here (a Reader sees them; the service refuses the Reader's forms).

use super::{Viewer, badge, error_page, page, urlencode, when};
use crate::AppState;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use tarn_core::traces::{SpanRow, Trace, TraceSearch};

/// Traces per page of the list.
const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws/{workspace}/experiments/{id}/traces", get(list))
        .route("/ws/{workspace}/traces/{trace}", get(show))
        .route(
            "/ws/{workspace}/traces/{trace}/assessments",
            post(add_assessment),
        )
        .route(
            "/ws/{workspace}/traces/{trace}/assessments/{assessment}",
            post(change_assessment),
        )
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    filter: String,
    /// The page token of the page before (none: the newest traces).
    #[serde(default)]
    page: String,
}

/// `1.234 s` or `56 ms`.
fn millis(ms: Option<i64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms >= 1000 => format!("{:.3} s", ms as f64 / 1000.0),
        Some(ms) => format!("{ms} ms"),
    }
}

/// A run in its experiment's page (any run: a job's, or one a client made).
fn run_link(ws: &str, experiment_id: i64, run: &str) -> String {
    format!(
        "/ws/{}/experiments/{experiment_id}?run={}",
        urlencode(ws),
        urlencode(run)
    )
}

fn tag<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn list(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let title = match t.tracking.get_experiment(&v.principal, &ws, &id).await {
        Ok(e) => format!("Traces of {}", e.name),
        Err(e) => return error_page(e),
    };
    let search = TraceSearch {
        experiment_ids: vec![id.clone()],
        filter: q.filter.clone(),
        order_by: vec![],
        max_results: PAGE,
        page_token: Some(q.page.clone()),
    };
    let (found, error) = match t.traces.search(&v.principal, &ws, &search).await {
        Ok(r) => (r, None),
        Err(e) => ((vec![], None), Some(e.to_string())),
    };
    let (traces, next) = found;
    let base = format!(
        "/ws/{}/experiments/{}/traces",
        urlencode(&ws),
        urlencode(&id)
    );
    let content = html! {
        form.filters method="get" action=(base) {
            label { "Filter (MLflow's trace filter, e.g. " code { "trace.status = 'ERROR'" } ", "
                code { "span.name = 'retrieve'" } ", " code { "tags.env = 'prod'" } ", "
                code { "run_id = '…'" } ")"
                input name="filter" value=(q.filter) size="60"; }
            button type="submit" { "Search" }
        }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        table {
            caption { "Traces, newest first" }
            thead { tr {
                th scope="col" { "Trace" } th scope="col" { "Name" } th scope="col" { "Status" }
                th scope="col" { "Started" } th scope="col" { "Duration" } th scope="col" { "Request" }
                th scope="col" { "Run" } th scope="col" { "Assessments" }
            } }
            tbody { @for i in &traces { tr {
                td { a href=(format!("/ws/{}/traces/{}", urlencode(&ws), urlencode(&i.trace_id))) { (i.trace_id) } }
                td { (tag(&i.tags, "mlflow.traceName").unwrap_or("")) }
                td { (badge(&i.state)) }
                td { (when(i.request_time)) }
                td.num { (millis(i.execution_duration)) }
                td.preview { (i.request_preview.as_deref().unwrap_or("").chars().take(120).collect::<String>()) }
                td { @if let Some(run) = tag(&i.metadata, "mlflow.sourceRun") {
                    a href=(run_link(&ws, i.experiment_id, run)) { (run) } } }
                td.num { (i.assessments.len()) }
            } } }
        }
        @if traces.is_empty() { p { "No traces" @if !q.filter.is_empty() { " match" } " yet. Trace a function with " code { "@mlflow.trace" } "." } }
        nav.pages {
            @if !q.page.is_empty() {
                a href=(format!("{base}?filter={}", urlencode(&q.filter))) { "Newest" } " "
            }
            @if let Some(n) = next { a href=(format!("{base}?filter={}&page={}", urlencode(&q.filter), urlencode(&n))) { "Older" } }
        }
    };
    page(&t, &v, Some(&ws), "experiments", &title, content).await
}

/// A span's attributes as (key, JSON value): MLflow writes each as JSON text in a string.
fn attributes(span: &Json) -> Vec<(String, Json)> {
    span["attributes"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|kv| {
                    let key = kv["key"].as_str().unwrap_or_default().to_string();
                    let value = &kv["value"];
                    let v = match value.get("string_value").and_then(Json::as_str) {
                        Some(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
                        None => value
                            .as_object()
                            .and_then(|o| o.values().next().cloned())
                            .unwrap_or(Json::Null),
                    };
                    (key, v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pretty(v: &Json) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Spans in tree order (parent before children, siblings by start), with their depth.
fn tree(spans: &[SpanRow]) -> Vec<(usize, &SpanRow)> {
    fn walk<'a>(
        spans: &'a [SpanRow],
        parent: Option<&str>,
        depth: usize,
        out: &mut Vec<(usize, &'a SpanRow)>,
    ) {
        for s in spans.iter().filter(|s| s.parent_id.as_deref() == parent) {
            out.push((depth, s));
            walk(spans, Some(&s.span_id), depth + 1, out);
        }
    }
    let mut out = vec![];
    // Roots: no parent, or a parent not among the spans (a trace still arriving).
    for s in spans.iter().filter(|s| {
        s.parent_id
            .as_ref()
            .is_none_or(|p| !spans.iter().any(|o| &o.span_id == p))
    }) {
        out.push((0, s));
        walk(spans, Some(&s.span_id), 1, &mut out);
    }
    out
}

fn timeline(trace: &Trace) -> Markup {
    let spans = &trace.spans;
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_ns.unwrap_or(s.start_ns))
        .max()
        .unwrap_or(start);
    let total = (end - start).max(1) as f64;
    html! {
        ol.spans aria-label="Spans, as a timeline" {
            @for (depth, s) in tree(spans) {
                @let content: Json = serde_json::from_str(&s.content).unwrap_or(Json::Null);
                @let attrs = attributes(&content);
                @let left = (s.start_ns - start) as f64 / total * 100.0;
                @let width = ((s.end_ns.unwrap_or(end) - s.start_ns) as f64 / total * 100.0).max(0.5);
                li.span style=(format!("margin-left: {}em", depth * 2)) {
                    div.span-head {
                        strong { (s.name) } " "
                        @if let Some(kind) = &s.span_type { span.muted { (kind) } " " }
                        (badge(&s.status)) " "
                        span.num { (millis(s.end_ns.map(|e| (e - s.start_ns) / 1_000_000))) }
                    }
                    div.bar-track { div.bar style=(format!("margin-left: {left:.2}%; width: {width:.2}%")) {} }
                    @for (label, key) in [("Inputs", "mlflow.spanInputs"), ("Outputs", "mlflow.spanOutputs")] {
                        @if let Some((_, value)) = attrs.iter().find(|(k, _)| k == key) {
                            details { summary { (label) } pre { (pretty(value)) } }
                        }
                    }
                    @let others: Vec<&(String, Json)> = attrs.iter().filter(|(k, _)| !k.starts_with("mlflow.span") && k != "mlflow.traceRequestId").collect();
                    @if !others.is_empty() {
                        details { summary { "Attributes" }
                            table { tbody { @for (k, val) in others { tr { th scope="row" { (k) } td { code { (val.to_string()) } } } } } }
                        }
                    }
                    @if let Some(events) = content["events"].as_array().filter(|e| !e.is_empty()) {
                        details { summary { "Events (" (events.len()) ")" }
                            @for e in events {
                                p { strong { (e["name"].as_str().unwrap_or("")) } }
                                @for (k, val) in attributes(e) { pre { (k) ": " (val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string())) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn show(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id)): Path<(String, String)>,
) -> Response {
    let trace = match t
        .traces
        .get_traces(&v.principal, &ws, std::slice::from_ref(&id))
        .await
    {
        Ok(mut found) => match found.pop() {
            Some(trace) => trace,
            None => return error_page(tarn_core::Error::not_found(format!("Trace '{id}'"))),
        },
        Err(e) => return error_page(e),
    };
    let r = &trace.info;
    let action = format!(
        "/ws/{}/traces/{}/assessments",
        urlencode(&ws),
        urlencode(&id)
    );
    let content = html! {
        div.card {
            dl.facts {
                dt { "Status" } dd { (badge(&r.state)) }
                dt { "Started" } dd { (when(r.request_time)) }
                dt { "Duration" } dd { (millis(r.execution_duration)) }
                dt { "Experiment" } dd { a href=(format!("/ws/{}/experiments/{}/traces", urlencode(&ws), r.experiment_id)) { (r.experiment_id) } }
                @if let Some(run) = tag(&r.metadata, "mlflow.sourceRun") {
                    dt { "Run" } dd { a href=(run_link(&ws, r.experiment_id, run)) { (run) } }
                }
                @if let Some(model) = tag(&r.metadata, "mlflow.modelId") { dt { "Logged model" } dd { (model) } }
            }
        }
        h2 { "Spans" }
        (timeline(&trace))
        h2 { "Assessments" }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Value" } th scope="col" { "Source" } th scope="col" { "Rationale" } th scope="col" { "Change" } } }
            tbody { @for a in &trace.info.assessments {
                @let aid = a["assessment_id"].as_str().unwrap_or_default();
                @let kind = if a.get("feedback").is_some() { "feedback" } else { "expectation" };
                @let valid = a["valid"].as_bool() != Some(false);
                tr class=[(!valid).then_some("overridden")] {
                    td { (a["assessment_name"].as_str().unwrap_or("")) @if !valid { " " span.badge { "overridden" } } }
                    td { (kind) }
                    td { code { (a[kind]["value"].to_string()) } }
                    td { (a["source"]["source_type"].as_str().unwrap_or("")) " " (a["source"]["source_id"].as_str().unwrap_or("")) }
                    td { (a["rationale"].as_str().unwrap_or("")) }
                    td {
                        form.inline method="post" action=(format!("{action}/{}", urlencode(aid))) {
                            input type="hidden" name="csrf" value=(v.csrf);
                            input name="value" aria-label=(format!("New value of {aid}")) placeholder="new value (JSON)";
                            button type="submit" name="op" value="update" { "Update" } " "
                            button type="submit" name="op" value="delete" { "Delete" }
                        }
                    }
                }
            } }
        }
        form method="post" action=(action) {
            fieldset {
                legend { "Add an assessment" }
                input type="hidden" name="csrf" value=(v.csrf);
                label { "Name " input name="name" required; }
                label { "Kind " select name="kind" { option value="feedback" { "feedback" } option value="expectation" { "expectation" } } }
                label { "Value (JSON: true, 0.8, \"text\") " input name="value" required; }
                label { "Rationale " input name="rationale"; }
                button type="submit" { "Add" }
            }
        }
        @if !r.tags.is_empty() {
            h2 { "Tags" }
            table { tbody { @for (k, val) in &r.tags { tr { th scope="row" { (k) } td { (val) } } } } }
        }
    };
    page(
        &t,
        &v,
        Some(&ws),
        "experiments",
        &format!("Trace {id}"),
        content,
    )
    .await
}

#[derive(Deserialize)]
struct NewAssessment {
    csrf: String,
    name: String,
    kind: String,
    value: String,
    #[serde(default)]
    rationale: String,
}

/// A value as typed: JSON if it reads as JSON, else the text itself.
fn typed(value: &str) -> Json {
    serde_json::from_str(value).unwrap_or_else(|_| json!(value))
}

async fn add_assessment(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id)): Path<(String, String)>,
    Form(f): Form<NewAssessment>,
) -> Response {
    if let Some(r) = v.csrf_refusal(&f.csrf) {
        return r;
    }
    let kind = if f.kind == "expectation" {
        "expectation"
    } else {
        "feedback"
    };
    let mut a = Map::new();
    a.insert("assessment_name".into(), json!(f.name));
    a.insert(kind.into(), json!({"value": typed(&f.value)}));
    a.insert(
        "source".into(),
        json!({"source_type": "HUMAN", "source_id": v.principal.name}),
    );
    if !f.rationale.is_empty() {
        a.insert("rationale".into(), json!(f.rationale));
    }
    match t.traces.create_assessment(&v.principal, &ws, &id, a).await {
        Ok(_) => back(&ws, &id),
        Err(e) => error_page(e),
    }
}

#[derive(Deserialize)]
struct ChangeAssessment {
    csrf: String,
    op: String,
    #[serde(default)]
    value: String,
}

async fn change_assessment(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id, aid)): Path<(String, String, String)>,
    Form(f): Form<ChangeAssessment>,
) -> Response {
    if let Some(r) = v.csrf_refusal(&f.csrf) {
        return r;
    }
    let done = if f.op == "delete" {
        t.traces
            .delete_assessment(&v.principal, &ws, &id, &aid)
            .await
    } else {
        let current = match t.traces.get_assessment(&v.principal, &ws, &id, &aid).await {
            Ok(a) => a,
            Err(e) => return error_page(e),
        };
        let kind = if current.get("feedback").is_some() {
            "feedback"
        } else {
            "expectation"
        };
        let mut change = Map::new();
        change.insert(kind.into(), json!({"value": typed(&f.value)}));
        t.traces
            .update_assessment(&v.principal, &ws, &id, &aid, change, &[kind.to_string()])
            .await
            .map(|_| ())
    };
    match done {
        Ok(()) => back(&ws, &id),
        Err(e) => error_page(e),
    }
}

fn back(ws: &str, id: &str) -> Response {
    Redirect::to(&format!("/ws/{}/traces/{}", urlencode(ws), urlencode(id))).into_response()
}
