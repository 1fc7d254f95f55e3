//! Validation of a project's files into a [`super::Project`].
use super::{ConfigError, Project, SourceFile};
use crate::Registry;
use std::path::Path;

/// Looks up environment variables for `${NAME}` references.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Validates every file of a project at once.
pub fn validate(
    _dir: &Path,
    _files: Vec<SourceFile>,
    _registry: &Registry,
    _env: EnvLookup<'_>,
) -> Result<Project, Vec<ConfigError>> {
    todo!()
}
