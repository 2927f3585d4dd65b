//! Attached Spark standalone clusters (`synapsespark` computes with a `master`). Not a
//! [`super::ComputeBackend`]: the cluster runs Spark executors, not Tarn's runners — a Spark
//! job's runner and driver run on this machine (`jobs/spark.rs`) and the driver asks the
//! master for executors. What Tarn asks the cluster itself is here: whether its master answers,
//! and its workers, from the master's web UI (`/json/`).

use super::EngineNode;
use crate::error::{Error, Result};
use serde_json::Value as Json;
use std::time::Duration;
use tarn_spec::compute::SparkSpec;

fn engine(message: String) -> Error {
    Error::Engine {
        engine: "spark".into(),
        message,
    }
}

/// The master's state (`/json/` of its web UI).
async fn master_state(spec: &SparkSpec) -> Result<Json> {
    if !spec.master.starts_with("spark://") {
        return Err(Error::invalid(
            "master",
            format!(
                "{:?} is not a Spark standalone master URL (spark://host:7077)",
                spec.master
            ),
        ));
    }
    let url = format!("{}/json/", spec.web_ui);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| engine(e.to_string()))?;
    let answer = client
        .get(&url)
        .send()
        .await
        .map_err(|e| engine(format!("the master's web UI {url} does not answer: {e}")))?;
    if !answer.status().is_success() {
        return Err(engine(format!(
            "the master's web UI {url} answered {}",
            answer.status()
        )));
    }
    answer
        .json()
        .await
        .map_err(|e| engine(format!("{url} is not a Spark master's web UI: {e}")))
}

/// Checks that the master answers and is alive; says what it has.
pub(crate) async fn check(spec: &SparkSpec) -> Result<String> {
    let state = master_state(spec).await?;
    let status = state["status"].as_str().unwrap_or_default();
    if status != "ALIVE" {
        return Err(engine(format!(
            "the master at {} is {}",
            spec.master,
            if status.is_empty() {
                "in no state"
            } else {
                status
            }
        )));
    }
    Ok(format!(
        "Spark master {} ({} alive workers, {} cores)",
        spec.master,
        state["aliveworkers"].as_u64().unwrap_or(0),
        state["cores"].as_u64().unwrap_or(0)
    ))
}

/// The cluster's workers, with their cores and memory.
pub(crate) async fn workers(spec: &SparkSpec) -> Result<Vec<EngineNode>> {
    let state = master_state(spec).await?;
    Ok(state["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| EngineNode {
            name: format!(
                "{}:{}",
                w["host"].as_str().unwrap_or_default(),
                w["port"].as_u64().unwrap_or(0)
            ),
            state: w["state"].as_str().unwrap_or("UNKNOWN").to_string(),
            cpus: w["cores"].as_u64().unwrap_or(0) as u32,
            memory_mb: w["memory"].as_u64().unwrap_or(0),
            gpus: 0,
        })
        .collect())
}
