//! The `nats` connection, puller and pusher against the real NATS server with JetStream
//! (`FERRY_TEST_NATS`, default `127.0.0.1:4222`); each test makes its own stream. The restart
//! test runs a private `nats-server` on a free port with its own store directory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use ferry_core::config::Connection;
use ferry_core::{Body, BuildContext, Passenger, Pulled, Puller, Pusher, Role, Seated};
use serde_json::{Value, json};

use crate::conformance::{self, SECRET};
use crate::test_server::TestServer;

/// `nats://host:port` of the shared test server.
fn server() -> String {
    let address = std::env::var("FERRY_TEST_NATS").unwrap_or_else(|_| "127.0.0.1:4222".into());
    match address.contains("://") {
        true => address,
        false => format!("nats://{address}"),
    }
}

/// A name no other test uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// The `nats` connection `bus` to `url`, granted to `acme`.
fn connection(url: &str, extra: Value) -> Connection {
    let mut config = json!({ "url": url });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Connection {
        name: "bus".into(),
        kind: "nats".into(),
        config: config.as_object().expect("a mapping").clone(),
        clients: vec!["acme".into()],
    }
}

fn context(connection: Connection) -> BuildContext {
    let connections: BTreeMap<String, Connection> = [(connection.name.clone(), connection)]
        .into_iter()
        .collect();
    BuildContext {
        client: "acme".into(),
        pipeline: "events".into(),
        component: "nats".into(),
        connections: Arc::new(connections),
        ..BuildContext::default()
    }
}

fn puller_at(url: &str, config: Value) -> Box<dyn Puller> {
    crate::registry()
        .puller("nats", &config, &context(connection(url, json!({}))))
        .expect("a valid puller")
}

fn pusher_at(url: &str, config: Value) -> Box<dyn Pusher> {
    crate::registry()
        .pusher(
            "nats",
            &config,
            &context(connection(url, json!({ "timeout": "3s" }))),
        )
        .expect("a valid pusher")
}

async fn jetstream_at(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("the NATS test server");
    jetstream::new(client)
}

/// A fresh stream taking `<name>.>`.
async fn make_stream(js: &jetstream::Context, name: &str) {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .expect("a stream");
}

/// Publishes `count` messages `m0`… on `<stream>.in`, awaiting each PubAck.
async fn publish(js: &jetstream::Context, stream: &str, count: usize) {
    for index in 0..count {
        js.publish(format!("{stream}.in"), Bytes::from(format!("m{index}")))
            .await
            .expect("published")
            .await
            .expect("acknowledged");
    }
}

/// Messages still to be delivered or acknowledged for the durable consumer (the stream's
/// messages before the consumer exists).
async fn outstanding(js: &jetstream::Context, name: &str, durable: &str) -> usize {
    let mut stream = js.get_stream(name).await.expect("the stream");
    match stream
        .get_consumer::<jetstream::consumer::pull::Config>(durable)
        .await
    {
        Ok(mut consumer) => {
            let info = consumer.info().await.expect("consumer info");
            info.num_pending as usize + info.num_ack_pending
        }
        Err(_) => stream.info().await.expect("stream info").state.messages as usize,
    }
}

/// Every message in the stream, in order: (subject, headers by name, payload).
async fn contents(
    js: &jetstream::Context,
    name: &str,
) -> Vec<(String, BTreeMap<String, String>, Bytes)> {
    let mut stream = js.get_stream(name).await.expect("the stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut found = Vec::new();
    if state.messages == 0 {
        return found;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let headers = message
            .headers
            .iter()
            .map(|(name, values)| (name.to_string(), values[0].to_string()))
            .collect();
        found.push((message.subject.to_string(), headers, message.payload));
    }
    found
}

fn seat(pulled: &Pulled) -> Vec<Seated> {
    pulled
        .passengers
        .iter()
        .map(|p| Seated {
            source_system: p.source_system.clone(),
            external_id: p.external_id.clone(),
            duplicate: false,
        })
        .collect()
}

fn ids(pulled: &Pulled) -> Vec<String> {
    pulled
        .passengers
        .iter()
        .map(|p| p.external_id.clone())
        .collect()
}

/// The harness's source: a stream of its own, read by a durable consumer with a short
/// `ack_wait`, so what a crashed puller held comes back within the test.
struct Source {
    js: jetstream::Context,
    stream: String,
    durable: String,
}

#[async_trait::async_trait(?Send)]
impl conformance::PullerUnderTest for Source {
    async fn fill(&mut self, good: usize) -> Option<String> {
        publish(&self.js, &self.stream, good).await;
        // Any bytes are a message: nothing is malformed for the puller.
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        puller_at(
            &server(),
            json!({ "connection": "bus", "stream": self.stream, "durable": self.durable,
                    "ack_wait": "1s", "max_wait": "3s" }),
        )
    }

    async fn remaining(&self) -> Option<usize> {
        Some(outstanding(&self.js, &self.stream, &self.durable).await)
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let connection = connection(
            "nats://127.0.0.1:1",
            json!({ "user": "ferry", "password": SECRET, "timeout": "2s" }),
        );
        let puller = crate::registry()
            .puller(
                "nats",
                &json!({ "connection": "bus", "stream": self.stream }),
                &context(connection),
            )
            .expect("a valid puller");
        Some((puller, "127.0.0.1:1".into()))
    }
}

#[tokio::test]
async fn nats_puller_conforms() {
    let js = jetstream_at(&server()).await;
    let name = unique("CONF");
    make_stream(&js, &name).await;
    let mut source = Source {
        js: js.clone(),
        stream: name.clone(),
        durable: unique("d"),
    };
    conformance::puller_conforms(&mut source).await;
    js.delete_stream(&name).await.expect("deleted");
}

/// The harness's target: a stream of its own that the pusher publishes to.
struct Target {
    js: jetstream::Context,
    stream: String,
}

#[async_trait::async_trait(?Send)]
impl conformance::PusherUnderTest for Target {
    fn pusher(&self) -> Box<dyn Pusher> {
        pusher_at(
            &server(),
            json!({ "connection": "bus", "subject": format!("{}.{{metadata.kind}}", self.stream) }),
        )
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count).map(|index| order(&index.to_string())).collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        // Over the server's 1 MiB max_payload.
        let big = order("big").with_body(Body {
            media_type: "application/octet-stream".into(),
            data: Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
        });
        Some((big, "too large".into()))
    }

    async fn delivered(&self) -> Vec<String> {
        contents(&self.js, &self.stream)
            .await
            .into_iter()
            .map(|(_, headers, _)| headers.get("ferry-id").cloned().unwrap_or_default())
            .collect()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers.iter().map(|p| p.id.to_string()).collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let connection = connection(
            "nats://127.0.0.1:1",
            json!({ "token": SECRET, "timeout": "2s" }),
        );
        let pusher = crate::registry()
            .pusher(
                "nats",
                &json!({ "connection": "bus", "subject": "x.y" }),
                &context(connection),
            )
            .expect("a valid pusher");
        Some((pusher, "127.0.0.1:1".into()))
    }
}

/// A JSON order with `kind: order`.
fn order(id: &str) -> Passenger {
    let mut passenger = Passenger::pulled("test", id).with_body(Body::json(&json!({ "id": id })));
    passenger.metadata.insert("kind".into(), "order".into());
    passenger
}

#[tokio::test]
async fn nats_pusher_conforms() {
    let js = jetstream_at(&server()).await;
    let name = unique("PUSH");
    make_stream(&js, &name).await;
    let mut target = Target {
        js: js.clone(),
        stream: name.clone(),
    };
    conformance::pusher_conforms(&mut target).await;
    js.delete_stream(&name).await.expect("deleted");
}

#[tokio::test]
async fn nats_check_conforms() {
    let good = connection(&server(), json!({}));
    let unreachable = connection(
        "nats://ferry:pw@127.0.0.1:1",
        json!({ "token": SECRET, "timeout": "2s" }),
    );
    conformance::check_conforms(&crate::registry(), &good, &unreachable).await;
}

/// A message pulled and never acknowledged (the process died) comes back after `ack_wait`
/// under the same external id, with its subject, stream, sequence and headers as metadata.
#[tokio::test]
async fn nats_redelivery_after_a_puller_dropped_without_ack() {
    let js = jetstream_at(&server()).await;
    let name = unique("REDO");
    make_stream(&js, &name).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    headers.insert("trace", "t-1");
    js.publish_with_headers(format!("{name}.orders"), headers, Bytes::from("{\"a\":1}"))
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    publish(&js, &name, 2).await;
    let config = json!({ "connection": "bus", "stream": name, "durable": "ferry-redo",
                         "ack_wait": "1s", "max_wait": "200ms" });

    let mut first = puller_at(&server(), config.clone());
    let crashed = first.pull(10).await.expect("pulled");
    assert_eq!(
        ids(&crashed),
        [
            format!("{name}/1"),
            format!("{name}/2"),
            format!("{name}/3")
        ]
    );
    assert!(
        crashed.state.as_deref().is_some_and(|s| s.contains('3')),
        "{:?}",
        crashed.state
    );
    let json = &crashed.passengers[0];
    assert_eq!(json.source_system, "nats:bus");
    assert_eq!(json.body.media_type, "application/json");
    assert_eq!(json.metadata["nats.subject"], format!("{name}.orders"));
    assert_eq!(json.metadata["nats.stream"], name);
    assert_eq!(json.metadata["nats.sequence"], "1");
    assert_eq!(json.metadata["nats.header.trace"], "t-1");
    assert_eq!(
        crashed.passengers[1].body.media_type,
        "application/octet-stream"
    );
    drop(first);

    let mut second = puller_at(&server(), config);
    let started = Instant::now();
    let mut again = Vec::new();
    while again.len() < 3 && started.elapsed() < Duration::from_secs(10) {
        let pulled = second.pull(10).await.expect("pulled");
        second.ack(&seat(&pulled)).await.expect("acked");
        again.extend(ids(&pulled));
    }
    again.sort();
    let mut expected = ids(&crashed);
    expected.sort();
    assert_eq!(again, expected, "the same messages, under the same keys");
    assert_eq!(
        outstanding(&js, &name, "ferry-redo").await,
        0,
        "all acknowledged"
    );
    js.delete_stream(&name).await.expect("deleted");
}

/// A batch held longer than `ack_wait` is kept alive with in-progress acknowledgements: a second
/// puller on the same durable consumer gets nothing meanwhile.
#[tokio::test]
async fn nats_in_progress_acks_keep_a_slow_batch() {
    let js = jetstream_at(&server()).await;
    let name = unique("SLOW");
    make_stream(&js, &name).await;
    publish(&js, &name, 3).await;
    let config = json!({ "connection": "bus", "stream": name, "durable": "ferry-slow",
                         "ack_wait": "1s", "max_wait": "200ms" });
    let mut holder = puller_at(&server(), config.clone());
    let held = holder.pull(10).await.expect("pulled");
    assert_eq!(held.passengers.len(), 3);

    let mut other = puller_at(
        &server(),
        json!({ "connection": "bus", "stream": name, "durable": "ferry-slow",
                "ack_wait": "1s", "max_wait": "3s" }),
    );
    let meanwhile = other.pull(10).await.expect("pulled");
    assert!(
        meanwhile.passengers.is_empty(),
        "a batch being seated is not handed out again: {:?}",
        ids(&meanwhile)
    );
    holder.ack(&seat(&held)).await.expect("acked");
    assert_eq!(outstanding(&js, &name, "ferry-slow").await, 0);
    js.delete_stream(&name).await.expect("deleted");
}

/// A re-push of the same passengers (a crash before the queue recorded the delivery) adds
/// nothing: `Nats-Msg-Id` is the passenger id, and the duplicate PubAck counts as delivered.
#[tokio::test]
async fn nats_pusher_deduplicates_by_nats_msg_id() {
    let js = jetstream_at(&server()).await;
    let name = unique("DUP");
    make_stream(&js, &name).await;
    let config = json!({ "connection": "bus", "subject": format!("{name}.{{metadata.kind}}"),
                         "headers": { "origin": "{source_system}/{external_id}" } });
    let passengers = [order("1"), order("2")];
    let refs: Vec<&Passenger> = passengers.iter().collect();
    for _ in 0..2 {
        let pusher = pusher_at(&server(), config.clone());
        let results = pusher.push(&refs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    let stored = contents(&js, &name).await;
    assert_eq!(stored.len(), 2, "each passenger once");
    let (subject, headers, payload) = &stored[0];
    assert_eq!(subject, &format!("{name}.order"));
    assert_eq!(headers["Nats-Msg-Id"], passengers[0].id.to_string());
    assert_eq!(headers["ferry-id"], passengers[0].id.to_string());
    assert_eq!(headers["Content-Type"], "application/json");
    assert_eq!(headers["origin"], "test/1");
    assert_eq!(payload, &passengers[0].body.data);
    js.delete_stream(&name).await.expect("deleted");
}

/// A subject no stream takes, or one with a wildcard, fails the passenger permanently; the
/// others of the batch are delivered.
#[tokio::test]
async fn nats_pusher_refuses_a_subject_without_stream() {
    let js = jetstream_at(&server()).await;
    let name = unique("ROUTE");
    make_stream(&js, &name).await;
    let pusher = pusher_at(
        &server(),
        json!({ "connection": "bus", "subject": "{metadata.to}" }),
    );
    let mut good = order("1");
    good.metadata.insert("to".into(), format!("{name}.ok"));
    let mut nowhere = order("2");
    nowhere.metadata.insert("to".into(), unique("nostream."));
    let mut wildcard = order("3");
    wildcard.metadata.insert("to".into(), format!("{name}.*"));
    let results = pusher.push(&[&good, &nowhere, &wildcard]).await;
    assert!(results[0].is_ok(), "{results:?}");
    let error = results[1].as_ref().expect_err("no stream");
    assert!(
        !error.retryable && error.message.contains("no JetStream stream"),
        "{error}"
    );
    let error = results[2].as_ref().expect_err("a wildcard");
    assert!(
        !error.retryable && error.message.contains("wildcard"),
        "{error}"
    );
    js.delete_stream(&name).await.expect("deleted");
}

/// A stream that does not exist is a permanent error naming it, unless `create_stream` opts in.
#[tokio::test]
async fn nats_missing_stream_is_permanent_unless_created() {
    let name = unique("MISSING");
    let mut puller = puller_at(&server(), json!({ "connection": "bus", "stream": name }));
    let error = puller.pull(10).await.expect_err("no stream");
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains(&name), "{error}");

    let mut puller = puller_at(
        &server(),
        json!({ "connection": "bus", "stream": name, "create_stream": [format!("{name}.>")],
                "max_wait": "100ms" }),
    );
    let pulled = puller.pull(10).await.expect("created");
    assert!(pulled.passengers.is_empty());
    let js = jetstream_at(&server()).await;
    js.delete_stream(&name).await.expect("created, so deleted");
}

#[test]
fn nats_bad_definitions_fail_at_their_key() {
    let registry = crate::registry();
    let ctx = context(connection(&server(), json!({})));
    let cases = [
        (
            Role::Puller,
            json!({ "connection": "bus", "stream": "a.b" }),
            "stream",
        ),
        (Role::Puller, json!({ "connection": "bus" }), ""),
        (
            Role::Puller,
            json!({ "connection": "nope", "stream": "S" }),
            "connection",
        ),
        (
            Role::Puller,
            json!({ "connection": "bus", "stream": "S", "ack_wait": "0s" }),
            "ack_wait",
        ),
        (
            Role::Puller,
            json!({ "connection": "bus", "stream": "S", "start": "middle" }),
            "start",
        ),
        (
            Role::Puller,
            json!({ "connection": "bus", "stream": "S", "create_stream": ["a..b"] }),
            "create_stream.0",
        ),
        (
            Role::Puller,
            json!({ "connection": "bus", "stream": "S", "colour": "red" }),
            "colour",
        ),
        (
            Role::Pusher,
            json!({ "connection": "bus", "subject": "{nope}" }),
            "subject",
        ),
        (
            Role::Pusher,
            json!({ "connection": "bus", "subject": "a.>" }),
            "subject",
        ),
        (
            Role::Pusher,
            json!({ "connection": "bus", "subject": "a", "headers": { "Nats-Msg-Id": "x" } }),
            "headers.Nats-Msg-Id",
        ),
    ];
    for (role, config, key) in cases {
        let error = registry
            .check(role, "nats", &config, &ctx)
            .expect_err(&config.to_string());
        assert_eq!(error.path.join("."), key, "{config}: {error}");
    }
    let connection = connection(&server(), json!({ "user": "u" }));
    let error = registry
        .check(
            Role::Puller,
            "nats",
            &json!({ "connection": "bus", "stream": "S" }),
            &context(connection),
        )
        .expect_err("a user without a password");
    assert!(error.message.contains("password"), "{error}");
}

/// A private NATS server with JetStream, its streams in the server's directory.
fn nats_server(port: u16, dir: &std::path::Path) -> std::process::Command {
    let binary = std::env::var("FERRY_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let mut command = std::process::Command::new(binary);
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir);
    command
}

/// The broker restarted mid-run: calls made while it is down fail retryably, naming it; once
/// it is back the same puller and pusher carry on, and every message arrives exactly once.
#[tokio::test]
async fn nats_broker_restart_loses_nothing() {
    let mut server = TestServer::start(nats_server);
    let url = format!("nats://127.0.0.1:{}", server.port);
    let js = jetstream_at(&url).await;
    make_stream(&js, "IN").await;
    make_stream(&js, "OUT").await;
    publish(&js, "IN", 10).await;
    drop(js);

    let mut puller = puller_at(
        &url,
        json!({ "connection": "bus", "stream": "IN", "ack_wait": "2s", "max_wait": "300ms" }),
    );
    let pusher = pusher_at(&url, json!({ "connection": "bus", "subject": "OUT.copy" }));
    let mut seen = Vec::new();
    let first = puller.pull(4).await.expect("pulled");
    puller.ack(&seat(&first)).await.expect("acked");
    seen.extend(ids(&first));
    let copies: Vec<Passenger> = first.passengers.clone();
    let refs: Vec<&Passenger> = copies.iter().collect();
    assert!(pusher.push(&refs).await.iter().all(Result::is_ok));

    let unacked = puller.pull(2).await.expect("pulled");
    assert_eq!(unacked.passengers.len(), 2);
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Seated, but the broker is gone: the ack is skipped, not failed; they come back.
    puller
        .ack(&seat(&unacked))
        .await
        .expect("an ack never fails");
    let down = puller.pull(4).await.expect_err("the broker is down");
    assert!(down.retryable && down.message.contains(&url[7..]), "{down}");
    let results = pusher.push(&refs).await;
    let error = results[0].as_ref().expect_err("the broker is down");
    assert!(
        error.retryable && error.message.contains("`bus`"),
        "{error}"
    );

    server.up();
    let started = Instant::now();
    // The queue: a message pulled again after a failed push travels as the passenger first
    // seated for it (same id), as the store's de-duplication by external id makes it.
    let mut queue: BTreeMap<String, Passenger> = copies
        .iter()
        .map(|p| (p.external_id.clone(), p.clone()))
        .collect();
    // Until every message was pulled and nothing more comes: a SIGKILLed server may forget
    // acks it had not written to disk yet and deliver those messages again.
    let js = jetstream_at(&url).await;
    let mut drained = false;
    while !drained && started.elapsed() < Duration::from_secs(30) {
        let pulled = match puller.pull(4).await {
            Ok(pulled) => pulled,
            Err(error) => {
                assert!(error.retryable, "{error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        drained = pulled.passengers.is_empty()
            && seen.len() >= 10
            && outstanding(&js, "IN", "ferry-acme-events").await == 0;
        let seated: Vec<Passenger> = pulled
            .passengers
            .iter()
            .map(|p| {
                queue
                    .entry(p.external_id.clone())
                    .or_insert_with(|| p.clone())
                    .clone()
            })
            .collect();
        let refs: Vec<&Passenger> = seated.iter().collect();
        let results = pusher.push(&refs).await;
        if results.iter().any(Result::is_err) {
            // Not delivered: the puller does not ack, so the messages come back.
            continue;
        }
        puller.ack(&seat(&pulled)).await.expect("acked");
        seen.extend(ids(&pulled));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10, "every message pulled: {seen:?}");
    assert!(drained, "nothing more comes, everything acknowledged");
    let out = contents(&js, "OUT").await;
    let mut out_ids: Vec<String> = out.iter().map(|(_, h, _)| h["ferry-id"].clone()).collect();
    out_ids.sort();
    out_ids.dedup();
    assert_eq!(
        out.len(),
        out_ids.len(),
        "no message twice at the other side"
    );
    assert_eq!(out.len(), 10, "every message at the other side");
    assert_eq!(
        outstanding(&js, "IN", "ferry-acme-events").await,
        0,
        "all acknowledged"
    );
}

/// A message the stream refuses (over its `max_msg_size`) fails permanently; the others of the
/// batch are delivered.
#[tokio::test]
async fn nats_pusher_message_over_the_streams_limit_is_permanent() {
    let js = jetstream_at(&server()).await;
    let name = unique("SMALL");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        max_message_size: 256,
        ..Default::default()
    })
    .await
    .expect("a stream");
    let pusher = pusher_at(
        &server(),
        json!({ "connection": "bus", "subject": format!("{name}.out") }),
    );
    let small = order("1");
    let big = order("2").with_body(Body {
        media_type: "application/octet-stream".into(),
        data: Bytes::from(vec![b'x'; 1024]),
    });
    let results = pusher.push(&[&small, &big]).await;
    assert!(results[0].is_ok(), "{results:?}");
    let error = results[1].as_ref().expect_err("too large for the stream");
    assert!(!error.retryable, "permanent: {error}");
    assert_eq!(contents(&js, &name).await.len(), 1);
    js.delete_stream(&name).await.expect("deleted");
}
