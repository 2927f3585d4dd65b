//! An online endpoint's credentials. `auth_mode: key` endpoints have a primary and a
//! secondary key (made when the endpoint is created, kept in the vault, regenerated one at a
//! time so clients can move over); `aml_token` endpoints hand out tokens that expire, signed
//! with a per-endpoint key that is also kept in the vault, and bound to the Tarn token that
//! asked for them.

use base64::Engine;
use hmac::{KeyInit, Mac};

/// How long an `aml_token` token is valid (Azure ML's are valid for an hour too).
pub const TOKEN_LIFETIME_MS: i64 = 60 * 60 * 1000;
const TOKEN_PREFIX: &str = "tarn-ept";

/// The vault names (under the endpoint's secret prefix) of its credentials.
pub const PRIMARY: &str = "keys.primary";
pub const SECONDARY: &str = "keys.secondary";
pub const SIGNING: &str = "keys.signing";

/// A fresh random key: 32 bytes, URL-safe base64.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(signing_key: &[u8], endpoint: &str, expires_ms: i64, token_id: &str) -> String {
    let mut m =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_key).expect("HMAC takes any key length");
    m.update(endpoint.as_bytes());
    m.update(b"\0");
    m.update(expires_ms.to_string().as_bytes());
    m.update(b"\0");
    m.update(token_id.as_bytes());
    tarn_spec::digest::hex(&m.finalize().into_bytes())
}

/// A token for `endpoint` that expires at `expires_ms`, bound to the Tarn token `token_id` that
/// asked for it (`get-credentials`): it stops working when that token is revoked or its user
/// disabled, not only when it expires.
pub fn make_token(signing_key: &[u8], endpoint: &str, expires_ms: i64, token_id: &str) -> String {
    format!(
        "{TOKEN_PREFIX}.{expires_ms}.{token_id}.{}",
        mac(signing_key, endpoint, expires_ms, token_id)
    )
}

/// The Tarn token `token` is bound to, if it was made for `endpoint` with this key and has not
/// expired.
pub fn check_token(signing_key: &[u8], endpoint: &str, token: &str, now_ms: i64) -> Option<String> {
    let mut parts = token.splitn(4, '.');
    let (Some(TOKEN_PREFIX), Some(expires), Some(token_id), Some(sig)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let expires_ms = expires.parse::<i64>().ok()?;
    if expires_ms <= now_ms {
        return None;
    }
    let expected = mac(signing_key, endpoint, expires_ms, token_id);
    // Compare digests of both, so the time taken says nothing about the expected value.
    (tarn_spec::digest::sha256_bytes(expected.as_bytes())
        == tarn_spec::digest::sha256_bytes(sig.as_bytes()))
    .then(|| token_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_belong_to_one_endpoint_key_and_tarn_token() {
        let key = b"k1";
        let t = make_token(key, "ep", 2_000, "tok-1");
        assert_eq!(check_token(key, "ep", &t, 1_999).as_deref(), Some("tok-1"));
        assert!(check_token(key, "ep", &t, 2_000).is_none(), "expired");
        assert!(
            check_token(key, "other", &t, 1_000).is_none(),
            "another endpoint"
        );
        assert!(check_token(b"k2", "ep", &t, 1_000).is_none(), "another key");
        let forged = t.replace(".2000.", ".9000.");
        assert!(
            check_token(key, "ep", &forged, 1_000).is_none(),
            "expiry changed"
        );
        let rebound = t.replace(".tok-1.", ".tok-2.");
        assert!(
            check_token(key, "ep", &rebound, 1_000).is_none(),
            "bound elsewhere"
        );
        assert!(check_token(key, "ep", "garbage", 0).is_none());
        assert_ne!(new_key(), new_key());
        assert_eq!(new_key().len(), 43);
    }
}
