//! The `rabbitmq` puller: consumes a queue with manual acknowledgement, one passenger per
//! message, acknowledged only after it is seated.
//!
//! A pull waits up to `max_wait` for the first delivery, then takes the deliveries that follow
//! it without a pause (up to `max`; the prefetch window bounds how many there are). The deliveries stay
//! unacknowledged until [`Puller::ack`] names them; then one `basic.ack` with `multiple`
//! acknowledges them all at once (one per delivery when an older delivery is still open).
//!
//! Delivery tags belong to a channel: after the connection or the channel died, the broker has
//! requeued every delivery of that channel, and acknowledging one of its tags on the new
//! channel would be a protocol error ("unknown delivery tag") that closes the channel. So every
//! session has a generation, each open delivery remembers its generation, and `ack` skips the
//! deliveries of a dead one: their redelivered copies come back under the same external id
//! (the `message_id`), and the queue drops them.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Seated, StepError,
};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, Channel, Consumer};
use tracing::{debug, warn};

use super::config::{PullerSettings, RabbitmqConnection, RabbitmqPullerConfig};

/// How long a pull waits for the next delivery once the first came.
const LINGER: Duration = Duration::from_millis(20);

/// Builds `rabbitmq` pullers.
pub struct RabbitmqPullerFactory;

impl PullerFactory for RabbitmqPullerFactory {
    const TYPE: &'static str = "rabbitmq";
    type Config = RabbitmqPullerConfig;

    fn build(
        &self,
        config: RabbitmqPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let connection = super::connection_of(ctx, "connection", &config.connection)?;
        let settings = PullerSettings::validate(&config)?;
        Ok(Box::new(RabbitmqPuller {
            source_system: format!("rabbitmq:{}", connection.name),
            broker_name: super::connection_name(ctx, "puller"),
            connection,
            settings,
            session: None,
            generation: 0,
            open: HashMap::new(),
        }))
    }
}

/// Consumes one queue.
pub struct RabbitmqPuller {
    connection: RabbitmqConnection,
    settings: PullerSettings,
    /// `rabbitmq:<connection name>`.
    source_system: String,
    /// What the connection is called on the broker.
    broker_name: String,
    session: Option<Session>,
    /// The generation of the newest session; each new session gets the next one.
    generation: u64,
    /// Deliveries offered by a pull and not yet acknowledged, by external id (a redelivered
    /// duplicate can be open twice).
    open: HashMap<String, Vec<Open>>,
}

/// A connection with its one channel and the consumer on it.
struct Session {
    /// Kept so the connection lives as long as the session; dropping it closes the connection.
    _amqp: lapin::Connection,
    channel: Channel,
    consumer: Consumer,
    generation: u64,
}

/// A delivery offered and not yet acknowledged.
struct Open {
    generation: u64,
    tag: u64,
    acker: Acker,
}

impl RabbitmqPuller {
    /// The live session, opened (connect, channel, prefetch, queue check, consume) when there
    /// is none or the old one died.
    async fn session(&mut self) -> Result<&mut Session, StepError> {
        let alive = self
            .session
            .as_ref()
            .is_some_and(|session| session.channel.status().connected());
        if !alive {
            if self.session.take().is_some() {
                debug!(
                    connection = %self.connection.name,
                    "the channel died; reconnecting (its deliveries are redelivered)"
                );
            }
            // Deliveries of the dead channel: the broker requeued them, their tags are gone.
            self.open.clear();
            let session = self.open_session().await?;
            self.session = Some(session);
        }
        Ok(self.session.as_mut().expect("opened above"))
    }

    async fn open_session(&mut self) -> Result<Session, StepError> {
        let connection = &self.connection;
        let queue = self.settings.queue.as_str();
        let amqp = super::connect(connection, &self.broker_name).await?;
        let channel = amqp
            .create_channel()
            .await
            .map_err(|e| super::failed(connection, "opening a channel", &e))?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| super::failed(connection, "setting the prefetch", &e))?;
        let options = QueueDeclareOptions {
            passive: !self.settings.declare,
            durable: true,
            ..QueueDeclareOptions::default()
        };
        if let Err(error) = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
        {
            let hint = match self.settings.declare {
                false => " (does it exist? `declare: true` creates it)",
                true => "",
            };
            return Err(super::failed(
                connection,
                &format!("queue `{queue}`{hint}"),
                &error,
            ));
        }
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| super::failed(connection, &format!("consuming queue `{queue}`"), &e))?;
        self.generation += 1;
        Ok(Session {
            _amqp: amqp,
            channel,
            consumer,
            generation: self.generation,
        })
    }

    /// The session died under a pull: forget it (the next call reconnects) and say so.
    fn lost(&mut self, error: Option<&lapin::Error>) -> StepError {
        self.session = None;
        self.open.clear();
        let queue = &self.settings.queue;
        match error {
            Some(error) => super::failed(&self.connection, &format!("queue `{queue}`"), error),
            None => StepError::retryable(format!(
                "RabbitMQ `{}` ({}): queue `{queue}`: the broker cancelled the consumer (queue \
                 deleted?)",
                self.connection.name,
                self.connection.shown()
            )),
        }
    }

    fn passenger(&self, delivery: &Delivery) -> Passenger {
        let properties = &delivery.properties;
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .filter(|id| !id.is_empty());
        // Without a message id nothing stable names the message: a fresh id, so a redelivered
        // copy travels again (at-least-once).
        let external_id = message_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let mut passenger = Passenger::pulled(&self.source_system, external_id);
        let metadata = &mut passenger.metadata;
        metadata.insert("amqp.exchange".into(), delivery.exchange.to_string());
        metadata.insert("amqp.routing_key".into(), delivery.routing_key.to_string());
        metadata.insert("amqp.redelivered".into(), delivery.redelivered.to_string());
        metadata.insert("amqp.queue".into(), self.settings.queue.clone());
        if let Some(id) = message_id {
            metadata.insert("amqp.message_id".into(), id);
        }
        if let Some(headers) = properties.headers() {
            for (name, value) in headers.inner() {
                metadata.insert(format!("amqp.header.{name}"), text(value));
            }
        }
        let media_type = self
            .settings
            .media_type
            .clone()
            .or_else(|| properties.content_type().as_ref().map(|t| t.to_string()))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into());
        passenger.with_body(Body {
            media_type,
            data: delivery.data.clone().into(),
        })
    }
}

#[async_trait]
impl Puller for RabbitmqPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        if max == 0 {
            return Ok(Pulled::default());
        }
        let max_wait = self.settings.max_wait;
        let session = self.session().await?;
        let generation = session.generation;
        let mut deliveries = Vec::new();
        match tokio::time::timeout(max_wait, session.consumer.next()).await {
            Err(_) => return Ok(Pulled::default()),
            Ok(Some(Ok(delivery))) => deliveries.push(delivery),
            Ok(Some(Err(error))) => return Err(self.lost(Some(&error))),
            Ok(None) => return Err(self.lost(None)),
        }
        // Then what the broker sends right behind it: deliveries stream in one by one, so
        // wait a moment for each next one instead of cutting the batch at the first gap.
        while deliveries.len() < max {
            match tokio::time::timeout(LINGER, session.consumer.next()).await {
                Ok(Some(Ok(delivery))) => deliveries.push(delivery),
                // An error or the end shows at the next pull; these deliveries still travel.
                _ => break,
            }
        }
        let more = deliveries.len() >= max;
        let mut pulled = Pulled {
            more,
            ..Pulled::default()
        };
        for delivery in deliveries {
            let passenger = self.passenger(&delivery);
            self.open
                .entry(passenger.external_id.clone())
                .or_default()
                .push(Open {
                    generation,
                    tag: delivery.delivery_tag,
                    acker: delivery.acker,
                });
            pulled.passengers.push(passenger);
        }
        Ok(pulled)
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let mut acking: Vec<Open> = Vec::new();
        for item in seated {
            if item.source_system != self.source_system {
                continue;
            }
            // Taken out: a second ack of the same items finds nothing (idempotent).
            if let Some(open) = self.open.remove(&item.external_id) {
                acking.extend(open);
            }
        }
        let Some(session) = &self.session else {
            return Ok(());
        };
        let live = session.generation;
        // Deliveries of a dead channel were requeued by the broker; acking their tags on the
        // new channel would close it with "unknown delivery tag".
        acking.retain(|open| open.generation == live && open.acker.usable());
        let Some(highest) = acking.iter().map(|open| open.tag).max() else {
            return Ok(());
        };
        // One ack with `multiple` covers every tag up to the highest, so only when no older
        // delivery of this channel is still open (offered, not yet seated).
        let older_open = self
            .open
            .values()
            .flatten()
            .any(|open| open.generation == live && open.tag < highest);
        let result = if older_open {
            let mut result = Ok(true);
            for open in &acking {
                result = open.acker.ack(BasicAckOptions { multiple: false }).await;
                if result.is_err() {
                    break;
                }
            }
            result
        } else {
            let last = acking
                .iter()
                .find(|open| open.tag == highest)
                .expect("the highest is one of them");
            last.acker.ack(BasicAckOptions { multiple: true }).await
        };
        if let Err(error) = result {
            // The channel died meanwhile: the broker requeues these and redelivers them; the
            // queue drops the copies. Nothing for the caller to retry.
            warn!(
                connection = %self.connection.name,
                queue = %self.settings.queue,
                %error,
                "acknowledging failed; the broker redelivers the messages"
            );
            self.session = None;
            self.open.clear();
        }
        Ok(())
    }
}

/// A header's value as text: strings as they are (non-UTF-8 converted lossily), numbers and
/// booleans written out, tables and arrays as JSON-like debug text.
pub(crate) fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        AMQPValue::ShortString(value) => value.to_string(),
        AMQPValue::Boolean(value) => value.to_string(),
        AMQPValue::ShortShortInt(value) => value.to_string(),
        AMQPValue::ShortShortUInt(value) => value.to_string(),
        AMQPValue::ShortInt(value) => value.to_string(),
        AMQPValue::ShortUInt(value) => value.to_string(),
        AMQPValue::LongInt(value) => value.to_string(),
        AMQPValue::LongUInt(value) => value.to_string(),
        AMQPValue::LongLongInt(value) => value.to_string(),
        AMQPValue::Float(value) => value.to_string(),
        AMQPValue::Double(value) => value.to_string(),
        AMQPValue::Timestamp(value) => value.to_string(),
        AMQPValue::ByteArray(value) => String::from_utf8_lossy(value.as_slice()).into_owned(),
        AMQPValue::Void => String::new(),
        other => format!("{other:?}"),
    }
}
