//! Users, service principals, tokens and role assignments. Tokens are 256 random bits shown
//! once; only their SHA-256 is stored (a slow password hash buys nothing for secrets with this
//! much entropy). A token may expire and may be narrowed to one workspace and role; revoking
//! it, or disabling its user, takes effect on every server within [`TOKEN_CACHE_TTL`].

use crate::Core;
use crate::authz::{Action, Principal, Role, Target};
use crate::error::{Error, Result};
use crate::now_ms;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;
use tarn_spec::names::{self, NameRule};
use tarn_store::{RoleRow, StoreError, TokenRow, UserRow};

pub struct UserView {
    pub name: String,
    pub is_admin: bool,
    pub created_at: i64,
    pub disabled: bool,
    /// `user` or `service_principal`.
    pub kind: String,
    /// The groups their last single sign-on claimed.
    pub groups: Vec<String>,
    /// Whether they sign in through the OpenID provider.
    pub sso: bool,
}

/// A user with their role assignments in every workspace (`tarn user show`).
pub struct UserDetail {
    pub user: UserView,
    /// (workspace name, role).
    pub roles: Vec<(String, String)>,
    /// Their own tokens (not jobs' or instances').
    pub tokens: usize,
}

pub struct NewToken {
    /// The token's id (for `tarn token revoke`).
    pub id: String,
    pub user: String,
    /// The token itself: shown once, never stored.
    pub token: String,
    pub description: String,
    pub expires_at: Option<i64>,
}

/// A token as listed: never its secret.
pub struct TokenView {
    pub id: String,
    pub user: String,
    pub description: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// `"workspace W as R"` for a narrowed token.
    pub limited_to: Option<String>,
}

/// What `tarn token create` asks for.
#[derive(Default)]
pub struct TokenRequest<'a> {
    /// Another user's (administrators only); the caller's when `None`.
    pub user: Option<&'a str>,
    pub description: &'a str,
    /// Lifetime in ms; `None`: it never expires.
    pub expires_in_ms: Option<i64>,
    /// Narrowed to this workspace, with `role` (both or neither).
    pub workspace: Option<&'a str>,
    pub role: Option<&'a str>,
}

/// The kinds of identity: people and automation.
pub const KIND_USER: &str = "user";
pub const KIND_SERVICE_PRINCIPAL: &str = "service_principal";

pub struct RoleView {
    /// The user (or service principal) given the role, or…
    pub user: Option<String>,
    /// …everyone whose sign-in claims this group.
    pub group: Option<String>,
    pub role: String,
    pub created_at: i64,
}

/// Who a role assignment is for.
#[derive(Clone, Copy, Debug)]
pub enum Assignee<'a> {
    User(&'a str),
    /// Everyone whose single sign-on claims this group.
    Group(&'a str),
}

/// How long a token's user is remembered without asking the store: what bounds how long a
/// token revoked, or a user disabled, on another server still works here. On the server that
/// revokes, the token leaves the cache at once.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How stale a token's `last_used_at` may get before a use writes it again.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// A token seen recently: who it is, when looked up, its id and expiry (0: never).
#[derive(Clone)]
pub(crate) struct Cached {
    principal: Principal,
    at: std::time::Instant,
    token_id: String,
    expires_at: i64,
}

/// Tokens seen recently, by the SHA-256 of the token.
pub(crate) type TokenCache = std::sync::Mutex<std::collections::HashMap<String, Cached>>;

/// Parses a lifetime: `30d`, `12h`, `90m`, `1w`, `1day 2h` (as `humantime` reads them).
pub fn parse_lifetime_ms(text: &str) -> Result<i64> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        Error::invalid(
            "expires_in",
            format!("{text:?} is not a lifetime such as 30d, 12h or 90m: {e}"),
        )
    })?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms < 1000 {
        return Err(Error::invalid(
            "expires_in",
            format!("{text:?} is shorter than a second"),
        ));
    }
    Ok(ms)
}

pub(crate) fn hash_token(token: &str) -> String {
    tarn_spec::digest::sha256_hex(token.as_bytes())
}

/// A new token: 256 random bits, URL-safe base64, `tarn_` first.
pub fn new_token_text() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("tarn_{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn admin_only(p: &Principal, what: &str) -> Result<()> {
    if p.is_admin {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("only administrators can {what}")))
    }
}

/// Users, their roles in workspaces, API tokens and browser sessions.
pub struct Users {
    core: Arc<Core>,
    /// Recently authenticated tokens (see `TOKEN_CACHE_TTL`).
    tokens: TokenCache,
    /// Token ids lately checked for endpoint tokens bound to them: (alive, when checked).
    alive: std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>,
    /// The OpenID provider people sign in through, when single sign-on is on (sso.rs).
    pub(crate) sso: std::sync::OnceLock<crate::oidc::Oidc>,
}

crate::service_on_core!(Users);

impl Users {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Users {
            core,
            tokens: Default::default(),
            alive: Default::default(),
            sso: Default::default(),
        }
    }
}

impl Users {
    /// Resolves a bearer token to its user.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal> {
        let token = token
            .filter(|t| t.starts_with("tarn_"))
            .ok_or(Error::Unauthenticated)?;
        self.authenticate_hash(hash_token(token)).await
    }

    /// As [`Users::authenticate`], for a token known by its hash (a studio session's).
    pub(crate) async fn authenticate_hash(&self, hash: String) -> Result<Principal> {
        let now = now_ms();
        if let Some(c) = self.tokens.lock().expect("token cache lock").get(&hash)
            && c.at.elapsed() < TOKEN_CACHE_TTL
        {
            return if c.expires_at == 0 || now < c.expires_at {
                Ok(c.principal.clone())
            } else {
                Err(Error::Unauthenticated)
            };
        }
        let (token, user) = self
            .store
            .find_token(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if !usable(&token, &user, now) {
            return Err(Error::Unauthenticated);
        }
        let job = crate::authz::JobScope::parse(&token.scope);
        let limit = crate::authz::TokenLimit::parse(&token.scope, user.is_admin);
        let principal = Principal {
            user_id: user.id,
            name: user.name,
            // A job's or a narrowed token never carries its user's administrator rights.
            is_admin: user.is_admin && job.is_none() && limit.is_none(),
            job,
            limit,
            groups: user.groups,
            token_id: token.id.clone(),
            kind: if token.scope.starts_with("job:") {
                "job".to_string()
            } else {
                user.kind.clone()
            },
        };
        if now - token.last_used_at >= LAST_USED_GRANULARITY_MS {
            self.store.touch_token(&token.id, now).await?;
        }
        let mut cache = self.tokens.lock().expect("token cache lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(
            hash,
            Cached {
                principal: principal.clone(),
                at: std::time::Instant::now(),
                token_id: token.id,
                expires_at: token.expires_at,
            },
        );
        Ok(principal)
    }

    /// Forgets cached tokens that match (revoked ones, a disabled user's).
    fn forget(&self, matches: impl Fn(&Cached) -> bool) {
        self.tokens
            .lock()
            .expect("token cache lock")
            .retain(|_, c| !matches(c));
        self.alive.lock().expect("token cache lock").clear();
    }

    /// Whether the token with this id still works (an `aml_token` endpoint token is bound to
    /// the one that fetched it): remembered for [`TOKEN_CACHE_TTL`], like tokens themselves.
    pub async fn token_alive(&self, id: &str) -> Result<bool> {
        if let Some((alive, at)) = self.alive.lock().expect("token cache lock").get(id)
            && at.elapsed() < TOKEN_CACHE_TTL
        {
            return Ok(*alive);
        }
        let alive = match self.store.find_token_by_id(id).await? {
            Some((token, user)) => usable(&token, &user, now_ms()),
            None => false,
        };
        let mut cache = self.alive.lock().expect("token cache lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (alive, std::time::Instant::now()));
        Ok(alive)
    }

    /// Makes the runner token of a job: it acts for `user` in the job's workspace only.
    pub(crate) async fn create_job_token(
        &self,
        user: &str,
        scope: &crate::authz::JobScope,
    ) -> Result<String> {
        let user = self
            .store
            .get_user(user)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user:?}")))?;
        self.store_new_token(
            &user,
            &format!("runner of job {}", scope.job),
            &scope.token_scope(),
        )
        .await
    }

    /// Revokes a job's runner token, in the store and in the cache.
    pub(crate) async fn revoke_job_token(&self, scope: &crate::authz::JobScope) -> Result<()> {
        self.store.delete_tokens(&scope.token_scope()).await?;
        self.forget(|c| c.principal.job.as_ref() == Some(scope));
        Ok(())
    }

    /// Makes a token for `user`, stores its hash, and returns its id and the token itself.
    async fn store_new_token(
        &self,
        user: &UserRow,
        description: &str,
        scope: &str,
    ) -> Result<String> {
        Ok(self.mint(user, description, scope, 0).await?.1)
    }

    /// An expiring token for `user` (a sign-in's): its id and the token.
    pub(crate) async fn mint_for(
        &self,
        user: &UserRow,
        description: &str,
        expires_at: i64,
    ) -> Result<(String, String)> {
        self.mint(user, description, "", expires_at).await
    }

    async fn mint(
        &self,
        user: &UserRow,
        description: &str,
        scope: &str,
        expires_at: i64,
    ) -> Result<(String, String)> {
        let token = new_token_text();
        let id = uuid::Uuid::new_v4().to_string();
        self.store
            .create_token(&TokenRow {
                id: id.clone(),
                user_id: user.id.clone(),
                hash: hash_token(&token),
                description: description.to_string(),
                created_at: now_ms(),
                scope: scope.to_string(),
                expires_at,
                last_used_at: 0,
            })
            .await?;
        Ok((id, token))
    }

    async fn insert_token(&self, user: &UserRow, description: &str) -> Result<NewToken> {
        let (id, token) = self.mint(user, description, "", 0).await?;
        Ok(NewToken {
            id,
            user: user.name.clone(),
            token,
            description: description.to_string(),
            expires_at: None,
        })
    }

    /// Creates a user (or a service principal, `kind`) and a first token for them.
    pub async fn create_user(
        &self,
        p: &Principal,
        name: &str,
        is_admin: bool,
        kind: &str,
    ) -> Result<NewToken> {
        admin_only(p, "create users and service principals")?;
        self.create_user_unchecked(name, is_admin, kind).await
    }

    async fn create_user_unchecked(
        &self,
        name: &str,
        is_admin: bool,
        kind: &str,
    ) -> Result<NewToken> {
        names::check(NameRule::User, name).map_err(|e| Error::invalid("name", e.to_string()))?;
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            is_admin,
            created_at: now_ms(),
            disabled: false,
            kind: kind.to_string(),
            subject: String::new(),
            groups: vec![],
        };
        self.store.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict => Error::AlreadyExists {
                what: format!("user or service principal {name:?}"),
            },
            e => e.into(),
        })?;
        self.insert_token(&user, "first token").await
    }

    /// People (`kind` `user`) or service principals, apart.
    pub async fn list_users(&self, p: &Principal, kind: &str) -> Result<Vec<UserView>> {
        admin_only(p, "list users and service principals")?;
        let users = self.store.list_users().await?;
        Ok(users
            .into_iter()
            .filter(|u| u.kind == kind)
            .map(user_view)
            .collect())
    }

    /// A user, or a service principal, by name (administrators only).
    async fn known(&self, p: &Principal, name: &str, what: &str) -> Result<UserRow> {
        admin_only(p, what)?;
        self.store
            .get_user(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {name:?}")))
    }

    /// Workspace names by id (role assignments and narrowed tokens name workspaces by id).
    async fn workspace_names(&self) -> Result<std::collections::HashMap<String, String>> {
        Ok(self
            .store
            .list_workspaces()
            .await?
            .into_iter()
            .map(|w| (w.id, w.name))
            .collect())
    }

    /// A user with their role assignments everywhere and how many tokens they hold.
    pub async fn show_user(&self, p: &Principal, name: &str) -> Result<UserDetail> {
        let user = if p.name == name && p.job.is_none() && p.limit.is_none() {
            self.store
                .get_user(name)
                .await?
                .ok_or_else(|| Error::not_found(format!("user {name:?}")))?
        } else {
            self.known(p, name, "see other users").await?
        };
        let names = self.workspace_names().await?;
        let mut roles: Vec<(String, String)> = self
            .store
            .roles_of_user(&user.id)
            .await?
            .into_iter()
            .filter_map(|r| Some((names.get(&r.workspace_id)?.clone(), r.role)))
            .collect();
        roles.sort();
        let tokens = self
            .store
            .list_tokens(Some(&user.id))
            .await?
            .iter()
            .filter(|(t, _)| is_personal(t))
            .count();
        Ok(UserDetail {
            user: user_view(user),
            roles,
            tokens,
        })
    }

    /// Disables (or enables again) a user: their tokens, studio sessions and compute
    /// instances' tokens are refused from now on (see `authenticate_hash`). Their running jobs
    /// are left to finish; the caller cancels them when asked to.
    pub async fn set_disabled(
        &self,
        p: &Principal,
        name: &str,
        disabled: bool,
    ) -> Result<UserView> {
        let mut user = self.known(p, name, "disable or enable users").await?;
        if disabled && user.id == p.user_id {
            return Err(Error::invalid(
                "name",
                "you cannot disable yourself (another administrator can)",
            ));
        }
        self.store.set_user_disabled(&user.id, disabled).await?;
        self.forget(|c| c.principal.user_id == user.id);
        user.disabled = disabled;
        Ok(user_view(user))
    }

    /// Deletes a user or service principal with their tokens, sessions and role assignments.
    /// What they made stays (it names them as its creator). The caller cancels their jobs
    /// first: a deleted user's runner tokens are gone.
    pub async fn delete_user(&self, p: &Principal, name: &str) -> Result<()> {
        let user = self.known(p, name, "delete users").await?;
        if user.id == p.user_id {
            return Err(Error::invalid(
                "name",
                "you cannot delete yourself (another administrator can)",
            ));
        }
        self.store.delete_user(&user.id).await?;
        self.forget(|c| c.principal.user_id == user.id);
        Ok(())
    }

    /// Checks the caller may delete or disable `name` (before their jobs are canceled).
    pub async fn check_manageable(&self, p: &Principal, name: &str) -> Result<()> {
        self.known(p, name, "disable or delete users")
            .await
            .map(|_| ())
    }

    /// Creates another token for `user` (default: the caller). Only admins mint for others.
    /// It may expire, and may be narrowed to one workspace and a role there (which acts as
    /// far as both its user's role and that role allow).
    pub async fn create_token(&self, p: &Principal, req: &TokenRequest<'_>) -> Result<NewToken> {
        if p.job.is_some() || p.limit.is_some() {
            return Err(Error::Forbidden(
                "a job's or a narrowed token cannot create tokens".into(),
            ));
        }
        let name = req.user.unwrap_or(&p.name);
        if name != p.name {
            admin_only(p, "create tokens for other users")?;
        }
        let user = self
            .store
            .get_user(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {name:?}")))?;
        let scope = match (req.workspace, req.role) {
            (None, None) => String::new(),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::invalid(
                    if req.role.is_none() {
                        "role"
                    } else {
                        "workspace"
                    },
                    "a narrowed token names both a workspace and a role (--workspace W --role R)",
                ));
            }
            (Some(workspace), Some(role)) => {
                let role = parse_role(role)?;
                let ws = self
                    .store
                    .get_workspace(workspace)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("workspace {workspace:?}")))?;
                if !user.is_admin && self.store.role_of(&ws.id, &user.id).await?.is_none() {
                    return Err(Error::not_found(format!("workspace {workspace:?}")));
                }
                crate::authz::TokenLimit::token_scope(&ws.id, role)
            }
        };
        let expires_at = match req.expires_in_ms {
            Some(ms) if ms <= 0 => {
                return Err(Error::invalid("expires_in", "a lifetime must be positive"));
            }
            Some(ms) => now_ms().saturating_add(ms),
            None => 0,
        };
        let (id, token) = self
            .mint(&user, req.description, &scope, expires_at)
            .await?;
        Ok(NewToken {
            id,
            user: user.name,
            token,
            description: req.description.to_string(),
            expires_at: (expires_at != 0).then_some(expires_at),
        })
    }

    /// Tokens: the caller's own, or (administrators) one user's or everyone's. Never the
    /// secrets, and not the tokens Tarn makes for jobs, instances and deployments.
    pub async fn list_tokens(
        &self,
        p: &Principal,
        user: Option<&str>,
        all: bool,
    ) -> Result<Vec<TokenView>> {
        let user_id = match (user, all) {
            (_, true) => {
                admin_only(p, "list everyone's tokens")?;
                None
            }
            (Some(name), false) if name != p.name => {
                Some(self.known(p, name, "list other users' tokens").await?.id)
            }
            _ => Some(p.user_id.clone()),
        };
        let names = self.workspace_names().await?;
        Ok(self
            .store
            .list_tokens(user_id.as_deref())
            .await?
            .into_iter()
            .filter(|(t, _)| is_personal(t))
            .map(|(t, user)| TokenView {
                limited_to: crate::authz::TokenLimit::parse(&t.scope, false).map(|l| {
                    let ws = names
                        .get(&l.workspace_id)
                        .cloned()
                        .unwrap_or(l.workspace_id);
                    format!("workspace {ws} as {}", l.role.as_str())
                }),
                id: t.id,
                user,
                description: t.description,
                created_at: t.created_at,
                last_used_at: (t.last_used_at != 0).then_some(t.last_used_at),
                expires_at: (t.expires_at != 0).then_some(t.expires_at),
            })
            .collect())
    }

    /// Revokes a token: the caller's own, or anyone's for an administrator. It stops working
    /// here at once and on every other server within [`TOKEN_CACHE_TTL`], with the studio
    /// sessions signed in with it.
    pub async fn revoke_token(&self, p: &Principal, id: &str) -> Result<()> {
        let missing = || Error::not_found(format!("token {id:?}"));
        // Someone else's token is not there for them (unless they administer).
        let theirs = self
            .store
            .find_token_by_id(id)
            .await?
            .is_some_and(|(t, _)| is_personal(&t) && (p.is_admin || t.user_id == p.user_id));
        if !theirs || p.job.is_some() {
            return Err(missing());
        }
        self.store.delete_token(id).await?.ok_or_else(missing)?;
        self.forget(|c| c.token_id == id);
        Ok(())
    }

    /// A headless deployment's administrator token, given by environment (`TARN_ADMIN_TOKEN`):
    /// stored hashed as the `admin` user's, replacing the one an earlier start was given.
    pub async fn set_bootstrap_token(&self, token: &str) -> Result<()> {
        if !token.starts_with("tarn_") || token.len() < 5 + 32 {
            return Err(Error::invalid(
                "TARN_ADMIN_TOKEN",
                "must start with `tarn_` and have at least 32 characters after it \
                 (make one with `tarn token generate`)",
            ));
        }
        let admin = self
            .store
            .get_user("admin")
            .await?
            .ok_or_else(|| Error::not_found("user \"admin\""))?;
        const ID: &str = "bootstrap-admin-token";
        self.store.delete_token(ID).await?;
        self.forget(|c| c.token_id == ID);
        self.store
            .create_token(&TokenRow {
                id: ID.into(),
                user_id: admin.id,
                hash: hash_token(token),
                description: "bootstrap administrator (TARN_ADMIN_TOKEN)".into(),
                created_at: now_ms(),
                scope: String::new(),
                expires_at: 0,
                last_used_at: 0,
            })
            .await?;
        Ok(())
    }

    /// First start: an administrator with a token. Returns the token, or `None` if an
    /// administrator named `admin` exists already (then `fresh_token` mints a new one).
    pub async fn ensure_admin(&self, fresh_token: bool) -> Result<Option<NewToken>> {
        match self.store.get_user("admin").await? {
            None => self
                .create_user_unchecked("admin", true, KIND_USER)
                .await
                .map(Some),
            Some(user) if fresh_token => self
                .insert_token(&user, "local administrator")
                .await
                .map(Some),
            Some(_) => Ok(None),
        }
    }

    pub async fn assign_role(
        &self,
        p: &Principal,
        workspace: &str,
        to: Assignee<'_>,
        role: &str,
    ) -> Result<RoleView> {
        let ws = self
            .authorized_workspace(p, workspace, Target::RoleAssignments, Action::Write)
            .await?;
        let role = self.known_role(role).await?;
        let now = now_ms();
        match to {
            Assignee::User(user) => {
                let user = self
                    .store
                    .get_user(user)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {user:?}")))?;
                self.store
                    .assign_role(&RoleRow {
                        workspace_id: ws.id,
                        user_id: user.id,
                        user_name: user.name.clone(),
                        role: role.name.clone(),
                        created_at: now,
                    })
                    .await?;
                Ok(RoleView {
                    user: Some(user.name),
                    group: None,
                    role: role.name,
                    created_at: now,
                })
            }
            Assignee::Group(group) => {
                if group.trim().is_empty() || group.len() > 256 {
                    return Err(Error::invalid("group", "a group name is 1-256 characters"));
                }
                self.store
                    .assign_group_role(&ws.id, group, &role.name, now)
                    .await?;
                Ok(RoleView {
                    user: None,
                    group: Some(group.to_string()),
                    role: role.name,
                    created_at: now,
                })
            }
        }
    }

    pub async fn remove_role(
        &self,
        p: &Principal,
        workspace: &str,
        from: Assignee<'_>,
    ) -> Result<()> {
        let ws = self
            .authorized_workspace(p, workspace, Target::RoleAssignments, Action::Delete)
            .await?;
        let removed = match from {
            Assignee::User(user) => {
                let found = self
                    .store
                    .get_user(user)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("user {user:?}")))?;
                self.store.remove_role(&ws.id, &found.id).await?
            }
            Assignee::Group(group) => self.store.remove_group_role(&ws.id, group).await?,
        };
        if !removed {
            let who = match from {
                Assignee::User(u) => format!("{u:?}"),
                Assignee::Group(g) => format!("group {g:?}"),
            };
            return Err(Error::not_found(format!(
                "role assignment of {who} in workspace {workspace:?}"
            )));
        }
        Ok(())
    }

    /// The workspace's role assignments: users' then groups'.
    pub async fn list_roles(&self, p: &Principal, workspace: &str) -> Result<Vec<RoleView>> {
        let ws = self
            .authorized_workspace(p, workspace, Target::RoleAssignments, Action::Read)
            .await?;
        let mut out: Vec<RoleView> = self
            .store
            .list_roles(&ws.id)
            .await?
            .into_iter()
            .map(|r| RoleView {
                user: Some(r.user_name),
                group: None,
                role: r.role,
                created_at: r.created_at,
            })
            .collect();
        out.extend(self.store.list_group_roles(&ws.id).await?.into_iter().map(
            |(group, role, created_at)| RoleView {
                user: None,
                group: Some(group),
                role,
                created_at,
            },
        ));
        Ok(out)
    }
}

/// A built-in role by name, or an error listing them.
fn parse_role(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        Error::invalid(
            "role",
            format!("unknown role {role:?}: use one of {}", known.join(", ")),
        )
    })
}

/// A token a person or service principal holds (not one Tarn made for a job, an instance or
/// a deployment).
fn is_personal(t: &TokenRow) -> bool {
    !t.scope.starts_with("job:")
}

fn user_view(u: UserRow) -> UserView {
    UserView {
        name: u.name,
        is_admin: u.is_admin,
        created_at: u.created_at,
        disabled: u.disabled,
        kind: u.kind,
        groups: u.groups,
        sso: !u.subject.is_empty(),
    }
}

/// Whether a token may be used now: not expired, and its user not disabled — except a job's
/// runner token, so that a disabled user's jobs may finish (unless an administrator cancels
/// them), and a deployment's replicas', which act for the endpoint. A disabled user's own
/// tokens, studio sessions and compute instances' tokens stop.
fn usable(token: &TokenRow, user: &UserRow, now: i64) -> bool {
    if token.expires_at != 0 && now >= token.expires_at {
        return false;
    }
    let keeps_working =
        crate::authz::JobScope::parse(&token.scope).is_some_and(|j| !j.job.starts_with("compute/"));
    !user.disabled || keeps_working
}
