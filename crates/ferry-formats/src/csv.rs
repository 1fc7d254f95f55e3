//! CSV: rows of text fields, with or without a header line.
//!
//! With a header (or `columns`) each row is an object of strings keyed by column name; without,
//! an array of strings. Decoding never guesses types: every value is a string.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::{FormatError, pointer_push};
use crate::json::{kind, strip_bom};

const CSV: &str = "CSV";

/// A validated CSV configuration.
#[derive(Clone, Debug)]
pub(crate) struct CsvFormat {
    pub(crate) header: bool,
    pub(crate) delimiter: u8,
    pub(crate) quote: u8,
    pub(crate) columns: Option<Vec<String>>,
}

impl CsvFormat {
    /// Rows as objects (with a header or `columns`) or as arrays.
    fn rows_are_objects(&self) -> bool {
        self.header || self.columns.is_some()
    }

    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.delimiter)
            .quote(self.quote)
            .from_reader(strip_bom(bytes));
        let mut records = reader.records();
        let names: Option<Vec<String>> = if self.header {
            match records.next() {
                None => return Ok(Value::Array(Vec::new())),
                Some(header) => {
                    let header = header.map_err(csv_error)?;
                    let mut seen = HashSet::new();
                    for name in &header {
                        if !seen.insert(name) {
                            return Err(FormatError::at_line(
                                CSV,
                                line_of(&header),
                                None,
                                format!("the header names column `{name}` twice"),
                            ));
                        }
                    }
                    Some(header.iter().map(String::from).collect())
                }
            }
        } else {
            self.columns.clone()
        };

        let mut rows = Vec::new();
        for record in records {
            let record = record.map_err(csv_error)?;
            let Some(names) = &names else {
                rows.push(Value::Array(
                    record.iter().map(|f| Value::String(f.into())).collect(),
                ));
                continue;
            };
            if record.len() != names.len() {
                // The reader checks rows against the first row; this checks the first row
                // against `columns`.
                return Err(FormatError::at_line(
                    CSV,
                    line_of(&record),
                    None,
                    format!(
                        "found {} fields, expected {} (`columns`)",
                        record.len(),
                        names.len()
                    ),
                ));
            }
            let mut row = Map::new();
            for (name, field) in names.iter().zip(&record) {
                row.insert(name.clone(), Value::String(field.into()));
            }
            rows.push(Value::Object(row));
        }
        Ok(Value::Array(rows))
    }

    pub(crate) fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let Value::Array(rows) = value else {
            return Err(FormatError::at_path(
                CSV,
                "",
                format!("expected an array of rows, found {}", kind(value)),
            ));
        };
        let mut writer = csv::WriterBuilder::new()
            // Rows without a header may differ in length, as they may when read.
            .flexible(true)
            .delimiter(self.delimiter)
            .quote(self.quote)
            .from_writer(Vec::with_capacity(rows.len() * 64));
        let write_error = |error: csv::Error| FormatError::new(CSV, error.to_string());

        if !self.rows_are_objects() {
            for (index, row) in rows.iter().enumerate() {
                let Value::Array(fields) = row else {
                    return Err(row_error(index, row, "an array (no header, no `columns`)"));
                };
                writer
                    .write_record(fields.iter().map(field_text))
                    .map_err(write_error)?;
            }
            return writer_bytes(writer);
        }

        let columns = match &self.columns {
            Some(columns) => columns.clone(),
            None => union_of_keys(rows)?,
        };
        if self.header && (!rows.is_empty() || self.columns.is_some()) {
            writer.write_record(&columns).map_err(write_error)?;
        }
        let mut fields = Vec::with_capacity(columns.len());
        for (index, row) in rows.iter().enumerate() {
            let Value::Object(row_object) = row else {
                return Err(row_error(index, row, "an object"));
            };
            fields.clear();
            for column in &columns {
                let field = row_object
                    .get(column)
                    .map_or(Cow::Borrowed(""), field_text_ref);
                fields.push(field);
            }
            writer
                .write_record(fields.iter().map(|field| field.as_bytes()))
                .map_err(write_error)?;
        }
        writer_bytes(writer)
    }
}

impl CsvFormat {
    /// A record batch's typed rows, in column order (or the order of `columns`, which must name
    /// columns of the batch), each value as its text (NULL empty, booleans `true`/`false`).
    pub(crate) fn encode_records(
        &self,
        columns: &[ferry_core::records::Column],
        rows: &[Vec<crate::records::Cell<'_>>],
    ) -> Result<Vec<u8>, FormatError> {
        let order: Vec<usize> = match &self.columns {
            None => (0..columns.len()).collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    columns.iter().position(|c| &c.name == name).ok_or_else(|| {
                        FormatError::new(
                            CSV,
                            format!("`columns` names `{name}`, which the record batch lacks"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .from_writer(Vec::with_capacity(rows.len() * columns.len() * 8 + 64));
        let write_error = |error: csv::Error| FormatError::new(CSV, error.to_string());
        if self.header {
            writer
                .write_record(order.iter().map(|&at| columns[at].name.as_str()))
                .map_err(write_error)?;
        }
        for cells in rows {
            writer
                .write_record(order.iter().map(|&at| cells[at].csv_text().into_owned()))
                .map_err(write_error)?;
        }
        writer_bytes(writer)
    }
}

/// The keys of all rows, in the order they are first seen.
fn union_of_keys(rows: &[Value]) -> Result<Vec<String>, FormatError> {
    let mut seen = HashSet::new();
    let mut columns = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(row_error(index, row, "an object"));
        };
        for key in row.keys() {
            if seen.insert(key.as_str()) {
                columns.push(key.clone());
            }
        }
    }
    if columns.is_empty() && !rows.is_empty() {
        return Err(FormatError::at_path(
            CSV,
            "",
            "the rows have no keys, so there are no columns to write",
        ));
    }
    Ok(columns)
}

fn row_error(index: usize, row: &Value, expected: &str) -> FormatError {
    FormatError::at_path(
        CSV,
        pointer_push("", &index.to_string()),
        format!("expected {expected}, found {}", kind(row)),
    )
}

/// A value as a CSV field: strings as they are, `null` as an empty field, anything else as its
/// JSON text.
fn field_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// [`field_text`] without copying strings, for the common case.
fn field_text_ref(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text.as_str()),
        other => Cow::Owned(field_text(other)),
    }
}

fn writer_bytes(writer: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, FormatError> {
    writer
        .into_inner()
        .map_err(|error| FormatError::new(CSV, error.error().to_string()))
}

/// The line a record starts on.
fn line_of(record: &csv::StringRecord) -> u64 {
    record.position().map_or(0, csv::Position::line)
}

/// A reading error with the line of the record it is in.
fn csv_error(error: csv::Error) -> FormatError {
    let line = error.position().map(csv::Position::line);
    let message = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("found {len} fields, expected {expected_len}"),
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "field {} is not valid UTF-8 (at byte {} of the field)",
            err.field() + 1,
            err.valid_up_to()
        ),
        _ => error.to_string(),
    };
    match line {
        Some(line) => FormatError::at_line(CSV, line, None, message),
        None => FormatError::new(CSV, message),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn csv(header: bool) -> CsvFormat {
        CsvFormat {
            header,
            delimiter: b',',
            quote: b'"',
            columns: None,
        }
    }

    #[test]
    fn header_rows_become_objects_of_strings() {
        let value = csv(true)
            .decode(b"id,name,note\n1,Ann,\"a, b\"\n2,Bob,\"say \"\"hi\"\"\"\n")
            .unwrap();
        assert_eq!(
            value,
            json!([
                { "id": "1", "name": "Ann", "note": "a, b" },
                { "id": "2", "name": "Bob", "note": "say \"hi\"" },
            ])
        );
        assert_eq!(csv(true).decode(b"").unwrap(), json!([]));
        assert_eq!(csv(true).decode(b"a,b\n").unwrap(), json!([]));
    }

    #[test]
    fn without_header_rows_are_arrays_or_named_by_columns() {
        let value = csv(false).decode(b"1;x\n2;y\n").unwrap();
        assert_eq!(value, json!([["1;x"], ["2;y"]]));
        let semicolon = CsvFormat {
            delimiter: b';',
            ..csv(false)
        };
        assert_eq!(
            semicolon.decode(b"1;x\n2;y\n").unwrap(),
            json!([["1", "x"], ["2", "y"]])
        );
        let named = CsvFormat {
            columns: Some(vec!["id".into(), "v".into()]),
            ..semicolon
        };
        assert_eq!(
            named.decode(b"1;x\n").unwrap(),
            json!([{ "id": "1", "v": "x" }])
        );
        let error = named.decode(b"1;x;z\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "CSV line 1: found 3 fields, expected 2 (`columns`)"
        );
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let error = csv(true).decode(b"a,b,c\n1,2,3\n4,5,6,7\n").unwrap_err();
        assert_eq!(error.to_string(), "CSV line 3: found 4 fields, expected 3");
        let error = csv(true).decode(b"a,b\n1,\xFF\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "CSV line 2: field 2 is not valid UTF-8 (at byte 0 of the field)"
        );
        let error = csv(true).decode(b"a,a\n1,2\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "CSV line 1: the header names column `a` twice"
        );
        // A quoted field spanning lines: the error is on the line its record starts.
        let error = csv(true).decode(b"a,b\n\"x\ny\",2\n3\n").unwrap_err();
        assert_eq!(error.to_string(), "CSV line 4: found 1 fields, expected 2");
    }

    #[test]
    fn encode_writes_the_union_of_keys() {
        let rows = json!([{ "a": "1", "b": 2 }, { "c": true, "a": null }, { "b": [1, "x"] }]);
        let text = csv(true).encode(&rows).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "a,b,c\n1,2,\n,,true\n,\"[1,\"\"x\"\"]\",\n"
        );
        let columns = CsvFormat {
            columns: Some(vec!["b".into(), "a".into()]),
            ..csv(true)
        };
        let text = columns.encode(&rows).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "b,a\n2,1\n,\n\"[1,\"\"x\"\"]\",\n"
        );
        assert_eq!(columns.encode(&json!([])).unwrap(), b"b,a\n");
        assert_eq!(csv(true).encode(&json!([])).unwrap(), b"");
        let arrays = csv(false).encode(&json!([["x", 1], ["y,z"]])).unwrap();
        assert_eq!(arrays, b"x,1\n\"y,z\"\n");
    }

    #[test]
    fn encode_errors_point_at_the_row() {
        let error = csv(true).encode(&json!([{ "a": 1 }, [2]])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CSV at /1: expected an object, found an array"
        );
        let error = csv(false).encode(&json!([{ "a": 1 }])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CSV at /0: expected an array (no header, no `columns`), found an object"
        );
        let error = csv(true).encode(&json!({ "a": 1 })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CSV at the top level: expected an array of rows, found an object"
        );
    }
}
