//! Who may use which route, checked on every route of the table (not a sample): anonymous
//! callers, an operator and an administrator of `acme`, an administrator of `globex` and the
//! root administrator. Path parameters and request bodies name things of `globex`; nobody of
//! `acme` may see them, and nothing of `globex` may change while `acme` tries.
//!
//! A route added to the table with a parameter [`fill`] has no rule for makes these tests fail
//! until a rule is added: see `every_route_has_a_parameter_rule`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::{Method, StatusCode, header};
use bytes::Bytes;
use ferry_console::auth::{Access, csrf_refused, is_api};
use ferry_console::routes::{Route, table};
use ferry_core::{Attachment, Body, Passenger, PassengerId};
use ferry_store::{
    ApiToken, AuditEntry, PassengerState, PipelineKey, Quarantined, QueueFilter, RunFilter,
    StateCounts, StepStatus,
};
use serde_json::{Value, json};
use support::{Answer, Console, User, Who, administrator, eventually};

// ---- filling the table's parameters ----

/// Things of one client that fill the route table's path parameters and request bodies.
#[derive(Clone, Debug)]
struct Objects {
    client: String,
    /// A pipeline of the client.
    pipeline: String,
    /// The client's newest dead passenger; [`seed`] makes it one with an attachment.
    passenger: PassengerId,
    /// A run of the client.
    run: i64,
    /// An API token of the client that no test uses to authenticate: revoking it harms none.
    token: i64,
    /// The pipeline's definition file, relative to the project, and its content.
    file: String,
    content: String,
    /// A group of the client's dead passengers: pipeline and error.
    dead: (String, String),
    /// An input item of the client in quarantine.
    quarantined: i64,
}

impl Objects {
    async fn load(console: &Console, client: &str) -> Objects {
        let project = console.engine.project();
        let pipeline = project
            .pipeline(client, "orders")
            .unwrap_or_else(|| panic!("{client}/orders is defined"));
        let dead = QueueFilter {
            client: Some(client.into()),
            state: Some(PassengerState::Dead),
            ..QueueFilter::default()
        };
        let passenger = console.store.list(&dead, None, 1).await.unwrap()[0].id;
        let runs = RunFilter {
            client: Some(client.into()),
            ..RunFilter::default()
        };
        let run = console.store.runs_page(&runs, None, 1).await.unwrap()[0].id;
        let group = console.store.dead_groups(Some(client)).await.unwrap()[0].clone();
        let content = std::fs::read_to_string(console.dir.path().join(&pipeline.file)).unwrap();
        Objects {
            client: client.into(),
            pipeline: pipeline.name.clone(),
            passenger,
            run,
            token: spare_token(console, client).await,
            file: pipeline.file.clone(),
            content,
            dead: (group.pipeline, group.error),
            quarantined: spare_quarantined(console, client).await,
        }
    }
}

/// The id of a quarantined item of the client, quarantined when there is none (any more).
async fn spare_quarantined(console: &Console, client: &str) -> i64 {
    let listed = console.store.quarantined(None, Some(client)).await.unwrap();
    match listed.first() {
        Some(item) => item.id,
        None => console.quarantine_one(client).await,
    }
}

/// The id of the client's token named `spare`, created when there is none (any more).
async fn spare_token(console: &Console, client: &str) -> i64 {
    let tokens = console.store.tokens(Some(client)).await.unwrap();
    if let Some(token) = tokens.iter().find(|t| t.name == "spare") {
        return token.id;
    }
    let token = ApiToken {
        id: 0,
        client: client.into(),
        name: "spare".into(),
        role: "operator".into(),
        created_by: format!("{client}/{}", administrator(client)),
        created_at: chrono::Utc::now(),
        last_used_at: None,
    };
    let secret = format!("spare-{client}-{}", uuid::Uuid::now_v7());
    console
        .store
        .create_token(&ferry_console::auth::digest(&secret), &token)
        .await
        .unwrap()
}

/// The values an `{action}` parameter takes on a route; empty where the route has none.
fn actions(path: &str) -> &'static [&'static str] {
    match path.trim_start_matches("/api/v1") {
        "/pipelines/{client}/{pipeline}/{action}" => &["run", "pause", "resume"],
        "/passengers/{id}/{action}" => &["retry", "replay", "discard"],
        "/dead/{action}" => &["replay", "discard"],
        // Discard first: a discarded item can still be retried, a retried one is gone.
        "/quarantine/{id}/{action}" => &["discard", "retry"],
        "/system/{action}" => &["pause", "resume", "shutdown"],
        _ => &[],
    }
}

/// Whether `path` (page or API) is under `/{what}/`.
fn under(path: &str, what: &str) -> bool {
    path.trim_start_matches("/api/v1")
        .starts_with(&format!("/{what}/"))
}

/// Every concrete path `route` is called with, its parameters filled with `o`. Panics, naming
/// the route, when the route has a parameter without a rule here.
fn fill(route: &Route, o: &Objects) -> Vec<String> {
    let mut paths = vec![String::new()];
    for segment in route.path.split('/').skip(1) {
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            paths.iter_mut().for_each(|p| *p = format!("{p}/{segment}"));
            continue;
        };
        let values: Vec<String> = match name.trim_start_matches('*') {
            "client" => vec![o.client.clone()],
            "pipeline" => vec![o.pipeline.clone()],
            "file" => vec![o.file.clone()],
            "index" if under(route.path, "passengers") => vec!["0".into()],
            "id" if under(route.path, "passengers") => vec![o.passenger.to_string()],
            "id" if under(route.path, "runs") => vec![o.run.to_string()],
            "id" if under(route.path, "tokens") => vec![o.token.to_string()],
            "id" if under(route.path, "quarantine") => vec![o.quarantined.to_string()],
            // A webhook's own path segment (`path:` of a webhook puller).
            "path" if route.path.starts_with("/hooks/") => vec!["github".into()],
            "action" if !actions(route.path).is_empty() => {
                actions(route.path).iter().map(|a| a.to_string()).collect()
            }
            _ => panic!(
                "route {} {}: no rule fills `{segment}`; add one to fill() in tests/access.rs",
                route.method, route.path
            ),
        };
        paths = paths
            .iter()
            .flat_map(|p| values.iter().map(move |v| format!("{p}/{v}")))
            .collect();
    }
    paths
}

/// The form fields (pages) or JSON members (API) a state change of `route` sends.
fn fields(route: &Route, o: &Objects) -> Vec<(&'static str, String)> {
    if route.method == Method::GET {
        return Vec::new();
    }
    match route.path.trim_start_matches("/api/v1") {
        "/dead/{action}" => vec![
            ("client", o.client.clone()),
            ("pipeline", o.dead.0.clone()),
            ("error", o.dead.1.clone()),
        ],
        "/definitions/{*file}" => vec![(
            "content",
            format!("{}# edited by the access test\n", o.content),
        )],
        "/tokens" => vec![
            ("name", "from-the-access-test".into()),
            ("role", "operator".into()),
        ],
        _ => Vec::new(),
    }
}

fn has_parameters(route: &Route) -> bool {
    route.path.contains('{')
}

// ---- who calls ----

/// Calls `path` of `route` as `who`: console state changes as a form with the session's CSRF
/// token, API state changes with a JSON body.
async fn call(console: &Console, who: &Who, route: &Route, path: &str, o: &Objects) -> Answer {
    if route.method == Method::GET {
        return console.get(who, path).await;
    }
    let fields = fields(route, o);
    if is_api(path) {
        if fields.is_empty() {
            return console.request(who, route.method.clone(), path, None).await;
        }
        let body: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        return console
            .send_json(who, route.method.clone(), path, &Value::Object(body))
            .await;
    }
    let mut form: Vec<(&str, String)> = fields;
    if let Who::Session { csrf, .. } = who {
        form.push(("csrf", csrf.clone()));
    }
    let body = serde_urlencoded::to_string(&form).unwrap();
    console
        .request(
            who,
            route.method.clone(),
            path,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
}

/// A line for the failure report.
fn report(who: &str, route: &Route, path: &str, expected: &str, answer: &Answer) -> String {
    let body: String = answer.body.chars().take(300).collect();
    format!(
        "{who}: {} {path} (route {}, {:?}): expected {expected}, got {}: {body}",
        route.method, route.path, route.access, answer.status
    )
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} broken expectation(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The `code` of a JSON error answer.
fn code(answer: &Answer) -> Option<String> {
    let value: Value = serde_json::from_str(&answer.body).ok()?;
    value["code"].as_str().map(str::to_string)
}

// ---- the project ----

/// A console whose `globex` also has a broken pipeline with dead passengers, the newest of
/// them with an attachment.
async fn start() -> (Console, Objects) {
    let console = Console::start().await;
    seed(&console, "globex").await;
    let globex = Objects::load(&console, "globex").await;
    (console, globex)
}

/// Gives `client` a `broken` pipeline (unless it has one) with dead passengers, then a dead
/// passenger with an attachment, the client's newest.
async fn seed(console: &Console, client: &str) {
    let key = PipelineKey::new(client, "broken");
    if console
        .engine
        .project()
        .pipeline(client, "broken")
        .is_none()
    {
        let file = console
            .dir
            .path()
            .join(format!("clients/{client}/pipelines/broken.yaml"));
        let blocked = format!("out/{client}/blocked");
        std::fs::create_dir_all(console.dir.path().join(format!("out/{client}"))).unwrap();
        std::fs::write(console.dir.path().join(&blocked), "not a directory").unwrap();
        std::fs::write(file, support::pipeline(2, &blocked)).unwrap();
        // The engine picks the new file up by itself; it runs once it knows the pipeline.
        eventually(&format!("{key} loaded and run"), || async {
            console.engine.run_now(&key).is_ok()
        })
        .await;
        console
            .wait_for(client, "broken", PassengerState::Dead, 2)
            .await;
    }
    let before = dead_count(console, &key).await;
    let mut passenger = Passenger::pulled("access-test", format!("{client}-with-attachment"));
    passenger.body = Body::json(&json!({ "order": 1 }));
    passenger.attachments.push(Attachment {
        name: "invoice.pdf".into(),
        media_type: "application/pdf".into(),
        content: Bytes::from_static(b"%PDF-1.4 not really"),
    });
    console.seat(client, "broken", passenger).await;
    console
        .wait_for(client, "broken", PassengerState::Dead, before + 1)
        .await;
}

async fn dead_count(console: &Console, key: &PipelineKey) -> u64 {
    let counts = console.store.counts(Some(&key.client)).await.unwrap();
    counts
        .get(key)
        .and_then(|c| c.get(&PassengerState::Dead))
        .copied()
        .unwrap_or(0)
}

/// Everything of one client a refused request could have changed.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: BTreeMap<PipelineKey, StateCounts>,
    paused_in_store: Vec<PipelineKey>,
    paused_in_engine: Vec<PipelineKey>,
    tokens: Vec<ApiToken>,
    audit: Vec<AuditEntry>,
    runs: Vec<(i64, &'static str)>,
    passenger: (PassengerState, Vec<StepStatus>),
    files: BTreeMap<String, String>,
    quarantined: Vec<Quarantined>,
}

impl Snapshot {
    async fn take(console: &Console, o: &Objects) -> Snapshot {
        let client = o.client.as_str();
        let store = &console.store;
        let project = console.engine.project();
        let runs = RunFilter {
            client: Some(client.into()),
            ..RunFilter::default()
        };
        let passenger = store.get(o.passenger).await.unwrap();
        let mut files = BTreeMap::new();
        read_files(&console.dir.path().join("clients").join(client), &mut files);
        Snapshot {
            counts: store.counts(Some(client)).await.unwrap(),
            paused_in_store: store
                .paused()
                .await
                .unwrap()
                .into_iter()
                .filter(|k| k.client == client)
                .collect(),
            paused_in_engine: project
                .pipelines()
                .filter(|p| p.client == client)
                .map(|p| PipelineKey::new(&p.client, &p.name))
                .filter(|k| console.engine.is_paused(k))
                .collect(),
            tokens: store.tokens(Some(client)).await.unwrap(),
            audit: store.audit_log(Some(client), None, 10_000).await.unwrap(),
            runs: store
                .runs_page(&runs, None, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.id, r.status.as_str()))
                .collect(),
            passenger: (passenger.entry.state, passenger.steps),
            files,
            quarantined: store.quarantined(None, Some(client)).await.unwrap(),
        }
    }

    /// The names of the parts that differ.
    fn changed(&self, after: &Snapshot) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                changed.push(name);
            }
        };
        check("queue counts", self.counts == after.counts);
        check(
            "paused flags (store)",
            self.paused_in_store == after.paused_in_store,
        );
        check(
            "paused flags (engine)",
            self.paused_in_engine == after.paused_in_engine,
        );
        check("API tokens", self.tokens == after.tokens);
        check("audit log", self.audit == after.audit);
        check("runs", self.runs == after.runs);
        check("the passenger's steps", self.passenger == after.passenger);
        check("definition files on disk", self.files == after.files);
        check("quarantined input", self.quarantined == after.quarantined);
        changed
    }
}

fn read_files(dir: &Path, files: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_files(&path, files);
        } else {
            let content = std::fs::read_to_string(&path).unwrap_or_default();
            files.insert(path.display().to_string(), content);
        }
    }
}

// ---- the tests ----

/// Runs without a console: a new route whose parameters have no rule fails here first.
#[test]
fn every_route_has_a_parameter_rule() {
    let o = Objects {
        client: "globex".into(),
        pipeline: "orders".into(),
        passenger: PassengerId::new(),
        run: 1,
        token: 1,
        file: "clients/globex/pipelines/orders.yaml".into(),
        content: String::new(),
        dead: ("broken".into(), "error".into()),
        quarantined: 1,
    };
    for route in table() {
        let paths = fill(&route, &o);
        assert!(!paths.is_empty(), "{} {}", route.method, route.path);
        for path in paths {
            assert!(
                !path.contains('{') && !path.contains('}'),
                "route {} {} filled as {path}",
                route.method,
                route.path
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_get_only_the_public_routes() {
    let (console, globex) = start().await;
    let mut failures = Vec::new();
    for route in table() {
        for path in fill(&route, &globex) {
            let answer = call(&console, &Who::Anonymous, &route, &path, &globex).await;
            if route.access == Access::Public {
                if route.method == Method::GET && answer.status != StatusCode::OK {
                    failures.push(report("anonymous", &route, &path, "200", &answer));
                }
                continue;
            }
            // No webhook receives there: the orders pipelines generate their passengers.
            if route.access == Access::Webhook {
                if answer.status != StatusCode::NOT_FOUND {
                    failures.push(report("anonymous", &route, &path, "404", &answer));
                }
                continue;
            }
            if is_api(&path) {
                if answer.status != StatusCode::UNAUTHORIZED
                    || code(&answer).as_deref() != Some("unauthorized")
                {
                    failures.push(report(
                        "anonymous",
                        &route,
                        &path,
                        "401 {code: unauthorized}",
                        &answer,
                    ));
                }
            } else {
                let location = answer.headers.get(header::LOCATION);
                if answer.status != StatusCode::SEE_OTHER
                    || location.and_then(|l| l.to_str().ok()) != Some("/login")
                {
                    failures.push(report("anonymous", &route, &path, "303 to /login", &answer));
                }
            }
        }
    }
    assert_no_failures(&failures);
}

/// What `user` of acme must get on `route` filled with globex things: 403 where the role does
/// not suffice, 404 (or 403) where the route names a globex thing. `None`: no expectation here.
fn refusal(user_is_admin: bool, route: &Route) -> Option<&'static [StatusCode]> {
    const FORBIDDEN: &[StatusCode] = &[StatusCode::FORBIDDEN];
    const HIDDEN: &[StatusCode] = &[StatusCode::NOT_FOUND, StatusCode::FORBIDDEN];
    match route.access {
        // Authenticated by the webhook itself, whoever is logged in (crates/ferry/tests/webhook.rs).
        Access::Public | Access::Webhook => None,
        Access::Root => Some(FORBIDDEN),
        Access::Administrator if !user_is_admin => Some(FORBIDDEN),
        _ if has_parameters(route) => Some(HIDDEN),
        _ => None,
    }
}

async fn acme_user_touches_nothing_of_globex(user: &str, role: &str) {
    let (console, globex) = start().await;
    let acme = User::new(&console, "acme", user, role).await;
    let admin = role == "administrator";
    let before = Snapshot::take(&console, &globex).await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in table() {
        let Some(expected) = refusal(admin, &route) else {
            continue;
        };
        for path in fill(&route, &globex) {
            let who = acme.who(&path);
            let answer = call(&console, who, &route, &path, &globex).await;
            let wanted: Vec<String> = expected.iter().map(|s| s.as_u16().to_string()).collect();
            let wanted = wanted.join(" or ");
            if !expected.contains(&answer.status) {
                failures.push(report(&acme.label, &route, &path, &wanted, &answer));
                continue;
            }
            // Refused for the client, not by the CSRF check (which would prove nothing).
            if answer.body.contains(&csrf_refused().message) {
                failures.push(report(
                    &acme.label,
                    &route,
                    &path,
                    "a refusal that is not the CSRF check's",
                    &answer,
                ));
            }
            checked += 1;
            // The API says why in the one error shape.
            let codes = ["forbidden", "not_found"];
            if is_api(&path) && !code(&answer).is_some_and(|c| codes.contains(&c.as_str())) {
                failures.push(report(
                    &acme.label,
                    &route,
                    &path,
                    "{code: forbidden | not_found}",
                    &answer,
                ));
            }
            if answer.body.contains(&globex.content) {
                failures.push(report(
                    &acme.label,
                    &route,
                    &path,
                    "no globex definition in the answer",
                    &answer,
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} requests checked");
    // Issue 12: an administrator's own definitions cannot reach globex either.
    if admin {
        let attacks = [
            "pullers: [{ type: file, path: out/globex, after_seat: delete }]\n\
             pushers: [{ type: file, path: out/acme }]\n",
            "pullers: [{ type: generate, count: 1 }]\n\
             pushers: [{ type: file, path: clients/globex, name_template: client.yaml }]\n",
            "pullers: [{ type: table, path: clients/globex, pattern: client.yaml, \
             after_seat: keep }]\npushers: [{ type: file, path: out/acme }]\n",
        ];
        let path = "/api/v1/definitions/clients/acme/pipelines/orders.yaml";
        for attack in attacks {
            let answer = console
                .send_json(
                    acme.who(path),
                    Method::PUT,
                    path,
                    &serde_json::json!({ "content": attack }),
                )
                .await;
            if answer.status != StatusCode::UNPROCESSABLE_ENTITY {
                failures.push(format!(
                    "{} saved a definition that reaches globex ({}): {attack}",
                    acme.label, answer.status
                ));
            }
        }
    }
    // Let anything a request set off (a run, a worker woken) happen before comparing.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = Snapshot::take(&console, &globex).await;
    let changed = before.changed(&after);
    if !changed.is_empty() {
        failures.push(format!(
            "{} changed globex's {}:\nbefore: {before:#?}\nafter: {after:#?}",
            acme.label,
            changed.join(", ")
        ));
    }
    assert_no_failures(&failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_operator_is_refused_administration_and_everything_of_globex() {
    acme_user_touches_nothing_of_globex("otto", "operator").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_administrator_is_refused_root_routes_and_everything_of_globex() {
    acme_user_touches_nothing_of_globex("ada", "administrator").await;
}

/// The same filled routes work for globex's own administrator: the refusals above come from
/// the client, not from a wrongly filled path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_globex_administrator_may_use_the_same_routes() {
    let (console, mut globex) = start().await;
    let gina = User::new(&console, "globex", "gina", "administrator").await;
    let refused = [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
    ];
    let before = Snapshot::take(&console, &globex).await;
    let mut failures = Vec::new();
    let routes = table();
    // Reads first, then changes (which may discard the passenger), logging out last.
    let reads = routes.iter().filter(|r| r.method == Method::GET);
    let changes = routes
        .iter()
        .filter(|r| r.method != Method::GET && r.path != "/logout");
    let logout = routes.iter().filter(|r| r.path == "/logout");
    for route in reads.chain(changes).chain(logout) {
        if route.access == Access::Public || route.access == Access::Webhook {
            continue;
        }
        // A token revoked by the previous route is replaced.
        globex.token = spare_token(&console, "globex").await;
        // So is a quarantined item it ended.
        globex.quarantined = spare_quarantined(&console, "globex").await;
        for path in fill(route, &globex) {
            let answer = call(&console, gina.who(&path), route, &path, &globex).await;
            if route.access == Access::Root {
                if answer.status != StatusCode::FORBIDDEN {
                    failures.push(report(&gina.label, route, &path, "403", &answer));
                }
                continue;
            }
            if refused.contains(&answer.status) || answer.status.is_server_error() {
                failures.push(report(
                    &gina.label,
                    route,
                    &path,
                    "an answer that is not 401, 403, 404 or 5xx",
                    &answer,
                ));
            }
        }
    }
    // What gina did shows in the snapshot: it would show what acme did, too. The run she
    // started is recorded by the engine, a moment later.
    let runs = RunFilter {
        client: Some("globex".into()),
        ..RunFilter::default()
    };
    eventually("the run gina started", || async {
        let now = console.store.runs_page(&runs, None, 10_000).await.unwrap();
        now.len() > before.runs.len()
    })
    .await;
    let after = Snapshot::take(&console, &globex).await;
    let changed = before.changed(&after);
    for part in [
        "queue counts",
        "API tokens",
        "audit log",
        "runs",
        "the passenger's steps",
        "definition files on disk",
    ] {
        if !changed.contains(&part) {
            failures.push(format!("gina's changes left globex's {part} unchanged"));
        }
    }
    assert_no_failures(&failures);
}

/// Every list a user can ask for: the GET routes without path parameters, also asked for
/// globex explicitly, and the exports in each text format.
fn list_paths(route: &Route) -> Vec<String> {
    let path = route.path;
    let mut paths = vec![
        path.to_string(),
        format!("{path}?client=globex"),
        format!("{path}?client=globex&pipeline=orders"),
    ];
    if path.contains("/export/") {
        for format in ["csv", "json"] {
            paths.push(format!("{path}?format={format}"));
            paths.push(format!("{path}?format={format}&client=globex"));
        }
    }
    paths
}

fn is_list(route: &Route) -> bool {
    route.method == Method::GET && !has_parameters(route) && route.access != Access::Public
}

/// Things of globex whose ids can be told apart in an answer.
struct GlobexIds {
    passengers: Vec<String>,
    runs: Vec<i64>,
    tokens: Vec<i64>,
}

impl GlobexIds {
    async fn load(console: &Console) -> GlobexIds {
        let queue = QueueFilter {
            client: Some("globex".into()),
            ..QueueFilter::default()
        };
        let runs = RunFilter {
            client: Some("globex".into()),
            ..RunFilter::default()
        };
        GlobexIds {
            passengers: console
                .store
                .list(&queue, None, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id.to_string())
                .collect(),
            runs: console
                .store
                .runs_page(&runs, None, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect(),
            tokens: console
                .store
                .tokens(Some("globex"))
                .await
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect(),
        }
    }

    /// What of globex the answer to `path` shows, if anything. Links that repeat the query
    /// asked for (`client=globex`) show nothing that was not asked.
    fn leaked(&self, path: &str, body: &str) -> Option<String> {
        let mut body = body.to_string();
        if let Some((_, query)) = path.split_once('?') {
            for pair in query.split('&') {
                body = body.replace(pair, "");
            }
        }
        let body = body.as_str();
        if body.to_ascii_lowercase().contains("globex") {
            return Some("the word globex".into());
        }
        if let Some(id) = self.passengers.iter().find(|id| body.contains(id.as_str())) {
            return Some(format!("globex passenger {id}"));
        }
        if let Some(id) = self
            .runs
            .iter()
            .find(|id| body.contains(&format!("/runs/{id}\"")))
        {
            return Some(format!("a link to globex run {id}"));
        }
        if let Some(id) = self
            .tokens
            .iter()
            .find(|id| body.contains(&format!("/tokens/{id}/revoke\"")))
        {
            return Some(format!("globex token {id}"));
        }
        // In JSON, runs and tokens are objects with an id and a client.
        if let Ok(value) = serde_json::from_str::<Value>(body) {
            let mut found = None;
            walk(&value, &mut |object| {
                let Some(id) = object.get("id").and_then(Value::as_i64) else {
                    return;
                };
                if object.contains_key("pulled") && self.runs.contains(&id) {
                    found = Some(format!("globex run {id}"));
                }
                if object.contains_key("created_by") && self.tokens.contains(&id) {
                    found = Some(format!("globex token {id}"));
                }
            });
            return found;
        }
        None
    }
}

/// Calls `visit` on every object inside `value`.
fn walk(value: &Value, visit: &mut impl FnMut(&serde_json::Map<String, Value>)) {
    match value {
        Value::Object(object) => {
            visit(object);
            object.values().for_each(|v| walk(v, visit));
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, visit)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_acme_nothing_of_globex_and_root_both_clients() {
    let (console, _globex) = start().await;
    seed(&console, "acme").await;
    let acme = Objects::load(&console, "acme").await;
    let ada = User::new(&console, "acme", "ada", "administrator").await;
    let otto = User::new(&console, "acme", "otto", "operator").await;
    let gina = User::new(&console, "globex", "gina", "administrator").await;
    let root = User::new(&console, "root", "admin", "administrator").await;
    // Both clients have something in the audit log.
    for (user, client) in [(&ada, "acme"), (&gina, "globex")] {
        for action in ["pause", "resume"] {
            let path = format!("/api/v1/pipelines/{client}/orders/{action}");
            let answer = console
                .request(&user.token, Method::POST, &path, None)
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        }
    }
    let ids = GlobexIds::load(&console).await;
    assert!(ids.passengers.len() >= 8 && !ids.runs.is_empty() && !ids.tokens.is_empty());
    let mut failures = Vec::new();
    let routes = table();
    for route in routes.iter().filter(|r| is_list(r)) {
        for path in list_paths(route) {
            for user in [&ada, &otto] {
                let answer = console.get(user.who(&path), &path).await;
                // Not clean merely because refused: what the role allows answers.
                let allowed = match route.access {
                    Access::Root => false,
                    Access::Administrator => user.label == ada.label,
                    _ => true,
                };
                if allowed && answer.status != StatusCode::OK {
                    failures.push(report(&user.label, route, &path, "200", &answer));
                }
                if let Some(leak) = ids.leaked(&path, &answer.body) {
                    failures.push(report(
                        &user.label,
                        route,
                        &path,
                        &format!("nothing of globex, not {leak}"),
                        &answer,
                    ));
                }
            }
        }
        // The root administrator sees both clients. The export page is a form, not a list.
        if route.access == Access::Root || route.path == "/export" {
            continue;
        }
        let path = if route.path.contains("/export/") {
            format!("{}?format=csv", route.path)
        } else {
            route.path.to_string()
        };
        let answer = console.get(root.who(&path), &path).await;
        let shows_both = answer.body.contains("acme") && answer.body.contains("globex");
        if answer.status != StatusCode::OK || !shows_both {
            failures.push(report(
                &root.label,
                route,
                &path,
                "200 showing both acme and globex",
                &answer,
            ));
        }
    }
    // The same routes filled with acme's own things open for ada: the refusals of the other
    // tests come from the client, not from a wrongly filled path.
    for route in routes
        .iter()
        .filter(|r| r.method == Method::GET && has_parameters(r) && r.access != Access::Root)
    {
        for path in fill(route, &acme) {
            let answer = console.get(ada.who(&path), &path).await;
            if answer.status != StatusCode::OK {
                failures.push(report(&ada.label, route, &path, "200", &answer));
            }
        }
    }
    assert_no_failures(&failures);
}
