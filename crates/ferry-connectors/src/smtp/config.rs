//! The `smtp` connection's and pusher's configuration, as written in `connections.yaml` and in
//! a pipeline definition.

use serde::{Deserialize, Deserializer};

/// An `smtp` connection in `connections.yaml`.
///
/// ```yaml
/// mail:
///   type: smtp
///   host: smtp.example.com
///   tls: starttls
///   user: ferry@example.com
///   password: ${SMTP_PASSWORD}
///   from: "ferry <ferry@example.com>"
///   clients: [acme]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConnectionConfig {
    /// The server's host name or address. Required.
    pub host: Option<String>,
    /// The server's port. Default: 25 with `tls: none`, 587 with `starttls`, 465 with `tls`.
    pub port: Option<u16>,
    /// How the connection is secured: `none` (plain text, for a relay on the same host),
    /// `starttls` (plain text, then `STARTTLS` before anything else; the server must offer it)
    /// or `tls` (TLS from the first byte, "SMTPS"). Default `starttls`.
    #[serde(default)]
    pub tls: TlsMode,
    /// A PEM file of certificate authorities to trust besides the usual public ones (relative to
    /// the project directory), for a server with a private certificate. Default none.
    pub ca_file: Option<String>,
    /// The user to log in as (AUTH PLAIN or LOGIN). Default: no login.
    pub user: Option<String>,
    /// The password of `user`; write it as `${NAME}`. Never shown in messages.
    pub password: Option<String>,
    /// The sender of messages whose pusher gives no `from`, e.g. `ferry <ferry@example.com>`.
    /// Default none.
    pub from: Option<String>,
    /// How long connecting and each command may take, e.g. `30s` (the default).
    pub timeout: Option<String>,
}

/// `tls:` of an `smtp` connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text only.
    None,
    /// Plain text, upgraded with `STARTTLS`, which the server must offer.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }

    /// The port a server listens on for this mode by convention.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

/// Configuration of the `smtp` pusher: one e-mail per passenger.
///
/// ```yaml
/// pushers:
///   - type: smtp
///     connection: mail
///     to: ["orders@example.com", "{metadata.reply_to}"]
///     subject: "Order {external_id}"
///     body: "Order {external_id} from {metadata.customer} is attached."
///     attachments: passenger
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpPusherConfig {
    /// The name of an `smtp` connection in `connections.yaml`. Required.
    pub connection: String,
    /// Recipients: one address or a list, each a template (`{metadata.email}`), e.g.
    /// `"Ann <ann@example.com>"`. At least one of `to`, `cc`, `bcc` is required.
    #[serde(default, deserialize_with = "one_or_many")]
    pub to: Vec<String>,
    /// Copy recipients, as `to`. Default none.
    #[serde(default, deserialize_with = "one_or_many")]
    pub cc: Vec<String>,
    /// Blind copy recipients (in the envelope, not in the message), as `to`. Default none.
    #[serde(default, deserialize_with = "one_or_many")]
    pub bcc: Vec<String>,
    /// The sender, a template. Default: the connection's `from`.
    pub from: Option<String>,
    /// The subject, a template. Default `{external_id}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The text of the message, a template. Default: the passenger's body when it is text
    /// (HTML when its media type is `text/html`), else nothing (with `attachments: body`).
    pub body: Option<String>,
    /// What the message carries as attachments: `passenger` (the passenger's attachments, with
    /// their names and media types), `body` (the passenger's body, named by `attachment_name`)
    /// or `none`. Default `passenger`.
    #[serde(default)]
    pub attachments: Attachments,
    /// With `attachments: body`: the attachment's file name, a template. Default
    /// `{external_id}`.
    #[serde(default = "default_attachment_name")]
    pub attachment_name: String,
}

/// `attachments:` of the `smtp` pusher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attachments {
    /// The passenger's attachments.
    #[default]
    Passenger,
    /// The passenger's body as one attachment.
    Body,
    /// None: the message is its text alone.
    None,
}

fn default_subject() -> String {
    "{external_id}".into()
}

fn default_attachment_name() -> String {
    "{external_id}".into()
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(deserializer) {
        Ok(OneOrMany::One(one)) => Ok(vec![one]),
        Ok(OneOrMany::Many(many)) => Ok(many),
        Err(_) => Err(serde::de::Error::custom(
            "expected an address or a list of addresses",
        )),
    }
}
