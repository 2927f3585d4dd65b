//! `tarn bench scale`: tracking on a big store. It fills one experiment with `--runs` runs
//! (each with 2 params, MLflow's system tags and a tag of its own, and a `loss` metric of
//! `--points-per-run` steps) plus one run with a `--history-points` metric, writing straight
//! through the store (the same `Tracking` methods the server uses, several writers at once),
//! then measures through a server on that store what a user notices: the first page of a
//! filtered, ordered `search_runs`, a long metric's history (each as the time until the whole
//! answer is in, and the server's CPU per call), and `log_batch` throughput against the same
//! on an empty store.

use super::{percentile, start, stop};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tarn_store::{Location, MetricRow, RunRow, SqlStore, Store, Tracking};

#[derive(clap::Args)]
pub struct ScaleCmd {
    /// The store to fill: an empty PostgreSQL database (`postgres://…`), or SQLite in a new
    /// home when left out.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Another empty database of the same kind, for the empty-store `log_batch` baseline
    /// (SQLite: a new home).
    #[arg(long, value_name = "URL")]
    pub empty_store: Option<String>,
    /// Runs in the experiment.
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: usize,
    /// Points of each run's `loss` metric.
    #[arg(long, default_value_t = 100)]
    pub points_per_run: usize,
    /// Points of the one long metric whose history is read.
    #[arg(long, default_value_t = 20_000)]
    pub history_points: usize,
    /// Concurrent writers while filling.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Where the homes go (the SQLite file can reach gigabytes).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: std::path::PathBuf,
    /// The big store's home, kept after the bench: when it already holds the filled
    /// experiment, it is measured again without filling (a fill of a million runs takes
    /// about 14 minutes).
    #[arg(long, value_name = "DIR")]
    pub home: Option<std::path::PathBuf>,
}

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";
/// Requests per latency measure.
const SAMPLES: usize = 30;
/// Rounds of the log_batch measure on each store.
const ROUNDS: usize = 5;
/// Requests in one round.
const LOG_BATCH_REQUESTS: usize = 6000;
const LR: [&str; 5] = ["0.1", "0.03", "0.01", "0.003", "0.001"];

/// Latencies of one request, and what it cost the server.
struct Measure {
    times: Vec<Duration>,
    cpu: Duration,
}

impl Measure {
    /// `| p50 | p95 | server CPU |` cells.
    fn cells(&self) -> String {
        format!(
            "{} | {} | {}",
            ms(percentile(&self.times, 0.5)),
            ms(percentile(&self.times, 0.95)),
            ms(self.cpu)
        )
    }
}

/// A server on a store, with its token.
struct Running {
    server: Option<super::Started>,
    token: String,
    http: reqwest::Client,
    home: Home,
    store: Option<String>,
}

/// A server's home: a temporary one, or one the user named, which is kept.
enum Home {
    Temporary(tempfile::TempDir),
    Kept(std::path::PathBuf),
}

impl Home {
    fn path(&self) -> &std::path::Path {
        match self {
            Home::Temporary(t) => t.path(),
            Home::Kept(p) => p,
        }
    }
}

impl Running {
    async fn start(home: Home, store: Option<&str>) -> anyhow::Result<Running> {
        let args: Vec<&str> = store.map(|s| vec!["--store", s]).unwrap_or_default();
        let server = start(home.path(), &args).await?;
        let creds: Value = serde_json::from_str(&std::fs::read_to_string(
            home.path().join("credentials.json"),
        )?)?;
        Ok(Running {
            server: Some(server),
            token: creds["token"].as_str().context("token")?.to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(16)
                .build()?,
            home,
            store: store.map(str::to_string),
        })
    }

    /// Stops the server, runs `f`, and starts it again on the same home and store (a SQLite
    /// store takes one writing process at a time).
    async fn paused<T>(&mut self, f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
        if let Some(server) = self.server.take() {
            stop(server.child)?;
        }
        let out = f.await;
        let args: Vec<&str> = self
            .store
            .as_deref()
            .map(|s| vec!["--store", s])
            .unwrap_or_default();
        self.server = Some(start(self.home.path(), &args).await?);
        Ok(out)
    }

    /// The server's base URL.
    fn url(&self) -> &str {
        self.server.as_ref().map_or("", |s| s.url.as_str())
    }

    /// Stops the server for good.
    fn stop(mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(s) => stop(s.child),
            None => Ok(()),
        }
    }

    async fn call(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.call_text(path, body).await?)?)
    }

    /// A call's answer as it came, unparsed.
    async fn call_text(&self, path: &str, body: Option<&Value>) -> anyhow::Result<String> {
        let url = format!("{}{MLFLOW}/{path}", self.url());
        let req = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        let resp = req.bearer_auth(&self.token).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {text}");
        }
        Ok(text)
    }

    /// CPU the server has used so far (all its threads, user and system).
    fn cpu(&self) -> anyhow::Result<Duration> {
        let pid = self.server.as_ref().context("server stopped")?.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("/proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // In clock ticks of USER_HZ, which Linux fixes at 100 for user space.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// `SAMPLES` calls, one at a time: each one's time until its whole answer is in (not
    /// parsed), sorted, and the server's CPU per call.
    async fn measure(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Measure> {
        let cpu = self.cpu()?;
        let mut times = vec![];
        for _ in 0..SAMPLES {
            let t = Instant::now();
            self.call_text(path, body).await?;
            times.push(t.elapsed());
        }
        times.sort();
        Ok(Measure {
            cpu: (self.cpu()? - cpu) / SAMPLES as u32,
            times,
        })
    }

    /// The store's location as the server has it.
    fn location(&self, store: Option<&str>) -> anyhow::Result<Location> {
        Ok(match store {
            Some(url) => Location::parse(url).map_err(anyhow::Error::msg)?,
            None => Location::Sqlite(self.home.path().join("tarn.db")),
        })
    }
}

fn run_id(i: usize) -> String {
    format!("5ca1e{i:027x}")
}

/// A value that looks like a training loss: falling with the step, different per run.
fn loss(run: usize, step: usize) -> f64 {
    let wobble = ((run * 7919 + step * 104_729) % 1000) as f64 / 10_000.0;
    1.0 / (1.0 + step as f64 / 10.0) + (run % 100) as f64 / 200.0 + wobble
}

pub async fn run(cmd: ScaleCmd) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cmd.dir)?;
    let home = match &cmd.home {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Home::Kept(dir.clone())
        }
        None => Home::Temporary(tempfile::tempdir_in(&cmd.dir)?),
    };
    let big = Running::start(home, cmd.store.as_deref()).await?;
    let filled = big
        .call("experiments/get-by-name?experiment_name=scale", None)
        .await
        .ok();
    let exp = match &filled {
        Some(e) => e["experiment"]["experiment_id"].clone(),
        None => big
            .call("experiments/create", Some(&json!({"name": "scale"})))
            .await?["experiment_id"]
            .clone(),
    }
    .as_str()
    .context("experiment id")?
    .parse::<i64>()?;
    let store = Arc::new(big.location(cmd.store.as_deref())?.open().await?);
    let ws = store
        .list_workspaces()
        .await?
        .into_iter()
        .find(|w| w.name == "default")
        .context("the default workspace")?
        .id;

    // Fill, with the server stopped.
    let began = Instant::now();
    let mut big = big;
    let long_run = run_id(cmd.runs);
    if filled.is_some() {
        println!(
            "measuring the store filled before in {}",
            big.home.path().display()
        );
    }
    big.paused(async {
        if filled.is_none() {
            fill(&store, &ws, exp, &cmd).await?;
        }
        store.analyze().await?;
        // The fill reaches the disk before anything is timed: SQLite's checkpoint and the
        // kernel's write-back of gigabytes would otherwise land inside a measure.
        store.close().await;
        std::process::Command::new("sync").status()?;
        anyhow::Ok(())
    })
    .await??;
    let fill_time = began.elapsed();
    let points = cmd.runs * cmd.points_per_run + cmd.history_points;

    // Measure on the big store.
    let search = json!({
        "experiment_ids": [exp.to_string()],
        "filter": "metrics.loss < 0.2 and params.lr = '0.01'",
        "order_by": ["metrics.loss ASC"],
        "max_results": 100,
    });
    let first = big.call("runs/search", Some(&search)).await?;
    let found = first["runs"].as_array().map_or(0, Vec::len);
    let search_ms = big.measure("runs/search", Some(&search)).await?;
    let plain = json!({"experiment_ids": [exp.to_string()], "max_results": 100});
    let plain_ms = big.measure("runs/search", Some(&plain)).await?;
    let history_path = format!("metrics/get-history?run_id={long_run}&metric_key=curve");
    let history = big.call(&history_path, None).await?;
    let history_len = history["metrics"].as_array().map_or(0, Vec::len);
    let history_ms = big.measure(&history_path, None).await?;

    // log_batch on both stores in turns, so that whatever else the machine does falls on
    // both alike; the median round of each counts.
    let empty = Running::start(
        Home::Temporary(tempfile::tempdir_in(&cmd.dir)?),
        cmd.empty_store.as_deref(),
    )
    .await?;
    let empty_exp = empty
        .call("experiments/create", Some(&json!({"name": "scale"})))
        .await?["experiment_id"]
        .as_str()
        .context("experiment id")?
        .parse::<i64>()?;
    let (mut big_rounds, mut empty_rounds) = (vec![], vec![]);
    let (mut big_cpu, mut empty_cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let cpu = big.cpu()?;
        big_rounds.push(log_batch_rate(&big, exp).await?);
        big_cpu += big.cpu()? - cpu;
        let cpu = empty.cpu()?;
        empty_rounds.push(log_batch_rate(&empty, empty_exp).await?);
        empty_cpu += empty.cpu()? - cpu;
    }
    let (big_batch, empty_batch) = (middle(big_rounds), middle(empty_rounds));
    let per_call = |cpu: Duration| {
        format!(
            "{:.0} µs",
            cpu.as_secs_f64() * 1e6 / (ROUNDS * LOG_BATCH_REQUESTS) as f64
        )
    };
    let (big_cpu, empty_cpu) = (per_call(big_cpu), per_call(empty_cpu));
    big.stop()?;
    empty.stop()?;

    let backend = match store.dialect() {
        tarn_store::Dialect::Sqlite => "SQLite",
        tarn_store::Dialect::Postgres => "PostgreSQL",
    };
    if filled.is_none() {
        println!(
            "{backend}: {} runs, {points} metric points, filled in {:.0} s ({:.0} runs/s, {} writers)",
            cmd.runs + 1,
            fill_time.as_secs_f64(),
            cmd.runs as f64 / fill_time.as_secs_f64(),
            cmd.writers
        );
    } else {
        println!("{backend}: the store filled before, measured again");
    }
    println!("| measure | p50 | p95 | server CPU per call |");
    println!("|---|---|---|---|");
    println!(
        "| search_runs, filter on a metric and a param, order by the metric, first page ({found} runs) | {} |",
        search_ms.cells()
    );
    println!(
        "| search_runs, no filter, first page of 100 | {} |",
        plain_ms.cells()
    );
    println!(
        "| get_metric_history, {history_len} points | {} |",
        history_ms.cells()
    );
    println!(
        "| log_batch (100 points), 8 clients: big store / empty store, median of {ROUNDS} rounds | {big_batch:.0} / {empty_batch:.0} req/s ({:+.1}%) | | {big_cpu} / {empty_cpu} |",
        (big_batch / empty_batch - 1.0) * 100.0
    );
    Ok(())
}

/// Writes the runs and the long metric straight through the store, `cmd.writers` at a time.
async fn fill(store: &Arc<SqlStore>, ws: &str, exp: i64, cmd: &ScaleCmd) -> anyhow::Result<()> {
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut writers = vec![];
    for _ in 0..cmd.writers.max(1) {
        let (store, ws, next, done) = (store.clone(), ws.to_string(), next.clone(), done.clone());
        let (runs, points) = (cmd.runs, cmd.points_per_run);
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    return anyhow::Ok(());
                }
                fill_run(&store, &ws, exp, i, points).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let progress = {
        let done = done.clone();
        let runs = cmd.runs;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / began.elapsed().as_secs_f64();
                eprintln!(
                    "filled {n}/{runs} runs ({rate:.0}/s, about {:.0} s to go)",
                    (runs - n) as f64 / rate.max(1.0)
                );
            }
        })
    };
    for w in writers {
        w.await??;
    }
    progress.abort();
    let long_run = run_id(cmd.runs);
    store
        .create_run(&run_row(ws, exp, cmd.runs), &system_tags(cmd.runs))
        .await?;
    let long: Vec<MetricRow> = (0..cmd.history_points)
        .map(|s| MetricRow {
            key: "curve".into(),
            value: loss(0, s),
            timestamp: 1_700_000_000_000 + s as i64,
            step: s as i64,
        })
        .collect();
    for chunk in long.chunks(1000) {
        store
            .log_batch(ws, &long_run, chunk, &[], &[])
            .await?
            .map_err(|c| anyhow::anyhow!("param conflict {c:?}"))?;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn run_row(ws: &str, exp: i64, i: usize) -> RunRow {
    RunRow {
        workspace_id: ws.to_string(),
        run_id: run_id(i),
        experiment_id: exp,
        run_name: format!("run-{i}"),
        user_id: "bench".into(),
        status: "FINISHED".into(),
        start_time: Some(1_700_000_000_000 + i as i64),
        end_time: Some(1_700_000_060_000 + i as i64),
        lifecycle_stage: "active".into(),
        artifact_uri: format!("tarn://bench/{}/artifacts", run_id(i)),
    }
}

/// What the stock client sets on a run, and a tag of the run's own.
fn system_tags(i: usize) -> Vec<(String, String)> {
    [
        ("mlflow.user", "bench".to_string()),
        ("mlflow.runName", format!("run-{i}")),
        ("mlflow.source.type", "LOCAL".to_string()),
        ("mlflow.source.name", "train.py".to_string()),
        ("team", format!("team-{}", i % 10)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn fill_run(
    store: &SqlStore,
    ws: &str,
    exp: i64,
    i: usize,
    points: usize,
) -> anyhow::Result<()> {
    store
        .create_run(&run_row(ws, exp, i), &system_tags(i))
        .await?;
    let metrics: Vec<MetricRow> = (0..points)
        .map(|s| MetricRow {
            key: "loss".into(),
            value: loss(i, s),
            timestamp: 1_700_000_000_000 + (i + s) as i64,
            step: s as i64,
        })
        .collect();
    let params = [
        ("lr".to_string(), LR[i % LR.len()].to_string()),
        ("batch".to_string(), (32 << (i % 4)).to_string()),
    ];
    for (n, chunk) in metrics.chunks(1000).enumerate() {
        let p: &[(String, String)] = if n == 0 { &params } else { &[] };
        store
            .log_batch(ws, &run_id(i), chunk, p, &[])
            .await?
            .map_err(|c| anyhow::anyhow!("param conflict {c:?}"))?;
    }
    Ok(())
}

/// The median of a few figures.
fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `log_batch` requests per second from 8 clients, each logging 100 points per request to a
/// run of its own, 6,000 requests in all (a few seconds: shorter rounds were mostly noise).
async fn log_batch_rate(s: &Running, exp: i64) -> anyhow::Result<f64> {
    const CLIENTS: usize = 8;
    const REQUESTS: usize = LOG_BATCH_REQUESTS;
    let mut runs = vec![];
    for c in 0..CLIENTS {
        let r = s
            .call(
                "runs/create",
                Some(&json!({"experiment_id": exp.to_string(), "run_name": format!("writer-{c}")})),
            )
            .await?;
        runs.push(
            r["run"]["info"]["run_id"]
                .as_str()
                .context("run id")?
                .to_string(),
        );
    }
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let s = Arc::new((
        s.http.clone(),
        format!("{}{MLFLOW}/runs/log-batch", s.url()),
        s.token.clone(),
    ));
    let mut tasks = vec![];
    for run in runs {
        let (next, s) = (next.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS {
                    return anyhow::Ok(());
                }
                let metrics: Vec<Value> = (0..100)
                    .map(|k| json!({"key": "loss", "value": loss(i, k), "timestamp": i * 100 + k, "step": i * 100 + k}))
                    .collect();
                let resp = s
                    .0
                    .post(&s.1)
                    .bearer_auth(&s.2)
                    .json(&json!({"run_id": run, "metrics": metrics}))
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("log-batch answered {}", resp.status());
                }
                resp.bytes().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(REQUESTS as f64 / began.elapsed().as_secs_f64())
}
