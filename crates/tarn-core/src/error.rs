//! The service layer's errors. The API maps each variant to one registered code and status.

use tarn_spec::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request has no valid token.
    #[error("missing or invalid token: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    /// The caller's role does not allow the action.
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// The document or request is invalid; every finding is listed.
    #[error("{} error(s) in the request: {}", .0.len(), .0.first().map(|d| d.to_string()).unwrap_or_default())]
    Invalid(Vec<Diagnostic>),
    /// The request is well formed but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A datastore's storage refused or failed an operation.
    #[error("datastore {datastore:?}: {source}")]
    Storage {
        datastore: String,
        source: tarn_storage::StorageError,
    },
    /// A compute's engine (Slurm) refused a request or does not answer.
    #[error("{engine}: {message}")]
    Engine { engine: String, message: String },
    #[error("vault: {0}")]
    Vault(String),
    #[error("storage error")]
    Io(#[source] std::io::Error),
    #[error("metadata store error")]
    Store(#[source] tarn_store::StoreError),
    /// A part of the server cannot answer now, for a reason the caller should read (a damaged
    /// metadata store): 503, with what to do.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    pub fn invalid(path: &str, message: impl Into<String>) -> Error {
        Error::Invalid(vec![Diagnostic::error(path, None, message)])
    }

    /// The same error with its findings' paths under `prefix` (a nested pipeline's step).
    pub fn within(self, prefix: &str) -> Error {
        match self {
            Error::Invalid(mut findings) => {
                for d in &mut findings {
                    d.path = tarn_spec::diag::join(prefix, &d.path);
                }
                Error::Invalid(findings)
            }
            other => other,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }
}

impl From<tarn_store::StoreError> for Error {
    fn from(e: tarn_store::StoreError) -> Error {
        match e {
            damaged @ tarn_store::StoreError::Damaged(_) => {
                tracing::error!("{damaged}");
                Error::Unavailable(damaged.to_string())
            }
            e => Error::Store(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
