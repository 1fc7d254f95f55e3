//! The `postgres` connection type: a PostgreSQL server, by URL or fields, with TLS
//! (`tls.mode` as libpq's `sslmode`, default `prefer`; a URL's own `sslmode=` counts when
//! `tls.mode` is not given).
//!
//! ```yaml
//! dwh:
//!   type: postgres
//!   url: postgres://ferry:${DWH_PASSWORD}@db:5432/dwh
//!   tls: { mode: verify-full, ca_file: certs/dwh-ca.pem }
//!   clients: [acme]
//! ```

use std::path::Path;

use ferry_core::BuildError;
use ferry_core::config::Connection;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::sql::connection::Family;
use crate::sql::{ServerConfig, SqlConnection, Tls, TlsMode};

/// PostgreSQL: the `postgres` connection type (also `postgresql`) and the `sql` puller's
/// reader (`reader.rs`).
pub(crate) struct Postgres;

impl Family for Postgres {
    const TYPE: &'static str = "postgres";
    const ALIASES: &'static [&'static str] = &["postgresql"];

    fn open(connection: &Connection, project_dir: &Path) -> Result<SqlConnection, BuildError> {
        let (url, mut tls) = ServerConfig::read(
            connection,
            &["postgres://", "postgresql://"],
            TlsMode::Prefer,
            project_dir,
        )?;
        let config: tokio_postgres::Config = url.parse().map_err(|error| {
            BuildError::at("url", format!("not a valid PostgreSQL URL: {error}"))
        })?;
        let mode_given = connection
            .config
            .get("tls")
            .and_then(|tls| tls.get("mode"))
            .is_some();
        if !mode_given && url.contains("sslmode=") {
            tls.mode = match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => TlsMode::Disable,
                tokio_postgres::config::SslMode::Require => TlsMode::Require,
                _ => TlsMode::Prefer,
            };
        }
        // Files that cannot be read fail now, with the key, rather than at the first connect.
        super::tls::connector(&tls).map_err(|message| BuildError {
            path: vec!["tls".into()],
            message,
            within: None,
        })?;
        Ok(SqlConnection {
            name: connection.name.clone(),
            url,
            tls,
            database: &Postgres,
        })
    }
}

/// Connects with `config` secured as `tls` says; the returned task drives the connection
/// until it ends or is aborted.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), ConnectError> {
    let connector = super::tls::connector(tls).map_err(ConnectError::Tls)?;
    let mut config = config.clone();
    config.ssl_mode(super::tls::ssl_mode(tls.mode));
    let (client, driver) = config
        .connect(connector)
        .await
        .map_err(ConnectError::Postgres)?;
    Ok((client, tokio::spawn(driver)))
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The TLS files could not be read (they were readable at validation).
    Tls(String),
    Postgres(tokio_postgres::Error),
}
