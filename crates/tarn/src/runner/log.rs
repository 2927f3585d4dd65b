//! The job's log: one local file (`std_log.txt` in the run folder) that everything the user
//! should see is appended to — environment build, input downloads, the command's output — and a
//! shipper that sends what is new to the server every few hundred milliseconds (idempotent
//! appends by offset, retried while the server is away). The server's replies carry the
//! user's cancel request back.

use crate::client::Client;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const SHIP_EVERY: Duration = Duration::from_millis(200);
const SHIP_MAX: u64 = 1 << 20;

#[derive(Clone)]
pub struct Log {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl Log {
    pub fn create(path: &Path) -> anyhow::Result<Log> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Log {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends raw bytes (whole lines, so ranks do not interleave mid-line).
    pub fn write(&self, bytes: &[u8]) {
        let mut f = self.file.lock().expect("log lock");
        let _ = f.write_all(bytes);
    }

    /// A line from Tarn itself, marked so users can tell it from their program's output.
    pub fn note(&self, text: &str) {
        for line in text.lines() {
            self.write(format!("[tarn] {line}\n").as_bytes());
        }
    }

    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The last `bytes` of the log, as text.
    pub fn tail(&self, bytes: u64) -> String {
        let data = std::fs::read(&self.path).unwrap_or_default();
        let start = data.len().saturating_sub(bytes as usize);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }
}

/// Sends the log to the server in the background.
pub struct Shipper {
    pub cancel: Arc<AtomicBool>,
    pub cancel_notify: Arc<tokio::sync::Notify>,
    sent: Arc<Mutex<u64>>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    pub fn start(client: Arc<Client>, url: String, log: Log) -> Shipper {
        let cancel = Arc::new(AtomicBool::new(false));
        let cancel_notify = Arc::new(tokio::sync::Notify::new());
        let sent = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (cancel, cancel_notify, sent, stop) = (
                cancel.clone(),
                cancel_notify.clone(),
                sent.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let _ = ship_once(&client, &url, &log, &sent, &cancel, &cancel_notify).await;
                    tokio::select! {
                        _ = stop.notified() => break,
                        _ = tokio::time::sleep(SHIP_EVERY) => {}
                    }
                }
            })
        };
        Shipper {
            cancel,
            cancel_notify,
            sent,
            stop,
            task,
        }
    }

    /// Stops the background task and sends the rest, retrying for up to `patience`.
    pub async fn finish(self, client: &Client, url: &str, log: &Log, patience: Duration) {
        self.stop.notify_one();
        let _ = self.task.await;
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            match ship_once(
                client,
                url,
                log,
                &self.sent,
                &self.cancel,
                &self.cancel_notify,
            )
            .await
            {
                Ok(true) => return,
                Ok(false) => continue,
                Err(_) if tokio::time::Instant::now() < deadline && super::server_may_return() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(_) => return,
            }
        }
    }
}

/// Sends one chunk of what the server lacks; `Ok(true)` when it has everything.
async fn ship_once(
    client: &Client,
    url: &str,
    log: &Log,
    sent: &Mutex<u64>,
    cancel: &AtomicBool,
    cancel_notify: &tokio::sync::Notify,
) -> anyhow::Result<bool> {
    let offset = *sent.lock().expect("sent lock");
    let size = log.size();
    let mut data = vec![];
    if size > offset {
        let mut f = tokio::fs::File::open(log.path()).await?;
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        f.take(SHIP_MAX).read_to_end(&mut data).await?;
    }
    let len = data.len() as u64;
    let reply = client
        .send_body(
            reqwest::Method::POST,
            &format!(
                "{url}{}offset={offset}",
                if url.contains('?') { '&' } else { '?' }
            ),
            reqwest::Body::from(data),
            len,
            None,
        )
        .await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            // The server has less than we thought (it lost a tail in a crash): resend from its end.
            if let Some(api) = e.downcast_ref::<crate::client::ApiError>()
                && api.code == "Conflict"
            {
                *sent.lock().expect("sent lock") = 0;
            }
            return Err(e);
        }
    };
    if reply["cancel_requested"].as_bool() == Some(true) && !cancel.swap(true, Ordering::SeqCst) {
        cancel_notify.notify_waiters();
        cancel_notify.notify_one();
    }
    let server_size = reply["log_size"].as_u64().unwrap_or(offset + len);
    *sent.lock().expect("sent lock") = server_size;
    Ok(server_size >= log.size())
}
