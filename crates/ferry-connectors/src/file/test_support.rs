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

/// A conformance source for the pullers of a directory (`file`, `table`): `in/` of a temporary
/// project holding `n.csv` files made by `good` and one malformed file.
pub(crate) struct Inbox {
    pub project: tempfile::TempDir,
    /// The content of good file `n`.
    pub good: fn(usize) -> String,
    /// The malformed file's name and content, and the text its failure must name.
    pub malformed: (&'static str, &'static str, &'static str),
    /// The puller of `in/` in the project at the path.
    pub build: fn(&Path) -> Box<dyn ferry_core::Puller>,
}

impl Inbox {
    pub(crate) fn new(
        good: fn(usize) -> String,
        malformed: (&'static str, &'static str, &'static str),
        build: fn(&Path) -> Box<dyn ferry_core::Puller>,
    ) -> Inbox {
        let project = tempfile::tempdir().unwrap();
        Inbox {
            project,
            good,
            malformed,
            build,
        }
    }
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PullerUnderTest for Inbox {
    async fn fill(&mut self, good: usize) -> Option<String> {
        let inbox = self.project.path().join("in");
        fs::create_dir_all(&inbox).unwrap();
        for n in 0..good {
            write_settled(&inbox.join(format!("{n}.csv")), (self.good)(n));
        }
        let (name, content, position) = self.malformed;
        write_settled(&inbox.join(name), content);
        Some(position.into())
    }

    fn puller(&self) -> Box<dyn ferry_core::Puller> {
        (self.build)(self.project.path())
    }

    async fn remaining(&self) -> Option<usize> {
        Some(names(&self.project.path().join("in")).len())
    }

    fn unreachable(&self) -> Option<(Box<dyn ferry_core::Puller>, String)> {
        // A local directory is there, or its absence is a mistake in the definition.
        None
    }
}
