//! xlsx workbooks: a record batch is written as one sheet (a header row, then one row per
//! record) with rust_xlsxwriter; a workbook's first sheet is read into JSON rows with calamine.
//!
//! Excel holds numbers as 64-bit floats and has no time zones: integers beyond 2^53 and
//! `numeric` values with more than 15 significant digits are written as text so no digit is
//! lost, and `timestamptz` is written in UTC.

use std::io::Cursor;

use calamine::{Data, Reader as _, Xlsx};
use chrono::NaiveDate;
use ferry_core::records::Column;
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use serde_json::{Map, Value};

use super::Cell;
use crate::error::{FormatError, Position};

const XLSX: &str = "xlsx";
/// Rows a sheet holds, the header included.
const MAX_ROWS: usize = 1_048_576;
/// The largest integer a float holds exactly.
const MAX_EXACT: i64 = 1 << 53;

/// Writes the rows as one sheet, `Sheet1`, with the column names as its first row.
pub(crate) fn write(columns: &[Column], rows: &[Vec<Cell<'_>>]) -> Result<Vec<u8>, FormatError> {
    if rows.len() >= MAX_ROWS {
        return Err(FormatError::new(
            XLSX,
            format!(
                "{} rows do not fit one sheet (at most {} below the header); split the batch",
                rows.len(),
                MAX_ROWS - 1
            ),
        ));
    }
    write_sheet(columns, rows).map_err(|error| FormatError::new(XLSX, error.to_string()))
}

fn write_sheet(columns: &[Column], rows: &[Vec<Cell<'_>>]) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let time = Format::new().set_num_format("hh:mm:ss");
    let date_time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    let sheet = workbook.add_worksheet();
    for (index, column) in columns.iter().enumerate() {
        sheet.write_string(0, index as u16, &column.name)?;
    }
    for (number, row) in rows.iter().enumerate() {
        let at = number as u32 + 1;
        for (index, cell) in row.iter().enumerate() {
            let index = index as u16;
            match cell {
                Cell::Null => {}
                Cell::Boolean(value) => {
                    sheet.write_boolean(at, index, *value)?;
                }
                Cell::Integer(value) if value.abs() <= MAX_EXACT => {
                    sheet.write_number(at, index, *value as f64)?;
                }
                Cell::Float(value) if value.is_finite() => {
                    sheet.write_number(at, index, *value)?;
                }
                Cell::Numeric(text) if exact_as_float(text) => {
                    sheet.write_number(at, index, text.parse::<f64>().unwrap_or_default())?;
                }
                Cell::Date(day) => {
                    sheet.write_datetime_with_format(at, index, day, &date)?;
                }
                Cell::Time(clock) => {
                    sheet.write_datetime_with_format(at, index, clock, &time)?;
                }
                Cell::Timestamp(moment) => {
                    sheet.write_datetime_with_format(at, index, moment, &date_time)?;
                }
                Cell::Timestamptz(moment) => {
                    sheet.write_datetime_with_format(at, index, moment.naive_utc(), &date_time)?;
                }
                other => {
                    sheet.write_string(at, index, other.csv_text())?;
                }
            }
        }
    }
    workbook.save_to_buffer()
}

/// Whether a decimal's text has at most 15 significant digits, so a float holds it exactly.
fn exact_as_float(text: &str) -> bool {
    let digits = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count();
    digits <= 15 && !text.contains(['e', 'E', 'N', 'n'])
}

/// The first sheet of a workbook as a JSON array of row objects, keyed by the first row: numbers
/// as numbers, dates and times ISO 8601 strings, empty cells null. Fully empty rows are skipped.
pub(crate) fn read(bytes: &[u8]) -> Result<Value, FormatError> {
    let mut workbook: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|error| FormatError::new(XLSX, format!("not an xlsx workbook: {error}")))?;
    let range = workbook
        .worksheet_range_at(0)
        .ok_or_else(|| FormatError::new(XLSX, "the workbook has no sheet"))?
        .map_err(|error| FormatError::new(XLSX, error.to_string()))?;
    let mut rows = range.rows();
    let Some(header) = rows.next() else {
        return Ok(Value::Array(Vec::new()));
    };
    let names: Vec<String> = header.iter().map(ToString::to_string).collect();
    let mut out = Vec::new();
    for (number, cells) in rows.enumerate() {
        if cells.iter().all(|cell| *cell == Data::Empty) {
            continue;
        }
        let mut row = Map::new();
        for (name, cell) in names.iter().zip(cells) {
            if name.is_empty() {
                continue;
            }
            let value = json_value(cell).map_err(|message| {
                FormatError::at(
                    XLSX,
                    Position::Line {
                        line: number as u64 + 2,
                        column: None,
                    },
                    format!("column `{name}`: {message}"),
                )
            })?;
            row.insert(name.clone(), value);
        }
        out.push(Value::Object(row));
    }
    Ok(Value::Array(out))
}

/// A cell as JSON.
fn json_value(cell: &Data) -> Result<Value, String> {
    Ok(match cell {
        Data::Empty => Value::Null,
        Data::String(text) | Data::DateTimeIso(text) | Data::DurationIso(text) => {
            Value::String(text.clone())
        }
        Data::Int(value) => Value::from(*value),
        Data::Float(value) if value.fract() == 0.0 && value.abs() < MAX_EXACT as f64 => {
            Value::from(*value as i64)
        }
        Data::Float(value) => Value::from(*value),
        Data::Bool(value) => Value::Bool(*value),
        Data::DateTime(value) => {
            let (year, month, day, hour, minute, second, milli) = value.to_ymd_hms_milli();
            let at = NaiveDate::from_ymd_opt(year.into(), month.into(), day.into())
                .and_then(|date| {
                    date.and_hms_milli_opt(hour.into(), minute.into(), second.into(), milli.into())
                })
                .ok_or("the cell is not a valid date")?;
            if value.is_datetime() && (hour, minute, second, milli) == (0, 0, 0, 0) {
                Value::String(at.format("%Y-%m-%d").to_string())
            } else {
                Value::String(at.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
            }
        }
        Data::Error(error) => return Err(format!("the cell holds the error {error}")),
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use chrono::NaiveDateTime;
    use ferry_core::records::ColumnType;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_batch_written_as_a_workbook_reads_back() {
        let columns = vec![
            Column::new("id", ColumnType::Integer),
            Column::new("name", ColumnType::Text),
            Column::new("amount", ColumnType::Numeric),
            Column::new("big", ColumnType::Numeric),
            Column::new("day", ColumnType::Date),
            Column::new("at", ColumnType::Timestamp),
            Column::new("ok", ColumnType::Boolean),
        ];
        let at = NaiveDateTime::parse_from_str("2024-05-31 12:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let rows = vec![vec![
            Cell::Integer(7),
            Cell::Text(Cow::Borrowed("Ann")),
            Cell::Numeric(Cow::Borrowed("12.5")),
            Cell::Numeric(Cow::Borrowed("12345678901234567.89")),
            Cell::Date(at.date()),
            Cell::Timestamp(at),
            Cell::Boolean(false),
        ]];
        let book = write(&columns, &rows).unwrap();
        assert_eq!(&book[..2], b"PK");
        assert_eq!(
            read(&book).unwrap(),
            json!([{ "id": 7, "name": "Ann", "amount": 12.5, "big": "12345678901234567.89",
                     "day": "2024-05-31", "at": "2024-05-31T12:30:00", "ok": false }])
        );
    }

    #[test]
    fn something_that_is_not_a_workbook_is_refused() {
        let error = read(b"id,name\n1,Ann\n").unwrap_err();
        assert!(
            error.to_string().starts_with("xlsx: not an xlsx workbook"),
            "{error}"
        );
    }
}
