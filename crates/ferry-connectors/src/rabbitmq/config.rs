//! The `rabbitmq` connection (in `connections.yaml`) and the `rabbitmq` puller's and pusher's
//! settings (in a pipeline), as written and as checked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::size::Size;
use ferry_core::template::Template;
use ferry_core::{BuildError, duration};
use lapin::uri::{AMQPScheme, AMQPUri};
use serde::Deserialize;

/// A RabbitMQ broker (or any AMQP 0.9.1 broker) in `connections.yaml`.
///
/// ```yaml
/// rabbit:
///   type: rabbitmq
///   url: amqp://rabbit.example.com:5672/orders
///   user: ferry
///   password: ${RABBIT_PASSWORD}
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConnectionConfig {
    /// The broker as an AMQP URI: `amqp://HOST[:PORT][/VHOST]` (port 5672 by default) or
    /// `amqps://…` for TLS (port 5671, the public certificate authorities). The virtual host is
    /// URL-encoded (`%2f` for `/`, the default). Required. Keep credentials out of it: use
    /// `user` and `password`.
    pub url: String,
    /// The login name. Default: the one in `url`, else `guest`.
    #[serde(default)]
    pub user: Option<String>,
    /// The password. Never logged or shown. Default: the one in `url`, else `guest`.
    #[serde(default)]
    pub password: Option<String>,
    /// Time limit for connecting (TCP, TLS and the AMQP handshake), e.g. `10s`. Default `30s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// The AMQP heartbeat interval in seconds; a broker silent for twice as long counts as
    /// gone. Default: the broker's proposal (60 s for RabbitMQ).
    #[serde(default)]
    pub heartbeat: Option<u16>,
}

/// A checked `rabbitmq` connection.
#[derive(Clone)]
pub struct RabbitmqConnection {
    /// The connection's name in `connections.yaml`.
    pub name: String,
    /// The broker's address with the credentials filled in (never shown).
    pub(crate) uri: AMQPUri,
    pub connect_timeout: Duration,
}

impl fmt::Debug for RabbitmqConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitmqConnection")
            .field("name", &self.name)
            .field("address", &self.shown())
            .finish_non_exhaustive()
    }
}

impl RabbitmqConnection {
    /// Reads and checks `connection`'s keys.
    pub fn read(connection: &Connection, _project_dir: &Path) -> Result<Self, BuildError> {
        let config: RabbitmqConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        // The parser's message may quote the URL, which may hold a password: say what is wrong
        // without it.
        let mut uri = AMQPUri::from_str(config.url.trim()).map_err(|_| {
            BuildError::at(
                "url",
                "not an AMQP URI; write `amqp://HOST[:PORT][/VHOST]` or `amqps://…`",
            )
        })?;
        if uri.authority.host.is_empty() {
            return Err(BuildError::at("url", "must name the broker's host"));
        }
        if let Some(user) = config.user {
            if user.is_empty() {
                return Err(BuildError::at("user", "must not be empty"));
            }
            uri.authority.userinfo.username = user;
        }
        if let Some(password) = config.password {
            uri.authority.userinfo.password = password;
        }
        if let Some(heartbeat) = config.heartbeat {
            uri.query.heartbeat = Some(heartbeat);
        }
        let connect_timeout = match &config.connect_timeout {
            Some(text) => {
                duration::parse(text).map_err(|e| BuildError::at("connect_timeout", e))?
            }
            None => Duration::from_secs(30),
        };
        Ok(RabbitmqConnection {
            name: connection.name.clone(),
            uri,
            connect_timeout,
        })
    }

    /// `amqp://user@host:port/vhost`, for messages: never the password.
    pub fn shown(&self) -> String {
        let scheme = match self.uri.scheme {
            AMQPScheme::AMQP => "amqp",
            AMQPScheme::AMQPS => "amqps",
        };
        let vhost = match self.uri.vhost.as_str() {
            "/" => String::new(),
            vhost => format!("/{vhost}"),
        };
        format!(
            "{scheme}://{}@{}:{}{vhost}",
            self.uri.authority.userinfo.username, self.uri.authority.host, self.uri.authority.port
        )
    }
}

/// Configuration of the `rabbitmq` puller.
///
/// ```yaml
/// pullers:
///   - type: rabbitmq
///     connection: rabbit
///     queue: orders
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqPullerConfig {
    /// The `rabbitmq` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The queue to consume. Required. It must exist unless `declare: true`.
    pub queue: String,
    /// `true` declares the queue (durable) when it does not exist; `false` (the default) only
    /// checks that it exists (a passive declare), so a typo fails instead of creating a queue
    /// nobody publishes to.
    #[serde(default)]
    pub declare: bool,
    /// How many messages the broker hands ferry before they are acknowledged (AMQP
    /// `basic.qos` prefetch count). Default 1000; it bounds a pull's batch.
    #[serde(default)]
    pub prefetch: Option<u16>,
    /// How long a pull waits for the first message when the queue is empty, e.g. `2s`.
    /// Default `500ms`.
    #[serde(default)]
    pub max_wait: Option<String>,
    /// The passengers' media type. Default: the message's `content_type` property, else
    /// `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
}

/// The checked settings of a `rabbitmq` puller.
#[derive(Clone, Debug)]
pub struct PullerSettings {
    pub queue: String,
    pub declare: bool,
    pub prefetch: u16,
    pub max_wait: Duration,
    pub media_type: Option<String>,
}

impl PullerSettings {
    pub fn validate(config: &RabbitmqPullerConfig) -> Result<Self, BuildError> {
        if config.queue.trim().is_empty() {
            return Err(BuildError::at("queue", "must name the queue to consume"));
        }
        if config.queue.len() > 255 {
            return Err(BuildError::at("queue", "longer than AMQP's 255 bytes"));
        }
        let prefetch = config.prefetch.unwrap_or(1000);
        if prefetch == 0 {
            return Err(BuildError::at(
                "prefetch",
                "must be at least 1 (0 means unlimited in AMQP, which ferry does not allow)",
            ));
        }
        let max_wait = match &config.max_wait {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("max_wait", e))?,
            None => Duration::from_millis(500),
        };
        Ok(PullerSettings {
            queue: config.queue.clone(),
            declare: config.declare,
            prefetch,
            max_wait,
            media_type: config.media_type.clone(),
        })
    }
}

/// Configuration of the `rabbitmq` pusher.
///
/// ```yaml
/// pushers:
///   - type: rabbitmq
///     connection: rabbit
///     exchange: orders
///     routing_key: "order.{metadata.country}"
///     headers: { origin: "{source_system}" }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqPusherConfig {
    /// The `rabbitmq` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The exchange to publish to, a template (`{metadata.KEY}`, `{client}`, …). Default `""`,
    /// the default exchange, which routes to the queue named by the routing key.
    #[serde(default)]
    pub exchange: String,
    /// The routing key, a template, e.g. `order.{metadata.country}`. Required.
    pub routing_key: String,
    /// Message headers, each a template: `{ name: "{metadata.KEY}" }`. Every message also
    /// carries `ferry-id`, the passenger's id.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `true` (the default): a message no queue is bound for is returned by the broker and
    /// fails permanently ("no queue bound for routing key …"); `false` lets the broker drop it.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// `true` (the default): messages are persistent (`delivery_mode: 2`) and survive a broker
    /// restart in a durable queue.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// How long a batch waits for the broker's confirms, e.g. `30s`. Default `30s`; past it
    /// the unconfirmed messages fail retryably.
    #[serde(default)]
    pub confirm_timeout: Option<String>,
    /// The largest message published, e.g. `16MiB`; a larger one fails permanently before it
    /// is sent (the broker would close the channel over it, failing the whole batch again and
    /// again). Default `16MiB`, RabbitMQ 4's `max_message_size` (3.x allows 128 MiB): set it
    /// to the broker's.
    #[serde(default)]
    pub max_size: Option<Size>,
}

fn yes() -> bool {
    true
}

/// The checked settings of a `rabbitmq` pusher.
#[derive(Clone, Debug)]
pub struct PusherSettings {
    /// `None`: the default exchange.
    pub exchange: Option<Template>,
    pub routing_key: Template,
    pub headers: Vec<(String, Template)>,
    pub mandatory: bool,
    pub persistent: bool,
    pub confirm_timeout: Duration,
    /// In bytes.
    pub max_size: u64,
}

impl PusherSettings {
    pub fn validate(config: &RabbitmqPusherConfig) -> Result<Self, BuildError> {
        let template = |key: &str, text: &str| {
            Template::parse(text).map_err(|message| BuildError::at(key, message))
        };
        // An empty exchange is the default exchange; a template cannot be empty.
        let exchange = match config.exchange.as_str() {
            "" => None,
            text => Some(template("exchange", text)?),
        };
        if config.routing_key.is_empty() {
            return Err(BuildError::at(
                "routing_key",
                "must not be empty (with the default exchange it names the queue)",
            ));
        }
        let routing_key = template("routing_key", &config.routing_key)?;
        let mut headers = Vec::with_capacity(config.headers.len());
        for (name, text) in &config.headers {
            let at = |message: String| BuildError {
                path: vec!["headers".into(), name.clone()],
                message,
                within: None,
            };
            if name.is_empty() || name.len() > 255 {
                return Err(at("a header name has 1 to 255 bytes".into()));
            }
            if name == super::pusher::ID_HEADER {
                return Err(at("`ferry-id` is set by ferry to the passenger's id".into()));
            }
            headers.push((name.clone(), Template::parse(text).map_err(at)?));
        }
        let confirm_timeout = match &config.confirm_timeout {
            Some(text) => {
                duration::parse(text).map_err(|e| BuildError::at("confirm_timeout", e))?
            }
            None => Duration::from_secs(30),
        };
        let max_size = match &config.max_size {
            Some(size) => size.bytes().map_err(|e| BuildError::at("max_size", e))?,
            None => 16 << 20,
        };
        if max_size == 0 {
            return Err(BuildError::at("max_size", "at least 1 byte"));
        }
        Ok(PusherSettings {
            max_size,
            exchange,
            routing_key,
            headers,
            mandatory: config.mandatory,
            persistent: config.persistent,
            confirm_timeout,
        })
    }
}
