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

mod notification;
mod positions;
mod raw;
mod validate;

pub use notification::{CHANNELS, Channel, Notification, TRIGGERS, Trigger, TriggerKind};

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
    /// Named connections from `connections.yaml`.
    pub connections: Connections,
    /// Every file the project was built from, for versioning.
    pub files: Vec<SourceFile>,
    /// Values taken from the environment, never to be shown.
    pub secrets: Secrets,
}

/// Values the definitions took from the environment (`${NAME}`), each with what to show
/// instead, the reference as written. The console and the logs pass what they show through
/// [`Secrets::redact`], so a secret that found its way into a description, a passenger or an
/// error message is never shown.
#[derive(Clone, Debug, Default)]
pub struct Secrets(std::sync::Arc<Vec<(String, String)>>);

impl Secrets {
    /// Values shorter than this are not secrets worth hiding, and hiding them would garble
    /// everything shown (a port number, `true`).
    pub const MIN_LEN: usize = 6;

    /// The secrets among `found` (value, shown instead), longest first so that a whole resolved
    /// string is replaced before the values within it.
    pub fn new(mut found: Vec<(String, String)>) -> Secrets {
        found.retain(|(value, _)| value.len() >= Self::MIN_LEN);
        found.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        found.dedup_by(|a, b| a.0 == b.0);
        Secrets(std::sync::Arc::new(found))
    }

    /// `text` with every secret replaced by its reference.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for (value, shown) in self.0.iter() {
            if out.contains(value.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(value.as_str(), shown));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Makes these the secrets [`Secrets::current`] answers. The engine publishes the secrets
    /// of every project it loads, so that what the process logs anywhere can be redacted.
    pub fn publish(&self) {
        *current_secrets().write().unwrap_or_else(|e| e.into_inner()) = self.clone();
    }

    /// The secrets last published in this process.
    pub fn current() -> Secrets {
        current_secrets()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn current_secrets() -> &'static std::sync::RwLock<Secrets> {
    static CURRENT: std::sync::OnceLock<std::sync::RwLock<Secrets>> = std::sync::OnceLock::new();
    CURRENT.get_or_init(Default::default)
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
    /// What each client's definitions may reach (`clients:`), by client name; a client
    /// without an entry gets [`Grant::default_for`].
    pub grants: BTreeMap<String, Grant>,
}

impl System {
    /// The grant of `client`: its entry in `clients:`, or the default.
    pub fn grant(&self, client: &str) -> Grant {
        self.grants
            .get(client)
            .cloned()
            .unwrap_or_else(|| Grant::default_for(client))
    }

    /// The store's database file relative to the project (or absolute), when it is one.
    pub fn store_file(&self) -> Option<PathBuf> {
        self.store.strip_prefix("sqlite://").map(PathBuf::from)
    }
}

/// What root lets one client's definitions reach, from `clients:` in ferry.yaml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Directories its pullers and pushers may use, as written (relative to the project, or
    /// absolute).
    pub paths: Vec<PathBuf>,
    /// Environment variables its files may name as `${NAME}`.
    pub env: Vec<String>,
}

impl Grant {
    /// A client that root granted nothing: its own data directory, no environment variables.
    pub fn default_for(client: &str) -> Grant {
        Grant {
            paths: vec![crate::sandbox::Sandbox::default_root(client)],
            env: Vec::new(),
        }
    }
}

/// The named connections of a project, shared by every component that names one.
pub type Connections = std::sync::Arc<BTreeMap<String, Connection>>;

/// A named connection from `connections.yaml`: how to reach one external system (a database, a
/// mailbox, a broker). The core keeps only its name, its type and the rest of its definition;
/// the connection type registered under `kind` ([`crate::ConnectionFactory`]) reads and checks
/// `config`. The definition may hold a password, so `Debug` leaves `config` out.
#[derive(Clone, PartialEq)]
pub struct Connection {
    pub name: String,
    /// The connection type's name as registered (`postgres`, `mysql`, `sqlite`, …); an alias
    /// written in the file (`mariadb`) is stored under the registered name.
    pub kind: String,
    /// Every key of the definition but `type` and `clients`, `${NAME}` references replaced.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The clients whose pipelines may use it (`clients:`); root grants each one by name.
    pub clients: Vec<String>,
}

impl Connection {
    /// Whether pipelines of `client` may use this connection: root granted it by name.
    pub fn allows(&self, client: &str) -> bool {
        self.clients.iter().any(|c| c == client)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

/// `url` with the password between `user:` and `@` replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
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
    /// Who is told about dead passengers, failed runs, paused pipelines and old queues
    /// (`notifications:`), in the order written.
    pub notifications: Vec<Notification>,
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
    /// Pipelines of the same client that must have succeeded, in the same cycle, before this
    /// one runs (`depends_on:`).
    pub depends_on: Vec<String>,
    /// When runs may start (`window: 18:00-06:00`, local time); any time when `None`.
    pub window: Option<Window>,
    /// Lower runs first when several pipelines want workers (`priority:`, default 5).
    pub priority: u8,
    /// Consecutive failed runs after which the pipeline pauses itself (`failure_limit:`,
    /// default 3; 0 never pauses).
    pub failure_limit: u32,
    /// When a run is over: once what it pulled is seated, or once it is delivered.
    pub run_ends: RunEnds,
    /// `run_ends` was not given, so validation may choose it from the dependencies.
    pub(crate) run_ends_default: bool,
    /// The project's named connections, for building its components.
    pub connections: Connections,
    /// Where the client's definitions may reach on disk, for building its components.
    pub sandbox: crate::sandbox::Sandbox,
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

/// When a run of a pipeline is over (`run_ends:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnds {
    /// Once everything it pulled is seated in the queue; delivery goes on afterwards.
    Seated,
    /// Once everything it seated is delivered (or dead): a load's run fails when its rows could
    /// not be loaded, and pipelines that depend on it run only after the data arrived.
    Delivered,
}

/// A daily time window in local time; `start > end` spans midnight (`18:00-06:00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: chrono::NaiveTime,
    pub end: chrono::NaiveTime,
}

impl Window {
    /// Whether `time` lies inside the window (start included, end excluded).
    pub fn contains(&self, time: chrono::NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// How long from `time` until the window opens; zero inside it.
    pub fn wait_from(&self, time: chrono::NaiveTime) -> Duration {
        if self.contains(time) {
            return Duration::ZERO;
        }
        let seconds = (self.start - time).num_seconds().rem_euclid(86_400);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
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
    fn windows_span_midnight_and_say_how_long_until_they_open() {
        let at = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let night = Window {
            start: at(18, 0),
            end: at(6, 0),
        };
        assert!(night.contains(at(23, 0)) && night.contains(at(2, 0)));
        assert!(!night.contains(at(6, 0)) && !night.contains(at(12, 0)));
        assert_eq!(night.wait_from(at(17, 30)), Duration::from_secs(1800));
        assert_eq!(night.wait_from(at(19, 0)), Duration::ZERO);
        let day = Window {
            start: at(8, 0),
            end: at(18, 0),
        };
        assert_eq!(day.wait_from(at(20, 0)), Duration::from_secs(12 * 3600));
        assert_eq!(day.to_string(), "08:00-18:00");
    }

    #[test]
    fn connection_urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://ferry:s3cret@db:5432/dwh?sslmode=disable"),
            "postgres://ferry:***@db:5432/dwh?sslmode=disable"
        );
        assert_eq!(redact_url("mysql://root@db/erp"), "mysql://root@db/erp");
        assert_eq!(redact_url("/data/source.db"), "/data/source.db");
        let connection = Connection {
            name: "dwh".into(),
            kind: "postgres".into(),
            config: serde_json::json!({ "url": "postgres://u:hunter2@h/d" })
                .as_object()
                .unwrap()
                .clone(),
            clients: vec!["acme".into()],
        };
        assert!(!format!("{connection:?}").contains("hunter2"));
        assert!(connection.allows("acme"));
        assert!(!connection.allows("beta"), "granted to acme only");
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
