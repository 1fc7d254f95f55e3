//! The `mysql` connection type (also `mariadb`): a MySQL or MariaDB server, by URL or fields,
//! with TLS. MySQL's driver has no "TLS when offered", so `tls.mode` is `disable` (the default),
//! `require`, `verify-ca` or `verify-full`.
//!
//! ```yaml
//! erp:
//!   type: mariadb
//!   host: erp.local
//!   database: erp
//!   user: reader
//!   password: ${ERP_PASSWORD}
//!   tls: { mode: require }
//!   clients: [acme]
//! ```

use std::path::Path;

use ferry_core::BuildError;
use ferry_core::config::Connection;
use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use crate::sql::connection::Family;
use crate::sql::{ServerConfig, SqlConnection, TlsMode};

/// MySQL and MariaDB: the `mysql` connection type (also `mariadb`) and the `sql` puller's
/// reader (`reader.rs`).
pub(crate) struct Mysql;

impl Family for Mysql {
    const TYPE: &'static str = "mysql";
    const ALIASES: &'static [&'static str] = &["mariadb"];

    fn open(connection: &Connection, project_dir: &Path) -> Result<SqlConnection, BuildError> {
        let (url, tls) = ServerConfig::read(
            connection,
            &["mysql://", "mariadb://"],
            TlsMode::Disable,
            project_dir,
        )?;
        if tls.mode == TlsMode::Prefer {
            return Err(BuildError {
                path: vec!["tls".into(), "mode".into()],
                message: "MySQL connections have no `prefer`; choose `disable`, `require`, \
                          `verify-ca` or `verify-full`"
                    .into(),
                within: None,
            });
        }
        let connection = SqlConnection {
            name: connection.name.clone(),
            url: url.replacen("mariadb://", "mysql://", 1),
            tls,
            database: &Mysql,
        };
        opts(&connection).map_err(|error| BuildError::at("url", error))?;
        Ok(connection)
    }
}

/// The driver's options for `connection`: its URL and its TLS settings.
pub(crate) fn opts(connection: &SqlConnection) -> Result<Opts, String> {
    let opts = Opts::from_url(&connection.url)
        .map_err(|error| format!("not a valid MySQL URL: {error}"))?;
    let tls = &connection.tls;
    let ssl = match tls.mode {
        TlsMode::Disable | TlsMode::Prefer => None,
        mode => {
            let mut ssl = SslOpts::default()
                .with_danger_accept_invalid_certs(mode == TlsMode::Require)
                .with_danger_skip_domain_validation(mode != TlsMode::VerifyFull);
            if let Some(ca_file) = &tls.ca_file {
                ssl = ssl
                    .with_root_certs(vec![ca_file.clone().into()])
                    .with_disable_built_in_roots(true);
            }
            if let Some((cert, key)) = &tls.identity {
                ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                    cert.clone().into(),
                    key.clone().into(),
                )));
            }
            Some(ssl)
        }
    };
    Ok(OptsBuilder::from_opts(opts).ssl_opts(ssl).into())
}
