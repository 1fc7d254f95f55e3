//! Avro with a schema: object container files, single-object encoding and raw datums.
//!
//! The JSON form follows the schema: records are objects, unions are their value (no wrapper
//! naming the branch), enums their symbol, `bytes` and `fixed` base64 strings, decimals strings
//! of their digits (`"123.45"`), dates, times and timestamps ISO 8601 strings, durations
//! `{months, days, millis}`, NaN and the infinities the strings `NaN`, `Infinity`, `-Infinity`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

use apache_avro::schema::{Name, NamesRef, RecordSchema, ResolvedSchema, UnionSchema};
use apache_avro::types::Value as Avro;
use apache_avro::{Days, Decimal, Duration, Millis, Months, Schema};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Timelike, Utc};
use num_bigint::BigInt;
use serde_json::{Map, Value};

use crate::config::AvroEncoding;
use crate::error::{FormatError, Position, pointer_push, within_depth};
use crate::json::kind;
use crate::msgpack::float;

const AVRO: &str = "Avro";

/// The two bytes that start single-object encoding.
const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// A validated Avro configuration.
#[derive(Clone, Debug)]
pub(crate) struct AvroFormat {
    /// The configured schema; `None` only for containers, which carry their own.
    pub(crate) schema: Option<Schema>,
    pub(crate) encoding: AvroEncoding,
    /// The single-object header: magic and the schema's CRC-64-AVRO fingerprint.
    header: Vec<u8>,
    /// The container sync marker, derived from the schema so that encoding is deterministic.
    marker: [u8; 16],
}

impl AvroFormat {
    /// Checks that the schema's named types resolve, and prepares headers.
    pub(crate) fn new(schema: Option<Schema>, encoding: AvroEncoding) -> Result<Self, String> {
        let mut header = Vec::new();
        let mut marker = [0u8; 16];
        if let Some(schema) = &schema {
            ResolvedSchema::try_from(schema).map_err(|error| error.to_string())?;
            if let Some(name) = recursive_type(schema) {
                return Err(recursion_refused(&name));
            }
            header.extend(SINGLE_OBJECT_MAGIC);
            header.extend(
                schema
                    .fingerprint::<apache_avro::rabin::Rabin>()
                    .bytes
                    .iter(),
            );
            let digest = schema.fingerprint::<sha2::Sha256>().bytes;
            marker.copy_from_slice(&digest[..16]);
        }
        Ok(AvroFormat {
            schema,
            encoding,
            header,
            marker,
        })
    }

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        within_depth(AVRO, self.decode_any_depth(bytes)?)
    }

    fn decode_any_depth(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        match (self.encoding, &self.schema) {
            (AvroEncoding::Container, _) => self.decode_container(bytes),
            (AvroEncoding::SingleObject, Some(schema)) => {
                let Some(body) = bytes.strip_prefix(self.header.as_slice()) else {
                    return Err(self.header_error(bytes));
                };
                let value = decode_datum(schema, body, self.header.len())?;
                Ok(value)
            }
            (AvroEncoding::Raw, Some(schema)) => decode_datum(schema, bytes, 0),
            (_, None) => Err(FormatError::new(AVRO, "no `schema` configured")),
        }
    }

    fn decode_container(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        let reader = match &self.schema {
            Some(schema) => apache_avro::Reader::with_schema(schema, bytes),
            None => apache_avro::Reader::new(bytes),
        }
        .map_err(|error| {
            FormatError::at(
                AVRO,
                Position::Byte(0),
                format!("not a readable Avro container file: {error}"),
            )
        })?;
        // The file's schema says how its records are laid out, whatever the configured one:
        // a recursive one lets a datum nest deeper than any bound (issue 12).
        if let Some(name) = recursive_type(reader.writer_schema()) {
            return Err(FormatError::at(
                AVRO,
                Position::Byte(0),
                recursion_refused(&name),
            ));
        }
        // Records arrive resolved to the configured schema when there is one, else they are in
        // the file's own (which the reader owns, so it is copied out before reading).
        let schema = match &self.schema {
            Some(schema) => Cow::Borrowed(schema),
            None => Cow::Owned(reader.writer_schema().clone()),
        };
        let resolved = resolve(&schema)?;
        let names = resolved.get_names();
        let mut records = Vec::new();
        for (index, record) in reader.enumerate() {
            let at = Position::Record(index as u64 + 1);
            let record =
                record.map_err(|error| FormatError::at(AVRO, at.clone(), error.to_string()))?;
            let json = to_json(record, &schema, names)
                .map_err(|message| FormatError::at(AVRO, at.clone(), message))?;
            records.push(json);
        }
        Ok(Value::Array(records))
    }

    /// Why `bytes` does not start with this schema's single-object header.
    fn header_error(&self, bytes: &[u8]) -> FormatError {
        if bytes.len() < 2 || bytes[..2] != SINGLE_OBJECT_MAGIC {
            let found: Vec<String> = bytes.iter().take(2).map(|b| format!("{b:02X}")).collect();
            return FormatError::at(
                AVRO,
                Position::Byte(0),
                format!(
                    "not single-object encoding: it starts with C3 01, this starts with `{}`",
                    found.join(" ")
                ),
            );
        }
        if bytes.len() < self.header.len() {
            return FormatError::at(
                AVRO,
                Position::Byte(bytes.len() as u64),
                "the data ends inside the 10-byte single-object header",
            );
        }
        FormatError::at(
            AVRO,
            Position::Byte(2),
            format!(
                "written with another schema: its fingerprint is {}, the configured schema's is {}",
                hex(&bytes[2..10]),
                hex(&self.header[2..10])
            ),
        )
    }

    pub(crate) fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let Some(schema) = &self.schema else {
            return Err(FormatError::new(
                AVRO,
                "encoding needs a `schema`: a container carries the schema it was written with",
            ));
        };
        let resolved = resolve(schema)?;
        let names = resolved.get_names();
        match self.encoding {
            AvroEncoding::Container => {
                let Value::Array(items) = value else {
                    return Err(FormatError::at_path(
                        AVRO,
                        "",
                        format!(
                            "a container holds an array of records, found {}",
                            kind(value)
                        ),
                    ));
                };
                let mut out = container_header(schema, &self.marker)?;
                out.reserve(items.len() * 64);
                // The header is written here, not by the library, whose metadata map has no
                // stable order: the same records must give the same bytes.
                let mut writer = apache_avro::Writer::builder()
                    .schema(schema)
                    .writer(out)
                    .marker(self.marker)
                    .has_header(true)
                    .build();
                for (index, item) in items.iter().enumerate() {
                    let pointer = pointer_push("", &index.to_string());
                    let datum = from_json(item, schema, names, &pointer)?;
                    writer
                        .append(datum)
                        .map_err(|error| FormatError::at_path(AVRO, pointer, error.to_string()))?;
                }
                writer
                    .into_inner()
                    .map_err(|error| FormatError::new(AVRO, error.to_string()))
            }
            AvroEncoding::SingleObject | AvroEncoding::Raw => {
                let datum = from_json(value, schema, names, "")?;
                let body = apache_avro::to_avro_datum(schema, datum)
                    .map_err(|error| FormatError::at_path(AVRO, "", error.to_string()))?;
                if self.encoding == AvroEncoding::Raw {
                    return Ok(body);
                }
                let mut out = Vec::with_capacity(self.header.len() + body.len());
                out.extend_from_slice(&self.header);
                out.extend(body);
                Ok(out)
            }
        }
    }
}

/// A container file's header: magic, metadata (the schema as JSON and the `null` codec, in
/// that order) and the sync marker.
fn container_header(schema: &Schema, marker: &[u8; 16]) -> Result<Vec<u8>, FormatError> {
    let schema_json =
        serde_json::to_string(schema).map_err(|error| FormatError::new(AVRO, error.to_string()))?;
    let mut out = Vec::with_capacity(schema_json.len() + 64);
    out.extend_from_slice(b"Obj\x01");
    write_long(&mut out, 2);
    for (key, value) in [
        (&b"avro.schema"[..], schema_json.as_bytes()),
        (&b"avro.codec"[..], &b"null"[..]),
    ] {
        write_long(&mut out, key.len() as i64);
        out.extend_from_slice(key);
        write_long(&mut out, value.len() as i64);
        out.extend_from_slice(value);
    }
    write_long(&mut out, 0);
    out.extend_from_slice(marker);
    Ok(out)
}

/// Avro's `long`: zig-zag, then a variable-length integer.
fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn resolve(schema: &Schema) -> Result<ResolvedSchema<'_>, FormatError> {
    ResolvedSchema::try_from(schema).map_err(|error| FormatError::new(AVRO, error.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// One datum that must fill `bytes` exactly; `offset` is where `bytes` starts in the input.
fn decode_datum(schema: &Schema, bytes: &[u8], offset: usize) -> Result<Value, FormatError> {
    let mut rest = bytes;
    let at = |rest: &[u8]| Position::Byte((offset + bytes.len() - rest.len()) as u64);
    let datum = apache_avro::from_avro_datum(schema, &mut rest, None)
        .map_err(|error| FormatError::at(AVRO, at(rest), error.to_string()))?;
    if !rest.is_empty() {
        return Err(FormatError::at(
            AVRO,
            at(rest),
            format!("{} bytes after the end of the datum", rest.len()),
        ));
    }
    let resolved = resolve(schema)?;
    to_json(datum, schema, resolved.get_names()).map_err(|message| FormatError::new(AVRO, message))
}

/// A named type's definition.
fn lookup<'s>(name: &Name, names: &NamesRef<'s>) -> Result<&'s Schema, String> {
    names.get(name).copied().ok_or_else(|| {
        format!(
            "the schema refers to `{}`, which it does not define",
            name.fullname(None)
        )
    })
}

// ---- Avro to JSON -------------------------------------------------------------------------

/// A decoded datum as JSON; `schema` is the schema it was read with.
fn to_json(value: Avro, schema: &Schema, names: &NamesRef<'_>) -> Result<Value, String> {
    if let Schema::Ref { name } = schema {
        return to_json(value, lookup(name, names)?, names);
    }
    Ok(match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) => Value::Number(i.into()),
        Avro::Long(i) => Value::Number(i.into()),
        Avro::Float(f) => float(f64::from(f)),
        Avro::Double(f) => float(f),
        Avro::Bytes(data) | Avro::Fixed(_, data) => Value::String(BASE64.encode(data)),
        Avro::String(text) | Avro::Enum(_, text) => Value::String(text),
        Avro::Union(index, inner) => {
            let Schema::Union(union) = schema else {
                return Err(mismatch("a union", schema));
            };
            let branch = union
                .variants()
                .get(index as usize)
                .ok_or_else(|| format!("union branch {index} does not exist"))?;
            to_json(*inner, branch, names)?
        }
        Avro::Array(items) => {
            let Schema::Array(array) = schema else {
                return Err(mismatch("an array", schema));
            };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(to_json(item, &array.items, names)?);
            }
            Value::Array(out)
        }
        Avro::Map(entries) => {
            let Schema::Map(map) = schema else {
                return Err(mismatch("a map", schema));
            };
            let mut out = Map::new();
            for (key, item) in entries {
                out.insert(key, to_json(item, &map.types, names)?);
            }
            Value::Object(out)
        }
        Avro::Record(fields) => {
            let Schema::Record(record) = schema else {
                return Err(mismatch("a record", schema));
            };
            let mut out = Map::new();
            for ((name, field), field_schema) in fields.into_iter().zip(&record.fields) {
                out.insert(name, to_json(field, &field_schema.schema, names)?);
            }
            Value::Object(out)
        }
        Avro::Date(days) => {
            let date = NaiveDate::default()
                .checked_add_signed(chrono::Duration::days(i64::from(days)))
                .ok_or_else(|| format!("date {days} is out of range"))?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        Avro::TimeMillis(millis) => Value::String(time_text(i64::from(millis) * 1_000_000, 3)?),
        Avro::TimeMicros(micros) => Value::String(time_text(micros * 1_000, 6)?),
        Avro::TimestampMillis(t) => {
            timestamp(DateTime::from_timestamp_millis(t), SecondsFormat::Millis, t)?
        }
        Avro::TimestampMicros(t) => {
            timestamp(DateTime::from_timestamp_micros(t), SecondsFormat::Micros, t)?
        }
        Avro::TimestampNanos(t) => timestamp(
            Some(DateTime::from_timestamp_nanos(t)),
            SecondsFormat::Nanos,
            t,
        )?,
        Avro::LocalTimestampMillis(t) => local(DateTime::from_timestamp_millis(t), "%.3f", t)?,
        Avro::LocalTimestampMicros(t) => local(DateTime::from_timestamp_micros(t), "%.6f", t)?,
        Avro::LocalTimestampNanos(t) => local(Some(DateTime::from_timestamp_nanos(t)), "%.9f", t)?,
        Avro::Decimal(decimal) => {
            let scale = match schema {
                Schema::Decimal(decimal) => decimal.scale,
                _ => return Err(mismatch("a decimal", schema)),
            };
            let digits = Vec::<u8>::try_from(&decimal).map_err(|error| error.to_string())?;
            Value::String(decimal_text(&BigInt::from_signed_bytes_be(&digits), scale))
        }
        Avro::BigDecimal(decimal) => Value::String(decimal.to_string()),
        Avro::Duration(duration) => {
            let mut out = Map::new();
            out.insert("months".into(), u32::from(duration.months()).into());
            out.insert("days".into(), u32::from(duration.days()).into());
            out.insert("millis".into(), u32::from(duration.millis()).into());
            Value::Object(out)
        }
        Avro::Uuid(uuid) => Value::String(uuid.to_string()),
    })
}

fn mismatch(found: &str, schema: &Schema) -> String {
    format!("found {found} where the schema has {}", schema_kind(schema))
}

/// A schema's type in a sentence.
fn schema_kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(record) => format!("record `{}`", record.name.fullname(None)),
        Schema::Enum(e) => format!("enum `{}`", e.name.fullname(None)),
        Schema::Fixed(fixed) => format!(
            "fixed `{}` ({} bytes)",
            fixed.name.fullname(None),
            fixed.size
        ),
        Schema::Union(union) => {
            let branches: Vec<String> = union.variants().iter().map(schema_kind).collect();
            format!("union [{}]", branches.join(", "))
        }
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Ref { name } => format!("`{}`", name.fullname(None)),
        other => {
            // The primitive and logical types print as their JSON name.
            let json = serde_json::to_value(other).unwrap_or(Value::Null);
            match json {
                Value::String(name) => name,
                Value::Object(object) => match (object.get("logicalType"), object.get("type")) {
                    (Some(Value::String(logical)), _) => logical.clone(),
                    (_, Some(Value::String(name))) => name.clone(),
                    _ => "a type".into(),
                },
                _ => "a type".into(),
            }
        }
    }
}

/// Nanoseconds since midnight as `HH:MM:SS.fff…` with `digits` fractional digits.
fn time_text(nanos: i64, digits: usize) -> Result<String, String> {
    let time = u64::try_from(nanos)
        .ok()
        .and_then(|nanos| {
            NaiveTime::from_num_seconds_from_midnight_opt(
                (nanos / 1_000_000_000) as u32,
                (nanos % 1_000_000_000) as u32,
            )
        })
        .ok_or_else(|| format!("time of day {nanos} ns is out of range"))?;
    let fraction = format!("{:09}", time.nanosecond());
    Ok(format!(
        "{}.{}",
        time.format("%H:%M:%S"),
        &fraction[..digits]
    ))
}

fn timestamp(
    time: Option<DateTime<Utc>>,
    format: SecondsFormat,
    raw: i64,
) -> Result<Value, String> {
    time.map(|time| Value::String(time.to_rfc3339_opts(format, true)))
        .ok_or_else(|| format!("timestamp {raw} is out of range"))
}

fn local(time: Option<DateTime<Utc>>, fraction: &str, raw: i64) -> Result<Value, String> {
    time.map(|time| {
        Value::String(
            time.naive_utc()
                .format(&format!("%Y-%m-%dT%H:%M:%S{fraction}"))
                .to_string(),
        )
    })
    .ok_or_else(|| format!("timestamp {raw} is out of range"))
}

/// An unscaled integer and a scale as decimal text: `12345`, 2 → `123.45`.
fn decimal_text(unscaled: &BigInt, scale: usize) -> String {
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Why a recursive schema is refused.
fn recursion_refused(name: &str) -> String {
    format!(
        "the record `{name}` contains itself; recursive Avro schemas are not read, since \
         apache-avro decodes them without a depth bound and a deeply nested datum would \
         overflow the stack"
    )
}

/// The full name of a record that contains itself (through a reference to its own name, at
/// any depth), if `schema` has one.
fn recursive_type(schema: &Schema) -> Option<String> {
    fn walk(schema: &Schema, open: &mut Vec<String>) -> Option<String> {
        match schema {
            Schema::Ref { name } => {
                let name = name.fullname(None);
                open.contains(&name).then_some(name)
            }
            Schema::Record(record) => {
                open.push(record.name.fullname(None));
                let found = record
                    .fields
                    .iter()
                    .find_map(|field| walk(&field.schema, open));
                open.pop();
                found
            }
            Schema::Array(array) => walk(&array.items, open),
            Schema::Map(map) => walk(&map.types, open),
            Schema::Union(union) => union.variants().iter().find_map(|v| walk(v, open)),
            _ => None,
        }
    }
    walk(schema, &mut Vec::new())
}

// ---- JSON to Avro -------------------------------------------------------------------------

/// A JSON value as a datum of `schema`; errors carry the JSON pointer of the offending part.
fn from_json(
    value: &Value,
    schema: &Schema,
    names: &NamesRef<'_>,
    pointer: &str,
) -> Result<Avro, FormatError> {
    let fail = |message: String| FormatError::at_path(AVRO, pointer, message);
    let expected = |what: &str| fail(format!("expected {what}, found {}", kind(value)));
    Ok(match schema {
        Schema::Ref { name } => {
            return from_json(value, lookup(name, names).map_err(fail)?, names, pointer);
        }
        Schema::Null => match value {
            Value::Null => Avro::Null,
            _ => return Err(expected("null")),
        },
        Schema::Boolean => match value {
            Value::Bool(b) => Avro::Boolean(*b),
            _ => return Err(expected("a boolean")),
        },
        Schema::Int => Avro::Int(integer(value, pointer, "an int")?),
        Schema::Long => Avro::Long(integer(value, pointer, "a long")?),
        Schema::Float => Avro::Float(floating(value).ok_or_else(|| expected("a float"))? as f32),
        Schema::Double => Avro::Double(floating(value).ok_or_else(|| expected("a double"))?),
        Schema::String => match value {
            Value::String(text) => Avro::String(text.clone()),
            _ => return Err(expected("a string")),
        },
        Schema::Bytes => Avro::Bytes(base64_bytes(value, pointer)?),
        Schema::Fixed(fixed) => {
            let data = base64_bytes(value, pointer)?;
            if data.len() != fixed.size {
                return Err(fail(format!(
                    "`{}` holds exactly {} bytes, found {}",
                    fixed.name.fullname(None),
                    fixed.size,
                    data.len()
                )));
            }
            Avro::Fixed(fixed.size, data)
        }
        Schema::Enum(e) => {
            let Value::String(symbol) = value else {
                return Err(expected("a symbol of enum"));
            };
            match e.symbols.iter().position(|s| s == symbol) {
                Some(index) => Avro::Enum(index as u32, symbol.clone()),
                None => {
                    return Err(fail(format!(
                        "`{symbol}` is not a symbol of enum `{}`: {}",
                        e.name.fullname(None),
                        e.symbols.join(", ")
                    )));
                }
            }
        }
        Schema::Array(array) => {
            let Value::Array(items) = value else {
                return Err(expected("an array"));
            };
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                out.push(from_json(
                    item,
                    &array.items,
                    names,
                    &pointer_push(pointer, &index.to_string()),
                )?);
            }
            Avro::Array(out)
        }
        Schema::Map(map) => {
            let Value::Object(entries) = value else {
                return Err(expected("an object (a map)"));
            };
            let mut out = HashMap::with_capacity(entries.len());
            for (key, item) in entries {
                out.insert(
                    key.clone(),
                    from_json(item, &map.types, names, &pointer_push(pointer, key))?,
                );
            }
            Avro::Map(out)
        }
        Schema::Record(record) => record_from_json(value, record, names, pointer)?,
        Schema::Union(union) => union_from_json(value, union, names, pointer)?,
        Schema::Decimal(decimal) => {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                _ => return Err(expected("a decimal (a string such as \"12.50\")")),
            };
            let unscaled = parse_decimal(&text, decimal.scale).map_err(fail)?;
            let digits = unscaled.magnitude().to_string().len();
            if digits > decimal.precision {
                return Err(fail(format!(
                    "`{text}` has more than the {} digits of the schema's precision",
                    decimal.precision
                )));
            }
            let mut bytes = unscaled.to_signed_bytes_be();
            if let Schema::Fixed(fixed) = &*decimal.inner {
                if bytes.len() > fixed.size {
                    return Err(fail(format!(
                        "`{text}` does not fit in {} bytes",
                        fixed.size
                    )));
                }
                let fill = if unscaled.sign() == num_bigint::Sign::Minus {
                    0xFF
                } else {
                    0
                };
                let mut extended = vec![fill; fixed.size - bytes.len()];
                extended.append(&mut bytes);
                bytes = extended;
            }
            Avro::Decimal(Decimal::from(bytes))
        }
        Schema::BigDecimal => {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                _ => return Err(expected("a decimal (a string such as \"12.50\")")),
            };
            let decimal = apache_avro::BigDecimal::from_str(&text)
                .map_err(|error| fail(format!("`{text}` is not a decimal: {error}")))?;
            Avro::BigDecimal(decimal)
        }
        Schema::Uuid => {
            let Value::String(text) = value else {
                return Err(expected("a UUID string"));
            };
            let uuid = apache_avro::Uuid::parse_str(text)
                .map_err(|error| fail(format!("`{text}` is not a UUID: {error}")))?;
            Avro::Uuid(uuid)
        }
        Schema::Date => Avro::Date(match value {
            Value::String(text) => {
                let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|error| {
                    fail(format!("`{text}` is not a date (YYYY-MM-DD): {error}"))
                })?;
                (date - NaiveDate::default()).num_days() as i32
            }
            _ => integer(
                value,
                pointer,
                "a date (YYYY-MM-DD or days since 1970-01-01)",
            )?,
        }),
        Schema::TimeMillis => Avro::TimeMillis(match value {
            Value::String(text) => (parse_time(text).map_err(fail)? / 1_000_000) as i32,
            _ => integer(value, pointer, "a time (HH:MM:SS.fff or milliseconds)")?,
        }),
        Schema::TimeMicros => Avro::TimeMicros(match value {
            Value::String(text) => parse_time(text).map_err(fail)? / 1_000,
            _ => integer(value, pointer, "a time (HH:MM:SS.ffffff or microseconds)")?,
        }),
        Schema::TimestampMillis => {
            Avro::TimestampMillis(utc(value, pointer, |t| Some(t.timestamp_millis()))?)
        }
        Schema::TimestampMicros => {
            Avro::TimestampMicros(utc(value, pointer, |t| Some(t.timestamp_micros()))?)
        }
        Schema::TimestampNanos => {
            Avro::TimestampNanos(utc(value, pointer, |t| t.timestamp_nanos_opt())?)
        }
        Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(naive(value, pointer, |t| {
            Some(t.and_utc().timestamp_millis())
        })?),
        Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(naive(value, pointer, |t| {
            Some(t.and_utc().timestamp_micros())
        })?),
        Schema::LocalTimestampNanos => Avro::LocalTimestampNanos(naive(value, pointer, |t| {
            t.and_utc().timestamp_nanos_opt()
        })?),
        Schema::Duration => {
            let Value::Object(parts) = value else {
                return Err(expected("a duration ({ months, days, millis })"));
            };
            let part = |key: &str| -> Result<u32, FormatError> {
                match parts.get(key) {
                    None => Ok(0),
                    Some(part) => integer(
                        part,
                        &pointer_push(pointer, key),
                        "a count (0 to 4294967295)",
                    ),
                }
            };
            if let Some(key) = parts
                .keys()
                .find(|k| !matches!(k.as_str(), "months" | "days" | "millis"))
            {
                return Err(fail(format!(
                    "`{key}` is not part of a duration: months, days, millis"
                )));
            }
            Avro::Duration(Duration::new(
                Months::new(part("months")?),
                Days::new(part("days")?),
                Millis::new(part("millis")?),
            ))
        }
    })
}

fn record_from_json(
    value: &Value,
    record: &RecordSchema,
    names: &NamesRef<'_>,
    pointer: &str,
) -> Result<Avro, FormatError> {
    let record_name = record.name.fullname(None);
    let Value::Object(object) = value else {
        return Err(FormatError::at_path(
            AVRO,
            pointer,
            format!(
                "expected an object (record `{record_name}`), found {}",
                kind(value)
            ),
        ));
    };
    // A key that is not a field would be dropped silently: refuse it.
    if let Some(key) = object
        .keys()
        .find(|key| !record.lookup.contains_key(key.as_str()))
    {
        return Err(FormatError::at_path(
            AVRO,
            pointer_push(pointer, key),
            format!("`{key}` is not a field of record `{record_name}`"),
        ));
    }
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let field_pointer = pointer_push(pointer, &field.name);
        let datum = match (object.get(&field.name), &field.default) {
            (Some(given), _) => from_json(given, &field.schema, names, &field_pointer)?,
            (None, Some(default)) => default_datum(default, &field.schema, names, &field_pointer)?,
            (None, None) if is_nullable(&field.schema) => {
                from_json(&Value::Null, &field.schema, names, &field_pointer)?
            }
            (None, None) => {
                return Err(FormatError::at_path(
                    AVRO,
                    field_pointer,
                    format!(
                        "missing field `{}` of record `{record_name}` (it has no default)",
                        field.name
                    ),
                ));
            }
        };
        fields.push((field.name.clone(), datum));
    }
    Ok(Avro::Record(fields))
}

/// A field's default, which the Avro specification writes for the first branch of a union and
/// with `bytes` as ISO-8859-1 text rather than base64.
fn default_datum(
    default: &Value,
    schema: &Schema,
    names: &NamesRef<'_>,
    pointer: &str,
) -> Result<Avro, FormatError> {
    let schema = match schema {
        Schema::Ref { name } => {
            lookup(name, names).map_err(|m| FormatError::at_path(AVRO, pointer, m))?
        }
        other => other,
    };
    match (schema, default) {
        (Schema::Union(union), _) => {
            let Some(first) = union.variants().first() else {
                return Err(FormatError::at_path(
                    AVRO,
                    pointer,
                    "an empty union has no default",
                ));
            };
            let datum = default_datum(default, first, names, pointer)?;
            Ok(Avro::Union(0, Box::new(datum)))
        }
        (Schema::Bytes, Value::String(text)) => Ok(Avro::Bytes(latin1(text))),
        (Schema::Fixed(fixed), Value::String(text)) => Ok(Avro::Fixed(fixed.size, latin1(text))),
        _ => from_json(default, schema, names, pointer),
    }
}

fn latin1(text: &str) -> Vec<u8> {
    text.chars().map(|c| c as u32 as u8).collect()
}

fn is_nullable(schema: &Schema) -> bool {
    matches!(schema, Schema::Union(union) if union.is_nullable())
}

/// The first branch of the union that the value fits; `null` goes to the `null` branch.
fn union_from_json(
    value: &Value,
    union: &UnionSchema,
    names: &NamesRef<'_>,
    pointer: &str,
) -> Result<Avro, FormatError> {
    let mut first_error = None;
    for (index, branch) in union.variants().iter().enumerate() {
        if value.is_null() != matches!(branch, Schema::Null) {
            continue;
        }
        match from_json(value, branch, names, pointer) {
            Ok(datum) => return Ok(Avro::Union(index as u32, Box::new(datum))),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let branches: Vec<String> = union.variants().iter().map(schema_kind).collect();
    let reason = first_error
        .map(|e| format!(": {}", e.message))
        .unwrap_or_default();
    Err(FormatError::at_path(
        AVRO,
        pointer,
        format!(
            "{} fits no branch of union [{}]{reason}",
            kind(value),
            branches.join(", ")
        ),
    ))
}

fn integer<T: TryFrom<i64> + TryFrom<u64>>(
    value: &Value,
    pointer: &str,
    what: &str,
) -> Result<T, FormatError> {
    let fits = match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(i), _) => T::try_from(i).ok(),
            (None, Some(u)) => T::try_from(u).ok(),
            _ => None,
        },
        _ => None,
    };
    fits.ok_or_else(|| {
        let found = match value {
            Value::Number(number) => format!("`{number}`"),
            other => kind(other).to_string(),
        };
        FormatError::at_path(AVRO, pointer, format!("expected {what}, found {found}"))
    })
}

/// A number, or one of the strings `NaN`, `Infinity`, `-Infinity`.
fn floating(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn base64_bytes(value: &Value, pointer: &str) -> Result<Vec<u8>, FormatError> {
    let Value::String(text) = value else {
        return Err(FormatError::at_path(
            AVRO,
            pointer,
            format!("expected bytes as a base64 string, found {}", kind(value)),
        ));
    };
    BASE64
        .decode(text)
        .map_err(|error| FormatError::at_path(AVRO, pointer, format!("invalid base64: {error}")))
}

/// Decimal text as an unscaled integer at `scale`: `"12.5"`, 2 → 1250. More fractional
/// digits than the scale are an error, not a rounding.
fn parse_decimal(text: &str, scale: usize) -> Result<BigInt, String> {
    let invalid = || format!("`{text}` is not a decimal number");
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(invalid());
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale {
        return Err(format!(
            "`{text}` has {} decimal places; the schema's scale is {scale}",
            fraction.len()
        ));
    }
    let digits = format!("{whole}{fraction:0<scale$}");
    let magnitude = BigInt::from_str(&digits).map_err(|_| invalid())?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// `HH:MM:SS[.fraction]` as nanoseconds since midnight.
fn parse_time(text: &str) -> Result<i64, String> {
    let time = NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
        .map_err(|error| format!("`{text}` is not a time (HH:MM:SS.fff): {error}"))?;
    Ok(i64::from(time.num_seconds_from_midnight()) * 1_000_000_000 + i64::from(time.nanosecond()))
}

/// An RFC 3339 timestamp (any offset) or a raw count, as the count `units` gives.
fn utc(
    value: &Value,
    pointer: &str,
    units: impl Fn(DateTime<Utc>) -> Option<i64>,
) -> Result<i64, FormatError> {
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|time| units(time.with_timezone(&Utc)))
            .ok_or_else(|| {
                FormatError::at_path(
                    AVRO,
                    pointer,
                    format!("`{text}` is not an RFC 3339 timestamp such as 2024-01-31T12:00:00Z"),
                )
            }),
        _ => integer(value, pointer, "a timestamp (RFC 3339 text or a number)"),
    }
}

/// A local date and time without offset (`2024-01-31T12:00:00.000`) or a raw count.
fn naive(
    value: &Value,
    pointer: &str,
    units: impl Fn(NaiveDateTime) -> Option<i64>,
) -> Result<i64, FormatError> {
    match value {
        Value::String(text) => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .and_then(units)
            .ok_or_else(|| {
                FormatError::at_path(
                    AVRO,
                    pointer,
                    format!("`{text}` is not a local timestamp such as 2024-01-31T12:00:00"),
                )
            }),
        _ => integer(value, pointer, "a local timestamp (text or a number)"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ORDER: &str = r#"{
        "type": "record", "name": "Order", "namespace": "shop",
        "fields": [
            { "name": "id", "type": "long" },
            { "name": "customer", "type": ["null", "string"] },
            { "name": "status", "type": { "type": "enum", "name": "Status", "symbols": ["NEW", "PAID"] } },
            { "name": "amount", "type": { "type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2 } },
            { "name": "placed", "type": { "type": "long", "logicalType": "timestamp-millis" } },
            { "name": "day", "type": { "type": "int", "logicalType": "date" } },
            { "name": "lines", "type": { "type": "array", "items": {
                "type": "record", "name": "Line", "fields": [
                    { "name": "sku", "type": "string" },
                    { "name": "qty", "type": "int", "default": 1 }
                ] } } },
            { "name": "next", "type": ["null", "Line"], "default": null },
            { "name": "weight", "type": "double" },
            { "name": "tags", "type": { "type": "map", "values": "string" } },
            { "name": "digest", "type": { "type": "fixed", "name": "Digest", "size": 4 } }
        ]
    }"#;

    fn format(encoding: AvroEncoding) -> AvroFormat {
        AvroFormat::new(Some(Schema::parse_str(ORDER).unwrap()), encoding).unwrap()
    }

    fn order() -> Value {
        json!({
            "id": 42,
            "customer": "Ann",
            "status": "PAID",
            "amount": "-1234.50",
            "placed": "2024-01-31T12:00:00.123Z",
            "day": "2024-01-31",
            "lines": [{ "sku": "A1", "qty": 2 }, { "sku": "B2", "qty": 1 }],
            "next": { "sku": "C3", "qty": 5 },
            "weight": "NaN",
            "tags": { "gift": "yes" },
            "digest": "AQIDBA==",
        })
    }

    #[test]
    fn every_encoding_round_trips() {
        for encoding in [AvroEncoding::Raw, AvroEncoding::SingleObject] {
            let format = format(encoding);
            let bytes = format.encode(&order()).unwrap();
            assert_eq!(format.decode(&bytes).unwrap(), order(), "{encoding:?}");
        }
        let container = format(AvroEncoding::Container);
        let records = json!([order(), order()]);
        let bytes = container.encode(&records).unwrap();
        assert_eq!(&bytes[..4], b"Obj\x01");
        assert_eq!(container.decode(&bytes).unwrap(), records);
        // Deterministic: the sync marker comes from the schema.
        assert_eq!(container.encode(&records).unwrap(), bytes);
        // A container carries its schema, so reading needs none.
        let schemaless = AvroFormat::new(None, AvroEncoding::Container).unwrap();
        assert_eq!(schemaless.decode(&bytes).unwrap(), records);
    }

    #[test]
    fn containers_written_by_other_tools_with_deflate_or_snappy_are_read() {
        let schema = Schema::parse_str(ORDER).unwrap();
        let names = resolve(&schema).unwrap();
        let datum = from_json(&order(), &schema, names.get_names(), "").unwrap();
        for codec in [
            apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default()),
            apache_avro::Codec::Snappy,
        ] {
            let mut writer = apache_avro::Writer::with_codec(&schema, Vec::new(), codec);
            writer.append(datum.clone()).unwrap();
            let bytes = writer.into_inner().unwrap();
            let schemaless = AvroFormat::new(None, AvroEncoding::Container).unwrap();
            assert_eq!(
                schemaless.decode(&bytes).unwrap(),
                json!([order()]),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn single_object_matches_the_library() {
        let schema = Schema::parse_str(ORDER).unwrap();
        let mut datum = Vec::new();
        let value =
            from_json(&order(), &schema, resolve(&schema).unwrap().get_names(), "").unwrap();
        apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 64)
            .unwrap()
            .write_value(value, &mut datum)
            .unwrap();
        assert_eq!(
            format(AvroEncoding::SingleObject).encode(&order()).unwrap(),
            datum
        );
    }

    #[test]
    fn defaults_and_nullable_fields_fill_missing_keys() {
        let format = format(AvroEncoding::Raw);
        let mut sparse = order();
        let object = sparse.as_object_mut().unwrap();
        object.remove("next");
        object.remove("customer");
        object["lines"] = json!([{ "sku": "A1" }]);
        let back = format.decode(&format.encode(&sparse).unwrap()).unwrap();
        assert_eq!(back["next"], Value::Null);
        assert_eq!(back["customer"], Value::Null);
        assert_eq!(back["lines"], json!([{ "sku": "A1", "qty": 1 }]));
    }

    #[test]
    fn values_that_do_not_fit_the_schema_name_their_path() {
        let format = format(AvroEncoding::Raw);
        let check = |change: &dyn Fn(&mut Value), expected: &str| {
            let mut value = order();
            change(&mut value);
            let error = format.encode(&value).unwrap_err();
            assert_eq!(error.to_string(), expected);
        };
        check(
            &|v| v["id"] = json!("x"),
            "Avro at /id: expected a long, found a string",
        );
        check(
            &|v| v["lines"][1]["qty"] = json!(1.5),
            "Avro at /lines/1/qty: expected an int, found `1.5`",
        );
        check(
            &|v| v["status"] = json!("LOST"),
            "Avro at /status: `LOST` is not a symbol of enum `shop.Status`: NEW, PAID",
        );
        check(
            &|v| v["amount"] = json!("1.234"),
            "Avro at /amount: `1.234` has 3 decimal places; the schema's scale is 2",
        );
        check(
            &|v| v["extra"] = json!(1),
            "Avro at /extra: `extra` is not a field of record `shop.Order`",
        );
        check(
            &|v| {
                v.as_object_mut().unwrap().remove("id");
            },
            "Avro at /id: missing field `id` of record `shop.Order` (it has no default)",
        );
        check(
            &|v| v["customer"] = json!(5),
            "Avro at /customer: a number fits no branch of union [null, string]: expected a \
             string, found a number",
        );
        check(
            &|v| v["digest"] = json!("AQID"),
            "Avro at /digest: `shop.Digest` holds exactly 4 bytes, found 3",
        );
    }

    #[test]
    fn malformed_input_gives_a_position() {
        let raw = format(AvroEncoding::Raw);
        let bytes = raw.encode(&order()).unwrap();
        let error = raw.decode(&bytes[..5]).unwrap_err();
        assert!(matches!(error.position, Some(Position::Byte(_))), "{error}");
        assert!(error.to_string().starts_with("Avro byte "), "{error}");
        let mut long = bytes.clone();
        long.extend([1, 2, 3]);
        let error = raw.decode(&long).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "Avro byte {}: 3 bytes after the end of the datum",
                bytes.len()
            )
        );

        let single = format(AvroEncoding::SingleObject);
        let error = single.decode(b"{\"id\": 1}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "Avro byte 0: not single-object encoding: it starts with C3 01, this starts with `7B 22`"
        );
        let mut other = single.encode(&order()).unwrap();
        other[5] ^= 0xFF;
        let error = single.decode(&other).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("Avro byte 2: written with another schema"),
            "{error}"
        );

        let container = format(AvroEncoding::Container);
        let error = container.decode(b"not avro").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("Avro byte 0: not a readable Avro container file"),
            "{error}"
        );
        let bytes = container
            .encode(&json!([order(), order(), order()]))
            .unwrap();
        // Cut into the block: the header reads, the records do not.
        let error = container.decode(&bytes[..bytes.len() - 30]).unwrap_err();
        assert!(error.to_string().starts_with("Avro record 1: "), "{error}");
    }

    #[test]
    fn logical_types_as_text() {
        assert_eq!(decimal_text(&BigInt::from(-5), 2), "-0.05");
        assert_eq!(decimal_text(&BigInt::from(12345), 0), "12345");
        assert_eq!(parse_decimal("-0.05", 2).unwrap(), BigInt::from(-5));
        assert_eq!(parse_decimal("12", 2).unwrap(), BigInt::from(1200));
        assert!(parse_decimal("1e5", 2).is_err());
        assert!(parse_decimal(".", 2).is_err());
        assert_eq!(time_text(45_296_789_000_000, 3).unwrap(), "12:34:56.789");
        assert_eq!(parse_time("12:34:56.789").unwrap(), 45_296_789_000_000);
    }

    /// Issue 12: a recursive schema is refused, configured or in a container file.
    #[test]
    fn recursive_schemas_are_refused() {
        let list = r#"{"type": "record", "name": "Node", "fields": [
            {"name": "value", "type": "long"},
            {"name": "next", "type": ["null", "Node"]}]}"#;
        let schema = Schema::parse_str(list).unwrap();
        assert_eq!(recursive_type(&schema).as_deref(), Some("Node"));
        let error = AvroFormat::new(Some(schema.clone()), AvroEncoding::Raw).unwrap_err();
        assert!(error.contains("`Node` contains itself"), "{error}");
        let mut writer = apache_avro::Writer::new(&schema, Vec::new());
        let mut node = apache_avro::types::Record::new(&schema).unwrap();
        node.put("value", 1i64);
        node.put("next", Avro::Union(0, Box::new(Avro::Null)));
        writer.append(node).unwrap();
        let file = writer.into_inner().unwrap();
        let error = AvroFormat::new(None, AvroEncoding::Container)
            .unwrap()
            .decode(&file)
            .unwrap_err();
        assert!(error.to_string().contains("contains itself"), "{error}");
        assert_eq!(recursive_type(&Schema::parse_str(ORDER).unwrap()), None);
    }
}
