//! A pipeline's pull task: waits for its schedule, its masters (`depends_on`) or "run now",
//! and for its time window, then runs: pulls batches, seats each in one transaction (with the
//! puller's new position), acks the puller, until the sources are drained or the queue limit
//! is reached; a run that ends when delivered then waits for what it seated. Too many failed
//! runs in a row pause the pipeline, but for a continuous pipeline whose source cannot be
//! reached (a broker restarting), which is tried again less and less often instead.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::{RunEnds, Schedule};
use ferry_core::{PassengerId, Seated, Timestamp};
use ferry_store::{
    LogLevel, LogLine, PassengerState, PullerState, RunCounts, RunId, RunStatus, SeatResult,
};

use crate::quarantine::Quarantine;
use crate::{Active, Event, NamedPuller, Shared, nodes};

/// Longest a single pull or ack may take before it counts as failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// How often a run that ends when delivered looks at its passengers, per 10,000 of them (each
/// look reads the state of every one), up to `DELIVERY_POLL_MAX`.
const DELIVERY_POLL: Duration = Duration::from_millis(200);
const DELIVERY_POLL_MAX: Duration = Duration::from_secs(5);

/// Runs the pipeline's schedule until it is stopped (reload or shutdown).
pub(crate) async fn run(shared: Arc<Shared>, active: Arc<Active>, mut pullers: Vec<NamedPuller>) {
    let mut first = true;
    // Failed runs in a row of a continuous pipeline whose source could not be reached.
    let mut away = 0u32;
    loop {
        let wait = next_run(&active.def.schedule, first, shared.options.continuous_pause);
        first = false;
        // A person's "run now" runs at once; schedules and masters wait for the time window.
        let mut slot = None;
        let by_person = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = active.stop.cancelled() => return,
            _ = active.run_now.notified() => true,
            _ = active.masters_done.notified() => false,
            fired = wait => {
                slot = fired;
                false
            }
        };
        if !by_person && !may_pull(&shared, &active, slot).await {
            continue;
        }
        if let Some(window) = active.def.window.filter(|_| !by_person) {
            let wait = window.wait_from(chrono::Local::now().time());
            if !wait.is_zero() {
                tracing::info!(pipeline = %active.key, %window, "waiting for the time window");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = active.stop.cancelled() => return,
                    _ = active.run_now.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        if shared.is_paused(&active.key) {
            continue;
        }
        let record_empty = !matches!(active.def.schedule, Schedule::Continuous);
        let mut run = Run::start(shared.clone(), active.clone(), record_empty).await;
        let mut result = pull_until_drained(&shared, &active, &mut pullers, &mut run).await;
        if result.is_ok() && active.def.run_ends == RunEnds::Delivered {
            result = wait_for_delivery(&shared, &active, &mut run).await;
        }
        let source_away = run.source_away;
        let status = run.finish(result).await;
        if status != RunStatus::Failed {
            away = 0;
            continue;
        }
        if source_away && matches!(active.def.schedule, Schedule::Continuous) {
            // A stream whose system is away (a broker restarting) is tried again, less and less
            // often, instead of pausing after a second of failed runs.
            away += 1;
            let wait = shared
                .options
                .away_backoff
                .saturating_mul(1 << (away - 1).min(5));
            tracing::warn!(pipeline = %active.key, "the source cannot be reached; trying again in {wait:?}");
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = active.stop.cancelled() => return,
                _ = active.run_now.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        pause_after_failures(&shared, &active).await;
    }
}

/// Waits until nothing the run seated is pending or in flight; fails when some of it could not
/// be delivered (dead, discarded, or failed and waiting for a later retry).
async fn wait_for_delivery(
    shared: &Shared,
    active: &Active,
    run: &mut Run,
) -> Result<(), RunError> {
    if run.seated_ids.is_empty() {
        return Ok(());
    }
    loop {
        // Workers leave a paused pipeline alone: nothing more would be delivered.
        if shared.is_paused(&active.key) {
            return Err(
                "the pipeline was paused before the run's passengers were delivered".into(),
            );
        }
        let counts = shared
            .store
            .progress(&run.seated_ids)
            .await
            .map_err(|e| format!("store: {e}"))?;
        let count = |state| counts.get(&state).copied().unwrap_or(0);
        if count(PassengerState::Pending) + count(PassengerState::InFlight) == 0 {
            let delivered = count(PassengerState::Complete) + count(PassengerState::Filtered);
            run.log(
                LogLevel::Info,
                format!(
                    "{delivered} of {} passenger(s) delivered",
                    run.seated_ids.len()
                ),
            )
            .await;
            let missing = count(PassengerState::Failed)
                + count(PassengerState::Dead)
                + count(PassengerState::Discarded);
            return match missing {
                0 => Ok(()),
                _ => Err(format!(
                    "{missing} passenger(s) not delivered ({} dead, {} waiting for a retry, {} \
                     discarded); see the queue",
                    count(PassengerState::Dead),
                    count(PassengerState::Failed),
                    count(PassengerState::Discarded)
                )),
            };
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return Err("ferry stopped before the run's passengers were delivered".into()),
            _ = active.stop.cancelled() => return Err("the pipeline changed before the run's passengers were delivered".into()),
            _ = tokio::time::sleep(delivery_poll(run.seated_ids.len())) => {}
        }
    }
}

/// The pause between two looks at `count` passengers a run waits for: on a server store a
/// large run's looks would otherwise keep the server busy (100,000 ids five times a second).
fn delivery_poll(count: usize) -> Duration {
    let tens_of_thousands = u32::try_from(count / 10_000).unwrap_or(u32::MAX).max(1);
    DELIVERY_POLL
        .saturating_mul(tens_of_thousands)
        .min(DELIVERY_POLL_MAX)
}

/// Pauses the pipeline when its last `failure_limit` runs all failed, and says why.
async fn pause_after_failures(shared: &Shared, active: &Active) {
    let limit = active.def.failure_limit as usize;
    if limit == 0 {
        return;
    }
    let runs = match shared.store.runs(Some(&active.key), limit).await {
        Ok(runs) => runs,
        Err(error) => {
            tracing::error!(pipeline = %active.key, %error, "cannot count failed runs");
            return;
        }
    };
    if runs.len() < limit || runs.iter().any(|r| r.status != RunStatus::Failed) {
        return;
    }
    let reason =
        format!("paused after {limit} failed runs in a row; resume it once the cause is fixed");
    if let Err(error) = shared.store.pause_for(&active.key, &reason).await {
        tracing::error!(pipeline = %active.key, %error, "cannot pause after failed runs");
        return;
    }
    shared.pause_here(&active.key);
    tracing::warn!(pipeline = %active.key, "{reason}");
    shared.bus.publish(Event::PipelinePaused {
        pipeline: active.key.clone(),
        reason: Some(reason),
    });
}

/// Whether this node runs the pipeline's schedule now: it must hold the right to pull it
/// (another node may), and a cron run's slot must not have been started by another node.
/// A node without the right waits a heartbeat before asking again.
async fn may_pull(shared: &Shared, active: &Active, slot: Option<Timestamp>) -> bool {
    if !nodes::hold(shared, &active.key).await {
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = active.stop.cancelled() => {}
            _ = tokio::time::sleep(shared.options.heartbeat) => {}
        }
        return false;
    }
    let (Some(slot), true) = (slot, shared.store.is_shared()) else {
        return true;
    };
    match shared.store.claim_slot(&active.key, slot).await {
        Ok(claimed) => claimed,
        Err(error) => {
            tracing::error!(pipeline = %active.key, %error, "cannot claim the scheduled run");
            false
        }
    }
}

/// Resolves when the schedule says the next run is due; `first` is the run at start. A cron
/// schedule resolves with the time it fired for (the run's slot).
async fn next_run(
    schedule: &Schedule,
    first: bool,
    continuous_pause: Duration,
) -> Option<Timestamp> {
    match schedule {
        Schedule::Every(_) | Schedule::Continuous if first => None,
        Schedule::Every(every) => {
            tokio::time::sleep(*every).await;
            None
        }
        Schedule::Continuous => {
            tokio::time::sleep(continuous_pause).await;
            None
        }
        Schedule::Cron { cron, .. } => {
            let now = chrono::Utc::now();
            match cron.find_next_occurrence(&now, false) {
                Ok(next) => {
                    let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
                    tokio::time::sleep(wait).await;
                    Some(next)
                }
                // A schedule without a next occurrence never fires again.
                Err(_) => std::future::pending().await,
            }
        }
        Schedule::Manual => std::future::pending().await,
    }
}

/// Why a run stopped pulling early.
type RunError = String;

/// Pulls from every puller until none has more, the queue limit is reached or the pipeline is
/// stopped. Passengers are acked only after their batch is committed.
async fn pull_until_drained(
    shared: &Shared,
    active: &Active,
    pullers: &mut [NamedPuller],
    run: &mut Run,
) -> Result<(), RunError> {
    let def = &active.def;
    let mut quarantine = Quarantine::load(shared, active)
        .await
        .map_err(|e| format!("store: cannot read the quarantined items: {e}"))?;
    for (name, puller) in pullers.iter_mut() {
        let state = shared
            .store
            .puller_state(&active.key, name)
            .await
            .map_err(|e| format!("store: cannot read where puller {name} stands: {e}"))?;
        puller.restore(state);
        puller.quarantined(quarantine.of(name));
    }
    let mut drained = vec![false; pullers.len()];
    while drained.iter().any(|done| !done) {
        if shared.shutdown.is_cancelled() || active.stop.is_cancelled() {
            return Ok(());
        }
        for (index, (name, puller)) in pullers.iter_mut().enumerate() {
            if drained[index] {
                continue;
            }
            let open = shared
                .store
                .open_count(&active.key)
                .await
                .map_err(|e| format!("store: {e}"))?;
            if open >= def.queue_limit {
                shared.bus.publish(Event::QueueLimitReached {
                    pipeline: active.key.clone(),
                    open,
                    limit: def.queue_limit,
                });
                run.log(LogLevel::Warn, format!("queue limit {} reached ({open} unfinished); pulling pauses until it drains", def.queue_limit)).await;
                return Ok(());
            }
            let room = usize::try_from(def.queue_limit - open).unwrap_or(usize::MAX);
            let max = def.batch_size.min(room);
            // A pull still waiting (IMAP IDLE, a webhook's first delivery) is given up at
            // shutdown or stop: nothing it found is acknowledged before it is seated, so the
            // source offers it again.
            let pulled = tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                _ = active.stop.cancelled() => return Ok(()),
                pulled = tokio::time::timeout(PULL_TIMEOUT, puller.pull(max)) => match pulled {
                    Ok(Ok(pulled)) => pulled,
                    Ok(Err(error)) => {
                        run.source_away = error.retryable;
                        return Err(format!("puller {name}: {error}"));
                    }
                    Err(_) => return Err(format!("puller {name}: pull timed out")),
                },
            };
            // A puller that says "more" but returns nothing would make the run spin.
            let empty = pulled.passengers.is_empty() && pulled.failures.is_empty();
            drained[index] = !pulled.more || empty;
            let reports = quarantine
                .take_failures(shared, active, name, puller.as_mut(), &pulled.failures)
                .await;
            // Items already in quarantine make no run of their own.
            if !reports.is_empty() {
                run.ensure().await;
            }
            for message in reports {
                run.counts.failed += 1;
                run.log(LogLevel::Error, message).await;
            }
            if pulled.passengers.is_empty() && pulled.state.is_none() {
                continue;
            }
            run.ensure().await;
            run.counts.pulled += pulled.passengers.len() as u64;
            let mut passengers = pulled.passengers;
            for passenger in &mut passengers {
                passenger.client.clone_from(&active.key.client);
                passenger.pipeline.clone_from(&active.key.pipeline);
            }
            let state = pulled.state.map(|state| PullerState {
                puller: name.clone(),
                state,
            });
            let results = shared
                .store
                .seat_from(
                    &active.key,
                    &def.version,
                    &active.steps,
                    &passengers,
                    state.as_ref(),
                    chrono::Utc::now(),
                )
                .await
                .map_err(|e| {
                    format!(
                        "cannot seat passengers (nothing was acked, they will be pulled again): {e}"
                    )
                })?;
            let mut seated = Vec::with_capacity(passengers.len());
            let mut new = 0;
            for (passenger, result) in passengers.iter().zip(&results) {
                let duplicate = *result == SeatResult::Duplicate;
                new += u64::from(!duplicate);
                if !duplicate && def.run_ends == RunEnds::Delivered {
                    run.seated_ids.push(passenger.id);
                }
                seated.push(Seated {
                    source_system: passenger.source_system.clone(),
                    external_id: passenger.external_id.clone(),
                    duplicate,
                });
            }
            let duplicates = seated.len() as u64 - new;
            run.counts.seated += new;
            run.counts.duplicates += duplicates;
            shared.bus.publish(Event::PassengersSeated {
                pipeline: active.key.clone(),
                seated: new,
                duplicates,
            });
            shared.work.notify_waiters();
            match tokio::time::timeout(PULL_TIMEOUT, puller.ack(&seated)).await {
                Ok(Ok(())) => {}
                // Seated is safe; the source will offer them again and de-duplication drops them.
                Ok(Err(error)) => {
                    run.log(
                        LogLevel::Warn,
                        format!("{name}: ack failed, items will be offered again: {error}"),
                    )
                    .await
                }
                Err(_) => {
                    run.log(LogLevel::Warn, format!("{name}: ack timed out"))
                        .await
                }
            }
        }
    }
    Ok(())
}

/// A run being recorded. Runs of continuous pipelines are recorded only once they find
/// something, so an idle stream does not fill the run history.
struct Run {
    shared: Arc<Shared>,
    active: Arc<Active>,
    id: Option<RunId>,
    counts: RunCounts,
    /// Record the run even when it finds nothing (every schedule but `continuous`).
    record_empty: bool,
    /// The store refused to record the run; do not wait for it again in this run.
    unrecorded: bool,
    /// When the run began, for its duration in [`Event::RunFinished`].
    started: std::time::Instant,
    /// What the run seated, when it ends once that is delivered.
    seated_ids: Vec<PassengerId>,
    /// A puller could not reach its system (it failed with a retryable error).
    source_away: bool,
}

impl Run {
    async fn start(shared: Arc<Shared>, active: Arc<Active>, record_empty: bool) -> Run {
        let mut run = Run {
            shared,
            active,
            id: None,
            counts: RunCounts::default(),
            record_empty,
            unrecorded: false,
            started: std::time::Instant::now(),
            seated_ids: Vec::new(),
            source_away: false,
        };
        if record_empty {
            run.ensure().await;
        }
        run
    }

    /// Makes sure the run is recorded in the store.
    async fn ensure(&mut self) {
        if self.id.is_some() || self.unrecorded {
            return;
        }
        let now = chrono::Utc::now();
        match self
            .shared
            .store
            .start_run(&self.active.key, &self.active.def.version, now)
            .await
        {
            Ok(id) => {
                self.id = Some(id);
                self.shared.bus.publish(Event::RunStarted {
                    pipeline: self.active.key.clone(),
                    run: id,
                });
            }
            Err(error) => {
                self.unrecorded = true;
                tracing::error!(pipeline = %self.active.key, %error, "cannot record run")
            }
        }
    }

    async fn log(&mut self, level: LogLevel, message: String) {
        self.ensure().await;
        let Some(id) = self.id else { return };
        let line = LogLine {
            at: chrono::Utc::now(),
            level,
            message,
        };
        if let Err(error) = self.shared.store.log_run(id, &[line]).await {
            tracing::error!(pipeline = %self.active.key, %error, "cannot write run log");
        }
    }

    /// Records the end of the run and returns its status.
    async fn finish(mut self, result: Result<(), RunError>) -> RunStatus {
        if self.record_empty || result.is_err() {
            self.ensure().await;
        }
        let status = match &result {
            Err(_) => RunStatus::Failed,
            Ok(()) if self.counts.failed > 0 => RunStatus::Partial,
            Ok(()) => RunStatus::Succeeded,
        };
        let error = result.err();
        if let Some(message) = &error {
            self.log(LogLevel::Error, message.clone()).await;
        }
        if self.id.is_some() {
            let RunCounts {
                pulled,
                seated,
                duplicates,
                failed,
            } = self.counts;
            let summary = format!(
                "{pulled} pulled, {seated} seated, {duplicates} duplicate(s), {failed} unreadable \
                 in {:.1} s",
                self.started.elapsed().as_secs_f64()
            );
            self.log(LogLevel::Info, summary).await;
        }
        if let Some(id) = self.id {
            // Tried again while the store refuses writes: a run left `running` would be
            // reported as stopped unexpectedly by the next process (issue 12).
            let what = format!("the end of run {id} of {}", self.active.key);
            let store = &self.shared.store;
            let counts = self.counts;
            let recorded = crate::recording::persist(&self.shared, &what, || {
                store.finish_run(id, status, counts, error.as_deref(), chrono::Utc::now())
            })
            .await;
            if let Err(e) = recorded {
                tracing::error!(pipeline = %self.active.key, error = %e, run = id, "cannot record the end of the run; the next start reports it as stopped unexpectedly");
            }
        } else if error.is_none() {
            // An empty continuous cycle: nothing to tell.
            return status;
        }
        self.shared.bus.publish(Event::RunFinished {
            pipeline: self.active.key.clone(),
            run: self.id,
            status,
            counts: self.counts,
            error,
            seconds: self.started.elapsed().as_secs_f64(),
        });
        status
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_core::config::Schedule;
    use tokio::time::{Instant, timeout};

    use super::{delivery_poll, next_run};

    #[test]
    fn a_larger_run_looks_at_its_passengers_less_often() {
        let poll = |count| delivery_poll(count).as_millis();
        assert_eq!([poll(0), poll(9_999), poll(10_000)], [200, 200, 200]);
        assert_eq!([poll(50_000), poll(100_000)], [1_000, 2_000]);
        assert_eq!([poll(1_000_000), poll(usize::MAX)], [5_000, 5_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn intervals_run_at_once_then_every_period() {
        let every = Schedule::Every(Duration::from_secs(30));
        let pause = Duration::from_millis(250);
        let start = Instant::now();
        next_run(&every, true, pause).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        next_run(&every, false, pause).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));

        let start = Instant::now();
        next_run(&Schedule::Continuous, false, pause).await;
        assert_eq!(start.elapsed(), pause);
    }

    #[tokio::test(start_paused = true)]
    async fn cron_waits_for_its_next_occurrence_and_manual_never_fires() {
        // Every second: the next occurrence is at most a second away, never now.
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse("* * * * * *")
            .unwrap();
        let schedule = Schedule::Cron {
            expression: "* * * * * *".into(),
            cron: Box::new(cron),
        };
        let start = Instant::now();
        next_run(&schedule, true, Duration::ZERO).await;
        assert!(start.elapsed() <= Duration::from_secs(1));

        let never = timeout(
            Duration::from_secs(3600),
            next_run(&Schedule::Manual, true, Duration::ZERO),
        );
        assert!(
            never.await.is_err(),
            "a manual pipeline runs only when asked"
        );
    }
}
