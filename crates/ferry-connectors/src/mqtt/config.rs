//! The `mqtt` connection (in `connections.yaml`) and the `mqtt` puller's and pusher's settings
//! (in a pipeline), as written and as checked.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::Connection;
use ferry_core::size::Size;
use ferry_core::template::Template;
use ferry_core::{BuildContext, BuildError, duration};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;

/// The largest MQTT packet there is (the protocol's 256 MiB remaining-length limit).
pub(crate) const MQTT_MAX_PACKET: usize = 268_435_455;

/// An MQTT 3.1.1 broker in `connections.yaml`.
///
/// ```yaml
/// sensors:
///   type: mqtt
///   host: mqtt.example.com
///   user: ferry
///   password: ${MQTT_PASSWORD}
///   tls: {}
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConnectionConfig {
    /// The broker's host name or address. Required.
    pub host: String,
    /// The broker's port. Default 1883, or 8883 with `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    /// The login name. Default: none (an anonymous connection).
    #[serde(default)]
    pub user: Option<String>,
    /// The password. Never logged or shown. Only with `user`.
    #[serde(default)]
    pub password: Option<String>,
    /// TLS to the broker: `{}` checks the broker's certificate against the public
    /// authorities, `{ ca_file: certs/ca.pem }` against these (a path relative to the
    /// project). Default: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The MQTT keep-alive interval, e.g. `30s`: ferry pings the broker this often, and the
    /// broker counts ferry gone after one and a half times as long without a word. Default
    /// `30s`.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Time limit for connecting (TCP, TLS and CONNACK), e.g. `10s`. Default `30s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
}

/// `tls:` of an `mqtt` connection.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities the broker's certificate must chain to.
    /// Default: the public authorities (webpki-roots).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// A checked `mqtt` connection.
#[derive(Clone)]
pub struct MqttConnection {
    /// The connection's name in `connections.yaml`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub(crate) credentials: Option<(String, String)>,
    /// The TLS client configuration, when the connection uses TLS.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
}

impl fmt::Debug for MqttConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConnection")
            .field("name", &self.name)
            .field("address", &self.shown())
            .finish_non_exhaustive()
    }
}

impl MqttConnection {
    /// Reads and checks `connection`'s keys; `ca_file` resolves against `project_dir`.
    pub fn read(connection: &Connection, project_dir: &Path) -> Result<Self, BuildError> {
        let config: MqttConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        if config.host.trim().is_empty() {
            return Err(BuildError::at("host", "must name the MQTT broker"));
        }
        let credentials = match (config.user, config.password) {
            (Some(user), password) => Some((user, password.unwrap_or_default())),
            (None, Some(_)) => {
                return Err(BuildError::at("password", "given without `user`"));
            }
            (None, None) => None,
        };
        let tls = match &config.tls {
            Some(tls) => {
                let ca_file = tls.ca_file.as_ref().map(|file| project_dir.join(file));
                let client = client_config(ca_file.as_deref())
                    .map_err(|message| BuildError::at("tls", message))?;
                Some(Arc::new(client))
            }
            None => None,
        };
        let keep_alive = match &config.keep_alive {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("keep_alive", e))?,
            None => Duration::from_secs(30),
        };
        if keep_alive < Duration::from_secs(5) {
            return Err(BuildError::at("keep_alive", "at least 5s"));
        }
        let connect_timeout = match &config.connect_timeout {
            Some(text) => {
                duration::parse(text).map_err(|e| BuildError::at("connect_timeout", e))?
            }
            None => Duration::from_secs(30),
        };
        Ok(MqttConnection {
            name: connection.name.clone(),
            port: config
                .port
                .unwrap_or(if tls.is_some() { 8883 } else { 1883 }),
            host: config.host,
            credentials,
            tls,
            keep_alive,
            connect_timeout,
        })
    }

    /// `mqtt://user@host:port` (or `mqtts://`), for messages: never the password.
    pub fn shown(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        let user = match &self.credentials {
            Some((user, _)) => format!("{user}@"),
            None => String::new(),
        };
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

/// A rustls client configuration trusting `ca_file`, or the public authorities.
fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let certificates = CertificateDer::pem_file_iter(file)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| format!("cannot read ca_file {}: {error}", file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!("ca_file {} holds no certificate", file.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS setup: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Configuration of the `mqtt` puller.
///
/// ```yaml
/// pullers:
///   - type: mqtt
///     connection: sensors
///     topics: ["plant/+/temperature"]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttPullerConfig {
    /// The `mqtt` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The topic filters to subscribe to, at QoS 1 (`+` and `#` wildcards allowed). Required.
    pub topics: Vec<String>,
    /// The MQTT client id, which names ferry's persistent session on the broker: messages
    /// arriving while ferry is away wait there for it. 1 to 23 characters of `0-9a-zA-Z-_`
    /// (what every broker accepts). Default `ferry-<client>-<pipeline>`, cut to 23 characters
    /// with a hash of the whole name at its end. Two pullers must never share one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How long a pull waits for the first message when none is waiting, e.g. `2s`. Default
    /// `500ms`.
    #[serde(default)]
    pub max_wait: Option<String>,
    /// The passengers' media type. Default `application/octet-stream` (MQTT 3.1.1 messages
    /// carry no content type).
    #[serde(default)]
    pub media_type: Option<String>,
    /// How a message's external id (the key the queue drops copies by) is made: `uuid` (the
    /// default: a fresh id per delivery, so a message redelivered after a crash travels twice)
    /// or `payload_hash` (the SHA-256 of topic and payload, so a redelivered copy is dropped;
    /// only for topics where two distinct messages never carry the same payload, e.g. each
    /// holds an id or a timestamp).
    #[serde(default)]
    pub external_id: Option<String>,
}

/// How the `mqtt` puller names a message (`external_id:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalId {
    Uuid,
    PayloadHash,
}

/// The checked settings of an `mqtt` puller.
#[derive(Clone, Debug)]
pub struct PullerSettings {
    pub topics: Vec<String>,
    pub client_id: String,
    pub max_wait: Duration,
    pub media_type: String,
    pub external_id: ExternalId,
}

impl PullerSettings {
    pub fn validate(config: &MqttPullerConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        if config.topics.is_empty() {
            return Err(BuildError::at("topics", "name at least one topic filter"));
        }
        for (index, topic) in config.topics.iter().enumerate() {
            if let Err(message) = check_filter(topic) {
                return Err(BuildError {
                    path: vec!["topics".into(), index.to_string()],
                    message,
                    within: None,
                });
            }
        }
        let client_id = match &config.client_id {
            Some(id) => {
                check_client_id(id).map_err(|message| BuildError::at("client_id", message))?;
                id.clone()
            }
            None => default_client_id(&ctx.client, &ctx.pipeline),
        };
        let max_wait = match &config.max_wait {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("max_wait", e))?,
            None => Duration::from_millis(500),
        };
        let external_id = match config.external_id.as_deref() {
            None | Some("uuid") => ExternalId::Uuid,
            Some("payload_hash") => ExternalId::PayloadHash,
            Some(other) => {
                return Err(BuildError::at(
                    "external_id",
                    format!("`{other}` is neither `uuid` nor `payload_hash`"),
                ));
            }
        };
        Ok(PullerSettings {
            external_id,
            topics: config.topics.clone(),
            client_id,
            max_wait,
            media_type: config
                .media_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
        })
    }
}

/// A subscription's topic filter: not empty, `#` only last and alone in its level, `+` alone in
/// its level.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("an empty topic filter".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (index, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || index + 1 != levels.len()) {
            return Err(format!(
                "`{filter}`: `#` stands alone as the last level (`a/#`)"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "`{filter}`: `+` stands alone in its level (`a/+/b`)"
            ));
        }
    }
    Ok(())
}

/// A client id every MQTT 3.1.1 broker must accept.
fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 23 {
        return Err(format!(
            "`{id}` has {} characters; MQTT 3.1.1 brokers need accept only 1 to 23",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{id}` holds `{bad}`; use letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

/// `ferry-<client>-<pipeline>`, made safe; when longer than 23 characters, its first 16 and a
/// hash of the whole name, so that two long pipeline names do not share a session.
pub(crate) fn default_client_id(client: &str, pipeline: &str) -> String {
    let safe: String = format!("ferry-{client}-{pipeline}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.len() <= 23 {
        return safe;
    }
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(format!("{client}\0{pipeline}").as_bytes());
    let hex: String = hash.iter().take(3).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", &safe[..16])
}

/// Configuration of the `mqtt` pusher.
///
/// ```yaml
/// pushers:
///   - type: mqtt
///     connection: sensors
///     topic: "plant/{metadata.plant}/alerts"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttPusherConfig {
    /// The `mqtt` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The topic to publish to, a template (`{metadata.KEY}`, `{client}`, …); it may not hold
    /// `+` or `#`. Required.
    pub topic: String,
    /// `true` publishes retained messages (the broker keeps the last one per topic for new
    /// subscribers). Default `false`.
    #[serde(default)]
    pub retain: bool,
    /// The largest payload published, e.g. `1MiB`; a larger one fails permanently. Default
    /// 256 MiB, MQTT's limit (a broker's `message_size_limit` may be lower).
    #[serde(default)]
    pub max_size: Option<Size>,
    /// How long a batch waits for the broker's PUBACKs, e.g. `30s`. Default `30s`; past it
    /// the unacknowledged messages fail retryably.
    #[serde(default)]
    pub ack_timeout: Option<String>,
}

/// The checked settings of an `mqtt` pusher.
#[derive(Clone, Debug)]
pub struct PusherSettings {
    pub topic: Template,
    pub retain: bool,
    pub max_size: usize,
    pub ack_timeout: Duration,
}

impl PusherSettings {
    pub fn validate(config: &MqttPusherConfig) -> Result<Self, BuildError> {
        let topic = Template::parse(&config.topic).map_err(|e| BuildError::at("topic", e))?;
        if config.topic.contains(['+', '#']) {
            return Err(BuildError::at(
                "topic",
                "a topic to publish to cannot hold the wildcards `+` or `#`",
            ));
        }
        let max_size = match &config.max_size {
            Some(size) => {
                let bytes = size.bytes().map_err(|e| BuildError::at("max_size", e))?;
                usize::try_from(bytes).unwrap_or(usize::MAX)
            }
            None => MQTT_MAX_PACKET,
        };
        if max_size == 0 || max_size > MQTT_MAX_PACKET {
            return Err(BuildError::at(
                "max_size",
                "between 1 byte and 256 MiB (MQTT's limit)",
            ));
        }
        let ack_timeout = match &config.ack_timeout {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("ack_timeout", e))?,
            None => Duration::from_secs(30),
        };
        Ok(PusherSettings {
            topic,
            retain: config.retain,
            max_size,
            ack_timeout,
        })
    }
}
