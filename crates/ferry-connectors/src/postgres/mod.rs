//! PostgreSQL: the `postgres` connection type ([`connection`], with TLS), the `sql` puller's
//! reader, and the `postgres` pusher, which loads record batches into a table with COPY
//! (append, replace, merge, history), exactly once per chunk, with SQL steps and versioned
//! table migrations.
//!
//! # How a chunk is loaded
//!
//! A passenger's body is a record batch ([`ferry_core::records`]); its rows are streamed to
//! `COPY … FROM STDIN` as they are, one COPY per chunk, with no per-row work in ferry.
//!
//! A pushed batch is loaded in one transaction (in groups of at most 32 passengers, see
//! `MAX_PER_TRANSACTION` in `pusher.rs`), so it costs one commit, one durable flush, as the
//! connector spec asks. Each passenger is loaded in a savepoint of its own, so one failure
//! rolls back only that passenger's work and the others are committed. The transaction
//!
//! 1. takes `pg_advisory_xact_lock(hashtext('<schema>.<table>'))`, so that loads into one table
//!    never interleave (across pushers, pipelines and ferry nodes) — except `append`, see
//!    below;
//! 2. looks each passenger up in `ferry.loads`: one already recorded is skipped and reported
//!    done, so a crash between the commit and the queue's "done" never loads twice;
//! 3. creates or extends the target table (see *Schema changes*), runs the `before` files for
//!    the first chunk of a load, COPYs the rows (into the table, a temporary table or a shadow
//!    table, by mode), records the chunk in `ferry.loads`, and when the load is complete
//!    (chunks `1..=n` recorded, `n` from the chunk marked last; chunks may come in any order)
//!    applies it and runs the `after` files, all inside the passenger's savepoint.
//!
//! `append` takes the lock only when it needs it, so that two workers load one table side by
//! side (PostgreSQL parses each COPY on one core; two streams load about 1.6 times as fast on
//! two cores):
//!
//! - a chunk whose load has no chunk recorded yet (it may be the first, which runs `before`),
//!   or whose table is missing, takes the lock before anything else and keeps it to the end;
//! - other chunks COPY and record without it;
//! - at the end of the group the lock is taken, and every load of the group whose chunks are
//!   now all recorded runs its `after` files and is marked complete. Under the lock each
//!   group sees the chunks of the groups that committed before it, so the one that commits
//!   last finishes the load, exactly once. An error there (an `after` file) rolls back the
//!   whole group: its chunks fail and come again.
//!
//! When the commit fails or the connection breaks, every passenger of the group fails
//! (retryable), since none of them stayed.
//!
//! # Modes
//!
//! - `append`: COPY into the table; a load of a series (below) is COPYed into an `UNLOGGED`
//!   shadow table with the batch's columns (typed as in the table), and the transaction that
//!   completes it checks that the shadow holds every row `ferry.loads` counted (a crash of
//!   PostgreSQL empties unlogged tables) and moves the rows into the table (`INSERT … SELECT`,
//!   then `DROP`), so they become visible together.
//! - `merge`: COPY into a temporary table, then `INSERT … ON CONFLICT (keys) DO UPDATE`. The
//!   table needs a primary key or unique index on exactly the keys: a table the pusher creates
//!   gets the keys as primary key; an existing one without such an index fails permanently.
//!   Two rows with the same key in one chunk fail the chunk (PostgreSQL cannot update a row
//!   twice in one statement).
//! - `replace`: chunks are COPYed into a shadow table `<table>__ferry_<hash of load id>` in the
//!   target's schema, created `LIKE` the target `INCLUDING ALL` (defaults, constraints,
//!   indexes, comments on columns) with the target's grants, plus new batch columns. When the
//!   load is complete the shadow is compared with the target (see *Content hash*): unchanged,
//!   it is dropped and the table stays as it is (same OID); changed, the target is dropped and
//!   the shadow renamed in its place, in one transaction. Triggers, foreign keys, policies and
//!   the table's own comment are not carried over: tables that need them should use `merge`.
//! - `history`: SCD type 2. A load is the source's whole current state, staged in a shadow
//!   table like `replace`; when complete, one transaction closes the current rows whose key is
//!   gone, closes the current rows whose data changed and inserts their new version, and
//!   inserts new keys. `valid_from`/`valid_to` are the database's `now()` of that transaction.
//!   The table has the batch columns plus `valid_from timestamptz`, `valid_to timestamptz`
//!   (NULL while current), `is_current boolean`, `key_hash text`, `data_hash text`; a created
//!   table gets the primary key `(keys…, valid_from)` and a unique index on `key_hash` of the
//!   current rows. A key twice in one load fails the load's completing chunk.
//!
//! For `replace` and `history`, a load that is older than one already applied to the table
//! (its chunks' passenger ids, UUIDv7 made at pull, are smaller) is *superseded*: its chunks are
//! recorded and reported done but not applied, so a late chunk can never put old content back
//! over newer. When a load completes, the shadows of older incomplete loads are dropped.
//!
//! # Series: a newer full load supersedes an interrupted one (issue 12)
//!
//! A full load of an `sql` puller (or an `http` load) is pulled anew every run, with a new
//! load id, so an interrupted one is never completed by a later run. Its chunks carry the
//! metadata `series` (the puller's name, [`ferry_core::records::SERIES`]), recorded in
//! `ferry.loads.series`.
//! Within one target, pipeline and series, loads are ordered by their ids (UUIDv7, made at
//! pull):
//!
//! - the first chunk of a load abandons every older load of its series that is not complete:
//!   their shadow tables are dropped and `abandoned_at` is set, under the table's lock;
//! - a chunk of a load that is older than any recorded load of its series, or abandoned, is
//!   *superseded*: recorded, not applied, reported done with a warning (and its load marked
//!   abandoned), so it neither brings old values back (`merge`) nor completes (`append`'s
//!   completion skips abandoned loads);
//! - a later chunk whose shadow table is gone (abandoned meanwhile) fails retryably rather
//!   than staging the load again; the next attempt finds it superseded.
//!
//! Whatever the crash point, a full load is thus applied whole or not at all.
//!
//! # Content hash (`replace`)
//!
//! Row counts first (different counts: changed). With equal counts, the sum over all rows of
//! the first 64 bits of `md5(ROW(<batch columns>)::text)`, for target and shadow (columns
//! outside the batch, which fill themselves, are left out). A sum does not depend on row
//! order, so no sort is needed, and it still tells multisets apart (`{a, a, b}` from
//! `{a, b, b}`) except with a chance of 2⁻⁶⁴. A shadow with columns the target lacks is
//! changed without hashing.
//!
//! # Dependent views (`replace`)
//!
//! The target is dropped without `CASCADE`. When views (or other objects) depend on it, the
//! swap fails and the completing chunk is *held* (it waits in the queue; nothing is lost) with
//! the database's list of dependent objects. dapu's `DROP … CASCADE` destroyed such views
//! silently; ferry does not.
//!
//! # Schema changes
//!
//! - A missing table is created from the batch's column types ([`ColumnType::postgres`], or
//!   the type with the modifier the puller declared, `numeric(12,2)`, `varchar(8)`:
//!   [`Column::postgres`]), with `keys` as primary key. A missing schema is created too.
//! - A batch column the table lacks is added (`ALTER TABLE … ADD COLUMN`, nullable).
//! - A batch column whose values the table column cannot hold is refused with
//!   [`StepError::held`], naming the table, the column, both types and the migration to write.
//!   The table column *fits* when its type is the batch type's own PostgreSQL type or wider
//!   without loss: `bigint` or `numeric` for integers, `numeric` for floats,
//!   `timestamp`/`timestamptz` for dates, `timestamptz` for timestamps (read in the session's
//!   time zone), `json` for JSON, and `text`, `varchar` or `char` for anything. Everything else
//!   (`integer`, `timestamp` for an instant, user types) is held.
//! - **A type with a modifier is the same type** (`numeric(12,2)`, `varchar(8)`, `char(2)`,
//!   `timestamp(3)`, `timestamptz(3)`), as for psql, dlt and pgloader: the load goes ahead.
//!   A value that does not fit (too long, too many digits) fails its chunk permanently with
//!   the row within the chunk, the column and the value, read from the line and column
//!   PostgreSQL's COPY reports; the chunk's savepoint is rolled back, so nothing of it stays.
//!   Digits beyond the scale are rounded, as PostgreSQL does.
//! - **Widening is never applied automatically**, though `integer → bigint` or `… → text`
//!   would lose nothing: changing a column's type rewrites the whole table under an exclusive
//!   lock, fails on dependent views, and changes what downstream queries see; and a puller
//!   whose type guess flips once (a CSV column that is numeric today, text tomorrow) must not
//!   turn a warehouse column into `text` for good. A person decides, with a migration.
//! - A table column missing from the batch: in `replace` held, since the new content would
//!   leave it empty, unless it fills itself (a default, an identity, a generated column);
//!   elsewhere fine when it is nullable or fills itself, held when it is `NOT NULL` without a
//!   default (every row would fail). In `history` such a column is NULL in new versions and
//!   not part of `data_hash`.
//!
//! # SQL files and migrations
//!
//! `before`/`after` files and migrations live under `clients/<client>/sql/`; see `script.rs`
//! for splitting and placeholders. Migrations are the files
//! `clients/<client>/sql/<table as written>/NNN_name.sql`, applied in numeric order before
//! the first load of each pusher start, each in its own transaction with its row in
//! `ferry.migrations` (SHA-256 of the file). A failing migration, one changed after it was
//! applied, or a new one numbered before an applied one stops the loads (held) and names the
//! file; nothing after it runs.
//!
//! # Errors
//!
//! Connection errors, deadlocks, lock and statement timeouts and lack of resources are
//! retryable; data errors (bad value, constraint violation, with the COPY line the database
//! reports), SQL errors and missing privileges are permanent; schema changes a person must
//! make are held. Messages name the connection by its redacted URL, never its password.
//!
//! # Bookkeeping
//!
//! Schema `ferry` in the target database, created once per pusher start under an advisory
//! lock: `ferry.loads` (one row per loaded chunk: pipeline `client/pipeline`, target, load,
//! chunk, last, passenger, rows, loaded_at, completed_at, abandoned_at, series; unique on
//! `(target, passenger)` and on `(target, load, chunk)`; `series` is added to tables made
//! before it) and `ferry.migrations` (target, file, hash, applied_at). Nothing removes old
//! `ferry.loads` rows yet.

mod config;
pub(crate) mod connection;
mod load;
mod pusher;
mod reader;
mod schema;
mod script;
#[cfg(test)]
mod tests;
mod tls;

pub use config::{Mode, PostgresPusherConfig};
pub(crate) use connection::Postgres;
pub use pusher::{PostgresPusher, PostgresPusherFactory};

#[cfg(doc)]
use ferry_core::{
    StepError,
    records::{Column, ColumnType},
};

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes).
const MAX_IDENTIFIER: usize = 63;

/// The target table, as named in the definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub schema: String,
    pub table: String,
}

impl Target {
    /// Parses `schema.table` or `table` (in `public`).
    pub(crate) fn parse(text: &str) -> Result<Target, String> {
        let (schema, table) = match text.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("public", text),
        };
        for (what, name) in [("schema", schema), ("table", table)] {
            if name.is_empty() {
                return Err(format!(
                    "the {what} name in `{text}` is empty; write `schema.table` or `table`"
                ));
            }
            // `/` and `\` too: the name is also the directory of the table's migrations.
            if name.contains(['.', '"', '/', '\\', '\0']) {
                return Err(format!(
                    "`{text}` is not `schema.table` or `table`: names are taken as written \
                     (case-sensitive) and may not contain `.`, `\"`, `/` or `\\`"
                ));
            }
            if name.len() > MAX_IDENTIFIER {
                return Err(format!(
                    "the {what} name `{name}` is longer than PostgreSQL's {MAX_IDENTIFIER} bytes"
                ));
            }
        }
        Ok(Target {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// `schema.table`, unquoted: for messages, bookkeeping and the advisory lock.
    pub(crate) fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// `"schema"."table"`.
    pub(crate) fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// A table next to this one: `"schema"."name"`.
    pub(crate) fn sibling(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(name))
    }

    /// The name of the shadow table that stages `load` (`replace`, `history`):
    /// `<table>__ferry_<12 hex digits of a hash of the load id>`, the table part shortened
    /// to keep within PostgreSQL's identifier length.
    pub(crate) fn shadow(&self, load: &str) -> String {
        let suffix = format!("__ferry_{:012x}", fnv1a(load.as_bytes()) >> 16);
        let mut keep = MAX_IDENTIFIER - suffix.len();
        while !self.table.is_char_boundary(keep.min(self.table.len())) {
            keep -= 1;
        }
        format!("{}{suffix}", &self.table[..keep.min(self.table.len())])
    }
}

/// 64-bit FNV-1a: a stable hash for shadow names (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// An identifier quoted for SQL: `"name"`, inner quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for SQL: `'text'`, inner quotes doubled; `E'…'` with backslashes doubled
/// when there are backslashes, so it reads the same whatever `standard_conforming_strings`.
pub(crate) fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    match quoted.contains('\\') {
        true => format!("E'{}'", quoted.replace('\\', "\\\\")),
        false => format!("'{quoted}'"),
    }
}

/// Names quoted and joined with `, `.
pub(crate) fn quote_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(quote_ident).collect();
    quoted.join(", ")
}
