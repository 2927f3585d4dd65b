//! `tarn-core`: the services. Each public method of a service authorizes the caller, validates
//! input with `tarn-spec`, and reads or writes through the `Store` trait; HTTP never reaches
//! here and SQL never leaves the store. This file only composes the services into [`Tarn`].

pub mod audit;
pub mod authz;
pub mod backends;
pub mod backup;
pub mod computes;
pub mod endpoints;
pub mod error;
pub mod eval_datasets;
pub mod genai_issues;
pub mod isolation;
pub mod jobs;
#[cfg(test)]
mod layering;
pub mod leader;
pub mod oidc;
mod pending;
pub mod process;
pub mod registries;
pub mod registry;
mod registry_scope;
mod resources;
mod roles;
pub mod schedules;
mod scope;
pub mod scorers;
pub mod sessions;
mod sso;
mod storage;
pub mod tasks;
pub mod trace_correlation;
pub mod trace_metrics;
pub mod traces;
pub mod tracking;
mod users;
pub mod vault;
mod workspaces;

pub use authz::{JobScope, Principal, Role};
pub use error::{Error, Result};
pub use resources::{DEFAULT_DATASTORE, DEFAULT_DATASTORES};
pub use resources::{ResourceView, Scope, WriteOptions};
pub use tarn_storage::{Entry, Listing, ObjectInfo, StorageError};
pub use tarn_store::ResourceRow;
pub use users::{
    Assignee, KIND_SERVICE_PRINCIPAL, KIND_USER, NewToken, RoleView, TokenRequest, TokenView,
    UserDetail, UserView, new_token_text, parse_lifetime_ms,
};
pub use workspaces::WorkspaceView;
pub use {
    computes::Computes, endpoints::Endpoints, jobs::Jobs, registry::Registry, resources::Resources,
    storage::Storage, tracking::Tracking, users::Users, workspaces::Workspaces,
};

use authz::{Action, Target};
use resources::KindHooks;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tarn_spec::Kind;
use tarn_store::{Store, WorkspaceRow};
use vault::Vault;

/// Where Tarn keeps things and how it is reached.
#[derive(Clone, Debug)]
pub struct Config {
    /// `TARN_HOME`: database, vault key, workspace storage.
    pub home: PathBuf,
    /// The base URL clients use to reach this server, e.g. `http://127.0.0.1:8790`.
    pub public_url: String,
    /// Where the other servers on this store reach this one (`--advertise-url`): the same as
    /// `public_url` for a lone server, its own address behind a load balancer.
    pub advertise_url: String,
    /// The `tarn` executable that runs jobs (`tarn runner`): this binary.
    pub runner_program: PathBuf,
    /// How user code is isolated on this machine (probed at start-up).
    pub isolation: isolation::Isolation,
}

impl Config {
    pub fn workspaces_dir(&self) -> PathBuf {
        self.home.join("workspaces")
    }
}

/// What every service builds on: the store, the vault, the configuration, the background
/// tasks' records and this server's leadership. Services reach it through `Deref`.
pub struct Core {
    store: Arc<dyn Store>,
    vault: Vault,
    config: Config,
    /// The background loops' records.
    tasks: tasks::Tasks,
    /// This server among the others on its store, and whether it leads.
    leadership: leader::Leadership,
    /// Workspaces' rows by name, as requests read them (see [`Core::workspace_row`]).
    workspace_rows: std::sync::Mutex<HashMap<String, (std::time::Instant, WorkspaceRow)>>,
}

/// How long a request may use a workspace's row read by an earlier one: a change made on
/// another server is seen within it (as a token's revocation is); one made on this server at
/// once. Every request reads its workspace, so this saves a statement on each.
const WORKSPACE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Gives a service the core's fields and methods (`self.store`, `self.authorized_workspace`).
macro_rules! service_on_core {
    ($service:ty) => {
        impl std::ops::Deref for $service {
            type Target = $crate::Core;
            fn deref(&self) -> &$crate::Core {
                &self.core
            }
        }
        impl AsRef<$crate::Core> for $service {
            fn as_ref(&self) -> &$crate::Core {
                &self.core
            }
        }
    };
}
pub(crate) use service_on_core;

/// The services, composed. Each is its own type owning its state; a service holds the ones
/// below it (`Jobs` holds `Users`, `Resources` and `Tracking`), never one above: a write that
/// a service above must check or follow up (a compute, an endpoint, a model) reaches it
/// through [`resources::KindHooks`], registered here.
pub struct Tarn {
    pub core: Arc<Core>,
    pub users: Arc<Users>,
    pub workspaces: Arc<Workspaces>,
    pub storage: Arc<Storage>,
    pub resources: Arc<Resources>,
    pub tracking: Arc<Tracking>,
    pub jobs: Arc<Jobs>,
    pub registry: Arc<Registry>,
    pub computes: Arc<Computes>,
    pub endpoints: Arc<Endpoints>,
    pub audit: Arc<audit::Audit>,
    pub backups: Arc<backup::Backups>,
    pub schedules: Arc<schedules::Schedules>,
    pub registries: Arc<registries::Registries>,
    pub traces: Arc<traces::Traces>,
    pub eval_datasets: Arc<eval_datasets::EvalDatasets>,
    pub scorers: Arc<scorers::Scorers>,
    pub issues: Arc<genai_issues::Issues>,
}

service_on_core!(Tarn);

impl AsRef<Core> for Core {
    fn as_ref(&self) -> &Core {
        self
    }
}

/// Milliseconds since the Unix epoch: the store's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tarn {
    /// Opens the services over `store`, unsealing the vault with `vault_key_file`.
    pub async fn open(
        config: Config,
        store: Arc<dyn Store>,
        vault_key_file: &std::path::Path,
    ) -> Result<Tarn> {
        let vault = Vault::open(store.as_ref(), vault_key_file).await?;
        let core = Arc::new(Core {
            store,
            vault,
            config,
            tasks: Default::default(),
            leadership: Default::default(),
            workspace_rows: Default::default(),
        });
        let users = Arc::new(Users::new(core.clone()));
        let workspaces = Arc::new(Workspaces::new(core.clone()));
        let storage = Arc::new(Storage::new(core.clone()));
        let resources = Arc::new(Resources::new(core.clone()));
        let tracking = Arc::new(Tracking::new(core.clone()));
        let jobs = Arc::new(Jobs::new(
            core.clone(),
            users.clone(),
            resources.clone(),
            tracking.clone(),
        ));
        let registry = Arc::new(Registry::new(
            core.clone(),
            jobs.clone(),
            resources.clone(),
            storage.clone(),
            tracking.clone(),
        ));
        let computes = Arc::new(Computes::new(core.clone(), jobs.clone(), users.clone()));
        let endpoints = Arc::new(Endpoints::new(
            core.clone(),
            jobs.clone(),
            storage.clone(),
            users.clone(),
        ));
        // The services above `resources` hear of writes of their kinds (weakly: they hold it).
        let registry_hooks: Arc<dyn KindHooks> = registry.clone();
        let computes_hooks: Arc<dyn KindHooks> = computes.clone();
        let endpoints_hooks: Arc<dyn KindHooks> = endpoints.clone();
        let schedules = Arc::new(schedules::Schedules::new(
            core.clone(),
            resources.clone(),
            jobs.clone(),
            endpoints.clone(),
        ));
        let schedules_hooks: Arc<dyn KindHooks> = schedules.clone();
        resources.add_hooks(&[Kind::Schedule], Arc::downgrade(&schedules_hooks));
        resources.add_hooks(&[Kind::Model], Arc::downgrade(&registry_hooks));
        resources.add_hooks(&[Kind::Compute], Arc::downgrade(&computes_hooks));
        resources.add_hooks(
            &[
                Kind::OnlineEndpoint,
                Kind::OnlineDeployment,
                Kind::BatchDeployment,
            ],
            Arc::downgrade(&endpoints_hooks),
        );
        // A server that stops leading stops what its controllers started.
        let (e, c) = (Arc::downgrade(&endpoints), Arc::downgrade(&computes));
        core.on_stand_down(Box::new(move || {
            if let Some(e) = e.upgrade() {
                e.stand_down_endpoints();
            }
            if let Some(c) = c.upgrade() {
                c.stand_down_instances();
            }
        }));
        Ok(Tarn {
            audit: Arc::new(audit::Audit::new(core.clone())),
            backups: Arc::new(backup::Backups::new(core.clone(), storage.clone())),
            schedules,
            registries: Arc::new(registries::Registries::new(
                core.clone(),
                workspaces.clone(),
                resources.clone(),
                storage.clone(),
            )),
            traces: Arc::new(traces::Traces::new(core.clone(), tracking.clone())),
            eval_datasets: Arc::new(eval_datasets::EvalDatasets::new(
                core.clone(),
                tracking.clone(),
            )),
            scorers: Arc::new(scorers::Scorers::new(core.clone(), tracking.clone())),
            issues: Arc::new(genai_issues::Issues::new(core.clone(), tracking.clone())),
            core,
            users,
            workspaces,
            storage,
            resources,
            tracking,
            jobs,
            registry,
            computes,
            endpoints,
        })
    }

    /// Starts what runs in the background: leadership first (so that the first server on a
    /// store leads from its first second), then the scheduler and the endpoint and instance
    /// controllers.
    pub async fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![
            self.core.start_leadership().await,
            self.jobs.start_scheduler(),
            self.endpoints.start_endpoints(),
            self.computes.start_instances(),
            self.schedules.start(),
            self.traces.start_retention(),
        ];
        tasks.extend(self.backups.start());
        tasks
    }
}

impl Core {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A workspace's row by name, read at most [`WORKSPACE_CACHE_TTL`] ago.
    pub(crate) async fn workspace_row(&self, name: &str) -> Result<Option<WorkspaceRow>> {
        if let Some((at, row)) = self.workspace_rows.lock().expect("lock").get(name)
            && at.elapsed() < WORKSPACE_CACHE_TTL
        {
            return Ok(Some(row.clone()));
        }
        let row = self.store.get_workspace(name).await?;
        let mut rows = self.workspace_rows.lock().expect("lock");
        match &row {
            Some(r) => {
                rows.insert(name.to_string(), (std::time::Instant::now(), r.clone()));
            }
            None => {
                rows.remove(name);
            }
        }
        Ok(row)
    }

    /// Drops a workspace's cached row: it was changed or deleted here.
    pub(crate) fn forget_workspace(&self, name: &str) {
        self.workspace_rows.lock().expect("lock").remove(name);
    }

    /// Loads a workspace the caller may act on, or fails as `authz::check` says.
    pub(crate) async fn authorized_workspace(
        &self,
        p: &Principal,
        name: &str,
        target: Target,
        action: Action,
    ) -> Result<WorkspaceRow> {
        if registry_scope::is_registry(name) && !registry_scope::registry_allows(target) {
            return Err(Error::invalid(
                "",
                format!(
                    "registry {:?} holds models, components, environments and data only: jobs, computes, endpoints and the rest live in workspaces",
                    registry_scope::shown_name(name)
                ),
            ));
        }
        let ws = self.workspace_row(name).await?;
        let roles = match &ws {
            // A job reads a registry's assets while whoever submitted it still may.
            Some(ws) if p.job.is_some() && registry_scope::is_registry(&ws.name) => {
                let mut roles = vec![];
                if matches!(action, Action::Read) {
                    for j in p.job.iter() {
                        roles.extend(self.submitter_roles(ws, j).await?);
                    }
                }
                roles
            }
            Some(ws) if p.job.is_some() => p
                .job
                .iter()
                .filter(|j| j.workspace_id == ws.id)
                .map(|_| authz::JOB_TOKEN_ROLE.definition())
                .collect(),
            // A narrowed token sees no other workspace; its administrator is Owner in its own.
            Some(ws) if p.limit.as_ref().is_some_and(|l| l.workspace_id != ws.id) => vec![],
            Some(_) if p.limit.as_ref().is_some_and(|l| l.user_is_admin) => {
                vec![Role::Owner.definition()]
            }
            Some(ws) if !p.is_admin => {
                // Their own role there, and their groups'.
                let mut names: Vec<String> = self
                    .store
                    .role_of(&ws.id, &p.user_id)
                    .await?
                    .into_iter()
                    .collect();
                names.extend(self.store.group_roles_of(&ws.id, &p.groups).await?);
                let mut roles = vec![];
                for name in names {
                    roles.extend(self.role_definition(&name).await?);
                }
                roles
            }
            _ => vec![],
        };
        let Some(ws) = ws else {
            return Err(Error::not_found(format!("workspace {name:?}")));
        };
        authz::check(p, &roles, name, target, action)?;
        Ok(ws)
    }
}

impl Core {
    /// The roles in `ws` of the user who submitted the job (or made the deployment) `j` is
    /// the token of.
    async fn submitter_roles(
        &self,
        ws: &WorkspaceRow,
        j: &authz::JobScope,
    ) -> Result<Vec<authz::RoleDefinition>> {
        // A job's token, or a deployment's replicas' (`deployment/<endpoint>/<deployment>`).
        let submitter = match j
            .job
            .strip_prefix("deployment/")
            .and_then(|d| d.split_once('/'))
        {
            Some((endpoint, deployment)) => {
                let key = tarn_store::ResourceKey {
                    workspace_id: j.workspace_id.clone(),
                    kind: Kind::OnlineDeployment.collection().to_string(),
                    parent: format!("{}/{endpoint}", Kind::OnlineEndpoint.collection()),
                    name: deployment.to_string(),
                    version: String::new(),
                };
                self.store.get_resource(&key).await?.map(|r| r.created_by)
            }
            None => self
                .store
                .get_job(&j.workspace_id, &j.job)
                .await?
                .map(|job| job.created_by),
        };
        let Some(submitter) = submitter else {
            return Ok(vec![]);
        };
        let Some(user) = self.store.get_user(&submitter).await? else {
            return Ok(vec![]);
        };
        if user.disabled {
            return Ok(vec![]);
        }
        if user.is_admin {
            return Ok(vec![Role::Reader.definition()]);
        }
        let mut roles = vec![];
        if let Some(name) = self.store.role_of(&ws.id, &user.id).await? {
            roles.extend(self.role_definition(&name).await?);
        }
        Ok(roles)
    }
}

impl Tarn {
    /// Makes what a first start needs: the `admin` user (a new token when there is none or
    /// `fresh_token` asks for one) and, once ever, the `default` workspace — its MLflow
    /// artifacts in `artifact_store` when given (`tarn up --artifact-store`), which a later
    /// start that gives another moves there.
    pub async fn bootstrap(
        &self,
        fresh_token: bool,
        artifact_store: Option<&Json>,
    ) -> Result<Option<NewToken>> {
        let token = self.users.ensure_admin(fresh_token).await?;
        let admin = self
            .store
            .get_user("admin")
            .await?
            .ok_or_else(|| Error::not_found("user \"admin\""))?;
        let p = Principal {
            user_id: admin.id,
            name: admin.name,
            is_admin: true,
            job: None,
            limit: None,
            groups: vec![],
            token_id: String::new(),
            kind: "user".into(),
        };
        const MARK: &str = "bootstrap.default_workspace";
        if self.store.get_meta(MARK).await?.is_none() {
            let mut spec = serde_json::json!({"name": "default", "description": "Created by Tarn on first start"});
            if let Some(store) = artifact_store {
                spec["artifact_store"] = store.clone();
            }
            match self.workspaces.create_workspace(&p, &spec).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            self.store.init_meta(MARK, "done").await?;
        } else if let Some(store) = artifact_store
            && let Some(ws) = self.store.get_workspace("default").await?
            && ws.spec.get("artifact_store").and_then(|s| s.get("path")) != store.get("path")
        {
            let mut spec = ws.spec.clone();
            spec["artifact_store"] = store.clone();
            self.workspaces
                .update_workspace(&p, "default", &spec)
                .await?;
        }
        Ok(token)
    }
}
