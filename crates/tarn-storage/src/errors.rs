//! What can go wrong talking to storage, in words a user can act on.

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid datastore settings: {0}")]
    Config(String),
    #[error("{0} does not exist in the datastore")]
    NotFound(String),
    #[error("the datastore refused the credentials or lacks permission: {0}")]
    Denied(String),
    #[error("the container or bucket does not exist: {0}")]
    MissingContainer(String),
    #[error("cannot reach the storage endpoint: {0}")]
    Unreachable(String),
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("storage error: {0}")]
    Other(String),
}

/// Removes every secret value from a message (SAS tokens can appear in URLs in errors).
pub fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "<redacted>");
        // SAS tokens appear URL-encoded or without their leading `?` too.
        let trimmed = s.trim_start_matches('?');
        if trimmed.len() >= 4 {
            out = out.replace(trimmed, "<redacted>");
        }
    }
    out
}

/// Sorts an `object_store` error into the kinds users tell apart.
pub fn classify(e: &object_store::Error, what: &str, secrets: &[String]) -> StorageError {
    let mut parts = vec![redact(&format!("{e}"), secrets)];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(redact(&s.to_string(), secrets));
        source = s.source();
    }
    let lower = parts.join(": ").to_ascii_lowercase();
    // The root cause (a DNS failure, a refused connection) first: the outer layers repeat the
    // request and can be long enough to be cut.
    let chain = match parts.split_last() {
        Some((root, outer)) if !outer.is_empty() => {
            format!("{} (from: {})", short(root), short(&outer.join(": ")))
        }
        _ => short(&parts.join(": ")),
    };
    match e {
        object_store::Error::NotFound { .. } if !is_container_missing(&lower) => {
            StorageError::NotFound(what.to_string())
        }
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => StorageError::Denied(chain.clone()),
        _ if is_container_missing(&lower) => StorageError::MissingContainer(chain.clone()),
        _ if [
            "authenticationfailed",
            "authorizationfailure",
            "signaturedoesnotmatch",
            "invalidaccesskeyid",
            "accessdenied",
            "status: 403",
            "403 forbidden",
            "status: 401",
            "invalidauthenticationinfo",
        ]
        .iter()
        .any(|k| lower.contains(k)) =>
        {
            StorageError::Denied(chain.clone())
        }
        _ if [
            "error sending request",
            "connection refused",
            "dns error",
            "timed out",
            "connect",
            "broken pipe",
            "connection reset",
            "incomplete message",
        ]
        .iter()
        .any(|k| lower.contains(k)) =>
        {
            StorageError::Unreachable(chain.clone())
        }
        _ => StorageError::Other(chain.clone()),
    }
}

fn is_container_missing(lower: &str) -> bool {
    [
        "containernotfound",
        "nosuchbucket",
        "the specified container does not exist",
        "bucket does not exist",
        "filesystemnotfound",
    ]
    .iter()
    .any(|k| lower.contains(k))
}

/// Keeps messages readable: storage services can answer with pages of XML.
fn short(message: &str) -> String {
    const MAX: usize = 400;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose cause is far down a long chain.
    #[derive(Debug)]
    struct Layer(String, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn the_root_cause_comes_first_and_is_never_cut() {
        let root = Layer(
            "dns error: failed to lookup address information".into(),
            None,
        );
        let outer = Layer(
            format!("Error performing GET {}", "x".repeat(600)),
            Some(Box::new(root)),
        );
        let e = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: Box::new(outer),
        };
        let m = classify(&e, "f", &[]).to_string();
        assert!(
            matches!(classify(&e, "f", &[]), StorageError::Unreachable(_)),
            "{m}"
        );
        let at = m.find("dns error").expect("the cause is in the message");
        assert!(at < 40, "the cause comes first: {m}");
    }

    #[test]
    fn secrets_are_scrubbed() {
        let secrets = vec!["?sv=2022&sig=abcdef".to_string(), "key123456".to_string()];
        let m = redact(
            "GET https://a.blob.core.windows.net/c?sv=2022&sig=abcdef failed with key123456",
            &secrets,
        );
        assert!(!m.contains("abcdef") && !m.contains("key123456"), "{m}");
    }
}
