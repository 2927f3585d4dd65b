//! The studio in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `tests/peers/studio.mjs` through playwright-core (npm). The server gets what a user would
//! have: two finished training jobs with metric histories, a compute instance, an online
//! endpoint, a schedule that fired. Set `TARN_SCREENSHOTS=docs/screenshots` to refresh the
//! committed screenshots.

use crate::harness::Server;
use crate::jobs::{submit, wait_end, write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A training script that logs a 200-step loss curve and a param through MLflow's REST API
/// (the job's run), and prints an epoch per line.
const TRAIN_PY: &str = r#"
import json, os, sys, time, urllib.request
lr = float(sys.argv[1])
uri, run, token = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"], os.environ["MLFLOW_TRACKING_TOKEN"]
def call(path, body):
    req = urllib.request.Request(uri + "/api/2.0/mlflow/" + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    urllib.request.urlopen(req).read()
now = int(time.time() * 1000)
metrics = [{"key": "loss", "value": 2.0 / (1 + lr * 50 * i), "timestamp": now + i, "step": i} for i in range(200)]
call("runs/log-batch", {"run_id": run, "metrics": metrics, "params": [{"key": "lr", "value": str(lr)}]})
for i in range(200):
    print(f"epoch {i} loss {metrics[i]['value']:.4f}")
"#;

const SCORE_PY: &str = r#"
import json
def init():
    pass
def run(raw_data):
    return {"total": 10 * sum(json.loads(raw_data)["data"])}
"#;

#[test]
fn the_studio_works_in_a_real_browser() {
    let node_modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/node_modules");
    assert!(
        node_modules.join("playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "scripts/test installs chromium (apt) and playwright-core (npm); run it first"
    );
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "src/train.py", TRAIN_PY);
    let mut jobs = vec![];
    for lr in ["0.1", "0.01"] {
        let file = write(
            d,
            &format!("job-{lr}.yml"),
            &format!(
                "type: command\nexperiment_name: studio-test\ndisplay_name: train lr={lr}\ncode: ./src\n\
                 command: python train.py {lr}\nenvironment:\n  image: python:3.11\n"
            ),
        );
        jobs.push(submit(&s, &file, &[]));
    }
    for j in &jobs {
        assert_eq!(wait_end(&s, j)["status"], "Completed");
    }
    // A compute instance and an online endpoint.
    let instance = write(
        d,
        "instance.yml",
        "name: studio-box\ntype: computeinstance\n",
    );
    s.cli(&["compute", "create", "-f", instance.to_str().unwrap()])
        .success();
    write(d, "score/score.py", SCORE_PY);
    write(d, "model/weights.txt", "1");
    let ep = write(d, "endpoint.yml", "name: studio-ep\nauth_mode: key\n");
    s.cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();
    let dep = write(
        d,
        "blue.yml",
        "name: blue\nendpoint_name: studio-ep\nmodel:\n  path: ./model\n\
         code_configuration:\n  code: ./score\n  scoring_script: score.py\n\
         environment:\n  image: python\ninstance_count: 1\n",
    );
    s.cli(&[
        "online-deployment",
        "create",
        "-f",
        dep.to_str().unwrap(),
        "--all-traffic",
    ])
    .success();
    // A schedule that fired once (a recurrence fires when it is made).
    let schedule = write(
        d,
        "nightly.yml",
        "name: nightly-train\ntrigger:\n  type: recurrence\n  frequency: day\n  interval: 1\n\
         create_job:\n  command: echo trained\n  environment:\n    image: python\n",
    );
    s.cli(&["schedule", "create", "-f", schedule.to_str().unwrap()])
        .success();
    let scheduled_job = loop {
        let shown = s
            .cli(&["schedule", "show", "-n", "nightly-train", "-o", "json"])
            .success()
            .json();
        if let Some(name) = shown["schedule"]["last_jobs"][0]["name"].as_str() {
            break name.to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let started = Instant::now();
    while s
        .cli(&["compute", "show", "-n", "studio-box", "-o", "json"])
        .success()
        .json()["state"]
        != "Running"
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the instance never started"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The link MLflow's client prints after a run: <tracking URI>/#/experiments/<id>/runs/<id>.
    let (_, run) = s.http().get(&format!(
        "/ws/default/mlflow/api/2.0/mlflow/runs/get?run_id={}",
        jobs[0]
    ));
    let mlflow_link = format!(
        "{}/ws/default/mlflow/#/experiments/{}/runs/{}",
        s.url,
        run["run"]["info"]["experiment_id"].as_str().unwrap(),
        jobs[0]
    );
    let script = node_modules.parent().unwrap().join("studio.mjs");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(&script)
        .env("TARN_URL", &s.url)
        .env("TARN_TOKEN", &s.token)
        .env("TARN_JOB", &jobs[0])
        .env("TARN_JOB2", &jobs[1])
        .env("TARN_MLFLOW_LINK", &mlflow_link)
        .env("TARN_INSTANCE", "studio-box")
        .env("TARN_ENDPOINT", "studio-ep")
        .env("TARN_SCHEDULE", "nightly-train")
        .env("TARN_SCHEDULED_JOB", &scheduled_job);
    if let Ok(dir) = std::env::var("TARN_SCREENSHOTS") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir);
        cmd.env("TARN_SCREENSHOTS", dir);
    }
    let out = cmd.output().expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "studio.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("studio: all checks passed"), "{stdout}");
}

/// Traces made by the stock client: an answer with nested spans in a run (with a judge's
/// feedback), a failed call, and another answer; prints their ids.
const TRACES_PY: &str = r#"
import os
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
import mlflow
from mlflow.entities import AssessmentSource
exp = mlflow.set_experiment("studio-traces").experiment_id

@mlflow.trace(span_type="RETRIEVER")
def retrieve(question):
    return ["doc one"]

@mlflow.trace(span_type="LLM")
def generate(question, docs):
    with mlflow.start_span("format") as span:
        span.set_inputs({"docs": docs})
        span.set_outputs("formatted")
    return "the answer"

@mlflow.trace(span_type="CHAIN")
def answer(question):
    return generate(question, retrieve(question))

@mlflow.trace
def broken(x):
    raise ValueError("boom")

with mlflow.start_run() as run:
    answer("what is tarn?")
ok = mlflow.get_last_active_trace_id()
mlflow.log_feedback(trace_id=ok, name="relevance", value=0.7,
                    source=AssessmentSource(source_type="LLM_JUDGE", source_id="judge"))
try:
    broken(1)
except ValueError:
    pass
error = mlflow.get_last_active_trace_id()
answer("another question")
model = mlflow.set_active_model(name="assistant-v1")
answer("with a model")
model_trace = mlflow.get_last_active_trace_id()
mlflow.clear_active_model()
from mlflow.genai import datasets
mlflow.log_expectation(trace_id=ok, name="expected", value="a workspace")
qa = datasets.create_dataset(name="studio-qa", experiment_id=exp, tags={"stage": "draft"})
qa.merge_records([{"inputs": {"question": "capital of France?"}, "expectations": {"expected": "Paris"}}])
qa.merge_records(mlflow.search_traces(locations=[exp], filter_string=f"trace.request_id = '{ok}'", return_type="list"))
print(f"EXP={exp}\nOK={ok}\nERROR={error}\nRUN={run.info.run_id}")
print(f"MODEL={model.model_id}\nMODEL_TRACE={model_trace}")
"#;

/// The trace pages in a real browser (`tests/peers/studio_traces.mjs`): the list and its
/// filter, the span timeline, assessments edited from the page, the run's and the logged
/// model's links, the experiment's evaluation datasets and their records, a Reader.
#[test]
fn the_trace_pages_work_in_a_real_browser() {
    let node_modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/node_modules");
    assert!(
        node_modules.join("playwright-core").is_dir(),
        "scripts/test installs playwright-core into tests/peers/node_modules"
    );
    let s = Server::start();
    let reader = s.user_with_role("rita", "Reader", "default");
    let (ok, out) = crate::tracking::run_python(&s, &s.token, &["-c", TRACES_PY]);
    assert!(ok, "{out}");
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_string()
    };
    let script = node_modules.parent().unwrap().join("studio_traces.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .env("TARN_URL", &s.url)
        .env("TARN_TOKEN", &s.token)
        .env("TARN_READER_TOKEN", &reader)
        .env("TARN_EXPERIMENT", value("EXP"))
        .env("TARN_OK_TRACE", value("OK"))
        .env("TARN_ERROR_TRACE", value("ERROR"))
        .env("TARN_RUN", value("RUN"))
        .env("TARN_MODEL", value("MODEL"))
        .env("TARN_MODEL_TRACE", value("MODEL_TRACE"))
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("studio traces: all checks passed"),
        "studio_traces.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Logins, sessions and forms without a browser: the rules a browser relies on.
#[test]
fn studio_sessions_refuse_forged_forms_and_foreign_redirects() {
    let s = Server::start();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without a session, pages send the browser to log in (and back afterwards).
    let resp = client
        .get(format!("{}/ws/default/jobs", s.url))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/login?next=/ws/default/jobs");
    // A wrong token is refused; a good one sets an HttpOnly, SameSite=Strict cookie, and a
    // `next` that leaves the site is ignored.
    let bad = client
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", "tarn_wrong"), ("next", "/")]))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let good = client
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", s.token.as_str()),
            ("next", "//evil.example/"),
        ]))
        .send()
        .unwrap();
    assert_eq!(good.status().as_u16(), 303);
    assert_eq!(good.headers()["location"], "/");
    let cookie = good.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = client
        .get(format!("{}/ws/default/jobs", s.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    // Environments show whether their build is cached here.
    let dir = tempfile::tempdir().unwrap();
    let env = write(
        dir.path(),
        "env.yml",
        "name: tiny
image: python
conda_file:
  dependencies:
    - pip:
      - six
",
    );
    s.cli(&["environment", "create", "-f", env.to_str().unwrap()])
        .success();
    let host = write(
        dir.path(),
        "host.yml",
        "name: host-only
image: python
",
    );
    s.cli(&["environment", "create", "-f", host.to_str().unwrap()])
        .success();
    let envs = client
        .get(format!("{}/ws/default/environments", s.url))
        .header("cookie", &session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(envs.contains("not built yet"), "{envs}");
    assert!(
        envs.contains("image only: runs on the host Python"),
        "{envs}"
    );
    // A form without this session's CSRF token changes nothing.
    let forged = client
        .post(format!("{}/logout", s.url))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", "forged")]))
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    let still = client
        .get(format!("{}/ws/default/jobs", s.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(
        still.status().as_u16(),
        200,
        "the forged logout did nothing"
    );
    // The real one ends the session.
    let out = client
        .post(format!("{}/logout", s.url))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf.as_str())]))
        .send()
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    let after = client
        .get(format!("{}/ws/default/jobs", s.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(after.status().as_u16(), 303, "logged out");
    // The session cookie is no API credential.
    let api = client
        .get(format!("{}/api/v1/workspaces", s.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(api.status().as_u16(), 401);
}

/// A studio page as the local administrator sees it, logged in through the login form.
pub fn page_as_admin(s: &Server, path: &str) -> String {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", s.token.as_str()), ("next", "/")]))
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    let session = cookie.split(';').next().unwrap().to_string();
    let page = client
        .get(format!("{}{path}", s.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    page.text().unwrap()
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
