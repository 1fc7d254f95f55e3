//! The `kafka` connectors against a real Kafka-protocol broker (`scripts/kafka-test-server.sh`,
//! started by `scripts/test.sh`; `FERRY_TEST_KAFKA` points elsewhere). Every test makes its
//! own topics and consumer groups.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, Passenger, Puller, PullerFactory, Pusher, PusherFactory, Seated};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use super::*;
use crate::conformance::{self, PullerUnderTest, PusherUnderTest, SECRET};

fn brokers() -> String {
    std::env::var("FERRY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

fn connection(name: &str) -> Connection {
    Connection {
        name: name.into(),
        kind: "kafka".into(),
        config: json!({ "brokers": brokers(), "timeout": "10s" })
            .as_object()
            .unwrap()
            .clone(),
        clients: vec!["acme".into()],
    }
}

/// A connection to nothing, with a password that must never show.
fn unreachable_connection() -> Connection {
    let mut connection = connection("kafka-down");
    connection.config = json!({
        "brokers": "127.0.0.1:1", "user": "ferry", "password": SECRET, "timeout": "2s"
    })
    .as_object()
    .unwrap()
    .clone();
    connection
}

fn context(connection: &Connection) -> BuildContext {
    BuildContext {
        client: "acme".into(),
        pipeline: "events".into(),
        connections: Arc::new(BTreeMap::from([(
            connection.name.clone(),
            connection.clone(),
        )])),
        ..BuildContext::default()
    }
}

fn puller(connection: &Connection, config: Value) -> Box<dyn Puller> {
    let config = ferry_core::component::parse_config(&config).expect("puller config");
    KafkaPullerFactory
        .build(config, &context(connection))
        .expect("a valid definition")
}

fn pusher(connection: &Connection, config: Value) -> Box<dyn Pusher> {
    let config = ferry_core::component::parse_config(&config).expect("pusher config");
    KafkaPusherFactory
        .build(config, &context(connection))
        .expect("a valid definition")
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<_> = client_config().create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
    for result in results {
        result.expect("topic created");
    }
}

/// Writes `count` messages `{prefix}-N` (key `kN`, header `origin: test`) to `topic`, one
/// record batch each: tansu 0.6 answers a fetch from an offset inside a batch with nothing, so
/// a consumer resuming mid-batch would wait for ever (a broker bug; Kafka returns the batch).
async fn produce(topic: &str, prefix: &str, count: usize) {
    let producer: FutureProducer = client_config()
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    let sends = (0..count).map(|n| {
        let producer = &producer;
        async move {
            let payload = format!("{prefix}-{n}");
            let key = format!("k{n}");
            let record = FutureRecord::to(topic).payload(&payload).key(&key).headers(
                OwnedHeaders::new().insert(Header {
                    key: "origin",
                    value: Some("test"),
                }),
            );
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    });
    futures::future::join_all(sends).await;
}

/// Every message of `topic`, as (payload, `ferry-id` header), read from the start until none
/// comes for 3 s. (tansu 0.6's high watermark is the last record batch's base offset + 1, so
/// it cannot tell how many messages a topic holds.)
fn consume_all(topic: &str) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::new();
    let mut idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(3) {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("message");
            let id = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == "ferry-id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
            messages.push((payload.into_owned(), id));
            idle = std::time::Instant::now();
        }
    }
    messages
}

fn seated(passengers: &[Passenger]) -> Vec<Seated> {
    passengers
        .iter()
        .map(|p| Seated {
            source_system: p.source_system.clone(),
            external_id: p.external_id.clone(),
            duplicate: false,
        })
        .collect()
}

struct Source {
    topic: String,
    group: String,
}

#[async_trait(?Send)]
impl PullerUnderTest for Source {
    async fn fill(&mut self, good: usize) -> Option<String> {
        create_topic(&self.topic, 1).await;
        produce(&self.topic, "m", good).await;
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        puller(
            &connection("events"),
            json!({
                "connection": "events", "topics": [self.topic], "group": self.group,
                "max_wait": "10s",
            }),
        )
    }

    async fn remaining(&self) -> Option<usize> {
        None
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let connection = unreachable_connection();
        let puller = puller(
            &connection,
            json!({ "connection": "kafka-down", "topics": [self.topic] }),
        );
        Some((puller, "kafka-down".into()))
    }
}

#[tokio::test]
async fn the_kafka_puller_conforms() {
    let mut source = Source {
        topic: unique("conform"),
        group: unique("group"),
    };
    conformance::puller_conforms(&mut source).await;
}

struct Target {
    topic: String,
}

#[async_trait(?Send)]
impl PusherUnderTest for Target {
    fn pusher(&self) -> Box<dyn Pusher> {
        pusher(
            &connection("events"),
            json!({
                "connection": "events", "topic": format!("{}{{metadata.suffix}}", self.topic),
                "key": "{external_id}", "headers": { "source": "{source_system}" },
            }),
        )
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count)
            .map(|n| {
                Passenger::pulled("test", format!("p{n}"))
                    .with_body(ferry_core::Body::json(&json!({ "n": n })))
            })
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        let mut passenger = Passenger::pulled("test", "bad");
        passenger.metadata.insert("suffix".into(), "/../etc".into());
        Some((passenger, format!("topic `{}/../etc`", self.topic)))
    }

    async fn delivered(&self) -> Vec<String> {
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || consume_all(&topic))
            .await
            .unwrap()
            .into_iter()
            .map(|(_, id)| id.expect("every message carries ferry-id"))
            .collect()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers.iter().map(|p| p.id.to_string()).collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let connection = unreachable_connection();
        let pusher = pusher(
            &connection,
            json!({ "connection": "kafka-down", "topic": self.topic }),
        );
        Some((pusher, "kafka-down".into()))
    }

    fn at_least_once(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_kafka_pusher_conforms() {
    let topic = unique("out");
    create_topic(&topic, 1).await;
    conformance::pusher_conforms(&mut Target { topic }).await;
}

#[tokio::test]
async fn the_kafka_connection_check_conforms() {
    conformance::check_conforms(
        &crate::registry(),
        &connection("events"),
        &unreachable_connection(),
    )
    .await;
}

#[tokio::test]
async fn messages_carry_their_kafka_metadata_and_the_position_is_seated_state() {
    let topic = unique("meta");
    create_topic(&topic, 1).await;
    produce(&topic, "m", 3).await;
    let group = unique("group");
    let config = json!({
        "connection": "events", "topics": [topic], "group": group, "max_wait": "10s",
        "media_type": "text/plain",
    });
    let mut first = puller(&connection("events"), config.clone());
    first.restore(None);
    let pulled = first.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 3);
    let passenger = &pulled.passengers[0];
    assert_eq!(passenger.metadata["kafka.topic"], topic);
    assert_eq!(passenger.metadata["kafka.partition"], "0");
    assert_eq!(passenger.metadata["kafka.offset"], "0");
    assert_eq!(passenger.metadata["kafka.key"], "k0");
    assert_eq!(passenger.metadata["kafka.header.origin"], "test");
    assert!(passenger.metadata.contains_key("kafka.timestamp"));
    assert!(passenger.external_id.starts_with(&format!("{topic}/0/0@")));
    assert_eq!(passenger.body.data.as_ref(), b"m-0");
    assert_eq!(passenger.body.media_type, "text/plain");
    assert_eq!(
        pulled.state.as_deref(),
        Some(puller::state_for_test(&[(&topic, 0, 3)]).as_str())
    );
    // Seated, but the process dies before the commit: the group's offset is still 0, yet a
    // new process starts at the seated position and reads nothing twice.
    drop(first);
    produce(&topic, "n", 2).await;
    let mut second = puller(&connection("events"), config);
    second.restore(pulled.state.clone());
    let again = second.pull(10).await.unwrap();
    let bodies: Vec<_> = again
        .passengers
        .iter()
        .map(|p| String::from_utf8_lossy(&p.body.data).into_owned())
        .collect();
    assert_eq!(bodies, ["n-0", "n-1"]);
}

#[tokio::test]
async fn a_second_member_joining_loses_and_doubles_nothing() {
    const MESSAGES: usize = 2_000;
    let topic = unique("rebalance");
    create_topic(&topic, 4).await;
    produce(&topic, "m", MESSAGES).await;
    let group = unique("group");
    let config = json!({
        "connection": "events", "topics": [topic], "group": group, "max_wait": "2s",
    });
    let mut first = puller(&connection("events"), config.clone());
    let mut second = puller(&connection("events"), config);
    first.restore(None);
    second.restore(None);
    let mut seen: Vec<String> = Vec::new();
    // The first member reads alone for a while, acknowledging each pull.
    while seen.len() < MESSAGES / 4 {
        let pulled = first.pull(100).await.unwrap();
        first.ack(&seated(&pulled.passengers)).await.unwrap();
        seen.extend(pulled.passengers.iter().map(|p| p.external_id.clone()));
    }
    // Then the second joins; both pull in turn until everything is read.
    let mut idle = 0;
    while seen.len() < MESSAGES && idle < 20 {
        let mut found = 0;
        for member in [&mut first, &mut second] {
            let pulled = member.pull(100).await.unwrap();
            member.ack(&seated(&pulled.passengers)).await.unwrap();
            found += pulled.passengers.len();
            seen.extend(pulled.passengers.iter().map(|p| p.external_id.clone()));
        }
        idle = if found == 0 { idle + 1 } else { 0 };
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), MESSAGES, "nothing lost");
    assert_eq!(seen.len(), MESSAGES, "nothing read twice");
}

#[tokio::test]
async fn a_bad_definition_is_refused_at_its_key() {
    let ctx = context(&connection("events"));
    let build = |config: Value| {
        let config = ferry_core::component::parse_config(&config)?;
        KafkaPullerFactory.build(config, &ctx).map(drop)
    };
    let error = build(json!({ "connection": "events", "topics": [] })).unwrap_err();
    assert_eq!(error.path, ["topics"]);
    let error =
        build(json!({ "connection": "events", "topics": ["ok", "no spaces"] })).unwrap_err();
    assert_eq!(error.path, ["topics", "1"]);
    assert!(error.message.contains("not a topic name"), "{error}");
    let error = build(json!({ "connection": "nope", "topics": ["a"] })).unwrap_err();
    assert_eq!(error.path, ["connection"]);
    let error =
        build(json!({ "connection": "events", "topics": ["a"], "max_wait": "soon" })).unwrap_err();
    assert_eq!(error.path, ["max_wait"]);
    let pusher_error = |config: Value| {
        let config = ferry_core::component::parse_config(&config).unwrap();
        KafkaPusherFactory
            .build(config, &ctx)
            .map(drop)
            .unwrap_err()
    };
    let error = pusher_error(json!({ "connection": "events", "topic": "{nothing}" }));
    assert_eq!(error.path, ["topic"]);
    let error = pusher_error(
        json!({ "connection": "events", "topic": "t", "headers": { "ferry-id": "x" } }),
    );
    assert_eq!(error.path, ["headers", "ferry-id"]);
    let mut broken = connection("events");
    broken.config.insert("brokers".into(), json!("localhost"));
    let error = KafkaConnection::read(&broken).unwrap_err();
    assert_eq!(error.path, ["brokers"]);
    assert!(error.message.contains("no port"), "{error}");
}

#[tokio::test]
async fn a_message_too_large_fails_alone_and_permanently() {
    let topic = unique("large");
    create_topic(&topic, 1).await;
    let pusher = pusher(
        &connection("events"),
        json!({ "connection": "events", "topic": topic }),
    );
    let small = Passenger::pulled("test", "small").with_body(ferry_core::Body::json(&json!(1)));
    let mut large = Passenger::pulled("test", "large");
    large.body.data = bytes::Bytes::from(vec![b'x'; 2_000_000]);
    let results = pusher.push(&[&small, &large]).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let error = results[1].as_ref().unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains(&topic), "{error}");
}
