//! JSON APIs over HTTP.
//!
//! The `http` puller reads every page of a JSON API (with authentication, pagination and
//! retries) as one load of record batches, with the column mapping of `crate::columns`.

mod config;
mod puller;
#[cfg(test)]
mod tests;

pub use config::{
    Auth, BasicAuth, HttpPullerConfig, Method, OffsetParam, PageParam, Pagination, Scalar,
};
pub use puller::{HttpPuller, HttpPullerFactory};
