//! `notifications:` in client.yaml: what a valid list becomes, and the message of each error
//! with its file, line and key.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::super::super::{Channel, Connection, Notification, SourceFile, Trigger, validate};
use crate::{
    BuildContext, BuildError, Passenger, Pulled, Puller, PullerFactory, Pusher, PusherFactory,
    Registry, Seated, StepError,
};

struct Nothing;

#[async_trait]
impl Puller for Nothing {
    async fn pull(&mut self, _max: usize) -> Result<Pulled, StepError> {
        Ok(Pulled::default())
    }

    async fn ack(&mut self, _seated: &[Seated]) -> Result<(), StepError> {
        Ok(())
    }
}

#[async_trait]
impl Pusher for Nothing {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        passengers.iter().map(|_| Ok(())).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

struct Generate;

impl PullerFactory for Generate {
    const TYPE: &'static str = "generate";
    type Config = NoConfig;

    fn build(&self, _: NoConfig, _: &BuildContext) -> Result<Box<dyn Puller>, BuildError> {
        Ok(Box::new(Nothing))
    }
}

struct Blackhole;

impl PusherFactory for Blackhole {
    const TYPE: &'static str = "blackhole";
    type Config = NoConfig;

    fn build(&self, _: NoConfig, _: &BuildContext) -> Result<Box<dyn Pusher>, BuildError> {
        Ok(Box::new(Nothing))
    }
}

/// A connection type of the given name that takes any keys.
struct AnyConnection<const SMTP: bool>;

#[async_trait]
impl<const SMTP: bool> crate::ConnectionFactory for AnyConnection<SMTP> {
    const TYPE: &'static str = if SMTP { "smtp" } else { "database" };
    type Config = ();

    fn config(_: &Connection, _: &Path) -> Result<(), BuildError> {
        Ok(())
    }

    async fn check(_: ()) -> Result<String, String> {
        Ok(String::new())
    }
}

fn registry() -> Registry {
    Registry {
        connections: vec![
            Box::new(AnyConnection::<true>),
            Box::new(AnyConnection::<false>),
        ],
        pullers: vec![Box::new(Generate)],
        processors: Vec::new(),
        pushers: vec![Box::new(Blackhole)],
    }
}

const CONNECTIONS: &str = "\
mail:
  type: smtp
  host: smtp.example.com
  clients: [acme]
other_mail:
  type: smtp
  host: smtp.example.com
dwh:
  type: database
  clients: [acme]
";

const PIPELINE: &str = "pullers: [{type: generate}]\npushers: [{type: blackhole}]\n";

fn run(client_yaml: &str) -> Result<Vec<Notification>, Vec<String>> {
    let files = [
        ("ferry.yaml", "clients:\n  acme:\n    env: [SLACK_URL]\n"),
        ("connections.yaml", CONNECTIONS),
        ("clients/acme/client.yaml", client_yaml),
        ("clients/acme/pipelines/invoices.yaml", PIPELINE),
        ("clients/acme/pipelines/orders.yaml", PIPELINE),
    ];
    let files = files
        .iter()
        .map(|(path, content)| SourceFile {
            path: path.to_string(),
            content: content.to_string(),
        })
        .collect();
    let env = |name: &str| {
        (name == "SLACK_URL").then(|| "https://hooks.slack.com/services/T0/B0/s3cr3t-token".into())
    };
    match validate(Path::new("/srv/ferry"), files, &registry(), &env) {
        Ok(project) => Ok(project.clients["acme"].notifications.clone()),
        Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
    }
}

fn errors(client_yaml: &str) -> Vec<String> {
    match run(client_yaml) {
        Ok(notifications) => panic!("valid: {notifications:?}"),
        Err(errors) => errors,
    }
}

const FILE: &str = "clients/acme/client.yaml";

#[test]
fn a_valid_list_becomes_notifications() {
    let notifications = run("\
notifications:
  - on: [dead, run_failed, paused, queue_age: 1h]
    to: { email: { connection: mail, to: [ops@example.com, dev@example.com] } }
    pipelines: [invoices]
    every: 10m
  - on: [dead]
    to: { slack: \"${SLACK_URL}\" }
  - on: [paused]
    to: { webhook: https://example.com/hook }
  - on: [run_failed]
    to: { discord: https://discord.com/api/webhooks/1/x }
  - on: [{ queue_age: 30m }]
    to: { teams: https://example.webhook.office.com/x }
")
    .unwrap();
    assert_eq!(notifications.len(), 5);
    let first = &notifications[0];
    assert_eq!(
        first.on,
        [
            Trigger::Dead,
            Trigger::RunFailed,
            Trigger::Paused,
            Trigger::QueueAge(Duration::from_secs(3600))
        ]
    );
    assert_eq!(
        first.channel,
        Channel::Email {
            connection: "mail".into(),
            to: vec!["ops@example.com".into(), "dev@example.com".into()],
        }
    );
    assert_eq!(first.pipelines, ["invoices"]);
    assert_eq!(first.every, Duration::from_secs(600));
    assert!(first.covers("invoices") && !first.covers("orders"));
    assert_eq!(first.queue_age(), Some(Duration::from_secs(3600)));

    let slack = &notifications[1];
    assert_eq!(
        slack.channel.url(),
        Some("https://hooks.slack.com/services/T0/B0/s3cr3t-token")
    );
    assert_eq!(
        slack.every,
        Notification::DEFAULT_EVERY,
        "the default window"
    );
    assert!(slack.covers("orders"), "every pipeline by default");
    assert!(
        !format!("{:?}", slack.channel).contains("s3cr3t"),
        "a webhook URL holds its token"
    );
    assert_eq!(
        notifications[4].on,
        [Trigger::QueueAge(Duration::from_secs(1800))]
    );
    assert!(run("").unwrap().is_empty(), "none by default");
}

#[test]
fn every_error_names_its_file_line_and_key() {
    let found = errors(
        "\
notifications:
  - on: [dead, gone, queue_age, queue_age: soon]
    to: { pager: 555-1234 }
    pipelines: [invoices, payroll]
    every: 0s
  - on: [dead]
    to: { email: { connection: ghost, to: ops@example.com } }
  - on: [dead]
    to: { email: { connection: other_mail, to: ops@example.com } }
  - on: [dead]
    to: { email: { connection: dwh, to: ops@example.com } }
  - on: [dead]
    to: { slack: not-a-url, teams: https://x }
  - on: []
    to: { webhook: ftp://example.com }
    colour: red
  - to: { email: { connection: mail, to: [] } }
",
    );
    let at = |rest: &str| format!("{FILE}:{rest}");
    assert_eq!(
        found,
        [
            at(
                "2:16: notifications[0].on[1]: unknown event `gone`; events are dead, \
                run_failed, paused, { queue_age: DURATION }"
            ),
            at(
                "2:22: notifications[0].on[2]: `queue_age` needs a threshold: `{ queue_age: 1h \
                }` tells when the oldest open passenger of a pipeline waits longer than an hour"
            ),
            at(
                "2:33: notifications[0].on[3].queue_age: invalid duration `soon`; write e.g. \
                `30s`, `5m`, `7d`"
            ),
            at(
                "3:11: notifications[0].to.pager: unknown channel `pager`; channels are email, \
                webhook, slack, discord, teams"
            ),
            at(
                "4:27: notifications[0].pipelines[1]: no pipeline `payroll` in client `acme`; \
                its pipelines are: invoices, orders"
            ),
            at("5:5: notifications[0].every: must be at least 1s"),
            at(
                "7:20: notifications[1].to.email.connection: unknown connection `ghost`; granted \
                to this client: dwh, mail"
            ),
            at(
                "9:20: notifications[2].to.email.connection: connection `other_mail` is not \
                granted to client `acme`; root grants it in connections.yaml with `clients: \
                [acme]`"
            ),
            at(
                "11:20: notifications[3].to.email.connection: connection `dwh` is a `database` \
                connection; e-mail is sent through an `smtp` connection"
            ),
            at(
                "13:5: notifications[4].to: give one channel per notification (one of email, \
                webhook, slack, discord, teams), not 2; write several notifications to send to \
                several"
            ),
            at(
                "14:5: notifications[5].on: say what to tell about: some of dead, run_failed, \
                paused, { queue_age: DURATION }"
            ),
            at(
                "15:11: notifications[5].to.webhook: expected the webhook's URL, starting with \
                https://"
            ),
            at(
                "16:5: notifications[5].colour: unknown key `colour`; expected one of `on`, \
                `to`, `pipelines`, `every`"
            ),
            at(
                "17:5: notifications[6]: missing key `on`: what to tell about, some of dead, \
                run_failed, paused, { queue_age: DURATION }"
            ),
        ]
    );
}

#[test]
fn a_webhook_url_from_the_environment_is_never_shown() {
    let found = errors(
        "\
notifications:
  - on: [dead]
    to: { slack: \"${SLACK_URL}\" }
    every: 1y
",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("notifications[0].every"), "{found:?}");
    let value: Value = Value::String(found.join("\n"));
    assert!(!value.to_string().contains("s3cr3t"));
}
