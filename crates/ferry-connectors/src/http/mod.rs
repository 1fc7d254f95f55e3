//! JSON APIs and other HTTP endpoints.
//!
//! The `http` puller reads every page of a JSON API (with authentication, pagination and
//! retries) as one load of record batches, with the column mapping of `crate::columns`. The
//! `http` pusher sends each passenger as one request (templated URL and headers, retries
//! honouring `Retry-After`, an idempotency key, OAuth 2.0 tokens, presets for SAP). Both share
//! `client` (credentials, the client, how failures are classified).

mod client;
mod config;
mod puller;
mod pusher;
mod sap;
#[cfg(test)]
mod tests;

pub(crate) use client::error_chain;
pub use client::{Auth, BasicAuth, Scalar};
pub use config::{
    HttpPullerConfig, HttpPusherConfig, IdempotencyKey, Method, OffsetParam, PageParam, Pagination,
    Profile, PushMethod,
};
pub use puller::{HttpPuller, HttpPullerFactory};
pub use pusher::{HttpPusher, HttpPusherFactory};
