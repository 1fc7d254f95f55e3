//! Record batches row by row for the VRL processors: `remap` and `filter` over a record batch
//! run their program once per row, the row being `.`.
//!
//! A row becomes a VRL object keyed by column name, each value typed by its column: `integer`,
//! `float` and `boolean` as themselves, `text` and `uuid` as strings, `numeric` as a string
//! (every digit kept; VRL has no decimal type), `date`, `timestamp` and `timestamptz` as
//! timestamps (a `timestamp` without zone read as UTC), `time` as a string, `json` as its value,
//! `bytes` as bytes. `%` is the passenger's metadata, shared by the rows in order.
//!
//! The result is a record batch again. Its columns: the input's columns the rows still have, in
//! their order, then new fields in the order first seen; or the columns a `remap` declares. A
//! column keeps its input type while every value still fits it; otherwise (and for new fields)
//! the type is inferred from the values. A row that fails, or a value that fits no column,
//! fails the passenger naming the row (from 1, within the chunk) and the chunk.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{NaiveTime, Timelike};
use ferry_core::records::{self, BatchWriter, Column, ColumnType};
use ferry_core::{Body, Passenger, StepError};
use ferry_formats::records::{Cell, parse_field, parse_text};
use vrl::compiler::runtime::Runtime;
use vrl::value::{KeyString, ObjectMap, Value};

use super::program::{VrlProgram, json_bytes, kind_name, metadata_of, metadata_value, parse_json};

/// Metadata key: how many rows of the batch `filter` dropped (added up over processors).
pub const ROWS_DROPPED: &str = "rows_dropped";

/// Whether the body is a record batch.
pub(crate) fn is_records(body: &Body) -> bool {
    body.media_type == records::MEDIA_TYPE
}

/// A record batch read for row-by-row work.
pub(crate) struct Rows {
    pub(crate) columns: Vec<Column>,
    data: Bytes,
    /// The column names as VRL keys, made once.
    keys: Vec<KeyString>,
    /// `chunk 2 of load L`, or nothing for a batch that is not part of a load.
    chunk: Option<String>,
}

impl Rows {
    pub(crate) fn of(passenger: &Passenger) -> Result<Rows, StepError> {
        let batch = records::read(&passenger.body).map_err(StepError::permanent)?;
        let keys = batch
            .columns
            .iter()
            .map(|column| KeyString::from(column.name.as_str()))
            .collect();
        let chunk = records::Chunk::of(passenger)
            .map(|chunk| format!("chunk {} of load {}", chunk.number, chunk.load));
        Ok(Rows {
            columns: batch.columns,
            data: batch.data,
            keys,
            chunk,
        })
    }

    /// The rows' lines, each with its number from 1.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (usize, &[u8])> {
        records::lines(&self.data)
            .enumerate()
            .map(|(index, line)| (index + 1, line))
    }

    /// `row 3 of chunk 2 of load L: ` before a row's error.
    pub(crate) fn at(&self, row: usize) -> String {
        match &self.chunk {
            Some(chunk) => format!("row {row} of {chunk}"),
            None => format!("row {row}"),
        }
    }

    /// A row error, permanent, naming the row.
    pub(crate) fn error(&self, row: usize, message: impl std::fmt::Display) -> StepError {
        StepError::permanent(format!("{}: {message}", self.at(row)))
    }

    /// The row in `line` as a VRL object.
    pub(crate) fn value(&self, row: usize, line: &[u8]) -> Result<Value, StepError> {
        let mut object = ObjectMap::new();
        let mut fields = records::fields(line);
        for (column, key) in self.columns.iter().zip(&self.keys) {
            let Some(field) = fields.next() else {
                return Err(self.error(row, "the row has fewer fields than the batch has columns"));
            };
            let value = self.field_value(column.kind, field).map_err(|message| {
                self.error(row, format_args!("column `{}`: {message}", column.name))
            })?;
            object.insert(key.clone(), value);
        }
        Ok(Value::Object(object))
    }

    /// One field as a VRL value of its column's type.
    fn field_value(&self, kind: ColumnType, field: Option<Cow<'_, [u8]>>) -> Result<Value, String> {
        let Some(field) = field else {
            return Ok(Value::Null);
        };
        // Text-like values become slices of the batch, not copies.
        let text = |field: Cow<'_, [u8]>| match field {
            Cow::Borrowed(slice) => Value::from_utf8_or_bytes(self.data.slice_ref(slice)),
            Cow::Owned(bytes) => Value::from_utf8_or_bytes(Bytes::from(bytes)),
        };
        Ok(match kind {
            ColumnType::Text | ColumnType::Uuid => text(field),
            ColumnType::Json => parse_json(&Bytes::copy_from_slice(&field))
                .map_err(|error| format!("not JSON: {error}"))?,
            _ => match parse_field(kind, Some(field))? {
                Cell::Null => Value::Null,
                Cell::Boolean(value) => Value::Boolean(value),
                Cell::Integer(value) => Value::Integer(value),
                Cell::Float(value) => Value::from_f64_or_zero(value),
                Cell::Numeric(text) => Value::from(text.as_ref()),
                Cell::Date(date) => Value::Timestamp(date.and_time(NaiveTime::MIN).and_utc()),
                Cell::Time(time) => Value::from(time.format("%H:%M:%S%.f").to_string()),
                Cell::Timestamp(at) => Value::Timestamp(at.and_utc()),
                Cell::Timestamptz(at) => Value::Timestamp(at),
                Cell::Bytes(bytes) => Value::Bytes(Bytes::from(bytes)),
                Cell::Text(text) | Cell::Json(text) | Cell::Uuid(text) => {
                    Value::from(text.as_ref())
                }
            },
        })
    }
}

/// Runs `program` over every row of the record batch in `passenger` and makes the rows it
/// gives the new batch; `declared` fixes the output columns. A program that does not use `.`
/// runs once, over the metadata only.
pub(crate) fn remap(
    program: &VrlProgram,
    passenger: &mut Passenger,
    declared: Option<&[Column]>,
) -> Result<(), StepError> {
    let rows = Rows::of(passenger)?;
    if !program.uses_body() {
        let mut body = Value::Null;
        let mut metadata = metadata_value(std::mem::take(&mut passenger.metadata));
        let result = program.run_in(&mut Runtime::default(), &mut body, &mut metadata);
        passenger.metadata = metadata_of(metadata)?;
        return result.map(drop);
    }
    let mut metadata = if program.uses_metadata() {
        metadata_value(passenger.metadata.clone())
    } else {
        Value::Null
    };
    let mut runtime = Runtime::default();
    let mut out = Vec::new();
    for (row, line) in rows.lines() {
        let mut value = rows.value(row, line)?;
        program
            .run_in(&mut runtime, &mut value, &mut metadata)
            .map_err(|error| rows.error(row, error.message))?;
        match value {
            Value::Object(object) => out.push(object),
            other => {
                return Err(rows.error(
                    row,
                    format!(
                        "the program made the row {}; a row of a record batch must stay an \
                         object",
                        kind_name(&other)
                    ),
                ));
            }
        }
    }
    if program.uses_metadata() {
        passenger.metadata = metadata_of(metadata)?;
    }
    let columns = match declared {
        Some(declared) => declared.to_vec(),
        // No row to learn from: an empty chunk keeps its columns.
        None if out.is_empty() => rows.columns.clone(),
        None => output_columns(&rows.columns, &out),
    };
    passenger.body = write_rows(&rows, columns, &out, declared.is_some())?;
    set_rows(passenger, out.len());
    Ok(())
}

/// Keeps the rows of the record batch in `passenger` for which `condition` is true, unchanged;
/// returns how many were dropped.
pub(crate) fn filter(
    condition: &VrlProgram,
    passenger: &mut Passenger,
) -> Result<usize, StepError> {
    let rows = Rows::of(passenger)?;
    let mut metadata = if condition.uses_metadata() {
        metadata_value(passenger.metadata.clone())
    } else {
        Value::Null
    };
    let mut runtime = Runtime::default();
    let mut writer = BatchWriter::new(rows.columns.clone());
    let mut dropped = 0;
    for (row, line) in rows.lines() {
        let mut value = if condition.uses_body() {
            rows.value(row, line)?
        } else {
            Value::Null
        };
        let kept = match condition.run_in(&mut runtime, &mut value, &mut metadata) {
            Ok(Value::Boolean(kept)) => kept,
            Ok(other) => {
                return Err(rows.error(
                    row,
                    format!(
                        "the condition `{}` gave {} `{}`, not a boolean",
                        condition.summary(),
                        kind_name(&other),
                        other.to_string_lossy().chars().take(60).collect::<String>()
                    ),
                ));
            }
            Err(error) => return Err(rows.error(row, error.message)),
        };
        if kept {
            writer.line(line);
        } else {
            dropped += 1;
        }
    }
    let kept = writer.rows();
    passenger.body = writer.finish();
    set_rows(passenger, kept);
    let before: usize = passenger
        .metadata
        .get(ROWS_DROPPED)
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    passenger
        .metadata
        .insert(ROWS_DROPPED.into(), (before + dropped).to_string());
    Ok(dropped)
}

/// Updates the `rows` metadata of a chunk that has it.
fn set_rows(passenger: &mut Passenger, rows: usize) {
    if let Some(count) = passenger.metadata.get_mut(records::ROWS) {
        *count = rows.to_string();
    }
}

/// The columns of the rows a program gave: the input's columns the rows still have, in their
/// order and keeping their type while every value fits it; then new fields in the order first
/// seen, typed by their values.
fn output_columns(input: &[Column], rows: &[ObjectMap]) -> Vec<Column> {
    let mut names: Vec<&str> = input
        .iter()
        .map(|column| column.name.as_str())
        .filter(|name| rows.iter().any(|row| row.contains_key(*name)))
        .collect();
    for row in rows {
        for key in row.keys() {
            if !names.contains(&key.as_str()) {
                names.push(key.as_str());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let values = || rows.iter().filter_map(|row| row.get(name));
            let kept = input
                .iter()
                .find(|column| column.name == name)
                .filter(|column| values().all(|value| fits(column.kind, value)));
            let kind = kept.map_or_else(|| infer(values()), |column| column.kind);
            Column::new(name, kind)
        })
        .collect()
}

/// Whether a VRL value is a value of `kind` as rows give them (see the module documentation).
fn fits(kind: ColumnType, value: &Value) -> bool {
    let text = text_of(value);
    match (kind, value) {
        (_, Value::Null) | (ColumnType::Json, _) => true,
        (ColumnType::Boolean, Value::Boolean(_)) => true,
        (ColumnType::Integer, Value::Integer(_)) => true,
        (ColumnType::Float, Value::Float(_) | Value::Integer(_)) => true,
        (ColumnType::Numeric, Value::Float(_) | Value::Integer(_)) => true,
        (ColumnType::Timestamp | ColumnType::Timestamptz, Value::Timestamp(_)) => true,
        (ColumnType::Date, Value::Timestamp(at)) => {
            at.num_seconds_from_midnight() == 0 && at.nanosecond() == 0
        }
        (ColumnType::Bytes, Value::Bytes(_) | Value::String(_)) => true,
        (ColumnType::Text, _) => text.is_some(),
        (ColumnType::Numeric | ColumnType::Time | ColumnType::Uuid, _) => {
            text.is_some_and(|text| parse_text(kind, Cow::Borrowed(text)).is_ok())
        }
        _ => false,
    }
}

/// A string value's text (bytes that are UTF-8 too: VRL functions give either).
fn text_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(&**text),
        Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// The type of a new column, from its values: the one type they all have, `float` for integers
/// and floats, `bytes` for strings that are not all UTF-8, `json` for objects, arrays and
/// mixtures, `text` when every value is null.
fn infer<'v>(values: impl Iterator<Item = &'v Value>) -> ColumnType {
    let mut kind: Option<ColumnType> = None;
    for value in values {
        let this = match value {
            Value::Null => continue,
            Value::Boolean(_) => ColumnType::Boolean,
            Value::Integer(_) => ColumnType::Integer,
            Value::Float(_) => ColumnType::Float,
            Value::Timestamp(_) => ColumnType::Timestamptz,
            Value::String(_) | Value::Regex(_) => ColumnType::Text,
            Value::Bytes(bytes) if std::str::from_utf8(bytes).is_ok() => ColumnType::Text,
            Value::Bytes(_) => ColumnType::Bytes,
            Value::Object(_) | Value::Array(_) => return ColumnType::Json,
        };
        kind = Some(match (kind, this) {
            (None, this) => this,
            (Some(before), this) if before == this => this,
            (
                Some(ColumnType::Integer | ColumnType::Float),
                ColumnType::Integer | ColumnType::Float,
            ) => ColumnType::Float,
            (Some(ColumnType::Text | ColumnType::Bytes), ColumnType::Text | ColumnType::Bytes) => {
                ColumnType::Bytes
            }
            _ => return ColumnType::Json,
        });
    }
    kind.unwrap_or(ColumnType::Text)
}

/// Writes the rows as a batch of `columns`. With `declared` columns, a field the columns do not
/// name is an error, and a string is also read as the text of its column's type.
fn write_rows(
    rows: &Rows,
    columns: Vec<Column>,
    out: &[ObjectMap],
    declared: bool,
) -> Result<Body, StepError> {
    let keys: Vec<KeyString> = columns
        .iter()
        .map(|column| KeyString::from(column.name.as_str()))
        .collect();
    let kinds: Vec<ColumnType> = columns.iter().map(|column| column.kind).collect();
    let mut writer = BatchWriter::new(columns);
    for (index, object) in out.iter().enumerate() {
        let row = index + 1;
        if declared && let Some(extra) = object.keys().find(|key| !keys.contains(key)) {
            return Err(rows.error(
                row,
                format!("the row has the field `{extra}`, which `columns` does not declare"),
            ));
        }
        for (key, &kind) in keys.iter().zip(&kinds) {
            let value = object.get(key).unwrap_or(&Value::Null);
            write_value(&mut writer, kind, value, declared).map_err(|message| {
                rows.error(row, format!("column `{key}` ({kind}): {message}"))
            })?;
        }
        writer.end_row();
    }
    Ok(writer.finish())
}

/// Writes one value as a field of type `kind`; `lenient`: a string may be the text of the type.
fn write_value(
    writer: &mut BatchWriter,
    kind: ColumnType,
    value: &Value,
    lenient: bool,
) -> Result<(), String> {
    let refuse = || {
        format!(
            "{} `{}` does not fit",
            kind_name(value),
            value.to_string_lossy().chars().take(40).collect::<String>()
        )
    };
    if !fits(kind, value) {
        let text = text_of(value).filter(|_| lenient).ok_or_else(refuse)?;
        let cell = parse_text(kind, Cow::Borrowed(text)).map_err(|_| refuse())?;
        cell.write(writer);
        return Ok(());
    }
    match (kind, value) {
        (_, Value::Null) => writer.null(),
        (ColumnType::Json, value) => {
            let json = json_bytes(value, 32).map_err(|error| error.message)?;
            writer.text(&String::from_utf8_lossy(&json));
        }
        (ColumnType::Boolean, Value::Boolean(value)) => writer.raw(if *value { "t" } else { "f" }),
        (ColumnType::Integer | ColumnType::Float | ColumnType::Numeric, Value::Integer(value)) => {
            writer.raw(&value.to_string())
        }
        (ColumnType::Float | ColumnType::Numeric, Value::Float(value)) => {
            Cell::Float(value.into_inner()).write(writer)
        }
        (ColumnType::Timestamp, Value::Timestamp(at)) => {
            Cell::Timestamp(at.naive_utc()).write(writer)
        }
        (ColumnType::Timestamptz, Value::Timestamp(at)) => Cell::Timestamptz(*at).write(writer),
        (ColumnType::Date, Value::Timestamp(at)) => Cell::Date(at.date_naive()).write(writer),
        (ColumnType::Bytes, Value::Bytes(bytes)) => writer.bytes(bytes),
        (ColumnType::Bytes, Value::String(text)) => writer.bytes(text.as_bytes()),
        (_, value) => match text_of(value) {
            Some(text) if kind == ColumnType::Text => writer.text(text),
            Some(text) => parse_text(kind, Cow::Borrowed(text))
                .map_err(|_| refuse())?
                .write(writer),
            None => return Err(refuse()),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ferry_core::{BuildContext, Outcome, Processor};
    use serde_json::json;
    use vrl::value::Value;

    use super::*;

    fn processor(kind: &str, config: serde_json::Value) -> Box<dyn Processor> {
        crate::registry()
            .processor(kind, &config, &BuildContext::default())
            .unwrap()
    }

    /// A chunk of three rows of seven columns, as the `sql` puller makes them.
    fn chunk(with_load: bool) -> Passenger {
        let columns = vec![
            Column::new("id", ColumnType::Integer),
            Column::new("name", ColumnType::Text),
            Column::new("amount", ColumnType::Numeric),
            Column::new("at", ColumnType::Timestamptz),
            Column::new("day", ColumnType::Date),
            Column::new("doc", ColumnType::Json),
            Column::new("ok", ColumnType::Boolean),
        ];
        let mut writer = BatchWriter::new(columns);
        for (id, name, amount, at, doc) in [
            (
                "1",
                "ann",
                "12345678901234567890.25",
                "2024-05-31 12:00:00+02",
                "{\"a\":1}",
            ),
            ("2", "bob\ttab", "-0.5", "2024-01-01 00:00:00.5+00", "[1,2]"),
        ] {
            writer.raw(id);
            writer.text(name);
            writer.raw(amount);
            writer.raw(at);
            writer.raw("2024-05-31");
            writer.text(doc);
            writer.raw("t");
            writer.end_row();
        }
        for _ in 0..7 {
            writer.null();
        }
        writer.end_row();
        let mut passenger = Passenger::pulled("db", "load-1#2").with_body(writer.finish());
        passenger.metadata.insert(records::ROWS.into(), "3".into());
        if with_load {
            records::Chunk {
                load: "L".into(),
                number: 2,
                last: false,
            }
            .mark(&mut passenger);
        }
        passenger
    }

    fn continued(outcome: Outcome) -> Passenger {
        match outcome {
            Outcome::Continue(passenger) => passenger,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// The batch's columns (`name:type`) and its rows as text.
    fn table(passenger: &Passenger) -> (Vec<String>, Vec<Vec<Option<String>>>) {
        let batch = records::read(&passenger.body).unwrap();
        assert_eq!(batch.rows, records::rows(&batch.data).len());
        let columns = batch
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.kind))
            .collect();
        (columns, records::rows(&batch.data))
    }

    #[test]
    fn remap_runs_once_per_row_and_keeps_or_infers_types() {
        let remap = processor(
            "remap",
            json!({ "source": r#"
                .customer = .id
                del(.id)
                .name = upcase(string(.name) ?? "")
                .cents = if .amount != null { to_float!(.amount) * 100 } else { null }
                .year = if .at != null { to_int(format_timestamp!(.at, "%Y")) ?? 0 } else { null }
                .first = .doc[0]
                %seen = "yes"
            "# }),
        );
        let out = continued(remap.process(chunk(true)).unwrap());
        let (columns, rows) = table(&out);
        assert_eq!(
            columns,
            [
                "name:text",
                "amount:numeric",
                "at:timestamptz",
                "day:date",
                "doc:json",
                "ok:boolean",
                "cents:float",
                "customer:integer",
                "first:integer",
                "year:integer"
            ]
        );
        let text = |s: &str| Some(s.to_string());
        assert_eq!(
            rows[0],
            [
                text("ANN"),
                text("12345678901234567890.25"),
                text("2024-05-31 10:00:00+00"),
                text("2024-05-31"),
                text("{\"a\":1}"),
                text("t"),
                text("1234567890123456800000"),
                text("1"),
                None,
                text("2024")
            ]
        );
        assert_eq!(rows[1][0], text("BOB\tTAB"));
        assert_eq!(rows[1][2], text("2024-01-01 00:00:00.5+00"));
        assert_eq!(rows[1][8], text("1"));
        assert_eq!(rows[2][0], text(""));
        assert_eq!(rows[2][1], None);
        assert_eq!(out.metadata["seen"], "yes");
        assert_eq!(out.metadata[records::ROWS], "3");
        assert_eq!(out.metadata[records::LOAD], "L");
    }

    #[test]
    fn a_failing_row_names_its_number_and_chunk() {
        let remap = processor(
            "remap",
            json!({ "source": "if .id == 2 { abort \"no twos\" }\n.id = .id" }),
        );
        let error = remap.process(chunk(true)).unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "row 2 of chunk 2 of load L: aborted at line 1, column 15: no twos"
        );
        let error = remap.process(chunk(false)).unwrap_err();
        assert!(error.message.starts_with("row 2: aborted"), "{error}");

        let remap = processor("remap", json!({ "source": ". = 3" }));
        let error = remap.process(chunk(false)).unwrap_err();
        assert!(
            error
                .message
                .contains("row 1: the program made the row an integer"),
            "{error}"
        );
    }

    #[test]
    fn declared_columns_fix_names_and_types() {
        let remap = processor(
            "remap",
            json!({
                "source": ". = { \"id\": .id, \"when\": \"2024-06-01T08:00:00Z\", \"amount\": .amount }",
                "columns": [
                    { "name": "when", "type": "timestamptz" },
                    { "name": "id", "type": "float" },
                    { "name": "amount", "type": "text" },
                ],
            }),
        );
        let out = continued(remap.process(chunk(false)).unwrap());
        let (columns, rows) = table(&out);
        assert_eq!(columns, ["when:timestamptz", "id:float", "amount:text"]);
        assert_eq!(
            rows[0],
            [
                Some("2024-06-01 08:00:00+00".to_string()),
                Some("1".to_string()),
                Some("12345678901234567890.25".to_string())
            ]
        );

        let remap = processor(
            "remap",
            json!({ "source": ".extra = 1", "columns": [{ "name": "id", "type": "integer" }] }),
        );
        let error = remap.process(chunk(false)).unwrap_err();
        assert!(
            error
                .message
                .starts_with("row 1: the row has the field `amount`"),
            "{error}"
        );

        let remap = processor(
            "remap",
            json!({ "source": ".id = \"x\"", "columns": [{ "name": "id", "type": "integer" }] }),
        );
        let error = remap.process(chunk(false)).unwrap_err();
        assert!(
            error.message.starts_with("row 1: the row has the field"),
            "{error}"
        );
        let remap = processor(
            "remap",
            json!({ "source": ". = { \"id\": \"x\" }", "columns": [{ "name": "id", "type": "integer" }] }),
        );
        let error = remap.process(chunk(false)).unwrap_err();
        assert_eq!(
            error.message,
            "row 1: column `id` (integer): a string `x` does not fit"
        );
    }

    #[test]
    fn declared_columns_are_checked_when_built() {
        for (columns, message) in [
            (json!([]), "give at least one column"),
            (
                json!([{ "name": "a", "type": "text" }, { "name": "a", "type": "text" }]),
                "twice",
            ),
            (
                json!([{ "name": "a", "type": "varchar" }]),
                "unknown variant",
            ),
        ] {
            let error = crate::registry()
                .processor(
                    "remap",
                    &json!({ "source": ".a = 1", "columns": columns }),
                    &BuildContext::default(),
                )
                .err()
                .unwrap();
            assert!(error.to_string().contains(message), "{error}");
        }
        // And on a JSON body they do not apply.
        let remap = processor(
            "remap",
            json!({ "source": ".a = 1", "columns": [{ "name": "a", "type": "integer" }] }),
        );
        let json = Passenger::pulled("t", "1").with_body(Body::json(&json!({})));
        assert!(
            remap
                .process(json)
                .unwrap_err()
                .message
                .contains("applies to record batches")
        );
    }

    #[test]
    fn an_empty_chunk_keeps_its_columns() {
        let filter = processor("filter", json!({ "condition": "false" }));
        let empty = continued(filter.process(chunk(true)).unwrap());
        let remap = processor("remap", json!({ "source": ".x = 1" }));
        let out = continued(remap.process(empty).unwrap());
        let (columns, rows) = table(&out);
        assert_eq!(columns.len(), 7);
        assert_eq!(columns[0], "id:integer");
        assert!(rows.is_empty());
        assert_eq!(out.metadata[records::ROWS], "0");
    }

    #[test]
    fn a_metadata_only_program_runs_once() {
        let remap = processor("remap", json!({ "source": "%n = (to_int(%n) ?? 0) + 1" }));
        let out = continued(remap.process(chunk(false)).unwrap());
        assert_eq!(out.metadata["n"], "1");
        assert_eq!(table(&out).1.len(), 3);
    }

    #[test]
    fn filter_drops_rows_and_counts_them() {
        let filter = processor("filter", json!({ "condition": ".ok == true && .id != 2" }));
        let out = continued(filter.process(chunk(true)).unwrap());
        let (columns, rows) = table(&out);
        assert_eq!(columns.len(), 7);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0].as_deref(), Some("1"));
        // Kept rows are copied as they were, escapes included.
        assert_eq!(out.metadata[ROWS_DROPPED], "2");
        assert_eq!(out.metadata[records::ROWS], "1");

        // Every row dropped: a chunk of a load travels on empty, a lone batch is filtered.
        let none = processor("filter", json!({ "condition": "false" }));
        let out = continued(none.process(chunk(true)).unwrap());
        assert_eq!(table(&out).1.len(), 0);
        assert_eq!(out.metadata[ROWS_DROPPED], "3");
        match none.process(chunk(false)).unwrap() {
            Outcome::Filtered { reason } => {
                assert_eq!(reason, "the condition is false for every row (3): `false`")
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn a_condition_that_is_not_boolean_names_the_row() {
        let filter = processor("filter", json!({ "condition": ".name" }));
        let error = filter.process(chunk(true)).unwrap_err();
        assert_eq!(
            error.message,
            "row 1 of chunk 2 of load L: the condition `.name` gave a string `ann`, not a boolean"
        );
    }

    #[test]
    fn a_broken_batch_fails_with_the_reason() {
        let mut passenger = chunk(false);
        let mut data = passenger.body.data.to_vec();
        // The first row's integer becomes text.
        let at = data.iter().position(|&b| b == b'\n').unwrap() + 1;
        data[at] = b'x';
        passenger.body.data = data.into();
        let filter = processor("filter", json!({ "condition": ".ok == true" }));
        let error = filter.process(passenger).unwrap_err();
        assert_eq!(
            error.message,
            "row 1: column `id`: `x` is not a 64-bit integer"
        );
    }

    #[test]
    fn types_are_inferred_from_values() {
        let int = Value::Integer(1);
        let float = Value::from_f64_or_zero(1.5);
        let text = Value::from("x");
        assert_eq!(infer([&int, &Value::Null].into_iter()), ColumnType::Integer);
        assert_eq!(infer([&int, &float].into_iter()), ColumnType::Float);
        assert_eq!(infer([&int, &text].into_iter()), ColumnType::Json);
        assert_eq!(infer([&Value::Null].into_iter()), ColumnType::Text);
        assert!(fits(ColumnType::Numeric, &Value::from("12.50")));
        assert!(!fits(ColumnType::Numeric, &Value::from("twelve")));
        assert!(!fits(ColumnType::Integer, &Value::from("12")));
    }
}
