//! Aggregates over an experiment's traces (MLflow's `QueryTraceMetrics`, what MLflow's UI
//! charts read): the trace count by name or status, latency and token usage by name —
//! averages, sums and percentiles (linear interpolation, as `numpy.quantile` and PostgreSQL's
//! `percentile_cont`) — optionally in time buckets, over traces filtered by status, tag or
//! metadata. Only the traces view is in Tarn: the spans and assessments views are refused,
//! saying so.

use crate::authz::{Action, Principal};
use crate::error::{Error, Result};
use crate::traces::Traces;
use std::collections::BTreeMap;
use tarn_spec::mlflow_search::{self, Subject};
use tarn_store::TraceFacts;

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

/// The aggregations and dimensions a traces-view metric allows (MLflow's
/// `TRACES_METRICS_CONFIGS`).
fn allowed(metric: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    const TOKENS: &[&str] = &["SUM", "AVG", "PERCENTILE"];
    match metric {
        "trace_count" => Some((&["COUNT"], &["trace_name", "trace_status"])),
        "latency" => Some((&["AVG", "PERCENTILE"], &["trace_name"])),
        "input_tokens"
        | "output_tokens"
        | "total_tokens"
        | "cache_read_input_tokens"
        | "cache_creation_input_tokens" => Some((TOKENS, &["trace_name"])),
        _ => None,
    }
}

/// A metrics filter (`trace.status = 'OK'`, `trace.tag.<key> = …`, `trace.metadata.<key> =
/// …`) in MLflow's trace search grammar.
fn as_trace_filter(filter: &str) -> Result<String> {
    let f = filter.trim();
    if let Some(rest) = f.strip_prefix("trace.tag.") {
        return Ok(format!("tags.{rest}"));
    }
    if let Some(rest) = f.strip_prefix("trace.metadata.") {
        return Ok(format!("metadata.{rest}"));
    }
    if f.starts_with("trace.status") {
        return Ok(f.to_string());
    }
    Err(invalid(format!(
        "Invalid filter '{filter}' for the TRACES view: filter by trace.status, trace.tag.<key> or trace.metadata.<key>"
    )))
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

/// The value of `metric` for a trace, if it has one.
fn value_of(metric: &str, t: &TraceFacts) -> Option<f64> {
    match metric {
        "trace_count" => Some(1.0),
        "latency" => t.execution_duration.map(|d| d as f64),
        tokens => {
            let usage: serde_json::Value = serde_json::from_str(t.token_usage.as_deref()?).ok()?;
            usage.get(tokens)?.as_f64()
        }
    }
}

/// A time bucket's start as MLflow writes it (`datetime.isoformat()` in UTC).
fn bucket_text(ms: i64) -> String {
    // Buckets start on whole seconds: `….000Z` becomes `…+00:00`.
    let text = tarn_spec::trigger::rfc3339_ms(ms);
    format!("{}+00:00", text.strip_suffix(".000Z").unwrap_or(&text))
}

/// Groups the traces by the dimensions (and time bucket) and aggregates each group, in the
/// groups' order (time, then dimension values).
fn aggregate(q: &MetricQuery, traces: &[TraceFacts]) -> Vec<DataPoint> {
    let bucket_ms = q.time_interval_seconds.map(|s| s * 1000);
    let mut groups: BTreeMap<(Option<i64>, Vec<String>), Vec<f64>> = BTreeMap::new();
    for t in traces {
        let Some(v) = value_of(&q.metric_name, t) else {
            continue;
        };
        // Grouped by name, a trace without one is left out (MLflow joins the name tag).
        let Some(dims) = q
            .dimensions
            .iter()
            .map(|d| match d.as_str() {
                "trace_name" => t.name.clone(),
                _ => Some(t.state.clone()),
            })
            .collect::<Option<Vec<String>>>()
        else {
            continue;
        };
        let bucket = bucket_ms.map(|b| t.request_time.div_euclid(b) * b);
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

impl Traces {
    /// The data points of a metrics query over the experiments' traces.
    pub async fn metrics(
        &self,
        p: &Principal,
        workspace: &str,
        q: &MetricQuery,
    ) -> Result<Vec<DataPoint>> {
        if q.view_type != "TRACES" {
            return Err(invalid(format!(
                "Trace metrics over the {} view are not in Tarn: only the TRACES view is",
                q.view_type
            )));
        }
        let Some((aggregations, dimensions)) = allowed(&q.metric_name) else {
            return Err(invalid(format!(
                "Unsupported metric '{}' for the TRACES view: one of trace_count, latency, input_tokens, output_tokens, total_tokens, cache_read_input_tokens, cache_creation_input_tokens",
                q.metric_name
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
            Some(s) if s <= 0 => {
                return Err(invalid("time_interval_seconds must be positive"));
            }
            Some(_) if q.start_time_ms.is_none() || q.end_time_ms.is_none() => {
                return Err(invalid(
                    "start_time_ms and end_time_ms are required if time_interval_seconds is set",
                ));
            }
            _ => {}
        }
        let mut filter: Vec<String> = q
            .filters
            .iter()
            .map(|f| as_trace_filter(f))
            .collect::<Result<_>>()?;
        if let Some(start) = q.start_time_ms {
            filter.push(format!("trace.timestamp_ms >= {start}"));
        }
        if let Some(end) = q.end_time_ms {
            filter.push(format!("trace.timestamp_ms <= {end}"));
        }
        let clauses = mlflow_search::parse_filter_of(Subject::Traces, &filter.join(" AND "))
            .map_err(invalid)?;
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        let mut experiments = vec![];
        for id in &q.experiment_ids {
            experiments.push(self.tracking.experiment(&ws, id).await?.experiment_id);
        }
        let traces = self
            .store
            .trace_facts(&ws.id, &experiments, &clauses)
            .await?;
        Ok(aggregate(q, &traces))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let points = aggregate(&count, &traces);
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
        let [p] = &aggregate(&latency, &traces)[..] else {
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
        let points = aggregate(&tokens, &traces);
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
        let names: Vec<String> = aggregate(&by_name, &[unnamed, traces[2].clone()])
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
    fn metrics_filters_become_trace_filters() {
        assert_eq!(
            as_trace_filter("trace.tag.env = 'prod'").unwrap(),
            "tags.env = 'prod'"
        );
        assert_eq!(
            as_trace_filter("trace.metadata.`mlflow.user` = 'x'").unwrap(),
            "metadata.`mlflow.user` = 'x'"
        );
        assert!(as_trace_filter("span.name = 'x'").is_err());
    }
}
