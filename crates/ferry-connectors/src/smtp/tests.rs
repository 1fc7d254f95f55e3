//! The `smtp` connection and pusher against the real SMTP test server
//! (scripts/smtp-test-server.py, started by scripts/test.sh): what was sent is read back from
//! the directory it writes each message to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use ferry_core::config::Connection;
use ferry_core::{Attachment, Body, BuildContext, Passenger, Pusher, Role};
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};

use crate::conformance::SECRET;

/// The test server's user and password (scripts/smtp-test-server.py).
const USER: &str = "ferry";
const PASSWORD: &str = "ferry-test-password";

/// `host:port` of the test server's plain listener.
pub(crate) fn server() -> (String, u16) {
    let address = std::env::var("FERRY_TEST_SMTP").unwrap_or_else(|_| "127.0.0.1:2525".to_string());
    let (host, port) = address
        .rsplit_once(':')
        .expect("FERRY_TEST_SMTP is host:port");
    (host.to_string(), port.parse().expect("a port"))
}

/// The port of a TLS listener (`FERRY_TEST_SMTP_TLS`, `FERRY_TEST_SMTPS`).
fn tls_port(variable: &str, default: u16) -> u16 {
    std::env::var(variable)
        .ok()
        .and_then(|address| address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(default)
}

/// Where the test server writes what it receives.
fn inbox() -> PathBuf {
    std::env::var("FERRY_TEST_SMTP_DIR")
        .unwrap_or_else(|_| "/tmp/ferry-smtp".to_string())
        .into()
}

/// An address no other test uses.
fn unique(local: &str) -> String {
    format!("{local}-{}@example.com", uuid::Uuid::now_v7().simple())
}

/// One message the server received: its envelope and its bytes.
struct Received {
    envelope: Value,
    raw: Vec<u8>,
}

/// Every message the server received for `recipient` (in its envelope), oldest first.
fn received(recipient: &str) -> Vec<Received> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(inbox())
        .expect("the SMTP test server's directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "eml"))
        .collect();
    entries.sort();
    for eml in entries {
        let Ok(envelope) = std::fs::read(eml.with_extension("json")) else {
            continue;
        };
        let envelope: Value = serde_json::from_slice(&envelope).expect("an envelope");
        let to_it = envelope["rcpt_tos"]
            .as_array()
            .is_some_and(|list| list.iter().any(|r| r == recipient));
        if to_it {
            let raw = std::fs::read(&eml).expect("the message");
            found.push(Received { envelope, raw });
        }
    }
    found
}

/// The `smtp` connection `mail` with these keys, granted to `acme`.
pub(crate) fn connection(name: &str, config: Value) -> Connection {
    Connection {
        name: name.into(),
        kind: "smtp".into(),
        config: config.as_object().expect("a mapping").clone(),
        clients: vec!["acme".into()],
    }
}

/// The plain listener, no login, a default sender.
fn plain() -> Connection {
    let (host, port) = server();
    connection(
        "mail",
        json!({ "host": host, "port": port, "tls": "none", "from": "ferry <ferry@example.com>" }),
    )
}

fn context(connections: Vec<Connection>) -> BuildContext {
    let connections: BTreeMap<String, Connection> = connections
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    BuildContext {
        client: "acme".into(),
        pipeline: "mail".into(),
        component: "smtp".into(),
        connections: Arc::new(connections),
        ..BuildContext::default()
    }
}

fn pusher(connection: Connection, config: Value) -> Box<dyn Pusher> {
    crate::registry()
        .pusher("smtp", &config, &context(vec![connection]))
        .expect("a valid pusher")
}

fn config_error(connection: Connection, config: Value) -> ferry_core::BuildError {
    match crate::registry().pusher("smtp", &config, &context(vec![connection])) {
        Ok(_) => panic!("{config} is refused"),
        Err(error) => error,
    }
}

fn order(external_id: &str) -> Passenger {
    let mut passenger = Passenger::pulled("erp", external_id).with_body(Body {
        media_type: "text/plain".into(),
        data: Bytes::from(format!("Order {external_id} is attached.")),
    });
    passenger
        .metadata
        .insert("customer".into(), "Müller & Söhne".into());
    passenger.attachments.push(Attachment {
        name: format!("{external_id}.pdf"),
        media_type: "application/pdf".into(),
        content: Bytes::from_static(b"%PDF-1.4 \x00\x01\x02 binary"),
    });
    passenger.attachments.push(Attachment {
        name: "lines.csv".into(),
        media_type: "text/csv".into(),
        content: Bytes::from_static(b"sku,qty\nA-1,3\n"),
    });
    passenger
}

#[tokio::test]
async fn a_passenger_travels_with_its_attachments() {
    let (to, cc, bcc) = (unique("orders"), unique("copy"), unique("hidden"));
    let pusher = pusher(
        plain(),
        json!({
            "connection": "mail",
            "to": [to, "{metadata.reply_to}"],
            "cc": cc,
            "bcc": [bcc],
            "subject": "Order {external_id} for {metadata.customer}",
        }),
    );
    let passenger = order("4711");
    let results = pusher.push(&[&passenger]).await;
    assert!(results[0].is_ok(), "{results:?}");

    let got = received(&to);
    assert_eq!(got.len(), 1, "one message");
    let envelope = &got[0].envelope;
    assert_eq!(envelope["mail_from"], "ferry@example.com");
    let rcpt: Vec<&str> = envelope["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rcpt.len(), 3, "to, cc and bcc in the envelope: {rcpt:?}");
    assert!(rcpt.contains(&bcc.as_str()));

    let message = MessageParser::default()
        .parse(&got[0].raw)
        .expect("a message");
    assert_eq!(message.subject(), Some("Order 4711 for Müller & Söhne"));
    assert_eq!(
        message
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some(to.as_str())
    );
    assert_eq!(
        message
            .cc()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some(cc.as_str())
    );
    let raw = String::from_utf8_lossy(&got[0].raw);
    assert!(!raw.contains(&bcc), "bcc stays out of the message");
    assert_eq!(
        message.message_id(),
        Some(format!("{}.smtp@ferry", passenger.id).as_str()),
        "the Message-ID is the passenger's"
    );
    assert_eq!(
        message.body_text(0).as_deref().map(str::trim_end),
        Some("Order 4711 is attached.")
    );
    let attachments: Vec<(String, String, Vec<u8>)> = message
        .attachments()
        .map(|part| {
            let media_type = part.content_type().unwrap();
            (
                part.attachment_name().unwrap().to_string(),
                format!("{}/{}", media_type.ctype(), media_type.subtype().unwrap()),
                part.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        attachments,
        [
            (
                "4711.pdf".to_string(),
                "application/pdf".to_string(),
                b"%PDF-1.4 \x00\x01\x02 binary".to_vec()
            ),
            (
                "lines.csv".to_string(),
                "text/csv".to_string(),
                b"sku,qty\nA-1,3\n".to_vec()
            ),
        ]
    );
}

#[tokio::test]
async fn the_body_travels_as_an_attachment_named_by_a_template() {
    let to = unique("body");
    let pusher = pusher(
        plain(),
        json!({
            "connection": "mail",
            "to": to,
            "from": "Orders <orders@example.com>",
            "body": "Invoice {external_id} attached.",
            "attachments": "body",
            "attachment_name": "invoice-{external_id}.json",
        }),
    );
    let passenger = Passenger::pulled("erp", "R-9").with_body(Body::json(&json!({ "total": 12 })));
    assert!(pusher.push(&[&passenger]).await[0].is_ok());
    let got = received(&to);
    assert_eq!(got[0].envelope["mail_from"], "orders@example.com");
    let message = MessageParser::default().parse(&got[0].raw).unwrap();
    assert_eq!(message.subject(), Some("R-9"), "the default subject");
    assert_eq!(
        message.body_text(0).as_deref().map(str::trim_end),
        Some("Invoice R-9 attached.")
    );
    let part = message.attachments().next().expect("the body attached");
    assert_eq!(part.attachment_name(), Some("invoice-R-9.json"));
    assert_eq!(part.contents(), br#"{"total":12}"#);
}

#[tokio::test]
async fn without_attachments_the_text_is_the_body_and_html_stays_html() {
    let to = unique("html");
    let pusher = pusher(
        plain(),
        json!({ "connection": "mail", "to": to, "attachments": "none" }),
    );
    let mut passenger = order("77");
    passenger.body = Body {
        media_type: "text/html; charset=utf-8".into(),
        data: Bytes::from_static(b"<p>Order <b>77</b></p>"),
    };
    assert!(pusher.push(&[&passenger]).await[0].is_ok());
    let got = received(&to);
    let message = MessageParser::default().parse(&got[0].raw).unwrap();
    assert_eq!(message.attachment_count(), 0, "attachments: none");
    assert!(
        message
            .body_html(0)
            .is_some_and(|html| html.contains("<b>77</b>"))
    );
}

#[tokio::test]
async fn a_login_is_used_and_a_wrong_password_is_refused_without_showing_it() {
    let (host, port) = server();
    let to = unique("login");
    let good = connection(
        "mail",
        json!({ "host": host, "port": port, "tls": "none", "user": USER, "password": PASSWORD,
                "from": "ferry@example.com" }),
    );
    let pusher_ok = pusher(good.clone(), json!({ "connection": "mail", "to": to }));
    let passenger = order("1");
    assert!(pusher_ok.push(&[&passenger]).await[0].is_ok());
    assert_eq!(received(&to)[0].envelope["user"], USER, "logged in");

    let bad = connection(
        "mail",
        json!({ "host": host, "port": port, "tls": "none", "user": USER, "password": SECRET,
                "from": "ferry@example.com" }),
    );
    let pusher_bad = pusher(
        bad.clone(),
        json!({ "connection": "mail", "to": unique("x") }),
    );
    let error = pusher_bad.push(&[&passenger]).await.remove(0).unwrap_err();
    assert!(error.message.contains("535"), "{error}");
    assert!(
        !error.retryable,
        "authentication failed is permanent: {error}"
    );
    assert!(!error.message.contains(SECRET), "{error}");

    let registry = crate::registry();
    let ok = registry
        .check_connection(&good, std::path::Path::new("/"))
        .await;
    let ok = ok.unwrap();
    assert!(ok.contains("logged in as ferry"), "{ok}");
    let failed = registry
        .check_connection(&bad, std::path::Path::new("/"))
        .await
        .unwrap_err();
    assert!(
        failed.contains("535") && failed.contains("`mail`"),
        "{failed}"
    );
    assert!(!failed.contains(SECRET), "{failed}");
}

#[tokio::test]
async fn a_4xx_reply_is_retryable_and_a_5xx_reply_permanent_with_the_server_text() {
    let pusher_temp = pusher(
        plain(),
        json!({ "connection": "mail", "to": "{metadata.to}" }),
    );
    let mut temp = order("t");
    temp.metadata.insert("to".into(), unique("tempfail"));
    let mut rejected = order("r");
    rejected.metadata.insert("to".into(), unique("reject"));
    let mut fine = order("f");
    let fine_to = unique("fine");
    fine.metadata.insert("to".into(), fine_to.clone());
    let results = pusher_temp.push(&[&temp, &rejected, &fine]).await;
    let error = results[0].as_ref().unwrap_err();
    assert!(error.retryable, "451 is retryable: {error}");
    assert!(error.message.contains("451"), "{error}");
    assert!(error.message.contains("temporarily unavailable"), "{error}");
    let error = results[1].as_ref().unwrap_err();
    assert!(!error.retryable, "550 is permanent: {error}");
    assert!(error.message.contains("550"), "{error}");
    assert!(error.message.contains("no such user here"), "{error}");
    assert!(results[2].is_ok(), "the others travel: {results:?}");
    assert_eq!(received(&fine_to).len(), 1);
}

#[tokio::test]
async fn a_passenger_the_message_cannot_be_made_of_fails_alone_and_permanently() {
    let to = unique("mixed");
    let pusher = pusher(
        plain(),
        json!({ "connection": "mail", "to": [to, "{metadata.cc}"] }),
    );
    let mut bad_address = order("a");
    bad_address
        .metadata
        .insert("cc".into(), "not an address".into());
    let mut binary = order("b");
    binary.body = Body {
        media_type: "application/octet-stream".into(),
        data: Bytes::from_static(b"\xff\xfe\x00"),
    };
    let good = order("c");
    let results = pusher.push(&[&bad_address, &binary, &good]).await;
    let error = results[0].as_ref().unwrap_err();
    assert!(
        !error.retryable && error.message.contains("to.1"),
        "{error}"
    );
    let error = results[1].as_ref().unwrap_err();
    assert!(
        !error.retryable && error.message.contains("attachments: body"),
        "{error}"
    );
    assert!(results[2].is_ok());
    assert_eq!(received(&to).len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_retryable_and_named_without_the_password() {
    let unreachable = connection(
        "mail",
        json!({ "host": "127.0.0.1", "port": 1, "tls": "none", "user": USER,
                "password": SECRET, "from": "ferry@example.com", "timeout": "2s" }),
    );
    let pusher = pusher(
        unreachable,
        json!({ "connection": "mail", "to": unique("x") }),
    );
    let passengers = [order("1"), order("2")];
    let results = pusher.push(&[&passengers[0], &passengers[1]]).await;
    for result in results {
        let error = result.unwrap_err();
        assert!(error.retryable, "{error}");
        assert!(error.message.contains("127.0.0.1:1"), "{error}");
        assert!(!error.message.contains(SECRET), "{error}");
    }
}

#[tokio::test]
async fn starttls_and_smtps_with_a_private_certificate() {
    let certificate = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if !std::path::Path::new(certificate).exists() {
        eprintln!("skipped: no snakeoil certificate, so the test server has no TLS listeners");
        return;
    }
    for (tls, port) in [
        ("starttls", tls_port("FERRY_TEST_SMTP_TLS", 2526)),
        ("tls", tls_port("FERRY_TEST_SMTPS", 2527)),
    ] {
        // The certificate names `localhost`.
        let secured = connection(
            "mail",
            json!({ "host": "localhost", "port": port, "tls": tls, "ca_file": certificate,
                    "user": USER, "password": PASSWORD, "from": "ferry@example.com" }),
        );
        let to = unique(tls);
        let pusher = pusher(secured.clone(), json!({ "connection": "mail", "to": to }));
        let results = pusher.push(&[&order("s")]).await;
        assert!(results[0].is_ok(), "{tls}: {results:?}");
        let got = received(&to);
        assert_eq!(got[0].envelope["port"], port);
        assert_eq!(got[0].envelope["user"], USER);
        let described = crate::registry()
            .check_connection(&secured, std::path::Path::new("/"))
            .await
            .unwrap();
        assert!(described.contains(&format!("tls: {tls}")), "{described}");

        // Without the private CA the certificate does not verify: nothing is sent.
        let untrusted = connection(
            "mail",
            json!({ "host": "localhost", "port": port, "tls": tls, "from": "ferry@example.com" }),
        );
        let pusher = pusher_for(untrusted, &unique("untrusted"));
        let error = pusher.push(&[&order("u")]).await.remove(0).unwrap_err();
        assert!(error.retryable, "{error}");
        assert!(
            error.message.contains(&format!("localhost:{port}")),
            "{error}"
        );
    }

    // The STARTTLS listener refuses mail in plain text.
    let plain_text = connection(
        "mail",
        json!({ "host": "localhost", "port": tls_port("FERRY_TEST_SMTP_TLS", 2526), "tls": "none",
                "from": "ferry@example.com" }),
    );
    let error = pusher_for(plain_text, &unique("plain"))
        .push(&[&order("p")])
        .await
        .remove(0)
        .unwrap_err();
    assert!(error.message.contains("530"), "{error}");
}

fn pusher_for(connection: Connection, to: &str) -> Box<dyn Pusher> {
    pusher(connection, json!({ "connection": "mail", "to": to }))
}

#[test]
fn bad_configurations_name_their_key() {
    let error = config_error(plain(), json!({ "connection": "mail" }));
    assert_eq!(error.path, ["to"], "{error}");
    let error = config_error(
        plain(),
        json!({ "connection": "mail", "to": ["ok@example.com", "nope"] }),
    );
    assert_eq!(error.path, ["to", "1"], "{error}");
    assert!(error.message.contains("`nope`"), "{error}");
    let error = config_error(
        plain(),
        json!({ "connection": "mail", "to": "a@example.com", "subject": "{nope}" }),
    );
    assert_eq!(error.path, ["subject"], "{error}");
    let error = config_error(
        plain(),
        json!({ "connection": "mail", "to": "a@example.com", "attachments": "all" }),
    );
    assert_eq!(error.path, ["attachments"], "{error}");
    let error = config_error(
        plain(),
        json!({ "connection": "mail", "to": "a@example.com", "sender": "x" }),
    );
    assert!(error.message.contains("unknown field `sender`"), "{error}");
    let error = config_error(
        plain(),
        json!({ "connection": "post", "to": "a@example.com" }),
    );
    assert_eq!(error.path, ["connection"]);
    assert!(
        error.message.contains("unknown connection `post`"),
        "{error}"
    );

    // No sender anywhere.
    let (host, port) = server();
    let no_from = connection("mail", json!({ "host": host, "port": port }));
    let error = config_error(
        no_from,
        json!({ "connection": "mail", "to": "a@example.com" }),
    );
    assert_eq!(error.path, ["from"], "{error}");

    // A database connection is not a mail server.
    let database = Connection {
        kind: "sqlite".into(),
        ..connection("mail", json!({ "path": "x.db" }))
    };
    let error = config_error(
        database,
        json!({ "connection": "mail", "to": "a@example.com" }),
    );
    assert!(error.message.contains("`sqlite` connection"), "{error}");
}

#[test]
fn bad_connections_name_their_key() {
    let registry = crate::registry();
    let factory = registry.connection_type("smtp").expect("registered");
    let dir = std::path::Path::new("/nonexistent");
    for (config, key) in [
        (json!({ "port": 25 }), "host"),
        (json!({ "host": "h", "tls": "ssl" }), "tls"),
        (json!({ "host": "h", "password": SECRET }), "password"),
        (json!({ "host": "h", "timeout": "soon" }), "timeout"),
        (json!({ "host": "h", "from": "nobody" }), "from"),
        (json!({ "host": "h", "ca_file": "missing.pem" }), "ca_file"),
        (
            json!({ "host": "h", "tls": "none", "ca_file": "x.pem" }),
            "ca_file",
        ),
        (json!({ "host": "h", "pasword": "x" }), "pasword"),
    ] {
        let error = factory
            .validate(&connection("mail", config.clone()), dir)
            .unwrap_err();
        let said = format!("{:?} {}", error.path, error.message);
        assert!(said.contains(key), "{config}: {said}");
        assert!(!said.contains(SECRET), "{said}");
    }
    // Ports follow the mode by default.
    let read = |config: Value| {
        super::SmtpConnection::read(&connection("mail", config), dir)
            .unwrap()
            .port
    };
    assert_eq!(read(json!({ "host": "h" })), 587);
    assert_eq!(read(json!({ "host": "h", "tls": "tls" })), 465);
    assert_eq!(read(json!({ "host": "h", "tls": "none" })), 25);
    let debug = format!(
        "{:?}",
        super::SmtpConnection::read(
            &connection(
                "mail",
                json!({ "host": "h", "user": "u", "password": SECRET })
            ),
            dir
        )
        .unwrap()
    );
    assert!(!debug.contains(SECRET), "{debug}");
}

#[tokio::test]
async fn the_smtp_connection_checks_as_the_spec_says() {
    let (host, port) = server();
    let good = connection(
        "mail",
        json!({ "host": host, "port": port, "tls": "none", "user": USER, "password": PASSWORD }),
    );
    let unreachable = connection(
        "mail",
        json!({ "host": "127.0.0.1", "port": 1, "tls": "none", "user": USER, "password": SECRET }),
    );
    crate::conformance::check_conforms(&crate::registry(), &good, &unreachable).await;
}

/// The harness's target: the test server's directory, read by recipient. A message pushed
/// again after a crash is a second copy in the mailbox; it carries the same Message-ID, by
/// which mail stores and readers drop it, so the target lists Message-IDs.
struct Mailbox {
    to: String,
}

#[async_trait::async_trait(?Send)]
impl crate::conformance::PusherUnderTest for Mailbox {
    fn pusher(&self) -> Box<dyn Pusher> {
        pusher(
            plain(),
            json!({ "connection": "mail", "to": ["{metadata.to}"] }),
        )
    }

    fn passengers(&self, count: usize) -> Vec<Passenger> {
        (0..count)
            .map(|index| {
                let mut passenger = order(&index.to_string());
                passenger.metadata.insert("to".into(), self.to.clone());
                passenger
            })
            .collect()
    }

    fn malformed(&self) -> Option<(Passenger, String)> {
        let mut passenger = order("bad");
        passenger.metadata.insert("to".into(), "@@".into());
        Some((passenger, "to.0".into()))
    }

    async fn delivered(&self) -> Vec<String> {
        let mut ids: Vec<String> = received(&self.to)
            .iter()
            .filter_map(|got| {
                let message = MessageParser::default().parse(&got.raw)?;
                message.message_id().map(str::to_string)
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn expected(&self, passengers: &[Passenger]) -> Vec<String> {
        passengers
            .iter()
            .map(|p| format!("{}.smtp@ferry", p.id))
            .collect()
    }

    fn unreachable(&self) -> Option<(Box<dyn Pusher>, String)> {
        let unreachable = connection(
            "mail",
            json!({ "host": "127.0.0.1", "port": 1, "tls": "none", "user": USER,
                    "password": SECRET, "from": "ferry@example.com" }),
        );
        Some((
            pusher(
                unreachable,
                json!({ "connection": "mail", "to": "a@example.com" }),
            ),
            "127.0.0.1:1".into(),
        ))
    }
}

#[tokio::test]
async fn the_smtp_pusher_conforms() {
    crate::conformance::pusher_conforms(&mut Mailbox {
        to: unique("conform"),
    })
    .await;
}

#[test]
fn every_role_knows_the_smtp_pusher() {
    assert!(crate::registry().knows(Role::Pusher, "smtp"));
}
