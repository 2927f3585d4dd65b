//! Identity routes: users and service principals (create, list, show with their role
//! assignments everywhere, disable, enable, delete), tokens (create — expiring, or narrowed
//! to one workspace and role —, list without their secrets, revoke) and role definitions
//! (the built-in roles and custom ones).

use crate::error::DiagnosticView;
use crate::views::{List, time};
use crate::{ApiResult, AppState, Body, Caller};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tarn_core::{KIND_SERVICE_PRINCIPAL, KIND_USER, NewToken, TokenRequest, TokenView, UserView};
use utoipa::{IntoParams, ToSchema};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}", get(show_user).delete(delete_user))
        .route("/api/v1/users/{name}/disable", post(disable_user))
        .route("/api/v1/users/{name}/enable", post(enable_user))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/login", get(login_options))
        .route("/api/v1/login/device", post(device_begin))
        .route("/api/v1/login/device/token", post(device_poll))
        .route(
            "/api/v1/role-definitions",
            get(list_role_definitions).post(create_role_definition),
        )
        .route(
            "/api/v1/role-definitions/{name}",
            get(show_role_definition).delete(delete_role_definition),
        )
}

/// A role: the actions it allows (`*` matches any text) less its `not_actions`, in Azure's
/// action names.
#[derive(Serialize, ToSchema)]
pub struct RoleDefinition {
    pub name: String,
    pub description: String,
    pub custom: bool,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<DiagnosticView>,
}

impl From<tarn_core::authz::RoleDefinition> for RoleDefinition {
    fn from(r: tarn_core::authz::RoleDefinition) -> RoleDefinition {
        RoleDefinition {
            name: r.name,
            description: r.description,
            custom: r.custom,
            actions: r.actions,
            not_actions: r.not_actions,
            warnings: vec![],
        }
    }
}

#[utoipa::path(get, path = "/api/v1/role-definitions", responses((status = 200, body = List<RoleDefinition>)), security(("bearer" = [])))]
pub(crate) async fn list_role_definitions(
    State(t): State<AppState>,
    Caller(p): Caller,
) -> ApiResult<Json<List<RoleDefinition>>> {
    let value = t
        .users
        .list_role_definitions(&p)
        .await?
        .into_iter()
        .map(RoleDefinition::from)
        .collect();
    Ok(Json(List { value }))
}

/// Adds a custom role (administrators): Azure's role-definition form, `Name`, `Description`,
/// `Actions`, `NotActions`.
#[utoipa::path(post, path = "/api/v1/role-definitions", request_body = Object, responses((status = 201, body = RoleDefinition)), security(("bearer" = [])))]
pub(crate) async fn create_role_definition(
    State(t): State<AppState>,
    Caller(p): Caller,
    Body(body): Body<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<RoleDefinition>)> {
    let (role, warnings) = t.users.create_role(&p, &body).await?;
    let mut view = RoleDefinition::from(role);
    view.warnings = warnings.iter().map(DiagnosticView::from).collect();
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/role-definitions/{name}", params(("name" = String, Path)), responses((status = 200, body = RoleDefinition)), security(("bearer" = [])))]
pub(crate) async fn show_role_definition(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<RoleDefinition>> {
    Ok(Json(t.users.show_role(&p, &name).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/role-definitions/{name}", params(("name" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub(crate) async fn delete_role_definition(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    t.users.delete_role(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A person (`kind: user`) or a service principal (`kind: service_principal`).
#[derive(Serialize, ToSchema)]
pub struct User {
    pub name: String,
    pub kind: String,
    pub is_admin: bool,
    pub disabled: bool,
    /// Signs in through the OpenID provider.
    pub sso: bool,
    /// The groups their last sign-in claimed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub created_at: String,
}

impl From<UserView> for User {
    fn from(u: UserView) -> User {
        User {
            name: u.name,
            kind: u.kind,
            is_admin: u.is_admin,
            disabled: u.disabled,
            sso: u.sso,
            groups: u.groups,
            created_at: time(u.created_at),
        }
    }
}

/// A user with their role assignments in every workspace.
#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: User,
    pub role_assignments: Vec<UserRole>,
    /// How many tokens they hold (`tarn token list --user`).
    pub tokens: usize,
}

#[derive(Serialize, ToSchema)]
pub struct UserRole {
    pub workspace: String,
    pub role: String,
}

/// A new token. `token` is shown this once and cannot be retrieved again.
#[derive(Serialize, ToSchema)]
pub struct Token {
    /// What `tarn token revoke` takes.
    pub id: String,
    pub user: String,
    pub token: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl From<NewToken> for Token {
    fn from(t: NewToken) -> Token {
        Token {
            id: t.id,
            user: t.user,
            token: t.token,
            description: t.description,
            expires_at: t.expires_at.map(time),
        }
    }
}

/// A token as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub description: String,
    pub created_at: String,
    /// To the minute; absent if never used.
    pub last_used_at: Option<String>,
    /// Absent if it never expires.
    pub expires_at: Option<String>,
    /// "workspace W as R" for a token narrowed to one workspace and role.
    pub limited_to: Option<String>,
}

impl From<TokenView> for TokenInfo {
    fn from(t: TokenView) -> TokenInfo {
        TokenInfo {
            id: t.id,
            user: t.user,
            description: t.description,
            created_at: time(t.created_at),
            last_used_at: t.last_used_at.map(time),
            expires_at: t.expires_at.map(time),
            limited_to: t.limited_to,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    /// `user` (the default) or `service_principal`.
    pub kind: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Another user (administrators only); the caller when omitted.
    pub user: Option<String>,
    pub description: Option<String>,
    /// A lifetime: `30d`, `12h`, `90m`; never expires when omitted.
    pub expires_in: Option<String>,
    /// Narrow the token to this workspace (with `role`).
    pub workspace: Option<String>,
    /// The most the token may do there (with `workspace`): a built-in role's name.
    pub role: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KindQuery {
    /// `user` (the default) or `service_principal`.
    pub kind: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// One user's tokens (administrators; the caller's own otherwise).
    pub user: Option<String>,
    /// Everyone's tokens (administrators).
    #[serde(default)]
    pub all: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableUser {
    /// Cancel the user's jobs that have not ended (else they finish).
    #[serde(default)]
    pub cancel_jobs: bool,
}

/// The result of disabling a user.
#[derive(Serialize, ToSchema)]
pub struct Disabled {
    #[serde(flatten)]
    pub user: User,
    /// Jobs of theirs canceled.
    pub canceled_jobs: usize,
}

fn kind_of(kind: Option<&str>) -> ApiResult<&'static str> {
    match kind.unwrap_or(KIND_USER) {
        KIND_USER => Ok(KIND_USER),
        KIND_SERVICE_PRINCIPAL => Ok(KIND_SERVICE_PRINCIPAL),
        other => Err(tarn_core::Error::invalid(
            "kind",
            format!("unknown kind {other:?}: use {KIND_USER} or {KIND_SERVICE_PRINCIPAL}"),
        )
        .into()),
    }
}

#[utoipa::path(get, path = "/api/v1/users", params(KindQuery), responses((status = 200, body = List<User>)), security(("bearer" = [])))]
pub(crate) async fn list_users(
    State(t): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<KindQuery>,
) -> ApiResult<Json<List<User>>> {
    let kind = kind_of(q.kind.as_deref())?;
    let value = t
        .users
        .list_users(&p, kind)
        .await?
        .into_iter()
        .map(User::from)
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(post, path = "/api/v1/users", request_body = CreateUser, responses((status = 201, body = Token)), security(("bearer" = [])))]
pub(crate) async fn create_user(
    State(t): State<AppState>,
    Caller(p): Caller,
    Body(body): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<Token>)> {
    let kind = kind_of(body.kind.as_deref())?;
    let token = t
        .users
        .create_user(&p, &body.name, body.admin, kind)
        .await?;
    Ok((StatusCode::CREATED, Json(token.into())))
}

#[utoipa::path(get, path = "/api/v1/users/{name}", params(("name" = String, Path)), responses((status = 200, body = UserDetail)), security(("bearer" = [])))]
pub(crate) async fn show_user(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserDetail>> {
    let d = t.users.show_user(&p, &name).await?;
    Ok(Json(UserDetail {
        user: d.user.into(),
        role_assignments: d
            .roles
            .into_iter()
            .map(|(workspace, role)| UserRole { workspace, role })
            .collect(),
        tokens: d.tokens,
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{name}/disable", params(("name" = String, Path)), request_body = DisableUser, responses((status = 200, body = Disabled)), security(("bearer" = [])))]
pub(crate) async fn disable_user(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Body(body): Body<DisableUser>,
) -> ApiResult<Json<Disabled>> {
    // Disabled first: nothing new of theirs starts while their jobs are canceled.
    let user = t.users.set_disabled(&p, &name, true).await?;
    let canceled_jobs = if body.cancel_jobs {
        t.jobs.cancel_jobs_of(&p, &name).await?
    } else {
        0
    };
    Ok(Json(Disabled {
        user: user.into(),
        canceled_jobs,
    }))
}

#[utoipa::path(post, path = "/api/v1/users/{name}/enable", params(("name" = String, Path)), responses((status = 200, body = User)), security(("bearer" = [])))]
pub(crate) async fn enable_user(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<User>> {
    Ok(Json(t.users.set_disabled(&p, &name, false).await?.into()))
}

/// How long deleting a user waits for their canceled jobs to end.
const JOBS_END_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes a user or service principal: disabled at once, their jobs that have not ended
/// canceled and waited for (a job's runner reports its end with a token that goes with its
/// user), then their tokens, sessions and role assignments removed. Jobs that do not end in
/// time leave the user disabled, not deleted, and a 409 to try again.
#[utoipa::path(delete, path = "/api/v1/users/{name}", params(("name" = String, Path)), responses((status = 204), (status = 409, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn delete_user(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    t.users.check_manageable(&p, &name).await?;
    t.users.set_disabled(&p, &name, true).await?;
    t.jobs.cancel_jobs_of(&p, &name).await?;
    let start = std::time::Instant::now();
    loop {
        let left = t.jobs.active_jobs_of(&name).await?;
        if left.is_empty() {
            break;
        }
        if start.elapsed() > JOBS_END_WAIT {
            let names: Vec<&str> = left.iter().map(|j| j.name.as_str()).collect();
            return Err(tarn_core::Error::Conflict(format!(
                "user {name:?} is disabled, but their jobs {} have not ended yet: delete again once they have",
                names.join(", ")
            ))
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    t.users.delete_user(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/tokens", params(TokenQuery), responses((status = 200, body = List<TokenInfo>)), security(("bearer" = [])))]
pub(crate) async fn list_tokens(
    State(t): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<List<TokenInfo>>> {
    let value = t
        .users
        .list_tokens(&p, q.user.as_deref(), q.all)
        .await?
        .into_iter()
        .map(TokenInfo::from)
        .collect();
    Ok(Json(List { value }))
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken, responses((status = 201, body = Token)), security(("bearer" = [])))]
pub(crate) async fn create_token(
    State(t): State<AppState>,
    Caller(p): Caller,
    Body(body): Body<CreateToken>,
) -> ApiResult<(StatusCode, Json<Token>)> {
    let description = body
        .description
        .unwrap_or_else(|| "created with `tarn token create`".into());
    let expires_in_ms = body
        .expires_in
        .as_deref()
        .map(tarn_core::parse_lifetime_ms)
        .transpose()?;
    let token = t
        .users
        .create_token(
            &p,
            &TokenRequest {
                user: body.user.as_deref(),
                description: &description,
                expires_in_ms,
                workspace: body.workspace.as_deref(),
                role: body.role.as_deref(),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(token.into())))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub(crate) async fn revoke_token(
    State(t): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    t.users.revoke_token(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How people sign in to this server.
#[derive(Serialize, ToSchema)]
pub struct LoginOptions {
    /// The OpenID provider's name, when single sign-on is on (`tarn login`).
    pub sso: Option<String>,
}

/// How to sign in here (no token needed).
#[utoipa::path(get, path = "/api/v1/login", responses((status = 200, body = LoginOptions)))]
pub(crate) async fn login_options(State(t): State<AppState>) -> Json<LoginOptions> {
    Json(LoginOptions {
        sso: t.users.sso().map(|o| o.settings.display_name.clone()),
    })
}

/// A device sign-in begun (no token needed): show `user_code` and `verification_uri` to the
/// person, then poll `/api/v1/login/device/token` with `device_code` every `interval` s.
#[utoipa::path(post, path = "/api/v1/login/device", responses((status = 200, body = Object)))]
pub(crate) async fn device_begin(
    State(t): State<AppState>,
) -> ApiResult<Json<tarn_core::oidc::DeviceStart>> {
    Ok(Json(t.users.begin_device_login().await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePollRequest {
    pub device_code: String,
}

/// Where a device sign-in stands: `pending` (or `slow_down`), or `done` with a new token.
#[derive(Serialize, ToSchema)]
pub struct DevicePollReply {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

#[utoipa::path(post, path = "/api/v1/login/device/token", request_body = DevicePollRequest, responses((status = 200, body = DevicePollReply)))]
pub(crate) async fn device_poll(
    State(t): State<AppState>,
    Body(body): Body<DevicePollRequest>,
) -> ApiResult<Json<DevicePollReply>> {
    let (token, slow_down) = t.users.poll_device_login(&body.device_code).await?;
    Ok(Json(match token {
        Some(token) => DevicePollReply {
            status: "done".into(),
            token: Some(token.into()),
        },
        None => DevicePollReply {
            status: if slow_down { "slow_down" } else { "pending" }.into(),
            token: None,
        },
    }))
}
