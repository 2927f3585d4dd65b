//! A job's state, typed: what the scheduler and the API's views read of a stored job, and what
//! every writer changes (the store keeps it as one JSON document next to the job's columns,
//! written through `Jobs::transition`). Reading goes through [`JobState::of`] and writing
//! through [`JobState::to_json`], never by JSON path.

use super::JobStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use tarn_spec::runplan::{Input, Output, RunPlan};
use tarn_store::JobRow;

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct JobState {
    /// Command jobs: what the runner runs (a sweep's and a pipeline's children have theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RunPlan>,
    /// The nodes it runs on: node slots of this machine, or the engine's node names (by node
    /// rank; "" for a node not heard from yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// When it entered each status (ms since the epoch), by status name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub times: BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of its log, kept when it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Engine-placed jobs: the engine's view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineState>,
    /// Multi-node jobs: rank 0's `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Multi-node jobs: how each node other than the lead ended, by node rank.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_reports: BTreeMap<String, NodeReport>,
    /// The local runner's process id, as it reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_pid: Option<u32>,
    /// A Spark job's application, once its runner found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spark: Option<tarn_spec::runplan::SparkApp>,
    /// Queued again once because the server stopped before its runner started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requeued: bool,
    /// Who asked to cancel it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canceled_by: Option<String>,
    /// Why the system canceled it (a sweep's early termination, a timeout), kept as its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// A pipeline step's job: the hash of what it ran, so a later pipeline can reuse it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineState>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct EngineState {
    /// `slurm:1234`, `ray:tarn-…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// While it waits: the engine's word and reason (`PENDING (Resources)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the scheduler handed it to the engine (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_at: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct NodeReport {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct SweepState {
    /// Trials started so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trials: Option<u64>,
    /// Each trial's parameters, by trial job.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub points: BTreeMap<String, Json>,
    /// Each completed trial's primary metric, read once, by trial job.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<BestTrial>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct BestTrial {
    pub trial: String,
    pub value: Option<f64>,
    pub metric: String,
    pub parameters: Json,
    /// The best trial's outputs (a sweep's outputs are its best trial's).
    pub outputs: BTreeMap<String, Output>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct PipelineState {
    /// Each step's job, or what the pipeline decided for it, by step name.
    pub steps: BTreeMap<String, StepState>,
    /// The pipeline's outputs: the URIs of the step outputs bound to them.
    pub outputs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct StepState {
    /// The step's job (for a reused step, the earlier job whose outputs it takes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What the pipeline decided, when it ran no job of its own: `Skipped`, `Reused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

impl JobState {
    /// A stored job's state. A field that does not read as its type reads as absent (a state
    /// written by an older Tarn), never as an error, and the others are kept.
    pub fn of(row: &JobRow) -> JobState {
        JobState::from_json(&row.state)
    }

    /// See [`JobState::of`].
    pub fn from_json(state: &Json) -> JobState {
        if let Ok(s) = JobState::deserialize(state) {
            return s;
        }
        let readable: serde_json::Map<String, Json> = state
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| {
                let one = Json::Object([((*k).clone(), (*v).clone())].into_iter().collect());
                JobState::deserialize(&one).is_ok()
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        JobState::deserialize(&Json::Object(readable)).unwrap_or_default()
    }

    /// A pipeline step job's reuse hash, read alone: looking for a reusable job reads it of
    /// every completed job in the workspace, which need not parse their plans.
    pub fn reuse_hash_of(row: &JobRow) -> Option<String> {
        #[derive(Deserialize)]
        struct Only {
            reuse_hash: Option<String>,
        }
        Only::deserialize(&row.state).ok()?.reuse_hash
    }

    /// The document the store keeps.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).expect("a job state always serializes")
    }

    /// Records when the job entered `status` (the first time only).
    pub fn stamp(&mut self, status: JobStatus, at: i64) {
        self.times.entry(status.as_str().to_string()).or_insert(at);
    }

    /// Records the node a job's node `rank` runs on (engines name them when the runner
    /// starts); node slots of this machine were named by the scheduler and stay.
    pub fn set_node(&mut self, rank: u32, node: &str) {
        if self.engine.is_none() && !self.nodes.is_empty() {
            return;
        }
        let i = rank as usize;
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, String::new());
        }
        self.nodes[i] = node.to_string();
    }

    /// The engine's view, made when missing.
    pub fn engine_mut(&mut self) -> &mut EngineState {
        self.engine.get_or_insert_with(EngineState::default)
    }

    /// The sweep's bookkeeping, made when missing.
    pub fn sweep_mut(&mut self) -> &mut SweepState {
        self.sweep.get_or_insert_with(SweepState::default)
    }

    /// The pipeline's bookkeeping, made when missing.
    pub fn pipeline_mut(&mut self) -> &mut PipelineState {
        self.pipeline.get_or_insert_with(PipelineState::default)
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
    fn an_unreadable_field_reads_as_absent_and_the_others_are_kept() {
        let s = JobState::of(&row(json!({
            "nodes": ["n0"], "times": "not a map", "error": "boom", "exit_code": 2
        })));
        assert_eq!(s.nodes, ["n0"]);
        assert!(s.times.is_empty());
        assert_eq!((s.error.as_deref(), s.exit_code), (Some("boom"), Some(2)));
    }

    #[test]
    fn a_state_written_reads_back_the_same() {
        let mut s = JobState::default();
        s.stamp(JobStatus::Queued, 5);
        s.stamp(JobStatus::Queued, 9);
        s.engine_mut().id = Some("slurm:7".into());
        s.set_node(1, "n2");
        s.pipeline_mut().steps.insert(
            "train".into(),
            StepState {
                job: Some("j1".into()),
                ..Default::default()
            },
        );
        let json = s.to_json();
        assert_eq!(
            json["times"]["Queued"], 5,
            "the first time a status is entered"
        );
        assert_eq!(json["nodes"], json!(["", "n2"]));
        assert!(json.get("error").is_none(), "absent fields are left out");
        assert_eq!(JobState::from_json(&json), s);
    }
}
