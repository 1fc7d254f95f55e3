//! What the console keeps: login sessions, API tokens and the audit log.
//!
//! Sessions and tokens are found by the SHA-256 of their secret, which the caller computes;
//! the secrets themselves never reach the store.

use deadpool_postgres::GenericClient;
use ferry_core::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{big, execute, query, query_one, query_opt};
use crate::convert::{millis, optional_time, time};
use crate::{ApiToken, AuditEntry, Result, Session};

/// A token's use is recorded at most this often, so API calls do not each cost a write.
const TOKEN_USE_EVERY_MS: i64 = 60_000;

pub(super) async fn create_session(
    db: &impl GenericClient,
    id_hash: &str,
    session: &Session,
) -> Result<()> {
    execute(
        db,
        "INSERT INTO sessions (id_hash, client, \"user\", csrf, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id_hash,
            &session.client,
            &session.user,
            &session.csrf,
            &millis(session.expires_at),
        ],
    )
    .await?;
    Ok(())
}

/// The session with this hash, unless it expired by `now`.
pub(super) async fn session(
    db: &impl GenericClient,
    id_hash: &str,
    now: Timestamp,
) -> Result<Option<Session>> {
    let row = query_opt(
        db,
        "SELECT client, \"user\", csrf, expires_at FROM sessions
         WHERE id_hash = $1 AND expires_at > $2",
        &[&id_hash, &millis(now)],
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(Session {
        client: row.try_get(0)?,
        user: row.try_get(1)?,
        csrf: row.try_get(2)?,
        expires_at: time(row.try_get(3)?)?,
    }))
}

pub(super) async fn delete_session(db: &impl GenericClient, id_hash: &str) -> Result<()> {
    execute(db, "DELETE FROM sessions WHERE id_hash = $1", &[&id_hash]).await?;
    Ok(())
}

/// Deletes the sessions [`session`] no longer returns at `now`.
pub(super) async fn purge_sessions(db: &impl GenericClient, now: Timestamp) -> Result<u64> {
    execute(
        db,
        "DELETE FROM sessions WHERE expires_at <= $1",
        &[&millis(now)],
    )
    .await
}

/// Stores a token, never used yet; returns its id.
pub(super) async fn create_token(
    db: &impl GenericClient,
    hash: &str,
    token: &ApiToken,
) -> Result<i64> {
    Ok(query_one(
        db,
        "INSERT INTO api_tokens (hash, client, name, role, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id",
        &[
            &hash,
            &token.client,
            &token.name,
            &token.role,
            &token.created_by,
            &millis(token.created_at),
        ],
    )
    .await?
    .try_get(0)?)
}

/// The columns of a token, in the order [`api_token`] reads them.
const TOKEN_COLUMNS: &str = "id, client, name, role, created_by, created_at, last_used_at";

/// A token from the columns of [`TOKEN_COLUMNS`].
fn api_token(row: &Row) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.try_get(0)?,
        client: row.try_get(1)?,
        name: row.try_get(2)?,
        role: row.try_get(3)?,
        created_by: row.try_get(4)?,
        created_at: time(row.try_get(5)?)?,
        last_used_at: optional_time(row.try_get(6)?)?,
    })
}

/// The token with this hash, marked used at `now` unless that was recorded less than a
/// minute before.
pub(super) async fn use_token(
    db: &impl GenericClient,
    hash: &str,
    now: Timestamp,
) -> Result<Option<ApiToken>> {
    let found = query_opt(
        db,
        &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = $1"),
        &[&hash],
    )
    .await?;
    let Some(token) = found.as_ref().map(api_token).transpose()? else {
        return Ok(None);
    };
    let now_ms = millis(now);
    let recent = token
        .last_used_at
        .is_some_and(|at| now_ms - millis(at) < TOKEN_USE_EVERY_MS);
    if recent {
        return Ok(Some(token));
    }
    let updated = query_opt(
        db,
        &format!(
            "UPDATE api_tokens SET last_used_at = $2 WHERE hash = $1 RETURNING {TOKEN_COLUMNS}"
        ),
        &[&hash, &now_ms],
    )
    .await?;
    updated.as_ref().map(api_token).transpose()
}

/// Tokens of one client or all, newest first (ids only grow).
pub(super) async fn tokens(db: &impl GenericClient, client: Option<&str>) -> Result<Vec<ApiToken>> {
    let rows = query(
        db,
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens
             WHERE $1::text IS NULL OR client = $1
             ORDER BY id DESC"
        ),
        &[&client],
    )
    .await?;
    rows.iter().map(api_token).collect()
}

/// Deletes the client's token `id`; `false` when the client has none with that id (another
/// client's token stays, whoever asks).
pub(super) async fn revoke_token(db: &impl GenericClient, client: &str, id: i64) -> Result<bool> {
    let deleted = execute(
        db,
        "DELETE FROM api_tokens WHERE id = $1 AND client = $2",
        &[&id, &client],
    )
    .await?;
    Ok(deleted == 1)
}

pub(super) async fn audit(db: &impl GenericClient, entry: &AuditEntry) -> Result<()> {
    execute(
        db,
        "INSERT INTO audit (at, client, actor, action, target, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &millis(entry.at),
            &entry.client,
            &entry.actor,
            &entry.action,
            &entry.target,
            &entry.detail,
        ],
    )
    .await?;
    Ok(())
}

/// Audit entries newest first, of one client or all, about one target or all.
pub(super) async fn audit_log(
    db: &impl GenericClient,
    client: Option<&str>,
    target: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    // Built from the filters that are set, so the planner sees which index fits:
    // `audit_client`, `audit_target` or `audit_at`, each ordered by time and id.
    let mut sql =
        String::from("SELECT at, client, actor, action, target, detail FROM audit WHERE true");
    let limit = big(limit);
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(client) = &client {
        args.push(client);
        sql.push_str(&format!(" AND client = ${}", args.len()));
    }
    if let Some(target) = &target {
        args.push(target);
        sql.push_str(&format!(" AND target = ${}", args.len()));
    }
    args.push(&limit);
    sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT ${}", args.len()));
    let rows = query(db, &sql, &args).await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        entries.push(AuditEntry {
            at: time(row.try_get(0)?)?,
            client: row.try_get(1)?,
            actor: row.try_get(2)?,
            action: row.try_get(3)?,
            target: row.try_get(4)?,
            detail: row.try_get(5)?,
        });
    }
    Ok(entries)
}
