//! The `mysql` pusher against the real MariaDB of the development machines
//! (`FERRY_TEST_MYSQL`, default `mysql://root@127.0.0.1:3306/test`).
//!
//! Every test works in a database of its own (named after the test, dropped at its start and
//! end), which also holds its `ferry_loads`, so tests run in parallel and again.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::config::Connection;
use ferry_core::records::{self, BatchWriter, Column, ColumnType, Modifier};
use ferry_core::{Body, BuildContext, BuildError, DynPusherFactory, Passenger, Pusher};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

use super::MysqlPusherFactory;
use crate::table_load::testing::{batch, chunk, passenger, people, push_err, push_ok, s};

fn url() -> String {
    std::env::var("FERRY_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn ctx(url: &str, kind: &str) -> BuildContext {
    let connection = Connection {
        name: "shop".into(),
        kind: kind.into(),
        config: serde_json::Map::from_iter([("url".to_string(), Value::from(url))]),
        clients: vec!["acme".into()],
    };
    BuildContext {
        client: "acme".into(),
        pipeline: "load".into(),
        component: "shop".into(),
        connections: Arc::new(BTreeMap::from([("shop".to_string(), connection)])),
        ..BuildContext::default()
    }
}

fn build_at(url: &str, config: Value) -> Result<Box<dyn Pusher>, BuildError> {
    DynPusherFactory::build(&MysqlPusherFactory, &config, &ctx(url, "mysql"))
}

/// A test's own database and a connection to it.
struct Test {
    conn: mysql_async::Conn,
    database: String,
}

impl Test {
    async fn start(name: &str) -> Test {
        let conn = mysql_async::Conn::from_url(url())
            .await
            .expect("MariaDB on 127.0.0.1:3306 (see SERVICES.md)");
        let database = format!("ferry_my_{name}");
        let mut test = Test { conn, database };
        let database = test.database.clone();
        test.exec(&format!(
            "DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}"
        ))
        .await;
        test
    }

    async fn finish(mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {}", self.database);
        self.exec(&drop).await;
    }

    /// `database.name`.
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.database)
    }

    fn pusher(&self, mut config: Value) -> Box<dyn Pusher> {
        config["connection"] = json!("shop");
        build_at(&url(), config).unwrap()
    }

    async fn exec(&mut self, sql: &str) {
        self.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Every row of a query, as text (`None` for NULL).
    async fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let rows: Vec<mysql_async::Row> = self
            .conn
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        rows.into_iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.as_ref(i) {
                        Some(mysql_async::Value::NULL) | None => None,
                        Some(mysql_async::Value::Bytes(bytes)) => {
                            Some(String::from_utf8_lossy(bytes).into_owned())
                        }
                        Some(other) => Some(other.as_sql(true).trim_matches('\'').to_string()),
                    })
                    .collect()
            })
            .collect()
    }

    async fn value(&mut self, sql: &str) -> Option<String> {
        self.rows(sql).await.remove(0).remove(0)
    }

    async fn count(&mut self, table: &str) -> Option<String> {
        self.value(&format!("SELECT count(*) FROM {}", self.table(table)))
            .await
    }
}

// ---- configuration --------------------------------------------------------------------------

#[test]
fn definitions_are_checked_when_built() {
    let error = build_at(
        &url(),
        json!({ "connection": "shop", "table": "t", "mode": "merge" }),
    )
    .err()
    .unwrap();
    assert_eq!(error.path, ["keys"], "{error}");
    let error = build_at(
        &url(),
        json!({ "connection": "shop", "table": "t", "mode": "replace" }),
    )
    .err()
    .unwrap();
    assert!(error.to_string().contains("append"), "{error}");
    let error = build_at(
        "mysql://root@127.0.0.1:3306",
        json!({ "connection": "shop", "table": "t", "mode": "append" }),
    )
    .err()
    .unwrap();
    assert!(error.message.contains("names no database"), "{error}");
    let error = build_at(
        &url(),
        json!({ "connection": "shop", "table": "a.b`c", "mode": "append" }),
    )
    .err()
    .unwrap();
    assert_eq!(error.path, ["table"], "{error}");
    let postgres = ctx("postgres://x@y/z", "postgres");
    let config = json!({ "connection": "shop", "table": "t", "mode": "append" });
    let error = DynPusherFactory::build(&MysqlPusherFactory, &config, &postgres)
        .err()
        .unwrap();
    assert!(
        error
            .message
            .contains("this pusher loads `mysql` connections"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_never_shows_the_password() {
    let pusher = build_at(
        "mysql://root:sekrit-pw@127.0.0.1:1/test",
        json!({ "connection": "shop", "table": "t", "mode": "append" }),
    )
    .unwrap();
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.retryable && !error.held, "{error:?}");
    assert!(error.message.contains("`shop`"), "{error}");
    assert!(error.message.contains("127.0.0.1:1"), "{error}");
    assert!(!error.message.contains("sekrit"), "{error}");
}

// ---- loads ----------------------------------------------------------------------------------

#[tokio::test]
async fn append_creates_the_table_and_every_type_round_trips() {
    let mut test = Test::start("types").await;
    let table = test.table("everything");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    use ColumnType::*;
    let columns = [
        ("b", Boolean),
        ("i", Integer),
        ("f", Float),
        ("n", Numeric),
        ("t", Text),
        ("d", Date),
        ("tm", Time),
        ("ts", Timestamp),
        ("tz", Timestamptz),
        ("j", Json),
        ("u", Uuid),
    ];
    let mut writer = BatchWriter::new(
        columns
            .iter()
            .map(|(name, kind)| Column::new(*name, *kind))
            .chain([Column::new("by", Bytes)])
            .collect(),
    );
    for value in [
        "t",
        "-9223372036854775808",
        "2.5",
        "12345678901234567890.123456789",
        "tab\there\nnewline \\ back\\slash ünï",
        "2024-02-29",
        "13:14:15.5",
        "2024-05-31 12:00:00.25",
        "2024-05-31 12:00:00+02",
        "{\"a\": [1, 2]}",
        "0190f1b4-57a4-7f1c-8a4e-3c4d5e6f7a8b",
    ] {
        writer.text(value);
    }
    writer.bytes(&[0, 1, 255]);
    writer.end_row();
    for _ in 0..12 {
        writer.null();
    }
    writer.end_row();
    push_ok(pusher.as_ref(), &[&passenger(writer.finish())]).await;
    let rows = test
        .rows(&format!(
            "SELECT b, i, f, n, t, d, tm, ts, tz, j, u, HEX(`by`) FROM {table} \
             ORDER BY i IS NULL"
        ))
        .await;
    assert_eq!(
        rows[0],
        [
            s("1"),
            s("-9223372036854775808"),
            s("2.5"),
            s("12345678901234567890.123456789000000000000000000000"),
            s("tab\there\nnewline \\ back\\slash ünï"),
            s("2024-02-29"),
            s("13:14:15.500000"),
            s("2024-05-31 12:00:00.250000"),
            s("2024-05-31 10:00:00.000000"),
            s("{\"a\": [1, 2]}"),
            s("0190f1b4-57a4-7f1c-8a4e-3c4d5e6f7a8b"),
            s("0001FF"),
        ]
    );
    assert_eq!(rows[1], vec![None; 12]);
    let types = test
        .rows(&format!(
            "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' \
             AND TABLE_NAME = 'everything' ORDER BY ORDINAL_POSITION",
            test.database
        ))
        .await;
    let types: Vec<String> = types
        .into_iter()
        .map(|mut r| r.remove(0).unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "tinyint(1)",
            "bigint(20)",
            "double",
            "decimal(65,30)",
            "longtext",
            "date",
            "time(6)",
            "datetime(6)",
            "datetime(6)",
            "longtext",
            "char(36)",
            "longblob"
        ]
    );
    test.finish().await;
}

#[tokio::test]
async fn each_chunk_is_loaded_exactly_once() {
    let mut test = Test::start("once").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    let first = chunk(people(&[(1, "Ann"), (2, "Bob")]), "load-1", 1, false);
    push_ok(pusher.as_ref(), &[&first]).await;
    // The same passenger again (a crash between commit and ack), and another passenger
    // carrying the same chunk of the same load (pulled again after a restart).
    let again = chunk(people(&[(1, "Ann"), (2, "Bob")]), "load-1", 1, false);
    push_ok(pusher.as_ref(), &[&first, &again]).await;
    // A second pusher (another worker) sees the same bookkeeping.
    let other = test.pusher(json!({ "table": table, "mode": "append" }));
    push_ok(other.as_ref(), &[&first]).await;
    assert_eq!(test.count("people").await, s("2"));
    let second = chunk(people(&[(3, "Cy")]), "load-1", 2, true);
    push_ok(pusher.as_ref(), &[&second]).await;
    assert_eq!(test.count("people").await, s("3"));
    let recorded = format!(
        "SELECT count(*), sum(`rows`) FROM {}.ferry_loads WHERE target = '{table}'",
        test.database
    );
    assert_eq!(test.rows(&recorded).await, [[s("2"), s("3")]]);
    test.finish().await;
}

#[tokio::test]
async fn merge_upserts_by_the_keys() {
    let mut test = Test::start("merge").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "merge", "keys": ["id"] }));
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
    let rows = test
        .rows(&format!("SELECT id, name FROM {table} ORDER BY id"))
        .await;
    assert_eq!(
        rows,
        [[s("1"), s("Ann")], [s("2"), s("Bobby")], [s("3"), s("Cy")]]
    );
    // A key twice in one chunk fails the chunk, and nothing of it stays.
    let twice = passenger(people(&[(4, "Di"), (4, "Dee")]));
    let error = push_err(pusher.as_ref(), &twice).await;
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("Duplicate entry"), "{error}");
    assert_eq!(test.count("people").await, s("3"));
    // A table without a unique index on the keys cannot be merged into.
    test.exec(&format!(
        "CREATE TABLE {} (id BIGINT, name TEXT)",
        test.table("loose")
    ))
    .await;
    let loose =
        test.pusher(json!({ "table": test.table("loose"), "mode": "merge", "keys": ["id"] }));
    let error = push_err(loose.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("primary key or unique index"),
        "{error}"
    );
    test.finish().await;
}

#[tokio::test]
async fn values_that_do_not_fit_a_modified_column_fail_their_chunk_naming_row_column_value() {
    let mut test = Test::start("modifiers").await;
    let table = test.table("prices");
    test.exec(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), code VARCHAR(8))"
    ))
    .await;
    let columns = [
        ("id", ColumnType::Integer),
        ("amount", ColumnType::Numeric),
        ("code", ColumnType::Text),
    ];
    for mode in ["append", "merge"] {
        test.exec(&format!("DELETE FROM {table}")).await;
        let pusher = test.pusher(json!({ "table": table, "mode": mode, "keys": ["id"] }));
        let good = batch(
            &columns,
            &[
                &[s_ref("1"), s_ref("12.50"), s_ref("ABCDEFGH")],
                &[s_ref("2"), s_ref("9999999999.99"), None],
                &[s_ref("3"), s_ref("0.125"), s_ref("")],
            ],
        );
        push_ok(pusher.as_ref(), &[&passenger(good)]).await;
        let rows = test
            .rows(&format!("SELECT id, amount, code FROM {table} ORDER BY id"))
            .await;
        assert_eq!(
            rows,
            [
                [s("1"), s("12.50"), s("ABCDEFGH")],
                [s("2"), s("9999999999.99"), None],
                [s("3"), s("0.13"), s("")],
            ],
            "{mode}"
        );
        for (bad, place) in [
            (
                [s_ref("5"), s_ref("12345678901.5"), s_ref("ok")],
                "row 2, column `amount`, value `12345678901.5`: Out of range",
            ),
            (
                [s_ref("5"), s_ref("1"), s_ref("ABCDEFGHI")],
                "row 2, column `code`, value `ABCDEFGHI`: Data truncated",
            ),
            (
                [s_ref("5"), s_ref("abc"), s_ref("x")],
                "row 2, column `amount`, value `abc`",
            ),
        ] {
            let body = batch(&columns, &[&[s_ref("4"), s_ref("1"), s_ref("fine")], &bad]);
            let error = push_err(pusher.as_ref(), &passenger(body)).await;
            assert!(!error.retryable, "{mode}: {error:?}");
            assert!(error.message.contains(place), "{mode}: {error}");
            assert!(error.message.contains("nothing of the chunk"), "{error}");
            assert_eq!(test.count("prices").await, s("3"), "{mode}: {place}");
        }
    }
    let recorded = format!("SELECT count(*) FROM {}.ferry_loads", test.database);
    assert_eq!(test.value(&recorded).await, s("2"));
    test.finish().await;
}

fn s_ref(text: &'static str) -> Option<&'static str> {
    Some(text)
}

#[tokio::test]
async fn a_created_table_takes_the_declared_modifiers() {
    let mut test = Test::start("declared").await;
    let table = test.table("declared");
    let columns = vec![
        Column::new("id", ColumnType::Integer),
        Column::new("amount", ColumnType::Numeric).with_modifier(Some(Modifier::Numeric {
            precision: 12,
            scale: 2,
        })),
        Column::new("code", ColumnType::Text).with_modifier(Some(Modifier::Varchar { length: 8 })),
    ];
    let mut writer = BatchWriter::new(columns);
    for value in ["1", "1.5", "AB"] {
        writer.text(value);
    }
    writer.end_row();
    let pusher = test.pusher(json!({ "table": table, "mode": "merge", "keys": ["code"] }));
    push_ok(pusher.as_ref(), &[&passenger(writer.finish())]).await;
    let types = test
        .rows(&format!(
            "SELECT COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'declared' ORDER BY ORDINAL_POSITION",
            test.database
        ))
        .await;
    assert_eq!(
        types,
        [
            [s("bigint(20)"), s("")],
            [s("decimal(12,2)"), s("")],
            [s("varchar(8)"), s("PRI")]
        ]
    );
    test.finish().await;
}

#[tokio::test]
async fn tables_that_cannot_take_the_batch_are_held_or_refused() {
    let mut test = Test::start("held").await;
    let table = test.table("people");
    test.exec(&format!(
        "CREATE TABLE {table} (id INT, name TEXT, note TEXT NOT NULL)"
    ))
    .await;
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    // 64-bit integers into an INT column: held, not widened.
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.held, "{error:?}");
    assert!(
        error.message.contains("column `id` is `int(11)`"),
        "{error}"
    );
    // A NOT NULL column the batch lacks: held.
    test.exec(&format!("ALTER TABLE {table} MODIFY id BIGINT"))
        .await;
    let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(error.held, "{error:?}");
    assert!(error.message.contains("column `note`"), "{error}");
    // With a default it loads; a new batch column is added.
    test.exec(&format!(
        "ALTER TABLE {table} MODIFY note VARCHAR(20) NOT NULL DEFAULT 'none'"
    ))
    .await;
    let extra = batch(
        &[("id", ColumnType::Integer), ("extra", ColumnType::Float)],
        &[&[s_ref("7"), s_ref("2.5")]],
    );
    push_ok(pusher.as_ref(), &[&passenger(extra)]).await;
    let rows = test
        .rows(&format!("SELECT id, note, extra FROM {table}"))
        .await;
    assert_eq!(rows, [[s("7"), s("none"), s("2.5")]]);
    // A missing table with `create: false` is held; a view and a MyISAM table are refused.
    let strict =
        test.pusher(json!({ "table": test.table("absent"), "mode": "append", "create": false }));
    let error = push_err(strict.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
    assert!(
        error.held && error.message.contains("does not exist"),
        "{error:?}"
    );
    test.exec(&format!(
        "CREATE VIEW {} AS SELECT 1 AS id; CREATE TABLE {} (id BIGINT, name TEXT) ENGINE=MyISAM",
        test.table("v"),
        test.table("m")
    ))
    .await;
    for (name, expected) in [("v", "is a view"), ("m", "MyISAM")] {
        let pusher = test.pusher(json!({ "table": test.table(name), "mode": "append" }));
        let error = push_err(pusher.as_ref(), &passenger(people(&[(1, "Ann")]))).await;
        assert!(!error.retryable, "{error:?}");
        assert!(error.message.contains(expected), "{error}");
    }
    test.finish().await;
}

#[tokio::test]
async fn a_group_reports_each_passenger_and_a_broken_one_alone() {
    let mut test = Test::start("group").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    let good = passenger(people(&[(1, "Ann")]));
    let bad = passenger(batch(
        &[("id", ColumnType::Integer), ("name", ColumnType::Text)],
        &[&[s_ref("2"), s_ref("Bob")], &[s_ref("three"), s_ref("Cy")]],
    ));
    let not_records = passenger(Body::json(&json!({ "id": 4 })));
    let also_good = passenger(people(&[(5, "Di")]));
    let results = pusher.push(&[&good, &bad, &not_records, &also_good]).await;
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    let error = results[1].clone().unwrap_err();
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("row 2, column `id`, value `three`"),
        "{error}"
    );
    let error = results[2].clone().unwrap_err();
    assert!(error.message.contains("not a record batch"), "{error}");
    let rows = test
        .rows(&format!("SELECT id FROM {table} ORDER BY id"))
        .await;
    assert_eq!(rows, [[s("1")], [s("5")]]);
    test.finish().await;
}

#[tokio::test]
async fn an_older_load_of_a_series_is_superseded() {
    let mut test = Test::start("series").await;
    let table = test.table("people");
    let pusher = test.pusher(json!({ "table": table, "mode": "merge", "keys": ["id"] }));
    let mut older = chunk(people(&[(1, "old")]), "0001-load", 1, true);
    let mut newer = chunk(people(&[(1, "new")]), "0002-load", 1, true);
    for passenger in [&mut older, &mut newer] {
        passenger
            .metadata
            .insert(records::SERIES.into(), "orders".into());
    }
    push_ok(pusher.as_ref(), &[&newer]).await;
    push_ok(pusher.as_ref(), &[&older]).await;
    let rows = test.rows(&format!("SELECT name FROM {table}")).await;
    assert_eq!(rows, [[s("new")]]);
    test.finish().await;
}

#[tokio::test]
async fn copy_escapes_mysql_lacks_arrive_as_their_characters() {
    let mut test = Test::start("escapes").await;
    let table = test.table("notes");
    let pusher = test.pusher(json!({ "table": table, "mode": "append" }));
    // COPY text as PostgreSQL writes it: `\f` and `\v` for form feed and vertical tab, and an
    // octal escape, which `LOAD DATA` does not know.
    let header = r#"{"columns":[{"name":"note","type":"text"}],"rows":1}"#;
    let body = Body {
        media_type: records::MEDIA_TYPE.into(),
        data: bytes::Bytes::from(format!("{header}\na\\fb\\vc\\101\\\\f\n")),
    };
    push_ok(pusher.as_ref(), &[&passenger(body)]).await;
    let rows = test.rows(&format!("SELECT note FROM {table}")).await;
    assert_eq!(rows, [[s("a\u{c}b\u{b}cA\\f")]]);
    test.finish().await;
}

// ---- conformance ------------------------------------------------------------------------------

/// The `mysql` pusher appending one-row chunks to `people` in the test's database.
struct Shop {
    test: Test,
}

impl Shop {
    fn config(&self) -> Value {
        json!({ "connection": "shop", "table": self.test.table("people"), "mode": "append" })
    }
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Shop {
    fn pusher(&self) -> Box<dyn Pusher> {
        self.test.pusher(self.config())
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        crate::conformance::table_chunks(count)
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        Some(crate::conformance::malformed_chunk())
    }

    async fn delivered(&self) -> Vec<String> {
        let mut conn = mysql_async::Conn::from_url(url()).await.unwrap();
        let query = format!("SELECT CAST(id AS CHAR) FROM {}", self.test.table("people"));
        // The table is created by the first push.
        conn.query(query).await.unwrap_or_default()
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        crate::conformance::ids(passengers)
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let secret = crate::conformance::SECRET;
        let refused = format!("mysql://root:{secret}@127.0.0.1:1/test");
        Some((build_at(&refused, self.config()).unwrap(), "`shop`".into()))
    }
}

#[tokio::test]
async fn the_mysql_pusher_conforms() {
    let mut shop = Shop {
        test: Test::start("conformance").await,
    };
    crate::conformance::pusher_conforms(&mut shop).await;
    shop.test.finish().await;
}
