//! `dedupe`: lets the first passenger with a key through and filters the others with that key
//! for a time window.
//!
//! ```yaml
//! processors:
//!   - type: dedupe
//!     key: .order_id
//!     window: 10m
//! ```
//!
//! The keys seen are kept in memory, per running process and per processor: they are lost on a
//! restart or when the definition is reloaded, and several `ferry` nodes do not share them. The
//! queue's own de-duplication (`source_system` + `external_id`) is the durable one; this one is
//! for the same content arriving under different ids.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::SecondsFormat;
use ferry_core::{
    BuildContext, BuildError, Outcome, Passenger, PassengerId, Processor, ProcessorFactory,
    StepError, Timestamp,
};
use serde::Deserialize;

use super::program::{Input, Mode, VrlProgram, text_of};

/// Keys remembered unless `max_keys` says otherwise.
const DEFAULT_MAX_KEYS: usize = 100_000;

/// Configuration of the `dedupe` processor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// A VRL expression over the body (`.`) and the metadata (`%`) that gives the key, e.g.
    /// `.order_id` or `[.customer, .invoice_no]`. Strings are keys as they are, other values
    /// by their JSON text; null fails the passenger permanently.
    pub key: String,
    /// How long after a key is first seen later passengers with it are filtered, e.g. `10m`.
    pub window: String,
    /// The most keys remembered; when full, the oldest is forgotten first (so a duplicate of
    /// it passes). Default 100000.
    #[serde(default)]
    pub max_keys: Option<usize>,
}

/// Builds `dedupe` processors.
pub struct DedupeFactory;

impl ProcessorFactory for DedupeFactory {
    const TYPE: &'static str = "dedupe";
    type Config = DedupeConfig;

    fn build(
        &self,
        config: DedupeConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Dedupe::new(config, Box::new(chrono::Utc::now))?))
    }
}

/// Tells the time; tests give their own.
type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

/// Filters passengers whose key was seen within the window.
pub struct Dedupe {
    key: VrlProgram,
    window: chrono::Duration,
    /// The window as written, for reasons.
    window_text: String,
    max_keys: usize,
    clock: Clock,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedupe")
            .field("key", &self.key)
            .field("window", &self.window_text)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

/// The keys seen within the window: a map to look them up and a queue, oldest first, to
/// forget them. Every key is in both, once.
#[derive(Default)]
struct Seen {
    by_key: HashMap<Arc<str>, FirstSeen>,
    oldest_first: VecDeque<(Timestamp, Arc<str>)>,
}

/// When a key was first seen, and on which passenger.
struct FirstSeen {
    at: Timestamp,
    passenger: PassengerId,
}

impl Dedupe {
    fn new(config: DedupeConfig, clock: Clock) -> Result<Dedupe, BuildError> {
        let key = VrlProgram::inline(&["key"], &config.key, Mode::Expression)?;
        let window = ferry_core::duration::parse(&config.window)
            .map_err(|message| BuildError::at("window", message))?;
        if window.is_zero() {
            return Err(BuildError::at(
                "window",
                "the window must be longer than 0s",
            ));
        }
        let window = chrono::Duration::from_std(window)
            .map_err(|_| BuildError::at("window", "the window is too long"))?;
        let max_keys = config.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if max_keys == 0 {
            return Err(BuildError::at("max_keys", "must be at least 1"));
        }
        Ok(Dedupe {
            key,
            window,
            window_text: config.window.trim().to_string(),
            max_keys,
            clock,
            seen: Mutex::new(Seen::default()),
        })
    }
}

impl Processor for Dedupe {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        let value = self.key.evaluate(&mut Input::new(&passenger))?;
        if value.is_null() {
            return Err(StepError::permanent(format!(
                "the key `{}` is null; give a key that every passenger has, or a default \
                 (`.id ?? \"none\"`)",
                self.key.summary()
            )));
        }
        let key = text_of(&value)?;
        let now = (self.clock)();
        // A panic elsewhere cannot leave the map half-changed in a way that matters here.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.forget_older_than(now - self.window);
        match seen.by_key.get(key.as_str()) {
            // The same passenger again (a retry after a later step failed, a replay): it was
            // the first, so it still passes.
            Some(first) if first.passenger == passenger.id => {}
            Some(first) => {
                return Ok(Outcome::Filtered {
                    reason: format!(
                        "duplicate key `{}`, first seen at {} (window {})",
                        shorten(&key),
                        first.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                        self.window_text
                    ),
                });
            }
            None => seen.remember(key, now, passenger.id, self.max_keys),
        }
        drop(seen);
        Ok(Outcome::Continue(passenger))
    }
}

impl Seen {
    /// Forgets the keys first seen at or before `cutoff`.
    fn forget_older_than(&mut self, cutoff: Timestamp) {
        while let Some((at, _)) = self.oldest_first.front() {
            if *at > cutoff {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.oldest_first.pop_front() {
            self.by_key.remove(&key);
        }
    }

    fn remember(&mut self, key: String, at: Timestamp, passenger: PassengerId, max_keys: usize) {
        while self.by_key.len() >= max_keys {
            self.forget_oldest();
        }
        let key: Arc<str> = key.into();
        self.oldest_first.push_back((at, key.clone()));
        self.by_key.insert(key, FirstSeen { at, passenger });
    }
}

/// A key for a reason: at most 100 characters.
fn shorten(key: &str) -> String {
    match key.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &key[..at]),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use chrono::TimeZone;
    use ferry_core::Body;
    use serde_json::json;

    use super::*;

    /// A clock the test moves by hand, in milliseconds since the epoch.
    fn clock() -> (Arc<AtomicI64>, Clock) {
        let millis = Arc::new(AtomicI64::new(1_700_000_000_000));
        let read = millis.clone();
        let clock: Clock = Box::new(move || {
            chrono::Utc
                .timestamp_millis_opt(read.load(Ordering::SeqCst))
                .unwrap()
        });
        (millis, clock)
    }

    fn dedupe(config: serde_json::Value) -> (Arc<AtomicI64>, Dedupe) {
        let (millis, clock) = clock();
        let config = ferry_core::component::parse_config(&config).unwrap();
        (millis, Dedupe::new(config, clock).unwrap())
    }

    fn build_error(config: serde_json::Value) -> BuildError {
        let config = ferry_core::component::parse_config(&config).unwrap();
        DedupeFactory
            .build(config, &BuildContext::default())
            .err()
            .unwrap()
    }

    fn order(id: serde_json::Value) -> Passenger {
        Passenger::pulled("shop", "x").with_body(Body::json(&json!({ "order_id": id })))
    }

    /// `None` when it passes, else the reason.
    fn run(processor: &Dedupe, passenger: Passenger) -> Option<String> {
        match processor.process(passenger).unwrap() {
            Outcome::Continue(_) => None,
            Outcome::Filtered { reason } => Some(reason),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn the_first_passes_and_later_ones_within_the_window_are_filtered() {
        let (millis, d) = dedupe(json!({ "key": ".order_id", "window": "10m" }));
        assert_eq!(run(&d, order(json!("A-1"))), None);
        assert_eq!(run(&d, order(json!("A-2"))), None);
        millis.fetch_add(9 * 60_000, Ordering::SeqCst);
        assert_eq!(
            run(&d, order(json!("A-1"))).unwrap(),
            "duplicate key `A-1`, first seen at 2023-11-14T22:13:20.000Z (window 10m)"
        );
        // Ten minutes after it was first seen the key is forgotten, and passes again.
        millis.fetch_add(60_000, Ordering::SeqCst);
        assert_eq!(run(&d, order(json!("A-1"))), None);
        assert!(run(&d, order(json!("A-1"))).is_some());
    }

    #[test]
    fn non_string_keys_are_their_json() {
        let (_, d) = dedupe(json!({ "key": "[.order_id, %desk]", "window": "1h" }));
        let mut first = order(json!(7));
        first.metadata.insert("desk".into(), "b".into());
        assert_eq!(run(&d, first.clone()), None);
        let mut again = first.clone();
        again.id = PassengerId::new();
        assert!(
            run(&d, again)
                .unwrap()
                .starts_with("duplicate key `[7,\"b\"]`")
        );
    }

    #[test]
    fn the_same_passenger_again_still_passes() {
        let (_, d) = dedupe(json!({ "key": ".order_id", "window": "1h" }));
        let first = order(json!("A-1"));
        assert_eq!(run(&d, first.clone()), None);
        assert_eq!(
            run(&d, first),
            None,
            "a retry of the first passenger is no duplicate"
        );
        assert!(run(&d, order(json!("A-1"))).is_some());
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let (_, d) = dedupe(json!({ "key": ".order_id", "window": "1h", "max_keys": 2 }));
        for id in ["a", "b", "c"] {
            assert_eq!(run(&d, order(json!(id))), None);
        }
        let seen = d.seen.lock().unwrap();
        assert_eq!(seen.by_key.len(), 2);
        assert_eq!(seen.oldest_first.len(), 2);
        drop(seen);
        assert_eq!(
            run(&d, order(json!("a"))),
            None,
            "the oldest key was forgotten"
        );
        assert!(run(&d, order(json!("c"))).is_some());
    }

    #[test]
    fn a_null_key_fails_permanently() {
        let (_, d) = dedupe(json!({ "key": ".order_id", "window": "1h" }));
        let error = d.process(order(json!(null))).unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.starts_with("the key `.order_id` is null"),
            "{error}"
        );
    }

    #[test]
    fn configuration_errors_are_at_their_keys() {
        assert_eq!(
            build_error(json!({ "key": ".a", "window": "10" })).path,
            ["window"]
        );
        assert_eq!(
            build_error(json!({ "key": ".a", "window": "0s" })).path,
            ["window"]
        );
        let error = build_error(json!({ "key": ".a", "window": "1m", "max_keys": 0 }));
        assert_eq!(error.path, ["max_keys"]);
        let error = build_error(json!({ "key": ".a ==", "window": "1m" }));
        assert_eq!(error.path, ["key"]);
        assert!(error.within.is_some());
        let error = build_error(json!({ "key": "del(.a)", "window": "1m" }));
        assert_eq!(error.path, ["key"]);
    }

    #[test]
    fn it_can_be_shared_between_threads() {
        fn is_sync<T: Sync + Send>() {}
        is_sync::<Dedupe>();
        let (_, d) = dedupe(json!({ "key": ".order_id", "window": "1h" }));
        let passed = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| run(&d, order(json!("same"))).is_none()))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .filter(|passed| *passed)
                .count()
        });
        assert_eq!(passed, 1, "exactly one of the four passes");
    }
}
