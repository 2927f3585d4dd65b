//! What user code leaves running when it ends. A process that starts its own session (`setsid`,
//! a daemon) leaves its job's process group; without an identity of its own (a server that is
//! not root) nothing else marks it as the job's. The process that starts user code (a runner,
//! a replica, an instance) therefore becomes a *child subreaper*: orphans of its descendants
//! are re-parented to it instead of to init, so every process user code started stays its
//! descendant, and [`kill_descendants`] finds them all.

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;

/// Makes this process the one that adopts its descendants' orphans.
pub fn adopt_orphans() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    Ok(())
}

/// SIGKILL to every descendant of this process, until none is left; the orphans it adopted are
/// reaped. Call it once the children it waits for itself have ended (their exit statuses are
/// the caller's to collect).
pub fn kill_descendants() {
    let me = std::process::id() as i32;
    for _ in 0..100 {
        let parents = parents();
        let mut found: Vec<i32> = vec![];
        let mut frontier = vec![me];
        while let Some(p) = frontier.pop() {
            for (&child, &(parent, zombie)) in &parents {
                if parent == p && !found.contains(&child) {
                    found.push(child);
                    frontier.push(child);
                    if zombie && parent == me {
                        let _ = waitpid(Pid::from_raw(child), Some(WaitPidFlag::WNOHANG));
                    }
                }
            }
        }
        let alive: Vec<i32> = found
            .into_iter()
            .filter(|p| parents.get(p).is_some_and(|(_, zombie)| !zombie))
            .collect();
        if alive.is_empty() {
            return;
        }
        for pid in alive {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGKILL to every process whose environment holds `entry` (`NAME=value`) and to its process
/// group: what a job's killed runner left behind, found by the variable the runner gives every
/// command it starts. Found this way rather than from a list the runner keeps, a command
/// started a moment before its runner died is not missed, and a process-group number since
/// reused by another process is never signalled.
pub fn kill_by_environment(entry: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut groups = std::collections::BTreeSet::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if !environ.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()) {
            continue;
        }
        let pid = Pid::from_raw(pid);
        if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
            groups.insert(group);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    for group in groups.into_iter().filter(|g| g.as_raw() > 1) {
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    }
}

/// Every process's parent, and whether it is a zombie (from `/proc/<pid>/stat`).
fn parents() -> HashMap<i32, (i32, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: the command may hold spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some((pid, (ppid, state == "Z")))
        })
        .collect()
}
