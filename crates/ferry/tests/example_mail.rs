//! `ferry init --example mail-to-erp`: the example project that reads orders and price lists
//! from a mailbox and sends them to SAP as IDocs, through the real binary.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{BIN, stderr, stdout};

/// The variables of the example's `.env`, as `NAME=value` lines (comments and blanks skipped).
fn dot_env(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join(".env")).expect("the example writes .env");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').expect("NAME=value");
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// Runs ferry with nothing from the test's environment but what `env` gives, so the example
/// must bring every variable it names.
fn ferry(args: &[&str], env: &[(String, String)], data: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("FERRY_DATA_DIR", data)
        .output()
        .expect("run ferry")
}

#[test]
fn init_writes_the_mail_to_erp_example_which_validates_and_passes_its_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mail");
    let data = tmp.path().join("data");
    let path = dir.to_str().unwrap();
    let init = ferry(&["init", "--example", "mail-to-erp", path], &[], &data);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(stdout(&init).contains(".env"), "{}", stdout(&init));
    for file in [
        "ferry.yaml",
        "connections.yaml",
        "clients/partners/pipelines/orders.yaml",
        "clients/partners/pipelines/price-lists.yaml",
        "clients/partners/tests/orders.yaml",
        "clients/partners/tests/price-lists.yaml",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    // The binary fixtures arrive whole: the workbook is a zip, the PDF a PDF.
    let xlsx = std::fs::read(dir.join("clients/partners/tests/fixtures/prices-2027.xlsx")).unwrap();
    assert!(xlsx.starts_with(b"PK\x03\x04") && xlsx.len() > 1000);
    let pdf = std::fs::read(dir.join("clients/partners/tests/fixtures/PO-4711.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-") && pdf.ends_with(b"%%EOF\n"));

    // Without its environment the project names what is missing, file and line…
    let bare = ferry(&["validate", path], &[], &data);
    assert!(!bare.status.success());
    assert!(
        stderr(&bare).contains(
            "connections.yaml:8:3: orders-mailbox.host: environment variable `IMAP_HOST` is not set"
        ),
        "{}",
        stderr(&bare)
    );
    // … and with the .env it writes (and nothing else) it is valid and its tests pass.
    let env = dot_env(&dir);
    let validated = ferry(&["validate", path], &env, &data);
    assert!(
        validated.status.success(),
        "{}{}",
        stdout(&validated),
        stderr(&validated)
    );
    assert!(
        stdout(&validated).contains("1 client(s), 2 pipeline(s), all definitions valid"),
        "{}",
        stdout(&validated)
    );
    let tested = ferry(&["test", path], &env, &data);
    assert!(
        tested.status.success(),
        "{}{}",
        stdout(&tested),
        stderr(&tested)
    );
    assert!(
        stdout(&tested).contains("6 passed, 0 failed, 0 test file(s) unusable"),
        "{}",
        stdout(&tested)
    );
    // The passwords of the .env never show.
    for output in [&validated, &tested] {
        assert!(!stdout(output).contains("change-me") && !stderr(output).contains("change-me"));
    }

    // The tests do test something: an IDoc that changes is caught by its golden file.
    let pipeline = dir.join("clients/partners/pipelines/orders.yaml");
    let yaml = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(
        &pipeline,
        yaml.replace("\"PARVW\": \"AG\"", "\"PARVW\": \"WE\""),
    )
    .unwrap();
    let tested = ferry(&["test", path], &env, &data);
    assert!(!tested.status.success());
    let out = stdout(&tested);
    assert!(
        out.contains(
            "FAILED clients/partners/tests/orders.yaml › an order mail becomes an ORDERS05 IDoc"
        ) && out.contains("differs from golden file expected/orders-PO-4711.json")
            && out.contains("4 passed, 2 failed"),
        "{out}"
    );
}

#[test]
fn init_with_an_unknown_example_lists_the_examples_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nope");
    let output = ferry(
        &["init", "--example", "nope", dir.to_str().unwrap()],
        &[],
        &tmp.path().join("data"),
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("there is no example `nope`; the examples are: mail-to-erp"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.exists());
}

#[test]
fn init_of_an_example_refuses_an_existing_project_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = tmp.path().join("mine");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ferry.yaml"), "system_alias: mine\n").unwrap();
    let output = ferry(
        &["init", "--example", "mail-to-erp", dir.to_str().unwrap()],
        &[],
        &data,
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already holds a project (ferry.yaml exists)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ferry.yaml")).unwrap(),
        "system_alias: mine\n"
    );
    assert!(!dir.join("connections.yaml").exists() && !dir.join(".env").exists());

    // Plain `ferry init` still writes the small example, and refuses a project too.
    let plain = tmp.path().join("plain");
    let output = ferry(&["init", plain.to_str().unwrap()], &[], &data);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        plain
            .join("clients/example/pipelines/invoices.yaml")
            .is_file()
    );
    assert!(!plain.join(".env").exists());
    let again = ferry(
        &["init", "--example", "mail-to-erp", plain.to_str().unwrap()],
        &[],
        &data,
    );
    assert!(!again.status.success());
}
