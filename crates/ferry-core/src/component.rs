//! The traits a connector author implements, and their type-erased forms.
//!
//! An author writes a factory with a typed `Config` (a `serde` struct with
//! `deny_unknown_fields`) and a `build` method; the blanket impls below parse the configuration
//! from the definition and erase the types, once, for everyone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::config::{Connection, Connections};
use crate::sandbox::Sandbox;
use crate::{BuildError, Passenger, StepError};

/// What a component knows about where it runs, for resolving relative paths and naming.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// The project directory. Paths in definitions resolve through [`BuildContext::data_path`]
    /// and [`BuildContext::definition_path`], never against it directly.
    pub project_dir: PathBuf,
    pub client: String,
    pub pipeline: String,
    /// The component's name within its pipeline (unique per role).
    pub component: String,
    /// The names of the pipeline's pushers, in order, so a processor that routes can check the
    /// names it is given.
    pub pushers: Vec<String>,
    /// The project's named connections (`connections.yaml`).
    pub connections: Connections,
    /// Where the client's definitions may reach on disk; the default reaches nothing.
    pub sandbox: Sandbox,
}

impl BuildContext {
    /// `written`, the path of files that travel (an inbox, an outbox, an archive) that the
    /// component's `key` names, if it lies inside the client's directories.
    pub fn data_path(&self, key: &str, written: &str) -> Result<PathBuf, BuildError> {
        self.sandbox
            .data(written)
            .map_err(|message| BuildError::at(key, message))
    }

    /// `written`, a file the component is made of (a program, a schema) that its `key` names,
    /// if it lies inside the client's directories or its own directory under `clients/`.
    pub fn definition_path(&self, key: &str, written: &str) -> Result<PathBuf, BuildError> {
        self.sandbox
            .definition(written)
            .map_err(|message| BuildError::at(key, message))
    }

    /// The connection `name` that the component's `key` names, if it exists and this client
    /// may use it.
    pub fn connection(&self, key: &str, name: &str) -> Result<&Connection, BuildError> {
        match self.connections.get(name) {
            Some(connection) if connection.allows(&self.client) => Ok(connection),
            Some(_) => Err(BuildError::at(
                key,
                format!(
                    "connection `{name}` is not granted to client `{client}`; root grants it \
                     in connections.yaml with `clients: [{client}]`",
                    client = self.client
                ),
            )),
            None => {
                let known: Vec<&str> = self
                    .connections
                    .values()
                    .filter(|c| c.allows(&self.client))
                    .map(|c| c.name.as_str())
                    .collect();
                let known = match known.is_empty() {
                    true => format!("connections.yaml grants none to client `{}`", self.client),
                    false => format!("granted to this client: {}", known.join(", ")),
                };
                Err(BuildError::at(
                    key,
                    format!("unknown connection `{name}`; {known}"),
                ))
            }
        }
    }
}

/// A passenger (or a known duplicate of one) that is safely in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seated {
    pub source_system: String,
    pub external_id: String,
    /// The queue already held a passenger with this key, so nothing new was written.
    pub duplicate: bool,
}

/// An item a puller found but could not turn into a passenger (an unreadable file, say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullFailure {
    /// What the puller calls the item (a file's name).
    pub external_id: String,
    /// Changes when the item changes (a file's size and modification time); empty when the
    /// puller cannot tell. A permanent failure puts the item in quarantine until a person acts
    /// or this changes (see [`Puller::quarantined`]).
    pub fingerprint: String,
    pub error: StepError,
}

/// What one call to [`Puller::pull`] found.
#[derive(Debug, Default)]
pub struct Pulled {
    pub passengers: Vec<Passenger>,
    /// Items that failed on their own; the others still travel.
    pub failures: Vec<PullFailure>,
    /// The source has more waiting right now; pull again without waiting for the schedule.
    pub more: bool,
    /// Where the puller stands after these passengers (an incremental cursor, say). The store
    /// keeps it in the same transaction that seats them, and [`Puller::restore`] hands it back
    /// at the start of every run: a position is never ahead of, or behind, what is seated.
    pub state: Option<String>,
}

/// Fetches passengers from a source system.
///
/// Nothing pulled may be removed from the source until [`Puller::ack`] says it is seated: a
/// crash between `pull` and `ack` re-pulls it, and the queue's de-duplication drops the copy.
#[async_trait]
pub trait Puller: Send {
    /// Fetches up to `max` passengers.
    async fn pull(&mut self, max: usize) -> Result<Pulled, StepError>;

    /// Called after the passengers of the last pull were committed to the queue, so the source
    /// can delete, move or commit them. Must be idempotent: it can be called again for the
    /// same items after a crash.
    async fn ack(&mut self, seated: &[Seated]) -> Result<(), StepError>;

    /// Called at the start of every run with the last [`Pulled::state`] seated (`None` before
    /// the first). Pullers without a position ignore it.
    fn restore(&mut self, state: Option<String>) {
        let _ = state;
    }

    /// Called at the start of every run, and when the run quarantines more, with the items in
    /// quarantine as (external id, fingerprint) of its [`PullFailure`]s: a puller that can
    /// tell an item's fingerprint before reading it leaves those alone. Others ignore it; the
    /// engine then only stops logging them again.
    fn quarantined(&mut self, items: HashSet<(String, String)>) {
        let _ = items;
    }

    /// The quarantined items (external ids) the last pull found changed or gone: their
    /// quarantine ends (before the failures of that pull are quarantined afresh).
    fn released(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// What a processor made of a passenger.
// `Continue` is the common case; boxing it would allocate once per passenger per processor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Travels on, possibly changed.
    Continue(Passenger),
    /// Stops here, on purpose; recorded as filtered, never lost silently.
    Filtered { reason: String },
    /// Travels on, possibly changed, to only these pushers (by name); the pipeline's other
    /// pushers are skipped for it. Several routing processors narrow the set each time.
    Route {
        passenger: Passenger,
        pushers: Vec<String>,
    },
    /// Replaced by these children, which travel on from the next processor as passengers of
    /// their own (their `parent` set to this passenger's id); this passenger's journey ends
    /// here. Each child needs an `external_id` unique within the parent, so that splitting the
    /// same parent again after a crash seats no duplicates.
    Split(Vec<Passenger>),
}

/// Transforms, filters or validates one passenger. Pure with respect to the outside world.
pub trait Processor: Send + Sync {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError>;
}

/// Delivers passengers to a target system.
#[async_trait]
pub trait Pusher: Send + Sync {
    /// Delivers a batch; returns one result per passenger, in order. A pusher that can make the
    /// batch durable at once (one fsync, one transaction) should.
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>>;

    /// [`Pusher::push`], with what the target answered for each delivered passenger when the
    /// pusher is told to keep it (the `http` pusher's `keep_response`): the engine stores it
    /// with the passenger's step, and the console shows it. The default keeps nothing.
    async fn push_keeping(
        &self,
        passengers: &[&Passenger],
    ) -> Vec<Result<Option<String>, StepError>> {
        let results = self.push(passengers).await;
        results
            .into_iter()
            .map(|result| result.map(|()| None))
            .collect()
    }
}

/// Builds pullers of one type from their typed configuration.
pub trait PullerFactory: Send + Sync + 'static {
    /// The `type:` name in definitions.
    const TYPE: &'static str;
    /// The source pushes to ferry (a webhook) instead of being fetched from: the puller
    /// receives only while its pipeline runs, so the pipeline's schedule is `continuous`
    /// (implied when none is written; another one is an error).
    const RECEIVES: bool = false;
    type Config: DeserializeOwned;
    /// Builds the puller. Must not connect to anything: validation calls it too.
    fn build(
        &self,
        config: Self::Config,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError>;
}

/// Builds processors of one type from their typed configuration.
pub trait ProcessorFactory: Send + Sync + 'static {
    const TYPE: &'static str;
    type Config: DeserializeOwned;
    fn build(
        &self,
        config: Self::Config,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError>;
}

/// Builds pushers of one type from their typed configuration.
pub trait PusherFactory: Send + Sync + 'static {
    const TYPE: &'static str;
    /// Pushing with it is the point of a run (a table load): runs of pipelines that use it end
    /// once what they seated is delivered, unless the pipeline says `run_ends: seated`.
    const LOADS: bool = false;
    type Config: DeserializeOwned;
    /// Builds the pusher. Must not connect to anything: validation calls it too.
    fn build(
        &self,
        config: Self::Config,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError>;
}

/// A connection type: how `connections.yaml` describes one kind of external system, and how to
/// tell whether a connection of that kind works. The components that use a connection read it
/// through the same [`ConnectionFactory::config`], so they see what validation saw.
#[async_trait]
pub trait ConnectionFactory: Send + Sync + 'static {
    /// The `type:` name in `connections.yaml`.
    const TYPE: &'static str;
    /// Other names accepted for `type:` (`mariadb` for `mysql`); stored under [`Self::TYPE`].
    const ALIASES: &'static [&'static str] = &[];
    /// The typed, checked connection.
    type Config: Send;
    /// Reads and checks `connection.config` (a relative path resolves against `project_dir`).
    /// Must not connect to anything: validation calls it.
    fn config(connection: &Connection, project_dir: &Path) -> Result<Self::Config, BuildError>;
    /// Connects, makes a trivial request and describes the system in one line
    /// (`PostgreSQL 15.20, database test`). The error says what failed and never holds a
    /// secret. `ferry check` calls it for every connection.
    async fn check(config: Self::Config) -> Result<String, String>;
}

/// A [`ConnectionFactory`] with its configuration type erased.
#[async_trait]
pub trait DynConnectionFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn aliases(&self) -> &'static [&'static str];
    fn validate(&self, connection: &Connection, project_dir: &Path) -> Result<(), BuildError>;
    async fn check(&self, connection: &Connection, project_dir: &Path) -> Result<String, String>;
}

#[async_trait]
impl<F: ConnectionFactory> DynConnectionFactory for F {
    fn type_name(&self) -> &'static str {
        F::TYPE
    }

    fn aliases(&self) -> &'static [&'static str] {
        F::ALIASES
    }

    fn validate(&self, connection: &Connection, project_dir: &Path) -> Result<(), BuildError> {
        F::config(connection, project_dir).map(drop)
    }

    async fn check(&self, connection: &Connection, project_dir: &Path) -> Result<String, String> {
        let config = F::config(connection, project_dir).map_err(|error| error.to_string())?;
        F::check(config).await
    }
}

/// A [`PullerFactory`] with its configuration type erased.
pub trait DynPullerFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    /// [`PullerFactory::RECEIVES`].
    fn receives(&self) -> bool;
    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError>;
}

/// A [`ProcessorFactory`] with its configuration type erased.
pub trait DynProcessorFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError>;
}

/// A [`PusherFactory`] with its configuration type erased.
pub trait DynPusherFactory: Send + Sync {
    fn type_name(&self) -> &'static str;
    /// [`PusherFactory::LOADS`].
    fn loads(&self) -> bool;
    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError>;
}

/// Parses a component's configuration, keeping the key path of the first error.
pub fn parse_config<C: DeserializeOwned>(config: &serde_json::Value) -> Result<C, BuildError> {
    serde_path_to_error::deserialize(config).map_err(|error| {
        let path = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        BuildError {
            path,
            message: error.into_inner().to_string(),
            within: None,
        }
    })
}

impl<F: PullerFactory> DynPullerFactory for F {
    fn type_name(&self) -> &'static str {
        F::TYPE
    }

    fn receives(&self) -> bool {
        F::RECEIVES
    }

    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        PullerFactory::build(self, parse_config(config)?, ctx)
    }
}

impl<F: ProcessorFactory> DynProcessorFactory for F {
    fn type_name(&self) -> &'static str {
        F::TYPE
    }

    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        ProcessorFactory::build(self, parse_config(config)?, ctx)
    }
}

impl<F: PusherFactory> DynPusherFactory for F {
    fn type_name(&self) -> &'static str {
        F::TYPE
    }

    fn loads(&self) -> bool {
        F::LOADS
    }

    fn build(
        &self,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        PusherFactory::build(self, parse_config(config)?, ctx)
    }
}

/// The kind of a pipeline component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Puller,
    Processor,
    Pusher,
}

impl Role {
    /// The definition key that lists components of this role.
    /// The role in a sentence: `puller`, `processor`, `pusher`.
    pub fn noun(self) -> &'static str {
        match self {
            Role::Puller => "puller",
            Role::Processor => "processor",
            Role::Pusher => "pusher",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Role::Puller => "pullers",
            Role::Processor => "processors",
            Role::Pusher => "pushers",
        }
    }
}

/// Every connection and component type ferry knows, for validating definitions, checking
/// connections and building pipelines.
pub struct Registry {
    pub connections: Vec<Box<dyn DynConnectionFactory>>,
    pub pullers: Vec<Box<dyn DynPullerFactory>>,
    pub processors: Vec<Box<dyn DynProcessorFactory>>,
    pub pushers: Vec<Box<dyn DynPusherFactory>>,
}

impl Registry {
    /// The connection type `written` in `connections.yaml`, by its name or an alias.
    pub fn connection_type(&self, written: &str) -> Option<&dyn DynConnectionFactory> {
        self.connections
            .iter()
            .find(|f| f.type_name() == written || f.aliases().contains(&written))
            .map(|f| &**f)
    }

    /// The connection types' names, sorted, for "valid types are …" messages.
    pub fn connection_types(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.connections.iter().map(|f| f.type_name()).collect();
        names.sort_unstable();
        names
    }

    /// Checks that `connection` works ([`ConnectionFactory::check`]).
    pub async fn check_connection(
        &self,
        connection: &Connection,
        project_dir: &Path,
    ) -> Result<String, String> {
        match self.connection_type(&connection.kind) {
            Some(factory) => factory.check(connection, project_dir).await,
            None => Err(format!(
                "unknown connection type `{}`; valid types are: {}",
                connection.kind,
                self.connection_types().join(", ")
            )),
        }
    }

    /// The `type:` names of one role, sorted, for "valid types are …" messages.
    pub fn type_names(&self, role: Role) -> Vec<&'static str> {
        let mut names: Vec<_> = match role {
            Role::Puller => self.pullers.iter().map(|f| f.type_name()).collect(),
            Role::Processor => self.processors.iter().map(|f| f.type_name()).collect(),
            Role::Pusher => self.pushers.iter().map(|f| f.type_name()).collect(),
        };
        names.sort_unstable();
        names
    }

    /// Whether pushers of `type_name` load tables ([`PusherFactory::LOADS`]).
    pub fn pusher_loads(&self, type_name: &str) -> bool {
        self.pushers
            .iter()
            .any(|f| f.type_name() == type_name && f.loads())
    }

    /// Whether pullers of `type_name` receive what is pushed to ferry
    /// ([`PullerFactory::RECEIVES`]).
    pub fn puller_receives(&self, type_name: &str) -> bool {
        self.pullers
            .iter()
            .any(|f| f.type_name() == type_name && f.receives())
    }

    /// Whether `type_name` is a known component of `role`.
    pub fn knows(&self, role: Role, type_name: &str) -> bool {
        self.type_names(role).contains(&type_name)
    }

    /// Builds (and so validates) one component, discarding it.
    pub fn check(
        &self,
        role: Role,
        type_name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<(), BuildError> {
        match role {
            Role::Puller => self.puller(type_name, config, ctx).map(drop),
            Role::Processor => self.processor(type_name, config, ctx).map(drop),
            Role::Pusher => self.pusher(type_name, config, ctx).map(drop),
        }
    }

    pub fn puller(
        &self,
        type_name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        match self.pullers.iter().find(|f| f.type_name() == type_name) {
            Some(factory) => factory.build(config, ctx),
            None => Err(self.unknown(Role::Puller, type_name)),
        }
    }

    pub fn processor(
        &self,
        type_name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        match self.processors.iter().find(|f| f.type_name() == type_name) {
            Some(factory) => factory.build(config, ctx),
            None => Err(self.unknown(Role::Processor, type_name)),
        }
    }

    pub fn pusher(
        &self,
        type_name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        match self.pushers.iter().find(|f| f.type_name() == type_name) {
            Some(factory) => factory.build(config, ctx),
            None => Err(self.unknown(Role::Pusher, type_name)),
        }
    }

    fn unknown(&self, role: Role, type_name: &str) -> BuildError {
        BuildError::at(
            "type",
            format!(
                "unknown {} type `{type_name}`; valid types are: {}",
                role.noun(),
                self.type_names(role).join(", ")
            ),
        )
    }
}
