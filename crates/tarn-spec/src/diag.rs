//! Diagnostics: what validation says about a document, with where it said it.

use crate::node::Pos;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    /// Accepted and stored, but Tarn cannot honour it on this machine.
    Warning,
}

/// One finding about one field.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The dotted field path, e.g. `jobs.train.inputs.lr` (empty for the document itself).
    pub path: String,
    pub pos: Option<Pos>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(path: &str, pos: Option<Pos>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path: path.to_string(),
            pos,
            message: message.into(),
        }
    }

    pub fn warning(path: &str, pos: Option<Pos>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            path: path.to_string(),
            pos,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders as `file:line:col: error: path: message`, the form editors jump to.
    pub fn render(&self, file: &str) -> String {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let place = match self.pos {
            Some(pos) => format!("{file}:{pos}"),
            None => file.to_string(),
        };
        let field = if self.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.path)
        };
        format!("{place}: {level}: {field}{}", self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("<input>"))
    }
}

/// Joins a parent path and a child key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
