//! Everything besides the queue: definition versions, runs and their logs and throughput,
//! pause flags.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::convert::{duration_millis, millis, optional_time, text, time};
use super::filtered::Filtered;
use super::nodes;
use crate::{
    DefinitionVersion, LogLevel, LogLine, NodeId, PipelineKey, PullerState, Result, RunCounts,
    RunFilter, RunId, RunRecord, RunStatus, StoreError, Throughput,
};

/// The error a run gets when ferry died while it ran.
const ABANDONED: &str = "abandoned: ferry stopped while the run was running";

pub(super) fn record_definition(
    conn: &Connection,
    file: &str,
    hash: &str,
    content: &str,
    now: Timestamp,
) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO definitions (file, hash, content, loaded_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (file, hash) DO NOTHING",
        )?
        .execute(params![file, hash, content, millis(now)])?;
    Ok(inserted == 1)
}

pub(super) fn definition_versions(conn: &Connection, file: &str) -> Result<Vec<DefinitionVersion>> {
    let mut select = conn.prepare_cached(
        "SELECT hash, content, loaded_at FROM definitions
         WHERE file = ?1 ORDER BY loaded_at DESC, rowid DESC",
    )?;
    let mut rows = select.query([file])?;
    let mut versions = Vec::new();
    while let Some(row) = rows.next()? {
        versions.push(DefinitionVersion {
            file: file.to_owned(),
            hash: row.get(0)?,
            content: row.get(1)?,
            loaded_at: time(row.get(2)?)?,
        });
    }
    Ok(versions)
}

pub(super) fn start_run(
    conn: &Connection,
    key: &PipelineKey,
    version: &str,
    node: Option<NodeId>,
    now: Timestamp,
) -> Result<RunId> {
    let id = conn
        .prepare_cached(
            "INSERT INTO runs (client, pipeline, version, started_at, status, node)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5)
             RETURNING id",
        )?
        .query_row(
            params![key.client, key.pipeline, version, millis(now), node],
            |row| row.get(0),
        )?;
    Ok(id)
}

pub(super) fn log_run(conn: &Connection, run: RunId, lines: &[LogLine]) -> Result<()> {
    ensure_run_exists(conn, run)?;
    let mut insert = conn
        .prepare_cached("INSERT INTO run_logs (run, at, level, message) VALUES (?1, ?2, ?3, ?4)")?;
    for line in lines {
        insert.execute(params![
            run,
            millis(line.at),
            line.level.as_str(),
            line.message
        ])?;
    }
    Ok(())
}

pub(super) fn finish_run(
    conn: &Connection,
    run: RunId,
    status: RunStatus,
    counts: RunCounts,
    error: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE runs
             SET finished_at = ?2, status = ?3, pulled = ?4, seated = ?5, duplicates = ?6,
                 failed = ?7, error = ?8
             WHERE id = ?1",
        )?
        .execute(params![
            run,
            millis(now),
            status.as_str(),
            count(counts.pulled),
            count(counts.seated),
            count(counts.duplicates),
            count(counts.failed),
            error,
        ])?;
    if updated == 0 {
        return Err(run_not_found(run));
    }
    Ok(())
}

pub(super) fn runs(
    conn: &Connection,
    key: Option<&PipelineKey>,
    limit: usize,
) -> Result<Vec<RunRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (client, pipeline) = match key {
        Some(key) => (Some(key.client.as_str()), Some(key.pipeline.as_str())),
        None => (None, None),
    };
    let mut select = conn.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE (?1 IS NULL OR (client = ?1 AND pipeline = ?2))
         ORDER BY id DESC LIMIT ?3"
    ))?;
    let mut rows = select.query(params![client, pipeline, limit])?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next()? {
        runs.push(run_record(row)?);
    }
    Ok(runs)
}

/// The columns of a run, in the order [`run_record`] reads them.
const RUN_COLUMNS: &str = "id, client, pipeline, version, started_at, finished_at, status, \
                           pulled, seated, duplicates, failed, error";

/// A run from the columns of [`RUN_COLUMNS`].
fn run_record(row: &rusqlite::Row<'_>) -> Result<RunRecord> {
    let status = text(row, 6)?;
    let status = RunStatus::parse(status).ok_or_else(|| {
        StoreError::Backend(format!("unexpected run status `{status}` in the store").into())
    })?;
    Ok(RunRecord {
        id: row.get(0)?,
        client: row.get(1)?,
        pipeline: row.get(2)?,
        version: row.get(3)?,
        started_at: time(row.get(4)?)?,
        finished_at: optional_time(row.get(5)?)?,
        status,
        counts: RunCounts {
            pulled: row.get::<_, i64>(7)? as u64,
            seated: row.get::<_, i64>(8)? as u64,
            duplicates: row.get::<_, i64>(9)? as u64,
            failed: row.get::<_, i64>(10)? as u64,
        },
        error: row.get(11)?,
    })
}

/// A page of runs, newest first (by id), after `before`.
pub(super) fn runs_page(
    conn: &Connection,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: usize,
) -> Result<Vec<RunRecord>> {
    // Built from the filters that are set, like the queue browser's page: a condition the
    // planner can see picks `runs_client` or `runs_pipeline`, which hold the ids in order.
    let mut q = Filtered::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"));
    if let Some(client) = &filter.client {
        q.and("client = ?", Value::Text(client.clone()));
    }
    if let Some(pipeline) = &filter.pipeline {
        q.and("pipeline = ?", Value::Text(pipeline.clone()));
    }
    if let Some(status) = filter.status {
        // One of four fixed words, so a literal is safe; it keeps the statement's text, and
        // so its cached plan, the same for every page.
        q.push(&format!(" AND status = '{}'", status.as_str()));
    }
    if let Some(since) = filter.since {
        q.and("started_at >= ?", Value::Integer(millis(since)));
    }
    if let Some(until) = filter.until {
        q.and("started_at < ?", Value::Integer(millis(until)));
    }
    if let Some(before) = before {
        q.and("id < ?", Value::Integer(before));
    }
    let limit = q.bind(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    q.push(&format!(" ORDER BY id DESC LIMIT {limit}"));

    let mut select = conn.prepare_cached(&q.sql)?;
    let mut rows = select.query(params_from_iter(q.args))?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next()? {
        runs.push(run_record(row)?);
    }
    Ok(runs)
}

/// One run.
pub(super) fn run(conn: &Connection, id: RunId) -> Result<Option<RunRecord>> {
    let mut select =
        conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?;
    let mut rows = select.query([id])?;
    match rows.next()? {
        Some(row) => Ok(Some(run_record(row)?)),
        None => Ok(None),
    }
}

/// Passengers seated per pipeline and bucket by the runs started since `since`.
pub(super) fn throughput(
    conn: &Connection,
    client: Option<&str>,
    since: Timestamp,
    bucket: Duration,
) -> Result<Vec<Throughput>> {
    // A run counts in the bucket it started in. A bucket under a millisecond would divide by
    // zero (NULL in SQLite); it is one millisecond instead. `seated > 0` repeats the
    // `runs_throughput` index's condition, so the sums are read from that index alone.
    let bucket = duration_millis(bucket).max(1);
    let mut select = conn.prepare_cached(
        "SELECT client, pipeline, started_at / ?3 * ?3 AS bucket, sum(seated) FROM runs
         WHERE started_at >= ?2 AND (?1 IS NULL OR client = ?1) AND seated > 0
         GROUP BY client, pipeline, bucket
         ORDER BY client, pipeline, bucket",
    )?;
    let mut rows = select.query(params![client, millis(since), bucket])?;
    let mut points = Vec::new();
    while let Some(row) = rows.next()? {
        points.push(Throughput {
            pipeline: PipelineKey::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?),
            at: time(row.get(2)?)?,
            seated: row.get::<_, i64>(3)?.max(0) as u64,
        });
    }
    Ok(points)
}

pub(super) fn run_logs(conn: &Connection, run: RunId) -> Result<Vec<LogLine>> {
    let mut select = conn
        .prepare_cached("SELECT at, level, message FROM run_logs WHERE run = ?1 ORDER BY rowid")?;
    let mut rows = select.query([run])?;
    let mut lines = Vec::new();
    while let Some(row) = rows.next()? {
        let level = text(row, 1)?;
        let level = LogLevel::parse(level).ok_or_else(|| {
            StoreError::Backend(format!("unexpected log level `{level}` in the store").into())
        })?;
        lines.push(LogLine {
            at: time(row.get(0)?)?,
            level,
            message: row.get(2)?,
        });
    }
    Ok(lines)
}

pub(super) fn purge_runs(conn: &Connection, client: &str, before: Timestamp) -> Result<u64> {
    // The condition repeats the `runs_finished` index's: a running run is never purged.
    let params = params![client, millis(before)];
    conn.prepare_cached(
        "DELETE FROM run_logs WHERE run IN (
             SELECT id FROM runs
             WHERE client = ?1 AND status <> 'running' AND finished_at < ?2)",
    )?
    .execute(params)?;
    let deleted = conn
        .prepare_cached(
            "DELETE FROM runs WHERE client = ?1 AND status <> 'running' AND finished_at < ?2",
        )?
        .execute(params)?;
    // Claimed schedule slots that old are never claimed again.
    conn.prepare_cached("DELETE FROM run_claims WHERE client = ?1 AND slot < ?2")?
        .execute(params)?;
    Ok(deleted as u64)
}

/// Fails the running runs of nodes that no longer run.
pub(super) fn abandon_running_runs(
    conn: &Connection,
    dead_before: Timestamp,
    own: Option<NodeId>,
    now: Timestamp,
) -> Result<u64> {
    let abandoned = conn
        .prepare_cached(&format!(
            "UPDATE runs SET status = 'failed', finished_at = ?1, error = coalesce(error, ?2)
             WHERE status = 'running' AND {}",
            nodes::dead("runs.node", 3, 4)
        ))?
        .execute(params![millis(now), ABANDONED, millis(dead_before), own])?;
    Ok(abandoned as u64)
}

pub(super) fn set_paused(conn: &Connection, key: &PipelineKey, paused: bool) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO pipeline_flags (client, pipeline, paused) VALUES (?1, ?2, ?3)
         ON CONFLICT (client, pipeline) DO UPDATE SET paused = excluded.paused, reason = NULL",
    )?
    .execute(params![key.client, key.pipeline, paused])?;
    Ok(())
}

pub(super) fn pause_for(conn: &Connection, key: &PipelineKey, reason: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO pipeline_flags (client, pipeline, paused, reason) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (client, pipeline) DO UPDATE SET paused = 1, reason = excluded.reason",
    )?
    .execute(params![key.client, key.pipeline, reason])?;
    Ok(())
}

pub(super) fn pause_reasons(conn: &Connection) -> Result<BTreeMap<PipelineKey, String>> {
    let mut select = conn.prepare_cached(
        "SELECT client, pipeline, reason FROM pipeline_flags
         WHERE paused = 1 AND reason IS NOT NULL",
    )?;
    let mut rows = select.query([])?;
    let mut reasons = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let key = PipelineKey::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
        reasons.insert(key, row.get(2)?);
    }
    Ok(reasons)
}

pub(super) fn set_puller_state(
    conn: &Connection,
    key: &PipelineKey,
    state: &PullerState,
    now: Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO puller_states (client, pipeline, puller, state, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (client, pipeline, puller)
         DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )?
    .execute(params![
        key.client,
        key.pipeline,
        state.puller,
        state.state,
        millis(now)
    ])?;
    Ok(())
}

pub(super) fn puller_state(
    conn: &Connection,
    key: &PipelineKey,
    puller: &str,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT state FROM puller_states WHERE client = ?1 AND pipeline = ?2 AND puller = ?3",
        )?
        .query_row(params![key.client, key.pipeline, puller], |row| row.get(0))
        .optional()?)
}

pub(super) fn paused(conn: &Connection) -> Result<Vec<PipelineKey>> {
    let mut select = conn.prepare_cached(
        "SELECT client, pipeline FROM pipeline_flags WHERE paused = 1 ORDER BY client, pipeline",
    )?;
    let mut rows = select.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        keys.push(PipelineKey::new(
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
        ));
    }
    Ok(keys)
}

fn ensure_run_exists(conn: &Connection, run: RunId) -> Result<()> {
    let found = conn
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?
        .query_row([run], |_| Ok(()))
        .optional()?;
    found.ok_or_else(|| run_not_found(run))
}

fn run_not_found(run: RunId) -> StoreError {
    StoreError::Backend(format!("run {run} not found").into())
}

/// A run count as SQLite stores it; counts beyond `i64::MAX` do not happen.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
