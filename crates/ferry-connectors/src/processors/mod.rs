//! The built-in processors. They are pure: they look at and change the passenger, nothing else.

mod filter;
mod set;

pub use filter::{Condition, FilterConfig, FilterFactory};
pub use set::{SetConfig, SetFactory};
