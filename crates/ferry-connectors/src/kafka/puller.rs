//! The `kafka` puller: a member of a consumer group that seats what it reads and commits the
//! group's offsets only after that.
//!
//! Where each partition stands (the next offset to read, of what is seated) is the puller's
//! state, written in the transaction that seats the messages; the group's committed offsets
//! follow in `ack`. When partitions are assigned, each starts at the later of the two, so a
//! crash between seat and commit re-reads nothing, and a partition another member moved on
//! starts where that member left it. When partitions are revoked, what is seated of them is
//! committed and what was read but not yet seated is given back (left out of the pull), for
//! the member that gets them next. Out-of-order completion cannot commit past an open
//! message: a pull is seated whole, so the committed offset is always a contiguous watermark.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferry_core::{
    BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Seated, StepError,
};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::config::{KafkaConnection, KafkaPullerConfig, Start};
use super::{connection_of, describe, unreachable};

/// After the first message, a pull takes what arrives within this pause of the last one.
const LINGER: Duration = Duration::from_millis(5);

/// A partition: topic and number.
type Partition = (String, i32);

/// The puller's state in the store: the next offset to read per `topic/partition`.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    next: BTreeMap<String, i64>,
}

/// Builds `kafka` pullers.
pub struct KafkaPullerFactory;

impl PullerFactory for KafkaPullerFactory {
    const TYPE: &'static str = "kafka";
    type Config = KafkaPullerConfig;

    fn build(
        &self,
        config: KafkaPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let connection = connection_of(ctx, "connection", &config.connection, "puller")?;
        let max_wait = config.validate()?;
        let group = config
            .group
            .clone()
            .unwrap_or_else(|| format!("ferry-{}-{}", ctx.client, ctx.pipeline));
        Ok(Box::new(KafkaPuller {
            source_system: format!("kafka:{}", connection.name),
            connection,
            topics: config.topics,
            group,
            start: config.start,
            max_wait,
            media_type: config.media_type,
            consumer: None,
            positions: Arc::default(),
            pulled: BTreeMap::new(),
        }))
    }
}

/// Reads a consumer group's topics.
pub struct KafkaPuller {
    connection: KafkaConnection,
    source_system: String,
    topics: Vec<String>,
    group: String,
    start: Start,
    max_wait: Duration,
    media_type: Option<String>,
    consumer: Option<StreamConsumer<Member>>,
    /// Shared with the consumer's rebalance callbacks.
    positions: Arc<Mutex<Positions>>,
    /// Where the last pull leaves each partition it read from; seated once `ack` comes.
    pulled: BTreeMap<Partition, i64>,
}

/// What the rebalance callbacks and the puller share.
#[derive(Default)]
struct Positions {
    /// The next offset to read per partition, of what is seated.
    seated: BTreeMap<Partition, i64>,
    /// Counts the revocations; a message read before one of its partition's is given back.
    generation: u64,
    /// The revocations since the pull last looked: the generation each began and what it
    /// took away.
    revoked: Vec<(u64, HashSet<Partition>)>,
}

/// The consumer's context: rebalances start partitions at the seated position and commit
/// what is seated of the partitions taken away.
struct Member {
    positions: Arc<Mutex<Positions>>,
    timeout: Duration,
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.commit_ahead(consumer, tpl);
                match cooperative {
                    true => consumer.incremental_assign(tpl),
                    false => consumer.assign(tpl),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.commit_seated(consumer, tpl);
                match cooperative {
                    true => consumer.incremental_unassign(tpl),
                    false => consumer.unassign(),
                }
            }
            other => {
                tracing::warn!(error = ?other, "kafka: rebalance failed; partitions given back");
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "kafka: cannot change the assignment");
        }
    }
}

impl Member {
    /// Commits, before the assigned partitions are read, each one's seated position where it
    /// is ahead of the group's committed offset (a crash came between seat and commit), so the
    /// partition starts where ferry's store says. A position behind the group's (another member
    /// moved on) is left alone.
    fn commit_ahead(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let seated = self.positions.lock().expect("positions").seated.clone();
        if !tpl
            .elements()
            .iter()
            .any(|e| seated.contains_key(&(e.topic().to_string(), e.partition())))
        {
            return;
        }
        let committed = match consumer.committed_offsets(tpl.clone(), self.timeout) {
            Ok(committed) => committed,
            Err(error) => {
                // Without the group's offsets, the seated position is the better guess.
                tracing::warn!(%error, "kafka: cannot read the committed offsets");
                TopicPartitionList::new()
            }
        };
        let mut ahead = TopicPartitionList::new();
        for element in tpl.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Some(&next) = seated.get(&(topic.to_string(), partition)) else {
                continue;
            };
            let at = committed
                .find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            if at.is_none_or(|at| at < next) {
                let _ = ahead.add_partition_offset(topic, partition, Offset::Offset(next));
            }
        }
        if ahead.count() > 0
            && let Err(error) = consumer.commit(&ahead, CommitMode::Sync)
        {
            // The partition starts at the group's offset; the queue drops what it holds.
            tracing::warn!(%error, "kafka: cannot commit the seated offsets");
        }
    }

    /// Commits, synchronously, what is seated of the partitions being taken away, and tells
    /// the pull to give back what it read of them.
    fn commit_seated(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let mut positions = self.positions.lock().expect("positions");
        let mut commit = TopicPartitionList::new();
        let mut taken = HashSet::new();
        for element in tpl.elements() {
            let partition = (element.topic().to_string(), element.partition());
            if let Some(&next) = positions.seated.get(&partition) {
                let _ =
                    commit.add_partition_offset(&partition.0, partition.1, Offset::Offset(next));
            }
            taken.insert(partition);
        }
        positions.generation += 1;
        let generation = positions.generation;
        positions.revoked.push((generation, taken));
        drop(positions);
        if commit.count() > 0
            && let Err(error) = consumer.commit(&commit, CommitMode::Sync)
        {
            // The seated positions stay in ferry's store; the next member may read them
            // again, and its queue drops what it already holds.
            tracing::warn!(%error, "kafka: cannot commit the revoked partitions' offsets");
        }
    }
}

impl KafkaPuller {
    /// The group member, joined on first use.
    fn consumer(&mut self) -> Result<&StreamConsumer<Member>, StepError> {
        if self.consumer.is_none() {
            let mut config = self.connection.client_config();
            config
                .set("group.id", &self.group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set(
                    "auto.offset.reset",
                    match self.start {
                        Start::Earliest => "earliest",
                        Start::Latest => "latest",
                    },
                );
            let member = Member {
                positions: self.positions.clone(),
                timeout: self.connection.timeout,
            };
            let consumer: StreamConsumer<Member> = config
                .create_with_context(member)
                .map_err(|e| StepError::permanent(describe(&self.connection, &e)))?;
            // librdkafka connects in the background; ask once so an unreachable cluster fails
            // the pull instead of returning nothing forever.
            consumer
                .fetch_metadata(Some(&self.topics[0]), self.connection.timeout)
                .map_err(|e| unreachable(&self.connection, &e))?;
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|e| StepError::permanent(describe(&self.connection, &e)))?;
            self.consumer = Some(consumer);
        }
        Ok(self.consumer.as_ref().expect("consumer"))
    }

    /// Leaves the group; the next pull joins again and starts at the seated positions.
    fn rejoin(&mut self) {
        self.consumer = None;
        self.pulled.clear();
        self.positions.lock().expect("positions").revoked.clear();
    }
}

#[async_trait]
impl Puller for KafkaPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        if !self.pulled.is_empty() {
            // The last pull was never seated (the store failed): read it again.
            self.rejoin();
        }
        let source_system = self.source_system.clone();
        let media_type = self.media_type.clone();
        let max_wait = self.max_wait;
        let connection = self.connection.clone();
        let positions = self.positions.clone();
        let consumer = self.consumer()?;
        // Each message with its partition, offset and the generation it was read in.
        let mut read: Vec<(Partition, i64, u64, Passenger)> = Vec::new();
        let mut failure = None;
        let deadline = Instant::now() + max_wait;
        while read.len() < max {
            let wait = match read.is_empty() {
                true => deadline.saturating_duration_since(Instant::now()),
                false => LINGER,
            };
            if wait.is_zero() {
                break;
            }
            match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => break,
                Ok(Ok(message)) => {
                    // A revocation is handled within `recv`, before the messages fetched
                    // after it: this message belongs to the generation as it is now.
                    let generation = positions.lock().expect("positions").generation;
                    let partition = (message.topic().to_string(), message.partition());
                    let passenger = passenger(&message, &source_system, media_type.as_deref());
                    read.push((partition, message.offset(), generation, passenger));
                }
                Ok(Err(error)) => {
                    // librdkafka reconnects by itself; a pull with nothing to show says why.
                    failure = Some(unreachable(&connection, &error));
                    break;
                }
            }
        }
        // Messages of a partition taken away after they were read go back: the partition's
        // next member (perhaps this one again) reads them from the committed offset.
        let revoked = std::mem::take(&mut self.positions.lock().expect("positions").revoked);
        read.retain(|(partition, _, read_in, _)| {
            !revoked
                .iter()
                .any(|(generation, taken)| generation > read_in && taken.contains(partition))
        });
        let mut pulled: BTreeMap<Partition, i64> = BTreeMap::new();
        for (partition, offset, _, _) in &read {
            let next = pulled.entry(partition.clone()).or_default();
            *next = (*next).max(offset + 1);
        }
        if read.is_empty()
            && let Some(error) = failure
        {
            return Err(error);
        }
        let more = read.len() >= max;
        let state = match pulled.is_empty() {
            true => None,
            false => {
                let mut next = self.positions.lock().expect("positions").seated.clone();
                next.extend(pulled.iter().map(|(p, &o)| (p.clone(), o)));
                Some(state_of(&next))
            }
        };
        self.pulled = pulled;
        Ok(Pulled {
            passengers: read.into_iter().map(|(.., passenger)| passenger).collect(),
            failures: Vec::new(),
            more,
            state,
        })
    }

    async fn ack(&mut self, _seated: &[Seated]) -> Result<(), StepError> {
        let pulled = std::mem::take(&mut self.pulled);
        if pulled.is_empty() {
            return Ok(());
        }
        self.positions
            .lock()
            .expect("positions")
            .seated
            .extend(pulled.iter().map(|(p, &o)| (p.clone(), o)));
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let mut commit = TopicPartitionList::new();
        for ((topic, partition), next) in &pulled {
            commit
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| StepError::retryable(describe(&self.connection, &e)))?;
        }
        // Asynchronous: the seated position is already in ferry's store, and the next
        // assignment starts from it whether or not this commit arrived.
        consumer
            .commit(&commit, CommitMode::Async)
            .map_err(|e| StepError::retryable(describe(&self.connection, &e)))
    }

    fn restore(&mut self, state: Option<String>) {
        let seated = match state.as_deref().map(serde_json::from_str::<State>) {
            Some(Ok(state)) => partitions_of(&state),
            Some(Err(error)) => {
                tracing::warn!(%error, "kafka: unreadable puller state; using the group's offsets");
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        let mut positions = self.positions.lock().expect("positions");
        if positions.seated != seated {
            // Not where this member believes it stands (a new process, or a seat that
            // failed): join again, so each partition starts at the seated position.
            positions.seated = seated;
            drop(positions);
            self.rejoin();
        }
    }
}

/// The passenger of one message.
fn passenger(
    message: &BorrowedMessage<'_>,
    source_system: &str,
    media_type: Option<&str>,
) -> Passenger {
    let timestamp = message.timestamp().to_millis();
    // The offset names the message; its timestamp tells a message of a recreated topic,
    // which starts again at offset 0, from the one seated before.
    let external_id = match timestamp {
        Some(millis) => format!(
            "{}/{}/{}@{millis}",
            message.topic(),
            message.partition(),
            message.offset()
        ),
        None => format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        ),
    };
    let mut passenger = Passenger::pulled(source_system, external_id);
    let metadata = &mut passenger.metadata;
    metadata.insert("kafka.topic".into(), message.topic().to_string());
    metadata.insert("kafka.partition".into(), message.partition().to_string());
    metadata.insert("kafka.offset".into(), message.offset().to_string());
    if let Some(key) = message.key() {
        metadata.insert(
            "kafka.key".into(),
            String::from_utf8_lossy(key).into_owned(),
        );
    }
    if let Some(at) = timestamp.and_then(chrono::DateTime::from_timestamp_millis) {
        metadata.insert("kafka.timestamp".into(), at.to_rfc3339());
    }
    let mut content_type = None;
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if header.key.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.clone());
            }
            metadata.insert(format!("kafka.header.{}", header.key), value);
        }
    }
    passenger.body.media_type = media_type
        .map(String::from)
        .or(content_type)
        .unwrap_or_else(|| "application/octet-stream".into());
    passenger.body.data = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
    passenger
}

fn state_of(next: &BTreeMap<Partition, i64>) -> String {
    let state = State {
        next: next
            .iter()
            .map(|((topic, partition), offset)| (format!("{topic}/{partition}"), *offset))
            .collect(),
    };
    serde_json::to_string(&state).expect("state serializes")
}

fn partitions_of(state: &State) -> BTreeMap<Partition, i64> {
    state
        .next
        .iter()
        .filter_map(|(key, &offset)| {
            let (topic, partition) = key.rsplit_once('/')?;
            Some(((topic.to_string(), partition.parse().ok()?), offset))
        })
        .collect()
}

#[cfg(test)]
pub(super) fn state_for_test(next: &[(&str, i32, i64)]) -> String {
    state_of(
        &next
            .iter()
            .map(|&(t, p, o)| ((t.to_string(), p), o))
            .collect(),
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn state_round_trips_topics_with_dots_and_dashes() {
        let text = state_for_test(&[("orders.v1-eu", 3, 42), ("b", 0, 1)]);
        let state: State = serde_json::from_str(&text).unwrap();
        let partitions = partitions_of(&state);
        assert_eq!(partitions[&("orders.v1-eu".to_string(), 3)], 42);
        assert_eq!(partitions[&("b".to_string(), 0)], 1);
    }
}
