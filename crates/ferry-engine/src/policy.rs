//! What a failed step becomes under a pipeline's retry policy.

use ferry_core::config::RetryPolicy;
use ferry_core::{StepError, Timestamp};
use ferry_store::StepChange;

/// The change for a step that failed with `error` after `attempts_before` failed attempts:
/// permanent errors and the last attempt make it dead; otherwise it is retried after the
/// policy's back-off with jitter.
pub fn on_failure(
    policy: &RetryPolicy,
    attempts_before: u32,
    error: &StepError,
    now: Timestamp,
) -> StepChange {
    let attempt = attempts_before + 1;
    if error.held {
        return StepChange::Retry {
            error: format!("waiting for someone to act: {}", error.message),
            at: later(now, policy.max_backoff),
        };
    }
    if !error.retryable {
        return StepChange::Dead {
            error: format!("permanent error: {}", error.message),
        };
    }
    if attempt >= policy.max_attempts {
        return StepChange::Dead {
            error: match attempt {
                1 => format!("gave up after 1 attempt: {}", error.message),
                n => format!("gave up after {n} attempts: {}", error.message),
            },
        };
    }
    let delay = policy.delay(attempt, rand::random::<f64>());
    StepChange::Retry {
        error: error.message.clone(),
        at: later(now, delay),
    }
}

/// `now` plus `delay`, or the end of time.
fn later(now: Timestamp, delay: std::time::Duration) -> Timestamp {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        }
    }

    #[test]
    fn held_errors_wait_for_a_person_and_never_die() {
        let now = chrono::Utc::now();
        let error = StepError::held("column `note` would be dropped");
        match on_failure(&policy(), 99, &error, now) {
            StepChange::Retry { at, error } => {
                assert!(error.starts_with("waiting for someone to act"), "{error}");
                assert_eq!(at, now + chrono::Duration::seconds(60));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn retryable_errors_back_off_then_die() {
        let now = chrono::Utc::now();
        let error = StepError::retryable("connection refused");
        match on_failure(&policy(), 0, &error, now) {
            StepChange::Retry { at, error } => {
                assert_eq!(error, "connection refused");
                assert!(at >= now + chrono::Duration::seconds(5));
                assert!(at <= now + chrono::Duration::seconds(10));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        match on_failure(&policy(), 2, &error, now) {
            StepChange::Dead { error } => {
                assert_eq!(error, "gave up after 3 attempts: connection refused")
            }
            other => panic!("expected dead, got {other:?}"),
        }
    }

    #[test]
    fn permanent_errors_die_at_once() {
        let error = StepError::permanent("invalid document");
        assert_eq!(
            on_failure(&policy(), 0, &error, chrono::Utc::now()),
            StepChange::Dead {
                error: "permanent error: invalid document".into()
            }
        );
    }
}
