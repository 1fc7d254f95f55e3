//! Issue 15: message brokers through the real `ferry` binary. For each broker, 100,000
//! messages wait in a source topic (stream, queue); a pipeline copies them through ferry's
//! durable queue to a target on the same broker. ferry is killed with `kill -9` twice while it
//! pulls and pushes, the broker is restarted once under it, and at the end the target holds
//! every message: exactly once where the broker drops a copy by id (NATS JetStream's
//! `Nats-Msg-Id`, the `redis` pusher's de-duplication), at least once elsewhere, with the
//! copies counted.
//!
//! The tests that restart a broker start a private instance of it on a port of their own
//! (`broker/*.rs`), so the shared servers of the machine are never restarted.

mod broker;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{Ferry, Project, open_counts, start, stdout, until, wait_until};

/// A broker as these tests drive it, through its own Rust client.
pub trait Broker {
    /// The broker type (`kafka`, `nats`, …): the connection's and the components' `type:`.
    fn kind(&self) -> &'static str;
    /// The keys of the connection (`connections.yaml`), one YAML flow mapping without `type`.
    fn connection(&self) -> String;
    /// The puller's keys for reading `source` (YAML flow mapping without `type`, `connection`).
    fn puller(&self, source: &str) -> String;
    /// The pusher's keys for writing to `target`.
    fn pusher(&self, target: &str) -> String;
    /// Makes `source` and `target` (topics, streams, queues).
    fn prepare(&mut self, source: &str, target: &str);
    /// Writes `count` messages to `source`, the payload of message `n` its number `n` padded
    /// to about 1 KB.
    fn produce(&mut self, source: &str, count: usize);
    /// How many messages `target` holds, copies included.
    fn count(&mut self, target: &str) -> usize;
    /// The payloads `target` holds, copies included.
    fn read(&mut self, target: &str) -> Vec<String>;
    /// The target drops a copy by id, so none may show.
    fn exactly_once(&self) -> bool;
    /// Stops the broker and starts it again, keeping what it holds.
    fn restart(&mut self);
}

/// The payload of message `n`: its number, then padding to about 1 KB.
pub fn payload(n: usize) -> String {
    format!("{n:08} {}", "x".repeat(1000))
}

/// The number of a payload.
fn number(payload: &str) -> usize {
    payload[..8]
        .parse()
        .expect("a payload starts with its number")
}

/// The project: `source` → ferry → `target` on `broker`.
fn project(broker: &dyn Broker, source: &str, target: &str) -> Project {
    let kind = broker.kind();
    let pipeline = format!(
        "schedule: continuous\nbatch_size: 500\nqueue_limit: 20000\n\
         pullers:\n  - {{ type: {kind}, connection: broker, {} }}\n\
         pushers:\n  - {{ type: {kind}, connection: broker, {} }}\n",
        broker.puller(source),
        broker.pusher(target),
    );
    let project = Project::new("queue_life_span: 1d\n", &[("copy", &pipeline)]);
    project.write(
        "connections.yaml",
        &format!(
            "broker: {{ type: {kind}, clients: [acme], {} }}\n",
            broker.connection()
        ),
    );
    project
}

/// 100,000 messages copied through two `kill -9`s of ferry and a restart of the broker.
pub fn copy_survives_kills_and_a_broker_restart(broker: &mut dyn Broker) {
    const MESSAGES: usize = 100_000;
    let source = support::unique("source");
    let target = support::unique("target");
    broker.prepare(&source, &target);
    broker.produce(&source, MESSAGES);
    let project = project(broker, &source, &target);
    let check = project.ferry(&["validate", project.path().to_str().unwrap()]);
    assert!(check.status.success(), "{}", support::stderr(&check));

    let wait_for_target = |broker: &mut dyn Broker, ferry: &mut Ferry, share: usize| {
        wait_until(
            &project,
            ferry.child(),
            &format!("{share}% at the target"),
            Duration::from_secs(300),
            || {
                let count = broker.count(&target);
                until(count >= MESSAGES * share / 100, count)
            },
        );
    };
    let mut ferry = start(&project);
    wait_for_target(broker, &mut ferry, 15);
    ferry.kill_9();

    let mut ferry = start(&project);
    wait_for_target(broker, &mut ferry, 35);
    broker.restart();
    wait_for_target(broker, &mut ferry, 55);
    ferry.kill_9();

    let mut ferry = start(&project);
    wait_until(
        &project,
        ferry.child(),
        "every message at the target and the queue empty",
        Duration::from_secs(600),
        || {
            let (count, open) = (broker.count(&target), open_counts(&project, "copy"));
            until(
                count >= MESSAGES && open == ["0", "0", "0", "0"],
                (count, open),
            )
        },
    );
    assert!(ferry.terminate(), "a clean exit:\n{}", project.log());

    let mut copies: BTreeMap<usize, usize> = BTreeMap::new();
    for payload in broker.read(&target) {
        *copies.entry(number(&payload)).or_default() += 1;
    }
    let missing: Vec<usize> = (0..MESSAGES).filter(|n| !copies.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(copies.len(), MESSAGES, "nothing else arrived");
    let doubled: usize = copies.values().map(|c| c - 1).sum();
    eprintln!(
        "{}: {MESSAGES} messages, {doubled} copies at the target after two kills and a restart",
        broker.kind()
    );
    if broker.exactly_once() {
        assert_eq!(doubled, 0, "the target drops copies by id");
    }
}

#[test]
fn nats_copy_survives_two_kills_and_a_broker_restart() {
    copy_survives_kills_and_a_broker_restart(&mut broker::nats::Nats::start());
}

#[test]
fn redis_copy_survives_two_kills_and_a_broker_restart() {
    copy_survives_kills_and_a_broker_restart(&mut broker::redis::Redis::start());
}

#[test]
fn mqtt_copy_survives_two_kills_and_a_broker_restart() {
    copy_survives_kills_and_a_broker_restart(&mut broker::mqtt::Mqtt::start());
}

/// The shared RabbitMQ is not restarted: ferry's connections are closed by the broker instead.
#[test]
fn rabbitmq_copy_survives_two_kills_and_its_connections_closed_by_the_broker() {
    copy_survives_kills_and_a_broker_restart(&mut broker::rabbitmq::Rabbitmq::shared());
}

#[test]
fn kafka_copy_survives_two_kills_and_a_frozen_broker() {
    copy_survives_kills_and_a_broker_restart(&mut broker::kafka::Kafka::start());
}

/// Avro's variable-length zig-zag `long`.
fn avro_long(value: i64, out: &mut Vec<u8>) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn avro_string(value: &str, out: &mut Vec<u8>) {
    avro_long(value.len() as i64, out);
    out.extend_from_slice(value.as_bytes());
}

const ORDER_V1: &str = r#"{"type": "record", "name": "Order", "fields": [
  {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}"#;
const ORDER_V2: &str = r#"{"type": "record", "name": "Order", "fields": [
  {"name": "id", "type": "long"}, {"name": "name", "type": "string"},
  {"name": "note", "type": "string", "default": ""}]}"#;

/// A producer moved to a newer schema (one more field) before the pipeline did: its first
/// message cannot be read as the old schema says. It ends dead with its topic, partition and
/// offset shown, the others are delivered, and once the schema is fixed it is replayed.
#[test]
fn a_poison_kafka_message_ends_dead_with_its_offset_and_is_replayed_after_the_fix() {
    let mut kafka = broker::kafka::Kafka::shared();
    let topic = support::unique("orders");
    kafka.prepare(&topic, &support::unique("unused"));
    let mut messages = Vec::new();
    for id in 0..5 {
        let mut datum = Vec::new();
        avro_long(id, &mut datum);
        avro_string(&format!("order {id}"), &mut datum);
        messages.push(datum);
    }
    let mut poison = Vec::new();
    avro_long(5, &mut poison);
    avro_string("order 5", &mut poison);
    avro_string("written with v2", &mut poison);
    messages.push(poison);
    kafka.produce_raw(&topic, &messages);

    let pipeline = format!(
        "schedule: continuous\n\
         retry: {{ max_attempts: 1 }}\n\
         pullers:\n  - {{ type: kafka, connection: events, topics: [{topic}], max_wait: 1s }}\n\
         processors:\n  - {{ type: decode, codec: {{ type: avro, schema: clients/acme/schemas/order.avsc, encoding: raw }} }}\n\
         pushers:\n  - {{ type: file, path: outbox, name_template: \"{{metadata.kafka.offset}}.json\" }}\n"
    );
    let project = Project::new("queue_life_span: 1h\n", &[("orders", &pipeline)]);
    project.write("clients/acme/schemas/order.avsc", ORDER_V1);
    project.write(
        "connections.yaml",
        &format!(
            "events:\n  type: kafka\n  clients: [acme]\n  {}\n",
            kafka.connection()
        ),
    );
    let dir = project.path().to_str().unwrap().to_string();
    let mut ferry = start(&project);
    let id = support::wait_for_dead(&project, "acme/orders");
    let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
    assert!(
        shown.contains("kafka.topic") && shown.contains(&topic),
        "{shown}"
    );
    assert!(
        shown.contains("kafka.offset") && shown.contains(" 5"),
        "{shown}"
    );
    assert!(
        shown.contains("bytes after the end of the datum"),
        "{shown}"
    );
    let delivered = support::files(&project.join("outbox"));
    assert_eq!(
        delivered,
        ["0.json", "1.json", "2.json", "3.json", "4.json"]
    );

    // The fix: the pipeline reads the producer's new schema; then the dead message is replayed.
    let reloaded = project.log().len();
    project.write("clients/acme/schemas/order-v2.avsc", ORDER_V2);
    project.write(
        "clients/acme/pipelines/orders.yaml",
        &pipeline.replace("order.avsc", "order-v2.avsc"),
    );
    wait_until(
        &project,
        ferry.child(),
        "the definition reloaded",
        Duration::from_secs(30),
        || {
            let log = project.log();
            until(
                log[reloaded..].contains("definitions loaded"),
                "no reload yet",
            )
        },
    );
    let replay = project.ferry(&["queue", "-C", &dir, "replay", &id]);
    assert!(replay.status.success(), "{}", support::stderr(&replay));
    wait_until(
        &project,
        ferry.child(),
        "the replayed message delivered",
        Duration::from_secs(30),
        || {
            let body = std::fs::read_to_string(project.join("outbox/5.json")).unwrap_or_default();
            until(body.contains("written with v2"), body)
        },
    );
    assert!(ferry.terminate(), "{}", project.log());
}
