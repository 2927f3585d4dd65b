//! Chaos: under a mixed load — MLflow clients logging, jobs submitted (commands, sweeps,
//! pipelines), datastore uploads, scoring requests, a running compute instance — the server,
//! job runners, scoring replicas and the instance's JupyterLab are SIGKILLed at random moments
//! for `TARN_CHAOS_ROUNDS` rounds (4 unless set, one of each; `TARN_CHAOS_SEED` picks the
//! moments). Then: every acknowledged write is there (each logged step, each upload with its
//! checksum, each submitted job); every job ends in a terminal state and stays there, and no
//! command ran twice; the endpoint serves again within 10 s of every kill; the instance serves
//! again after every round (a restarted server starts it again; a killed JupyterLab leaves it
//! Failed, with why, until it is started); no listed file is partial; and once the server
//! stops, no process of its home is left. The summary line is what `docs/benchmarks.md`'s
//! reliability table reports.

use crate::endpoints::{deployment, key, project};
use crate::harness::{Http, Server};
use crate::instances::{lab_pid, lab_status, wait_state};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MLFLOW: &str = "/ws/default/mlflow/api/2.0/mlflow";
const UPLOADS: &str = "/api/v1/workspaces/default/datastores/workspaceblobstore/paths/chaos";

/// What the load was told succeeded.
#[derive(Default)]
struct Acked {
    /// Per run: the steps whose log-batch was answered 200.
    steps: Mutex<HashMap<String, Vec<i64>>>,
    jobs: Mutex<Vec<String>>,
    /// Upload index → its checksum.
    files: Mutex<HashMap<u64, String>>,
    /// When scoring last succeeded (ms since the test began).
    scored_at: AtomicU64,
    scored: AtomicU64,
}

/// An upload's content, from its index alone: any file listed can be checked whole.
fn content(i: u64) -> Vec<u8> {
    let len = 1 + (i * 7919) % (256 * 1024);
    (0..len).map(|j| ((i + j) % 251) as u8).collect()
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pids of processes whose command line has `word` as an argument and mentions `text`.
fn processes(word: &str, text: &str) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if (word.is_empty() || args.iter().any(|a| a == word))
            && args.iter().any(|a| a.contains(text))
            && pid != std::process::id()
        {
            out.push(pid);
        }
    }
    out
}

/// The processes whose environment names one of `jobs` as their MLflow run: the jobs' commands.
fn job_processes(jobs: &[String]) -> Vec<u32> {
    let markers: Vec<Vec<u8>> = jobs
        .iter()
        .map(|j| format!("MLFLOW_RUN_ID={j}").into_bytes())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            let theirs = environ
                .split(|b| *b == 0)
                .any(|kv| markers.iter().any(|m| kv == m.as_slice()));
            theirs
                .then(|| e.file_name().to_string_lossy().parse().ok())
                .flatten()
        })
        .collect()
}

/// Submits a job whose command runs 30 s and waits until it runs; returns its name.
fn long_job(http: &Http) -> String {
    let spec = json!({"command": "sleep 30 && echo chaos-long", "environment": {"image": "python"}, "compute": "local"});
    let (code, reply) = http.post("/api/v1/workspaces/default/jobs", &spec);
    assert_eq!(code, 201, "{reply}");
    let job = reply["name"].as_str().unwrap().to_string();
    let wait = Instant::now();
    while job_processes(std::slice::from_ref(&job)).is_empty() {
        assert!(
            wait.elapsed() < Duration::from_secs(30),
            "job {job} never ran its command"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    job
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// A sweep trial: logs its primary metric through MLflow's REST API with the job's token.
const LOG_METRIC: &str = "python3 -c \"import json,os,urllib.request as u; \
u.urlopen(u.Request(os.environ['MLFLOW_TRACKING_URI']+'/api/2.0/mlflow/runs/log-metric', \
json.dumps({'run_id': os.environ['MLFLOW_RUN_ID'], 'key': 'm', 'value': ${{search_space.x}}, 'timestamp': 1}).encode(), \
{'Authorization': 'Bearer '+os.environ['MLFLOW_TRACKING_TOKEN'], 'Content-Type': 'application/json'}))\"";

fn job_spec(i: u64) -> Value {
    let env = json!({"image": "python"});
    match i % 6 {
        3 => json!({
            "type": "sweep", "compute": "local",
            "trial": {"command": LOG_METRIC, "environment": env},
            "sampling_algorithm": "grid",
            "search_space": {"x": {"type": "choice", "values": [1, 2]}},
            "objective": {"primary_metric": "m", "goal": "maximize"},
            "limits": {"max_total_trials": 2, "max_concurrent_trials": 2}
        }),
        5 => json!({
            "type": "pipeline", "compute": "local",
            "jobs": {
                "a": {"type": "command", "command": format!("echo chaos-{i}-a"), "environment": env},
                "b": {"type": "command", "command": format!("echo chaos-{i}-b"), "environment": env}
            }
        }),
        // Long enough that a runner killed mid-job leaves its command behind to be stopped.
        _ => {
            json!({"command": format!("sleep {} && echo chaos-{i}", 1 + i % 3 * 2), "environment": env, "compute": "local"})
        }
    }
}

/// Starts the load; each thread runs until `stop`.
fn load(
    http: &Http,
    url: &str,
    acked: &Arc<Acked>,
    stop: &Arc<AtomicBool>,
    started: Instant,
    score_key: String,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = vec![];
    // Two MLflow clients, a step per batch; a step not acknowledged is sent again.
    for c in 0..2 {
        let (_, run) = http.post(
            &format!("{MLFLOW}/runs/create"),
            &json!({"experiment_id": "0", "run_name": format!("chaos-{c}"), "start_time": 1}),
        );
        let run = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
        let (http, acked, stop) = (http.clone(), acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut step = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let body = json!({"run_id": run,
                    "metrics": [{"key": "m", "value": step as f64, "timestamp": 1000 + step, "step": step}]});
                if let Some((200, _)) = http.try_post(&format!("{MLFLOW}/runs/log-batch"), &body) {
                    acked.steps.lock().unwrap().entry(run.clone()).or_default().push(step);
                    step += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    // Jobs: one submission every 400 ms, at most 24.
    {
        let (http, acked, stop) = (http.clone(), acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && i < 24 {
                match http.try_post("/api/v1/workspaces/default/jobs", &job_spec(i)) {
                    Some((201, reply)) => {
                        acked
                            .jobs
                            .lock()
                            .unwrap()
                            .push(reply["name"].as_str().unwrap().to_string());
                        i += 1;
                    }
                    Some((code, reply)) if code < 500 && code != 503 => {
                        panic!("job {i} refused: {code} {reply}")
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(400));
            }
        }));
    }
    // Uploads, each with its checksum.
    {
        let (url, token, acked, stop) = (
            url.to_string(),
            http.token.clone().unwrap_or_default(),
            acked.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let data = content(i);
                let sha = hex(&data);
                let sent = client
                    .put(format!("{url}{UPLOADS}/f{i}.bin"))
                    .bearer_auth(&token)
                    .header(tarn_api::SHA256_HEADER, &sha)
                    .body(data)
                    .send();
                if sent.is_ok_and(|r| r.status().is_success()) {
                    acked.files.lock().unwrap().insert(i, sha);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // Scoring.
    {
        let (url, acked, stop) = (url.to_string(), acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                let ok = client
                    .post(format!("{url}/endpoints/chaos/score"))
                    .bearer_auth(&score_key)
                    .json(&json!({"data": [1, 2]}))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    acked.scored.fetch_add(1, Ordering::SeqCst);
                    acked
                        .scored_at
                        .store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    threads
}

#[test]
fn sigkills_under_load_lose_no_acknowledged_write_and_leave_nothing_behind() {
    let rounds: usize = std::env::var("TARN_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("TARN_CHAOS_SEED")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut s = Server::start();
    let home_path = s.home.clone();
    let home_text = home_path.display().to_string();
    let url = s.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let ep = project(dir.path(), "chaos", "key");
    s.create_from("online-endpoint", &ep, &[]);
    let blue = deployment(dir.path(), "chaos", "blue", "instance_count: 1\n");
    s.create_from("online-deployment", &blue, &["--all-traffic"]);
    let (score_key, _) = key(&s, "chaos");
    let instance = crate::jobs::write(
        dir.path(),
        "instance.yml",
        "name: chaos-box\ntype: computeinstance\n",
    );
    s.cli(&["compute", "create", "-f", instance.to_str().unwrap()])
        .success();
    s.cli(&["compute", "start", "-n", "chaos-box"]).success();

    let started = Instant::now();
    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&s.http(), &url, &acked, &stop, started, score_key);
    while acked.scored.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the endpoint never served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut kills: HashMap<&str, usize> = HashMap::new();
    let mut killed_runners: Vec<String> = vec![];
    let mut slowest_recovery = Duration::ZERO;
    let mut slowest_instance = Duration::ZERO;
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.u64(500..2500)));
        let victim = ["server", "runner", "replica", "instance"][round % 4];
        match victim {
            "server" => {
                let home = s.kill();
                s = Server::restart_on(home, &url);
            }
            "instance" => {
                // Its JupyterLab dies: the instance is Failed, saying why, until started.
                kill(lab_pid(&home_path));
                let failed = wait_state(&s, "chaos-box", "Failed", Duration::from_secs(20));
                assert!(
                    failed["error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("exited on its own"),
                    "round {round} (seed {seed}): {failed:#}"
                );
                s.cli(&["compute", "start", "-n", "chaos-box"]).success();
            }
            "runner" => {
                // A job in the middle of its command loses its runner: it fails, and its
                // command is stopped with it.
                let job = long_job(&s.http());
                if (round / 3) % 2 == 1 {
                    // Every other time, a runner the restarted server did not start itself.
                    let home = s.kill();
                    s = Server::restart_on(home, &url);
                    *kills.entry("server").or_default() += 1;
                }
                let pid = processes(&job, &url)
                    .into_iter()
                    .find(|p| processes("runner", &url).contains(p))
                    .unwrap_or_else(|| panic!("no runner for {job}"));
                kill(pid);
                let wait = Instant::now();
                loop {
                    let (_, j) = s
                        .http()
                        .get(&format!("/api/v1/workspaces/default/jobs/{job}"));
                    if j["status"] == "Failed"
                        && job_processes(std::slice::from_ref(&job)).is_empty()
                    {
                        break;
                    }
                    assert!(
                        wait.elapsed() < Duration::from_secs(15),
                        "job {job} whose runner was killed: {} ({}) and processes {:?} (seed {seed})",
                        j["status"],
                        j["error"],
                        job_processes(std::slice::from_ref(&job))
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                killed_runners.push(job);
            }
            word => {
                let pids = processes(word, &url);
                if let Some(pid) = pids.get(rng.usize(0..pids.len().max(1))) {
                    kill(*pid);
                } else {
                    continue;
                }
            }
        }
        *kills.entry(victim).or_default() += 1;
        // The endpoint serves again within 10 s.
        let killed_at = started.elapsed().as_millis() as u64;
        let wait = Instant::now();
        while acked.scored_at.load(Ordering::SeqCst) <= killed_at {
            assert!(
                wait.elapsed() < Duration::from_secs(10),
                "round {round} ({victim} killed, seed {seed}): the endpoint did not serve again within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        slowest_recovery = slowest_recovery.max(wait.elapsed());
        // The instance serves again: a restarted server starts it again on its own.
        let wait = Instant::now();
        loop {
            let (code, _) = lab_status(&s, "chaos-box", Some(&s.token));
            if code == 200 {
                break;
            }
            assert!(
                wait.elapsed() < Duration::from_secs(60),
                "round {round} ({victim} killed, seed {seed}): the instance did not serve again within 60 s ({code})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        slowest_instance = slowest_instance.max(wait.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    // Every acknowledged step is in its run's history.
    let http = s.http();
    let mut steps_checked = 0;
    for (run, steps) in acked.steps.lock().unwrap().iter() {
        // The history comes in pages.
        let mut have = std::collections::HashSet::new();
        let mut token = String::new();
        loop {
            let (code, page) = http.get(&format!(
                "{MLFLOW}/metrics/get-history?run_id={run}&metric_key=m&max_results=25000&page_token={token}"
            ));
            assert_eq!(code, 200, "{page}");
            have.extend(
                page["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| m["step"].as_i64().unwrap()),
            );
            match page["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => break,
            }
        }
        for step in steps {
            assert!(
                have.contains(step),
                "run {run}: acknowledged step {step} is missing (seed {seed})"
            );
        }
        steps_checked += steps.len();
    }
    // Every acknowledged upload is there whole; every file there is whole.
    let files = acked.files.lock().unwrap().clone();
    for i in files.keys() {
        let (code, stat) = http.call("HEAD", &format!("{UPLOADS}/f{i}.bin"), None);
        assert_eq!(
            code, 200,
            "acknowledged upload f{i}.bin is missing: {stat} (seed {seed})"
        );
    }
    let (code, listing) =
        http.get("/api/v1/workspaces/default/datastores/workspaceblobstore/ls?path=chaos/");
    assert_eq!(code, 200, "{listing}");
    let client = reqwest::blocking::Client::new();
    for f in listing["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let i: u64 = path
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_prefix('f'))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an unexpected file {path}"));
        let body = client
            .get(format!("{url}{UPLOADS}/f{i}.bin"))
            .bearer_auth(&s.token)
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(
            hex(&body),
            hex(&content(i)),
            "{path} is partial (seed {seed})"
        );
        if let Some(sha) = files.get(&i) {
            assert_eq!(&hex(&body), sha);
        }
    }
    // Every job ends in a terminal state, once; no command ran twice.
    let jobs = acked.jobs.lock().unwrap().clone();
    let mut ends: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        let done = crate::jobs::wait_for(&s, job, Duration::from_secs(180), |j| {
            matches!(
                j["status"].as_str(),
                Some("Completed" | "Failed" | "Canceled")
            )
        });
        let status = done["status"].as_str().unwrap_or_default().to_string();
        assert!(
            matches!(status.as_str(), "Completed" | "Failed" | "Canceled"),
            "job {job} is stuck in {status} (seed {seed}): {done:#}"
        );
        *ends.entry(status.clone()).or_default() += 1;
        if status == "Failed" {
            eprintln!(
                "chaos: job {job} ({}) failed: {}",
                done["type"], done["error"]
            );
            if std::env::var("TARN_CHAOS_DEBUG").is_ok() {
                let mut all = format!("{done:#}\n");
                for e in std::fs::read_dir(home_path.join("runs"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let log =
                        std::fs::read_to_string(e.path().join("runner.log")).unwrap_or_default();
                    all.push_str(&format!("== {}\n{log}\n", e.path().display()));
                }
                std::fs::write(format!("/tmp/chaos-{job}.txt"), all).unwrap();
            }
        }
        if done["type"] == "command" && status == "Completed" {
            let log = s.cli(&["job", "stream", "-n", job]).success().stdout;
            let ran = log
                .lines()
                .filter(|l| l.trim().starts_with("chaos-"))
                .count();
            assert_eq!(ran, 1, "job {job} ran {ran} times (seed {seed}):\n{log}");
        }
    }
    // No job's command outlives its job.
    let all_jobs: Vec<String> = jobs.iter().chain(&killed_runners).cloned().collect();
    let left = job_processes(&all_jobs);
    assert!(
        left.is_empty(),
        "processes of ended jobs are still running: {left:?} (seed {seed})"
    );
    for job in &jobs {
        let (_, again) = http.get(&format!("/api/v1/workspaces/default/jobs/{job}"));
        assert!(
            matches!(
                again["status"].as_str(),
                Some("Completed" | "Failed" | "Canceled")
            ),
            "job {job} left its terminal state: {again}"
        );
    }
    // Once the server stops, nothing of its home is left running.
    let _home = s.stop();
    let wait = Instant::now();
    loop {
        let left = processes("", &home_text);
        if left.is_empty() {
            break;
        }
        if wait.elapsed() > Duration::from_secs(15) {
            let described: Vec<String> = left
                .iter()
                .map(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    format!(
                        "{pid}: {}",
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    )
                })
                .collect();
            panic!(
                "processes left after the server stopped (seed {seed}):\n{}",
                described.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "chaos: {rounds} rounds survived (seed {seed}): kills {kills:?}; {steps_checked} logged steps, {} uploads, {} jobs ({ends:?}) and {} whose runner was killed (Failed, command stopped), {} scoring requests checked; slowest endpoint recovery {:.1} s; slowest instance recovery {:.1} s",
        files.len(),
        jobs.len(),
        killed_runners.len(),
        acked.scored.load(Ordering::SeqCst),
        slowest_recovery.as_secs_f64(),
        slowest_instance.as_secs_f64()
    );
}
