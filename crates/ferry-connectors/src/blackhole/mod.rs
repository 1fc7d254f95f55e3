//! `blackhole` pusher: counts what it is given and drops it, for benchmarks and dry runs (as
//! Vector's `blackhole` sink). Every passenger counts as delivered; nothing is written anywhere.
//!
//! ```yaml
//! pushers:
//!   - type: blackhole
//! ```
//!
//! It logs its running totals (passengers, rows of record batches, bytes) at `debug` with each
//! batch, so a benchmark can read them; the console shows the deliveries as for any pusher.

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ferry_core::records;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use serde::Deserialize;
use tracing::debug;

/// Configuration of the `blackhole` pusher: none.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

/// Builds `blackhole` pushers.
pub struct BlackholePusherFactory;

impl PusherFactory for BlackholePusherFactory {
    const TYPE: &'static str = "blackhole";
    type Config = BlackholeConfig;

    fn build(
        &self,
        _config: BlackholeConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        Ok(Box::new(BlackholePusher {
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
            totals: Totals::default(),
        }))
    }
}

/// What a blackhole was given since it was built.
#[derive(Debug, Default)]
pub struct Totals {
    pub passengers: AtomicU64,
    /// Rows of the record batches among them.
    pub rows: AtomicU64,
    /// Body bytes.
    pub bytes: AtomicU64,
}

/// Counts and drops.
pub struct BlackholePusher {
    pipeline: String,
    component: String,
    totals: Totals,
}

impl BlackholePusher {
    pub fn totals(&self) -> &Totals {
        &self.totals
    }
}

#[async_trait]
impl Pusher for BlackholePusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let rows: u64 = passengers
            .iter()
            .filter_map(|passenger| records::read(&passenger.body).ok())
            .map(|batch| batch.rows as u64)
            .sum();
        let bytes: u64 = passengers.iter().map(|p| p.body.data.len() as u64).sum();
        let totals = &self.totals;
        let count = passengers.len() as u64;
        let passengers_total = totals.passengers.fetch_add(count, Ordering::Relaxed) + count;
        let rows_total = totals.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let bytes_total = totals.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            written = count,
            passengers_total,
            rows_total,
            bytes_total,
            "blackhole push"
        );
        vec![Ok(()); passengers.len()]
    }
}
