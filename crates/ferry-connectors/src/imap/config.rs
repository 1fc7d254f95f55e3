//! The `imap` connection (in `connections.yaml`) and the `imap` puller's settings (in a
//! pipeline), as written and as checked.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_core::config::Connection;

use crate::oauth::{OAuthConfig, TokenSource};
use ferry_core::size::Size;
use ferry_core::{BuildError, duration};
use serde::Deserialize;

/// An IMAP server in `connections.yaml`.
///
/// ```yaml
/// orders-mailbox:
///   type: imap
///   host: imap.example.com
///   user: orders@example.com
///   password: ${IMAP_PASSWORD}
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConnectionConfig {
    /// The server's host name. Required.
    pub host: String,
    /// Default 993 with `security: tls`, else 143.
    #[serde(default)]
    pub port: Option<u16>,
    /// `tls` (the default: TLS from the first byte), `starttls` (plain, then upgraded before
    /// logging in) or `none` (plain text; only for a server on the same machine).
    #[serde(default)]
    pub security: Security,
    /// PEM file of the certificate authorities the server's certificate must chain to
    /// (relative to the project). Default: the public authorities (webpki-roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The login name. Required.
    pub user: String,
    /// The password. Never logged or shown. Either this or `oauth2`.
    #[serde(default)]
    pub password: Option<String>,
    /// XOAUTH2 (Microsoft 365, Gmail): where the access tokens come from, `{ token_url,
    /// client_id, client_secret, scopes, refresh_token }`; the refresh-token grant when a
    /// `refresh_token` is given, else client credentials. Either this or `password`.
    #[serde(default)]
    pub oauth2: Option<OAuthConfig>,
    /// Time limit for connecting and for each command, e.g. `30s`. Default `60s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// How the connection to the server is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    #[default]
    Tls,
    Starttls,
    None,
}

/// A checked IMAP connection.
#[derive(Clone)]
pub struct ImapConnection {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    pub user: String,
    pub(crate) login: Login,
    pub timeout: Duration,
}

/// How the puller logs in.
#[derive(Clone)]
pub(crate) enum Login {
    Password(String),
    /// XOAUTH2 with tokens from this source (shared by every session of the connection).
    OAuth(TokenSource),
}

impl fmt::Debug for ImapConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapConnection")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ImapConnection {
    /// Reads and checks `connection`'s keys; files resolve against `project_dir`.
    pub fn read(connection: &Connection, project_dir: &Path) -> Result<Self, BuildError> {
        let config: ImapConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        if config.host.trim().is_empty() {
            return Err(BuildError::at("host", "must name the IMAP server"));
        }
        if config.user.trim().is_empty() {
            return Err(BuildError::at("user", "must name the login"));
        }
        let login = match (config.password, config.oauth2) {
            (Some(password), None) => Login::Password(password),
            (None, Some(oauth)) => {
                oauth.validate().map_err(|mut error| {
                    error.path.insert(0, "oauth2".into());
                    error
                })?;
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| BuildError::at("oauth2", e.to_string()))?;
                Login::OAuth(TokenSource::new(oauth, client))
            }
            (Some(_), Some(_)) => {
                return Err(BuildError::at(
                    "oauth2",
                    "give `password` or `oauth2`, not both",
                ));
            }
            (None, None) => {
                return Err(BuildError::at(
                    "password",
                    "required (or `oauth2` for XOAUTH2); write it as `${VARIABLE}` so it stays \
                     out of the project",
                ));
            }
        };
        let timeout = match &config.timeout {
            Some(text) => duration::parse(text).map_err(|e| BuildError::at("timeout", e))?,
            None => Duration::from_secs(60),
        };
        let ca_file = config.ca_file.map(|file| project_dir.join(file));
        if let Some(file) = &ca_file {
            super::session::roots(Some(file)).map_err(|e| BuildError::at("ca_file", e))?;
        }
        let port = config.port.unwrap_or(match config.security {
            Security::Tls => 993,
            _ => 143,
        });
        Ok(ImapConnection {
            name: connection.name.clone(),
            host: config.host,
            port,
            security: config.security,
            ca_file,
            user: config.user,
            login,
            timeout,
        })
    }

    /// `user@host:port`, for messages.
    pub fn shown(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Configuration of the `imap` puller.
///
/// ```yaml
/// pullers:
///   - type: imap
///     connection: orders-mailbox
///     mailboxes: [INBOX]
///     search: UNSEEN FROM "@partner.example"
///     after_seat: { move_to: Archive }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapPullerConfig {
    /// The `imap` connection in `connections.yaml`. Required.
    pub connection: String,
    /// The mailboxes (folders) to read, in order. Default `[INBOX]`.
    #[serde(default)]
    pub mailboxes: Option<Vec<String>>,
    /// IMAP SEARCH criteria the messages must meet, e.g. `UNSEEN`, `FROM "@partner.example"`,
    /// `SINCE 1-Dec-2026`. Default `ALL`.
    #[serde(default)]
    pub search: Option<String>,
    /// What happens to a message once it is seated: `keep` (the default), `delete`,
    /// `{ move_to: FOLDER }`, `{ flag: FLAG }` (`SEEN`, `FLAGGED`, `ANSWERED`, `DRAFT` or a
    /// keyword) or both, `{ flag: SEEN, move_to: Archive }` (flagged, then moved).
    #[serde(default)]
    pub after_seat: Option<AfterSeatConfig>,
    /// How long a pull that found nothing waits in IMAP IDLE for new mail on the first
    /// mailbox, e.g. `30s`; `false` polls on the pipeline's schedule only. Default `30s` when
    /// the server offers IDLE.
    #[serde(default)]
    pub idle: Option<IdleConfig>,
    /// The largest message pulled, e.g. `25MiB` or `10MB`; a larger one fails alone,
    /// permanently, with its size. Default `25MiB`.
    #[serde(default)]
    pub max_size: Option<Size>,
}

/// `after_seat:` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AfterSeatConfig {
    Word(String),
    Map(AfterSeatMap),
}

/// `after_seat: { flag: …, move_to: … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterSeatMap {
    #[serde(default)]
    pub flag: Option<String>,
    #[serde(default)]
    pub move_to: Option<String>,
}

/// `idle:` as written: a duration or `false`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum IdleConfig {
    Off(bool),
    Wait(String),
}

/// What happens to a seated message: flagged, then kept, deleted or moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AfterSeat {
    /// A system flag with its backslash (`\Seen`) or a keyword.
    pub flag: Option<String>,
    pub then: Then,
}

/// Where a seated message goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Then {
    #[default]
    Keep,
    Delete,
    Move(String),
}

/// The checked settings of an `imap` puller.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mailboxes: Vec<String>,
    pub search: String,
    pub after_seat: AfterSeat,
    pub idle: Option<Duration>,
    pub max_size: u64,
}

/// The default largest message: 25 MiB.
const DEFAULT_MAX_SIZE: u64 = 25 * 1024 * 1024;

/// The longest IDLE wait: a pull may not take longer than the engine allows (5 minutes).
const MAX_IDLE: Duration = Duration::from_secs(240);

impl Settings {
    pub fn validate(config: &ImapPullerConfig) -> Result<Settings, BuildError> {
        let mailboxes = config
            .mailboxes
            .clone()
            .unwrap_or_else(|| vec!["INBOX".into()]);
        if mailboxes.is_empty() {
            return Err(BuildError::at("mailboxes", "name at least one mailbox"));
        }
        for (index, mailbox) in mailboxes.iter().enumerate() {
            mailbox_name(mailbox).map_err(|e| nested(&["mailboxes", &index.to_string()], e))?;
        }
        let search = config.search.clone().unwrap_or_else(|| "ALL".into());
        if search.trim().is_empty() || search.chars().any(|c| c.is_control()) {
            return Err(BuildError::at(
                "search",
                "must be IMAP SEARCH criteria on one line, e.g. `UNSEEN` or `FROM \"@example.com\"`",
            ));
        }
        let after_seat = match &config.after_seat {
            None => AfterSeat::default(),
            Some(AfterSeatConfig::Word(word)) => AfterSeat {
                flag: None,
                then: match word.as_str() {
                    "keep" => Then::Keep,
                    "delete" => Then::Delete,
                    other => {
                        return Err(BuildError::at(
                            "after_seat",
                            format!(
                                "unknown `{other}`; write `keep`, `delete`, `{{ move_to: FOLDER \
                                 }}`, `{{ flag: SEEN }}` or both"
                            ),
                        ));
                    }
                },
            },
            Some(AfterSeatConfig::Map(map)) => {
                let flag = map.flag.as_deref().map(flag_name).transpose()?;
                let then = match &map.move_to {
                    Some(folder) => {
                        mailbox_name(folder).map_err(|e| nested(&["after_seat", "move_to"], e))?;
                        if mailboxes.contains(folder) {
                            return Err(nested(
                                &["after_seat", "move_to"],
                                format!("`{folder}` is one of the mailboxes read; move to another"),
                            ));
                        }
                        Then::Move(folder.clone())
                    }
                    None if flag.is_none() => {
                        return Err(BuildError::at(
                            "after_seat",
                            "give `flag`, `move_to` or both",
                        ));
                    }
                    None => Then::Keep,
                };
                AfterSeat { flag, then }
            }
        };
        let idle = match &config.idle {
            None => Some(Duration::from_secs(30)),
            Some(IdleConfig::Off(false)) => None,
            Some(IdleConfig::Off(true)) => Some(Duration::from_secs(30)),
            Some(IdleConfig::Wait(text)) => {
                let wait = duration::parse(text).map_err(|e| BuildError::at("idle", e))?;
                if wait.is_zero() || wait > MAX_IDLE {
                    return Err(BuildError::at(
                        "idle",
                        "must be more than 0s and at most 4m (a pull may last 5 minutes)",
                    ));
                }
                Some(wait)
            }
        };
        let max_size = match &config.max_size {
            Some(size) => match size.bytes() {
                Ok(0) => return Err(BuildError::at("max_size", "must be above 0")),
                Ok(bytes) => bytes,
                Err(error) => return Err(BuildError::at("max_size", error)),
            },
            None => DEFAULT_MAX_SIZE,
        };
        Ok(Settings {
            mailboxes,
            search,
            after_seat,
            idle,
            max_size,
        })
    }
}

/// An error at a nested key, e.g. `after_seat` → `move_to`.
fn nested(path: &[&str], message: impl Into<String>) -> BuildError {
    BuildError {
        path: path.iter().map(|key| key.to_string()).collect(),
        message: message.into(),
        within: None,
    }
}

fn mailbox_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c == '"') {
        return Err(format!(
            "`{}` is not a mailbox name (empty, a quote or a control character)",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// `SEEN` → `\Seen`; a keyword stays as written.
fn flag_name(flag: &str) -> Result<String, BuildError> {
    let system = ["seen", "flagged", "answered", "draft"];
    let bare = flag.trim_start_matches('\\');
    if let Some(name) = system.iter().find(|name| name.eq_ignore_ascii_case(bare)) {
        let mut chars = name.chars();
        let first = chars.next().unwrap_or_default().to_ascii_uppercase();
        return Ok(format!("\\{first}{}", chars.as_str()));
    }
    if flag.is_empty()
        || flag.starts_with('\\')
        || !flag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "$_-.".contains(c))
    {
        return Err(nested(
            &["after_seat", "flag"],
            format!(
                "`{}` is not a flag: write SEEN, FLAGGED, ANSWERED, DRAFT or a keyword of \
                 letters and digits",
                flag.escape_debug()
            ),
        ));
    }
    Ok(flag.to_string())
}
