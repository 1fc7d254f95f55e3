//! The test Dovecot (`scripts/dovecot-test-server.sh`) for the binary's e-mail tests: a fresh
//! user per test, its mailboxes filled and read through Python's imaplib (a real IMAP
//! client), and messages to put in them.

#![allow(dead_code)]

use std::process::Command;

use base64::Engine;

pub fn imap_dir() -> String {
    std::env::var("FERRY_TEST_IMAP_DIR").unwrap_or_else(|_| "/tmp/ferry-dovecot".into())
}

pub fn imap_host() -> String {
    std::env::var("FERRY_TEST_IMAP_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub fn imap_port() -> u16 {
    std::env::var("FERRY_TEST_IMAP_PORT").map_or(1143, |p| p.parse().unwrap())
}

/// `append USER PASSWORD MAILBOX DIR`: every file of DIR, in name order, as one message;
/// `status USER PASSWORD MAILBOX`: `MESSAGES UNSEEN` (`0 0` when the mailbox does not exist).
const IMAPLIB: &str = r#"
import imaplib, os, re, sys
op, user, password, mailbox = sys.argv[1:5]
m = imaplib.IMAP4(os.environ["HOST"], int(os.environ["PORT"]))
m.login(user, password)
if op == "append":
    m.create(mailbox)
    folder = sys.argv[5]
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        typ, answer = m.append(mailbox, None, None, data)
        assert typ == "OK", (name, answer)
elif op == "status":
    typ, answer = m.status(mailbox, "(MESSAGES UNSEEN)")
    if typ != "OK":
        print("0 0")
    else:
        text = answer[0].decode()
        messages = re.search(r"MESSAGES (\d+)", text).group(1)
        unseen = re.search(r"UNSEEN (\d+)", text).group(1)
        print(messages, unseen)
m.logout()
"#;

/// A fresh user of the test Dovecot: its mailboxes are empty.
pub struct MailUser {
    pub user: String,
    pub password: String,
}

impl MailUser {
    pub fn new() -> MailUser {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let user = format!("mail{}x{nanos}@example.com", std::process::id());
        let password = format!("pw-{nanos}");
        std::fs::write(
            format!("{}/passwd/{user}", imap_dir()),
            format!("{user}:{{PLAIN}}{password}\n"),
        )
        .expect("the test Dovecot runs (scripts/dovecot-test-server.sh)");
        MailUser { user, password }
    }

    pub fn imaplib(&self, args: &[&str]) -> String {
        let output = Command::new("python3")
            .arg("-c")
            .arg(IMAPLIB)
            .arg(args[0])
            .arg(&self.user)
            .arg(&self.password)
            .args(&args[1..])
            .env("HOST", imap_host())
            .env("PORT", imap_port().to_string())
            .output()
            .expect("python3");
        assert!(
            output.status.success(),
            "imaplib {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Appends `messages` to `mailbox`, in order (so the first gets the lowest UID).
    pub fn append(&self, mailbox: &str, messages: &[Vec<u8>]) {
        let dir = tempfile::tempdir().unwrap();
        for (n, message) in messages.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{n:06}.eml")), message).unwrap();
        }
        self.imaplib(&["append", mailbox, dir.path().to_str().unwrap()]);
    }

    /// How many messages `mailbox` holds, and how many of them are not `\Seen`.
    pub fn status(&self, mailbox: &str) -> (usize, usize) {
        let text = self.imaplib(&["status", mailbox]);
        let mut numbers = text.split_whitespace().map(|n| n.parse().unwrap());
        (numbers.next().unwrap(), numbers.next().unwrap())
    }

    /// connections.yaml with this user's mailbox as `mail`, granted to `acme`.
    pub fn connections(&self) -> String {
        format!(
            "mail: {{ type: imap, host: \"{}\", port: {}, security: none, user: \"{}\", \
             password: \"{}\", timeout: 20s, clients: [acme] }}\n",
            imap_host(),
            imap_port(),
            self.user,
            self.password
        )
    }
}

/// The user and its mail (50 MB in one test) go when the test ends, also when it fails.
impl Drop for MailUser {
    fn drop(&mut self) {
        let dir = imap_dir();
        let _ = std::fs::remove_file(format!("{dir}/passwd/{}", self.user));
        let _ = std::fs::remove_dir_all(format!("{dir}/mail/{}", self.user));
    }
}

/// A multipart message with a text part and `attachments` (name bytes, media type, content).
pub fn message(id: &str, subject: &str, attachments: &[(&[u8], &str, &[u8])]) -> Vec<u8> {
    let mut raw = format!(
        "From: Partner <sales@partner.example>\r\nTo: orders@example.com\r\n\
         Subject: {subject}\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@partner.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{subject}, see attached.\r\n"
    )
    .into_bytes();
    for (name, media_type, content) in attachments {
        raw.extend_from_slice(format!("--b1\r\nContent-Type: {media_type}; name=\"").as_bytes());
        raw.extend_from_slice(name);
        raw.extend_from_slice(b"\"\r\nContent-Disposition: attachment; filename=\"");
        raw.extend_from_slice(name);
        raw.extend_from_slice(b"\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        for line in encoded.as_bytes().chunks(76) {
            raw.extend_from_slice(line);
            raw.extend_from_slice(b"\r\n");
        }
    }
    raw.extend_from_slice(b"--b1--\r\n");
    raw
}
