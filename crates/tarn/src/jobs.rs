//! `tarn job …` and `tarn compute list-nodes`: submitting jobs written for `az ml` (local code,
//! inputs and conda files uploaded or inlined first), following their logs, cancelling,
//! downloading outputs.

use crate::assets::resolve;
use crate::client::{Client, enc};
use crate::output::{self, Format};
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::Value as Json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tarn_spec::Kind;
use tarn_spec::uri::{self, DataUri};

#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a job from an Azure ML YAML file.
    Create {
        #[arg(short, long)]
        file: PathBuf,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// The job's name (default: the file's, or a generated one).
        #[arg(short, long)]
        name: Option<String>,
        /// Follow the job's log until it ends; exit non-zero unless it completes.
        #[arg(short, long)]
        stream: bool,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    Show {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    List {
        /// Only the children of this job.
        #[arg(long)]
        parent_job_name: Option<String>,
        /// Only jobs in this status.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        include_archived: bool,
        #[arg(long, default_value_t = 50)]
        max_results: i64,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Follow a job's log (from the start) until the job ends.
    Stream {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    Cancel {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Download a job's outputs and artifacts.
    Download {
        #[arg(short, long)]
        name: String,
        /// One named output (into `<download-path>/named-outputs/<output>/`).
        #[arg(long, conflicts_with = "all")]
        output_name: Option<String>,
        /// Every named output and the artifacts (`<download-path>/artifacts/`).
        #[arg(long)]
        all: bool,
        #[arg(short = 'p', long, default_value = ".")]
        download_path: PathBuf,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    Archive {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    Restore {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
}

const LIST_COLUMNS: &[&str] = &[
    "name",
    "status",
    "compute",
    "experiment_name",
    "created_at",
    "duration_s",
];

fn job_url(ws: &str, name: &str) -> String {
    format!("/workspaces/{}/jobs/{}", enc(ws), enc(name))
}

pub async fn job(
    c: &Client,
    cmd: JobCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<ExitCode> {
    let format = g.output;
    match cmd {
        JobCmd::Create {
            file,
            mut sets,
            name,
            stream,
            workspace,
        } => {
            let ws = default_ws(workspace);
            if let Some(n) = name {
                sets.push(format!("name={n}"));
            }
            let doc = crate::commands::load(&file, Some(Kind::Job), &sets)?;
            let mut spec = doc.spec.clone();
            let base = file.parent().unwrap_or(Path::new("."));
            prepare_local_files(c, &mut spec, base, &ws, g.quiet).await?;
            let out = c
                .post(&format!("/workspaces/{}/jobs", enc(&ws)), &spec)
                .await?;
            // Warnings were printed when the file was read; the server finds the same ones.
            let name = out["name"].as_str().unwrap_or_default().to_string();
            if stream {
                if !g.quiet {
                    eprintln!("job {name} submitted; following its log");
                }
                return follow(c, &ws, &name).await;
            }
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        JobCmd::Show { name, workspace } => {
            let ws = default_ws(workspace);
            let out = c.get(&job_url(&ws, &name)).await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        JobCmd::List {
            parent_job_name,
            status,
            include_archived,
            max_results,
            workspace,
        } => {
            let ws = default_ws(workspace);
            let mut query = vec![format!("max_results={max_results}")];
            if let Some(p) = parent_job_name {
                query.push(format!("parent={}", enc(&p)));
            }
            if let Some(s) = status {
                query.push(format!("status={}", enc(&s)));
            }
            if include_archived {
                query.push("include_archived=true".into());
            }
            let out = c
                .get(&format!(
                    "/workspaces/{}/jobs?{}",
                    enc(&ws),
                    query.join("&")
                ))
                .await?;
            let items = out["value"].as_array().cloned().unwrap_or_default();
            output::print_list(format.unwrap_or(Format::Table), &items, LIST_COLUMNS);
        }
        JobCmd::Stream { name, workspace } => {
            return follow(c, &default_ws(workspace), &name).await;
        }
        JobCmd::Cancel { name, workspace } => {
            let ws = default_ws(workspace);
            let out = c
                .post(&format!("{}/cancel", job_url(&ws, &name)), &Json::Null)
                .await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        JobCmd::Archive { name, workspace } => {
            let ws = default_ws(workspace);
            let out = c
                .post(&format!("{}/archive", job_url(&ws, &name)), &Json::Null)
                .await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        JobCmd::Restore { name, workspace } => {
            let ws = default_ws(workspace);
            let out = c
                .post(&format!("{}/restore", job_url(&ws, &name)), &Json::Null)
                .await?;
            output::print_one(format.unwrap_or(Format::Yaml), &out);
        }
        JobCmd::Download {
            name,
            output_name,
            all,
            download_path,
            workspace,
        } => {
            let ws = default_ws(workspace);
            let job = c.get(&job_url(&ws, &name)).await?;
            let outputs = job["outputs"].as_object().cloned().unwrap_or_default();
            let mut wanted: Vec<(String, PathBuf)> = vec![];
            match &output_name {
                Some(o) => {
                    let uri = outputs.get(o).and_then(Json::as_str).with_context(|| {
                        format!(
                            "job {name} has no output {o:?} (it has: {})",
                            outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })?;
                    wanted.push((uri.to_string(), download_path.join("named-outputs").join(o)));
                }
                None => {
                    if all {
                        for (o, uri) in &outputs {
                            if let Some(uri) = uri.as_str() {
                                wanted.push((
                                    uri.to_string(),
                                    download_path.join("named-outputs").join(o),
                                ));
                            }
                        }
                    }
                    let artifacts = job["artifacts"].as_str().unwrap_or_default();
                    wanted.push((artifacts.to_string(), download_path.join("artifacts")));
                }
            }
            for (uri, dest) in wanted {
                let n = crate::assets::download_asset_path(c, &ws, &uri, &dest, g.quiet).await?;
                if n == 0 && output_name.is_some() {
                    bail!(
                        "output {:?} of job {name} is empty ({uri})",
                        output_name.as_deref().unwrap_or_default()
                    );
                }
                if !g.quiet {
                    eprintln!("{n} file(s) from {uri} into {}", dest.display());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the job's log from the start, following it until the job ends; the exit code says
/// whether it completed.
pub async fn follow(c: &Client, ws: &str, name: &str) -> anyhow::Result<ExitCode> {
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    let status = loop {
        let resp = c
            .get_raw(&format!(
                "{}/log?offset={offset}&wait=20",
                job_url(ws, name)
            ))
            .await?;
        let status = resp
            .headers()
            .get(tarn_api::jobs::JOB_STATUS_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.bytes().await?;
        offset += bytes.len() as u64;
        stdout.write_all(&bytes)?;
        stdout.flush()?;
        let terminal = matches!(status.as_str(), "Completed" | "Failed" | "Canceled");
        if terminal && bytes.is_empty() {
            break status;
        }
    };
    let job = c.get(&job_url(ws, name)).await?;
    eprintln!("\njob {name}: {status}");
    if let Some(e) = job["error"].as_str() {
        eprintln!("  error: {e}");
    }
    if let Some(d) = job["duration_s"].as_f64() {
        eprintln!("  duration: {d:.1} s");
    }
    Ok(if status == "Completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Uploads the job's local code and input files and inlines a local conda file, rewriting the
/// spec to point at what was uploaded (as `az ml job create` does).
pub(crate) async fn prepare_local_files(
    c: &Client,
    spec: &mut Json,
    base: &Path,
    ws: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    // A command job's code and environment, a sweep trial's, and each pipeline step's (with
    // local component files read, their own paths uploaded, and inlined).
    prepare_node(c, spec, base, ws, quiet).await?;
    inline_trial_component(c, spec, base, ws, quiet).await?;
    if let Some(trial) = spec.get_mut("trial").filter(|t| t.is_object()) {
        prepare_node(c, trial, base, ws, quiet).await?;
    }
    let steps: Vec<String> = spec
        .get("jobs")
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for step in steps {
        let node = &mut spec["jobs"][&step];
        prepare_node(c, node, base, ws, quiet).await?;
        if let Some(trial) = node.get_mut("trial").filter(|t| t.is_object()) {
            prepare_node(c, trial, base, ws, quiet).await?;
        }
        if let Some(file) = node
            .get("component")
            .and_then(Json::as_str)
            .map(str::to_string)
            && !tarn_spec::refs::looks_like_ref(&file)
        {
            node["component"] = Box::pin(read_component(c, &resolve(base, &file), ws, quiet))
                .await
                .with_context(|| format!("jobs.{step}.component"))?;
        } else if let Some(component) = node.get_mut("component").filter(|c| c.is_object()) {
            // An inline component: its code and environment are relative to this file.
            crate::assets::upload_local_paths(c, Kind::Component, component, base, ws, quiet)
                .await?;
            if let Some(env) = component.get_mut("environment").filter(|e| e.is_object()) {
                crate::assets::upload_local_paths(c, Kind::Environment, env, base, ws, quiet)
                    .await?;
            }
        }
    }
    let names: Vec<String> = spec
        .get("inputs")
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let input = &mut spec["inputs"][&name];
        let Some(path) = input.get("path").and_then(Json::as_str).map(str::to_string) else {
            continue;
        };
        let Ok(DataUri::Local(local)) = uri::parse(&path) else {
            continue;
        };
        let local = resolve(base, &local);
        let meta = std::fs::metadata(&local)
            .with_context(|| format!("inputs.{name}.path: {} does not exist", local.display()))?;
        let ty = input
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or("uri_folder");
        if ty == "uri_file" && !meta.is_file() {
            bail!(
                "inputs.{name}.path: {} is not a file (type uri_file)",
                local.display()
            );
        }
        if ty == "uri_folder" && !meta.is_dir() {
            bail!(
                "inputs.{name}.path: {} is not a folder (type uri_folder)",
                local.display()
            );
        }
        let uploaded = crate::assets::upload_content_addressed(c, &local, ws, quiet).await?;
        input["path"] = Json::String(uploaded);
    }
    Ok(())
}

/// A local component file, read and inlined: its code uploaded, its local conda file inlined,
/// and (a pipeline component) its steps' local files too.
pub(crate) async fn read_component(
    c: &Client,
    path: &Path,
    ws: &str,
    quiet: bool,
) -> anyhow::Result<Json> {
    let doc = crate::commands::load(path, Some(Kind::Component), &[])?;
    let mut component = doc.spec;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::assets::upload_local_paths(c, Kind::Component, &mut component, dir, ws, quiet).await?;
    if let Some(env) = component.get_mut("environment").filter(|e| e.is_object()) {
        crate::assets::upload_local_paths(c, Kind::Environment, env, dir, ws, quiet).await?;
    }
    if component.get("jobs").is_some() {
        prepare_local_files(c, &mut component, dir, ws, quiet).await?;
    }
    Ok(component)
}

/// A sweep whose `trial` is a local component file: the component is read (its code uploaded,
/// its conda file inlined) and becomes the inline trial. Its inputs named in the search space
/// take the sampled values; its other inputs' defaults become the sweep's inputs.
async fn inline_trial_component(
    c: &Client,
    spec: &mut Json,
    base: &Path,
    ws: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let Some(file) = spec.get("trial").and_then(Json::as_str).map(str::to_string) else {
        return Ok(());
    };
    if tarn_spec::refs::looks_like_ref(&file) {
        bail!(
            "trial: a registered component ({file}) is not supported as a trial yet; give the component file"
        );
    }
    let path = resolve(base, &file);
    let doc = crate::commands::load(&path, Some(Kind::Component), &[]).context("trial")?;
    let mut component = doc.spec;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::assets::upload_local_paths(c, Kind::Component, &mut component, dir, ws, quiet).await?;
    if let Some(env) = component.get_mut("environment").filter(|e| e.is_object()) {
        crate::assets::upload_local_paths(c, Kind::Environment, env, dir, ws, quiet).await?;
    }
    let space: Vec<String> = spec["search_space"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut command = component["command"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for p in &space {
        command = command.replace(
            &format!("${{{{inputs.{p}}}}}"),
            &format!("${{{{search_space.{p}}}}}"),
        );
    }
    let mut trial = serde_json::json!({ "command": command });
    for field in [
        "code",
        "environment",
        "environment_variables",
        "distribution",
        "resources",
    ] {
        if !component[field].is_null() {
            trial[field] = component[field].clone();
        }
    }
    for (name, decl) in component["inputs"].as_object().into_iter().flatten() {
        if space.contains(name) || !spec["inputs"][name].is_null() {
            continue;
        }
        if let Some(default) = decl.get("default").filter(|d| !d.is_null()) {
            if !spec["inputs"].is_object() {
                spec["inputs"] = serde_json::json!({});
            }
            spec["inputs"][name] = default.clone();
        }
    }
    spec["trial"] = trial;
    Ok(())
}

/// Uploads a job-like node's local `code` and inlines its local conda file.
async fn prepare_node(
    c: &Client,
    node: &mut Json,
    base: &Path,
    ws: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    if let Some(code) = node.get("code").and_then(Json::as_str).map(str::to_string)
        && let Ok(DataUri::Local(local)) = uri::parse(&code)
    {
        let dir = resolve(base, &local);
        let uploaded = crate::assets::upload_code(c, &dir, ws, quiet)
            .await
            .with_context(|| format!("code: {}", dir.display()))?;
        node["code"] = Json::String(uploaded);
    }
    if let Some(env) = node.get_mut("environment").filter(|e| e.is_object()) {
        crate::assets::upload_local_paths(c, Kind::Environment, env, base, ws, quiet).await?;
    }
    Ok(())
}

/// `tarn compute list-nodes`.
pub async fn list_nodes(
    c: &Client,
    ws: &str,
    name: &str,
    format: Option<Format>,
) -> anyhow::Result<()> {
    let out = c
        .get(&format!(
            "/workspaces/{}/computes/{}/nodes",
            enc(ws),
            enc(name)
        ))
        .await?;
    let items = out["value"].as_array().cloned().unwrap_or_default();
    output::print_list(
        format.unwrap_or(Format::Table),
        &items,
        &["name", "state", "job", "idle_since"],
    );
    Ok(())
}
