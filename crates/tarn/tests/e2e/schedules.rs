//! Schedules as users meet them: Azure ML's schedule files taken as written, a schedule that
//! fires at once and every minute after with its jobs named and tagged after it, one turned
//! off and deleted, and a server that was down across due times making up what it missed as
//! each schedule's `missed_fires` says — exactly once per due time, and never for an owner
//! who was disabled. When each fire is due is table-tested in `tarn_spec::trigger`.

use crate::harness::Server;
use crate::jobs::{HOST_ENV, log, wait_end, write};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/azml-corpus/cli/schedules")
        .join(file)
}

fn show(s: &Server, name: &str) -> Value {
    s.cli(&["schedule", "show", "-n", name, "-o", "json"])
        .success()
        .json()
}

fn seconds(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"))
        .as_second()
}

/// The jobs a schedule fired (by its tag), as (due time in seconds, job name), by due time.
fn fired(s: &Server, schedule: &str) -> Vec<(i64, String)> {
    let jobs = s
        .cli(&["job", "list", "-o", "json", "--max-results", "1000"])
        .success()
        .json();
    let mut out: Vec<(i64, String)> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["tags"]["azureml.schedule"] == schedule)
        .map(|j| {
            (
                seconds(j["tags"]["azureml.schedule.due"].as_str().unwrap()),
                j["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until `schedule` has fired a job for a due time after `after_s` (or fails).
fn wait_fired_after(
    s: &Server,
    schedule: &str,
    after_s: i64,
    limit: Duration,
) -> Vec<(i64, String)> {
    let start = Instant::now();
    loop {
        let jobs = fired(s, schedule);
        if jobs.iter().any(|(due, _)| *due > after_s) {
            return jobs;
        }
        assert!(
            start.elapsed() < limit,
            "{schedule} fired nothing after {after_s} in {limit:?}: {jobs:?}\n{:#}",
            show(s, schedule)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[test]
fn azure_ml_schedule_files_are_taken_as_written() {
    let s = Server::start();
    for file in [
        "cron-job-schedule.yml",
        "recurrence-job-schedule.yml",
        "cron-job-schedule-with-settings.yml",
    ] {
        s.create_from("schedule", &corpus(file), &[]);
    }
    // The job file was read by the CLI and stored inline, its step's environment included.
    let cron = show(&s, "simple_cron_job_schedule");
    assert_eq!(cron["spec"]["create_job"]["type"], "pipeline", "{cron:#}");
    assert_eq!(
        cron["spec"]["create_job"]["jobs"]["hello_job"]["environment"]["image"],
        "library/python:latest"
    );
    assert_eq!(
        cron["spec"]["trigger"]["time_zone"],
        "Pacific Standard Time"
    );
    // Hourly on the hour: the next five are an hour apart, in the future.
    let next: Vec<i64> = cron["schedule"]["next_run_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| seconds(t.as_str().unwrap()))
        .collect();
    assert_eq!(next.len(), 5, "{cron:#}");
    assert!(next[0] > now_s() - 2 && next[0] % 3600 == 0, "{next:?}");
    assert!(next.windows(2).all(|w| w[1] - w[0] == 3600), "{next:?}");
    // Daily at 4:00, 4:30, 5:00, … 12:30 in Los Angeles (UTC-8, or UTC-7 in summer).
    let rec = show(&s, "simple_recurrence_job_schedule");
    for t in rec["schedule"]["next_run_times"].as_array().unwrap() {
        let t = seconds(t.as_str().unwrap());
        let (hour, minute) = ((t / 3600) % 24, (t / 60) % 60);
        assert!(minute == 0 || minute == 30, "{t}");
        assert!(
            [4, 5, 10, 11, 12]
                .iter()
                .any(|h| (h + 8) % 24 == hour || (h + 7) % 24 == hour),
            "{hour}:{minute} UTC is not one of the pattern's hours in Los Angeles"
        );
    }
    let with_settings = show(&s, "cron_with_settings_job_schedule");
    let create = &with_settings["spec"]["create_job"];
    assert_eq!(create["job"]["type"], "pipeline", "{create:#}");
    assert_eq!(create["settings"]["continue_on_step_failure"], true);
    // Listed with what comes next.
    let list = s.cli(&["schedule", "list", "-o", "json"]).success().json();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let table = s.cli(&["schedule", "list"]).success().stdout;
    assert!(table.contains("simple_recurrence_job_schedule"), "{table}");

    // What cannot fire is refused, naming the field, and nothing is stored.
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (
            "name: nope\ntrigger:\n  type: cron\n  expression: \"0 0 31 2 *\"\ncreate_job: azureml:nothing\n",
            "never fires",
        ),
        (
            "name: nope\ntrigger:\n  type: cron\n  expression: \"0 * * * *\"\ncreate_job: azureml:no-such-job\n",
            "no job \"no-such-job\"",
        ),
        (
            &format!(
                "name: nope\ntrigger:\n  type: recurrence\n  frequency: hour\n  interval: 1\ncreate_job:\n  command: echo\n  compute: azureml:nowhere\n  {}",
                HOST_ENV.replace('\n', "\n  ")
            ),
            "compute \"nowhere\" does not exist",
        ),
        (
            "name: nope\ntrigger:\n  type: cron\n  expression: \"0 * * * *\"\nimport_data:\n  type: mltable\n",
            "data import schedules are not run",
        ),
    ] {
        let f = write(dir.path(), "bad.yml", text);
        let out = s
            .cli(&["schedule", "create", "-f", f.to_str().unwrap()])
            .failure();
        assert!(out.stderr.contains(says), "{text}\n{}", out.stderr);
    }
    let list = s.cli(&["schedule", "list", "-o", "json"]).success().json();
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "a refused schedule was stored"
    );
}

#[test]
fn a_schedule_fires_at_once_and_every_minute_with_jobs_named_after_it() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/hello.py",
        "import os\nprint('greeting:', os.environ['GREETING'])\n",
    );
    write(
        dir.path(),
        "job.yml",
        &format!("command: python3 hello.py\ncode: ./src\ncompute: azureml:local\n{HOST_ENV}"),
    );
    let schedule = write(
        dir.path(),
        "every-minute.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/schedule.schema.json
name: every-minute
trigger:
  type: recurrence
  frequency: minute
  interval: 1
create_job:
  type: command
  job: ./job.yml
  environment_variables:
    GREETING: ${{name}}
  tags:
    team: forecasting
",
    );
    let created_s = now_s();
    s.create_from("schedule", &schedule, &[]);
    // A recurrence without start_time fires when it is made.
    let first = wait_fired_after(&s, "every-minute", created_s - 2, Duration::from_secs(30));
    let (due, job) = first[0].clone();
    assert!(
        (due - created_s).abs() <= 2,
        "due {due}, created {created_s}"
    );
    assert!(job.starts_with("every-minute-"), "{job}");
    let ended = wait_end(&s, &job);
    assert_eq!(ended["status"], "Completed", "{ended:#}\n{}", log(&s, &job));
    assert_eq!(ended["tags"]["team"], "forecasting");
    // `${{name}}` is the fired job's own name; the code folder came with the job file.
    assert!(
        log(&s, &job).contains(&format!("greeting: {job}")),
        "{}",
        log(&s, &job)
    );
    // What comes next: every 60 s from the first fire, and the job it fired.
    let shown = show(&s, "every-minute");
    let next: Vec<i64> = shown["schedule"]["next_run_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| seconds(t.as_str().unwrap()))
        .collect();
    assert_eq!(next, (1..=5).map(|k| due + 60 * k).collect::<Vec<_>>());
    assert_eq!(shown["schedule"]["last_jobs"][0]["name"], job.as_str());
    assert_eq!(shown["schedule"]["fired"], 1);

    // A minute later, the second.
    let both = wait_fired_after(&s, "every-minute", due, Duration::from_secs(75));
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[1].0, due + 60);
    assert_eq!(wait_end(&s, &both[1].1)["status"], "Completed");

    // Off: nothing comes next; on again: it goes on from now, not from while it was off.
    let off = s
        .cli(&["schedule", "disable", "-n", "every-minute", "-o", "json"])
        .success()
        .json();
    assert_eq!(off["schedule"]["is_enabled"], false, "{off:#}");
    assert_eq!(off["schedule"]["next_run_times"], Value::Array(vec![]));
    let on = s
        .cli(&["schedule", "enable", "-n", "every-minute", "-o", "json"])
        .success()
        .json();
    let next = seconds(on["schedule"]["next_run_times"][0].as_str().unwrap());
    assert!(next > now_s() - 2 && (next - due) % 60 == 0, "{on:#}");

    // Deleted: gone from the list, its jobs kept.
    s.cli(&["schedule", "delete", "-n", "every-minute", "--yes"])
        .success();
    let list = s.cli(&["schedule", "list", "-o", "json"]).success().json();
    assert_eq!(list, Value::Array(vec![]));
    assert_eq!(
        s.cli(&["job", "show", "-n", &job, "-o", "json"])
            .success()
            .json()["status"],
        "Completed"
    );
}

/// Dues of a schedule firing every two seconds follow each other with no gap, or with one.
fn gaps(dues: &[i64]) -> Vec<(i64, i64)> {
    dues.windows(2)
        .filter(|w| w[1] - w[0] != 2)
        .map(|w| (w[0], w[1]))
        .collect()
}

#[test]
fn a_server_down_across_due_times_makes_up_missed_fires_as_each_schedule_says() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let schedule = |name: &str, missed: &str| {
        write(
            dir.path(),
            &format!("{name}.yml"),
            &format!(
                "name: {name}\nmissed_fires: {missed}\ntrigger:\n  type: cron\n  expression: \"*/2 * * * * *\"\ncreate_job:\n  command: echo {name}\n  compute: azureml:local\n  {}",
                HOST_ENV.replace('\n', "\n  ")
            ),
        )
    };
    s.create_from("schedule", &schedule("latest", "latest"), &[]);
    s.create_from("schedule", &schedule("all", "all"), &[]);
    // One made by a Data Scientist who is then disabled: it fires no more.
    let dana = s.user_with_role("dana", "AzureML Data Scientist", "default");
    let f = schedule("danas", "latest");
    s.cli_as(&dana, &["schedule", "create", "-f", f.to_str().unwrap()])
        .success();
    let started = now_s();
    for name in ["latest", "all", "danas"] {
        wait_fired_after(&s, name, started, Duration::from_secs(20));
    }
    s.cli(&["user", "disable", "-n", "dana"]).success();
    let url = s.url.clone();
    let home = s.stop();
    let stopped = now_s();
    // Down long enough to miss several due times.
    std::thread::sleep(Duration::from_secs(9));
    let restarted = now_s();
    let s = Server::restart_on(home, &url);
    for name in ["latest", "all"] {
        wait_fired_after(&s, name, restarted + 4, Duration::from_secs(30));
    }
    // Exactly once per due time: one job each, named after it.
    for name in ["latest", "all"] {
        let jobs = fired(&s, name);
        let dues: BTreeSet<i64> = jobs.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            dues.len(),
            jobs.len(),
            "{name}: a due time fired twice: {jobs:?}"
        );
    }
    // `all` made up every due time it missed: no gap at all.
    let all: Vec<i64> = fired(&s, "all").into_iter().map(|(d, _)| d).collect();
    assert_eq!(gaps(&all), vec![], "all: {all:?}");
    // `latest` made up only the latest: one gap, across the outage, then every 2 s again.
    let latest: Vec<i64> = fired(&s, "latest").into_iter().map(|(d, _)| d).collect();
    let holes = gaps(&latest);
    assert_eq!(holes.len(), 1, "latest: {latest:?}");
    let (before, after) = holes[0];
    assert!(
        before <= stopped && after >= restarted - 2 && after - before >= 8,
        "latest: the gap {before}..{after} is not the outage {stopped}..{restarted}"
    );
    // Dana's schedule fires nothing while she is disabled, and says why.
    let danas = fired(&s, "danas");
    assert!(
        danas.iter().all(|(d, _)| *d <= stopped),
        "fired for a disabled owner: {danas:?}"
    );
    let shown = show(&s, "danas");
    let error = shown["schedule"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("\"dana\" is disabled"), "{shown:#}");
}
