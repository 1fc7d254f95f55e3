//! Webhook deliveries through the real `ferry` binary and its console listener: every
//! authentication scheme, body limits while reading, duplicates, 202 only once seated,
//! back-pressure, and a `kill -9` in the middle of thousands of concurrent deliveries after
//! which every delivery that was answered 202 is pushed.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_connectors::webhook::{github_signature, stripe_signature};
use support::{Project, files, stdout, terminate, wait_for};

const GITHUB_SECRET: &str = "gh-SECRET-new";
const GITHUB_OLD_SECRET: &str = "gh-SECRET-old";
const STRIPE_SECRET: &str = "whsec_SECRET";
const TOKEN: &str = "tok-SECRET";
const PASSWORD: &str = "pw-SECRET";
const SECRETS: [&str; 5] = [
    GITHUB_SECRET,
    GITHUB_OLD_SECRET,
    STRIPE_SECRET,
    TOKEN,
    PASSWORD,
];

/// A webhook pipeline pushing each delivery to `out/<name>/<delivery id>.json`.
fn hook(name: &str, settings: &str) -> String {
    format!(
        "pullers:\n  - type: webhook\n{settings}\
         pushers:\n  - type: file\n    path: out/{name}\n    name_template: \"{{external_id}}.json\"\n"
    )
}

/// Starts ferry and waits until its console listens and `hooks` webhooks receive; returns the
/// console's base URL.
fn start(project: &Project, hooks: usize) -> (Child, String) {
    let log_before = project.log().len();
    let child = project.spawn();
    let mut base = String::new();
    wait_for(
        "the console and the webhooks",
        Duration::from_secs(60),
        || {
            let log = project.log();
            let log = &log[log_before.min(log.len())..];
            if let Some(at) = log.find("console on http://") {
                let rest = &log[at + "console on ".len()..];
                base = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            !base.is_empty() && log.matches("webhook receiving").count() >= hooks
        },
    );
    (child, base)
}

/// An answer: status, headers (lower case) and body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Refused with `status`, saying `says`, never showing a secret.
    fn refused(&self, status: u16, says: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.body.contains(says), "`{says}` not in {}", self.body);
        for secret in SECRETS {
            assert!(!self.body.contains(secret), "a secret in {}", self.body);
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Answer {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the console answers");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

fn github_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("X-Hub-Signature-256", github_signature(secret, body)),
        ("X-GitHub-Delivery", id.to_string()),
        ("X-GitHub-Event", "push".to_string()),
        ("Content-Type", "application/json".to_string()),
    ]
}

/// Sends a chunked body (no `Content-Length`) over a plain socket and returns the status.
fn post_chunked(base: &str, path: &str, headers: &str, chunks: usize, chunk: usize) -> u16 {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Transfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    for _ in 0..chunks {
        let data = vec![b'x'; chunk];
        // The server may stop reading once the limit is passed.
        if stream
            .write_all(format!("{chunk:x}\r\n").as_bytes())
            .and_then(|_| stream.write_all(&data))
            .and_then(|_| stream.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

/// The queue's listing of passengers whose external id holds `text`.
fn listed(project: &Project, text: &str) -> String {
    let dir = project.path().to_str().unwrap();
    stdout(&project.ferry(&["queue", "-C", dir, "list", "--text", text]))
}

#[test]
fn deliveries_are_authenticated_seated_then_answered_and_pushed() {
    let project = Project::new(
        "queue_life_span: 1d\n",
        &[
            (
                "github",
                &hook(
                    "github",
                    &format!(
                        "    auth: {{ github: [\"{GITHUB_SECRET}\", \"{GITHUB_OLD_SECRET}\"] }}\n    \
                         keep_headers: [X-GitHub-Event]\n"
                    ),
                ),
            ),
            (
                "stripe",
                &hook(
                    "stripe",
                    &format!("    auth: {{ stripe: {{ secrets: [\"{STRIPE_SECRET}\"] }} }}\n"),
                ),
            ),
            (
                "bearer",
                &hook(
                    "bearer",
                    &format!("    auth: {{ bearer: \"{TOKEN}\" }}\n    max_body: 1KB\n"),
                ),
            ),
            (
                "basic",
                &hook(
                    "basic",
                    &format!(
                        "    path: partner\n    auth: {{ basic: {{ user: partner, password: \"{PASSWORD}\" }} }}\n"
                    ),
                ),
            ),
            (
                "plain",
                "schedule: manual\npullers: [{ type: generate, count: 1 }]\n\
                 pushers: [{ type: file, path: out/plain }]\n",
            ),
        ],
    );
    let (child, base) = start(&project, 4);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let url = |path: &str| format!("{base}{path}");
    runtime.block_on(async {
        // GitHub: the answer comes once the delivery is in the queue.
        let body = br#"{"ref":"refs/heads/main","n":1}"#.to_vec();
        let headers = github_headers(GITHUB_SECRET, "gh-1", &body);
        let answer = post(&client, &url("/hooks/acme/github"), &headers, body.clone()).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(
            answer.json(),
            serde_json::json!({ "id": "gh-1", "duplicate": false })
        );
        assert!(
            listed(&project, "gh-1").contains("gh-1"),
            "seated before the 202: {}",
            listed(&project, "gh-1")
        );
        // A redelivery is a duplicate, still 202.
        let again = post(&client, &url("/hooks/acme/github"), &headers, body.clone()).await;
        assert_eq!(again.status, 202, "{}", again.body);
        assert_eq!(again.json()["duplicate"], true);
        // The secret being rotated out still works.
        let body2 = br#"{"n":2}"#.to_vec();
        let rotated = github_headers(GITHUB_OLD_SECRET, "gh-2", &body2);
        let answer = post(&client, &url("/hooks/acme/github"), &rotated, body2).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        // A wrong secret, a tampered body, no signature.
        let wrong = github_headers("gh-guess", "gh-3", &body);
        post(&client, &url("/hooks/acme/github"), &wrong, body.clone())
            .await
            .refused(401, "matches none of the webhook's secrets");
        post(
            &client,
            &url("/hooks/acme/github"),
            &headers,
            b"{}".to_vec(),
        )
        .await
        .refused(401, "matches none");
        post(&client, &url("/hooks/acme/github"), &[], body.clone())
            .await
            .refused(401, "missing the X-Hub-Signature-256");

        // Stripe, and a replay of an old signature.
        let event = br#"{"id":"evt_1","type":"charge.succeeded"}"#.to_vec();
        let signed = |at: i64| {
            vec![
                (
                    "Stripe-Signature",
                    stripe_signature(STRIPE_SECRET, at, &event),
                ),
                ("Idempotency-Key", format!("evt-{at}")),
            ]
        };
        let answer = post(
            &client,
            &url("/hooks/acme/stripe"),
            &signed(now),
            event.clone(),
        )
        .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        post(
            &client,
            &url("/hooks/acme/stripe"),
            &signed(now - 600),
            event.clone(),
        )
        .await
        .refused(401, "more than the tolerance of 300 s");

        // Bearer tokens, checked before the body is read.
        let bearer = vec![
            ("Authorization", format!("Bearer {TOKEN}")),
            ("X-Request-Id", "req-1".to_string()),
        ];
        let answer = post(
            &client,
            &url("/hooks/acme/bearer"),
            &bearer,
            b"hello".to_vec(),
        )
        .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        let guess = vec![("Authorization", "Bearer tok-guess".to_string())];
        post(
            &client,
            &url("/hooks/acme/bearer"),
            &guess,
            b"hello".to_vec(),
        )
        .await
        .refused(401, "not one of the webhook's tokens");
        // Over max_body (1 KB): refused from its Content-Length…
        post(
            &client,
            &url("/hooks/acme/bearer"),
            &bearer,
            vec![b'x'; 1001],
        )
        .await
        .refused(413, "max_body of 1000 bytes");

        // Basic credentials, at the webhook's own path.
        let basic = |password: &str| {
            let encoded = base64_encode(format!("partner:{password}").as_bytes());
            vec![("Authorization", format!("Basic {encoded}"))]
        };
        let answer = post(
            &client,
            &url("/hooks/acme/basic/partner"),
            &basic(PASSWORD),
            b"a".to_vec(),
        )
        .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        let refused = post(
            &client,
            &url("/hooks/acme/basic/partner"),
            &basic("guess"),
            b"a".to_vec(),
        )
        .await;
        refused.refused(401, "user or password is wrong");
        assert!(refused.headers.contains_key("www-authenticate"));

        // Paths where no webhook receives.
        for path in [
            "/hooks/acme/nothing",
            "/hooks/acme/plain",
            "/hooks/globex/github",
            "/hooks/acme/basic",
            "/hooks/acme/github/partner",
        ] {
            post(&client, &url(path), &headers, body.clone())
                .await
                .refused(404, "no webhook receives at");
        }
    });
    // …and while it is read, when no length is announced.
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(
        post_chunked(&base, "/hooks/acme/bearer", &auth, 8, 256),
        413
    );
    assert_eq!(
        post_chunked(&base, "/hooks/acme/bearer", &auth, 2, 256),
        202
    );

    // Every accepted delivery is pushed once, as it was sent.
    wait_for("the deliveries pushed", Duration::from_secs(30), || {
        files(&project.join("out/github")).len() == 2
            && files(&project.join("out/stripe")).len() == 1
            && files(&project.join("out/bearer")).len() == 2
            && files(&project.join("out/basic")).len() == 1
    });
    assert_eq!(
        files(&project.join("out/github")),
        ["gh-1.json", "gh-2.json"]
    );
    assert_eq!(
        std::fs::read(project.join("out/github/gh-1.json")).unwrap(),
        br#"{"ref":"refs/heads/main","n":1}"#
    );
    assert_eq!(
        files(&project.join("out/stripe")),
        [format!("evt-{now}.json")]
    );
    assert!(terminate(child));
    let log = project.log();
    for secret in SECRETS {
        assert!(!log.contains(secret), "ferry.log shows a secret");
    }
    assert!(
        log.contains("webhook delivery refused"),
        "refusals are logged"
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `total` signed deliveries, `concurrency` at a time, each once; returns the ids that
/// were answered 202 and the number of 503s that carried `Retry-After`.
async fn flood(
    base: String,
    path: &'static str,
    total: usize,
    concurrency: usize,
    accepted_so_far: Arc<AtomicUsize>,
) -> (BTreeSet<String>, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{base}{path}");
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, accepted_so_far) = (
            client.clone(),
            url.clone(),
            next.clone(),
            accepted_so_far.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut accepted = BTreeSet::new();
            let mut busy = 0;
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return (accepted, busy);
                }
                let id = format!("d-{n:05}");
                let body = format!("{{\"delivery\":{n}}}").into_bytes();
                let mut request = client.post(&url).body(body.clone());
                for (name, value) in github_headers(GITHUB_SECRET, &id, &body) {
                    request = request.header(name, value);
                }
                // After a kill, requests fail: those senders heard no 202.
                let Ok(response) = request.send().await else {
                    continue;
                };
                match response.status().as_u16() {
                    202 => {
                        accepted.insert(id);
                        accepted_so_far.fetch_add(1, Ordering::SeqCst);
                    }
                    503 if response.headers().contains_key("retry-after") => busy += 1,
                    _ => {}
                }
            }
        }));
    }
    let mut accepted = BTreeSet::new();
    let mut busy = 0;
    for task in tasks {
        let (ids, refused) = task.await.unwrap();
        accepted.extend(ids);
        busy += refused;
    }
    (accepted, busy)
}

#[test]
fn a_full_endpoint_answers_503_with_retry_after_and_loses_nothing_it_accepted() {
    let settings = format!("    auth: {{ github: \"{GITHUB_SECRET}\" }}\n    capacity: 1\n");
    let project = Project::new(
        "queue_life_span: 1d\n",
        &[("busy", &hook("busy", &settings))],
    );
    let (child, base) = start(&project, 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (accepted, busy) = runtime.block_on(flood(
        base.clone(),
        "/hooks/acme/busy",
        400,
        40,
        Arc::default(),
    ));
    assert!(
        busy > 0,
        "40 senders at once against a capacity of 1 meet a full endpoint"
    );
    assert!(!accepted.is_empty());
    wait_for(
        "the accepted deliveries pushed",
        Duration::from_secs(60),
        || files(&project.join("out/busy")).len() >= accepted.len(),
    );
    let pushed: BTreeSet<String> = files(&project.join("out/busy"))
        .into_iter()
        .map(|name| name.trim_end_matches(".json").to_string())
        .collect();
    assert_eq!(
        pushed, accepted,
        "exactly the accepted deliveries are pushed"
    );
    assert!(terminate(child));
}

/// Concurrent deliveries, `kill -9` in the middle, a restart: every delivery answered 202 is
/// pushed (the others' senders would send again).
#[test]
fn kill_9_amid_concurrent_deliveries_loses_none_that_was_answered_202() {
    const TOTAL: usize = 10_000;
    const CONCURRENCY: usize = 64;
    let settings = format!("    auth: {{ github: \"{GITHUB_SECRET}\" }}\n");
    let project = Project::new(
        "queue_life_span: 1d\n",
        &[(
            "crash",
            &format!("{}batch_size: 500\n", hook("crash", &settings)),
        )],
    );
    let (mut first, base) = start(&project, 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let counted = Arc::new(AtomicUsize::new(0));
    let sending = runtime.spawn(flood(
        base.clone(),
        "/hooks/acme/crash",
        TOTAL,
        CONCURRENCY,
        counted.clone(),
    ));
    let started = Instant::now();
    wait_for(
        "a quarter of the deliveries accepted",
        Duration::from_secs(120),
        || counted.load(Ordering::SeqCst) >= TOTAL / 4,
    );
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let (accepted, _) = runtime.block_on(sending).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} deliveries accepted before the kill, {:.0}/s",
        accepted.len(),
        accepted.len() as f64 / seconds
    );
    assert!(
        accepted.len() < TOTAL,
        "the kill must come before every delivery was accepted"
    );

    let (second, _) = start(&project, 1);
    let outbox = project.join("out/crash");
    wait_for(
        "every accepted delivery pushed",
        Duration::from_secs(120),
        || {
            let pushed: BTreeSet<String> = files(&outbox)
                .into_iter()
                .map(|name| name.trim_end_matches(".json").to_string())
                .collect();
            accepted.is_subset(&pushed)
        },
    );
    let pushed = files(&outbox);
    assert!(
        pushed
            .iter()
            .all(|name| name.starts_with("d-") && name.ends_with(".json")),
        "no temporary files left: {:?}",
        pushed.iter().find(|n| !n.ends_with(".json"))
    );
    assert!(terminate(second));
}

#[test]
fn validation_requires_authentication_and_a_continuous_schedule() {
    let hourly = "schedule: every 1h\npullers:\n  - type: webhook\n    auth: { bearer: tok-SECRET }\n\
                  pushers:\n  - { type: file, path: out/a }\n";
    let open = "pullers:\n  - type: webhook\n    keep_headers: [X-Event]\npushers:\n  - { type: file, path: out/b }\n";
    let implied = "pullers:\n  - type: webhook\n    auth: { bearer: tok-SECRET }\n\
                   pushers:\n  - { type: file, path: out/c }\n";
    let project = Project::new(
        "queue_life_span: 7d\n",
        &[("hourly", hourly), ("open", open), ("implied", implied)],
    );
    let output = project.ferry(&["validate", project.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let errors = support::stderr(&output);
    assert!(
        errors.contains("clients/acme/pipelines/hourly.yaml:1:")
            && errors.contains("the `webhook` puller `webhook` receives what is sent to ferry")
            && errors.contains("write `schedule: continuous`"),
        "{errors}"
    );
    assert!(
        errors.contains("clients/acme/pipelines/open.yaml:")
            && errors.contains("a webhook must authenticate its senders"),
        "{errors}"
    );
    assert!(!errors.contains("implied.yaml"), "{errors}");
    assert!(!errors.contains("tok-SECRET"), "{errors}");
}
