//! The model registry, one behind both surfaces. An MLflow model version *is* a Tarn model
//! asset version (a `models` resource), so `tarn model create` shows up in `MlflowClient` and
//! `mlflow.register_model` shows up in `tarn model list`. What MLflow keeps per name
//! (description, tags, aliases) lives in the `registered_models` table.
//!
//! Where Azure ML's rules and MLflow's differ, Azure ML's win and the error says so: versions
//! are immutable and never deleted (an MLflow delete archives them, and archived versions are
//! gone as far as MLflow can tell). A rename moves every version to the new name, and is
//! refused while a deployment names the model.

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::now_ms;
use crate::resources::Resources;
use crate::resources::{KindHooks, Write};
use crate::resources::{Scope, WriteOptions};
use crate::storage::Storage;
use crate::tracking::Tracking;
use crate::tracking::set_or_remove;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use tarn_spec::Document;
use tarn_spec::Kind;
use tarn_spec::mlflow_search::{self, Entity, Op, Subject, Value};
use tarn_spec::names::{self, NameRule};
use tarn_store::{RegisteredModelRow, ResourceFilter, ResourceRow, WorkspaceRow};

/// MLflow's model version stages.
pub const STAGES: &[&str] = &["None", "Staging", "Production", "Archived"];

/// The datastore MLflow artifacts live in.
const ARTIFACTS: &str = "workspaceartifactstore";

pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub user_id: String,
    pub current_stage: String,
    pub description: String,
    pub source: String,
    pub run_id: String,
    pub tags: Vec<(String, String)>,
    pub aliases: Vec<String>,
}

pub struct RegisteredModel {
    pub name: String,
    pub description: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub tags: Vec<(String, String)>,
    pub aliases: Vec<(String, String)>,
    /// The newest version in each stage.
    pub latest_versions: Vec<ModelVersion>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("", message)
}

fn rm_not_found(name: &str) -> Error {
    Error::not_found(format!("Registered Model with name={name}"))
}

fn object_pairs(v: &Json) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect()
}

/// An MLflow artifact URI as a path in the artifact datastore, and back. Repeated and
/// trailing slashes name the same folder (MLflow takes `mlflow-artifacts:/models///`).
fn source_to_path(source: &str) -> String {
    match source.strip_prefix("mlflow-artifacts:") {
        Some(p) => format!(
            "azureml://datastores/{ARTIFACTS}/paths/{}",
            p.split('/')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        ),
        None => source.to_string(),
    }
}

fn path_to_source(path: &str) -> String {
    match path.strip_prefix(&format!("azureml://datastores/{ARTIFACTS}/paths/")) {
        Some(p) => format!("mlflow-artifacts:/{p}"),
        None => path.to_string(),
    }
}

/// The MLflow model registry over Tarn's model assets.
pub struct Registry {
    core: Arc<Core>,
    jobs: Arc<Jobs>,
    resources: Arc<Resources>,
    storage: Arc<Storage>,
    tracking: Arc<Tracking>,
}

crate::service_on_core!(Registry);

impl Registry {
    pub(crate) fn new(
        core: Arc<Core>,
        jobs: Arc<Jobs>,
        resources: Arc<Resources>,
        storage: Arc<Storage>,
        tracking: Arc<Tracking>,
    ) -> Self {
        Registry {
            core,
            jobs,
            resources,
            storage,
            tracking,
        }
    }
}

/// A model's `path` is resolved (runs, jobs, logged models) before the model is stored.
#[async_trait::async_trait]
impl KindHooks for Registry {
    async fn check(&self, w: &Write<'_>, doc: &mut Document, _full: &Json) -> Result<()> {
        if w.creating {
            self.resolve_model_path(w.p, w.ws, &mut doc.spec, w.options)
                .await?;
        }
        Ok(())
    }

    async fn written(&self, _w: &Write<'_>, _spec: Option<&Json>) -> Result<()> {
        Ok(())
    }
}

impl Registry {
    async fn registry_workspace(
        &self,
        p: &Principal,
        workspace: &str,
        action: Action,
    ) -> Result<WorkspaceRow> {
        self.authorized_workspace(p, workspace, Target::Resource(Kind::Model), action)
            .await
    }

    fn model_scope(workspace: &str) -> Scope<'_> {
        Scope {
            workspace,
            kind: Kind::Model,
            parent: None,
        }
    }

    /// A name's live (not archived) versions, newest first.
    async fn live_versions(&self, ws: &WorkspaceRow, name: &str) -> Result<Vec<ResourceRow>> {
        let filter = ResourceFilter {
            parent: "",
            name: Some(name),
            include_archived: false,
            latest_only: false,
        };
        let mut rows = self.store.list_resources(&ws.id, "models", &filter).await?;
        rows.retain(|r| !r.archived);
        rows.sort_by_key(|r| std::cmp::Reverse(r.seq));
        Ok(rows)
    }

    /// The name-level row, made up from the versions for models registered with `tarn model`.
    async fn registered(
        &self,
        ws: &WorkspaceRow,
        name: &str,
    ) -> Result<Option<(RegisteredModelRow, Vec<ResourceRow>)>> {
        let versions = self.live_versions(ws, name).await?;
        let row = match self.store.get_registered_model(&ws.id, name).await? {
            Some(r) => r,
            None if !versions.is_empty() => RegisteredModelRow {
                workspace_id: ws.id.clone(),
                name: name.to_string(),
                description: String::new(),
                tags: json!({}),
                aliases: json!({}),
                creation_time: versions.iter().map(|v| v.created_at).min().unwrap_or(0),
                last_updated_time: versions.iter().map(|v| v.updated_at).max().unwrap_or(0),
            },
            None => return Ok(None),
        };
        Ok(Some((row, versions)))
    }

    fn version_view(row: &ResourceRow, aliases: &Json) -> ModelVersion {
        let spec = &row.spec;
        let text = |k: &str| {
            spec.get(k)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let props = &spec["properties"];
        let version = row.key.version.clone();
        ModelVersion {
            name: row.key.name.clone(),
            aliases: aliases
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.as_str() == Some(version.as_str()))
                .map(|(k, _)| k.clone())
                .collect(),
            version,
            creation_timestamp: row.created_at,
            last_updated_timestamp: row.updated_at,
            user_id: row.created_by.clone(),
            current_stage: spec
                .get("stage")
                .and_then(Json::as_str)
                .unwrap_or("None")
                .to_string(),
            description: text("description"),
            source: props["mlflow.source"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| path_to_source(&text("path"))),
            run_id: props["mlflow.run_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            tags: object_pairs(&spec["tags"]),
        }
    }

    fn model_view(row: RegisteredModelRow, versions: &[ResourceRow]) -> RegisteredModel {
        let mut latest: Vec<ModelVersion> = vec![];
        for v in versions {
            let view = Self::version_view(v, &row.aliases);
            if !latest.iter().any(|l| l.current_stage == view.current_stage) {
                latest.push(view);
            }
        }
        RegisteredModel {
            name: row.name,
            description: row.description,
            creation_timestamp: row.creation_time,
            last_updated_timestamp: row.last_updated_time,
            tags: object_pairs(&row.tags),
            aliases: object_pairs(&row.aliases),
            latest_versions: latest,
        }
    }

    pub async fn create_registered_model(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        description: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> Result<RegisteredModel> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        names::check(NameRule::Asset, name)
            .map_err(|e| invalid(format!("Invalid model name {name:?}: {e}")))?;
        let already = || Error::AlreadyExists {
            what: format!("Registered Model (name={name})"),
        };
        if self.registered(&ws, name).await?.is_some() {
            return Err(already());
        }
        let now = now_ms();
        let row = RegisteredModelRow {
            workspace_id: ws.id.clone(),
            name: name.to_string(),
            description: description.unwrap_or_default().to_string(),
            tags: Json::Object(
                tags.into_iter()
                    .map(|(k, v)| (k, Json::String(v)))
                    .collect(),
            ),
            aliases: json!({}),
            creation_time: now,
            last_updated_time: now,
        };
        match self.store.put_registered_model(&row, true).await {
            Ok(()) => Ok(Self::model_view(row, &[])),
            Err(tarn_store::StoreError::Conflict) => Err(already()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_registered_model(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
    ) -> Result<RegisteredModel> {
        let ws = self.registry_workspace(p, workspace, Action::Read).await?;
        let (row, versions) = self
            .registered(&ws, name)
            .await?
            .ok_or_else(|| rm_not_found(name))?;
        Ok(Self::model_view(row, &versions))
    }

    /// Changes a registered model's description, tags (`Some((key, None))` deletes) or aliases.
    async fn change_registered(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        change: impl FnOnce(&mut RegisteredModelRow, &[ResourceRow]) -> Result<()>,
    ) -> Result<RegisteredModel> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        let (mut row, versions) = self
            .registered(&ws, name)
            .await?
            .ok_or_else(|| rm_not_found(name))?;
        change(&mut row, &versions)?;
        row.last_updated_time = now_ms();
        self.store.put_registered_model(&row, false).await?;
        Ok(Self::model_view(row, &versions))
    }

    pub async fn update_registered_model(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel> {
        let description = description.to_string();
        self.change_registered(p, workspace, name, |row, _| {
            row.description = description;
            Ok(())
        })
        .await
    }

    pub async fn set_registered_model_tag(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let (key, value) = (key.to_string(), value.map(str::to_string));
        self.change_registered(p, workspace, name, move |row, _| {
            set_or_remove(&mut row.tags, key, value);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn set_alias(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        alias: &str,
        version: Option<&str>,
    ) -> Result<()> {
        if version.is_some() {
            let reserved = alias.eq_ignore_ascii_case("latest")
                || (alias.len() > 1
                    && alias.starts_with(['v', 'V'])
                    && alias[1..].bytes().all(|b| b.is_ascii_digit()));
            if alias.is_empty() || alias.len() > 255 || reserved {
                return Err(invalid(format!(
                    "Invalid alias name: '{alias}'. Aliases may not be 'latest' or of the form 'v<number>', and are 1 to 255 characters."
                )));
            }
        }
        let (alias, version) = (alias.to_string(), version.map(str::to_string));
        self.change_registered(p, workspace, name, move |row, versions| {
            let aliases = row
                .aliases
                .as_object_mut()
                .ok_or_else(|| invalid("corrupt aliases"))?;
            match version {
                Some(v) => {
                    if !versions.iter().any(|r| r.key.version == v) {
                        return Err(Error::not_found(format!(
                            "Model Version (name={}, version={v})",
                            row.name
                        )));
                    }
                    aliases.insert(alias, Json::String(v));
                }
                None => {
                    aliases.remove(&alias);
                }
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn version_by_alias(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion> {
        let ws = self.registry_workspace(p, workspace, Action::Read).await?;
        let (row, versions) = self
            .registered(&ws, name)
            .await?
            .ok_or_else(|| rm_not_found(name))?;
        let version = row.aliases[alias]
            .as_str()
            .ok_or_else(|| Error::not_found(format!("Registered model alias {alias}")))?;
        versions
            .iter()
            .find(|v| v.key.version == version)
            .map(|v| Self::version_view(v, &row.aliases))
            .ok_or_else(|| {
                Error::not_found(format!("Model Version (name={name}, version={version})"))
            })
    }

    /// Renames a model: its versions (as Tarn model assets, archived ones too), description,
    /// tags and aliases move to `new_name`. Refused while a deployment names the model, since
    /// its next rollout would no longer find it.
    pub async fn rename_registered_model(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        new_name: &str,
    ) -> Result<RegisteredModel> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        names::check(NameRule::Asset, new_name)
            .map_err(|e| invalid(format!("Invalid model name {new_name:?}: {e}")))?;
        let (row, _) = self
            .registered(&ws, name)
            .await?
            .ok_or_else(|| rm_not_found(name))?;
        if let Some(user) = self.deployment_using_model(&ws, name).await? {
            return Err(invalid(format!(
                "model {name:?} is used by {user}: point it at another model before renaming"
            )));
        }
        // The new name is checked free before anything is written: a refused rename changes
        // nothing (the database's constraint still settles a race).
        if self.registered(&ws, new_name).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("Registered Model (name={new_name})"),
            });
        }
        // A model known only from its versions has no row yet; give it one to rename.
        if self
            .store
            .get_registered_model(&ws.id, name)
            .await?
            .is_none()
        {
            self.store.put_registered_model(&row, false).await?;
        }
        match self
            .store
            .rename_model(&ws.id, name, new_name, now_ms())
            .await
        {
            Ok(()) => {}
            Err(tarn_store::StoreError::Conflict) => {
                return Err(Error::AlreadyExists {
                    what: format!("Registered Model (name={new_name})"),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let (row, versions) = self
            .registered(&ws, new_name)
            .await?
            .ok_or_else(|| rm_not_found(new_name))?;
        Ok(Self::model_view(row, &versions))
    }

    /// The first online or batch deployment whose `model` names `name`, in words.
    async fn deployment_using_model(
        &self,
        ws: &WorkspaceRow,
        name: &str,
    ) -> Result<Option<String>> {
        let all = ResourceFilter {
            parent: "",
            name: None,
            include_archived: false,
            latest_only: false,
        };
        for (endpoint, deployment) in [
            (Kind::OnlineEndpoint, Kind::OnlineDeployment),
            (Kind::BatchEndpoint, Kind::BatchDeployment),
        ] {
            for ep in self
                .store
                .list_resources(&ws.id, endpoint.collection(), &all)
                .await?
            {
                let parent = format!("{}/{}", endpoint.collection(), ep.key.name);
                let filter = ResourceFilter {
                    parent: &parent,
                    ..all
                };
                let rows = self
                    .store
                    .list_resources(&ws.id, deployment.collection(), &filter)
                    .await?;
                for d in rows {
                    let names_it = d.spec["model"].as_str().is_some_and(|m| {
                        matches!(
                            tarn_spec::refs::parse_asset_ref(m, NameRule::Asset),
                            Ok(tarn_spec::refs::AssetRef::Version { name: n, .. }
                                | tarn_spec::refs::AssetRef::Label { name: n, .. }) if n == name
                        )
                    });
                    if names_it {
                        return Ok(Some(format!(
                            "deployment {} of endpoint {}",
                            d.key.name, ep.key.name
                        )));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Archives every version and forgets the name-level facts.
    pub async fn delete_registered_model(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
    ) -> Result<()> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        self.registered(&ws, name)
            .await?
            .ok_or_else(|| rm_not_found(name))?;
        let scope = Self::model_scope(workspace);
        self.store
            .set_archived(&scope.key(&ws.id, name, ""), true, now_ms())
            .await?;
        self.store.delete_registered_model(&ws.id, name).await?;
        Ok(())
    }

    /// Registered models whose name or tags match MLflow filter clauses, by name.
    pub async fn search_registered_models(
        &self,
        p: &Principal,
        workspace: &str,
        filter: &str,
    ) -> Result<Vec<RegisteredModel>> {
        let ws = self.registry_workspace(p, workspace, Action::Read).await?;
        let clauses =
            mlflow_search::parse_filter_of(Subject::RegisteredModels, filter).map_err(invalid)?;
        let mut names: Vec<String> = self
            .store
            .list_registered_models(&ws.id)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let filter = ResourceFilter {
            parent: "",
            name: None,
            include_archived: false,
            latest_only: true,
        };
        for row in self.store.list_resources(&ws.id, "models", &filter).await? {
            if !names.contains(&row.key.name) {
                names.push(row.key.name);
            }
        }
        names.sort();
        let mut out = vec![];
        for name in names {
            let Some((row, versions)) = self.registered(&ws, &name).await? else {
                continue;
            };
            let model = Self::model_view(row, &versions);
            let keep = clauses.iter().all(|c| match (c.entity, c.key.as_str()) {
                (Entity::Attribute, "name") => string_matches(&model.name, c.op, &c.value),
                (Entity::Tag, key) => tag_matches(&model.tags, key, c.op, &c.value),
                _ => false,
            });
            if keep {
                out.push(model);
            }
        }
        Ok(out)
    }

    /// Registers a new version from an MLflow source (`runs:/…`, `mlflow-artifacts:/…`, or a
    /// storage URI), as a Tarn model asset.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_model_version(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        tags: Vec<(String, String)>,
        description: Option<&str>,
        model_id: Option<&str>,
    ) -> Result<ModelVersion> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        let (rm, _) = self
            .registered(&ws, name)
            .await?
            .ok_or_else(|| rm_not_found(name))?;
        // Where a local source may lie: the artifacts of the logged model or run it names.
        let owner = match (
            model_id.filter(|m| !m.is_empty()),
            run_id.filter(|r| !r.is_empty()),
        ) {
            (Some(m), _) => Some((
                "model_id",
                self.store
                    .get_logged_model(&ws.id, m)
                    .await?
                    .map(|m| m.artifact_uri),
            )),
            (None, Some(r)) => Some((
                "run_id",
                self.store.run_row(&ws.id, r).await?.map(|r| r.artifact_uri),
            )),
            (None, None) => None,
        };
        check_source(source, owner)?;
        // MLflow 3 names the logged model a version comes from; its files are the model's.
        let logged = match model_id.filter(|m| !m.is_empty()) {
            Some(id) => Some(self.tracking.logged_model_uri(&ws, id).await?),
            None => None,
        };
        let resolved = match source.strip_prefix("runs:/") {
            _ if logged.is_some() => logged.clone().unwrap_or_default(),
            // MLflow keeps a source it cannot resolve as given.
            Some(rest) => self
                .run_files(&ws, rest)
                .await?
                .unwrap_or_else(|| source.to_string()),
            None => match source.strip_prefix("models:/") {
                // MLflow 3: a logged model, `models:/m-<id>`.
                Some(id) if id.starts_with("m-") && !id.contains('/') => {
                    self.tracking.logged_model_uri(&ws, id).await?
                }
                // Anything else, `models:/<name>/<version>` (`copy_model_version`) included, is
                // resolved by the model asset rules at create.
                _ => source.to_string(),
            },
        };
        let mut properties = json!({"mlflow.source": source});
        if let Some(r) = run_id.filter(|r| !r.is_empty()) {
            properties["mlflow.run_id"] = json!(r);
        }
        // An MLflow source is an mlflow_model when it has an MLmodel file, else custom_model.
        let path = source_to_path(&resolved);
        let kind = match self.has_mlmodel(p, &ws, &path).await? {
            Some(false) => "custom_model",
            _ => "mlflow_model",
        };
        let spec = json!({
            "name": name,
            "type": kind,
            "path": path,
            "description": description.unwrap_or_default(),
            "tags": Json::Object(tags.into_iter().map(|(k, v)| (k, Json::String(v))).collect()),
            "properties": properties,
        });
        let view = self
            .resources
            .create_resource(
                p,
                Self::model_scope(workspace),
                &spec,
                WriteOptions {
                    keep_unknown_run_source: true,
                    ..WriteOptions::default()
                },
            )
            .await?;
        if let Some(id) = model_id.filter(|m| !m.is_empty()) {
            self.note_version_on_logged_model(&ws, id, name, &view.row.key.version)
                .await?;
        }
        // A new version changes the model (MLflow's last_updated_timestamp says so).
        let rm = RegisteredModelRow {
            last_updated_time: view.row.created_at,
            ..rm
        };
        self.store.put_registered_model(&rm, false).await?;
        Ok(Self::version_view(&view.row, &rm.aliases))
    }

    /// Adds a version to its logged model's `mlflow.modelVersions` tag, a JSON list written
    /// as Python's `json.dumps` writes it, which MLflow clients read.
    async fn note_version_on_logged_model(
        &self,
        ws: &WorkspaceRow,
        model_id: &str,
        name: &str,
        version: &str,
    ) -> Result<()> {
        let Some(mut model) = self.store.get_logged_model(&ws.id, model_id).await? else {
            return Ok(());
        };
        let mut versions: Vec<Json> = model.tags["mlflow.modelVersions"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        versions.push(json!({"name": name, "version": version.parse::<i64>().map(Json::from).unwrap_or(json!(version))}));
        let text = versions
            .iter()
            .map(|v| format!("{{\"name\": {}, \"version\": {}}}", v["name"], v["version"]))
            .collect::<Vec<_>>()
            .join(", ");
        set_or_remove(
            &mut model.tags,
            "mlflow.modelVersions".into(),
            Some(format!("[{text}]")),
        );
        self.store.put_logged_model(&model).await?;
        Ok(())
    }

    async fn live_version(
        &self,
        ws: &WorkspaceRow,
        name: &str,
        version: &str,
    ) -> Result<(RegisteredModelRow, ResourceRow)> {
        let not_found =
            || Error::not_found(format!("Model Version (name={name}, version={version})"));
        let (rm, versions) = self.registered(ws, name).await?.ok_or_else(not_found)?;
        let row = versions.into_iter().find(|v| v.key.version == version);
        match row {
            Some(row) => Ok((rm, row)),
            // MLflow's versions are integers, and it says so; Tarn's may be any asset version.
            None if version.parse::<i64>().is_err() => Err(invalid(format!(
                "Parameter 'version' must be an integer, got '{version}'."
            ))),
            None => Err(not_found()),
        }
    }

    pub async fn get_model_version(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion> {
        let ws = self.registry_workspace(p, workspace, Action::Read).await?;
        let (rm, row) = self.live_version(&ws, name, version).await?;
        Ok(Self::version_view(&row, &rm.aliases))
    }

    /// Changes a version's mutable fields (description, tags, stage) through the asset rules.
    async fn change_version(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
        change: impl FnOnce(&mut Json) -> Result<()>,
    ) -> Result<ModelVersion> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        let (rm, row) = self.live_version(&ws, name, version).await?;
        let mut spec = row.spec.clone();
        change(&mut spec)?;
        let view = self
            .resources
            .update_resource(
                p,
                Self::model_scope(workspace),
                name,
                Some(version),
                &spec,
                WriteOptions::default(),
            )
            .await?;
        Ok(Self::version_view(&view.row, &rm.aliases))
    }

    pub async fn update_model_version(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
        description: &str,
    ) -> Result<ModelVersion> {
        let d = description.to_string();
        self.change_version(p, workspace, name, version, move |spec| {
            spec["description"] = Json::String(d);
            Ok(())
        })
        .await
    }

    pub async fn set_model_version_tag(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let (key, value) = (key.to_string(), value.map(str::to_string));
        self.change_version(p, workspace, name, version, move |spec| {
            set_or_remove(&mut spec["tags"], key, value);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Moves a version to a stage; with `archive_existing`, other versions in that stage go to
    /// Archived.
    pub async fn transition_stage(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
        stage: &str,
        archive_existing: bool,
    ) -> Result<ModelVersion> {
        let stage = STAGES
            .iter()
            .find(|s| s.eq_ignore_ascii_case(stage))
            .ok_or_else(|| invalid(format!("Invalid Model Version stage: {stage}. Value must be one of None, Staging, Production, Archived.")))?
            .to_string();
        // The version to move must exist before any other is archived: bad input changes nothing.
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        self.live_version(&ws, name, version).await?;
        if archive_existing && (stage == "Staging" || stage == "Production") {
            for other in self.live_versions(&ws, name).await? {
                if other.key.version != version
                    && other.spec["stage"].as_str() == Some(stage.as_str())
                {
                    let v = other.key.version.clone();
                    self.change_version(p, workspace, name, &v, |spec| {
                        spec["stage"] = json!("Archived");
                        Ok(())
                    })
                    .await?;
                }
            }
        }
        let changed = self
            .change_version(p, workspace, name, version, move |spec| {
                spec["stage"] = Json::String(stage);
                Ok(())
            })
            .await?;
        // A stage change changes the model too.
        if let Some((rm, _)) = self.registered(&ws, name).await? {
            let rm = RegisteredModelRow {
                last_updated_time: changed.last_updated_timestamp,
                ..rm
            };
            self.store.put_registered_model(&rm, false).await?;
        }
        Ok(changed)
    }

    /// Archives a version: gone for MLflow, kept (archived) for Tarn, as assets are.
    pub async fn delete_model_version(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
    ) -> Result<()> {
        let ws = self.registry_workspace(p, workspace, Action::Write).await?;
        let (mut rm, _) = self.live_version(&ws, name, version).await?;
        let scope = Self::model_scope(workspace);
        let now = now_ms();
        self.store
            .set_archived(&scope.key(&ws.id, name, version), true, now)
            .await?;
        if let Some(aliases) = rm.aliases.as_object_mut() {
            aliases.retain(|_, v| v.as_str() != Some(version));
        }
        rm.last_updated_time = now;
        self.store.put_registered_model(&rm, false).await?;
        Ok(())
    }

    /// The newest version in each of `stages` (every stage when empty).
    pub async fn latest_versions(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        stages: &[String],
    ) -> Result<Vec<ModelVersion>> {
        let model = self.get_registered_model(p, workspace, name).await?;
        Ok(model
            .latest_versions
            .into_iter()
            .filter(|v| {
                stages.is_empty()
                    || stages
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&v.current_stage))
            })
            .collect())
    }

    /// Live versions matching MLflow filter clauses, in `order_by`'s order (MLflow's default:
    /// last updated first, then by name, then newest version first).
    pub async fn search_model_versions(
        &self,
        p: &Principal,
        workspace: &str,
        filter: &str,
        order_by: &[String],
    ) -> Result<Vec<ModelVersion>> {
        let ws = self.registry_workspace(p, workspace, Action::Read).await?;
        let clauses =
            mlflow_search::parse_filter_of(Subject::ModelVersions, filter).map_err(invalid)?;
        let order = version_order(order_by)?;
        let all = ResourceFilter {
            parent: "",
            name: None,
            include_archived: false,
            latest_only: false,
        };
        let mut rows = self.store.list_resources(&ws.id, "models", &all).await?;
        rows.retain(|r| !r.archived);
        let mut out = vec![];
        let mut aliases: std::collections::HashMap<String, Json> = Default::default();
        for row in rows {
            if !aliases.contains_key(&row.key.name) {
                let a = self
                    .store
                    .get_registered_model(&ws.id, &row.key.name)
                    .await?
                    .map(|r| r.aliases)
                    .unwrap_or(json!({}));
                aliases.insert(row.key.name.clone(), a);
            }
            let v = Self::version_view(&row, &aliases[&row.key.name]);
            let keep = clauses.iter().all(|c| match (c.entity, c.key.as_str()) {
                (Entity::Attribute, "name") => string_matches(&v.name, c.op, &c.value),
                (Entity::Attribute, "run_id") => string_matches(&v.run_id, c.op, &c.value),
                (Entity::Attribute, "source_path") => string_matches(&v.source, c.op, &c.value),
                (Entity::Attribute, "version_number") => match (&c.value, v.version.parse()) {
                    (Value::Num(n), Ok(version)) => number_matches(version, c.op, *n),
                    _ => false,
                },
                (Entity::Tag, key) => tag_matches(&v.tags, key, c.op, &c.value),
                _ => false,
            });
            if keep {
                out.push(v);
            }
        }
        out.sort_by(|a, b| {
            order
                .iter()
                .map(|(key, ascending)| {
                    let o = match *key {
                        "name" => a.name.cmp(&b.name),
                        "version_number" => version_number(a).cmp(&version_number(b)),
                        "creation_timestamp" => a.creation_timestamp.cmp(&b.creation_timestamp),
                        _ => a.last_updated_timestamp.cmp(&b.last_updated_timestamp),
                    };
                    if *ascending { o } else { o.reverse() }
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(out)
    }

    /// Where a version's files are, as an MLflow artifact URI when they are in the artifact store.
    pub async fn model_version_download_uri(
        &self,
        p: &Principal,
        workspace: &str,
        name: &str,
        version: &str,
    ) -> Result<String> {
        let ws = self.registry_workspace(p, workspace, Action::Read).await?;
        let (_, row) = self.live_version(&ws, name, version).await?;
        Ok(path_to_source(
            row.spec["path"].as_str().unwrap_or_default(),
        ))
    }
}

/// MLflow's checks on a model version's source (`_validate_source_run`/`_source_model`), so
/// that no source reaches the server's own files: a local path must lie inside the local
/// artifact directory of the run or logged model given with it (`owner`: which argument named
/// it, and that owner's artifact URI if it exists); any other URI must hold an absolute path
/// without `.`, `..` or NUL, however it is percent-encoded.
fn check_source(source: &str, owner: Option<(&str, Option<String>)>) -> Result<()> {
    let (scheme, rest) = tarn_spec::uri::split_scheme(source);
    let local = match scheme {
        "" => true,
        "file" => {
            let host = rest
                .strip_prefix("//")
                .map(|r| r.split('/').next().unwrap_or(""));
            host.is_none_or(|h| {
                h.is_empty() || h == "." || h.starts_with("localhost") || h.starts_with("127.0.0.1")
            })
        }
        _ => false,
    };
    if local {
        let inside = owner
            .as_ref()
            .and_then(|(_, uri)| uri.as_deref())
            .is_some_and(|root| {
                let (root_scheme, _) = tarn_spec::uri::split_scheme(root);
                (root_scheme.is_empty() || root_scheme == "file")
                    && within(&local_path(source), &local_path(root))
            });
        if inside {
            return Ok(());
        }
        let what = owner.map(|(w, _)| w).unwrap_or("run_id");
        return Err(invalid(format!(
            "Invalid model version source: '{source}'. To use a local path as a model version source, the {what} request parameter has to be specified and the local path has to be contained within the artifact directory of the run specified by the {what}."
        )));
    }
    let mut decoded = source.to_string();
    loop {
        let next = tarn_spec::uri::form_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let (_, rest) = tarn_spec::uri::split_scheme(&decoded);
    let path = match rest.strip_prefix("//") {
        Some(after_host) => after_host.find('/').map(|i| &after_host[i..]).unwrap_or(""),
        None => rest,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let absolute = path.starts_with('/') && !segments.is_empty();
    let relative_parts = decoded.split('/').any(|s| s == "..") || segments.contains(&".");
    if !absolute || relative_parts || path.contains('\0') {
        return Err(invalid(format!(
            "Invalid model version source: '{source}'. If supplying a source as an http, https, local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided without relative path references present. Please provide an absolute path."
        )));
    }
    Ok(())
}

/// A local path or `file:` URI as absolute, normalised path segments.
fn local_path(uri: &str) -> Vec<String> {
    let path = match tarn_spec::uri::split_scheme(uri) {
        ("file", rest) => match rest.strip_prefix("//") {
            Some(r) => r.find('/').map(|i| r[i..].to_string()).unwrap_or_default(),
            None => rest.to_string(),
        },
        _ => uri.to_string(),
    };
    let full = if path.starts_with('/') {
        std::path::PathBuf::from(path)
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out: Vec<String> = vec![];
    for part in full.to_string_lossy().split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_string()),
        }
    }
    out
}

fn within(path: &[String], root: &[String]) -> bool {
    path.len() >= root.len() && path[..root.len()] == *root
}

fn version_number(v: &ModelVersion) -> i64 {
    v.version.parse().unwrap_or(i64::MAX)
}

fn number_matches(actual: f64, op: Op, value: f64) -> bool {
    match op {
        Op::Eq => actual == value,
        Op::Ne => actual != value,
        Op::Gt => actual > value,
        Op::Ge => actual >= value,
        Op::Lt => actual < value,
        Op::Le => actual <= value,
        _ => false,
    }
}

/// Model version `order_by` items (`name`, `version_number`, `creation_timestamp`,
/// `last_updated_timestamp`, each `ASC` or `DESC`) as MLflow applies them: the given keys, then
/// name ascending and version descending where not given.
fn version_order(order_by: &[String]) -> Result<Vec<(&'static str, bool)>> {
    const KEYS: [&str; 4] = [
        "name",
        "version_number",
        "creation_timestamp",
        "last_updated_timestamp",
    ];
    if order_by.is_empty() {
        return Ok(vec![
            ("last_updated_timestamp", false),
            ("name", true),
            ("version_number", false),
        ]);
    }
    let mut out: Vec<(&'static str, bool)> = vec![];
    for item in order_by {
        let mut words = item.split_whitespace();
        let key = words.next().unwrap_or_default();
        let key = key
            .strip_prefix("attribute.")
            .or_else(|| key.strip_prefix("attributes."))
            .unwrap_or(key);
        let key = match key {
            "timestamp" => "creation_timestamp",
            k => k,
        };
        let key = KEYS.iter().find(|k| **k == key).copied().ok_or_else(|| {
            invalid(format!(
                "Invalid order by key '{key}' specified. Valid keys are {KEYS:?}"
            ))
        })?;
        let ascending = match words.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => true,
            Some("DESC") => false,
            Some(other) => {
                return Err(invalid(format!(
                    "Invalid order_by clause '{item}': {other} is not ASC or DESC"
                )));
            }
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!(
                "`order_by` contains duplicate fields: {order_by:?}"
            )));
        }
        out.push((key, ascending));
    }
    for (key, ascending) in [("name", true), ("version_number", false)] {
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, ascending));
        }
    }
    Ok(out)
}

/// A tag clause, as MLflow's registry evaluates it: `!=` also matches a missing tag (the client
/// filters prompts out with `tags.\`mlflow.prompt.is_prompt\` != 'true'`).
fn tag_matches(tags: &[(String, String)], key: &str, op: Op, value: &Value) -> bool {
    match tags.iter().find(|(k, _)| k == key) {
        Some((_, v)) => string_matches(v, op, value),
        None => op == Op::Ne,
    }
}

fn string_matches(actual: &str, op: Op, value: &Value) -> bool {
    match (op, value) {
        (Op::Eq, Value::Str(v)) => actual == v,
        (Op::Ne, Value::Str(v)) => actual != v,
        (Op::Like, Value::Str(v)) => crate::tracking::like(actual, v, false),
        (Op::ILike, Value::Str(v)) => crate::tracking::like(actual, v, true),
        (Op::In, Value::List(items)) => items.iter().any(|i| i == actual),
        (Op::NotIn, Value::List(items)) => !items.iter().any(|i| i == actual),
        _ => false,
    }
}

impl Registry {
    /// A model's `path` as a datastore URI: `runs:/<run>/<path>` (the run's artifacts),
    /// `azureml://jobs/<job>/outputs/artifacts/paths/<path>`, `models:/<name>/<version|latest>`
    /// and `models:/m-<id>` (a logged model) are resolved; the original is kept in
    /// `properties.source`. An `mlflow_model` must have an `MLmodel` file there.
    pub(crate) async fn resolve_model_path(
        &self,
        p: &Principal,
        ws: &WorkspaceRow,
        spec: &mut Json,
        options: WriteOptions,
    ) -> Result<()> {
        let Some(path) = spec.get("path").and_then(Json::as_str).map(str::to_string) else {
            return Ok(());
        };
        let bad = |msg: String| Error::invalid("path", msg);
        let resolved = if let Some(rest) = path.strip_prefix("runs:/") {
            match self.run_files(ws, rest).await? {
                Some(uri) => Some(source_to_path(&uri)),
                None if options.keep_unknown_run_source => None,
                None => {
                    let run = rest.split('/').next().unwrap_or(rest);
                    return Err(bad(format!("run {run:?} does not exist in this workspace")));
                }
            }
        } else if path.starts_with("azureml://jobs/") {
            Some(self.jobs.data_location(ws, &path, "path").await?.0)
        } else if let Some(rest) = path.strip_prefix("models:/") {
            if rest.starts_with("m-") && !rest.contains('/') {
                Some(source_to_path(
                    &self.tracking.logged_model_uri(ws, rest).await?,
                ))
            } else {
                let (name, version) = rest.split_once('/').ok_or_else(|| {
                    bad(format!(
                        "{path:?}: use models:/<name>/<version> or models:/<name>/latest"
                    ))
                })?;
                let scope = Self::model_scope(&ws.name);
                let row = if version == "latest" {
                    self.store
                        .latest_resource(&scope.key(&ws.id, name, ""))
                        .await?
                } else {
                    self.store
                        .get_resource(&scope.key(&ws.id, name, version))
                        .await?
                };
                let row = row.ok_or_else(|| {
                    bad(format!("model {name:?} version {version:?} does not exist"))
                })?;
                row.spec["path"].as_str().map(str::to_string)
            }
        } else {
            None
        };
        if let Some(resolved) = resolved {
            if !spec["properties"].is_object() {
                spec["properties"] = json!({});
            }
            if spec["properties"].get("source").is_none()
                && spec["properties"].get("mlflow.source").is_none()
            {
                spec["properties"]["source"] = json!(path);
            }
            spec["path"] = Json::String(resolved);
        }
        if spec["type"].as_str() == Some("mlflow_model")
            && let Some(false) = self
                .has_mlmodel(p, ws, spec["path"].as_str().unwrap_or_default())
                .await?
        {
            return Err(bad(format!(
                "type mlflow_model needs an MLmodel file at {}; register it as custom_model, or point at the folder that holds MLmodel",
                spec["path"].as_str().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Where `runs:/<run>/<path>` points (given `<run>/<path>`): the run's artifact URI joined
    /// with the path, or `None` when the workspace has no such run.
    async fn run_files(&self, ws: &WorkspaceRow, run_and_path: &str) -> Result<Option<String>> {
        let (run, rel) = run_and_path.split_once('/').unwrap_or((run_and_path, ""));
        Ok(self.store.run_row(&ws.id, run).await?.map(|row| {
            format!(
                "{}/{}",
                row.artifact_uri.trim_end_matches('/'),
                rel.trim_start_matches('/')
            )
        }))
    }

    /// Whether a folder in a datastore of the workspace holds `MLmodel` (`None`: not a
    /// datastore path, so it cannot be checked here).
    async fn has_mlmodel(
        &self,
        p: &Principal,
        ws: &WorkspaceRow,
        path: &str,
    ) -> Result<Option<bool>> {
        let Ok(tarn_spec::uri::DataUri::Datastore {
            datastore, path, ..
        }) = tarn_spec::uri::parse(path)
        else {
            return Ok(None);
        };
        let file = format!("{}/MLmodel", path.as_str().trim_end_matches('/'));
        let file = file.trim_start_matches('/');
        Ok(Some(
            self.storage
                .stat(p, &ws.name, &datastore, file)
                .await?
                .is_some(),
        ))
    }
}
