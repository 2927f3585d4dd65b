//! `tarn job …` and `tarn compute list-nodes`: submitting jobs written for `az ml` (local code,
//! inputs and conda files uploaded or inlined first), following their logs, cancelling,
//! downloading outputs.

use crate::client::{Client, enc};
use crate::output::{self, Format};
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::Value as Json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tarn_spec::Kind;

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
    /// Show a job: status, times, inputs, outputs, metrics and its document.
    Show {
        #[arg(short, long)]
        name: String,
        /// Open the job's studio page in a browser (printing its address), as `az ml job show
        /// --web` does.
        #[arg(long)]
        web: bool,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// List jobs, newest first.
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
    /// Cancel a job (its steps and trials too); it stops within seconds.
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
    /// Archive a job: hidden from lists unless --include-archived.
    Archive {
        #[arg(short, long)]
        name: String,
        #[arg(short, long, env = "TARN_WORKSPACE")]
        workspace: Option<String>,
    },
    /// Restore an archived job.
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
            crate::assets::upload_local_paths(c, Kind::Job, &mut spec, base, &ws, g.quiet).await?;
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
        JobCmd::Show {
            name,
            web,
            workspace,
        } => {
            let ws = default_ws(workspace);
            let out = c.get(&job_url(&ws, &name)).await?;
            if web {
                let page = format!(
                    "{}/ws/{}/jobs/{}",
                    c.server().trim_end_matches('/'),
                    enc(&ws),
                    enc(&name)
                );
                open_in_browser(&page, g.quiet);
                println!("{page}");
                return Ok(ExitCode::SUCCESS);
            }
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

/// Opens `url` with `$BROWSER` or `xdg-open` where there is a desktop to open it on; the
/// address is printed either way.
fn open_in_browser(url: &str, quiet: bool) {
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = std::env::var("BROWSER")
        .ok()
        .or_else(|| desktop.then(|| "xdg-open".to_string()));
    let opened = opener.is_some_and(|o| {
        std::process::Command::new(o)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    });
    if !opened && !quiet {
        eprintln!("no browser to open here (set BROWSER); the job's page:");
    }
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
        &[
            "name",
            "state",
            "job",
            "idle_since",
            "cpus",
            "memory_mb",
            "gpus",
        ],
    );
    Ok(())
}
