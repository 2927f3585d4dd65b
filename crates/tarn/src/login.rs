//! `tarn login` and `tarn logout`: single sign-on for the CLI through the server's OpenID
//! provider with the device-authorization flow (the person opens a link, enters a code, signs
//! in there; the server, which holds the client secret, redeems the result and hands the CLI
//! an expiring Tarn token). The token goes to `TARN_HOME/login.json` (mode 0600) with its
//! expiry, and the CLI uses it for that server until it expires.

use crate::client::{Client, Login, login_path, read_credentials, read_login};
use anyhow::{Context, bail};
use serde_json::{Value as Json, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// The server to sign in to: `--server`, else the last sign-in's, else `tarn up`'s.
fn server_of(server: Option<&str>, home: &Path) -> anyhow::Result<String> {
    server
        .map(str::to_string)
        .or_else(|| read_login(home).map(|l| l.server))
        .or_else(|| read_credentials(home).map(|c| c.server))
        .context("which server? pass --server URL (or set TARN_SERVER)")
}

pub async fn login(server: Option<&str>, home: &Path) -> anyhow::Result<()> {
    let c = Client::anonymous(&server_of(server, home)?);
    let options = c.get("/login").await?;
    let Some(provider) = options["sso"].as_str() else {
        bail!(
            "{} has no single sign-on (it was started without --oidc-issuer): use a token \
             (--token or TARN_TOKEN) that an administrator made with `tarn user create`",
            c.server()
        );
    };
    let start = c.post("/login/device", &json!({})).await?;
    let text = |k: &str| start[k].as_str().unwrap_or_default().to_string();
    let (device_code, user_code) = (text("device_code"), text("user_code"));
    let link = start["verification_uri_complete"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text("verification_uri"));
    eprintln!("To sign in with {provider}, open {link}");
    eprintln!("and confirm the code {user_code}. Waiting…");
    let mut interval = Duration::from_secs(start["interval"].as_u64().unwrap_or(5).max(1));
    let deadline =
        Instant::now() + Duration::from_secs(start["expires_in"].as_u64().unwrap_or(600));
    let token = loop {
        if Instant::now() > deadline {
            bail!(
                "the code {user_code} expired before the sign-in finished: run `tarn login` again"
            );
        }
        tokio::time::sleep(interval).await;
        let reply = c
            .post("/login/device/token", &json!({"device_code": device_code}))
            .await?;
        match reply["status"].as_str() {
            Some("done") => break reply["token"].clone(),
            Some("slow_down") => interval += Duration::from_secs(5),
            _ => {}
        }
    };
    let expires_at = token["expires_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let login = Login {
        server: c.server().to_string(),
        token: field(&token, "token")?,
        token_id: field(&token, "id")?,
        user: field(&token, "user")?,
        expires_at,
    };
    tarn_core::vault::write_private(&login_path(home), &serde_json::to_string_pretty(&login)?)
        .with_context(|| format!("cannot write {}", login_path(home).display()))?;
    eprintln!(
        "Signed in to {} as {} until {} (saved in {}).",
        login.server,
        login.user,
        token["expires_at"].as_str().unwrap_or("?"),
        login_path(home).display()
    );
    Ok(())
}

fn field(v: &Json, k: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_string)
        .with_context(|| format!("the server's sign-in reply has no {k}"))
}

/// Revokes the sign-in's token on its server and forgets it here.
pub async fn logout(home: &Path) -> anyhow::Result<()> {
    let Some(login) = read_login(home) else {
        bail!("not signed in (no {})", login_path(home).display());
    };
    let c = Client::new(Some(&login.server), Some(&login.token), home)?;
    // An expired or already revoked token needs no revoking.
    if let Err(e) = c.delete(&format!("/tokens/{}", login.token_id)).await {
        eprintln!("note: the server did not revoke the token ({e})");
    }
    std::fs::remove_file(login_path(home))?;
    eprintln!("Signed out of {} ({}).", login.server, login.user);
    Ok(())
}
