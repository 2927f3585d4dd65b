//! Workspace resources: computes, datastores, assets, endpoints and deployments, stored as
//! validated specs. Assets are versioned and immutable (only description, tags and stage
//! change; archive instead of delete); references to other resources are checked and
//! `@latest` is pinned to a version when a resource is created.

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::now_ms;
pub use crate::scope::{Scope, WriteOptions};
use serde_json::Value as Json;
use std::sync::{Arc, Weak};
use tarn_spec::names::NameRule;
use tarn_spec::refs::{self, AssetRef, ComputeRef};
use tarn_spec::{Diagnostic, Document, Kind, Node, SECRET_PLACEHOLDER};
use tarn_store::WorkspaceRow;
use tarn_store::{ResourceFilter, ResourceKey, ResourceRow, SecretRow, StoreError};

pub struct ResourceView {
    pub kind: Kind,
    pub row: ResourceRow,
    /// The endpoint a deployment belongs to.
    pub parent: Option<String>,
    pub warnings: Vec<Diagnostic>,
}

/// The datastore jobs and uploads use unless told otherwise.
pub const DEFAULT_DATASTORE: &str = "workspaceblobstore";

/// The four datastores every workspace gets, with the local directory each uses (Azure ML's
/// container names, so paths look familiar) and what it is for.
pub const DEFAULT_DATASTORES: [(&str, &str, &str); 4] = [
    (
        "workspaceblobstore",
        "azureml-blobstore",
        "default datastore: data uploads, code snapshots, job outputs",
    ),
    (
        "workspaceartifactstore",
        "azureml",
        "run artifacts: metrics files, models, logs",
    ),
    (
        "workspacefilestore",
        "azureml-filestore",
        "file share: an alternative upload target",
    ),
    (
        "workspaceworkingdirectory",
        "code",
        "file share: notebooks and users' files on compute instances",
    ),
];

/// Fields of an asset version that may change after creation.
const MUTABLE_ASSET_FIELDS: &[&str] = &["description", "tags", "stage"];

/// Secrets of one resource version are named `<prefix>#<field path>`.
pub(crate) fn secret_prefix(key: &ResourceKey) -> String {
    format!("{}:{}:{}@{}", key.kind, key.parent, key.name, key.version)
}

fn contains_placeholder(v: &Json) -> bool {
    match v {
        Json::String(s) => s == SECRET_PLACEHOLDER,
        Json::Array(items) => items.iter().any(contains_placeholder),
        Json::Object(map) => map.values().any(contains_placeholder),
        _ => false,
    }
}

/// Resources and versioned assets: validating, storing (secrets sealed), listing and
/// archiving them. The services above hear of writes of their kinds through [`KindHooks`].
pub struct Resources {
    core: Arc<Core>,
    /// Who checks and follows up writes of a kind (see [`KindHooks`]).
    hooks: std::sync::RwLock<Vec<(Kind, Weak<dyn KindHooks>)>>,
}

crate::service_on_core!(Resources);

impl Resources {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Resources {
            core,
            hooks: Default::default(),
        }
    }

    /// Makes `hooks` hear of writes of `kinds`.
    pub(crate) fn add_hooks(&self, kinds: &[Kind], hooks: Weak<dyn KindHooks>) {
        let mut all = self.hooks.write().expect("hooks lock");
        all.extend(kinds.iter().map(|k| (*k, hooks.clone())));
    }

    fn hooks_for(&self, kind: Kind) -> Option<Arc<dyn KindHooks>> {
        let all = self.hooks.read().expect("hooks lock");
        all.iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, h)| h.upgrade())
    }
}

/// A write of a resource, as the service of its kind sees it.
pub(crate) struct Write<'a> {
    pub p: &'a Principal,
    pub ws: &'a WorkspaceRow,
    pub kind: Kind,
    /// The endpoint, for a deployment.
    pub parent: Option<&'a str>,
    pub name: &'a str,
    pub options: WriteOptions,
    /// A create (not an update or a delete).
    pub creating: bool,
}

/// What a service above `resources` does when a resource of its kind is written: `resources`
/// cannot name those services (they build on it), so they register these (see `lib.rs`).
#[async_trait::async_trait]
pub(crate) trait KindHooks: Send + Sync {
    /// Checks, and may complete, a document before it is stored; `full` is its spec with its
    /// secrets (the new ones, or else the stored ones). An error refuses the write.
    async fn check(&self, w: &Write<'_>, doc: &mut Document, full: &Json) -> Result<()>;
    /// Follows up a write once it is stored (`spec`: the stored spec) or deleted (`None`).
    async fn written(&self, w: &Write<'_>, spec: Option<&Json>) -> Result<()>;
}

impl Resources {
    fn validate_for(&self, scope: &Scope<'_>, spec: &Json) -> Result<Document> {
        if !Kind::RESOURCES.contains(&scope.kind) {
            return Err(Error::invalid(
                "",
                format!("{}s are not managed through this API", scope.kind.noun()),
            ));
        }
        if crate::registry_scope::is_registry(scope.workspace) && !scope.kind.is_asset() {
            return Err(Error::invalid(
                "",
                format!(
                    "registry {:?} holds models, components, environments and data, not {}s",
                    crate::registry_scope::shown_name(scope.workspace),
                    scope.kind.noun()
                ),
            ));
        }
        tarn_spec::validate(&Node::from_json(spec), Some(scope.kind)).map_err(Error::Invalid)
    }

    /// Creates a resource (a new version, for assets).
    pub async fn create_resource(
        &self,
        p: &Principal,
        scope: Scope<'_>,
        spec: &Json,
        options: WriteOptions,
    ) -> Result<ResourceView> {
        let ws = self.resource_workspace(p, &scope, Action::Write).await?;
        let mut doc = self.validate_for(&scope, spec)?;
        let name = doc.name().unwrap_or_default().to_string();
        let endpoint = deployment_endpoint(&scope, &doc)?;
        let scope = Scope {
            parent: endpoint.as_deref(),
            ..scope
        };
        if let Some(endpoint) = scope.parent {
            let parent_kind = scope.kind.parent().expect("deployments have a parent kind");
            let parent_scope = Scope {
                workspace: scope.workspace,
                kind: parent_kind,
                parent: None,
            };
            if self
                .store
                .get_resource(&parent_scope.key(&ws.id, endpoint, ""))
                .await?
                .is_none()
            {
                return Err(Error::invalid(
                    "endpoint_name",
                    format!("{} does not exist", parent_scope.what(endpoint, None)),
                ));
            }
            if let Some(obj) = doc.spec.as_object_mut() {
                obj.insert("endpoint_name".into(), Json::String(endpoint.to_string()));
            }
        }
        self.resolve_references(&ws.id, scope.kind, &mut doc.spec)
            .await?;
        self.check_registry_references(p, &doc.spec).await?;
        if crate::registry_scope::is_registry(&ws.name) {
            // Its files' paths name the registry, so every workspace resolves them there.
            crate::registry_scope::pin_paths(scope.kind, &ws.name, &mut doc.spec);
        }
        if matches!(scope.kind, Kind::Data | Kind::Model)
            && let Some(path) = doc.spec.get("path").and_then(Json::as_str)
        {
            // A URI Tarn understands, staying inside its datastore (`..` is refused here, not
            // only by the CLI).
            tarn_spec::uri::parse(path).map_err(|e| Error::invalid("path", e.to_string()))?;
        }
        self.check_traffic(&ws.id, &scope, &name, &doc.spec).await?;
        let full = merged(&doc);
        if scope.kind == Kind::Datastore {
            let warnings = crate::storage::check_datastore(&name, &full, options).await?;
            doc.warnings.extend(warnings);
        }
        let write = Write {
            p,
            ws: &ws,
            kind: scope.kind,
            parent: scope.parent,
            name: &name,
            options,
            creating: true,
        };
        let hooks = self.hooks_for(scope.kind);
        if let Some(hooks) = &hooks {
            hooks.check(&write, &mut doc, &full).await?;
        }
        let now = now_ms();
        let version = if scope.kind.is_asset() {
            doc.version().unwrap_or_default().to_string()
        } else {
            String::new()
        };
        let mut row = ResourceRow {
            key: scope.key(&ws.id, &name, &version),
            seq: 0,
            spec: doc.spec,
            archived: false,
            created_by: p.name.clone(),
            created_at: now,
            updated_at: now,
        };
        let result = if scope.kind.is_asset() && version.is_empty() {
            // Auto-versioning; a concurrent create may take the number, so retry.
            let mut attempt = 0;
            loop {
                let probe = ResourceKey {
                    version: format!("auto-{attempt}"),
                    ..row.key.clone()
                };
                let secrets = self.seal_all(&ws.id, &probe, &doc.secrets);
                match self.store.insert_next_version(&row, &secrets).await {
                    Ok(v) => {
                        row.key.version = v.clone();
                        if let Some(obj) = row.spec.as_object_mut() {
                            obj.insert("version".into(), Json::String(v));
                        }
                        break Ok(());
                    }
                    Err(StoreError::Conflict) if attempt < 5 => attempt += 1,
                    Err(e) => break Err(e),
                }
            }
        } else {
            let secrets = self.seal_all(&ws.id, &row.key, &doc.secrets);
            self.store.insert_resource(&row, &secrets).await
        };
        match result {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                let what = scope.what(&name, Some(&version));
                let hint = if scope.kind.is_asset() {
                    "; asset versions are immutable: create a new version"
                } else {
                    "; change it with `update`"
                };
                return Err(Error::Conflict(format!("{what} already exists{hint}")));
            }
            Err(e) => return Err(e.into()),
        }
        let stored = self.store.get_resource(&row.key).await?.unwrap_or(row);
        if let Some(hooks) = &hooks {
            hooks.written(&write, Some(&stored.spec)).await?;
        }
        Ok(ResourceView {
            kind: scope.kind,
            row: stored,
            parent: scope.parent.map(str::to_string),
            warnings: doc.warnings,
        })
    }

    /// Checks that referenced assets and computes exist and pins `@latest` to a version.
    async fn resolve_references(
        &self,
        workspace_id: &str,
        kind: Kind,
        spec: &mut Json,
    ) -> Result<()> {
        let fields: &[(&str, Kind, NameRule)] = match kind {
            Kind::Component => &[("environment", Kind::Environment, NameRule::Asset)],
            Kind::OnlineDeployment | Kind::BatchDeployment => &[
                ("environment", Kind::Environment, NameRule::Asset),
                ("model", Kind::Model, NameRule::Asset),
                ("component", Kind::Component, NameRule::Component),
            ],
            _ => &[],
        };
        for (field, target, rule) in fields {
            let Some(text) = spec.get(*field).and_then(Json::as_str).map(str::to_string) else {
                continue;
            };
            if *field == "component" && !refs::looks_like_ref(&text) {
                continue; // a local component file, uploaded with its deployment later
            }
            let parsed = refs::parse_asset_ref(&text, *rule)
                .map_err(|e| Error::invalid(field, e.to_string()))?;
            let scope = Scope {
                workspace: "",
                kind: *target,
                parent: None,
            };
            let found = match &parsed {
                AssetRef::Registry { .. } => continue,
                AssetRef::Version { name, version } => {
                    self.store
                        .get_resource(&scope.key(workspace_id, name, version))
                        .await?
                }
                AssetRef::Label { name, .. } => {
                    self.store
                        .latest_resource(&scope.key(workspace_id, name, ""))
                        .await?
                }
            };
            let Some(found) = found else {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{} {text:?} does not exist in this workspace",
                        target.noun()
                    ),
                ));
            };
            spec[*field] =
                Json::String(format!("azureml:{}:{}", found.key.name, found.key.version));
        }
        if kind == Kind::BatchDeployment
            && let Some(text) = spec.get("compute").and_then(Json::as_str)
            && let Ok(ComputeRef::Named(name)) = refs::parse_compute_ref(text)
        {
            let scope = Scope {
                workspace: "",
                kind: Kind::Compute,
                parent: None,
            };
            if self
                .store
                .get_resource(&scope.key(workspace_id, &name, ""))
                .await?
                .is_none()
            {
                return Err(Error::invalid(
                    "compute",
                    format!("compute {name:?} does not exist in this workspace"),
                ));
            }
        }
        Ok(())
    }

    /// An endpoint's traffic and mirror traffic may only name its existing deployments.
    async fn check_traffic(
        &self,
        workspace_id: &str,
        scope: &Scope<'_>,
        name: &str,
        spec: &Json,
    ) -> Result<()> {
        if scope.kind != Kind::OnlineEndpoint {
            return Ok(());
        }
        let deployments = Scope {
            workspace: scope.workspace,
            kind: Kind::OnlineDeployment,
            parent: Some(name),
        };
        for field in ["traffic", "mirror_traffic"] {
            for (deployment, _) in spec
                .get(field)
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
            {
                let key = deployments.key(workspace_id, deployment, "");
                if self.store.get_resource(&key).await?.is_none() {
                    return Err(Error::invalid(
                        &format!("{field}.{deployment}"),
                        format!("{} does not exist", deployments.what(deployment, None)),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The workspace of `scope`, if the caller may do `action` on its kind of resource.
    async fn resource_workspace(
        &self,
        p: &Principal,
        scope: &Scope<'_>,
        action: Action,
    ) -> Result<tarn_store::WorkspaceRow> {
        self.authorized_workspace(p, scope.workspace, Target::Resource(scope.kind), action)
            .await
    }

    /// One resource: a given version, or for assets without one, the latest.
    pub async fn show_resource(
        &self,
        p: &Principal,
        scope: Scope<'_>,
        name: &str,
        version: Option<&str>,
    ) -> Result<ResourceView> {
        let ws = self.resource_workspace(p, &scope, Action::Read).await?;
        let row = self.find(&ws.id, &scope, name, version).await?;
        Ok(ResourceView {
            kind: scope.kind,
            row,
            parent: scope.parent.map(str::to_string),
            warnings: vec![],
        })
    }

    async fn find(
        &self,
        workspace_id: &str,
        scope: &Scope<'_>,
        name: &str,
        version: Option<&str>,
    ) -> Result<ResourceRow> {
        let row = match (scope.kind.is_asset(), version) {
            (true, None) | (true, Some("latest")) => {
                self.store
                    .latest_resource(&scope.key(workspace_id, name, ""))
                    .await?
            }
            (true, Some(v)) => {
                self.store
                    .get_resource(&scope.key(workspace_id, name, v))
                    .await?
            }
            (false, _) => {
                self.store
                    .get_resource(&scope.key(workspace_id, name, ""))
                    .await?
            }
        };
        row.ok_or_else(|| Error::not_found(scope.what(name, version)))
    }

    /// Lists resources: for assets, the latest version of each name unless `name` is given
    /// (then every version of it).
    pub async fn list_resources(
        &self,
        p: &Principal,
        scope: Scope<'_>,
        name: Option<&str>,
        include_archived: bool,
    ) -> Result<Vec<ResourceView>> {
        let ws = self.resource_workspace(p, &scope, Action::Read).await?;
        let parent = scope.parent_key();
        let filter = ResourceFilter {
            parent: &parent,
            name,
            include_archived,
            latest_only: scope.kind.is_asset() && name.is_none() && !include_archived,
        };
        let rows = self
            .store
            .list_resources(&ws.id, scope.kind.collection(), &filter)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| ResourceView {
                kind: scope.kind,
                row,
                parent: scope.parent.map(str::to_string),
                warnings: vec![],
            })
            .collect())
    }

    /// Replaces a resource's spec. Names never change; asset versions only change their
    /// description, tags and stage; secrets left as the placeholder keep their stored value.
    pub async fn update_resource(
        &self,
        p: &Principal,
        scope: Scope<'_>,
        name: &str,
        version: Option<&str>,
        spec: &Json,
        options: WriteOptions,
    ) -> Result<ResourceView> {
        let ws = self.resource_workspace(p, &scope, Action::Write).await?;
        let current = self.find(&ws.id, &scope, name, version).await?;
        if scope.kind == Kind::Datastore && DEFAULT_DATASTORES.iter().any(|(n, _, _)| *n == name) {
            return Err(Error::Conflict(format!(
                "{name:?} is a default datastore of the workspace and cannot be changed"
            )));
        }
        let mut doc = self.validate_for(&scope, spec)?;
        if doc.name() != Some(name) {
            return Err(Error::invalid(
                "name",
                format!("{}s cannot be renamed (from {name:?})", scope.kind.noun()),
            ));
        }
        if scope.kind.is_asset() {
            let mut proposed = doc.spec.clone();
            let mut existing = current.spec.clone();
            for field in MUTABLE_ASSET_FIELDS.iter().chain(&["version"]) {
                proposed.as_object_mut().map(|o| o.remove(*field));
                existing.as_object_mut().map(|o| o.remove(*field));
            }
            if proposed != existing {
                return Err(Error::invalid(
                    "",
                    format!(
                        "{} is immutable: only {} can change; create a new version instead",
                        scope.what(name, Some(&current.key.version)),
                        MUTABLE_ASSET_FIELDS.join(", ")
                    ),
                ));
            }
            if let Some(obj) = doc.spec.as_object_mut() {
                obj.insert("version".into(), Json::String(current.key.version.clone()));
            }
        }
        if let Some(endpoint) = scope.parent
            && let Some(obj) = doc.spec.as_object_mut()
        {
            obj.insert("endpoint_name".into(), Json::String(endpoint.to_string()));
        }
        self.resolve_references(&ws.id, scope.kind, &mut doc.spec)
            .await?;
        self.check_registry_references(p, &doc.spec).await?;
        self.check_traffic(&ws.id, &scope, name, &doc.spec).await?;
        // Checked as it will be: new secrets if given, else the stored ones (read only for the
        // kinds whose checks open them: every other update skips the vault).
        let full =
            if doc.secrets.is_empty() && matches!(scope.kind, Kind::Datastore | Kind::Compute) {
                let with_stored = ResourceRow {
                    spec: merged(&doc),
                    ..current.clone()
                };
                self.with_secrets(&ws.id, &with_stored).await?
            } else {
                merged(&doc)
            };
        if scope.kind == Kind::Datastore {
            let warnings = crate::storage::check_datastore(name, &full, options).await?;
            doc.warnings.extend(warnings);
        }
        let write = Write {
            p,
            ws: &ws,
            kind: scope.kind,
            parent: scope.parent,
            name,
            options,
            creating: false,
        };
        let hooks = self.hooks_for(scope.kind);
        if let Some(hooks) = &hooks {
            hooks.check(&write, &mut doc, &full).await?;
        }
        // Endpoint keys are made by Tarn, not written in the document: an update keeps them.
        let keeps_secrets = contains_placeholder(&doc.spec) || scope.kind == Kind::OnlineEndpoint;
        let secrets = if doc.secrets.is_empty() && keeps_secrets {
            None
        } else {
            Some(self.seal_all(&ws.id, &current.key, &doc.secrets))
        };
        crate::audit::note_changes(
            &current.spec,
            &doc.spec,
            &doc.secrets
                .iter()
                .map(|(path, _)| path.clone())
                .collect::<Vec<_>>(),
        );
        let row = ResourceRow {
            spec: doc.spec,
            updated_at: now_ms(),
            ..current
        };
        if !self
            .store
            .update_resource(&row, &secret_prefix(&row.key), secrets.as_deref())
            .await?
        {
            return Err(Error::not_found(scope.what(name, version)));
        }
        if let Some(hooks) = &hooks {
            hooks.written(&write, Some(&row.spec)).await?;
        }
        Ok(ResourceView {
            kind: scope.kind,
            row,
            parent: scope.parent.map(str::to_string),
            warnings: doc.warnings,
        })
    }

    /// Deletes a resource that is not an asset (and, for endpoints, their deployments).
    pub async fn delete_resource(&self, p: &Principal, scope: Scope<'_>, name: &str) -> Result<()> {
        let ws = self.resource_workspace(p, &scope, Action::Delete).await?;
        if scope.kind.is_asset() {
            return Err(Error::Conflict(format!(
                "{}s are versioned and immutable and are never deleted: archive them with `tarn {} archive`",
                scope.kind.noun(),
                scope.kind.group()
            )));
        }
        if scope.kind == Kind::Datastore && DEFAULT_DATASTORES.iter().any(|(n, _, _)| *n == name) {
            return Err(Error::Conflict(format!(
                "{name:?} is a default datastore of the workspace and cannot be deleted"
            )));
        }
        let key = scope.key(&ws.id, name, "");
        let prefix = format!("{}:{}:{}@", key.kind, key.parent, key.name);
        if self.store.delete_resource(&key, &prefix).await? == 0 {
            return Err(Error::not_found(scope.what(name, None)));
        }
        if let Some(hooks) = self.hooks_for(scope.kind) {
            let write = Write {
                p,
                ws: &ws,
                kind: scope.kind,
                parent: scope.parent,
                name,
                options: WriteOptions::default(),
                creating: false,
            };
            hooks.written(&write, None).await?;
        }
        Ok(())
    }

    /// Archives (hides from `list` and `@latest`) or restores one version or all versions.
    pub async fn set_archived(
        &self,
        p: &Principal,
        scope: Scope<'_>,
        name: &str,
        version: Option<&str>,
        archived: bool,
    ) -> Result<u64> {
        let ws = self.resource_workspace(p, &scope, Action::Write).await?;
        if !scope.kind.is_asset() {
            return Err(Error::Conflict(format!(
                "only versioned assets are archived; delete the {} instead",
                scope.kind.noun()
            )));
        }
        let changed = self
            .store
            .set_archived(
                &scope.key(&ws.id, name, version.unwrap_or_default()),
                archived,
                now_ms(),
            )
            .await?;
        if changed == 0 {
            return Err(Error::not_found(scope.what(name, version)));
        }
        Ok(changed)
    }

    /// The spec with its secrets decrypted in place: needs the `listsecrets` permission.
    pub async fn show_secrets(
        &self,
        p: &Principal,
        scope: Scope<'_>,
        name: &str,
        version: Option<&str>,
    ) -> Result<ResourceView> {
        let ws = self
            .resource_workspace(p, &scope, Action::ListSecrets)
            .await?;
        let mut row = self.find(&ws.id, &scope, name, version).await?;
        row.spec = self.with_secrets(&ws.id, &row).await?;
        Ok(ResourceView {
            kind: scope.kind,
            row,
            parent: scope.parent.map(str::to_string),
            warnings: vec![],
        })
    }
}

/// Sealed secrets are every service's: datastores, computes and endpoints open theirs.
impl Core {
    pub(crate) fn seal_all(
        &self,
        workspace_id: &str,
        key: &ResourceKey,
        secrets: &[(String, Json)],
    ) -> Vec<SecretRow> {
        let prefix = secret_prefix(key);
        secrets
            .iter()
            .map(|(path, value)| {
                self.vault.seal(
                    workspace_id,
                    &format!("{prefix}#{path}"),
                    value.to_string().as_bytes(),
                )
            })
            .collect()
    }

    /// A stored compute as Tarn runs it: its spec parsed, with the secrets an engine needs to
    /// be reached (a kubeconfig, Ray's headers) put back.
    pub(crate) async fn compute_spec(
        &self,
        workspace_id: &str,
        row: &ResourceRow,
    ) -> Result<tarn_spec::compute::ComputeSpec> {
        let spec = tarn_spec::compute::ComputeSpec::parse(&row.spec);
        if !spec.needs_secrets() {
            return Ok(spec);
        }
        Ok(tarn_spec::compute::ComputeSpec::parse(
            &self.with_secrets(workspace_id, row).await?,
        ))
    }

    /// A stored spec with its secrets put back (for opening storage; never for display
    /// without a `listsecrets` check).
    pub(crate) async fn with_secrets(&self, workspace_id: &str, row: &ResourceRow) -> Result<Json> {
        let mut spec = row.spec.clone();
        let prefix = format!("{}#", secret_prefix(&row.key));
        for secret in self.store.get_secrets(workspace_id, &prefix).await? {
            let plain = self.vault.open_row(workspace_id, &secret)?;
            let value: Json = serde_json::from_slice(&plain)
                .map_err(|_| Error::Vault(format!("secret {} is not JSON", secret.name)))?;
            set_path(&mut spec, secret.name.trim_start_matches(&prefix), value);
        }
        Ok(spec)
    }
}

/// A validated spec with its secrets back in place.
pub(crate) fn merged(doc: &Document) -> Json {
    let mut spec = doc.spec.clone();
    for (path, value) in &doc.secrets {
        set_path(&mut spec, path, value.clone());
    }
    spec
}

/// A deployment's endpoint comes from the request scope or its `endpoint_name`; they must agree.
fn deployment_endpoint(scope: &Scope<'_>, doc: &Document) -> Result<Option<String>> {
    if scope.kind.parent().is_none() {
        return Ok(None);
    }
    let in_spec = doc.spec.get("endpoint_name").and_then(Json::as_str);
    match (scope.parent, in_spec) {
        (Some(a), Some(b)) if a != b => Err(Error::invalid(
            "endpoint_name",
            format!("the deployment says endpoint {b:?} but the request is for endpoint {a:?}"),
        )),
        (Some(a), _) | (None, Some(a)) => Ok(Some(a.to_string())),
        (None, None) => Err(Error::invalid(
            "endpoint_name",
            "a deployment needs `endpoint_name` (or `--endpoint-name`)",
        )),
    }
}

pub(crate) fn set_path(root: &mut Json, dotted: &str, value: Json) {
    let mut current = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(obj) = current.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), value);
            return;
        }
        current = obj
            .entry(part.to_string())
            .or_insert_with(|| Json::Object(Default::default()));
    }
}
