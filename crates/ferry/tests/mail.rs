//! Issue 14: e-mail to HTTP through the real `ferry` binary. Messages with attachments in a
//! Dovecot mailbox (`scripts/dovecot-test-server.sh`), the `imap` puller, `split` with
//! `attachments: true` and the `http` pusher to a real HTTP server in the test that counts
//! requests and de-duplicates them by `Idempotency-Key`: two `kill -9`s lose and double
//! nothing, and bad mail (not MIME, hostile or undecodable attachment names, over the size
//! bound, refused by the target) fails alone while the rest flows.
//!
//! The mailboxes are read and filled with Python's `imaplib`, a real IMAP client of its own.

mod mailbox;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use mailbox::MailUser;
use support::{Project, open_counts, start, stdout, until, wait_until};

/// An order mail: subject `Order ID`, a text part and `attachments`.
fn message(id: &str, attachments: &[(&[u8], &str, &[u8])]) -> Vec<u8> {
    mailbox::message(id, &format!("Order {id}"), attachments)
}

fn order_xml(n: usize) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<order n=\"{n}\"><line sku=\"A-{n}\" qty=\"{}\"/></order>\n",
        n % 7 + 1
    )
    .into_bytes()
}

/// A small binary that looks like a PDF, different for each `n`, with bytes that are not text.
fn order_pdf(n: usize) -> Vec<u8> {
    let mut pdf = format!("%PDF-1.4\n% order {n}\n").into_bytes();
    pdf.extend((0..64u32).map(|i| ((i * 31 + n as u32 * 7) % 256) as u8));
    pdf.extend_from_slice(b"\n%%EOF\n");
    pdf
}

// ---- the HTTP endpoint ----

/// One request the endpoint received.
#[derive(Clone, Debug)]
struct Request {
    key: String,
    name: String,
    message: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Received {
    requests: Vec<Request>,
    /// Requests whose attachment name holds this are answered 422.
    refuse: Option<String>,
}

type Shared = Arc<Mutex<Received>>;

/// `a%2Fb+c` → `a/b c`, as bytes.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn query_value(uri: &Uri, key: &str) -> String {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| {
            String::from_utf8(percent_decode(v))
                .unwrap_or_else(|e| panic!("`{key}` is not UTF-8: {e}"))
        })
        .unwrap_or_default()
}

async fn receive(
    State(shared): State<(Shared, Duration)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (received, delay) = shared;
    let request = Request {
        key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        name: query_value(&uri, "name"),
        message: query_value(&uri, "message"),
        body: body.to_vec(),
    };
    let refused = {
        let mut received = received.lock().unwrap();
        let refused = received
            .refuse
            .as_ref()
            .is_some_and(|word| request.name.contains(word.as_str()));
        received.requests.push(request.clone());
        refused
    };
    // A slow target, so a kill can find requests in flight.
    tokio::time::sleep(delay).await;
    if refused {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unprocessable: attachment {} is not an order", request.name),
        );
    }
    (StatusCode::OK, "{\"stored\":true}".into())
}

/// An HTTP server on a free port answering every POST after `delay`; its URL and what it got.
fn endpoint(delay: Duration, refuse: Option<&str>) -> (String, Shared) {
    let shared = Shared::default();
    shared.lock().unwrap().refuse = refuse.map(str::to_string);
    let app = axum::Router::new()
        .route("/in", axum::routing::post(receive))
        .with_state((shared.clone(), delay));
    let url = format!("{}/in", support::serve(app));
    (url, shared)
}

/// Distinct idempotency keys received so far.
fn distinct_keys(shared: &Shared) -> usize {
    let received = shared.lock().unwrap();
    received
        .requests
        .iter()
        .map(|r| r.key.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

// ---- the project ----

/// The pipeline `acme/mail`: INBOX, moved to Archive and flagged seen once seated, split into
/// its attachments, each posted to `url` with its name and its message's id in the query.
/// `throttle` (pipeline keys) is written at the top.
fn pipeline(url: &str, throttle: &str) -> String {
    format!(
        r#"
schedule: continuous
{throttle}
pullers:
  - type: imap
    connection: mail
    idle: false
    after_seat: {{ flag: SEEN, move_to: Archive }}
processors:
  - type: split
    attachments: true
pushers:
  - type: http
    url: "{url}"
    concurrency: 4
    retries: 2
    query: {{ name: "{{metadata.split.name}}", message: "{{metadata.mail.message_id}}" }}
"#
    )
}

// ---- the tests ----

#[test]
fn five_hundred_mails_with_attachments_survive_two_kills() {
    const MAILS: usize = 500;
    // Pulls of 20 messages, and none while 100 passengers (messages or attachments) are
    // unfinished: pulling and pushing go on side by side, so both kills find both at work.
    const THROTTLE: &str = "batch_size: 20\nqueue_limit: 100";
    let started = Instant::now();
    let user = MailUser::new();
    let mut expected: BTreeMap<Vec<u8>, (String, String)> = BTreeMap::new();
    let messages: Vec<Vec<u8>> = (0..MAILS)
        .map(|n| {
            let id = format!("order-{n:04}");
            let (xml, pdf) = (order_xml(n), order_pdf(n));
            let xml_name = format!("{id}.xml");
            let pdf_name = format!("{id}.pdf");
            let message_id = format!("{id}@partner.example");
            expected.insert(xml.clone(), (xml_name.clone(), message_id.clone()));
            expected.insert(pdf.clone(), (pdf_name.clone(), message_id));
            message(
                &id,
                &[
                    (xml_name.as_bytes(), "application/xml", &xml),
                    (pdf_name.as_bytes(), "application/pdf", &pdf),
                ],
            )
        })
        .collect();
    assert_eq!(expected.len(), 2 * MAILS, "every attachment is unique");
    user.append("INBOX", &messages);
    eprintln!("{MAILS} messages appended in {:?}", started.elapsed());

    let (url, received) = endpoint(Duration::from_millis(25), None);
    let project = Project::new(
        "queue_life_span: 1d\n",
        &[("mail", &pipeline(&url, THROTTLE))],
    );
    project.write("connections.yaml", &user.connections());
    let total = 2 * MAILS;

    // The first kill: while pulling, some messages archived and others still in INBOX.
    let mut first = start(&project);
    wait_until(
        &project,
        first.child(),
        "100 messages archived",
        Duration::from_secs(60),
        || {
            let archived = user.status("Archive").0;
            until(archived >= 100, archived)
        },
    );
    first.kill_9();
    let archived = user.status("Archive").0;
    eprintln!(
        "first kill at {:?}: {archived} archived, {} attachments received",
        started.elapsed(),
        distinct_keys(&received)
    );
    assert!(archived < MAILS, "the first kill must come while pulling");

    // The second: while pushing, with requests in flight.
    let mut second = start(&project);
    wait_until(
        &project,
        second.child(),
        "30% of the attachments received",
        Duration::from_secs(60),
        || {
            let keys = distinct_keys(&received);
            until(keys >= total * 3 / 10, keys)
        },
    );
    second.kill_9();
    let pushed = distinct_keys(&received);
    eprintln!(
        "second kill at {:?}: {pushed} attachments received, {} archived",
        started.elapsed(),
        user.status("Archive").0
    );
    assert!(
        pushed <= total * 7 / 10,
        "the second kill must come while pushing: {pushed} of {total} already received"
    );

    let mut third = start(&project);
    wait_until(
        &project,
        third.child(),
        "every attachment received",
        Duration::from_secs(90),
        || {
            let keys = distinct_keys(&received);
            until(keys >= total, keys)
        },
    );
    wait_until(
        &project,
        third.child(),
        "nothing left open",
        Duration::from_secs(30),
        || {
            let counts = open_counts(&project, "mail");
            until(counts == ["0", "0", "0", "0"], counts)
        },
    );
    assert!(third.terminate(), "{}", project.log());
    eprintln!("done at {:?}", started.elapsed());

    let requests = received.lock().unwrap().requests.clone();
    // By idempotency key: the same attachment each time a key came again.
    let mut by_key: BTreeMap<&str, &Request> = BTreeMap::new();
    for request in &requests {
        assert!(!request.key.is_empty(), "a request without Idempotency-Key");
        if let Some(before) = by_key.insert(&request.key, request) {
            assert_eq!(
                before.body, request.body,
                "key {} came again with another attachment",
                request.key
            );
        }
    }
    eprintln!(
        "{} requests, {} distinct keys ({} sent again after a kill)",
        requests.len(),
        by_key.len(),
        requests.len() - by_key.len()
    );
    assert_eq!(by_key.len(), total, "one key per attachment");
    // No attachment arrived under two keys: that would be a passenger made twice.
    let mut by_content: BTreeMap<&[u8], Vec<&str>> = BTreeMap::new();
    for (key, request) in &by_key {
        by_content.entry(&request.body).or_default().push(key);
    }
    let doubled: Vec<_> = by_content.values().filter(|keys| keys.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "attachments under two keys: {doubled:?}"
    );
    // Every attachment exactly once, with its name and its message's id.
    let arrived: BTreeMap<Vec<u8>, (String, String)> = by_key
        .values()
        .map(|r| (r.body.clone(), (r.name.clone(), r.message.clone())))
        .collect();
    assert_eq!(arrived.len(), expected.len());
    for (content, (name, message_id)) in &expected {
        let got = arrived.get(content);
        assert_eq!(
            got,
            Some(&(name.clone(), message_id.clone())),
            "attachment {name} of {message_id}"
        );
    }

    let (inbox, _) = user.status("INBOX");
    let (archive, unseen) = user.status("Archive");
    assert_eq!(inbox, 0, "INBOX is empty");
    assert_eq!(archive, MAILS, "every message in Archive");
    assert_eq!(unseen, 0, "no message in Archive is left unseen");
}

#[test]
fn bad_mail_fails_alone_and_the_rest_flows() {
    let user = MailUser::new();
    // The 50 MB one: a text body of 50 MiB, over the default max_size of 25MB.
    let mut big = b"From: Partner <sales@partner.example>\r\nTo: orders@example.com\r\n\
        Subject: huge\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <big@partner.example>\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        .to_vec();
    let line = format!("{}\r\n", "x".repeat(76));
    while big.len() < 50 * 1024 * 1024 {
        big.extend_from_slice(line.as_bytes());
    }
    let big_size = big.len();
    let messages = vec![
        // UID 1: no header at all.
        b"\x00\x01\x02 this is no mail at all\r\n".to_vec(),
        // UID 2: an attachment that names a path out of any folder.
        message("path", &[(b"../../x", "application/xml", b"<x/>")]),
        // UID 3: an attachment name of raw Latin-1 bytes (invalid UTF-8).
        message(
            "latin1",
            &[(b"r\xe9sum\xe9.pdf", "application/pdf", b"%PDF-1.4 resume")],
        ),
        // UID 4: over the bound.
        big,
        // UID 5: one attachment the target refuses with 422, and one it takes.
        message(
            "refused",
            &[
                (b"reject-me.xml", "application/xml", b"<bad/>"),
                (b"fine.xml", "application/xml", b"<fine/>"),
            ],
        ),
        // UIDs 6–8: good ones.
        message(
            "good-1",
            &[(b"good-1.xml", "application/xml", b"<good n=\"1\"/>")],
        ),
        message(
            "good-2",
            &[(b"good-2.xml", "application/xml", b"<good n=\"2\"/>")],
        ),
        message(
            "good-3",
            &[(b"good-3.xml", "application/xml", b"<good n=\"3\"/>")],
        ),
    ];
    user.append("INBOX", &messages);

    let (url, received) = endpoint(Duration::ZERO, Some("reject"));
    let project = Project::new("queue_life_span: 1d\n", &[("mail", &pipeline(&url, ""))]);
    project.write("connections.yaml", &user.connections());
    let dir = project.path().to_str().unwrap().to_string();
    let mut child = start(&project);

    let quarantined = || stdout(&project.ferry(&["queue", "-C", &dir, "quarantined"]));
    wait_until(
        &project,
        child.child(),
        "two quarantined messages",
        Duration::from_secs(60),
        || {
            let listed = quarantined();
            until(
                listed.lines().filter(|l| l.starts_with('#')).count() == 2,
                listed,
            )
        },
    );
    wait_until(
        &project,
        child.child(),
        "the passengers settled",
        Duration::from_secs(60),
        || {
            let (counts, archive) = (open_counts(&project, "mail"), user.status("Archive"));
            until(
                counts == ["0", "0", "0", "1"] && archive.0 == 6,
                (counts, archive),
            )
        },
    );

    // The good attachments, and those with names made safe, arrived once each.
    let requests = received.lock().unwrap().requests.clone();
    let mut names: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
    names.sort();
    let latin1 = names
        .iter()
        .find(|n| n.starts_with('r') && n.ends_with(".pdf"))
        .cloned()
        .unwrap_or_else(|| panic!("the Latin-1 name did not arrive: {names:?}"));
    assert!(
        !latin1
            .chars()
            .any(|c| c.is_control() || c == '\u{fffd}' || c == '/'),
        "{latin1:?}"
    );
    let mut wanted = vec![
        "fine.xml".to_string(),
        "good-1.xml".into(),
        "good-2.xml".into(),
        "good-3.xml".into(),
        latin1.clone(),
        "reject-me.xml".into(),
        "x".into(),
    ];
    wanted.sort();
    assert_eq!(names, wanted, "each attachment requested once");
    for request in &requests {
        assert!(!request.name.contains('/'), "{request:?}");
    }
    let x = requests.iter().find(|r| r.name == "x").unwrap();
    assert_eq!(x.body, b"<x/>");
    assert_eq!(x.message, "path@partner.example");
    let resume = requests.iter().find(|r| r.name == latin1).unwrap();
    assert_eq!(resume.body, b"%PDF-1.4 resume");

    eprintln!("the Latin-1 name arrived as {latin1:?}");
    // The two that cannot be pulled are quarantined, named by UID and size, and stay in INBOX.
    let listed = quarantined();
    assert!(
        listed.contains("INBOX/1")
            && listed.contains("message UID 1 in INBOX")
            && listed.contains("not a MIME message"),
        "{listed}"
    );
    assert!(
        listed.contains("INBOX/4")
            && listed.contains(&format!("message UID 4 in INBOX is {big_size} bytes"))
            && listed.contains("over max_size (26214400 bytes)"),
        "{listed}"
    );
    eprintln!("{listed}");
    let status = stdout(&project.ferry(&["status", &dir]));
    assert!(status.matches("quarantined #").count() == 2, "{status}");
    assert_eq!(
        user.status("INBOX").0,
        2,
        "the malformed and the big one stay"
    );
    assert_eq!(user.status("Archive"), (6, 0), "the others archived, seen");

    // The refused attachment is dead with the status and the answer in its error.
    let dead = stdout(&project.ferry(&["queue", "-C", &dir, "list", "--state", "dead"]));
    let id = dead
        .lines()
        .find(|l| l.contains("acme/mail"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dead passenger: {dead}"))
        .to_string();
    assert!(dead.contains("refused@partner.example"), "{dead}");
    let shown = stdout(&project.ferry(&["queue", "-C", &dir, "show", &id]));
    eprintln!("{shown}");
    assert!(
        shown.contains("422")
            && shown.contains("unprocessable: attachment reject-me.xml is not an order"),
        "{shown}"
    );
    assert!(child.terminate(), "{}", project.log());
}

#[test]
fn a_pull_waiting_in_idle_does_not_hold_up_shutdown() {
    let user = MailUser::new();
    let project = Project::new(
        "queue_life_span: 1d\n",
        &[(
            "mail",
            "schedule: continuous\n\
             pullers:\n  - { type: imap, connection: mail, idle: 4m }\n\
             pushers:\n  - { type: blackhole }\n",
        )],
    );
    project.write("connections.yaml", &user.connections());
    let ferry = start(&project);
    // The first pull finds the empty INBOX and waits in IDLE (up to 4 minutes).
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    assert!(ferry.terminate(), "a clean exit:\n{}", project.log());
    // Well within the 10 s grace: the waiting pull was given up, not waited for.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}:\n{}",
        started.elapsed(),
        project.log()
    );
}
