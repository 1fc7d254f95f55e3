//! The `mqtt` pusher: one QoS 1 message per passenger, counted delivered only on the broker's
//! PUBACK.
//!
//! The event loop runs in a task of its own and reports which packet id each publish got and
//! which packet ids the broker acknowledged; a batch is published in one go and its PUBACKs are
//! awaited together. The pusher's session is clean and its client id random: a connection
//! that fails takes its unacknowledged messages with it (they fail retryably, and the engine
//! pushes them again on a new connection).

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::debug;

use super::config::{MqttConnection, MqttPusherConfig, PusherSettings};

/// Publishes waiting for the event loop, at most.
const REQUESTS: usize = 1_000;

/// Builds `mqtt` pushers.
pub struct MqttPusherFactory;

impl PusherFactory for MqttPusherFactory {
    const TYPE: &'static str = "mqtt";
    type Config = MqttPusherConfig;

    fn build(
        &self,
        config: MqttPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection = super::connection_of(ctx, "connection", &config.connection)?;
        let settings = PusherSettings::validate(&config)?;
        Ok(Box::new(MqttPusher {
            connection,
            settings,
            link: Mutex::new(None),
        }))
    }
}

/// Publishes passengers to a topic.
pub struct MqttPusher {
    connection: MqttConnection,
    settings: PusherSettings,
    /// The client and its event loop's task, made by the first push; held across a batch, so
    /// that the packet ids the task reports belong to it.
    link: Mutex<Option<Link>>,
}

struct Link {
    client: AsyncClient,
    reports: mpsc::UnboundedReceiver<Report>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the event loop's task reports.
enum Report {
    Connected,
    /// The next publish was written with this packet id.
    Sent(u16),
    /// The next publish waits for this packet id to be acknowledged (the broker acknowledged
    /// out of order), then is written with it.
    Waiting(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The connection failed; the task has ended.
    Failed(String),
}

/// Polls the event loop until the connection fails or the client is dropped.
async fn poll_events(
    mut events: EventLoop,
    reports: mpsc::UnboundedSender<Report>,
    connection: MqttConnection,
) {
    loop {
        let report = match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Report::Connected,
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Report::Sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => Report::Waiting(pkid),
            Ok(Event::Incoming(Packet::PubAck(puback))) => Report::Acked(puback.pkid),
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(error) => {
                let _ = reports.send(Report::Failed(super::failed(&connection, &error).message));
                return;
            }
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

impl MqttPusher {
    /// A new connected link, or why there is none.
    async fn connect(&self) -> Result<Link, StepError> {
        // A clean session under a random id: nothing to resume, and two pushers (or two ferry
        // processes) never take each other's connection away.
        let id = format!(
            "ferry-p-{}",
            &uuid::Uuid::now_v7().simple().to_string()[17..]
        );
        let session = super::SessionKind {
            clean: true,
            manual_acks: false,
        };
        let (client, events) = super::client(&self.connection, &id, session, REQUESTS);
        let (sender, reports) = mpsc::unbounded_channel();
        let task = tokio::spawn(poll_events(events, sender, self.connection.clone()));
        let mut link = Link {
            client,
            reports,
            task,
        };
        let waiting = tokio::time::timeout(self.connection.connect_timeout, link.reports.recv());
        match waiting.await {
            Ok(Some(Report::Connected)) => Ok(link),
            Ok(Some(Report::Failed(text))) => Err(StepError::retryable(text)),
            Ok(_) => Err(StepError::retryable(super::failed_text(
                &self.connection,
                "connecting: no CONNACK",
            ))),
            Err(_) => Err(StepError::retryable(super::failed_text(
                &self.connection,
                &format!(
                    "connecting: no answer within {:?}",
                    self.connection.connect_timeout
                ),
            ))),
        }
    }

    /// The topic for `passenger`, or why it cannot be published.
    fn topic(&self, passenger: &Passenger) -> Result<String, StepError> {
        let topic = self.settings.topic.render_text(passenger);
        if topic.is_empty() {
            return Err(StepError::permanent(
                "the topic is empty (a metadata key it names is missing?)",
            ));
        }
        if topic.contains(['+', '#']) {
            return Err(StepError::permanent(format!(
                "topic `{topic}` holds a wildcard (`+` or `#`), which a message cannot be \
                 published to"
            )));
        }
        if topic.len() > usize::from(u16::MAX) || topic.contains('\0') {
            return Err(StepError::permanent(format!(
                "topic `{topic}` is not a valid MQTT topic (too long or holds NUL)"
            )));
        }
        let size = passenger.body.data.len();
        if size > self.settings.max_size {
            return Err(StepError::permanent(format!(
                "the message of {size} bytes for topic `{topic}` is larger than max_size ({} \
                 bytes)",
                self.settings.max_size
            )));
        }
        Ok(topic)
    }
}

#[async_trait]
impl Pusher for MqttPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let mut results: Vec<Option<Result<(), StepError>>> = vec![None; passengers.len()];
        let mut topics = Vec::with_capacity(passengers.len());
        for (index, passenger) in passengers.iter().enumerate() {
            match self.topic(passenger) {
                Ok(topic) => topics.push(Some(topic)),
                Err(error) => {
                    results[index] = Some(Err(error));
                    topics.push(None);
                }
            }
        }

        let mut guard = self.link.lock().await;
        if guard.as_ref().is_none_or(|link| link.task.is_finished()) {
            *guard = None;
            match self.connect().await {
                Ok(link) => *guard = Some(link),
                Err(error) => {
                    return results
                        .into_iter()
                        .map(|result| result.unwrap_or_else(|| Err(error.clone())))
                        .collect();
                }
            }
        }
        let link = guard.as_mut().expect("connected above");

        // Publish the whole batch, then wait for the PUBACKs together.
        let mut published = VecDeque::new();
        let mut failure = None;
        for (index, topic) in topics.into_iter().enumerate() {
            let Some(topic) = topic else { continue };
            let payload = passengers[index].body.data.to_vec();
            let sent = link
                .client
                .publish(topic, QoS::AtLeastOnce, self.settings.retain, payload)
                .await;
            match sent {
                Ok(()) => published.push_back(index),
                Err(error) => {
                    failure = Some(super::failed_text(
                        &self.connection,
                        &format!("publishing: {error}"),
                    ));
                    break;
                }
            }
        }

        let deadline = tokio::time::Instant::now() + self.settings.ack_timeout;
        // Packet id → the passenger it carries, until the broker acknowledges it.
        let mut in_flight: HashMap<u16, usize> = HashMap::new();
        let mut waiting: Option<(u16, usize)> = None;
        let mut unacked = published.len();
        while failure.is_none() && unacked > 0 {
            let report = match tokio::time::timeout_at(deadline, link.reports.recv()).await {
                Ok(Some(report)) => report,
                Ok(None) => Report::Failed(super::failed_text(
                    &self.connection,
                    "the connection's task ended",
                )),
                Err(_) => Report::Failed(super::failed_text(
                    &self.connection,
                    &format!(
                        "no PUBACK within {:?}; the message will be sent again",
                        self.settings.ack_timeout
                    ),
                )),
            };
            match report {
                Report::Sent(pkid) => {
                    let index = match waiting {
                        Some((held, index)) if held == pkid => {
                            waiting = None;
                            Some(index)
                        }
                        _ => published.pop_front(),
                    };
                    if let Some(index) = index {
                        in_flight.insert(pkid, index);
                    }
                }
                Report::Waiting(pkid) => {
                    waiting = published.pop_front().map(|index| (pkid, index));
                }
                Report::Acked(pkid) => {
                    if let Some(index) = in_flight.remove(&pkid) {
                        results[index] = Some(Ok(()));
                        unacked -= 1;
                    }
                }
                Report::Connected => {}
                Report::Failed(text) => failure = Some(text),
            }
        }
        if let Some(text) = failure {
            debug!(error = %text, "the MQTT connection failed; unacknowledged messages fail");
            // Start afresh with the next push: what this connection held is unknown.
            *guard = None;
            let error = StepError::retryable(text);
            return results
                .into_iter()
                .map(|result| result.unwrap_or_else(|| Err(error.clone())))
                .collect();
        }
        results
            .into_iter()
            .map(|result| result.expect("every passenger has its answer"))
            .collect()
    }
}
