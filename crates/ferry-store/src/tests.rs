//! The store test suite: one set of tests every [`Store`] implementation must pass.
//!
//! The tests are generic over [`TestStore`]; [`store_test_suite!`] instantiates all of them for
//! one implementation, so a second back end gets the whole suite with one line:
//!
//! ```ignore
//! store_test_suite!(postgres, crate::postgres::PostgresStore);
//! ```

use async_trait::async_trait;

use crate::Store;
use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;

mod model;
mod suite;

/// A store that tests can create empty and open again, to see what survives a restart.
#[async_trait]
pub(crate) trait TestStore: Store + Sized + 'static {
    /// What keeps the data alive while the store is closed (a temporary directory, a scratch
    /// database), and deletes it when dropped.
    type Place: Send + Sync + 'static;

    /// A new, empty store.
    async fn create() -> (Self::Place, Self);

    /// The store at `place` opened again, after the previous instance was dropped.
    async fn reopen(place: &Self::Place) -> Self;
}

#[async_trait]
impl TestStore for SqliteStore {
    type Place = tempfile::TempDir;

    async fn create() -> (Self::Place, Self) {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = Self::reopen(&dir).await;
        (dir, store)
    }

    async fn reopen(place: &Self::Place) -> Self {
        // A subdirectory that does not exist yet: `open` must create it.
        let path = place.path().join("data").join("ferry.db");
        SqliteStore::open(&path)
            .await
            .expect("open the SQLite store")
    }
}

/// The database the PostgreSQL tests make their scratch schemas in.
pub(crate) fn test_postgres_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A scratch schema of the test database, `ferry_test_<random>`, one per test so that tests
/// run in parallel; dropped with everything in it when this is dropped.
pub(crate) struct PostgresSchema {
    /// The store URL: the test database with `schema=` this schema.
    pub url: String,
    pub schema: String,
}

impl PostgresSchema {
    pub(crate) fn new() -> PostgresSchema {
        let schema = format!("ferry_test_{:016x}", rand::random::<u64>());
        let base = test_postgres_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        // The application name tells this test's sessions apart, for `drop` to end them.
        PostgresSchema {
            url: format!("{base}{separator}schema={schema}&application_name={schema}"),
            schema,
        }
    }
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        // Best effort. Dropped inside a test's runtime, which must not block: a thread of its
        // own with a small runtime of its own does the work.
        let (url, schema) = (test_postgres_url(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|error| error.to_string())?;
                tokio::spawn(connection);
                // The store's sessions may still be open, and in a transaction: a test that
                // ends inside a current-thread runtime gives their tasks no chance to close
                // them, and their locks would keep DROP SCHEMA waiting for ever.
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        &[&schema],
                    )
                    .await
                    .map_err(|error| error.to_string())?;
                let quoted = crate::postgres::quote_identifier(&schema);
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {quoted} CASCADE"
                    ))
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test schema {}: {error}", self.schema);
        }
    }
}

#[async_trait]
impl TestStore for PostgresStore {
    type Place = PostgresSchema;

    async fn create() -> (Self::Place, Self) {
        let place = PostgresSchema::new();
        let store = Self::reopen(&place).await;
        (place, store)
    }

    async fn reopen(place: &Self::Place) -> Self {
        PostgresStore::open(&place.url)
            .await
            .expect("open the PostgreSQL store (is FERRY_TEST_POSTGRES's server running?)")
    }
}

/// Runs every test of [`suite`] and the model test of [`model`] against `$store`, in a module
/// named `$name`.
macro_rules! store_test_suite {
    ($name:ident, $store:ty) => {
        mod $name {
            store_test_suite!(@async $store;
                seat_stores_passengers_under_the_pipeline_key,
                seat_skips_duplicates_within_and_across_batches,
                seat_of_nothing_writes_nothing,
                lease_takes_due_work_oldest_first,
                lease_stays_within_its_pipeline_and_max,
                expired_lease_comes_back_and_stale_reports_are_ignored,
                recovered_leases_are_due_at_once,
                interrupted_attempts_count_and_travel_alone,
                untakeable_input_is_quarantined_until_a_person_acts,
                concurrent_leases_never_share_a_passenger,
                finish_done_completes_the_passenger,
                a_pushers_result_is_kept_with_its_step,
                processed_payload_is_kept_and_leased_again,
                failed_step_waits_for_its_next_try_then_dies,
                dead_processor_makes_the_passenger_dead,
                dead_pusher_waits_for_the_other_pushers,
                filtered_processor_skips_the_rest,
                split_seats_children_with_the_parents_finish,
                finish_ignores_unknown_passengers_and_steps,
                release_gives_the_passenger_back_due_now,
                retry_revives_failed_and_dead_steps,
                retry_of_a_leased_passenger_keeps_the_lease,
                discard_skips_what_is_left,
                replay_starts_a_complete_passenger_again,
                actions_on_unknown_passengers_are_not_found,
                skip_step_refuses_finished_steps_leases_and_unknowns,
                skip_step_ends_an_expired_lease,
                skipping_the_only_failing_pusher_completes_the_passenger,
                skipping_a_dead_step_lets_the_rest_run,
                owner_and_children_of_a_passenger,
                dead_groups_by_pipeline_and_error_largest_first,
                dead_ids_oldest_first_up_to_the_limit,
                oldest_open_per_pipeline,
                purge_never_deletes_open_or_dead_passengers,
                purge_works_in_chunks,
                open_count_and_next_due_follow_the_open_work,
                counts_per_pipeline_of_one_client_or_all,
                list_pages_newest_first,
                list_applies_every_filter,
                text_search_finds_indexed_and_unindexed_passengers,
                runs_and_their_logs,
                purge_runs_keeps_running_and_recent_runs,
                abandon_marks_running_runs_failed,
                only_a_dead_nodes_leases_and_runs_come_back,
                runs_page_filters_and_pages_newest_first,
                throughput_sums_seated_per_bucket,
                definitions_are_versioned_by_hash,
                pipelines_pause_and_resume,
                ferry_pauses_with_a_reason_until_a_person_resumes,
                puller_state_is_kept_with_the_seat,
                progress_counts_the_states_of_given_passengers,
                lease_stops_at_its_byte_budget,
                sessions_expire_and_end,
                tokens_are_used_listed_and_revoked_per_client,
                audit_log_filters_newest_first,
                data_survives_a_reopen,
            );

            #[test]
            fn queue_matches_model() {
                $crate::tests::model::queue_matches_model::<$store>();
            }
        }
    };
    (@async $store:ty; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::tests::suite::$test::<$store>().await;
            }
        )*
    };
}

store_test_suite!(sqlite, crate::sqlite::SqliteStore);
store_test_suite!(postgres, crate::postgres::PostgresStore);

/// What only the PostgreSQL store has to show: opening by URL, nodes migrating at once, and
/// the schema version.
mod postgres_schema {
    use std::collections::{BTreeMap, HashSet};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use ferry_core::Passenger;
    use ferry_core::config::{StepDef, StepKind};

    use super::{PostgresSchema, TestStore, suite};
    use crate::postgres::PostgresStore;
    use crate::{Finished, PassengerState, PipelineKey, StepChange, Store, StoreError};

    #[tokio::test]
    async fn both_url_forms_open_the_store_in_its_schema() {
        let place = PostgresSchema::new();
        let store = crate::open(&place.url, Path::new("/nonexistent"))
            .await
            .expect("open by postgres:// URL");
        store
            .set_paused(&PipelineKey::new("acme", "a"), true)
            .await
            .unwrap();
        drop(store);
        let other = place.url.replacen("postgres://", "postgresql://", 1);
        let store = crate::open(&other, Path::new("/nonexistent"))
            .await
            .unwrap();
        assert_eq!(store.paused().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unknown_urls_name_both_forms_without_the_password() {
        let Err(error) = crate::open("mysql://ferry:s3cret@db/x", Path::new(".")).await else {
            panic!("opened a mysql URL");
        };
        let message = error.to_string();
        assert!(
            message.contains("sqlite://") && message.contains("postgres://"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    /// Several nodes start at once on a new schema: one migrates, the others wait for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_opening_at_once_migrate_once() {
        let place = PostgresSchema::new();
        let mut opening = Vec::new();
        for _ in 0..4 {
            let url = place.url.clone();
            opening.push(tokio::spawn(async move { PostgresStore::open(&url).await }));
        }
        for open in opening {
            open.await.unwrap().expect("open while others open");
        }
    }

    /// A plain connection to the test database, to look behind the store's back.
    async fn raw_client() -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&super::test_postgres_url(), tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// Two nodes (two stores on one schema), each with several workers, lease the same
    /// pipeline at once: every passenger goes to exactly one of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_lease_without_sharing_a_passenger() {
        let (place, first) = PostgresStore::create().await;
        let second = PostgresStore::reopen(&place).await;
        let key = PipelineKey::new("acme", "invoices");
        let steps = [StepDef {
            kind: StepKind::Pusher,
            name: "file".into(),
        }];
        let passengers: Vec<_> = (0..300)
            .map(|n| Passenger::pulled("imap", format!("p{n}")))
            .collect();
        let now = suite::at(0);
        first
            .seat(&key, "v1", &steps, &passengers, now)
            .await
            .unwrap();
        let nodes = [Arc::new(first), Arc::new(second)];
        let mut leasers = Vec::new();
        for node in &nodes {
            for _ in 0..4 {
                let (node, key) = (Arc::clone(node), key.clone());
                leasers.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    loop {
                        let leased = node
                            .lease(&key, 9, Duration::from_secs(60), suite::at(1))
                            .await
                            .unwrap();
                        if leased.is_empty() {
                            return ids;
                        }
                        ids.extend(leased.into_iter().map(|leased| leased.passenger.id));
                    }
                }));
            }
        }
        let mut all = Vec::new();
        for leaser in leasers {
            all.extend(leaser.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (300, 300));
        let counts = nodes[1].counts(None).await.unwrap();
        assert_eq!(counts[&key].get(&PassengerState::InFlight), Some(&300));
        assert_eq!(counts[&key].len(), 1);
    }

    /// The counts are appended deltas; folding them (with the search indexing) changes no
    /// count and leaves one row per pipeline and state.
    #[tokio::test]
    async fn count_deltas_fold_without_changing_the_counts() {
        let (place, store) = PostgresStore::create().await;
        let key = PipelineKey::new("acme", "invoices");
        let steps = [StepDef {
            kind: StepKind::Pusher,
            name: "file".into(),
        }];
        for n in 0..10 {
            let passenger = Passenger::pulled("imap", format!("p{n}"));
            store
                .seat(&key, "v1", &steps, &[passenger], suite::at(n))
                .await
                .unwrap();
        }
        let leased = store
            .lease(&key, 4, Duration::from_secs(60), suite::at(20))
            .await
            .unwrap();
        let reports: Vec<_> = leased
            .iter()
            .take(3)
            .map(|leased| Finished {
                id: leased.passenger.id,
                token: leased.token,
                processed: None,
                steps: vec![(0, StepChange::Done)],
                split: None,
            })
            .collect();
        assert_eq!(store.finish(&reports, suite::at(21)).await.unwrap(), 3);
        let before = store.counts(None).await.unwrap();
        assert_eq!(
            before[&key],
            BTreeMap::from([
                (PassengerState::Pending, 6),
                (PassengerState::InFlight, 1),
                (PassengerState::Complete, 3),
            ])
        );
        store.index_search(100).await.unwrap();
        assert_eq!(store.counts(None).await.unwrap(), before);
        assert_eq!(store.open_count(&key).await.unwrap(), 7);
        let rows: i64 = raw_client()
            .await
            .query_one(
                &format!("SELECT count(*) FROM {}.queue_count_deltas", place.schema),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 3);
    }

    #[tokio::test]
    async fn refuses_a_schema_from_a_newer_ferry() {
        let (place, store) = PostgresStore::create().await;
        drop(store);
        raw_client()
            .await
            .batch_execute(&format!(
                "INSERT INTO {}.schema_migrations (version) VALUES (99)",
                place.schema
            ))
            .await
            .unwrap();
        match PostgresStore::open(&place.url).await {
            Err(StoreError::Backend(error)) => {
                assert!(error.to_string().contains("schema version 99"), "{error}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("opened a schema of a newer version"),
        }
    }
}

/// What only the SQLite store has to show: the file it writes and sharing it between
/// processes.
mod sqlite_file {
    use ferry_core::config::{StepDef, StepKind};
    use ferry_core::{Passenger, Timestamp};

    use super::TestStore;
    use crate::sqlite::SqliteStore;
    use crate::{PassengerState, PipelineKey, SeatResult, Store, StoreError};

    fn file(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("data").join("ferry.db")
    }

    #[tokio::test]
    async fn creates_a_wal_database_with_large_pages() {
        let (dir, _store) = SqliteStore::create().await;
        let conn = rusqlite::Connection::open(file(&dir)).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), page_size, version), ("wal", 16_384, 9));
    }

    /// Seats one passenger in acme/invoices.
    async fn seat_one(store: &SqliteStore) -> (PipelineKey, Passenger, Timestamp) {
        let key = PipelineKey::new("acme", "invoices");
        let steps = [StepDef {
            kind: StepKind::Pusher,
            name: "file".into(),
        }];
        let passenger = Passenger::pulled("imap", "m-1");
        let now = chrono::Utc::now();
        let seated = store
            .seat(&key, "v1", &steps, std::slice::from_ref(&passenger), now)
            .await
            .unwrap();
        assert_eq!(seated, [SeatResult::Seated]);
        (key, passenger, now)
    }

    /// `ferry retry` opens the file while `ferry run` has it open.
    #[tokio::test]
    async fn two_stores_share_one_file() {
        let (dir, running) = SqliteStore::create().await;
        let cli = SqliteStore::reopen(&dir).await;
        let (key, passenger, now) = seat_one(&running).await;

        cli.discard(passenger.id, now).await.unwrap();
        let seen = running.get(passenger.id).await.unwrap();
        assert_eq!(seen.entry.state, PassengerState::Discarded);
        let counts = running.counts(None).await.unwrap();
        assert_eq!(counts[&key].get(&PassengerState::Discarded), Some(&1));
    }

    /// The search index is background work: while another process writes, it skips its turn
    /// instead of holding the store's writer for the busy timeout (10 s).
    #[tokio::test]
    async fn indexing_gives_way_to_another_process_writing() {
        let (dir, store) = SqliteStore::create().await;
        let (_, passenger, now) = seat_one(&store).await;
        let other = rusqlite::Connection::open(file(&dir)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(store.index_search(10).await.unwrap(), 0);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(store.index_search(10).await.unwrap(), 1);
        // The writer waits for others again as before.
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiting = tokio::spawn(async move { store.discard(passenger.id, now).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        other.execute_batch("ROLLBACK").unwrap();
        waiting.await.unwrap().unwrap();
    }

    /// `ferry store backup`: a copy as of one moment, taken while the store is in use, that
    /// opens as a store of its own; an existing file is never overwritten.
    #[tokio::test]
    async fn a_backup_is_a_store_as_of_its_moment() {
        let (dir, store) = SqliteStore::create().await;
        let (key, first, now) = seat_one(&store).await;
        let copy = dir.path().join("backup.db");
        store.backup(&copy).await.unwrap();
        store.discard(first.id, now).await.unwrap();

        let restored = SqliteStore::open(&copy).await.unwrap();
        assert_eq!(
            restored.get(first.id).await.unwrap().entry.state,
            PassengerState::Pending
        );
        assert_eq!(restored.counts(None).await.unwrap()[&key].len(), 1);
        assert!(!dir.path().join("backup.db.partial").exists());
        match store.backup(&copy).await {
            Err(StoreError::Refused(message)) => assert!(message.contains("already exists")),
            other => panic!("overwrote an existing backup: {other:?}"),
        }
    }

    #[tokio::test]
    async fn refuses_a_database_from_a_newer_ferry() {
        let (dir, store) = SqliteStore::create().await;
        drop(store);
        let conn = rusqlite::Connection::open(file(&dir)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        match SqliteStore::open(&file(&dir)).await {
            Err(StoreError::Backend(error)) => {
                assert!(error.to_string().contains("schema version 99"), "{error}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("opened a database of a newer schema"),
        }
    }

    #[tokio::test]
    async fn a_path_that_cannot_be_a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let result = SqliteStore::open(&blocker.join("ferry.db")).await;
        assert!(matches!(result, Err(StoreError::Backend(_))));
    }
}
