//! Azure ML files and scripts as example repositories write them (`tests/azml-corpus/`), run
//! unchanged: local paths at any depth, sweep steps whose trial is a component file, registered
//! pipeline components with local code, image + conda deployments, `--query … -o tsv` scripts;
//! and what users trip over next to them: single-file uploads, `pip install` in a job, public
//! blob inputs, Python pins, errors known at submission.

use crate::harness::Server;
use crate::jobs::{wait_for, write};
use crate::peers::{AZURITE_ACCOUNT, AZURITE_KEY, Peer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/azml-corpus/cli")
        .join(rel)
}

fn create(s: &Server, file: &Path) -> String {
    s.cli(&[
        "job",
        "create",
        "-f",
        file.to_str().unwrap(),
        "--query",
        "name",
        "-o",
        "tsv",
    ])
    .success()
    .stdout
    .trim()
    .to_string()
}

fn ended(s: &Server, name: &str) -> Value {
    wait_for(s, name, Duration::from_secs(300), |j| {
        matches!(
            j["status"].as_str(),
            Some("Completed" | "Failed" | "Canceled")
        )
    })
}

/// A job's whole log (`job stream` exits non-zero for a job that did not complete).
fn log_of(s: &Server, job: &str) -> String {
    s.cli(&["job", "stream", "-n", job]).stdout
}

/// Every `code` and `path` string left in a submitted document is a datastore URI (or a
/// binding): no local path reached the server.
fn no_local_paths(v: &Value, at: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let here = format!("{at}.{k}");
                if let (true, Some(s)) = (k == "code" || k == "path", x.as_str())
                    && !s.starts_with("azureml://")
                    && !s.contains("${{")
                {
                    found.push(format!("{here} = {s}"));
                }
                no_local_paths(x, &here, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| no_local_paths(x, at, found)),
        _ => {}
    }
}

#[test]
fn pipelines_with_local_paths_at_any_depth_run_as_written_for_az_ml() {
    let s = Server::start();
    // A registered pipeline component whose inner command component has `code: src`.
    let component = corpus("jobs/pipelines/nested/components/prep_then_train.yml");
    let registered = s
        .cli(&[
            "component",
            "create",
            "-f",
            component.to_str().unwrap(),
            "-o",
            "json",
        ])
        .success();
    let mut local = vec![];
    no_local_paths(&registered.json()["spec"], "component", &mut local);
    assert!(
        local.is_empty(),
        "local paths reached the server: {local:?}"
    );
    assert_eq!(
        registered.stderr.matches("warning:").count(),
        2,
        "each warning once (two components name an image): {}",
        registered.stderr
    );

    let jobs: Vec<(&str, String)> = ["local-data", "nested", "registered-component", "sweep-step"]
        .iter()
        .map(|d| {
            (
                *d,
                create(&s, &corpus(&format!("jobs/pipelines/{d}/pipeline.yml"))),
            )
        })
        .collect();
    for (dir, job) in &jobs {
        let done = ended(&s, job);
        assert_eq!(done["status"], "Completed", "{dir}: {done:#}");
        let mut local = vec![];
        no_local_paths(&done["spec"], "", &mut local);
        assert!(local.is_empty(), "{dir}: local paths left: {local:?}");
    }
    let job = |d: &str| jobs.iter().find(|(x, _)| *x == d).unwrap().1.clone();

    // Step-level local folder and file inputs reached the steps.
    let local_data = s
        .cli(&["job", "show", "-n", &job("local-data"), "-o", "json"])
        .success()
        .json();
    let train = local_data["steps"]["train"]["job"].as_str().unwrap();
    let log = log_of(&s, train);
    assert!(
        log.contains(r#""rows": 3"#) && log.contains("three rows of iris"),
        "{log}"
    );
    // The pipeline shows where it ran and where its artifacts are, and its named output is
    // a data asset.
    assert_eq!(local_data["compute"], "local", "{local_data:#}");
    assert!(
        local_data["artifacts"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/workspaceartifactstore/paths/ExperimentRun/"),
        "{local_data:#}"
    );
    let version = s
        .cli(&[
            "data",
            "show",
            "-n",
            "corpus-trained-model",
            "--label",
            "latest",
            "--query",
            "version",
            "-o",
            "tsv",
        ])
        .success()
        .stdout;
    assert_eq!(version.trim(), "1");

    // A pipeline component inside a pipeline: its inner steps ran, its output is bound.
    let nested = s
        .cli(&["job", "show", "-n", &job("nested"), "-o", "json"])
        .success()
        .json();
    assert!(
        nested["inputs"]["pipeline_data"]
            .as_str()
            .unwrap()
            .starts_with("azureml://datastores/workspaceblobstore/paths/LocalUpload/"),
        "a pipeline's inputs are shown: {nested:#}"
    );
    let inner = nested["steps"]["prep_and_train"]["job"].as_str().unwrap();
    let inner = s
        .cli(&["job", "show", "-n", inner, "-o", "json"])
        .success()
        .json();
    let summarise = inner["steps"]["summarise"]["job"].as_str().unwrap();
    assert!(log_of(&s, summarise).contains("summarise: 3 rows"));

    // The sweep step's trials ran the trial file's command with its defaults (epochs 4) and
    // its best trial fed the next step.
    let sweep = s
        .cli(&["job", "show", "-n", &job("sweep-step"), "-o", "json"])
        .success()
        .json();
    let report = sweep["steps"]["report"]["job"].as_str().unwrap();
    assert!(
        log_of(&s, report).contains("lr=0.5 epochs=4 rows=3"),
        "the best trial (lr 0.5) fed the report"
    );
}

#[test]
fn errors_known_at_submission_fail_job_create_and_queue_nothing() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let count = || {
        s.cli(&["job", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let before = count();
    write(
        d,
        "comp/step.yml",
        "type: command\nname: step\ninputs:\n  data:\n    type: uri_folder\ncommand: ls ${{inputs.data}}\nenvironment:\n  image: python\n",
    );
    // Each document is refused by `job create`, its message naming what is wrong.
    let refused = |file: &str, yaml: &str, expected: &[&str]| {
        let path = write(d, file, yaml);
        let r = s
            .cli(&["job", "create", "-f", path.to_str().unwrap()])
            .failure();
        for e in expected {
            assert!(
                r.stderr.contains(e),
                "{file}: expected {e:?} in {}",
                r.stderr
            );
        }
    };
    refused(
        "missing.yml",
        "type: pipeline\njobs:\n  a:\n    component: ./comp/step.yml\n    inputs:\n      data:\n        type: uri_folder\n        path: ./no-such-folder\n",
        &["jobs.a.inputs.data.path", "does not exist"],
    );
    write(
        d,
        "trial.yml",
        "type: command\nname: t\ninputs:\n  lr:\n    type: number\ncommand: echo ${{inputs.lr}}\n",
    );
    refused(
        "sweep.yml",
        "type: pipeline\njobs:\n  s:\n    type: sweep\n    trial: ./trial.yml\n    sampling_algorithm: random\n    search_space:\n      lr:\n        type: choice\n        values: [1, 2]\n    objective:\n      goal: minimize\n      primary_metric: loss\n",
        &["environment", "trial.yml"],
    );
    refused(
        "binding.yml",
        "type: pipeline\njobs:\n  a:\n    component: ./comp/step.yml\n    inputs:\n      data: ${{parent.jobs.nope.outputs.x}}\n",
        &["nope"],
    );
    assert_eq!(count(), before, "nothing was queued");
}

#[test]
fn an_online_deployment_with_an_image_and_a_conda_file_serves_from_its_environment() {
    let s = Server::start();
    let endpoint = corpus("endpoints/online/image-conda/endpoint.yml");
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        endpoint.to_str().unwrap(),
    ])
    .success();
    let blue = corpus("endpoints/online/image-conda/deployment/blue.yml");
    let created = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            blue.to_str().unwrap(),
            "--all-traffic",
        ])
        .success();
    assert_eq!(
        created.stderr.matches("environment.image").count(),
        1,
        "the image warning, once: {}",
        created.stderr
    );
    let key = s
        .cli(&[
            "online-endpoint",
            "get-credentials",
            "-n",
            "corpus-image-conda",
            "--query",
            "primaryKey",
            "-o",
            "tsv",
        ])
        .success()
        .stdout;
    let uri = s
        .cli(&[
            "online-endpoint",
            "show",
            "-n",
            "corpus-image-conda",
            "--query",
            "scoring_uri",
            "-o",
            "tsv",
        ])
        .success()
        .stdout;
    let answer: Value = reqwest::blocking::Client::new()
        .post(uri.trim())
        .bearer_auth(key.trim())
        .json(&serde_json::json!({"data": [1, 2]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"scaled": [3, 6], "python": true}),
        "the scoring code ran in the environment built from ../env/conda.yaml"
    );
    // An update reports itself as one.
    let updated = s
        .cli(&[
            "online-deployment",
            "update",
            "-n",
            "blue",
            "--endpoint",
            "corpus-image-conda",
            "--set",
            "environment_variables.REVISION=2",
        ])
        .success();
    assert!(
        updated.stderr.contains("Updating") && !updated.stderr.contains("Creating"),
        "{}",
        updated.stderr
    );
}

#[test]
fn a_script_written_for_az_ml_drives_tarn_through_query_and_tsv() {
    let s = Server::start();
    let bin_dir = Path::new(crate::harness::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(corpus("scripts/run-and-register.sh"))
        .env("PATH", path)
        .env("TARN_HOME", &s.home)
        .env_remove("TARN_SERVER")
        .env_remove("TARN_TOKEN")
        .env_remove("TARN_WORKSPACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("model hello-model:1 data hello-data:1 compute cpu-cluster from "),
        "{stdout}"
    );
    // The model holds what the job wrote.
    let dir = tempfile::tempdir().unwrap();
    s.cli(&[
        "model",
        "download",
        "-n",
        "hello-model",
        "--label",
        "latest",
        "-p",
        dir.path().to_str().unwrap(),
    ])
    .success();
    let hello = std::fs::read_to_string(dir.path().join("hello-model/hello.txt")).unwrap();
    assert!(hello.starts_with("hello from "), "{hello}");
    // Only `latest` is a label.
    let r = s
        .cli(&["model", "show", "-n", "hello-model", "--label", "prod"])
        .failure();
    assert!(
        r.stderr.contains("the only label is `latest`"),
        "{}",
        r.stderr
    );
    // `job show --web` gives the job's studio page (no browser here to open it in).
    let run_id = last.rsplit(' ').next().unwrap();
    let web = s
        .cli_with(
            &["job", "show", "-n", run_id, "--web"],
            &[("BROWSER", "true")],
        )
        .success()
        .stdout;
    assert_eq!(web.trim(), format!("{}/ws/default/jobs/{run_id}", s.url));
    // `environment create` from flags reads the conda file; `-q` silences its warnings.
    let conda = write(
        dir.path(),
        "conda.yml",
        "dependencies:\n  - python=3.11\n  - pip\n",
    );
    let created = s
        .cli(&[
            "-q",
            "environment",
            "create",
            "--name",
            "flag-env",
            "--conda-file",
            conda.to_str().unwrap(),
            "--image",
            "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
            "--query",
            "spec.conda_file.dependencies[0]",
            "-o",
            "tsv",
        ])
        .success();
    assert_eq!(created.stdout.trim(), "python=3.11");
    assert!(created.stderr.is_empty(), "-q: {}", created.stderr);
    // A `uri_file` output downloads as the file itself, not folders deep.
    let job = write(
        dir.path(),
        "file-out.yml",
        "command: echo done > ${{outputs.report}}\noutputs:\n  report:\n    type: uri_file\n    path: azureml://datastores/workspaceblobstore/paths/reports/report.txt\nenvironment:\n  image: python\ncompute: local\n",
    );
    let name = create(&s, &job);
    assert_eq!(
        ended(&s, &name)["status"],
        "Completed",
        "{}",
        log_of(&s, &name)
    );
    let out = dir.path().join("out");
    s.cli(&[
        "job",
        "download",
        "-n",
        &name,
        "--output-name",
        "report",
        "-p",
        out.to_str().unwrap(),
    ])
    .success();
    assert_eq!(
        std::fs::read_to_string(out.join("named-outputs/report/report.txt")).unwrap(),
        "done\n"
    );
}

#[test]
fn a_single_file_upload_lands_at_the_path_named() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.csv", "a,b\n1,2\n");
    let folder = dir.path().join("more");
    write(&folder, "x.txt", "x");
    let up = |src: &Path, dest: &str| {
        s.cli(&[
            "datastore",
            "upload",
            "--datastore",
            "workspaceblobstore",
            "--src",
            src.to_str().unwrap(),
            "--dest",
            dest,
        ])
    };
    let ls = |path: &str| {
        s.cli(&[
            "datastore",
            "ls",
            "--datastore",
            "workspaceblobstore",
            "--path",
            path,
            "--recursive",
            "-o",
            "json",
        ])
        .success()
        .json()["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    up(&data, "raw/data.csv").success();
    up(&data, "copies/").success();
    assert_eq!(ls("raw"), ["raw/data.csv"]);
    assert_eq!(ls("copies"), ["copies/data.csv"]);
    // A file where a folder is needed, and a folder where a file is needed: refused, nothing
    // written.
    let r = up(&folder, "raw/data.csv").failure();
    assert!(
        r.stderr.contains("\"raw/data.csv\" is a file") && r.stderr.contains("needs a folder"),
        "{}",
        r.stderr
    );
    let r = up(&data, "raw").failure();
    assert!(
        r.stderr.contains("\"raw\" is a folder") && r.stderr.contains("raw/"),
        "{}",
        r.stderr
    );
    assert_eq!(ls("raw"), ["raw/data.csv"]);
    // Deleting: a file; a folder only with --recursive.
    let rm = |path: &str, recursive: bool| {
        let mut args = vec![
            "datastore",
            "rm",
            "--datastore",
            "workspaceblobstore",
            "--path",
            path,
        ];
        if recursive {
            args.push("--recursive");
        }
        s.cli(&args)
    };
    let r = rm("copies", false).failure();
    assert!(r.stderr.contains("--recursive"), "{}", r.stderr);
    rm("raw/data.csv", false).success();
    rm("copies", true).success();
    assert!(ls("raw").is_empty() && ls("copies").is_empty());
    // Datastores are not versioned: their help offers no archive.
    let help = s.cli(&["datastore", "--help"]).success().stdout;
    assert!(
        !help
            .lines()
            .any(|l| l.trim_start().starts_with("archive") || l.trim_start().starts_with("restore")),
        "{help}"
    );
}

/// Writes a minimal wheel (no build step, no index needed) of a one-module package.
fn wheel(dir: &Path, name: &str, version: &str) -> PathBuf {
    let path = dir.join(format!("{name}-{version}-py3-none-any.whl"));
    let script = format!(
        "import zipfile, hashlib, base64\n\
         name, version, path = {name:?}, {version:?}, {:?}\n\
         dist = f'{{name}}-{{version}}.dist-info'\n\
         files = {{f'{{name}}.py': f'VERSION = {{version!r}}\\n', f'{{dist}}/METADATA': f'Metadata-Version: 2.1\\nName: {{name}}\\nVersion: {{version}}\\n', f'{{dist}}/WHEEL': 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}}\n\
         record = ''.join(f\"{{n}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b'=').decode()}},{{len(c.encode())}}\\n\" for n, c in files.items()) + f'{{dist}}/RECORD,,\\n'\n\
         with zipfile.ZipFile(path, 'w') as z:\n\
         \x20   [z.writestr(n, c) for n, c in files.items()]\n\
         \x20   z.writestr(f'{{dist}}/RECORD', record)\n",
        path.display().to_string()
    );
    let ok = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success();
    assert!(ok, "writing the wheel");
    path
}

#[test]
fn pip_install_in_a_job_changes_only_that_job() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // Readable by the jobs' own identities.
    let shared = crate::harness::shared_dir();
    let whl = wheel(shared.path(), "tarnprobe", "1.0");
    let job = |name: &str, command: &str| {
        let file = write(
            dir.path(),
            &format!("{name}.yml"),
            &format!("command: {command}\nenvironment:\n  image: python\ncompute: local\n"),
        );
        let job = create(&s, &file);
        (job.clone(), ended(&s, &job))
    };
    let (first, done) = job(
        "install",
        &format!(
            "pip install --no-index --quiet {} && python -c \"import tarnprobe, sys; print('probe', tarnprobe.VERSION, sys.prefix)\"",
            whl.display()
        ),
    );
    assert_eq!(
        done["status"],
        "Completed",
        "{done:#}\n{}",
        log_of(&s, &first)
    );
    let log = log_of(&s, &first);
    assert!(log.contains("probe 1.0"), "{log}");
    // The next job on the same (host) environment does not see it, nor does the host.
    let (second, done) = job(
        "after",
        "python -c \"import importlib.util as u; print('found' if u.find_spec('tarnprobe') else 'absent')\"",
    );
    assert_eq!(done["status"], "Completed", "{done:#}");
    assert!(log_of(&s, &second).contains("absent"));
    let host = std::process::Command::new("python3")
        .args(["-c", "import tarnprobe"])
        .output()
        .unwrap();
    assert!(!host.status.success(), "the host's Python got the package");
}

#[test]
fn a_public_blob_folder_is_an_input_without_a_datastore() {
    let s = Server::start();
    let azurite = Peer::azurite();
    azurite.public_azure_container("public");
    let dir = tempfile::tempdir().unwrap();
    // Put files there with the account key, through a datastore.
    let ds = write(
        dir.path(),
        "ds.yml",
        &format!(
            "name: writer\ntype: azure_blob\naccount_name: {AZURITE_ACCOUNT}\ncontainer_name: public\nendpoint: {}\ncredentials:\n  account_key: {AZURITE_KEY}\n",
            azurite.url
        ),
    );
    s.cli(&["datastore", "create", "-f", ds.to_str().unwrap()])
        .success();
    let data = dir.path().join("iris");
    write(&data, "a.csv", "1\n2\n");
    write(&data, "sub/b.csv", "3\n");
    s.cli(&[
        "datastore",
        "upload",
        "--datastore",
        "writer",
        "--src",
        data.to_str().unwrap(),
        "--dest",
        "iris/",
    ])
    .success();
    // The job names the container by URL only, as a public dataset is named.
    let job = write(
        dir.path(),
        "job.yml",
        &format!(
            "command: cat ${{{{inputs.iris}}}}/a.csv ${{{{inputs.iris}}}}/sub/b.csv\n\
             inputs:\n  iris:\n    type: uri_folder\n    path: {}/public/iris/\n\
             environment:\n  image: python\ncompute: local\n",
            azurite.url
        ),
    );
    let name = create(&s, &job);
    let done = ended(&s, &name);
    assert_eq!(
        done["status"],
        "Completed",
        "{done:#}\n{}",
        log_of(&s, &name)
    );
    let log = log_of(&s, &name);
    assert!(log.contains("1\n2\n3\n"), "{log}");
}

#[test]
fn a_python_pin_that_cannot_be_had_is_said_in_one_line_and_first_when_packages_fail() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let shared = crate::harness::shared_dir();
    let _ = wheel(shared.path(), "tarnprobe", "1.0");
    // Python 2.7 is neither on this machine nor installable by uv; `tarnprobe==9.9` does not
    // exist: the install fails, and the job says why it probably did.
    let file = write(
        dir.path(),
        "job.yml",
        &format!(
            "command: python -c 'import tarnprobe'\ncompute: local\nenvironment:\n  conda_file:\n    dependencies:\n      - python=2.7.18\n      - pip:\n        - --no-index\n        - --find-links {}\n        - tarnprobe==9.9\n",
            shared.path().display()
        ),
    );
    let name = create(&s, &file);
    let done = ended(&s, &name);
    assert_eq!(done["status"], "Failed");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("pinned for another Python")
            && error.contains("Python 2.7.18 was asked for"),
        "{error}"
    );
    let log = log_of(&s, &name);
    assert!(
        log.contains("[tarn] warning: Python 2.7.18 was asked for, but this machine has no Python 2.7.18 and uv could not install one; using the host's Python 3."),
        "one line says which Python was asked for, which was used and why: {log}"
    );
}

#[test]
fn an_mlflow_model_with_only_a_conda_file_is_served_on_the_python_it_names_or_says_why_not() {
    let s = Server::start();
    let dir = corpus("endpoints/online/mlflow-conda-only");
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        dir.join("endpoint.yml").to_str().unwrap(),
    ])
    .success();
    s.cli(&[
        "online-deployment",
        "create",
        "-f",
        dir.join("deployment.yml").to_str().unwrap(),
        "--all-traffic",
    ])
    .success();
    let key = s
        .cli(&[
            "online-endpoint",
            "get-credentials",
            "-n",
            "corpus-mlflow-conda",
            "--query",
            "primaryKey",
            "-o",
            "tsv",
        ])
        .success()
        .stdout;
    let uri = s
        .cli(&[
            "online-endpoint",
            "show",
            "-n",
            "corpus-mlflow-conda",
            "--query",
            "scoring_uri",
            "-o",
            "tsv",
        ])
        .success()
        .stdout;
    let answer: Value = reqwest::blocking::Client::new()
        .post(uri.trim())
        .bearer_auth(key.trim())
        .json(
            &serde_json::json!({"input_data": {"columns": ["x", "y"], "data": [[1, 10], [2, 20]]}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer, serde_json::json!([12, 24]));
    // The model's conda.yaml asked for Python 3.8: the deployment's log says what it got.
    let logs = s
        .cli(&[
            "online-deployment",
            "get-logs",
            "-n",
            "blue",
            "-e",
            "corpus-mlflow-conda",
            "--lines",
            "400",
        ])
        .success()
        .stdout;
    assert!(
        logs.contains("Python 3.8 was asked for") || logs.contains("(Python 3.8,"),
        "{logs}"
    );
}

#[test]
fn environments_from_an_image_plus_conda_file_or_a_build_context_are_read_where_they_are() {
    let s = Server::start();
    let env = |file: &str| {
        s.cli(&[
            "environment",
            "create",
            "-f",
            corpus(&format!("assets/environment/{file}"))
                .to_str()
                .unwrap(),
            "-o",
            "json",
        ])
        .success()
        .json()
    };
    let image_conda = env("docker-image-plus-conda.yml");
    assert_eq!(
        image_conda["spec"]["conda_file"]["dependencies"][2]["pip"][0], "six==1.16.0",
        "the conda file was read relative to the YAML: {image_conda:#}"
    );
    let context = env("docker-context.yml");
    assert_eq!(
        context["spec"]["conda_file"]["dependencies"][1]["pip"],
        serde_json::json!(["six==1.16.0"]),
        "the context's requirements.txt is the environment: {context:#}"
    );
    // A job on the context's environment gets its packages.
    let dir = tempfile::tempdir().unwrap();
    let job = write(
        dir.path(),
        "job.yml",
        "command: python -c \"import six; print('six', six.__version__)\"\nenvironment: azureml:docker-context-example@latest\ncompute: local\n",
    );
    let name = create(&s, &job);
    let done = ended(&s, &name);
    assert_eq!(done["status"], "Completed", "{}", log_of(&s, &name));
    assert!(log_of(&s, &name).contains("six 1.16.0"));
}
