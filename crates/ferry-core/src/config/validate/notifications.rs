//! `notifications:` in `client.yaml`: each entry checked into a [`Notification`], every error
//! reported with its key.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::raw::{RawEmail, RawNotification};
use super::super::{CHANNELS, Channel, Connections, Notification, TRIGGERS, Trigger};
use super::{Document, KeyPath, tidy};
use crate::{BuildContext, Registry, Role};

/// What a client's notifications may name: its connections and its pipelines.
pub(super) struct Site<'a> {
    pub dir: &'a Path,
    pub registry: &'a Registry,
    pub connections: &'a Connections,
    pub client: &'a str,
    /// The names of the client's pipelines (from their files).
    pub pipelines: Vec<&'a str>,
}

/// The connection type e-mail notifications are sent through.
const SMTP: &str = "smtp";

/// `notifications:` at `path`.
pub(super) fn notifications(
    doc: &mut Document,
    items: Vec<Value>,
    path: &KeyPath,
    site: &Site,
) -> Option<Vec<Notification>> {
    let mut out = Vec::with_capacity(items.len());
    let mut valid = true;
    for (index, item) in items.into_iter().enumerate() {
        match notification(doc, item, &path.index(index), site) {
            Some(notification) => out.push(notification),
            None => valid = false,
        }
    }
    valid.then_some(out)
}

fn notification(
    doc: &mut Document,
    value: Value,
    path: &KeyPath,
    site: &Site,
) -> Option<Notification> {
    let raw: RawNotification = doc.deserialize(value, path)?;
    let on = match raw.on {
        Some(items) => triggers(doc, items, &path.key("on")),
        None => {
            doc.error(
                path,
                format!("missing key `on`: what to tell about, some of {TRIGGERS}"),
            );
            None
        }
    };
    let channel = match raw.to {
        Some(to) => channel(doc, to, &path.key("to"), site),
        None => {
            doc.error(
                path,
                format!("missing key `to`: where to send it, one of {CHANNELS}"),
            );
            None
        }
    };
    let pipelines = pipelines(doc, raw.pipelines.unwrap_or_default(), path, site);
    let every = doc
        .duration(&path.key("every"), raw.every, Notification::DEFAULT_EVERY)
        .and_then(|every| {
            if every < Duration::from_secs(1) {
                doc.error(&path.key("every"), "must be at least 1s");
                return None;
            }
            Some(every)
        });
    Some(Notification {
        on: on?,
        channel: channel?,
        pipelines: pipelines?,
        every: every?,
    })
}

/// `on:`: names, or `{ queue_age: DURATION }`.
fn triggers(doc: &mut Document, items: Vec<Value>, path: &KeyPath) -> Option<Vec<Trigger>> {
    if items.is_empty() {
        doc.error(path, format!("say what to tell about: some of {TRIGGERS}"));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut valid = true;
    for (index, item) in items.into_iter().enumerate() {
        let at = path.index(index);
        let trigger = match &item {
            Value::String(name) => match name.as_str() {
                "dead" => Some(Trigger::Dead),
                "run_failed" => Some(Trigger::RunFailed),
                "paused" => Some(Trigger::Paused),
                "queue_age" => {
                    doc.error(
                        &at,
                        "`queue_age` needs a threshold: `{ queue_age: 1h }` tells when the \
                         oldest open passenger of a pipeline waits longer than an hour",
                    );
                    None
                }
                other => {
                    doc.error(
                        &at,
                        format!("unknown event `{other}`; events are {TRIGGERS}"),
                    );
                    None
                }
            },
            Value::Object(map) if map.len() == 1 && map.contains_key("queue_age") => {
                let threshold_at = at.key("queue_age");
                match &map["queue_age"] {
                    Value::String(text) => match crate::duration::parse(text) {
                        Ok(threshold) if !threshold.is_zero() => Some(Trigger::QueueAge(threshold)),
                        Ok(_) => {
                            doc.error(&threshold_at, "must be longer than 0s");
                            None
                        }
                        Err(message) => {
                            doc.error(&threshold_at, message);
                            None
                        }
                    },
                    _ => {
                        doc.error(&threshold_at, "expected a duration such as `1h`");
                        None
                    }
                }
            }
            _ => {
                doc.error(&at, format!("unknown event; events are {TRIGGERS}"));
                None
            }
        };
        match trigger {
            Some(trigger) => out.push(trigger),
            None => valid = false,
        }
    }
    valid.then_some(out)
}

/// `to:`: a mapping of one channel.
fn channel(doc: &mut Document, value: Value, path: &KeyPath, site: &Site) -> Option<Channel> {
    let Value::Object(map) = value else {
        doc.error(
            path,
            format!("expected a mapping of one channel: one of {CHANNELS}"),
        );
        return None;
    };
    if map.len() != 1 {
        doc.error(
            path,
            format!(
                "give one channel per notification (one of {CHANNELS}), not {}; write several \
                 notifications to send to several",
                map.len()
            ),
        );
        return None;
    }
    let (name, value) = map.into_iter().next()?;
    let at = path.key(&name);
    match name.as_str() {
        "email" => email(doc, value, &at, site),
        "webhook" | "slack" | "discord" | "teams" => {
            let url = match value {
                Value::String(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    url
                }
                // The value is not repeated: a webhook URL holds its token.
                _ => {
                    doc.error(&at, "expected the webhook's URL, starting with https://");
                    return None;
                }
            };
            Some(match name.as_str() {
                "webhook" => Channel::Webhook(url),
                "slack" => Channel::Slack(url),
                "discord" => Channel::Discord(url),
                _ => Channel::Teams(url),
            })
        }
        other => {
            doc.error(
                &at,
                format!("unknown channel `{other}`; channels are {CHANNELS}"),
            );
            None
        }
    }
}

/// `to: { email: { connection: NAME, to: [ADDRESS] } }`.
fn email(doc: &mut Document, value: Value, path: &KeyPath, site: &Site) -> Option<Channel> {
    let raw: RawEmail = doc.deserialize(value, path)?;
    let Some(connection) = raw.connection else {
        doc.error(
            path,
            "missing key `connection`: an `smtp` connection of connections.yaml",
        );
        return None;
    };
    let to: Vec<String> = match raw.to {
        Some(Value::String(one)) => vec![one],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut list = Vec::new();
            for (index, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(address) => list.push(address),
                    _ => {
                        doc.error(&path.key("to").index(index), "expected an e-mail address");
                        return None;
                    }
                }
            }
            list
        }
        Some(_) => {
            doc.error(
                &path.key("to"),
                "expected an address or a list of addresses",
            );
            return None;
        }
        None => {
            doc.error(path, "missing key `to`: the recipients");
            return None;
        }
    };
    let ctx = BuildContext {
        project_dir: site.dir.to_path_buf(),
        client: site.client.to_string(),
        pipeline: String::new(),
        component: "notification".into(),
        connections: site.connections.clone(),
        ..BuildContext::default()
    };
    let named = match ctx.connection("connection", &connection) {
        Ok(named) => named,
        Err(error) => {
            doc.error(&path.key("connection"), error.message);
            return None;
        }
    };
    if named.kind != SMTP {
        doc.error(
            &path.key("connection"),
            format!(
                "connection `{connection}` is a `{}` connection; e-mail is sent through an \
                 `smtp` connection",
                named.kind
            ),
        );
        return None;
    }
    // The smtp pusher sends the message: what it refuses (an address, no sender) is reported
    // here, at the key of the notification.
    if site.registry.knows(Role::Pusher, SMTP) {
        let config = json!({ "connection": connection, "to": to, "subject": "notification" });
        if let Err(error) = site.registry.check(Role::Pusher, SMTP, &config, &ctx) {
            let at = match error.path.first().map(String::as_str) {
                Some("to") => match error.path.get(1).and_then(|i| i.parse().ok()) {
                    Some(index) => path.key("to").index(index),
                    None => path.key("to"),
                },
                Some("connection") => path.key("connection"),
                _ => path.clone(),
            };
            let message = match error.path.first().map(String::as_str) {
                Some("from") => {
                    format!("connection `{connection}` needs a `from`: the sender of notifications")
                }
                _ => tidy(&error.message),
            };
            doc.error(&at, message);
            return None;
        }
    }
    Some(Channel::Email { connection, to })
}

/// `pipelines:`: pipelines of the client.
fn pipelines(
    doc: &mut Document,
    names: Vec<String>,
    path: &KeyPath,
    site: &Site,
) -> Option<Vec<String>> {
    let mut valid = true;
    for (index, name) in names.iter().enumerate() {
        if !site.pipelines.contains(&name.as_str()) {
            let known = match site.pipelines.is_empty() {
                true => "it has none".to_string(),
                false => format!("its pipelines are: {}", site.pipelines.join(", ")),
            };
            doc.error(
                &path.key("pipelines").index(index),
                format!("no pipeline `{name}` in client `{}`; {known}", site.client),
            );
            valid = false;
        }
    }
    valid.then_some(names)
}

#[cfg(test)]
mod tests;
