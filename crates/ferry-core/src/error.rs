//! Errors that components return. Every one says whether trying again can help.

/// Why a step (pull, process, push) failed, and whether a retry can help.
///
/// *Retryable* errors (network, 5xx, lock timeout) are retried with back-off; *permanent* ones
/// (bad data, 4xx, schema) make the step dead at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    /// A failure that may pass on a later attempt.
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that no retry will fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
        }
    }

    /// Classifies an I/O error: a missing or forbidden file is permanent, the rest retryable.
    pub fn io(context: &str, error: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let message = format!("{context}: {error}");
        match error.kind() {
            NotFound | PermissionDenied | InvalidInput | InvalidData => Self::permanent(message),
            _ => Self::retryable(message),
        }
    }
}

/// A component's configuration could not be turned into a working component.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// Key path inside the component's configuration, e.g. `["after_seat", "move_to"]`.
    pub path: Vec<String>,
    pub message: String,
    /// Where in the text of the string value at `path` the problem is (a program's syntax
    /// error, say), so that validation can point at the line of the definition file.
    pub within: Option<TextPosition>,
}

/// A 1-based line and column inside a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextPosition {
    pub line: u64,
    pub column: u64,
}

impl BuildError {
    /// An error about one key of the component's configuration.
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        BuildError {
            path: vec![key.to_string()],
            message: message.into(),
            within: None,
        }
    }

    /// An error at `position` inside the text of the string value at `key`.
    pub fn within(key: &str, position: TextPosition, message: impl Into<String>) -> Self {
        BuildError {
            within: Some(position),
            ..Self::at(key, message)
        }
    }

    /// An error about the component as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        BuildError {
            path: Vec::new(),
            message: message.into(),
            within: None,
        }
    }
}
