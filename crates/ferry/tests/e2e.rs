//! End to end: the real binary on a temporary project.

mod support;

use std::time::Duration;

use support::{Project, files, stderr, stdout, terminate, wait_for, wait_for_dead};

const FILE_PIPELINE: &str = r#"
description: files in, files out
schedule: every 1s
pullers:
  - type: file
    path: inbox
    pattern: "*.xml"
    settle: 0s
    after_seat: { move_to: archive }
processors:
  - type: set
    metadata: { stamped: "{source_system}" }
pushers:
  - type: file
    path: outbox
    name_template: "{metadata.file.name}"
"#;

#[test]
fn files_travel_then_complete_passengers_are_purged() {
    let project = Project::new(
        "queue_life_span: 3s\nlog_life_span: 1d\n",
        &[("invoices", FILE_PIPELINE)],
    );
    for n in 0..20 {
        project.write(
            &format!("inbox/invoice-{n:02}.xml"),
            &format!("<invoice n=\"{n}\"/>"),
        );
    }
    project.write("inbox/ignored.txt", "not matched by the pattern");
    let dir = project.path().to_str().unwrap().to_string();

    let child = project.spawn();
    // Temporary files (`.name.ferry-tmp`) are not there yet until they are renamed.
    wait_for("20 files in the outbox", Duration::from_secs(30), || {
        let outbox = files(&project.join("outbox"));
        outbox.iter().filter(|name| !name.starts_with('.')).count() == 20
    });
    for n in 0..20 {
        let name = format!("invoice-{n:02}.xml");
        let content = std::fs::read_to_string(project.join("outbox").join(&name)).unwrap();
        assert_eq!(content, format!("<invoice n=\"{n}\"/>"), "{name}");
    }
    assert_eq!(files(&project.join("inbox")), vec!["ignored.txt"]);
    assert_eq!(files(&project.join("archive")).len(), 20);

    // Complete passengers linger in the queue for the client's queue_life_span…
    wait_for("20 complete passengers", Duration::from_secs(10), || {
        let listed = stdout(&project.ferry(&["queue", "-C", &dir, "list", "--state", "complete"]));
        listed
            .lines()
            .filter(|l| l.contains("acme/invoices"))
            .count()
            == 20
    });
    let status = stdout(&project.ferry(&["status", &dir]));
    assert!(status.contains("ferry TEST"), "{status}");
    assert!(status.contains("acme/invoices"), "{status}");
    assert!(status.contains("succeeded"), "{status}");
    // The running process is a node of the store.
    assert!(status.contains("LAST HEARTBEAT"), "{status}");
    assert!(status.contains(&format!("pid {}", child.id())), "{status}");

    // An online backup of the store, while it runs; never over an existing file.
    let backup = project.join("backup.db");
    let backup = backup.to_str().unwrap();
    let made = project.ferry(&["store", "-C", &dir, "backup", backup]);
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(stdout(&made).contains("backed up to"), "{}", stdout(&made));
    let again = project.ferry(&["store", "-C", &dir, "backup", backup]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // …then the cleaner purges them.
    wait_for(
        "complete passengers purged",
        Duration::from_secs(20),
        || {
            let listed = stdout(&project.ferry(&["queue", "-C", &dir, "list"]));
            listed.contains("no passengers")
        },
    );

    assert!(
        terminate(child),
        "ferry must exit 0 on SIGTERM\n{}",
        project.log()
    );
    assert!(
        project.log().contains("dispatcher stopped"),
        "{}",
        project.log()
    );
}

/// A pipeline from inbox/ to outbox/ giving up after `max_attempts`; tests put a file where
/// the outbox should be, so every push fails until it is removed.
fn fragile(max_attempts: u32) -> String {
    format!(
        r#"
schedule: every 1s
pullers:
  - type: file
    path: inbox
    settle: 0s
    after_seat: delete
pushers:
  - type: file
    path: outbox
    name_template: "{{metadata.file.name}}"
retry: {{ max_attempts: {max_attempts}, backoff: 1s, max_backoff: 1s }}
"#
    )
}

#[test]
fn a_failing_push_is_retried_then_dead_and_can_be_replayed() {
    let pipeline = fragile(2);
    let project = Project::new("queue_life_span: 1h\n", &[("fragile", &pipeline)]);
    project.write("outbox", "in the way");
    project.write("inbox/a.txt", "hello");
    let dir = project.path().to_str().unwrap().to_string();
    let child = project.spawn();

    let id = wait_for_dead(&project, "acme/fragile");
    let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
    assert!(shown.contains("state          dead"), "{shown}");
    assert!(shown.contains("attempt 1"), "{shown}");
    assert!(shown.contains("gave up after 2 attempts"), "{shown}");

    // retry gives the dead step fresh attempts: it fails twice more and is dead again.
    let retry = project.ferry(&["queue", "-C", &dir, "retry", &id]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    wait_for(
        "the retried passenger dead again",
        Duration::from_secs(30),
        || {
            let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
            // The history keeps both rounds; attempts count from 1 again after a retry.
            shown.contains("state          dead")
                && shown.matches("gave up after 2 attempts").count() == 2
        },
    );

    std::fs::remove_file(project.join("outbox")).unwrap();
    let replay = project.ferry(&["queue", "-C", &dir, "replay", &id]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    wait_for(
        "the replayed passenger delivered",
        Duration::from_secs(20),
        || std::fs::read_to_string(project.join("outbox/a.txt")).is_ok_and(|c| c == "hello"),
    );
    let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
    assert!(shown.contains("state          complete"), "{shown}");
    assert!(terminate(child));
}

#[test]
fn validate_reports_every_error_with_its_position() {
    let broken = "schedule: every 5q\npullers:\n  - type: ftp\npushers:\n  - type: file\n    path: out\n    colour: blue\n";
    let project = Project::new("queue_life_span: 7d\n", &[("broken", broken)]);
    let output = project.ferry(&["validate", project.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let errors = stderr(&output);
    let file = "clients/acme/pipelines/broken.yaml";
    assert!(errors.contains(&format!("{file}:1:")), "{errors}");
    assert!(errors.contains("unknown unit `q`"), "{errors}");
    assert!(errors.contains(&format!("{file}:3:")), "{errors}");
    assert!(
        errors.contains("unknown puller type `ftp`; valid types are: file, generate"),
        "{errors}"
    );
    assert!(errors.contains(&format!("{file}:7:")), "{errors}");
    assert!(errors.contains("colour"), "{errors}");

    // Nothing starts half-configured.
    let run = project.ferry(&["run", project.path().to_str().unwrap()]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("unknown puller type `ftp`"));
    assert!(
        !project.join("data/ferry.db").exists(),
        "no store may be created for an invalid project"
    );
}

#[test]
fn init_writes_a_valid_project() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("proj");
    let target = target.to_str().unwrap();
    let init = std::process::Command::new(support::BIN)
        .args(["init", target])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let validate = std::process::Command::new(support::BIN)
        .args(["validate", target])
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", stderr(&validate));
    let again = std::process::Command::new(support::BIN)
        .args(["init", target])
        .output()
        .unwrap();
    assert!(!again.status.success(), "init must not overwrite a project");
}

#[test]
fn an_invalid_change_is_refused_and_the_old_version_keeps_running() {
    let project = Project::new("queue_life_span: 1h\n", &[("invoices", FILE_PIPELINE)]);
    let child = project.spawn();
    project.write("inbox/one.xml", "1");
    wait_for("the first file", Duration::from_secs(20), || {
        project.join("outbox/one.xml").exists()
    });

    project.write(
        "clients/acme/pipelines/invoices.yaml",
        &FILE_PIPELINE.replace("type: set", "type: sett"),
    );
    wait_for("the refusal in the log", Duration::from_secs(20), || {
        project.log().contains("unknown processor type `sett`")
    });
    project.write("inbox/two.xml", "2");
    wait_for(
        "the second file through the old version",
        Duration::from_secs(20),
        || project.join("outbox/two.xml").exists(),
    );

    // A valid change is picked up without restart.
    project.write(
        "clients/acme/pipelines/invoices.yaml",
        &FILE_PIPELINE.replace(
            "name_template: \"{metadata.file.name}\"",
            "name_template: \"v2-{metadata.file.name}\"",
        ),
    );
    wait_for("the new version loaded", Duration::from_secs(20), || {
        project.log().contains("definitions loaded")
    });
    project.write("inbox/three.xml", "3");
    wait_for(
        "the third file through the new version",
        Duration::from_secs(20),
        || project.join("outbox/v2-three.xml").exists(),
    );
    assert!(terminate(child));
}

#[test]
fn discard_gives_up_and_unknown_ids_are_refused() {
    let pipeline = fragile(1);
    let project = Project::new("queue_life_span: 1h\n", &[("fragile", &pipeline)]);
    project.write("outbox", "in the way");
    project.write("inbox/a.txt", "hello");
    let dir = project.path().to_str().unwrap().to_string();
    let child = project.spawn();

    let id = wait_for_dead(&project, "acme/fragile");
    let discard = project.ferry(&["queue", "-C", &dir, "discard", &id]);
    assert!(discard.status.success(), "{}", stderr(&discard));
    let listed = stdout(&project.ferry(&["queue", "-C", &dir, "list", "--state", "discarded"]));
    assert!(listed.contains(&id), "{listed}");
    let dead = stdout(&project.ferry(&["queue", "-C", &dir, "list", "--state", "dead"]));
    assert!(dead.contains("no passengers"), "{dead}");

    let unknown = "01a20000-0000-7000-8000-000000000000";
    let show = project.ferry(&["queue", "-C", &dir, "show", unknown]);
    assert!(!show.status.success());
    assert!(
        stderr(&show).contains(&format!("passenger {unknown} not found")),
        "{}",
        stderr(&show)
    );
    let bad = project.ferry(&["queue", "-C", &dir, "list", "--state", "lost"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unknown state `lost`"),
        "{}",
        stderr(&bad)
    );
    assert!(terminate(child));
}
