//! How the runner, a replica and an instance start user code: the one place that turns the
//! server's isolation answer (`TARN_ISOLATION`) and what a piece of user code is given into a
//! sandbox policy, an identity, and the variables it runs with.

use std::path::{Path, PathBuf};
use tarn_core::isolation::{self, Grants, Identity, Isolation, SandboxPolicy};

/// What user code runs with.
pub(crate) struct UserCode {
    /// `None` when this host isolates nothing (the server warned at start-up).
    pub policy: Option<SandboxPolicy>,
    /// Its own uid, held until it ends; release it once its processes are gone.
    pub identity: Option<Identity>,
    /// Variables to set: `HOME` (its own), `TMPDIR`.
    pub env: Vec<(String, String)>,
}

/// The policy for user code that lives in `own` (its home and `/tmp` are made there):
/// `grants` plus its home, its `/tmp`, the folders on `path` (interpreters and tools must stay
/// reachable by another identity); `TARN_HOME` hidden; its own uid (`key` spreads the search,
/// `preferred` is tried first) where the host allows.
pub(crate) async fn prepare(
    key: &str,
    preferred: Option<u32>,
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
    grants.read.extend(
        std::env::split_paths(path)
            .filter(|p| p.is_absolute() && p.is_dir())
            .collect::<Vec<PathBuf>>(),
    );
    grants.write.push(user_home.clone());
    let mut env = vec![("HOME".to_string(), user_home.display().to_string())];
    if iso.namespaces {
        grants.write.push(tmp.clone());
        grants.tmp = Some(tmp);
        env.push(("TMPDIR".into(), "/tmp".into()));
    }
    let identity = if iso.identities && iso.namespaces {
        let key = key.to_string();
        Some(tokio::task::spawn_blocking(move || Identity::acquire(&key, preferred)).await??)
    } else {
        None
    };
    let policy = iso.policy(identity.as_ref(), tarn_home, grants);
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
