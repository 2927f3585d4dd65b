//! `tarn replica`: one replica of an online deployment, started by the server's endpoint
//! controller. It reads the serve plan the server wrote, downloads the model and the scoring
//! code with the deployment's token (or links them, for datastores on this machine), builds
//! the environment with the jobs' environment builder, and runs the scoring server
//! (`scoring_server.py`, embedded in this binary) in it, tied to the server (`tied.rs`): it
//! exits when the scoring server does, and stops it when the Tarn server is gone.

use crate::client::Client;
use crate::runner::{Log, fetch, prepare_env};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tarn_core::isolation;
use tarn_spec::runplan::{EnvSpec, Location, ServePlan};

const SCORING_SERVER: &str = include_str!("scoring_server.py");

#[derive(clap::Args)]
pub struct ReplicaCmd {
    #[arg(long)]
    pub server: String,
    /// The serve plan the server wrote (its folder is the replica's working folder).
    #[arg(long)]
    pub plan: PathBuf,
    #[arg(long)]
    pub port: u16,
    /// The address the scoring server listens on (a pod's own address on Kubernetes).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Where environments are cached.
    #[arg(long)]
    pub envs: PathBuf,
    /// The replica's log (also its standard output).
    #[arg(long)]
    pub log: PathBuf,
}

pub async fn run(cmd: ReplicaCmd) -> anyhow::Result<ExitCode> {
    let token = std::env::var("TARN_RUNNER_TOKEN").context("TARN_RUNNER_TOKEN is not set")?;
    let home = std::env::var_os("TARN_HOME").map(PathBuf::from);
    let plan: ServePlan = serde_json::from_slice(
        &std::fs::read(&cmd.plan).with_context(|| format!("reading {}", cmd.plan.display()))?,
    )
    .context("the serve plan is unreadable")?;
    let dir = cmd.plan.parent().unwrap_or(Path::new(".")).to_path_buf();
    let log = Log::create(&cmd.log)?;
    let client = Client::new(
        Some(&cmd.server),
        Some(&token),
        home.as_deref().unwrap_or(Path::new(".")),
    )?;
    // The replica's own uid, held while it runs (what runs under it dies when it is dropped).
    let mut identity = None;
    crate::tied::run(
        "scoring server",
        prepare(
            &client,
            &plan,
            &dir,
            &cmd,
            home.as_deref(),
            &log,
            &mut identity,
        ),
        &log,
    )
    .await
}

/// Materialises the model and code, builds the environment; returns the scoring server's command.
async fn prepare(
    client: &Client,
    plan: &ServePlan,
    dir: &Path,
    cmd: &ReplicaCmd,
    home: Option<&Path>,
    log: &Log,
    held: &mut Option<isolation::Identity>,
) -> anyhow::Result<tokio::process::Command> {
    let mut vars: Vec<(String, String)> = vec![("PORT".into(), cmd.port.to_string())];
    // What the scoring code may see: its folder (model, code) read-only, its own home and
    // `/tmp`; `TARN_HOME` is otherwise hidden.
    let mut grants = isolation::Grants {
        read: vec![dir.to_path_buf()],
        ..Default::default()
    };
    let model_root = dir.join("model");
    let mut mlflow_model = None;
    if let Some(model) = &plan.model {
        // AZUREML_MODEL_DIR keeps the last segment of the registered path, as in Azure ML.
        let (target, linked) =
            materialise(client, &plan.workspace, &model.location, &model_root, log)
                .await
                .context("the model")?;
        grants.read.extend(linked);
        vars.push(("AZUREML_MODEL_DIR".into(), model_root.display().to_string()));
        if model.type_ == "mlflow_model" {
            mlflow_model = Some(target);
        }
    }
    let mut workdir = dir.to_path_buf();
    if let (Some(code), Some(script)) = (&plan.code, &plan.scoring_script) {
        let (code_dir, linked) = materialise(client, &plan.workspace, code, &dir.join("code"), log)
            .await
            .context("the scoring code")?;
        grants.read.extend(linked);
        let entry = code_dir.join(script);
        if !entry.is_file() {
            bail!(
                "the scoring script {script:?} is not in the code folder (code_configuration.scoring_script)"
            );
        }
        vars.push(("AZUREML_ENTRY_SCRIPT".into(), entry.display().to_string()));
        workdir = code_dir;
    } else if let Some(target) = &mlflow_model {
        vars.push(("TARN_MLFLOW_MODEL".into(), target.display().to_string()));
    }
    let env = match (&plan.environment, &mlflow_model) {
        (Some(env), _) => env.clone(),
        (None, Some(model)) => mlflow_environment(model, log)?,
        (None, None) => bail!("the deployment has no environment"),
    };
    let venv = prepare_env(&env, &cmd.envs, home, log)
        .await
        .context("building the environment")?;
    let python = match &venv {
        Some(v) => v.join("bin/python"),
        None => crate::runner::host_python(),
    };
    let server = dir.join("tarn_scoring_server.py");
    tokio::fs::write(&server, SCORING_SERVER).await?;
    if let Some(v) = &venv {
        crate::usercode::grant_venv(&mut grants, v);
    }
    grants.cwd = workdir.clone();
    let path = std::env::var("PATH").unwrap_or_default();
    let identity = crate::usercode::identity(
        &format!("replica:{}", dir.display()),
        None,
        crate::usercode::limits(0, 0),
    )
    .await?;
    let user = crate::usercode::prepare(identity, home, dir, grants, &path).await?;
    *held = user.identity;
    vars.extend(user.env);
    let mut command = isolation::command(user.policy.as_ref(), &python)?;
    command
        .arg(&server)
        .arg(&cmd.bind)
        .current_dir(&workdir)
        .env("PYTHONUNBUFFERED", "1")
        .envs(plan.environment_variables.iter())
        .envs(vars);
    if let Some(v) = &venv {
        command.env("VIRTUAL_ENV", v);
    }
    // The user's code gets neither the replica's token nor where the server keeps its files.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TARN_") {
            command.env_remove(k);
        }
    }
    Ok(command)
}

/// Puts a datastore location under `root`, keeping its last segment; returns that path and,
/// for a datastore on this machine (linked, not copied), the linked folder.
async fn materialise(
    client: &Client,
    workspace: &str,
    loc: &Location,
    root: &Path,
    log: &Log,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let name = loc
        .path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("model")
        .to_string();
    let target = root.join(&name);
    let linked = loc
        .local_path
        .as_ref()
        .map(PathBuf::from)
        .filter(|l| l.exists());
    if target.exists() || target.is_symlink() {
        if target.is_dir() && !target.is_symlink() {
            tokio::fs::remove_dir_all(&target).await?;
        } else {
            tokio::fs::remove_file(&target).await?;
        }
    }
    tokio::fs::create_dir_all(root).await?;
    if let Some(local) = loc.local_path.as_ref().map(PathBuf::from)
        && local.exists()
    {
        log.note(&format!(
            "{}/{}: linked from {}",
            loc.datastore,
            loc.path,
            local.display()
        ));
        tokio::fs::symlink(&local, &target).await?;
        return Ok((target, linked));
    }
    // A shared model's files are read in its registry.
    let workspace = loc.workspace.as_deref().unwrap_or(workspace);
    let files = crate::transfer::remote_files(client, workspace, &loc.datastore, &loc.path).await?;
    let is_file = files.len() == 1 && files[0].path == loc.path.trim_end_matches('/');
    if is_file {
        fetch(client, workspace, loc, root, false, log).await?;
    } else {
        fetch(client, workspace, loc, &target, true, log).await?;
    }
    Ok((target, None))
}

/// The environment of an MLflow model deployed with no environment, from its own files.
fn mlflow_environment(model: &Path, log: &Log) -> anyhow::Result<EnvSpec> {
    let read = |name: &str| std::fs::read_to_string(model.join(name)).ok();
    if !model.join("MLmodel").is_file() {
        bail!(
            "the model is registered as an mlflow_model but has no MLmodel file at {}",
            model.display()
        );
    }
    let (requirements, python_env, conda, mlmodel) = (
        read("requirements.txt"),
        read("python_env.yaml"),
        read("conda.yaml"),
        read("MLmodel"),
    );
    let env = tarn_spec::envplan::mlflow_model_environment(&tarn_spec::envplan::MlflowModelFiles {
        requirements: requirements.as_deref(),
        python_env: python_env.as_deref(),
        conda: conda.as_deref(),
        mlmodel: mlmodel.as_deref(),
    });
    let plan = tarn_spec::envplan::plan(&env)
        .map_err(|e| anyhow::anyhow!("the MLflow model's requirements: {e}"))?;
    log.note(&format!(
        "environment from the MLflow model's requirements: {}",
        plan.requirements.join(" ")
    ));
    Ok(EnvSpec::of(&plan, &env))
}
