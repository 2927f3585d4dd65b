//! Browser sessions for the studio: a user logs in with a Tarn token, and the browser gets a
//! random session id in an HttpOnly, SameSite=Strict cookie plus a CSRF token that every
//! form must send back. Sessions live in the store for 12 hours, so any server on it answers
//! the browser and a restart keeps everyone logged in; the store holds only hashes of the
//! session id and of the token. Each use checks the token again, so a revoked token ends its
//! sessions.

use crate::authz::Principal;
use crate::error::{Error, Result};
use crate::users::Users;
use crate::users::hash_token;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tarn_store::SessionRow;

const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// A logged-in browser: who, how they signed in, and the CSRF token its forms carry.
pub struct SessionView {
    pub principal: Principal,
    pub csrf: String,
    /// `None` with a token, else the sign-in provider's name.
    pub via: Option<String>,
}

/// How long a studio session lasts.
pub(crate) const SESSION_LIFETIME_MS: i64 = SESSION_TTL_MS;

pub(crate) fn random() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Users {
    /// Checks the token and opens a session; returns its id.
    pub async fn login(&self, token: &str) -> Result<String> {
        self.authenticate(Some(token)).await?;
        self.open_session(token, "").await
    }

    /// Opens a session acting with `token` (checked), signed in `via` a provider (or `""`).
    pub(crate) async fn open_session(&self, token: &str, via: &str) -> Result<String> {
        let id = random();
        let now = crate::now_ms();
        let row = SessionRow {
            id_hash: hash_token(&id),
            token_hash: hash_token(token),
            csrf: random(),
            expires_at: now + SESSION_TTL_MS,
            via: via.to_string(),
        };
        self.store.create_session(&row, now).await?;
        Ok(id)
    }

    /// The session's user, if the session is live and its token still valid.
    pub async fn session(&self, id: &str) -> Result<SessionView> {
        let row = self
            .store
            .get_session(&hash_token(id), crate::now_ms())
            .await?
            .ok_or(Error::Unauthenticated)?;
        let principal = self.authenticate_hash(row.token_hash).await?;
        Ok(SessionView {
            principal,
            csrf: row.csrf,
            via: Some(row.via).filter(|v| !v.is_empty()),
        })
    }

    pub async fn logout(&self, id: &str) -> Result<()> {
        Ok(self.store.delete_session(&hash_token(id)).await?)
    }
}
