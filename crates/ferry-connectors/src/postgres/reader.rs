//! PostgreSQL for the `sql` puller: the result is read with `COPY (query) TO STDOUT`, whose text
//! format is already the record batch format, and the column types come from preparing the
//! query.
//!
//! The session uses `DateStyle ISO`, `bytea_output hex` and exact
//! floats, so that every value is in PostgreSQL's standard text form; timestamps with time zone
//! carry the session time zone's offset.

use std::error::Error as _;
use std::pin::pin;

use async_trait::async_trait;
use ferry_core::StepError;
use ferry_core::records::{Column, ColumnType};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_postgres::types::{Kind, Type};

use super::connection::ConnectError;
use super::connection::Postgres;
use crate::sql::chunk::{Chunker, Ready};
use crate::sql::connection::Database;
use crate::sql::{
    Job, SqlConnection, failure, find_cursor, quote_double, send, within_connect_timeout,
};

#[async_trait]
impl Database for Postgres {
    /// `PostgreSQL 15.20, database test`.
    async fn check(&self, connection: &SqlConnection) -> Result<String, StepError> {
        let (client, task) = connect(connection).await?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_database()",
                &[],
            )
            .await;
        task.abort();
        let row = row.map_err(|error| classify(connection, "cannot query", &error))?;
        let version: String = row.get(0);
        let database: String = row.get(1);
        // `15.20 (Debian 15.20-0+deb12u1)`: the number is enough.
        let number = version.split_whitespace().next().unwrap_or(&version);
        Ok(format!("PostgreSQL {number}, database {database}"))
    }
    /// Runs the load of `job`.
    async fn read(&self, job: &Job) -> Result<(), StepError> {
        let (client, task) = connect(&job.connection).await?;
        let result = tokio::select! {
            result = stream(&client, job) => result,
            // The puller dropped the load: stop at once, the result is not wanted any more.
            _ = job.sender.closed() => Err(crate::sql::abandoned()),
        };
        // Closing the socket also makes the server stop sending.
        task.abort();
        result
    }
}

/// Settings that make every value come out in PostgreSQL's standard text form, whatever the
/// server's defaults.
const SESSION: &str = "SET DateStyle TO ISO; SET IntervalStyle TO postgres; \
                       SET bytea_output TO hex; SET extra_float_digits TO 3";

/// Connects; the returned task drives the connection until it is aborted.
async fn connect(
    connection: &SqlConnection,
) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), StepError> {
    let config: tokio_postgres::Config = connection
        .url
        .parse()
        .map_err(|error| classify(connection, "invalid connection URL", &error))?;
    // The driver task's errors reach the client's calls, which report them.
    let connect = super::connection::connect(&config, &connection.tls);
    match within_connect_timeout(connection, connect).await? {
        Ok(connected) => Ok(connected),
        Err(ConnectError::Postgres(error)) => Err(classify(connection, "cannot connect", &error)),
        Err(ConnectError::Tls(detail)) => {
            Err(failure(connection, false, "cannot connect", &detail))
        }
    }
}

/// Describes the query, runs it through COPY and sends its rows in chunks.
async fn stream(client: &Client, job: &Job) -> Result<(), StepError> {
    let connection = &job.connection;
    client
        .batch_execute(SESSION)
        .await
        .map_err(|error| classify(connection, "cannot set up the session", &error))?;
    let statement = client
        .prepare(&job.query)
        .await
        .map_err(|error| classify(connection, "the query failed", &error))?;
    let columns: Vec<Column> = statement
        .columns()
        .iter()
        .map(|column| Column::new(column.name(), column_type(column.type_())))
        .collect();

    let mut cursor = None;
    let query = match &job.cursor {
        None => job.query.clone(),
        Some(incremental) => {
            let index = find_cursor(connection, &columns, &incremental.column)?;
            cursor = Some(index);
            let name = quote_double(&columns[index].name);
            let filter = match &incremental.after {
                Some(after) => {
                    // COPY takes no parameters: the value is bound to a session setting, read
                    // once by the InitPlan of the sub-select (so an index on the cursor works).
                    client
                        .execute("SELECT set_config('ferry.cursor', $1, false)", &[after])
                        .await
                        .map_err(|error| classify(connection, "cannot bind the cursor", &error))?;
                    let type_ = statement.columns()[index].type_();
                    format!(
                        "WHERE {name} > (SELECT current_setting('ferry.cursor')::{}.{})",
                        quote_double(type_.schema()),
                        quote_double(type_.name())
                    )
                }
                None => format!("WHERE {name} IS NOT NULL"),
            };
            format!(
                "SELECT * FROM (\n{}\n) AS ferry_q {filter} ORDER BY {name}",
                job.query
            )
        }
    };
    let copy = format!("COPY (\n{query}\n) TO STDOUT");
    let rows = client
        .copy_out(copy.as_str())
        .await
        .map_err(|error| classify(connection, "the query failed", &error))?;
    let mut rows = pin!(rows);

    let mut rows_out = CopyRows {
        chunker: Chunker::new(columns.clone(), job.chunk_rows),
        columns: columns.len(),
        cursor,
        scratch: Vec::new(),
        cursor_value: String::new(),
    };
    // The end of a row that arrived split over messages (the server sends one row per
    // message, but nothing promises it).
    let mut partial = Vec::new();
    while let Some(data) = rows.next().await {
        let data =
            data.map_err(|error| classify(connection, "reading the result failed", &error))?;
        let mut rest = &data[..];
        if !partial.is_empty() {
            let Some(end) = rest.iter().position(|&byte| byte == b'\n') else {
                partial.extend_from_slice(rest);
                continue;
            };
            partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let ready = rows_out
                .row(&partial)
                .map_err(|detail| bad_row(connection, &detail))?;
            partial.clear();
            if let Some(ready) = ready {
                send(job, ready).await?;
            }
        }
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            let ready = rows_out
                .row(&rest[..end])
                .map_err(|detail| bad_row(connection, &detail))?;
            rest = &rest[end + 1..];
            if let Some(ready) = ready {
                send(job, ready).await?;
            }
        }
        partial.extend_from_slice(rest);
    }
    if !partial.is_empty() {
        return Err(bad_row(connection, "the last row is incomplete"));
    }
    send(job, rows_out.chunker.finish()).await
}

/// Writes rows in COPY text format into chunks.
struct CopyRows {
    chunker: Chunker,
    /// How many fields each row has.
    columns: usize,
    /// The cursor column's index, in incremental mode.
    cursor: Option<usize>,
    /// An unescaped field.
    scratch: Vec<u8>,
    /// The current row's cursor value.
    cursor_value: String,
}

impl CopyRows {
    /// Writes one row (without its newline); returns the previous chunk when it is finished.
    fn row(&mut self, line: &[u8]) -> Result<Option<Ready>, String> {
        let fields = match self.columns {
            0 => 0,
            _ => line.iter().filter(|&&byte| byte == b'\t').count() + 1,
        };
        if fields != self.columns {
            return Err(format!(
                "a row has {fields} fields where the result has {} columns",
                self.columns
            ));
        }
        let mut cursor = None;
        if let Some(index) = self.cursor {
            let field = line
                .split(|&byte| byte == b'\t')
                .nth(index)
                .unwrap_or_default();
            if field != b"\\N" {
                unescape_copy(field, &mut self.scratch);
                self.cursor_value.clear();
                self.cursor_value
                    .push_str(&String::from_utf8_lossy(&self.scratch));
                cursor = Some(self.cursor_value.as_str());
            }
        }
        let ready = self.chunker.start_row(cursor);
        let writer = self.chunker.writer();
        if self.columns > 0 {
            for field in line.split(|&byte| byte == b'\t') {
                if field == b"\\N" {
                    writer.null();
                } else if !field.contains(&b'\\') {
                    // Nothing escaped: the text as it is (the session speaks UTF-8).
                    let text = std::str::from_utf8(field)
                        .map_err(|_| "a value is not valid UTF-8".to_string())?;
                    writer.raw(text);
                } else {
                    unescape_copy(field, &mut self.scratch);
                    writer.text(&String::from_utf8_lossy(&self.scratch));
                }
            }
        }
        writer.end_row();
        Ok(ready)
    }
}

/// A row the COPY stream should never send.
fn bad_row(connection: &SqlConnection, detail: &str) -> StepError {
    failure(connection, true, "unexpected COPY data", detail)
}

/// The batch type of a PostgreSQL type; types without their own are text.
fn column_type(type_: &Type) -> ColumnType {
    match *type_ {
        Type::BOOL => ColumnType::Boolean,
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => ColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 => ColumnType::Float,
        Type::NUMERIC => ColumnType::Numeric,
        Type::DATE => ColumnType::Date,
        Type::TIME => ColumnType::Time,
        Type::TIMESTAMP => ColumnType::Timestamp,
        Type::TIMESTAMPTZ => ColumnType::Timestamptz,
        Type::JSON | Type::JSONB => ColumnType::Json,
        Type::BYTEA => ColumnType::Bytes,
        Type::UUID => ColumnType::Uuid,
        // text, varchar, char, name, enums, arrays, intervals…: their text form.
        _ => match type_.kind() {
            Kind::Domain(base) => column_type(base),
            _ => ColumnType::Text,
        },
    }
}

/// A failure with PostgreSQL's own text, classified: SQL errors (syntax, unknown column or
/// table, permission: class 42), authentication (28), bad values (22), unsupported features
/// (0A) and a missing database are permanent, the rest (network, server going away, locks)
/// retryable.
fn classify(connection: &SqlConnection, what: &str, error: &tokio_postgres::Error) -> StepError {
    let Some(db) = error.as_db_error() else {
        // tokio-postgres' own text is generic ("error connecting to server"): add its causes.
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        let permanent = text.starts_with("invalid connection string")
            || text.starts_with("invalid configuration");
        return failure(connection, !permanent, what, &text);
    };
    let code = db.code().code();
    let permanent = ["42", "28", "22", "0A"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "3D000";
    let mut text = format!("{} (SQLSTATE {code})", db.message());
    if let Some(detail) = db.detail() {
        text.push_str("; ");
        text.push_str(detail);
    }
    if let Some(hint) = db.hint() {
        text.push_str("; hint: ");
        text.push_str(hint);
    }
    failure(connection, !permanent, what, &text.replace('\n', " "))
}

/// Undoes PostgreSQL's COPY text escapes (`\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`, octal
/// `\NNN` and hex `\xHH`) of one field into `out`.
fn unescape_copy(field: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < field.len() {
        let byte = field[i];
        i += 1;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let Some(&next) = field.get(i) else {
            out.push(b'\\');
            break;
        };
        i += 1;
        match next {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&digit @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(digit - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(value as u8);
            }
            b'x' if field.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u8;
                for _ in 0..2 {
                    match field.get(i).and_then(|&digit| (digit as char).to_digit(16)) {
                        Some(digit) => {
                            value = value * 16 + digit as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(value);
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_escapes_are_undone() {
        let mut out = Vec::new();
        super::unescape_copy(b"a\\tb\\\\c\\x41\\101\\b\\n\\z\\", &mut out);
        assert_eq!(out, b"a\tb\\cAA\x08\nz\\");
    }
}
