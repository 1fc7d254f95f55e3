//! How many rows per second a `remap` handles over record batches on one thread (issue 13 asks
//! for at least 300,000): chunks of 10,000 rows of seven columns, a program that renames and
//! converts three of them. Run under a timer for the whole process:
//!
//! ```sh
//! cargo build --release -p ferry-connectors --example records_remap
//! /usr/bin/time target/release/examples/records_remap [ROWS]
//! ```
//!
//! The process makes each chunk (as the `sql` puller would: COPY text with a JSON header), runs
//! the processor over it and checks the result, one chunk at a time. It prints the rows per
//! second of the remap alone; the whole-process rate is ROWS over the timer's seconds.

use std::time::{Duration, Instant};

use ferry_connectors::processors::{RemapConfig, RemapFactory};
use ferry_core::records::{self, BatchWriter, Column, ColumnType};
use ferry_core::{BuildContext, Outcome, Passenger, ProcessorFactory};

/// Renames and converts three of the seven columns: an integer id renamed, a numeric amount
/// made a float, a timestamp made a date string.
const PROGRAM: &str = r#"
.customer_id = .id
del(.id)
.amount_eur = to_float!(.amount)
del(.amount)
.created_day = format_timestamp!(.created, "%Y-%m-%d")
del(.created)
"#;

const CHUNK_ROWS: usize = 10_000;

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let remap = RemapFactory
        .build(
            RemapConfig {
                source: Some(PROGRAM.into()),
                file: None,
                columns: None,
            },
            &BuildContext::default(),
        )
        .expect("the program compiles");
    let mut in_remap = Duration::ZERO;
    let mut done = 0;
    while done < rows {
        let count = CHUNK_ROWS.min(rows - done);
        let passenger = chunk(done, count);
        let start = Instant::now();
        let outcome = remap.process(passenger).expect("the remap succeeds");
        in_remap += start.elapsed();
        let Outcome::Continue(out) = outcome else {
            panic!("the remap must let the chunk through");
        };
        let batch = records::read(&out.body).expect("a record batch");
        assert_eq!(batch.rows, count);
        assert_eq!(batch.columns[4].name, "amount_eur");
        assert_eq!(batch.columns[4].kind, ColumnType::Float);
        done += count;
    }
    println!(
        "remap over record batches on one thread: {rows} rows of 7 columns in {:.3} s = {:.0} rows/s (processor only)",
        in_remap.as_secs_f64(),
        rows as f64 / in_remap.as_secs_f64()
    );
}

/// Rows `first + 1 ..= first + count` of the bench table: id, name, email, amount, created,
/// active, note.
fn chunk(first: usize, count: usize) -> Passenger {
    let mut writer = BatchWriter::new(vec![
        Column::new("id", ColumnType::Integer),
        Column::new("name", ColumnType::Text),
        Column::new("email", ColumnType::Text),
        Column::new("amount", ColumnType::Numeric),
        Column::new("created", ColumnType::Timestamptz),
        Column::new("active", ColumnType::Boolean),
        Column::new("note", ColumnType::Text),
    ]);
    for n in first + 1..=first + count {
        writer.raw(&n.to_string());
        writer.text(&format!("customer {n}"));
        writer.text(&format!("customer{n}@example.com"));
        writer.raw(&format!("{}.{:02}", n % 100_000, n % 100));
        writer.raw(&format!(
            "2024-{:02}-{:02} {:02}:{:02}:00+00",
            n % 12 + 1,
            n % 28 + 1,
            n % 24,
            n % 60
        ));
        writer.raw(if n % 2 == 0 { "t" } else { "f" });
        writer.text("a note of a few words");
        writer.end_row();
    }
    Passenger::pulled("bench", format!("chunk-{first}")).with_body(writer.finish())
}
