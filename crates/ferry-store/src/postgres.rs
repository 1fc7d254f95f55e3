//! The PostgreSQL store: for several ferry processes (nodes) sharing one queue.
//!
//! Opened with a `postgres://` or `postgresql://` URL; its tables live in one schema (the URL's
//! `schema=NAME`, default `ferry`), which is every connection's `search_path`. Connections come
//! from a deadpool pool. Every trait call that writes runs in one transaction (READ COMMITTED)
//! whatever the number of passengers it is given, with batch statements over arrays
//! (`unnest`), never a statement per passenger. A passenger's state lives in the narrow,
//! lightly indexed `queue` table apart from what never changes (`passengers`) and its content
//! (`payloads`). Leases take `queue` rows with `FOR NO KEY UPDATE SKIP LOCKED`, so nodes
//! leasing at once never wait for each other nor share a passenger; writes that change
//! passengers lock their `queue` rows in `seq` order first, so they cannot deadlock.
//!
//! The schema is in `migrations/postgres/`, applied at open under an advisory lock (nodes may
//! start together) and tracked in `schema_migrations`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use ferry_core::config::StepDef;
use ferry_core::{Passenger, PassengerId, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::{
    Abandoned, ApiToken, AuditEntry, DeadGroup, DefinitionVersion, Finished, LeaseToken, Leased,
    LogLine, Node, NodeId, PassengerDetail, PipelineKey, PullerState, Quarantined, QueueEntry,
    QueueFilter, Result, RunCounts, RunFilter, RunId, RunRecord, RunStatus, SeatResult, Session,
    StateCounts, Store, StoreError, Throughput, Untakeable,
};

mod browse;
mod config;
mod console;
mod nodes;
mod quarantine;
mod queue;
mod records;
mod rows;
mod schema;
mod search;

pub(crate) use config::{quote_identifier, redact};

/// Connections kept by one store. Calls beyond this many at once wait for a free one.
const POOL_SIZE: usize = 16;

/// How long opening a connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call waits for a free connection when all are busy, before it fails (to be
/// retried, as every store error but `NotFound` and `Refused`).
const POOL_WAIT: Duration = Duration::from_secs(30);

/// Purgeable passengers deleted per transaction, so the cleaner never holds row locks for
/// long while workers lease and finish.
const PURGE_CHUNK: usize = 5_000;

/// ferry's store in a PostgreSQL schema.
pub struct PostgresStore {
    pool: Pool,
    /// The node this handle joined as (`Store::join`); 0 until it joins.
    node: AtomicI64,
}

impl PostgresStore {
    /// Opens the store at `url` (`postgres://…` or `postgresql://…`, with `schema=NAME` and
    /// `sslmode=` among its parameters), creating its schema and migrating it when needed.
    pub async fn open(url: &str) -> Result<Self> {
        let target = config::parse(url)?;
        let tls = config::connector(target.tls, target.root_cert.as_deref())?;
        let manager = Manager::from_config(
            target.config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|error| StoreError::Backend(format!("connection pool: {error}").into()))?;
        let store = PostgresStore {
            pool,
            node: AtomicI64::new(0),
        };
        let conn = store.conn().await?;
        schema::migrate(&conn, &target.schema).await?;
        Ok(store)
    }

    /// The node this handle joined as, if it did.
    fn node(&self) -> Option<NodeId> {
        Some(self.node.load(Ordering::Relaxed)).filter(|&node| node != 0)
    }

    /// A connection from the pool.
    async fn conn(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => StoreError::Backend(format!("connection pool: {other}").into()),
        })
    }
}

/// Runs `$body` (which uses `$tx`, a transaction) on a pooled connection and commits when it
/// returns; an error (`?`) drops the transaction, which rolls it back.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let $tx = conn.transaction().await?;
        let out = $body;
        $tx.commit().await?;
        Ok::<_, StoreError>(out)
    }};
}

/// Runs `$body` (which uses `$tx`) in one read-only snapshot, for reads of several statements
/// that must agree with each other.
macro_rules! in_snapshot {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let $tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let out = $body;
        $tx.commit().await?;
        Ok::<_, StoreError>(out)
    }};
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

/// A parameter list.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The rows of `sql`, prepared once per connection.
async fn query(db: &impl GenericClient, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.query(&statement, params).await?)
}

/// The row of `sql`, if it returns one.
async fn query_opt(db: &impl GenericClient, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.query_opt(&statement, params).await?)
}

/// The one row `sql` returns.
async fn query_one(db: &impl GenericClient, sql: &str, params: &Params<'_>) -> Result<Row> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.query_one(&statement, params).await?)
}

/// Runs `sql`; returns how many rows it changed.
async fn execute(db: &impl GenericClient, sql: &str, params: &Params<'_>) -> Result<u64> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.execute(&statement, params).await?)
}

/// A count or limit as the `bigint` PostgreSQL takes.
fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn record_definition(
        &self,
        file: &str,
        hash: &str,
        content: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let conn = self.conn().await?;
        records::record_definition(&conn, file, hash, content, now).await
    }

    async fn definition_versions(&self, file: &str) -> Result<Vec<DefinitionVersion>> {
        let conn = self.conn().await?;
        records::definition_versions(&conn, file).await
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
        in_transaction!(self, |tx| {
            let results = queue::seat(&tx, pipeline, version, steps, passengers, now).await?;
            if let Some(state) = state {
                records::set_puller_state(&tx, pipeline, state, now).await?;
            }
            results
        })
    }

    async fn puller_state(&self, pipeline: &PipelineKey, puller: &str) -> Result<Option<String>> {
        let conn = self.conn().await?;
        records::puller_state(&conn, pipeline, puller).await
    }

    async fn progress(&self, ids: &[PassengerId]) -> Result<StateCounts> {
        let conn = self.conn().await?;
        queue::progress(&conn, ids).await
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
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let claim = queue::claim(&tx, pipeline, max, lease_for, self.node(), now).await?;
        tx.commit().await?;
        if claim.passengers.is_empty() {
            return Ok(Vec::new());
        }
        // The content is read after the claim committed, so the claimed rows' locks are held
        // no longer than the claim: nobody else writes a claimed passenger while the lease
        // holds. Should this read fail, the passengers come back when the lease expires.
        queue::load_leased(&conn, pipeline, claim).await
    }

    async fn finish(&self, reports: &[Finished], now: Timestamp) -> Result<usize> {
        if reports.is_empty() {
            return Ok(0);
        }
        in_transaction!(self, |tx| queue::finish(&tx, reports, now).await?)
    }

    async fn release(&self, leases: &[(PassengerId, LeaseToken)], now: Timestamp) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        in_transaction!(self, |tx| queue::release(&tx, leases, now).await?)
    }

    async fn abandoned_leases(&self, dead_before: Timestamp) -> Result<Vec<Abandoned>> {
        let node = self.node();
        in_snapshot!(self, |tx| queue::abandoned_leases(&tx, dead_before, node)
            .await?)
    }

    async fn record_interrupted(&self, reports: &[Finished], now: Timestamp) -> Result<usize> {
        if reports.is_empty() {
            return Ok(0);
        }
        in_transaction!(self, |tx| queue::record_interrupted(&tx, reports, now)
            .await?)
    }

    async fn recover_leases(&self, dead_before: Timestamp, now: Timestamp) -> Result<u64> {
        let node = self.node();
        in_transaction!(self, |tx| queue::recover_leases(
            &tx,
            dead_before,
            node,
            now
        )
        .await?)
    }

    async fn open_count(&self, pipeline: &PipelineKey) -> Result<u64> {
        let conn = self.conn().await?;
        browse::open_count(&conn, pipeline).await
    }

    async fn next_due(&self, pipeline: &PipelineKey) -> Result<Option<Timestamp>> {
        let conn = self.conn().await?;
        browse::next_due(&conn, pipeline).await
    }

    async fn counts(&self, client: Option<&str>) -> Result<BTreeMap<PipelineKey, StateCounts>> {
        let conn = self.conn().await?;
        browse::counts(&conn, client).await
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
        in_snapshot!(self, |tx| browse::list(&tx, filter, before, limit).await?)
    }

    async fn get(&self, id: PassengerId) -> Result<PassengerDetail> {
        in_snapshot!(self, |tx| browse::get(&tx, id).await?)
    }

    async fn retry(&self, id: PassengerId, now: Timestamp) -> Result<()> {
        in_transaction!(self, |tx| queue::retry(&tx, id, now).await?)
    }

    async fn discard(&self, id: PassengerId, now: Timestamp) -> Result<()> {
        in_transaction!(self, |tx| queue::discard(&tx, id, now).await?)
    }

    async fn replay(&self, id: PassengerId, steps: &[StepDef], now: Timestamp) -> Result<()> {
        in_transaction!(self, |tx| queue::replay(&tx, id, steps, now).await?)
    }

    async fn skip_step(&self, id: PassengerId, step: u32, now: Timestamp) -> Result<()> {
        in_transaction!(self, |tx| queue::skip_step(&tx, id, step, now).await?)
    }

    async fn owner(&self, id: PassengerId) -> Result<Option<PipelineKey>> {
        let conn = self.conn().await?;
        browse::owner(&conn, id).await
    }

    async fn children(&self, parent: PassengerId) -> Result<Vec<QueueEntry>> {
        let conn = self.conn().await?;
        browse::children(&conn, parent).await
    }

    async fn dead_groups(&self, client: Option<&str>) -> Result<Vec<DeadGroup>> {
        let conn = self.conn().await?;
        browse::dead_groups(&conn, client).await
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
        in_transaction!(self, |tx| quarantine::quarantine(&tx, pipeline, items, now)
            .await?)
    }

    async fn quarantined(
        &self,
        pipeline: Option<&PipelineKey>,
        client: Option<&str>,
    ) -> Result<Vec<Quarantined>> {
        let conn = self.conn().await?;
        quarantine::list(&conn, pipeline, client).await
    }

    async fn end_quarantine(
        &self,
        id: i64,
        client: Option<&str>,
        retry: bool,
    ) -> Result<Option<Quarantined>> {
        in_transaction!(self, |tx| quarantine::end(&tx, id, client, retry).await?)
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
        let conn = self.conn().await?;
        quarantine::release(&conn, pipeline, puller, items).await
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
        let conn = self.conn().await?;
        browse::dead_ids(&conn, pipeline, error, limit).await
    }

    async fn oldest_open(&self) -> Result<BTreeMap<PipelineKey, Timestamp>> {
        let conn = self.conn().await?;
        browse::oldest_open(&conn).await
    }

    async fn purge_passengers(&self, client: &str, before: Timestamp) -> Result<u64> {
        // Several short transactions instead of one: a purge of a million passengers must not
        // hold its locks for its whole duration. Each chunk is complete on its own.
        let mut purged = 0;
        loop {
            let deleted: usize = in_transaction!(self, |tx| {
                queue::purge_chunk(&tx, client, before, PURGE_CHUNK).await?
            })?;
            purged += deleted as u64;
            if deleted < PURGE_CHUNK {
                break;
            }
        }
        // Each chunk appended its count deltas; fold them now rather than leave them all to
        // the next `index_search`.
        if purged > 0 {
            let _: () = in_transaction!(self, |tx| queue::compact_counts(&tx).await?)?;
        }
        Ok(purged)
    }

    async fn index_search(&self, limit: usize) -> Result<usize> {
        // Background upkeep: the counts' deltas are folded here too, in a transaction of their
        // own.
        let indexed = in_transaction!(self, |tx| search::index(&tx, limit).await?)?;
        let _: () = in_transaction!(self, |tx| queue::compact_counts(&tx).await?)?;
        Ok(indexed)
    }

    async fn start_run(
        &self,
        pipeline: &PipelineKey,
        version: &str,
        now: Timestamp,
    ) -> Result<RunId> {
        let conn = self.conn().await?;
        records::start_run(&conn, pipeline, version, self.node(), now).await
    }

    async fn log_run(&self, run: RunId, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let conn = self.conn().await?;
        records::log_run(&conn, run, lines).await
    }

    async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        let conn = self.conn().await?;
        records::finish_run(&conn, run, status, counts, error, now).await
    }

    async fn runs(&self, pipeline: Option<&PipelineKey>, limit: usize) -> Result<Vec<RunRecord>> {
        let conn = self.conn().await?;
        records::runs(&conn, pipeline, limit).await
    }

    async fn run_logs(&self, run: RunId) -> Result<Vec<LogLine>> {
        let conn = self.conn().await?;
        records::run_logs(&conn, run).await
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
        let conn = self.conn().await?;
        records::runs_page(&conn, filter, before, limit).await
    }

    async fn run(&self, id: RunId) -> Result<Option<RunRecord>> {
        let conn = self.conn().await?;
        records::run(&conn, id).await
    }

    async fn throughput(
        &self,
        client: Option<&str>,
        since: Timestamp,
        bucket: Duration,
    ) -> Result<Vec<Throughput>> {
        let conn = self.conn().await?;
        records::throughput(&conn, client, since, bucket).await
    }

    async fn purge_runs(&self, client: &str, before: Timestamp) -> Result<u64> {
        let conn = self.conn().await?;
        records::purge_runs(&conn, client, before).await
    }

    async fn abandon_running_runs(&self, dead_before: Timestamp, now: Timestamp) -> Result<u64> {
        let conn = self.conn().await?;
        records::abandon_running_runs(&conn, dead_before, self.node(), now).await
    }

    async fn claim_slot(&self, pipeline: &PipelineKey, slot: Timestamp) -> Result<bool> {
        let conn = self.conn().await?;
        nodes::claim_slot(&conn, pipeline, slot, self.node()).await
    }

    async fn hold_pull(
        &self,
        pipeline: &PipelineKey,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool> {
        let conn = self.conn().await?;
        nodes::hold_pull(&conn, pipeline, self.node(), until, now).await
    }

    async fn drop_pull(&self, pipeline: &PipelineKey) -> Result<()> {
        let conn = self.conn().await?;
        nodes::drop_pull(&conn, pipeline, self.node()).await
    }

    async fn backup(&self, _to: &Path) -> Result<()> {
        Err(StoreError::Refused(
            "a PostgreSQL store is backed up by its server's tools (pg_dump -n SCHEMA, or the \
             server's own backups); `ferry store backup` copies a SQLite store"
                .into(),
        ))
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn join(&self, name: &str, now: Timestamp) -> Result<NodeId> {
        let conn = self.conn().await?;
        let node = nodes::join(&conn, name, now).await?;
        self.node.store(node, Ordering::Relaxed);
        Ok(node)
    }

    async fn heartbeat(&self, now: Timestamp) -> Result<bool> {
        let Some(node) = self.node() else {
            return Ok(false);
        };
        let conn = self.conn().await?;
        nodes::heartbeat(&conn, node, now).await
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        let conn = self.conn().await?;
        nodes::nodes(&conn).await
    }

    async fn forget_nodes(&self, dead_before: Timestamp, leaving: bool) -> Result<u64> {
        in_transaction!(self, |tx| nodes::forget(
            &tx,
            dead_before,
            self.node(),
            leaving
        )
        .await?)
    }

    async fn create_session(&self, id_hash: &str, session: &Session) -> Result<()> {
        let conn = self.conn().await?;
        console::create_session(&conn, id_hash, session).await
    }

    async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<Session>> {
        let conn = self.conn().await?;
        console::session(&conn, id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let conn = self.conn().await?;
        console::delete_session(&conn, id_hash).await
    }

    async fn purge_sessions(&self, now: Timestamp) -> Result<u64> {
        let conn = self.conn().await?;
        console::purge_sessions(&conn, now).await
    }

    async fn create_token(&self, hash: &str, token: &ApiToken) -> Result<i64> {
        let conn = self.conn().await?;
        console::create_token(&conn, hash, token).await
    }

    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<Option<ApiToken>> {
        let conn = self.conn().await?;
        console::use_token(&conn, hash, now).await
    }

    async fn tokens(&self, client: Option<&str>) -> Result<Vec<ApiToken>> {
        let conn = self.conn().await?;
        console::tokens(&conn, client).await
    }

    async fn revoke_token(&self, client: &str, id: i64) -> Result<bool> {
        let conn = self.conn().await?;
        console::revoke_token(&conn, client, id).await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let conn = self.conn().await?;
        console::audit(&conn, entry).await
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
        let conn = self.conn().await?;
        console::audit_log(&conn, client, target, limit).await
    }

    async fn set_paused(&self, pipeline: &PipelineKey, paused: bool) -> Result<()> {
        let conn = self.conn().await?;
        records::set_paused(&conn, pipeline, paused).await
    }

    async fn paused(&self) -> Result<Vec<PipelineKey>> {
        let conn = self.conn().await?;
        records::paused(&conn).await
    }

    async fn pause_for(&self, pipeline: &PipelineKey, reason: &str) -> Result<()> {
        let conn = self.conn().await?;
        records::pause_for(&conn, pipeline, reason).await
    }

    async fn pause_reasons(&self) -> Result<BTreeMap<PipelineKey, String>> {
        let conn = self.conn().await?;
        records::pause_reasons(&conn).await
    }
}
