//! Workspaces: the top-level resource. Creating one makes its storage root and its four
//! default datastores in the same store transaction as the workspace row.

use crate::Core;
use crate::authz::{Action, Principal, Role, Target};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::resources::{DEFAULT_DATASTORE, DEFAULT_DATASTORES, secret_prefix};
use serde_json::{Value as Json, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tarn_spec::{Kind, Node};
use tarn_store::{ResourceKey, ResourceRow, RoleRow, StoreError, WorkspaceRow};

pub struct WorkspaceView {
    pub row: WorkspaceRow,
    pub mlflow_tracking_uri: String,
    pub default_datastore: &'static str,
}

/// Workspaces: the top-level resource, with their default datastores and role grants.
pub struct Workspaces {
    core: Arc<Core>,
}

crate::service_on_core!(Workspaces);

impl Workspaces {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Workspaces { core }
    }
}

impl Workspaces {
    fn workspace_view(&self, row: WorkspaceRow) -> WorkspaceView {
        let mlflow_tracking_uri = format!("{}/ws/{}/mlflow", self.config.public_url, row.name);
        WorkspaceView {
            row,
            mlflow_tracking_uri,
            default_datastore: DEFAULT_DATASTORE,
        }
    }

    /// Creates a workspace from a validated spec (JSON, as the API receives it).
    pub async fn create_workspace(
        &self,
        p: &Principal,
        spec: &Json,
    ) -> Result<(WorkspaceView, Vec<tarn_spec::Diagnostic>)> {
        if !p.is_admin {
            return Err(Error::Forbidden(
                "only administrators can create workspaces".into(),
            ));
        }
        let doc = tarn_spec::validate(&Node::from_json(spec), Some(Kind::Workspace))
            .map_err(Error::Invalid)?;
        let name = doc.name().unwrap_or_default().to_string();
        let storage = lifted_store(&doc, "storage", &STORAGE_TYPES)?;
        let artifact_store = lifted_store(&doc, "artifact_store", &ARTIFACT_STORE_TYPES)?;
        trace_retention_days(&doc.spec)?;
        let row = self
            .create_row(
                p,
                &name,
                doc.spec.clone(),
                storage.as_ref(),
                artifact_store.as_ref(),
                "workspace",
            )
            .await?;
        Ok((self.workspace_view(row), doc.warnings))
    }

    /// Makes a workspace row named `name` (a workspace's, or a registry's own), its storage
    /// root and default datastores, with `p` its Owner — all in one store transaction.
    pub(crate) async fn create_row(
        &self,
        p: &Principal,
        name: &str,
        spec: Json,
        storage: Option<&Json>,
        artifact_store: Option<&Json>,
        noun: &str,
    ) -> Result<WorkspaceRow> {
        let name = name.to_string();
        if self.store.get_workspace(&name).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("{noun} {:?}", crate::registry_scope::shown_name(&name)),
            });
        }
        let id = uuid::Uuid::new_v4().to_string();
        let root = self.config.workspaces_dir().join(&id);
        let now = now_ms();
        let defaults = default_datastores(&id, &root, storage, artifact_store, &p.name, now)?;
        let mut datastores = vec![];
        let mut secrets = vec![];
        for (row, lifted) in defaults {
            ready(&row, &lifted).await?;
            secrets.extend(self.seal_all(&id, &row.key, &lifted));
            datastores.push(row);
        }
        let row = WorkspaceRow {
            id: id.clone(),
            name: name.clone(),
            spec,
            storage_root: root.display().to_string(),
            created_at: now,
            updated_at: now,
        };
        let owner = RoleRow {
            workspace_id: id,
            user_id: p.user_id.clone(),
            user_name: p.name.clone(),
            role: Role::Owner.as_str().into(),
            created_at: now,
        };
        if let Err(e) = self
            .store
            .create_workspace(&row, &datastores, &secrets, &[owner])
            .await
        {
            let _ = tokio::fs::remove_dir_all(&root).await;
            return Err(match e {
                StoreError::Conflict => Error::AlreadyExists {
                    what: format!("{noun} {:?}", crate::registry_scope::shown_name(&name)),
                },
                e => e.into(),
            });
        }
        Ok(row)
    }

    /// The workspaces the caller has a role in, theirs or a group's (all of them for
    /// administrators; a narrowed token's one).
    pub async fn list_workspaces(&self, p: &Principal) -> Result<Vec<WorkspaceView>> {
        let mut out = Vec::new();
        for ws in self.store.list_workspaces().await? {
            if crate::registry_scope::is_registry(&ws.name) {
                continue;
            }
            let visible = match &p.limit {
                Some(l) if l.workspace_id != ws.id => false,
                Some(l) if l.user_is_admin => true,
                _ => {
                    p.is_admin
                        || self.store.role_of(&ws.id, &p.user_id).await?.is_some()
                        || !self
                            .store
                            .group_roles_of(&ws.id, &p.groups)
                            .await?
                            .is_empty()
                }
            };
            if visible {
                out.push(self.workspace_view(ws));
            }
        }
        Ok(out)
    }

    pub async fn show_workspace(&self, p: &Principal, name: &str) -> Result<WorkspaceView> {
        let ws = self
            .authorized_workspace(p, name, Target::Workspace, Action::Read)
            .await?;
        Ok(self.workspace_view(ws))
    }

    /// Replaces the workspace's spec; the name cannot change.
    pub async fn update_workspace(
        &self,
        p: &Principal,
        name: &str,
        spec: &Json,
    ) -> Result<(WorkspaceView, Vec<tarn_spec::Diagnostic>)> {
        // A change to the workspace itself starts from its stored row, not one cached a
        // moment ago (another server may have just changed it).
        self.forget_workspace(name);
        let mut ws = self
            .authorized_workspace(p, name, Target::Workspace, Action::Write)
            .await?;
        let doc = tarn_spec::validate(&Node::from_json(spec), Some(Kind::Workspace))
            .map_err(Error::Invalid)?;
        if doc.name() != Some(name) {
            return Err(Error::invalid(
                "name",
                format!("workspaces cannot be renamed (from {name:?})"),
            ));
        }
        trace_retention_days(&doc.spec)?;
        if doc.spec.get("storage") != ws.spec.get("storage") {
            return Err(Error::invalid(
                "storage",
                "a workspace's storage is chosen when it is created and cannot change",
            ));
        }
        // Its artifact store may move: new runs' artifacts go to the new place (old runs'
        // stay where they were written, as with `mlflow server --artifacts-destination`).
        let moved = if doc.spec.get("artifact_store") != ws.spec.get("artifact_store")
            || !doc.secrets.is_empty()
        {
            Some(self.moved_artifact_store(&ws, &doc).await?)
        } else {
            None
        };
        crate::audit::note_changes(&ws.spec, &doc.spec, &[]);
        ws.spec = doc.spec;
        ws.updated_at = now_ms();
        // The workspace and its moved artifact store are written together, or neither is.
        let prefix = moved.as_ref().map(|(row, _)| secret_prefix(&row.key));
        let resource = moved
            .as_ref()
            .zip(prefix.as_deref())
            .map(|((row, secrets), prefix)| (row, prefix, secrets.as_slice()));
        let updated = self.store.update_workspace_with(&ws, resource).await?;
        self.forget_workspace(name);
        if !updated {
            return Err(Error::not_found(format!("workspace {name:?}")));
        }
        Ok((self.workspace_view(ws), doc.warnings))
    }

    /// Deletes the workspace's metadata; its storage is removed only with `all_resources`
    /// (as `az ml workspace delete --all-resources`), so data is never lost by accident.
    pub async fn delete_workspace(
        &self,
        p: &Principal,
        name: &str,
        all_resources: bool,
    ) -> Result<()> {
        let ws = self
            .authorized_workspace(p, name, Target::Workspace, Action::Delete)
            .await?;
        let deleted = self.store.delete_workspace(&ws.id).await?;
        self.forget_workspace(name);
        if !deleted {
            return Err(Error::not_found(format!("workspace {name:?}")));
        }
        if all_resources {
            let root = PathBuf::from(&ws.storage_root);
            if root.starts_with(self.config.workspaces_dir()) {
                tokio::fs::remove_dir_all(&root)
                    .await
                    .or_else(ignore_missing)
                    .map_err(Error::Io)?;
            }
        }
        Ok(())
    }
}

impl Workspaces {
    /// The workspace's `workspaceartifactstore` pointed where `doc` says (its `artifact_store`,
    /// else the default), with its secrets sealed, once the place answers (an error if not).
    async fn moved_artifact_store(
        &self,
        ws: &WorkspaceRow,
        doc: &tarn_spec::Document,
    ) -> Result<(ResourceRow, Vec<tarn_store::SecretRow>)> {
        let storage = lifted_store(doc, "storage", &STORAGE_TYPES)?;
        let artifact_store = lifted_store(doc, "artifact_store", &ARTIFACT_STORE_TYPES)?;
        if storage.is_some() && artifact_store.is_none() {
            // Its credentials are sealed with the storage's other datastores, not given here.
            return Err(Error::invalid(
                "artifact_store",
                "this workspace's artifact store defaults to a folder of its storage: to move it \
                 back there, give the storage's datastore file as the artifact store",
            ));
        }
        let root = PathBuf::from(&ws.storage_root);
        let (row, lifted) = default_datastores(
            &ws.id,
            &root,
            storage.as_ref(),
            artifact_store.as_ref(),
            "",
            now_ms(),
        )?
        .into_iter()
        .find(|(row, _)| row.key.name == ARTIFACT_STORE)
        .expect("the artifact store is a default datastore");
        ready(&row, &lifted).await?;
        let current = self
            .store
            .get_resource(&row.key)
            .await?
            .ok_or_else(|| Error::not_found(format!("datastore {ARTIFACT_STORE:?}")))?;
        let sealed = self.seal_all(&ws.id, &row.key, &lifted);
        let moved = ResourceRow {
            spec: row.spec,
            updated_at: now_ms(),
            ..current
        };
        Ok((moved, sealed))
    }
}

/// A default datastore made ready before it is stored: a local folder made, anything else
/// checked to answer (with its secrets).
async fn ready(row: &ResourceRow, lifted: &LiftedSecrets) -> Result<()> {
    match row.spec["type"].as_str() {
        Some("local") => {
            let path = row.spec["path"].as_str().unwrap_or_default();
            tokio::fs::create_dir_all(path).await.map_err(|e| {
                Error::invalid(&row.key.name, format!("cannot make the folder {path}: {e}"))
            })?;
        }
        _ => {
            let mut spec = row.spec.clone();
            for (path, value) in lifted {
                crate::resources::set_path(&mut spec, path, value.clone());
            }
            crate::storage::check_datastore(&row.key.name, &spec, Default::default()).await?;
        }
    }
    Ok(())
}

/// The workspace's `field` (`storage`, `artifact_store`) with its secrets, if it has one of
/// the `allowed` types.
fn lifted_store(doc: &tarn_spec::Document, field: &str, allowed: &[&str]) -> Result<Option<Json>> {
    let Some(store) = doc.spec.get(field).filter(|s| s.is_object()) else {
        return Ok(None);
    };
    let kind = store.get("type").and_then(Json::as_str).unwrap_or_default();
    if !allowed.contains(&kind) {
        return Err(Error::invalid(
            &format!("{field}.type"),
            format!(
                "a workspace's {field} must be one of {}, not {kind:?}",
                allowed.join(", ")
            ),
        ));
    }
    let mut spec = json!({ field: store.clone() });
    for (path, value) in &doc.secrets {
        crate::resources::set_path(&mut spec, path, value.clone());
    }
    Ok(spec.get(field).cloned())
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// `(dotted path, value)` of each secret lifted out of a spec, to be sealed in the vault.
type LiftedSecrets = Vec<(String, Json)>;

/// The blob-type datastores go to the workspace's `storage` when it has one.
const BLOB_DEFAULTS: [&str; 2] = ["workspaceblobstore", "workspaceartifactstore"];
/// Datastore types a workspace's storage may be.
const STORAGE_TYPES: [&str; 4] = ["azure_blob", "azure_data_lake_gen2", "s3", "gcs"];
/// Its artifact store may also be a folder.
const ARTIFACT_STORE_TYPES: [&str; 5] =
    ["local", "azure_blob", "azure_data_lake_gen2", "s3", "gcs"];
const ARTIFACT_STORE: &str = "workspaceartifactstore";

/// The four default datastores: local directories under `root`, except that with `storage`
/// (a datastore spec with its secrets) the blob-type ones are folders of that storage, and with
/// `artifact_store` the artifact store is that place itself.
/// Returns each row with the secrets to seal for it.
fn default_datastores(
    id: &str,
    root: &Path,
    storage: Option<&Json>,
    artifact_store: Option<&Json>,
    creator: &str,
    now: i64,
) -> Result<Vec<(ResourceRow, LiftedSecrets)>> {
    let short = &id[..8];
    DEFAULT_DATASTORES
        .iter()
        .map(|(name, dir, about)| {
            let dir = match *dir {
                "azureml" => "azureml".to_string(),
                other => format!("{other}-{short}"),
            };
            let spec = match (storage, artifact_store) {
                (_, Some(store)) if *name == ARTIFACT_STORE => {
                    let mut spec = store.clone();
                    spec["name"] = json!(name);
                    spec["description"] = json!(about);
                    spec
                }
                (Some(storage), _) if BLOB_DEFAULTS.contains(name) => {
                    let mut spec = storage.clone();
                    let base = spec
                        .get("prefix")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .trim_matches('/')
                        .to_string();
                    let prefix = if base.is_empty() {
                        dir
                    } else {
                        format!("{base}/{dir}")
                    };
                    spec["name"] = json!(name);
                    spec["prefix"] = json!(prefix);
                    spec["description"] = json!(about);
                    spec
                }
                _ => json!({
                    "name": name,
                    "type": "local",
                    "path": root.join(dir).display().to_string(),
                    "description": about,
                }),
            };
            let doc = tarn_spec::validate(&Node::from_json(&spec), Some(Kind::Datastore))
                .map_err(Error::Invalid)?;
            let row = ResourceRow {
                key: ResourceKey {
                    workspace_id: id.to_string(),
                    kind: Kind::Datastore.collection().into(),
                    parent: String::new(),
                    name: name.to_string(),
                    version: String::new(),
                },
                seq: 0,
                spec: doc.spec,
                archived: false,
                created_by: creator.to_string(),
                created_at: now,
                updated_at: now,
            };
            Ok((row, doc.secrets))
        })
        .collect()
}

/// A workspace's `trace_retention_days`: how long its MLflow traces are kept (`None`: for
/// ever). Refused unless it is a whole number of days, at least one.
pub fn trace_retention_days(spec: &Json) -> Result<Option<i64>> {
    match spec.get("trace_retention_days") {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(days) if days >= 1 => Ok(Some(days)),
            _ => Err(Error::invalid(
                "trace_retention_days",
                format!(
                    "trace_retention_days must be a whole number of days, at least 1 (got {v})"
                ),
            )),
        },
    }
}
