//! Synthetic passengers, for demos and benchmarks.
//!
//! The `generate` puller makes order-, invoice- and refund-like JSON documents of a chosen size
//! out of thin air, fast enough that the rest of the pipeline is what a benchmark measures.

mod config;
mod puller;
#[cfg(test)]
mod tests;

pub use config::GeneratePullerConfig;
pub use puller::{GeneratePuller, GeneratePullerFactory};
