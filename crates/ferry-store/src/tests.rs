//! Shared store test suite (to be written).
