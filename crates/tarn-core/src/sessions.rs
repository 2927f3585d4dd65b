//! Browser sessions for the studio: a user logs in with a Tarn token, and the browser gets a
//! random session id in an HttpOnly, SameSite=Strict cookie plus a CSRF token that every
//! form must send back. Sessions live in the server's memory (a restart logs everyone out)
//! for 12 hours; each use checks the token again, so a revoked token ends its sessions.

use crate::Tarn;
use crate::authz::Principal;
use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

struct Session {
    token: String,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

/// A logged-in browser: who, and the CSRF token its forms carry.
pub struct SessionView {
    pub principal: Principal,
    pub csrf: String,
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Tarn {
    /// Checks the token and opens a session; returns its id.
    pub async fn login(&self, token: &str) -> Result<String> {
        self.authenticate(Some(token)).await?;
        let id = random();
        let mut sessions = self.sessions.0.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            id.clone(),
            Session {
                token: token.to_string(),
                csrf: random(),
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    /// The session's user, if the session is live and its token still valid.
    pub async fn session(&self, id: &str) -> Result<SessionView> {
        let (token, csrf) = {
            let sessions = self.sessions.0.lock().expect("sessions lock");
            let s = sessions
                .get(id)
                .filter(|s| s.expires > Instant::now())
                .ok_or(Error::Unauthenticated)?;
            (s.token.clone(), s.csrf.clone())
        };
        let principal = self.authenticate(Some(&token)).await?;
        Ok(SessionView { principal, csrf })
    }

    pub fn logout(&self, id: &str) {
        self.sessions.0.lock().expect("sessions lock").remove(id);
    }
}
