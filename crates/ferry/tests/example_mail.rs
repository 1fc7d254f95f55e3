//! `ferry init --example mail-to-erp`: the example project that reads orders and price lists
//! from a mailbox and sends them to SAP as IDocs, through the real binary.

mod mailbox;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};

use mailbox::{MailUser, imap_host, imap_port};
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

// ---- end to end: the test Dovecot as the mailbox, a local endpoint as SAP ----

/// A request SAP's IDoc inbound service got: path and query, headers, body.
#[derive(Clone, Debug)]
struct Posted {
    uri: String,
    authorization: String,
    content_type: String,
    body: String,
}

type Inbox = Arc<Mutex<Vec<Posted>>>;

/// An HTTP server standing in for SAP: every POST is recorded and answered 200.
fn sap() -> (String, Inbox) {
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .route(
            "/sap/bc/idoc_xml",
            axum::routing::post(
                |State(inbox): State<Inbox>, uri: Uri, headers: HeaderMap, body: Bytes| async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    inbox.lock().unwrap().push(Posted {
                        uri: uri.to_string(),
                        authorization: header("authorization"),
                        content_type: header("content-type"),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    "IDoc stored"
                },
            ),
        )
        .with_state(inbox.clone());
    let url = support::serve(app);
    (url, inbox)
}

#[test]
fn the_mail_to_erp_example_runs_from_a_real_mailbox_to_an_idoc_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mail");
    let data = tmp.path().join("data");
    let path = dir.to_str().unwrap();
    let init = ferry(&["init", "--example", "mail-to-erp", path], &[], &data);
    assert!(init.status.success(), "{}", stderr(&init));

    // What a user edits: the mailbox's port and security (a local server without TLS), the
    // console's port (any free one), and the values of .env.
    let edit = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(dir.join(file), text.replace(from, to)).unwrap();
    };
    edit(
        "connections.yaml",
        "# port: 993 ",
        &format!("port: {} #", imap_port()),
    );
    edit("connections.yaml", "# security: tls ", "security: none #");
    edit("ferry.yaml", "127.0.0.1:5000", "\"127.0.0.1:0\"");
    let mail = MailUser::new();
    let (url, posted) = sap();
    let sap_password = "sap-SECRET-pw";
    let env: Vec<(String, String)> = [
        ("IMAP_HOST", imap_host()),
        ("IMAP_USER", mail.user.clone()),
        ("IMAP_PASSWORD", mail.password.clone()),
        ("SAP_URL", url),
        ("SAP_USER", "FERRY_COMM".to_string()),
        ("SAP_PASSWORD", sap_password.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    let check = ferry(&["check", path], &env, &data);
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );

    let fixtures = dir.join("clients/partners/tests/fixtures");
    let fixture = |name: &str| std::fs::read(fixtures.join(name)).unwrap();
    let (xml, pdf, xlsx) = (
        fixture("PO-4711.xml"),
        fixture("PO-4711.pdf"),
        fixture("prices-2027.xlsx"),
    );
    let xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    let messages = [
        mailbox::message(
            "m0",
            "Order PO-4711",
            &[
                (b"PO-4711.xml", "application/xml", &xml),
                (b"PO-4711.pdf", "application/pdf", &pdf),
            ],
        ),
        mailbox::message(
            "m1",
            "Price list 2027",
            &[(b"prices-2027.xlsx", xlsx_type, &xlsx)],
        ),
        mailbox::message("m2", "Lunch on Friday?", &[]),
    ];
    mail.append("INBOX", &messages);

    let log = std::fs::File::create(tmp.path().join("ferry.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", path])
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("FERRY_DATA_DIR", &data)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let archive = dir.join("archive/orders");
    let done = || {
        posted.lock().unwrap().len() >= 2
            && support::files(&archive).len() >= 2
            && mail.status("Archive") == (2, 0)
    };
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "not delivered within 60 s: posted {:?}, archive {:?}, log:\n{}",
                posted.lock().unwrap(),
                support::files(&archive),
                std::fs::read_to_string(tmp.path().join("ferry.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing more arrives: each mail once.
    std::thread::sleep(Duration::from_secs(2));
    assert!(support::terminate(child), "ferry stopped cleanly");

    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 2, "{posted:?}");
    for request in &posted {
        assert_eq!(request.uri, "/sap/bc/idoc_xml?sap-client=100");
        assert_eq!(request.content_type, "application/xml");
        // Basic FERRY_COMM:sap-SECRET-pw
        assert_eq!(
            request.authorization,
            "Basic RkVSUllfQ09NTTpzYXAtU0VDUkVULXB3"
        );
    }
    let order = posted
        .iter()
        .find(|p| p.body.contains("<ORDERS05>"))
        .expect("the order IDoc");
    for part in [
        // The control record first, then the segments and their fields in IDoc order.
        "<IDOC BEGIN=\"1\"><EDI_DC40 SEGMENT=\"1\"><TABNAM>EDI_DC40</TABNAM>",
        "</EDI_DC40><E1EDK01 SEGMENT=\"1\"><CURCY>EUR</CURCY><BELNR>PO-4711</BELNR></E1EDK01>",
        "<IDTNR>MAT-2002</IDTNR>",
        "<POSEX>20</POSEX><MENGE>2.5</MENGE><MENEE>KGM</MENEE>",
        "<SNDPRN>100042</SNDPRN>",
    ] {
        assert!(order.body.contains(part), "{part} not in {}", order.body);
    }
    let prices = posted
        .iter()
        .find(|p| p.body.contains("<COND_A04>"))
        .expect("the price list IDoc");
    assert_eq!(prices.body.matches("<E1KOMG SEGMENT=\"1\">").count(), 3);
    assert!(
        prices.body.contains("<DATBI>99991231</DATBI>"),
        "{}",
        prices.body
    );

    // The documents, byte for byte; the mails handled are read and in Archive, the other one
    // waits unread in INBOX.
    assert_eq!(
        support::files(&archive),
        ["PO-4711-PO-4711.pdf", "PO-4711-PO-4711.xml"]
    );
    for (written, original) in [
        ("PO-4711-PO-4711.pdf", "PO-4711.pdf"),
        ("PO-4711-PO-4711.xml", "PO-4711.xml"),
    ] {
        assert_eq!(
            std::fs::read(archive.join(written)).unwrap(),
            std::fs::read(fixtures.join(original)).unwrap()
        );
    }
    assert_eq!(mail.status("INBOX"), (1, 1));
    assert_eq!(mail.status("Archive"), (2, 0));
    let log = std::fs::read_to_string(tmp.path().join("ferry.log")).unwrap();
    assert!(!log.contains(sap_password) && !log.contains(&mail.password));
}
