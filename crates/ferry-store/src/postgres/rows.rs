//! Reading the rows of passengers, shared by the queue's writes and the browser's reads.

use std::collections::HashMap;

use bytes::Bytes;
use deadpool_postgres::GenericClient;
use ferry_core::{Attachment, Body, Metadata, PassengerId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::query;
use crate::convert::{metadata_from_json, passenger_state, small_count, step_kind, step_state};
use crate::journey::StoredStep;
use crate::{PassengerState, Result};

/// The queue row of a passenger, as the writes need it.
pub(super) struct PassengerRow {
    pub seq: i64,
    pub client: String,
    pub pipeline: String,
    pub state: PassengerState,
    /// When the open work is due; for `in_flight`, when the lease expires.
    pub due_at: i64,
    pub lease_token: Option<i64>,
}

/// The columns of a step, in the order [`stored_step`] reads them.
pub(super) const STEP_COLUMNS: &str =
    "idx, kind, name, state, attempts, next_try_at, last_error, done_at, result";

/// A step from the nine columns of [`STEP_COLUMNS`] starting at `first`.
pub(super) fn stored_step(row: &Row, first: usize) -> Result<StoredStep> {
    Ok(StoredStep {
        idx: small_count(row.try_get::<_, i32>(first)?.into())?,
        kind: step_kind(row.try_get(first + 1)?)?,
        name: row.try_get(first + 2)?,
        state: step_state(row.try_get(first + 3)?)?,
        attempts: small_count(row.try_get::<_, i32>(first + 4)?.into())?,
        next_try_at: row.try_get(first + 5)?,
        last_error: row.try_get(first + 6)?,
        done_at: row.try_get(first + 7)?,
        result: row.try_get(first + 8)?,
        changed: false,
    })
}

/// The steps of the passengers `seqs`, each in order.
pub(super) async fn load_steps(
    db: &impl GenericClient,
    seqs: &[i64],
) -> Result<HashMap<i64, Vec<StoredStep>>> {
    let rows = query(
        db,
        &format!("SELECT seq, {STEP_COLUMNS} FROM steps WHERE seq = ANY($1) ORDER BY seq, idx"),
        &[&seqs],
    )
    .await?;
    let mut steps: HashMap<i64, Vec<StoredStep>> = HashMap::with_capacity(seqs.len());
    for row in &rows {
        steps
            .entry(row.try_get(0)?)
            .or_default()
            .push(stored_step(row, 1)?);
    }
    Ok(steps)
}

/// Locks the queue rows of the passengers `ids` that exist (in `seq` order, so two writers
/// never wait for each other in a circle) and loads them with their steps: what `finish`,
/// `release` and a person's actions need. The steps are read after the lock is held, so they
/// are the ones the last writer of the passenger committed.
pub(super) async fn lock_with_steps(
    db: &impl GenericClient,
    ids: &[PassengerId],
) -> Result<HashMap<PassengerId, (PassengerRow, Vec<StoredStep>)>> {
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = query(
        db,
        "SELECT p.id, q.seq, q.client, q.pipeline, q.state, q.due_at, q.lease_token
         FROM passengers p JOIN queue q ON q.seq = p.seq
         WHERE p.id = ANY($1) ORDER BY q.seq FOR NO KEY UPDATE OF q",
        &[&uuids],
    )
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    for row in &rows {
        let passenger = PassengerRow {
            seq: row.try_get(1)?,
            client: row.try_get(2)?,
            pipeline: row.try_get(3)?,
            state: passenger_state(row.try_get(4)?)?,
            due_at: row.try_get(5)?,
            lease_token: row.try_get(6)?,
        };
        seqs.push(passenger.seq);
        found.insert(PassengerId(row.try_get(0)?), passenger);
    }
    let mut steps = load_steps(db, &seqs).await?;
    Ok(found
        .into_iter()
        .map(|(id, passenger)| {
            let steps = steps.remove(&passenger.seq).unwrap_or_default();
            (id, (passenger, steps))
        })
        .collect())
}

/// [`lock_with_steps`] of one passenger.
pub(super) async fn lock_one_with_steps(
    db: &impl GenericClient,
    id: PassengerId,
) -> Result<Option<(PassengerRow, Vec<StoredStep>)>> {
    Ok(lock_with_steps(db, &[id]).await?.remove(&id))
}

/// The attachments of the passengers `seqs`, each in order.
pub(super) async fn load_attachments(
    db: &impl GenericClient,
    seqs: &[i64],
) -> Result<HashMap<i64, Vec<Attachment>>> {
    let rows = query(
        db,
        "SELECT seq, name, media_type, content FROM attachments
         WHERE seq = ANY($1) ORDER BY seq, idx",
        &[&seqs],
    )
    .await?;
    let mut attachments: HashMap<i64, Vec<Attachment>> = HashMap::new();
    for row in &rows {
        attachments
            .entry(row.try_get(0)?)
            .or_default()
            .push(Attachment {
                name: row.try_get(1)?,
                media_type: row.try_get(2)?,
                content: Bytes::from(row.try_get::<_, Vec<u8>>(3)?),
            });
    }
    Ok(attachments)
}

/// Metadata and body from three columns: JSON metadata, media type, content.
pub(super) fn content(row: &Row, first: usize) -> Result<(Metadata, Body)> {
    let metadata = metadata_from_json(row.try_get(first)?)?;
    let body = Body {
        media_type: row.try_get(first + 1)?,
        data: Bytes::from(row.try_get::<_, Vec<u8>>(first + 2)?),
    };
    Ok((metadata, body))
}
