//! The `generate` puller: synthetic JSON documents with unique external ids.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Seated, StepError,
};
use tracing::debug;

use super::GeneratePullerConfig;

/// The largest `size` accepted, so a typo cannot make every passenger a gigabyte.
const MAX_SIZE: usize = 16 * 1024 * 1024;

/// The kinds of document generated, in turn.
const KINDS: [&str; 3] = ["order", "invoice", "refund"];

/// Builds `generate` pullers.
pub struct GeneratePullerFactory;

impl PullerFactory for GeneratePullerFactory {
    const TYPE: &'static str = "generate";
    type Config = GeneratePullerConfig;

    fn build(
        &self,
        config: GeneratePullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        if config.per_pull == Some(0) {
            return Err(BuildError::at("per_pull", "must be at least 1"));
        }
        if config.size > MAX_SIZE {
            return Err(BuildError::at(
                "size",
                format!("must be at most {MAX_SIZE} bytes"),
            ));
        }
        if config.source_system.is_empty() {
            return Err(BuildError::at("source_system", "must not be empty"));
        }
        let prefix = match config.external_id_prefix {
            Some(prefix) => prefix,
            None if ctx.pipeline.is_empty() => "gen-".to_string(),
            None => format!("{}-", ctx.pipeline),
        };
        let shape = Shape {
            source_system: config.source_system,
            id_prefix: format!("{prefix}{}-", run_stamp()),
            size: config.size,
            padding: padding(config.size),
        };
        Ok(Box::new(GeneratePuller {
            shape: Arc::new(shape),
            per_pull: config.per_pull,
            remaining: config.count,
            next_seq: 1,
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            component: ctx.component.clone(),
        }))
    }
}

/// Makes synthetic passengers.
pub struct GeneratePuller {
    shape: Arc<Shape>,
    per_pull: Option<usize>,
    /// Passengers still to make; `None`: no limit.
    remaining: Option<u64>,
    /// The sequence number of the next passenger.
    next_seq: u64,
    /// `client/pipeline`, for logs.
    pipeline: String,
    component: String,
}

/// What every generated passenger shares.
struct Shape {
    source_system: String,
    /// The configured prefix, the run stamp and `-`: external ids are this plus the sequence
    /// number.
    id_prefix: String,
    size: usize,
    /// `size` bytes of filler, sliced for each body's `payload`.
    padding: String,
}

#[async_trait]
impl Puller for GeneratePuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        let mut count = max.min(self.per_pull.unwrap_or(usize::MAX));
        if let Some(remaining) = self.remaining {
            count = count.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        let first = self.next_seq;
        self.next_seq += count as u64;
        if let Some(remaining) = &mut self.remaining {
            *remaining -= count as u64;
        }

        // Making a thousand 1 KB bodies takes about a millisecond: too long for the runtime.
        let shape = Arc::clone(&self.shape);
        let passengers = tokio::task::spawn_blocking(move || shape.make(first, count))
            .await
            .map_err(|error| StepError::retryable(format!("generate task failed: {error}")))?;
        // Without a count there is always more, but pulling flat out is the schedule's call.
        let more = matches!(self.remaining, Some(remaining) if remaining > 0);
        debug!(
            pipeline = %self.pipeline,
            component = %self.component,
            passengers = passengers.len(),
            more,
            "generated passengers"
        );
        Ok(Pulled {
            passengers,
            more,
            ..Pulled::default()
        })
    }

    /// Nothing to acknowledge: generated passengers exist nowhere else.
    async fn ack(&mut self, _seated: &[Seated]) -> Result<(), StepError> {
        Ok(())
    }
}

impl Shape {
    /// `count` passengers, sequence numbers from `first` on.
    fn make(&self, first: u64, count: usize) -> Vec<Passenger> {
        let now = Utc::now();
        let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut passengers = Vec::with_capacity(count);
        for seq in first..first + count as u64 {
            passengers.push(self.passenger(seq, now, &at));
        }
        passengers
    }

    fn passenger(&self, seq: u64, now: DateTime<Utc>, at: &str) -> Passenger {
        let kind = KINDS[(seq % KINDS.len() as u64) as usize];
        // Amounts that look varied but are reproducible: 1.00 to 10,000.99.
        let cents = 100 + seq.wrapping_mul(7_919) % 1_000_000;
        // Written by hand rather than through `serde_json::Value`: this is the hot loop of
        // benchmarks, and every value here is known to need no escaping.
        let mut body = String::with_capacity(self.size.max(128));
        let _ = write!(
            body,
            r#"{{"seq":{seq},"at":"{at}","kind":"{kind}","amount":{}.{:02},"payload":""#,
            cents / 100,
            cents % 100
        );
        let filler = self.size.saturating_sub(body.len() + 2);
        body.push_str(&self.padding[..filler.min(self.padding.len())]);
        body.push_str("\"}");

        let mut passenger = Passenger::pulled(
            self.source_system.clone(),
            format!("{}{seq:09}", self.id_prefix),
        );
        passenger.created_at = now;
        passenger.metadata.insert("kind".into(), kind.into());
        passenger.body = Body {
            media_type: "application/json".into(),
            data: Bytes::from(body),
        };
        passenger
    }
}

/// `size` bytes of printable filler.
fn padding(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size)
        .map(|i| char::from(ALPHABET[i % ALPHABET.len()]))
        .collect()
}

/// The start time of a puller in Unix milliseconds, distinct for every puller of this process.
///
/// External ids are the prefix, this stamp and a counter, so a restarted pipeline never makes
/// an id its previous run made (the queue would drop it as a duplicate), while the ids of one
/// run stay sequential. Two pullers built in the same millisecond get consecutive stamps.
fn run_stamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let previous = match LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        Some(now.max(last + 1))
    }) {
        Ok(previous) | Err(previous) => previous,
    };
    now.max(previous + 1)
}
