//! Files in a local directory.
//!
//! The `file` puller turns each file of a directory into a passenger (the file travels as its
//! attachment) and deletes or archives it once it is seated; the `file` pusher writes passengers
//! into a directory, atomically and with one durable flush per batch.

mod config;
mod puller;
mod pusher;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use config::{AfterSeat, Content, FilePullerConfig, FilePusherConfig};
pub use puller::{FilePuller, FilePullerFactory};
pub use pusher::{FilePusher, FilePusherFactory};

/// The name a half-written file gets next to its final name: deterministic, so a retry after a
/// crash overwrites the leftover, and hidden, so the `file` puller never picks it up.
fn temp_name(final_name: &str) -> String {
    format!(".{final_name}.ferry-tmp")
}

/// Makes the entries of a directory (created, renamed, removed files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    // Other systems cannot open a directory as a file; their renames are as durable as they get.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and its missing ancestors. Returns the directories whose entries changed (the
/// parents of what was created), which need [`sync_dir`] for the new directories to be durable.
fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        match fs::metadata(path) {
            Ok(_) => break,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                missing.push(path);
                current = path
                    .parent()
                    .filter(|parent| !parent.as_os_str().is_empty());
            }
            Err(error) => return Err(error),
        }
    }
    let mut changed = Vec::new();
    for path in missing.into_iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    changed.push(parent.to_path_buf());
                }
            }
            // Someone else created it in the meantime: just as good.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Ok(changed)
}
