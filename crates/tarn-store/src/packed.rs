//! What a backend's SQL hands back in packed form, read the same way for every database: a
//! page of runs and their data as JSON arrays the database builds (SQLite's
//! `json_group_array`, PostgreSQL's `json_agg`), and metric history chunks. Only SQL differs
//! per backend; these rules live once. Rows cross from a database driver one at a time, which
//! is what made searches slow when each run and each tag was a row of its own.

use crate::tracking::{MetricRow, RunData, RunRow};
use crate::{Result, StoreError};
use std::collections::HashMap;

/// A run's data, each part a flat JSON array of tuples led by the run id:
/// `params`/`tags` `[run, key, value]`; `metrics` `[run, key, value text, is_nan, timestamp,
/// step]`; `inputs` `[run, name, digest, dataset JSON text, tags JSON text]`; `models`
/// `[run, direction, model id, step]`.
pub struct RunDataParts {
    pub params: String,
    pub tags: String,
    pub metrics: String,
    pub inputs: String,
    pub models: String,
}

fn column<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>> {
    serde_json::from_str(text).map_err(StoreError::Corrupt)
}

/// A page of runs, `[run_id, experiment_id, run_name, user_id, status, start_time, end_time,
/// lifecycle_stage, artifact_uri]` each, in the page's order.
pub fn runs(workspace_id: &str, text: &str) -> Result<Vec<RunRow>> {
    type Run = (
        String,
        i64,
        String,
        String,
        String,
        Option<i64>,
        Option<i64>,
        String,
        String,
    );
    Ok(column::<Run>(text)?
        .into_iter()
        .map(
            |(run_id, experiment_id, run_name, user_id, status, start, end, stage, uri)| RunRow {
                workspace_id: workspace_id.to_string(),
                run_id,
                experiment_id,
                run_name,
                user_id,
                status,
                start_time: start,
                end_time: end,
                lifecycle_stage: stage,
                artifact_uri: uri,
            },
        )
        .collect())
}

/// The runs' data, each run's items sorted (params, tags and metrics by key; inputs by name
/// and digest; models by direction and id) so every backend answers alike.
pub fn run_data(run_ids: &[String], parts: &RunDataParts) -> Result<HashMap<String, RunData>> {
    let mut out: HashMap<String, RunData> = run_ids
        .iter()
        .map(|id| (id.clone(), RunData::default()))
        .collect();
    for (run, key, value) in column::<(String, String, String)>(&parts.params)? {
        if let Some(d) = out.get_mut(&run) {
            d.params.push((key, value));
        }
    }
    for (run, key, value) in column::<(String, String, String)>(&parts.tags)? {
        if let Some(d) = out.get_mut(&run) {
            d.tags.push((key, value));
        }
    }
    // The value is null for NaN on PostgreSQL (SQLite's printf makes it empty text).
    type Metric = (String, String, Option<String>, i64, i64, i64);
    for (run, key, value, is_nan, timestamp, step) in column::<Metric>(&parts.metrics)? {
        if let Some(d) = out.get_mut(&run) {
            d.metrics.push(MetricRow {
                key,
                value: match value {
                    Some(text) if is_nan == 0 => parse_real(&text),
                    _ => f64::NAN,
                },
                timestamp,
                step,
            });
        }
    }
    let mut inputs = column::<(String, String, String, String, String)>(&parts.inputs)?;
    inputs.sort_unstable_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    for (run, _, _, dataset, tags) in inputs {
        if let Some(d) = out.get_mut(&run) {
            let dataset = serde_json::from_str(&dataset).map_err(StoreError::Corrupt)?;
            let tags = serde_json::from_str(&tags).map_err(StoreError::Corrupt)?;
            d.inputs.push((dataset, tags));
        }
    }
    let mut models = column::<(String, String, String, i64)>(&parts.models)?;
    models.sort_unstable_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    for (run, direction, model_id, step) in models {
        if let Some(d) = out.get_mut(&run) {
            match direction.as_str() {
                "input" => d.model_inputs.push(model_id),
                _ => d.model_outputs.push((model_id, step)),
            }
        }
    }
    for d in out.values_mut() {
        d.params.sort_unstable();
        d.tags.sort_unstable();
        d.metrics.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(out)
}

/// One point of a history chunk, `[step,timestamp,value]`: the value a string that parses back
/// to the same `f64` (Rust's shortest round-trip form; JSON numbers would not round-trip
/// exactly, and JSON has no NaN or infinities), or null for NaN.
pub fn push_point(out: &mut String, m: &MetricRow) {
    use std::fmt::Write;
    let _ = if m.value.is_nan() {
        write!(out, "[{},{},null]", m.step, m.timestamp)
    } else {
        write!(out, "[{},{},\"{:e}\"]", m.step, m.timestamp, m.value)
    };
}

/// A metric value as the SQL sends it: `%!.17g` text (SQLite's printf; `Inf`, `-Inf`), or
/// PostgreSQL's shortest exact text (`Infinity`), both of which Rust reads back exactly.
pub fn parse_real(text: &str) -> f64 {
    match text {
        "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t.parse().unwrap_or(f64::NAN),
    }
}

pub fn decode_value(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(f64::NAN),
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// At most `points` of a history (in step order) for a chart: all of it when that short,
/// else the first point at or after each of `points` evenly spaced steps.
pub fn sample(all: Vec<MetricRow>, points: usize) -> Vec<MetricRow> {
    if all.len() <= points {
        return all;
    }
    let (lo, hi) = (all[0].step, all[all.len() - 1].step);
    let mut picked: Vec<usize> = (0..points)
        .map(|i| {
            let target = lo + (hi - lo) * i as i64 / (points as i64 - 1);
            all.partition_point(|m| m.step < target).min(all.len() - 1)
        })
        .collect();
    picked.dedup();
    picked.into_iter().map(|i| all[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_run_data_is_grouped_by_run_and_sorted() {
        let ids = vec!["a".to_string(), "b".to_string()];
        let data = run_data(
            &ids,
            &RunDataParts {
                params: r#"[["b","lr","0.1"],["a","z","1"],["a","b","2"]]"#.into(),
                tags: "[]".into(),
                metrics: r#"[["a","loss","0.30000000000000004",0,5,1],["a","acc","Inf",0,5,1],["a","pg","-Infinity",0,5,1],["b","x",null,1,1,1]]"#.into(),
                inputs: "[]".into(),
                models: r#"[["a","output","m-2",3],["a","input","m-1",0]]"#.into(),
            },
        )
        .unwrap();
        let a = &data["a"];
        assert_eq!(
            a.params,
            [("b".into(), "2".into()), ("z".into(), "1".into())]
        );
        assert_eq!(a.metrics[0].key, "acc");
        assert_eq!(a.metrics[0].value, f64::INFINITY);
        assert_eq!(a.metrics[1].value, 0.1 + 0.2);
        assert_eq!(a.metrics[2].value, f64::NEG_INFINITY);
        assert_eq!(a.model_inputs, ["m-1"]);
        assert_eq!(a.model_outputs, [("m-2".to_string(), 3)]);
        assert!(data["b"].metrics[0].value.is_nan());
    }
}
