//! A client's SQL files (`clients/<client>/sql/`): the queries, steps and table migrations that
//! definitions name by a path relative to that directory, read when the definition is built
//! so that validation reports a missing file.

use std::fs;
use std::path::{Component, Path, PathBuf};

use ferry_core::BuildContext;
use ferry_core::sandbox::Reach;

/// `clients/<client>/sql/` of the component's client.
pub(crate) fn dir(ctx: &BuildContext) -> PathBuf {
    ctx.project_dir
        .join("clients")
        .join(&ctx.client)
        .join("sql")
}

/// The text of the SQL file `relative`, a path under the client's SQL directory that may not
/// leave it (no absolute path, no `..`).
pub(crate) fn read(ctx: &BuildContext, relative: &str) -> Result<String, String> {
    let path = Path::new(relative);
    let inside = path
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if relative.is_empty() || !inside {
        return Err(format!(
            "`{relative}` is not a file name under clients/{}/sql/: give a relative path \
             without `..`",
            ctx.client
        ));
    }
    let path = dir(ctx).join(path);
    // A symbolic link may lead out of the client's directory.
    ctx.sandbox
        .check(&path, Reach::Definition)
        .map_err(|why| format!("clients/{}/sql/{relative} {why}", ctx.client))?;
    fs::read_to_string(path)
        .map_err(|error| format!("cannot read clients/{}/sql/{relative}: {error}", ctx.client))
}
