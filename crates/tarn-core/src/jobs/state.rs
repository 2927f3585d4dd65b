//! A job's state, typed: what the scheduler and the API's views read of a stored job (the
//! store keeps it as one JSON document next to the job's columns, written through
//! `Tarn::transition`). Reading goes through [`JobState::of`], never by JSON path.

use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use tarn_spec::runplan::{Input, Output, RunPlan};
use tarn_store::JobRow;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct JobState {
    /// Command jobs: what the runner runs (a sweep's and a pipeline's children have theirs).
    pub plan: Option<RunPlan>,
    /// The nodes it runs on: node slots of this machine, or the engine's node names.
    pub nodes: Vec<String>,
    /// When it entered each status (ms since the epoch), by status name.
    pub times: BTreeMap<String, i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// The end of its log, kept when it did not complete.
    pub log_tail: Option<String>,
    /// Engine-placed jobs: the engine's view.
    pub engine: Option<EngineState>,
    /// Multi-node jobs: rank 0's `host:port`.
    pub master: Option<String>,
    /// Multi-node jobs: how each node other than the lead ended, by node rank.
    pub node_reports: BTreeMap<String, NodeReport>,
    pub sweep: Option<SweepState>,
    pub pipeline: Option<PipelineState>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EngineState {
    /// `slurm:1234`, `ray:tarn-…`.
    pub id: Option<String>,
    /// While it waits: the engine's word and reason (`PENDING (Resources)`).
    pub state: Option<String>,
    /// When the scheduler handed it to the engine (ms since the epoch).
    pub handed_at: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    pub status: String,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SweepState {
    /// Trials started so far.
    pub trials: Option<u64>,
    pub best: Option<BestTrial>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct BestTrial {
    pub trial: String,
    pub value: Option<f64>,
    pub metric: String,
    pub parameters: Json,
    /// The best trial's outputs (a sweep's outputs are its best trial's).
    pub outputs: BTreeMap<String, Output>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PipelineState {
    /// Each step's job and status, as the pipeline shows them.
    pub steps: Json,
    /// The pipeline's outputs: the URIs of the step outputs bound to them.
    pub outputs: BTreeMap<String, String>,
}

impl JobState {
    /// A stored job's state. A field that does not read as its type reads as absent (a state
    /// written by an older Tarn), never as an error.
    pub fn of(row: &JobRow) -> JobState {
        JobState::deserialize(&row.state).unwrap_or_else(|_| JobState {
            nodes: row.state["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            ..Default::default()
        })
    }

    /// Nodes the job asks for.
    pub fn instance_count(&self) -> u32 {
        self.plan.as_ref().map_or(1, |p| p.instance_count.max(1))
    }

    /// Inputs as users see them: literal values, or the data's URI.
    pub fn shown_inputs(&self) -> BTreeMap<String, String> {
        self.plan
            .iter()
            .flat_map(|p| &p.inputs)
            .map(|(k, i)| {
                let shown = match i {
                    Input::Literal { value } => value,
                    Input::Data { uri, .. } | Input::PublicBlob { uri, .. } => uri,
                    Input::Web { url, .. } => url,
                };
                (k.clone(), shown.clone())
            })
            .collect()
    }

    /// A sweep's or pipeline's inputs (they have no plan of their own): literal values, or
    /// the data's URI, as submitted.
    pub fn spec_inputs(spec: &Json) -> BTreeMap<String, String> {
        spec["inputs"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let shown = match v {
                    Json::Object(_) => v.get("path").or_else(|| v.get("value"))?.clone(),
                    other => other.clone(),
                };
                let text = match shown {
                    Json::String(s) => s,
                    Json::Null => return None,
                    other => other.to_string(),
                };
                Some((k.clone(), text))
            })
            .collect()
    }

    /// Each output's URI: a command job's own, a sweep's best trial's, a pipeline's bound ones.
    pub fn shown_outputs(&self) -> BTreeMap<String, String> {
        let own = match &self.sweep {
            Some(s) => s.best.as_ref().map(|b| &b.outputs),
            None => self.plan.as_ref().map(|p| &p.outputs),
        };
        own.into_iter()
            .flatten()
            .map(|(k, o)| (k.clone(), o.uri.clone()))
            .chain(self.pipeline.iter().flat_map(|p| p.outputs.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(state: Json) -> JobRow {
        JobRow {
            state,
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_stored_state() {
        let s = JobState::of(&row(json!({
            "nodes": ["n1", "n2"], "times": {"Queued": 5}, "exit_code": 3,
            "engine": {"id": "slurm:7", "state": "PENDING (Resources)"},
            "pipeline": {"steps": {"a": {"job": "j"}}, "outputs": {"model": "azureml://x"}}
        })));
        assert_eq!(s.nodes, ["n1", "n2"]);
        assert_eq!(s.times["Queued"], 5);
        assert_eq!(s.exit_code, Some(3));
        assert_eq!(
            s.engine.as_ref().unwrap().state.as_deref(),
            Some("PENDING (Resources)")
        );
        assert_eq!(s.shown_outputs()["model"], "azureml://x");
        assert_eq!(s.instance_count(), 1);
    }

    #[test]
    fn an_unreadable_state_reads_as_empty_but_keeps_its_nodes() {
        let s = JobState::of(&row(json!({"nodes": ["n0"], "times": "not a map"})));
        assert_eq!(s.nodes, ["n0"]);
        assert!(s.times.is_empty());
    }
}
