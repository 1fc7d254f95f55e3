//! The `redis` connection (in `connections.yaml`) and the `redis` puller's and pusher's
//! settings (in a pipeline), as written and as checked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::template::Template;
use ferry_core::{BuildError, duration};
use serde::Deserialize;

/// A Redis server in `connections.yaml`.
///
/// ```yaml
/// cache:
///   type: redis
///   url: redis://redis.internal:6379/0
///   password: ${REDIS_PASSWORD}
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConnectionConfig {
    /// The server, `redis://host:port/db` (`rediss://` for TLS with the public certificate
    /// authorities). Required.
    pub url: String,
    /// The user name (Redis 6 ACL), with `password`. Default: none (`default`).
    #[serde(default)]
    pub user: Option<String>,
    /// The password. Never logged or shown. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Time limit for connecting and for each command, e.g. `10s`; a blocking read adds its
    /// own wait to it. Default `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A checked `redis` connection.
#[derive(Clone)]
pub struct RedisConnection {
    pub name: String,
    pub url: String,
    pub user: Option<String>,
    pub(crate) password: Option<String>,
    pub timeout: Duration,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("name", &self.name)
            .field("url", &self.shown())
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// Reads and checks `connection`'s keys.
    pub fn read(connection: &Connection) -> Result<Self, BuildError> {
        let config: RedisConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| config.url.starts_with(scheme));
        if !scheme_ok {
            return Err(BuildError::at(
                "url",
                "must be `redis://host:port/db` or `rediss://host:port/db`",
            ));
        }
        if config.user.is_some() && config.password.is_none() {
            return Err(BuildError::at("password", "required with `user`"));
        }
        let timeout = match &config.timeout {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("timeout", e))?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() {
            return Err(BuildError::at("timeout", "must be more than 0s"));
        }
        Ok(RedisConnection {
            name: connection.name.clone(),
            url: config.url,
            user: config.user,
            password: config.password,
            timeout,
        })
    }

    /// The server's address without any user or password written into it, for messages.
    pub fn shown(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }

    /// `text` with every secret of the connection blanked out.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        if let Some(password) = &self.password
            && !password.is_empty()
        {
            text = text.replace(password.as_str(), "***");
        }
        if let Some((_, rest)) = self.url.split_once("://")
            && let Some((userinfo, _)) = rest.rsplit_once('@')
            && !userinfo.is_empty()
        {
            text = text.replace(userinfo, "***");
        }
        text
    }
}

/// Configuration of the `redis` puller: a consumer of a consumer group on a stream.
///
/// ```yaml
/// pullers:
///   - type: redis
///     connection: cache
///     stream: orders
///     group: ferry
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisPullerConfig {
    /// The `redis` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The stream's key. Required.
    pub stream: String,
    /// The consumer group; created (with the stream, MKSTREAM) when missing.
    /// Default `ferry-<client>-<pipeline>`.
    #[serde(default)]
    pub group: Option<String>,
    /// This puller's consumer name within the group; keep it stable, so a restarted process
    /// finds its own pending entries. Default `ferry-<client>-<pipeline>`.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Where a newly created group starts: `0` (every entry in the stream) or `$` (only
    /// entries added from then on). Default `0`.
    #[serde(default)]
    pub start: Option<String>,
    /// The field holding the message's payload. Default `body`; the other fields travel as
    /// metadata `redis.field.<name>`.
    #[serde(default)]
    pub body_field: Option<String>,
    /// Entries another consumer of the group has held unacknowledged for this long are
    /// claimed (XAUTOCLAIM), e.g. `60s`: that consumer is taken for dead. Default `60s`.
    #[serde(default)]
    pub claim_idle: Option<String>,
    /// An entry delivered more often than this (crashes, lost acks) fails permanently with
    /// its id instead of travelling again; it stays in the group's pending list, and travels
    /// again (its count reset) once its quarantine is ended. Default `5`.
    #[serde(default)]
    pub max_deliveries: Option<u32>,
    /// How long a pull waits for the first new entry (XREADGROUP BLOCK), e.g. `500ms`.
    /// Default `500ms`.
    #[serde(default)]
    pub max_wait: Option<String>,
    /// The passengers' media type. Default: the entry's `content_type` field, else
    /// `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
}

/// The checked settings of a `redis` puller.
#[derive(Clone, Debug)]
pub struct PullerSettings {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub start: String,
    pub body_field: String,
    pub claim_idle: Duration,
    pub max_deliveries: u32,
    pub max_wait: Duration,
    pub media_type: Option<String>,
}

impl PullerSettings {
    pub fn validate(
        config: &RedisPullerConfig,
        client: &str,
        pipeline: &str,
    ) -> Result<Self, BuildError> {
        let default_name = format!("ferry-{client}-{pipeline}");
        not_empty("stream", &config.stream)?;
        let group = config.group.clone().unwrap_or_else(|| default_name.clone());
        not_empty("group", &group)?;
        let consumer = config.consumer.clone().unwrap_or(default_name);
        not_empty("consumer", &consumer)?;
        let start = config.start.clone().unwrap_or_else(|| "0".into());
        if start != "0" && start != "$" {
            return Err(BuildError::at(
                "start",
                format!("unknown `{start}`; write `0` (every entry) or `$` (new entries)"),
            ));
        }
        let body_field = config.body_field.clone().unwrap_or_else(|| "body".into());
        not_empty("body_field", &body_field)?;
        let claim_idle = positive("claim_idle", config.claim_idle.as_deref(), 60_000)?;
        let max_deliveries = config.max_deliveries.unwrap_or(5);
        if max_deliveries == 0 {
            return Err(BuildError::at("max_deliveries", "must be at least 1"));
        }
        let max_wait = positive("max_wait", config.max_wait.as_deref(), 500)?;
        Ok(PullerSettings {
            stream: config.stream.clone(),
            group,
            consumer,
            start,
            body_field,
            claim_idle,
            max_deliveries,
            max_wait,
            media_type: config.media_type.clone(),
        })
    }
}

/// Configuration of the `redis` pusher: XADD, de-duplicated by passenger id.
///
/// ```yaml
/// pushers:
///   - type: redis
///     connection: cache
///     stream: orders-{metadata.kind}
///     max_len: 1000000
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisPusherConfig {
    /// The `redis` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The stream's key, a template (`orders-{metadata.kind}`). Required.
    pub stream: String,
    /// The field the body goes into. Default `body`.
    #[serde(default)]
    pub body_field: Option<String>,
    /// More fields of each entry, name → template. Default: none (`ferry-id` and
    /// `content_type` are always written).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Trims the stream to about this many entries on each add (`MAXLEN ~`). Default: no
    /// trimming.
    #[serde(default)]
    pub max_len: Option<u64>,
    /// How long the pusher remembers a passenger id it added, so that a re-push after a crash
    /// adds nothing, e.g. `24h`. Default `24h`.
    #[serde(default)]
    pub dedupe_ttl: Option<String>,
}

/// The checked settings of a `redis` pusher.
#[derive(Clone, Debug)]
pub struct PusherSettings {
    pub stream: Template,
    pub body_field: String,
    pub fields: Vec<(String, Template)>,
    pub max_len: Option<u64>,
    pub dedupe_ttl: Duration,
}

impl PusherSettings {
    pub fn validate(config: &RedisPusherConfig) -> Result<Self, BuildError> {
        let stream = Template::parse(&config.stream).map_err(|e| BuildError::at("stream", e))?;
        let body_field = config.body_field.clone().unwrap_or_else(|| "body".into());
        not_empty("body_field", &body_field)?;
        let mut fields = Vec::new();
        for (name, text) in &config.fields {
            let at = |message: String| BuildError {
                path: vec!["fields".into(), name.clone()],
                message,
                within: None,
            };
            if name.is_empty() || name == &body_field || name == "ferry-id" {
                return Err(at(format!(
                    "`{name}` is written by ferry (the body or the passenger id)"
                )));
            }
            fields.push((name.clone(), Template::parse(text).map_err(at)?));
        }
        if config.max_len == Some(0) {
            return Err(BuildError::at("max_len", "must be at least 1"));
        }
        let dedupe_ttl = positive("dedupe_ttl", config.dedupe_ttl.as_deref(), 86_400_000)?;
        if dedupe_ttl < Duration::from_secs(1) {
            return Err(BuildError::at("dedupe_ttl", "must be at least 1s"));
        }
        Ok(PusherSettings {
            stream,
            body_field,
            fields,
            max_len: config.max_len,
            dedupe_ttl,
        })
    }
}

fn not_empty(key: &str, value: &str) -> Result<(), BuildError> {
    if value.trim().is_empty() {
        return Err(BuildError::at(key, "must not be empty"));
    }
    Ok(())
}

/// A duration under `key`, more than zero; `default_ms` when not written.
fn positive(key: &str, written: Option<&str>, default_ms: u64) -> Result<Duration, BuildError> {
    let value = match written {
        Some(text) => duration::parse(text).map_err(|e| BuildError::at(key, e))?,
        None => Duration::from_millis(default_ms),
    };
    if value.is_zero() {
        return Err(BuildError::at(key, "must be more than 0s"));
    }
    Ok(value)
}
