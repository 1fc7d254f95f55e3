//! Creating and migrating the store's schema at open.
//!
//! Several nodes may open the same schema at once: the first takes a session advisory lock
//! named after the schema and migrates; the others wait for the lock, then find nothing left
//! to do. Applied versions are rows of `schema_migrations`; each migration runs in its own
//! transaction together with its row.

use super::{execute, query_one, query_opt, quote_identifier};
use crate::{Result, StoreError};

/// The migrations in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// Brings the schema `schema` to the newest version, creating it when needed.
pub(super) async fn migrate(conn: &deadpool_postgres::Client, schema: &str) -> Result<()> {
    // The lock's key is a hash of the schema's name: stores of different schemas in one
    // database do not wait for each other.
    let key = format!("ferry schema {schema}");
    execute(
        conn,
        "SELECT pg_advisory_lock(hashtextextended($1, 0))",
        &[&key],
    )
    .await?;
    let result = apply(conn, schema).await;
    let unlocked = execute(
        conn,
        "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
        &[&key],
    )
    .await;
    result?;
    unlocked?;
    Ok(())
}

async fn apply(conn: &deadpool_postgres::Client, schema: &str) -> Result<()> {
    let quoted = quote_identifier(schema);
    // The search path was set before the schema existed; setting it again makes sure the
    // tables below are created in it.
    // Created only when missing: CREATE SCHEMA IF NOT EXISTS needs the right to create
    // schemas even when it exists, which a node's role may rightly lack.
    let exists = query_opt(
        conn,
        "SELECT 1 FROM pg_namespace WHERE nspname = $1",
        &[&schema],
    )
    .await?
    .is_some();
    if !exists {
        conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
            .await?;
    }
    conn.batch_execute(&format!(
        "SET search_path TO {quoted};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let current: i32 = query_one(
        conn,
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        &[],
    )
    .await?
    .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(StoreError::Backend(
            format!(
                "schema {schema} is at schema version {current}, newer than this ferry knows \
                 ({known}); upgrade ferry"
            )
            .into(),
        ));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        // A plain BEGIN rather than `transaction()`, which needs the connection mutably.
        let applied = async {
            conn.batch_execute(&format!("BEGIN;\n{sql}")).await?;
            execute(
                conn,
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await?;
            conn.batch_execute("COMMIT").await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if applied.is_err() {
            // Best effort: the connection is dropped with the error anyway if this fails.
            let _ = conn.batch_execute("ROLLBACK").await;
        }
        applied?;
    }
    Ok(())
}
