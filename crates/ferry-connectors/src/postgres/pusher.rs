//! The `postgres` pusher: its factory, its connections, the bookkeeping schema and the
//! migrations. How one chunk is loaded is in `load.rs`.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use tokio_postgres::error::{DbError, ErrorPosition};
use tokio_postgres::{Client, Statement};
use tracing::{debug, info, warn};

use super::config::{Mode, PostgresPusherConfig};
use super::connection::{ConnectError, Postgres};
use super::schema::{self, HISTORY_COLUMNS};
use super::script::{self, Migration, Placeholder, Script, Values};
use super::{Target, quote_list, quote_literal};

/// How long a connection attempt may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections kept per pusher; more are closed when returned.
const MAX_IDLE: usize = 4;

/// Passengers loaded in one transaction (each in a savepoint of its own). PostgreSQL keeps the
/// ids of up to 64 subtransactions per transaction in shared memory; past that every other
/// session's snapshots get slower, so a large batch is committed in groups well below it.
const MAX_PER_TRANSACTION: usize = 32;

/// Builds `postgres` pushers.
pub struct PostgresPusherFactory;

impl PusherFactory for PostgresPusherFactory {
    const TYPE: &'static str = "postgres";
    const LOADS: bool = true;
    type Config = PostgresPusherConfig;

    fn build(
        &self,
        config: PostgresPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection =
            crate::sql::connection::of_family::<Postgres>(ctx, "connection", &config.connection)?;
        let mut pg: tokio_postgres::Config = connection.url.parse().map_err(|error| {
            BuildError::at(
                "connection",
                format!(
                    "connection `{}` ({}) is not a valid PostgreSQL URL: {error}",
                    connection.name,
                    connection.redacted()
                ),
            )
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("ferry");
        }
        let target = Target::parse(&config.table).map_err(|m| BuildError::at("table", m))?;
        let keys = check_keys(&config)?;

        // SQL files are part of the definition: read and checked now, so that `ferry validate`
        // reports a missing file or a bad placeholder.
        let before = read_scripts(ctx, "before", &config.before)?;
        let after = read_scripts(ctx, "after", &config.after)?;
        let migrations_dir = crate::client_sql::dir(ctx).join(&config.table);
        ctx.sandbox
            .check(&migrations_dir, ferry_core::sandbox::Reach::Definition)
            .map_err(|why| BuildError::at("table", format!("migrations directory {why}")))?;
        let migrations = script::read_migrations(&migrations_dir)
            .map_err(|message| BuildError::at("table", format!("migrations: {message}")))?;

        Ok(Box::new(PostgresPusher {
            connection: format!("`{}` ({})", connection.name, connection.redacted()),
            pg,
            tls: connection.tls,
            target,
            mode: config.mode,
            keys,
            before,
            after,
            migrations,
            migrations_dir: format!("clients/{}/sql/{}/", ctx.client, config.table),
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
            idle: Mutex::new(Vec::new()),
            ready: tokio::sync::Mutex::new(false),
        }))
    }
}

/// The keys, checked as every table pusher's (`table_load::check_keys`), and none of the
/// columns history keeps itself.
fn check_keys(config: &PostgresPusherConfig) -> Result<Vec<String>, BuildError> {
    let needs_keys = matches!(config.mode, Mode::Merge | Mode::History);
    let keys = crate::table_load::check_keys(&config.keys, needs_keys, config.mode.as_str())?;
    for (index, key) in keys.iter().enumerate() {
        if config.mode == Mode::History && HISTORY_COLUMNS.iter().any(|(name, _)| name == key) {
            return Err(BuildError {
                path: vec!["keys".into(), index.to_string()],
                message: format!("`{key}` is one of the columns history keeps itself"),
                within: None,
            });
        }
    }
    Ok(keys)
}

/// Reads the SQL files listed under `key`; an error points at the file's index.
fn read_scripts(
    ctx: &BuildContext,
    key: &str,
    files: &[String],
) -> Result<Vec<Script>, BuildError> {
    let mut scripts = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        let script = crate::client_sql::read(ctx, file)
            .and_then(|text| Script::parse(file, &text, &Placeholder::STEP))
            .map_err(|message| BuildError {
                path: vec![key.to_string(), index.to_string()],
                message,
                within: None,
            })?;
        scripts.push(script);
    }
    Ok(scripts)
}

/// Loads record batches into one PostgreSQL table (see the module documentation).
pub struct PostgresPusher {
    /// The connection's name and redacted URL, for messages.
    pub(super) connection: String,
    pg: tokio_postgres::Config,
    /// How connections are secured.
    tls: crate::sql::Tls,
    pub(super) target: Target,
    pub(super) mode: Mode,
    pub(super) keys: Vec<String>,
    pub(super) before: Vec<Script>,
    pub(super) after: Vec<Script>,
    migrations: Vec<Migration>,
    /// `clients/<client>/sql/<table>/`, for messages.
    pub(super) migrations_dir: String,
    /// `client/pipeline`, for logs and `ferry.loads`.
    pub(super) pipeline: String,
    pub(super) component: String,
    /// Connections not in use.
    idle: Mutex<Vec<Session>>,
    /// The bookkeeping tables exist and the migrations ran (once per pusher).
    ready: tokio::sync::Mutex<bool>,
}

/// One connection with its prepared statements.
pub(crate) struct Session {
    pub client: Client,
    pub statements: Statements,
}

/// The statements every chunk runs, prepared once per connection.
pub(crate) struct Statements {
    /// What `ferry.loads` knows about a chunk and its load.
    pub state: Statement,
    /// A relation's kind and columns.
    pub describe: Statement,
    /// Records a loaded chunk.
    pub record: Statement,
    /// Marks a load complete.
    pub complete: Statement,
}

/// What `ferry.loads` knows about a chunk and its load; see [`Statements::state`].
///
/// `$5`: the mode stages its loads (superseded by a newer completed load); `$6`: the chunk's
/// series (superseded by any newer load of the series, or once abandoned); `$7`: the pipeline.
const STATE: &str = "\
    SELECT \
      EXISTS (SELECT 1 FROM ferry.loads WHERE target = $1 AND passenger = $4), \
      (SELECT passenger FROM ferry.loads WHERE target = $1 AND load = $2 AND chunk = $3), \
      (SELECT count(*) FROM ferry.loads WHERE target = $1 AND load = $2), \
      (SELECT max(chunk) FROM ferry.loads WHERE target = $1 AND load = $2 AND last), \
      ($5::boolean AND EXISTS (SELECT 1 FROM ferry.loads \
        WHERE target = $1 AND passenger > $4 AND load <> $2 AND completed_at IS NOT NULL)) \
      OR ($6::text IS NOT NULL AND EXISTS (SELECT 1 FROM ferry.loads \
        WHERE target = $1 AND series = $6 AND pipeline = $7 \
          AND (load > $2 OR (load = $2 AND abandoned_at IS NOT NULL))))";

const RECORD: &str = "\
    INSERT INTO ferry.loads (pipeline, target, load, chunk, last, passenger, rows, series) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const COMPLETE: &str = "\
    UPDATE ferry.loads SET completed_at = now() WHERE target = $1 AND load = $2";

/// The bookkeeping schema, created once per pusher start. The advisory lock (two-key form, a
/// space apart from the one-key locks on tables) keeps concurrent starts from racing on
/// `CREATE … IF NOT EXISTS`, which is not safe against itself.
const BOOKKEEPING: &str = "\
    BEGIN;
    SELECT pg_advisory_xact_lock(hashtext('ferry'), 0);
    CREATE SCHEMA IF NOT EXISTS ferry;
    CREATE TABLE IF NOT EXISTS ferry.loads (
        pipeline text NOT NULL,
        target text NOT NULL,
        load text NOT NULL,
        chunk bigint NOT NULL,
        last boolean NOT NULL,
        passenger uuid NOT NULL,
        rows bigint NOT NULL,
        loaded_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz,
        abandoned_at timestamptz,
        series text,
        PRIMARY KEY (target, passenger),
        UNIQUE (target, load, chunk)
    );
    CREATE INDEX IF NOT EXISTS loads_series ON ferry.loads (target, series, load)
        WHERE series IS NOT NULL;
    CREATE TABLE IF NOT EXISTS ferry.migrations (
        target text NOT NULL,
        file text NOT NULL,
        hash text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (target, file)
    );
    COMMIT;";

/// `ferry.loads.series` for a table made before it (under the same lock as [`BOOKKEEPING`]).
const SERIES: &str = "\
    BEGIN;
    SELECT pg_advisory_xact_lock(hashtext('ferry'), 0);
    ALTER TABLE ferry.loads ADD COLUMN IF NOT EXISTS series text;
    CREATE INDEX IF NOT EXISTS loads_series ON ferry.loads (target, series, load)
        WHERE series IS NOT NULL;
    COMMIT;";

#[async_trait]
impl Pusher for PostgresPusher {
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
impl crate::table_load::GroupLoader for PostgresPusher {
    type Connection = Session;

    async fn connection(&self) -> Result<Session, StepError> {
        self.session().await
    }

    async fn load_group(
        &self,
        connection: Session,
        group: &[&Passenger],
    ) -> (Option<Session>, Vec<Result<(), StepError>>) {
        self.push_group(connection, group).await
    }

    fn release(&self, connection: Session) {
        PostgresPusher::release(self, connection)
    }
}

impl PostgresPusher {
    /// An idle connection, or a new one. The bookkeeping tables and the migrations are done
    /// before the first connection is handed out.
    async fn session(&self) -> Result<Session, StepError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(session) if session.client.is_closed() => continue,
                Some(session) => return Ok(session),
                None => break,
            }
        }
        let client = self.connect().await?;
        {
            let mut ready = self.ready.lock().await;
            if !*ready {
                self.prepare(&client).await?;
                *ready = true;
            }
        }
        let prepared = futures::try_join!(
            client.prepare(STATE),
            client.prepare(schema::DESCRIBE),
            client.prepare(RECORD),
            client.prepare(COMPLETE),
        );
        let (state, describe, record, complete) =
            prepared.map_err(|error| self.error("cannot prepare the load statements", &error))?;
        let statements = Statements {
            state,
            describe,
            record,
            complete,
        };
        Ok(Session { client, statements })
    }

    /// Returns a connection for the next push (when it is still usable).
    fn release(&self, session: Session) {
        if session.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(session);
        }
    }

    async fn connect(&self) -> Result<Client, StepError> {
        let connected = super::connection::connect(&self.pg, &self.tls).await;
        let (client, driver) = connected.map_err(|error| {
            let what = format!(
                "{}: cannot connect to {}",
                self.target.name(),
                self.connection
            );
            match error {
                ConnectError::Tls(detail) => StepError::permanent(format!("{what}: {detail}")),
                ConnectError::Postgres(error) => {
                    let message = format!("{what}: {}", chain(&error));
                    match error.as_db_error() {
                        // Authentication failed, no such database: a person must fix the
                        // connection.
                        Some(db) if !retryable_state(db.code().code()) => {
                            StepError::permanent(message)
                        }
                        _ => StepError::retryable(message),
                    }
                }
            }
        })?;
        let (pipeline, component) = (self.pipeline.clone(), self.component.clone());
        tokio::spawn(async move {
            if let Ok(Err(error)) = driver.await {
                debug!(%pipeline, %component, error = %chain(&error), "postgres connection ended");
            }
        });
        Ok(client)
    }

    /// Creates the bookkeeping tables and applies the migrations: once per pusher start.
    async fn prepare(&self, client: &Client) -> Result<(), StepError> {
        self.bookkeeping(client).await?;
        self.migrate(client).await
    }

    async fn bookkeeping(&self, client: &Client) -> Result<(), StepError> {
        // Looked up first: `CREATE SCHEMA IF NOT EXISTS` needs the right to create schemas
        // even when the schema exists, and a loading role may not have it.
        let exists = client
            .query_one(
                "SELECT to_regclass('ferry.loads') IS NOT NULL \
                    AND to_regclass('ferry.migrations') IS NOT NULL, \
                    EXISTS (SELECT 1 FROM pg_attribute \
                            WHERE attrelid = to_regclass('ferry.loads') \
                              AND attname = 'series' AND NOT attisdropped)",
                &[],
            )
            .await
            .map_err(|error| self.error("cannot look for the bookkeeping tables", &error))?;
        let (tables, series): (bool, bool) = (exists.get(0), exists.get(1));
        let sql = match (tables, series) {
            (true, true) => return Ok(()),
            // Made by a ferry from before `series`: only the column and its index are added,
            // which needs no right to create schemas.
            (true, false) => SERIES,
            (false, _) => BOOKKEEPING,
        };
        if let Err(error) = client.batch_execute(sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(self.error("cannot create the bookkeeping tables ferry.*", &error));
        }
        Ok(())
    }

    /// Applies the migrations not applied yet, in order, each in its own transaction with its
    /// record; refuses changed and out-of-order files.
    async fn migrate(&self, client: &Client) -> Result<(), StepError> {
        if self.migrations.is_empty() {
            return Ok(());
        }
        let target = self.target.name();
        let rows = client
            .query(
                "SELECT file, hash FROM ferry.migrations WHERE target = $1",
                &[&target],
            )
            .await
            .map_err(|error| self.error("cannot read ferry.migrations", &error))?;
        let applied: HashMap<String, String> = rows
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
            .collect();
        let dir = &self.migrations_dir;
        for (index, migration) in self.migrations.iter().enumerate() {
            let name = &migration.script.name;
            match applied.get(name) {
                Some(hash) if *hash == migration.script.hash => continue,
                Some(_) => {
                    return Err(StepError::held(format!(
                        "migration {dir}{name} was changed after it was applied to {target}; \
                         restore it as it was and put the change in a new migration with a \
                         higher number"
                    )));
                }
                None => {}
            }
            if let Some(later) = self.migrations[index + 1..]
                .iter()
                .find(|later| applied.contains_key(&later.script.name))
            {
                return Err(StepError::held(format!(
                    "migration {dir}{name} is new but {dir}{} was already applied to {target}; \
                     number new migrations after the last applied one",
                    later.script.name
                )));
            }
            self.apply_migration(client, migration).await?;
        }
        Ok(())
    }

    async fn apply_migration(
        &self,
        client: &Client,
        migration: &Migration,
    ) -> Result<(), StepError> {
        let result = self.try_apply_migration(client, migration).await;
        let end = match result {
            Ok(true) => "COMMIT",
            Ok(false) | Err(_) => "ROLLBACK",
        };
        if let Err(error) = client.batch_execute(end).await {
            return Err(self.error(
                &format!(
                    "migration {}{}: cannot commit",
                    self.migrations_dir, migration.script.name
                ),
                &error,
            ));
        }
        result.map(|_| ())
    }

    /// Runs one migration inside a transaction; `false` when another pusher applied it first.
    async fn try_apply_migration(
        &self,
        client: &Client,
        migration: &Migration,
    ) -> Result<bool, StepError> {
        let target = self.target.name();
        let name = &migration.script.name;
        let context = format!("migration {}{name}", self.migrations_dir);
        client
            .batch_execute(&format!("BEGIN; {}", self.lock()))
            .await
            .map_err(|error| self.error(&context, &error))?;
        let again = client
            .query_opt(
                "SELECT hash FROM ferry.migrations WHERE target = $1 AND file = $2",
                &[&target, name],
            )
            .await
            .map_err(|error| self.error(&context, &error))?;
        if again.is_some() {
            return Ok(false);
        }
        let values = self.values(None, None);
        if let Err(error) = run_script(client, &migration.script, &values).await {
            // A broken migration needs a person, not a dead letter: the data is fine.
            let message = format!(
                "{target}: migration {}{}",
                self.migrations_dir, error.message
            );
            return Err(match error.retryable {
                true => StepError::retryable(message),
                false => StepError::held(message),
            });
        }
        client
            .execute(
                "INSERT INTO ferry.migrations (target, file, hash) VALUES ($1, $2, $3)",
                &[&target, name, &migration.script.hash],
            )
            .await
            .map_err(|error| self.error(&context, &error))?;
        info!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %target,
            migration = %name,
            "applied migration"
        );
        Ok(true)
    }

    /// The statement that takes the table's advisory lock until the transaction ends.
    pub(super) fn lock(&self) -> String {
        format!(
            "SELECT pg_advisory_xact_lock(hashtext({}))",
            quote_literal(&self.target.name())
        )
    }

    /// The placeholder values for the SQL files of a load (`data` and `load` are `None` for
    /// migrations).
    pub(super) fn values(&self, data: Option<&[&str]>, load: Option<&str>) -> Values {
        Values {
            target_schema: super::quote_ident(&self.target.schema),
            target_table: super::quote_ident(&self.target.table),
            target: self.target.quoted(),
            key_columns: quote_list(self.keys.iter().map(String::as_str)),
            data_columns: quote_list(data.unwrap_or_default().iter().copied()),
            load: load.map(quote_literal).unwrap_or_default(),
        }
    }

    /// A database error as a step error, with `context` and the table.
    pub(super) fn error(&self, context: &str, error: &tokio_postgres::Error) -> StepError {
        match error.as_db_error() {
            Some(db) => db_error(&format!("{}: {context}", self.target.name()), db),
            None => StepError::retryable(format!(
                "{}: {context}: {} (connection {})",
                self.target.name(),
                chain(error),
                self.connection
            )),
        }
    }

    /// Logs a chunk that was not loaded again, and why.
    pub(super) fn skipped(&self, passenger: &Passenger, why: &str) {
        warn!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %self.target.name(),
            passenger = %passenger.id,
            why,
            "chunk skipped"
        );
    }
}

/// Runs an SQL file statement by statement; an error names the file and line.
pub(super) async fn run_script(
    client: &Client,
    script: &Script,
    values: &Values,
) -> Result<(), StepError> {
    for statement in &script.statements {
        let text = statement.render(values);
        let Err(error) = client.batch_execute(&text).await else {
            continue;
        };
        let Some(db) = error.as_db_error() else {
            return Err(StepError::retryable(format!(
                "{}:{}: {}",
                script.name,
                statement.line,
                chain(&error)
            )));
        };
        let line = match db.position() {
            Some(ErrorPosition::Original(position)) => statement.line_of(&text, *position as usize),
            _ => statement.line,
        };
        return Err(db_error(&format!("{}:{line}", script.name), db));
    }
    Ok(())
}

/// A database error as a step error: the database's message with its detail, context (the
/// COPY line, say) and hint, classified by SQLSTATE.
pub(super) fn db_error(context: &str, db: &DbError) -> StepError {
    let code = db.code().code();
    let mut message = format!("{context}: {}", db.message());
    if let Some(detail) = db.detail() {
        message.push_str(&format!("; {detail}"));
    }
    if let Some(place) = db.where_() {
        message.push_str(&format!(" ({place})"));
    }
    if let Some(hint) = db.hint() {
        message.push_str(&format!("; hint: {hint}"));
    }
    message.push_str(&format!(" [SQLSTATE {code}]"));
    match retryable_state(code) {
        true => StepError::retryable(message),
        false => StepError::permanent(message),
    }
}

/// Whether an error with this SQLSTATE may pass on a later attempt. Data, integrity, syntax,
/// privilege and PL/pgSQL errors are permanent; everything else (connection, deadlock,
/// serialization, lock and statement timeouts, resources, shutdown, internal errors) is
/// retryable, as the spec prefers when unsure.
pub(super) fn retryable_state(code: &str) -> bool {
    const PERMANENT: [&str; 15] = [
        "0A", "21", "22", "23", "26", "27", "28", "2B", "2F", "3D", "3F", "42", "44", "P0", "2D",
    ];
    !PERMANENT.contains(&code.get(..2).unwrap_or(""))
}

/// An error with its causes, `: `-separated (tokio-postgres keeps the cause apart).
pub(super) fn chain(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
