//! The `http` puller against a real HTTP server started in the test: a minimal HTTP/1.1
//! server on a local port (one request per connection), answering through a closure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::records::{self, Chunk, ColumnType};
use ferry_core::{BuildContext, BuildError, DynPullerFactory, Passenger, Puller, StepError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::http::HttpPullerFactory;

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    /// Path and query, as sent.
    target: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a query parameter.
    fn param(&self, name: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }
}

/// A response: status, extra headers, body.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn json_response(body: Value) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type", "application/json".into())],
        body: body.to_string(),
    }
}

fn status(status: u16, body: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type", "text/plain".into())],
        body: body.into(),
    }
}

type Handler = Arc<dyn Fn(&Request, usize) -> Response + Send + Sync>;

/// A running test server: its base URL and the requests it received.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    /// Starts a server that answers the `n`-th request (from 0) with `handler(request, n)`.
    async fn start(handler: impl Fn(&Request, usize) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    let number = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(request.clone());
                        seen.len() - 1
                    };
                    let response = handler(&request, number);
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        response.status,
                        response.body.len()
                    );
                    for (name, value) in &response.headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(response.body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Server { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&buffer[..read]);
    }
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn build(config: Value) -> Result<Box<dyn Puller>, BuildError> {
    let ctx = BuildContext {
        client: "acme".into(),
        pipeline: "api".into(),
        component: "http".into(),
        ..BuildContext::default()
    };
    DynPullerFactory::build(&HttpPullerFactory, &config, &ctx)
}

/// Everything one run pulls, in pulls of `max`; panics on an error.
async fn pull_run(puller: &mut Box<dyn Puller>, max: usize) -> Vec<Passenger> {
    let mut all = Vec::new();
    loop {
        let pulled = puller.pull(max).await.unwrap();
        assert!(pulled.failures.is_empty());
        all.extend(pulled.passengers);
        if !pulled.more {
            return all;
        }
    }
}

/// Pulls until the run ends or fails; returns the error.
async fn pull_error(puller: &mut Box<dyn Puller>) -> StepError {
    loop {
        match puller.pull(10).await {
            Ok(pulled) if pulled.more => continue,
            Ok(_) => panic!("the run ended without an error"),
            Err(error) => return error,
        }
    }
}

/// The rows of all chunks, in order.
fn all_rows(chunks: &[Passenger]) -> Vec<Vec<Option<String>>> {
    chunks
        .iter()
        .flat_map(|chunk| {
            let batch = records::read(&chunk.body).unwrap();
            records::rows(&batch.data)
        })
        .collect()
}

fn ids(chunks: &[Passenger]) -> Vec<String> {
    all_rows(chunks)
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
}

fn base64(input: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in input.as_bytes().chunks(3) {
        let bits = group
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- authentication ------------------------------------------------------------------------

#[tokio::test]
async fn bearer_auth_is_sent_and_a_refusal_is_permanent_without_the_token() {
    let server = Server::start(|request, _| {
        if request.header("authorization") == Some("Bearer s3cret-token") {
            json_response(json!([{ "id": 1 }, { "id": 2 }]))
        } else {
            status(401, "{\"error\": \"bad token\"}")
        }
    })
    .await;
    let config =
        json!({ "url": format!("{}/items", server.url), "auth": { "bearer": "s3cret-token" } });
    let mut puller = build(config).unwrap();
    let chunks = pull_run(&mut puller, 10).await;
    assert_eq!(ids(&chunks), ["1", "2"]);
    assert_eq!(chunks[0].source_system, "http:127.0.0.1");
    assert_eq!(
        server.requests()[0].header("accept"),
        Some("application/json")
    );

    let config = json!({ "url": format!("{}/items?key=hidden", server.url), "auth": { "bearer": "wrong-token" } });
    let mut puller = build(config).unwrap();
    let error = pull_error(&mut puller).await;
    assert!(!error.retryable);
    assert!(error.message.contains("401"), "{error}");
    assert!(error.message.contains("bad token"), "{error}");
    assert!(!error.message.contains("wrong-token"), "{error}");
    assert!(
        !error.message.contains("hidden"),
        "the query is not shown: {error}"
    );
}

#[tokio::test]
async fn basic_auth_is_checked_by_the_server() {
    let expected = format!("Basic {}", base64("ann:pa:ss"));
    let server = Server::start(move |request, _| {
        if request.header("authorization") == Some(expected.as_str()) {
            json_response(json!([{ "id": "a" }]))
        } else {
            status(403, "forbidden")
        }
    })
    .await;
    let config = json!({
        "url": server.url, "auth": { "basic": { "user": "ann", "password": "pa:ss" } },
    });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["a"]);
    assert_eq!(base64("ann:pa:ss"), "YW5uOnBhOnNz");
}

#[tokio::test]
async fn an_oauth2_token_is_fetched_and_fetched_anew_once_when_refused() {
    let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&issued);
    let server = Server::start(move |request, _| {
        if request.target.starts_with("/token") {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let token = json!({ "access_token": format!("token-{n}"), "token_type": "bearer" });
            return json_response(token);
        }
        // The first token turns out revoked; the second is good.
        match request.header("authorization") {
            Some("Bearer token-2") => json_response(json!([{ "id": 1 }])),
            _ => status(401, "token revoked"),
        }
    })
    .await;
    let config = json!({
        "url": format!("{}/items", server.url),
        "auth": { "oauth2": {
            "token_url": format!("{}/token", server.url),
            "client_id": "ferry", "client_secret": "client-SECRET",
        } },
    });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1"]);
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 2);
    let token_request = &server.requests()[0];
    assert_eq!(token_request.method, "POST");
    assert!(
        token_request.body.contains("grant_type=client_credentials"),
        "{}",
        token_request.body
    );
}

// ---- pagination ------------------------------------------------------------------------------

#[tokio::test]
async fn next_url_pagination_follows_relative_and_absolute_urls() {
    let server = Server::start(|request, _| {
        let (items, next) = match request.param("cursor").as_deref() {
            None => (json!([{ "id": 1 }, { "id": 2 }]), json!("/items?cursor=b")),
            Some("b") => (json!([{ "id": 3 }]), json!("items?cursor=c")),
            Some("c") => (json!([{ "id": 4 }]), Value::Null),
            Some(other) => panic!("unexpected cursor {other}"),
        };
        json_response(json!({ "data": items, "links": { "next": next } }))
    })
    .await;
    let config = json!({
        "url": format!("{}/items", server.url),
        "query": { "updated_since": "2024-01-01", "limit": 2 },
        "records": "/data",
        "pagination": { "next_url": "/links/next" },
    });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1", "2", "3", "4"]);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].param("updated_since").as_deref(),
        Some("2024-01-01")
    );
    assert_eq!(requests[0].param("limit").as_deref(), Some("2"));
    assert_eq!(requests[1].target, "/items?cursor=b");
    assert_eq!(requests[2].target, "/items?cursor=c");
}

#[tokio::test]
async fn page_number_pagination_stops_at_an_empty_page() {
    let server = Server::start(|request, _| {
        let page: u64 = request.param("p").unwrap().parse().unwrap();
        let items: Vec<Value> = match page {
            0..=2 => vec![json!({ "id": page * 10 }), json!({ "id": page * 10 + 1 })],
            _ => vec![],
        };
        json_response(json!(items))
    })
    .await;
    let config =
        json!({ "url": server.url, "pagination": { "page": { "param": "p", "start": 0 } } });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["0", "1", "10", "11", "20", "21"]);
    let pages: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.param("p").unwrap())
        .collect();
    assert_eq!(pages, ["0", "1", "2", "3"]);
}

#[tokio::test]
async fn offset_pagination_stops_at_a_short_page() {
    let server = Server::start(|request, _| {
        let offset: u64 = request.param("offset").unwrap().parse().unwrap();
        let limit: u64 = request.param("limit").unwrap().parse().unwrap();
        let items: Vec<Value> = (offset..(offset + limit).min(7))
            .map(|id| json!({ "id": id }))
            .collect();
        json_response(json!({ "results": items }))
    })
    .await;
    let config = json!({
        "url": server.url,
        "records": "/results",
        "pagination": { "offset": { "param": "offset", "limit_param": "limit", "limit": 3 } },
    });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["0", "1", "2", "3", "4", "5", "6"]);
    let offsets: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.param("offset").unwrap())
        .collect();
    assert_eq!(offsets, ["0", "3", "6"]);
}

#[tokio::test]
async fn link_header_pagination() {
    let server = Server::start(|request, _| {
        let page = request.param("page").unwrap_or_else(|| "1".into());
        let mut response = json_response(json!([{ "id": page }]));
        if page == "1" {
            response.headers.push((
                "Link",
                "</list?page=2>; rel=\"next\", </list?page=9>; rel=\"last\"".into(),
            ));
        }
        response
    })
    .await;
    let config =
        json!({ "url": format!("{}/list", server.url), "pagination": { "link_header": true } });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1", "2"]);
}

#[tokio::test]
async fn max_pages_ends_the_load() {
    let server = Server::start(|request, _| {
        let page: u64 = request.param("page").unwrap().parse().unwrap();
        json_response(json!([{ "id": page }]))
    })
    .await;
    let config = json!({
        "url": server.url, "pagination": { "page": { "param": "page" } }, "max_pages": 3,
    });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1", "2", "3"]);
    assert!(Chunk::of(chunks.last().unwrap()).unwrap().last);
}

// ---- chunks and columns ----------------------------------------------------------------------

#[tokio::test]
async fn rows_of_pages_are_packed_into_chunks_of_one_load() {
    // Pages of 2 records, chunks of 3: a chunk spans pages, and 6 records make exactly two
    // chunks (no empty third one).
    let server = Server::start(|request, _| {
        let page: u64 = request.param("page").unwrap().parse().unwrap();
        let items: Vec<Value> = match page {
            1..=3 => vec![json!({ "id": page * 2 - 1 }), json!({ "id": page * 2 })],
            _ => vec![],
        };
        json_response(json!(items))
    })
    .await;
    let config = json!({
        "url": server.url, "pagination": { "page": { "param": "page" } }, "chunk_rows": 3,
    });
    let mut puller = build(config).unwrap();
    let first = puller.pull(1).await.unwrap();
    assert_eq!(first.passengers.len(), 1);
    assert!(first.more);
    let rest = pull_run(&mut puller, 1).await;
    let chunks: Vec<_> = first.passengers.into_iter().chain(rest).collect();
    assert_eq!(ids(&chunks), ["1", "2", "3", "4", "5", "6"]);
    let places: Vec<_> = chunks.iter().map(|c| Chunk::of(c).unwrap()).collect();
    assert_eq!(
        places
            .iter()
            .map(|p| (p.number, p.last))
            .collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_eq!(places[0].load, places[1].load);
    assert_eq!(chunks[0].external_id, format!("{}:1", places[0].load));
    assert_eq!(chunks[1].metadata[records::ROWS], "3");
    assert!(
        chunks
            .iter()
            .all(|c| c.metadata.contains_key(records::SERIES)),
        "each run is a full load that supersedes an interrupted older one"
    );

    // The next run is a new load.
    let again = pull_run(&mut puller, 10).await;
    assert_ne!(Chunk::of(&again[0]).unwrap().load, places[0].load);
}

#[tokio::test]
async fn an_empty_response_is_one_empty_chunk() {
    let server = Server::start(|_, _| json_response(json!({ "data": [] }))).await;
    let columns = json!([{ "name": "id", "type": "integer" }]);
    let config = json!({ "url": server.url, "records": "/data", "columns": columns });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    assert_eq!(chunks.len(), 1);
    let batch = records::read(&chunks[0].body).unwrap();
    assert_eq!(batch.rows, 0);
    assert_eq!(batch.columns[0].kind, ColumnType::Integer);
    assert!(Chunk::of(&chunks[0]).unwrap().last);
}

#[tokio::test]
async fn records_pointer_and_column_types() {
    let server = Server::start(|request, _| {
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("x-api-version"), Some("2"));
        let body: Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body, json!({ "filter": { "active": true } }));
        json_response(json!({ "result": { "items": [
            { "id": 7, "amount": "1.234,50", "customer": { "city": "Basel" },
              "created": "2024-05-31T12:00:00Z", "active": true, "tags": ["a", "b"] },
            { "id": "8", "amount": 3.25, "customer": {}, "created": null, "active": "no" },
        ] } }))
    })
    .await;
    let config = json!({
        "url": server.url,
        "method": "POST",
        "headers": { "X-Api-Version": 2 },
        "body": "{\"filter\": {\"active\": true}}",
        "records": "/result/items",
        "columns": [
            { "name": "id", "type": "integer" },
            { "name": "amount", "type": "numeric", "decimal": "," },
            { "name": "city", "from": "/customer/city" },
            { "name": "created", "type": "timestamptz" },
            { "name": "active", "type": "boolean" },
            { "name": "tags", "type": "json" },
        ],
    });
    let chunks = pull_run(&mut build(config).unwrap(), 10).await;
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        all_rows(&chunks),
        [
            vec![
                some("7"),
                some("1234.50"),
                some("Basel"),
                some("2024-05-31 12:00:00+00"),
                some("t"),
                some("[\"a\",\"b\"]")
            ],
            vec![some("8"), some("3.25"), None, None, some("f"), None],
        ]
    );

    // A value that does not convert fails the run, naming the page, record and column.
    let server = Server::start(|_, _| json_response(json!([{ "id": 1 }, { "id": "x" }]))).await;
    let config = json!({ "url": server.url, "columns": [{ "name": "id", "type": "integer" }] });
    let error = pull_error(&mut build(config).unwrap()).await;
    assert!(!error.retryable);
    assert!(
        error
            .message
            .starts_with("page 1: record 2: column id: \"x\" is not an integer"),
        "{error}"
    );
}

// ---- errors and retries ----------------------------------------------------------------------

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let server = Server::start(|_, number| {
        if number == 0 {
            let mut response = status(429, "slow down");
            response.headers.push(("Retry-After", "1".into()));
            response
        } else {
            json_response(json!([{ "id": 1 }]))
        }
    })
    .await;
    let started = Instant::now();
    let chunks = pull_run(&mut build(json!({ "url": server.url })).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1"]);
    assert_eq!(server.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
}

#[tokio::test]
async fn retry_after_may_be_an_http_date() {
    let server = Server::start(|_, number| {
        if number == 0 {
            let at = chrono::Utc::now() + chrono::Duration::seconds(1);
            let mut response = status(503, "busy");
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            response.headers.push(("Retry-After", date));
            response
        } else {
            json_response(json!([{ "id": 1 }]))
        }
    })
    .await;
    let chunks = pull_run(&mut build(json!({ "url": server.url })).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1"]);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_load_resumes_at_the_page_that_failed() {
    // Page 2 fails once; with no retries the pull fails, and the next pull asks for page 2
    // again, in the same load.
    let server = Server::start(|request, number| {
        let page: u64 = request.param("page").unwrap().parse().unwrap();
        match (page, number) {
            (2, 1) => status(502, "bad gateway"),
            (1 | 2, _) => json_response(json!([{ "id": page }])),
            _ => json_response(json!([])),
        }
    })
    .await;
    let config = json!({
        "url": server.url, "retries": 0, "chunk_rows": 1,
        "pagination": { "page": { "param": "page" } },
    });
    let mut puller = build(config).unwrap();
    let error = pull_error(&mut puller).await;
    assert!(error.retryable, "{error}");
    let chunks = pull_run(&mut puller, 10).await;
    assert_eq!(ids(&chunks), ["1", "2"]);
    let places: Vec<_> = chunks.iter().map(|c| Chunk::of(c).unwrap()).collect();
    assert_eq!((places[0].number, places[1].number), (1, 2));
    assert_eq!(places[0].load, places[1].load);
    assert!(places[1].last);
}

#[tokio::test]
async fn credentials_are_not_sent_to_another_site() {
    let server = Server::start(|_, _| {
        json_response(json!({ "data": [{ "id": 1 }], "next": "http://elsewhere.invalid/page2" }))
    })
    .await;
    let config = json!({
        "url": server.url, "records": "/data", "auth": { "bearer": "t0ken" },
        "pagination": { "next_url": "/next" },
    });
    let error = pull_error(&mut build(config).unwrap()).await;
    assert!(!error.retryable);
    assert!(error.message.contains("another site"), "{error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_back_off() {
    let server = Server::start(|_, number| {
        if number < 2 {
            status(500, "oops")
        } else {
            json_response(json!([{ "id": 1 }]))
        }
    })
    .await;
    let started = Instant::now();
    let chunks = pull_run(&mut build(json!({ "url": server.url })).unwrap(), 10).await;
    assert_eq!(ids(&chunks), ["1"]);
    assert_eq!(server.requests().len(), 3);
    // 1s, then 2s.
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn not_found_is_permanent_and_not_retried() {
    let server = Server::start(|_, _| status(404, &"no such thing ".repeat(40))).await;
    let mut puller = build(json!({ "url": format!("{}/missing", server.url) })).unwrap();
    let error = pull_error(&mut puller).await;
    assert!(!error.retryable);
    assert!(error.message.contains("404"), "{error}");
    assert!(error.message.contains("/missing"), "{error}");
    assert!(error.message.contains("no such thing"), "{error}");
    assert!(error.message.len() < 400, "the body is cut: {error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_exhausted_is_a_retryable_error() {
    let server = Server::start(|_, _| {
        let mut response = status(503, "maintenance");
        response.headers.push(("Retry-After", "0".into()));
        response
    })
    .await;
    let mut puller = build(json!({ "url": server.url, "retries": 2 })).unwrap();
    let error = pull_error(&mut puller).await;
    assert!(error.retryable);
    assert!(error.message.contains("503"), "{error}");
    assert!(error.message.contains("after 3 attempts"), "{error}");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_response_that_is_not_json_names_its_content_type() {
    let server = Server::start(|_, _| Response {
        status: 200,
        headers: vec![("Content-Type", "text/html; charset=utf-8".into())],
        body: "<html></html>".into(),
    })
    .await;
    let error = pull_error(&mut build(json!({ "url": server.url })).unwrap()).await;
    assert!(!error.retryable);
    assert!(error.message.contains("text/html"), "{error}");
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    // A port that was free a moment ago.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let mut puller = build(json!({ "url": url, "retries": 0 })).unwrap();
    let error = pull_error(&mut puller).await;
    assert!(error.retryable, "{error}");
}

// ---- configuration ---------------------------------------------------------------------------

#[test]
fn configuration_errors_name_their_key() {
    let error = |config: Value| {
        let error = build(config).err().expect("an error");
        (error.path.join("."), error.message)
    };
    let url = "https://api.example.com/v1";
    assert_eq!(error(json!({})).1, "missing field `url`");
    assert_eq!(error(json!({ "url": "not a url" })).0, "url");
    assert_eq!(error(json!({ "url": "ftp://example.com/" })).0, "url");
    assert_eq!(error(json!({ "url": url, "method": "PUT" })).0, "method");
    assert_eq!(error(json!({ "url": url, "body": "{}" })).0, "body");
    assert_eq!(
        error(json!({ "url": url, "method": "POST", "body": "{oops" })).0,
        "body"
    );
    assert_eq!(
        error(json!({ "url": url, "headers": { "bad header": "x" } })).0,
        "headers.bad header"
    );
    assert_eq!(error(json!({ "url": url, "records": "data" })).0, "records");
    assert_eq!(
        error(json!({ "url": url, "pagination": { "next_url": "links" } })).0,
        "pagination.next_url"
    );
    assert_eq!(
        error(json!({ "url": url, "pagination": { "offset": { "param": "o", "limit": 0 } } })).0,
        "pagination.offset.limit"
    );
    let (path, message) = error(json!({ "url": url, "pagination": { "cursor": "x" } }));
    assert_eq!(path, "pagination");
    assert!(message.contains("unknown variant `cursor`"), "{message}");
    assert_eq!(error(json!({ "url": url, "timeout": "soon" })).0, "timeout");
    assert_eq!(error(json!({ "url": url, "max_pages": 0 })).0, "max_pages");
    assert_eq!(
        error(json!({ "url": url, "chunk_rows": 0 })).0,
        "chunk_rows"
    );
    assert_eq!(
        error(json!({ "url": url, "columns": [{ "name": "a", "type": "money" }] })).0,
        "columns.0.type"
    );
    let (path, message) = error(json!({ "url": url, "auth": { "token": "x" } }));
    assert_eq!(path, "auth");
    assert!(message.contains("unknown variant `token`"), "{message}");
    assert!(!message.contains("\"x\""), "{message}");
    let (_, message) = error(json!({ "url": url, "retry": 3 }));
    assert!(message.contains("unknown field `retry`"), "{message}");

    // Building connects to nothing.
    build(json!({
        "url": "https://unreachable.invalid/x",
        "method": "post",
        "body": { "a": 1 },
        "auth": { "basic": { "user": "u", "password": "p" } },
        "pagination": { "link_header": true },
    }))
    .unwrap();
}

// ---- conformance ------------------------------------------------------------------------------

/// The `http` puller over a server answering five records, one per chunk.
struct Api {
    server: Option<Server>,
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PullerUnderTest for Api {
    async fn fill(&mut self, good: usize) -> Option<String> {
        let items: Vec<Value> = (1..=good).map(|id| json!({ "id": id })).collect();
        self.server = Some(Server::start(move |_, _| json_response(json!(items))).await);
        // A response that is not JSON fails its load, not an item: nothing to plant.
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        let url = &self.server.as_ref().unwrap().url;
        build(json!({ "url": url, "chunk_rows": 1 })).unwrap()
    }

    async fn remaining(&self) -> Option<usize> {
        None
    }

    fn full_loads(&self) -> bool {
        true
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        // A port that was free a moment ago.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let secret = crate::conformance::SECRET;
        let config = json!({
            "url": format!("http://{address}/"), "retries": 0, "auth": { "bearer": secret },
        });
        Some((build(config).unwrap(), address.to_string()))
    }
}

#[tokio::test]
async fn the_http_puller_conforms() {
    crate::conformance::puller_conforms(&mut Api { server: None }).await;
}
