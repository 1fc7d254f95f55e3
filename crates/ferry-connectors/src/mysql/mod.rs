//! MySQL and MariaDB: the `mysql` connection type (`connection.rs`, with TLS), the `sql`
//! puller's reader (`reader.rs`), and the `mysql` pusher, which loads record batches into a
//! table with `LOAD DATA LOCAL INFILE` (`append`, `merge`), exactly once per chunk.
//!
//! # How a group of chunks is loaded
//!
//! The table is created or extended first (MySQL commits DDL on its own, so it cannot share
//! the load's transaction; `CREATE TABLE IF NOT EXISTS` and the checks are idempotent). Then a
//! pushed batch is loaded in one transaction (groups of at most 32 passengers), each chunk in
//! a savepoint of its own, so one commit serves the group and a failing chunk rolls back only
//! its own rows. For each chunk the transaction
//!
//! 1. looks it up in the bookkeeping table `ferry_loads` of the target's database: a passenger
//!    already recorded is reported done (a crash between the commit and the queue's "done"
//!    never loads twice), as is a chunk another passenger already loaded;
//! 2. streams the chunk's rows with `LOAD DATA LOCAL INFILE` (the batch's COPY text is what
//!    `LOAD DATA` reads by default: tab-separated, backslash escapes, `\N` for NULL; booleans,
//!    instants and bytes are converted in its `SET` clause) into the table (`append`), or into
//!    a temporary copy of it and from there with `INSERT … SELECT … ON DUPLICATE KEY UPDATE`
//!    (`merge`);
//! 3. records the chunk in `ferry_loads` (unique on `(target, passenger)` and on
//!    `(target, load, chunk)`: two workers loading one chunk at once cannot both commit; the
//!    loser's duplicate is retryable and its next attempt finds the chunk recorded).
//!
//! `LOAD DATA LOCAL` was measured against multi-row `INSERT` statements and is faster (the
//! server parses the rows; ferry does no per-row work), see BENCHMARKS.md. The data comes only
//! from the chunk at hand: the connection has no handler that reads files the server names.
//!
//! # Values that do not fit
//!
//! `LOAD DATA LOCAL` turns a value that does not fit its column (too long for `VARCHAR(8)`,
//! out of range for `DECIMAL(12,2)`, not a number) into a warning, since the server cannot stop
//! the upload. Every warning fails the chunk permanently, naming the row within the chunk, the
//! column and the value, and the savepoint is rolled back: nothing of the chunk stays. Notes
//! (a value rounded to the column's scale) are accepted, as PostgreSQL rounds too.
//!
//! # Modes
//!
//! - `append`: rows are added.
//! - `merge`: rows are upserted by `keys`. The table needs a primary key or unique index on
//!   exactly the keys: a table the pusher creates gets the keys as primary key; an existing one
//!   without such an index fails permanently. A key twice in one chunk fails the chunk.
//!
//! `replace` and `history` are the `postgres` pusher's only.
//!
//! # Series
//!
//! A chunk of a load whose series (a full load of an `sql` puller, [`records::SERIES`]) already
//! has a newer load recorded is superseded: recorded and reported done, not loaded, so an old
//! full load never brings back old values. Unlike the `postgres` pusher, `append` does not stage
//! a series' chunks: the chunks of an interrupted full load stay in the table.
//!
//! # Schema
//!
//! - A missing table is created (`create: true`, the default) from the batch's columns, InnoDB,
//!   `utf8mb4`, with `keys` as primary key: `BOOLEAN`, `BIGINT`, `DOUBLE`, `DECIMAL(65,30)` for
//!   numeric (or the declared `DECIMAL(p,s)`), `LONGTEXT` (`VARCHAR(768)` as a key, or the
//!   declared `VARCHAR(n)`/`CHAR(n)`), `DATE`, `TIME(6)`, `DATETIME(6)` for timestamps and
//!   instants (in UTC), `JSON`, `LONGBLOB`, `CHAR(36)` for UUIDs.
//! - A batch column the table lacks is added (nullable).
//! - A column of another type is held, naming both types; a type with a modifier is the same
//!   type (`DECIMAL(12,2)` takes numeric values, `VARCHAR(8)` any value) and values that do not
//!   fit fail their chunk. Text columns take every type.
//! - A table column the batch lacks is fine unless it is `NOT NULL` without a default (held).
//! - A view, or a table whose engine is not InnoDB (which cannot roll back), is refused.
//!
//! # Errors
//!
//! Lock wait timeouts, deadlocks, too many connections, a server shutting down, a lost
//! connection and a concurrent duplicate in `ferry_loads` are retryable; what the server refuses
//! otherwise (values, SQL, privileges, unknown database) is permanent. Messages name the
//! connection by its redacted URL, never its password.

pub(crate) mod connection;
mod load;
mod pusher;
mod reader;
mod schema;
#[cfg(test)]
mod tests;

/// The `mysql` pusher's configuration: the keys of every SQL table pusher but `postgres`.
pub use crate::table_load::{Mode, TablePusherConfig as MysqlPusherConfig};
pub(crate) use connection::Mysql;
pub use pusher::{MysqlPusher, MysqlPusherFactory};

#[cfg(doc)]
use ferry_core::records;
