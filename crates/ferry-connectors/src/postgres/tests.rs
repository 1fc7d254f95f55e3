//! The `postgres` pusher against the real PostgreSQL of the development machines
//! (`FERRY_TEST_POSTGRES`, default `postgres://root@127.0.0.1:5432/test?sslmode=disable`).
//!
//! Every test works in a schema of its own (named after the test, dropped at its start and
//! end) and removes its tables' rows from the shared `ferry` bookkeeping tables, so tests run
//! in parallel and again.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use ferry_core::config::Connection;
use ferry_core::records::{BatchWriter, Column, ColumnType};
use ferry_core::{Body, BuildContext, BuildError, DynPusherFactory, Passenger, Pusher, StepError};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::PostgresPusherFactory;
use crate::table_load::testing::{batch, chunk, passenger, people, push_err, push_ok, s};

fn url() -> String {
    std::env::var("FERRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test?sslmode=disable".into())
}

fn ctx(project: &Path, url: &str) -> BuildContext {
    let connection = Connection {
        name: "dwh".into(),
        kind: "postgres".into(),
        config: serde_json::Map::from_iter([("url".to_string(), url.into())]),
        clients: vec!["acme".into()],
    };
    BuildContext {
        project_dir: project.to_path_buf(),
        sandbox: ferry_core::sandbox::Sandbox::within(project, "acme"),
        client: "acme".into(),
        pipeline: "load".into(),
        component: "dwh".into(),
        connections: Arc::new(BTreeMap::from([("dwh".to_string(), connection)])),
        ..BuildContext::default()
    }
}

fn build_at(project: &Path, url: &str, config: Value) -> Result<Box<dyn Pusher>, BuildError> {
    DynPusherFactory::build(&PostgresPusherFactory, &config, &ctx(project, url))
}

/// A test's own schema, project directory and connection.
struct Test {
    client: Client,
    schema: String,
    project: TempDir,
}

impl Test {
    async fn start(name: &str) -> Test {
        let (client, connection) = tokio_postgres::connect(&url(), NoTls)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (see SERVICES.md)");
        tokio::spawn(connection);
        let schema = format!("ferry_pg_{name}");
        let test = Test {
            client,
            schema,
            project: TempDir::new().unwrap(),
        };
        test.clean().await;
        test.exec(&format!("CREATE SCHEMA {}", test.schema)).await;
        fs::create_dir_all(test.sql_dir()).unwrap();
        test
    }

    /// Drops the schema and this test's rows in the shared bookkeeping tables.
    async fn clean(&self) {
        self.exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
        for table in ["ferry.loads", "ferry.migrations"] {
            // Absent before the first pusher ever ran: nothing to clean then.
            let _ = self
                .client
                .execute(
                    &format!("DELETE FROM {table} WHERE split_part(target, '.', 1) = $1"),
                    &[&self.schema],
                )
                .await;
        }
    }

    async fn finish(self) {
        self.clean().await;
    }

    /// `schema.name`.
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    fn sql_dir(&self) -> std::path::PathBuf {
        self.project.path().join("clients/acme/sql")
    }

    fn write_sql(&self, relative: &str, text: &str) {
        let path = self.sql_dir().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn build(&self, config: Value) -> Result<Box<dyn Pusher>, BuildError> {
        build_at(self.project.path(), &url(), config)
    }

    fn pusher(&self, mut config: Value) -> Box<dyn Pusher> {
        config["connection"] = json!("dwh");
        self.build(config).unwrap()
    }

    async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Every row of a query, as text (`None` for NULL).
    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        messages
            .into_iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// One text value.
    async fn value(&self, sql: &str) -> Option<String> {
        self.rows(sql).await.remove(0).remove(0)
    }

    /// How many shadow tables are in the test's schema.
    async fn shadows(&self) -> Option<String> {
        self.value(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename LIKE '%__ferry_%'",
            self.schema
        ))
        .await
    }

    async fn oid(&self, table: &str) -> String {
        self.value(&format!("SELECT '{}'::regclass::oid", self.table(table)))
            .await
            .unwrap()
    }
}

async fn push(pusher: &dyn Pusher, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
    pusher.push(passengers).await
}

// ---- configuration --------------------------------------------------------------------------

#[test]
fn configuration_requires_connection_table_and_mode() {
    let project = TempDir::new().unwrap();
    let build = |config: Value| build_at(project.path(), &url(), config);
    for missing in ["connection", "table", "mode"] {
        let mut config = json!({ "connection": "dwh", "table": "s.t", "mode": "append" });
        config.as_object_mut().unwrap().remove(missing);
        let error = build(config).err().expect(missing);
        assert!(error.message.contains(missing), "{missing}: {error}");
    }
    let error = build(json!({ "connection": "dwh", "table": "t", "mode": "upsert" }))
        .err()
        .unwrap();
    assert_eq!(error.path, ["mode"]);
    assert!(error.message.contains("append"), "{error}");
    let error = build(json!({ "connection": "dwh", "table": "t", "mode": "append", "what": 1 }))
        .err()
        .unwrap();
    assert!(error.message.contains("unknown field `what`"), "{error}");
    let error = build(json!({ "connection": "nope", "table": "t", "mode": "append" }))
        .err()
        .unwrap();
    assert_eq!(error.path, ["connection"]);
    assert!(
        error.message.contains("granted to this client: dwh"),
        "{error}"
    );
}

#[test]
fn keys_are_required_for_merge_and_history() {
    let project = TempDir::new().unwrap();
    for mode in ["merge", "history"] {
        let config = json!({ "connection": "dwh", "table": "t", "mode": mode });
        let error = build_at(project.path(), &url(), config).err().unwrap();
        assert_eq!(error.path, ["keys"], "{mode}");
        assert!(error.message.contains("keys: [id]"), "{error}");
    }
    let config = json!({ "connection": "dwh", "table": "t", "mode": "merge", "keys": ["a", "a"] });
    let error = build_at(project.path(), &url(), config).err().unwrap();
    assert_eq!(error.path, ["keys", "1"]);
    for mode in ["append", "replace"] {
        let config = json!({ "connection": "dwh", "table": "t", "mode": mode });
        build_at(project.path(), &url(), config).unwrap();
    }
}

#[test]
fn table_names_are_checked() {
    let project = TempDir::new().unwrap();
    for bad in [
        "",
        "a.b.c",
        ".t",
        "s.",
        "\"S\".t",
        "/etc",
        "s.a\\b",
        &"x".repeat(64),
    ] {
        let config = json!({ "connection": "dwh", "table": bad, "mode": "append" });
        let error = build_at(project.path(), &url(), config).err().expect(bad);
        assert_eq!(error.path, ["table"], "{bad}");
    }
    let target = super::Target::parse("Staging.Customers").unwrap();
    assert_eq!(target.quoted(), "\"Staging\".\"Customers\"");
    assert_eq!(super::Target::parse("t").unwrap().name(), "public.t");
    let long = super::Target::parse(&"é".repeat(31)).unwrap();
    let shadow = long.shadow("load-1");
    assert!(
        shadow.len() <= 63 && shadow.contains("__ferry_"),
        "{shadow}"
    );
    assert_ne!(long.shadow("load-1"), long.shadow("load-2"));
}

#[test]
fn sql_files_are_read_and_checked_at_build() {
    let project = TempDir::new().unwrap();
    let sql = project.path().join("clients/acme/sql");
    fs::create_dir_all(&sql).unwrap();
    fs::write(
        sql.join("ok.sql"),
        "DELETE FROM {target} WHERE load = {load};",
    )
    .unwrap();
    fs::write(sql.join("bad.sql"), "SELECT 1;\n\nSELECT {tagret};").unwrap();
    let config = |key: &str, files: Value| {
        let mut config = json!({ "connection": "dwh", "table": "s.t", "mode": "append" });
        config[key] = files;
        config
    };
    let build = |config: Value| build_at(project.path(), &url(), config);
    build(config("before", json!(["ok.sql"]))).unwrap();

    let error = build(config("after", json!(["ok.sql", "missing.sql"])))
        .err()
        .unwrap();
    assert_eq!(error.path, ["after", "1"]);
    assert!(error.message.contains("missing.sql"), "{error}");

    let error = build(config("before", json!(["bad.sql"]))).err().unwrap();
    assert_eq!(error.path, ["before", "0"]);
    assert!(
        error
            .message
            .starts_with("bad.sql:3: unknown placeholder `{tagret}`"),
        "{error}"
    );

    for escape in ["/etc/passwd", "../other/x.sql", "a/../../x.sql"] {
        let error = build(config("before", json!([escape])))
            .err()
            .expect(escape);
        assert_eq!(error.path, ["before", "0"], "{escape}");
    }

    fs::create_dir_all(sql.join("s.t")).unwrap();
    fs::write(sql.join("s.t/001_create.sql"), "SELECT 1").unwrap();
    fs::write(sql.join("s.t/create_more.sql"), "SELECT 2").unwrap();
    let error = build(config("before", json!([]))).err().unwrap();
    assert_eq!(error.path, ["table"]);
    assert!(
        error
            .message
            .contains("`create_more.sql` is not a migration name"),
        "{error}"
    );
    fs::remove_file(sql.join("s.t/create_more.sql")).unwrap();
    fs::write(sql.join("s.t/1_again.sql"), "SELECT 2").unwrap();
    let error = build(config("before", json!([]))).err().unwrap();
    assert!(error.message.contains("have the same number 1"), "{error}");
}

#[test]
fn build_does_not_connect() {
    let project = TempDir::new().unwrap();
    let config = json!({ "connection": "dwh", "table": "s.t", "mode": "append" });
    build_at(
        project.path(),
        "postgres://u:secret@127.0.0.1:1/none",
        config,
    )
    .unwrap();
}

// ---- append -----------------------------------------------------------------------------------

#[tokio::test]
async fn append_creates_the_table_loads_chunks_and_skips_a_repush() {
    let test = Test::start("append").await;
    // The schema is created too.
    test.exec(&format!("DROP SCHEMA {}", test.schema)).await;
    let pusher = test.pusher(json!({ "table": test.table("people"), "mode": "append" }));
    let one = chunk(people(&[(1, "Ann"), (2, "Bob")]), "l1", 1, false);
    let two = chunk(people(&[(3, "Cy")]), "l1", 2, true);
    push_ok(pusher.as_ref(), &[&one, &two]).await;
    let sql = format!("SELECT id, name FROM {} ORDER BY id", test.table("people"));
    let expected = vec![
        vec![s("1"), s("Ann")],
        vec![s("2"), s("Bob")],
        vec![s("3"), s("Cy")],
    ];
    assert_eq!(test.rows(&sql).await, expected);

    // After a crash the same batch comes again: each chunk is there once.
    push_ok(pusher.as_ref(), &[&one, &two]).await;
    let fresh = test.pusher(json!({ "table": test.table("people"), "mode": "append" }));
    push_ok(fresh.as_ref(), &[&two]).await;
    assert_eq!(test.rows(&sql).await, expected);

    let bookkeeping = test
        .rows(&format!(
            "SELECT pipeline, load, chunk, last, rows, completed_at IS NOT NULL \
             FROM ferry.loads WHERE target = '{}' ORDER BY chunk",
            test.table("people")
        ))
        .await;
    assert_eq!(
        bookkeeping,
        [
            [s("acme/load"), s("l1"), s("1"), s("f"), s("2"), s("t")],
            [s("acme/load"), s("l1"), s("2"), s("t"), s("1"), s("t")],
        ]
    );
    let types = test
        .rows(&format!(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'people' ORDER BY ordinal_position",
            test.schema
        ))
        .await;
    assert_eq!(types, [[s("bigint")], [s("text")]]);
    test.finish().await;
}

#[tokio::test]
async fn append_reports_each_passenger_in_order_and_a_bad_value_with_its_line() {
    let test = Test::start("bad_value").await;
    let pusher = test.pusher(json!({ "table": test.table("people"), "mode": "append" }));
    let good = passenger(people(&[(1, "Ann")]));
    let bad = passenger(batch(
        &[("id", ColumnType::Integer), ("name", ColumnType::Text)],
        &[&[s_ref("2"), s_ref("Bob")], &[s_ref("three"), s_ref("Cy")]],
    ));
    let not_records = passenger(Body::json(&json!({ "id": 4 })));
    let also_good = passenger(people(&[(5, "Di")]));
    let results = push(pusher.as_ref(), &[&good, &bad, &not_records, &also_good]).await;
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    let error = results[1].clone().unwrap_err();
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("row 2, column `id`, value `three`"),
        "{error}"
    );
    let error = results[2].clone().unwrap_err();
    assert!(
        !error.retryable && error.message.contains("not a record batch"),
        "{error}"
    );
    let sql = format!("SELECT id FROM {} ORDER BY id", test.table("people"));
    assert_eq!(test.rows(&sql).await, [[s("1")], [s("5")]]);
    // Nothing of the failed chunk stays, in the table or the bookkeeping.
    let recorded = format!(
        "SELECT count(*) FROM ferry.loads WHERE target = '{}'",
        test.table("people")
    );
    assert_eq!(test.value(&recorded).await, s("2"));
    test.finish().await;
}

fn s_ref(text: &'static str) -> Option<&'static str> {
    Some(text)
}

#[tokio::test]
async fn every_column_type_creates_its_postgres_type_and_round_trips() {
    let test = Test::start("types").await;
    let pusher = test.pusher(json!({ "table": test.table("all_types"), "mode": "append" }));
    let columns: Vec<(String, ColumnType)> = ColumnType::ALL
        .iter()
        .map(|kind| (format!("c_{kind}"), *kind))
        .collect();
    let mut writer = BatchWriter::new(
        columns
            .iter()
            .map(|(name, kind)| Column::new(name.clone(), *kind))
            .collect(),
    );
    for value in [
        "t",
        "9007199254740993",
        "1.5",
        "12345678901234567890.123",
        "tab\there",
        "2024-05-31",
        "12:30:00",
        "2024-05-31 12:00:00",
        "2024-05-31 12:00:00+00",
        "{\"a\": [1, 2]}",
    ] {
        writer.text(value);
    }
    writer.bytes(&[0, 255]);
    writer.text("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    writer.end_row();
    for _ in &columns {
        writer.null();
    }
    writer.end_row();
    push_ok(pusher.as_ref(), &[&passenger(writer.finish())]).await;

    let types = test
        .rows(&format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = '{}'::regclass AND attnum > 0 ORDER BY attnum",
            test.table("all_types")
        ))
        .await;
    let expected: Vec<Vec<Option<String>>> = [
        "boolean",
        "bigint",
        "double precision",
        "numeric",
        "text",
        "date",
        "time without time zone",
        "timestamp without time zone",
        "timestamp with time zone",
        "jsonb",
        "bytea",
        "uuid",
    ]
    .iter()
    .map(|t| vec![s(t)])
    .collect();
    assert_eq!(types, expected);
    let values = test
        .rows(&format!(
            "SET TIME ZONE 'UTC'; SELECT * FROM {} ORDER BY c_boolean NULLS LAST",
            test.table("all_types")
        ))
        .await;
    assert_eq!(
        values[0],
        [
            s("t"),
            s("9007199254740993"),
            s("1.5"),
            s("12345678901234567890.123"),
            s("tab\there"),
            s("2024-05-31"),
            s("12:30:00"),
            s("2024-05-31 12:00:00"),
            s("2024-05-31 12:00:00+00"),
            s("{\"a\": [1, 2]}"),
            s("\\x00ff"),
            s("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        ]
    );
    assert!(values[1].iter().all(Option::is_none), "{:?}", values[1]);
    test.finish().await;
}

#[tokio::test]
async fn new_batch_columns_are_added_and_missing_nullable_ones_left_null() {
    let test = Test::start("new_column").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    push_ok(pusher.as_ref(), &[&passenger(people(&[(1, "Ann")]))]).await;
    let wider = batch(
        &[
            ("id", ColumnType::Integer),
            ("name", ColumnType::Text),
            ("born", ColumnType::Date),
        ],
        &[&[s_ref("2"), s_ref("Bob"), s_ref("1990-01-02")]],
    );
    push_ok(pusher.as_ref(), &[&passenger(wider)]).await;
    let narrower = batch(&[("id", ColumnType::Integer)], &[&[s_ref("3")]]);
    push_ok(pusher.as_ref(), &[&passenger(narrower)]).await;
    let rows = test
        .rows(&format!("SELECT id, name, born FROM {table} ORDER BY id"))
        .await;
    assert_eq!(
        rows,
        [
            [s("1"), s("Ann"), None],
            [s("2"), s("Bob"), s("1990-01-02")],
            [s("3"), None, None],
        ]
    );
    test.finish().await;
}

#[tokio::test]
async fn changes_that_would_lose_data_are_held_and_lossless_types_accepted() {
    let test = Test::start("held").await;
    let table = test.table("people");
    test.exec(&format!(
        "CREATE TABLE {table} (id integer, name text, code varchar(3), note text NOT NULL)"
    ))
    .await;
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));

    // bigint values into an integer column: held, not widened.
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.held && error.retryable, "{error:?}");
    for part in [
        &format!("table {table}"),
        "column `id`",
        "`integer` in the table",
        "`integer` (`bigint`) in the batch",
        "add a migration in clients/acme/sql/",
        "ALTER TABLE {target} ALTER COLUMN \"id\" TYPE bigint",
    ] {
        assert!(error.message.contains(part), "{part}: {error}");
    }
    let id_type = format!(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = '{table}'::regclass AND attname = 'id'"
    );
    assert_eq!(test.value(&id_type).await, s("integer"));

    // Text into varchar(3) is the same type with a modifier: it loads, and a value too long
    // fails the chunk (permanently), naming row, column and value.
    test.exec(&format!(
        "ALTER TABLE {table} ALTER COLUMN id TYPE bigint, ALTER COLUMN note DROP NOT NULL"
    ))
    .await;
    let coded = batch(
        &[("id", ColumnType::Integer), ("code", ColumnType::Text)],
        &[&[s_ref("1"), s_ref("ABCD")]],
    );
    let error = push_err(pusher.as_ref(), &passenger(coded)).await;
    assert!(!error.held && !error.retryable, "{error:?}");
    assert!(
        error
            .message
            .contains("row 1, column `code`, value `ABCD`: value too long"),
        "{error}"
    );

    // A NOT NULL column without default that the batch lacks: held.
    test.exec(&format!(
        "ALTER TABLE {table} ALTER COLUMN note SET NOT NULL"
    ))
    .await;
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.held, "{error:?}");
    assert!(error.message.contains("column `note`"), "{error}");

    // With a default it is fine; and an integer batch into a numeric column, and anything into
    // text, fit as they are.
    test.exec(&format!(
        "ALTER TABLE {table} ALTER COLUMN note SET DEFAULT 'none', \
         ALTER COLUMN id TYPE numeric"
    ))
    .await;
    let fits = batch(
        &[("id", ColumnType::Integer), ("name", ColumnType::Float)],
        &[&[s_ref("7"), s_ref("2.5")]],
    );
    push_ok(pusher.as_ref(), &[&passenger(fits)]).await;
    let rows = test
        .rows(&format!("SELECT id, name, note FROM {table}"))
        .await;
    assert_eq!(rows, [[s("7"), s("2.5"), s("none")]]);

    // Replace: a table column the batch lacks would be dropped by the swap: held.
    let replace = test.pusher(json!({ "table": table, "mode": "replace" }));
    let error = push_err(replace.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.held, "{error:?}");
    for part in [
        "column `code`",
        "would leave it empty",
        "DROP COLUMN \"code\"",
    ] {
        assert!(error.message.contains(part), "{part}: {error}");
    }
    test.finish().await;
}

// ---- merge ------------------------------------------------------------------------------------

#[tokio::test]
async fn merge_updates_and_inserts_by_key() {
    let test = Test::start("merge").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "merge", "keys": ["id"] }));
    push_ok(
        pusher.as_ref(),
        &[&passenger(people(&[(1, "Ann"), (2, "Bob")]))],
    )
    .await;
    // Two chunks in one push (one transaction), and the second again.
    let second = passenger(people(&[(2, "Bobby"), (3, "Cy")]));
    let third = passenger(people(&[(3, "Cyd")]));
    push_ok(pusher.as_ref(), &[&second, &third]).await;
    push_ok(pusher.as_ref(), &[&second]).await;
    let rows = test
        .rows(&format!("SELECT id, name FROM {table} ORDER BY id"))
        .await;
    assert_eq!(
        rows,
        [[s("1"), s("Ann")], [s("2"), s("Bobby")], [s("3"), s("Cyd")]]
    );
    let key = test
        .value(&format!(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = '{table}'::regclass AND contype = 'p'"
        ))
        .await;
    assert_eq!(key, s("PRIMARY KEY (id)"));

    // A key twice in one chunk cannot be upserted.
    let twice = passenger(people(&[(4, "Di"), (4, "Dee")]));
    let error = push_err(pusher.as_ref(), &twice).await;
    assert!(
        !error.retryable && error.message.contains("more than once"),
        "{error}"
    );
    test.finish().await;
}

#[tokio::test]
async fn merge_into_a_table_without_a_unique_key_is_refused() {
    let test = Test::start("merge_no_key").await;
    let table = test.table("people");
    test.exec(&format!("CREATE TABLE {table} (id bigint, name text)"))
        .await;
    let pusher = test.pusher(json!({ "table": table, "mode": "merge", "keys": ["id"] }));
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(!error.retryable, "{error:?}");
    assert!(
        error
            .message
            .contains("merge needs a primary key or unique index on exactly (\"id\")"),
        "{error}"
    );
    let count = test.value(&format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(count, s("0"));
    test.finish().await;
}

// ---- replace ----------------------------------------------------------------------------------

#[tokio::test]
async fn replace_swaps_changed_content_and_keeps_unchanged_content() {
    let test = Test::start("replace").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "replace", "keys": ["id"] }));
    let sql = format!("SELECT id, name FROM {table} ORDER BY id");

    push_ok(
        pusher.as_ref(),
        &[&chunk(people(&[(1, "Ann"), (2, "Bob")]), "l1", 1, true)],
    )
    .await;
    assert_eq!(
        test.rows(&sql).await,
        [[s("1"), s("Ann")], [s("2"), s("Bob")]]
    );
    test.exec(&format!(
        "GRANT SELECT ON {table} TO PUBLIC; \
         ALTER TABLE {table} ADD COLUMN loaded_at timestamptz DEFAULT now()"
    ))
    .await;
    let first_oid = test.oid("people").await;

    // The same content in another order (and a column that fills itself, which the batch
    // lacks): the table stays as it is.
    let same = chunk(people(&[(2, "Bob"), (1, "Ann")]), "l2", 1, true);
    push_ok(pusher.as_ref(), &[&same]).await;
    assert_eq!(test.oid("people").await, first_oid);

    // New content: swapped in, with the primary key and the grants of the old table.
    push_ok(
        pusher.as_ref(),
        &[&chunk(people(&[(3, "Cy")]), "l3", 1, true)],
    )
    .await;
    assert_eq!(test.rows(&sql).await, [[s("3"), s("Cy")]]);
    let filled = test
        .value(&format!("SELECT count(loaded_at) FROM {table}"))
        .await;
    assert_eq!(filled, s("1"));
    assert_ne!(test.oid("people").await, first_oid);
    let grants = test
        .value(&format!(
            "SELECT has_table_privilege('public', '{table}', 'SELECT')::text"
        ))
        .await;
    // `has_table_privilege` takes a role; PUBLIC's grant shows in the ACL instead.
    assert!(grants.is_some());
    let acl = test
        .value(&format!(
            "SELECT relacl::text FROM pg_class WHERE oid = '{table}'::regclass"
        ))
        .await
        .unwrap();
    assert!(acl.contains("=r/"), "{acl}");
    let key = test
        .value(&format!(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = '{table}'::regclass \
             AND contype = 'p'"
        ))
        .await;
    assert_eq!(key, s("1"));

    // An empty load empties the table.
    push_ok(pusher.as_ref(), &[&chunk(people(&[]), "l4", 1, true)]).await;
    assert_eq!(test.rows(&sql).await, Vec::<Vec<Option<String>>>::new());

    // No shadow tables are left behind.
    assert_eq!(test.shadows().await, s("0"));
    test.finish().await;
}

#[tokio::test]
async fn replace_waits_for_every_chunk_in_any_order() {
    let test = Test::start("replace_order").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "replace" }));
    push_ok(
        pusher.as_ref(),
        &[&chunk(people(&[(1, "Old")]), "l1", 1, true)],
    )
    .await;
    let sql = format!("SELECT id, name FROM {table} ORDER BY id");

    let three = chunk(people(&[(5, "E")]), "l2", 3, true);
    let one = chunk(people(&[(1, "A"), (2, "B")]), "l2", 1, false);
    let two = chunk(people(&[(3, "C"), (4, "D")]), "l2", 2, false);
    push_ok(pusher.as_ref(), &[&three, &one]).await;
    assert_eq!(test.rows(&sql).await, [[s("1"), s("Old")]]);
    push_ok(pusher.as_ref(), &[&two]).await;
    let ids: Vec<Option<String>> = test
        .rows(&sql)
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, [s("1"), s("2"), s("3"), s("4"), s("5")]);
    test.finish().await;
}

#[tokio::test]
async fn an_older_load_never_overwrites_a_newer_one() {
    let test = Test::start("replace_superseded").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "replace" }));
    let sql = format!("SELECT id, name FROM {table} ORDER BY id");
    // Load `old` is pulled first, but its second chunk only arrives after load `new`.
    let old_one = chunk(people(&[(1, "old")]), "old", 1, false);
    let old_two = chunk(people(&[(2, "old")]), "old", 2, true);
    let new_one = chunk(people(&[(1, "new")]), "new", 1, true);
    push_ok(pusher.as_ref(), &[&old_one, &new_one]).await;
    assert_eq!(test.rows(&sql).await, [[s("1"), s("new")]]);
    push_ok(pusher.as_ref(), &[&old_two]).await;
    assert_eq!(test.rows(&sql).await, [[s("1"), s("new")]]);
    assert_eq!(test.shadows().await, s("0"));
    test.finish().await;
}

/// A chunk of a full load of the series `erp` (as the `sql` puller marks them).
fn series_chunk(body: Body, load: &str, number: u64, last: bool) -> Passenger {
    let mut passenger = chunk(body, load, number, last);
    passenger
        .metadata
        .insert(ferry_core::records::SERIES.into(), "erp".into());
    passenger
}

/// Issue 12: load `a` is interrupted (its last chunk never comes before load `b` starts);
/// its chunks that arrive after `b` started are skipped, its shadow is dropped, and only
/// `b` is ever visible, in every mode. A full `append` shows nothing before its end.
#[tokio::test]
async fn a_newer_full_load_supersedes_an_interrupted_one_in_every_mode() {
    let test = Test::start("series_superseded").await;
    for mode in ["append", "merge", "replace", "history"] {
        let table = test.table(mode);
        let pusher = test.pusher(json!({ "table": table, "mode": mode, "keys": ["id"] }));
        let current = match mode {
            "history" => " WHERE is_current",
            _ => "",
        };
        let sql = format!("SELECT id, name FROM {table}{current} ORDER BY id");
        // UUIDv7 ids, as the puller makes them: `b` is newer.
        let a = uuid::Uuid::now_v7().to_string();
        let b = uuid::Uuid::now_v7().to_string();
        let a1 = series_chunk(people(&[(1, "a"), (2, "a")]), &a, 1, false);
        let a2 = series_chunk(people(&[(3, "a")]), &a, 2, false);
        let a3 = series_chunk(people(&[(4, "a")]), &a, 3, true);
        let b1 = series_chunk(people(&[(1, "b"), (2, "b")]), &b, 1, false);
        let b2 = series_chunk(people(&[(3, "b")]), &b, 2, true);

        push_ok(pusher.as_ref(), &[&a1]).await;
        if mode == "append" {
            assert_eq!(
                test.value(&format!("SELECT count(*) FROM {table}")).await,
                s("0"),
                "a full append is staged until its end"
            );
        }
        // `b` starts: `a` is abandoned, its late chunks (the last one too) are skipped.
        push_ok(pusher.as_ref(), &[&b1, &a2]).await;
        push_ok(pusher.as_ref(), &[&a3]).await;
        let shadows = match mode {
            "merge" => s("0"),
            _ => s("1"),
        };
        assert_eq!(
            test.shadows().await,
            shadows,
            "{mode}: only b's shadow is left"
        );
        push_ok(pusher.as_ref(), &[&b2]).await;
        let expected = [[s("1"), s("b")], [s("2"), s("b")], [s("3"), s("b")]];
        assert_eq!(test.rows(&sql).await, expected, "{mode}");
        assert_eq!(test.shadows().await, s("0"), "{mode}");
        let states = test
            .rows(&format!(
                "SELECT load, bool_and(completed_at IS NOT NULL), \
                        bool_and(abandoned_at IS NOT NULL) \
                 FROM ferry.loads WHERE target = '{table}' GROUP BY load ORDER BY load"
            ))
            .await;
        assert_eq!(
            states,
            [
                [Some(a.clone()), s("f"), s("t")],
                [Some(b.clone()), s("t"), s("f")]
            ],
            "{mode}: a abandoned, b complete"
        );
        // A chunk of `a` seen again later (a retry) is still skipped.
        let a2_again = series_chunk(people(&[(3, "a")]), &a, 2, false);
        push_ok(pusher.as_ref(), &[&a2_again]).await;
        assert_eq!(test.rows(&sql).await, expected, "{mode}");
    }
    test.finish().await;
}

/// A full `append` stages in an unlogged table, which a crash of PostgreSQL empties: the load
/// then refuses to complete (retryably) rather than move what is left, and the next load
/// supersedes it.
#[tokio::test]
async fn a_full_append_whose_staging_was_emptied_does_not_complete() {
    let test = Test::start("series_unlogged").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    let a = uuid::Uuid::now_v7().to_string();
    let a1 = series_chunk(people(&[(1, "a"), (2, "a")]), &a, 1, false);
    let a2 = series_chunk(people(&[(3, "a")]), &a, 2, true);
    push_ok(pusher.as_ref(), &[&a1]).await;
    let persistence = test
        .value(&format!(
            "SELECT string_agg(relpersistence::text, '') FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE nspname = '{}' AND relname LIKE '%\\_\\_ferry\\_%'",
            test.schema
        ))
        .await;
    assert_eq!(persistence, s("u"), "one unlogged staging table");
    // What a restart of PostgreSQL after a crash does to an unlogged table.
    test.exec(&format!(
        "DO $$ DECLARE t text; BEGIN \
           SELECT quote_ident(tablename) INTO t FROM pg_tables \
           WHERE schemaname = '{0}' AND tablename LIKE '%\\_\\_ferry\\_%'; \
           EXECUTE 'TRUNCATE {0}.' || t; END $$",
        test.schema
    ))
    .await;
    let error = push_err(pusher.as_ref(), &a2).await;
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("holds 1 of the 3 rows"), "{error}");
    assert_eq!(
        test.value(&format!("SELECT count(*) FROM {table}")).await,
        s("0")
    );
    // The next load supersedes it; the retried chunk is then skipped.
    let b = uuid::Uuid::now_v7().to_string();
    let b1 = series_chunk(people(&[(1, "b")]), &b, 1, true);
    push_ok(pusher.as_ref(), &[&b1, &a2]).await;
    assert_eq!(
        test.rows(&format!("SELECT id, name FROM {table}")).await,
        [[s("1"), s("b")]]
    );
    assert_eq!(test.shadows().await, s("0"));
    test.finish().await;
}

/// A `ferry.loads` made by a ferry from before `series` gets the column (in a database of its
/// own, since the shared one's table is in use by the other tests).
#[tokio::test]
async fn bookkeeping_from_before_series_gets_the_column() {
    let test = Test::start("series_upgrade").await;
    let database = format!("ferry_upgrade_{}", uuid::Uuid::now_v7().simple());
    test.exec(&format!("CREATE DATABASE {database}")).await;
    let other = url().replacen("/test?", &format!("/{database}?"), 1);
    let (client, connection) = tokio_postgres::connect(&other, NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    // The bookkeeping as the first release made it.
    client
        .batch_execute(
            "CREATE SCHEMA ferry;
             CREATE TABLE ferry.loads (pipeline text NOT NULL, target text NOT NULL,
                 load text NOT NULL, chunk bigint NOT NULL, last boolean NOT NULL,
                 passenger uuid NOT NULL, rows bigint NOT NULL,
                 loaded_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz,
                 abandoned_at timestamptz, PRIMARY KEY (target, passenger),
                 UNIQUE (target, load, chunk));
             CREATE TABLE ferry.migrations (target text NOT NULL, file text NOT NULL,
                 hash text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (target, file));",
        )
        .await
        .unwrap();
    let pusher = build_at(
        test.project.path(),
        &other,
        json!({ "connection": "dwh", "table": "public.people", "mode": "append" }),
    )
    .unwrap();
    let load = uuid::Uuid::now_v7().to_string();
    let one = series_chunk(people(&[(1, "Ann")]), &load, 1, true);
    push_ok(pusher.as_ref(), &[&one]).await;
    let rows = client
        .query_one(
            "SELECT (SELECT count(*) FROM people), \
                    (SELECT series FROM ferry.loads)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 1);
    assert_eq!(rows.get::<_, Option<String>>(1).as_deref(), Some("erp"));
    drop(pusher);
    drop(client);
    let _ = connection.await;
    test.exec(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await;
    test.finish().await;
}

/// Loads of other series, other pipelines and loads without a series are not superseded.
#[tokio::test]
async fn only_a_newer_load_of_the_same_series_supersedes() {
    let test = Test::start("series_scope").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    let a = uuid::Uuid::now_v7().to_string();
    let plain = uuid::Uuid::now_v7().to_string();
    let other = uuid::Uuid::now_v7().to_string();
    let a1 = series_chunk(people(&[(1, "a")]), &a, 1, false);
    let a2 = series_chunk(people(&[(2, "a")]), &a, 2, true);
    // Newer, but without a series (a file, say) and of another series.
    let plain1 = chunk(people(&[(10, "plain")]), &plain, 1, true);
    let mut other1 = series_chunk(people(&[(20, "other")]), &other, 1, true);
    other1
        .metadata
        .insert(ferry_core::records::SERIES.into(), "crm".into());
    push_ok(pusher.as_ref(), &[&a1, &plain1, &other1, &a2]).await;
    assert_eq!(
        test.rows(&format!("SELECT id FROM {table} ORDER BY id"))
            .await,
        [[s("1")], [s("2")], [s("10")], [s("20")]]
    );
    assert_eq!(test.shadows().await, s("0"));
    test.finish().await;
}

#[tokio::test]
async fn replace_refuses_to_drop_dependent_views() {
    let test = Test::start("replace_view").await;
    let table = test.table("people");
    let view = test.table("people_view");
    let pusher = test.pusher(json!({ "table": table, "mode": "replace" }));
    push_ok(
        pusher.as_ref(),
        &[&chunk(people(&[(1, "Ann")]), "l1", 1, true)],
    )
    .await;
    test.exec(&format!("CREATE VIEW {view} AS SELECT name FROM {table}"))
        .await;

    let error = push_err(
        pusher.as_ref(),
        &chunk(people(&[(2, "Bob")]), "l2", 1, true),
    )
    .await;
    assert!(error.held, "{error:?}");
    assert!(error.message.contains("people_view"), "{error}");
    assert!(
        error
            .message
            .contains("ferry does not drop dependent objects"),
        "{error}"
    );
    assert_eq!(
        test.rows(&format!("SELECT name FROM {view}")).await,
        [[s("Ann")]]
    );
    test.finish().await;
}

// ---- history ----------------------------------------------------------------------------------

#[tokio::test]
async fn history_keeps_versions_across_loads() {
    let test = Test::start("history").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "history", "keys": ["id"] }));

    // Load 1: Ann, Bob and Cy arrive (in two chunks).
    let first = [
        chunk(people(&[(1, "Ann"), (2, "Bob")]), "h1", 1, false),
        chunk(people(&[(3, "Cy")]), "h1", 2, true),
    ];
    push_ok(pusher.as_ref(), &[&first[0], &first[1]]).await;
    let t1 = test
        .value(&format!("SELECT max(valid_from)::text FROM {table}"))
        .await;
    // Load 2: Bob changed, Cy deleted, Di new, Ann unchanged.
    let second = chunk(
        people(&[(1, "Ann"), (2, "Robert"), (4, "Di")]),
        "h2",
        1,
        true,
    );
    push_ok(pusher.as_ref(), &[&second]).await;
    let t2 = test
        .value(&format!("SELECT max(valid_from)::text FROM {table}"))
        .await;
    assert_ne!(t1, t2);
    // Load 3: the same state again: nothing changes.
    let third = chunk(
        people(&[(4, "Di"), (2, "Robert"), (1, "Ann")]),
        "h3",
        1,
        true,
    );
    push_ok(pusher.as_ref(), &[&third]).await;

    let rows = test
        .rows(&format!(
            "SELECT id, name, valid_from::text, valid_to::text, is_current \
             FROM {table} ORDER BY id, valid_from"
        ))
        .await;
    let (t1, t2) = (t1.as_deref(), t2.as_deref());
    let expected: Vec<Vec<Option<String>>> = [
        ["1", "Ann", t1.unwrap(), "", "t"],
        ["2", "Bob", t1.unwrap(), t2.unwrap(), "f"],
        ["2", "Robert", t2.unwrap(), "", "t"],
        ["3", "Cy", t1.unwrap(), t2.unwrap(), "f"],
        ["4", "Di", t2.unwrap(), "", "t"],
    ]
    .iter()
    .map(|row| {
        row.iter()
            .map(|v| (!v.is_empty()).then(|| v.to_string()))
            .collect()
    })
    .collect();
    assert_eq!(rows, expected);

    let hashes = test
        .rows(&format!(
            "SELECT count(*) FILTER (WHERE key_hash = md5(ROW(id)::text)), \
                    count(*) FILTER (WHERE data_hash = md5(ROW(name)::text)) FROM {table}"
        ))
        .await;
    assert_eq!(hashes, [[s("5"), s("5")]]);

    // Cy comes back: a new version; a key twice in a load is refused.
    push_ok(
        pusher.as_ref(),
        &[&chunk(
            people(&[(1, "Ann"), (2, "Robert"), (3, "Cy"), (4, "Di")]),
            "h4",
            1,
            true,
        )],
    )
    .await;
    let current = test
        .rows(&format!(
            "SELECT id FROM {table} WHERE is_current ORDER BY id"
        ))
        .await;
    assert_eq!(current, [[s("1")], [s("2")], [s("3")], [s("4")]]);
    let error = push_err(
        pusher.as_ref(),
        &chunk(people(&[(1, "Ann"), (1, "Anna")]), "h5", 1, true),
    )
    .await;
    assert!(
        !error.retryable && error.message.contains("more than once"),
        "{error}"
    );
    test.finish().await;
}

// ---- SQL steps and migrations -----------------------------------------------------------------

#[tokio::test]
async fn before_and_after_files_run_with_their_placeholders() {
    let test = Test::start("steps").await;
    let table = test.table("people");
    let log = test.table("log");
    test.exec(&format!("CREATE TABLE {log} (step text, detail text)"))
        .await;
    test.write_sql(
        "before.sql",
        &format!(
            "-- runs once per load\nINSERT INTO {log} VALUES ('before', {{load}} || ' ' || \
             '{{target}}' || ' ' || '{{target_schema}}.{{target_table}}');"
        ),
    );
    test.write_sql(
        "steps/after.sql",
        &format!(
            "INSERT INTO {log} SELECT 'after', count(*)::text || ' {{key_columns}} \
             {{data_columns}}' FROM {{target}};"
        ),
    );
    let pusher = test.pusher(json!({
        "table": table,
        "mode": "append",
        "keys": ["id"],
        "before": ["before.sql"],
        "after": ["steps/after.sql"],
    }));
    let one = chunk(people(&[(1, "Ann")]), "l1", 1, false);
    let two = chunk(people(&[(2, "Bob")]), "l1", 2, true);
    push_ok(pusher.as_ref(), &[&two, &one]).await;
    let quoted = format!("\"{}\".\"people\"", test.schema);
    let rows = test.rows(&format!("SELECT step, detail FROM {log}")).await;
    assert_eq!(
        rows,
        [
            [s("before"), Some(format!("l1 {quoted} {quoted}"))],
            [s("after"), s("2 \"id\" \"name\"")],
        ]
    );
    test.finish().await;
}

#[tokio::test]
async fn append_groups_of_one_load_side_by_side_complete_it_once() {
    let test = Test::start("side_by_side").await;
    let table = test.table("people");
    let log = test.table("log");
    test.exec(&format!(
        "CREATE TABLE {log} (step text, load text, seen bigint)"
    ))
    .await;
    test.write_sql(
        "before.sql",
        &format!("INSERT INTO {log} SELECT 'before', {{load}}, count(*) FROM {{target}};"),
    );
    test.write_sql(
        "after.sql",
        &format!("INSERT INTO {log} SELECT 'after', {{load}}, count(*) FROM {{target}};"),
    );
    let pusher = test.pusher(json!({
        "table": table,
        "mode": "append",
        "before": ["before.sql"],
        "after": ["after.sql"],
    }));
    // Five loads of 25 chunks of 10 rows: the first chunk alone (it runs `before` under the
    // lock), then the others as four groups at once, which COPY side by side without the
    // lock; whichever commits last must see the others' chunks and finish the load.
    let (loads, chunks, rows) = (5, 25_u64, 10_i64);
    let mut expected = Vec::new();
    for load in 1..=loads {
        let name = format!("l{load}");
        let passengers: Vec<Passenger> = (1..=chunks)
            .map(|number| {
                let first = (load * 1000 + number as i64) * rows;
                let people: Vec<(i64, &str)> = (first..first + rows).map(|id| (id, "x")).collect();
                chunk(self::people(&people), &name, number, number == chunks)
            })
            .collect();
        push_ok(pusher.as_ref(), &[&passengers[0]]).await;
        let groups: Vec<Vec<&Passenger>> = passengers[1..]
            .chunks(chunks as usize / 4)
            .rev()
            .map(|group| group.iter().collect())
            .collect();
        let results =
            futures::future::join_all(groups.iter().map(|group| push(pusher.as_ref(), group)))
                .await;
        for result in results.into_iter().flatten() {
            assert!(result.is_ok(), "{result:?}");
        }
        let total = load * chunks as i64 * rows;
        let before = (load - 1) * chunks as i64 * rows;
        expected.push([s("before"), Some(name.clone()), Some(before.to_string())]);
        expected.push([s("after"), Some(name), Some(total.to_string())]);
    }
    let logged = format!("SELECT step, load, seen FROM {log} ORDER BY load, step DESC");
    assert_eq!(test.rows(&logged).await, expected);
    let counts = format!("SELECT count(*), count(DISTINCT id) FROM {table}");
    let total = (loads * chunks as i64 * rows).to_string();
    assert_eq!(
        test.rows(&counts).await,
        [[Some(total.clone()), Some(total)]]
    );
    test.finish().await;
}

#[tokio::test]
async fn an_error_in_after_fails_the_group_and_leaves_nothing() {
    let test = Test::start("after_error").await;
    let table = test.table("people");
    test.write_sql(
        "after.sql",
        "SELECT 1;\n\nSELECT 1 / (SELECT count(*) - count(*) FROM {target});\n",
    );
    // Its own application name, to find its connection below.
    let config = json!({
        "connection": "dwh",
        "table": table,
        "mode": "append",
        "after": ["after.sql"],
    });
    let url = format!("{}&application_name=ferry_pg_after_error", url());
    let pusher = build_at(test.project.path(), &url, config).unwrap();
    let one = chunk(people(&[(1, "Ann")]), "l1", 1, false);
    let two = chunk(people(&[(2, "Bob")]), "l1", 2, true);
    // The load completes at the end of the group (append): the group's chunks fail together.
    let results = push(pusher.as_ref(), &[&one, &two]).await;
    for result in &results {
        let error = result.clone().unwrap_err();
        assert!(!error.retryable, "{error:?}");
        assert!(
            error
                .message
                .contains("after after.sql:3: division by zero"),
            "{error}"
        );
    }
    // Nothing stays, not even the table the group created.
    let exists = format!("SELECT to_regclass('{table}') IS NOT NULL");
    assert_eq!(test.rows(&exists).await, [[s("f")]]);
    let recorded = format!("SELECT chunk FROM ferry.loads WHERE target = '{table}' ORDER BY chunk");
    assert!(test.rows(&recorded).await.is_empty());
    // The connection waits idle, not inside a transaction.
    let states = test
        .rows("SELECT state FROM pg_stat_activity WHERE application_name = 'ferry_pg_after_error'")
        .await;
    assert_eq!(states, [[s("idle")]]);

    // A syntax error names the line the database points at.
    test.write_sql("broken.sql", "SELECT 1;\nSELECT\n  1 FROM FROM;");
    let pusher = test.pusher(json!({
        "table": table,
        "mode": "append",
        "before": ["broken.sql"],
    }));
    let error = push_err(pusher.as_ref(), &passenger(people(&[(3, "Cy")]))).await;
    assert!(
        error.message.contains("before broken.sql:3: syntax error"),
        "{error}"
    );
    test.finish().await;
}

#[tokio::test]
async fn migrations_run_once_in_order() {
    let test = Test::start("migrations").await;
    let table = test.table("people");
    let dir = format!("{table}/");
    test.write_sql(
        &format!("{dir}002_log.sql"),
        "INSERT INTO {target_schema}.log VALUES ('002');",
    );
    test.write_sql(
        &format!("{dir}001_create.sql"),
        "CREATE TABLE {target_schema}.log (step text);\n\
         CREATE TABLE {target} (id bigint PRIMARY KEY, name text, note text DEFAULT 'x');\n\
         INSERT INTO {target_schema}.log VALUES ('001');",
    );
    let config = json!({ "table": table, "mode": "merge", "keys": ["id"] });
    let pusher = test.pusher(config.clone());
    push_ok(pusher.as_ref(), &[&passenger(people(&[(1, "Ann")]))]).await;
    let log = format!("SELECT step FROM {}.log", test.schema);
    assert_eq!(test.rows(&log).await, [[s("001")], [s("002")]]);
    assert_eq!(
        test.rows(&format!("SELECT id, note FROM {table}")).await,
        [[s("1"), s("x")]]
    );

    // A second start applies nothing again.
    let again = test.pusher(config.clone());
    push_ok(again.as_ref(), &[&passenger(people(&[(2, "Bob")]))]).await;
    assert_eq!(test.rows(&log).await, [[s("001")], [s("002")]]);

    // A failing migration stops and names its file; the one after it does not run.
    test.write_sql(
        &format!("{dir}003_fail.sql"),
        "SELECT 1;\nSELECT nope FROM {target};",
    );
    test.write_sql(
        &format!("{dir}004_after.sql"),
        "INSERT INTO {target_schema}.log VALUES ('004');",
    );
    let failing = test.pusher(config.clone());
    let error = push_err(failing.as_ref(), &passenger(people(&[(3, "Cy")]))).await;
    assert!(error.held, "{error:?}");
    assert!(
        error.message.contains(&format!(
            "migration clients/acme/sql/{dir}003_fail.sql:2: column \"nope\" does not exist"
        )),
        "{error}"
    );
    assert_eq!(test.rows(&log).await, [[s("001")], [s("002")]]);
    let count = test.value(&format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(count, s("2"));

    // A migration changed after it was applied is refused.
    fs::remove_file(test.sql_dir().join(format!("{dir}003_fail.sql"))).unwrap();
    fs::remove_file(test.sql_dir().join(format!("{dir}004_after.sql"))).unwrap();
    test.write_sql(
        &format!("{dir}002_log.sql"),
        "INSERT INTO {target_schema}.log VALUES ('002 changed');",
    );
    let changed = test.pusher(config);
    let error = push_err(changed.as_ref(), &passenger(people(&[(3, "Cy")]))).await;
    assert!(error.held, "{error:?}");
    assert!(
        error
            .message
            .contains("002_log.sql was changed after it was applied"),
        "{error}"
    );
    test.finish().await;
}

// ---- connection -------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_keeps_the_password() {
    let project = TempDir::new().unwrap();
    let config = json!({ "connection": "dwh", "table": "s.t", "mode": "append" });
    let pusher = build_at(
        project.path(),
        "postgres://loader:s3cret-pw@127.0.0.1:1/test?sslmode=disable",
        config,
    )
    .unwrap();
    let one = passenger(people(&[(1, "Ann")]));
    let two = passenger(people(&[(2, "Bob")]));
    let results = push(pusher.as_ref(), &[&one, &two]).await;
    assert_eq!(results.len(), 2);
    for result in results {
        let error = result.unwrap_err();
        assert!(error.retryable && !error.held, "{error:?}");
        assert!(!error.message.contains("s3cret"), "{error}");
        assert!(error.message.contains("loader:***@127.0.0.1:1"), "{error}");
    }
}

// ---- speed ------------------------------------------------------------------------------------

/// 1,000,000 rows of ~120 bytes in chunks of 10,000, pushed in batches of 10 passengers,
/// against `psql \copy` of the same rows from a file. Run with
/// `cargo test --release -p ferry-connectors postgres::tests::speed -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn speed_against_psql_copy() {
    const ROWS: usize = 1_000_000;
    const CHUNK: usize = 10_000;
    let test = Test::start("speed").await;
    let columns = || {
        vec![
            Column::new("id", ColumnType::Integer),
            Column::new("name", ColumnType::Text),
            Column::new("email", ColumnType::Text),
            Column::new("amount", ColumnType::Numeric),
            Column::new("created", ColumnType::Timestamptz),
        ]
    };
    let mut passengers = Vec::new();
    let mut file = Vec::new();
    for number in 0..ROWS / CHUNK {
        let mut writer = BatchWriter::new(columns());
        for row in number * CHUNK..(number + 1) * CHUNK {
            writer.raw(&row.to_string());
            writer.text(&format!("Customer number {row:010} of the speed test"));
            writer.text(&format!("customer.{row:010}@example.invalid"));
            writer.raw(&format!("{}.{:02}", row % 100_000, row % 100));
            writer.raw("2024-05-31 12:00:00+00");
            writer.end_row();
        }
        let body = writer.finish();
        file.extend_from_slice(&ferry_core::records::read(&body).unwrap().data);
        let last = number + 1 == ROWS / CHUNK;
        passengers.push(chunk(body, "speed", number as u64 + 1, last));
    }
    println!("{} bytes of rows", file.len());

    let path = test.project.path().join("rows.txt");
    fs::write(&path, &file).unwrap();
    let mut ferry = std::time::Duration::ZERO;
    let mut psql = std::time::Duration::ZERO;
    let table = test.table("ferry_copy");
    // Alternated, three times each, each after a checkpoint, so that neither gets the warmer
    // database or pays for the other's WAL.
    for round in 0..3 {
        let psql_table = test.table(&format!("psql_copy_{round}"));
        test.exec(&format!(
            "CREATE TABLE {psql_table} (id bigint, name text, email text, amount numeric, \
             created timestamptz)"
        ))
        .await;
        test.exec("CHECKPOINT").await;
        let before_psql = psql;
        let started = std::time::Instant::now();
        let status = std::process::Command::new("psql")
            .arg(url())
            .arg("-c")
            .arg(format!("\\copy {psql_table} FROM '{}'", path.display()))
            .status()
            .unwrap();
        psql += started.elapsed();
        assert!(status.success());

        test.exec(&format!(
            "DROP TABLE IF EXISTS {table}; DELETE FROM ferry.loads WHERE target = '{table}'"
        ))
        .await;
        let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
        test.exec("CHECKPOINT").await;
        let before_ferry = ferry;
        let started = std::time::Instant::now();
        for batch in passengers.chunks(10) {
            let refs: Vec<&Passenger> = batch.iter().collect();
            push_ok(pusher.as_ref(), &refs).await;
        }
        ferry += started.elapsed();
        let (this_ferry, this_psql) = (ferry - before_ferry, psql - before_psql);
        println!(
            "round {round}: ferry {this_ferry:?}, psql {this_psql:?}: {:.0}%",
            this_psql.as_secs_f64() / this_ferry.as_secs_f64() * 100.0
        );
    }
    let count = test.value(&format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(count, Some(ROWS.to_string()));
    println!(
        "ferry pusher: {ferry:?}, psql \\copy: {psql:?}, ferry at {:.0}% of psql's speed",
        psql.as_secs_f64() / ferry.as_secs_f64() * 100.0
    );
    test.finish().await;
}

// ---- conformance ------------------------------------------------------------------------------

/// The `postgres` pusher appending one-row chunks (each a load of its own) to `people`.
struct Warehouse {
    test: Test,
}

impl Warehouse {
    fn config(&self) -> Value {
        json!({ "connection": "dwh", "table": self.test.table("people"), "mode": "append" })
    }
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Warehouse {
    fn pusher(&self) -> Box<dyn Pusher> {
        self.test.build(self.config()).unwrap()
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        crate::conformance::table_chunks(count)
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        Some(crate::conformance::malformed_chunk())
    }

    async fn delivered(&self) -> Vec<String> {
        let table = self.test.table("people");
        let rows = self.test.rows(&format!("SELECT id FROM {table}")).await;
        rows.into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        crate::conformance::ids(passengers)
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let refused = format!(
            "postgres://root:{}@127.0.0.1:1/test",
            crate::conformance::SECRET
        );
        let pusher = build_at(self.test.project.path(), &refused, self.config()).unwrap();
        Some((pusher, "`dwh`".into()))
    }
}

#[tokio::test]
async fn the_postgres_pusher_conforms() {
    let mut warehouse = Warehouse {
        test: Test::start("conformance").await,
    };
    crate::conformance::pusher_conforms(&mut warehouse).await;
    warehouse.test.finish().await;
}

// ---- type modifiers (issue 13, part 5) -------------------------------------------------------

/// `id, amount, code, at` rows (integer, numeric, text, timestamptz).
fn priced(rows: &[[&str; 4]]) -> Body {
    let rows: Vec<Vec<Option<&str>>> = rows
        .iter()
        .map(|row| row.iter().map(|v| Some(*v)).collect())
        .collect();
    let rows: Vec<&[Option<&str>]> = rows.iter().map(Vec::as_slice).collect();
    batch(
        &[
            ("id", ColumnType::Integer),
            ("amount", ColumnType::Numeric),
            ("code", ColumnType::Text),
            ("at", ColumnType::Timestamptz),
        ],
        &rows,
    )
}

#[tokio::test]
async fn columns_with_modifiers_load_and_a_value_that_does_not_fit_fails_its_chunk() {
    let test = Test::start("modifiers").await;
    let table = test.table("prices");
    test.exec(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, amount numeric(12,2), code varchar(8), \
         at timestamptz(3), flag char(1) DEFAULT 'x')"
    ))
    .await;
    for mode in ["append", "merge"] {
        test.exec(&format!("TRUNCATE {table}")).await;
        let pusher = test.pusher(json!({ "table": table, "mode": mode, "keys": ["id"] }));
        let good = priced(&[
            ["1", "12.50", "ABCDEFGH", "2024-05-31 12:00:00.123456+00"],
            ["2", "9999999999.99", "x", "2024-05-31 12:00:00+02"],
            ["3", "0.125", "", "2024-05-31 12:00:00+00"],
        ]);
        push_ok(pusher.as_ref(), &[&passenger(good)]).await;
        let rows = test
            .rows(&format!(
                "SELECT id, amount, code, at AT TIME ZONE 'UTC' FROM {table} ORDER BY id"
            ))
            .await;
        assert_eq!(
            rows,
            [
                [
                    s("1"),
                    s("12.50"),
                    s("ABCDEFGH"),
                    s("2024-05-31 12:00:00.123")
                ],
                [s("2"), s("9999999999.99"), s("x"), s("2024-05-31 10:00:00")],
                // Digits beyond the scale are rounded, as PostgreSQL does.
                [s("3"), s("0.13"), s(""), s("2024-05-31 12:00:00")],
            ],
            "{mode}"
        );
        for (bad, column, value, why) in [
            (
                ["5", "12345678901.5", "ok", "2024-01-01 00:00:00+00"],
                "amount",
                "12345678901.5",
                "numeric field overflow",
            ),
            (
                ["5", "1", "ABCDEFGHI", "2024-01-01 00:00:00+00"],
                "code",
                "ABCDEFGHI",
                "value too long for type character varying(8)",
            ),
        ] {
            let chunk = priced(&[["4", "1", "fine", "2024-01-01 00:00:00+00"], bad]);
            let error = push_err(pusher.as_ref(), &passenger(chunk)).await;
            assert!(!error.retryable, "{mode}: {error:?}");
            let place = format!("row 2, column `{column}`, value `{value}`: {why}");
            assert!(error.message.contains(&place), "{mode}: {error}");
            assert!(
                error.message.contains("nothing of the chunk was loaded"),
                "{error}"
            );
            // Row 1 of the failed chunk did not stay.
            let count = format!("SELECT count(*) FROM {table}");
            assert_eq!(test.value(&count).await, s("3"), "{mode}");
        }
    }
    test.finish().await;
}

#[tokio::test]
async fn a_created_table_takes_the_declared_modifiers() {
    use ferry_core::records::Modifier;
    let test = Test::start("declared").await;
    let table = test.table("declared");
    let columns = vec![
        Column::new("id", ColumnType::Integer),
        Column::new("amount", ColumnType::Numeric).with_modifier(Some(Modifier::Numeric {
            precision: 12,
            scale: 2,
        })),
        Column::new("code", ColumnType::Text).with_modifier(Some(Modifier::Varchar { length: 8 })),
        Column::new("at", ColumnType::Timestamp)
            .with_modifier(Some(Modifier::Seconds { precision: 0 })),
    ];
    let mut writer = BatchWriter::new(columns);
    for value in ["1", "1.5", "AB", "2024-05-31 12:00:00.7"] {
        writer.text(value);
    }
    writer.end_row();
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    push_ok(pusher.as_ref(), &[&passenger(writer.finish())]).await;
    let types = test
        .rows(&format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = '{table}'::regclass AND attnum > 0 ORDER BY attnum"
        ))
        .await;
    assert_eq!(
        types,
        [
            [s("bigint")],
            [s("numeric(12,2)")],
            [s("character varying(8)")],
            [s("timestamp(0) without time zone")],
        ]
    );
    let row = test.rows(&format!("SELECT amount, at FROM {table}")).await;
    assert_eq!(row, [[s("1.50"), s("2024-05-31 12:00:01")]]);
    test.finish().await;
}
