//! The `webhook` puller: drains the deliveries its [`Endpoint`] queued, and answers their
//! senders once they are seated.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ferry_core::{BuildContext, BuildError, Pulled, Puller, PullerFactory, Seated, StepError};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::oneshot;

use super::auth::Verifier;
use super::{
    Answer, Endpoint, FIRST_DELIVERY_WAIT, RUN_LENGTH, Settings, Waiting, WebhookPullerConfig, hub,
};

/// The largest `max_body`: a waiting delivery holds its body in memory.
const MAX_BODY_LIMIT: u64 = 256 << 20;
/// The default `max_body`: 10 MiB.
const DEFAULT_MAX_BODY: u64 = 10 << 20;

/// Builds `webhook` pullers.
pub struct WebhookPullerFactory;

impl PullerFactory for WebhookPullerFactory {
    const TYPE: &'static str = super::TYPE;
    const RECEIVES: bool = true;
    type Config = WebhookPullerConfig;

    fn build(
        &self,
        config: WebhookPullerConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        let Some(auth) = &config.auth else {
            return Err(BuildError::at(
                "auth",
                "a webhook must authenticate its senders: write `github: SECRET`, `stripe: { \
                 secrets: [SECRET] }`, `bearer: TOKEN` or `basic: { user: U, password: P }`",
            ));
        };
        let verifier = Verifier::new(auth)?;
        let mut path = format!("{}/{}", ctx.client, ctx.pipeline);
        if let Some(suffix) = &config.path {
            let valid = !suffix.is_empty()
                && suffix.len() <= 100
                && suffix != "."
                && suffix != ".."
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(BuildError::at(
                    "path",
                    format!(
                        "invalid path `{suffix}`: one segment of letters, digits, `-`, `_` and \
                         `.`, at most 100 long"
                    ),
                ));
            }
            path = format!("{path}/{suffix}");
        }
        let max_body = match &config.max_body {
            None => DEFAULT_MAX_BODY,
            Some(size) => size
                .bytes()
                .map_err(|message| BuildError::at("max_body", message))?,
        };
        if max_body == 0 || max_body > MAX_BODY_LIMIT {
            return Err(BuildError::at(
                "max_body",
                format!("must be between 1 byte and 256MiB, not {max_body} bytes"),
            ));
        }
        let id_headers = header_names("id_headers", &config.id_headers)?;
        let keep_headers = header_names("keep_headers", &config.keep_headers)?;
        if config.source_system.is_empty() {
            return Err(BuildError::at("source_system", "must not be empty"));
        }
        if config.capacity == 0 || config.capacity > 1_000_000 {
            return Err(BuildError::at(
                "capacity",
                "must be between 1 and 1000000 waiting deliveries",
            ));
        }
        let timeout = ferry_core::duration::parse(&config.timeout)
            .map_err(|message| BuildError::at("timeout", message))?;
        if timeout.is_zero() || timeout > std::time::Duration::from_secs(300) {
            return Err(BuildError::at(
                "timeout",
                "must be longer than zero and at most 5m",
            ));
        }
        let settings = Settings {
            path,
            pipeline: format!("{}/{}", ctx.client, ctx.pipeline),
            verifier,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            id_headers,
            keep_headers,
            source_system: config.source_system,
            timeout,
        };
        let (sender, receiver) = mpsc::channel(config.capacity);
        let endpoint = Arc::new(Endpoint {
            settings: Arc::new(settings),
            sender,
        });
        Ok(Box::new(WebhookPuller {
            endpoint,
            receiver,
            registered: false,
            awaiting: Vec::new(),
            run_started: Instant::now(),
        }))
    }
}

/// Header names as written, checked and in lower case.
fn header_names(key: &str, names: &[String]) -> Result<Vec<String>, BuildError> {
    let mut lower = Vec::with_capacity(names.len());
    for name in names {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !valid {
            return Err(BuildError::at(key, format!("`{name}` is no header name")));
        }
        lower.push(name.to_ascii_lowercase());
    }
    Ok(lower)
}

/// A delivery taken by the last pull, waiting for its `ack`.
struct Taken {
    source_system: String,
    external_id: String,
    reply: oneshot::Sender<Answer>,
}

/// Receives deliveries while its pipeline runs.
pub struct WebhookPuller {
    endpoint: Arc<Endpoint>,
    receiver: mpsc::Receiver<Waiting>,
    /// The endpoint is in the [`hub`] (since the first run started).
    registered: bool,
    /// Taken by the last pull, not acknowledged yet.
    awaiting: Vec<Taken>,
    /// When the current run started, to end long runs (see [`RUN_LENGTH`]).
    run_started: Instant,
}

impl WebhookPuller {
    /// Answers the senders of deliveries pulled but never acknowledged: the seat failed.
    fn answer_unseated(&mut self) {
        for taken in self.awaiting.drain(..) {
            let _ = taken.reply.send(Answer::refused(
                500,
                "not_seated",
                "ferry could not seat the delivery (the pipeline's runs say why); send it again",
            ));
        }
    }

    /// Takes `waiting` into the pull, unless its sender stopped waiting.
    fn take(&mut self, waiting: Waiting, passengers: &mut Vec<ferry_core::Passenger>) {
        if waiting.reply.is_closed() {
            return;
        }
        self.awaiting.push(Taken {
            source_system: waiting.passenger.source_system.clone(),
            external_id: waiting.passenger.external_id.clone(),
            reply: waiting.reply,
        });
        passengers.push(waiting.passenger);
    }
}

#[async_trait]
impl Puller for WebhookPuller {
    /// Waits up to [`FIRST_DELIVERY_WAIT`] for a delivery, then takes whatever else is waiting,
    /// up to `max`. A puller whose pipeline does not run (a `peek`) has nothing.
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError> {
        self.answer_unseated();
        let mut passengers = Vec::new();
        if !self.registered || max == 0 {
            return Ok(Pulled::default());
        }
        let deadline = tokio::time::Instant::now() + FIRST_DELIVERY_WAIT;
        while passengers.is_empty() {
            let waiting = match self.receiver.try_recv() {
                Ok(waiting) => waiting,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                        Ok(Some(waiting)) => waiting,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            self.take(waiting, &mut passengers);
        }
        while passengers.len() < max {
            match self.receiver.try_recv() {
                Ok(waiting) => self.take(waiting, &mut passengers),
                Err(_) => break,
            }
        }
        let more = !passengers.is_empty() && self.run_started.elapsed() < RUN_LENGTH;
        Ok(Pulled {
            passengers,
            more,
            ..Pulled::default()
        })
    }

    /// Answers each seated delivery's sender: 202 with its id and whether it was a duplicate.
    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError> {
        let mut answers: HashMap<(String, String), VecDeque<bool>> = HashMap::new();
        for item in seated {
            answers
                .entry((item.source_system.clone(), item.external_id.clone()))
                .or_default()
                .push_back(item.duplicate);
        }
        let mut left = Vec::new();
        for taken in self.awaiting.drain(..) {
            let Taken {
                source_system,
                external_id,
                reply,
            } = taken;
            let key = (source_system, external_id);
            match answers.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(duplicate) => {
                    let _ = reply.send(Answer::accepted(&key.1, duplicate));
                }
                None => left.push(Taken {
                    source_system: key.0,
                    external_id: key.1,
                    reply,
                }),
            }
        }
        self.awaiting = left;
        Ok(())
    }

    /// The start of a run: the endpoint goes live (once), and a new run's clock starts.
    fn restore(&mut self, _state: Option<String>) {
        self.answer_unseated();
        self.run_started = Instant::now();
        if !self.registered {
            hub().register(&self.endpoint);
            self.registered = true;
        }
    }
}

impl Drop for WebhookPuller {
    /// The pipeline stopped: its endpoint stops receiving. Deliveries still waiting are
    /// dropped with their reply channels, so their senders hear 503 and send again.
    fn drop(&mut self) {
        if self.registered {
            hub().unregister(&self.endpoint);
        }
    }
}
