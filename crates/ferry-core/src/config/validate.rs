//! Validation of a project's files into a [`super::Project`], reporting every error at once.
//!
//! Each file goes through the same steps: parse it into a plain tree (a syntax error stops
//! there), note where every key is ([`Positions`]), replace `${NAME}` references, deserialize
//! the [`raw`](super::raw) structs, then check what serde cannot (durations, schedules, limits,
//! component configurations) and build the domain types. Errors are collected per file in a
//! [`Document`]; the builders return `None` when they cannot make a value, and the project is
//! only put together when no file had any error.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::positions::{KeyPath, Positions, Segment};
use super::raw::{
    RawClient, RawComponent, RawConnection, RawGrant, RawPipeline, RawRetry, RawSystem, RawUser,
    RawWeb,
};
use super::{
    Client, ComponentDef, ConfigError, Connection, Connections, Grant, Pipeline, Position, Project,
    RetryPolicy, RunEnds, Schedule, Secrets, SourceFile, System, User, UserRole, Window,
};
use crate::sandbox::{Sandbox, absolute, normalize};
use crate::{BuildContext, Registry, Role};

mod notifications;
#[cfg(test)]
mod tests;

/// Looks up environment variables for `${NAME}` references.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where definitions may be, for the message about a file anywhere else.
const LAYOUT: &str = "definitions are `ferry.yaml`, `connections.yaml`, \
     `clients/<client>/client.yaml` and `clients/<client>/pipelines/<name>.yaml` \
     (pipeline tests go in `clients/<client>/tests/`)";

/// What a client or pipeline name may look like, for error messages.
const NAME_RULE: &str =
    "use lowercase letters, digits, `_` and `-`, starting with a letter or a digit";

/// Validates every file of a project at once.
///
/// `files` are all definition files of the project, with paths relative to `dir`. Pure: nothing
/// is read and nothing connects; `env` answers `${NAME}` references. Returns every error found,
/// sorted by file and position, or the whole project.
pub fn validate(
    dir: &Path,
    files: Vec<SourceFile>,
    registry: &Registry,
    env: EnvLookup<'_>,
) -> Result<Project, Vec<ConfigError>> {
    let mut found = Found::default();
    let layout = Layout::of(&files, &mut found.errors);
    let root_env = Env {
        lookup: env,
        granted: None,
    };

    let system = match layout.system {
        Some(file) => check_file(file, root_env, &mut found, |doc, value| {
            system(doc, value, dir, &layout)
        }),
        None => {
            found.errors.push(file_error(
                "ferry.yaml",
                "file is missing; every project needs a ferry.yaml",
            ));
            None
        }
    };

    let connections: Connections = match layout.connections {
        Some(file) => check_file(file, root_env, &mut found, |doc, value| {
            connections(doc, value, dir, registry)
        })
        .unwrap_or_default()
        .into(),
        None => Connections::default(),
    };

    let mut clients = BTreeMap::new();
    for (client_name, client_files) in &layout.clients {
        if !is_valid_name(client_name) {
            // Reported once, on the client's first file.
            let first = client_files
                .settings
                .or_else(|| client_files.pipelines.values().next().copied());
            if let Some(file) = first {
                found.errors.push(file_error(
                    &file.path,
                    format!("invalid client name `{client_name}`; {NAME_RULE}"),
                ));
            }
        }
        // Without a valid ferry.yaml the grants are unknown: check with none.
        let grant = match &system {
            Some(system) => system.grant(client_name),
            None => Grant::default_for(client_name),
        };
        let client_env = Env {
            lookup: env,
            granted: Some((client_name, &grant.env)),
        };
        let sandbox = Sandbox::new(
            dir,
            client_name,
            grant.paths.iter().cloned(),
            system.as_ref().and_then(System::store_file),
        );
        let settings = match client_files.settings {
            Some(file) => {
                let site = notifications::Site {
                    dir,
                    registry,
                    connections: &connections,
                    client: client_name,
                    pipelines: client_files.pipelines.keys().copied().collect(),
                };
                check_file(file, client_env, &mut found, |doc, value| {
                    client_settings(doc, value, &site)
                })
            }
            None => {
                found.errors.push(file_error(
                    &format!("clients/{client_name}/client.yaml"),
                    "file is missing; every client directory needs a client.yaml",
                ));
                None
            }
        };

        let mut pipelines = BTreeMap::new();
        for (&pipeline_name, &file) in &client_files.pipelines {
            if !is_valid_name(pipeline_name) {
                found.errors.push(file_error(
                    &file.path,
                    format!("invalid pipeline name `{pipeline_name}`; {NAME_RULE}"),
                ));
            }
            let site = Site {
                dir,
                registry,
                connections: &connections,
                sandbox: &sandbox,
                client: client_name,
                pipeline: pipeline_name,
                file,
                pushers: Vec::new(),
            };
            let pipeline = check_file(file, client_env, &mut found, |doc, value| {
                pipeline(doc, value, &site)
            });
            if let Some(pipeline) = pipeline {
                pipelines.insert(pipeline_name.to_string(), pipeline);
            }
        }

        dependencies(client_files, &mut pipelines, &mut found.errors);
        if let Some(settings) = settings {
            let client = Client {
                name: client_name.to_string(),
                queue_life_span: settings.queue_life_span,
                log_life_span: settings.log_life_span,
                users: settings.users,
                notifications: settings.notifications,
                pipelines,
            };
            clients.insert(client_name.to_string(), client);
        }
    }

    let Found {
        mut errors,
        secrets,
    } = found;
    match system {
        Some(system) if errors.is_empty() => Ok(Project {
            dir: dir.to_path_buf(),
            system,
            clients,
            connections,
            files,
            secrets: Secrets::new(secrets),
        }),
        _ => {
            // Stable: errors at one position stay in the order they were found.
            errors.sort_by(|a, b| a.file.cmp(&b.file).then(a.position.cmp(&b.position)));
            Err(errors)
        }
    }
}

/// The project's files, sorted by what they define.
#[derive(Default)]
struct Layout<'a> {
    system: Option<&'a SourceFile>,
    connections: Option<&'a SourceFile>,
    /// By client name (the directory name).
    clients: BTreeMap<&'a str, ClientFiles<'a>>,
}

/// The files of one client directory.
#[derive(Default)]
struct ClientFiles<'a> {
    /// `client.yaml`.
    settings: Option<&'a SourceFile>,
    /// By pipeline name (the file stem).
    pipelines: BTreeMap<&'a str, &'a SourceFile>,
}

impl<'a> Layout<'a> {
    /// Sorts `files` by their path; a file anywhere else is an error.
    fn of(files: &'a [SourceFile], errors: &mut Vec<ConfigError>) -> Layout<'a> {
        let mut layout = Layout::default();
        for file in files {
            match FileKind::of(&file.path) {
                FileKind::System => layout.system = Some(file),
                FileKind::Connections => layout.connections = Some(file),
                // Read by the components that name them; versioned like the rest.
                FileKind::Sql => {}
                FileKind::Client { client } => {
                    layout.clients.entry(client).or_default().settings = Some(file);
                }
                FileKind::Pipeline { client, name } => {
                    let client_files = layout.clients.entry(client).or_default();
                    client_files.pipelines.insert(name, file);
                }
                FileKind::Unexpected => {
                    errors.push(file_error(&file.path, format!("unexpected file; {LAYOUT}")));
                }
            }
        }
        layout
    }
}

/// What a file defines, by its path.
enum FileKind<'a> {
    System,
    Connections,
    /// `clients/<client>/sql/…/*.sql`: SQL of ELT loads.
    Sql,
    Client {
        client: &'a str,
    },
    Pipeline {
        client: &'a str,
        name: &'a str,
    },
    Unexpected,
}

impl<'a> FileKind<'a> {
    fn of(path: &'a str) -> FileKind<'a> {
        let parts: Vec<&str> = path.split('/').collect();
        match parts[..] {
            ["ferry.yaml"] => FileKind::System,
            ["connections.yaml"] => FileKind::Connections,
            ["clients", client, "client.yaml"] => FileKind::Client { client },
            ["clients", _, "sql", .., last] if last.ends_with(".sql") => FileKind::Sql,
            ["clients", client, "pipelines", file_name] => match file_name.strip_suffix(".yaml") {
                Some(name) => FileKind::Pipeline { client, name },
                None => FileKind::Unexpected,
            },
            _ => FileKind::Unexpected,
        }
    }
}

/// Whether `name` may name a client or a pipeline: `[a-z0-9][a-z0-9_-]*`, since names appear
/// in URLs and paths.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    plain(first) && chars.all(|c| plain(c) || c == '_' || c == '-')
}

/// An error about a file as a whole.
fn file_error(file: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        position: Position { line: 1, column: 1 },
        key: String::new(),
        message: message.into(),
    }
}

/// Parses `file` and hands its tree to `build`, adding every error found to `errors`.
fn check_file<T>(
    file: &SourceFile,
    env: Env<'_>,
    found: &mut Found,
    build: impl FnOnce(&mut Document, Value) -> Option<T>,
) -> Option<T> {
    let mut doc = Document::new(&file.path);
    let built = doc
        .load(&file.content, env)
        .and_then(|value| build(&mut doc, value));
    let (errors, secrets) = doc.finish();
    found.errors.extend(errors);
    found.secrets.extend(secrets);
    built
}

/// What checking the files found: errors, and values taken from the environment.
#[derive(Default)]
struct Found {
    errors: Vec<ConfigError>,
    secrets: Vec<(String, String)>,
}

/// `ferry.yaml`.
fn system(doc: &mut Document, value: Value, dir: &Path, layout: &Layout) -> Option<System> {
    let root = KeyPath::root();
    let raw: RawSystem = doc.deserialize(empty_as_mapping(value), &root)?;

    let web: Option<RawWeb> = doc.section(raw.web, &root.key("web"));
    let listen = web.and_then(|web| {
        let text = web.listen.unwrap_or_else(|| "127.0.0.1:5000".to_string());
        match text.trim().parse::<SocketAddr>() {
            Ok(listen) => Some(listen),
            Err(_) => {
                doc.error(
                    &root.key("web").key("listen"),
                    format!(
                        "invalid listen address `{text}`; write an IP address and a port, \
                         e.g. `127.0.0.1:5000`"
                    ),
                );
                None
            }
        }
    });
    let workers = doc.number(&root.key("workers"), raw.workers, 4, 1, Some(256));
    let store = raw
        .store
        .unwrap_or_else(|| "sqlite://data/ferry.db".to_string());
    let store_file = store.strip_prefix("sqlite://").map(Path::new);
    let grants = grants(
        doc,
        raw.clients.unwrap_or_default(),
        dir,
        store_file,
        layout,
    );

    Some(System {
        alias: raw.system_alias.unwrap_or_else(|| "ferry".to_string()),
        store,
        listen: listen?,
        workers: usize::try_from(workers?).ok()?,
        grants: grants?,
    })
}

/// `clients:` in ferry.yaml: what each client's definitions may reach. A granted directory
/// may not hold the project's definitions or the store, and belongs to one client.
fn grants(
    doc: &mut Document,
    raw: serde_json::Map<String, Value>,
    dir: &Path,
    store: Option<&Path>,
    layout: &Layout,
) -> Option<BTreeMap<String, Grant>> {
    let root = KeyPath::root().key("clients");
    let project = absolute(dir);
    let store = store.map(|store| normalize(&project.join(store)));
    let mut grants = BTreeMap::new();
    let mut failed = false;
    // Every granted directory (absolute), with its client and where it was granted.
    let mut taken: Vec<(std::path::PathBuf, String, String)> = Vec::new();
    for client in layout
        .clients
        .keys()
        .filter(|client| !raw.contains_key(**client))
    {
        let default = Sandbox::default_root(client);
        let shown = format!("its default {}/", default.display());
        taken.push((project.join(default), client.to_string(), shown));
    }
    for (client, value) in raw {
        let path = root.key(&client);
        if !layout.clients.contains_key(client.as_str()) {
            let known: Vec<&str> = layout.clients.keys().copied().collect();
            doc.error(
                &path,
                format!(
                    "no client `{client}` in clients/; clients are: {}",
                    known.join(", ")
                ),
            );
            failed = true;
            continue;
        }
        let Some(raw) = doc.deserialize::<RawGrant>(empty_as_mapping(value), &path) else {
            failed = true;
            continue;
        };
        let mut grant = Grant::default_for(&client);
        if let Some(paths) = raw.paths {
            grant.paths = Vec::new();
            for (index, written) in paths.into_iter().enumerate() {
                let at = path.key("paths").index(index);
                let absolute = normalize(&project.join(&written));
                let why = if written.trim().is_empty() {
                    Some("the path is empty")
                } else if project.starts_with(&absolute) {
                    Some("holds the project's definitions")
                } else if absolute.starts_with(project.join("clients")) {
                    Some("is inside clients/, where the definitions are")
                } else if store
                    .as_ref()
                    .is_some_and(|store| store.starts_with(&absolute))
                {
                    Some("holds ferry's store")
                } else {
                    None
                };
                if let Some(why) = why {
                    doc.error(&at, format!("`{written}` {why}; grant a directory of data"));
                    failed = true;
                    continue;
                }
                let overlap = taken.iter().find(|(other, other_client, _)| {
                    *other_client != client
                        && (other.starts_with(&absolute) || absolute.starts_with(other))
                });
                if let Some((_, other_client, other_at)) = overlap {
                    doc.error(
                        &at,
                        format!(
                            "`{written}` overlaps a directory of client `{other_client}` \
                             ({other_at}); a directory belongs to one client"
                        ),
                    );
                    failed = true;
                    continue;
                }
                taken.push((absolute, client.clone(), at.to_string()));
                grant.paths.push(written.into());
            }
        }
        for (index, name) in raw.env.unwrap_or_default().into_iter().enumerate() {
            if is_env_name(&name) {
                grant.env.push(name);
            } else {
                doc.error(
                    &path.key("env").index(index),
                    format!(
                        "invalid environment variable name `{name}`; use letters, digits and `_`"
                    ),
                );
                failed = true;
            }
        }
        grants.insert(client, grant);
    }
    (!failed).then_some(grants)
}

/// `connections.yaml`: named connections, each read and checked by its connection type.
fn connections(
    doc: &mut Document,
    value: Value,
    dir: &Path,
    registry: &Registry,
) -> Option<BTreeMap<String, Connection>> {
    let root = KeyPath::root();
    let Value::Object(map) = empty_as_mapping(value) else {
        doc.error(
            &root,
            "expected a mapping of connection names to connections",
        );
        return None;
    };
    let mut connections = BTreeMap::new();
    for (name, value) in map {
        let path = root.key(&name);
        if !is_valid_name(&name) {
            doc.error(
                &path,
                format!("invalid connection name `{name}`; {NAME_RULE}"),
            );
            continue;
        }
        let Some(raw) = doc.deserialize::<RawConnection>(value, &path) else {
            continue;
        };
        if let Some(connection) = connection(doc, &path, name.clone(), raw, dir, registry) {
            connections.insert(name, connection);
        }
    }
    Some(connections)
}

/// One connection of `connections.yaml`: its type must be registered, and that type checks
/// the rest of its keys.
fn connection(
    doc: &mut Document,
    path: &KeyPath,
    name: String,
    raw: RawConnection,
    dir: &Path,
    registry: &Registry,
) -> Option<Connection> {
    let valid_types = || registry.connection_types().join(", ");
    let Some(written) = raw.kind else {
        doc.error(
            path,
            format!("missing key `type`; valid types are: {}", valid_types()),
        );
        return None;
    };
    let Some(factory) = registry.connection_type(&written) else {
        doc.error(
            &path.key("type"),
            format!(
                "unknown connection type `{written}`; valid types are: {}",
                valid_types()
            ),
        );
        return None;
    };
    let clients = raw.clients.unwrap_or_default();
    for (index, client) in clients.iter().enumerate() {
        if !is_valid_name(client) {
            doc.error(
                &path.key("clients").index(index),
                format!("invalid client name `{client}`; {NAME_RULE}"),
            );
            return None;
        }
    }
    let connection = Connection {
        name,
        kind: factory.type_name().to_string(),
        config: raw.config,
        clients,
    };
    if let Err(error) = factory.validate(&connection, dir) {
        let config = Value::Object(connection.config.clone());
        doc.error(
            &path_in_value(path, &config, &error.path),
            tidy(&error.message),
        );
        return None;
    }
    Some(connection)
}

/// `depends_on:` of a client's pipelines: every name a pipeline of the same client, no
/// pipeline its own master through any chain.
///
/// Pipelines in a dependency chain whose `run_ends` was not given end their runs once what they
/// pulled is delivered: a master counts as done when its data arrived.
fn dependencies(
    files: &ClientFiles,
    pipelines: &mut BTreeMap<String, Pipeline>,
    errors: &mut Vec<ConfigError>,
) {
    let masters: HashSet<String> = pipelines
        .values()
        .flat_map(|p| p.depends_on.iter().cloned())
        .collect();
    for pipeline in pipelines.values_mut() {
        let in_chain = !pipeline.depends_on.is_empty() || masters.contains(&pipeline.name);
        if in_chain && pipeline.run_ends_default {
            pipeline.run_ends = RunEnds::Delivered;
        }
    }
    let pipelines = &*pipelines;
    let key = KeyPath::root().key("depends_on");
    let position = |pipeline: &Pipeline, index: usize| {
        files
            .pipelines
            .get(pipeline.name.as_str())
            .map(|file| Positions::of(&file.content).find(&key.index(index)))
            .unwrap_or_default()
    };
    for pipeline in pipelines.values() {
        for (index, master) in pipeline.depends_on.iter().enumerate() {
            // A master whose own file has errors is not in `pipelines`, but it exists.
            if !files.pipelines.contains_key(master.as_str()) {
                errors.push(ConfigError {
                    file: pipeline.file.clone(),
                    position: position(pipeline, index),
                    key: key.index(index).to_string(),
                    message: format!(
                        "unknown pipeline `{master}`; depends_on names pipelines of the same \
                         client"
                    ),
                });
            }
        }
    }
    // A cycle is reported once, on its alphabetically first pipeline.
    for pipeline in pipelines.values() {
        if let Some(chain) = cycle_from(&pipeline.name, pipelines)
            && chain.iter().all(|name| *name >= pipeline.name.as_str())
        {
            let first = &chain[1];
            let index = pipeline
                .depends_on
                .iter()
                .position(|m| m == first)
                .unwrap_or(0);
            errors.push(ConfigError {
                file: pipeline.file.clone(),
                position: position(pipeline, index),
                key: key.index(index).to_string(),
                message: format!(
                    "dependency cycle: {}; a pipeline cannot wait for itself",
                    chain.join(" → ")
                ),
            });
        }
    }
}

/// The shortest chain of `depends_on` from `start` back to itself, both ends included.
fn cycle_from<'a>(
    start: &'a str,
    pipelines: &'a BTreeMap<String, Pipeline>,
) -> Option<Vec<&'a str>> {
    // Breadth first, remembering how each pipeline was reached.
    let mut reached: BTreeMap<&str, &str> = BTreeMap::new();
    let mut frontier = vec![start];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for name in frontier {
            let Some(pipeline) = pipelines.get(name) else {
                continue;
            };
            for master in &pipeline.depends_on {
                let master = master.as_str();
                if master == start {
                    let mut chain = vec![start, name];
                    let mut at = name;
                    while at != start {
                        at = reached[at];
                        chain.push(at);
                    }
                    // Built backwards: start, the master's slave, …, start.
                    chain.reverse();
                    return Some(chain);
                }
                if !reached.contains_key(master) {
                    reached.insert(master, name);
                    next.push(master);
                }
            }
        }
        frontier = next;
    }
    None
}

/// `window:`, `HH:MM-HH:MM`.
fn window(doc: &mut Document, text: Option<String>) -> Option<Option<Window>> {
    let Some(text) = text else {
        return Some(None);
    };
    let parse = |part: &str| chrono::NaiveTime::parse_from_str(part.trim(), "%H:%M").ok();
    let parsed = text.split_once('-').and_then(|(start, end)| {
        Some(Window {
            start: parse(start)?,
            end: parse(end)?,
        })
    });
    match parsed {
        Some(window) if window.start != window.end => Some(Some(window)),
        Some(_) => {
            doc.error(
                &KeyPath::root().key("window"),
                "an empty window: start and end are the same; leave `window` out to run at \
                 any time",
            );
            None
        }
        None => {
            doc.error(
                &KeyPath::root().key("window"),
                format!(
                    "invalid window `{text}`; write local times as `HH:MM-HH:MM`, e.g. \
                     `18:00-06:00`"
                ),
            );
            None
        }
    }
}

/// What `client.yaml` says.
struct ClientSettings {
    queue_life_span: Duration,
    log_life_span: Duration,
    users: BTreeMap<String, User>,
    notifications: Vec<super::Notification>,
}

/// `clients/<client>/client.yaml`.
fn client_settings(
    doc: &mut Document,
    value: Value,
    site: &notifications::Site,
) -> Option<ClientSettings> {
    let root = KeyPath::root();
    let raw: RawClient = doc.deserialize(empty_as_mapping(value), &root)?;
    let queue_life_span = doc.duration(
        &root.key("queue_life_span"),
        raw.queue_life_span,
        Duration::from_secs(7 * 86_400),
    );
    let log_life_span = doc.duration(
        &root.key("log_life_span"),
        raw.log_life_span,
        Duration::from_secs(30 * 86_400),
    );
    let users = users(doc, raw.users.unwrap_or_default(), &root.key("users"));
    let notifications = notifications::notifications(
        doc,
        raw.notifications.unwrap_or_default(),
        &root.key("notifications"),
        site,
    );
    Some(ClientSettings {
        queue_life_span: queue_life_span?,
        log_life_span: log_life_span?,
        users: users?,
        notifications: notifications?,
    })
}

/// `users:` in `client.yaml`.
fn users(
    doc: &mut Document,
    raw: serde_json::Map<String, Value>,
    path: &KeyPath,
) -> Option<BTreeMap<String, User>> {
    let mut users = BTreeMap::new();
    let mut valid = true;
    for (name, value) in raw {
        let path = path.key(&name);
        if !is_valid_name(&name) {
            doc.error(&path, format!("invalid user name `{name}`; {NAME_RULE}"));
            valid = false;
            continue;
        }
        if value.get("password").is_some() {
            doc.error(
                &path.key("password"),
                "passwords are never stored in plain text; \
                 set one with `ferry user add CLIENT USER --role ROLE`",
            );
            valid = false;
            continue;
        }
        let Some(raw) = doc.deserialize::<RawUser>(value, &path) else {
            valid = false;
            continue;
        };
        let role = match raw.role.as_deref().map(str::parse::<UserRole>) {
            Some(Ok(role)) => Some(role),
            Some(Err(message)) => {
                doc.error(&path.key("role"), message);
                None
            }
            None => {
                doc.error(&path, "missing key `role`: operator or administrator");
                None
            }
        };
        let hash = match raw.password_hash {
            Some(hash) if hash.starts_with("$argon2") => Some(hash),
            Some(_) => {
                doc.error(
                    &path.key("password_hash"),
                    "not an argon2 hash; set the password with \
                     `ferry user add CLIENT USER --role ROLE`",
                );
                None
            }
            None => {
                doc.error(
                    &path,
                    "missing key `password_hash`; set the password with \
                     `ferry user add CLIENT USER --role ROLE`",
                );
                None
            }
        };
        match (role, hash) {
            (Some(role), Some(password_hash)) => {
                let user = User {
                    name: name.clone(),
                    role,
                    password_hash,
                };
                users.insert(name, user);
            }
            _ => valid = false,
        }
    }
    valid.then_some(users)
}

/// An empty file (or one with only comments) as an empty mapping: every key has a default.
fn empty_as_mapping(value: Value) -> Value {
    match value {
        Value::Null => Value::Object(serde_json::Map::new()),
        other => other,
    }
}

/// Where a pipeline is defined, for building its components.
struct Site<'a> {
    dir: &'a Path,
    registry: &'a Registry,
    connections: &'a Connections,
    sandbox: &'a Sandbox,
    client: &'a str,
    pipeline: &'a str,
    file: &'a SourceFile,
    /// The names of the pipeline's pushers, for processors that route to them.
    pushers: Vec<String>,
}

/// `clients/<client>/pipelines/<name>.yaml`.
fn pipeline(doc: &mut Document, value: Value, site: &Site) -> Option<Pipeline> {
    let root = KeyPath::root();
    if value.is_null() {
        doc.error(
            &root,
            "empty pipeline file; a pipeline needs at least `pullers` and `pushers`",
        );
        return None;
    }
    let raw: RawPipeline = doc.deserialize(value, &root)?;

    let schedule_written = raw.schedule.is_some();
    let mut schedule = schedule(doc, raw.schedule);
    let pusher_names = raw.pushers.as_deref().map(names).unwrap_or_default();
    let site = &Site {
        pushers: pusher_names.into_iter().flatten().collect(),
        ..*site
    };
    let pullers = components(doc, Role::Puller, raw.pullers, site);
    // A puller that receives what is pushed to ferry (a webhook) only receives while its
    // pipeline runs: the pipeline runs continuously.
    // Its runs end once seated (the default), so deliveries do not wait for earlier ones to be
    // pushed.
    let receiver = pullers.as_ref().and_then(|pullers| {
        pullers
            .iter()
            .find(|p| site.registry.puller_receives(&p.type_name))
    });
    let receives = receiver.is_some();
    if let Some(receiver) = receiver {
        match &schedule {
            _ if !schedule_written => schedule = Some(Schedule::Continuous),
            Some(Schedule::Continuous) | None => {}
            Some(other) => {
                doc.error(
                    &root.key("schedule"),
                    format!(
                        "the `{}` puller `{}` receives what is sent to ferry, so its pipeline \
                         runs continuously, not `{other}`; remove `schedule:` or write \
                         `schedule: continuous`",
                        receiver.type_name, receiver.name
                    ),
                );
                schedule = None;
            }
        }
    }
    let processors = components(doc, Role::Processor, raw.processors, site);
    let pushers = components(doc, Role::Pusher, raw.pushers, site);
    let retry = doc
        .section(raw.retry, &root.key("retry"))
        .and_then(|raw| retry(doc, raw));
    let queue_limit = doc.number(&root.key("queue_limit"), raw.queue_limit, 100_000, 1, None);
    let batch_size = doc.number(
        &root.key("batch_size"),
        raw.batch_size,
        500,
        1,
        Some(10_000),
    );
    let window = window(doc, raw.window);
    let priority = doc.number(&root.key("priority"), raw.priority, 5, 0, Some(9));
    let failure_limit = doc.number(&root.key("failure_limit"), raw.failure_limit, 3, 0, None);
    let depends_on = raw.depends_on.unwrap_or_default();
    let loads = pushers.as_ref().is_some_and(|pushers| {
        pushers
            .iter()
            .any(|p| site.registry.pusher_loads(&p.type_name))
    });
    let run_ends = match raw.run_ends.as_deref() {
        None if loads && !receives => Some(RunEnds::Delivered),
        None | Some("seated") => Some(RunEnds::Seated),
        Some("delivered") => Some(RunEnds::Delivered),
        Some(other) => {
            doc.error(
                &root.key("run_ends"),
                format!("invalid run_ends `{other}`; write `seated` or `delivered`"),
            );
            None
        }
    };

    Some(Pipeline {
        client: site.client.to_string(),
        name: site.pipeline.to_string(),
        description: raw.description.unwrap_or_default(),
        schedule: schedule?,
        pullers: pullers?,
        processors: processors?,
        pushers: pushers?,
        retry: retry?,
        queue_limit: queue_limit?,
        batch_size: usize::try_from(batch_size?).ok()?,
        depends_on,
        window: window?,
        priority: u8::try_from(priority?).ok()?,
        failure_limit: u32::try_from(failure_limit?).ok()?,
        run_ends: run_ends?,
        // A receiving pipeline keeps `seated` in a dependency chain too.
        run_ends_default: raw.run_ends.is_none() && !receives,
        connections: site.connections.clone(),
        sandbox: site.sandbox.clone(),
        file: site.file.path.clone(),
        version: site.file.hash(),
    })
}

/// `schedule:`; `every 1m` when absent.
fn schedule(doc: &mut Document, text: Option<String>) -> Option<Schedule> {
    let Some(text) = text else {
        return Some(Schedule::Every(Duration::from_secs(60)));
    };
    match parse_schedule(&text) {
        Ok(schedule) => Some(schedule),
        Err(message) => {
            doc.error(&KeyPath::root().key("schedule"), message);
            None
        }
    }
}

/// Parses `every 30s`, `cron "*/5 * * * *"`, `continuous` or `manual`.
fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let text = text.trim();
    let (word, rest) = match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    };
    match (word, rest) {
        ("continuous", "") => Ok(Schedule::Continuous),
        ("manual", "") => Ok(Schedule::Manual),
        ("every", duration) if !duration.is_empty() => {
            let every = crate::duration::parse(duration)?;
            if every.is_zero() {
                return Err("`every` needs a duration longer than zero".to_string());
            }
            Ok(Schedule::Every(every))
        }
        ("cron", expression) if !expression.is_empty() => parse_cron(expression),
        _ => Err(format!(
            "invalid schedule `{text}`; write `every 30s`, `cron \"*/5 * * * *\"`, \
             `continuous` or `manual`"
        )),
    }
}

/// Parses a cron expression of five fields, or six with seconds first; quotes are optional.
fn parse_cron(expression: &str) -> Result<Schedule, String> {
    let expression = strip_quotes(expression).trim();
    let fields = expression.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "cron expression `{expression}` has {fields} fields; write 5 (minute hour \
             day-of-month month day-of-week), or 6 with seconds first"
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    match parser.parse(expression) {
        Ok(cron) => Ok(Schedule::Cron {
            expression: expression.to_string(),
            cron: Box::new(cron),
        }),
        Err(error) => Err(format!(
            "invalid cron expression `{expression}`: {}",
            as_message(&error.to_string())
        )),
    }
}

/// `text` without one pair of surrounding double or single quotes.
fn strip_quotes(text: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = text
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    text
}

/// A sentence from another library as one of ours: lowercase start, no trailing period.
fn as_message(sentence: &str) -> String {
    let sentence = sentence.trim().trim_end_matches('.');
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `retry:`; every key has a default.
fn retry(doc: &mut Document, raw: RawRetry) -> Option<RetryPolicy> {
    let path = KeyPath::root().key("retry");
    let default = RetryPolicy::default();

    let max_attempts = doc.number(
        &path.key("max_attempts"),
        raw.max_attempts.map(u64::from),
        u64::from(default.max_attempts),
        1,
        None,
    );
    let backoff = doc.duration(&path.key("backoff"), raw.backoff, default.backoff);
    let max_backoff = doc.duration(
        &path.key("max_backoff"),
        raw.max_backoff,
        default.max_backoff,
    );

    let (backoff, max_backoff) = (backoff?, max_backoff?);
    if backoff > max_backoff {
        doc.error(
            &path.key("backoff"),
            format!(
                "backoff {} is longer than max_backoff {}",
                crate::duration::format(backoff),
                crate::duration::format(max_backoff)
            ),
        );
        return None;
    }
    Some(RetryPolicy {
        max_attempts: u32::try_from(max_attempts?).ok()?,
        backoff,
        max_backoff,
    })
}

/// `pullers:`, `processors:` or `pushers:`: names given, uniqueness checked, and each
/// component's configuration checked by building it.
fn components(
    doc: &mut Document,
    role: Role,
    items: Option<Vec<Value>>,
    site: &Site,
) -> Option<Vec<ComponentDef>> {
    let list = KeyPath::root().key(role.key());
    let noun = role.noun();
    let items = items.unwrap_or_default();
    if items.is_empty() && role != Role::Processor {
        doc.error(&list, format!("at least one {noun} is required"));
        return None;
    }

    let mut components = Vec::new();
    let mut failed = false;
    // Name → index of the component that has it.
    let mut taken: HashMap<String, usize> = HashMap::new();
    let default_names = names(&items);
    for (index, item) in items.into_iter().enumerate() {
        let path = list.index(index);
        // A `type:` of the wrong type is reported by `deserialize`, and is then missing.
        let has_type = item.get("type").is_some();
        let Some(raw) = doc.deserialize::<RawComponent>(item, &path) else {
            failed = true;
            continue;
        };
        let Some(type_name) = raw.type_name else {
            failed = true;
            if has_type {
                continue;
            }
            doc.error(
                &path,
                format!(
                    "missing key `type`; valid {noun} types are: {}",
                    site.registry.type_names(role).join(", ")
                ),
            );
            continue;
        };

        // Where to report a problem with the name: its key, if it was given.
        let name_path = match raw.name {
            Some(_) => path.key("name"),
            None => path.clone(),
        };
        let name = match raw.name {
            Some(name) if name.trim().is_empty() => {
                doc.error(&name_path, "empty name");
                failed = true;
                continue;
            }
            Some(name) => name,
            None => default_names[index]
                .clone()
                .unwrap_or_else(|| type_name.clone()),
        };
        if let Some(first) = taken.get(&name) {
            doc.error(
                &name_path,
                format!(
                    "duplicate {noun} name `{name}`, also used by {}; give each {noun} its own \
                     `name`",
                    list.index(*first)
                ),
            );
            failed = true;
            continue;
        }
        taken.insert(name.clone(), index);

        let config = Value::Object(raw.config);
        let ctx = BuildContext {
            project_dir: site.dir.to_path_buf(),
            client: site.client.to_string(),
            pipeline: site.pipeline.to_string(),
            component: name.clone(),
            pushers: site.pushers.clone(),
            connections: site.connections.clone(),
            sandbox: site.sandbox.clone(),
        };
        if let Err(error) = site.registry.check(role, &type_name, &config, &ctx) {
            let at = path_in_value(&path, &config, &error.path);
            match error.within {
                Some(inner) => {
                    let position = doc.positions.within(&at, inner);
                    doc.push(at, position, tidy(&error.message));
                }
                None => doc.error(&at, tidy(&error.message)),
            }
            failed = true;
            continue;
        }
        components.push(ComponentDef {
            name,
            type_name,
            config,
        });
    }
    (!failed).then_some(components)
}

/// The name each component of a list goes by: its `name`, else its type, numbered from the
/// second unnamed one of that type on (`file`, `file-2`). `None` where neither is a string.
fn names(items: &[Value]) -> Vec<Option<String>> {
    // Type → how many components of that type have no `name:` so far.
    let mut unnamed: HashMap<&str, usize> = HashMap::new();
    items
        .iter()
        .map(|item| {
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                return Some(name.to_string());
            }
            let type_name = item.get("type").and_then(Value::as_str)?;
            let count = unnamed.entry(type_name).or_default();
            *count += 1;
            Some(match *count {
                1 => type_name.to_string(),
                n => format!("{type_name}-{n}"),
            })
        })
        .collect()
}

/// The key path of a [`crate::BuildError`]'s `path` inside the component at `base`: its
/// segments are strings, so the configuration decides whether `"0"` is an index or a key.
fn path_in_value(base: &KeyPath, config: &Value, segments: &[String]) -> KeyPath {
    let mut path = base.clone();
    let mut current = Some(config);
    for segment in segments {
        let index = match current {
            Some(Value::Array(_)) => segment.parse::<usize>().ok(),
            _ => None,
        };
        match index {
            Some(index) => {
                current = current.and_then(|value| value.get(index));
                path = path.index(index);
            }
            None => {
                current = current.and_then(|value| value.get(segment));
                path = path.key(segment);
            }
        }
    }
    path
}

/// One YAML file being checked: where its keys are, what came from the environment, and the
/// errors found so far.
struct Document {
    file: String,
    positions: Positions,
    /// Text taken from the environment (it may be a secret), each with what to show instead:
    /// the reference as written, e.g. `${DB_PASSWORD}`.
    secrets: Vec<(String, String)>,
    errors: Vec<(KeyPath, ConfigError)>,
}

impl Document {
    fn new(file: &str) -> Document {
        Document {
            file: file.to_string(),
            positions: Positions::default(),
            secrets: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Parses `text` into a tree with `${NAME}` references replaced; `None` after a syntax
    /// error. An empty file is `Value::Null`.
    fn load(&mut self, text: &str, env: Env<'_>) -> Option<Value> {
        let mut value: Value = match serde_saphyr::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                let position = error
                    .location()
                    .map_or(Position { line: 1, column: 1 }, |at| Position {
                        line: at.line(),
                        column: at.column(),
                    });
                let message = syntax_message(&error.without_snippet().to_string());
                self.push(KeyPath::root(), position, message);
                return None;
            }
        };
        self.positions = Positions::of(text);
        self.resolve_env(&mut value, &KeyPath::root(), env);
        Some(value)
    }

    /// Replaces `${NAME}` in every string of `value`, which is at `path`.
    fn resolve_env(&mut self, value: &mut Value, path: &KeyPath, env: Env<'_>) {
        match value {
            Value::String(text) if text.contains("${") => match interpolate(text, env) {
                Ok(resolved) => {
                    if !resolved.used.is_empty() {
                        self.secrets.push((resolved.text.clone(), text.clone()));
                    }
                    for (name, value) in resolved.used {
                        self.secrets.push((value, format!("${{{name}}}")));
                    }
                    *text = resolved.text;
                }
                Err(message) => self.error(path, message),
            },
            Value::Array(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.resolve_env(item, &path.index(index), env);
                }
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    self.resolve_env(item, &path.key(key), env);
                }
            }
            _ => {}
        }
    }

    /// The optional section `value` at `path` as `T`; `T::default()` when absent.
    fn section<T: DeserializeOwned + Default>(
        &mut self,
        value: Option<Value>,
        path: &KeyPath,
    ) -> Option<T> {
        match value {
            Some(value) => self.deserialize(value, path),
            None => Some(T::default()),
        }
    }

    /// Deserializes the mapping `value`, found at `path`, into `T`, reporting every unknown key
    /// and every key of the wrong type. A key that fails is removed and the rest tried again,
    /// so one mistake does not hide the next; that is why every field of the raw structs is
    /// optional. `None` when `value` is not a mapping.
    fn deserialize<T: DeserializeOwned>(&mut self, mut value: Value, path: &KeyPath) -> Option<T> {
        if !value.is_object() {
            let found = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "sequence",
                Value::Object(_) => "mapping",
            };
            self.error(path, format!("invalid type: {found}, expected a mapping"));
            return None;
        }
        loop {
            let error = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(parsed) => return Some(parsed),
                Err(error) => error,
            };
            let mut relative = Vec::new();
            for segment in error.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Map { key } => {
                        relative.push(Segment::Key(key.clone()));
                    }
                    serde_path_to_error::Segment::Seq { index } => {
                        relative.push(Segment::Index(*index));
                    }
                    _ => break,
                }
            }
            let mut at = path.clone();
            for segment in &relative {
                at = at.with(segment.clone());
            }
            self.error(&at, tidy(&error.inner().to_string()));
            if !remove_deepest_key(&mut value, &relative) {
                return None;
            }
        }
    }

    /// `text` as a duration, or `default` when absent.
    fn duration(
        &mut self,
        path: &KeyPath,
        text: Option<String>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match crate::duration::parse(&text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    /// `value`, or `default` when absent, if it lies between `min` and `max`.
    fn number(
        &mut self,
        path: &KeyPath,
        value: Option<u64>,
        default: u64,
        min: u64,
        max: Option<u64>,
    ) -> Option<u64> {
        let value = value.unwrap_or(default);
        if value >= min && max.is_none_or(|max| value <= max) {
            return Some(value);
        }
        let message = match max {
            Some(max) => format!("must be between {min} and {max}, not {value}"),
            None => format!("must be at least {min}, not {value}"),
        };
        self.error(path, message);
        None
    }

    /// Records an error at `path`, unless that key (or one it lies in) already has one: a
    /// second error there would only be a consequence of the first, e.g. a duration that could
    /// not be read because its `${NAME}` is not set.
    fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        let repeated = self
            .errors
            .iter()
            .any(|(earlier, _)| !earlier.is_root() && path.starts_with(earlier));
        if !repeated {
            let position = self.positions.find(path);
            self.push(path.clone(), position, message.into());
        }
    }

    fn push(&mut self, path: KeyPath, position: Position, message: String) {
        let error = ConfigError {
            file: self.file.clone(),
            position,
            key: path.to_string(),
            message,
        };
        self.errors.push((path, error));
    }

    /// The errors, with every value taken from the environment replaced by its reference, so
    /// that no secret is ever printed; and those values.
    fn finish(mut self) -> (Vec<ConfigError>, Vec<(String, String)>) {
        self.secrets.retain(|(secret, _)| !secret.is_empty());
        // Longest first, so a whole resolved string is replaced before the values within it.
        self.secrets
            .sort_by_key(|(secret, _)| Reverse(secret.len()));
        let mut errors = Vec::new();
        for (_, mut error) in self.errors {
            for (secret, shown) in &self.secrets {
                error.message = error.message.replace(secret.as_str(), shown);
            }
            errors.push(error);
        }
        (errors, self.secrets)
    }
}

/// A string with its `${NAME}` references replaced.
struct Interpolated {
    text: String,
    /// The variables used, with their values.
    used: Vec<(String, String)>,
}

/// The environment a file's `${NAME}` references may read.
#[derive(Clone, Copy)]
struct Env<'a> {
    lookup: EnvLookup<'a>,
    /// For a client's files, the client and the names root granted it (`clients: <client>:
    /// env:` in ferry.yaml); `None` for root's own files, ferry.yaml and connections.yaml.
    granted: Option<(&'a str, &'a [String])>,
}

impl Env<'_> {
    /// Why `name` may not be read, if it may not.
    fn refuses(&self, name: &str) -> Option<String> {
        let (client, names) = self.granted?;
        if names.iter().any(|granted| granted == name) {
            return None;
        }
        Some(format!(
            "environment variable `{name}` is not granted to client `{client}`; root lists the \
             variables a client may use in ferry.yaml under `clients: {client}: env:`"
        ))
    }
}

/// Replaces `${NAME}` in `text` with the variable's value; `$${` stands for a literal `${`.
fn interpolate(text: &str, env: Env<'_>) -> Result<Interpolated, String> {
    let mut out = String::new();
    let mut used = Vec::new();
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let from_dollar = &rest[dollar..];
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                return Err("unclosed `${`; write `${NAME}`, or `$${` for a literal `${`".into());
            };
            let name = &after[..close];
            if !is_env_name(name) {
                return Err(format!(
                    "invalid environment variable name `{name}` in `${{{name}}}`; use letters, \
                     digits and `_`"
                ));
            }
            if let Some(refused) = env.refuses(name) {
                return Err(refused);
            }
            match (env.lookup)(name) {
                Some(value) => {
                    out.push_str(&value);
                    used.push((name.to_string(), value));
                }
                None => unset.push(format!("`{name}`")),
            }
            rest = &after[close + 1..];
        } else {
            out.push('$');
            rest = &from_dollar[1..];
        }
    }
    out.push_str(rest);
    match unset.len() {
        0 => Ok(Interpolated { text: out, used }),
        1 => Err(format!("environment variable {} is not set", unset[0])),
        _ => Err(format!(
            "environment variables {} are not set",
            unset.join(", ")
        )),
    }
}

/// Whether `name` can be an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    }
}

/// Removes the innermost mapping key on `path` from `value`; false if there is none.
fn remove_deepest_key(value: &mut Value, path: &[Segment]) -> bool {
    let Some(last_key) = path
        .iter()
        .rposition(|segment| matches!(segment, Segment::Key(_)))
    else {
        return false;
    };
    let mut current = value;
    for segment in &path[..last_key] {
        let next = match segment {
            Segment::Key(key) => current.get_mut(key.as_str()),
            Segment::Index(index) => current.get_mut(*index),
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match (&path[last_key], current) {
        (Segment::Key(key), Value::Object(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

/// A message from serde in ferry's words: "key" not "field", no Rust type names.
fn tidy(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let rest = rest.replacen(", expected", "; expected", 1).replacen(
            ", there are no fields",
            "; no keys are allowed here",
            1,
        );
        return format!("unknown key {rest}");
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}");
    }
    if let Some(at) = message.find("expected struct ") {
        return format!("{}expected a mapping", &message[..at]);
    }
    for integer in ["u8", "u16", "u32", "u64", "usize"] {
        if let Some(start) = message.strip_suffix(&format!("expected {integer}")) {
            return format!("{start}expected a whole number");
        }
    }
    message.to_string()
}

/// A YAML syntax error's message without serde-saphyr's location suffix (the position is
/// reported on its own) and in ferry's words.
fn syntax_message(message: &str) -> String {
    let mut message = message.trim();
    if let Some(at) = message.rfind(" at line ") {
        let is_location = message[at + " at line ".len()..]
            .split_once(", column ")
            .is_some_and(|(line, column)| {
                line.parse::<u64>().is_ok() && column.parse::<u64>().is_ok()
            });
        if is_location {
            message = &message[..at];
        }
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("duplicate key `{key}`");
    }
    if message.starts_with("multiple YAML documents") {
        return "a definition file holds one YAML document; remove the extra `---`".to_string();
    }
    message.to_string()
}
