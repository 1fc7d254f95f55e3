//! How the SQLite store behaves with a million passengers: browsing speed and memory.
//!
//! `cargo run --release -p ferry-store --example store_scale [PASSENGERS]`
//!
//! Seats 1 KB passengers over several pipelines and two clients, completes most of them,
//! leaves some failed, dead and pending, then times the console's queries (pages with each
//! filter, deep pages, counts, one passenger) and prints the process's peak memory.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_core::config::{StepDef, StepKind};
use ferry_core::{Body, Passenger};
use ferry_store::sqlite::SqliteStore;
use ferry_store::{Finished, PassengerState, PipelineKey, QueueFilter, StepChange, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("ferry.db")).await?;
    let steps = vec![StepDef {
        kind: StepKind::Pusher,
        name: "file".into(),
    }];
    let body = Body {
        media_type: "application/json".into(),
        data: Bytes::from(vec![b'x'; 1024]),
    };
    // Most traffic in one big pipeline, some in small ones, a second client.
    let keys = [
        PipelineKey::new("acme", "invoices"),
        PipelineKey::new("acme", "orders"),
        PipelineKey::new("acme", "rare"),
        PipelineKey::new("globex", "feed"),
    ];
    let share = |n: usize| match n % 100 {
        0..=69 => 0,
        70..=89 => 1,
        90 => 2,
        _ => 3,
    };
    let now = chrono::Utc::now();

    let started = Instant::now();
    for first in (0..total).step_by(1_000) {
        let mut batches: [Vec<Passenger>; 4] = Default::default();
        for n in first..(first + 1_000).min(total) {
            let passenger =
                Passenger::pulled("bench", format!("doc-{n:09}")).with_body(body.clone());
            batches[share(n)].push(passenger);
        }
        for (key, batch) in keys.iter().zip(&batches) {
            if !batch.is_empty() {
                store.seat(key, "v1", &steps, batch, now).await?;
            }
        }
    }
    println!("seated {total} in {:.1} s", started.elapsed().as_secs_f64());

    // Everything complete except the last few thousand: some dead, some failed, the rest
    // pending.
    let started = Instant::now();
    let mut finished = 0usize;
    for key in &keys {
        let mut open = store.open_count(key).await? as usize;
        let keep_open = open / 200;
        while open > keep_open {
            let leased = store
                .lease(
                    key,
                    1_000.min(open - keep_open),
                    Duration::from_secs(600),
                    now,
                )
                .await?;
            let reports: Vec<Finished> = leased
                .iter()
                .enumerate()
                .map(|(n, leased)| {
                    let change = if n % 500 == 0 {
                        StepChange::Dead {
                            error: "schema mismatch".into(),
                        }
                    } else if n % 500 == 1 {
                        StepChange::Retry {
                            error: "timeout".into(),
                            at: now + chrono::TimeDelta::hours(1),
                        }
                    } else {
                        StepChange::Done
                    };
                    Finished {
                        id: leased.passenger.id,
                        token: leased.token,
                        processed: None,
                        steps: vec![(0, change)],
                        split: None,
                    }
                })
                .collect();
            finished += store.finish(&reports, now).await?;
            open -= leased.len();
        }
    }
    println!(
        "finished {finished} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let acme = || QueueFilter {
        client: Some("acme".into()),
        ..QueueFilter::default()
    };
    let filters = [
        ("everything", QueueFilter::default()),
        ("client", acme()),
        (
            "client + big pipeline",
            QueueFilter {
                pipeline: Some("invoices".into()),
                ..acme()
            },
        ),
        (
            "client + rare pipeline",
            QueueFilter {
                pipeline: Some("rare".into()),
                ..acme()
            },
        ),
        (
            "client + dead",
            QueueFilter {
                state: Some(PassengerState::Dead),
                ..acme()
            },
        ),
        (
            "client + failed",
            QueueFilter {
                state: Some(PassengerState::Failed),
                ..acme()
            },
        ),
        (
            "client + pending",
            QueueFilter {
                state: Some(PassengerState::Pending),
                ..acme()
            },
        ),
        (
            "client + complete",
            QueueFilter {
                state: Some(PassengerState::Complete),
                ..acme()
            },
        ),
        (
            "client + text (exact id)",
            QueueFilter {
                text: Some("doc-000500000".into()),
                ..acme()
            },
        ),
        (
            "client + since (last hour)",
            QueueFilter {
                since: Some(now - chrono::TimeDelta::hours(1)),
                ..acme()
            },
        ),
    ];
    for (name, filter) in &filters {
        let started = Instant::now();
        let first = store.list(filter, None, 50).await?;
        let first_page = started.elapsed();
        // Ten pages further down, as someone clicking "next".
        let mut before = first.last().map(|entry| entry.id);
        let started = Instant::now();
        let mut pages = 0;
        while pages < 10 {
            let Some(id) = before else { break };
            let page = store.list(filter, Some(id), 50).await?;
            before = page.last().map(|entry| entry.id);
            pages += 1;
        }
        println!(
            "list {name:>28}: first page {:>8.2} ms ({} rows), next {pages} pages {:>8.2} ms",
            ms(first_page),
            first.len(),
            ms(started.elapsed()),
        );
    }

    let started = Instant::now();
    let counts = store.counts(None).await?;
    println!("counts: {:.2} ms {counts:?}", ms(started.elapsed()));
    let some = store.list(&QueueFilter::default(), None, 1).await?;
    let started = Instant::now();
    let detail = store.get(some[0].id).await?;
    println!(
        "get: {:.2} ms ({} bytes of body)",
        ms(started.elapsed()),
        detail.original.body.data.len()
    );
    for key in &keys {
        let started = Instant::now();
        let due = store.next_due(key).await?;
        let open = store.open_count(key).await?;
        println!(
            "{key}: open {open}, next due {due:?} in {:.2} ms",
            ms(started.elapsed())
        );
    }

    println!("peak memory (VmHWM): {}", peak_memory());
    let started = Instant::now();
    let purged = store
        .purge_passengers("acme", now + chrono::TimeDelta::seconds(1))
        .await?;
    println!(
        "purged {purged} in {:.1} s; peak memory {}",
        started.elapsed().as_secs_f64(),
        peak_memory()
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The process's peak resident set, from `/proc` (Linux only).
fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .map(|line| line.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
