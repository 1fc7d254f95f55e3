//! The `mqtt` connection, puller and pusher against the machine's Mosquitto
//! (`FERRY_TEST_MQTT`, default `127.0.0.1:1883`, anonymous). Every test uses its own topics and
//! client ids (a UUID in them). The broker-restart test starts a private Mosquitto on a free
//! port with its own persistence directory; the shared broker is never restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::{
    Body, BuildContext, Passenger, Pulled, Puller, PullerFactory, Pusher, PusherFactory, Seated,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use super::config::default_client_id;
use super::*;
use crate::conformance::{self, PullerUnderTest, PusherUnderTest, SECRET};
use crate::test_server::TestServer;

/// The shared test broker's host and port.
fn broker() -> (String, u16) {
    let address = std::env::var("FERRY_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let (host, port) = address.rsplit_once(':').expect("HOST:PORT");
    (host.to_string(), port.parse().expect("a port"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A client id of at most 23 characters, unique to the test.
fn client_id() -> String {
    format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[10..])
}

fn connection(name: &str) -> Connection {
    let (host, port) = broker();
    connection_at(name, &host, port)
}

fn connection_at(name: &str, host: &str, port: u16) -> Connection {
    connection_with(
        name,
        json!({ "host": host, "port": port, "connect_timeout": "5s" }),
    )
}

fn connection_with(name: &str, config: Value) -> Connection {
    Connection {
        name: name.into(),
        kind: "mqtt".into(),
        config: config.as_object().unwrap().clone(),
        clients: vec!["acme".into()],
    }
}

/// A connection nothing listens at, whose password is the harness's secret.
fn unreachable() -> Connection {
    connection_with(
        "sensors",
        json!({ "host": "127.0.0.1", "port": 1, "user": "ferry", "password": SECRET,
                "connect_timeout": "2s" }),
    )
}

fn context(connection: &Connection) -> BuildContext {
    BuildContext {
        client: "acme".into(),
        pipeline: "plant".into(),
        component: "sensors".into(),
        connections: Arc::new(BTreeMap::from([(
            connection.name.clone(),
            connection.clone(),
        )])),
        ..BuildContext::default()
    }
}

fn build_puller(
    connection: &Connection,
    config: Value,
) -> Result<Box<dyn Puller>, ferry_core::BuildError> {
    let config = ferry_core::component::parse_config(&config)?;
    MqttPullerFactory.build(config, &context(connection))
}

fn build_pusher(
    connection: &Connection,
    config: Value,
) -> Result<Box<dyn Pusher>, ferry_core::BuildError> {
    let config = ferry_core::component::parse_config(&config)?;
    MqttPusherFactory.build(config, &context(connection))
}

/// Publishes `payloads` to `topic` at QoS 1 on the broker at `host:port`, each acknowledged.
async fn publish(host: &str, port: u16, topic: &str, payloads: &[String]) {
    let mut options = MqttOptions::new(client_id(), host, port);
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 100);
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < payloads.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("the broker answers")
            .expect("the test broker runs");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(100), events.poll()).await;
}

/// Ends the persistent session `config` names on the shared broker (a clean-session connection
/// under its client id discards it), so tests leave nothing behind.
async fn forget_session(config: &Value) {
    let (host, port) = broker();
    let id = config["client_id"]
        .as_str()
        .expect("a test puller names its client id");
    let options = MqttOptions::new(id, host, port);
    let (client, mut events) = AsyncClient::new(options, 10);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
        if let Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) = event {
            break;
        }
        if !matches!(event, Ok(Ok(_))) {
            return;
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(100), events.poll()).await;
}

/// A subscriber of the test's own that collects the payloads arriving on `topic`.
struct Collector {
    received: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn new(host: &str, port: u16, topic: &str) -> Collector {
        let options = MqttOptions::new(client_id(), host, port);
        let (client, mut events) = AsyncClient::new(options, 100);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (subscribed, is_subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed = Some(subscribed);
        let store = received.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(subscribed) = subscribed.take() {
                            let _ = subscribed.send(());
                        }
                    }
                    Event::Incoming(Packet::Publish(publish)) => store
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&publish.payload).into_owned()),
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), is_subscribed)
            .await
            .expect("subscribed")
            .unwrap();
        Collector { received, task }
    }

    /// What arrived so far, after a moment for messages on their way.
    async fn received(&self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
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

fn payloads(pulled: &Pulled) -> BTreeSet<String> {
    pulled
        .passengers
        .iter()
        .map(|p| String::from_utf8_lossy(&p.body.data).into_owned())
        .collect()
}

/// Pulls until `count` passengers came or ten pulls in a row found nothing.
async fn pull_until(puller: &mut dyn Puller, count: usize) -> Pulled {
    let mut all = Pulled::default();
    let mut idle = 0;
    while all.passengers.len() < count && idle < 10 {
        match puller.pull(count - all.passengers.len()).await {
            Ok(pulled) if pulled.passengers.is_empty() => idle += 1,
            Ok(pulled) => all.passengers.extend(pulled.passengers),
            Err(error) => {
                assert!(error.retryable, "{error}");
                idle += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    all
}

/// A puller whose session subscribed (so what is published from now on waits for it), and
/// then went away without a word.
async fn subscribed(connection: &Connection, config: &Value) {
    let mut puller = build_puller(connection, config.clone()).unwrap();
    let pulled = puller.pull(1).await.unwrap();
    assert!(pulled.passengers.is_empty(), "a fresh topic");
}

/// The harness's source: a topic, and a puller's persistent session subscribed to it. Its
/// messages carry distinct payloads and the puller names them by `payload_hash`, so a message
/// redelivered after the crash comes back under its key (with the default `uuid` it would be a
/// new passenger: `mqtt_redelivered_message_is_a_new_passenger_by_default`). MQTT cannot tell
/// how many messages a session holds, so `remaining` is `None`; the redelivery tests below
/// check what the harness cannot.
struct Source {
    topic: String,
    config: Value,
}

#[async_trait::async_trait(?Send)]
impl PullerUnderTest for Source {
    async fn fill(&mut self, good: usize) -> Option<String> {
        subscribed(&connection("sensors"), &self.config).await;
        let (host, port) = broker();
        let payloads: Vec<String> = (0..good).map(|n| format!("{}#{n}", self.topic)).collect();
        publish(&host, port, &self.topic, &payloads).await;
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        build_puller(&connection("sensors"), self.config.clone()).unwrap()
    }

    async fn remaining(&self) -> Option<usize> {
        None
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let puller = build_puller(&unreachable(), self.config.clone()).unwrap();
        Some((puller, "127.0.0.1:1".into()))
    }
}

#[tokio::test]
async fn mqtt_puller_conforms() {
    let topic = unique("ferry/test");
    let config = json!({ "connection": "sensors", "topics": [topic], "client_id": client_id(),
                         "max_wait": "2s", "external_id": "payload_hash" });
    let mut source = Source { topic, config };
    conformance::puller_conforms(&mut source).await;
    forget_session(&source.config).await;
}

/// The harness's target: a topic a subscriber of the test's own listens to. MQTT 3.1.1
/// messages have no headers, so the payloads (distinct per passenger) name what arrived; a
/// re-push after a crash is a second copy (MQTT brokers do not de-duplicate), so the target
/// lists distinct payloads. `mqtt_repush_is_a_second_copy` shows the copy.
struct Target {
    topic: String,
    collector: Collector,
}

#[async_trait::async_trait(?Send)]
impl PusherUnderTest for Target {
    fn pusher(&self) -> Box<dyn Pusher> {
        let config = json!({ "connection": "sensors", "topic": "{metadata.topic}" });
        build_pusher(&connection("sensors"), config).unwrap()
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count)
            .map(|index| {
                let body = Body::json(&json!({ "topic": self.topic, "n": index }));
                let mut passenger = Passenger::pulled("test", index.to_string()).with_body(body);
                passenger
                    .metadata
                    .insert("topic".into(), self.topic.clone());
                passenger
            })
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        let mut passenger = Passenger::pulled("test", "wild");
        let wild = format!("{}/+/x", self.topic);
        passenger.metadata.insert("topic".into(), wild.clone());
        Some((passenger, format!("topic `{wild}` holds a wildcard")))
    }

    async fn delivered(&self) -> Vec<String> {
        self.collector.received().await
    }

    fn at_least_once(&self) -> bool {
        true
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers
            .iter()
            .map(|p| String::from_utf8_lossy(&p.body.data).into_owned())
            .collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let config = json!({ "connection": "sensors", "topic": "x" });
        Some((
            build_pusher(&unreachable(), config).unwrap(),
            "127.0.0.1:1".into(),
        ))
    }
}

#[tokio::test]
async fn mqtt_pusher_conforms() {
    let topic = unique("ferry/out");
    let (host, port) = broker();
    let collector = Collector::new(&host, port, &topic).await;
    let mut target = Target { topic, collector };
    conformance::pusher_conforms(&mut target).await;
}

#[tokio::test]
async fn mqtt_check_conforms() {
    conformance::check_conforms(&crate::registry(), &connection("sensors"), &unreachable()).await;
}

#[tokio::test]
async fn mqtt_persistent_session_keeps_what_is_published_while_ferry_is_away() {
    let topic = unique("ferry/away");
    let config = json!({ "connection": "sensors", "topics": [format!("{topic}/#")],
                         "client_id": client_id(), "max_wait": "2s" });
    let connection = connection("sensors");
    subscribed(&connection, &config).await;

    // ferry is away: the broker keeps these for its session.
    let (host, port) = broker();
    let sent: Vec<String> = (0..3).map(|n| format!("while away {n}")).collect();
    publish(&host, port, &format!("{topic}/a"), &sent).await;

    let mut puller = build_puller(&connection, config.clone()).unwrap();
    let pulled = pull_until(puller.as_mut(), 3).await;
    assert_eq!(payloads(&pulled), sent.iter().cloned().collect());
    let first = &pulled.passengers[0];
    assert_eq!(first.source_system, "mqtt:sensors");
    assert_eq!(first.metadata["mqtt.topic"], format!("{topic}/a"));
    assert_eq!(first.metadata["mqtt.qos"], "1");
    assert_eq!(first.metadata["mqtt.retain"], "false");
    assert_eq!(first.body.media_type, "application/octet-stream");
    puller.ack(&seated(&pulled)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(puller);

    // Acknowledged: a later session gets nothing of it again.
    let mut puller = build_puller(&connection, config.clone()).unwrap();
    let again = puller.pull(10).await.unwrap();
    assert!(again.passengers.is_empty(), "{:?}", payloads(&again));
    drop(puller);
    forget_session(&config).await;
}

#[tokio::test]
async fn mqtt_redelivery_after_a_puller_dropped_without_ack() {
    let topic = unique("ferry/crash");
    let config = json!({ "connection": "sensors", "topics": [topic], "client_id": client_id(),
                         "max_wait": "2s", "external_id": "payload_hash" });
    let connection = connection("sensors");
    subscribed(&connection, &config).await;
    let (host, port) = broker();
    let sent: Vec<String> = (0..3).map(|n| format!("order {n}")).collect();
    publish(&host, port, &topic, &sent).await;

    let mut first = build_puller(&connection, config.clone()).unwrap();
    let crashed = pull_until(first.as_mut(), 3).await;
    assert_eq!(crashed.passengers.len(), 3);
    drop(first);

    let mut second = build_puller(&connection, config.clone()).unwrap();
    let again = pull_until(second.as_mut(), 3).await;
    let keys = |pulled: &Pulled| -> BTreeSet<String> {
        pulled
            .passengers
            .iter()
            .map(|p| p.external_id.clone())
            .collect()
    };
    assert_eq!(
        keys(&again),
        keys(&crashed),
        "the same messages, the same keys"
    );
    assert!(
        again
            .passengers
            .iter()
            .all(|p| p.metadata["mqtt.dup"] == "true")
    );
    second.ack(&seated(&again)).await.unwrap();
    second.ack(&seated(&again)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(second);
    let mut third = build_puller(&connection, config.clone()).unwrap();
    assert!(third.pull(10).await.unwrap().passengers.is_empty());
    drop(third);
    forget_session(&config).await;
}

#[tokio::test]
async fn mqtt_redelivered_message_is_a_new_passenger_by_default() {
    let topic = unique("ferry/uuid");
    let config = json!({ "connection": "sensors", "topics": [topic], "client_id": client_id(),
                         "max_wait": "2s" });
    let connection = connection("sensors");
    subscribed(&connection, &config).await;
    let (host, port) = broker();
    publish(&host, port, &topic, &["same".to_string()]).await;

    let mut first = build_puller(&connection, config.clone()).unwrap();
    let crashed = pull_until(first.as_mut(), 1).await;
    drop(first);
    let mut second = build_puller(&connection, config.clone()).unwrap();
    let again = pull_until(second.as_mut(), 1).await;
    assert_eq!(payloads(&again), payloads(&crashed));
    // No stable id in MQTT 3.1.1: at-least-once, as documented.
    assert_ne!(
        again.passengers[0].external_id,
        crashed.passengers[0].external_id
    );
    second.ack(&seated(&again)).await.unwrap();
    drop(second);
    forget_session(&config).await;
}

#[tokio::test]
async fn mqtt_repush_is_a_second_copy() {
    let topic = unique("ferry/copy");
    let (host, port) = broker();
    let collector = Collector::new(&host, port, &topic).await;
    let pusher = build_pusher(
        &connection("sensors"),
        json!({ "connection": "sensors", "topic": topic, "retain": false }),
    )
    .unwrap();
    let passenger = Passenger::pulled("erp", "1").with_body(Body::json(&json!({ "a": 1 })));
    assert!(pusher.push(&[&passenger]).await[0].is_ok());
    assert!(pusher.push(&[&passenger]).await[0].is_ok());
    assert_eq!(collector.received().await, [r#"{"a":1}"#, r#"{"a":1}"#]);
}

#[tokio::test]
async fn mqtt_pusher_refuses_what_the_protocol_cannot_carry() {
    let topic = unique("ferry/limits");
    let pusher = build_pusher(
        &connection("sensors"),
        json!({ "connection": "sensors", "topic": "{metadata.topic}", "max_size": 10 }),
    )
    .unwrap();
    let mut big = Passenger::pulled("erp", "1").with_body(Body::json(&json!({ "long": "x" })));
    big.metadata.insert("topic".into(), topic.clone());
    let nowhere = Passenger::pulled("erp", "2");
    let mut fine = Passenger::pulled("erp", "3").with_body(Body::json(&json!(1)));
    fine.metadata.insert("topic".into(), topic.clone());
    let results = pusher.push(&[&big, &nowhere, &fine]).await;
    let error = results[0].as_ref().unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("larger than max_size"), "{error}");
    let error = results[1].as_ref().unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("topic is empty"), "{error}");
    assert!(results[2].is_ok(), "{results:?}");
}

#[tokio::test]
async fn mqtt_retained_message_arrives_with_its_flag() {
    let topic = unique("ferry/retained");
    let pusher = build_pusher(
        &connection("sensors"),
        json!({ "connection": "sensors", "topic": topic, "retain": true }),
    )
    .unwrap();
    let passenger = Passenger::pulled("erp", "1").with_body(Body::json(&json!("kept")));
    assert!(pusher.push(&[&passenger]).await[0].is_ok());

    // A subscriber that comes later gets it, flagged.
    let config = json!({ "connection": "sensors", "topics": [topic], "client_id": client_id(),
                         "max_wait": "2s", "media_type": "application/json" });
    let mut puller = build_puller(&connection("sensors"), config.clone()).unwrap();
    let pulled = pull_until(puller.as_mut(), 1).await;
    assert_eq!(pulled.passengers[0].metadata["mqtt.retain"], "true");
    assert_eq!(pulled.passengers[0].body.media_type, "application/json");
    puller.ack(&seated(&pulled)).await.unwrap();
    drop(puller);
    forget_session(&config).await;
    // Clear the retained message: an empty retained payload deletes it.
    let (host, port) = broker();
    let mut options = MqttOptions::new(client_id(), host, port);
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, Vec::new())
        .await
        .unwrap();
    for _ in 0..5 {
        if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(2), events.poll()).await
        {
            break;
        }
    }
}

/// A private Mosquitto keeping its sessions in the server's directory.
fn mosquitto(port: u16, dir: &std::path::Path) -> std::process::Command {
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\n",
            dir.display()
        ),
    )
    .expect("mosquitto.conf");
    let mut command = std::process::Command::new("/usr/sbin/mosquitto");
    command.arg("-c").arg(config);
    command
}

#[tokio::test]
async fn mqtt_broker_restart_loses_nothing() {
    let mut broker = TestServer::start(mosquitto);
    let connection = connection_at("sensors", "127.0.0.1", broker.port);
    let topic = unique("ferry/restart");
    let config = json!({ "connection": "sensors", "topics": [topic], "client_id": client_id(),
                         "max_wait": "1s" });
    let mut puller = build_puller(&connection, config).unwrap();
    assert!(puller.pull(1).await.unwrap().passengers.is_empty());
    let pusher = build_pusher(
        &connection,
        json!({ "connection": "sensors", "topic": topic }),
    )
    .unwrap();
    let message =
        |n: usize| Passenger::pulled("erp", n.to_string()).with_body(Body::json(&json!(n)));
    let before: Vec<Passenger> = (0..4).map(message).collect();
    let refs: Vec<&Passenger> = before.iter().collect();
    assert!(pusher.push(&refs).await.iter().all(Result::is_ok));

    // Two are seated and acknowledged, two pulled but not acknowledged, when the broker stops.
    let first = pull_until(puller.as_mut(), 2).await;
    puller.ack(&seated(&first)).await.unwrap();
    let open = pull_until(puller.as_mut(), 2).await;
    assert_eq!(open.passengers.len(), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.stop();

    // While it is down: retryable errors naming it, for both.
    let error = pusher.push(&[&message(9)]).await.remove(0).unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(
        error
            .message
            .contains(&format!("127.0.0.1:{}", broker.port)),
        "{error}"
    );
    let mut failed = false;
    for _ in 0..5 {
        match puller.pull(10).await {
            Err(error) => {
                assert!(error.retryable, "{error}");
                assert!(error.message.contains("`sensors`"), "{error}");
                failed = true;
                break;
            }
            Ok(pulled) => assert!(pulled.passengers.is_empty()),
        }
    }
    assert!(failed, "a pull says the broker is down");
    // The engine seats the open two meanwhile; their ack finds the connection gone and skips.
    puller.ack(&seated(&open)).await.unwrap();

    broker.up();
    let after: Vec<Passenger> = (4..6).map(message).collect();
    let refs: Vec<&Passenger> = after.iter().collect();
    let mut pushed = false;
    for _ in 0..5 {
        if pusher.push(&refs).await.iter().all(Result::is_ok) {
            pushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(pushed, "the pusher reconnects");

    // The session survived the restart: the two open ones come again, then the new two.
    let again = pull_until(puller.as_mut(), 4).await;
    let expected: BTreeSet<String> = ["2", "3", "4", "5"].map(String::from).into();
    let mut got = payloads(&again);
    // The redelivery of the open two can come twice (the puller's retries and the broker's
    // resend): at-least-once.
    got.retain(|payload| expected.contains(payload));
    assert_eq!(got, expected, "nothing lost: {:?}", payloads(&again));
    assert!(
        !payloads(&again).contains("0") && !payloads(&again).contains("1"),
        "what was acknowledged before the restart stays acknowledged"
    );
    puller.ack(&seated(&again)).await.unwrap();
}

#[test]
fn mqtt_bad_definitions_fail_at_their_key() {
    let good = connection("sensors");
    let puller = |config: Value| build_puller(&good, config).map(drop).unwrap_err();
    let error = puller(json!({ "connection": "sensors", "topics": [] }));
    assert_eq!(error.path, ["topics"]);
    let error = puller(json!({ "connection": "sensors", "topics": ["a", "b/#/c"] }));
    assert_eq!(error.path, ["topics", "1"]);
    let error = puller(json!({ "connection": "sensors", "topics": ["a+"] }));
    assert_eq!(error.path, ["topics", "0"]);
    let error = puller(json!({ "connection": "sensors", "topics": ["a"],
                               "client_id": "far-too-long-for-a-client-id" }));
    assert_eq!(error.path, ["client_id"]);
    let error = puller(json!({ "connection": "sensors", "topics": ["a"], "client_id": "a b" }));
    assert_eq!(error.path, ["client_id"]);
    let error = puller(json!({ "connection": "sensors", "topics": ["a"],
                               "external_id": "offset" }));
    assert_eq!(error.path, ["external_id"]);
    let error = puller(json!({ "connection": "sensors", "topics": ["a"], "qos": 2 }));
    assert!(error.message.contains("unknown field `qos`"), "{error}");

    let pusher = |config: Value| build_pusher(&good, config).map(drop).unwrap_err();
    let error = pusher(json!({ "connection": "sensors", "topic": "a/#" }));
    assert_eq!(error.path, ["topic"]);
    let error = pusher(json!({ "connection": "sensors", "topic": "{nope}" }));
    assert_eq!(error.path, ["topic"]);
    let error = pusher(json!({ "connection": "sensors", "topic": "a", "max_size": "1TB" }));
    assert_eq!(error.path, ["max_size"]);

    let bad = connection_with("sensors", json!({ "host": "h", "password": SECRET }));
    let error = build_pusher(&bad, json!({ "connection": "sensors", "topic": "a" }))
        .map(drop)
        .unwrap_err();
    assert!(error.message.contains("password"), "{error}");
    assert!(!error.message.contains(SECRET), "{error}");
    let bad = connection_with(
        "sensors",
        json!({ "host": "h", "tls": { "ca_file": "/nonexistent/ca.pem" } }),
    );
    let error = build_pusher(&bad, json!({ "connection": "sensors", "topic": "a" }))
        .map(drop)
        .unwrap_err();
    assert!(error.message.contains("ca_file"), "{error}");
}

#[test]
fn mqtt_connection_is_shown_without_its_password() {
    let connection = MqttConnection::read(
        &connection_with(
            "sensors",
            json!({ "host": "mqtt.example.com", "user": "ferry", "password": SECRET,
                    "tls": {} }),
        ),
        "/".as_ref(),
    )
    .unwrap();
    assert_eq!(connection.shown(), "mqtts://ferry@mqtt.example.com:8883");
    assert!(!format!("{connection:?}").contains(SECRET));
}

#[test]
fn mqtt_default_client_id_is_stable_short_and_distinct() {
    assert_eq!(default_client_id("acme", "plant"), "ferry-acme-plant");
    let long = default_client_id("acme", "a-rather-long-pipeline-name-1");
    let other = default_client_id("acme", "a-rather-long-pipeline-name-2");
    assert!(long.len() <= 23, "{long}");
    assert_ne!(long, other);
    assert_eq!(
        long,
        default_client_id("acme", "a-rather-long-pipeline-name-1")
    );
    assert_eq!(default_client_id("ac me", "x/y"), "ferry-ac_me-x_y");
}

/// Big batches, one after the other, arrive once each: a confirmation is matched to its own
/// message, also when packet ids wrap around.
#[tokio::test]
async fn mqtt_pusher_delivers_big_batches_once() {
    let topic = unique("ferry/batches");
    let (host, port) = broker();
    let collector = Collector::new(&host, port, &topic).await;
    let pusher = build_pusher(
        &connection("sensors"),
        json!({ "connection": "sensors", "topic": topic }),
    )
    .unwrap();
    for batch in 0..3 {
        let passengers: Vec<Passenger> = (0..1000)
            .map(|n| {
                Passenger::pulled("erp", format!("{batch}-{n}"))
                    .with_body(Body::json(&json!({ "batch": batch, "n": n })))
            })
            .collect();
        let refs: Vec<&Passenger> = passengers.iter().collect();
        let results = pusher.push(&refs).await;
        assert!(
            results.iter().all(Result::is_ok),
            "{:?}",
            results.iter().find(|r| r.is_err())
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = collector.received().await;
    let distinct: BTreeSet<&String> = received.iter().collect();
    assert_eq!((received.len(), distinct.len()), (3000, 3000));
}
