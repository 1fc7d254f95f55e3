//! Deliveries that partners push to ferry: `POST /hooks/{client}/{pipeline}` on the console's
//! listener.
//!
//! ## How a delivery travels
//!
//! The `webhook` puller does not fetch anything: while its pipeline runs it owns an
//! [`Endpoint`] in the process-wide [`hub`], and the console's handler (ferry-console's
//! `webhook.rs`) hands each request to it. The endpoint checks the credentials (a signature of
//! the raw body, a bearer token or basic credentials: `auth.rs`), makes the passenger, and puts
//! it with a reply channel into a bounded queue. The pipeline's pull task drains that queue in
//! [`Puller::pull`](ferry_core::Puller::pull), seats what it took in one transaction, and calls
//! [`Puller::ack`](ferry_core::Puller::ack), which answers each sender `202 {"id", "duplicate"}`.
//! So a sender hears 202 only once its delivery is committed to the queue; a crash before that
//! leaves it without an answer (or with a 5xx) and it sends again. A redelivery with the same
//! delivery id (`X-GitHub-Delivery`, `Idempotency-Key`, …) is then a duplicate, answered 202
//! with `duplicate: true`.
//!
//! ## Why one process-wide hub
//!
//! Dependencies point core ← connectors ← engine ← console, and the engine knows pullers only
//! as `Box<dyn Puller>`: handing a registry of live endpoints from the puller to the console
//! through the engine would add webhook types to the core and the engine for one connector.
//! A process serves one project on one listener, so one registry per process is the honest
//! size: [`hub`] is a map from path (`{client}/{pipeline}`, or with a suffix
//! `{client}/{pipeline}/{path}`) to the endpoint of the puller that runs there, which the
//! console reads. Tests that start several engines in one process give their pipelines
//! distinct names, as they must for their stores anyway.
//!
//! ## When an endpoint is live
//!
//! Building a puller (validation, `ferry check`, the console's definition editor, `peek`) does
//! not register anything: the endpoint registers in [`Puller::restore`](ferry_core::Puller::restore),
//! which the engine calls at the start of every run, and unregisters when the puller is
//! dropped (the pipeline stopped, changed or ferry shuts down). A changed definition's new
//! puller replaces the old one's registration; the old one's drop leaves the new one alone.
//! A pipeline that is defined but not running (starting, paused, stopped) answers 503.
//!
//! ## Schedule and latency
//!
//! The puller's factory says it receives ([`PullerFactory::RECEIVES`](ferry_core::PullerFactory::RECEIVES)),
//! so validation makes its pipeline `continuous` (and refuses another schedule: deliveries
//! arriving between scheduled runs would wait for minutes). A run's pulls keep going while
//! deliveries arrive: each pull waits up to [`FIRST_DELIVERY_WAIT`] for the first one, then
//! takes whatever else is waiting (up to the pipeline's `batch_size`), so one seat transaction
//! commits everything that arrived while the previous one was written. A run ends after a quiet
//! [`FIRST_DELIVERY_WAIT`] or once it is [`RUN_LENGTH`] old, so runs show in the history and a
//! pause takes effect; between runs the engine's short continuous pause holds deliveries back.
//!
//! ## Back-pressure
//!
//! At most `capacity` deliveries wait; the next is answered 503 with `Retry-After`. When the
//! pipeline's queue reaches its `queue_limit` the engine stops pulling, the waiting deliveries
//! are answered 503 after `timeout`, and new ones once `capacity` is full.

mod auth;
mod config;
mod puller;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

pub use auth::{github_signature, stripe_signature};
pub use config::{AuthConfig, BasicAuth, OneOrMany, StripeAuth, WebhookPullerConfig};
pub use puller::{WebhookPuller, WebhookPullerFactory};

/// The `type:` of the webhook puller.
pub const TYPE: &str = "webhook";

/// How long a pull waits for the first delivery before it says the source is drained.
pub const FIRST_DELIVERY_WAIT: Duration = Duration::from_secs(1);

/// How long one run of a webhook pipeline goes on pulling while deliveries keep arriving.
pub const RUN_LENGTH: Duration = Duration::from_secs(60);

/// `Retry-After` when the endpoint's queue is full: it drains in milliseconds.
const RETRY_BUSY: u64 = 1;
/// `Retry-After` when the pipeline is not running or its queue did not move.
const RETRY_LATER: u64 = 30;

/// The endpoints of the running webhook pullers of this process.
pub fn hub() -> &'static Hub {
    static HUB: LazyLock<Hub> = LazyLock::new(Hub::default);
    &HUB
}

/// Live endpoints by path (`{client}/{pipeline}` or `{client}/{pipeline}/{path}`).
#[derive(Default)]
pub struct Hub {
    endpoints: RwLock<HashMap<String, Arc<Endpoint>>>,
}

impl Hub {
    /// The endpoint receiving at `path`, if its pipeline runs.
    pub fn endpoint(&self, path: &str) -> Option<Arc<Endpoint>> {
        self.endpoints
            .read()
            .expect("webhook hub lock")
            .get(path)
            .cloned()
    }

    /// Whether any webhook of `client/pipeline` receives (at any path).
    pub fn receives_for(&self, client: &str, pipeline: &str) -> bool {
        let base = format!("{client}/{pipeline}");
        self.endpoints
            .read()
            .expect("webhook hub lock")
            .keys()
            .any(|path| {
                path.strip_prefix(&base)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    /// The paths with a live endpoint, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .endpoints
            .read()
            .expect("webhook hub lock")
            .keys()
            .cloned()
            .collect();
        paths.sort();
        paths
    }

    /// Makes `endpoint` the one receiving at its path, replacing an older one (of a pipeline's
    /// previous definition).
    fn register(&self, endpoint: &Arc<Endpoint>) {
        let path = endpoint.settings.path.clone();
        let replaced = self
            .endpoints
            .write()
            .expect("webhook hub lock")
            .insert(path.clone(), endpoint.clone());
        tracing::info!(
            path = %format!("/hooks/{path}"),
            replaced = replaced.is_some(),
            "webhook receiving"
        );
    }

    /// Removes `endpoint`, unless another took its path since.
    fn unregister(&self, endpoint: &Arc<Endpoint>) {
        let path = &endpoint.settings.path;
        let mut endpoints = self.endpoints.write().expect("webhook hub lock");
        if endpoints
            .get(path)
            .is_some_and(|live| Arc::ptr_eq(live, endpoint))
        {
            endpoints.remove(path);
            tracing::info!(path = %format!("/hooks/{path}"), "webhook no longer receiving");
        }
    }
}

/// One request as the console received it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub method: String,
    /// Header names in lower case, values as sent (bytes that are not UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// The raw body, read whole (at most the endpoint's [`Endpoint::max_body`]).
    pub body: Bytes,
    /// The sender's address.
    pub remote: Option<SocketAddr>,
}

/// What the sender is told: a status, headers and a small JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: serde_json::Value,
}

impl Answer {
    /// 202: seated (or already in the queue).
    fn accepted(id: &str, duplicate: bool) -> Answer {
        Answer {
            status: 202,
            headers: Vec::new(),
            body: json!({ "id": id, "duplicate": duplicate }),
        }
    }

    /// A refusal in the console's error shape, `{code, message}`.
    pub fn refused(status: u16, code: &str, message: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: json!({ "code": code, "message": message.into() }),
        }
    }

    /// A 503 the sender should retry after `seconds`.
    pub fn unavailable(code: &str, message: impl Into<String>, seconds: u64) -> Answer {
        let mut answer = Answer::refused(503, code, message);
        answer.headers.push(("retry-after", seconds.to_string()));
        answer
    }

    /// No webhook receives at this path.
    pub fn not_found(path: &str) -> Answer {
        Answer::refused(
            404,
            "not_found",
            format!("no webhook receives at /hooks/{path}"),
        )
    }

    /// The pipeline is defined with a webhook puller but does not run now.
    pub fn not_running(pipeline: &str) -> Answer {
        Answer::unavailable(
            "not_running",
            format!(
                "pipeline {pipeline} is not receiving right now (starting, stopped or changed); send the delivery again later"
            ),
            RETRY_LATER,
        )
    }

    /// The pipeline is paused.
    pub fn paused(pipeline: &str) -> Answer {
        Answer::unavailable(
            "paused",
            format!("pipeline {pipeline} is paused; send the delivery again later"),
            RETRY_LATER,
        )
    }

    /// The body is larger than `max_body`.
    pub fn too_large(max_body: usize) -> Answer {
        Answer::refused(
            413,
            "too_large",
            format!("the body is larger than this webhook's max_body of {max_body} bytes"),
        )
    }
}

/// What an endpoint knows, shared by the console's side and the puller.
#[derive(Debug)]
struct Settings {
    /// The hub's key: `{client}/{pipeline}` or `{client}/{pipeline}/{path}`.
    path: String,
    /// `client/pipeline`, for logs.
    pipeline: String,
    verifier: auth::Verifier,
    max_body: usize,
    /// Lower case.
    id_headers: Vec<String>,
    /// Lower case.
    keep_headers: Vec<String>,
    source_system: String,
    timeout: Duration,
}

/// A delivery waiting to be seated, with the sender's reply channel.
struct Waiting {
    passenger: ferry_core::Passenger,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// Where the console hands a running webhook puller its deliveries.
pub struct Endpoint {
    settings: Arc<Settings>,
    sender: tokio::sync::mpsc::Sender<Waiting>,
}

impl Endpoint {
    /// The largest body accepted: the console stops reading there.
    pub fn max_body(&self) -> usize {
        self.settings.max_body
    }

    /// Checks credentials that travel in headers alone (bearer, basic) before the body is
    /// read; signatures are checked by [`Endpoint::deliver`], with the body.
    pub fn admit(
        &self,
        headers: &[(String, String)],
        remote: Option<SocketAddr>,
    ) -> Result<(), Answer> {
        if self.settings.verifier.signs_body() {
            return Ok(());
        }
        self.settings
            .verifier
            .verify(headers, &[], unix_now())
            .map_err(|reason| self.unauthorized(reason, remote))
    }

    /// Takes a delivery: checks it, queues it for the puller and answers once it is seated
    /// (202), or why not.
    pub async fn deliver(&self, delivery: Delivery) -> Answer {
        let settings = &self.settings;
        if !delivery.method.eq_ignore_ascii_case("POST") {
            return Answer::refused(405, "method", "send deliveries with POST");
        }
        if delivery.body.len() > settings.max_body {
            return Answer::too_large(settings.max_body);
        }
        if let Err(reason) = settings
            .verifier
            .verify(&delivery.headers, &delivery.body, unix_now())
        {
            return self.unauthorized(reason, delivery.remote);
        }
        let passenger = match settings.passenger(&delivery) {
            Ok(passenger) => passenger,
            Err(answer) => return answer,
        };
        let (reply, answered) = tokio::sync::oneshot::channel();
        let waiting = Waiting { passenger, reply };
        match self.sender.try_send(waiting) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                return Answer::unavailable(
                    "busy",
                    "too many deliveries are waiting to be seated; send this one again shortly",
                    RETRY_BUSY,
                );
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                return Answer::not_running(&settings.pipeline);
            }
        }
        match tokio::time::timeout(settings.timeout, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Answer::unavailable(
                "not_seated",
                "the pipeline stopped before the delivery was seated; send it again",
                RETRY_LATER,
            ),
            // The puller skips a delivery whose sender stopped waiting, unless it already took it.
            Err(_) => Answer::unavailable(
                "not_seated",
                format!(
                    "the delivery was not seated within {} s (the pipeline's queue may be full); send it again",
                    settings.timeout.as_secs_f64()
                ),
                RETRY_LATER,
            ),
        }
    }

    fn unauthorized(&self, reason: String, remote: Option<SocketAddr>) -> Answer {
        let settings = &self.settings;
        tracing::warn!(
            pipeline = %settings.pipeline,
            path = %format!("/hooks/{}", settings.path),
            remote = %remote.map(|r| r.to_string()).unwrap_or_default(),
            scheme = settings.verifier.scheme(),
            %reason,
            "webhook delivery refused"
        );
        let mut answer = Answer::refused(401, "unauthorized", reason);
        if let auth::Verifier::Basic { .. } = settings.verifier {
            answer
                .headers
                .push(("www-authenticate", "Basic realm=\"ferry webhook\"".into()));
        }
        answer
    }
}

impl Settings {
    /// The passenger of an authenticated delivery.
    fn passenger(&self, delivery: &Delivery) -> Result<ferry_core::Passenger, Answer> {
        let find = |name: &str| auth::header(&delivery.headers, name).map(str::trim);
        let delivery_id = self
            .id_headers
            .iter()
            .filter_map(|name| find(name))
            .find(|value| !value.is_empty());
        if let Some(id) = delivery_id
            && (id.len() > 200 || id.chars().any(char::is_control))
        {
            return Err(Answer::refused(
                400,
                "invalid",
                "the delivery id is longer than 200 bytes or holds control characters",
            ));
        }
        let mut passenger = ferry_core::Passenger::pulled(self.source_system.clone(), "");
        passenger.external_id = match delivery_id {
            Some(id) => id.to_string(),
            None => passenger.id.to_string(),
        };
        let content_type = find("content-type").unwrap_or_default();
        let media_type = content_type
            .split(';')
            .next()
            .map(|kind| kind.trim().to_ascii_lowercase())
            .filter(|kind| !kind.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into());
        let metadata = &mut passenger.metadata;
        if !content_type.is_empty() {
            metadata.insert("webhook.content_type".into(), content_type.to_string());
        }
        if let Some(id) = delivery_id {
            metadata.insert("webhook.delivery_id".into(), id.to_string());
        }
        if let Some(agent) = find("user-agent") {
            metadata.insert("webhook.user_agent".into(), agent.to_string());
        }
        if let Some(remote) = delivery.remote {
            metadata.insert("webhook.remote_addr".into(), remote.to_string());
        }
        metadata.insert("webhook.path".into(), format!("/hooks/{}", self.path));
        for name in &self.keep_headers {
            if let Some(value) = find(name) {
                metadata.insert(format!("webhook.header.{name}"), value.to_string());
            }
        }
        passenger.body = ferry_core::Body {
            media_type,
            data: delivery.body.clone(),
        };
        Ok(passenger)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
