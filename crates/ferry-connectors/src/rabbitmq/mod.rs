//! RabbitMQ (AMQP 0.9.1) over lapin: the `rabbitmq` connection type (alias `amqp`), the
//! `rabbitmq` puller (consumes a queue) and the `rabbitmq` pusher (publishes to an exchange).
//!
//! Guarantees:
//! - The puller consumes with manual acknowledgement and a prefetch window; a message is
//!   acknowledged (`basic.ack`) only after its passenger is seated. A crash or a lost
//!   connection before that leaves it unacknowledged, and the broker redelivers it. Acks go
//!   only to the channel the deliveries came from: deliveries of a channel that died are
//!   skipped (the broker has already requeued them), so a reconnect never causes an "unknown
//!   delivery tag" channel error.
//! - The passenger's external id is the message's `message_id` property, so the queue drops a
//!   redelivered copy: exactly once into the queue for messages that carry one (ferry's own
//!   pusher always sets it). Without it every delivery gets a fresh id: at-least-once, a
//!   redelivery after a crash travels twice.
//! - The pusher publishes with publisher confirms, `mandatory` and persistent delivery; a
//!   passenger counts as delivered only on the broker's ack. An unroutable message is returned
//!   by the broker and fails permanently; a nack or a lost connection fails retryably. Each
//!   message carries `message_id` and header `ferry-id` = the passenger's id, so a consumer
//!   can drop the copies a retry after a crash publishes again (RabbitMQ does not de-duplicate
//!   by itself: at-least-once to the broker).

mod config;
mod puller;
mod pusher;
#[cfg(test)]
mod tests;

use std::path::Path;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};
use lapin::ConnectionProperties;

pub use config::{
    RabbitmqConnection, RabbitmqConnectionConfig, RabbitmqPullerConfig, RabbitmqPusherConfig,
};
pub use puller::{RabbitmqPuller, RabbitmqPullerFactory};
pub use pusher::{RabbitmqPusher, RabbitmqPusherFactory};

/// The `rabbitmq` connection type.
pub struct RabbitmqConnectionFactory;

#[async_trait]
impl ConnectionFactory for RabbitmqConnectionFactory {
    const TYPE: &'static str = "rabbitmq";
    const ALIASES: &'static [&'static str] = &["amqp"];
    type Config = RabbitmqConnection;

    fn config(
        connection: &Connection,
        project_dir: &Path,
    ) -> Result<RabbitmqConnection, BuildError> {
        RabbitmqConnection::read(connection, project_dir)
    }

    async fn check(connection: RabbitmqConnection) -> Result<String, String> {
        let amqp = connect(&connection, "ferry check")
            .await
            .map_err(|error| error.message)?;
        let channel = amqp.create_channel().await;
        let heartbeat = amqp.configuration().heartbeat();
        let _ = amqp.close(200, "ferry check done".into()).await;
        channel.map_err(|error| failed(&connection, "opening a channel", &error).message)?;
        Ok(format!(
            "AMQP 0.9.1 broker at {} (heartbeat {heartbeat}s)",
            connection.shown()
        ))
    }
}

/// Opens a connection to the broker, named `name` (shown by `rabbitmqctl list_connections` and
/// the management UI), within the connection's `connect_timeout`. Its error is retryable and
/// names the connection and the broker's address, never the password.
pub(crate) async fn connect(
    connection: &RabbitmqConnection,
    name: &str,
) -> Result<lapin::Connection, StepError> {
    // lapin's own recovery stays off: ferry reconnects on the next call, and a puller must know
    // that its channel changed (its delivery tags died with it).
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = lapin::Connection::connect_uri(connection.uri.clone(), properties);
    match tokio::time::timeout(connection.connect_timeout, connecting).await {
        Ok(Ok(amqp)) => Ok(amqp),
        Ok(Err(error)) => Err(failed(connection, "connecting", &error)),
        Err(_) => Err(StepError::retryable(format!(
            "RabbitMQ `{}` ({}): connecting: no answer within {:?}",
            connection.name,
            connection.shown(),
            connection.connect_timeout
        ))),
    }
}

/// A failed AMQP operation, retryable, naming the connection and the broker.
pub(crate) fn failed(
    connection: &RabbitmqConnection,
    what: &str,
    error: &lapin::Error,
) -> StepError {
    StepError::retryable(format!(
        "RabbitMQ `{}` ({}): {what}: {error}",
        connection.name,
        connection.shown()
    ))
}

/// The `rabbitmq` connection `name` that the component's `key` names.
fn connection_of(
    ctx: &BuildContext,
    key: &str,
    name: &str,
) -> Result<RabbitmqConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != RabbitmqConnectionFactory::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; RabbitMQ pullers and pushers use \
                 `rabbitmq` connections",
                named.kind
            ),
        ));
    }
    RabbitmqConnection::read(named, &ctx.project_dir).map_err(|error| {
        let within = match error.path.is_empty() {
            true => String::new(),
            false => format!(" `{}`:", error.path.join(".")),
        };
        BuildError::at(
            key,
            format!("connection `{name}`:{within} {}", error.message),
        )
    })
}

/// The name a component's connection carries on the broker: `ferry CLIENT/PIPELINE/COMPONENT`.
fn connection_name(ctx: &BuildContext, role: &str) -> String {
    format!(
        "ferry {}/{}/{} ({role})",
        ctx.client, ctx.pipeline, ctx.component
    )
}
