//! What the controllers need of the processes they start (replicas, compute instances): a
//! free port, stopping a whole process group, and the end of a log for an error message.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::time::Duration;

/// How long a process group gets between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn signal(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        let _ = killpg(pid, sig);
    }
}

/// SIGTERM to the child's process group, SIGKILL after the grace period, then SIGKILL to
/// whatever the group left behind.
pub(crate) async fn stop_group(pid: Option<Pid>, child: &mut tokio::process::Child) {
    signal(pid, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        signal(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    signal(pid, Signal::SIGKILL);
}

/// The last `bytes` of a log file, from a line start.
pub(crate) fn tail(path: &std::path::Path, bytes: usize) -> String {
    tail_of(&std::fs::read(path).unwrap_or_default(), bytes)
}

/// The last `bytes` of a log's text, from a line start.
pub(crate) fn tail_of(data: &[u8], bytes: usize) -> String {
    let mut start = data.len().saturating_sub(bytes);
    if start > 0 {
        start += data[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
    }
    String::from_utf8_lossy(&data[start..]).into_owned()
}

/// The SHA-256 of a file, in hex.
pub(crate) fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The binary this server runs from, to hand to engines' nodes: `/proc/self/exe`, which still
/// reads the running version after the file on disk was replaced by an upgrade (or removed),
/// else the path it was started from.
pub fn own_binary(program: &std::path::Path) -> std::path::PathBuf {
    let own = std::path::Path::new("/proc/self/exe");
    if own.exists() {
        own.to_path_buf()
    } else {
        program.to_path_buf()
    }
}

/// The SHA-256 of the binary nodes run (computed once per process): it names the binary in
/// nodes' caches and checks its download.
pub async fn runner_binary_sha(program: &std::path::Path) -> std::io::Result<String> {
    static SHA: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    SHA.get_or_try_init(|| {
        let path = own_binary(program);
        async move {
            tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(std::io::Error::other)?
        }
    })
    .await
    .cloned()
}

/// The serverless pool's size: one node per CPU of this machine.
pub fn machine_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Memory user code on this machine may use in all, in MiB: all of it (`MemTotal`) but what
/// the server, its runners and the system keep: an eighth, and at least 512 MiB.
pub fn user_memory_mb() -> u64 {
    let total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(4 << 20);
    let total = total_kib / 1024;
    total.saturating_sub((total / 8).max(512)).max(256)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tail_starts_at_a_line_and_never_splits_a_character() {
        let log = "first line ünïcödé\nsecond ✓ line\nthird\n";
        assert_eq!(super::tail_of(log.as_bytes(), 12), "third\n");
        // A cut inside a multi-byte character moves to the next line start.
        let inside = "✓ line\nthird\n".len() - 1;
        assert_eq!(super::tail_of(log.as_bytes(), inside), "third\n");
        assert_eq!(super::tail_of(log.as_bytes(), 1000), log);
    }
}
