//! The `rabbitmq` pusher: one message per passenger, published with publisher confirms and
//! `mandatory`, counted delivered only on the broker's ack.
//!
//! A batch is published in one go and the confirms are awaited together afterwards
//! (pipelining). A message the broker returns (no queue bound for its routing key) fails
//! permanently; a nack, a lost connection or no confirm within `confirm_timeout` fails
//! retryably, and the next push reconnects.

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::Mutex;
use tracing::debug;

use super::config::{PusherSettings, RabbitmqConnection, RabbitmqPusherConfig};

/// The header every message carries with its passenger's id.
pub(crate) const ID_HEADER: &str = "ferry-id";

/// Builds `rabbitmq` pushers.
pub struct RabbitmqPusherFactory;

impl PusherFactory for RabbitmqPusherFactory {
    const TYPE: &'static str = "rabbitmq";
    type Config = RabbitmqPusherConfig;

    fn build(
        &self,
        config: RabbitmqPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection = super::connection_of(ctx, "connection", &config.connection)?;
        let settings = PusherSettings::validate(&config)?;
        Ok(Box::new(RabbitmqPusher {
            broker_name: super::connection_name(ctx, "pusher"),
            connection,
            settings,
            session: Mutex::new(None),
        }))
    }
}

/// Publishes passengers to an exchange.
pub struct RabbitmqPusher {
    connection: RabbitmqConnection,
    settings: PusherSettings,
    /// What the connection is called on the broker.
    broker_name: String,
    /// The connection and its channel in confirm mode, opened by the first push; held across
    /// a batch, so batches of one pusher do not interleave on the channel.
    session: Mutex<Option<(lapin::Connection, Channel)>>,
}

/// Where one passenger stands within a batch.
enum Sent {
    /// Failed before or while publishing.
    Failed(StepError),
    /// Published; the broker's confirm is awaited.
    Waiting {
        confirm: PublisherConfirm,
        exchange: String,
        routing_key: String,
    },
}

impl RabbitmqPusher {
    /// Opens the connection and a channel in confirm mode.
    async fn open(&self) -> Result<(lapin::Connection, Channel), StepError> {
        let connection = &self.connection;
        let amqp = super::connect(connection, &self.broker_name).await?;
        let channel = amqp
            .create_channel()
            .await
            .map_err(|e| super::failed(connection, "opening a channel", &e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| super::failed(connection, "enabling publisher confirms", &e))?;
        Ok((amqp, channel))
    }

    /// The message for `passenger`: where it goes and its properties, or why it cannot go.
    fn message(
        &self,
        passenger: &Passenger,
    ) -> Result<(ShortString, ShortString, BasicProperties), StepError> {
        let short = |key: &str, value: String| {
            ShortString::try_new(value.clone()).map_err(|_| {
                StepError::permanent(format!("{key} `{value}` is longer than AMQP's 255 bytes"))
            })
        };
        let exchange = match &self.settings.exchange {
            Some(template) => short("exchange", template.render_text(passenger))?,
            None => ShortString::from(""),
        };
        let routing_key = short(
            "routing key",
            self.settings.routing_key.render_text(passenger),
        )?;
        let size = passenger.body.data.len() as u64;
        if size > self.settings.max_size {
            return Err(StepError::permanent(format!(
                "the message of {size} bytes for routing key `{routing_key}` is larger than \
                 max_size ({} bytes)",
                self.settings.max_size
            )));
        }
        let mut headers = FieldTable::default();
        for (name, template) in &self.settings.headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(template.render_text(passenger))),
            );
        }
        headers.insert(
            ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(passenger.id.to_string())),
        );
        let mut properties = BasicProperties::default()
            .with_message_id(passenger.id.to_string().into())
            .with_headers(headers);
        if self.settings.persistent {
            properties = properties.with_delivery_mode(2);
        }
        if !passenger.body.media_type.is_empty() {
            let media_type = short("media type", passenger.body.media_type.clone())?;
            properties = properties.with_content_type(media_type);
        }
        Ok((exchange, routing_key, properties))
    }

    /// What the broker answered for one published message.
    fn outcome(
        &self,
        answer: lapin::Result<Confirmation>,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), StepError> {
        let shown = || {
            format!(
                "RabbitMQ `{}` ({})",
                self.connection.name,
                self.connection.shown()
            )
        };
        let exchange = match exchange {
            "" => "the default exchange".to_string(),
            name => format!("exchange `{name}`"),
        };
        match answer {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(StepError::permanent(format!(
                "{}: no queue bound for routing key `{routing_key}` on {exchange} (the broker \
                 returned the message: {} {})",
                shown(),
                returned.reply_code,
                returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => Err(StepError::retryable(format!(
                "{}: the broker refused the message for routing key `{routing_key}` on \
                 {exchange} (nack); it will be sent again",
                shown()
            ))),
            Err(error) => Err(super::failed(
                &self.connection,
                &format!("publishing to {exchange}, routing key `{routing_key}`"),
                &error,
            )),
        }
    }
}

#[async_trait]
impl Pusher for RabbitmqPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let mut session = self.session.lock().await;
        let alive = session
            .as_ref()
            .is_some_and(|(_, channel)| channel.status().connected());
        if !alive {
            *session = None;
            match self.open().await {
                Ok(opened) => *session = Some(opened),
                Err(error) => return vec![Err(error); passengers.len()],
            }
        }
        let (_, channel) = session.as_ref().expect("opened above");

        // Publish the whole batch first, then wait for the confirms together.
        let options = BasicPublishOptions {
            mandatory: self.settings.mandatory,
            ..BasicPublishOptions::default()
        };
        let mut sent = Vec::with_capacity(passengers.len());
        for passenger in passengers {
            let (exchange, routing_key, properties) = match self.message(passenger) {
                Ok(message) => message,
                Err(error) => {
                    sent.push(Sent::Failed(error));
                    continue;
                }
            };
            let published = channel
                .basic_publish(
                    exchange.clone(),
                    routing_key.clone(),
                    options,
                    &passenger.body.data,
                    properties,
                )
                .await;
            match published {
                Ok(confirm) => sent.push(Sent::Waiting {
                    confirm,
                    exchange: exchange.to_string(),
                    routing_key: routing_key.to_string(),
                }),
                Err(error) => sent.push(Sent::Failed(super::failed(
                    &self.connection,
                    &format!("publishing to exchange `{exchange}`"),
                    &error,
                ))),
            }
        }

        let deadline = tokio::time::Instant::now() + self.settings.confirm_timeout;
        let mut results = Vec::with_capacity(sent.len());
        let mut broken = false;
        for item in sent {
            let result = match item {
                Sent::Failed(error) => Err(error),
                Sent::Waiting {
                    confirm,
                    exchange,
                    routing_key,
                } => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(answer) => self.outcome(answer, &exchange, &routing_key),
                    Err(_) => Err(StepError::retryable(format!(
                        "RabbitMQ `{}` ({}): no confirm within {:?} for routing key \
                         `{routing_key}`; it will be sent again",
                        self.connection.name,
                        self.connection.shown(),
                        self.settings.confirm_timeout
                    ))),
                },
            };
            if let Err(error) = &result {
                broken |= error.retryable;
                debug!(%error, "message not delivered");
            }
            results.push(result);
        }
        // A retryable failure may have left the channel or connection unusable: start afresh.
        if broken || !channel.status().connected() {
            *session = None;
        }
        results
    }
}
