//! Writing the queue: seat, lease, finish, release, retry, discard, skip a step, replay, purge.
//!
//! Each function runs inside the one transaction its trait call opened, writes a whole batch
//! with a few statements over arrays (`unnest`), and appends the changes of the per-state
//! counts it causes to `queue_count_deltas`.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use ferry_core::config::StepDef;
use ferry_core::{Passenger, PassengerId, Timestamp};
use tracing::warn;
use uuid::Uuid;

use super::rows::{self, PassengerRow};
use super::{big, execute, nodes, query, query_one};
use crate::convert::{duration_millis, metadata_json, millis, passenger_state, time};
use crate::counts::CountChanges;
use crate::journey::{self, StoredStep, UnknownStep};
use crate::{
    Abandoned, Finished, LeaseToken, Leased, NodeId, PassengerState, PipelineKey, Result,
    SeatResult, StateCounts, StoreError,
};

/// A lease stops taking passengers once their bodies add up to this many bytes (it always
/// takes one), so that a worker holds a bounded amount in memory whatever the batch size.
/// The same budget as the SQLite store's.
const LEASE_BYTES: i64 = 32 << 20;

/// Writes pulled passengers with all their steps pending; duplicates are skipped.
pub(super) async fn seat(
    db: &impl GenericClient,
    key: &PipelineKey,
    version: &str,
    steps: &[StepDef],
    passengers: &[Passenger],
    now: Timestamp,
) -> Result<Vec<SeatResult>> {
    let now = millis(now);
    let seqs = insert_passengers(db, key, version, passengers, now).await?;
    let seated: Vec<i64> = seqs.iter().flatten().copied().collect();
    insert_steps(db, &seated, steps).await?;
    let mut counts = CountChanges::default();
    counts.add(
        &key.client,
        &key.pipeline,
        PassengerState::Pending,
        seated.len() as i64,
    );
    write_counts(db, counts).await?;
    Ok(seqs
        .iter()
        .map(|seq| match seq {
            Some(_) => SeatResult::Seated,
            None => SeatResult::Duplicate,
        })
        .collect())
}

/// Writes passengers, their payloads and attachments, pending, in input order; returns the
/// `seq` of each, or `None` for one whose de-duplication key (or id) the queue already holds.
/// A duplicate inside the batch conflicts with the row its twin inserted a moment earlier in
/// the same statement. Their steps are written by the caller.
async fn insert_passengers(
    db: &impl GenericClient,
    key: &PipelineKey,
    version: &str,
    passengers: &[Passenger],
    now: i64,
) -> Result<Vec<Option<i64>>> {
    if passengers.is_empty() {
        return Ok(Vec::new());
    }
    // Seats of one pipeline by several nodes at once wait for each other here: inserting
    // overlapping keys in different orders, each would wait for the other's uncommitted rows.
    execute(
        db,
        "SELECT pg_advisory_xact_lock(
             hashtextextended('ferry seat ' || current_schema() || ' ' || $1 || '/' || $2, 0))",
        &[&key.client, &key.pipeline],
    )
    .await?;
    let ids: Vec<Uuid> = passengers.iter().map(|p| p.id.0).collect();
    let sources: Vec<&str> = passengers
        .iter()
        .map(|p| p.source_system.as_str())
        .collect();
    let externals: Vec<&str> = passengers.iter().map(|p| p.external_id.as_str()).collect();
    let parents: Vec<Option<Uuid>> = passengers.iter().map(|p| p.parent.map(|id| id.0)).collect();
    // ORDER BY the position: rows go in in input order, so the first of two twins wins.
    let rows = query(
        db,
        "INSERT INTO passengers
             (id, client, pipeline, source_system, external_id, created_at, parent)
         SELECT n.id, $2, $3, n.source_system, n.external_id, $4, n.parent
         FROM unnest($1::uuid[], $5::text[], $6::text[], $7::uuid[])
              WITH ORDINALITY AS n(id, source_system, external_id, parent, position)
         ORDER BY n.position
         ON CONFLICT DO NOTHING
         RETURNING id, seq",
        &[
            &ids,
            &key.client,
            &key.pipeline,
            &now,
            &sources,
            &externals,
            &parents,
        ],
    )
    .await?;
    let mut inserted: HashMap<Uuid, i64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        inserted.insert(row.try_get(0)?, row.try_get(1)?);
    }
    // `remove`: the same passenger twice in the batch is seated once, the first time.
    let seqs: Vec<Option<i64>> = ids.iter().map(|id| inserted.remove(id)).collect();

    // The content of those inserted, apart from the hot queue rows.
    let mut payload_seqs = Vec::with_capacity(inserted.len());
    let mut metadata = Vec::with_capacity(inserted.len());
    let mut media_types = Vec::with_capacity(inserted.len());
    let mut bodies: Vec<&[u8]> = Vec::with_capacity(inserted.len());
    let mut attachment_counts: Vec<i32> = Vec::with_capacity(inserted.len());
    let mut attachment_seqs = Vec::new();
    let mut attachment_idxs: Vec<i32> = Vec::new();
    let mut attachment_names = Vec::new();
    let mut attachment_types = Vec::new();
    let mut attachment_contents: Vec<&[u8]> = Vec::new();
    for (passenger, seq) in passengers.iter().zip(&seqs) {
        let Some(seq) = *seq else {
            continue;
        };
        payload_seqs.push(seq);
        metadata.push(metadata_json(&passenger.metadata)?);
        media_types.push(passenger.body.media_type.as_str());
        bodies.push(&passenger.body.data[..]);
        attachment_counts.push(passenger.attachments.len() as i32);
        for (idx, attachment) in passenger.attachments.iter().enumerate() {
            attachment_seqs.push(seq);
            attachment_idxs.push(idx as i32);
            attachment_names.push(attachment.name.as_str());
            attachment_types.push(attachment.media_type.as_str());
            attachment_contents.push(&attachment.content[..]);
        }
    }
    if payload_seqs.is_empty() {
        return Ok(seqs);
    }
    execute(
        db,
        "INSERT INTO queue (seq, client, pipeline, state, due_at, updated_at)
         SELECT unnest($1::bigint[]), $2, $3, 'pending', $4, $4",
        &[&payload_seqs, &key.client, &key.pipeline, &now],
    )
    .await?;
    execute(
        db,
        "INSERT INTO payloads (seq, version, metadata, media_type, body, attachments)
         SELECT p.seq, $2, p.metadata, p.media_type, p.body, p.attachments
         FROM unnest($1::bigint[], $3::text[], $4::text[], $5::bytea[], $6::integer[])
              AS p(seq, metadata, media_type, body, attachments)",
        &[
            &payload_seqs,
            &version,
            &metadata,
            &media_types,
            &bodies,
            &attachment_counts,
        ],
    )
    .await?;
    if !attachment_seqs.is_empty() {
        execute(
            db,
            "INSERT INTO attachments (seq, idx, name, media_type, content)
             SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[],
                                  $5::bytea[])",
            &[
                &attachment_seqs,
                &attachment_idxs,
                &attachment_names,
                &attachment_types,
                &attachment_contents,
            ],
        )
        .await?;
    }
    execute(
        db,
        "INSERT INTO search_pending (seq) SELECT unnest($1::bigint[])",
        &[&payload_seqs],
    )
    .await?;
    Ok(seqs)
}

/// Gives every passenger in `seqs` the steps `steps`, all pending, in one statement.
async fn insert_steps(db: &impl GenericClient, seqs: &[i64], steps: &[StepDef]) -> Result<()> {
    if seqs.is_empty() || steps.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = steps.iter().map(|step| step.kind.as_str()).collect();
    let names: Vec<&str> = steps.iter().map(|step| step.name.as_str()).collect();
    execute(
        db,
        "INSERT INTO steps (seq, idx, kind, name, state)
         SELECT p.seq, (s.position - 1)::integer, s.kind, s.name, 'pending'
         FROM unnest($1::bigint[]) AS p(seq),
              unnest($2::text[], $3::text[]) WITH ORDINALITY AS s(kind, name, position)",
        &[&seqs, &kinds, &names],
    )
    .await?;
    Ok(())
}

/// Seats the children a processor split a passenger into: they carry on after step `after`
/// with the parent's steps and definition version. Children already seated (a split repeated
/// after a crash) are skipped by the de-duplication key. Returns how many were seated.
async fn seat_children(
    db: &impl GenericClient,
    parent: &PassengerRow,
    after: u32,
    children: &[Passenger],
    now: i64,
) -> Result<i64> {
    let version: String = query_one(
        db,
        "SELECT version FROM payloads WHERE seq = $1",
        &[&parent.seq],
    )
    .await?
    .try_get(0)?;
    let key = PipelineKey::new(&parent.client, &parent.pipeline);
    let seqs: Vec<i64> = insert_passengers(db, &key, &version, children, now)
        .await?
        .into_iter()
        .flatten()
        .collect();
    if seqs.is_empty() {
        return Ok(0);
    }
    let after = i32::try_from(after).unwrap_or(i32::MAX);
    execute(
        db,
        "INSERT INTO steps (seq, idx, kind, name, state, done_at)
         SELECT c.seq, s.idx, s.kind, s.name,
                CASE WHEN s.idx <= $3 THEN 'done' ELSE 'pending' END,
                CASE WHEN s.idx <= $3 THEN $4::bigint END
         FROM unnest($1::bigint[]) AS c(seq), steps s
         WHERE s.seq = $2",
        &[&seqs, &parent.seq, &after, &now],
    )
    .await?;
    Ok(seqs.len() as i64)
}

/// Passengers claimed for one lease.
pub(super) struct Claim {
    pub token: LeaseToken,
    pub passengers: Vec<DuePassenger>,
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

/// Claims up to `max` due passengers of the pipeline, oldest due first, for one lease. Rows
/// another node is claiming right now are skipped (`SKIP LOCKED`), not waited for: that node
/// takes them. NO KEY UPDATE, the lock an UPDATE of non-key columns takes anyway, lets the
/// foreign-key checks of rows inserted meanwhile (steps, attempts, the search index) through. Only the queue rows are touched; their content is loaded by [`load_leased`]
/// after the claim committed.
pub(super) async fn claim(
    db: &impl GenericClient,
    key: &PipelineKey,
    max: usize,
    lease_for: Duration,
    node: Option<NodeId>,
    now: Timestamp,
) -> Result<Claim> {
    let now_ms = millis(now);
    let until = now_ms.saturating_add(duration_millis(lease_for));
    // An expired lease is due like any other work: its `due_at` is the lease's end.
    let rows = query(
        db,
        "SELECT q.seq, q.state, p.id, p.source_system, p.external_id, p.created_at, p.parent,
                (SELECT octet_length(d.body)::bigint
                        + coalesce(octet_length(d.processed_body), 0)::bigint
                 FROM payloads d WHERE d.seq = q.seq),
                q.alone
         FROM queue q JOIN passengers p ON p.seq = q.seq
         WHERE q.client = $1 AND q.pipeline = $2
           AND q.state IN ('pending', 'failed', 'in_flight')
           AND q.due_at <= $3
         ORDER BY q.due_at, q.seq
         LIMIT $4
         FOR NO KEY UPDATE OF q SKIP LOCKED",
        &[&key.client, &key.pipeline, &now_ms, &big(max)],
    )
    .await?;
    let mut due = Vec::new();
    let mut counts = CountChanges::default();
    let mut bytes = 0;
    for row in &rows {
        if bytes >= LEASE_BYTES {
            break;
        }
        // A passenger that was in flight when a process died travels alone: should it kill
        // the process again, no other passenger's attempt is spent with it (issue 12).
        let alone: bool = row.try_get(8)?;
        if alone && !due.is_empty() {
            break;
        }
        bytes += row.try_get::<_, Option<i64>>(7)?.unwrap_or(0);
        let previous = passenger_state(row.try_get(1)?)?;
        counts.change(
            &key.client,
            &key.pipeline,
            previous,
            PassengerState::InFlight,
        );
        due.push(DuePassenger {
            seq: row.try_get(0)?,
            id: PassengerId(row.try_get(2)?),
            source_system: row.try_get(3)?,
            external_id: row.try_get(4)?,
            created_at: time(row.try_get(5)?)?,
            parent: row.try_get::<_, Option<Uuid>>(6)?.map(PassengerId),
        });
        if alone {
            break;
        }
    }
    if due.is_empty() {
        return Ok(Claim {
            token: 0,
            passengers: due,
        });
    }
    // One token for the whole lease: a report is matched by passenger and token, and a later
    // lease of any of these passengers draws a new token, so the old one stops matching.
    let token: LeaseToken = rand::random();
    let seqs: Vec<i64> = due.iter().map(|d| d.seq).collect();
    execute(
        db,
        "UPDATE queue
         SET state = 'in_flight', due_at = $2, lease_token = $3, updated_at = $4, alone = false,
             lease_node = $5
         WHERE seq = ANY($1)",
        &[&seqs, &until, &token, &now_ms, &node],
    )
    .await?;
    write_counts(db, counts).await?;
    Ok(Claim {
        token,
        passengers: due,
    })
}

/// Loads what workers need of claimed passengers: content, attachments, steps.
pub(super) async fn load_leased(
    db: &impl GenericClient,
    key: &PipelineKey,
    claim: Claim,
) -> Result<Vec<Leased>> {
    let seqs: Vec<i64> = claim.passengers.iter().map(|d| d.seq).collect();
    // The processors' output replaces the original when there is one: a passenger whose
    // processors ran in an earlier lease goes on from where they left it.
    let rows = query(
        db,
        "SELECT seq,
                CASE WHEN processed_media_type IS NULL THEN metadata ELSE processed_metadata END,
                coalesce(processed_media_type, media_type),
                CASE WHEN processed_media_type IS NULL THEN body ELSE processed_body END,
                attachments
         FROM payloads WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await?;
    let mut payloads = HashMap::with_capacity(rows.len());
    let mut with_attachments = Vec::new();
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        if row.try_get::<_, i32>(4)? > 0 {
            with_attachments.push(seq);
        }
        payloads.insert(seq, rows::content(row, 1)?);
    }
    drop(rows);
    let mut attachments = if with_attachments.is_empty() {
        HashMap::new()
    } else {
        rows::load_attachments(db, &with_attachments).await?
    };
    let mut steps = rows::load_steps(db, &seqs).await?;

    let mut leased = Vec::with_capacity(claim.passengers.len());
    for due in claim.passengers {
        let Some((metadata, body)) = payloads.remove(&due.seq) else {
            // Discarded and purged by someone between the claim and this read: gone.
            continue;
        };
        let steps = steps
            .remove(&due.seq)
            .unwrap_or_default()
            .into_iter()
            .map(|step| journey::step_status(step, true))
            .collect::<Result<Vec<_>>>()?;
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
                attachments: attachments.remove(&due.seq).unwrap_or_default(),
                created_at: due.created_at,
                parent: due.parent,
            },
            steps,
        });
    }
    Ok(leased)
}

/// How many of `ids` are in each state.
pub(super) async fn progress(db: &impl GenericClient, ids: &[PassengerId]) -> Result<StateCounts> {
    let mut counts = StateCounts::new();
    if ids.is_empty() {
        return Ok(counts);
    }
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = query(
        db,
        "SELECT q.state, count(*) FROM passengers p JOIN queue q ON q.seq = p.seq
         WHERE p.id = ANY($1) GROUP BY q.state",
        &[&uuids],
    )
    .await?;
    for row in &rows {
        let count: i64 = row.try_get(1)?;
        counts.insert(
            passenger_state(row.try_get(0)?)?,
            u64::try_from(count).unwrap_or(0),
        );
    }
    Ok(counts)
}

/// Applies the workers' reports whose lease is still theirs. Returns how many were applied.
pub(super) async fn finish(
    db: &impl GenericClient,
    reports: &[Finished],
    now: Timestamp,
) -> Result<usize> {
    let now = millis(now);
    let ids: Vec<PassengerId> = reports.iter().map(|report| report.id).collect();
    let mut found = rows::lock_with_steps(db, &ids).await?;
    let mut updates = Updates::default();
    let mut attempts = Attempts::default();
    let mut processed = Processed::default();
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
                    attempts.push(passenger.seq, failure.idx, failure.attempt, &failure.error);
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
            processed.seqs.push(passenger.seq);
            processed.metadata.push(metadata_json(metadata)?);
            processed.media_types.push(body.media_type.clone());
            processed.bodies.push(body.data.to_vec());
        }
        if let Some(split) = &report.split {
            let seated = seat_children(db, passenger, split.after, &split.children, now).await?;
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
    attempts.write(db, now).await?;
    processed.write(db).await?;
    updates.write(db, now).await?;
    Ok(applied)
}

/// Gives leased passengers back, due now.
pub(super) async fn release(
    db: &impl GenericClient,
    leases: &[(PassengerId, LeaseToken)],
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let ids: Vec<PassengerId> = leases.iter().map(|(id, _)| *id).collect();
    let mut found = rows::lock_with_steps(db, &ids).await?;
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
    updates.write(db, now).await
}

/// The in-flight passengers of nodes that no longer run, with their steps (open steps in
/// flight).
pub(super) async fn abandoned_leases(
    db: &impl GenericClient,
    dead_before: Timestamp,
    own: Option<NodeId>,
) -> Result<Vec<Abandoned>> {
    let rows = query(
        db,
        &format!(
            "SELECT q.seq, p.id, q.lease_token, q.client, q.pipeline
             FROM queue q JOIN passengers p ON p.seq = q.seq
             WHERE q.state = 'in_flight' AND {} ORDER BY q.seq",
            nodes::dead("q.lease_node", 1, 2)
        ),
        &[&millis(dead_before), &own],
    )
    .await?;
    let seqs = rows
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<Vec<i64>, _>>()?;
    let mut steps = rows::load_steps(db, &seqs).await?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        let steps = steps
            .remove(&seq)
            .unwrap_or_default()
            .into_iter()
            .map(|step| journey::step_status(step, true))
            .collect::<Result<Vec<_>>>()?;
        abandoned.push(Abandoned {
            pipeline: PipelineKey::new(row.try_get::<_, String>(3)?, row.try_get::<_, String>(4)?),
            id: PassengerId(row.try_get(1)?),
            token: row.try_get::<_, Option<i64>>(2)?.unwrap_or(0),
            steps,
        });
    }
    Ok(abandoned)
}

/// [`finish`], then marks the passengers to be leased alone (see [`claim`]).
pub(super) async fn record_interrupted(
    db: &impl GenericClient,
    reports: &[Finished],
    now: Timestamp,
) -> Result<usize> {
    let applied = finish(db, reports, now).await?;
    let ids: Vec<Uuid> = reports.iter().map(|report| report.id.0).collect();
    execute(
        db,
        "UPDATE queue SET alone = true
         WHERE seq IN (SELECT seq FROM passengers WHERE id = ANY($1))",
        &[&ids],
    )
    .await?;
    Ok(applied)
}

/// Releases the leases of nodes that no longer run, as [`release`] would for their holder.
pub(super) async fn recover_leases(
    db: &impl GenericClient,
    dead_before: Timestamp,
    own: Option<NodeId>,
    now: Timestamp,
) -> Result<u64> {
    let rows = query(
        db,
        &format!(
            "SELECT p.id, q.lease_token FROM queue q JOIN passengers p ON p.seq = q.seq
             WHERE q.state = 'in_flight' AND {}",
            nodes::dead("q.lease_node", 1, 2)
        ),
        &[&millis(dead_before), &own],
    )
    .await?;
    let mut leases = Vec::with_capacity(rows.len());
    for row in &rows {
        let token: Option<i64> = row.try_get(1)?;
        leases.push((PassengerId(row.try_get(0)?), token.unwrap_or(0)));
    }
    if leases.is_empty() {
        return Ok(0);
    }
    release(db, &leases, now).await?;
    Ok(leases.len() as u64)
}

/// Makes the failed and dead steps of a passenger pending again, with fresh attempts.
pub(super) async fn retry(db: &impl GenericClient, id: PassengerId, now: Timestamp) -> Result<()> {
    let now = millis(now);
    let (mut passenger, mut steps) = rows::lock_one_with_steps(db, id)
        .await?
        .ok_or(StoreError::NotFound(id))?;
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
    updates.write(db, now).await
}

/// Marks a passenger discarded; its unfinished steps are skipped.
pub(super) async fn discard(
    db: &impl GenericClient,
    id: PassengerId,
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let (mut passenger, mut steps) = rows::lock_one_with_steps(db, id)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    if passenger.state == PassengerState::Discarded {
        // Discarding again must not restart the retention clock.
        return Ok(());
    }
    journey::skip_unfinished(&mut steps);
    let mut updates = Updates::default();
    updates.steps(passenger.seq, &mut steps);
    updates.settle(&mut passenger, PassengerState::Discarded, now, None);
    updates.write(db, now).await
}

/// Marks one pending, failed or dead step of a passenger skipped, and settles the passenger
/// in the state its steps then add up to.
pub(super) async fn skip_step(
    db: &impl GenericClient,
    id: PassengerId,
    idx: u32,
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let (mut passenger, mut steps) = rows::lock_one_with_steps(db, id)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    let leased = passenger.state == PassengerState::InFlight && passenger.due_at > now;
    journey::skip_by_person(&mut steps, id, idx, leased)?;
    let mut updates = Updates::default();
    updates.steps(passenger.seq, &mut steps);
    let (state, due_at) = journey::derive(&steps, now);
    updates.settle(&mut passenger, state, due_at, None);
    updates.write(db, now).await
}

/// Starts a passenger's journey again with `steps`, from its original content.
pub(super) async fn replay(
    db: &impl GenericClient,
    id: PassengerId,
    steps: &[StepDef],
    now: Timestamp,
) -> Result<()> {
    let now = millis(now);
    let (passenger, _) = rows::lock_one_with_steps(db, id)
        .await?
        .ok_or(StoreError::NotFound(id))?;
    execute(db, "DELETE FROM steps WHERE seq = $1", &[&passenger.seq]).await?;
    insert_steps(db, &[passenger.seq], steps).await?;
    execute(
        db,
        "UPDATE payloads
         SET processed_metadata = NULL, processed_media_type = NULL, processed_body = NULL
         WHERE seq = $1",
        &[&passenger.seq],
    )
    .await?;
    // The attempt history stays: it tells what happened before the replay. A fresh journey
    // has no error of its own yet.
    execute(
        db,
        "UPDATE queue
         SET state = 'pending', due_at = $2, lease_token = NULL, lease_node = NULL,
             updated_at = $2,
             completed_at = NULL, last_error = NULL
         WHERE seq = $1",
        &[&passenger.seq, &now],
    )
    .await?;
    let mut counts = CountChanges::default();
    counts.change(
        &passenger.client,
        &passenger.pipeline,
        passenger.state,
        PassengerState::Pending,
    );
    write_counts(db, counts).await
}

/// Deletes up to `limit` purgeable passengers of the client finished before `before`, with
/// everything that belongs to them (the foreign keys cascade). Returns how many it deleted.
pub(super) async fn purge_chunk(
    db: &impl GenericClient,
    client: &str,
    before: Timestamp,
    limit: usize,
) -> Result<usize> {
    // The state condition is also what guarantees that no open or dead passenger is ever
    // deleted. A row someone is changing right now is left for the next purge.
    let rows = query(
        db,
        "SELECT seq, pipeline, state FROM queue
         WHERE client = $1
           AND state IN ('complete', 'filtered', 'discarded')
           AND completed_at < $2
         LIMIT $3
         FOR UPDATE SKIP LOCKED",
        &[&client, &millis(before), &big(limit)],
    )
    .await?;
    let mut seqs = Vec::with_capacity(rows.len());
    let mut counts = CountChanges::default();
    for row in &rows {
        seqs.push(row.try_get::<_, i64>(0)?);
        let pipeline: &str = row.try_get(1)?;
        counts.add(client, pipeline, passenger_state(row.try_get(2)?)?, -1);
    }
    if seqs.is_empty() {
        return Ok(0);
    }
    execute(db, "DELETE FROM passengers WHERE seq = ANY($1)", &[&seqs]).await?;
    write_counts(db, counts).await?;
    Ok(seqs.len())
}

/// Folds the count deltas into one row per pipeline and state. Several nodes may call it at
/// once: only one does the work (the others return at once), and writers appending deltas
/// meanwhile are never blocked, since the rows it deletes are rows nobody else changes.
pub(super) async fn compact_counts(db: &impl GenericClient) -> Result<()> {
    let locked: bool = query_one(
        db,
        "SELECT pg_try_advisory_xact_lock(hashtextextended('ferry counts ' || current_schema(), 0))",
        &[],
    )
    .await?
    .try_get(0)?;
    if !locked {
        return Ok(());
    }
    execute(
        db,
        "WITH gone AS (DELETE FROM queue_count_deltas RETURNING client, pipeline, state, n)
         INSERT INTO queue_count_deltas (client, pipeline, state, n)
         SELECT client, pipeline, state, sum(n)::bigint FROM gone
         GROUP BY client, pipeline, state
         HAVING sum(n) <> 0",
        &[],
    )
    .await?;
    Ok(())
}

/// The report's token is the passenger's current lease.
fn holds_lease(passenger: &PassengerRow, token: LeaseToken) -> bool {
    passenger.state == PassengerState::InFlight && passenger.lease_token == Some(token)
}

/// Failed attempts gathered during one call, written with one statement at its end.
#[derive(Default)]
struct Attempts {
    seqs: Vec<i64>,
    idxs: Vec<i32>,
    attempts: Vec<i32>,
    errors: Vec<String>,
}

impl Attempts {
    fn push(&mut self, seq: i64, idx: u32, attempt: u32, error: &str) {
        self.seqs.push(seq);
        self.idxs.push(idx as i32);
        self.attempts
            .push(i32::try_from(attempt).unwrap_or(i32::MAX));
        self.errors.push(error.to_owned());
    }

    async fn write(self, db: &impl GenericClient, now: i64) -> Result<()> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        // WITH ORDINALITY and ORDER BY: the identity follows the order they happened in.
        execute(
            db,
            "INSERT INTO attempts (seq, idx, attempt, at, error)
             SELECT a.seq, a.idx, a.attempt, $5, a.error
             FROM unnest($1::bigint[], $2::integer[], $3::integer[], $4::text[])
                  WITH ORDINALITY AS a(seq, idx, attempt, error, position)
             ORDER BY a.position",
            &[&self.seqs, &self.idxs, &self.attempts, &self.errors, &now],
        )
        .await?;
        Ok(())
    }
}

/// The processors' output of the reports that carry one, written with one statement.
#[derive(Default)]
struct Processed {
    seqs: Vec<i64>,
    metadata: Vec<Option<String>>,
    media_types: Vec<String>,
    bodies: Vec<Vec<u8>>,
}

impl Processed {
    async fn write(self, db: &impl GenericClient) -> Result<()> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        execute(
            db,
            "UPDATE payloads AS d
             SET processed_metadata = u.metadata, processed_media_type = u.media_type,
                 processed_body = u.body
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[])
                  AS u(seq, metadata, media_type, body)
             WHERE d.seq = u.seq",
            &[&self.seqs, &self.metadata, &self.media_types, &self.bodies],
        )
        .await?;
        Ok(())
    }
}

/// Updates of steps and passengers gathered during one call and written at its end: one
/// UPDATE over arrays for all the steps, one for all the passengers, however many there are.
#[derive(Default)]
struct Updates {
    /// The new values of changed steps, by (passenger row, index); the last change wins.
    steps: HashMap<(i64, u32), StoredStep>,
    /// How passengers settle, by row; the last settlement wins.
    passengers: HashMap<i64, Settled>,
    counts: CountChanges,
}

/// How a passenger settles; the lease always ends.
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
            self.steps.insert((seq, step.idx), step.clone());
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
        let last_error = match self.passengers.remove(&passenger.seq) {
            Some(earlier) => last_error.or(earlier.last_error),
            None => last_error,
        };
        self.passengers.insert(
            passenger.seq,
            Settled {
                state,
                due_at,
                last_error,
            },
        );
    }

    async fn write(self, db: &impl GenericClient, now: i64) -> Result<()> {
        if !self.steps.is_empty() {
            let mut seqs = Vec::with_capacity(self.steps.len());
            let mut idxs: Vec<i32> = Vec::with_capacity(self.steps.len());
            let mut states = Vec::with_capacity(self.steps.len());
            let mut attempts: Vec<i32> = Vec::with_capacity(self.steps.len());
            let mut next_tries = Vec::with_capacity(self.steps.len());
            let mut errors = Vec::with_capacity(self.steps.len());
            let mut done = Vec::with_capacity(self.steps.len());
            let mut results = Vec::with_capacity(self.steps.len());
            for ((seq, idx), step) in self.steps {
                seqs.push(seq);
                idxs.push(idx as i32);
                states.push(step.state.as_str());
                attempts.push(i32::try_from(step.attempts).unwrap_or(i32::MAX));
                next_tries.push(step.next_try_at);
                errors.push(step.last_error);
                done.push(step.done_at);
                results.push(step.result);
            }
            execute(
                db,
                "UPDATE steps AS s
                 SET state = u.state, attempts = u.attempts, next_try_at = u.next_try_at,
                     last_error = u.last_error, done_at = u.done_at, result = u.result
                 FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::integer[],
                             $5::bigint[], $6::text[], $7::bigint[], $8::text[])
                      AS u(seq, idx, state, attempts, next_try_at, last_error, done_at, result)
                 WHERE s.seq = u.seq AND s.idx = u.idx",
                &[
                    &seqs,
                    &idxs,
                    &states,
                    &attempts,
                    &next_tries,
                    &errors,
                    &done,
                    &results,
                ],
            )
            .await?;
        }
        if !self.passengers.is_empty() {
            let mut seqs = Vec::with_capacity(self.passengers.len());
            let mut states = Vec::with_capacity(self.passengers.len());
            let mut due = Vec::with_capacity(self.passengers.len());
            let mut completed = Vec::with_capacity(self.passengers.len());
            let mut errors = Vec::with_capacity(self.passengers.len());
            for (seq, settled) in self.passengers {
                seqs.push(seq);
                states.push(settled.state.as_str());
                due.push(settled.due_at);
                // The retention clock starts when a passenger reaches a purgeable state.
                completed.push(settled.state.is_purgeable().then_some(now));
                errors.push(settled.last_error);
            }
            execute(
                db,
                "UPDATE queue AS p
                 SET state = u.state, due_at = u.due_at, lease_token = NULL, lease_node = NULL,
                     updated_at = $6,
                     completed_at = u.completed_at,
                     last_error = coalesce(u.last_error, p.last_error)
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
                      AS u(seq, state, due_at, completed_at, last_error)
                 WHERE p.seq = u.seq",
                &[&seqs, &states, &due, &completed, &errors, &now],
            )
            .await?;
        }
        write_counts(db, self.counts).await
    }
}

/// Appends `counts` to `queue_count_deltas`.
async fn write_counts(db: &impl GenericClient, counts: CountChanges) -> Result<()> {
    let mut clients = Vec::new();
    let mut pipelines = Vec::new();
    let mut states = Vec::new();
    let mut deltas = Vec::new();
    for (client, pipeline, state, delta) in counts.into_changes() {
        clients.push(client);
        pipelines.push(pipeline);
        states.push(state.as_str());
        deltas.push(delta);
    }
    if clients.is_empty() {
        return Ok(());
    }
    execute(
        db,
        "INSERT INTO queue_count_deltas (client, pipeline, state, n)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])",
        &[&clients, &pipelines, &states, &deltas],
    )
    .await?;
    Ok(())
}
