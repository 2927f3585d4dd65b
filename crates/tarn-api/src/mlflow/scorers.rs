//! MLflow 3's registered scorer calls (`/api/3.0/mlflow/scorers/…`) in MLflow's JSON forms.
//! The rules are in `tarn_core::scorers`.

use super::{Args, MlflowError, Reply, ok};
use axum::http::Method;
use serde_json::{Value, json};
use tarn_core::scorers::ScorerRow;
use tarn_core::{Principal, Tarn};

/// MLflow's `Scorer` message.
fn scorer_json(s: &ScorerRow) -> Value {
    json!({
        "experiment_id": s.experiment_id,
        "scorer_name": s.name,
        "scorer_version": s.version,
        "serialized_scorer": s.serialized,
        "creation_time": s.created,
        "scorer_id": s.scorer_id,
    })
}

/// Answers a scorer call, or `None` when `rpc` is not one.
pub(super) async fn rpc(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    method: &Method,
    rpc: &str,
    a: &Args,
) -> Option<Reply> {
    let call = rpc.strip_prefix("scorers/")?;
    let s = &t.scorers;
    let reply = async {
        match (method.clone(), call) {
            (Method::POST, "register") => {
                let experiment = a.str("experiment_id")?;
                let name = a.str("name")?;
                let v = s
                    .register(p, ws, &experiment, &name, &a.str("serialized_scorer")?)
                    .await?;
                // RegisterScorer's response names its fields its own way.
                ok(json!({
                    "version": v.version,
                    "scorer_id": v.scorer_id,
                    "experiment_id": v.experiment_id.to_string(),
                    "name": v.name,
                    "serialized_scorer": v.serialized,
                    "creation_time": v.created,
                }))
            }
            (Method::GET, "list") => {
                let list = s.list(p, ws, &a.str("experiment_id")?).await?;
                ok(json!({"scorers": list.iter().map(scorer_json).collect::<Vec<_>>()}))
            }
            (Method::GET, "versions") => {
                let list = s
                    .versions(p, ws, &a.str("experiment_id")?, &a.str("name")?)
                    .await?;
                ok(json!({"scorers": list.iter().map(scorer_json).collect::<Vec<_>>()}))
            }
            (Method::GET, "get") => {
                let v = s
                    .get(
                        p,
                        ws,
                        &a.str("experiment_id")?,
                        &a.str("name")?,
                        a.opt_i64("version")?,
                    )
                    .await?;
                ok(json!({"scorer": scorer_json(&v)}))
            }
            (Method::DELETE, "delete") => {
                s.delete(
                    p,
                    ws,
                    &a.str("experiment_id")?,
                    &a.str("name")?,
                    a.opt_i64("version")?,
                )
                .await?;
                ok(json!({}))
            }
            (Method::GET, "online-configs") => {
                ok(json!({"configs": s.online_configs(p, ws).await?}))
            }
            (Method::PUT, "online-config") => Err(MlflowError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED",
                "Tarn does not run registered scorers on incoming traces (online scoring): \
                 evaluate with mlflow.genai.evaluate instead",
            )),
            _ => Err(MlflowError::no_endpoint(method, &format!("/mlflow/{rpc}"))),
        }
    };
    Some(reply.await)
}
