//! The `postgres` pusher's configuration, as written in a pipeline definition.

use serde::Deserialize;

/// Configuration of the `postgres` pusher.
///
/// ```yaml
/// pushers:
///   - type: postgres
///     connection: dwh
///     table: staging.customers
///     mode: merge
///     keys: [id]
///     before: [prepare.sql]
///     after: [refresh.sql]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresPusherConfig {
    /// The named connection (`connections.yaml`) of the target database. Required.
    pub connection: String,
    /// The target table: `schema.table`, or `table` for a table in `public`. Names are taken
    /// as written (case-sensitive, quoted in SQL) and may not contain `"`. Required.
    pub table: String,
    /// How a load changes the table: `append`, `replace`, `merge` or `history`. Required, since
    /// every choice would lose data for someone if it were a default.
    pub mode: Mode,
    /// Key columns. Required for `merge` (the upsert key) and `history` (the business key);
    /// optional for `append` and `replace`. They become the primary key of a table the pusher
    /// creates, and fill the `{key_columns}` placeholder. Default: none.
    #[serde(default)]
    pub keys: Vec<String>,
    /// SQL files run in the transaction of a load's first chunk, before its rows; paths
    /// relative to `clients/<client>/sql/`. Default: none.
    #[serde(default)]
    pub before: Vec<String>,
    /// SQL files run in the transaction that completes a load, after its rows (after the swap
    /// for `replace`, after the new versions for `history`); paths relative to
    /// `clients/<client>/sql/`. Default: none.
    #[serde(default)]
    pub after: Vec<String>,
}

/// How a load changes the target table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every chunk's rows are added to the table.
    Append,
    /// A load is the table's whole new content: staged in a shadow table, swapped in when the
    /// load is complete (and only if the content changed).
    Replace,
    /// Every chunk's rows are upserted by `keys`.
    Merge,
    /// A load is the source's whole current state, kept as SCD type 2 history in the table
    /// (`valid_from`, `valid_to`, `is_current`, `key_hash`, `data_hash`).
    History,
}

impl Mode {
    /// The name used in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Replace => "replace",
            Mode::Merge => "merge",
            Mode::History => "history",
        }
    }

    /// Whether chunks are staged and applied only when the whole load is there.
    pub fn stages(self) -> bool {
        matches!(self, Mode::Replace | Mode::History)
    }
}
