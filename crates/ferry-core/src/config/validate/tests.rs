//! The specification of definition files: what a valid project becomes, and the exact message
//! of every kind of error.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::template::Template;
use crate::{
    BuildError, Outcome, Passenger, Processor, ProcessorFactory, Pulled, Puller, PullerFactory,
    Pusher, PusherFactory, Seated, StepError,
};

// ---------------------------------------------------------------------------------------------
// A small registry with fake components; the real connectors live in ferry-connectors.

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

impl Processor for Nothing {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        Ok(Outcome::Continue(passenger))
    }
}

struct FilePuller;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FilePullerConfig {
    path: String,
    pattern: Option<String>,
    after_seat: Option<AfterSeat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AfterSeat {
    move_to: Option<String>,
    delete: Option<bool>,
}

impl PullerFactory for FilePuller {
    const TYPE: &'static str = "file";
    type Config = FilePullerConfig;

    fn build(
        &self,
        _config: FilePullerConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        Ok(Box::new(Nothing))
    }
}

struct GeneratePuller;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct GenerateConfig {
    count: Option<u64>,
}

impl PullerFactory for GeneratePuller {
    const TYPE: &'static str = "generate";
    type Config = GenerateConfig;

    fn build(
        &self,
        _config: GenerateConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Puller>, BuildError> {
        Ok(Box::new(Nothing))
    }
}

struct Passthrough;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

impl ProcessorFactory for Passthrough {
    const TYPE: &'static str = "passthrough";
    type Config = NoConfig;

    fn build(
        &self,
        _config: NoConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Nothing))
    }
}

struct FilePusher;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FilePusherConfig {
    path: String,
    name_template: String,
}

impl PusherFactory for FilePusher {
    const TYPE: &'static str = "file";
    type Config = FilePusherConfig;

    fn build(
        &self,
        config: FilePusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        Template::parse(&config.name_template).map_err(|e| BuildError::at("name_template", e))?;
        // Lets a test see that the context carries the component's (default) name.
        if ctx.component == "forbidden" {
            return Err(BuildError::new(format!(
                "no pusher may be called `forbidden` (in {}/{})",
                ctx.client, ctx.pipeline
            )));
        }
        Ok(Box::new(Nothing))
    }
}

/// A connection type whose `url` must start with `db://`; `warehouse` is an alias.
struct Database;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseConfig {
    url: String,
}

#[async_trait]
impl crate::ConnectionFactory for Database {
    const TYPE: &'static str = "database";
    const ALIASES: &'static [&'static str] = &["warehouse"];
    type Config = String;

    fn config(connection: &Connection, _project_dir: &Path) -> Result<String, BuildError> {
        let config: DatabaseConfig =
            crate::component::parse_config(&Value::Object(connection.config.clone()))?;
        match config.url.starts_with("db://") {
            true => Ok(config.url),
            false => Err(BuildError::at("url", "a database url starts with `db://`")),
        }
    }

    async fn check(url: String) -> Result<String, String> {
        Ok(url)
    }
}

fn registry() -> Registry {
    Registry {
        connections: vec![Box::new(Database)],
        pullers: vec![Box::new(FilePuller), Box::new(GeneratePuller)],
        processors: vec![Box::new(Passthrough)],
        pushers: vec![Box::new(FilePusher)],
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const PIPELINE_FILE: &str = "clients/acme/pipelines/invoices.yaml";

/// Components that are fine, on lines 1 and 2, for tests about the other keys.
const COMPONENTS: &str = "pullers: [{type: file, path: /in}]\n\
                          pushers: [{type: file, path: /out, name_template: x}]\n";

fn files(list: &[(&str, &str)]) -> Vec<SourceFile> {
    list.iter()
        .map(|(path, content)| SourceFile {
            path: path.to_string(),
            content: content.to_string(),
        })
        .collect()
}

fn run(list: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Project, Vec<ConfigError>> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    };
    validate(Path::new("/srv/ferry"), files(list), &registry(), &lookup)
}

/// A project of `ferry.yaml`, `clients/acme/client.yaml` and one pipeline; ferry.yaml grants
/// `acme` every environment variable the pipeline names.
fn with_pipeline(pipeline: &str) -> Vec<(&'static str, String)> {
    let mut names = Vec::new();
    let mut rest = pipeline;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        if let Some(end) = rest.find('}') {
            let name = &rest[..end];
            if is_env_name(name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let ferry_yaml = match names.is_empty() {
        true => String::new(),
        false => format!("clients:\n  acme:\n    env: [{}]\n", names.join(", ")),
    };
    vec![
        ("ferry.yaml", ferry_yaml),
        ("clients/acme/client.yaml", String::new()),
        (PIPELINE_FILE, pipeline.to_string()),
    ]
}

fn pipeline_ok(pipeline: &str) -> Pipeline {
    pipeline_ok_env(pipeline, &[])
}

fn pipeline_ok_env(pipeline: &str, env: &[(&str, &str)]) -> Pipeline {
    let list = with_pipeline(pipeline);
    let list: Vec<(&str, &str)> = list.iter().map(|(p, c)| (*p, c.as_str())).collect();
    match run(&list, env) {
        Ok(project) => project.pipeline("acme", "invoices").unwrap().clone(),
        Err(errors) => panic!("unexpected errors: {errors:#?}"),
    }
}

/// Every error of the project, as `ferry validate` prints them.
fn errors_of(list: &[(&str, &str)], env: &[(&str, &str)]) -> Vec<String> {
    match run(list, env) {
        Ok(_) => panic!("the project is valid"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The errors of a project whose only pipeline is `pipeline`.
fn pipeline_errors(pipeline: &str) -> Vec<String> {
    pipeline_errors_env(pipeline, &[])
}

fn pipeline_errors_env(pipeline: &str, env: &[(&str, &str)]) -> Vec<String> {
    let list = with_pipeline(pipeline);
    let list: Vec<(&str, &str)> = list.iter().map(|(p, c)| (*p, c.as_str())).collect();
    errors_of(&list, env)
}

/// The one error of a project whose only pipeline is `pipeline`.
fn pipeline_error(pipeline: &str) -> String {
    let errors = pipeline_errors(pipeline);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

fn p(rest: &str) -> String {
    format!("{PIPELINE_FILE}:{rest}")
}

// ---------------------------------------------------------------------------------------------
// Valid projects.

const FULL_FERRY: &str = "\
system_alias: ferry DEV
store: postgres://ferry@db/ferry
web: { listen: 0.0.0.0:8080 }
workers: 8
";

const FULL_CLIENT: &str = "\
queue_life_span: 14d
log_life_span: 90d
";

const FULL_PIPELINE: &str = r#"
description: invoices from the EDI inbox to the ERP drop folder
schedule: every 30s
pullers:
  - type: file
    name: inbox
    path: /data/inbox
    pattern: "*.xml"
    after_seat: { move_to: /data/archive }
processors:
  - type: passthrough
pushers:
  - type: file
    path: /data/outbox
    name_template: "{external_id}"
  - type: file
    path: /data/copy
    name_template: "{id}"
retry: { max_attempts: 3, backoff: 1s, max_backoff: 5m }
queue_limit: 1000
batch_size: 50
window: 18:00-06:30
priority: 2
failure_limit: 5
"#;

const FULL_CONNECTIONS: &str = "\
dwh:
  type: database
  url: db://ferry:${PG_PASSWORD}@db:5432/dwh
erp:
  type: warehouse
  url: db://erp.local/erp
  clients: [acme]
";

#[test]
fn full_project_becomes_exact_domain_values() {
    let list = [
        ("ferry.yaml", FULL_FERRY),
        ("connections.yaml", FULL_CONNECTIONS),
        ("clients/acme/client.yaml", FULL_CLIENT),
        (PIPELINE_FILE, FULL_PIPELINE),
    ];
    let project = run(&list, &[("PG_PASSWORD", "s3cret")]).unwrap();
    let connections: Vec<_> = project.connections.values().cloned().collect();
    assert_eq!(
        connections,
        [
            Connection {
                name: "dwh".into(),
                kind: "database".into(),
                config: json!({ "url": "db://ferry:s3cret@db:5432/dwh" })
                    .as_object()
                    .unwrap()
                    .clone(),
                clients: vec![],
            },
            Connection {
                name: "erp".into(),
                kind: "database".into(),
                config: json!({ "url": "db://erp.local/erp" })
                    .as_object()
                    .unwrap()
                    .clone(),
                clients: vec!["acme".into()],
            },
        ]
    );

    assert_eq!(project.dir, Path::new("/srv/ferry"));
    assert_eq!(
        project.system,
        System {
            alias: "ferry DEV".into(),
            store: "postgres://ferry@db/ferry".into(),
            listen: "0.0.0.0:8080".parse().unwrap(),
            workers: 8,
            grants: BTreeMap::new(),
        }
    );
    assert_eq!(project.files, files(&list));

    let client = &project.clients["acme"];
    assert_eq!(client.name, "acme");
    assert_eq!(client.queue_life_span, Duration::from_secs(14 * 86_400));
    assert_eq!(client.log_life_span, Duration::from_secs(90 * 86_400));

    let pipeline = project.pipeline("acme", "invoices").unwrap();
    assert_eq!(pipeline.key(), "acme/invoices");
    assert_eq!(
        pipeline.description,
        "invoices from the EDI inbox to the ERP drop folder"
    );
    assert!(matches!(pipeline.schedule, Schedule::Every(d) if d == Duration::from_secs(30)));
    assert_eq!(
        pipeline.pullers,
        vec![ComponentDef {
            name: "inbox".into(),
            type_name: "file".into(),
            config: json!({
                "path": "/data/inbox",
                "pattern": "*.xml",
                "after_seat": { "move_to": "/data/archive" },
            }),
        }]
    );
    assert_eq!(
        pipeline.processors,
        vec![ComponentDef {
            name: "passthrough".into(),
            type_name: "passthrough".into(),
            config: json!({}),
        }]
    );
    assert_eq!(
        pipeline.pushers,
        vec![
            ComponentDef {
                name: "file".into(),
                type_name: "file".into(),
                config: json!({ "path": "/data/outbox", "name_template": "{external_id}" }),
            },
            ComponentDef {
                name: "file-2".into(),
                type_name: "file".into(),
                config: json!({ "path": "/data/copy", "name_template": "{id}" }),
            },
        ]
    );
    assert_eq!(
        pipeline.retry,
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    );
    assert_eq!(pipeline.queue_limit, 1000);
    assert_eq!(pipeline.batch_size, 50);
    assert_eq!(pipeline.window.unwrap().to_string(), "18:00-06:30");
    assert_eq!((pipeline.priority, pipeline.failure_limit), (2, 5));
    assert!(pipeline.depends_on.is_empty());
    assert_eq!(pipeline.file, PIPELINE_FILE);
    assert_eq!(pipeline.version, files(&list)[3].hash());
}

#[test]
fn empty_files_take_every_default() {
    let list = [
        ("ferry.yaml", ""),
        ("clients/acme/client.yaml", "# nothing to say yet\n"),
        (PIPELINE_FILE, COMPONENTS),
    ];
    let project = run(&list, &[]).unwrap();
    assert_eq!(
        project.system,
        System {
            alias: "ferry".into(),
            store: "sqlite://data/ferry.db".into(),
            listen: "127.0.0.1:5000".parse().unwrap(),
            workers: 4,
            grants: BTreeMap::new(),
        }
    );
    let client = &project.clients["acme"];
    assert_eq!(client.queue_life_span, Duration::from_secs(7 * 86_400));
    assert_eq!(client.log_life_span, Duration::from_secs(30 * 86_400));

    let pipeline = &client.pipelines["invoices"];
    assert_eq!(pipeline.description, "");
    assert!(matches!(pipeline.schedule, Schedule::Every(d) if d == Duration::from_secs(60)));
    assert!(pipeline.processors.is_empty());
    assert_eq!(pipeline.retry, RetryPolicy::default());
    assert_eq!(pipeline.queue_limit, 100_000);
    assert_eq!(pipeline.batch_size, 500);
}

#[test]
fn a_client_without_pipelines_is_a_client() {
    let project = run(&[("ferry.yaml", ""), ("clients/acme/client.yaml", "")], &[]).unwrap();
    assert!(project.clients["acme"].pipelines.is_empty());
    assert_eq!(project.pipelines().count(), 0);
}

#[test]
fn schedules() {
    let schedule = |text: &str| {
        pipeline_ok(&format!("{COMPONENTS}schedule: {text}\n"))
            .schedule
            .to_string()
    };
    assert_eq!(schedule("every 1h30m"), "every 1h30m");
    assert_eq!(schedule("continuous"), "continuous");
    assert_eq!(schedule("manual"), "manual");
    assert_eq!(schedule(r#"cron "*/5 * * * *""#), r#"cron "*/5 * * * *""#);
    assert_eq!(schedule("cron */5 * * * *"), r#"cron "*/5 * * * *""#);
    assert_eq!(
        schedule(r#"'cron "0 30 2 * * *"'"#),
        r#"cron "0 30 2 * * *""#
    );
    assert_eq!(schedule("cron '0 2 * * MON'"), r#"cron "0 2 * * MON""#);
}

#[test]
fn components_without_a_name_are_named_after_their_type() {
    let pipeline = pipeline_ok(
        "pullers:\n\
         \x20 - type: file\n\
         \x20   path: /a\n\
         \x20 - {type: generate, name: ticks}\n\
         \x20 - {type: file, path: /b}\n\
         \x20 - {type: file, path: /c}\n\
         pushers: [{type: file, path: /out, name_template: x}]\n",
    );
    let names: Vec<&str> = pipeline.pullers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["file", "ticks", "file-2", "file-3"]);
    assert_eq!(pipeline.steps().len(), 1);
}

#[test]
fn environment_references_are_resolved_and_dollar_dollar_escapes() {
    let pipeline = pipeline_ok_env(
        "description: for ${WHO}, costs $$5, literal $${HOME}\n\
         pullers: [{type: file, path: \"${INBOX}/edi\"}]\n\
         pushers: [{type: file, path: /out, name_template: x}]\n\
         retry: { backoff: \"${BACKOFF}\" }\n",
        &[("WHO", "acme"), ("INBOX", "/data/inbox"), ("BACKOFF", "2s")],
    );
    assert_eq!(pipeline.description, "for acme, costs $$5, literal ${HOME}");
    assert_eq!(
        pipeline.pullers[0].config,
        json!({ "path": "/data/inbox/edi" })
    );
    assert_eq!(pipeline.retry.backoff, Duration::from_secs(2));
}

#[test]
fn environment_references_work_in_every_file() {
    let list = [
        (
            "ferry.yaml",
            "system_alias: ferry ${STAGE}\nstore: ${STORE}\nclients: { acme: { env: [KEEP] } }\n",
        ),
        ("clients/acme/client.yaml", "queue_life_span: ${KEEP}\n"),
    ];
    let project = run(
        &list,
        &[
            ("STAGE", "PROD"),
            ("STORE", "postgres://db/ferry"),
            ("KEEP", "3d"),
        ],
    )
    .unwrap();
    assert_eq!(project.system.alias, "ferry PROD");
    assert_eq!(project.system.store, "postgres://db/ferry");
    assert_eq!(
        project.clients["acme"].queue_life_span,
        Duration::from_secs(3 * 86_400)
    );
}

// ---------------------------------------------------------------------------------------------
// Every kind of error, with its exact message and place.

#[test]
fn unknown_key_at_the_top_of_a_pipeline() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}colour: blue\n")),
        p(
            "3:1: colour: unknown key `colour`; expected one of `description`, `schedule`, \
           `pullers`, `processors`, `pushers`, `retry`, `queue_limit`, `batch_size`, \
           `depends_on`, `window`, `priority`, `failure_limit`, `run_ends`"
        )
    );
}

#[test]
fn unknown_key_inside_retry() {
    assert_eq!(
        pipeline_error(&format!(
            "{COMPONENTS}retry:\n  max_attempts: 3\n  jitter: 0.5\n"
        )),
        p(
            "5:3: retry.jitter: unknown key `jitter`; expected one of `max_attempts`, `backoff`, \
           `max_backoff`"
        )
    );
}

#[test]
fn unknown_key_inside_a_component_config() {
    let pipeline = "\
pullers:
  - type: file
    path: /in
    after_seat: { move_to: /archive, mode: fast }
pushers: [{type: file, path: /out, name_template: x}]
";
    assert_eq!(
        pipeline_error(pipeline),
        p("4:38: pullers[0].after_seat.mode: unknown key `mode`; expected `move_to` or `delete`")
    );
}

#[test]
fn unknown_key_in_ferry_yaml_and_client_yaml() {
    let list = [
        ("ferry.yaml", "workers: 2\nweb:\n  port: 80\n"),
        ("clients/acme/client.yaml", "people: []\n"),
    ];
    assert_eq!(
        errors_of(&list, &[]),
        [
            "clients/acme/client.yaml:1:1: people: unknown key `people`; expected \
             one of `queue_life_span`, `log_life_span`, `users`, `notifications`",
            "ferry.yaml:3:3: web.port: unknown key `port`; expected `listen`",
        ]
    );
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNo";

#[test]
fn users_with_roles_and_hashes() {
    let client = format!(
        "users:\n  ada:\n    role: administrator\n    password_hash: \"{HASH}\"\n  \
         bob: {{role: operator, password_hash: \"{HASH}\"}}\n"
    );
    let project = run(
        &[("ferry.yaml", ""), ("clients/acme/client.yaml", &client)],
        &[],
    )
    .unwrap();
    let users = &project.clients["acme"].users;
    assert_eq!(users["ada"].role, UserRole::Administrator);
    assert_eq!(users["bob"].role, UserRole::Operator);
    assert_eq!(users["bob"].password_hash, HASH);
    assert!(
        !format!("{:?}", users["bob"]).contains("argon2"),
        "Debug hides the hash"
    );
}

#[test]
fn users_without_hash_or_with_plain_passwords_are_refused() {
    let client = format!(
        "users:\n  ada: {{role: boss, password_hash: \"{HASH}\"}}\n  \
         bob: {{role: operator, password: secret}}\n  \
         cy: {{role: operator, password_hash: secret}}\n  \
         dan: {{role: operator}}\n"
    );
    let errors = errors_of(
        &[("ferry.yaml", ""), ("clients/acme/client.yaml", &client)],
        &[],
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with("clients/acme/client.yaml:2:"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("users.ada.role: unknown role `boss`"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("users.bob.password: passwords are never stored in plain text"));
    assert!(errors[2].contains("users.cy.password_hash: not an argon2 hash"));
    assert!(errors[3].contains("users.dan: missing key `password_hash`"));
    assert!(errors.iter().all(|e| !e.contains("secret")), "{errors:#?}");
}

#[test]
fn wrong_type() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}batch_size: lots\n")),
        p("3:1: batch_size: invalid type: string \"lots\", expected a whole number")
    );
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}retry: 3\n")),
        p("3:1: retry: invalid type: number, expected a mapping")
    );
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}retry: [3, 1s, 1h]\n")),
        p("3:1: retry: invalid type: sequence, expected a mapping")
    );
    assert_eq!(
        pipeline_error("pullers: [file]\npushers: [{type: file, path: /out, name_template: x}]\n"),
        p("1:11: pullers[0]: invalid type: string, expected a mapping")
    );
}

#[test]
fn wrong_type_inside_a_component_config() {
    let pipeline = "\
pullers:
  - type: file
    path: [a, b]
pushers: [{type: file, path: /out, name_template: x}]
";
    assert_eq!(
        pipeline_error(pipeline),
        p("3:5: pullers[0].path: invalid type: sequence, expected a string")
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}retry: {{ backoff: 5y }}\n")),
        p("3:10: retry.backoff: unknown unit `y` in duration `5y`; units are ms, s, m, h, d, w")
    );
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}schedule: every 30\n")),
        p("3:1: schedule: duration `30` needs a unit (ms, s, m, h, d, w)")
    );
}

#[test]
fn backoff_longer_than_max_backoff() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}retry: {{ backoff: 2h }}\n")),
        p("3:10: retry.backoff: backoff 2h is longer than max_backoff 1h")
    );
}

#[test]
fn bad_cron() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}schedule: cron \"* * *\"\n")),
        p(
            "3:1: schedule: cron expression `* * *` has 3 fields; write 5 (minute hour \
           day-of-month month day-of-week), or 6 with seconds first"
        )
    );
    let error = pipeline_error(&format!("{COMPONENTS}schedule: cron \"61 * * * *\"\n"));
    assert!(
        error.starts_with(&p("3:1: schedule: invalid cron expression `61 * * * *`: ")),
        "{error}"
    );
}

#[test]
fn bad_schedule_word() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}schedule: hourly\n")),
        p(
            "3:1: schedule: invalid schedule `hourly`; write `every 30s`, `cron \"*/5 * * * *\"`, \
           `continuous` or `manual`"
        )
    );
}

#[test]
fn unknown_component_type_lists_the_valid_ones() {
    assert_eq!(
        pipeline_error(
            "pullers: [{type: ftp, path: /in}]\n\
             pushers: [{type: file, path: /out, name_template: x}]\n"
        ),
        p("1:12: pullers[0].type: unknown puller type `ftp`; valid types are: file, generate")
    );
    assert_eq!(
        pipeline_error(
            "pullers: [{path: /in}]\n\
             pushers: [{type: file, path: /out, name_template: x}]\n"
        ),
        p("1:11: pullers[0]: missing key `type`; valid puller types are: file, generate")
    );
    assert_eq!(
        pipeline_error(
            "pullers: [{type: 5, path: /in}]\n\
             pushers: [{type: file, path: /out, name_template: x}]\n"
        ),
        p("1:12: pullers[0].type: invalid type: integer `5`, expected a string")
    );
}

#[test]
fn missing_pullers_and_empty_pushers() {
    assert_eq!(
        pipeline_errors("description: nothing\npushers: []\n"),
        [
            p("1:1: pullers: at least one puller is required"),
            p("2:1: pushers: at least one pusher is required"),
        ]
    );
}

#[test]
fn duplicate_component_names() {
    let pipeline = "\
pullers: [{type: file, path: /in}]
pushers:
  - {type: file, name: out, path: /a, name_template: x}
  - {type: file, name: out, path: /b, name_template: x}
";
    assert_eq!(
        pipeline_error(pipeline),
        p(
            "4:18: pushers[1].name: duplicate pusher name `out`, also used by pushers[0]; give \
           each pusher its own `name`"
        )
    );
    // A default name counts too.
    let pipeline = "\
pullers: [{type: file, path: /in}, {type: file, name: file, path: /b}]
pushers: [{type: file, path: /out, name_template: x}]
";
    assert_eq!(
        pipeline_error(pipeline),
        p(
            "1:49: pullers[1].name: duplicate puller name `file`, also used by pullers[0]; give \
           each puller its own `name`"
        )
    );
}

#[test]
fn component_error_at_a_key_of_its_config() {
    let pipeline = "\
pullers: [{type: file, path: /in}]
pushers:
  - type: file
    path: /out
    name_template: \"{nope}\"
";
    assert_eq!(
        pipeline_error(pipeline),
        p(
            "5:5: pushers[0].name_template: unknown placeholder `{nope}` in template `{nope}`; use \
           {id}, {client}, {pipeline}, {source_system}, {external_id}, {date}, {metadata.KEY}"
        )
    );
}

#[test]
fn component_error_about_the_whole_component_uses_its_name_and_site() {
    let pipeline = "\
pullers: [{type: file, path: /in}]
pushers:
  - type: file
    name: forbidden
    path: /out
    name_template: x
";
    assert_eq!(
        pipeline_error(pipeline),
        p("3:5: pushers[0]: no pusher may be called `forbidden` (in acme/invoices)")
    );
}

#[test]
fn missing_key_inside_a_component_config() {
    assert_eq!(
        pipeline_error(
            "pullers: [{type: file, path: /in}]\n\
             pushers:\n\
             \x20 - type: file\n\
             \x20   path: /out\n"
        ),
        p("3:5: pushers[0]: missing key `name_template`")
    );
}

#[test]
fn limits() {
    assert_eq!(
        pipeline_errors(&format!(
            "{COMPONENTS}batch_size: 20000\nqueue_limit: 0\nretry: {{max_attempts: 0}}\n"
        )),
        [
            p("3:1: batch_size: must be between 1 and 10000, not 20000"),
            p("4:1: queue_limit: must be at least 1, not 0"),
            p("5:9: retry.max_attempts: must be at least 1, not 0"),
        ]
    );
    let list = [("ferry.yaml", "workers: 0\n")];
    assert_eq!(
        errors_of(&list, &[]),
        ["ferry.yaml:1:1: workers: must be between 1 and 256, not 0"]
    );
}

#[test]
fn unset_environment_variable() {
    assert_eq!(
        pipeline_errors_env(
            &format!("{COMPONENTS}description: ${{NOPE}}\nretry:\n  backoff: ${{ALSO}}${{NOT}}\n"),
            &[]
        ),
        [
            p("3:1: description: environment variable `NOPE` is not set"),
            p("5:3: retry.backoff: environment variables `ALSO`, `NOT` are not set"),
        ]
    );
}

#[test]
fn bad_environment_reference() {
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}description: ${{NOPE\n")),
        p("3:1: description: unclosed `${`; write `${NAME}`, or `$${` for a literal `${`")
    );
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}description: ${{1X}}\n")),
        p(
            "3:1: description: invalid environment variable name `1X` in `${1X}`; use letters, \
           digits and `_`"
        )
    );
}

#[test]
fn environment_values_are_never_printed() {
    let errors = pipeline_errors_env(
        "pullers: [{type: file, path: /in}]\n\
         pushers:\n\
         \x20 - type: file\n\
         \x20   path: /out\n\
         \x20   name_template: \"${TEMPLATE}\"\n\
         retry: { backoff: \"x${SECRET}\" }\n",
        &[("TEMPLATE", "{hunter2}"), ("SECRET", "s3cr3t")],
    );
    assert_eq!(
        errors,
        [
            p(
                "5:5: pushers[0].name_template: unknown placeholder `${TEMPLATE}` in template \
               `${TEMPLATE}`; use {id}, {client}, {pipeline}, {source_system}, {external_id}, \
               {date}, {metadata.KEY}"
            ),
            p("6:10: retry.backoff: invalid duration `x${SECRET}`; write e.g. `30s`, `5m`, `7d`"),
        ]
    );
    for error in &errors {
        assert!(
            !error.contains("hunter2") && !error.contains("s3cr3t"),
            "{error}"
        );
    }
}

#[test]
fn bad_listen_address() {
    let list = [("ferry.yaml", "web:\n  listen: localhost\n")];
    assert_eq!(
        errors_of(&list, &[]),
        [
            "ferry.yaml:2:3: web.listen: invalid listen address `localhost`; write an IP address \
          and a port, e.g. `127.0.0.1:5000`"
        ]
    );
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        pipeline_error("pullers: [{type: file\npushers: []\n"),
        p("1:11: unclosed bracket '{'")
    );
    assert_eq!(
        pipeline_error(&format!("{COMPONENTS}batch_size: 1\nbatch_size: 2\n")),
        p("4:1: duplicate key `batch_size`")
    );
}

#[test]
fn empty_pipeline_file() {
    assert_eq!(
        pipeline_error("# to do\n"),
        p("1:1: empty pipeline file; a pipeline needs at least `pullers` and `pushers`")
    );
}

#[test]
fn a_file_that_is_not_a_mapping() {
    assert_eq!(
        pipeline_error("- pullers\n- pushers\n"),
        p("1:1: invalid type: sequence, expected a mapping")
    );
}

#[test]
fn invalid_client_and_pipeline_names() {
    let list = [
        ("ferry.yaml", ""),
        ("clients/Acme/client.yaml", ""),
        ("clients/Acme/pipelines/in.yaml", COMPONENTS),
        ("clients/acme/client.yaml", ""),
        ("clients/acme/pipelines/My Invoices.yaml", COMPONENTS),
        ("clients/acme/pipelines/_x.yaml", COMPONENTS),
    ];
    assert_eq!(
        errors_of(&list, &[]),
        [
            "clients/Acme/client.yaml:1:1: invalid client name `Acme`; use lowercase letters, \
             digits, `_` and `-`, starting with a letter or a digit",
            "clients/acme/pipelines/My Invoices.yaml:1:1: invalid pipeline name `My Invoices`; \
             use lowercase letters, digits, `_` and `-`, starting with a letter or a digit",
            "clients/acme/pipelines/_x.yaml:1:1: invalid pipeline name `_x`; use lowercase \
             letters, digits, `_` and `-`, starting with a letter or a digit",
        ]
    );
}

#[test]
fn stray_yaml_files() {
    let list = [
        ("ferry.yaml", ""),
        ("clients/acme/client.yaml", ""),
        ("clients/acme/other.yaml", ""),
        ("clients/acme/pipelines/sub/x.yaml", COMPONENTS),
        ("pipelines.yaml", ""),
    ];
    let layout = "definitions are `ferry.yaml`, `connections.yaml`, \
                  `clients/<client>/client.yaml` and `clients/<client>/pipelines/<name>.yaml` \
                  (pipeline tests go in `clients/<client>/tests/`)";
    assert_eq!(
        errors_of(&list, &[]),
        [
            format!("clients/acme/other.yaml:1:1: unexpected file; {layout}"),
            format!("clients/acme/pipelines/sub/x.yaml:1:1: unexpected file; {layout}"),
            format!("pipelines.yaml:1:1: unexpected file; {layout}"),
        ]
    );
}

#[test]
fn missing_ferry_yaml() {
    assert_eq!(
        errors_of(&[("clients/acme/client.yaml", "")], &[]),
        ["ferry.yaml:1:1: file is missing; every project needs a ferry.yaml"]
    );
}

#[test]
fn missing_client_yaml() {
    assert_eq!(
        errors_of(&[("ferry.yaml", ""), (PIPELINE_FILE, COMPONENTS)], &[]),
        [
            "clients/acme/client.yaml:1:1: file is missing; every client directory needs a \
          client.yaml"
        ]
    );
}

#[test]
fn every_error_of_every_file_in_one_call_sorted() {
    let pipeline = "\
schedule: hourly
pullers:
  - type: ftp
  - type: file
    path: /in
    colour: red
pushers:
  - type: file
    path: /out
    name_template: \"{nope}\"
retry: { max_attempts: many, backoff: 1y, jitter: 1 }
batch_size: 0
extra: 1
";
    let list = [
        ("ferry.yaml", "workers: 1000\nweb: { listen: nowhere }\n"),
        ("clients/acme/client.yaml", "queue_life_span: forever\n"),
        (PIPELINE_FILE, pipeline),
        ("clients/beta/pipelines/b.yaml", "pullers: nope\n"),
    ];
    let errors = errors_of(&list, &[]);
    let short: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        short,
        [
            "clients/acme/client.yaml:1:1",
            "clients/acme/pipelines/invoices.yaml:1:1",
            "clients/acme/pipelines/invoices.yaml:3:5",
            "clients/acme/pipelines/invoices.yaml:6:5",
            "clients/acme/pipelines/invoices.yaml:10:5",
            "clients/acme/pipelines/invoices.yaml:11:10",
            "clients/acme/pipelines/invoices.yaml:11:30",
            "clients/acme/pipelines/invoices.yaml:11:43",
            "clients/acme/pipelines/invoices.yaml:12:1",
            "clients/acme/pipelines/invoices.yaml:13:1",
            "clients/beta/client.yaml:1:1",
            "clients/beta/pipelines/b.yaml:1:1",
            "clients/beta/pipelines/b.yaml:1:1",
            "ferry.yaml:1:1",
            "ferry.yaml:2:8",
        ],
        "{errors:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Pieces.

#[test]
fn interpolation() {
    let env = |name: &str| (name == "A").then(|| "1".to_string());
    let env = Env {
        lookup: &env,
        granted: None,
    };
    let resolved = interpolate("x${A}y$${A}z$", env).unwrap();
    assert_eq!(resolved.text, "x1y${A}z$");
    assert_eq!(resolved.used, [("A".to_string(), "1".to_string())]);
    assert_eq!(
        interpolate("${B}", env).err().unwrap(),
        "environment variable `B` is not set"
    );
}

#[test]
fn names() {
    for good in ["acme", "a", "0day", "edi_in-2"] {
        assert!(is_valid_name(good), "{good}");
    }
    for bad in ["", "Acme", "-x", "_x", "a b", "a.b", "ä"] {
        assert!(!is_valid_name(bad), "{bad}");
    }
}

#[test]
fn serde_messages_in_ferry_words() {
    assert_eq!(
        tidy("unknown field `x`, there are no fields"),
        "unknown key `x`; no keys are allowed here"
    );
    assert_eq!(tidy("missing field `path`"), "missing key `path`");
    assert_eq!(
        tidy("invalid value: integer `-1`, expected u32"),
        "invalid value: integer `-1`, expected a whole number"
    );
    assert_eq!(
        syntax_message("unclosed quote at line 1, column 4"),
        "unclosed quote"
    );
}

// ---------------------------------------------------------------------------------------------
// Connections, dependencies and timing.

fn project_errors(list: &[(&str, &str)]) -> Vec<String> {
    errors_of(list, &[])
}

#[test]
fn broken_connections_are_reported_at_their_keys() {
    let connections = "\
a: { type: oracle, url: x }
b: { type: database, url: mysql://x/y }
c: { type: database, url: db://x/y, clients: [Big] }
d: { type: database }
e: { url: db://x/y }
f: { type: database, url: db://x/y, colour: red }
";
    let list = [("ferry.yaml", ""), ("connections.yaml", connections)];
    assert_eq!(
        project_errors(&list),
        [
            "connections.yaml:1:6: a.type: unknown connection type `oracle`; valid types are: \
             database",
            "connections.yaml:2:22: b.url: a database url starts with `db://`",
            "connections.yaml:3:47: c.clients[0]: invalid client name `Big`; use lowercase \
             letters, digits, `_` and `-`, starting with a letter or a digit",
            "connections.yaml:4:1: d: missing key `url`",
            "connections.yaml:5:1: e: missing key `type`; valid types are: database",
            "connections.yaml:6:37: f.colour: unknown key `colour`; expected `url`",
        ]
    );
}

#[test]
fn a_connection_secret_never_appears_in_an_error() {
    let list = [
        ("ferry.yaml", ""),
        (
            "connections.yaml",
            "a: { type: database, url: \"mysql://u:${PW}@h/d\" }\n",
        ),
    ];
    let errors = errors_of(&list, &[("PW", "hunter2")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(!errors[0].contains("hunter2"), "{errors:?}");
}

fn pipeline_with(extra: &str) -> String {
    format!("{COMPONENTS}{extra}")
}

#[test]
fn dependencies_must_exist_and_never_form_a_cycle() {
    let a = pipeline_with("depends_on: [b]\n");
    let b = pipeline_with("depends_on: [c]\n");
    let c = pipeline_with("depends_on: [a, nowhere]\n");
    let d = pipeline_with("depends_on: [d]\n");
    let list = [
        ("ferry.yaml", ""),
        ("clients/acme/client.yaml", ""),
        ("clients/acme/pipelines/a.yaml", a.as_str()),
        ("clients/acme/pipelines/b.yaml", b.as_str()),
        ("clients/acme/pipelines/c.yaml", c.as_str()),
        ("clients/acme/pipelines/d.yaml", d.as_str()),
    ];
    let line = COMPONENTS.lines().count() + 1;
    assert_eq!(
        project_errors(&list),
        [
            format!(
                "clients/acme/pipelines/a.yaml:{line}:14: depends_on[0]: dependency cycle: \
                 a → b → c → a; a pipeline cannot wait for itself"
            ),
            format!(
                "clients/acme/pipelines/c.yaml:{line}:17: depends_on[1]: unknown pipeline \
                 `nowhere`; depends_on names pipelines of the same client"
            ),
            format!(
                "clients/acme/pipelines/d.yaml:{line}:14: depends_on[0]: dependency cycle: \
                 d → d; a pipeline cannot wait for itself"
            ),
        ]
    );
}

#[test]
fn runs_in_a_dependency_chain_end_when_delivered_unless_told_otherwise() {
    let master = pipeline_with("");
    let slave = pipeline_with("depends_on: [master]\n");
    let alone = pipeline_with("");
    let told = pipeline_with("depends_on: [master]\nrun_ends: seated\n");
    let list = [
        ("ferry.yaml", ""),
        ("clients/acme/client.yaml", ""),
        ("clients/acme/pipelines/master.yaml", master.as_str()),
        ("clients/acme/pipelines/slave.yaml", slave.as_str()),
        ("clients/acme/pipelines/alone.yaml", alone.as_str()),
        ("clients/acme/pipelines/told.yaml", told.as_str()),
    ];
    let project = run(&list, &[]).unwrap();
    let ends = |name: &str| project.pipeline("acme", name).unwrap().run_ends;
    assert_eq!(ends("master"), RunEnds::Delivered);
    assert_eq!(ends("slave"), RunEnds::Delivered);
    assert_eq!(ends("alone"), RunEnds::Seated);
    assert_eq!(ends("told"), RunEnds::Seated);
    assert_eq!(
        project.pipeline("acme", "slave").unwrap().depends_on,
        ["master"]
    );
}

#[test]
fn windows_and_limits_are_checked() {
    let line = COMPONENTS.lines().count() + 1;
    assert_eq!(
        pipeline_error(&pipeline_with("window: 6pm-6am\n")),
        p(&format!(
            "{line}:1: window: invalid window `6pm-6am`; write local times as `HH:MM-HH:MM`, \
             e.g. `18:00-06:00`"
        ))
    );
    assert_eq!(
        pipeline_error(&pipeline_with("priority: 10\n")),
        p(&format!(
            "{line}:1: priority: must be between 0 and 9, not 10"
        ))
    );
}

// ---------------------------------------------------------------------------------------------
// What root grants each client (issue 12).

#[test]
fn a_client_may_name_only_the_environment_variables_root_granted_it() {
    let pipeline = format!("{COMPONENTS}description: ${{DB_PASSWORD}}\n");
    let list = [
        ("ferry.yaml", "clients: { acme: { env: [ACME_TOKEN] } }\n"),
        ("clients/acme/client.yaml", "queue_life_span: ${KEEP}\n"),
        (PIPELINE_FILE, pipeline.as_str()),
    ];
    let errors = errors_of(&list, &[("DB_PASSWORD", "hunter2"), ("KEEP", "3d")]);
    assert_eq!(
        errors,
        [
            "clients/acme/client.yaml:1:1: queue_life_span: environment variable `KEEP` is not \
             granted to client `acme`; root lists the variables a client may use in ferry.yaml \
             under `clients: acme: env:`",
            &p(
                "3:1: description: environment variable `DB_PASSWORD` is not granted to client \
                `acme`; root lists the variables a client may use in ferry.yaml under `clients: \
                acme: env:`"
            ),
        ]
    );
    assert!(errors.iter().all(|error| !error.contains("hunter2")));
    // Root's own files read any variable.
    let list = [
        ("ferry.yaml", "system_alias: ${DB_PASSWORD}\n"),
        ("clients/acme/client.yaml", ""),
    ];
    assert!(run(&list, &[("DB_PASSWORD", "x")]).is_ok());
}

#[test]
fn granted_directories_default_to_the_clients_data_directory() {
    let list = [
        (
            "ferry.yaml",
            "clients: { acme: { paths: [inbox, /srv/drop/acme] } }\n",
        ),
        ("clients/acme/client.yaml", ""),
        ("clients/beta/client.yaml", ""),
        (PIPELINE_FILE, COMPONENTS),
        ("clients/beta/pipelines/p.yaml", COMPONENTS),
    ];
    let project = run(&list, &[]).unwrap();
    let acme = &project.pipeline("acme", "invoices").unwrap().sandbox;
    assert_eq!(acme.roots_shown(), "inbox/, /srv/drop/acme/");
    let beta = &project.pipeline("beta", "p").unwrap().sandbox;
    assert_eq!(beta.roots_shown(), "data/beta/");
}

#[test]
fn a_grant_never_holds_definitions_the_store_or_another_clients_directory() {
    let list = [
        (
            "ferry.yaml",
            "clients:\n  acme:\n    paths: [., clients/beta, data, /srv, data/beta/x, ok]\n    \
             env: [1X]\n  ghost: {}\n",
        ),
        ("clients/acme/client.yaml", ""),
        ("clients/beta/client.yaml", ""),
    ];
    assert_eq!(
        errors_of(&list, &[]),
        [
            "ferry.yaml:3:13: clients.acme.paths[0]: `.` holds the project's definitions; grant \
             a directory of data",
            "ferry.yaml:3:16: clients.acme.paths[1]: `clients/beta` is inside clients/, where \
             the definitions are; grant a directory of data",
            "ferry.yaml:3:30: clients.acme.paths[2]: `data` holds ferry's store; grant a \
             directory of data",
            "ferry.yaml:3:36: clients.acme.paths[3]: `/srv` holds the project's definitions; \
             grant a directory of data",
            "ferry.yaml:3:42: clients.acme.paths[4]: `data/beta/x` overlaps a directory of \
             client `beta` (its default data/beta/); a directory belongs to one client",
            "ferry.yaml:4:11: clients.acme.env[0]: invalid environment variable name `1X`; use \
             letters, digits and `_`",
            "ferry.yaml:5:3: clients.ghost: no client `ghost` in clients/; clients are: acme, \
             beta",
        ]
    );
}
