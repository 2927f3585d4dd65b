//! MLflow 3's GenAI issue calls (`/api/3.0/mlflow/issues…`) in MLflow's JSON forms. The rules
//! are in `tarn_core::genai_issues`.

use super::{Args, MlflowError, Reply, ok};
use axum::http::Method;
use serde_json::{Value, json};
use tarn_core::genai_issues::{DEFAULT_MAX_RESULTS, IssueChange, IssueRow, NewIssue};
use tarn_core::{Principal, Tarn};

/// MLflow's `Issue` message.
fn issue_json(i: &IssueRow) -> Value {
    let c = &i.content;
    let mut o = json!({
        "issue_id": i.issue_id,
        "experiment_id": i.experiment_id.to_string(),
        "name": c["name"],
        "description": c["description"],
        "status": i.status,
        "root_causes": c["root_causes"],
        "categories": c["categories"],
        "created_timestamp": i.created,
        "last_updated_timestamp": c["last_updated_timestamp"],
    });
    for (key, value) in [
        ("severity", i.severity.as_ref().map(|s| json!(s))),
        ("source_run_id", i.source_run_id.as_ref().map(|s| json!(s))),
        ("trace_count", i.trace_count.map(|n| json!(n))),
        (
            "created_by",
            Some(c["created_by"].clone()).filter(|v| !v.is_null()),
        ),
    ] {
        if let Some(v) = value {
            o[key] = v;
        }
    }
    o
}

/// Answers an issue call, or `None` when `rpc` is not one.
pub(super) async fn rpc(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    method: &Method,
    rpc: &str,
    a: &Args,
) -> Option<Reply> {
    let rest = rpc.strip_prefix("issues")?;
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let issues = &t.issues;
    let reply = async {
        match (method.clone(), parts.as_slice()) {
            (Method::POST, [""]) => {
                let new = NewIssue {
                    experiment_id: a.str("experiment_id")?,
                    name: a.str("name")?,
                    description: a.str("description")?,
                    status: a.opt_str("status")?,
                    severity: a.opt_str("severity")?,
                    root_causes: a.strings("root_causes"),
                    categories: a.strings("categories"),
                    source_run_id: a.opt_str("source_run_id")?,
                    created_by: a.opt_str("created_by")?,
                };
                let issue = issues.create(p, ws, new).await?;
                ok(json!({"issue": issue_json(&issue)}))
            }
            (Method::POST, ["search"]) => {
                let experiment = a.opt_str("experiment_id")?;
                let filter = a.opt_str("filter_string")?.unwrap_or_default();
                let max_results = a.opt_i64("max_results")?.unwrap_or(DEFAULT_MAX_RESULTS);
                let (rows, next) = issues
                    .search(
                        p,
                        ws,
                        experiment.as_deref(),
                        &filter,
                        (max_results, a.offset()?),
                        a.bool("include_trace_count")?,
                    )
                    .await?;
                // MLflow always sends the token, empty on the last page.
                ok(json!({
                    "issues": rows.iter().map(issue_json).collect::<Vec<_>>(),
                    "next_page_token": next.map(|n| n.to_string()).unwrap_or_default(),
                }))
            }
            (Method::GET, [id]) => {
                let issue = issues.get(p, ws, id).await?;
                ok(json!({"issue": issue_json(&issue)}))
            }
            (Method::PATCH, [id]) => {
                let change = IssueChange {
                    name: a.opt_str("name")?.filter(|s| !s.is_empty()),
                    description: a.opt_str("description")?.filter(|s| !s.is_empty()),
                    status: a.opt_str("status")?,
                    severity: a.opt_str("severity")?,
                };
                let issue = issues.update(p, ws, id, change).await?;
                ok(json!({"issue": issue_json(&issue)}))
            }
            _ => Err(MlflowError::no_endpoint(method, &format!("/mlflow/{rpc}"))),
        }
    };
    Some(reply.await)
}
