//! Local files named in documents — at any depth: a job's or component's `code`, inputs' and
//! data assets' `path`, a model's `path`, pipeline steps' component files (and theirs in turn),
//! sweep trials given as component files, conda files, a deployment's scoring code — are found
//! by one walker, [`upload_local_paths`], from the field types in `tarn_spec`'s tables
//! ([`tarn_spec::schema::path_slots`]). Each is resolved relative to the file that named it.
//! Files the server reads as part of the document (component files, conda files) are read and
//! inlined; the rest are uploaded to the workspace's default datastore under a content-addressed
//! folder, so identical content is stored once, and replaced by their datastore URI. Nothing is
//! registered until every file arrived: an interrupted upload registers nothing.

use crate::client::Client;
use crate::transfer;
use anyhow::{Context, bail};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use tarn_spec::schema::{PathKind, PathSlot, Ty, path_slots};
use tarn_spec::uri::{self, DataUri};
use tarn_spec::{Kind, SECRET_PLACEHOLDER};

/// The datastore uploads go to, as in Azure ML.
const UPLOAD_DATASTORE: &str = "workspaceblobstore";
/// Written last into a content-addressed folder: its presence means the folder is complete.
const COMPLETE_MARKER: &str = ".tarn-complete";

/// Rewrites every local path in `spec` (a document of `kind` read from a file in `base`):
/// files the document includes are inlined, the rest uploaded and replaced by datastore URIs.
pub async fn upload_local_paths(
    client: &Client,
    kind: Kind,
    spec: &mut Json,
    base: &Path,
    workspace: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut found = Found::default();
    inline_files(tarn_spec::schema(kind), spec, "", base, &mut found)?;
    // One upload per distinct file or folder, however many fields name it.
    let mut done: BTreeMap<(PathBuf, bool), String> = BTreeMap::new();
    for upload in &found.uploads {
        let code = upload.kind == PathKind::Code;
        let key = (
            upload.local.canonicalize().unwrap_or(upload.local.clone()),
            code,
        );
        let uri = match done.get(&key) {
            Some(uri) => uri.clone(),
            None => {
                let uri = if code {
                    upload_code(client, &upload.local, workspace, quiet).await
                } else {
                    upload_content_addressed(client, &upload.local, workspace, quiet).await
                }
                .with_context(|| format!("{}: {}", upload.field, shown(&upload.local)))?;
                done.insert(key, uri.clone());
                uri
            }
        };
        *spec
            .pointer_mut(&upload.pointer)
            .expect("the walker found this slot") = Json::String(uri);
    }
    Ok(())
}

/// What the walk left to upload, and the temporary folders they may live in.
#[derive(Default)]
struct Found {
    uploads: Vec<Upload>,
    /// Code folders merged with their `additional_includes`, alive until uploaded.
    merged: Vec<tempfile::TempDir>,
}

struct Upload {
    /// Where the URI goes, as a JSON pointer from the document's root.
    pointer: String,
    local: PathBuf,
    kind: PathKind,
    /// The field, for errors: `jobs.train.inputs.data.path` (in `train.yml`, when nested).
    field: String,
}

/// Walks the value at `at` (of shape `ty`, written in a file in `base`): checks each local path
/// exists as the field needs it, inlines included files (walking those in turn, relative to
/// their own folder) and records what to upload.
fn inline_files(
    ty: &Ty,
    root: &mut Json,
    at: &str,
    base: &Path,
    found: &mut Found,
) -> anyhow::Result<()> {
    merge_additional_includes(ty, root, at, base, found)?;
    let slots = path_slots(ty, root.pointer(at).unwrap_or(&Json::Null));
    for slot in slots {
        let pointer = format!("{at}{}", slot.pointer);
        let field = field_name(at, &slot);
        if matches!(
            slot.kind,
            PathKind::Component | PathKind::Trial | PathKind::Job
        ) {
            if tarn_spec::refs::looks_like_ref(&slot.value) || slot.value.contains("${{") {
                continue;
            }
            let kind = if slot.kind == PathKind::Job {
                Kind::Job
            } else {
                Kind::Component
            };
            let file = resolve(base, &slot.value);
            let doc = crate::commands::load(&file, Some(kind), &[])
                .with_context(|| format!("{field}: {}", shown(&file)))?;
            *root.pointer_mut(&pointer).expect("slot") = doc.spec;
            let dir = file.parent().unwrap_or(Path::new("."));
            inline_files(tarn_spec::schema(kind), root, &pointer, dir, found)
                .with_context(|| format!("in {}", shown(&file)))?;
            if slot.kind == PathKind::Trial {
                let parent = pointer.rsplit_once('/').map_or("", |(p, _)| p).to_string();
                trial_from_component(root.pointer_mut(&parent).expect("slot's parent"))
                    .with_context(|| field.clone())?;
            }
            continue;
        }
        if slot.kind == PathKind::Text {
            if !slot.value.contains('\n') && slot.value != SECRET_PLACEHOLDER {
                let file = match slot.value.strip_prefix("~/") {
                    Some(rest) => Path::new(&std::env::var("HOME").unwrap_or_default()).join(rest),
                    None => resolve(base, &slot.value),
                };
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("{field}: cannot read {}", shown(&file)))?;
                *root.pointer_mut(&pointer).expect("slot") = Json::String(text);
            }
            continue;
        }
        let Some(local) = local_path(&slot.value).with_context(|| field.clone())? else {
            continue;
        };
        let local = resolve(base, &local);
        match slot.kind {
            PathKind::Include
            | PathKind::Component
            | PathKind::Trial
            | PathKind::Text
            | PathKind::Job => {}
            PathKind::Conda => {
                *root.pointer_mut(&pointer).expect("slot") =
                    read_conda(&local).with_context(|| field.clone())?;
            }
            PathKind::BuildContext => {
                // An environment built from a Docker context: its conda or requirements file
                // is the environment, unless the document names a conda file itself.
                let env = pointer.trim_end_matches("/path").trim_end_matches("/build");
                let env = root.pointer_mut(env).expect("slot's environment");
                if env.get("conda_file").is_none_or(Json::is_null)
                    && let Some(conda) = conda_in_context(&local).with_context(|| field.clone())?
                {
                    env["conda_file"] = conda;
                }
            }
            PathKind::LocalDir => {
                *root.pointer_mut(&pointer).expect("slot") =
                    Json::String(local.display().to_string());
            }
            PathKind::Code | PathKind::Data | PathKind::Model => {
                check_local(&local, slot.kind, slot.sibling_type.as_deref())
                    .with_context(|| field.clone())?;
                found.uploads.push(Upload {
                    pointer,
                    local,
                    kind: slot.kind,
                    field,
                });
            }
        }
    }
    Ok(())
}

/// The field's dotted name from the document's root.
fn field_name(at: &str, slot: &PathSlot) -> String {
    let prefix: Vec<String> = at
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    if prefix.is_empty() {
        slot.dotted.clone()
    } else {
        format!("{}.{}", prefix.join("."), slot.dotted)
    }
}

/// The local path a string names, if it names one (not a URI, a reference or an expression);
/// an error for a URI that is malformed or escapes its datastore.
fn local_path(value: &str) -> anyhow::Result<Option<String>> {
    if value.contains("${{") || tarn_spec::refs::looks_like_ref(value) {
        return Ok(None);
    }
    match uri::parse(value).map_err(|e| anyhow::anyhow!("{e}"))? {
        DataUri::Local(p) => Ok(Some(p)),
        _ => Ok(None),
    }
}

/// A local path exists and is what its field needs: code a folder, a `uri_file` a file, a
/// `uri_folder` a folder, an `mltable` a folder with an `MLTable` file.
fn check_local(local: &Path, kind: PathKind, ty: Option<&str>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(local).with_context(|| format!("{} does not exist", shown(local)))?;
    let ty = match kind {
        PathKind::Code => Some("code"),
        PathKind::Data => ty.or(Some("uri_folder")),
        _ => None,
    };
    match ty {
        Some("code") if !meta.is_dir() => bail!("{} is not a folder (code)", shown(local)),
        Some("uri_file") if !meta.is_file() => {
            bail!("{} is not a file (type uri_file)", shown(local))
        }
        Some("uri_folder" | "mltable") if !meta.is_dir() => bail!(
            "{} is not a folder (type {})",
            shown(local),
            ty.unwrap_or_default()
        ),
        Some("mltable") if !local.join("MLTable").is_file() => bail!(
            "an mltable folder needs an `MLTable` file in {}",
            shown(local)
        ),
        _ => Ok(()),
    }
}

/// A conda file, read for inlining.
fn read_conda(path: &Path) -> anyhow::Result<Json> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the conda file {}", shown(path)))?;
    let node = tarn_spec::Node::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid YAML: {}", shown(path), e.message))?;
    Ok(node.to_json())
}

/// The environment a Docker build context describes, as a conda document: its conda file
/// (`conda.yaml`, `conda.yml`, `environment.yml`, `environment.yaml`), else its
/// `requirements.txt` as pip dependencies. `None` when it has neither.
fn conda_in_context(dir: &Path) -> anyhow::Result<Option<Json>> {
    if !dir.is_dir() {
        bail!("the build context {} is not a folder", shown(dir));
    }
    for name in [
        "conda.yaml",
        "conda.yml",
        "environment.yml",
        "environment.yaml",
    ] {
        let file = dir.join(name);
        if file.is_file() {
            return read_conda(&file).map(Some);
        }
    }
    let requirements = dir.join("requirements.txt");
    if requirements.is_file() {
        let text = std::fs::read_to_string(&requirements)
            .with_context(|| format!("cannot read {}", shown(&requirements)))?;
        let pins: Vec<Json> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(|l| Json::String(l.to_string()))
            .collect();
        return Ok(Some(serde_json::json!({
            "dependencies": ["pip", {"pip": pins}]
        })));
    }
    Ok(None)
}

/// A sweep (a job or a pipeline step) whose `trial` is an inlined component: the trial becomes
/// the component's command with its search-space inputs bound to the sampled values; its other
/// inputs' defaults become the sweep's inputs where the sweep gives none. Its code and
/// environment are kept.
fn trial_from_component(sweep: &mut Json) -> anyhow::Result<()> {
    let component = sweep["trial"].take();
    if component["type"].as_str().is_some_and(|t| t != "command") {
        bail!("a sweep's trial must be a command component");
    }
    let space: Vec<String> = sweep["search_space"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut command = component["command"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for p in &space {
        command = command.replace(
            &format!("${{{{inputs.{p}}}}}"),
            &format!("${{{{search_space.{p}}}}}"),
        );
    }
    let mut trial = serde_json::json!({ "command": command });
    for field in [
        "code",
        "environment",
        "environment_variables",
        "distribution",
        "resources",
    ] {
        if !component[field].is_null() {
            trial[field] = component[field].clone();
        }
    }
    for (name, decl) in component["inputs"].as_object().into_iter().flatten() {
        if space.contains(name) || !sweep["inputs"][name].is_null() {
            continue;
        }
        if let Some(default) = decl.get("default").filter(|d| !d.is_null()) {
            if !sweep["inputs"].is_object() {
                sweep["inputs"] = serde_json::json!({});
            }
            sweep["inputs"][name] = default.clone();
        }
    }
    sweep["trial"] = trial;
    Ok(())
}

/// Each component (at any depth under `at`) with `additional_includes` gets a temporary code
/// folder: its code folder's files plus each included file or folder.
fn merge_additional_includes(
    ty: &Ty,
    root: &mut Json,
    at: &str,
    base: &Path,
    found: &mut Found,
) -> anyhow::Result<()> {
    let slots = path_slots(ty, root.pointer(at).unwrap_or(&Json::Null));
    let mut components: Vec<String> = slots
        .iter()
        .filter(|s| s.kind == PathKind::Include)
        .filter_map(|s| s.pointer.rsplit_once("/additional_includes/"))
        .map(|(component, _)| format!("{at}{component}"))
        .collect();
    components.dedup();
    for pointer in components {
        let component = root.pointer_mut(&pointer).expect("slot's component");
        if let Some(tmp) = with_additional_includes(component, base)? {
            found.merged.push(tmp);
        }
    }
    Ok(())
}

/// A path as users would write it: without `.` segments, and `a/b/../c` as `a/c` (`src`, not
/// `././src`). For messages only: the file system is asked with the path as given.
pub(crate) fn shown(path: &Path) -> String {
    let mut clean: Vec<Component> = vec![];
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(clean.last(), Some(Component::Normal(_))) => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let clean: PathBuf = clean.iter().collect();
    if clean.as_os_str().is_empty() {
        ".".into()
    } else {
        clean.display().to_string()
    }
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
        bail!("{} is not a folder", shown(local));
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
                shown(local)
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
    // Paths are kept below the folder asked for; a single file lands directly in `dest`.
    let base = if store_path.is_folder() {
        store_path.as_str().to_string()
    } else if files.len() == 1 && files[0].path == store_path.as_str() {
        store_path
            .as_str()
            .rsplit_once('/')
            .map(|(parent, _)| format!("{parent}/"))
            .unwrap_or_default()
    } else {
        format!("{}/", store_path.as_str())
    };
    transfer::download(client, workspace, &datastore, &base, &files, dest, &bar).await?;
    bar.finish_and_clear();
    Ok(files.len())
}
