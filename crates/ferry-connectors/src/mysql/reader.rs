//! MySQL and MariaDB: the result is streamed with the text protocol, whose values arrive as
//! text that mostly passes through as it is; the column types come from the result's columns.
//!
//! The session runs with `NAMES utf8mb4` and `time_zone = '+00:00'`: `TIMESTAMP` columns are
//! instants, written as UTC timestamps with time zone (functions such as `NOW()` in the query
//! see UTC too). Zero dates (`0000-00-00`, or a zero month or day) have no PostgreSQL form and
//! become NULL. `BIGINT UNSIGNED` is numeric (it does not fit a 64-bit integer); `TINYINT(1)`
//! stays an integer. MariaDB's `JSON` is a `LONGTEXT` on the wire, so it arrives as text.

use std::error::Error as _;

use crate::sql::SqlConnection;
use async_trait::async_trait;
use ferry_core::StepError;
use ferry_core::records::{BatchWriter, Column, ColumnType};
use mysql_async::consts::{ColumnFlags, ColumnType as MysqlType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use crate::sql::{CONNECT_TIMEOUT, Job, failure, find_cursor, send, within_connect_timeout};

use super::connection::Mysql;
use crate::sql::chunk::Chunker;
use crate::sql::connection::Database;

#[async_trait]
impl Database for Mysql {
    /// `MariaDB 10.11.19, database test` or `MySQL 8.0.36, database test`.
    async fn check(&self, connection: &SqlConnection) -> Result<String, StepError> {
        let mut conn = connect(connection).await?;
        let row: Option<(String, Option<String>)> = conn
            .query_first("SELECT VERSION(), DATABASE()")
            .await
            .map_err(|error| classify(connection, "cannot query", &error))?;
        let _ = conn.disconnect().await;
        let (version, database) = row.unwrap_or_default();
        // `10.11.19-MariaDB-0+deb12u1`, `8.0.36`, `8.0.36-0ubuntu0.22.04.1`.
        let number = version.split('-').next().unwrap_or(&version);
        let product = match version.contains("MariaDB") {
            true => "MariaDB",
            false => "MySQL",
        };
        Ok(match database {
            Some(database) => format!("{product} {number}, database {database}"),
            None => format!("{product} {number}, no default database"),
        })
    }
    /// Runs the load of `job`.
    async fn read(&self, job: &Job) -> Result<(), StepError> {
        let mut conn = connect(&job.connection).await?;
        let result = tokio::select! {
            result = stream(&mut conn, job) => result,
            // The puller dropped the load: stop at once, the result is not wanted any more.
            _ = job.sender.closed() => Err(crate::sql::abandoned()),
        };
        // Disconnecting at once, rather than dropping the connection, which would first read the
        // rest of an abandoned result.
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.disconnect()).await;
        result
    }
}

/// Settings for every session: UTF-8 text, UTC for `TIMESTAMP` values, and patience while
/// the puller waits for the queue (the server drops a client that does not read for
/// `net_write_timeout` seconds).
const SESSION: &str = "SET NAMES utf8mb4, time_zone = '+00:00', net_write_timeout = 3600";

/// The character set number of binary strings (`BLOB`, `VARBINARY`, `BINARY`).
const BINARY_CHARSET: u16 = 63;

/// Connects and sets up the session.
async fn connect(connection: &SqlConnection) -> Result<Conn, StepError> {
    let opts = super::connection::opts(connection)
        .map_err(|error| failure(connection, false, "invalid connection", &error))?;
    let mut conn = within_connect_timeout(connection, Conn::new(opts))
        .await?
        .map_err(|error| classify(connection, "cannot connect", &error))?;
    conn.query_drop(SESSION)
        .await
        .map_err(|error| classify(connection, "cannot set up the session", &error))?;
    Ok(conn)
}

/// Runs the query and sends its rows in chunks.
async fn stream(conn: &mut Conn, job: &Job) -> Result<(), StepError> {
    let connection = &job.connection;
    let query = match &job.cursor {
        None => job.query.clone(),
        Some(incremental) => {
            // Prepared only to learn the result's columns: the cursor's type decides the cast.
            let statement = conn
                .prep(job.query.as_str())
                .await
                .map_err(|error| classify(connection, "the query failed", &error))?;
            let described = statement.columns().to_vec();
            conn.close(statement)
                .await
                .map_err(|error| classify(connection, "the query failed", &error))?;
            let columns: Vec<Column> = described.iter().map(|c| describe(c).0).collect();
            let index = find_cursor(connection, &columns, &incremental.column)?;
            let name = quote_backtick(&columns[index].name);
            let filter = match &incremental.after {
                Some(after) => format!("{name} > {}", cursor_literal(after, &described[index])),
                None => format!("{name} IS NOT NULL"),
            };
            format!(
                "SELECT * FROM (\n{}\n) AS ferry_q WHERE {filter} ORDER BY {name}",
                job.query
            )
        }
    };

    let mut result = conn
        .query_iter(query)
        .await
        .map_err(|error| classify(connection, "the query failed", &error))?;
    let Some(described) = result.columns() else {
        return Err(failure(
            connection,
            false,
            "the query failed",
            "it returns no result set (is it a SELECT?)",
        ));
    };
    let (columns, fields): (Vec<Column>, Vec<Field>) = described.iter().map(describe).unzip();
    let cursor = match &job.cursor {
        Some(incremental) => Some(find_cursor(connection, &columns, &incremental.column)?),
        None => None,
    };

    let mut chunker = Chunker::new(columns, job.chunk_rows);
    let mut scratch = String::new();
    loop {
        let row = result
            .next()
            .await
            .map_err(|error| classify(connection, "reading the result failed", &error))?;
        let Some(row) = row else { break };
        let cursor_value = match cursor.and_then(|index| row.as_ref(index)) {
            Some(Value::Bytes(bytes)) => Some(String::from_utf8_lossy(bytes)),
            _ => None,
        };
        if let Some(ready) = chunker.start_row(cursor_value.as_deref()) {
            send(job, ready).await?;
        }
        let writer = chunker.writer();
        for (index, field) in fields.iter().enumerate() {
            match row.as_ref(index) {
                None | Some(Value::NULL) => writer.null(),
                Some(Value::Bytes(bytes)) => field.write(writer, bytes, &mut scratch),
                Some(other) => {
                    return Err(failure(
                        connection,
                        false,
                        "reading the result failed",
                        &format!("unexpected value {other:?} in the text protocol"),
                    ));
                }
            }
        }
        writer.end_row();
    }
    send(job, chunker.finish()).await
}

/// How a column's text arrives and is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// Strings, numbers, times: the text as it arrives (numbers and times are already in
    /// PostgreSQL's form), escaped where needed.
    Text,
    /// Binary strings, written as hex.
    Bytes,
    /// A `DATE` or `DATETIME`: as it is, zero dates NULL.
    Date,
    /// A `TIMESTAMP`, in UTC: with `+00` appended, zero dates NULL.
    Timestamp,
    /// A `BIT(n)`: its big-endian bytes as an integer.
    Bit,
}

impl Field {
    /// Writes one non-NULL value.
    fn write(self, writer: &mut BatchWriter, bytes: &[u8], scratch: &mut String) {
        match self {
            Field::Text => write_text(writer, bytes),
            Field::Bytes => writer.bytes(bytes),
            Field::Date if is_zero_date(bytes) => writer.null(),
            Field::Date => write_text(writer, bytes),
            Field::Timestamp if is_zero_date(bytes) => writer.null(),
            Field::Timestamp => {
                scratch.clear();
                scratch.push_str(&String::from_utf8_lossy(bytes));
                scratch.push_str("+00");
                write_text(writer, scratch.as_bytes());
            }
            Field::Bit => {
                let value = bytes
                    .iter()
                    .fold(0u64, |value, &byte| (value << 8) | u64::from(byte));
                writer.raw(&value.to_string());
            }
        }
    }
}

/// Writes text, escaped only when it needs it: most values do not, and copying them whole is
/// much faster than escaping byte by byte (this is the hot loop of a load).
fn write_text(writer: &mut BatchWriter, bytes: &[u8]) {
    let needs_escape = bytes
        .iter()
        .any(|byte| matches!(byte, b'\\' | b'\t' | b'\n' | b'\r'));
    match std::str::from_utf8(bytes) {
        Ok(text) if !needs_escape => writer.raw(text),
        Ok(text) => writer.text(text),
        // A column in another character set that did not convert: keep what can be.
        Err(_) => writer.text(&String::from_utf8_lossy(bytes)),
    }
}

/// `0000-00-00`, `2024-00-15`, `0000-00-00 00:00:00`: dates MySQL accepts and PostgreSQL
/// does not.
fn is_zero_date(bytes: &[u8]) -> bool {
    bytes.len() >= 10
        && (&bytes[0..4] == b"0000" || &bytes[5..7] == b"00" || &bytes[8..10] == b"00")
}

/// The batch column of a MySQL result column, and how its values are written.
fn describe(column: &mysql_async::Column) -> (Column, Field) {
    use MysqlType::*;
    let binary = column.character_set() == BINARY_CHARSET;
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let (kind, field) = match column.column_type() {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
        | MYSQL_TYPE_YEAR => (ColumnType::Integer, Field::Text),
        // Past 2^63 it does not fit PostgreSQL's bigint.
        MYSQL_TYPE_LONGLONG if unsigned => (ColumnType::Numeric, Field::Text),
        MYSQL_TYPE_LONGLONG => (ColumnType::Integer, Field::Text),
        MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => (ColumnType::Float, Field::Text),
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => (ColumnType::Numeric, Field::Text),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => (ColumnType::Date, Field::Date),
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => (ColumnType::Timestamp, Field::Date),
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => (ColumnType::Timestamptz, Field::Timestamp),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => (ColumnType::Time, Field::Text),
        MYSQL_TYPE_JSON => (ColumnType::Json, Field::Text),
        MYSQL_TYPE_BIT => (ColumnType::Integer, Field::Bit),
        MYSQL_TYPE_GEOMETRY => (ColumnType::Bytes, Field::Bytes),
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
            if binary =>
        {
            (ColumnType::Bytes, Field::Bytes)
        }
        // Strings, enums, sets and anything unknown: their text.
        _ => (ColumnType::Text, Field::Text),
    };
    (Column::new(column.name_str(), kind), field)
}

/// `name` quoted as a MySQL identifier.
fn quote_backtick(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The cursor value `after` as an SQL expression of the cursor column's type.
///
/// The value is written as a hex literal, which nothing in it can escape from, with a
/// character set introducer so that it compares in the column's collation (it is
/// "coercible"); a cast gives it the column's type. A literal rather than a bound parameter
/// keeps the result in the text protocol.
fn cursor_literal(after: &str, column: &mysql_async::Column) -> String {
    use MysqlType::*;
    let hex: String = after.bytes().map(|byte| format!("{byte:02X}")).collect();
    let text = format!("_utf8mb4 X'{hex}'");
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    match column.column_type() {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR | MYSQL_TYPE_BIT => match unsigned {
            true => format!("CAST({text} AS UNSIGNED)"),
            false => format!("CAST({text} AS SIGNED)"),
        },
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => format!("CAST({text} AS DECIMAL(65,30))"),
        MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => format!("({text} + 0e0)"),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => format!("CAST({text} AS DATE)"),
        MYSQL_TYPE_DATETIME
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIMESTAMP
        | MYSQL_TYPE_TIMESTAMP2 => format!("CAST({text} AS DATETIME(6))"),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => format!("CAST({text} AS TIME(6))"),
        _ if column.character_set() == BINARY_CHARSET => format!("X'{hex}'"),
        _ => text,
    }
}

/// A failure with the server's own text, classified: SQL errors (syntax, unknown column,
/// table or database, permission: SQLSTATE class 42), access denied (28), bad values (22) and
/// unsupported features (0A) are permanent, the rest (network, locks, the server going away)
/// retryable.
fn classify(connection: &SqlConnection, what: &str, error: &mysql_async::Error) -> StepError {
    match error {
        mysql_async::Error::Server(server) => {
            let permanent = ["42", "28", "22", "0A"]
                .iter()
                .any(|class| server.state.starts_with(class));
            let text = format!(
                "{} (error {}, SQLSTATE {})",
                server.message, server.code, server.state
            );
            failure(connection, !permanent, what, &text)
        }
        mysql_async::Error::Url(url) => failure(connection, false, what, &url.to_string()),
        other => {
            let mut text = other.to_string();
            let mut source = other.source();
            while let Some(cause) = source {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text.push_str(": ");
                    text.push_str(&cause);
                }
                source = source.and_then(|cause| cause.source());
            }
            failure(connection, true, what, &text)
        }
    }
}
