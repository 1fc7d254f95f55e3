//! NATS JetStream: the `nats` connection type, the `nats` puller (a durable pull consumer) and
//! the `nats` pusher (JetStream publish).
//!
//! Guarantees: the puller acknowledges a message (`+ACK`) only after its passenger is seated,
//! and keeps the last seated stream sequence in the pipeline's state; a message pulled but not
//! acknowledged (a crash, a lost connection) comes back after `ack_wait` under the same
//! `external_id` (`<stream>/<sequence>`), and the queue drops the copy. While a batch waits to
//! be seated the puller sends in-progress acknowledgements (`+WPI`) so the server does not hand
//! it out again. The pusher counts a message delivered only on JetStream's PubAck, and sets
//! `Nats-Msg-Id` to the passenger id, so a re-push within the stream's duplicate window adds
//! nothing (the duplicate PubAck counts as delivered): exactly once end to end within that
//! window, at-least-once beyond it.

mod config;
mod puller;
mod pusher;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};

pub use config::{NatsConnection, NatsConnectionConfig, NatsPullerConfig, NatsPusherConfig};
pub use puller::{NatsPuller, NatsPullerFactory};
pub use pusher::{NatsPusher, NatsPusherFactory};

use config::Login;

/// The `nats` connection type.
pub struct NatsConnectionFactory;

#[async_trait]
impl ConnectionFactory for NatsConnectionFactory {
    const TYPE: &'static str = "nats";
    type Config = NatsConnection;

    fn config(
        connection: &Connection,
        _project_dir: &std::path::Path,
    ) -> Result<NatsConnection, BuildError> {
        NatsConnection::read(connection)
    }

    async fn check(connection: NatsConnection) -> Result<String, String> {
        let client = connect(&connection).await.map_err(|error| error.message)?;
        let info = client.server_info();
        // The account's JetStream information, read as plain JSON: the typed form of the
        // client does not match every server version.
        let unavailable = |error: &dyn std::fmt::Display| {
            connection.scrub(&format!(
                "NATS server `{}` at {}: JetStream is not available: {error}",
                connection.name,
                connection.shown()
            ))
        };
        let reply = client
            .request("$JS.API.INFO", bytes::Bytes::new())
            .await
            .map_err(|error| unavailable(&error))?;
        let account: serde_json::Value =
            serde_json::from_slice(&reply.payload).map_err(|error| unavailable(&error))?;
        if let Some(error) = account.get("error") {
            return Err(unavailable(&error));
        }
        let streams = account.get("streams").and_then(|s| s.as_u64()).unwrap_or(0);
        Ok(format!(
            "NATS {} at {}, JetStream with {streams} stream(s)",
            info.version,
            connection.shown()
        ))
    }
}

/// The `nats` connection `name` that the component's `key` names.
fn connection_of(ctx: &BuildContext, key: &str, name: &str) -> Result<NatsConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != NatsConnectionFactory::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; the nats components use `nats` \
                 connections",
                named.kind
            ),
        ));
    }
    NatsConnection::read(named)
        .map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}

/// Connects to the server; a failure is retryable and names the server, never a secret.
async fn connect(connection: &NatsConnection) -> Result<async_nats::Client, StepError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("ferry")
        .connection_timeout(connection.timeout)
        .request_timeout(Some(connection.timeout))
        // The client reconnects by itself after a broker restart; it never gives up, and calls
        // made meanwhile fail on their own time limit (retryable).
        .max_reconnects(None);
    options = match &connection.login {
        Login::None => options,
        Login::Password { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        Login::Token(token) => options.token(token.clone()),
    };
    options
        .connect(connection.url.as_str())
        .await
        .map_err(|error| failed(connection, "connecting", &error))
}

/// A retryable error of the server behind `connection` while `doing` something.
fn failed(connection: &NatsConnection, doing: &str, error: &dyn std::fmt::Display) -> StepError {
    StepError::retryable(connection.scrub(&format!(
        "NATS server `{}` at {}: {doing}: {error}",
        connection.name,
        connection.shown()
    )))
}
