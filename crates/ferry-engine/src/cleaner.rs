//! The cleaner: purges complete passengers after their client's `queue_life_span` and runs
//! with their logs after `log_life_span`. Open and dead passengers are never purged. It also
//! keeps the queue browser's search index up with the queue.

use std::sync::Arc;
use std::time::Duration;

use crate::{Event, Shared};

/// Cleans now and then at an interval derived from the shortest retention, so a short life span
/// (in tests, say) is honoured closely and a long one costs one pass a minute.
pub(crate) async fn clean(shared: Arc<Shared>) {
    loop {
        let project = shared.project.read().expect("project lock").clone();
        for client in project.clients.values() {
            let now = chrono::Utc::now();
            let before = cutoff(now, client.queue_life_span);
            match shared.store.purge_passengers(&client.name, before).await {
                Ok(0) => {}
                Ok(count) => shared.bus.publish(Event::PassengersPurged {
                    client: client.name.clone(),
                    count,
                }),
                Err(error) => {
                    tracing::error!(client = %client.name, %error, "cannot purge passengers")
                }
            }
            let before = cutoff(now, client.log_life_span);
            if let Err(error) = shared.store.purge_runs(&client.name, before).await {
                tracing::error!(client = %client.name, %error, "cannot purge runs");
            }
        }
        let shortest = project
            .clients
            .values()
            .flat_map(|c| [c.queue_life_span, c.log_life_span])
            .min()
            .unwrap_or(Duration::from_secs(60));
        let every = (shortest / 4).clamp(Duration::from_millis(500), Duration::from_secs(60));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// `now - span`, or the beginning of time for a span too long to subtract.
fn cutoff(now: ferry_core::Timestamp, span: Duration) -> ferry_core::Timestamp {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| now.checked_sub_signed(span))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Passengers added to the search index per transaction: short enough that seats and reports
/// wait little for the store's write lock.
const INDEX_BATCH: usize = 2_000;

/// Keeps the queue browser's search index up with the queue, off the seat path (see
/// `Store::index_search`): a batch at a time while behind, a look every second once caught up.
/// While behind it takes at most a tenth of the time, so that a burst of seats and reports is
/// not slowed down by indexing (measured: up to a quarter slower when indexing went on
/// between every batch); the index catches up once the burst is over, and a search finds
/// what is not indexed yet anyway.
pub(crate) async fn index(shared: Arc<Shared>) {
    loop {
        let started = std::time::Instant::now();
        let pause = match shared.store.index_search(INDEX_BATCH).await {
            Ok(n) if n == INDEX_BATCH => started.elapsed() * 9,
            Ok(_) => Duration::from_secs(1),
            Err(error) => {
                tracing::error!(%error, "cannot update the search index");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
