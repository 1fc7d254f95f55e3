//! What the console keeps: login sessions, API tokens and the audit log.
//!
//! Sessions and tokens are found by the SHA-256 of their secret, which the caller computes;
//! the secrets themselves never reach the store.

use ferry_core::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::convert::{millis, optional_time, time};
use crate::{ApiToken, AuditEntry, Result, Session};

pub(super) fn create_session(conn: &Connection, id_hash: &str, session: &Session) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (id_hash, client, user, csrf, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id_hash,
        session.client,
        session.user,
        session.csrf,
        millis(session.expires_at),
    ])?;
    Ok(())
}

/// The session with this hash, unless it expired by `now`.
pub(super) fn session(conn: &Connection, id_hash: &str, now: Timestamp) -> Result<Option<Session>> {
    let found = conn
        .prepare_cached(
            "SELECT client, user, csrf, expires_at FROM sessions
             WHERE id_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![id_hash, millis(now)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get::<_, i64>(3)?))
        })
        .optional()?;
    let Some((client, user, csrf, expires_at)) = found else {
        return Ok(None);
    };
    Ok(Some(Session {
        client,
        user,
        csrf,
        expires_at: time(expires_at)?,
    }))
}

pub(super) fn delete_session(conn: &Connection, id_hash: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

/// Deletes the sessions [`session`] no longer returns at `now`.
pub(super) fn purge_sessions(conn: &Connection, now: Timestamp) -> Result<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?
        .execute([millis(now)])?;
    Ok(deleted as u64)
}

/// Stores a token, never used yet; returns its id.
pub(super) fn create_token(conn: &Connection, hash: &str, token: &ApiToken) -> Result<i64> {
    let id = conn
        .prepare_cached(
            "INSERT INTO api_tokens (hash, client, name, role, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             RETURNING id",
        )?
        .query_row(
            params![
                hash,
                token.client,
                token.name,
                token.role,
                token.created_by,
                millis(token.created_at),
            ],
            |row| row.get(0),
        )?;
    Ok(id)
}

/// The columns of a token, in the order [`api_token`] reads them.
const TOKEN_COLUMNS: &str = "id, client, name, role, created_by, created_at, last_used_at";

/// A token from the columns of [`TOKEN_COLUMNS`].
fn api_token(row: &Row<'_>) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.get(0)?,
        client: row.get(1)?,
        name: row.get(2)?,
        role: row.get(3)?,
        created_by: row.get(4)?,
        created_at: time(row.get(5)?)?,
        last_used_at: optional_time(row.get(6)?)?,
    })
}

/// The token with this hash, marked used at `now`.
/// The token with this hash, read only.
pub(super) fn find_token(conn: &Connection, hash: &str) -> Result<Option<ApiToken>> {
    let mut select = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?1"
    ))?;
    let mut rows = select.query([hash])?;
    match rows.next()? {
        Some(row) => Ok(Some(api_token(row)?)),
        None => Ok(None),
    }
}

pub(super) fn use_token(conn: &Connection, hash: &str, now: Timestamp) -> Result<Option<ApiToken>> {
    let mut update = conn.prepare_cached(&format!(
        "UPDATE api_tokens SET last_used_at = ?2 WHERE hash = ?1 RETURNING {TOKEN_COLUMNS}"
    ))?;
    let mut rows = update.query(params![hash, millis(now)])?;
    match rows.next()? {
        Some(row) => Ok(Some(api_token(row)?)),
        None => Ok(None),
    }
}

/// Tokens of one client or all, newest first.
pub(super) fn tokens(conn: &Connection, client: Option<&str>) -> Result<Vec<ApiToken>> {
    // Ids grow with every token (AUTOINCREMENT), so the newest has the largest.
    let mut select = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens
         WHERE (?1 IS NULL OR client = ?1)
         ORDER BY id DESC"
    ))?;
    let mut rows = select.query([client])?;
    let mut tokens = Vec::new();
    while let Some(row) = rows.next()? {
        tokens.push(api_token(row)?);
    }
    Ok(tokens)
}

/// Deletes the client's token `id`; `false` when the client has none with that id (another
/// client's token stays, whoever asks).
pub(super) fn revoke_token(conn: &Connection, client: &str, id: i64) -> Result<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM api_tokens WHERE id = ?1 AND client = ?2")?
        .execute(params![id, client])?;
    Ok(deleted == 1)
}

pub(super) fn audit(conn: &Connection, entry: &AuditEntry) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, client, actor, action, target, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        millis(entry.at),
        entry.client,
        entry.actor,
        entry.action,
        entry.target,
        entry.detail,
    ])?;
    Ok(())
}

/// Audit entries newest first, of one client or all, about one target or all.
pub(super) fn audit_log(
    conn: &Connection,
    client: Option<&str>,
    target: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditEntry>> {
    // Built from the filters that are set, so the planner sees which index fits:
    // `audit_client`, `audit_target` or `audit_at`, each ordered by time (and id).
    let mut sql =
        String::from("SELECT at, client, actor, action, target, detail FROM audit WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(client) = client {
        args.push(Value::Text(client.to_owned()));
        sql.push_str(&format!(" AND client = ?{}", args.len()));
    }
    if let Some(target) = target {
        args.push(Value::Text(target.to_owned()));
        sql.push_str(&format!(" AND target = ?{}", args.len()));
    }
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT ?{}", args.len()));

    let mut select = conn.prepare_cached(&sql)?;
    let mut rows = select.query(params_from_iter(args))?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(AuditEntry {
            at: time(row.get(0)?)?,
            client: row.get(1)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            detail: row.get(5)?,
        });
    }
    Ok(entries)
}
