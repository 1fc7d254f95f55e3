//! SQLite: the `sqlite` connection type (`connection.rs`), the `sql` puller's reader
//! (`reader.rs`), and the `sqlite` pusher, which loads record batches into a table of a
//! database file (`append`, `merge`), exactly once per chunk.
//!
//! # How a group of chunks is loaded
//!
//! On a blocking thread (SQLite is a library that blocks), a pushed batch is loaded in one
//! transaction (groups of at most 32 passengers), begun with `BEGIN IMMEDIATE` so that two
//! writers of the file wait for each other (up to 10 s) instead of failing halfway; each chunk
//! runs in a savepoint of its own, so a failing chunk rolls back alone. For each chunk the
//! transaction
//!
//! 1. looks it up in the bookkeeping table `ferry_loads` of the database: a passenger already
//!    recorded, or a chunk another passenger loaded, is reported done without loading again;
//!    a chunk of a load whose series already has a newer load recorded is superseded
//!    (recorded, not loaded, as in the `mysql` pusher);
//! 2. creates the table or adds the batch's new columns (DDL is transactional in SQLite: it
//!    rolls back with a failing chunk);
//! 3. inserts the rows with one prepared statement, `INSERT … ON CONFLICT (keys) DO UPDATE` for
//!    `merge` (SQLite runs a prepared insert in about a microsecond; multi-row statements gain
//!    little in-process);
//! 4. records the chunk in `ferry_loads` (unique on `(target, passenger)` and
//!    `(target, load, chunk)`).
//!
//! The database file is created when missing (its directory must exist).
//!
//! # Types and values that do not fit
//!
//! A created table declares `BOOLEAN`, `INTEGER`, `REAL`, `NUMERIC` (or the declared
//! `NUMERIC(p,s)`), `TEXT` (or `VARCHAR(n)`/`CHAR(n)`), `DATE`, `TIME`, `TIMESTAMP`,
//! `TIMESTAMPTZ`, `JSON`, `BLOB` and `UUID`, with `keys` as primary key. Values are bound typed:
//! integers, reals, booleans as 1/0, bytes as blobs, everything else as text (instants keep
//! their offset, as `+02:00`, which SQLite's date functions read). SQLite itself stores any
//! value in any column, so ferry checks the limits a declared type sets, as PostgreSQL or
//! MySQL would: a value longer than a `VARCHAR(n)`/`CHAR(n)` column, or with more digits
//! before the point than a `DECIMAL(p,s)`/`NUMERIC(p,s)` column holds, fails the chunk
//! permanently naming the row within the chunk, the column and the value, and nothing of the
//! chunk stays. (Digits beyond the scale are kept as given: SQLite does not round.) A `STRICT`
//! table's type errors and constraint violations fail the chunk the same way.
//!
//! A table column the batch lacks is fine unless it is `NOT NULL` without a default (held).
//! `merge` needs a primary key or unique index on exactly the keys (permanent otherwise).
//!
//! # Errors
//!
//! A busy or locked database, a file that cannot be opened, a full disk and I/O errors are
//! retryable and name the connection; everything else is permanent.

pub(crate) mod connection;
mod load;
mod pusher;
mod reader;
mod schema;
#[cfg(test)]
mod tests;

/// The `sqlite` pusher's configuration: the keys of every SQL table pusher but `postgres`.
pub use crate::table_load::{Mode, TablePusherConfig as SqlitePusherConfig};
pub(crate) use connection::Sqlite;
pub use pusher::{SqlitePusher, SqlitePusherFactory};
