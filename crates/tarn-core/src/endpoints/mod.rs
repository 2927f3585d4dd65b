//! Endpoints at run time (batch endpoints' invocations are in `batch.rs`).
//! Online endpoints: The endpoint and deployment documents are ordinary resources
//! (`resources.rs`); this module adds what makes them serve: credentials (`keys.rs`), the
//! routing table the router reads (`routes.rs`), and the controller that keeps each
//! deployment's replicas running at the spec's revision (`controller.rs`).

pub mod batch;
mod controller;
pub mod keys;
pub mod routes;

use crate::Core;
use crate::authz::{Action, Principal, Target};
use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::now_ms;
use crate::resources::{KindHooks, Write};
use crate::resources::{Scope, secret_prefix};
use crate::storage::Storage;
use crate::users::Users;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tarn_spec::Document;
use tarn_spec::Kind;
use tarn_spec::names::NameRule;
use tarn_spec::refs;
use tarn_spec::runplan::{Location, ServeModel, ServePlan};
use tarn_store::{ResourceFilter, ResourceRow, WorkspaceRow};

pub use controller::Runtime;

/// What `get-credentials` returns.
pub enum Credentials {
    Keys { primary: String, secondary: String },
    Token { token: String, expires_ms: i64 },
}

/// A deployment as the controller sees it, for `show`.
pub struct DeploymentStatus {
    /// `Creating`, `Updating`, `Succeeded`, `Failed` or `Deleting` (Azure ML's words).
    pub provisioning_state: &'static str,
    pub error: Option<String>,
    pub replicas: Vec<ReplicaStatus>,
}

pub struct ReplicaStatus {
    pub index: u32,
    /// `Starting`, `Ready`, `Restarting`, `Stopping` or `Failed`.
    pub state: &'static str,
    pub port: u16,
    pub restarts: u32,
    /// Whether it runs the deployment's current spec (false while a rolling update replaces it).
    pub current: bool,
    /// The engine's name for it (a Kubernetes pod's), when an engine runs it.
    pub pod: Option<String>,
    /// What it waits on or died of, as the engine says (`CrashLoopBackOff`).
    pub reason: Option<String>,
}

/// Deployment fields whose change needs new replicas; other fields (instance_count,
/// request_settings, probes, description, tags) apply to running ones.
const LIVE_FIELDS: &[&str] = &[
    "instance_count",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "description",
    "tags",
    "scale_settings",
];

/// The revision of a deployment: a hash of what its replicas run.
pub(crate) fn revision(spec: &Json) -> String {
    let mut s = spec.clone();
    if let Some(o) = s.as_object_mut() {
        for f in LIVE_FIELDS {
            o.remove(*f);
        }
    }
    tarn_spec::digest::sha256_hex(s.to_string().as_bytes())[..12].to_string()
}

/// Online and batch endpoints: their deployments, replicas, routes and keys.
pub struct Endpoints {
    core: Arc<Core>,
    /// Online endpoints' routing table and replicas.
    runtime: controller::Runtime,
    jobs: Arc<Jobs>,
    storage: Arc<Storage>,
    users: Arc<Users>,
}

crate::service_on_core!(Endpoints);

/// Credentials made for a new endpoint, to be sealed with it.
fn fresh_endpoint_secrets() -> Vec<(String, Json)> {
    [keys::PRIMARY, keys::SECONDARY, keys::SIGNING]
        .iter()
        .map(|k| (k.to_string(), Json::String(keys::new_key())))
        .collect()
}

/// An online endpoint's name is free server-wide and its keys are made with it; a deployment
/// is planned (model, code, environment) before it is stored; the routes follow every write.
#[async_trait::async_trait]
impl KindHooks for Endpoints {
    async fn check(&self, w: &Write<'_>, doc: &mut Document, _full: &Json) -> Result<()> {
        match w.kind {
            Kind::OnlineEndpoint => {
                if w.creating {
                    self.check_endpoint_name_free(w.name).await?;
                    doc.secrets.extend(fresh_endpoint_secrets());
                } else if let Some(stored) = self.online_endpoint_row(w.ws, w.name).await?
                    && stored.spec.get("compute") != doc.spec.get("compute")
                {
                    return Err(Error::invalid(
                        "compute",
                        "an endpoint's compute cannot change (its deployments run there): make a new endpoint",
                    ));
                }
                self.serving_engine(w.ws, &doc.spec).await?;
            }
            Kind::OnlineDeployment => {
                let endpoint = w.parent.unwrap_or_default();
                if let Some(warning) = self
                    .check_deployment_target(w.ws, endpoint, &doc.spec)
                    .await?
                {
                    doc.warnings.push(warning);
                }
                self.serve_plan(w.ws, endpoint, &doc.spec).await?;
            }
            Kind::BatchDeployment => self.check_batch_deployment(w.ws, &doc.spec).await?,
            _ => {}
        }
        Ok(())
    }

    async fn written(&self, w: &Write<'_>, _spec: Option<&Json>) -> Result<()> {
        if matches!(w.kind, Kind::OnlineEndpoint | Kind::OnlineDeployment) {
            self.refresh_routes().await;
        }
        Ok(())
    }
}

impl Endpoints {
    pub(crate) fn new(
        core: Arc<Core>,
        jobs: Arc<Jobs>,
        storage: Arc<Storage>,
        users: Arc<Users>,
    ) -> Self {
        Endpoints {
            core,
            runtime: Default::default(),
            jobs,
            storage,
            users,
        }
    }
}

impl Endpoints {
    /// The routing table of every online endpoint (read by the router).
    pub fn routes(&self) -> &routes::Table {
        &self.runtime.table
    }

    /// Where an endpoint takes scoring requests.
    pub fn scoring_uri(&self, endpoint: &str) -> String {
        format!("{}/endpoints/{endpoint}/score", self.config.public_url)
    }

    /// Online endpoint names are unique on a server: the scoring URI has no workspace in it.
    pub(crate) async fn check_endpoint_name_free(&self, name: &str) -> Result<()> {
        for ws in self.store.list_workspaces().await? {
            let key = Scope {
                workspace: &ws.name,
                kind: Kind::OnlineEndpoint,
                parent: None,
            }
            .key(&ws.id, name, "");
            if self.store.get_resource(&key).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "online endpoint {name:?} already exists (in workspace {:?}); endpoint names are unique on a server, as its scoring URI is /endpoints/{name}/score",
                    ws.name
                )));
            }
        }
        Ok(())
    }

    /// An endpoint of `kind` (online or batch), in a workspace where the caller may `action`
    /// on `target`.
    pub(crate) async fn endpoint_row(
        &self,
        p: &Principal,
        workspace: &str,
        kind: Kind,
        target: Kind,
        endpoint: &str,
        action: Action,
    ) -> Result<(WorkspaceRow, ResourceRow)> {
        let ws = self
            .authorized_workspace(p, workspace, Target::Resource(target), action)
            .await?;
        let key = Scope {
            workspace,
            kind,
            parent: None,
        }
        .key(&ws.id, endpoint, "");
        let row = self.store.get_resource(&key).await?.ok_or_else(|| {
            Error::not_found(format!(
                "{} {endpoint:?} in workspace {workspace:?}",
                kind.noun()
            ))
        })?;
        Ok((ws, row))
    }

    /// An endpoint's stored credentials, by vault name (`keys.primary`, …).
    pub(crate) async fn endpoint_secrets(
        &self,
        workspace_id: &str,
        row: &ResourceRow,
    ) -> Result<BTreeMap<String, String>> {
        let spec = self.with_secrets(workspace_id, row).await?;
        Ok(spec
            .get("keys")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    format!("keys.{k}"),
                    v.as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// `get-credentials`: the keys of a `key` endpoint, or a fresh token for an `aml_token` one.
    /// Needs the `listsecrets` permission (Reader may not).
    pub async fn endpoint_credentials(
        &self,
        p: &Principal,
        workspace: &str,
        endpoint: &str,
    ) -> Result<Credentials> {
        let (ws, row) = self
            .endpoint_row(
                p,
                workspace,
                Kind::OnlineEndpoint,
                Kind::OnlineEndpoint,
                endpoint,
                Action::ListSecrets,
            )
            .await?;
        let secrets = self.endpoint_secrets(&ws.id, &row).await?;
        let get = |k: &str| {
            secrets
                .get(k)
                .cloned()
                .ok_or_else(|| Error::Vault(format!("endpoint {endpoint:?} has no {k}")))
        };
        if row.spec.get("auth_mode").and_then(Json::as_str) == Some("key") {
            Ok(Credentials::Keys {
                primary: get(keys::PRIMARY)?,
                secondary: get(keys::SECONDARY)?,
            })
        } else {
            let expires_ms = now_ms() + keys::TOKEN_LIFETIME_MS;
            let signing = get(keys::SIGNING)?;
            Ok(Credentials::Token {
                token: keys::make_token(signing.as_bytes(), endpoint, expires_ms, &p.token_id),
                expires_ms,
            })
        }
    }

    /// `regenerate-keys --key-type primary|secondary`: the old key stops working at once.
    pub async fn regenerate_endpoint_key(
        &self,
        p: &Principal,
        workspace: &str,
        endpoint: &str,
        key_type: &str,
    ) -> Result<()> {
        let (ws, row) = self
            .endpoint_row(
                p,
                workspace,
                Kind::OnlineEndpoint,
                Kind::OnlineEndpoint,
                endpoint,
                Action::Write,
            )
            .await?;
        if row.spec.get("auth_mode").and_then(Json::as_str) != Some("key") {
            return Err(Error::Conflict(format!(
                "online endpoint {endpoint:?} uses auth_mode {}: only key endpoints have keys",
                row.spec.get("auth_mode").unwrap_or(&Json::Null)
            )));
        }
        let which = match key_type {
            "primary" => keys::PRIMARY,
            "secondary" => keys::SECONDARY,
            other => {
                return Err(Error::invalid(
                    "key_type",
                    format!("{other:?} is not a key type: use primary or secondary"),
                ));
            }
        };
        let mut secrets: Vec<(String, Json)> = self
            .endpoint_secrets(&ws.id, &row)
            .await?
            .into_iter()
            .map(|(k, v)| (k, Json::String(v)))
            .collect();
        for (name, value) in secrets.iter_mut() {
            if name == which {
                *value = Json::String(keys::new_key());
            }
        }
        let sealed = self.seal_all(&ws.id, &row.key, &secrets);
        let updated = ResourceRow {
            updated_at: now_ms(),
            ..row
        };
        self.store
            .update_resource(&updated, &secret_prefix(&updated.key), Some(&sealed))
            .await?;
        self.refresh_routes().await;
        Ok(())
    }

    /// Makes the routing table and the replicas follow the stored endpoints now.
    pub(crate) async fn refresh_routes(&self) {
        self.runtime.wake.notify_one();
        // The table itself is rebuilt by the controller's next pass; a changed key must not
        // keep working until then, so rebuild the routes here too.
        if let Err(e) = self.rebuild_routes().await {
            tracing::warn!("rebuilding endpoint routes: {e}");
        }
    }

    async fn online_endpoint_row(
        &self,
        ws: &WorkspaceRow,
        name: &str,
    ) -> Result<Option<ResourceRow>> {
        let key = Scope {
            workspace: &ws.name,
            kind: Kind::OnlineEndpoint,
            parent: None,
        }
        .key(&ws.id, name, "");
        Ok(self.store.get_resource(&key).await?)
    }

    /// A deployment on an endpoint with a Kubernetes `compute` is `type: kubernetes` (and Tarn
    /// may make Deployments there, and its `instance_type` is one the cluster defines). A
    /// `type: kubernetes` deployment on an endpoint without one runs on this machine, as a
    /// managed one does: said by the warning returned.
    async fn check_deployment_target(
        &self,
        ws: &WorkspaceRow,
        endpoint: &str,
        spec: &Json,
    ) -> Result<Option<tarn_spec::Diagnostic>> {
        let Some(ep) = self.online_endpoint_row(ws, endpoint).await? else {
            return Ok(None); // said by the write itself
        };
        let engine = self.serving_engine(ws, &ep.spec).await?;
        let kind = spec.get("type").and_then(Json::as_str).unwrap_or("managed");
        match (&engine, kind) {
            (Some(_), "managed") => Err(Error::invalid(
                "type",
                format!(
                    "endpoint {endpoint:?} runs on a Kubernetes compute: its deployments are `type: kubernetes`"
                ),
            )),
            (None, "kubernetes") => Ok(Some(tarn_spec::Diagnostic::warning(
                "type",
                None,
                format!(
                    "endpoint {endpoint:?} has no Kubernetes `compute`: this `type: kubernetes` deployment's replicas run on the Tarn server's machine, as a managed deployment's do (to run them on a cluster, make an endpoint with `compute: azureml:<kubernetes compute>`)"
                ),
            ))),
            (Some(engine), _) => {
                if let Some(serving) = engine.serving() {
                    serving.check_serving().await?;
                }
                if let Some(asked) = spec.get("instance_type").and_then(Json::as_str) {
                    let known = engine.instance_types().await?;
                    if !known.iter().any(|(n, _)| n == asked) {
                        let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(Error::invalid(
                            "instance_type",
                            format!(
                                "instance type {asked:?} is not defined on the endpoint's Kubernetes compute (defined: {})",
                                if names.is_empty() {
                                    "none".to_string()
                                } else {
                                    names.join(", ")
                                }
                            ),
                        ));
                    }
                }
                Ok(None)
            }
            (None, _) => Ok(None),
        }
    }

    /// The controller's view of a deployment, for `show`.
    pub fn deployment_status(
        &self,
        workspace_id: &str,
        endpoint: &str,
        deployment: &str,
        spec: &Json,
    ) -> Option<DeploymentStatus> {
        self.runtime
            .status(workspace_id, endpoint, deployment, spec)
    }

    /// The last `lines` lines of a deployment's replica log (the first current replica's).
    pub async fn deployment_logs(
        &self,
        p: &Principal,
        workspace: &str,
        endpoint: &str,
        deployment: &str,
        lines: usize,
    ) -> Result<String> {
        let ws = self
            .authorized_workspace(
                p,
                workspace,
                Target::Resource(Kind::OnlineDeployment),
                Action::Read,
            )
            .await?;
        let key = Scope {
            workspace,
            kind: Kind::OnlineDeployment,
            parent: Some(endpoint),
        }
        .key(&ws.id, deployment, "");
        if self.store.get_resource(&key).await?.is_none() {
            return Err(Error::not_found(format!(
                "online deployment {deployment:?} of endpoint {endpoint:?} in workspace {workspace:?}"
            )));
        }
        let text = match self.runtime.log_of(&ws.id, endpoint, deployment) {
            None => return Ok(String::new()),
            Some(controller::ReplicaLog::File(path)) => {
                let bytes = tokio::fs::read(&path).await.unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Some(controller::ReplicaLog::Engine {
                backend,
                id,
                replica,
            }) => match backend.serving() {
                Some(serving) => serving.replica_log(&id, &replica).await?,
                None => String::new(),
            },
        };
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Everything a replica of `deployment` needs, with model and code pinned to datastore
    /// locations. Also the check, at create and update, that the deployment can be served.
    pub(crate) async fn serve_plan(
        &self,
        ws: &WorkspaceRow,
        endpoint: &str,
        spec: &Json,
    ) -> Result<ServePlan> {
        let model = match spec.get("model") {
            None | Some(Json::Null) => None,
            Some(Json::String(text)) => {
                let parsed = refs::parse_asset_ref(text, NameRule::Asset)
                    .map_err(|e| Error::invalid("model", e.to_string()))?;
                let row = self
                    .jobs
                    .find_asset(ws, Kind::Model, &parsed)
                    .await?
                    .ok_or_else(|| {
                        Error::invalid("model", format!("model {text:?} does not exist"))
                    })?;
                Some(self.serve_model(ws, &row.spec).await?)
            }
            Some(inline) => Some(self.serve_model(ws, inline).await?),
        };
        let (code, scoring_script) = match self.code_configuration(ws, spec).await? {
            Some(((_, location), script)) => (Some(location), Some(script)),
            None => (None, None),
        };
        let is_mlflow = model.as_ref().is_some_and(|m| m.type_ == "mlflow_model");
        if !is_mlflow && code.is_none() {
            return Err(Error::invalid(
                "code_configuration",
                "a deployment of a model that is not an mlflow_model needs code_configuration (code and scoring_script)",
            ));
        }
        let environment = match spec.get("environment") {
            Some(env) if !env.is_null() => Some(self.jobs.plan_environment(ws, Some(env)).await?),
            _ if is_mlflow && code.is_none() => None,
            _ => {
                return Err(Error::invalid(
                    "environment",
                    "a deployment with a scoring script needs an environment (an mlflow_model without code needs none)",
                ));
            }
        };
        let environment_variables = spec
            .get("environment_variables")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), crate::jobs::scalar_text(v)))
            .collect();
        Ok(ServePlan {
            workspace: ws.name.clone(),
            endpoint: endpoint.to_string(),
            deployment: spec
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
            model,
            code,
            scoring_script,
            environment,
            environment_variables,
        })
    }

    /// A deployment's `code_configuration` (online or batch): the code's URI and location, and
    /// the scoring script, checked to be a plain relative path.
    pub(crate) async fn code_configuration(
        &self,
        ws: &WorkspaceRow,
        spec: &Json,
    ) -> Result<Option<((String, Location), String)>> {
        let Some(cc) = spec.get("code_configuration").filter(|c| c.is_object()) else {
            return Ok(None);
        };
        let code = cc.get("code").and_then(Json::as_str).unwrap_or_default();
        let code = self
            .jobs
            .data_location(ws, code, "code_configuration.code")
            .await?;
        let script = cc
            .get("scoring_script")
            .and_then(Json::as_str)
            .unwrap_or_default();
        tarn_spec::uri::StorePath::parse(script)
            .map_err(|e| Error::invalid("code_configuration.scoring_script", e.to_string()))?;
        Ok(Some((code, script.to_string())))
    }

    async fn serve_model(&self, ws: &WorkspaceRow, model: &Json) -> Result<ServeModel> {
        let path = model
            .get("path")
            .and_then(Json::as_str)
            .ok_or_else(|| Error::invalid("model.path", "the model has no path"))?;
        let (_, location) = self.jobs.data_location(ws, path, "model.path").await?;
        Ok(ServeModel {
            location,
            type_: model
                .get("type")
                .and_then(Json::as_str)
                .unwrap_or("custom_model")
                .to_string(),
        })
    }

    /// Every online endpoint of every workspace, with its deployments.
    async fn all_online_endpoints(
        &self,
    ) -> Result<Vec<(WorkspaceRow, ResourceRow, Vec<ResourceRow>)>> {
        let mut out = vec![];
        for ws in self.store.list_workspaces().await? {
            let filter = ResourceFilter {
                parent: "",
                name: None,
                include_archived: false,
                latest_only: false,
            };
            let endpoints = self
                .store
                .list_resources(&ws.id, Kind::OnlineEndpoint.collection(), &filter)
                .await?;
            for ep in endpoints {
                let parent = format!("{}/{}", Kind::OnlineEndpoint.collection(), ep.key.name);
                let filter = ResourceFilter {
                    parent: &parent,
                    ..filter
                };
                let deployments = self
                    .store
                    .list_resources(&ws.id, Kind::OnlineDeployment.collection(), &filter)
                    .await?;
                out.push((ws.clone(), ep, deployments));
            }
        }
        Ok(out)
    }
}
