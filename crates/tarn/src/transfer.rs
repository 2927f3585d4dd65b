//! Moving files between this machine and a datastore, through the server (which holds the
//! credentials): large files streamed (never whole in memory) at a bounded concurrency, small
//! ones (≤ 1 MiB) in bundles of at most 4 MiB; every file checked by size and SHA-256; one
//! progress bar showing throughput and ETA.

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
    scan_from(src, hash, true).await
}

/// [`scan`] for files someone else shaped (a job's outputs): not even `src` may be a link, so
/// a link there cannot make the runner upload a file the job itself could not read.
pub async fn scan_untrusted(src: &Path) -> anyhow::Result<Vec<LocalFile>> {
    scan_from(src, false, false).await
}

async fn scan_from(src: &Path, hash: bool, follow_src: bool) -> anyhow::Result<Vec<LocalFile>> {
    let meta = tokio::fs::symlink_metadata(src)
        .await
        .with_context(|| format!("cannot read {}", src.display()))?;
    let meta = match (meta.file_type().is_symlink(), follow_src) {
        (false, _) => meta,
        (true, true) => tokio::fs::metadata(src)
            .await
            .with_context(|| format!("cannot read {}", src.display()))?,
        (true, false) => bail!("{} is a link; links are not uploaded", src.display()),
    };
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
    hash_all(found, hash).await
}

/// The files of a code folder as Azure ML snapshots it: `.amlignore` and `.gitignore` rules
/// (at any level) leave files out, and so does the `.git` folder. Always hashed.
pub async fn scan_code(src: &Path) -> anyhow::Result<Vec<LocalFile>> {
    let root = src.to_path_buf();
    let found =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(PathBuf, String, u64)>> {
            let mut found = vec![];
            let walker = ignore::WalkBuilder::new(&root)
                .hidden(false)
                .parents(false)
                .require_git(false)
                .git_global(false)
                .git_exclude(false)
                .add_custom_ignore_filename(".amlignore")
                .filter_entry(|e| e.file_name() != ".git")
                .build();
            for entry in walker {
                let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(&root)
                    .expect("below the root")
                    .to_str()
                    .context("a file name is not UTF-8")?
                    .replace('\\', "/");
                let size = entry.metadata()?.len();
                found.push((entry.path().to_path_buf(), rel, size));
            }
            Ok(found)
        })
        .await??;
    hash_all(found, true).await
}

async fn hash_all(
    mut found: Vec<(PathBuf, String, u64)>,
    hash: bool,
) -> anyhow::Result<Vec<LocalFile>> {
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

pub use tarn_spec::digest::hex;

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
    let (small, large): (Vec<&LocalFile>, Vec<&LocalFile>) = files
        .iter()
        .partition(|f| f.size <= tarn_api::bundle::SMALL_FILE);
    let bundles = upload_bundles(client, workspace, datastore, dest, &small, bar);
    let singles = futures::stream::iter(large)
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
        .try_collect::<Vec<()>>();
    futures::try_join!(bundles, singles)?;
    Ok(())
}

/// Groups small files into bundles of at most `MAX_BUNDLE_FILES` files and 4 MiB.
fn batches<T>(items: Vec<T>, size: impl Fn(&T) -> u64) -> Vec<Vec<T>> {
    const BATCH_BYTES: u64 = 4 * 1024 * 1024;
    let mut out: Vec<Vec<T>> = vec![];
    let mut bytes = 0;
    for item in items {
        let s = size(&item);
        let full = out.last().is_none_or(|b| {
            b.len() >= tarn_api::bundle::MAX_BUNDLE_FILES || bytes + s > BATCH_BYTES
        });
        if full {
            out.push(vec![]);
            bytes = 0;
        }
        bytes += s;
        out.last_mut().expect("a batch").push(item);
    }
    out
}

/// Bundles in flight at once (each carries up to 512 files).
const BUNDLE_CONCURRENCY: usize = 4;

/// Uploads small files in bundles: one request for many files; each file is hashed here and
/// its checksum compared with what the server stored.
async fn upload_bundles(
    client: &Client,
    workspace: &str,
    datastore: &str,
    dest: &str,
    files: &[&LocalFile],
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let url = format!(
        "/workspaces/{}/datastores/{}/bundle?dest={}",
        enc(workspace),
        enc(datastore),
        enc(dest)
    );
    futures::stream::iter(batches(files.to_vec(), |f| f.size))
        .map(|batch| {
            let url = url.clone();
            async move {
                let mut body = bytes::BytesMut::new();
                let mut sent = Vec::with_capacity(batch.len());
                for f in &batch {
                    let data = tokio::fs::read(&f.abs)
                        .await
                        .with_context(|| format!("cannot read {}", f.abs.display()))?;
                    let sha = f
                        .sha256
                        .clone()
                        .unwrap_or_else(|| tarn_spec::digest::sha256_hex(&data));
                    let header = tarn_api::bundle::EntryHeader {
                        path: f.rel.clone(),
                        size: data.len() as u64,
                        sha256: Some(sha.clone()),
                    };
                    tarn_api::bundle::put_entry(&mut body, &header, &data);
                    sent.push((data.len() as u64, sha));
                }
                tarn_api::bundle::finish(&mut body);
                let len = body.len() as u64;
                let reply = client
                    .send_bundle(&url, reqwest::Body::from(body.freeze()), len)
                    .await
                    .with_context(|| {
                        format!(
                            "uploading {} files ({} …)",
                            batch.len(),
                            batch[0].abs.display()
                        )
                    })?;
                let stored = reply["value"].as_array().cloned().unwrap_or_default();
                if stored.len() != batch.len() {
                    bail!(
                        "the server stored {} of {} files",
                        stored.len(),
                        batch.len()
                    );
                }
                for ((f, (size, sha)), got) in batch.iter().zip(&sent).zip(&stored) {
                    if got["size"].as_u64() != Some(*size)
                        || got["sha256"].as_str() != Some(sha.as_str())
                    {
                        bail!("{} was damaged on the way (size or checksum differ)", f.rel);
                    }
                    bar.inc(*size);
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(BUNDLE_CONCURRENCY)
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
    let (small, large): (Vec<&RemoteFile>, Vec<&RemoteFile>) = files
        .iter()
        .partition(|f| f.size <= tarn_api::bundle::SMALL_FILE);
    let bundles = download_bundles(client, workspace, datastore, base, &small, dest, bar);
    let singles = futures::stream::iter(large)
        .map(|f| async move {
            let target = local_target(base, &f.path, dest).await?;
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
        .try_collect::<Vec<()>>();
    futures::try_join!(bundles, singles)?;
    Ok(())
}

/// Where a downloaded file goes: its path below `base`, under `dest` (its parent created).
async fn local_target(base: &str, path: &str, dest: &Path) -> anyhow::Result<PathBuf> {
    let rel = match path.strip_prefix(base) {
        Some(r) if !base.is_empty() => r.trim_start_matches('/'),
        _ => path,
    };
    let rel = if rel.is_empty() {
        path.rsplit('/').next().unwrap_or(path)
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
    Ok(target)
}

/// Downloads small files in bundles, checking each one's size and SHA-256.
async fn download_bundles(
    client: &Client,
    workspace: &str,
    datastore: &str,
    base: &str,
    files: &[&RemoteFile],
    dest: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let url = format!(
        "/workspaces/{}/datastores/{}/bundle-get",
        enc(workspace),
        enc(datastore)
    );
    futures::stream::iter(batches(files.to_vec(), |f| f.size))
        .map(|batch| {
            let url = url.clone();
            async move {
                let paths: Vec<String> = batch.iter().map(|f| f.path.clone()).collect();
                let body = client.fetch_bundle(&url, &paths).await?;
                let entries = tarn_api::bundle::parse(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
                if entries.len() != batch.len() {
                    bail!("the server sent {} of {} files", entries.len(), batch.len());
                }
                for (f, (header, data)) in batch.iter().zip(entries) {
                    let sha = tarn_spec::digest::sha256_hex(&data);
                    if header.path != f.path
                        || data.len() as u64 != f.size
                        || header.sha256.as_deref() != Some(sha.as_str())
                    {
                        bail!("{} arrived damaged (size or checksum differ)", f.path);
                    }
                    let target = local_target(base, &f.path, dest).await?;
                    let tmp = target.with_file_name(format!(
                        ".{}.tarn-partial",
                        target
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or("file")
                    ));
                    tokio::fs::write(&tmp, &data)
                        .await
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                    tokio::fs::rename(&tmp, &target).await?;
                    bar.inc(data.len() as u64);
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(BUNDLE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
