//! The `blackhole` pusher: everything counts as delivered, and is counted.

use std::sync::atomic::Ordering;

use ferry_core::records::{BatchWriter, Column, ColumnType};
use ferry_core::{BuildContext, Passenger, Pusher};
use serde_json::json;

use super::{BlackholeConfig, BlackholePusher, BlackholePusherFactory};

fn pusher() -> BlackholePusher {
    BlackholePusher {
        pipeline: "acme/bench".into(),
        component: "blackhole".into(),
        totals: Default::default(),
    }
}

fn batch(rows: usize) -> Passenger {
    let mut batch = BatchWriter::new(vec![Column::new("id", ColumnType::Integer)]);
    for row in 0..rows {
        batch.raw(&row.to_string());
        batch.end_row();
    }
    Passenger::pulled("sql:erp", format!("load#{rows}")).with_body(batch.finish())
}

#[tokio::test]
async fn counts_passengers_rows_and_bytes_and_delivers_each() {
    let blackhole = pusher();
    let text = Passenger::pulled("edi", "a").with_body(ferry_core::Body::json(&json!({"a": 1})));
    let (three, five) = (batch(3), batch(5));
    let results = blackhole.push(&[&text, &three, &five]).await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_ok));
    let totals = blackhole.totals();
    assert_eq!(totals.passengers.load(Ordering::Relaxed), 3);
    assert_eq!(totals.rows.load(Ordering::Relaxed), 8);
    let bytes = text.body.data.len() + three.body.data.len() + five.body.data.len();
    assert_eq!(totals.bytes.load(Ordering::Relaxed), bytes as u64);
}

#[test]
fn takes_no_settings() {
    let registry = crate::registry();
    let ctx = BuildContext::default();
    registry
        .check(ferry_core::Role::Pusher, "blackhole", &json!({}), &ctx)
        .unwrap();
    let error = registry
        .check(
            ferry_core::Role::Pusher,
            "blackhole",
            &json!({ "path": "x" }),
            &ctx,
        )
        .unwrap_err();
    assert!(error.message.contains("unknown field `path`"), "{error}");
    let _ = (BlackholeConfig::default(), BlackholePusherFactory);
}

/// Nothing to read back: the harness checks the results, one per passenger, in order.
struct Nowhere;

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Nowhere {
    fn pusher(&self) -> Box<dyn Pusher> {
        Box::new(pusher())
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (1..=count).map(batch).collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        None
    }

    async fn delivered(&self) -> Vec<String> {
        Vec::new()
    }

    fn expected(&self, _passengers: &[Passenger]) -> Vec<String> {
        Vec::new()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        None
    }
}

#[tokio::test]
async fn the_blackhole_pusher_conforms() {
    crate::conformance::pusher_conforms(&mut Nowhere).await;
}
