//! `tarn-store`: metadata persistence behind one trait.
//!
//! Only this crate writes SQL. The service layer talks to [`Store`]; [`SqlStore`] implements it
//! once for SQLite (WAL; the embedded default) and PostgreSQL (a team's server, shared by
//! several Tarn servers). Statements are written once in the SQL both accept; what they spell
//! differently lives in [`Dialect`], and what the data means in `packed.rs` and
//! `sql_tracking.rs`. Both backends pass one conformance suite (`tests/suite.rs`). Rows here
//! are plain data; they never derive `Serialize`.

mod copy;
mod dialect;
mod location;
mod packed;
mod servers;
mod sql;
mod sql_traces;
mod sql_tracking;
mod statement;
mod traces;
mod tracking;

pub use copy::{DERIVED_COLUMNS, RUNTIME_TABLES, TABLES, TableCount};
pub use dialect::Dialect;
pub use location::Location;
pub use servers::{LeaseRow, ServerRow, Servers, SessionRow};
pub use sql::SqlStore;
pub use traces::*;
pub use tracking::*;

use async_trait::async_trait;
use serde_json::Value as Json;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists already.
    #[error("already exists")]
    Conflict,
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// An operation on a whole store that cannot go ahead, with why.
    #[error("{0}")]
    Refused(String),
    #[error("stored JSON is corrupt")]
    Corrupt(#[source] serde_json::Error),
    /// The database file is damaged (SQLite's `SQLITE_CORRUPT`, `SQLITE_NOTADB`): what needs
    /// the damaged part fails until the store is restored; the rest still answers.
    #[error(
        "the metadata store is damaged ({0}): restore it from a backup (`tarn backup restore`)"
    )]
    Damaged(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub spec: Json,
    pub storage_root: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Identifies one resource row. `version` is empty for unversioned kinds, `parent` is empty
/// for kinds that live directly in the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKey {
    pub workspace_id: String,
    pub kind: String,
    pub parent: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRow {
    pub key: ResourceKey,
    /// Creation order within (workspace, kind, parent, name): the newest is `@latest`.
    pub seq: i64,
    pub spec: Json,
    pub archived: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: i64,
    /// A disabled user's tokens and sessions are refused.
    pub disabled: bool,
    /// `user` (a person) or `service_principal` (automation).
    pub kind: String,
    /// For a user who signs in through an OpenID provider: `<issuer> <sub>`; else empty.
    pub subject: String,
    /// The groups their last sign-in claimed.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub hash: String,
    pub description: String,
    pub created_at: i64,
    /// `""` for a user's own token; `job:<workspace id>:<job>` for a job's runner token;
    /// `ws:<workspace id>:<role>` for a token narrowed to one workspace and role.
    pub scope: String,
    /// When it stops working, in ms since the epoch; 0: never.
    pub expires_at: i64,
    /// When it was last used (to the minute), in ms since the epoch; 0: never.
    pub last_used_at: i64,
}

/// One job. `workspace` (the workspace's name) is filled in on reads.
/// A compute instance's desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeStateRow {
    pub workspace_id: String,
    pub name: String,
    /// `Running` or `Stopped`.
    pub desired: String,
    /// Who or what set it: `start`, `stop`, `idle shutdown`, `schedule`, `create`.
    pub reason: String,
    pub updated_at: i64,
}

/// What the scheduler has decided for one schedule.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScheduleStateRow {
    pub workspace_id: String,
    pub name: String,
    /// The schedule resource's `created_at`: a schedule made again under the same name
    /// starts afresh.
    pub created_at: i64,
    /// A digest of what decides its fires (trigger, enabled); a changed one starts afresh.
    pub rule: String,
    /// The last due time dealt with (fired or passed over), in seconds since the epoch.
    pub through: i64,
    pub fired: i64,
    pub skipped: i64,
    /// Why the last fire failed; empty when it did not.
    pub last_error: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobRow {
    pub workspace_id: String,
    pub workspace: String,
    pub name: String,
    /// Submission order across all workspaces (first in, first out).
    pub seq: i64,
    /// The parent job's name, or `""`.
    pub parent: String,
    pub job_type: String,
    pub experiment: String,
    /// The pool the job runs in: `serverless`, `local`, or a compute's name.
    pub compute: String,
    /// Higher runs first.
    pub priority: i64,
    pub status: String,
    pub spec: Json,
    pub state: Json,
    pub archived: bool,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    pub parent: Option<&'a str>,
    pub status: Option<&'a str>,
    pub include_archived: bool,
    pub limit: Option<i64>,
    /// Only jobs submitted before this one (its `seq`): the next page.
    pub before_seq: Option<i64>,
    pub experiment: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    pub workspace_id: String,
    pub user_id: String,
    pub user_name: String,
    pub role: String,
    pub created_at: i64,
}

/// One audited call (see `migrations/sqlite/0016_audit.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: String,
    /// ms since the epoch.
    pub at: i64,
    pub actor: String,
    /// `user`, `service_principal`, `job` or `anonymous`.
    pub actor_kind: String,
    pub address: String,
    pub method: String,
    pub path: String,
    /// The workspace's name, or `""` for calls outside one.
    pub workspace: String,
    pub status: i64,
    /// The fields the call changed (names only), comma-separated; `""` when not known.
    pub changes: String,
}

/// Which audit events to list: all that match, newest first.
#[derive(Debug, Default)]
pub struct AuditFilter<'a> {
    pub actor: Option<&'a str>,
    pub workspace: Option<&'a str>,
    /// ms since the epoch.
    pub since: Option<i64>,
    pub limit: usize,
}

/// Which resources to list.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter<'a> {
    pub parent: &'a str,
    /// Only versions of this name.
    pub name: Option<&'a str>,
    pub include_archived: bool,
    /// For versioned kinds: one row per name, the latest non-archived version.
    pub latest_only: bool,
}

/// Everything Tarn persists. Each method is one transaction: after it returns `Ok`, the change
/// survives a crash of the process; after it returns `Err`, nothing of it was written.
#[async_trait]
pub trait Store: Tracking + Traces + Servers + Send + Sync {
    /// Whether several servers may use this store at once (PostgreSQL), so that they must
    /// agree on a leader; a SQLite store has one server.
    fn shared(&self) -> bool;
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    /// Sets `key` only when it is unset; returns the value now stored.
    async fn init_meta(&self, key: &str, value: &str) -> Result<String>;
    /// Sets `key` to `value`, replacing what was there.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Writes the whole store as of one instant into a new SQLite file at `path` (a backup:
    /// taken while the store is in use, writes going on), and returns each table's rows.
    async fn snapshot_to(&self, path: &std::path::Path) -> Result<Vec<TableCount>>;

    /// Creates a workspace with its first resources (default datastores), their secrets, and
    /// role assignments.
    async fn create_workspace(
        &self,
        workspace: &WorkspaceRow,
        resources: &[ResourceRow],
        secrets: &[SecretRow],
        roles: &[RoleRow],
    ) -> Result<()>;
    async fn get_workspace(&self, name: &str) -> Result<Option<WorkspaceRow>>;
    async fn list_workspaces(&self) -> Result<Vec<WorkspaceRow>>;
    async fn update_workspace(&self, workspace: &WorkspaceRow) -> Result<bool> {
        self.update_workspace_with(workspace, None).await
    }
    /// Writes a workspace's spec and, in the same transaction, one of its resources with its
    /// secrets (`(row, secret prefix, secrets)`: its artifact store, moved): both or neither.
    async fn update_workspace_with(
        &self,
        workspace: &WorkspaceRow,
        resource: Option<(&ResourceRow, &str, &[SecretRow])>,
    ) -> Result<bool>;
    /// Deletes a workspace and everything in it.
    async fn delete_workspace(&self, id: &str) -> Result<bool>;

    /// Inserts a resource and its secrets (replacing secrets with the same names).
    async fn insert_resource(&self, row: &ResourceRow, secrets: &[SecretRow]) -> Result<()>;
    /// Inserts a new version numbered one past the highest numeric version; returns it.
    async fn insert_next_version(&self, row: &ResourceRow, secrets: &[SecretRow])
    -> Result<String>;
    async fn get_resource(&self, key: &ResourceKey) -> Result<Option<ResourceRow>>;
    /// The newest non-archived version of a name.
    async fn latest_resource(&self, key: &ResourceKey) -> Result<Option<ResourceRow>>;
    async fn list_resources(
        &self,
        workspace_id: &str,
        kind: &str,
        filter: &ResourceFilter<'_>,
    ) -> Result<Vec<ResourceRow>>;
    /// Replaces a resource's spec; `secrets` (if given) replace all secrets under `secret_prefix`.
    async fn update_resource(
        &self,
        row: &ResourceRow,
        secret_prefix: &str,
        secrets: Option<&[SecretRow]>,
    ) -> Result<bool>;
    /// Deletes a resource (all versions when `key.version` is empty), its children, and the
    /// secrets under `secret_prefix`.
    async fn delete_resource(&self, key: &ResourceKey, secret_prefix: &str) -> Result<u64>;
    /// Archives or restores one version, or all versions when `key.version` is empty.
    async fn set_archived(&self, key: &ResourceKey, archived: bool, now: i64) -> Result<u64>;

    async fn get_secrets(&self, workspace_id: &str, prefix: &str) -> Result<Vec<SecretRow>>;

    async fn create_user(&self, user: &UserRow) -> Result<()>;
    async fn get_user(&self, name: &str) -> Result<Option<UserRow>>;
    async fn list_users(&self) -> Result<Vec<UserRow>>;
    async fn create_token(&self, token: &TokenRow) -> Result<()>;
    async fn find_token(&self, hash: &str) -> Result<Option<(TokenRow, UserRow)>>;
    /// A token by its id, with its user.
    async fn find_token_by_id(&self, id: &str) -> Result<Option<(TokenRow, UserRow)>>;

    /// Deletes every token with this scope (a finished job's runner token).
    async fn delete_tokens(&self, scope: &str) -> Result<u64>;
    /// Tokens with their users' names: one user's (by id), or everyone's.
    async fn list_tokens(&self, user_id: Option<&str>) -> Result<Vec<(TokenRow, String)>>;
    /// Deletes one token; the deleted token, if there was one.
    async fn delete_token(&self, id: &str) -> Result<Option<TokenRow>>;
    /// Records that a token was used at `at`.
    async fn touch_token(&self, id: &str, at: i64) -> Result<()>;
    /// Disables or enables a user; false if there is no such user.
    async fn set_user_disabled(&self, user_id: &str, disabled: bool) -> Result<bool>;
    /// Deletes a user with their tokens, studio sessions and role assignments, at once.
    async fn delete_user(&self, user_id: &str) -> Result<bool>;
    /// A user's role assignments in every workspace.
    async fn roles_of_user(&self, user_id: &str) -> Result<Vec<RoleRow>>;

    /// Inserts a job, numbering its `seq`; `Conflict` when the name is taken in the workspace.
    async fn insert_job(&self, row: &JobRow) -> Result<()>;
    /// Appends `data`, which starts at byte `offset` of the job's log `node` (0: the job's own,
    /// k: node k's). Bytes the log has already are skipped, so a runner may resend after a
    /// lost reply. The log's size after, or `Err(size)` when `offset` is past its end.
    async fn append_job_log(
        &self,
        workspace_id: &str,
        job: &str,
        node: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<std::result::Result<u64, u64>>;
    /// Up to about `max` bytes of the job's log `node` from `offset`, and the log's size.
    async fn read_job_log(
        &self,
        workspace_id: &str,
        job: &str,
        node: u32,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64)>;
    async fn get_job(&self, workspace_id: &str, name: &str) -> Result<Option<JobRow>>;
    async fn list_jobs(&self, workspace_id: &str, filter: &JobFilter<'_>) -> Result<Vec<JobRow>>;
    /// Sets whether a compute instance should run (`Running`/`Stopped`) and why.
    async fn set_compute_state(&self, state: &ComputeStateRow) -> Result<()>;
    /// Every compute instance's desired state, in every workspace.
    async fn compute_states(&self) -> Result<Vec<ComputeStateRow>>;
    async fn delete_compute_state(&self, workspace_id: &str, name: &str) -> Result<()>;
    async fn set_schedule_state(&self, state: &ScheduleStateRow) -> Result<()>;
    /// Every schedule's state, in every workspace.
    async fn schedule_states(&self) -> Result<Vec<ScheduleStateRow>>;
    async fn delete_schedule_state(&self, workspace_id: &str, name: &str) -> Result<()>;
    /// Jobs in any of `statuses`, in every workspace, oldest first.
    async fn jobs_in_status(&self, statuses: &[&str]) -> Result<Vec<JobRow>>;
    /// Writes a job's status, state, archived flag and `updated_at` if the stored job is still
    /// the `expected` one the writer read (same status and `updated_at`): a compare-and-set, so
    /// two writers never both win a transition and no write overwrites one it did not see.
    /// Writers make `row.updated_at` later than `expected.updated_at`.
    async fn update_job(&self, row: &JobRow, expected: &JobRow) -> Result<bool>;

    async fn assign_role(&self, role: &RoleRow) -> Result<()>;
    async fn remove_role(&self, workspace_id: &str, user_id: &str) -> Result<bool>;
    async fn list_roles(&self, workspace_id: &str) -> Result<Vec<RoleRow>>;
    async fn role_of(&self, workspace_id: &str, user_id: &str) -> Result<Option<String>>;
    /// The user an OpenID provider's subject (`<issuer> <sub>`) signs in as.
    async fn get_user_by_subject(&self, subject: &str) -> Result<Option<UserRow>>;
    /// Records the groups a user's sign-in claimed.
    async fn set_user_groups(&self, user_id: &str, groups: &[String]) -> Result<()>;
    /// Gives everyone in `group` `role` in the workspace (replacing the group's role there).
    async fn assign_group_role(
        &self,
        workspace_id: &str,
        group: &str,
        role: &str,
        now: i64,
    ) -> Result<()>;
    async fn remove_group_role(&self, workspace_id: &str, group: &str) -> Result<bool>;
    /// (group, role, created_at) in the workspace, by group.
    async fn list_group_roles(&self, workspace_id: &str) -> Result<Vec<(String, String, i64)>>;
    /// The roles the workspace gives to any of `groups`.
    async fn group_roles_of(&self, workspace_id: &str, groups: &[String]) -> Result<Vec<String>>;
    /// Appends audit events.
    async fn record_audit(&self, events: &[AuditRow]) -> Result<()>;
    async fn list_audit(&self, filter: &AuditFilter<'_>) -> Result<Vec<AuditRow>>;
    /// Drops the events older than `before` (ms since the epoch); how many.
    async fn prune_audit(&self, before: i64) -> Result<u64>;
    /// Whether any workspace assigns the role named `role`.
    async fn role_in_use(&self, role: &str) -> Result<bool>;

    /// Stores a custom role's definition (JSON); `Conflict` if the name is taken.
    async fn create_role_definition(&self, name: &str, definition: &str, now: i64) -> Result<()>;
    async fn get_role_definition(&self, name: &str) -> Result<Option<String>>;
    /// Every custom role: (name, definition), by name.
    async fn list_role_definitions(&self) -> Result<Vec<(String, String)>>;
    async fn delete_role_definition(&self, name: &str) -> Result<bool>;
}
