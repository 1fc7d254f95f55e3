//! The `generate` puller: counts, unique ids, sizes.

use std::collections::HashSet;

use ferry_core::{BuildContext, BuildError, Puller};
use serde_json::{Value, json};

fn build(config: Value) -> Result<Box<dyn Puller>, BuildError> {
    let ctx = BuildContext {
        pipeline: "bench".into(),
        ..BuildContext::default()
    };
    crate::registry().puller("generate", &config, &ctx)
}

/// `(passengers, more)` of one pull.
async fn pull(puller: &mut Box<dyn Puller>, max: usize) -> (Vec<ferry_core::Passenger>, bool) {
    let pulled = puller.pull(max).await.unwrap();
    assert!(pulled.failures.is_empty());
    (pulled.passengers, pulled.more)
}

#[tokio::test]
async fn stops_after_count_in_pieces_of_per_pull() {
    let mut puller = build(json!({ "count": 5, "per_pull": 2 })).unwrap();
    let mut sizes = Vec::new();
    for _ in 0..4 {
        let (passengers, more) = pull(&mut puller, 100).await;
        sizes.push((passengers.len(), more));
    }
    assert_eq!(sizes, [(2, true), (2, true), (1, false), (0, false)]);
}

#[tokio::test]
async fn without_a_count_each_pull_fills_the_batch() {
    let mut puller = build(json!({})).unwrap();
    let (passengers, more) = pull(&mut puller, 7).await;
    assert_eq!(passengers.len(), 7);
    assert!(!more, "the schedule decides when to pull again");
    let (passengers, _) = pull(&mut puller, 3).await;
    assert_eq!(passengers.len(), 3);
}

#[tokio::test]
async fn external_ids_are_sequential_and_unique_across_instances() {
    let mut first = build(json!({})).unwrap();
    let mut second = build(json!({})).unwrap();
    let (a, _) = pull(&mut first, 1000).await;
    let (b, _) = pull(&mut second, 1000).await;
    let ids: HashSet<_> = a.iter().chain(&b).map(|p| p.external_id.clone()).collect();
    assert_eq!(ids.len(), 2000, "two runs must never collide");

    assert!(
        a[0].external_id.starts_with("bench-"),
        "{}",
        a[0].external_id
    );
    assert!(
        a[0].external_id.ends_with("-000000001"),
        "{}",
        a[0].external_id
    );
    assert!(a[1].external_id.ends_with("-000000002"));
    let mut sorted = a.clone();
    sorted.sort_by(|x, y| x.external_id.cmp(&y.external_id));
    assert_eq!(sorted, a, "ids of one run sort in the order they were made");

    let mut custom = build(json!({ "external_id_prefix": "x/", "source_system": "demo" })).unwrap();
    let (c, _) = pull(&mut custom, 1).await;
    assert!(c[0].external_id.starts_with("x/"));
    assert_eq!(c[0].source_system, "demo");
}

#[tokio::test]
async fn bodies_are_json_documents_of_about_the_asked_size() {
    let mut puller = build(json!({ "size": 1024 })).unwrap();
    let (passengers, _) = pull(&mut puller, 3).await;
    let kinds: Vec<_> = passengers
        .iter()
        .map(|p| p.metadata["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["invoice", "refund", "order"]);
    for (passenger, seq) in passengers.iter().zip(1..) {
        assert_eq!(passenger.body.data.len(), 1024);
        let body = passenger.body.as_json().unwrap();
        assert_eq!(body["seq"], seq);
        assert_eq!(body["kind"], passenger.metadata["kind"]);
        assert!(body["amount"].as_f64().unwrap() >= 1.0);
        assert!(body["at"].as_str().unwrap().ends_with('Z'));
        assert!(body["payload"].as_str().unwrap().len() > 900);
    }

    // Smaller than the fields themselves: as small as it gets.
    let mut tiny = build(json!({ "size": 10 })).unwrap();
    let (passengers, _) = pull(&mut tiny, 1).await;
    let body = passengers[0].body.as_json().unwrap();
    assert_eq!(body["payload"], "");
}

#[test]
fn configuration_errors_name_their_key() {
    assert_eq!(
        build(json!({ "per_pull": 0 })).err().unwrap().path,
        ["per_pull"]
    );
    assert_eq!(
        build(json!({ "size": 1_000_000_000 })).err().unwrap().path,
        ["size"]
    );
    let unknown = build(json!({ "rate": 5 })).err().unwrap();
    assert!(
        unknown.message.contains("unknown field `rate`"),
        "{unknown}"
    );
}

/// Not a timed test: run with
/// `cargo test -p ferry-connectors --release -- --ignored --nocapture generates_a_million`.
#[tokio::test]
#[ignore]
async fn generates_a_million_quickly() {
    let mut puller = build(json!({ "count": 1_000_000, "size": 1024 })).unwrap();
    let start = std::time::Instant::now();
    let mut total = 0;
    loop {
        let (passengers, more) = pull(&mut puller, 1000).await;
        total += passengers.len();
        if !more {
            break;
        }
    }
    assert_eq!(total, 1_000_000);
    println!("1,000,000 passengers of 1 KB in {:?}", start.elapsed());
}
