//! ferry's durable store: definition versions, the queue with a status per step, attempt
//! history, runs with their logs, pipeline pause flags.
//!
//! One [`Store`] trait; SQL lives only in the implementations ([`sqlite`], [`postgres`]). Every method that
//! writes does so in one transaction, whatever the number of passengers it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::config::{StepDef, StepKind};
use ferry_core::{Body, Metadata, Passenger, PassengerId, Timestamp};

mod convert;
mod counts;
mod journey;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod tests;

/// Errors of the store. Besides `NotFound` and `Refused`, every one is worth retrying later: the
/// data is still safe.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no store ferry has; it is kept with its password redacted.
    #[error(
        "unsupported store URL `{0}`; use sqlite://PATH (relative to the project directory) \
         or postgres://USER@HOST/DATABASE (also postgresql://; `?schema=NAME`, default ferry)"
    )]
    UnsupportedUrl(String),
    #[error("passenger {0} not found")]
    NotFound(PassengerId),
    /// The action does not apply to the passenger as it is now (e.g. skipping a done step).
    #[error("{0}")]
    Refused(String),
    #[error("store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the store named by `url`, creating and migrating it when needed:
/// `sqlite://data/ferry.db` (relative to `base_dir`), or `postgres://…` / `postgresql://…`
/// (a PostgreSQL database; the store's tables go in the schema of the URL's `schema=NAME`
/// parameter, default `ferry`; `sslmode=` as libpq reads it).
pub async fn open(url: &str, base_dir: &Path) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open(url).await?));
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => {
            let path = base_dir.join(path);
            Ok(Arc::new(sqlite::SqliteStore::open(&path).await?))
        }
        _ => Err(StoreError::UnsupportedUrl(redact_url(url))),
    }
}

/// `url` as it may be shown in messages and logs: a password in it (in the user part, or a
/// `password=` parameter) is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    postgres::redact(url)
}

/// A pipeline of a client: the unit the queue is partitioned by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineKey {
    pub client: String,
    pub pipeline: String,
}

impl PipelineKey {
    pub fn new(client: impl Into<String>, pipeline: impl Into<String>) -> Self {
        PipelineKey {
            client: client.into(),
            pipeline: pipeline.into(),
        }
    }
}

impl fmt::Display for PipelineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client, self.pipeline)
    }
}

/// Where a passenger is on its journey, derived from the states of its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassengerState {
    /// Has steps to run, now or at `due_at`.
    Pending,
    /// Leased by a worker until the lease expires.
    InFlight,
    /// A step failed and waits for its next attempt.
    Failed,
    /// Every pusher is done.
    Complete,
    /// A processor stopped it on purpose.
    Filtered,
    /// A step gave up; waits for a person to replay or discard it.
    Dead,
    /// A person discarded it.
    Discarded,
}

impl PassengerState {
    pub const ALL: [PassengerState; 7] = [
        PassengerState::Pending,
        PassengerState::InFlight,
        PassengerState::Failed,
        PassengerState::Complete,
        PassengerState::Filtered,
        PassengerState::Dead,
        PassengerState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PassengerState::Pending => "pending",
            PassengerState::InFlight => "in_flight",
            PassengerState::Failed => "failed",
            PassengerState::Complete => "complete",
            PassengerState::Filtered => "filtered",
            PassengerState::Dead => "dead",
            PassengerState::Discarded => "discarded",
        }
    }

    /// Work remains that ferry will do on its own.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            PassengerState::Pending | PassengerState::InFlight | PassengerState::Failed
        )
    }

    /// Finished, so the cleaner may purge it after the retention period.
    pub fn is_purgeable(self) -> bool {
        matches!(
            self,
            PassengerState::Complete | PassengerState::Filtered | PassengerState::Discarded
        )
    }
}

impl fmt::Display for PassengerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PassengerState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PassengerState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = PassengerState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state `{s}`; states are {}", names.join(", "))
            })
    }
}

/// The state of one processor or pusher step of a passenger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepState {
    Pending,
    /// The passenger is leased and this step is not finished yet.
    InFlight,
    Done,
    /// The last attempt failed; the next one is due at `next_try_at`.
    Failed,
    /// Gave up: permanent error or the last attempt failed.
    Dead,
    /// Not run: an earlier processor filtered the passenger, or it was discarded.
    Skipped,
    /// This processor filtered the passenger.
    Filtered,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::InFlight => "in_flight",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Dead => "dead",
            StepState::Skipped => "skipped",
            StepState::Filtered => "filtered",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of one passenger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepStatus {
    /// Position in the pipeline's step list (processors first, then pushers).
    pub index: u32,
    pub kind: StepKind,
    pub name: String,
    pub state: StepState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When a failed step is tried again.
    pub next_try_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub done_at: Option<Timestamp>,
    /// What the target answered, for a pusher that keeps it (`Pusher::push_keeping`).
    pub result: Option<String>,
}

impl StepStatus {
    /// The step still has to run (now or later).
    pub fn is_open(&self) -> bool {
        matches!(
            self.state,
            StepState::Pending | StepState::InFlight | StepState::Failed
        )
    }
}

/// Whether a passenger was written to the queue or was a duplicate of one already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatResult {
    Seated,
    Duplicate,
}

/// Identifies one lease, so a worker whose lease expired cannot overwrite newer work.
pub type LeaseToken = i64;

/// A passenger handed to a worker, with the state of its steps.
#[derive(Clone, Debug)]
pub struct Leased {
    pub token: LeaseToken,
    /// The passenger as its processors left it (as pulled when no processor ran yet).
    pub passenger: Passenger,
    pub steps: Vec<StepStatus>,
}

/// What happened to one step in a worker's hands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepChange {
    Done,
    /// Done, and what the target answered is kept with the step (bounded by the pusher).
    DoneWith {
        result: String,
    },
    /// The processor filtered the passenger; the steps after it are `Skipped`.
    Filtered {
        reason: String,
    },
    Skipped,
    /// Failed; try again at `at`.
    Retry {
        error: String,
        at: Timestamp,
    },
    /// Failed for good.
    Dead {
        error: String,
    },
}

/// A lease held by a process that no longer runs.
#[derive(Clone, Debug)]
pub struct Abandoned {
    pub pipeline: PipelineKey,
    pub id: PassengerId,
    pub token: LeaseToken,
    pub steps: Vec<StepStatus>,
}

/// A worker's report on one leased passenger.
#[derive(Clone, Debug)]
pub struct Finished {
    pub id: PassengerId,
    pub token: LeaseToken,
    /// The processors' output, to store when processors ran in this lease.
    pub processed: Option<(Metadata, Body)>,
    /// Changed steps by index; steps not named keep their state.
    pub steps: Vec<(u32, StepChange)>,
    /// The children a processor split the passenger into, seated in the same transaction.
    pub split: Option<Split>,
}

/// Passengers a processor made of one: they travel on after the processor's step `after`.
#[derive(Clone, Debug)]
pub struct Split {
    pub after: u32,
    pub children: Vec<Passenger>,
}

/// Filters for browsing the queue. `None` means any.
#[derive(Clone, Debug, Default)]
pub struct QueueFilter {
    pub client: Option<String>,
    pub pipeline: Option<String>,
    pub state: Option<PassengerState>,
    /// Substring of `external_id` or `source_system`.
    pub text: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// A line of the queue browser.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueueEntry {
    pub id: PassengerId,
    pub client: String,
    pub pipeline: String,
    pub source_system: String,
    pub external_id: String,
    pub state: PassengerState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The most recent error of any step.
    pub last_error: Option<String>,
}

/// One failed attempt of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub step: u32,
    pub attempt: u32,
    pub at: Timestamp,
    pub error: String,
}

/// Everything about one passenger.
#[derive(Clone, Debug)]
pub struct PassengerDetail {
    pub entry: QueueEntry,
    /// As pulled.
    pub original: Passenger,
    /// As the processors left it, when they ran.
    pub processed: Option<(Metadata, Body)>,
    pub steps: Vec<StepStatus>,
    pub attempts: Vec<Attempt>,
}

/// Counts of passengers per state.
pub type StateCounts = BTreeMap<PassengerState, u64>;

/// Identifies a run.
pub type RunId = i64;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Everything pulled was seated.
    Succeeded,
    /// Some items could not be pulled; the rest were seated.
    Partial,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Partial,
            RunStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub pulled: u64,
    pub seated: u64,
    pub duplicates: u64,
    pub failed: u64,
}

/// One run of a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub client: String,
    pub pipeline: String,
    /// Content hash of the pipeline definition the run used.
    pub version: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub status: RunStatus,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub error: Option<String>,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        [LogLevel::Info, LogLevel::Warn, LogLevel::Error]
            .into_iter()
            .find(|level| level.as_str() == s)
    }
}

/// A line of a run's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub at: Timestamp,
    pub level: LogLevel,
    pub message: String,
}

/// A stored version of a definition file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionVersion {
    pub file: String,
    pub hash: String,
    pub content: String,
    pub loaded_at: Timestamp,
}

/// Filters for browsing runs. `None` means any.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub client: Option<String>,
    pub pipeline: Option<String>,
    pub status: Option<RunStatus>,
    /// Runs started at or after this time.
    pub since: Option<Timestamp>,
    /// Runs started before this time.
    pub until: Option<Timestamp>,
}

/// Dead passengers of one pipeline that died of the same error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadGroup {
    pub client: String,
    pub pipeline: String,
    /// The passengers' `last_error`, word for word.
    pub error: String,
    pub count: u64,
    /// When the most recent of them changed.
    pub newest: Timestamp,
}

/// An input item a puller could not take, as a puller reports it to be quarantined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Untakeable {
    /// The puller's name in the pipeline.
    pub puller: String,
    /// What the puller calls the item (a file's name).
    pub item: String,
    /// Changes when the item changes (a file's size and modification time), so that a fixed
    /// item is taken again; empty when the puller cannot tell.
    pub fingerprint: String,
    pub reason: String,
}

/// An input item in quarantine: later pulls skip it until a person retries or discards it, or
/// it changes (issue 12: it was retried, and logged, on every run without end).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    pub id: i64,
    pub client: String,
    pub pipeline: String,
    pub puller: String,
    pub item: String,
    pub fingerprint: String,
    pub reason: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// How many pulls found it since it was quarantined.
    pub times: u64,
    /// A person discarded it: it stays skipped (until it changes) and is no longer listed.
    pub discarded: bool,
}

/// Passengers seated per pipeline in one time bucket, for the dashboard's throughput chart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throughput {
    pub pipeline: PipelineKey,
    /// Start of the bucket.
    pub at: Timestamp,
    pub seated: u64,
}

/// A console login. The store keeps only the SHA-256 of the cookie value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: String,
    pub user: String,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    pub expires_at: Timestamp,
}

/// An API token. The store keeps only the SHA-256 of the token itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub client: String,
    /// What the token is for, chosen by its creator.
    pub name: String,
    /// `operator` or `administrator`.
    pub role: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// One action a person took, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// The client the action concerned.
    pub client: String,
    /// Who: `client/user`, or `token:NAME` for API tokens.
    pub actor: String,
    /// What, e.g. `passenger.replay`, `pipeline.pause`, `definition.save`.
    pub action: String,
    /// On what, e.g. a passenger id, `client/pipeline`, a file path.
    pub target: String,
    /// Anything else worth keeping, e.g. the step that was skipped.
    pub detail: String,
}

/// The durable store. Implementations must pass the shared test suite in `tests`.
#[async_trait]
pub trait Store: Send + Sync {
    // ---- definitions ----

    /// Records a definition file's version; returns `false` when this hash was already stored.
    async fn record_definition(
        &self,
        file: &str,
        hash: &str,
        content: &str,
        now: Timestamp,
    ) -> Result<bool>;

    /// Every stored version of a file, newest first.
    async fn definition_versions(&self, file: &str) -> Result<Vec<DefinitionVersion>>;

    // ---- the queue ----

    /// Writes a batch of pulled passengers in one transaction, each with the given steps, all
    /// pending. A passenger whose (client, pipeline, source_system, external_id) is already in
    /// the queue is skipped and reported as a duplicate. Results are in input order.
    async fn seat(
        &self,
        pipeline: &PipelineKey,
        version: &str,
        steps: &[StepDef],
        passengers: &[Passenger],
        now: Timestamp,
    ) -> Result<Vec<SeatResult>> {
        self.seat_from(pipeline, version, steps, passengers, None, now)
            .await
    }

    /// [`Store::seat`], and in the same transaction records where the puller that pulled the
    /// passengers now stands (see [`PullerState`]), so that its position and the queue never
    /// disagree.
    async fn seat_from(
        &self,
        pipeline: &PipelineKey,
        version: &str,
        steps: &[StepDef],
        passengers: &[Passenger],
        state: Option<&PullerState>,
        now: Timestamp,
    ) -> Result<Vec<SeatResult>>;

    /// The last state recorded for a puller of the pipeline.
    async fn puller_state(&self, pipeline: &PipelineKey, puller: &str) -> Result<Option<String>>;

    /// How many of these passengers are in each state, for a run that waits until what it
    /// seated is delivered. Unknown ids (purged) are not counted.
    async fn progress(&self, ids: &[PassengerId]) -> Result<StateCounts>;

    /// Leases up to `max` passengers of the pipeline whose work is due (pending, failed and
    /// due, or in flight with an expired lease), oldest due first, until `now + lease_for`,
    /// for the node this handle joined as (see [`Store::join`]).
    async fn lease(
        &self,
        pipeline: &PipelineKey,
        max: usize,
        lease_for: std::time::Duration,
        now: Timestamp,
    ) -> Result<Vec<Leased>>;

    /// Records what workers did, in one transaction. A report whose lease token no longer
    /// matches (the lease expired and someone else took it) is ignored. Returns how many
    /// reports were applied.
    async fn finish(&self, reports: &[Finished], now: Timestamp) -> Result<usize>;

    /// Gives leased passengers back unchanged, due now (used at shutdown).
    async fn release(&self, leases: &[(PassengerId, LeaseToken)], now: Timestamp) -> Result<()>;

    /// The leases held by nodes that no longer run — whose last heartbeat is before
    /// `dead_before`, or that are not registered at all (an earlier version of ferry took
    /// them) — with their passengers' steps (open steps show as in flight), so that the
    /// interrupted attempt can be counted (issue 12). Never this handle's own node's.
    async fn abandoned_leases(&self, dead_before: Timestamp) -> Result<Vec<Abandoned>>;

    /// Records the interrupted attempts of abandoned leases like [`Store::finish`], and marks
    /// those passengers to be leased alone until their results are recorded: a passenger that
    /// kills the process then cannot take its batch-mates down with it, and goes dead after
    /// its attempts instead of crash-looping. Returns how many reports applied.
    async fn record_interrupted(&self, reports: &[Finished], now: Timestamp) -> Result<usize>;

    /// Gives back every lease held by nodes that no longer run (as [`Store::abandoned_leases`]
    /// tells them), due now; returns how many passengers it released.
    async fn recover_leases(&self, dead_before: Timestamp, now: Timestamp) -> Result<u64>;

    /// Passengers of the pipeline that still have work (pending, in flight or failed).
    async fn open_count(&self, pipeline: &PipelineKey) -> Result<u64>;

    /// The earliest time work of the pipeline falls due, if any is open.
    async fn next_due(&self, pipeline: &PipelineKey) -> Result<Option<Timestamp>>;

    /// Passenger counts per state for each pipeline (of one client, or of all).
    async fn counts(&self, client: Option<&str>) -> Result<BTreeMap<PipelineKey, StateCounts>>;

    /// A page of the queue, newest first — by creation time when the filter names a client and
    /// a time range, by id (which follows creation) otherwise; `before` is the last id of the
    /// previous page, and must still be in the queue when the list has a time range.
    async fn list(
        &self,
        filter: &QueueFilter,
        before: Option<PassengerId>,
        limit: usize,
    ) -> Result<Vec<QueueEntry>>;

    /// Everything about one passenger.
    async fn get(&self, id: PassengerId) -> Result<PassengerDetail>;

    /// Makes the failed and dead steps of a passenger pending again, with fresh attempts.
    async fn retry(&self, id: PassengerId, now: Timestamp) -> Result<()>;

    /// Marks a passenger discarded: its open and dead steps are skipped; the cleaner purges it.
    async fn discard(&self, id: PassengerId, now: Timestamp) -> Result<()>;

    /// Sends a passenger again from the start with the pipeline's current steps: processors
    /// run again on the original as pulled, then every pusher.
    async fn replay(&self, id: PassengerId, steps: &[StepDef], now: Timestamp) -> Result<()>;

    /// Marks one step of a passenger skipped (it is not run); only a pending, failed or dead
    /// step can be skipped, and never while the passenger is leased. Errors with
    /// `StoreError::Refused` otherwise.
    async fn skip_step(&self, id: PassengerId, step: u32, now: Timestamp) -> Result<()>;

    /// The client and pipeline a passenger belongs to, if it exists (cheap: for access checks).
    async fn owner(&self, id: PassengerId) -> Result<Option<PipelineKey>>;

    /// Passengers a `split` processor made of `parent`, in the order they were made.
    async fn children(&self, parent: PassengerId) -> Result<Vec<QueueEntry>>;

    /// Dead passengers grouped by pipeline and error (of one client, or of all), largest group
    /// first.
    async fn dead_groups(&self, client: Option<&str>) -> Result<Vec<DeadGroup>>;

    /// Quarantines input items a puller of `pipeline` could not take. An item already
    /// quarantined with the same fingerprint only counts one more sighting; a new or changed
    /// one starts afresh. Returns, for each item, whether it is newly quarantined.
    async fn quarantine(
        &self,
        pipeline: &PipelineKey,
        items: &[Untakeable],
        now: Timestamp,
    ) -> Result<Vec<bool>>;

    /// Quarantined items of one pipeline (discarded ones too: pullers skip them), or the
    /// listed ones (not discarded) of one client or of all, oldest first.
    async fn quarantined(
        &self,
        pipeline: Option<&PipelineKey>,
        client: Option<&str>,
    ) -> Result<Vec<Quarantined>>;

    /// Ends the quarantine of item `id` of `client` (of any client when `None`): `retry`
    /// removes it, so the next pull takes it again; otherwise it is discarded. Returns the
    /// item as it was, or `None` when that client has no such item.
    async fn end_quarantine(
        &self,
        id: i64,
        client: Option<&str>,
        retry: bool,
    ) -> Result<Option<Quarantined>>;

    /// Ends the quarantine of `items` of puller `puller` of `pipeline`: they changed or are
    /// gone.
    async fn release_quarantined(
        &self,
        pipeline: &PipelineKey,
        puller: &str,
        items: &[String],
    ) -> Result<()>;

    /// Ids of the dead passengers of one group, oldest first, at most `limit`.
    async fn dead_ids(
        &self,
        pipeline: &PipelineKey,
        error: &str,
        limit: usize,
    ) -> Result<Vec<PassengerId>>;

    /// The creation time of the oldest passenger with open work, per pipeline.
    async fn oldest_open(&self) -> Result<BTreeMap<PipelineKey, Timestamp>>;

    /// Deletes the client's complete, filtered and discarded passengers finished before
    /// `before`; never an open or dead one. Returns how many were deleted.
    async fn purge_passengers(&self, client: &str, before: Timestamp) -> Result<u64>;

    /// Adds up to `limit` passengers seated since the last call to the index the queue
    /// browser's text filter reads; returns how many. Called in the background: a search finds
    /// passengers not indexed yet too, only slower.
    async fn index_search(&self, limit: usize) -> Result<usize>;

    // ---- runs ----

    /// Records a run of the pipeline started at `now` by this handle's node.
    async fn start_run(
        &self,
        pipeline: &PipelineKey,
        version: &str,
        now: Timestamp,
    ) -> Result<RunId>;

    /// Appends lines to a run's log.
    async fn log_run(&self, run: RunId, lines: &[LogLine]) -> Result<()>;

    async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()>;

    /// Runs newest first, of one pipeline or all.
    async fn runs(&self, pipeline: Option<&PipelineKey>, limit: usize) -> Result<Vec<RunRecord>>;

    async fn run_logs(&self, run: RunId) -> Result<Vec<LogLine>>;

    /// A page of runs, newest first; `before` is the last id of the previous page.
    async fn runs_page(
        &self,
        filter: &RunFilter,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>>;

    /// One run.
    async fn run(&self, id: RunId) -> Result<Option<RunRecord>>;

    /// Passengers seated per pipeline (of one client, or of all) per `bucket` since `since`,
    /// summed from the runs' counts; empty buckets are left out.
    async fn throughput(
        &self,
        client: Option<&str>,
        since: Timestamp,
        bucket: std::time::Duration,
    ) -> Result<Vec<Throughput>>;

    /// Deletes the client's finished runs (and their logs) that finished before `before`.
    async fn purge_runs(&self, client: &str, before: Timestamp) -> Result<u64>;

    /// Marks runs left `running` by nodes that no longer run (as [`Store::abandoned_leases`]
    /// tells them) as failed.
    async fn abandon_running_runs(&self, dead_before: Timestamp, now: Timestamp) -> Result<u64>;

    /// Claims the start of a scheduled run: `slot` is the time the schedule fired. Only the
    /// first node to claim a slot gets `true`, so several nodes never start the same run twice.
    async fn claim_slot(&self, pipeline: &PipelineKey, slot: Timestamp) -> Result<bool>;

    /// Takes or renews the right to pull `pipeline` for this handle's node until `until`;
    /// `false` while another node holds it (until its hold expires at `now`).
    async fn hold_pull(
        &self,
        pipeline: &PipelineKey,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool>;

    /// Gives up this handle's node's right to pull `pipeline`, so another node may take it.
    async fn drop_pull(&self, pipeline: &PipelineKey) -> Result<()>;

    // ---- the store as a whole ----

    /// Writes a consistent copy of the whole store, as of one moment, to the new file `to`
    /// while the store stays in use (SQLite); the file appears only once complete. A store
    /// on a database server refuses: its server's own tools back it up.
    async fn backup(&self, to: &Path) -> Result<()>;

    // ---- nodes: the processes working one store ----

    /// Whether other processes may work this store at the same time (PostgreSQL). When not
    /// (SQLite: `ferry run` locks the project), every other node is dead once this one runs.
    fn is_shared(&self) -> bool;

    /// Registers this handle as a node named `name` (host, process), alive at `now`: the
    /// leases it takes, the runs it starts and the pulls it holds are then the node's.
    async fn join(&self, name: &str, now: Timestamp) -> Result<NodeId>;

    /// Records that this handle's node is alive at `now`. `false` when the node is no longer
    /// registered: others took it for dead (its heartbeat came too late) and took back its
    /// leases, so it must join again.
    async fn heartbeat(&self, now: Timestamp) -> Result<bool>;

    /// The registered nodes, oldest first.
    async fn nodes(&self) -> Result<Vec<Node>>;

    /// Forgets the nodes whose last heartbeat is before `dead_before` (once their leases and
    /// runs were recovered), and this handle's own node when `leaving`; returns how many.
    async fn forget_nodes(&self, dead_before: Timestamp, leaving: bool) -> Result<u64>;

    // ---- the console: sessions, API tokens, audit log ----

    async fn create_session(&self, id_hash: &str, session: &Session) -> Result<()>;

    /// The session with this hash, unless it expired by `now`.
    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<Session>>;

    /// Ends a session (logout); expired sessions are deleted by `purge_sessions`.
    async fn delete_session(&self, id_hash: &str) -> Result<()>;

    /// Deletes the sessions that expired before `now`; returns how many.
    async fn purge_sessions(&self, now: Timestamp) -> Result<u64>;

    /// Stores a new token under the SHA-256 of its secret; returns its id. `token.id` and
    /// `token.last_used_at` are ignored.
    async fn create_token(&self, hash: &str, token: &ApiToken) -> Result<i64>;

    /// The token with this hash, and records that it was used at `now` (at most once a minute,
    /// so API calls do not each cost a write).
    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<Option<ApiToken>>;

    /// Tokens of one client, or of all, newest first.
    async fn tokens(&self, client: Option<&str>) -> Result<Vec<ApiToken>>;

    /// Deletes a token of the client; `false` when the client has no token with this id.
    async fn revoke_token(&self, client: &str, id: i64) -> Result<bool>;

    async fn audit(&self, entry: &AuditEntry) -> Result<()>;

    /// Audit entries newest first, of one client or all, about one target or all.
    async fn audit_log(
        &self,
        client: Option<&str>,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;

    // ---- pipeline flags ----

    /// Pauses or resumes a pipeline on a person's word; resuming forgets why it was paused.
    async fn set_paused(&self, pipeline: &PipelineKey, paused: bool) -> Result<()>;

    async fn paused(&self) -> Result<Vec<PipelineKey>>;

    /// Pauses a pipeline on ferry's own decision, saying why (e.g. too many failed runs).
    async fn pause_for(&self, pipeline: &PipelineKey, reason: &str) -> Result<()>;

    /// Why ferry paused pipelines by itself, for the ones it did.
    async fn pause_reasons(&self) -> Result<BTreeMap<PipelineKey, String>>;
}

/// Identifies a node: one running process working the store.
pub type NodeId = i64;

/// A running process working the store, as it registered itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub id: NodeId,
    /// Host and process, for people to read.
    pub name: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
}

/// Where a puller stands, recorded with the passengers it pulled up to there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullerState {
    /// The puller's name within its pipeline.
    pub puller: String,
    /// What the puller returned in `Pulled::state` (an incremental cursor, say).
    pub state: String,
}
