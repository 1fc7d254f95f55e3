//! A group of chunks in one transaction, each chunk in a savepoint: the bookkeeping, the table's
//! shape (DDL is transactional in SQLite, so it rolls back with the chunk) and the rows, one
//! prepared `INSERT` (with `ON CONFLICT … DO UPDATE` for `merge`) per row.

use ferry_core::records::{self, Column};
use ferry_core::{Passenger, StepError};
use rusqlite::Connection;
use rusqlite::types::Value;
use tracing::{info, warn};

use super::Mode;
use super::pusher::{LOADS_TABLE, Loader};
use super::schema::{self, DescribeError, Limit, Table, quote_ident, quote_list};
use crate::table_load::ChunkLoad;

impl Loader {
    /// Loads a group in one transaction (`BEGIN IMMEDIATE`: the write lock is taken at once,
    /// so two writers wait for each other instead of failing halfway), each chunk in a
    /// savepoint of its own.
    pub(super) fn push_group(
        &self,
        conn: &mut Connection,
        group: &[Passenger],
    ) -> Vec<Result<(), StepError>> {
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            return vec![
                Err(self.error("cannot start the load's transaction", &error));
                group.len()
            ];
        }
        let mut results = Vec::with_capacity(group.len());
        for passenger in group {
            let result = ChunkLoad::read(passenger, &self.table, &self.keys)
                .map_err(Broken::Chunk)
                .and_then(|load| self.load_in_savepoint(conn, &load));
            match result {
                Ok(()) => results.push(Ok(())),
                Err(Broken::Chunk(error)) => results.push(Err(error)),
                Err(Broken::Transaction(error)) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return vec![Err(error); group.len()];
                }
            }
        }
        if let Err(error) = conn.execute_batch("COMMIT") {
            let error = self.error("cannot commit", &error);
            let _ = conn.execute_batch("ROLLBACK");
            return vec![Err(error); group.len()];
        }
        results
    }

    /// Loads one chunk in a savepoint, rolled back when it fails.
    fn load_in_savepoint(&self, conn: &Connection, load: &ChunkLoad<'_>) -> Result<(), Broken> {
        conn.execute_batch("SAVEPOINT ferry_chunk")
            .map_err(|error| Broken::Transaction(self.error("cannot start a savepoint", &error)))?;
        let result = self.load_chunk(conn, load);
        let end = match result {
            Ok(()) => "RELEASE ferry_chunk",
            Err(_) => "ROLLBACK TO ferry_chunk; RELEASE ferry_chunk",
        };
        if let Err(error) = conn.execute_batch(end) {
            return Err(Broken::Transaction(self.error("savepoint", &error)));
        }
        result.map_err(Broken::Chunk)
    }

    /// Everything a chunk does inside its savepoint.
    fn load_chunk(&self, conn: &Connection, load: &ChunkLoad<'_>) -> Result<(), StepError> {
        let (recorded, owner, superseded) = self.state(conn, load)?;
        if recorded {
            return Ok(());
        }
        if let Some(owner) = owner {
            self.skipped(load, &format!("it was already loaded by passenger {owner}"));
            return Ok(());
        }
        if superseded {
            self.record(conn, load)?;
            self.skipped(load, "a newer load of its series was loaded already");
            return Ok(());
        }
        let table = self.prepare_table(conn, load)?;
        self.insert(conn, load, &table)?;
        self.record(conn, load)
    }

    /// Whether the passenger was loaded, which passenger loaded this chunk, and whether a newer
    /// load of its series was.
    fn state(
        &self,
        conn: &Connection,
        load: &ChunkLoad<'_>,
    ) -> Result<(bool, Option<String>, bool), StepError> {
        conn.prepare_cached(
            "SELECT \
               EXISTS (SELECT 1 FROM ferry_loads WHERE target = ?1 AND passenger = ?2), \
               (SELECT passenger FROM ferry_loads WHERE target = ?1 AND load = ?3 AND chunk = ?4), \
               ?5 IS NOT NULL AND EXISTS (SELECT 1 FROM ferry_loads \
                 WHERE target = ?1 AND series = ?5 AND pipeline = ?6 AND load > ?3)",
        )
        .and_then(|mut statement| {
            statement.query_row(
                rusqlite::params![
                    self.table,
                    load.passenger.id.to_string(),
                    load.load,
                    load.number,
                    load.series,
                    self.pipeline
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
        })
        .map_err(|error| self.error(&format!("cannot read {LOADS_TABLE}"), &error))
    }

    /// Records the chunk in the bookkeeping table, in its savepoint.
    fn record(&self, conn: &Connection, load: &ChunkLoad<'_>) -> Result<(), StepError> {
        let rows = i64::try_from(load.batch.rows).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "INSERT INTO ferry_loads (pipeline, target, load, chunk, last, passenger, rows, series) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut statement| {
            statement.execute(rusqlite::params![
                self.pipeline,
                self.table,
                load.load,
                load.number,
                load.last,
                load.passenger.id.to_string(),
                rows,
                load.series
            ])
        })
        .map(|_| ())
        .map_err(|error| {
            self.error(
                &format!("{}: cannot record the chunk in {LOADS_TABLE}", load.describe()),
                &error,
            )
        })
    }

    /// Creates the table or adds the batch's new columns; checks the columns the batch lacks
    /// and, for `merge`, the unique index on the keys. Returns the table as it is now.
    fn prepare_table(&self, conn: &Connection, load: &ChunkLoad<'_>) -> Result<Table, StepError> {
        let quoted = quote_ident(&self.table);
        let fail = |error: rusqlite::Error| self.error("cannot prepare the table", &error);
        let columns = &load.batch.columns;
        let table = match self.describe(conn)? {
            Some(table) => {
                let add: Vec<&Column> = columns
                    .iter()
                    .filter(|c| table.column(&c.name).is_none())
                    .collect();
                for column in &add {
                    let alter = format!(
                        "ALTER TABLE {quoted} ADD COLUMN {} {}",
                        quote_ident(&column.name),
                        schema::column_type(column)
                    );
                    conn.execute_batch(&alter).map_err(fail)?;
                }
                if !add.is_empty() {
                    let names: Vec<&str> = add.iter().map(|c| c.name.as_str()).collect();
                    info!(
                        pipeline = %self.pipeline,
                        component = %self.component,
                        target = %self.table,
                        columns = %names.join(", "),
                        "added columns"
                    );
                }
                self.describe(conn)?.unwrap_or(table)
            }
            None if !self.create => {
                return Err(StepError::held(format!(
                    "table {} does not exist and the pusher has `create: false`; create it",
                    self.table
                )));
            }
            None => {
                let mut parts: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let not_null = match self.keys.contains(&c.name) {
                            true => " NOT NULL",
                            false => "",
                        };
                        format!(
                            "{} {}{not_null}",
                            quote_ident(&c.name),
                            schema::column_type(c)
                        )
                    })
                    .collect();
                if !self.keys.is_empty() {
                    parts.push(format!(
                        "PRIMARY KEY ({})",
                        quote_list(self.keys.iter().map(String::as_str))
                    ));
                }
                let create = format!("CREATE TABLE {quoted} ({})", parts.join(", "));
                conn.execute_batch(&create).map_err(fail)?;
                info!(
                    pipeline = %self.pipeline,
                    component = %self.component,
                    target = %self.table,
                    "created table"
                );
                self.describe(conn)?.unwrap_or_default()
            }
        };
        if let Some(missing) = table
            .columns
            .iter()
            .find(|c| c.not_null && !c.fills_itself && !columns.iter().any(|b| b.name == c.name))
        {
            return Err(StepError::held(format!(
                "table {}: column `{}` (NOT NULL without a default) is not in the batch, so no \
                 row could be loaded; add it to the puller's columns, or give it a default",
                self.table, missing.name
            )));
        }
        if self.mode == Mode::Merge
            && !table.unique.iter().any(|index| {
                index.len() == self.keys.len() && self.keys.iter().all(|k| index.contains(k))
            })
        {
            return Err(StepError::permanent(format!(
                "{}: merge needs a primary key or unique index on exactly ({}), and the table \
                 has none; add one (e.g. `CREATE UNIQUE INDEX … ON {quoted} (…)`)",
                self.table,
                quote_list(self.keys.iter().map(String::as_str))
            )));
        }
        Ok(table)
    }

    fn describe(&self, conn: &Connection) -> Result<Option<Table>, StepError> {
        schema::describe(conn, &self.table).map_err(|error| match error {
            DescribeError::Database(error) => self.error("cannot read the table's columns", &error),
            DescribeError::NotATable(message) => StepError::permanent(message),
        })
    }

    /// Inserts (or upserts) the chunk's rows with one prepared statement. A value that is not
    /// of its column's type, or does not keep within a declared `VARCHAR(n)`/`DECIMAL(p,s)`,
    /// fails the chunk naming the row, the column and the value.
    fn insert(
        &self,
        conn: &Connection,
        load: &ChunkLoad<'_>,
        table: &Table,
    ) -> Result<(), StepError> {
        let columns = &load.batch.columns;
        let names = quote_list(load.names());
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let mut sql = format!(
            "INSERT INTO {} ({names}) VALUES ({})",
            quote_ident(&self.table),
            marks.join(", ")
        );
        if self.mode == Mode::Merge {
            let updates: Vec<String> = load
                .names()
                .filter(|name| !self.keys.iter().any(|k| k == name))
                .map(|name| format!("{0} = excluded.{0}", quote_ident(name)))
                .collect();
            let action = match updates.is_empty() {
                true => "NOTHING".to_string(),
                false => format!("UPDATE SET {}", updates.join(", ")),
            };
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO {action}",
                quote_list(self.keys.iter().map(String::as_str))
            ));
        }
        let fail = |error: rusqlite::Error| self.error(&load.describe(), &error);
        let mut statement = conn.prepare_cached(&sql).map_err(fail)?;
        let limits: Vec<Option<Limit>> = columns
            .iter()
            .map(|c| table.column(&c.name).and_then(|t| Limit::of(&t.declared)))
            .collect();
        let mut values: Vec<Value> = Vec::with_capacity(columns.len());
        for (index, row) in records::rows(&load.batch.data).into_iter().enumerate() {
            let number = index + 1;
            values.clear();
            for ((column, field), limit) in columns.iter().zip(row).zip(&limits) {
                if let (Some(limit), Some(text)) = (limit, &field)
                    && let Err(why) = limit.check(text)
                {
                    return Err(self.bad_value(load, number, &column.name, &why));
                }
                let value = schema::value(column.kind, field)
                    .map_err(|why| self.bad_value(load, number, &column.name, &why))?;
                values.push(value);
            }
            if values.len() != columns.len() {
                return Err(StepError::permanent(format!(
                    "{}: {}: row {number} has {} fields for {} columns",
                    self.table,
                    load.describe(),
                    values.len(),
                    columns.len()
                )));
            }
            if let Err(error) = statement.execute(rusqlite::params_from_iter(values.iter())) {
                let mut failed = self.error(&load.describe(), &error);
                if !failed.retryable {
                    let place = match error_column(&error.to_string()) {
                        Some(column) => load.place(number, &column),
                        None => format!("row {number}"),
                    };
                    failed.message = format!(
                        "{}: {}: {place}: {error}; nothing of the chunk was loaded",
                        self.table,
                        load.describe()
                    );
                }
                return Err(failed);
            }
        }
        Ok(())
    }

    /// A value that does not fit: permanent, naming where it is.
    fn bad_value(&self, load: &ChunkLoad<'_>, row: usize, column: &str, why: &str) -> StepError {
        StepError::permanent(format!(
            "{}: {}: {}: {why}; nothing of the chunk was loaded",
            self.table,
            load.describe(),
            load.place(row, column)
        ))
    }

    /// Logs a chunk that was not loaded again, and why.
    fn skipped(&self, load: &ChunkLoad<'_>, why: &str) {
        warn!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %self.table,
            passenger = %load.passenger.id,
            chunk = %load.describe(),
            why,
            "chunk skipped"
        );
    }
}

/// How a chunk failed.
enum Broken {
    /// The chunk alone: its savepoint was rolled back, the transaction goes on.
    Chunk(StepError),
    /// The transaction cannot go on: the group fails.
    Transaction(StepError),
}

impl From<StepError> for Broken {
    fn from(error: StepError) -> Self {
        Broken::Chunk(error)
    }
}

/// The column an SQLite error names: `NOT NULL constraint failed: t.amount`, `cannot store
/// TEXT value in INTEGER column t.amount`.
fn error_column(message: &str) -> Option<String> {
    let tail = match message.find("constraint failed: ") {
        Some(at) => &message[at + 19..],
        None => &message[message.find("column ")? + 7..],
    };
    let first = tail.split([',', ' ']).next()?;
    first.rsplit('.').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_column() {
        assert_eq!(
            error_column("NOT NULL constraint failed: t.amount").as_deref(),
            Some("amount")
        );
        assert_eq!(
            error_column("cannot store TEXT value in INTEGER column t.id").as_deref(),
            Some("id")
        );
        assert_eq!(error_column("disk I/O error"), None);
    }
}
