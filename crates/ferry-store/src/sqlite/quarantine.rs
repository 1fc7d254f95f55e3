//! Input items a puller could not take, kept out of later pulls until a person acts.

use ferry_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::convert::{millis, time};
use crate::{PipelineKey, Quarantined, Result, Untakeable};

const COLUMNS: &str = "id, client, pipeline, puller, item, fingerprint, reason, first_seen, \
                       last_seen, times, discarded";

fn quarantined(row: &Row<'_>) -> Result<Quarantined> {
    Ok(Quarantined {
        id: row.get(0)?,
        client: row.get(1)?,
        pipeline: row.get(2)?,
        puller: row.get(3)?,
        item: row.get(4)?,
        fingerprint: row.get(5)?,
        reason: row.get(6)?,
        first_seen: time(row.get(7)?)?,
        last_seen: time(row.get(8)?)?,
        times: row.get::<_, i64>(9)?.max(0) as u64,
        discarded: row.get::<_, i64>(10)? != 0,
    })
}

pub(super) fn quarantine(
    conn: &Connection,
    key: &PipelineKey,
    items: &[Untakeable],
    now: Timestamp,
) -> Result<Vec<bool>> {
    let now = millis(now);
    let mut find = conn.prepare_cached(
        "SELECT fingerprint FROM quarantine
         WHERE client = ?1 AND pipeline = ?2 AND puller = ?3 AND item = ?4",
    )?;
    let mut seen_again = conn.prepare_cached(
        "UPDATE quarantine SET last_seen = ?5, times = times + 1, reason = ?6
         WHERE client = ?1 AND pipeline = ?2 AND puller = ?3 AND item = ?4",
    )?;
    // A changed item is a new one: its quarantine (and a discard) starts afresh.
    let mut put = conn.prepare_cached(
        "INSERT INTO quarantine (client, pipeline, puller, item, fingerprint, reason,
                                 first_seen, last_seen, times, discarded)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1, 0)
         ON CONFLICT (client, pipeline, puller, item) DO UPDATE SET
             fingerprint = excluded.fingerprint, reason = excluded.reason,
             first_seen = excluded.first_seen, last_seen = excluded.last_seen,
             times = 1, discarded = 0",
    )?;
    let mut new = Vec::with_capacity(items.len());
    for item in items {
        let known: Option<String> = find
            .query_row(
                params![key.client, key.pipeline, item.puller, item.item],
                |row| row.get(0),
            )
            .optional()?;
        if known.as_deref() == Some(item.fingerprint.as_str()) {
            seen_again.execute(params![
                key.client,
                key.pipeline,
                item.puller,
                item.item,
                now,
                item.reason
            ])?;
            new.push(false);
        } else {
            put.execute(params![
                key.client,
                key.pipeline,
                item.puller,
                item.item,
                item.fingerprint,
                item.reason,
                now
            ])?;
            new.push(true);
        }
    }
    Ok(new)
}

pub(super) fn list(
    conn: &Connection,
    pipeline: Option<&PipelineKey>,
    client: Option<&str>,
) -> Result<Vec<Quarantined>> {
    let mut select;
    let mut rows = match (pipeline, client) {
        (Some(key), _) => {
            select = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM quarantine WHERE client = ?1 AND pipeline = ?2 ORDER BY id"
            ))?;
            select.query(params![key.client, key.pipeline])?
        }
        (None, Some(client)) => {
            select = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM quarantine WHERE client = ?1 AND discarded = 0 ORDER BY id"
            ))?;
            select.query([client])?
        }
        (None, None) => {
            select = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM quarantine WHERE discarded = 0 ORDER BY id"
            ))?;
            select.query([])?
        }
    };
    let mut items = Vec::new();
    while let Some(row) = rows.next()? {
        items.push(quarantined(row)?);
    }
    Ok(items)
}

pub(super) fn end(
    conn: &Connection,
    id: i64,
    client: Option<&str>,
    retry: bool,
) -> Result<Option<Quarantined>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM quarantine WHERE id = ?1 AND (?2 IS NULL OR client = ?2)"
        ))?
        .query_row(params![id, client], |row| Ok(quarantined(row)))
        .optional()?
        .transpose()?;
    let Some(item) = found else {
        return Ok(None);
    };
    if retry {
        conn.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?
            .execute([id])?;
    } else {
        conn.prepare_cached("UPDATE quarantine SET discarded = 1 WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(Some(item))
}

pub(super) fn release(
    conn: &Connection,
    key: &PipelineKey,
    puller: &str,
    items: &[String],
) -> Result<()> {
    let mut delete = conn.prepare_cached(
        "DELETE FROM quarantine WHERE client = ?1 AND pipeline = ?2 AND puller = ?3 AND item = ?4",
    )?;
    for item in items {
        delete.execute(params![key.client, key.pipeline, puller, item])?;
    }
    Ok(())
}
