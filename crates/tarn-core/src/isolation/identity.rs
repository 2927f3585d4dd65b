//! Unprivileged identities for user code, as systemd's `DynamicUser=` hands them out: a uid
//! (and the gid with the same number) from a reserved range, held through a lock on a file in
//! a machine-wide folder for as long as the process that took it runs — so two servers on one
//! machine never hand out the same uid, and a runner that outlives its server keeps its uid.
//! Dropping an identity kills every process still running under its uid, and so does taking
//! one (for a holder that died without dropping it), so nothing a job left behind reaches the
//! next holder.

use super::cgroup::{Group, Layout, Limits};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The first uid of the reserved range (far above login users and subordinate-id ranges).
pub const UID_FIRST: u32 = 1_900_000_000;
/// How many uids the range has.
pub const UID_COUNT: u32 = 65_536;

/// Where the slots' lock files live (root only).
fn slots_dir() -> PathBuf {
    std::env::var_os("TARN_UID_SLOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tarn/uids"))
}

/// A uid held by this process; dropping it kills what runs under it, then frees it.
#[derive(Debug)]
pub struct Identity {
    uid: u32,
    /// Its control group, once limited.
    group: Option<Group>,
    _lock: File,
}

impl Identity {
    /// Takes a free uid: `preferred` when it is free (an instance keeps its uid across
    /// restarts, so its files stay its own), else the first free one from a place `key`
    /// picks, so concurrent takers rarely contend.
    pub fn acquire(key: &str, preferred: Option<u32>) -> std::io::Result<Identity> {
        let dir = slots_dir();
        create_private_dir(&dir)?;
        let start = stable_hash(key) % UID_COUNT;
        let candidates = preferred
            .filter(|u| (UID_FIRST..UID_FIRST + UID_COUNT).contains(u))
            .into_iter()
            .chain((0..UID_COUNT).map(|i| UID_FIRST + (start + i) % UID_COUNT));
        for uid in candidates {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{uid}.lock")))?;
            if file.try_lock().is_ok() {
                // A process of an earlier holder that escaped its group dies now.
                kill_all(uid);
                return Ok(Identity {
                    uid,
                    group: None,
                    _lock: file,
                });
            }
        }
        Err(std::io::Error::other(format!(
            "all {UID_COUNT} user-code identities are in use"
        )))
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Puts what runs as this identity under `limits`, in a group of `layout` named after the
    /// uid (one an earlier holder left is emptied and made anew).
    pub fn limit(&mut self, layout: &Layout, limits: &Limits) -> std::io::Result<()> {
        self.group = Some(layout.make(&self.uid.to_string(), limits)?);
        Ok(())
    }

    /// The files a sandboxed process writes its pid to, to join the group (none if unlimited).
    pub fn cgroup_procs(&self) -> Vec<String> {
        self.group.as_ref().map_or(vec![], Group::procs_files)
    }

    /// How many of its processes the kernel killed for the memory limit.
    pub fn oom_kills(&self) -> u64 {
        self.group.as_ref().map_or(0, Group::oom_kills)
    }
}

impl Drop for Identity {
    /// Every process of the uid dies before the lock (a field, dropped after this) frees it.
    fn drop(&mut self) {
        kill_all(self.uid);
        if let Some(group) = self.group.take() {
            group.remove();
        }
    }
}

/// SIGKILL to every process whose real or effective uid is `uid`, until none is left.
fn kill_all(uid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for _ in 0..50 {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The processes running as `uid` (from `/proc/<pid>/status`: `Uid: real effective …`).
fn processes_of(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let zombie = status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'));
            !zombie
                && status.lines().any(|l| {
                    l.strip_prefix("Uid:").is_some_and(|ids| {
                        ids.split_whitespace()
                            .take(2)
                            .any(|id| id.parse() == Ok(uid))
                    })
                })
        })
        .collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// FNV-1a: stable across runs and builds (std's hasher is not).
fn stable_hash(key: &str) -> u32 {
    key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}
