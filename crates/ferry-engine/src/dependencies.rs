//! `depends_on`: a pipeline runs once every one of its masters has succeeded since its own last
//! run started (a *cycle*). Masters count as done when their run succeeded; runs of pipelines
//! in a dependency chain end when their passengers are delivered (`run_ends`), so a slave
//! starts only after its masters' data arrived.
//!
//! The cycle is read from the runs in the store, so a master that ran on another node counts,
//! and a restart forgets nothing. A pipeline that never ran waits for masters that succeed
//! after this process started.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::Timestamp;
use ferry_store::{PipelineKey, RunFilter, RunId, RunStatus, StoreError};
use tokio::sync::broadcast::Receiver;

use crate::{Active, Event, Shared};

/// Looks at the runs whenever a run finishes here, and every `idle_poll` for runs that
/// finished on other nodes; starts the pipelines whose masters all succeeded. `started` is
/// when the engine started, before any of its runs.
pub(crate) async fn follow(shared: Arc<Shared>, mut events: Receiver<Event>, started: Timestamp) {
    // Slave → the masters' runs that started its last cycle here, so one cycle starts it once.
    let mut started_by: HashMap<PipelineKey, Vec<RunId>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = events.recv() => {}
            _ = tokio::time::sleep(shared.options.idle_poll) => {}
        }
        for slave in shared.active() {
            if slave.def.depends_on.is_empty() {
                continue;
            }
            let masters = match masters_done(&shared, &slave, started).await {
                Ok(Some(masters)) => masters,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(pipeline = %slave.key, %error, "cannot read the masters' runs");
                    continue;
                }
            };
            if started_by.get(&slave.key) == Some(&masters) {
                continue;
            }
            started_by.insert(slave.key.clone(), masters);
            tracing::info!(pipeline = %slave.key, "every master succeeded; running");
            slave.masters_done.notify_one();
        }
    }
}

/// The runs by which every master of `slave` succeeded since the slave's last run started (or,
/// when it never ran, since `started`); `None` while a master has not.
async fn masters_done(
    shared: &Shared,
    slave: &Active,
    started: Timestamp,
) -> Result<Option<Vec<RunId>>, StoreError> {
    let store = &shared.store;
    let since = match store.runs(Some(&slave.key), 1).await?.first() {
        Some(last) => last.started_at,
        None => started,
    };
    let mut runs = Vec::with_capacity(slave.def.depends_on.len());
    for master in &slave.def.depends_on {
        let filter = RunFilter {
            client: Some(slave.key.client.clone()),
            pipeline: Some(master.clone()),
            status: Some(RunStatus::Succeeded),
            since: Some(since),
            until: None,
        };
        match store.runs_page(&filter, None, 1).await?.first() {
            Some(run) => runs.push(run.id),
            None => return Ok(None),
        }
    }
    Ok(Some(runs))
}
