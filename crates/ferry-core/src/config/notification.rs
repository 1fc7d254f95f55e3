//! `notifications:` of a client: who is told what, how, and how often.
//!
//! ```yaml
//! notifications:
//!   - on: [dead, run_failed, paused, { queue_age: 1h }]
//!     to: { email: { connection: mail, to: [ops@example.com] } }
//!     pipelines: [invoices]      # default: every pipeline of the client
//!     every: 5m                  # default: 5m
//!   - on: [dead]
//!     to: { slack: "${SLACK_WEBHOOK_URL}" }
//! ```

use std::fmt;
use std::time::Duration;

/// One entry of `notifications:` in `client.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// What it tells about; never empty.
    pub on: Vec<Trigger>,
    /// Where it is sent.
    pub channel: Channel,
    /// The client's pipelines it is about (by name); empty for every one.
    pub pipelines: Vec<String>,
    /// The grouping window and rate limit: the first event opens a window this long, every
    /// event within it joins the same message, which is sent when it closes. So at most one
    /// message goes out per window.
    pub every: Duration,
}

impl Notification {
    /// The grouping window when `every` is not given.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);

    /// Whether it is about the pipeline `name` of its client.
    pub fn covers(&self, pipeline: &str) -> bool {
        self.pipelines.is_empty() || self.pipelines.iter().any(|p| p == pipeline)
    }

    /// Whether it tells about `kind` of event.
    pub fn tells(&self, kind: TriggerKind) -> bool {
        self.on.iter().any(|trigger| trigger.kind() == kind)
    }

    /// The `queue_age` threshold, if it tells about old queues.
    pub fn queue_age(&self) -> Option<Duration> {
        self.on.iter().find_map(|trigger| match trigger {
            Trigger::QueueAge(threshold) => Some(*threshold),
            _ => None,
        })
    }
}

/// What a notification tells about (`on:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A passenger went dead.
    Dead,
    /// A run failed.
    RunFailed,
    /// A pipeline paused itself after its failure limit.
    Paused,
    /// The oldest open passenger of a pipeline waits longer than this.
    QueueAge(Duration),
}

/// A [`Trigger`] without its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TriggerKind {
    Dead,
    RunFailed,
    Paused,
    QueueAge,
}

impl Trigger {
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Dead => TriggerKind::Dead,
            Trigger::RunFailed => TriggerKind::RunFailed,
            Trigger::Paused => TriggerKind::Paused,
            Trigger::QueueAge(_) => TriggerKind::QueueAge,
        }
    }
}

/// The names of triggers, for messages.
pub const TRIGGERS: &str = "dead, run_failed, paused, { queue_age: DURATION }";

/// Where a notification is sent (`to:`). URLs may hold tokens: `Debug` and `Display` leave them
/// out.
#[derive(Clone, PartialEq, Eq)]
pub enum Channel {
    /// E-mail through an `smtp` connection of `connections.yaml`.
    Email { connection: String, to: Vec<String> },
    /// A JSON object with the grouped events, POSTed to the URL.
    Webhook(String),
    /// A Slack incoming webhook: `{"text": …}`.
    Slack(String),
    /// A Discord webhook: `{"content": …}`.
    Discord(String),
    /// A Microsoft Teams incoming webhook: `{"text": …}`.
    Teams(String),
}

/// The names of channels, for messages.
pub const CHANNELS: &str = "email, webhook, slack, discord, teams";

impl Channel {
    /// The channel's key in `to:`.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Email { .. } => "email",
            Channel::Webhook(_) => "webhook",
            Channel::Slack(_) => "slack",
            Channel::Discord(_) => "discord",
            Channel::Teams(_) => "teams",
        }
    }

    /// The URL of a webhook channel.
    pub fn url(&self) -> Option<&str> {
        match self {
            Channel::Email { .. } => None,
            Channel::Webhook(url)
            | Channel::Slack(url)
            | Channel::Discord(url)
            | Channel::Teams(url) => Some(url),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Email { connection, to } => {
                write!(f, "email to {} via `{connection}`", to.join(", "))
            }
            Channel::Webhook(_) => f.write_str("webhook"),
            other => write!(f, "{} webhook", other.name()),
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
