//! JSON (one document) and NDJSON (one document per line).

use serde_json::Value;

use crate::error::{FormatError, Position, within_depth};

const JSON: &str = "JSON";
const NDJSON: &str = "NDJSON";

/// `bytes` without a leading UTF-8 byte order mark, which some Windows tools write.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// serde_json's message without the ` at line L column C` it appends: the position is kept
/// apart, in [`FormatError::position`].
fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    // serde_json stops at 128 levels; say so in the words every decoder uses.
    if text.starts_with("recursion limit exceeded") {
        return ferry_core::depth::too_deep_message();
    }
    match text.rfind(" at line ") {
        Some(at) if error.line() > 0 => text[..at].to_string(),
        _ => text,
    }
}

/// One JSON document.
pub(crate) fn decode_json(bytes: &[u8]) -> Result<Value, FormatError> {
    let value = serde_json::from_slice(strip_bom(bytes)).map_err(|error| {
        FormatError::at_line(
            JSON,
            error.line() as u64,
            Some(error.column() as u64),
            message(&error),
        )
    })?;
    within_depth(JSON, value)
}

/// Compact JSON.
pub(crate) fn encode_json(value: &Value) -> Result<Vec<u8>, FormatError> {
    serde_json::to_vec(value).map_err(|error| FormatError::new(JSON, error.to_string()))
}

/// One JSON document per line, as an array. Blank lines are skipped; a line may end with `\r`.
pub(crate) fn decode_ndjson(bytes: &[u8]) -> Result<Value, FormatError> {
    let mut items = Vec::new();
    for (index, line) in strip_bom(bytes).split(|&byte| byte == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let item = serde_json::from_slice(line).map_err(|error| {
            FormatError::at_line(
                NDJSON,
                index as u64 + 1,
                Some(error.column() as u64),
                message(&error),
            )
        })?;
        items.push(within_depth(NDJSON, item).map_err(|error| FormatError {
            position: Some(Position::Line {
                line: index as u64 + 1,
                column: None,
            }),
            ..error
        })?);
    }
    Ok(Value::Array(items))
}

/// Each item of an array as one line of compact JSON, each line ending with `\n`.
pub(crate) fn encode_ndjson(value: &Value) -> Result<Vec<u8>, FormatError> {
    let Value::Array(items) = value else {
        return Err(FormatError::at_path(
            NDJSON,
            "",
            format!(
                "expected an array (one line per item), found {}",
                kind(value)
            ),
        ));
    };
    let mut out = Vec::with_capacity(items.len() * 64);
    for item in items {
        // Compact JSON never contains a raw newline: those in strings are escaped.
        serde_json::to_writer(&mut out, item)
            .map_err(|error| FormatError::new(NDJSON, error.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// A record batch's typed rows as a JSON array of objects, or NDJSON (one object a line), keys
/// in column order.
pub(crate) fn encode_records(
    columns: &[ferry_core::records::Column],
    rows: &[Vec<crate::records::Cell<'_>>],
    ndjson: bool,
) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::with_capacity(rows.len() * columns.len() * 16 + 2);
    let error = |error: serde_json::Error| FormatError::new("JSON", error.to_string());
    if !ndjson {
        out.push(b'[');
    }
    for (index, cells) in rows.iter().enumerate() {
        if index > 0 && !ndjson {
            out.push(b',');
        }
        let row = crate::records::JsonRow { columns, cells };
        serde_json::to_writer(&mut out, &row).map_err(error)?;
        if ndjson {
            out.push(b'\n');
        }
    }
    if !ndjson {
        out.push(b']');
    }
    Ok(out)
}

/// What a JSON value is, with its article, for messages: `an object`, `a string`…
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_errors_have_line_and_column() {
        let error = decode_json(b"{\n  \"a\": 1,\n  \"b\": @\n}").unwrap_err();
        assert_eq!(error.to_string(), "JSON line 3, column 8: expected value");
        let error = decode_json(b"").unwrap_err();
        assert!(
            error.to_string().starts_with("JSON line 1, column 0: EOF"),
            "{error}"
        );
        let error = decode_json(b"[1] [2]").unwrap_err();
        assert!(error.to_string().contains("trailing characters"), "{error}");
    }

    #[test]
    fn deep_nesting_is_refused_with_the_depth() {
        let deep = |levels: usize| "[".repeat(levels) + &"]".repeat(levels);
        for levels in [101, 20_000] {
            let error = decode_json(deep(levels).as_bytes())
                .unwrap_err()
                .to_string();
            assert!(error.contains("deeper than 100 levels"), "{error}");
        }
        assert!(decode_json(deep(100).as_bytes()).is_ok());
        let error = decode_ndjson(format!("1\n{}\n", deep(101)).as_bytes()).unwrap_err();
        assert!(
            error.to_string().starts_with("NDJSON line 2: values nest"),
            "{error}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(
            decode_json(b"\xEF\xBB\xBF{\"a\":1}").unwrap(),
            json!({ "a": 1 })
        );
    }

    #[test]
    fn ndjson_lines() {
        let value = decode_ndjson(b"{\"a\":1}\r\n\n  \n[2]\n\"x\"").unwrap();
        assert_eq!(value, json!([{ "a": 1 }, [2], "x"]));
        assert_eq!(decode_ndjson(b"").unwrap(), json!([]));
        let encoded = encode_ndjson(&json!([{ "a": "x\ny" }, 2])).unwrap();
        assert_eq!(encoded, b"{\"a\":\"x\\ny\"}\n2\n");
    }

    #[test]
    fn ndjson_errors_name_the_line() {
        let error = decode_ndjson(b"{\"a\":1}\n{\"a\":2}\n{\"a\":}\n").unwrap_err();
        assert_eq!(error.to_string(), "NDJSON line 3, column 6: expected value");
        let error = encode_ndjson(&json!({ "a": 1 })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "NDJSON at the top level: expected an array (one line per item), found an object"
        );
    }
}
