//! Moving files between this machine and a datastore, through the server (which holds the
//! credentials): many files at a bounded concurrency, each streamed (never whole in memory),
//! each checked by size and SHA-256, with one progress bar showing throughput and ETA.

use crate::client::{Client, enc};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Files in flight at once: enough to hide the extra hop through the server for small files,
/// few enough to be polite to the storage service.
const CONCURRENCY: usize = 32;

/// A local file to upload.
pub struct LocalFile {
    pub abs: PathBuf,
    /// `/`-separated path relative to the upload's source.
    pub rel: String,
    pub size: u64,
    /// Known before the upload when the caller asked `scan` to hash (content addressing);
    /// otherwise computed while the file streams.
    pub sha256: Option<String>,
}

/// Every file under `src` (or `src` itself), in a stable order; hashed first when `hash`.
pub async fn scan(src: &Path, hash: bool) -> anyhow::Result<Vec<LocalFile>> {
    let meta = tokio::fs::metadata(src)
        .await
        .with_context(|| format!("cannot read {}", src.display()))?;
    let mut found = vec![];
    if meta.is_file() {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .context("the file name is not UTF-8")?;
        found.push((src.to_path_buf(), name.to_string(), meta.len()));
    } else {
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries = tokio::fs::read_dir(&dir)
                .await
                .with_context(|| format!("cannot list {}", dir.display()))?;
            while let Some(e) = entries.next_entry().await? {
                let ty = e.file_type().await?;
                let path = e.path();
                if ty.is_dir() {
                    stack.push(path);
                } else if ty.is_file() {
                    let rel = path
                        .strip_prefix(src)
                        .expect("below src")
                        .to_str()
                        .context("a file name is not UTF-8")?
                        .replace('\\', "/");
                    found.push((path, rel, e.metadata().await?.len()));
                }
            }
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    let hashed = futures::stream::iter(found)
        .map(|(abs, rel, size)| async move {
            let sha256 = if hash {
                let abs = abs.clone();
                Some(tokio::task::spawn_blocking(move || sha256_file(&abs)).await??)
            } else {
                None
            };
            Ok::<_, anyhow::Error>(LocalFile {
                abs,
                rel,
                size,
                sha256,
            })
        })
        .buffered(4)
        .try_collect()
        .await?;
    Ok(hashed)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One hash for a whole set of files (names, sizes and contents): the content address.
pub fn content_hash(files: &[LocalFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.rel.as_bytes());
        h.update([0]);
        h.update(f.size.to_le_bytes());
        h.update(f.sha256.as_deref().unwrap_or_default().as_bytes());
    }
    hex(&h.finalize())[..32].to_string()
}

/// A progress bar on stderr, hidden when stderr is not a terminal or `quiet` is set.
pub fn progress(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The URL of a file in a datastore.
pub fn file_url(workspace: &str, datastore: &str, path: &str) -> String {
    let encoded: Vec<String> = path.split('/').map(enc).collect();
    format!(
        "/workspaces/{}/datastores/{}/paths/{}",
        enc(workspace),
        enc(datastore),
        encoded.join("/")
    )
}

/// Uploads `files` under `dest` (a folder path in the datastore).
pub async fn upload(
    client: &Client,
    workspace: &str,
    datastore: &str,
    dest: &str,
    files: &[LocalFile],
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let dest = dest.trim_end_matches('/');
    check_path(dest)?;
    futures::stream::iter(files)
        .map(|f| async move {
            let target = if dest.is_empty() {
                f.rel.clone()
            } else {
                format!("{dest}/{}", f.rel)
            };
            let file = tokio::fs::File::open(&f.abs)
                .await
                .with_context(|| format!("cannot open {}", f.abs.display()))?;
            let bar = bar.clone();
            // Hash what is actually sent, in the same pass, to compare with what arrived.
            let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
            let sent = hasher.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect_ok(move |chunk| {
                sent.lock().expect("hasher lock").update(chunk);
                bar.inc(chunk.len() as u64);
            });
            let body = reqwest::Body::wrap_stream(stream);
            let url = file_url(workspace, datastore, &target);
            let reply = client
                .send_body(reqwest::Method::PUT, &url, body, f.size, f.sha256.as_deref())
                .await
                .with_context(|| format!("uploading {}", f.abs.display()))?;
            let sha = hex(&std::mem::take(&mut *hasher.lock().expect("hasher lock")).finalize());
            if reply["size"].as_u64() != Some(f.size) || reply["sha256"].as_str() != Some(sha.as_str()) {
                let _ = client.delete(&url).await;
                bail!("{} changed or was damaged on the way (size or checksum differ); it was not kept", f.rel);
            }
            Ok(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Refuses a datastore path that would escape its datastore, before anything is sent.
pub fn check_path(path: &str) -> anyhow::Result<()> {
    tarn_spec::uri::StorePath::parse(path)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A file in a datastore to download, as the listing reports it.
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
}

/// Lists every file under `prefix` (a file path lists that one file).
pub async fn remote_files(
    client: &Client,
    workspace: &str,
    datastore: &str,
    prefix: &str,
) -> anyhow::Result<Vec<RemoteFile>> {
    let prefix = prefix.trim_end_matches('/');
    check_path(prefix)?;
    let url = format!(
        "/workspaces/{}/datastores/{}/ls?path={}&recursive=true",
        enc(workspace),
        enc(datastore),
        enc(prefix)
    );
    let listing = client.get(&url).await?;
    let mut files: Vec<RemoteFile> = listing["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| RemoteFile {
            path: f["path"].as_str().unwrap_or_default().to_string(),
            size: f["size"].as_u64().unwrap_or(0),
        })
        .collect();
    if files.is_empty() && !prefix.is_empty() {
        // Not a folder: perhaps a single file.
        if let Some((size, _)) = client.head(&file_url(workspace, datastore, prefix)).await? {
            files.push(RemoteFile {
                path: prefix.to_string(),
                size,
            });
        }
    }
    Ok(files)
}

/// Downloads `files` (paths in the datastore) into `dest`, keeping their paths below `base`.
/// Each file is written to a temporary name, checked, then renamed into place.
pub async fn download(
    client: &Client,
    workspace: &str,
    datastore: &str,
    base: &str,
    files: &[RemoteFile],
    dest: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let base = base.trim_matches('/');
    futures::stream::iter(files)
        .map(|f| async move {
            let rel = match f.path.strip_prefix(base) {
                Some(r) if !base.is_empty() => r.trim_start_matches('/'),
                _ => f.path.as_str(),
            };
            let rel = if rel.is_empty() {
                f.path.rsplit('/').next().unwrap_or(&f.path)
            } else {
                rel
            };
            // Paths come from the server; still, never write outside `dest`.
            tarn_spec::uri::StorePath::parse(rel)
                .map_err(|e| anyhow::anyhow!("refusing to write {rel:?}: {e}"))?;
            let target = dest.join(rel);
            if let Some(dir) = target.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let resp = client
                .get_raw(&file_url(workspace, datastore, &f.path))
                .await?;
            let expected = resp
                .headers()
                .get(tarn_api::SHA256_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let length = resp.content_length();
            let tmp = target.with_file_name(format!(
                ".{}.tarn-partial",
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("file")
            ));
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.with_context(|| format!("downloading {}", f.path))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk).await?;
                bar.inc(chunk.len() as u64);
            }
            out.flush().await?;
            drop(out);
            let sha = hex(&hasher.finalize());
            let size_ok = length.is_none_or(|l| l == size) && size == f.size;
            let sha_ok = expected.as_deref().is_none_or(|e| e == sha);
            if !size_ok || !sha_ok {
                let _ = tokio::fs::remove_file(&tmp).await;
                bail!(
                    "{} arrived damaged (size {size}, expected {}; checksum {})",
                    f.path,
                    f.size,
                    if sha_ok { "ok" } else { "mismatch" }
                );
            }
            tokio::fs::rename(&tmp, &target).await?;
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
