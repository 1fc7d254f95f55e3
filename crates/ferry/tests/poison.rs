//! Issue 12: one poison item never stops the process.

mod support;

use std::time::Duration;

use support::{Project, files, stderr, stdout, terminate, wait_for};

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
/// second, and again on every restart, stopping every client's pipelines.
#[test]
fn a_deeply_nested_xml_file_is_refused_and_others_keep_flowing() {
    let project = Project::new(
        "queue_life_span: 1h\n",
        &[
            ("deep", &files_pipeline("inbox", "xml", "outbox")),
            ("other", &files_pipeline("other-in", "json", "other-out")),
        ],
    );
    let deep = "<a>".repeat(20_000) + &"</a>".repeat(20_000);
    project.write("inbox/deep.xml", &deep);
    for n in 0..10 {
        project.write(&format!("other-in/{n}.json"), &format!("{{\"n\": {n}}}"));
    }
    let dir = project.path().to_str().unwrap().to_string();

    let peek = project.ferry(&["peek", "-C", &dir, "acme/deep"]);
    let shown = format!("{}{}", stdout(&peek), stderr(&peek));
    assert_ne!(peek.status.code(), Some(134), "{shown}");
    assert!(shown.contains("deeper than 100 levels"), "{shown}");

    let mut child = project.spawn();
    wait_for("the other pipeline's 10 files", Duration::from_secs(30), || {
        files(&project.join("other-out")).len() == 10
    });
    assert!(
        child.try_wait().expect("wait").is_none(),
        "ferry stopped:\n{}",
        project.log()
    );
    wait_for("the deep file run failed", Duration::from_secs(10), || {
        project.log().contains("pipeline=acme/deep run=")
            && project.log().contains("failed=1")
    });
    assert!(terminate(child), "{}", project.log());
    // Written to a file, the log carries no colour codes.
    assert!(!project.log().contains('\x1b'), "{}", project.log());
}
