//! SQL targets end to end (issue 13, parts 4 and 5): the real binary loading CSV files into
//! the real MariaDB (`mysql` pusher) and into pre-made PostgreSQL tables whose columns carry
//! type modifiers. Every test uses its own tables, named after the test and the process, and
//! removes them (and their rows in the bookkeeping tables) at the end.

mod support;

use std::time::Duration;

use support::{
    Project, Schema, connections, mysql, mysql_url, psql, stdout, terminate, unique, wait_for,
    wait_for_dead,
};

/// A MariaDB table in the test database, dropped with its bookkeeping rows when the test ends.
struct MysqlTable(String);

impl MysqlTable {
    /// `database.table`, as the pusher records it.
    fn target(&self) -> String {
        let database = mysql_url().rsplit('/').next().unwrap_or("test").to_string();
        format!("{database}.{}", self.0)
    }

    /// Rows in the table; 0 while it does not exist.
    fn count(&self) -> u64 {
        let exists = mysql(&format!(
            "SELECT count(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{}'",
            self.0
        ));
        if exists != "1" {
            return 0;
        }
        mysql(&format!("SELECT count(*) FROM {}", self.0))
            .parse()
            .unwrap()
    }
}

impl Drop for MysqlTable {
    fn drop(&mut self) {
        let target = self.target();
        let _ = std::panic::catch_unwind(|| {
            mysql(&format!(
                "DROP TABLE IF EXISTS {}; DELETE FROM ferry_loads WHERE target = '{target}'",
                self.0
            ))
        });
    }
}

/// A `table` puller of `inbox/*.csv` into the `mysql` pusher of `erp`.
fn csv_to_mariadb(table: &str, mode: &str, chunk_rows: usize) -> String {
    format!(
        r#"
schedule: every 1s
batch_size: 4
pullers:
  - type: table
    path: inbox
    pattern: "*.csv"
    after_seat: {{ move_to: archive }}
    settle: 0s
    chunk_rows: {chunk_rows}
    columns:
      - {{ name: id, type: integer }}
      - {{ name: name, type: "varchar(40)" }}
      - {{ name: amount, type: "numeric(12,2)" }}
pushers:
  - type: mysql
    connection: erp
    table: {table}
    mode: {mode}
    keys: [id]
"#
    )
}

/// CSV rows `id,name,amount` for `ids`, the name tagged with `tag`.
fn csv(ids: std::ops::RangeInclusive<u64>, tag: &str) -> String {
    let mut text = String::from("id,name,amount\n");
    for id in ids {
        text.push_str(&format!("{id},{tag} {id},{}.{:02}\n", id / 100, id % 100));
    }
    text
}

#[test]
fn csv_merged_into_mariadb_twice_updates_without_duplicates() {
    let table = MysqlTable(unique("merge_twice"));
    let pipeline = csv_to_mariadb(&table.0, "merge", 10);
    let project = Project::new("queue_life_span: 1d\n", &[("people", &pipeline)]);
    project.write("connections.yaml", &connections());
    project.write("inbox/first.csv", &csv(1..=50, "first"));
    let child = project.spawn();
    wait_for("the first file loaded", Duration::from_secs(60), || {
        table.count() >= 50
    });
    // Overlapping ids 41..=50 come again with new names; 51..=80 are new.
    project.write("inbox/second.csv", &csv(41..=80, "second"));
    wait_for("the second file loaded", Duration::from_secs(60), || {
        table.count() >= 80
            && mysql(&format!("SELECT name FROM {} WHERE id = 45", table.0)) == "second 45"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(terminate(child), "{}", project.log());
    let summary = mysql(&format!(
        "SELECT count(*), count(DISTINCT id), sum(name LIKE 'second %'), sum(amount) FROM {}",
        table.0
    ));
    let amounts: u64 = (1..=80u64).sum();
    assert_eq!(
        summary,
        format!("80\t80\t40\t{}.{:02}", amounts / 100, amounts % 100),
        "one row per id, the overlap updated"
    );
    let types = mysql(&format!(
        "SELECT GROUP_CONCAT(COLUMN_TYPE ORDER BY ORDINAL_POSITION) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{}'",
        table.0
    ));
    assert_eq!(
        types, "bigint(20),varchar(40),decimal(12,2)",
        "declared types"
    );
}

#[test]
fn a_kill_9_mid_load_into_mariadb_loads_every_row_exactly_once() {
    const ROWS: u64 = 300_000;
    let table = MysqlTable(unique("killed"));
    let pipeline = csv_to_mariadb(&table.0, "append", 2000);
    let project = Project::new("queue_life_span: 1d\n", &[("people", &pipeline)]);
    project.write("connections.yaml", &connections());
    project.write("inbox/many.csv", &csv(1..=ROWS, "row"));

    let mut first = project.spawn();
    wait_for("some rows loaded", Duration::from_secs(120), || {
        table.count() >= 10_000
    });
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let before = table.count();
    assert!(
        before < ROWS,
        "the crash must happen mid-load; all rows were in already"
    );

    let second = project.spawn();
    wait_for("every row loaded", Duration::from_secs(180), || {
        table.count() >= ROWS
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(terminate(second), "{}", project.log());
    let summary = mysql(&format!(
        "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {}",
        table.0
    ));
    assert_eq!(
        summary,
        format!("{ROWS}\t{ROWS}\t1\t{ROWS}"),
        "every row exactly once (loaded {before} before the kill)"
    );
}

#[test]
fn a_csv_into_a_premade_postgres_table_with_modifiers_loads_or_names_the_bad_row() {
    let schema = unique("modifiers");
    let _schema = Schema(schema.clone());
    psql(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.prices \
         (id bigint PRIMARY KEY, amount numeric(12,2), code varchar(8))"
    ));
    let pipeline = format!(
        r#"
schedule: every 1s
# A retry after a passing hiccup (a busy machine) comes soon; the bad row is permanent anyway.
retry: {{ backoff: 1s }}
pullers:
  - type: table
    path: inbox
    pattern: "*.csv"
    after_seat: {{ move_to: archive }}
    settle: 0s
    chunk_rows: 100
    columns:
      - {{ name: id, type: integer }}
      - {{ name: amount, type: numeric }}
      - {{ name: code }}
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.prices
    mode: append
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("prices", &pipeline)]);
    project.write("connections.yaml", &connections());
    project.write(
        "inbox/bad.csv",
        "id,amount,code\n1,12.50,ABCDEFGH\n2,9999999999.99,B\n3,1.00,TOOLONGCODE\n4,2,D\n",
    );
    let child = project.spawn();
    let id = wait_for_dead(&project, "acme/prices");
    let dir = project.path().to_str().unwrap().to_string();
    let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
    assert!(
        shown.contains("row 3, column `code`, value `TOOLONGCODE`"),
        "{shown}"
    );
    assert!(shown.contains("value too long"), "{shown}");
    let count = || psql(&format!("SELECT count(*) FROM {schema}.prices"));
    assert_eq!(count(), "0", "nothing of the chunk is in the table");

    // Without the bad row, every row loads (the modifiers do not stop the load).
    project.write(
        "inbox/good.csv",
        "id,amount,code\n1,12.50,ABCDEFGH\n2,9999999999.99,B\n4,2,D\n",
    );
    wait_for("the good file loaded", Duration::from_secs(60), || {
        count() == "3"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(terminate(child), "{}", project.log());
    let rows = psql(&format!(
        "SELECT string_agg(id || ':' || amount || ':' || code, ' ' ORDER BY id) \
         FROM {schema}.prices"
    ));
    assert_eq!(rows, "1:12.50:ABCDEFGH 2:9999999999.99:B 4:2.00:D");
}
