//! Issue 12: one poison item never stops the process.

mod support;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use support::{
    Project, Schema, connections, files, postgres_url, psql, stderr, stdout, terminate, unique,
    wait_for, wait_for_dead,
};

/// A `file` puller reading `inbox` with `codec`, writing to `outbox`.
fn files_pipeline(inbox: &str, codec: &str, outbox: &str) -> String {
    format!(
        r#"
schedule: every 1s
pullers:
  - type: file
    path: {inbox}
    settle: 0s
    codec: {codec}
    after_seat: delete
pushers:
  - type: file
    path: {outbox}
    name_template: "{{metadata.file.name}}"
"#
    )
}

/// 20,000 nested `<a>` elements overflowed the stack of a runtime thread: exit 134 within a
/// second, and again on every restart, stopping every client's pipelines. The other pipeline
/// also writes a name of 250 bytes, which its temporary name once made too long.
#[test]
fn a_deeply_nested_xml_file_is_refused_and_others_keep_flowing() {
    let project = Project::new(
        "queue_life_span: 1h\n",
        &[
            ("deep", &files_pipeline("inbox", "xml", "outbox")),
            (
                "other",
                &files_pipeline("out/other-in", "json", "out/other-out"),
            ),
        ],
    );
    let deep = "<a>".repeat(20_000) + &"</a>".repeat(20_000);
    project.write("inbox/deep.xml", &deep);
    for n in 0..9 {
        project.write(
            &format!("out/other-in/{n}.json"),
            &format!("{{\"n\": {n}}}"),
        );
    }
    // A legal name of 250 bytes: its temporary name must not pass the 255-byte limit.
    let long = "x".repeat(245) + ".json";
    project.write(&format!("out/other-in/{long}"), "{\"n\": 9}");
    let dir = project.path().to_str().unwrap().to_string();

    let peek = project.ferry(&["peek", "-C", &dir, "acme/deep"]);
    let shown = format!("{}{}", stdout(&peek), stderr(&peek));
    assert_ne!(peek.status.code(), Some(134), "{shown}");
    assert!(shown.contains("deeper than 100 levels"), "{shown}");

    let mut child = project.spawn();
    wait_for(
        "the other pipeline's 10 files",
        Duration::from_secs(30),
        || {
            let out = files(&project.join("out/other-out"));
            out.iter().filter(|name| !name.starts_with('.')).count() == 10
        },
    );
    assert!(project.join("out/other-out").join(&long).exists());
    assert!(
        child.try_wait().expect("wait").is_none(),
        "ferry stopped:\n{}",
        project.log()
    );
    wait_for("the deep file run failed", Duration::from_secs(10), || {
        project.log().contains("pipeline=acme/deep run=") && project.log().contains("failed=1")
    });
    assert!(terminate(child), "{}", project.log());
    // Written to a file, the log carries no colour codes.
    assert!(!project.log().contains('\x1b'), "{}", project.log());
}

/// A new PostgreSQL schema holding an empty table `people (id bigint, name text)`, dropped when
/// the guard is.
fn people_schema(prefix: &str) -> (String, Schema) {
    let schema = unique(prefix);
    let guard = Schema(schema.clone());
    psql(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.people (id bigint, name text)"
    ));
    (schema, guard)
}

/// A `psql` session holding an exclusive lock on `table` until dropped.
struct Lock {
    psql: Child,
    /// psql ends when its input does: kept open while the lock is held.
    _input: ChildStdin,
}

impl Lock {
    fn take(table: &str) -> Lock {
        let mut psql = Command::new("psql")
            .args([&postgres_url(), "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        let mut input = psql.stdin.take().expect("stdin");
        writeln!(input, "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;").expect("lock");
        input.flush().expect("flush");
        Lock {
            psql,
            _input: input,
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.psql.kill();
        let _ = self.psql.wait();
    }
}

/// The counts of `ferry status` for `acme/<pipeline>` (scheduled `every 1s`): pending,
/// in_flight, failed, dead.
fn open_counts(project: &Project, pipeline: &str) -> Vec<String> {
    let dir = project.path().to_str().unwrap();
    let status = stdout(&project.ferry(&["status", dir]));
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("acme/{pipeline} ")))
        .unwrap_or("")
        .to_string();
    line.split_whitespace()
        .skip(3)
        .take(4)
        .map(str::to_string)
        .collect()
}

/// A passenger in flight when the process dies counts that as an attempt: one that kills the
/// process every time goes dead after its attempts instead of crash-looping. The "poison"
/// here is a push that never returns (the target table is locked) and a `kill -9`.
#[test]
fn a_passenger_in_flight_at_each_death_goes_dead_after_its_attempts() {
    let (schema, _schema) = people_schema("poison");
    let lock = Lock::take(&format!("{schema}.people"));

    let pipeline = format!(
        r#"
schedule: every 1s
pullers:
  - type: table
    path: inbox
    pattern: "*.csv"
    settle: 0s
    after_seat: delete
    columns:
      - {{ name: id, type: integer }}
      - {{ name: name }}
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.people
    mode: append
retry: {{ max_attempts: 2, backoff: 1s, max_backoff: 1s }}
"#
    );
    let project = Project::new("queue_life_span: 1d\n", &[("people", &pipeline)]);
    project.write("connections.yaml", &connections());
    project.write("inbox/people.csv", "id,name\n1,Ann\n2,Bob\n");
    let dir = project.path().to_str().unwrap().to_string();

    // Two deaths while the push hangs: the first attempt fails, the second one is the last.
    let show = |id: &str| stdout(&project.ferry(&["queue", "-C", &dir, "show", id]));
    let mut id = String::new();
    for death in 1..=2 {
        let mut child = project.spawn();
        wait_for("the passenger in flight", Duration::from_secs(30), || {
            let listed = stdout(&project.ferry(&["queue", "-C", &dir, "list"]));
            id = listed
                .lines()
                .find(|l| l.contains("acme/people"))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_string();
            // Leased by this process, after the earlier death was counted.
            let leased = match death {
                1 => "in_flight".to_string(),
                n => format!("in_flight attempts {}", n - 1),
            };
            !id.is_empty()
                && show(&id).contains(&leased)
                && open_counts(&project, "people") == ["0", "1", "0", "0"]
        });
        // Give the worker time to reach the locked table (the lease comes first).
        std::thread::sleep(Duration::from_millis(500));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }
    let child = project.spawn();
    assert_eq!(wait_for_dead(&project, "acme/people"), id);
    let shown = show(&id);
    assert!(
        shown.contains("gave up after 2 attempts: the process stopped while handling it"),
        "{shown}"
    );
    assert!(
        shown.contains("attempt 1") && shown.contains("the process stopped while handling it"),
        "{shown}"
    );
    assert!(terminate(child), "{}", project.log());

    // Once the cause is gone, a person's retry delivers it.
    drop(lock);
    let retry = project.ferry(&["queue", "-C", &dir, "retry", &id]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    let child = project.spawn();
    wait_for(
        "the retried passenger complete",
        Duration::from_secs(30),
        || {
            let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
            shown.contains("state          complete")
        },
    );
    assert!(terminate(child), "{}", project.log());
}

/// A small tmpfs mounted over a directory of the project, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }

    /// Fills the file system to the last byte; returns the filler's path.
    fn fill(&self) -> std::path::PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte[..]).is_ok() {
            byte[0] = 1;
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A project whose store is on a small tmpfs, running, with one passenger pushed whose results
/// the store refused: its disk is full (`filler` fills it).
struct FullDisk {
    // Fields drop in this order: the mount before the project directory it is in.
    _disk: Tmpfs,
    project: Project,
    child: Child,
    filler: std::path::PathBuf,
    _schema: Schema,
}

fn full_disk_after_a_push() -> FullDisk {
    let (schema, schema_guard) = people_schema("full");
    let pipeline = format!(
        r#"
schedule: every 1s
pullers:
  - type: table
    path: inbox
    pattern: "*.csv"
    settle: 0s
    after_seat: delete
    columns:
      - {{ name: id, type: integer }}
      - {{ name: name }}
processors:
  # The processed passenger is written with its results: 8.5 MB the store's log must grow by,
  # more than any write before (this definition, stored at start, is 0.5 MB).
  - type: set
    metadata: {{ half: "{half}" }}
  - type: set
    metadata: {{ big: "{big}" }}
pushers:
  - type: postgres
    connection: dwh
    table: {schema}.people
    mode: append
"#,
        half = "x".repeat(512 << 10),
        big = "{metadata.half}".repeat(16)
    );
    let project = Project::new("queue_life_span: 1d\n", &[("people", &pipeline)]);
    project.write("connections.yaml", &connections());
    let disk = Tmpfs::mount(project.join("data"), "32m");

    // The push waits on a lock while the store's disk fills up.
    let lock = Lock::take(&format!("{schema}.people"));
    let child = project.spawn();
    project.write("inbox/people.csv", "id,name\n1,Ann\n2,Bob\n");
    wait_for("the passenger in flight", Duration::from_secs(30), || {
        open_counts(&project, "people") == ["0", "1", "0", "0"]
    });
    std::thread::sleep(Duration::from_millis(500));
    let filler = disk.fill();
    drop(lock);
    // The results refused (checkpoints and other writes may be refused before that).
    let refused = |log: String| {
        log.lines()
            .any(|l| l.contains("the store refused a write") && l.contains("results of"))
    };
    for _ in 0..300 {
        if refused(project.log()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        refused(project.log()),
        "no refused results:\n{}",
        project.log()
    );
    FullDisk {
        _disk: disk,
        project,
        child,
        filler,
        _schema: schema_guard,
    }
}

/// With the store on a full disk, a pushed batch's results could not be recorded and were
/// never tried again: the passenger stayed in flight until its 300 s lease expired and was
/// pushed again. Now they are kept and recorded once the disk has room.
#[test]
fn results_that_could_not_be_recorded_are_recorded_once_the_store_takes_writes() {
    let full = full_disk_after_a_push();
    let project = &full.project;
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&full.filler).expect("make room");

    // Long before the lease's 300 s, and without a second push.
    wait_for("the results recorded", Duration::from_secs(30), || {
        open_counts(project, "people") == ["0", "0", "0", "0"]
    });
    assert!(terminate(full.child), "{}", project.log());
    let log = project.log();
    assert_eq!(log.matches("passengers pushed").count(), 1, "{log}");
    assert!(log.contains("recorded after the store refused it"), "{log}");
}

/// A clean shutdown while the store still refuses the results exits 0 and says which
/// passengers will be pushed again; they are, once the store has room.
#[test]
fn a_shutdown_with_unrecorded_results_says_what_will_be_pushed_again() {
    let full = full_disk_after_a_push();
    let project = &full.project;
    assert!(terminate(full.child), "{}", project.log());
    let log = project.log();
    assert!(
        log.contains(
            "stopping with results the store did not take: these passengers will be pushed again"
        ),
        "{log}"
    );
    std::fs::remove_file(&full.filler).expect("make room");
    let child = project.spawn();
    wait_for("the passenger delivered", Duration::from_secs(30), || {
        open_counts(project, "people") == ["0", "0", "0", "0"]
            && project.log().matches("passengers pushed").count() == 2
    });
    assert!(terminate(child), "{}", project.log());
}

/// Input that cannot be taken was retried, and logged, on every run without end (3 bad files
/// on a 1 s schedule: 3 error rows a second) and named only in the stored run log. Now it is
/// quarantined once, shown in `ferry status` with its reason, and taken again once it changes.
#[test]
fn untakeable_input_is_quarantined_once_and_taken_again_when_it_changes() {
    let project = Project::new(
        "queue_life_span: 1h\n",
        &[("orders", &files_pipeline("inbox", "json", "outbox"))],
    );
    for n in 1..=3 {
        project.write(&format!("inbox/bad-{n}.json"), "{\n  \"order\": ,\n}");
    }
    project.write("inbox/good.json", "{\"order\": 1}");
    let dir = project.path().to_str().unwrap().to_string();
    let child = project.spawn();
    wait_for("the good file delivered", Duration::from_secs(30), || {
        project.join("outbox/good.json").exists()
    });
    let status = || stdout(&project.ferry(&["status", &dir]));
    wait_for("three quarantined files", Duration::from_secs(10), || {
        status().matches("quarantined #").count() == 3
    });
    let shown = status();
    assert!(
        shown.contains("bad-2.json: cannot decode") && shown.contains("JSON line 2"),
        "{shown}"
    );
    // Runs go on, without trying (or logging) the bad files again.
    std::thread::sleep(Duration::from_secs(3));
    let shown = status();
    assert!(shown.contains("failed 0)"), "{shown}");
    assert_eq!(
        project.log().matches("run finished with failures").count(),
        1,
        "{}",
        project.log()
    );

    // A fixed file is a changed file: taken again.
    project.write("inbox/bad-1.json", "{\"order\": 2}");
    wait_for("the fixed file delivered", Duration::from_secs(30), || {
        project.join("outbox/bad-1.json").exists()
    });
    // Its quarantine ended with it; a removed file's too.
    std::fs::remove_file(project.join("inbox/bad-2.json")).unwrap();
    wait_for("one quarantined file left", Duration::from_secs(10), || {
        status().matches("quarantined #").count() == 1
    });
    assert!(status().contains("bad-3.json"), "{}", status());

    // A person asks for it again: read, failed, quarantined anew (and logged once more).
    let listed = stdout(&project.ferry(&["queue", "-C", &dir, "quarantined"]));
    let number = listed
        .split_whitespace()
        .next()
        .and_then(|n| n.strip_prefix('#'))
        .unwrap_or_default()
        .to_string();
    assert!(listed.contains("bad-3.json"), "{listed}");
    let retried = project.ferry(&["queue", "-C", &dir, "retry-input", &number]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    wait_for("bad-3.json tried again", Duration::from_secs(10), || {
        project.log().matches("run finished with failures").count() == 2
    });
    let discarded = stdout(&project.ferry(&["queue", "-C", &dir, "quarantined"]));
    let number = discarded.split_whitespace().next().unwrap_or_default();
    let number = number.trim_start_matches('#').to_string();
    let discard = project.ferry(&["queue", "-C", &dir, "discard-input", &number]);
    assert!(discard.status.success(), "{}", stderr(&discard));
    assert!(
        stdout(&project.ferry(&["queue", "-C", &dir, "quarantined"]))
            .contains("no quarantined input")
    );
    assert!(terminate(child), "{}", project.log());
}
