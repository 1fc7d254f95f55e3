//! Tables in local files: CSV, JSON, NDJSON and spreadsheets.
//!
//! The `table` puller reads each file of a directory as one load of record batches (see
//! `ferry_core::records`), with column mapping and type conversion (`crate::columns`); a file
//! is checked completely before its first chunk leaves, and deleted, archived or kept once all
//! its chunks are seated.

mod config;
mod puller;
#[cfg(test)]
mod tests;

pub use config::{
    AfterSeat, CsvConfig, Encoding, JsonConfig, SheetRef, TableFormat, TablePullerConfig,
};
pub use puller::{TablePuller, TablePullerFactory};
