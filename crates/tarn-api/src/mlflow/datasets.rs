//! MLflow 3's evaluation dataset calls (`/api/3.0/mlflow/datasets…`) in MLflow's JSON forms:
//! a dataset's tags and a page of records travel as JSON texts inside the JSON. The rules are
//! in `tarn_core::eval_datasets`.

use super::{Args, MlflowError, Reply, ok};
use axum::http::Method;
use serde_json::{Map, Value, json};
use tarn_core::eval_datasets::DatasetView;
use tarn_core::{Principal, Tarn};

fn dataset_json((d, experiments): &DatasetView) -> Value {
    let mut o = json!({
        "dataset_id": d.dataset_id,
        "name": d.name,
        "created_time": d.created_time,
        "last_update_time": d.last_update_time,
        "tags": d.content["tags"].to_string(),
        "experiment_ids": experiments.iter().map(i64::to_string).collect::<Vec<_>>(),
    });
    for key in [
        "digest",
        "schema",
        "profile",
        "created_by",
        "last_updated_by",
    ] {
        if let Some(v) = d.content.get(key).filter(|v| !v.is_null()) {
            o[key] = v.clone();
        }
    }
    o
}

/// A JSON text argument holding an object (`tags`).
fn json_object(a: &Args, key: &str) -> Result<Map<String, Value>, MlflowError> {
    match a.opt_str(key)? {
        None => Ok(Map::new()),
        Some(text) if text.is_empty() => Ok(Map::new()),
        Some(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(MlflowError::invalid(format!(
                "Invalid value for '{key}': expected a JSON object"
            ))),
        },
    }
}

/// Answers a dataset call, or `None` when `rpc` is not one.
pub(super) async fn rpc(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    method: &Method,
    rpc: &str,
    a: &Args,
) -> Option<Reply> {
    let rest = rpc.strip_prefix("datasets/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let d = &t.eval_datasets;
    let reply = async {
        match (method.clone(), parts.as_slice()) {
            (Method::POST, ["create"]) => {
                let name = a.str("name")?;
                let tags = json_object(a, "tags")?;
                let view = d
                    .create(p, ws, &name, tags, &a.strings("experiment_ids"))
                    .await?;
                ok(json!({"dataset": dataset_json(&view)}))
            }
            (Method::POST, ["search"]) => {
                let filter = a.opt_str("filter_string")?.unwrap_or_default();
                let max_results = a.opt_i64("max_results")?.unwrap_or(1000);
                let (views, next) = d
                    .search(
                        p,
                        ws,
                        &a.strings("experiment_ids"),
                        &filter,
                        &a.strings("order_by"),
                        (max_results, a.offset()?),
                    )
                    .await?;
                let mut out =
                    json!({"datasets": views.iter().map(dataset_json).collect::<Vec<_>>()});
                super::page(&mut out, next);
                ok(out)
            }
            (Method::GET, [id]) => ok(json!({"dataset": dataset_json(&d.get(p, ws, id).await?)})),
            (Method::DELETE, [id]) => {
                d.delete(p, ws, id).await?;
                ok(json!({}))
            }
            (Method::POST, [id, "records"]) => {
                let text = a.str("records")?;
                let Ok(Value::Array(records)) = serde_json::from_str::<Value>(&text) else {
                    return Err(MlflowError::invalid(
                        "Invalid value for 'records': expected a JSON list of records",
                    ));
                };
                let (inserted, updated) = d.upsert_records(p, ws, id, records).await?;
                ok(json!({"inserted_count": inserted, "updated_count": updated}))
            }
            (Method::GET, [id, "records"]) => {
                let (records, next) = d
                    .records(p, ws, id, a.opt_i64("max_results")?, a.offset()?)
                    .await?;
                let mut out = json!({"records": Value::Array(records).to_string()});
                super::page(&mut out, next);
                ok(out)
            }
            (Method::DELETE, [id, "records"]) => {
                let n = d
                    .delete_records(p, ws, id, &a.strings("dataset_record_ids"))
                    .await?;
                ok(json!({"deleted_count": n}))
            }
            (Method::PATCH, [id, "tags"]) => {
                d.change_tags(p, ws, id, json_object(a, "tags")?, None)
                    .await?;
                ok(json!({}))
            }
            (Method::DELETE, [id, "tags", key]) => {
                let key = super::decode(key);
                d.change_tags(p, ws, id, Map::new(), Some(&key)).await?;
                ok(json!({}))
            }
            (Method::GET, [id, "experiment-ids"]) => {
                let (_, experiments) = d.get(p, ws, id).await?;
                ok(
                    json!({"experiment_ids": experiments.iter().map(i64::to_string).collect::<Vec<_>>()}),
                )
            }
            (Method::POST, [id, change @ ("add-experiments" | "remove-experiments")]) => {
                let view = d
                    .change_experiments(
                        p,
                        ws,
                        id,
                        &a.strings("experiment_ids"),
                        *change == "add-experiments",
                    )
                    .await?;
                ok(json!({"dataset": dataset_json(&view)}))
            }
            _ => Err(MlflowError::no_endpoint(method, &format!("/mlflow/{rpc}"))),
        }
    };
    Some(reply.await)
}
