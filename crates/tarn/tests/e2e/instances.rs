//! Compute instances end to end: a real JupyterLab (PyPI, built into the instance's own
//! environment by uv), reached only through Tarn's proxy with Tarn's credentials; kernels
//! driven over the proxied websocket by `tests/instances/kernel.py` (the `websocket-client`
//! package, as a browser would); stop, start, a crash, idle shutdown and a cron schedule.

use crate::harness::Server;
use crate::jobs::write;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn python() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.is_file(),
        "scripts/test installs websocket-client into .venv; run it first"
    );
    p
}

/// Runs `code` in a new kernel of the instance, through the proxy, as `token`.
pub fn run_in_kernel(s: &Server, name: &str, token: &str, code: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/instances/kernel.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(format!("{}/ws/default/computes/{name}/lab/", s.url))
        .arg(token)
        .arg(code)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kernel.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state(s: &Server, name: &str) -> Value {
    s.cli(&["compute", "show", "-n", name, "-o", "json"])
        .success()
        .json()
}

/// Waits until the instance is in `want` (the controller acts on its own: idle, schedules).
pub fn wait_state(s: &Server, name: &str, want: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let shown = state(s, name);
        if shown["state"] == want {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {want}: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn lab_status(s: &Server, name: &str, token: Option<&str>) -> (u16, Value) {
    s.http()
        .with_token(token)
        .get(&format!("/ws/default/computes/{name}/lab/api/status"))
}

#[test]
fn an_instance_serves_jupyterlab_to_its_user_and_keeps_notebooks_across_stop_and_start() {
    let s = Server::start();
    let alice = s.user_with_role("alice", "Data Scientist", "default");
    let bob = s.user_with_role("bob", "Data Scientist", "default");
    let rita = s.user_with_role("rita", "Reader", "default");
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "instance.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/computeInstance.schema.json\n\
         name: alice-box\ntype: computeinstance\n\
         create_on_behalf_of:\n  user_object_id: alice\n\
         setup_scripts:\n  creation_script:\n    command: echo made > made-by-setup.txt\n",
    );
    s.cli(&["compute", "create", "-f", file.to_str().unwrap()])
        .success();
    // `start` waits until it is Running (it was started by create; this waits for it).
    let shown = s
        .cli(&["compute", "start", "-n", "alice-box", "-o", "json"])
        .success()
        .json();
    assert_eq!(shown["state"], "Running", "{shown:#}");
    let lab = shown["services"][0]["endpoint_uri"].as_str().unwrap();
    assert_eq!(lab, format!("{}/ws/default/computes/alice-box/lab/", s.url));

    // Only alice (and Owners) get through; JupyterLab's own token never leaves the server.
    let (code, status) = lab_status(&s, "alice-box", Some(&alice));
    assert_eq!(code, 200, "{status}");
    assert!(status["started"].is_string(), "{status}");
    assert_eq!(lab_status(&s, "alice-box", None).0, 401);
    let (code, body) = lab_status(&s, "alice-box", Some(&bob));
    assert_eq!(code, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("belongs to \"alice\""), "{body}");
    assert_eq!(
        lab_status(&s, "alice-box", Some(&s.token)).0,
        200,
        "an Owner may open it"
    );
    let plan = std::fs::read_to_string(
        walk(&s.home.join("computes"))
            .into_iter()
            .find(|p| p.ends_with("plan.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        !shown.to_string().contains("token\":"),
        "no token in show: {shown}"
    );
    assert!(!plan.contains("token"), "no token in the plan file: {plan}");

    // A kernel over the proxied websocket: in alice's folder, with MLflow pointing at Tarn.
    let out = run_in_kernel(
        &s,
        "alice-box",
        &alice,
        "import os, mlflow\n\
         print(os.getcwd().endswith('/Users/alice'))\n\
         print(open('made-by-setup.txt').read().strip())\n\
         print(sorted(k for k in os.environ if k.startswith('TARN_')))\n\
         mlflow.set_experiment('from-notebook')\n\
         with mlflow.start_run() as run:\n    mlflow.log_metric('rmse', 0.25)\n\
         print('run', run.info.run_id)\n\
         open('analysis.ipynb', 'w').write('{\"cells\": [], \"metadata\": {}, \"nbformat\": 4, \"nbformat_minor\": 5}')\n",
    );
    assert!(
        out.contains("True\nmade\n[]\n") && out.contains("\nrun "),
        "{out}"
    );
    // The run went to the workspace's tracking server (with a token that acts for alice).
    let (code, exp) = s.http().with_token(Some(&alice)).get(
        "/ws/default/mlflow/api/2.0/mlflow/experiments/get-by-name?experiment_name=from-notebook",
    );
    assert_eq!(code, 200, "{exp}");
    let id = exp["experiment"]["experiment_id"].as_str().unwrap();
    let (_, runs) = s.http().with_token(Some(&alice)).post(
        "/ws/default/mlflow/api/2.0/mlflow/runs/search",
        &json!({"experiment_ids": [id], "filter": "metrics.rmse = 0.25"}),
    );
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs:#}");

    // alice disabled: she cannot reach her instance, and her notebook's MLflow token (the
    // instance's, acting for her) stops working; enabled again, both work.
    let log_metric = "import mlflow\n\
         try:\n    mlflow.set_experiment('from-notebook')\n    print('mlflow ok')\n\
         except Exception as e:\n    print('mlflow refused', type(e).__name__)\n";
    s.cli(&["user", "disable", "-n", "alice"]).success();
    assert_eq!(lab_status(&s, "alice-box", Some(&alice)).0, 401);
    let out = run_in_kernel(&s, "alice-box", &s.token, log_metric);
    assert!(out.contains("mlflow refused"), "{out}");
    s.cli(&["user", "enable", "-n", "alice"]).success();
    let out = run_in_kernel(&s, "alice-box", &alice, log_metric);
    assert!(out.contains("mlflow ok"), "{out}");

    // Readers may not stop it; alice may.
    let run = s
        .cli_as(&rita, &["compute", "stop", "-n", "alice-box"])
        .failure();
    assert!(
        run.stderr.contains("may not start or stop"),
        "{}",
        run.stderr
    );
    let stopped = s
        .cli_as(
            &alice,
            &["compute", "stop", "-n", "alice-box", "-o", "json"],
        )
        .success()
        .json();
    assert_eq!(stopped["state"], "Stopped");
    let (code, body) = lab_status(&s, "alice-box", Some(&alice));
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is Stopped"),
        "{body}"
    );
    // The notebook is on the working-directory datastore.
    let files = s
        .cli(&[
            "datastore",
            "ls",
            "--datastore",
            "workspaceworkingdirectory",
            "--path",
            "Users/alice",
            "-o",
            "json",
        ])
        .success()
        .stdout;
    assert!(files.contains("analysis.ipynb"), "{files}");

    // Start again: the notebook is there; the creation script did not run twice.
    s.cli_as(&alice, &["compute", "start", "-n", "alice-box"])
        .success();
    let (code, listing) = s
        .http()
        .with_token(Some(&alice))
        .get("/ws/default/computes/alice-box/lab/api/contents");
    assert_eq!(code, 200, "{listing}");
    assert!(listing.to_string().contains("analysis.ipynb"), "{listing}");
    let logs = s
        .cli(&["compute", "get-logs", "-n", "alice-box", "--lines", "400"])
        .success()
        .stdout;
    assert_eq!(
        logs.matches("running the creation_script").count(),
        1,
        "{logs}"
    );

    // A crash: Failed, with the log's tail; `start` brings it back.
    let jupyter =
        std::fs::read_to_string(format!("/proc/{}/cmdline", lab_pid(&s.home))).unwrap_or_default();
    assert!(jupyter.contains("jupyter"), "{jupyter}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lab_pid(&s.home) as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = wait_state(&s, "alice-box", "Failed", Duration::from_secs(20));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("exited on its own"),
        "{failed:#}"
    );
    s.cli_as(&alice, &["compute", "start", "-n", "alice-box"])
        .success();
    assert_eq!(lab_status(&s, "alice-box", Some(&alice)).0, 200);

    // Deleting it stops its JupyterLab.
    let pid = lab_pid(&s.home);
    s.cli(&["compute", "delete", "-n", "alice-box"]).success();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "JupyterLab outlived its instance"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_instances_stop_and_schedules_start_them() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "idle.yml",
        "name: idle-box\ntype: computeinstance\nidle_time_before_shutdown: PT3S\n",
    );
    s.cli(&["compute", "create", "-f", file.to_str().unwrap()])
        .success();
    wait_state(&s, "idle-box", "Running", Duration::from_secs(300));
    // Nobody uses it: it stops itself after 3 s.
    let stopped = wait_state(&s, "idle-box", "Stopped", Duration::from_secs(30));
    assert!(stopped["idle_seconds"].is_null(), "{stopped:#}");
    let logs = s
        .cli(&["compute", "get-logs", "-n", "idle-box"])
        .success()
        .stdout;
    assert!(
        logs.contains("(idle_time_before_shutdown): stopping"),
        "{logs}"
    );
    // A schedule (six fields: every 2 seconds) starts it again; no idle limit this time.
    s.cli(&[
        "compute",
        "update",
        "-n",
        "idle-box",
        "--set",
        "idle_time_before_shutdown_minutes=60",
        "--set",
        "schedules.compute_start_stop=[{\"action\": \"start\", \"trigger\": {\"type\": \"cron\", \"expression\": \"*/2 * * * * *\"}}]",
    ])
    .success();
    wait_state(&s, "idle-box", "Running", Duration::from_secs(60));
}

#[test]
fn bad_instances_and_actions_are_refused() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    for (yaml, says) in [
        (
            "name: a-box\ntype: computeinstance\ncreate_on_behalf_of:\n  user_object_id: nobody\n",
            "no Tarn user \"nobody\"",
        ),
        (
            "name: b-box\ntype: computeinstance\nschedules:\n  compute_start_stop:\n    - action: stop\n      trigger:\n        type: cron\n        expression: \"0 25 * * *\"\n",
            "schedules.compute_start_stop[0].trigger.expression",
        ),
        (
            "name: c-box\ntype: computeinstance\nidle_time_before_shutdown: 30 minutes\n",
            "not an ISO 8601 duration",
        ),
    ] {
        let f = write(dir.path(), "bad.yml", yaml);
        let run = s
            .cli(&["compute", "create", "-f", f.to_str().unwrap()])
            .failure();
        assert!(run.stderr.contains(says), "{yaml}: {}", run.stderr);
    }
    let listed = s.cli(&["compute", "list", "-o", "json"]).success().json();
    assert_eq!(listed, Value::Array(vec![]), "nothing stored");
    let cluster = write(dir.path(), "cluster.yml", "name: cpu\ntype: amlcompute\n");
    s.cli(&["compute", "create", "-f", cluster.to_str().unwrap()])
        .success();
    let run = s.cli(&["compute", "start", "-n", "cpu"]).failure();
    assert!(
        run.stderr.contains("not a compute instance"),
        "{}",
        run.stderr
    );
    let run = s.cli(&["compute", "start", "-n", "nothing"]).failure();
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    assert_eq!(lab_status(&s, "nothing", Some(&s.token)).0, 404);
}

/// The pid of the JupyterLab process serving an instance under `home`.
pub fn lab_pid(home: &Path) -> u32 {
    let needle = home.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let lab = line.contains("jupyter-lab") || line.contains("jupyter lab");
        if lab && line.contains(&needle) {
            return pid;
        }
    }
    panic!("no JupyterLab process under {needle}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
