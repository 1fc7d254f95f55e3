//! The `kafka` pusher: one message per passenger, through an idempotent producer with
//! `acks=all`. A batch is handed to the producer whole and its confirmations awaited
//! together; a passenger is delivered when its message is on every in-sync replica.
//!
//! Kafka cannot drop a copy by id across producer sessions: a passenger pushed again after a
//! crash (delivered, but not yet recorded in the queue) is sent again. Every message carries
//! the passenger's id as header `ferry-id`, by which a reader drops the copy.

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::OnceCell;

use super::config::{KafkaConnection, KafkaPusherConfig, PushTemplates, millis, valid_topic};
use super::{connection_of, describe};

/// Builds `kafka` pushers.
pub struct KafkaPusherFactory;

impl PusherFactory for KafkaPusherFactory {
    const TYPE: &'static str = "kafka";
    type Config = KafkaPusherConfig;

    fn build(
        &self,
        config: KafkaPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection = connection_of(ctx, "connection", &config.connection, "pusher")?;
        let templates = config.templates()?;
        Ok(Box::new(KafkaPusher {
            connection,
            templates,
            producer: OnceCell::new(),
        }))
    }
}

/// Writes passengers to topics.
pub struct KafkaPusher {
    connection: KafkaConnection,
    templates: PushTemplates,
    producer: OnceCell<FutureProducer>,
}

impl KafkaPusher {
    /// The producer, made on first use (librdkafka connects in the background and reconnects
    /// by itself).
    async fn producer(&self) -> Result<&FutureProducer, StepError> {
        self.producer
            .get_or_try_init(|| async {
                let mut config = self.connection.client_config();
                config
                    // No copy within a session, in order per partition, on every replica.
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", millis(self.connection.timeout))
                    .set("queue.buffering.max.messages", "1000000");
                config
                    .create::<FutureProducer>()
                    .map_err(|e| StepError::permanent(describe(&self.connection, &e)))
            })
            .await
    }

    /// The message of `passenger`: topic, key, headers.
    fn address(
        &self,
        passenger: &Passenger,
    ) -> Result<(String, Option<String>, OwnedHeaders), StepError> {
        let topic = self.templates.topic.render_text(passenger);
        if !valid_topic(&topic) {
            return Err(StepError::permanent(format!(
                "topic `{topic}` (from the template) is not a Kafka topic name: use 1 to 249 \
                 letters, digits, `.`, `_` or `-`"
            )));
        }
        let key = self
            .templates
            .key
            .as_ref()
            .map(|t| t.render_text(passenger));
        let id = passenger.id.to_string();
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "ferry-id",
            value: Some(id.as_bytes()),
        });
        for (name, template) in &self.templates.headers {
            let value = template.render_text(passenger);
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        Ok((topic, key, headers))
    }

    /// What a failed delivery means for the passenger.
    fn failed(&self, topic: &str, error: &KafkaError) -> StepError {
        let message = format!("topic `{topic}`: {}", describe(&self.connection, error));
        let code = match error {
            KafkaError::MessageProduction(code) => Some(*code),
            _ => error.rdkafka_error_code(),
        };
        match code {
            // This message can never be taken as it is.
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => StepError::permanent(message),
            _ => StepError::retryable(message),
        }
    }
}

#[async_trait]
impl Pusher for KafkaPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let producer = match self.producer().await {
            Ok(producer) => producer,
            Err(error) => return passengers.iter().map(|_| Err(error.clone())).collect(),
        };
        // Hand the whole batch over first, then wait for the confirmations together.
        let mut waiting = Vec::with_capacity(passengers.len());
        for passenger in passengers {
            let (topic, key, headers) = match self.address(passenger) {
                Ok(address) => address,
                Err(error) => {
                    waiting.push(Err(error));
                    continue;
                }
            };
            let mut record = FutureRecord::to(&topic)
                .payload(passenger.body.data.as_ref())
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_str());
            }
            waiting.push(match producer.send_result(record) {
                Ok(delivery) => Ok((topic, delivery)),
                Err((error, _)) => Err(self.failed(&topic, &error)),
            });
        }
        let confirmations = join_all(waiting.into_iter().map(|sent| async move {
            let (topic, delivery) = sent?;
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(self.failed(&topic, &error)),
                Err(_) => Err(StepError::retryable(format!(
                    "topic `{topic}`: Kafka `{}`: the producer stopped before the broker \
                     confirmed",
                    self.connection.name
                ))),
            }
        }));
        confirmations.await
    }
}
