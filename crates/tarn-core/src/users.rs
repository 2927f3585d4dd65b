//! Users, tokens and role assignments. Tokens are 256 random bits shown once; only their
//! SHA-256 is stored (a slow password hash buys nothing for secrets with this much entropy).

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
}

pub struct NewToken {
    pub user: String,
    /// The token itself: shown once, never stored.
    pub token: String,
    pub description: String,
}

pub struct RoleView {
    pub user: String,
    pub role: String,
    pub created_at: i64,
}

/// How long a token's user is remembered without asking the store. Revoking a token (a job's,
/// when the job ends) removes it from the cache too.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Tokens seen recently: SHA-256 of the token → (user, when looked up).
pub(crate) type TokenCache =
    std::sync::Mutex<std::collections::HashMap<String, (Principal, std::time::Instant)>>;

pub(crate) fn hash_token(token: &str) -> String {
    tarn_spec::digest::sha256_hex(token.as_bytes())
}

fn new_token_text() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("tarn_{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn admin_only(p: &Principal, what: &str) -> Result<()> {
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
}

crate::service_on_core!(Users);

impl Users {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Users {
            core,
            tokens: Default::default(),
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
        if let Some((principal, at)) = self.tokens.lock().expect("token cache lock").get(&hash)
            && at.elapsed() < TOKEN_CACHE_TTL
        {
            return Ok(principal.clone());
        }
        let (token_row, user) = self
            .store
            .find_token(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let job = crate::authz::JobScope::parse(&token_row.scope);
        let principal = Principal {
            user_id: user.id,
            name: user.name,
            // A job's token never carries its submitter's administrator rights.
            is_admin: user.is_admin && job.is_none(),
            job,
        };
        let mut cache = self.tokens.lock().expect("token cache lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(hash, (principal.clone(), std::time::Instant::now()));
        Ok(principal)
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
        self.tokens
            .lock()
            .expect("token cache lock")
            .retain(|_, (p, _)| p.job.as_ref() != Some(scope));
        Ok(())
    }

    /// Makes a token for `user`, stores its hash, and returns the token itself.
    async fn store_new_token(
        &self,
        user: &UserRow,
        description: &str,
        scope: &str,
    ) -> Result<String> {
        let token = new_token_text();
        self.store
            .create_token(&TokenRow {
                id: uuid::Uuid::new_v4().to_string(),
                user_id: user.id.clone(),
                hash: hash_token(&token),
                description: description.to_string(),
                created_at: now_ms(),
                scope: scope.to_string(),
            })
            .await?;
        Ok(token)
    }

    async fn insert_token(&self, user: &UserRow, description: &str) -> Result<NewToken> {
        let token = self.store_new_token(user, description, "").await?;
        Ok(NewToken {
            user: user.name.clone(),
            token,
            description: description.to_string(),
        })
    }

    /// Creates a user and a first token for them.
    pub async fn create_user(&self, p: &Principal, name: &str, is_admin: bool) -> Result<NewToken> {
        admin_only(p, "create users")?;
        self.create_user_unchecked(name, is_admin).await
    }

    async fn create_user_unchecked(&self, name: &str, is_admin: bool) -> Result<NewToken> {
        names::check(NameRule::User, name).map_err(|e| Error::invalid("name", e.to_string()))?;
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            is_admin,
            created_at: now_ms(),
        };
        self.store.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict => Error::AlreadyExists {
                what: format!("user {name:?}"),
            },
            e => e.into(),
        })?;
        self.insert_token(&user, "first token").await
    }

    pub async fn list_users(&self, p: &Principal) -> Result<Vec<UserView>> {
        admin_only(p, "list users")?;
        let users = self.store.list_users().await?;
        Ok(users
            .into_iter()
            .map(|u| UserView {
                name: u.name,
                is_admin: u.is_admin,
                created_at: u.created_at,
            })
            .collect())
    }

    /// Creates another token for `user` (default: the caller). Only admins mint for others.
    pub async fn create_token(
        &self,
        p: &Principal,
        user: Option<&str>,
        description: &str,
    ) -> Result<NewToken> {
        let name = user.unwrap_or(&p.name);
        if name != p.name {
            admin_only(p, "create tokens for other users")?;
        }
        let user = self
            .store
            .get_user(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {name:?}")))?;
        self.insert_token(&user, description).await
    }

    /// First start: an administrator with a token. Returns the token, or `None` if an
    /// administrator named `admin` exists already (then `fresh_token` mints a new one).
    pub async fn ensure_admin(&self, fresh_token: bool) -> Result<Option<NewToken>> {
        match self.store.get_user("admin").await? {
            None => self.create_user_unchecked("admin", true).await.map(Some),
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
        user: &str,
        role: &str,
    ) -> Result<RoleView> {
        let ws = self
            .authorized_workspace(p, workspace, Target::RoleAssignments, Action::Write)
            .await?;
        let role = Role::parse(role).ok_or_else(|| {
            let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            Error::invalid(
                "role",
                format!("unknown role {role:?}: use one of {}", known.join(", ")),
            )
        })?;
        let user = self
            .store
            .get_user(user)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user:?}")))?;
        let row = RoleRow {
            workspace_id: ws.id,
            user_id: user.id,
            user_name: user.name.clone(),
            role: role.as_str().to_string(),
            created_at: now_ms(),
        };
        self.store.assign_role(&row).await?;
        Ok(RoleView {
            user: user.name,
            role: row.role,
            created_at: row.created_at,
        })
    }

    pub async fn remove_role(&self, p: &Principal, workspace: &str, user: &str) -> Result<()> {
        let ws = self
            .authorized_workspace(p, workspace, Target::RoleAssignments, Action::Delete)
            .await?;
        let found = self
            .store
            .get_user(user)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user:?}")))?;
        if !self.store.remove_role(&ws.id, &found.id).await? {
            return Err(Error::not_found(format!(
                "role assignment of {user:?} in workspace {workspace:?}"
            )));
        }
        Ok(())
    }

    pub async fn list_roles(&self, p: &Principal, workspace: &str) -> Result<Vec<RoleView>> {
        let ws = self
            .authorized_workspace(p, workspace, Target::RoleAssignments, Action::Read)
            .await?;
        let rows = self.store.list_roles(&ws.id).await?;
        Ok(rows
            .into_iter()
            .map(|r| RoleView {
                user: r.user_name,
                role: r.role,
                created_at: r.created_at,
            })
            .collect())
    }
}
