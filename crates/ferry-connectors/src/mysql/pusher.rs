//! The `mysql` pusher: its factory, its connections, the bookkeeping table and the
//! classification of errors. How a group of chunks is loaded is in `load.rs`.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::connection::Mysql;
use super::schema::Target;
use super::{Mode, MysqlPusherConfig};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept per pusher; more are closed when returned.
const MAX_IDLE: usize = 4;

/// Passengers loaded in one transaction (each in a savepoint of its own): one commit, one
/// durable flush, per group.
pub(super) const MAX_PER_TRANSACTION: usize = 32;

/// Settings for every session: UTF-8, UTC (instants are stored as UTC `DATETIME`s, and a
/// `TIMESTAMP` column reads them as UTC), and a known SQL mode: strict (a value that does not
/// fit is an error in statements, a warning in `LOAD DATA LOCAL`, which ferry checks), and
/// backslash escapes on (`LOAD DATA` reads the batch's escapes).
const SESSION: &str = "SET NAMES utf8mb4, time_zone = '+00:00', \
    sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'";

/// The bookkeeping table, in the target's database: one row per loaded chunk.
pub(super) const LOADS_TABLE: &str = "ferry_loads";

/// Creates the bookkeeping table when it is missing (InnoDB: it commits with the rows).
fn bookkeeping(quoted: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {quoted} (\
            pipeline VARCHAR(255) NOT NULL, \
            target VARCHAR(255) NOT NULL, \
            `load` VARCHAR(255) NOT NULL, \
            chunk BIGINT NOT NULL, \
            `last` BOOLEAN NOT NULL, \
            passenger CHAR(36) NOT NULL, \
            `rows` BIGINT NOT NULL, \
            series VARCHAR(255) NULL, \
            loaded_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
            PRIMARY KEY (target, passenger), \
            UNIQUE KEY chunk (target, `load`, chunk), \
            KEY series (target, series, `load`)\
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
}

/// Builds `mysql` pushers.
pub struct MysqlPusherFactory;

impl PusherFactory for MysqlPusherFactory {
    const TYPE: &'static str = "mysql";
    const LOADS: bool = true;
    type Config = MysqlPusherConfig;

    fn build(
        &self,
        config: MysqlPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection =
            crate::sql::connection::of_family::<Mysql>(ctx, "connection", &config.connection)?;
        let named = format!("`{}` ({})", connection.name, connection.redacted());
        // Its URL and TLS settings; checked when the connection was read.
        let opts = super::connection::opts(&connection)
            .map_err(|error| BuildError::at("connection", error))?;
        let target = Target::parse(&config.table, opts.db_name())
            .map_err(|message| BuildError::at("table", message))?;
        let keys = crate::table_load::check_keys(
            &config.keys,
            config.mode == Mode::Merge,
            config.mode.as_str(),
        )?;
        // No global `LOCAL INFILE` handler: `LOAD DATA LOCAL` is answered only from the chunk
        // the pusher sets on the connection for the statement at hand, never from a file the
        // server names. The statement cache is small: a pusher prepares a handful.
        let opts: Opts = OptsBuilder::from_opts(opts).stmt_cache_size(16).into();
        Ok(Box::new(MysqlPusher {
            connection: named,
            opts,
            target,
            mode: config.mode,
            keys,
            create: config.create,
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
            idle: Mutex::new(Vec::new()),
            ready: tokio::sync::Mutex::new(false),
        }))
    }
}

/// Loads record batches into one MySQL/MariaDB table (see the module documentation).
pub struct MysqlPusher {
    /// The connection's name and redacted URL, for messages.
    pub(super) connection: String,
    opts: Opts,
    pub(super) target: Target,
    pub(super) mode: Mode,
    pub(super) keys: Vec<String>,
    /// Whether a missing table is created.
    pub(super) create: bool,
    /// `client/pipeline`, for logs and the bookkeeping.
    pub(super) pipeline: String,
    pub(super) component: String,
    /// Connections not in use.
    idle: Mutex<Vec<Conn>>,
    /// The bookkeeping table exists (checked once per pusher).
    ready: tokio::sync::Mutex<bool>,
}

#[async_trait]
impl Pusher for MysqlPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let target = self.target.name();
        let names = (
            self.pipeline.as_str(),
            self.component.as_str(),
            target.as_str(),
        );
        crate::table_load::push_in_groups(self, passengers, MAX_PER_TRANSACTION, names).await
    }
}

#[async_trait]
impl crate::table_load::GroupLoader for MysqlPusher {
    type Connection = Conn;

    async fn connection(&self) -> Result<Conn, StepError> {
        self.conn().await
    }

    async fn load_group(
        &self,
        connection: Conn,
        group: &[&Passenger],
    ) -> (Option<Conn>, Vec<Result<(), StepError>>) {
        self.push_group(connection, group).await
    }

    fn release(&self, connection: Conn) {
        MysqlPusher::release(self, connection)
    }
}

impl MysqlPusher {
    /// An idle connection, or a new one; the bookkeeping table is made before the first one is
    /// handed out.
    async fn conn(&self) -> Result<Conn, StepError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        let mut conn = self.connect().await?;
        let mut ready = self.ready.lock().await;
        if !*ready {
            let create = bookkeeping(&self.target.sibling(LOADS_TABLE));
            conn.query_drop(create).await.map_err(|error| {
                self.error(
                    &format!("cannot create the bookkeeping table {LOADS_TABLE}"),
                    &error,
                )
            })?;
            *ready = true;
        }
        Ok(conn)
    }

    /// Returns a connection for the next push.
    pub(super) fn release(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, StepError> {
        let context = format!("cannot connect to {}", self.connection);
        let mut conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(self.opts.clone())).await {
                Ok(result) => result.map_err(|error| self.error(&context, &error))?,
                Err(_) => {
                    return Err(StepError::retryable(format!(
                        "{}: {context}: no answer within {}s",
                        self.target.name(),
                        CONNECT_TIMEOUT.as_secs()
                    )));
                }
            };
        conn.query_drop(SESSION)
            .await
            .map_err(|error| self.error("cannot set up the session", &error))?;
        Ok(conn)
    }

    /// A driver error as a step error, with `context` and the table; errors of the connection
    /// itself name it (by its redacted URL).
    pub(super) fn error(&self, context: &str, error: &mysql_async::Error) -> StepError {
        let target = self.target.name();
        match error {
            mysql_async::Error::Server(server) => {
                let message = format!(
                    "{target}: {context}: {} [{} {}]",
                    server.message, server.code, server.state
                );
                match retryable_code(server.code) {
                    true => {
                        StepError::retryable(format!("{message} (connection {})", self.connection))
                    }
                    false => StepError::permanent(message),
                }
            }
            mysql_async::Error::Url(_) => StepError::permanent(format!(
                "{target}: {context}: {error} (connection {})",
                self.connection
            )),
            _ => StepError::retryable(format!(
                "{target}: {context}: {error} (connection {})",
                self.connection
            )),
        }
    }
}

/// Whether a server error may pass on a later attempt: lock waits and deadlocks, too many
/// connections, a server shutting down or a killed query or connection, and a duplicate in
/// the bookkeeping (another worker loaded the chunk at the same time: the next attempt finds
/// it recorded). Everything else the server refuses (bad values, SQL, privileges, unknown
/// database) needs a person.
pub(super) fn retryable_code(code: u16) -> bool {
    const RETRYABLE: [u16; 10] = [1040, 1053, 1062, 1203, 1205, 1213, 1317, 1927, 2006, 2013];
    RETRYABLE.contains(&code)
}
