//! Pipeline jobs: the pipeline is a parent job whose steps are child jobs (command or sweep),
//! started as soon as the steps they bind to (`${{parent.jobs.<step>.outputs.<port>}}`) have
//! completed. Each scheduler pass advances every active pipeline: it starts ready steps
//! (independent ones at once, within their computes' limits), skips the dependents of a failed
//! step, stops everything on a failure when `continue_on_step_failure` is false, and reuses a
//! deterministic step whose component, code, environment and inputs hash like an earlier
//! successful step's, unless `force_rerun`.

use super::Jobs;
use super::{JobState, JobStatus, PipelineState, StepState, status_of};
use crate::error::{Error, Result};
use crate::now_ms;
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tarn_spec::expr::{self, Segment};
use tarn_spec::names::NameRule;
use tarn_spec::refs;
use tarn_spec::{Kind, Node};
use tarn_store::{JobFilter, JobRow, WorkspaceRow};

/// The steps a step binds to, from its inputs.
fn dependencies(step: &Json) -> Vec<String> {
    let mut deps = vec![];
    for (_, v) in step["inputs"].as_object().into_iter().flatten() {
        let text = v
            .as_str()
            .or_else(|| v["path"].as_str())
            .or_else(|| v["value"].as_str())
            .unwrap_or_default();
        if let Ok(segments) = expr::parse(text) {
            for r in expr::refs(&segments) {
                if let [p, jobs, other, ..] = r
                    && p == "parent"
                    && jobs == "jobs"
                    && !deps.contains(other)
                {
                    deps.push(other.clone());
                }
            }
        }
    }
    deps
}

/// A binding `${{parent.…}}` alone (the whole value), as its path.
fn sole_binding(text: &str) -> Option<Vec<String>> {
    match expr::parse(text).ok()?.as_slice() {
        [Segment::Ref(path)] if path.first().map(String::as_str) == Some("parent") => {
            Some(path.clone())
        }
        _ => None,
    }
}

/// The job a pipeline's step ran (or reused), when it has one.
fn step_job<'a>(state: &'a JobState, step: &str) -> Option<&'a str> {
    state.pipeline.as_ref()?.steps.get(step)?.job.as_deref()
}

impl Jobs {
    /// Advances every active pipeline (called by the scheduler each pass).
    pub(crate) async fn advance_pipelines(self: &Arc<Self>, pipelines: Vec<JobRow>) {
        for row in pipelines {
            if let Err(e) = self.advance_pipeline(row.clone()).await {
                tracing::warn!(pipeline = %row.name, "pipeline step failed: {e}");
                if let Error::Invalid(_) | Error::NotFound { .. } = e {
                    let _ = self
                        .fail_job(&row, &format!("the pipeline cannot go on: {e}"))
                        .await;
                }
            }
        }
    }

    async fn advance_pipeline(self: &Arc<Self>, row: JobRow) -> Result<()> {
        let row = self.start_parent(row).await?;
        let status = status_of(&row);
        let ws = self
            .store
            .get_workspace(&row.workspace)
            .await?
            .ok_or_else(|| Error::not_found("workspace"))?;
        let settings = &row.spec["settings"];
        let continue_on_failure = settings["continue_on_step_failure"]
            .as_bool()
            .unwrap_or(true);
        let force_rerun = settings["force_rerun"].as_bool().unwrap_or(false);
        let steps: BTreeMap<String, Json> = row.spec["jobs"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut state = JobState::of(&row);
        // Where each step stands: its job's status, or what the pipeline decided for it.
        let filter = JobFilter {
            parent: Some(&row.name),
            status: None,
            include_archived: true,
            ..Default::default()
        };
        let children: BTreeMap<String, JobRow> = self
            .store
            .list_jobs(&ws.id, &filter)
            .await?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let step_status = |state: &JobState, step: &str| -> Option<String> {
            let info = state.pipeline.as_ref()?.steps.get(step)?;
            if let Some(decided) = &info.state {
                return Some(decided.clone());
            }
            children.get(info.job.as_ref()?).map(|c| c.status.clone())
        };
        let failed = |s: &str| s == "Failed" || s == "Canceled" || s == "Skipped";
        let done = |s: &str| s == "Completed" || s == "Reused";
        let any_failed = steps
            .keys()
            .any(|k| step_status(&state, k).is_some_and(|s| failed(&s)));
        let stopping = status == JobStatus::CancelRequested || (any_failed && !continue_on_failure);
        let mut started = 0;
        if stopping {
            for step in steps.keys() {
                match step_status(&state, step).as_deref() {
                    None => {
                        let skipped = StepState {
                            state: Some("Skipped".into()),
                            ..Default::default()
                        };
                        state.pipeline_mut().steps.insert(step.clone(), skipped);
                    }
                    Some(s)
                        if !JobStatus::parse(s).is_some_and(JobStatus::is_terminal)
                            && !done(s)
                            && !failed(s) =>
                    {
                        if let Some(job) = step_job(&state, step).and_then(|j| children.get(j)) {
                            let reason = if status == JobStatus::CancelRequested {
                                "the pipeline was canceled"
                            } else {
                                "another step failed and continue_on_step_failure is false"
                            };
                            self.request_cancel(job, reason).await?;
                        }
                    }
                    _ => {}
                }
            }
        } else {
            for (step, spec) in &steps {
                if step_status(&state, step).is_some() {
                    continue;
                }
                let deps = dependencies(spec);
                let dep_states: Vec<Option<String>> =
                    deps.iter().map(|d| step_status(&state, d)).collect();
                if dep_states.iter().any(|s| s.as_deref().is_some_and(failed)) {
                    let skipped = StepState {
                        state: Some("Skipped".into()),
                        reason: Some("a step it depends on did not complete".into()),
                        ..Default::default()
                    };
                    state.pipeline_mut().steps.insert(step.clone(), skipped);
                    continue;
                }
                if !dep_states.iter().all(|s| s.as_deref().is_some_and(done)) {
                    continue;
                }
                let child = self.step_spec(&ws, &row, step, spec, &state).await?;
                let hash = step_hash(&child);
                let deterministic = child["is_deterministic"].as_bool().unwrap_or(true);
                if deterministic
                    && !force_rerun
                    && let Some(earlier) = self.reusable(&ws, &hash).await?
                {
                    let reused = StepState {
                        job: Some(earlier.clone()),
                        state: Some("Reused".into()),
                        reused_from: Some(earlier),
                        ..Default::default()
                    };
                    state.pipeline_mut().steps.insert(step.clone(), reused);
                    continue;
                }
                let mut child = child;
                if let Some(obj) = child.as_object_mut() {
                    obj.remove("is_deterministic");
                }
                let doc = tarn_spec::validate(&Node::from_json(&child), Some(Kind::Job))
                    .map_err(Error::Invalid)?;
                let job = self
                    .submit(&ws, &row.created_by, doc.spec, &row.name)
                    .await?;
                let mut job_state = JobState::of(&job);
                job_state.reuse_hash = Some(hash);
                self.transition(&job, status_of(&job), job_state).await?;
                let submitted = StepState {
                    job: Some(job.name.clone()),
                    ..Default::default()
                };
                state.pipeline_mut().steps.insert(step.clone(), submitted);
                started += 1;
            }
        }
        // Pipeline outputs bound to steps' outputs.
        for (step, spec) in &steps {
            for (port, binding) in spec["outputs"].as_object().into_iter().flatten() {
                let Some(path) = binding.as_str().and_then(sole_binding) else {
                    continue;
                };
                if let [_, outputs, name] = path.as_slice()
                    && outputs == "outputs"
                    && let Some(job) = step_job(&state, step)
                    && let Some(c) = children.get(job)
                    && let Some(out) = JobState::of(c)
                        .plan
                        .and_then(|p| p.outputs.get(port).cloned())
                {
                    state.pipeline_mut().outputs.insert(name.clone(), out.uri);
                }
            }
        }
        let all_settled = steps.keys().all(|k| {
            step_status(&state, k).is_some_and(|s| {
                done(&s) || failed(&s) || JobStatus::parse(&s).is_some_and(JobStatus::is_terminal)
            })
        });
        let current = self
            .store
            .get_job(&row.workspace_id, &row.name)
            .await?
            .ok_or_else(|| Error::not_found("pipeline"))?;
        if all_settled && started == 0 {
            let target = if status == JobStatus::CancelRequested {
                JobStatus::Canceled
            } else if steps
                .keys()
                .all(|k| step_status(&state, k).is_some_and(|s| done(&s)))
            {
                JobStatus::Completed
            } else {
                state.error = Some("one or more steps did not complete".into());
                JobStatus::Failed
            };
            state.stamp(target, now_ms());
            self.transition(&current, target, state).await?;
        } else if state != JobState::of(&current) {
            let s = status_of(&current);
            self.transition(&current, s, state).await?;
        }
        if started > 0 {
            self.runtime.wake.notify_one();
        }
        Ok(())
    }

    /// The child job of a step: its component or inline fields, the pipeline's settings, and
    /// its bindings resolved (parent inputs to their values, other steps' outputs to their URIs).
    async fn step_spec(
        &self,
        ws: &WorkspaceRow,
        row: &JobRow,
        step: &str,
        spec: &Json,
        state: &JobState,
    ) -> Result<Json> {
        let mut child = Map::new();
        let mut is_deterministic = true;
        // The component, registered or inline, gives the defaults.
        let component = match &spec["component"] {
            Json::String(text) if refs::looks_like_ref(text) => {
                let parsed = refs::parse_asset_ref(text, NameRule::Component).map_err(|e| {
                    Error::invalid(&format!("jobs.{step}.component"), e.to_string())
                })?;
                let found = self.find_asset(ws, Kind::Component, &parsed).await?;
                found.map(|r| r.spec).ok_or_else(|| {
                    Error::invalid(
                        &format!("jobs.{step}.component"),
                        format!("component {text:?} does not exist"),
                    )
                })?
            }
            Json::Object(_) => spec["component"].clone(),
            Json::Null => Json::Null,
            other => {
                return Err(Error::invalid(
                    &format!("jobs.{step}.component"),
                    format!(
                        "{other} must be a registered component (azureml:name:version) or inlined by `tarn job create`"
                    ),
                ));
            }
        };
        let mut inputs = Map::new();
        if component.is_object() {
            is_deterministic = component["is_deterministic"].as_bool().unwrap_or(true);
            for field in [
                "command",
                "code",
                "environment",
                "environment_variables",
                "distribution",
                "resources",
                "jobs",
            ]
            .into_iter()
            .chain(SPARK_FIELDS)
            {
                if !component[field].is_null() {
                    child.insert(field.into(), component[field].clone());
                }
            }
            // Declared inputs with defaults.
            for (k, decl) in component["inputs"].as_object().into_iter().flatten() {
                if let Some(default) = decl.get("default").filter(|d| !d.is_null()) {
                    inputs.insert(k.clone(), default.clone());
                }
            }
            if let Some(outs) = component["outputs"].as_object() {
                child.insert(
                    "outputs".into(),
                    Json::Object(
                        outs.iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    json!({"type": v["type"].as_str().unwrap_or("uri_folder")}),
                                )
                            })
                            .collect(),
                    ),
                );
            }
        }
        for field in [
            "type",
            "command",
            "code",
            "environment",
            "environment_variables",
            "distribution",
            "resources",
            "limits",
            "trial",
            "search_space",
            "sampling_algorithm",
            "objective",
            "early_termination",
            "queue_settings",
            "display_name",
            "tags",
        ]
        .into_iter()
        .chain(SPARK_FIELDS)
        {
            if !spec[field].is_null() {
                child.insert(field.into(), spec[field].clone());
            }
        }
        // A Spark component makes a Spark step, whatever type the step says; a Spark step's
        // resources are a Spark job's.
        if component["type"] == "spark" {
            child.insert("type".into(), json!("spark"));
        }
        if child.get("type").and_then(Json::as_str) == Some("spark")
            && let Some(resources) = child.get_mut("resources").and_then(Json::as_object_mut)
        {
            resources.retain(|k, _| matches!(k.as_str(), "instance_type" | "runtime_version"));
        }
        // A pipeline component's steps make the child a pipeline of its own, whatever type the
        // step says (it defaults to `command`).
        // Its steps inherit the pipeline's settings (datastore, environment); its compute is
        // the step's or the pipeline's, set below.
        let nested = component["type"] == "pipeline";
        if nested {
            child.insert("type".into(), json!("pipeline"));
            if row.spec["settings"].is_object() {
                child.insert("settings".into(), row.spec["settings"].clone());
            }
        }
        if !nested
            && !child.contains_key("environment")
            && let Some(env) = row.spec["settings"]["default_environment"].as_str()
        {
            child.insert("environment".into(), json!(env));
        }
        let compute = spec["compute"]
            .as_str()
            .or_else(|| row.spec["settings"]["default_compute"].as_str())
            .or_else(|| row.spec["compute"].as_str());
        if let Some(c) = compute {
            child.insert("compute".into(), json!(c));
        }
        child.insert("experiment_name".into(), json!(row.experiment));
        child.insert("name".into(), json!(format!("{}_{step}", row.name)));
        // Inputs: literals, parent inputs, other steps' outputs.
        for (k, v) in spec["inputs"].as_object().into_iter().flatten() {
            let text = v
                .as_str()
                .or_else(|| v["path"].as_str())
                .or_else(|| v["value"].as_str());
            let resolved = match text.and_then(sole_binding) {
                Some(path) => match path
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    ["parent", "inputs", name] => row.spec["inputs"][*name].clone(),
                    ["parent", "jobs", other, "outputs", port] => {
                        let job = step_job(state, other).unwrap_or_default().to_string();
                        let ty = v["type"].as_str().unwrap_or("uri_folder");
                        json!({"type": ty, "path": format!("azureml://jobs/{job}/outputs/{port}")})
                    }
                    _ => v.clone(),
                },
                None => v.clone(),
            };
            if !resolved.is_null() {
                inputs.insert(k.clone(), resolved);
            }
        }
        if component.is_object() {
            check_inputs(step, &component["inputs"], &mut inputs)?;
        }
        if !inputs.is_empty() {
            child.insert("inputs".into(), Json::Object(inputs));
        }
        // Outputs: a step output bound to a pipeline output lands where the pipeline's would.
        let mut outputs: Map<String, Json> = child
            .get("outputs")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        for (port, binding) in spec["outputs"].as_object().into_iter().flatten() {
            let value = match binding.as_str().and_then(sole_binding) {
                Some(path) if path.len() == 3 && path[1] == "outputs" => {
                    let declared = &row.spec["outputs"][&path[2]];
                    let mut out =
                        json!({"type": declared["type"].as_str().unwrap_or("uri_folder")});
                    if let Some(p) = declared["path"].as_str() {
                        out["path"] = json!(
                            p.replace("${{name}}", &row.name)
                                .replace("${{output_name}}", &path[2])
                        );
                    }
                    out
                }
                _ if binding.is_object() => binding.clone(),
                _ => json!({"type": "uri_folder"}),
            };
            outputs.insert(port.clone(), value);
        }
        // settings.default_datastore: where step outputs without a path go.
        if let Some(ds) = row.spec["settings"]["default_datastore"].as_str() {
            let ds = ds.trim_start_matches("azureml:");
            let child_name = format!("{}_{step}", row.name);
            for (port, out) in outputs.iter_mut() {
                if !out.is_object() {
                    *out = json!({"type": "uri_folder"});
                }
                if out["path"].is_null() {
                    out["path"] = json!(format!(
                        "azureml://datastores/{ds}/paths/azureml/{child_name}/{port}/"
                    ));
                }
            }
        }
        if !outputs.is_empty() {
            child.insert("outputs".into(), Json::Object(outputs));
        }
        child.insert("is_deterministic".into(), json!(is_deterministic));
        Ok(Json::Object(child))
    }

    /// Builds every step's job spec once (as if its dependencies had run), so a missing
    /// component or a bad input value is refused at submission with the step named.
    pub(crate) async fn check_pipeline(
        &self,
        ws: &WorkspaceRow,
        name: &str,
        created_by: &str,
        spec: &Json,
    ) -> Result<()> {
        let row = JobRow {
            workspace_id: ws.id.clone(),
            workspace: ws.name.clone(),
            name: name.to_string(),
            seq: 0,
            parent: String::new(),
            job_type: "pipeline".into(),
            experiment: "Default".into(),
            compute: String::new(),
            priority: 0,
            status: "Queued".into(),
            spec: spec.clone(),
            state: json!({}),
            archived: false,
            created_by: created_by.to_string(),
            created_at: 0,
            updated_at: 0,
        };
        let state = JobState {
            pipeline: Some(PipelineState::default()),
            ..Default::default()
        };
        for (step, step_spec) in spec["jobs"].as_object().into_iter().flatten() {
            let child = self.step_spec(ws, &row, step, step_spec, &state).await?;
            if child["type"] == "pipeline" {
                Box::pin(self.check_pipeline(ws, &format!("{name}_{step}"), created_by, &child))
                    .await
                    .map_err(|e| e.within(&format!("jobs.{step}")))?;
            }
        }
        Ok(())
    }

    /// An earlier successful step with the same hash, if any.
    async fn reusable(&self, ws: &WorkspaceRow, hash: &str) -> Result<Option<String>> {
        let filter = JobFilter {
            parent: None,
            status: Some("Completed"),
            include_archived: true,
            ..Default::default()
        };
        Ok(self
            .store
            .list_jobs(&ws.id, &filter)
            .await?
            .into_iter()
            .find(|j| JobState::reuse_hash_of(j).as_deref() == Some(hash))
            .map(|j| j.name))
    }
}

/// Checks and coerces literal inputs against a component's declarations: types (integer,
/// number, boolean), `min`/`max`, `enum`, and required inputs without a default.
fn check_inputs(step: &str, declared: &Json, inputs: &mut Map<String, Json>) -> Result<()> {
    for (name, decl) in declared.as_object().into_iter().flatten() {
        let field = format!("jobs.{step}.inputs.{name}");
        let Some(value) = inputs.get_mut(name) else {
            if !decl["optional"].as_bool().unwrap_or(false) {
                return Err(Error::invalid(
                    &field,
                    format!("the component needs input {name:?} (it has no default)"),
                ));
            }
            continue;
        };
        if value.is_object() {
            continue; // data, checked when the step's job is planned
        }
        let text = match &*value {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        let coerced = match decl["type"].as_str() {
            Some("integer") => text
                .parse::<i64>()
                .map(Json::from)
                .map_err(|_| Error::invalid(&field, format!("{text:?} is not an integer")))?,
            Some("number") => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Json::Number)
                .ok_or_else(|| Error::invalid(&field, format!("{text:?} is not a number")))?,
            Some("boolean") => match text.to_ascii_lowercase().as_str() {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                _ => {
                    return Err(Error::invalid(
                        &field,
                        format!("{text:?} is not true or false"),
                    ));
                }
            },
            _ => value.clone(),
        };
        if let Some(n) = coerced.as_f64() {
            if let Some(min) = decl["min"].as_f64().filter(|m| n < *m) {
                return Err(Error::invalid(
                    &field,
                    format!("{n} is below the minimum {min}"),
                ));
            }
            if let Some(max) = decl["max"].as_f64().filter(|m| n > *m) {
                return Err(Error::invalid(
                    &field,
                    format!("{n} is above the maximum {max}"),
                ));
            }
        }
        if let Some(allowed) = decl["enum"].as_array()
            && !allowed
                .iter()
                .any(|a| a == &coerced || a.as_str() == Some(text.as_str()))
        {
            return Err(Error::invalid(
                &field,
                format!("{text:?} is not one of {}", Json::Array(allowed.clone())),
            ));
        }
        *value = coerced;
    }
    Ok(())
}

/// The fields of a Spark step or component (besides code, environment and resources).
const SPARK_FIELDS: [&str; 7] = [
    "entry", "py_files", "jars", "files", "archives", "args", "conf",
];

/// What makes a step's result: its command (or Spark application), code, environment, inputs
/// and distribution — not its name, compute or the pipeline it is in.
fn step_hash(child: &Json) -> String {
    let mut parts = vec![];
    for field in [
        "type",
        "command",
        "code",
        "environment",
        "environment_variables",
        "inputs",
        "distribution",
        "trial",
        "search_space",
    ] {
        parts.push(format!("{field}={}", child[field]));
    }
    // A Spark step's own fields, only where present: the hashes of other steps (and so their
    // reuse by earlier runs) stay as they were.
    for field in SPARK_FIELDS {
        if !child[field].is_null() {
            parts.push(format!("{field}={}", child[field]));
        }
    }
    tarn_spec::digest::sha256_hex(parts.join("\n").as_bytes())
}
