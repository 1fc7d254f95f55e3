//! Crash test: `kill -9` mid-run, restart, and every file arrives exactly once.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{Project, files, stdout, terminate, wait_for};

#[test]
fn kill_9_mid_run_loses_and_duplicates_nothing() {
    const FILES: usize = 10_000;
    let pipeline = r#"
schedule: continuous
pullers:
  - type: file
    path: inbox
    settle: 0s
    after_seat: { move_to: archive }
pushers:
  - type: file
    path: outbox
    name_template: "{metadata.file.name}"
batch_size: 200
"#;
    let project = Project::new("queue_life_span: 1d\n", &[("bulk", pipeline)]);
    let mut expected = BTreeSet::new();
    for n in 0..FILES {
        let name = format!("doc-{n:05}.txt");
        project.write(&format!("inbox/{name}"), &format!("document {n}\n"));
        expected.insert(name);
    }

    let mut first = project.spawn();
    wait_for("some files delivered", Duration::from_secs(60), || {
        files(&project.join("outbox")).len() >= 1_000
    });
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let delivered_before = files(&project.join("outbox")).len();
    assert!(
        delivered_before < FILES,
        "the crash must happen mid-run; all {FILES} were already delivered"
    );

    let second = project.spawn();
    wait_for("every file delivered", Duration::from_secs(180), || {
        files(&project.join("outbox")).len() >= FILES
    });
    let dir = project.path().to_str().unwrap().to_string();
    wait_for("nothing left open", Duration::from_secs(60), || {
        let status = stdout(&project.ferry(&["status", &dir]));
        let line = status
            .lines()
            .find(|l| l.starts_with("acme/bulk"))
            .unwrap_or("")
            .to_string();
        // After the name and the one-word schedule: pending, in_flight, failed, dead.
        let counts: Vec<&str> = line.split_whitespace().skip(2).take(4).collect();
        counts == ["0", "0", "0", "0"]
    });
    assert!(terminate(second));

    let outbox: BTreeSet<String> = files(&project.join("outbox")).into_iter().collect();
    assert_eq!(
        outbox, expected,
        "every file exactly once, no temporary files left"
    );
    for name in ["doc-00000.txt", "doc-04321.txt", "doc-09999.txt"] {
        let n: usize = name[4..9].parse().unwrap();
        let content = std::fs::read_to_string(project.join("outbox").join(name)).unwrap();
        assert_eq!(content, format!("document {n}\n"));
    }
    assert!(
        files(&project.join("inbox")).is_empty(),
        "every input was archived after seating"
    );
    let complete = stdout(&project.ferry(&["status", &dir]));
    assert!(
        complete.contains(&FILES.to_string()),
        "{FILES} complete passengers expected:\n{complete}"
    );
}
