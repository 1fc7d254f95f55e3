//! The `nats` puller: a durable pull consumer with explicit acknowledgement.
//!
//! A pull asks the server for up to `max` messages and waits at most `max_wait` for them.
//! Nothing is acknowledged before [`Puller::ack`]; until then a background task tells the server
//! every `ack_wait / 3` that the messages are still being worked on (`+WPI`), so a batch that
//! takes long to seat is not handed out again. A crashed process sends nothing more, and the
//! server redelivers its messages after `ack_wait`, under the same `<stream>/<sequence>`.
//!
//! Acknowledgements go to the message's reply subject, which any connection may publish to: a
//! reconnected client acknowledges what an earlier connection pulled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream;
use async_nats::{Client, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, PullFailure, Pulled, Puller, PullerFactory, Seated,
    StepError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::config::{NatsConnection, NatsPullerConfig, PullerSettings, Start};
use super::{connect, connection_of, failed};

/// Builds `nats` pullers.
pub struct NatsPullerFactory;

impl PullerFactory for NatsPullerFactory {
    const TYPE: &'static str = "nats";
    type Config = NatsPullerConfig;

    fn build(
        &self,
        config: NatsPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let connection = connection_of(ctx, "connection", &config.connection)?;
        let settings = PullerSettings::validate(&config, &ctx.client, &ctx.pipeline)?;
        Ok(Box::new(NatsPuller {
            source_system: format!("nats:{}", connection.name),
            connection,
            settings,
            link: None,
            pending: Arc::new(Mutex::new(HashMap::new())),
            position: Position::default(),
        }))
    }
}

/// The position kept in the pipeline's state: the highest stream sequence seated.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Position {
    sequence: Option<u64>,
}

/// The open connection: the client, the consumer, and the task sending in-progress acks.
struct Link {
    client: Client,
    consumer: PullConsumer,
    _progress: AbortOnDrop,
}

/// Pulls from one durable consumer.
pub struct NatsPuller {
    connection: NatsConnection,
    settings: PullerSettings,
    source_system: String,
    /// Opened on the first pull, kept across runs, dropped after a failure.
    link: Option<Link>,
    /// The reply subjects of the messages pulled and not yet acknowledged, by external id;
    /// shared with the task that sends in-progress acks for them.
    pending: Arc<Mutex<HashMap<String, Subject>>>,
    position: Position,
}

#[async_trait]
impl Puller for NatsPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        let max = max.max(1);
        let link = match self.link.take() {
            Some(link) => link,
            None => self.open().await?,
        };
        let link = self.link.insert(link);
        // While the client reconnects by itself a pull request would go nowhere and come back
        // empty; say so instead.
        if link.client.connection_state() != State::Connected {
            return Err(failed(
                &self.connection,
                "pulling",
                &"not connected (reconnecting)",
            ));
        }
        let batch = link
            .consumer
            .batch()
            .max_messages(max)
            .expires(self.settings.max_wait)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                self.link = None;
                return Err(failed(&self.connection, "pull request", &error));
            }
        };
        // Messages of an earlier pull that was never acknowledged are no longer kept alive:
        // the server hands them out again after `ack_wait`, and the queue drops the copy.
        // Those of this pull are kept alive from the moment they arrive, so a pull may wait
        // longer than `ack_wait`.
        lock(&self.pending).clear();
        let mut pulled = Pulled::default();
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    // The messages already received stay unacknowledged: they come back.
                    self.link = None;
                    lock(&self.pending).clear();
                    return Err(failed(&self.connection, "pulling", &error));
                }
            };
            let (passenger, sequence) = match self.passenger(&message) {
                Ok(made) => made,
                Err(failure) => {
                    pulled.failures.push(failure);
                    continue;
                }
            };
            if let Some(reply) = message.message.reply.clone() {
                lock(&self.pending).insert(passenger.external_id.clone(), reply);
            }
            let highest = self.position.sequence.unwrap_or(0).max(sequence);
            self.position.sequence = Some(highest);
            pulled.passengers.push(passenger);
        }
        debug!(
            stream = %self.settings.stream,
            consumer = %self.settings.durable,
            count = pulled.passengers.len(),
            "pulled"
        );
        pulled.more = pulled.passengers.len() + pulled.failures.len() >= max;
        if !pulled.passengers.is_empty() {
            pulled.state = serde_json::to_string(&self.position).ok();
        }
        Ok(pulled)
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let replies: Vec<Subject> = {
            let mut pending = lock(&self.pending);
            seated
                .iter()
                .filter_map(|seat| pending.remove(&seat.external_id))
                .collect()
        };
        if replies.is_empty() {
            return Ok(());
        }
        let link = match &self.link {
            Some(link) if link.client.connection_state() == State::Connected => link,
            // The connection died after the pull: the server hands the messages out again
            // after `ack_wait`, and the queue drops the copies.
            _ => {
                warn!(
                    count = replies.len(),
                    "not connected to acknowledge; the messages come back"
                );
                return Ok(());
            }
        };
        let mut sent = Ok(());
        for reply in replies {
            sent = link
                .client
                .publish(reply, Bytes::from_static(b"+ACK"))
                .await;
            if sent.is_err() {
                break;
            }
        }
        let flushed = match sent {
            Ok(()) => {
                match tokio::time::timeout(self.connection.timeout, link.client.flush()).await {
                    Ok(flushed) => flushed.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = flushed {
            // Not an error of the step: what was seated is safe, and the server redelivers
            // what it did not hear about; the queue drops those copies.
            warn!(error = %self.connection.scrub(&error), "acknowledging failed; the messages come back");
            self.link = None;
        }
        Ok(())
    }

    fn restore(&mut self, state: Option<String>) {
        self.position = state
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
    }
}

impl NatsPuller {
    /// Connects, finds (or creates) the stream and the durable consumer, and starts the
    /// in-progress task.
    async fn open(&self) -> Result<Link, StepError> {
        let connection = &self.connection;
        let settings = &self.settings;
        let client = connect(connection).await?;
        let context = async_nats::jetstream::new(client.clone());
        let stream = match context.get_stream(&settings.stream).await {
            Ok(stream) => stream,
            Err(error) => {
                let missing = matches!(
                    error.kind(),
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(api)
                        if api.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                match (&settings.create_stream, missing) {
                    (Some(subjects), true) => context
                        .create_stream(stream::Config {
                            name: settings.stream.clone(),
                            subjects: subjects.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| failed(connection, "creating the stream", &e))?,
                    (None, true) => {
                        return Err(StepError::permanent(format!(
                            "NATS server `{}` at {}: stream `{}` does not exist; create it or \
                             give the puller `create_stream: [SUBJECTS]`",
                            connection.name,
                            connection.shown(),
                            settings.stream
                        )));
                    }
                    (_, false) => return Err(failed(connection, "finding the stream", &error)),
                }
            }
        };
        // A consumer made afresh (the first run, or after someone deleted it) starts after what
        // is already seated, when the state says so.
        let deliver_policy = match (self.position.sequence, settings.start) {
            (Some(sequence), _) => DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
            (None, Start::All) => DeliverPolicy::All,
            (None, Start::New) => DeliverPolicy::New,
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &settings.durable,
                pull::Config {
                    durable_name: Some(settings.durable.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: settings.ack_wait,
                    deliver_policy,
                    filter_subject: settings.filter_subject.clone().unwrap_or_default(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| failed(connection, "opening the durable consumer", &e))?;
        let progress = tokio::spawn(progress(
            client.clone(),
            self.pending.clone(),
            settings.ack_wait / 3,
        ));
        Ok(Link {
            client,
            consumer,
            _progress: AbortOnDrop(progress),
        })
    }

    /// The passenger of one message, and its stream sequence.
    fn passenger(
        &self,
        message: &async_nats::jetstream::Message,
    ) -> Result<(Passenger, u64), PullFailure> {
        let info = message.info().map_err(|error| PullFailure {
            external_id: message.subject.to_string(),
            fingerprint: String::new(),
            error: StepError::permanent(format!(
                "a message on `{}` is not a JetStream delivery: {error}",
                message.subject
            )),
        })?;
        let sequence = info.stream_sequence;
        let mut passenger =
            Passenger::pulled(&self.source_system, format!("{}/{sequence}", info.stream));
        let metadata = &mut passenger.metadata;
        metadata.insert("nats.subject".into(), message.subject.to_string());
        metadata.insert("nats.stream".into(), info.stream.to_string());
        metadata.insert("nats.sequence".into(), sequence.to_string());
        let mut content_type = None;
        if let Some(headers) = &message.headers {
            for (name, values) in headers.iter() {
                let values: Vec<&str> = values.iter().map(|value| value.as_str()).collect();
                let joined = values.join(", ");
                if name.to_string().eq_ignore_ascii_case("content-type") {
                    content_type = Some(joined.clone());
                }
                metadata.insert(format!("nats.header.{name}"), joined);
            }
        }
        let media_type = self
            .settings
            .media_type
            .clone()
            .or(content_type)
            .unwrap_or_else(|| "application/octet-stream".into());
        passenger.body = Body {
            media_type,
            data: message.payload.clone(),
        };
        Ok((passenger, sequence))
    }
}

/// Tells the server every `every` that the pulled, unacknowledged messages are still being
/// worked on, so it does not hand them out again while they wait to be seated.
async fn progress(
    client: Client,
    pending: Arc<Mutex<HashMap<String, Subject>>>,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let replies: Vec<Subject> = lock(&pending).values().cloned().collect();
        for reply in replies {
            if client
                .publish(reply, Bytes::from_static(b"+WPI"))
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
