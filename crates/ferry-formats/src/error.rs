//! What went wrong reading or writing a format, and where.

use std::fmt;

use serde_json::Value;

/// Input that is not valid in its format, or a value that the format cannot hold.
///
/// Its text names the format and the position, e.g. `CSV line 3: found 4 fields, expected 3`,
/// so that a failed passenger tells an operator where to look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    /// The format (or compression) that failed: `JSON`, `CSV`, `Avro`, `gzip`…
    pub format: &'static str,
    /// What is wrong, lowercase, without the position.
    pub message: String,
    /// Where, when the format or its library can tell.
    pub position: Option<Position>,
}

/// Where in the input (or in the value being encoded) a [`FormatError`] is.
///
/// Positions in compressed input refer to the decompressed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// A 1-based line of a text format, with the 1-based column (in characters) when known.
    Line { line: u64, column: Option<u64> },
    /// A 0-based byte offset into a binary format.
    Byte(u64),
    /// The 1-based number of a record in a sequence (an Avro container file's records).
    Record(u64),
    /// A JSON pointer into the value being encoded, e.g. `/orders/3/amount` (`""` is the whole
    /// value).
    Path(String),
}

impl FormatError {
    /// An error without a position.
    pub(crate) fn new(format: &'static str, message: impl Into<String>) -> Self {
        FormatError {
            format,
            message: message.into(),
            position: None,
        }
    }

    /// An error at `position`.
    pub(crate) fn at(format: &'static str, position: Position, message: impl Into<String>) -> Self {
        FormatError {
            format,
            message: message.into(),
            position: Some(position),
        }
    }

    /// An error at a line and column.
    pub(crate) fn at_line(
        format: &'static str,
        line: u64,
        column: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Self::at(format, Position::Line { line, column }, message)
    }

    /// An error about the part of an encoded value at `pointer` (a JSON pointer).
    pub(crate) fn at_path(
        format: &'static str,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::at(format, Position::Path(pointer.into()), message)
    }
}

/// Refuses a decoded `value` whose arrays and objects nest deeper than
/// [`ferry_core::depth::MAX_DEPTH`], so that nothing later recurses through it without bound.
pub(crate) fn within_depth(format: &'static str, value: Value) -> Result<Value, FormatError> {
    if ferry_core::depth::nests_deeper_than(&value, ferry_core::depth::MAX_DEPTH) {
        return Err(FormatError::new(
            format,
            ferry_core::depth::too_deep_message(),
        ));
    }
    Ok(value)
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            Some(position) => write!(f, "{} {position}: {}", self.format, self.message),
            None => write!(f, "{}: {}", self.format, self.message),
        }
    }
}

impl std::error::Error for FormatError {}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line { line, column: None } => write!(f, "line {line}"),
            Position::Line {
                line,
                column: Some(column),
            } => write!(f, "line {line}, column {column}"),
            Position::Byte(offset) => write!(f, "byte {offset}"),
            Position::Record(number) => write!(f, "record {number}"),
            Position::Path(pointer) if pointer.is_empty() => f.write_str("at the top level"),
            Position::Path(pointer) => write!(f, "at {pointer}"),
        }
    }
}

/// Appends one segment to a JSON pointer (escaping `~` and `/` as RFC 6901 says).
pub(crate) fn pointer_push(pointer: &str, segment: &str) -> String {
    let escaped = segment.replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{escaped}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_format_and_position() {
        let error = FormatError::at_line("CSV", 3, None, "found 4 fields, expected 3");
        assert_eq!(error.to_string(), "CSV line 3: found 4 fields, expected 3");
        let error = FormatError::at_line("JSON", 2, Some(7), "expected value");
        assert_eq!(error.to_string(), "JSON line 2, column 7: expected value");
        let error = FormatError::at("Avro", Position::Byte(17), "unexpected end");
        assert_eq!(error.to_string(), "Avro byte 17: unexpected end");
        let error = FormatError::at_path("CSV", "/2", "expected an object");
        assert_eq!(error.to_string(), "CSV at /2: expected an object");
        let error = FormatError::new("gzip", "corrupt deflate stream");
        assert_eq!(error.to_string(), "gzip: corrupt deflate stream");
    }

    #[test]
    fn pointers_escape_their_segments() {
        assert_eq!(pointer_push("", "a/b~c"), "/a~1b~0c");
        assert_eq!(pointer_push("/x", "3"), "/x/3");
    }
}
