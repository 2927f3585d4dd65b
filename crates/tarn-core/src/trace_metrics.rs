//! Aggregates over an experiment's traces, spans or assessments (MLflow's
//! `QueryTraceMetrics`, what MLflow's UI charts read), as MLflow's SQL store computes them:
//! counts, latency, token usage, LLM costs and assessment values, grouped by the view's
//! dimensions (trace name or status; span name, type, status, model or provider; assessment
//! name or value) and optionally by time bucket; averages, sums, minimums, maximums and
//! percentiles (linear interpolation, as `numpy.quantile` and PostgreSQL's `percentile_cont`).
//! A group with a missing dimension value is left out, as MLflow leaves it out.

use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::traces::Traces;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use tarn_store::{AssessmentFacts, SpanFacts, TraceFacts};

/// MLflow's cap on data points (`MAX_RESULTS_QUERY_TRACE_METRICS`).
pub const MAX_DATA_POINTS: usize = 1000;

/// One aggregation: `COUNT`, `SUM`, `AVG`, `MIN`, `MAX` or `PERCENTILE` (with its value, 0–100).
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    pub kind: String,
    pub percentile: Option<f64>,
}

impl Aggregation {
    /// Its name in a data point's values, as MLflow writes it (`AVG`, `P50.0`).
    fn label(&self) -> String {
        match self.percentile {
            Some(p) if p.fract() == 0.0 => format!("P{p:.1}"),
            Some(p) => format!("P{p}"),
            None => self.kind.clone(),
        }
    }
}

/// A metrics query, as MLflow's client sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricQuery {
    pub experiment_ids: Vec<String>,
    /// `TRACES`, `SPANS` or `ASSESSMENTS`.
    pub view_type: String,
    pub metric_name: String,
    pub aggregations: Vec<Aggregation>,
    pub dimensions: Vec<String>,
    pub filters: Vec<String>,
    pub time_interval_seconds: Option<i64>,
    pub start_time_ms: Option<i64>,
    pub end_time_ms: Option<i64>,
}

/// MLflow's `MetricDataPoint`: one group's values.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    pub metric_name: String,
    pub dimensions: BTreeMap<String, String>,
    pub values: BTreeMap<String, f64>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

/// The aggregations and dimensions a view's metric allows (MLflow's
/// `VIEW_TYPE_CONFIGS`).
fn allowed(view: &str, metric: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    const MEASURE: &[&str] = &["SUM", "AVG", "PERCENTILE"];
    const MODEL: &[&str] = &["span_model_name", "span_model_provider"];
    match (view, metric) {
        ("TRACES", "trace_count") => Some((&["COUNT"], &["trace_name", "trace_status"])),
        ("TRACES", "latency") => Some((&["AVG", "PERCENTILE"], &["trace_name"])),
        (
            "TRACES",
            "input_tokens"
            | "output_tokens"
            | "total_tokens"
            | "cache_read_input_tokens"
            | "cache_creation_input_tokens",
        ) => Some((MEASURE, &["trace_name"])),
        ("SPANS", "span_count") => Some((
            &["COUNT"],
            &[
                "span_name",
                "span_type",
                "span_status",
                "span_model_name",
                "span_model_provider",
            ],
        )),
        ("SPANS", "latency") => Some((&["AVG", "PERCENTILE"], &["span_name", "span_status"])),
        ("SPANS", "input_cost" | "output_cost" | "total_cost") => Some((MEASURE, MODEL)),
        ("ASSESSMENTS", "assessment_count") => {
            Some((&["COUNT"], &["assessment_name", "assessment_value"]))
        }
        ("ASSESSMENTS", "assessment_value") => Some((&["AVG", "PERCENTILE"], &["assessment_name"])),
        _ => None,
    }
}

/// A view's own filters (`span.name = 'x'`, `assessment.type = 'feedback'`), by key.
type OwnFilters = Vec<(String, String)>;

/// Splits a query's filters: trace filters (`trace.status = …`, `trace.tag.<key> = …`,
/// `trace.metadata.<key> = …`, in MLflow's trace search grammar) and the view's own
/// (`span.name|type|status = '…'`, `assessment.name|type = '…'`).
fn split_filters(view: &str, filters: &[String]) -> Result<(Vec<String>, OwnFilters)> {
    let (mut traces, mut own) = (vec![], vec![]);
    for filter in filters {
        let f = filter.trim();
        if let Some(rest) = f.strip_prefix("trace.tag.") {
            traces.push(format!("tags.{rest}"));
        } else if let Some(rest) = f.strip_prefix("trace.metadata.") {
            traces.push(format!("metadata.{rest}"));
        } else if f.starts_with("trace.status") {
            traces.push(f.to_string());
        } else if let Some((entity, rest)) = f.split_once('.') {
            let keys: &[&str] = match (view, entity) {
                ("SPANS", "span") => &["name", "type", "status"],
                ("ASSESSMENTS", "assessment") => &["name", "type"],
                _ => &[],
            };
            let parsed = rest.split_once('=').map(|(k, v)| {
                let v = v.trim();
                (
                    k.trim(),
                    v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')),
                )
            });
            match parsed {
                Some((key, Some(value))) if keys.contains(&key) => {
                    own.push((key.to_string(), value.to_string()));
                }
                _ => {
                    return Err(invalid(format!(
                        "Invalid filter '{filter}' for the {view} view: filter by trace.status, trace.tag.<key>, trace.metadata.<key>{}",
                        match view {
                            "SPANS" => ", or span.name, span.type, span.status = '<value>'",
                            "ASSESSMENTS" => ", or assessment.name, assessment.type = '<value>'",
                            _ => "",
                        }
                    )));
                }
            }
        } else {
            return Err(invalid(format!("Invalid filter '{filter}'")));
        }
    }
    Ok((traces, own))
}

/// The `q`-quantile (0–1) of sorted values, interpolated linearly between neighbours.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (j, g) = (at.floor() as usize, at.fract());
    match sorted.get(j + 1) {
        Some(next) => (1.0 - g) * sorted[j] + g * next,
        None => sorted[j],
    }
}

/// One thing a metric counts or measures: when (ms), its dimension values, its value.
struct Fact {
    at_ms: i64,
    dims: BTreeMap<&'static str, Option<String>>,
    value: Option<f64>,
}

/// A number in a JSON object of numbers (token usage, costs) held as text.
fn number_in(text: Option<&str>, key: &str) -> Option<f64> {
    let v: Json = serde_json::from_str(text?).ok()?;
    v.get(key)?.as_f64()
}

fn trace_fact(metric: &str, t: &TraceFacts) -> Fact {
    Fact {
        at_ms: t.request_time,
        dims: BTreeMap::from([
            ("trace_name", t.name.clone()),
            ("trace_status", Some(t.state.clone())),
        ]),
        value: match metric {
            "trace_count" => Some(1.0),
            "latency" => t.execution_duration.map(|d| d as f64),
            tokens => number_in(t.token_usage.as_deref(), tokens),
        },
    }
}

fn span_fact(metric: &str, s: &SpanFacts) -> Fact {
    Fact {
        at_ms: s.start_ns / 1_000_000,
        dims: BTreeMap::from([
            ("span_name", Some(s.name.clone())),
            ("span_type", s.span_type.clone()),
            ("span_status", Some(s.status.clone())),
            ("span_model_name", s.model.clone()),
            ("span_model_provider", s.provider.clone()),
        ]),
        value: match metric {
            "span_count" => Some(1.0),
            "latency" => s.end_ns.map(|e| ((e - s.start_ns) / 1_000_000) as f64),
            cost => number_in(s.cost.as_deref(), cost),
        },
    }
}

/// An assessment's value as MLflow counts it: true/"yes" 1, false/"no" 0, a number itself,
/// anything else none.
fn assessment_number(v: &Json) -> Option<f64> {
    match v {
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Json::String(s) if s == "yes" => Some(1.0),
        Json::String(s) if s == "no" => Some(0.0),
        Json::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn assessment_fact(metric: &str, a: &AssessmentFacts) -> Fact {
    let value = &a.content[a.kind.as_str()]["value"];
    Fact {
        at_ms: a.created,
        dims: BTreeMap::from([
            ("assessment_name", Some(a.name.clone())),
            // MLflow groups by the value's JSON text.
            ("assessment_value", Some(value.to_string())),
        ]),
        value: match metric {
            "assessment_count" => Some(1.0),
            _ => assessment_number(value),
        },
    }
}

/// A time bucket's start as MLflow writes it (`datetime.isoformat()` in UTC).
fn bucket_text(ms: i64) -> String {
    // Buckets start on whole seconds: `….000Z` becomes `…+00:00`.
    let text = tarn_spec::trigger::rfc3339_ms(ms);
    format!("{}+00:00", text.strip_suffix(".000Z").unwrap_or(&text))
}

/// Groups the facts by the dimensions (and time bucket) and aggregates each group, in the
/// groups' order (time, then dimension values).
fn aggregate(q: &MetricQuery, facts: impl IntoIterator<Item = Fact>) -> Vec<DataPoint> {
    let bucket_ms = q.time_interval_seconds.map(|s| s * 1000);
    let mut groups: BTreeMap<(Option<i64>, Vec<String>), Vec<f64>> = BTreeMap::new();
    for f in facts {
        let Some(v) = f.value else {
            continue;
        };
        // A fact missing a dimension value is left out (MLflow drops such groups).
        let Some(dims) = q
            .dimensions
            .iter()
            .map(|d| f.dims.get(d.as_str()).cloned().flatten())
            .collect::<Option<Vec<String>>>()
        else {
            continue;
        };
        let bucket = bucket_ms.map(|b| f.at_ms.div_euclid(b) * b);
        groups.entry((bucket, dims)).or_default().push(v);
    }
    groups
        .into_iter()
        .take(MAX_DATA_POINTS)
        .map(|((bucket, dims), mut values)| {
            values.sort_by(f64::total_cmp);
            let mut dimensions: BTreeMap<String, String> =
                q.dimensions.iter().cloned().zip(dims).collect();
            if let Some(b) = bucket {
                dimensions.insert("time_bucket".into(), bucket_text(b));
            }
            let n = values.len() as f64;
            let sum: f64 = values.iter().sum();
            let values = q
                .aggregations
                .iter()
                .map(|a| {
                    let v = match (a.kind.as_str(), a.percentile) {
                        ("COUNT", _) => n,
                        ("SUM", _) => sum,
                        ("AVG", _) => sum / n,
                        ("MIN", _) => values[0],
                        ("MAX", _) => values[values.len() - 1],
                        (_, p) => quantile(&values, p.unwrap_or(50.0) / 100.0),
                    };
                    (a.label(), v)
                })
                .collect();
            DataPoint {
                metric_name: q.metric_name.clone(),
                dimensions,
                values,
            }
        })
        .collect()
}

/// Checks a query against its view's metric, aggregations, dimensions and time range.
fn check(q: &MetricQuery) -> Result<()> {
    if !["TRACES", "SPANS", "ASSESSMENTS"].contains(&q.view_type.as_str()) {
        return Err(invalid(format!(
            "Invalid view_type '{}': one of TRACES, SPANS, ASSESSMENTS",
            q.view_type
        )));
    }
    let Some((aggregations, dimensions)) = allowed(&q.view_type, &q.metric_name) else {
        return Err(invalid(format!(
            "Unsupported metric '{}' for the {} view",
            q.metric_name, q.view_type
        )));
    };
    if q.aggregations.is_empty() {
        return Err(invalid("At least one aggregation is required"));
    }
    for a in &q.aggregations {
        if !aggregations.contains(&a.kind.as_str()) {
            return Err(invalid(format!(
                "Aggregation {} is not supported for metric '{}': use {}",
                a.kind,
                q.metric_name,
                aggregations.join(", ")
            )));
        }
        match (a.kind == "PERCENTILE", a.percentile) {
            (true, Some(p)) if (0.0..=100.0).contains(&p) => {}
            (true, _) => {
                return Err(invalid(
                    "A PERCENTILE aggregation needs a percentile_value between 0 and 100",
                ));
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "percentile_value is only allowed for the PERCENTILE aggregation",
                ));
            }
            (false, None) => {}
        }
    }
    for d in &q.dimensions {
        if !dimensions.contains(&d.as_str()) {
            return Err(invalid(format!(
                "Dimension '{d}' is not supported for metric '{}': use {}",
                q.metric_name,
                dimensions.join(", ")
            )));
        }
    }
    match q.time_interval_seconds {
        Some(s) if s <= 0 => Err(invalid("time_interval_seconds must be positive")),
        Some(_) if q.start_time_ms.is_none() || q.end_time_ms.is_none() => Err(invalid(
            "start_time_ms and end_time_ms are required if time_interval_seconds is set",
        )),
        _ => Ok(()),
    }
}

impl Traces {
    /// The data points of a metrics query over the experiments' traces, spans or
    /// assessments (of traces that started in the time range).
    pub async fn metrics(
        &self,
        p: &Principal,
        workspace: &str,
        q: &MetricQuery,
    ) -> Result<Vec<DataPoint>> {
        check(q)?;
        let (mut filter, own) = split_filters(&q.view_type, &q.filters)?;
        if let Some(start) = q.start_time_ms {
            filter.push(format!("trace.timestamp_ms >= {start}"));
        }
        if let Some(end) = q.end_time_ms {
            filter.push(format!("trace.timestamp_ms <= {end}"));
        }
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        let clauses = self.filter_clauses(&ws, &filter.join(" AND ")).await?;
        let experiments = self.experiment_ids(&ws, &q.experiment_ids).await?;
        let metric = q.metric_name.as_str();
        Ok(match q.view_type.as_str() {
            "SPANS" => {
                let spans = self
                    .store
                    .span_facts(&ws.id, &experiments, &clauses, &own)
                    .await?;
                aggregate(q, spans.iter().map(|s| span_fact(metric, s)))
            }
            "ASSESSMENTS" => {
                let assessments = self
                    .store
                    .assessment_facts(&ws.id, &experiments, &clauses, &own)
                    .await?;
                aggregate(q, assessments.iter().map(|a| assessment_fact(metric, a)))
            }
            _ => {
                let traces = self
                    .store
                    .trace_facts(&ws.id, &experiments, &clauses)
                    .await?;
                aggregate(q, traces.iter().map(|t| trace_fact(metric, t)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(q: &MetricQuery, traces: &[TraceFacts]) -> Vec<Fact> {
        traces
            .iter()
            .map(|t| trace_fact(&q.metric_name, t))
            .collect()
    }

    fn trace(
        at: i64,
        ms: Option<i64>,
        state: &str,
        name: &str,
        tokens: Option<&str>,
    ) -> TraceFacts {
        TraceFacts {
            request_time: at,
            execution_duration: ms,
            state: state.into(),
            name: Some(name.into()),
            token_usage: tokens.map(str::to_string),
        }
    }

    /// Counts by status (in the groups' order), latency percentiles interpolated as numpy's
    /// quantile, token sums from the usage metadata, and hour buckets named by their start.
    #[test]
    fn groups_aggregate_as_mlflow_computes_them() {
        let traces = [
            trace(0, Some(10), "OK", "a", Some(r#"{"total_tokens": 5}"#)),
            trace(1, Some(20), "OK", "a", Some(r#"{"total_tokens": 7}"#)),
            trace(3_600_000, Some(40), "ERROR", "b", None),
        ];
        let count = MetricQuery {
            view_type: "TRACES".into(),
            metric_name: "trace_count".into(),
            aggregations: vec![Aggregation {
                kind: "COUNT".into(),
                percentile: None,
            }],
            dimensions: vec!["trace_status".into()],
            ..Default::default()
        };
        let points = aggregate(&count, facts(&count, &traces));
        let got: Vec<(&str, f64)> = points
            .iter()
            .map(|p| (p.dimensions["trace_status"].as_str(), p.values["COUNT"]))
            .collect();
        assert_eq!(got, [("ERROR", 1.0), ("OK", 2.0)]);

        let latency = MetricQuery {
            metric_name: "latency".into(),
            aggregations: vec![
                Aggregation {
                    kind: "PERCENTILE".into(),
                    percentile: Some(50.0),
                },
                Aggregation {
                    kind: "PERCENTILE".into(),
                    percentile: Some(90.0),
                },
                Aggregation {
                    kind: "AVG".into(),
                    percentile: None,
                },
            ],
            dimensions: vec![],
            ..count.clone()
        };
        let [p] = &aggregate(&latency, facts(&latency, &traces))[..] else {
            panic!()
        };
        assert_eq!(p.values["P50.0"], 20.0);
        assert!((p.values["P90.0"] - 36.0).abs() < 1e-9, "{:?}", p.values);
        assert!((p.values["AVG"] - 70.0 / 3.0).abs() < 1e-9);

        let tokens = MetricQuery {
            metric_name: "total_tokens".into(),
            aggregations: vec![Aggregation {
                kind: "SUM".into(),
                percentile: None,
            }],
            time_interval_seconds: Some(3600),
            ..latency
        };
        let points = aggregate(&tokens, facts(&tokens, &traces));
        assert_eq!(points.len(), 1, "a trace without usage counts for nothing");
        assert_eq!(points[0].values["SUM"], 12.0);
        assert_eq!(
            points[0].dimensions["time_bucket"],
            "1970-01-01T00:00:00+00:00"
        );

        let mut unnamed = traces[0].clone();
        unnamed.name = None;
        let by_name = MetricQuery {
            dimensions: vec!["trace_name".into()],
            ..count
        };
        let names: Vec<String> =
            aggregate(&by_name, facts(&by_name, &[unnamed, traces[2].clone()]))
                .iter()
                .map(|p| p.dimensions["trace_name"].clone())
                .collect();
        assert_eq!(
            names,
            ["b"],
            "a trace without a name is not in a by-name group"
        );
    }

    #[test]
    fn filters_split_into_trace_filters_and_the_views_own() {
        let filters = [
            "trace.tag.env = 'prod'".to_string(),
            "trace.metadata.`mlflow.user` = 'x'".to_string(),
            "span.type = 'LLM'".to_string(),
        ];
        let (traces, own) = split_filters("SPANS", &filters).unwrap();
        assert_eq!(
            traces,
            ["tags.env = 'prod'", "metadata.`mlflow.user` = 'x'"]
        );
        assert_eq!(own, [("type".to_string(), "LLM".to_string())]);
        assert!(
            split_filters("TRACES", &filters).is_err(),
            "span filters only on spans"
        );
        assert!(split_filters("ASSESSMENTS", &["assessment.value = '1'".into()]).is_err());
    }

    /// Span latency and counts by model (a span without one is left out); assessment values
    /// as MLflow counts them (true 1, "no" 0, text none), grouped by their JSON text.
    #[test]
    fn spans_and_assessments_aggregate_as_mlflow_computes_them() {
        let span = |start_ms: i64, end_ms: i64, model: Option<&str>| SpanFacts {
            start_ns: start_ms * 1_000_000,
            end_ns: Some(end_ms * 1_000_000),
            name: "llm".into(),
            span_type: Some("LLM".into()),
            status: "OK".into(),
            model: model.map(str::to_string),
            provider: None,
            cost: Some(r#"{"total_cost": 0.5}"#.into()),
        };
        let spans = [
            span(0, 30, Some("gpt")),
            span(5, 15, Some("gpt")),
            span(9, 10, None),
        ];
        let q = MetricQuery {
            view_type: "SPANS".into(),
            metric_name: "total_cost".into(),
            aggregations: vec![Aggregation {
                kind: "SUM".into(),
                percentile: None,
            }],
            dimensions: vec!["span_model_name".into()],
            ..Default::default()
        };
        let points = aggregate(&q, spans.iter().map(|s| span_fact(&q.metric_name, s)));
        assert_eq!(points.len(), 1);
        assert_eq!(
            (
                points[0].dimensions["span_model_name"].as_str(),
                points[0].values["SUM"]
            ),
            ("gpt", 1.0)
        );
        let latency = MetricQuery {
            metric_name: "latency".into(),
            aggregations: vec![Aggregation {
                kind: "AVG".into(),
                percentile: None,
            }],
            dimensions: vec!["span_name".into()],
            ..q
        };
        let points = aggregate(&latency, spans.iter().map(|s| span_fact("latency", s)));
        assert!(
            (points[0].values["AVG"] - 41.0 / 3.0).abs() < 1e-9,
            "{points:?}"
        );

        let assessment = |value: Json| AssessmentFacts {
            created: 1,
            name: "ok".into(),
            kind: "feedback".into(),
            content: serde_json::json!({"feedback": {"value": value}}),
        };
        let all = [
            assessment(Json::Bool(true)),
            assessment(Json::from("no")),
            assessment(Json::from(0.5)),
            assessment(Json::from("maybe")),
        ];
        let q = MetricQuery {
            view_type: "ASSESSMENTS".into(),
            metric_name: "assessment_value".into(),
            aggregations: vec![Aggregation {
                kind: "AVG".into(),
                percentile: None,
            }],
            dimensions: vec!["assessment_name".into()],
            ..Default::default()
        };
        let points = aggregate(&q, all.iter().map(|a| assessment_fact(&q.metric_name, a)));
        assert_eq!(
            points[0].values["AVG"], 0.5,
            "(1 + 0 + 0.5) / 3; text counts for nothing"
        );
        let counts = MetricQuery {
            metric_name: "assessment_count".into(),
            aggregations: vec![Aggregation {
                kind: "COUNT".into(),
                percentile: None,
            }],
            dimensions: vec!["assessment_value".into()],
            ..q
        };
        let values: Vec<String> = aggregate(
            &counts,
            all.iter().map(|a| assessment_fact("assessment_count", a)),
        )
        .iter()
        .map(|p| p.dimensions["assessment_value"].clone())
        .collect();
        assert_eq!(values, ["\"maybe\"", "\"no\"", "0.5", "true"]);
    }
}
