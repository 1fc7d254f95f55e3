//! Opening connections and migrating the schema.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::{Result, StoreError};

/// The migrations, in order; migration `n` (1-based) brings `PRAGMA user_version` to `n`.
/// Never edit one that was released: add a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_split.sql"),
    include_str!("../../migrations/sqlite/0003_console.sql"),
    include_str!("../../migrations/sqlite/0004_created.sql"),
    include_str!("../../migrations/sqlite/0005_loads.sql"),
    include_str!("../../migrations/sqlite/0006_search.sql"),
    include_str!("../../migrations/sqlite/0007_poison.sql"),
    include_str!("../../migrations/sqlite/0008_step_result.sql"),
    include_str!("../../migrations/sqlite/0009_nodes.sql"),
];

/// The CLI opens the file while `ferry run` writes to it; a write waits this long for the
/// other process's transaction before giving up.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page cache of the writer, in KiB. The hot pages are the right edges of the indexes and the
/// open part of the queue; a large cache buys little and counts against the process's memory.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Page cache of each reader, in KiB.
const READER_CACHE_KIB: i64 = 4 * 1024;

/// Page size of a new database. Larger than SQLite's 4 KiB: every passenger brings a body of
/// a kilobyte or more, and with 16 KiB pages a commit writes a quarter of the WAL frames (and
/// system calls) for the same bytes. Measured: seat → lease → finish about a third faster.
const PAGE_SIZE: i64 = 16 * 1024;

/// Pages in the write-ahead log before the writer copies them back into the database itself.
/// Normally the [`Checkpointer`](super::Checkpointer) does that on its own thread long before;
/// this is the backstop should it fall behind.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 4_000;

/// After a checkpoint the WAL file is truncated to this size, so a burst does not leave a
/// huge file behind.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Opens the connection that writes, and brings the schema up to date.
///
/// Switching a new file to WAL answers "database is locked" at once, without waiting, while
/// another process is doing the same (`ferry run` creating the store while `ferry queue …`
/// opens it): such an open is tried again until [`BUSY_TIMEOUT`].
pub(super) fn open_writer(path: &Path) -> Result<Connection> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match try_open_writer(path) {
            Err(error) if is_busy(&error) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Whether `error` is SQLite's "busy" or "locked".
fn is_busy(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    matches!(
        source.downcast_ref::<rusqlite::Error>(),
        Some(rusqlite::Error::SqliteFailure(failure, _))
            if matches!(failure.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn try_open_writer(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Takes effect only when the file is new; an existing database keeps its page size.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL: readers do not block the writer nor the writer the readers, and a commit is one
    // sequential append to the log.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(
            format!(
                "cannot switch {} to WAL mode (got `{mode}`)",
                path.display()
            )
            .into(),
        ));
    }
    // FULL: the WAL is fsynced at every commit, so a seated passenger is never lost and the
    // puller may be acked as soon as `seat` returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // Statement journals and sorts in memory: as temporary files they cost a write() each.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)?;
    conn.set_prepared_statement_cache_capacity(64);
    rusqlite::vtab::array::load_module(&conn)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens the connection of the checkpointer thread.
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A checkpoint reads pages from the WAL, not through the cache: keep it small.
    conn.pragma_update(None, "cache_size", -1024)?;
    // The checkpoint fsyncs the database before the WAL may be reused (SQLite's default,
    // spelled out because durability depends on it).
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens a connection that only reads.
pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(64);
    rusqlite::vtab::array::load_module(&conn)?;
    Ok(conn)
}

/// Copies the database at `from` into the new file `to` as of one moment (`VACUUM INTO`, in
/// one read transaction: writers go on meanwhile). The copy is written beside `to` and renamed
/// when complete, so `to` is never a half-written file.
pub(super) fn backup(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Err(StoreError::Refused(format!(
            "{} already exists; choose a new file",
            to.display()
        )));
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Path::new(&partial);
    // A leftover of an interrupted backup.
    let _ = std::fs::remove_file(partial);
    let conn = Connection::open(from)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let copied = conn
        .execute("VACUUM INTO ?1", [partial.to_string_lossy()])
        .map_err(StoreError::from)
        .and_then(|_| {
            std::fs::rename(partial, to).map_err(|error| {
                StoreError::Backend(
                    format!(
                        "cannot rename {} to {}: {error}",
                        partial.display(),
                        to.display()
                    )
                    .into(),
                )
            })
        });
    if copied.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    copied
}

/// Applies the migrations the database has not seen yet, each in its own transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let current = user_version(conn)?;
    if current > known {
        return Err(StoreError::Backend(
            format!(
                "{} has schema version {current} but this ferry knows only up to {known}; \
                 use a newer ferry",
                path.display()
            )
            .into(),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        // The version is read again inside the write transaction: another process may have
        // migrated the file since we looked.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if user_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_an_older_version_is_migrated_and_keeps_its_passengers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        {
            // A database as ferry's first schema left it, with a passenger in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO passengers (id, client, pipeline, source_system, external_id, state,
                     due_at, created_at, updated_at)
                 VALUES (x'00', 'acme', 'p', 's', 'x', 'pending', 0, 0, 0)",
                [],
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len() as i64);
        let (external_id, parent): (String, Option<Vec<u8>>) = conn
            .query_row("SELECT external_id, parent FROM passengers", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((external_id.as_str(), parent), ("x", None));
    }

    #[test]
    fn a_version_2_database_gets_the_console_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        {
            // A database as version 2 left it, with a split passenger and a run in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO passengers (id, client, pipeline, source_system, external_id, state,
                     due_at, created_at, updated_at, parent)
                 VALUES (x'01', 'acme', 'p', 's', 'x#1', 'pending', 0, 0, 0, x'00')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO runs (client, pipeline, version, started_at, status, seated)
                 VALUES ('acme', 'p', 'v1', 0, 'succeeded', 3)",
                [],
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len() as i64);

        let external_id: String = conn
            .query_row(
                "SELECT external_id FROM passengers WHERE parent = x'00'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(external_id, "x#1");
        let mut indexes = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = ?1")
            .unwrap();
        for index in [
            "passengers_parent",
            "runs_client",
            "runs_throughput",
            "passengers_created",
        ] {
            assert!(indexes.exists([index]).unwrap(), "index {index} is missing");
        }
        // Existing runs are in the new index: it was built from them.
        let seated: i64 = conn
            .query_row(
                "SELECT sum(seated) FROM runs INDEXED BY runs_throughput
                 WHERE started_at >= 0 AND seated > 0",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(seated, 3);
        for insert in [
            "INSERT INTO sessions (id_hash, client, user, csrf, expires_at)
             VALUES ('h', 'acme', 'ann', 'c', 1)",
            "INSERT INTO api_tokens (hash, client, name, role, created_by, created_at)
             VALUES ('h', 'acme', 'deploy', 'operator', 'acme/ann', 0)",
            "INSERT INTO audit (at, client, actor, action, target, detail)
             VALUES (0, 'acme', 'acme/ann', 'pipeline.pause', 'acme/p', '')",
        ] {
            conn.execute(insert, []).unwrap();
        }
        // Opening again migrates nothing more.
        drop(indexes);
        drop(conn);
        let conn = open_writer(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), MIGRATIONS.len() as i64);
    }
}

#[cfg(test)]
mod opening {
    use super::*;

    /// `ferry run` creating a new store while a `ferry queue …` of the same project opens it:
    /// both get the store, neither "database is locked".
    #[test]
    fn several_processes_may_open_a_new_store_at_once() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("ferry-{round}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        open_writer(&path).map(drop).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().expect("the store opens");
            }
        }
    }
}
