//! Nodes: the processes working the store, their heartbeats, claimed schedule slots and who
//! pulls which pipeline.

use ferry_core::Timestamp;
use rusqlite::{Connection, params};

use super::convert::{millis, time};
use crate::{Node, NodeId, PipelineKey, Result};

/// The condition "the node in column `column` no longer runs": unregistered, or its last
/// heartbeat is before parameter `?{dead_before}`; parameter `?{own}` (this handle's node)
/// always runs.
pub(super) fn dead(column: &str, dead_before: usize, own: usize) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM nodes
                     WHERE nodes.id = {column} AND (nodes.heartbeat_at >= ?{dead_before}
                                                    OR nodes.id = ?{own}))"
    )
}

pub(super) fn join(conn: &Connection, name: &str, now: Timestamp) -> Result<NodeId> {
    let now = millis(now);
    Ok(conn
        .prepare_cached(
            "INSERT INTO nodes (name, started_at, heartbeat_at) VALUES (?1, ?2, ?2) RETURNING id",
        )?
        .query_row(params![name, now], |row| row.get(0))?)
}

pub(super) fn heartbeat(conn: &Connection, node: NodeId, now: Timestamp) -> Result<bool> {
    let updated = conn
        .prepare_cached("UPDATE nodes SET heartbeat_at = max(heartbeat_at, ?2) WHERE id = ?1")?
        .execute(params![node, millis(now)])?;
    Ok(updated == 1)
}

pub(super) fn nodes(conn: &Connection) -> Result<Vec<Node>> {
    let mut select =
        conn.prepare_cached("SELECT id, name, started_at, heartbeat_at FROM nodes ORDER BY id")?;
    let mut rows = select.query([])?;
    let mut nodes = Vec::new();
    while let Some(row) = rows.next()? {
        nodes.push(Node {
            id: row.get(0)?,
            name: row.get(1)?,
            started_at: time(row.get(2)?)?,
            heartbeat_at: time(row.get(3)?)?,
        });
    }
    Ok(nodes)
}

pub(super) fn forget(
    conn: &Connection,
    dead_before: Timestamp,
    own: Option<NodeId>,
    leaving: bool,
) -> Result<u64> {
    let forgotten = conn
        .prepare_cached(
            "DELETE FROM nodes
             WHERE (heartbeat_at < ?1 AND id IS NOT ?2) OR (?3 AND id IS ?2)",
        )?
        .execute(params![millis(dead_before), own, leaving])?;
    if leaving && let Some(own) = own {
        conn.prepare_cached("DELETE FROM pull_leases WHERE node = ?1")?
            .execute([own])?;
    }
    Ok(forgotten as u64)
}

pub(super) fn claim_slot(
    conn: &Connection,
    key: &PipelineKey,
    slot: Timestamp,
    own: Option<NodeId>,
) -> Result<bool> {
    let claimed = conn
        .prepare_cached(
            "INSERT INTO run_claims (client, pipeline, slot, node) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            key.client,
            key.pipeline,
            millis(slot),
            own.unwrap_or(0)
        ])?;
    Ok(claimed == 1)
}

/// Takes the pipeline's pull right when it is free, expired or already this node's.
pub(super) fn hold_pull(
    conn: &Connection,
    key: &PipelineKey,
    own: Option<NodeId>,
    until: Timestamp,
    now: Timestamp,
) -> Result<bool> {
    let held = conn
        .prepare_cached(
            "INSERT INTO pull_leases AS held (client, pipeline, node, until)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (client, pipeline) DO UPDATE
             SET node = excluded.node, until = excluded.until
             WHERE held.node = excluded.node OR held.until <= ?5",
        )?
        .execute(params![
            key.client,
            key.pipeline,
            own.unwrap_or(0),
            millis(until),
            millis(now)
        ])?;
    Ok(held == 1)
}

pub(super) fn drop_pull(conn: &Connection, key: &PipelineKey, own: Option<NodeId>) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM pull_leases WHERE client = ?1 AND pipeline = ?2 AND node = ?3",
    )?
    .execute(params![key.client, key.pipeline, own.unwrap_or(0)])?;
    Ok(())
}
