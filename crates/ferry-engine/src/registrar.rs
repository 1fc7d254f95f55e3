//! The registrar: reads a project directory, validates it and records each file's version.

use std::io;
use std::path::{Path, PathBuf};

use ferry_core::Registry;
use ferry_core::config::{self, ConfigError, Project, SourceFile};
use ferry_store::Store;

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read project directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigError>),
}

fn render(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Reads every definition file of the project: `ferry.yaml`, `connections.yaml`, every YAML
/// file under `clients/` (validation reports those in unexpected places) and the SQL files of
/// ELT loads under `clients/<client>/sql/`, so that a changed SQL file is a new version too.
pub fn read_project(dir: &Path) -> io::Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    for name in ["ferry.yaml", "connections.yaml"] {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(content) => files.push(SourceFile {
                path: name.to_string(),
                content,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let clients = dir.join("clients");
    if clients.is_dir() {
        collect_yaml(dir, &clients, &mut files)?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn collect_yaml(root: &Path, dir: &Path, files: &mut Vec<SourceFile>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            // clients/<client>/tests/ holds pipeline tests and their fixtures, not definitions.
            if name == "tests"
                && path.parent().and_then(Path::parent) == Some(&root.join("clients"))
            {
                continue;
            }
            collect_yaml(root, &path, files)?;
        } else if match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => true,
            Some("sql") => is_sql_dir(root, &path),
            _ => false,
        } {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push(SourceFile {
                path: relative,
                content: std::fs::read_to_string(&path)?,
            });
        }
    }
    Ok(())
}

/// Whether `path` lies in a client's `sql/` directory.
fn is_sql_dir(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root.join("clients")) else {
        return false;
    };
    let mut parts = relative.components();
    parts.next().is_some() && parts.next().is_some_and(|dir| dir.as_os_str() == "sql")
}

/// Reads and validates the project in `dir`.
pub fn load(dir: &Path, registry: &Registry) -> Result<Project, LoadError> {
    let files = read_project(dir).map_err(|source| LoadError::Io {
        dir: dir.to_path_buf(),
        source,
    })?;
    let env = |name: &str| std::env::var(name).ok();
    config::validate(dir, files, registry, &env).map_err(LoadError::Invalid)
}

/// Validates the project as it would be if the file at `path` (relative to `dir`, with `/`
/// separators) held `content`: the check before a definition is saved.
pub fn check_change(
    dir: &Path,
    registry: &Registry,
    path: &str,
    content: &str,
) -> Result<Project, LoadError> {
    let mut files = read_project(dir).map_err(|source| LoadError::Io {
        dir: dir.to_path_buf(),
        source,
    })?;
    files.retain(|file| file.path != path);
    files.push(SourceFile {
        path: path.to_string(),
        content: content.to_string(),
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let env = |name: &str| std::env::var(name).ok();
    config::validate(dir, files, registry, &env).map_err(LoadError::Invalid)
}

/// Stores the version (content hash) of every file of the project not stored yet.
pub async fn record_versions(store: &dyn Store, project: &Project) -> ferry_store::Result<()> {
    let now = chrono::Utc::now();
    for file in &project.files {
        store
            .record_definition(&file.path, &file.hash(), &file.content, now)
            .await?;
    }
    Ok(())
}
