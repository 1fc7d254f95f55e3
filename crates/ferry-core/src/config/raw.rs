//! Raw `serde` structs that mirror the definition files, key for key.
//!
//! Every field is optional here, even the required ones: a missing key is reported by
//! [`super::validate`] with a better message than serde's, and a key that fails to parse can be
//! dropped so the rest of the file is still checked (see `Document::deserialize`). Nested
//! sections are kept as plain values and parsed one by one, so that each reports its own
//! errors and a section must be a mapping (serde would also read a struct from a sequence).

use serde::Deserialize;

/// `ferry.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSystem {
    /// Shown on every console page, e.g. `ferry DEV`. Default `ferry`.
    pub system_alias: Option<String>,
    /// Store URL. Default `sqlite://data/ferry.db`.
    pub store: Option<String>,
    /// The web console: a [`RawWeb`].
    pub web: Option<serde_json::Value>,
    /// Size of the worker pool, 1 to 256. Default 4.
    pub workers: Option<u64>,
    /// What each client's definitions may reach, by client name: each a [`RawGrant`].
    pub clients: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One client's grant in `ferry.yaml` (`clients: <client>:`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrant {
    /// Directories (relative to the project, or absolute) its pullers and pushers may read and
    /// write. Default `[data/<client>]`.
    pub paths: Option<Vec<String>>,
    /// Environment variables its files may name as `${NAME}`. Default none.
    pub env: Option<Vec<String>>,
}

/// `web:` in `ferry.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeb {
    /// Socket address the console listens on. Default `127.0.0.1:5000`.
    pub listen: Option<String>,
}

/// `clients/<client>/client.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    /// How long complete passengers stay in the queue, e.g. `7d` (the default).
    pub queue_life_span: Option<String>,
    /// How long runs and their logs are kept, e.g. `30d` (the default).
    pub log_life_span: Option<String>,
    /// Console users by name, each a [`RawUser`].
    pub users: Option<serde_json::Map<String, serde_json::Value>>,
    /// Who is told about what, each a [`RawNotification`]. Default none.
    pub notifications: Option<Vec<serde_json::Value>>,
}

/// One entry of `notifications:` in `client.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotification {
    /// What to tell about: `dead`, `run_failed`, `paused`, `{ queue_age: 1h }`; required.
    pub on: Option<Vec<serde_json::Value>>,
    /// The channel, a mapping of one key: `{ email: { connection: NAME, to: [ADDRESS] } }`,
    /// `{ webhook: URL }`, `{ slack: URL }`, `{ discord: URL }` or `{ teams: URL }`; required.
    pub to: Option<serde_json::Value>,
    /// The client's pipelines it is about. Default: all of them.
    pub pipelines: Option<Vec<String>>,
    /// The grouping window and rate limit, e.g. `5m` (the default).
    pub every: Option<String>,
}

/// `to: { email: … }` of a notification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    /// An `smtp` connection of `connections.yaml` granted to the client; required.
    pub connection: Option<String>,
    /// Recipients: an address or a list; required.
    pub to: Option<serde_json::Value>,
}

/// One user in `client.yaml`, written by `ferry user add`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    /// `operator` or `administrator`; required.
    pub role: Option<String>,
    /// The argon2 hash of the password (a PHC string); required.
    pub password_hash: Option<String>,
}

/// `clients/<client>/pipelines/<name>.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    /// What the pipeline is for, shown in the console. Default empty.
    pub description: Option<String>,
    /// `every 30s`, `cron "*/5 * * * *"`, `continuous` or `manual`. Default `every 1m`.
    pub schedule: Option<String>,
    /// Where passengers come from; at least one. Each is a [`RawComponent`], parsed one by one
    /// so that every component reports its own errors.
    pub pullers: Option<Vec<serde_json::Value>>,
    /// What happens to passengers on the way, in order; each a [`RawComponent`].
    pub processors: Option<Vec<serde_json::Value>>,
    /// Where passengers go; at least one. Each is a [`RawComponent`].
    pub pushers: Option<Vec<serde_json::Value>>,
    /// How failed steps are tried again: a [`RawRetry`].
    pub retry: Option<serde_json::Value>,
    /// Pulling pauses while more passengers than this are unfinished. Default 100000.
    pub queue_limit: Option<u64>,
    /// Passengers per pull, per queue transaction and per push call, 1 to 10000. Default 500.
    pub batch_size: Option<u64>,
    /// Pipelines of the same client that must succeed first, in the same cycle.
    pub depends_on: Option<Vec<String>>,
    /// `HH:MM-HH:MM` in local time: runs start only inside it.
    pub window: Option<String>,
    /// 0 (first) to 9. Default 5.
    pub priority: Option<u64>,
    /// Consecutive failed runs that pause the pipeline; 0 never. Default 3.
    pub failure_limit: Option<u64>,
    /// `seated` or `delivered`: whether a run ends once its passengers are in the queue or once
    /// they were delivered. Default `delivered` for pipelines in a dependency chain, else
    /// `seated`.
    pub run_ends: Option<String>,
}

/// One connection in `connections.yaml`: its type, the clients it serves, and the keys its
/// connection type reads (`url`, `host`, `path`, `tls`, …).
#[derive(Debug, Deserialize)]
pub(crate) struct RawConnection {
    /// The connection type's name (`postgres`, `mysql`, `sqlite`, …); required.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The clients whose pipelines may use it. Default: none (only `ferry check` uses it).
    pub clients: Option<Vec<String>>,
    #[serde(flatten)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `retry:` in a pipeline.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    /// Attempts in all, the first included; at least 1. Default 5.
    pub max_attempts: Option<u32>,
    /// Delay before the second attempt, doubling each time. Default `10s`.
    pub backoff: Option<String>,
    /// The delay never exceeds this. Default `1h`.
    pub max_backoff: Option<String>,
}

/// One puller, processor or pusher of a pipeline.
#[derive(Debug, Deserialize)]
pub(crate) struct RawComponent {
    /// The component type, e.g. `file`; required.
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// Unique per role within the pipeline. Default: the type, then `type-2`, `type-3`…
    pub name: Option<String>,
    /// Every other key: the component's own configuration, checked by the component.
    #[serde(flatten)]
    pub config: serde_json::Map<String, serde_json::Value>,
}
