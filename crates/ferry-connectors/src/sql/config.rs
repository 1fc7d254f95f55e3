//! The `sql` puller's configuration, as written in a pipeline definition.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Configuration of the `sql` puller.
///
/// ```yaml
/// pullers:
///   - type: sql
///     connection: erp
///     query: SELECT id, name, amount, updated_at FROM customers
///     chunk_rows: 10000
///     cursor: updated_at
///     start: "2024-01-01"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlPullerConfig {
    /// The name of a connection in `connections.yaml` (PostgreSQL, MySQL/MariaDB or SQLite).
    /// Required.
    pub connection: String,
    /// The query whose result is pulled, in the connection's SQL dialect. A trailing `;` is
    /// ignored. Give either `query` or `file`.
    #[serde(default)]
    pub query: Option<String>,
    /// A `.sql` file holding the query, relative to `clients/<client>/sql/` (no absolute path,
    /// no `..`). Read when the definition is validated, so a missing file is reported then.
    /// Give either `query` or `file`.
    #[serde(default)]
    pub file: Option<String>,
    /// Rows per passenger (each passenger carries one chunk of the result as a record batch).
    /// From 1 to 1,000,000; default 10,000. In incremental mode a chunk can hold more rows
    /// than this: rows sharing one cursor value are never split between chunks.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// A column of the query's result that only grows (`updated_at`, an id): each run then
    /// pulls only the rows whose value is greater than the last one seated, in its order, as
    /// `SELECT * FROM (<query>) AS ferry_q WHERE <cursor> > <last> ORDER BY <cursor>` (an index
    /// on the column keeps that fast). Rows whose cursor value is NULL are never pulled in this
    /// mode. Default: none, every run pulls the whole result (a full load).
    #[serde(default)]
    pub cursor: Option<String>,
    /// With `cursor`: the value to start after before anything was seated, in the database's
    /// text form for the column's type (`"2024-01-01"`, `1000`). Default: from the first row.
    #[serde(default, deserialize_with = "scalar_as_string")]
    pub start: Option<String>,
}

fn default_chunk_rows() -> usize {
    ferry_core::records::DEFAULT_CHUNK_ROWS
}

/// Reads a string, a number or a boolean as text, so that `start: 1000` works like
/// `start: "1000"`.
fn scalar_as_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Option<String>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a cursor value (a string or a number)")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(Visitor)
}
