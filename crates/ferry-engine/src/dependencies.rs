//! `depends_on`: a pipeline runs once every one of its masters has succeeded since its own last
//! run (a *cycle*). Masters count as done when their run succeeded; runs of pipelines in a
//! dependency chain end when their passengers are delivered (`run_ends`), so a slave starts
//! only after its masters' data arrived.
//!
//! The cycle is kept in memory: after a restart every master must succeed again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ferry_store::{PipelineKey, RunStatus};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::{Event, Shared};

/// Follows finished runs and starts the pipelines whose masters all succeeded.
pub(crate) async fn follow(shared: Arc<Shared>, mut events: Receiver<Event>) {
    // Slave → the masters that succeeded in its current cycle.
    let mut succeeded: HashMap<PipelineKey, BTreeSet<String>> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let (master, status) = match event {
            Ok(Event::RunFinished {
                pipeline, status, ..
            }) => (pipeline, status),
            // A slave's own run starts its next cycle.
            Ok(Event::RunStarted { pipeline, .. }) => {
                succeeded.remove(&pipeline);
                continue;
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "dependency tracking missed events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if status != RunStatus::Succeeded {
            continue;
        }
        for slave in shared.active() {
            let def = &slave.def;
            if def.client != master.client || !def.depends_on.contains(&master.pipeline) {
                continue;
            }
            let done = succeeded.entry(slave.key.clone()).or_default();
            done.insert(master.pipeline.clone());
            if def.depends_on.iter().all(|m| done.contains(m)) {
                succeeded.remove(&slave.key);
                tracing::info!(pipeline = %slave.key, "every master succeeded; running");
                slave.masters_done.notify_one();
            }
        }
    }
}
