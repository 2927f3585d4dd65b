//! The CLI's way to the server: where it is and which token to use (flags, then environment,
//! then the local `TARN_HOME` credentials that `tarn up` writes), and one request helper that
//! turns API errors into readable messages. The CLI never opens the database.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// What `tarn up` writes for the local CLI (mode 0600).
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub token: String,
}

pub fn credentials_path(home: &Path) -> PathBuf {
    home.join("credentials.json")
}

pub fn read_credentials(home: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path(home)).ok()?;
    serde_json::from_str(&text).ok()
}

/// What `tarn login` writes (mode 0600): a token from single sign-on, which expires.
#[derive(Serialize, Deserialize)]
pub struct Login {
    pub server: String,
    pub token: String,
    /// The token's id (so `tarn logout` can revoke it).
    pub token_id: String,
    pub user: String,
    /// ms since the epoch.
    pub expires_at: i64,
}

pub fn login_path(home: &Path) -> PathBuf {
    home.join("login.json")
}

pub fn read_login(home: &Path) -> Option<Login> {
    let text = std::fs::read_to_string(login_path(home)).ok()?;
    serde_json::from_str(&text).ok()
}

/// CLI defaults set with `tarn configure --defaults`.
#[derive(Serialize, Deserialize, Default)]
pub struct CliConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

pub fn config_path(home: &Path) -> PathBuf {
    home.join("cli-config.json")
}

pub fn read_config(home: &Path) -> CliConfig {
    std::fs::read_to_string(config_path(home))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

/// An error the server returned, kept whole so callers can show validation details.
#[derive(Debug)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub details: Vec<Json>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl Client {
    /// The server and token: flags (or TARN_SERVER/TARN_TOKEN), then `tarn login`'s sign-in
    /// for that server (refused once expired), then the local administrator's from `tarn up`.
    pub fn new(server: Option<&str>, token: Option<&str>, home: &Path) -> anyhow::Result<Client> {
        let saved = read_credentials(home);
        let login = read_login(home).filter(|l| server.is_none_or(|s| same_server(s, &l.server)));
        let server = server
            .map(str::to_string)
            .or_else(|| login.as_ref().map(|l| l.server.clone()))
            .or_else(|| saved.as_ref().map(|c| c.server.clone()))
            .with_context(|| format!("no server: pass --server or set TARN_SERVER, or start one with `tarn up` (looked for {})", credentials_path(home).display()))?;
        let token = match (token, &login) {
            (Some(token), _) => token.to_string(),
            (None, Some(l)) if l.expires_at <= now_ms() => bail!(
                "your sign-in as {} to {} expired: run `tarn login` again",
                l.user,
                l.server
            ),
            (None, Some(l)) => l.token.clone(),
            (None, None) => saved.as_ref().map(|c| c.token.clone()).with_context(|| {
                "no token: run `tarn login`, or pass --token or set TARN_TOKEN".to_string()
            })?,
        };
        Ok(Client {
            http: reqwest::Client::new(),
            server: server.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// A client for the calls that need no token (`tarn login`'s).
    pub fn anonymous(server: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            server: server.trim_end_matches('/').to_string(),
            token: String::new(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> anyhow::Result<Json> {
        let url = format!("{}/api/v1{path}", self.server);
        let mut req = self.http.request(method, &url);
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the Tarn server at {} (is `tarn up` running?)",
                self.server
            )
        })?;
        Self::read(resp).await
    }

    /// A successful reply's JSON (`null` when empty), or the server's error.
    async fn read(resp: reqwest::Response) -> anyhow::Result<Json> {
        let status = resp.status();
        let text = resp.text().await.context("reading the server's response")?;
        if status.is_success() {
            if text.is_empty() {
                return Ok(Json::Null);
            }
            return serde_json::from_str(&text).context("the server's response is not JSON");
        }
        let parsed: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        let err = &parsed["error"];
        if err.is_null() {
            bail!("the server answered {status}: {text}");
        }
        Err(ApiError {
            code: err["code"].as_str().unwrap_or("Error").to_string(),
            message: err["message"].as_str().unwrap_or_default().to_string(),
            details: err["details"].as_array().cloned().unwrap_or_default(),
        }
        .into())
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Json> {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Json) -> anyhow::Result<Json> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Json) -> anyhow::Result<Json> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> anyhow::Result<Json> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// Sends a streamed body with its length and SHA-256; returns the JSON reply.
    pub async fn send_body(
        &self,
        method: reqwest::Method,
        path: &str,
        body: reqwest::Body,
        len: u64,
        sha256: Option<&str>,
    ) -> anyhow::Result<Json> {
        let url = format!("{}/api/v1{path}", self.server);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(sha) = sha256 {
            req = req.header(tarn_api::SHA256_HEADER, sha);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the Tarn server at {}", self.server))?;
        Self::read(resp).await
    }

    /// A GET whose body the caller streams.
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send_raw(reqwest::Method::GET, path, None).await
    }

    /// A call (with a JSON body, or none) whose reply's body the caller streams.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/api/v1{path}", self.server);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the Tarn server at {}", self.server))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(Self::read(resp)
            .await
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("unexpected reply")))
    }

    /// Size and checksum of a datastore file, or `None` if it does not exist.
    pub async fn head(&self, path: &str) -> anyhow::Result<Option<(u64, Option<String>)>> {
        let url = format!("{}/api/v1{path}", self.server);
        let resp = self
            .http
            .head(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the Tarn server at {}", self.server))?;
        match resp.status().as_u16() {
            200 => {
                let size = resp
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let sha = resp
                    .headers()
                    .get(tarn_api::SHA256_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Some((size, sha)))
            }
            404 => Ok(None),
            status => bail!("the server answered {status} to HEAD {path}"),
        }
    }
}

impl Client {
    /// Sends a bundle of small files (see `tarn_api::bundle`); returns the JSON reply.
    pub async fn send_bundle(
        &self,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> anyhow::Result<Json> {
        let url = format!("{}/api/v1{path}", self.server);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tarn-bundle")
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the Tarn server at {}", self.server))?;
        Self::read(resp).await
    }

    /// Fetches a bundle of small files.
    pub async fn fetch_bundle(&self, path: &str, paths: &[String]) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}/api/v1{path}", self.server);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "paths": paths }))
            .send()
            .await
            .with_context(|| format!("cannot reach the Tarn server at {}", self.server))?;
        if !resp.status().is_success() {
            return Err(Self::read(resp)
                .await
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("unexpected reply")));
        }
        Ok(resp.bytes().await?)
    }
}

fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
