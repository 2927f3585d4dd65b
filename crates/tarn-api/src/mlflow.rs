//! The MLflow tracking protocol at `/ws/{workspace}/mlflow`: the stock `mlflow` client pointed
//! at that URI (token in `MLFLOW_TRACKING_TOKEN`) works unchanged. MLflow's URL rules
//! (`/api/2.0/mlflow/…` and `/ajax-api/2.0/mlflow/…`), request encoding (GET arguments in the
//! query string, repeated keys for lists; JSON bodies otherwise), response encoding (int64 as
//! numbers, NaN and ±Infinity as strings) and error format (`{"error_code", "message"}` with
//! MLflow's statuses) are followed here; the rules behind each call are in
//! `tarn_core::tracking`. Artifacts go through the `mlflow-artifacts` proxy into the
//! workspace's `workspaceartifactstore`.

mod datasets;
mod issues;
mod scorers;
mod traces;

use crate::AppState;
use crate::mlflow_schema::{invalid_value, missing};
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tarn_core::registry::{ModelVersion, RegisteredModel};
use tarn_core::tracking::{Batch, ExperimentRow, MetricRow, RunData, RunRow};
use tarn_core::tracking::{LoggedModelChange, LoggedModelRow, ModelMetricRow, ViewType};
use tarn_core::{Error, Principal, Tarn};

/// The datastore MLflow artifacts live in.
const ARTIFACTS: &str = "workspaceartifactstore";

/// The most points per run `get-history-bulk-interval` returns (MLflow's `MAX_RESULTS_PER_RUN`).
const MAX_RESULTS_PER_RUN: i64 = 2500;

/// The largest body of an MLflow call, and of the UI's `upload-artifact` (MLflow's 10 MB).
const MAX_RPC_BYTES: usize = 4_000_000;
const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

/// The largest OTLP span export (unzipped, too).
pub(crate) const MAX_OTLP_BYTES: usize = 32 * 1024 * 1024;

/// The MLflow release whose protocol this surface speaks: what `/version` says under it, so
/// that clients enable the features of that release (Tarn's own version is elsewhere).
pub const MLFLOW_PROTOCOL_VERSION: &str = "3.17.2";

/// How much of a body over its limit is read and dropped before the refusal is sent, so that
/// a client still sending gets the answer rather than a reset connection (as MLflow's server,
/// which reads it all, answers).
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// The body, if it is at most `limit` bytes; else `Err(whether it was read to its end)`, a
/// body of at most [`DRAIN_BYTES`] being read and dropped.
async fn read_within(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, bool> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(false);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_BYTES {
            return Err(false);
        }
        if seen <= limit {
            kept.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(true);
    }
    Ok(kept.freeze())
}

pub(crate) fn routes() -> Router<AppState> {
    let base = "/ws/{workspace}/mlflow";
    Router::new()
        .route(base, get(ui_links))
        .route(&format!("{base}/"), get(ui_links))
        .route(&format!("{base}/health"), get(|| async { "OK" }))
        .route(
            &format!("{base}/version"),
            get(|| async { MLFLOW_PROTOCOL_VERSION }),
        )
        .route(
            &format!("{base}/{{prefix}}/{{version}}/mlflow/{{*rpc}}"),
            any(rpc),
        )
        .route(
            &format!("{base}/v1/traces"),
            axum::routing::post(otlp_traces),
        )
        // The UI's downloads: a run's artifact, and a file of a model version.
        .route(&format!("{base}/get-artifact"), get(get_run_artifact))
        .route(
            &format!("{base}/model-versions/get-artifact"),
            get(get_model_version_artifact),
        )
        .route(
            &format!("{base}/{{prefix}}/{{version}}/mlflow-artifacts/artifacts"),
            get(list_artifacts),
        )
        .route(
            &format!("{base}/{{prefix}}/{{version}}/mlflow-artifacts/artifacts/{{*path}}"),
            any(artifact),
        )
}

/// OpenTelemetry's span export (`POST /v1/traces`), as MLflow's server takes it.
async fn otlp_traces(
    State(t): State<AppState>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let Ok(body) = read_within(body, MAX_OTLP_BYTES).await else {
        return Err(MlflowError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_PARAMETER_VALUE",
            format!("The span export is over {MAX_OTLP_BYTES} bytes"),
        ));
    };
    let p = caller(&t, &headers).await?;
    traces::otlp_export(&t, &p, &ws, &headers, &body).await
}

/// The MLflow UI's address: the stock client prints `View run … at: <tracking URI>/#/experiments/
/// <id>/runs/<run>` after every run. The fragment never reaches a server, so this page reads it
/// in the browser and sends it to the studio page that shows the same thing: an experiment, a
/// run (the job of that name), a model's versions; anything else to the experiments list.
async fn ui_links(Path(ws): Path<String>) -> axum::response::Html<String> {
    let ws_json = serde_json::to_string(&ws).unwrap_or_default();
    axum::response::Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>Tarn</title>
<p>Opening this in Tarn's studio… <a id="go" href="/ws/{ws_attr}/experiments">continue</a></p>
<script>
const ws = encodeURIComponent({ws_json});
const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
const e = encodeURIComponent;
let to = "/ws/" + ws + "/experiments";
if (parts[0] === "experiments" && parts[2] === "runs" && parts[3]) to = "/ws/" + ws + "/jobs/" + e(parts[3]);
else if (parts[0] === "experiments" && parts[1]) to = "/ws/" + ws + "/experiments/" + e(parts[1]);
else if (parts[0] === "models") to = "/ws/" + ws + "/models" + (parts[1] ? "?name=" + e(parts[1]) + (parts[3] ? "&version=" + e(parts[3]) : "") : "");
document.getElementById("go").href = to;
location.replace(to);
</script>"#,
        ws_attr = html_escape(&ws),
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An MLflow error response.
pub struct MlflowError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl MlflowError {
    /// The answer to a call Tarn has no endpoint for (`path` as the client wrote it).
    fn no_endpoint(method: &Method, path: &str) -> MlflowError {
        MlflowError::new(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!("No endpoint {method} {path} in Tarn"),
        )
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> MlflowError {
        MlflowError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> MlflowError {
        MlflowError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }
}

impl From<Error> for MlflowError {
    fn from(e: Error) -> MlflowError {
        let (status, code) = match &e {
            Error::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            // MLflow answers 400 here, and `register_model` depends on the code.
            Error::AlreadyExists { .. } => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "RESOURCE_CONFLICT"),
            Error::Storage { .. } | Error::Engine { .. } => {
                (StatusCode::BAD_GATEWAY, "TEMPORARILY_UNAVAILABLE")
            }
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
            Error::Vault(_) | Error::Io(_) | Error::Store(_) => {
                tracing::error!("tracking call failed: {e:?}");
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        };
        let message = match &e {
            Error::Invalid(d) => d
                .iter()
                .map(|d| d.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
            Error::NotFound { what } => format!("{what} not found"),
            Error::AlreadyExists { what } => format!("{what} already exists."),
            _ => e.to_string(),
        };
        MlflowError::new(status, code, message)
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error_code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type Reply = Result<Response, MlflowError>;

fn ok(v: Value) -> Reply {
    Ok(Json(v).into_response())
}

async fn caller(t: &Tarn, headers: &HeaderMap) -> Result<Principal, MlflowError> {
    Ok(t.users.authenticate(crate::bearer(headers)).await?)
}

/// The request's arguments: query parameters (repeated keys become lists) merged with a JSON
/// body object.
fn arguments(query: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, MlflowError> {
    let mut args = Map::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k);
        let v = Value::String(decode(v));
        match args.get_mut(&k) {
            Some(Value::Array(items)) => items.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                args.insert(k, v);
            }
        }
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => args.extend(map),
            Ok(_) => {
                return Err(MlflowError::invalid(
                    "The request body must be a JSON object",
                ));
            }
            Err(e) => return Err(MlflowError::invalid(format!("Malformed JSON request: {e}"))),
        }
    }
    Ok(args)
}

pub(crate) use tarn_spec::uri::form_decode as decode;

/// Typed access to arguments with MLflow's messages.
struct Args(Map<String, Value>);

impl Args {
    fn opt_str(&self, key: &str) -> Result<Option<String>, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(MlflowError::invalid(invalid_value(key, other))),
        }
    }

    fn str(&self, key: &str) -> Result<String, MlflowError> {
        self.opt_str(key)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MlflowError::invalid(missing(key)))
    }

    /// `run_id`, or the legacy `run_uuid`.
    fn run_id(&self) -> Result<String, MlflowError> {
        match self.opt_str("run_id")?.filter(|s| !s.is_empty()) {
            Some(id) => Ok(id),
            None => self
                .str("run_uuid")
                .map_err(|_| MlflowError::invalid(missing("run_id"))),
        }
    }

    fn opt_i64(&self, key: &str) -> Result<Option<i64>, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| MlflowError::invalid(invalid_value(key, &Value::Number(n.clone())))),
            Some(Value::String(s)) if !s.is_empty() => {
                s.trim().parse().map(Some).map_err(|_| {
                    MlflowError::invalid(invalid_value(key, &Value::String(s.clone())))
                })
            }
            Some(Value::String(_)) => Ok(None),
            Some(other) => Err(MlflowError::invalid(invalid_value(key, other))),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(other) => Err(MlflowError::invalid(invalid_value(key, other))),
        }
    }

    fn f64(&self, key: &str) -> Result<f64, MlflowError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(MlflowError::invalid(missing(key))),
            Some(v) => number(v).ok_or_else(|| MlflowError::invalid(invalid_value(key, v))),
        }
    }

    /// A list argument, borrowed (a single value is a list of one).
    fn each(&self, key: &str) -> &[Value] {
        match self.0.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(v) => std::slice::from_ref(v),
        }
    }

    fn list(&self, key: &str) -> Vec<Value> {
        match self.0.get(key) {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(items)) => items.clone(),
            Some(v) => vec![v.clone()],
        }
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.list(key)
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect()
    }

    fn key_values(&self, key: &str) -> Result<Vec<(String, String)>, MlflowError> {
        self.list(key)
            .into_iter()
            .map(|t| {
                let k = t
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| MlflowError::invalid(missing(&format!("{key}.key"))))?;
                let v = match t.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                Ok((k.to_string(), v))
            })
            .collect()
    }

    fn offset(&self) -> Result<i64, MlflowError> {
        match self.opt_str("page_token")?.filter(|t| !t.is_empty()) {
            None => Ok(0),
            Some(t) => t.parse().map_err(|_| {
                MlflowError::invalid(format!("Invalid page token, could not base64-decode: {t}"))
            }),
        }
    }
}

/// A number, or MLflow's spellings of NaN and infinities.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => number_text(s),
        _ => None,
    }
}

/// A number written as text, as MLflow's JSON writes NaN and the infinities.
fn number_text(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// `runs/log-batch` bodies read straight into rows, without a JSON tree: the call training
/// loops make most. `read` answers `None` for any body it cannot read as a well-formed batch
/// (a wrong type, a missing or empty field), which then goes the general way and is refused
/// in MLflow's words.
/// For the fuzz tests (`tests/fuzz.rs`): whether the fast reader takes a `log-batch` body.
#[doc(hidden)]
pub fn fast_log_batch_reads(body: &[u8]) -> bool {
    batch::read(body).is_some()
}

mod batch {
    use super::number_text;
    use serde::Deserialize;
    use serde::de::{self, Deserializer, Visitor};
    use tarn_core::tracking::{MetricRow, ModelMetricRow};

    /// A well-formed `log-batch` body: its run and what it logs.
    pub(super) struct Batch {
        pub run_id: String,
        pub batch: tarn_core::tracking::Batch,
    }

    #[derive(Deserialize)]
    struct Body {
        run_id: Option<String>,
        run_uuid: Option<String>,
        #[serde(default)]
        metrics: Vec<Metric>,
        #[serde(default)]
        params: Vec<Pair>,
        #[serde(default)]
        tags: Vec<Pair>,
    }

    #[derive(Deserialize)]
    struct Metric {
        key: String,
        value: Number,
        timestamp: Int,
        step: Option<Int>,
        model_id: Option<String>,
        dataset_name: Option<String>,
        dataset_digest: Option<String>,
    }

    #[derive(Deserialize)]
    struct Pair {
        key: String,
        value: Option<String>,
    }

    /// A float, or its text ("NaN", "Infinity", "0.5").
    struct Number(f64);
    /// An integer, or its text (proto JSON may write int64 as a string).
    struct Int(i64);

    impl<'de> Deserialize<'de> for Number {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Number;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a number")
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                    Ok(Number(v))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                    Ok(Number(v as f64))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                    Ok(Number(v as f64))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                    number_text(v)
                        .map(Number)
                        .ok_or_else(|| E::custom("not a number"))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> Deserialize<'de> for Int {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Int;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an integer")
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                    Ok(Int(v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                    i64::try_from(v).map(Int).map_err(E::custom)
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                    v.trim().parse().map(Int).map_err(E::custom)
                }
            }
            d.deserialize_any(V)
        }
    }

    pub(super) fn read(body: &[u8]) -> Option<Batch> {
        // serde skips the fields it ignores without checking their UTF-8: check it all, as
        // the general path (and MLflow) does.
        let body = std::str::from_utf8(body).ok()?;
        let b: Body = serde_json::from_str(body).ok()?;
        let run_id = b.run_id.filter(|r| !r.is_empty()).or(b.run_uuid)?;
        let well_formed = !run_id.is_empty()
            && b.metrics.iter().all(|m| !m.key.is_empty())
            && b.params.iter().chain(&b.tags).all(|p| !p.key.is_empty());
        if !well_formed {
            return None;
        }
        let mut metrics = Vec::with_capacity(b.metrics.len());
        let mut of_models = vec![];
        for m in b.metrics {
            let row = MetricRow {
                key: m.key,
                value: m.value.0,
                timestamp: m.timestamp.0,
                step: m.step.map_or(0, |s| s.0),
            };
            if let Some(model_id) = m.model_id.filter(|id| !id.is_empty()) {
                of_models.push(ModelMetricRow {
                    model_id,
                    run_id: run_id.clone(),
                    metric: row.clone(),
                    dataset_name: m.dataset_name.unwrap_or_default(),
                    dataset_digest: m.dataset_digest.unwrap_or_default(),
                });
            }
            metrics.push(row);
        }
        let pairs = |v: Vec<Pair>| {
            v.into_iter()
                .map(|p| (p.key, p.value.unwrap_or_default()))
                .collect()
        };
        Some(Batch {
            run_id,
            batch: tarn_core::tracking::Batch {
                metrics,
                of_models,
                params: pairs(b.params),
                tags: pairs(b.tags),
            },
        })
    }

    #[cfg(test)]
    mod tests {
        use super::read;

        #[test]
        fn well_formed_batches_are_read_and_the_rest_go_the_general_way() {
            let b = read(br#"{"run_id": "r", "metrics": [{"key": "a", "value": "NaN", "timestamp": "5", "step": 2, "model_id": "m-1"}, {"key": "b", "value": 1, "timestamp": 6}], "params": [{"key": "p", "value": "v"}]}"#).unwrap().batch;
            assert!(b.metrics[0].value.is_nan());
            assert_eq!((b.metrics[0].timestamp, b.metrics[0].step), (5, 2));
            assert_eq!((b.metrics[1].value, b.metrics[1].step), (1.0, 0));
            assert_eq!(b.of_models.len(), 1);
            assert_eq!(b.params, [("p".to_string(), "v".to_string())]);
            assert!(read(br#"{"run_uuid": "r", "tags": [{"key": "t"}]}"#).is_some());
            // Each of these gets MLflow's message from the general path instead.
            for bad in [
                r#"{"metrics": []}"#,
                r#"{"run_id": "r", "metrics": [{"key": "a", "value": 1}]}"#,
                r#"{"run_id": "r", "metrics": [{"key": "", "value": 1, "timestamp": 1}]}"#,
                r#"{"run_id": "r", "metrics": "foo"}"#,
                r#"{"run_id": 31}"#,
                r#"{"run_id": "r", "metrics": [{"key": "a", "value": "high", "timestamp": 1}]}"#,
            ] {
                assert!(read(bad.as_bytes()).is_none(), "{bad}");
            }
        }
    }
}

fn float(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

fn pairs(items: &[(String, String)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

fn experiment_json(e: &ExperimentRow) -> Value {
    json!({
        "experiment_id": e.experiment_id.to_string(),
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle_stage,
        "last_update_time": e.last_update_time,
        "creation_time": e.creation_time,
        "tags": pairs(&e.tags),
    })
}

fn metric_json(m: &MetricRow) -> Value {
    json!({"key": m.key, "value": float(m.value), "timestamp": m.timestamp, "step": m.step})
}

fn run_info(r: &RunRow) -> Value {
    serde_json::to_value(RunInfoOut(r)).expect("a run's info serializes")
}

/// A run's `info` as MLflow writes it (`start_time`/`end_time` only when set), serialized
/// straight from the row.
struct RunInfoOut<'a>(&'a RunRow);

impl serde::Serialize for RunInfoOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("run_id", &r.run_id)?;
        m.serialize_entry("run_uuid", &r.run_id)?;
        m.serialize_entry("run_name", &r.run_name)?;
        m.serialize_entry("experiment_id", &r.experiment_id.to_string())?;
        m.serialize_entry("user_id", &r.user_id)?;
        m.serialize_entry("status", &r.status)?;
        m.serialize_entry("artifact_uri", &r.artifact_uri)?;
        m.serialize_entry("lifecycle_stage", &r.lifecycle_stage)?;
        if let Some(t) = r.start_time {
            m.serialize_entry("start_time", &t)?;
        }
        if let Some(t) = r.end_time {
            m.serialize_entry("end_time", &t)?;
        }
        m.end()
    }
}

fn run_json(r: &RunRow, d: &RunData) -> Value {
    serde_json::to_value(RunOut(r, d)).expect("a run serializes")
}

/// A run as MLflow writes it, serialized straight from its rows: searches answer up to 50,000
/// runs, and a JSON tree per run (a map per tag) cost more than the query.
struct RunOut<'a>(&'a RunRow, &'a RunData);

impl serde::Serialize for RunOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (r, d) = (self.0, self.1);
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("info", &RunInfoOut(r))?;
        m.serialize_entry(
            "data",
            &DataOut {
                metrics: MetricsOut(&d.metrics),
                params: PairsOut(&d.params),
                tags: PairsOut(&d.tags),
            },
        )?;
        // Most runs have no inputs or outputs: an empty answer costs no allocation.
        if d.inputs.is_empty() && d.model_inputs.is_empty() {
            m.serialize_entry(
                "inputs",
                &EmptyInputs {
                    dataset_inputs: [],
                    model_inputs: [],
                },
            )?;
        } else {
            m.serialize_entry(
                "inputs",
                &json!({
                    "dataset_inputs": d.inputs.iter().map(|(dataset, tags)| json!({
                        "dataset": dataset,
                        "tags": tags.as_object().into_iter().flatten().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "model_inputs": d.model_inputs.iter().map(|id| json!({"model_id": id})).collect::<Vec<_>>(),
                }),
            )?;
        }
        if d.model_outputs.is_empty() {
            m.serialize_entry("outputs", &EmptyOutputs { model_outputs: [] })?;
        } else {
            m.serialize_entry(
                "outputs",
                &json!({
                    "model_outputs": d.model_outputs.iter().map(|(id, step)| json!({"model_id": id, "step": step})).collect::<Vec<_>>(),
                }),
            )?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct EmptyInputs {
    dataset_inputs: [(); 0],
    model_inputs: [(); 0],
}

#[derive(serde::Serialize)]
struct EmptyOutputs {
    model_outputs: [(); 0],
}

#[derive(serde::Serialize)]
struct DataOut<'a> {
    metrics: MetricsOut<'a>,
    params: PairsOut<'a>,
    tags: PairsOut<'a>,
}

/// `[{"key", "value"}, …]`.
struct PairsOut<'a>(&'a [(String, String)]);

impl serde::Serialize for PairsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Pair<'a> {
            key: &'a str,
            value: &'a str,
        }
        s.collect_seq(self.0.iter().map(|(key, value)| Pair { key, value }))
    }
}

/// `[{"key", "value", "timestamp", "step"}, …]`, NaN and the infinities as MLflow's strings.
struct MetricsOut<'a>(&'a [MetricRow]);

impl serde::Serialize for MetricsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Metric<'a> {
            key: &'a str,
            value: Value,
            timestamp: i64,
            step: i64,
        }
        s.collect_seq(self.0.iter().map(|m| Metric {
            key: &m.key,
            value: float(m.value),
            timestamp: m.timestamp,
            step: m.step,
        }))
    }
}

fn page(v: &mut Value, next: Option<i64>) {
    if let Some(n) = next {
        v["next_page_token"] = json!(n.to_string());
    }
}

/// The logged model a metric was measured of (MLflow 3: `model_id`, with the dataset it was
/// measured on), if it names one.
fn model_metric(v: &Value, run_id: &str, metric: &MetricRow) -> Option<ModelMetricRow> {
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let model_id = text("model_id");
    (!model_id.is_empty()).then(|| ModelMetricRow {
        model_id,
        run_id: run_id.to_string(),
        metric: metric.clone(),
        dataset_name: text("dataset_name"),
        dataset_digest: text("dataset_digest"),
    })
}

fn parse_metric(v: &Value, run_ts: i64) -> Result<MetricRow, MlflowError> {
    let key = v
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| MlflowError::invalid(missing("metrics.key")))?;
    let value = v.get("value").and_then(number).ok_or_else(|| {
        MlflowError::invalid(format!(
            "Invalid value for metric '{key}': it must be a number"
        ))
    })?;
    let int = |k: &str| {
        v.get(k).and_then(|x| {
            x.as_i64()
                .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
        })
    };
    Ok(MetricRow {
        key: key.to_string(),
        value,
        timestamp: int("timestamp").unwrap_or(run_ts),
        step: int("step").unwrap_or(0),
    })
}

async fn rpc(
    State(t): State<AppState>,
    Path((ws, _prefix, version, rpc)): Path<(String, String, String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Reply {
    let rpc = rpc.trim_matches('/');
    // Read here, within MLflow's limits, so that a body over them gets MLflow's error.
    let upload = rpc == "upload-artifact";
    let limit = if upload {
        MAX_UPLOAD_BYTES
    } else {
        MAX_RPC_BYTES
    };
    let body = match read_within(body, limit).await {
        Ok(body) => body,
        Err(drained) => {
            let mut refused = MlflowError::invalid(if upload {
                "Artifact size is too large. Max size is 10MB."
            } else {
                "The request body is too large"
            })
            .into_response();
            if !drained {
                // The rest of the body was not read: this connection cannot carry another.
                refused.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            return Ok(refused);
        }
    };
    let p = caller(&t, &headers).await?;
    if rpc == "get-trace-artifact" && method == Method::GET {
        let a = Args(arguments(query.as_deref(), b"")?);
        return get_trace_artifact(&t, &p, &ws, &a).await;
    }
    if rpc == "upload-artifact" && method == Method::POST {
        return upload_artifact(&t, &p, &ws, query.as_deref(), body).await;
    }
    // The training loop's call, read straight into rows when it is well formed.
    if rpc == "runs/log-batch"
        && method == Method::POST
        && let Some(batch) = batch::read(&body)
    {
        t.tracking
            .log_batch(&p, &ws, &batch.run_id, batch.batch)
            .await?;
        return ok(json!({}));
    }
    let a = Args(arguments(query.as_deref(), &body)?);
    if let Some(reply) = traces::rpc(&t, &p, &ws, &method, rpc, &a).await {
        return reply;
    }
    if let Some(reply) = datasets::rpc(&t, &p, &ws, &method, rpc, &a).await {
        return reply;
    }
    if let Some(reply) = scorers::rpc(&t, &p, &ws, &method, rpc, &a).await {
        return reply;
    }
    if let Some(reply) = issues::rpc(&t, &p, &ws, &method, rpc, &a).await {
        return reply;
    }
    let post = method == Method::POST;
    let get = method == Method::GET;
    crate::mlflow_schema::check(post, rpc, &a.0, body.is_empty()).map_err(MlflowError::invalid)?;
    match (version.as_str(), rpc) {
        ("3.0", "server-info") | ("3.0", "server-features") => ok(json!({
            "store_type": "SqlStore",
            "workspaces_enabled": false,
            "multipart_uploads_enabled": false,
            "multipart_downloads_enabled": false,
        })),
        (_, "experiments/create") if post => {
            let name = a.str("name")?;
            let tags = a.key_values("tags")?;
            let location = a.opt_str("artifact_location")?.filter(|s| !s.is_empty());
            let id = t
                .tracking
                .create_experiment(&p, &ws, &name, location.as_deref(), tags)
                .await?;
            ok(json!({"experiment_id": id.to_string()}))
        }
        (_, "experiments/get") if get => {
            let e = t
                .tracking
                .get_experiment(&p, &ws, &a.str("experiment_id")?)
                .await?;
            ok(json!({"experiment": experiment_json(&e)}))
        }
        (_, "experiments/get-by-name") if get => {
            let e = t
                .tracking
                .experiment_by_name(&p, &ws, &a.str("experiment_name")?)
                .await?;
            ok(json!({"experiment": experiment_json(&e)}))
        }
        (_, "experiments/search") => {
            let view = ViewType::parse(a.opt_str("view_type")?.as_deref())?;
            let filter = a.opt_str("filter")?.unwrap_or_default();
            let all = t
                .tracking
                .search_experiments(&p, &ws, view, &filter, &a.strings("order_by"))
                .await?;
            let offset = a.offset()?.max(0) as usize;
            let max = a.opt_i64("max_results")?.unwrap_or(1000).clamp(1, 50_000) as usize;
            let items: Vec<Value> = all
                .iter()
                .skip(offset)
                .take(max)
                .map(experiment_json)
                .collect();
            let mut out = json!({"experiments": items});
            page(
                &mut out,
                (all.len() > offset + max).then_some((offset + max) as i64),
            );
            ok(out)
        }
        (_, "experiments/update") if post => {
            let new_name = a.opt_str("new_name")?;
            t.tracking
                .update_experiment(&p, &ws, &a.str("experiment_id")?, new_name.as_deref(), None)
                .await?;
            ok(json!({}))
        }
        (_, "experiments/delete") if post => {
            t.tracking
                .update_experiment(&p, &ws, &a.str("experiment_id")?, None, Some("deleted"))
                .await?;
            ok(json!({}))
        }
        (_, "experiments/restore") if post => {
            t.tracking
                .update_experiment(&p, &ws, &a.str("experiment_id")?, None, Some("active"))
                .await?;
            ok(json!({}))
        }
        (_, "experiments/set-experiment-tag") if post => {
            let value = a.opt_str("value")?.unwrap_or_default();
            t.tracking
                .set_experiment_tag(
                    &p,
                    &ws,
                    &a.str("experiment_id")?,
                    &a.str("key")?,
                    Some(&value),
                )
                .await?;
            ok(json!({}))
        }
        (_, "experiments/delete-experiment-tag") if post || method == Method::DELETE => {
            t.tracking
                .set_experiment_tag(&p, &ws, &a.str("experiment_id")?, &a.str("key")?, None)
                .await?;
            ok(json!({}))
        }
        (_, "runs/create") if post => {
            let (r, d) = t
                .tracking
                .create_run(
                    &p,
                    &ws,
                    &a.opt_str("experiment_id")?.unwrap_or_default(),
                    a.opt_str("user_id")?.as_deref(),
                    a.opt_str("run_name")?.as_deref(),
                    a.opt_i64("start_time")?,
                    a.key_values("tags")?,
                )
                .await?;
            ok(json!({"run": run_json(&r, &d)}))
        }
        (_, "runs/get") if get => {
            let (r, d) = t.tracking.get_run(&p, &ws, &a.run_id()?).await?;
            ok(json!({"run": run_json(&r, &d)}))
        }
        (_, "runs/update") if post => {
            let r = t
                .tracking
                .update_run(
                    &p,
                    &ws,
                    &a.run_id()?,
                    a.opt_str("status")?.as_deref(),
                    a.opt_i64("end_time")?,
                    a.opt_str("run_name")?.as_deref(),
                )
                .await?;
            ok(json!({"run_info": run_info(&r)}))
        }
        (_, "runs/delete") if post => {
            t.tracking
                .set_run_lifecycle(&p, &ws, &a.run_id()?, true)
                .await?;
            ok(json!({}))
        }
        (_, "runs/restore") if post => {
            t.tracking
                .set_run_lifecycle(&p, &ws, &a.run_id()?, false)
                .await?;
            ok(json!({}))
        }
        (_, "runs/log-metric") if post => {
            let key = a.str("key")?;
            let metric = MetricRow {
                key,
                value: a.f64("value")?,
                timestamp: a
                    .opt_i64("timestamp")?
                    .ok_or_else(|| MlflowError::invalid(missing("timestamp")))?,
                step: a.opt_i64("step")?.unwrap_or(0),
            };
            let run_id = a.run_id()?;
            let of_model = model_metric(&Value::Object(a.0.clone()), &run_id, &metric);
            t.tracking
                .log_batch(
                    &p,
                    &ws,
                    &run_id,
                    Batch {
                        metrics: vec![metric],
                        of_models: of_model.into_iter().collect(),
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (_, "runs/log-parameter") if post => {
            let value = a
                .opt_str("value")?
                .ok_or_else(|| MlflowError::invalid(missing("value")))?;
            t.tracking
                .log_batch(
                    &p,
                    &ws,
                    &a.run_id()?,
                    Batch {
                        params: vec![(a.str("key")?, value)],
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (_, "runs/set-tag") if post => {
            let value = a.opt_str("value")?.unwrap_or_default();
            t.tracking
                .log_batch(
                    &p,
                    &ws,
                    &a.run_id()?,
                    Batch {
                        tags: vec![(a.str("key")?, value)],
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (_, "runs/delete-tag") if post => {
            t.tracking
                .delete_run_tag(&p, &ws, &a.run_id()?, &a.str("key")?)
                .await?;
            ok(json!({}))
        }
        (_, "runs/log-batch") if post => {
            let now = tarn_core::now_ms();
            let run_id = a.run_id()?;
            let metrics = a
                .each("metrics")
                .iter()
                .map(|m| parse_metric(m, now))
                .collect::<Result<Vec<_>, _>>()?;
            let of_models: Vec<ModelMetricRow> = a
                .each("metrics")
                .iter()
                .zip(&metrics)
                .filter_map(|(v, m)| model_metric(v, &run_id, m))
                .collect();
            t.tracking
                .log_batch(
                    &p,
                    &ws,
                    &run_id,
                    Batch {
                        metrics,
                        params: a.key_values("params")?,
                        tags: a.key_values("tags")?,
                        of_models,
                    },
                )
                .await?;
            ok(json!({}))
        }
        (_, "runs/log-inputs") if post => {
            let models: Vec<(String, i64)> = a
                .each("models")
                .iter()
                .filter_map(|m| m["model_id"].as_str())
                .map(|id| (id.to_string(), 0))
                .collect();
            t.tracking
                .log_inputs(&p, &ws, &a.run_id()?, &a.list("datasets"), &models)
                .await?;
            ok(json!({}))
        }
        (_, "runs/log-model") if post => {
            // MLflow 2.x records logged models as a run tag.
            let model = a.str("model_json")?;
            let run_id = a.run_id()?;
            let (_, d) = t.tracking.get_run(&p, &ws, &run_id).await?;
            let mut history: Vec<Value> = d
                .tags
                .iter()
                .find(|(k, _)| k == "mlflow.log-model.history")
                .and_then(|(_, v)| serde_json::from_str(v).ok())
                .unwrap_or_default();
            history.push(serde_json::from_str(&model).unwrap_or(Value::String(model)));
            let tag = (
                "mlflow.log-model.history".to_string(),
                Value::Array(history).to_string(),
            );
            t.tracking
                .log_batch(
                    &p,
                    &ws,
                    &run_id,
                    Batch {
                        tags: vec![tag],
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (_, "runs/search") => {
            let view = ViewType::parse(a.opt_str("run_view_type")?.as_deref())?;
            let (runs, next) = t
                .tracking
                .search_runs(
                    &p,
                    &ws,
                    &a.strings("experiment_ids"),
                    &a.opt_str("filter")?.unwrap_or_default(),
                    view,
                    a.opt_i64("max_results")?,
                    &a.strings("order_by"),
                    a.offset()?,
                )
                .await?;
            #[derive(serde::Serialize)]
            struct SearchOut<'a> {
                runs: Vec<RunOut<'a>>,
                #[serde(skip_serializing_if = "Option::is_none")]
                next_page_token: Option<String>,
            }
            let out = SearchOut {
                runs: runs.iter().map(|(r, d)| RunOut(r, d)).collect(),
                next_page_token: next.map(|n| n.to_string()),
            };
            Ok(Json(out).into_response())
        }
        (_, "metrics/get-history") if get => {
            if let Some(max) = a.opt_i64("max_results")?
                && max <= 0
            {
                return Err(MlflowError::invalid(format!(
                    "Invalid value {max} for parameter 'max_results' supplied. It must be a positive integer."
                )));
            }
            let (rows, next) = t
                .tracking
                .metric_history(
                    &p,
                    &ws,
                    &a.run_id()?,
                    &a.str("metric_key")?,
                    a.offset()?,
                    a.opt_i64("max_results")?,
                )
                .await?;
            Ok(history_response(&rows, next))
        }
        // The UI's charts: every run's history of one metric, at most `max_results` per run.
        (_, "metrics/get-history-bulk") if get => {
            let run_ids = a.strings("run_id");
            if run_ids.is_empty() {
                return Err(MlflowError::invalid(
                    "GetMetricHistoryBulk request must specify at least one run_id.",
                ));
            }
            if run_ids.len() > 100 {
                return Err(MlflowError::invalid(format!(
                    "GetMetricHistoryBulk request cannot specify more than 100 run_ids. Received {} run_ids.",
                    run_ids.len()
                )));
            }
            let key = a.opt_str("metric_key")?.ok_or_else(|| {
                MlflowError::invalid("GetMetricHistoryBulk request must specify a metric_key.")
            })?;
            let max = a.opt_i64("max_results")?.unwrap_or(25_000).clamp(0, 25_000) as usize;
            let mut sorted = run_ids.clone();
            sorted.sort();
            let mut out = vec![];
            for run_id in sorted {
                let (mut rows, _) = t
                    .tracking
                    .metric_history(&p, &ws, &run_id, &key, 0, None)
                    .await?;
                rows.truncate(max);
                rows.sort_by(|a, b| {
                    (a.timestamp, a.step)
                        .cmp(&(b.timestamp, b.step))
                        .then(a.value.total_cmp(&b.value))
                });
                out.extend(rows.iter().map(|m| {
                    let mut v = metric_json(m);
                    v["run_id"] = json!(run_id);
                    v
                }));
            }
            ok(json!({"metrics": out}))
        }
        // The UI's charts over a step range: the same sampled steps for every run.
        (_, "metrics/get-history-bulk-interval") if get => {
            let run_ids = a.strings("run_ids");
            if run_ids.len() > 100 {
                return Err(MlflowError::invalid(format!(
                    "GetMetricHistoryBulkInterval request must specify at most 100 run_ids. Received {} run_ids.",
                    run_ids.len()
                )));
            }
            let key = a.str("metric_key")?;
            let max = a.opt_i64("max_results")?.unwrap_or(MAX_RESULTS_PER_RUN);
            if !(1..=MAX_RESULTS_PER_RUN).contains(&max) {
                return Err(MlflowError::invalid(format!(
                    "max_results must be between 1 and {MAX_RESULTS_PER_RUN}."
                )));
            }
            let range = match (a.opt_i64("start_step")?, a.opt_i64("end_step")?) {
                (Some(s), Some(e)) if s > e => {
                    return Err(MlflowError::invalid(format!(
                        "end_step must be greater than start_step. Found start_step={s} and end_step={e}."
                    )));
                }
                (Some(s), Some(e)) => Some((s, e)),
                (None, None) => None,
                _ => {
                    return Err(MlflowError::invalid(
                        "If either start step or end step are specified, both must be specified.",
                    ));
                }
            };
            let mut out = vec![];
            for run_id in &run_ids {
                let (rows, _) = t
                    .tracking
                    .metric_history(&p, &ws, run_id, &key, 0, None)
                    .await?;
                let sampled = tarn_core::tracking::sample_history(&rows, range, max as usize);
                out.extend(sampled.iter().map(|m| {
                    let mut v = metric_json(m);
                    v["run_id"] = json!(run_id);
                    v
                }));
            }
            ok(json!({"metrics": out}))
        }
        (_, rpc) if rpc.starts_with("registered-models/") || rpc.starts_with("model-versions/") => {
            registry(&t, &p, &ws, &method, rpc, &a).await
        }
        (_, rpc) if rpc == "logged-models" || rpc.starts_with("logged-models/") => {
            logged_models(&t, &p, &ws, &method, rpc, &a).await
        }
        (_, "runs/outputs") if post => {
            let models: Vec<(String, i64)> = a
                .each("models")
                .iter()
                .filter_map(|m| {
                    let step = m["step"]
                        .as_i64()
                        .or_else(|| m["step"].as_str()?.parse().ok());
                    Some((m["model_id"].as_str()?.to_string(), step.unwrap_or(0)))
                })
                .collect();
            t.tracking
                .log_outputs(&p, &ws, &a.run_id()?, &models)
                .await?;
            ok(json!({}))
        }
        // The UI's list of the datasets an experiment's runs used.
        (_, "experiments/search-datasets") if post => {
            let summaries = t
                .tracking
                .dataset_summaries(&p, &ws, &a.strings("experiment_ids"))
                .await?;
            let items: Vec<Value> = summaries
                .iter()
                .map(|d| {
                    let mut v = json!({
                        "experiment_id": d.experiment_id.to_string(),
                        "name": d.name,
                        "digest": d.digest,
                    });
                    if let Some(c) = &d.context {
                        v["context"] = json!(c);
                    }
                    v
                })
                .collect();
            ok(json!({"dataset_summaries": items}))
        }
        (_, "artifacts/list") if get => {
            let run_id = a.run_id()?;
            let (r, _) = t.tracking.get_run(&p, &ws, &run_id).await?;
            let root = artifact_root(&r.artifact_uri);
            let sub = a.opt_str("path")?.unwrap_or_default();
            let dir = join(&root, safe_path(&sub)?);
            let files = list_dir(&t, &p, &ws, &dir, &root).await?;
            ok(json!({"root_uri": r.artifact_uri, "files": files}))
        }
        _ => Err(MlflowError::no_endpoint(
            &method,
            &format!("/api/{version}/mlflow/{rpc}"),
        )),
    }
}

fn version_json(v: &ModelVersion) -> Value {
    let mut out = json!({
        "name": v.name,
        "version": v.version,
        "creation_timestamp": v.creation_timestamp,
        "last_updated_timestamp": v.last_updated_timestamp,
        "user_id": v.user_id,
        "current_stage": v.current_stage,
        "description": v.description,
        "source": v.source,
        "status": "READY",
        "tags": pairs(&v.tags),
        "aliases": v.aliases,
    });
    if !v.run_id.is_empty() {
        out["run_id"] = json!(v.run_id);
    }
    out
}

fn model_json(m: &RegisteredModel) -> Value {
    json!({
        "name": m.name,
        "creation_timestamp": m.creation_timestamp,
        "last_updated_timestamp": m.last_updated_timestamp,
        "description": m.description,
        "latest_versions": m.latest_versions.iter().map(version_json).collect::<Vec<_>>(),
        "tags": pairs(&m.tags),
        "aliases": m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v})).collect::<Vec<_>>(),
    })
}

/// Pages a list the way MLflow does (`max_results`, `page_token`).
fn paged(items: Vec<Value>, a: &Args, field: &str, default_max: i64) -> Reply {
    let offset = a.offset()?.max(0) as usize;
    let max = a
        .opt_i64("max_results")?
        .unwrap_or(default_max)
        .clamp(1, 100_000) as usize;
    let total = items.len();
    let page_items: Vec<Value> = items.into_iter().skip(offset).take(max).collect();
    let mut out = json!({ field: page_items });
    page(
        &mut out,
        (total > offset + max).then_some((offset + max) as i64),
    );
    ok(out)
}

/// A logged model with its metrics, as MLflow answers.
async fn model_reply(t: &Tarn, p: &Principal, ws: &str, m: LoggedModelRow) -> Reply {
    let metrics = t.tracking.model_metrics(p, ws, &m.model_id).await?;
    ok(json!({"model": logged_model_json(&m, &metrics)}))
}

fn logged_model_json(m: &LoggedModelRow, metrics: &[ModelMetricRow]) -> Value {
    let kv = |v: &Value| {
        Value::Array(
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect(),
        )
    };
    json!({
        "info": {
            "model_id": m.model_id,
            "experiment_id": m.experiment_id.to_string(),
            "name": m.name,
            "creation_timestamp_ms": m.creation_time,
            "last_updated_timestamp_ms": m.last_updated_time,
            "artifact_uri": m.artifact_uri,
            "status": m.status,
            "model_type": m.model_type,
            "source_run_id": m.source_run_id,
            "tags": kv(&m.tags),
        },
        "data": {
            "params": kv(&m.params),
            "metrics": metrics.iter().map(|r| {
                let mut v = metric_json(&r.metric);
                v["model_id"] = json!(r.model_id);
                v["run_id"] = json!(r.run_id);
                if !r.dataset_name.is_empty() {
                    v["dataset_name"] = json!(r.dataset_name);
                    v["dataset_digest"] = json!(r.dataset_digest);
                }
                v
            }).collect::<Vec<_>>(),
        },
    })
}

/// MLflow 3 logged models: `logged-models[/{id}[/tags[/{key}]|/params|/artifacts/directories]]`.
async fn logged_models(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    method: &Method,
    rpc: &str,
    a: &Args,
) -> Reply {
    let parts: Vec<&str> = rpc.split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::POST, ["logged-models"]) => {
            model_reply(
                t,
                p,
                ws,
                t.tracking
                    .create_logged_model(
                        p,
                        ws,
                        &a.str("experiment_id")?,
                        a.opt_str("name")?.as_deref(),
                        a.opt_str("model_type")?.as_deref(),
                        a.opt_str("source_run_id")?.as_deref(),
                        a.key_values("params")?,
                        a.key_values("tags")?,
                    )
                    .await?,
            )
            .await
        }
        (Method::POST, ["logged-models", "search"]) => {
            let models = t
                .tracking
                .search_logged_models(
                    p,
                    ws,
                    &a.strings("experiment_ids"),
                    &a.opt_str("filter")?.unwrap_or_default(),
                    &a.each("datasets")
                        .iter()
                        .filter_map(|d| {
                            let name = d["dataset_name"].as_str()?.to_string();
                            Some((name, d["dataset_digest"].as_str().map(str::to_string)))
                        })
                        .collect::<Vec<_>>(),
                    &a.each("order_by")
                        .iter()
                        .filter_map(|o| {
                            let field = o["field_name"].as_str()?.to_string();
                            Some((field, o["ascending"].as_bool().unwrap_or(true)))
                        })
                        .collect::<Vec<_>>(),
                )
                .await?;
            let mut items = vec![];
            for m in &models {
                items.push(logged_model_json(
                    m,
                    &t.tracking.model_metrics(p, ws, &m.model_id).await?,
                ));
            }
            paged(items, a, "models", 100)
        }
        (Method::GET, ["logged-models", id]) => {
            model_reply(t, p, ws, t.tracking.get_logged_model(p, ws, id).await?).await
        }
        (Method::PATCH, ["logged-models", id]) => {
            let status = a.str("status")?;
            model_reply(
                t,
                p,
                ws,
                t.tracking
                    .change_logged_model(
                        p,
                        ws,
                        id,
                        LoggedModelChange {
                            status: Some(status),
                            ..Default::default()
                        },
                    )
                    .await?,
            )
            .await
        }
        (Method::DELETE, ["logged-models", id]) => {
            t.tracking
                .change_logged_model(
                    p,
                    ws,
                    id,
                    LoggedModelChange {
                        delete: true,
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (Method::PATCH, ["logged-models", id, "tags"]) => {
            let tags = a
                .key_values("tags")?
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
            model_reply(
                t,
                p,
                ws,
                t.tracking
                    .change_logged_model(
                        p,
                        ws,
                        id,
                        LoggedModelChange {
                            tags,
                            ..Default::default()
                        },
                    )
                    .await?,
            )
            .await
        }
        (Method::DELETE, ["logged-models", id, "tags", key]) => {
            t.tracking
                .change_logged_model(
                    p,
                    ws,
                    id,
                    LoggedModelChange {
                        tags: vec![(key.to_string(), None)],
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (Method::POST, ["logged-models", id, "params"]) => {
            t.tracking
                .change_logged_model(
                    p,
                    ws,
                    id,
                    LoggedModelChange {
                        params: a.key_values("params")?,
                        ..Default::default()
                    },
                )
                .await?;
            ok(json!({}))
        }
        (Method::GET, ["logged-models", id, "artifacts", "files"]) => {
            let path = a.str("artifact_file_path")?;
            safe_path(&path)?;
            let m = t.tracking.get_logged_model(p, ws, id).await?;
            file_response(
                t,
                p,
                ws,
                ARTIFACTS,
                &join(&artifact_root(&m.artifact_uri), &path),
            )
            .await
        }
        (Method::GET, ["logged-models", id, "artifacts", "directories"]) => {
            let m = t.tracking.get_logged_model(p, ws, id).await?;
            let root = artifact_root(&m.artifact_uri);
            let sub = a.opt_str("artifact_directory_path")?.unwrap_or_default();
            let files = list_dir(t, p, ws, &join(&root, safe_path(&sub)?), &root).await?;
            ok(json!({"root_uri": m.artifact_uri, "files": files}))
        }
        _ => Err(MlflowError::no_endpoint(
            method,
            &format!("/api/2.0/mlflow/{rpc}"),
        )),
    }
}

/// The model registry calls.
async fn registry(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    method: &Method,
    rpc: &str,
    a: &Args,
) -> Reply {
    let is = |m: Method| *method == m;
    match rpc {
        "registered-models/create" if is(Method::POST) => {
            let m = t
                .registry
                .create_registered_model(
                    p,
                    ws,
                    &a.str("name")?,
                    a.opt_str("description")?.as_deref(),
                    a.key_values("tags")?,
                )
                .await?;
            ok(json!({"registered_model": model_json(&m)}))
        }
        "registered-models/get" if is(Method::GET) => ok(
            json!({"registered_model": model_json(&t.registry.get_registered_model(p, ws, &a.str("name")?).await?)}),
        ),
        "registered-models/update" if is(Method::PATCH) || is(Method::POST) => {
            let d = a.opt_str("description")?.unwrap_or_default();
            let m = t
                .registry
                .update_registered_model(p, ws, &a.str("name")?, &d)
                .await?;
            ok(json!({"registered_model": model_json(&m)}))
        }
        "registered-models/rename" if is(Method::POST) => {
            let m = t
                .registry
                .rename_registered_model(p, ws, &a.str("name")?, &a.str("new_name")?)
                .await?;
            ok(json!({"registered_model": model_json(&m)}))
        }
        "registered-models/delete" if is(Method::DELETE) => {
            t.registry
                .delete_registered_model(p, ws, &a.str("name")?)
                .await?;
            ok(json!({}))
        }
        "registered-models/search" => {
            let models = t
                .registry
                .search_registered_models(p, ws, &a.opt_str("filter")?.unwrap_or_default())
                .await?;
            paged(
                models.iter().map(model_json).collect(),
                a,
                "registered_models",
                100,
            )
        }
        "registered-models/get-latest-versions" => {
            let versions = t
                .registry
                .latest_versions(p, ws, &a.str("name")?, &a.strings("stages"))
                .await?;
            ok(json!({"model_versions": versions.iter().map(version_json).collect::<Vec<_>>()}))
        }
        "registered-models/set-tag" if is(Method::POST) => {
            let value = a.opt_str("value")?.unwrap_or_default();
            t.registry
                .set_registered_model_tag(p, ws, &a.str("name")?, &a.str("key")?, Some(&value))
                .await?;
            ok(json!({}))
        }
        "registered-models/delete-tag" if is(Method::DELETE) => {
            t.registry
                .set_registered_model_tag(p, ws, &a.str("name")?, &a.str("key")?, None)
                .await?;
            ok(json!({}))
        }
        "registered-models/alias" if is(Method::POST) => {
            t.registry
                .set_alias(
                    p,
                    ws,
                    &a.str("name")?,
                    &a.str("alias")?,
                    Some(&a.str("version")?),
                )
                .await?;
            ok(json!({}))
        }
        "registered-models/alias" if is(Method::DELETE) => {
            t.registry
                .set_alias(p, ws, &a.str("name")?, &a.str("alias")?, None)
                .await?;
            ok(json!({}))
        }
        "registered-models/alias" if is(Method::GET) => {
            let v = t
                .registry
                .version_by_alias(p, ws, &a.str("name")?, &a.str("alias")?)
                .await?;
            ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/create" if is(Method::POST) => {
            let v = t
                .registry
                .create_model_version(
                    p,
                    ws,
                    &a.str("name")?,
                    &a.str("source")?,
                    a.opt_str("run_id")?.as_deref(),
                    a.key_values("tags")?,
                    a.opt_str("description")?.as_deref(),
                    a.opt_str("model_id")?.as_deref(),
                )
                .await?;
            ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/get" if is(Method::GET) => {
            let v = t
                .registry
                .get_model_version(p, ws, &a.str("name")?, &a.str("version")?)
                .await?;
            ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/update" if is(Method::PATCH) || is(Method::POST) => {
            let d = a.opt_str("description")?.unwrap_or_default();
            let v = t
                .registry
                .update_model_version(p, ws, &a.str("name")?, &a.str("version")?, &d)
                .await?;
            ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/delete" if is(Method::DELETE) => {
            t.registry
                .delete_model_version(p, ws, &a.str("name")?, &a.str("version")?)
                .await?;
            ok(json!({}))
        }
        "model-versions/search" => {
            let versions = t
                .registry
                .search_model_versions(
                    p,
                    ws,
                    &a.opt_str("filter")?.unwrap_or_default(),
                    &a.strings("order_by"),
                )
                .await?;
            paged(
                versions.iter().map(version_json).collect(),
                a,
                "model_versions",
                10_000,
            )
        }
        "model-versions/get-download-uri" if is(Method::GET) => {
            let uri = t
                .registry
                .model_version_download_uri(p, ws, &a.str("name")?, &a.str("version")?)
                .await?;
            ok(json!({"artifact_uri": uri}))
        }
        "model-versions/transition-stage" if is(Method::POST) => {
            let archive = a.bool("archive_existing_versions")?;
            let v = t
                .registry
                .transition_stage(
                    p,
                    ws,
                    &a.str("name")?,
                    &a.str("version")?,
                    &a.str("stage")?,
                    archive,
                )
                .await?;
            ok(json!({"model_version": version_json(&v)}))
        }
        "model-versions/set-tag" if is(Method::POST) => {
            let value = a.opt_str("value")?.unwrap_or_default();
            t.registry
                .set_model_version_tag(
                    p,
                    ws,
                    &a.str("name")?,
                    &a.str("version")?,
                    &a.str("key")?,
                    Some(&value),
                )
                .await?;
            ok(json!({}))
        }
        "model-versions/delete-tag" if is(Method::DELETE) => {
            t.registry
                .set_model_version_tag(
                    p,
                    ws,
                    &a.str("name")?,
                    &a.str("version")?,
                    &a.str("key")?,
                    None,
                )
                .await?;
            ok(json!({}))
        }
        _ => Err(MlflowError::no_endpoint(
            method,
            &format!("/api/2.0/mlflow/{rpc}"),
        )),
    }
}

/// A metric history as JSON, written straight into one buffer: histories run to tens of
/// thousands of points, and building a `Value` per point would cost more than reading them.
fn history_response(rows: &[MetricRow], next: Option<i64>) -> Response {
    use std::fmt::Write;
    let mut body = String::with_capacity(32 + rows.len() * 72);
    body.push_str("{\"metrics\":[");
    let mut last_key: Option<(&str, String)> = None;
    for (i, m) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let key = match &last_key {
            Some((k, encoded)) if *k == m.key => encoded.clone(),
            _ => {
                let encoded = Value::String(m.key.clone()).to_string();
                last_key = Some((m.key.as_str(), encoded.clone()));
                encoded
            }
        };
        let value = float(m.value).to_string();
        let _ = write!(
            body,
            "{{\"key\":{key},\"value\":{value},\"timestamp\":{},\"step\":{}}}",
            m.timestamp, m.step
        );
    }
    body.push(']');
    if let Some(n) = next {
        let _ = write!(body, ",\"next_page_token\":\"{n}\"");
    }
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The datastore path of an `mlflow-artifacts:/…` URI.
fn artifact_root(uri: &str) -> String {
    uri.strip_prefix("mlflow-artifacts:")
        .unwrap_or(uri)
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// A path a client names inside an artifact root, refused in MLflow's words when it could
/// leave that root (`..`, absolute, a URI, backslashes, fragments), as
/// `mlflow.utils.uri.validate_path_is_safe` does.
fn safe_path(path: &str) -> Result<&str, MlflowError> {
    let decoded = decode(path);
    let unsafe_path = [path, decoded.as_str()].iter().any(|p| {
        p.contains('#')
            || p.contains('\\')
            || p.starts_with('/')
            || p.contains(":/")
            || p.split('/').any(|s| s == "..")
    });
    if unsafe_path {
        return Err(MlflowError::invalid("Invalid path"));
    }
    Ok(path)
}

fn join(a: &str, b: &str) -> String {
    let b = b.trim_matches('/');
    if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// A folder's files and sub-folders, with paths relative to `relative_to`.
async fn list_dir(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    dir: &str,
    relative_to: &str,
) -> Result<Vec<Value>, MlflowError> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let listing = t
        .storage
        .list_paths(p, ws, ARTIFACTS, &prefix, false)
        .await?;
    let rel = |path: &str| {
        path.strip_prefix(relative_to)
            .unwrap_or(path)
            .trim_matches('/')
            .to_string()
    };
    let mut out: Vec<Value> = listing
        .folders
        .iter()
        .map(|f| json!({"path": rel(f), "is_dir": true}))
        .collect();
    out.extend(
        listing
            .files
            .iter()
            .map(|f| json!({"path": rel(&f.path), "is_dir": false, "file_size": f.size})),
    );
    // MLflow lists a folder's entries by path, folders among files.
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(out)
}

async fn list_artifacts(
    State(t): State<AppState>,
    Path((ws, _prefix, _version)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let p = caller(&t, &headers).await?;
    let a = Args(arguments(query.as_deref(), b"")?);
    let dir = a.opt_str("path")?.unwrap_or_default();
    let dir = safe_path(dir.trim_matches('/'))?.to_string();
    let files = list_dir(&t, &p, &ws, &dir, &dir).await?;
    ok(json!({"files": files}))
}

async fn artifact(
    State(t): State<AppState>,
    Path((ws, _prefix, _version, path)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
    request: Request,
) -> Reply {
    let p = caller(&t, &headers).await?;
    safe_path(&path)?;
    match method {
        Method::PUT => {
            let body = request.into_body().into_data_stream();
            t.storage
                .upload(&p, &ws, ARTIFACTS, &path, body, None)
                .await?;
            ok(json!({}))
        }
        Method::GET => file_response(&t, &p, &ws, ARTIFACTS, &path).await,
        Method::DELETE => {
            t.storage.delete_path(&p, &ws, ARTIFACTS, &path).await?;
            ok(json!({}))
        }
        other => Err(MlflowError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_REQUEST",
            format!("{other} is not allowed on artifacts"),
        )),
    }
}

/// A file of a datastore as MLflow serves downloads: its content type, `attachment` with the
/// file's name, and `nosniff`.
async fn file_response(t: &Tarn, p: &Principal, ws: &str, datastore: &str, path: &str) -> Reply {
    let (info, stream) = t.storage.download(p, ws, datastore, path).await?;
    let name = path.rsplit('/').next().unwrap_or("artifact");
    Ok(attachment(name, Body::from_stream(stream), info.size))
}

/// A download named `name` of `size` bytes, with MLflow's headers (see [`file_response`]).
fn attachment(name: &str, body: Body, size: u64) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        content_type(name).parse().expect("a valid header"),
    );
    h.insert(header::CONTENT_LENGTH, size.into());
    // A name of token characters goes bare, as Flask writes it; others are quoted.
    let token = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    let disposition = if token {
        format!("attachment; filename={name}")
    } else {
        format!("attachment; filename=\"{}\"", name.replace(['"', '\\'], ""))
    };
    if let Ok(v) = disposition.parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        "x-content-type-options",
        "nosniff".parse().expect("a valid header"),
    );
    response
}

/// The UI's download of a trace (`get-trace-artifact?request_id=…`): its spans as
/// `traces.json`, from the store, or from the file a client that could not send spans put in
/// the trace's folder; with `path`, one of the trace's attachments there.
async fn get_trace_artifact(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    let Some(id) = a.opt_str("request_id")? else {
        return Err(MlflowError::new(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "Request must include the \"request_id\" query parameter.",
        ));
    };
    let Some(trace) = t
        .traces
        .get_traces(p, ws, std::slice::from_ref(&id))
        .await?
        .pop()
    else {
        return Err(tarn_core::Error::not_found(format!("Trace with ID '{id}'")).into());
    };
    let folder = trace
        .info
        .tags
        .iter()
        .find(|(k, _)| k == "mlflow.artifactLocation")
        .map(|(_, v)| artifact_root(v))
        .unwrap_or_default();
    let path = a.opt_str("path")?;
    if let Some(path) = &path {
        safe_path(path)?;
    }
    if path.is_some() || trace.spans.is_empty() {
        let name = path.as_deref().unwrap_or("traces.json");
        return file_response(t, p, ws, ARTIFACTS, &join(&folder, name)).await;
    }
    let data = traces::trace_data(&trace).to_string();
    let size = data.len() as u64;
    Ok(attachment("traces.json", Body::from(data), size))
}

/// The UI's upload: `POST upload-artifact?run_uuid=…&path=…` with the file as the body.
async fn upload_artifact(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    query: Option<&str>,
    body: axum::body::Bytes,
) -> Reply {
    let a = Args(arguments(query, b"")?);
    let run_id = a
        .opt_str("run_uuid")?
        .or(a.opt_str("run_id")?)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| MlflowError::invalid("Request must specify run_uuid."))?;
    let path = a
        .opt_str("path")?
        .filter(|r| !r.is_empty())
        .ok_or_else(|| MlflowError::invalid("Request must specify path."))?;
    safe_path(&path)?;
    if body.is_empty() {
        return Err(MlflowError::invalid("Request must specify data."));
    }
    let (r, _) = t.tracking.get_run(p, ws, &run_id).await?;
    let target = join(&artifact_root(&r.artifact_uri), &path);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    t.storage
        .upload(p, ws, ARTIFACTS, &target, stream, None)
        .await?;
    ok(json!({}))
}

/// `GET /get-artifact?run_id=…&path=…`: one file of a run's artifacts.
async fn get_run_artifact(
    State(t): State<AppState>,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let p = caller(&t, &headers).await?;
    let a = Args(arguments(query.as_deref(), b"")?);
    let path = a.str("path")?;
    safe_path(&path)?;
    let (r, _) = t.tracking.get_run(&p, &ws, &a.run_id()?).await?;
    file_response(
        &t,
        &p,
        &ws,
        ARTIFACTS,
        &join(&artifact_root(&r.artifact_uri), &path),
    )
    .await
}

/// `GET /model-versions/get-artifact?name=…&version=…&path=…`: one file of a model version.
async fn get_model_version_artifact(
    State(t): State<AppState>,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let p = caller(&t, &headers).await?;
    let a = Args(arguments(query.as_deref(), b"")?);
    let (name, version, path) = (a.str("name")?, a.str("version")?, a.str("path")?);
    safe_path(&path)?;
    let mv = t
        .registry
        .get_model_version(&p, &ws, &name, &version)
        .await?;
    let (datastore, root) = match mv.source.strip_prefix("mlflow-artifacts:") {
        Some(_) => (ARTIFACTS.to_string(), artifact_root(&mv.source)),
        None => match tarn_spec::uri::parse(&mv.source) {
            Ok(tarn_spec::uri::DataUri::Datastore {
                datastore, path, ..
            }) => (datastore, path.as_str().to_string()),
            _ => {
                return Err(MlflowError::invalid(format!(
                    "the files of model version {name}/{version} are at {}, which Tarn does not serve",
                    mv.source
                )));
            }
        },
    };
    file_response(&t, &p, &ws, &datastore, &join(&root, &path)).await
}

/// Extensions (or whole names, for files without one) MLflow serves as `text/plain`
/// (`mlflow.utils.mime_type_utils.get_text_extensions`, case as MLflow spells it).
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "log",
    "err",
    "cfg",
    "conf",
    "cnf",
    "cf",
    "ini",
    "properties",
    "prop",
    "hocon",
    "toml",
    "yaml",
    "yml",
    "xml",
    "json",
    "js",
    "py",
    "py3",
    "csv",
    "tsv",
    "md",
    "rst",
    "MLmodel",
    "mlproject",
];

/// The content type MLflow gives an artifact: text for its text extensions, else by extension
/// as Python's `mimetypes` would, else binary.
fn content_type(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, e)) => e,
        None => name,
    };
    if TEXT_EXTENSIONS.contains(&ext) {
        return "text/plain";
    }
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "wav" => "audio/x-wav",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}
