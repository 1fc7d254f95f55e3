//! Notifications (issue 14): observers that tell people when a passenger went dead, a run
//! failed, a pipeline paused itself after its failure limit, or a queue grew older than a
//! threshold. Each client says whom and how in `notifications:` of its client.yaml
//! ([`ferry_core::config::Notification`]).
//!
//! Events are grouped per client and notification: the first event opens a window of the
//! notification's `every`, every event within it joins the same message, which is sent when the
//! window closes. So 500 dead passengers make one message (with their count and a few ids and
//! errors), and at most one message per window goes out. A message that could not be sent is
//! logged (without secrets: webhook URLs hold tokens, so they are never logged) and tried
//! again, with whatever joined it meanwhile, at the end of the next window; notifying never
//! stops the engine.
//!
//! E-mail goes through the `smtp` pusher of the registry (the engine knows connectors only
//! through it); webhooks are POSTed as JSON: Slack and Teams get `{"text": …}`, Discord
//! `{"content": …}`, a generic webhook the grouped events as an object (see [`Digest::json`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::{Channel, Notification, Project, Secrets, TriggerKind};
use ferry_core::{Body, BuildContext, Passenger, PassengerId, Registry, Timestamp};
use ferry_store::{PipelineKey, RunId, RunStatus};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{Event, Shared};

/// Examples kept per kind of event in one message; the rest are counted.
const SAMPLES: usize = 10;

/// Characters of one error kept in a message.
const MAX_ERROR: usize = 300;

/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often queue ages are checked at most (with a long threshold) and at least.
const AGE_CHECK_MAX: Duration = Duration::from_secs(60);
const AGE_CHECK_MIN: Duration = Duration::from_secs(1);

/// How long shutdown waits at most for the messages still waiting for their window.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Runs the notifications of the engine's project until shutdown.
pub(crate) async fn notify(shared: Arc<Shared>, mut events: broadcast::Receiver<Event>) {
    let mut notifier = Notifier::new(shared.registry.clone());
    let mut next_age_check = Instant::now();
    loop {
        let project = shared.project.read().expect("project lock").clone();
        let age_every = age_check_every(&project);
        let wake = [notifier.due(), age_every.map(|_| next_age_check)]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            _ = shared.shutdown.cancelled() => {
                // What waits for its window is sent now rather than lost, within the grace.
                let grace = shared.options.grace.min(SHUTDOWN_FLUSH);
                let flushed = tokio::time::timeout(grace, notifier.flush_all(&project)).await;
                if flushed.is_err() {
                    warn!("notifications still waiting at shutdown were not sent");
                }
                return;
            }
            received = events.recv() => match received {
                Ok(event) => notifier.observe(&project, &event, Instant::now()),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "notifications fell behind; events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = sleep_until(wake) => {}
        }
        let now = Instant::now();
        if let Some(every) = age_every
            && next_age_check <= now
        {
            next_age_check = now + every;
            match shared.store.oldest_open().await {
                Ok(oldest) => notifier.queue_ages(&project, &oldest, chrono::Utc::now(), now),
                Err(error) => warn!(%error, "cannot read queue ages for notifications"),
            }
        }
        if notifier.due().is_some_and(|due| due <= now) {
            notifier.flush(&project, now).await;
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How often to look at queue ages: a quarter of the shortest threshold, within
/// [`AGE_CHECK_MIN`] and [`AGE_CHECK_MAX`]; `None` when no notification asks.
fn age_check_every(project: &Project) -> Option<Duration> {
    project
        .clients
        .values()
        .flat_map(|client| client.notifications.iter())
        .filter_map(Notification::queue_age)
        .min()
        .map(|threshold| (threshold / 4).clamp(AGE_CHECK_MIN, AGE_CHECK_MAX))
}

/// Which notification: the client and its index in `notifications:`.
type GroupKey = (String, usize);

/// Collects events into groups and sends each group when its window closes.
pub struct Notifier {
    registry: Arc<Registry>,
    http: reqwest::Client,
    groups: HashMap<GroupKey, Group>,
    /// Pipelines whose old queue was told, per notification: told again only after the queue
    /// was younger than the threshold once.
    aged: BTreeSet<(String, usize, PipelineKey)>,
}

/// The events of one notification's open window.
#[derive(Debug, Default)]
struct Group {
    /// When the window closes; `None` while nothing waits.
    deadline: Option<Instant>,
    dead: Tally,
    run_failed: Tally,
    /// Pipelines that paused themselves, with why.
    paused: BTreeMap<PipelineKey, String>,
    /// Pipelines whose oldest open passenger waits too long: its age and the threshold.
    queue_age: BTreeMap<PipelineKey, (Duration, Duration)>,
    /// The id the message keeps across attempts (an e-mail's Message-ID).
    id: Option<PassengerId>,
}

/// How many events of one kind, per pipeline, and the first few.
#[derive(Debug, Default)]
struct Tally {
    count: u64,
    per_pipeline: BTreeMap<PipelineKey, u64>,
    samples: Vec<Sample>,
}

/// One event shown in a message.
#[derive(Debug, Clone)]
struct Sample {
    pipeline: PipelineKey,
    /// A passenger's id or a run's number.
    what: String,
    /// The step of a dead passenger.
    step: Option<String>,
    error: String,
}

impl Tally {
    fn add(&mut self, sample: Sample) {
        self.count += 1;
        *self
            .per_pipeline
            .entry(sample.pipeline.clone())
            .or_default() += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(sample);
        }
    }

    fn json(&self, id_key: &str) -> Value {
        let samples: Vec<Value> = self
            .samples
            .iter()
            .map(|s| {
                let mut sample = json!({
                    "pipeline": s.pipeline.to_string(),
                    id_key: s.what,
                    "error": s.error,
                });
                if let Some(step) = &s.step {
                    sample["step"] = json!(step);
                }
                sample
            })
            .collect();
        let pipelines: serde_json::Map<String, Value> = self
            .per_pipeline
            .iter()
            .map(|(key, count)| (key.to_string(), json!(count)))
            .collect();
        json!({ "count": self.count, "pipelines": pipelines, "samples": samples })
    }
}

impl Group {
    fn is_empty(&self) -> bool {
        self.dead.count == 0
            && self.run_failed.count == 0
            && self.paused.is_empty()
            && self.queue_age.is_empty()
    }
}

/// One message: a title, a text for people, and the grouped events as JSON.
#[derive(Debug, Clone)]
pub struct Digest {
    pub title: String,
    pub text: String,
    /// What a generic webhook receives: `system`, `client`, `title`, `text`, and per kind of
    /// event: `dead` and `run_failed` (`count`, `pipelines` with a count each, `samples`),
    /// `paused` (a list of `pipeline` and `reason`) and `queue_age` (a list of `pipeline`,
    /// `age_seconds`, `threshold_seconds`).
    pub json: Value,
}

impl Notifier {
    pub fn new(registry: Arc<Registry>) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .unwrap_or_default();
        Notifier {
            registry,
            http,
            groups: HashMap::new(),
            aged: BTreeSet::new(),
        }
    }

    /// Adds `event` to the groups of every notification of its client that tells about it.
    pub fn observe(&mut self, project: &Project, event: &Event, now: Instant) {
        let secrets = &project.secrets;
        let (pipeline, kind) = match event {
            Event::PassengerDead { pipeline, .. } => (pipeline, TriggerKind::Dead),
            Event::RunFinished {
                pipeline,
                status: RunStatus::Failed,
                ..
            } => (pipeline, TriggerKind::RunFailed),
            // A pause by a person needs no telling; one by the failure limit does.
            Event::PipelinePaused {
                pipeline,
                reason: Some(_),
            } => (pipeline, TriggerKind::Paused),
            _ => return,
        };
        for index in matching(project, pipeline, kind) {
            let every = project.clients[&pipeline.client].notifications[index].every;
            let group = self
                .groups
                .entry((pipeline.client.clone(), index))
                .or_default();
            match event {
                Event::PassengerDead {
                    pipeline,
                    id,
                    step,
                    error,
                } => group.dead.add(Sample {
                    pipeline: pipeline.clone(),
                    what: id.to_string(),
                    step: Some(step.clone()),
                    error: shorten(&secrets.redact(error)),
                }),
                Event::RunFinished {
                    pipeline,
                    run,
                    error,
                    ..
                } => group.run_failed.add(Sample {
                    pipeline: pipeline.clone(),
                    what: run.map_or_else(|| "unrecorded".into(), |run: RunId| run.to_string()),
                    step: None,
                    error: shorten(&secrets.redact(error.as_deref().unwrap_or("failed"))),
                }),
                Event::PipelinePaused { pipeline, reason } => {
                    let reason = reason.as_deref().unwrap_or_default();
                    group
                        .paused
                        .insert(pipeline.clone(), secrets.redact(reason).into_owned());
                }
                _ => {}
            }
            group.deadline.get_or_insert(now + every);
        }
    }

    /// Adds the pipelines whose oldest open passenger (`oldest`, by pipeline) is older than a
    /// notification's `queue_age` threshold at `utc`; each is told once until its queue is
    /// younger than the threshold again.
    pub fn queue_ages(
        &mut self,
        project: &Project,
        oldest: &BTreeMap<PipelineKey, Timestamp>,
        utc: Timestamp,
        now: Instant,
    ) {
        for client in project.clients.values() {
            for (index, notification) in client.notifications.iter().enumerate() {
                let Some(threshold) = notification.queue_age() else {
                    continue;
                };
                for pipeline in client.pipelines.keys() {
                    if !notification.covers(pipeline) {
                        continue;
                    }
                    let key = PipelineKey::new(&client.name, pipeline);
                    let age = oldest
                        .get(&key)
                        .and_then(|created| (utc - *created).to_std().ok())
                        .unwrap_or_default();
                    let told = (client.name.clone(), index, key.clone());
                    if age <= threshold {
                        self.aged.remove(&told);
                        continue;
                    }
                    if !self.aged.insert(told) {
                        continue;
                    }
                    let group = self.groups.entry((client.name.clone(), index)).or_default();
                    group.queue_age.insert(key, (age, threshold));
                    group.deadline.get_or_insert(now + notification.every);
                }
            }
        }
    }

    /// When the next window closes.
    pub fn due(&self) -> Option<Instant> {
        self.groups.values().filter_map(|g| g.deadline).min()
    }

    /// Sends every waiting group now, whatever its window (at shutdown).
    pub async fn flush_all(&mut self, project: &Project) {
        let now = Instant::now();
        for group in self.groups.values_mut() {
            if group.deadline.is_some() {
                group.deadline = Some(now);
            }
        }
        self.flush(project, now).await;
    }

    /// Sends every group whose window closed by `now`. A group that could not be sent stays,
    /// and is tried again (with what joins it meanwhile) when its next window closes.
    pub async fn flush(&mut self, project: &Project, now: Instant) {
        let closed: Vec<GroupKey> = self
            .groups
            .iter()
            .filter(|(_, group)| group.deadline.is_some_and(|deadline| deadline <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in closed {
            let Some(notification) = project
                .clients
                .get(&key.0)
                .and_then(|client| client.notifications.get(key.1))
            else {
                // The definition changed and this notification is gone.
                self.groups.remove(&key);
                continue;
            };
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            if group.is_empty() {
                self.groups.remove(&key);
                continue;
            }
            let digest = digest(&project.system.alias, &key.0, group);
            let id = *group.id.get_or_insert_with(PassengerId::new);
            let sent = send(
                &self.registry,
                &self.http,
                project,
                &key.0,
                &notification.channel,
                &digest,
                id,
            )
            .await;
            match sent {
                Ok(()) => {
                    info!(client = %key.0, notification = key.1 + 1, channel = %notification.channel, title = %digest.title, "notification sent");
                    self.groups.remove(&key);
                }
                Err(error) => {
                    let error = Secrets::current()
                        .redact(&project.secrets.redact(&error))
                        .into_owned();
                    warn!(client = %key.0, notification = key.1 + 1, channel = %notification.channel, %error, retry_in = %ferry_core::duration::format(notification.every), "notification not sent; trying again");
                    group.deadline = Some(now + notification.every);
                }
            }
        }
    }
}

/// The indexes of the notifications of `pipeline`'s client that tell about `kind` for it.
fn matching(project: &Project, pipeline: &PipelineKey, kind: TriggerKind) -> Vec<usize> {
    let Some(client) = project.clients.get(&pipeline.client) else {
        return Vec::new();
    };
    client
        .notifications
        .iter()
        .enumerate()
        .filter(|(_, n)| n.tells(kind) && n.covers(&pipeline.pipeline))
        .map(|(index, _)| index)
        .collect()
}

/// `text` cut to [`MAX_ERROR`] characters, on one line.
fn shorten(text: &str) -> String {
    let line = text.replace(['\r', '\n'], " ");
    match line.char_indices().nth(MAX_ERROR) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// `count` and the noun, singular or plural.
fn counted(count: u64, one: &str, many: &str) -> String {
    match count {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// The message for a group.
fn digest(alias: &str, client: &str, group: &Group) -> Digest {
    let mut summary = Vec::new();
    let mut text = String::new();
    if group.dead.count > 0 {
        let what = counted(
            group.dead.count,
            "passenger went dead",
            "passengers went dead",
        );
        summary.push(counted(
            group.dead.count,
            "dead passenger",
            "dead passengers",
        ));
        text.push_str(&format!("{what}:\n"));
        tally_text(&mut text, &group.dead, "passenger");
    }
    if group.run_failed.count > 0 {
        summary.push(counted(group.run_failed.count, "failed run", "failed runs"));
        let what = counted(group.run_failed.count, "run failed", "runs failed");
        text.push_str(&format!("{what}:\n"));
        tally_text(&mut text, &group.run_failed, "run");
    }
    if !group.paused.is_empty() {
        let count = group.paused.len() as u64;
        summary.push(counted(count, "paused pipeline", "paused pipelines"));
        let what = counted(
            count,
            "pipeline paused itself",
            "pipelines paused themselves",
        );
        text.push_str(&format!("{what}:\n"));
        for (pipeline, reason) in &group.paused {
            text.push_str(&format!("  - {pipeline}: {reason}\n"));
        }
    }
    if !group.queue_age.is_empty() {
        let count = group.queue_age.len() as u64;
        summary.push(counted(count, "old queue", "old queues"));
        let what = counted(count, "queue is older", "queues are older");
        text.push_str(&format!("{what} than the threshold:\n"));
        for (pipeline, (age, threshold)) in &group.queue_age {
            text.push_str(&format!(
                "  - {pipeline}: the oldest open passenger waits for {} (threshold {})\n",
                ferry_core::duration::format(Duration::from_secs(age.as_secs())),
                ferry_core::duration::format(*threshold)
            ));
        }
    }
    let title = format!("[{alias}] {client}: {}", summary.join(", "));
    let paused: Vec<Value> = group
        .paused
        .iter()
        .map(|(pipeline, reason)| json!({ "pipeline": pipeline.to_string(), "reason": reason }))
        .collect();
    let queue_age: Vec<Value> = group
        .queue_age
        .iter()
        .map(|(pipeline, (age, threshold))| {
            json!({
                "pipeline": pipeline.to_string(),
                "age_seconds": age.as_secs(),
                "threshold_seconds": threshold.as_secs(),
            })
        })
        .collect();
    let json = json!({
        "system": alias,
        "client": client,
        "title": title,
        "text": text,
        "dead": group.dead.json("id"),
        "run_failed": group.run_failed.json("run"),
        "paused": paused,
        "queue_age": queue_age,
    });
    Digest { title, text, json }
}

/// The lines of a tally: per pipeline, then the samples, then how many more.
fn tally_text(text: &mut String, tally: &Tally, noun: &str) {
    if tally.per_pipeline.len() > 1 {
        for (pipeline, count) in &tally.per_pipeline {
            text.push_str(&format!("  {pipeline}: {count}\n"));
        }
    }
    for sample in &tally.samples {
        let step = match &sample.step {
            Some(step) => format!(" at {step}"),
            None => String::new(),
        };
        text.push_str(&format!(
            "  - {} {noun} {}{step}: {}\n",
            sample.pipeline, sample.what, sample.error
        ));
    }
    let more = tally.count - tally.samples.len() as u64;
    if more > 0 {
        text.push_str(&format!("  … and {more} more\n"));
    }
}

/// Sends `digest` on `channel`; the error says why, without the URL.
async fn send(
    registry: &Registry,
    http: &reqwest::Client,
    project: &Project,
    client: &str,
    channel: &Channel,
    digest: &Digest,
    id: PassengerId,
) -> Result<(), String> {
    let body = match channel {
        Channel::Email { connection, to } => {
            return email(registry, project, client, connection, to, digest, id).await;
        }
        Channel::Webhook(_) => digest.json.clone(),
        Channel::Slack(_) | Channel::Teams(_) => {
            json!({ "text": format!("{}\n{}", digest.title, digest.text) })
        }
        Channel::Discord(_) => {
            // Discord refuses content over 2000 characters.
            let content = format!("**{}**\n{}", digest.title, digest.text);
            let content: String = content.chars().take(1990).collect();
            json!({ "content": content })
        }
    };
    let url = channel.url().unwrap_or_default();
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|error| error.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let answer: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    Err(format!("the webhook answered HTTP {status}: {answer}"))
}

/// Sends `digest` as an e-mail with the `smtp` pusher of the registry.
async fn email(
    registry: &Registry,
    project: &Project,
    client: &str,
    connection: &str,
    to: &[String],
    digest: &Digest,
    id: PassengerId,
) -> Result<(), String> {
    let config = json!({
        "connection": connection,
        "to": to,
        "subject": "{metadata.subject}",
        "attachments": "none",
    });
    let ctx = BuildContext {
        project_dir: project.dir.clone(),
        client: client.to_string(),
        pipeline: "notifications".into(),
        component: "notification".into(),
        connections: project.connections.clone(),
        ..BuildContext::default()
    };
    let pusher = registry
        .pusher("smtp", &config, &ctx)
        .map_err(|error| format!("cannot send e-mail: {error}"))?;
    let mut message = Passenger::pulled("ferry", format!("notification-{id}"));
    message.id = id;
    message.client = client.to_string();
    message
        .metadata
        .insert("subject".into(), digest.title.clone());
    message.body = Body {
        media_type: "text/plain; charset=utf-8".into(),
        data: digest.text.clone().into(),
    };
    match pusher.push(&[&message]).await.into_iter().next() {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(error.message),
        None => Err("the smtp pusher returned no result".into()),
    }
}

#[cfg(test)]
mod tests;
