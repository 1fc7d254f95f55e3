//! A model-based test of the queue, after vector's `disk_v2` model tests: random sequences of
//! operations run against the store and against a plain in-memory model of the rules, and
//! after every operation the two must agree on every passenger's state and steps, on the
//! counts, and on what is due.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::config::{StepDef, StepKind};
use ferry_core::{Passenger, PassengerId, Timestamp};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::TestStore;
use crate::{
    Finished, LeaseToken, Leased, PassengerState, PipelineKey, QueueFilter, SeatResult,
    StateCounts, StepChange, StepState, StepStatus, StoreError,
};

/// The model's clock starts here; operations move it forward.
const T0: i64 = 1_750_000_000_000;

/// External ids are drawn from a small range so that duplicates are frequent.
const EXTERNAL_IDS: u8 = 10;

/// Three pipelines of two clients with different step lists.
fn pipelines() -> Vec<(PipelineKey, Vec<StepDef>)> {
    let processor = |name: &str| StepDef {
        kind: StepKind::Processor,
        name: name.into(),
    };
    let pusher = |name: &str| StepDef {
        kind: StepKind::Pusher,
        name: name.into(),
    };
    vec![
        (
            PipelineKey::new("acme", "orders"),
            vec![processor("map"), pusher("one"), pusher("two")],
        ),
        (PipelineKey::new("acme", "mail"), vec![pusher("smtp")]),
        (
            PipelineKey::new("globex", "feed"),
            vec![processor("check"), processor("convert"), pusher("http")],
        ),
    ]
}

const CLIENTS: [&str; 2] = ["acme", "globex"];

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Done,
    /// Fails; next try after this many milliseconds.
    Retry(i64),
    Dead,
    /// A processor filters; a pusher reports itself skipped.
    Filtered,
    /// The worker did not get to this step.
    Untouched,
}

#[derive(Clone, Debug)]
enum Op {
    Seat {
        pipeline: usize,
        externals: Vec<u8>,
    },
    Lease {
        pipeline: usize,
        max: usize,
        lease_for: u64,
    },
    /// Reports on leases picked from every lease ever handed out, stale ones included.
    Finish {
        reports: Vec<(usize, Vec<Outcome>)>,
    },
    Release {
        picks: Vec<usize>,
    },
    /// Picks beyond the passengers seated so far name an unknown passenger.
    Retry(usize),
    Discard(usize),
    Replay(usize),
    /// A passenger as for `Retry`, and a step index (beyond its steps now and then).
    SkipStep(usize, u32),
    Purge {
        client: usize,
        age: i64,
    },
    Advance(i64),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        5 => Just(Outcome::Done),
        3 => prop_oneof![Just(0i64), Just(2_000), Just(30_000)].prop_map(Outcome::Retry),
        1 => Just(Outcome::Dead),
        1 => Just(Outcome::Filtered),
        1 => Just(Outcome::Untouched),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let pipeline = 0..pipelines().len();
    prop_oneof![
        3 => (pipeline.clone(), vec(0..EXTERNAL_IDS, 0..5))
            .prop_map(|(pipeline, externals)| Op::Seat { pipeline, externals }),
        3 => (pipeline, 0..4usize, prop_oneof![Just(1_000u64), Just(60_000)])
            .prop_map(|(pipeline, max, lease_for)| Op::Lease { pipeline, max, lease_for }),
        4 => vec((any::<usize>(), vec(outcome(), 3)), 1..4)
            .prop_map(|reports| Op::Finish { reports }),
        1 => vec(any::<usize>(), 1..3).prop_map(|picks| Op::Release { picks }),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Discard),
        1 => any::<usize>().prop_map(Op::Replay),
        2 => (any::<usize>(), 0..4u32).prop_map(|(pick, step)| Op::SkipStep(pick, step)),
        1 => (0..CLIENTS.len(), prop_oneof![Just(0i64), Just(10_000), Just(100_000)])
            .prop_map(|(client, age)| Op::Purge { client, age }),
        2 => prop_oneof![Just(500i64), Just(5_000), Just(70_000)].prop_map(Op::Advance),
    ]
}

/// One step as the model keeps it.
#[derive(Clone, Debug)]
struct ModelStep {
    kind: StepKind,
    state: StepState,
    attempts: u32,
    next_try_at: Option<i64>,
}

impl ModelStep {
    fn open(&self) -> bool {
        matches!(self.state, StepState::Pending | StepState::Failed)
    }
}

/// One passenger as the model keeps it.
#[derive(Clone, Debug)]
struct ModelPassenger {
    id: PassengerId,
    pipeline: usize,
    external: u8,
    state: PassengerState,
    due_at: i64,
    token: Option<LeaseToken>,
    completed_at: Option<i64>,
    steps: Vec<ModelStep>,
    purged: bool,
}

/// The queue's rules, restated as simply as possible.
struct Model {
    now: i64,
    pipelines: Vec<(PipelineKey, Vec<StepDef>)>,
    /// In seat order, purged ones included (they must stay not found).
    passengers: Vec<ModelPassenger>,
    /// Every lease handed out: passenger, token and the steps as leased.
    leases: Vec<(PassengerId, LeaseToken, Vec<StepStatus>)>,
}

impl Model {
    fn new() -> Self {
        Model {
            now: T0,
            pipelines: pipelines(),
            passengers: Vec::new(),
            leases: Vec::new(),
        }
    }

    fn fresh_steps(&self, pipeline: usize) -> Vec<ModelStep> {
        self.pipelines[pipeline]
            .1
            .iter()
            .map(|def| ModelStep {
                kind: def.kind,
                state: StepState::Pending,
                attempts: 0,
                next_try_at: None,
            })
            .collect()
    }

    fn find(&mut self, id: PassengerId) -> Option<&mut ModelPassenger> {
        self.passengers.iter_mut().find(|p| p.id == id && !p.purged)
    }

    fn seat(&mut self, pipeline: usize, externals: &[u8], ids: &[PassengerId]) -> Vec<SeatResult> {
        let mut results = Vec::new();
        for (&external, &id) in externals.iter().zip(ids) {
            let taken = self
                .passengers
                .iter()
                .any(|p| !p.purged && p.pipeline == pipeline && p.external == external);
            if taken {
                results.push(SeatResult::Duplicate);
                continue;
            }
            let steps = self.fresh_steps(pipeline);
            self.passengers.push(ModelPassenger {
                id,
                pipeline,
                external,
                state: PassengerState::Pending,
                due_at: self.now,
                token: None,
                completed_at: None,
                steps,
                purged: false,
            });
            results.push(SeatResult::Seated);
        }
        results
    }

    /// The passengers a lease must return, in order.
    fn due(&self, pipeline: usize, max: usize) -> Vec<PassengerId> {
        let mut due: Vec<(i64, usize)> = self
            .passengers
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.purged && p.pipeline == pipeline)
            .filter(|(_, p)| p.state.is_open() && p.due_at <= self.now)
            .map(|(order, p)| (p.due_at, order))
            .collect();
        due.sort();
        due.into_iter()
            .take(max)
            .map(|(_, order)| self.passengers[order].id)
            .collect()
    }

    fn lease(&mut self, id: PassengerId, token: LeaseToken, lease_for: u64) {
        let until = self.now + lease_for as i64;
        let passenger = self.find(id).expect("leased passenger exists");
        passenger.state = PassengerState::InFlight;
        passenger.due_at = until;
        passenger.token = Some(token);
    }

    /// Applies a report; returns whether it held the lease.
    fn finish(
        &mut self,
        id: PassengerId,
        token: LeaseToken,
        changes: &[(u32, StepChange)],
    ) -> bool {
        let now = self.now;
        let Some(passenger) = self.find(id) else {
            return false;
        };
        if passenger.state != PassengerState::InFlight || passenger.token != Some(token) {
            return false;
        }
        for (idx, change) in changes {
            let idx = *idx as usize;
            let step = &mut passenger.steps[idx];
            match change {
                StepChange::Done | StepChange::DoneWith { .. } => {
                    step.state = StepState::Done;
                    step.next_try_at = None;
                }
                StepChange::Skipped => {
                    step.state = StepState::Skipped;
                    step.next_try_at = None;
                }
                StepChange::Retry { at, .. } => {
                    step.state = StepState::Failed;
                    step.attempts += 1;
                    step.next_try_at = Some(at.timestamp_millis());
                }
                StepChange::Dead { .. } => {
                    step.state = StepState::Dead;
                    step.attempts += 1;
                    step.next_try_at = None;
                }
                StepChange::Filtered { .. } => {
                    step.state = StepState::Filtered;
                    step.next_try_at = None;
                    for later in passenger.steps.iter_mut().skip(idx + 1) {
                        if later.open() {
                            later.state = StepState::Skipped;
                            later.next_try_at = None;
                        }
                    }
                }
            }
        }
        let (state, due_at) = derive(&passenger.steps, now);
        settle(passenger, state, due_at, now);
        true
    }

    fn release(&mut self, id: PassengerId, token: LeaseToken) {
        let now = self.now;
        let Some(passenger) = self.find(id) else {
            return;
        };
        if passenger.state != PassengerState::InFlight || passenger.token != Some(token) {
            return;
        }
        let (state, _) = derive(&passenger.steps, now);
        settle(passenger, state, now, now);
    }

    fn retry(&mut self, id: PassengerId) {
        let now = self.now;
        let passenger = self.find(id).expect("checked by the caller");
        let mut any = false;
        for step in &mut passenger.steps {
            if matches!(step.state, StepState::Failed | StepState::Dead) {
                step.state = StepState::Pending;
                step.attempts = 0;
                step.next_try_at = None;
                any = true;
            }
        }
        if !any || passenger.state == PassengerState::InFlight {
            return;
        }
        let (state, due_at) = derive(&passenger.steps, now);
        settle(passenger, state, due_at, now);
    }

    fn discard(&mut self, id: PassengerId) {
        let now = self.now;
        let passenger = self.find(id).expect("checked by the caller");
        if passenger.state == PassengerState::Discarded {
            return;
        }
        for step in &mut passenger.steps {
            if step.open() || step.state == StepState::Dead {
                step.state = StepState::Skipped;
                step.next_try_at = None;
            }
        }
        settle(passenger, PassengerState::Discarded, now, now);
    }

    /// Skips a step; `Err` when the store must refuse: the passenger is leased, has no such
    /// step, or the step already ended.
    fn skip_step(&mut self, id: PassengerId, idx: u32) -> Result<(), ()> {
        let now = self.now;
        let passenger = self.find(id).expect("checked by the caller");
        if passenger.state == PassengerState::InFlight && passenger.due_at > now {
            return Err(());
        }
        let Some(step) = passenger.steps.get_mut(idx as usize) else {
            return Err(());
        };
        if !step.open() && step.state != StepState::Dead {
            return Err(());
        }
        step.state = StepState::Skipped;
        step.next_try_at = None;
        let (state, due_at) = derive(&passenger.steps, now);
        settle(passenger, state, due_at, now);
        Ok(())
    }

    fn replay(&mut self, id: PassengerId) {
        let now = self.now;
        let pipeline = self.find(id).expect("checked by the caller").pipeline;
        let steps = self.fresh_steps(pipeline);
        let passenger = self.find(id).expect("checked by the caller");
        passenger.steps = steps;
        passenger.state = PassengerState::Pending;
        passenger.due_at = now;
        passenger.token = None;
        passenger.completed_at = None;
    }

    fn purge(&mut self, client: &str, before: i64) -> u64 {
        let mut purged = 0;
        for passenger in &mut self.passengers {
            let key = &self.pipelines[passenger.pipeline].0;
            if passenger.purged || key.client != client || !passenger.state.is_purgeable() {
                continue;
            }
            if passenger.completed_at.is_some_and(|at| at < before) {
                passenger.purged = true;
                purged += 1;
            }
        }
        purged
    }

    fn counts(&self) -> BTreeMap<PipelineKey, StateCounts> {
        let mut counts: BTreeMap<PipelineKey, StateCounts> = BTreeMap::new();
        for passenger in self.passengers.iter().filter(|p| !p.purged) {
            let key = self.pipelines[passenger.pipeline].0.clone();
            *counts
                .entry(key)
                .or_default()
                .entry(passenger.state)
                .or_default() += 1;
        }
        counts
    }

    fn next_due(&self, pipeline: usize) -> Option<i64> {
        self.passengers
            .iter()
            .filter(|p| !p.purged && p.pipeline == pipeline && p.state.is_open())
            .map(|p| p.due_at)
            .min()
    }

    /// A passenger's steps as the store shows them.
    fn step_states(&self, passenger: &ModelPassenger) -> Vec<(StepState, u32, Option<i64>)> {
        let leased = passenger.state == PassengerState::InFlight;
        passenger
            .steps
            .iter()
            .map(|step| {
                let state = if leased && step.open() {
                    StepState::InFlight
                } else {
                    step.state
                };
                (state, step.attempts, step.next_try_at)
            })
            .collect()
    }
}

/// The passenger state the steps add up to: open work that can run (a failed step means a
/// back-off, due at the earliest next try), else dead, filtered, complete. Steps behind a
/// dead processor cannot run.
fn derive(steps: &[ModelStep], now: i64) -> (PassengerState, i64) {
    let blocked_from = steps
        .iter()
        .position(|s| s.kind == StepKind::Processor && s.state == StepState::Dead)
        .unwrap_or(steps.len());
    let runnable = &steps[..blocked_from];
    let next_try = runnable
        .iter()
        .filter(|s| s.state == StepState::Failed)
        .filter_map(|s| s.next_try_at)
        .min();
    if let Some(at) = next_try {
        return (PassengerState::Failed, at);
    }
    if runnable.iter().any(ModelStep::open) {
        return (PassengerState::Pending, now);
    }
    if steps.iter().any(|s| s.state == StepState::Dead) {
        return (PassengerState::Dead, now);
    }
    if steps.iter().any(|s| s.state == StepState::Filtered) {
        return (PassengerState::Filtered, now);
    }
    (PassengerState::Complete, now)
}

fn settle(passenger: &mut ModelPassenger, state: PassengerState, due_at: i64, now: i64) {
    passenger.state = state;
    passenger.due_at = due_at;
    passenger.token = None;
    passenger.completed_at = state.is_purgeable().then_some(now);
}

/// What a worker reports for a lease, given what happened to each step: processors in order
/// until one does not succeed, then the pushers each on their own.
fn changes(steps: &[StepStatus], outcomes: &[Outcome], now: i64) -> Vec<(u32, StepChange)> {
    let mut changes = Vec::new();
    let mut processors_passed = true;
    for (position, step) in steps.iter().enumerate() {
        if step.state != StepState::InFlight {
            continue;
        }
        if !processors_passed {
            break;
        }
        let outcome = outcomes[position % outcomes.len()];
        let change = match (step.kind, outcome) {
            (_, Outcome::Done) => Some(StepChange::Done),
            (_, Outcome::Retry(delay)) => Some(StepChange::Retry {
                error: format!("try again in {delay} ms"),
                at: time(now + delay),
            }),
            (_, Outcome::Dead) => Some(StepChange::Dead {
                error: "gave up".into(),
            }),
            (StepKind::Processor, Outcome::Filtered) => Some(StepChange::Filtered {
                reason: "not wanted".into(),
            }),
            (StepKind::Pusher, Outcome::Filtered) => Some(StepChange::Skipped),
            (_, Outcome::Untouched) => None,
        };
        if step.kind == StepKind::Processor && !matches!(change, Some(StepChange::Done)) {
            processors_passed = false;
        }
        if let Some(change) = change {
            changes.push((step.index, change));
        }
    }
    changes
}

fn time(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(ms).expect("valid model time")
}

/// Runs one sequence of operations against a fresh store and the model.
async fn run<S: TestStore>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_place, store) = S::create().await;
    let mut model = Model::new();
    for (step, op) in ops.into_iter().enumerate() {
        let now = time(model.now);
        match &op {
            Op::Seat {
                pipeline,
                externals,
            } => {
                let (key, steps) = model.pipelines[*pipeline].clone();
                let passengers: Vec<_> = externals
                    .iter()
                    .map(|n| Passenger::pulled("model", format!("ext-{n}")))
                    .collect();
                let ids: Vec<_> = passengers.iter().map(|p| p.id).collect();
                let results = store.seat(&key, "v1", &steps, &passengers, now).await;
                let expected = model.seat(*pipeline, externals, &ids);
                prop_assert_eq!(results.map_err(error)?, expected, "op {}: {:?}", step, op);
            }
            Op::Lease {
                pipeline,
                max,
                lease_for,
            } => {
                let key = model.pipelines[*pipeline].0.clone();
                let lease_for = Duration::from_millis(*lease_for);
                let leased: Vec<Leased> = store
                    .lease(&key, *max, lease_for, now)
                    .await
                    .map_err(error)?;
                let ids: Vec<_> = leased.iter().map(|l| l.passenger.id).collect();
                prop_assert_eq!(&ids, &model.due(*pipeline, *max), "op {}: {:?}", step, op);
                for leased in leased {
                    let id = leased.passenger.id;
                    model.lease(id, leased.token, lease_for.as_millis() as u64);
                    let expected =
                        model.step_states(model.passengers.iter().find(|p| p.id == id).unwrap());
                    prop_assert_eq!(shown(&leased.steps), expected, "op {}: leased steps", step);
                    model.leases.push((id, leased.token, leased.steps));
                }
            }
            Op::Finish { reports } => {
                if model.leases.is_empty() {
                    continue;
                }
                let mut finished = Vec::new();
                let mut applied = 0;
                for (pick, outcomes) in reports {
                    let (id, token, steps) = model.leases[pick % model.leases.len()].clone();
                    let changes = changes(&steps, outcomes, model.now);
                    if model.finish(id, token, &changes) {
                        applied += 1;
                    }
                    finished.push(Finished {
                        id,
                        token,
                        processed: None,
                        steps: changes,
                        split: None,
                    });
                }
                let result = store.finish(&finished, now).await.map_err(error)?;
                prop_assert_eq!(result, applied, "op {}: {:?}", step, op);
            }
            Op::Release { picks } => {
                if model.leases.is_empty() {
                    continue;
                }
                let mut leases = Vec::new();
                for pick in picks {
                    let (id, token, _) = model.leases[pick % model.leases.len()].clone();
                    model.release(id, token);
                    leases.push((id, token));
                }
                store.release(&leases, now).await.map_err(error)?;
            }
            Op::Retry(pick) | Op::Discard(pick) | Op::Replay(pick) => {
                let id = pick_passenger(&model, *pick);
                let exists = model.find(id).is_some();
                let result = match op {
                    Op::Retry(_) => store.retry(id, now).await,
                    Op::Discard(_) => store.discard(id, now).await,
                    _ => {
                        let steps = id_pipeline_steps(&model, id);
                        store.replay(id, &steps, now).await
                    }
                };
                if !exists {
                    prop_assert!(
                        matches!(result, Err(StoreError::NotFound(missing)) if missing == id),
                        "op {}: {:?} of an unknown passenger gave {:?}",
                        step,
                        op,
                        result
                    );
                    continue;
                }
                result.map_err(error)?;
                match op {
                    Op::Retry(_) => model.retry(id),
                    Op::Discard(_) => model.discard(id),
                    _ => model.replay(id),
                }
            }
            Op::SkipStep(pick, idx) => {
                let id = pick_passenger(&model, *pick);
                let result = store.skip_step(id, *idx, now).await;
                if model.find(id).is_none() {
                    prop_assert!(
                        matches!(result, Err(StoreError::NotFound(missing)) if missing == id),
                        "op {}: {:?} of an unknown passenger gave {:?}",
                        step,
                        op,
                        result
                    );
                    continue;
                }
                match (model.skip_step(id, *idx), result) {
                    (Ok(()), Ok(())) | (Err(()), Err(StoreError::Refused(_))) => {}
                    (expected, result) => prop_assert!(
                        false,
                        "op {}: {:?}: the model says {:?}, the store {:?}",
                        step,
                        op,
                        expected,
                        result
                    ),
                }
            }
            Op::Purge { client, age } => {
                let client = CLIENTS[*client];
                let before = model.now - age;
                let purged = store.purge_passengers(client, time(before)).await;
                let expected = model.purge(client, before);
                prop_assert_eq!(purged.map_err(error)?, expected, "op {}: {:?}", step, op);
            }
            Op::Advance(ms) => model.now += ms,
        }
        check(&store, &model, step, &op).await?;
    }
    Ok(())
}

/// After every operation: the same passengers in the same states with the same steps, the
/// same counts, the same open work and due times.
async fn check<S: TestStore>(
    store: &S,
    model: &Model,
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        store.counts(None).await.map_err(error)?,
        model.counts(),
        "op {}: {:?}",
        step,
        op
    );

    let listed = store
        .list(&QueueFilter::default(), None, 10_000)
        .await
        .map_err(error)?;
    let listed: BTreeMap<_, _> = listed.iter().map(|e| (e.id, e.state)).collect();
    let expected: BTreeMap<_, _> = model
        .passengers
        .iter()
        .filter(|p| !p.purged)
        .map(|p| (p.id, p.state))
        .collect();
    prop_assert_eq!(listed, expected, "op {}: {:?}", step, op);

    for passenger in model.passengers.iter().filter(|p| !p.purged) {
        let detail = store.get(passenger.id).await.map_err(error)?;
        let states = shown(&detail.steps);
        prop_assert_eq!(
            states,
            model.step_states(passenger),
            "op {}: {:?}: steps of {}",
            step,
            op,
            passenger.id
        );
    }
    for (pipeline, (key, _)) in model.pipelines.iter().enumerate() {
        let open = model
            .passengers
            .iter()
            .filter(|p| !p.purged && p.pipeline == pipeline && p.state.is_open())
            .count() as u64;
        prop_assert_eq!(
            store.open_count(key).await.map_err(error)?,
            open,
            "op {}: open of {}",
            step,
            key
        );
        let due = store.next_due(key).await.map_err(error)?;
        let due = due.map(|at| at.timestamp_millis());
        prop_assert_eq!(
            due,
            model.next_due(pipeline),
            "op {}: next due of {}",
            step,
            key
        );
    }
    Ok(())
}

fn shown(steps: &[StepStatus]) -> Vec<(StepState, u32, Option<i64>)> {
    steps
        .iter()
        .map(|s| {
            (
                s.state,
                s.attempts,
                s.next_try_at.map(|at| at.timestamp_millis()),
            )
        })
        .collect()
}

/// A passenger seated so far (purged ones included), or an unknown id.
fn pick_passenger(model: &Model, pick: usize) -> PassengerId {
    let known = model.passengers.len();
    match pick % (known + 1) {
        n if n < known => model.passengers[n].id,
        _ => PassengerId::new(),
    }
}

fn id_pipeline_steps(model: &Model, id: PassengerId) -> Vec<StepDef> {
    model
        .passengers
        .iter()
        .find(|p| p.id == id)
        .map(|p| model.pipelines[p.pipeline].1.clone())
        .unwrap_or_default()
}

fn error(error: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("store error: {error}"))
}

/// The proptest entry point, run by `store_test_suite!` for each store.
pub(crate) fn queue_matches_model<S: TestStore>() {
    // 128 sequences by default (a few seconds); `PROPTEST_CASES` asks for more.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let result = runner.run(&vec(op(), 1..60), |ops| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a runtime");
        runtime.block_on(run::<S>(ops))
    });
    if let Err(failure) = result {
        panic!("the store and the model disagree: {failure}");
    }
}
