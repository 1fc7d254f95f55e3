//! `/metrics`: what Prometheus scrapes from a console on a real engine and store.

mod support;

use std::collections::BTreeMap;

use axum::http::{StatusCode, header};
use ferry_core::config::{StepDef, StepKind};
use ferry_store::PipelineKey;
use support::{Console, Who, eventually};

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition strictly: every line is a comment or a sample, and it ends with
/// `# EOF`.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("#"), "{line}");
            let kind = words.next().unwrap_or_default();
            assert!(
                ["TYPE", "HELP", "UNIT", "EOF"].contains(&kind),
                "unknown comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value ({e}): {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                labels(
                    rest.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}")),
                    line,
                ),
            ),
            None => (series, BTreeMap::new()),
        };
        assert!(
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

/// `k="v",k2="v2"`, with `\"`, `\\` and `\n` escapes in values.
fn labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label: {line}"));
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name `{key}`: {line}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unclosed label value: {line}"),
            }
        };
        labels.insert(key.to_string(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// The value of the series `name` with exactly these labels.
fn value(samples: &[Sample], name: &str, wanted: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = wanted
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

async fn scrape(console: &Console, who: &Who) -> Vec<Sample> {
    let answer = console.get(who, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let content_type = answer.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    parse(&answer.body)
}

const ORDERS: &[(&str, &str)] = &[("client", "acme"), ("pipeline", "orders")];
const BROKEN: &[(&str, &str)] = &[("client", "acme"), ("pipeline", "broken")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_scrapes_the_queue_the_counters_and_run_durations() {
    let console = Console::start().await;
    let root = console.token("root", "administrator").await;

    // The runs end (and are counted) a moment after their passengers are pushed.
    eventually("every run counted", || async {
        let samples = scrape(&console, &root).await;
        ["orders", "broken"].iter().all(|pipeline| {
            let labels = [("client", "acme"), ("pipeline", *pipeline)];
            value(&samples, "ferry_run_duration_seconds_count", &labels) >= Some(1.0)
        }) && value(&samples, "ferry_pulled_total", ORDERS) >= Some(5.0)
    })
    .await;
    let samples = scrape(&console, &root).await;
    let passengers = |client: &str, pipeline: &str, state: &str| {
        value(
            &samples,
            "ferry_passengers",
            &[("client", client), ("pipeline", pipeline), ("state", state)],
        )
    };
    assert_eq!(passengers("acme", "orders", "complete"), Some(5.0));
    assert_eq!(passengers("acme", "orders", "dead"), Some(0.0));
    assert_eq!(passengers("acme", "broken", "dead"), Some(2.0));
    assert_eq!(passengers("globex", "orders", "complete"), Some(5.0));

    assert_eq!(value(&samples, "ferry_up", &[]), Some(1.0));
    assert!(value(&samples, "ferry_seated_total", ORDERS) >= Some(5.0));
    assert!(value(&samples, "ferry_pulled_total", BROKEN) >= Some(2.0));
    assert!(
        value(
            &samples,
            "ferry_pushed_total",
            &[
                ("client", "acme"),
                ("pipeline", "orders"),
                ("pusher", "file")
            ],
        ) >= Some(5.0)
    );
    assert!(value(&samples, "ferry_dead_total", BROKEN) >= Some(2.0));
    assert_eq!(value(&samples, "ferry_dead_total", ORDERS), Some(0.0));
    assert_eq!(value(&samples, "ferry_filtered_total", ORDERS), Some(0.0));
    assert_eq!(value(&samples, "ferry_failed_total", ORDERS), Some(0.0));
    assert_eq!(value(&samples, "ferry_pipeline_paused", ORDERS), Some(0.0));
    assert_eq!(
        value(&samples, "ferry_oldest_open_age_seconds", ORDERS),
        Some(0.0),
        "nothing of acme/orders is open"
    );

    // The histogram's buckets are cumulative and end with every run.
    let count = value(&samples, "ferry_run_duration_seconds_count", ORDERS).unwrap();
    let infinite = value(
        &samples,
        "ferry_run_duration_seconds_bucket",
        &[("client", "acme"), ("pipeline", "orders"), ("le", "+Inf")],
    );
    assert_eq!(infinite, Some(count));
    assert!(value(&samples, "ferry_run_duration_seconds_sum", ORDERS) > Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_pipeline_and_its_waiting_passenger_show() {
    let console = Console::start().await;
    let key = PipelineKey::new("acme", "orders");
    console.engine.pause(&key).await.unwrap();
    // A passenger seated an hour ago that no worker takes while the pipeline is paused.
    let an_hour_ago = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let mut passenger = ferry_core::Passenger::pulled("test", "waiting-1");
    passenger.created_at = an_hour_ago;
    let steps = [StepDef {
        kind: StepKind::Pusher,
        name: "file".into(),
    }];
    console
        .store
        .seat(&key, "v1", &steps, &[passenger], an_hour_ago)
        .await
        .unwrap();

    let root = console.login("root", "admin").await;
    let samples = scrape(&console, &root).await;
    assert_eq!(value(&samples, "ferry_pipeline_paused", ORDERS), Some(1.0));
    assert_eq!(value(&samples, "ferry_pipeline_paused", BROKEN), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "ferry_passengers",
            &[
                ("client", "acme"),
                ("pipeline", "orders"),
                ("state", "pending")
            ],
        ),
        Some(1.0)
    );
    let age = value(&samples, "ferry_oldest_open_age_seconds", ORDERS).unwrap();
    assert!((3600.0..3700.0).contains(&age), "{age}");
    assert_eq!(
        value(&samples, "ferry_oldest_open_age_seconds", BROKEN),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_may_scrape() {
    let console = Console::start().await;
    for who in [
        console.token("acme", "administrator").await,
        console.token("acme", "operator").await,
        console.login("acme", "ada").await,
    ] {
        let answer = console.get(&who, "/metrics").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{who:?}");
        assert!(!answer.body.contains("ferry_passengers"), "{who:?}");
    }
    let anonymous = console.get(&Who::Anonymous, "/metrics").await;
    assert_ne!(anonymous.status, StatusCode::OK);
    assert!(!anonymous.body.contains("ferry_passengers"));
}
