//! The `redis` connection, puller and pusher against the real Redis server
//! (`FERRY_TEST_REDIS`, default `127.0.0.1:6379`); each test uses its own keys. The restart
//! test runs a private `redis-server` (append-only file, so it keeps its data) on a free port.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::config::Connection;
use ferry_core::{Body, BuildContext, Passenger, Pulled, Puller, Pusher, Role, Seated};
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde_json::{Value as Json, json};

use crate::conformance::{self, SECRET};
use crate::test_server::TestServer;

/// `redis://host:port` of the shared test server.
fn server() -> String {
    let address = std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    match address.contains("://") {
        true => address,
        false => format!("redis://{address}"),
    }
}

/// A key no other test uses.
fn unique(prefix: &str) -> String {
    format!("ferry-test-{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// The `redis` connection `cache` to `url`, granted to `acme`.
fn connection(url: &str, extra: Json) -> Connection {
    let mut config = json!({ "url": url, "timeout": "3s" });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Connection {
        name: "cache".into(),
        kind: "redis".into(),
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
        component: "redis".into(),
        connections: Arc::new(connections),
        ..BuildContext::default()
    }
}

fn puller_at(url: &str, config: Json) -> Box<dyn Puller> {
    crate::registry()
        .puller("redis", &config, &context(connection(url, json!({}))))
        .expect("a valid puller")
}

fn pusher_at(url: &str, config: Json) -> Box<dyn Pusher> {
    crate::registry()
        .pusher("redis", &config, &context(connection(url, json!({}))))
        .expect("a valid pusher")
}

async fn redis_at(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("a url")
        .get_multiplexed_async_connection()
        .await
        .expect("the Redis test server")
}

/// Adds entries `m0`… to `stream` with a `body` field; returns their ids.
async fn add(redis: &mut MultiplexedConnection, stream: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..count {
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("body")
            .arg(format!("m{index}"))
            .query_async(redis)
            .await
            .expect("XADD");
        ids.push(id);
    }
    ids
}

/// Entries of the group not yet acknowledged: pending, plus not yet delivered (the stream's
/// length before the group exists).
async fn outstanding(redis: &mut MultiplexedConnection, stream: &str, group: &str) -> usize {
    let groups: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(redis)
        .await;
    let mut last = None;
    let mut pending = 0;
    if let Ok(Value::Array(groups)) = groups {
        for info in groups {
            let Value::Array(flat) = info else { continue };
            let fields: BTreeMap<String, Value> = flat
                .chunks(2)
                .map(|pair| (text(&pair[0]), pair[1].clone()))
                .collect();
            if fields.get("name").map(text).as_deref() == Some(group) {
                last = fields.get("last-delivered-id").map(text);
                if let Some(Value::Int(count)) = fields.get("pending") {
                    pending = *count as usize;
                }
            }
        }
    }
    let Some(last) = last else {
        let length: usize = redis::cmd("XLEN")
            .arg(stream)
            .query_async(redis)
            .await
            .expect("XLEN");
        return length;
    };
    let after: Vec<Value> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({last}"))
        .arg("+")
        .query_async(redis)
        .await
        .expect("XRANGE");
    pending + after.len()
}

/// Every entry of `stream`: (id, fields).
async fn entries(
    redis: &mut MultiplexedConnection,
    stream: &str,
) -> Vec<(String, BTreeMap<String, String>)> {
    let reply: Vec<Value> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .expect("XRANGE");
    let mut found = Vec::new();
    for entry in reply {
        let Value::Array(pair) = entry else { continue };
        let Value::Array(flat) = &pair[1] else {
            continue;
        };
        let fields = flat
            .chunks(2)
            .map(|pair| (text(&pair[0]), text(&pair[1])))
            .collect();
        found.push((text(&pair[0]), fields));
    }
    found
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        Value::Int(number) => number.to_string(),
        _ => String::new(),
    }
}

async fn delete(redis: &mut MultiplexedConnection, keys: &[&str]) {
    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query_async(redis).await;
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

/// The harness's source: a stream and a group of their own.
struct Source {
    redis: MultiplexedConnection,
    stream: String,
    group: String,
}

#[async_trait::async_trait(?Send)]
impl conformance::PullerUnderTest for Source {
    async fn fill(&mut self, good: usize) -> Option<String> {
        add(&mut self.redis, &self.stream, good).await;
        // An entry without the body field.
        let id: String = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("other")
            .arg("x")
            .query_async(&mut self.redis)
            .await
            .expect("XADD");
        Some(id)
    }

    fn puller(&self) -> Box<dyn Puller> {
        puller_at(
            &server(),
            json!({ "connection": "cache", "stream": self.stream, "group": self.group,
                    "max_wait": "200ms" }),
        )
    }

    async fn remaining(&self) -> Option<usize> {
        let mut redis = self.redis.clone();
        Some(outstanding(&mut redis, &self.stream, &self.group).await)
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let connection = connection(
            &format!("redis://ferry:{SECRET}@127.0.0.1:1"),
            json!({ "password": SECRET }),
        );
        let puller = crate::registry()
            .puller(
                "redis",
                &json!({ "connection": "cache", "stream": self.stream }),
                &context(connection),
            )
            .expect("a valid puller");
        Some((puller, "127.0.0.1:1".into()))
    }
}

#[tokio::test]
async fn redis_puller_conforms() {
    let redis = redis_at(&server()).await;
    let stream = unique("conf");
    let mut source = Source {
        redis: redis.clone(),
        stream: stream.clone(),
        group: "g".into(),
    };
    conformance::puller_conforms(&mut source).await;
    delete(&mut redis.clone(), &[&stream]).await;
}

/// The harness's target: a stream of its own; a key holding a string is the entry it refuses.
struct Target {
    redis: MultiplexedConnection,
    stream: String,
    not_a_stream: String,
}

#[async_trait::async_trait(?Send)]
impl conformance::PusherUnderTest for Target {
    fn pusher(&self) -> Box<dyn Pusher> {
        pusher_at(
            &server(),
            json!({ "connection": "cache", "stream": "{metadata.stream}",
                    "fields": { "kind": "{metadata.kind}" } }),
        )
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count)
            .map(|index| order(&index.to_string(), &self.stream))
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        Some((order("bad", &self.not_a_stream), self.not_a_stream.clone()))
    }

    async fn delivered(&self) -> Vec<String> {
        let mut redis = self.redis.clone();
        entries(&mut redis, &self.stream)
            .await
            .into_iter()
            .map(|(_, fields)| fields.get("ferry-id").cloned().unwrap_or_default())
            .collect()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers.iter().map(|p| p.id.to_string()).collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let connection = connection("redis://127.0.0.1:1", json!({ "password": SECRET }));
        let pusher = crate::registry()
            .pusher(
                "redis",
                &json!({ "connection": "cache", "stream": "s" }),
                &context(connection),
            )
            .expect("a valid pusher");
        Some((pusher, "127.0.0.1:1".into()))
    }
}

/// A JSON order for `stream`, `kind: order`.
fn order(id: &str, stream: &str) -> Passenger {
    let mut passenger = Passenger::pulled("test", id).with_body(Body::json(&json!({ "id": id })));
    passenger.metadata.insert("kind".into(), "order".into());
    passenger.metadata.insert("stream".into(), stream.into());
    passenger
}

#[tokio::test]
async fn redis_pusher_conforms() {
    let mut redis = redis_at(&server()).await;
    let stream = unique("push");
    let not_a_stream = unique("string");
    let _: () = redis::cmd("SET")
        .arg(&not_a_stream)
        .arg("x")
        .query_async(&mut redis)
        .await
        .expect("SET");
    let mut target = Target {
        redis: redis.clone(),
        stream: stream.clone(),
        not_a_stream: not_a_stream.clone(),
    };
    conformance::pusher_conforms(&mut target).await;
    delete(&mut redis, &[&stream, &not_a_stream]).await;
}

#[tokio::test]
async fn redis_check_conforms() {
    let good = connection(&server(), json!({}));
    let unreachable = connection(
        &format!("redis://ferry:{SECRET}@127.0.0.1:1"),
        json!({ "password": SECRET }),
    );
    conformance::check_conforms(&crate::registry(), &good, &unreachable).await;
}

/// A restarted puller first re-reads its own pending list: what the crashed process was given
/// and never acknowledged comes back at once (not after `claim_idle`), under the same ids, with
/// the other fields as metadata.
#[tokio::test]
async fn redis_pending_list_is_reread_at_start() {
    let mut redis = redis_at(&server()).await;
    let stream = unique("pel");
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("body")
        .arg("{\"a\":1}")
        .arg("content_type")
        .arg("application/json")
        .arg("trace")
        .arg(b"t-\xff".as_slice())
        .query_async(&mut redis)
        .await
        .expect("XADD");
    add(&mut redis, &stream, 2).await;
    let config = json!({ "connection": "cache", "stream": stream, "max_wait": "100ms" });

    let mut first = puller_at(&server(), config.clone());
    let crashed = first.pull(10).await.expect("pulled");
    assert_eq!(crashed.passengers.len(), 3);
    let entry = &crashed.passengers[0];
    assert_eq!(entry.source_system, "redis:cache");
    assert_eq!(
        entry.external_id,
        format!("{stream}/{}", entry.metadata["redis.id"])
    );
    assert_eq!(entry.metadata["redis.stream"], stream);
    assert_eq!(
        entry.metadata["redis.field.trace"], "t-\u{fffd}",
        "lossily converted"
    );
    assert_eq!(entry.body.media_type, "application/json");
    assert_eq!(entry.body.data.as_ref(), b"{\"a\":1}");
    assert!(crashed.state.is_some());
    drop(first);

    let mut second = puller_at(&server(), config);
    let started = Instant::now();
    let again = second.pull(10).await.expect("pulled");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after claim_idle"
    );
    assert_eq!(
        ids(&again),
        ids(&crashed),
        "the same entries, under the same keys"
    );
    second.ack(&seat(&again)).await.expect("acked");
    second
        .ack(&seat(&again))
        .await
        .expect("a second ack is fine");
    assert_eq!(
        outstanding(&mut redis, &stream, "ferry-acme-events").await,
        0
    );
    delete(&mut redis, &[&stream]).await;
}

/// Entries a dead consumer held for `claim_idle` are claimed by another one (XAUTOCLAIM).
#[tokio::test]
async fn redis_claims_entries_of_a_dead_consumer() {
    let mut redis = redis_at(&server()).await;
    let stream = unique("claim");
    add(&mut redis, &stream, 2).await;
    let config = |consumer: &str| {
        json!({ "connection": "cache", "stream": stream, "consumer": consumer,
                "claim_idle": "700ms", "max_wait": "100ms" })
    };
    let mut dead = puller_at(&server(), config("a"));
    let held = dead.pull(10).await.expect("pulled");
    assert_eq!(held.passengers.len(), 2);
    drop(dead);

    let mut alive = puller_at(&server(), config("b"));
    let early = alive.pull(10).await.expect("pulled");
    assert!(
        early.passengers.is_empty(),
        "not before claim_idle: {:?}",
        ids(&early)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let claimed = alive.pull(10).await.expect("pulled");
    assert_eq!(ids(&claimed), ids(&held), "claimed under the same keys");
    alive.ack(&seat(&claimed)).await.expect("acked");
    assert_eq!(
        outstanding(&mut redis, &stream, "ferry-acme-events").await,
        0
    );
    delete(&mut redis, &[&stream]).await;
}

/// An entry delivered more than `max_deliveries` times fails permanently with its id, and stays
/// pending (nothing is lost).
#[tokio::test]
async fn redis_max_deliveries_fails_the_entry_with_its_id() {
    let mut redis = redis_at(&server()).await;
    let stream = unique("poison");
    let id = add(&mut redis, &stream, 1).await.remove(0);
    let config = json!({ "connection": "cache", "stream": stream, "max_deliveries": 2,
                         "max_wait": "100ms" });
    for delivery in 1..=2 {
        let mut puller = puller_at(&server(), config.clone());
        let pulled = puller.pull(10).await.expect("pulled");
        assert_eq!(pulled.passengers.len(), 1, "delivery {delivery} travels");
    }
    let mut puller = puller_at(&server(), config);
    let pulled = puller.pull(10).await.expect("pulled");
    assert!(pulled.passengers.is_empty());
    assert_eq!(pulled.failures.len(), 1);
    let failure = &pulled.failures[0];
    assert_eq!(failure.external_id, format!("{stream}/{id}"));
    assert!(!failure.error.retryable);
    assert!(failure.error.message.contains(&id), "{}", failure.error);
    assert!(
        failure.error.message.contains("3 times"),
        "{}",
        failure.error
    );
    assert_eq!(
        outstanding(&mut redis, &stream, "ferry-acme-events").await,
        1,
        "still pending"
    );

    // Once quarantined, the entry is left alone.
    puller.quarantined(
        [(failure.external_id.clone(), String::new())]
            .into_iter()
            .collect(),
    );
    let mut again = puller_at(
        &server(),
        json!({ "connection": "cache", "stream": stream,
        "max_deliveries": 2, "max_wait": "100ms" }),
    );
    again.quarantined(
        [(failure.external_id.clone(), String::new())]
            .into_iter()
            .collect(),
    );
    let pulled = again.pull(10).await.expect("pulled");
    assert!(pulled.failures.is_empty() && pulled.passengers.is_empty());

    // A person ends the quarantine after a fix: the entry travels again, under its key.
    again.quarantined(HashSet::new());
    let replayed = again.pull(10).await.expect("pulled");
    assert!(replayed.failures.is_empty(), "{:?}", replayed.failures);
    assert_eq!(ids(&replayed), std::slice::from_ref(&failure.external_id));
    again.ack(&seat(&replayed)).await.expect("acked");
    assert_eq!(
        outstanding(&mut redis, &stream, "ferry-acme-events").await,
        0
    );
    delete(&mut redis, &[&stream]).await;
}

/// A re-push of the same passengers adds nothing: the Lua script remembers each passenger id.
#[tokio::test]
async fn redis_pusher_deduplicates_with_the_lua_script() {
    let mut redis = redis_at(&server()).await;
    let stream = unique("dup");
    let config = json!({ "connection": "cache", "stream": stream, "dedupe_ttl": "1h",
                         "fields": { "origin": "{source_system}/{external_id}" } });
    let passengers = [order("1", &stream), order("2", &stream)];
    let refs: Vec<&Passenger> = passengers.iter().collect();
    for _ in 0..2 {
        let results = pusher_at(&server(), config.clone()).push(&refs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    let stored = entries(&mut redis, &stream).await;
    assert_eq!(stored.len(), 2, "each passenger once");
    let (id, fields) = &stored[0];
    assert_eq!(fields["ferry-id"], passengers[0].id.to_string());
    assert_eq!(fields["body"], "{\"id\":\"1\"}");
    assert_eq!(fields["content_type"], "application/json");
    assert_eq!(fields["origin"], "test/1");
    let seen = format!("ferry:seen:{stream}:{}", passengers[0].id);
    let remembered: String = redis::cmd("GET")
        .arg(&seen)
        .query_async(&mut redis)
        .await
        .expect("GET");
    assert_eq!(&remembered, id);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&seen)
        .query_async(&mut redis)
        .await
        .expect("TTL");
    assert!(ttl > 3500 && ttl <= 3600, "{ttl}");
    let other = format!("ferry:seen:{stream}:{}", passengers[1].id);
    delete(&mut redis, &[&stream, &seen, &other]).await;
}

#[test]
fn redis_bad_definitions_fail_at_their_key() {
    let registry = crate::registry();
    let ctx = context(connection(&server(), json!({})));
    let cases = [
        (Role::Puller, json!({ "connection": "cache" }), ""),
        (
            Role::Puller,
            json!({ "connection": "nope", "stream": "s" }),
            "connection",
        ),
        (
            Role::Puller,
            json!({ "connection": "cache", "stream": "s", "start": "1" }),
            "start",
        ),
        (
            Role::Puller,
            json!({ "connection": "cache", "stream": "s", "max_deliveries": 0 }),
            "max_deliveries",
        ),
        (
            Role::Puller,
            json!({ "connection": "cache", "stream": "s", "claim_idle": "soon" }),
            "claim_idle",
        ),
        (
            Role::Puller,
            json!({ "connection": "cache", "stream": "s", "colour": "red" }),
            "colour",
        ),
        (
            Role::Pusher,
            json!({ "connection": "cache", "stream": "{nope}" }),
            "stream",
        ),
        (
            Role::Pusher,
            json!({ "connection": "cache", "stream": "s", "fields": { "ferry-id": "x" } }),
            "fields.ferry-id",
        ),
        (
            Role::Pusher,
            json!({ "connection": "cache", "stream": "s", "max_len": 0 }),
            "max_len",
        ),
    ];
    for (role, config, key) in cases {
        let error = registry
            .check(role, "redis", &config, &ctx)
            .expect_err(&config.to_string());
        assert_eq!(error.path.join("."), key, "{config}: {error}");
    }
    let bad_url = context(connection("http://x", json!({})));
    let error = registry
        .check(
            Role::Puller,
            "redis",
            &json!({ "connection": "cache", "stream": "s" }),
            &bad_url,
        )
        .expect_err("not a redis url");
    assert!(error.message.contains("redis://"), "{error}");
}

/// A private Redis keeping every write in its append-only file in the server's directory.
fn redis_server(port: u16, dir: &std::path::Path) -> std::process::Command {
    let binary = std::env::var("FERRY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut command = std::process::Command::new(binary);
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--dir"])
        .arg(dir);
    command
}

/// Waits until the Redis at `url` answers (it takes connections while it loads its data).
fn wait_ready(url: &str) {
    let started = Instant::now();
    while redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server is ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The broker restarted mid-run: calls made while it is down fail retryably, naming it; once it
/// is back the same puller and pusher reconnect, and every entry arrives exactly once.
#[tokio::test]
async fn redis_broker_restart_loses_nothing() {
    let mut server = TestServer::start(redis_server);
    let url = format!("redis://127.0.0.1:{}", server.port);
    wait_ready(&url);
    let mut redis = redis_at(&url).await;
    add(&mut redis, "in", 10).await;
    drop(redis);

    let mut puller = puller_at(
        &url,
        json!({ "connection": "cache", "stream": "in", "max_wait": "200ms" }),
    );
    let pusher = pusher_at(&url, json!({ "connection": "cache", "stream": "out" }));
    let first = puller.pull(4).await.expect("pulled");
    let copies = first.passengers.clone();
    let refs: Vec<&Passenger> = copies.iter().collect();
    assert!(pusher.push(&refs).await.iter().all(Result::is_ok));
    puller.ack(&seat(&first)).await.expect("acked");
    let mut seen = ids(&first);

    let unacked = puller.pull(2).await.expect("pulled");
    assert_eq!(unacked.passengers.len(), 2);
    server.kill();
    // Seated, but the broker is gone: the ack is skipped, not failed; they come back.
    puller
        .ack(&seat(&unacked))
        .await
        .expect("an ack never fails");
    let down = puller.pull(4).await.expect_err("the broker is down");
    assert!(down.retryable && down.message.contains(&url[8..]), "{down}");
    let results = pusher.push(&refs).await;
    let error = results[0].as_ref().expect_err("the broker is down");
    assert!(
        error.retryable && error.message.contains("`cache`"),
        "{error}"
    );

    server.up();
    wait_ready(&url);
    // The queue: a message pulled again travels as the passenger first seated for it.
    let mut queue: BTreeMap<String, Passenger> = copies
        .iter()
        .map(|p| (p.external_id.clone(), p.clone()))
        .collect();
    let started = Instant::now();
    while seen.len() < 10 && started.elapsed() < Duration::from_secs(30) {
        let pulled = match puller.pull(4).await {
            Ok(pulled) => pulled,
            Err(error) => {
                assert!(error.retryable, "{error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
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
        if pusher.push(&refs).await.iter().any(Result::is_err) {
            continue;
        }
        puller.ack(&seat(&pulled)).await.expect("acked");
        seen.extend(ids(&pulled));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10, "every entry pulled: {seen:?}");
    let mut redis = redis_at(&url).await;
    let out = entries(&mut redis, "out").await;
    let mut out_ids: Vec<String> = out.iter().map(|(_, f)| f["ferry-id"].clone()).collect();
    out_ids.sort();
    out_ids.dedup();
    assert_eq!(out.len(), 10, "every entry once at the other side");
    assert_eq!(out_ids.len(), 10);
    assert_eq!(
        outstanding(&mut redis, "in", "ferry-acme-events").await,
        0,
        "all acknowledged"
    );
}

/// `max_len` trims the stream as entries are added (`MAXLEN ~`, whole nodes at a time).
#[tokio::test]
async fn redis_pusher_trims_to_max_len() {
    let mut redis = redis_at(&server()).await;
    let stream = unique("trim");
    let pusher = pusher_at(
        &server(),
        json!({ "connection": "cache", "stream": stream, "max_len": 10, "dedupe_ttl": "1m" }),
    );
    let passengers: Vec<Passenger> = (0..350).map(|i| order(&i.to_string(), &stream)).collect();
    let refs: Vec<&Passenger> = passengers.iter().collect();
    assert!(pusher.push(&refs).await.iter().all(Result::is_ok));
    let length: usize = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .expect("XLEN");
    assert!(length < 350, "trimmed: {length}");
    let mut keys: Vec<String> = passengers
        .iter()
        .map(|p| format!("ferry:seen:{stream}:{}", p.id))
        .collect();
    keys.push(stream.clone());
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    delete(&mut redis, &keys).await;
}
