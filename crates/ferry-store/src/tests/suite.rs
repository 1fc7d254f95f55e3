//! The behaviour every store must show, one test per rule, generic over [`TestStore`].
//!
//! Times are explicit (`at(ms)`), never the clock, so every test is deterministic.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_core::config::{StepDef, StepKind};
use ferry_core::{Attachment, Body, Metadata, Passenger, PassengerId, Timestamp};
use serde_json::json;

use super::TestStore;
use crate::{
    ApiToken, Attempt, AuditEntry, DeadGroup, Finished, Leased, LogLevel, LogLine, PassengerState,
    PipelineKey, PullerState, QueueFilter, RunCounts, RunFilter, RunId, RunStatus, SeatResult,
    Session, StepChange, StepState, StepStatus, Store, StoreError, Throughput,
};

/// An arbitrary fixed origin, so timestamps in failures are readable offsets.
const T0: i64 = 1_750_000_000_000;

/// Long enough never to expire unless a test wants it to.
const LEASE: Duration = Duration::from_secs(600);

/// `ms` milliseconds after the tests' origin.
pub(super) fn at(ms: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(T0 + ms).expect("valid test time")
}

fn invoices() -> PipelineKey {
    PipelineKey::new("acme", "invoices")
}

fn processor(name: &str) -> StepDef {
    StepDef {
        kind: StepKind::Processor,
        name: name.into(),
    }
}

fn pusher(name: &str) -> StepDef {
    StepDef {
        kind: StepKind::Pusher,
        name: name.into(),
    }
}

/// A processor and two pushers: the steps of most tests.
fn three_steps() -> Vec<StepDef> {
    vec![processor("map"), pusher("file"), pusher("http")]
}

/// A pulled passenger with a JSON body and some metadata.
fn pulled(external_id: &str) -> Passenger {
    let mut passenger = Passenger::pulled("imap", external_id)
        .with_body(Body::json(&json!({ "invoice": external_id })));
    passenger
        .metadata
        .insert("subject".into(), format!("invoice {external_id}"));
    passenger
}

/// Seats one passenger and returns its id.
async fn seat_one<S: Store>(
    store: &S,
    key: &PipelineKey,
    steps: &[StepDef],
    external_id: &str,
    now: Timestamp,
) -> PassengerId {
    let passenger = pulled(external_id);
    let results = store
        .seat(key, "v1", steps, std::slice::from_ref(&passenger), now)
        .await
        .expect("seat");
    assert_eq!(results, [SeatResult::Seated], "seating {external_id}");
    passenger.id
}

/// Leases exactly one passenger of the pipeline.
async fn lease_one<S: Store>(store: &S, key: &PipelineKey, now: Timestamp) -> Leased {
    let mut leased = store.lease(key, 1, LEASE, now).await.expect("lease");
    assert_eq!(leased.len(), 1, "one passenger of {key} is due at {now}");
    leased.remove(0)
}

/// Seats a passenger alone in its pipeline and leases it.
async fn seat_and_lease<S: Store>(
    store: &S,
    key: &PipelineKey,
    steps: &[StepDef],
    external_id: &str,
    now: Timestamp,
) -> Leased {
    let id = seat_one(store, key, steps, external_id, now).await;
    let leased = lease_one(store, key, now).await;
    assert_eq!(leased.passenger.id, id);
    leased
}

fn report(leased: &Leased, steps: Vec<(u32, StepChange)>) -> Finished {
    Finished {
        id: leased.passenger.id,
        token: leased.token,
        processed: None,
        steps,
        split: None,
    }
}

fn retry_at(error: &str, ms: i64) -> StepChange {
    StepChange::Retry {
        error: error.into(),
        at: at(ms),
    }
}

fn dead(error: &str) -> StepChange {
    StepChange::Dead {
        error: error.into(),
    }
}

/// Finishes one report and checks it was applied.
async fn finish_one<S: Store>(store: &S, report: Finished, now: Timestamp) {
    let applied = store.finish(&[report], now).await.expect("finish");
    assert_eq!(applied, 1, "the report holds the current lease");
}

async fn state_of<S: Store>(store: &S, id: PassengerId) -> PassengerState {
    store.get(id).await.expect("get").entry.state
}

async fn step_states<S: Store>(store: &S, id: PassengerId) -> Vec<StepState> {
    let detail = store.get(id).await.expect("get");
    detail.steps.iter().map(|step| step.state).collect()
}

fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, id: PassengerId) {
    match result {
        Err(StoreError::NotFound(missing)) => assert_eq!(missing, id),
        other => panic!("expected NotFound({id}), got {other:?}"),
    }
}

// ---- seat ----

pub(crate) async fn seat_stores_passengers_under_the_pipeline_key<S: TestStore>() {
    let (_place, store) = S::create().await;
    let mut passenger = pulled("m-1");
    passenger.attachments.push(Attachment {
        name: "invoice.pdf".into(),
        media_type: "application/pdf".into(),
        content: Bytes::from_static(b"%PDF-1.7 not really"),
    });
    passenger.attachments.push(Attachment {
        name: "empty.txt".into(),
        media_type: "text/plain".into(),
        content: Bytes::new(),
    });
    assert!(passenger.client.is_empty() && passenger.pipeline.is_empty());

    let results = store
        .seat(
            &invoices(),
            "v1",
            &three_steps(),
            &[passenger.clone()],
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(results, [SeatResult::Seated]);

    let detail = store.get(passenger.id).await.unwrap();
    assert_eq!(detail.entry.id, passenger.id);
    assert_eq!(detail.entry.client, "acme");
    assert_eq!(detail.entry.pipeline, "invoices");
    assert_eq!(detail.entry.source_system, "imap");
    assert_eq!(detail.entry.external_id, "m-1");
    assert_eq!(detail.entry.state, PassengerState::Pending);
    assert_eq!(detail.entry.created_at, at(0));
    assert_eq!(detail.entry.updated_at, at(0));
    assert_eq!(detail.entry.last_error, None);

    let expected = Passenger {
        client: "acme".into(),
        pipeline: "invoices".into(),
        created_at: at(0),
        ..passenger
    };
    assert_eq!(detail.original, expected);
    assert!(detail.processed.is_none());
    assert!(detail.attempts.is_empty());

    assert_eq!(detail.steps.len(), 3);
    for (index, (step, def)) in detail.steps.iter().zip(three_steps()).enumerate() {
        assert_eq!(step.index, index as u32);
        assert_eq!(step.kind, def.kind);
        assert_eq!(step.name, def.name);
        assert_eq!(step.state, StepState::Pending);
        assert_eq!(step.attempts, 0);
        assert_eq!(step.next_try_at, None);
        assert_eq!(step.last_error, None);
        assert_eq!(step.done_at, None);
    }
}

pub(crate) async fn seat_skips_duplicates_within_and_across_batches<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = three_steps();
    let a_again = pulled("a");
    let first = [pulled("a"), pulled("b"), a_again.clone()];
    let results = store.seat(&key, "v1", &steps, &first, at(0)).await.unwrap();
    assert_eq!(
        results,
        [
            SeatResult::Seated,
            SeatResult::Seated,
            SeatResult::Duplicate
        ]
    );
    assert_not_found(store.get(a_again.id).await, a_again.id);

    let second = [pulled("b"), pulled("c")];
    let results = store
        .seat(&key, "v1", &steps, &second, at(1))
        .await
        .unwrap();
    assert_eq!(results, [SeatResult::Duplicate, SeatResult::Seated]);

    // The key is source system and external id within one pipeline.
    let other_source = Passenger::pulled("sftp", "a");
    let results = store
        .seat(&key, "v1", &steps, &[other_source], at(2))
        .await
        .unwrap();
    assert_eq!(results, [SeatResult::Seated]);
    let other = PipelineKey::new("acme", "mail");
    let results = store
        .seat(&other, "v1", &steps, &[pulled("a")], at(2))
        .await
        .unwrap();
    assert_eq!(results, [SeatResult::Seated]);

    // The very same passenger twice is one passenger.
    let twice = pulled("d");
    let results = store
        .seat(&key, "v1", &steps, &[twice.clone(), twice], at(3))
        .await
        .unwrap();
    assert_eq!(results, [SeatResult::Seated, SeatResult::Duplicate]);

    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key][&PassengerState::Pending], 5);
    assert_eq!(counts[&other][&PassengerState::Pending], 1);
}

pub(crate) async fn seat_of_nothing_writes_nothing<S: TestStore>() {
    let (_place, store) = S::create().await;
    let results = store
        .seat(&invoices(), "v1", &three_steps(), &[], at(0))
        .await
        .unwrap();
    assert!(results.is_empty());
    assert!(store.counts(None).await.unwrap().is_empty());
}

// ---- lease ----

pub(crate) async fn lease_takes_due_work_oldest_first<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = three_steps();
    let old = seat_one(&store, &key, &steps, "old", at(0)).await;
    let new = seat_one(&store, &key, &steps, "new", at(1_000)).await;
    let later = seat_one(&store, &key, &steps, "later", at(5_000)).await;

    let first = lease_one(&store, &key, at(2_000)).await;
    assert_eq!(first.passenger.id, old);
    assert_eq!(first.passenger.client, "acme");
    assert_eq!(first.passenger.pipeline, "invoices");
    assert_eq!(first.passenger.external_id, "old");
    assert_eq!(first.passenger.body, pulled("old").body);
    assert_eq!(first.passenger.metadata, pulled("old").metadata);
    assert_eq!(first.passenger.created_at, at(0));
    let states: Vec<_> = first.steps.iter().map(|step| step.state).collect();
    assert_eq!(states, [StepState::InFlight; 3]);
    assert_eq!(state_of(&store, old).await, PassengerState::InFlight);
    assert_eq!(step_states(&store, old).await, [StepState::InFlight; 3]);

    // `later` was seated after this moment, so it is not due yet.
    let rest = store.lease(&key, 10, LEASE, at(2_000)).await.unwrap();
    let ids: Vec<_> = rest.iter().map(|leased| leased.passenger.id).collect();
    assert_eq!(ids, [new]);
    assert!(
        store
            .lease(&key, 10, LEASE, at(2_000))
            .await
            .unwrap()
            .is_empty()
    );

    let last = lease_one(&store, &key, at(5_000)).await;
    assert_eq!(last.passenger.id, later);
}

pub(crate) async fn lease_stays_within_its_pipeline_and_max<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let other = PipelineKey::new("globex", "invoices");
    let steps = vec![pusher("file")];
    for n in 0..5 {
        seat_one(&store, &key, &steps, &format!("k{n}"), at(n)).await;
    }
    for n in 0..3 {
        seat_one(&store, &other, &steps, &format!("o{n}"), at(n)).await;
    }

    assert!(
        store
            .lease(&key, 0, LEASE, at(10))
            .await
            .unwrap()
            .is_empty()
    );
    let two = store.lease(&key, 2, LEASE, at(10)).await.unwrap();
    assert_eq!(two.len(), 2);
    let three = store.lease(&key, 10, LEASE, at(10)).await.unwrap();
    assert_eq!(three.len(), 3);
    for leased in two.iter().chain(&three) {
        assert_eq!(leased.passenger.pipeline, "invoices");
        assert_eq!(leased.passenger.client, "acme");
    }
    let others = store.lease(&other, 10, LEASE, at(10)).await.unwrap();
    assert_eq!(others.len(), 3);
    assert!(
        others
            .iter()
            .all(|leased| leased.passenger.client == "globex")
    );
}

pub(crate) async fn expired_lease_comes_back_and_stale_reports_are_ignored<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let id = seat_one(&store, &key, &three_steps(), "x", at(0)).await;

    let first = store
        .lease(&key, 1, Duration::from_secs(10), at(0))
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .lease(&key, 1, LEASE, at(9_999))
            .await
            .unwrap()
            .is_empty()
    );
    let second = lease_one(&store, &key, at(10_000)).await;
    assert_eq!(second.passenger.id, id);
    assert_ne!(second.token, first.token);

    // The first worker comes back late: its report and its release change nothing.
    let all_done = vec![
        (0, StepChange::Done),
        (1, StepChange::Done),
        (2, StepChange::Done),
    ];
    let stale = report(&first, all_done.clone());
    assert_eq!(store.finish(&[stale], at(10_500)).await.unwrap(), 0);
    store
        .release(&[(id, first.token)], at(10_500))
        .await
        .unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::InFlight);
    assert_eq!(step_states(&store, id).await, [StepState::InFlight; 3]);

    finish_one(&store, report(&second, all_done.clone()), at(11_000)).await;
    assert_eq!(state_of(&store, id).await, PassengerState::Complete);
    // A report for a lease already finished is stale too.
    let again = report(&second, all_done);
    assert_eq!(store.finish(&[again], at(12_000)).await.unwrap(), 0);
}

pub(crate) async fn recovered_leases_are_due_at_once<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let id = seat_one(&store, &key, &three_steps(), "x", at(0)).await;
    let held = lease_one(&store, &key, at(0)).await;
    assert!(store.lease(&key, 1, LEASE, at(1)).await.unwrap().is_empty());

    // The process that held the lease died; a new one recovers it long before it expires.
    assert_eq!(store.recover_leases(at(1), at(1)).await.unwrap(), 1);
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
    let again = lease_one(&store, &key, at(2)).await;
    assert_eq!(again.passenger.id, id);
    assert_ne!(again.token, held.token);
    let stale = report(&held, vec![(0, StepChange::Done)]);
    assert_eq!(store.finish(&[stale], at(3)).await.unwrap(), 0);
    assert_eq!(store.recover_leases(at(4), at(4)).await.unwrap(), 1);
    assert_eq!(store.recover_leases(at(5), at(5)).await.unwrap(), 0);
}

/// Issue 12: the attempt a process's death interrupted counts, and each passenger of that
/// lease travels alone until its results are recorded.
pub(crate) async fn interrupted_attempts_count_and_travel_alone<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(seat_one(&store, &key, &three_steps(), &format!("x{n}"), at(n)).await);
    }
    let fourth = seat_one(&store, &key, &three_steps(), "x3", at(3)).await;
    let batch = store.lease(&key, 3, LEASE, at(10)).await.unwrap();
    assert_eq!(batch.len(), 3);

    // The process died holding the lease.
    let abandoned = store.abandoned_leases(at(10)).await.unwrap();
    assert_eq!(abandoned.len(), 3);
    let mut reports = Vec::new();
    for lease in &abandoned {
        assert_eq!(lease.pipeline, key);
        assert_eq!(lease.token, batch[0].token);
        assert_eq!(
            lease.steps.iter().map(|s| s.state).collect::<Vec<_>>(),
            [StepState::InFlight; 3]
        );
        reports.push(Finished {
            id: lease.id,
            token: lease.token,
            processed: None,
            steps: vec![(0, retry_at("the process stopped while handling it", 20))],
            split: None,
        });
    }
    assert_eq!(store.record_interrupted(&reports, at(11)).await.unwrap(), 3);
    assert_eq!(store.recover_leases(at(11), at(11)).await.unwrap(), 0);
    let detail = store.get(ids[0]).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Failed);
    assert_eq!(detail.steps[0].attempts, 1);
    assert_eq!(
        detail.attempts[0].error,
        "the process stopped while handling it"
    );

    // Once due, each of the three is leased alone: a batch stops before one (the fourth was
    // due first), and one is the whole batch. Then batches form again.
    let before = store.lease(&key, 10, LEASE, at(30)).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].passenger.id, fourth);
    store
        .release(&[(fourth, before[0].token)], at(30))
        .await
        .unwrap();
    for id in &ids {
        let leased = store.lease(&key, 10, LEASE, at(30)).await.unwrap();
        assert_eq!(leased.len(), 1, "an interrupted passenger travels alone");
        assert_eq!(leased[0].passenger.id, *id);
        finish_one(
            &store,
            report(&leased[0], vec![(0, StepChange::Done)]),
            at(31),
        )
        .await;
    }
    let rest = store.lease(&key, 10, LEASE, at(50)).await.unwrap();
    let rest: HashSet<PassengerId> = rest.iter().map(|l| l.passenger.id).collect();
    assert_eq!(rest, HashSet::from([ids[0], ids[1], ids[2], fourth]));
}

/// Issue 12: input a puller cannot take is quarantined once, listed per client, skipped
/// until a person retries or discards it, and taken afresh once it changes.
pub(crate) async fn untakeable_input_is_quarantined_until_a_person_acts<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let other = PipelineKey::new("globex", "orders");
    let bad = |item: &str, fingerprint: &str| crate::Untakeable {
        puller: "file".into(),
        item: item.into(),
        fingerprint: fingerprint.into(),
        reason: format!("{item} is malformed"),
    };
    let items = [bad("a.xml", "1"), bad("b.xml", "1")];
    assert_eq!(
        store.quarantine(&key, &items, at(0)).await.unwrap(),
        [true, true]
    );
    assert_eq!(
        store.quarantine(&key, &items, at(5)).await.unwrap(),
        [false, false]
    );
    assert_eq!(
        store
            .quarantine(&other, &[bad("c.xml", "1")], at(5))
            .await
            .unwrap(),
        [true]
    );

    let listed = store.quarantined(None, Some("acme")).await.unwrap();
    assert_eq!(listed.len(), 2, "only acme's: {listed:?}");
    let a = listed[0].clone();
    assert_eq!((a.item.as_str(), a.times), ("a.xml", 2));
    assert_eq!((a.first_seen, a.last_seen), (at(0), at(5)));
    assert_eq!(a.reason, "a.xml is malformed");
    assert_eq!(store.quarantined(None, None).await.unwrap().len(), 3);

    // Another client cannot act on it; its own client (or root) can.
    assert_eq!(
        store
            .end_quarantine(a.id, Some("globex"), true)
            .await
            .unwrap(),
        None
    );
    let retried = store
        .end_quarantine(a.id, Some("acme"), true)
        .await
        .unwrap();
    assert_eq!(retried.map(|q| q.item), Some("a.xml".to_string()));
    let b = store.quarantined(None, Some("acme")).await.unwrap()[0].clone();
    assert!(
        store
            .end_quarantine(b.id, None, false)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .quarantined(None, Some("acme"))
            .await
            .unwrap()
            .is_empty()
    );
    // The pullers still skip a discarded item, until it changes.
    let skipped = store.quarantined(Some(&key), None).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].discarded);
    assert_eq!(
        store
            .quarantine(&key, &[bad("b.xml", "1")], at(6))
            .await
            .unwrap(),
        [false]
    );
    assert_eq!(
        store
            .quarantine(&key, &[bad("b.xml", "2")], at(7))
            .await
            .unwrap(),
        [true]
    );
    let listed = store.quarantined(None, Some("acme")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].fingerprint.as_str(), listed[0].times), ("2", 1));
    assert_eq!(listed[0].first_seen, at(7));

    // A puller found it changed, or gone: its quarantine ends.
    store
        .release_quarantined(&key, "file", &["b.xml".to_string()])
        .await
        .unwrap();
    assert!(
        store
            .quarantined(Some(&key), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.quarantined(None, None).await.unwrap().len(),
        1,
        "globex's stays"
    );
}

pub(crate) async fn concurrent_leases_never_share_a_passenger<S: TestStore>() {
    let (_place, store) = S::create().await;
    let store = Arc::new(store);
    let key = invoices();
    let passengers: Vec<_> = (0..200).map(|n| pulled(&format!("p{n}"))).collect();
    store
        .seat(&key, "v1", &[pusher("file")], &passengers, at(0))
        .await
        .unwrap();

    let mut leasers = Vec::new();
    for _ in 0..8 {
        let (store, key) = (Arc::clone(&store), key.clone());
        leasers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let leased = store.lease(&key, 7, LEASE, at(1)).await.unwrap();
                if leased.is_empty() {
                    return ids;
                }
                ids.extend(leased.into_iter().map(|leased| leased.passenger.id));
            }
        }));
    }
    let mut all = Vec::new();
    for leaser in leasers {
        all.extend(leaser.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200);
}

// ---- finish ----

pub(crate) async fn finish_done_completes_the_passenger<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let changes = vec![
        (0, StepChange::Done),
        (1, StepChange::Done),
        (2, StepChange::Done),
    ];
    finish_one(&store, report(&leased, changes), at(5_000)).await;

    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Complete);
    assert_eq!(detail.entry.updated_at, at(5_000));
    for step in &detail.steps {
        assert_eq!(step.state, StepState::Done);
        assert_eq!(step.done_at, Some(at(5_000)));
        assert_eq!(step.attempts, 0);
    }
    assert!(detail.processed.is_none());
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Complete), Some(&1));
    assert_eq!(
        counts[&key].len(),
        1,
        "no other state is counted: {counts:?}"
    );
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    assert_eq!(store.next_due(&key).await.unwrap(), None);
}

pub(crate) async fn a_pushers_result_is_kept_with_its_step<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let answer = "HTTP 201 Created\n{\"order\": \"<7>\"}";
    let changes = vec![
        (0, StepChange::Done),
        (
            1,
            StepChange::DoneWith {
                result: answer.into(),
            },
        ),
        (2, retry_at("timeout", 10)),
    ];
    finish_one(&store, report(&leased, changes), at(1)).await;
    let results = |steps: &[StepStatus]| -> Vec<Option<String>> {
        steps.iter().map(|step| step.result.clone()).collect()
    };
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.steps[1].state, StepState::Done);
    assert_eq!(results(&detail.steps), [None, Some(answer.into()), None]);

    // Leased again for the failed step, and finished: the kept result stays.
    let again = lease_one(&store, &key, at(10)).await;
    assert_eq!(results(&again.steps), [None, Some(answer.into()), None]);
    finish_one(&store, report(&again, vec![(2, StepChange::Done)]), at(11)).await;
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Complete);
    assert_eq!(results(&detail.steps), [None, Some(answer.into()), None]);

    // A replay starts a fresh journey, without the old answers.
    store.replay(id, &three_steps(), at(20)).await.unwrap();
    let detail = store.get(id).await.unwrap();
    assert_eq!(results(&detail.steps), [None, None, None]);
}

pub(crate) async fn processed_payload_is_kept_and_leased_again<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let original = leased.passenger.clone();

    let mut metadata = Metadata::new();
    metadata.insert("stage".into(), "mapped".into());
    let body = Body::json(&json!({ "mapped": true }));
    let finished = Finished {
        processed: Some((metadata.clone(), body.clone())),
        ..report(
            &leased,
            vec![
                (0, StepChange::Done),
                (1, StepChange::Done),
                (2, retry_at("503 service unavailable", 30_000)),
            ],
        )
    };
    finish_one(&store, finished, at(1_000)).await;

    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Failed);
    assert_eq!(
        detail.entry.last_error.as_deref(),
        Some("503 service unavailable")
    );
    assert_eq!(detail.original.body, original.body);
    assert_eq!(detail.original.metadata, original.metadata);
    assert_eq!(detail.processed, Some((metadata.clone(), body.clone())));
    let http = &detail.steps[2];
    assert_eq!(http.state, StepState::Failed);
    assert_eq!(http.attempts, 1);
    assert_eq!(http.next_try_at, Some(at(30_000)));
    assert_eq!(http.last_error.as_deref(), Some("503 service unavailable"));
    assert_eq!(
        detail.attempts,
        [Attempt {
            step: 2,
            attempt: 1,
            at: at(1_000),
            error: "503 service unavailable".into(),
        }]
    );

    assert!(
        store
            .lease(&key, 1, LEASE, at(29_999))
            .await
            .unwrap()
            .is_empty()
    );
    let again = lease_one(&store, &key, at(30_000)).await;
    assert_eq!(again.passenger.id, id);
    assert_eq!(again.passenger.body, body);
    assert_eq!(again.passenger.metadata, metadata);
    let states: Vec<_> = again.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::Done, StepState::InFlight]
    );
    assert_eq!(again.steps[2].attempts, 1);
}

pub(crate) async fn failed_step_waits_for_its_next_try_then_dies<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &[pusher("http")], "x", at(0)).await;
    let id = leased.passenger.id;

    finish_one(
        &store,
        report(&leased, vec![(0, retry_at("timeout", 10_000))]),
        at(1),
    )
    .await;
    assert_eq!(state_of(&store, id).await, PassengerState::Failed);
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(10_000)));
    assert_eq!(store.open_count(&key).await.unwrap(), 1);

    let leased = lease_one(&store, &key, at(10_000)).await;
    finish_one(
        &store,
        report(&leased, vec![(0, retry_at("timeout", 30_000))]),
        at(10_001),
    )
    .await;
    let leased = lease_one(&store, &key, at(30_000)).await;
    finish_one(
        &store,
        report(&leased, vec![(0, dead("410 gone"))]),
        at(30_001),
    )
    .await;

    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Dead);
    assert_eq!(detail.entry.last_error.as_deref(), Some("410 gone"));
    assert_eq!(detail.steps[0].state, StepState::Dead);
    assert_eq!(detail.steps[0].attempts, 3);
    let history: Vec<_> = detail
        .attempts
        .iter()
        .map(|a| (a.step, a.attempt, a.at, a.error.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (0, 1, at(1), "timeout"),
            (0, 2, at(10_001), "timeout"),
            (0, 3, at(30_001), "410 gone"),
        ]
    );
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    assert_eq!(store.next_due(&key).await.unwrap(), None);
    let far = at(100_000_000);
    assert!(store.lease(&key, 10, LEASE, far).await.unwrap().is_empty());
    let counts = store.counts(Some("acme")).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Dead), Some(&1));
}

pub(crate) async fn dead_processor_makes_the_passenger_dead<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    finish_one(
        &store,
        report(&leased, vec![(0, dead("not an invoice"))]),
        at(1),
    )
    .await;

    // The pushers never ran and cannot: they wait for a replay or a retry.
    assert_eq!(state_of(&store, id).await, PassengerState::Dead);
    assert_eq!(
        step_states(&store, id).await,
        [StepState::Dead, StepState::Pending, StepState::Pending]
    );
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    let far = at(100_000_000);
    assert!(store.lease(&key, 10, LEASE, far).await.unwrap().is_empty());
}

pub(crate) async fn dead_pusher_waits_for_the_other_pushers<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let changes = vec![
        (0, StepChange::Done),
        (1, dead("permission denied")),
        (2, retry_at("timeout", 5_000)),
    ];
    finish_one(&store, report(&leased, changes), at(1)).await;
    assert_eq!(state_of(&store, id).await, PassengerState::Failed);

    let leased = lease_one(&store, &key, at(5_000)).await;
    let states: Vec<_> = leased.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::Dead, StepState::InFlight]
    );
    finish_one(
        &store,
        report(&leased, vec![(2, StepChange::Done)]),
        at(5_001),
    )
    .await;
    assert_eq!(state_of(&store, id).await, PassengerState::Dead);
}

pub(crate) async fn filtered_processor_skips_the_rest<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let filtered = StepChange::Filtered {
        reason: "not for this client".into(),
    };
    finish_one(&store, report(&leased, vec![(0, filtered)]), at(1)).await;

    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Filtered);
    let states: Vec<_> = detail.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Filtered, StepState::Skipped, StepState::Skipped]
    );
    // The reason is shown where errors are.
    assert_eq!(
        detail.steps[0].last_error.as_deref(),
        Some("not for this client")
    );
    assert!(detail.attempts.is_empty());
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    // Filtered passengers are finished: the cleaner takes them.
    assert_eq!(store.purge_passengers("acme", at(2)).await.unwrap(), 1);
}

pub(crate) async fn split_seats_children_with_the_parents_finish<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let parent = leased.passenger.clone();
    let children: Vec<Passenger> = (1..=2)
        .map(|n| parent.child(format!("x#{n}"), Body::json(&json!({ "part": n }))))
        .collect();
    let mut split = report(
        &leased,
        vec![
            (0, StepChange::Done),
            (1, StepChange::Skipped),
            (2, StepChange::Skipped),
        ],
    );
    split.split = Some(crate::Split {
        after: 0,
        children: children.clone(),
    });
    // A stale copy of the same report (its lease gone) seats nothing a second time.
    finish_one(&store, split.clone(), at(1)).await;
    assert_eq!(store.finish(&[split], at(2)).await.unwrap(), 0);

    assert_eq!(state_of(&store, parent.id).await, PassengerState::Complete);
    let counts = store.counts(Some("acme")).await.unwrap();
    assert_eq!(counts[&key][&PassengerState::Pending], 2);
    assert_eq!(counts[&key][&PassengerState::Complete], 1);
    // The children carry on after the split, in their own leases, with their own content.
    let leased = store.lease(&key, 10, LEASE, at(3)).await.unwrap();
    assert_eq!(leased.len(), 2);
    for (child, expected) in leased.iter().zip(&children) {
        assert_eq!(child.passenger.id, expected.id);
        assert_eq!(child.passenger.parent, Some(parent.id));
        assert_eq!(child.passenger.body, expected.body);
        let states: Vec<_> = child.steps.iter().map(|step| step.state).collect();
        assert_eq!(
            states,
            [StepState::Done, StepState::InFlight, StepState::InFlight]
        );
    }
    let detail = store.get(children[0].id).await.unwrap();
    assert_eq!(detail.original.parent, Some(parent.id));
    assert_eq!(detail.entry.external_id, "x#1");
}

pub(crate) async fn finish_ignores_unknown_passengers_and_steps<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;

    let unknown = Finished {
        id: PassengerId::new(),
        ..report(&leased, vec![(0, StepChange::Done)])
    };
    assert_eq!(store.finish(&[unknown], at(1)).await.unwrap(), 0);
    assert_eq!(store.finish(&[], at(1)).await.unwrap(), 0);

    // Step 9 does not exist; the rest of the report still counts.
    let changes = vec![(9, StepChange::Done), (0, StepChange::Done)];
    finish_one(&store, report(&leased, changes), at(2)).await;
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
    assert_eq!(
        step_states(&store, id).await,
        [StepState::Done, StepState::Pending, StepState::Pending]
    );
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(2)));
}

// ---- release, retry, discard, replay ----

pub(crate) async fn release_gives_the_passenger_back_due_now<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &[pusher("http")], "x", at(0)).await;
    let id = leased.passenger.id;

    // A wrong token releases nothing.
    store
        .release(&[(id, leased.token ^ 1)], at(500))
        .await
        .unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::InFlight);
    store.release(&[], at(500)).await.unwrap();

    store
        .release(&[(id, leased.token)], at(1_000))
        .await
        .unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
    assert_eq!(step_states(&store, id).await, [StepState::Pending]);
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(1_000)));

    // A failed passenger released mid-retry stays failed, and is due at once.
    let leased = lease_one(&store, &key, at(1_000)).await;
    finish_one(
        &store,
        report(&leased, vec![(0, retry_at("timeout", 100_000))]),
        at(1_001),
    )
    .await;
    let leased = lease_one(&store, &key, at(100_000)).await;
    store
        .release(&[(id, leased.token)], at(100_500))
        .await
        .unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::Failed);
    let again = lease_one(&store, &key, at(100_500)).await;
    assert_eq!(again.passenger.id, id);
    assert_eq!(again.steps[0].attempts, 1);
}

pub(crate) async fn retry_revives_failed_and_dead_steps<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let changes = vec![
        (0, StepChange::Done),
        (1, dead("disk full")),
        (2, retry_at("timeout", 50_000)),
    ];
    finish_one(&store, report(&leased, changes), at(1)).await;

    store.retry(id, at(2_000)).await.unwrap();
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Pending);
    assert_eq!(detail.entry.updated_at, at(2_000));
    let states: Vec<_> = detail.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::Pending, StepState::Pending]
    );
    assert!(detail.steps.iter().all(|step| step.attempts == 0));
    assert!(detail.steps.iter().all(|step| step.next_try_at.is_none()));
    // The history of what happened stays.
    assert_eq!(detail.attempts.len(), 2);

    let leased = lease_one(&store, &key, at(2_000)).await;
    let states: Vec<_> = leased.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::InFlight, StepState::InFlight]
    );
    let changes = vec![(1, StepChange::Done), (2, StepChange::Done)];
    finish_one(&store, report(&leased, changes), at(2_001)).await;
    assert_eq!(state_of(&store, id).await, PassengerState::Complete);

    // Nothing to retry on a complete passenger.
    store.retry(id, at(3_000)).await.unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::Complete);
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Complete), Some(&1));
    assert_eq!(counts[&key].len(), 1, "{counts:?}");
}

pub(crate) async fn retry_of_a_leased_passenger_keeps_the_lease<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let changes = vec![
        (0, StepChange::Done),
        (1, dead("disk full")),
        (2, retry_at("timeout", 5_000)),
    ];
    finish_one(&store, report(&leased, changes), at(1)).await;
    let leased = lease_one(&store, &key, at(5_000)).await;

    store.retry(id, at(6_000)).await.unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::InFlight);
    assert_eq!(
        step_states(&store, id).await,
        [StepState::Done, StepState::InFlight, StepState::InFlight]
    );
    assert!(
        store
            .lease(&key, 1, LEASE, at(6_000))
            .await
            .unwrap()
            .is_empty()
    );

    // The worker did not run the revived step; it comes back for another lease.
    finish_one(
        &store,
        report(&leased, vec![(2, StepChange::Done)]),
        at(6_001),
    )
    .await;
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
    let again = lease_one(&store, &key, at(6_001)).await;
    let states: Vec<_> = again.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::InFlight, StepState::Done]
    );
}

pub(crate) async fn discard_skips_what_is_left<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let changes = vec![
        (0, StepChange::Done),
        (1, dead("disk full")),
        (2, retry_at("timeout", 50_000)),
    ];
    finish_one(&store, report(&leased, changes), at(1)).await;

    store.discard(id, at(3_000)).await.unwrap();
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Discarded);
    let states: Vec<_> = detail.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Done, StepState::Skipped, StepState::Skipped]
    );
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    let far = at(100_000_000);
    assert!(store.lease(&key, 10, LEASE, far).await.unwrap().is_empty());
    // Discarding twice is harmless and does not restart the retention clock.
    store.discard(id, at(9_000)).await.unwrap();
    assert_eq!(store.purge_passengers("acme", at(3_001)).await.unwrap(), 1);

    // A leased passenger can be discarded; its worker's report is then stale.
    let leased = seat_and_lease(&store, &key, &three_steps(), "y", at(10_000)).await;
    let id = leased.passenger.id;
    store.discard(id, at(10_001)).await.unwrap();
    let late = report(&leased, vec![(0, StepChange::Done)]);
    assert_eq!(store.finish(&[late], at(10_002)).await.unwrap(), 0);
    assert_eq!(state_of(&store, id).await, PassengerState::Discarded);
    assert_eq!(step_states(&store, id).await, [StepState::Skipped; 3]);
}

pub(crate) async fn replay_starts_a_complete_passenger_again<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let original_body = leased.passenger.body.clone();
    let finished = Finished {
        processed: Some((Metadata::new(), Body::json(&json!({ "mapped": 1 })))),
        ..report(
            &leased,
            vec![
                (0, StepChange::Done),
                (1, retry_at("timeout", 10)),
                (2, StepChange::Done),
            ],
        )
    };
    finish_one(&store, finished, at(1)).await;
    let leased = lease_one(&store, &key, at(10)).await;
    finish_one(&store, report(&leased, vec![(1, StepChange::Done)]), at(11)).await;
    assert_eq!(state_of(&store, id).await, PassengerState::Complete);

    let new_steps = vec![processor("map"), pusher("file"), pusher("s3")];
    store.replay(id, &new_steps, at(5_000)).await.unwrap();
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Pending);
    assert_eq!(detail.entry.last_error, None);
    assert!(detail.processed.is_none());
    let names: Vec<_> = detail.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(names, ["map", "file", "s3"]);
    assert!(
        detail
            .steps
            .iter()
            .all(|step| step.state == StepState::Pending
                && step.attempts == 0
                && step.done_at.is_none())
    );
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Pending), Some(&1));
    assert_eq!(counts[&key].get(&PassengerState::Complete), None);

    // Processors run again on the original as pulled.
    let again = lease_one(&store, &key, at(5_000)).await;
    assert_eq!(again.passenger.id, id);
    assert_eq!(again.passenger.body, original_body);
    assert_eq!(again.steps.len(), 3);

    // Replaying a leased passenger takes it from its worker.
    store.replay(id, &new_steps, at(6_000)).await.unwrap();
    let late = report(&again, vec![(0, StepChange::Done)]);
    assert_eq!(store.finish(&[late], at(6_001)).await.unwrap(), 0);
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
}

pub(crate) async fn actions_on_unknown_passengers_are_not_found<S: TestStore>() {
    let (_place, store) = S::create().await;
    let id = PassengerId::new();
    assert_not_found(store.get(id).await, id);
    assert_not_found(store.retry(id, at(0)).await, id);
    assert_not_found(store.discard(id, at(0)).await, id);
    assert_not_found(store.replay(id, &three_steps(), at(0)).await, id);
    assert_not_found(store.skip_step(id, 0, at(0)).await, id);
    assert_eq!(store.owner(id).await.unwrap(), None);
}

// ---- purge ----

pub(crate) async fn purge_never_deletes_open_or_dead_passengers<S: TestStore>() {
    let (_place, store) = S::create().await;
    let steps = three_steps();
    let all_done = || {
        vec![
            (0, StepChange::Done),
            (1, StepChange::Done),
            (2, StepChange::Done),
        ]
    };
    // Each passenger alone in a pipeline, so leasing picks exactly it.
    let key = |name: &str| PipelineKey::new("acme", name);

    let leased = seat_and_lease(&store, &key("complete"), &steps, "c", at(0)).await;
    finish_one(&store, report(&leased, all_done()), at(1_000)).await;
    let complete_old = leased.passenger.id;

    let leased = seat_and_lease(&store, &key("filtered"), &steps, "f", at(0)).await;
    let filtered = StepChange::Filtered {
        reason: "spam".into(),
    };
    finish_one(&store, report(&leased, vec![(0, filtered)]), at(1_000)).await;
    let filtered_old = leased.passenger.id;

    let discarded_old = seat_one(&store, &key("discarded"), &steps, "d", at(0)).await;
    store.discard(discarded_old, at(1_000)).await.unwrap();

    let leased = seat_and_lease(&store, &key("dead"), &steps, "x", at(0)).await;
    finish_one(&store, report(&leased, vec![(0, dead("bad"))]), at(1_000)).await;
    let dead_one = leased.passenger.id;

    let leased = seat_and_lease(&store, &key("failed"), &steps, "r", at(0)).await;
    let retry = retry_at("timeout", 1_000_000_000);
    finish_one(&store, report(&leased, vec![(0, retry)]), at(1_000)).await;
    let failed_one = leased.passenger.id;

    let pending_one = seat_one(&store, &key("pending"), &steps, "p", at(0)).await;
    let in_flight_one = seat_and_lease(&store, &key("leased"), &steps, "l", at(0))
        .await
        .passenger
        .id;

    let leased = seat_and_lease(&store, &key("recent"), &steps, "n", at(0)).await;
    finish_one(&store, report(&leased, all_done()), at(5_000)).await;
    let complete_recent = leased.passenger.id;

    let other_client = PipelineKey::new("globex", "complete");
    let leased = seat_and_lease(&store, &other_client, &steps, "c", at(0)).await;
    finish_one(&store, report(&leased, all_done()), at(1_000)).await;
    let other_complete = leased.passenger.id;

    assert_eq!(store.purge_passengers("acme", at(2_000)).await.unwrap(), 3);
    for id in [complete_old, filtered_old, discarded_old] {
        assert_not_found(store.get(id).await, id);
    }
    let kept = [
        (dead_one, PassengerState::Dead),
        (failed_one, PassengerState::Failed),
        (pending_one, PassengerState::Pending),
        (in_flight_one, PassengerState::InFlight),
        (complete_recent, PassengerState::Complete),
        (other_complete, PassengerState::Complete),
    ];
    for (id, state) in kept {
        assert_eq!(state_of(&store, id).await, state);
    }
    assert_eq!(store.purge_passengers("acme", at(2_000)).await.unwrap(), 0);

    // However old, open and dead passengers stay.
    let far = at(1_000_000_000_000);
    assert_eq!(store.purge_passengers("acme", far).await.unwrap(), 1);
    assert_not_found(store.get(complete_recent).await, complete_recent);
    for (id, state) in &kept[..4] {
        assert_eq!(state_of(&store, *id).await, *state);
    }
    let counts = store.counts(Some("acme")).await.unwrap();
    let states: Vec<_> = counts
        .values()
        .flat_map(|states| states.iter().map(|(state, n)| (*state, *n)))
        .collect();
    assert_eq!(states.len(), 4, "{counts:?}");
    assert!(
        states
            .iter()
            .all(|(state, n)| !state.is_purgeable() && *n == 1)
    );
    assert_eq!(store.counts(Some("globex")).await.unwrap().len(), 1);
    // A purged passenger's key is free again.
    let again = seat_one(&store, &key("complete"), &steps, "c", at(3_000)).await;
    assert_ne!(again, complete_old);
}

pub(crate) async fn purge_works_in_chunks<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let total = 5_200;
    let passengers: Vec<_> = (0..total).map(|n| pulled(&format!("p{n}"))).collect();
    for chunk in passengers.chunks(1_000) {
        store
            .seat(&key, "v1", &[pusher("file")], chunk, at(0))
            .await
            .unwrap();
    }
    loop {
        let leased = store.lease(&key, 1_000, LEASE, at(1)).await.unwrap();
        if leased.is_empty() {
            break;
        }
        let reports: Vec<_> = leased
            .iter()
            .map(|leased| report(leased, vec![(0, StepChange::Done)]))
            .collect();
        store.finish(&reports, at(2)).await.unwrap();
    }
    let purged = store.purge_passengers("acme", at(3)).await.unwrap();
    assert_eq!(purged, total as u64);
    assert!(store.counts(None).await.unwrap().is_empty());
    let page = store.list(&QueueFilter::default(), None, 10).await.unwrap();
    assert!(page.is_empty());
}

// ---- counts and browsing ----

pub(crate) async fn open_count_and_next_due_follow_the_open_work<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = vec![pusher("file")];
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    assert_eq!(store.next_due(&key).await.unwrap(), None);

    seat_one(&store, &key, &steps, "a", at(0)).await;
    seat_one(&store, &key, &steps, "b", at(100)).await;
    assert_eq!(store.open_count(&key).await.unwrap(), 2);
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(0)));

    let a = lease_one(&store, &key, at(200)).await;
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(100)));
    finish_one(
        &store,
        report(&a, vec![(0, retry_at("timeout", 30_000))]),
        at(300),
    )
    .await;
    let b = store
        .lease(&key, 1, Duration::from_secs(60), at(400))
        .await
        .unwrap()
        .remove(0);
    // Failed `a` is due at 30 s; `b`'s lease runs until 60.4 s.
    assert_eq!(store.open_count(&key).await.unwrap(), 2);
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(30_000)));
    finish_one(&store, report(&b, vec![(0, StepChange::Done)]), at(500)).await;
    assert_eq!(store.open_count(&key).await.unwrap(), 1);
    assert_eq!(store.next_due(&key).await.unwrap(), Some(at(30_000)));
    let other = PipelineKey::new("acme", "other");
    assert_eq!(store.open_count(&other).await.unwrap(), 0);
}

pub(crate) async fn counts_per_pipeline_of_one_client_or_all<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let feed = PipelineKey::new("globex", "feed");
    let steps = vec![pusher("file")];
    seat_one(&store, &invoices, &steps, "a", at(0)).await;
    seat_one(&store, &invoices, &steps, "b", at(0)).await;
    let leased = seat_and_lease(&store, &mail, &steps, "m", at(0)).await;
    finish_one(&store, report(&leased, vec![(0, StepChange::Done)]), at(1)).await;
    seat_one(&store, &feed, &steps, "f", at(0)).await;
    lease_one(&store, &feed, at(1)).await;

    let all = store.counts(None).await.unwrap();
    let keys: Vec<_> = all.keys().cloned().collect();
    assert_eq!(keys, [invoices.clone(), mail.clone(), feed.clone()]);
    assert_eq!(all[&invoices].len(), 1);
    assert_eq!(all[&invoices][&PassengerState::Pending], 2);
    assert_eq!(all[&mail].len(), 1);
    assert_eq!(all[&mail][&PassengerState::Complete], 1);
    assert_eq!(all[&feed].len(), 1);
    assert_eq!(all[&feed][&PassengerState::InFlight], 1);

    let acme = store.counts(Some("acme")).await.unwrap();
    let keys: Vec<_> = acme.keys().cloned().collect();
    assert_eq!(keys, [invoices, mail]);
    assert!(store.counts(Some("nobody")).await.unwrap().is_empty());
}

pub(crate) async fn list_pages_newest_first<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = vec![pusher("file")];
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(seat_one(&store, &key, &steps, &format!("p{n}"), at(n)).await);
    }
    ids.reverse();

    let everything = QueueFilter::default();
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store.list(&everything, before, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|entry| entry.id);
        pages.push(page.iter().map(|entry| entry.id).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        [ids[0..3].to_vec(), ids[3..6].to_vec(), ids[6..].to_vec()]
    );
    assert!(store.list(&everything, None, 0).await.unwrap().is_empty());
}

pub(crate) async fn text_search_finds_indexed_and_unindexed_passengers<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let steps = vec![pusher("file")];
    let text = |needle: &str| QueueFilter {
        text: Some(needle.into()),
        ..QueueFilter::default()
    };
    let found = |filter: QueueFilter| {
        let store = &store;
        async move {
            let page = store.list(&filter, None, 100).await.unwrap();
            page.into_iter().map(|entry| entry.id).collect::<Vec<_>>()
        }
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        let external = format!("INV-{n}-\"x\"");
        ids.push(seat_one(&store, &invoices, &steps, &external, at(n)).await);
    }
    // Nothing indexed, part indexed, all indexed: the same answers, exact (the index ignores
    // case, the filter does not; quotes mean nothing to it).
    for indexed in [None, Some(2), Some(2), Some(1)] {
        if let Some(n) = indexed {
            assert_eq!(store.index_search(2).await.unwrap(), n);
        }
        assert_eq!(found(text("INV-3")).await, [ids[3]], "after {indexed:?}");
        assert_eq!(found(text("INV-")).await.len(), 5);
        assert_eq!(found(text("-\"x")).await.len(), 5);
        assert!(found(text("inv-3")).await.is_empty());
        assert_eq!(found(text("3-")).await, [ids[3]]);
        assert_eq!(found(text("file")).await.len(), 0);
        assert_eq!(found(text("imap")).await.len(), 5);
    }
    assert_eq!(store.index_search(2).await.unwrap(), 0);
    // A passenger seated after the last indexing is found too.
    let late = seat_one(&store, &invoices, &steps, "INV-late", at(10)).await;
    assert_eq!(found(text("late")).await, [late]);
    assert_eq!(store.index_search(100).await.unwrap(), 1);
    assert_eq!(found(text("late")).await, [late]);

    // Purged passengers leave the index; when the newest go, their numbers come again and the
    // passengers that get them are found.
    for _ in 0..6 {
        let leased = lease_one(&store, &invoices, at(20)).await;
        finish_one(&store, report(&leased, vec![(0, StepChange::Done)]), at(20)).await;
    }
    assert_eq!(store.purge_passengers("acme", at(1_000)).await.unwrap(), 6);
    assert!(found(text("INV")).await.is_empty());
    let again = seat_one(&store, &invoices, &steps, "INV-again", at(2_000)).await;
    assert_eq!(found(text("again")).await, [again]);
    assert_eq!(store.index_search(100).await.unwrap(), 1);
    assert_eq!(found(text("again")).await, [again]);
    assert_eq!(found(text("INV")).await, [again]);
}

pub(crate) async fn list_applies_every_filter<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let feed = PipelineKey::new("globex", "feed");
    let steps = vec![pusher("file")];
    let inv1 = seat_one(&store, &invoices, &steps, "INV-1", at(0)).await;
    let inv2 = seat_one(&store, &invoices, &steps, "INV-2", at(1_000)).await;
    let message = Passenger::pulled("smtp-in", "MSG-1");
    store
        .seat(
            &mail,
            "v1",
            &steps,
            std::slice::from_ref(&message),
            at(2_000),
        )
        .await
        .unwrap();
    let msg1 = message.id;
    let inv3 = seat_one(&store, &feed, &steps, "INV-3", at(3_000)).await;
    let leased = lease_one(&store, &invoices, at(4_000)).await;
    assert_eq!(leased.passenger.id, inv1);
    finish_one(
        &store,
        report(&leased, vec![(0, dead("schema mismatch"))]),
        at(4_001),
    )
    .await;

    let list = |filter: QueueFilter| {
        let store = &store;
        async move {
            let page = store.list(&filter, None, 100).await.unwrap();
            page.into_iter().map(|entry| entry.id).collect::<Vec<_>>()
        }
    };
    let filter = QueueFilter::default;
    assert_eq!(list(filter()).await, [inv3, msg1, inv2, inv1]);
    let acme = || QueueFilter {
        client: Some("acme".into()),
        ..filter()
    };
    assert_eq!(list(acme()).await, [msg1, inv2, inv1]);
    let mail_only = QueueFilter {
        pipeline: Some("mail".into()),
        ..acme()
    };
    assert_eq!(list(mail_only).await, [msg1]);
    let pipeline_only = QueueFilter {
        pipeline: Some("feed".into()),
        ..filter()
    };
    assert_eq!(list(pipeline_only).await, [inv3]);
    let dead_ones = QueueFilter {
        state: Some(PassengerState::Dead),
        ..filter()
    };
    assert_eq!(list(dead_ones).await, [inv1]);
    let pending_acme = QueueFilter {
        state: Some(PassengerState::Pending),
        ..acme()
    };
    assert_eq!(list(pending_acme).await, [msg1, inv2]);
    let text = |needle: &str| QueueFilter {
        text: Some(needle.into()),
        ..filter()
    };
    assert_eq!(list(text("INV")).await, [inv3, inv2, inv1]);
    assert_eq!(list(text("smtp")).await, [msg1]);
    assert_eq!(list(text("%")).await, Vec::<PassengerId>::new());
    let acme_invoices = QueueFilter {
        text: Some("INV".into()),
        ..acme()
    };
    assert_eq!(list(acme_invoices).await, [inv2, inv1]);
    // `since` is inclusive, `until` exclusive.
    let since = QueueFilter {
        since: Some(at(1_000)),
        ..filter()
    };
    assert_eq!(list(since).await, [inv3, msg1, inv2]);
    let until = QueueFilter {
        until: Some(at(2_000)),
        ..filter()
    };
    assert_eq!(list(until).await, [inv2, inv1]);
    // Within a client, a time range pages by creation time, one page after the other.
    let acme_window = QueueFilter {
        since: Some(at(0)),
        until: Some(at(3_000)),
        ..acme()
    };
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store.list(&acme_window, before, 1).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page.iter().map(|entry| entry.id));
    }
    assert_eq!(paged, [msg1, inv2, inv1]);

    let entry = store
        .list(&dead_ones_filter(), None, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(entry.client, "acme");
    assert_eq!(entry.pipeline, "invoices");
    assert_eq!(entry.source_system, "imap");
    assert_eq!(entry.external_id, "INV-1");
    assert_eq!(entry.state, PassengerState::Dead);
    assert_eq!(entry.created_at, at(0));
    assert_eq!(entry.updated_at, at(4_001));
    assert_eq!(entry.last_error.as_deref(), Some("schema mismatch"));
}

fn dead_ones_filter() -> QueueFilter {
    QueueFilter {
        state: Some(PassengerState::Dead),
        ..QueueFilter::default()
    }
}

// ---- runs ----

fn line(ms: i64, level: LogLevel, message: &str) -> LogLine {
    LogLine {
        at: at(ms),
        level,
        message: message.into(),
    }
}

pub(crate) async fn runs_and_their_logs<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let other = PipelineKey::new("acme", "mail");
    let first = store.start_run(&key, "v1", at(0)).await.unwrap();
    let second = store.start_run(&other, "v2", at(10)).await.unwrap();
    assert_ne!(first, second);

    let lines = vec![
        line(1, LogLevel::Info, "pulling"),
        line(2, LogLevel::Warn, "slow server"),
        line(3, LogLevel::Error, "one file unreadable"),
    ];
    store.log_run(first, &lines).await.unwrap();
    store
        .log_run(first, &[line(4, LogLevel::Info, "done")])
        .await
        .unwrap();
    store.log_run(first, &[]).await.unwrap();
    let logged = store.run_logs(first).await.unwrap();
    assert_eq!(logged.len(), 4);
    assert_eq!(logged[..3], lines[..]);
    assert_eq!(logged[3].message, "done");
    assert!(store.run_logs(second).await.unwrap().is_empty());

    let counts = RunCounts {
        pulled: 3,
        seated: 2,
        duplicates: 1,
        failed: 0,
    };
    store
        .finish_run(first, RunStatus::Succeeded, counts, None, at(100))
        .await
        .unwrap();
    store
        .finish_run(
            second,
            RunStatus::Failed,
            RunCounts::default(),
            Some("boom"),
            at(200),
        )
        .await
        .unwrap();

    let runs = store.runs(None, 10).await.unwrap();
    let ids: Vec<_> = runs.iter().map(|run| run.id).collect();
    assert_eq!(ids, [second, first]);
    let run = &runs[1];
    assert_eq!(run.client, "acme");
    assert_eq!(run.pipeline, "invoices");
    assert_eq!(run.version, "v1");
    assert_eq!(run.started_at, at(0));
    assert_eq!(run.finished_at, Some(at(100)));
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts, counts);
    assert_eq!(run.error, None);
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs[0].error.as_deref(), Some("boom"));

    let of_key = store.runs(Some(&key), 10).await.unwrap();
    assert_eq!(of_key.len(), 1);
    assert_eq!(of_key[0].id, first);
    let newest = store.runs(None, 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].id, second);

    let third = store.start_run(&key, "v1", at(300)).await.unwrap();
    let running = &store.runs(Some(&key), 1).await.unwrap()[0];
    assert_eq!(running.id, third);
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.finished_at, None);

    let unknown = third + 1_000;
    assert!(store.log_run(unknown, &lines).await.is_err());
    let failed = RunStatus::Failed;
    let result = store
        .finish_run(unknown, failed, RunCounts::default(), None, at(1))
        .await;
    assert!(result.is_err());
    assert!(store.run_logs(unknown).await.unwrap().is_empty());
}

pub(crate) async fn purge_runs_keeps_running_and_recent_runs<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let globex = PipelineKey::new("globex", "feed");
    let done = RunStatus::Succeeded;
    let counts = RunCounts::default();

    let old = store.start_run(&key, "v1", at(0)).await.unwrap();
    store
        .log_run(old, &[line(1, LogLevel::Info, "x")])
        .await
        .unwrap();
    store
        .finish_run(old, done, counts, None, at(1_000))
        .await
        .unwrap();
    let recent = store.start_run(&key, "v1", at(0)).await.unwrap();
    store
        .finish_run(recent, done, counts, None, at(5_000))
        .await
        .unwrap();
    let running = store.start_run(&key, "v1", at(0)).await.unwrap();
    let other_old = store.start_run(&globex, "v1", at(0)).await.unwrap();
    store
        .finish_run(other_old, done, counts, None, at(1_000))
        .await
        .unwrap();

    assert_eq!(store.purge_runs("acme", at(2_000)).await.unwrap(), 1);
    let ids: Vec<_> = store
        .runs(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(ids, [other_old, running, recent]);
    assert!(store.run_logs(old).await.unwrap().is_empty());
    assert_eq!(store.purge_runs("acme", at(2_000)).await.unwrap(), 0);
    assert_eq!(store.purge_runs("acme", at(1_000_000)).await.unwrap(), 1);
    let ids: Vec<_> = store
        .runs(Some(&key), 10)
        .await
        .unwrap()
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(ids, [running]);
}

pub(crate) async fn abandon_marks_running_runs_failed<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let running = store.start_run(&key, "v1", at(0)).await.unwrap();
    let finished = store.start_run(&key, "v1", at(0)).await.unwrap();
    let counts = RunCounts::default();
    store
        .finish_run(finished, RunStatus::Partial, counts, None, at(10))
        .await
        .unwrap();

    assert_eq!(
        store.abandon_running_runs(at(500), at(500)).await.unwrap(),
        1
    );
    let runs = store.runs(None, 10).await.unwrap();
    let abandoned = runs.iter().find(|run| run.id == running).unwrap();
    assert_eq!(abandoned.status, RunStatus::Failed);
    assert_eq!(abandoned.finished_at, Some(at(500)));
    assert!(abandoned.error.is_some());
    let untouched = runs.iter().find(|run| run.id == finished).unwrap();
    assert_eq!(untouched.status, RunStatus::Partial);
    assert_eq!(untouched.finished_at, Some(at(10)));
    assert_eq!(untouched.error, None);
    assert_eq!(
        store.abandon_running_runs(at(600), at(600)).await.unwrap(),
        0
    );
}

// ---- nodes ----

/// Two processes on one store: only the leases and runs of the one whose heartbeat stopped
/// come back; a scheduled slot is started once; one node pulls a pipeline at a time.
pub(crate) async fn only_a_dead_nodes_leases_and_runs_come_back<S: TestStore>() {
    let (place, alive) = S::create().await;
    // The same store opened a second time: the other process.
    let dying = S::reopen(&place).await;
    let first = alive.join("host-a 100", at(0)).await.unwrap();
    let second = dying.join("host-b 200", at(0)).await.unwrap();
    assert_ne!(first, second);
    let key = invoices();
    for n in 0..2 {
        seat_one(&alive, &key, &three_steps(), &format!("x{n}"), at(n)).await;
    }
    let kept = lease_one(&alive, &key, at(10)).await;
    let lost = lease_one(&dying, &key, at(10)).await;
    let kept_run = alive.start_run(&key, "v1", at(10)).await.unwrap();
    let lost_run = dying.start_run(&key, "v1", at(10)).await.unwrap();

    // Only `alive` heartbeats; nodes silent since before 50 are dead.
    assert!(alive.heartbeat(at(100)).await.unwrap());
    let dead_before = at(50);
    let abandoned = alive.abandoned_leases(dead_before).await.unwrap();
    let ids: Vec<PassengerId> = abandoned.iter().map(|lease| lease.id).collect();
    assert_eq!(ids, [lost.passenger.id]);
    assert_eq!(alive.recover_leases(dead_before, at(100)).await.unwrap(), 1);
    assert_eq!(
        state_of(&alive, lost.passenger.id).await,
        PassengerState::Pending
    );
    assert_eq!(
        state_of(&alive, kept.passenger.id).await,
        PassengerState::InFlight
    );
    // The dead node's late report changes nothing; the living node's applies.
    let stale = report(&lost, vec![(0, StepChange::Done)]);
    assert_eq!(dying.finish(&[stale], at(110)).await.unwrap(), 0);
    let fresh = report(&kept, vec![(0, StepChange::Done)]);
    assert_eq!(alive.finish(&[fresh], at(110)).await.unwrap(), 1);

    assert_eq!(
        alive
            .abandon_running_runs(dead_before, at(100))
            .await
            .unwrap(),
        1
    );
    let status = |id| {
        let store = &alive;
        async move { store.run(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(lost_run).await, RunStatus::Failed);
    assert_eq!(status(kept_run).await, RunStatus::Running);

    assert_eq!(alive.forget_nodes(dead_before, false).await.unwrap(), 1);
    // The forgotten node learns it at its next heartbeat, and must join again.
    assert!(!dying.heartbeat(at(120)).await.unwrap());
    let nodes = alive.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].id, nodes[0].name.as_str()), (first, "host-a 100"));
    assert_eq!(nodes[0].heartbeat_at, at(100));

    // A schedule's slot is started by one node only.
    assert!(alive.claim_slot(&key, at(1_000)).await.unwrap());
    assert!(!dying.claim_slot(&key, at(1_000)).await.unwrap());
    assert!(dying.claim_slot(&key, at(2_000)).await.unwrap());

    // One node pulls a pipeline; another takes over once the hold expires or is dropped.
    assert!(alive.hold_pull(&key, at(200), at(100)).await.unwrap());
    assert!(!dying.hold_pull(&key, at(250), at(150)).await.unwrap());
    assert!(alive.hold_pull(&key, at(300), at(190)).await.unwrap());
    assert!(dying.hold_pull(&key, at(400), at(301)).await.unwrap());
    assert!(!alive.hold_pull(&key, at(500), at(310)).await.unwrap());
    dying.drop_pull(&key).await.unwrap();
    assert!(alive.hold_pull(&key, at(500), at(320)).await.unwrap());

    // Leaving forgets the node and what it held.
    assert_eq!(alive.forget_nodes(at(0), true).await.unwrap(), 1);
    assert!(alive.nodes().await.unwrap().is_empty());
    assert!(dying.hold_pull(&key, at(600), at(330)).await.unwrap());
}

// ---- definitions and flags ----

pub(crate) async fn definitions_are_versioned_by_hash<S: TestStore>() {
    let (_place, store) = S::create().await;
    let file = "clients/acme/pipelines/invoices.yaml";
    assert!(
        store
            .record_definition(file, "h1", "a: 1", at(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_definition(file, "h1", "a: 1", at(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_definition(file, "h2", "a: 2", at(10))
            .await
            .unwrap()
    );
    let other = "clients/acme/client.yaml";
    assert!(
        store
            .record_definition(other, "h1", "b", at(20))
            .await
            .unwrap()
    );

    let versions = store.definition_versions(file).await.unwrap();
    let seen: Vec<_> = versions
        .iter()
        .map(|v| {
            (
                v.file.as_str(),
                v.hash.as_str(),
                v.content.as_str(),
                v.loaded_at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(file, "h2", "a: 2", at(10)), (file, "h1", "a: 1", at(0))]
    );
    assert_eq!(store.definition_versions(other).await.unwrap().len(), 1);
    assert!(
        store
            .definition_versions("nothing.yaml")
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn pipelines_pause_and_resume<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let feed = PipelineKey::new("globex", "feed");
    let mail = PipelineKey::new("acme", "mail");
    assert!(store.paused().await.unwrap().is_empty());
    store.set_paused(&feed, true).await.unwrap();
    store.set_paused(&invoices, true).await.unwrap();
    store.set_paused(&mail, false).await.unwrap();
    assert_eq!(
        store.paused().await.unwrap(),
        [invoices.clone(), feed.clone()]
    );
    store.set_paused(&invoices, false).await.unwrap();
    store.set_paused(&feed, true).await.unwrap();
    assert_eq!(store.paused().await.unwrap(), [feed]);
}

pub(crate) async fn ferry_pauses_with_a_reason_until_a_person_resumes<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    store.set_paused(&key, true).await.unwrap();
    assert!(store.pause_reasons().await.unwrap().is_empty());
    store
        .pause_for(&key, "paused after 3 failed runs")
        .await
        .unwrap();
    assert_eq!(store.paused().await.unwrap(), std::slice::from_ref(&key));
    assert_eq!(
        store.pause_reasons().await.unwrap(),
        BTreeMap::from([(key.clone(), "paused after 3 failed runs".to_string())])
    );
    store.set_paused(&key, false).await.unwrap();
    assert!(store.paused().await.unwrap().is_empty());
    assert!(store.pause_reasons().await.unwrap().is_empty());
}

pub(crate) async fn puller_state_is_kept_with_the_seat<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = three_steps();
    assert_eq!(store.puller_state(&key, "erp").await.unwrap(), None);
    let state = |value: &str| PullerState {
        puller: "erp".into(),
        state: value.into(),
    };
    let batch = [pulled("a"), pulled("b")];
    store
        .seat_from(
            &key,
            "v1",
            &steps,
            &batch,
            Some(&state("2024-01-01")),
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(
        store.puller_state(&key, "erp").await.unwrap().as_deref(),
        Some("2024-01-01")
    );
    // Duplicates only: the position still moves on.
    store
        .seat_from(
            &key,
            "v1",
            &steps,
            &batch,
            Some(&state("2024-02-01")),
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(
        store.puller_state(&key, "erp").await.unwrap().as_deref(),
        Some("2024-02-01")
    );
    // Other pullers and pipelines have their own.
    assert_eq!(store.puller_state(&key, "crm").await.unwrap(), None);
    let other = PipelineKey::new("globex", "invoices");
    assert_eq!(store.puller_state(&other, "erp").await.unwrap(), None);
}

pub(crate) async fn progress_counts_the_states_of_given_passengers<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = [pusher("file")];
    let a = seat_one(&store, &key, &steps, "a", at(0)).await;
    let b = seat_one(&store, &key, &steps, "b", at(0)).await;
    let _other = seat_one(&store, &key, &steps, "c", at(0)).await;
    let leased = lease_one(&store, &key, at(1)).await;
    assert_eq!(leased.passenger.id, a);
    finish_one(&store, report(&leased, vec![(0, StepChange::Done)]), at(2)).await;
    let counts = store.progress(&[a, b, PassengerId::new()]).await.unwrap();
    assert_eq!(
        counts,
        BTreeMap::from([(PassengerState::Complete, 1), (PassengerState::Pending, 1)])
    );
    assert!(store.progress(&[]).await.unwrap().is_empty());
}

pub(crate) async fn lease_stops_at_its_byte_budget<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    // Three bodies of 20 MB: a lease takes two (the budget is 32 MB, and it always takes the
    // passenger that crosses it), then the third.
    let big = Bytes::from(vec![b'x'; 20 << 20]);
    let batch: Vec<Passenger> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            Passenger::pulled("db", *id).with_body(Body {
                media_type: "text/plain".into(),
                data: big.clone(),
            })
        })
        .collect();
    store
        .seat(&key, "v1", &[pusher("pg")], &batch, at(0))
        .await
        .unwrap();
    let first = store.lease(&key, 100, LEASE, at(1)).await.unwrap();
    assert_eq!(first.len(), 2);
    let second = store.lease(&key, 100, LEASE, at(1)).await.unwrap();
    assert_eq!(second.len(), 1);
}

// ---- durability ----

pub(crate) async fn data_survives_a_reopen<S: TestStore>() {
    let (place, store) = S::create().await;
    let key = invoices();
    let steps = three_steps();
    let all_done = vec![
        (0, StepChange::Done),
        (1, StepChange::Done),
        (2, StepChange::Done),
    ];
    let leased = seat_and_lease(&store, &key, &steps, "complete", at(0)).await;
    finish_one(&store, report(&leased, all_done), at(1)).await;
    let complete = leased.passenger.id;
    let leased = lease_one_after_seat(&store, &key, &steps, "failed").await;
    let processed = (Metadata::new(), Body::json(&json!({ "mapped": true })));
    let finished = Finished {
        processed: Some(processed.clone()),
        ..report(
            &leased,
            vec![(0, StepChange::Done), (1, retry_at("timeout", 50_000))],
        )
    };
    finish_one(&store, finished, at(3)).await;
    let failed = leased.passenger.id;
    let in_flight = lease_one_after_seat(&store, &key, &steps, "leased").await;
    let pending = seat_one(&store, &key, &steps, "pending", at(4)).await;

    let run = store.start_run(&key, "v1", at(0)).await.unwrap();
    store
        .log_run(run, &[line(1, LogLevel::Info, "pulled 4")])
        .await
        .unwrap();
    store
        .record_definition("p.yaml", "h1", "x", at(0))
        .await
        .unwrap();
    store.set_paused(&key, true).await.unwrap();

    let counts = store.counts(None).await.unwrap();
    let detail_before = store.get(failed).await.unwrap();
    drop(store);
    let store = S::reopen(&place).await;

    assert_eq!(store.counts(None).await.unwrap(), counts);
    assert_eq!(state_of(&store, complete).await, PassengerState::Complete);
    assert_eq!(state_of(&store, pending).await, PassengerState::Pending);
    let detail = store.get(failed).await.unwrap();
    assert_eq!(detail.entry, detail_before.entry);
    assert_eq!(detail.steps, detail_before.steps);
    assert_eq!(detail.attempts, detail_before.attempts);
    assert_eq!(detail.processed, Some(processed));
    assert_eq!(detail.original, detail_before.original);
    assert_eq!(store.runs(None, 10).await.unwrap()[0].id, run);
    assert_eq!(store.run_logs(run).await.unwrap().len(), 1);
    assert_eq!(store.definition_versions("p.yaml").await.unwrap().len(), 1);
    assert_eq!(store.paused().await.unwrap(), std::slice::from_ref(&key));

    // The lease taken before the restart still holds, and expires as usual.
    let id = in_flight.passenger.id;
    assert_eq!(state_of(&store, id).await, PassengerState::InFlight);
    let after_expiry = at(LEASE.as_millis() as i64 + 10);
    let leased = store.lease(&key, 10, LEASE, after_expiry).await.unwrap();
    let ids: HashSet<_> = leased.iter().map(|leased| leased.passenger.id).collect();
    assert_eq!(ids, HashSet::from([id, pending, failed]));
}

/// Seats a passenger at 2 ms and leases it (whatever else is due is already leased).
async fn lease_one_after_seat<S: Store>(
    store: &S,
    key: &PipelineKey,
    steps: &[StepDef],
    external_id: &str,
) -> Leased {
    seat_and_lease(store, key, steps, external_id, at(2)).await
}

// ---- skip a step ----

pub(crate) async fn skip_step_refuses_finished_steps_leases_and_unknowns<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;

    // Leased: a worker may be running the step right now.
    let refused = store.skip_step(id, 2, at(1)).await;
    assert_refused(refused, &["leased"]);
    assert_eq!(step_states(&store, id).await, [StepState::InFlight; 3]);

    let changes = vec![
        (0, StepChange::Done),
        (1, StepChange::Done),
        (2, retry_at("timeout", 50_000)),
    ];
    finish_one(&store, report(&leased, changes), at(2)).await;
    let refused = store.skip_step(id, 1, at(3)).await;
    assert_refused(refused, &["step 1", &id.to_string(), "done"]);
    let refused = store.skip_step(id, 3, at(3)).await;
    assert_refused(refused, &["no step 3"]);
    assert_eq!(
        step_states(&store, id).await,
        [StepState::Done, StepState::Done, StepState::Failed]
    );
    assert_eq!(state_of(&store, id).await, PassengerState::Failed);

    let unknown = PassengerId::new();
    assert_not_found(store.skip_step(unknown, 0, at(3)).await, unknown);

    // Skipped steps are finished too: a second skip is refused.
    store.skip_step(id, 2, at(4)).await.unwrap();
    assert_refused(store.skip_step(id, 2, at(5)).await, &["skipped"]);
}

pub(crate) async fn skip_step_ends_an_expired_lease<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let id = seat_one(&store, &key, &[pusher("http")], "x", at(0)).await;
    let leased = store
        .lease(&key, 1, Duration::from_secs(10), at(0))
        .await
        .unwrap()
        .remove(0);
    assert_refused(store.skip_step(id, 0, at(9_999)).await, &["leased"]);

    // The lease ran out: nobody holds the passenger, and the skip settles it.
    store.skip_step(id, 0, at(10_000)).await.unwrap();
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Complete);
    assert_eq!(detail.steps[0].state, StepState::Skipped);
    let late = report(&leased, vec![(0, StepChange::Done)]);
    assert_eq!(store.finish(&[late], at(10_001)).await.unwrap(), 0);
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Complete), Some(&1));
    assert_eq!(counts[&key].len(), 1, "{counts:?}");
}

pub(crate) async fn skipping_the_only_failing_pusher_completes_the_passenger<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let id = leased.passenger.id;
    let changes = vec![
        (0, StepChange::Done),
        (1, StepChange::Done),
        (2, retry_at("503 service unavailable", 50_000)),
    ];
    finish_one(&store, report(&leased, changes), at(1)).await;
    assert_eq!(store.open_count(&key).await.unwrap(), 1);

    store.skip_step(id, 2, at(2_000)).await.unwrap();
    let detail = store.get(id).await.unwrap();
    assert_eq!(detail.entry.state, PassengerState::Complete);
    assert_eq!(detail.entry.updated_at, at(2_000));
    let http = &detail.steps[2];
    assert_eq!(http.state, StepState::Skipped);
    assert_eq!(http.next_try_at, None);
    // What happened stays visible.
    assert_eq!(http.attempts, 1);
    assert_eq!(http.last_error.as_deref(), Some("503 service unavailable"));
    assert_eq!(detail.attempts.len(), 1);

    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Complete), Some(&1));
    assert_eq!(counts[&key].len(), 1, "{counts:?}");
    assert_eq!(store.open_count(&key).await.unwrap(), 0);
    assert_eq!(store.next_due(&key).await.unwrap(), None);
    // Finished when skipped: the retention clock starts then.
    assert_eq!(store.purge_passengers("acme", at(2_000)).await.unwrap(), 0);
    assert_eq!(store.purge_passengers("acme", at(2_001)).await.unwrap(), 1);
}

pub(crate) async fn skipping_a_dead_step_lets_the_rest_run<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let steps = vec![processor("map"), processor("check"), pusher("file")];
    let leased = seat_and_lease(&store, &key, &steps, "x", at(0)).await;
    let id = leased.passenger.id;
    finish_one(&store, report(&leased, vec![(0, dead("bad map"))]), at(1)).await;
    assert_eq!(state_of(&store, id).await, PassengerState::Dead);

    // The processors after a skipped processor still run.
    store.skip_step(id, 0, at(2)).await.unwrap();
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts[&key].get(&PassengerState::Pending), Some(&1));
    assert_eq!(counts[&key].get(&PassengerState::Dead), None);
    let again = lease_one(&store, &key, at(2)).await;
    let states: Vec<_> = again.steps.iter().map(|step| step.state).collect();
    assert_eq!(
        states,
        [StepState::Skipped, StepState::InFlight, StepState::InFlight]
    );

    // A pending step can be skipped too, once its lease is over.
    store.release(&[(id, again.token)], at(3)).await.unwrap();
    store.skip_step(id, 1, at(4)).await.unwrap();
    assert_eq!(
        step_states(&store, id).await,
        [StepState::Skipped, StepState::Skipped, StepState::Pending]
    );
    assert_eq!(state_of(&store, id).await, PassengerState::Pending);
}

fn assert_refused<T: std::fmt::Debug>(result: crate::Result<T>, words: &[&str]) {
    match result {
        Err(StoreError::Refused(message)) => {
            for word in words {
                assert!(message.contains(word), "`{message}` lacks `{word}`");
            }
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

// ---- the console's views of the queue ----

pub(crate) async fn owner_and_children_of_a_passenger<S: TestStore>() {
    let (_place, store) = S::create().await;
    let key = invoices();
    let leased = seat_and_lease(&store, &key, &three_steps(), "x", at(0)).await;
    let parent = leased.passenger.clone();
    let children: Vec<Passenger> = (1..=3)
        .map(|n| parent.child(format!("x#{n}"), Body::json(&json!({ "part": n }))))
        .collect();
    let mut split = report(&leased, vec![(0, StepChange::Done)]);
    split.split = Some(crate::Split {
        after: 0,
        children: children.clone(),
    });
    finish_one(&store, split, at(1)).await;

    assert_eq!(store.owner(parent.id).await.unwrap(), Some(key.clone()));
    assert_eq!(
        store.owner(children[1].id).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.owner(PassengerId::new()).await.unwrap(), None);

    let found = store.children(parent.id).await.unwrap();
    let ids: Vec<_> = found.iter().map(|entry| entry.id).collect();
    let expected: Vec<_> = children.iter().map(|child| child.id).collect();
    assert_eq!(ids, expected);
    assert_eq!(found[0].external_id, "x#1");
    assert_eq!(found[0].state, PassengerState::Pending);
    assert_eq!(found[0].created_at, at(1));
    assert_eq!(
        (found[0].client.as_str(), found[0].pipeline.as_str()),
        ("acme", "invoices")
    );
    assert!(store.children(children[0].id).await.unwrap().is_empty());
    assert!(store.children(PassengerId::new()).await.unwrap().is_empty());
}

/// Seats passengers with one `http` pusher in `key` at `now`, leases them all and reports each
/// dead of `error`. Returns their ids in seat order.
async fn seat_dead<S: Store>(
    store: &S,
    key: &PipelineKey,
    external_ids: &[&str],
    error: &str,
    now: Timestamp,
) -> Vec<PassengerId> {
    let passengers: Vec<_> = external_ids.iter().map(|id| pulled(id)).collect();
    store
        .seat(key, "v1", &[pusher("http")], &passengers, now)
        .await
        .unwrap();
    let leased = store.lease(key, 100, LEASE, now).await.unwrap();
    assert_eq!(
        leased.len(),
        passengers.len(),
        "nothing else is due in {key}"
    );
    let reports: Vec<_> = leased
        .iter()
        .map(|leased| report(leased, vec![(0, dead(error))]))
        .collect();
    assert_eq!(store.finish(&reports, now).await.unwrap(), reports.len());
    passengers.iter().map(|p| p.id).collect()
}

pub(crate) async fn dead_groups_by_pipeline_and_error_largest_first<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let feed = PipelineKey::new("globex", "feed");
    seat_dead(&store, &invoices, &["i1", "i2"], "410 gone", at(100)).await;
    seat_dead(&store, &invoices, &["i3"], "410 gone", at(300)).await;
    seat_dead(&store, &invoices, &["i4"], "timeout", at(500)).await;
    seat_dead(&store, &mail, &["m1", "m2"], "410 gone", at(600)).await;
    seat_dead(&store, &feed, &["f1"], "boom", at(700)).await;
    // Failed is not dead, whatever its error.
    let leased = seat_and_lease(&store, &invoices, &[pusher("http")], "i5", at(800)).await;
    let retry = retry_at("410 gone", 1_000_000);
    finish_one(&store, report(&leased, vec![(0, retry)]), at(800)).await;

    let group = |key: &PipelineKey, error: &str, count: u64, newest: i64| DeadGroup {
        client: key.client.clone(),
        pipeline: key.pipeline.clone(),
        error: error.into(),
        count,
        newest: at(newest),
    };
    // Equal counts: the group that changed last first.
    assert_eq!(
        store.dead_groups(None).await.unwrap(),
        [
            group(&invoices, "410 gone", 3, 300),
            group(&mail, "410 gone", 2, 600),
            group(&feed, "boom", 1, 700),
            group(&invoices, "timeout", 1, 500),
        ]
    );
    assert_eq!(
        store.dead_groups(Some("acme")).await.unwrap(),
        [
            group(&invoices, "410 gone", 3, 300),
            group(&mail, "410 gone", 2, 600),
            group(&invoices, "timeout", 1, 500),
        ]
    );
    assert!(store.dead_groups(Some("initech")).await.unwrap().is_empty());
}

pub(crate) async fn dead_ids_oldest_first_up_to_the_limit<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let mut gone = seat_dead(&store, &invoices, &["i1", "i2"], "410 gone", at(100)).await;
    gone.extend(seat_dead(&store, &invoices, &["i3"], "410 gone", at(300)).await);
    let timeout = seat_dead(&store, &invoices, &["i4"], "timeout", at(500)).await;
    seat_dead(&store, &mail, &["m1"], "410 gone", at(600)).await;

    assert_eq!(
        store.dead_ids(&invoices, "410 gone", 10).await.unwrap(),
        gone
    );
    assert_eq!(
        store.dead_ids(&invoices, "410 gone", 2).await.unwrap(),
        gone[..2]
    );
    assert!(
        store
            .dead_ids(&invoices, "410 gone", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.dead_ids(&invoices, "timeout", 10).await.unwrap(),
        timeout
    );
    assert!(
        store
            .dead_ids(&mail, "timeout", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The error matches word for word, not as a substring.
    assert!(
        store
            .dead_ids(&invoices, "410", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Revived ones leave the group.
    store.retry(gone[0], at(1_000)).await.unwrap();
    assert_eq!(
        store.dead_ids(&invoices, "410 gone", 10).await.unwrap(),
        gone[1..]
    );
}

pub(crate) async fn oldest_open_per_pipeline<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let feed = PipelineKey::new("globex", "feed");
    let steps = vec![pusher("file")];
    assert!(store.oldest_open().await.unwrap().is_empty());

    let first = seat_one(&store, &invoices, &steps, "a", at(100)).await;
    seat_one(&store, &invoices, &steps, "b", at(200)).await;
    seat_one(&store, &mail, &steps, "c", at(50)).await;
    let leased = seat_and_lease(&store, &feed, &steps, "d", at(300)).await;
    finish_one(
        &store,
        report(&leased, vec![(0, StepChange::Done)]),
        at(301),
    )
    .await;

    let expected = BTreeMap::from([(invoices.clone(), at(100)), (mail.clone(), at(50))]);
    assert_eq!(store.oldest_open().await.unwrap(), expected);

    // In flight and failed passengers still have work.
    let leased = lease_one(&store, &invoices, at(400)).await;
    assert_eq!(leased.passenger.id, first);
    let leased_mail = lease_one(&store, &mail, at(400)).await;
    let retry = retry_at("timeout", 100_000);
    finish_one(&store, report(&leased_mail, vec![(0, retry)]), at(401)).await;
    assert_eq!(store.oldest_open().await.unwrap(), expected);

    // Done and dead passengers have none.
    finish_one(
        &store,
        report(&leased, vec![(0, StepChange::Done)]),
        at(500),
    )
    .await;
    let leased_mail = lease_one(&store, &mail, at(100_000)).await;
    finish_one(
        &store,
        report(&leased_mail, vec![(0, dead("gone"))]),
        at(100_001),
    )
    .await;
    let expected = BTreeMap::from([(invoices, at(200))]);
    assert_eq!(store.oldest_open().await.unwrap(), expected);
}

// ---- the console's views of runs ----

/// Starts a run of `key` at `started` and, unless `status` is running, finishes it having
/// seated `seated`.
async fn run_of<S: Store>(
    store: &S,
    key: &PipelineKey,
    started: i64,
    status: RunStatus,
    seated: u64,
) -> RunId {
    let run = store.start_run(key, "v1", at(started)).await.unwrap();
    if status != RunStatus::Running {
        let counts = RunCounts {
            pulled: seated,
            seated,
            ..RunCounts::default()
        };
        store
            .finish_run(run, status, counts, None, at(started + 1))
            .await
            .unwrap();
    }
    run
}

pub(crate) async fn runs_page_filters_and_pages_newest_first<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let feed = PipelineKey::new("globex", "feed");
    let r1 = run_of(&store, &invoices, 0, RunStatus::Succeeded, 5).await;
    let r2 = run_of(&store, &mail, 10, RunStatus::Failed, 0).await;
    let r3 = run_of(&store, &feed, 20, RunStatus::Succeeded, 1).await;
    let r4 = run_of(&store, &invoices, 30, RunStatus::Running, 0).await;
    let r5 = run_of(&store, &invoices, 40, RunStatus::Succeeded, 2).await;

    let page = |filter: RunFilter, before: Option<RunId>, limit: usize| {
        let store = &store;
        async move {
            let runs = store.runs_page(&filter, before, limit).await.unwrap();
            runs.into_iter().map(|run| run.id).collect::<Vec<_>>()
        }
    };
    let all = RunFilter::default;
    assert_eq!(page(all(), None, 2).await, [r5, r4]);
    assert_eq!(page(all(), Some(r4), 2).await, [r3, r2]);
    assert_eq!(page(all(), Some(r2), 2).await, [r1]);
    assert!(page(all(), Some(r1), 2).await.is_empty());
    assert!(page(all(), None, 0).await.is_empty());

    let acme = || RunFilter {
        client: Some("acme".into()),
        ..all()
    };
    assert_eq!(page(acme(), None, 10).await, [r5, r4, r2, r1]);
    assert_eq!(page(acme(), Some(r4), 10).await, [r2, r1]);
    let acme_invoices = RunFilter {
        pipeline: Some("invoices".into()),
        ..acme()
    };
    assert_eq!(page(acme_invoices, None, 10).await, [r5, r4, r1]);
    let feed_only = RunFilter {
        pipeline: Some("feed".into()),
        ..all()
    };
    assert_eq!(page(feed_only, None, 10).await, [r3]);
    let succeeded = || RunFilter {
        status: Some(RunStatus::Succeeded),
        ..all()
    };
    assert_eq!(page(succeeded(), None, 10).await, [r5, r3, r1]);
    let acme_succeeded = RunFilter {
        client: Some("acme".into()),
        ..succeeded()
    };
    assert_eq!(page(acme_succeeded, Some(r5), 10).await, [r1]);
    let running = RunFilter {
        status: Some(RunStatus::Running),
        ..all()
    };
    assert_eq!(page(running, None, 10).await, [r4]);
    // `since` is inclusive, `until` exclusive.
    let window = RunFilter {
        since: Some(at(10)),
        until: Some(at(40)),
        ..all()
    };
    assert_eq!(page(window, None, 10).await, [r4, r3, r2]);

    let listed = store.runs_page(&all(), None, 10).await.unwrap();
    let second = store.run(r2).await.unwrap().unwrap();
    assert_eq!(listed[3], second);
    assert_eq!(second.pipeline, "mail");
    assert_eq!(second.status, RunStatus::Failed);
    assert_eq!(second.finished_at, Some(at(11)));
    assert_eq!(store.run(r5 + 1_000).await.unwrap(), None);
}

pub(crate) async fn throughput_sums_seated_per_bucket<S: TestStore>() {
    let (_place, store) = S::create().await;
    let invoices = invoices();
    let mail = PipelineKey::new("acme", "mail");
    let feed = PipelineKey::new("globex", "feed");
    let done = RunStatus::Succeeded;
    // The origin is a multiple of ten seconds, so buckets start at at(0), at(10_000), ...
    assert_eq!(T0 % 10_000, 0);
    run_of(&store, &invoices, -10_000, done, 9).await;
    run_of(&store, &invoices, 0, done, 3).await;
    run_of(&store, &invoices, 3_000, RunStatus::Partial, 4).await;
    run_of(&store, &invoices, 10_000, done, 5).await;
    run_of(&store, &invoices, 15_000, RunStatus::Running, 0).await;
    run_of(&store, &mail, 5_000, done, 0).await;
    run_of(&store, &feed, 12_000, done, 2).await;

    let bucket = Duration::from_secs(10);
    let point = |key: &PipelineKey, ms: i64, seated: u64| Throughput {
        pipeline: key.clone(),
        at: at(ms),
        seated,
    };
    assert_eq!(
        store.throughput(None, at(0), bucket).await.unwrap(),
        [
            point(&invoices, 0, 7),
            point(&invoices, 10_000, 5),
            point(&feed, 10_000, 2),
        ]
    );
    assert_eq!(
        store
            .throughput(Some("globex"), at(0), bucket)
            .await
            .unwrap(),
        [point(&feed, 10_000, 2)]
    );
    // A run counts in the bucket it started in, even if `since` cuts that bucket.
    assert_eq!(
        store
            .throughput(Some("acme"), at(2_000), bucket)
            .await
            .unwrap(),
        [point(&invoices, 0, 4), point(&invoices, 10_000, 5)]
    );
    let minute = Duration::from_secs(60);
    let whole = store
        .throughput(Some("acme"), at(-10_000), minute)
        .await
        .unwrap();
    let total: u64 = whole.iter().map(|point| point.seated).sum();
    assert_eq!(total, 21);
    assert!(
        store
            .throughput(None, at(100_000), bucket)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---- sessions, tokens, audit ----

fn session(client: &str, user: &str, expires: i64) -> Session {
    Session {
        client: client.into(),
        user: user.into(),
        csrf: format!("csrf-of-{user}"),
        expires_at: at(expires),
    }
}

pub(crate) async fn sessions_expire_and_end<S: TestStore>() {
    let (_place, store) = S::create().await;
    let ann = session("acme", "ann", 1_000);
    let bob = session("globex", "bob", 5_000);
    store.create_session("hash-ann", &ann).await.unwrap();
    store.create_session("hash-bob", &bob).await.unwrap();

    assert_eq!(store.session("hash-ann", at(999)).await.unwrap(), Some(ann));
    assert_eq!(store.session("hash-ann", at(1_000)).await.unwrap(), None);
    assert_eq!(store.session("nobody", at(0)).await.unwrap(), None);

    assert_eq!(store.purge_sessions(at(1_000)).await.unwrap(), 1);
    assert_eq!(store.purge_sessions(at(1_000)).await.unwrap(), 0);
    assert_eq!(
        store.session("hash-bob", at(1_000)).await.unwrap(),
        Some(bob)
    );

    store.delete_session("hash-bob").await.unwrap();
    assert_eq!(store.session("hash-bob", at(1_000)).await.unwrap(), None);
    store.delete_session("hash-bob").await.unwrap();
    assert_eq!(store.purge_sessions(at(1_000_000)).await.unwrap(), 0);
}

fn token(client: &str, name: &str, created: i64) -> ApiToken {
    ApiToken {
        // Ignored by `create_token`.
        id: 999,
        client: client.into(),
        name: name.into(),
        role: "operator".into(),
        created_by: format!("{client}/ann"),
        created_at: at(created),
        last_used_at: Some(at(1)),
    }
}

pub(crate) async fn tokens_are_used_listed_and_revoked_per_client<S: TestStore>() {
    let (_place, store) = S::create().await;
    let deploy = store
        .create_token("hash-deploy", &token("acme", "deploy", 0))
        .await
        .unwrap();
    let feed = store
        .create_token("hash-feed", &token("globex", "feed", 10))
        .await
        .unwrap();
    let backup = store
        .create_token("hash-backup", &token("acme", "backup", 20))
        .await
        .unwrap();
    assert_eq!(HashSet::from([deploy, feed, backup]).len(), 3);

    let ids = |tokens: Vec<ApiToken>| tokens.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.tokens(None).await.unwrap()),
        [backup, feed, deploy]
    );
    let acme = store.tokens(Some("acme")).await.unwrap();
    assert_eq!(ids(acme.clone()), [backup, deploy]);
    let expected = ApiToken {
        id: deploy,
        last_used_at: None,
        ..token("acme", "deploy", 0)
    };
    assert_eq!(acme[1], expected);

    let used = store.use_token("hash-deploy", at(100)).await.unwrap();
    let used_expected = ApiToken {
        last_used_at: Some(at(100)),
        ..expected
    };
    assert_eq!(used, Some(used_expected.clone()));
    assert_eq!(store.tokens(Some("acme")).await.unwrap()[1], used_expected);
    assert_eq!(
        store.use_token("hash-unknown", at(100)).await.unwrap(),
        None
    );

    // Another client's token is out of reach: nothing happens.
    assert!(!store.revoke_token("globex", deploy).await.unwrap());
    assert_eq!(
        ids(store.tokens(Some("acme")).await.unwrap()),
        [backup, deploy]
    );
    assert!(
        store
            .use_token("hash-deploy", at(200))
            .await
            .unwrap()
            .is_some()
    );
    // Within a minute of the last record, a use is not written again; after it, it is.
    let last_used =
        |tokens: Vec<ApiToken>| tokens.iter().find(|t| t.id == deploy).unwrap().last_used_at;
    assert_eq!(
        last_used(store.tokens(Some("acme")).await.unwrap()),
        Some(at(100))
    );
    store.use_token("hash-deploy", at(61_000)).await.unwrap();
    assert_eq!(
        last_used(store.tokens(Some("acme")).await.unwrap()),
        Some(at(61_000))
    );

    assert!(store.revoke_token("acme", deploy).await.unwrap());
    assert!(!store.revoke_token("acme", deploy).await.unwrap());
    assert_eq!(store.use_token("hash-deploy", at(300)).await.unwrap(), None);
    assert_eq!(ids(store.tokens(None).await.unwrap()), [backup, feed]);
}

fn entry(ms: i64, client: &str, action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        at: at(ms),
        client: client.into(),
        actor: format!("{client}/ann"),
        action: action.into(),
        target: target.into(),
        detail: format!("{action} of {target}"),
    }
}

pub(crate) async fn audit_log_filters_newest_first<S: TestStore>() {
    let (_place, store) = S::create().await;
    let e1 = entry(0, "acme", "passenger.retry", "p-1");
    let e2 = entry(10, "globex", "passenger.discard", "p-1");
    let e3 = entry(20, "acme", "pipeline.pause", "acme/invoices");
    let e4 = entry(30, "acme", "passenger.skip_step", "p-1");
    // Same millisecond: the one recorded later comes first.
    let e5 = entry(30, "acme", "passenger.replay", "p-1");
    // Recorded out of order: the log goes by the time of the action.
    for entry in [&e1, &e3, &e2, &e4, &e5] {
        store.audit(entry).await.unwrap();
    }

    let log = |client: Option<&'static str>, target: Option<&'static str>, limit: usize| {
        let store = &store;
        async move { store.audit_log(client, target, limit).await.unwrap() }
    };
    assert_eq!(
        log(None, None, 10).await,
        [e5.clone(), e4.clone(), e3.clone(), e2.clone(), e1.clone()]
    );
    assert_eq!(log(None, None, 2).await, [e5.clone(), e4.clone()]);
    assert!(log(None, None, 0).await.is_empty());
    assert_eq!(
        log(Some("acme"), None, 10).await,
        [e5.clone(), e4.clone(), e3.clone(), e1.clone()]
    );
    assert_eq!(
        log(None, Some("p-1"), 10).await,
        [e5.clone(), e4.clone(), e2.clone(), e1.clone()]
    );
    assert_eq!(
        log(Some("acme"), Some("p-1"), 10).await,
        [e5.clone(), e4.clone(), e1.clone()]
    );
    assert_eq!(log(Some("globex"), None, 10).await, [e2]);
    assert_eq!(log(Some("acme"), Some("acme/invoices"), 10).await, [e3]);
    assert!(log(Some("initech"), None, 10).await.is_empty());
}
