//! A group of chunks in one transaction, each chunk in a savepoint: the table's shape (before
//! the transaction: MySQL commits DDL on its own), the bookkeeping, `LOAD DATA LOCAL INFILE`
//! and the upsert of `merge`. The steps are described in the module documentation (`mod.rs`).

use bytes::Bytes;
use ferry_core::records::ColumnType;
use ferry_core::{Passenger, StepError};
use futures::StreamExt;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use super::Mode;
use super::pusher::{LOADS_TABLE, MysqlPusher};
use super::schema::{self, Table, TableColumn, quote_ident, quote_list};
use crate::table_load::ChunkLoad;

/// Bytes per piece of a chunk sent to `LOAD DATA LOCAL` (the driver splits them into packets).
const INFILE_PIECE: usize = 1024 * 1024;

/// The temporary table a `merge` chunk is loaded into before the upsert.
const MERGE_TABLE: &str = "ferry_merge";

/// How one chunk of a group went.
enum Loaded {
    /// Its result; the transaction goes on.
    Done(Result<(), StepError>),
    /// The connection or the transaction broke: the whole group fails with this error.
    Broken(StepError),
}

/// What the bookkeeping knows about a chunk.
struct State {
    /// This passenger was already loaded.
    recorded: bool,
    /// Another passenger already loaded this chunk of this load.
    owner: Option<String>,
    /// A newer load of the chunk's series was recorded: this one is discarded.
    superseded: bool,
}

impl MysqlPusher {
    /// Loads a group of passengers: the table is created or extended first, then one
    /// transaction with a savepoint per chunk, so one commit serves the group and a failing
    /// chunk rolls back only its own rows. Returns the connection unless it broke.
    pub(super) async fn push_group(
        &self,
        mut conn: Conn,
        group: &[&Passenger],
    ) -> (Option<Conn>, Vec<Result<(), StepError>>) {
        let target = self.target.name();
        let mut loads: Vec<Result<ChunkLoad<'_>, StepError>> = group
            .iter()
            .map(|passenger| ChunkLoad::read(passenger, &target, &self.keys))
            .collect();
        let table = match self.prepare_table(&mut conn, &mut loads).await {
            Ok(table) => table,
            Err(error) => return (usable(conn, &error), vec![Err(error); group.len()]),
        };
        if let Err(error) = conn.query_drop("START TRANSACTION").await {
            let error = self.error("cannot start the load's transaction", &error);
            return (usable(conn, &error), vec![Err(error); group.len()]);
        }
        let mut results = Vec::with_capacity(group.len());
        for load in &loads {
            let load = match load {
                Ok(load) => load,
                Err(error) => {
                    results.push(Err(error.clone()));
                    continue;
                }
            };
            match self.load_in_savepoint(&mut conn, load, &table).await {
                Loaded::Done(result) => results.push(result),
                Loaded::Broken(error) => {
                    let _ = conn.query_drop("ROLLBACK").await;
                    return (usable(conn, &error), vec![Err(error); group.len()]);
                }
            }
        }
        if let Err(error) = conn.query_drop("COMMIT").await {
            let error = self.error("cannot commit", &error);
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
            return (usable(conn, &error), results);
        }
        (Some(conn), results)
    }

    /// Creates the table when it is missing, adds the columns of the group's batches that it
    /// lacks, and checks the rest; a chunk whose columns the table cannot take fails alone
    /// (its entry in `loads` becomes the error). Returns the table as it is now.
    async fn prepare_table(
        &self,
        conn: &mut Conn,
        loads: &mut [Result<ChunkLoad<'_>, StepError>],
    ) -> Result<Table, StepError> {
        let name = self.target.name();
        let quoted = self.target.quoted();
        let mut table = self.describe(conn).await?;
        for entry in loads.iter_mut() {
            let Ok(load) = entry else { continue };
            let columns = &load.batch.columns;
            let checked = match &table {
                None if !self.create => Err(StepError::held(format!(
                    "table {name} does not exist and the pusher has `create: false`; create it"
                ))),
                None => {
                    let create = schema::create_table(&quoted, columns, &self.keys);
                    conn.query_drop(create)
                        .await
                        .map_err(|error| self.error("cannot create the table", &error))?;
                    info!(
                        pipeline = %self.pipeline,
                        component = %self.component,
                        target = %name,
                        "created table"
                    );
                    table = self.describe(conn).await?;
                    Ok(())
                }
                Some(existing) => match schema::check(existing, columns, &name) {
                    Ok(add) if add.is_empty() => Ok(()),
                    Ok(add) => {
                        conn.query_drop(schema::add_columns(&quoted, &add))
                            .await
                            .map_err(|error| self.error("cannot add columns", &error))?;
                        let names: Vec<&str> = add.iter().map(|c| c.name.as_str()).collect();
                        info!(
                            pipeline = %self.pipeline,
                            component = %self.component,
                            target = %name,
                            columns = %names.join(", "),
                            "added columns"
                        );
                        table = self.describe(conn).await?;
                        Ok(())
                    }
                    Err(error) => Err(error),
                },
            };
            if let Err(error) = checked {
                *entry = Err(error);
            }
        }
        let table = table.unwrap_or_default();
        if self.mode == Mode::Merge && !self.has_key_index(&table) {
            let keys = quote_list(self.keys.iter().map(String::as_str));
            return Err(StepError::permanent(format!(
                "{name}: merge needs a primary key or unique index on exactly ({keys}), and the \
                 table has none; add one (e.g. `ALTER TABLE {quoted} ADD PRIMARY KEY ({keys})`)"
            )));
        }
        Ok(table)
    }

    /// Whether a unique index of the table covers exactly the keys (in any order).
    fn has_key_index(&self, table: &Table) -> bool {
        table.unique.iter().any(|index| {
            index.len() == self.keys.len() && self.keys.iter().all(|k| index.contains(k))
        })
    }

    /// The table as the catalog has it, or `None` when it does not exist. A view, or a table
    /// whose engine cannot roll back, is refused (permanent).
    async fn describe(&self, conn: &mut Conn) -> Result<Option<Table>, StepError> {
        let fail =
            |error: mysql_async::Error| self.error("cannot read the table's columns", &error);
        let (database, table) = (&self.target.database, &self.target.table);
        let kind: Option<(String, Option<String>)> = conn
            .exec_first(
                "SELECT TABLE_TYPE, ENGINE FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (database, table),
            )
            .await
            .map_err(fail)?;
        let Some((kind, engine)) = kind else {
            return Ok(None);
        };
        let name = self.target.name();
        if kind != "BASE TABLE" {
            return Err(StepError::permanent(format!(
                "{name} is a {}, not a table; the mysql pusher loads into tables",
                kind.to_lowercase()
            )));
        }
        if !engine
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB"))
        {
            return Err(StepError::permanent(format!(
                "{name} uses the storage engine {}, which cannot roll back a chunk with its \
                 bookkeeping; exactly-once loads need InnoDB (`ALTER TABLE … ENGINE=InnoDB`)",
                engine.as_deref().unwrap_or("(none)")
            )));
        }
        let rows: Vec<(String, String, String, String, i64)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, \
                        (COLUMN_DEFAULT IS NOT NULL OR EXTRA <> '') + 0 \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            .await
            .map_err(fail)?;
        let columns = rows
            .into_iter()
            .map(
                |(name, data_type, column_type, nullable, fills)| TableColumn {
                    name,
                    data_type: data_type.to_lowercase(),
                    column_type: column_type.to_lowercase(),
                    not_null: nullable == "NO",
                    fills_itself: fills != 0,
                },
            )
            .collect();
        let indexes: Vec<(String, String)> = conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
                 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                (database, table),
            )
            .await
            .map_err(fail)?;
        let mut unique: Vec<(String, Vec<String>)> = Vec::new();
        for (index, column) in indexes {
            match unique.last_mut() {
                Some((name, columns)) if *name == index => columns.push(column),
                _ => unique.push((index, vec![column])),
            }
        }
        Ok(Some(Table {
            columns,
            unique: unique.into_iter().map(|(_, columns)| columns).collect(),
        }))
    }

    /// Loads one chunk inside the group's transaction, in a savepoint.
    async fn load_in_savepoint(
        &self,
        conn: &mut Conn,
        load: &ChunkLoad<'_>,
        table: &Table,
    ) -> Loaded {
        if let Err(error) = conn.query_drop("SAVEPOINT ferry_chunk").await {
            return Loaded::Broken(self.error("cannot start the chunk's savepoint", &error));
        }
        let result = self.load_chunk(conn, load, table).await;
        let end = match result {
            Ok(()) => "RELEASE SAVEPOINT ferry_chunk",
            Err(_) => "ROLLBACK TO SAVEPOINT ferry_chunk",
        };
        match conn.query_drop(end).await {
            Ok(()) => Loaded::Done(result),
            // The connection broke, or the server rolled the whole transaction back (a
            // deadlock does): nothing of the group stays. The chunk's own error says more.
            Err(error) => Loaded::Broken(match result {
                Err(own) if own.retryable => own,
                _ => self.error(&format!("{}: savepoint", load.describe()), &error),
            }),
        }
    }

    /// Everything a chunk does inside its savepoint.
    async fn load_chunk(
        &self,
        conn: &mut Conn,
        load: &ChunkLoad<'_>,
        table: &Table,
    ) -> Result<(), StepError> {
        let state = self.state(conn, load).await?;
        if state.recorded {
            return Ok(());
        }
        if let Some(owner) = state.owner {
            self.skipped(load, &format!("it was already loaded by passenger {owner}"));
            return Ok(());
        }
        if state.superseded {
            self.record(conn, load).await?;
            self.skipped(load, "a newer load of its series was loaded already");
            return Ok(());
        }
        match self.mode {
            Mode::Append => {
                self.load_data(conn, load, table, &self.target.quoted())
                    .await?
            }
            Mode::Merge => self.merge(conn, load, table).await?,
        }
        self.record(conn, load).await
    }

    /// What the bookkeeping knows about the chunk.
    async fn state(&self, conn: &mut Conn, load: &ChunkLoad<'_>) -> Result<State, StepError> {
        let sql = format!(
            "SELECT \
               EXISTS (SELECT 1 FROM {loads} WHERE target = ? AND passenger = ?), \
               (SELECT passenger FROM {loads} WHERE target = ? AND `load` = ? AND chunk = ?), \
               (? IS NOT NULL AND EXISTS (SELECT 1 FROM {loads} \
                 WHERE target = ? AND series = ? AND pipeline = ? AND `load` > ?))",
            loads = self.target.sibling(LOADS_TABLE)
        );
        let target = self.target.name();
        let passenger = load.passenger.id.to_string();
        let row: Option<(i64, Option<String>, i64)> = conn
            .exec_first(
                sql,
                (
                    &target,
                    &passenger,
                    &target,
                    &load.load,
                    load.number,
                    &load.series,
                    &target,
                    &load.series,
                    &self.pipeline,
                    &load.load,
                ),
            )
            .await
            .map_err(|error| self.error(&format!("cannot read {LOADS_TABLE}"), &error))?;
        let (recorded, owner, superseded) = row.unwrap_or((0, None, 0));
        Ok(State {
            recorded: recorded != 0,
            owner,
            superseded: superseded != 0,
        })
    }

    /// Records the chunk in the bookkeeping table, in its transaction.
    async fn record(&self, conn: &mut Conn, load: &ChunkLoad<'_>) -> Result<(), StepError> {
        let sql = format!(
            "INSERT INTO {} (pipeline, target, `load`, chunk, `last`, passenger, `rows`, series) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            self.target.sibling(LOADS_TABLE)
        );
        let rows = i64::try_from(load.batch.rows).unwrap_or(i64::MAX);
        conn.exec_drop(
            sql,
            (
                &self.pipeline,
                self.target.name(),
                &load.load,
                load.number,
                load.last,
                load.passenger.id.to_string(),
                rows,
                &load.series,
            ),
        )
        .await
        .map_err(|error| {
            self.error(
                &format!(
                    "{}: cannot record the chunk in {LOADS_TABLE}",
                    load.describe()
                ),
                &error,
            )
        })
    }

    /// `merge`: the chunk into a temporary copy of the table (with its keys, so a key twice in
    /// the chunk fails it), then `INSERT … SELECT … ON DUPLICATE KEY UPDATE`.
    async fn merge(
        &self,
        conn: &mut Conn,
        load: &ChunkLoad<'_>,
        table: &Table,
    ) -> Result<(), StepError> {
        if load.batch.rows == 0 {
            return Ok(());
        }
        let staging = quote_ident(MERGE_TABLE);
        let context = format!("{}: cannot merge", load.describe());
        let fail = |error: mysql_async::Error| self.error(&context, &error);
        let create = format!(
            "DROP TEMPORARY TABLE IF EXISTS {staging}; \
             CREATE TEMPORARY TABLE {staging} LIKE {}",
            self.target.quoted()
        );
        conn.query_drop(create).await.map_err(fail)?;
        self.load_data(conn, load, table, &staging).await?;
        let names = quote_list(load.names());
        let mut updates: Vec<String> = load
            .names()
            .filter(|name| !self.keys.iter().any(|k| k == name))
            .map(|name| format!("{0} = VALUES({0})", quote_ident(name)))
            .collect();
        if updates.is_empty() {
            // Only keys: a row that is there stays as it is.
            let key = quote_ident(&self.keys[0]);
            updates.push(format!("{key} = {key}"));
        }
        let upsert = format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM {staging} \
             ON DUPLICATE KEY UPDATE {}; DROP TEMPORARY TABLE {staging}",
            self.target.quoted(),
            updates.join(", ")
        );
        conn.query_drop(upsert).await.map_err(fail)
    }

    /// Streams the chunk's rows into `into` (quoted) with one `LOAD DATA LOCAL INFILE`. The
    /// batch's COPY text is what `LOAD DATA` reads by default (tab-separated, backslash
    /// escapes, `\N` for NULL); booleans, instants and bytes are converted in its `SET`
    /// clause. `LOAD DATA LOCAL` turns values that do not fit into warnings (it cannot stop the
    /// upload): any warning fails the chunk, naming its row, column and value.
    async fn load_data(
        &self,
        conn: &mut Conn,
        load: &ChunkLoad<'_>,
        table: &Table,
        into: &str,
    ) -> Result<(), StepError> {
        if load.batch.rows == 0 {
            return Ok(());
        }
        let statement = load_statement(into, load, table);
        let data = mysql_text(&load.batch.data);
        let pieces: Vec<Bytes> = (0..data.len())
            .step_by(INFILE_PIECE)
            .map(|start| data.slice(start..(start + INFILE_PIECE).min(data.len())))
            .collect();
        conn.set_infile_handler(async move {
            Ok(futures::stream::iter(pieces.into_iter().map(Ok)).boxed())
        });
        conn.query_drop(statement)
            .await
            .map_err(|error| self.error(&load.describe(), &error))?;
        let loaded = conn.affected_rows();
        if conn.get_warnings() > 0 {
            self.refuse_warnings(conn, load).await?;
        }
        if loaded != load.batch.rows as u64 {
            return Err(StepError::permanent(format!(
                "{}: {}: {loaded} of its {} rows were loaded; nothing of the chunk was kept",
                self.target.name(),
                load.describe(),
                load.batch.rows
            )));
        }
        Ok(())
    }

    /// Fails the chunk with the first warning (notes, such as a value rounded to the column's
    /// scale, are fine, as in PostgreSQL), naming the row, the column and the value.
    async fn refuse_warnings(
        &self,
        conn: &mut Conn,
        load: &ChunkLoad<'_>,
    ) -> Result<(), StepError> {
        let warnings: Vec<(String, u32, String)> = conn
            .query("SHOW WARNINGS")
            .await
            .map_err(|error| self.error(&load.describe(), &error))?;
        let Some((level, code, message)) =
            warnings.into_iter().find(|(level, _, _)| level != "Note")
        else {
            return Ok(());
        };
        let place = match (warning_row(&message), warning_column(&message)) {
            (Some(row), Some(column)) => format!("{}: ", load.place(row, &column)),
            (Some(row), None) => format!("row {row}: "),
            _ => String::new(),
        };
        Err(StepError::permanent(format!(
            "{}: {}: {place}{message} [{level} {code}]; nothing of the chunk was loaded",
            self.target.name(),
            load.describe()
        )))
    }

    /// Logs a chunk that was not loaded again, and why.
    fn skipped(&self, load: &ChunkLoad<'_>, why: &str) {
        warn!(
            pipeline = %self.pipeline,
            component = %self.component,
            target = %self.target.name(),
            passenger = %load.passenger.id,
            chunk = %load.describe(),
            why,
            "chunk skipped"
        );
    }
}

/// The connection, unless `error` says it broke (anything but a refusal by the server).
fn usable(conn: Conn, error: &StepError) -> Option<Conn> {
    match error.retryable && !error.held {
        true => None,
        false => Some(conn),
    }
}

/// `LOAD DATA LOCAL INFILE … INTO TABLE into (…) SET …` for the chunk's columns.
fn load_statement(into: &str, load: &ChunkLoad<'_>, table: &Table) -> String {
    let mut fields = Vec::with_capacity(load.batch.columns.len());
    let mut sets = Vec::new();
    for (index, column) in load.batch.columns.iter().enumerate() {
        let quoted = quote_ident(&column.name);
        // A text column takes the text as it is (a boolean stays `t`, as in PostgreSQL).
        let text_column = table
            .column(&column.name)
            .is_some_and(|c| c.data_type.contains("char") || c.data_type.contains("text"));
        let var = format!("@f{index}");
        match schema::load_expression(column.kind, &var) {
            Some(expression) if !(text_column && column.kind == ColumnType::Boolean) => {
                sets.push(format!("{quoted} = {expression}"));
                fields.push(var);
            }
            _ => fields.push(quoted),
        }
    }
    let set = match sets.is_empty() {
        true => String::new(),
        false => format!(" SET {}", sets.join(", ")),
    };
    format!(
        "LOAD DATA LOCAL INFILE 'ferry-chunk' INTO TABLE {into} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' \
         LINES TERMINATED BY '\\n' STARTING BY '' ({}){set}",
        fields.join(", ")
    )
}

/// The batch's COPY text in the dialect `LOAD DATA` reads. They share `\\`, `\t`, `\n`, `\r`,
/// `\b` and `\N`; COPY's `\f`, `\v`, octal (`\101`) and hex (`\x41`) escapes, which MySQL
/// does not know, are written out as the bytes they stand for (escaped again where needed).
/// Text without them, the usual case, is passed on as it is.
pub(super) fn mysql_text(data: &Bytes) -> Bytes {
    let foreign = |byte: u8| matches!(byte, b'f' | b'v' | b'x' | b'0'..=b'7');
    let mut at = 0;
    let mut first = None;
    while let Some(offset) = data[at..].iter().position(|&b| b == b'\\') {
        let escape = at + offset;
        match data.get(escape + 1) {
            Some(&next) if foreign(next) => {
                first = Some(escape);
                break;
            }
            _ => at = escape + 2,
        }
        if at >= data.len() {
            break;
        }
    }
    let Some(first) = first else {
        return data.clone();
    };
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..first]);
    let mut bytes = data[first..].iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let Some(next) = bytes.next() else {
            out.push(b'\\');
            break;
        };
        let value = match next {
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'x' if bytes.peek().is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u8;
                for _ in 0..2 {
                    match bytes.peek().and_then(|b| (*b as char).to_digit(16)) {
                        Some(digit) => {
                            value = value.wrapping_mul(16).wrapping_add(digit as u8);
                            bytes.next();
                        }
                        None => break,
                    }
                }
                value
            }
            b'0'..=b'7' => {
                let mut value = next - b'0';
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&digit @ b'0'..=b'7') => {
                            value = value.wrapping_mul(8).wrapping_add(digit - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                value
            }
            other => {
                out.push(b'\\');
                out.push(other);
                continue;
            }
        };
        match value {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            value => out.push(value),
        }
    }
    Bytes::from(out)
}

/// The row a warning names (`… at row 3`, `Row 3 was truncated …`), from 1.
fn warning_row(message: &str) -> Option<usize> {
    let digits = |text: &str| -> Option<usize> {
        let end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        text[..end].parse().ok()
    };
    if let Some(at) = message.rfind(" at row ") {
        return digits(&message[at + 8..]);
    }
    message.strip_prefix("Row ").and_then(digits)
}

/// The column a warning names: `column 'amount'` or `` column `db`.`t`.`amount` ``.
fn warning_column(message: &str) -> Option<String> {
    let at = message.find("column ")? + 7;
    let rest = &message[at..];
    if let Some(quoted) = rest.strip_prefix('\'') {
        return quoted.split('\'').next().map(str::to_string);
    }
    if rest.starts_with('`') {
        // The last of the dotted, backquoted names.
        let end = rest.find(' ').unwrap_or(rest.len());
        let name = rest[..end].rsplit("`.`").next()?;
        return Some(name.trim_matches('`').to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_name_their_row_and_column() {
        let message = "Out of range value for column 'amount' at row 3";
        assert_eq!(warning_row(message), Some(3));
        assert_eq!(warning_column(message).as_deref(), Some("amount"));
        let message = "Incorrect integer value: 'x' for column `test`.`t`.`id` at row 12";
        assert_eq!(warning_row(message), Some(12));
        assert_eq!(warning_column(message).as_deref(), Some("id"));
        let message = "Row 2 was truncated; it contained more data than there were input columns";
        assert_eq!(warning_row(message), Some(2));
        assert_eq!(warning_column(message), None);
    }

    #[test]
    fn copy_escapes_mysql_lacks_are_written_out() {
        let plain = Bytes::from_static(b"a\\tb\t\\N\t\\\\x00ff\n");
        assert_eq!(mysql_text(&plain), plain);
        let foreign = Bytes::from_static(b"\\\\f\ta\\fb\\v\\101\\x42\\011\\134\n");
        assert_eq!(&mysql_text(&foreign)[..], b"\\\\f\ta\x0cb\x0bAB\\t\\\\\n");
    }
}
