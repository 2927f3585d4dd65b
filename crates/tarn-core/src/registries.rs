//! Registries (`tarn registry`, Azure ML's `az ml registry`): models, components, environments
//! and data shared by every workspace, referenced from any of them as
//! `azureml://registries/<registry>/<models|components|environments|data>/<name>/versions/<v>`
//! (or `/labels/latest`).
//!
//! A registry is kept as a workspace of its own named `registry:<name>` (a name no workspace
//! can have), so that its assets are versioned, immutable and stored — files in its own
//! default datastore — exactly as a workspace's, and its roles are role assignments there:
//! Readers use its assets from the workspaces they work in, Owners and Contributors (and
//! Data Scientists) add to it. `Core::authorized_workspace` lets nothing but assets, their
//! files and roles be reached in it (`registry_scope::registry_allows`). Asset paths stored in
//! a registry name it (`azureml://subscriptions/…/workspaces/registry:<name>/datastores/…`), so
//! that a workspace's job resolves them there; `Core::check_registry_references` makes a
//! caller who names a registry asset, in either form, prove they may read that registry, and a
//! job's runner reads its files with the job's token only while the job's submitter still may.
//! The curated `azureml` registry stays Tarn's alias table of environments (`curated.rs`).

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::resources::{ResourceView, Resources, Scope, WriteOptions};
use crate::storage::Storage;
use crate::workspaces::Workspaces;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use tarn_spec::uri::{DataUri, StorePath};
use tarn_spec::{Kind, Node};
use tarn_store::WorkspaceRow;

pub use crate::registry_scope::{PREFIX, is_registry, shown_name, workspace_of};

/// A registry's row: the workspace it is kept as.
pub type RegistryRow = WorkspaceRow;

pub struct Registries {
    core: Arc<Core>,
    workspaces: Arc<Workspaces>,
    resources: Arc<Resources>,
    storage: Arc<Storage>,
}

crate::service_on_core!(Registries);

impl Registries {
    pub(crate) fn new(
        core: Arc<Core>,
        workspaces: Arc<Workspaces>,
        resources: Arc<Resources>,
        storage: Arc<Storage>,
    ) -> Self {
        Registries {
            core,
            workspaces,
            resources,
            storage,
        }
    }

    /// Creates a registry (administrators, as Azure's registries are made by a
    /// subscription's owners); its creator is its Owner.
    pub async fn create_registry(
        &self,
        p: &Principal,
        spec: &Json,
    ) -> Result<(WorkspaceRow, Vec<tarn_spec::Diagnostic>)> {
        if !p.is_admin {
            return Err(Error::Forbidden(
                "only administrators can create registries".into(),
            ));
        }
        let doc = tarn_spec::validate(&Node::from_json(spec), Some(Kind::Registry))
            .map_err(Error::Invalid)?;
        let name = doc.name().unwrap_or_default().to_string();
        let row = self
            .workspaces
            .create_row(p, &workspace_of(&name), doc.spec, None, None, "registry")
            .await?;
        Ok((row, doc.warnings))
    }

    /// The registries the caller has a role in (all of them for administrators).
    pub async fn list_registries(&self, p: &Principal) -> Result<Vec<WorkspaceRow>> {
        let mut out = vec![];
        for ws in self.store.list_workspaces().await? {
            if !is_registry(&ws.name) {
                continue;
            }
            let visible = p.is_admin
                || self.store.role_of(&ws.id, &p.user_id).await?.is_some()
                || !self
                    .store
                    .group_roles_of(&ws.id, &p.groups)
                    .await?
                    .is_empty();
            if visible {
                out.push(ws);
            }
        }
        Ok(out)
    }

    pub async fn show_registry(&self, p: &Principal, name: &str) -> Result<WorkspaceRow> {
        self.registry(p, name, Target::Workspace, Action::Read)
            .await
    }

    /// Deletes a registry with its assets and their files.
    pub async fn delete_registry(&self, p: &Principal, name: &str) -> Result<()> {
        self.registry(p, name, Target::Workspace, Action::Delete)
            .await?;
        self.workspaces
            .delete_workspace(p, &workspace_of(name), true)
            .await
    }

    /// Shares an asset version of a workspace into a registry (`tarn model share`): its files
    /// are copied into the registry's storage, and it keeps where it came from (the
    /// workspace, the asset, the job that made it) in its properties.
    #[allow(clippy::too_many_arguments)]
    pub async fn share(
        &self,
        p: &Principal,
        workspace: &str,
        kind: Kind,
        name: &str,
        version: &str,
        registry: &str,
        share_with_name: Option<&str>,
        share_with_version: Option<&str>,
    ) -> Result<ResourceView> {
        if !kind.is_asset() {
            return Err(Error::invalid(
                "",
                "only models, components, environments and data are shared to registries",
            ));
        }
        let from = Scope {
            workspace,
            kind,
            parent: None,
        };
        let source = self
            .resources
            .show_resource(p, from, name, Some(version))
            .await?;
        let registry_ws = workspace_of(registry);
        // The caller must be able to add to the registry before anything is copied.
        let reg = self
            .registry(p, registry, Target::Resource(kind), Action::Write)
            .await?;
        let new_name = share_with_name.unwrap_or(name);
        let new_version = share_with_version.unwrap_or(&source.row.key.version);
        // A version the registry has already is refused before any file is copied, so a
        // refused share leaves nothing behind.
        let into = Scope {
            workspace: &registry_ws,
            kind,
            parent: None,
        };
        if self
            .store
            .get_resource(&into.key(&reg.id, new_name, new_version))
            .await?
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "{} already exists; asset versions are immutable: share with another --share-with-version",
                into.what(new_name, Some(new_version))
            )));
        }
        let mut spec = source.row.spec.clone();
        spec["name"] = json!(new_name);
        spec["version"] = json!(new_version);
        for slot in tarn_spec::schema::path_slots(tarn_spec::schema(kind), &source.row.spec) {
            let Ok(DataUri::Datastore {
                workspace: None,
                datastore,
                path,
            }) = tarn_spec::uri::parse(&slot.value)
            else {
                continue; // a URI every workspace reads alike (a web file, another registry's)
            };
            let dest = StorePath::parse(&format!(
                "shared/{}/{new_name}/{new_version}/{}",
                kind.collection(),
                slot.dotted.replace(['[', ']', '.'], "_")
            ))
            .map_err(|e| Error::invalid(&slot.dotted, e.to_string()))?;
            let copied = self
                .copy_files(p, workspace, &datastore, &path, &registry_ws, &dest)
                .await?;
            if let Some(at) = spec.pointer_mut(&slot.pointer) {
                *at = Json::String(tarn_spec::uri::datastore_uri(
                    crate::DEFAULT_DATASTORE,
                    &copied,
                ));
            }
        }
        let properties = spec
            .as_object_mut()
            .expect("an asset is a mapping")
            .entry("properties")
            .or_insert_with(|| json!({}));
        if !properties.is_object() {
            *properties = json!({});
        }
        properties["azureml.shared_from.workspace"] = json!(workspace);
        properties["azureml.shared_from.asset"] = json!(format!("azureml:{name}:{version}"));
        if let Some(job) = source.row.spec.get("job_name").and_then(Json::as_str) {
            properties["azureml.shared_from.job"] = json!(job);
        }
        self.resources
            .create_resource(p, into, &spec, WriteOptions::default())
            .await
    }

    /// Copies a file or folder of a workspace's datastore into a registry's default
    /// datastore under `dest`; returns the path it has there (a file keeps its name).
    async fn copy_files(
        &self,
        p: &Principal,
        workspace: &str,
        datastore: &str,
        path: &StorePath,
        registry_ws: &str,
        dest: &StorePath,
    ) -> Result<StorePath> {
        let base = path.as_str().trim_end_matches('/');
        let listing = self
            .storage
            .list_paths(p, workspace, datastore, path.as_str(), true)
            .await?;
        let (files, target): (Vec<(String, String)>, StorePath) = if listing.files.is_empty() {
            // A single file: it keeps its name under `dest`.
            let file_name = base.rsplit('/').next().unwrap_or(base);
            let to = dest
                .join(file_name)
                .map_err(|e| Error::invalid("path", e.to_string()))?;
            (
                vec![(base.to_string(), to.as_str().to_string())],
                to.clone(),
            )
        } else {
            let files = listing
                .files
                .into_iter()
                .map(|f| {
                    let rel = f
                        .path
                        .strip_prefix(base)
                        .unwrap_or(&f.path)
                        .trim_start_matches('/')
                        .to_string();
                    let to = format!("{}/{rel}", dest.as_str().trim_end_matches('/'));
                    (f.path, to)
                })
                .collect();
            let folder = StorePath::parse(&format!("{}/", dest.as_str().trim_end_matches('/')))
                .map_err(|e| Error::invalid("path", e.to_string()))?;
            (files, folder)
        };
        for (from, to) in files {
            let (info, body) = self
                .storage
                .download(p, workspace, datastore, &from)
                .await?;
            self.storage
                .upload(
                    p,
                    registry_ws,
                    crate::DEFAULT_DATASTORE,
                    &to,
                    body,
                    info.sha256.as_deref(),
                )
                .await?;
        }
        Ok(target)
    }
}
