//! Pipeline tests: YAML files in `clients/<client>/tests/` that feed passengers to a pipeline's
//! real processors and compare what comes out with what is expected. No queue, no pusher is
//! called: a [`Trial`] shows where each passenger would go.
//!
//! ```yaml
//! # clients/acme/tests/orders.yaml
//! pipeline: orders
//! cases:
//!   - name: refunds are filtered
//!     input:
//!       - { metadata: { kind: refund }, body: { amount: 5 } }
//!     expect: { pushed: [], filtered: 1 }
//!   - name: sales go to the desk
//!     input:
//!       - { metadata: { kind: sale }, body_file: fixtures/sale.json }
//!     expect:
//!       pushed:
//!         - { to: [file], metadata: { route: sale-desk }, body_includes: { amount: 12 } }
//!     golden: expected/sale.json        # everything that came out; `ferry test --update`
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_core::config::Project;
use ferry_core::{Attachment, Body, Metadata, Passenger, Registry, media_type_of};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::trial::{Arrival, Fate, Trial};

/// A test file that cannot be used: unreadable, malformed, or naming what does not exist.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", position.map(|(line, column)| format!(":{line}:{column}")).unwrap_or_default())]
pub struct TestFileError {
    pub file: String,
    /// Line and column, when the problem has a place in the file.
    pub position: Option<(u64, u64)>,
    pub message: String,
}

/// The result of one case.
#[derive(Debug)]
pub struct CaseReport {
    /// The test file, relative to the project directory.
    pub file: String,
    pub case: String,
    /// What did not match; empty when the case passed.
    pub problems: Vec<String>,
    /// Its golden file was written (`--update`).
    pub updated: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    pipeline: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: Vec<Input>,
    #[serde(default)]
    expect: Expect,
    /// A file holding everything that came out, relative to the test file.
    golden: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    external_id: Option<String>,
    source_system: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    /// A JSON body.
    body: Option<Value>,
    /// A text body (`text/plain` unless `media_type` says otherwise).
    body_text: Option<String>,
    /// A body read from a file, relative to the test file.
    body_file: Option<String>,
    media_type: Option<String>,
    #[serde(default)]
    attachments: Vec<InputAttachment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputAttachment {
    file: String,
    name: Option<String>,
    media_type: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The passengers that would be pushed, in order.
    pushed: Option<Vec<ExpectPushed>>,
    filtered: Option<usize>,
    /// Permanent processor failures: the passenger would be dead.
    dead: Option<usize>,
    /// Retryable processor failures: the queue would try again.
    failed: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectPushed {
    /// Exactly these pushers.
    to: Option<Vec<String>>,
    external_id: Option<String>,
    /// These metadata keys with these values (others may be there too).
    metadata: Option<Metadata>,
    /// Exactly this JSON body.
    body: Option<Value>,
    /// A JSON body that holds at least these keys and values.
    body_includes: Option<Value>,
    /// Exactly this text body.
    body_text: Option<String>,
}

/// Finds every test file of the project: `clients/<client>/tests/*.yaml`, in name order.
pub fn find_tests(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let clients = dir.join("clients");
    if !clients.is_dir() {
        return Ok(files);
    }
    for client in std::fs::read_dir(&clients)? {
        let tests = client?.path().join("tests");
        if !tests.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&tests)? {
            let path = entry?.path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Runs the cases of one test file against the project's pipelines. With `update`, golden
/// files are written with what came out instead of being compared.
pub fn run_file(
    dir: &Path,
    project: &Project,
    registry: &Registry,
    path: &Path,
    update: bool,
) -> Result<Vec<CaseReport>, TestFileError> {
    let file = path
        .strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let fail = |message: String| TestFileError {
        file: file.clone(),
        position: None,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let test: TestFile = serde_saphyr::from_str(&text).map_err(|error| {
        let position = error.location().map(|at| (at.line(), at.column()));
        let message = error.without_snippet().to_string();
        // The position is in front already.
        let message = match message.rfind(" at line ") {
            Some(at) if position.is_some() => message[..at].to_string(),
            _ => message,
        };
        TestFileError {
            position,
            ..fail(message)
        }
    })?;
    // clients/<client>/tests/<file>: the client is the directory above `tests`.
    let client = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let def = project
        .clients
        .get(&client)
        .and_then(|c| c.pipelines.get(&test.pipeline))
        .ok_or_else(|| {
            fail(format!(
                "pipeline: client `{client}` has no pipeline `{}`",
                test.pipeline
            ))
        })?;
    let trial = Trial::build(registry, dir, def).map_err(|e| fail(format!("cannot build: {e}")))?;
    let base = path.parent().unwrap_or(dir);

    let mut reports = Vec::new();
    for (index, case) in test.cases.iter().enumerate() {
        let mut arrivals = Vec::new();
        for (n, input) in case.input.iter().enumerate() {
            let passenger = passenger(input, base, &client, &test.pipeline, &case.name, n)
                .map_err(|message| fail(format!("cases[{index}].input[{n}]: {message}")))?;
            arrivals.extend(trial.run(passenger));
        }
        let mut problems = check(&case.expect, &arrivals, case.golden.is_some());
        let mut updated = false;
        if let Some(golden) = &case.golden {
            let golden_path = base.join(golden);
            let actual = format!("{:#}\n", render(&arrivals));
            if update {
                write_golden(&golden_path, &actual)
                    .map_err(|e| fail(format!("cannot write {}: {e}", golden_path.display())))?;
                updated = true;
            } else {
                match std::fs::read_to_string(&golden_path) {
                    Ok(expected) if expected == actual => {}
                    Ok(expected) => problems.push(format!(
                        "differs from golden file {golden}:\n{}",
                        diff(&expected, &actual)
                    )),
                    Err(e) => problems.push(format!(
                        "cannot read golden file {golden} ({e}); write it with `ferry test --update`"
                    )),
                }
            }
        }
        reports.push(CaseReport {
            file: file.clone(),
            case: case.name.clone(),
            problems,
            updated,
        });
    }
    Ok(reports)
}

/// The passenger an input describes, as a puller would have pulled it.
fn passenger(
    input: &Input,
    base: &Path,
    client: &str,
    pipeline: &str,
    case: &str,
    n: usize,
) -> Result<Passenger, String> {
    let read = |file: &str| {
        std::fs::read(base.join(file))
            .map(Bytes::from)
            .map_err(|e| format!("cannot read {file}: {e}"))
    };
    let given = [
        input.body.is_some(),
        input.body_text.is_some(),
        input.body_file.is_some(),
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err("give only one of `body`, `body_text` and `body_file`".into());
    }
    let body = if let Some(value) = &input.body {
        Body::json(value)
    } else if let Some(text) = &input.body_text {
        Body {
            media_type: input.media_type.clone().unwrap_or("text/plain".into()),
            data: Bytes::from(text.clone()),
        }
    } else if let Some(file) = &input.body_file {
        Body {
            media_type: input
                .media_type
                .clone()
                .unwrap_or_else(|| media_type_of(file).to_string()),
            data: read(file)?,
        }
    } else {
        Body::empty()
    };
    let mut attachments = Vec::new();
    for attachment in &input.attachments {
        let name = attachment.name.clone().unwrap_or_else(|| {
            let path = Path::new(&attachment.file);
            path.file_name().map_or(attachment.file.clone(), |n| {
                n.to_string_lossy().into_owned()
            })
        });
        attachments.push(Attachment {
            media_type: attachment
                .media_type
                .clone()
                .unwrap_or_else(|| media_type_of(&attachment.file).to_string()),
            name,
            content: read(&attachment.file)?,
        });
    }
    let external_id = input
        .external_id
        .clone()
        .unwrap_or_else(|| format!("{case}#{}", n + 1));
    let mut passenger = Passenger::pulled(
        input.source_system.as_deref().unwrap_or("test"),
        external_id,
    )
    .with_body(body);
    passenger.client = client.to_string();
    passenger.pipeline = pipeline.to_string();
    passenger.metadata = input.metadata.clone();
    passenger.attachments = attachments;
    Ok(passenger)
}

/// What does not match the expectations. Counts not given must be zero, unless a golden file
/// holds the whole outcome.
fn check(expect: &Expect, arrivals: &[Arrival], golden: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let pushed: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| matches!(a.fate, Fate::Pushed { .. }))
        .collect();
    let count = |wanted: fn(&Fate) -> bool| arrivals.iter().filter(|a| wanted(&a.fate)).count();
    let counts = [
        (
            "filtered",
            expect.filtered,
            count(|f| matches!(f, Fate::Filtered { .. })),
        ),
        (
            "dead",
            expect.dead,
            count(|f| matches!(f, Fate::Failed { error, .. } if !error.retryable)),
        ),
        (
            "failed",
            expect.failed,
            count(|f| matches!(f, Fate::Failed { error, .. } if error.retryable)),
        ),
    ];
    for (what, expected, actual) in counts {
        let expected = match expected {
            Some(expected) => expected,
            None if golden => continue,
            None => 0,
        };
        if expected != actual {
            let detail: Vec<String> = arrivals
                .iter()
                .filter_map(|a| describe_stop(a, what))
                .collect();
            problems.push(format!(
                "expected {expected} {what}, got {actual}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", detail.join("; "))
                }
            ));
        }
    }
    if let Some(expected) = &expect.pushed {
        if expected.len() != pushed.len() {
            problems.push(format!(
                "expected {} pushed, got {}",
                expected.len(),
                pushed.len()
            ));
        }
        for (n, (want, got)) in expected.iter().zip(&pushed).enumerate() {
            for problem in compare(want, got) {
                problems.push(format!("pushed[{n}]: {problem}"));
            }
        }
    }
    problems
}

/// "external id: reason" of an arrival that stopped the way `what` names.
fn describe_stop(arrival: &Arrival, what: &str) -> Option<String> {
    let id = &arrival.passenger.external_id;
    match &arrival.fate {
        Fate::Filtered { processor, reason } if what == "filtered" => {
            Some(format!("{id} filtered by {processor}: {reason}"))
        }
        Fate::Failed { processor, error } if what == "dead" && !error.retryable => {
            Some(format!("{id} failed in {processor}: {error}"))
        }
        Fate::Failed { processor, error } if what == "failed" && error.retryable => {
            Some(format!("{id} failed in {processor}: {error}"))
        }
        _ => None,
    }
}

fn compare(want: &ExpectPushed, got: &Arrival) -> Vec<String> {
    let mut problems = Vec::new();
    let passenger = &got.passenger;
    if let (Some(to), Fate::Pushed { pushers }) = (&want.to, &got.fate)
        && to != pushers
    {
        problems.push(format!("to: expected {to:?}, got {pushers:?}"));
    }
    if let Some(id) = &want.external_id
        && *id != passenger.external_id
    {
        problems.push(format!(
            "external_id: expected `{id}`, got `{}`",
            passenger.external_id
        ));
    }
    for (key, value) in want.metadata.iter().flatten() {
        match passenger.metadata.get(key) {
            Some(actual) if actual == value => {}
            Some(actual) => problems.push(format!(
                "metadata.{key}: expected `{value}`, got `{actual}`"
            )),
            None => problems.push(format!("metadata.{key}: expected `{value}`, missing")),
        }
    }
    let body = body_value(&passenger.body);
    if let Some(expected) = &want.body
        && *expected != body
    {
        problems.push(format!("body: expected {expected}, got {body}"));
    }
    if let Some(expected) = &want.body_includes
        && !includes(&body, expected)
    {
        problems.push(format!("body: expected to include {expected}, got {body}"));
    }
    if let Some(expected) = &want.body_text {
        let text = String::from_utf8_lossy(&passenger.body.data);
        if *expected != text {
            problems.push(format!("body_text: expected {expected:?}, got {text:?}"));
        }
    }
    problems
}

/// Whether `actual` holds everything in `expected`: objects by key (recursively), anything
/// else by equality.
fn includes(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, want)| actual.get(key).is_some_and(|value| includes(value, want))),
        _ => actual == expected,
    }
}

/// The body as JSON when it is JSON, else as text.
fn body_value(body: &Body) -> Value {
    body.as_json()
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body.data).into_owned()))
}

/// Everything that came out, without ids or times, for golden files.
fn render(arrivals: &[Arrival]) -> Value {
    let items = arrivals
        .iter()
        .map(|arrival| {
            let passenger = &arrival.passenger;
            let mut item = json!({
                "external_id": passenger.external_id,
                "metadata": passenger.metadata.iter().collect::<BTreeMap<_, _>>(),
                "media_type": passenger.body.media_type,
                "body": body_value(&passenger.body),
            });
            if !passenger.attachments.is_empty() {
                item["attachments"] = passenger
                    .attachments
                    .iter()
                    .map(|a| json!({ "name": a.name, "media_type": a.media_type, "size": a.content.len() }))
                    .collect();
            }
            let fate = match &arrival.fate {
                Fate::Pushed { pushers } => json!({ "pushed": pushers }),
                Fate::Filtered { processor, reason } => {
                    json!({ "filtered": { "by": processor, "reason": reason } })
                }
                Fate::Split { processor, children } => {
                    json!({ "split": { "by": processor, "children": children } })
                }
                Fate::Failed { processor, error } => json!({
                    if error.retryable { "failed" } else { "dead" }:
                        { "in": processor, "error": error.message }
                }),
            };
            item["fate"] = fate;
            item
        })
        .collect();
    Value::Array(items)
}

fn write_golden(path: &Path, content: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)
}

/// The lines that differ, `-` expected and `+` actual, up to a screenful.
fn diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    let mut shown = 0;
    for n in 0..expected.len().max(actual.len()) {
        let (e, a) = (expected.get(n), actual.get(n));
        if e == a {
            continue;
        }
        if shown == 20 {
            out.push_str("  …\n");
            break;
        }
        if let Some(e) = e {
            let _ = writeln!(out, "  line {}: - {e}", n + 1);
        }
        if let Some(a) = a {
            let _ = writeln!(out, "  line {}: + {a}", n + 1);
        }
        shown += 1;
    }
    out
}
