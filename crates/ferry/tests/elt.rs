//! ELT end to end: the real binary loading the real MariaDB and CSV files into the real
//! PostgreSQL on this machine (`FERRY_TEST_POSTGRES`, `FERRY_TEST_MYSQL` override the
//! addresses). Every test works in its own database objects, named after the test and the
//! process, and removes them at the end.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    Project, Schema, connections, mysql, postgres_url, psql, stdout, terminate, unique, wait_for,
};

/// Drops a MariaDB table when the test ends.
struct MysqlTable(String);

impl Drop for MysqlTable {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| mysql(&format!("DROP TABLE IF EXISTS {}", self.0)));
    }
}

fn target_count(schema: &str, table: &str) -> u64 {
    let exists = psql(&format!(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = '{schema}' AND table_name = '{table}'"
    ));
    if exists != "1" {
        return 0;
    }
    psql(&format!("SELECT count(*) FROM {schema}.{table}"))
        .parse()
        .unwrap()
}

#[test]
fn incremental_load_survives_kill_9_without_duplicates_or_gaps() {
    const ROWS: u64 = 200_000;
    let source = unique("elt_src");
    let _source = MysqlTable(source.clone());
    mysql(&format!(
        "CREATE TABLE {source} (id INT PRIMARY KEY, name VARCHAR(64), amount DECIMAL(12,2), \
         updated_at DATETIME(6));
         INSERT INTO {source} SELECT seq, concat('customer ', seq), seq / 100, \
         '2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_{ROWS};"
    ));
    let schema = unique("elt_dst");
    let _schema = Schema(schema.clone());
    psql(&format!("CREATE SCHEMA {schema}"));

    let pipeline = format!(
        r#"
schedule: every 1s
batch_size: 4
pullers:
  - type: sql
    connection: erp
    query: SELECT id, name, amount, updated_at FROM {source}
    cursor: id
    chunk_rows: 2000
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.customers
    mode: append
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("customers", &pipeline)]);
    project.write("connections.yaml", &connections());

    let mut first = project.spawn();
    wait_for("some rows loaded", Duration::from_secs(120), || {
        target_count(&schema, "customers") >= 20_000
    });
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let before = target_count(&schema, "customers");
    assert!(
        before < ROWS,
        "the crash must happen mid-load; all rows were in already"
    );

    let second = project.spawn();
    wait_for("every row loaded", Duration::from_secs(180), || {
        target_count(&schema, "customers") >= ROWS
    });
    // Rows added later arrive with the next run, and only they.
    mysql(&format!(
        "INSERT INTO {source} SELECT seq, concat('late ', seq), 1, NOW() \
         FROM seq_{}_to_{}",
        ROWS + 1,
        ROWS + 500
    ));
    wait_for("the late rows", Duration::from_secs(60), || {
        target_count(&schema, "customers") >= ROWS + 500
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(terminate(second), "{}", project.log());

    let summary = psql(&format!(
        "SELECT count(*), count(DISTINCT id), min(id), max(id), sum(amount) \
         FROM {schema}.customers"
    ));
    let expected_sum = psql(&format!(
        "SELECT (sum(g) / 100 + 500)::numeric(20, 2) FROM generate_series(1, {ROWS}::numeric) g"
    ));
    let total = ROWS + 500;
    assert_eq!(
        summary,
        format!("{total}|{total}|1|{total}|{expected_sum}"),
        "every row exactly once, values intact"
    );
}

#[test]
fn a_malformed_csv_line_is_reported_and_nothing_of_the_file_is_loaded() {
    let schema = unique("elt_csv");
    let _schema = Schema(schema.clone());
    psql(&format!("CREATE SCHEMA {schema}"));
    let pipeline = format!(
        r#"
schedule: every 1s
pullers:
  - type: table
    path: inbox
    pattern: "*.csv"
    after_seat: {{ move_to: archive }}
    chunk_rows: 10
    columns:
      - {{ name: id, type: integer }}
      - {{ name: name }}
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.people
    mode: append
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("people", &pipeline)]);
    project.write("connections.yaml", &connections());
    let mut csv = String::from("id,name\n");
    for n in 1..=100 {
        if n == 56 {
            csv.push_str("56,\"unclosed\n");
        } else if n == 57 {
            csv.push_str("fifty-seven,Bob\n");
        } else {
            csv.push_str(&format!("{n},person {n}\n"));
        }
    }
    project.write("inbox/people.csv", &csv);
    let good: String = (1..=30).map(|n| format!("{n},person {n}\n")).collect();
    project.write("inbox/good.csv", &format!("id,name\n{good}"));

    let child = project.spawn();
    let dir = project.path().to_str().unwrap().to_string();
    wait_for("the good file loaded", Duration::from_secs(60), || {
        target_count(&schema, "people") >= 30
    });
    wait_for("the failure reported", Duration::from_secs(30), || {
        stdout(&project.ferry(&["status", &dir])).contains("people.csv:")
    });
    let status = stdout(&project.ferry(&["status", &dir]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(terminate(child));
    assert!(
        status.contains("line 57") || status.contains("line 56"),
        "{status}"
    );
    assert_eq!(
        target_count(&schema, "people"),
        30,
        "only the good file is in the table"
    );
    assert!(
        project.join("inbox/people.csv").exists(),
        "the broken file stays where it was"
    );
}

#[test]
fn check_tests_every_connection_and_never_prints_a_password() {
    let project = Project::new("", &[]);
    project.write(
        "connections.yaml",
        &format!(
            "{}nowhere: {{ type: postgres, url: \"postgres://ferry:hunter2@127.0.0.1:1/none?sslmode=disable\" }}\n",
            connections()
        ),
    );
    let dir = project.path().to_str().unwrap().to_string();
    let output = project.ferry(&["check", &dir]);
    let text = format!("{}{}", stdout(&output), support::stderr(&output));
    assert!(!output.status.success(), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    assert!(line("dwh").starts_with("ok"), "{text}");
    assert!(line("erp").starts_with("ok"), "{text}");
    assert!(line("nowhere").starts_with("FAIL"), "{text}");
    assert!(
        line("nowhere").contains("postgres://ferry:***@127.0.0.1:1/none"),
        "{text}"
    );
}

/// The machine's PostgreSQL serves TLS with Debian's self-signed "snakeoil" certificate, made
/// out to `localhost`.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[test]
fn check_reaches_postgres_over_tls_and_names_a_wrong_certificate_authority() {
    let project = Project::new("", &[]);
    let url = support::postgres_url().replace("?sslmode=disable", "");
    let localhost = url.replace("127.0.0.1", "localhost");
    // Certificate authorities that did not sign the server's certificate: the public ones.
    let public = "/etc/ssl/certs/ca-certificates.crt";
    project.write(
        "connections.yaml",
        &format!(
            "required: {{ type: postgres, url: \"{url}\", tls: {{ mode: require }} }}\n\
             right_ca: {{ type: postgres, url: \"{url}\", tls: {{ mode: verify-ca, ca_file: {SNAKEOIL} }} }}\n\
             full: {{ type: postgres, url: \"{localhost}\", tls: {{ mode: verify-full, ca_file: {SNAKEOIL} }} }}\n\
             wrong_ca: {{ type: postgres, url: \"{url}\", tls: {{ mode: verify-ca, ca_file: {public} }} }}\n\
             wrong_name: {{ type: postgres, url: \"{url}\", tls: {{ mode: verify-full, ca_file: {SNAKEOIL} }} }}\n"
        ),
    );
    let dir = project.path().to_str().unwrap().to_string();
    let output = project.ferry(&["check", &dir]);
    let text = format!("{}{}", stdout(&output), support::stderr(&output));
    assert!(!output.status.success(), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    for name in ["required", "right_ca", "full"] {
        assert!(line(name).starts_with("ok"), "{text}");
    }
    assert!(line("wrong_ca").starts_with("FAIL"), "{text}");
    assert!(line("wrong_ca").contains("UnknownIssuer"), "{text}");
    assert!(line("wrong_name").starts_with("FAIL"), "{text}");
    assert!(line("wrong_name").contains("not valid for name"), "{text}");

    // A CA file that is missing is a definition error, at its key.
    project.write(
        "connections.yaml",
        &format!("lost: {{ type: postgres, url: \"{url}\", tls: {{ mode: verify-ca, ca_file: certs/none.pem }} }}\n"),
    );
    let output = project.ferry(&["check", &dir]);
    let text = format!("{}{}", stdout(&output), support::stderr(&output));
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("connections.yaml:1:")
            && text.contains("lost.tls.ca_file: no such file: certs/none.pem"),
        "{text}"
    );
}

#[test]
fn an_sql_error_in_a_step_fails_the_run_and_keeps_the_rows_out() {
    let schema = unique("elt_step");
    let _schema = Schema(schema.clone());
    psql(&format!("CREATE SCHEMA {schema}"));
    let pipeline = format!(
        r#"
schedule: every 1h
failure_limit: 0
retry: {{ max_attempts: 1 }}
pullers:
  - type: table
    path: inbox
    after_seat: keep
    settle: 0s
    columns:
      - {{ name: id, type: integer }}
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.numbers
    mode: append
    after: [broken.sql]
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("numbers", &pipeline)]);
    project.write("connections.yaml", &connections());
    project.write(
        "clients/acme/sql/broken.sql",
        "UPDATE {target} SET id = id;\nINSERT INTO nowhere VALUES (1);\n",
    );
    project.write("inbox/numbers.csv", "id\n1\n2\n3\n");
    let child = project.spawn();
    let dir = project.path().to_str().unwrap().to_string();
    wait_for("the failed run", Duration::from_secs(60), || {
        stdout(&project.ferry(&["status", &dir])).contains(" failed (pulled")
    });
    let status = stdout(&project.ferry(&["status", &dir]));
    assert!(terminate(child));
    assert!(
        status.contains("1 passenger(s) not delivered (1 dead"),
        "{status}"
    );
    let dead = stdout(&project.ferry(&["queue", "-C", &dir, "list", "--state", "dead"]));
    assert!(
        dead.contains("broken.sql:2"),
        "the error names file and line:\n{dead}"
    );
    assert_eq!(
        target_count(&schema, "numbers"),
        0,
        "the chunk's rows went with its failed transaction"
    );
}

/// How many chunks `ferry.loads` holds for `target` (`schema.table`): recorded ones, or only
/// those of completed loads. 0 while the bookkeeping table does not exist yet.
fn chunks_recorded(target: &str, completed: bool) -> u64 {
    let filter = match completed {
        true => " AND completed_at IS NOT NULL",
        false => "",
    };
    let output = Command::new("psql")
        .args([
            &postgres_url(),
            "-tA",
            "-c",
            &format!("SELECT count(*) FROM ferry.loads WHERE target = '{target}'{filter}"),
        ])
        .output()
        .expect("psql");
    stdout(&output).trim().parse().unwrap_or(0)
}

/// Asserts that two listings hold the same lines, naming the first difference (the listings
/// are too long to print whole).
fn assert_same_rows(what: &str, expected: &str, actual: &str) {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let first_difference = expected
        .iter()
        .zip(&actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    assert!(
        expected == actual,
        "{what}: {} source rows, {} target rows; first difference at row {}: source {:?}, \
         target {:?}",
        expected.len(),
        actual.len(),
        first_difference + 1,
        expected.get(first_difference),
        actual.get(first_difference)
    );
}

/// Issue 12: loads `mode` from MariaDB into PostgreSQL (a full load, or incremental with a
/// cursor), kills `ferry` with `kill -9` twice mid-load at different points (a few chunks
/// into the first run; further into the second, which started its own load or continued the
/// interrupted one), lets a third run finish (full loads: after the source changed), and
/// compares the target with the source row by row: every source row exactly once, with its
/// current values, and nothing arriving later changes that.
///
/// `slow`: the source takes seconds, so both kills land while the load is still pulled;
/// otherwise the whole load is seated at once and the kills land while it is pushed (then the
/// interrupted load may complete from the queue before the next one supersedes it).
fn two_kills_mid_load_leave_each_row_once(mode: &str, incremental: bool, slow: bool) {
    const ROWS: u64 = 10_000;
    let source = unique("kill_src");
    let _source = MysqlTable(source.clone());
    mysql(&format!(
        "CREATE TABLE {source} (id INT PRIMARY KEY, name VARCHAR(64), amount DECIMAL(12,2));
         INSERT INTO {source} SELECT seq, concat('customer ', seq), seq / 100 \
         FROM seq_1_to_{ROWS};"
    ));
    let schema = unique("kill_dst");
    let _schema = Schema(schema.clone());
    psql(&format!("CREATE SCHEMA {schema}"));
    let target = format!("{schema}.customers");

    let cursor = match incremental {
        true => "\n    cursor: id",
        false => "",
    };
    let keys = match mode {
        "merge" | "history" => "\n    keys: [id]",
        _ => "",
    };
    // SLEEP makes the source slow (about 0.6 ms a row), so that a load takes seconds and
    // the kills land while it is being pulled and pushed. `every 1h`: each start runs once.
    let (pace, chunk_rows) = match slow {
        true => (" WHERE SLEEP(0.0005) = 0", 200),
        false => ("", 100),
    };
    let pipeline = format!(
        r#"
schedule: every 1h
batch_size: 4
pullers:
  - type: sql
    connection: erp
    query: SELECT id, name, amount FROM {source}{pace}
    chunk_rows: {chunk_rows}{cursor}
pushers:
  - type: postgres
    connection: dwh
    table: {target}
    mode: {mode}{keys}
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("customers", &pipeline)]);
    project.write("connections.yaml", &connections());

    let mut first = project.spawn();
    wait_for("a few chunks loaded", Duration::from_secs(120), || {
        chunks_recorded(&target, false) >= 3
    });
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let after_first = chunks_recorded(&target, false);
    assert_eq!(
        chunks_recorded(&target, true),
        0,
        "the first crash must happen mid-load; a load completed before:\n{}",
        project.log()
    );

    let mut second = project.spawn();
    wait_for("more chunks loaded", Duration::from_secs(120), || {
        chunks_recorded(&target, false) >= after_first + 8
    });
    second.kill().expect("kill -9");
    second.wait().expect("reap");
    // With a fast source the interrupted load may have completed from the queue before the
    // second crash, which then interrupts the second run's load.
    if slow {
        assert_eq!(
            chunks_recorded(&target, true),
            0,
            "both crashes must happen mid-load; a load completed before:\n{}",
            project.log()
        );
    }
    if !incremental {
        // The source changes before the load that completes: chunks of the interrupted loads
        // still carry the old values, which must never overwrite the new ones.
        mysql(&format!(
            "UPDATE {source} SET name = concat('renamed ', id) WHERE id % 7 = 0"
        ));
    }

    let started = psql("SELECT clock_timestamp()");
    let third = project.spawn();
    wait_for("a completed load", Duration::from_secs(180), || {
        match incremental {
            // The interrupted load, continued.
            true => chunks_recorded(&target, true) > 0,
            // A load pulled by this run (an older one may complete first, from the queue).
            false => {
                let done = Command::new("psql")
                    .args([
                        &postgres_url(),
                        "-tA",
                        "-c",
                        &format!(
                            "SELECT count(*) FROM (SELECT load FROM ferry.loads \
                             WHERE target = '{target}' GROUP BY load \
                             HAVING bool_and(completed_at IS NOT NULL) \
                                AND min(loaded_at) > '{started}') x"
                        ),
                    ])
                    .output()
                    .expect("psql");
                stdout(&done).trim() == "1"
            }
        }
    });
    // Chunks of the interrupted loads still in the queue arrive after the new load: they
    // must change nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert!(terminate(third), "{}", project.log());

    let expected = mysql(&format!(
        "SELECT concat_ws('|', id, name, amount) FROM {source} ORDER BY id"
    ));
    let current = match mode {
        "history" => " WHERE is_current",
        _ => "",
    };
    let actual = psql(&format!(
        "SELECT id, name, amount FROM {target}{current} ORDER BY id"
    ));
    assert_same_rows(mode, &expected, &actual);
    if mode == "history" {
        assert_eq!(
            psql(&format!("SELECT count(*) FROM {target}")),
            ROWS.to_string(),
            "one version per key: nothing was closed or inserted twice"
        );
    }
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}' \
             AND tablename LIKE '%\\_\\_ferry\\_%'"
        )),
        "0",
        "no shadow table is left behind"
    );
}

#[test]
fn a_full_append_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("append", false, true);
}

#[test]
fn a_full_merge_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("merge", false, true);
}

#[test]
fn a_full_replace_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("replace", false, true);
}

#[test]
fn a_full_history_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("history", false, true);
}

#[test]
fn an_incremental_append_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("append", true, true);
}

#[test]
fn an_incremental_merge_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("merge", true, true);
}

#[test]
fn an_incremental_replace_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("replace", true, true);
}

#[test]
fn an_incremental_history_killed_twice_is_loaded_once() {
    two_kills_mid_load_leave_each_row_once("history", true, true);
}

// A full `append` is left out: when its wholly seated load completes from the queue before the
// next run's load starts, the table holds both snapshots (docs/elt.md, "After a crash").

#[test]
fn a_wholly_seated_full_merge_killed_while_pushed_ends_as_the_source() {
    two_kills_mid_load_leave_each_row_once("merge", false, false);
}

#[test]
fn a_wholly_seated_full_replace_killed_while_pushed_ends_as_the_source() {
    two_kills_mid_load_leave_each_row_once("replace", false, false);
}

#[test]
fn a_wholly_seated_full_history_killed_while_pushed_ends_as_the_source() {
    two_kills_mid_load_leave_each_row_once("history", false, false);
}
