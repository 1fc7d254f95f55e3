//! MQTT 3.1.1 over rumqttc: the `mqtt` connection type, the `mqtt` puller (subscribes to topic
//! filters in a persistent session) and the `mqtt` pusher (publishes to a templated topic).
//!
//! Guarantees:
//! - The puller keeps a persistent session (`clean_session: false`) under a stable client id,
//!   subscribes at QoS 1 and acknowledges each message (PUBACK) only after its passenger is
//!   seated. Messages published while ferry is away, and messages pulled but not acknowledged
//!   when ferry stopped or the connection broke, wait in the session on the broker and come
//!   again after the reconnect.
//! - MQTT 3.1.1 gives a message no stable id, so every delivery gets a fresh external id: a
//!   message redelivered after a crash or a reconnect (between seat and ack) travels twice.
//!   At-least-once, unless `external_id: payload_hash` names each message by its topic and
//!   payload (for payloads that are unique), so the queue drops the copy.
//! - The broker bounds how many unacknowledged messages it hands the puller at a time
//!   (Mosquitto's `max_inflight_messages`, 20 by default), and so a pull's batch, and how many
//!   it keeps for a session that is away (`max_queued_messages`, 1000 by default; more are
//!   dropped by the broker).
//! - The pusher publishes at QoS 1 and counts a message delivered only on the broker's PUBACK;
//!   the PUBACKs of a batch are awaited together. A lost connection or no PUBACK within
//!   `ack_timeout` fails retryably, a topic or size the protocol forbids permanently. MQTT
//!   brokers do not de-duplicate: a re-push after a crash is a second copy (at-least-once).

mod config;
mod puller;
mod pusher;
#[cfg(test)]
mod tests;

use std::path::Path;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, TlsConfiguration,
    Transport,
};

pub use config::{MqttConnection, MqttConnectionConfig, MqttPullerConfig, MqttPusherConfig};
pub use puller::{MqttPuller, MqttPullerFactory};
pub use pusher::{MqttPusher, MqttPusherFactory};

use config::MQTT_MAX_PACKET;

/// The `mqtt` connection type.
pub struct MqttConnectionFactory;

#[async_trait]
impl ConnectionFactory for MqttConnectionFactory {
    const TYPE: &'static str = "mqtt";
    type Config = MqttConnection;

    fn config(connection: &Connection, project_dir: &Path) -> Result<MqttConnection, BuildError> {
        MqttConnection::read(connection, project_dir)
    }

    async fn check(connection: MqttConnection) -> Result<String, String> {
        // A throwaway client id and a clean session: checking leaves nothing on the broker.
        let id = format!(
            "ferry-check-{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let session = SessionKind {
            clean: true,
            manual_acks: false,
        };
        let (client, mut events) = client(&connection, &id, session, 10);
        let answer = tokio::time::timeout(connection.connect_timeout, events.poll()).await;
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), events.poll()).await;
        match answer {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                Ok(format!("MQTT 3.1.1 broker at {}", connection.shown()))
            }
            Ok(Ok(other)) => Err(failed_text(&connection, &format!("unexpected {other:?}"))),
            Ok(Err(error)) => Err(failed(&connection, &error).message),
            Err(_) => Err(failed_text(
                &connection,
                "no answer within the connect timeout",
            )),
        }
    }
}

/// How a client's session behaves.
#[derive(Clone, Copy)]
pub(crate) struct SessionKind {
    /// A clean session starts empty and ends with the connection; a persistent one keeps
    /// subscriptions and unacknowledged messages on the broker.
    pub clean: bool,
    /// Incoming messages are acknowledged by the caller (after seat), not on arrival.
    pub manual_acks: bool,
}

/// A client and its event loop for `connection` under `client_id`; nothing connects until the
/// event loop is polled. `capacity` bounds the requests (publishes, acks) waiting for it.
pub(crate) fn client(
    connection: &MqttConnection,
    client_id: &str,
    session: SessionKind,
    capacity: usize,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(client_id, connection.host.clone(), connection.port);
    options
        .set_keep_alive(connection.keep_alive)
        .set_clean_session(session.clean)
        // Read when the event loop is made: setting it later has no effect.
        .set_manual_acks(session.manual_acks)
        // rumqttc's default is 10 KiB; a larger message would break the connection each time
        // it came, so take what the protocol allows.
        .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
    if let Some((user, password)) = &connection.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    if let Some(tls) = &connection.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, mut events) = AsyncClient::new(options, capacity);
    let mut network = events.network_options();
    network.set_connection_timeout(connection.connect_timeout.as_secs().max(1));
    events.set_network_options(network);
    (client, events)
}

/// A connection error of the event loop, retryable, naming the connection and the broker.
pub(crate) fn failed(connection: &MqttConnection, error: &ConnectionError) -> StepError {
    StepError::retryable(failed_text(connection, &error.to_string()))
}

fn failed_text(connection: &MqttConnection, what: &str) -> String {
    format!(
        "MQTT broker `{}` ({}): {what}",
        connection.name,
        connection.shown()
    )
}

/// The `mqtt` connection `name` that the component's `key` names.
fn connection_of(ctx: &BuildContext, key: &str, name: &str) -> Result<MqttConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != MqttConnectionFactory::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; MQTT pullers and pushers use `mqtt` \
                 connections",
                named.kind
            ),
        ));
    }
    MqttConnection::read(named, &ctx.project_dir).map_err(|error| {
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
