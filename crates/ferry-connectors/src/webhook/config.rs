//! The `webhook` puller's configuration, as written in a pipeline definition.

use std::fmt;

use ferry_core::size::Size;
use serde::Deserialize;

/// Configuration of the `webhook` puller.
///
/// ```yaml
/// # clients/acme/pipelines/github.yaml: POST /hooks/acme/github
/// pullers:
///   - type: webhook
///     auth:
///       github: ["${GITHUB_HOOK_SECRET}", "${GITHUB_HOOK_SECRET_OLD}"]
///     keep_headers: [X-GitHub-Event]
/// pushers:
///   - { type: file, path: out/github }
/// ```
///
/// The pipeline's schedule is `continuous` (implied; any other is an error).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPullerConfig {
    /// A last path segment after `/hooks/{client}/{pipeline}`, for a pipeline with several
    /// webhook pullers: `path: stripe` receives at `/hooks/acme/orders/stripe`. Letters,
    /// digits, `-`, `_` and `.`. Default: none (`/hooks/{client}/{pipeline}`).
    #[serde(default)]
    pub path: Option<String>,
    /// How a delivery proves where it comes from. Required: `github: SECRET` (the
    /// `X-Hub-Signature-256` header), `stripe: { secrets: [SECRET], tolerance: 5m }` (the
    /// `Stripe-Signature` header), `bearer: TOKEN` (`Authorization: Bearer`) or `basic: { user:
    /// U, password: P }`. Each takes a list too, so a secret can be rotated: every one listed
    /// is accepted. Secrets are never logged or shown.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The largest body accepted, in bytes or with a unit: `512KB`, `10MB` (powers of 1000),
    /// `10MiB` (powers of 1024). A larger one is refused with 413 while it is being read. At
    /// most `256MiB`. Default `10MiB`.
    #[serde(default)]
    pub max_body: Option<Size>,
    /// Request headers holding the sender's delivery id, tried in order; the first present
    /// becomes the passenger's `external_id`, so a redelivery is a duplicate (answered 202
    /// with `duplicate: true`). Default `[X-GitHub-Delivery, Idempotency-Key, Webhook-Id,
    /// X-Request-Id]`; without any, each delivery gets a fresh id.
    #[serde(default = "default_id_headers")]
    pub id_headers: Vec<String>,
    /// Request headers kept in the passenger's metadata as `webhook.header.<name>` (the name
    /// in lower case), e.g. `[X-GitHub-Event]`. Default none.
    #[serde(default)]
    pub keep_headers: Vec<String>,
    /// The passengers' `source_system`; with the delivery id it is the de-duplication key.
    /// Default `webhook`.
    #[serde(default = "default_source_system")]
    pub source_system: String,
    /// How many deliveries may wait to be seated at once; more are answered 503 with
    /// `Retry-After`. Each waiting delivery holds its body in memory. Default 2000.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// How long a sender waits for its delivery to be seated (the pipeline's queue may be at
    /// its `queue_limit`) before it is answered 503 with `Retry-After`, e.g. `10s`. Default
    /// `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

/// The delivery-id headers of GitHub, of the IETF idempotency draft (and Stripe's API), of
/// Standard Webhooks (Svix), and the common request id.
pub const DEFAULT_ID_HEADERS: [&str; 4] = [
    "X-GitHub-Delivery",
    "Idempotency-Key",
    "Webhook-Id",
    "X-Request-Id",
];

fn default_id_headers() -> Vec<String> {
    DEFAULT_ID_HEADERS.iter().map(|h| h.to_string()).collect()
}

fn default_source_system() -> String {
    "webhook".into()
}

fn default_capacity() -> usize {
    2000
}

fn default_timeout() -> String {
    "10s".into()
}

/// How senders authenticate, as written.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// GitHub's `X-Hub-Signature-256: sha256=HEX`: HMAC-SHA256 of the raw body.
    Github(OneOrMany<String>),
    /// Stripe's `Stripe-Signature: t=TIMESTAMP,v1=HEX`: HMAC-SHA256 of `TIMESTAMP.BODY`.
    Stripe(StripeAuth),
    /// `Authorization: Bearer TOKEN`.
    Bearer(OneOrMany<String>),
    /// `Authorization: Basic …`.
    Basic(OneOrMany<BasicAuth>),
}

// Never print a secret, not even in debug output.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthConfig::Github(secrets) => write!(f, "Github({} secret(s))", secrets.len()),
            AuthConfig::Stripe(stripe) => {
                write!(f, "Stripe({} secret(s))", stripe.secrets.len())
            }
            AuthConfig::Bearer(tokens) => write!(f, "Bearer({} token(s))", tokens.len()),
            AuthConfig::Basic(users) => write!(f, "Basic({} user(s))", users.len()),
        }
    }
}

/// `auth: { stripe: … }`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeAuth {
    /// The endpoint's signing secret(s) (`whsec_…`). Required.
    pub secrets: OneOrMany<String>,
    /// How far the signed timestamp may be from now, either way, e.g. `5m`; older signatures
    /// are refused as replays. Default `5m`.
    #[serde(default)]
    pub tolerance: Option<String>,
}

/// User and password of HTTP basic authentication.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

/// One value, or a list of them (several secrets, so one can be rotated).
#[derive(Clone, Deserialize)]
#[serde(untagged, expecting = "one value or a list of values")]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn len(&self) -> usize {
        match self {
            OneOrMany::One(_) => 1,
            OneOrMany::Many(list) => list.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, in order.
    pub fn values(&self) -> Vec<&T> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(list) => list.iter().collect(),
        }
    }
}
