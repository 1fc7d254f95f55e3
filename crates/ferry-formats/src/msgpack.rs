//! MessagePack: one value per input.
//!
//! Maps become objects (integer keys as their decimal text), binary becomes a base64 string,
//! the timestamp extension (-1) an RFC 3339 string; other extension types are refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat};
use rmpv::Value as Pack;
use serde_json::{Map, Number, Value};

use ferry_core::depth::{MAX_DEPTH, too_deep_message};

use crate::error::{FormatError, Position, within_depth};

const MSGPACK: &str = "MessagePack";

/// The timestamp extension type of the MessagePack specification.
const TIMESTAMP_EXT: i8 = -1;

pub(crate) fn decode(bytes: &[u8]) -> Result<Value, FormatError> {
    let mut rest = bytes;
    let offset = |rest: &[u8]| (bytes.len() - rest.len()) as u64;
    // The value is read with a depth bound: rmpv recurses once per level, and so does
    // `to_json` below. rmpv counts two steps per array or map and two for the innermost
    // string, hence `2 * MAX_DEPTH + 2`; `within_depth` then checks the exact depth.
    let value =
        rmpv::decode::read_value_with_max_depth(&mut rest, 2 * MAX_DEPTH + 2).map_err(|error| {
            let message = match &error {
                rmpv::decode::Error::DepthLimitExceeded => too_deep_message(),
                rmpv::decode::Error::InvalidMarkerRead(io)
                | rmpv::decode::Error::InvalidDataRead(io)
                    if io.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    "unexpected end of the data".to_string()
                }
                _ => error.to_string(),
            };
            FormatError::at(MSGPACK, Position::Byte(offset(rest)), message)
        })?;
    if !rest.is_empty() {
        return Err(FormatError::at(
            MSGPACK,
            Position::Byte(offset(rest)),
            format!("{} bytes after the end of the value", rest.len()),
        ));
    }
    within_depth(MSGPACK, to_json(value)?)
}

pub(crate) fn encode(value: &Value) -> Result<Vec<u8>, FormatError> {
    rmp_serde::to_vec(value).map_err(|error| FormatError::new(MSGPACK, error.to_string()))
}

fn to_json(value: Pack) -> Result<Value, FormatError> {
    Ok(match value {
        Pack::Nil => Value::Null,
        Pack::Boolean(b) => Value::Bool(b),
        Pack::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::Number(u.into()),
            (None, Some(i)) => Value::Number(i.into()),
            (None, None) => unreachable!("a MessagePack integer fits u64 or i64"),
        },
        Pack::F32(f) => float(f64::from(f)),
        Pack::F64(f) => float(f),
        Pack::String(text) => match text.into_str() {
            Some(text) => Value::String(text),
            None => return Err(FormatError::new(MSGPACK, "a string is not valid UTF-8")),
        },
        Pack::Binary(data) => Value::String(BASE64.encode(data)),
        Pack::Array(items) => Value::Array(
            items
                .into_iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Pack::Map(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Pack::String(text) => match text.into_str() {
                        Some(text) => text,
                        None => {
                            return Err(FormatError::new(MSGPACK, "a map key is not valid UTF-8"));
                        }
                    },
                    Pack::Integer(i) => i.to_string(),
                    other => {
                        return Err(FormatError::new(
                            MSGPACK,
                            format!(
                                "a map key is {other}; only string and integer keys can be JSON \
                                 object keys"
                            ),
                        ));
                    }
                };
                object.insert(key, to_json(value)?);
            }
            Value::Object(object)
        }
        Pack::Ext(TIMESTAMP_EXT, data) => Value::String(timestamp(&data)?),
        Pack::Ext(kind, _) => {
            return Err(FormatError::new(
                MSGPACK,
                format!("extension type {kind} has no JSON form"),
            ));
        }
    })
}

/// A float as a JSON number; NaN and the infinities, which JSON lacks, as the strings `NaN`,
/// `Infinity` and `-Infinity`.
pub(crate) fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(number) => Value::Number(number),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// The timestamp extension (32, 64 or 96 bits) as RFC 3339 in UTC.
fn timestamp(data: &[u8]) -> Result<String, FormatError> {
    let (seconds, nanos) = match data.len() {
        4 => (
            i64::from(u32::from_be_bytes(data.try_into().unwrap_or_default())),
            0,
        ),
        8 => {
            let both = u64::from_be_bytes(data.try_into().unwrap_or_default());
            ((both & 0x3_FFFF_FFFF) as i64, (both >> 34) as u32)
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().unwrap_or_default());
            let seconds = i64::from_be_bytes(data[4..].try_into().unwrap_or_default());
            (seconds, nanos)
        }
        length => {
            return Err(FormatError::new(
                MSGPACK,
                format!("a timestamp extension of {length} bytes; 4, 8 or 12 are valid"),
            ));
        }
    };
    DateTime::from_timestamp(seconds, nanos)
        .map(|time| time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .ok_or_else(|| FormatError::new(MSGPACK, "a timestamp is out of range"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pack(value: &Pack) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    #[test]
    fn round_trip_and_wire_form() {
        let value =
            json!({ "a": [1, -2, 1.5, "x", null, true], "b": { "c": 18446744073709551615u64 } });
        let bytes = encode(&value).unwrap();
        assert_eq!(decode(&bytes).unwrap(), value);
        // Small integers and short strings take one byte each.
        assert_eq!(encode(&json!([1, "a"])).unwrap(), [0x92, 0x01, 0xA1, b'a']);
    }

    #[test]
    fn binary_integer_keys_and_timestamps() {
        let value = Pack::Map(vec![
            (Pack::from(7), Pack::Binary(vec![0, 1, 2])),
            (
                Pack::from("t"),
                Pack::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec()),
            ),
            (Pack::from("f"), Pack::F64(f64::NAN)),
        ]);
        assert_eq!(
            decode(&pack(&value)).unwrap(),
            json!({ "7": "AAEC", "t": "2023-11-14T22:13:20Z", "f": "NaN" })
        );
        let other = Pack::Ext(5, vec![1]);
        assert_eq!(
            decode(&pack(&other)).unwrap_err().to_string(),
            "MessagePack: extension type 5 has no JSON form"
        );
    }

    #[test]
    fn deep_nesting_is_refused_with_the_depth() {
        // 20,000 arrays of one: 0x91 each, then nil.
        let mut deep = vec![0x91; 20_000];
        deep.push(0xC0);
        let error = decode(&deep).unwrap_err().to_string();
        assert!(error.contains("deeper than 100 levels"), "{error}");
        let mut fine = vec![0x91; MAX_DEPTH];
        fine.push(0xC0);
        decode(&fine).unwrap();
    }

    #[test]
    fn malformed_input_gives_the_byte_offset() {
        // An array of three, but only two items.
        let error = decode(&[0x93, 0x01, 0x02]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "MessagePack byte 3: unexpected end of the data"
        );
        let error = decode(&[0x01, 0x02, 0x03]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "MessagePack byte 1: 2 bytes after the end of the value"
        );
        let error = decode(&[0xA2, 0xFF, 0xFE]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "MessagePack: a string is not valid UTF-8"
        );
        let error = decode(&[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "MessagePack byte 0: unexpected end of the data"
        );
    }
}
