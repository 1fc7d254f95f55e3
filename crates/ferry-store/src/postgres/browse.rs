//! Reading the queue: counts, the next due time, pages for the browser, one passenger, and the
//! console's views of it (dead passengers by error, the oldest open work).

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use ferry_core::{Passenger, PassengerId, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{big, query, query_one, query_opt, rows, search};
use crate::convert::{millis, optional_time, passenger_state, small_count, time};
use crate::journey;
use crate::{
    Attempt, DeadGroup, PassengerDetail, PassengerState, PipelineKey, QueueEntry, QueueFilter,
    Result, StateCounts, StoreError,
};

/// Passengers of the pipeline that still have work, from the counts' deltas.
pub(super) async fn open_count(db: &impl GenericClient, key: &PipelineKey) -> Result<u64> {
    let n: i64 = query_one(
        db,
        "SELECT coalesce(sum(n), 0)::bigint FROM queue_count_deltas
         WHERE client = $1 AND pipeline = $2 AND state IN ('pending', 'in_flight', 'failed')",
        &[&key.client, &key.pipeline],
    )
    .await?
    .try_get(0)?;
    Ok(n.max(0) as u64)
}

/// The earliest due time of the pipeline's open work: one probe of `passengers_due`.
pub(super) async fn next_due(
    db: &impl GenericClient,
    key: &PipelineKey,
) -> Result<Option<Timestamp>> {
    let due: Option<i64> = query_one(
        db,
        "SELECT min(due_at) FROM queue
         WHERE client = $1 AND pipeline = $2 AND state IN ('pending', 'failed', 'in_flight')",
        &[&key.client, &key.pipeline],
    )
    .await?
    .try_get(0)?;
    optional_time(due)
}

/// Passengers per pipeline and state, summed from the deltas every write appends.
pub(super) async fn counts(
    db: &impl GenericClient,
    client: Option<&str>,
) -> Result<BTreeMap<PipelineKey, StateCounts>> {
    let rows = query(
        db,
        "SELECT client, pipeline, state, sum(n)::bigint FROM queue_count_deltas
         WHERE $1::text IS NULL OR client = $1
         GROUP BY client, pipeline, state
         HAVING sum(n) > 0",
        &[&client],
    )
    .await?;
    let mut counts: BTreeMap<PipelineKey, StateCounts> = BTreeMap::new();
    for row in &rows {
        let key = PipelineKey::new(row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
        let state = passenger_state(row.try_get(2)?)?;
        let n: i64 = row.try_get(3)?;
        counts.entry(key).or_default().insert(state, n as u64);
    }
    Ok(counts)
}

/// A SELECT built from the filters that are set, with numbered parameters.
struct Filtered {
    sql: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filtered {
    /// Binds `value`; returns its parameter, e.g. `$3`.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.args.push(Box::new(value));
        format!("${}", self.args.len())
    }

    /// Adds ` AND condition`, each `?` in it standing for `value`.
    fn and(&mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) {
        let parameter = self.bind(value);
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition.replace('?', &parameter));
    }

    async fn run(&self, db: &impl GenericClient) -> Result<Vec<Row>> {
        let args: Vec<&(dyn ToSql + Sync)> = self
            .args
            .iter()
            .map(|arg| arg.as_ref() as &(dyn ToSql + Sync))
            .collect();
        query(db, &self.sql, &args).await
    }
}

/// The columns of a queue line, in the order [`queue_entry`] reads them, from
/// [`ENTRY_TABLES`].
const ENTRY_COLUMNS: &str = "p.id, p.client, p.pipeline, p.source_system, p.external_id, \
                             q.state, p.created_at, q.updated_at, q.last_error";

/// A passenger as seated and where it is now.
const ENTRY_TABLES: &str = "passengers p JOIN queue q ON q.seq = p.seq";

/// A page of the queue, newest first (ids are UUIDv7, so by id; by creation time within a
/// time range), after `before`.
pub(super) async fn list(
    db: &impl GenericClient,
    filter: &QueueFilter,
    before: Option<PassengerId>,
    limit: usize,
) -> Result<Vec<QueueEntry>> {
    // A time range of one client pages by creation time through `passengers_created`, from
    // the end of the range backwards.
    let by_time = filter.client.is_some() && (filter.since.is_some() || filter.until.is_some());
    let mut q = Filtered {
        sql: format!("SELECT {ENTRY_COLUMNS} FROM {ENTRY_TABLES} WHERE true"),
        args: Vec::new(),
    };
    if let Some(client) = &filter.client {
        q.and("p.client = ?", client.clone());
    }
    if let Some(pipeline) = &filter.pipeline {
        q.and("p.pipeline = ?", pipeline.clone());
    }
    if let Some(state) = filter.state {
        // A literal (one of seven fixed words): the planner sees that a partial index
        // (`queue_trouble` for failed and dead) applies.
        q.sql
            .push_str(&format!(" AND q.state = '{}'", state.as_str()));
    }
    if let Some(needle) = &filter.text {
        // The index narrows the passengers to its candidates; the exact condition decides.
        if let Some(seqs) = search::candidates(db, needle).await? {
            q.and("p.seq = ANY(?)", seqs);
        }
        q.and(
            "(strpos(p.external_id, ?) > 0 OR strpos(p.source_system, ?) > 0)",
            needle.clone(),
        );
    }
    if let Some(since) = filter.since {
        q.and("p.created_at >= ?", millis(since));
    }
    match before {
        // The cursor, a row inside the range, is the upper bound: one seek however deep.
        Some(before) if by_time => {
            let Some(created_at) = created_at_of(db, before).await? else {
                return Ok(Vec::new());
            };
            let at = q.bind(created_at);
            let id = q.bind(before.0);
            q.sql
                .push_str(&format!(" AND (p.created_at, p.id) < ({at}, {id})"));
        }
        _ => {
            if let Some(until) = filter.until {
                q.and("p.created_at < ?", millis(until));
            }
            if let Some(before) = before {
                q.and("p.id < ?", before.0);
            }
        }
    }
    let order = if by_time {
        "p.created_at DESC, p.id DESC"
    } else {
        "p.id DESC"
    };
    let limit = q.bind(big(limit));
    q.sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));

    let rows = q.run(db).await?;
    rows.iter().map(queue_entry).collect()
}

/// When the passenger was seated, if it is still in the queue.
async fn created_at_of(db: &impl GenericClient, id: PassengerId) -> Result<Option<i64>> {
    let row = query_opt(
        db,
        "SELECT created_at FROM passengers WHERE id = $1",
        &[&id.0],
    )
    .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// A queue line from the columns of [`ENTRY_COLUMNS`].
fn queue_entry(row: &Row) -> Result<QueueEntry> {
    Ok(QueueEntry {
        id: PassengerId(row.try_get(0)?),
        client: row.try_get(1)?,
        pipeline: row.try_get(2)?,
        source_system: row.try_get(3)?,
        external_id: row.try_get(4)?,
        state: passenger_state(row.try_get(5)?)?,
        created_at: time(row.try_get(6)?)?,
        updated_at: time(row.try_get(7)?)?,
        last_error: row.try_get(8)?,
    })
}

/// Everything about one passenger.
pub(super) async fn get(db: &impl GenericClient, id: PassengerId) -> Result<PassengerDetail> {
    let Some(row) = query_opt(
        db,
        &format!(
            "SELECT {ENTRY_COLUMNS}, p.seq,
                    d.metadata, d.media_type, d.body, d.attachments,
                    d.processed_metadata, d.processed_media_type, d.processed_body, p.parent
             FROM {ENTRY_TABLES} JOIN payloads d ON d.seq = p.seq
             WHERE p.id = $1"
        ),
        &[&id.0],
    )
    .await?
    else {
        return Err(StoreError::NotFound(id));
    };
    let entry = queue_entry(&row)?;
    let seq: i64 = row.try_get(9)?;
    let (metadata, body) = rows::content(&row, 10)?;
    let attachment_count: i32 = row.try_get(13)?;
    let processed = match row.try_get::<_, Option<&str>>(15)? {
        None => None,
        Some(_) => Some(rows::content(&row, 14)?),
    };
    let parent = row.try_get::<_, Option<Uuid>>(17)?.map(PassengerId);

    let attachments = if attachment_count > 0 {
        rows::load_attachments(db, &[seq])
            .await?
            .remove(&seq)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let leased = entry.state == PassengerState::InFlight;
    let steps = rows::load_steps(db, &[seq])
        .await?
        .remove(&seq)
        .unwrap_or_default()
        .into_iter()
        .map(|step| journey::step_status(step, leased))
        .collect::<Result<Vec<_>>>()?;
    let attempts = load_attempts(db, seq).await?;
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
async fn load_attempts(db: &impl GenericClient, seq: i64) -> Result<Vec<Attempt>> {
    let rows = query(
        db,
        "SELECT idx, attempt, at, error FROM attempts WHERE seq = $1 ORDER BY id",
        &[&seq],
    )
    .await?;
    let mut attempts = Vec::with_capacity(rows.len());
    for row in &rows {
        attempts.push(Attempt {
            step: small_count(row.try_get::<_, i32>(0)?.into())?,
            attempt: small_count(row.try_get::<_, i32>(1)?.into())?,
            at: time(row.try_get(2)?)?,
            error: row.try_get(3)?,
        });
    }
    Ok(attempts)
}

/// The client and pipeline of a passenger, if it exists.
pub(super) async fn owner(db: &impl GenericClient, id: PassengerId) -> Result<Option<PipelineKey>> {
    let row = query_opt(
        db,
        "SELECT client, pipeline FROM passengers WHERE id = $1",
        &[&id.0],
    )
    .await?;
    match row {
        Some(row) => Ok(Some(PipelineKey::new(
            row.try_get::<_, String>(0)?,
            row.try_get::<_, String>(1)?,
        ))),
        None => Ok(None),
    }
}

/// The passengers split from `parent`, in the order they were seated.
pub(super) async fn children(
    db: &impl GenericClient,
    parent: PassengerId,
) -> Result<Vec<QueueEntry>> {
    let rows = query(
        db,
        &format!("SELECT {ENTRY_COLUMNS} FROM {ENTRY_TABLES} WHERE p.parent = $1 ORDER BY p.seq"),
        &[&parent.0],
    )
    .await?;
    rows.iter().map(queue_entry).collect()
}

/// Dead passengers grouped by pipeline and error, largest group first.
pub(super) async fn dead_groups(
    db: &impl GenericClient,
    client: Option<&str>,
) -> Result<Vec<DeadGroup>> {
    // `state = 'dead'` implies the condition of `queue_trouble`, so only that small index is
    // read. A dead passenger always has an error; `coalesce` keeps the type honest.
    let rows = query(
        db,
        "SELECT client, pipeline, coalesce(last_error, ''), count(*), max(updated_at)
         FROM queue
         WHERE state = 'dead' AND ($1::text IS NULL OR client = $1)
         GROUP BY client, pipeline, coalesce(last_error, '')",
        &[&client],
    )
    .await?;
    let mut groups = Vec::with_capacity(rows.len());
    for row in &rows {
        groups.push(DeadGroup {
            client: row.try_get(0)?,
            pipeline: row.try_get(1)?,
            error: row.try_get(2)?,
            count: row.try_get::<_, i64>(3)?.max(0) as u64,
            newest: time(row.try_get(4)?)?,
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
pub(super) async fn dead_ids(
    db: &impl GenericClient,
    key: &PipelineKey,
    error: &str,
    limit: usize,
) -> Result<Vec<PassengerId>> {
    let rows = query(
        db,
        "SELECT p.id FROM queue q JOIN passengers p ON p.seq = q.seq
         WHERE q.client = $1 AND q.state = 'dead' AND q.pipeline = $2
           AND coalesce(q.last_error, '') = $3
         ORDER BY p.id
         LIMIT $4",
        &[&key.client, &key.pipeline, &error, &big(limit)],
    )
    .await?;
    rows.iter()
        .map(|row| Ok(PassengerId(row.try_get(0)?)))
        .collect()
}

/// The creation time of the oldest passenger with open work, per pipeline.
pub(super) async fn oldest_open(
    db: &impl GenericClient,
) -> Result<BTreeMap<PipelineKey, Timestamp>> {
    let rows = query(
        db,
        "SELECT q.client, q.pipeline, min(p.created_at)
         FROM queue q JOIN passengers p ON p.seq = q.seq
         WHERE q.state IN ('pending', 'failed', 'in_flight')
         GROUP BY q.client, q.pipeline",
        &[],
    )
    .await?;
    let mut oldest = BTreeMap::new();
    for row in &rows {
        let key = PipelineKey::new(row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
        oldest.insert(key, time(row.try_get(2)?)?);
    }
    Ok(oldest)
}
