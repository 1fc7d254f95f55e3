//! The `mqtt` puller: a persistent session under a stable client id, QoS 1 subscriptions, one
//! passenger per message, each message acknowledged (PUBACK) only after it is seated.
//!
//! The rumqttc event loop must be polled all the time (it sends the keep-alive pings and the
//! acks), so it runs in a task of its own that hands the messages to the puller through a
//! channel. Each connection the task makes is a generation; a message remembers the generation
//! it came in. After a reconnect the broker sends the unacknowledged messages of the session
//! again (with new packet ids), so `ack` skips the messages of an older generation: their
//! packet ids mean nothing on the new connection, and their copies travel again (at-least-once,
//! see the module docs).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::{
    Body, BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Seated, StepError,
};
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::config::{ExternalId, MqttConnection, MqttPullerConfig, PullerSettings};

/// How long a pull waits for the next message once the first came.
const LINGER: Duration = Duration::from_millis(20);

/// Messages received and not yet pulled, and requests (acknowledgements) waiting for the event
/// loop, at most each. A full hand-over makes the event loop stop reading the socket, so the
/// broker waits: memory stays bounded, whatever the broker sends ahead.
const BUFFER: usize = 10_000;

/// Builds `mqtt` pullers.
pub struct MqttPullerFactory;

impl PullerFactory for MqttPullerFactory {
    const TYPE: &'static str = "mqtt";
    type Config = MqttPullerConfig;

    fn build(
        &self,
        config: MqttPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let connection = super::connection_of(ctx, "connection", &config.connection)?;
        let settings = PullerSettings::validate(&config, ctx)?;
        Ok(Box::new(MqttPuller {
            source_system: format!("mqtt:{}", connection.name),
            connection,
            settings,
            link: None,
            open: HashMap::new(),
            unsent: Vec::new(),
        }))
    }
}

/// Subscribes to topic filters in a persistent session.
pub struct MqttPuller {
    connection: MqttConnection,
    settings: PullerSettings,
    /// `mqtt:<connection name>`.
    source_system: String,
    link: Option<Link>,
    /// Messages offered by a pull and not yet acknowledged, by external id (a duplicate can be
    /// open twice), with the generation they came in.
    open: HashMap<String, Vec<(u64, Publish)>>,
    /// Acknowledgements of seated messages the event loop had no room for yet: sent again at
    /// the next `ack` or `pull`. Never waited for, since a loop waiting to hand over a message
    /// serves no request, and a puller waiting to acknowledge takes no message (100,000 queued
    /// messages once stopped both).
    unsent: Vec<(u64, Publish)>,
}

/// The client and the task that polls its event loop.
struct Link {
    client: AsyncClient,
    arrivals: mpsc::Receiver<Arrival>,
    /// The generation of the task's current connection (0 before the first).
    generation: Arc<AtomicU64>,
    /// Whether that connection is up: acks queued while it is down would reach the next
    /// connection, whose packet ids may name other messages.
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The event loop goes with the task; its socket closes without a DISCONNECT, so the
        // broker keeps the session and its unacknowledged messages for the next connection.
        self.task.abort();
    }
}

/// What the event loop's task hands the puller.
enum Arrival {
    /// A message and the generation of the connection it came in.
    Message(u64, Publish),
    /// The connection failed (or could not be made) in this generation; the task retries.
    Failed(u64, String),
}

impl MqttPuller {
    /// Hands the event loop the acknowledgements it has room for; keeps the rest.
    fn send_acks(&mut self) {
        let Some(link) = &self.link else {
            self.unsent.clear();
            return;
        };
        let live = link.generation.load(Ordering::SeqCst);
        let up = link.connected.load(Ordering::SeqCst);
        let mut unsent = std::mem::take(&mut self.unsent).into_iter();
        for (generation, publish) in unsent.by_ref() {
            // A message of an older (or a broken) connection: the broker sends it again on
            // the next one.
            if generation != live || !up {
                continue;
            }
            match link.client.try_ack(&publish) {
                Ok(()) => {}
                Err(ClientError::TryRequest(_)) => {
                    // No room now: this one and the rest go at the next call.
                    self.unsent.push((generation, publish));
                    break;
                }
                Err(error) => {
                    warn!(
                        connection = %self.connection.name,
                        %error,
                        "acknowledging failed; the broker sends the message again"
                    );
                    return;
                }
            }
        }
        self.unsent.extend(unsent);
    }

    fn link(&mut self) -> &mut Link {
        if self.link.is_none() {
            // A persistent session: what arrives while ferry is away waits for it, and so does
            // what was pulled but not acknowledged.
            let session = super::SessionKind {
                clean: false,
                manual_acks: true,
            };
            let (client, events) =
                super::client(&self.connection, &self.settings.client_id, session, BUFFER);
            let (sender, arrivals) = mpsc::channel(BUFFER);
            let generation = Arc::new(AtomicU64::new(0));
            let connected = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(poll_events(
                events,
                client.clone(),
                self.settings.topics.clone(),
                sender,
                (generation.clone(), connected.clone()),
                self.connection.clone(),
            ));
            self.link = Some(Link {
                client,
                arrivals,
                generation,
                connected,
                task,
            });
        }
        self.link.as_mut().expect("made above")
    }

    fn passenger(&self, publish: &Publish) -> Passenger {
        // MQTT 3.1.1 gives a message no id of its own: each delivery is a new passenger,
        // unless the definition says its payload names it.
        let external_id = match self.settings.external_id {
            ExternalId::Uuid => uuid::Uuid::now_v7().to_string(),
            ExternalId::PayloadHash => digest(publish),
        };
        let mut passenger = Passenger::pulled(&self.source_system, external_id);
        let metadata = &mut passenger.metadata;
        metadata.insert("mqtt.topic".into(), publish.topic.clone());
        metadata.insert("mqtt.retain".into(), publish.retain.to_string());
        metadata.insert("mqtt.qos".into(), (publish.qos as u8).to_string());
        metadata.insert("mqtt.dup".into(), publish.dup.to_string());
        passenger.with_body(Body {
            media_type: self.settings.media_type.clone(),
            data: publish.payload.clone(),
        })
    }
}

/// Polls the event loop for as long as the puller lives: subscribes on the first connection
/// (and on any that finds no session), hands over messages, and reconnects after a failure.
async fn poll_events(
    mut events: EventLoop,
    client: AsyncClient,
    topics: Vec<String>,
    sender: mpsc::Sender<Arrival>,
    (generation, connected): (Arc<AtomicU64>, Arc<AtomicBool>),
    connection: MqttConnection,
) {
    let mut first = true;
    let mut pause = Duration::from_millis(100);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                let now = generation.fetch_add(1, Ordering::SeqCst) + 1;
                connected.store(true, Ordering::SeqCst);
                debug!(
                    connection = %connection.name,
                    generation = now,
                    session_present = connack.session_present,
                    "connected to the MQTT broker"
                );
                pause = Duration::from_millis(100);
                // The session keeps the subscriptions; subscribing again would make the broker
                // send the retained messages again. The first connection of a run subscribes
                // anyway, so that changed `topics` take effect.
                if first || !connack.session_present {
                    let filters = topics
                        .iter()
                        .map(|topic| SubscribeFilter::new(topic.clone(), QoS::AtLeastOnce));
                    if let Err(error) = client.try_subscribe_many(filters) {
                        warn!(%error, "subscribing failed");
                    }
                    first = false;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now = generation.load(Ordering::SeqCst);
                if sender.send(Arrival::Message(now, publish)).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                if suback
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure))
                {
                    let now = generation.load(Ordering::SeqCst);
                    let text = super::failed_text(
                        &connection,
                        &format!("the broker refused a subscription to {topics:?}"),
                    );
                    let _ = sender.try_send(Arrival::Failed(now, text));
                }
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(error) => {
                connected.store(false, Ordering::SeqCst);
                let now = generation.load(Ordering::SeqCst);
                let text = super::failed(&connection, &error).message;
                if sender.try_send(Arrival::Failed(now, text)).is_err() && sender.is_closed() {
                    return;
                }
                // The next poll reconnects; wait a little longer each time, up to 5s.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[async_trait]
impl Puller for MqttPuller {
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        if max == 0 {
            return Ok(Pulled::default());
        }
        self.send_acks();
        let max_wait = self.settings.max_wait;
        let link = self.link();
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut messages = Vec::new();
        // The first message, waiting at most `max_wait`; a failure of the current connection
        // ends the wait (one of an older connection that was since replaced does not).
        while messages.is_empty() {
            match tokio::time::timeout_at(deadline, link.arrivals.recv()).await {
                Err(_) => return Ok(Pulled::default()),
                Ok(Some(Arrival::Message(generation, publish))) => {
                    messages.push((generation, publish))
                }
                Ok(Some(Arrival::Failed(generation, text))) => {
                    if generation >= link.generation.load(Ordering::SeqCst) {
                        return Err(StepError::retryable(text));
                    }
                }
                Ok(None) => {
                    self.link = None;
                    return Err(StepError::retryable(super::failed_text(
                        &self.connection,
                        "the connection's task ended",
                    )));
                }
            }
        }
        // Then the messages right behind it: they arrive one by one, so wait a moment for
        // each next one instead of cutting the batch at the first gap.
        while messages.len() < max {
            match tokio::time::timeout(LINGER, link.arrivals.recv()).await {
                Ok(Some(Arrival::Message(generation, publish))) => {
                    messages.push((generation, publish))
                }
                Ok(Some(Arrival::Failed(..))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let mut pulled = Pulled {
            more: messages.len() >= max,
            ..Pulled::default()
        };
        for (generation, publish) in messages {
            let passenger = self.passenger(&publish);
            // What an acknowledgement needs (packet id and QoS), not the payload, which the
            // passenger holds: a broker far ahead of the acks costs no memory per message.
            let mut acknowledgeable = Publish::new(String::new(), publish.qos, Vec::<u8>::new());
            acknowledgeable.pkid = publish.pkid;
            self.open
                .entry(passenger.external_id.clone())
                .or_default()
                .push((generation, acknowledgeable));
            pulled.passengers.push(passenger);
        }
        Ok(pulled)
    }

    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let mut acking = Vec::new();
        for item in seated {
            if item.source_system != self.source_system {
                continue;
            }
            // Taken out: a second ack of the same items finds nothing (idempotent).
            if let Some(open) = self.open.remove(&item.external_id) {
                acking.extend(open);
            }
        }
        self.unsent.extend(acking);
        self.send_acks();
        Ok(())
    }
}

/// The SHA-256 of a message's topic and payload, hex.
fn digest(publish: &Publish) -> String {
    let mut hash = Sha256::new();
    hash.update(publish.topic.as_bytes());
    hash.update([0]);
    hash.update(&publish.payload);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
