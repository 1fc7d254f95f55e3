//! The `http` pusher against real axum servers on local ports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use ferry_core::{Body, BuildContext, BuildError, DynPusherFactory, Passenger, Pusher, StepError};
use serde_json::{Value, json};

use crate::http::HttpPusherFactory;

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The value of a form or query field, decoded.
    fn field(text: &str, name: &str) -> Option<String> {
        text.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| decode(v))
    }
}

/// Percent-decoding of a form value (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

type Answer = Arc<dyn Fn(&Seen, &[Seen]) -> Response + Send + Sync>;

/// A running server: its base URL, what it saw, and how many requests it handled at once.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    most_at_once: Arc<AtomicUsize>,
}

impl Server {
    /// A server answering each request with `answer(request, every request before it)`.
    async fn start(answer: impl Fn(&Seen, &[Seen]) -> Response + Send + Sync + 'static) -> Server {
        Server::start_slow(Duration::ZERO, answer).await
    }

    /// A server that waits `delay` before each answer.
    async fn start_slow(
        delay: Duration,
        answer: impl Fn(&Seen, &[Seen]) -> Response + Send + Sync + 'static,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let answer: Answer = Arc::new(answer);
        let state = (Arc::clone(&seen), Arc::clone(&most_at_once));
        let app = axum::Router::new().fallback(move |request: Request| {
            let (seen, most_at_once) = state.clone();
            let (answer, in_flight) = (Arc::clone(&answer), Arc::clone(&in_flight));
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most_at_once.fetch_max(now, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let request = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().map(str::to_string),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                tokio::time::sleep(delay).await;
                let response = {
                    let mut seen = seen.lock().unwrap();
                    let response = answer(&request, &seen);
                    seen.push(request);
                    response
                };
                in_flight.fetch_sub(1, Ordering::SeqCst);
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            url,
            seen,
            most_at_once,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(AxumBody::from(body.to_string())).unwrap()
}

fn ok() -> Response {
    reply(200, &[], "")
}

fn token_answer(token: &str, expires_in: u64) -> Response {
    let body = json!({ "access_token": token, "token_type": "bearer", "expires_in": expires_in });
    reply(
        200,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
}

fn build(config: Value) -> Result<Box<dyn Pusher>, BuildError> {
    let ctx = BuildContext {
        client: "acme".into(),
        pipeline: "orders".into(),
        component: "api".into(),
        ..BuildContext::default()
    };
    DynPusherFactory::build(&HttpPusherFactory, &config, &ctx)
}

fn passenger(external_id: &str) -> Passenger {
    let mut passenger =
        Passenger::pulled("shop", external_id).with_body(Body::json(&json!({ "id": external_id })));
    passenger.metadata.insert("kind".into(), "order".into());
    passenger
}

async fn push(pusher: &dyn Pusher, passengers: &[Passenger]) -> Vec<Result<(), StepError>> {
    let refs: Vec<&Passenger> = passengers.iter().collect();
    pusher.push(&refs).await
}

async fn push_one(pusher: &dyn Pusher, passenger: &Passenger) -> Result<(), StepError> {
    push(pusher, std::slice::from_ref(passenger))
        .await
        .pop()
        .unwrap()
}

/// A local port nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address.to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        crate::http::client::base64(&format!("{user}:{password}"))
    )
}

// ---- requests ----------------------------------------------------------------------------------

#[tokio::test]
async fn each_passenger_is_one_request_with_its_body_and_media_type() {
    let server = Server::start(|_, _| reply(201, &[], "created")).await;
    let pusher = build(json!({ "url": format!("{}/orders", server.url) })).unwrap();
    let passengers = vec![passenger("a"), passenger("b"), passenger("c")];
    let results = push(pusher.as_ref(), &passengers).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut seen = server.seen();
    seen.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(seen.len(), 3);
    for (request, passenger) in seen.iter().zip(&passengers) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/orders");
        assert_eq!(
            request.body,
            json!({ "id": passenger.external_id }).to_string()
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("idempotency-key"),
            Some(passenger.id.to_string().as_str())
        );
        assert!(request.header("user-agent").unwrap().starts_with("ferry/"));
    }
}

#[tokio::test]
async fn url_query_headers_and_body_are_filled_in_from_the_passenger() {
    let server = Server::start(|_, _| ok()).await;
    let pusher = build(json!({
        "url": format!("{}/orders/{{external_id}}/lines", server.url),
        "method": "PUT",
        "query": { "kind": "{metadata.kind}", "limit": 5 },
        "headers": { "X-Source": "{source_system}", "X-Fixed": "yes" },
        "body": "<order id=\"{external_id}\" kind=\"{metadata.kind}\"/>",
    }))
    .unwrap();
    // A value cannot climb out of its path segment or add a query parameter.
    let odd = passenger("a/../b c?x=1");
    push_one(pusher.as_ref(), &odd).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path, "/orders/a%2F..%2Fb%20c%3Fx%3D1/lines");
    let query = seen.query.as_deref().unwrap();
    assert_eq!(Seen::field(query, "kind").as_deref(), Some("order"));
    assert_eq!(Seen::field(query, "limit").as_deref(), Some("5"));
    assert_eq!(seen.header("x-source"), Some("shop"));
    assert_eq!(seen.header("x-fixed"), Some("yes"));
    assert_eq!(seen.body, "<order id=\"a/../b c?x=1\" kind=\"order\"/>");
    assert_eq!(
        seen.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // A header value with a line break cannot be sent: that passenger fails for good.
    let mut broken = passenger("x");
    broken.source_system = "evil\r\nX-Injected: 1".into();
    let error = push_one(pusher.as_ref(), &broken).await.unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("`x-source`"), "{error}");
}

#[tokio::test]
async fn a_delete_sends_no_body_and_headers_may_set_the_content_type() {
    let server = Server::start(|_, _| reply(204, &[], "")).await;
    let pusher = build(json!({
        "url": format!("{}/orders/{{external_id}}", server.url), "method": "delete",
    }))
    .unwrap();
    push_one(pusher.as_ref(), &passenger("7")).await.unwrap();
    let pusher = build(json!({
        "url": format!("{}/in", server.url),
        "headers": { "Content-Type": "application/vnd.acme+json" },
    }))
    .unwrap();
    push_one(pusher.as_ref(), &passenger("8")).await.unwrap();
    let seen = server.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("DELETE", "/orders/7")
    );
    assert_eq!(seen[0].body, "");
    assert_eq!(seen[0].header("content-type"), None);
    assert_eq!(
        seen[1].header("content-type"),
        Some("application/vnd.acme+json")
    );
}

#[tokio::test]
async fn passengers_go_concurrently_and_results_keep_their_order() {
    // Every third passenger is refused; the results must say which.
    let server = Server::start_slow(Duration::from_millis(50), |seen, _| {
        let id: u32 = seen
            .body
            .trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap();
        match id % 3 {
            0 => reply(422, &[], &format!("order {id} is refused")),
            _ => ok(),
        }
    })
    .await;
    let pusher = build(json!({ "url": server.url, "concurrency": 8 })).unwrap();
    let passengers: Vec<Passenger> = (1..=24).map(|i| passenger(&i.to_string())).collect();
    let started = Instant::now();
    let results = push(pusher.as_ref(), &passengers).await;
    for (i, result) in (1..=24).zip(&results) {
        match i % 3 {
            0 => {
                let error = result.as_ref().unwrap_err();
                assert!(
                    error.message.contains(&format!("order {i} is refused")),
                    "{error}"
                );
            }
            _ => assert!(result.is_ok(), "{i}: {result:?}"),
        }
    }
    let most = server.most_at_once.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} requests at once");
    // 24 requests of 50 ms, 8 at a time: well under the 1.2 s one at a time takes.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn keep_response_keeps_the_status_and_the_start_of_the_body() {
    let server = Server::start(|seen, _| match seen.body.contains("\"big\"") {
        true => reply(200, &[], &"y".repeat(10_000)),
        false => reply(201, &[], "{\"order\": 7}"),
    })
    .await;
    let kept = build(json!({ "url": server.url, "keep_response": true })).unwrap();
    let plain = build(json!({ "url": server.url })).unwrap();
    let small = passenger("small");
    let big = passenger("big");
    let results = kept.push_keeping(&[&small, &big]).await;
    assert_eq!(
        results[0].as_ref().unwrap().as_deref(),
        Some("HTTP 201 Created\n{\"order\": 7}")
    );
    let long = results[1].as_ref().unwrap().as_deref().unwrap();
    assert!(long.starts_with("HTTP 200 OK\nyyy"), "{long}");
    assert!(long.ends_with('…'), "bounded");
    assert!(long.len() < 4200, "{} bytes", long.len());
    // Without `keep_response`, nothing is kept.
    let results = plain.push_keeping(&[&small]).await;
    assert_eq!(results[0].as_ref().unwrap(), &None);
}

// ---- retries and errors ----------------------------------------------------------------------

#[tokio::test]
async fn the_idempotency_key_is_the_same_on_every_attempt() {
    let server = Server::start(|_, before| match before.len() {
        0 => reply(503, &[("Retry-After", "0")], "busy"),
        _ => ok(),
    })
    .await;
    let pusher = build(json!({ "url": server.url })).unwrap();
    let order = passenger("1");
    push_one(pusher.as_ref(), &order).await.unwrap();
    // A new process pushes the same passenger again.
    let again = build(json!({ "url": server.url })).unwrap();
    push_one(again.as_ref(), &order).await.unwrap();
    let keys: Vec<_> = server
        .seen()
        .iter()
        .map(|s| s.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys, vec![order.id.to_string(); 3]);

    // Another header, or none.
    let pusher = build(json!({ "url": server.url, "idempotency_key": "X-Request-Id" })).unwrap();
    push_one(pusher.as_ref(), &order).await.unwrap();
    let pusher = build(json!({ "url": server.url, "idempotency_key": false })).unwrap();
    push_one(pusher.as_ref(), &order).await.unwrap();
    let seen = server.seen();
    assert_eq!(
        seen[3].header("x-request-id"),
        Some(order.id.to_string().as_str())
    );
    assert_eq!(seen[3].header("idempotency-key"), None);
    assert_eq!(seen[4].header("idempotency-key"), None);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let server = Server::start(|_, before| match before.len() {
        0 => reply(429, &[("Retry-After", "1")], "slow down"),
        _ => reply(200, &[], "ok"),
    })
    .await;
    let pusher = build(json!({ "url": server.url })).unwrap();
    let started = Instant::now();
    push_one(pusher.as_ref(), &passenger("1")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_wait_longer_than_a_push_holds_is_left_to_the_retry_policy() {
    let server = Server::start(|_, _| reply(503, &[("Retry-After", "3600")], "maintenance")).await;
    let pusher = build(json!({ "url": server.url })).unwrap();
    let started = Instant::now();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("3600s"), "{error}");
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let server = Server::start(|_, _| reply(500, &[], "database down")).await;
    let pusher = build(json!({ "url": server.url, "retries": 1 })).unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("HTTP 500"), "{error}");
    assert!(error.message.contains("database down"), "{error}");
    assert!(error.message.contains("after 2 attempts"), "{error}");
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_refusal_is_permanent_and_shows_the_body_without_secrets() {
    let password = "pa55-SECRET";
    let api_key = "key-SECRET";
    // The server echoes what it was sent, credentials included, and then some.
    let server = Server::start(|seen, _| {
        let echo = format!(
            "bad order; you sent {} and {} {}",
            seen.header("authorization").unwrap_or_default(),
            seen.header("x-api-key").unwrap_or_default(),
            "x".repeat(10_000)
        );
        reply(400, &[], &echo)
    })
    .await;
    let pusher = build(json!({
        "url": format!("{}/orders", server.url),
        "auth": { "basic": { "user": "ferry", "password": password } },
        "headers": { "X-Api-Key": api_key },
    }))
    .unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(!error.retryable, "{error}");
    assert_eq!(server.seen().len(), 1, "a refusal is not retried");
    assert!(error.message.contains("POST http://127.0.0.1"), "{error}");
    assert!(error.message.contains("HTTP 400 Bad Request"), "{error}");
    assert!(
        error
            .message
            .contains("bad order; you sent Basic *** and ***"),
        "{error}"
    );
    assert!(!error.message.contains("SECRET"), "{error}");
    assert!(
        error.message.len() < 2300,
        "bounded: {} bytes",
        error.message.len()
    );
    assert!(error.message.ends_with('…'), "{error}");
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_named_without_credentials() {
    let address = closed_port();
    let pusher = build(json!({
        "url": format!("http://user:SECRET@{address}/in?token=SECRET"),
        "retries": 0,
    }))
    .unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(
        error.message.contains(&format!("POST http://{address}/in")),
        "{error}"
    );
    assert!(!error.message.contains("SECRET"), "{error}");
}

// ---- OAuth 2.0 -----------------------------------------------------------------------------

/// A token endpoint at `/token` handing out `token-1`, `token-2`, … valid for `lifetime`
/// seconds, and an API at `/api` that takes only the newest token.
async fn oauth_server(lifetime: u64) -> Server {
    Server::start(move |seen, before| {
        let tokens = before.iter().filter(|s| s.path == "/token").count();
        match seen.path.as_str() {
            "/token" => token_answer(&format!("token-{}", tokens + 1), lifetime),
            _ if seen.header("authorization") == Some(&format!("Bearer token-{tokens}")) => ok(),
            _ => reply(401, &[], "who are you?"),
        }
    })
    .await
}

fn oauth_config(server: &Server) -> Value {
    json!({
        "url": format!("{}/api", server.url),
        "auth": { "oauth2": {
            "token_url": format!("{}/token", server.url),
            "client_id": "ferry",
            "client_secret": "client-SECRET",
            "scopes": ["orders.write", "orders.read"],
        } },
    })
}

#[tokio::test]
async fn an_oauth2_token_is_fetched_once_for_many_requests() {
    let server = oauth_server(3600).await;
    let pusher = build(oauth_config(&server)).unwrap();
    let passengers: Vec<Passenger> = (0..20).map(|i| passenger(&i.to_string())).collect();
    let results = push(pusher.as_ref(), &passengers).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let tokens = server.at("/token");
    assert_eq!(tokens.len(), 1);
    let form = &tokens[0].body;
    assert_eq!(
        Seen::field(form, "grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(
        Seen::field(form, "scope").as_deref(),
        Some("orders.write orders.read")
    );
    assert_eq!(
        tokens[0].header("authorization"),
        Some(basic("ferry", "client-SECRET").as_str())
    );
    assert_eq!(server.at("/api").len(), 20);
}

#[tokio::test]
async fn an_oauth2_token_is_fetched_anew_when_it_expires() {
    // A token of 1 s is used for half of it.
    let server = oauth_server(1).await;
    let pusher = build(oauth_config(&server)).unwrap();
    push_one(pusher.as_ref(), &passenger("1")).await.unwrap();
    push_one(pusher.as_ref(), &passenger("2")).await.unwrap();
    assert_eq!(server.at("/token").len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    push_one(pusher.as_ref(), &passenger("3")).await.unwrap();
    assert_eq!(server.at("/token").len(), 2);
    let api = server.at("/api");
    assert_eq!(api[2].header("authorization"), Some("Bearer token-2"));
}

#[tokio::test]
async fn a_refused_oauth2_token_is_fetched_anew_once() {
    // The API revokes every token after its first use.
    let server = Server::start(|seen, before| {
        let tokens = before.iter().filter(|s| s.path == "/token").count();
        let expected = format!("Bearer token-{tokens}");
        let used = before
            .iter()
            .any(|s| s.path == "/api" && s.header("authorization") == Some(&expected));
        match seen.path.as_str() {
            "/token" => token_answer(&format!("token-{}", tokens + 1), 3600),
            _ if seen.header("authorization") == Some(&expected) && !used => ok(),
            _ => reply(401, &[], "token revoked"),
        }
    })
    .await;
    let pusher = build(oauth_config(&server)).unwrap();
    push_one(pusher.as_ref(), &passenger("1")).await.unwrap();
    // The cached token is refused: a new one is fetched, and the request goes again.
    push_one(pusher.as_ref(), &passenger("2")).await.unwrap();
    assert_eq!(server.at("/token").len(), 2);
    assert_eq!(server.at("/api").len(), 3);

    // A server that refuses every token: one new token, then a permanent error.
    let server = Server::start(|seen, before| match seen.path.as_str() {
        "/token" => token_answer(&format!("token-{}", before.len()), 3600),
        _ => reply(401, &[], "no"),
    })
    .await;
    let pusher = build(oauth_config(&server)).unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("HTTP 401"), "{error}");
    assert_eq!(server.at("/token").len(), 2);
    assert_eq!(server.at("/api").len(), 2);
}

#[tokio::test]
async fn a_refresh_token_is_exchanged_and_a_rotated_one_kept() {
    let server = Server::start(|seen, before| match seen.path.as_str() {
        "/token" => {
            let n = before.iter().filter(|s| s.path == "/token").count() + 1;
            let body = json!({
                "access_token": format!("token-{n}"), "token_type": "Bearer",
                "expires_in": 1, "refresh_token": format!("refresh-{n}"),
            });
            reply(
                200,
                &[("Content-Type", "application/json")],
                &body.to_string(),
            )
        }
        _ => ok(),
    })
    .await;
    let mut config = oauth_config(&server);
    config["auth"]["oauth2"]["refresh_token"] = json!("refresh-0");
    let pusher = build(config).unwrap();
    push_one(pusher.as_ref(), &passenger("1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    push_one(pusher.as_ref(), &passenger("2")).await.unwrap();
    let tokens = server.at("/token");
    assert_eq!(tokens.len(), 2);
    for (request, refresh) in tokens.iter().zip(["refresh-0", "refresh-1"]) {
        assert_eq!(
            Seen::field(&request.body, "grant_type").as_deref(),
            Some("refresh_token")
        );
        assert_eq!(
            Seen::field(&request.body, "refresh_token").as_deref(),
            Some(refresh)
        );
    }
}

#[tokio::test]
async fn token_endpoint_failures_are_classified_without_secrets() {
    let server = Server::start(|seen, _| match seen.path.as_str() {
        "/token" => reply(
            400,
            &[("Content-Type", "application/json")],
            r#"{"error":"invalid_client","error_description":"unknown client"}"#,
        ),
        _ => ok(),
    })
    .await;
    let pusher = build(oauth_config(&server)).unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(
        error.message.contains("invalid_client: unknown client"),
        "{error}"
    );
    assert!(!error.message.contains("SECRET"), "{error}");
    assert!(server.at("/api").is_empty());

    let server = Server::start(|_, _| reply(503, &[], "down")).await;
    let mut config = oauth_config(&server);
    config["retries"] = json!(0);
    let pusher = build(config).unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("token request"), "{error}");
    assert!(error.message.contains("503"), "{error}");
}

// ---- SAP -------------------------------------------------------------------------------------

#[tokio::test]
async fn sap_idoc_posts_xml_to_the_idoc_service_of_the_client() {
    let server = Server::start(|_, _| ok()).await;
    let pusher = build(json!({
        "profile": "sap_idoc",
        "url": format!("{}/", server.url),
        "sap_client": "100",
        "auth": { "basic": { "user": "RFC_FERRY", "password": "pw" } },
    }))
    .unwrap();
    let idoc = Passenger::pulled("edi", "4711").with_body(Body {
        media_type: "application/octet-stream".into(),
        data: "<ORDERS05><IDOC BEGIN=\"1\"/></ORDERS05>".into(),
    });
    push_one(pusher.as_ref(), &idoc).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/sap/bc/idoc_xml");
    assert_eq!(seen.query.as_deref(), Some("sap-client=100"));
    assert_eq!(seen.header("content-type"), Some("application/xml"));
    assert_eq!(
        seen.header("authorization"),
        Some(basic("RFC_FERRY", "pw").as_str())
    );
    assert_eq!(seen.body, "<ORDERS05><IDOC BEGIN=\"1\"/></ORDERS05>");
}

/// An OData service at `/odata/SRV/` whose sessions hold `posts_per_session` posts: a token
/// fetch opens session `n` (token `csrf-n`, cookie `SAP_SESSIONID=session-n`); a post must
/// carry both of the newest session.
async fn odata_server(posts_per_session: usize) -> Server {
    Server::start(move |seen, before| {
        let sessions = before
            .iter()
            .filter(|s| s.header("x-csrf-token") == Some("Fetch"))
            .count();
        if seen.method == "GET" {
            if seen.header("x-csrf-token") != Some("Fetch") {
                return reply(400, &[], "fetch expected");
            }
            let n = sessions + 1;
            return reply(
                200,
                &[
                    ("X-CSRF-Token", &format!("csrf-{n}")),
                    (
                        "Set-Cookie",
                        &format!("SAP_SESSIONID=session-{n}; path=/; HttpOnly"),
                    ),
                    ("Set-Cookie", "sap-usercontext=sap-client=100; path=/"),
                ],
                r#"{"d":{"EntitySets":["A_SalesOrder"]}}"#,
            );
        }
        let posts_in_session = before
            .iter()
            .rev()
            .take_while(|s| s.method != "GET")
            .count();
        let token_ok = seen.header("x-csrf-token") == Some(&format!("csrf-{sessions}"));
        let cookie = seen.header("cookie").unwrap_or_default();
        let cookie_ok = cookie.contains(&format!("SAP_SESSIONID=session-{sessions}"))
            && cookie.contains("sap-usercontext=sap-client=100");
        if !token_ok || !cookie_ok || posts_in_session >= posts_per_session {
            return reply(
                403,
                &[("X-CSRF-Token", "Required")],
                "CSRF token validation failed",
            );
        }
        reply(201, &[("Content-Type", "application/json")], r#"{"d":{}}"#)
    })
    .await
}

#[tokio::test]
async fn sap_odata_fetches_a_csrf_token_and_sends_it_with_the_session_cookies() {
    let server = odata_server(3).await;
    let pusher = build(json!({
        "profile": "sap_odata",
        "url": format!("{}/odata/SRV/A_SalesOrder", server.url),
        "sap_client": 100,
        "auth": { "basic": { "user": "U", "password": "P" } },
    }))
    .unwrap();
    let orders: Vec<Passenger> = (1..=3).map(|i| passenger(&i.to_string())).collect();
    let results = push(pusher.as_ref(), &orders).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 4, "one token fetch, three posts");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/odata/SRV/");
    assert_eq!(seen[0].query.as_deref(), Some("sap-client=100"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(basic("U", "P").as_str())
    );
    for post in &seen[1..] {
        assert_eq!(post.path, "/odata/SRV/A_SalesOrder");
        assert_eq!(post.query.as_deref(), Some("sap-client=100"));
        assert_eq!(post.header("accept"), Some("application/json"));
        assert_eq!(post.header("content-type"), Some("application/json"));
    }

    // The session ends: the next post is refused with `X-CSRF-Token: Required`, a new token
    // and new cookies are fetched, and the post goes again.
    push_one(pusher.as_ref(), &passenger("4")).await.unwrap();
    let seen = server.seen();
    let methods: Vec<&str> = seen[4..].iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["POST", "GET", "POST"]);
    assert_eq!(seen[6].header("x-csrf-token"), Some("csrf-2"));
    assert!(
        seen[6]
            .header("cookie")
            .unwrap()
            .contains("SAP_SESSIONID=session-2")
    );
}

#[tokio::test]
async fn sap_odata_gives_up_when_a_fresh_token_is_refused_too() {
    let server = odata_server(0).await;
    let pusher = build(json!({
        "profile": "sap_odata",
        "url": format!("{}/odata/SRV/A_SalesOrder", server.url),
        "csrf_url": format!("{}/odata/SRV/", server.url),
    }))
    .unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("HTTP 403"), "{error}");
    assert!(
        error.message.contains("CSRF token validation failed"),
        "{error}"
    );
    let methods: Vec<String> = server.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods, ["GET", "POST", "GET", "POST"]);

    // A service that hands out no token.
    let server = Server::start(|_, _| ok()).await;
    let pusher = build(json!({
        "profile": "sap_odata", "url": format!("{}/odata/SRV/A_SalesOrder", server.url),
    }))
    .unwrap();
    let error = push_one(pusher.as_ref(), &passenger("1"))
        .await
        .unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("without an X-CSRF-Token"), "{error}");
}

// ---- configuration ---------------------------------------------------------------------------

#[test]
fn configuration_errors_name_their_key() {
    let error = |config: Value| {
        let error = build(config).err().expect("an error");
        (error.path.join("."), error.message)
    };
    let url = "https://api.example.com/v1/orders";
    assert_eq!(error(json!({})).1, "missing field `url`");
    assert_eq!(error(json!({ "url": "not a url" })).0, "url");
    assert_eq!(error(json!({ "url": "ftp://example.com/" })).0, "url");
    let (path, message) = error(json!({ "url": "https://{metadata.host}/orders" }));
    assert_eq!(path, "url");
    assert!(message.contains("written out"), "{message}");
    let (path, message) = error(json!({ "url": format!("{url}/{{nope}}") }));
    assert_eq!(path, "url");
    assert!(
        message.contains("unknown placeholder `{nope}`"),
        "{message}"
    );
    assert_eq!(error(json!({ "url": format!("{url}/{{id") })).0, "url");
    assert_eq!(error(json!({ "url": url, "method": "GET" })).0, "method");
    assert_eq!(
        error(json!({ "url": url, "headers": { "bad header": "x" } })).0,
        "headers.bad header"
    );
    assert_eq!(
        error(json!({ "url": url, "headers": { "X-A": "{what}" } })).0,
        "headers.X-A"
    );
    assert_eq!(
        error(json!({ "url": url, "headers": { "Idempotency-Key": "{external_id}" } })).0,
        "headers.Idempotency-Key"
    );
    assert_eq!(
        error(json!({ "url": url, "query": { "a": "{b" } })).0,
        "query.a"
    );
    assert_eq!(error(json!({ "url": url, "body": "{nope}" })).0, "body");
    assert_eq!(
        error(json!({ "url": url, "idempotency_key": "not a header" })).0,
        "idempotency_key"
    );
    assert_eq!(
        error(json!({ "url": url, "concurrency": 0 })).0,
        "concurrency"
    );
    assert_eq!(error(json!({ "url": url, "timeout": "soon" })).0, "timeout");
    assert_eq!(error(json!({ "url": url, "retries": 50 })).0, "retries");
    assert_eq!(
        error(json!({ "url": url, "auth": { "basic": { "user": "a:b", "password": "p" } } })).0,
        "auth.basic"
    );
    let oauth = |extra: Value| {
        let mut config =
            json!({ "token_url": "https://login.example.com/token", "client_id": "c" });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        json!({ "url": url, "auth": { "oauth2": config } })
    };
    assert_eq!(
        error(oauth(json!({ "token_url": "nope" }))).0,
        "auth.oauth2.token_url"
    );
    assert_eq!(
        error(oauth(json!({ "client_id": "" }))).0,
        "auth.oauth2.client_id"
    );
    let (path, message) = error(oauth(json!({ "client_secret": "s", "grant": "password" })));
    assert!(path.starts_with("auth"), "{path}");
    assert!(message.contains("unknown field `grant`"), "{message}");
    assert_eq!(
        error(json!({ "url": url, "sap_client": "100" })).0,
        "sap_client"
    );
    assert_eq!(error(json!({ "url": url, "csrf_url": url })).0, "csrf_url");
    assert_eq!(
        error(json!({ "url": url, "profile": "sap_idoc", "sap_client": "1000" })).0,
        "sap_client"
    );
    assert_eq!(
        error(json!({ "url": url, "profile": "sap_idoc", "method": "PUT" })).0,
        "method"
    );
    assert_eq!(
        error(json!({ "url": format!("{url}?a=1"), "profile": "sap_idoc" })).0,
        "url"
    );
    let (path, message) = error(json!({ "url": url, "profile": "sap_rfc" }));
    assert_eq!(path, "profile");
    assert!(message.contains("unknown variant `sap_rfc`"), "{message}");
    assert_eq!(
        error(
            json!({ "url": "https://sap/{metadata.service}/A_SalesOrder", "profile": "sap_odata" })
        )
        .0,
        "csrf_url"
    );
    assert_eq!(
        error(json!({ "url": url, "profile": "sap_odata", "csrf_url": "nope" })).0,
        "csrf_url"
    );
    let (_, message) = error(json!({ "url": url, "retry": 3 }));
    assert!(message.contains("unknown field `retry`"), "{message}");

    // Secrets never show, not even in debug output; building connects to nothing.
    let pusher = build(json!({
        "url": "https://unreachable.invalid/{external_id}",
        "auth": { "oauth2": {
            "token_url": "https://unreachable.invalid/token", "client_id": "c",
            "client_secret": "SECRET", "refresh_token": "SECRET",
        } },
        "headers": { "X-Api-Key": "SECRET" },
        "profile": "sap_odata",
        "csrf_url": "https://unreachable.invalid/",
        "sap_client": "001",
        "keep_response": true,
    }))
    .unwrap();
    let _ = pusher;
    let config: crate::http::HttpPusherConfig = serde_json::from_value(json!({
        "url": "https://x.example/",
        "auth": { "oauth2": { "token_url": "https://x.example/t", "client_id": "c",
                  "client_secret": "SECRET", "refresh_token": "SECRET" } },
        "headers": { "X-Api-Key": "SECRET" },
    }))
    .unwrap();
    assert!(!format!("{config:?}").contains("SECRET"), "{config:?}");
}

// ---- conformance -----------------------------------------------------------------------------

/// A target that takes JSON orders and, as a careful API does, takes each idempotency key once.
struct Orders {
    server: Server,
    kept: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Orders {
    async fn start() -> Orders {
        let kept = Arc::new(Mutex::new(BTreeMap::new()));
        let store = Arc::clone(&kept);
        let server = Server::start(move |seen, _| {
            let order: Value = match serde_json::from_str(&seen.body) {
                Ok(order) => order,
                Err(error) => return reply(400, &[], &format!("not JSON: {error}")),
            };
            let key = seen
                .header("idempotency-key")
                .unwrap_or_default()
                .to_string();
            let id = order["id"].as_str().unwrap_or_default().to_string();
            store.lock().unwrap().entry(key).or_insert(id);
            reply(201, &[], "")
        })
        .await;
        Orders { server, kept }
    }
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Orders {
    fn pusher(&self) -> Box<dyn Pusher> {
        build(json!({ "url": format!("{}/orders", self.server.url) })).unwrap()
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (1..=count)
            .map(|i| passenger(&format!("order-{i}")))
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        let broken = Passenger::pulled("shop", "broken").with_body(Body {
            media_type: "application/json".into(),
            data: "{\"id\": ".into(),
        });
        Some((
            broken,
            "EOF while parsing a value at line 1 column 7".into(),
        ))
    }

    async fn delivered(&self) -> Vec<String> {
        self.kept.lock().unwrap().values().cloned().collect()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers.iter().map(|p| p.external_id.clone()).collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let address = closed_port();
        let secret = crate::conformance::SECRET;
        let config = json!({
            "url": format!("http://{address}/orders"),
            "retries": 0,
            "auth": { "basic": { "user": "ferry", "password": secret } },
        });
        Some((build(config).unwrap(), address))
    }
}

#[tokio::test]
async fn the_http_pusher_conforms() {
    crate::conformance::pusher_conforms(&mut Orders::start().await).await;
}
