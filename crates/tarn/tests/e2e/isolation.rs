//! User code is isolated: an "attacker" — a job, a notebook cell, a scoring script — tries to
//! read Tarn's secrets, another job's files, another workspace's datastore and another
//! process's token, and to kill the server. In CI the server runs as root (a production host:
//! user code gets its own uid); another test runs the server as an unprivileged user (user
//! namespaces and Landlock), and one shows the warning when isolation is off.

use crate::harness::{Home, Server, shared_dir};
use crate::jobs::{HOST_ENV, submit, wait_end, wait_for, write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Processes whose command line has `needle` as one of its arguments' substrings.
fn pids_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir()
            && !p.is_symlink()
            && let Some(found) = find_file(&p, name)
        {
            return Some(found);
        }
    }
    None
}

/// What the attacker tries, each line printing `DENIED <what>` or `LEAKED <what>`.
struct Attack {
    lines: Vec<(String, String)>,
}

impl Attack {
    fn new() -> Attack {
        Attack { lines: vec![] }
    }
    fn tries(mut self, what: &str, shell: &str) -> Attack {
        self.lines.push((what.into(), shell.into()));
        self
    }
    fn script(&self) -> String {
        self.lines
            .iter()
            .map(|(what, sh)| {
                format!(
                    "if {sh} >/dev/null 2>&1; then echo LEAKED {what}; else echo DENIED {what}; fi"
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
    fn names(&self) -> Vec<&str> {
        self.lines.iter().map(|(w, _)| w.as_str()).collect()
    }
}

/// A running victim job (its secret written, waiting on a gate) and what the attacker aims at.
struct Scene {
    s: Server,
    gate: tempfile::TempDir,
    victim: String,
    attack: Attack,
}

fn scene(s: Server) -> Scene {
    let gate = shared_dir();
    let g = gate.path().display().to_string();
    let home = s.home.clone();
    let h = home.display().to_string();
    // Another workspace, with a file in its default datastore.
    s.cli(&["workspace", "create", "--name", "other"]).success();
    let secret = write(gate.path(), "other-secret.txt", "other workspace's data\n");
    s.cli(&[
        "datastore",
        "upload",
        "-w",
        "other",
        "--datastore",
        "workspaceblobstore",
        "--src",
        &secret.display().to_string(),
        "--dest",
        "private/",
    ])
    .success();
    let other_file = find_file(&home.join("workspaces"), "other-secret.txt")
        .expect("the other workspace's file on disk");
    // The victim: writes a secret into its working folder and waits.
    let victim_file = write(
        gate.path(),
        "victim.yml",
        &format!(
            "command: |\n  echo victim-secret > secret.txt && true victim-marker && while [ ! -f {g}/go ]; do sleep 0.05; done\n{HOST_ENV}"
        ),
    );
    let victim = submit(&s, &victim_file, &[]);
    wait_for(&s, &victim, Duration::from_secs(60), |j| {
        j["status"] == "Running"
    });
    let victim_dir = find_file(&home.join("runs"), &victim).expect("the victim's run folder");
    let victim_secret = victim_dir.join("wd/secret.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !victim_secret.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the victim never wrote"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim_pid = pids_with("victim-marker")
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"/bin/sh"))
        })
        .expect("the victim's process");
    let runner_pid = pids_with(&format!("--job\0{victim}\0"))[0];
    let attack = Attack::new()
        .tries("vault-key", &format!("cat {h}/vault.key"))
        .tries("database", &format!("head -c 16 {h}/tarn.db"))
        .tries("credentials", &format!("cat {h}/credentials.json"))
        .tries("server-log", &format!("cat {h}/server.log"))
        .tries(
            "other-job-files",
            &format!("cat {}", victim_secret.display()),
        )
        .tries(
            "other-workspace-files",
            &format!("cat {}", other_file.display()),
        )
        .tries(
            "other-job-token",
            &format!("grep -a MLFLOW_TRACKING_TOKEN /proc/{victim_pid}/environ"),
        )
        .tries(
            "runner-token",
            &format!("grep -a TARN_RUNNER_TOKEN /proc/{runner_pid}/environ"),
        )
        .tries("signal-other-job", &format!("kill -0 {victim_pid}"))
        .tries("kill-server", &format!("kill -9 {}", s.pid()));
    Scene {
        s,
        gate,
        victim,
        attack,
    }
}

/// Runs the attacker as a job; returns its log.
fn attack_with_a_job(scene: &Scene) -> String {
    let file = write(
        scene.gate.path(),
        "attacker.yml",
        &format!(
            "command: |\n  {}; mkdir -p outputs && echo own-files-ok > ./outputs/ok.txt && cat ./outputs/ok.txt\n{HOST_ENV}",
            scene.attack.script()
        ),
    );
    let job = submit(&scene.s, &file, &[]);
    let end = wait_end(&scene.s, &job);
    assert_eq!(end["status"], "Completed", "{end}");
    scene.s.cli(&["job", "stream", "-n", &job]).success().stdout
}

/// Runs the attacker in a notebook cell of a compute instance (`mallory-box`), through
/// JupyterLab's kernel API behind Tarn's proxy; returns what the cell printed and the token of
/// the instance's user.
fn attack_from_a_notebook(scene: &Scene) -> (String, String) {
    let s = &scene.s;
    let token = s.user_with_role("mallory", "Data Scientist", "default");
    let file = write(
        scene.gate.path(),
        "instance.yml",
        "name: mallory-box
type: computeinstance
create_on_behalf_of:
  user_object_id: mallory
",
    );
    s.cli(&["compute", "create", "-f", file.to_str().unwrap()])
        .success();
    let shown = s
        .cli(&["compute", "start", "-n", "mallory-box", "-o", "json"])
        .success()
        .json();
    assert_eq!(shown["state"], "Running", "{shown:#}");
    let script = serde_json::to_string(&scene.attack.script()).unwrap();
    let out = crate::instances::run_in_kernel(
        s,
        "mallory-box",
        &token,
        &format!(
            "import subprocess\nprint(subprocess.run(['sh', '-c', {script}], capture_output=True, text=True).stdout)"
        ),
    );
    (out, token)
}

/// Deploys a scoring script that runs the attacker on each request; returns its answer.
fn attack_from_a_scoring_script(scene: &Scene) -> String {
    let s = &scene.s;
    let dir = scene.gate.path();
    write(dir, "model/weight.txt", "1");
    write(dir, "src/attack.sh", &scene.attack.script());
    write(
        dir,
        "src/score.py",
        "import os, subprocess\n\
         def init():\n    pass\n\
         def run(raw_data):\n    here = os.path.dirname(os.path.abspath(__file__))\n    \
         return {'out': subprocess.run(['sh', os.path.join(here, 'attack.sh')], capture_output=True, text=True).stdout}\n",
    );
    let endpoint = write(dir, "endpoint.yml", "name: mallory-ep\nauth_mode: key\n");
    s.cli(&[
        "online-endpoint",
        "create",
        "-f",
        endpoint.to_str().unwrap(),
    ])
    .success();
    let deployment = write(
        dir,
        "blue.yml",
        &format!(
            "name: blue\nendpoint_name: mallory-ep\nmodel:\n  path: ./model\n\
             code_configuration:\n  code: ./src\n  scoring_script: score.py\n{HOST_ENV}"
        ),
    );
    s.cli(&[
        "online-deployment",
        "create",
        "-f",
        deployment.to_str().unwrap(),
        "--all-traffic",
    ])
    .success();
    let request = write(dir, "request.json", "{}");
    let out = s
        .cli(&[
            "online-endpoint",
            "invoke",
            "-n",
            "mallory-ep",
            "--request-file",
            request.to_str().unwrap(),
        ])
        .success()
        .stdout;
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    answer["out"].as_str().unwrap().to_string()
}

fn assert_all_denied(log: &str, attack: &Attack) {
    for what in attack.names() {
        assert!(
            log.contains(&format!("DENIED {what}")),
            "{what} was not denied:\n{log}"
        );
    }
    assert!(!log.lines().any(|l| l.starts_with("LEAKED")), "{log}");
}

fn finish(scene: Scene) {
    std::fs::write(scene.gate.path().join("go"), "").unwrap();
    let end = wait_end(&scene.s, &scene.victim);
    assert_eq!(
        end["status"], "Completed",
        "the victim was disturbed: {end}"
    );
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[test]
fn an_attacker_job_reaches_no_secret_no_other_job_and_not_the_server() {
    let s = Server::start();
    let health = s.cli(&["server", "status", "-o", "json"]).success().json();
    assert_eq!(health["isolation"]["isolated"], true, "{health}");
    let mechanisms = health["isolation"]["mechanisms"].to_string();
    if is_root() {
        // A production host: the server is root, user code gets identities of its own, each
        // with its control group's limits.
        assert!(mechanisms.contains("uid per job"), "{health}");
        assert!(
            mechanisms.contains("limits (memory, CPU, processes)"),
            "{health}"
        );
    }
    assert!(mechanisms.contains("mount namespace"), "{health}");
    let page = crate::studio::page_as_admin(&s, "/ws/default/jobs");
    assert!(!page.contains("user code is not isolated"), "{page}");
    let scene = scene(s);
    let log = attack_with_a_job(&scene);
    assert_all_denied(&log, &scene.attack);
    assert!(log.contains("own-files-ok"), "{log}");
    finish(scene);
}

#[test]
fn a_notebook_cell_and_a_scoring_script_reach_no_secret_no_other_job_and_not_the_server() {
    let scene = scene(Server::start());
    let (cell, token) = attack_from_a_notebook(&scene);
    assert_all_denied(&cell, &scene.attack);
    // What notebooks need still works: `%pip install` into the instance's own environment,
    // and user code is the first the out-of-memory killer picks, not the server.
    let out = crate::instances::run_in_kernel(
        &scene.s,
        "mallory-box",
        &token,
        "%pip install -q six==1.16.0\n\
         import sys, six\n\
         print('six in', six.__file__.startswith(sys.prefix))\n\
         print('oom', open('/proc/self/oom_score_adj').read().strip())",
    );
    assert!(out.contains("six in True"), "{out}");
    assert!(out.contains("oom 500"), "{out}");
    let answer = attack_from_a_scoring_script(&scene);
    assert_all_denied(&answer, &scene.attack);
    finish(scene);
}

/// A job that starts a daemon in a session of its own (`setsid`), then ends: prints the
/// daemon's pid as `LEFTOVER <pid>`.
const LEAVES_A_DAEMON: &str = "python3 -c \"import subprocess; p = subprocess.Popen(['sleep', '300'], start_new_session=True); print('LEFTOVER', p.pid)\"";

/// Runs [`LEAVES_A_DAEMON`] (after `before`) on `compute` and checks that the daemon did not
/// outlive the job; returns the job's log.
fn a_daemon_dies_with_its_job(s: &Server, dir: &Path, compute: &str, before: &str) -> String {
    let file = write(
        dir,
        "daemon.yml",
        &format!(
            "command: {before}{LEAVES_A_DAEMON}
compute: {compute}
{HOST_ENV}"
        ),
    );
    let job = submit(s, &file, &[]);
    let end = wait_end(s, &job);
    assert_eq!(end["status"], "Completed", "{end}");
    let log = s.cli(&["job", "stream", "-n", &job]).success().stdout;
    let pid: u32 = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("LEFTOVER "))
        .unwrap_or_else(|| panic!("no pid in {log}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon {pid} outlived its job"
    );
    log
}

/// As root each job's node gets a control group with its share of the machine, capped by the
/// compute's VM size: a job past its memory is stopped by the kernel and fails saying so; the
/// server and the next job go on. What a job leaves running dies with it.
#[test]
fn a_job_past_its_nodes_memory_fails_saying_so_and_leaves_nothing_running() {
    if !is_root() {
        // Control groups are made by a server that runs as root.
        return;
    }
    let s = Server::start();
    let dir = shared_dir();
    let compute = write(
        dir.path(),
        "small.yml",
        "name: small\ntype: amlcompute\nsize: Standard_A1_v2\nmax_instances: 1\n",
    );
    s.cli(&["compute", "create", "-f", compute.to_str().unwrap()])
        .success();
    let hog = write(
        dir.path(),
        "hog.yml",
        &format!(
            "command: python3 -c \"x = b'x' * (3 << 30); print('survived')\"\ncompute: azureml:small\n{HOST_ENV}"
        ),
    );
    let job = submit(&s, &hog, &[]);
    let end = wait_end(&s, &job);
    assert_eq!(end["status"], "Failed", "{end}");
    let error = end["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ran out of memory") && error.contains("2.0 GiB"),
        "the limit is named: {end}"
    );
    let log = s.cli(&["job", "stream", "-n", &job]).failure().stdout;
    assert!(
        log.contains("ran out of memory") && !log.lines().any(|l| l.trim() == "survived"),
        "{log}"
    );
    // The same node runs the next job, which sees its own limit (cgroup v1 or v2).
    let limit = "python3 -c \"import pathlib; g = dict(l.split(':', 2)[1:] for l in open('/proc/self/cgroup').read().split()); v1 = pathlib.Path('/sys/fs/cgroup/memory' + g.get('memory', '/-'), 'memory.limit_in_bytes'); v2 = pathlib.Path('/sys/fs/cgroup' + g.get('', '/-'), 'memory.max'); print('LIMIT', (v1 if v1.exists() else v2).read_text().strip())\" && ";
    let log = a_daemon_dies_with_its_job(&s, dir.path(), "azureml:small", limit);
    assert!(
        log.lines()
            .any(|l| l.trim() == format!("LIMIT {}", 2u64 << 30)),
        "{log}"
    );
    s.cli(&["server", "status"]).success();
}

/// The server as an unprivileged user (`nobody`): no identities to hand out, so user code
/// shares the server's uid and is kept out by its own view of the files and Landlock.
#[test]
fn without_root_user_namespaces_and_landlock_still_isolate_user_code() {
    if !is_root() {
        // Switching to `nobody` needs root; as any other user this test's server already
        // runs unprivileged, which the test above covers.
        return;
    }
    let home = shared_dir();
    let home_path = home.path().join("home");
    std::fs::create_dir(&home_path).unwrap();
    std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(home.path())
        .status()
        .unwrap();
    let s = Server::start_as(
        Home::kept_in(home_path, home),
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &[],
    );
    let health = s.cli(&["server", "status", "-o", "json"]).success().json();
    assert_eq!(health["isolation"]["isolated"], true, "{health}");
    let mechanisms = health["isolation"]["mechanisms"].to_string();
    assert!(!mechanisms.contains("uid per job"), "{health}");
    assert!(
        mechanisms.contains("landlock (files, signals, ptrace)"),
        "{health}"
    );
    // User code shares the server's uid here: a daemon it starts is found as the runner's
    // descendant and dies with the job all the same.
    let dir = shared_dir();
    a_daemon_dies_with_its_job(&s, dir.path(), "local", "");
    let scene = scene(s);
    let log = attack_with_a_job(&scene);
    assert_all_denied(&log, &scene.attack);
    finish(scene);
}

/// With isolation off the server says so at start-up, in `tarn server status` and on the
/// studio's pages, and it is true: a job reads the vault key.
#[test]
fn with_isolation_off_the_server_warns_at_start_in_its_status_and_in_the_studio_and_means_it() {
    let home = Home::temp();
    let path = home.path.clone();
    let s = Server::start_as(home, &[], &["--no-isolation"]);
    let status = s.cli(&["server", "status", "-o", "json"]).success().json();
    let log = std::fs::read_to_string(path.join("server.log")).unwrap();
    assert!(log.contains("user code is not isolated"), "{log}");
    assert_eq!(status["isolation"]["isolated"], false, "{status}");
    assert!(
        status["isolation"]["summary"]
            .as_str()
            .unwrap()
            .contains("--no-isolation"),
        "{status}"
    );
    let page = crate::studio::page_as_admin(&s, "/ws/default/jobs");
    assert!(
        page.contains("role=\"alert\">user code is not isolated"),
        "{page}"
    );
    let dir = shared_dir();
    let file = write(
        dir.path(),
        "peek.yml",
        &format!("command: wc -c < {}/vault.key\n{HOST_ENV}", path.display()),
    );
    let job = submit(&s, &file, &[]);
    assert_eq!(wait_end(&s, &job)["status"], "Completed");
    let out = s.cli(&["job", "stream", "-n", &job]).success().stdout;
    let size = std::fs::metadata(path.join("vault.key")).unwrap().len();
    assert!(out.lines().any(|l| l.trim() == size.to_string()), "{out}");
}
