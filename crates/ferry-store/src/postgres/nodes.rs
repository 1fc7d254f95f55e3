//! Nodes: the processes working the store, their heartbeats, claimed schedule slots and who
//! pulls which pipeline.

use deadpool_postgres::GenericClient;
use ferry_core::Timestamp;

use super::{execute, query, query_one};
use crate::convert::{millis, time};
use crate::{Node, NodeId, PipelineKey, Result};

/// The condition "the node in column `column` no longer runs": unregistered, or its last
/// heartbeat is before parameter `$dead_before`; parameter `$own` (this handle's node) always
/// runs.
pub(super) fn dead(column: &str, dead_before: usize, own: usize) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM nodes
                     WHERE nodes.id = {column} AND (nodes.heartbeat_at >= ${dead_before}
                                                    OR nodes.id = ${own}))"
    )
}

pub(super) async fn join(db: &impl GenericClient, name: &str, now: Timestamp) -> Result<NodeId> {
    Ok(query_one(
        db,
        "INSERT INTO nodes (name, started_at, heartbeat_at) VALUES ($1, $2, $2) RETURNING id",
        &[&name, &millis(now)],
    )
    .await?
    .try_get(0)?)
}

pub(super) async fn heartbeat(
    db: &impl GenericClient,
    node: NodeId,
    now: Timestamp,
) -> Result<bool> {
    let updated = execute(
        db,
        "UPDATE nodes SET heartbeat_at = greatest(heartbeat_at, $2) WHERE id = $1",
        &[&node, &millis(now)],
    )
    .await?;
    Ok(updated == 1)
}

pub(super) async fn nodes(db: &impl GenericClient) -> Result<Vec<Node>> {
    let rows = query(
        db,
        "SELECT id, name, started_at, heartbeat_at FROM nodes ORDER BY id",
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Node {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                started_at: time(row.try_get(2)?)?,
                heartbeat_at: time(row.try_get(3)?)?,
            })
        })
        .collect()
}

pub(super) async fn forget(
    db: &impl GenericClient,
    dead_before: Timestamp,
    own: Option<NodeId>,
    leaving: bool,
) -> Result<u64> {
    let forgotten = execute(
        db,
        "DELETE FROM nodes
         WHERE (heartbeat_at < $1 AND id IS DISTINCT FROM $2) OR ($3 AND id = $2)",
        &[&millis(dead_before), &own, &leaving],
    )
    .await?;
    if leaving && let Some(own) = own {
        execute(db, "DELETE FROM pull_leases WHERE node = $1", &[&own]).await?;
    }
    Ok(forgotten)
}

pub(super) async fn claim_slot(
    db: &impl GenericClient,
    key: &PipelineKey,
    slot: Timestamp,
    own: Option<NodeId>,
) -> Result<bool> {
    let claimed = execute(
        db,
        "INSERT INTO run_claims (client, pipeline, slot, node) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[&key.client, &key.pipeline, &millis(slot), &own.unwrap_or(0)],
    )
    .await?;
    Ok(claimed == 1)
}

/// Takes the pipeline's pull right when it is free, expired or already this node's, in one
/// statement: two nodes asking at once cannot both get it.
pub(super) async fn hold_pull(
    db: &impl GenericClient,
    key: &PipelineKey,
    own: Option<NodeId>,
    until: Timestamp,
    now: Timestamp,
) -> Result<bool> {
    let held = execute(
        db,
        "INSERT INTO pull_leases AS held (client, pipeline, node, until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (client, pipeline) DO UPDATE SET node = excluded.node, until = excluded.until
         WHERE held.node = excluded.node OR held.until <= $5",
        &[
            &key.client,
            &key.pipeline,
            &own.unwrap_or(0),
            &millis(until),
            &millis(now),
        ],
    )
    .await?;
    Ok(held == 1)
}

pub(super) async fn drop_pull(
    db: &impl GenericClient,
    key: &PipelineKey,
    own: Option<NodeId>,
) -> Result<()> {
    execute(
        db,
        "DELETE FROM pull_leases WHERE client = $1 AND pipeline = $2 AND node = $3",
        &[&key.client, &key.pipeline, &own.unwrap_or(0)],
    )
    .await?;
    Ok(())
}
