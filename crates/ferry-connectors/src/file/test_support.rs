//! Helpers for the tests of the connectors that work on files in a directory (`file`, `table`).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry_core::{Passenger, Seated};

/// Writes a file that was last modified an hour ago, so it is well settled.
pub(crate) fn write_settled(path: &Path, content: impl AsRef<[u8]>) {
    fs::write(path, content).unwrap();
    set_modified(path, SystemTime::now() - Duration::from_secs(3600));
}

pub(crate) fn set_modified(path: &Path, time: SystemTime) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(time).unwrap();
}

/// The names in `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The seated answer for every passenger, none a duplicate.
pub(crate) fn seated(passengers: &[Passenger]) -> Vec<Seated> {
    passengers
        .iter()
        .map(|p| Seated {
            source_system: p.source_system.clone(),
            external_id: p.external_id.clone(),
            duplicate: false,
        })
        .collect()
}
