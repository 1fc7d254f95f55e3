//! Redis streams: the `redis` connection type, the `redis` puller (a consumer of a consumer
//! group) and the `redis` pusher (XADD, de-duplicated by passenger id).
//!
//! Guarantees: the puller acknowledges an entry (XACK) only after its passenger is seated, and
//! keeps the last seated entry id in the pipeline's state. A restarted puller first re-reads its
//! own pending list (entries it was given and never acknowledged), then claims entries that
//! another consumer of the group has held for `claim_idle` (XAUTOCLAIM: that consumer died),
//! then reads new ones; each comes back under the same `external_id` (`<stream>/<id>`), and the
//! queue drops the copy. An entry delivered more than `max_deliveries` times fails permanently
//! with its id. The pusher adds each passenger with a Lua script that remembers the passenger
//! id (`ferry:seen:<stream>:<id>`, for `dedupe_ttl`) and adds nothing for an id it has seen, in
//! one atomic step: a re-push after a crash adds nothing (exactly once within `dedupe_ttl`).

mod config;
mod puller;
mod pusher;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};
use redis::IntoConnectionInfo;
use redis::aio::MultiplexedConnection;

pub use config::{RedisConnection, RedisConnectionConfig, RedisPullerConfig, RedisPusherConfig};
pub use puller::{RedisPuller, RedisPullerFactory};
pub use pusher::{RedisPusher, RedisPusherFactory};

/// The `redis` connection type.
pub struct RedisConnectionFactory;

#[async_trait]
impl ConnectionFactory for RedisConnectionFactory {
    const TYPE: &'static str = "redis";
    type Config = RedisConnection;

    fn config(
        connection: &Connection,
        _project_dir: &std::path::Path,
    ) -> Result<RedisConnection, BuildError> {
        RedisConnection::read(connection)
    }

    async fn check(connection: RedisConnection) -> Result<String, String> {
        let mut redis = connect(&connection, None)
            .await
            .map_err(|error| error.message)?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await
            .map_err(|error| failed(&connection, "INFO", &error).message)?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("(version unknown)");
        Ok(format!(
            "Redis {} at {}",
            version.trim(),
            connection.shown()
        ))
    }
}

/// The `redis` connection `name` that the component's `key` names.
fn connection_of(ctx: &BuildContext, key: &str, name: &str) -> Result<RedisConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != RedisConnectionFactory::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; the redis components use `redis` \
                 connections",
                named.kind
            ),
        ));
    }
    RedisConnection::read(named)
        .map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}

/// Connects; `block` is the longest blocking read the connection will make (added to the
/// response time limit). A failure is retryable and names the server, never a secret.
async fn connect(
    connection: &RedisConnection,
    block: Option<std::time::Duration>,
) -> Result<MultiplexedConnection, StepError> {
    let mut info = connection
        .url
        .as_str()
        .into_connection_info()
        .map_err(|error| failed(connection, "reading the url", &error))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &connection.user {
        settings = settings.set_username(user);
    }
    if let Some(password) = &connection.password {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings);
    let client =
        redis::Client::open(info).map_err(|error| failed(connection, "opening", &error))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connection.timeout))
        .set_response_timeout(Some(connection.timeout + block.unwrap_or_default()));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|error| failed(connection, "connecting", &error))
}

/// A retryable error of the server behind `connection` while `doing` something.
fn failed(connection: &RedisConnection, doing: &str, error: &dyn std::fmt::Display) -> StepError {
    StepError::retryable(connection.scrub(&format!(
        "Redis server `{}` at {}: {doing}: {error}",
        connection.name,
        connection.shown()
    )))
}
