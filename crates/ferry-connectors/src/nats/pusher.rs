//! The `nats` pusher: one JetStream publish per passenger, `Nats-Msg-Id` set to the passenger
//! id. A batch is published first and its PubAcks awaited together; a message counts as
//! delivered only on its PubAck (a duplicate PubAck too: the stream already holds it).

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use tokio::sync::Mutex;

use super::config::{NatsConnection, NatsPusherConfig, PusherSettings, subject_name};
use super::{connect, connection_of, failed};

/// How many publishes wait for their PubAck at once; a larger batch goes in windows of this.
const WINDOW: usize = 4096;

/// Builds `nats` pushers.
pub struct NatsPusherFactory;

impl PusherFactory for NatsPusherFactory {
    const TYPE: &'static str = "nats";
    type Config = NatsPusherConfig;

    fn build(
        &self,
        config: NatsPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection = connection_of(ctx, "connection", &config.connection)?;
        let settings = PusherSettings::validate(&config)?;
        Ok(Box::new(NatsPusher {
            connection,
            settings,
            client: Mutex::new(None),
        }))
    }
}

/// Publishes passengers to JetStream.
pub struct NatsPusher {
    connection: NatsConnection,
    settings: PusherSettings,
    /// Opened on the first push, kept across runs, dropped after a connection failure.
    client: Mutex<Option<async_nats::Client>>,
}

#[async_trait]
impl Pusher for NatsPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        if passengers.is_empty() {
            return Vec::new();
        }
        let client = {
            let mut slot = self.client.lock().await;
            match &*slot {
                Some(client) => client.clone(),
                None => match connect(&self.connection).await {
                    Ok(client) => {
                        *slot = Some(client.clone());
                        client
                    }
                    Err(error) => return vec![Err(error); passengers.len()],
                },
            }
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            let error = failed(
                &self.connection,
                "publishing",
                &"not connected (reconnecting)",
            );
            return vec![Err(error); passengers.len()];
        }
        let context = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.connection.timeout)
            .max_ack_inflight(WINDOW)
            .build(client);
        let mut results = Vec::with_capacity(passengers.len());
        let mut broken = false;
        for window in passengers.chunks(WINDOW) {
            // Everything of the window is sent before any PubAck is awaited.
            let mut waiting: Vec<Result<PublishAckFuture, StepError>> =
                Vec::with_capacity(window.len());
            for passenger in window {
                waiting.push(self.publish(&context, passenger).await);
            }
            for sent in waiting {
                let result = match sent {
                    Ok(ack) => match ack.await {
                        Ok(_) => Ok(()),
                        Err(error) => Err(self.classify(&error)),
                    },
                    Err(error) => Err(error),
                };
                if let Err(error) = &result
                    && error.retryable
                {
                    broken = true;
                }
                results.push(result);
            }
        }
        if broken {
            // A fresh connection next time, in case this one is stuck.
            *self.client.lock().await = None;
        }
        results
    }
}

impl NatsPusher {
    /// Sends one passenger's message; the PubAck is awaited later.
    async fn publish(
        &self,
        context: &async_nats::jetstream::Context,
        passenger: &Passenger,
    ) -> Result<PublishAckFuture, StepError> {
        let subject = self.settings.subject.render_text(passenger);
        if let Err(error) = subject_name(&subject) {
            return Err(StepError::permanent(format!(
                "NATS server `{}`: subject: {error}",
                self.connection.name
            )));
        }
        let id = passenger.id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert("ferry-id", id.as_str());
        headers.insert("Content-Type", passenger.body.media_type.as_str());
        for (name, template) in &self.settings.headers {
            // Header values are one line.
            let value = template.render_text(passenger).replace(['\r', '\n'], " ");
            headers.insert(name.as_str(), value.as_str());
        }
        let message = PublishMessage::build()
            .payload(passenger.body.data.clone())
            .headers(headers)
            .message_id(&id);
        context
            .send_publish(subject, message)
            .await
            .map_err(|error| match error.kind() {
                PublishErrorKind::MaxPayloadExceeded => StepError::permanent(format!(
                    "NATS server `{}`: a message of {} bytes is too large for the server: {error}",
                    self.connection.name,
                    passenger.body.data.len()
                )),
                _ => self.classify(&error),
            })
    }

    /// Retryable unless the server refused this very message.
    fn classify(&self, error: &async_nats::jetstream::context::PublishError) -> StepError {
        let refused = |what: String| {
            StepError::permanent(self.connection.scrub(&format!(
                "NATS server `{}` at {}: {what}",
                self.connection.name,
                self.connection.shown()
            )))
        };
        match error.kind() {
            PublishErrorKind::StreamNotFound => {
                refused(format!("no JetStream stream takes the subject: {error}"))
            }
            PublishErrorKind::MaxPayloadExceeded => {
                refused(format!("the message is too large: {error}"))
            }
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                refused(format!("the stream refused the message: {error}"))
            }
            PublishErrorKind::Other if is_api_refusal(error) => {
                refused(format!("the stream refused the message: {error}"))
            }
            _ => failed(&self.connection, "publishing", error),
        }
    }
}

/// Whether the error is JetStream's answer refusing the message (a 4xx API error, e.g. a
/// message larger than the stream's `max_msg_size`), not a transport failure.
fn is_api_refusal(error: &async_nats::jetstream::context::PublishError) -> bool {
    let source = std::error::Error::source(error);
    match source.and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>()) {
        Some(api) => (400..500).contains(&api.code()),
        None => false,
    }
}
