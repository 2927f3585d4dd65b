//! Kubernetes compute's own behaviours (the conformance suite in `backends.rs` covers what
//! every backend does), against the FAKE API server of `tests/peers/kube.rs`: no real
//! Kubernetes API server can be installed on these machines. It plays the API, the scheduler
//! and the kubelet (pods run as local processes); what it does not prove is in its doc comment.

use crate::harness::Server;
use crate::jobs::{HOST_ENV, submit, wait_end, wait_for};
use crate::kube::{FakeKube, default_config};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A kubernetes compute named `name` reached with `kubeconfig`, its pods working under `dir`.
pub fn compute_yaml(name: &str, kubeconfig: &str, dir: &Path, extra: &str) -> String {
    format!(
        "name: {name}\ntype: kubernetes\nnamespace: tarn-test\nkubeconfig: {}\nwork_dir: {}\n{extra}",
        serde_json::to_string(kubeconfig).unwrap(),
        dir.join("nodes").display()
    )
}

fn create(s: &Server, dir: &Path, yaml: &str) -> crate::harness::Run {
    let file = crate::jobs::write(dir, "compute.yml", yaml);
    s.cli(&["compute", "create", "-f", file.to_str().unwrap()])
}

fn job(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    crate::jobs::write(dir, name, &format!("compute: azureml:k8s\n{body}"))
}

/// Waits (up to 30 s) for what the fake API server shows to satisfy `done`.
#[track_caller]
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn engine(job: &Value) -> String {
    job["engine"].as_str().unwrap_or_default().to_string()
}

/// Creating a kubernetes compute checks that the API answers and what Tarn may do in the
/// namespace; its kubeconfig goes to the vault and never shows, nor does it reach the logs.
#[test]
fn creating_checks_the_api_and_rbac_and_the_kubeconfig_never_shows() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start();
    let token = kube
        .kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();

    // A wrong token: refused with the API server's word, nothing stored.
    let wrong = kube.kubeconfig.replace(&token, "not-the-token");
    let out = create(&s, dir.path(), &compute_yaml("k8s", &wrong, dir.path(), "")).failure();
    assert!(out.stderr.contains("Unauthorized"), "{}", out.stderr);
    assert!(!out.stderr.contains("not-the-token"), "{}", out.stderr);
    let list = s.cli(&["compute", "list", "-o", "json"]).success().json();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");

    // Text that is not a kubeconfig at all: refused without quoting it.
    let bad = "name: k8s\ntype: kubernetes\nkubeconfig: \"just: [a,\\n secret-ish text\"\n";
    let out = create(&s, dir.path(), bad).failure();
    assert!(out.stderr.contains("kubeconfig"), "{}", out.stderr);
    assert!(!out.stderr.contains("secret-ish"), "{}", out.stderr);

    // RBAC: Tarn may not create Secrets there; the error says what to grant.
    let mut config = default_config();
    config["deny"] = serde_json::json!(["create secrets"]);
    let denied = FakeKube::with(config);
    let out = create(
        &s,
        dir.path(),
        &compute_yaml("k8s", &denied.kubeconfig, dir.path(), ""),
    )
    .failure();
    assert!(
        out.stderr.contains("may not create secrets")
            && out.stderr.contains("kubernetes-rbac.yaml"),
        "{}",
        out.stderr
    );

    // A kubeconfig file that is not there.
    let missing = "name: k8s\ntype: kubernetes\nkubeconfig: ./no/such/kubeconfig\n";
    let out = create(&s, dir.path(), missing).failure();
    assert!(
        out.stderr.contains("kubeconfig") && out.stderr.contains("no/such/kubeconfig"),
        "{}",
        out.stderr
    );

    // The right one, as a file next to the YAML (the CLI sends its text): created; the
    // kubeconfig is in the vault only.
    crate::jobs::write(dir.path(), "kubeconfig.yaml", &kube.kubeconfig);
    let yaml = format!(
        "name: k8s\ntype: kubernetes\nnamespace: tarn-test\nkubeconfig: ./kubeconfig.yaml\nwork_dir: {}\n",
        dir.path().join("nodes").display()
    );
    let file = crate::jobs::write(dir.path(), "attach.yml", &yaml);
    // `attach`, as `az ml compute attach --file` takes it.
    s.cli(&["compute", "attach", "--file", file.to_str().unwrap()])
        .success();
    let shown = s
        .cli(&["compute", "show", "-n", "k8s", "-o", "json"])
        .success();
    assert!(!shown.stdout.contains(&token), "{}", shown.stdout);
    assert_eq!(shown.json()["engine"], "kubernetes", "{}", shown.stdout);
    let log = std::fs::read_to_string(s.home.join("server.log")).unwrap_or_default();
    assert!(
        !log.contains(&token),
        "the server's log has the kubeconfig's token"
    );
    // Its nodes, with what they can give.
    let nodes = s
        .cli(&["compute", "list-nodes", "-n", "k8s", "-o", "json"])
        .success()
        .json();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert_eq!(nodes[1]["name"], "node-b");
    assert_eq!(nodes[1]["state"], "Ready");
    assert_eq!(nodes[1]["cpus"], 2);
    assert_eq!(nodes[1]["memory_mb"], 4096);
    assert_eq!(nodes[1]["gpus"], 1);
    // `detach` leaves the cluster as it is.
    s.cli(&["compute", "detach", "-n", "k8s", "--yes"])
        .success();
    let list = s.cli(&["compute", "list", "-o", "json"]).success().json();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list:#}");
}

/// Pods that cannot start say why in `job show` (the scheduler's message, an image that
/// cannot be pulled); instance types place pods (the compute's own and the cluster's
/// `InstanceType` resources); an unknown one fails the job with the ones there are.
#[test]
fn waiting_pods_say_why_and_instance_types_place_them() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = default_config();
    // An instance type the cluster defines (Azure ML's extension's `InstanceType` resource).
    config["instance_types"] = serde_json::json!({
        "gpusmall": {"nodeSelector": {"pool": "gpu"}, "resources": {"requests": {"cpu": "1"}}}
    });
    let kube = FakeKube::with(config);
    let types = "instance_types:\n  huge:\n    resources:\n      requests:\n        cpu: \"8\"\n  cpuonly:\n    node_selector:\n      pool: cpu\n";
    create(
        &s,
        dir.path(),
        &compute_yaml("k8s", &kube.kubeconfig, dir.path(), types),
    )
    .success();
    // `compute show` lists them, the compute's own and the cluster's.
    let shown = s
        .cli(&["compute", "show", "-n", "k8s", "-o", "json"])
        .success()
        .json();
    let listed = shown["instance_types"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown:#}"));
    let mut names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["cpuonly", "gpusmall", "huge"], "{shown:#}");
    let huge = listed.iter().find(|t| t["name"] == "huge").unwrap();
    assert_eq!(huge["requests"]["cpu"], "8", "{shown:#}");
    // The studio shows the engine, its nodes, what they can give, and the instance types.
    let page = crate::studio::page_as_admin(&s, "/ws/default/computes");
    for shown in [
        "kubernetes",
        "2 nodes, 0 running Tarn jobs, 0 queued",
        "4 CPUs, 8 GiB, 1 GPU; instance types: cpuonly, gpusmall, huge",
    ] {
        assert!(page.contains(shown), "{shown:?} is not on the page: {page}");
    }

    // More CPU than any node has: pending, with the scheduler's message.
    let huge = job(
        dir.path(),
        "huge.yml",
        &format!("{HOST_ENV}command: echo never\nresources:\n  instance_type: huge\n"),
    );
    let name = submit(&s, &huge, &[]);
    let pending = wait_for(&s, &name, Duration::from_secs(60), |j| {
        engine(j).contains("Unschedulable")
    });
    assert_eq!(pending["status"], "Queued", "{pending:#}");
    assert!(
        engine(&pending).contains("0/2 nodes are available: 2 Insufficient cpu"),
        "{pending:#}"
    );
    s.cli(&["job", "cancel", "-n", &name]).success();
    assert_eq!(wait_end(&s, &name)["status"], "Canceled");

    // An image that cannot be pulled.
    let pull = job(
        dir.path(),
        "pull.yml",
        "environment:\n  image: unreachable.invalid/nope:1\ncommand: echo never\n",
    );
    let name = submit(&s, &pull, &[]);
    let pending = wait_for(&s, &name, Duration::from_secs(60), |j| {
        engine(j).contains("ImagePullBackOff")
    });
    assert!(
        engine(&pending).contains("unreachable.invalid/nope:1"),
        "{pending:#}"
    );
    s.cli(&["job", "cancel", "-n", &name]).success();
    assert_eq!(wait_end(&s, &name)["status"], "Canceled");
    // Canceling deleted the Job and, with it, its pods and its Secret.
    let gone = |path: &str| {
        kube.get(path)["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| !o["metadata"]["annotations"].to_string().contains(&name))
    };
    eventually("the Job is deleted", || {
        gone("/apis/batch/v1/namespaces/tarn-test/jobs")
    });
    eventually("the Secret is deleted with it", || {
        gone("/api/v1/namespaces/tarn-test/secrets")
    });

    // The compute's own instance type and the cluster's each place pods on their pool.
    for (instance_type, node) in [("cpuonly", "node-a"), ("gpusmall", "node-b")] {
        let file = job(
            dir.path(),
            "placed.yml",
            &format!(
                "{HOST_ENV}command: echo placed\nresources:\n  instance_type: {instance_type}\n"
            ),
        );
        let name = submit(&s, &file, &[]);
        let done = wait_end(&s, &name);
        assert_eq!(done["status"], "Completed", "{done:#}");
        assert_eq!(done["nodes"], serde_json::json!([node]), "{done:#}");
    }

    // An instance type nobody defined.
    let file = job(
        dir.path(),
        "unknown.yml",
        &format!("{HOST_ENV}command: echo never\nresources:\n  instance_type: nosuch\n"),
    );
    let name = submit(&s, &file, &[]);
    let failed = wait_end(&s, &name);
    assert_eq!(failed["status"], "Failed", "{failed:#}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("\"nosuch\"") && error.contains("cpuonly") && error.contains("gpusmall"),
        "{failed:#}"
    );
}

/// A job on two nodes is an Indexed Job of two pods with a headless Service; both run.
#[test]
fn a_job_on_two_nodes_is_an_indexed_job_with_a_headless_service() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start();
    create(
        &s,
        dir.path(),
        &compute_yaml("k8s", &kube.kubeconfig, dir.path(), ""),
    )
    .success();
    let file = job(
        dir.path(),
        "two.yml",
        &format!("{HOST_ENV}command: echo on node $TARN_NODE\nresources:\n  instance_count: 2\n"),
    );
    let name = submit(&s, &file, &[]);
    let done = wait_end(&s, &name);
    assert_eq!(done["status"], "Completed", "{done:#}");
    let k8s_job = || kube.get("/apis/batch/v1/namespaces/tarn-test/jobs")["items"][0].clone();
    assert_eq!(
        k8s_job()["spec"]["completionMode"],
        "Indexed",
        "{:#}",
        k8s_job()
    );
    assert_eq!(k8s_job()["spec"]["completions"], 2, "{:#}", k8s_job());
    // (Tarn's job ends with the lead's report; the Job's status follows its pods' exits.)
    let start = std::time::Instant::now();
    while k8s_job()["status"]["succeeded"] != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never: both pods succeed\n{:#}\n{:#?}",
            k8s_job(),
            kube.get("/api/v1/namespaces/tarn-test/pods")["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["status"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let services = kube.get("/api/v1/namespaces/tarn-test/services");
    assert_eq!(
        services["items"][0]["spec"]["clusterIP"], "None",
        "{services:#}"
    );
    let log = s.cli(&["job", "stream", "-n", &name]).success().stdout;
    assert!(log.contains("on node"), "{log}");
}

/// Azure ML's attach YAML names the cluster by its Azure id only: Tarn keeps it, warns that it
/// cannot reach it yet, shows it with why, and refuses a job sent there saying what is missing.
#[test]
fn an_azure_attach_yaml_without_a_kubeconfig_is_kept_with_a_warning() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: k8s\ntype: kubernetes\nnamespace: ml\n\
                resource_id: /subscriptions/0/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/arc1\n";
    let out = create(&s, dir.path(), yaml).success();
    assert!(
        out.stderr.contains("kubeconfig") && out.stderr.contains("cannot reach"),
        "{}",
        out.stderr
    );
    let shown = s
        .cli(&["compute", "show", "-n", "k8s", "-o", "json"])
        .success()
        .json();
    assert!(
        shown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("kubeconfig"),
        "{shown:#}"
    );
    let file = job(
        dir.path(),
        "j.yml",
        &format!("{HOST_ENV}command: echo never\n"),
    );
    // A job sent there is refused at once, saying what is missing.
    let out = s
        .cli(&["job", "create", "-f", file.to_str().unwrap()])
        .failure();
    assert!(
        out.stderr.contains("compute") && out.stderr.contains("no `kubeconfig`"),
        "{}",
        out.stderr
    );
    let jobs = s.cli(&["job", "list", "-o", "json"]).success().json();
    assert_eq!(jobs.as_array().unwrap().len(), 0, "{jobs:#}");
}

/// A `type: kubernetes` deployment of the endpoint test's model and scoring script
/// (`endpoints::project`), probed every second so that a replica joins as soon as it answers.
fn k8s_deployment(dir: &Path, endpoint: &str, name: &str, extra: &str) -> std::path::PathBuf {
    crate::jobs::write(
        dir,
        &format!("{name}.yml"),
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/kubernetesOnlineDeployment.schema.json\n\
             name: {name}\nendpoint_name: {endpoint}\ntype: kubernetes\n\
             model:\n  path: ./model\n\
             code_configuration:\n  code: ./src\n  scoring_script: score.py\n\
             environment:\n  image: mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest\n\
             readiness_probe:\n  initial_delay: 0\n  period: 1\n  failure_threshold: 60\n\
             liveness_probe:\n  initial_delay: 0\n  period: 1\n  failure_threshold: 3\n\
             request_settings:\n  request_timeout_ms: 2000\n  max_concurrent_requests_per_instance: 2\n  max_queue_wait_ms: 2000\n\
             environment_variables:\n  WHO: {name}\n{extra}"
        ),
    )
}

/// The pid of the scoring server a pod runs (its command line names the pod's address).
fn scoring_server_of(ip: &str) -> Option<u32> {
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = words.iter().any(|w| w.ends_with(b"tarn_scoring_server.py"))
            && words.contains(&ip.as_bytes());
        ours.then_some(pid)
    })
}

/// Online deployments on a Kubernetes compute: each is a Deployment (pods running `tarn
/// replica`), a Service and a Secret; Tarn's router splits traffic over the ready pods, a new
/// revision rolls pod by pod and a scale-out adds pods with no failed request under load, a
/// crashed replica is restarted by Kubernetes and served again, a crash loop fails the
/// deployment with its log, and deleting the endpoint removes it all.
#[test]
fn online_deployments_run_as_kubernetes_deployments_split_roll_and_restart() {
    use crate::endpoints::{Load, key, project, score, show_deployment};
    use serde_json::json;
    use std::collections::HashMap;

    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start();
    create(
        &s,
        dir.path(),
        &compute_yaml(
            "k8s",
            &kube.kubeconfig,
            dir.path(),
            "instance_types:\n  small:\n    resources:\n      requests: {cpu: 100m, memory: 128Mi}\n",
        ),
    )
    .success();
    project(dir.path(), "kep", "key");
    let ep = crate::jobs::write(
        dir.path(),
        "k8s-endpoint.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/kubernetesOnlineEndpoint.schema.json\nname: kep\ncompute: azureml:k8s\nauth_mode: Key\n",
    );
    s.cli(&["online-endpoint", "create", "-f", ep.to_str().unwrap()])
        .success();

    // Where a deployment runs must match its endpoint, and its instance type must exist.
    let managed = crate::endpoints::deployment(dir.path(), "kep", "managed", "");
    let out = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            managed.to_str().unwrap(),
        ])
        .failure();
    assert!(out.stderr.contains("type: kubernetes"), "{}", out.stderr);
    let unknown = k8s_deployment(dir.path(), "kep", "huge", "instance_type: huge\n");
    let out = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            unknown.to_str().unwrap(),
        ])
        .failure();
    assert!(
        out.stderr.contains("\"huge\"") && out.stderr.contains("small"),
        "{}",
        out.stderr
    );
    // A cluster where Tarn may not make Deployments: the create says what to grant.
    let mut config = default_config();
    config["deny"] = json!(["create deployments"]);
    let denied = FakeKube::with(config);
    create(
        &s,
        dir.path(),
        &compute_yaml("k8s-jobs-only", &denied.kubeconfig, dir.path(), ""),
    )
    .success();
    let jobs_only = crate::jobs::write(
        dir.path(),
        "jobs-only-endpoint.yml",
        "name: jep\ncompute: azureml:k8s-jobs-only\n",
    );
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        jobs_only.to_str().unwrap(),
    ])
    .success();
    let refused = k8s_deployment(dir.path(), "jep", "refused", "");
    let out = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            refused.to_str().unwrap(),
        ])
        .failure();
    assert!(
        out.stderr.contains("may not create deployments")
            && out.stderr.contains("kubernetes-rbac.yaml"),
        "{}",
        out.stderr
    );
    let local_ep = crate::jobs::write(dir.path(), "local-endpoint.yml", "name: lep\n");
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        local_ep.to_str().unwrap(),
    ])
    .success();
    // A `type: kubernetes` deployment on an endpoint without a cluster runs on this machine,
    // and says so.
    let stray = k8s_deployment(dir.path(), "lep", "stray", "");
    let out = s
        .cli(&["online-deployment", "create", "-f", stray.to_str().unwrap()])
        .success();
    assert!(
        out.stderr.contains("no Kubernetes `compute`"),
        "{}",
        out.stderr
    );
    assert_eq!(
        show_deployment(&s, "lep", "stray")["replicas"][0]["pod"],
        Value::Null
    );

    // Blue: two pods of the `small` instance type, each on its own address.
    let blue = k8s_deployment(
        dir.path(),
        "kep",
        "blue",
        "instance_count: 2\ninstance_type: small\n",
    );
    let made = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            blue.to_str().unwrap(),
            "--all-traffic",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(made["provisioning_state"], "Succeeded", "{made:#}");
    let replicas = made["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{made:#}");
    assert!(
        replicas
            .iter()
            .all(|r| r["state"] == "Ready" && r["pod"].as_str().is_some()),
        "{made:#}"
    );
    let deployments = kube.get("/apis/apps/v1/namespaces/tarn-test/deployments")["items"].clone();
    let d = &deployments[0];
    assert_eq!(d["spec"]["replicas"], 2, "{d:#}");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["requests"]["cpu"], "100m", "{d:#}");
    let token = s.token.clone();
    assert!(!d.to_string().contains(&token));
    let pods = kube.get("/api/v1/namespaces/tarn-test/pods")["items"].clone();
    let ips: Vec<&str> = pods
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .collect();
    assert_eq!(ips.len(), 2, "{pods:#}");
    assert_ne!(ips[0], ips[1]);
    let services = kube.get("/api/v1/namespaces/tarn-test/services")["items"].clone();
    assert_eq!(
        services[0]["spec"]["ports"][0]["port"], 5001,
        "{services:#}"
    );
    // Tarn follows its pods by watching them (a pod that stops leaves the routes at once).
    assert!(
        kube.get("/fake/watches")["pods"].as_u64().unwrap_or(0) >= 1,
        "{}",
        kube.get("/fake/watches")
    );

    // Green, and a split: both answer.
    let green = k8s_deployment(dir.path(), "kep", "green", "");
    s.cli(&["online-deployment", "create", "-f", green.to_str().unwrap()])
        .success();
    s.cli(&[
        "online-endpoint",
        "update",
        "-n",
        "kep",
        "--traffic",
        "blue=50 green=50",
    ])
    .success();
    let uri = format!("{}/endpoints/kep/score", s.url);
    let (primary, _) = key(&s, "kep");
    let client = reqwest::blocking::Client::new();
    let mut who: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        let (status, _, answer) = score(&client, &uri, &primary, &json!({"data": [2]}), None);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["total"], 20, "{answer}");
        assert!(answer.get("leak").is_none(), "{answer}");
        *who.entry(answer["who"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        who.contains_key("blue") && who.contains_key("green"),
        "{who:?}"
    );

    // Under load from 4 threads: a new revision rolls, a scale-out, a crash.
    let load = Load::start(&uri, &primary);
    let rolled = s
        .cli(&[
            "online-deployment",
            "update",
            "-n",
            "blue",
            "-e",
            "kep",
            "--set",
            "environment_variables.WHO=blue-v2",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(rolled["provisioning_state"], "Succeeded", "{rolled:#}");
    let replicas = rolled["replicas"].as_array().unwrap();
    assert!(
        replicas.len() == 2
            && replicas
                .iter()
                .all(|r| r["current"] == true && r["state"] == "Ready"),
        "{rolled:#}"
    );
    let scaled = s
        .cli(&[
            "online-deployment",
            "update",
            "-n",
            "blue",
            "-e",
            "kep",
            "--set",
            "instance_count=3",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(
        scaled["replicas"].as_array().unwrap().len(),
        3,
        "{scaled:#}"
    );
    let pod = scaled["replicas"][0]["pod"].as_str().unwrap().to_string();
    let ip = kube.get(&format!("/api/v1/namespaces/tarn-test/pods/{pod}"))["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = scoring_server_of(&ip).expect("the pod's scoring server");
    std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    eventually("the crashed replica restarted and ready", || {
        show_deployment(&s, "kep", "blue")["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["pod"] == pod.as_str() && r["restarts"] == 1 && r["state"] == "Ready")
    });
    let seen = load.finish();
    for w in ["blue", "blue-v2", "green"] {
        assert!(seen.contains_key(&(200, w.to_string())), "{w}: {seen:?}");
    }
    // The replica's log is the pod's.
    let logs = s
        .cli(&["online-deployment", "get-logs", "-n", "blue", "-e", "kep"])
        .success()
        .stdout;
    assert!(logs.contains("init called"), "{logs}");
    // In the pod, the environment's image is what runs (its Python), not a stand-in.
    assert!(
        logs.contains("the image's Python (mcr.microsoft.com/azureml/minimal-ubuntu22.04"),
        "{logs}"
    );

    // A replica whose init() fails keeps crashing: the create fails with the log's end, and
    // the others serve on.
    let broken = k8s_deployment(dir.path(), "kep", "broken", "");
    let broken_yaml = std::fs::read_to_string(&broken)
        .unwrap()
        .replace("  WHO: broken\n", "  WHO: broken\n  FAIL_INIT: \"1\"\n");
    std::fs::write(&broken, broken_yaml).unwrap();
    let out = s
        .cli(&[
            "online-deployment",
            "create",
            "-f",
            broken.to_str().unwrap(),
        ])
        .failure();
    assert!(
        out.stderr.contains("the model file is corrupt (FAIL_INIT)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        score(&client, &uri, &primary, &json!({"data": [1]}), None).0,
        200
    );

    // Deleting the endpoint removes its Deployments, and with them their pods, Services and
    // Secrets.
    s.cli(&["online-endpoint", "delete", "-n", "kep", "--yes"])
        .success();
    eventually("the Deployments, pods, Services and Secrets gone", || {
        [
            "/apis/apps/v1/namespaces/tarn-test/deployments",
            "/api/v1/namespaces/tarn-test/pods",
            "/api/v1/namespaces/tarn-test/services",
            "/api/v1/namespaces/tarn-test/secrets",
        ]
        .iter()
        .all(|p| kube.get(p)["items"].as_array().unwrap().is_empty())
    });
}

/// A pod of an image with neither curl nor wget (as Python's slim images are), on a node
/// without the server's `tarn` (the server runs from a copy that is then removed), downloads
/// the binary with `python3`, checks its checksum, caches it, and runs the job.
#[test]
fn a_slim_image_without_curl_or_wget_downloads_tarn_with_python() {
    let dir = tempfile::tempdir().unwrap();
    // The image's tools: the shell and core utilities, Python; no curl, no wget.
    let image_bin = dir.path().join("image-bin");
    std::fs::create_dir_all(&image_bin).unwrap();
    let path = std::env::var("PATH").unwrap();
    // Python itself, not a version manager's shim.
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    for name in ["python3", "python"] {
        std::os::unix::fs::symlink(&python, image_bin.join(name)).unwrap();
    }
    for tool in [
        "sh",
        "bash",
        "mkdir",
        "date",
        "sha256sum",
        "cut",
        "cp",
        "rm",
        "chmod",
        "mv",
        "cat",
        "env",
        "sleep",
        "ls",
        "id",
        "uname",
        "dirname",
        "head",
        "tail",
        "tr",
        "grep",
        "sed",
    ] {
        if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(found, image_bin.join(tool)).unwrap();
        }
    }
    assert!(!image_bin.join("curl").exists() && !image_bin.join("wget").exists());
    let mut config = default_config();
    config["image_path"] = serde_json::json!({"python:3.11-slim": image_bin});
    let kube = FakeKube::with(config);

    let copy = dir.path().join("tarn-copy");
    std::fs::copy(crate::harness::BIN, &copy).unwrap();
    let s = Server::start_binary(crate::harness::Home::temp(), &copy);
    std::fs::remove_file(&copy).unwrap();
    create(
        &s,
        dir.path(),
        &compute_yaml("k8s", &kube.kubeconfig, dir.path(), ""),
    )
    .success();
    let file = job(
        dir.path(),
        "job.yml",
        "environment:\n  image: python:3.11-slim\ncommand: echo downloaded and ran\n",
    );
    let name = submit(&s, &file, &[]);
    let done = wait_end(&s, &name);
    let node_logs: Vec<String> = walk_files(&dir.path().join("nodes/runs"))
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert_eq!(done["status"], "Completed", "{done:#}\n{node_logs:#?}");
    let log = s.cli(&["job", "stream", "-n", &name]).success().stdout;
    assert!(log.contains("downloaded and ran"), "{log}");
    let cached: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("nodes/bin"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("tarn"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(cached.len(), 1, "one cached binary: {cached:?}");
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().len(),
        std::fs::metadata(crate::harness::BIN).unwrap().len()
    );
}

/// Every file under `dir`.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A Deployment Tarn made for a deployment it no longer has (deleted while the server was
/// down) is removed when the server starts again; one of another Tarn's workspaces sharing
/// the namespace is left alone.
#[test]
fn deployments_left_on_the_cluster_are_removed_at_start() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start();
    create(
        &s,
        dir.path(),
        &compute_yaml("k8s", &kube.kubeconfig, dir.path(), ""),
    )
    .success();
    let ws = s
        .cli(&["workspace", "show", "-n", "default", "-o", "json"])
        .success()
        .json();
    let ws_id = ws["id"].as_str().unwrap();
    let left = |name: &str, id: &str| {
        serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "tarn", "tarn.io/deployment": name},
                "annotations": {"tarn.io/deployment-id": id},
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"tarn.io/deployment": name}},
                "template": {"metadata": {"labels": {"tarn.io/deployment": name}},
                             "spec": {"containers": [{"name": "scoring", "image": "x"}]}},
            },
        })
    };
    // Tarn names a deployment's objects `tarn-<deployment>-<10 hex of the id's SHA-256>`.
    let name_of = |id: &str| {
        format!(
            "tarn-blue-{}",
            &tarn_spec::digest::sha256_hex(id.as_bytes())[..10]
        )
    };
    let gone = format!("{ws_id}/gone/blue");
    let other = "another-tarns-workspace/ep/blue";
    let path = "/apis/apps/v1/namespaces/tarn-test/deployments";
    kube.post(path, &left(&name_of(&gone), &gone));
    kube.post(path, &left(&name_of(other), other));
    let url = s.url.clone();
    let home = s.stop();
    let s = Server::restart_on(home, &url);
    let names = || -> Vec<String> {
        kube.get(path)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    eventually("the Deployment left behind removed", || {
        names() == vec![name_of(other)]
    });
    drop(s);
}
