//! What the table pushers share: the checks of `keys`, the value a bad row holds, for
//! messages, and a passenger read as a chunk of a load.

#[cfg(any(feature = "mysql", feature = "sqlite"))]
mod config;
#[cfg(test)]
pub(crate) mod testing;

use ferry_core::BuildError;
use ferry_core::records;

/// The longest value quoted in a message; longer ones are cut with `…`.
const SHOWN_VALUE: usize = 100;

pub(crate) use chunk::ChunkLoad;
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub use config::{Mode, TablePusherConfig};

mod chunk {
    use ferry_core::records::{self, Batch, Chunk};
    use ferry_core::{Passenger, StepError};

    use super::{field, shown};

    /// A chunk on its way into a table.
    pub(crate) struct ChunkLoad<'a> {
        pub passenger: &'a Passenger,
        pub batch: Batch,
        /// The load's id (the passenger's id for a passenger that is not part of a load).
        pub load: String,
        /// The chunk's number, from 1.
        pub number: i64,
        pub last: bool,
        /// The series of a load that supersedes older ones ([`records::SERIES`]).
        pub series: Option<String>,
    }

    impl<'a> ChunkLoad<'a> {
        /// The passenger's batch and place in its load; errors are the passenger's fault (a body
        /// that is not a batch, a column twice, a key column missing), so permanent. `target`
        /// names the table in messages.
        pub fn read(
            passenger: &'a Passenger,
            target: &str,
            keys: &[String],
        ) -> Result<ChunkLoad<'a>, StepError> {
            let batch = records::read(&passenger.body)
                .map_err(|message| StepError::permanent(format!("{target}: {message}")))?;
            let chunk = Chunk::of(passenger).unwrap_or_else(|| Chunk {
                load: passenger.id.to_string(),
                number: 1,
                last: true,
            });
            let number = match i64::try_from(chunk.number) {
                Ok(number) if number >= 1 => number,
                _ => {
                    return Err(StepError::permanent(format!(
                        "{target}: chunk number {} of load {} is not between 1 and 2^63",
                        chunk.number, chunk.load
                    )));
                }
            };
            if batch.columns.is_empty() {
                return Err(StepError::permanent(format!(
                    "{target}: the record batch has no columns"
                )));
            }
            for (index, column) in batch.columns.iter().enumerate() {
                if batch.columns[..index].iter().any(|c| c.name == column.name) {
                    return Err(StepError::permanent(format!(
                        "{target}: the record batch has column `{}` twice",
                        column.name
                    )));
                }
            }
            for key in keys {
                if !batch.columns.iter().any(|c| &c.name == key) {
                    let names: Vec<&str> = batch.columns.iter().map(|c| c.name.as_str()).collect();
                    return Err(StepError::permanent(format!(
                        "{target}: key column `{key}` is not in the batch (its columns: {})",
                        names.join(", ")
                    )));
                }
            }
            Ok(ChunkLoad {
                passenger,
                batch,
                load: chunk.load,
                number,
                last: chunk.last,
                series: passenger.metadata.get(records::SERIES).cloned(),
            })
        }

        /// `chunk 2 of load 0193…`, for messages.
        pub fn describe(&self) -> String {
            format!("chunk {} of load {}", self.number, self.load)
        }

        /// The batch's column names, in order.
        pub fn names(&self) -> impl Iterator<Item = &str> {
            self.batch.columns.iter().map(|c| c.name.as_str())
        }

        /// `row 3, column `amount`, value `123.456``: where a value that does not fit is, for
        /// messages. `row` counts from 1 within the chunk; the value is shown unescaped and cut to
        /// a bounded length.
        pub fn place(&self, row: usize, column: &str) -> String {
            let Some(index) = self.batch.columns.iter().position(|c| c.name == column) else {
                return format!("row {row}, column `{column}`");
            };
            let value = match field(&self.batch.data, row, index) {
                Some(Some(value)) => format!("`{}`", shown(&value)),
                Some(None) => "NULL".to_string(),
                None => return format!("row {row}, column `{column}`"),
            };
            format!("row {row}, column `{column}`, value {value}")
        }
    }
}

/// A table pusher that loads a batch in groups of chunks, one transaction each, carrying one
/// connection from group to group (`postgres`, `mysql`).
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[async_trait::async_trait]
pub(crate) trait GroupLoader: Sync {
    type Connection: Send;
    /// An idle connection, or a new one.
    async fn connection(&self) -> Result<Self::Connection, ferry_core::StepError>;
    /// Loads one group in one transaction; the connection comes back unless it broke.
    async fn load_group(
        &self,
        connection: Self::Connection,
        group: &[&ferry_core::Passenger],
    ) -> (
        Option<Self::Connection>,
        Vec<Result<(), ferry_core::StepError>>,
    );
    /// Keeps a connection for the next push.
    fn release(&self, connection: Self::Connection);
}

/// Pushes `passengers` in groups of `per_group`, one result per passenger in order. A database
/// that cannot be reached fails the rest of the batch at once, without waiting for a connect
/// timeout per group. `target` names the table in the log.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn push_in_groups<L: GroupLoader>(
    loader: &L,
    passengers: &[&ferry_core::Passenger],
    per_group: usize,
    (pipeline, component, target): (&str, &str, &str),
) -> Vec<Result<(), ferry_core::StepError>> {
    let mut results = Vec::with_capacity(passengers.len());
    let mut connection = None;
    for group in passengers.chunks(per_group) {
        let current = match connection.take() {
            Some(current) => current,
            None => match loader.connection().await {
                Ok(current) => current,
                Err(error) => {
                    results.resize(passengers.len(), Err(error));
                    break;
                }
            },
        };
        let (current, group_results) = loader.load_group(current, group).await;
        results.extend(group_results);
        connection = current;
    }
    if let Some(connection) = connection {
        loader.release(connection);
    }
    let failed = results.iter().filter(|r| r.is_err()).count();
    tracing::debug!(
        pipeline,
        component,
        target,
        written = results.len() - failed,
        failed,
        "pushed chunks"
    );
    results
}

/// The field `index` of row `row` (from 1) of COPY text `data`: `None` when there is no such
/// row or field, `Some(None)` for NULL.
pub(crate) fn field(data: &[u8], row: usize, index: usize) -> Option<Option<String>> {
    let rows = data.strip_suffix(b"\n").unwrap_or(data);
    let line = rows.split(|&b| b == b'\n').nth(row.checked_sub(1)?)?;
    let mut one = line.to_vec();
    one.push(b'\n');
    records::rows(&one).pop()?.into_iter().nth(index)
}

/// `value`, cut to [`SHOWN_VALUE`] characters, with control characters escaped.
pub(crate) fn shown(value: &str) -> String {
    let mut text: String = value.chars().take(SHOWN_VALUE).collect();
    if value.chars().count() > SHOWN_VALUE {
        text.push('…');
    }
    text.escape_debug().to_string()
}

/// The keys, checked: required when `needs_keys` (the mode upserts), no empty or repeated
/// names. Errors point at `keys` or the key's index.
pub(crate) fn check_keys(
    keys: &[String],
    needs_keys: bool,
    mode: &str,
) -> Result<Vec<String>, BuildError> {
    if keys.is_empty() && needs_keys {
        return Err(BuildError::at(
            "keys",
            format!(
                "mode `{mode}` needs `keys`: the columns that identify a row, e.g. `keys: [id]`"
            ),
        ));
    }
    for (index, key) in keys.iter().enumerate() {
        let at = |message: String| BuildError {
            path: vec!["keys".into(), index.to_string()],
            message,
            within: None,
        };
        if key.is_empty() {
            return Err(at("a key column name is empty".into()));
        }
        if keys[..index].contains(key) {
            return Err(at(format!("key column `{key}` is listed twice")));
        }
    }
    Ok(keys.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_found_by_row_and_index_and_unescaped() {
        let data = b"1\tA\\tB\n2\t\\N\n";
        assert_eq!(field(data, 1, 1), Some(Some("A\tB".into())));
        assert_eq!(field(data, 2, 1), Some(None));
        assert_eq!(field(data, 3, 0), None);
        assert_eq!(field(data, 0, 0), None);
        assert_eq!(field(data, 1, 2), None);
    }

    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        assert_eq!(shown("a\tb"), "a\\tb");
        let long = "x".repeat(500);
        assert_eq!(shown(&long).chars().count(), SHOWN_VALUE + 1);
    }
}
