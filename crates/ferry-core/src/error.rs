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
    /// Neither retrying nor giving up helps: a person must act (say, a load that would drop a
    /// column). The step waits in the queue, tried again now and then, and never turns dead.
    pub held: bool,
}

impl StepError {
    /// A failure that may pass on a later attempt.
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
            held: false,
        }
    }

    /// A failure that waits for a person: the step stays in the queue (failed, tried again
    /// after the longest back-off) instead of turning dead.
    pub fn held(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
            held: true,
        }
    }

    /// A failure that no retry will fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
            held: false,
        }
    }

    /// Classifies an I/O error: a missing or forbidden file is permanent, the rest retryable.
    pub fn io(context: &str, error: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let message = format!("{context}: {error}");
        match error.kind() {
            // A name the file system cannot hold stays too long on every retry.
            NotFound | PermissionDenied | InvalidInput | InvalidData | InvalidFilename => {
                Self::permanent(message)
            }
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

impl TextPosition {
    /// The line and column (in characters, not bytes) of byte `offset` in UTF-8 `text`; an
    /// offset past the end is the end.
    pub fn of_offset(text: &[u8], offset: usize) -> TextPosition {
        let before = &text[..offset.min(text.len())];
        let line = before.iter().filter(|&&byte| byte == b'\n').count() as u64 + 1;
        let line_start = before
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1);
        // Characters, not bytes: count the bytes that start a UTF-8 sequence.
        let column = before[line_start..]
            .iter()
            .filter(|&&byte| (byte & 0xC0) != 0x80)
            .count() as u64
            + 1;
        TextPosition { line, column }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u64, column: u64) -> TextPosition {
        TextPosition { line, column }
    }

    #[test]
    fn positions_are_lines_and_character_columns() {
        let text = "ab\nçd\nxyz".as_bytes();
        assert_eq!(TextPosition::of_offset(text, 0), at(1, 1));
        assert_eq!(TextPosition::of_offset(text, 3), at(2, 1));
        // `d` is the second character of line 2, after the two bytes of `ç`.
        assert_eq!(TextPosition::of_offset(text, 5), at(2, 2));
        assert_eq!(TextPosition::of_offset(text, 100), at(3, 4));
        let text = "ab\nçd\n\nx".as_bytes();
        assert_eq!(TextPosition::of_offset(text, 8), at(4, 1));
        assert_eq!(TextPosition::of_offset(text, 99), at(4, 2));
    }
}
