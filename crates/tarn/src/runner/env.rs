//! Python environments for jobs: a venv per environment plan, named by the plan's content hash
//! under `TARN_HOME/envs`, built with `uv` (or `python -m venv` + pip, with a warning, where uv
//! is missing). A file lock makes concurrent jobs that need the same new environment build it
//! once: the first builds, the rest wait and reuse it. A marker file written last says a build
//! is complete; a half-built folder (a crash mid-build) is rebuilt.

use super::log::Log;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tarn_spec::runplan::EnvSpec;
use tokio::io::{AsyncBufReadExt, BufReader};

const READY: &str = tarn_core::jobs::ENV_READY;

/// The `uv` to build with: `TARN_UV`, then `PATH`, then the one `tarn setup` installs.
pub fn find_uv(home: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TARN_UV")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return Some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("uv");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    home.map(|h| h.join("tools/bin/uv")).filter(|p| p.is_file())
}

/// Set (to the image's name) where the runner runs in the environment's image.
const IN_IMAGE: &str = "TARN_IN_IMAGE";

/// The host's Python interpreter.
pub fn host_python() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            for name in ["python3", "python"] {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from("python3")
}

/// Makes the environment ready; returns the venv folder, or `None` to run on the host Python.
pub async fn prepare(
    spec: &EnvSpec,
    envs: &Path,
    home: Option<&Path>,
    log: &Log,
) -> anyhow::Result<Option<PathBuf>> {
    for note in &spec.notes {
        log.note(&format!("warning: {note}"));
    }
    if spec.requirements.is_empty() && spec.python.is_none() {
        // In a container (a Kubernetes pod) the Python found is the image's own.
        match (&spec.image, std::env::var(IN_IMAGE).ok()) {
            (Some(_), Some(image)) => {
                log.note(&format!("environment: the image's Python ({image})"))
            }
            (Some(_), None) => {
                log.note(
                    "warning: the image is not used here (only Kubernetes computes run images): the job runs on the host Python",
                );
                log.note("environment: the host Python (no packages asked for)");
            }
            (None, _) => log.note("environment: the host Python (no packages asked for)"),
        }
        return Ok(None);
    }
    let dir = envs.join(&spec.hash);
    if dir.join(READY).is_file() {
        log.note(&format!("environment {}: cached", spec.hash));
        return Ok(Some(dir));
    }
    tokio::fs::create_dir_all(envs).await?;
    let lock_path = envs.join(format!("{}.lock", spec.hash));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    // Said only when another job holds the lock (it is building this environment now).
    let lock = match lock.try_lock() {
        Ok(()) => lock,
        Err(std::fs::TryLockError::WouldBlock) => {
            log.note(&format!(
                "environment {}: another job is building it; waiting",
                spec.hash
            ));
            tokio::task::spawn_blocking(move || lock.lock().map(|_| lock)).await??
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    };
    if dir.join(READY).is_file() {
        log.note(&format!(
            "environment {}: built by another job; reusing it",
            spec.hash
        ));
        drop(lock);
        return Ok(Some(dir));
    }
    let result = build(spec, &dir, home, log).await;
    drop(lock);
    match result {
        Ok(()) => Ok(Some(dir)),
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            Err(e)
        }
    }
}

async fn build(spec: &EnvSpec, dir: &Path, home: Option<&Path>, log: &Log) -> anyhow::Result<()> {
    if dir.exists() {
        log.note("removing an unfinished earlier build");
        tokio::fs::remove_dir_all(dir).await?;
    }
    let started = std::time::Instant::now();
    log.note(&format!(
        "building environment {} (Python {}, {} packages: {})",
        spec.hash,
        spec.python.as_deref().unwrap_or("host"),
        spec.requirements.len(),
        spec.requirements.join(" ")
    ));
    for index in &spec.indexes {
        log.note(&format!(
            "package index {} (connection {})",
            index.url, index.connection
        ));
    }
    let host = host_python();
    let python_bin = dir.join("bin/python");
    // Set when the Python asked for could not be had and the host's is used instead: a
    // failed package install then says so first.
    let mut mismatch: Option<String> = None;
    match find_uv(home) {
        Some(uv) => {
            let mut made = false;
            if let Some(version) = &spec.python {
                made = python_venv(&uv, version, dir, log).await;
                if !made {
                    let line = format!(
                        "Python {version} was asked for, but this machine has no Python {version} and uv could not install one; using the host's Python {} ({})",
                        host_version(&host).await,
                        host.display()
                    );
                    log.note(&format!("warning: {line}"));
                    mismatch = Some(line);
                }
            }
            if !made {
                let mut cmd = tokio::process::Command::new(&uv);
                cmd.args(["venv", "--quiet", "--python"])
                    .arg(&host)
                    .arg(dir);
                run_logged(cmd, log).await.context("creating the venv")?;
            }
            if !spec.requirements.is_empty() {
                let reqs = dir.join("requirements.txt");
                tokio::fs::write(&reqs, spec.requirements.join("\n") + "\n").await?;
                let mut cmd = tokio::process::Command::new(&uv);
                cmd.args(["pip", "install", "--python"])
                    .arg(&python_bin)
                    .arg("-r")
                    .arg(&reqs);
                // The workspace's package feeds come first; their credentials go in uv's
                // per-index variables, never on a command line.
                for (i, index) in spec.indexes.iter().enumerate() {
                    let name = format!("feed{i}");
                    cmd.arg("--index").arg(format!("{name}={}", index.url));
                    let var = |what: &str| format!("UV_INDEX_{}_{what}", name.to_uppercase());
                    if let (Some(user), Some(pass)) = (&index.username, &index.password) {
                        cmd.env(var("USERNAME"), user).env(var("PASSWORD"), pass);
                    }
                }
                let installed = run_logged(cmd, log).await;
                if let (Err(e), Some(why)) = (&installed, &mismatch) {
                    bail!(
                        "the packages did not install, probably because they are pinned for another Python: {why}. Make the pins fit the host's Python, or install the Python asked for on this machine ({e})"
                    );
                }
                installed.context("installing the packages")?;
            }
        }
        None => {
            log.note("warning: uv is not installed; building with `python -m venv` and pip (much slower). Run `tarn setup` to install uv.");
            let mut cmd = tokio::process::Command::new(&host);
            cmd.args(["-m", "venv"]).arg(dir);
            run_logged(cmd, log).await.context("creating the venv")?;
            if !spec.requirements.is_empty() {
                let reqs = dir.join("requirements.txt");
                tokio::fs::write(&reqs, spec.requirements.join("\n") + "\n").await?;
                let mut cmd = tokio::process::Command::new(dir.join("bin/pip"));
                cmd.args(["install", "--disable-pip-version-check", "-r"])
                    .arg(&reqs);
                for index in &spec.indexes {
                    // pip takes credentials only in the URL (and hides them when it prints it).
                    cmd.arg("--extra-index-url")
                        .arg(index.url_with_credentials());
                }
                run_logged(cmd, log)
                    .await
                    .context("installing the packages")?;
            }
        }
    }
    tokio::fs::write(dir.join(READY), format!("{}\n", spec.hash)).await?;
    log.note(&format!(
        "environment {} built in {:.1} s",
        spec.hash,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// A venv on the Python `version` asked for: one installed on the machine, else one uv
/// installs (a managed interpreter, where uv can download it). False when neither can be had.
async fn python_venv(uv: &Path, version: &str, dir: &Path, log: &Log) -> bool {
    let venv = |preference: &str| {
        let mut cmd = tokio::process::Command::new(uv);
        cmd.args([
            "venv",
            "--quiet",
            "--python-preference",
            preference,
            "--python",
            version,
        ])
        .arg(dir);
        cmd
    };
    if quietly(venv("only-system")).await {
        return true;
    }
    log.note(&format!(
        "Python {version} is not installed here; asking uv to install it"
    ));
    let mut install = tokio::process::Command::new(uv);
    install.args(["python", "install", version]);
    // Without a route to uv's downloads this fails; it must not hold the job for long.
    let installed = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        run_logged(install, log),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    installed && run_logged(venv("only-managed"), log).await.is_ok()
}

/// Runs a command, its output discarded; true when it succeeds.
async fn quietly(mut cmd: tokio::process::Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The host Python's version (`3.11.7`), for messages.
async fn host_version(python: &Path) -> String {
    tokio::process::Command::new(python)
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .await
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Runs a build step with its output in the job's log; fails with the exit status.
async fn run_logged(mut cmd: tokio::process::Command, log: &Log) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the environment build")?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let copy = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, log: Log| async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.write(format!("[env] {line}\n").as_bytes());
        }
    };
    let (status, _, _) = tokio::join!(
        child.wait(),
        copy(Box::new(out), log.clone()),
        copy(Box::new(err), log.clone())
    );
    let status = status?;
    if !status.success() {
        bail!("the environment build step failed ({status})");
    }
    Ok(())
}

/// The environment's packages for a Spark cluster's executors (`$TARN_SPARK_ENV`): its
/// `site-packages` as a `.tar.gz`, less `pyspark` and `py4j` (every worker has its own), made
/// once per environment, next to it. Executors unpack it in their folder and put it first on
/// their Python path (see tarn-core's `jobs::spark`): they run their worker's Python, which
/// Spark requires to be the driver's version, with the job's packages. Packages that only a
/// `.pth` file makes importable (editable installs) are not found there. Without a venv (the
/// host's Python) the archive is empty, in `scratch`.
pub async fn spark_archive(venv: Option<&Path>, scratch: &Path) -> anyhow::Result<PathBuf> {
    const NAME: &str = "tarn-spark-env.tar.gz";
    let (site, dest) = match venv {
        Some(venv) => (site_packages(venv), venv.join(NAME)),
        None => (None, scratch.join(NAME)),
    };
    if dest.is_file() {
        return Ok(dest);
    }
    let folder = dest.parent().context("an archive's folder")?.to_path_buf();
    let made = dest.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let tmp = tempfile::NamedTempFile::new_in(&folder)?;
        let gz = flate2::write::GzEncoder::new(tmp.reopen()?, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        for entry in site.iter().flat_map(std::fs::read_dir).flatten().flatten() {
            let name = entry.file_name();
            let lower = name.to_string_lossy().to_ascii_lowercase();
            if lower.starts_with("pyspark") || lower.starts_with("py4j") {
                continue;
            }
            if entry.file_type()?.is_dir() {
                tar.append_dir_all(&name, entry.path())?;
            } else {
                tar.append_path_with_name(entry.path(), &name)?;
            }
        }
        tar.into_inner()?.finish()?.sync_all()?;
        // Read by the job's own identity (`spark-submit` ships it).
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        // Whole or absent: another job packing the same environment renames over it.
        tmp.persist(&made)?;
        Ok(())
    })
    .await?
    .with_context(|| {
        format!(
            "packing the environment for Spark executors into {}",
            dest.display()
        )
    })?;
    Ok(dest)
}

/// A venv's `lib/python3.X/site-packages`.
fn site_packages(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
}
