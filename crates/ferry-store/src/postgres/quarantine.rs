//! Input items a puller could not take, kept out of later pulls until a person acts.

use deadpool_postgres::GenericClient;
use ferry_core::Timestamp;
use tokio_postgres::Row;

use super::{execute, query, query_opt};
use crate::convert::{millis, time};
use crate::{PipelineKey, Quarantined, Result, Untakeable};

const COLUMNS: &str = "id, client, pipeline, puller, item, fingerprint, reason, first_seen, \
                       last_seen, times, discarded";

fn quarantined(row: &Row) -> Result<Quarantined> {
    Ok(Quarantined {
        id: row.try_get(0)?,
        client: row.try_get(1)?,
        pipeline: row.try_get(2)?,
        puller: row.try_get(3)?,
        item: row.try_get(4)?,
        fingerprint: row.try_get(5)?,
        reason: row.try_get(6)?,
        first_seen: time(row.try_get(7)?)?,
        last_seen: time(row.try_get(8)?)?,
        times: row.try_get::<_, i64>(9)?.max(0) as u64,
        discarded: row.try_get(10)?,
    })
}

/// Quarantines `items`; returns for each whether it is newly quarantined. An item already
/// quarantined with the same fingerprint only counts one more sighting; a changed one is a
/// new one: its quarantine (and a discard) starts afresh.
pub(super) async fn quarantine(
    db: &impl GenericClient,
    key: &PipelineKey,
    items: &[Untakeable],
    now: Timestamp,
) -> Result<Vec<bool>> {
    let now = millis(now);
    // Written in key order, so that two nodes quarantining the same items cannot each hold a
    // row the other waits for; answered in input order.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        (&items[a].puller, &items[a].item).cmp(&(&items[b].puller, &items[b].item))
    });
    let mut new = vec![false; items.len()];
    for position in order {
        let item = &items[position];
        // One statement per item decides and writes; `xmax = 0` tells an inserted row from an
        // updated one. The row lock of the upsert keeps two nodes from both counting it new.
        let row = query_opt(
            db,
            "INSERT INTO quarantine AS q (client, pipeline, puller, item, fingerprint, reason,
                                          first_seen, last_seen, times, discarded)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1, false)
             ON CONFLICT (client, pipeline, puller, item) DO UPDATE SET
                 reason = excluded.reason,
                 last_seen = excluded.last_seen,
                 times = CASE WHEN q.fingerprint = excluded.fingerprint
                              THEN q.times + 1 ELSE 1 END,
                 first_seen = CASE WHEN q.fingerprint = excluded.fingerprint
                                   THEN q.first_seen ELSE excluded.first_seen END,
                 discarded = CASE WHEN q.fingerprint = excluded.fingerprint
                                  THEN q.discarded ELSE false END,
                 fingerprint = excluded.fingerprint
             RETURNING times = 1 AND first_seen = last_seen",
            &[
                &key.client,
                &key.pipeline,
                &item.puller,
                &item.item,
                &item.fingerprint,
                &item.reason,
                &now,
            ],
        )
        .await?;
        if let Some(row) = row {
            new[position] = row.try_get(0)?;
        }
    }
    Ok(new)
}

/// Quarantined items of one pipeline (discarded ones too), or the listed ones of one client
/// or of all, oldest first.
pub(super) async fn list(
    db: &impl GenericClient,
    pipeline: Option<&PipelineKey>,
    client: Option<&str>,
) -> Result<Vec<Quarantined>> {
    let rows = match (pipeline, client) {
        (Some(key), _) => {
            query(
                db,
                &format!(
                    "SELECT {COLUMNS} FROM quarantine
                     WHERE client = $1 AND pipeline = $2 ORDER BY id"
                ),
                &[&key.client, &key.pipeline],
            )
            .await?
        }
        (None, Some(client)) => {
            query(
                db,
                &format!(
                    "SELECT {COLUMNS} FROM quarantine
                     WHERE client = $1 AND NOT discarded ORDER BY id"
                ),
                &[&client],
            )
            .await?
        }
        (None, None) => {
            query(
                db,
                &format!("SELECT {COLUMNS} FROM quarantine WHERE NOT discarded ORDER BY id"),
                &[],
            )
            .await?
        }
    };
    rows.iter().map(quarantined).collect()
}

/// Ends the quarantine of item `id` (of `client`, when given): removed when `retry`, else
/// discarded. Returns the item as it was.
pub(super) async fn end(
    db: &impl GenericClient,
    id: i64,
    client: Option<&str>,
    retry: bool,
) -> Result<Option<Quarantined>> {
    let found = query_opt(
        db,
        &format!(
            "SELECT {COLUMNS} FROM quarantine
             WHERE id = $1 AND ($2::text IS NULL OR client = $2)
             FOR UPDATE"
        ),
        &[&id, &client],
    )
    .await?;
    let Some(item) = found.as_ref().map(quarantined).transpose()? else {
        return Ok(None);
    };
    if retry {
        execute(db, "DELETE FROM quarantine WHERE id = $1", &[&id]).await?;
    } else {
        execute(
            db,
            "UPDATE quarantine SET discarded = true WHERE id = $1",
            &[&id],
        )
        .await?;
    }
    Ok(Some(item))
}

/// Ends the quarantine of `items` of a puller: they changed or are gone.
pub(super) async fn release(
    db: &impl GenericClient,
    key: &PipelineKey,
    puller: &str,
    items: &[String],
) -> Result<()> {
    execute(
        db,
        "DELETE FROM quarantine
         WHERE client = $1 AND pipeline = $2 AND puller = $3 AND item = ANY($4)",
        &[&key.client, &key.pipeline, &puller, &items],
    )
    .await?;
    Ok(())
}
