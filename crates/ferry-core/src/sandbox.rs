//! Where a client's definitions may reach on disk.
//!
//! A client's administrator writes pipelines that ferry runs with the rights of the host, so
//! every path a definition names (file and table pullers, file pushers, archives, SQL and VRL
//! files, schemas, descriptors) goes through the client's [`Sandbox`]: it must lie, after `..`
//! and symbolic links, inside the directories root granted that client in `ferry.yaml`
//! (`clients: <client>: paths:`, by default `data/<client>/`), and never on a definition of the
//! project (`ferry.yaml`, `connections.yaml`, a `client.yaml`, a pipeline), another client's
//! directory or the store. Programs, schemas and SQL may also come from the client's own
//! directory `clients/<client>/` (but not from its `client.yaml` or `pipelines/`).
//!
//! The check runs twice: when the definition is validated ([`Sandbox::data`],
//! [`Sandbox::definition`], for an error at the key) and again each time a file is opened
//! ([`Sandbox::check`]), because a symbolic link may change in between. It is the one place of
//! this crate that touches the file system: resolving links needs it.

use std::path::{Component, Path, PathBuf};

/// What a path is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Files that travel: read, written, moved or deleted (inboxes, outboxes, archives).
    /// Only the client's granted directories.
    Data,
    /// Files a definition is made of, only read: SQL, VRL programs, schemas, descriptors.
    /// The granted directories and the client's own directory under `clients/`.
    Definition,
}

/// The directories one client's definitions may name. Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// The project directory, absolute.
    project: PathBuf,
    client: String,
    /// The granted directories, absolute and without `.` or `..`.
    roots: Vec<PathBuf>,
    /// The store's database file, absolute, when it is a file.
    store: Option<PathBuf>,
}

impl Sandbox {
    /// The sandbox of `client` in the project at `project`, with its granted directories
    /// (relative to the project or absolute) and the store's database file.
    pub fn new(
        project: &Path,
        client: &str,
        roots: impl IntoIterator<Item = PathBuf>,
        store: Option<PathBuf>,
    ) -> Sandbox {
        let project = absolute(project);
        Sandbox {
            roots: roots
                .into_iter()
                .map(|root| normalize(&project.join(root)))
                .collect(),
            store: store.map(|store| normalize(&project.join(store))),
            client: client.to_string(),
            project,
        }
    }

    /// A sandbox of `client` in a project at `dir` that grants `dir` itself (less its
    /// definitions): for tests and tools that work in a directory of their own.
    pub fn within(dir: &Path, client: &str) -> Sandbox {
        Sandbox::new(dir, client, [dir.to_path_buf()], None)
    }

    /// The directory a client gets when root grants it none: `data/<client>`.
    pub fn default_root(client: &str) -> PathBuf {
        Path::new("data").join(client)
    }

    /// The client's granted directories, as shown to people: relative to the project where
    /// they lie inside it.
    pub fn roots_shown(&self) -> String {
        let shown: Vec<String> = self
            .roots
            .iter()
            .map(|root| format!("{}/", self.show(root)))
            .collect();
        match shown.is_empty() {
            true => "none".to_string(),
            false => shown.join(", "),
        }
    }

    /// `written`, a path from a definition (relative to the project, or absolute), resolved
    /// for files that travel; the error says which directories the client may use.
    pub fn data(&self, written: &str) -> Result<PathBuf, String> {
        self.resolve(written, Reach::Data)
    }

    /// `written` resolved for a file a definition is made of (a program, a schema).
    pub fn definition(&self, written: &str) -> Result<PathBuf, String> {
        self.resolve(written, Reach::Definition)
    }

    fn resolve(&self, written: &str, reach: Reach) -> Result<PathBuf, String> {
        if written.trim().is_empty() {
            return Err("the path is empty".to_string());
        }
        let path = normalize(&self.project.join(written));
        self.check(&path, reach)
            .map_err(|why| format!("`{written}` {why}"))?;
        Ok(path)
    }

    /// Whether `path` may be used now for `reach`, after resolving symbolic links; checked each
    /// time a file is opened, listed, written, moved or deleted. The error (a sentence without
    /// its subject) never shows an absolute path of the server.
    pub fn check(&self, path: &Path, reach: Reach) -> Result<(), String> {
        let Some(real) = real(&normalize(&self.project.join(path))) else {
            return Err("leads through a broken symbolic link".to_string());
        };
        let project = real_or_lexical(&self.project);
        let clients = project.join("clients");
        let own = clients.join(&self.client);
        if let Some(why) = self.forbidden(&real, &project, &clients) {
            return Err(why);
        }
        let in_root = self
            .roots
            .iter()
            .any(|root| real.starts_with(real_or_lexical(root)));
        let in_own = reach == Reach::Definition && real.starts_with(&own);
        if in_root || in_own {
            return Ok(());
        }
        let mut allowed = self.roots_shown();
        if reach == Reach::Definition {
            allowed.push_str(&format!(" and clients/{}/", self.client));
        }
        Err(format!(
            "is outside the directories of client `{}` ({allowed}); root grants directories \
             in ferry.yaml under `clients: {}: paths:`",
            self.client, self.client
        ))
    }

    /// Why `real` may never be used by a client's definition, if it may not.
    fn forbidden(&self, real: &Path, project: &Path, clients: &Path) -> Option<String> {
        let definitions = [project.join("ferry.yaml"), project.join("connections.yaml")];
        if definitions.iter().any(|file| real == file) {
            return Some("is a definition of the project".to_string());
        }
        if let Some(store) = &self.store {
            let store = real_or_lexical(store);
            let name = store.file_name().unwrap_or_default().to_string_lossy();
            let parent = store.parent().unwrap_or(Path::new("/"));
            let files =
                ["", "-wal", "-shm", "-journal"].map(|end| parent.join(format!("{name}{end}")));
            if files.iter().any(|file| real == file) || store.starts_with(real) {
                return Some("is (or holds) ferry's store".to_string());
            }
        }
        if project.starts_with(real) {
            return Some("holds the project's definitions".to_string());
        }
        let Ok(inside) = real.strip_prefix(clients) else {
            return None;
        };
        let mut parts = inside.components();
        match (parts.next(), parts.next()) {
            (None, _) => Some("holds the definitions of every client".to_string()),
            (Some(client), _) if client.as_os_str() != self.client.as_str() => {
                Some("is in another client's directory".to_string())
            }
            (Some(_), Some(part))
                if part.as_os_str() == "client.yaml" || part.as_os_str() == "pipelines" =>
            {
                Some("is a definition of the client (client.yaml or a pipeline)".to_string())
            }
            _ => None,
        }
    }

    /// `path` as shown to a client: relative to the project where it lies inside it, so
    /// messages never show where the server keeps the project.
    pub fn show(&self, path: &Path) -> String {
        let path = normalize(&self.project.join(path));
        match path.strip_prefix(&self.project) {
            Ok(relative) if relative.as_os_str().is_empty() => ".".to_string(),
            Ok(relative) => relative.to_string_lossy().into_owned(),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }
}

/// `path` made absolute against the working directory, without `.` or `..`.
pub fn absolute(path: &Path) -> PathBuf {
    match std::path::absolute(path) {
        Ok(path) => normalize(&path),
        Err(_) => normalize(path),
    }
}

/// `path` without `.` and with each `..` taking away the component before it, as written
/// (symbolic links are resolved by [`real`]).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where `path` (absolute, normalized) really is: its longest existing part with symbolic
/// links resolved, then the rest as written. `None` when a part is a link that leads nowhere
/// (creating a file there would follow it).
fn real(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                let mut real = real;
                real.extend(rest.iter().rev());
                return Some(real);
            }
            Err(_) if existing.symlink_metadata().is_ok() => return None,
            // A relative path none of which exists (a sandbox without a project).
            Err(_) if existing.as_os_str().is_empty() => return Some(path.to_path_buf()),
            Err(_) => {
                rest.push(existing.file_name()?.to_os_string());
                existing = existing.parent()?;
            }
        }
    }
}

/// [`real`], or `path` itself when it leads through a broken link (then nothing inside it
/// can exist either).
fn real_or_lexical(path: &Path) -> PathBuf {
    real(path).unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> (tempfile::TempDir, Sandbox) {
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "clients/alpha/pipelines",
            "clients/alpha/sql",
            "clients/beta",
            "data/alpha",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let sandbox = Sandbox::new(
            dir.path(),
            "alpha",
            [Sandbox::default_root("alpha"), PathBuf::from("shared/in")],
            Some(PathBuf::from("data/ferry.db")),
        );
        (dir, sandbox)
    }

    #[test]
    fn paths_inside_the_granted_directories_resolve() {
        let (dir, sandbox) = project();
        let inbox = sandbox.data("data/alpha/inbox").unwrap();
        assert_eq!(inbox, normalize(&dir.path().join("data/alpha/inbox")));
        assert!(sandbox.data("./data/alpha/x/../y").is_ok());
        assert!(sandbox.data("shared/in/deeper/still").is_ok());
        assert!(sandbox.definition("clients/alpha/sql/load.sql").is_ok());
        assert!(sandbox.definition("clients/alpha/vrl/fix.vrl").is_ok());
    }

    #[test]
    fn paths_outside_or_on_definitions_are_refused_with_the_allowed_directories() {
        let (dir, sandbox) = project();
        let absolute = dir.path().join("elsewhere");
        let refused = [
            ("../outside", Reach::Data),
            ("/etc", Reach::Data),
            (absolute.to_str().unwrap(), Reach::Data),
            ("data/alpha/../beta", Reach::Data),
            ("clients/root", Reach::Data),
            ("clients/alpha/sql/x.sql", Reach::Data),
            ("clients/beta/sql/x.sql", Reach::Definition),
            ("clients/alpha/client.yaml", Reach::Definition),
            ("clients/alpha/pipelines/p.yaml", Reach::Definition),
            ("connections.yaml", Reach::Definition),
            ("ferry.yaml", Reach::Data),
            ("data/ferry.db", Reach::Definition),
            ("data", Reach::Data),
            (".", Reach::Definition),
        ];
        for (written, reach) in refused {
            let error = sandbox.resolve(written, reach).unwrap_err();
            assert!(error.starts_with(&format!("`{written}` ")), "{error}");
            // Only the path as the client wrote it is shown, never where the project is.
            assert!(
                !error
                    .replacen(written, "", 1)
                    .contains(dir.path().to_str().unwrap()),
                "an absolute path of the server is shown: {error}"
            );
        }
        let error = sandbox.data("../outside").unwrap_err();
        assert!(error.contains("(data/alpha/, shared/in/)"), "{error}");
        assert!(error.contains("clients: alpha: paths:"), "{error}");
    }

    #[test]
    fn symbolic_links_are_followed_before_the_check() {
        let (dir, sandbox) = project();
        let alpha = dir.path().join("data/alpha");
        std::os::unix::fs::symlink(dir.path().join("clients/beta"), alpha.join("beta")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("connections.yaml"), alpha.join("c")).unwrap();
        std::os::unix::fs::symlink("/nowhere/at/all", alpha.join("dangling")).unwrap();
        assert!(sandbox.data("data/alpha/beta/client.yaml").is_err());
        assert!(sandbox.data("data/alpha/beta").is_err());
        assert!(sandbox.data("data/alpha/dangling").is_err());
        // A link that is fine when validated is refused when it changes before the open.
        std::fs::create_dir(dir.path().join("data/alpha/later")).unwrap();
        let later = sandbox.data("data/alpha/later/x.txt").unwrap();
        std::fs::remove_dir(dir.path().join("data/alpha/later")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("clients"), alpha.join("later")).unwrap();
        assert!(sandbox.check(&later, Reach::Data).is_err());
        // The link to connections.yaml exists even though the file does not yet.
        assert!(sandbox.check(&alpha.join("c"), Reach::Data).is_err());
    }

    #[test]
    fn shown_paths_are_relative_to_the_project() {
        let (dir, sandbox) = project();
        assert_eq!(
            sandbox.show(&dir.path().join("data/alpha/x")),
            "data/alpha/x"
        );
        assert_eq!(sandbox.show(Path::new("data/alpha/y")), "data/alpha/y");
        assert_eq!(sandbox.roots_shown(), "data/alpha/, shared/in/");
    }
}
