//! The `kafka` connection (in `connections.yaml`) and the `kafka` puller's and pusher's
//! settings (in a pipeline), as written and as checked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::template::Template;
use ferry_core::{BuildError, duration};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// A Kafka cluster in `connections.yaml`.
///
/// ```yaml
/// events:
///   type: kafka
///   brokers: kafka1.example.com:9092,kafka2.example.com:9092
///   user: ferry            # SASL/PLAIN, optional
///   password: ${KAFKA_PASSWORD}
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConnectionConfig {
    /// The bootstrap brokers, `host:port` separated by commas (or a list). Required.
    pub brokers: Brokers,
    /// SASL/PLAIN login name; without it the connection is not authenticated.
    #[serde(default)]
    pub user: Option<String>,
    /// SASL/PLAIN password (with `user`). Never logged or shown.
    #[serde(default)]
    pub password: Option<String>,
    /// Time limit for metadata requests and for a message's delivery, e.g. `30s`. Default
    /// `30s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Brokers as one comma-separated string or as a list.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Brokers {
    One(String),
    List(Vec<String>),
}

/// A checked Kafka connection.
#[derive(Clone)]
pub struct KafkaConnection {
    pub name: String,
    /// `host:port,host:port`.
    pub brokers: String,
    login: Option<(String, String)>,
    pub timeout: Duration,
}

impl fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConnection")
            .field("name", &self.name)
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaConnection {
    /// Reads and checks `connection`'s keys.
    pub fn read(connection: &Connection) -> Result<Self, BuildError> {
        let config: KafkaConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        let brokers = match config.brokers {
            Brokers::One(text) => text.split(',').map(str::trim).map(String::from).collect(),
            Brokers::List(list) => list,
        };
        if brokers.is_empty() || brokers.iter().any(|b| b.trim().is_empty()) {
            return Err(BuildError::at(
                "brokers",
                "must name the bootstrap brokers as `host:port`, separated by commas",
            ));
        }
        if let Some(bad) = brokers.iter().find(|b| !b.contains(':')) {
            return Err(BuildError::at(
                "brokers",
                format!("`{bad}` has no port; write `host:port`"),
            ));
        }
        let login = match (config.user, config.password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(_), None) => return Err(BuildError::at("password", "required with `user`")),
            (None, Some(_)) => return Err(BuildError::at("user", "required with `password`")),
        };
        let timeout = match &config.timeout {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("timeout", e))?,
            None => Duration::from_secs(30),
        };
        Ok(KafkaConnection {
            name: connection.name.clone(),
            brokers: brokers.join(","),
            login,
            timeout,
        })
    }

    /// librdkafka's settings for this cluster, shared by consumers and producers.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("ferry-{}", self.name))
            .set("socket.timeout.ms", millis(self.timeout))
            // librdkafka logs through its own channel; the errors that matter reach the
            // caller, so keep its chatter out of ferry's log.
            .set("log_level", "3");
        if let Some((user, password)) = &self.login {
            config
                .set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanisms", "PLAIN")
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        config
    }
}

/// A duration in whole milliseconds, as librdkafka's settings take it.
pub(crate) fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

/// Where a new consumer group starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// From the oldest message the topic keeps (nothing is missed).
    #[default]
    Earliest,
    /// Only messages written after the group first joined.
    Latest,
}

/// The `kafka` puller in a pipeline.
///
/// ```yaml
/// pullers:
///   - type: kafka
///     connection: events
///     topics: [orders]
///     group: ferry-orders     # default ferry-<client>-<pipeline>
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaPullerConfig {
    /// The `kafka` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The topics to read. Required, at least one.
    pub topics: Vec<String>,
    /// The consumer group. Default `ferry-<client>-<pipeline>`. Consumers of one group share
    /// the topics' partitions; each partition is read by one of them.
    #[serde(default)]
    pub group: Option<String>,
    /// Where a group without committed offsets starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: Start,
    /// Longest a pull waits for the first message, e.g. `500ms`. Default `500ms`.
    #[serde(default)]
    pub max_wait: Option<String>,
    /// The body's media type. Default: the message's `content-type` header, else
    /// `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
}

/// The `kafka` pusher in a pipeline.
///
/// ```yaml
/// pushers:
///   - type: kafka
///     connection: events
///     topic: "orders-{metadata.region}"
///     key: "{metadata.order_id}"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaPusherConfig {
    /// The `kafka` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The topic, a template (`{metadata.KEY}`, `{client}`, …). Required.
    pub topic: String,
    /// The message key, a template; messages with one key go to one partition, in order.
    /// Default: no key (spread over the partitions).
    #[serde(default)]
    pub key: Option<String>,
    /// Headers to send, name → template. Every message also carries `ferry-id`, the
    /// passenger's id, by which a consumer can drop a copy.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A pusher's templates, parsed.
#[derive(Clone, Debug)]
pub(crate) struct PushTemplates {
    pub topic: Template,
    pub key: Option<Template>,
    pub headers: Vec<(String, Template)>,
}

impl KafkaPusherConfig {
    pub(crate) fn templates(&self) -> Result<PushTemplates, BuildError> {
        let topic = Template::parse(&self.topic).map_err(|e| BuildError::at("topic", e))?;
        let key = self
            .key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| BuildError::at("key", e))?;
        let mut headers = Vec::new();
        for (name, text) in &self.headers {
            if name.is_empty() || name.eq_ignore_ascii_case("ferry-id") {
                return Err(BuildError {
                    path: vec!["headers".into(), name.clone()],
                    message: "a header needs a name other than `ferry-id`, which ferry sets".into(),
                    within: None,
                });
            }
            let template = Template::parse(text).map_err(|e| BuildError {
                path: vec!["headers".into(), name.clone()],
                message: e,
                within: None,
            })?;
            headers.push((name.clone(), template));
        }
        Ok(PushTemplates {
            topic,
            key,
            headers,
        })
    }
}

impl KafkaPullerConfig {
    /// Checks what can be checked without the cluster; returns the pull wait.
    pub(crate) fn validate(&self) -> Result<Duration, BuildError> {
        if self.topics.is_empty() {
            return Err(BuildError::at("topics", "name at least one topic"));
        }
        if let Some(index) = self.topics.iter().position(|t| !valid_topic(t)) {
            return Err(BuildError {
                path: vec!["topics".into(), index.to_string()],
                message: format!(
                    "`{}` is not a topic name: use 1 to 249 letters, digits, `.`, `_` or `-`",
                    self.topics[index]
                ),
                within: None,
            });
        }
        if self.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(BuildError::at("group", "must not be empty"));
        }
        match &self.max_wait {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("max_wait", e)),
            None => Ok(Duration::from_millis(500)),
        }
    }
}

/// Kafka's rule for topic names.
pub(crate) fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
