//! Single sign-on through an OpenID Connect provider (`tarn up --oidc-issuer URL
//! --oidc-client-id ID`, the client secret in the vault). Tarn is a confidential client: the
//! studio signs people in with the authorization-code flow (PKCE, `state` and `nonce`
//! checked), `tarn login` with the device-authorization flow through the server (the secret
//! never leaves it). Either way the provider's ID token is verified here — its signature
//! against the provider's published keys (fetched again when a token names a key not seen
//! yet, so the provider may rotate them), its issuer, audience, expiry and nonce — before its
//! claims name a user (see `Users::sign_in`).

use crate::error::{Error, Result};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// How a server signs people in through a provider.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// The provider's issuer URL (its discovery document is `/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// What the studio's button says: "Sign in with <display_name>".
    pub display_name: String,
    /// The claim a new user's Tarn name is taken from (`email`, `preferred_username`, `sub`).
    pub user_claim: String,
    /// The claim that lists a user's groups.
    pub groups_claim: String,
    /// How long a token from `tarn login` lasts.
    pub cli_token_lifetime_ms: i64,
}

/// Who the provider says signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `<issuer> <sub>`: what the user is known by from then on.
    pub subject: String,
    /// Their Tarn name on first sign-in (from `user_claim`).
    pub name: String,
    pub groups: Vec<String>,
}

/// The provider's endpoints, from its discovery document.
#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
}

/// A device sign-in begun: what the person is shown, and what the CLI polls with.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default = "five")]
    pub interval: u64,
}

fn five() -> u64 {
    5
}

/// Where a device sign-in stands.
pub enum DevicePoll {
    /// The person has not finished yet (`slow_down`: ask less often).
    Pending {
        slow_down: bool,
    },
    Done(Identity),
}

/// How long the discovery document is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The least time between two fetches of the provider's keys (a token naming an unknown key
/// makes one; a flood of forged ones must not make a flood).
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(1);
/// Clock skew allowed between the provider and this server.
const LEEWAY_S: u64 = 60;

pub struct Oidc {
    pub settings: OidcSettings,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<(Discovery, Instant)>>,
    keys: tokio::sync::Mutex<Option<(JwkSet, Instant)>>,
}

fn provider_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Conflict(format!("the sign-in provider {what}: {e}"))
}

fn refused(why: impl std::fmt::Display) -> Error {
    Error::Forbidden(format!("sign-in refused: {why}"))
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Oidc {
        Oidc {
            settings,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("an HTTP client"),
            discovery: Default::default(),
            keys: Default::default(),
        }
    }

    async fn discovery(&self) -> Result<Discovery> {
        let mut cached = self.discovery.lock().await;
        if let Some((d, at)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let d: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| provider_error(&format!("at {url} does not answer"), e))?
            .json()
            .await
            .map_err(|e| provider_error("sent a discovery document Tarn cannot read", e))?;
        if d.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
            return Err(provider_error(
                "names another issuer",
                format!("{} instead of {}", d.issuer, self.settings.issuer),
            ));
        }
        *cached = Some((d.clone(), Instant::now()));
        Ok(d)
    }

    /// Where the studio sends a browser to sign in.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String> {
        let d = self.discovery().await?;
        let mut url = reqwest::Url::parse(&d.authorization_endpoint)
            .map_err(|e| provider_error("has a bad authorization endpoint", e))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.scopes())
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    fn scopes(&self) -> String {
        format!("openid email profile {}", self.settings.groups_claim)
    }

    /// Trades the code the provider sent the browser back with for a verified identity.
    pub async fn redeem_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<Identity> {
        let d = self.discovery().await?;
        let reply = self
            .token_request(
                &d.token_endpoint,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier),
                ],
            )
            .await?
            .map_err(|(error, description)| refused(format!("{error}: {description}")))?;
        self.verify(&reply, Some(nonce)).await
    }

    /// Begins a device sign-in (`tarn login`).
    pub async fn start_device(&self) -> Result<DeviceStart> {
        let d = self.discovery().await?;
        let endpoint = d
            .device_authorization_endpoint
            .ok_or_else(|| provider_error("does not offer", "the device-authorization flow"))?;
        let resp = self
            .http
            .post(&endpoint)
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .form(&[
                ("client_id", self.settings.client_id.as_str()),
                ("scope", &self.scopes()),
            ])
            .send()
            .await
            .map_err(|e| provider_error("does not answer", e))?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(provider_error("refused to begin a device sign-in", text));
        }
        resp.json()
            .await
            .map_err(|e| provider_error("sent a device reply Tarn cannot read", e))
    }

    /// Asks the provider once whether the device sign-in has finished.
    pub async fn poll_device(&self, device_code: &str) -> Result<DevicePoll> {
        let d = self.discovery().await?;
        match self
            .token_request(
                &d.token_endpoint,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", device_code),
                ],
            )
            .await?
        {
            Ok(reply) => Ok(DevicePoll::Done(self.verify(&reply, None).await?)),
            Err((e, _)) if e == "authorization_pending" => {
                Ok(DevicePoll::Pending { slow_down: false })
            }
            Err((e, _)) if e == "slow_down" => Ok(DevicePoll::Pending { slow_down: true }),
            Err((e, description)) => Err(refused(format!("{e}: {description}"))),
        }
    }

    /// POSTs to the token endpoint as this client: the reply, or the provider's OAuth error.
    async fn token_request(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> Result<std::result::Result<Json, (String, String)>> {
        let resp = self
            .http
            .post(endpoint)
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .form(form)
            .send()
            .await
            .map_err(|e| provider_error("does not answer", e))?;
        let ok = resp.status().is_success();
        let body: Json = resp
            .json()
            .await
            .map_err(|e| provider_error("sent a token reply Tarn cannot read", e))?;
        if ok {
            return Ok(Ok(body));
        }
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        Ok(Err((text("error"), text("error_description"))))
    }

    /// Verifies the ID token in a token reply: signed by one of the provider's keys with an
    /// asymmetric algorithm, issued by the provider, for this client, not expired, and
    /// carrying `nonce` when one was sent.
    async fn verify(&self, reply: &Json, nonce: Option<&str>) -> Result<Identity> {
        let token = reply["id_token"]
            .as_str()
            .ok_or_else(|| refused("the provider sent no ID token"))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| refused(format!("ID token: {e}")))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !allowed.contains(&header.alg) {
            return Err(refused(format!(
                "the ID token is signed with {:?}, not a public-key algorithm",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_issuer(&[
            &self.settings.issuer,
            self.settings.issuer.trim_end_matches('/'),
        ]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_S;
        let claims = jsonwebtoken::decode::<Json>(token, &key, &validation)
            .map_err(|e| refused(format!("the ID token does not verify ({e})")))?
            .claims;
        if let Some(nonce) = nonce
            && claims["nonce"].as_str() != Some(nonce)
        {
            return Err(refused("the ID token's nonce is not this sign-in's"));
        }
        let sub = claims["sub"].as_str().unwrap_or_default();
        let claim = |k: &str| claims[k].as_str().filter(|v| !v.is_empty());
        let name = claim(&self.settings.user_claim)
            .or_else(|| claim("email"))
            .or_else(|| claim("preferred_username"))
            .unwrap_or(sub)
            .to_string();
        let groups = match &claims[&self.settings.groups_claim] {
            Json::Array(items) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Json::String(one) => vec![one.clone()],
            _ => vec![],
        };
        Ok(Identity {
            subject: format!("{} {sub}", self.settings.issuer.trim_end_matches('/')),
            name,
            groups,
        })
    }

    /// The provider's key `kid` (its only key when the token names none), fetching its key
    /// set again when the key is not known yet.
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey> {
        let mut cached = self.keys.lock().await;
        for attempt in 0..2 {
            let stale = cached
                .as_ref()
                .is_none_or(|(_, at)| attempt == 1 && at.elapsed() >= JWKS_REFETCH_AFTER);
            if stale {
                let d = self.discovery().await?;
                let set: JwkSet = self
                    .http
                    .get(&d.jwks_uri)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| provider_error("did not send its keys", e))?
                    .json()
                    .await
                    .map_err(|e| provider_error("sent keys Tarn cannot read", e))?;
                *cached = Some((set, Instant::now()));
            }
            let (set, _) = cached.as_ref().expect("fetched above");
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            };
            if let Some(jwk) = jwk {
                return DecodingKey::from_jwk(jwk)
                    .map_err(|e| refused(format!("the provider's key: {e}")));
            }
        }
        Err(refused(format!(
            "the ID token is signed with a key the provider does not publish ({})",
            kid.unwrap_or("no key id")
        )))
    }
}
