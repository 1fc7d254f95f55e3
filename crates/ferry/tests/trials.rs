//! `ferry test` and `ferry peek` on the real binary.

mod support;

use std::process::Command;

use support::{BIN, Project, stderr, stdout};

const PIPELINE: &str = "\
schedule: manual
pullers:
  - { type: file, path: inbox, pattern: '*.json', after_seat: delete, settle: 0s }
processors:
  - { type: filter, drop: { metadata: kind, equals: refund } }
  - { type: set, metadata: { desk: '{metadata.kind}-desk' } }
pushers:
  - { type: file, path: outbox }
";

fn project() -> Project {
    Project::new("queue_life_span: 1d\n", &[("orders", PIPELINE)])
}

#[test]
fn the_examples_that_ship_with_ferry_pass_their_own_tests() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("FERRY_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    assert!(run(&["init", init.to_str().unwrap()]).status.success());
    let tested = run(&["test", init.to_str().unwrap()]);
    assert!(tested.status.success(), "{}", stdout(&tested));
    assert!(
        stdout(&tested).contains("1 passed, 0 failed"),
        "{}",
        stdout(&tested)
    );

    // The demo project is written on first start; `ferry test` needs only its files.
    let demo = Command::new(BIN)
        .arg("run")
        .env("FERRY_DATA_DIR", dir.path().join("data"))
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let demo_dir = dir.path().join("data/demo");
    support::wait_for(
        "the demo project",
        std::time::Duration::from_secs(10),
        || demo_dir.join("clients/demo/tests/orders.yaml").exists(),
    );
    support::terminate(demo);
    let tested = run(&["test", demo_dir.to_str().unwrap()]);
    assert!(tested.status.success(), "{}", stdout(&tested));
    assert!(
        stdout(&tested).contains("2 passed, 0 failed"),
        "{}",
        stdout(&tested)
    );
}

#[test]
fn a_case_that_does_not_hold_fails_and_says_why() {
    let project = project();
    project.write(
        "clients/acme/tests/orders.yaml",
        "pipeline: orders
cases:
  - name: sales reach the outbox
    input:
      - { metadata: { kind: sale }, body: { amount: 12 } }
    expect:
      pushed: [{ to: [file], metadata: { desk: sale-desk }, body: { amount: 12 } }]
  - name: wrong on purpose
    input:
      - { external_id: r-1, metadata: { kind: refund }, body: { amount: 12 } }
      - { metadata: { kind: sale }, body: { amount: 13 } }
    expect:
      pushed: [{ metadata: { desk: refund-desk }, body_includes: { amount: 12 } }]
",
    );
    let output = project.ferry(&["test", project.path().to_str().unwrap()]);
    let out = stdout(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("ok     clients/acme/tests/orders.yaml › sales reach the outbox"),
        "{out}"
    );
    assert!(
        out.contains("FAILED clients/acme/tests/orders.yaml › wrong on purpose"),
        "{out}"
    );
    assert!(
        out.contains("expected 0 filtered, got 1: r-1 filtered by filter: drop condition met"),
        "{out}"
    );
    assert!(
        out.contains("pushed[0]: metadata.desk: expected `refund-desk`, got `sale-desk`"),
        "{out}"
    );
    assert!(
        out.contains(r#"pushed[0]: body: expected to include {"amount":12}, got {"amount":13}"#),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn golden_files_are_written_with_update_and_compared_afterwards() {
    let project = project();
    project.write(
        "clients/acme/tests/orders.yaml",
        "pipeline: orders
cases:
  - name: golden
    input:
      - { external_id: s-1, metadata: { kind: sale }, body: { amount: 12 } }
      - { external_id: r-1, metadata: { kind: refund }, body_text: 'no json here' }
    golden: expected/golden.json
",
    );
    let dir = project.path().to_str().unwrap();
    let missing = project.ferry(&["test", dir]);
    assert!(!missing.status.success());
    assert!(
        stdout(&missing).contains("write it with `ferry test --update`"),
        "{}",
        stdout(&missing)
    );

    let update = project.ferry(&["test", dir, "--update"]);
    assert!(update.status.success(), "{}", stdout(&update));
    let golden =
        std::fs::read_to_string(project.join("clients/acme/tests/expected/golden.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&golden).unwrap();
    assert_eq!(value[0]["external_id"], "s-1");
    assert_eq!(value[0]["metadata"]["desk"], "sale-desk");
    assert_eq!(value[0]["fate"]["pushed"][0], "file");
    assert_eq!(value[1]["body"], "no json here");
    assert_eq!(value[1]["fate"]["filtered"]["by"], "filter");
    assert!(project.ferry(&["test", dir]).status.success());

    // A change in what the pipeline makes is caught, line by line.
    project.write(
        "clients/acme/pipelines/orders.yaml",
        &PIPELINE.replace("-desk'", "-team'"),
    );
    let changed = project.ferry(&["test", dir]);
    assert!(!changed.status.success());
    let out = stdout(&changed);
    assert!(
        out.contains("differs from golden file expected/golden.json"),
        "{out}"
    );
    assert!(out.contains(r#""desk": "sale-desk""#), "{out}");
    assert!(out.contains(r#""desk": "sale-team""#), "{out}");
}

#[test]
fn a_malformed_test_file_is_reported_with_its_position() {
    let project = project();
    project.write(
        "clients/acme/tests/orders.yaml",
        "pipeline: orders\ncases:\n  - name: typo\n    inptu: []\n",
    );
    project.write(
        "clients/acme/tests/other.yaml",
        "pipeline: nope\ncases: []\n",
    );
    let output = project.ferry(&["test", project.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let out = stdout(&output);
    assert!(
        out.contains("ERROR  clients/acme/tests/orders.yaml:4:5:"),
        "{out}"
    );
    assert!(
        out.contains("unknown field `inptu`, expected one of"),
        "{out}"
    );
    assert!(
        out.contains(
            "clients/acme/tests/other.yaml: pipeline: client `acme` has no pipeline `nope`"
        ),
        "{out}"
    );
    // Test files are not definitions: the project itself stays valid.
    let validate = project.ferry(&["validate", project.path().to_str().unwrap()]);
    assert!(validate.status.success(), "{}", stderr(&validate));
}

#[test]
fn peek_shows_what_would_travel_and_leaves_the_source_alone() {
    let project = project();
    project.write("inbox/a.json", r#"{"n":1}"#);
    project.write("inbox/b.json", r#"{"n":2}"#);
    let output = project.ferry(&["peek", "orders", "-C", project.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("puller `file`: 2 passenger(s)"), "{out}");
    assert!(out.contains("→ file"), "{out}");
    assert!(out.contains("desk: -desk"), "{out}");
    // Nothing was acked (the files are still there), seated (no store) or pushed.
    assert!(project.join("inbox/a.json").exists());
    assert!(project.join("inbox/b.json").exists());
    assert!(!project.join("data").exists());
    assert!(!project.join("outbox").exists());

    let unknown = project.ferry(&["peek", "nope", "-C", project.path().to_str().unwrap()]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("no pipeline `nope`"));
}
