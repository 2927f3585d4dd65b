//! MLflow 3's trace calls (`/api/{2.0,3.0}/mlflow/traces…`) and OTLP span export
//! (`/v1/traces`), in MLflow's JSON forms: a trace's info is `TraceInfoV3` (times as
//! protobuf's `Timestamp` and `Duration` texts, its experiment as a `trace_location`), spans
//! are OpenTelemetry spans as `crate::otlp` keeps them. The rules are in
//! `tarn_core::traces`.

use super::{Args, MlflowError, Reply, ok};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};
use tarn_core::traces::{
    CachedTrace, KeptInfo, Trace, TraceDeletion, TraceEnd, TraceRow, TraceSearch,
};
use tarn_core::{Principal, Tarn};
use tarn_spec::trigger::{parse_rfc3339_ms, rfc3339_ms};

/// The default page of a trace search (MLflow's `SEARCH_TRACES_DEFAULT_MAX_RESULTS`).
const DEFAULT_MAX_RESULTS: i64 = 100;

/// A duration in milliseconds as protobuf's JSON `Duration` (`1.500s`).
fn duration_text(ms: i64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// Protobuf's JSON `Duration` (`1.5s`, `0.000250s`) in milliseconds.
fn duration_ms(text: &str) -> Option<i64> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    Some((seconds * 1000.0).round() as i64)
}

/// Key-value pairs as a JSON object.
struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct Location {
    r#type: &'static str,
    mlflow_experiment: ExperimentLocation,
}

#[derive(Serialize)]
struct ExperimentLocation {
    experiment_id: String,
}

/// A trace's info (with its assessments) as MLflow's `TraceInfoV3`, serialized straight from
/// the row: a search answers with a page of these, and building a `Value` tree of each first
/// cost more than the search itself.
#[derive(Serialize)]
struct Info<'a> {
    trace_id: &'a str,
    trace_location: Location,
    request_time: String,
    state: &'a str,
    trace_metadata: Pairs<'a>,
    tags: Pairs<'a>,
    assessments: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_preview: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_preview: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_request_id: Option<&'a str>,
}

impl<'a> From<&'a TraceRow> for Info<'a> {
    fn from(r: &'a TraceRow) -> Self {
        Info {
            trace_id: &r.trace_id,
            trace_location: Location {
                r#type: "MLFLOW_EXPERIMENT",
                mlflow_experiment: ExperimentLocation {
                    experiment_id: r.experiment_id.to_string(),
                },
            },
            request_time: rfc3339_ms(r.request_time),
            state: &r.state,
            trace_metadata: Pairs(&r.metadata),
            tags: Pairs(&r.tags),
            assessments: &r.assessments,
            execution_duration: r.execution_duration.map(duration_text),
            request_preview: r.request_preview.as_deref(),
            response_preview: r.response_preview.as_deref(),
            client_request_id: r.client_request_id.as_deref(),
        }
    }
}

fn info_json(r: &TraceRow) -> Value {
    serde_json::to_value(Info::from(r)).expect("a trace's info serializes")
}

fn trace_json(t: &Trace) -> Value {
    json!({"trace_info": info_json(&t.info), "spans": stored_spans(t)})
}

/// A trace's spans as MLflow's `TraceData` (`{"spans": [...]}`, what `traces.json` holds).
pub(super) fn trace_data(t: &Trace) -> Value {
    let spans: Vec<Value> = stored_spans(t).iter().map(crate::otlp::span_dict).collect();
    json!({ "spans": spans })
}

/// A trace's spans in protobuf's JSON form, as kept.
fn stored_spans(t: &Trace) -> Vec<Value> {
    t.spans
        .iter()
        .filter_map(|s| serde_json::from_str(&s.content).ok())
        .collect()
}

fn string_map(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The experiment of a `trace_location` (MLflow experiments only).
fn location_experiment(location: Option<&Value>) -> Result<String, MlflowError> {
    let experiment = location
        .and_then(|l| l.get("mlflow_experiment"))
        .and_then(|e| e.get("experiment_id"))
        .and_then(|id| {
            id.as_str()
                .map(str::to_string)
                .or_else(|| id.as_i64().map(|n| n.to_string()))
        });
    experiment.ok_or_else(|| {
        MlflowError::invalid(
            "A trace location must be an MLflow experiment ('mlflow_experiment.experiment_id')",
        )
    })
}

/// Assessments as sent: each MLflow's `Assessment` as a JSON object.
type Assessments = Vec<Map<String, Value>>;

/// `StartTraceV3`'s trace info: its experiment, as a row, and its assessments.
fn read_info(info: &Value) -> Result<(String, TraceRow, Assessments), MlflowError> {
    let text = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_string);
    let experiment = location_experiment(info.get("trace_location"))?;
    let trace_id = text("trace_id").ok_or_else(|| {
        MlflowError::invalid("Missing value for required parameter 'trace.trace_info.trace_id'")
    })?;
    let request_time = match info.get("request_time") {
        Some(Value::String(s)) => parse_rfc3339_ms(s)
            .ok_or_else(|| MlflowError::invalid(format!("Invalid request_time '{s}'")))?,
        Some(Value::Number(n)) => n.as_i64().unwrap_or_default(),
        _ => {
            return Err(MlflowError::invalid(
                "Missing value for required parameter 'trace.trace_info.request_time'",
            ));
        }
    };
    let execution_duration = match info.get("execution_duration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            duration_ms(s)
                .ok_or_else(|| MlflowError::invalid(format!("Invalid execution_duration '{s}'")))?,
        ),
        Some(other) => {
            return Err(MlflowError::invalid(format!(
                "Invalid execution_duration {other}"
            )));
        }
    };
    let state = text("state").unwrap_or_else(|| "STATE_UNSPECIFIED".into());
    if !["OK", "ERROR", "IN_PROGRESS", "STATE_UNSPECIFIED"].contains(&state.as_str()) {
        return Err(MlflowError::invalid(format!(
            "Invalid trace state '{state}'"
        )));
    }
    let assessments = info
        .get("assessments")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|a| a.as_object().cloned())
                .collect()
        })
        .unwrap_or_default();
    let row = TraceRow {
        workspace_id: String::new(),
        trace_id,
        experiment_id: 0,
        request_time,
        execution_duration,
        state,
        client_request_id: text("client_request_id"),
        request_preview: text("request_preview"),
        response_preview: text("response_preview"),
        tags: string_map(info.get("tags")),
        metadata: string_map(info.get("trace_metadata")),
        assessments: vec![],
    };
    Ok((experiment, row, assessments))
}

/// An `update_mask`: a FieldMask's JSON (comma-separated camelCase paths) or a list.
fn mask(v: Option<&Value>) -> Vec<String> {
    let paths: Vec<String> = match v {
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Object(o)) => o
            .get("paths")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    };
    paths
        .into_iter()
        .map(|p| {
            let mut snake = String::new();
            for c in p.trim().chars() {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            snake
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// Answers a trace call, or `None` when `rpc` is not one.
pub(super) async fn rpc(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    method: &Method,
    rpc: &str,
    a: &Args,
) -> Option<Reply> {
    let rest = rpc.strip_prefix("traces")?;
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let m = method.clone();
    Some(match (m, parts.as_slice()) {
        // MLflow 2's calls (`StartTrace`, `EndTrace`, `GetTraceInfo`): no `trace` in the body.
        (Method::POST, [""]) if !a.0.contains_key("trace") => start_trace_v2(t, p, ws, a).await,
        (Method::PATCH, [id]) => end_trace_v2(t, p, ws, id, a).await,
        (Method::GET, [id, "info"]) => match t.traces.get_trace_info(p, ws, id).await {
            Ok(info) => ok(json!({"trace_info": info_v2_json(&info)})),
            Err(e) => Err(e.into()),
        },
        (Method::POST, [""]) => start_trace(t, p, ws, a).await,
        (Method::POST, ["search"]) => search(t, p, ws, a).await,
        (Method::POST, ["calculate-filter-correlation"]) => correlation(t, p, ws, a).await,
        (Method::POST, ["metrics"]) => metrics(t, p, ws, a).await,
        (Method::GET, ["get"]) => {
            let id = match a.str("trace_id") {
                Ok(id) => id,
                Err(e) => return Some(Err(e)),
            };
            match t.traces.get_traces(p, ws, std::slice::from_ref(&id)).await {
                Ok(mut traces) => match traces.pop() {
                    Some(trace) => ok(json!({"trace": trace_json(&trace)})),
                    None => {
                        Err(tarn_core::Error::not_found(format!("Trace with ID '{id}'")).into())
                    }
                },
                Err(e) => Err(e.into()),
            }
        }
        (Method::GET, ["batchGet"]) => {
            let ids = a.strings("trace_ids");
            match t.traces.get_traces(p, ws, &ids).await {
                Ok(traces) => {
                    ok(json!({"traces": traces.iter().map(trace_json).collect::<Vec<_>>()}))
                }
                Err(e) => Err(e.into()),
            }
        }
        (Method::POST | Method::GET, ["batchGetInfos"]) => {
            let ids = a.strings("trace_ids");
            match t.traces.get_traces(p, ws, &ids).await {
                Ok(traces) => ok(
                    json!({"trace_infos": traces.iter().map(|t| info_json(&t.info)).collect::<Vec<_>>()}),
                ),
                Err(e) => Err(e.into()),
            }
        }
        (Method::POST, ["delete-traces"]) => delete(t, p, ws, a).await,
        (Method::POST, ["link-to-run"]) => {
            let result = async {
                let run_id = a.str("run_id")?;
                t.traces
                    .link_to_run(p, ws, &a.strings("trace_ids"), &run_id)
                    .await?;
                ok(json!({}))
            };
            result.await
        }
        (Method::GET, [id]) => match t.traces.get_trace_info(p, ws, id).await {
            Ok(info) => ok(json!({"trace": {"trace_info": info_json(&info)}})),
            Err(e) => Err(e.into()),
        },
        (Method::PATCH, [id, "tags"]) => {
            let result = async {
                t.traces
                    .set_tag(p, ws, id, &a.str("key")?, &a.str("value")?)
                    .await?;
                ok(json!({}))
            };
            result.await
        }
        (Method::DELETE, [id, "tags"]) => {
            let result = async {
                t.traces.delete_tag(p, ws, id, &a.str("key")?).await?;
                ok(json!({}))
            };
            result.await
        }
        (Method::POST, [id, "assessments"]) => {
            let result = async {
                let assessment = a
                    .0
                    .get("assessment")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or_else(|| {
                        MlflowError::invalid("Missing value for required parameter 'assessment'")
                    })?;
                let created = t.traces.create_assessment(p, ws, id, assessment).await?;
                ok(json!({"assessment": created}))
            };
            result.await
        }
        (Method::GET, [id, "assessments", aid]) => {
            match t.traces.get_assessment(p, ws, id, aid).await {
                Ok(a) => ok(json!({"assessment": a})),
                Err(e) => Err(e.into()),
            }
        }
        (Method::PATCH, [id, "assessments", aid]) => {
            let change =
                a.0.get("assessment")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
            let paths = mask(a.0.get("update_mask"));
            match t
                .traces
                .update_assessment(p, ws, id, aid, change, &paths)
                .await
            {
                Ok(a) => ok(json!({"assessment": a})),
                Err(e) => Err(e.into()),
            }
        }
        (Method::DELETE, [id, "assessments", aid]) => {
            match t.traces.delete_assessment(p, ws, id, aid).await {
                Ok(()) => ok(json!({})),
                Err(e) => Err(e.into()),
            }
        }
        _ => return None,
    })
}

/// MLflow 2's `TraceInfo`: times in milliseconds, `status`, tags and metadata as lists.
fn info_v2_json(r: &TraceRow) -> Value {
    let pairs = |pairs: &[(String, String)]| -> Vec<Value> {
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect()
    };
    json!({
        "request_id": r.trace_id,
        "experiment_id": r.experiment_id.to_string(),
        "timestamp_ms": r.request_time,
        "execution_time_ms": r.execution_duration,
        "status": match r.state.as_str() {
            "STATE_UNSPECIFIED" => "TRACE_STATUS_UNSPECIFIED",
            state => state,
        },
        "request_metadata": pairs(&r.metadata),
        "tags": pairs(&r.tags),
    })
}

/// MLflow 2's `[{"key": …, "value": …}]` lists (`request_metadata`, `tags`) as pairs.
fn key_values(a: &Args, key: &str) -> Vec<(String, String)> {
    a.each(key)
        .iter()
        .filter_map(|kv| {
            let text = |k: &str| match kv.get(k)? {
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            Some((text("key")?, text("value").unwrap_or_default()))
        })
        .collect()
}

async fn start_trace_v2(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    let stored = t
        .traces
        .start_trace_v2(
            p,
            ws,
            &a.str("experiment_id")?,
            a.opt_i64("timestamp_ms")?
                .ok_or_else(|| MlflowError::invalid(super::missing("timestamp_ms")))?,
            key_values(a, "request_metadata"),
            key_values(a, "tags"),
        )
        .await?;
    ok(json!({"trace_info": info_v2_json(&stored)}))
}

async fn end_trace_v2(t: &Tarn, p: &Principal, ws: &str, id: &str, a: &Args) -> Reply {
    let state = match a.opt_str("status")?.as_deref() {
        Some("OK") => "OK",
        Some("ERROR") => "ERROR",
        Some("IN_PROGRESS") => "IN_PROGRESS",
        None | Some("TRACE_STATUS_UNSPECIFIED") => "STATE_UNSPECIFIED",
        Some(other) => {
            return Err(MlflowError::invalid(format!(
                "Invalid trace status '{other}'"
            )));
        }
    };
    let end = TraceEnd {
        timestamp_ms: a
            .opt_i64("timestamp_ms")?
            .ok_or_else(|| MlflowError::invalid(super::missing("timestamp_ms")))?,
        state: state.into(),
        metadata: key_values(a, "request_metadata"),
        tags: key_values(a, "tags"),
    };
    let stored = t.traces.end_trace_v2(p, ws, id, end).await?;
    ok(json!({"trace_info": info_v2_json(&stored)}))
}

/// An enum field, sent by name or by number (`names[n - 1]`).
fn enum_name(v: &Value, names: &[&str]) -> String {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| names.get((n as usize).checked_sub(1)?))
            .map(|s| s.to_string())
            .unwrap_or_default(),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

async fn metrics(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    use tarn_core::trace_metrics::{Aggregation, MetricQuery};
    const AGGREGATIONS: &[&str] = &["COUNT", "SUM", "AVG", "PERCENTILE", "MIN", "MAX"];
    let view = a.0.get("view_type").cloned().unwrap_or_default();
    let q = MetricQuery {
        experiment_ids: a.strings("experiment_ids"),
        view_type: enum_name(&view, &["TRACES", "SPANS", "ASSESSMENTS"]),
        metric_name: a.str("metric_name")?,
        aggregations: a
            .each("aggregations")
            .iter()
            .map(|agg| Aggregation {
                kind: enum_name(&agg["aggregation_type"], AGGREGATIONS),
                percentile: agg["percentile_value"].as_f64(),
            })
            .collect(),
        dimensions: a.strings("dimensions"),
        filters: a.strings("filters"),
        time_interval_seconds: a.opt_i64("time_interval_seconds")?,
        start_time_ms: a.opt_i64("start_time_ms")?,
        end_time_ms: a.opt_i64("end_time_ms")?,
    };
    let points = t.traces.metrics(p, ws, &q).await?;
    let points: Vec<Value> = points
        .iter()
        .map(|d| json!({"metric_name": d.metric_name, "dimensions": d.dimensions, "values": d.values}))
        .collect();
    ok(json!({ "data_points": points }))
}

async fn correlation(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    let (first, second) = (a.str("filter_string1")?, a.str("filter_string2")?);
    let base = a.opt_str("base_filter")?;
    let c = t
        .traces
        .filter_correlation(
            p,
            ws,
            &a.strings("experiment_ids"),
            (&first, &second),
            base.as_deref(),
        )
        .await?;
    // Protobuf's JSON writes an undefined double as "NaN".
    let number = |v: f64| if v.is_nan() { json!("NaN") } else { json!(v) };
    ok(json!({
        "npmi": number(c.npmi),
        "npmi_smoothed": number(c.npmi_smoothed),
        "filter1_count": c.filter1_count,
        "filter2_count": c.filter2_count,
        "joint_count": c.joint_count,
        "total_count": c.total_count,
    }))
}

async fn start_trace(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    let info =
        a.0.get("trace")
            .and_then(|tr| tr.get("trace_info"))
            .ok_or_else(|| {
                MlflowError::invalid("Missing value for required parameter 'trace.trace_info'")
            })?;
    let (experiment, row, assessments) = read_info(info)?;
    let stored = t
        .traces
        .start_trace(p, ws, &experiment, row, assessments)
        .await?;
    ok(json!({"trace": {"trace_info": info_json(&stored)}}))
}

async fn search(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    let mut experiments = vec![];
    for location in a.each("locations") {
        experiments.push(location_experiment(Some(location))?);
    }
    // MLflow's v2 form.
    experiments.extend(a.strings("experiment_ids"));
    let max_results = a.opt_i64("max_results")?.unwrap_or(DEFAULT_MAX_RESULTS);
    let filter = a.opt_str("filter")?.unwrap_or_default();
    let search = TraceSearch {
        experiment_ids: experiments,
        filter,
        order_by: a.strings("order_by"),
        max_results,
        page_token: a.opt_str("page_token")?,
    };
    let (workspace_id, traces, next) = t.traces.search_cached(p, ws, &search).await?;
    // The page is written as text: each trace's info as kept from an earlier answer, or
    // built now (and kept for the next one).
    let mut body = String::with_capacity(64 + traces.len() * 1024);
    body.push_str(r#"{"traces":["#);
    let mut built = vec![];
    for (i, trace) in traces.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        match trace {
            CachedTrace::Info(text) => body.push_str(text),
            CachedTrace::Row(row, version) => {
                let info =
                    serde_json::to_string(&Info::from(&**row)).expect("a trace's info serializes");
                body.push_str(&info);
                built.push(KeptInfo {
                    trace_id: row.trace_id.clone(),
                    version: *version,
                    info,
                });
            }
        }
    }
    body.push(']');
    if let Some(next) = next {
        body.push_str(&format!(r#","next_page_token":"{next}""#));
    }
    body.push('}');
    t.traces.keep_infos(workspace_id, built);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn delete(t: &Tarn, p: &Principal, ws: &str, a: &Args) -> Reply {
    let experiment = a.str("experiment_id")?;
    let ids = a.strings("request_ids");
    let before = a.opt_i64("max_timestamp_millis")?;
    let which = match (before, ids.is_empty()) {
        (Some(max_timestamp_ms), true) => TraceDeletion::Before {
            max_timestamp_ms,
            max_traces: a.opt_i64("max_traces")?,
        },
        (None, false) => TraceDeletion::Ids(ids),
        _ => {
            return Err(MlflowError::invalid(
                "Exactly one of 'max_timestamp_millis' and 'request_ids' must be specified.",
            ));
        }
    };
    let n = t.traces.delete(p, ws, &experiment, which).await?;
    ok(json!({"traces_deleted": n}))
}

/// `POST /v1/traces`: an OTLP export into the experiment `x-mlflow-experiment-id` names.
pub(super) async fn otlp_export(
    t: &Tarn,
    p: &Principal,
    ws: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(experiment) = header("x-mlflow-experiment-id") else {
        return Err(MlflowError::invalid(
            "Missing header 'x-mlflow-experiment-id': the experiment the spans belong to",
        ));
    };
    let content_type = header("content-type").unwrap_or_default();
    let request = crate::otlp::read(body, content_type, header("content-encoding"))
        .map_err(|e| MlflowError::invalid(e.0))?;
    let spans = crate::otlp::spans(&request).map_err(|e| MlflowError::invalid(e.0))?;
    t.traces.log_spans(p, ws, experiment, spans).await?;
    // An empty ExportTraceServiceResponse, in the request's encoding.
    Ok(if content_type.starts_with("application/json") {
        axum::Json(json!({})).into_response()
    } else {
        (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_masks_read_as_protobuf_writes_them() {
        assert_eq!(duration_text(1500), "1.500s");
        assert_eq!(duration_ms("1.500s"), Some(1500));
        assert_eq!(duration_ms("0.000250s"), Some(0));
        assert_eq!(duration_ms("12s"), Some(12_000));
        assert_eq!(duration_ms("soon"), None);
        assert_eq!(
            mask(Some(&json!("assessmentName,feedback"))),
            vec!["assessment_name", "feedback"]
        );
    }
}
