//! The conformance harness: what `docs/connector-spec.md` asks of every puller, pusher and
//! connection type, checked the same way for each. A connector's tests call
//! [`puller_conforms`], [`pusher_conforms`] or [`check_conforms`] with a small adapter that
//! knows how to fill its source, build it, and read its target.
//!
//! A crash between "seated" and "ack" is a puller dropped without its `ack` and a new one
//! built from the same definition, as a restarted process would; the queue drops what comes
//! again by (`source_system`, `external_id`), so the harness checks that a re-offered item
//! comes back under the same key, and that nothing left the source before `ack`. The binary's
//! own `kill -9` tests (crates/ferry/tests) cover the same path through the store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::records;
use ferry_core::{Passenger, Pulled, Puller, Pusher, Registry, Seated, StepError};

/// A secret every adapter puts into its unreachable definition; no message may show it.
pub const SECRET: &str = "c0nformance-Secret";

/// A puller's source, as the harness sees it.
#[async_trait(?Send)]
pub trait PullerUnderTest {
    /// Puts `good` well-formed items in the source, and one malformed item when the source can
    /// hold one; returns the text its failure must name to locate it (a line and column, a row,
    /// a file name), or `None`.
    async fn fill(&mut self, good: usize) -> Option<String>;
    /// A puller built from the definition, as a freshly started process builds it.
    fn puller(&self) -> Box<dyn Puller>;
    /// How many items the source still holds for the puller: taken away only by `ack` (by a
    /// delete, a move, a commit); `None` when the source keeps everything and the puller's
    /// position lives in its state.
    async fn remaining(&self) -> Option<usize>;
    /// Each run is a full load of the source (a record batch load with `series`), which a
    /// crash cannot continue: the re-pull is a newer load of the same series, and pushers
    /// discard the older, incomplete one instead of the queue dropping copies.
    fn full_loads(&self) -> bool {
        false
    }
    /// A puller whose system cannot be reached, whose definition holds [`SECRET`], and the
    /// name its errors must give the system; `None` for a local directory, which is there or
    /// is a mistake in the definition (a permanent error).
    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)>;
}

/// A pusher's target, as the harness sees it.
#[async_trait(?Send)]
pub trait PusherUnderTest {
    /// A pusher built from the definition, as a freshly started process builds it.
    fn pusher(&self) -> Box<dyn Pusher>;
    /// `count` well-formed passengers with distinct ids.
    fn passengers(&self, count: usize) -> Vec<Passenger>;
    /// A passenger the target cannot take, and the text its failure must name to locate the
    /// problem (a row and a column, a name); `None` when the pusher takes anything.
    fn malformed(&self) -> Option<(Passenger, String)>;
    /// What the target holds: one entry per delivered item (a file name, a row's key), so
    /// that a second copy shows.
    async fn delivered(&self) -> Vec<String>;
    /// The entries [`Self::delivered`] must show for `passengers`.
    fn expected(&self, passengers: &[Passenger]) -> Vec<String>;
    /// A pusher whose system cannot be reached, whose definition holds [`SECRET`], and the
    /// name its errors must give the system; `None` for a pusher that reaches nothing.
    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)>;
    /// The target keeps every copy it is given and cannot drop one by id (a Kafka topic, an
    /// AMQP queue, an MQTT topic): a re-push after a crash may deliver a second copy, which
    /// must carry the same entry (the passenger's id) so that a reader can drop it.
    fn at_least_once(&self) -> bool {
        false
    }
}

/// Checks a puller against the spec: paging, nothing removed before `ack`, a crash between
/// seat and ack re-offering under the same keys, `ack` idempotent and acknowledging
/// duplicates, a malformed item failing alone and permanently with its position, and an
/// unreachable system failing retryably, named, without the secret.
pub async fn puller_conforms(source: &mut impl PullerUnderTest) {
    const GOOD: usize = 5;
    let position = source.fill(GOOD).await;
    let before = source.remaining().await;

    // The first pull is seated, then the process dies before its `ack`. Every run starts with
    // `restore` (the engine calls it before pulling; a webhook puller receives from then on).
    let mut first = source.puller();
    first.restore(None);
    let crashed = pull_once(source, first.as_mut()).await;
    drop(first);
    let crashed_keys = keys(&crashed.passengers);
    assert!(!crashed_keys.is_empty(), "the first pull finds items");

    // The restarted process gets the seated state back and pulls on, acknowledging each pull.
    let mut second = source.puller();
    second.restore(crashed.state.clone());
    let mut offered = BTreeSet::new();
    let mut failures = crashed.failures.clone();
    let mut last = Vec::new();
    let mut again = Vec::new();
    for _ in 0..100 {
        let pulled = pull_once(source, second.as_mut()).await;
        again.extend(pulled.passengers.iter().cloned());
        let new = keys(&pulled.passengers).difference(&offered).count() > 0;
        offered.extend(keys(&pulled.passengers));
        failures.extend(pulled.failures);
        let seated: Vec<Seated> = pulled
            .passengers
            .iter()
            .map(|passenger| Seated {
                source_system: passenger.source_system.clone(),
                external_id: passenger.external_id.clone(),
                // The queue already holds what the crashed process seated.
                duplicate: crashed_keys.contains(&(
                    passenger.source_system.clone(),
                    passenger.external_id.clone(),
                )),
            })
            .collect();
        second.ack(&seated).await.expect("ack");
        if !seated.is_empty() {
            last = seated;
        }
        if !pulled.more || !new {
            break;
        }
    }
    second
        .ack(&last)
        .await
        .expect("a second ack of the same items is success");

    if source.full_loads() {
        let loads = |passengers: &[Passenger]| -> BTreeSet<(String, String)> {
            passengers
                .iter()
                .map(|p| {
                    let series = p.metadata.get(records::SERIES).expect("a series");
                    let chunk = records::Chunk::of(p).expect("a chunk of a load");
                    (series.clone(), chunk.load)
                })
                .collect()
        };
        let (old, new) = (loads(&crashed.passengers), loads(&again));
        let (old, new) = (old.first().unwrap(), new.last().unwrap());
        assert_eq!(old.0, new.0, "the re-pull is a load of the same series");
        assert!(
            new.1 > old.1,
            "the re-pull is a newer load: {new:?} after {old:?}"
        );
        assert_eq!(offered.len(), GOOD, "the newer load holds every good item");
    } else {
        let all: BTreeSet<_> = offered.union(&crashed_keys).cloned().collect();
        assert_eq!(
            all.len(),
            GOOD,
            "each good item travels, under one key: {all:?}"
        );
    }
    if before.is_some() {
        assert!(
            crashed_keys.is_subset(&offered),
            "an item not acknowledged is offered again under its key: {crashed_keys:?} not \
             within {offered:?}"
        );
        assert_eq!(
            source.remaining().await,
            before.map(|before| before - GOOD),
            "ack takes the acknowledged items away; the malformed one stays"
        );
    }
    failures.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    failures.dedup_by(|a, b| a.external_id == b.external_id);
    match &position {
        Some(position) => {
            assert_eq!(
                failures.len(),
                1,
                "the malformed item fails alone: {failures:?}"
            );
            let error = &failures[0].error;
            assert!(
                !error.retryable,
                "a malformed item fails permanently: {error}"
            );
            assert!(
                error.message.contains(position.as_str()),
                "the failure names `{position}`: {error}"
            );
        }
        None => assert!(failures.is_empty(), "{failures:?}"),
    }

    if let Some((mut unreachable, system)) = source.unreachable() {
        match unreachable.pull(10).await {
            Ok(pulled) => panic!("an unreachable system pulls nothing: {pulled:?}"),
            Err(error) => unreachable_error(&error, &system),
        }
    }
}

/// One pull of at most two items, checking that it took nothing away from the source.
async fn pull_once(source: &impl PullerUnderTest, puller: &mut dyn Puller) -> Pulled {
    let before = source.remaining().await;
    let pulled = puller.pull(2).await.expect("the source is reachable");
    assert_eq!(
        source.remaining().await,
        before,
        "nothing leaves the source before ack"
    );
    pulled
}

/// Checks a pusher against the spec: one result per passenger in order, a malformed passenger
/// failing alone and permanently with its position, the batch delivered once even when pushed
/// again by a new process, and an unreachable system failing retryably, named, without the
/// secret.
pub async fn pusher_conforms(target: &mut impl PusherUnderTest) {
    let mut batch = target.passengers(4);
    let malformed = target.malformed();
    if let Some((passenger, _)) = &malformed {
        batch.insert(2, passenger.clone());
    }
    let refs: Vec<&Passenger> = batch.iter().collect();
    let results = target.pusher().push(&refs).await;
    assert_eq!(results.len(), batch.len(), "one result per passenger");
    for (index, result) in results.iter().enumerate() {
        match (&malformed, index) {
            (Some((_, position)), 2) => {
                let error = result.as_ref().expect_err("the malformed passenger fails");
                assert!(!error.retryable, "permanently: {error}");
                assert!(
                    error.message.contains(position.as_str()),
                    "the failure names `{position}`: {error}"
                );
            }
            _ => assert!(result.is_ok(), "passenger {index}: {result:?}"),
        }
    }
    let good: Vec<Passenger> = batch
        .iter()
        .enumerate()
        .filter(|(index, _)| malformed.is_none() || *index != 2)
        .map(|(_, passenger)| passenger.clone())
        .collect();
    let mut expected = target.expected(&good);
    expected.sort();
    let mut delivered = target.delivered().await;
    delivered.sort();
    assert_eq!(delivered, expected, "the good passengers are delivered");

    // The process died before the queue recorded the deliveries: a new one pushes again.
    let refs: Vec<&Passenger> = good.iter().collect();
    let again = target.pusher().push(&refs).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    let mut delivered = target.delivered().await;
    delivered.sort();
    if target.at_least_once() {
        // Each copy names its passenger; none is lost and none is unrecognisable.
        delivered.dedup();
    }
    assert_eq!(
        delivered, expected,
        "a re-push delivers each passenger once"
    );

    if let Some((unreachable, system)) = target.unreachable() {
        let results = unreachable.push(&refs).await;
        assert_eq!(results.len(), refs.len());
        for result in results {
            unreachable_error(&result.expect_err("nothing is delivered"), &system);
        }
    }
}

/// Checks a connection type's `check`: ok with a description for `good`, a reason without the
/// secret for `unreachable` (whose definition holds [`SECRET`]).
pub async fn check_conforms(registry: &Registry, good: &Connection, unreachable: &Connection) {
    let dir = std::path::Path::new("/");
    let ok = registry.check_connection(good, dir).await;
    let description = ok.unwrap_or_else(|error| panic!("`{}` works: {error}", good.name));
    assert!(!description.is_empty());
    let error = registry
        .check_connection(unreachable, dir)
        .await
        .expect_err("an unreachable system fails its check");
    assert!(
        error.contains(&format!("`{}`", unreachable.name)),
        "the reason names the connection: {error}"
    );
    assert!(!error.contains(SECRET), "never the secret: {error}");
}

/// For table pushers: `count` chunks of one `(id integer, name text)` row each, ids from 1,
/// each chunk a load of its own.
pub fn table_chunks(count: usize) -> Vec<Passenger> {
    (1..=count).map(|id| table_chunk(&id.to_string())).collect()
}

/// For table pushers: a chunk whose integer `id` is `abc`, and the position its failure names.
pub fn malformed_chunk() -> (Passenger, String) {
    (table_chunk("abc"), "row 1, column `id`, value `abc`".into())
}

/// For table pushers: the ids of the rows of `passengers`, as [`PusherUnderTest::delivered`]
/// reads them back.
pub fn ids(passengers: &[Passenger]) -> Vec<String> {
    passengers
        .iter()
        .flat_map(|passenger| {
            let batch = records::read(&passenger.body).expect("a record batch");
            records::rows(&batch.data)
        })
        .map(|row| row[0].clone().expect("an id"))
        .collect()
}

fn table_chunk(id: &str) -> Passenger {
    use records::{BatchWriter, Column, ColumnType};
    let mut batch = BatchWriter::new(vec![
        Column::new("id", ColumnType::Integer),
        Column::new("name", ColumnType::Text),
    ]);
    batch.text(id);
    batch.text("Ann");
    batch.end_row();
    let load = uuid::Uuid::now_v7().to_string();
    let mut passenger = Passenger::pulled("test", format!("{load}:1")).with_body(batch.finish());
    records::Chunk {
        load,
        number: 1,
        last: true,
    }
    .mark(&mut passenger);
    passenger
}

fn unreachable_error(error: &StepError, system: &str) {
    assert!(
        error.retryable,
        "an unreachable system is retryable: {error}"
    );
    assert!(
        error.message.contains(system),
        "the error names `{system}`: {error}"
    );
    assert!(!error.message.contains(SECRET), "never the secret: {error}");
}

fn keys(passengers: &[Passenger]) -> BTreeSet<(String, String)> {
    passengers
        .iter()
        .map(|p| (p.source_system.clone(), p.external_id.clone()))
        .collect()
}
