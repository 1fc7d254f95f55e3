//! Reading the queue: counts, the next due time, pages for the browser, one passenger, and the
//! console's views of it (dead passengers by error, the oldest open work).

use std::collections::BTreeMap;

use ferry_core::{Passenger, PassengerId, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::convert::{
    id_bytes, id_from_bytes, millis, optional_time, passenger_state, small_count, text, time,
};
use super::filtered::Filtered;
use super::rows;
use super::search;
use crate::journey;
use crate::{
    Attempt, DeadGroup, PassengerDetail, PassengerState, PipelineKey, QueueEntry, QueueFilter,
    Result, StateCounts, StoreError,
};

/// Passengers of the pipeline that still have work.
pub(super) fn open_count(conn: &Connection, key: &PipelineKey) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(n), 0) FROM queue_counts
             WHERE client = ?1 AND pipeline = ?2
               AND (state = 'pending' OR state = 'in_flight' OR state = 'failed')",
        )?
        .query_row(params![key.client, key.pipeline], |row| row.get(0))?;
    Ok(n.max(0) as u64)
}

/// The earliest due time of the pipeline's open work.
pub(super) fn next_due(conn: &Connection, key: &PipelineKey) -> Result<Option<Timestamp>> {
    // Repeats the `passengers_due` index's condition, so this is one seek in that index.
    let due: Option<i64> = conn
        .prepare_cached(
            "SELECT min(due_at) FROM passengers
             WHERE client = ?1 AND pipeline = ?2
               AND (state = 'pending' OR state = 'failed' OR state = 'in_flight')",
        )?
        .query_row(params![key.client, key.pipeline], |row| row.get(0))?;
    optional_time(due)
}

/// Passengers per pipeline and state, from the counts every write keeps up to date.
pub(super) fn counts(
    conn: &Connection,
    client: Option<&str>,
) -> Result<BTreeMap<PipelineKey, StateCounts>> {
    let mut select = conn.prepare_cached(
        "SELECT client, pipeline, state, n FROM queue_counts
         WHERE n > 0 AND (?1 IS NULL OR client = ?1)",
    )?;
    let mut rows = select.query([client])?;
    let mut counts: BTreeMap<PipelineKey, StateCounts> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let key = PipelineKey::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
        let state = passenger_state(text(row, 2)?)?;
        let n: i64 = row.get(3)?;
        counts.entry(key).or_default().insert(state, n as u64);
    }
    Ok(counts)
}

/// A page of the queue, newest first (ids are UUIDv7, so by id; by creation time within a
/// time range), after `before`.
pub(super) fn list(
    conn: &Connection,
    filter: &QueueFilter,
    before: Option<PassengerId>,
    limit: usize,
) -> Result<Vec<QueueEntry>> {
    // A time range pages by creation time through `passengers_created`, from the end of the
    // range backwards: ordered by id, a range far back would first walk past every newer
    // passenger. Ids are made at pull and `created_at` at seat, so the two orders agree but
    // for passengers pulled within the same moments.
    let by_time = filter.client.is_some() && (filter.since.is_some() || filter.until.is_some());
    let index = if by_time {
        " INDEXED BY passengers_created"
    } else {
        ""
    };
    let mut q = Filtered::new(String::new());
    // A text found in the search index narrows the passengers to its matches (and those not
    // indexed yet), each looked up by `seq`; the conditions below still decide. NOT INDEXED
    // keeps the planner from walking a client's whole index for the conditions pushed down
    // into the two halves instead of looking the few rows up by `seq`.
    let found = match &filter.text {
        Some(needle) => search::candidates(conn, needle)?,
        None => None,
    };
    let source = match found {
        Some(found) => {
            let seqs = q.bind(Value::Text(found.seqs));
            let mark = q.bind(Value::Integer(found.mark));
            format!(
                "(SELECT * FROM passengers NOT INDEXED
                    WHERE seq IN (SELECT value FROM json_each({seqs}))
                  UNION ALL SELECT * FROM passengers NOT INDEXED WHERE seq > {mark})"
            )
        }
        None => format!("passengers{index}"),
    };
    q.push(&format!(
        "SELECT id, client, pipeline, source_system, external_id, state, created_at,
                updated_at, last_error
         FROM {source} WHERE 1 = 1"
    ));
    if let Some(client) = &filter.client {
        q.and("client = ?", Value::Text(client.clone()));
    }
    if let Some(pipeline) = &filter.pipeline {
        q.and("pipeline = ?", Value::Text(pipeline.clone()));
    }
    if let Some(state) = filter.state {
        // A literal, not a parameter: SQLite picks a partial index (`passengers_trouble_list`
        // for failed and dead) only for conditions it can see when preparing.
        q.push(&format!(" AND state = '{}'", state.as_str()));
    }
    if let Some(needle) = &filter.text {
        q.and(
            "(instr(external_id, ?) > 0 OR instr(source_system, ?) > 0)",
            Value::Text(needle.clone()),
        );
    }
    if let Some(since) = filter.since {
        q.and("created_at >= ?", Value::Integer(millis(since)));
    }
    match before {
        // The cursor, a row inside the range, is the upper bound: one seek however deep.
        Some(before) if by_time => {
            let Some(created_at) = created_at_of(conn, before)? else {
                return Ok(Vec::new());
            };
            let at = q.bind(Value::Integer(created_at));
            let id = q.bind(Value::Blob(id_bytes(before).to_vec()));
            q.push(&format!(" AND (created_at, id) < ({at}, {id})"));
        }
        _ => {
            if let Some(until) = filter.until {
                q.and("created_at < ?", Value::Integer(millis(until)));
            }
            if let Some(before) = before {
                q.and("id < ?", Value::Blob(id_bytes(before).to_vec()));
            }
        }
    }
    let order = if by_time {
        "created_at DESC, id DESC"
    } else {
        "id DESC"
    };
    let limit = q.bind(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    q.push(&format!(" ORDER BY {order} LIMIT {limit}"));

    let mut select = conn.prepare_cached(&q.sql)?;
    let mut rows = select.query(params_from_iter(q.args))?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(queue_entry(row, id_from_bytes(row.get(0)?))?);
    }
    Ok(entries)
}

/// When the passenger was seated, if it is still in the queue.
fn created_at_of(conn: &Connection, id: PassengerId) -> Result<Option<i64>> {
    let mut select = conn.prepare_cached("SELECT created_at FROM passengers WHERE id = ?1")?;
    let mut rows = select.query([&id_bytes(id)])?;
    match rows.next()? {
        Some(row) => Ok(Some(row.get(0)?)),
        None => Ok(None),
    }
}

/// A queue line from columns 1 to 8 of `row`: client, pipeline, source_system, external_id,
/// state, created_at, updated_at, last_error (column 0 holds the id or seq).
fn queue_entry(row: &rusqlite::Row<'_>, id: PassengerId) -> Result<QueueEntry> {
    Ok(QueueEntry {
        id,
        client: row.get(1)?,
        pipeline: row.get(2)?,
        source_system: row.get(3)?,
        external_id: row.get(4)?,
        state: passenger_state(text(row, 5)?)?,
        created_at: time(row.get(6)?)?,
        updated_at: time(row.get(7)?)?,
        last_error: row.get(8)?,
    })
}

/// Everything about one passenger.
pub(super) fn get(conn: &Connection, id: PassengerId) -> Result<PassengerDetail> {
    let mut select = conn.prepare_cached(
        "SELECT p.seq, p.client, p.pipeline, p.source_system, p.external_id, p.state,
                p.created_at, p.updated_at, p.last_error,
                d.metadata, d.media_type, d.body, d.attachments,
                d.processed_metadata, d.processed_media_type, d.processed_body, p.parent
         FROM passengers p JOIN payloads d ON d.seq = p.seq
         WHERE p.id = ?1",
    )?;
    let mut found = select.query([&id_bytes(id)])?;
    let Some(row) = found.next()? else {
        return Err(StoreError::NotFound(id));
    };
    let seq: i64 = row.get(0)?;
    let entry = queue_entry(row, id)?;
    let (metadata, body) = rows::content(row, 9)?;
    let attachment_count: i64 = row.get(12)?;
    let processed = match row.get::<_, Option<String>>(14)? {
        None => None,
        Some(_) => Some(rows::content(row, 13)?),
    };
    let parent = row.get::<_, Option<[u8; 16]>>(16)?.map(id_from_bytes);
    drop(found);

    let attachments = if attachment_count > 0 {
        rows::load_attachments(conn, seq)?
    } else {
        Vec::new()
    };
    let leased = entry.state == PassengerState::InFlight;
    let steps = rows::load_steps(conn, seq)?
        .into_iter()
        .map(|step| journey::step_status(step, leased))
        .collect::<Result<Vec<_>>>()?;
    let attempts = load_attempts(conn, seq)?;
    let original = Passenger {
        id,
        client: entry.client.clone(),
        pipeline: entry.pipeline.clone(),
        source_system: entry.source_system.clone(),
        external_id: entry.external_id.clone(),
        metadata,
        body,
        attachments,
        created_at: entry.created_at,
        parent,
    };
    Ok(PassengerDetail {
        entry,
        original,
        processed,
        steps,
        attempts,
    })
}

/// The failed attempts of a passenger, in the order they happened.
fn load_attempts(conn: &Connection, seq: i64) -> Result<Vec<Attempt>> {
    let mut select = conn.prepare_cached(
        "SELECT idx, attempt, at, error FROM attempts WHERE seq = ?1 ORDER BY rowid",
    )?;
    let mut rows = select.query([seq])?;
    let mut attempts = Vec::new();
    while let Some(row) = rows.next()? {
        attempts.push(Attempt {
            step: small_count(row.get(0)?)?,
            attempt: small_count(row.get(1)?)?,
            at: time(row.get(2)?)?,
            error: row.get(3)?,
        });
    }
    Ok(attempts)
}

/// The client and pipeline of a passenger, if it exists.
pub(super) fn owner(conn: &Connection, id: PassengerId) -> Result<Option<PipelineKey>> {
    let owner = conn
        .prepare_cached("SELECT client, pipeline FROM passengers WHERE id = ?1")?
        .query_row([&id_bytes(id)], |row| {
            Ok(PipelineKey::new(
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
            ))
        })
        .optional()?;
    Ok(owner)
}

/// The passengers split from `parent`, in the order they were seated.
pub(super) fn children(conn: &Connection, parent: PassengerId) -> Result<Vec<QueueEntry>> {
    // `parent = ?1` implies the `passengers_parent` index's `parent IS NOT NULL`, and the
    // index holds the seq, so the order comes from the index too.
    let mut select = conn.prepare_cached(
        "SELECT id, client, pipeline, source_system, external_id, state, created_at,
                updated_at, last_error
         FROM passengers WHERE parent = ?1
         ORDER BY seq",
    )?;
    let mut rows = select.query([&id_bytes(parent)])?;
    let mut children = Vec::new();
    while let Some(row) = rows.next()? {
        children.push(queue_entry(row, id_from_bytes(row.get(0)?))?);
    }
    Ok(children)
}

/// Dead passengers grouped by pipeline and error, largest group first.
pub(super) fn dead_groups(conn: &Connection, client: Option<&str>) -> Result<Vec<DeadGroup>> {
    // The state condition repeats the `passengers_trouble_list` index's word for word before
    // narrowing it to `dead`, so only that small index is read, never the whole queue. For one
    // client the planner would rather walk `passengers_pipeline_list`, whose order suits the
    // GROUP BY, through every passenger of the client; INDEXED BY keeps it on the small index
    // (and fails loudly should that index ever go). Two statements rather than
    // `?1 IS NULL OR client = ?1`, which would hide the client from the planner. A dead
    // passenger always has an error; `coalesce` keeps the type honest.
    const ALL: &str = "SELECT client, pipeline, coalesce(last_error, ''), count(*), max(updated_at)
         FROM passengers INDEXED BY passengers_trouble_list
         WHERE (state = 'failed' OR state = 'dead') AND state = 'dead'
         GROUP BY client, pipeline, coalesce(last_error, '')";
    const ONE_CLIENT: &str =
        "SELECT client, pipeline, coalesce(last_error, ''), count(*), max(updated_at)
         FROM passengers INDEXED BY passengers_trouble_list
         WHERE client = ?1 AND (state = 'failed' OR state = 'dead') AND state = 'dead'
         GROUP BY client, pipeline, coalesce(last_error, '')";
    let mut select = conn.prepare_cached(if client.is_some() { ONE_CLIENT } else { ALL })?;
    let mut rows = match client {
        Some(client) => select.query([client])?,
        None => select.query([])?,
    };
    let mut groups = Vec::new();
    while let Some(row) = rows.next()? {
        groups.push(DeadGroup {
            client: row.get(0)?,
            pipeline: row.get(1)?,
            error: row.get(2)?,
            count: row.get::<_, i64>(3)?.max(0) as u64,
            newest: time(row.get(4)?)?,
        });
    }
    // Sorted here, where the order is easy to read: the groups are few.
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.newest.cmp(&a.newest))
            .then_with(|| {
                (&a.client, &a.pipeline, &a.error).cmp(&(&b.client, &b.pipeline, &b.error))
            })
    });
    Ok(groups)
}

/// Ids of the pipeline's dead passengers whose error is `error`, oldest first.
pub(super) fn dead_ids(
    conn: &Connection,
    key: &PipelineKey,
    error: &str,
    limit: usize,
) -> Result<Vec<PassengerId>> {
    // `passengers_trouble_list` again, held to it as in `dead_groups` (`passengers_pipeline_list`
    // would give the same order through every passenger of the pipeline). It is ordered by id
    // within the client's dead passengers, and UUIDv7 ids sort by creation time.
    let mut select = conn.prepare_cached(
        "SELECT id FROM passengers INDEXED BY passengers_trouble_list
         WHERE client = ?1 AND (state = 'failed' OR state = 'dead') AND state = 'dead'
           AND pipeline = ?2 AND coalesce(last_error, '') = ?3
         ORDER BY id
         LIMIT ?4",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = select.query(params![key.client, key.pipeline, error, limit])?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next()? {
        ids.push(id_from_bytes(row.get(0)?));
    }
    Ok(ids)
}

/// The creation time of the oldest passenger with open work, per pipeline.
pub(super) fn oldest_open(conn: &Connection) -> Result<BTreeMap<PipelineKey, Timestamp>> {
    // Repeats the `passengers_due` index's condition: only the open backlog is read, grouped
    // in the index's (client, pipeline) order.
    let mut select = conn.prepare_cached(
        "SELECT client, pipeline, min(created_at) FROM passengers
         WHERE (state = 'pending' OR state = 'failed' OR state = 'in_flight')
         GROUP BY client, pipeline",
    )?;
    let mut rows = select.query([])?;
    let mut oldest = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let key = PipelineKey::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
        oldest.insert(key, time(row.get(2)?)?);
    }
    Ok(oldest)
}
