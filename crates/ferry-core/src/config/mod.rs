//! Definitions: the project directory's YAML files, parsed into types that cannot be invalid.
//!
//! Raw `serde` structs mirror the files ([`raw`]); [`validate`] turns every file of a project into
//! a [`Project`] or into the complete list of [`ConfigError`]s, each with file, line, column
//! and key path. Connecting to systems is a separate step.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

mod positions;
mod raw;
mod validate;

pub use validate::{EnvLookup, validate};

/// One definition file as read from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the project directory, with `/` separators, e.g.
    /// `clients/acme/pipelines/invoices.yaml`.
    pub path: String,
    pub content: String,
}

impl SourceFile {
    /// SHA-256 of the content, hex: the version key of a definition.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.content.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A position in a definition file, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// One problem in a definition: `file:line:column: key.path: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub position: Position,
    /// Dotted key path, e.g. `pullers[0].after_seat.move_to`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Position { line, column } = self.position;
        write!(f, "{}:{line}:{column}: ", self.file)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// A whole, valid project.
#[derive(Clone, Debug)]
pub struct Project {
    /// The project directory; relative paths in definitions resolve against it.
    pub dir: PathBuf,
    pub system: System,
    /// Clients by name.
    pub clients: BTreeMap<String, Client>,
    /// Every file the project was built from, for versioning.
    pub files: Vec<SourceFile>,
}

impl Project {
    /// Every pipeline of every client, in name order.
    pub fn pipelines(&self) -> impl Iterator<Item = &Pipeline> {
        self.clients.values().flat_map(|c| c.pipelines.values())
    }

    /// The pipeline `client/name`.
    pub fn pipeline(&self, client: &str, name: &str) -> Option<&Pipeline> {
        self.clients.get(client)?.pipelines.get(name)
    }
}

/// `ferry.yaml`: settings of the whole installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    /// Shown on every console page, e.g. `ferry DEV`.
    pub alias: String,
    /// Store URL, e.g. `sqlite://data/ferry.db` (relative to the project directory).
    pub store: String,
    /// Where the console listens.
    pub listen: SocketAddr,
    /// Size of the worker pool that processes and pushes passengers.
    pub workers: usize,
}

/// `clients/<name>/client.yaml`: a tenant.
#[derive(Clone, Debug)]
pub struct Client {
    pub name: String,
    /// How long complete passengers stay in the queue before the cleaner purges them.
    pub queue_life_span: Duration,
    /// How long runs and their logs are kept.
    pub log_life_span: Duration,
    /// Console users by name.
    pub users: BTreeMap<String, User>,
    /// Pipelines by name (the file name without `.yaml`).
    pub pipelines: BTreeMap<String, Pipeline>,
}

/// A console user of a client.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: UserRole,
    /// The argon2 hash of the password, as a PHC string.
    pub password_hash: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a user may do. Operators browse, retry, replay, discard and run now; administrators
/// also configure, manage tokens and export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserRole {
    Operator,
    Administrator,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Operator => "operator",
            UserRole::Administrator => "administrator",
        }
    }
}

impl fmt::Display for UserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UserRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operator" => Ok(UserRole::Operator),
            "administrator" => Ok(UserRole::Administrator),
            other => Err(format!(
                "unknown role `{other}`; roles are operator and administrator"
            )),
        }
    }
}

/// `clients/<client>/pipelines/<name>.yaml`.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub client: String,
    pub name: String,
    pub description: String,
    pub schedule: Schedule,
    pub pullers: Vec<ComponentDef>,
    pub processors: Vec<ComponentDef>,
    pub pushers: Vec<ComponentDef>,
    pub retry: RetryPolicy,
    /// Pulling stops while more than this many passengers of the pipeline are unfinished.
    pub queue_limit: u64,
    /// Passengers per pull, per queue transaction and per push call.
    pub batch_size: usize,
    /// The definition file, relative to the project directory.
    pub file: String,
    /// Content hash of the definition file (its version).
    pub version: String,
}

impl Pipeline {
    /// `client/name`, how logs and the CLI name a pipeline.
    pub fn key(&self) -> String {
        format!("{}/{}", self.client, self.name)
    }

    /// The queue steps of every passenger of this pipeline: processors in order, then pushers.
    pub fn steps(&self) -> Vec<StepDef> {
        let processors = self.processors.iter().map(|c| StepDef {
            kind: StepKind::Processor,
            name: c.name.clone(),
        });
        let pushers = self.pushers.iter().map(|c| StepDef {
            kind: StepKind::Pusher,
            name: c.name.clone(),
        });
        processors.chain(pushers).collect()
    }
}

/// One step of a passenger's journey, as stored in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepDef {
    pub kind: StepKind,
    /// The component's name, unique per kind within the pipeline.
    pub name: String,
}

/// Whether a step processes or pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    Processor,
    Pusher,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Processor => "processor",
            StepKind::Pusher => "pusher",
        }
    }
}

/// A component of a pipeline as defined; built into a puller, processor or pusher by the
/// registry. Its `Debug` output leaves the configuration out: it holds resolved secrets.
#[derive(Clone, PartialEq)]
pub struct ComponentDef {
    /// Unique per role within the pipeline: the `name:` key, else the type (`file`, `file-2`…).
    pub name: String,
    /// The `type:` key.
    pub type_name: String,
    /// Every other key, with `${ENV}` references already resolved.
    pub config: serde_json::Value,
}

impl fmt::Debug for ComponentDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentDef")
            .field("name", &self.name)
            .field("type_name", &self.type_name)
            .field("config", &"<not shown: may hold secrets>")
            .finish()
    }
}

/// When a pipeline pulls.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// `every 30s`
    Every(Duration),
    /// `cron "*/5 * * * *"` (five fields, or six with seconds first)
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
    },
    /// `continuous`: pull again as soon as a pull finds nothing more, after a short pause.
    Continuous,
    /// `manual`: only when someone says "run now".
    Manual,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", crate::duration::format(*d)),
            Schedule::Cron { expression, .. } => write!(f, "cron \"{expression}\""),
            Schedule::Continuous => f.write_str("continuous"),
            Schedule::Manual => f.write_str("manual"),
        }
    }
}

/// How often and how patiently a failing step is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last the step is dead.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub backoff: Duration,
    /// The delay never exceeds this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based): exponential back-off with
    /// "equal jitter" — half the delay fixed, half random (`jitter` in `0.0..=1.0`), so retries
    /// of many passengers spread out but never come sooner than half the nominal delay.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let nominal = self
            .backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        nominal / 2 + nominal.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        };
        assert_eq!(policy.delay(1, 1.0), Duration::from_secs(10));
        assert_eq!(policy.delay(2, 1.0), Duration::from_secs(20));
        assert_eq!(policy.delay(3, 0.0), Duration::from_secs(20));
        assert_eq!(policy.delay(9, 1.0), Duration::from_secs(60));
        assert_eq!(policy.delay(40, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn debug_output_never_shows_a_component_configuration() {
        let component = ComponentDef {
            name: "erp".into(),
            type_name: "http".into(),
            config: serde_json::json!({ "password": "hunter2" }),
        };
        let debug = format!("{component:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("erp"), "{debug}");
    }

    #[test]
    fn error_prints_file_line_column_key() {
        let error = ConfigError {
            file: "clients/acme/pipelines/a.yaml".into(),
            position: Position { line: 3, column: 5 },
            key: "retry.backoff".into(),
            message: "unknown unit `y`".into(),
        };
        assert_eq!(
            error.to_string(),
            "clients/acme/pipelines/a.yaml:3:5: retry.backoff: unknown unit `y`"
        );
    }
}
