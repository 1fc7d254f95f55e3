//! The `file` puller and pusher against the real filesystem, in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_core::{
    Attachment, Body, BuildContext, BuildError, Passenger, Puller, Pusher, Seated, StepError,
};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::test_support::{names, seated, set_modified, write_settled};

fn ctx(project: &Path) -> BuildContext {
    BuildContext {
        project_dir: project.to_path_buf(),
        sandbox: ferry_core::sandbox::Sandbox::within(project, "acme"),
        client: "acme".into(),
        pipeline: "files".into(),
        component: "file".into(),
        ..BuildContext::default()
    }
}

fn build_puller(project: &Path, config: Value) -> Result<Box<dyn Puller>, BuildError> {
    crate::registry().puller("file", &config, &ctx(project))
}

fn build_pusher(project: &Path, config: Value) -> Result<Box<dyn Pusher>, BuildError> {
    crate::registry().pusher("file", &config, &ctx(project))
}

/// The file names of the pulled passengers, checking that each external id is the name and the
/// modification time.
fn external_ids(pulled: &ferry_core::Pulled) -> Vec<&str> {
    pulled
        .passengers
        .iter()
        .map(|p| {
            let name = p.metadata["file.name"].as_str();
            let (id_name, millis) = p.external_id.rsplit_once('@').expect("name@millis");
            assert_eq!(id_name, name);
            assert!(millis.parse::<i64>().is_ok(), "{}", p.external_id);
            name
        })
        .collect()
}

// ---- puller -------------------------------------------------------------------------------

/// A project with an `in` directory holding `files`, and a puller of it with `extra` config.
fn setup(files: &[&str], extra: Value) -> (TempDir, PathBuf, Box<dyn Puller>) {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    for name in files {
        write_settled(&inbox.join(name), format!("content of {name}"));
    }
    let mut config = json!({ "path": "in", "after_seat": "delete" });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    let puller = build_puller(project.path(), config).unwrap();
    (project, inbox, puller)
}

#[tokio::test]
async fn pulls_matching_files_in_name_order_as_attachments() {
    let (_project, inbox, mut puller) = setup(
        &["b.xml", "a.xml", "c.txt", ".hidden.xml", ".a.xml.ferry-tmp"],
        json!({ "pattern": "*.xml" }),
    );
    // A plain subdirectory matching the pattern is not a file to pull.
    fs::create_dir(inbox.join("d.xml")).unwrap();

    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(external_ids(&pulled), ["a.xml", "b.xml"]);
    assert!(pulled.failures.is_empty(), "{:?}", pulled.failures);
    assert!(!pulled.more);

    let passenger = &pulled.passengers[0];
    assert_eq!(passenger.source_system, "file");
    assert_eq!(passenger.attachments.len(), 1);
    let attachment = &passenger.attachments[0];
    assert_eq!(attachment.name, "a.xml");
    assert_eq!(attachment.media_type, "application/xml");
    assert_eq!(attachment.content, Bytes::from("content of a.xml"));
    let body = passenger.body.as_json().unwrap();
    assert_eq!(body["file"], "a.xml");
    assert_eq!(body["size"], 16);
    assert_eq!(passenger.metadata["file.name"], "a.xml");
    assert_eq!(passenger.metadata["file.size"], "16");
    assert_eq!(passenger.metadata["file.modified"], body["modified"]);
    assert!(body["modified"].as_str().unwrap().ends_with('Z'), "{body}");
}

#[tokio::test]
async fn media_type_and_source_system_can_be_set() {
    let (_project, _inbox, mut puller) = setup(
        &["a.dat", "b.csv"],
        json!({ "media_type": "application/edifact", "source_system": "edi" }),
    );
    let pulled = puller.pull(10).await.unwrap();
    for passenger in &pulled.passengers {
        assert_eq!(passenger.source_system, "edi");
        assert_eq!(passenger.attachments[0].media_type, "application/edifact");
    }
    assert_eq!(pulled.passengers.len(), 2);

    let (_project, _inbox, mut puller) = setup(&["a.dat", "b.CSV", "c.json"], json!({}));
    let pulled = puller.pull(10).await.unwrap();
    let media_types: Vec<_> = pulled
        .passengers
        .iter()
        .map(|p| p.attachments[0].media_type.as_str())
        .collect();
    assert_eq!(
        media_types,
        ["application/octet-stream", "text/csv", "application/json"]
    );
}

#[tokio::test]
async fn files_still_being_written_are_left_to_settle() {
    let (_project, inbox, mut puller) = setup(&["old.txt"], json!({ "settle": "10s" }));
    fs::write(inbox.join("fresh.txt"), "half written").unwrap();
    // A modification time far in the future is a skewed clock, not a file being written.
    fs::write(inbox.join("future.txt"), "from elsewhere").unwrap();
    set_modified(
        &inbox.join("future.txt"),
        SystemTime::now() + Duration::from_secs(3600),
    );

    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(external_ids(&pulled), ["future.txt", "old.txt"]);
    assert!(pulled.failures.is_empty());

    set_modified(
        &inbox.join("fresh.txt"),
        SystemTime::now() - Duration::from_secs(11),
    );
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(
        external_ids(&pulled),
        ["fresh.txt", "future.txt", "old.txt"]
    );
}

#[tokio::test]
async fn pages_by_max_and_removes_nothing_before_ack() {
    let (_project, inbox, mut puller) = setup(&["1", "2", "3", "4", "5"], json!({}));

    let first = puller.pull(2).await.unwrap();
    assert_eq!(external_ids(&first), ["1", "2"]);
    assert!(first.more);
    // Not acked: pulled again, still there.
    let again = puller.pull(2).await.unwrap();
    assert_eq!(external_ids(&again), ["1", "2"]);
    assert_eq!(names(&inbox).len(), 5);

    puller.ack(&seated(&first.passengers)).await.unwrap();
    let second = puller.pull(2).await.unwrap();
    assert_eq!(external_ids(&second), ["3", "4"]);
    assert!(second.more);
    puller.ack(&seated(&second.passengers)).await.unwrap();
    let last = puller.pull(2).await.unwrap();
    assert_eq!(external_ids(&last), ["5"]);
    assert!(!last.more);
    puller.ack(&seated(&last.passengers)).await.unwrap();
    assert!(names(&inbox).is_empty());
    assert!(puller.pull(2).await.unwrap().passengers.is_empty());
}

#[tokio::test]
async fn unreadable_entries_fail_alone() {
    let (_project, inbox, mut puller) = setup(&["a.xml", "e.xml"], json!({}));
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.xml"), "<secret/>").unwrap();
    std::fs::create_dir(inbox.join("sub")).unwrap();
    std::os::unix::fs::symlink(inbox.join("gone"), inbox.join("b.xml")).unwrap();
    std::os::unix::fs::symlink(inbox.join("sub"), inbox.join("c.xml")).unwrap();
    // A link out of the client's directories is never followed (issue 12).
    std::os::unix::fs::symlink(outside.path().join("secret.xml"), inbox.join("b2.xml")).unwrap();
    let fifo = inbox.join("d.xml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    set_modified(
        &inbox.join("a.xml"),
        SystemTime::now() - Duration::from_secs(60),
    );

    // A failure does not take a place: with max 2 both readable files still come.
    let pulled = puller.pull(2).await.unwrap();
    assert_eq!(external_ids(&pulled), ["a.xml", "e.xml"]);
    assert!(!pulled.more);
    let failures: Vec<_> = pulled
        .failures
        .iter()
        .map(|f| (f.external_id.as_str(), f.error.message.as_str()))
        .collect();
    assert_eq!(failures.len(), 4, "{failures:?}");
    assert_eq!(failures[0].0, "b.xml");
    assert!(
        failures[0].1.contains("broken symbolic link"),
        "{failures:?}"
    );
    assert_eq!(failures[1].0, "b2.xml");
    assert!(
        failures[1]
            .1
            .contains("is outside the directories of client `acme`"),
        "{failures:?}"
    );
    assert_eq!(failures[2].0, "c.xml");
    assert!(
        failures[2].1.contains("symbolic link to a directory"),
        "{failures:?}"
    );
    assert_eq!(failures[3].0, "d.xml");
    assert!(failures[3].1.contains("not a regular file"), "{failures:?}");
    assert!(pulled.failures.iter().all(|f| !f.error.retryable));
}

#[tokio::test]
async fn ack_deletes_duplicates_too_and_is_idempotent() {
    let (_project, inbox, mut puller) = setup(&["a", "b", "keep"], json!({}));
    let pulled = puller.pull(2).await.unwrap();
    let mut acks = seated(&pulled.passengers);
    acks[1].duplicate = true;
    puller.ack(&acks).await.unwrap();
    assert_eq!(names(&inbox), ["keep"]);
    // Again, after a crash say: the files are gone already, which is fine.
    puller.ack(&acks).await.unwrap();
    assert_eq!(names(&inbox), ["keep"]);
}

#[tokio::test]
async fn ack_never_acts_outside_what_it_pulls() {
    let (project, inbox, mut puller) = setup(&["a.xml", "b.txt"], json!({ "pattern": "*.xml" }));
    write_settled(&project.path().join("victim.xml"), "precious");
    let foreign = |source_system: &str, external_id: &str| Seated {
        source_system: source_system.into(),
        external_id: external_id.into(),
        duplicate: false,
    };
    puller
        .ack(&[
            foreign("file", "../victim.xml"),
            foreign("file", "b.txt"),
            foreign("other", "a.xml"),
        ])
        .await
        .unwrap();
    assert_eq!(names(&inbox), ["a.xml", "b.txt"]);
    assert!(project.path().join("victim.xml").exists());
}

#[tokio::test]
async fn ack_moves_into_the_archive_without_overwriting() {
    let (project, inbox, mut puller) = setup(
        &["a.xml", "b.xml"],
        json!({ "after_seat": { "move_to": "archive/orders" } }),
    );
    let archive = project.path().join("archive/orders");
    let pulled = puller.pull(10).await.unwrap();
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    assert!(names(&inbox).is_empty());
    assert_eq!(names(&archive), ["a.xml", "b.xml"]);

    // The same name arrives again: the archived copy stays, the new one gets a suffix.
    write_settled(&inbox.join("a.xml"), "second a");
    let pulled = puller.pull(10).await.unwrap();
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    let archived = names(&archive);
    assert_eq!(archived.len(), 3, "{archived:?}");
    assert_eq!(
        fs::read_to_string(archive.join("a.xml")).unwrap(),
        "content of a.xml"
    );
    let renamed = archived
        .iter()
        .find(|name| name.starts_with("a.xml."))
        .unwrap();
    let millis = renamed.trim_start_matches("a.xml.");
    assert!(millis.parse::<u64>().is_ok(), "{renamed}");
    assert_eq!(
        fs::read_to_string(archive.join(renamed)).unwrap(),
        "second a"
    );
    assert!(names(&inbox).is_empty());
}

#[tokio::test]
async fn a_missing_directory_fails_the_whole_pull() {
    let project = tempfile::tempdir().unwrap();
    let config = json!({ "path": "nowhere", "after_seat": "delete" });
    let mut puller = build_puller(project.path(), config).unwrap();
    let error = puller.pull(10).await.unwrap_err();
    assert!(error.message.contains("nowhere"), "{error}");
    assert!(!error.retryable);
}

#[test]
fn puller_configuration_errors_name_their_key() {
    let project = Path::new("/nonexistent-project");
    let error = |config: Value| build_puller(project, config).err().unwrap();

    let missing = error(json!({ "path": "in" }));
    assert_eq!(missing.path, ["after_seat"]);
    assert!(
        missing.message.contains("`delete` or `{ move_to: DIR }`"),
        "{missing}"
    );
    let wrong = error(json!({ "path": "in", "after_seat": "keep" }));
    assert_eq!(wrong.path, ["after_seat"]);
    assert!(
        wrong.message.contains("`delete` or `{ move_to: DIR }`"),
        "{wrong}"
    );
    let wrong_key = error(json!({ "path": "in", "after_seat": { "move": "x" } }));
    assert!(
        wrong_key.message.contains("unknown field `move`"),
        "{wrong_key}"
    );
    let same = error(json!({ "path": "in", "after_seat": { "move_to": "in" } }));
    assert_eq!(same.path, ["after_seat", "move_to"]);

    let settle = error(json!({ "path": "in", "after_seat": "delete", "settle": "5y" }));
    assert_eq!(settle.path, ["settle"]);
    let pattern = error(json!({ "path": "in", "after_seat": "delete", "pattern": "[" }));
    assert_eq!(pattern.path, ["pattern"]);
    let unknown = error(json!({ "path": "in", "after_seat": "delete", "recursive": true }));
    assert!(
        unknown.message.contains("unknown field `recursive`"),
        "{unknown}"
    );
    // Building never touches the filesystem: a missing directory is fine until a pull.
    build_puller(project, json!({ "path": "in", "after_seat": "delete" })).unwrap();
}

// ---- pusher -------------------------------------------------------------------------------

/// Pushes owned passengers through a pusher (which takes references).
trait PushAll {
    async fn push_all(&self, passengers: &[Passenger]) -> Vec<Result<(), StepError>>;
}

impl PushAll for Box<dyn Pusher> {
    async fn push_all(&self, passengers: &[Passenger]) -> Vec<Result<(), StepError>> {
        let refs: Vec<&Passenger> = passengers.iter().collect();
        self.push(&refs).await
    }
}

fn passenger(external_id: &str, body: &str) -> Passenger {
    Passenger::pulled("edi", external_id).with_body(Body {
        media_type: "text/plain".into(),
        data: Bytes::from(body.to_string()),
    })
}

fn attach(mut passenger: Passenger, name: &str, content: &str) -> Passenger {
    passenger.attachments.push(Attachment {
        name: name.into(),
        media_type: "application/octet-stream".into(),
        content: Bytes::from(content.to_string()),
    });
    passenger
}

/// Every file under `dir`, relative, sorted: temporary files included, to catch leftovers.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn read(path: PathBuf) -> String {
    fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn writes_bodies_under_template_names_creating_directories() {
    let project = tempfile::tempdir().unwrap();
    let config =
        json!({ "path": "out/deep", "name_template": "{source_system}/{external_id}.txt" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let results = pusher
        .push_all(&[passenger("1", "one"), passenger("2", "two")])
        .await;
    assert_eq!(results, [Ok(()), Ok(())]);
    let out = project.path().join("out/deep");
    assert_eq!(tree(&out), ["edi/1.txt", "edi/2.txt"]);
    assert_eq!(read(out.join("edi/1.txt")), "one");
    assert_eq!(read(out.join("edi/2.txt")), "two");
}

/// Issue 12: the temporary name added 11 bytes, so legal names of 245–255 bytes failed with
/// "File name too long", retried as if the failure would pass.
#[tokio::test]
async fn names_up_to_the_file_system_limit_are_written() {
    let project = tempfile::tempdir().unwrap();
    let config = json!({ "path": "out", "name_template": "{external_id}" });
    let pusher = build_pusher(project.path(), config).unwrap();
    // Two long names that differ only at their end, one with a multi-byte character there.
    let a = "a".repeat(254) + "1";
    let b = "a".repeat(252) + "é2";
    let results = pusher
        .push_all(&[passenger(&a, "one"), passenger(&b, "two")])
        .await;
    assert_eq!(results, [Ok(()), Ok(())]);
    let out = project.path().join("out");
    assert_eq!(tree(&out), [a.clone(), b.clone()]);
    assert_eq!(read(out.join(&a)), "one");
    assert_eq!(read(out.join(&b)), "two");

    // A name the file system cannot hold stays too long: a permanent error, not a retry.
    let results = pusher.push_all(&[passenger(&"a".repeat(256), "x")]).await;
    let error = results[0].clone().unwrap_err();
    assert!(!error.retryable, "{error:?}");
    assert!(tree(&out).len() == 2, "{:?}", tree(&out));
}

#[tokio::test]
async fn writes_attachments_or_body_as_configured() {
    let project = tempfile::tempdir().unwrap();
    let out = project.path().join("out");
    let one = attach(passenger("one", "body 1"), "a.pdf", "pdf");
    let two = attach(
        attach(passenger("two", "body 2"), "a.pdf", "A"),
        "../b.pdf",
        "B",
    );
    let three = passenger("three", "body 3");

    let auto = build_pusher(project.path(), json!({ "path": "out" })).unwrap();
    let results = auto
        .push_all(&[one.clone(), two.clone(), three.clone()])
        .await;
    assert_eq!(results, [Ok(()), Ok(()), Ok(())]);
    assert_eq!(tree(&out), ["one", "three", "two-.._b.pdf", "two-a.pdf"]);
    assert_eq!(read(out.join("one")), "pdf");
    assert_eq!(read(out.join("two-a.pdf")), "A");
    assert_eq!(read(out.join("two-.._b.pdf")), "B");
    assert_eq!(read(out.join("three")), "body 3");

    let body = build_pusher(project.path(), json!({ "path": "body", "content": "body" })).unwrap();
    assert_eq!(body.push_all(std::slice::from_ref(&one)).await, [Ok(())]);
    assert_eq!(read(project.path().join("body/one")), "body 1");

    let config = json!({ "path": "att", "content": "attachments" });
    let attachments = build_pusher(project.path(), config).unwrap();
    let results = attachments.push_all(&[one, three]).await;
    assert_eq!(results[0], Ok(()));
    let error = results[1].clone().unwrap_err();
    assert!(error.message.contains("no attachments"), "{error}");
    assert!(!error.retryable);
}

#[tokio::test]
async fn attachments_with_the_same_name_do_not_overwrite_each_other() {
    let project = tempfile::tempdir().unwrap();
    let twins = attach(attach(passenger("p", ""), "x.txt", "1"), "x.txt", "2");
    let pusher = build_pusher(project.path(), json!({ "path": "out" })).unwrap();
    assert_eq!(pusher.push_all(&[twins]).await, [Ok(())]);
    let out = project.path().join("out");
    assert_eq!(tree(&out), ["p-2-x.txt", "p-x.txt"]);
    assert_eq!(read(out.join("p-x.txt")), "1");
    assert_eq!(read(out.join("p-2-x.txt")), "2");
}

#[tokio::test]
async fn unsafe_rendered_names_are_refused() {
    let project = tempfile::tempdir().unwrap();
    let config = json!({ "path": "out", "name_template": "{metadata.dir}/{metadata.name}" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let mut absolute = passenger("1", "x");
    absolute.metadata.insert("name".into(), "passwd".into());
    let mut fine = passenger("2", "x");
    fine.metadata.insert("dir".into(), "..".into());
    fine.metadata.insert("name".into(), "ok".into());
    let results = pusher.push_all(&[absolute, fine]).await;
    let error = results[0].clone().unwrap_err();
    assert!(error.message.contains("is absolute"), "{error}");
    assert!(!error.retryable);
    // `..` from a value is made harmless by the template, so this one is written.
    assert_eq!(results[1], Ok(()));
    assert_eq!(tree(&project.path().join("out")), ["_/ok"]);

    let config = json!({ "path": "out", "name_template": "..{metadata.name}" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let results = pusher.push_all(&[passenger("3", "x")]).await;
    assert!(results[0].clone().unwrap_err().message.contains("`..`"));

    let config = json!({ "path": "out", "name_template": "{metadata.name}" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let results = pusher.push_all(&[passenger("4", "x")]).await;
    assert!(results[0].clone().unwrap_err().message.contains("empty"));
}

#[tokio::test]
async fn one_failing_file_does_not_fail_the_others() {
    let project = tempfile::tempdir().unwrap();
    let out = project.path().join("out");
    fs::create_dir_all(out.join("ok/taken")).unwrap();
    fs::write(out.join("blocker"), "a file where a directory should be").unwrap();
    let config = json!({ "path": "out", "name_template": "{metadata.dir}/{external_id}" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let in_dir = |dir: &str, external_id: &str| {
        let mut passenger = passenger(external_id, external_id);
        passenger.metadata.insert("dir".into(), dir.into());
        passenger
    };
    let results = pusher
        .push_all(&[
            in_dir("ok", "a"),
            in_dir("blocker", "under-a-file"),
            in_dir("ok", "taken"),
            in_dir("ok", "b"),
        ])
        .await;
    assert_eq!(results[0], Ok(()));
    assert!(results[1].is_err(), "{results:?}");
    assert!(results[2].is_err(), "{results:?}");
    assert_eq!(results[3], Ok(()));
    assert_eq!(read(out.join("ok/a")), "a");
    assert_eq!(read(out.join("ok/b")), "b");
    assert_eq!(tree(&out), ["blocker", "ok/a", "ok/b"]);
}

#[tokio::test]
async fn re_push_overwrites_and_leaves_no_temporary_files() {
    let project = tempfile::tempdir().unwrap();
    let out = project.path().join("out");
    fs::create_dir(&out).unwrap();
    // What a crash between writing and renaming leaves behind.
    fs::write(out.join(".42.ferry-tmp"), "half").unwrap();
    let pusher = build_pusher(project.path(), json!({ "path": "out" })).unwrap();
    assert_eq!(pusher.push_all(&[passenger("42", "first")]).await, [Ok(())]);
    assert_eq!(
        pusher.push_all(&[passenger("42", "second")]).await,
        [Ok(())]
    );
    assert_eq!(tree(&out), ["42"]);
    assert_eq!(read(out.join("42")), "second");
}

#[tokio::test]
async fn the_last_passenger_of_a_batch_wins_a_shared_name() {
    let project = tempfile::tempdir().unwrap();
    let config = json!({ "path": "out", "name_template": "{source_system}" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let results = pusher
        .push_all(&[passenger("1", "first"), passenger("2", "second")])
        .await;
    assert_eq!(results, [Ok(()), Ok(())]);
    let out = project.path().join("out");
    assert_eq!(tree(&out), ["edi"]);
    assert_eq!(read(out.join("edi")), "second");
}

#[tokio::test]
async fn a_large_batch_is_written_completely() {
    let project = tempfile::tempdir().unwrap();
    let config = json!({ "path": "out", "name_template": "{external_id}.json" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let passengers: Vec<_> = (0..500)
        .map(|i| passenger(&format!("{i:04}"), &"x".repeat(1024)))
        .collect();
    let results = pusher.push_all(&passengers).await;
    assert!(results.iter().all(Result::is_ok));
    let written = tree(&project.path().join("out"));
    assert_eq!(written.len(), 500);
    assert_eq!(written[0], "0000.json");
}

#[test]
fn pusher_configuration_errors_name_their_key() {
    let project = Path::new("/nonexistent-project");
    let error = |config: Value| build_pusher(project, config).err().unwrap();
    let template = error(json!({ "path": "out", "name_template": "{nope}" }));
    assert_eq!(template.path, ["name_template"]);
    let absolute = error(json!({ "path": "out", "name_template": "/etc/{external_id}" }));
    assert_eq!(absolute.path, ["name_template"]);
    assert!(absolute.message.contains("absolute"), "{absolute}");
    let parent = error(json!({ "path": "out", "name_template": "../{external_id}" }));
    assert!(parent.message.contains("`..`"), "{parent}");
    let content = error(json!({ "path": "out", "content": "both" }));
    assert_eq!(content.path, ["content"]);
    // A template whose directory comes from metadata is fine.
    build_pusher(
        project,
        json!({ "path": "out", "name_template": "{metadata.dir}/x" }),
    )
    .unwrap();
}

/// Not a timed test: run with
/// `cargo test -p ferry-connectors --release -- --ignored --nocapture file_round_trip_of`.
#[tokio::test]
#[ignore]
async fn file_round_trip_of_fifty_thousand() {
    let project = tempfile::tempdir().unwrap();
    let pusher = build_pusher(project.path(), json!({ "path": "out" })).unwrap();
    let body = "x".repeat(1024);
    let start = std::time::Instant::now();
    for batch in 0..50 {
        let passengers: Vec<_> = (0..1000)
            .map(|i| passenger(&format!("{batch:02}-{i:04}"), &body))
            .collect();
        assert!(pusher.push_all(&passengers).await.iter().all(Result::is_ok));
    }
    println!("pushed 50,000 files of 1 KB in {:?}", start.elapsed());

    let config = json!({ "path": "out", "after_seat": "delete", "settle": "0s" });
    let mut puller = build_puller(project.path(), config).unwrap();
    let start = std::time::Instant::now();
    let mut total = 0;
    let (mut pulling, mut acking) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t = std::time::Instant::now();
        let pulled = puller.pull(1000).await.unwrap();
        pulling += t.elapsed();
        total += pulled.passengers.len();
        let t = std::time::Instant::now();
        puller.ack(&seated(&pulled.passengers)).await.unwrap();
        acking += t.elapsed();
        if !pulled.more {
            break;
        }
    }
    println!("pull {pulling:?} ack {acking:?}");
    assert_eq!(total, 50_000);
    println!(
        "pulled and deleted 50,000 files of 1 KB in {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_rewritten_file_with_a_seated_name_is_a_new_passenger() {
    let (_project, inbox, mut puller) = setup(&["orders.csv"], json!({}));
    let monday = puller.pull(10).await.unwrap().passengers;
    assert_eq!(monday.len(), 1);

    // The file is replaced before the ack of Monday's passenger arrives.
    write_settled(&inbox.join("orders.csv"), "tuesday");
    set_modified(
        &inbox.join("orders.csv"),
        SystemTime::now() - Duration::from_secs(30),
    );
    puller.ack(&seated(&monday)).await.unwrap();
    assert_eq!(
        names(&inbox),
        ["orders.csv"],
        "the ack must not remove the new file"
    );

    let tuesday = puller.pull(10).await.unwrap().passengers;
    assert_eq!(tuesday.len(), 1);
    assert_ne!(tuesday[0].external_id, monday[0].external_id);
    assert_eq!(&tuesday[0].attachments[0].content[..], b"tuesday");
    puller.ack(&seated(&tuesday)).await.unwrap();
    assert!(names(&inbox).is_empty());
}

// ---- codec --------------------------------------------------------------------------------

#[tokio::test]
async fn a_codec_decodes_each_file_and_a_malformed_one_fails_alone() {
    let (_project, inbox, mut puller) = setup(&[], json!({ "codec": "csv" }));
    write_settled(&inbox.join("a.csv"), "id,name\n1,Ann\n2,Bob\n");
    write_settled(&inbox.join("b.csv"), "id,name\n3,Cy\n4,Di,extra\n");
    write_settled(&inbox.join("c.csv"), "id,name\n");

    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(external_ids(&pulled), ["a.csv", "c.csv"]);
    let a = &pulled.passengers[0];
    assert_eq!(
        a.body.as_json().unwrap(),
        json!([{ "id": "1", "name": "Ann" }, { "id": "2", "name": "Bob" }])
    );
    // The file still travels as it was, and its description stays in the metadata.
    assert_eq!(
        a.attachments[0].content,
        Bytes::from("id,name\n1,Ann\n2,Bob\n")
    );
    assert_eq!(a.attachments[0].media_type, "text/csv");
    assert_eq!(a.metadata["file.name"], "a.csv");
    assert_eq!(pulled.passengers[1].body.as_json().unwrap(), json!([]));

    let [failure] = pulled.failures.as_slice() else {
        panic!("{:?}", pulled.failures);
    };
    assert_eq!(failure.external_id, "b.csv");
    assert!(!failure.error.retryable);
    let expected = format!(
        "cannot decode {}: CSV line 3: found 3 fields, expected 2",
        inbox.join("b.csv").display()
    );
    assert_eq!(failure.error.message, expected);

    // The good files go with the ack; the malformed one stays for a person to fix.
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    assert_eq!(names(&inbox), ["b.csv"]);
}

#[tokio::test]
async fn a_compressed_file_is_decoded_within_its_limit() {
    let codec = json!({ "type": "ndjson", "compression": "gzip", "max_decompressed": "1KiB" });
    let (_project, inbox, mut puller) = setup(&[], json!({ "codec": codec }));
    let gzip_ndjson = ferry_formats::Codec::build(
        &serde_json::from_value(json!({ "type": "ndjson", "compression": "gzip" })).unwrap(),
        &ferry_core::sandbox::Sandbox::default(),
    )
    .unwrap();
    let gzip = |items: Vec<Value>| gzip_ndjson.encode(&Value::Array(items)).unwrap();
    fs::write(
        inbox.join("small.ndjson.gz"),
        gzip(vec![json!({ "n": 1 }), json!({ "n": 2 })]),
    )
    .unwrap();
    fs::write(
        inbox.join("large.ndjson.gz"),
        gzip(vec![json!({ "n": 1 }); 1000]),
    )
    .unwrap();
    for name in ["small.ndjson.gz", "large.ndjson.gz"] {
        set_modified(
            &inbox.join(name),
            SystemTime::now() - Duration::from_secs(60),
        );
    }
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(external_ids(&pulled), ["small.ndjson.gz"]);
    assert_eq!(
        pulled.passengers[0].body.as_json().unwrap(),
        json!([{ "n": 1 }, { "n": 2 }])
    );
    assert_eq!(pulled.failures.len(), 1);
    assert!(
        pulled.failures[0]
            .error
            .message
            .ends_with("gzip: the data decompresses to more than 1 KiB (`max_decompressed`); refusing to inflate it further"),
        "{}",
        pulled.failures[0].error
    );
}

fn json_passenger(external_id: &str, value: Value) -> Passenger {
    Passenger::pulled("edi", external_id).with_body(Body::json(&value))
}

#[tokio::test]
async fn a_codec_encodes_the_json_body_and_bad_bodies_fail_alone() {
    let project = tempfile::tempdir().unwrap();
    let config = json!({
        "path": "out",
        "name_template": "{external_id}.csv",
        "codec": { "type": "csv", "delimiter": ";" },
    });
    let pusher = build_pusher(project.path(), config).unwrap();
    let with_attachment = attach(
        json_passenger("two", json!([{ "id": 2, "name": "Bob; Jr." }])),
        "original.xml",
        "<x/>",
    );
    let results = pusher
        .push_all(&[
            json_passenger("one", json!([{ "id": "1", "name": "Ann" }])),
            passenger("text", "not json"),
            json_passenger("object", json!({ "id": 3 })),
            with_attachment,
        ])
        .await;
    assert_eq!(results[0], Ok(()));
    let not_json = results[1].clone().unwrap_err();
    assert_eq!(
        not_json.message,
        "the body is `text/plain`, not JSON: encoding needs a JSON body (use `decode` first)"
    );
    assert!(!not_json.retryable);
    let not_rows = results[2].clone().unwrap_err();
    assert_eq!(
        not_rows.message,
        "cannot encode the body: CSV at the top level: expected an array of rows, found an object"
    );
    // With a codec the encoded body is written, even when there are attachments.
    assert_eq!(results[3], Ok(()));
    let out = project.path().join("out");
    assert_eq!(tree(&out), ["one.csv", "two.csv"]);
    assert_eq!(read(out.join("one.csv")), "id;name\n1;Ann\n");
    assert_eq!(read(out.join("two.csv")), "id;name\n2;\"Bob; Jr.\"\n");
}

#[tokio::test]
async fn avro_files_written_by_the_pusher_are_read_back_by_the_puller() {
    let project = tempfile::tempdir().unwrap();
    let schema = r#"{ "type": "record", "name": "Reading", "namespace": "plant", "fields": [
        { "name": "sensor", "type": "string" },
        { "name": "value", "type": "double" },
        { "name": "at", "type": { "type": "long", "logicalType": "timestamp-millis" } },
        { "name": "note", "type": ["null", "string"], "default": null } ] }"#;
    fs::create_dir(project.path().join("schemas")).unwrap();
    fs::write(project.path().join("schemas/reading.avsc"), schema).unwrap();
    let codec = json!({ "type": "avro", "schema": "schemas/reading.avsc", "compression": "zstd" });

    let pusher = build_pusher(
        project.path(),
        json!({ "path": "in", "name_template": "{external_id}.avro.zst", "codec": codec }),
    )
    .unwrap();
    let readings = json!([
        { "sensor": "t1", "value": 21.5, "at": "2024-05-01T10:00:00.000Z", "note": null },
        { "sensor": "t2", "value": -3.25, "at": "2024-05-01T10:00:01.500Z", "note": "cold" },
    ]);
    let results = pusher
        .push_all(&[json_passenger("batch-1", readings.clone())])
        .await;
    assert_eq!(results, [Ok(())]);
    let written = project.path().join("in/batch-1.avro.zst");
    set_modified(&written, SystemTime::now() - Duration::from_secs(60));

    let config = json!({ "path": "in", "after_seat": "delete", "codec": codec });
    let mut puller = build_puller(project.path(), config).unwrap();
    let pulled = puller.pull(10).await.unwrap();
    assert!(pulled.failures.is_empty(), "{:?}", pulled.failures);
    assert_eq!(pulled.passengers[0].body.as_json().unwrap(), readings);
    // The file on disk is zstd around an Avro container.
    let bytes = fs::read(&written).unwrap();
    assert_eq!(&bytes[..4], [0x28, 0xB5, 0x2F, 0xFD]);
}

/// A record batch's types go into the file the codec writes, with no `encode` before.
#[tokio::test]
async fn a_codec_writes_a_record_batch_with_its_types() {
    use ferry_core::records::{BatchWriter, Column, ColumnType};
    let project = tempfile::tempdir().unwrap();
    let config =
        json!({ "path": "out", "name_template": "{external_id}.ndjson", "codec": "ndjson" });
    let pusher = build_pusher(project.path(), config).unwrap();
    let mut batch = BatchWriter::new(vec![
        Column::new("id", ColumnType::Integer),
        Column::new("amount", ColumnType::Numeric),
    ]);
    batch.raw("7");
    batch.raw("12.50");
    batch.end_row();
    let passenger = Passenger::pulled("db", "chunk").with_body(batch.finish());
    assert_eq!(pusher.push_all(&[passenger]).await[0], Ok(()));
    assert_eq!(
        read(project.path().join("out/chunk.ndjson")),
        "{\"id\":7,\"amount\":\"12.50\"}\n"
    );
}

#[test]
fn codec_configuration_errors_name_their_key() {
    let project = Path::new("/nonexistent-project");
    let puller_error = |codec: Value| {
        let config = json!({ "path": "in", "after_seat": "delete", "codec": codec });
        build_puller(project, config).err().unwrap()
    };
    let error = puller_error(json!({ "type": "csv", "quote": "ab" }));
    assert_eq!(error.path, ["codec", "quote"]);
    let error = puller_error(json!("orc"));
    assert_eq!(error.path, ["codec"]);
    assert!(error.message.contains("valid types are"), "{error}");
    let error = puller_error(json!({ "type": "avro", "schema": "schemas/x.avsc" }));
    assert_eq!(error.path, ["codec", "schema"]);
    assert!(
        error.message.contains("cannot read `schemas/x.avsc`"),
        "{error}"
    );

    let pusher_error = |config: Value| build_pusher(project, config).err().unwrap();
    let error = pusher_error(json!({ "path": "out", "codec": "csv", "content": "attachments" }));
    assert_eq!(error.path, ["codec"]);
    assert!(error.message.contains("`content: attachments`"), "{error}");
    let error = pusher_error(json!({ "path": "out", "codec": "avro" }));
    assert_eq!(error.path, ["codec", "schema"]);
    // Building needs no files for formats without a schema.
    build_pusher(
        project,
        json!({ "path": "out", "codec": "csv", "content": "body" }),
    )
    .unwrap();
}

/// Issue 12: a directory that was inside the client's directories when the pipeline was
/// validated, and became a symbolic link to a definition directory since, is not written.
#[tokio::test]
async fn a_pusher_never_follows_a_link_that_changed_since_validation() {
    let project = tempfile::tempdir().unwrap();
    let root_client = project.path().join("clients/root");
    fs::create_dir_all(&root_client).unwrap();
    fs::write(root_client.join("client.yaml"), "users: {}\n").unwrap();
    let config = json!({ "path": "out", "name_template": "client.yaml" });
    let pusher = build_pusher(project.path(), config).unwrap();
    std::os::unix::fs::symlink(&root_client, project.path().join("out")).unwrap();
    let results = pusher
        .push_all(&[passenger("1", "users: {mallory: {}}")])
        .await;
    let error = results[0].clone().unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(
        error.message.contains("another client's directory"),
        "{error}"
    );
    assert_eq!(read(root_client.join("client.yaml")), "users: {}\n");
}

// ---- conformance ------------------------------------------------------------------------------

#[tokio::test]
async fn the_file_puller_conforms() {
    let mut inbox = super::test_support::Inbox::new(
        |n| format!("id,name\n{n},Ann\n"),
        (
            "bad.csv",
            "id,name\n3,Cy\n4,Di,extra\n",
            "bad.csv: CSV line 3: found 3 fields, expected 2",
        ),
        |project| {
            let config = json!({ "path": "in", "after_seat": "delete", "codec": "csv" });
            build_puller(project, config).unwrap()
        },
    );
    crate::conformance::puller_conforms(&mut inbox).await;
}

/// The `file` pusher into `out/`, writing each passenger under its external id.
struct Outbox {
    project: TempDir,
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Outbox {
    fn pusher(&self) -> Box<dyn Pusher> {
        let config = json!({ "path": "out", "name_template": "{metadata.name}" });
        build_pusher(self.project.path(), config).unwrap()
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count)
            .map(|n| {
                let mut named = passenger(&format!("p{n}"), &format!("body {n}"));
                named.metadata.insert("name".into(), format!("p{n}.txt"));
                named
            })
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        let nameless = passenger("nameless", "no name to write it under");
        Some((nameless, "empty".into()))
    }

    async fn delivered(&self) -> Vec<String> {
        let out = self.project.path().join("out");
        match out.exists() {
            true => tree(&out),
            false => Vec::new(),
        }
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers
            .iter()
            .map(|p| format!("{}.txt", p.external_id))
            .collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        None
    }
}

#[tokio::test]
async fn the_file_pusher_conforms() {
    let project = tempfile::tempdir().unwrap();
    crate::conformance::pusher_conforms(&mut Outbox { project }).await;
}
