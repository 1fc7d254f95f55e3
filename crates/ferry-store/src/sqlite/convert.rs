//! Conversions between ferry's types and SQLite columns; the ones both stores share are in
//! [`crate::convert`].

use ferry_core::PassengerId;
use uuid::Uuid;

pub(super) use crate::convert::{
    duration_millis, metadata_from_json, metadata_json, millis, optional_time, passenger_state,
    small_count, step_kind, step_state, time,
};

/// A passenger id as stored: the 16 bytes of its UUID.
pub(super) fn id_bytes(id: PassengerId) -> [u8; 16] {
    id.0.into_bytes()
}

pub(super) fn id_from_bytes(bytes: [u8; 16]) -> PassengerId {
    PassengerId(Uuid::from_bytes(bytes))
}

/// A text column borrowed from the row, without allocating.
pub(super) fn text<'r>(row: &'r rusqlite::Row<'_>, column: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(column)?.as_str().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            Box::new(error),
        )
    })
}
