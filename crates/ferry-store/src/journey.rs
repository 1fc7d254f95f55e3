//! The rules of a passenger's journey, free of SQL: how a worker's report changes the steps,
//! and which passenger state the steps add up to.
//!
//! Both stores share these rules rather than restate them in their SQL: each loads the steps,
//! changes them here and writes back what changed.

use ferry_core::PassengerId;
use ferry_core::config::StepKind;

use crate::convert::time;
use crate::{PassengerState, Result, StepChange, StepState, StepStatus, StoreError};

/// One step of a passenger as stored, loaded to be changed in memory and written back.
#[derive(Clone, Debug)]
pub(crate) struct StoredStep {
    pub idx: u32,
    pub kind: StepKind,
    pub name: String,
    pub state: StepState,
    pub attempts: u32,
    pub next_try_at: Option<i64>,
    pub last_error: Option<String>,
    pub done_at: Option<i64>,
    /// What the target answered, when the pusher keeps it.
    pub result: Option<String>,
    /// Set when the step differs from what is stored.
    pub changed: bool,
}

impl StoredStep {
    /// Still has to run: pending or waiting for its next attempt.
    pub fn is_open(&self) -> bool {
        matches!(self.state, StepState::Pending | StepState::Failed)
    }
}

/// A stored step as the trait shows it. While the passenger is leased its open steps are in
/// flight: that state is never stored, it follows from the lease.
pub(crate) fn step_status(step: StoredStep, leased: bool) -> Result<StepStatus> {
    let state = if leased && step.is_open() {
        StepState::InFlight
    } else {
        step.state
    };
    Ok(StepStatus {
        index: step.idx,
        kind: step.kind,
        name: step.name,
        state,
        attempts: step.attempts,
        next_try_at: step.next_try_at.map(time).transpose()?,
        last_error: step.last_error,
        done_at: step.done_at.map(time).transpose()?,
        result: step.result,
    })
}

/// A failed attempt to record in the history.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FailedAttempt {
    pub idx: u32,
    pub attempt: u32,
    pub error: String,
}

/// Applies one change of a worker's report at time `now`. Returns the failed attempt to
/// record, if the change is a failure; `Err` when the passenger has no step `idx`.
pub(crate) fn apply_change(
    steps: &mut [StoredStep],
    idx: u32,
    change: &StepChange,
    now: i64,
) -> Result<Option<FailedAttempt>, UnknownStep> {
    let Some(position) = steps.iter().position(|step| step.idx == idx) else {
        return Err(UnknownStep(idx));
    };
    let step = &mut steps[position];
    step.changed = true;
    let mut failure = None;
    match change {
        StepChange::Done => {
            step.state = StepState::Done;
            step.next_try_at = None;
            step.done_at = Some(now);
        }
        StepChange::DoneWith { result } => {
            step.state = StepState::Done;
            step.next_try_at = None;
            step.done_at = Some(now);
            step.result = Some(result.clone());
        }
        StepChange::Filtered { reason } => {
            step.state = StepState::Filtered;
            step.next_try_at = None;
            step.done_at = Some(now);
            // Not an error, but the console shows it where errors go: why it stopped here.
            step.last_error = Some(reason.clone());
        }
        StepChange::Skipped => {
            step.state = StepState::Skipped;
            step.next_try_at = None;
        }
        StepChange::Retry { error, at } => {
            step.state = StepState::Failed;
            step.attempts += 1;
            step.next_try_at = Some(at.timestamp_millis());
            step.last_error = Some(error.clone());
            failure = Some(FailedAttempt {
                idx,
                attempt: step.attempts,
                error: error.clone(),
            });
        }
        StepChange::Dead { error } => {
            step.state = StepState::Dead;
            step.attempts += 1;
            step.next_try_at = None;
            step.last_error = Some(error.clone());
            failure = Some(FailedAttempt {
                idx,
                attempt: step.attempts,
                error: error.clone(),
            });
        }
    }
    // A filtering processor ends the journey: what comes after it will never run.
    if matches!(change, StepChange::Filtered { .. }) {
        for later in steps.iter_mut().filter(|s| s.idx > idx && s.is_open()) {
            later.state = StepState::Skipped;
            later.next_try_at = None;
            later.changed = true;
        }
    }
    Ok(failure)
}

/// A report named a step the passenger does not have.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownStep(pub u32);

/// The passenger state the steps add up to, and when its open work is due.
///
/// - Open work that can run: `failed` (due at the earliest next try) when a step waits for its
///   back-off, else `pending` (due `now`). A pending step next to a failed one waits for the
///   back-off too: it is usually a pusher waiting behind a failed processor, and if not, it
///   runs in the same lease as the retry.
/// - Else any dead step: `dead`. Open steps behind a dead processor cannot run (processors run
///   in order), so they do not keep the passenger open.
/// - Else any filtered step: `filtered`; else `complete`.
pub(crate) fn derive(steps: &[StoredStep], now: i64) -> (PassengerState, i64) {
    let first_dead_processor = steps
        .iter()
        .filter(|step| step.kind == StepKind::Processor && step.state == StepState::Dead)
        .map(|step| step.idx)
        .min();
    let runnable = steps
        .iter()
        .filter(|step| step.is_open())
        .filter(|step| first_dead_processor.is_none_or(|dead| step.idx < dead));

    let mut any_runnable = false;
    let mut next_try: Option<i64> = None;
    for step in runnable {
        any_runnable = true;
        if step.state == StepState::Failed {
            let at = step.next_try_at.unwrap_or(now);
            next_try = Some(next_try.map_or(at, |earliest| earliest.min(at)));
        }
    }
    if let Some(at) = next_try {
        return (PassengerState::Failed, at);
    }
    if any_runnable {
        return (PassengerState::Pending, now);
    }
    if steps.iter().any(|step| step.state == StepState::Dead) {
        return (PassengerState::Dead, now);
    }
    if steps.iter().any(|step| step.state == StepState::Filtered) {
        return (PassengerState::Filtered, now);
    }
    (PassengerState::Complete, now)
}

/// Makes failed and dead steps pending again with fresh attempts. Returns whether any was.
pub(crate) fn reset_for_retry(steps: &mut [StoredStep]) -> bool {
    let mut any = false;
    for step in steps.iter_mut() {
        if matches!(step.state, StepState::Failed | StepState::Dead) {
            step.state = StepState::Pending;
            step.attempts = 0;
            step.next_try_at = None;
            step.changed = true;
            any = true;
        }
    }
    any
}

/// Skips every step that has not run to an end: open and dead ones.
pub(crate) fn skip_unfinished(steps: &mut [StoredStep]) {
    for step in steps.iter_mut() {
        if step.is_open() || step.state == StepState::Dead {
            step.state = StepState::Skipped;
            step.next_try_at = None;
            step.changed = true;
        }
    }
}

/// Skips one step that has not run to an end: a pending, failed or dead one. The steps after
/// it keep their state: the processors behind a skipped processor still run.
pub(crate) fn skip_step(steps: &mut [StoredStep], idx: u32) -> Result<(), NotSkippable> {
    let Some(step) = steps.iter_mut().find(|step| step.idx == idx) else {
        return Err(NotSkippable::Unknown);
    };
    if !step.is_open() && step.state != StepState::Dead {
        return Err(NotSkippable::Finished(step.state));
    }
    step.state = StepState::Skipped;
    step.next_try_at = None;
    step.changed = true;
    Ok(())
}

/// Skips step `idx` of passenger `id` on a person's word, or says why not. `leased`: a worker
/// holds a lease on the passenger that has not expired; it may be running the step right now,
/// and its report and the skip would overwrite each other. (A lease that expired is held by
/// nobody: the skip ends it as a report would, and a late report from its worker is stale.)
pub(crate) fn skip_by_person(
    steps: &mut [StoredStep],
    id: PassengerId,
    idx: u32,
    leased: bool,
) -> Result<(), StoreError> {
    if leased {
        return Err(StoreError::Refused(format!(
            "passenger {id} is leased by a worker; step {idx} can be skipped once the lease ends"
        )));
    }
    skip_step(steps, idx).map_err(|reason| {
        StoreError::Refused(match reason {
            NotSkippable::Unknown => format!("passenger {id} has no step {idx}"),
            NotSkippable::Finished(state) => format!(
                "step {idx} of passenger {id} is {state}; only pending, failed or dead steps \
                 can be skipped"
            ),
        })
    })
}

/// Why a step cannot be skipped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotSkippable {
    /// The passenger has no such step.
    Unknown,
    /// The step already ended in this state (done, skipped or filtered).
    Finished(StepState),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(idx: u32, kind: StepKind, state: StepState, next_try_at: Option<i64>) -> StoredStep {
        StoredStep {
            idx,
            kind,
            name: format!("step-{idx}"),
            state,
            attempts: 0,
            next_try_at,
            last_error: None,
            done_at: None,
            result: None,
            changed: false,
        }
    }

    use StepKind::{Processor, Pusher};
    use StepState::{Dead, Done, Failed, Filtered, Pending, Skipped};

    #[test]
    fn failed_step_sets_the_due_time_even_next_to_a_pending_one() {
        let steps = [
            step(0, Processor, Failed, Some(500)),
            step(1, Pusher, Pending, None),
        ];
        assert_eq!(derive(&steps, 100), (PassengerState::Failed, 500));
    }

    #[test]
    fn earliest_next_try_wins() {
        let steps = [
            step(0, Pusher, Failed, Some(900)),
            step(1, Pusher, Failed, Some(300)),
            step(2, Pusher, Done, None),
        ];
        assert_eq!(derive(&steps, 100), (PassengerState::Failed, 300));
    }

    #[test]
    fn pushers_behind_a_dead_processor_do_not_keep_it_open() {
        let steps = [
            step(0, Processor, Dead, None),
            step(1, Pusher, Pending, None),
        ];
        assert_eq!(derive(&steps, 100).0, PassengerState::Dead);
    }

    #[test]
    fn a_dead_pusher_waits_for_the_other_pushers() {
        let steps = [step(0, Pusher, Dead, None), step(1, Pusher, Pending, None)];
        assert_eq!(derive(&steps, 100), (PassengerState::Pending, 100));
    }

    #[test]
    fn terminal_states() {
        let filtered = [
            step(0, Processor, Filtered, None),
            step(1, Pusher, Skipped, None),
        ];
        assert_eq!(derive(&filtered, 1).0, PassengerState::Filtered);
        let complete = [step(0, Processor, Done, None), step(1, Pusher, Done, None)];
        assert_eq!(derive(&complete, 1).0, PassengerState::Complete);
        assert_eq!(derive(&[], 1).0, PassengerState::Complete);
    }

    #[test]
    fn filtering_skips_the_open_steps_after_it() {
        let mut steps = [
            step(0, Processor, Pending, None),
            step(1, Processor, Pending, None),
            step(2, Pusher, Failed, Some(5)),
        ];
        let change = StepChange::Filtered {
            reason: "not for us".into(),
        };
        assert_eq!(apply_change(&mut steps, 0, &change, 1), Ok(None));
        let states: Vec<_> = steps.iter().map(|s| s.state).collect();
        assert_eq!(states, [Filtered, Skipped, Skipped]);
        assert_eq!(steps[0].last_error.as_deref(), Some("not for us"));
    }

    #[test]
    fn failures_count_attempts() {
        let mut steps = [step(0, Pusher, Pending, None)];
        let at = chrono::DateTime::from_timestamp_millis(7_000).unwrap();
        let retry = StepChange::Retry {
            error: "timeout".into(),
            at,
        };
        let first = apply_change(&mut steps, 0, &retry, 1).unwrap().unwrap();
        assert_eq!((first.attempt, steps[0].next_try_at), (1, Some(7_000)));
        let dead = StepChange::Dead {
            error: "400".into(),
        };
        let second = apply_change(&mut steps, 0, &dead, 2).unwrap().unwrap();
        assert_eq!((second.attempt, steps[0].state), (2, Dead));
        assert_eq!(apply_change(&mut steps, 9, &dead, 2), Err(UnknownStep(9)));
    }

    #[test]
    fn skipping_a_dead_processor_lets_the_later_steps_run() {
        let mut steps = [
            step(0, Processor, Dead, None),
            step(1, Processor, Pending, None),
            step(2, Pusher, Pending, None),
        ];
        assert_eq!(derive(&steps, 100).0, PassengerState::Dead);
        assert_eq!(skip_step(&mut steps, 0), Ok(()));
        let states: Vec<_> = steps.iter().map(|s| s.state).collect();
        assert_eq!(states, [Skipped, Pending, Pending]);
        assert!(steps[0].changed && !steps[1].changed);
        assert_eq!(derive(&steps, 100), (PassengerState::Pending, 100));
    }

    #[test]
    fn skipping_the_last_failed_pusher_completes() {
        let mut steps = [
            step(0, Processor, Done, None),
            step(1, Pusher, Done, None),
            step(2, Pusher, Failed, Some(500)),
        ];
        assert_eq!(skip_step(&mut steps, 2), Ok(()));
        assert_eq!(steps[2].next_try_at, None);
        assert_eq!(derive(&steps, 100).0, PassengerState::Complete);
    }

    #[test]
    fn only_unfinished_steps_can_be_skipped() {
        let mut steps = [
            step(0, Processor, Filtered, None),
            step(1, Pusher, Skipped, None),
            step(2, Pusher, Done, None),
        ];
        assert_eq!(
            skip_step(&mut steps, 0),
            Err(NotSkippable::Finished(Filtered))
        );
        assert_eq!(
            skip_step(&mut steps, 1),
            Err(NotSkippable::Finished(Skipped))
        );
        assert_eq!(skip_step(&mut steps, 2), Err(NotSkippable::Finished(Done)));
        assert_eq!(skip_step(&mut steps, 3), Err(NotSkippable::Unknown));
        assert!(steps.iter().all(|s| !s.changed));
    }
}
