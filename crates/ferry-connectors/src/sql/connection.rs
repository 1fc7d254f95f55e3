//! What the SQL code shares across databases: a checked database connection
//! ([`SqlConnection`]), the small [`Database`] trait each database's folder implements, and the
//! `connections.yaml` keys of a database server ([`ServerConfig`]: a URL or the fields to make
//! one, and TLS).
//!
//! Each database's folder (`postgres/`, `mysql/`, `sqlite/`) implements [`Family`] (its
//! connection type's name, and how it turns a [`Connection`] into an [`SqlConnection`]) and
//! [`Database`] (check, read) on one unit struct; [`DatabaseConnectionFactory`] registers it.
//! The `sql` puller reads any of them through [`Database`], so it never names a database.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ferry_core::config::{Connection, redact_url};
use ferry_core::{BuildContext, BuildError, ConnectionFactory, StepError};
use serde::Deserialize;

use super::Job;

/// What the `sql` puller needs from a database.
#[async_trait]
pub(crate) trait Database: Send + Sync + 'static {
    /// Connects, runs a trivial query and describes the database in one line.
    async fn check(&self, connection: &SqlConnection) -> Result<String, StepError>;
    /// Runs one load: the job's query streamed into chunks sent to `job.sender`.
    async fn read(&self, job: &Job) -> Result<(), StepError>;
}

/// A database family as `connections.yaml` names it.
pub(crate) trait Family: Database + 'static {
    /// The connection type's name.
    const TYPE: &'static str;
    /// Other names accepted for it.
    const ALIASES: &'static [&'static str] = &[];
    /// Reads and checks the keys of `connection` (a relative file against `project_dir`).
    fn open(connection: &Connection, project_dir: &Path) -> Result<SqlConnection, BuildError>;
}

/// The connection type of the database family `D`.
pub(crate) struct DatabaseConnectionFactory<D>(PhantomData<fn() -> D>);

impl<D> DatabaseConnectionFactory<D> {
    pub(crate) fn new() -> Self {
        DatabaseConnectionFactory(PhantomData)
    }
}

#[async_trait]
impl<D: Family> ConnectionFactory for DatabaseConnectionFactory<D> {
    const TYPE: &'static str = D::TYPE;
    const ALIASES: &'static [&'static str] = D::ALIASES;
    type Config = SqlConnection;

    fn config(connection: &Connection, project_dir: &Path) -> Result<SqlConnection, BuildError> {
        D::open(connection, project_dir)
    }

    async fn check(connection: SqlConnection) -> Result<String, String> {
        super::check(&connection).await
    }
}

/// A database connection, checked: its name, where it is, and how to secure it.
#[derive(Clone)]
pub struct SqlConnection {
    pub name: String,
    /// `postgres://…`, `mysql://…` or, for SQLite, the database file's absolute path. May hold
    /// the password: print [`SqlConnection::redacted`].
    pub url: String,
    pub tls: Tls,
    pub(crate) database: &'static dyn Database,
}

impl SqlConnection {
    /// The URL with its password replaced by `***`, for messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for SqlConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConnection")
            .field("name", &self.name)
            .field("url", &self.redacted())
            .field("tls", &self.tls)
            .finish()
    }
}

/// The connection `name` that the component's `key` names, as a database connection: one the
/// client may use, of a type the SQL code reads.
pub(crate) fn connection(
    ctx: &BuildContext,
    key: &str,
    name: &str,
) -> Result<SqlConnection, BuildError> {
    let connection = ctx.connection(key, name)?;
    type Open = fn(&Connection, &Path) -> Result<SqlConnection, BuildError>;
    let families: &[(&str, Open)] = &[
        #[cfg(feature = "postgres")]
        (
            crate::postgres::Postgres::TYPE,
            crate::postgres::Postgres::open,
        ),
        #[cfg(feature = "mysql")]
        (crate::mysql::Mysql::TYPE, crate::mysql::Mysql::open),
        #[cfg(feature = "sqlite")]
        (crate::sqlite::Sqlite::TYPE, crate::sqlite::Sqlite::open),
    ];
    let Some((_, open)) = families.iter().find(|(kind, _)| *kind == connection.kind) else {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection, not a database; SQL reads \
                 postgres, mysql and sqlite connections",
                connection.kind
            ),
        ));
    };
    let opened = open(connection, &ctx.project_dir);
    // The connection was validated with the project; an error here is one of its own keys.
    opened.map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}

/// The connection `name` that a table pusher's `key` names, which must be of the family `D`:
/// the pusher loads one kind of database.
pub(crate) fn of_family<D: Family>(
    ctx: &BuildContext,
    key: &str,
    name: &str,
) -> Result<SqlConnection, BuildError> {
    let named = ctx.connection(key, name)?;
    if named.kind != D::TYPE {
        return Err(BuildError::at(
            key,
            format!(
                "connection `{name}` is a `{}` connection; this pusher loads `{}` connections",
                named.kind,
                D::TYPE
            ),
        ));
    }
    D::open(named, &ctx.project_dir)
        .map_err(|error| BuildError::at(key, format!("connection `{name}`: {error}")))
}

/// How a connection to a database server is secured (`tls:` of a connection), as libpq's
/// `sslmode` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Never.
    Disable,
    /// TLS when the server offers it, without checking its certificate (PostgreSQL's default,
    /// as libpq's).
    #[default]
    Prefer,
    /// TLS always, without checking the server's certificate.
    Require,
    /// TLS always; the server's certificate must be signed by `ca_file`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

/// `tls:` of a database server connection.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    #[serde(default)]
    pub mode: Option<TlsMode>,
    /// PEM file of the certificate authorities the server's certificate must chain to
    /// (relative to the project). Required by `verify-ca` and `verify-full`.
    pub ca_file: Option<String>,
    /// PEM file of the client certificate, for servers that authenticate clients by it.
    pub client_cert: Option<String>,
    /// PEM file of the client certificate's private key; required with `client_cert`.
    pub client_key: Option<String>,
}

/// The checked TLS settings of a connection, files resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub mode: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A database server connection in `connections.yaml`: a `url`, or the fields to make one,
/// and `tls`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The whole URL, e.g. `postgres://ferry:${PG_PASSWORD}@db:5432/dwh`.
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub tls: TlsConfig,
}

impl ServerConfig {
    /// The configuration of `connection`, its URL (with a scheme of `schemes`, the first one
    /// when made from fields) and its TLS settings, files resolved against `project_dir`.
    pub fn read(
        connection: &Connection,
        schemes: &[&str],
        default_tls: TlsMode,
        project_dir: &Path,
    ) -> Result<(String, Tls), BuildError> {
        let config: ServerConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        let url = config.url(schemes)?;
        let tls = config.tls.check(default_tls, project_dir)?;
        Ok((url, tls))
    }

    fn url(&self, schemes: &[&str]) -> Result<String, BuildError> {
        let fields = [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("database", self.database.is_some()),
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
        ];
        let given: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
        if let Some(url) = &self.url {
            if let Some(first) = given.first() {
                return Err(BuildError::at(
                    first,
                    "give either `url` or the fields (`host`, `port`, `database`, `user`, \
                     `password`), not both",
                ));
            }
            if !schemes.iter().any(|scheme| url.starts_with(scheme)) {
                return Err(BuildError::at(
                    "url",
                    format!("this url starts with `{}`", schemes[0]),
                ));
            }
            return Ok(url.clone());
        }
        let Some(host) = &self.host else {
            return Err(BuildError::new(
                "missing key `url` (or `host`, `database`, `user`…)",
            ));
        };
        let mut url = schemes[0].to_string();
        if let Some(user) = &self.user {
            url.push_str(&percent_encode(user));
            if let Some(password) = &self.password {
                url.push(':');
                url.push_str(&percent_encode(password));
            }
            url.push('@');
        }
        url.push_str(host);
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        if let Some(database) = &self.database {
            url.push('/');
            url.push_str(&percent_encode(database));
        }
        Ok(url)
    }
}

impl TlsConfig {
    /// The settings with the files resolved against `project_dir`; a `verify-*` mode needs a
    /// CA file, and a client certificate its key.
    fn check(&self, default: TlsMode, project_dir: &Path) -> Result<Tls, BuildError> {
        let mode = self.mode.unwrap_or(default);
        let file = |key: &str, written: &Option<String>| {
            written.as_ref().map(|written| {
                let path = project_dir.join(written);
                match path.is_file() {
                    true => Ok(path),
                    false => Err(tls_error(
                        key,
                        format!("no such file: {written} (relative to the project directory)"),
                    )),
                }
            })
        };
        let ca_file = file("ca_file", &self.ca_file).transpose()?;
        if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) && ca_file.is_none() {
            return Err(tls_error(
                "ca_file",
                "`verify-ca` and `verify-full` need `ca_file`: the PEM file of the certificate \
                 authorities that sign the server's certificate",
            ));
        }
        let identity = match (
            file("client_cert", &self.client_cert).transpose()?,
            file("client_key", &self.client_key).transpose()?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(tls_error(
                    "client_key",
                    "`client_cert` needs `client_key`: the PEM file of its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(tls_error("client_cert", "`client_key` needs `client_cert`"));
            }
        };
        if mode == TlsMode::Disable && (ca_file.is_some() || identity.is_some()) {
            return Err(tls_error(
                "mode",
                "TLS is disabled, but files for it are given; remove them or choose a mode",
            ));
        }
        Ok(Tls {
            mode,
            ca_file,
            identity,
        })
    }
}

/// An error about `tls.<key>`.
fn tls_error(key: &str, message: impl Into<String>) -> BuildError {
    BuildError {
        path: vec!["tls".into(), key.into()],
        message: message.into(),
        within: None,
    }
}

/// `text` with every byte but unreserved URL characters percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
