//! What the tests of the table pushers (`postgres`, `mysql`, `sqlite`) share: record batches
//! and chunks made by hand, and pushes that must succeed or fail.

use ferry_core::records::{BatchWriter, Chunk, Column, ColumnType};
use ferry_core::{Body, Passenger, Pusher, StepError};

/// `rows` of `values` (as text, `None` for NULL) under `columns`.
pub(crate) fn batch(columns: &[(&str, ColumnType)], rows: &[&[Option<&str>]]) -> Body {
    let columns = columns
        .iter()
        .map(|(name, kind)| Column::new(*name, *kind))
        .collect();
    let mut writer = BatchWriter::new(columns);
    for row in rows {
        for value in *row {
            match value {
                Some(value) => writer.text(value),
                None => writer.null(),
            }
        }
        writer.end_row();
    }
    writer.finish()
}

/// `id integer, name text` rows.
pub(crate) fn people(rows: &[(i64, &str)]) -> Body {
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.to_string()).collect();
    let values: Vec<[Option<&str>; 2]> = rows
        .iter()
        .zip(&ids)
        .map(|((_, name), id)| [Some(id.as_str()), Some(*name)])
        .collect();
    let rows: Vec<&[Option<&str>]> = values.iter().map(|r| r.as_slice()).collect();
    batch(
        &[("id", ColumnType::Integer), ("name", ColumnType::Text)],
        &rows,
    )
}

pub(crate) fn passenger(body: Body) -> Passenger {
    Passenger::pulled("test", uuid::Uuid::now_v7().to_string()).with_body(body)
}

pub(crate) fn chunk(body: Body, load: &str, number: u64, last: bool) -> Passenger {
    let mut passenger = passenger(body);
    Chunk {
        load: load.into(),
        number,
        last,
    }
    .mark(&mut passenger);
    passenger
}

pub(crate) async fn push_ok(pusher: &dyn Pusher, passengers: &[&Passenger]) {
    for result in pusher.push(passengers).await {
        result.unwrap();
    }
}

pub(crate) async fn push_err(pusher: &dyn Pusher, passenger: &Passenger) -> StepError {
    pusher.push(&[passenger]).await.remove(0).unwrap_err()
}

pub(crate) fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}
