//! Writing the queue: seat, lease, finish, release, retry, discard, skip a step, replay, purge.
//!
//! Each function runs inside the one transaction its trait call opened, and keeps the
//! `queue_counts` table in step with every state it changes.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use ferry_core::config::StepDef;
use ferry_core::{Passenger, PassengerId, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, params};
use tracing::warn;

use super::convert::{
    duration_millis, id_bytes, id_from_bytes, metadata_json, millis, passenger_state, text, time,
};
use super::nodes;
use super::rows::{self, PassengerRow, ids_array};
use crate::counts::CountChanges;
use crate::journey::{self, StoredStep, UnknownStep};
use crate::{
    Abandoned, Finished, LeaseToken, Leased, NodeId, PassengerState, PipelineKey, Result,
    SeatResult, StateCounts, StepState, StepStatus, StoreError,
};

/// A lease stops taking passengers once their bodies add up to this many bytes (it always
/// takes one), so that a worker holds a bounded amount in memory whatever the batch size:
/// 500 record batches of 10,000 rows would otherwise be 600 MB.
const LEASE_BYTES: i64 = 32 << 20;

/// Writes pulled passengers with all their steps pending; duplicates are skipped.
pub(super) fn seat(
    conn: &Connection,
    key: &PipelineKey,
    version: &str,
    steps: &[StepDef],
    passengers: &[Passenger],
    now: Timestamp,
) -> Result<Vec<SeatResult>> {
    let now = millis(now);
    let mut results = Vec::with_capacity(passengers.len());
    let mut seated = Vec::with_capacity(passengers.len());
    for passenger in passengers {
        match insert_passenger(conn, key, version, passenger, now)? {
            Some(seq) => {
                results.push(SeatResult::Seated);
                seated.push(seq);
            }
            None => results.push(SeatResult::Duplicate),
        }
    }
    insert_steps(conn, &seated, steps)?;

    let mut counts = CountChanges::default();
    counts.add(
        &key.client,
        &key.pipeline,
        PassengerState::Pending,
        seated.len() as i64,
    );
    write_counts(conn, counts)?;
    Ok(results)
}

/// Writes one passenger, its payload and its attachments, pending; `None` when the queue
/// already holds its de-duplication key (or its id). Its steps are written by the caller.
fn insert_passenger(
    conn: &Connection,
    key: &PipelineKey,
    version: &str,
    passenger: &Passenger,
    now: i64,
) -> Result<Option<i64>> {
    // ON CONFLICT without a target covers both the de-duplication key and the id: either way
    // the passenger is already in the queue. A duplicate inside the batch conflicts with the
    // row its twin inserted a moment earlier in this same transaction.
    let mut insert_passenger = conn.prepare_cached(
        "INSERT INTO passengers
             (id, client, pipeline, source_system, external_id, state, due_at, created_at,
              updated_at, parent)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6, ?7)
         ON CONFLICT DO NOTHING",
    )?;
    // No RETURNING: SQLite materialises returned rows in a temporary table, which costs more
    // than asking for the rowid afterwards.
    let inserted = insert_passenger.execute(params![
        id_bytes(passenger.id),
        key.client,
        key.pipeline,
        passenger.source_system,
        passenger.external_id,
        now,
        passenger.parent.map(id_bytes),
    ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let seq = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO payloads (seq, version, metadata, media_type, body, attachments)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        seq,
        version,
        metadata_json(&passenger.metadata)?,
        passenger.body.media_type,
        &passenger.body.data[..],
        passenger.attachments.len() as i64,
    ])?;
    let mut insert_attachment = conn.prepare_cached(
        "INSERT INTO attachments (seq, idx, name, media_type, content)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (idx, attachment) in passenger.attachments.iter().enumerate() {
        insert_attachment.execute(params![
            seq,
            idx as i64,
            attachment.name,
            attachment.media_type,
            &attachment.content[..],
        ])?;
    }
    Ok(Some(seq))
}

/// Seats the children a processor split a passenger into: they carry on after step `after`
/// with the parent's steps and definition version. Children already seated (a split repeated
/// after a crash) are skipped by the de-duplication key. Returns how many were seated.
fn seat_children(
    conn: &Connection,
    parent: &PassengerRow,
    after: u32,
    children: &[Passenger],
    now: i64,
) -> Result<i64> {
    let version: String = conn
        .prepare_cached("SELECT version FROM payloads WHERE seq = ?1")?
        .query_row([parent.seq], |row| row.get(0))?;
    let key = PipelineKey::new(&parent.client, &parent.pipeline);
    let mut copy_steps = conn.prepare_cached(
        "INSERT INTO steps (seq, idx, kind, name, state, done_at)
         SELECT ?1, idx, kind, name,
                CASE WHEN idx <= ?3 THEN 'done' ELSE 'pending' END,
                CASE WHEN idx <= ?3 THEN ?4 END
         FROM steps WHERE seq = ?2",
    )?;
    let mut seated = 0;
    for child in children {
        if let Some(seq) = insert_passenger(conn, &key, &version, child, now)? {
            copy_steps.execute(params![seq, parent.seq, after, now])?;
            seated += 1;
        }
    }
    Ok(seated)
}

/// Gives every passenger in `seqs` the steps `steps`, all pending, in one statement for the
/// whole batch: the cross product of the passengers and a JSON array of the steps.
fn insert_steps(conn: &Connection, seqs: &[i64], steps: &[StepDef]) -> Result<()> {
    if seqs.is_empty() || steps.is_empty() {
        return Ok(());
    }
    let defs: Vec<serde_json::Value> = steps
        .iter()
        .map(|step| serde_json::json!([step.kind.as_str(), step.name]))
        .collect();
    conn.prepare_cached(
        "INSERT INTO steps (seq, idx, kind, name, state)
         SELECT passenger.value, step.key, step.value ->> 0, step.value ->> 1, 'pending'
         FROM rarray(?1) AS passenger, json_each(?2) AS step",
    )?
    .execute(params![
        numbers(seqs.iter().copied()),
        serde_json::Value::Array(defs).to_string()
    ])?;
    Ok(())
}

/// Integers for `IN rarray(?)`: one statement for a whole batch instead of one per passenger,
/// with nothing to format or parse on the way.
pub(super) fn numbers(numbers: impl Iterator<Item = i64>) -> Rc<Vec<Value>> {
    Rc::new(numbers.map(Value::Integer).collect())
}

/// Integers as a JSON array, for `IN (SELECT value FROM json_each(?))` where the list is also
/// kept as text (the search index's candidates).
fn json_list(numbers: impl Iterator<Item = i64>) -> String {
    let mut list = String::from("[");
    for (n, number) in numbers.enumerate() {
        if n > 0 {
            list.push(',');
        }
        list.push_str(&number.to_string());
    }
    list.push(']');
    list
}

/// Claims up to `max` due passengers of the pipeline, oldest due first, for one lease. Only
/// the queue rows are touched here, under the writer; their content is loaded afterwards by
/// [`load_leased`] on a reader, so the writer is free again sooner.
pub(super) fn claim(
    conn: &Connection,
    key: &PipelineKey,
    max: usize,
    lease_for: Duration,
    node: Option<NodeId>,
    now: Timestamp,
) -> Result<Claim> {
    let now_ms = millis(now);
    let until = now_ms.saturating_add(duration_millis(lease_for));

    // The state condition repeats the `passengers_due` index's word for word: SQLite uses a
    // partial index only when the query visibly implies its WHERE clause. An expired lease is
    // due like any other work: its `due_at` is the lease's end.
    let mut select_due = conn.prepare_cached(
        "SELECT seq, state, id, source_system, external_id, created_at, parent,
                (SELECT length(body) + coalesce(length(processed_body), 0) FROM payloads
                 WHERE payloads.seq = passengers.seq),
                alone
         FROM passengers
         WHERE client = ?1 AND pipeline = ?2
           AND (state = 'pending' OR state = 'failed' OR state = 'in_flight')
           AND due_at <= ?3
         ORDER BY due_at, seq
         LIMIT ?4",
    )?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let mut rows = select_due.query(params![key.client, key.pipeline, now_ms, limit])?;
    let mut due = Vec::new();
    let mut counts = CountChanges::default();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        if bytes >= LEASE_BYTES {
            break;
        }
        // A passenger that was in flight when a process died travels alone: should it kill
        // the process again, no other passenger's attempt is spent with it (issue 12).
        let alone = row.get::<_, i64>(8)? != 0;
        if alone && !due.is_empty() {
            break;
        }
        bytes += row.get::<_, Option<i64>>(7)?.unwrap_or(0);
        let previous = passenger_state(text(row, 1)?)?;
        counts.change(
            &key.client,
            &key.pipeline,
            previous,
            PassengerState::InFlight,
        );
        due.push(DuePassenger {
            seq: row.get(0)?,
            id: id_from_bytes(row.get(2)?),
            source_system: row.get(3)?,
            external_id: row.get(4)?,
            created_at: time(row.get(5)?)?,
            parent: row.get::<_, Option<[u8; 16]>>(6)?.map(id_from_bytes),
        });
        if alone {
            break;
        }
    }
    drop(rows);
    if due.is_empty() {
        return Ok(Claim {
            token: 0,
            passengers: due,
        });
    }

    // One token for the whole lease: a report is matched by passenger and token, and a later
    // lease of any of these passengers draws a new token, so the old one stops matching.
    let token: LeaseToken = rand::random();
    conn.prepare_cached(
        "UPDATE passengers
         SET state = 'in_flight', due_at = ?2, lease_token = ?3, updated_at = ?4, alone = 0,
             lease_node = ?5
         WHERE seq IN rarray(?1)",
    )?
    .execute(params![
        numbers(due.iter().map(|d| d.seq)),
        until,
        token,
        now_ms,
        node
    ])?;
    write_counts(conn, counts)?;
    Ok(Claim {
        token,
        passengers: due,
    })
}

/// How many of `ids` are in each state.
pub(super) fn progress(conn: &Connection, ids: &[PassengerId]) -> Result<StateCounts> {
    let list = ids_array(ids.iter().copied());
    let mut select = conn.prepare_cached(
        "SELECT state, count(*) FROM passengers WHERE id IN rarray(?1) GROUP BY state",
    )?;
    let mut rows = select.query([list])?;
    let mut counts = StateCounts::new();
    while let Some(row) = rows.next()? {
        let count: i64 = row.get(1)?;
        counts.insert(
            passenger_state(text(row, 0)?)?,
            u64::try_from(count).unwrap_or(0),
        );
    }
    Ok(counts)
}

/// Passengers claimed for one lease.
pub(super) struct Claim {
    pub token: LeaseToken,
    pub passengers: Vec<DuePassenger>,
}

/// Loads what workers need of claimed passengers: content, attachments, steps.
pub(super) fn load_leased(
    conn: &Connection,
    key: &PipelineKey,
    claim: Claim,
) -> Result<Vec<Leased>> {
    let seqs = numbers(claim.passengers.iter().map(|d| d.seq));
    // The processors' output replaces the original when there is one: a passenger whose
    // processors ran in an earlier lease goes on from where they left it.
    let mut select_payloads = conn.prepare_cached(
        "SELECT seq,
                CASE WHEN processed_media_type IS NULL THEN metadata ELSE processed_metadata END,
                coalesce(processed_media_type, media_type),
                CASE WHEN processed_media_type IS NULL THEN body ELSE processed_body END,
                attachments
         FROM payloads WHERE seq IN rarray(?1)",
    )?;
    let mut payloads = HashMap::with_capacity(claim.passengers.len());
    let mut rows = select_payloads.query([&seqs])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let content = rows::content(row, 1)?;
        let attachment_count: i64 = row.get(4)?;
        payloads.insert(seq, (content, attachment_count));
    }
    drop(rows);

    let mut steps: HashMap<i64, Vec<StepStatus>> = HashMap::with_capacity(claim.passengers.len());
    let mut select_steps = conn.prepare_cached(
        "SELECT seq, idx, kind, name, state, attempts, next_try_at, last_error, done_at, result
         FROM steps WHERE seq IN rarray(?1)
         ORDER BY seq, idx",
    )?;
    let mut rows = select_steps.query([&seqs])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let step = rows::stored_step(row, 1)?;
        steps
            .entry(seq)
            .or_default()
            .push(journey::step_status(step, true)?);
    }
    drop(rows);

    let mut leased = Vec::with_capacity(claim.passengers.len());
    for due in claim.passengers {
        let Some(((metadata, body), attachment_count)) = payloads.remove(&due.seq) else {
            // Discarded and purged by someone between the claim and this read: gone.
            continue;
        };
        let attachments = if attachment_count > 0 {
            rows::load_attachments(conn, due.seq)?
        } else {
            Vec::new()
        };
        leased.push(Leased {
            token: claim.token,
            passenger: Passenger {
                id: due.id,
                client: key.client.clone(),
                pipeline: key.pipeline.clone(),
                source_system: due.source_system,
                external_id: due.external_id,
                metadata,
                body,
                attachments,
                created_at: due.created_at,
                parent: due.parent,
            },
            steps: steps.remove(&due.seq).unwrap_or_default(),
        });
    }
    Ok(leased)
}

/// A passenger claimed for a lease.
pub(super) struct DuePassenger {
    seq: i64,
    id: PassengerId,
    source_system: String,
    external_id: String,
    created_at: Timestamp,
    parent: Option<PassengerId>,
}

/// Applies the workers' reports whose lease is still theirs. Returns how many were applied.
pub(super) fn finish(conn: &Connection, reports: &[Finished], now: Timestamp) -> Result<usize> {
    let now = millis(now);
    let mut insert_attempt = conn.prepare_cached(
        "INSERT INTO attempts (seq, idx, attempt, at, error) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut store_processed = conn.prepare_cached(
        "UPDATE payloads
         SET processed_metadata = ?2, processed_media_type = ?3, processed_body = ?4
         WHERE seq = ?1",
    )?;

    let mut found = rows::find_with_steps(conn, reports.iter().map(|report| report.id))?;
    let mut updates = Updates::default();
    let mut applied = 0;
    for report in reports {
        let Some((passenger, steps)) = found.get_mut(&report.id) else {
            continue;
        };
        if !holds_lease(passenger, report.token) {
            // The lease expired and the passenger went to another worker (or a person acted
            // on it); what this worker did is superseded.
            continue;
        }
        let mut last_error = None;
        for (idx, change) in &report.steps {
            match journey::apply_change(steps, *idx, change, now) {
                Ok(None) => {}
                Ok(Some(failure)) => {
                    insert_attempt.execute(params![
                        passenger.seq,
                        failure.idx,
                        failure.attempt,
                        now,
                        failure.error,
                    ])?;
                    last_error = Some(failure.error);
                }
                Err(UnknownStep(idx)) => {
                    warn!(
                        passenger = %report.id,
                        step = idx,
                        "report names a step the passenger does not have; ignored"
                    );
                }
            }
        }
        if let Some((metadata, body)) = &report.processed {
            store_processed.execute(params![
                passenger.seq,
                metadata_json(metadata)?,
                body.media_type,
                &body.data[..],
            ])?;
        }
        if let Some(split) = &report.split {
            let seated = seat_children(conn, passenger, split.after, &split.children, now)?;
            updates.counts.add(
                &passenger.client,
                &passenger.pipeline,
                PassengerState::Pending,
                seated,
            );
        }
        updates.steps(passenger.seq, steps);
        let (state, due_at) = journey::derive(steps, now);
        updates.settle(passenger, state, due_at, last_error);
        applied += 1;
    }
    updates.write(conn, now)?;
    Ok(applied)
}

/// Gives leased passengers back, due now.
pub(super) fn release(
    conn: &Connection,
    leases: &[(PassengerId, LeaseToken)],
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let mut found = rows::find_with_steps(conn, leases.iter().map(|(id, _)| *id))?;
    let mut updates = Updates::default();
    for (id, token) in leases {
        let Some((passenger, steps)) = found.get_mut(id) else {
            continue;
        };
        if !holds_lease(passenger, *token) {
            continue;
        }
        let (state, _) = journey::derive(steps, now);
        updates.settle(passenger, state, now, None);
    }
    updates.write(conn, now)
}

/// The in-flight passengers of nodes that no longer run, with their steps.
pub(super) fn abandoned_leases(
    conn: &Connection,
    dead_before: Timestamp,
    own: Option<NodeId>,
) -> Result<Vec<Abandoned>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT id, lease_token, client, pipeline FROM passengers
         WHERE state = 'in_flight' AND {}",
        nodes::dead("passengers.lease_node", 1, 2)
    ))?;
    let leases = statement
        .query_map(params![millis(dead_before), own], |row| {
            Ok((
                id_from_bytes(row.get(0)?),
                row.get::<_, LeaseToken>(1)?,
                PipelineKey::new(row.get::<_, String>(2)?, row.get::<_, String>(3)?),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut found = rows::find_with_steps(conn, leases.iter().map(|(id, _, _)| *id))?;
    let mut abandoned = Vec::with_capacity(leases.len());
    for (id, token, pipeline) in leases {
        let Some((_, steps)) = found.remove(&id) else {
            continue;
        };
        let steps = steps
            .into_iter()
            .map(|step| journey::step_status(step, true))
            .collect::<Result<Vec<_>>>()?;
        abandoned.push(Abandoned {
            pipeline,
            id,
            token,
            steps,
        });
    }
    Ok(abandoned)
}

/// [`finish`], then marks the passengers to be leased alone (see [`claim`]).
pub(super) fn record_interrupted(
    conn: &Connection,
    reports: &[Finished],
    now: Timestamp,
) -> Result<usize> {
    let applied = finish(conn, reports, now)?;
    let mut mark = conn.prepare_cached("UPDATE passengers SET alone = 1 WHERE id = ?1")?;
    for report in reports {
        mark.execute([id_bytes(report.id)])?;
    }
    Ok(applied)
}

/// Releases the leases of nodes that no longer run, as [`release`] would for their holder.
pub(super) fn recover_leases(
    conn: &Connection,
    dead_before: Timestamp,
    own: Option<NodeId>,
    now: Timestamp,
) -> Result<u64> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT id, lease_token FROM passengers WHERE state = 'in_flight' AND {}",
        nodes::dead("passengers.lease_node", 1, 2)
    ))?;
    let leases = statement
        .query_map(params![millis(dead_before), own], |row| {
            Ok((id_from_bytes(row.get(0)?), row.get::<_, LeaseToken>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    release(conn, &leases, now)?;
    Ok(leases.len() as u64)
}

/// Makes the failed and dead steps of a passenger pending again, with fresh attempts.
pub(super) fn retry(conn: &Connection, id: PassengerId, now: Timestamp) -> Result<()> {
    let now = millis(now);
    let (mut passenger, mut steps) =
        rows::find_one_with_steps(conn, id)?.ok_or(StoreError::NotFound(id))?;
    if !journey::reset_for_retry(&mut steps) {
        return Ok(());
    }
    let mut updates = Updates::default();
    updates.steps(passenger.seq, &mut steps);
    if passenger.state != PassengerState::InFlight {
        let (state, due_at) = journey::derive(&steps, now);
        updates.settle(&mut passenger, state, due_at, None);
    }
    // Else a worker holds the lease; its report settles the passenger, and the reset steps
    // bring it back for another lease if that worker did not run them.
    updates.write(conn, now)
}

/// Marks a passenger discarded; its unfinished steps are skipped.
pub(super) fn discard(conn: &Connection, id: PassengerId, now: Timestamp) -> Result<()> {
    let now = millis(now);
    let (mut passenger, mut steps) =
        rows::find_one_with_steps(conn, id)?.ok_or(StoreError::NotFound(id))?;
    if passenger.state == PassengerState::Discarded {
        // Discarding again must not restart the retention clock.
        return Ok(());
    }
    journey::skip_unfinished(&mut steps);
    let mut updates = Updates::default();
    updates.steps(passenger.seq, &mut steps);
    updates.settle(&mut passenger, PassengerState::Discarded, now, None);
    updates.write(conn, now)
}

/// Marks one pending, failed or dead step of a passenger skipped, and settles the passenger
/// in the state its steps then add up to.
pub(super) fn skip_step(
    conn: &Connection,
    id: PassengerId,
    idx: u32,
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let (mut passenger, mut steps) =
        rows::find_one_with_steps(conn, id)?.ok_or(StoreError::NotFound(id))?;
    let leased = passenger.state == PassengerState::InFlight && passenger.due_at > now;
    journey::skip_by_person(&mut steps, id, idx, leased)?;
    let mut updates = Updates::default();
    updates.steps(passenger.seq, &mut steps);
    let (state, due_at) = journey::derive(&steps, now);
    updates.settle(&mut passenger, state, due_at, None);
    updates.write(conn, now)
}

/// Starts a passenger's journey again with `steps`, from its original content.
pub(super) fn replay(
    conn: &Connection,
    id: PassengerId,
    steps: &[StepDef],
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let (passenger, _) = rows::find_one_with_steps(conn, id)?.ok_or(StoreError::NotFound(id))?;
    conn.prepare_cached("DELETE FROM steps WHERE seq = ?1")?
        .execute([passenger.seq])?;
    insert_steps(conn, &[passenger.seq], steps)?;
    conn.prepare_cached(
        "UPDATE payloads
         SET processed_metadata = NULL, processed_media_type = NULL, processed_body = NULL
         WHERE seq = ?1",
    )?
    .execute([passenger.seq])?;
    // The attempt history stays: it tells what happened before the replay. A fresh journey
    // has no error of its own yet.
    conn.prepare_cached(
        "UPDATE passengers
         SET state = 'pending', due_at = ?2, lease_token = NULL, lease_node = NULL,
             updated_at = ?2,
             completed_at = NULL, last_error = NULL
         WHERE seq = ?1",
    )?
    .execute(params![passenger.seq, now])?;
    let mut counts = CountChanges::default();
    let pending = PassengerState::Pending;
    counts.change(
        &passenger.client,
        &passenger.pipeline,
        passenger.state,
        pending,
    );
    write_counts(conn, counts)
}

/// Deletes up to `limit` purgeable passengers of the client finished before `before`, with
/// everything that belongs to them. Returns how many it deleted.
pub(super) fn purge_chunk(
    conn: &Connection,
    client: &str,
    before: Timestamp,
    limit: usize,
) -> Result<usize> {
    // The state condition repeats the `passengers_purge` index's word for word, so the index
    // is used; it is also what guarantees that no open or dead passenger is ever deleted.
    let mut select = conn.prepare_cached(
        "SELECT seq, pipeline, state FROM passengers
         WHERE client = ?1
           AND (state = 'complete' OR state = 'filtered' OR state = 'discarded')
           AND completed_at < ?2
         LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut victims = Vec::new();
    let mut rows = select.query(params![client, millis(before), limit])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let pipeline: String = row.get(1)?;
        victims.push((seq, pipeline, passenger_state(text(row, 2)?)?));
    }
    drop(rows);

    let seqs = json_list(victims.iter().map(|(seq, _, _)| *seq));
    for statement in [
        "DELETE FROM steps WHERE seq IN (SELECT value FROM json_each(?1))",
        "DELETE FROM attempts WHERE seq IN (SELECT value FROM json_each(?1))",
        "DELETE FROM attachments WHERE seq IN (SELECT value FROM json_each(?1))",
        "DELETE FROM payloads WHERE seq IN (SELECT value FROM json_each(?1))",
        "DELETE FROM passengers WHERE seq IN (SELECT value FROM json_each(?1))",
    ] {
        conn.prepare_cached(statement)?.execute([&seqs])?;
    }
    super::search::forget(conn, &seqs)?;
    let mut counts = CountChanges::default();
    for (_, pipeline, state) in &victims {
        counts.add(client, pipeline, *state, -1);
    }
    write_counts(conn, counts)?;
    Ok(victims.len())
}

/// The report's token is the passenger's current lease.
fn holds_lease(passenger: &PassengerRow, token: LeaseToken) -> bool {
    passenger.state == PassengerState::InFlight && passenger.lease_token == Some(token)
}

/// Updates of steps and passengers gathered during one call and written at its end, one
/// UPDATE per distinct set of new values: a batch of a thousand reports that all say "done"
/// becomes two statements instead of two thousand.
#[derive(Default)]
struct Updates {
    /// Steps (the passenger rows) by the values they get and their index.
    steps: HashMap<(StepValues, u32), Vec<i64>>,
    /// Passenger rows by the state they settle in.
    passengers: HashMap<Settled, Vec<i64>>,
    counts: CountChanges,
}

/// The stored columns of a step.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StepValues {
    state: StepState,
    attempts: u32,
    next_try_at: Option<i64>,
    last_error: Option<String>,
    done_at: Option<i64>,
    result: Option<String>,
}

/// How a passenger settles; the lease always ends.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Settled {
    state: PassengerState,
    due_at: i64,
    /// Becomes the passenger's most recent error when set.
    last_error: Option<String>,
}

impl Updates {
    /// Takes the steps changed in memory, and marks them written.
    fn steps(&mut self, seq: i64, steps: &mut [StoredStep]) {
        for step in steps.iter_mut().filter(|step| step.changed) {
            step.changed = false;
            let values = StepValues {
                state: step.state,
                attempts: step.attempts,
                next_try_at: step.next_try_at,
                last_error: step.last_error.clone(),
                done_at: step.done_at,
                result: step.result.clone(),
            };
            self.steps.entry((values, step.idx)).or_default().push(seq);
        }
    }

    /// Gives the passenger its new state and ends its lease. The row in memory follows, so a
    /// second report on the same passenger in the same batch finds the lease gone.
    fn settle(
        &mut self,
        passenger: &mut PassengerRow,
        state: PassengerState,
        due_at: i64,
        last_error: Option<String>,
    ) {
        let from = passenger.state;
        self.counts
            .change(&passenger.client, &passenger.pipeline, from, state);
        passenger.state = state;
        passenger.lease_token = None;
        let settled = Settled {
            state,
            due_at,
            last_error,
        };
        self.passengers
            .entry(settled)
            .or_default()
            .push(passenger.seq);
    }

    fn write(self, conn: &Connection, now: i64) -> Result<()> {
        let mut update_steps = conn.prepare_cached(
            "UPDATE steps
             SET state = ?2, attempts = ?3, next_try_at = ?4, last_error = ?5, done_at = ?6,
                 result = ?7
             WHERE seq IN rarray(?1) AND idx = ?8",
        )?;
        for ((values, idx), seqs) in self.steps {
            update_steps.execute(params![
                numbers(seqs.into_iter()),
                values.state.as_str(),
                values.attempts,
                values.next_try_at,
                values.last_error,
                values.done_at,
                values.result,
                idx,
            ])?;
        }
        // The retention clock starts when a passenger reaches a purgeable state.
        let mut update_passengers = conn.prepare_cached(
            "UPDATE passengers
             SET state = ?2, due_at = ?3, lease_token = NULL, lease_node = NULL,
                 updated_at = ?4, completed_at = ?5, last_error = coalesce(?6, last_error)
             WHERE seq IN rarray(?1)",
        )?;
        for (settled, seqs) in self.passengers {
            let completed_at = settled.state.is_purgeable().then_some(now);
            update_passengers.execute(params![
                numbers(seqs.into_iter()),
                settled.state.as_str(),
                settled.due_at,
                now,
                completed_at,
                settled.last_error,
            ])?;
        }
        write_counts(conn, self.counts)
    }
}

/// Adds `counts` to `queue_counts`.
fn write_counts(conn: &Connection, counts: CountChanges) -> Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO queue_counts (client, pipeline, state, n) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (client, pipeline, state) DO UPDATE SET n = n + excluded.n",
    )?;
    for (client, pipeline, state, delta) in counts.into_changes() {
        upsert.execute(params![client, pipeline, state.as_str(), delta])?;
    }
    Ok(())
}
