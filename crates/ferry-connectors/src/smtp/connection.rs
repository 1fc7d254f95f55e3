//! The `smtp` connection type: a mail server that ferry sends through, checked as
//! `docs/connector-spec.md` says (ok with a description, or the reason without the password).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};
use lettre::Tokio1Executor;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};

use super::config::{SmtpConnectionConfig, TlsMode};

/// How long connecting and each command may take when the connection does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection type's name in `connections.yaml`.
pub const TYPE: &str = "smtp";

/// Registers the `smtp` connection type.
pub struct SmtpConnectionFactory;

#[async_trait]
impl ConnectionFactory for SmtpConnectionFactory {
    const TYPE: &'static str = TYPE;
    type Config = SmtpConnection;

    fn config(connection: &Connection, project_dir: &Path) -> Result<SmtpConnection, BuildError> {
        SmtpConnection::read(connection, project_dir)
    }

    async fn check(connection: SmtpConnection) -> Result<String, String> {
        connection.check().await
    }
}

/// An `smtp` connection, checked. `Debug` leaves the password out.
#[derive(Clone)]
pub struct SmtpConnection {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// The PEM certificates of `ca_file`, read when the connection was checked.
    ca: Option<Vec<u8>>,
    pub user: Option<String>,
    password: Option<String>,
    /// The default sender.
    pub from: Option<Mailbox>,
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConnection")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl SmtpConnection {
    /// Reads and checks the keys of `connection`; `ca_file` resolves against `project_dir`.
    pub fn read(connection: &Connection, project_dir: &Path) -> Result<SmtpConnection, BuildError> {
        let config: SmtpConnectionConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        let host = match config.host {
            Some(host) if !host.trim().is_empty() => host.trim().to_string(),
            Some(_) => return Err(BuildError::at("host", "empty host")),
            None => return Err(BuildError::new("missing key `host`: the mail server")),
        };
        let port = match config.port {
            Some(0) => return Err(BuildError::at("port", "port 0 is not a server's port")),
            Some(port) => port,
            None => config.tls.default_port(),
        };
        let ca = match &config.ca_file {
            Some(written) => {
                if config.tls == TlsMode::None {
                    return Err(BuildError::at(
                        "ca_file",
                        "`tls: none` uses no certificates; remove `ca_file` or choose \
                         `starttls` or `tls`",
                    ));
                }
                let path = project_dir.join(written);
                let pem = std::fs::read(&path).map_err(|error| {
                    BuildError::at(
                        "ca_file",
                        format!(
                            "cannot read {written} (relative to the project directory): {error}"
                        ),
                    )
                })?;
                Certificate::from_pem(&pem).map_err(|error| {
                    BuildError::at(
                        "ca_file",
                        format!("{written} is not a PEM certificate: {error}"),
                    )
                })?;
                Some(pem)
            }
            None => None,
        };
        if config.password.is_some() && config.user.is_none() {
            return Err(BuildError::at("password", "a `password` needs a `user`"));
        }
        let from = match &config.from {
            Some(from) => Some(from.parse::<Mailbox>().map_err(|error| {
                BuildError::at("from", format!("not an e-mail address `{from}`: {error}"))
            })?),
            None => None,
        };
        let timeout = match &config.timeout {
            Some(text) => {
                let timeout =
                    ferry_core::duration::parse(text).map_err(|m| BuildError::at("timeout", m))?;
                if timeout.is_zero() {
                    return Err(BuildError::at("timeout", "must be longer than 0s"));
                }
                timeout
            }
            None => DEFAULT_TIMEOUT,
        };
        Ok(SmtpConnection {
            name: connection.name.clone(),
            host,
            port,
            tls: config.tls,
            ca,
            user: config.user,
            password: config.password,
            from,
            timeout,
        })
    }

    /// `host:port`, how messages name the server.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A transport keeping at most `connections` connections open, so that the messages of one
    /// push call share a connection. Builds without connecting; needs a Tokio runtime.
    pub fn transport(
        &self,
        connections: u32,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, StepError> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(self.timeout))
            .pool_config(PoolConfig::new().max_size(connections.max(1)));
        if self.tls != TlsMode::None {
            let mut parameters = TlsParameters::builder(self.host.clone());
            if let Some(pem) = &self.ca {
                // Checked when the connection was read.
                let certificate = Certificate::from_pem(pem).map_err(|error| {
                    StepError::permanent(format!("{}: ca_file: {error}", self.describe()))
                })?;
                parameters = parameters.add_root_certificate(certificate);
            }
            let parameters = parameters.build_rustls().map_err(|error| {
                StepError::permanent(format!("{}: TLS: {error}", self.describe()))
            })?;
            builder = builder.tls(match self.tls {
                TlsMode::Starttls => Tls::Required(parameters),
                _ => Tls::Wrapper(parameters),
            });
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        } else if let Some(user) = &self.user {
            builder = builder.credentials(Credentials::new(user.clone(), String::new()));
        }
        Ok(builder.build())
    }

    /// `connection `name` (smtp server host:port)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "connection `{}` (smtp server {})",
            self.name,
            self.address()
        )
    }

    /// Connects, secures and logs in as configured, and says so in one line.
    pub async fn check(&self) -> Result<String, String> {
        let transport = self.transport(1).map_err(|error| error.message)?;
        match transport.test_connection().await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{}: the server did not answer NOOP",
                    self.describe()
                ));
            }
            Err(error) => return Err(classify(self, &error).message),
        }
        let login = match &self.user {
            Some(user) => format!(", logged in as {user}"),
            None => String::new(),
        };
        Ok(format!(
            "SMTP server {} (tls: {}{login})",
            self.address(),
            self.tls.as_str()
        ))
    }
}

/// A lettre error as a step error: a 4xx reply, a timeout or a network failure is retryable, a
/// 5xx reply (a refused login included, as `docs/connector-spec.md` says) permanent, each with
/// the server's reply text and the server's address (never the password: lettre's messages do
/// not hold it).
pub(crate) fn classify(
    connection: &SmtpConnection,
    error: &lettre::transport::smtp::Error,
) -> StepError {
    let message = format!("{}: {}", connection.describe(), describe_error(error));
    match error.is_permanent() {
        true => StepError::permanent(message),
        false => StepError::retryable(message),
    }
}

/// The error with its whole chain of causes, one after the other.
fn describe_error(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// The connection `name` that a component's `key` names, as an `smtp` connection.
pub fn of_context(ctx: &BuildContext, key: &str, name: &str) -> Result<SmtpConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; this needs an `smtp` connection",
                named.kind
            ),
        ));
    }
    SmtpConnection::read(named, &ctx.project_dir)
        .map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}
