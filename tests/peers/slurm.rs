//! A real two-node Slurm cluster on this machine, for the Slurm backend's tests: Debian's
//! `slurm-wlm` and `munge` (installed by `scripts/test`), one controller and two `slurmd`
//! (`n1`, `n2`) with their own ports, all under one temporary folder, stopped on drop.
//! Each test gets its own cluster (about a second to start), so tests run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Slurm {
    dir: tempfile::TempDir,
    pub conf: PathBuf,
}

fn run(program: &str, args: &[&str], conf: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(conf) = conf {
        cmd.env("SLURM_CONF", conf);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("{program} cannot run (is slurm-wlm installed?): {e}"))
}

impl Slurm {
    /// Starts munged, slurmctld and two slurmd, and waits until both nodes are idle.
    pub fn start() -> Slurm {
        // Under /tmp with a short name: munge's socket path has a length limit, and munged
        // refuses a socket folder that is not world-searchable.
        let dir = tempfile::Builder::new()
            .prefix("slurm")
            .tempdir_in("/tmp")
            .unwrap();
        let s = dir.path();
        for sub in ["state", "spool/n1", "spool/n2", "log", "munge"] {
            std::fs::create_dir_all(s.join(sub)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        for d in [s.to_path_buf(), s.join("munge")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let key = s.join("munge/munge.key");
        let mut bytes = [0u8; 1024];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .unwrap();
        std::fs::write(&key, bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let munge = |f: &str| s.join("munge").join(f).display().to_string();
        let out = run(
            "munged",
            &[
                &format!("--key-file={}", munge("munge.key")),
                &format!("--socket={}", munge("sock")),
                &format!("--pid-file={}", munge("pid")),
                &format!("--log-file={}", munge("log")),
                &format!("--seed-file={}", munge("seed")),
            ],
            None,
        );
        assert!(out.status.success(), "munged: {out:?}");
        let host = String::from_utf8(run("hostname", &["-s"], None).stdout).unwrap();
        let host = host.trim();
        let ports = super::peers::free_ports(3);
        let (ctld, p1, p2) = (ports[0], ports[1], ports[2]);
        let d = s.display();
        let conf = s.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=tarntest\n\
                 SlurmctldHost={host}\n\
                 SlurmctldPort={ctld}\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={sock}\n\
                 CredType=cred/munge\n\
                 StateSaveLocation={d}/state\n\
                 SlurmdSpoolDir={d}/spool/%n\n\
                 SlurmctldPidFile={d}/slurmctld.pid\n\
                 SlurmdPidFile={d}/slurmd-%n.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\n\
                 SlurmdLogFile={d}/log/slurmd-%n.log\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_Core\n\
                 MpiDefault=none\n\
                 ReturnToService=2\n\
                 SlurmUser=root\n\
                 NodeName=n1 NodeHostname={host} Port={p1} CPUs=1 RealMemory=2000\n\
                 NodeName=n2 NodeHostname={host} Port={p2} CPUs=1 RealMemory=2000\n\
                 PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP\n",
                sock = munge("sock"),
            ),
        )
        .unwrap();
        let slurm = Slurm { dir, conf };
        let c = slurm.conf.display().to_string();
        for (program, args) in [
            ("slurmctld", vec!["-f", &c]),
            ("slurmd", vec!["-f", &c, "-N", "n1"]),
            ("slurmd", vec!["-f", &c, "-N", "n2"]),
        ] {
            let out = run(program, &args, Some(&slurm.conf));
            assert!(out.status.success(), "{program}: {out:?}\n{}", slurm.logs());
        }
        slurm.wait_nodes("idle", Duration::from_secs(60));
        slurm
    }

    /// Runs a Slurm command against this cluster; its standard output.
    #[track_caller]
    pub fn cmd(&self, program: &str, args: &[&str]) -> String {
        let out = run(program, args, Some(&self.conf));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every node is in `state` (`idle`, `down`).
    #[track_caller]
    pub fn wait_nodes(&self, state: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let out = run("sinfo", &["-h", "-N", "-o", "%N %T"], Some(&self.conf));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let states: Vec<&str> = text.lines().filter_map(|l| l.split(' ').nth(1)).collect();
            if states.len() == 2 && states.iter().all(|s| s.trim_end_matches('*') == state) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the Slurm nodes are not {state}: {text}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The controller's and the nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for f in ["slurmctld.log", "slurmd-n1.log", "slurmd-n2.log"] {
            let log =
                std::fs::read_to_string(self.dir.path().join("log").join(f)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            text.push_str(&format!("--- {f}\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs outlive Slurm's daemons (their slurmstepd stays): every job of this cluster is
        // canceled first, and waited for, so none of its processes is left behind.
        let start = Instant::now();
        loop {
            let listed = run("squeue", &["-h", "-o", "%A"], Some(&self.conf));
            let ids = String::from_utf8_lossy(&listed.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break;
            }
            let mut args = vec![];
            args.extend(ids.iter().copied());
            let _ = run("scancel", &args, Some(&self.conf));
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = run("scontrol", &["shutdown"], Some(&self.conf));
        // What is still left of its jobs (a step's processes in a process group of their
        // own, which Slurm's `proctrack/pgid` does not follow): this cluster's slurmstepd
        // (started by its slurmd, so with its SLURM_CONF) and everything under them.
        let ours = format!("SLURM_CONF={}", self.conf.display());
        let procs: Vec<(i32, i32, bool)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let ppid: i32 = stat
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
                let stepd = comm.trim() == "slurmstepd"
                    && env.split(|b| *b == 0).any(|v| v == ours.as_bytes());
                Some((pid, ppid, stepd))
            })
            .collect();
        let mut doomed: Vec<i32> = procs.iter().filter(|p| p.2).map(|p| p.0).collect();
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i];
            doomed.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
            i += 1;
        }
        for pid in doomed {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let s = self.dir.path();
        // The daemons go away on shutdown; munged by its pid file. Waited for, so the folder
        // can be removed.
        let pids: Vec<i32> = [
            "slurmctld.pid",
            "slurmd-n1.pid",
            "slurmd-n2.pid",
            "munge/pid",
        ]
        .iter()
        .filter_map(|f| std::fs::read_to_string(s.join(f)).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
        let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists();
        let start = Instant::now();
        while pids.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(10) {
            if start.elapsed() > Duration::from_secs(3) || !alive(pids[0]) {
                for p in &pids {
                    let _ = Command::new("kill").arg(p.to_string()).status();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
