//! ferry's vocabulary: the [`Passenger`] that travels, the definitions that say where it travels
//! ([`config`]), the traits connector authors implement ([`component`]) and the errors they
//! return. This crate does no I/O, but for [`sandbox`], which resolves symbolic links.

pub mod component;
pub mod config;
pub mod depth;
pub mod duration;
pub mod error;
pub mod passenger;
pub mod records;
pub mod sandbox;
pub mod size;
pub mod template;

pub use component::{
    BuildContext, ConnectionFactory, DynConnectionFactory, DynProcessorFactory, DynPullerFactory,
    DynPusherFactory, Outcome, Processor, ProcessorFactory, PullFailure, Pulled, Puller,
    PullerFactory, Pusher, PusherFactory, Registry, Role, Seated,
};
pub use error::{BuildError, StepError, TextPosition};
pub use passenger::{Attachment, Body, Metadata, Passenger, PassengerId, media_type_of};

/// Time as ferry records it: UTC with millisecond precision in the store.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
