//! Record batches through the processors, end to end with the real binary: a MariaDB table
//! remapped row by row into Parquet files (read back with the parquet crate), and a JSON
//! document decoded into records and loaded into PostgreSQL. The databases are this machine's
//! (`FERRY_TEST_POSTGRES`, `FERRY_TEST_MYSQL`); every test makes and removes its own objects.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::{
    Project, Schema, connections, psql, stdout, terminate, unique, wait_for, wait_for_dead,
};

/// Runs SQL on MariaDB with the `mysql` client, in UTC.
fn mysql(sql: &str) -> String {
    support::mysql(&format!("SET time_zone = '+00:00'; {sql}"))
}

/// Drops a MariaDB table when the test ends.
struct MysqlTable(String);

impl Drop for MysqlTable {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| mysql(&format!("DROP TABLE IF EXISTS {}", self.0)));
    }
}

/// One row as the test compares it: id, customer, amount, created (UTC, microseconds).
type Row = (i64, String, String, String);

/// Every row of the Parquet files in `dir`, by id, checking the columns' Parquet types.
fn parquet_rows(dir: &std::path::Path) -> BTreeMap<i64, Row> {
    let mut rows = BTreeMap::new();
    for name in support::files(dir) {
        let bytes = bytes::Bytes::from(std::fs::read(dir.join(&name)).unwrap());
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "amount", "created", "customer"], "{name}");
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert!(
            matches!(schema.field(1).data_type(), DataType::Decimal128(38, 4)),
            "numeric stays exact: {:?}",
            schema.field(1).data_type()
        );
        assert_eq!(
            schema.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "a TIMESTAMP is an instant, UTC-adjusted"
        );
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let amounts = batch.column(1).as_primitive::<Decimal128Type>();
            let created = batch.column(2).as_primitive::<TimestampMicrosecondType>();
            let customers = batch.column(3).as_string::<i32>();
            for i in 0..batch.num_rows() {
                let at = chrono::DateTime::from_timestamp_micros(created.value(i)).unwrap();
                let id = ids.value(i);
                let row = (
                    id,
                    customers.value(i).to_string(),
                    amounts.value_as_string(i),
                    at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                );
                assert!(rows.insert(id, row).is_none(), "row {id} twice");
            }
        }
    }
    rows
}

#[test]
fn a_mariadb_table_remapped_row_by_row_becomes_parquet_files_with_its_types() {
    const ROWS: i64 = 2_500;
    let source = unique("records_src");
    let _source = MysqlTable(source.clone());
    mysql(&format!(
        "CREATE TABLE {source} (id INT PRIMARY KEY, name VARCHAR(64), \
         amount DECIMAL(30,4), created TIMESTAMP(6) NULL);
         INSERT INTO {source} SELECT seq, concat('customer\\t', seq), \
         seq * 1000000000000 + seq / 10000, \
         '2024-03-31 00:59:59.123456' + INTERVAL seq MINUTE FROM seq_1_to_{ROWS};"
    ));
    let pipeline = format!(
        r#"
schedule: every 1h   # runs once, at start
pullers:
  - type: sql
    connection: erp
    query: SELECT id, name, amount, created FROM {source}
    cursor: id
    chunk_rows: 1000
processors:
  - type: remap
    source: |
      .customer = upcase!(.name)
      del(.name)
      .id = to_int!(.id) * 10
  - type: encode
    codec: parquet
pushers:
  - type: file
    path: out
    name_template: "chunk-{{metadata.chunk}}-{{id}}.parquet"
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("export", &pipeline)]);
    project.write("connections.yaml", &connections());
    let child = project.spawn();
    let out = project.join("out");
    wait_for("three Parquet files", Duration::from_secs(120), || {
        support::files(&out).len() >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(terminate(child), "{}", project.log());
    assert_eq!(
        support::files(&out).len(),
        3,
        "one file per chunk of 1000 rows"
    );

    let expected: BTreeMap<i64, Row> = mysql(&format!(
        "SELECT id * 10, upper(name), amount, \
         DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM {source}"
    ))
    .lines()
    .map(|line| {
        let fields: Vec<&str> = line.split('\t').collect();
        let id: i64 = fields[0].parse().unwrap();
        // `mysql -B` writes a tab inside a value as `\t`.
        let customer = fields[1].replace("\\t", "\t");
        (
            id,
            (id, customer, fields[2].to_string(), fields[3].to_string()),
        )
    })
    .collect();
    let actual = parquet_rows(&out);
    assert_eq!(actual.len(), ROWS as usize);
    assert_eq!(actual[&10].1, "CUSTOMER\t1");
    assert_eq!(
        actual[&10].2, "1000000000000.0001",
        "every digit of the decimal"
    );
    for (id, row) in &expected {
        assert_eq!(actual.get(id), Some(row), "row {id}");
    }
}

#[test]
fn a_json_document_decoded_with_columns_is_loaded_into_postgresql() {
    let schema = unique("records_json");
    let _schema = Schema(schema.clone());
    psql(&format!("CREATE SCHEMA {schema}"));
    let pipeline = format!(
        r#"
schedule: every 1s
pullers:
  - type: file
    path: inbox
    pattern: "*.json"
    after_seat: delete
    settle: 0s
processors:
  - type: decode
    codec: json
    from: attachment
    columns:
      - {{ name: id, type: integer }}
      - {{ name: name, type: text }}
      - {{ name: amount, type: numeric }}
      - {{ name: at, type: timestamptz }}
      - {{ name: tags, type: json }}
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.orders
    mode: append
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("orders", &pipeline)]);
    project.write("connections.yaml", &connections());
    project.write(
        "inbox/orders.json",
        r#"[
  {"id": 1, "name": "Ann\tTab", "amount": "12345678901234567890.12", "at": "2024-05-31T12:00:00+02:00", "tags": ["a", 1]},
  {"id": "2", "name": "Bob", "amount": 0.5, "at": "2024-01-01 00:00:00Z", "tags": null, "ignored": true},
  {"id": 3, "name": null}
]"#,
    );
    project.write(
        "inbox/broken.json",
        r#"[{"id": 1}, {"id": 2, "amount": "a lot"}]"#,
    );
    let child = project.spawn();
    let dir = project.path().to_str().unwrap().to_string();
    let table = format!("{schema}.orders");
    wait_for("the rows loaded", Duration::from_secs(60), || {
        psql(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
        )) == "1"
            && psql(&format!("SELECT count(*) FROM {table}")) == "3"
    });
    let dead = wait_for_dead(&project, "orders");
    let detail = stdout(&project.ferry(&["queue", "-C", &dir, "show", &dead]));
    std::thread::sleep(Duration::from_secs(1));
    assert!(terminate(child), "{}", project.log());

    assert!(
        detail.contains("row 2, column `amount`: `a lot` is not a decimal number"),
        "{detail}"
    );
    let rows = psql(&format!(
        "SELECT id, name, amount, at AT TIME ZONE 'UTC', tags, \
         pg_typeof(amount), pg_typeof(at) FROM {table} ORDER BY id"
    ));
    assert_eq!(
        rows,
        "1|Ann\tTab|12345678901234567890.12|2024-05-31 10:00:00|[\"a\", 1]|numeric|timestamp with time zone\n\
         2|Bob|0.5|2024-01-01 00:00:00||numeric|timestamp with time zone\n\
         3|||||numeric|timestamp with time zone"
    );
}
