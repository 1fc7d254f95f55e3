//! The `sql` puller against the real PostgreSQL and MariaDB of the development machines (see
//! SERVICES.md; URLs from `FERRY_TEST_POSTGRES` and `FERRY_TEST_MYSQL`) and SQLite in a
//! temporary directory. Every test makes its own schema or table and drops it at the end.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::config::Connection;
use ferry_core::records::{self, Chunk, Column, ColumnType};
use ferry_core::{BuildContext, BuildError, DynPullerFactory, Passenger, Puller};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use super::SqlPullerFactory;
use crate::conformance::SECRET;
use crate::sql::connection::Family;

const PASSWORD: &str = "s3cret-Pw";

fn postgres_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test?sslmode=disable".into())
}

fn mysql_url() -> String {
    std::env::var("FERRY_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// The connection types the tests read, by name.
const POSTGRES: &str = "postgres";
const MYSQL: &str = "mysql";
const SQLITE: &str = "sqlite";

/// Connection `erp` of type `kind`: a URL, or for SQLite the database file's absolute path.
fn connection(kind: &str, url: &str) -> Connection {
    let key = match kind {
        SQLITE => "path",
        _ => "url",
    };
    Connection {
        name: "erp".into(),
        kind: kind.into(),
        config: serde_json::Map::from_iter([(key.to_string(), Value::from(url))]),
        clients: vec!["acme".into()],
    }
}

/// `ferry check` of `connection`.
async fn check(connection: &Connection) -> Result<String, String> {
    crate::registry()
        .check_connection(connection, Path::new("/"))
        .await
}

fn ctx(connections: Vec<Connection>, project: &Path) -> BuildContext {
    let connections: BTreeMap<String, Connection> = connections
        .into_iter()
        .map(|connection| (connection.name.clone(), connection))
        .collect();
    BuildContext {
        project_dir: project.to_path_buf(),
        sandbox: ferry_core::sandbox::Sandbox::within(project, "acme"),
        client: "acme".into(),
        pipeline: "load".into(),
        component: "sql".into(),
        connections: Arc::new(connections),
        ..BuildContext::default()
    }
}

fn build(connection: &Connection, config: Value) -> Result<Box<dyn Puller>, BuildError> {
    let ctx = ctx(vec![connection.clone()], Path::new("/nonexistent"));
    DynPullerFactory::build(&SqlPullerFactory, &config, &ctx)
}

/// A name no other test (or run) uses.
fn unique(tag: &str) -> String {
    format!("ferry_{tag}_{}", Uuid::now_v7().simple())
}

/// Pulls until the load is finished; returns its chunks and the last state.
async fn pull_load(puller: &mut Box<dyn Puller>, max: usize) -> (Vec<Passenger>, Option<String>) {
    let mut passengers = Vec::new();
    for _ in 0..10_000 {
        let pulled = puller.pull(max).await.unwrap();
        assert!(pulled.failures.is_empty());
        assert!(!pulled.passengers.is_empty(), "every pull returns a chunk");
        assert!(pulled.passengers.len() <= max);
        let last = Chunk::of(pulled.passengers.last().unwrap()).unwrap().last;
        assert_eq!(pulled.more, !last, "more until the last chunk");
        passengers.extend(pulled.passengers);
        if !pulled.more {
            return (passengers, pulled.state);
        }
    }
    panic!("the load never ended");
}

/// The columns and rows of a chunk, checking its row count.
fn batch(passenger: &Passenger) -> (Vec<Column>, Vec<Vec<Option<String>>>) {
    assert_eq!(passenger.body.media_type, records::MEDIA_TYPE);
    let batch = records::read(&passenger.body).unwrap();
    let rows = records::rows(&batch.data);
    assert_eq!(rows.len(), batch.rows);
    assert_eq!(passenger.metadata[records::ROWS], rows.len().to_string());
    (batch.columns, rows)
}

/// The first column of every row of every chunk, as integers.
fn first_column(passengers: &[Passenger]) -> Vec<Vec<i64>> {
    passengers
        .iter()
        .map(|passenger| {
            batch(passenger)
                .1
                .iter()
                .map(|row| row[0].as_deref().unwrap().parse().unwrap())
                .collect()
        })
        .collect()
}

/// [`first_column`] with each chunk sorted: rows that tie on the cursor come in any order.
fn sorted_first_column(passengers: &[Passenger]) -> Vec<Vec<i64>> {
    let mut chunks = first_column(passengers);
    for chunk in &mut chunks {
        chunk.sort_unstable();
    }
    chunks
}

fn some(value: &str) -> Option<String> {
    Some(value.to_string())
}

fn types(columns: &[Column]) -> Vec<(&str, ColumnType)> {
    columns
        .iter()
        .map(|column| (column.name.as_str(), column.kind))
        .collect()
}

// ---- the databases, driven directly ---------------------------------------------------------

async fn postgres() -> tokio_postgres::Client {
    let (client, driver) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL runs on 127.0.0.1:5432 (see SERVICES.md)");
    tokio::spawn(driver);
    client
}

async fn mysql() -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(&mysql_url()).unwrap();
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("MariaDB runs on 127.0.0.1:3306 (see SERVICES.md)");
    conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
    conn
}

async fn mysql_run(conn: &mut mysql_async::Conn, statements: &[&str]) {
    for statement in statements {
        conn.query_drop(*statement)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// A SQLite database file in a temporary directory, and a connection to fill it.
fn sqlite() -> (TempDir, Connection, rusqlite::Connection) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("erp.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    let connection = connection(SQLITE, path.to_str().unwrap());
    (dir, connection, db)
}

/// One database of each kind with a table `name` of `count` rows `(id, v)`, to run the same
/// test on all three.
enum Fixture {
    Postgres(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
    Sqlite {
        /// Holds the database file.
        _dir: TempDir,
        db: rusqlite::Connection,
    },
}

impl Fixture {
    /// A table `(id integer primary key, v integer)` with rows `(i, values[i - 1])`.
    async fn new(kind: &str, table: &str, values: &[i64]) -> (Fixture, Connection) {
        let create = format!("CREATE TABLE {table} (id integer PRIMARY KEY, v integer)");
        let (mut fixture, connection) = match kind {
            POSTGRES => {
                let client = postgres().await;
                client.batch_execute(&create).await.unwrap();
                (Fixture::Postgres(client), connection(kind, &postgres_url()))
            }
            MYSQL => {
                let mut conn = mysql().await;
                mysql_run(&mut conn, &[&create]).await;
                (Fixture::Mysql(conn), connection(kind, &mysql_url()))
            }
            SQLITE => {
                let (dir, connection, db) = sqlite();
                db.execute_batch(&create).unwrap();
                (Fixture::Sqlite { _dir: dir, db }, connection)
            }
            other => unreachable!("no fixture for {other}"),
        };
        let rows: Vec<(i64, i64)> = values
            .iter()
            .enumerate()
            .map(|(index, value)| (index as i64 + 1, *value))
            .collect();
        fixture.insert(table, &rows).await;
        (fixture, connection)
    }

    async fn insert(&mut self, table: &str, rows: &[(i64, i64)]) {
        if rows.is_empty() {
            return;
        }
        let values: Vec<String> = rows.iter().map(|(id, v)| format!("({id}, {v})")).collect();
        let insert = format!("INSERT INTO {table} (id, v) VALUES {}", values.join(", "));
        self.execute(&insert).await;
    }

    async fn execute(&mut self, sql: &str) {
        match self {
            Fixture::Postgres(client) => client.batch_execute(sql).await.unwrap(),
            Fixture::Mysql(conn) => mysql_run(conn, &[sql]).await,
            Fixture::Sqlite { db, .. } => db.execute_batch(sql).unwrap(),
        }
    }

    async fn drop_table(mut self, table: &str) {
        self.execute(&format!("DROP TABLE {table}")).await;
    }
}

const KINDS: [&str; 3] = [POSTGRES, MYSQL, SQLITE];

// ---- configuration --------------------------------------------------------------------------

#[test]
fn build_needs_exactly_one_of_query_and_file() {
    let erp = connection(POSTGRES, &postgres_url());
    let error = build(&erp, json!({ "connection": "erp" })).err().unwrap();
    assert_eq!(error.path, ["query"]);
    assert!(error.message.contains("`file: NAME.sql`"), "{error}");
    let both = json!({ "connection": "erp", "query": "SELECT 1", "file": "a.sql" });
    let error = build(&erp, both).err().unwrap();
    assert_eq!(error.path, ["file"]);
    assert!(error.message.contains("not both"), "{error}");
    let error = build(&erp, json!({ "connection": "erp", "query": " ; " }))
        .err()
        .unwrap();
    assert_eq!(error.path, ["query"]);
    assert!(error.message.contains("empty"), "{error}");
}

#[test]
fn build_refuses_an_unknown_connection_with_the_known_ones() {
    let erp = connection(POSTGRES, &postgres_url());
    let error = build(&erp, json!({ "connection": "crm", "query": "SELECT 1" }))
        .err()
        .unwrap();
    assert_eq!(error.path, ["connection"]);
    assert!(
        error.message.contains("unknown connection `crm`"),
        "{error}"
    );
    assert!(
        error.message.contains("granted to this client: erp"),
        "{error}"
    );
    let error = build(&erp, json!({ "query": "SELECT 1" })).err().unwrap();
    assert!(error.message.contains("connection"), "{error}");
}

#[test]
fn build_checks_chunk_rows_cursor_and_start() {
    let erp = connection(POSTGRES, &postgres_url());
    for chunk_rows in [0, 1_000_001] {
        let config = json!({ "connection": "erp", "query": "SELECT 1", "chunk_rows": chunk_rows });
        let error = build(&erp, config).err().unwrap();
        assert_eq!(error.path, ["chunk_rows"]);
        assert!(error.message.contains("from 1 to 1000000"), "{error}");
    }
    for chunk_rows in [1, 1_000_000] {
        let config = json!({ "connection": "erp", "query": "SELECT 1", "chunk_rows": chunk_rows });
        build(&erp, config).unwrap();
    }
    let config = json!({ "connection": "erp", "query": "SELECT 1", "cursor": "" });
    assert_eq!(build(&erp, config).err().unwrap().path, ["cursor"]);
    let config = json!({ "connection": "erp", "query": "SELECT 1", "start": "2024-01-01" });
    let error = build(&erp, config).err().unwrap();
    assert_eq!(error.path, ["start"]);
    assert!(error.message.contains("`cursor`"), "{error}");
    // A number is a start value too.
    let config =
        json!({ "connection": "erp", "query": "SELECT 1 AS id", "cursor": "id", "start": 100 });
    build(&erp, config).unwrap();
}

#[test]
fn build_refuses_unknown_keys() {
    let erp = connection(POSTGRES, &postgres_url());
    let config = json!({ "connection": "erp", "query": "SELECT 1", "table": "x" });
    let error = build(&erp, config).err().unwrap();
    assert!(error.message.contains("unknown field `table`"), "{error}");
}

#[test]
fn build_never_connects() {
    let nowhere = connection(
        POSTGRES,
        &format!("postgres://root:{PASSWORD}@127.0.0.1:1/test"),
    );
    build(
        &nowhere,
        json!({ "connection": "erp", "query": "SELECT 1" }),
    )
    .unwrap();
    let missing = connection(SQLITE, "/nonexistent/erp.db");
    build(
        &missing,
        json!({ "connection": "erp", "query": "SELECT 1" }),
    )
    .unwrap();
}

#[test]
fn the_query_file_is_read_at_build_from_the_clients_sql_directory() {
    let project = TempDir::new().unwrap();
    let sql_dir = project.path().join("clients/acme/sql");
    fs::create_dir_all(sql_dir.join("reports")).unwrap();
    fs::write(sql_dir.join("reports/customers.sql"), "SELECT 1 AS id;\n").unwrap();
    let erp = connection(POSTGRES, &postgres_url());
    let ctx = ctx(vec![erp], project.path());
    let build = |config: Value| DynPullerFactory::build(&SqlPullerFactory, &config, &ctx);

    build(json!({ "connection": "erp", "file": "reports/customers.sql" })).unwrap();
    let error = build(json!({ "connection": "erp", "file": "missing.sql" }))
        .err()
        .unwrap();
    assert_eq!(error.path, ["file"]);
    assert!(
        error
            .message
            .contains("cannot read clients/acme/sql/missing.sql"),
        "{error}"
    );
    for escaping in [
        "../../secrets.sql",
        "/etc/passwd",
        "reports/../../x.sql",
        "",
    ] {
        let error = build(json!({ "connection": "erp", "file": escaping }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["file"], "{escaping}");
        assert!(error.message.contains("without `..`"), "{error}");
    }
}

// ---- type mapping ---------------------------------------------------------------------------

/// Text that needs every COPY escape, and more than ASCII.
const TRICKY: &str = "tab\there\nnew line\r\\back\\slash ünïcödé € 🚀 'quote' \"dq\"";

#[tokio::test]
async fn postgres_types_map_to_batch_types_in_postgres_text_form() {
    let schema = unique("pg_types");
    let client = postgres().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TYPE {schema}.mood AS ENUM ('happy', 'sad');
             CREATE DOMAIN {schema}.positive AS int8 CHECK (VALUE > 0);
             CREATE TABLE {schema}.t (
                 id int4 PRIMARY KEY, small int2, big int8, real4 float4, double8 float8,
                 amount numeric(12, 3), label text, code varchar(10), fixed char(3), day date,
                 clock time, at timestamp, instant timestamptz, doc json, docb jsonb,
                 data bytea, key uuid, flag bool, mood {schema}.mood, span interval,
                 list int4[], counted {schema}.positive
             );"
        ))
        .await
        .unwrap();
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.t VALUES (1, -2, 9007199254740993, 1.5, 0.1, 1234.5, $1,
                 'x', 'ab', '2024-05-31', '12:34:56.789', '2024-05-31 12:00:00.123456',
                 '2024-05-31 12:00:00+00', '{{\"a\": [1, \"x\"]}}', '{{\"b\": true}}',
                 '\\x00ff0a5c', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, 'sad',
                 '1 day 02:00:00', '{{1,2}}', 7)"
            ),
            &[&TRICKY],
        )
        .await
        .unwrap();
    client
        .batch_execute(&format!("INSERT INTO {schema}.t (id) VALUES (2)"))
        .await
        .unwrap();

    let erp = connection(POSTGRES, &postgres_url());
    let query = format!("SELECT * FROM {schema}.t ORDER BY id;");
    let mut puller = build(&erp, json!({ "connection": "erp", "query": query })).unwrap();
    let (passengers, state) = pull_load(&mut puller, 10).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();

    assert_eq!(passengers.len(), 1);
    assert_eq!(state, None, "a full load has no state");
    assert!(
        passengers[0].metadata.contains_key(records::SERIES),
        "a full load supersedes older ones of its puller"
    );
    let (columns, rows) = batch(&passengers[0]);
    use ColumnType::*;
    assert_eq!(
        types(&columns),
        [
            ("id", Integer),
            ("small", Integer),
            ("big", Integer),
            ("real4", Float),
            ("double8", Float),
            ("amount", Numeric),
            ("label", Text),
            ("code", Text),
            ("fixed", Text),
            ("day", Date),
            ("clock", Time),
            ("at", Timestamp),
            ("instant", Timestamptz),
            ("doc", Json),
            ("docb", Json),
            ("data", Bytes),
            ("key", Uuid),
            ("flag", Boolean),
            ("mood", Text),
            ("span", Text),
            ("list", Text),
            ("counted", Integer),
        ]
    );
    let mut first = rows[0].clone();
    // Written with the session's offset: compare the instant.
    let instant = first[12].take().unwrap();
    let parsed = chrono::DateTime::parse_from_str(&instant, "%Y-%m-%d %H:%M:%S%#z").unwrap();
    assert_eq!(parsed.timestamp(), 1_717_156_800, "{instant}");
    assert_eq!(
        first,
        [
            some("1"),
            some("-2"),
            some("9007199254740993"),
            some("1.5"),
            some("0.1"),
            some("1234.500"),
            some(TRICKY),
            some("x"),
            some("ab "),
            some("2024-05-31"),
            some("12:34:56.789"),
            some("2024-05-31 12:00:00.123456"),
            None,
            some("{\"a\": [1, \"x\"]}"),
            some("{\"b\": true}"),
            some("\\x00ff0a5c"),
            some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            some("t"),
            some("sad"),
            some("1 day 02:00:00"),
            some("{1,2}"),
            some("7"),
        ]
    );
    let mut nulls = vec![None; columns.len()];
    nulls[0] = some("2");
    assert_eq!(rows[1], nulls);
}

#[tokio::test]
async fn mysql_types_map_to_batch_types_in_postgres_text_form() {
    let table = unique("my_types");
    let mut conn = mysql().await;
    mysql_run(
        &mut conn,
        &[
            &format!(
                "CREATE TABLE {table} (
                    id INT PRIMARY KEY, tiny TINYINT, flag TINYINT(1), small SMALLINT,
                    medium MEDIUMINT, big BIGINT, ubig BIGINT UNSIGNED, real4 FLOAT,
                    double8 DOUBLE, amount DECIMAL(12, 3), fixed CHAR(3), label VARCHAR(200),
                    body TEXT, mood ENUM('happy', 'sad'), tags SET('a', 'b'), day DATE,
                    clock TIME(3), at DATETIME(6), instant TIMESTAMP(3) NULL, yr YEAR,
                    doc JSON, data BLOB, vb VARBINARY(10), bits BIT(12)
                 ) CHARACTER SET utf8mb4"
            ),
            // Zero dates need a lenient mode.
            "SET SESSION sql_mode = ''",
        ],
    )
    .await;
    conn.exec_drop(
        format!(
            "INSERT INTO {table} VALUES (1, -5, 1, 300, 70000, 9007199254740993,
             18446744073709551615, 1.5, 0.1, 1234.5, 'ab', ?, 'long text', 'sad', 'a,b',
             '2024-05-31', '12:34:56.789', '2024-05-31 12:00:00.123456',
             '2024-05-31 12:00:00.123', 2024, '{{\"a\": [1, \"x\"]}}', X'00FF0A5C', X'01',
             b'101010101010')"
        ),
        (TRICKY,),
    )
    .await
    .unwrap();
    mysql_run(
        &mut conn,
        &[
            &format!("INSERT INTO {table} (id) VALUES (2)"),
            &format!(
                "INSERT INTO {table} (id, day, at, instant) VALUES
                 (3, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00')"
            ),
        ],
    )
    .await;

    let erp = connection(MYSQL, &mysql_url());
    let query = format!("SELECT * FROM {table} ORDER BY id");
    let mut puller = build(&erp, json!({ "connection": "erp", "query": query })).unwrap();
    let (passengers, _) = pull_load(&mut puller, 10).await;
    mysql_run(&mut conn, &[&format!("DROP TABLE {table}")]).await;

    assert_eq!(passengers.len(), 1);
    let (columns, rows) = batch(&passengers[0]);
    // MariaDB's JSON is a LONGTEXT on the wire; MySQL's is JSON.
    assert!(matches!(
        columns[20].kind,
        ColumnType::Json | ColumnType::Text
    ));
    use ColumnType::*;
    assert_eq!(
        types(&columns),
        [
            ("id", Integer),
            ("tiny", Integer),
            ("flag", Integer),
            ("small", Integer),
            ("medium", Integer),
            ("big", Integer),
            ("ubig", Numeric),
            ("real4", Float),
            ("double8", Float),
            ("amount", Numeric),
            ("fixed", Text),
            ("label", Text),
            ("body", Text),
            ("mood", Text),
            ("tags", Text),
            ("day", Date),
            ("clock", Time),
            ("at", Timestamp),
            ("instant", Timestamptz),
            ("yr", Integer),
            ("doc", columns[20].kind),
            ("data", Bytes),
            ("vb", Bytes),
            ("bits", Integer),
        ]
    );
    assert_eq!(
        rows[0],
        [
            some("1"),
            some("-5"),
            some("1"),
            some("300"),
            some("70000"),
            some("9007199254740993"),
            some("18446744073709551615"),
            some("1.5"),
            some("0.1"),
            some("1234.500"),
            some("ab"),
            some(TRICKY),
            some("long text"),
            some("sad"),
            some("a,b"),
            some("2024-05-31"),
            some("12:34:56.789"),
            some("2024-05-31 12:00:00.123456"),
            some("2024-05-31 12:00:00.123+00"),
            some("2024"),
            some("{\"a\": [1, \"x\"]}"),
            some("\\x00ff0a5c"),
            some("\\x01"),
            some("2730"),
        ]
    );
    let mut nulls = vec![None; columns.len()];
    nulls[0] = some("2");
    assert_eq!(rows[1], nulls);
    // Zero dates have no PostgreSQL form.
    nulls[0] = some("3");
    assert_eq!(rows[2], nulls);
}

#[tokio::test]
async fn sqlite_types_come_from_declarations_else_from_values() {
    let (_dir, erp, db) = sqlite();
    db.execute_batch(
        "CREATE TABLE t (
             id INTEGER PRIMARY KEY, n INTEGER, r REAL, label TEXT, data BLOB, amount NUMERIC,
             day DATE, at DATETIME, flag BOOLEAN, doc JSON, key UUID, name VARCHAR(20), anything
         );
         INSERT INTO t VALUES (1, 42, 1.5, NULL, X'00FF0A5C', 12.5, '2024-05-31',
             '2024-05-31 12:00:00', 1, '{\"a\": 1}', X'A0EEBC999C0B4EF8BB6D6BB9BD380A11',
             'Ann', 7);
         INSERT INTO t (id) VALUES (2);
         INSERT INTO t (id, at, flag, day) VALUES (3, 1717156800, 0, 2460462.25);",
    )
    .unwrap();
    db.execute("UPDATE t SET label = ?1 WHERE id = 1", [TRICKY])
        .unwrap();

    let query = "SELECT *, n * 2 AS doubled, NULL AS empty, 'x' || name AS expr FROM t ORDER BY id";
    let mut puller = build(&erp, json!({ "connection": "erp", "query": query })).unwrap();
    let (passengers, _) = pull_load(&mut puller, 10).await;
    assert_eq!(passengers.len(), 1);
    let (columns, rows) = batch(&passengers[0]);
    use ColumnType::*;
    assert_eq!(
        types(&columns),
        [
            ("id", Integer),
            ("n", Integer),
            ("r", Float),
            ("label", Text),
            ("data", Bytes),
            ("amount", Numeric),
            ("day", Date),
            ("at", Timestamp),
            ("flag", Boolean),
            ("doc", Json),
            ("key", Uuid),
            ("name", Text),
            // No declared type: the first value's storage class, text when all are NULL.
            ("anything", Integer),
            ("doubled", Integer),
            ("empty", Text),
            ("expr", Text),
        ]
    );
    assert_eq!(
        rows[0],
        [
            some("1"),
            some("42"),
            some("1.5"),
            some(TRICKY),
            some("\\x00ff0a5c"),
            some("12.5"),
            some("2024-05-31"),
            some("2024-05-31 12:00:00"),
            some("t"),
            some("{\"a\": 1}"),
            some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            some("Ann"),
            some("7"),
            some("84"),
            None,
            some("xAnn"),
        ]
    );
    let mut nulls = vec![None; columns.len()];
    nulls[0] = some("2");
    assert_eq!(rows[1], nulls);
    // Unix time and Julian days in date columns.
    assert_eq!(rows[2][7], some("2024-05-31 12:00:00"));
    assert_eq!(rows[2][8], some("f"));
    assert_eq!(rows[2][6], some("2024-05-31"));
}

// ---- chunks and loads -----------------------------------------------------------------------

#[tokio::test]
async fn results_are_cut_into_marked_chunks_and_each_run_is_a_new_load() {
    for kind in KINDS {
        let table = unique("chunks");
        let values: Vec<i64> = (1..=25).collect();
        let (fixture, erp) = Fixture::new(kind, &table, &values).await;
        let query = format!("SELECT id, v FROM {table} ORDER BY id");
        let config = json!({ "connection": "erp", "query": query, "chunk_rows": 10 });
        let mut puller = build(&erp, config).unwrap();
        let (first, state) = pull_load(&mut puller, 2).await;
        puller.restore(None);
        let (second, _) = pull_load(&mut puller, 100).await;
        fixture.drop_table(&table).await;

        assert_eq!(state, None, "{kind}");
        let ids = first_column(&first);
        assert_eq!(
            ids.iter().map(Vec::len).collect::<Vec<_>>(),
            [10, 10, 5],
            "{kind}"
        );
        assert_eq!(ids.concat(), values, "{kind}");
        let chunks: Vec<Chunk> = first.iter().map(|p| Chunk::of(p).unwrap()).collect();
        let load = &chunks[0].load;
        assert!(Uuid::parse_str(load).is_ok());
        for (index, chunk) in chunks.iter().enumerate() {
            assert_eq!(&chunk.load, load);
            assert_eq!(chunk.number, index as u64 + 1);
            assert_eq!(chunk.last, index == 2);
            assert_eq!(first[index].external_id, format!("{load}:{}", index + 1));
            assert_eq!(first[index].source_system, "sql:erp");
        }
        assert_eq!(first_column(&second).concat(), values);
        let again = Chunk::of(&second[0]).unwrap();
        assert_ne!(&again.load, load, "{kind}: a new run is a new load");
    }
}

#[tokio::test]
async fn an_empty_result_is_one_empty_last_chunk() {
    for kind in KINDS {
        let table = unique("empty");
        let (fixture, erp) = Fixture::new(kind, &table, &[]).await;
        let query = format!("SELECT id, v FROM {table}");
        let mut puller = build(&erp, json!({ "connection": "erp", "query": query })).unwrap();
        let (passengers, _) = pull_load(&mut puller, 10).await;
        fixture.drop_table(&table).await;

        assert_eq!(passengers.len(), 1, "{kind}");
        let chunk = Chunk::of(&passengers[0]).unwrap();
        assert_eq!((chunk.number, chunk.last), (1, true));
        let (columns, rows) = batch(&passengers[0]);
        assert!(rows.is_empty());
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "v"], "{kind}");
    }
}

#[tokio::test]
async fn incremental_loads_resume_after_the_state_without_splitting_ties() {
    for kind in KINDS {
        let table = unique("incr");
        // Cursor values 1..=8, then 9 four times: a chunk of 5 that reaches the 9s takes them
        // all. A NULL cursor value is never pulled.
        let values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9];
        let (mut fixture, erp) = Fixture::new(kind, &table, &values).await;
        fixture
            .execute(&format!("INSERT INTO {table} (id, v) VALUES (100, NULL)"))
            .await;
        let query = format!("SELECT v, id FROM {table}");
        let config = json!({ "connection": "erp", "query": query, "chunk_rows": 5, "cursor": "v" });
        let mut puller = build(&erp, config).unwrap();
        puller.restore(None);

        let pulled = puller.pull(1).await.unwrap();
        assert!(pulled.more);
        assert_eq!(first_column(&pulled.passengers), [vec![1, 2, 3, 4, 5]]);
        assert_eq!(pulled.passengers[0].external_id, "1..5:5");
        // The load is unfinished: the state names it, so that a new run continues it.
        let load = Chunk::of(&pulled.passengers[0]).unwrap().load;
        let state: serde_json::Value = serde_json::from_str(&pulled.state.unwrap()).unwrap();
        assert_eq!(
            state,
            json!({ "cursor": "5", "load": load, "chunk": 1 }),
            "{kind}"
        );
        puller.restore(Some(state.to_string()));
        let (rest, finished) = pull_load(&mut puller, 10).await;
        assert_eq!(finished, some("9"), "a finished load's state is the cursor");
        let places: Vec<Chunk> = rest.iter().map(|p| Chunk::of(p).unwrap()).collect();
        assert_eq!(
            places,
            [Chunk {
                load: load.clone(),
                number: 2,
                last: true
            }],
            "{kind}: the rest of the same load, numbered after its seated chunk"
        );
        assert_eq!(first_column(&rest), [vec![6, 7, 8, 9, 9, 9, 9]]);
        assert!(
            rest.iter()
                .all(|p| !p.metadata.contains_key(records::SERIES)),
            "incremental loads are not superseded"
        );

        // A new run from the seated state; rows arrived meanwhile.
        puller.restore(some("5"));
        fixture.insert(&table, &[(13, 13), (14, 14)]).await;
        let (passengers, state) = pull_load(&mut puller, 10).await;
        assert_eq!(state, some("14"), "{kind}");
        let chunks = first_column(&passengers);
        assert_eq!(chunks, [vec![6, 7, 8, 9, 9, 9, 9], vec![13, 14]], "{kind}");
        let ids: Vec<&str> = passengers.iter().map(|p| p.external_id.as_str()).collect();
        assert_eq!(ids, ["6..9:7", "13..14:2"], "{kind}");
        let second: Vec<i64> = passengers
            .iter()
            .flat_map(|p| batch(p).1)
            .map(|row| row[1].as_deref().unwrap().parse().unwrap())
            .collect();
        assert_eq!(second.len(), 9);
        assert_eq!(
            second.iter().collect::<HashSet<_>>().len(),
            9,
            "no row twice"
        );

        // Pulling the same rows again (a crash before the state was stored) gives the same ids.
        puller.restore(some("5"));
        let (again, _) = pull_load(&mut puller, 10).await;
        let again: Vec<&str> = again.iter().map(|p| p.external_id.as_str()).collect();
        assert_eq!(again, ids, "{kind}");

        // Nothing new: one empty chunk whose id repeats until something comes.
        puller.restore(some("14"));
        let (empty, state) = pull_load(&mut puller, 10).await;
        fixture.drop_table(&table).await;
        assert_eq!(empty.len(), 1);
        assert_eq!(batch(&empty[0]).1.len(), 0);
        assert!(Chunk::of(&empty[0]).unwrap().last);
        assert_eq!(empty[0].external_id, "14..:0");
        assert_eq!(state, some("14"), "{kind}");
    }
}

#[tokio::test]
async fn timestamp_cursors_start_after_start_and_resume_after_their_text() {
    let schema = unique("pg_ts");
    let client = postgres().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.t (id int4, at timestamptz, day date);
             INSERT INTO {schema}.t VALUES
                 (1, '2023-12-31 23:00:00+00', '2023-12-31'),
                 (2, '2024-01-02 00:00:00.5+00', '2024-01-02'),
                 (3, '2024-01-02 00:00:00.5+00', '2024-01-02'),
                 (4, '2024-02-01 00:00:00+00', '2024-02-01');"
        ))
        .await
        .unwrap();
    let erp = connection(POSTGRES, &postgres_url());
    let query = format!("SELECT id, at FROM {schema}.t");
    let config = json!({
        "connection": "erp", "query": query, "cursor": "AT", "start": "2024-01-01 00:00:00+00",
        "chunk_rows": 1
    });
    let mut puller = build(&erp, config).unwrap();
    let (passengers, state) = pull_load(&mut puller, 1).await;
    assert_eq!(sorted_first_column(&passengers), [vec![2, 3], vec![4]]);
    let state = state.unwrap();
    let parsed = chrono::DateTime::parse_from_str(&state, "%Y-%m-%d %H:%M:%S%#z").unwrap();
    assert_eq!(parsed.timestamp(), 1_706_745_600, "{state}");
    let pulled = puller.pull(1).await.unwrap();
    puller.restore(pulled.state);
    let pulled = puller.pull(1).await.unwrap();
    assert_eq!(batch(&pulled.passengers[0]).1.len(), 0);

    // A date cursor, resumed after a chunk.
    let query = format!("SELECT id, day FROM {schema}.t");
    let config = json!({ "connection": "erp", "query": query, "cursor": "day", "chunk_rows": 2 });
    let mut puller = build(&erp, config).unwrap();
    let pulled = puller.pull(1).await.unwrap();
    assert_eq!(sorted_first_column(&pulled.passengers), [vec![1, 2, 3]]);
    let state: serde_json::Value = serde_json::from_str(pulled.state.as_deref().unwrap()).unwrap();
    assert_eq!(state["cursor"], "2024-01-02");
    puller.restore(pulled.state);
    let (passengers, _) = pull_load(&mut puller, 10).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    assert_eq!(first_column(&passengers), [vec![4]]);
}

#[tokio::test]
async fn mysql_and_sqlite_datetime_cursors_start_after_start() {
    let table = unique("my_ts");
    let mut conn = mysql().await;
    mysql_run(
        &mut conn,
        &[
            &format!("CREATE TABLE {table} (id INT, at DATETIME(3), name VARCHAR(10))"),
            &format!(
                "INSERT INTO {table} VALUES (1, '2023-12-31 23:00:00', 'b'),
                 (2, '2024-01-02 00:00:00.5', 'c'), (3, '2024-02-01 00:00:00', 'A')"
            ),
        ],
    )
    .await;
    let erp = connection(MYSQL, &mysql_url());
    let query = format!("SELECT id, at, name FROM {table}");
    let config =
        json!({ "connection": "erp", "query": query, "cursor": "at", "start": "2024-01-01" });
    let mut puller = build(&erp, config).unwrap();
    let (passengers, state) = pull_load(&mut puller, 10).await;
    assert_eq!(first_column(&passengers), [vec![2, 3]]);
    assert_eq!(state, some("2024-02-01 00:00:00.000"));
    puller.restore(some("2024-01-02 00:00:00.500"));
    let (passengers, _) = pull_load(&mut puller, 10).await;
    assert_eq!(first_column(&passengers), [vec![3]]);
    // A text cursor compares in the column's collation (case-insensitive here).
    let config = json!({ "connection": "erp", "query": query, "cursor": "name", "start": "a" });
    let mut puller = build(&erp, config).unwrap();
    let (passengers, _) = pull_load(&mut puller, 10).await;
    mysql_run(&mut conn, &[&format!("DROP TABLE {table}")]).await;
    assert_eq!(first_column(&passengers), [vec![1, 2]]);

    let (_dir, erp, db) = sqlite();
    db.execute_batch(
        "CREATE TABLE t (id INTEGER, at DATETIME);
         INSERT INTO t VALUES (1, '2023-12-31 23:00:00'), (2, '2024-01-02 00:00:00'),
             (3, '2024-02-01 00:00:00');",
    )
    .unwrap();
    let config = json!({
        "connection": "erp", "query": "SELECT * FROM t", "cursor": "at", "start": "2024-01-01"
    });
    let mut puller = build(&erp, config).unwrap();
    let (passengers, state) = pull_load(&mut puller, 10).await;
    assert_eq!(first_column(&passengers), [vec![2, 3]]);
    assert_eq!(state, some("2024-02-01 00:00:00"));
}

#[tokio::test]
async fn a_missing_cursor_column_fails_permanently_naming_the_columns() {
    for kind in KINDS {
        let table = unique("nocursor");
        let (fixture, erp) = Fixture::new(kind, &table, &[1]).await;
        let query = format!("SELECT id, v FROM {table}");
        let config = json!({ "connection": "erp", "query": query, "cursor": "updated_at" });
        let mut puller = build(&erp, config).unwrap();
        let error = puller.pull(10).await.unwrap_err();
        fixture.drop_table(&table).await;
        assert!(!error.retryable, "{kind}: {error}");
        assert!(
            error.message.contains(
                "cursor column `updated_at` is not in the query's result; its columns are: id, v"
            ),
            "{kind}: {error}"
        );
        assert!(error.message.contains("connection `erp`"), "{error}");
    }
}

#[tokio::test]
async fn a_dropped_load_stops_its_reader_and_the_next_run_starts_over() {
    for kind in KINDS {
        let table = unique("drop");
        let values: Vec<i64> = (1..=50).collect();
        let (fixture, erp) = Fixture::new(kind, &table, &values).await;
        let query = format!("SELECT id FROM {table} ORDER BY id");
        let config = json!({ "connection": "erp", "query": query, "chunk_rows": 5 });
        let mut puller = build(&erp, config).unwrap();
        let pulled = puller.pull(1).await.unwrap();
        assert!(pulled.more);
        let load = Chunk::of(&pulled.passengers[0]).unwrap().load;
        puller.restore(None);
        let (passengers, _) = pull_load(&mut puller, 100).await;
        fixture.drop_table(&table).await;
        assert_ne!(Chunk::of(&passengers[0]).unwrap().load, load);
        assert_eq!(first_column(&passengers).concat(), values, "{kind}");
    }
}

#[tokio::test]
async fn a_pull_cancelled_by_a_timeout_keeps_its_load() {
    let sequence = unique("seq");
    let client = postgres().await;
    client
        .batch_execute(&format!("CREATE SEQUENCE {sequence}"))
        .await
        .unwrap();
    let erp = connection(POSTGRES, &postgres_url());
    // Every run of the query takes the next number: a second load would read 2.
    let query = format!("SELECT nextval('{sequence}') AS n FROM pg_sleep(0.5)");
    let mut puller = build(&erp, json!({ "connection": "erp", "query": query })).unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(50), puller.pull(10)).await;
    assert!(
        cancelled.is_err(),
        "the query takes longer than the timeout"
    );
    let (passengers, _) = pull_load(&mut puller, 10).await;
    client
        .batch_execute(&format!("DROP SEQUENCE {sequence}"))
        .await
        .unwrap();
    assert_eq!(first_column(&passengers), [vec![1]]);
}

#[tokio::test]
async fn a_failure_after_some_chunks_comes_after_them() {
    let erp = connection(POSTGRES, &postgres_url());
    // Row 15 divides by zero, after two chunks of 5 went out.
    let query = "SELECT i, 1 / (i - 15) AS x FROM generate_series(1, 20) AS i";
    let config = json!({ "connection": "erp", "query": query, "chunk_rows": 5 });
    let mut puller = build(&erp, config).unwrap();
    let mut chunks = Vec::new();
    let error = loop {
        match puller.pull(10).await {
            Ok(pulled) => {
                assert!(pulled.more, "the load cannot end");
                chunks.extend(pulled.passengers);
            }
            Err(error) => break error,
        }
    };
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("division by zero"), "{error}");
    assert_eq!(
        first_column(&chunks),
        [vec![1, 2, 3, 4, 5], vec![6, 7, 8, 9, 10]]
    );
}

// ---- errors ---------------------------------------------------------------------------------

/// Pulls once and returns the error, checking that it names the connection and hides the
/// password.
async fn pull_error(erp: &Connection, query: &str) -> ferry_core::StepError {
    let mut puller = build(erp, json!({ "connection": "erp", "query": query })).unwrap();
    let error = puller.pull(10).await.unwrap_err();
    assert!(error.message.contains("connection `erp` ("), "{error}");
    assert!(!error.message.contains(PASSWORD), "{error}");
    error
}

#[tokio::test]
async fn postgres_errors_name_the_connection_and_hide_the_password() {
    let refused = connection(
        POSTGRES,
        &format!("postgres://root:{PASSWORD}@127.0.0.1:1/test?sslmode=disable"),
    );
    let error = pull_error(&refused, "SELECT 1").await;
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("root:***@127.0.0.1:1"), "{error}");
    assert!(error.message.contains("cannot connect"), "{error}");

    let url = postgres_url().replace("/test", "/ferry_no_such_database");
    let wrong_database = connection(POSTGRES, &url);
    let error = pull_error(&wrong_database, "SELECT 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("does not exist"), "{error}");

    let erp = connection(POSTGRES, &postgres_url());
    let error = pull_error(&erp, "SELEC 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("syntax error"), "{error}");
    let error = pull_error(&erp, "SELECT no_such_column FROM pg_class").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("no_such_column"), "{error}");
}

#[tokio::test]
async fn mysql_errors_name_the_connection_and_hide_the_password() {
    let refused = connection(MYSQL, &format!("mysql://root:{PASSWORD}@127.0.0.1:1/test"));
    let error = pull_error(&refused, "SELECT 1").await;
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("root:***@127.0.0.1:1"), "{error}");

    // root has no password: giving one is a wrong password.
    let url = mysql_url().replace("root@", &format!("root:{PASSWORD}@"));
    let wrong_password = connection(MYSQL, &url);
    let error = pull_error(&wrong_password, "SELECT 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("Access denied"), "{error}");

    let url = mysql_url().replace("/test", "/ferry_no_such_database");
    let wrong_database = connection(MYSQL, &url);
    let error = pull_error(&wrong_database, "SELECT 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("ferry_no_such_database"), "{error}");

    let erp = connection(MYSQL, &mysql_url());
    let error = pull_error(&erp, "SELEC 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("SQL syntax"), "{error}");
    let error = pull_error(&erp, "SELECT no_such_column FROM information_schema.tables").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("no_such_column"), "{error}");
}

#[tokio::test]
async fn sqlite_errors_name_the_database_file() {
    let missing = connection(SQLITE, "/nonexistent/erp.db");
    let error = pull_error(&missing, "SELECT 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("/nonexistent/erp.db"), "{error}");

    let (_dir, erp, _db) = sqlite();
    let error = pull_error(&erp, "SELEC 1").await;
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("syntax error"), "{error}");
}

// ---- connections ----------------------------------------------------------------------------

/// Connection `erp` of type `kind` with the keys of `config`.
fn defined(kind: &str, config: Value) -> Connection {
    Connection {
        name: "erp".into(),
        kind: kind.into(),
        config: config.as_object().unwrap().clone(),
        clients: vec![],
    }
}

/// What the connection type `kind` makes of `config`, or the key path and message of its error.
fn open(kind: &str, config: Value) -> Result<super::SqlConnection, (Vec<String>, String)> {
    let connection = defined(kind, config);
    let dir = Path::new("/srv/ferry");
    let opened = match kind {
        POSTGRES => crate::postgres::Postgres::open(&connection, dir),
        MYSQL => crate::mysql::Mysql::open(&connection, dir),
        _ => crate::sqlite::Sqlite::open(&connection, dir),
    };
    opened.map_err(|error| (error.path, error.message))
}

#[test]
fn a_server_connection_is_a_url_or_the_fields_to_make_one() {
    let fields = json!({
        "host": "erp.local", "port": 3306, "database": "erp",
        "user": "reader", "password": "p@ss/word",
    });
    let erp = open(MYSQL, fields).unwrap();
    assert_eq!(erp.url, "mysql://reader:p%40ss%2Fword@erp.local:3306/erp");
    assert_eq!(erp.tls.mode, super::TlsMode::Disable, "MySQL's default");
    let dwh = open(POSTGRES, json!({ "url": "postgresql://ferry@db/dwh" })).unwrap();
    assert_eq!(dwh.tls.mode, super::TlsMode::Prefer, "libpq's default");
    let plain = open(
        POSTGRES,
        json!({ "url": "postgres://db/dwh?sslmode=disable" }),
    )
    .unwrap();
    assert_eq!(plain.tls.mode, super::TlsMode::Disable, "the URL's sslmode");
    let maria = open(MYSQL, json!({ "url": "mariadb://root@db/erp" })).unwrap();
    assert_eq!(maria.url, "mysql://root@db/erp");
    let local = open(SQLITE, json!({ "path": "data/source.db" })).unwrap();
    assert_eq!(local.url, "/srv/ferry/data/source.db");
    // Debug output never shows the password.
    let debug = format!(
        "{:?}",
        open(MYSQL, json!({ "url": "mysql://u:hunter2@h/d" })).unwrap()
    );
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn a_broken_connection_is_refused_at_its_key() {
    let key = |path: &[&str]| path.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let cases = [
        (
            POSTGRES,
            json!({ "url": "mysql://x/y" }),
            key(&["url"]),
            "this url starts with `postgres://`",
        ),
        (
            POSTGRES,
            json!({ "url": "postgres://x/y", "host": "z" }),
            key(&["host"]),
            "give either `url` or the fields",
        ),
        (
            MYSQL,
            json!({ "user": "u" }),
            key(&[]),
            "missing key `url` (or `host`",
        ),
        (
            MYSQL,
            json!({ "host": "h", "colour": "red" }),
            key(&["colour"]),
            "unknown field `colour`",
        ),
        (
            MYSQL,
            json!({ "host": "h", "tls": { "mode": "prefer" } }),
            key(&["tls", "mode"]),
            "MySQL connections have no `prefer`",
        ),
        (
            POSTGRES,
            json!({ "host": "h", "tls": { "mode": "verify-ca" } }),
            key(&["tls", "ca_file"]),
            "need `ca_file`",
        ),
        (
            POSTGRES,
            json!({ "host": "h", "tls": { "ca_file": "none.pem" } }),
            key(&["tls", "ca_file"]),
            "no such file: none.pem",
        ),
        (
            POSTGRES,
            json!({ "host": "h", "tls": { "mode": "sometimes" } }),
            key(&["tls", "mode"]),
            "unknown variant `sometimes`",
        ),
        (
            SQLITE,
            json!({}),
            key(&[]),
            "a SQLite connection needs `path`",
        ),
        (
            SQLITE,
            json!({ "url": "file:x.db" }),
            key(&["url"]),
            "a SQLite url starts with `sqlite://`",
        ),
    ];
    for (kind, config, path, message) in cases {
        let (found_path, found) = open(kind, config.clone()).unwrap_err();
        assert_eq!(found_path, path, "{kind} {config}: {found}");
        assert!(found.contains(message), "{kind} {config}: {found}");
    }
}

#[test]
fn a_client_certificate_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    fs::write(&cert, "not a certificate").unwrap();
    let config = json!({ "host": "h", "tls": { "mode": "require", "client_cert": cert } });
    let (path, message) = open(POSTGRES, config).unwrap_err();
    assert_eq!(path, ["tls", "client_key"]);
    assert!(message.contains("needs `client_key`"), "{message}");
    // A file that is no PEM certificate is named.
    let config = json!({ "host": "h", "tls": { "mode": "verify-ca", "ca_file": cert } });
    let (path, message) = open(POSTGRES, config).unwrap_err();
    assert_eq!(path, ["tls"]);
    assert!(message.contains("client.pem"), "{message}");
}

/// The machine's PostgreSQL serves TLS with Debian's self-signed certificate for `localhost`.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[tokio::test]
async fn postgres_connections_are_secured_as_their_tls_mode_says() {
    let url = postgres_url().replace("?sslmode=disable", "");
    let tls = |tls: Value| {
        let mut erp = connection(POSTGRES, &url);
        erp.config.insert("tls".into(), tls);
        erp
    };
    let required = check(&tls(json!({ "mode": "require" }))).await;
    assert!(required.is_ok(), "{required:?}");
    let right_ca = check(&tls(json!({ "mode": "verify-ca", "ca_file": SNAKEOIL }))).await;
    assert!(right_ca.is_ok(), "{right_ca:?}");
    // The server really encrypts: a session that asks for TLS sees `ssl = t`.
    let secure = open(
        POSTGRES,
        json!({ "url": url, "tls": { "mode": "require" } }),
    )
    .unwrap();
    let config: tokio_postgres::Config = secure.url.parse().unwrap();
    let (client, _task) = crate::postgres::connection::connect(&config, &secure.tls)
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the session is encrypted");

    let public = "/etc/ssl/certs/ca-certificates.crt";
    let wrong_ca = check(&tls(json!({ "mode": "verify-ca", "ca_file": public }))).await;
    let error = wrong_ca.unwrap_err();
    assert!(error.contains("connection `erp` ("), "{error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
    let wrong_name = check(&tls(json!({ "mode": "verify-full", "ca_file": SNAKEOIL }))).await;
    assert!(wrong_name.unwrap_err().contains("not valid for name"));
}

// ---- conformance ------------------------------------------------------------------------------

/// The `sql` puller, incremental by a cursor, one row per chunk, over a table of each database.
struct Source {
    kind: &'static str,
    table: String,
    fixture: Option<Fixture>,
    erp: Option<Connection>,
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PullerUnderTest for Source {
    async fn fill(&mut self, good: usize) -> Option<String> {
        let values: Vec<i64> = (1..=good as i64).collect();
        let (fixture, erp) = Fixture::new(self.kind, &self.table, &values).await;
        (self.fixture, self.erp) = (Some(fixture), Some(erp));
        // Rows come typed by the database: there is no malformed row to plant.
        None
    }

    fn puller(&self) -> Box<dyn Puller> {
        let query = format!("SELECT id, v FROM {}", self.table);
        let config = json!({ "connection": "erp", "query": query, "chunk_rows": 1, "cursor": "v" });
        build(self.erp.as_ref().unwrap(), config).unwrap()
    }

    async fn remaining(&self) -> Option<usize> {
        None
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let refused = match self.kind {
            POSTGRES => connection(
                POSTGRES,
                &format!("postgres://root:{SECRET}@127.0.0.1:1/test?sslmode=disable"),
            ),
            MYSQL => connection(MYSQL, &format!("mysql://root:{SECRET}@127.0.0.1:1/test")),
            // A file is there or not; a missing one is a mistake in the definition.
            _ => return None,
        };
        let config = json!({ "connection": "erp", "query": "SELECT 1" });
        Some((build(&refused, config).unwrap(), "connection `erp`".into()))
    }
}

#[tokio::test]
async fn the_sql_puller_conforms_on_every_database() {
    for kind in KINDS {
        let mut source = Source {
            kind,
            table: unique("conform"),
            fixture: None,
            erp: None,
        };
        crate::conformance::puller_conforms(&mut source).await;
        source
            .fixture
            .take()
            .unwrap()
            .drop_table(&source.table)
            .await;
    }
}

#[tokio::test]
async fn every_database_connection_checks_as_the_spec_says() {
    let registry = crate::registry();
    let (_dir, local, _db) = sqlite();
    for (good, unreachable) in [
        (
            connection(POSTGRES, &postgres_url()),
            connection(
                POSTGRES,
                &format!("postgres://root:{SECRET}@127.0.0.1:1/test"),
            ),
        ),
        (
            connection(MYSQL, &mysql_url()),
            connection(MYSQL, &format!("mysql://root:{SECRET}@127.0.0.1:1/test")),
        ),
        (local, connection(SQLITE, "/nonexistent/erp.db")),
    ] {
        crate::conformance::check_conforms(&registry, &good, &unreachable).await;
    }
}

// ---- check ----------------------------------------------------------------------------------

#[tokio::test]
async fn check_describes_each_kind_of_database() {
    let postgres = check(&connection(POSTGRES, &postgres_url())).await.unwrap();
    assert!(postgres.starts_with("PostgreSQL "), "{postgres}");
    assert!(
        postgres.contains(", database test (postgres://"),
        "{postgres}"
    );

    let mysql = check(&connection(MYSQL, &mysql_url())).await.unwrap();
    assert!(
        mysql.starts_with("MariaDB ") || mysql.starts_with("MySQL "),
        "{mysql}"
    );
    assert!(mysql.contains(", database test (mysql://"), "{mysql}");

    let (_dir, erp, db) = sqlite();
    db.execute_batch("CREATE TABLE a (x); CREATE TABLE b (y);")
        .unwrap();
    let sqlite = check(&erp).await.unwrap();
    assert!(sqlite.starts_with("SQLite 3."), "{sqlite}");
    assert!(sqlite.contains(", 2 tables ("), "{sqlite}");
}

#[tokio::test]
async fn check_reports_a_refused_connection_without_the_password() {
    for (kind, url) in [
        (
            POSTGRES,
            format!("postgres://root:{PASSWORD}@127.0.0.1:1/test?sslmode=disable"),
        ),
        (MYSQL, format!("mysql://root:{PASSWORD}@127.0.0.1:1/test")),
    ] {
        let error = check(&connection(kind, &url)).await.unwrap_err();
        assert!(error.contains("connection `erp` ("), "{error}");
        assert!(error.contains("root:***@127.0.0.1:1"), "{error}");
        assert!(!error.contains(PASSWORD), "{error}");
    }
    let error = check(&connection(SQLITE, "/nonexistent/erp.db"))
        .await
        .unwrap_err();
    assert!(error.contains("/nonexistent/erp.db"), "{error}");
}

#[test]
fn passwords_are_scrubbed_from_messages_even_when_encoded() {
    let url = "mysql://erp:p%40ss%3Aword@db:3306/erp";
    let scrubbed = super::scrub("denied for p%40ss%3Aword and p@ss:word", url);
    assert_eq!(scrubbed, "denied for *** and ***");
    assert_eq!(
        super::scrub("no password", "mysql://erp@db/erp"),
        "no password"
    );
}

// ---- throughput -----------------------------------------------------------------------------

/// Rows per second from MariaDB and PostgreSQL into batches. Not a test: run with
/// `cargo test --release -p ferry-connectors sql::tests::throughput -- --ignored --nocapture`
/// (`FERRY_BENCH_ROWS` rows, default 1,000,000).
#[tokio::test]
#[ignore]
async fn throughput() {
    let rows: u64 = std::env::var("FERRY_BENCH_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(1_000_000);

    let table = unique("bench");
    let mut conn = mysql().await;
    mysql_run(
        &mut conn,
        &[
            &format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64),
                 amount DECIMAL(12, 2), updated_at DATETIME(6), note TEXT)"
            ),
            &format!(
                "INSERT INTO {table} SELECT seq, CONCAT('customer ', seq), seq * 1.25,
                 '2024-01-01' + INTERVAL seq SECOND, REPEAT('x', seq % 50)
                 FROM seq_1_to_{rows}"
            ),
        ],
    )
    .await;
    let erp = connection(MYSQL, &mysql_url());
    let query = format!("SELECT * FROM {table}");
    measure("MariaDB", &erp, &query, rows).await;
    mysql_run(&mut conn, &[&format!("DROP TABLE {table}")]).await;

    let client = postgres().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int8 PRIMARY KEY, name text, amount numeric(12, 2),
             updated_at timestamp, note text);
             INSERT INTO {table} SELECT i, 'customer ' || i, i * 1.25,
                 '2024-01-01'::timestamp + i * interval '1 second', repeat('x', (i % 50)::int)
             FROM generate_series(1, {rows}) AS i;"
        ))
        .await
        .unwrap();
    let erp = connection(POSTGRES, &postgres_url());
    measure("PostgreSQL", &erp, &query, rows).await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

async fn measure(name: &str, erp: &Connection, query: &str, rows: u64) {
    let mut puller = build(erp, json!({ "connection": "erp", "query": query })).unwrap();
    let started = Instant::now();
    let (mut pulled, mut bytes) = (0, 0);
    loop {
        let batch = puller.pull(100).await.unwrap();
        for passenger in &batch.passengers {
            pulled += passenger.metadata[records::ROWS].parse::<u64>().unwrap();
            bytes += passenger.body.data.len();
        }
        if !batch.more {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(pulled, rows);
    println!(
        "{name}: {rows} rows in {seconds:.2} s: {:.0} rows/s, {:.1} MB/s of batches",
        rows as f64 / seconds,
        bytes as f64 / seconds / 1e6
    );
}
