//! The configuration of the `mysql` and `sqlite` pushers, as written in a pipeline definition:
//! the same keys for both.

use serde::Deserialize;

/// Configuration of the `mysql` (MySQL and MariaDB) and `sqlite` pushers.
///
/// ```yaml
/// pushers:
///   - type: mysql
///     connection: shop
///     table: staging.customers
///     mode: merge
///     keys: [id]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePusherConfig {
    /// The named connection (`connections.yaml`) of the target server or database file.
    /// Required.
    pub connection: String,
    /// The target table, taken as written (quoted in SQL). MySQL: `database.table`, or `table`
    /// in the connection's database; names may not contain `` ` ``, `.`, `/` or `\`. SQLite: the
    /// table's name, without `"` or `.`. Required.
    pub table: String,
    /// How a load changes the table: `append` or `merge`. Required, since either choice would
    /// lose data for someone if it were a default.
    pub mode: Mode,
    /// Key columns. Required for `merge` (the upsert key); optional for `append`. They become
    /// the primary key of a table the pusher creates. Default: none.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Whether a missing table is created from the batch's columns. With `false` a missing
    /// table is held until someone creates it. Default `true`.
    #[serde(default = "default_true")]
    pub create: bool,
}

fn default_true() -> bool {
    true
}

/// How a load changes the target table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every chunk's rows are added to the table.
    Append,
    /// Every chunk's rows are upserted by `keys` (MySQL `INSERT … ON DUPLICATE KEY UPDATE`,
    /// SQLite `INSERT … ON CONFLICT (keys) DO UPDATE`).
    Merge,
}

impl Mode {
    /// The name used in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Merge => "merge",
        }
    }
}
