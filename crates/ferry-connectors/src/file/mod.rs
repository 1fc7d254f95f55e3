//! Files in a local directory.
//!
//! The `file` puller turns each file of a directory into a passenger (the file travels as its
//! attachment) and deletes or archives it once it is seated; the `file` pusher writes passengers
//! into a directory, atomically and with one durable flush per batch.

mod config;
pub(crate) mod fs;
mod puller;
mod pusher;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub(crate) use config::AFTER_SEAT_FORMS_WITH_KEEP;
pub use config::{AfterSeat, Content, FilePullerConfig, FilePusherConfig};
pub use puller::{FilePuller, FilePullerFactory};
pub use pusher::{FilePusher, FilePusherFactory};
