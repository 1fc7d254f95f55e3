//! One e-mail message as a passenger: its metadata, its text (or HTML) body and every
//! attachment, with names made safe.

use bytes::Bytes;
use ferry_core::{Attachment, Body, Passenger, media_type_of};
use mail_parser::{Address, MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};

/// Where a message was found.
pub(crate) struct Found<'a> {
    pub source_system: &'a str,
    pub mailbox: &'a str,
    pub uid: u32,
}

/// The passenger of the raw message `raw`, or why it is not a MIME message.
///
/// Its external id is the Message-ID (without angle brackets), so the same message found
/// again (after a UIDVALIDITY change, or in two mailboxes read by one pipeline) seats once; a
/// message without one gets `sha256:` and the hash of its bytes.
pub(crate) fn passenger(raw: &[u8], found: &Found) -> Result<Passenger, String> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|message| !message.headers().is_empty())
        .ok_or("not a MIME message: no header could be read")?;
    if message.from().is_none() && message.date().is_none() && message.message_id().is_none() {
        return Err("not a MIME message: it has no From, Date or Message-ID header".into());
    }
    let external_id = match message.message_id().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("sha256:{:x}", Sha256::digest(raw)),
    };
    let mut passenger = Passenger::pulled(found.source_system, external_id.clone());
    let metadata = &mut passenger.metadata;
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            metadata.insert(format!("mail.{key}"), value);
        }
    };
    put("from", message.from().map(addresses));
    put("to", message.to().map(addresses));
    put("cc", message.cc().map(addresses));
    put("subject", message.subject().map(single_line));
    put("date", message.date().map(|date| date.to_rfc3339()));
    put("message_id", message.message_id().map(str::to_string));
    put("mailbox", Some(found.mailbox.to_string()));
    put("uid", Some(found.uid.to_string()));
    put("size", Some(raw.len().to_string()));

    // The first text part as it is: plain text, or HTML when the message has no plain text.
    let first = message.text_part(0).and_then(|part| {
        part.text_contents()
            .map(|text| (part.is_text_html(), text.to_string()))
    });
    passenger.body = match first {
        Some((html, text)) => Body {
            media_type: match html {
                true => "text/html; charset=utf-8".into(),
                false => "text/plain; charset=utf-8".into(),
            },
            data: Bytes::from(text),
        },
        None => Body {
            media_type: "text/plain; charset=utf-8".into(),
            data: Bytes::new(),
        },
    };
    for (index, part) in message.attachments().enumerate() {
        let (content, default_name) = match part.message() {
            Some(inner) => (
                inner.raw_message().to_vec(),
                format!("message-{}.eml", index + 1),
            ),
            None => (
                part.contents().to_vec(),
                format!("attachment-{}", index + 1),
            ),
        };
        let name = part
            .attachment_name()
            .map(safe_name)
            .filter(|name| !name.is_empty())
            .unwrap_or(default_name);
        let media_type = match part.content_type() {
            Some(ct) => match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
                None => ct.ctype().to_ascii_lowercase(),
            },
            None => media_type_of(&name).to_string(),
        };
        let media_type = match media_type.as_str() {
            "application/octet-stream" => media_type_of(&name).to_string(),
            _ => media_type,
        };
        passenger.attachments.push(Attachment {
            name,
            media_type,
            content: Bytes::from(content),
        });
    }
    Ok(passenger)
}

/// `Name <a@example.com>, b@example.com`.
fn addresses(address: &Address) -> String {
    address
        .iter()
        .map(|addr| match (addr.name(), addr.address()) {
            (Some(name), Some(address)) => format!("{} <{address}>", single_line(name)),
            (None, Some(address)) => address.to_string(),
            (Some(name), None) => single_line(name),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// An attachment's name as a plain file name: the last part of any path (`/` or `\`), no
/// control characters, no leading dots, at most 200 characters. Empty when nothing is left.
pub(crate) fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control() && *c != '\u{fffd}')
        .collect();
    clean
        .trim()
        .trim_start_matches('.')
        .chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}
