//! Job environments built with uv from PyPI: a scikit-learn job whose environment ten
//! simultaneous jobs ask for is built once and then reused from the cache; a failing build fails
//! the job with the build's error.

use crate::harness::{Server, repo_uv};
use crate::jobs::{submit, wait_end, write};
use serde_json::Value;

fn log(s: &Server, name: &str) -> String {
    s.cli(&["job", "stream", "-n", name]).stdout
}

#[test]
fn a_scikit_learn_environment_is_built_once_for_concurrent_jobs_then_cached() {
    assert!(
        repo_uv().is_some(),
        "scripts/test installs uv into .venv; run it first"
    );
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/train.py",
        "from sklearn.datasets import load_iris\n\
         from sklearn.linear_model import LogisticRegression\n\
         from sklearn.model_selection import train_test_split\n\
         import os, sys\n\
         X, y = load_iris(return_X_y=True)\n\
         Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=int(os.environ['SEED']))\n\
         acc = LogisticRegression(max_iter=500).fit(Xtr, ytr).score(Xte, yte)\n\
         print(f'accuracy {acc:.3f} python', sys.version_info[:2], 'venv', sys.prefix != sys.base_prefix)\n",
    );
    write(
        dir.path(),
        "env.yml",
        "name: sk\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - scikit-learn==1.5.2\n",
    );
    let file = write(
        dir.path(),
        "train.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n\
         command: python train.py\ncode: ./src\ncompute: local\n\
         environment:\n  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04\n  conda_file: ./env.yml\n\
         environment_variables:\n  SEED: \"1\"\n",
    );
    let names: Vec<String> = (0..10)
        .map(|i| {
            submit(
                &s,
                &file,
                &["-q", "--set", &format!("environment_variables.SEED={i}")],
            )
        })
        .collect();
    let mut built = 0;
    for name in &names {
        let job: Value = wait_end(&s, name);
        let text = log(&s, name);
        assert_eq!(job["status"], "Completed", "{job:#}\n{text}");
        let acc: f64 = text
            .split("accuracy ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no accuracy in {text}"));
        assert!(acc > 0.85, "{acc}");
        assert!(text.contains("venv True"), "{text}");
        if text.contains("building environment") {
            built += 1;
        } else {
            assert!(
                text.contains("built by another job") || text.contains(": cached"),
                "{text}"
            );
        }
    }
    assert_eq!(built, 1, "the environment was built exactly once");
    let again = submit(&s, &file, &["-q"]);
    wait_end(&s, &again);
    assert!(
        log(&s, &again).contains(": cached"),
        "a later job reuses the cached build"
    );
}

#[test]
fn a_failing_environment_build_fails_the_job_with_the_build_error() {
    assert!(
        repo_uv().is_some(),
        "scripts/test installs uv into .venv; run it first"
    );
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad-env.yml",
        "command: echo never\n\
         environment:\n  image: python\n  conda_file:\n    dependencies:\n      - pip:\n        - tarn-no-such-package-xyz==9.9.9\n",
    );
    let name = submit(&s, &file, &[]);
    let job = wait_end(&s, &name);
    assert_eq!(job["status"], "Failed", "{job:#}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("installing the packages"), "{error}");
    let tail = job["log_tail"].as_str().unwrap();
    assert!(
        tail.contains("tarn-no-such-package-xyz"),
        "the build's own error is in the log: {tail}"
    );
    assert!(!tail.contains("never"), "the command did not run");
}
