//! Column mapping and type conversion for the pullers that read records (`table`, `http`):
//! which source field becomes which column, and how its value is written in PostgreSQL's text
//! form for the column's type (see [`ferry_core::records`]).
//!
//! ```yaml
//! columns:
//!   - name: customer_id
//!     from: "Customer No"
//!     type: integer
//!   - name: amount
//!     type: numeric
//!     decimal: ","
//! ```
//!
//! Conversion is on the path of every row of a bulk load, so it avoids allocating: a value
//! already in PostgreSQL's form is written as it is, others go through one reused scratch
//! string.

use std::fmt::{self, Write as _};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use ferry_core::BuildError;
use ferry_core::records::{self, BatchWriter, Column, ColumnType, Modifier};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One entry of a puller's `columns:` list, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Name of the target column. Required.
    pub name: String,
    /// The source field: a CSV header name or, for files without a header, a 1-based column
    /// number (`3`) or an Excel column letter (`C`); in JSON a field name or a JSON pointer
    /// (`/customer/id`). Default: `name`.
    #[serde(default, deserialize_with = "name_or_number")]
    pub from: Option<String>,
    /// The column's type: `boolean`, `integer`, `float`, `numeric`, `text`, `date`, `time`,
    /// `timestamp`, `timestamptz`, `json`, `bytes` or `uuid`; or one with a type modifier,
    /// which a pusher creating the table declares: `numeric(12,2)`, `numeric(12)`,
    /// `varchar(8)`, `char(2)` (text), `timestamp(3)`, `timestamptz(3)`, `time(3)`.
    /// Default `text`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Input formats of a `date`, `time`, `timestamp` or `timestamptz` column (chrono's
    /// `strftime` syntax, e.g. `%d.%m.%Y`), tried in order; they replace the defaults. Default
    /// for dates `%Y-%m-%d`, `%d.%m.%Y`, `%m/%d/%Y`; timestamps also accept these with a time
    /// (`T` or space, seconds and fractions optional); `timestamptz` values without an offset
    /// are UTC.
    #[serde(default)]
    pub formats: Option<Vec<String>>,
    /// Decimal separator of an `integer`, `float` or `numeric` column: `.` or `,`. Default
    /// `.`. Thousands separators (space, `'`, and the other of `.` and `,`) are dropped when
    /// they group digits by three.
    #[serde(default)]
    pub decimal: Option<String>,
    /// What an empty value becomes: `null` (the default) or, for `text` columns only, `keep`
    /// (an empty string).
    #[serde(default)]
    pub empty: Option<Empty>,
}

/// What an empty value becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Empty {
    /// NULL.
    #[default]
    Null,
    /// An empty string (`text` columns only).
    Keep,
}

/// `from: 3` and `from: "Customer No"` alike, as a string.
fn name_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(u64),
    }
    Ok(Some(match NameOrNumber::deserialize(deserializer)? {
        NameOrNumber::Name(name) => name,
        NameOrNumber::Number(number) => number.to_string(),
    }))
}

/// A validated `columns:` list.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// `None`: no `columns:`, every source field becomes a `text` column named as in the source.
    columns: Option<Vec<MappedColumn>>,
}

/// One target column and where its value comes from.
#[derive(Clone, Debug)]
struct MappedColumn {
    name: String,
    from: String,
    converter: Converter,
}

impl Mapping {
    /// Validates a puller's `columns:`; errors carry the key path (`columns.2.type`).
    pub fn validate(columns: Option<Vec<ColumnConfig>>) -> Result<Mapping, BuildError> {
        let Some(columns) = columns else {
            return Ok(Mapping { columns: None });
        };
        if columns.is_empty() {
            return Err(BuildError::at(
                "columns",
                "the list is empty; leave `columns` out to take every source field as text",
            ));
        }
        let mut mapped: Vec<MappedColumn> = Vec::with_capacity(columns.len());
        for (index, config) in columns.into_iter().enumerate() {
            let at = |key: &str, message: String| BuildError {
                path: vec!["columns".into(), index.to_string(), key.into()],
                message,
                within: None,
            };
            if config.name.is_empty() {
                return Err(at("name", "the column name is empty".into()));
            }
            if mapped.iter().any(|column| column.name == config.name) {
                return Err(at(
                    "name",
                    format!("column `{}` is listed twice", config.name),
                ));
            }
            let (kind, modifier) = match &config.kind {
                None => (ColumnType::Text, None),
                Some(kind) => records::parse_type(kind).map_err(|e| at("type", e))?,
            };
            let decimal = match config.decimal.as_deref() {
                None | Some(".") => b'.',
                Some(",") => b',',
                Some(other) => {
                    return Err(at(
                        "decimal",
                        format!("`{other}` is not a decimal separator; valid are `.` and `,`"),
                    ));
                }
            };
            if config.decimal.is_some() && !is_number(kind) {
                return Err(at(
                    "decimal",
                    format!("only integer, float and numeric columns have one, not {kind}"),
                ));
            }
            let formats = match config.formats {
                None => default_formats(kind),
                Some(_) if !is_temporal(kind) => {
                    return Err(at(
                        "formats",
                        format!(
                            "only date, time, timestamp and timestamptz columns have formats, \
                             not {kind}"
                        ),
                    ));
                }
                Some(formats) if formats.is_empty() => {
                    return Err(at(
                        "formats",
                        "the list is empty; leave it out for the defaults".into(),
                    ));
                }
                Some(formats) => {
                    for format in &formats {
                        check_format(format).map_err(|e| at("formats", e))?;
                    }
                    formats.iter().map(|f| TimeFormat::new(f)).collect()
                }
            };
            let keep_empty = config.empty == Some(Empty::Keep);
            if keep_empty && kind != ColumnType::Text {
                return Err(at(
                    "empty",
                    format!("`keep` is for text columns; an empty {kind} can only be null"),
                ));
            }
            let from = config.from.unwrap_or_else(|| config.name.clone());
            if from.is_empty() {
                return Err(at("from", "the source field is empty".into()));
            }
            mapped.push(MappedColumn {
                name: config.name,
                from,
                converter: Converter {
                    kind,
                    modifier,
                    formats,
                    decimal,
                    keep_empty,
                },
            });
        }
        Ok(Mapping {
            columns: Some(mapped),
        })
    }

    /// Whether there is no `columns:` list: every source field becomes a text column.
    pub fn is_default(&self) -> bool {
        self.columns.is_none()
    }

    /// The mapped columns, for a source without any field (an empty file); none without
    /// `columns:`.
    pub fn columns(&self) -> Vec<Column> {
        self.columns
            .iter()
            .flatten()
            .map(|c| c.converter.column(&c.name))
            .collect()
    }

    /// Plans a table whose fields are found by position: a CSV file or a sheet. `header` is
    /// the header row when there is one; `width` the number of fields of a row.
    ///
    /// With a header, `from` names a header field; a `from` that is no header name but a column
    /// number or letter takes that column. Without a header, `from` must be a number or letter.
    pub fn plan_tabular(
        &self,
        header: Option<&[String]>,
        width: usize,
    ) -> Result<TabularPlan, String> {
        let Some(columns) = &self.columns else {
            let mut fields = Vec::with_capacity(width);
            for index in 0..width {
                let name = match header.and_then(|h| h.get(index)) {
                    Some(name) if !name.is_empty() => name.clone(),
                    _ => format!("column_{}", index + 1),
                };
                if fields.iter().any(|f: &PlannedField| f.name == name) {
                    return Err(format!(
                        "the header names column `{name}` twice; name them with `columns:`"
                    ));
                }
                fields.push(PlannedField {
                    name,
                    index: Some(index),
                    converter: Converter::text(),
                });
            }
            return Ok(TabularPlan { fields });
        };
        let mut fields = Vec::with_capacity(columns.len());
        for column in columns {
            let by_name = header.and_then(|h| h.iter().position(|name| *name == column.from));
            let index = match by_name.or_else(|| column_position(&column.from)) {
                Some(index) => index,
                None => {
                    return Err(match header {
                        Some(header) => format!(
                            "column {}: the header has no field `{}` (fields: {})",
                            column.name,
                            column.from,
                            header.join(", ")
                        ),
                        None => format!(
                            "column {}: `from: {}` needs a header; without one use a column \
                             number (1) or letter (A)",
                            column.name, column.from
                        ),
                    });
                }
            };
            // With a header, a column beyond it is simply empty (a spreadsheet column without
            // any value); without one, every row has `width` fields.
            if index >= width && header.is_none() {
                return Err(format!(
                    "column {}: `from: {}` is beyond the {width} fields of the rows",
                    column.name, column.from
                ));
            }
            fields.push(PlannedField {
                name: column.name.clone(),
                index: Some(index),
                converter: column.converter.clone(),
            });
        }
        Ok(TabularPlan { fields })
    }

    /// Plans reading JSON records; without `columns:`, the fields of `first` (the first record)
    /// become text columns, in their order.
    pub fn plan_json(&self, first: Option<&Record>) -> JsonPlan {
        let Some(columns) = &self.columns else {
            let fields = first
                .map(|record| {
                    let mut fields: Vec<JsonField> = Vec::new();
                    for (key, _) in &record.fields {
                        if fields.iter().any(|field| field.name == *key) {
                            continue;
                        }
                        fields.push(JsonField {
                            name: key.clone(),
                            source: JsonSource::Key(key.clone()),
                            converter: Converter::text(),
                        });
                    }
                    fields
                })
                .unwrap_or_default();
            return JsonPlan { fields };
        };
        let fields = columns
            .iter()
            .map(|column| JsonField {
                name: column.name.clone(),
                source: JsonSource::new(&column.from),
                converter: column.converter.clone(),
            })
            .collect();
        JsonPlan { fields }
    }

    /// Whether a JSON `from` is a valid pointer; checked at build time.
    pub fn check_json_sources(&self) -> Result<(), BuildError> {
        for (index, column) in self.columns.iter().flatten().enumerate() {
            if column.from.starts_with('/') {
                parse_pointer(&column.from).map_err(|message| BuildError {
                    path: vec!["columns".into(), index.to_string(), "from".into()],
                    message,
                    within: None,
                })?;
            }
        }
        Ok(())
    }
}

/// The 0-based column of `from` written as a 1-based number (`3`) or an Excel letter (`C`,
/// `AA`).
fn column_position(from: &str) -> Option<usize> {
    if let Ok(number) = from.parse::<usize>() {
        return number.checked_sub(1);
    }
    if from.is_empty() || from.len() > 3 || !from.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut number = 0usize;
    for byte in from.bytes() {
        number = number * 26 + usize::from(byte - b'A' + 1);
    }
    Some(number - 1)
}

/// How the columns of one file or sheet are filled from its fields.
#[derive(Clone, Debug)]
pub struct TabularPlan {
    pub fields: Vec<PlannedField>,
}

/// One column of a [`TabularPlan`].
#[derive(Clone, Debug)]
pub struct PlannedField {
    /// Target column name.
    pub name: String,
    /// The 0-based source field; `None`: always empty.
    pub index: Option<usize>,
    pub converter: Converter,
}

impl TabularPlan {
    /// The batch columns.
    pub fn columns(&self) -> Vec<Column> {
        self.fields
            .iter()
            .map(|f| f.converter.column(&f.name))
            .collect()
    }
}

/// How the columns are filled from JSON records.
#[derive(Clone, Debug)]
pub struct JsonPlan {
    fields: Vec<JsonField>,
}

#[derive(Clone, Debug)]
struct JsonField {
    name: String,
    source: JsonSource,
    converter: Converter,
}

/// Where a column's value is in a record.
#[derive(Clone, Debug)]
enum JsonSource {
    /// A top-level field.
    Key(String),
    /// A JSON pointer: its first segment (unescaped) and the rest as a pointer (`/b/c` or ``).
    Pointer { first: String, rest: String },
}

impl JsonSource {
    fn new(from: &str) -> JsonSource {
        if !from.starts_with('/') {
            return JsonSource::Key(from.to_string());
        }
        let without_slash = &from[1..];
        let (first, rest) = match without_slash.find('/') {
            Some(slash) => (&without_slash[..slash], &without_slash[slash..]),
            None => (without_slash, ""),
        };
        JsonSource::Pointer {
            first: unescape_segment(first),
            rest: rest.to_string(),
        }
    }

    fn find<'a>(&self, record: &'a Record) -> Option<&'a Value> {
        match self {
            JsonSource::Key(key) => record.get(key),
            JsonSource::Pointer { first, rest } => record.get(first)?.pointer(rest),
        }
    }
}

impl JsonPlan {
    /// The batch columns.
    pub fn columns(&self) -> Vec<Column> {
        self.fields
            .iter()
            .map(|f| f.converter.column(&f.name))
            .collect()
    }

    /// Writes one record's fields (the caller ends the row); a missing field is NULL. The
    /// error names the column.
    pub fn write_row(
        &self,
        record: &Record,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Result<(), String> {
        for field in &self.fields {
            let value = field.source.find(record).unwrap_or(&Value::Null);
            field
                .converter
                .write_json(value, out, scratch)
                .map_err(|error| format!("column {}: {error}", field.name))?;
        }
        Ok(())
    }
}

/// A value from a source that has types of its own (JSON, a spreadsheet cell).
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    Null,
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A date and time (a spreadsheet date cell).
    DateTime(NaiveDateTime),
    /// A JSON array or object.
    Json(&'a Value),
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Null => f.write_str("null"),
            Field::Text(text) => write!(f, "{:?}", shorten(text)),
            Field::Bool(value) => write!(f, "{value}"),
            Field::Int(value) => write!(f, "{value}"),
            Field::Float(value) => write!(f, "{value}"),
            Field::DateTime(value) => write!(f, "{value}"),
            Field::Json(value) => f.write_str(shorten(&value.to_string())),
        }
    }
}

/// At most 60 characters of a value, for error messages.
fn shorten(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Turns source values into one column type's PostgreSQL text form.
#[derive(Clone, Debug)]
pub struct Converter {
    kind: ColumnType,
    /// The declared modifier (`numeric(12,2)`), passed on in the batch header.
    modifier: Option<Modifier>,
    /// Input formats of temporal columns, tried in order.
    formats: Vec<TimeFormat>,
    /// `.` or `,`.
    decimal: u8,
    /// An empty text stays an empty string instead of NULL.
    keep_empty: bool,
}

/// An input format of a temporal column.
#[derive(Clone, Debug)]
struct TimeFormat {
    /// As written, for messages and chrono.
    text: String,
    /// The ISO forms, parsed by hand: several times faster than chrono's general parser on
    /// the most common case.
    iso: Iso,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Iso {
    /// Not an ISO form: chrono parses it.
    No,
    /// `%Y-%m-%d`.
    Date,
    /// `%Y-%m-%d %H:%M:%S%.f` or `%Y-%m-%dT%H:%M:%S%.f` (either separator is taken).
    Timestamp,
}

impl TimeFormat {
    fn new(text: &str) -> TimeFormat {
        let iso = match text {
            "%Y-%m-%d" => Iso::Date,
            "%Y-%m-%d %H:%M:%S%.f" | "%Y-%m-%dT%H:%M:%S%.f" => Iso::Timestamp,
            _ => Iso::No,
        };
        TimeFormat {
            text: text.to_string(),
            iso,
        }
    }
}

const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y"];

const TIMESTAMP_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%d.%m.%Y %H:%M:%S%.f",
    "%d.%m.%Y %H:%M",
    "%m/%d/%Y %H:%M:%S%.f",
    "%m/%d/%Y %H:%M",
    "%Y-%m-%d",
    "%d.%m.%Y",
    "%m/%d/%Y",
];

/// Tried before [`TIMESTAMP_FORMATS`] for `timestamptz`; `%#z` takes `Z`, `+02`, `+0200` and
/// `+02:00`.
const OFFSET_FORMATS: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"];

const TIME_FORMATS: &[&str] = &["%H:%M:%S%.f", "%H:%M", "%I:%M:%S %p", "%I:%M %p"];

fn default_formats(kind: ColumnType) -> Vec<TimeFormat> {
    let formats: Vec<&str> = match kind {
        ColumnType::Date => DATE_FORMATS.to_vec(),
        ColumnType::Time => TIME_FORMATS.to_vec(),
        ColumnType::Timestamp => TIMESTAMP_FORMATS.to_vec(),
        ColumnType::Timestamptz => OFFSET_FORMATS
            .iter()
            .chain(TIMESTAMP_FORMATS)
            .copied()
            .collect(),
        _ => Vec::new(),
    };
    formats.into_iter().map(TimeFormat::new).collect()
}

/// Whether chrono understands `format`.
fn check_format(format: &str) -> Result<(), String> {
    if format.is_empty() {
        return Err("a format is empty".into());
    }
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!(
            "`{format}` is not a valid format (chrono strftime syntax, e.g. `%d.%m.%Y`)"
        ));
    }
    Ok(())
}

fn is_number(kind: ColumnType) -> bool {
    matches!(
        kind,
        ColumnType::Integer | ColumnType::Float | ColumnType::Numeric
    )
}

fn is_temporal(kind: ColumnType) -> bool {
    matches!(
        kind,
        ColumnType::Date | ColumnType::Time | ColumnType::Timestamp | ColumnType::Timestamptz
    )
}

impl Converter {
    /// Text as it is; empty is NULL.
    pub fn text() -> Converter {
        Converter {
            kind: ColumnType::Text,
            modifier: None,
            formats: Vec::new(),
            decimal: b'.',
            keep_empty: false,
        }
    }

    /// The column type it writes.
    pub fn kind(&self) -> ColumnType {
        self.kind
    }

    /// The batch column `name` it fills, with the declared modifier.
    pub fn column(&self, name: &str) -> Column {
        Column::new(name, self.kind).with_modifier(self.modifier)
    }

    /// Writes a value given as text (a CSV field). `scratch` is reused between calls to avoid
    /// allocating. The error says what is wrong with the value, e.g.
    /// `"12,3x" is not a numeric`.
    pub fn write_str(
        &self,
        value: &str,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Result<(), String> {
        if self.kind == ColumnType::Text {
            if value.is_empty() && !self.keep_empty {
                out.null();
            } else if needs_escape(value) {
                out.text(value);
            } else {
                // Most text needs no COPY escape; copying it whole is several times faster
                // than `text`'s byte-by-byte escaping.
                out.raw(value);
            }
            return Ok(());
        }
        let trimmed = value.trim();
        if trimmed.is_empty() {
            out.null();
            return Ok(());
        }
        let written = match self.kind {
            ColumnType::Text => unreachable!("handled above"),
            ColumnType::Boolean => parse_bool(trimmed).map(|b| out.raw(if b { "t" } else { "f" })),
            ColumnType::Integer => self.write_integer(trimmed, out, scratch),
            ColumnType::Float => self.write_float(trimmed, out, scratch),
            ColumnType::Numeric => self.write_numeric(trimmed, out, scratch),
            ColumnType::Date => self.write_date(trimmed, out, scratch),
            ColumnType::Time => self.write_time(trimmed, out, scratch),
            ColumnType::Timestamp => self.write_timestamp(trimmed, out, scratch),
            ColumnType::Timestamptz => self.write_timestamptz(trimmed, out, scratch),
            ColumnType::Json => match serde_json::from_str::<IgnoredAny>(trimmed) {
                Ok(_) => {
                    out.text(trimmed);
                    Some(())
                }
                Err(error) => return Err(format!("{:?} is not JSON: {error}", shorten(value))),
            },
            ColumnType::Bytes => write_bytes(value, out),
            ColumnType::Uuid => uuid::Uuid::try_parse(trimmed).ok().map(|uuid| {
                let mut buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
                out.raw(uuid.hyphenated().encode_lower(&mut buffer));
            }),
        };
        written.ok_or_else(|| self.not_a(Field::Text(value)))
    }

    /// Writes a value from a typed source.
    pub fn write(
        &self,
        field: Field<'_>,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Result<(), String> {
        let written = match (field, self.kind) {
            (Field::Null, _) => {
                out.null();
                Some(())
            }
            (Field::Text(text), _) => return self.write_str(text, out, scratch),
            (Field::Bool(value), ColumnType::Boolean) => {
                out.raw(if value { "t" } else { "f" });
                Some(())
            }
            (Field::Bool(value), ColumnType::Text | ColumnType::Json) => {
                out.raw(if value { "true" } else { "false" });
                Some(())
            }
            (Field::Int(value @ (0 | 1)), ColumnType::Boolean) => {
                out.raw(if value == 1 { "t" } else { "f" });
                Some(())
            }
            (
                Field::Int(value),
                ColumnType::Integer
                | ColumnType::Float
                | ColumnType::Numeric
                | ColumnType::Text
                | ColumnType::Json,
            ) => {
                scratch.clear();
                let _ = write!(scratch, "{value}");
                out.raw(scratch);
                Some(())
            }
            (Field::Float(value), ColumnType::Integer) => {
                // A whole number stored as a float (spreadsheets store every number so).
                let whole = value.fract() == 0.0 && value.abs() < 9.2e18;
                whole.then(|| {
                    scratch.clear();
                    let _ = write!(scratch, "{}", value as i64);
                    out.raw(scratch);
                })
            }
            (Field::Float(value), ColumnType::Float | ColumnType::Text) => {
                write_float_value(value, out, scratch);
                Some(())
            }
            (Field::Float(value), ColumnType::Numeric | ColumnType::Json) => value
                .is_finite()
                .then(|| write_float_value(value, out, scratch)),
            (Field::DateTime(value), kind) => self.write_datetime(value, kind, out, scratch),
            (Field::Json(value), ColumnType::Json | ColumnType::Text) => {
                scratch.clear();
                let _ = write!(scratch, "{value}");
                out.text(scratch);
                Some(())
            }
            _ => None,
        };
        written.ok_or_else(|| self.not_a(field))
    }

    /// Writes a JSON value.
    pub fn write_json(
        &self,
        value: &Value,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Result<(), String> {
        let field = match value {
            Value::Null => Field::Null,
            Value::Bool(value) => Field::Bool(*value),
            Value::String(text) => Field::Text(text),
            Value::Number(number) => match number.as_i64() {
                Some(integer) => Field::Int(integer),
                None if number.is_u64() => {
                    // Beyond i64: written as its digits, for numeric and text columns.
                    let digits = number.to_string();
                    return match self.kind {
                        ColumnType::Numeric | ColumnType::Text | ColumnType::Json => {
                            out.raw(&digits);
                            Ok(())
                        }
                        _ => Err(self.not_a(Field::Text(&digits))),
                    };
                }
                None => Field::Float(number.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Array(_) | Value::Object(_) => Field::Json(value),
        };
        // JSON values of a JSON column keep their JSON form: the string "a" is `"a"`.
        if self.kind == ColumnType::Json
            && let Field::Text(_) = field
        {
            scratch.clear();
            let _ = write!(scratch, "{value}");
            out.text(scratch);
            return Ok(());
        }
        self.write(field, out, scratch)
    }

    /// `"12,3x" is not a numeric`, and what would have been valid for temporal types.
    fn not_a(&self, field: Field<'_>) -> String {
        let what = match self.kind {
            ColumnType::Boolean => "a boolean (true/false, t/f, yes/no, y/n, 1/0)".to_string(),
            ColumnType::Integer => "an integer".into(),
            ColumnType::Float => "a float".into(),
            ColumnType::Numeric => "a numeric".into(),
            ColumnType::Bytes => "bytes (`\\x` and hex digits, or text)".into(),
            ColumnType::Uuid => "a uuid".into(),
            ColumnType::Text | ColumnType::Json => format!("a {} value", self.kind),
            ColumnType::Date
            | ColumnType::Time
            | ColumnType::Timestamp
            | ColumnType::Timestamptz => {
                let formats: Vec<&str> = self.formats.iter().map(|f| f.text.as_str()).collect();
                format!("a {} (formats: {})", self.kind, formats.join(", "))
            }
        };
        format!("{field} is not {what}")
    }

    fn write_integer(
        &self,
        value: &str,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Option<()> {
        if value.parse::<i64>().is_ok() {
            out.raw(value.strip_prefix('+').unwrap_or(value));
            return Some(());
        }
        let number = normalize_number(value, self.decimal, scratch)?;
        // A fraction of zeros (`12.00`) is still an integer; an exponent is not accepted.
        let whole = match number.split_once('.') {
            Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => whole,
            Some(_) => return None,
            None => number,
        };
        let valid = whole.parse::<i64>().is_ok();
        valid.then(|| out.raw(whole))
    }

    fn write_float(&self, value: &str, out: &mut BatchWriter, scratch: &mut String) -> Option<()> {
        if let Some(special) = special_float(value) {
            out.raw(special);
            return Some(());
        }
        let number = normalize_number(value, self.decimal, scratch)?;
        let finite = number.parse::<f64>().is_ok_and(f64::is_finite);
        finite.then(|| out.raw(number))
    }

    fn write_numeric(
        &self,
        value: &str,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Option<()> {
        if let Some(special) = special_float(value) {
            out.raw(special);
            return Some(());
        }
        let number = normalize_number(value, self.decimal, scratch)?;
        out.raw(number);
        Some(())
    }

    fn write_date(&self, value: &str, out: &mut BatchWriter, scratch: &mut String) -> Option<()> {
        for format in &self.formats {
            if format.iso == Iso::Date {
                if value.len() == 10 && iso_date(value.as_bytes()).is_some() {
                    out.raw(value);
                    return Some(());
                }
                continue;
            }
            let date = NaiveDate::parse_from_str(value, &format.text)
                .or_else(|_| NaiveDateTime::parse_from_str(value, &format.text).map(|t| t.date()));
            if let Ok(date) = date {
                scratch.clear();
                push_date(scratch, date)?;
                out.raw(scratch);
                return Some(());
            }
        }
        None
    }

    fn write_time(&self, value: &str, out: &mut BatchWriter, scratch: &mut String) -> Option<()> {
        for format in &self.formats {
            if let Ok(time) = NaiveTime::parse_from_str(value, &format.text) {
                scratch.clear();
                push_time(scratch, time);
                out.raw(scratch);
                return Some(());
            }
        }
        None
    }

    fn write_timestamp(
        &self,
        value: &str,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Option<()> {
        let timestamp = self.parse_naive(value)?;
        scratch.clear();
        push_timestamp(scratch, timestamp)?;
        out.raw(scratch);
        Some(())
    }

    fn write_timestamptz(
        &self,
        value: &str,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Option<()> {
        let mut utc = None;
        for format in &self.formats {
            if let Ok(instant) = DateTime::parse_from_str(value, &format.text) {
                utc = Some(instant.naive_utc());
                break;
            }
        }
        // Without an offset, values are UTC.
        let utc = match utc {
            Some(utc) => utc,
            None => self.parse_naive(value)?,
        };
        scratch.clear();
        push_timestamp(scratch, utc)?;
        scratch.push_str("+00");
        out.raw(scratch);
        Some(())
    }

    /// A date and time in one of the formats; a date alone is midnight.
    fn parse_naive(&self, value: &str) -> Option<NaiveDateTime> {
        for format in &self.formats {
            // Not the simple form (an offset, say): chrono decides.
            if format.iso == Iso::Timestamp
                && let Some(timestamp) = iso_timestamp(value.as_bytes())
            {
                return Some(timestamp);
            }
            if let Ok(timestamp) = NaiveDateTime::parse_from_str(value, &format.text) {
                return Some(timestamp);
            }
            if let Ok(date) = NaiveDate::parse_from_str(value, &format.text) {
                return Some(date.and_time(NaiveTime::MIN));
            }
        }
        None
    }

    fn write_datetime(
        &self,
        value: NaiveDateTime,
        kind: ColumnType,
        out: &mut BatchWriter,
        scratch: &mut String,
    ) -> Option<()> {
        scratch.clear();
        match kind {
            // A date cell with a time of day is not a date: refuse rather than drop the time.
            ColumnType::Date if value.time() == NaiveTime::MIN => push_date(scratch, value.date())?,
            ColumnType::Time => push_time(scratch, value.time()),
            ColumnType::Timestamp | ColumnType::Text => push_timestamp(scratch, value)?,
            ColumnType::Timestamptz => {
                push_timestamp(scratch, value)?;
                scratch.push_str("+00");
            }
            _ => return None,
        }
        out.raw(scratch);
        Some(())
    }
}

/// Whether `value` holds a byte COPY's text format escapes (backslash, tab, newline, carriage
/// return). Without an early exit, so that the compiler can check many bytes at once.
fn needs_escape(value: &str) -> bool {
    value.bytes().fold(false, |found, b| {
        found | matches!(b, b'\\' | b'\t' | b'\n' | b'\r')
    })
}

/// `true`/`false`, `t`/`f`, `yes`/`no`, `y`/`n`, `1`/`0`, in any case.
fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["true", "t", "yes", "y"];
    const FALSE: [&str; 4] = ["false", "f", "no", "n"];
    match value {
        "1" => return Some(true),
        "0" => return Some(false),
        _ => {}
    }
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

/// NaN and the infinities in PostgreSQL's spelling.
fn special_float(value: &str) -> Option<&'static str> {
    let unsigned = value.trim_start_matches(['+', '-']);
    if !unsigned.as_bytes().first()?.is_ascii_alphabetic() {
        return None;
    }
    let negative = value.starts_with('-');
    if unsigned.eq_ignore_ascii_case("nan") {
        Some("NaN")
    } else if unsigned.eq_ignore_ascii_case("infinity") || unsigned.eq_ignore_ascii_case("inf") {
        Some(if negative { "-Infinity" } else { "Infinity" })
    } else {
        None
    }
}

/// A float in PostgreSQL's text form.
fn write_float_value(value: f64, out: &mut BatchWriter, scratch: &mut String) {
    if value.is_nan() {
        out.raw("NaN");
    } else if value.is_infinite() {
        out.raw(if value > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        scratch.clear();
        let _ = write!(scratch, "{value}");
        out.raw(scratch);
    }
}

/// `\x` and hex digits are bytes as PostgreSQL writes them; any other text is its own bytes.
fn write_bytes(value: &str, out: &mut BatchWriter) -> Option<()> {
    if let Some(hex) = value.strip_prefix("\\x") {
        let valid = hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        // Written as text: COPY's escaping doubles the backslash, which is what bytea wants.
        return valid.then(|| out.text(value));
    }
    out.bytes(value.as_bytes());
    Some(())
}

/// The number in `value` in PostgreSQL's form (`-1234.5`, `1e3`): decimal separator `.`,
/// thousands separators dropped. `None` when it is not a number, or when a separator does not
/// group digits by three (with `decimal: "."`, `12,3` is a mistake, not 123).
fn normalize_number<'a>(value: &'a str, decimal: u8, scratch: &'a mut String) -> Option<&'a str> {
    let bytes = value.as_bytes();
    // The common case: already in PostgreSQL's form.
    let plain = bytes
        .iter()
        .all(|&b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'e' | b'E'))
        || (decimal == b'.'
            && bytes
                .iter()
                .all(|&b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')));
    if plain {
        return is_number_syntax(bytes).then_some(value.strip_prefix('+').unwrap_or(value));
    }
    let decimal = char::from(decimal);
    let thousands = if decimal == '.' { ',' } else { '.' };
    scratch.clear();
    let mut chars = value.chars().peekable();
    match chars.peek() {
        Some('-') => {
            scratch.push('-');
            chars.next();
        }
        Some('+') => {
            chars.next();
        }
        _ => {}
    }
    // The integer part, in groups separated by thousands separators.
    let mut group = 0;
    let mut groups = 0;
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            scratch.push(c);
            group += 1;
        } else if c == thousands || matches!(c, ' ' | '\'' | '\u{a0}' | '\u{202f}') {
            let valid = if groups == 0 {
                (1..=3).contains(&group)
            } else {
                group == 3
            };
            if !valid {
                return None;
            }
            groups += 1;
            group = 0;
        } else {
            break;
        }
        chars.next();
    }
    if groups > 0 && group != 3 {
        return None;
    }
    if chars.peek() == Some(&decimal) {
        chars.next();
        scratch.push('.');
        while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit()) {
            scratch.push(c);
            chars.next();
        }
    }
    if let Some(&e) = chars.peek().filter(|&&c| c == 'e' || c == 'E') {
        scratch.push(e);
        chars.next();
        for c in chars {
            scratch.push(c);
        }
    } else if chars.next().is_some() {
        return None;
    }
    is_number_syntax(scratch.as_bytes()).then_some(scratch.as_str())
}

/// `[+-]digits[.digits][e[+-]digits]`, with at least one digit before the exponent.
fn is_number_syntax(bytes: &[u8]) -> bool {
    let mut i = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut digits = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == bytes.len()
}

/// The value of ASCII digits.
fn digits(bytes: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some(value)
}

/// `YYYY-MM-DD`, from year 1 (PostgreSQL writes earlier years with `BC`).
fn iso_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4]).filter(|&year| year >= 1)?;
    NaiveDate::from_ymd_opt(year as i32, digits(&b[5..7])?, digits(&b[8..10])?)
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]`, with a space or `T`.
fn iso_timestamp(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = iso_date(&b[..10])?;
    let mut nanos = 0;
    if b.len() > 19 {
        let fraction = b[19..].strip_prefix(b".")?;
        if fraction.is_empty() || fraction.len() > 9 {
            return None;
        }
        nanos = digits(fraction)? * 10u32.pow(9 - fraction.len() as u32);
    }
    let time = NaiveTime::from_hms_nano_opt(
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
        nanos,
    )?;
    Some(date.and_time(time))
}

/// `2024-05-31`; `None` for years PostgreSQL writes with `BC`.
fn push_date(out: &mut String, date: NaiveDate) -> Option<()> {
    if date.year() < 1 {
        return None;
    }
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}",
        date.year(),
        date.month(),
        date.day()
    );
    Some(())
}

/// `12:00:00` or `12:00:00.25`: microseconds at most, as PostgreSQL keeps them.
fn push_time(out: &mut String, time: NaiveTime) {
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        time.hour(),
        time.minute(),
        time.second()
    );
    let micros = time.nanosecond() % 1_000_000_000 / 1_000;
    if micros != 0 {
        let start = out.len();
        let _ = write!(out, ".{micros:06}");
        let trimmed = out[start..].trim_end_matches('0').len();
        out.truncate(start + trimmed);
    }
}

fn push_timestamp(out: &mut String, timestamp: NaiveDateTime) -> Option<()> {
    push_date(out, timestamp.date())?;
    out.push(' ');
    push_time(out, timestamp.time());
    Some(())
}

// ---- JSON records ---------------------------------------------------------------------------

/// One JSON record (an object): its fields in the order they came, so that without `columns:`
/// the columns follow the first record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    fields: Vec<(String, Value)>,
}

impl Record {
    /// The value of a top-level field; the last one when a key repeats, as in `serde_json`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }
}

/// Deserializes one record, saying which when it is not an object.
struct RecordSeed {
    /// 1-based; 0 when the caller names the record itself.
    number: u64,
}

impl<'de> DeserializeSeed<'de> for RecordSeed {
    type Value = Record;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Record, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed {
    type Value = Record;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.number {
            0 => f.write_str("a JSON object"),
            number => write!(f, "record {number} to be a JSON object"),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.push((key, value));
        }
        Ok(Record { fields })
    }
}

/// Parses one record (a line of NDJSON). `number` is 1-based, for messages, or 0 when the
/// caller says where the record is.
pub fn parse_record(text: &str, number: u64) -> Result<Record, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let record = RecordSeed { number }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(record)
}

/// A JSON pointer (`/data/items`) split into its unescaped segments; `` is the whole document.
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "`{pointer}` is not a JSON pointer: it starts with `/` (`/data/items`), or is empty \
             for the top level"
        ));
    };
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        let mut chars = segment.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "`{pointer}` is not a JSON pointer: `~` must be followed by 0 or 1"
                ));
            }
        }
        segments.push(unescape_segment(segment));
    }
    Ok(segments)
}

/// A `serde_json` error without its ` at line 1 column 5`, for a caller that says where.
pub fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => format!("{bare} (column {})", error.column()),
        None => message,
    }
}

fn unescape_segment(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// Why reading JSON records failed.
#[derive(Debug)]
pub struct JsonError {
    /// With the position in the document where there is one.
    pub message: String,
    /// Set when reading failed rather than the document: worth a retry.
    pub io: Option<std::io::ErrorKind>,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Streams the records of the JSON array at `pointer` (segments from [`parse_pointer`]) in a
/// document, handing each to `each` without holding the others: memory stays at one record
/// however large the document. Everything around the array is skipped without being kept.
///
/// An error from `each` stops the reading and comes back with the position in the document.
pub fn json_records<'de, R, F>(reader: R, pointer: &[String], mut each: F) -> Result<(), JsonError>
where
    R: serde_json::de::Read<'de>,
    F: FnMut(Record) -> Result<(), String>,
{
    let mut deserializer = serde_json::Deserializer::new(reader);
    let mut found = false;
    let mut number = 0;
    let locate = Locate {
        path: pointer,
        each: &mut each,
        number: &mut number,
        found: &mut found,
    };
    let read = locate
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if let Err(error) = read {
        return Err(JsonError {
            io: error.io_error_kind(),
            message: error.to_string(),
        });
    }
    if !found {
        return Err(JsonError {
            message: format!("no value at `{}` in the document", pointer_text(pointer)),
            io: None,
        });
    }
    Ok(())
}

fn pointer_text(pointer: &[String]) -> String {
    pointer
        .iter()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// Walks down `path`, skipping everything else, then reads the array found there.
struct Locate<'a, F> {
    path: &'a [String],
    each: &'a mut F,
    number: &'a mut u64,
    found: &'a mut bool,
}

impl<'de, F: FnMut(Record) -> Result<(), String>> DeserializeSeed<'de> for Locate<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            *self.found = true;
            deserializer.deserialize_any(EachRecord {
                each: self.each,
                number: self.number,
            })
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de, F: FnMut(Record) -> Result<(), String>> Visitor<'de> for Locate<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !*self.found && key == self.path[0] {
                map.next_value_seed(Locate {
                    path: &self.path[1..],
                    each: &mut *self.each,
                    number: &mut *self.number,
                    found: &mut *self.found,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let wanted = self.path[0].parse::<usize>().ok();
        let mut index = 0;
        loop {
            let more = if Some(index) == wanted {
                seq.next_element_seed(Locate {
                    path: &self.path[1..],
                    each: &mut *self.each,
                    number: &mut *self.number,
                    found: &mut *self.found,
                })?
                .is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    // Scalars have nothing inside: the pointer finds nothing.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads the records of the array, one at a time.
struct EachRecord<'a, F> {
    each: &'a mut F,
    number: &'a mut u64,
}

impl<'de, F: FnMut(Record) -> Result<(), String>> Visitor<'de> for EachRecord<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let number = *self.number + 1;
            let Some(record) = seq.next_element_seed(RecordSeed { number })? else {
                return Ok(());
            };
            *self.number = number;
            (self.each)(record).map_err(de::Error::custom)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::records::{read, rows};
    use serde_json::json;

    use super::*;

    fn converter(config: Value) -> Converter {
        let mut config = config;
        config["name"] = json!("c");
        let config: ColumnConfig = serde_json::from_value(config).unwrap();
        let mapping = Mapping::validate(Some(vec![config])).unwrap();
        mapping.columns.unwrap().remove(0).converter
    }

    /// The text written for `value`, or the error.
    fn convert(config: Value, value: &str) -> Result<Option<String>, String> {
        let converter = converter(config);
        // A second column, so that a row is never an empty line (which `rows` skips).
        let columns = vec![
            Column::new("c", converter.kind),
            Column::new("x", ColumnType::Integer),
        ];
        let mut out = BatchWriter::new(columns);
        converter.write_str(value, &mut out, &mut String::new())?;
        out.raw("1");
        out.end_row();
        let batch = read(&out.finish()).unwrap();
        Ok(rows(&batch.data).remove(0).remove(0))
    }

    fn ok(config: Value, value: &str) -> String {
        convert(config, value).unwrap().unwrap()
    }

    #[test]
    fn numbers_drop_thousands_separators_and_take_the_decimal_separator() {
        let numeric = json!({ "type": "numeric" });
        assert_eq!(ok(numeric.clone(), "1234.50"), "1234.50");
        assert_eq!(ok(numeric.clone(), " -1,234,567.5 "), "-1234567.5");
        assert_eq!(ok(numeric.clone(), "1e3"), "1e3");
        assert_eq!(ok(numeric.clone(), "+.5"), ".5");
        assert_eq!(ok(numeric.clone(), "NaN"), "NaN");
        let comma = json!({ "type": "numeric", "decimal": "," });
        assert_eq!(ok(comma.clone(), "1.234,50"), "1234.50");
        assert_eq!(ok(comma.clone(), "1 234,5"), "1234.5");
        assert_eq!(ok(comma.clone(), "12,3"), "12.3");
        assert_eq!(ok(comma.clone(), "1'234'567"), "1234567");
        for bad in ["12,3x", "1,2", "12.34.5", "abc", "-", "1e", "1,2345.0"] {
            let error = convert(numeric.clone(), bad).unwrap_err();
            assert_eq!(error, format!("{bad:?} is not a numeric"));
        }
        assert!(convert(comma, "1.23,4").is_err());
        let float = json!({ "type": "float", "decimal": "," });
        assert_eq!(ok(float.clone(), "3,25"), "3.25");
        assert_eq!(ok(float.clone(), "-inf"), "-Infinity");
        assert!(convert(float, "1e999").is_err());
    }

    #[test]
    fn integers_reject_fractions() {
        let integer = json!({ "type": "integer" });
        assert_eq!(ok(integer.clone(), "42"), "42");
        assert_eq!(ok(integer.clone(), "+42"), "42");
        assert_eq!(ok(integer.clone(), "-1,000"), "-1000");
        assert_eq!(ok(integer.clone(), "12.00"), "12");
        for bad in ["12.5", "1e3", "x", "99999999999999999999"] {
            assert_eq!(
                convert(integer.clone(), bad).unwrap_err(),
                format!("{bad:?} is not an integer")
            );
        }
        assert_eq!(
            ok(json!({ "type": "integer", "decimal": "," }), "1.000"),
            "1000"
        );
    }

    #[test]
    fn booleans_accept_the_usual_words() {
        let boolean = json!({ "type": "boolean" });
        for (input, output) in [
            ("true", "t"),
            ("FALSE", "f"),
            ("t", "t"),
            ("F", "f"),
            ("Yes", "t"),
            ("no", "f"),
            ("1", "t"),
            ("0", "f"),
            ("y", "t"),
            ("N", "f"),
        ] {
            assert_eq!(ok(boolean.clone(), input), output, "{input}");
        }
        let error = convert(boolean, "maybe").unwrap_err();
        assert!(error.starts_with("\"maybe\" is not a boolean"), "{error}");
    }

    #[test]
    fn dates_and_times_take_the_formats_in_order() {
        let date = json!({ "type": "date" });
        assert_eq!(ok(date.clone(), "2024-05-31"), "2024-05-31");
        assert_eq!(ok(date.clone(), "31.05.2024"), "2024-05-31");
        assert_eq!(ok(date.clone(), "5/31/2024"), "2024-05-31");
        let error = convert(date.clone(), "2024-02-30").unwrap_err();
        assert_eq!(
            error,
            "\"2024-02-30\" is not a date (formats: %Y-%m-%d, %d.%m.%Y, %m/%d/%Y)"
        );
        let custom = json!({ "type": "date", "formats": ["%d/%m/%Y"] });
        assert_eq!(ok(custom.clone(), "31/05/2024"), "2024-05-31");
        assert!(convert(custom, "2024-05-31").is_err());
        assert!(convert(date.clone(), "0000-01-01").is_err());
        let from_timestamps = json!({ "type": "date", "formats": ["%Y-%m-%dT%H:%M:%S%.f"] });
        assert_eq!(ok(from_timestamps, "2024-05-31T10:00:00"), "2024-05-31");

        let timestamp = json!({ "type": "timestamp" });
        assert_eq!(
            ok(timestamp.clone(), "2024-05-31T12:00:00"),
            "2024-05-31 12:00:00"
        );
        assert_eq!(
            ok(timestamp.clone(), "2024-05-31 12:00:00.250"),
            "2024-05-31 12:00:00.25"
        );
        assert_eq!(
            ok(timestamp.clone(), "31.05.2024 08:15"),
            "2024-05-31 08:15:00"
        );
        assert_eq!(ok(timestamp.clone(), "05/31/2024"), "2024-05-31 00:00:00");
        let tz = json!({ "type": "timestamptz" });
        assert_eq!(
            ok(tz.clone(), "2024-05-31T12:00:00+02:00"),
            "2024-05-31 10:00:00+00"
        );
        assert_eq!(
            ok(tz.clone(), "2024-05-31T12:00:00Z"),
            "2024-05-31 12:00:00+00"
        );
        assert_eq!(ok(tz, "2024-05-31 12:00:00"), "2024-05-31 12:00:00+00");
        let time = json!({ "type": "time" });
        assert_eq!(ok(time.clone(), "08:15"), "08:15:00");
        assert_eq!(ok(time.clone(), "8:15:30.5"), "08:15:30.5");
        assert_eq!(ok(time, "8:15 PM"), "20:15:00");
    }

    #[test]
    fn empty_values_are_null_unless_kept() {
        assert_eq!(convert(json!({}), ""), Ok(None));
        assert_eq!(convert(json!({ "type": "integer" }), "  "), Ok(None));
        assert_eq!(
            convert(json!({ "empty": "keep" }), ""),
            Ok(Some(String::new()))
        );
        assert_eq!(ok(json!({}), " a\tb\n"), " a\tb\n");
    }

    #[test]
    fn other_types() {
        assert_eq!(
            ok(
                json!({ "type": "uuid" }),
                "{67E55044-10B1-426F-9247-BB680E5FE0C8}"
            ),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        assert!(convert(json!({ "type": "uuid" }), "nope").is_err());
        assert_eq!(ok(json!({ "type": "json" }), "{\"a\": 1}"), "{\"a\": 1}");
        assert!(
            convert(json!({ "type": "json" }), "{a")
                .unwrap_err()
                .contains("is not JSON")
        );
        assert_eq!(ok(json!({ "type": "bytes" }), "\\x0aff"), "\\x0aff");
        assert_eq!(ok(json!({ "type": "bytes" }), "AB"), "\\x4142");
    }

    #[test]
    fn typed_fields_convert_too() {
        let write = |config: Value, field: Field| {
            let converter = converter(config);
            let mut out = BatchWriter::new(vec![Column::new("c", converter.kind)]);
            converter.write(field, &mut out, &mut String::new())?;
            out.end_row();
            let batch = read(&out.finish()).unwrap();
            Ok::<_, String>(rows(&batch.data).remove(0).remove(0))
        };
        let noon = NaiveDate::from_ymd_opt(2024, 5, 31)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let midnight = noon.date().and_time(NaiveTime::MIN);
        let text = |s: &str| Ok(Some(s.to_string()));
        assert_eq!(
            write(json!({"type": "integer"}), Field::Float(3.0)),
            text("3")
        );
        assert!(write(json!({"type": "integer"}), Field::Float(3.5)).is_err());
        assert_eq!(
            write(json!({"type": "numeric"}), Field::Float(1234.5)),
            text("1234.5")
        );
        assert_eq!(write(json!({"type": "boolean"}), Field::Int(1)), text("t"));
        assert_eq!(
            write(json!({"type": "date"}), Field::DateTime(midnight)),
            text("2024-05-31")
        );
        assert!(write(json!({"type": "date"}), Field::DateTime(noon)).is_err());
        assert_eq!(
            write(json!({"type": "timestamp"}), Field::DateTime(noon)),
            text("2024-05-31 12:00:00")
        );
        let error = write(json!({"type": "date"}), Field::Bool(true)).unwrap_err();
        assert!(error.starts_with("true is not a date"), "{error}");
        let object = json!({"a": [1]});
        assert_eq!(write(json!({}), Field::Json(&object)), text("{\"a\":[1]}"));
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let error = |config: Value| {
            let configs: Vec<ColumnConfig> = serde_json::from_value(config).unwrap();
            let error = Mapping::validate(Some(configs)).unwrap_err();
            (error.path.join("."), error.message)
        };
        let (path, message) = error(json!([{ "name": "a" }, { "name": "b", "type": "varchar" }]));
        assert_eq!(path, "columns.1.type");
        assert!(message.contains("valid types are: boolean"), "{message}");
        assert_eq!(
            error(json!([{ "name": "a" }, { "name": "a" }])).0,
            "columns.1.name"
        );
        assert_eq!(error(json!([{ "name": "" }])).0, "columns.0.name");
        assert_eq!(
            error(json!([{ "name": "a", "decimal": ";" , "type": "numeric"}])).0,
            "columns.0.decimal"
        );
        assert_eq!(
            error(json!([{ "name": "a", "decimal": "," }])).0,
            "columns.0.decimal"
        );
        assert_eq!(
            error(json!([{ "name": "a", "formats": ["%d"] }])).0,
            "columns.0.formats"
        );
        assert_eq!(
            error(json!([{ "name": "a", "type": "date", "formats": ["%Q"] }])).0,
            "columns.0.formats"
        );
        assert_eq!(
            error(json!([{ "name": "a", "type": "integer", "empty": "keep" }])).0,
            "columns.0.empty"
        );
        assert_eq!(error(json!([])).0, "columns");
        let unknown = serde_json::from_value::<ColumnConfig>(json!({ "name": "a", "size": 1 }));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `size`")
        );
        let number: ColumnConfig =
            serde_json::from_value(json!({ "name": "a", "from": 3 })).unwrap();
        assert_eq!(number.from.as_deref(), Some("3"));
    }

    #[test]
    fn tabular_plans_find_fields_by_name_number_or_letter() {
        let configs: Vec<ColumnConfig> = serde_json::from_value(json!([
            { "name": "id", "from": "Customer No" },
            { "name": "third", "from": 3 },
            { "name": "c", "from": "C" },
        ]))
        .unwrap();
        let mapping = Mapping::validate(Some(configs)).unwrap();
        let header: Vec<String> = ["x", "Customer No", "z"].map(String::from).to_vec();
        let plan = mapping.plan_tabular(Some(&header), 3).unwrap();
        let indexes: Vec<_> = plan.fields.iter().map(|f| f.index).collect();
        assert_eq!(indexes, [Some(1), Some(2), Some(2)]);
        let error = mapping.plan_tabular(None, 3).unwrap_err();
        assert!(error.contains("needs a header"), "{error}");
        assert_eq!(column_position("AA"), Some(26));
        assert_eq!(column_position("0"), None);

        let plain = Mapping::validate(None).unwrap();
        let plan = plain.plan_tabular(None, 2).unwrap();
        let names: Vec<_> = plan.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["column_1", "column_2"]);
        let twice: Vec<String> = ["a", "a"].map(String::from).to_vec();
        assert!(plain.plan_tabular(Some(&twice), 2).is_err());
    }

    #[test]
    fn json_records_stream_from_the_pointer_in_order() {
        let document = br#"{"meta": {"skip": [1, 2, {"x": null}]},
            "data": {"items": [{"b": 1, "a": {"n": "x"}}, {"a": {"n": "y"}, "b": 2}]}, "z": 1}"#;
        let pointer = parse_pointer("/data/items").unwrap();
        let mut records = Vec::new();
        json_records(
            serde_json::de::SliceRead::new(document),
            &pointer,
            |record| {
                records.push(record);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(records.len(), 2);
        let keys: Vec<_> = records[0].fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"], "fields keep their order");

        let mapping = Mapping::validate(None).unwrap();
        let plan = mapping.plan_json(records.first());
        assert_eq!(plan.columns()[0].name, "b");
        let configs: Vec<ColumnConfig> =
            serde_json::from_value(json!([{ "name": "n", "from": "/a/n" }])).unwrap();
        let plan = Mapping::validate(Some(configs)).unwrap().plan_json(None);
        let mut out = BatchWriter::new(plan.columns());
        for record in &records {
            plan.write_row(record, &mut out, &mut String::new())
                .unwrap();
            out.end_row();
        }
        let batch = read(&out.finish()).unwrap();
        assert_eq!(
            rows(&batch.data),
            [[Some("x".to_string())], [Some("y".to_string())]]
        );

        let run = |document: &[u8], pointer: &str| {
            json_records(
                serde_json::de::SliceRead::new(document),
                &parse_pointer(pointer).unwrap(),
                |_| Ok(()),
            )
            .map_err(|error| error.message)
        };
        assert!(
            run(br#"{"a": 1}"#, "/data")
                .unwrap_err()
                .contains("no value at `/data`")
        );
        assert!(
            run(br#"{"data": 1}"#, "/data")
                .unwrap_err()
                .contains("an array of records")
        );
        assert!(
            run(br#"[1]"#, "")
                .unwrap_err()
                .contains("record 1 to be a JSON object")
        );
        assert!(run(br#"[{"a": 1}] x"#, "").is_err());
        assert!(run(br#"[[{"a":1}], [{"a":2}]]"#, "/1").is_ok());
        assert!(parse_pointer("data").is_err());
        assert!(parse_pointer("/a~2").is_err());
        assert_eq!(parse_pointer("/a~1b/~0").unwrap(), ["a/b", "~"]);
    }
}
