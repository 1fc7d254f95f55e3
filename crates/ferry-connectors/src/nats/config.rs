//! The `nats` connection (in `connections.yaml`) and the `nats` puller's and pusher's settings
//! (in a pipeline), as written and as checked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::template::Template;
use ferry_core::{BuildError, duration};
use serde::Deserialize;

/// A NATS server (or cluster) with JetStream in `connections.yaml`.
///
/// ```yaml
/// events:
///   type: nats
///   url: nats://nats.internal:4222
///   user: ferry
///   password: ${NATS_PASSWORD}
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConnectionConfig {
    /// The server's address, `nats://host:port` (`tls://host:port` for TLS with the public
    /// certificate authorities); several, comma-separated, for a cluster. Required.
    pub url: String,
    /// The user name, with `password`. Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// The password, with `user`. Never logged or shown. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// A token instead of `user`/`password`. Never logged or shown. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// Time limit for connecting and for each request (a pull request, a publish
    /// acknowledgement), e.g. `10s`. Default `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A checked `nats` connection.
#[derive(Clone)]
pub struct NatsConnection {
    pub name: String,
    pub url: String,
    pub(crate) login: Login,
    pub timeout: Duration,
}

/// How the client logs in.
#[derive(Clone)]
pub(crate) enum Login {
    None,
    Password { user: String, password: String },
    Token(String),
}

impl fmt::Debug for NatsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConnection")
            .field("name", &self.name)
            .field("url", &self.shown())
            .finish_non_exhaustive()
    }
}

impl NatsConnection {
    /// Reads and checks `connection`'s keys.
    pub fn read(connection: &Connection) -> Result<Self, BuildError> {
        let config: NatsConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        if config.url.trim().is_empty() {
            return Err(BuildError::at(
                "url",
                "must name the server, e.g. `nats://127.0.0.1:4222`",
            ));
        }
        let login = match (config.user, config.password, config.token) {
            (None, None, None) => Login::None,
            (Some(user), Some(password), None) => Login::Password { user, password },
            (None, None, Some(token)) => Login::Token(token),
            (Some(_), None, None) => {
                return Err(BuildError::at(
                    "password",
                    "`password` is required with `user`",
                ));
            }
            (None, Some(_), None) => {
                return Err(BuildError::at("user", "`user` is required with `password`"));
            }
            _ => {
                return Err(BuildError::at(
                    "token",
                    "give `user` and `password` or `token`, not both",
                ));
            }
        };
        let timeout = match &config.timeout {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("timeout", e))?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() {
            return Err(BuildError::at("timeout", "must be more than 0s"));
        }
        Ok(NatsConnection {
            name: connection.name.clone(),
            url: config.url,
            login,
            timeout,
        })
    }

    /// The server's address without any user or password written into it, for messages.
    pub fn shown(&self) -> String {
        self.url
            .split(',')
            .map(|address| match address.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((_, host)) => format!("{scheme}://{host}"),
                    None => address.to_string(),
                },
                None => match address.rsplit_once('@') {
                    Some((_, host)) => host.to_string(),
                    None => address.to_string(),
                },
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `text` with every secret of the connection blanked out, for error messages that quote
    /// what the client said.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        let secrets: Vec<&str> = match &self.login {
            Login::None => Vec::new(),
            Login::Password { password, .. } => vec![password.as_str()],
            Login::Token(token) => vec![token.as_str()],
        };
        for secret in secrets {
            if !secret.is_empty() {
                text = text.replace(secret, "***");
            }
        }
        // A password written into the url itself.
        for address in self.url.split(',') {
            if let Some((_, rest)) = address.split_once("://")
                && let Some((userinfo, _)) = rest.rsplit_once('@')
                && !userinfo.is_empty()
            {
                text = text.replace(userinfo, "***");
            }
        }
        text
    }
}

/// Configuration of the `nats` puller: a durable pull consumer on a JetStream stream.
///
/// ```yaml
/// pullers:
///   - type: nats
///     connection: events
///     stream: ORDERS
///     filter_subject: orders.created
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsPullerConfig {
    /// The `nats` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The JetStream stream to read. Required; it must exist unless `create_stream` is given.
    pub stream: String,
    /// The durable consumer's name; it keeps the position on the server across runs.
    /// Default `ferry-<client>-<pipeline>`.
    #[serde(default)]
    pub durable: Option<String>,
    /// Only messages whose subject matches this filter, e.g. `orders.*`. Default: every
    /// message of the stream. Used when the consumer is created.
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Creates the stream when it does not exist, taking these subjects, e.g. `[orders.>]`.
    /// Default: the stream must exist (a missing one is a permanent error).
    #[serde(default)]
    pub create_stream: Option<Vec<String>>,
    /// Where a newly created consumer starts: `all` (the first message still in the stream)
    /// or `new` (only messages published from then on). Default `all`.
    #[serde(default)]
    pub start: Option<String>,
    /// How long the server waits for the acknowledgement of a message it delivered before it
    /// delivers it again, e.g. `60s`. While a pulled batch waits to be seated the puller
    /// tells the server it is still working on it every third of this. Default `60s`.
    #[serde(default)]
    pub ack_wait: Option<String>,
    /// How long a pull waits for its batch to fill, e.g. `500ms`; a pull returns as soon as
    /// it has `max` messages. Default `500ms`.
    #[serde(default)]
    pub max_wait: Option<String>,
    /// The passengers' media type. Default: the message's `Content-Type` header, else
    /// `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
}

/// Where a newly created consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    All,
    New,
}

/// The checked settings of a `nats` puller.
#[derive(Clone, Debug)]
pub struct PullerSettings {
    pub stream: String,
    pub durable: String,
    pub filter_subject: Option<String>,
    pub create_stream: Option<Vec<String>>,
    pub start: Start,
    pub ack_wait: Duration,
    pub max_wait: Duration,
    pub media_type: Option<String>,
}

impl PullerSettings {
    pub fn validate(
        config: &NatsPullerConfig,
        client: &str,
        pipeline: &str,
    ) -> Result<Self, BuildError> {
        name("stream", &config.stream)?;
        let durable = match &config.durable {
            Some(durable) => durable.clone(),
            None => format!("ferry-{client}-{pipeline}"),
        };
        name("durable", &durable)?;
        if let Some(filter) = &config.filter_subject {
            subject_filter(filter).map_err(|e| BuildError::at("filter_subject", e))?;
        }
        if let Some(subjects) = &config.create_stream {
            if subjects.is_empty() {
                return Err(BuildError::at(
                    "create_stream",
                    "name at least one subject, e.g. `[orders.>]`",
                ));
            }
            for (index, subject) in subjects.iter().enumerate() {
                subject_filter(subject).map_err(|message| BuildError {
                    path: vec!["create_stream".into(), index.to_string()],
                    message,
                    within: None,
                })?;
            }
        }
        let start = match config.start.as_deref() {
            None | Some("all") => Start::All,
            Some("new") => Start::New,
            Some(other) => {
                return Err(BuildError::at(
                    "start",
                    format!("unknown `{other}`; write `all` or `new`"),
                ));
            }
        };
        let ack_wait = positive("ack_wait", config.ack_wait.as_deref(), 60_000)?;
        let max_wait = positive("max_wait", config.max_wait.as_deref(), 500)?;
        Ok(PullerSettings {
            stream: config.stream.clone(),
            durable,
            filter_subject: config.filter_subject.clone(),
            create_stream: config.create_stream.clone(),
            start,
            ack_wait,
            max_wait,
            media_type: config.media_type.clone(),
        })
    }
}

/// Configuration of the `nats` pusher: a JetStream publish per passenger.
///
/// ```yaml
/// pushers:
///   - type: nats
///     connection: events
///     subject: orders.{metadata.kind}
///     headers: { source: "{source_system}" }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsPusherConfig {
    /// The `nats` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The subject, a template (`orders.{metadata.kind}`); a JetStream stream must take it.
    /// Required.
    pub subject: String,
    /// Headers added to each message, name → template. Default: none (`ferry-id`,
    /// `Nats-Msg-Id` and `Content-Type` are always set).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The checked settings of a `nats` pusher.
#[derive(Clone, Debug)]
pub struct PusherSettings {
    pub subject: Template,
    pub headers: Vec<(String, Template)>,
}

impl PusherSettings {
    pub fn validate(config: &NatsPusherConfig) -> Result<Self, BuildError> {
        let subject = Template::parse(&config.subject).map_err(|e| BuildError::at("subject", e))?;
        if !config.subject.contains('{') {
            subject_name(&config.subject).map_err(|e| BuildError::at("subject", e))?;
        }
        let mut headers = Vec::new();
        for (name, text) in &config.headers {
            let at = |message: String| BuildError {
                path: vec!["headers".into(), name.clone()],
                message,
                within: None,
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic() && c != ':') {
                return Err(at(format!(
                    "`{}` is not a header name",
                    name.escape_debug()
                )));
            }
            let reserved = ["ferry-id", "nats-msg-id"];
            if reserved.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(at(format!("`{name}` is set by ferry (the passenger id)")));
            }
            headers.push((name.clone(), Template::parse(text).map_err(at)?));
        }
        Ok(PusherSettings { subject, headers })
    }
}

/// A stream or consumer name: no spaces, dots, wildcards or path characters.
fn name(key: &str, name: &str) -> Result<(), BuildError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
    if name.is_empty() || name.chars().any(bad) {
        return Err(BuildError::at(
            key,
            format!(
                "`{}` is not a JetStream name: no spaces, `.`, `*`, `>`, `/` or `\\`",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// A subject a message is published to: dot-separated tokens, no wildcards, no spaces.
pub(crate) fn subject_name(subject: &str) -> Result<(), String> {
    subject_filter(subject)?;
    if subject.split('.').any(|token| token == "*" || token == ">") {
        return Err(format!(
            "`{subject}` is not a subject to publish to: it holds a wildcard"
        ));
    }
    Ok(())
}

/// A subject filter: dot-separated non-empty tokens without spaces; `*` and a last `>` allowed.
fn subject_filter(subject: &str) -> Result<(), String> {
    let bad = subject.is_empty()
        || subject.chars().any(|c| c.is_whitespace() || c.is_control())
        || subject.split('.').any(str::is_empty);
    if bad {
        return Err(format!(
            "`{}` is not a NATS subject: dot-separated words without spaces",
            subject.escape_debug()
        ));
    }
    Ok(())
}

/// A duration under `key`, more than zero; `default_ms` when not written.
fn positive(key: &str, written: Option<&str>, default_ms: u64) -> Result<Duration, BuildError> {
    let value = match written {
        Some(text) => duration::parse(text).map_err(|e| BuildError::at(key, e))?,
        None => Duration::from_millis(default_ms),
    };
    if value.is_zero() {
        return Err(BuildError::at(key, "must be more than 0s"));
    }
    Ok(value)
}
