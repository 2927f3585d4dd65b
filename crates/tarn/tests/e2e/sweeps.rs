//! Sweep jobs written for `az ml`: trials are child command jobs (nested MLflow runs) whose
//! primary metric comes from `mlflow.log_metric`; grid covers exactly its grid; a bandit policy
//! stops a bad trial; the sweep reports its best trial.

use crate::harness::Server;
use crate::jobs::{submit, wait_for, write};
use serde_json::{Value, json};
use std::time::Duration;

const MLFLOW_ENV: &str = "  environment:\n    image: python\n    conda_file:\n      dependencies:\n        - python=3.11\n        - pip:\n          - mlflow-skinny==3.17.2\n";

fn children(s: &Server, sweep: &str) -> Vec<Value> {
    s.cli(&["job", "list", "--parent-job-name", sweep, "-o", "json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_grid_sweep_runs_exactly_its_grid_and_reports_the_best_trial() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/trial.py",
        "import argparse, os, mlflow\n\
         p = argparse.ArgumentParser(); p.add_argument('--lr', type=float); p.add_argument('--depth', type=int)\n\
         a = p.parse_args()\n\
         assert float(os.environ['AZUREML_SWEEP_lr']) == a.lr\n\
         mlflow.log_metric('score', a.lr * a.depth)\n\
         print('trial', a.lr, a.depth)\n",
    );
    let file = write(
        dir.path(),
        "sweep.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json\n\
             type: sweep\nexperiment_name: grid-sweep\ncompute: local\n\
             trial:\n  command: python trial.py --lr ${{{{search_space.lr}}}} --depth ${{{{search_space.depth}}}}\n  code: ./src\n{MLFLOW_ENV}\
             sampling_algorithm: grid\n\
             search_space:\n  lr:\n    type: choice\n    values: [0.1, 0.2, 0.3]\n  depth:\n    type: choice\n    values: [1, 2]\n\
             objective:\n  primary_metric: score\n  goal: maximize\n\
             limits:\n  max_total_trials: 20\n  max_concurrent_trials: 3\n"
        ),
    );
    let sweep = submit(&s, &file, &[]);
    let done = wait_for(&s, &sweep, Duration::from_secs(240), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    let kids = children(&s, &sweep);
    assert_eq!(done["status"], "Completed", "{done:#}\n{kids:#?}");
    assert_eq!(
        done["trials"], 6,
        "a grid of 3 × 2 is 6 trials, not max_total_trials"
    );
    assert_eq!(kids.len(), 6);
    let mut combos: Vec<String> = kids
        .iter()
        .map(|k| {
            format!(
                "{}x{}",
                k["inputs"]["lr"].as_str().unwrap(),
                k["inputs"]["depth"].as_str().unwrap()
            )
        })
        .collect();
    combos.sort();
    assert_eq!(
        combos,
        ["0.1x1", "0.1x2", "0.2x1", "0.2x2", "0.3x1", "0.3x2"]
    );
    assert!(
        kids.iter()
            .all(|k| k["status"] == "Completed" && k["parent"] == sweep.as_str())
    );
    let best = &done["best_trial"];
    assert_eq!(best["parameters"], json!({"lr": 0.3, "depth": 2}), "{best}");
    assert!(
        (best["value"].as_f64().unwrap() - 0.6).abs() < 1e-9,
        "{best}"
    );
    assert_eq!(best["metric"], "score");
    // Trials are nested MLflow runs of the sweep's run.
    let http = s.http();
    let (_, run) = http.get(&format!(
        "/ws/default/mlflow/api/2.0/mlflow/runs/get?run_id={}",
        best["trial"].as_str().unwrap()
    ));
    let tags = run["run"]["data"]["tags"].as_array().unwrap();
    assert!(
        tags.iter()
            .any(|t| t["key"] == "mlflow.parentRunId" && t["value"] == sweep.as_str()),
        "{run}"
    );
}

/// The good trial starts reporting late on purpose: the bad one has passed the first intervals
/// alone by then, and must still be stopped once the best at those intervals is known.
#[test]
fn a_bandit_policy_stops_a_bad_trial() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/trial.py",
        "import sys, time, mlflow\n\
         quality = float(sys.argv[1])\n\
         time.sleep(1.5 if quality > 0.5 else 0)\n\
         for step in range(60):\n\
         \x20   mlflow.log_metric('accuracy', quality, step=step)\n\
         \x20   time.sleep(0.1)\n\
         print('finished', quality)\n",
    );
    let file = write(
        dir.path(),
        "sweep.yml",
        &format!(
            "type: sweep\ncompute: local\n\
             trial:\n  command: python trial.py ${{{{search_space.quality}}}}\n  code: ./src\n{MLFLOW_ENV}\
             sampling_algorithm:\n  type: grid\n\
             search_space:\n  quality:\n    type: choice\n    values: [0.9, 0.2]\n\
             objective:\n  primary_metric: accuracy\n  goal: maximize\n\
             early_termination:\n  type: bandit\n  slack_factor: 0.2\n  evaluation_interval: 1\n  delay_evaluation: 3\n\
             limits:\n  max_total_trials: 2\n  max_concurrent_trials: 2\n"
        ),
    );
    let sweep = submit(&s, &file, &[]);
    let done = wait_for(&s, &sweep, Duration::from_secs(240), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    let kids = children(&s, &sweep);
    assert_eq!(done["status"], "Completed", "{done:#}\n{kids:#?}");
    let by_quality = |q: &str| {
        kids.iter()
            .find(|k| k["inputs"]["quality"] == q)
            .unwrap()
            .clone()
    };
    let bad = by_quality("0.2");
    let good = by_quality("0.9");
    assert_eq!(bad["status"], "Canceled", "{bad:#}");
    assert!(
        bad["error"].as_str().unwrap().contains("bandit"),
        "the policy is named: {bad:#}"
    );
    assert!(
        bad["duration_s"].as_f64().unwrap() < good["duration_s"].as_f64().unwrap(),
        "stopped early"
    );
    assert_eq!(good["status"], "Completed");
    assert_eq!(done["best_trial"]["parameters"]["quality"], 0.9);
}

#[test]
fn a_sweep_trial_can_be_a_component_file() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "comp/src/train.py",
        "import sys, mlflow\nx, y = float(sys.argv[1]), float(sys.argv[2])\nmlflow.log_metric('loss', (x - 2) ** 2 + y)\n",
    );
    write(
        dir.path(),
        "comp/train.yml",
        &format!(
            "name: trainer\ntype: command\ninputs:\n  x:\n    type: number\n  y:\n    type: number\n    default: 0.5\n\
             code: ./src\ncommand: python train.py ${{{{inputs.x}}}} ${{{{inputs.y}}}}\n{}",
            MLFLOW_ENV.replace("\n  ", "\n").trim_start_matches("  ")
        ),
    );
    let file = write(
        dir.path(),
        "sweep.yml",
        "type: sweep\ncompute: local\ntrial: ./comp/train.yml\n\
         sampling_algorithm:\n  type: random\n  rule: sobol\n  seed: 3\n\
         search_space:\n  x:\n    type: uniform\n    min_value: 0\n    max_value: 4\n\
         objective:\n  primary_metric: loss\n  goal: minimize\n\
         limits:\n  max_total_trials: 4\n  max_concurrent_trials: 2\n",
    );
    let sweep = submit(&s, &file, &[]);
    let done = wait_for(&s, &sweep, Duration::from_secs(240), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    assert_eq!(
        done["status"],
        "Completed",
        "{done:#}\n{:#?}",
        children(&s, &sweep)
    );
    assert_eq!(done["trials"], 4);
    let best = &done["best_trial"];
    let x = best["parameters"]["x"].as_f64().unwrap();
    assert!(
        (best["value"].as_f64().unwrap() - ((x - 2.0).powi(2) + 0.5)).abs() < 1e-9,
        "the component's default y = 0.5 was used: {best}"
    );
    // Sobol points spread over the range: 4 trials land in 4 different quarters of [0, 4).
    let mut quarters: Vec<i64> = children(&s, &sweep)
        .iter()
        .map(|k| (k["inputs"]["x"].as_str().unwrap().parse::<f64>().unwrap()) as i64)
        .collect();
    quarters.sort();
    quarters.dedup();
    assert_eq!(quarters.len(), 4, "{quarters:?}");
}
