//! The built-in processors. They are pure: they look at and change the passenger, nothing else.

mod decode;
mod encode;
mod filter;
mod remap;
mod set;

pub(crate) use decode::build_codec;
pub use decode::{DecodeConfig, DecodeFactory, DecodeSource};
pub(crate) use encode::json_body;
pub use encode::{EncodeConfig, EncodeFactory, EncodeTarget};
pub use filter::{Condition, FilterConfig, FilterFactory};
pub use remap::{RemapConfig, RemapFactory};
pub use set::{SetConfig, SetFactory};
