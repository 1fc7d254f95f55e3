//! What the console never shows (issue 12): a value the definitions took from the environment,
//! and where the server keeps the project. Every text answer passes through [`Redactor`] on its
//! way out (a middleware in [`crate::routes`]), and so does each cell of an xlsx export, which
//! is binary and passes the middleware untouched.

use std::borrow::Cow;
use std::path::Path;

use ferry_core::config::{Project, Secrets};

/// Replaces secrets by their references and takes the project directory off paths.
#[derive(Clone, Debug)]
pub struct Redactor {
    secrets: Secrets,
    /// The project directory with a trailing `/`, as given and with its links resolved:
    /// messages may hold either.
    prefixes: Vec<String>,
}

impl Redactor {
    /// The redactor of the project as loaded now.
    pub fn of(project: &Project) -> Redactor {
        Redactor::new(project.secrets.clone(), &project.dir)
    }

    /// Hides `secrets` and the project directory `dir`.
    fn new(secrets: Secrets, dir: &Path) -> Redactor {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::path::absolute(dir).ok());
        dirs.extend(dir.canonicalize().ok());
        let mut prefixes: Vec<String> = dirs
            .iter()
            .filter(|dir| dir.is_absolute() && dir.parent().is_some())
            .map(|dir| format!("{}/", dir.to_string_lossy().trim_end_matches('/')))
            .collect();
        prefixes.dedup();
        Redactor { secrets, prefixes }
    }

    /// `text` as it may be shown.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut shown = self.secrets.redact(text);
        for prefix in &self.prefixes {
            if shown.contains(prefix.as_str()) {
                shown = Cow::Owned(shown.replace(prefix.as_str(), ""));
            }
        }
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_the_project_directory_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::new(vec![
            ("hunter2-password".into(), "${DB_PASSWORD}".into()),
            ("short".into(), "${SHORT}".into()),
        ]);
        let redactor = Redactor::new(secrets, dir.path());
        let error = format!(
            "cannot write into {}/out/acme: login hunter2-password refused (short)",
            dir.path().display()
        );
        assert_eq!(
            redactor.apply(&error),
            "cannot write into out/acme: login ${DB_PASSWORD} refused (short)"
        );
        assert!(matches!(
            redactor.apply("nothing to hide"),
            Cow::Borrowed(_)
        ));
    }
}
