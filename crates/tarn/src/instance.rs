//! `tarn instance`: one compute instance's JupyterLab, started by the server's instance
//! controller. It reads the instance plan, builds the instance's own environment (JupyterLab,
//! ipykernel, mlflow-skinny; its own copy, so `%pip install` in a notebook stays in it), runs
//! the setup scripts in the user's folder, and runs `jupyter lab` on 127.0.0.1 under the
//! plan's `base_url`. JupyterLab trusts only requests with the secret the server gave this
//! process (kept in a private config file, never on a command line), which Tarn's proxy adds;
//! its kernels see `MLFLOW_TRACKING_URI` and a token acting for the user. Like a replica, it
//! is tied to the server (`tied.rs`).

use crate::runner::{Log, prepare_env};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tarn_core::isolation;
use tarn_spec::runplan::InstancePlan;

/// The identity provider JupyterLab runs with: it trusts Tarn's proxy's secret header.
const IDENTITY_PROVIDER: &str = include_str!("tarn_identity.py");

#[derive(clap::Args)]
pub struct InstanceCmd {
    #[arg(long)]
    pub server: String,
    /// The instance plan the server wrote (its folder is the instance's own).
    #[arg(long)]
    pub plan: PathBuf,
    #[arg(long)]
    pub port: u16,
}

pub async fn run(cmd: InstanceCmd) -> anyhow::Result<ExitCode> {
    let api_token = std::env::var("TARN_RUNNER_TOKEN").context("TARN_RUNNER_TOKEN is not set")?;
    let lab_token = std::env::var("TARN_JUPYTER_TOKEN").context("TARN_JUPYTER_TOKEN is not set")?;
    let home = std::env::var_os("TARN_HOME").map(PathBuf::from);
    let plan: InstancePlan = serde_json::from_slice(
        &std::fs::read(&cmd.plan).with_context(|| format!("reading {}", cmd.plan.display()))?,
    )
    .context("the instance plan is unreadable")?;
    let dir = cmd.plan.parent().unwrap_or(Path::new(".")).to_path_buf();
    let log = Log::create(&dir.join("instance.log"))?;
    log.note(&format!(
        "JupyterLab in {} for {}",
        plan.root_dir, plan.user
    ));
    // The instance's own uid, held while it runs (what runs under it dies when it is dropped).
    let mut identity = None;
    crate::tied::run(
        "JupyterLab",
        prepare(
            &plan,
            &dir,
            &cmd,
            &api_token,
            &lab_token,
            home.as_deref(),
            &log,
            &mut identity,
        ),
        &log,
    )
    .await
}

/// Builds the environment, runs the setup scripts, writes JupyterLab's configuration; returns
/// the `jupyter lab` command.
#[allow(clippy::too_many_arguments)] // the instance's inputs, each once; a struct would only rename them
async fn prepare(
    plan: &InstancePlan,
    dir: &Path,
    cmd: &InstanceCmd,
    api_token: &str,
    lab_token: &str,
    home: Option<&Path>,
    log: &Log,
    held: &mut Option<isolation::Identity>,
) -> anyhow::Result<tokio::process::Command> {
    // The instance keeps its uid across restarts when it is free, so its files stay its own.
    // It is taken first: taking it kills what the last run left behind (kernels start their
    // own sessions), before this process touches the folders user code could write to.
    let uid_file = dir.join("uid");
    let preferred = std::fs::read_to_string(&uid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let identity = crate::usercode::identity(
        &format!("instance:{}", dir.display()),
        preferred,
        crate::usercode::limits(0, 0),
    )
    .await?;
    if let Some(identity) = &identity {
        tokio::fs::write(&uid_file, identity.uid().to_string()).await?;
    }
    let venv = prepare_env(&plan.environment, &dir.join("envs"), home, log)
        .await
        .context("building the instance's environment")?
        .context("the instance's environment has no packages")?;
    let root = PathBuf::from(&plan.root_dir);
    tokio::fs::create_dir_all(&root)
        .await
        .with_context(|| format!("creating {}", root.display()))?;
    // What the user's processes (setup scripts, JupyterLab, kernels) see.
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("TARN_") && !k.starts_with("JUPYTER"))
        .collect();
    let path = std::env::var("PATH").unwrap_or_default();
    vars.retain(|(k, _)| k != "PATH");
    vars.extend([
        (
            "PATH".into(),
            format!("{}:{path}", venv.join("bin").display()),
        ),
        ("VIRTUAL_ENV".into(), venv.display().to_string()),
        ("MLFLOW_TRACKING_URI".into(), plan.tracking_uri.clone()),
        ("MLFLOW_TRACKING_TOKEN".into(), api_token.to_string()),
        ("AZUREML_WORKSPACE_NAME".into(), plan.workspace.clone()),
        ("CI_NAME".into(), plan.name.clone()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ]);
    // JupyterLab's own folders are the user's (settings, kernels, runtime files); what this
    // process writes for JupyterLab (its configuration with the secret, the identity provider)
    // goes to `lab/`, which the user's processes can read but not change, so no link a user
    // left in their folders can turn this process's writes elsewhere.
    let jupyter = dir.join("jupyter");
    make_dir(&jupyter)?;
    for sub in ["config", "data", "runtime"] {
        make_dir(&jupyter.join(sub))?;
    }
    // Earlier versions wrote the configuration into the user's config folder, where it would
    // now override `lab/`'s (an old port and secret). Removing a file never follows its link.
    let config_dir = jupyter.join("config");
    if std::fs::symlink_metadata(&config_dir).is_ok_and(|m| m.is_dir()) {
        let _ = std::fs::remove_file(config_dir.join("jupyter_server_config.json"));
    }
    let lab = dir.join("lab");
    make_dir(&lab)?;
    // What the user's processes may touch: their folder, the instance's own environment
    // (`%pip install`) and JupyterLab's folders.
    let mut grants = isolation::Grants {
        read: vec![lab.clone()],
        write: vec![root.clone(), dir.join("envs"), jupyter.clone()],
        cwd: root.clone(),
        ..Default::default()
    };
    grants.read.extend(isolation::interpreter_folders(&venv));
    let path = vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let uid = identity.as_ref().map(|i| i.uid());
    let user = crate::usercode::prepare(identity, home, dir, grants, &path).await?;
    vars.retain(|(k, _)| !user.env.iter().any(|(e, _)| e == k));
    vars.extend(user.env.iter().cloned());
    *held = user.identity;
    let policy = user.policy;
    vars.extend([
        (
            "JUPYTER_CONFIG_DIR".into(),
            jupyter.join("config").display().to_string(),
        ),
        ("JUPYTER_CONFIG_PATH".into(), lab.display().to_string()),
        (
            "JUPYTER_DATA_DIR".into(),
            jupyter.join("data").display().to_string(),
        ),
        (
            "JUPYTER_RUNTIME_DIR".into(),
            jupyter.join("runtime").display().to_string(),
        ),
    ]);
    for script in &plan.setup {
        let marker = dir.join("created");
        if script.once && marker.exists() {
            continue;
        }
        let what = if script.once {
            "creation_script"
        } else {
            "startup_script"
        };
        let mut sh = isolation::command(policy.as_ref(), "bash")?;
        match (&script.command, &script.path) {
            (Some(command), _) => sh.arg("-c").arg(command),
            (None, Some(path)) => sh.arg(root.join(path)),
            (None, None) => continue,
        };
        log.note(&format!("running the {what}"));
        let out_log = std::fs::OpenOptions::new().append(true).open(log.path())?;
        sh.current_dir(&root)
            .env_clear()
            .envs(vars.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(out_log.try_clone()?)
            .stderr(out_log);
        let status = tokio::time::timeout(Duration::from_secs(script.timeout_s), sh.status())
            .await
            .with_context(|| format!("the {what} ran past {} s", script.timeout_s))??;
        if !status.success() {
            bail!("the {what} failed ({status})");
        }
        if script.once {
            tokio::fs::write(&marker, b"").await?;
        }
    }
    // JupyterLab trusts only Tarn's proxy, which sends the secret in a header; the secret
    // lives in a file only this user can read, not on a command line.
    write_private(
        &lab.join("tarn_identity.py"),
        IDENTITY_PROVIDER.as_bytes(),
        uid,
    )?;
    vars.push(("PYTHONPATH".into(), lab.display().to_string()));
    let config = serde_json::json!({
        "TarnIdentityProvider": { "secret": lab_token, "username": plan.user, "token": "" },
        "ServerApp": {
            "identity_provider_class": "tarn_identity.TarnIdentityProvider",
            // Tarn checks CSRF (SameSite=Strict session cookies; API clients send bearer
            // tokens, which a foreign page cannot).
            "disable_check_xsrf": true,
            "ip": "127.0.0.1",
            "port": cmd.port,
            "port_retries": 0,
            "open_browser": false,
            "base_url": plan.base_url,
            "root_dir": plan.root_dir,
            // Requests come through Tarn's proxy, which keeps the browser's Host header.
            "allow_remote_access": true,
            "allow_root": true,
        },
    });
    write_private(
        &lab.join("jupyter_server_config.json"),
        &serde_json::to_vec_pretty(&config)?,
        uid,
    )?;
    let mut command = isolation::command(policy.as_ref(), venv.join("bin/jupyter"))?;
    command
        .args(["lab", "--no-browser"])
        .current_dir(&root)
        .env_clear()
        .envs(vars);
    Ok(command)
}

/// Writes a file only `uid` (the instance's identity, else this process's user) may read.
fn write_private(path: &Path, bytes: &[u8], uid: Option<u32>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    if let Some(uid) = uid {
        std::os::unix::fs::fchown(&f, Some(uid), Some(uid))?;
    }
    f.write_all(bytes)?;
    Ok(())
}

/// Makes a folder unless something is there already; never follows a link (the instance's
/// user may have left one where a folder was).
fn make_dir(path: &Path) -> anyhow::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("creating {}", path.display()))
        }
        _ => Ok(()),
    }
}
