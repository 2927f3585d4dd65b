//! The one registry of API error codes: each maps to one HTTP status and one stable name,
//! and every `/api/v1` error leaves as `{"error": {"code", "message", "target", "details"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tarn_core::Error;
use utoipa::ToSchema;

/// Stable machine-readable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    Forbidden,
    NotFound,
    AlreadyExists,
    ValidationError,
    Conflict,
    BadRequest,
    PayloadTooLarge,
    /// A datastore refused the request (credentials, missing container, integrity).
    StorageError,
    /// A datastore's endpoint could not be reached or failed.
    StorageUnavailable,
    /// A compute's engine (Slurm) refused the request or could not be reached.
    EngineUnavailable,
    /// A part of the server cannot answer now (a damaged metadata store).
    Unavailable,
    InternalError,
}

impl Code {
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Conflict => StatusCode::CONFLICT,
            Code::ValidationError | Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::StorageError => StatusCode::BAD_REQUEST,
            Code::StorageUnavailable | Code::EngineUnavailable => StatusCode::BAD_GATEWAY,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::Unauthenticated => "Unauthenticated",
            Code::Forbidden => "Forbidden",
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::ValidationError => "ValidationError",
            Code::Conflict => "Conflict",
            Code::BadRequest => "BadRequest",
            Code::PayloadTooLarge => "PayloadTooLarge",
            Code::StorageError => "StorageError",
            Code::StorageUnavailable => "StorageUnavailable",
            Code::EngineUnavailable => "EngineUnavailable",
            Code::Unavailable => "Unavailable",
            Code::InternalError => "InternalError",
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// The field the error is about, as a dotted path, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Every finding, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<DiagnosticView>,
}

/// One validation finding.
#[derive(Serialize, ToSchema, Clone)]
pub struct DiagnosticView {
    /// `error` or `warning`.
    pub severity: String,
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl From<&tarn_spec::Diagnostic> for DiagnosticView {
    fn from(d: &tarn_spec::Diagnostic) -> DiagnosticView {
        DiagnosticView {
            severity: match d.severity {
                tarn_spec::Severity::Error => "error".into(),
                tarn_spec::Severity::Warning => "warning".into(),
            },
            path: d.path.clone(),
            message: d.message.clone(),
            line: d.pos.map(|p| p.line),
            column: d.pos.map(|p| p.col),
        }
    }
}

/// An error on its way out of a handler.
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub target: Option<String>,
    pub details: Vec<DiagnosticView>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            target: None,
            details: vec![],
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = match &e {
            Error::Unauthenticated => Code::Unauthenticated,
            Error::Forbidden(_) => Code::Forbidden,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Invalid(_) => Code::ValidationError,
            Error::Conflict(_) => Code::Conflict,
            Error::Storage { source, .. } => match source {
                tarn_core::StorageError::NotFound(_) => Code::NotFound,
                tarn_core::StorageError::Unreachable(_) | tarn_core::StorageError::Other(_) => {
                    Code::StorageUnavailable
                }
                _ => Code::StorageError,
            },
            Error::Engine { .. } => Code::EngineUnavailable,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Vault(_) | Error::Io(_) | Error::Store(_) => Code::InternalError,
        };
        if code == Code::InternalError {
            // The whole chain is logged once, here at the edge; the client gets no internals.
            tracing::error!(error = %error_chain(&e), "request failed");
            return ApiError::new(code, "internal error; see the server log");
        }
        let details: Vec<DiagnosticView> = match &e {
            Error::Invalid(diags) => diags.iter().map(DiagnosticView::from).collect(),
            _ => vec![],
        };
        let target = details
            .first()
            .map(|d| d.path.clone())
            .filter(|p| !p.is_empty());
        let message = match &e {
            Error::Invalid(diags) if diags.len() == 1 => {
                let d = &diags[0];
                if d.path.is_empty() {
                    d.message.clone()
                } else {
                    format!("{}: {}", d.path, d.message)
                }
            }
            _ => e.to_string(),
        };
        ApiError {
            code,
            message,
            target,
            details,
        }
    }
}

/// An error with its causes, root last.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.name().into(),
                message: self.message,
                target: self.target,
                details: self.details,
            },
        };
        (self.code.status(), axum::Json(body)).into_response()
    }
}
