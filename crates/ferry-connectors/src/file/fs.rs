//! Filesystem helpers shared by the connectors that read and write files in a directory: the
//! `file` puller and pusher, and the `table` puller. What happens to a pulled file once it is
//! seated ([`Disposal`], [`dispose_files`]) lives here too, so both pullers delete, archive and
//! sync the same way.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use ferry_core::sandbox::{Reach, Sandbox};
use ferry_core::{BuildContext, BuildError, StepError};

/// Refuses `path` when it leads outside the client's directories now (a symbolic link may
/// have changed since validation): checked before every listing, read, write, move and
/// delete. Permanent: trying again changes nothing until someone fixes the link.
pub(crate) fn confined(sandbox: &Sandbox, path: &Path) -> Result<(), StepError> {
    sandbox
        .check(path, Reach::Data)
        .map_err(|why| StepError::permanent(format!("{} {why}", sandbox.show(path))))
}

/// The longest file name (in bytes) of the file systems ferry writes to: ext4, XFS, btrfs,
/// tmpfs and NTFS all stop at 255.
const NAME_MAX: usize = 255;

/// The name a half-written file gets next to its final name: deterministic, so a retry after a
/// crash overwrites the leftover, and hidden, so the `file` puller never picks it up.
///
/// It is never longer than [`NAME_MAX`] when the final name is not (issue 12: names of 245–255
/// bytes failed with "File name too long"): a long name is cut, and a hash of the whole name
/// keeps the temporary names of two long names with the same beginning apart.
pub(crate) fn temp_name(final_name: &str) -> String {
    const SUFFIX: &str = ".ferry-tmp";
    let plain = format!(".{final_name}{SUFFIX}");
    if plain.len() <= NAME_MAX {
        return plain;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(final_name.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // `.` + cut name + `~` + hash + suffix.
    let room = NAME_MAX - 1 - 1 - hash.len() - SUFFIX.len();
    let mut cut = room.min(final_name.len());
    while !final_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}~{hash}{SUFFIX}", &final_name[..cut])
}

/// Makes the entries of a directory (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
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
pub(crate) fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
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

/// A modification time as Unix milliseconds, the form it takes in external ids.
pub(crate) fn modified_millis(modified: SystemTime) -> i64 {
    DateTime::<Utc>::from(modified).timestamp_millis()
}

/// Whether a file modified at `modified` may still be being written. A modification time in
/// the future (a clock skew, a copied time stamp) counts by its distance too, so that such a
/// file is not held back forever.
pub(crate) fn is_settling(modified: SystemTime, now: SystemTime, settle: Duration) -> bool {
    let age = match now.duration_since(modified) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    age < settle
}

/// Whether a puller takes the directory entry `name`: not hidden, and matching `pattern`.
pub(crate) fn wanted(name: &std::ffi::OsStr, pattern: &globset::GlobMatcher) -> bool {
    !name.as_encoded_bytes().starts_with(b".") && pattern.is_match(Path::new(name))
}

/// A single path segment that is not hidden: the only names an ack acts on.
pub(crate) fn is_plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    let single = match (components.next(), components.next()) {
        (Some(Component::Normal(segment)), None) => segment == OsStr::new(name),
        _ => false,
    };
    single && !name.starts_with('.')
}

/// What a puller does with a seated file, with the archive directory resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Disposal {
    /// Remove the file.
    Delete,
    /// Leave the file where it is (the `table` puller only).
    Keep,
    /// Move the file into this archive directory, never overwriting a file already there.
    MoveTo(PathBuf),
}

/// The archive directory of `after_seat: { move_to: DIR }`, resolved against the project
/// directory: not empty, and not `dir`, the directory files are taken from (`taken`: how the
/// puller says it, `pulled` or `read`, for the message).
pub(crate) fn archive_dir(
    move_to: &str,
    dir: &Path,
    ctx: &BuildContext,
    taken: &str,
) -> Result<PathBuf, BuildError> {
    let move_to_error = |message: String| BuildError {
        path: vec!["after_seat".into(), "move_to".into()],
        message,
        within: None,
    };
    if move_to.is_empty() {
        return Err(move_to_error("the archive directory is empty".into()));
    }
    let archive = ctx.sandbox.data(move_to).map_err(&move_to_error)?;
    // Compared as written: moving files into the directory they are taken from would take
    // them again forever.
    if archive.components().eq(dir.components()) {
        return Err(move_to_error(format!(
            "the archive directory is the directory files are {taken} from"
        )));
    }
    Ok(archive)
}

/// Deletes or archives the seated files of `dir` (given by name and the modification time they
/// were pulled with), then makes that durable with one directory sync per directory. Runs on a
/// blocking thread. A file already gone was handled by an earlier ack; a file rewritten since
/// it was pulled is new for the next pull, and stays.
pub(crate) fn dispose_files(
    sandbox: &Sandbox,
    dir: &Path,
    disposal: &Disposal,
    files: &[(String, i64)],
) -> Result<(), StepError> {
    confined(sandbox, dir)?;
    if let Disposal::MoveTo(archive) = disposal {
        confined(sandbox, archive)?;
    }
    let mut first_error = None;
    let mut failed = 0;
    let mut changed = false;
    let mut dirs_to_sync = vec![dir.to_path_buf()];
    let mut fail = |error: StepError| {
        failed += 1;
        first_error.get_or_insert(error);
    };
    let mut names = Vec::with_capacity(files.len());
    for (name, modified) in files {
        let path = dir.join(name);
        match unchanged(&path, *modified) {
            Ok(true) => names.push(name),
            // Gone (an earlier ack) or rewritten since the pull (the next pull takes it).
            Ok(false) => {}
            Err(error) => fail(StepError::io(
                &format!("cannot read {}", path.display()),
                &error,
            )),
        }
    }
    match disposal {
        Disposal::Keep => {}
        Disposal::Delete => {
            for name in names {
                let path = dir.join(name);
                match fs::remove_file(&path) {
                    Ok(()) => changed = true,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => fail(StepError::io(
                        &format!("cannot delete {}", path.display()),
                        &error,
                    )),
                }
            }
        }
        Disposal::MoveTo(archive) => {
            let created = create_dirs(archive).map_err(|error| {
                StepError::io(&format!("cannot create {}", archive.display()), &error)
            })?;
            dirs_to_sync.push(archive.clone());
            dirs_to_sync.extend(created);
            for name in names {
                match move_file(dir, archive, name) {
                    Ok(moved) => changed |= moved,
                    Err(error) => fail(StepError::io(
                        &format!(
                            "cannot move {} to {}",
                            dir.join(name).display(),
                            archive.display()
                        ),
                        &error,
                    )),
                }
            }
        }
    }
    if changed {
        for dir in &dirs_to_sync {
            sync_dir(dir).map_err(|error| {
                StepError::io(&format!("cannot sync directory {}", dir.display()), &error)
            })?;
        }
    }
    match first_error {
        None => Ok(()),
        Some(error) if failed == 1 => Err(error),
        Some(error) => Err(StepError {
            message: format!("{} (and {} more files)", error.message, failed - 1),
            ..error
        }),
    }
}

/// Whether `path` still has the modification time it had when it was pulled; a file rewritten
/// since is new for the next pull, and must not be deleted or archived now.
fn unchanged(path: &Path, modified: i64) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(modified_millis(metadata.modified()?) == modified),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Moves `dir/name` into `archive` without overwriting anything there. Returns whether a file
/// was moved (`false`: it was already gone).
fn move_file(dir: &Path, archive: &Path, name: &str) -> io::Result<bool> {
    let source = dir.join(name);
    match fs::symlink_metadata(&source) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    }
    let target = free_name(archive, name)?;
    match fs::rename(&source, &target) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
            copy_across_devices(&source, archive, &target)?;
            Ok(true)
        }
        Err(error) => Err(error),
    }
}

/// `archive/name`, or `archive/name.<unix-millis>` (then `…-2`, `…-3`) when that is taken.
fn free_name(archive: &Path, name: &str) -> io::Result<PathBuf> {
    let taken = |path: &Path| match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    };
    let target = archive.join(name);
    if !taken(&target)? {
        return Ok(target);
    }
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut target = archive.join(format!("{name}.{millis}"));
    let mut attempt = 1;
    while taken(&target)? {
        attempt += 1;
        target = archive.join(format!("{name}.{millis}-{attempt}"));
    }
    Ok(target)
}

/// A rename between filesystems: copy to a temporary name, make it durable, put it in place,
/// and only then delete the source, so a crash leaves the file at least once.
fn copy_across_devices(source: &Path, archive: &Path, target: &Path) -> io::Result<()> {
    let target_name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = archive.join(temp_name(&target_name));
    fs::copy(source, &temp)?;
    fs::File::open(&temp)?.sync_all()?;
    fs::rename(&temp, target)?;
    sync_dir(archive)?;
    fs::remove_file(source)
}
