//! The `sqlite` connection type: a database file, relative to the project directory.
//!
//! ```yaml
//! local:
//!   type: sqlite
//!   path: data/source.db        # or url: sqlite://data/source.db
//!   clients: [acme]
//! ```

use std::path::Path;

use ferry_core::BuildError;
use ferry_core::config::Connection;
use serde::Deserialize;

use crate::sql::connection::Family;
use crate::sql::{SqlConnection, Tls, TlsMode};

/// SQLite: the `sqlite` connection type and the `sql` puller's reader (`reader.rs`).
pub(crate) struct Sqlite;

/// `connections.yaml` keys of a SQLite connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqliteConfig {
    /// The database file, relative to the project directory.
    path: Option<String>,
    /// `sqlite://` and the file, as an alternative to `path`.
    url: Option<String>,
}

impl Family for Sqlite {
    const TYPE: &'static str = "sqlite";

    fn open(connection: &Connection, project_dir: &Path) -> Result<SqlConnection, BuildError> {
        let config: SqliteConfig = ferry_core::component::parse_config(
            &serde_json::Value::Object(connection.config.clone()),
        )?;
        let file = match (config.path, config.url) {
            (Some(path), None) => path,
            (None, Some(url)) => match url.strip_prefix("sqlite://") {
                Some(file) => file.to_string(),
                None => {
                    return Err(BuildError::at(
                        "url",
                        "a SQLite url starts with `sqlite://`",
                    ));
                }
            },
            (Some(_), Some(_)) => {
                return Err(BuildError::at(
                    "url",
                    "give either `path` or `url`, not both",
                ));
            }
            (None, None) => {
                return Err(BuildError::new(
                    "a SQLite connection needs `path`: the database file, relative to the \
                     project",
                ));
            }
        };
        Ok(SqlConnection {
            name: connection.name.clone(),
            url: project_dir.join(file).to_string_lossy().into_owned(),
            tls: Tls {
                mode: TlsMode::Disable,
                ..Tls::default()
            },
            database: &Sqlite,
        })
    }
}
