//! Jobs and experiments in the studio: the jobs list (newest first, filtered, paged by a
//! cursor on the store's index, so 10,000 jobs cost the same as 50), a job's page (facts,
//! params, metric charts from sampled history, live log tail, outputs, child jobs), and
//! experiments with their runs, compared side by side (one chart per metric, params diff).

use super::chart::{Series, line_chart};
use super::{Viewer, badge, error_page, page, urlencode, when};
use crate::AppState;
use crate::jobs::Job;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use tarn_core::jobs::{JobQuery, JobStatus};
use tarn_core::tracking::ViewType;

/// Jobs on one page of the list.
const PAGE: i64 = 50;
/// Points per chart: enough to see the shape, however long the history.
const CHART_POINTS: i64 = 400;
/// The log tail shown on a job's page.
const LOG_TAIL: u64 = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws/{workspace}/jobs", get(list))
        .route("/ws/{workspace}/jobs/{name}", get(show))
        .route("/ws/{workspace}/jobs/{name}/log.txt", get(log))
        .route("/ws/{workspace}/experiments", get(experiments))
        .route("/ws/{workspace}/experiments/{id}", get(experiment))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    experiment: Option<String>,
    before: Option<i64>,
}

fn job_link(ws: &str, name: &str) -> String {
    format!("/ws/{}/jobs/{}", urlencode(ws), urlencode(name))
}

fn duration(s: Option<f64>) -> String {
    match s {
        None => String::new(),
        Some(s) if s < 60.0 => format!("{s:.1} s"),
        Some(s) if s < 3600.0 => format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        Some(s) => format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

async fn list(
    State(t): State<AppState>,
    v: Viewer,
    Path(ws): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let experiment = q.experiment.clone().filter(|s| !s.is_empty());
    let query = JobQuery {
        parent: Some(String::new()),
        status: status.and_then(JobStatus::parse),
        limit: Some(PAGE + 1),
        before_seq: q.before,
        experiment: experiment.clone(),
        ..Default::default()
    };
    let mut views = match t.jobs.list_jobs(&v.principal, &ws, &query).await {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let more = views.len() as i64 > PAGE;
    views.truncate(PAGE as usize);
    let next = views.last().map(|j| j.row.seq).filter(|_| more);
    let filters = |before: i64| {
        let mut s = format!("?before={before}");
        if let Some(st) = status {
            s.push_str(&format!("&status={}", urlencode(st)));
        }
        if let Some(e) = &experiment {
            s.push_str(&format!("&experiment={}", urlencode(e)));
        }
        s
    };
    let statuses = [
        "Queued",
        "Preparing",
        "Running",
        "Completed",
        "Failed",
        "Canceled",
    ];
    let content = html! {
        form.filters method="get" aria-label="Filter jobs" {
            label { "Status"
                select name="status" {
                    option value="" { "Any" }
                    @for s in statuses { option value=(s) selected[status == Some(s)] { (s) } }
                }
            }
            label { "Experiment" input name="experiment" value=(experiment.clone().unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        @if views.is_empty() {
            p { "No jobs" @if status.is_some() || experiment.is_some() { " match" } " yet. Submit one with " code { "tarn job create -f job.yml" } "." }
        } @else {
            table {
                caption { "Jobs, newest first" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Display name" } th scope="col" { "Status" }
                    th scope="col" { "Type" } th scope="col" { "Compute" } th scope="col" { "Experiment" }
                    th scope="col" { "Created" } th scope="col" { "Duration" }
                } }
                tbody {
                    @for view in views {
                        @let job = Job::from(view);
                        tr {
                            td { a href=(job_link(&ws, &job.name)) { (job.name) } }
                            td { (job.display_name.clone().unwrap_or_default()) }
                            td { (badge(&job.status)) }
                            td { (job.type_) }
                            td { (job.compute) }
                            td { (job.experiment_name) }
                            td { (job.created_at.get(..19).unwrap_or(&job.created_at).replace('T', " ")) }
                            td.num { (duration(job.duration_s)) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if q.before.is_some() { a href=(format!("/ws/{}/jobs", urlencode(&ws))) { "Newest" } }
                @if let Some(n) = next { a href=(format!("/ws/{}/jobs{}", urlencode(&ws), filters(n))) rel="next" { "Older jobs" } }
            }
        }
    };
    page(&t, &v, Some(&ws), "jobs", "Jobs", content).await
}

async fn show(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
) -> Response {
    let view = match t.jobs.show_job(&v.principal, &ws, &name).await {
        Ok(j) => j,
        Err(e) => return error_page(e),
    };
    let run = view.run.clone().unwrap_or_default();
    // The run's traces: those made in it or linked to it, in its experiment.
    let traces_link = t
        .tracking
        .get_run(&v.principal, &ws, &name)
        .await
        .ok()
        .map(|(r, _)| {
            format!(
                "/ws/{}/experiments/{}/traces?filter={}",
                urlencode(&ws),
                r.experiment_id,
                urlencode(&format!("run_id = '{name}'"))
            )
        });
    let terminal = view.status.is_terminal();
    let job = Job::from(view);
    let mut charts = vec![];
    for m in &run.metrics {
        let points = t
            .tracking
            .metric_chart(&v.principal, &ws, &name, &m.key, CHART_POINTS)
            .await
            .unwrap_or_default();
        charts.push(line_chart(
            &m.key,
            &[Series {
                label: m.key.clone(),
                points: points.iter().map(|p| (p.step, p.value)).collect(),
            }],
        ));
    }
    let children = t
        .jobs
        .list_jobs(
            &v.principal,
            &ws,
            &JobQuery {
                parent: Some(name.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_default();
    let log = tail(&t, &v, &ws, &name).await;
    let content = html! {
        div.card {
            dl.facts {
                dt { "Status" } dd { (badge(&job.status)) }
                @if let Some(d) = &job.display_name { dt { "Display name" } dd { (d) } }
                dt { "Type" } dd { (job.type_) }
                dt { "Compute" } dd { (job.compute) }
                dt { "Experiment" } dd { (job.experiment_name)
                    @if let Some(link) = &traces_link { " · " a href=(link) { "traces of this run" } } }
                dt { "Created" } dd { (job.created_at) " by " (job.created_by) }
                dt { "Duration" } dd { (duration(job.duration_s)) }
                @if !job.nodes.is_empty() { dt { "Nodes" } dd { (job.nodes.join(", ")) } }
                @if let Some(p) = &job.parent { dt { "Parent" } dd { a href=(job_link(&ws, p)) { (p) } } }
                @if let Some(e) = &job.error { dt { "Error" } dd.error { (e) } }
            }
        }
        @if !job.params.is_empty() {
            h2 { "Parameters" }
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                tbody { @for (k, val) in &job.params { tr { td { (k) } td { (val) } } } } }
        }
        @let tags: Vec<&(String, String)> = run.tags.iter().filter(|(k, _)| !k.starts_with("mlflow.")).collect();
        @if !tags.is_empty() {
            h2 { "Tags" }
            table { thead { tr { th scope="col" { "Tag" } th scope="col" { "Value" } } }
                tbody { @for (k, val) in tags { tr { td { (k) } td { (val) } } } } }
        }
        @if !run.metrics.is_empty() {
            h2 { "Metrics" }
            table { thead { tr { th scope="col" { "Metric" } th scope="col" { "Latest" } th scope="col" { "Step" } } }
                tbody { @for m in &run.metrics { tr { td { (m.key) } td.num { (m.value) } td.num { (m.step) } } } } }
            div.charts { @for c in charts { (c) } }
        }
        @if !job.inputs.is_empty() || !job.outputs.is_empty() {
            h2 { "Inputs and outputs" }
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Where" } } }
                tbody {
                    @for (k, val) in &job.inputs { tr { td { (k) } td { "input" } td { code { (val) } } } }
                    @for (k, val) in &job.outputs { tr { td { (k) } td { "output" } td { (browse_link(&ws, val)) } } }
                    tr { td { "artifacts" } td { "run artifacts" } td { (browse_link(&ws, &job.artifacts)) } }
                }
            }
        }
        @if !children.is_empty() {
            h2 { "Child jobs" }
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Duration" } } }
                tbody { @for c in children { @let c = Job::from(c); tr {
                    td { a href=(job_link(&ws, &c.name)) { (c.name) } } td { (badge(&c.status)) } td.num { (duration(c.duration_s)) }
                } } } }
        }
        h2 id="log-heading" { "Log" }
        pre.log id="log" aria-labelledby="log-heading" tabindex="0" data-offset=(log.1) data-live=(if terminal { "no" } else { "yes" }) { (log.0) }
        @if !terminal {
            script { (maud::PreEscaped(LIVE_LOG.replace("{URL}", &format!("{}/log.txt", job_link(&ws, &name))))) }
        }
    };
    page(&t, &v, Some(&ws), "jobs", &format!("Job {name}"), content).await
}

/// Appends new log text every second while the job runs.
const LIVE_LOG: &str = r#"(function(){var pre=document.getElementById('log');var off=+pre.dataset.offset;
function poll(){fetch('{URL}?offset='+off,{credentials:'same-origin'}).then(function(r){var done=r.headers.get('x-tarn-job-done')==='yes';
var size=+r.headers.get('x-tarn-log-size');return r.text().then(function(t){if(t){pre.textContent+=t;pre.scrollTop=pre.scrollHeight;}off=size||off;if(!done)setTimeout(poll,1000);});});}
setTimeout(poll,1000);})();"#;

/// A datastore URI as a link into the datastore browser.
fn browse_link(ws: &str, uri: &str) -> maud::Markup {
    match tarn_spec::uri::parse(uri) {
        Ok(tarn_spec::uri::DataUri::Datastore {
            datastore, path, ..
        }) => html! {
            a href=(format!("/ws/{}/datastores/{}?path={}", urlencode(ws), urlencode(&datastore), urlencode(path.as_str()))) { code { (uri) } }
        },
        _ => html! { code { (uri) } },
    }
}

/// The end of a job's log, and the offset after it.
async fn tail(t: &AppState, v: &Viewer, ws: &str, name: &str) -> (String, u64) {
    let zero = std::time::Duration::ZERO;
    let Ok(end) = t
        .jobs
        .read_log(&v.principal, ws, name, u64::MAX, zero)
        .await
    else {
        return (String::new(), 0);
    };
    let from = end.size.saturating_sub(LOG_TAIL);
    let mut text = String::new();
    let mut offset = from;
    while offset < end.size {
        let Ok(chunk) = t.jobs.read_log(&v.principal, ws, name, offset, zero).await else {
            break;
        };
        if chunk.data.is_empty() {
            break;
        }
        offset += chunk.data.len() as u64;
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    if from > 0 {
        text = format!(
            "… (the log's last {} KiB)\n{}",
            LOG_TAIL / 1024,
            text.split_once('\n').map_or("", |(_, r)| r)
        );
    }
    (text, offset)
}

#[derive(Deserialize)]
struct LogQuery {
    offset: Option<u64>,
}

async fn log(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    match t
        .jobs
        .read_log(
            &v.principal,
            &ws,
            &name,
            q.offset.unwrap_or(0),
            std::time::Duration::from_secs(0),
        )
        .await
    {
        Ok(chunk) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (
                    header::HeaderName::from_static("x-tarn-log-size"),
                    chunk.size.to_string(),
                ),
                (
                    header::HeaderName::from_static("x-tarn-job-done"),
                    if chunk.status.is_terminal() {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                ),
            ],
            chunk.data,
        )
            .into_response(),
        Err(e) => error_page(e),
    }
}

async fn experiments(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    let list = match t
        .tracking
        .search_experiments(&v.principal, &ws, ViewType::ActiveOnly, "", &[])
        .await
    {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let content = html! {
        table {
            caption { "Experiments (each job is a run in its experiment)" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Last update" } } }
            tbody { @for e in &list { tr {
                td { a href=(format!("/ws/{}/experiments/{}", urlencode(&ws), e.experiment_id)) { (e.name) } }
                td.num { (e.experiment_id) }
                td { (when(e.last_update_time)) }
            } } }
        }
    };
    page(&t, &v, Some(&ws), "experiments", "Experiments", content).await
}

/// An experiment's runs; with `run=a&run=b` (and `metric=`), those runs compared.
async fn experiment(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    let picked: Vec<String> = query_values(uri.query().unwrap_or(""), "run");
    let title = match t.tracking.get_experiment(&v.principal, &ws, &id).await {
        Ok(e) => format!("Experiment {}", e.name),
        Err(e) => return error_page(e),
    };
    let (runs, _) = match t
        .tracking
        .search_runs(
            &v.principal,
            &ws,
            std::slice::from_ref(&id),
            "",
            ViewType::ActiveOnly,
            Some(200),
            &[],
            0,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    // Its logged models (MLflow 3), each linked to the traces made with it.
    let models = match t
        .tracking
        .search_logged_models(&v.principal, &ws, std::slice::from_ref(&id), "", &[], &[])
        .await
    {
        Ok(m) => m,
        Err(e) => return error_page(e),
    };
    let traces_of = |filter: String| {
        format!(
            "/ws/{}/experiments/{}/traces?filter={}",
            urlencode(&ws),
            urlencode(&id),
            urlencode(&filter)
        )
    };
    let compared: Vec<_> = runs
        .iter()
        .filter(|(r, _)| picked.contains(&r.run_id))
        .collect();
    let mut metric_keys: BTreeSet<String> = BTreeSet::new();
    let mut param_keys: BTreeSet<String> = BTreeSet::new();
    for (_, d) in &compared {
        metric_keys.extend(d.metrics.iter().map(|m| m.key.clone()));
        param_keys.extend(d.params.iter().map(|(k, _)| k.clone()));
    }
    let mut charts = vec![];
    for key in &metric_keys {
        let mut series = vec![];
        for (r, _) in &compared {
            let points = t
                .tracking
                .metric_chart(&v.principal, &ws, &r.run_id, key, CHART_POINTS)
                .await
                .unwrap_or_default();
            series.push(Series {
                label: r.run_id.clone(),
                points: points.iter().map(|p| (p.step, p.value)).collect(),
            });
        }
        charts.push(line_chart(key, &series));
    }
    let params: BTreeMap<&String, Vec<Option<&String>>> = param_keys
        .iter()
        .map(|k| {
            let values = compared
                .iter()
                .map(|(_, d)| d.params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v))
                .collect();
            (k, values)
        })
        .collect();
    let content = html! {
        p {
            a href=(format!("/ws/{}/experiments/{}/traces", urlencode(&ws), urlencode(&id))) { "Traces of this experiment" } " · "
            a href=(format!("/ws/{}/experiments/{}/datasets", urlencode(&ws), urlencode(&id))) { "Evaluation datasets of this experiment" }
        }
        form method="get" {
            table {
                caption { "Runs (pick two or more to compare)" }
                thead { tr { th scope="col" { "Compare" } th scope="col" { "Run" } th scope="col" { "Status" } th scope="col" { "Started" } th scope="col" { "Metrics" } } }
                tbody { @for (r, d) in &runs { tr {
                    td { input type="checkbox" name="run" value=(r.run_id) id=(format!("run-{}", r.run_id)) checked[picked.contains(&r.run_id)]
                        aria-label=(format!("Compare {}", r.run_id)); }
                    td { a href=(job_link(&ws, &r.run_id)) { (r.run_id) } @if !r.run_name.is_empty() && r.run_name != r.run_id { " " span.muted { (r.run_name) } }
                        " " a.muted href=(traces_of(format!("run_id = '{}'", r.run_id))) aria-label=(format!("Traces of {}", r.run_id)) { "traces" } }
                    td { (badge(&r.status)) }
                    td { (r.start_time.map(when).unwrap_or_default()) }
                    td { (d.metrics.iter().map(|m| format!("{}={}", m.key, m.value)).collect::<Vec<_>>().join(", ")) }
                } } }
            }
            button type="submit" { "Compare" }
        }
        @if !models.is_empty() {
            table {
                caption { "Logged models" }
                thead { tr { th scope="col" { "Model" } th scope="col" { "Status" } th scope="col" { "Source run" } th scope="col" { "Created" } th scope="col" { "Traces" } } }
                tbody { @for m in &models { tr {
                    td { (m.name) " " span.muted { (m.model_id) } }
                    td { (badge(m.status.trim_start_matches("LOGGED_MODEL_"))) }
                    td { @if !m.source_run_id.is_empty() { a href=(job_link(&ws, &m.source_run_id)) { (m.source_run_id) } } }
                    td { (when(m.creation_time)) }
                    td { a href=(traces_of(format!("metadata.`mlflow.modelId` = '{}'", m.model_id))) aria-label=(format!("Traces of {}", m.model_id)) { "traces" } }
                } } }
            }
        }
        @if compared.len() > 1 {
            h2 { "Metrics, overlaid" }
            div.charts { @for c in charts { (c) } }
            h2 { "Parameters" }
            table {
                thead { tr { th scope="col" { "Parameter" } @for (r, _) in &compared { th scope="col" { (r.run_id) } } } }
                tbody { @for (k, values) in &params {
                    @let differs = values.iter().collect::<BTreeSet<_>>().len() > 1;
                    tr class=[differs.then_some("differs")] {
                        th scope="row" { (k) @if differs { " " span.badge { "differs" } } }
                        @for val in values { td { (val.map(String::as_str).unwrap_or("—")) } }
                    }
                } }
            }
        }
    };
    page(&t, &v, Some(&ws), "experiments", &title, content).await
}

/// Every value of `key` in a query string (`run=a&run=b`).
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| crate::mlflow::decode(v))
        .collect()
}
