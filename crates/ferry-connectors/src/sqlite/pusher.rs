//! The `sqlite` pusher: its factory, its connection (used on a blocking thread), the
//! bookkeeping table and the classification of errors. How a chunk is loaded is in `load.rs`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use rusqlite::{ErrorCode, OpenFlags};
use tracing::debug;

use super::connection::Sqlite;
use super::{Mode, SqlitePusherConfig};

/// How long a chunk waits for another writer of the database file to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Passengers loaded in one transaction (each in a savepoint of its own).
const MAX_PER_TRANSACTION: usize = 32;

/// The bookkeeping table, in the target database: one row per loaded chunk.
pub(super) const LOADS_TABLE: &str = "ferry_loads";

/// Creates the bookkeeping table when it is missing.
const BOOKKEEPING: &str = "\
    CREATE TABLE IF NOT EXISTS ferry_loads (\
        pipeline TEXT NOT NULL, \
        target TEXT NOT NULL, \
        load TEXT NOT NULL, \
        chunk INTEGER NOT NULL, \
        last INTEGER NOT NULL, \
        passenger TEXT NOT NULL, \
        rows INTEGER NOT NULL, \
        series TEXT, \
        loaded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')), \
        PRIMARY KEY (target, passenger), \
        UNIQUE (target, load, chunk)\
    );
    CREATE INDEX IF NOT EXISTS ferry_loads_series ON ferry_loads (target, series, load);";

/// Builds `sqlite` pushers.
pub struct SqlitePusherFactory;

impl PusherFactory for SqlitePusherFactory {
    const TYPE: &'static str = "sqlite";
    const LOADS: bool = true;
    type Config = SqlitePusherConfig;

    fn build(
        &self,
        config: SqlitePusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection =
            crate::sql::connection::of_family::<Sqlite>(ctx, "connection", &config.connection)?;
        let path = PathBuf::from(&connection.url);
        let named = format!("`{}` ({})", connection.name, path.display());
        if config.table.is_empty() || config.table.contains(['"', '.', '\0']) {
            return Err(BuildError::at(
                "table",
                format!(
                    "`{}` is not a table name: it is taken as written and may not be empty or \
                     contain `\"` or `.`",
                    config.table
                ),
            ));
        }
        if config.table.starts_with("sqlite_") || config.table == LOADS_TABLE {
            return Err(BuildError::at(
                "table",
                format!(
                    "`{}` is a name SQLite or ferry keeps for itself",
                    config.table
                ),
            ));
        }
        let keys = crate::table_load::check_keys(
            &config.keys,
            config.mode == Mode::Merge,
            config.mode.as_str(),
        )?;
        Ok(Box::new(SqlitePusher {
            loader: Arc::new(Loader {
                connection: named,
                path,
                table: config.table,
                mode: config.mode,
                keys,
                create: config.create,
                pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
                component: ctx.component.clone(),
                idle: Mutex::new(None),
            }),
        }))
    }
}

/// Loads record batches into one SQLite table (see the module documentation).
pub struct SqlitePusher {
    loader: Arc<Loader>,
}

/// What a push needs on its blocking thread.
pub(super) struct Loader {
    /// The connection's name and file, for messages.
    pub connection: String,
    path: PathBuf,
    pub table: String,
    pub mode: Mode,
    pub keys: Vec<String>,
    pub create: bool,
    /// `client/pipeline`, for logs and the bookkeeping.
    pub pipeline: String,
    pub component: String,
    /// The open database, between pushes (SQLite has one writer at a time anyway).
    idle: Mutex<Option<rusqlite::Connection>>,
}

#[async_trait]
impl Pusher for SqlitePusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let owned: Vec<Passenger> = passengers.iter().map(|p| (*p).clone()).collect();
        let loader = self.loader.clone();
        let count = owned.len();
        // SQLite blocks: the load runs off the async runtime's threads.
        match tokio::task::spawn_blocking(move || loader.push(&owned)).await {
            Ok(results) => results,
            Err(error) => vec![
                Err(StepError::retryable(format!(
                    "{}: the load stopped: {error}",
                    self.loader.table
                )));
                count
            ],
        }
    }
}

impl Loader {
    /// Loads the passengers in groups, one transaction each.
    fn push(&self, passengers: &[Passenger]) -> Vec<Result<(), StepError>> {
        let mut conn = match self.conn() {
            Ok(conn) => conn,
            Err(error) => return vec![Err(error); passengers.len()],
        };
        let mut results = Vec::with_capacity(passengers.len());
        for group in passengers.chunks(MAX_PER_TRANSACTION) {
            results.extend(self.push_group(&mut conn, group));
        }
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        let failed = results.iter().filter(|r| r.is_err()).count();
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %self.table,
            written = results.len() - failed,
            failed,
            "pushed chunks"
        );
        results
    }

    /// The open database, or the file opened (created when missing) with the bookkeeping
    /// table.
    fn conn(&self) -> Result<rusqlite::Connection, StepError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(conn);
        }
        let context = "cannot open the database";
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags)
            .map_err(|error| self.error(context, &error))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|error| self.error(context, &error))?;
        conn.execute_batch(BOOKKEEPING).map_err(|error| {
            self.error(
                &format!("cannot create the bookkeeping table {LOADS_TABLE}"),
                &error,
            )
        })?;
        Ok(conn)
    }

    /// An SQLite error as a step error, with `context` and the table. A busy or locked
    /// database, a file that cannot be opened, a full disk or an I/O error may pass (retryable,
    /// naming the connection); everything else is the data's or the definition's fault.
    pub(super) fn error(&self, context: &str, error: &rusqlite::Error) -> StepError {
        let message = format!("{}: {context}: {error}", self.table);
        let retryable = matches!(
            error.sqlite_error_code(),
            Some(
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::OutOfMemory
                    | ErrorCode::FileLockingProtocolFailed
            )
        );
        match retryable {
            true => StepError::retryable(format!("{message} (connection {})", self.connection)),
            false => StepError::permanent(message),
        }
    }
}
