//! Processes the server starts that must not outlive it (online deployment replicas, compute
//! instances): whoever the server talks to through its router or proxy dies with it. Each
//! prepares (downloads, environment builds) and then runs one child, and stops its whole
//! process group as soon as its parent, the server, is gone. Whatever the child left running,
//! even outside its process group, is killed when it ends.

use crate::runner::Log;
use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Resolves once this process's parent (the server that started it) has exited.
async fn parent_gone(parent: u32) {
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn stop_everything(log: &Log) -> ExitCode {
    log.note("the Tarn server is gone; stopping");
    let _ = killpg(Pid::from_raw(0), Signal::SIGKILL);
    ExitCode::FAILURE
}

/// Runs `prepare`, then the command it returns (`what` names it in the log), until the command
/// exits (its exit code is ours) or the server is gone.
pub async fn run<F>(what: &str, prepare: F, log: &Log) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<tokio::process::Command>>,
{
    let parent = std::os::unix::process::parent_id();
    let prepared = tokio::select! {
        p = prepare => p,
        _ = parent_gone(parent) => return Ok(stop_everything(log)),
    };
    let mut command = match prepared {
        Ok(c) => c,
        Err(e) => {
            log.note(&format!("the {what} cannot start: {e:#}"));
            return Ok(ExitCode::FAILURE);
        }
    };
    log.note(&format!("starting the {what}"));
    // What the user's code leaves behind (a daemon in its own session) stays ours to stop.
    if let Err(e) = tarn_core::isolation::leftovers::adopt_orphans() {
        log.note(&format!(
            "warning: leftovers of the {what} may outlive it: {e}"
        ));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting the {what}"))?;
    let code = tokio::select! {
        status = child.wait() => {
            let status = status?;
            log.note(&format!("the {what} exited: {status}"));
            ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
        }
        _ = terminate.recv() => {
            // The server stops the whole group: the command got the signal too.
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = child.kill().await;
            log.note(&format!("the {what} was stopped"));
            ExitCode::from(143)
        }
        _ = parent_gone(parent) => stop_everything(log),
    };
    tokio::task::spawn_blocking(tarn_core::isolation::leftovers::kill_descendants).await?;
    Ok(code)
}
