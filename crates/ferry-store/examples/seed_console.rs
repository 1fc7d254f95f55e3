//! Fills the store of a project with passengers for the console benchmark (`bench/console.sh`).
//!
//! `cargo run --release -p ferry-store --example seed_console DIR PASSENGERS TOKEN_SHA256`
//!
//! Opens `sqlite://data/ferry.db` under DIR (the store `ferry run DIR` uses) and seats
//! PASSENGERS over the last 30 days in batches of up to 10,000 (split where the hour
//! changes, as `created_at` is the time of the seat call): most in `acme/invoices`, some in
//! `acme/orders`, few in `acme/rare`, the rest in `globex/feed`. Then, oldest first as workers
//! would, it completes them, except one in 500 dead (with one of three errors), one in 500
//! failed and waiting for a retry, the newest 0.5 % of each pipeline pending, and a few dead
//! ones discarded. The pipelines are paused so that `ferry run` leaves the states as they are.
//! A root API token whose secret has the SHA-256 hex digest TOKEN_SHA256 is added.
//!
//! It prints `KEY=value` lines the benchmark script reads: ids and times to query with.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use ferry_core::config::{StepDef, StepKind};
use ferry_core::{Body, Passenger, PassengerId, Timestamp};
use ferry_store::{ApiToken, Finished, PipelineKey, StepChange};
use uuid::{NoContext, Uuid};

/// Passengers per `seat` call (per pipeline, at most).
const SEAT_BATCH: usize = 10_000;
/// Passengers per lease and finish transaction.
const FINISH_BATCH: usize = 5_000;
/// How far back the oldest passenger was seated.
const SPAN_DAYS: i64 = 30;

const ERRORS: [&str; 3] = [
    "schema mismatch: field `total` is not a number",
    "HTTP 422 from https://erp.example/api/invoices: duplicate invoice number",
    "connection refused (os error 111)",
];

/// Pipeline, source system and external id prefix; passenger `n` goes to `SHARES[share(n)]`.
const SHARES: [(&str, &str, &str, &str); 4] = [
    ("acme", "invoices", "sap", "INV"),
    ("acme", "orders", "shop", "ORD"),
    ("acme", "rare", "edi", "EDI"),
    ("globex", "feed", "feed", "FD"),
];

/// 70 % invoices, 20 % orders, 1 % rare, 9 % the other client.
fn share(n: usize) -> usize {
    match n % 100 {
        0..=69 => 0,
        70..=89 => 1,
        90 => 2,
        _ => 3,
    }
}

/// The hour a passenger was pulled in.
fn hour_of(passenger: &Passenger) -> i64 {
    passenger.created_at.timestamp() / 3600
}

/// A UUIDv7 of the given time, as the ids ferry gives pulled passengers.
fn id_at(at: Timestamp) -> PassengerId {
    let millis = at.timestamp_millis() as u64;
    let stamp =
        uuid::Timestamp::from_unix(NoContext, millis / 1000, (millis % 1000) as u32 * 1_000_000);
    PassengerId(Uuid::new_v7(stamp))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: seed_console DIR PASSENGERS TOKEN_SHA256";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let total: usize = args.next().ok_or(usage)?.parse()?;
    let token_hash = args.next().ok_or(usage)?;
    let store = ferry_store::open("sqlite://data/ferry.db", &dir).await?;

    let keys: Vec<PipelineKey> = SHARES
        .iter()
        .map(|(client, pipeline, ..)| PipelineKey::new(*client, *pipeline))
        .collect();
    let steps = vec![StepDef {
        kind: StepKind::Pusher,
        name: "file".into(),
    }];
    let now = Utc::now();
    let first_at = now - TimeDelta::days(SPAN_DAYS);
    let step = TimeDelta::days(SPAN_DAYS) / total.max(1) as i32;

    let started = Instant::now();
    let mut middle_invoice = None;
    for first in (0..total).step_by(SEAT_BATCH) {
        let mut batches: [Vec<Passenger>; 4] = Default::default();
        for n in first..(first + SEAT_BATCH).min(total) {
            let at = first_at + step * n as i32;
            let (_, _, source, prefix) = SHARES[share(n)];
            let mut passenger = Passenger::pulled(source, format!("{prefix}-2026-{n:07}"));
            passenger.id = id_at(at);
            passenger.created_at = at;
            passenger.body = Body {
                media_type: "application/json".into(),
                data: Bytes::from(format!(
                    r#"{{"number":"{prefix}-2026-{n:07}","customer":"C{:05}","total":{}.{:02},"lines":[{{"sku":"SKU-{:04}","qty":{}}}],"note":"{}"}}"#,
                    n % 20_000,
                    n % 9_000,
                    n % 100,
                    n % 5_000,
                    n % 7 + 1,
                    "x".repeat(320),
                )),
            };
            if middle_invoice.is_none() && n >= total / 2 && share(n) == 0 {
                middle_invoice = Some((passenger.id, passenger.external_id.clone()));
            }
            batches[share(n)].push(passenger);
        }
        for (key, batch) in keys.iter().zip(&batches) {
            // `created_at` is the time of the seat call, one per call: split the batch where
            // the hour changes, so that times spread like those of a real queue.
            for hour in batch.chunk_by(|a, b| hour_of(a) == hour_of(b)) {
                store
                    .seat(key, "v1", &steps, hour, hour[0].created_at)
                    .await?;
            }
        }
        let seated = (first + SEAT_BATCH).min(total);
        if seated.is_multiple_of(100_000) || seated == total {
            eprintln!("seated {seated}");
        }
    }
    eprintln!("seated {total} in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut dead = Vec::new();
    for key in &keys {
        let mut open = store.open_count(key).await? as usize;
        let keep_open = open / 200;
        let mut n = 0usize;
        while open > keep_open {
            let leased = store
                .lease(
                    key,
                    FINISH_BATCH.min(open - keep_open),
                    Duration::from_secs(600),
                    now,
                )
                .await?;
            if leased.is_empty() {
                break;
            }
            let mut reports = Vec::with_capacity(leased.len());
            for leased in &leased {
                let change = match n % 500 {
                    0 => {
                        dead.push(leased.passenger.id);
                        StepChange::Dead {
                            error: ERRORS[(n / 500) % ERRORS.len()].into(),
                        }
                    }
                    1 => StepChange::Retry {
                        error: "timeout after 30 s".into(),
                        at: now + TimeDelta::hours(1),
                    },
                    _ => StepChange::Done,
                };
                reports.push(Finished {
                    id: leased.passenger.id,
                    token: leased.token,
                    processed: None,
                    steps: vec![(0, change)],
                    split: None,
                });
                n += 1;
            }
            store.finish(&reports, now).await?;
            open -= leased.len();
        }
    }
    // A person discarded some of the dead.
    for id in dead.iter().step_by(10) {
        store.discard(*id, now).await?;
    }
    for key in &keys {
        store.set_paused(key, true).await?;
    }
    eprintln!("finished in {:.1} s", started.elapsed().as_secs_f64());

    // What `ferry run` does in the background, all at once here (in the same batches), so the
    // benchmark measures a search index that is up to date.
    let started = Instant::now();
    while store.index_search(2_000).await? > 0 {}
    eprintln!(
        "indexed for search in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let token = ApiToken {
        id: 0,
        client: "root".into(),
        name: "console benchmark".into(),
        role: "administrator".into(),
        // bench/console.sh makes this user; a token acts with at most its maker's role.
        created_by: "root/admin".into(),
        created_at: now,
        last_used_at: None,
    };
    store.create_token(&token_hash, &token).await?;

    let counts = store.counts(None).await?;
    for (key, states) in &counts {
        let states: Vec<String> = states
            .iter()
            .map(|(state, n)| format!("{}={n}", state.as_str()))
            .collect();
        eprintln!("{key}: {}", states.join(" "));
    }
    // What the benchmark queries with.
    if let Some((id, external_id)) = middle_invoice {
        println!("DEEP_BEFORE={id}");
        println!("MIDDLE_ID={external_id}");
    }
    let day = (now - TimeDelta::days(20)).date_naive();
    println!("DAY_SINCE={day}");
    println!("DAY_UNTIL={}", day + TimeDelta::days(1));
    Ok(())
}
