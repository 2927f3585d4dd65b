//! The studio: Tarn's web UI, server-rendered HTML (maud, escaped by construction) embedded in
//! the binary, with no front-end server and a few lines of script only where a page updates
//! itself (a running job's log). A browser logs in with a Tarn token and gets a session cookie
//! (HttpOnly, SameSite=Strict); every form that changes something carries the session's CSRF
//! token as well. Pages call the same services as the API, as the logged-in user, so what a
//! user may see and do is decided in one place.
//!
//! `mod.rs` holds the routes, the session, the layout and small helpers; `jobs.rs` the jobs and
//! experiments pages (charts from server-side sampled metric history); `pages.rs` computes,
//! schedules, endpoints, models, data, environments and datastores.

mod chart;
mod datasets;
mod jobs;
mod pages;
mod traces;

use crate::AppState;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tarn_core::Principal;

const STYLE: &str = include_str!("style.css");
const COOKIE: &str = "tarn_session";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/login/oidc", get(sso_begin))
        .route("/login/oidc/callback", get(sso_callback))
        .route("/logout", post(logout))
        .route("/studio.css", get(style))
        .route("/ws/{workspace}", get(workspace_home))
        .merge(datasets::routes())
        .merge(jobs::routes())
        .merge(pages::routes())
        .merge(traces::routes())
}

/// The logged-in user of a studio page (from the session cookie); pages without one send the
/// browser to `/login`.
pub struct Viewer {
    pub principal: Principal,
    pub csrf: String,
    /// The sign-in provider's name, or `None` when signed in with a token.
    pub via: Option<String>,
}

pub fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// The value of cookie `name` the request carries.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, t: &AppState) -> Result<Viewer, Response> {
        let to_login = || {
            let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            Redirect::to(&format!("/login?next={}", urlencode(next))).into_response()
        };
        let Some(id) = session_id(&parts.headers) else {
            return Err(to_login());
        };
        match t.users.session(&id).await {
            Ok(s) => Ok(Viewer {
                principal: s.principal,
                csrf: s.csrf,
                via: s.via,
            }),
            Err(_) => Err(to_login()),
        }
    }
}

impl Viewer {
    /// The refusal of a form whose CSRF token is not this session's, if it is not.
    pub fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        (sent != self.csrf).then(|| {
            (
                StatusCode::FORBIDDEN,
                "the form is stale or not from this site (CSRF check); reload the page",
            )
                .into_response()
        })
    }
}

/// Percent-encodes a path segment or query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A service error as a page.
pub fn error_page(e: tarn_core::Error) -> Response {
    let api = crate::ApiError::from(e);
    let status = api.code.status();
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Tarn: error" } link rel="stylesheet" href="/studio.css"; }
            body { main { h1 { "Something went wrong" } p.error role="alert" { (api.message) } p { a href="/" { "Back to the studio" } } } }
        }
    };
    (status, Html(body.into_string())).into_response()
}

/// The page frame: header with the workspace switcher, navigation, content.
pub async fn page(
    t: &AppState,
    v: &Viewer,
    ws: Option<&str>,
    active: &str,
    title: &str,
    content: Markup,
) -> Response {
    let workspaces: Vec<String> = t
        .workspaces
        .list_workspaces(&v.principal)
        .await
        .map(|l| l.into_iter().map(|w| w.row.name).collect())
        .unwrap_or_default();
    let sections = [
        ("jobs", "Jobs"),
        ("experiments", "Experiments"),
        ("computes", "Computes"),
        ("schedules", "Schedules"),
        ("endpoints", "Endpoints"),
        ("models", "Models"),
        ("data", "Data"),
        ("environments", "Environments"),
        ("datastores", "Datastores"),
        ("audit", "Audit log"),
    ];
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tarn" }
                link rel="stylesheet" href="/studio.css";
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a href="/" { "Tarn studio" }
                    @if let Some(ws) = ws { span aria-label="Current workspace" { (ws) } }
                    form method="get" action="/" {
                        label for="ws-switch" { "Workspace" }
                        select id="ws-switch" name="ws" {
                            @for w in &workspaces {
                                option value=(w) selected[Some(w.as_str()) == ws] { (w) }
                            }
                        }
                        button.secondary type="submit" { "Go" }
                    }
                    form method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        span title=(match &v.via {
                            Some(p) => format!("signed in with {p}"),
                            None => "signed in with a token".to_string(),
                        }) {
                            (v.principal.name)
                            @if let Some(p) = &v.via { " · via " (p) } @else { " · token" }
                        }
                        button.secondary type="submit" { "Log out" }
                    }
                }
                div.layout {
                    @if let Some(ws) = ws {
                        nav.side aria-label="Workspace sections" {
                            ul {
                                @for (slug, label) in sections {
                                    li { a href=(format!("/ws/{}/{slug}", urlencode(ws))) aria-current=[(slug == active).then_some("page")] { (label) } }
                                }
                            }
                        }
                    }
                    main id="content" {
                        @if !t.config().isolation.is_isolated() {
                            p.error role="alert" { (t.config().isolation.summary()) }
                        }
                        h1 { (title) } (content)
                    }
                }
            }
        }
    };
    Html(body.into_string()).into_response()
}

pub fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge s-{status}")) { (status) } }
}

/// `2026-11-27 02:30:00` (UTC).
pub fn when(ms: i64) -> String {
    let t = crate::views::time(ms);
    t.get(..19).unwrap_or(&t).replace('T', " ")
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLE,
    )
        .into_response()
}

#[derive(Deserialize)]
struct HomeQuery {
    ws: Option<String>,
}

/// `/`: the chosen (or first) workspace, or the list when there is none.
async fn home(State(t): State<AppState>, v: Viewer, Query(q): Query<HomeQuery>) -> Response {
    if let Some(ws) = q.ws {
        return Redirect::to(&format!("/ws/{}/jobs", urlencode(&ws))).into_response();
    }
    let workspaces = match t.workspaces.list_workspaces(&v.principal).await {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    if let [only] = workspaces.as_slice() {
        return Redirect::to(&format!("/ws/{}/jobs", urlencode(&only.row.name))).into_response();
    }
    let content = html! {
        @if workspaces.is_empty() {
            p { "You have no role in any workspace yet. An Owner adds you with " code { "tarn role assign" } "." }
        } @else {
            table {
                caption { "Workspaces you can see" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "MLflow tracking URI" } } }
                tbody {
                    @for w in &workspaces {
                        tr {
                            td { a href=(format!("/ws/{}/jobs", urlencode(&w.row.name))) { (w.row.name) } }
                            td { code { (w.mlflow_tracking_uri) } }
                        }
                    }
                }
            }
        }
    };
    page(&t, &v, None, "", "Workspaces", content).await
}

async fn workspace_home(axum::extract::Path(ws): axum::extract::Path<String>) -> Redirect {
    Redirect::to(&format!("/ws/{}/jobs", urlencode(&ws)))
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

fn login_form(next: &str, error: Option<&str>, sso: Option<&str>) -> Html<String> {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Log in · Tarn" } link rel="stylesheet" href="/studio.css"; }
            body {
                main.login {
                    h1 { "Tarn studio" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    @if let Some(provider) = sso {
                        p { a.button href=(format!("/login/oidc?next={}", urlencode(next))) { "Sign in with " (provider) } }
                        p.muted { "or with a Tarn token:" }
                    }
                    form method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "Token" }
                        input id="token" name="token" type="password" autocomplete="current-password" required;
                        p.muted { "A Tarn token: " code { "tarn up" } " writes the administrator's to "
                            code { "credentials.json" } "; " code { "tarn user create" } " prints one for a new user." }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    };
    Html(body.into_string())
}

/// The provider's name for the login page's button, when single sign-on is on.
fn sso_name(t: &AppState) -> Option<String> {
    t.users.sso().map(|o| o.settings.display_name.clone())
}

async fn login_page(State(t): State<AppState>, Query(q): Query<LoginQuery>) -> Html<String> {
    login_form(&safe_next(q.next.as_deref()), None, sso_name(&t).as_deref())
}

/// The cookie that binds a sign-in to the browser that began it: `Lax`, so the browser
/// sends it when the provider sends it back (a cross-site navigation).
const SSO_COOKIE: &str = "tarn_sso";

fn redirect_uri(t: &AppState) -> String {
    format!(
        "{}/login/oidc/callback",
        t.config().public_url.trim_end_matches('/')
    )
}

/// Sends the browser to the provider.
async fn sso_begin(State(t): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    match t.users.begin_sso(&redirect_uri(&t), &next).await {
        Ok((url, cookie)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, url),
                (
                    header::SET_COOKIE,
                    format!("{SSO_COOKIE}={cookie}; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=600"),
                ),
            ],
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            login_form(&next, Some(&e.to_string()), sso_name(&t).as_deref()),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here: the sign-in is checked and a session opened.
/// The page answers 200 and moves on itself, so that the next request is same-site and the
/// `SameSite=Strict` session cookie goes with it.
async fn sso_callback(
    State(t): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let cookie = cookie(&headers, SSO_COOKIE);
    let clear = format!("{SSO_COOKIE}=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    let failed = |message: String| {
        (
            StatusCode::FORBIDDEN,
            [(header::SET_COOKIE, clear.clone())],
            login_form("/", Some(&message), sso_name(&t).as_deref()),
        )
            .into_response()
    };
    if let Some(error) = q.error {
        return failed(format!(
            "The sign-in provider said no: {error} {}",
            q.error_description.unwrap_or_default()
        ));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return failed("The sign-in provider sent no code.".into());
    };
    match t
        .users
        .finish_sso(cookie.as_deref(), &state, &code, &redirect_uri(&t))
        .await
    {
        Ok(done) => {
            let page = html! {
                (DOCTYPE)
                html lang="en" {
                    head {
                        meta charset="utf-8";
                        meta http-equiv="refresh" content=(format!("0;url={}", done.next));
                        title { "Signed in · Tarn" }
                        link rel="stylesheet" href="/studio.css";
                    }
                    body { main.login {
                        p { "Signed in as " strong { (done.user) } ". " a href=(done.next) { "Continue" } }
                    } }
                }
            };
            let mut response = Html(page.into_string()).into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200",
                    done.session
                )
                .parse()
                .expect("a cookie header"),
            );
            headers.append(header::SET_COOKIE, clear.parse().expect("a cookie header"));
            response
        }
        Err(e) => failed(e.to_string()),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Only paths on this site may follow a login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

async fn login(State(t): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    match t.users.login(f.token.trim()).await {
        Ok(id) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, next),
                (
                    header::SET_COOKIE,
                    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"),
                ),
            ],
        )
            .into_response(),
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            login_form(
                &next,
                Some("That token is not valid."),
                sso_name(&t).as_deref(),
            ),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(t): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = v.csrf_refusal(&f.csrf) {
        return r;
    }
    if let Some(id) = session_id(&headers)
        && let Err(e) = t.users.logout(&id).await
    {
        tracing::warn!("cannot end a studio session: {e}");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}
