//! SQLite: the database file is opened read-only and the query stepped on a blocking thread.
//!
//! SQLite values carry their own storage class, whatever the column says, so a column's type is
//! its declared type when it has one (`INTEGER`, `REAL`, `TEXT`, `NUMERIC`, `DATE`, `DATETIME`,
//! `BOOLEAN`, `JSON`, `UUID`…, read through a temporary view), else the storage class of its
//! first non-NULL value in the first chunk (text when there is none). A `BLOB` column counts as
//! undeclared, because a view describes columns without a type as `BLOB` too: its blobs make it
//! bytes. Following
//! SQLite's conventions for dates, an integer in a date or time column is Unix time and a real
//! is a Julian day number; text passes as it is.

use std::borrow::Cow;
use std::time::Duration;

use crate::sql::SqlConnection;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime};
use ferry_core::StepError;
use ferry_core::records::{BatchWriter, Column, ColumnType};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{OpenFlags, params_from_iter};
use tokio::sync::mpsc;

use super::connection::Sqlite;
use crate::sql::chunk::{Chunker, Ready};
use crate::sql::connection::Database;
use crate::sql::{CursorJob, Job, abandoned, failure, find_cursor, quote_double};

#[async_trait]
impl Database for Sqlite {
    /// `SQLite 3.50.2, 12 tables`.
    async fn check(&self, connection: &SqlConnection) -> Result<String, StepError> {
        let connection = connection.clone();
        tokio::task::spawn_blocking(move || {
            let db = open(&connection)?;
            let described = db.query_row(
            "SELECT sqlite_version(), (SELECT count(*) FROM sqlite_master WHERE type = 'table')",
            [],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
        );
            let (version, tables) =
                described.map_err(|error| classify(&connection, "cannot query", &error))?;
            Ok(format!("SQLite {version}, {tables} tables"))
        })
        .await
        .map_err(|error| StepError::retryable(format!("sqlite check task failed: {error}")))?
    }
    /// Runs the load of `job` on a blocking thread.
    async fn read(&self, job: &Job) -> Result<(), StepError> {
        let reader = Reader {
            connection: job.connection.clone(),
            query: job.query.clone(),
            chunk_rows: job.chunk_rows,
            cursor: job.cursor.clone(),
            sender: job.sender.clone(),
        };
        tokio::task::spawn_blocking(move || reader.run())
            .await
            .map_err(|error| StepError::retryable(format!("sqlite read task failed: {error}")))?
    }
}

/// How long a read waits for a writer's lock before failing (retryable).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the database file read-only: a puller never creates or changes it.
fn open(connection: &SqlConnection) -> Result<rusqlite::Connection, StepError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = rusqlite::Connection::open_with_flags(&connection.url, flags)
        .map_err(|error| classify(connection, "cannot open the database", &error))?;
    db.busy_timeout(BUSY_TIMEOUT)
        .map_err(|error| classify(connection, "cannot open the database", &error))?;
    Ok(db)
}

/// What the blocking thread needs of the job.
struct Reader {
    connection: SqlConnection,
    query: String,
    chunk_rows: usize,
    cursor: Option<CursorJob>,
    sender: mpsc::Sender<Result<Ready, StepError>>,
}

impl Reader {
    fn run(&self) -> Result<(), StepError> {
        let connection = &self.connection;
        let failed = |error: rusqlite::Error| classify(connection, "the query failed", &error);
        let db = open(connection)?;

        // The query's own columns, and their declared types where they have one.
        let names: Vec<String> = db
            .prepare(&self.query)
            .map_err(failed)?
            .column_names()
            .into_iter()
            .map(String::from)
            .collect();
        let declared: Vec<Option<ColumnType>> = declared_types(&db, &self.query, names.len())
            .iter()
            .map(|declared| declared.as_deref().map(column_type))
            .collect();

        let (query, parameters, cursor) = self.query_to_run(&names, &declared)?;
        let mut statement = db.prepare(&query).map_err(failed)?;
        let mut rows = statement
            .query(params_from_iter(parameters))
            .map_err(failed)?;

        // Columns without a declared type take the storage class of their first value: read
        // (at most) the first chunk's rows before deciding.
        let mut first = Vec::new();
        if declared.iter().any(Option::is_none) {
            while first.len() < self.chunk_rows {
                let Some(row) = rows.next().map_err(failed)? else {
                    break;
                };
                let values = (0..names.len())
                    .map(|index| row.get::<_, Value>(index))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(failed)?;
                first.push(values);
            }
        }
        let kinds = resolve_types(&declared, &first);
        let columns: Vec<Column> = names
            .iter()
            .zip(&kinds)
            .map(|(name, kind)| Column::new(name, *kind))
            .collect();

        let mut chunker = Chunker::new(columns, self.chunk_rows);
        for values in &first {
            self.write_row(&mut chunker, &kinds, cursor, |index| {
                Ok(ValueRef::from(&values[index]))
            })?;
        }
        while let Some(row) = rows.next().map_err(failed)? {
            self.write_row(&mut chunker, &kinds, cursor, |index| {
                row.get_ref(index).map_err(failed)
            })?;
        }
        self.send(chunker.finish())
    }

    /// The SQL to run, its parameters and the cursor column's index: the query itself for a
    /// full load, else the query wrapped to start after the cursor value, in its order.
    fn query_to_run(
        &self,
        names: &[String],
        declared: &[Option<ColumnType>],
    ) -> Result<(String, Vec<Value>, Option<usize>), StepError> {
        let Some(incremental) = &self.cursor else {
            return Ok((self.query.clone(), Vec::new(), None));
        };
        let columns: Vec<Column> = names
            .iter()
            .zip(declared)
            .map(|(name, kind)| Column::new(name, kind.unwrap_or(ColumnType::Text)))
            .collect();
        let index = find_cursor(&self.connection, &columns, &incremental.column)?;
        let name = quote_double(&columns[index].name);
        let mut parameters = Vec::new();
        let filter = match &incremental.after {
            Some(after) => {
                parameters.push(cursor_parameter(after, declared[index]));
                format!("{name} > ?1")
            }
            None => format!("{name} IS NOT NULL"),
        };
        let query = format!(
            "SELECT * FROM (\n{}\n) AS ferry_q WHERE {filter} ORDER BY {name}",
            self.query
        );
        Ok((query, parameters, Some(index)))
    }

    /// Writes one row, whose values `value` gives by column index, sending the chunk it
    /// finishes.
    fn write_row<'row>(
        &self,
        chunker: &mut Chunker,
        kinds: &[ColumnType],
        cursor: Option<usize>,
        value: impl Fn(usize) -> Result<ValueRef<'row>, StepError>,
    ) -> Result<(), StepError> {
        let cursor_value = match cursor {
            Some(index) => value_text(value(index)?),
            None => None,
        };
        if let Some(ready) = chunker.start_row(cursor_value.as_deref()) {
            self.send(ready)?;
        }
        let writer = chunker.writer();
        for (index, kind) in kinds.iter().enumerate() {
            write_value(writer, *kind, value(index)?);
        }
        writer.end_row();
        Ok(())
    }

    /// Hands a chunk to the puller, waiting while the channel is full.
    fn send(&self, chunk: Ready) -> Result<(), StepError> {
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| abandoned())
    }
}

/// The type of each column: the declared one, else the storage class of the column's first
/// non-NULL value in `first` (text when there is none).
fn resolve_types(declared: &[Option<ColumnType>], first: &[Vec<Value>]) -> Vec<ColumnType> {
    let mut kinds = Vec::with_capacity(declared.len());
    for (index, declared) in declared.iter().enumerate() {
        let kind = declared.unwrap_or_else(|| {
            let value = first
                .iter()
                .map(|row| &row[index])
                .find(|value| **value != Value::Null);
            match value {
                Some(Value::Integer(_)) => ColumnType::Integer,
                Some(Value::Real(_)) => ColumnType::Float,
                Some(Value::Blob(_)) => ColumnType::Bytes,
                _ => ColumnType::Text,
            }
        });
        kinds.push(kind);
    }
    kinds
}

/// The declared type of each result column (`None`: an expression, or no type), read through a
/// temporary view of the query; all `None` when the query cannot be a view.
fn declared_types(db: &rusqlite::Connection, query: &str, count: usize) -> Vec<Option<String>> {
    let describe = || -> rusqlite::Result<Vec<Option<String>>> {
        // A temporary view lives in the connection's own temporary database: the file is not
        // written, and the view is gone with the connection.
        db.execute_batch("DROP VIEW IF EXISTS temp.ferry_describe")?;
        db.execute_batch(&format!("CREATE TEMP VIEW ferry_describe AS\n{query}\n"))?;
        let mut statement = db.prepare("PRAGMA temp.table_info(ferry_describe)")?;
        let types = statement
            .query_map([], |row| row.get::<_, String>("type"))?
            .map(|declared| {
                // Recent SQLite versions describe a column declared without a type as `BLOB`
                // in a view: both are decided by their values (a blob column's are blobs).
                declared.map(|declared| {
                    Some(declared).filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case("BLOB"))
                })
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(statement);
        db.execute_batch("DROP VIEW temp.ferry_describe")?;
        Ok(types)
    };
    match describe() {
        Ok(types) if types.len() == count => types,
        _ => vec![None; count],
    }
}

/// The batch type of a declared column type, by the names SQLite and other databases use.
fn column_type(declared: &str) -> ColumnType {
    let upper = declared.to_ascii_uppercase();
    let has = |name: &str| upper.contains(name);
    if has("BOOL") {
        ColumnType::Boolean
    } else if has("TIMESTAMPTZ") || has("WITH TIME ZONE") {
        ColumnType::Timestamptz
    } else if has("DATETIME") || has("TIMESTAMP") {
        ColumnType::Timestamp
    } else if has("DATE") {
        ColumnType::Date
    } else if has("TIME") {
        ColumnType::Time
    } else if has("INT") {
        ColumnType::Integer
    } else if has("CHAR") || has("CLOB") || has("TEXT") {
        ColumnType::Text
    } else if has("BLOB") || has("BINARY") || has("BYTEA") {
        ColumnType::Bytes
    } else if has("REAL") || has("FLOA") || has("DOUB") {
        ColumnType::Float
    } else if has("DEC") || has("NUMERIC") {
        ColumnType::Numeric
    } else if has("JSON") {
        ColumnType::Json
    } else if has("UUID") {
        ColumnType::Uuid
    } else {
        ColumnType::Text
    }
}

/// The cursor value to compare with, typed so that SQLite compares like with like: a number
/// for numeric columns and for columns without a declared type, else text.
fn cursor_parameter(after: &str, kind: Option<ColumnType>) -> Value {
    let numeric = matches!(
        kind,
        None | Some(ColumnType::Integer | ColumnType::Float | ColumnType::Numeric)
    );
    if numeric {
        if let Ok(integer) = after.parse::<i64>() {
            return Value::Integer(integer);
        }
        if let Ok(real) = after.parse::<f64>() {
            return Value::Real(real);
        }
    }
    Value::Text(after.to_string())
}

/// A value's text, as a cursor value (`None` for NULL).
fn value_text(value: ValueRef<'_>) -> Option<Cow<'_, str>> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(integer) => Some(Cow::Owned(integer.to_string())),
        ValueRef::Real(real) => Some(Cow::Owned(float_text(real))),
        ValueRef::Text(text) | ValueRef::Blob(text) => Some(String::from_utf8_lossy(text)),
    }
}

/// Writes one value in PostgreSQL's text form for the column's type.
fn write_value(writer: &mut BatchWriter, kind: ColumnType, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => writer.null(),
        ValueRef::Integer(integer) => match kind {
            ColumnType::Boolean => writer.raw(if integer != 0 { "t" } else { "f" }),
            ColumnType::Date
            | ColumnType::Time
            | ColumnType::Timestamp
            | ColumnType::Timestamptz => match DateTime::from_timestamp(integer, 0) {
                Some(at) => writer.raw(&date_text(kind, at.naive_utc())),
                None => writer.raw(&integer.to_string()),
            },
            ColumnType::Bytes => writer.bytes(integer.to_string().as_bytes()),
            _ => writer.raw(&integer.to_string()),
        },
        ValueRef::Real(real) => match kind {
            ColumnType::Boolean => writer.raw(if real != 0.0 { "t" } else { "f" }),
            ColumnType::Date
            | ColumnType::Time
            | ColumnType::Timestamp
            | ColumnType::Timestamptz => match julian_day(real) {
                Some(at) => writer.raw(&date_text(kind, at)),
                None => writer.raw(&float_text(real)),
            },
            ColumnType::Integer if real.fract() == 0.0 && real.abs() < 9.2e18 => {
                writer.raw(&(real as i64).to_string())
            }
            ColumnType::Bytes => writer.bytes(float_text(real).as_bytes()),
            _ => writer.raw(&float_text(real)),
        },
        ValueRef::Text(text) => match kind {
            ColumnType::Bytes => writer.bytes(text),
            _ => writer.text(&String::from_utf8_lossy(text)),
        },
        ValueRef::Blob(blob) => match kind {
            ColumnType::Uuid if blob.len() == 16 => match uuid::Uuid::from_slice(blob) {
                Ok(uuid) => writer.raw(&uuid.hyphenated().to_string()),
                Err(_) => writer.bytes(blob),
            },
            _ => writer.bytes(blob),
        },
    }
}

/// A float in a form PostgreSQL reads back exactly.
fn float_text(real: f64) -> String {
    if real.is_nan() {
        "NaN".into()
    } else if real.is_infinite() {
        match real > 0.0 {
            true => "Infinity".into(),
            false => "-Infinity".into(),
        }
    } else {
        // `Debug` is the shortest text that reads back as the same number.
        format!("{real:?}")
    }
}

/// The date, time or timestamp `at` as PostgreSQL writes it.
fn date_text(kind: ColumnType, at: NaiveDateTime) -> String {
    match kind {
        ColumnType::Date => at.format("%Y-%m-%d").to_string(),
        ColumnType::Time => at.format("%H:%M:%S%.f").to_string(),
        ColumnType::Timestamptz => at.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        _ => at.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
    }
}

/// A Julian day number as a UTC date and time.
fn julian_day(day: f64) -> Option<NaiveDateTime> {
    // Julian day 2440587.5 is the Unix epoch.
    let millis = ((day - 2_440_587.5) * 86_400_000.0).round();
    if !millis.is_finite() || millis.abs() > 1e17 {
        return None;
    }
    DateTime::from_timestamp_millis(millis as i64).map(|at| at.naive_utc())
}

/// A failure with SQLite's own text, classified: a busy or locked database and I/O errors are
/// retryable; SQL errors, a missing or unreadable file and the rest are permanent.
fn classify(connection: &SqlConnection, what: &str, error: &rusqlite::Error) -> StepError {
    use rusqlite::ErrorCode::*;
    let retryable = match error.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | OutOfMemory | DiskFull) => true,
        Some(_) => false,
        None => false,
    };
    failure(connection, retryable, what, &error.to_string())
}
