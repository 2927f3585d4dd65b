//! `tarn bench`: the benchmark harness behind `docs/benchmarks.md`. It starts this very binary
//! as a server in temporary homes and measures, from outside, what a user would notice:
//! start-up time (cold: a new home; warm: a restart), idle memory (RSS), and API create/show
//! throughput and latency with N concurrent clients. `scale` and `servers` measure the store
//! and several servers (their own modules).

use anyhow::{Context, bail};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod scale;
mod servers;

#[derive(clap::Args)]
pub struct BenchCmd {
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Requests per phase (creates, then shows).
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Start-ups to time (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub startup_runs: usize,
}

#[derive(clap::Subcommand)]
pub enum BenchWhat {
    /// Tracking on a big store (1,000,000 runs, 100,000,000 metric points by default): search,
    /// a long metric's history and log_batch throughput against an empty store.
    Scale(scale::ScaleCmd),
    /// API throughput of two servers on one PostgreSQL database against one.
    Servers(servers::ServersCmd),
}

struct Started {
    child: Child,
    url: String,
    elapsed: Duration,
}

/// Starts a server on `home` (with more `tarn up` arguments) and waits until
/// `/api/v1/health` answers.
async fn start(home: &Path, args: &[&str]) -> anyhow::Result<Started> {
    let began = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["up", "--port", "0", "--home"])
        .arg(home)
        .args(args)
        .env_remove("TARN_VAULT_KEY_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let url = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            if let Some(rest) = line?.trim().strip_prefix("API:") {
                let url = rest.trim().trim_end_matches("/api/v1").to_string();
                std::thread::spawn(move || for _ in lines {});
                return Ok(url);
            }
        }
        bail!("the server exited before serving")
    })
    .await??;
    let http = reqwest::Client::new();
    while http
        .get(format!("{url}/api/v1/health"))
        .send()
        .await
        .is_err()
    {
        tokio::task::yield_now().await;
    }
    Ok(Started {
        child,
        url,
        elapsed: began.elapsed(),
    })
}

fn stop(mut child: Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    child.wait()?;
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Phase {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `total` requests from `clients` concurrent clients; `make(i)` issues request `i`.
async fn phase<F, Fut>(clients: usize, total: usize, make: F) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let began = Instant::now();
    let mut tasks = vec![];
    for _ in 0..clients {
        let (next, make) = (next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                make(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = began.elapsed();
    all.sort();
    Ok(Phase {
        ops_per_sec: total as f64 / wall.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    })
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd.what {
        Some(BenchWhat::Scale(scale)) => return scale::run(scale).await,
        Some(BenchWhat::Servers(servers)) => return servers::run(servers).await,
        None => {}
    }
    let runs = cmd.startup_runs.max(1);
    let mut cold = vec![];
    let mut warm = vec![];
    for _ in 0..runs {
        let home = tempfile::tempdir()?;
        let first = start(home.path(), &[]).await?;
        cold.push(first.elapsed);
        stop(first.child)?;
        let again = start(home.path(), &[]).await?;
        warm.push(again.elapsed);
        stop(again.child)?;
    }

    let home = tempfile::tempdir()?;
    let server = start(home.path(), &[]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(server.child.id())?;
    let token: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        home.path().join("credentials.json"),
    )?)?;
    let token = token["token"].as_str().context("token")?.to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cmd.clients)
        .build()?;
    let base = format!("{}/api/v1/workspaces/default/computes", server.url);

    let (h, b, t) = (http.clone(), base.clone(), token.clone());
    let create = phase(cmd.clients, cmd.requests, move |i| {
        let (h, b, t) = (h.clone(), b.clone(), t.clone());
        async move {
            let body = json!({"name": format!("c{i}"), "type": "amlcompute", "max_instances": 4});
            let resp = h.post(&b).bearer_auth(&t).json(&body).send().await?;
            if resp.status() != 201 {
                bail!("create answered {}", resp.status());
            }
            resp.bytes().await?;
            Ok(())
        }
    })
    .await?;
    let (h, b, t, n) = (http.clone(), base.clone(), token.clone(), cmd.requests);
    let show = phase(cmd.clients, cmd.requests, move |i| {
        let (h, b, t) = (h.clone(), b.clone(), t.clone());
        async move {
            let resp = h
                .get(format!("{b}/c{}", (i * 7919) % n))
                .bearer_auth(&t)
                .send()
                .await?;
            if resp.status() != 200 {
                bail!("show answered {}", resp.status());
            }
            resp.bytes().await?;
            Ok(())
        }
    })
    .await?;
    let loaded_rss = rss_kib(server.child.id())?;
    stop(server.child)?;

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| start-up, new home (median of {runs}) | {} |",
        ms(median(cold))
    );
    println!(
        "| start-up, restart (median of {runs}) | {} |",
        ms(median(warm))
    );
    println!(
        "| idle RSS after start | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| RSS after the load below | {:.1} MiB |",
        loaded_rss as f64 / 1024.0
    );
    println!(
        "| create compute, {} clients, {} requests | {:.0} req/s (p50 {}, p99 {}) |",
        cmd.clients,
        cmd.requests,
        create.ops_per_sec,
        ms(create.p50),
        ms(create.p99)
    );
    println!(
        "| show compute, {} clients, {} requests | {:.0} req/s (p50 {}, p99 {}) |",
        cmd.clients,
        cmd.requests,
        show.ops_per_sec,
        ms(show.p50),
        ms(show.p99)
    );
    Ok(())
}
