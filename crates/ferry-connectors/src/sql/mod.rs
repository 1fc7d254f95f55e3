//! `sql` puller: runs a query on a PostgreSQL, MySQL/MariaDB or SQLite connection and streams
//! the rows as record batches, whole (a full load) or after a cursor column (incremental).
//!
//! Each run is one *load*: a reader task runs the query and streams its result into chunks of
//! `chunk_rows` rows (`ferry_core::records` batches), handed to the puller through a channel
//! that holds one finished chunk, so memory stays at a couple of chunks whatever the result's
//! size. Each database's folder (`postgres/reader.rs`, `mysql/reader.rs`, `sqlite/reader.rs`)
//! implements [`connection::Database`]: it connects, reads the column types from the result's
//! metadata and writes the values in PostgreSQL's text form; [`chunk`] cuts the rows into
//! chunks. What the databases share (the connection, its URL and TLS keys, messages that never
//! show a password) is here.
//!
//! After a crash (issue 12): an incremental load's state names the load while it is unfinished,
//! and the next run continues it under the same id, numbering its chunks after the last seated
//! one. A full load cannot be continued, so each run is a new load; its chunks carry
//! `records::SERIES` (the puller's name), and the `postgres` pusher discards an older load of
//! the series that did not complete once a newer one starts.

pub(crate) mod chunk;
mod config;
pub(crate) mod connection;
mod puller;
#[cfg(test)]
mod tests;

use ferry_core::StepError;
use ferry_core::records::{Column, ColumnType};
use tokio::sync::mpsc;

pub use config::SqlPullerConfig;
pub use connection::{ServerConfig, SqlConnection, Tls, TlsConfig, TlsMode};
pub use puller::{SqlPuller, SqlPullerFactory};

use chunk::Ready;

/// How long connecting may take before it counts as failed (retryable).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects to `connection`, runs a trivial query and describes the database in one line
/// with its URL (`PostgreSQL 15.20, database test (postgres://ferry:***@db/test)`,
/// `MariaDB 10.11.19, database test (…)`, `SQLite 3.50.2, 12 tables (…)`). The error names the
/// connection and says what failed, without the password. Each database's connection type
/// checks through it.
pub(crate) async fn check(connection: &SqlConnection) -> Result<String, String> {
    match connection.database.check(connection).await {
        Ok(description) => Ok(format!("{description} ({})", connection.redacted())),
        Err(error) => Err(error.message),
    }
}

/// What a reader needs to run one load.
pub(crate) struct Job {
    pub(crate) connection: SqlConnection,
    /// The query as configured, trailing `;` removed.
    pub(crate) query: String,
    pub(crate) chunk_rows: usize,
    /// Incremental mode; `None` for a full load.
    pub(crate) cursor: Option<CursorJob>,
    /// Where finished chunks go; a reader that fails sends its error last.
    pub(crate) sender: mpsc::Sender<Result<Ready, StepError>>,
}

/// Incremental mode of a load.
#[derive(Clone, Debug)]
pub(crate) struct CursorJob {
    /// The cursor column's name as configured.
    pub(crate) column: String,
    /// Pull only rows whose cursor value is greater than this one (the database's text form);
    /// `None`: every row with a cursor value.
    pub(crate) after: Option<String>,
}

/// Runs one load: the query of `job` on its connection, streamed into chunks sent to
/// `job.sender`. A failure is sent as the last item.
async fn run_load(job: Job) {
    let result = job.connection.database.read(&job).await;
    if let Err(error) = result {
        // Nobody is listening when the puller dropped the load: then the error does not matter.
        let _ = job.sender.send(Err(error)).await;
    }
}

/// Sends a finished chunk to the puller; fails when the puller dropped the load (a new run
/// started, or the pipeline stopped), which ends the reader.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn send(job: &Job, chunk: Ready) -> Result<(), StepError> {
    job.sender.send(Ok(chunk)).await.map_err(|_| abandoned())
}

/// The error that ends a reader whose load nobody waits for any more.
pub(crate) fn abandoned() -> StepError {
    StepError::retryable("the load was abandoned by the puller")
}

/// How messages name a connection: its name and its URL without the password.
pub(crate) fn label(connection: &SqlConnection) -> String {
    format!(
        "connection `{}` ({})",
        connection.name,
        connection.redacted()
    )
}

/// What `connect` gives, or a retryable error when the server does not answer within
/// [`CONNECT_TIMEOUT`].
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn within_connect_timeout<T>(
    connection: &SqlConnection,
    connect: impl Future<Output = T>,
) -> Result<T, StepError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            failure(
                connection,
                true,
                "cannot connect",
                &format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )
        })
}

/// A failure of `connection`: `connection `erp` (postgres://erp:***@db/erp): {what}: {detail}`.
/// The database's text is scrubbed of the password, in case a driver ever echoes it.
pub(crate) fn failure(
    connection: &SqlConnection,
    retryable: bool,
    what: &str,
    detail: &str,
) -> StepError {
    let message = scrub(
        &format!("{}: {what}: {detail}", label(connection)),
        &connection.url,
    );
    match retryable {
        true => StepError::retryable(message),
        false => StepError::permanent(message),
    }
}

/// `message` with every occurrence of the password in `url` (as written and percent-decoded)
/// replaced by `***`.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let Some(password) = url_password(url) else {
        return message.to_string();
    };
    let mut scrubbed = message.replace(password, "***");
    let decoded = percent_decode(password);
    if !decoded.is_empty() && decoded != password {
        scrubbed = scrubbed.replace(&decoded, "***");
    }
    scrubbed
}

/// The password between `user:` and `@` in a URL, if there is a non-empty one. Finds it the
/// way `Connection::redacted` does.
fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let (_, password) = rest[..at].split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `%XX` escapes decoded; anything malformed is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The index of the cursor column `name` in the result's `columns`: the column of that name,
/// else the one column whose name differs only in case. Fails (permanently) when the result
/// has no such column, or when its type has no useful order.
pub(crate) fn find_cursor(
    connection: &SqlConnection,
    columns: &[Column],
    name: &str,
) -> Result<usize, StepError> {
    let exact = columns.iter().position(|column| column.name == name);
    let folded = || {
        let mut matching = columns
            .iter()
            .enumerate()
            .filter(|(_, column)| column.name.eq_ignore_ascii_case(name));
        match (matching.next(), matching.next()) {
            (Some((index, _)), None) => Some(index),
            _ => None,
        }
    };
    let Some(index) = exact.or_else(folded) else {
        let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
        return Err(failure(
            connection,
            false,
            "bad cursor",
            &format!(
                "cursor column `{name}` is not in the query's result; its columns are: {}",
                names.join(", ")
            ),
        ));
    };
    let kind = columns[index].kind;
    if matches!(kind, ColumnType::Bytes | ColumnType::Json) {
        return Err(failure(
            connection,
            false,
            "bad cursor",
            &format!(
                "cursor column `{}` is {kind}, which has no order to resume from; use an \
                 integer, numeric, date, timestamp or text column",
                columns[index].name
            ),
        ));
    }
    Ok(index)
}

/// `name` quoted as an SQL identifier with double quotes (PostgreSQL, SQLite).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn quote_double(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query with trailing whitespace and semicolons removed, so that it can be wrapped in a
/// subquery or a `COPY (…)`.
fn trim_query(query: &str) -> &str {
    query
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}
