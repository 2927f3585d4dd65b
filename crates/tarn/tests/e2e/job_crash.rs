//! SIGKILL the server while jobs run: on restart every job ends in the right state. Runners
//! keep going and report back once the server is up; a job whose runner died meanwhile is
//! Failed with the reason; a queued job starts; nothing runs twice.

use crate::harness::Server;
use crate::jobs::{submit, wait_end, wait_for, write};
use std::time::Duration;

/// Sends SIGKILL to every process whose command line has `needle` as one argument.
fn kill_processes_with_arg(needle: &str) -> usize {
    let mut killed = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes()) {
            let pid = e.file_name().to_string_lossy().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            killed += 1;
        }
    }
    killed
}

#[test]
fn jobs_survive_a_server_sigkill_and_end_in_the_right_state() {
    let s = Server::start();
    let dir = crate::harness::shared_dir();
    let d = dir.path().display().to_string();
    let env = "environment:\n  image: python\n";
    write(
        dir.path(),
        "one.yml",
        "name: one\ntype: amlcompute\nmax_instances: 1\n",
    );
    s.cli(&["compute", "create", "-f", &format!("{d}/one.yml")])
        .success();
    let waits = write(
        dir.path(),
        "waits.yml",
        &format!(
            "command: echo started && while [ ! -f {d}/go ]; do sleep 0.05; done && echo finished\n\
             compute: azureml:one\n{env}"
        ),
    );
    let queued = write(
        dir.path(),
        "queued.yml",
        &format!("command: echo started-b && echo b-done\ncompute: azureml:one\n{env}"),
    );
    let marker = format!("{}.75", 6000 + std::process::id() % 1000);
    let doomed = write(
        dir.path(),
        "doomed.yml",
        &format!("command: echo started && sleep {marker}\ncompute: local\n{env}"),
    );
    let a = submit(&s, &waits, &[]);
    let b = submit(&s, &queued, &[]);
    let c = submit(&s, &doomed, &[]);
    for job in [&a, &c] {
        wait_for(&s, job, Duration::from_secs(30), |j| {
            j["status"] == "Running"
        });
    }
    assert_eq!(
        crate::jobs::wait_for(&s, &b, Duration::from_secs(5), |_| true)["status"],
        "Queued"
    );

    let url = s.url.clone();
    let home = s.kill();
    // While the server is down: job a's command finishes; job c's runner dies.
    let c_id_suffix = format!("/{c}");
    let runners: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter()
                .any(|a| a.ends_with(&c_id_suffix))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    assert_eq!(runners.len(), 1, "job c's runner is running");
    std::process::Command::new("kill")
        .args(["-KILL", &runners[0]])
        .status()
        .unwrap();
    kill_processes_with_arg(&marker);
    std::fs::write(dir.path().join("go"), "").unwrap();

    let s = Server::restart_on(home, &url);
    let a_job = wait_end(&s, &a);
    assert_eq!(a_job["status"], "Completed", "{a_job:#}");
    let b_job = wait_end(&s, &b);
    assert_eq!(
        b_job["status"], "Completed",
        "the queued job ran after the restart: {b_job:#}"
    );
    let c_job = wait_end(&s, &c);
    assert_eq!(c_job["status"], "Failed");
    assert!(
        c_job["error"].as_str().unwrap().contains("runner stopped"),
        "{c_job:#}"
    );

    // User code writes only its own folders: a run's starts are counted in its log.
    let starts = |job: &str, line: &str| {
        let log = s.cli(&["job", "stream", "-n", job]).success().stdout;
        log.lines().filter(|l| l.trim() == line).count()
    };
    assert_eq!(starts(&a, "started"), 1, "job a ran exactly once");
    assert_eq!(starts(&b, "started-b"), 1, "job b ran exactly once");
    let log = s.cli(&["job", "stream", "-n", &a]).success().stdout;
    assert!(
        log.contains("started") && log.contains("finished"),
        "the whole log arrived: {log}"
    );
}
