//! The `rabbitmq` connection, puller and pusher against the machine's RabbitMQ
//! (`FERRY_TEST_AMQP`, default `amqp://127.0.0.1:5672`, guest/guest). Every test makes its own
//! queue (a UUID in its name) and deletes it at the end. Recovery is tested by closing ferry's
//! connection from the broker's side (`rabbitmqctl close_connection`), never by restarting the
//! shared broker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::{
    Body, BuildContext, Passenger, Pulled, Puller, PullerFactory, Pusher, PusherFactory, Seated,
};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use serde_json::{Value, json};

use super::*;
use crate::conformance::{self, PullerUnderTest, PusherUnderTest, SECRET};

fn url() -> String {
    std::env::var("FERRY_TEST_AMQP").unwrap_or_else(|_| "amqp://127.0.0.1:5672".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// The connection `name` to the test broker.
fn connection(name: &str) -> Connection {
    connection_with(
        name,
        json!({ "url": url(), "user": "guest", "password": "guest", "connect_timeout": "5s" }),
    )
}

fn connection_with(name: &str, config: Value) -> Connection {
    Connection {
        name: name.into(),
        kind: "rabbitmq".into(),
        config: config.as_object().unwrap().clone(),
        clients: vec!["acme".into()],
    }
}

/// A connection nothing listens at, whose password is the harness's secret.
fn unreachable() -> Connection {
    connection_with(
        "rabbit",
        json!({ "url": "amqp://127.0.0.1:1", "user": "guest", "password": SECRET,
                "connect_timeout": "2s" }),
    )
}

fn context(connection: &Connection, pipeline: &str) -> BuildContext {
    BuildContext {
        client: "acme".into(),
        pipeline: pipeline.into(),
        component: "rabbit".into(),
        connections: Arc::new(BTreeMap::from([(
            connection.name.clone(),
            connection.clone(),
        )])),
        ..BuildContext::default()
    }
}

fn build_puller(
    connection: &Connection,
    pipeline: &str,
    config: Value,
) -> Result<Box<dyn Puller>, ferry_core::BuildError> {
    let config = ferry_core::component::parse_config(&config)?;
    RabbitmqPullerFactory.build(config, &context(connection, pipeline))
}

fn build_pusher(
    connection: &Connection,
    config: Value,
) -> Result<Box<dyn Pusher>, ferry_core::BuildError> {
    let config = ferry_core::component::parse_config(&config)?;
    RabbitmqPusherFactory.build(config, &context(connection, "out"))
}

/// A test queue on the broker, with a side connection of the test's own to fill and read it.
struct TestQueue {
    name: String,
    amqp: lapin::Connection,
    channel: Channel,
}

impl TestQueue {
    async fn new() -> TestQueue {
        let name = unique("ferry-test");
        let uri = url().parse().unwrap();
        let amqp = lapin::Connection::connect_uri(uri, Default::default())
            .await
            .expect("the test RabbitMQ runs");
        let channel = amqp.create_channel().await.unwrap();
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestQueue {
            name,
            amqp,
            channel,
        }
    }

    /// Publishes `body` to the queue with these properties, waiting for nothing.
    async fn publish(&self, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                self.name.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap();
    }

    /// Publishes `count` messages `m0`, `m1`, … each with its message id `id-N`.
    async fn fill(&self, count: usize) {
        for index in 0..count {
            let properties = BasicProperties::default()
                .with_message_id(format!("{}-id-{index}", self.name).into());
            self.publish(format!("m{index}").as_bytes(), properties)
                .await;
        }
    }

    /// Messages in the queue, ready or delivered and not yet acknowledged (`rabbitmqctl`: a
    /// passive declare counts only the ready ones).
    async fn messages(&self) -> usize {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages",
            ])
            .output()
            .await
            .expect("rabbitmqctl runs");
        let listing = String::from_utf8_lossy(&output.stdout);
        for line in listing.lines() {
            let mut fields = line.split_whitespace();
            if fields.next() == Some(self.name.as_str()) {
                return fields.next().unwrap().parse().unwrap();
            }
        }
        panic!("queue {} not listed: {listing}", self.name)
    }

    /// The message ids of what the queue holds, read without taking anything away (the reads
    /// are not acknowledged, and closing the channel requeues them).
    async fn message_ids(&self) -> Vec<String> {
        let channel = self.amqp.create_channel().await.unwrap();
        let mut ids = Vec::new();
        while let Some(message) = channel
            .basic_get(self.name.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            let id = message.delivery.properties.message_id().clone();
            ids.push(id.map(|id| id.to_string()).unwrap_or_default());
        }
        channel.close(200, "read".into()).await.unwrap();
        ids
    }

    async fn delete(&self) {
        let _ = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// The process ids of the broker's connections whose client properties mention `marker` (the
/// pipeline in ferry's connection name).
async fn connection_pids(marker: &str) -> Vec<String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(marker))
        .map(|line| line.split('\t').next().unwrap().to_string())
        .collect()
}

/// Closes, from the broker's side, every connection whose client properties mention `marker`;
/// returns how many it closed.
async fn close_connections(marker: &str) -> usize {
    let pids = connection_pids(marker).await;
    for pid in &pids {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by ferry's test"])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "closing `{pid}`: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    pids.len()
}

fn seated(pulled: &Pulled) -> Vec<Seated> {
    pulled
        .passengers
        .iter()
        .map(|passenger| Seated {
            source_system: passenger.source_system.clone(),
            external_id: passenger.external_id.clone(),
            duplicate: false,
        })
        .collect()
}

fn ids(pulled: &Pulled) -> BTreeSet<String> {
    pulled
        .passengers
        .iter()
        .map(|passenger| passenger.external_id.clone())
        .collect()
}

/// Pulls until `count` passengers came or ten pulls found nothing more.
async fn pull_until(puller: &mut dyn Puller, count: usize) -> Pulled {
    let mut all = Pulled::default();
    for _ in 0..10 {
        let pulled = puller.pull(count - all.passengers.len()).await.unwrap();
        all.passengers.extend(pulled.passengers);
        if all.passengers.len() >= count {
            break;
        }
    }
    all
}

/// The harness's source: a queue of messages with message ids. Its `remaining` counts what is
/// ready and what is delivered but unacknowledged, so an ack shows as a message gone.
struct Source {
    queue: TestQueue,
    connection: Connection,
}

#[async_trait::async_trait(?Send)]
impl PullerUnderTest for Source {
    async fn fill(&mut self, good: usize) -> Option<String> {
        self.queue.fill(good).await;
        // Every message is well-formed to a queue: decoding is the `decode` processor's job.
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        let config = json!({ "connection": "rabbit", "queue": self.queue.name, "max_wait": "3s" });
        build_puller(&self.connection, "in", config).unwrap()
    }

    async fn remaining(&self) -> Option<usize> {
        Some(self.queue.messages().await)
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let config = json!({ "connection": "rabbit", "queue": self.queue.name });
        let puller = build_puller(&unreachable(), "in", config).unwrap();
        Some((puller, "127.0.0.1:1".into()))
    }
}

#[tokio::test]
async fn rabbitmq_puller_conforms() {
    let mut source = Source {
        queue: TestQueue::new().await,
        connection: connection("rabbit"),
    };
    conformance::puller_conforms(&mut source).await;
    source.queue.delete().await;
}

/// The harness's target: a queue bound by the default exchange, read by message id. A message
/// pushed again after a crash is a second copy in the queue (RabbitMQ does not de-duplicate);
/// it carries the same `message_id`, by which a consumer (a ferry puller among them) drops it,
/// so the target lists distinct message ids. `rabbitmq_repush_is_a_copy_with_the_same_message_id`
/// shows the copies.
struct Target {
    queue: TestQueue,
}

#[async_trait::async_trait(?Send)]
impl PusherUnderTest for Target {
    fn pusher(&self) -> Box<dyn Pusher> {
        let config = json!({ "connection": "rabbit", "routing_key": "{metadata.queue}" });
        build_pusher(&connection("rabbit"), config).unwrap()
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count)
            .map(|index| {
                let mut passenger = Passenger::pulled("test", index.to_string())
                    .with_body(Body::json(&json!({ "n": index })));
                passenger
                    .metadata
                    .insert("queue".into(), self.queue.name.clone());
                passenger
            })
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        let mut passenger = Passenger::pulled("test", "lost");
        let nowhere = unique("nowhere");
        passenger.metadata.insert("queue".into(), nowhere.clone());
        Some((
            passenger,
            format!("no queue bound for routing key `{nowhere}`"),
        ))
    }

    async fn delivered(&self) -> Vec<String> {
        self.queue.message_ids().await
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers.iter().map(|p| p.id.to_string()).collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let config = json!({ "connection": "rabbit", "routing_key": "x" });
        let pusher = build_pusher(&unreachable(), config).unwrap();
        Some((pusher, "127.0.0.1:1".into()))
    }

    fn at_least_once(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn rabbitmq_pusher_conforms() {
    let mut target = Target {
        queue: TestQueue::new().await,
    };
    conformance::pusher_conforms(&mut target).await;
    target.queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_check_conforms() {
    conformance::check_conforms(&crate::registry(), &connection("rabbit"), &unreachable()).await;
    // The alias is the same type.
    let mut aliased = connection("rabbit");
    aliased.kind = "amqp".into();
    let description = crate::registry()
        .check_connection(&aliased, "/".as_ref())
        .await
        .unwrap();
    assert!(description.contains("127.0.0.1:5672"), "{description}");
}

#[tokio::test]
async fn rabbitmq_redelivery_after_a_puller_dropped_without_ack() {
    let queue = TestQueue::new().await;
    queue.fill(3).await;
    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s" });
    let connection = connection("rabbit");

    let mut first = build_puller(&connection, "in", config.clone()).unwrap();
    let crashed = pull_until(first.as_mut(), 3).await;
    assert_eq!(crashed.passengers.len(), 3);
    assert!(
        crashed
            .passengers
            .iter()
            .all(|p| p.metadata["amqp.redelivered"] == "false")
    );
    drop(first);

    let mut second = build_puller(&connection, "in", config).unwrap();
    let again = pull_until(second.as_mut(), 3).await;
    assert_eq!(
        ids(&again),
        ids(&crashed),
        "the same messages, the same keys"
    );
    assert!(
        again
            .passengers
            .iter()
            .all(|p| p.metadata["amqp.redelivered"] == "true")
    );
    second.ack(&seated(&again)).await.unwrap();
    assert_eq!(queue.messages().await, 0, "acknowledged after the re-pull");
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_puller_recovers_after_its_connection_is_closed_by_the_broker() {
    let queue = TestQueue::new().await;
    queue.fill(4).await;
    let pipeline = unique("recover");
    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s" });
    let mut puller = build_puller(&connection("rabbit"), &pipeline, config).unwrap();

    let before = pull_until(puller.as_mut(), 2).await;
    assert_eq!(before.passengers.len(), 2);
    assert_eq!(close_connections(&pipeline).await, 1, "ferry's connection");
    // Seated, but the channel its tags belong to is gone: the ack skips them (the broker has
    // requeued them) instead of failing or closing the next channel with "unknown delivery tag".
    puller.ack(&seated(&before)).await.unwrap();

    // The next pull reconnects and is offered all four again, the first two under their keys.
    let mut after = Pulled::default();
    for _ in 0..10 {
        match puller.pull(4).await {
            Ok(pulled) => after.passengers.extend(pulled.passengers),
            Err(error) => {
                assert!(error.retryable, "{error}");
                assert!(error.message.contains("`rabbit`"), "{error}");
            }
        }
        if after.passengers.len() >= 4 {
            break;
        }
    }
    assert_eq!(after.passengers.len(), 4);
    assert!(ids(&before).is_subset(&ids(&after)));
    puller.ack(&seated(&after)).await.unwrap();
    // The new channel took the ack: nothing left, and the puller still works.
    assert_eq!(queue.messages().await, 0);
    queue.fill(1).await;
    let last = pull_until(puller.as_mut(), 1).await;
    assert_eq!(last.passengers.len(), 1);
    puller.ack(&seated(&last)).await.unwrap();
    assert_eq!(queue.messages().await, 0);
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_ack_after_a_reconnect_sends_no_stale_delivery_tag() {
    let queue = TestQueue::new().await;
    // Without message ids: the redelivered copies come under new keys, so only the channel
    // generation tells the old deliveries from the new ones.
    for n in 0..4 {
        queue
            .publish(format!("m{n}").as_bytes(), BasicProperties::default())
            .await;
    }
    let pipeline = unique("stale");
    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s" });
    let mut puller = build_puller(&connection("rabbit"), &pipeline, config).unwrap();
    let old = pull_until(puller.as_mut(), 4).await;
    assert_eq!(old.passengers.len(), 4, "tags 1 to 4 of the first channel");
    let (done, open) = old.passengers.split_at(2);
    let seat = |passengers: &[Passenger]| -> Vec<Seated> {
        passengers
            .iter()
            .map(|p| Seated {
                source_system: p.source_system.clone(),
                external_id: p.external_id.clone(),
                duplicate: false,
            })
            .collect()
    };
    puller.ack(&seat(done)).await.unwrap();
    assert_eq!(close_connections(&pipeline).await, 1);

    // The new channel redelivers the two open ones as its tags 1 and 2; the old tags 3 and 4
    // are seated now. Acking them on the new channel would close it ("unknown delivery tag"),
    // and the puller would have to reconnect once more.
    let mut first = Pulled::default();
    while first.passengers.is_empty() {
        if let Ok(pulled) = puller.pull(1).await {
            first = pulled;
        }
    }
    let connected = connection_pids(&pipeline).await;
    assert_eq!(connected.len(), 1);
    puller.ack(&seat(open)).await.unwrap();
    puller.ack(&seated(&first)).await.unwrap();
    let rest = pull_until(puller.as_mut(), 1).await;
    assert_eq!(rest.passengers.len(), 1);
    puller.ack(&seated(&rest)).await.unwrap();
    assert_eq!(
        queue.messages().await,
        0,
        "every ack reached the live channel"
    );
    assert_eq!(
        connection_pids(&pipeline).await,
        connected,
        "the channel survived the acks: no reconnect"
    );
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_ack_acknowledges_only_what_was_seated() {
    let queue = TestQueue::new().await;
    queue.fill(4).await;
    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s" });
    let mut puller = build_puller(&connection("rabbit"), "in", config).unwrap();
    let first = pull_until(puller.as_mut(), 2).await;
    let second = pull_until(puller.as_mut(), 2).await;
    // The later pull is seated first: a `multiple` ack on its highest tag would take the
    // earlier, unseated messages along.
    puller.ack(&seated(&second)).await.unwrap();
    assert_eq!(queue.messages().await, 2, "only the seated two are gone");
    puller.ack(&seated(&first)).await.unwrap();
    puller.ack(&seated(&first)).await.unwrap();
    assert_eq!(queue.messages().await, 0);
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_puller_keeps_properties_as_metadata() {
    let queue = TestQueue::new().await;
    let mut headers = FieldTable::default();
    headers.insert(
        "country".into(),
        AMQPValue::LongString(LongString::from("NL")),
    );
    headers.insert(
        "bytes".into(),
        AMQPValue::LongString(LongString::from(vec![0xff, b'a'])),
    );
    headers.insert("attempt".into(), AMQPValue::LongInt(3));
    let properties = BasicProperties::default()
        .with_message_id("order-1".into())
        .with_content_type("application/json".into())
        .with_headers(headers);
    queue.publish(br#"{"a":1}"#, properties).await;
    queue.publish(b"raw", BasicProperties::default()).await;

    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s" });
    let mut puller = build_puller(&connection("rabbit"), "in", config).unwrap();
    let pulled = pull_until(puller.as_mut(), 2).await;
    let (first, second) = (&pulled.passengers[0], &pulled.passengers[1]);
    assert_eq!(first.source_system, "rabbitmq:rabbit");
    assert_eq!(first.external_id, "order-1");
    assert_eq!(first.body.media_type, "application/json");
    assert_eq!(first.body.data.as_ref(), br#"{"a":1}"#);
    assert_eq!(first.metadata["amqp.message_id"], "order-1");
    assert_eq!(first.metadata["amqp.exchange"], "");
    assert_eq!(first.metadata["amqp.routing_key"], queue.name);
    assert_eq!(first.metadata["amqp.header.country"], "NL");
    assert_eq!(first.metadata["amqp.header.bytes"], "\u{fffd}a");
    assert_eq!(first.metadata["amqp.header.attempt"], "3");
    assert!(!first.metadata.contains_key("amqp.delivery_tag"));
    // No message id: a fresh one (at-least-once).
    assert!(uuid::Uuid::parse_str(&second.external_id).is_ok());
    assert_eq!(second.body.media_type, "application/octet-stream");
    assert!(!second.metadata.contains_key("amqp.message_id"));
    puller.ack(&seated(&pulled)).await.unwrap();
    // Gone, so that the next message goes to the next puller.
    drop(puller);

    // `media_type:` overrides the property.
    queue
        .publish(
            b"<a/>",
            BasicProperties::default().with_content_type("text/plain".into()),
        )
        .await;
    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s",
                         "media_type": "application/xml" });
    let mut puller = build_puller(&connection("rabbit"), "in", config).unwrap();
    let pulled = pull_until(puller.as_mut(), 1).await;
    assert_eq!(pulled.passengers[0].body.media_type, "application/xml");
    puller.ack(&seated(&pulled)).await.unwrap();
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_puller_needs_the_queue_unless_it_declares_it() {
    let name = unique("ferry-absent");
    let config = json!({ "connection": "rabbit", "queue": name, "max_wait": "100ms" });
    let mut puller = build_puller(&connection("rabbit"), "in", config).unwrap();
    let error = puller.pull(10).await.unwrap_err();
    assert!(error.retryable);
    assert!(error.message.contains(&name), "{error}");
    assert!(error.message.contains("declare: true"), "{error}");

    let config = json!({ "connection": "rabbit", "queue": name, "max_wait": "100ms",
                         "declare": true });
    let mut puller = build_puller(&connection("rabbit"), "in", config).unwrap();
    let pulled = puller.pull(10).await.unwrap();
    assert!(pulled.passengers.is_empty());
    assert!(!pulled.more);
    let queue = TestQueue::new().await;
    let _ = queue
        .channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_unroutable_or_too_big_message_fails_permanently() {
    let queue = TestQueue::new().await;
    let config = json!({ "connection": "rabbit", "exchange": "amq.direct",
                         "routing_key": "{metadata.key}", "headers": { "origin": "{source_system}" } });
    let pusher = build_pusher(&connection("rabbit"), config).unwrap();
    let mut lost = Passenger::pulled("test", "1");
    lost.metadata.insert("key".into(), "nobody-listens".into());
    let results = pusher.push(&[&lost]).await;
    let error = results[0].as_ref().unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(
        error
            .message
            .contains("no queue bound for routing key `nobody-listens` on exchange `amq.direct`"),
        "{error}"
    );

    // Too big for `max_size`: refused before it is sent, alone.
    let config = json!({ "connection": "rabbit", "routing_key": queue.name, "max_size": "1KB" });
    let pusher = build_pusher(&connection("rabbit"), config).unwrap();
    let big = Passenger::pulled("test", "big").with_body(Body {
        media_type: "text/plain".into(),
        data: vec![b'x'; 1001].into(),
    });
    let small = Passenger::pulled("test", "small");
    let results = pusher.push(&[&big, &small]).await;
    let error = results[0].as_ref().unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("1001 bytes"), "{error}");
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!(queue.message_ids().await, [small.id.to_string()]);

    // Without `mandatory` the broker drops it, and that counts as delivered.
    let config = json!({ "connection": "rabbit", "exchange": "amq.direct",
                         "routing_key": "{metadata.key}", "mandatory": false });
    let pusher = build_pusher(&connection("rabbit"), config).unwrap();
    assert!(pusher.push(&[&lost]).await[0].is_ok());
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_nack_is_retryable() {
    // A queue that holds one message and refuses more: the broker nacks the second publish.
    let queue = TestQueue::new().await;
    let name = unique("ferry-full");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    queue
        .channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    let config = json!({ "connection": "rabbit", "routing_key": name });
    let pusher = build_pusher(&connection("rabbit"), config).unwrap();
    let (first, second) = (Passenger::pulled("erp", "1"), Passenger::pulled("erp", "2"));
    let results = pusher.push(&[&first, &second]).await;
    assert!(results[0].is_ok(), "{results:?}");
    let error = results[1].as_ref().unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("nack"), "{error}");
    let _ = queue
        .channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_pusher_sets_properties_and_headers() {
    let queue = TestQueue::new().await;
    let config = json!({ "connection": "rabbit", "routing_key": queue.name,
                         "headers": { "origin": "{source_system}/{metadata.country}" } });
    let pusher = build_pusher(&connection("rabbit"), config).unwrap();
    let mut passenger = Passenger::pulled("erp", "7").with_body(Body::json(&json!({ "order": 7 })));
    passenger.metadata.insert("country".into(), "NL".into());
    let results = pusher.push(&[&passenger]).await;
    assert!(results[0].is_ok(), "{results:?}");

    let message = queue
        .channel
        .basic_get(queue.name.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message");
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        passenger.id.to_string()
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    let headers = properties.headers().as_ref().unwrap().inner();
    let header = |name: &str| super::puller::text(&headers[name]);
    assert_eq!(header("origin"), "erp/NL");
    assert_eq!(header("ferry-id"), passenger.id.to_string());
    assert_eq!(message.delivery.data, br#"{"order":7}"#);
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_repush_is_a_copy_with_the_same_message_id() {
    let queue = TestQueue::new().await;
    let config = json!({ "connection": "rabbit", "routing_key": queue.name });
    let pusher = build_pusher(&connection("rabbit"), config).unwrap();
    let passenger = Passenger::pulled("erp", "7");
    assert!(pusher.push(&[&passenger]).await[0].is_ok());
    assert!(pusher.push(&[&passenger]).await[0].is_ok());
    let id = passenger.id.to_string();
    assert_eq!(queue.message_ids().await, [id.clone(), id]);

    // A ferry puller on that queue makes both one key, so the queue seats it once.
    let config = json!({ "connection": "rabbit", "queue": queue.name, "max_wait": "3s" });
    let mut puller = build_puller(&connection("rabbit"), "in", config).unwrap();
    let pulled = pull_until(puller.as_mut(), 2).await;
    assert_eq!(ids(&pulled).len(), 1);
    puller.ack(&seated(&pulled)).await.unwrap();
    assert_eq!(queue.messages().await, 0, "both copies acknowledged");
    queue.delete().await;
}

#[tokio::test]
async fn rabbitmq_pusher_recovers_after_its_connection_is_closed_by_the_broker() {
    let queue = TestQueue::new().await;
    let config = json!({ "connection": "rabbit", "routing_key": queue.name });
    let connection = connection("rabbit");
    let pipeline = unique("recover-out");
    let ctx = context(&connection, &pipeline);
    let pusher = RabbitmqPusherFactory
        .build(ferry_core::component::parse_config(&config).unwrap(), &ctx)
        .unwrap();
    let first = Passenger::pulled("erp", "1");
    assert!(pusher.push(&[&first]).await[0].is_ok());
    assert_eq!(close_connections(&pipeline).await, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The dead connection is noticed and replaced; at worst one push fails retryably.
    let second = Passenger::pulled("erp", "2");
    let mut delivered = false;
    for _ in 0..3 {
        match pusher.push(&[&second]).await.remove(0) {
            Ok(()) => {
                delivered = true;
                break;
            }
            Err(error) => assert!(error.retryable, "{error}"),
        }
    }
    assert!(delivered);
    assert_eq!(
        queue.message_ids().await,
        [first.id.to_string(), second.id.to_string()]
    );
    queue.delete().await;
}

#[test]
fn rabbitmq_bad_definitions_fail_at_their_key() {
    let good = connection("rabbit");
    let puller = |config: Value| build_puller(&good, "in", config).map(drop).unwrap_err();
    let error = puller(json!({ "connection": "rabbit", "queue": "" }));
    assert_eq!(error.path, ["queue"]);
    let error = puller(json!({ "connection": "rabbit", "queue": "q", "prefetch": 0 }));
    assert_eq!(error.path, ["prefetch"]);
    let error = puller(json!({ "connection": "rabbit", "queue": "q", "max_wait": "soon" }));
    assert_eq!(error.path, ["max_wait"]);
    let error = puller(json!({ "connection": "rabbit", "queue": "q", "topic": "t" }));
    assert!(error.message.contains("unknown field `topic`"), "{error}");
    let error = puller(json!({ "connection": "nope", "queue": "q" }));
    assert_eq!(error.path, ["connection"]);

    let pusher = |config: Value| build_pusher(&good, config).map(drop).unwrap_err();
    let error = pusher(json!({ "connection": "rabbit", "routing_key": "{nope}" }));
    assert_eq!(error.path, ["routing_key"]);
    let error = pusher(json!({ "connection": "rabbit", "routing_key": "" }));
    assert_eq!(error.path, ["routing_key"]);
    let error = pusher(json!({ "connection": "rabbit", "routing_key": "k", "max_size": "lots" }));
    assert_eq!(error.path, ["max_size"]);
    let error = pusher(json!({ "connection": "rabbit", "routing_key": "k", "exchange": "{x" }));
    assert_eq!(error.path, ["exchange"]);
    let error = pusher(json!({ "connection": "rabbit", "routing_key": "k",
                               "headers": { "ferry-id": "x" } }));
    assert_eq!(error.path, ["headers", "ferry-id"]);

    // The connection's own keys; a bad URL is reported without repeating it (it may hold a
    // password).
    let bad = connection_with("rabbit", json!({ "url": format!("http://{SECRET}@host") }));
    let error = build_puller(&bad, "in", json!({ "connection": "rabbit", "queue": "q" }))
        .map(drop)
        .unwrap_err();
    assert_eq!(error.path, ["connection"]);
    assert!(error.message.contains("`url`: not an AMQP URI"), "{error}");
    assert!(!error.message.contains(SECRET), "{error}");
    let error = build_puller(
        &connection_with("rabbit", json!({ "url": url(), "vhost": "x" })),
        "in",
        json!({ "connection": "rabbit", "queue": "q" }),
    )
    .map(drop)
    .unwrap_err();
    assert!(error.message.contains("unknown field `vhost`"), "{error}");
    let mut other = good.clone();
    other.kind = "imap".into();
    let error = build_puller(
        &other,
        "in",
        json!({ "connection": "rabbit", "queue": "q" }),
    )
    .map(drop)
    .unwrap_err();
    assert!(error.message.contains("`imap` connection"), "{error}");
}

#[test]
fn rabbitmq_connection_is_shown_without_its_password() {
    let connection = RabbitmqConnection::read(
        &connection_with(
            "rabbit",
            json!({ "url": "amqps://broker.example.com/orders", "user": "ferry",
                    "password": SECRET }),
        ),
        "/".as_ref(),
    )
    .unwrap();
    assert_eq!(
        connection.shown(),
        "amqps://ferry@broker.example.com:5671/orders"
    );
    assert!(!format!("{connection:?}").contains(SECRET));
}
