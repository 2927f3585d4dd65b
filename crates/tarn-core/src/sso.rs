//! Signing people in through the OpenID provider (`oidc.rs` speaks to it): the studio's
//! authorization-code flow, whose `state`, `nonce` and PKCE verifier travel in a cookie
//! sealed with the vault's key (any server of the store opens it; nothing is kept
//! server-side), and `tarn login`'s device flow. A verified identity becomes a Tarn user on
//! first sign-in — named from the configured claim, known from then on by the provider's
//! subject — and its groups are refreshed at every sign-in (roles may be given to groups).
//! Each sign-in mints an expiring Tarn token: the studio session's, or the CLI's.

use crate::error::{Error, Result};
use crate::now_ms;
use crate::oidc::{DevicePoll, DeviceStart, Identity, Oidc, OidcSettings};
use crate::sessions::{SESSION_LIFETIME_MS, random};
use crate::users::{KIND_USER, NewToken, Users};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tarn_spec::names::{self, NameRule};
use tarn_store::{StoreError, UserRow};

/// Where the provider's client secret is kept, sealed with the vault's key.
const SECRET_META: &str = "oidc.client_secret";
/// The name a login cookie is sealed under.
const LOGIN_SEAL: &str = "oidc.login";
/// How long a browser has to come back from the provider.
const LOGIN_WINDOW_MS: i64 = 10 * 60 * 1000;

/// What the studio's login cookie carries between the redirect and the callback.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    expires_at: i64,
}

/// What the studio does once a sign-in went through.
pub struct SignedIn {
    pub session: String,
    pub next: String,
    pub user: String,
}

impl Users {
    /// Turns single sign-on on. A client secret given now is sealed into the store (the next
    /// start needs none); without one, the secret sealed before is used.
    pub async fn enable_sso(&self, mut settings: OidcSettings, secret: Option<&str>) -> Result<()> {
        match secret.filter(|s| !s.is_empty()) {
            Some(secret) => {
                let sealed = self.vault.seal_text(SECRET_META, secret.as_bytes());
                self.store.set_meta(SECRET_META, &sealed).await?;
                settings.client_secret = secret.to_string();
            }
            None => {
                let sealed = self.store.get_meta(SECRET_META).await?.ok_or_else(|| {
                    Error::invalid(
                        "oidc-client-secret",
                        "no client secret: give it once (TARN_OIDC_CLIENT_SECRET or \
                         --oidc-client-secret-file); it is kept in the vault after that",
                    )
                })?;
                let secret = self.vault.open_text(SECRET_META, &sealed)?;
                settings.client_secret = String::from_utf8(secret)
                    .map_err(|_| Error::Vault("the sealed client secret is not text".into()))?;
            }
        }
        self.sso
            .set(Oidc::new(settings))
            .map_err(|_| Error::Conflict("single sign-on is turned on already".into()))
    }

    /// The provider, when single sign-on is on.
    pub fn sso(&self) -> Option<&Oidc> {
        self.sso.get()
    }

    fn sso_or_refuse(&self) -> Result<&Oidc> {
        self.sso().ok_or_else(|| {
            Error::not_found("single sign-on (this server was started without --oidc-issuer)")
        })
    }

    /// Begins a studio sign-in: where to send the browser, and the sealed cookie to set.
    pub async fn begin_sso(&self, redirect_uri: &str, next: &str) -> Result<(String, String)> {
        let oidc = self.sso_or_refuse()?;
        let pending = PendingLogin {
            state: random(),
            nonce: random(),
            verifier: random(),
            next: next.to_string(),
            expires_at: now_ms() + LOGIN_WINDOW_MS,
        };
        let challenge =
            URL_SAFE_NO_PAD.encode(tarn_spec::digest::sha256_bytes(pending.verifier.as_bytes()));
        let url = oidc
            .authorization_url(redirect_uri, &pending.state, &pending.nonce, &challenge)
            .await?;
        let text = serde_json::to_vec(&pending).expect("a pending login serialises");
        Ok((url, self.vault.seal_text(LOGIN_SEAL, &text)))
    }

    /// Finishes a studio sign-in: the callback's `state` must be the one this browser's cookie
    /// holds (no one else's sign-in can land in it), the code is redeemed, the ID token
    /// verified against the cookie's nonce, and a session opened.
    pub async fn finish_sso(
        &self,
        cookie: Option<&str>,
        state: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<SignedIn> {
        let oidc = self.sso_or_refuse()?;
        let refused = |why: &str| Error::Forbidden(format!("sign-in refused: {why}"));
        let pending: PendingLogin = cookie
            .and_then(|c| self.vault.open_text(LOGIN_SEAL, c).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                refused("this browser did not begin a sign-in here (or its cookie was lost)")
            })?;
        if pending.expires_at < now_ms() {
            return Err(refused("the sign-in took too long; begin again"));
        }
        if pending.state != state {
            return Err(refused(
                "the provider's answer is for another sign-in (state)",
            ));
        }
        let identity = oidc
            .redeem_code(code, &pending.verifier, redirect_uri, &pending.nonce)
            .await?;
        let via = oidc.settings.display_name.clone();
        let user = self.sign_in(&identity).await?;
        let (_, token) = self
            .mint_for(
                &user,
                &format!("studio sign-in via {via}"),
                now_ms() + SESSION_LIFETIME_MS,
            )
            .await?;
        let session = self.open_session(&token, &via).await?;
        Ok(SignedIn {
            session,
            next: pending.next,
            user: user.name,
        })
    }

    /// Begins `tarn login`'s device sign-in.
    pub async fn begin_device_login(&self) -> Result<DeviceStart> {
        self.sso_or_refuse()?.start_device().await
    }

    /// One poll of a device sign-in: `None` while the person has not finished (`Some(true)`
    /// in the second place: poll less often), else the new CLI token.
    pub async fn poll_device_login(&self, device_code: &str) -> Result<(Option<NewToken>, bool)> {
        let oidc = self.sso_or_refuse()?;
        match oidc.poll_device(device_code).await? {
            DevicePoll::Pending { slow_down } => Ok((None, slow_down)),
            DevicePoll::Done(identity) => {
                let user = self.sign_in(&identity).await?;
                let description = format!("tarn login via {}", oidc.settings.display_name);
                let expires_at = now_ms() + oidc.settings.cli_token_lifetime_ms;
                let (id, token) = self.mint_for(&user, &description, expires_at).await?;
                Ok((
                    Some(NewToken {
                        id,
                        user: user.name,
                        token,
                        description,
                        expires_at: Some(expires_at),
                    }),
                    false,
                ))
            }
        }
    }

    /// The user a verified identity is: found by its subject (their groups refreshed), or
    /// made on first sign-in. A disabled user is refused; a name that a user not signed in
    /// this way holds is refused rather than taken over.
    async fn sign_in(&self, identity: &Identity) -> Result<UserRow> {
        if let Some(user) = self.store.get_user_by_subject(&identity.subject).await? {
            if user.disabled {
                return Err(Error::Forbidden(format!(
                    "sign-in refused: user {:?} is disabled",
                    user.name
                )));
            }
            self.store
                .set_user_groups(&user.id, &identity.groups)
                .await?;
            return Ok(UserRow {
                groups: identity.groups.clone(),
                ..user
            });
        }
        names::check(NameRule::User, &identity.name).map_err(|e| {
            Error::Forbidden(format!(
                "sign-in refused: the provider's name for this user cannot be a Tarn user name ({e})"
            ))
        })?;
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: identity.name.clone(),
            is_admin: false,
            created_at: now_ms(),
            disabled: false,
            kind: KIND_USER.into(),
            subject: identity.subject.clone(),
            groups: identity.groups.clone(),
        };
        self.store.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict => Error::Forbidden(format!(
                "sign-in refused: a user named {:?} exists who does not sign in through the \
                 provider; an administrator may delete them (`tarn user delete`) to let this \
                 sign-in take the name",
                identity.name
            )),
            e => e.into(),
        })?;
        Ok(user)
    }
}
