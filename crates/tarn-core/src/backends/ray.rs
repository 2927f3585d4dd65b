//! Attached Ray clusters (`type: ray`), through Ray's Jobs REST API on the dashboard's address:
//! submit (`POST /api/jobs/`), list, logs, stop; nodes from the state API (`/api/v0/nodes`).
//!
//! A Tarn job is one Ray job whose entrypoint is the runner (the shared node script), with
//! `entrypoint_num_cpus` so that Ray places it on any node with a free CPU, not on the head.
//! A job on several nodes is one Ray job too, whose entrypoint is a small Python driver
//! (`ray_nodes.py`, run by the cluster's own Python, which has `ray`): it reserves the nodes
//! with a `STRICT_SPREAD` placement group and runs the node script on each in a Ray task, with
//! the node's rank. One Ray job rather than one per node: Ray places the nodes together or
//! not at all (two jobs could each hold half a cluster), a stop reaches every node, and the
//! job has one id to observe. The ranks on a node are the runner's, as on every engine.
//! Its submission id is made from the Tarn job id, so a job handed twice (a restart between
//! submit and bookkeeping) is refused by Ray rather than run twice; its metadata carries the
//! Tarn job id back. The runner's token travels in the job's `runtime_env` environment: whoever
//! can reach a Ray cluster's Jobs API can run any code on it already, so that API must be open
//! to operators only (Ray's own guidance), and the token is scoped to the job and revoked at its
//! end.

use super::{ComputeBackend, EngineNode, Launch, Observed, Phase, node_env, node_script};
use crate::Config;
use crate::error::{Error, Result};
use async_trait::async_trait;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::Duration;
use tarn_spec::compute::RaySpec;

/// How long one call to the Jobs API may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Bytes of a Ray job's log quoted when it ends without its runner reporting.
const LOG_TAIL: usize = 1500;
/// The driver of a job on several nodes.
const NODES_DRIVER: &str = include_str!("ray_nodes.py");

pub(crate) struct RayBackend {
    spec: RaySpec,
    config: Config,
    http: reqwest::Client,
}

fn engine(message: String) -> Error {
    Error::Engine {
        engine: "ray".into(),
        message,
    }
}

/// Ray's submission id for a Tarn job (`<workspace id>/<job>`): letters, digits, `-`, `_`.
fn submission_id(job_id: &str) -> String {
    format!("tarn-{}", job_id.replace('/', "--"))
}

impl RayBackend {
    pub(crate) fn new(spec: RaySpec, config: &Config) -> RayBackend {
        RayBackend {
            spec,
            config: config.clone(),
            http: reqwest::Client::builder()
                .timeout(CALL_LIMIT)
                .build()
                .expect("an HTTP client"),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.spec.address));
        for (k, v) in &self.spec.headers {
            req = req.header(k, v);
        }
        req
    }

    /// One call; the answer as JSON, or an error with Ray's own words (never the headers).
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Json> {
        let resp = req.send().await.map_err(|e| {
            engine(format!(
                "the Jobs API at {} does not answer: {}",
                self.spec.address,
                without_url(&e)
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            // Ray answers errors with a Python traceback: its last line says what is wrong.
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty() && l.trim() != ".");
            return Err(engine(format!(
                "{status}: {}",
                last.unwrap_or("no details").trim()
            )));
        }
        serde_json::from_str(&text).map_err(|e| engine(format!("an unreadable answer ({e})")))
    }

    async fn jobs(&self) -> Result<Vec<Json>> {
        let list = self
            .call(self.request(reqwest::Method::GET, "/api/jobs/"))
            .await?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }
}

/// A transport error without the URL (which may carry credentials in odd setups).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}

/// What a Ray job's status means for Tarn.
fn observed(job: &Json) -> Option<(String, Observed)> {
    let tarn = job.pointer("/metadata/tarn_job")?.as_str()?.to_string();
    let status = job["status"].as_str().unwrap_or("UNKNOWN").to_string();
    let phase = match status.as_str() {
        "PENDING" => Phase::Pending,
        "RUNNING" => Phase::Running,
        _ => Phase::Ended,
    };
    let reason = job["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let nodes = job["driver_node_id"]
        .as_str()
        .map(|n| vec![n.chars().take(12).collect()])
        .unwrap_or_default();
    Some((
        tarn,
        Observed {
            engine_id: format!("ray:{}", job["submission_id"].as_str().unwrap_or("")),
            phase,
            state: status,
            reason,
            nodes,
        },
    ))
}

#[async_trait]
impl ComputeBackend for RayBackend {
    fn engine(&self) -> &'static str {
        "ray"
    }

    async fn check(&self) -> Result<String> {
        let version = self
            .call(self.request(reqwest::Method::GET, "/api/version"))
            .await?;
        let nodes = self.nodes().await?;
        let alive = nodes.iter().filter(|n| n.state == "ALIVE").count();
        Ok(format!(
            "ray {} at {} ({alive} nodes alive)",
            version["ray_version"].as_str().unwrap_or("?"),
            self.spec.address
        ))
    }

    async fn launch(&self, job: &Launch) -> Result<String> {
        let id = submission_id(&job.job_id);
        let multi = job.nodes > 1;
        let script = node_script(
            &self.config,
            &self.spec.work_dir,
            job,
            &format!("ray:{id}"),
            "\"${TARN_RAY_NODE:-$(hostname)}\"",
            multi.then_some(("\"$TARN_NODE_RANK\"", "\"$TARN_NODE_COUNT\"")),
        )
        .await?;
        let mut env: serde_json::Map<String, Json> = node_env(&self.config, &job.token)
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        let quote = tarn_spec::expr::shell_quote;
        let entrypoint = if multi {
            env.insert("TARN_NODE_SCRIPT".into(), script.into());
            env.insert("TARN_NODE_COUNT".into(), job.nodes.to_string().into());
            env.insert(
                "TARN_NODE_CPUS".into(),
                self.spec.entrypoint_num_cpus.to_string().into(),
            );
            format!("python -c {}", quote(NODES_DRIVER))
        } else {
            format!("sh -c {}", quote(&script))
        };
        let mut body = json!({
            "entrypoint": entrypoint,
            "submission_id": id,
            "runtime_env": {"env_vars": env},
            "metadata": {"tarn_job": job.job_id},
        });
        // A single node's runner takes its CPUs; the driver of several nodes takes none (its
        // placement group holds the nodes' CPUs).
        if !multi {
            body["entrypoint_num_cpus"] = json!(self.spec.entrypoint_num_cpus);
        }
        match self
            .call(
                self.request(reqwest::Method::POST, "/api/jobs/")
                    .json(&body),
            )
            .await
        {
            Ok(_) => Ok(format!("ray:{id}")),
            // Handed before (the server restarted in between): Ray has it already.
            Err(Error::Engine { message, .. }) if message.contains("already exists") => {
                Ok(format!("ray:{id}"))
            }
            Err(e) => Err(e),
        }
    }

    async fn observe(&self) -> Result<HashMap<String, Observed>> {
        let mut seen: HashMap<String, Observed> = HashMap::new();
        for job in self.jobs().await? {
            if let Some((tarn, o)) = observed(&job) {
                seen.insert(tarn, o);
            }
        }
        Ok(seen)
    }

    async fn stop(&self, job_id: &str) -> Result<()> {
        let path = format!("/api/jobs/{}/stop", submission_id(job_id));
        self.call(self.request(reqwest::Method::POST, &path))
            .await
            .map(|_| ())
    }

    async fn engine_log(&self, job_id: &str) -> Result<String> {
        let path = format!("/api/jobs/{}/logs", submission_id(job_id));
        let logs = self.call(self.request(reqwest::Method::GET, &path)).await?;
        let text = logs["logs"].as_str().unwrap_or_default();
        let mut start = text.len().saturating_sub(LOG_TAIL);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Ok(text[start..].trim().to_string())
    }

    async fn nodes(&self) -> Result<Vec<EngineNode>> {
        let answer = self
            .call(self.request(reqwest::Method::GET, "/api/v0/nodes?detail=1"))
            .await?;
        let list = answer
            .pointer("/data/result/result")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(list
            .iter()
            .map(|n| EngineNode {
                name: n["node_id"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect(),
                state: n["state"].as_str().unwrap_or("UNKNOWN").to_string(),
                cpus: n
                    .pointer("/resources_total/CPU")
                    .and_then(Json::as_f64)
                    .unwrap_or(0.0) as u32,
                gpus: 0,
                memory_mb: (n
                    .pointer("/resources_total/memory")
                    .and_then(Json::as_f64)
                    .unwrap_or(0.0)
                    / 1_048_576.0) as u64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ray_jobs_read_as_tarn_jobs() {
        let (tarn, o) = observed(&json!({
            "submission_id": "tarn-ws--job", "status": "FAILED",
            "message": "Job entrypoint command failed with exit code 1",
            "metadata": {"tarn_job": "ws/job"}, "driver_node_id": "abcdef0123456789"
        }))
        .unwrap();
        assert_eq!(tarn, "ws/job");
        assert_eq!(o.phase, Phase::Ended);
        assert_eq!(o.engine_id, "ray:tarn-ws--job");
        assert_eq!(o.nodes, ["abcdef012345"]);
        assert!(observed(&json!({"submission_id": "other", "status": "RUNNING"})).is_none());
        assert_eq!(submission_id("ab-12/my_job"), "tarn-ab-12--my_job");
    }
}
