//! Workers: lease due passengers, run their processors in order, then every due pusher, and
//! record the outcome of the whole batch in one transaction.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use ferry_core::config::StepKind;
use ferry_core::{Outcome, Passenger, Processor, StepError, Timestamp};
use ferry_store::{Finished, Leased, Split, StepChange, StepState, StepStatus};
use futures::FutureExt;

use crate::{Active, Event, Shared, policy};

/// One worker: takes batches from the pipelines in turn until shutdown.
pub(crate) async fn work(shared: Arc<Shared>, number: usize) {
    // Workers start at different pipelines so that one busy pipeline does not get them all.
    let mut turn = number;
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        // Register interest before looking, so a wake-up between the look and the wait is kept.
        let woken = shared.work.notified();
        let active = shared.active();
        let mut worked = false;
        for index in visiting_order(&active, turn) {
            let pipeline = &active[index];
            if shared.is_paused(&pipeline.key) {
                continue;
            }
            let now = chrono::Utc::now();
            let leased = match shared
                .store
                .lease(
                    &pipeline.key,
                    pipeline.def.batch_size,
                    shared.options.lease,
                    now,
                )
                .await
            {
                Ok(leased) => leased,
                Err(error) => {
                    tracing::error!(pipeline = %pipeline.key, %error, "cannot lease passengers");
                    continue;
                }
            };
            if leased.is_empty() {
                continue;
            }
            process_batch(&shared, pipeline, leased).await;
            worked = true;
            turn = index + 1;
            break;
        }
        if !worked {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(shared.options.idle_poll) => {}
            }
        }
    }
}

/// The order in which a worker looks at the pipelines: by `priority` (lower first), and among
/// equals round the list starting at `turn`, so that one busy pipeline does not get every
/// worker.
fn visiting_order(active: &[Arc<Active>], turn: usize) -> Vec<usize> {
    let count = active.len();
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&i| {
        (
            active[i].def.priority,
            (i + count - turn % count.max(1)) % count,
        )
    });
    order
}

/// A leased passenger on its way through one batch.
struct Journey {
    leased: Leased,
    changes: Vec<(u32, StepChange)>,
    /// Processors ran in this lease, so their output must be stored.
    processed: bool,
    /// A processor failed, filtered or split it: pushers do not run.
    stopped: bool,
    /// The children a processor split it into.
    split: Option<Split>,
    /// Pusher steps a routing processor skipped in this lease.
    skipped: Vec<u32>,
}

async fn process_batch(shared: &Arc<Shared>, pipeline: &Arc<Active>, leased: Vec<Leased>) {
    {
        let mut in_flight = shared.in_flight.lock().expect("in-flight lock");
        for l in &leased {
            in_flight.insert(l.passenger.id, l.token);
        }
    }
    let now = chrono::Utc::now();
    let journeys: Vec<Journey> = leased
        .into_iter()
        .map(|leased| Journey {
            leased,
            changes: Vec::new(),
            processed: false,
            stopped: false,
            split: None,
            skipped: Vec::new(),
        })
        .collect();
    let Some(mut journeys) = run_all_processors(shared, pipeline, journeys, now).await else {
        // The leases stay in `in_flight` and come back when they expire.
        return;
    };
    for (name, pusher) in &pipeline.pushers {
        // The passengers whose step for this pusher is due now.
        let mut due = Vec::new();
        for (j, journey) in journeys.iter().enumerate() {
            if journey.stopped {
                continue;
            }
            if let Some(step) = journey
                .leased
                .steps
                .iter()
                .find(|s| s.kind == StepKind::Pusher && s.name == *name)
            {
                let waiting = step.next_try_at.is_some_and(|at| at > now);
                if step.is_open() && !waiting && !journey.skipped.contains(&step.index) {
                    due.push((j, step.index, step.attempts));
                }
            }
        }
        if due.is_empty() {
            continue;
        }
        let batch: Vec<&Passenger> = due
            .iter()
            .map(|(j, _, _)| &journeys[*j].leased.passenger)
            .collect();
        let results = push(shared, pusher.as_ref(), &batch).await;
        let mut pushed = 0;
        for ((j, index, attempts), result) in due.into_iter().zip(results) {
            let journey = &mut journeys[j];
            let change = match result {
                Ok(None) => {
                    pushed += 1;
                    StepChange::Done
                }
                Ok(Some(result)) => {
                    pushed += 1;
                    StepChange::DoneWith { result }
                }
                Err(error) => failure(shared, pipeline, journey, name, attempts, &error, now),
            };
            journey.changes.push((index, change));
        }
        if pushed > 0 {
            shared.bus.publish(Event::PassengersPushed {
                pipeline: pipeline.key.clone(),
                pusher: name.clone(),
                count: pushed,
            });
        }
    }
    // Steps that name a pusher no longer in the pipeline cannot be delivered by anyone.
    for journey in &mut journeys {
        if journey.stopped {
            continue;
        }
        for step in &journey.leased.steps {
            let known = match step.kind {
                StepKind::Pusher => pipeline.pushers.iter().any(|(n, _)| *n == step.name),
                StepKind::Processor => true,
            };
            if step.is_open() && !known && !journey.skipped.contains(&step.index) {
                journey.changes.push((
                    step.index,
                    StepChange::Dead {
                        error: format!("pusher `{}` is no longer in the pipeline; replay the passenger to use the current pushers", step.name),
                    },
                ));
            }
        }
    }
    let reports: Vec<Finished> = journeys
        .into_iter()
        .map(|journey| {
            let passenger = journey.leased.passenger;
            Finished {
                id: passenger.id,
                token: journey.leased.token,
                processed: journey
                    .processed
                    .then_some((passenger.metadata, passenger.body)),
                steps: journey.changes,
                split: journey.split,
            }
        })
        .collect();
    if !record_results(shared, pipeline, &reports).await {
        // The leases stay in `in_flight`: shutdown gives them back, or they return when they
        // expire; either way these passengers are pushed again.
        return;
    }
    let mut in_flight = shared.in_flight.lock().expect("in-flight lock");
    for report in &reports {
        in_flight.remove(&report.id);
    }
}

/// Records a batch's results. When the store refuses them (a full disk), they are kept and
/// recorded again with back-off until it accepts them (issue 12): otherwise the passengers
/// stay in flight until their lease expires and are pushed a second time. Returns whether the
/// results are recorded; if not (shutdown came first), says which passengers go again.
async fn record_results(shared: &Shared, pipeline: &Active, reports: &[Finished]) -> bool {
    let what = format!(
        "results of {} passenger(s) of {}",
        reports.len(),
        pipeline.key
    );
    let recorded = crate::recording::persist(shared, &what, || {
        shared.store.finish(reports, chrono::Utc::now())
    })
    .await;
    if let Err(error) = recorded {
        let ids: Vec<String> = reports.iter().map(|r| r.id.to_string()).collect();
        tracing::error!(
            pipeline = %pipeline.key,
            %error,
            passengers = %ids.join(", "),
            "stopping with results the store did not take: these passengers will be pushed again"
        );
        return false;
    }
    true
}

/// Bodies and attachments from this many bytes together make a batch's processing long.
const LONG_WORK_BYTES: usize = 256 * 1024;

/// Whether running processors over this passenger may take long (VRL over the rows of a record
/// batch, decoding a large Avro or Parquet file): then they run off the async runtime.
fn is_long_work(passenger: &Passenger) -> bool {
    let bytes = passenger.body.data.len()
        + passenger
            .attachments
            .iter()
            .map(|attachment| attachment.content.len())
            .sum::<usize>();
    passenger.body.media_type == ferry_core::records::MEDIA_TYPE || bytes >= LONG_WORK_BYTES
}

/// Runs the processors of every journey. When one of them carries long work, the whole batch
/// runs on tokio's blocking pool (`spawn_blocking`), so that a busy pipeline never holds a
/// runtime thread that other pipelines' pulls and pushes need. `None` when that task did not
/// come back (it panicked outside a processor, or the runtime is shutting down).
async fn run_all_processors(
    shared: &Arc<Shared>,
    pipeline: &Arc<Active>,
    mut journeys: Vec<Journey>,
    now: Timestamp,
) -> Option<Vec<Journey>> {
    if !journeys.iter().any(|j| is_long_work(&j.leased.passenger)) {
        for journey in &mut journeys {
            run_processors(shared, pipeline, journey, now);
        }
        return Some(journeys);
    }
    let (shared, pipeline) = (Arc::clone(shared), Arc::clone(pipeline));
    let key = pipeline.key.clone();
    let task = tokio::task::spawn_blocking(move || {
        for journey in &mut journeys {
            run_processors(&shared, &pipeline, journey, now);
        }
        journeys
    });
    match task.await {
        Ok(journeys) => Some(journeys),
        Err(error) => {
            tracing::error!(pipeline = %key, %error, "processors stopped outside a processor; the batch goes again when its leases expire");
            None
        }
    }
}

/// Runs the passenger's open processors in order; stops at the first failure or filter.
fn run_processors(shared: &Shared, pipeline: &Active, journey: &mut Journey, now: Timestamp) {
    let steps = journey.leased.steps.clone();
    for step in steps.iter().filter(|s| s.kind == StepKind::Processor) {
        if !step.is_open() {
            if step.state == StepState::Filtered || step.state == StepState::Dead {
                journey.stopped = true;
                return;
            }
            continue;
        }
        let result = match pipeline.processors.iter().find(|(n, _)| *n == step.name) {
            Some((_, processor)) => {
                call_processor(processor.as_ref(), journey.leased.passenger.clone())
            }
            None => Err(StepError::permanent(format!(
                "processor `{}` is no longer in the pipeline; replay the passenger to use the current processors",
                step.name
            ))),
        };
        match result {
            Ok(Outcome::Continue(passenger)) => {
                journey.leased.passenger = passenger;
                journey.processed = true;
                journey.changes.push((step.index, StepChange::Done));
            }
            Ok(Outcome::Route { passenger, pushers }) => {
                journey.leased.passenger = passenger;
                journey.processed = true;
                journey.changes.push((step.index, StepChange::Done));
                // Skipped now, not when the pushers run: a later processor may fail, and the
                // retry resumes after this one without asking it again.
                for other in steps.iter().filter(|s| {
                    s.kind == StepKind::Pusher && s.is_open() && !pushers.contains(&s.name)
                }) {
                    journey.changes.push((other.index, StepChange::Skipped));
                    journey.skipped.push(other.index);
                }
            }
            Ok(Outcome::Filtered { reason }) => {
                shared.bus.publish(Event::PassengerFiltered {
                    pipeline: pipeline.key.clone(),
                    id: journey.leased.passenger.id,
                    reason: reason.clone(),
                });
                journey
                    .changes
                    .push((step.index, StepChange::Filtered { reason }));
                skip_later(journey, &steps, step.index);
                return;
            }
            Ok(Outcome::Split(children)) => {
                shared.bus.publish(Event::PassengerSplit {
                    pipeline: pipeline.key.clone(),
                    id: journey.leased.passenger.id,
                    children: children.len(),
                });
                journey.changes.push((step.index, StepChange::Done));
                journey.split = Some(Split {
                    after: step.index,
                    children,
                });
                skip_later(journey, &steps, step.index);
                return;
            }
            Err(error) => {
                let change = failure(
                    shared,
                    pipeline,
                    journey,
                    &step.name,
                    step.attempts,
                    &error,
                    now,
                );
                journey.changes.push((step.index, change));
                journey.stopped = true;
                return;
            }
        }
    }
}

/// Calls a processor, turning a panic into a retryable failure. A split's children get their
/// parent's client, pipeline and id; children sharing an external id fail the split for good.
pub(crate) fn call_processor(
    processor: &dyn Processor,
    passenger: Passenger,
) -> Result<Outcome, StepError> {
    let parent = (
        passenger.id,
        passenger.client.clone(),
        passenger.pipeline.clone(),
    );
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| processor.process(passenger)))
        .unwrap_or_else(|panic| {
            Err(StepError::retryable(format!(
                "processor panicked: {}",
                panic_message(&panic)
            )))
        })?;
    let Outcome::Split(mut children) = outcome else {
        return Ok(outcome);
    };
    if let Some(twin) = twins(&children) {
        return Err(StepError::permanent(format!(
            "the split made two children with external id `{twin}`; each needs its own"
        )));
    }
    let (id, client, pipeline) = parent;
    for child in &mut children {
        child.client.clone_from(&client);
        child.pipeline.clone_from(&pipeline);
        child.parent = Some(id);
    }
    Ok(Outcome::Split(children))
}

/// An external id that two of a split's children share: the queue would keep only one.
fn twins(children: &[Passenger]) -> Option<String> {
    let mut seen = std::collections::HashSet::with_capacity(children.len());
    children
        .iter()
        .find(|child| !seen.insert(child.external_id.as_str()))
        .map(|child| child.external_id.clone())
}

/// Ends a journey at step `index`: every open step after it is skipped.
fn skip_later(journey: &mut Journey, steps: &[StepStatus], index: u32) {
    for later in steps.iter().filter(|s| s.index > index && s.is_open()) {
        if !journey.skipped.contains(&later.index) {
            journey.changes.push((later.index, StepChange::Skipped));
        }
    }
    journey.stopped = true;
}

/// Calls a pusher, turning a panic or a timeout into a retryable failure of the whole batch.
/// A delivered passenger comes with what the target answered, when the pusher keeps it.
async fn push(
    shared: &Shared,
    pusher: &dyn ferry_core::Pusher,
    batch: &[&Passenger],
) -> Vec<Result<Option<String>, StepError>> {
    let call = AssertUnwindSafe(pusher.push_keeping(batch)).catch_unwind();
    let error = match tokio::time::timeout(shared.options.push_timeout, call).await {
        Ok(Ok(results)) if results.len() == batch.len() => return results,
        Ok(Ok(results)) => StepError::retryable(format!(
            "pusher returned {} results for {} passengers",
            results.len(),
            batch.len()
        )),
        Ok(Err(panic)) => {
            StepError::retryable(format!("pusher panicked: {}", panic_message(&panic)))
        }
        Err(_) => StepError::retryable("push timed out"),
    };
    vec![Err(error); batch.len()]
}

/// The step change for a failure under the pipeline's policy, announced on the bus.
fn failure(
    shared: &Shared,
    pipeline: &Active,
    journey: &Journey,
    step: &str,
    attempts: u32,
    error: &StepError,
    now: Timestamp,
) -> StepChange {
    let change = policy::on_failure(&pipeline.def.retry, attempts, error, now);
    let id = journey.leased.passenger.id;
    let event = match &change {
        StepChange::Dead { error } => Event::PassengerDead {
            pipeline: pipeline.key.clone(),
            id,
            step: step.to_string(),
            error: error.clone(),
        },
        _ => Event::PassengerFailed {
            pipeline: pipeline.key.clone(),
            id,
            step: step.to_string(),
            error: error.message.clone(),
            attempt: attempts + 1,
        },
    };
    shared.bus.publish(event);
    change
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
