//! This process as one node of the store: it joins at start, heartbeats while it runs, takes
//! back the work of nodes whose heartbeat stopped (their leases, their running runs), keeps the
//! pipelines it pulls, follows what people did on other nodes (pause flags), and leaves at
//! shutdown.
//!
//! A store one process works at a time (SQLite: `ferry run` locks the project) has no other
//! living node once this one starts, so everything another node held comes back at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_core::Timestamp;
use ferry_core::config::Project;
use ferry_store::{PipelineKey, StepState, Store};

use crate::{EngineError, Event, Options, Shared, policy};

/// The reason recorded for an attempt that a process's death interrupted.
pub const INTERRUPTED: &str = "the process stopped while handling it";

/// How this process shows among the nodes: host and process id.
fn name() -> String {
    let host = hostname::get()
        .map(|host| host.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown host".into());
    format!("{host} pid {}", std::process::id())
}

/// Joins the store as a node and takes back what dead nodes left behind.
pub(crate) async fn join(
    store: &dyn Store,
    project: &Project,
    options: &Options,
) -> Result<(), EngineError> {
    let now = chrono::Utc::now();
    store.join(&name(), now).await?;
    // Alone on the store, every other node is dead however recent its last heartbeat.
    let dead_before = if store.is_shared() {
        now - options.node_timeout
    } else {
        now
    };
    recover(store, project, dead_before).await
}

/// Fails the running runs of the nodes silent since `dead_before`, counts the attempts they
/// were making, gives their leases back and forgets them.
async fn recover(
    store: &dyn Store,
    project: &Project,
    dead_before: Timestamp,
) -> Result<(), EngineError> {
    let now = chrono::Utc::now();
    let abandoned = store.abandon_running_runs(dead_before, now).await?;
    if abandoned > 0 {
        tracing::warn!(
            abandoned,
            "runs of a ferry process that stopped unexpectedly marked failed"
        );
    }
    let interrupted = count_interrupted_attempts(store, project, dead_before).await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "passengers in flight when a ferry process stopped unexpectedly: the attempt counts"
        );
    }
    let recovered = store.recover_leases(dead_before, now).await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "passengers leased by a ferry process that stopped unexpectedly are due again"
        );
    }
    store.forget_nodes(dead_before, false).await?;
    Ok(())
}

/// Counts an attempt for every step that was due in a lease of a node that died, under its
/// pipeline's retry policy (issue 12): a passenger that kills the process goes dead after its
/// attempts instead of crash-looping. Which step killed it is not known, so every step due in
/// the lease is charged. Those passengers are then leased alone, so that their batch-mates are
/// not charged again. Returns how many passengers it charged.
async fn count_interrupted_attempts(
    store: &dyn Store,
    project: &Project,
    dead_before: Timestamp,
) -> Result<usize, EngineError> {
    let now = chrono::Utc::now();
    let error = ferry_core::StepError::retryable(INTERRUPTED);
    let mut reports = Vec::new();
    for lease in store.abandoned_leases(dead_before).await? {
        // A pipeline no longer defined has no policy; its lease is just given back.
        let Some(pipeline) = project.pipeline(&lease.pipeline.client, &lease.pipeline.pipeline)
        else {
            continue;
        };
        let mut steps = Vec::new();
        for step in &lease.steps {
            let waiting = step.next_try_at.is_some_and(|at| at > now);
            if step.state == StepState::InFlight && !waiting {
                let change = policy::on_failure(&pipeline.retry, step.attempts, &error, now);
                steps.push((step.index, change));
            }
        }
        if steps.is_empty() {
            continue;
        }
        reports.push(ferry_store::Finished {
            id: lease.id,
            token: lease.token,
            processed: None,
            steps,
            split: None,
        });
    }
    Ok(store.record_interrupted(&reports, now).await?)
}

/// While the engine runs: follows the pause flags every `idle_poll` (a person may have acted
/// on another node), and every `heartbeat` says this node is alive, renews the pipelines it
/// pulls and, on a shared store, takes back what nodes silent for `node_timeout` held.
pub(crate) async fn keep_alive(shared: Arc<Shared>) {
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(shared.options.idle_poll) => {}
        }
        follow_flags(&shared).await;
        if last_beat.elapsed() < shared.options.heartbeat {
            continue;
        }
        last_beat = tokio::time::Instant::now();
        let now = chrono::Utc::now();
        match shared.store.heartbeat(now).await {
            Ok(true) => {}
            Ok(false) => {
                // Others took this node for dead and took back its leases; what its workers
                // hold now is superseded (their reports will not apply). Carry on as new.
                tracing::error!(
                    "this node's heartbeat came too late and others took back its work; joining again"
                );
                if let Err(error) = shared.store.join(&name(), now).await {
                    tracing::error!(%error, "cannot join the store again");
                }
                shared.holds.lock().expect("holds lock").clear();
            }
            Err(error) => {
                tracing::error!(%error, "cannot record this node's heartbeat");
                continue;
            }
        }
        if !shared.store.is_shared() {
            continue;
        }
        // Renew the pipelines still running here; the holds of removed ones simply expire.
        let held: Vec<PipelineKey> = {
            let running = shared.pipelines.read().expect("pipelines lock");
            let mut holds = shared.holds.lock().expect("holds lock");
            holds.retain(|key| running.contains_key(key));
            holds.iter().cloned().collect()
        };
        for key in held {
            hold(&shared, &key).await;
        }
        // Only when a node stopped is there anything to take back.
        let dead_before = now - shared.options.node_timeout;
        match shared.store.nodes().await {
            Ok(nodes) if nodes.iter().any(|node| node.heartbeat_at < dead_before) => {}
            Ok(_) => continue,
            Err(error) => {
                tracing::error!(%error, "cannot read the nodes");
                continue;
            }
        }
        let project = shared.project.read().expect("project lock").clone();
        if let Err(error) = recover(shared.store.as_ref(), &project, dead_before).await {
            tracing::error!(%error, "cannot take back the work of stopped nodes");
        }
    }
}

/// Takes or renews this node's right to pull the pipeline; `false` while another node has it.
/// On a store one process works at a time, this node always has it.
pub(crate) async fn hold(shared: &Shared, key: &PipelineKey) -> bool {
    if !shared.store.is_shared() {
        return true;
    }
    let now = chrono::Utc::now();
    let held = match shared
        .store
        .hold_pull(key, now + shared.options.node_timeout, now)
        .await
    {
        Ok(held) => held,
        Err(error) => {
            tracing::error!(pipeline = %key, %error, "cannot take the right to pull");
            false
        }
    };
    let mut holds = shared.holds.lock().expect("holds lock");
    if held {
        holds.insert(key.clone());
    } else if holds.remove(key) {
        tracing::warn!(pipeline = %key, "another node pulls this pipeline now");
    }
    held
}

/// Takes the pause flags from the store, announcing the changes made elsewhere.
async fn follow_flags(shared: &Shared) {
    let changes = shared.paused_changes.load(Ordering::SeqCst);
    let stored: HashSet<PipelineKey> = match shared.store.paused().await {
        Ok(paused) => paused.into_iter().collect(),
        Err(error) => {
            tracing::error!(%error, "cannot read the pause flags");
            return;
        }
    };
    let mut flags = shared.paused.write().expect("paused lock");
    // Changed here meanwhile: what was read may be older than that change.
    if *flags == stored || shared.paused_changes.load(Ordering::SeqCst) != changes {
        return;
    }
    let mut events = Vec::new();
    for key in stored.difference(&flags) {
        events.push(Event::PipelinePaused {
            pipeline: key.clone(),
            reason: None,
        });
    }
    let resumed = flags.difference(&stored).count() > 0;
    for key in flags.difference(&stored) {
        events.push(Event::PipelineResumed {
            pipeline: key.clone(),
        });
    }
    *flags = stored;
    drop(flags);
    for event in events {
        shared.bus.publish(event);
    }
    if resumed {
        shared.work.notify_waiters();
    }
}

/// Leaves the store at shutdown, after the leases were given back.
pub(crate) async fn leave(store: &dyn Store) {
    // Nobody else is forgotten here: only this node, leaving.
    if let Err(error) = store.forget_nodes(chrono::DateTime::UNIX_EPOCH, true).await {
        tracing::warn!(%error, "cannot leave the store; this node is forgotten once it counts as stopped");
    }
}
