//! Parquet, with the arrow and parquet crates: a record batch is written as one Parquet file
//! (one row group, snappy pages), and a Parquet file is read into JSON rows.
//!
//! Types survive the round trip: every column's ferry type is kept in the Arrow field's
//! metadata (`ferry.type`), which the parquet crate stores in the file's Arrow schema. `numeric`
//! is a `Decimal128(38, s)` (the chunk's largest scale) when every value fits 38 digits, else
//! text with the note `ferry.note`; `timestamptz` a UTC-adjusted microsecond timestamp,
//! `timestamp` a local (not adjusted) one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use ferry_core::records::{Column, ColumnType};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

use super::Cell;
use crate::error::{FormatError, Position};

const PARQUET: &str = "Parquet";
/// Field metadata key: the column's ferry type.
pub(crate) const TYPE_KEY: &str = "ferry.type";
/// Field metadata key: why a column is not stored in its natural Parquet type.
pub(crate) const NOTE_KEY: &str = "ferry.note";
/// The most digits a `Decimal128` holds.
const MAX_PRECISION: u8 = 38;

/// Writes the rows (already typed, row by row) as one Parquet file.
pub(crate) fn write(columns: &[Column], rows: &[Vec<Cell<'_>>]) -> Result<Vec<u8>, FormatError> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let cells = rows.iter().map(|row| &row[index]);
        let (field, array) = column_array(column, cells);
        fields.push(field);
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|error| FormatError::new(PARQUET, error.to_string()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::with_capacity(rows.len() * columns.len() * 8 + 1024);
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties))
        .map_err(|error| FormatError::new(PARQUET, error.to_string()))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(drop))
        .map_err(|error| FormatError::new(PARQUET, error.to_string()))?;
    Ok(out)
}

/// One column as an Arrow field (with its ferry type in the metadata) and array.
fn column_array<'c, 'a: 'c>(
    column: &Column,
    cells: impl Iterator<Item = &'c Cell<'a>> + Clone,
) -> (Field, ArrayRef) {
    let mut metadata = HashMap::from([(TYPE_KEY.to_string(), column.kind.as_str().to_string())]);
    let (data_type, array): (DataType, ArrayRef) = match column.kind {
        ColumnType::Boolean => {
            let mut builder = BooleanBuilder::new();
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Boolean(value) => Some(*value),
                    _ => None,
                });
            }
            (DataType::Boolean, Arc::new(builder.finish()))
        }
        ColumnType::Integer => {
            let mut builder = Int64Builder::new();
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Integer(value) => Some(*value),
                    _ => None,
                });
            }
            (DataType::Int64, Arc::new(builder.finish()))
        }
        ColumnType::Float => {
            let mut builder = Float64Builder::new();
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Float(value) => Some(*value),
                    _ => None,
                });
            }
            (DataType::Float64, Arc::new(builder.finish()))
        }
        ColumnType::Numeric => match decimal_scale(cells.clone()) {
            Some(scale) => {
                let mut builder = Decimal128Builder::new()
                    .with_precision_and_scale(MAX_PRECISION, scale as i8)
                    .expect("38 digits and a scale up to 38 are valid");
                for cell in cells {
                    builder.append_option(match cell {
                        Cell::Numeric(text) => decimal_units(text, scale),
                        _ => None,
                    });
                }
                let data_type = DataType::Decimal128(MAX_PRECISION, scale as i8);
                (data_type, Arc::new(builder.finish()))
            }
            None => {
                metadata.insert(
                    NOTE_KEY.into(),
                    "kept as text: a value has more than 38 digits, an exponent or is NaN".into(),
                );
                strings(cells)
            }
        },
        ColumnType::Text | ColumnType::Json | ColumnType::Uuid => strings(cells),
        ColumnType::Date => {
            let mut builder = Date32Builder::new();
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Date(date) => Some(days(*date)),
                    _ => None,
                });
            }
            (DataType::Date32, Arc::new(builder.finish()))
        }
        ColumnType::Time => {
            let mut builder = Time64MicrosecondBuilder::new();
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Time(time) => Some(
                        i64::from(time.num_seconds_from_midnight()) * 1_000_000
                            + i64::from(time.nanosecond() / 1000),
                    ),
                    _ => None,
                });
            }
            (
                DataType::Time64(TimeUnit::Microsecond),
                Arc::new(builder.finish()),
            )
        }
        ColumnType::Timestamp => {
            let mut builder = TimestampMicrosecondBuilder::new();
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Timestamp(at) => Some(at.and_utc().timestamp_micros()),
                    _ => None,
                });
            }
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                Arc::new(builder.finish()),
            )
        }
        ColumnType::Timestamptz => {
            let mut builder = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for cell in cells {
                builder.append_option(match cell {
                    Cell::Timestamptz(at) => Some(at.timestamp_micros()),
                    _ => None,
                });
            }
            let data_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            (data_type, Arc::new(builder.finish()))
        }
        ColumnType::Bytes => {
            let mut builder = BinaryBuilder::new();
            for cell in cells {
                match cell {
                    Cell::Bytes(bytes) => builder.append_value(bytes),
                    _ => builder.append_null(),
                }
            }
            (DataType::Binary, Arc::new(builder.finish()))
        }
    };
    let field = Field::new(&column.name, data_type, true).with_metadata(metadata);
    (field, array)
}

/// A text column.
fn strings<'c, 'a: 'c>(cells: impl Iterator<Item = &'c Cell<'a>>) -> (DataType, ArrayRef) {
    let mut builder = StringBuilder::new();
    for cell in cells {
        match cell {
            Cell::Null => builder.append_null(),
            Cell::Text(text) | Cell::Json(text) | Cell::Uuid(text) | Cell::Numeric(text) => {
                builder.append_value(text)
            }
            other => builder.append_value(other.csv_text()),
        }
    }
    (DataType::Utf8, Arc::new(builder.finish()))
}

/// Days since 1970-01-01.
fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")).num_days() as i32
}

/// The scale that holds every decimal of the column within 38 digits, or `None` when one does
/// not fit (too many digits, an exponent, NaN).
fn decimal_scale<'c, 'a: 'c>(cells: impl Iterator<Item = &'c Cell<'a>>) -> Option<u8> {
    let (mut whole_digits, mut scale) = (0usize, 0usize);
    for cell in cells {
        let Cell::Numeric(text) = cell else { continue };
        let unsigned = text.trim_start_matches(['-', '+']);
        if !unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        whole_digits = whole_digits.max(whole.trim_start_matches('0').len());
        scale = scale.max(fraction.len());
    }
    (whole_digits + scale <= usize::from(MAX_PRECISION)).then_some(scale as u8)
}

/// A decimal's text as an integer count of `10^-scale` units (the scale holds its fraction).
fn decimal_units(text: &str, scale: u8) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.trim_start_matches('+')),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let mut digits = String::with_capacity(whole.len() + usize::from(scale));
    digits.push_str(whole);
    digits.push_str(fraction);
    digits.extend(std::iter::repeat_n(
        '0',
        usize::from(scale) - fraction.len(),
    ));
    let units: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(if negative { -units } else { units })
}

/// A Parquet file as a JSON array of row objects: integers and floats as numbers, decimals as
/// exact strings, dates and times ISO 8601 (UTC-adjusted timestamps with `Z`), binary base64,
/// columns written by ferry as `json` as their value.
pub(crate) fn read(bytes: &[u8]) -> Result<Value, FormatError> {
    let error = |error: parquet::errors::ParquetError| FormatError::new(PARQUET, error.to_string());
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes))
        .map_err(error)?
        .build()
        .map_err(error)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| FormatError::new(PARQUET, error.to_string()))?;
        let first = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Value::Object(Map::new())));
        let schema = batch.schema();
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let is_json = field.metadata().get(TYPE_KEY).is_some_and(|t| t == "json");
            for index in 0..array.len() {
                let value = json_value(array, index, is_json).map_err(|message| {
                    FormatError::at(
                        PARQUET,
                        Position::Record((first + index + 1) as u64),
                        format!("column `{}`: {message}", field.name()),
                    )
                })?;
                if let Value::Object(row) = &mut rows[first + index] {
                    row.insert(field.name().clone(), value);
                }
            }
        }
    }
    Ok(Value::Array(rows))
}

/// The value at `index` of an Arrow array, in JSON.
fn json_value(array: &dyn Array, index: usize, is_json: bool) -> Result<Value, String> {
    if array.is_null(index) {
        return Ok(Value::Null);
    }
    macro_rules! number {
        ($type:ty) => {
            Value::from(array.as_primitive::<$type>().value(index))
        };
    }
    let text = |text: &str| -> Result<Value, String> {
        if is_json {
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
        } else {
            Ok(Value::String(text.to_string()))
        }
    };
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(index)),
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float16 => Value::from(f64::from(
            array.as_primitive::<Float16Type>().value(index).to_f32(),
        )),
        DataType::Float32 => {
            Value::from(f64::from(array.as_primitive::<Float32Type>().value(index)))
        }
        DataType::Float64 => {
            let value = array.as_primitive::<Float64Type>().value(index);
            serde_json::Number::from_f64(value)
                .map_or_else(|| Value::String(super::float_text(value)), Value::Number)
        }
        DataType::Decimal128(_, scale) => Value::String(decimal_text(
            array.as_primitive::<Decimal128Type>().value(index),
            *scale,
        )),
        DataType::Utf8 => text(array.as_string::<i32>().value(index))?,
        DataType::LargeUtf8 => text(array.as_string::<i64>().value(index))?,
        DataType::Utf8View => text(array.as_string_view().value(index))?,
        DataType::Binary => Value::String(BASE64.encode(array.as_binary::<i32>().value(index))),
        DataType::LargeBinary => {
            Value::String(BASE64.encode(array.as_binary::<i64>().value(index)))
        }
        DataType::FixedSizeBinary(_) => {
            Value::String(BASE64.encode(array.as_fixed_size_binary().value(index)))
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(index);
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(days.into())))
                .ok_or("a date out of range")?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        DataType::Date64 => {
            let millis = array.as_primitive::<Date64Type>().value(index);
            let at = DateTime::from_timestamp_millis(millis).ok_or("a date out of range")?;
            Value::String(at.format("%Y-%m-%d").to_string())
        }
        DataType::Time32(unit) | DataType::Time64(unit) => {
            let nanos: i64 = match unit {
                TimeUnit::Second => {
                    i64::from(array.as_primitive::<Time32SecondType>().value(index)) * 1_000_000_000
                }
                TimeUnit::Millisecond => {
                    i64::from(array.as_primitive::<Time32MillisecondType>().value(index))
                        * 1_000_000
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<Time64MicrosecondType>().value(index) * 1000
                }
                TimeUnit::Nanosecond => array.as_primitive::<Time64NanosecondType>().value(index),
            };
            let time = NaiveTime::from_num_seconds_from_midnight_opt(
                (nanos / 1_000_000_000) as u32,
                (nanos % 1_000_000_000) as u32,
            )
            .ok_or("a time of day out of range")?;
            Value::String(time.format("%H:%M:%S%.f").to_string())
        }
        DataType::Timestamp(unit, zone) => {
            let at = timestamp(array, index, *unit).ok_or("a timestamp out of range")?;
            Value::String(match zone {
                Some(_) => at.and_utc().format("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
                None => at.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            })
        }
        other => return Err(format!("Parquet/Arrow type {other} is not supported")),
    })
}

/// A timestamp of any unit, as the date and time it counts from the epoch.
fn timestamp(array: &dyn Array, index: usize, unit: TimeUnit) -> Option<NaiveDateTime> {
    let at = match unit {
        TimeUnit::Second => {
            DateTime::from_timestamp(array.as_primitive::<TimestampSecondType>().value(index), 0)
        }
        TimeUnit::Millisecond => DateTime::from_timestamp_millis(
            array
                .as_primitive::<TimestampMillisecondType>()
                .value(index),
        ),
        TimeUnit::Microsecond => DateTime::from_timestamp_micros(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .value(index),
        ),
        TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(
            array.as_primitive::<TimestampNanosecondType>().value(index),
        )),
    };
    at.map(|at| at.naive_utc())
}

/// `units` × 10^-`scale` as exact decimal text: `-1250`, 2 → `-12.50`.
fn decimal_text(units: i128, scale: i8) -> String {
    let digits = units.unsigned_abs().to_string();
    let sign = if units < 0 { "-" } else { "" };
    if scale <= 0 {
        let zeros = "0".repeat(scale.unsigned_abs().into());
        return format!("{sign}{digits}{zeros}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use chrono::Utc;
    use serde_json::json;

    use super::*;

    #[test]
    fn decimals_keep_every_digit() {
        assert_eq!(decimal_units("-12.5", 2), Some(-1250));
        assert_eq!(decimal_text(-1250, 2), "-12.50");
        assert_eq!(decimal_text(5, 3), "0.005");
        assert_eq!(decimal_text(7, -2), "700");
        let big = Cell::Numeric(Cow::Borrowed("12345678901234567890123456789.123456789"));
        assert_eq!(decimal_scale([&big].into_iter()), Some(9));
        let huge = Cell::Numeric(Cow::Owned("9".repeat(39)));
        assert_eq!(decimal_scale([&big, &huge].into_iter()), None);
    }

    #[test]
    fn types_survive_a_round_trip() {
        let columns = vec![
            Column::new("id", ColumnType::Integer),
            Column::new("amount", ColumnType::Numeric),
            Column::new("at", ColumnType::Timestamptz),
            Column::new("local", ColumnType::Timestamp),
            Column::new("day", ColumnType::Date),
            Column::new("doc", ColumnType::Json),
            Column::new("blob", ColumnType::Bytes),
            Column::new("ok", ColumnType::Boolean),
        ];
        let at = DateTime::parse_from_rfc3339("2024-05-31T12:00:00.123456+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let rows = vec![
            vec![
                Cell::Integer(1),
                Cell::Numeric("12345678901234567890.25".into()),
                Cell::Timestamptz(at),
                Cell::Timestamp(at.naive_utc()),
                Cell::Date(at.date_naive()),
                Cell::Json("{\"a\":[1]}".into()),
                Cell::Bytes(vec![0, 255]),
                Cell::Boolean(true),
            ],
            vec![Cell::Null; 8],
        ];
        let file = write(&columns, &rows).unwrap();
        assert_eq!(&file[..4], b"PAR1");
        assert_eq!(
            read(&file).unwrap(),
            json!([
                { "id": 1, "amount": "12345678901234567890.25",
                  "at": "2024-05-31T10:00:00.123456Z", "local": "2024-05-31T10:00:00.123456",
                  "day": "2024-05-31", "doc": { "a": [1] }, "blob": "AP8=", "ok": true },
                { "id": null, "amount": null, "at": null, "local": null, "day": null,
                  "doc": null, "blob": null, "ok": null },
            ])
        );
        // The file's schema says what the columns are, for other readers too.
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        let schema = builder.schema();
        assert_eq!(schema.field(1).data_type(), &DataType::Decimal128(38, 2));
        assert_eq!(
            schema.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            schema.field(3).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(schema.field(5).metadata()[TYPE_KEY], "json");
    }

    #[test]
    fn numeric_that_no_decimal_holds_stays_text_with_a_note() {
        let columns = vec![Column::new("n", ColumnType::Numeric)];
        let rows = vec![
            vec![Cell::Numeric("NaN".into())],
            vec![Cell::Numeric("1.5".into())],
        ];
        let file = write(&columns, &rows).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file.clone())).unwrap();
        let field = builder.schema().field(0).clone();
        assert_eq!(field.data_type(), &DataType::Utf8);
        assert!(field.metadata()[NOTE_KEY].contains("kept as text"));
        assert_eq!(
            read(&file).unwrap(),
            json!([{ "n": "NaN" }, { "n": "1.5" }])
        );
    }

    #[test]
    fn a_file_that_is_not_parquet_is_refused() {
        let error = read(b"PAR1 but not really").unwrap_err();
        assert_eq!(error.format, "Parquet");
        assert!(read(b"").is_err());
    }
}
