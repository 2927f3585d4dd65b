//! Isolation of user code on this machine: the one place that decides how jobs' ranks,
//! scoring servers, batch workers and compute instances (JupyterLab, its terminals and kernels,
//! setup scripts) are kept from Tarn's secrets, from the server and from each other.
//!
//! The mechanisms, layered by what the host allows (the threat model is in ARCHITECTURE.md):
//! - **An identity per job, replica or instance** when the server runs as root: a uid (= gid)
//!   from a reserved range, held through a lock file for as long as its owner runs, with no
//!   supplementary groups. Other identities' processes cannot be signalled, traced, or have
//!   their `/proc/<pid>/environ` read. When the owner ends, every process left with that uid is
//!   killed before the uid is free again.
//! - **A mount namespace** (inside a user namespace when not root): `TARN_HOME` is replaced by
//!   an empty folder holding only what this process is granted (its run folder, its read-only
//!   inputs and environment), and `/tmp` is private. Ancestors of the home that others may not
//!   search are opened up in the view (their entries keep their own permissions).
//! - **Landlock**: writes only to the grants, `/tmp` and `/dev`; no signals to, ptrace of, or
//!   abstract sockets of processes outside the sandbox (ABI 6).
//! - **Limits**: no core dumps (they would hold tokens), a per-identity process cap, a lower
//!   CPU priority than the server's, and a higher out-of-memory score (user code dies first);
//!   with identities, a control group per identity caps its memory, CPU time and processes
//!   ([`cgroup`]).
//!
//! The server probes what works once at start-up (`probe`), says so, and hands the answer to
//! the processes it starts (`TARN_ISOLATION`); those build a [`SandboxPolicy`] and start user
//! code through `tarn sandbox` ([`command`]), which applies it ([`enter`]) and executes it.
//! A mechanism the probe found is required from then on: a launch that cannot apply it fails.

pub mod cgroup;
mod enter;
mod identity;
pub mod leftovers;

pub use enter::{enter, give, probe_here};
pub use identity::{Identity, UID_COUNT, UID_FIRST};
pub use tarn_spec::runplan::SandboxPolicy;

use std::path::{Path, PathBuf};

/// The environment variable that carries the probe's answer to runners, replicas, instances.
pub const ENV: &str = "TARN_ISOLATION";

/// What this host lets Tarn use to isolate user code (what `probe` found).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// A uid per job/replica/instance (the server runs as root).
    pub identities: bool,
    /// A mount namespace per process (own view of `TARN_HOME`, private `/tmp`).
    pub namespaces: bool,
    /// Landlock file-system rules.
    pub landlock: bool,
    /// Landlock's scopes (signals, abstract sockets), ABI 6.
    pub scoped: bool,
    /// Where identities' control groups go (set up by the server, which runs as root).
    pub cgroups: Option<cgroup::Layout>,
    /// Why a mechanism is not available, one line each.
    pub missing: Vec<String>,
}

impl Isolation {
    /// Nothing: user code runs as the server does.
    pub fn none(reason: &str) -> Isolation {
        Isolation {
            missing: vec![reason.to_string()],
            ..Default::default()
        }
    }

    /// Does user code run isolated: Tarn's files hidden and the server's processes out of
    /// reach? Either a separate identity with its own view, or its own view and Landlock's
    /// scopes (same uid as the server, so only Landlock keeps it from signalling the server).
    pub fn is_isolated(&self) -> bool {
        self.namespaces && (self.identities || (self.landlock && self.scoped))
    }

    /// The mechanisms in force, as `tarn server status` and the studio show them.
    pub fn mechanisms(&self) -> Vec<&'static str> {
        let mut m = vec![];
        if self.identities {
            m.push("uid per job");
        }
        if self.namespaces {
            m.push("mount namespace");
        }
        if self.landlock {
            m.push(if self.scoped {
                "landlock (files, signals, ptrace)"
            } else {
                "landlock (files, ptrace)"
            });
        }
        if let Some(layout) = &self.cgroups {
            m.push(layout.describe());
        }
        m.push("rlimits");
        m
    }

    /// One line for people: what holds, or the warning.
    pub fn summary(&self) -> String {
        if self.is_isolated() {
            let mut line = format!("user code is isolated: {}", self.mechanisms().join(", "));
            if !self.missing.is_empty() {
                line.push_str(&format!(" (not in force: {})", self.missing.join("; ")));
            }
            line
        } else {
            format!(
                "user code is not isolated: jobs, notebooks and scoring code can read Tarn's files and reach the server's processes ({})",
                self.missing.join("; ")
            )
        }
    }

    /// The value of [`ENV`].
    pub fn to_env(&self) -> String {
        let mut parts = vec![];
        if self.identities {
            parts.push("identities");
        }
        if self.namespaces {
            parts.push("namespaces");
        }
        if self.landlock {
            parts.push("landlock");
        }
        if self.scoped {
            parts.push("scoped");
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(",")
        }
    }

    /// The variables that hand this answer to a runner, replica or instance on this machine.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![(ENV, self.to_env())];
        if let Some(layout) = &self.cgroups {
            env.push((cgroup::ENV, layout.to_env()));
        }
        env
    }

    /// Reads [`ENV`]; unset means nothing is available (never assumed stronger). `probe`
    /// (a runner on an engine's node, which may differ from the server's machine) probes this
    /// host once.
    pub fn from_env() -> Isolation {
        let value = std::env::var(ENV).unwrap_or_default();
        if value == "probe" {
            static PROBED: std::sync::OnceLock<Isolation> = std::sync::OnceLock::new();
            return PROBED
                .get_or_init(|| Isolation::probe(&own_program()))
                .clone();
        }
        Isolation {
            cgroups: cgroup::Layout::from_env(),
            ..Isolation::from_env_value(&value)
        }
    }

    fn from_env_value(value: &str) -> Isolation {
        let has = |m: &str| value.split(',').any(|p| p == m);
        Isolation {
            identities: has("identities"),
            namespaces: has("namespaces"),
            landlock: has("landlock"),
            scoped: has("scoped"),
            cgroups: None,
            missing: vec![],
        }
    }

    /// Runs `tarn sandbox --probe` (a child, so nothing changes here) and reads its answer.
    pub fn probe(tarn_program: &Path) -> Isolation {
        let out = std::process::Command::new(tarn_program)
            .args(["sandbox", "--probe"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        match out {
            Ok(out) => Isolation::parse_probe(&String::from_utf8_lossy(&out.stdout))
                .unwrap_or_else(|| Isolation::none("the isolation probe gave no answer")),
            Err(e) => Isolation::none(&format!("the isolation probe could not start: {e}")),
        }
    }

    /// The probe's answer: `key=yes|no` lines, then `missing=<reason>` lines.
    pub(crate) fn parse_probe(text: &str) -> Option<Isolation> {
        let mut iso = Isolation::default();
        let mut seen = false;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let yes = v == "yes";
            match k {
                "identities" => iso.identities = yes,
                "namespaces" => iso.namespaces = yes,
                "landlock" => iso.landlock = yes,
                "scoped" => iso.scoped = yes,
                "missing" => iso.missing.push(v.to_string()),
                "done" => seen = true,
                _ => {}
            }
        }
        seen.then_some(iso)
    }

    /// The policy for a piece of user code with these mechanisms: `home` hidden but for the
    /// grants, `tmp` as its `/tmp`, running in `cwd` as `identity` (when identities are used).
    pub fn policy(
        &self,
        identity: Option<&Identity>,
        home: Option<&Path>,
        grants: Grants,
    ) -> SandboxPolicy {
        let text = |p: &PathBuf| p.display().to_string();
        // An identity of its own needs its own view too: without one it could not reach its
        // run folder inside the private home.
        let uid = identity
            .filter(|_| self.identities && self.namespaces)
            .map(|i| i.uid());
        SandboxPolicy {
            uid,
            namespaces: self.namespaces,
            landlock: self.landlock,
            hidden: home.map(|h| h.display().to_string()),
            read: grants.read.iter().map(text).collect(),
            write: grants.write.iter().map(text).collect(),
            tmp: grants.tmp.as_ref().map(text),
            cwd: text(&grants.cwd),
            max_processes: uid.map(|_| MAX_PROCESSES),
            cgroup_procs: identity
                .filter(|_| uid.is_some())
                .map_or(vec![], Identity::cgroup_procs),
        }
    }
}

/// Processes one identity may have at once: enough for data loaders and notebooks' kernels,
/// not enough for a fork bomb to take the machine.
pub const MAX_PROCESSES: u64 = 4096;

/// What one piece of user code is given.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub tmp: Option<PathBuf>,
    pub cwd: PathBuf,
}

/// `program args…` as a command that runs under `policy` (through `tarn sandbox`; its writable
/// grants given to its identity with [`give`] first), or as it is when there is no policy. The caller adds the environment, the standard streams and waits.
/// This program as the kernel runs it: still there when its file was replaced meanwhile (a
/// node's cached `tarn`, which another job's first fetch on that node may have renamed over).
fn own_program() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

pub fn command(
    policy: Option<&SandboxPolicy>,
    program: impl AsRef<std::ffi::OsStr>,
) -> std::io::Result<tokio::process::Command> {
    let Some(policy) = policy else {
        return Ok(tokio::process::Command::new(program));
    };
    let mut cmd = tokio::process::Command::new(own_program());
    cmd.arg("sandbox")
        .arg("--policy")
        .arg(serde_json::to_string(policy).expect("a policy serialises"))
        .arg("--")
        .arg(program);
    Ok(cmd)
}

/// The folder that holds a venv's interpreter (its `bin/python` resolved, two levels up, e.g.
/// `/usr` or `~/.pyenv/versions/3.11.7`): user code must read it to run the venv.
pub fn interpreter_folders(venv: &Path) -> Vec<PathBuf> {
    std::fs::canonicalize(venv.join("bin/python"))
        .ok()
        .and_then(|python| Some(python.parent()?.parent()?.to_path_buf()))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answer_round_trips_through_the_environment_value() {
        let cases = [
            (
                "identities=yes\nnamespaces=yes\nlandlock=yes\nscoped=yes\ndone=yes\n",
                true,
                "identities,namespaces,landlock,scoped",
            ),
            (
                "identities=no\nnamespaces=yes\nlandlock=yes\nscoped=yes\ndone=yes\n",
                true,
                "namespaces,landlock,scoped",
            ),
            (
                "identities=no\nnamespaces=yes\nlandlock=yes\nscoped=no\ndone=yes\n",
                false,
                "namespaces,landlock",
            ),
            (
                "identities=yes\nnamespaces=no\nmissing=unshare: EPERM\ndone=yes\n",
                false,
                "identities",
            ),
            (
                "identities=no\nnamespaces=no\nlandlock=no\nscoped=no\ndone=yes\n",
                false,
                "none",
            ),
        ];
        for (text, isolated, env) in cases {
            let iso = Isolation::parse_probe(text).unwrap();
            assert_eq!(iso.is_isolated(), isolated, "{text}");
            assert_eq!(iso.to_env(), env, "{text}");
            let parsed = Isolation {
                missing: iso.missing.clone(),
                ..Isolation::from_env_value(&iso.to_env())
            };
            assert_eq!(parsed, iso, "{text}");
            assert_eq!(
                iso.summary().starts_with("user code is not isolated"),
                !isolated,
                "{text}"
            );
        }
        assert!(
            Isolation::parse_probe("identities=yes\n").is_none(),
            "a cut-off answer is none"
        );
    }
}
