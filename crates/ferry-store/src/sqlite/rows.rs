//! Reading the rows of one passenger, shared by the queue's writes and the browser's reads.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;

use bytes::Bytes;
use ferry_core::{Attachment, Body, Metadata, PassengerId};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Row};

use super::convert::{
    id_bytes, id_from_bytes, metadata_from_json, passenger_state, small_count, step_kind,
    step_state, text,
};
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

/// The steps of a passenger in order.
pub(super) fn load_steps(conn: &Connection, seq: i64) -> Result<Vec<StoredStep>> {
    let mut select = conn.prepare_cached(
        "SELECT idx, kind, name, state, attempts, next_try_at, last_error, done_at, result
         FROM steps WHERE seq = ?1 ORDER BY idx",
    )?;
    let mut rows = select.query([seq])?;
    let mut steps = Vec::new();
    while let Some(row) = rows.next()? {
        steps.push(stored_step(row, 0)?);
    }
    Ok(steps)
}

/// A step from nine columns starting at `first`: idx, kind, name, state, attempts,
/// next_try_at, last_error, done_at, result.
pub(super) fn stored_step(row: &Row<'_>, first: usize) -> Result<StoredStep> {
    Ok(StoredStep {
        idx: small_count(row.get(first)?)?,
        kind: step_kind(text(row, first + 1)?)?,
        name: row.get(first + 2)?,
        state: step_state(text(row, first + 3)?)?,
        attempts: small_count(row.get(first + 4)?)?,
        next_try_at: row.get(first + 5)?,
        last_error: row.get(first + 6)?,
        done_at: row.get(first + 7)?,
        result: row.get(first + 8)?,
        changed: false,
    })
}

/// The queue rows of the passengers `ids` that exist, each with its steps, in one query:
/// what `finish` and `release` need of a whole batch of reports.
pub(super) fn find_with_steps(
    conn: &Connection,
    ids: impl Iterator<Item = PassengerId>,
) -> Result<HashMap<PassengerId, (PassengerRow, Vec<StoredStep>)>> {
    let list = ids_array(ids);
    let mut select = conn.prepare_cached(
        "SELECT p.id, p.seq, p.client, p.pipeline, p.state, p.due_at, p.lease_token,
                s.idx, s.kind, s.name, s.state, s.attempts, s.next_try_at, s.last_error,
                s.done_at, s.result
         FROM passengers p LEFT JOIN steps s ON s.seq = p.seq
         WHERE p.id IN rarray(?1)
         ORDER BY p.seq, s.idx",
    )?;
    let mut rows = select.query([&list])?;
    let mut found: HashMap<PassengerId, (PassengerRow, Vec<StoredStep>)> = HashMap::new();
    while let Some(row) = rows.next()? {
        let id = id_from_bytes(row.get(0)?);
        let (_, steps) = match found.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert((
                PassengerRow {
                    seq: row.get(1)?,
                    client: row.get(2)?,
                    pipeline: row.get(3)?,
                    state: passenger_state(text(row, 4)?)?,
                    due_at: row.get(5)?,
                    lease_token: row.get(6)?,
                },
                Vec::new(),
            )),
        };
        // A passenger without steps comes back as one row of NULL step columns.
        if row.get_ref(7)? != ValueRef::Null {
            steps.push(stored_step(row, 7)?);
        }
    }
    Ok(found)
}

/// Passenger ids as the blobs the store keeps, for `IN rarray(?)`.
pub(super) fn ids_array(ids: impl Iterator<Item = PassengerId>) -> Rc<Vec<Value>> {
    Rc::new(ids.map(|id| Value::Blob(id_bytes(id).to_vec())).collect())
}

/// The queue row of the passenger `id` and its steps.
pub(super) fn find_one_with_steps(
    conn: &Connection,
    id: PassengerId,
) -> Result<Option<(PassengerRow, Vec<StoredStep>)>> {
    Ok(find_with_steps(conn, std::iter::once(id))?.remove(&id))
}

/// The attachments of a passenger in order.
pub(super) fn load_attachments(conn: &Connection, seq: i64) -> Result<Vec<Attachment>> {
    let mut select = conn.prepare_cached(
        "SELECT name, media_type, content FROM attachments WHERE seq = ?1 ORDER BY idx",
    )?;
    let mut rows = select.query([seq])?;
    let mut attachments = Vec::new();
    while let Some(row) = rows.next()? {
        attachments.push(Attachment {
            name: row.get(0)?,
            media_type: row.get(1)?,
            content: Bytes::from(row.get::<_, Vec<u8>>(2)?),
        });
    }
    Ok(attachments)
}

/// Metadata and body from three columns: JSON metadata, media type, content.
pub(super) fn content(row: &Row<'_>, first: usize) -> Result<(Metadata, Body)> {
    let metadata = metadata_from_json(row.get(first)?)?;
    let body = Body {
        media_type: row.get(first + 1)?,
        data: Bytes::from(row.get::<_, Vec<u8>>(first + 2)?),
    };
    Ok((metadata, body))
}
