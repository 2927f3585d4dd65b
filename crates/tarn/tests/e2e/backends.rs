//! The compute-backend conformance suite: every backend runs the same jobs, written as
//! `az ml` job YAML, and must give users the same results — a hello job with its environment
//! variables, inputs and outputs, MLflow logging, a 2-rank job, cancel, timeout, a failure
//! with its exit code and log tail, and a server killed and restarted mid-job. Backends: the
//! local one (an `amlcompute` cluster of node slots on this machine), Slurm (a real two-node
//! cluster, `tests/peers/slurm.rs`), Ray (a real head and worker node, `tests/peers/ray.rs`)
//! and Kubernetes (a FAKE API server that runs pods as local processes, `tests/peers/kube.rs`:
//! no real one can be installed here). Each engine's own behaviours (Slurm's pending reasons,
//! a node taken down, nodes) are tested after the suite.

use crate::harness::Server;
use crate::jobs::{HOST_ENV, submit, wait_end, wait_for, write};
use crate::kube::FakeKube;
use crate::ray::Ray;
use crate::slurm::Slurm;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    Slurm,
    Ray,
    Kubernetes,
}

/// A server with one compute named `target` on the backend under test.
struct Bed {
    s: Server,
    dir: tempfile::TempDir,
    slurm: Option<Slurm>,
    _ray: Option<Ray>,
    kube: Option<FakeKube>,
}

impl Bed {
    fn new(backend: Backend) -> Bed {
        let s = Server::start();
        let dir = tempfile::tempdir().unwrap();
        let mut ray = None;
        let mut kube = None;
        let (slurm, compute) = match backend {
            Backend::Local => (
                None,
                "name: target\ntype: amlcompute\nmin_instances: 0\nmax_instances: 2\n".to_string(),
            ),
            Backend::Ray => {
                let r = Ray::start();
                let text = format!(
                    "name: target\ntype: ray\naddress: {}\nwork_dir: {}\n",
                    r.address,
                    dir.path().join("nodes").display()
                );
                ray = Some(r);
                (None, text)
            }
            Backend::Slurm => {
                let slurm = Slurm::start();
                let text = format!(
                    "name: target\ntype: slurm\npartition: debug\nslurm_conf: {}\nwork_dir: {}\n",
                    slurm.conf.display(),
                    dir.path().join("nodes").display()
                );
                (Some(slurm), text)
            }
            Backend::Kubernetes => {
                let k = FakeKube::start();
                let text = crate::kubernetes::compute_yaml("target", &k.kubeconfig, dir.path(), "");
                kube = Some(k);
                (None, text)
            }
        };
        let file = write(dir.path(), "compute.yml", &compute);
        s.cli(&["compute", "create", "-f", file.to_str().unwrap()])
            .success();
        Bed {
            s,
            dir,
            slurm,
            _ray: ray,
            kube,
        }
    }

    /// Writes a job file that runs on the compute under test.
    fn job(&self, name: &str, body: &str) -> PathBuf {
        write(
            self.dir.path(),
            name,
            &format!("compute: azureml:target\n{HOST_ENV}{body}"),
        )
    }

    fn log(&self, name: &str) -> String {
        self.s.cli(&["job", "stream", "-n", name]).success().stdout
    }

    fn slurm(&self) -> &Slurm {
        self.slurm.as_ref().expect("a Slurm bed")
    }
}

fn running(job: &Value) -> bool {
    job["status"] == "Running"
}

/// A hello job: environment variables, a literal and a file input, an output folder.
fn hello(backend: Backend) {
    let bed = Bed::new(backend);
    write(bed.dir.path(), "data/greeting.txt", "bonjour\n");
    let file = bed.job(
        "hello.yml",
        "command: >-\n  echo hello ${{inputs.who}} $GREETING $(cat ${{inputs.file}}) &&\n  echo written > ${{outputs.out}}/result.txt\n\
         inputs:\n  who: world\n  file:\n    type: uri_file\n    path: ./data/greeting.txt\n\
         outputs:\n  out:\n    type: uri_folder\n\
         environment_variables:\n  GREETING: hi\n",
    );
    let name = submit(&bed.s, &file, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}\n{}", bed.log(&name));
    assert!(
        bed.log(&name).contains("hello world hi bonjour"),
        "{}",
        bed.log(&name)
    );
    assert!(!job["nodes"].as_array().unwrap().is_empty(), "{job:#}");
    if backend == Backend::Slurm {
        let engine = job["engine"].as_str().unwrap_or_default();
        assert!(
            engine.starts_with("slurm:"),
            "job show names Slurm's job id: {job:#}"
        );
    }
    let out = bed.dir.path().join("dl");
    bed.s
        .cli(&[
            "job",
            "download",
            "-n",
            &name,
            "--output-name",
            "out",
            "-p",
            out.to_str().unwrap(),
        ])
        .success();
    let result = out.join("named-outputs/out/result.txt");
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "written\n");
}

/// The job's MLflow run takes metrics from the job through the tracking URI and token.
fn mlflow_logging(backend: Backend) {
    let bed = Bed::new(backend);
    write(
        bed.dir.path(),
        "src/log.py",
        r#"
import json, os, urllib.request
uri, run, token = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"], os.environ["MLFLOW_TRACKING_TOKEN"]
req = urllib.request.Request(uri + "/api/2.0/mlflow/runs/log-metric",
    data=json.dumps({"run_id": run, "key": "accuracy", "value": 0.93, "timestamp": 0, "step": 1}).encode(),
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
urllib.request.urlopen(req).read()
print("logged")
"#,
    );
    let file = bed.job("log.yml", "command: python3 log.py\ncode: ./src\n");
    let name = submit(&bed.s, &file, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}\n{}", bed.log(&name));
    assert_eq!(job["metrics"]["accuracy"], 0.93, "{job:#}");
}

/// Two processes on one node, each with its rank.
fn two_ranks(backend: Backend) {
    let bed = Bed::new(backend);
    let file = bed.job(
        "ranks.yml",
        "command: echo rank $RANK of $WORLD_SIZE local $LOCAL_RANK\n\
         distribution:\n  type: pytorch\n  process_count_per_instance: 2\n",
    );
    let name = submit(&bed.s, &file, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}");
    let log = bed.log(&name);
    for rank in 0..2 {
        assert!(
            log.contains(&format!("rank {rank} of 2 local {rank}")),
            "{log}"
        );
    }
}

/// A canceled job stops, and its engine no longer runs it.
fn cancel(backend: Backend) {
    let bed = Bed::new(backend);
    let file = bed.job("sleep.yml", "command: echo started && sleep 300\n");
    let name = submit(&bed.s, &file, &[]);
    wait_for(&bed.s, &name, Duration::from_secs(60), running);
    bed.s.cli(&["job", "cancel", "-n", &name]).success();
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Canceled", "{job:#}");
    if backend == Backend::Slurm {
        // The batch job ends as its runner does.
        let slurm = bed.slurm();
        let start = std::time::Instant::now();
        while slurm
            .cmd("squeue", &["-h", "-t", "running,pending", "-o", "%j"])
            .contains(&name)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Slurm still runs {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `limits.timeout` stops the job and fails it with the reason.
fn timeout(backend: Backend) {
    let bed = Bed::new(backend);
    let file = bed.job("slow.yml", "command: sleep 120\nlimits:\n  timeout: 2\n");
    let name = submit(&bed.s, &file, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("limits.timeout of 2 s"),
        "{job:#}"
    );
}

/// A failing command: its exit code and the end of its log are kept with the job.
fn failure(backend: Backend) {
    let bed = Bed::new(backend);
    let file = bed.job(
        "fail.yml",
        "command: echo about to fail && echo boom >&2 && exit 3\n",
    );
    let name = submit(&bed.s, &file, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["exit_code"], 3, "{job:#}");
    assert!(
        job["log_tail"].as_str().unwrap().contains("boom"),
        "{job:#}"
    );
}

/// The server is killed mid-job and started again: the job's state is recovered from its
/// engine and the job completes, once.
fn server_restart(backend: Backend) {
    let bed = Bed::new(backend);
    // Outside /tmp (user code has its own) and open to the job's own identity.
    let shared = crate::harness::shared_dir();
    let go = shared.path().join("go");
    let file = bed.job(
        "wait.yml",
        &format!(
            "command: echo started && while [ ! -e {g} ]; do sleep 0.1; done && echo finished\n",
            g = go.display()
        ),
    );
    let name = submit(&bed.s, &file, &[]);
    wait_for(&bed.s, &name, Duration::from_secs(60), running);
    let Bed {
        s,
        dir,
        slurm,
        _ray,
        kube,
    } = bed;
    let url = s.url.clone();
    let home = s.kill();
    std::fs::write(&go, "").unwrap();
    let s = Server::restart_on(home, &url);
    let bed = Bed {
        s,
        dir,
        slurm,
        _ray,
        kube,
    };
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}\n{}", bed.log(&name));
    let log = bed.log(&name);
    let starts = log.lines().filter(|l| l.trim() == "started").count();
    assert_eq!(starts, 1, "ran once: {log}");
    assert!(log.contains("finished"), "{log}");
}

macro_rules! suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            #[test]
            fn hello_job_with_env_vars_inputs_and_outputs() {
                super::hello($backend)
            }
            #[test]
            fn jobs_log_to_their_mlflow_run() {
                super::mlflow_logging($backend)
            }
            #[test]
            fn a_two_rank_job_gets_ranks() {
                super::two_ranks($backend)
            }
            #[test]
            fn cancel_stops_the_job() {
                super::cancel($backend)
            }
            #[test]
            fn timeout_fails_the_job() {
                super::timeout($backend)
            }
            #[test]
            fn failure_keeps_exit_code_and_log_tail() {
                super::failure($backend)
            }
            #[test]
            fn server_killed_mid_job_recovers_it() {
                super::server_restart($backend)
            }
        }
    };
}

suite!(local, super::Backend::Local);
suite!(slurm, super::Backend::Slurm);
suite!(ray, super::Backend::Ray);
suite!(kubernetes, super::Backend::Kubernetes);

/// A job Slurm cannot place yet shows Slurm's pending reason; `compute list-nodes` shows
/// Slurm's nodes and who runs there.
#[test]
fn slurm_pending_reasons_and_nodes_show() {
    let bed = Bed::new(Backend::Slurm);
    let file = bed.job("sleep.yml", "command: sleep 300\n");
    let names: Vec<String> = (0..3).map(|_| submit(&bed.s, &file, &[])).collect();
    let last = wait_for(&bed.s, &names[2], Duration::from_secs(60), |j| {
        j["engine"].as_str().is_some_and(|e| e.contains("PENDING"))
    });
    assert_eq!(last["status"], "Queued", "{last:#}");
    assert!(
        last["engine"]
            .as_str()
            .unwrap()
            .contains("PENDING (Resources)")
            || last["engine"]
                .as_str()
                .unwrap()
                .contains("PENDING (Priority)"),
        "{last:#}"
    );
    for name in &names[..2] {
        wait_for(&bed.s, name, Duration::from_secs(60), running);
    }
    let nodes = bed
        .s
        .cli(&["compute", "list-nodes", "-n", "target", "-o", "json"])
        .success()
        .json();
    let nodes = nodes.as_array().unwrap();
    let names_on_nodes: Vec<&str> = nodes.iter().filter_map(|n| n["job"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().all(|n| n["state"] == "allocated"), "{nodes:?}");
    for name in &names[..2] {
        assert!(names_on_nodes.contains(&name.as_str()), "{nodes:?}");
    }
    // `compute list` and the studio say which engine runs the compute, its nodes and queue.
    let list = bed
        .s
        .cli(&["compute", "list", "-o", "json"])
        .success()
        .json();
    assert_eq!(list[0]["engine"], "slurm", "{list:#}");
    let page = crate::studio::page_as_admin(&bed.s, "/ws/default/computes");
    assert!(
        page.contains("slurm") && page.contains("2 nodes, 2 running Tarn jobs, 1 queued"),
        "{page}"
    );
    let status = bed
        .s
        .cli(&["server", "status", "-o", "json"])
        .success()
        .json();
    assert_eq!(scheduler_of(&status)["errors"], 0, "{status:#}");
    // Canceling a job Slurm holds pending takes it out of Slurm's queue too.
    bed.s.cli(&["job", "cancel", "-n", &names[2]]).success();
    let start = std::time::Instant::now();
    while bed
        .slurm()
        .cmd("squeue", &["-h", "-t", "pending", "-o", "%j"])
        .contains(&names[2])
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still pending in Slurm"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // An engine that stops answering shows in the scheduler's record (`tarn server status`).
    bed.slurm().cmd("scontrol", &["shutdown"]);
    let start = std::time::Instant::now();
    loop {
        let status = bed
            .s
            .cli(&["server", "status", "-o", "json"])
            .success()
            .json();
        let scheduler = scheduler_of(&status);
        if scheduler["errors"].as_u64().unwrap() > 0 {
            let error = scheduler["last_error"].as_str().unwrap();
            assert!(
                error.contains("slurm") && error.contains("squeue"),
                "{status:#}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no error recorded: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scheduler_of(status: &Value) -> Value {
    status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "scheduler")
        .cloned()
        .unwrap_or_else(|| panic!("no scheduler task: {status:#}"))
}

/// A node taken down mid-job: the job fails with Slurm's reason.
#[test]
fn slurm_node_down_fails_the_job_with_slurms_reason() {
    let bed = Bed::new(Backend::Slurm);
    let file = bed.job("sleep.yml", "command: echo started && sleep 300\n");
    let name = submit(&bed.s, &file, &[]);
    let job = wait_for(&bed.s, &name, Duration::from_secs(60), running);
    let node = job["nodes"][0].as_str().unwrap().to_string();
    bed.slurm().cmd(
        "scontrol",
        &[
            "update",
            &format!("nodename={node}"),
            "state=down",
            "reason=maintenance",
        ],
    );
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Failed", "{job:#}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("NODE_FAIL"), "{job:#}");
}

/// Creating a Slurm compute checks that Slurm answers; one that does not is refused and
/// nothing is stored.
#[test]
fn a_slurm_compute_that_does_not_answer_is_refused() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "slurm.conf",
        "ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=1\n",
    );
    let file = write(
        dir.path(),
        "compute.yml",
        &format!("name: hpc\ntype: slurm\nslurm_conf: {}\n", conf.display()),
    );
    let run = s
        .cli(&["compute", "create", "-f", file.to_str().unwrap()])
        .failure();
    assert!(
        run.stderr.contains("slurm") && run.stderr.contains("hpc"),
        "{}",
        run.stderr
    );
    s.cli(&["compute", "show", "-n", "hpc"]).failure();
}

/// A Ray compute: creating one checks that its Jobs API answers (a dead address is refused,
/// nothing stored); its headers stay in the vault; `list-nodes` shows Ray's nodes.
#[test]
fn ray_computes_are_checked_and_show_their_nodes() {
    let ray = Ray::start();
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let file = write(
        dir.path(),
        "dead.yml",
        &format!("name: gone\ntype: ray\naddress: http://127.0.0.1:{dead_port}\n"),
    );
    let run = s
        .cli(&["compute", "create", "-f", file.to_str().unwrap()])
        .failure();
    assert!(
        run.stderr.contains("ray") && run.stderr.contains("gone"),
        "{}",
        run.stderr
    );
    s.cli(&["compute", "show", "-n", "gone"]).failure();

    let file = write(
        dir.path(),
        "ray.yml",
        &format!(
            "name: rc\ntype: ray\naddress: {}\nheaders:\n  X-Ray-Token: hunter2-secret\n",
            ray.address
        ),
    );
    let created = s
        .cli(&[
            "compute",
            "create",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "json",
        ])
        .success();
    assert!(
        !created.stdout.contains("hunter2-secret"),
        "{}",
        created.stdout
    );
    let shown = s
        .cli(&["compute", "show", "-n", "rc", "-o", "json"])
        .success();
    assert!(!shown.stdout.contains("hunter2-secret"), "{}", shown.stdout);
    let nodes = s
        .cli(&["compute", "list-nodes", "-n", "rc", "-o", "json"])
        .success()
        .json();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2, "the head and the worker: {nodes:?}");
    assert!(nodes.iter().all(|n| n["state"] == "ALIVE"), "{nodes:?}");
    let log = std::fs::read_to_string(s.home.join("server.log")).unwrap();
    assert!(
        !log.contains("hunter2-secret"),
        "the header never reaches the log"
    );
}

/// A job on two Slurm nodes: a runner per node, ranks across them with the lead's address as
/// `MASTER_ADDR`, each node's outputs uploaded and its log kept; a failing rank on the second
/// node fails the job with its exit code.
#[test]
fn a_two_node_slurm_job_runs_a_runner_per_node() {
    let nodes = two_nodes(Backend::Slurm);
    assert_eq!(nodes, ["n1", "n2"]);
}

/// The same on Ray's head and worker node: one Ray job whose driver reserves both nodes
/// (a placement group) and starts a runner on each.
#[test]
fn a_two_node_ray_job_runs_a_runner_per_node() {
    two_nodes(Backend::Ray);
}

/// A job on two nodes of an engine (see the tests above); returns the nodes it ran on, sorted.
fn two_nodes(backend: Backend) -> Vec<String> {
    let bed = Bed::new(backend);
    let file = bed.job(
        "wide.yml",
        "command: >-\n  echo rank $RANK node $NODE_RANK of $WORLD_SIZE master $MASTER_ADDR:$MASTER_PORT &&\n  echo part $RANK > ${{outputs.out}}/part-$RANK.txt\n\
         resources:\n  instance_count: 2\n\
         distribution:\n  type: pytorch\n  process_count_per_instance: 1\n\
         outputs:\n  out:\n    type: uri_folder\n",
    );
    let name = submit(&bed.s, &file, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}\n{}", bed.log(&name));
    let mut nodes: Vec<String> = job["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 2, "two distinct nodes: {job:#}");
    let lead = bed.log(&name);
    assert!(
        lead.contains("rank 0 node 0 of 2 master 127.0.0.1:"),
        "{lead}"
    );
    let out = bed.dir.path().join("dl");
    bed.s
        .cli(&[
            "job",
            "download",
            "-n",
            &name,
            "--all",
            "-p",
            out.to_str().unwrap(),
        ])
        .success();
    let found = |file: &str| {
        walk(&out)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == file))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|| panic!("{file} was not downloaded: {:?}", walk(&out)))
    };
    assert_eq!(found("part-0.txt"), "part 0\n");
    assert_eq!(found("part-1.txt"), "part 1\n");
    let second = found("std_log_node_1.txt");
    assert!(
        second.contains("rank 1 node 1 of 2 master 127.0.0.1:"),
        "{second}"
    );
    // Every rank is told the same rank 0.
    let master = |log: &str| {
        log.lines()
            .filter(|l| !l.contains("running:"))
            .find_map(|l| l.split(" master ").nth(1))
            .and_then(|m| m.split(' ').next())
            .unwrap()
            .to_string()
    };
    assert_eq!(master(&lead), master(&second));

    let failing = bed.job(
        "wide-fail.yml",
        "command: if [ \"$RANK\" = 1 ]; then echo rank 1 fails; exit 7; fi; echo rank $RANK fine\n\
         resources:\n  instance_count: 2\n\
         distribution:\n  type: pytorch\n  process_count_per_instance: 1\n",
    );
    let name = submit(&bed.s, &failing, &[]);
    let job = wait_end(&bed.s, &name);
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["exit_code"], 7, "{job:#}");
    nodes
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}

/// A node that does not have the server's `tarn` (here: the server runs from a copy that is
/// then removed) downloads it from the server, checks its checksum, caches it, and runs the job.
#[test]
fn a_slurm_node_without_tarn_downloads_it_from_the_server() {
    let slurm = Slurm::start();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tarn-copy");
    std::fs::copy(crate::harness::BIN, &copy).unwrap();
    let s = Server::start_binary(crate::harness::Home::temp(), &copy);
    std::fs::remove_file(&copy).unwrap();
    let work = dir.path().join("nodes");
    let compute = write(
        dir.path(),
        "compute.yml",
        &format!(
            "name: target\ntype: slurm\nslurm_conf: {}\nwork_dir: {}\n",
            slurm.conf.display(),
            work.display()
        ),
    );
    s.cli(&["compute", "create", "-f", compute.to_str().unwrap()])
        .success();
    let file = write(
        dir.path(),
        "job.yml",
        &format!("compute: azureml:target\n{HOST_ENV}command: echo downloaded and ran\n"),
    );
    let name = submit(&s, &file, &[]);
    let job = wait_end(&s, &name);
    assert_eq!(job["status"], "Completed", "{job:#}");
    let cached: Vec<PathBuf> = walk(&work.join("bin"));
    assert_eq!(cached.len(), 1, "one cached binary: {cached:?}");
    let own = std::fs::read(crate::harness::BIN).unwrap();
    assert_eq!(std::fs::read(&cached[0]).unwrap().len(), own.len());
}
