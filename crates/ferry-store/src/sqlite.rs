//! The SQLite store: ferry's default, embedded in the process, nothing to install.
//!
//! One file in WAL mode. All writes go through a single connection behind a mutex (SQLite
//! allows one writer at a time anyway), each trait call in one `BEGIN IMMEDIATE` transaction
//! committed with `synchronous=FULL`, so a commit that returned survives a crash or power cut.
//! Reads use a small pool of other connections: in WAL mode they see the last commit and never
//! wait for the writer. Every call runs on tokio's blocking pool, never on the async runtime.
//!
//! The schema is in `migrations/sqlite/`, applied in order at open and tracked with
//! `PRAGMA user_version`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::config::StepDef;
use ferry_core::{Passenger, PassengerId, Timestamp};
use rusqlite::{Connection, TransactionBehavior};
use tracing::warn;

use crate::{
    Abandoned, ApiToken, AuditEntry, DeadGroup, DefinitionVersion, Finished, LeaseToken, Leased,
    LogLine, Node, NodeId, PassengerDetail, PipelineKey, PullerState, Quarantined, QueueEntry,
    QueueFilter, Result, RunCounts, RunFilter, RunId, RunRecord, RunStatus, SeatResult, Session,
    StateCounts, Store, StoreError, Throughput, Untakeable,
};

mod browse;
mod console;
mod convert;
mod filtered;
mod nodes;
mod quarantine;
mod queue;
mod records;
mod rows;
mod schema;
mod search;

/// Idle reader connections kept open; more are opened when many reads run at once.
const MAX_IDLE_READERS: usize = 4;

/// Purgeable passengers deleted per transaction, so the cleaner never holds the writer for
/// long while workers wait to lease and finish.
const PURGE_CHUNK: usize = 5_000;

/// ferry's store in one SQLite file.
pub struct SqliteStore {
    /// The only connection that writes.
    writer: Arc<Mutex<Connection>>,
    readers: Arc<ReaderPool>,
    checkpointer: Checkpointer,
    /// The node this handle joined as (`Store::join`); 0 until it joins.
    node: AtomicI64,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its parent directories and migrating
    /// the schema when needed.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        blocking(move || {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|error| {
                    StoreError::Backend(
                        format!("cannot create directory {}: {error}", parent.display()).into(),
                    )
                })?;
            }
            let writer = schema::open_writer(&path)?;
            let checkpointer = Checkpointer::start(&path)?;
            Ok(SqliteStore {
                writer: Arc::new(Mutex::new(writer)),
                checkpointer,
                readers: Arc::new(ReaderPool {
                    path,
                    idle: Mutex::new(Vec::new()),
                }),
                node: AtomicI64::new(0),
            })
        })
        .await
    }

    /// The node this handle joined as, if it did.
    fn node(&self) -> Option<NodeId> {
        Some(self.node.load(Ordering::Relaxed)).filter(|&node| node != 0)
    }

    /// Runs `work` in one write transaction on the blocking pool; commits when it returns `Ok`.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        let checkpointer = self.checkpointer.clone();
        blocking(move || {
            let mut conn = lock(&writer);
            // IMMEDIATE takes the write lock now: a deferred transaction that upgrades later
            // can fail with SQLITE_BUSY when another process (the CLI) writes meanwhile.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = work(&tx)?;
            tx.commit()?;
            drop(conn);
            checkpointer.nudge();
            Ok(out)
        })
        .await
    }

    /// Like [`write`](Self::write), for work that can wait: when another process holds the
    /// database's write lock, returns `None` at once instead of keeping the store's writer
    /// waiting for it (up to the busy timeout) with it.
    async fn write_unless_busy<T, F>(&self, work: F) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        let checkpointer = self.checkpointer.clone();
        blocking(move || {
            let mut conn = lock(&writer);
            conn.busy_timeout(Duration::ZERO)?;
            let out = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .and_then(|tx| {
                    let out = work(&tx)?;
                    tx.commit()?;
                    Ok(out)
                });
            conn.busy_timeout(schema::BUSY_TIMEOUT)?;
            drop(conn);
            match out {
                Ok(out) => {
                    checkpointer.nudge();
                    Ok(Some(out))
                }
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if error.code == rusqlite::ErrorCode::DatabaseBusy =>
                {
                    Ok(None)
                }
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    /// Runs `work` in one read transaction (a consistent snapshot) on a reader connection.
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        blocking(move || {
            let mut conn = readers.take()?;
            let out = {
                let tx = conn.transaction()?;
                let out = work(&tx)?;
                tx.commit()?;
                out
            };
            readers.give_back(conn);
            Ok(out)
        })
        .await
    }
}

/// Copies committed pages from the write-ahead log back into the database file, on a thread
/// of its own: done by the writer (SQLite's default) it would stretch the transactions that
/// workers and pullers wait for. The writer nudges it after each commit; nudges that arrive
/// while it works are merged into one.
#[derive(Clone)]
struct Checkpointer {
    nudges: SyncSender<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = schema::open_checkpointer(path)?;
        let (nudges, nudged) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("ferry-checkpoint".into())
            .spawn(move || Checkpointer::run(&conn, &nudged))
            .map_err(|error| {
                StoreError::Backend(format!("cannot start the checkpoint thread: {error}").into())
            })?;
        Ok(Checkpointer { nudges })
    }

    fn nudge(&self) {
        // Full means a checkpoint is already due; disconnected cannot happen while we exist.
        let _ = self.nudges.try_send(());
    }

    /// Ends when the store is dropped, which drops the last sender.
    fn run(conn: &Connection, nudged: &Receiver<()>) {
        while nudged.recv().is_ok() {
            // PASSIVE: copy what no reader still needs, never wait for anyone. The writer's
            // own automatic checkpoint is the backstop should this fall behind.
            let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            if let Err(error) = result {
                warn!(%error, "background checkpoint failed");
            }
        }
    }
}

/// Connections for reading, opened on demand and kept for reuse.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(conn);
        }
        schema::open_reader(&self.path)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Locks a mutex even if a thread panicked while holding it: a panic inside a transaction
/// rolls it back when the transaction is dropped, so the connection is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs blocking SQLite work off the async runtime.
async fn blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => Err(StoreError::Backend(Box::new(join_error))),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn record_definition(
        &self,
        file: &str,
        hash: &str,
        content: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let (file, hash, content) = (file.to_owned(), hash.to_owned(), content.to_owned());
        self.write(move |conn| records::record_definition(conn, &file, &hash, &content, now))
            .await
    }

    async fn definition_versions(&self, file: &str) -> Result<Vec<DefinitionVersion>> {
        let file = file.to_owned();
        self.read(move |conn| records::definition_versions(conn, &file))
            .await
    }

    async fn seat_from(
        &self,
        pipeline: &PipelineKey,
        version: &str,
        steps: &[StepDef],
        passengers: &[Passenger],
        state: Option<&PullerState>,
        now: Timestamp,
    ) -> Result<Vec<SeatResult>> {
        if passengers.is_empty() && state.is_none() {
            return Ok(Vec::new());
        }
        let (key, version, steps) = (pipeline.clone(), version.to_owned(), steps.to_vec());
        // Cheap: bodies and attachments are reference-counted `Bytes`.
        let passengers = passengers.to_vec();
        let state = state.cloned();
        self.write(move |conn| {
            let results = queue::seat(conn, &key, &version, &steps, &passengers, now)?;
            if let Some(state) = &state {
                records::set_puller_state(conn, &key, state, now)?;
            }
            Ok(results)
        })
        .await
    }

    async fn puller_state(&self, pipeline: &PipelineKey, puller: &str) -> Result<Option<String>> {
        let (key, puller) = (pipeline.clone(), puller.to_owned());
        self.read(move |conn| records::puller_state(conn, &key, &puller))
            .await
    }

    async fn progress(&self, ids: &[PassengerId]) -> Result<StateCounts> {
        let ids = ids.to_vec();
        self.read(move |conn| queue::progress(conn, &ids)).await
    }

    async fn lease(
        &self,
        pipeline: &PipelineKey,
        max: usize,
        lease_for: Duration,
        now: Timestamp,
    ) -> Result<Vec<Leased>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let key = pipeline.clone();
        let claim_key = key.clone();
        let node = self.node();
        let claim = self
            .write(move |conn| queue::claim(conn, &claim_key, max, lease_for, node, now))
            .await?;
        if claim.passengers.is_empty() {
            return Ok(Vec::new());
        }
        // The content is read after the claim committed, on a reader: nobody else writes a
        // claimed passenger while the lease holds, and the writer serves other calls meanwhile.
        // Should this read fail, the claimed passengers come back when the lease expires.
        self.read(move |conn| queue::load_leased(conn, &key, claim))
            .await
    }

    async fn finish(&self, reports: &[Finished], now: Timestamp) -> Result<usize> {
        if reports.is_empty() {
            return Ok(0);
        }
        let reports = reports.to_vec();
        self.write(move |conn| queue::finish(conn, &reports, now))
            .await
    }

    async fn release(&self, leases: &[(PassengerId, LeaseToken)], now: Timestamp) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let leases = leases.to_vec();
        self.write(move |conn| queue::release(conn, &leases, now))
            .await
    }

    async fn quarantine(
        &self,
        pipeline: &PipelineKey,
        items: &[Untakeable],
        now: Timestamp,
    ) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (key, items) = (pipeline.clone(), items.to_vec());
        self.write(move |conn| quarantine::quarantine(conn, &key, &items, now))
            .await
    }

    async fn quarantined(
        &self,
        pipeline: Option<&PipelineKey>,
        client: Option<&str>,
    ) -> Result<Vec<Quarantined>> {
        let (key, client) = (pipeline.cloned(), client.map(str::to_owned));
        self.read(move |conn| quarantine::list(conn, key.as_ref(), client.as_deref()))
            .await
    }

    async fn end_quarantine(
        &self,
        id: i64,
        client: Option<&str>,
        retry: bool,
    ) -> Result<Option<Quarantined>> {
        let client = client.map(str::to_owned);
        self.write(move |conn| quarantine::end(conn, id, client.as_deref(), retry))
            .await
    }

    async fn release_quarantined(
        &self,
        pipeline: &PipelineKey,
        puller: &str,
        items: &[String],
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let (key, puller, items) = (pipeline.clone(), puller.to_owned(), items.to_vec());
        self.write(move |conn| quarantine::release(conn, &key, &puller, &items))
            .await
    }

    async fn abandoned_leases(&self, dead_before: Timestamp) -> Result<Vec<Abandoned>> {
        let node = self.node();
        self.read(move |conn| queue::abandoned_leases(conn, dead_before, node))
            .await
    }

    async fn record_interrupted(&self, reports: &[Finished], now: Timestamp) -> Result<usize> {
        if reports.is_empty() {
            return Ok(0);
        }
        let reports = reports.to_vec();
        self.write(move |conn| queue::record_interrupted(conn, &reports, now))
            .await
    }

    async fn recover_leases(&self, dead_before: Timestamp, now: Timestamp) -> Result<u64> {
        let node = self.node();
        self.write(move |conn| queue::recover_leases(conn, dead_before, node, now))
            .await
    }

    async fn open_count(&self, pipeline: &PipelineKey) -> Result<u64> {
        let key = pipeline.clone();
        self.read(move |conn| browse::open_count(conn, &key)).await
    }

    async fn next_due(&self, pipeline: &PipelineKey) -> Result<Option<Timestamp>> {
        let key = pipeline.clone();
        self.read(move |conn| browse::next_due(conn, &key)).await
    }

    async fn counts(&self, client: Option<&str>) -> Result<BTreeMap<PipelineKey, StateCounts>> {
        let client = client.map(str::to_owned);
        self.read(move |conn| browse::counts(conn, client.as_deref()))
            .await
    }

    async fn list(
        &self,
        filter: &QueueFilter,
        before: Option<PassengerId>,
        limit: usize,
    ) -> Result<Vec<QueueEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = filter.clone();
        self.read(move |conn| browse::list(conn, &filter, before, limit))
            .await
    }

    async fn get(&self, id: PassengerId) -> Result<PassengerDetail> {
        self.read(move |conn| browse::get(conn, id)).await
    }

    async fn retry(&self, id: PassengerId, now: Timestamp) -> Result<()> {
        self.write(move |conn| queue::retry(conn, id, now)).await
    }

    async fn discard(&self, id: PassengerId, now: Timestamp) -> Result<()> {
        self.write(move |conn| queue::discard(conn, id, now)).await
    }

    async fn replay(&self, id: PassengerId, steps: &[StepDef], now: Timestamp) -> Result<()> {
        let steps = steps.to_vec();
        self.write(move |conn| queue::replay(conn, id, &steps, now))
            .await
    }

    async fn skip_step(&self, id: PassengerId, step: u32, now: Timestamp) -> Result<()> {
        self.write(move |conn| queue::skip_step(conn, id, step, now))
            .await
    }

    async fn owner(&self, id: PassengerId) -> Result<Option<PipelineKey>> {
        self.read(move |conn| browse::owner(conn, id)).await
    }

    async fn children(&self, parent: PassengerId) -> Result<Vec<QueueEntry>> {
        self.read(move |conn| browse::children(conn, parent)).await
    }

    async fn dead_groups(&self, client: Option<&str>) -> Result<Vec<DeadGroup>> {
        let client = client.map(str::to_owned);
        self.read(move |conn| browse::dead_groups(conn, client.as_deref()))
            .await
    }

    async fn dead_ids(
        &self,
        pipeline: &PipelineKey,
        error: &str,
        limit: usize,
    ) -> Result<Vec<PassengerId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (key, error) = (pipeline.clone(), error.to_owned());
        self.read(move |conn| browse::dead_ids(conn, &key, &error, limit))
            .await
    }

    async fn oldest_open(&self) -> Result<BTreeMap<PipelineKey, Timestamp>> {
        self.read(browse::oldest_open).await
    }

    async fn purge_passengers(&self, client: &str, before: Timestamp) -> Result<u64> {
        // Several short transactions instead of one: a purge of a million passengers must not
        // stop the workers for its whole duration. Each chunk is complete on its own.
        let mut purged = 0;
        loop {
            let client = client.to_owned();
            let deleted = self
                .write(move |conn| queue::purge_chunk(conn, &client, before, PURGE_CHUNK))
                .await?;
            purged += deleted as u64;
            if deleted < PURGE_CHUNK {
                return Ok(purged);
            }
        }
    }

    async fn index_search(&self, limit: usize) -> Result<usize> {
        let done = self
            .write_unless_busy(move |conn| search::index(conn, limit))
            .await?;
        Ok(done.unwrap_or(0))
    }

    async fn start_run(
        &self,
        pipeline: &PipelineKey,
        version: &str,
        now: Timestamp,
    ) -> Result<RunId> {
        let (key, version, node) = (pipeline.clone(), version.to_owned(), self.node());
        self.write(move |conn| records::start_run(conn, &key, &version, node, now))
            .await
    }

    async fn log_run(&self, run: RunId, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let lines = lines.to_vec();
        self.write(move |conn| records::log_run(conn, run, &lines))
            .await
    }

    async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let error = error.map(str::to_owned);
        self.write(move |conn| {
            records::finish_run(conn, run, status, counts, error.as_deref(), now)
        })
        .await
    }

    async fn runs(&self, pipeline: Option<&PipelineKey>, limit: usize) -> Result<Vec<RunRecord>> {
        let key = pipeline.cloned();
        self.read(move |conn| records::runs(conn, key.as_ref(), limit))
            .await
    }

    async fn run_logs(&self, run: RunId) -> Result<Vec<LogLine>> {
        self.read(move |conn| records::run_logs(conn, run)).await
    }

    async fn runs_page(
        &self,
        filter: &RunFilter,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = filter.clone();
        self.read(move |conn| records::runs_page(conn, &filter, before, limit))
            .await
    }

    async fn run(&self, id: RunId) -> Result<Option<RunRecord>> {
        self.read(move |conn| records::run(conn, id)).await
    }

    async fn throughput(
        &self,
        client: Option<&str>,
        since: Timestamp,
        bucket: Duration,
    ) -> Result<Vec<Throughput>> {
        let client = client.map(str::to_owned);
        self.read(move |conn| records::throughput(conn, client.as_deref(), since, bucket))
            .await
    }

    async fn purge_runs(&self, client: &str, before: Timestamp) -> Result<u64> {
        let client = client.to_owned();
        self.write(move |conn| records::purge_runs(conn, &client, before))
            .await
    }

    async fn abandon_running_runs(&self, dead_before: Timestamp, now: Timestamp) -> Result<u64> {
        let node = self.node();
        self.write(move |conn| records::abandon_running_runs(conn, dead_before, node, now))
            .await
    }

    async fn claim_slot(&self, pipeline: &PipelineKey, slot: Timestamp) -> Result<bool> {
        let (key, node) = (pipeline.clone(), self.node());
        self.write(move |conn| nodes::claim_slot(conn, &key, slot, node))
            .await
    }

    async fn hold_pull(
        &self,
        pipeline: &PipelineKey,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let (key, node) = (pipeline.clone(), self.node());
        self.write(move |conn| nodes::hold_pull(conn, &key, node, until, now))
            .await
    }

    async fn drop_pull(&self, pipeline: &PipelineKey) -> Result<()> {
        let (key, node) = (pipeline.clone(), self.node());
        self.write(move |conn| nodes::drop_pull(conn, &key, node))
            .await
    }

    async fn backup(&self, to: &Path) -> Result<()> {
        let (from, to) = (self.readers.path.clone(), to.to_path_buf());
        blocking(move || schema::backup(&from, &to)).await
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn join(&self, name: &str, now: Timestamp) -> Result<NodeId> {
        let name = name.to_owned();
        let node = self
            .write(move |conn| nodes::join(conn, &name, now))
            .await?;
        self.node.store(node, Ordering::Relaxed);
        Ok(node)
    }

    async fn heartbeat(&self, now: Timestamp) -> Result<bool> {
        let Some(node) = self.node() else {
            return Ok(false);
        };
        self.write(move |conn| nodes::heartbeat(conn, node, now))
            .await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        self.read(nodes::nodes).await
    }

    async fn forget_nodes(&self, dead_before: Timestamp, leaving: bool) -> Result<u64> {
        let node = self.node();
        self.write(move |conn| nodes::forget(conn, dead_before, node, leaving))
            .await
    }

    async fn create_session(&self, id_hash: &str, session: &Session) -> Result<()> {
        let (id_hash, session) = (id_hash.to_owned(), session.clone());
        self.write(move |conn| console::create_session(conn, &id_hash, &session))
            .await
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<Session>> {
        let id_hash = id_hash.to_owned();
        self.read(move |conn| console::session(conn, &id_hash, now))
            .await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| console::delete_session(conn, &id_hash))
            .await
    }

    async fn purge_sessions(&self, now: Timestamp) -> Result<u64> {
        self.write(move |conn| console::purge_sessions(conn, now))
            .await
    }

    async fn create_token(&self, hash: &str, token: &ApiToken) -> Result<i64> {
        let (hash, token) = (hash.to_owned(), token.clone());
        self.write(move |conn| console::create_token(conn, &hash, &token))
            .await
    }

    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<Option<ApiToken>> {
        let owned = hash.to_owned();
        let found = self
            .read(move |conn| console::find_token(conn, &owned))
            .await?;
        match found {
            // Recently recorded: no write transaction on every API call.
            Some(token)
                if token
                    .last_used_at
                    .is_some_and(|at| now - at < chrono::Duration::seconds(60)) =>
            {
                Ok(Some(token))
            }
            Some(_) => {
                let hash = hash.to_owned();
                self.write(move |conn| console::use_token(conn, &hash, now))
                    .await
            }
            None => Ok(None),
        }
    }

    async fn tokens(&self, client: Option<&str>) -> Result<Vec<ApiToken>> {
        let client = client.map(str::to_owned);
        self.read(move |conn| console::tokens(conn, client.as_deref()))
            .await
    }

    async fn revoke_token(&self, client: &str, id: i64) -> Result<bool> {
        let client = client.to_owned();
        self.write(move |conn| console::revoke_token(conn, &client, id))
            .await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let entry = entry.clone();
        self.write(move |conn| console::audit(conn, &entry)).await
    }

    async fn audit_log(
        &self,
        client: Option<&str>,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (client, target) = (client.map(str::to_owned), target.map(str::to_owned));
        self.read(move |conn| console::audit_log(conn, client.as_deref(), target.as_deref(), limit))
            .await
    }

    async fn set_paused(&self, pipeline: &PipelineKey, paused: bool) -> Result<()> {
        let key = pipeline.clone();
        self.write(move |conn| records::set_paused(conn, &key, paused))
            .await
    }

    async fn paused(&self) -> Result<Vec<PipelineKey>> {
        self.read(records::paused).await
    }

    async fn pause_for(&self, pipeline: &PipelineKey, reason: &str) -> Result<()> {
        let (key, reason) = (pipeline.clone(), reason.to_owned());
        self.write(move |conn| records::pause_for(conn, &key, &reason))
            .await
    }

    async fn pause_reasons(&self) -> Result<BTreeMap<PipelineKey, String>> {
        self.read(records::pause_reasons).await
    }
}
