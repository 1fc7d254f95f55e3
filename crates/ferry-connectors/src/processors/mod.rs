//! The built-in processors. They are pure: they look at and change the passenger, nothing else
//! (`dedupe` also remembers, in memory, the keys it has seen; see `docs/processors.md`).

mod decode;
mod dedupe;
mod encode;
mod filter;
mod program;
mod remap;
mod route;
mod rows;
mod set;
mod split;
mod validate;

pub(crate) use decode::build_codec;
pub use decode::{DecodeConfig, DecodeFactory, DecodeSource};
pub use dedupe::{DedupeConfig, DedupeFactory};
pub(crate) use encode::encode_body;
pub use encode::{EncodeConfig, EncodeFactory, EncodeTarget};
pub use filter::{Condition, FilterConfig, FilterFactory};
pub use remap::{RemapConfig, RemapFactory};
pub use route::{RouteConfig, RouteFactory, RouteRule};
pub use rows::ROWS_DROPPED;
pub use set::{SetConfig, SetFactory};
pub use split::{SplitConfig, SplitFactory, ZipSource};
pub use validate::{ValidateConfig, ValidateFactory};
