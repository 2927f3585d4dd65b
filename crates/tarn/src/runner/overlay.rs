//! A job's own Python environment, layered over the shared one. Environments are built once
//! and shared read-only between jobs, and a job on the host Python must not change the host's
//! packages; yet Azure ML components commonly run `pip install 'pkg<2'` before their script. So
//! every job gets a tiny venv in its run folder (a `pyvenv.cfg`, links to the interpreter, no
//! copies): the shared environment's packages are on its path through a `.pth` file, after its
//! own, and `pip` and `python` are the overlay's, so whatever a job installs goes into its own
//! run folder, shadows the shared version, and is gone with the job. Making one costs a few
//! file writes, no process.
//!
//! `pip` itself is not in uv-built environments: one copy, installed once per machine with uv
//! into `<envs>/_pip`, is put on every overlay's path last. Where it cannot be had (uv missing,
//! no package index), the overlay's `pip` says so and fails rather than reach another Python.

use super::log::Log;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Where the shared `pip` lives, below the environments folder.
const PIP_DIR: &str = "_pip";
/// Written last; renamed whenever the install recipe changes, so that older installs are redone
/// (`-2`: the tree is opened to every job identity).
const PIP_READY: &str = ".tarn-ready-2";
/// After a failed install of the shared pip, jobs go without it this long before one tries
/// again.
const RETRY_PIP_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Makes `<dir>` a venv over `shared` (a built environment) or over the host Python, with
/// `pip` from `pip_dir` when there is one. Returns the overlay's folder.
pub fn make(
    dir: &Path,
    shared: Option<&Path>,
    host_python: &Path,
    pip_dir: Option<&Path>,
    envs: &Path,
) -> anyhow::Result<PathBuf> {
    let (python, system_site, base_site) = match shared {
        Some(env) => {
            let python = std::fs::canonicalize(env.join("bin/python"))
                .with_context(|| format!("the environment {} has no python", env.display()))?;
            let cfg = std::fs::read_to_string(env.join("pyvenv.cfg")).unwrap_or_default();
            let system = cfg_value(&cfg, "include-system-site-packages") == Some("true");
            (python, system, Some(env.to_path_buf()))
        }
        None => (real_interpreter(host_python, envs)?, true, None),
    };
    let version = python_version(&python)?;
    let bin = dir.join("bin");
    let site = dir.join(format!("lib/python{version}/site-packages"));
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&site)?;
    std::fs::write(
        dir.join("pyvenv.cfg"),
        format!(
            "home = {}\ninclude-system-site-packages = {system_site}\nversion = {version}\n",
            python.parent().unwrap_or(Path::new("/")).display()
        ),
    )?;
    for name in ["python", "python3", &format!("python{version}")] {
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&python, &link)?;
    }
    // The shared environment's packages (their own `.pth` files too), then pip, after the
    // overlay's own site-packages.
    let mut pth = String::new();
    if let Some(env) = &base_site {
        let env_site = env.join(format!("lib/python{version}/site-packages"));
        pth.push_str(&format!(
            "import site; site.addsitedir({:?})\n",
            env_site.display().to_string()
        ));
    }
    if let Some(pip) = pip_dir {
        pth.push_str(&format!("{}\n", pip.display()));
    }
    std::fs::write(site.join("_tarn_environment.pth"), pth)?;
    let interpreter = bin.join("python");
    // The overlay's own pip (or the host's, which an overlay over the host Python sees); it
    // installs into the overlay either way.
    let pip = format!(
        "#!{}\nimport sys\ntry:\n    from pip._internal.cli.main import main\nexcept ImportError:\n    \
         sys.exit(\"pip is not available in this job's environment (Tarn could not install it: \
         no uv or package index); add the packages to the environment's conda file instead\")\n\
         sys.exit(main())\n",
        interpreter.display()
    );
    for name in ["pip", "pip3", &format!("pip{version}")] {
        let script = bin.join(name);
        std::fs::write(&script, &pip)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir.to_path_buf())
}

/// How long the interpreter found behind a launcher script is trusted: a launcher (pyenv)
/// takes ~80 ms to ask, too long for every job; switching the host's Python is seen this late.
const LAUNCHER_CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// The interpreter binary behind `python`: a link is followed; a launcher script (a pyenv or
/// asdf shim) is asked for `sys.executable`, since a venv must link the binary itself. The
/// answer is kept in `<envs>/_host-python` for a while.
fn real_interpreter(python: &Path, envs: &Path) -> anyhow::Result<PathBuf> {
    let path = std::fs::canonicalize(python).unwrap_or(python.to_path_buf());
    let mut magic = [0u8; 4];
    let is_binary = std::fs::File::open(&path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF";
    if is_binary {
        return Ok(path);
    }
    let cache = envs.join("_host-python");
    let fresh = std::fs::metadata(&cache)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < LAUNCHER_CACHE_FOR));
    if fresh
        && let Ok(text) = std::fs::read_to_string(&cache)
        && let Some((launcher, exe)) = text.trim_end().split_once('\t')
        && launcher == path.display().to_string()
        && Path::new(exe).is_file()
    {
        return Ok(PathBuf::from(exe));
    }
    let exe = ask_interpreter(python)?;
    let _ = std::fs::create_dir_all(envs);
    let tmp = envs.join(format!("_host-python.{}", std::process::id()));
    if std::fs::write(&tmp, format!("{}\t{}\n", path.display(), exe.display())).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    Ok(exe)
}

fn ask_interpreter(python: &Path) -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(!exe.is_empty(), "{} names no interpreter", python.display());
    Ok(std::fs::canonicalize(&exe).unwrap_or(PathBuf::from(exe)))
}

/// `3.11` for `/usr/bin/python3.11` (the interpreter's file name says it); otherwise asks it.
fn python_version(python: &Path) -> anyhow::Result<String> {
    let name = python.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some(v) = name.strip_prefix("python")
        && v.split('.').count() == 2
        && v.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return Ok(v.to_string());
    }
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Opens a tree to every identity for reading: folders searchable, files readable, and
/// executables runnable.
fn readable_by_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() || mode & 0o100 != 0 {
        mode | 0o555
    } else {
        mode | 0o444
    };
    if wanted != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(wanted))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            readable_by_all(&entry?.path())?;
        }
    }
    Ok(())
}

fn cfg_value<'a>(cfg: &'a str, key: &str) -> Option<&'a str> {
    cfg.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The shared `pip`, installed with uv into `<envs>/_pip` by the first job that needs it
/// (others wait for its lock). `None`, with a note in the log, where it cannot be installed.
pub async fn shared_pip(envs: &Path, home: Option<&Path>, log: &Log) -> Option<PathBuf> {
    let dir = envs.join(PIP_DIR);
    if dir.join(PIP_READY).is_file() {
        return Some(dir);
    }
    // A failed attempt (no package index here) is not repeated by every job for a while.
    let failed = envs.join(format!("{PIP_DIR}.failed"));
    let recent_failure = std::fs::metadata(&failed)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < RETRY_PIP_AFTER));
    if recent_failure {
        let why = std::fs::read_to_string(&failed).unwrap_or_default();
        log.note(&format!(
            "warning: `pip` is not available to this job ({}); the environment's packages are",
            why.trim()
        ));
        return None;
    }
    let result = async {
        // uv, else the host's own pip, installs pip into the folder.
        let installer = match super::env::find_uv(home) {
            // Copies, not links into uv's cache: the modes are set below, and on a link that
            // would change the cache's files too.
            Some(uv) => vec![
                uv.into_os_string(),
                "pip".into(),
                "install".into(),
                "--link-mode".into(),
                "copy".into(),
            ],
            None => vec![
                super::env::host_python().into_os_string(),
                "-m".into(),
                "pip".into(),
                "install".into(),
                "--disable-pip-version-check".into(),
            ],
        };
        tokio::fs::create_dir_all(envs).await?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(envs.join(format!("{PIP_DIR}.lock")))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|_| lock)).await??;
        if !dir.join(PIP_READY).is_file() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            let install = tokio::process::Command::new(&installer[0])
                .args(&installer[1..])
                .args(["--quiet", "--target"])
                .arg(&dir)
                .arg("pip")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(std::time::Duration::from_secs(120), install)
                .await
                .map_err(|_| anyhow::anyhow!("installing pip took over 120 s"))??;
            if !out.status.success() {
                anyhow::bail!(
                    "installing pip failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            // Every job's identity reads this pip, whatever mask the installing job ran under.
            let walk = dir.clone();
            tokio::task::spawn_blocking(move || readable_by_all(&walk)).await??;
            tokio::fs::write(dir.join(PIP_READY), "").await?;
        }
        drop(lock);
        anyhow::Ok(dir)
    }
    .await;
    match result {
        Ok(dir) => Some(dir),
        Err(e) => {
            let _ = std::fs::write(&failed, format!("{e:#}"));
            log.note(&format!(
                "warning: `pip` is not available to this job ({e:#}); the environment's packages are"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_interpreters_name() {
        assert_eq!(
            python_version(Path::new("/usr/bin/python3.11")).unwrap(),
            "3.11"
        );
        assert_eq!(
            cfg_value(
                "home = /x\ninclude-system-site-packages = false\n",
                "include-system-site-packages"
            ),
            Some("false")
        );
    }
}
