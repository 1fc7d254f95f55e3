//! Record batches (see [`ferry_core::records`]) in and out of the formats: every field typed by
//! its column, so that a value keeps its type from a database row to a Parquet file, a JSON
//! document or a workbook and back.
//!
//! A field of a batch is PostgreSQL's text form of its value; [`Cell`] is the value typed by its
//! column. Decoding a document into a batch goes through JSON values ([`cell_from_json`]), so
//! every format that decodes to JSON (CSV, JSON, NDJSON, Parquet, xlsx…) decodes to records with
//! the same rules and the same errors.
//!
//! How types map: JSON keeps integers, floats and booleans; `numeric` is a string (every digit
//! kept), dates and times ISO 8601 strings (`timestamptz` in UTC with `Z`), `bytes` base64,
//! `json` the value itself. See `docs/formats.md`.

#[cfg(feature = "parquet")]
pub(crate) mod parquet;

/// A build without the `parquet` feature knows the format's name, and says it cannot use it.
#[cfg(not(feature = "parquet"))]
pub(crate) mod parquet {
    use super::{Cell, Column};
    use crate::FormatError;

    fn missing() -> FormatError {
        FormatError::new(
            "Parquet",
            "this ferry was built without Parquet (Cargo feature `parquet`)",
        )
    }

    pub(crate) fn write(_: &[Column], _: &[Vec<Cell<'_>>]) -> Result<Vec<u8>, FormatError> {
        Err(missing())
    }

    pub(crate) fn read(_: &[u8]) -> Result<serde_json::Value, FormatError> {
        Err(missing())
    }
}
pub(crate) mod xlsx;

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use ferry_core::records::{self, BatchWriter, Column, ColumnType};
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::error::FormatError;

/// One value of a batch, typed by its column.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell<'a> {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    /// An exact decimal as its text (`-12.50`, `NaN`): no binary type holds every one.
    Numeric(Cow<'a, str>),
    Text(Cow<'a, str>),
    Date(NaiveDate),
    Time(NaiveTime),
    /// Without a zone.
    Timestamp(NaiveDateTime),
    /// An instant, in UTC.
    Timestamptz(DateTime<Utc>),
    /// The JSON text.
    Json(Cow<'a, str>),
    Bytes(Vec<u8>),
    /// The canonical text, `8-4-4-4-12` hex digits.
    Uuid(Cow<'a, str>),
}

/// A field's bytes as text; batches are UTF-8.
fn text_of(field: Cow<'_, [u8]>) -> Result<Cow<'_, str>, String> {
    match field {
        Cow::Borrowed(bytes) => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| "the field is not UTF-8".to_string()),
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|_| "the field is not UTF-8".to_string()),
    }
}

/// Reads one field of a batch (`None` is NULL) as a value of `kind`; the error says what does
/// not fit, without the position (the caller knows the row and column).
pub fn parse_field(kind: ColumnType, field: Option<Cow<'_, [u8]>>) -> Result<Cell<'_>, String> {
    let Some(field) = field else {
        return Ok(Cell::Null);
    };
    let text = text_of(field)?;
    parse_text(kind, text)
}

/// Reads the text of a value of `kind` in PostgreSQL's text form (and the ISO 8601 forms).
pub fn parse_text(kind: ColumnType, text: Cow<'_, str>) -> Result<Cell<'_>, String> {
    let bad = |what: &str| format!("`{}` is not {what}", shorten(&text));
    Ok(match kind {
        ColumnType::Boolean => Cell::Boolean(parse_boolean(&text).ok_or_else(|| bad("a boolean"))?),
        ColumnType::Integer => {
            Cell::Integer(text.trim().parse().map_err(|_| bad("a 64-bit integer"))?)
        }
        ColumnType::Float => Cell::Float(parse_float(&text).ok_or_else(|| bad("a float"))?),
        ColumnType::Numeric => {
            if !is_decimal(text.trim()) {
                return Err(bad("a decimal number"));
            }
            Cell::Numeric(match text {
                Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
                Cow::Owned(text) => Cow::Owned(text.trim().to_string()),
            })
        }
        ColumnType::Text => Cell::Text(text),
        ColumnType::Date => Cell::Date(parse_date(&text).ok_or_else(|| bad("a date"))?),
        ColumnType::Time => Cell::Time(
            NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f")
                .map_err(|_| bad("a time of day (`12:30:00`)"))?,
        ),
        ColumnType::Timestamp => Cell::Timestamp(
            parse_timestamp(&text)
                .ok_or_else(|| bad("a timestamp without a zone (`2024-05-31 12:00:00`)"))?,
        ),
        ColumnType::Timestamptz => Cell::Timestamptz(
            parse_timestamptz(&text)
                .ok_or_else(|| bad("a timestamp with a zone (`2024-05-31 12:00:00+02`)"))?,
        ),
        ColumnType::Json => {
            serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|_| bad("JSON"))?;
            Cell::Json(text)
        }
        ColumnType::Bytes => Cell::Bytes(
            text.strip_prefix("\\x")
                .and_then(from_hex)
                .ok_or_else(|| bad("bytes in hex (`\\x…`)"))?,
        ),
        ColumnType::Uuid => {
            if !is_uuid(&text) {
                return Err(bad("a UUID"));
            }
            Cell::Uuid(text)
        }
    })
}

/// `t`, `true`, `yes`, `on`, `1` and their opposites, in any case.
fn parse_boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A float, PostgreSQL's `Infinity`/`-Infinity`/`NaN` included.
fn parse_float(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

/// Whether `text` is a decimal number as PostgreSQL's `numeric` reads it: a sign, digits with
/// at most one point, an exponent; or `NaN`.
pub(crate) fn is_decimal(text: &str) -> bool {
    if text.eq_ignore_ascii_case("nan") {
        return true;
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|exponent| {
        let exponent = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
        !exponent.is_empty() && digits(exponent)
    });
    (!whole.is_empty() || !fraction.is_empty()) && digits(whole) && digits(fraction) && exponent_ok
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// `2024-05-31 12:00:00[.ffffff]`, or with a `T`.
fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    if let Some((at, "")) = fast_date_time(text) {
        return Some(at);
    }
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
}

/// `2024-05-31 12:00:00+02`, `…+02:00`, `…+0200`, `2024-05-31T10:00:00Z`: the instant, in UTC.
fn parse_timestamptz(text: &str) -> Option<DateTime<Utc>> {
    if let Some((at, zone)) = fast_date_time(text)
        && let Some(offset) = fast_offset(zone)
    {
        return Some((at - chrono::Duration::seconds(offset)).and_utc());
    }
    let text = text.trim().replacen('T', " ", 1);
    let text = match text.strip_suffix(['Z', 'z']) {
        Some(rest) => format!("{rest}+00"),
        None => text,
    };
    DateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The common form without chrono's format parser (the hot path of a chunk of timestamps):
/// `YYYY-MM-DD HH:MM:SS` (or `T`), an optional fraction of up to 9 digits, and what follows.
fn fast_date_time(text: &str) -> Option<(NaiveDateTime, &str)> {
    let bytes = text.as_bytes();
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b' ' | b'T')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0u32, |n, b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 7)?, number(8, 10)?)?;
    let (mut nanos, mut end) = (0u32, 19);
    if bytes.get(19) == Some(&b'.') {
        let digits = bytes[20..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = number(20, 20 + digits)? * 10u32.pow(9 - digits as u32);
        end = 20 + digits;
    }
    let time =
        NaiveTime::from_hms_nano_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?, nanos)?;
    Some((date.and_time(time), &text[end..]))
}

/// A zone offset in seconds east of UTC: `Z`, `+02`, `-05:30`, `+0200`.
fn fast_offset(zone: &str) -> Option<i64> {
    if zone == "Z" || zone == "z" {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: Vec<u8> = zone[1..].bytes().filter(|b| *b != b':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let part = |at: usize| i64::from(digits[at] - b'0') * 10 + i64::from(digits[at + 1] - b'0');
    let minutes = if digits.len() == 4 { part(2) } else { 0 };
    Some(sign * (part(0) * 3600 + minutes * 60))
}

/// `2024-05-31 12:00:00` with `.ffffff` when there is a fraction, as PostgreSQL writes it.
pub(crate) fn timestamp_text(at: &NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    let mut text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let nanos = at.nanosecond();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect()
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// At most 40 characters of a value, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl Cell<'_> {
    /// Writes the value as the next field of `writer`, in PostgreSQL's text form.
    pub fn write(&self, writer: &mut BatchWriter) {
        match self {
            Cell::Null => writer.null(),
            Cell::Boolean(value) => writer.raw(if *value { "t" } else { "f" }),
            Cell::Integer(value) => writer.raw(&value.to_string()),
            Cell::Float(value) => writer.raw(&float_text(*value)),
            Cell::Numeric(text) => writer.raw(text),
            Cell::Text(text) | Cell::Json(text) | Cell::Uuid(text) => writer.text(text),
            Cell::Date(date) => writer.raw(&date.format("%Y-%m-%d").to_string()),
            Cell::Time(time) => writer.raw(&time.format("%H:%M:%S%.f").to_string()),
            Cell::Timestamp(at) => writer.raw(&timestamp_text(at)),
            Cell::Timestamptz(at) => writer.raw(&(timestamp_text(&at.naive_utc()) + "+00")),
            Cell::Bytes(bytes) => writer.bytes(bytes),
        }
    }

    /// The value in JSON: see the module's documentation for how each type maps.
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Boolean(value) => Value::Bool(*value),
            Cell::Integer(value) => Value::from(*value),
            Cell::Float(value) => serde_json::Number::from_f64(*value)
                .map_or_else(|| Value::String(float_text(*value)), Value::Number),
            Cell::Numeric(text) | Cell::Text(text) | Cell::Uuid(text) => {
                Value::String(text.to_string())
            }
            Cell::Date(date) => Value::String(date.format("%Y-%m-%d").to_string()),
            Cell::Time(time) => Value::String(time.format("%H:%M:%S%.f").to_string()),
            Cell::Timestamp(at) => Value::String(at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Cell::Timestamptz(at) => Value::String(at.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()),
            // Checked when the batch was read or written.
            Cell::Json(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            Cell::Bytes(bytes) => Value::String(BASE64.encode(bytes)),
        }
    }

    /// The value as CSV text: PostgreSQL's text form, booleans as `true`/`false`, NULL empty.
    pub fn csv_text(&self) -> Cow<'_, str> {
        match self {
            Cell::Null => Cow::Borrowed(""),
            Cell::Boolean(value) => Cow::Borrowed(if *value { "true" } else { "false" }),
            Cell::Numeric(text) | Cell::Text(text) | Cell::Json(text) | Cell::Uuid(text) => {
                Cow::Borrowed(text)
            }
            Cell::Timestamptz(at) => Cow::Owned(timestamp_text(&at.naive_utc()) + "+00"),
            Cell::Timestamp(at) => Cow::Owned(timestamp_text(at)),
            Cell::Bytes(bytes) => Cow::Owned(format!("\\x{}", hex(bytes))),
            other => match other.to_json() {
                Value::String(text) => Cow::Owned(text),
                value => Cow::Owned(value.to_string()),
            },
        }
    }
}

/// A float as PostgreSQL writes it: shortest round-trip digits, `NaN`, `Infinity`.
pub(crate) fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        value.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A JSON value as a value of a column of type `kind`: what a decoded document gives for a
/// declared column. Strings are read as their type's text (CSV gives nothing else); the error
/// says why the value does not fit.
pub fn cell_from_json(kind: ColumnType, value: &Value) -> Result<Cell<'_>, String> {
    let describe = || match value {
        Value::String(text) => format!("`{}`", shorten(text)),
        other => shorten(&other.to_string()),
    };
    let refuse = |what: &str| format!("{} is not {what}", describe());
    match (kind, value) {
        (_, Value::Null) => Ok(Cell::Null),
        (ColumnType::Json, value) => Ok(Cell::Json(Cow::Owned(value.to_string()))),
        // CSV has no NULL: an empty field is NULL but for text.
        (_, Value::String(text)) if text.is_empty() && kind != ColumnType::Text => Ok(Cell::Null),
        (_, Value::String(text)) if kind == ColumnType::Bytes => BASE64
            .decode(text)
            .map(Cell::Bytes)
            .map_err(|_| refuse("bytes in base64")),
        (_, Value::String(text)) => parse_text(kind, Cow::Borrowed(text)),
        (ColumnType::Boolean, Value::Bool(value)) => Ok(Cell::Boolean(*value)),
        (ColumnType::Integer, Value::Number(number)) => number
            .as_i64()
            .map(Cell::Integer)
            .ok_or_else(|| refuse("a 64-bit integer")),
        (ColumnType::Float, Value::Number(number)) => number
            .as_f64()
            .map(Cell::Float)
            .ok_or_else(|| refuse("a float")),
        (ColumnType::Numeric, Value::Number(number)) => {
            Ok(Cell::Numeric(Cow::Owned(number.to_string())))
        }
        (ColumnType::Text, Value::Number(_) | Value::Bool(_)) => {
            Ok(Cell::Text(Cow::Owned(value.to_string())))
        }
        (kind, _) => Err(format!(
            "{} does not fit the column's type `{kind}`{}",
            crate::json::kind(value),
            match value {
                Value::Object(_) | Value::Array(_) => "; declare the column `json`",
                _ => "",
            }
        )),
    }
}

/// A document decoded to JSON (an array of objects, or one object) as a record batch of
/// `columns`: each object a row, each column its key. `what` names the document in errors,
/// which name the row (from 1) and the column: `row 3, column `amount`: `x` is not a decimal
/// number`. Keys the columns do not name are left out.
pub fn batch_from_json(
    columns: &[Column],
    value: &Value,
    writer: &mut BatchWriter,
) -> Result<(), FormatError> {
    let one;
    let rows = match value {
        Value::Array(rows) => rows.as_slice(),
        Value::Object(_) => {
            one = [value.clone()];
            &one[..]
        }
        other => {
            return Err(FormatError::new(
                "records",
                format!(
                    "the document is {}, not rows (an array of objects)",
                    crate::json::kind(other)
                ),
            ));
        }
    };
    for row in rows {
        let number = writer.rows() + 1;
        let Value::Object(fields) = row else {
            return Err(FormatError::new(
                "records",
                format!("row {number} is {}, not an object", crate::json::kind(row)),
            ));
        };
        for column in columns {
            let value = fields.get(&column.name).unwrap_or(&Value::Null);
            let cell = cell_from_json(column.kind, value).map_err(|message| {
                FormatError::new(
                    "records",
                    format!("row {number}, column `{}`: {message}", column.name),
                )
            })?;
            cell.write(writer);
        }
        writer.end_row();
    }
    Ok(())
}

/// The typed cells of every row of a batch, row by row; the error names the row (from 1) and
/// the column.
pub fn typed_rows<'d>(
    columns: &'d [Column],
    data: &'d [u8],
) -> impl Iterator<Item = Result<Vec<Cell<'d>>, FormatError>> + 'd {
    records::lines(data).enumerate().map(move |(index, line)| {
        let mut cells = Vec::with_capacity(columns.len());
        let mut fields = records::fields(line);
        for column in columns {
            let field = fields.next().ok_or_else(|| {
                FormatError::new(
                    "records",
                    format!("row {} has fewer fields than columns", index + 1),
                )
            })?;
            let cell = parse_field(column.kind, field).map_err(|message| {
                FormatError::new(
                    "records",
                    format!("row {}, column `{}`: {message}", index + 1, column.name),
                )
            })?;
            cells.push(cell);
        }
        Ok(cells)
    })
}

/// The rows of a batch as JSON objects, keys in column order, for JSON and NDJSON.
pub(crate) struct JsonRow<'a> {
    pub(crate) columns: &'a [Column],
    pub(crate) cells: &'a [Cell<'a>],
}

impl serde::Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.columns.len()))?;
        for (column, cell) in self.columns.iter().zip(self.cells) {
            map.serialize_entry(&column.name, &cell.to_json())?;
        }
        map.end()
    }
}

/// A row as a JSON object (keys sorted: for formats that go through [`Value`]).
pub(crate) fn json_object(columns: &[Column], cells: &[Cell<'_>]) -> Value {
    let mut object = Map::new();
    for (column, cell) in columns.iter().zip(cells) {
        object.insert(column.name.clone(), cell.to_json());
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cell(kind: ColumnType, text: &str) -> Result<Cell<'_>, String> {
        parse_text(kind, Cow::Borrowed(text))
    }

    #[test]
    fn fields_parse_by_their_column_type() {
        assert_eq!(cell(ColumnType::Boolean, "t"), Ok(Cell::Boolean(true)));
        assert_eq!(cell(ColumnType::Integer, "-42"), Ok(Cell::Integer(-42)));
        assert_eq!(
            cell(ColumnType::Float, "Infinity"),
            Ok(Cell::Float(f64::INFINITY))
        );
        assert_eq!(
            cell(ColumnType::Numeric, "12345678901234567890.123456789"),
            Ok(Cell::Numeric("12345678901234567890.123456789".into()))
        );
        let at = cell(ColumnType::Timestamptz, "2024-05-31 12:00:00.5+02").unwrap();
        assert_eq!(at.to_json(), json!("2024-05-31T10:00:00.500Z"));
        let at = cell(ColumnType::Timestamptz, "2024-05-31T10:00:00Z").unwrap();
        assert_eq!(at.to_json(), json!("2024-05-31T10:00:00Z"));
        assert_eq!(
            cell(ColumnType::Bytes, "\\x00ff"),
            Ok(Cell::Bytes(vec![0, 255]))
        );
        assert!(cell(ColumnType::Uuid, "0190e2c8-7a5b-7cc3-8f7e-3c5a1b2c3d4e").is_ok());
    }

    #[test]
    fn fields_that_do_not_fit_say_why() {
        assert_eq!(
            cell(ColumnType::Integer, "12.5").unwrap_err(),
            "`12.5` is not a 64-bit integer"
        );
        assert!(cell(ColumnType::Numeric, "1.2.3").is_err());
        assert!(cell(ColumnType::Numeric, "e5").is_err());
        assert!(cell(ColumnType::Timestamptz, "2024-05-31 12:00:00").is_err());
        assert!(cell(ColumnType::Date, "31.05.2024").is_err());
        assert!(cell(ColumnType::Json, "{").is_err());
        assert!(cell(ColumnType::Uuid, "nope").is_err());
        assert!(cell(ColumnType::Bytes, "\\x0").is_err());
    }

    #[test]
    fn cells_write_back_in_the_text_form() {
        let columns = vec![
            Column::new("b", ColumnType::Boolean),
            Column::new("f", ColumnType::Float),
            Column::new("t", ColumnType::Timestamptz),
            Column::new("x", ColumnType::Bytes),
        ];
        let mut writer = BatchWriter::new(columns.clone());
        for (column, text) in columns
            .iter()
            .zip(["f", "1.5", "2024-01-01 00:00:00+01", "\\x0a"])
        {
            cell(column.kind, text).unwrap().write(&mut writer);
        }
        writer.end_row();
        let batch = records::read(&writer.finish()).unwrap();
        assert_eq!(
            std::str::from_utf8(&batch.data).unwrap(),
            "f\t1.5\t2023-12-31 23:00:00+00\t\\\\x0a\n"
        );
    }

    #[test]
    fn json_values_fill_declared_columns_or_name_row_and_column() {
        let columns = vec![
            Column::new("id", ColumnType::Integer),
            Column::new("amount", ColumnType::Numeric),
            Column::new("tags", ColumnType::Json),
        ];
        let mut writer = BatchWriter::new(columns.clone());
        batch_from_json(
            &columns,
            &json!([{ "id": 1, "amount": "12.50", "tags": ["a"] }, { "id": "2", "other": 1 }]),
            &mut writer,
        )
        .unwrap();
        let batch = records::read(&writer.finish()).unwrap();
        assert_eq!(
            std::str::from_utf8(&batch.data).unwrap(),
            "1\t12.50\t[\"a\"]\n2\t\\N\t\\N\n"
        );

        let mut writer = BatchWriter::new(columns.clone());
        let error = batch_from_json(
            &columns,
            &json!([{ "id": 1 }, { "id": 2, "amount": "lots" }]),
            &mut writer,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "records: row 2, column `amount`: `lots` is not a decimal number"
        );
        let error =
            batch_from_json(&columns, &json!([{ "id": { "a": 1 } }]), &mut writer).unwrap_err();
        assert!(
            error
                .message
                .contains("an object does not fit the column's type `integer`"),
            "{error}"
        );
        let error = batch_from_json(&columns, &json!("x"), &mut writer).unwrap_err();
        assert!(error.message.contains("not rows"), "{error}");
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono() {
        for text in [
            "2024-05-31 12:00:00+02",
            "2024-05-31T12:00:00.5Z",
            "2024-05-31 12:00:00.123456-05:30",
            "2024-05-31 12:00:00+0130",
            "2024-02-29 23:59:59.999999999+00",
        ] {
            let slow = DateTime::parse_from_str(
                &text.replacen('T', " ", 1).replace('Z', "+00"),
                "%Y-%m-%d %H:%M:%S%.f%#z",
            )
            .unwrap()
            .with_timezone(&Utc);
            assert_eq!(parse_timestamptz(text), Some(slow), "{text}");
        }
        assert_eq!(parse_timestamptz("2024-02-30 12:00:00+00"), None);
        assert_eq!(parse_timestamptz("2024-05-31 12:00:00+2"), None);
        assert!(parse_timestamp("2024-05-31 12:00:00+02").is_none());
        let at = parse_timestamp("2024-05-31 12:00:00.250").unwrap();
        assert_eq!(timestamp_text(&at), "2024-05-31 12:00:00.25");
        assert_eq!(
            timestamp_text(&parse_timestamp("0999-01-02T03:04:05").unwrap()),
            "0999-01-02 03:04:05"
        );
    }

    /// A batch written as Parquet, xlsx, CSV or NDJSON and decoded with its own columns is the
    /// same batch, field for field.
    #[test]
    fn batches_survive_a_round_trip_through_every_record_format() {
        use crate::{Codec, CodecConfig, FormatName};
        let columns = vec![
            Column::new("id", ColumnType::Integer),
            Column::new("amount", ColumnType::Numeric),
            Column::new("at", ColumnType::Timestamptz),
            Column::new("local", ColumnType::Timestamp),
            Column::new("day", ColumnType::Date),
            Column::new("ok", ColumnType::Boolean),
            Column::new("note", ColumnType::Text),
        ];
        let mut writer = BatchWriter::new(columns.clone());
        for text in [
            [
                "1",
                "12345678901234567890.125",
                "2024-05-31 10:00:00.123456+00",
                "2024-05-31 12:00:00",
                "2024-05-31",
                "t",
                "tab\there",
            ],
            [
                "-2",
                "0.500",
                "1999-12-31 23:59:59+00",
                "2000-01-01 00:00:00.5",
                "1970-01-01",
                "f",
                "",
            ],
        ] {
            for (column, text) in columns.iter().zip(text) {
                parse_text(column.kind, Cow::Borrowed(text))
                    .unwrap()
                    .write(&mut writer);
            }
            writer.end_row();
        }
        for _ in 0..columns.len() {
            writer.null();
        }
        writer.end_row();
        let original = records::read(&writer.finish()).unwrap();
        let sandbox =
            ferry_core::sandbox::Sandbox::within(std::path::Path::new("/nonexistent"), "");
        for format in [
            FormatName::Parquet,
            FormatName::Ndjson,
            FormatName::Json,
            FormatName::Csv,
        ] {
            let codec = Codec::build(&CodecConfig::new(format), &sandbox).unwrap();
            let bytes = codec.encode_records(&columns, &original.data).unwrap();
            let mut back = BatchWriter::new(columns.clone());
            codec.decode_records(&bytes, &mut back).unwrap();
            let back = records::read(&back.finish()).unwrap();
            let (expected, actual) = (records::rows(&original.data), records::rows(&back.data));
            if format == FormatName::Csv {
                // CSV has no NULL: the last row's text is empty, not missing.
                assert_eq!(actual[..2], expected[..2], "{format}");
                assert_eq!(actual[2][6].as_deref(), Some(""), "{format}");
            } else {
                assert_eq!(actual, expected, "{format}");
            }
        }
    }

    #[test]
    fn decimals_are_recognised() {
        for text in ["1", "-1.50", ".5", "5.", "1e-3", "NaN", "+3"] {
            assert!(is_decimal(text), "{text}");
        }
        for text in ["", ".", "1..2", "1e", "x", "1 2"] {
            assert!(!is_decimal(text), "{text}");
        }
    }
}
