//! Pipeline jobs written for `az ml`: steps are child jobs started when the steps they bind to
//! have completed; data flows through `${{parent.jobs.<step>.outputs.<port>}}`; independent
//! steps run at once; failures skip dependents (and stop the rest when
//! `continue_on_step_failure` is false); deterministic steps are reused unless `force_rerun`.

use crate::harness::Server;
use crate::jobs::{submit, wait_for, write};
use serde_json::Value;
use std::time::Duration;

const ENV: &str = "    environment:\n      image: python\n";

fn wait_done(s: &Server, name: &str) -> Value {
    wait_for(s, name, Duration::from_secs(120), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    })
}

fn step_job(s: &Server, pipeline: &Value, step: &str) -> Value {
    let job = pipeline["steps"][step]["job"]
        .as_str()
        .unwrap_or_else(|| panic!("{step}: {pipeline:#}"));
    s.cli(&["job", "show", "-n", job, "-o", "json"])
        .success()
        .json()
}

fn log(s: &Server, job: &str) -> String {
    s.cli(&["job", "stream", "-n", job]).stdout
}

fn chain(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "comp/count.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json\n\
         name: doubler\nversion: \"1\"\ntype: command\n\
         inputs:\n  d:\n    type: uri_folder\n  factor:\n    type: integer\n    default: 2\n\
         outputs:\n  model:\n    type: uri_folder\n\
         command: echo $(( $(cat ${{inputs.d}}/n.txt) * ${{inputs.factor}} )) > ${{outputs.model}}/m.txt\n\
         environment:\n  image: python\n",
    );
    write(
        dir,
        "pipeline.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json\n\
             type: pipeline\nexperiment_name: chain\n\
             settings:\n  default_compute: local\n\
             inputs:\n  start: 3\n\
             outputs:\n  final:\n    type: uri_folder\n\
             jobs:\n\
             \x20 prep:\n    command: echo ${{{{inputs.n}}}} > ${{{{outputs.data}}}}/n.txt\n{ENV}\
             \x20   inputs:\n      n: ${{{{parent.inputs.start}}}}\n    outputs:\n      data:\n\
             \x20 train:\n    component: ./comp/count.yml\n    inputs:\n      d: ${{{{parent.jobs.prep.outputs.data}}}}\n\
             \x20 report:\n    command: cat ${{{{inputs.m}}}}/m.txt && cp ${{{{inputs.m}}}}/m.txt ${{{{outputs.out}}}}/\n{ENV}\
             \x20   inputs:\n      m: ${{{{parent.jobs.train.outputs.model}}}}\n    outputs:\n      out: ${{{{parent.outputs.final}}}}\n"
        ),
    )
}

#[test]
fn a_three_step_chain_passes_data_and_a_rerun_reuses_its_steps() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = chain(dir.path());
    let first = submit(&s, &file, &[]);
    let done = wait_done(&s, &first);
    assert_eq!(done["status"], "Completed", "{done:#}");
    let report = step_job(&s, &done, "report");
    assert_eq!(
        log(&s, report["name"].as_str().unwrap())
            .lines()
            .find(|l| !l.starts_with("[tarn]")),
        Some("6"),
        "3 × the component's default factor 2"
    );
    assert!(
        done["outputs"]["final"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/"),
        "{done:#}"
    );
    let children = s
        .cli(&["job", "list", "--parent-job-name", &first, "-o", "json"])
        .success()
        .json();
    assert_eq!(children.as_array().unwrap().len(), 3);

    // The same pipeline again: every step is reused from the first run.
    let second = submit(&s, &file, &[]);
    let again = wait_done(&s, &second);
    assert_eq!(again["status"], "Completed", "{again:#}");
    for step in ["prep", "train", "report"] {
        assert_eq!(again["steps"][step]["state"], "Reused", "{step}: {again:#}");
        assert_eq!(
            again["steps"][step]["reused_from"],
            done["steps"][step]["job"]
        );
    }
    // force_rerun runs them anyway; default_datastore places the steps' outputs.
    let third = submit(
        &s,
        &file,
        &[
            "--set",
            "settings.force_rerun=true",
            "--set",
            "settings.default_datastore=azureml:workspaceartifactstore",
        ],
    );
    let forced = wait_done(&s, &third);
    assert_eq!(forced["status"], "Completed");
    assert!(forced["steps"]["prep"]["state"].is_null(), "{forced:#}");
    assert_ne!(forced["steps"]["prep"]["job"], done["steps"]["prep"]["job"]);
    let prep = step_job(&s, &forced, "prep");
    assert!(
        prep["outputs"]["data"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/workspaceartifactstore/paths/azureml/"),
        "{prep:#}"
    );
}

#[test]
fn a_diamond_runs_its_branches_at_once() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "diamond.yml",
        &format!(
            "type: pipeline\nsettings:\n  default_compute: local\njobs:\n\
             \x20 a:\n    command: echo a > ${{{{outputs.o}}}}/a.txt\n{ENV}    outputs:\n      o:\n\
             \x20 b:\n    command: sleep 1.5 && cat ${{{{inputs.i}}}}/a.txt\n{ENV}    inputs:\n      i: ${{{{parent.jobs.a.outputs.o}}}}\n    outputs:\n      o:\n\
             \x20 c:\n    command: sleep 1.5 && cat ${{{{inputs.i}}}}/a.txt\n{ENV}    inputs:\n      i: ${{{{parent.jobs.a.outputs.o}}}}\n    outputs:\n      o:\n\
             \x20 d:\n    command: echo joined\n{ENV}    inputs:\n      x: ${{{{parent.jobs.b.outputs.o}}}}\n      y: ${{{{parent.jobs.c.outputs.o}}}}\n"
        ),
    );
    let name = submit(&s, &file, &[]);
    let done = wait_done(&s, &name);
    assert_eq!(done["status"], "Completed", "{done:#}");
    let t = |step: &str, status: &str| {
        let job = step_job(&s, &done, step);
        humantime::parse_rfc3339(job["status_times"][status].as_str().unwrap()).unwrap()
    };
    assert!(
        t("b", "Running") < t("c", "Completed") && t("c", "Running") < t("b", "Completed"),
        "b and c overlapped"
    );
    assert!(
        t("d", "Preparing") >= t("b", "Completed") && t("d", "Preparing") >= t("c", "Completed")
    );
    assert!(t("b", "Preparing") >= t("a", "Completed"));
}

#[test]
fn a_failed_step_skips_its_dependents_and_stops_the_rest_only_when_asked() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "fails.yml",
        &format!(
            "type: pipeline\nsettings:\n  default_compute: local\njobs:\n\
             \x20 broken:\n    command: echo no && exit 4\n{ENV}    outputs:\n      o:\n\
             \x20 after:\n    command: echo never\n{ENV}    inputs:\n      i: ${{{{parent.jobs.broken.outputs.o}}}}\n\
             \x20 other:\n    command: sleep 2 && echo other\n{ENV}"
        ),
    );
    // Default (as in Azure ML): continue_on_step_failure is true.
    let name = submit(&s, &file, &[]);
    let done = wait_done(&s, &name);
    assert_eq!(done["status"], "Failed", "{done:#}");
    assert_eq!(step_job(&s, &done, "broken")["status"], "Failed");
    assert_eq!(done["steps"]["after"]["state"], "Skipped");
    assert_eq!(
        step_job(&s, &done, "other")["status"],
        "Completed",
        "independent steps go on"
    );

    let name = submit(
        &s,
        &file,
        &[
            "--set",
            "settings.continue_on_step_failure=false",
            "--set",
            "settings.force_rerun=true",
        ],
    );
    let done = wait_done(&s, &name);
    assert_eq!(done["status"], "Failed", "{done:#}");
    assert_eq!(done["steps"]["after"]["state"], "Skipped");
    let other = step_job(&s, &done, "other");
    assert_eq!(
        other["status"], "Canceled",
        "the running step is stopped: {other:#}"
    );
    assert!(
        other["error"]
            .as_str()
            .unwrap()
            .contains("continue_on_step_failure"),
        "{other:#}"
    );
}

#[test]
fn a_step_can_run_a_registered_component() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let comp = write(
        dir.path(),
        "greet.yml",
        "name: greeter\nversion: \"1\"\ntype: command\ninputs:\n  who:\n    type: string\n    default: world\n\
         command: echo hello ${{inputs.who}}\nenvironment:\n  image: python\n",
    );
    s.cli(&["component", "create", "-f", comp.to_str().unwrap()])
        .success();
    // A component whose code snapshot takes in a shared file (additional_includes).
    write(dir.path(), "shared/words.txt", "shared words\n");
    write(dir.path(), "reader/src/run.sh", "cat words.txt\n");
    let reader = write(
        dir.path(),
        "reader/reader.yml",
        "name: reader\nversion: \"1\"\ntype: command\ncode: ./src\nadditional_includes:\n  - ../shared/words.txt\n\
         command: sh run.sh\nenvironment:\n  image: python\n",
    );
    s.cli(&["component", "create", "-f", reader.to_str().unwrap()])
        .success();
    let file = write(
        dir.path(),
        "p.yml",
        "type: pipeline\nsettings:\n  default_compute: local\njobs:\n  hi:\n    component: azureml:greeter:1\n  named:\n    component: azureml:greeter@latest\n    inputs:\n      who: tarn\n  read:\n    component: azureml:reader:1\n",
    );
    let name = submit(&s, &file, &[]);
    let done = wait_done(&s, &name);
    assert_eq!(done["status"], "Completed", "{done:#}");
    assert!(log(&s, step_job(&s, &done, "hi")["name"].as_str().unwrap()).contains("hello world"));
    assert!(log(&s, step_job(&s, &done, "named")["name"].as_str().unwrap()).contains("hello tarn"));
    assert!(
        log(&s, step_job(&s, &done, "read")["name"].as_str().unwrap()).contains("shared words"),
        "additional_includes are in the code snapshot"
    );

    // Input values are checked against the component at submission, the step named.
    let scaler = write(
        dir.path(),
        "scaler.yml",
        "name: scaler\nversion: \"1\"\ntype: command\ninputs:\n  k:\n    type: integer\n    min: 1\n    max: 5\n  mode:\n    type: string\n    enum: [fast, slow]\n    default: fast\n\
         command: echo ${{inputs.k}} ${{inputs.mode}}\nenvironment:\n  image: python\n",
    );
    s.cli(&["component", "create", "-f", scaler.to_str().unwrap()])
        .success();
    let cases = [
        ("k: 9", "above the maximum 5"),
        ("k: x", "not an integer"),
        ("k: 2\n      mode: medium", "not one of"),
        ("mode: slow", "needs input \"k\""),
    ];
    for (inputs, expected) in cases {
        let bad = write(
            dir.path(),
            "bad.yml",
            &format!(
                "type: pipeline\nsettings:\n  default_compute: local\njobs:\n  s:\n    component: azureml:scaler:1\n    inputs:\n      {inputs}\n"
            ),
        );
        let run = s
            .cli(&["job", "create", "-f", bad.to_str().unwrap()])
            .failure();
        assert!(
            run.stderr.contains("jobs.s.inputs") && run.stderr.contains(expected),
            "{inputs}: {}",
            run.stderr
        );
    }
    let missing = write(
        dir.path(),
        "missing.yml",
        "type: pipeline\njobs:\n  s:\n    component: azureml:nothing:1\n",
    );
    let run = s
        .cli(&["job", "create", "-f", missing.to_str().unwrap()])
        .failure();
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    let ok = write(
        dir.path(),
        "ok.yml",
        "type: pipeline\nsettings:\n  default_compute: local\njobs:\n  s:\n    component: azureml:scaler:1\n    inputs:\n      k: \"3\"\n",
    );
    let name = submit(&s, &ok, &[]);
    let done = wait_done(&s, &name);
    assert!(
        log(&s, step_job(&s, &done, "s")["name"].as_str().unwrap()).contains("3 fast"),
        "coerced and defaulted"
    );
}

#[test]
fn a_sweep_step_feeds_its_best_trials_output_downstream() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/trial.py",
        "import sys, os, mlflow\nx = int(sys.argv[1])\nmlflow.log_metric('score', x)\n\
         open(os.path.join(sys.argv[2], 'best.txt'), 'w').write(str(x))\n",
    );
    let file = write(
        dir.path(),
        "p.yml",
        "type: pipeline\nsettings:\n  default_compute: local\njobs:\n\
         \x20 tune:\n    type: sweep\n\
         \x20   trial:\n      command: python trial.py ${{search_space.x}} ${{outputs.model}}\n      code: ./src\n\
         \x20     environment:\n        image: python\n        conda_file:\n          dependencies:\n            - python=3.11\n            - pip:\n              - mlflow-skinny==3.17.2\n\
         \x20   search_space:\n      x:\n        type: choice\n        values: [1, 5, 3]\n\
         \x20   sampling_algorithm: grid\n    objective:\n      primary_metric: score\n      goal: maximize\n\
         \x20   outputs:\n      model:\n\
         \x20 use:\n    command: cat ${{inputs.m}}/best.txt\n    environment:\n      image: python\n\
         \x20   inputs:\n      m: ${{parent.jobs.tune.outputs.model}}\n",
    );
    let name = submit(&s, &file, &[]);
    let done = wait_for(&s, &name, Duration::from_secs(240), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    });
    assert_eq!(done["status"], "Completed", "{done:#}");
    let tune = step_job(&s, &done, "tune");
    assert_eq!(tune["type"], "sweep");
    assert_eq!(tune["best_trial"]["parameters"]["x"], 5, "{tune:#}");
    let used = step_job(&s, &done, "use");
    let text = log(&s, used["name"].as_str().unwrap());
    assert!(
        text.lines().any(|l| l == "5"),
        "the best trial's output flows on: {text}"
    );
}

#[test]
fn canceling_a_pipeline_cancels_its_running_steps() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "long.yml",
        &format!(
            "type: pipeline\nsettings:\n  default_compute: local\njobs:\n\
             \x20 long:\n    command: echo started && sleep 600\n{ENV}    outputs:\n      o:\n\
             \x20 later:\n    command: echo never\n{ENV}    inputs:\n      i: ${{{{parent.jobs.long.outputs.o}}}}\n"
        ),
    );
    let name = submit(&s, &file, &[]);
    let running = wait_for(&s, &name, Duration::from_secs(60), |j| {
        j["steps"]["long"]["job"].is_string()
    });
    let step = running["steps"]["long"]["job"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&s, &step, Duration::from_secs(60), |j| {
        j["status"] == "Running"
    });
    s.cli(&["job", "cancel", "-n", &name]).success();
    let done = wait_done(&s, &name);
    assert_eq!(done["status"], "Canceled", "{done:#}");
    assert_eq!(step_job(&s, &done, "long")["status"], "Canceled");
    assert_eq!(done["steps"]["later"]["state"], "Skipped");
}
