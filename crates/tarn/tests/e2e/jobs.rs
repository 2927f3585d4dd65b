//! Command jobs end to end: real `tarn runner` processes running real shells and Python, on
//! serverless, `local` and cluster compute, written as `az ml` job YAML.

use crate::harness::{Home, Server};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn show(s: &Server, name: &str) -> Value {
    s.cli(&["job", "show", "-n", name, "-o", "json"])
        .success()
        .json()
}

/// Polls until `done(job)` holds (or fails after `limit`).
#[track_caller]
pub fn wait_for(s: &Server, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let job = show(s, name);
        if done(&job) {
            return job;
        }
        assert!(
            start.elapsed() < limit,
            "job {name} did not get there in {limit:?}: {job:#}\nlog: {}",
            log(s, name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminal(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("Completed" | "Failed" | "Canceled")
    )
}

#[track_caller]
pub fn wait_end(s: &Server, name: &str) -> Value {
    wait_for(s, name, Duration::from_secs(120), terminal)
}

pub(crate) fn log(s: &Server, name: &str) -> String {
    let (_, _) = (s, name);
    let http = s.http();
    let url = format!("{}/api/v1/workspaces/default/jobs/{name}/log", http.base);
    reqwest::blocking::Client::new()
        .get(url)
        .bearer_auth(http.token.as_deref().unwrap())
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Submits a job file; returns the job's name.
pub fn submit(s: &Server, file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["job", "create", "-f", file.to_str().unwrap(), "-o", "json"];
    args.extend_from_slice(extra);
    let job = s.cli(&args).success().json();
    // Queued as submitted, or further on already: the scheduler may have started it between
    // the submission and the reply.
    assert!(
        job["status"].as_str().is_some_and(|s| s != "NotStarted"),
        "{job}"
    );
    job["name"].as_str().unwrap().to_string()
}

/// Is any process running with exactly this argument in its command line?
fn process_with_arg(arg: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
            .unwrap_or(false)
    })
}

pub const HOST_ENV: &str =
    "environment:\n  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04\n";

#[test]
fn hello_world_with_env_vars_and_an_input_that_tries_to_inject_a_command() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let file = write(
        dir.path(),
        "hello.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n\
             command: echo hello ${{{{inputs.who}}}} $GREETING && echo second $[[--opt ${{{{inputs.missing}}}}]] line && cat ${{{{inputs.page}}}}\n\
             experiment_name: greetings\n\
             display_name: hello\n\
             {HOST_ENV}\
             inputs:\n  who: \"world; touch {p}; $(touch {p}) `touch {p}`\"\n  missing:\n    type: string\n    optional: true\n\
               \x20\x20page:\n    type: uri_file\n    path: {url}/api/v1/health\n\
             environment_variables:\n  GREETING: bonjour\n",
            p = pwned.display(),
            url = s.url
        ),
    );
    let run = s.cli(&["job", "create", "-f", file.to_str().unwrap(), "--stream"]);
    let run = run.success();
    assert!(
        run.stdout.contains(&format!(
            "hello world; touch {p}; $(touch {p}) `touch {p}` bonjour",
            p = pwned.display()
        )),
        "the input arrives as one literal argument: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("second line"),
        "an optional segment without a value is dropped: {}",
        run.stdout
    );
    assert!(!pwned.exists(), "an input value ran a command");
    assert!(
        run.stdout.contains("\"status\":\"ok\""),
        "a web input is downloaded: {}",
        run.stdout
    );

    let jobs = s.cli(&["job", "list", "-o", "json"]).success().json();
    let job = &jobs.as_array().unwrap()[0];
    assert_eq!(job["status"], "Completed");
    assert_eq!(job["experiment_name"], "greetings");
    assert_eq!(job["compute"], "serverless", "no compute means serverless");
    assert_eq!(job["mlflow_status"], "FINISHED");
    assert_eq!(job["exit_code"], 0);
    let times = &job["status_times"];
    let order = [
        "NotStarted",
        "Queued",
        "Preparing",
        "Running",
        "Finalizing",
        "Completed",
    ];
    for pair in order.windows(2) {
        let (a, b) = (
            times[pair[0]].as_str().unwrap(),
            times[pair[1]].as_str().unwrap(),
        );
        assert!(a <= b, "{} ({a}) after {} ({b})", pair[0], pair[1]);
    }
    // The log is also a run artifact.
    let name = job["name"].as_str().unwrap();
    let out = dir.path().join("dl");
    s.cli(&["job", "download", "-n", name, "-p", out.to_str().unwrap()])
        .success();
    let stored = std::fs::read_to_string(
        out.join("artifacts/ExperimentRun")
            .join(format!("dcid.{name}"))
            .join("user_logs/std_log.txt"),
    )
    .or_else(|_| std::fs::read_to_string(find(&out, "std_log.txt").unwrap()))
    .unwrap();
    assert!(stored.contains("bonjour"), "{stored}");
}

/// The first file called `name` below `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find(&p, name) {
                return Some(found);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}

#[test]
fn a_python_script_reads_a_local_file_input_and_writes_a_registered_output() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "data/rows.csv", "a,b\n1,2\n3,4\n5,6\n");
    write(
        dir.path(),
        "src/count.py",
        "import argparse, os, pathlib, sys\n\
         p = argparse.ArgumentParser(); p.add_argument('--data'); p.add_argument('--out'); a = p.parse_args()\n\
         rows = open(a.data).read().splitlines()[1:]\n\
         pathlib.Path(a.out, 'count.txt').write_text(str(len(rows)))\n\
         os.makedirs('outputs', exist_ok=True); open('outputs/summary.txt', 'w').write('rows=%d' % len(rows))\n\
         print('rows', len(rows), 'ignored file present:', os.path.exists('notes.tmp'), 'env input ok:', os.environ['AZURE_ML_INPUT_rows'] == a.data)\n\
         print('run id', os.environ['MLFLOW_RUN_ID'], os.environ['AZUREML_RUN_ID'], os.environ['MLFLOW_EXPERIMENT_NAME'])\n\
         print('tracking', os.environ['MLFLOW_TRACKING_URI'])\n",
    );
    write(dir.path(), "src/notes.tmp", "not for the snapshot\n");
    write(dir.path(), "src/.amlignore", "*.tmp\n");
    let file = write(
        dir.path(),
        "job.yml",
        &format!(
            "command: python count.py --data ${{{{inputs.rows}}}} --out ${{{{outputs.counted}}}}\n\
             code: ./src\n\
             experiment_name: counting\n\
             {HOST_ENV}\
             inputs:\n  rows:\n    type: uri_file\n    path: ./data/rows.csv\n    mode: download\n\
             outputs:\n  counted:\n    type: uri_folder\n    name: row-count\n    version: \"7\"\n\
               \x20\x20elsewhere:\n    type: uri_folder\n    path: azureml://datastores/workspaceblobstore/paths/custom/${{{{name}}}}/${{{{output_name}}}}/\n"
        ),
    );
    let first = submit(&s, &file, &[]);
    let job = wait_end(&s, &first);
    assert_eq!(job["status"], "Completed", "{job:#}\n{}", log(&s, &first));
    let text = log(&s, &first);
    assert!(
        text.contains("rows 3 ignored file present: False env input ok: True"),
        "{text}"
    );
    assert!(
        text.contains(&format!("run id {first} {first} counting")),
        "{text}"
    );
    assert!(text.contains("/ws/default/mlflow"), "{text}");
    assert_eq!(
        job["outputs"]["counted"],
        format!("azureml://datastores/workspaceblobstore/paths/azureml/{first}/counted/")
    );

    assert_eq!(
        job["outputs"]["elsewhere"],
        format!("azureml://datastores/workspaceblobstore/paths/custom/{first}/elsewhere/"),
        "output paths substitute ${{{{name}}}} and ${{{{output_name}}}}"
    );
    // The named output became data asset row-count:7, pointing at the job's output.
    let asset = s
        .cli(&["data", "show", "-n", "row-count", "-v", "7", "-o", "json"])
        .success()
        .json();
    assert_eq!(asset["spec"]["path"], job["outputs"]["counted"]);

    let out = dir.path().join("dl");
    s.cli(&[
        "job",
        "download",
        "-n",
        &first,
        "--output-name",
        "counted",
        "-p",
        out.to_str().unwrap(),
    ])
    .success();
    let count = find(&out.join("named-outputs/counted"), "count.txt").unwrap();
    assert_eq!(std::fs::read_to_string(count).unwrap(), "3");
    s.cli(&[
        "job",
        "download",
        "-n",
        &first,
        "--all",
        "-p",
        out.to_str().unwrap(),
    ])
    .success();
    let summary = find(&out.join("artifacts"), "summary.txt").expect("./outputs is a run artifact");
    assert_eq!(std::fs::read_to_string(summary).unwrap(), "rows=3");

    // Unchanged code and data are not uploaded again.
    let again = s
        .cli(&[
            "job",
            "create",
            "-f",
            file.to_str().unwrap(),
            "--set",
            "outputs.counted.version=8",
        ])
        .success();
    assert!(
        again.stderr.matches("already uploaded").count() >= 2,
        "{}",
        again.stderr
    );
}

#[test]
fn a_failing_command_records_its_exit_code_and_log_tail() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "fail.yml",
        &format!("command: echo about to fail && echo boom >&2 && exit 3\n{HOST_ENV}"),
    );
    let run = s
        .cli(&["job", "create", "-f", file.to_str().unwrap(), "--stream"])
        .failure();
    assert!(run.stdout.contains("boom"), "{}", run.stdout);
    let job = &s.cli(&["job", "list", "-o", "json"]).success().json()[0];
    assert_eq!(job["status"], "Failed");
    assert_eq!(job["mlflow_status"], "FAILED");
    assert_eq!(job["exit_code"], 3);
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{job}"
    );
    assert!(job["log_tail"].as_str().unwrap().contains("boom"), "{job}");
    let name = job["name"].as_str().unwrap();
    s.cli(&["job", "stream", "-n", name]).failure();
}

#[test]
fn a_timeout_stops_the_whole_process_tree() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}", 4000 + std::process::id() % 1000);
    let file = write(
        dir.path(),
        "slow.yml",
        &format!(
            "command: sleep {marker}.5 & echo started && sleep {marker}.5\nlimits:\n  timeout: 2\n{HOST_ENV}"
        ),
    );
    let name = submit(&s, &file, &[]);
    // The command starts once the job is Running and its environment is ready.
    let started = Instant::now();
    while !process_with_arg(&format!("{marker}.5")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let job = wait_end(&s, &name);
    assert_eq!(job["status"], "Failed");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("limits.timeout of 2 s"),
        "{job}"
    );
    assert!(job["duration_s"].as_f64().unwrap() < 10.0, "{job}");
    assert!(
        !process_with_arg(&format!("{marker}.5")),
        "a process of the job outlived it"
    );
}

#[test]
fn cancel_stops_a_running_job_and_a_queued_one() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("{}", 5000 + std::process::id() % 1000);
    write(
        dir.path(),
        "cluster.yml",
        "name: one\ntype: amlcompute\nmax_instances: 1\nidle_time_before_scale_down: 60\n",
    );
    s.cli(&[
        "compute",
        "create",
        "-f",
        dir.path().join("cluster.yml").to_str().unwrap(),
    ])
    .success();
    let file = write(
        dir.path(),
        "long.yml",
        &format!("command: echo started && sleep {marker}.25\ncompute: azureml:one\n{HOST_ENV}"),
    );
    let running = submit(&s, &file, &[]);
    let queued = submit(&s, &file, &[]);
    wait_for(&s, &running, Duration::from_secs(30), |_| {
        log(&s, &running).contains("started")
    });
    assert_eq!(
        show(&s, &queued)["status"],
        "Queued",
        "one node: the second job waits"
    );

    let canceled = s
        .cli(&["job", "cancel", "-n", &queued, "-o", "json"])
        .success()
        .json();
    assert_eq!(
        canceled["status"], "Canceled",
        "a queued job is canceled at once"
    );
    let asked = s
        .cli(&["job", "cancel", "-n", &running, "-o", "json"])
        .success()
        .json();
    assert!(
        matches!(
            asked["status"].as_str(),
            Some("CancelRequested" | "Canceled")
        ),
        "{asked}"
    );
    let job = wait_end(&s, &running);
    assert_eq!(job["status"], "Canceled");
    assert_eq!(job["mlflow_status"], "KILLED");
    assert!(
        !process_with_arg(&format!("{marker}.25")),
        "the job's process outlived the cancel"
    );
    let again = s.cli(&["job", "cancel", "-n", &running]).failure();
    assert!(
        again.stderr.contains("already Canceled"),
        "{}",
        again.stderr
    );
}

/// Status times of each job, as milliseconds: (Preparing, end).
fn busy_interval(job: &Value) -> (i64, i64) {
    let t = |k: &str| {
        let text = job["status_times"][k].as_str().unwrap();
        humantime::parse_rfc3339(text)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    (t("Preparing"), t("Completed"))
}

#[test]
fn twenty_jobs_on_a_two_node_cluster_never_run_more_than_two_at_once_then_it_scales_down() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let cluster = write(
        dir.path(),
        "cluster.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json\n\
         name: cpu-cluster\ntype: amlcompute\nmin_instances: 0\nmax_instances: 2\nidle_time_before_scale_down: 1\n",
    );
    s.cli(&["compute", "create", "-f", cluster.to_str().unwrap()])
        .success();
    let file = write(
        dir.path(),
        "job.yml",
        &format!(
            "command: sleep 0.2 && echo node $AZUREML_NODE_NAME\ncompute: azureml:cpu-cluster\n{HOST_ENV}"
        ),
    );
    let names: Vec<String> = (0..20).map(|_| submit(&s, &file, &["-q"])).collect();
    let jobs: Vec<Value> = names.iter().map(|n| wait_end(&s, n)).collect();
    for job in &jobs {
        assert_eq!(job["status"], "Completed", "{job:#}");
        let node = job["nodes"][0].as_str().unwrap();
        assert!(
            node == "cpu-cluster-node-0" || node == "cpu-cluster-node-1",
            "{node}"
        );
    }
    // At no instant were more than two jobs holding nodes.
    let intervals: Vec<(i64, i64)> = jobs.iter().map(busy_interval).collect();
    for &(start, _) in &intervals {
        let overlapping = intervals
            .iter()
            .filter(|(a, b)| *a <= start && start < *b)
            .count();
        assert!(overlapping <= 2, "{overlapping} jobs held nodes at {start}");
    }
    // First in, first out (equal priority): start order follows submission order.
    let starts: Vec<i64> = intervals.iter().map(|i| i.0).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    // Idle nodes go after idle_time_before_scale_down (min_instances is 0).
    let start = Instant::now();
    loop {
        let nodes = s
            .cli(&["compute", "list-nodes", "-n", "cpu-cluster", "-o", "json"])
            .success()
            .json();
        if nodes.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the cluster did not scale down: {nodes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_two_node_pytorch_style_job_finds_its_peer_over_tcp() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "cluster.yml",
        "name: gpu-ish\ntype: amlcompute\nmax_instances: 2\n",
    );
    s.cli(&[
        "compute",
        "create",
        "-f",
        dir.path().join("cluster.yml").to_str().unwrap(),
    ])
    .success();
    write(
        dir.path(),
        "src/dist.py",
        "import os, socket, time\n\
         rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])\n\
         addr, port = os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])\n\
         print('rank', rank, 'node_rank', os.environ['NODE_RANK'], 'local_rank', os.environ['LOCAL_RANK'], flush=True)\n\
         if rank == 0:\n\
         \x20   srv = socket.create_server((addr, port)); conn, _ = srv.accept()\n\
         \x20   print('master got rank', conn.recv(16).decode(), 'of', world, flush=True)\n\
         else:\n\
         \x20   for _ in range(200):\n\
         \x20       try:\n\
         \x20           c = socket.create_connection((addr, port)); break\n\
         \x20       except OSError: time.sleep(0.05)\n\
         \x20   c.sendall(str(rank).encode())\n",
    );
    let file = write(
        dir.path(),
        "dist.yml",
        &format!(
            "command: python dist.py\ncode: ./src\ncompute: azureml:gpu-ish\n\
             resources:\n  instance_count: 2\ndistribution:\n  type: pytorch\n  process_count_per_instance: 1\n{HOST_ENV}"
        ),
    );
    let name = submit(&s, &file, &[]);
    let job = wait_end(&s, &name);
    let text = log(&s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}\n{text}");
    assert_eq!(
        job["nodes"].as_array().unwrap().len(),
        2,
        "both nodes at once"
    );
    assert!(text.contains("master got rank 1 of 2"), "{text}");
    assert!(
        text.contains("[rank 1] rank 1 node_rank 1 local_rank 0"),
        "{text}"
    );

    // Asking for more nodes than the cluster has is refused at submission.
    let too_big = s
        .cli(&[
            "job",
            "create",
            "-f",
            file.to_str().unwrap(),
            "--set",
            "resources.instance_count=3",
        ])
        .failure();
    assert!(
        too_big.stderr.contains("resources.instance_count"),
        "{}",
        too_big.stderr
    );
}

#[test]
fn bad_jobs_are_refused_with_the_field_named_and_nothing_queued() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            &format!("command: echo\ncompute: azureml:nowhere\n{HOST_ENV}"),
            "compute \"nowhere\" does not exist",
        ),
        (
            "command: echo\nenvironment: azureml:missing-env:1\n",
            "environment \"azureml:missing-env:1\" does not exist",
        ),
        (
            &format!(
                "command: echo ${{{{inputs.x}}}}\n{HOST_ENV}inputs:\n  x:\n    type: uri_file\n    path: ./no-such-file.csv\n"
            ),
            "inputs.x.path",
        ),
        (
            &format!(
                "command: echo ${{{{inputs.x}}}}\n{HOST_ENV}inputs:\n  x:\n    type: uri_folder\n    path: azureml://datastores/nostore/paths/x/\n"
            ),
            "inputs.x.path",
        ),
        (
            &format!("command: echo ${{{{inputs.nope}}}}\n{HOST_ENV}"),
            "input `nope` is not declared",
        ),
        (
            &format!("command: echo\ncomand: typo\n{HOST_ENV}"),
            "did you mean",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.yml"), yaml);
        let run = s
            .cli(&["job", "create", "-f", file.to_str().unwrap()])
            .failure();
        assert!(run.stderr.contains(expected), "case {i}: {}", run.stderr);
    }
    let jobs = s.cli(&["job", "list", "-o", "json"]).success().json();
    assert_eq!(jobs, json!([]), "nothing was queued");
    let file = write(
        dir.path(),
        "ok.yml",
        &format!("name: taken\ncommand: echo\n{HOST_ENV}"),
    );
    submit(&s, &file, &[]);
    let dup = s
        .cli(&["job", "create", "-f", file.to_str().unwrap()])
        .failure();
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
}

#[test]
fn a_job_token_acts_only_in_its_workspace_and_dies_with_the_job() {
    let s = Server::start_with_env(Home::temp(), &[("SERVER_ONLY_SECRET", "hunter2")]);
    s.cli(&["workspace", "create", "--name", "other"]).success();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/probe.py",
        "import os, urllib.request, json\n\
         base = os.environ['MLFLOW_TRACKING_URI'].split('/ws/')[0] + '/api/v1'\n\
         tok = os.environ['MLFLOW_TRACKING_TOKEN']\n\
         def call(method, path, body=None):\n\
         \x20   req = urllib.request.Request(base + path, method=method, data=body and json.dumps(body).encode(), headers={'Authorization': 'Bearer ' + tok, 'Content-Type': 'application/json'})\n\
         \x20   try:\n\
         \x20       return urllib.request.urlopen(req).status\n\
         \x20   except urllib.error.HTTPError as e:\n\
         \x20       return e.code\n\
         print('own workspace', call('GET', '/workspaces/default/datastores'))\n\
         print('other workspace', call('GET', '/workspaces/other'))\n\
         print('make a user', call('POST', '/users', {'name': 'mallory'}))\n\
         print('runner token prefix', tok[:5], 'leaked runner env', 'TARN_RUNNER_TOKEN' in os.environ)\n\
         print('server secret', os.environ.get('SERVER_ONLY_SECRET', 'absent'))\n\
         open('outputs_token', 'w').write(tok)\n\
         print('TOKEN=' + tok)\n",
    );
    let file = write(
        dir.path(),
        "probe.yml",
        &format!("command: python probe.py\ncode: ./src\n{HOST_ENV}"),
    );
    let name = submit(&s, &file, &[]);
    let job = wait_end(&s, &name);
    let text = log(&s, &name);
    assert_eq!(job["status"], "Completed", "{text}");
    assert!(text.contains("own workspace 200"), "{text}");
    assert!(text.contains("other workspace 404"), "{text}");
    assert!(text.contains("make a user 403"), "{text}");
    assert!(text.contains("leaked runner env False"), "{text}");
    assert!(
        text.contains("server secret absent") && !text.contains("hunter2"),
        "{text}"
    );
    let token = text.split("TOKEN=").nth(1).unwrap().lines().next().unwrap();
    let http = s.http().with_token(Some(token));
    let (status, _) = http.get("/api/v1/workspaces/default/datastores");
    assert_eq!(status, 401, "the job's token is revoked when the job ends");
}

#[test]
fn inputs_can_be_registered_models_data_assets_and_earlier_jobs_outputs() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model/weights.txt", "w=42\n");
    write(
        dir.path(),
        "model.yml",
        "name: tiny\nversion: \"1\"\ntype: custom_model\npath: ./model\n",
    );
    s.cli(&[
        "model",
        "create",
        "-f",
        dir.path().join("model.yml").to_str().unwrap(),
    ])
    .success();
    write(dir.path(), "rows.csv", "x\n1\n");
    write(
        dir.path(),
        "data.yml",
        "name: rows\ntype: uri_file\npath: ./rows.csv\n",
    );
    s.cli(&[
        "data",
        "create",
        "-f",
        dir.path().join("data.yml").to_str().unwrap(),
    ])
    .success();
    let first = write(
        dir.path(),
        "first.yml",
        &format!(
            "command: cat ${{{{inputs.model}}}}/weights.txt ${{{{inputs.rows}}}} && echo made > ${{{{outputs.made}}}}/made.txt\n{HOST_ENV}\
             inputs:\n  model:\n    type: custom_model\n    path: azureml:tiny:1\n  rows:\n    type: uri_file\n    path: azureml:rows@latest\n\
             outputs:\n  made:\n    type: uri_folder\n"
        ),
    );
    let a = submit(&s, &first, &[]);
    let job = wait_end(&s, &a);
    assert_eq!(job["status"], "Completed", "{job:#}");
    let text = log(&s, &a);
    assert!(text.contains("w=42") && text.contains("x\n1"), "{text}");
    assert!(
        job["inputs"]["model"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/workspaceblobstore/paths/LocalUpload/"),
        "references are pinned to where the data is: {job}"
    );

    let second = write(
        dir.path(),
        "second.yml",
        &format!(
            "command: cat ${{{{inputs.earlier}}}}/made.txt\n{HOST_ENV}\
             inputs:\n  earlier:\n    type: uri_folder\n    path: azureml://jobs/{a}/outputs/made\n    mode: download\n"
        ),
    );
    let b = submit(&s, &second, &[]);
    assert_eq!(wait_end(&s, &b)["status"], "Completed");
    assert!(log(&s, &b).contains("made"), "{}", log(&s, &b));
}

#[test]
fn a_waiting_queue_honours_priority_and_a_cluster_resized_live_runs_more_at_once() {
    let s = Server::start();
    let dir = crate::harness::shared_dir();
    let d = dir.path().display().to_string();
    write(
        dir.path(),
        "c.yml",
        "name: small\ntype: amlcompute\nmax_instances: 1\nidle_time_before_scale_down: 60\n",
    );
    s.cli(&["compute", "create", "-f", &format!("{d}/c.yml")])
        .success();
    let gated = write(
        dir.path(),
        "gated.yml",
        &format!(
            "command: while [ ! -f {d}/go ]; do sleep 0.05; done\ncompute: azureml:small\n{HOST_ENV}"
        ),
    );
    let first_gate = write(
        dir.path(),
        "first.yml",
        &format!(
            "command: while [ ! -f {d}/go0 ]; do sleep 0.05; done\ncompute: azureml:small\n{HOST_ENV}"
        ),
    );
    let blocker = submit(&s, &first_gate, &[]);
    wait_for(&s, &blocker, Duration::from_secs(30), |j| {
        j["status"] == "Running"
    });
    let low = submit(&s, &gated, &["--set", "queue_settings.priority=low"]);
    let medium = submit(&s, &gated, &[]);
    let high = submit(&s, &gated, &["--set", "queue_settings.priority=high"]);

    // The node frees up: the high-priority job, submitted last, goes first.
    std::fs::write(dir.path().join("go0"), "").unwrap();
    wait_for(&s, &high, Duration::from_secs(30), |j| {
        j["status"] == "Running"
    });
    assert_eq!(show(&s, &low)["status"], "Queued");
    assert_eq!(show(&s, &medium)["status"], "Queued");

    // Resized live to 4 nodes: the two waiting jobs start.
    s.cli(&[
        "compute",
        "update",
        "-n",
        "small",
        "--set",
        "max_instances=4",
    ])
    .success();
    for job in [&low, &medium] {
        wait_for(&s, job, Duration::from_secs(30), |j| {
            j["status"] == "Running"
        });
    }
    let nodes = s
        .cli(&["compute", "show", "-n", "small", "-o", "json"])
        .success()
        .json()["nodes"]
        .clone();
    let busy = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "busy")
        .count();
    assert_eq!(busy, 3, "{nodes}");
    std::fs::write(dir.path().join("go"), "").unwrap();
    for job in [&blocker, &low, &high, &medium] {
        assert_eq!(wait_end(&s, job)["status"], "Completed");
    }
}
