//! Conversions between ferry's types and the values both stores keep in their columns:
//! times as milliseconds, metadata as JSON, states and step kinds as their names.

use std::time::Duration;

use ferry_core::config::StepKind;
use ferry_core::{Metadata, Timestamp};

use crate::{PassengerState, Result, StepState, StoreError};

/// A timestamp as stored: milliseconds since the Unix epoch.
pub(crate) fn millis(time: Timestamp) -> i64 {
    time.timestamp_millis()
}

/// A duration in milliseconds, saturating (a lease of a thousand years is still a lease).
pub(crate) fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A stored timestamp back as a time.
pub(crate) fn time(millis: i64) -> Result<Timestamp> {
    chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| corrupt(format!("timestamp {millis} is out of range")))
}

pub(crate) fn optional_time(millis: Option<i64>) -> Result<Option<Timestamp>> {
    millis.map(time).transpose()
}

/// Metadata as stored: a JSON object, or NULL when empty (most passengers carry none, and
/// NULL costs nothing to write or parse).
pub(crate) fn metadata_json(metadata: &Metadata) -> Result<Option<String>> {
    if metadata.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(metadata)
        .map(Some)
        .map_err(|error| StoreError::Backend(Box::new(error)))
}

pub(crate) fn metadata_from_json(json: Option<String>) -> Result<Metadata> {
    match json {
        None => Ok(Metadata::new()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|error| corrupt(format!("metadata is not a JSON object of strings: {error}"))),
    }
}

pub(crate) fn passenger_state(text: &str) -> Result<PassengerState> {
    text.parse().map_err(corrupt)
}

/// The step states that are stored; `in_flight` never is (it comes from the passenger's lease).
pub(crate) fn step_state(text: &str) -> Result<StepState> {
    match text {
        "pending" => Ok(StepState::Pending),
        "failed" => Ok(StepState::Failed),
        "done" => Ok(StepState::Done),
        "dead" => Ok(StepState::Dead),
        "skipped" => Ok(StepState::Skipped),
        "filtered" => Ok(StepState::Filtered),
        other => Err(corrupt(format!("unknown step state `{other}`"))),
    }
}

pub(crate) fn step_kind(text: &str) -> Result<StepKind> {
    match text {
        "processor" => Ok(StepKind::Processor),
        "pusher" => Ok(StepKind::Pusher),
        other => Err(corrupt(format!("unknown step kind `{other}`"))),
    }
}

/// A stored count (an `i64`) as the `u32` the trait uses.
pub(crate) fn small_count(value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(format!("count {value} is out of range")))
}

/// The database holds something this code never writes.
pub(crate) fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Backend(format!("unexpected data in the store: {}", message.into()).into())
}
