//! The studio's resource pages: computes (state, nodes, start/stop, open JupyterLab), endpoints
//! (deployments, traffic, per-deployment counts, a test-invoke box that goes through the same
//! router as any client), models (versions, the job each came from), data, environments,
//! schedules (next and last run, enable and disable), and datastores with a file browser.

use super::{Viewer, badge, error_page, page, urlencode, when};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value as Json;
use tarn_core::{ResourceView, Scope};
use tarn_spec::Kind;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws/{workspace}/computes", get(computes))
        .route("/ws/{workspace}/computes/{name}/state", post(compute_state))
        .route("/ws/{workspace}/schedules", get(schedules))
        .route(
            "/ws/{workspace}/schedules/{name}/enabled",
            post(schedule_enabled),
        )
        .route("/ws/{workspace}/endpoints", get(endpoints))
        .route("/ws/{workspace}/endpoints/{name}", get(endpoint))
        .route("/ws/{workspace}/endpoints/{name}/test", post(test_invoke))
        .route("/ws/{workspace}/models", get(models))
        .route("/ws/{workspace}/data", get(data))
        .route("/ws/{workspace}/environments", get(environments))
        .route("/ws/{workspace}/datastores", get(datastores))
        .route("/ws/{workspace}/datastores/{name}", get(browse))
        .route("/ws/{workspace}/datastores/{name}/file", get(download))
        .route("/ws/{workspace}/audit", get(audit))
}

fn scope(ws: &str, kind: Kind) -> Scope<'_> {
    Scope {
        workspace: ws,
        kind,
        parent: None,
    }
}

async fn list(
    t: &AppState,
    v: &Viewer,
    ws: &str,
    kind: Kind,
) -> Result<Vec<ResourceView>, Response> {
    t.resources
        .list_resources(&v.principal, scope(ws, kind), None, false)
        .await
        .map_err(error_page)
}

fn text<'a>(spec: &'a Json, field: &str) -> &'a str {
    spec.pointer(field).and_then(Json::as_str).unwrap_or("")
}

async fn computes(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    let rows = match list(&t, &v, &ws, Kind::Compute).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    // Engines' computes: their nodes (asked of the engine, briefly) and Tarn's queue for them.
    let queued = t
        .jobs
        .list_jobs(
            &v.principal,
            &ws,
            &tarn_core::jobs::JobQuery {
                status: Some(tarn_core::jobs::JobStatus::Queued),
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_default();
    let mut engines = std::collections::HashMap::new();
    for r in &rows {
        let spec = tarn_spec::compute::ComputeSpec::parse(&r.row.spec);
        if matches!(spec.engine(), "local" | "none") {
            continue;
        }
        let name = r.row.key.name.clone();
        let limit = std::time::Duration::from_secs(3);
        let nodes =
            tokio::time::timeout(limit, t.jobs.compute_nodes(&v.principal, &ws, &name)).await;
        let (shown, size) = match nodes {
            Ok(Ok(nodes)) => {
                let busy = nodes.iter().filter(|n| n.job.is_some()).count();
                let sum = |f: fn(&tarn_core::jobs::NodeCapacity) -> u64| -> u64 {
                    nodes
                        .iter()
                        .filter_map(|n| n.capacity.as_ref())
                        .map(f)
                        .sum()
                };
                let gpus = sum(|c| c.gpus as u64);
                let mut size = format!(
                    "{} CPUs, {} GiB",
                    sum(|c| c.cpus as u64),
                    sum(|c| c.memory_mb) / 1024
                );
                match gpus {
                    0 => {}
                    1 => size.push_str(", 1 GPU"),
                    n => size.push_str(&format!(", {n} GPUs")),
                }
                let types = tokio::time::timeout(
                    limit,
                    t.jobs.compute_instance_types(&v.principal, &ws, &name),
                )
                .await;
                if let Ok(Ok(types)) = types
                    && !types.is_empty()
                {
                    let mut names: Vec<String> = types.into_iter().map(|(n, _)| n).collect();
                    names.sort();
                    size.push_str(&format!("; instance types: {}", names.join(", ")));
                }
                (
                    format!("{} nodes, {busy} running Tarn jobs", nodes.len()),
                    size,
                )
            }
            Ok(Err(e)) => (format!("unreachable: {e}"), String::new()),
            Err(_) => ("no answer in 3 s".to_string(), String::new()),
        };
        let waiting = queued.iter().filter(|j| j.row.compute == name).count();
        engines.insert(name, (spec.engine(), shown, waiting, size));
    }
    let content = html! {
        @if rows.is_empty() { p { "No computes yet: " code { "tarn compute create -f compute.yml" } "." } }
        @else {
            table {
                caption { "Computes: clusters, compute instances and attached ones" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Engine" } th scope="col" { "State" } th scope="col" { "Size" } th scope="col" { "Actions" } } }
                tbody { @for r in &rows {
                    @let name = &r.row.key.name;
                    @let kind = text(&r.row.spec, "/type");
                    @let instance = kind == "computeinstance";
                    @let state = if instance { t.computes.instance_status(&r.row.key.workspace_id, name).map_or("Stopped", |s| s.state) } else { "" };
                    @let nodes = if instance { String::new() } else {
                        format!("{}–{} nodes", r.row.spec.get("min_instances").and_then(Json::as_u64).unwrap_or(0),
                            r.row.spec.get("max_instances").and_then(Json::as_u64).unwrap_or(1))
                    };
                    @let engine = engines.get(name.as_str());
                    tr {
                        td { (name) }
                        td { (kind) }
                        td { (engine.map_or("local", |e| e.0)) }
                        td {
                            @if instance { (badge(state)) }
                            @else if let Some((_, shown, waiting, _)) = engine { (shown) ", " (waiting) " queued" }
                            @else { (nodes) }
                        }
                        td { @if let Some((_, _, _, size)) = engine { (size) } @else { (text(&r.row.spec, "/size")) } }
                        td {
                            @if instance {
                                @if state == "Running" {
                                    a.button href=(tarn_core::computes::lab_path(&ws, name)) { "Open JupyterLab" } " "
                                }
                                form.inline method="post" action=(format!("/ws/{}/computes/{}/state", urlencode(&ws), urlencode(name))) {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    @if matches!(state, "Running" | "Starting" | "Creating") {
                                        button.secondary type="submit" name="action" value="stop" aria-label=(format!("Stop {name}")) { "Stop" }
                                    } @else {
                                        button.secondary type="submit" name="action" value="start" aria-label=(format!("Start {name}")) { "Start" }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
    };
    page(&t, &v, Some(&ws), "computes", "Computes", content).await
}

#[derive(Deserialize)]
struct StateForm {
    csrf: String,
    action: String,
}

async fn compute_state(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
    Form(f): Form<StateForm>,
) -> Response {
    if let Some(r) = v.csrf_refusal(&f.csrf) {
        return r;
    }
    let action = match f.action.as_str() {
        "start" => tarn_core::computes::InstanceAction::Start,
        "stop" => tarn_core::computes::InstanceAction::Stop,
        _ => tarn_core::computes::InstanceAction::Restart,
    };
    match t
        .computes
        .compute_instance_action(&v.principal, &ws, &name, action)
        .await
    {
        Ok(()) => Redirect::to(&format!("/ws/{}/computes", urlencode(&ws))).into_response(),
        Err(e) => error_page(e),
    }
}

/// A schedule's trigger in a few words: `cron 0 * * * * (Pacific Standard Time)`.
fn trigger_text(spec: &Json) -> String {
    let tz = text(spec, "/trigger/time_zone");
    let rule = match text(spec, "/trigger/type") {
        "recurrence" => format!(
            "every {} {}",
            spec.pointer("/trigger/interval")
                .and_then(Json::as_i64)
                .unwrap_or(1),
            text(spec, "/trigger/frequency")
        ),
        _ => format!("cron {}", text(spec, "/trigger/expression")),
    };
    if tz.is_empty() {
        rule
    } else {
        format!("{rule} ({tz})")
    }
}

async fn schedules(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    let rows = match list(&t, &v, &ws, Kind::Schedule).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut shown = vec![];
    for r in rows {
        match t.schedules.status(&v.principal, &ws, &r.row, true).await {
            Ok(status) => shown.push((r, status)),
            Err(e) => return error_page(e),
        }
    }
    let content = html! {
        @if shown.is_empty() { p { "No schedules yet: " code { "tarn schedule create -f schedule.yml" } "." } }
        @else {
            table {
                caption { "Schedules: jobs fired on a trigger" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Trigger" } th scope="col" { "State" } th scope="col" { "Next run" } th scope="col" { "Last run" } th scope="col" { "Actions" } } }
                tbody { @for (r, s) in &shown {
                    @let name = &r.row.key.name;
                    tr {
                        td { (name) }
                        td { code { (trigger_text(&r.row.spec)) } }
                        td {
                            (badge(if s.is_enabled { "Enabled" } else { "Disabled" }))
                            @if let Some(e) = &s.last_error { br; small.error { "last fire failed: " (e) } }
                        }
                        td { @if let Some(next) = s.next_fires.first() { (when(*next)) } @else { "—" } }
                        td {
                            @if let Some(j) = s.recent_jobs.first() {
                                a href=(format!("/ws/{}/jobs/{}", urlencode(&ws), urlencode(&j.row.name))) { (j.row.name) }
                                " " (badge(j.status.as_str()))
                            } @else { "—" }
                        }
                        td {
                            form.inline method="post" action=(format!("/ws/{}/schedules/{}/enabled", urlencode(&ws), urlencode(name))) {
                                input type="hidden" name="csrf" value=(v.csrf);
                                @if s.is_enabled {
                                    button.secondary type="submit" name="action" value="disable" aria-label=(format!("Disable {name}")) { "Disable" }
                                } @else {
                                    button.secondary type="submit" name="action" value="enable" aria-label=(format!("Enable {name}")) { "Enable" }
                                }
                            }
                        }
                    }
                } }
            }
        }
    };
    page(&t, &v, Some(&ws), "schedules", "Schedules", content).await
}

async fn schedule_enabled(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
    Form(f): Form<StateForm>,
) -> Response {
    if let Some(r) = v.csrf_refusal(&f.csrf) {
        return r;
    }
    let enabled = f.action == "enable";
    match t
        .schedules
        .set_enabled(&v.principal, &ws, &name, enabled)
        .await
    {
        Ok(_) => Redirect::to(&format!("/ws/{}/schedules", urlencode(&ws))).into_response(),
        Err(e) => error_page(e),
    }
}

async fn endpoints(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    let online = match list(&t, &v, &ws, Kind::OnlineEndpoint).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let batch = match list(&t, &v, &ws, Kind::BatchEndpoint).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let content = html! {
        h2 { "Online endpoints" }
        @if online.is_empty() { p { "None yet: " code { "tarn online-endpoint create -f endpoint.yml" } "." } }
        @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Auth" } th scope="col" { "Traffic" } th scope="col" { "Scoring URI" } } }
                tbody { @for e in &online { tr {
                    td { a href=(format!("/ws/{}/endpoints/{}", urlencode(&ws), urlencode(&e.row.key.name))) { (e.row.key.name) } }
                    td { (text(&e.row.spec, "/auth_mode")) }
                    td { (traffic(&e.row.spec)) }
                    td { code { (t.endpoints.scoring_uri(&e.row.key.name)) } }
                } } }
            }
        }
        h2 { "Batch endpoints" }
        @if batch.is_empty() { p { "None yet: " code { "tarn batch-endpoint create -f endpoint.yml" } "." } }
        @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Default deployment" } th scope="col" { "Jobs" } } }
                tbody { @for e in &batch { tr {
                    td { (e.row.key.name) }
                    td { (text(&e.row.spec, "/defaults/deployment_name")) }
                    td { a href=(format!("/ws/{}/jobs?experiment={}", urlencode(&ws), urlencode(&e.row.key.name))) { "its jobs" } }
                } } }
            }
        }
    };
    page(&t, &v, Some(&ws), "endpoints", "Endpoints", content).await
}

fn traffic(spec: &Json) -> String {
    spec.get("traffic")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}%"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// An online endpoint's page; `result` is a test-invoke's answer to show.
async fn endpoint_page(
    t: &AppState,
    v: &Viewer,
    ws: &str,
    name: &str,
    sent: Option<&str>,
    result: Option<Markup>,
) -> Response {
    let ep = match t
        .resources
        .show_resource(&v.principal, scope(ws, Kind::OnlineEndpoint), name, None)
        .await
    {
        Ok(e) => e,
        Err(e) => return error_page(e),
    };
    let deployments = t
        .resources
        .list_resources(
            &v.principal,
            Scope {
                workspace: ws,
                kind: Kind::OnlineDeployment,
                parent: Some(name),
            },
            None,
            false,
        )
        .await
        .unwrap_or_default();
    let metrics = tarn_core::endpoints::routes::render_metrics(t.endpoints.routes());
    let requests = |dep: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("tarn_endpoint_requests_total{")
                    && l.contains(&format!("endpoint=\"{name}\""))
                    && l.contains(&format!("deployment=\"{dep}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let ws_id = ep.row.key.workspace_id.clone();
    let content = html! {
        div.card { dl.facts {
            dt { "Scoring URI" } dd { code { (t.endpoints.scoring_uri(name)) } }
            dt { "Auth" } dd { (text(&ep.row.spec, "/auth_mode")) }
            dt { "Traffic" } dd { (traffic(&ep.row.spec)) }
            @let mirror = ep.row.spec.get("mirror_traffic").map(|m| traffic(&serde_json::json!({"traffic": m}))).unwrap_or_default();
            @if !mirror.is_empty() { dt { "Mirror traffic" } dd { (mirror) } }
        } }
        h2 { "Deployments" }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Replicas ready" } th scope="col" { "Model" } th scope="col" { "Requests" } } }
            tbody { @for d in &deployments {
                @let dn = &d.row.key.name;
                @let status = t.endpoints.deployment_status(&ws_id, name, dn, &d.row.spec);
                tr {
                    td { (dn) }
                    td { (badge(status.as_ref().map_or("Creating", |s| s.provisioning_state))) }
                    td.num { (status.as_ref().map_or(0, |s| s.replicas.iter().filter(|r| r.state == "Ready").count())) " / " (d.row.spec.get("instance_count").and_then(Json::as_u64).unwrap_or(1)) }
                    td { (model_text(&d.row.spec)) }
                    td.num { (requests(dn)) }
                }
            } }
        }
        h2 id="test-heading" { "Test" }
        form method="post" action=(format!("/ws/{}/endpoints/{}/test", urlencode(ws), urlencode(name))) aria-labelledby="test-heading" {
            input type="hidden" name="csrf" value=(v.csrf);
            label for="test-body" { "Request body (JSON)" }
            textarea id="test-body" name="body" rows="6" {
                (sent.unwrap_or("{\"input_data\": {\"columns\": [], \"index\": [0], \"data\": [[]]}}"))
            }
            p {
                label for="test-deployment" { "Deployment " }
                select id="test-deployment" name="deployment" {
                    option value="" { "By traffic" }
                    @for d in &deployments { option value=(d.row.key.name) { (d.row.key.name) } }
                }
                " "
                button type="submit" { "Send" }
            }
        }
        @if let Some(r) = result { (r) }
    };
    page(
        t,
        v,
        Some(ws),
        "endpoints",
        &format!("Endpoint {name}"),
        content,
    )
    .await
}

fn model_text(spec: &Json) -> String {
    match spec.get("model") {
        Some(Json::String(s)) => s.clone(),
        Some(m) => text(m, "/path").to_string(),
        None => String::new(),
    }
}

async fn endpoint(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
) -> Response {
    endpoint_page(&t, &v, &ws, &name, None, None).await
}

#[derive(Deserialize)]
struct TestForm {
    csrf: String,
    body: String,
    deployment: Option<String>,
}

/// Sends the body through the router with the endpoint's own credentials, as a client would.
async fn test_invoke(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
    Form(f): Form<TestForm>,
) -> Response {
    if let Some(r) = v.csrf_refusal(&f.csrf) {
        return r;
    }
    let secret = match t
        .endpoints
        .endpoint_credentials(&v.principal, &ws, &name)
        .await
    {
        Ok(tarn_core::endpoints::Credentials::Keys { primary, .. }) => primary,
        Ok(tarn_core::endpoints::Credentials::Token { token, .. }) => token,
        Err(e) => return error_page(e),
    };
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("/endpoints/{name}/score"))
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, f.body.len());
    if let Some(d) = f.deployment.filter(|d| !d.is_empty()) {
        req = req.header(crate::router::DEPLOYMENT_HEADER, d);
    }
    let req = req
        .body(Body::from(f.body.clone()))
        .expect("a valid request");
    let resp = crate::router::score(State(t.clone()), Path(name.clone()), req).await;
    let status = resp.status();
    let who = resp
        .headers()
        .get(crate::router::DEPLOYMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(resp.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let result = html! {
        section aria-live="polite" aria-label="Response" {
            h2 { "Response" }
            p { (badge(if status.is_success() { "Succeeded" } else { "Failed" })) " HTTP " (status.as_u16())
                @if !who.is_empty() { " from deployment " strong { (who) } } }
            pre.log id="test-response" { (String::from_utf8_lossy(&body)) }
        }
    };
    endpoint_page(&t, &v, &ws, &name, Some(&f.body), Some(result)).await
}

/// Versioned assets as one table: name, version, type, description, created, and extra.
async fn assets(
    t: &AppState,
    v: &Viewer,
    ws: &str,
    kind: Kind,
    active: &str,
    title: &str,
    hint: &str,
) -> Response {
    let rows = match list(t, v, ws, kind).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let content = html! {
        @if rows.is_empty() { p { "None yet: " code { (hint) } "." } }
        @else {
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Type" }
                    th scope="col" { "Description" } th scope="col" { "Created" }
                    @if kind == Kind::Model { th scope="col" { "From job" } }
                    @if kind == Kind::Environment { th scope="col" { "Build" } }
                    @if kind != Kind::Environment { th scope="col" { "Path" } }
                } }
                tbody { @for r in &rows { tr {
                    td { (r.row.key.name) }
                    td.num { (r.row.key.version) }
                    td { (text(&r.row.spec, "/type")) }
                    td { (text(&r.row.spec, "/description")) }
                    td { (when(r.row.created_at)) " by " (r.row.created_by) }
                    @if kind == Kind::Model { td { (lineage(ws, &r.row.spec)) } }
                    @if kind == Kind::Environment { td { (build_status(t, &r.row.spec)) } }
                    @if kind != Kind::Environment { td { code { (text(&r.row.spec, "/path")) } } }
                } } }
            }
        }
    };
    page(t, v, Some(ws), active, title, content).await
}

/// Whether an environment's build is cached here (builds happen when a job first needs one).
fn build_status(t: &AppState, spec: &Json) -> Markup {
    match t.jobs.environment_build(spec) {
        Some((hash, true)) => {
            html! { (badge("Succeeded")) " " span.muted { "built, " (hash[..12].to_string()) } }
        }
        Some((hash, false)) => {
            html! { span.muted { "not built yet (" (hash[..12].to_string()) "): the first job that uses it builds it, and its log shows the build" } }
        }
        None => html! { span.muted { "image only: runs on the host Python" } },
    }
}

/// The job a model came from (`azureml://jobs/<job>/…` or `runs:/<run>/…`), as a link.
fn lineage(ws: &str, spec: &Json) -> Markup {
    let source = text(spec, "/properties/source");
    let job = source
        .strip_prefix("azureml://jobs/")
        .or_else(|| source.strip_prefix("runs:/"))
        .and_then(|rest| rest.split('/').next())
        .filter(|j| !j.is_empty());
    match job {
        Some(j) => {
            html! { a href=(format!("/ws/{}/jobs/{}", urlencode(ws), urlencode(j))) { (j) } }
        }
        None => html! { span.muted { "—" } },
    }
}

async fn models(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    assets(
        &t,
        &v,
        &ws,
        Kind::Model,
        "models",
        "Models",
        "tarn model create -f model.yml",
    )
    .await
}
async fn data(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    assets(
        &t,
        &v,
        &ws,
        Kind::Data,
        "data",
        "Data assets",
        "tarn data create -f data.yml",
    )
    .await
}
async fn environments(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    assets(
        &t,
        &v,
        &ws,
        Kind::Environment,
        "environments",
        "Environments",
        "tarn environment create -f env.yml",
    )
    .await
}

async fn datastores(State(t): State<AppState>, v: Viewer, Path(ws): Path<String>) -> Response {
    let rows = match list(&t, &v, &ws, Kind::Datastore).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let content = html! {
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Description" } } }
            tbody { @for r in &rows { tr {
                td { a href=(format!("/ws/{}/datastores/{}", urlencode(&ws), urlencode(&r.row.key.name))) { (r.row.key.name) } }
                td { (text(&r.row.spec, "/type")) }
                td { (text(&r.row.spec, "/description")) }
            } } }
        }
    };
    page(&t, &v, Some(&ws), "datastores", "Datastores", content).await
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

async fn browse(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> Response {
    let path = q.path.unwrap_or_default().trim_matches('/').to_string();
    let listing = match t
        .storage
        .list_paths(&v.principal, &ws, &name, &path, false)
        .await
    {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let base = format!("/ws/{}/datastores/{}", urlencode(&ws), urlencode(&name));
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    let content = html! {
        p { "Folder " code { "/" (path) } @if !path.is_empty() { " · " a href=(format!("{base}?path={}", urlencode(parent))) { "Up" } } }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Modified" } } }
            tbody {
                @for f in &listing.folders {
                    @let full = f.trim_end_matches('/');
                    tr { td { a href=(format!("{base}?path={}", urlencode(full))) { (full.rsplit('/').next().unwrap_or(full)) "/" } } td {} td {} }
                }
                @for f in &listing.files {
                    tr {
                        td { a href=(format!("{base}/file?path={}", urlencode(&f.path))) download { (f.path.rsplit('/').next().unwrap_or(&f.path)) } }
                        td.num { (f.size) }
                        td { (when(f.modified)) }
                    }
                }
            }
        }
    };
    page(
        &t,
        &v,
        Some(&ws),
        "datastores",
        &format!("Datastore {name}"),
        content,
    )
    .await
}

async fn download(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<PathQuery>,
) -> Response {
    let path = q.path.unwrap_or_default();
    match t.storage.download(&v.principal, &ws, &name, &path).await {
        Ok((info, stream)) => {
            let file = path.rsplit('/').next().unwrap_or("file").replace('"', "");
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, info.size.to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{file}\""),
                    ),
                ],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Err(e) => error_page(e),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    user: Option<String>,
}

/// The workspace's audit log, for its Owners (administrators too): the latest 500 calls.
async fn audit(
    State(t): State<AppState>,
    v: Viewer,
    Path(ws): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let user = q.user.filter(|u| !u.is_empty());
    let events = match t
        .audit
        .list(&v.principal, user.as_deref(), Some(&ws), None, 500)
        .await
    {
        Ok(e) => e,
        Err(e) => return error_page(e),
    };
    let content = html! {
        form method="get" {
            label for="audit-user" { "User" }
            input id="audit-user" name="user" value=(user.as_deref().unwrap_or_default());
            button.secondary type="submit" { "Filter" }
        }
        table {
            caption { "The latest calls that changed something, or read secrets, in this workspace" }
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "From" }
                th scope="col" { "Call" } th scope="col" { "Outcome" }
            } }
            tbody { @for e in &events { tr {
                td { (when(e.at)) }
                td { @if e.actor.is_empty() { "(unknown)" } @else { (e.actor) } " " span.muted { (e.actor_kind.replace('_', " ")) } }
                td { (e.address) }
                td { code { (e.method) " " (e.path) } @if !e.changes.is_empty() { br; span.muted { "changed " (e.changes) } } }
                td { span class=(if e.status < 400 { "badge s-Completed" } else { "badge s-Failed" }) { (e.status) } }
            } } }
        }
    };
    page(&t, &v, Some(&ws), "audit", "Audit log", content).await
}
