//! The observer bus: typed events about everything the dispatcher does, and the log observer.

use ferry_core::PassengerId;
use ferry_store::{PipelineKey, RunCounts, RunId, RunStatus};
use tokio::sync::broadcast;

/// Something the dispatcher did. Passenger-level events come per batch where a batch is the
/// natural unit (seated, pushed), and per passenger where a person may need to act (failed, dead).
#[derive(Clone, Debug)]
pub enum Event {
    DispatcherStarted {
        alias: String,
        pipelines: usize,
    },
    DispatcherStopped,
    /// A changed set of definitions was validated and is now running.
    DefinitionsLoaded {
        changed: Vec<String>,
    },
    /// A changed set of definitions was refused; the previous version keeps running.
    DefinitionsRefused {
        errors: Vec<String>,
    },
    RunStarted {
        pipeline: PipelineKey,
        run: RunId,
    },
    RunFinished {
        pipeline: PipelineKey,
        /// `None` when the store could not record the run (the store itself failed).
        run: Option<RunId>,
        status: RunStatus,
        counts: RunCounts,
        error: Option<String>,
        /// How long the run took, from its start to its end.
        seconds: f64,
    },
    PassengersSeated {
        pipeline: PipelineKey,
        seated: u64,
        duplicates: u64,
    },
    /// Pulling stopped because too many passengers of the pipeline are unfinished.
    QueueLimitReached {
        pipeline: PipelineKey,
        open: u64,
        limit: u64,
    },
    PassengersPushed {
        pipeline: PipelineKey,
        pusher: String,
        count: u64,
    },
    PassengerFiltered {
        pipeline: PipelineKey,
        id: PassengerId,
        reason: String,
    },
    /// A processor split a passenger into `children` new ones.
    PassengerSplit {
        pipeline: PipelineKey,
        id: PassengerId,
        children: usize,
    },
    PassengerFailed {
        pipeline: PipelineKey,
        id: PassengerId,
        step: String,
        error: String,
        attempt: u32,
    },
    PassengerDead {
        pipeline: PipelineKey,
        id: PassengerId,
        step: String,
        error: String,
    },
    PassengersPurged {
        client: String,
        count: u64,
    },
    PipelinePaused {
        pipeline: PipelineKey,
        /// Why ferry paused it by itself (its failure limit); `None` when a person did.
        reason: Option<String>,
    },
    PipelineResumed {
        pipeline: PipelineKey,
    },
}

/// Publishes events to every subscriber. Slow subscribers miss events rather than slow ferry.
#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl Bus {
    pub fn publish(&self, event: Event) {
        // No subscriber is fine: events are a view, not a record.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// Writes every event to the log with structured fields until the bus closes.
pub async fn log_observer(mut events: broadcast::Receiver<Event>) {
    use tracing::{debug, error, info, warn};
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "log observer fell behind; events skipped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match event {
            Event::DispatcherStarted { alias, pipelines } => {
                info!(%alias, pipelines, "dispatcher started")
            }
            Event::DispatcherStopped => info!("dispatcher stopped"),
            Event::DefinitionsLoaded { changed } => {
                info!(changed = %changed.join(", "), "definitions loaded")
            }
            Event::DefinitionsRefused { errors } => {
                for message in &errors {
                    error!("{message}");
                }
                error!(
                    errors = errors.len(),
                    "changed definitions refused; the previous version keeps running"
                );
            }
            Event::RunStarted { pipeline, run } => info!(%pipeline, run, "run started"),
            Event::RunFinished {
                pipeline,
                run,
                status,
                counts,
                error,
                ..
            } => {
                let run = run.map_or_else(|| "unrecorded".to_string(), |id| id.to_string());
                match status {
                    RunStatus::Failed => {
                        error!(%pipeline, %run, error = error.as_deref().unwrap_or(""), "run failed")
                    }
                    RunStatus::Partial => {
                        warn!(%pipeline, %run, pulled = counts.pulled, seated = counts.seated, failed = counts.failed, "run finished with failures")
                    }
                    _ => {
                        info!(%pipeline, %run, pulled = counts.pulled, seated = counts.seated, duplicates = counts.duplicates, "run finished")
                    }
                }
            }
            Event::PassengersSeated {
                pipeline,
                seated,
                duplicates,
            } => {
                info!(%pipeline, seated, duplicates, "passengers seated")
            }
            Event::QueueLimitReached {
                pipeline,
                open,
                limit,
            } => {
                warn!(%pipeline, open, limit, "queue limit reached; pulling pauses until it drains")
            }
            Event::PassengersPushed {
                pipeline,
                pusher,
                count,
            } => {
                info!(%pipeline, %pusher, count, "passengers pushed")
            }
            Event::PassengerFiltered {
                pipeline,
                id,
                reason,
            } => {
                info!(%pipeline, %id, %reason, "passenger filtered")
            }
            Event::PassengerSplit {
                pipeline,
                id,
                children,
            } => {
                debug!(%pipeline, %id, children, "passenger split")
            }
            Event::PassengerFailed {
                pipeline,
                id,
                step,
                error,
                attempt,
            } => {
                warn!(%pipeline, %id, %step, attempt, %error, "step failed, will retry")
            }
            Event::PassengerDead {
                pipeline,
                id,
                step,
                error,
            } => {
                error!(%pipeline, %id, %step, %error, "passenger dead")
            }
            Event::PassengersPurged { client, count } => info!(%client, count, "passengers purged"),
            Event::PipelinePaused { pipeline, reason } => match reason {
                Some(reason) => warn!(%pipeline, %reason, "pipeline paused"),
                None => info!(%pipeline, "pipeline paused"),
            },
            Event::PipelineResumed { pipeline } => info!(%pipeline, "pipeline resumed"),
        }
    }
}
