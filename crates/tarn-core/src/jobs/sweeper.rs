//! Sweep jobs: the sweep is a parent job whose trials are child command jobs
//! (`<sweep>_<n>`, nested MLflow runs). Each scheduler pass advances every active sweep: it
//! reads the trials' primary metric from tracking, stops trials the early-termination policy
//! names (Canceled, with the policy as the reason), starts new trials within
//! `max_concurrent_trials` / `max_total_trials` from the sampler, and completes the sweep with
//! its best trial. The decisions are `sweep.rs`'s pure functions.

use super::Jobs;
use super::sweep::{self, Expr, Point, Policy, Rng, Schedule};
use super::{BestTrial, JobState, JobStatus, status_of};
use crate::error::{Error, Result};
use crate::now_ms;
use serde_json::{Map, Value as Json, json};
use std::sync::Arc;
use tarn_spec::{Kind, Node};
use tarn_store::{JobFilter, JobRow};

#[derive(Clone, Debug)]
pub(crate) enum Algorithm {
    Random { seed: u64 },
    Sobol { seed: u64 },
    Grid,
    Bayesian { seed: u64 },
}

/// A sweep job's settings, read from its normalised spec.
#[derive(Clone, Debug)]
pub(crate) struct Sweep {
    pub space: Vec<(String, Expr)>,
    pub algorithm: Algorithm,
    pub metric: String,
    pub maximize: bool,
    pub policy: Option<(Policy, Schedule, &'static str)>,
    pub max_total: u32,
    pub max_concurrent: u32,
    pub timeout_ms: Option<i64>,
    pub trial_timeout: Option<u64>,
}

fn bad(field: &str, msg: impl Into<String>) -> Error {
    Error::invalid(field, msg)
}

impl Sweep {
    pub fn parse(spec: &Json) -> Result<Sweep> {
        let mut space = vec![];
        for (name, e) in spec["search_space"].as_object().into_iter().flatten() {
            space.push((
                name.clone(),
                Expr::parse(e).map_err(|m| bad(&format!("search_space.{name}"), m))?,
            ));
        }
        if space.is_empty() {
            return Err(bad("search_space", "a sweep needs at least one parameter"));
        }
        let sampling = &spec["sampling_algorithm"];
        let kind = sampling
            .as_str()
            .or_else(|| sampling["type"].as_str())
            .unwrap_or("random");
        let seed = sampling["seed"].as_u64().unwrap_or(0);
        let algorithm = match kind {
            "random" if sampling["rule"].as_str() == Some("sobol") => {
                sweep::sobol_point(&space, 0, seed)
                    .map_err(|m| bad("sampling_algorithm.rule", m))?;
                Algorithm::Sobol { seed }
            }
            "random" => Algorithm::Random { seed },
            "grid" => {
                sweep::grid(&space).map_err(|m| bad("search_space", m))?;
                Algorithm::Grid
            }
            "bayesian" => Algorithm::Bayesian { seed },
            other => {
                return Err(bad(
                    "sampling_algorithm",
                    format!("unknown sampling algorithm {other:?}"),
                ));
            }
        };
        let objective = &spec["objective"];
        let metric = objective["primary_metric"]
            .as_str()
            .ok_or_else(|| bad("objective.primary_metric", "a sweep needs a primary metric"))?
            .to_string();
        let maximize = objective["goal"].as_str() == Some("maximize");
        let et = &spec["early_termination"];
        let policy = match et["type"].as_str() {
            None => None,
            Some(kind) => {
                let schedule = Schedule {
                    interval: et["evaluation_interval"].as_u64().unwrap_or(1) as u32,
                    delay: et["delay_evaluation"].as_u64().unwrap_or(0) as u32,
                };
                let (policy, name) = match kind {
                    "bandit" => (
                        Policy::Bandit {
                            slack_factor: et["slack_factor"].as_f64(),
                            slack_amount: et["slack_amount"].as_f64(),
                        },
                        "bandit",
                    ),
                    "median_stopping" => (Policy::MedianStopping, "median_stopping"),
                    "truncation_selection" => (
                        Policy::TruncationSelection {
                            percentage: et["truncation_percentage"].as_f64().unwrap_or(0.0),
                        },
                        "truncation_selection",
                    ),
                    other => {
                        return Err(bad(
                            "early_termination.type",
                            format!("unknown policy {other:?}"),
                        ));
                    }
                };
                Some((policy, schedule, name))
            }
        };
        let limits = &spec["limits"];
        let mut max_total = limits["max_total_trials"].as_u64().unwrap_or(1000) as u32;
        if let Algorithm::Grid = algorithm {
            let size = sweep::grid(&space).map(|g| g.len()).unwrap_or(0) as u32;
            max_total = max_total.min(size);
        }
        let max_concurrent = limits["max_concurrent_trials"]
            .as_u64()
            .map_or(max_total, |c| c as u32)
            .max(1);
        Ok(Sweep {
            space,
            algorithm,
            metric,
            maximize,
            policy,
            max_total,
            max_concurrent,
            timeout_ms: limits["timeout"].as_i64().map(|s| s * 1000),
            trial_timeout: limits["trial_timeout"].as_u64(),
        })
    }

    /// The point of trial number `index`, given the finished trials' results.
    pub fn sample_point(&self, index: u32, history: &[(Point, f64)]) -> Result<Point> {
        Ok(match self.algorithm {
            Algorithm::Grid => sweep::grid(&self.space)
                .map_err(|m| bad("search_space", m))?
                .into_iter()
                .nth(index as usize)
                .ok_or_else(|| bad("search_space", "the grid is exhausted"))?,
            Algorithm::Random { seed } => sweep::random_point(
                &self.space,
                &mut Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(index as u64)),
            ),
            Algorithm::Sobol { seed } => sweep::sobol_point(&self.space, index as u64, seed)
                .map_err(|m| bad("sampling_algorithm.rule", m))?,
            Algorithm::Bayesian { seed } => sweep::tpe_point(
                &self.space,
                history,
                self.maximize,
                &mut Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(index as u64)),
            ),
        })
    }

    /// The command job of one trial: the trial's fields, the sweep's inputs, outputs, compute
    /// and experiment, and the point's values as inputs (`${{search_space.p}}` becomes
    /// `${{inputs.p}}`, so the one renderer quotes them) and as `AZUREML_SWEEP_<p>`.
    pub fn trial_spec(&self, sweep: &Json, name: &str, point: &Point) -> Json {
        let trial = &sweep["trial"];
        let mut command = trial["command"].as_str().unwrap_or_default().to_string();
        let mut inputs: Map<String, Json> =
            sweep["inputs"].as_object().cloned().unwrap_or_default();
        let mut env: Map<String, Json> = trial["environment_variables"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (p, v) in point {
            command = command.replace(
                &format!("${{{{search_space.{p}}}}}"),
                &format!("${{{{inputs.{p}}}}}"),
            );
            let literal = match v {
                Json::String(_) | Json::Number(_) | Json::Bool(_) => v.clone(),
                other => Json::String(other.to_string()),
            };
            inputs.insert(p.clone(), literal);
            env.insert(
                format!("AZUREML_SWEEP_{p}"),
                Json::String(super::plan::scalar_text(v)),
            );
        }
        let mut spec = json!({
            "type": "command",
            "name": name,
            "command": command,
            "inputs": inputs,
            "environment_variables": env,
        });
        for field in ["code", "environment", "distribution", "resources"] {
            if !trial[field].is_null() {
                spec[field] = trial[field].clone();
            }
        }
        for field in [
            "compute",
            "experiment_name",
            "outputs",
            "tags",
            "queue_settings",
        ] {
            if !sweep[field].is_null() {
                spec[field] = sweep[field].clone();
            }
        }
        if let Some(t) = self.trial_timeout {
            spec["limits"] = json!({"timeout": t});
        }
        spec
    }
}

fn point_json(point: &Point) -> Json {
    Json::Object(point.iter().cloned().collect())
}

fn point_from(v: &Json) -> Point {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Jobs {
    /// Advances every active sweep (called by the scheduler each pass).
    pub(crate) async fn advance_sweeps(self: &Arc<Self>, sweeps: Vec<JobRow>) {
        for row in sweeps {
            if let Err(e) = self.advance_sweep(row.clone()).await {
                tracing::warn!(sweep = %row.name, "sweep step failed: {e}");
                if let Error::Invalid(_) = e {
                    let _ = self
                        .fail_job(&row, &format!("the sweep cannot go on: {e}"))
                        .await;
                }
            }
        }
    }

    /// A parent job (sweep, pipeline) holds no nodes: Queued → Preparing → Running at once.
    pub(crate) async fn start_parent(&self, mut row: JobRow) -> Result<JobRow> {
        for next in [JobStatus::Preparing, JobStatus::Running] {
            let s = status_of(&row);
            if s == JobStatus::Queued || (s == JobStatus::Preparing && next == JobStatus::Running) {
                let mut state = JobState::of(&row);
                state.stamp(next, now_ms());
                self.transition(&row, next, state).await?;
                row = self
                    .store
                    .get_job(&row.workspace_id, &row.name)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("job {:?}", row.name)))?;
            }
        }
        Ok(row)
    }

    async fn advance_sweep(self: &Arc<Self>, row: JobRow) -> Result<()> {
        let sweep = Sweep::parse(&row.spec)?;
        // A sweep holds no nodes: it goes straight to Running and its trials queue.
        let row = self.start_parent(row).await?;
        let status = status_of(&row);
        let ws = self
            .store
            .get_workspace(&row.workspace)
            .await?
            .ok_or_else(|| Error::not_found("workspace"))?;
        let filter = JobFilter {
            parent: Some(&row.name),
            status: None,
            include_archived: true,
            ..Default::default()
        };
        let mut children = self.store.list_jobs(&ws.id, &filter).await?;
        children.sort_by_key(|c| c.seq);
        let mut state = JobState::of(&row);
        let points = state.sweep_mut().points.clone();
        let mut finished: Vec<(Point, f64)> = vec![];
        let mut results: Vec<(String, f64)> = vec![];
        let mut running: Vec<&JobRow> = vec![];
        for child in &children {
            let child_status = status_of(child);
            if !child_status.is_terminal() {
                running.push(child);
            } else if child_status == JobStatus::Completed {
                // A finished trial's metric is read once and kept in the sweep's state.
                let known = state.sweep_mut().results.get(&child.name).copied();
                let metric = match known {
                    Some(v) => Some(v),
                    None => self
                        .store
                        .get_run(&ws.id, &child.name)
                        .await?
                        .and_then(|(_, d)| d.metrics.into_iter().find(|m| m.key == sweep.metric))
                        .map(|m| m.value)
                        .filter(|v| !v.is_nan()),
                };
                if let (Some(v), None) = (metric, known) {
                    state.sweep_mut().results.insert(child.name.clone(), v);
                }
                if let Some(v) = metric {
                    let point = points.get(&child.name).unwrap_or(&Json::Null);
                    finished.push((point_from(point), v));
                    results.push((child.name.clone(), v));
                }
            }
        }
        let started = state
            .times
            .get(JobStatus::Running.as_str())
            .copied()
            .unwrap_or(row.created_at);
        let timed_out = sweep.timeout_ms.is_some_and(|t| now_ms() - started > t);
        let stopping = status == JobStatus::CancelRequested || timed_out;

        if stopping {
            let reason = if timed_out {
                "the sweep reached its limits.timeout"
            } else {
                "the sweep was canceled"
            };
            for child in &running {
                self.request_cancel(child, reason).await?;
            }
        } else if let Some((policy, schedule, policy_name)) = &sweep.policy
            && !running.is_empty()
        {
            // Early termination over every trial's history of the primary metric.
            let mut trials = vec![];
            for child in &children {
                let history = self
                    .store
                    .metric_history(&ws.id, &child.name, &sweep.metric, 0, 1_000_000)
                    .await?;
                let values: Vec<f64> = history.iter().map(|m| m.value).collect();
                trials.push((child.name.clone(), values, !status_of(child).is_terminal()));
            }
            let reports = trials
                .iter()
                .filter(|t| t.2)
                .map(|t| t.1.len())
                .max()
                .unwrap_or(0) as u32;
            // Every report is judged again each pass: a trial that started late reaches an
            // interval after its peers passed it, and the best at that interval may only then
            // be known. A trial stopped once is not asked to stop again.
            let mut stopped: Vec<String> = vec![];
            for at in 1..=reports {
                for id in sweep::to_terminate(policy, *schedule, &trials, at, sweep.maximize) {
                    if stopped.contains(&id) {
                        continue;
                    }
                    if let Some(child) = running
                        .iter()
                        .find(|c| c.name == id && status_of(c) != JobStatus::CancelRequested)
                    {
                        let reason =
                            format!("early terminated by the {policy_name} policy at report {at}");
                        self.request_cancel(child, &reason).await?;
                        stopped.push(id);
                    }
                }
            }
        }

        let mut launched = 0;
        if !stopping {
            let free = sweep.max_concurrent.saturating_sub(running.len() as u32);
            let budget = sweep.max_total.saturating_sub(children.len() as u32);
            for k in 0..free.min(budget) {
                let index = children.len() as u32 + k;
                let point = sweep.sample_point(index, &finished)?;
                let name = format!("{}_{index}", row.name);
                let spec = sweep.trial_spec(&row.spec, &name, &point);
                let doc = tarn_spec::validate(&Node::from_json(&spec), Some(Kind::Job))
                    .map_err(Error::Invalid)?;
                self.submit(&ws, &row.created_by, doc.spec, &row.name)
                    .await?;
                state.sweep_mut().points.insert(name, point_json(&point));
                launched += 1;
            }
            state.sweep_mut().trials = Some(u64::from(children.len() as u32 + launched));
        }

        let best = results.iter().cloned().reduce(|a, b| {
            let better = if sweep.maximize { b.1 > a.1 } else { b.1 < a.1 };
            if better { b } else { a }
        });
        if let Some((trial, value)) = &best {
            let outputs = children
                .iter()
                .find(|c| &c.name == trial)
                .and_then(|c| JobState::of(c).plan)
                .map(|p| p.outputs)
                .unwrap_or_default();
            state.sweep_mut().best = Some(BestTrial {
                trial: trial.clone(),
                value: Some(*value),
                metric: sweep.metric.clone(),
                parameters: points.get(trial).cloned().unwrap_or(Json::Null),
                outputs,
            });
        }
        let all_started = children.len() as u32 + launched >= sweep.max_total;
        let current = self
            .store
            .get_job(&row.workspace_id, &row.name)
            .await?
            .ok_or_else(|| Error::not_found("sweep"))?;
        if running.is_empty() && launched == 0 && (all_started || stopping) {
            let (target, error) = match (&best, status == JobStatus::CancelRequested) {
                (_, true) => (JobStatus::Canceled, None),
                (Some(_), false) => (JobStatus::Completed, None),
                (None, false) => (
                    JobStatus::Failed,
                    Some(format!(
                        "no trial completed with the primary metric {:?}",
                        sweep.metric
                    )),
                ),
            };
            state.stamp(target, now_ms());
            if let Some(e) = error {
                state.error = Some(e);
            }
            self.transition(&current, target, state).await?;
        } else if state != JobState::of(&current) {
            let status = status_of(&current);
            self.transition(&current, status, state).await?;
        }
        if launched > 0 {
            self.runtime.wake.notify_one();
        }
        Ok(())
    }

    /// Stops a job for a reason the system gives (a sweep's policy, a timeout): queued jobs
    /// end at once, running ones are asked to stop; the reason is kept as the job's error.
    pub(crate) async fn request_cancel(&self, job: &JobRow, reason: &str) -> Result<()> {
        let mut row = job.clone();
        for _ in 0..10 {
            let current = status_of(&row);
            if current.is_terminal() || current == JobStatus::CancelRequested {
                return Ok(());
            }
            let target = if current == JobStatus::Queued {
                JobStatus::Canceled
            } else {
                JobStatus::CancelRequested
            };
            let mut state = JobState::of(&row);
            state.stamp(target, now_ms());
            state.cancel_reason = Some(reason.to_string());
            state.error = Some(reason.to_string());
            if self.transition(&row, target, state).await? {
                return Ok(());
            }
            match self.store.get_job(&row.workspace_id, &row.name).await? {
                Some(fresh) => row = fresh,
                None => return Ok(()),
            }
        }
        Ok(())
    }
}
