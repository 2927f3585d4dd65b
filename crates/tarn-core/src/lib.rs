//! `tarn-core`: the services. Each public method on [`Tarn`] authorizes the caller, validates
//! input with `tarn-spec`, and reads or writes through the `Store` trait; HTTP never reaches
//! here and SQL never leaves the store.

pub mod authz;
pub mod backends;
pub mod computes;
pub mod endpoints;
pub mod error;
pub mod isolation;
pub mod jobs;
#[cfg(test)]
mod layering;
pub mod leader;
pub mod process;
pub mod registry;
mod resources;
mod scope;
pub mod sessions;
mod storage;
pub mod tasks;
pub mod tracking;
mod users;
pub mod vault;
mod workspaces;

pub use authz::{JobScope, Principal, Role};
pub use error::{Error, Result};
pub use resources::{DEFAULT_DATASTORE, DEFAULT_DATASTORES};
pub use resources::{ResourceView, Scope, WriteOptions};
pub use tarn_storage::{Entry, Listing, ObjectInfo, StorageError};
pub use users::{NewToken, RoleView, UserView};
pub use workspaces::WorkspaceView;

use authz::{Action, Target};
use std::path::PathBuf;
use std::sync::Arc;
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

pub struct Tarn {
    store: Arc<dyn Store>,
    vault: Vault,
    config: Config,
    /// Opened datastores, by (workspace id, name), with the `updated_at` they were opened at.
    datastores: storage::Cache,
    /// Recently authenticated tokens (see `users::TOKEN_CACHE_TTL`).
    tokens: users::TokenCache,
    /// The scheduler's wake-ups and the pools' nodes.
    jobs: jobs::Runtime,
    /// Online endpoints' routing table and replicas.
    endpoints: endpoints::Runtime,
    /// Compute instances' JupyterLab processes.
    instances: computes::Instances,
    /// The background loops' records.
    tasks: tasks::Tasks,
    /// This server among the others on its store, and whether it leads.
    leadership: leader::Leadership,
    /// Workspaces known to have their Default experiment (checked once per process).
    tracking_ready: std::sync::Mutex<std::collections::HashSet<String>>,
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
        Ok(Tarn {
            store,
            vault,
            config,
            datastores: Default::default(),
            tokens: Default::default(),
            jobs: Default::default(),
            endpoints: Default::default(),
            instances: Default::default(),
            tasks: Default::default(),
            leadership: Default::default(),
            tracking_ready: Default::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Loads a workspace the caller may act on, or fails as `authz::check` says.
    async fn authorized_workspace(
        &self,
        p: &Principal,
        name: &str,
        target: Target,
        action: Action,
    ) -> Result<WorkspaceRow> {
        let ws = self.store.get_workspace(name).await?;
        let role = match &ws {
            Some(ws) if p.job.is_some() => p
                .job
                .as_ref()
                .filter(|j| j.workspace_id == ws.id)
                .map(|_| authz::JOB_TOKEN_ROLE),
            Some(ws) if !p.is_admin => self
                .store
                .role_of(&ws.id, &p.user_id)
                .await?
                .and_then(|r| Role::parse(&r)),
            _ => None,
        };
        let Some(ws) = ws else {
            return Err(Error::not_found(format!("workspace {name:?}")));
        };
        authz::check(p, role, name, target, action)?;
        Ok(ws)
    }
}

impl Tarn {
    /// Makes what a first start needs: the `admin` user (a new token when there is none or
    /// `fresh_token` asks for one) and, once ever, the `default` workspace.
    pub async fn bootstrap(&self, fresh_token: bool) -> Result<Option<NewToken>> {
        let token = self.ensure_admin(fresh_token).await?;
        const MARK: &str = "bootstrap.default_workspace";
        if self.store.get_meta(MARK).await?.is_none() {
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
            };
            let spec = serde_json::json!({"name": "default", "description": "Created by Tarn on first start"});
            match self.create_workspace(&p, &spec).await {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            self.store.init_meta(MARK, "done").await?;
        }
        Ok(token)
    }
}
