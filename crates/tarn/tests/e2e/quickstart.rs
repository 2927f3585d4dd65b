//! `tarn quickstart` as a newcomer runs it: no server running, a fresh home. It starts its own
//! server and goes through the whole loop for real (uv-built scikit-learn environment, a job on
//! a cluster, MLflow tracking, registry, online and batch endpoints); then again on the same
//! home, which updates what the first run made.

use crate::harness::{BIN, repo_uv};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn quickstart(home: &Path) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["quickstart", "--stop"])
        .env("TARN_HOME", home)
        .env_remove("TARN_SERVER")
        .env_remove("TARN_TOKEN")
        .env_remove("TARN_WORKSPACE");
    if let Some(uv) = repo_uv() {
        cmd.env("TARN_UV", uv);
    }
    let out = cmd.output().expect("running tarn quickstart");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Processes whose command line mentions `home` (the server, runners, replicas).
fn processes_of(home: &Path) -> Vec<String> {
    let needle = home.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(&needle) {
                found.push(format!("{name}: {line}"));
            }
        }
    }
    found
}

#[test]
fn quickstart_runs_the_whole_loop_on_a_fresh_home_and_again() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    for round in 1..=2 {
        let (ok, stdout, stderr) = quickstart(&home);
        assert!(ok, "round {round}:\n{stdout}\n{stderr}");
        for step in [
            "[1/6] workspace \"quickstart\"",
            "[2/6] training a scikit-learn classifier",
            "[4/6] online endpoint quickstart-iris",
            "three flowers are: [\"setosa\",\"versicolor\",\"virginica\"]",
            "150 flowers classified into output `score`",
        ] {
            assert!(
                stderr.contains(step),
                "round {round}: {step:?} missing:\n{stderr}"
            );
        }
        let accuracy: f64 = stderr
            .split("accuracy ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no accuracy in:\n{stderr}"));
        assert!(accuracy > 0.8, "the model learned something: {accuracy}");
        // 100 requests at 90/10: both deployments answer.
        let split = stderr
            .lines()
            .find(|l| l.contains("100 requests: blue answered"))
            .unwrap_or_default();
        assert!(!split.contains("green 0 "), "{split}");
        assert!(stdout.contains("Tarn quickstart finished"), "{stdout}");
        assert!(
            stdout.contains("/endpoints/quickstart-iris/score"),
            "{stdout}"
        );
        assert!(
            home.join("quickstart/train-job.yml").is_file(),
            "the files it submitted are kept for the user"
        );
        // --stop: the server it started, and its replicas, are gone.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = processes_of(&home);
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "still running: {left:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The second round made a second model version and rolled both deployments to it.
    assert!(
        std::fs::read_to_string(home.join("quickstart/blue.yml"))
            .unwrap()
            .contains("azureml:iris-classifier:2")
    );
}
