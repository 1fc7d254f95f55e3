//! Everything besides the queue: definition versions, runs and their logs and throughput,
//! pause flags, puller states.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use ferry_core::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{big, execute, nodes, query, query_one, query_opt};
use crate::convert::{duration_millis, millis, optional_time, time};
use crate::{
    DefinitionVersion, LogLevel, LogLine, NodeId, PipelineKey, PullerState, Result, RunCounts,
    RunFilter, RunId, RunRecord, RunStatus, StoreError, Throughput,
};

/// The error a run gets when ferry died while it ran.
const ABANDONED: &str = "abandoned: ferry stopped while the run was running";

pub(super) async fn record_definition(
    db: &impl GenericClient,
    file: &str,
    hash: &str,
    content: &str,
    now: Timestamp,
) -> Result<bool> {
    let inserted = execute(
        db,
        "INSERT INTO definitions (file, hash, content, loaded_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (file, hash) DO NOTHING",
        &[&file, &hash, &content, &millis(now)],
    )
    .await?;
    Ok(inserted == 1)
}

pub(super) async fn definition_versions(
    db: &impl GenericClient,
    file: &str,
) -> Result<Vec<DefinitionVersion>> {
    let rows = query(
        db,
        "SELECT hash, content, loaded_at FROM definitions
         WHERE file = $1 ORDER BY loaded_at DESC, id DESC",
        &[&file],
    )
    .await?;
    let mut versions = Vec::with_capacity(rows.len());
    for row in &rows {
        versions.push(DefinitionVersion {
            file: file.to_owned(),
            hash: row.try_get(0)?,
            content: row.try_get(1)?,
            loaded_at: time(row.try_get(2)?)?,
        });
    }
    Ok(versions)
}

pub(super) async fn start_run(
    db: &impl GenericClient,
    key: &PipelineKey,
    version: &str,
    node: Option<NodeId>,
    now: Timestamp,
) -> Result<RunId> {
    Ok(query_one(
        db,
        "INSERT INTO runs (client, pipeline, version, started_at, status, node)
         VALUES ($1, $2, $3, $4, 'running', $5)
         RETURNING id",
        &[&key.client, &key.pipeline, &version, &millis(now), &node],
    )
    .await?
    .try_get(0)?)
}

pub(super) async fn log_run(db: &impl GenericClient, run: RunId, lines: &[LogLine]) -> Result<()> {
    let ats: Vec<i64> = lines.iter().map(|line| millis(line.at)).collect();
    let levels: Vec<&str> = lines.iter().map(|line| line.level.as_str()).collect();
    let messages: Vec<&str> = lines.iter().map(|line| line.message.as_str()).collect();
    // Nothing is inserted when the run does not exist; the count tells.
    let inserted = execute(
        db,
        "INSERT INTO run_logs (run, at, level, message)
         SELECT r.id, l.at, l.level, l.message
         FROM runs r,
              unnest($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY
                  AS l(at, level, message, position)
         WHERE r.id = $1
         ORDER BY l.position",
        &[&run, &ats, &levels, &messages],
    )
    .await?;
    if inserted == 0 {
        return Err(run_not_found(run));
    }
    Ok(())
}

pub(super) async fn finish_run(
    db: &impl GenericClient,
    run: RunId,
    status: RunStatus,
    counts: RunCounts,
    error: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    let updated = execute(
        db,
        "UPDATE runs
         SET finished_at = $2, status = $3, pulled = $4, seated = $5, duplicates = $6,
             failed = $7, error = $8
         WHERE id = $1",
        &[
            &run,
            &millis(now),
            &status.as_str(),
            &count(counts.pulled),
            &count(counts.seated),
            &count(counts.duplicates),
            &count(counts.failed),
            &error,
        ],
    )
    .await?;
    if updated == 0 {
        return Err(run_not_found(run));
    }
    Ok(())
}

/// The columns of a run, in the order [`run_record`] reads them.
const RUN_COLUMNS: &str = "id, client, pipeline, version, started_at, finished_at, status, \
                           pulled, seated, duplicates, failed, error";

/// A run from the columns of [`RUN_COLUMNS`].
fn run_record(row: &Row) -> Result<RunRecord> {
    let status: &str = row.try_get(6)?;
    let status = RunStatus::parse(status).ok_or_else(|| {
        StoreError::Backend(format!("unexpected run status `{status}` in the store").into())
    })?;
    Ok(RunRecord {
        id: row.try_get(0)?,
        client: row.try_get(1)?,
        pipeline: row.try_get(2)?,
        version: row.try_get(3)?,
        started_at: time(row.try_get(4)?)?,
        finished_at: optional_time(row.try_get(5)?)?,
        status,
        counts: RunCounts {
            pulled: row.try_get::<_, i64>(7)?.max(0) as u64,
            seated: row.try_get::<_, i64>(8)?.max(0) as u64,
            duplicates: row.try_get::<_, i64>(9)?.max(0) as u64,
            failed: row.try_get::<_, i64>(10)?.max(0) as u64,
        },
        error: row.try_get(11)?,
    })
}

pub(super) async fn runs(
    db: &impl GenericClient,
    key: Option<&PipelineKey>,
    limit: usize,
) -> Result<Vec<RunRecord>> {
    let (client, pipeline) = match key {
        Some(key) => (Some(key.client.as_str()), Some(key.pipeline.as_str())),
        None => (None, None),
    };
    let rows = query(
        db,
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE $1::text IS NULL OR (client = $1 AND pipeline = $2)
             ORDER BY id DESC LIMIT $3"
        ),
        &[&client, &pipeline, &big(limit)],
    )
    .await?;
    rows.iter().map(run_record).collect()
}

/// A page of runs, newest first (by id), after `before`.
pub(super) async fn runs_page(
    db: &impl GenericClient,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: usize,
) -> Result<Vec<RunRecord>> {
    // Built from the filters that are set, like the queue browser's page, so the planner sees
    // which index (`runs_client`, `runs_pipeline`) fits.
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE true");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut and = |sql: &mut String, column: &str, value: Box<dyn ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&format!(" AND {column} ${}", args.len()));
    };
    if let Some(client) = &filter.client {
        and(&mut sql, "client =", Box::new(client.clone()));
    }
    if let Some(pipeline) = &filter.pipeline {
        and(&mut sql, "pipeline =", Box::new(pipeline.clone()));
    }
    if let Some(status) = filter.status {
        and(&mut sql, "status =", Box::new(status.as_str()));
    }
    if let Some(since) = filter.since {
        and(&mut sql, "started_at >=", Box::new(millis(since)));
    }
    if let Some(until) = filter.until {
        and(&mut sql, "started_at <", Box::new(millis(until)));
    }
    if let Some(before) = before {
        and(&mut sql, "id <", Box::new(before));
    }
    args.push(Box::new(big(limit)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|arg| arg.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = query(db, &sql, &params).await?;
    rows.iter().map(run_record).collect()
}

/// One run.
pub(super) async fn run(db: &impl GenericClient, id: RunId) -> Result<Option<RunRecord>> {
    let row = query_opt(
        db,
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
        &[&id],
    )
    .await?;
    row.as_ref().map(run_record).transpose()
}

/// Passengers seated per pipeline and bucket by the runs started since `since`.
pub(super) async fn throughput(
    db: &impl GenericClient,
    client: Option<&str>,
    since: Timestamp,
    bucket: Duration,
) -> Result<Vec<Throughput>> {
    // A run counts in the bucket it started in; a bucket under a millisecond is one.
    // `seated > 0` matches the `runs_throughput` index's condition.
    let bucket = duration_millis(bucket).max(1);
    let rows = query(
        db,
        "SELECT client, pipeline, started_at / $3 * $3 AS bucket, sum(seated)::bigint FROM runs
         WHERE started_at >= $2 AND ($1::text IS NULL OR client = $1) AND seated > 0
         GROUP BY client, pipeline, bucket
         ORDER BY client, pipeline, bucket",
        &[&client, &millis(since), &bucket],
    )
    .await?;
    let mut points = Vec::with_capacity(rows.len());
    for row in &rows {
        points.push(Throughput {
            pipeline: PipelineKey::new(row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?),
            at: time(row.try_get(2)?)?,
            seated: row.try_get::<_, i64>(3)?.max(0) as u64,
        });
    }
    Ok(points)
}

pub(super) async fn run_logs(db: &impl GenericClient, run: RunId) -> Result<Vec<LogLine>> {
    let rows = query(
        db,
        "SELECT at, level, message FROM run_logs WHERE run = $1 ORDER BY id",
        &[&run],
    )
    .await?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        let level: &str = row.try_get(1)?;
        let level = LogLevel::parse(level).ok_or_else(|| {
            StoreError::Backend(format!("unexpected log level `{level}` in the store").into())
        })?;
        lines.push(LogLine {
            at: time(row.try_get(0)?)?,
            level,
            message: row.try_get(2)?,
        });
    }
    Ok(lines)
}

/// Deletes the client's finished runs that finished before `before`; their logs go with them
/// (the foreign key cascades). A running run is never purged.
pub(super) async fn purge_runs(
    db: &impl GenericClient,
    client: &str,
    before: Timestamp,
) -> Result<u64> {
    let deleted = execute(
        db,
        "DELETE FROM runs WHERE client = $1 AND status <> 'running' AND finished_at < $2",
        &[&client, &millis(before)],
    )
    .await?;
    // Claimed schedule slots that old are never claimed again.
    execute(
        db,
        "DELETE FROM run_claims WHERE client = $1 AND slot < $2",
        &[&client, &millis(before)],
    )
    .await?;
    Ok(deleted)
}

/// Fails the running runs of nodes that no longer run.
pub(super) async fn abandon_running_runs(
    db: &impl GenericClient,
    dead_before: Timestamp,
    own: Option<NodeId>,
    now: Timestamp,
) -> Result<u64> {
    execute(
        db,
        &format!(
            "UPDATE runs SET status = 'failed', finished_at = $1, error = coalesce(error, $2)
             WHERE status = 'running' AND {}",
            nodes::dead("runs.node", 3, 4)
        ),
        &[&millis(now), &ABANDONED, &millis(dead_before), &own],
    )
    .await
}

pub(super) async fn set_paused(
    db: &impl GenericClient,
    key: &PipelineKey,
    paused: bool,
) -> Result<()> {
    execute(
        db,
        "INSERT INTO pipeline_flags (client, pipeline, paused) VALUES ($1, $2, $3)
         ON CONFLICT (client, pipeline) DO UPDATE SET paused = excluded.paused, reason = NULL",
        &[&key.client, &key.pipeline, &paused],
    )
    .await?;
    Ok(())
}

pub(super) async fn pause_for(
    db: &impl GenericClient,
    key: &PipelineKey,
    reason: &str,
) -> Result<()> {
    execute(
        db,
        "INSERT INTO pipeline_flags (client, pipeline, paused, reason) VALUES ($1, $2, true, $3)
         ON CONFLICT (client, pipeline) DO UPDATE SET paused = true, reason = excluded.reason",
        &[&key.client, &key.pipeline, &reason],
    )
    .await?;
    Ok(())
}

pub(super) async fn pause_reasons(
    db: &impl GenericClient,
) -> Result<BTreeMap<PipelineKey, String>> {
    let rows = query(
        db,
        "SELECT client, pipeline, reason FROM pipeline_flags
         WHERE paused AND reason IS NOT NULL",
        &[],
    )
    .await?;
    let mut reasons = BTreeMap::new();
    for row in &rows {
        let key = PipelineKey::new(row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
        reasons.insert(key, row.try_get(2)?);
    }
    Ok(reasons)
}

pub(super) async fn paused(db: &impl GenericClient) -> Result<Vec<PipelineKey>> {
    let rows = query(
        db,
        "SELECT client, pipeline FROM pipeline_flags WHERE paused ORDER BY client, pipeline",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PipelineKey::new(
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
            ))
        })
        .collect()
}

pub(super) async fn set_puller_state(
    db: &impl GenericClient,
    key: &PipelineKey,
    state: &PullerState,
    now: Timestamp,
) -> Result<()> {
    execute(
        db,
        "INSERT INTO puller_states (client, pipeline, puller, state, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (client, pipeline, puller)
         DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        &[
            &key.client,
            &key.pipeline,
            &state.puller,
            &state.state,
            &millis(now),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn puller_state(
    db: &impl GenericClient,
    key: &PipelineKey,
    puller: &str,
) -> Result<Option<String>> {
    let row = query_opt(
        db,
        "SELECT state FROM puller_states WHERE client = $1 AND pipeline = $2 AND puller = $3",
        &[&key.client, &key.pipeline, &puller],
    )
    .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

fn run_not_found(run: RunId) -> StoreError {
    StoreError::Backend(format!("run {run} not found").into())
}

/// A run count as the `bigint` column stores it; counts beyond `i64::MAX` do not happen.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
