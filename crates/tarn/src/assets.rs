//! Local files named in asset documents (a data asset's or model's `path`, a component's
//! `code`, a deployment's scoring code) are uploaded to the workspace's default datastore
//! before the asset is registered, under a content-addressed folder, so identical content is
//! stored once. An environment's `conda_file` is read and inlined, as `az ml` does.
//! The asset is registered only after every file arrived: an interrupted upload registers nothing.

use crate::client::Client;
use crate::transfer;
use anyhow::{Context, bail};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use tarn_spec::Kind;
use tarn_spec::uri::{self, DataUri};

/// The datastore uploads go to, as in Azure ML.
const UPLOAD_DATASTORE: &str = "workspaceblobstore";
/// Written last into a content-addressed folder: its presence means the folder is complete.
const COMPLETE_MARKER: &str = ".tarn-complete";

/// Rewrites local paths in `spec` into datastore URIs, uploading what they point at.
pub async fn upload_local_paths(
    client: &Client,
    kind: Kind,
    spec: &mut Json,
    base: &Path,
    workspace: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    match kind {
        Kind::Data => {
            let ty = spec["type"].as_str().unwrap_or("uri_folder").to_string();
            rewrite(client, spec, &["path"], base, workspace, quiet, Some(&ty)).await?;
        }
        Kind::Model => rewrite(client, spec, &["path"], base, workspace, quiet, None).await?,
        Kind::Component => {
            // `additional_includes` are copied next to the code before the snapshot is made.
            let _merged = with_additional_includes(spec, base)?;
            rewrite(
                client,
                spec,
                &["code"],
                base,
                workspace,
                quiet,
                Some("uri_folder"),
            )
            .await?
        }
        Kind::OnlineDeployment | Kind::BatchDeployment => {
            rewrite(
                client,
                spec,
                &["code_configuration", "code"],
                base,
                workspace,
                quiet,
                Some("uri_folder"),
            )
            .await?;
            rewrite(
                client,
                spec,
                &["model", "path"],
                base,
                workspace,
                quiet,
                None,
            )
            .await?;
            // A pipeline deployment's local component file is read and inlined.
            if let Some(file) = spec["component"].as_str().map(str::to_string)
                && !tarn_spec::refs::looks_like_ref(&file)
            {
                let path = resolve(base, &file);
                spec["component"] =
                    Box::pin(crate::jobs::read_component(client, &path, workspace, quiet))
                        .await
                        .with_context(|| format!("component: {}", path.display()))?;
            }
        }
        Kind::Environment => {
            if let Some(file) = spec["conda_file"].as_str().map(str::to_string) {
                let path = resolve(base, &file);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the conda file {}", path.display()))?;
                let node = tarn_spec::Node::from_yaml(&text).map_err(|e| {
                    anyhow::anyhow!("{}: invalid YAML: {}", path.display(), e.message)
                })?;
                spec["conda_file"] = node.to_json();
            }
        }
        Kind::Datastore => {
            // A local directory is relative to the YAML file, like every other path in it.
            if let Some(p) = spec["path"].as_str().map(str::to_string) {
                spec["path"] = Json::String(resolve(base, &p).display().to_string());
            }
        }
        _ => {}
    }
    Ok(())
}

/// For a component with `additional_includes`: a temporary folder holding the code folder's
/// files plus each included file or folder (by its name, at the top), which `code` then points
/// at. The folder keeps the code folder's name, so unchanged content keeps its address.
fn with_additional_includes(
    spec: &mut Json,
    base: &Path,
) -> anyhow::Result<Option<tempfile::TempDir>> {
    let includes: Vec<String> = spec["additional_includes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if includes.is_empty() {
        return Ok(None);
    }
    let code = match spec["code"].as_str().map(uri::parse) {
        Some(Ok(DataUri::Local(c))) => Some(resolve(base, &c)),
        None => None,
        Some(_) => bail!("additional_includes need a local `code` folder"),
    };
    let tmp = tempfile::tempdir()?;
    let name = code
        .as_ref()
        .and_then(|c| c.canonicalize().ok())
        .and_then(|c| c.file_name().map(|n| n.to_os_string()))
        .unwrap_or_else(|| "code".into());
    let dest = tmp.path().join(name);
    std::fs::create_dir_all(&dest)?;
    if let Some(code) = &code {
        copy_tree(code, &dest).with_context(|| format!("code: {}", code.display()))?;
    }
    for include in &includes {
        let src = resolve(base, include);
        let target = dest.join(
            src.file_name()
                .context("an additional include has no name")?,
        );
        copy_tree(&src, &target)
            .with_context(|| format!("additional_includes: {} does not exist", src.display()))?;
    }
    spec["code"] = Json::String(dest.display().to_string());
    Ok(Some(tmp))
}

fn copy_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(src)?;
    if meta.is_file() {
        std::fs::copy(src, dest)?;
        return Ok(());
    }
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        copy_tree(&entry.path(), &dest.join(entry.file_name()))?;
    }
    Ok(())
}

/// A path from a YAML file, relative to the file's folder unless absolute.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Uploads the local path at `field` (a path of keys) and puts its datastore URI in its place.
/// `expect` is the asset type: `uri_file` must be a file; folders must be folders.
async fn rewrite(
    client: &Client,
    spec: &mut Json,
    field: &[&str],
    base: &Path,
    workspace: &str,
    quiet: bool,
    expect: Option<&str>,
) -> anyhow::Result<()> {
    let Some(slot) = field.iter().try_fold(&mut *spec, |v, k| v.get_mut(*k)) else {
        return Ok(());
    };
    let Some(raw) = slot.as_str() else {
        return Ok(());
    };
    let local = match uri::parse(raw).map_err(|e| anyhow::anyhow!("{}: {e}", field.join(".")))? {
        DataUri::Local(p) => resolve(base, &p),
        _ => return Ok(()),
    };
    let meta = std::fs::metadata(&local)
        .with_context(|| format!("{}: {} does not exist", field.join("."), local.display()))?;
    match expect {
        Some("uri_file") if !meta.is_file() => bail!(
            "{}: {} is not a file (type uri_file)",
            field.join("."),
            local.display()
        ),
        Some("uri_folder" | "mltable") if !meta.is_dir() => {
            bail!("{}: {} is not a folder", field.join("."), local.display())
        }
        Some("mltable") if !local.join("MLTable").is_file() => bail!(
            "{}: an mltable folder needs an `MLTable` file in {}",
            field.join("."),
            local.display()
        ),
        _ => {}
    }
    let uri = upload_content_addressed(client, &local, workspace, quiet).await?;
    *slot = Json::String(uri);
    Ok(())
}

/// Uploads a file or folder to `LocalUpload/<content hash>/<name>` unless it is there already.
pub async fn upload_content_addressed(
    client: &Client,
    local: &Path,
    workspace: &str,
    quiet: bool,
) -> anyhow::Result<String> {
    let name = local
        .file_name()
        .and_then(|n| n.to_str())
        .context("the path has no UTF-8 file name")?
        .to_string();
    let is_dir = local.is_dir();
    let files = transfer::scan(local, true).await?;
    upload_files_content_addressed(client, &name, is_dir, &files, local, workspace, quiet).await
}

/// Uploads a job's code folder content-addressed, leaving out what `.amlignore` / `.gitignore`
/// exclude; unchanged code is not uploaded again.
pub async fn upload_code(
    client: &Client,
    local: &Path,
    workspace: &str,
    quiet: bool,
) -> anyhow::Result<String> {
    if !local.is_dir() {
        bail!("code: {} is not a folder", local.display());
    }
    let name = local
        .canonicalize()?
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("code")
        .to_string();
    let files = transfer::scan_code(local).await?;
    upload_files_content_addressed(client, &name, true, &files, local, workspace, quiet).await
}

/// Uploads scanned files to `LocalUpload/<content hash>/[<name>/]` unless they are there.
async fn upload_files_content_addressed(
    client: &Client,
    name: &str,
    is_dir: bool,
    files: &[transfer::LocalFile],
    local: &Path,
    workspace: &str,
    quiet: bool,
) -> anyhow::Result<String> {
    // The name is part of the address: the folder holds `<name>/`, so equal content under
    // another name is another upload.
    let hash = tarn_spec::digest::sha256_hex(
        format!("{name}\0{}", transfer::content_hash(files)).as_bytes(),
    )[..32]
        .to_string();
    let folder = format!("LocalUpload/{hash}");
    let marker = format!("{folder}/{COMPLETE_MARKER}");
    let exists = client
        .head(&transfer::file_url(workspace, UPLOAD_DATASTORE, &marker))
        .await?
        .is_some();
    if exists {
        if !quiet {
            eprintln!(
                "{} is already uploaded (identical content at {folder}); reusing it",
                local.display()
            );
        }
    } else {
        let total = files.iter().map(|f| f.size).sum();
        let bar = transfer::progress(total, &format!("uploading {name}"), quiet);
        let dest = if is_dir {
            format!("{folder}/{name}")
        } else {
            folder.clone()
        };
        transfer::upload(client, workspace, UPLOAD_DATASTORE, &dest, files, &bar).await?;
        bar.finish_and_clear();
        let empty = tarn_spec::digest::sha256_hex(b"");
        client
            .send_body(
                reqwest::Method::PUT,
                &transfer::file_url(workspace, UPLOAD_DATASTORE, &marker),
                reqwest::Body::from(""),
                0,
                Some(&empty),
            )
            .await?;
    }
    let path = if is_dir {
        format!("{folder}/{name}/")
    } else {
        format!("{folder}/{name}")
    };
    let store_path = uri::StorePath::parse(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(uri::datastore_uri(UPLOAD_DATASTORE, &store_path))
}

/// Downloads what an asset's `path` points at into `dest`; returns how many files (0 when there
/// is nothing there).
pub async fn download_asset_path(
    client: &Client,
    workspace: &str,
    path: &str,
    dest: &Path,
    quiet: bool,
) -> anyhow::Result<usize> {
    let (datastore, store_path) = match uri::parse(path).map_err(|e| anyhow::anyhow!("{e}"))? {
        DataUri::Datastore {
            datastore, path, ..
        } => (datastore, path),
        DataUri::JobOutput { .. } => {
            bail!("{path} is a job output; jobs arrive with the scheduler")
        }
        other => bail!(
            "{path} is not in a datastore of this workspace ({other:?}); fetch it from where it lives"
        ),
    };
    let files = transfer::remote_files(client, workspace, &datastore, store_path.as_str()).await?;
    if files.is_empty() {
        return Ok(0);
    }
    let total = files.iter().map(|f| f.size).sum();
    let bar = transfer::progress(total, "downloading", quiet);
    let base = if store_path.is_folder() {
        store_path.as_str().to_string()
    } else {
        String::new()
    };
    transfer::download(client, workspace, &datastore, &base, &files, dest, &bar).await?;
    bar.finish_and_clear();
    Ok(files.len())
}
