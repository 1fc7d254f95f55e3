//! The `imap` puller against the machine's Dovecot (`scripts/dovecot-test-server.sh`, started
//! by `scripts/test.sh`): every test makes its own user, so its own mailboxes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use ferry_core::config::Connection;
use ferry_core::{BuildContext, Puller, PullerFactory, Seated};
use futures::TryStreamExt;
use serde_json::{Value, json};

use super::config::ImapConnection;
use super::message::{Found, passenger, safe_name};
use super::puller::uid_set;
use super::*;
use crate::conformance::{self, PullerUnderTest, SECRET};

/// Dovecot's plain IMAP (with STARTTLS) port, its IMAPS port and its directory.
fn server() -> (String, u16, u16, String) {
    let host = std::env::var("FERRY_TEST_IMAP_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("FERRY_TEST_IMAP_PORT").map_or(1143, |p| p.parse().unwrap());
    let tls_port = std::env::var("FERRY_TEST_IMAPS_PORT").map_or(1993, |p| p.parse().unwrap());
    let dir = std::env::var("FERRY_TEST_IMAP_DIR").unwrap_or_else(|_| "/tmp/ferry-dovecot".into());
    (host, port, tls_port, dir)
}

/// A fresh mail user of the test Dovecot; its mailboxes are empty.
struct MailUser {
    user: String,
    password: String,
}

impl MailUser {
    fn new() -> MailUser {
        let (_, _, _, dir) = server();
        let user = format!("t{}@example.com", uuid::Uuid::now_v7().simple());
        let password = format!("pw-{}", uuid::Uuid::now_v7().simple());
        // One password file per user: Dovecot reads it at each login.
        std::fs::write(
            format!("{dir}/passwd/{user}"),
            format!("{user}:{{PLAIN}}{password}\n"),
        )
        .expect("the test Dovecot runs (scripts/dovecot-test-server.sh)");
        MailUser { user, password }
    }

    /// Its connection: plain IMAP on the local server.
    fn connection(&self, name: &str) -> Connection {
        let (host, port, _, _) = server();
        Connection {
            name: name.into(),
            kind: "imap".into(),
            config: json!({
                "host": host, "port": port, "security": "none",
                "user": self.user, "password": self.password, "timeout": "10s",
            })
            .as_object()
            .unwrap()
            .clone(),
            clients: vec!["acme".into()],
        }
    }

    async fn session(&self) -> session::Session {
        let connection = ImapConnection::read(&self.connection("test"), "/".as_ref()).unwrap();
        session::open(&connection).await.unwrap()
    }

    async fn append(&self, mailbox: &str, messages: &[Vec<u8>]) {
        let mut session = self.session().await;
        let _ = session.create(mailbox).await;
        for message in messages {
            session.append(mailbox, None, None, message).await.unwrap();
        }
        let _ = session.logout().await;
    }

    /// How many messages `mailbox` holds (0 when it does not exist).
    async fn count(&self, mailbox: &str) -> usize {
        let mut session = self.session().await;
        let count = match session.examine(mailbox).await {
            Ok(mailbox) => mailbox.exists as usize,
            Err(_) => 0,
        };
        let _ = session.logout().await;
        count
    }

    /// The flags of every message of `mailbox`, in UID order.
    async fn flags(&self, mailbox: &str) -> Vec<String> {
        let mut session = self.session().await;
        session.examine(mailbox).await.unwrap();
        let fetches: Vec<_> = session
            .fetch("1:*", "FLAGS")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        fetches
            .iter()
            .map(|fetch| format!("{:?}", fetch.flags().collect::<Vec<_>>()))
            .collect()
    }

    fn puller(&self, settings: Value) -> Box<dyn Puller> {
        let mut config = json!({ "connection": "mail", "idle": false });
        config
            .as_object_mut()
            .unwrap()
            .extend(settings.as_object().unwrap().clone());
        build(&self.connection("mail"), config).expect("a valid definition")
    }
}

fn build(
    connection: &Connection,
    config: Value,
) -> Result<Box<dyn Puller>, ferry_core::BuildError> {
    let ctx = BuildContext {
        client: "acme".into(),
        pipeline: "mail".into(),
        connections: Arc::new(BTreeMap::from([(
            connection.name.clone(),
            connection.clone(),
        )])),
        ..BuildContext::default()
    };
    let config = ferry_core::component::parse_config(&config)?;
    ImapPullerFactory.build(config, &ctx)
}

/// An e-mail with a text body and one XML attachment.
fn mail(id: &str, from: &str, attachment_name: &str) -> Vec<u8> {
    let xml = format!("<order id=\"{id}\"/>");
    let encoded = base64::engine::general_purpose::STANDARD.encode(xml);
    format!(
        "From: Partner <{from}>\r\nTo: orders@example.com\r\nCc: a@example.com, B <b@example.com>\r\n\
         Subject: Order {id}\r\nDate: Mon, 7 Dec 2026 10:00:00 +0300\r\nMessage-ID: <{id}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOrder {id} attached.\r\n\
         --b1\r\nContent-Type: application/xml; name=\"{attachment_name}\"\r\n\
         Content-Disposition: attachment; filename=\"{attachment_name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b1--\r\n"
    )
    .into_bytes()
}

fn order(id: &str) -> Vec<u8> {
    mail(id, "sales@partner.example", &format!("order-{id}.xml"))
}

async fn pull_all(puller: &mut dyn Puller) -> ferry_core::Pulled {
    let mut all = ferry_core::Pulled::default();
    for _ in 0..50 {
        let pulled = puller.pull(100).await.expect("pull");
        all.passengers.extend(pulled.passengers);
        all.failures.extend(pulled.failures);
        all.state = pulled.state.or(all.state);
        if !pulled.more {
            break;
        }
    }
    all
}

fn seated(pulled: &ferry_core::Pulled) -> Vec<Seated> {
    pulled
        .passengers
        .iter()
        .map(|p| Seated {
            source_system: p.source_system.clone(),
            external_id: p.external_id.clone(),
            duplicate: false,
        })
        .collect()
}

// ---- the message as a passenger (no server) ----

#[test]
fn a_message_becomes_a_passenger_with_metadata_body_and_attachments() {
    let found = Found {
        source_system: "imap:orders@example.com",
        mailbox: "INBOX",
        uid: 7,
    };
    let p = passenger(&mail("o-1", "sales@partner.example", "o-1.xml"), &found).unwrap();
    assert_eq!(p.external_id, "o-1@example.com");
    assert_eq!(p.source_system, "imap:orders@example.com");
    let meta = |key: &str| p.metadata.get(key).cloned().unwrap_or_default();
    assert_eq!(meta("mail.from"), "Partner <sales@partner.example>");
    assert_eq!(meta("mail.to"), "orders@example.com");
    assert_eq!(meta("mail.cc"), "a@example.com, B <b@example.com>");
    assert_eq!(meta("mail.subject"), "Order o-1");
    assert_eq!(meta("mail.date"), "2026-12-07T10:00:00+03:00");
    assert_eq!(meta("mail.mailbox"), "INBOX");
    assert_eq!(meta("mail.uid"), "7");
    assert!(p.body.media_type.starts_with("text/plain"));
    assert_eq!(p.body.data.as_ref(), b"Order o-1 attached.");
    assert_eq!(p.attachments.len(), 1);
    assert_eq!(p.attachments[0].name, "o-1.xml");
    assert_eq!(p.attachments[0].media_type, "application/xml");
    assert_eq!(p.attachments[0].content.as_ref(), b"<order id=\"o-1\"/>");
}

#[test]
fn attachment_names_lose_paths_and_control_characters() {
    assert_eq!(safe_name("../../x"), "x");
    assert_eq!(safe_name("..\\..\\windows\\evil.exe"), "evil.exe");
    assert_eq!(safe_name("/etc/passwd"), "passwd");
    assert_eq!(safe_name("a\u{0}b\r\nc.pdf"), "abc.pdf");
    assert_eq!(safe_name(".hidden"), "hidden");
    assert_eq!(safe_name("../.."), "");
    let found = Found {
        source_system: "imap:x",
        mailbox: "INBOX",
        uid: 1,
    };
    let p = passenger(&mail("o-2", "a@b.example", "../../x"), &found).unwrap();
    assert_eq!(p.attachments[0].name, "x");
    // A name that is not UTF-8 (raw Latin-1 bytes) is kept without the undecodable bytes.
    let mut raw = mail("o-3", "a@b.example", "NAME");
    while let Some(at) = raw.windows(4).position(|w| w == b"NAME") {
        raw.splice(at..at + 4, b"r\xe9sum\xe9.pdf".iter().copied());
    }
    let p = passenger(&raw, &found).unwrap();
    let name = &p.attachments[0].name;
    assert!(name.starts_with('r') && name.ends_with(".pdf"), "{name:?}");
    assert!(!name.contains('/') && !name.chars().any(char::is_control));
    // Only `../..`: a name made up from the position.
    let p = passenger(&mail("o-4", "a@b.example", "../.."), &found).unwrap();
    assert_eq!(p.attachments[0].name, "attachment-1");
}

#[test]
fn a_message_without_message_id_is_keyed_by_its_hash_and_garbage_is_refused() {
    let found = Found {
        source_system: "imap:x",
        mailbox: "INBOX",
        uid: 1,
    };
    let raw = b"From: a@example.com\r\nSubject: hi\r\n\r\n<p>no id</p>";
    let p = passenger(raw, &found).unwrap();
    assert!(p.external_id.starts_with("sha256:"), "{}", p.external_id);
    assert_eq!(passenger(raw, &found).unwrap().external_id, p.external_id);
    let error = passenger(b"\x00\x01\x02 this is no mail at all", &found).unwrap_err();
    assert!(error.contains("not a MIME message"), "{error}");
    let html =
        b"From: a@example.com\r\nMessage-ID: <h@x>\r\nContent-Type: text/html\r\n\r\n<b>hi</b>";
    let p = passenger(html, &found).unwrap();
    assert!(
        p.body.media_type.starts_with("text/html"),
        "{}",
        p.body.media_type
    );
}

#[test]
fn uid_sets_are_ranges() {
    assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    assert_eq!(uid_set(&[5]), "5");
}

#[test]
fn bad_definitions_name_their_key() {
    let user = MailUser::new();
    let connection = user.connection("mail");
    let error = |config: Value| {
        let error = build(&connection, config).err().expect("refused");
        format!("{}: {}", error.path.join("."), error.message)
    };
    let e = error(json!({ "connection": "mail", "after_seat": "archive" }));
    assert!(e.contains("after_seat") && e.contains("move_to"), "{e}");
    let e = error(json!({ "connection": "mail", "after_seat": { "move_to": "INBOX" } }));
    assert!(e.contains("after_seat.move_to"), "{e}");
    let e = error(json!({ "connection": "mail", "after_seat": { "flag": "\\Bogus x" } }));
    assert!(e.contains("after_seat.flag"), "{e}");
    let e = error(json!({ "connection": "mail", "after_seat": {} }));
    assert!(
        e.contains("after_seat: give `flag`, `move_to` or both"),
        "{e}"
    );
    let e = error(json!({ "connection": "mail", "idle": "10m" }));
    assert!(e.contains("idle"), "{e}");
    let e = error(json!({ "connection": "mail", "max_size": "lots" }));
    assert!(e.contains("max_size"), "{e}");
    let e = error(json!({ "connection": "mail", "search": "UNSEEN\r\nDELETE INBOX" }));
    assert!(e.contains("search"), "{e}");
    let e = error(json!({ "connection": "nope" }));
    assert!(e.contains("unknown connection `nope`"), "{e}");
    let mut other = connection.clone();
    other.kind = "postgres".into();
    let e = build(&other, json!({ "connection": "mail" }))
        .err()
        .unwrap()
        .message;
    assert!(e.contains("is a `postgres` connection"), "{e}");
    let mut no_password = connection.clone();
    no_password.config.remove("password");
    let e = ImapConnection::read(&no_password, "/".as_ref()).unwrap_err();
    assert_eq!(e.path, ["password"], "{}", e.message);
    let e = error(json!({ "connection": "mail", "max_size": "0KB" }));
    assert!(e.contains("max_size: must be above 0"), "{e}");
}

// ---- against Dovecot ----

/// The conformance adapter: INBOX, moved to Archive once seated.
struct Mailbox {
    user: MailUser,
}

#[async_trait::async_trait(?Send)]
impl PullerUnderTest for Mailbox {
    async fn fill(&mut self, good: usize) -> Option<String> {
        // The malformed message comes first, so it is UID 1.
        let mut messages = vec![b"\x00\x01 not a message".to_vec()];
        messages.extend((1..=good).map(|i| order(&format!("c{i}"))));
        self.user.append("INBOX", &messages).await;
        Some("UID 1 in INBOX".into())
    }

    fn puller(&self) -> Box<dyn Puller> {
        self.user
            .puller(json!({ "after_seat": { "move_to": "Archive" } }))
    }

    async fn remaining(&self) -> Option<usize> {
        Some(self.user.count("INBOX").await)
    }

    fn unreachable(&self) -> Option<(Box<dyn Puller>, String)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut connection = self.user.connection("mail");
        connection.config.insert("port".into(), json!(port));
        connection.config.insert("password".into(), json!(SECRET));
        let puller = build(&connection, json!({ "connection": "mail", "idle": false })).unwrap();
        Some((puller, "`mail`".into()))
    }
}

#[tokio::test]
async fn the_imap_puller_conforms() {
    let mut mailbox = Mailbox {
        user: MailUser::new(),
    };
    conformance::puller_conforms(&mut mailbox).await;
    assert_eq!(
        mailbox.user.count("Archive").await,
        5,
        "every good message archived"
    );
}

#[tokio::test]
async fn the_imap_connection_check_conforms() {
    let user = MailUser::new();
    let good = user.connection("mail");
    let mut unreachable = user.connection("mail-down");
    unreachable.config.insert("port".into(), json!(1));
    unreachable.config.insert("password".into(), json!(SECRET));
    conformance::check_conforms(&crate::registry(), &good, &unreachable).await;
    // A wrong password is refused with the server's answer, not the password.
    let mut wrong = user.connection("mail-wrong");
    wrong.config.insert("password".into(), json!(SECRET));
    let error = crate::registry()
        .check_connection(&wrong, "/".as_ref())
        .await
        .unwrap_err();
    assert!(
        error.contains("login as") && !error.contains(SECRET),
        "{error}"
    );
}

#[tokio::test]
async fn search_picks_messages_and_flag_marks_them_seen_after_seat() {
    let user = MailUser::new();
    user.append(
        "INBOX",
        &[
            order("p1"),
            mail("x1", "spam@elsewhere.example", "x.xml"),
            order("p2"),
        ],
    )
    .await;
    let settings = json!({
        "search": "FROM \"@partner.example\"",
        "after_seat": { "flag": "SEEN" },
    });
    let mut puller = user.puller(settings.clone());
    let pulled = pull_all(puller.as_mut()).await;
    let ids: Vec<_> = pulled
        .passengers
        .iter()
        .map(|p| p.external_id.as_str())
        .collect();
    assert_eq!(ids, ["p1@example.com", "p2@example.com"]);
    assert!(
        user.flags("INBOX")
            .await
            .iter()
            .all(|f| !f.contains("Seen")),
        "not before ack"
    );
    puller.ack(&seated(&pulled)).await.unwrap();
    let flags = user.flags("INBOX").await;
    assert!(
        flags[0].contains("Seen") && flags[2].contains("Seen"),
        "{flags:?}"
    );
    assert!(
        !flags[1].contains("Seen"),
        "the other message is untouched: {flags:?}"
    );

    // A new run from the seated state (which lists them as pending: the ack came after the
    // commit) sees them flagged, so it does not offer them again; a new message is found.
    let mut again = user.puller(settings);
    again.restore(pulled.state.clone());
    assert!(pull_all(again.as_mut()).await.passengers.is_empty());
    user.append("INBOX", &[order("p3")]).await;
    let next = pull_all(again.as_mut()).await;
    assert_eq!(next.passengers.len(), 1);
    assert_eq!(next.passengers[0].external_id, "p3@example.com");
}

#[tokio::test]
async fn delete_after_seat_and_several_mailboxes() {
    let user = MailUser::new();
    user.append("INBOX", &[order("d1")]).await;
    user.append("Partners", &[order("d2"), order("d3")]).await;
    let mut puller = user.puller(json!({
        "mailboxes": ["INBOX", "Partners"],
        "after_seat": "delete",
    }));
    let pulled = pull_all(puller.as_mut()).await;
    let mut ids: Vec<_> = pulled
        .passengers
        .iter()
        .map(|p| p.metadata["mail.mailbox"].clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["INBOX", "Partners", "Partners"]);
    puller.ack(&seated(&pulled)).await.unwrap();
    assert_eq!(user.count("INBOX").await, 0);
    assert_eq!(user.count("Partners").await, 0);
}

#[tokio::test]
async fn an_oversized_message_fails_alone_with_its_size() {
    let user = MailUser::new();
    let mut big = order("big");
    let padding = "x".repeat(76);
    big.splice(
        big.len() - 6..big.len() - 6,
        (0..100).flat_map(|_| format!("{padding}\r\n").into_bytes()),
    );
    user.append("INBOX", &[order("s1"), big.clone(), order("s2")])
        .await;
    let mut puller =
        user.puller(json!({ "max_size": "4KiB", "after_seat": { "move_to": "Done" } }));
    let pulled = pull_all(puller.as_mut()).await;
    assert_eq!(pulled.passengers.len(), 2);
    assert_eq!(pulled.failures.len(), 1);
    let failure = &pulled.failures[0];
    assert!(!failure.error.retryable);
    assert!(
        failure.error.message.contains("UID 2 in INBOX")
            && failure.error.message.contains("over max_size (4096 bytes)"),
        "{}",
        failure.error
    );
    puller.ack(&seated(&pulled)).await.unwrap();
    assert_eq!(user.count("INBOX").await, 1, "the big one stays");
    assert_eq!(user.count("Done").await, 2);
}

#[tokio::test]
async fn a_recreated_mailbox_is_read_again_and_keyed_by_message_id() {
    let user = MailUser::new();
    user.append("Orders", &[order("v1"), order("v2")]).await;
    let settings = json!({ "mailboxes": ["Orders"] });
    let mut puller = user.puller(settings.clone());
    let first = pull_all(puller.as_mut()).await;
    assert_eq!(first.passengers.len(), 2);
    let state: Value = serde_json::from_str(first.state.as_deref().unwrap()).unwrap();
    let validity = state["Orders"]["validity"].as_u64().unwrap();

    // The mailbox is deleted and made again (a restore, a migration): new UIDVALIDITY.
    let mut session = user.session().await;
    session.delete("Orders").await.unwrap();
    drop(session);
    user.append("Orders", &[order("v1"), order("v2"), order("v3")])
        .await;

    let mut restarted = user.puller(settings);
    restarted.restore(first.state.clone());
    let second = pull_all(restarted.as_mut()).await;
    let ids: Vec<_> = second
        .passengers
        .iter()
        .map(|p| p.external_id.as_str())
        .collect();
    // Re-read from the start under the same keys: the queue drops v1 and v2.
    assert_eq!(ids, ["v1@example.com", "v2@example.com", "v3@example.com"]);
    let state: Value = serde_json::from_str(second.state.as_deref().unwrap()).unwrap();
    assert_ne!(state["Orders"]["validity"].as_u64().unwrap(), validity);
    assert_eq!(state["Orders"]["last"], 3);
}

#[tokio::test]
async fn idle_wakes_a_pull_when_mail_arrives() {
    let user = MailUser::new();
    let mut puller = user.puller(json!({ "idle": "20s" }));
    // The first pull opens the session and, finding nothing, waits in IDLE.
    let arriving = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        user.append("INBOX", &[order("i1")]).await;
    };
    let started = Instant::now();
    let (pulled, ()) = tokio::join!(puller.pull(10), arriving);
    let pulled = pulled.unwrap();
    assert_eq!(pulled.passengers.len(), 1, "{pulled:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Without new mail the wait ends after `idle` with nothing.
    let mut short = user.puller(json!({ "idle": "1s" }));
    short.restore(pulled.state);
    let started = Instant::now();
    let none = short.pull(10).await.unwrap();
    assert!(none.passengers.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn tls_and_starttls_with_the_servers_certificate() {
    let user = MailUser::new();
    user.append("INBOX", &[order("t1")]).await;
    let (_, port, tls_port, _) = server();
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    for (security, port) in [("tls", tls_port), ("starttls", port)] {
        let mut connection = user.connection("mail");
        connection.config.insert("host".into(), json!("localhost"));
        connection.config.insert("port".into(), json!(port));
        connection.config.insert("security".into(), json!(security));
        connection.config.insert("ca_file".into(), json!(snakeoil));
        let mut puller =
            build(&connection, json!({ "connection": "mail", "idle": false })).unwrap();
        let pulled = puller
            .pull(10)
            .await
            .unwrap_or_else(|e| panic!("{security}: {e}"));
        assert_eq!(pulled.passengers.len(), 1, "{security}");
        // Without the server's authority the certificate is refused, retryably, named.
        connection.config.remove("ca_file");
        let mut puller =
            build(&connection, json!({ "connection": "mail", "idle": false })).unwrap();
        let error = puller.pull(10).await.unwrap_err();
        assert!(error.retryable, "{error}");
        assert!(
            error.message.contains("TLS") && error.message.contains("`mail`"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn nothing_is_seated_twice_after_a_crash_between_seat_and_ack() {
    let user = MailUser::new();
    user.append(
        "INBOX",
        &(1..=4).map(|i| order(&format!("k{i}"))).collect::<Vec<_>>(),
    )
    .await;
    let settings = json!({ "after_seat": { "flag": "SEEN", "move_to": "Archive" } });
    let mut crashed = user.puller(settings.clone());
    let first = crashed.pull(3).await.unwrap();
    assert_eq!(first.passengers.len(), 3);
    drop(crashed); // killed before its ack: INBOX still holds all four
    assert_eq!(user.count("INBOX").await, 4);

    let mut restarted = user.puller(settings);
    restarted.restore(first.state.clone());
    let again = pull_all(restarted.as_mut()).await;
    let ids: Vec<_> = again
        .passengers
        .iter()
        .map(|p| p.external_id.as_str())
        .collect();
    // The three seated ones come again (the queue drops them), then the fourth.
    assert_eq!(
        ids,
        [
            "k1@example.com",
            "k2@example.com",
            "k3@example.com",
            "k4@example.com"
        ]
    );
    restarted.ack(&seated(&again)).await.unwrap();
    assert_eq!(user.count("INBOX").await, 0);
    assert_eq!(user.count("Archive").await, 4);
    let flags = user.flags("Archive").await;
    assert!(
        flags.iter().all(|f| f.contains("Seen")),
        "flagged, then moved: {flags:?}"
    );
}

#[tokio::test]
async fn a_crash_after_the_move_does_not_offer_the_moved_messages_again() {
    let user = MailUser::new();
    user.append("INBOX", &[order("m1"), order("m2")]).await;
    let settings = json!({ "after_seat": { "move_to": "Archive" } });
    let mut first = user.puller(settings.clone());
    let pulled = first.pull(10).await.unwrap();
    first.ack(&seated(&pulled)).await.unwrap();
    // The state seated still lists them as pending: the ack happened after the commit.
    let mut restarted = user.puller(settings);
    restarted.restore(pulled.state.clone());
    let again = restarted.pull(10).await.unwrap();
    assert!(again.passengers.is_empty(), "{again:?}");
    let state: Value = serde_json::from_str(again.state.as_deref().unwrap()).unwrap();
    assert!(state["INBOX"].get("pending").is_none(), "{state}");
}

/// A token endpoint (client credentials) and the introspection endpoint Dovecot asks about
/// XOAUTH2 logins (scripts/dovecot-test-server.sh), on the port Dovecot is configured with.
struct OAuthServer {
    fetched: Arc<std::sync::atomic::AtomicUsize>,
    revoked: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OAuthServer {
    async fn start(user: &str) -> OAuthServer {
        use axum::body::Body as AxumBody;
        use axum::extract::Request;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let port: u16 =
            std::env::var("FERRY_TEST_IMAP_OAUTH_PORT").map_or(18931, |p| p.parse().unwrap());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the XOAUTH2 introspection port is free (one such test at a time)");
        let fetched = Arc::new(AtomicUsize::new(0));
        let revoked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (count, gone, user) = (fetched.clone(), revoked.clone(), user.to_string());
        let app = axum::Router::new().fallback(move |request: Request| {
            let (count, gone, user) = (count.clone(), gone.clone(), user.clone());
            async move {
                let path = request.uri().path().to_string();
                let auth = request
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let form: BTreeMap<String, String> = String::from_utf8_lossy(&body)
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let json = match path.as_str() {
                    "/token" => {
                        let basic = base64::engine::general_purpose::STANDARD
                            .encode(format!("ferry:{SECRET}"));
                        assert_eq!(auth, Some(format!("Basic {basic}")), "client credentials");
                        assert_eq!(form.get("grant_type").map(String::as_str), Some("client_credentials"));
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        json!({ "access_token": format!("tok{n}"), "token_type": "bearer", "expires_in": 3600 })
                    }
                    "/introspect" => {
                        let token = form.get("token").cloned().unwrap_or_default();
                        let active = token.starts_with("tok") && !gone.lock().unwrap().contains(&token);
                        json!({ "active": active, "username": user })
                    }
                    _ => json!({}),
                };
                axum::response::Response::builder()
                    .header("content-type", "application/json")
                    .body(AxumBody::from(json.to_string()))
                    .unwrap()
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        OAuthServer {
            fetched,
            revoked,
            task,
        }
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn xoauth2_logs_in_with_a_client_credentials_token() {
    let user = MailUser::new();
    user.append("INBOX", &[order("x1")]).await;
    let server = OAuthServer::start(&user.user).await;
    let port: u16 =
        std::env::var("FERRY_TEST_IMAP_OAUTH_PORT").map_or(18931, |p| p.parse().unwrap());
    let mut connection = user.connection("mail");
    connection.config.remove("password");
    connection.config.insert(
        "oauth2".into(),
        json!({
            "token_url": format!("http://127.0.0.1:{port}/token"),
            "client_id": "ferry", "client_secret": SECRET, "scopes": ["imap"],
        }),
    );
    // The first token the server is asked about is revoked: that login fails retryably, without
    // a secret, and the next one fetches a new token.
    server.revoked.lock().unwrap().push("tok1".into());
    let mut puller = build(&connection, json!({ "connection": "mail", "idle": false })).unwrap();
    let error = puller.pull(10).await.unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(
        error.message.contains("XOAUTH2") && error.message.contains("`mail`"),
        "{error}"
    );
    assert!(!error.message.contains(SECRET), "{error}");
    let pulled = puller.pull(10).await.expect("logged in with a new token");
    assert_eq!(pulled.passengers.len(), 1);
    assert_eq!(server.fetched.load(std::sync::atomic::Ordering::SeqCst), 2);
}
