//! How many passengers per second the store moves through seat → lease → finish.
//!
//! `cargo run --release -p ferry-store --example store_throughput [PASSENGERS] [BATCH]`
//!
//! The SQLite store in a temporary file, or the store at `FERRY_BENCH_STORE` when set (e.g.
//! `postgres://postgres@127.0.0.1/test?schema=ferry_bench`; use a schema of its own, and drop
//! it afterwards).
//!
//! Seats 1 KB passengers with one pusher step in batches, leases them in batches, reports every
//! one done, with durable commits, and prints the rate of each phase and of the three together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_core::config::{StepDef, StepKind};
use ferry_core::{Body, Passenger};
use ferry_store::sqlite::SqliteStore;
use ferry_store::{Finished, PipelineKey, StepChange, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = match std::env::var("FERRY_BENCH_STORE") {
        Ok(url) => ferry_store::open(&url, dir.path()).await?,
        Err(_) => Arc::new(SqliteStore::open(&dir.path().join("ferry.db")).await?),
    };
    let key = PipelineKey::new("acme", "invoices");
    let steps = vec![StepDef {
        kind: StepKind::Pusher,
        name: "file".into(),
    }];
    // One shared 1 KB body: the store copies it into every row, the benchmark need not.
    let body = Body {
        media_type: "application/json".into(),
        data: Bytes::from(vec![b'x'; 1024]),
    };
    let now = chrono::Utc::now();

    let started = Instant::now();
    let mut seated = 0;
    for first in (0..total).step_by(batch) {
        let passengers: Vec<Passenger> = (first..(first + batch).min(total))
            .map(|n| Passenger::pulled("bench", format!("doc-{n:09}")).with_body(body.clone()))
            .collect();
        let results = store.seat(&key, "v1", &steps, &passengers, now).await?;
        seated += results.len();
    }
    let seat_time = started.elapsed();
    report("seat", seated, seat_time);
    if std::env::var("EXP_SEATONLY").is_ok() {
        return Ok(());
    }

    let started = Instant::now();
    let mut leases = Vec::with_capacity(total);
    loop {
        let leased = store
            .lease(&key, batch, Duration::from_secs(600), now)
            .await?;
        if leased.is_empty() {
            break;
        }
        leases.extend(leased.into_iter().map(|l| (l.passenger.id, l.token)));
    }
    let lease_time = started.elapsed();
    report("lease", leases.len(), lease_time);

    let started = Instant::now();
    let mut finished = 0;
    for chunk in leases.chunks(batch) {
        let reports: Vec<Finished> = chunk
            .iter()
            .map(|&(id, token)| Finished {
                id,
                token,
                processed: None,
                steps: vec![(0, StepChange::Done)],
                split: None,
            })
            .collect();
        finished += store.finish(&reports, now).await?;
    }
    let finish_time = started.elapsed();
    report("finish", finished, finish_time);

    report(
        "seat+lease+finish",
        total,
        seat_time + lease_time + finish_time,
    );

    // The way ferry runs: a puller seats while workers lease and finish, all at once. The
    // writer is shared, so this shows what the store sustains when its reads and checkpoints
    // overlap with the writes.
    let key = PipelineKey::new("acme", "concurrent");
    let started = Instant::now();
    let seater = {
        let (store, key, steps, body) = (store.clone(), key.clone(), steps.clone(), body.clone());
        tokio::spawn(async move {
            for first in (0..total).step_by(batch) {
                let passengers: Vec<Passenger> = (first..(first + batch).min(total))
                    .map(|n| {
                        Passenger::pulled("bench", format!("doc-{n:09}")).with_body(body.clone())
                    })
                    .collect();
                store.seat(&key, "v1", &steps, &passengers, now).await?;
            }
            Ok::<_, ferry_store::StoreError>(())
        })
    };
    let finished = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (store, key, finished) = (store.clone(), key.clone(), finished.clone());
        workers.push(tokio::spawn(async move {
            while finished.load(Ordering::Relaxed) < total {
                let leased = store
                    .lease(&key, batch, Duration::from_secs(600), now)
                    .await?;
                if leased.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let reports: Vec<Finished> = leased
                    .iter()
                    .map(|l| Finished {
                        id: l.passenger.id,
                        token: l.token,
                        processed: None,
                        steps: vec![(0, StepChange::Done)],
                        split: None,
                    })
                    .collect();
                let n = store.finish(&reports, now).await?;
                finished.fetch_add(n, Ordering::Relaxed);
            }
            Ok::<_, ferry_store::StoreError>(())
        }));
    }
    seater.await??;
    for worker in workers {
        worker.await??;
    }
    report("all at once", total, started.elapsed());

    let counts = store.counts(None).await?;
    println!("counts: {counts:?}");
    Ok(())
}

/// Workers leasing and finishing at the same time in the concurrent phase.
const WORKERS: usize = 2;

fn report(phase: &str, passengers: usize, took: Duration) {
    let rate = passengers as f64 / took.as_secs_f64();
    println!(
        "{phase:>18}: {passengers:>8} passengers in {:>7.3} s = {rate:>9.0} passengers/s",
        took.as_secs_f64()
    );
}
