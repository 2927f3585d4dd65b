//! `tarn bench servers`: API throughput of one server against two on the same PostgreSQL
//! database. Clients send a steady MLflow mix (create a run, log a batch to it, read it back,
//! search the experiment) to one server, then spread the same load over two. Any server answers
//! these requests itself, so the ratio shows how far a second server adds capacity on this
//! machine (both servers, the database and the clients share its cores).

use super::{Phase, phase, start, stop};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServersCmd {
    /// An empty PostgreSQL database (`postgres://…`) both servers share.
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests per measure.
    #[arg(long, default_value_t = 8000)]
    pub requests: usize,
}

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";
/// Runs the log_batch requests write to (few enough that each gets many points).
const RUNS: usize = 64;

/// What every request needs: the servers' base URLs, the token, the experiment and its runs.
struct Load {
    http: reqwest::Client,
    urls: Vec<String>,
    token: String,
    experiment: String,
    runs: Vec<String>,
}

impl Load {
    /// Request `i` of the mix, sent to server `i % servers`.
    async fn request(&self, i: usize) -> anyhow::Result<()> {
        let base = format!("{}{MLFLOW}", self.urls[i % self.urls.len()]);
        let run = &self.runs[(i / self.urls.len()) % RUNS];
        let req = match i % 4 {
            0 => self.http.post(format!("{base}/runs/create")).json(
                &json!({"experiment_id": self.experiment, "run_name": format!("load-{i}")}),
            ),
            1 => {
                let metrics: Vec<Value> = (0..10)
                    .map(|k| json!({"key": format!("m{k}"), "value": (i * k) as f64 / 7.0, "timestamp": i, "step": i}))
                    .collect();
                self.http
                    .post(format!("{base}/runs/log-batch"))
                    .json(&json!({"run_id": run, "metrics": metrics}))
            }
            2 => self.http.get(format!("{base}/runs/get?run_id={run}")),
            _ => self.http.post(format!("{base}/runs/search")).json(
                &json!({"experiment_ids": [self.experiment], "max_results": 50, "order_by": ["attributes.start_time DESC"]}),
            ),
        };
        let resp = req.bearer_auth(&self.token).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "request {i} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

pub async fn run(cmd: ServersCmd) -> anyhow::Result<()> {
    if !cmd.store.starts_with("postgres") {
        bail!("--store must be a PostgreSQL database (postgres://…): servers share only that");
    }
    let args = ["--store", cmd.store.as_str()];
    let first_home = tempfile::tempdir()?;
    let first = start(first_home.path(), &args).await?;
    // The second server opens the same vault: it gets the first one's key.
    let second_home = tempfile::tempdir()?;
    std::fs::copy(
        first_home.path().join("vault.key"),
        second_home.path().join("vault.key"),
    )
    .context("copying the vault key")?;
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(
        first_home.path().join("credentials.json"),
    )?)?;
    let token = creds["token"].as_str().context("token")?.to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cmd.clients)
        .build()?;

    let mut load = Load {
        http,
        urls: vec![first.url.clone()],
        token,
        experiment: String::new(),
        runs: vec![],
    };
    load.experiment =
        call(&load, "experiments/create", json!({"name": "servers"})).await?["experiment_id"]
            .as_str()
            .context("experiment id")?
            .to_string();
    for r in 0..RUNS {
        let made = call(
            &load,
            "runs/create",
            json!({"experiment_id": load.experiment, "run_name": format!("writer-{r}")}),
        )
        .await?;
        load.runs.push(
            made["run"]["info"]["run_id"]
                .as_str()
                .context("run id")?
                .to_string(),
        );
    }

    let load = Arc::new(load);
    // A short warm-up on one server fills caches and pools alike for both measures.
    measure(&load, cmd.clients, cmd.requests / 10).await?;
    let one = measure(&load, cmd.clients, cmd.requests).await?;

    let second = start(second_home.path(), &args).await?;
    let mut both = Arc::try_unwrap(load).map_err(|_| anyhow::anyhow!("load still shared"))?;
    both.urls.push(second.url.clone());
    let both = Arc::new(both);
    measure(&both, cmd.clients, cmd.requests / 10).await?;
    let two = measure(&both, cmd.clients, cmd.requests).await?;
    stop(second.child)?;
    stop(first.child)?;

    let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{} clients, {} requests per measure (create run, log_batch of 10, get run, search 50, in turn)",
        cmd.clients, cmd.requests
    );
    println!("| servers | req/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for (n, p) in [(1, &one), (2, &two)] {
        println!(
            "| {n} | {:.0} | {} | {} |",
            p.ops_per_sec,
            ms(p.p50),
            ms(p.p99)
        );
    }
    println!(
        "two servers against one: {:.2}x the throughput",
        two.ops_per_sec / one.ops_per_sec
    );
    Ok(())
}

async fn call(load: &Load, path: &str, body: Value) -> anyhow::Result<Value> {
    let resp = load
        .http
        .post(format!("{}{MLFLOW}/{path}", load.urls[0]))
        .bearer_auth(&load.token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{path} answered {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

async fn measure(load: &Arc<Load>, clients: usize, total: usize) -> anyhow::Result<Phase> {
    let load = load.clone();
    phase(clients, total, move |i| {
        let load = load.clone();
        async move { load.request(i).await }
    })
    .await
}
