//! Evaluation datasets in the studio (MLflow 3's `mlflow.genai.datasets`): an experiment's
//! datasets (records, who changed them last and when, tags), and a dataset's page — its facts,
//! the experiments it is linked to, the fields its records hold, and its records (inputs,
//! expectations, outputs, and their source: a record made from a trace links to the trace's
//! page), paged. Datasets are made and filled from the client (`create_dataset`,
//! `merge_records`); the studio shows them.

use super::{Viewer, error_page, page, urlencode, when};
use crate::AppState;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value as Json;

/// Datasets, and records, per page.
const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws/{workspace}/experiments/{id}/datasets", get(list))
        .route("/ws/{workspace}/datasets/{id}", get(show))
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    offset: i64,
}

/// A JSON value as a reader takes it in: text as it is, anything else as compact JSON.
fn shown(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        v => v.to_string(),
    }
}

/// An object's fields, one per line (`key: value`).
fn fields(v: &Json) -> Markup {
    html! {
        @match v.as_object() {
            Some(m) => { @for (k, val) in m { div { strong { (k) ": " } (shown(val)) } } }
            None => { (shown(v)) }
        }
    }
}

/// "Newer" and "Older" links of an offset-paged list.
fn pages(base: &str, offset: i64, more: bool) -> Markup {
    html! {
        nav.pages {
            @if offset > 0 { a href=(format!("{base}?offset={}", (offset - PAGE).max(0))) { "Newer" } " " }
            @if more { a href=(format!("{base}?offset={}", offset + PAGE)) { "Older" } }
        }
    }
}

async fn list(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let title = match t.tracking.get_experiment(&v.principal, &ws, &id).await {
        Ok(e) => format!("Evaluation datasets of {}", e.name),
        Err(e) => return error_page(e),
    };
    let offset = q.offset.max(0);
    let found = t
        .eval_datasets
        .search(
            &v.principal,
            &ws,
            std::slice::from_ref(&id),
            "",
            &[],
            (PAGE, offset),
        )
        .await;
    let (datasets, next) = match found {
        Ok(found) => found,
        Err(e) => return error_page(e),
    };
    let content = html! {
        p { a href=(format!("/ws/{}/experiments/{}", urlencode(&ws), urlencode(&id))) { "Back to the experiment" } }
        table {
            caption { "Evaluation datasets, newest first" }
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Records" } th scope="col" { "Changed" }
                th scope="col" { "By" } th scope="col" { "Tags" }
            } }
            tbody { @for (d, _) in &datasets { tr {
                td { a href=(format!("/ws/{}/datasets/{}", urlencode(&ws), urlencode(&d.dataset_id))) { (d.name) } }
                td.num { (d.record_count()) }
                td { (when(d.last_update_time)) }
                td { (shown(&d.content["last_updated_by"])) }
                td { (fields(&d.content["tags"])) }
            } } }
        }
        @if datasets.is_empty() {
            p { "No evaluation datasets yet. Make one with " code { "mlflow.genai.datasets.create_dataset" } "." }
        }
        (pages(&format!("/ws/{}/experiments/{}/datasets", urlencode(&ws), urlencode(&id)), offset, next.is_some()))
    };
    page(&t, &v, Some(&ws), "experiments", &title, content).await
}

async fn show(
    State(t): State<AppState>,
    v: Viewer,
    Path((ws, id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let (d, experiments) = match t.eval_datasets.get(&v.principal, &ws, &id).await {
        Ok(found) => found,
        Err(e) => return error_page(e),
    };
    let offset = q.offset.max(0);
    let (records, next) = match t
        .eval_datasets
        .records(&v.principal, &ws, &id, Some(PAGE), offset)
        .await
    {
        Ok(found) => found,
        Err(e) => return error_page(e),
    };
    // The fields its records hold, by part (MLflow's schema: a JSON text).
    let schema: Json = d.content["schema"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let content = html! {
        div.card {
            dl.facts {
                dt { "Dataset" } dd { code { (d.dataset_id) } }
                dt { "Records" } dd { (d.record_count()) }
                dt { "Made" } dd { (when(d.created_time)) " " (shown(&d.content["created_by"])) }
                dt { "Changed" } dd { (when(d.last_update_time)) " " (shown(&d.content["last_updated_by"])) }
                dt { "Digest" } dd { code { (shown(&d.content["digest"])) } }
                dt { "Experiments" } dd { @for e in &experiments {
                    a href=(format!("/ws/{}/experiments/{e}/datasets", urlencode(&ws))) { (e) } " "
                } }
                @for part in ["inputs", "expectations", "outputs"] {
                    @if let Some(types) = schema[part].as_object() {
                        dt { "Fields: " (part) } dd { @for (k, ty) in types { code { (k) } " " (shown(ty)) "; " } }
                    }
                }
            }
        }
        @if d.content["tags"].as_object().is_some_and(|m| !m.is_empty()) {
            h2 { "Tags" }
            (fields(&d.content["tags"]))
        }
        h2 { "Records" }
        table {
            thead { tr {
                th scope="col" { "Inputs" } th scope="col" { "Expectations" } th scope="col" { "Outputs" }
                th scope="col" { "Source" } th scope="col" { "Changed" }
            } }
            tbody { @for r in &records { tr {
                td { (fields(&r["inputs"])) }
                td { (fields(&r["expectations"])) }
                td { (fields(&r["outputs"])) }
                td {
                    @let kind = shown(&r["source_type"]);
                    @let source = shown(&r["source_id"]);
                    @if kind == "TRACE" && !source.is_empty() {
                        a href=(format!("/ws/{}/traces/{}", urlencode(&ws), urlencode(&source))) { "trace " (source) }
                    } @else {
                        (kind) " " (source)
                    }
                }
                td { (when(r["last_update_time"].as_i64().or(r["created_time"].as_i64()).unwrap_or_default())) }
            } } }
        }
        @if records.is_empty() { p { "No records yet. Add some with the dataset's " code { "merge_records" } "." } }
        (pages(&format!("/ws/{}/datasets/{}", urlencode(&ws), urlencode(&id)), offset, next.is_some()))
    };
    page(
        &t,
        &v,
        Some(&ws),
        "experiments",
        &format!("Evaluation dataset {}", d.name),
        content,
    )
    .await
}
