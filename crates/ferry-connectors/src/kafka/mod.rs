//! Kafka: the `kafka` connection type, the `kafka` puller (a consumer group member that
//! commits only what is seated) and the `kafka` pusher (idempotent producer, `acks=all`).
//!
//! Each message is one passenger with metadata `kafka.topic`, `kafka.partition`,
//! `kafka.offset`, `kafka.key`, `kafka.timestamp` and `kafka.header.NAME`. See [`puller`] for
//! how positions, crashes and rebalances are handled; the pusher counts a message delivered
//! when every in-sync replica has it, and sends the passenger's id as header `ferry-id`.
//! librdkafka is built without OpenSSL: no TLS, and SASL/PLAIN only.

mod config;
mod puller;
mod pusher;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

pub use config::{KafkaConnection, KafkaConnectionConfig, KafkaPullerConfig, KafkaPusherConfig};
pub use puller::{KafkaPuller, KafkaPullerFactory};
pub use pusher::{KafkaPusher, KafkaPusherFactory};

/// The `kafka` connection type.
pub struct KafkaConnectionFactory;

#[async_trait]
impl ConnectionFactory for KafkaConnectionFactory {
    const TYPE: &'static str = "kafka";
    type Config = KafkaConnection;

    fn config(connection: &Connection, _: &std::path::Path) -> Result<KafkaConnection, BuildError> {
        KafkaConnection::read(connection)
    }

    async fn check(connection: KafkaConnection) -> Result<String, String> {
        let name = connection.name.clone();
        // librdkafka's calls block: off the runtime.
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = connection
                .client_config()
                .create()
                .map_err(|e| describe(&connection, &e))?;
            let metadata = consumer
                .fetch_metadata(None, connection.timeout)
                .map_err(|e| unreachable(&connection, &e).message)?;
            Ok(format!(
                "Kafka cluster at {}: {} broker(s), {} topic(s)",
                connection.brokers,
                metadata.brokers().len(),
                metadata.topics().len()
            ))
        })
        .await
        .map_err(|e| format!("Kafka `{name}`: the check stopped: {e}"))?
    }
}

/// The `kafka` connection `name` that the component's `key` names.
fn connection_of(
    ctx: &BuildContext,
    key: &str,
    name: &str,
    role: &str,
) -> Result<KafkaConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != KafkaConnectionFactory::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; the kafka {role} uses `kafka` \
                 connections",
                named.kind
            ),
        ));
    }
    KafkaConnection::read(named)
        .map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}

/// `error` of the cluster, named (librdkafka's messages hold no password).
fn describe(connection: &KafkaConnection, error: &KafkaError) -> String {
    format!(
        "Kafka `{}` ({}): {error}",
        connection.name, connection.brokers
    )
}

/// The cluster cannot be reached or answered with a passing error: try again later.
fn unreachable(connection: &KafkaConnection, error: &KafkaError) -> StepError {
    StepError::retryable(describe(connection, error))
}
