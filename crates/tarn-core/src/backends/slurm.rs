//! Slurm clusters (`type: slurm`), through the Slurm commands on the server's host: `sbatch`,
//! `squeue`, `scancel`, `scontrol`, `sinfo`.
//!
//! Why the commands and not `slurmrestd`: they are there wherever people submit Slurm jobs
//! (a login node), they authenticate with the cluster's own munge setup and need no JWT keys or
//! extra daemon, and their `--parsable`/`-o` outputs are stable across Slurm versions.
//!
//! A job is one batch job named `tarn/<workspace id>/<job>`, one task per node. Its script
//! takes the `tarn` binary from the node's cache (by checksum), else from the server's own path
//! when the node shares it, else downloads it from the server (`/api/v1/runner/binary`), and
//! then execs `tarn runner`. The job-scoped token travels in the job's environment
//! (`--export` by name), never in its script or on a command line.

use super::{ComputeBackend, EngineNode, Launch, Observed, Phase, node_env, node_script};
use crate::Config;
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::Path;
use tarn_spec::compute::SlurmSpec;

/// Every Tarn job's Slurm name starts with this.
const PREFIX: &str = "tarn/";
/// Extra time Slurm grants past `limits.timeout`, for the runner to stop the job and upload.
const TIMEOUT_GRACE_S: u64 = 300;

pub(crate) struct SlurmBackend {
    spec: SlurmSpec,
    config: Config,
}

impl SlurmBackend {
    pub(crate) fn new(spec: SlurmSpec, config: &Config) -> SlurmBackend {
        SlurmBackend {
            spec,
            config: config.clone(),
        }
    }

    /// Runs one Slurm command; its standard output, or an error with what it printed.
    async fn run(&self, program: &str, args: &[String], env: &[(&str, String)]) -> Result<String> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(conf) = &self.spec.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        let out = cmd
            .output()
            .await
            .map_err(|e| engine(format!("`{program}` cannot run: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(engine(format!(
                "`{program}` failed ({}): {}",
                out.status,
                err.trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sbatch_args(&self, job: &Launch, script: &Path) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={PREFIX}{}", job.job_id),
            "--output=/dev/null".into(),
            // A job whose node fails ends with Slurm's reason; Tarn does not rerun it unasked.
            "--no-requeue".into(),
            format!("--export={}", exported(&self.config).join(",")),
        ];
        // One node and one task is Slurm's default: only a multi-node job says how it is laid out.
        if job.nodes > 1 {
            args.extend([
                format!("--nodes={}", job.nodes),
                "--ntasks-per-node=1".into(),
            ]);
        }
        if let Some(t) = job.timeout_s {
            args.push(format!("--time={}", (t + TIMEOUT_GRACE_S).div_ceil(60)));
        }
        for (flag, value) in [
            ("--partition", &self.spec.partition),
            ("--account", &self.spec.account),
            ("--qos", &self.spec.qos),
            ("--constraint", &job.instance_type),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag}={v}"));
            }
        }
        // `low` priority yields to others; raising priority is the cluster admin's (QOS).
        if job.priority <= 0 {
            args.push("--nice=100".into());
        }
        args.extend(self.spec.sbatch_options.iter().cloned());
        args.push(script.display().to_string());
        args
    }

    /// `squeue`'s view of every Tarn job: name → (id, state, reason, nodes).
    async fn queue(&self) -> Result<HashMap<String, Observed>> {
        let out = self
            .run(
                "squeue",
                &[
                    "-h".into(),
                    "-t".into(),
                    "all".into(),
                    "-o".into(),
                    "%i|%T|%r|%N|%j".into(),
                ],
                &[],
            )
            .await?;
        Ok(parse_queue(&out))
    }
}

/// The variables a runner's job gets, by name: the server's `PATH` and `HOME` (Slurm's
/// custom), and the node environment (`super::node_env`), set on `sbatch` itself.
fn exported(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = ["PATH", "HOME", "USER", "LOGNAME", "LANG"]
        .iter()
        .filter(|k| std::env::var_os(k).is_some())
        .map(|k| k.to_string())
        .collect();
    names.extend(node_env(config, "").into_iter().map(|(k, _)| k));
    names.dedup();
    names
}

fn engine(message: String) -> Error {
    Error::Engine {
        engine: "slurm".into(),
        message,
    }
}

/// Reads `squeue -o '%i|%T|%r|%N|%j'` lines (the name last: it may hold anything).
fn parse_queue(out: &str) -> HashMap<String, Observed> {
    let mut jobs = HashMap::new();
    for line in out.lines() {
        let mut parts = line.splitn(5, '|');
        let (Some(id), Some(state), Some(reason), Some(nodes), Some(name)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let Some(job_id) = name.trim().strip_prefix(PREFIX) else {
            continue;
        };
        let phase = match state {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" | "SUSPENDED" => Phase::Pending,
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => Phase::Running,
            _ => Phase::Ended,
        };
        let observed = Observed {
            engine_id: format!("slurm:{}", id.trim()),
            phase,
            state: state.to_string(),
            reason: Some(reason.to_string()).filter(|r| !r.is_empty() && r != "None"),
            nodes: expand_nodes(nodes.trim()),
        };
        // A job submitted again under the same name: the newest (highest id) is the one.
        let newer = |o: &Observed| {
            let n = |e: &str| e.trim_start_matches("slurm:").parse::<u64>().unwrap_or(0);
            n(&observed.engine_id) >= n(&o.engine_id)
        };
        if jobs.get(job_id).is_none_or(newer) {
            jobs.insert(job_id.to_string(), observed);
        }
    }
    jobs
}

/// Slurm's compact node lists (`n[1-3],gpu7`) as names, for the common forms.
fn expand_nodes(list: &str) -> Vec<String> {
    let mut nodes = vec![];
    let mut rest = list;
    while !rest.is_empty() {
        // One item: up to a comma that is not inside brackets.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    ',' if depth == 0 => return true,
                    _ => {}
                }
                false
            })
            .map_or(rest.len(), |(i, _)| i);
        let item = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        match item.split_once('[') {
            Some((stem, ranges)) => {
                for range in ranges.trim_end_matches(']').split(',') {
                    match range.split_once('-') {
                        Some((a, b)) => {
                            let width = a.len();
                            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                                for i in a..=b.min(a + 10_000) {
                                    nodes.push(format!("{stem}{i:0width$}"));
                                }
                            }
                        }
                        None => nodes.push(format!("{stem}{range}")),
                    }
                }
            }
            None if !item.is_empty() && item != "(null)" => nodes.push(item.to_string()),
            None => {}
        }
    }
    nodes
}

#[async_trait]
impl ComputeBackend for SlurmBackend {
    fn engine(&self) -> &'static str {
        "slurm"
    }

    async fn check(&self) -> Result<String> {
        let out = self
            .run("sinfo", &["-h".into(), "-o".into(), "%P|%a|%D".into()], &[])
            .await?;
        let partitions: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let mut p = l.split('|');
                Some((p.next()?.into(), p.next()?.into(), p.next()?.into()))
            })
            .collect();
        if let Some(want) = &self.spec.partition
            && !partitions
                .iter()
                .any(|(p, _, _)| p.trim_end_matches('*') == want)
        {
            let known: Vec<&str> = partitions.iter().map(|(p, _, _)| p.as_str()).collect();
            return Err(engine(format!(
                "partition {want:?} does not exist; Slurm has {}",
                known.join(", ")
            )));
        }
        let shown: Vec<String> = partitions
            .iter()
            .map(|(p, avail, n)| format!("{p} ({n} nodes, {avail})"))
            .collect();
        Ok(format!("slurm partitions {}", shown.join(", ")))
    }

    async fn launch(&self, job: &Launch) -> Result<String> {
        // The script goes to sbatch as a file only Tarn can read; Slurm keeps its own copy.
        let dir = self.config.home.join("slurm");
        tokio::fs::create_dir_all(&dir).await.map_err(Error::Io)?;
        let script = dir.join(format!("{}.sh", job.job_id.replace('/', "_")));
        let multi = job.nodes > 1;
        let node = node_script(
            &self.config,
            &self.spec.work_dir,
            job,
            "\"slurm:$SLURM_JOB_ID\"",
            "\"${SLURMD_NODENAME:-$(hostname)}\"",
            multi.then_some(("\"$SLURM_NODEID\"", "\"$SLURM_NNODES\"")),
        )
        .await?;
        // Several nodes: the batch script (on the first) starts the node script on each, and
        // Slurm ends them all when one fails.
        let text = if multi {
            format!(
                "#!/bin/sh\nNODE_SCRIPT={}\nexport NODE_SCRIPT\nexec srun --ntasks-per-node=1 --kill-on-bad-exit=1 /bin/sh -c \"$NODE_SCRIPT\"\n",
                tarn_spec::expr::shell_quote(&node)
            )
        } else {
            node
        };
        tokio::fs::write(&script, text).await.map_err(Error::Io)?;
        let env = node_env(&self.config, &job.token);
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let out = self
            .run("sbatch", &self.sbatch_args(job, &script), &env)
            .await;
        let _ = tokio::fs::remove_file(&script).await;
        let out = out?;
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        Ok(format!("slurm:{id}"))
    }

    async fn observe(&self) -> Result<HashMap<String, Observed>> {
        self.queue().await
    }

    async fn stop(&self, job_id: &str) -> Result<()> {
        self.run("scancel", &[format!("--name={PREFIX}{job_id}")], &[])
            .await
            .map(|_| ())
    }

    async fn engine_log(&self, job_id: &str) -> Result<String> {
        let Some(job) = self.queue().await?.remove(job_id) else {
            return Ok(String::new());
        };
        let id = job.engine_id.trim_start_matches("slurm:").to_string();
        let out = self
            .run("scontrol", &["show".into(), "job".into(), id], &[])
            .await?;
        // The facts that say why, not the whole record.
        let keep = [
            "JobState=",
            "Reason=",
            "NodeList=",
            "ExitCode=",
            "RunTime=",
            "TimeLimit=",
        ];
        let facts: Vec<&str> = out
            .split_whitespace()
            .filter(|w| keep.iter().any(|k| w.starts_with(k)))
            .collect();
        Ok(format!("{}: {}", job.engine_id, facts.join(" ")))
    }

    async fn nodes(&self) -> Result<Vec<EngineNode>> {
        let mut args = vec!["-h".into(), "-N".into(), "-o".into(), "%N|%T|%c|%m".into()];
        if let Some(p) = &self.spec.partition {
            args.push(format!("--partition={p}"));
        }
        let out = self.run("sinfo", &args, &[]).await?;
        let mut nodes: Vec<EngineNode> = vec![];
        for line in out.lines() {
            let p: Vec<&str> = line.split('|').collect();
            if p.len() < 4 || nodes.iter().any(|n| n.name == p[0]) {
                continue;
            }
            nodes.push(EngineNode {
                name: p[0].to_string(),
                state: p[1].to_string(),
                cpus: p[2].trim().parse().unwrap_or(0),
                gpus: 0,
                memory_mb: p[3].trim().parse().unwrap_or(0),
            });
        }
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(expand_nodes("n[1-3],gpu7"), ["n1", "n2", "n3", "gpu7"]);
        assert_eq!(expand_nodes("a[01-02,5]"), ["a01", "a02", "a5"]);
        assert_eq!(expand_nodes(""), Vec::<String>::new());
        assert_eq!(expand_nodes("(null)"), Vec::<String>::new());
    }

    #[test]
    fn queue_lines() {
        let out = "12|PENDING|Resources||tarn/ws1/job-a\n\
                   13|NODE_FAIL|NodeDown|n2|tarn/ws1/job-b\n\
                   14|RUNNING|None|n1|someone-elses\n\
                   15|RUNNING|None|n[1-2]|tarn/ws1/job-a\n";
        let q = parse_queue(out);
        assert_eq!(q.len(), 2);
        let a = &q["ws1/job-a"];
        assert_eq!(
            (a.engine_id.as_str(), a.phase),
            ("slurm:15", Phase::Running)
        );
        assert_eq!(a.nodes, ["n1", "n2"]);
        let b = &q["ws1/job-b"];
        assert_eq!(b.phase, Phase::Ended);
        assert_eq!(b.summary(), "NODE_FAIL (NodeDown)");
    }
}
