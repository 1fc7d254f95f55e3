//! The `webhook` puller through its hub, as the console drives it: configuration, every
//! authentication scheme, 202 only after `ack`, duplicates, back-pressure, and the conformance
//! harness with senders that retry like real ones. The HTTP side (the console's handler, body
//! limits while reading, a real listener) is tested in crates/ferry/tests/webhook.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_core::{BuildContext, BuildError, Puller, Seated};
use serde_json::{Value, json};

use super::{Answer, Delivery, Endpoint, github_signature, hub, stripe_signature};

const SECRET: &str = "gh-SECRET-current";
const OLD_SECRET: &str = "gh-SECRET-previous";

/// A pipeline name no other test uses: the hub is process-wide.
fn unique() -> String {
    format!("hook-{}", uuid::Uuid::now_v7().simple())
}

fn context(pipeline: &str) -> BuildContext {
    BuildContext {
        client: "acme".into(),
        pipeline: pipeline.into(),
        component: "webhook".into(),
        ..BuildContext::default()
    }
}

fn build(config: &Value, pipeline: &str) -> Result<Box<dyn Puller>, BuildError> {
    crate::registry().puller("webhook", config, &context(pipeline))
}

/// A puller whose run started, and its endpoint.
fn live(config: Value) -> (Box<dyn Puller>, Arc<Endpoint>) {
    let name = unique();
    let mut puller = build(&config, &name).unwrap();
    puller.restore(None);
    let endpoint = hub()
        .endpoint(&format!("acme/{name}"))
        .expect("registered at the start of the run");
    (puller, endpoint)
}

fn github() -> Value {
    json!({ "auth": { "github": [SECRET, OLD_SECRET] } })
}

fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
        .collect()
}

fn delivery(headers: Vec<(String, String)>, body: &[u8]) -> Delivery {
    Delivery {
        method: "POST".into(),
        headers,
        body: Bytes::copy_from_slice(body),
        remote: Some("203.0.113.7:4711".parse().unwrap()),
    }
}

/// A delivery signed as GitHub signs it, with a delivery id.
fn signed(secret: &str, id: &str, body: &[u8]) -> Delivery {
    let signature = github_signature(secret, body);
    delivery(
        headers(&[
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Delivery", id),
            ("Content-Type", "application/json; charset=utf-8"),
            ("User-Agent", "GitHub-Hookshot/abc"),
            ("X-GitHub-Event", "push"),
        ]),
        body,
    )
}

fn spawn_delivery(endpoint: &Arc<Endpoint>, delivery: Delivery) -> tokio::task::JoinHandle<Answer> {
    let endpoint = endpoint.clone();
    tokio::spawn(async move { endpoint.deliver(delivery).await })
}

fn seated(passengers: &[ferry_core::Passenger], duplicate: bool) -> Vec<Seated> {
    passengers
        .iter()
        .map(|p| Seated {
            source_system: p.source_system.clone(),
            external_id: p.external_id.clone(),
            duplicate,
        })
        .collect()
}

fn assert_refused(answer: &Answer, status: u16, says: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "`{says}` not in {answer:?}");
    for secret in [
        SECRET,
        OLD_SECRET,
        "tok-SECRET",
        "pw-SECRET",
        "whsec_SECRET",
    ] {
        assert!(!message.contains(secret), "a secret in {answer:?}");
    }
}

// ---- configuration ----

#[test]
fn a_webhook_without_authentication_is_refused() {
    let error = build(&json!({}), "x").err().unwrap();
    assert_eq!(error.path, ["auth"]);
    assert!(error.message.contains("must authenticate"), "{error}");
}

#[test]
fn bad_settings_are_refused_at_their_key_without_the_secret() {
    let cases = [
        (
            json!({ "auth": { "github": [] } }),
            vec!["auth", "github"],
            "at least one",
        ),
        (
            json!({ "auth": { "github": "" } }),
            vec!["auth", "github"],
            "empty secret",
        ),
        (
            json!({ "auth": { "bearer": ["tok-SECRET", " "] } }),
            vec!["auth", "bearer"],
            "empty",
        ),
        (
            json!({ "auth": { "stripe": { "secrets": "whsec_SECRET", "tolerance": "soon" } } }),
            vec!["auth", "stripe", "tolerance"],
            "invalid duration",
        ),
        (
            json!({ "auth": { "basic": { "user": "a:b", "password": "pw-SECRET" } } }),
            vec!["auth", "basic"],
            "`:`",
        ),
        (
            json!({ "auth": { "github": SECRET }, "path": "a/b" }),
            vec!["path"],
            "one segment",
        ),
        (
            json!({ "auth": { "github": SECRET }, "max_body": "10 parsecs" }),
            vec!["max_body"],
            "unknown unit",
        ),
        (
            json!({ "auth": { "github": SECRET }, "max_body": "1GiB" }),
            vec!["max_body"],
            "256MiB",
        ),
        (
            json!({ "auth": { "github": SECRET }, "keep_headers": ["X Event"] }),
            vec!["keep_headers"],
            "no header name",
        ),
        (
            json!({ "auth": { "github": SECRET }, "timeout": "0s" }),
            vec!["timeout"],
            "longer than zero",
        ),
        (
            json!({ "auth": { "github": SECRET }, "capacity": 0 }),
            vec!["capacity"],
            "between 1",
        ),
    ];
    for (config, path, says) in cases {
        let error = build(&config, "x")
            .err()
            .unwrap_or_else(|| panic!("{config}"));
        assert_eq!(error.path, path, "{config}: {error}");
        assert!(error.message.contains(says), "{config}: {error}");
        for secret in [SECRET, "tok-SECRET", "pw-SECRET", "whsec_SECRET"] {
            assert!(!error.to_string().contains(secret), "{error}");
        }
    }
    let error = build(
        &json!({ "auth": { "github": SECRET }, "verify": false }),
        "x",
    )
    .err()
    .unwrap();
    assert!(error.message.contains("unknown field `verify`"), "{error}");
}

// ---- when an endpoint is live ----

#[tokio::test]
async fn building_registers_nothing_a_run_does_and_dropping_unregisters() {
    let name = unique();
    let path = format!("acme/{name}");
    let mut puller = build(&github(), &name).unwrap();
    assert!(
        hub().endpoint(&path).is_none(),
        "validation builds pullers too"
    );
    // A peek pulls without a run: nothing waits for it, and it takes nothing.
    let pulled = puller.pull(10).await.unwrap();
    assert!(pulled.passengers.is_empty() && !pulled.more);
    assert!(hub().endpoint(&path).is_none());

    puller.restore(None);
    let first = hub().endpoint(&path).expect("live once its run starts");
    // A changed definition's puller takes over; the old one's drop leaves it alone.
    let mut next = build(&github(), &name).unwrap();
    next.restore(None);
    drop(puller);
    let now = hub()
        .endpoint(&path)
        .expect("the new puller still receives");
    assert!(!Arc::ptr_eq(&first, &now));
    drop(next);
    assert!(hub().endpoint(&path).is_none(), "stopped: nothing receives");
}

#[tokio::test]
async fn a_suffix_makes_its_own_path() {
    let name = unique();
    let mut config = github();
    config["path"] = json!("github");
    let mut puller = build(&config, &name).unwrap();
    puller.restore(None);
    assert!(hub().endpoint(&format!("acme/{name}/github")).is_some());
    assert!(hub().endpoint(&format!("acme/{name}")).is_none());
}

// ---- authentication ----

/// The example of GitHub's "Validating webhook deliveries", and a Stripe signature computed
/// with `openssl dgst -sha256 -hmac`: the signing is checked against others' arithmetic.
#[test]
fn signatures_match_independent_computations() {
    assert_eq!(
        github_signature("It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    assert_eq!(
        stripe_signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
        "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
    );
    let verifier = super::auth::Verifier::new(
        &serde_json::from_value(json!({
            "github": "It's a Secret to Everybody"
        }))
        .unwrap(),
    )
    .unwrap();
    let sent = headers(&[(
        "X-Hub-Signature-256",
        "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
    )]);
    assert_eq!(verifier.verify(&sent, b"Hello, World!", 0), Ok(()));
}

#[tokio::test]
async fn github_signatures_with_any_listed_secret_pass_others_are_refused() {
    let (mut puller, endpoint) = live(github());
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let current = spawn_delivery(&endpoint, signed(SECRET, "g-1", body));
    let rotated = spawn_delivery(&endpoint, signed(OLD_SECRET, "g-2", body));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 2);
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
    assert_eq!(current.await.unwrap().status, 202);
    assert_eq!(rotated.await.unwrap().status, 202);

    let wrong = endpoint.deliver(signed("gh-guess", "g-3", body)).await;
    assert_refused(&wrong, 401, "matches none of the webhook's secrets");
    // Signed over another body.
    let mut tampered = signed(SECRET, "g-4", body);
    tampered.body = Bytes::from_static(br#"{"zen":"tampered"}"#);
    assert_refused(&endpoint.deliver(tampered).await, 401, "matches none");
    let unsigned = delivery(headers(&[("X-GitHub-Delivery", "g-5")]), body);
    assert_refused(
        &endpoint.deliver(unsigned).await,
        401,
        "missing the X-Hub-Signature-256",
    );
    let malformed = delivery(headers(&[("X-Hub-Signature-256", "sha1=abc")]), body);
    assert_refused(&endpoint.deliver(malformed).await, 401, "64 hex digits");
    let nothing = puller.pull(10).await.unwrap();
    assert!(
        nothing.passengers.is_empty(),
        "refused deliveries never travel"
    );
}

#[tokio::test]
async fn stripe_signatures_pass_within_the_tolerance_and_replays_are_refused() {
    let config = json!({ "auth": { "stripe": { "secrets": ["whsec_SECRET", "whsec_SECRET_OLD"], "tolerance": "5m" } } });
    let (mut puller, endpoint) = live(config);
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let now = chrono::Utc::now().timestamp();
    let stripe = |secret: &str, at: i64| {
        delivery(
            headers(&[
                ("Stripe-Signature", &stripe_signature(secret, at, body)),
                ("Content-Type", "application/json"),
            ]),
            body,
        )
    };
    let good = spawn_delivery(&endpoint, stripe("whsec_SECRET", now));
    let rotated = spawn_delivery(&endpoint, stripe("whsec_SECRET_OLD", now - 60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 2);
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
    assert_eq!(good.await.unwrap().status, 202);
    assert_eq!(rotated.await.unwrap().status, 202);

    let expired = endpoint.deliver(stripe("whsec_SECRET", now - 301)).await;
    assert_refused(&expired, 401, "more than the tolerance of 300 s");
    let wrong = endpoint.deliver(stripe("whsec_guess", now)).await;
    assert_refused(&wrong, 401, "no v1 signature");
    // Stripe may send several v1 signatures (while a secret is rolled): any one will do.
    let several = format!(
        "t={now},v1={},{}",
        "0".repeat(64),
        stripe_signature("whsec_SECRET", now, body)
            .split_once(',')
            .unwrap()
            .1
    );
    let answer = spawn_delivery(
        &endpoint,
        delivery(headers(&[("Stripe-Signature", &several)]), body),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pulled = puller.pull(10).await.unwrap();
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
    assert_eq!(answer.await.unwrap().status, 202);
    let unsigned = delivery(headers(&[("Stripe-Signature", &format!("t={now}"))]), body);
    assert_refused(&endpoint.deliver(unsigned).await, 401, "at least one `v1=`");
}

#[tokio::test]
async fn bearer_tokens_and_basic_credentials_are_checked_before_the_body() {
    let (_bearer_puller, bearer) =
        live(json!({ "auth": { "bearer": ["tok-SECRET", "tok-SECRET-2"] } }));
    let with = |value: &str| headers(&[("Authorization", value)]);
    assert!(bearer.admit(&with("Bearer tok-SECRET"), None).is_ok());
    assert!(bearer.admit(&with("bearer tok-SECRET-2"), None).is_ok());
    let wrong = bearer.admit(&with("Bearer tok-guess"), None).unwrap_err();
    assert_refused(&wrong, 401, "not one of the webhook's tokens");
    let missing = bearer.admit(&[], None).unwrap_err();
    assert_refused(&missing, 401, "Authorization: Bearer");

    let (_basic_puller, basic) =
        live(json!({ "auth": { "basic": [{ "user": "partner", "password": "pw-SECRET" }] } }));
    // "partner:pw-SECRET"
    let good = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "partner:pw-SECRET"
        )
    );
    assert!(basic.admit(&with(&good), None).is_ok());
    let wrong = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "partner:guess")
    );
    let refused = basic.admit(&with(&wrong), None).unwrap_err();
    assert_refused(&refused, 401, "user or password is wrong");
    assert!(
        refused
            .headers
            .iter()
            .any(|(name, _)| *name == "www-authenticate"),
        "{refused:?}"
    );
    // Signatures wait for the body.
    let (_github_puller, signed_endpoint) = live(github());
    assert!(signed_endpoint.admit(&[], None).is_ok());
}

// ---- answers ----

/// The sender hears 202 only once `ack` says the delivery is seated, never before.
#[tokio::test]
async fn the_sender_hears_202_only_after_the_ack() {
    let (mut puller, endpoint) = live(github());
    let sender = spawn_delivery(&endpoint, signed(SECRET, "delivery-1", b"{\"n\":1}"));
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 1);
    assert!(pulled.more, "a stream that just delivered may have more");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !sender.is_finished(),
        "no answer before the seat is acknowledged"
    );
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
    let answer = sender.await.unwrap();
    assert_eq!(answer.status, 202);
    assert_eq!(
        answer.body,
        json!({ "id": "delivery-1", "duplicate": false })
    );
    // A second ack of the same items (after a crash) is harmless.
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_redelivery_is_a_duplicate_and_still_202() {
    let (mut puller, endpoint) = live(github());
    let again = spawn_delivery(&endpoint, signed(SECRET, "same-id", b"{}"));
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers[0].external_id, "same-id");
    // The queue already held it.
    puller.ack(&seated(&pulled.passengers, true)).await.unwrap();
    assert_eq!(
        again.await.unwrap().body,
        json!({ "id": "same-id", "duplicate": true })
    );
}

#[tokio::test]
async fn the_passenger_carries_the_body_media_type_and_metadata() {
    let mut config = github();
    config["keep_headers"] = json!(["X-GitHub-Event", "X-Absent"]);
    let (mut puller, endpoint) = live(config);
    let _sender = spawn_delivery(&endpoint, signed(SECRET, "m-1", b"{\"a\":1}"));
    let pulled = puller.pull(10).await.unwrap();
    let passenger = &pulled.passengers[0];
    assert_eq!(passenger.source_system, "webhook");
    assert_eq!(passenger.external_id, "m-1");
    assert_eq!(passenger.body.media_type, "application/json");
    assert_eq!(&passenger.body.data[..], b"{\"a\":1}");
    let metadata = &passenger.metadata;
    assert_eq!(metadata["webhook.delivery_id"], "m-1");
    assert_eq!(
        metadata["webhook.content_type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(metadata["webhook.user_agent"], "GitHub-Hookshot/abc");
    assert_eq!(metadata["webhook.remote_addr"], "203.0.113.7:4711");
    assert_eq!(metadata["webhook.header.x-github-event"], "push");
    assert!(!metadata.contains_key("webhook.header.x-absent"));
    assert!(!metadata.values().any(|v| v.contains(SECRET)));

    // Without a delivery id: a fresh one, the passenger's own; no content type: bytes.
    let body = b"raw";
    let bare = delivery(
        headers(&[("X-Hub-Signature-256", &github_signature(SECRET, body))]),
        body,
    );
    let _sender = spawn_delivery(&endpoint, bare);
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
    let pulled = puller.pull(10).await.unwrap();
    let passenger = &pulled.passengers[0];
    assert_eq!(passenger.external_id, passenger.id.to_string());
    assert_eq!(passenger.body.media_type, "application/octet-stream");
}

#[tokio::test]
async fn the_configured_id_headers_name_the_delivery() {
    let mut config = github();
    config["id_headers"] = json!(["X-Event-Id"]);
    let (mut puller, endpoint) = live(config);
    let mut sent = signed(SECRET, "ignored", b"{}");
    sent.headers.push(("x-event-id".into(), "evt-77".into()));
    let _sender = spawn_delivery(&endpoint, sent);
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers[0].external_id, "evt-77");

    let mut long = signed(SECRET, "x", b"{}");
    long.headers.push(("x-event-id".into(), "i".repeat(201)));
    assert_refused(&endpoint.deliver(long).await, 400, "longer than 200");
}

#[tokio::test]
async fn a_pull_waits_for_the_first_delivery_then_takes_what_waits_up_to_max() {
    let (mut puller, endpoint) = live(github());
    let started = std::time::Instant::now();
    let empty = puller.pull(10).await.unwrap();
    assert!(empty.passengers.is_empty() && !empty.more, "drained");
    assert!(started.elapsed() >= super::FIRST_DELIVERY_WAIT);

    // One arriving while the pull waits is taken at once.
    let late = endpoint.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        late.deliver(signed(SECRET, "late", b"{}")).await
    });
    let started = std::time::Instant::now();
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 1);
    assert!(started.elapsed() < Duration::from_millis(800));
    puller
        .ack(&seated(&pulled.passengers, false))
        .await
        .unwrap();
    assert_eq!(sender.await.unwrap().status, 202);

    let senders: Vec<_> = (0..5)
        .map(|n| spawn_delivery(&endpoint, signed(SECRET, &format!("b-{n}"), b"{}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = puller.pull(3).await.unwrap();
    assert_eq!(first.passengers.len(), 3);
    puller.ack(&seated(&first.passengers, false)).await.unwrap();
    let rest = puller.pull(10).await.unwrap();
    assert_eq!(rest.passengers.len(), 2);
    puller.ack(&seated(&rest.passengers, false)).await.unwrap();
    for sender in senders {
        assert_eq!(sender.await.unwrap().status, 202);
    }
}

#[tokio::test]
async fn a_full_endpoint_answers_503_with_retry_after() {
    let mut config = github();
    config["capacity"] = json!(2);
    let (_puller, endpoint) = live(config);
    let _waiting: Vec<_> = (0..2)
        .map(|n| spawn_delivery(&endpoint, signed(SECRET, &format!("w-{n}"), b"{}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let busy = endpoint.deliver(signed(SECRET, "w-2", b"{}")).await;
    assert_refused(&busy, 503, "too many deliveries are waiting");
    assert_eq!(busy.headers, [("retry-after", "1".to_string())]);
}

#[tokio::test]
async fn a_delivery_not_seated_in_time_is_503_and_then_skipped() {
    let mut config = github();
    config["timeout"] = json!("200ms");
    let (mut puller, endpoint) = live(config);
    // The pipeline's queue is full: nobody pulls for a while.
    let answer = endpoint.deliver(signed(SECRET, "slow", b"{}")).await;
    assert_refused(&answer, 503, "not seated within 0.2 s");
    assert!(
        answer
            .headers
            .iter()
            .any(|(name, _)| *name == "retry-after")
    );
    // The sender gave up, so it is not seated behind its back.
    let later = puller.pull(10).await.unwrap();
    assert!(later.passengers.is_empty(), "{:?}", later.passengers);
}

#[tokio::test]
async fn a_failed_seat_answers_5xx_and_a_stopped_pipeline_503() {
    let (mut puller, endpoint) = live(github());
    let sender = spawn_delivery(&endpoint, signed(SECRET, "f-1", b"{}"));
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 1);
    // The seat failed: no ack; the next run starts.
    puller.restore(None);
    let answer = sender.await.unwrap();
    assert_refused(&answer, 500, "could not seat");

    let waiting = spawn_delivery(&endpoint, signed(SECRET, "f-2", b"{}"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(puller);
    assert_refused(&waiting.await.unwrap(), 503, "stopped before");
    let closed = endpoint.deliver(signed(SECRET, "f-3", b"{}")).await;
    assert_refused(&closed, 503, "not receiving");
}

#[tokio::test]
async fn an_oversize_body_is_413_and_other_methods_405() {
    let mut config = github();
    config["max_body"] = json!("1KB");
    let (_puller, endpoint) = live(config);
    let body = vec![b'x'; 1001];
    let answer = endpoint.deliver(signed(SECRET, "big", &body)).await;
    assert_refused(&answer, 413, "max_body of 1000 bytes");
    let mut get = signed(SECRET, "get", b"{}");
    get.method = "GET".into();
    assert_eq!(endpoint.deliver(get).await.status, 405);
}

// ---- conformance ----

/// Senders that deliver signed items and send again after anything but 202, as GitHub's
/// redelivery or Stripe's retries do.
struct Senders {
    pipeline: String,
    accepted: Arc<AtomicUsize>,
    sent: usize,
}

impl Senders {
    fn path(&self) -> String {
        format!("acme/{}", self.pipeline)
    }
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PullerUnderTest for Senders {
    async fn fill(&mut self, good: usize) -> Option<String> {
        for n in 0..good {
            let path = self.path();
            let accepted = self.accepted.clone();
            tokio::spawn(async move {
                let body = format!("{{\"n\":{n}}}");
                loop {
                    if let Some(endpoint) = hub().endpoint(&path) {
                        let answer = endpoint
                            .deliver(signed(SECRET, &format!("c-{n}"), body.as_bytes()))
                            .await;
                        if answer.status == 202 {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        self.sent += good;
        // A malformed delivery is refused to its sender (401, 413), never a passenger.
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        build(&github(), &self.pipeline).unwrap()
    }

    /// Deliveries whose senders have not heard 202 yet.
    async fn remaining(&self) -> Option<usize> {
        // Let the answers of an ack reach their senders.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some(self.sent - self.accepted.load(Ordering::SeqCst))
    }

    /// Nothing to reach: senders come to ferry.
    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        None
    }
}

#[tokio::test]
async fn the_webhook_puller_conforms() {
    crate::conformance::puller_conforms(&mut Senders {
        pipeline: unique(),
        accepted: Arc::default(),
        sent: 0,
    })
    .await;
}
