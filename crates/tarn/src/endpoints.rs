//! `tarn online-endpoint …` and `tarn online-deployment …` beyond the resource commands:
//! credentials, key rotation, invoke, logs, and waiting for a deployment to be ready (as
//! `az ml online-deployment create` does) with `--all-traffic`. `tarn batch-endpoint invoke`
//! and `list-jobs`, and `batch-deployment list-jobs` and `create --set-default`.

use crate::client::{Client, enc};
use crate::output::{self, Format};
use crate::{ResourceCmd, Where};
use anyhow::{Context, bail};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum OnlineEndpointCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// The endpoint's keys (auth_mode: key) or a token that expires (auth_mode: aml_token).
    GetCredentials {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        at: Where,
    },
    /// Replace the primary or the secondary key; the old one stops working at once.
    RegenerateKeys {
        #[arg(short, long)]
        name: String,
        #[arg(long, value_parser = ["primary", "secondary"])]
        key_type: String,
        #[command(flatten)]
        at: Where,
    },
    /// Send a scoring request and print the answer.
    Invoke {
        #[arg(short, long)]
        name: String,
        /// The request body (JSON).
        #[arg(short, long)]
        request_file: PathBuf,
        /// Send it to this deployment, bypassing the traffic split.
        #[arg(short, long)]
        deployment_name: Option<String>,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(clap::Subcommand)]
pub enum OnlineDeploymentCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// The end of a deployment's replica log (scoring server output, environment build).
    GetLogs {
        #[arg(short, long)]
        name: String,
        /// How many lines from the end.
        #[arg(short, long, default_value_t = 100)]
        lines: usize,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(clap::Subcommand)]
pub enum BatchEndpointCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// Score data with a deployment: submits a job whose output `score` holds the results
    /// (`tarn job download -n <job> --output-name score`).
    Invoke {
        #[arg(short, long)]
        name: String,
        /// The deployment to run (default: the endpoint's default deployment).
        #[arg(short, long)]
        deployment_name: Option<String>,
        /// The data: a local file or folder (uploaded), `azureml:<data>@latest`, a datastore
        /// URI or a job output URI.
        #[arg(long)]
        input: Option<String>,
        #[arg(long, value_parser = ["uri_folder", "uri_file"], default_value = "uri_folder")]
        input_type: String,
        /// Where the `score` output goes (a datastore URI).
        #[arg(long)]
        output_path: Option<String>,
        #[arg(long)]
        experiment_name: Option<String>,
        /// A YAML file with `inputs:` (and `outputs:`) by name, as for `az ml batch-endpoint
        /// invoke --file`; local paths are uploaded.
        #[arg(short, long)]
        file: Option<PathBuf>,
        /// Follow the job's log until it ends (exit code: the job's).
        #[arg(short, long)]
        stream: bool,
        #[command(flatten)]
        at: Where,
    },
    /// The jobs the endpoint ran.
    ListJobs {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(clap::Subcommand)]
pub enum BatchDeploymentCmd {
    #[command(flatten)]
    Resource(ResourceCmd),
    /// The jobs the deployment ran.
    ListJobs {
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        at: Where,
    },
}

fn endpoint_url(ws: &str, name: &str) -> String {
    format!("/workspaces/{}/online-endpoints/{}", enc(ws), enc(name))
}

pub async fn endpoint(
    c: &Client,
    cmd: OnlineEndpointCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    match cmd {
        OnlineEndpointCmd::Resource(cmd) => {
            crate::commands::resource(c, tarn_spec::Kind::OnlineEndpoint, cmd, g, default_ws)
                .await?
        }
        OnlineEndpointCmd::GetCredentials { name, at } => {
            let ws = default_ws(at.workspace);
            let out = c
                .post(
                    &format!("{}/credentials", endpoint_url(&ws, &name)),
                    &json!({}),
                )
                .await?;
            output::print_one(g.output.unwrap_or(Format::Yaml), &out);
        }
        OnlineEndpointCmd::RegenerateKeys { name, key_type, at } => {
            let ws = default_ws(at.workspace);
            c.post(
                &format!("{}/regenerate-keys", endpoint_url(&ws, &name)),
                &json!({ "key_type": key_type }),
            )
            .await?;
            eprintln!("regenerated the {key_type} key of online endpoint {name:?}");
        }
        OnlineEndpointCmd::Invoke {
            name,
            request_file,
            deployment_name,
            at,
        } => {
            let ws = default_ws(at.workspace);
            let body = std::fs::read(&request_file)
                .with_context(|| format!("cannot read {}", request_file.display()))?;
            let endpoint = c.get(&endpoint_url(&ws, &name)).await?;
            let creds = c
                .post(
                    &format!("{}/credentials", endpoint_url(&ws, &name)),
                    &json!({}),
                )
                .await?;
            let secret = creds["primaryKey"]
                .as_str()
                .or(creds["accessToken"].as_str())
                .context("the endpoint gave no key or token")?;
            let uri = endpoint["scoring_uri"]
                .as_str()
                .context("the endpoint has no scoring_uri")?;
            let mut req = reqwest::Client::new()
                .post(uri)
                .bearer_auth(secret)
                .header("content-type", "application/json")
                .body(body);
            if let Some(d) = &deployment_name {
                req = req.header("azureml-model-deployment", d);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach {uri}"))?;
            let status = resp.status();
            let text = resp.text().await?;
            if !status.is_success() {
                bail!("the endpoint answered {status}: {text}");
            }
            println!("{text}");
        }
    }
    Ok(())
}

pub async fn deployment(
    c: &Client,
    cmd: OnlineDeploymentCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    match cmd {
        OnlineDeploymentCmd::Resource(cmd) => {
            crate::commands::resource(c, tarn_spec::Kind::OnlineDeployment, cmd, g, default_ws)
                .await?
        }
        OnlineDeploymentCmd::GetLogs { name, lines, at } => {
            let ws = default_ws(at.workspace);
            let ep = at
                .endpoint
                .context("give the endpoint with -e/--endpoint-name")?;
            let resp = c
                .get_raw(&format!(
                    "{}/deployments/{}/logs?lines={lines}",
                    endpoint_url(&ws, &ep),
                    enc(&name)
                ))
                .await?;
            print!("{}", resp.text().await?);
            println!();
        }
    }
    Ok(())
}

fn batch_url(ws: &str, name: &str) -> String {
    format!("/workspaces/{}/batch-endpoints/{}", enc(ws), enc(name))
}

const JOB_COLUMNS: &[&str] = &["name", "status", "display_name", "created_at", "duration_s"];

pub async fn batch_endpoint(
    c: &Client,
    cmd: BatchEndpointCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        BatchEndpointCmd::Resource(cmd) => {
            crate::commands::resource(c, tarn_spec::Kind::BatchEndpoint, cmd, g, default_ws).await?
        }
        BatchEndpointCmd::Invoke {
            name,
            deployment_name,
            input,
            input_type,
            output_path,
            experiment_name,
            file,
            stream,
            at,
        } => {
            let ws = default_ws(at.workspace);
            let input = match input {
                Some(text) => Some(upload_if_local(c, &ws, &text, &input_type, g.quiet).await?),
                None => None,
            };
            let (mut inputs, mut outputs) = (json!({}), json!({}));
            if let Some(file) = &file {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let doc = tarn_spec::Node::from_yaml(&text)
                    .map_err(|e| {
                        anyhow::anyhow!("{}: invalid YAML: {}", file.display(), e.message)
                    })?
                    .to_json();
                let base = file.parent().unwrap_or(std::path::Path::new("."));
                for (name, value) in doc["inputs"].as_object().into_iter().flatten() {
                    let mut value = value.clone();
                    if let Some(path) = value["path"].as_str() {
                        let ty = value["type"].as_str().unwrap_or("uri_folder").to_string();
                        let local = match tarn_spec::uri::parse(path) {
                            Ok(tarn_spec::uri::DataUri::Local(p)) => {
                                base.join(p).display().to_string()
                            }
                            _ => path.to_string(),
                        };
                        value["path"] = json!(
                            upload_if_local(c, &ws, &local, &ty, g.quiet)
                                .await
                                .with_context(|| format!("{}: inputs.{name}", file.display()))?
                        );
                    }
                    inputs[name] = value;
                }
                outputs = doc["outputs"].clone();
            }
            let job = c
                .post(
                    &format!("{}/invoke", batch_url(&ws, &name)),
                    &json!({
                        "deployment_name": deployment_name,
                        "input": input,
                        "input_type": input_type,
                        "output_path": output_path,
                        "experiment_name": experiment_name,
                        "inputs": inputs,
                        "outputs": if outputs.is_object() { outputs } else { json!({}) },
                    }),
                )
                .await?;
            let job_name = job["name"].as_str().unwrap_or_default().to_string();
            if stream {
                if !g.quiet {
                    eprintln!("batch job {job_name} submitted; following its log");
                }
                return crate::jobs::follow(c, &ws, &job_name).await;
            }
            output::print_one(g.output.unwrap_or(Format::Yaml), &job);
        }
        BatchEndpointCmd::ListJobs { name, at } => {
            let ws = default_ws(at.workspace);
            let out = c.get(&format!("{}/jobs", batch_url(&ws, &name))).await?;
            let items = out["value"].as_array().cloned().unwrap_or_default();
            output::print_list(g.output.unwrap_or(Format::Table), &items, JOB_COLUMNS);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub async fn batch_deployment(
    c: &Client,
    cmd: BatchDeploymentCmd,
    g: &crate::Global,
    default_ws: &dyn Fn(Option<String>) -> String,
) -> anyhow::Result<()> {
    match cmd {
        BatchDeploymentCmd::Resource(cmd) => {
            crate::commands::resource(c, tarn_spec::Kind::BatchDeployment, cmd, g, default_ws)
                .await?
        }
        BatchDeploymentCmd::ListJobs { name, at } => {
            let ws = default_ws(at.workspace);
            let ep = at
                .endpoint
                .context("give the endpoint with -e/--endpoint-name")?;
            let out = c
                .get(&format!(
                    "{}/jobs?deployment={}",
                    batch_url(&ws, &ep),
                    enc(&name)
                ))
                .await?;
            let items = out["value"].as_array().cloned().unwrap_or_default();
            output::print_list(g.output.unwrap_or(Format::Table), &items, JOB_COLUMNS);
        }
    }
    Ok(())
}

/// A local file or folder given as `--input` is uploaded (content-addressed, as job inputs are);
/// anything else goes to the server as written.
async fn upload_if_local(
    c: &Client,
    ws: &str,
    text: &str,
    input_type: &str,
    quiet: bool,
) -> anyhow::Result<String> {
    let Ok(tarn_spec::uri::DataUri::Local(local)) = tarn_spec::uri::parse(text) else {
        return Ok(text.to_string());
    };
    let local = PathBuf::from(local);
    let meta = std::fs::metadata(&local)
        .with_context(|| format!("--input: {} does not exist", local.display()))?;
    if input_type == "uri_file" && !meta.is_file() {
        bail!(
            "--input: {} is not a file (--input-type uri_file)",
            local.display()
        );
    }
    if input_type == "uri_folder" && !meta.is_dir() {
        bail!(
            "--input: {} is not a folder (use --input-type uri_file for a file)",
            local.display()
        );
    }
    crate::assets::upload_content_addressed(c, &local, ws, quiet).await
}

/// Makes a batch deployment its endpoint's default (`batch-deployment create --set-default`).
pub async fn set_default(
    c: &Client,
    ws: &str,
    endpoint: &str,
    name: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let url = batch_url(ws, endpoint);
    let mut spec = c.get(&url).await?["spec"].clone();
    spec["defaults"]["deployment_name"] = json!(name);
    c.put(&url, &spec).await?;
    if !quiet {
        eprintln!("batch endpoint {endpoint}: default deployment is {name}");
    }
    Ok(())
}

/// How long `create`/`update` wait for a deployment before giving up (the environment build
/// of a first deployment can take minutes).
const READY_PATIENCE: Duration = Duration::from_secs(1800);

/// Waits until a deployment is `Succeeded` (returns it) or `Failed` (an error with its log).
pub async fn wait_ready(
    c: &Client,
    ws: &str,
    endpoint: &str,
    name: &str,
    quiet: bool,
) -> anyhow::Result<Json> {
    let url = format!("{}/deployments/{}", endpoint_url(ws, endpoint), enc(name));
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let d = c.get(&url).await?;
        let state = d["provisioning_state"].as_str().unwrap_or("Creating");
        let replicas = d["replicas"].as_array().cloned().unwrap_or_default();
        let ready = replicas
            .iter()
            .filter(|r| r["state"] == "Ready" && r["current"] == true)
            .count();
        let line = format!(
            "deployment {name}: {state}, {ready}/{} replicas ready",
            d["spec"]["instance_count"].as_u64().unwrap_or(1)
        );
        if !quiet && line != last {
            eprintln!("{line} ({:.1} s)", started.elapsed().as_secs_f64());
            last = line;
        }
        match state {
            "Succeeded" => return Ok(d),
            "Failed" => bail!(
                "deployment {name:?} failed: {}",
                d["error"].as_str().unwrap_or("(no reason given)")
            ),
            _ => {}
        }
        if started.elapsed() > READY_PATIENCE {
            bail!(
                "deployment {name:?} is still {state} after {} s; see `tarn online-deployment get-logs -n {name} -e {endpoint}`",
                READY_PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--traffic "blue=90 green=10"` as a map.
pub fn parse_traffic(text: &str) -> anyhow::Result<Json> {
    let mut map = serde_json::Map::new();
    for part in text.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (name, pct) = part
            .split_once('=')
            .with_context(|| format!("{part:?}: write traffic as \"<deployment>=<percent> …\""))?;
        let pct: u64 = pct
            .parse()
            .with_context(|| format!("{part:?}: the percentage must be a whole number"))?;
        map.insert(name.to_string(), json!(pct));
    }
    Ok(Json::Object(map))
}

/// Sends all of an endpoint's traffic to one deployment (`--all-traffic`).
pub async fn all_traffic(c: &Client, ws: &str, endpoint: &str, name: &str) -> anyhow::Result<()> {
    let url = endpoint_url(ws, endpoint);
    let mut spec = c.get(&url).await?["spec"].clone();
    spec["traffic"] = json!({ name: 100 });
    c.put(&url, &spec).await?;
    eprintln!("online endpoint {endpoint}: all traffic to {name}");
    Ok(())
}
