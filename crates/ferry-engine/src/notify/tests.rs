//! Notifications against real receivers: webhooks served by axum on 127.0.0.1, e-mail through
//! the SMTP test server (scripts/smtp-test-server.py), read back from its directory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use ferry_core::config::{SourceFile, validate};
use serde_json::Value;

use super::*;

/// What a receiver got: the path and the JSON body of each POST.
#[derive(Clone, Default)]
struct Received {
    posts: Arc<Mutex<Vec<(String, Value)>>>,
    /// Answers this many requests with 503 before accepting.
    failures: Arc<Mutex<usize>>,
}

impl Received {
    fn posts(&self) -> Vec<(String, Value)> {
        self.posts.lock().unwrap().clone()
    }
}

async fn receive(
    State(received): State<Received>,
    UrlPath(path): UrlPath<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    {
        let mut failures = received.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    received.posts.lock().unwrap().push((path, body));
    StatusCode::OK
}

/// A webhook receiver on a free port; its base URL.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
}

const PIPELINE: &str =
    "schedule: manual\npullers: [{type: generate}]\npushers: [{type: blackhole}]\n";

/// A project whose client `acme` has `notifications` (YAML lines under `notifications:`) and
/// the pipelines `invoices` and `orders`.
fn project(notifications: &str, connections: &str) -> Project {
    let files = [
        ("ferry.yaml", "system_alias: ferry TEST\n".to_string()),
        ("connections.yaml", connections.to_string()),
        (
            "clients/acme/client.yaml",
            format!("notifications:\n{notifications}"),
        ),
        ("clients/acme/pipelines/invoices.yaml", PIPELINE.to_string()),
        ("clients/acme/pipelines/orders.yaml", PIPELINE.to_string()),
    ];
    let files = files
        .into_iter()
        .map(|(path, content)| SourceFile {
            path: path.into(),
            content,
        })
        .collect();
    let registry = ferry_connectors::registry();
    match validate(Path::new("/tmp"), files, &registry, &|_| None) {
        Ok(project) => project,
        Err(errors) => panic!("{errors:#?}"),
    }
}

fn notifier() -> Notifier {
    Notifier::new(Arc::new(ferry_connectors::registry()))
}

fn key(pipeline: &str) -> PipelineKey {
    PipelineKey::new("acme", pipeline)
}

fn dead(pipeline: &str, error: &str) -> Event {
    Event::PassengerDead {
        pipeline: key(pipeline),
        id: PassengerId::new(),
        step: "erp".into(),
        error: error.into(),
    }
}

fn failed_run(pipeline: &str, run: RunId) -> Event {
    Event::RunFinished {
        pipeline: key(pipeline),
        run: Some(run),
        status: RunStatus::Failed,
        counts: Default::default(),
        error: Some("cannot reach the source".into()),
        seconds: 1.0,
    }
}

#[tokio::test]
async fn five_hundred_dead_passengers_make_one_message() {
    let (url, received) = receiver().await;
    let project = project(
        &format!("  - {{ on: [dead], to: {{ webhook: \"{url}/hook\" }}, every: 1m }}\n"),
        "",
    );
    let mut notifier = notifier();
    let start = Instant::now();
    for n in 0..500 {
        let pipeline = if n % 5 == 0 { "orders" } else { "invoices" };
        notifier.observe(&project, &dead(pipeline, &format!("HTTP 500 #{n}")), start);
    }
    assert_eq!(notifier.due(), Some(start + Duration::from_secs(60)));

    // The window is still open: nothing yet.
    notifier
        .flush(&project, start + Duration::from_secs(59))
        .await;
    assert!(received.posts().is_empty());

    notifier
        .flush(&project, start + Duration::from_secs(60))
        .await;
    let posts = received.posts();
    assert_eq!(posts.len(), 1, "one message for 500 dead passengers");
    let (path, body) = &posts[0];
    assert_eq!(path, "hook");
    assert_eq!(body["system"], "ferry TEST");
    assert_eq!(body["client"], "acme");
    assert_eq!(body["title"], "[ferry TEST] acme: 500 dead passengers");
    assert_eq!(body["dead"]["count"], 500);
    assert_eq!(body["dead"]["pipelines"]["acme/invoices"], 400);
    assert_eq!(body["dead"]["pipelines"]["acme/orders"], 100);
    let samples = body["dead"]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), SAMPLES);
    assert_eq!(samples[0]["error"], "HTTP 500 #0");
    assert_eq!(samples[0]["step"], "erp");
    assert!(samples[0]["id"].as_str().unwrap().len() == 36);
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("500 passengers went dead:\n"), "{text}");
    assert!(text.contains("  acme/invoices: 400\n"), "{text}");
    assert!(text.contains("… and 490 more"), "{text}");
    assert_eq!(body["run_failed"]["count"], 0);
    assert_eq!(notifier.due(), None, "nothing waits");
}

#[tokio::test]
async fn one_message_per_window_and_a_failed_send_is_retried_with_what_joined_it() {
    let (url, received) = receiver().await;
    *received.failures.lock().unwrap() = 1;
    let project = project(
        &format!(
            "  - {{ on: [dead, run_failed], to: {{ webhook: \"{url}/ops\" }}, every: 10s }}\n"
        ),
        "",
    );
    let mut notifier = notifier();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    notifier.observe(&project, &dead("invoices", "bad row"), t0);
    // A later event joins the open window, which does not move.
    notifier.observe(&project, &failed_run("invoices", 7), t0 + s(5));
    assert_eq!(notifier.due(), Some(t0 + s(10)));

    // The receiver fails: the message waits for the next window.
    notifier.flush(&project, t0 + s(10)).await;
    assert!(received.posts().is_empty());
    assert_eq!(notifier.due(), Some(t0 + s(20)));
    notifier.observe(&project, &dead("orders", "bad row"), t0 + s(12));
    notifier.flush(&project, t0 + s(15)).await;
    assert!(received.posts().is_empty(), "at most one try per window");

    notifier.flush(&project, t0 + s(20)).await;
    let posts = received.posts();
    assert_eq!(posts.len(), 1);
    let body = &posts[0].1;
    assert_eq!(
        body["dead"]["count"], 2,
        "what joined meanwhile travels too"
    );
    assert_eq!(body["run_failed"]["count"], 1);
    assert_eq!(body["run_failed"]["samples"][0]["run"], "7");
    assert_eq!(
        body["title"],
        "[ferry TEST] acme: 2 dead passengers, 1 failed run"
    );

    // The next event opens a new window.
    notifier.observe(&project, &dead("orders", "again"), t0 + s(21));
    assert_eq!(notifier.due(), Some(t0 + s(31)));
    notifier.flush(&project, t0 + s(31)).await;
    assert_eq!(received.posts().len(), 2);

    // At shutdown what waits is sent at once.
    notifier.observe(&project, &dead("orders", "last"), t0 + s(32));
    notifier.flush_all(&project).await;
    assert_eq!(received.posts().len(), 3);
    assert_eq!(notifier.due(), None);
}

#[tokio::test]
async fn slack_discord_and_teams_get_their_payload_shapes() {
    let (url, received) = receiver().await;
    let project = project(
        &format!(
            "  - {{ on: [paused], to: {{ slack: \"{url}/slack\" }}, every: 1s }}\n\
             \x20 - {{ on: [paused], to: {{ discord: \"{url}/discord\" }}, every: 1s }}\n\
             \x20 - {{ on: [paused], to: {{ teams: \"{url}/teams\" }}, every: 1s }}\n"
        ),
        "",
    );
    let mut notifier = notifier();
    let t0 = Instant::now();
    let paused = Event::PipelinePaused {
        pipeline: key("invoices"),
        reason: Some("paused after 3 failed runs in a row".into()),
    };
    notifier.observe(&project, &paused, t0);
    // A pause by a person tells nobody.
    let by_hand = Event::PipelinePaused {
        pipeline: key("orders"),
        reason: None,
    };
    notifier.observe(&project, &by_hand, t0);
    notifier.flush(&project, t0 + Duration::from_secs(1)).await;
    let mut posts = received.posts();
    posts.sort_by(|a, b| a.0.cmp(&b.0));
    let paths: Vec<&str> = posts.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["discord", "slack", "teams"]);
    let expected = "[ferry TEST] acme: 1 paused pipeline\n1 pipeline paused itself:\n  - \
                    acme/invoices: paused after 3 failed runs in a row\n";
    assert_eq!(
        posts[0].1,
        json!({ "content": format!("**{}", expected.replacen('\n', "**\n", 1)) })
    );
    assert_eq!(posts[1].1, json!({ "text": expected }));
    assert_eq!(posts[2].1, json!({ "text": expected }));
}

#[tokio::test]
async fn only_the_pipelines_and_events_a_notification_names() {
    let (url, received) = receiver().await;
    let project = project(
        &format!(
            "  - {{ on: [run_failed], to: {{ webhook: \"{url}/a\" }}, pipelines: [orders], \
             every: 1s }}\n"
        ),
        "",
    );
    let mut notifier = notifier();
    let t0 = Instant::now();
    notifier.observe(&project, &failed_run("invoices", 1), t0);
    notifier.observe(&project, &dead("orders", "x"), t0);
    assert_eq!(notifier.due(), None, "neither is told");
    notifier.observe(&project, &failed_run("orders", 2), t0);
    notifier.flush(&project, t0 + Duration::from_secs(1)).await;
    let posts = received.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].1["run_failed"]["pipelines"],
        json!({ "acme/orders": 1 })
    );
}

#[tokio::test]
async fn an_old_queue_is_told_once_until_it_is_young_again() {
    let (url, received) = receiver().await;
    let project = project(
        &format!("  - {{ on: [queue_age: 1h], to: {{ webhook: \"{url}/age\" }}, every: 1s }}\n"),
        "",
    );
    let mut notifier = notifier();
    let t0 = Instant::now();
    let utc = chrono::Utc::now();
    let hours = |h: i64| utc - chrono::Duration::hours(h) - chrono::Duration::minutes(5);
    let oldest = BTreeMap::from([(key("invoices"), hours(2)), (key("orders"), hours(0))]);
    notifier.queue_ages(&project, &oldest, utc, t0);
    notifier.flush(&project, t0 + Duration::from_secs(1)).await;
    let posts = received.posts();
    assert_eq!(posts.len(), 1);
    let ages = &posts[0].1["queue_age"];
    assert_eq!(ages.as_array().unwrap().len(), 1, "{ages}");
    assert_eq!(ages[0]["pipeline"], "acme/invoices");
    assert_eq!(ages[0]["age_seconds"], 2 * 3600 + 300);
    assert_eq!(ages[0]["threshold_seconds"], 3600);
    assert!(
        posts[0].1["text"]
            .as_str()
            .unwrap()
            .contains("acme/invoices: the oldest open passenger waits for 2h5m (threshold 1h)"),
        "{}",
        posts[0].1["text"]
    );

    // Still old a minute later: not told again.
    notifier.queue_ages(&project, &oldest, utc, t0 + Duration::from_secs(60));
    assert_eq!(notifier.due(), None);
    // Drained, then old again: told again.
    notifier.queue_ages(
        &project,
        &BTreeMap::new(),
        utc,
        t0 + Duration::from_secs(120),
    );
    notifier.queue_ages(&project, &oldest, utc, t0 + Duration::from_secs(180));
    notifier
        .flush(&project, t0 + Duration::from_secs(181))
        .await;
    assert_eq!(received.posts().len(), 2);
    assert_eq!(
        age_check_every(&project),
        Some(Duration::from_secs(60)),
        "a quarter of the threshold, at most a minute"
    );
}

#[tokio::test]
async fn an_unreachable_webhook_fails_without_showing_its_url() {
    let project = project(
        "  - { on: [dead], to: { webhook: \"http://127.0.0.1:9/x\" } }\n",
        "",
    );
    let digest = digest("ferry TEST", "acme", &Group::default());
    let registry = ferry_connectors::registry();
    let http = reqwest::Client::new();
    let token = "T0-s3cr3t-token";
    for channel in [
        Channel::Slack(format!("http://127.0.0.1:9/services/{token}")),
        Channel::Webhook(format!("http://user:{token}@127.0.0.1:9/hook")),
    ] {
        let error = send(
            &registry,
            &http,
            &project,
            "acme",
            &channel,
            &digest,
            PassengerId::new(),
        )
        .await
        .unwrap_err();
        assert!(!error.contains(token), "{error}");
        assert!(!format!("{channel:?} {channel}").contains(token));
    }
    let (url, received) = receiver().await;
    *received.failures.lock().unwrap() = 1;
    let error = send(
        &registry,
        &http,
        &project,
        "acme",
        &Channel::Teams(format!("{url}/{token}")),
        &digest,
        PassengerId::new(),
    )
    .await
    .unwrap_err();
    assert!(error.contains("503"), "{error}");
    assert!(!error.contains(token), "{error}");
}

/// The SMTP test server's plain listener and directory (as the smtp connector's tests).
fn smtp_server() -> (String, std::path::PathBuf) {
    let address = std::env::var("FERRY_TEST_SMTP").unwrap_or_else(|_| "127.0.0.1:2525".to_string());
    let dir = std::env::var("FERRY_TEST_SMTP_DIR").unwrap_or_else(|_| "/tmp/ferry-smtp".into());
    (address, dir.into())
}

#[tokio::test]
async fn an_email_notification_arrives() {
    let (address, dir) = smtp_server();
    let (host, port) = address.rsplit_once(':').unwrap();
    let to = format!("ops-{}@example.com", uuid_like());
    let project = project(
        &format!(
            "  - {{ on: [dead], to: {{ email: {{ connection: mail, to: [\"{to}\"] }} }}, \
             every: 1s }}\n"
        ),
        &format!(
            "mail: {{ type: smtp, host: \"{host}\", port: {port}, tls: none, \
             from: \"ferry <ferry@example.com>\", clients: [acme] }}\n"
        ),
    );
    let mut notifier = notifier();
    let t0 = Instant::now();
    for n in 0..3 {
        notifier.observe(&project, &dead("invoices", &format!("refused #{n}")), t0);
    }
    notifier.flush(&project, t0 + Duration::from_secs(1)).await;
    assert_eq!(notifier.due(), None, "sent");

    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let raw = std::fs::read(&path).unwrap();
            if String::from_utf8_lossy(&raw).contains(&to) {
                found.push(raw);
            }
        }
    }
    assert_eq!(found.len(), 1, "one message");
    let message = mail_parser::MessageParser::default()
        .parse(&found[0])
        .unwrap();
    assert_eq!(
        message.subject(),
        Some("[ferry TEST] acme: 3 dead passengers")
    );
    let text = message.body_text(0).unwrap();
    assert!(text.contains("3 passengers went dead:"), "{text}");
    assert!(text.contains("refused #2"), "{text}");
}

fn uuid_like() -> String {
    format!("{}", PassengerId::new().0.simple())
}

#[test]
fn an_email_notification_needs_a_sender_and_valid_addresses() {
    let files = |connection: &str, to: &str| {
        [
            ("ferry.yaml", String::new()),
            ("connections.yaml", connection.to_string()),
            (
                "clients/acme/client.yaml",
                format!(
                    "notifications:\n  - on: [dead]\n    to: {{ email: {{ connection: mail, \
                     to: [{to}] }} }}\n"
                ),
            ),
        ]
        .into_iter()
        .map(|(path, content)| SourceFile {
            path: path.into(),
            content,
        })
        .collect::<Vec<_>>()
    };
    let errors = |connection: &str, to: &str| -> Vec<String> {
        let registry = ferry_connectors::registry();
        match validate(Path::new("/tmp"), files(connection, to), &registry, &|_| {
            None
        }) {
            Ok(_) => panic!("valid"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    };
    let no_from = "mail: { type: smtp, host: smtp.example.com, clients: [acme] }\n";
    assert_eq!(
        errors(no_from, "ops@example.com"),
        [
            "clients/acme/client.yaml:3:11: notifications[0].to.email: connection `mail` needs \
          a `from`: the sender of notifications"
        ]
    );
    let with_from =
        "mail: { type: smtp, host: smtp.example.com, from: f@example.com, clients: [acme] }\n";
    let found = errors(with_from, "ops@example.com, nope");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("clients/acme/client.yaml:3:")
            && found[0].contains("notifications[0].to.email.to[1]: not an e-mail address `nope`"),
        "{found:?}"
    );
}
