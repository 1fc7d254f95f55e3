//! The `sqlite` pusher's configuration, as written in a pipeline definition.

use serde::Deserialize;

/// Configuration of the `sqlite` pusher.
///
/// ```yaml
/// pushers:
///   - type: sqlite
///     connection: local
///     table: customers
///     mode: merge
///     keys: [id]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlitePusherConfig {
    /// The named connection (`connections.yaml`) of the target database file. Required.
    pub connection: String,
    /// The target table's name, taken as written (quoted in SQL); it may not contain `"` or `.`.
    /// Required.
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
    /// Every chunk's rows are upserted by `keys` (`INSERT … ON CONFLICT (keys) DO UPDATE`).
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
