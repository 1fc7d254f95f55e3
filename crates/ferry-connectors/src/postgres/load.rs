//! A group of chunks in one transaction, each chunk in a savepoint: the bookkeeping, the
//! schema, the SQL steps and the four modes. The order of the steps is described in the module
//! documentation (`mod.rs`).

use bytes::Bytes;
use ferry_core::records::Column;
use ferry_core::{Passenger, StepError};
use futures::SinkExt;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tracing::{debug, info};
use uuid::Uuid;

use super::config::Mode;
use super::pusher::{PostgresPusher, Session, run_script};
use super::schema::{self, Advice, DescribeError, HISTORY_COLUMNS, Missing, Table};
use super::script::Script;
use super::{quote_ident, quote_list};
use crate::table_load::ChunkLoad;

/// A chunk on its way into the table.
type Load<'a> = ChunkLoad<'a>;

/// What only the `postgres` pusher asks of a chunk.
impl ChunkLoad<'_> {
    /// Whether the chunk goes to the load's shadow table rather than into the target:
    /// always for `replace` and `history`, and for `append` when the load belongs to a series
    /// (a full load, whose rows must become visible together at its end).
    fn staged(&self, mode: Mode) -> bool {
        mode.stages() || (mode == Mode::Append && self.series.is_some())
    }

    /// The batch's columns that are not keys (`{data_columns}`).
    fn data_columns(&self, keys: &[String]) -> Vec<&str> {
        self.names()
            .filter(|n| !keys.iter().any(|k| k == n))
            .collect()
    }
}

/// Bytes per COPY data message.
const COPY_SLICE: usize = 64 * 1024;

/// How one passenger of a group went.
enum Loaded<'a> {
    /// Its result, with its chunk when it succeeded; the transaction goes on.
    Done(Result<Load<'a>, StepError>),
    /// The transaction cannot go on: the whole group fails with this error.
    Broken(StepError),
}

/// What `ferry.loads` knows about the chunk and its load.
struct State {
    /// This passenger was already loaded.
    recorded: bool,
    /// Another passenger already loaded this chunk of this load.
    owner: Option<Uuid>,
    /// Chunks of the load recorded so far.
    chunks: i64,
    /// The number of the load's last chunk, when it was recorded.
    last: Option<i64>,
    /// A newer load was already applied (`replace`, `history`).
    superseded: bool,
}

impl PostgresPusher {
    /// Loads a group of passengers in one transaction, each in a savepoint of its own: one
    /// commit (one durable flush) for the group, and a failing passenger rolls back only its
    /// own savepoint. Returns the session unless the connection broke.
    ///
    /// `append` runs without the table's lock as long as nothing needs it, so that groups of
    /// one load COPY side by side; see the module documentation.
    pub(super) async fn push_group(
        &self,
        session: Session,
        group: &[&Passenger],
    ) -> (Option<Session>, Vec<Result<(), StepError>>) {
        let client = &session.client;
        let mut locked = self.mode != Mode::Append;
        let begin = match locked {
            true => format!("BEGIN; {}", self.lock()),
            false => "BEGIN".to_string(),
        };
        if let Err(error) = client.batch_execute(&begin).await {
            let error = self.error("cannot start the load's transaction", &error);
            let _ = client.batch_execute("ROLLBACK").await;
            return (usable(session), vec![Err(error); group.len()]);
        }
        let mut results = Vec::with_capacity(group.len());
        // A chunk of each load the group touched, for `append`'s completion at the end.
        let mut loads: Vec<Load<'_>> = Vec::new();
        let mut broken = None;
        for passenger in group {
            match self
                .load_in_savepoint(&session, passenger, &mut locked)
                .await
            {
                Loaded::Done(result) => results.push(result.map(|chunk| {
                    if !loads.iter().any(|l| l.load == chunk.load) {
                        loads.push(chunk);
                    }
                })),
                Loaded::Broken(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        if broken.is_none()
            && self.mode == Mode::Append
            && let Err(error) = self.complete_appended(&session, locked, &loads).await
        {
            broken = Some(error);
        }
        // The transaction cannot be committed (a savepoint could not be rolled back, or the
        // connection broke): nothing of the group stays, so nothing of it succeeded. (COMMIT
        // of an aborted transaction rolls back without an error, so it must not be tried.)
        if let Some(error) = broken {
            let _ = client.batch_execute("ROLLBACK").await;
            return (usable(session), vec![Err(error); group.len()]);
        }
        if let Err(error) = client.batch_execute("COMMIT").await {
            let error = self.error("cannot commit", &error);
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
        (usable(session), results)
    }

    /// Loads one passenger inside the group's transaction, in a savepoint.
    async fn load_in_savepoint<'a>(
        &self,
        session: &Session,
        passenger: &'a Passenger,
        locked: &mut bool,
    ) -> Loaded<'a> {
        let load = match self.read(passenger) {
            Ok(load) => load,
            Err(error) => return Loaded::Done(Err(error)),
        };
        let client = &session.client;
        if let Err(error) = client.batch_execute("SAVEPOINT ferry_chunk").await {
            return Loaded::Broken(self.error("cannot start the chunk's savepoint", &error));
        }
        let result = self.load_chunk(session, &load, locked).await;
        let end = match result {
            Ok(()) => "RELEASE SAVEPOINT ferry_chunk",
            Err(_) => "ROLLBACK TO SAVEPOINT ferry_chunk; RELEASE SAVEPOINT ferry_chunk",
        };
        match client.batch_execute(end).await {
            Ok(()) => Loaded::Done(result.map(|()| load)),
            // The connection broke, or the transaction is stuck in an error: the whole group
            // fails. The chunk's own error says more than the follow-up.
            Err(error) => Loaded::Broken(match result {
                Err(own) if own.retryable => own,
                _ => self.error(&format!("{}: savepoint", load.describe()), &error),
            }),
        }
    }

    /// The passenger's batch and place in its load; errors are the passenger's fault.
    fn read<'a>(&self, passenger: &'a Passenger) -> Result<Load<'a>, StepError> {
        let target = self.target.name();
        let load = ChunkLoad::read(passenger, &target, &self.keys)?;
        if self.mode == Mode::History
            && let Some(column) = load
                .batch
                .columns
                .iter()
                .find(|c| HISTORY_COLUMNS.iter().any(|(name, _)| *name == c.name))
        {
            return Err(StepError::permanent(format!(
                "{target}: the batch has a column `{}`, which history keeps itself; rename it \
                 in the puller",
                column.name
            )));
        }
        Ok(load)
    }

    /// Everything a chunk does inside its savepoint. Without the table's lock (`append`), it
    /// takes the lock first when the chunk may be its load's first or the table is missing.
    async fn load_chunk(
        &self,
        session: &Session,
        load: &Load<'_>,
        locked: &mut bool,
    ) -> Result<(), StepError> {
        let client = &session.client;
        let quoted = self.target.quoted();
        let (state, table) = match *locked {
            // The table's columns are read with the bookkeeping, in one round trip.
            true => futures::try_join!(self.state(session, load), self.describe(session, &quoted))?,
            false => {
                // The table is read only once the load has chunks: a lookup that finds no
                // table leaves the session's catalog cache saying so for the rest of the
                // transaction, even after another session's table is committed.
                let state = self.state(session, load).await?;
                let settled = state.recorded || state.owner.is_some();
                let table = match state.chunks > 0 && !settled {
                    true => self.describe(session, &quoted).await?,
                    false => None,
                };
                if settled || table.is_some() {
                    (state, table)
                } else {
                    // Maybe the load's first chunk, or the table is missing: the lock, then
                    // a fresh look.
                    self.take_lock(client).await?;
                    *locked = true;
                    futures::try_join!(self.state(session, load), self.describe(session, &quoted))?
                }
            }
        };
        if state.recorded {
            debug!(
                pipeline = %self.pipeline,
                component = %self.component,
                passenger = %load.passenger.id,
                "chunk already loaded"
            );
            return Ok(());
        }
        if let Some(owner) = state.owner {
            let why = format!(
                "{} was already loaded by passenger {owner}",
                load.describe()
            );
            self.skipped(load.passenger, &why);
            return Ok(());
        }
        if state.superseded {
            self.record(session, load).await?;
            if load.series.is_some() {
                // Discarded whole: its staging goes, and it can never complete.
                if !*locked {
                    self.take_lock(client).await?;
                    *locked = true;
                }
                self.abandon(client, std::slice::from_ref(&load.load))
                    .await?;
            }
            self.skipped(
                load.passenger,
                &format!(
                    "{} was superseded by a newer load of the table",
                    load.describe()
                ),
            );
            return Ok(());
        }
        let first = state.chunks == 0;
        let last = if load.last {
            Some(load.number)
        } else {
            state.last
        };
        let completes = last.is_some_and(|last| state.chunks + 1 >= last);

        if first && let Some(series) = &load.series {
            self.abandon_older(client, series, &load.load).await?;
        }
        let data_columns = load.data_columns(&self.keys);
        let values = self.values(Some(data_columns.as_slice()), Some(&load.load));
        match self.mode {
            Mode::Append | Mode::Merge => {
                self.prepare_target(client, table.as_ref(), load).await?;
                if first {
                    self.run_scripts(client, "before", &self.before, &values)
                        .await?;
                }
                match self.mode {
                    Mode::Append if load.staged(self.mode) => {
                        self.stage(session, load, first).await?
                    }
                    Mode::Append => {
                        let target = self.target.quoted();
                        self.copy(client, &target, load).await?;
                    }
                    _ => self.merge(client, table.as_ref(), load).await?,
                }
            }
            Mode::Replace | Mode::History => {
                self.check_staged(table.as_ref(), load)?;
                if first {
                    self.run_scripts(client, "before", &self.before, &values)
                        .await?;
                }
                self.stage(session, load, first).await?;
            }
        }
        self.record(session, load).await?;
        // `append` completes its loads at the end of the group, under the lock.
        if !completes || self.mode == Mode::Append {
            return Ok(());
        }
        match self.mode {
            Mode::Append | Mode::Merge => {}
            Mode::Replace => self.swap(session, load).await?,
            Mode::History => self.apply_history(session, load).await?,
        }
        self.finish(session, &load.load, &values).await?;
        if self.mode.stages() {
            self.drop_older_shadows(client, load).await?;
        }
        Ok(())
    }

    /// Takes the table's lock (see [`PostgresPusher::lock`]) inside the open transaction.
    async fn take_lock(&self, client: &Client) -> Result<(), StepError> {
        client
            .batch_execute(&self.lock())
            .await
            .map_err(|error| self.error("cannot lock the table", &error))
    }

    /// A complete load: runs the `after` files and marks it complete.
    async fn finish(
        &self,
        session: &Session,
        load: &str,
        values: &super::script::Values,
    ) -> Result<(), StepError> {
        let client = &session.client;
        self.run_scripts(client, "after", &self.after, values)
            .await?;
        let target = self.target.name();
        client
            .execute(&session.statements.complete, &[&target, &load])
            .await
            .map_err(|error| self.error(&format!("load {load}"), &error))?;
        Ok(())
    }

    /// `append`, at the end of a group: under the table's lock (so that two groups finishing
    /// side by side cannot both miss the other's chunks), finishes each of the group's loads
    /// whose chunks are now all recorded. A failure fails the whole group: its chunks are
    /// rolled back and come again.
    async fn complete_appended(
        &self,
        session: &Session,
        locked: bool,
        loads: &[Load<'_>],
    ) -> Result<(), StepError> {
        let client = &session.client;
        if loads.is_empty() {
            return Ok(());
        }
        if !locked {
            self.take_lock(client).await?;
        }
        let target = self.target.name();
        for chunk in loads {
            let load = &chunk.load;
            let row = client
                .query_one(
                    "SELECT count(*) >= max(chunk) FILTER (WHERE last) \
                            AND bool_and(completed_at IS NULL) \
                            AND bool_and(abandoned_at IS NULL) \
                     FROM ferry.loads WHERE target = $1 AND load = $2",
                    &[&target, load],
                )
                .await
                .map_err(|error| self.error("cannot read ferry.loads", &error))?;
            if row.get::<_, Option<bool>>(0) == Some(true) {
                if chunk.staged(self.mode) {
                    self.unstage(session, chunk).await?;
                }
                let data = chunk.data_columns(&self.keys);
                let values = self.values(Some(&data), Some(load));
                self.finish(session, load, &values).await?;
            }
        }
        Ok(())
    }

    async fn state(&self, session: &Session, load: &Load<'_>) -> Result<State, StepError> {
        let target = self.target.name();
        let staged = self.mode.stages();
        let row = session
            .client
            .query_one(
                &session.statements.state,
                &[
                    &target,
                    &load.load,
                    &load.number,
                    &load.passenger.id.0,
                    &staged,
                    &load.series,
                    &self.pipeline,
                ],
            )
            .await
            .map_err(|error| self.error("cannot read ferry.loads", &error))?;
        Ok(State {
            recorded: row.get(0),
            owner: row.get(1),
            chunks: row.get(2),
            last: row.get(3),
            superseded: row.get(4),
        })
    }

    /// Records the chunk in `ferry.loads`, in its transaction.
    async fn record(&self, session: &Session, load: &Load<'_>) -> Result<(), StepError> {
        let target = self.target.name();
        let rows = i64::try_from(load.batch.rows).unwrap_or(i64::MAX);
        session
            .client
            .execute(
                &session.statements.record,
                &[
                    &self.pipeline,
                    &target,
                    &load.load,
                    &load.number,
                    &load.last,
                    &load.passenger.id.0,
                    &rows,
                    &load.series,
                ],
            )
            .await
            .map_err(|error| self.error("cannot record the chunk in ferry.loads", &error))?;
        Ok(())
    }

    /// The table `quoted` names, if it exists.
    async fn describe(&self, session: &Session, quoted: &str) -> Result<Option<Table>, StepError> {
        let what = format!("`{}`", quoted.replace('"', ""));
        schema::describe(&session.client, &session.statements.describe, quoted, &what)
            .await
            .map_err(|error| match error {
                DescribeError::Database(error) => {
                    self.error("cannot read the table's columns", &error)
                }
                DescribeError::NotATable(error) => error,
            })
    }

    fn advice(&self) -> Advice {
        Advice {
            target: self.target.name(),
            migrations: self.migrations_dir.clone(),
        }
    }

    /// `append` and `merge`: creates the table (`table` is `None`) or adds the batch's new
    /// columns.
    async fn prepare_target(
        &self,
        client: &Client,
        table: Option<&Table>,
        load: &Load<'_>,
    ) -> Result<(), StepError> {
        let quoted = self.target.quoted();
        let context = format!("{}: cannot prepare the table", load.describe());
        match table {
            Some(existing) => {
                let changes = schema::check(
                    existing,
                    &load.batch.columns,
                    Missing::Nullable,
                    &[],
                    &self.advice(),
                )?;
                if let Some(alter) = schema::add_columns(&quoted, &changes.add) {
                    client
                        .batch_execute(&alter)
                        .await
                        .map_err(|error| self.error(&context, &error))?;
                    self.added(&changes.add);
                }
            }
            None => {
                self.ensure_schema(client).await?;
                let columns = schema::staging_columns(None, &load.batch.columns);
                let create = schema::create_table(&quoted, &columns, &self.keys);
                client
                    .batch_execute(&create)
                    .await
                    .map_err(|error| self.error(&context, &error))?;
                info!(
                    pipeline = %self.pipeline,
                    component = %self.component,
                    target = %self.target.name(),
                    "created table"
                );
            }
        }
        Ok(())
    }

    /// Creates the target's schema when it is missing (checked first: `CREATE SCHEMA IF NOT
    /// EXISTS` needs the right to create schemas even when the schema exists).
    async fn ensure_schema(&self, client: &Client) -> Result<(), StepError> {
        let context = "cannot create the table's schema";
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.target.schema],
            )
            .await
            .map_err(|error| self.error(context, &error))?;
        if exists.is_some() {
            return Ok(());
        }
        // Two tables of one new schema may be created at once: the lock keeps the two
        // `CREATE SCHEMA IF NOT EXISTS` apart, which would otherwise race.
        let create = format!(
            "SELECT pg_advisory_xact_lock(hashtext('ferry'), hashtext({})); \
             CREATE SCHEMA IF NOT EXISTS {}",
            super::quote_literal(&self.target.schema),
            quote_ident(&self.target.schema)
        );
        client
            .batch_execute(&create)
            .await
            .map_err(|error| self.error(context, &error))
    }

    fn added(&self, columns: &[Column]) {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        info!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %self.target.name(),
            columns = %names.join(", "),
            "added columns"
        );
    }

    /// Runs the `before` or `after` files; an error names the step, file and line.
    async fn run_scripts(
        &self,
        client: &Client,
        step: &str,
        scripts: &[Script],
        values: &super::script::Values,
    ) -> Result<(), StepError> {
        for script in scripts {
            if let Err(error) = run_script(client, script, values).await {
                return Err(StepError {
                    message: format!("{}: {step} {}", self.target.name(), error.message),
                    ..error
                });
            }
        }
        Ok(())
    }

    /// Streams the chunk's rows into `into` with one COPY.
    async fn copy(&self, client: &Client, into: &str, load: &Load<'_>) -> Result<(), StepError> {
        if load.batch.data.is_empty() {
            return Ok(());
        }
        copy(client, into, &load.batch.columns, load.batch.data.clone())
            .await
            .map_err(|error| self.copy_error(load, &error))
    }

    /// A failed COPY as a step error. When PostgreSQL names the COPY line (and column) of a
    /// value that does not fit, the message names the row within the chunk, the column and
    /// the value (read from the batch, unescaped and cut short), and says that nothing of the
    /// chunk stays (its savepoint is rolled back).
    fn copy_error(&self, load: &Load<'_>, error: &tokio_postgres::Error) -> StepError {
        let context = load.describe();
        let Some(db) = error.as_db_error() else {
            return self.error(&context, error);
        };
        let Some((row, column)) = db.where_().and_then(copy_place) else {
            return self.error(&context, error);
        };
        let place = match column {
            None => format!("row {row}"),
            Some(column) => load.place(row, &column),
        };
        let code = db.code().code();
        let mut message = format!(
            "{}: {context}: {place}: {}",
            self.target.name(),
            db.message()
        );
        if let Some(detail) = db.detail() {
            message.push_str(&format!("; {detail}"));
        }
        message.push_str(&format!(
            " [SQLSTATE {code}]; nothing of the chunk was loaded"
        ));
        match super::pusher::retryable_state(code) {
            true => StepError::retryable(message),
            false => StepError::permanent(message),
        }
    }

    /// `merge`: the chunk into a temporary table, then upserted by the keys.
    async fn merge(
        &self,
        client: &Client,
        table: Option<&Table>,
        load: &Load<'_>,
    ) -> Result<(), StepError> {
        if load.batch.data.is_empty() {
            return Ok(());
        }
        let columns = schema::staging_columns(table, &load.batch.columns);
        // In `pg_temp`, so a temporary table, dropped with the transaction.
        let create = format!(
            "{} ON COMMIT DROP",
            schema::create_table("pg_temp.ferry_merge", &columns, &[])
        );
        client
            .batch_execute(&create)
            .await
            .map_err(|error| self.error(&load.describe(), &error))?;
        self.copy(client, "pg_temp.ferry_merge", load).await?;
        let names = quote_list(load.names());
        let keys = quote_list(self.keys.iter().map(String::as_str));
        let updates: Vec<String> = load
            .names()
            .filter(|name| !self.keys.iter().any(|k| k == name))
            .map(|name| format!("{0} = EXCLUDED.{0}", quote_ident(name)))
            .collect();
        let action = match updates.is_empty() {
            true => "NOTHING".to_string(),
            false => format!("UPDATE SET {}", updates.join(", ")),
        };
        let upsert = format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM pg_temp.ferry_merge \
             ON CONFLICT ({keys}) DO {action}",
            self.target.quoted()
        );
        // Dropped at once: the next chunk of the transaction creates it again.
        let upsert = format!("{upsert}; DROP TABLE pg_temp.ferry_merge");
        let Err(error) = client.batch_execute(&upsert).await else {
            return Ok(());
        };
        let target = self.target.name();
        Err(match error.code() {
            Some(code) if *code == SqlState::INVALID_COLUMN_REFERENCE => {
                StepError::permanent(format!(
                    "{target}: merge needs a primary key or unique index on exactly ({keys}), and \
                 the table has none; add one with a migration in {} (e.g. `ALTER TABLE \
                 {{target}} ADD PRIMARY KEY ({{key_columns}});`)",
                    self.migrations_dir
                ))
            }
            Some(code) if *code == SqlState::CARDINALITY_VIOLATION => {
                StepError::permanent(format!(
                    "{target}: {}: a key ({keys}) appears more than once in the chunk, and merge \
                 cannot update one row twice; remove the duplicates in the puller or check \
                 `keys`",
                    load.describe()
                ))
            }
            _ => self.error(&load.describe(), &error),
        })
    }

    /// `replace` and `history`: checks the batch against the target before staging it.
    fn check_staged(&self, table: Option<&Table>, load: &Load<'_>) -> Result<(), StepError> {
        let Some(table) = table else {
            return Ok(());
        };
        if self.mode == Mode::Replace {
            schema::check(
                table,
                &load.batch.columns,
                Missing::Refused,
                &[],
                &self.advice(),
            )?;
            return Ok(());
        }
        let target = self.target.name();
        for (name, type_name) in HISTORY_COLUMNS {
            let found = table.column(name).map(|c| c.type_name.as_str());
            if found != Some(type_name) {
                let wanted: Vec<String> = HISTORY_COLUMNS
                    .iter()
                    .map(|(name, type_name)| format!("`{name} {type_name}`"))
                    .collect();
                return Err(StepError::permanent(format!(
                    "{target}: the table has no column `{name} {type_name}`; a history table \
                     keeps {} next to the data columns: add them with a migration in {}",
                    wanted.join(", "),
                    self.migrations_dir
                )));
            }
        }
        let ignore: Vec<&str> = HISTORY_COLUMNS.iter().map(|(name, _)| *name).collect();
        schema::check(
            table,
            &load.batch.columns,
            Missing::Nullable,
            &ignore,
            &self.advice(),
        )?;
        Ok(())
    }

    /// `replace`, `history` and the `append` of a series: COPYs the chunk into the load's
    /// shadow table, creating it with the `first` chunk.
    async fn stage(
        &self,
        session: &Session,
        load: &Load<'_>,
        first: bool,
    ) -> Result<(), StepError> {
        let client = &session.client;
        let shadow_name = self.target.shadow(&load.load);
        let shadow = self.target.sibling(&shadow_name);
        let context = format!(
            "{}: cannot prepare the shadow table {shadow_name}",
            load.describe()
        );
        let existing = self.describe(session, &shadow).await?;
        let missing: Vec<Column> = match &existing {
            Some(table) => load
                .batch
                .columns
                .iter()
                .filter(|c| table.column(&c.name).is_none())
                .cloned()
                .collect(),
            // A later chunk finds no shadow when a newer load abandoned this one meanwhile:
            // it must not stage the load again; the next attempt sees it superseded.
            None if !first => {
                return Err(StepError::retryable(format!(
                    "{}: {}: the shadow table {shadow_name} is gone (a newer load \
                     superseded this one?)",
                    self.target.name(),
                    load.describe()
                )));
            }
            None => {
                let target = self.describe(session, &self.target.quoted()).await?;
                if target.is_none() {
                    self.ensure_schema(client).await?;
                }
                self.create_shadow(client, &shadow, target.as_ref(), load)
                    .await
                    .map_err(|error| self.error(&context, &error))?;
                Vec::new()
            }
        };
        if let Some(alter) = schema::add_columns(&shadow, &missing) {
            client
                .batch_execute(&alter)
                .await
                .map_err(|error| self.error(&context, &error))?;
        }
        self.copy(client, &shadow, load).await
    }

    /// Creates a load's shadow table. For `replace` it is `LIKE` the target (with its grants)
    /// plus the new batch columns, or the batch's shape when there is no target; for `history`
    /// it holds the batch's columns with the types they have in the target.
    async fn create_shadow(
        &self,
        client: &Client,
        shadow: &str,
        target: Option<&Table>,
        load: &Load<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let columns = &load.batch.columns;
        let target = match (self.mode, target) {
            (Mode::Replace, Some(target)) => target,
            (Mode::Replace, None) => {
                let columns = schema::staging_columns(None, columns);
                let create = schema::create_table(shadow, &columns, &self.keys);
                return client.batch_execute(&create).await;
            }
            // `append`'s staging is UNLOGGED: its rows are written to the WAL once, when they
            // move into the table, so staging costs little more than COPY into the table
            // (BENCHMARKS.md). A PostgreSQL crash empties unlogged tables: `unstage` counts
            // the rows before it moves them.
            (Mode::Append, target) => {
                let columns = schema::staging_columns(target, columns);
                let create = schema::create_table(shadow, &columns, &[]);
                let create = create.replacen("CREATE TABLE", "CREATE UNLOGGED TABLE", 1);
                return client.batch_execute(&create).await;
            }
            (_, target) => {
                let columns = schema::staging_columns(target, columns);
                return client
                    .batch_execute(&schema::create_table(shadow, &columns, &[]))
                    .await;
            }
        };
        let quoted = self.target.quoted();
        let mut sql = format!("CREATE TABLE {shadow} (LIKE {quoted} INCLUDING ALL);");
        let new: Vec<Column> = columns
            .iter()
            .filter(|c| target.column(&c.name).is_none())
            .cloned()
            .collect();
        if let Some(alter) = schema::add_columns(shadow, &new) {
            sql.push_str(&alter);
            sql.push(';');
        }
        // The grants of the table go with its content: readers keep their access after a swap.
        let grants = client
            .query(
                "SELECT a.privilege_type, \
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                             ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                        a.is_grantable \
                 FROM pg_class c, aclexplode(c.relacl) a \
                 WHERE c.oid = to_regclass($1)",
                &[&quoted],
            )
            .await?;
        for grant in grants {
            let privilege: String = grant.get(0);
            let grantee: String = grant.get(1);
            let option = match grant.get::<_, bool>(2) {
                true => " WITH GRANT OPTION",
                false => "",
            };
            sql.push_str(&format!(
                "GRANT {privilege} ON {shadow} TO {grantee}{option};"
            ));
        }
        client.batch_execute(&sql).await
    }

    /// `replace`, when the load is complete: the shadow takes the target's place, unless its
    /// content is the same.
    async fn swap(&self, session: &Session, load: &Load<'_>) -> Result<(), StepError> {
        let client = &session.client;
        let target_name = self.target.name();
        let quoted = self.target.quoted();
        let shadow_name = self.target.shadow(&load.load);
        let shadow = self.target.sibling(&shadow_name);
        let context = format!("{}: cannot swap in the new content", load.describe());
        let staged = self.describe(session, &shadow).await?.ok_or_else(|| {
            StepError::permanent(format!(
                "{target_name}: {}: the shadow table {shadow_name} is gone",
                load.describe()
            ))
        })?;
        let current = self.describe(session, &quoted).await?;
        if let Some(current) = current {
            let same_columns = current.columns.len() == staged.columns.len()
                && current
                    .columns
                    .iter()
                    .zip(&staged.columns)
                    .all(|(a, b)| a.name == b.name && a.type_name == b.type_name);
            if same_columns
                && same_content(client, &quoted, &shadow, &load.batch.columns)
                    .await
                    .map_err(|error| self.error(&context, &error))?
            {
                client
                    .batch_execute(&format!("DROP TABLE {shadow}"))
                    .await
                    .map_err(|error| self.error(&context, &error))?;
                info!(
                    pipeline = %self.pipeline,
                    component = %self.component,
                    target = %target_name,
                    load = %load.load,
                    "unchanged: the table keeps its content"
                );
                return Ok(());
            }
            // No CASCADE: dependent views must not vanish with the old table.
            if let Err(error) = client.batch_execute(&format!("DROP TABLE {quoted}")).await {
                if error.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) {
                    let detail = error
                        .as_db_error()
                        .and_then(|db| db.detail())
                        .unwrap_or("other objects depend on it")
                        .replace('\n', "; ");
                    return Err(StepError::held(format!(
                        "{target_name}: cannot replace the table: {detail}; ferry does not drop \
                         dependent objects: drop them in a `before` file and create them again \
                         in an `after` file, or load with mode merge"
                    )));
                }
                return Err(self.error(&context, &error));
            }
        }
        let rename = format!(
            "ALTER TABLE {shadow} RENAME TO {}",
            quote_ident(&self.target.table)
        );
        client
            .batch_execute(&rename)
            .await
            .map_err(|error| self.error(&context, &error))?;
        info!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %target_name,
            load = %load.load,
            "replaced the table's content"
        );
        Ok(())
    }

    /// `history`, when the load is complete: applies the staged state as SCD type 2.
    async fn apply_history(&self, session: &Session, load: &Load<'_>) -> Result<(), StepError> {
        let client = &session.client;
        let target_name = self.target.name();
        let quoted = self.target.quoted();
        let shadow_name = self.target.shadow(&load.load);
        let shadow = self.target.sibling(&shadow_name);
        let context = format!("{}: cannot apply the history", load.describe());
        let fail = |error: tokio_postgres::Error| self.error(&context, &error);
        let staged = self.describe(session, &shadow).await?.ok_or_else(|| {
            StepError::permanent(format!(
                "{target_name}: {}: the shadow table {shadow_name} is gone",
                load.describe()
            ))
        })?;
        let current = self.describe(session, &quoted).await?;

        // The table: created, or extended by the staged columns it lacks.
        match &current {
            None => {
                self.ensure_schema(client).await?;
                let mut columns: Vec<(String, String)> = staged
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.type_name.clone()))
                    .collect();
                for (name, type_name) in HISTORY_COLUMNS {
                    columns.push((name.to_string(), type_name.to_string()));
                }
                let mut key = self.keys.clone();
                key.push("valid_from".into());
                let create = format!(
                    "{}; CREATE UNIQUE INDEX ON {quoted} (key_hash) WHERE is_current",
                    schema::create_table(&quoted, &columns, &key)
                );
                client.batch_execute(&create).await.map_err(fail)?;
                info!(
                    pipeline = %self.pipeline,
                    component = %self.component,
                    target = %target_name,
                    "created history table"
                );
            }
            Some(table) => {
                let adds: Vec<String> = staged
                    .columns
                    .iter()
                    .filter(|c| table.column(&c.name).is_none())
                    .map(|c| format!("ADD COLUMN {} {}", quote_ident(&c.name), c.type_name))
                    .collect();
                if !adds.is_empty() {
                    let alter = format!("ALTER TABLE {quoted} {}", adds.join(", "));
                    client.batch_execute(&alter).await.map_err(fail)?;
                }
            }
        }

        // Data columns in the table's order, so that a puller reordering its columns does not
        // change every hash.
        let table = self.describe(session, &quoted).await?.unwrap_or_default();
        let data: Vec<&str> = table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .filter(|name| {
                staged.column(name).is_some()
                    && !self.keys.iter().any(|k| k == name)
                    && !HISTORY_COLUMNS.iter().any(|(h, _)| h == name)
            })
            .collect();
        // md5 of the row constructor's text: unambiguous (quoting, NULL apart from '').
        let key_hash = format!("md5(ROW({})::text)", quote_list_prefixed("s", &self.keys));
        let data_hash = format!("md5(ROW({})::text)", quote_list_prefixed("s", &data));

        let duplicate = client
            .query_opt(
                &format!(
                    "SELECT k FROM (SELECT ROW({})::text AS k FROM {shadow} s) x \
                     GROUP BY k HAVING count(*) > 1 LIMIT 1",
                    quote_list_prefixed("s", &self.keys)
                ),
                &[],
            )
            .await
            .map_err(fail)?;
        if let Some(duplicate) = duplicate {
            let key: String = duplicate.get(0);
            return Err(StepError::permanent(format!(
                "{target_name}: load {} has the key {key} more than once; history needs one row \
                 per key",
                load.load
            )));
        }

        let deleted = format!(
            "UPDATE {quoted} t SET valid_to = now(), is_current = false \
             WHERE t.is_current AND NOT EXISTS \
               (SELECT 1 FROM {shadow} s WHERE {key_hash} = t.key_hash)"
        );
        let changed = format!(
            "UPDATE {quoted} t SET valid_to = now(), is_current = false FROM {shadow} s \
             WHERE t.is_current AND t.key_hash = {key_hash} \
               AND t.data_hash IS DISTINCT FROM {data_hash}"
        );
        let names: Vec<&str> = self
            .keys
            .iter()
            .map(String::as_str)
            .chain(data.iter().copied())
            .collect();
        let list = quote_list(names.iter().copied());
        let inserted = format!(
            "INSERT INTO {quoted} ({list}, valid_from, valid_to, is_current, key_hash, data_hash) \
             SELECT {list}, now(), NULL, true, ferry_key_hash, ferry_data_hash \
             FROM (SELECT {}, {key_hash} AS ferry_key_hash, {data_hash} AS ferry_data_hash \
                   FROM {shadow} s) x \
             WHERE NOT EXISTS (SELECT 1 FROM {quoted} t \
                               WHERE t.is_current AND t.key_hash = x.ferry_key_hash)",
            quote_list_prefixed("s", &names)
        );
        let deleted = client.execute(&deleted, &[]).await.map_err(fail)?;
        let changed = client.execute(&changed, &[]).await.map_err(fail)?;
        let inserted = client.execute(&inserted, &[]).await.map_err(fail)?;
        client
            .batch_execute(&format!("DROP TABLE {shadow}"))
            .await
            .map_err(fail)?;
        info!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %target_name,
            load = %load.load,
            deleted,
            changed,
            inserted,
            "applied history"
        );
        Ok(())
    }

    /// Drops the shadows of older loads of the table that never completed: the newer content
    /// is in, and their late chunks are superseded.
    async fn drop_older_shadows(&self, client: &Client, load: &Load<'_>) -> Result<(), StepError> {
        let target = self.target.name();
        let rows = client
            .query(
                "SELECT DISTINCT load FROM ferry.loads \
                 WHERE target = $1 AND load <> $2 AND completed_at IS NULL \
                   AND abandoned_at IS NULL \
                   AND passenger < (SELECT passenger FROM ferry.loads \
                                    WHERE target = $1 AND load = $2 \
                                    ORDER BY passenger LIMIT 1)",
                &[&target, &load.load],
            )
            .await
            .map_err(|error| self.error("cannot look for older incomplete loads", &error))?;
        let older: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        self.abandon(client, &older).await
    }

    /// The first chunk of a load of `series`: every older load of the series that is not
    /// complete is abandoned, so that it is discarded whole (issue 12).
    async fn abandon_older(
        &self,
        client: &Client,
        series: &str,
        load: &str,
    ) -> Result<(), StepError> {
        let target = self.target.name();
        let rows = client
            .query(
                "SELECT DISTINCT load FROM ferry.loads \
                 WHERE target = $1 AND series = $2 AND pipeline = $3 AND load < $4 \
                   AND completed_at IS NULL AND abandoned_at IS NULL",
                &[&target, &series, &self.pipeline, &load],
            )
            .await
            .map_err(|error| self.error("cannot look for older incomplete loads", &error))?;
        let older: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        self.abandon(client, &older).await
    }

    /// Abandons incomplete `loads`: drops their shadow tables (if they have any) and marks
    /// them in `ferry.loads`, so that none of them is ever applied.
    async fn abandon(&self, client: &Client, loads: &[String]) -> Result<(), StepError> {
        if loads.is_empty() {
            return Ok(());
        }
        let target = self.target.name();
        let context = "cannot abandon older incomplete loads";
        let mut sql = String::new();
        for old in loads {
            let shadow = self.target.sibling(&self.target.shadow(old));
            sql.push_str(&format!("DROP TABLE IF EXISTS {shadow};"));
        }
        client
            .batch_execute(&sql)
            .await
            .map_err(|error| self.error(context, &error))?;
        client
            .execute(
                "UPDATE ferry.loads SET abandoned_at = now() \
                 WHERE target = $1 AND load = ANY($2) AND abandoned_at IS NULL",
                &[&target, &loads],
            )
            .await
            .map_err(|error| self.error(context, &error))?;
        info!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %target,
            abandoned = loads.len(),
            "abandoned incomplete loads and dropped their shadows"
        );
        Ok(())
    }

    /// `append` of a series, when the load is complete: its rows move from the shadow table
    /// into the target in the completing transaction, so they become visible together.
    async fn unstage(&self, session: &Session, load: &Load<'_>) -> Result<(), StepError> {
        let client = &session.client;
        let shadow_name = self.target.shadow(&load.load);
        let shadow = self.target.sibling(&shadow_name);
        let staged = self.describe(session, &shadow).await?.ok_or_else(|| {
            StepError::permanent(format!(
                "{}: {}: the shadow table {shadow_name} is gone",
                self.target.name(),
                load.describe()
            ))
        })?;
        // The shadow is unlogged: after a crash of PostgreSQL it is empty (or holds only the
        // chunks staged since). Such a load cannot complete: the rows moved are counted against
        // the rows its chunks recorded, and a shortfall fails the completing transaction (so
        // nothing moves) and its chunks (retryably) until the next run's load supersedes it.
        // Counting what the move reports saves a scan of the shadow table.
        let recorded: Option<i64> = client
            .query_one(
                "SELECT sum(rows)::bigint FROM ferry.loads WHERE target = $1 AND load = $2",
                &[&self.target.name(), &load.load],
            )
            .await
            .map_err(|error| self.error(&load.describe(), &error))?
            .get(0);
        let list = quote_list(staged.columns.iter().map(|c| c.name.as_str()));
        let moved = client
            .execute(
                &format!(
                    "INSERT INTO {} ({list}) SELECT {list} FROM {shadow}",
                    self.target.quoted()
                ),
                &[],
            )
            .await
            .map_err(|error| {
                self.error(
                    &format!("{}: cannot move the load into the table", load.describe()),
                    &error,
                )
            })?;
        let recorded = recorded.unwrap_or(0);
        if i64::try_from(moved).ok() != Some(recorded) {
            return Err(StepError::retryable(format!(
                "{}: load {}: the staging table {shadow_name} holds {moved} of the {recorded} \
                 rows its chunks loaded (PostgreSQL restarted after a crash, which empties \
                 unlogged tables); the load cannot complete and is superseded by the next run's",
                self.target.name(),
                load.load,
            )));
        }
        client
            .batch_execute(&format!("DROP TABLE {shadow}"))
            .await
            .map_err(|error| self.error(&load.describe(), &error))
    }
}

/// The session, unless its connection broke.
fn usable(session: Session) -> Option<Session> {
    match session.client.is_closed() {
        true => None,
        false => Some(session),
    }
}

/// `s."a", s."b"`.
fn quote_list_prefixed(alias: &str, names: &[impl AsRef<str>]) -> String {
    let fields: Vec<String> = names
        .iter()
        .map(|name| format!("{alias}.{}", quote_ident(name.as_ref())))
        .collect();
    fields.join(", ")
}

/// The line (from 1) and, when given, the column of a COPY error's context:
/// `COPY t, line 3, column amount: "12345"` or `COPY t, line 3: "…"`.
fn copy_place(context: &str) -> Option<(usize, Option<String>)> {
    let copy = context.lines().find(|line| line.starts_with("COPY "))?;
    let after = &copy[copy.find(", line ")? + 7..];
    let end = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    let line = after[..end].parse().ok()?;
    let column = after[end..].strip_prefix(", column ").map(|rest| {
        let name_end = rest.find(": \"").unwrap_or(rest.len());
        rest[..name_end].to_string()
    });
    Some((line, column))
}

/// Streams COPY text `data` into `into` (quoted) with one `COPY … FROM STDIN`.
async fn copy(
    client: &Client,
    into: &str,
    columns: &[Column],
    data: Bytes,
) -> Result<(), tokio_postgres::Error> {
    let names = quote_list(columns.iter().map(|c| c.name.as_str()));
    let statement = format!("COPY {into} ({names}) FROM STDIN");
    let sink = client.copy_in::<_, Bytes>(statement.as_str()).await?;
    futures::pin_mut!(sink);
    // In slices (views of the body, not copies), so that the server starts parsing while the
    // rest is still on its way, rather than waiting for one message the size of the chunk.
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + COPY_SLICE).min(data.len());
        sink.feed(data.slice(offset..end)).await?;
        offset = end;
    }
    sink.as_mut().finish().await?;
    Ok(())
}

/// Whether two tables hold the same rows (as multisets) in `columns`: equal counts, then
/// equal sums of the first 64 bits of the md5 of each row's values (see the module
/// documentation). Columns outside the batch (defaults, say) are left out, so that a
/// `loaded_at DEFAULT now()` does not make every load a change.
async fn same_content(
    client: &Client,
    a: &str,
    b: &str,
    columns: &[Column],
) -> Result<bool, tokio_postgres::Error> {
    let counts = client
        .query_one(
            &format!("SELECT (SELECT count(*) FROM {a}), (SELECT count(*) FROM {b})"),
            &[],
        )
        .await?;
    let (count_a, count_b): (i64, i64) = (counts.get(0), counts.get(1));
    if count_a != count_b {
        return Ok(false);
    }
    if count_a == 0 {
        return Ok(true);
    }
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let row = format!("ROW({})::text", quote_list_prefixed("r", &names));
    let hash = |table: &str| {
        format!("(SELECT sum(('x' || left(md5({row}), 16))::bit(64)::bigint)::text FROM {table} r)")
    };
    let sums = client
        .query_one(&format!("SELECT {}, {}", hash(a), hash(b)), &[])
        .await?;
    Ok(sums.get::<_, Option<String>>(0) == sums.get::<_, Option<String>>(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_contexts_give_line_and_column() {
        assert_eq!(
            copy_place("COPY t, line 3, column amount: \"123456789012.5\""),
            Some((3, Some("amount".into())))
        );
        assert_eq!(
            copy_place("COPY ferry_merge, line 12, column code"),
            Some((12, Some("code".into())))
        );
        assert_eq!(copy_place("COPY t, line 2: \"1\tx\""), Some((2, None)));
        assert_eq!(copy_place("SQL statement \"SELECT 1\""), None);
    }
}
