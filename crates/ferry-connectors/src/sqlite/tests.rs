//! The `sqlite` pusher against real SQLite database files, one per test (in a temporary
//! directory).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ferry_core::config::Connection;
use ferry_core::records::{self, BatchWriter, Column, ColumnType, Modifier};
use ferry_core::{Body, BuildContext, BuildError, DynPusherFactory, Passenger, Pusher};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::SqlitePusherFactory;
use crate::table_load::testing::{batch, chunk, passenger, people, push_err, push_ok, s};

fn ctx(path: &Path, kind: &str) -> BuildContext {
    let key = if kind == "sqlite" { "path" } else { "url" };
    let connection = Connection {
        name: "local".into(),
        kind: kind.into(),
        config: serde_json::Map::from_iter([(
            key.to_string(),
            Value::from(path.display().to_string()),
        )]),
        clients: vec!["acme".into()],
    };
    BuildContext {
        client: "acme".into(),
        pipeline: "load".into(),
        component: "local".into(),
        connections: Arc::new(BTreeMap::from([("local".to_string(), connection)])),
        ..BuildContext::default()
    }
}

fn build_at(path: &Path, mut config: Value) -> Result<Box<dyn Pusher>, BuildError> {
    config["connection"] = json!("local");
    DynPusherFactory::build(&SqlitePusherFactory, &config, &ctx(path, "sqlite"))
}

/// A test's own database file.
struct Test {
    dir: TempDir,
}

impl Test {
    fn new() -> Test {
        Test {
            dir: TempDir::new().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("target.db")
    }

    fn pusher(&self, config: Value) -> Box<dyn Pusher> {
        build_at(&self.path(), config).unwrap()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).unwrap()
    }

    fn exec(&self, sql: &str) {
        self.db()
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every row of a query, as text (`None` for NULL).
    fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let db = self.db();
        let mut statement = db.prepare(sql).unwrap();
        let width = statement.column_count();
        statement
            .query_map([], |row| {
                (0..width)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => None,
                            rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                            rusqlite::types::ValueRef::Real(r) => Some(r.to_string()),
                            rusqlite::types::ValueRef::Text(t) => {
                                Some(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Blob(b) => Some(format!("blob {b:?}")),
                        })
                    })
                    .collect()
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn count(&self, table: &str) -> Option<String> {
        self.rows(&format!("SELECT count(*) FROM \"{table}\""))
            .remove(0)
            .remove(0)
    }
}

fn s_ref(text: &'static str) -> Option<&'static str> {
    Some(text)
}

#[test]
fn definitions_are_checked_when_built() {
    let test = Test::new();
    let error = build_at(&test.path(), json!({ "table": "t", "mode": "merge" }))
        .err()
        .unwrap();
    assert_eq!(error.path, ["keys"], "{error}");
    for table in ["a.b", "x\"y", "", "ferry_loads", "sqlite_master"] {
        let error = build_at(&test.path(), json!({ "table": table, "mode": "append" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["table"], "{table}: {error}");
    }
    let config = json!({ "connection": "local", "table": "t", "mode": "append" });
    let error = DynPusherFactory::build(&SqlitePusherFactory, &config, &ctx(&test.path(), "mysql"))
        .err()
        .unwrap();
    assert!(
        error
            .message
            .contains("this pusher loads `sqlite` connections"),
        "{error}"
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_opened_is_retryable_and_named() {
    let test = Test::new();
    let missing = test.dir.path().join("no/such/dir/x.db");
    let pusher = build_at(&missing, json!({ "table": "t", "mode": "append" })).unwrap();
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains("`local`"), "{error}");
    assert!(error.message.contains("no/such/dir"), "{error}");
}

#[tokio::test]
async fn append_creates_the_table_and_values_are_typed() {
    let test = Test::new();
    let pusher = test.pusher(json!({ "table": "things", "mode": "append" }));
    use ColumnType::*;
    let mut writer = BatchWriter::new(vec![
        Column::new("b", Boolean),
        Column::new("i", Integer),
        Column::new("f", Float),
        Column::new("n", Numeric),
        Column::new("t", Text),
        Column::new("tz", Timestamptz),
        Column::new("by", Bytes),
    ]);
    for value in [
        "t",
        "42",
        "2.5",
        "12.25",
        "tab\there",
        "2024-05-31 12:00:00+02",
    ] {
        writer.text(value);
    }
    writer.bytes(&[0, 255]);
    writer.end_row();
    for _ in 0..7 {
        writer.null();
    }
    writer.end_row();
    push_ok(pusher.as_ref(), &[&passenger(writer.finish())]).await;
    let rows = test.rows(
        "SELECT b, i, f, n, t, tz, datetime(tz), by, typeof(i) FROM things ORDER BY i IS NULL",
    );
    assert_eq!(
        rows[0],
        [
            s("1"),
            s("42"),
            s("2.5"),
            s("12.25"),
            s("tab\there"),
            s("2024-05-31 12:00:00+02:00"),
            s("2024-05-31 10:00:00"),
            s("blob [0, 255]"),
            s("integer")
        ]
    );
    assert_eq!(rows[1][..8], vec![None; 8]);
    let declared = test.rows("SELECT type FROM pragma_table_info('things')");
    let declared: Vec<String> = declared
        .into_iter()
        .map(|mut r| r.remove(0).unwrap())
        .collect();
    assert_eq!(
        declared,
        [
            "BOOLEAN",
            "INTEGER",
            "REAL",
            "NUMERIC",
            "TEXT",
            "TIMESTAMPTZ",
            "BLOB"
        ]
    );
}

#[tokio::test]
async fn each_chunk_is_loaded_exactly_once() {
    let test = Test::new();
    let pusher = test.pusher(json!({ "table": "people", "mode": "append" }));
    let first = chunk(people(&[(1, "Ann"), (2, "Bob")]), "load-1", 1, false);
    push_ok(pusher.as_ref(), &[&first]).await;
    let again = chunk(people(&[(1, "Ann"), (2, "Bob")]), "load-1", 1, false);
    push_ok(pusher.as_ref(), &[&first, &again]).await;
    let other = test.pusher(json!({ "table": "people", "mode": "append" }));
    push_ok(other.as_ref(), &[&first]).await;
    assert_eq!(test.count("people"), s("2"));
    let recorded = test.rows("SELECT count(*), sum(rows) FROM ferry_loads");
    assert_eq!(recorded, [[s("1"), s("2")]]);
}

#[tokio::test]
async fn merge_upserts_by_the_keys() {
    let test = Test::new();
    let pusher = test.pusher(json!({ "table": "people", "mode": "merge", "keys": ["id"] }));
    push_ok(
        pusher.as_ref(),
        &[&passenger(people(&[(1, "Ann"), (2, "Bob")]))],
    )
    .await;
    push_ok(
        pusher.as_ref(),
        &[&passenger(people(&[(2, "Bobby"), (3, "Cy")]))],
    )
    .await;
    let rows = test.rows("SELECT id, name FROM people ORDER BY id");
    assert_eq!(
        rows,
        [[s("1"), s("Ann")], [s("2"), s("Bobby")], [s("3"), s("Cy")]]
    );
    test.exec("CREATE TABLE loose (id INTEGER, name TEXT)");
    let loose = test.pusher(json!({ "table": "loose", "mode": "merge", "keys": ["id"] }));
    let error = push_err(loose.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("primary key or unique index"),
        "{error}"
    );
}

#[tokio::test]
async fn values_beyond_a_declared_type_fail_their_chunk_naming_row_column_value() {
    let test = Test::new();
    test.exec(
        "CREATE TABLE prices (id INTEGER PRIMARY KEY, amount DECIMAL(12,2), code VARCHAR(8))",
    );
    let columns = [
        ("id", ColumnType::Integer),
        ("amount", ColumnType::Numeric),
        ("code", ColumnType::Text),
    ];
    for mode in ["append", "merge"] {
        test.exec("DELETE FROM prices");
        let pusher = test.pusher(json!({ "table": "prices", "mode": mode, "keys": ["id"] }));
        let good = batch(
            &columns,
            &[
                &[s_ref("1"), s_ref("12.50"), s_ref("ABCDEFGH")],
                &[s_ref("2"), s_ref("9999999999.99"), None],
            ],
        );
        push_ok(pusher.as_ref(), &[&passenger(good)]).await;
        assert_eq!(test.count("prices"), s("2"));
        for (bad, place) in [
            (
                [s_ref("5"), s_ref("12345678901.5"), s_ref("ok")],
                "row 2, column `amount`, value `12345678901.5`: 11 digits",
            ),
            (
                [s_ref("5"), s_ref("1"), s_ref("ABCDEFGHI")],
                "row 2, column `code`, value `ABCDEFGHI`: 9 characters",
            ),
        ] {
            let body = batch(&columns, &[&[s_ref("4"), s_ref("1"), s_ref("fine")], &bad]);
            let error = push_err(pusher.as_ref(), &passenger(body)).await;
            assert!(!error.retryable, "{mode}: {error:?}");
            assert!(error.message.contains(place), "{mode}: {error}");
            assert_eq!(test.count("prices"), s("2"), "{mode}");
        }
    }
    // A bad integer names its place too.
    let pusher = test.pusher(json!({ "table": "prices", "mode": "append" }));
    let body = batch(&columns, &[&[s_ref("x1"), None, None]]);
    let error = push_err(pusher.as_ref(), &passenger(body)).await;
    assert!(
        error
            .message
            .contains("row 1, column `id`, value `x1`: not a 64-bit integer"),
        "{error}"
    );
}

#[tokio::test]
async fn a_created_table_declares_the_modifiers() {
    let test = Test::new();
    let columns = vec![
        Column::new("amount", ColumnType::Numeric).with_modifier(Some(Modifier::Numeric {
            precision: 12,
            scale: 2,
        })),
        Column::new("code", ColumnType::Text).with_modifier(Some(Modifier::Varchar { length: 2 })),
    ];
    let mut writer = BatchWriter::new(columns);
    writer.text("1.5");
    writer.text("AB");
    writer.end_row();
    let pusher = test.pusher(json!({ "table": "declared", "mode": "append" }));
    push_ok(pusher.as_ref(), &[&passenger(writer.finish())]).await;
    let declared = test.rows("SELECT type FROM pragma_table_info('declared')");
    assert_eq!(declared, [[s("NUMERIC(12,2)")], [s("VARCHAR(2)")]]);
    // And the declared limit holds for the next chunk.
    let mut writer = BatchWriter::new(vec![Column::new("code", ColumnType::Text)]);
    writer.text("ABC");
    writer.end_row();
    let error = push_err(pusher.as_ref(), &passenger(writer.finish())).await;
    assert!(error.message.contains("value `ABC`"), "{error}");
}

#[tokio::test]
async fn a_group_reports_each_passenger_and_a_broken_one_alone() {
    let test = Test::new();
    test.exec(
        "CREATE TABLE people (id INTEGER, name TEXT NOT NULL DEFAULT 'x', note TEXT NOT NULL)",
    );
    let pusher = test.pusher(json!({ "table": "people", "mode": "append" }));
    // `note` is NOT NULL without a default and not in the batch: held.
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.held, "{error:?}");
    test.exec("DROP TABLE people; CREATE TABLE people (id INTEGER, name TEXT NOT NULL)");
    let good = passenger(people(&[(1, "Ann")]));
    let null_name = passenger(batch(
        &[("id", ColumnType::Integer), ("name", ColumnType::Text)],
        &[&[s_ref("2"), s_ref("Bob")], &[s_ref("3"), None]],
    ));
    let not_records = passenger(Body::json(&json!({ "id": 4 })));
    let also_good = passenger(people(&[(5, "Di")]));
    let results = pusher
        .push(&[&good, &null_name, &not_records, &also_good])
        .await;
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    let error = results[1].clone().unwrap_err();
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("row 2, column `name`, value NULL"),
        "{error}"
    );
    assert!(
        results[2]
            .clone()
            .unwrap_err()
            .message
            .contains("not a record batch")
    );
    assert_eq!(
        test.rows("SELECT id FROM people ORDER BY id"),
        [[s("1")], [s("5")]]
    );
}

#[tokio::test]
async fn an_older_load_of_a_series_is_superseded() {
    let test = Test::new();
    let pusher = test.pusher(json!({ "table": "people", "mode": "merge", "keys": ["id"] }));
    let mut older = chunk(people(&[(1, "old")]), "0001-load", 1, true);
    let mut newer = chunk(people(&[(1, "new")]), "0002-load", 1, true);
    for passenger in [&mut older, &mut newer] {
        passenger
            .metadata
            .insert(records::SERIES.into(), "orders".into());
    }
    push_ok(pusher.as_ref(), &[&newer]).await;
    push_ok(pusher.as_ref(), &[&older]).await;
    assert_eq!(test.rows("SELECT name FROM people"), [[s("new")]]);
}

// ---- conformance ------------------------------------------------------------------------------

/// The `sqlite` pusher appending one-row chunks to `people` in the test's database file.
struct Local {
    test: Test,
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Local {
    fn pusher(&self) -> Box<dyn Pusher> {
        self.test
            .pusher(json!({ "table": "people", "mode": "append" }))
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        crate::conformance::table_chunks(count)
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        Some(crate::conformance::malformed_chunk())
    }

    async fn delivered(&self) -> Vec<String> {
        if !self.test.path().exists() {
            return Vec::new();
        }
        let rows = self.test.rows("SELECT id FROM people");
        rows.into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        crate::conformance::ids(passengers)
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        // A file in a directory that is not there (yet): a mount missing, say.
        let missing = self.test.dir.path().join("no/such/dir/x.db");
        let config = json!({ "table": "people", "mode": "append" });
        Some((build_at(&missing, config).unwrap(), "`local`".into()))
    }
}

#[tokio::test]
async fn the_sqlite_pusher_conforms() {
    let mut local = Local { test: Test::new() };
    crate::conformance::pusher_conforms(&mut local).await;
}
