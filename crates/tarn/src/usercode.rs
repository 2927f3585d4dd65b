//! How the runner, a replica and an instance start user code: the one place that turns the
//! server's isolation answer (`TARN_ISOLATION`) and what a piece of user code is given into a
//! sandbox policy, an identity, and the variables it runs with.

use std::path::{Path, PathBuf};
use tarn_core::isolation::cgroup::Limits;
use tarn_core::isolation::{self, Grants, Identity, Isolation, SandboxPolicy};

/// What user code runs with.
pub(crate) struct UserCode {
    /// `None` when this host isolates nothing (the server warned at start-up).
    pub policy: Option<SandboxPolicy>,
    /// Its own uid, held until it ends; dropping it kills what still runs under it.
    pub identity: Option<Identity>,
    /// Variables to set: `HOME` (its own), `TMPDIR`.
    pub env: Vec<(String, String)>,
}

/// Takes the uid user code will run as, where the host gives it one (`key` spreads the search,
/// `preferred` is tried first), with `limits` on what it may use where the host has control
/// groups. Taking it kills what an earlier holder left running, so take it before writing into
/// folders that user code could write to before.
pub(crate) async fn identity(
    key: &str,
    preferred: Option<u32>,
    limits: Limits,
) -> anyhow::Result<Option<Identity>> {
    let iso = Isolation::from_env();
    if !(iso.identities && iso.namespaces) {
        return Ok(None);
    }
    let key = key.to_string();
    Ok(Some(
        tokio::task::spawn_blocking(move || -> anyhow::Result<Identity> {
            let mut identity = Identity::acquire(&key, preferred)?;
            if let Some(layout) = &iso.cgroups {
                identity.limit(layout, &limits)?;
            }
            Ok(identity)
        })
        .await??,
    ))
}

/// Limits for user code with `cpus` CPUs and `memory_mb` MiB (0: what this machine leaves to
/// user code).
pub(crate) fn limits(cpus: u32, memory_mb: u64) -> Limits {
    let memory_mb = match memory_mb {
        0 => tarn_core::process::user_memory_mb(),
        m => m,
    };
    let cpus = match cpus {
        0 => tarn_core::process::machine_cpus(),
        n => n,
    };
    Limits {
        memory_bytes: memory_mb << 20,
        cpus: f64::from(cpus),
        pids: isolation::MAX_PROCESSES,
    }
}

/// The policy for user code that lives in `own` (its home and `/tmp` are made there), running
/// as `identity`: `grants` plus its home, its `/tmp`, the folders on `path` (interpreters and
/// tools must stay reachable by another identity); `TARN_HOME` hidden.
pub(crate) async fn prepare(
    identity: Option<Identity>,
    tarn_home: Option<&Path>,
    own: &Path,
    mut grants: Grants,
    path: &str,
) -> anyhow::Result<UserCode> {
    let iso = Isolation::from_env();
    if !iso.namespaces && !iso.landlock {
        return Ok(UserCode {
            policy: None,
            identity: None,
            env: vec![],
        });
    }
    let (user_home, tmp) = (own.join("home"), own.join("tmp"));
    for dir in [&user_home, &tmp] {
        tokio::fs::create_dir_all(dir).await?;
    }
    let on_path: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|p| p.is_absolute() && p.is_dir())
        .filter(|p| !grants.read.iter().any(|g| p.starts_with(g)))
        .collect();
    grants.read.extend(on_path);
    grants.write.push(user_home.clone());
    let mut env = vec![("HOME".to_string(), user_home.display().to_string())];
    if iso.namespaces {
        grants.write.push(tmp.clone());
        grants.tmp = Some(tmp);
        env.push(("TMPDIR".into(), "/tmp".into()));
    }
    let policy = iso.policy(identity.as_ref(), tarn_home, grants);
    let to_give = policy.clone();
    tokio::task::spawn_blocking(move || isolation::give(&to_give)).await??;
    Ok(UserCode {
        policy: Some(policy),
        identity,
        env,
    })
}

/// The folders a venv's interpreter needs, and the venv itself, read-only.
pub(crate) fn grant_venv(grants: &mut Grants, venv: &Path) {
    grants.read.push(venv.to_path_buf());
    grants.read.extend(isolation::interpreter_folders(venv));
}
