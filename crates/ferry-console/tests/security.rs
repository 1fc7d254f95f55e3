//! The console's security rules (DESIGN.md, "Console and API"): pulled strings escaped,
//! attachments served as downloads, CSRF tokens on every console state change and never a GET
//! that changes state, password guessing slowed down, no secret in pages, answers or logs,
//! HttpOnly SameSite session cookies that logout ends, API tokens stored hashed and revocable.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body as HttpBody;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use ferry_console::auth::{csrf_refused, digest};
use ferry_console::routes::{Route, table};
use ferry_core::{Attachment, Body, Passenger, PassengerId};
use ferry_store::{PassengerState, PipelineKey, QueueFilter, RunFilter, StateCounts};
use serde_json::{Value, json};
use support::{Answer, Console, SECRET, User, Who, eventually, hidden_csrf, set_cookie};

const XSS: &str = "<script>alert(1)</script>";
const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

// ---- helpers ----

/// Things of one client that fill the path parameters of the table's GET routes.
struct Things {
    client: String,
    pipeline: String,
    passenger: PassengerId,
    run: i64,
    /// Values for `{*file}`: the pipeline's definition and files that must never be shown.
    files: Vec<String>,
}

impl Things {
    async fn load(console: &Console, client: &str) -> Things {
        let queue = QueueFilter {
            client: Some(client.into()),
            ..QueueFilter::default()
        };
        let runs = RunFilter {
            client: Some(client.into()),
            ..RunFilter::default()
        };
        Things {
            client: client.into(),
            pipeline: "orders".into(),
            passenger: console.store.list(&queue, None, 1).await.unwrap()[0].id,
            run: console.store.runs_page(&runs, None, 1).await.unwrap()[0].id,
            files: vec![
                format!("clients/{client}/pipelines/orders.yaml"),
                "ferry.yaml".into(),
                "connections.yaml".into(),
                format!("clients/{client}/client.yaml"),
                "clients/root/client.yaml".into(),
                format!("clients/{client}/pipelines/../../../connections.yaml"),
                "data/ferry.db".into(),
            ],
        }
    }
}

/// Every concrete path a GET `route` is crawled with; panics, naming the route, on a
/// parameter without a rule here.
fn fill(route: &Route, t: &Things) -> Vec<String> {
    let under = |what: &str| {
        route
            .path
            .trim_start_matches("/api/v1")
            .starts_with(&format!("/{what}/"))
    };
    let mut paths = vec![String::new()];
    for segment in route.path.split('/').skip(1) {
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            paths.iter_mut().for_each(|p| *p = format!("{p}/{segment}"));
            continue;
        };
        let values: Vec<String> = match name.trim_start_matches('*') {
            "client" => vec![t.client.clone()],
            "pipeline" => vec![t.pipeline.clone()],
            "file" => t.files.clone(),
            "index" if under("passengers") => vec!["0".into()],
            "id" if under("passengers") => vec![t.passenger.to_string()],
            "id" if under("runs") => vec![t.run.to_string()],
            _ => panic!(
                "route {} {}: no rule fills `{segment}`; add one to fill() in tests/security.rs",
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

fn form(fields: &[(&str, &str)]) -> Option<(&'static str, String)> {
    Some((
        "application/x-www-form-urlencoded",
        serde_urlencoded::to_string(fields).unwrap(),
    ))
}

/// The newest dead passenger of `client`.
async fn dead_passenger(console: &Console, client: &str) -> PassengerId {
    let filter = QueueFilter {
        client: Some(client.into()),
        state: Some(PassengerState::Dead),
        ..QueueFilter::default()
    };
    console.store.list(&filter, None, 1).await.unwrap()[0].id
}

/// Everything a request could change, of every client. Token use times are left out: using a
/// token is recorded, on purpose.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: BTreeMap<PipelineKey, StateCounts>,
    paused: Vec<PipelineKey>,
    paused_in_engine: Vec<PipelineKey>,
    audit: usize,
    tokens: Vec<(i64, String, String, String)>,
    runs: Vec<(i64, &'static str)>,
    steps: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    quarantined: Vec<ferry_store::Quarantined>,
}

impl Snapshot {
    async fn take(console: &Console) -> Snapshot {
        let store = &console.store;
        let project = console.engine.project();
        let mut steps = BTreeMap::new();
        for entry in store
            .list(&QueueFilter::default(), None, 10_000)
            .await
            .unwrap()
        {
            let detail = store.get(entry.id).await.unwrap();
            steps.insert(
                entry.id.to_string(),
                format!("{:?} {:?}", detail.entry.state, detail.steps),
            );
        }
        let mut files = BTreeMap::new();
        read_files(&console.dir.path().join("clients"), &mut files);
        Snapshot {
            counts: store.counts(None).await.unwrap(),
            paused: store.paused().await.unwrap(),
            paused_in_engine: project
                .pipelines()
                .map(|p| PipelineKey::new(&p.client, &p.name))
                .filter(|k| console.engine.is_paused(k))
                .collect(),
            audit: store.audit_log(None, None, 100_000).await.unwrap().len(),
            tokens: store
                .tokens(None)
                .await
                .unwrap()
                .into_iter()
                .map(|t| (t.id, t.client, t.name, t.role))
                .collect(),
            runs: store
                .runs_page(&RunFilter::default(), None, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.id, r.status.as_str()))
                .collect(),
            steps,
            files,
            quarantined: store.quarantined(None, None).await.unwrap(),
        }
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

/// Every text value of every row of `table` in the project's SQLite store, read-only.
fn stored_text(console: &Console, table: &str) -> Vec<String> {
    use rusqlite::types::Value as Sql;
    let path = console.dir.path().join("data/ferry.db");
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut statement = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
    let columns = statement.column_count();
    let mut rows = statement.query([]).unwrap();
    let mut values = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        for i in 0..columns {
            values.push(match row.get::<_, Sql>(i).unwrap() {
                Sql::Null => String::new(),
                Sql::Integer(n) => n.to_string(),
                Sql::Real(x) => x.to_string(),
                Sql::Text(text) => text,
                Sql::Blob(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
    }
    values
}

/// A login through the form, as a browser does it: the form, then its POST.
async fn log_in(console: &Console, client: &str, user: &str, password: &str) -> Answer {
    let form_page = console.get(&Who::Anonymous, "/login").await;
    let cookie = set_cookie(&form_page.headers, "ferry_login").expect("login CSRF cookie");
    let csrf = hidden_csrf(&form_page.body);
    post_login(console, Some(&cookie), Some(&csrf), client, user, password).await
}

async fn post_login(
    console: &Console,
    cookie: Option<&str>,
    csrf: Option<&str>,
    client: &str,
    user: &str,
    password: &str,
) -> Answer {
    let mut fields = vec![("client", client), ("user", user), ("password", password)];
    if let Some(csrf) = csrf {
        fields.push(("csrf", csrf));
    }
    let mut request =
        Request::post("/login").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("ferry_login={cookie}"));
    }
    let body = serde_urlencoded::to_string(&fields).unwrap();
    console
        .send(request.body(HttpBody::from(body)).unwrap())
        .await
}

/// The `Set-Cookie` header that sets `name`, whole.
fn set_cookie_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// A console state change: who posts to which URL, with which form fields (CSRF aside).
type Change<'a> = (&'a Who, String, Vec<(&'a str, &'a str)>);

// ---- (a) escaping and downloads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_strings_are_escaped_and_attachments_are_downloads() {
    let console = Console::start().await;
    let mut passenger = Passenger::pulled(format!("source{XSS}"), format!("order{XSS}"));
    passenger
        .metadata
        .insert(format!("key{XSS}"), format!("value{XSS}"));
    passenger.body = Body::json(&json!({ "comment": XSS }));
    let content = format!("<html><body>{XSS}</body></html>");
    passenger.attachments.push(Attachment {
        name: format!("{XSS}.html"),
        media_type: "text/html".into(),
        content: Bytes::from(content.clone()),
    });
    let id = passenger.id;
    console.seat("acme", "orders", passenger).await;
    let ada = console.login("acme", "ada").await;
    let pages = [
        format!("/passengers/{id}"),
        "/queue".to_string(),
        "/queue?text=script".to_string(),
    ];
    for path in &pages {
        let page = console.get(&ada, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            !page.body.contains("<script>alert"),
            "{path} shows the script unescaped:\n{}",
            page.body
        );
        assert!(
            page.body.contains(&format!("order{ESCAPED}")),
            "{path} shows the external id, escaped:\n{}",
            page.body
        );
        let policy = page
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
            "{path}: no inline scripts run: {policy}"
        );
        assert!(
            policy.contains("base-uri 'none'"),
            "{path}: no <base> moves relative links: {policy}"
        );
    }
    let detail = console.get(&ada, &format!("/passengers/{id}")).await.body;
    for shown in [
        format!("source{ESCAPED}"),
        format!("key{ESCAPED}"),
        format!("value{ESCAPED}"),
        format!("{ESCAPED}.html"),
    ] {
        assert!(detail.contains(&shown), "the page shows {shown}:\n{detail}");
    }
    // A page the passenger may end up on when its push failed: its error names it. Pulled
    // names and reasons of quarantined input show there too.
    let untakeable = ferry_store::Untakeable {
        puller: "inbox".into(),
        item: format!("{XSS}.xml"),
        fingerprint: "1:1".into(),
        reason: format!("cannot decode {XSS}.xml"),
    };
    let key = ferry_store::PipelineKey::new("acme", "orders");
    let now = chrono::Utc::now();
    console
        .store
        .quarantine(&key, &[untakeable], now)
        .await
        .unwrap();
    let dead = console.get(&ada, "/dead").await;
    assert!(!dead.body.contains("<script>alert"), "{}", dead.body);
    assert!(
        dead.body.contains(&format!("cannot decode {ESCAPED}.xml")),
        "the dead letters page shows the quarantined item, escaped:\n{}",
        dead.body
    );

    let token = console.token("acme", "operator").await;
    let downloads = [
        (
            &ada,
            format!("/passengers/{id}/attachments/0"),
            content.clone(),
        ),
        (
            &ada,
            format!("/passengers/{id}/body"),
            json!({ "comment": XSS }).to_string(),
        ),
        (
            &token,
            format!("/api/v1/passengers/{id}/attachments/0"),
            content,
        ),
    ];
    for (who, path, expected) in downloads {
        let answer = console.get(who, &path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        let headers = &answer.headers;
        let value = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let disposition = value(header::CONTENT_DISPOSITION);
        assert!(
            disposition.starts_with("attachment"),
            "{path}: Content-Disposition {disposition:?}"
        );
        assert!(
            !disposition.contains('<') && disposition.matches('"').count() == 2,
            "{path}: the file name is made safe: {disposition:?}"
        );
        assert_eq!(value(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        assert_eq!(
            value(header::CONTENT_TYPE),
            "application/octet-stream",
            "{path}"
        );
        assert_eq!(answer.body, expected, "{path}: the content, unchanged");
    }
    // The API's JSON is JSON, which browsers do not render as a page.
    let api = console
        .get(&token, &format!("/api/v1/passengers/{id}"))
        .await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(
        api.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_response_is_shown_escaped_on_the_passenger_page() {
    let console = Console::start().await;
    // A pipeline no worker serves: the test holds the lease and reports, as a worker whose
    // pusher keeps what the target answered (the `http` pusher's `keep_response`).
    let key = PipelineKey::new("acme", "held");
    let passenger = Passenger::pulled("shop", "order-1");
    let id = passenger.id;
    let steps = [ferry_core::config::StepDef {
        kind: ferry_core::config::StepKind::Pusher,
        name: "api".into(),
    }];
    let now = chrono::Utc::now();
    let store = &console.store;
    store
        .seat(&key, "v1", &steps, &[passenger], now)
        .await
        .unwrap();
    let leased = store
        .lease(&key, 10, std::time::Duration::from_secs(60), now)
        .await
        .unwrap();
    let result = format!("HTTP 201 Created\nnote: {XSS}");
    let report = ferry_store::Finished {
        id,
        token: leased[0].token,
        processed: None,
        steps: vec![(0, ferry_store::StepChange::DoneWith { result })],
        split: None,
    };
    assert_eq!(store.finish(&[report], now).await.unwrap(), 1);

    let ada = console.login("acme", "ada").await;
    let page = console.get(&ada, &format!("/passengers/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Responses"), "{}", page.body);
    assert!(
        page.body
            .contains(&format!("HTTP 201 Created\nnote: {ESCAPED}")),
        "the answer is shown, escaped:\n{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
}

// ---- (b) CSRF and GETs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_state_changes_need_the_session_csrf_token_and_gets_change_nothing() {
    let console = Console::start().await;
    let ada = console.login("acme", "ada").await;
    let otto = console.login("acme", "otto").await;
    let root = console.login("root", "admin").await;
    let ada_token = console.token("acme", "administrator").await;
    let root_token = console.token("root", "administrator").await;
    let dead = dead_passenger(&console, "acme").await;
    let group = console.store.dead_groups(Some("acme")).await.unwrap()[0].clone();
    console.token("acme", "operator").await;
    let spare = console.store.tokens(Some("acme")).await.unwrap()[0].id;
    let orders = std::fs::read_to_string(
        console
            .dir
            .path()
            .join("clients/acme/pipelines/orders.yaml"),
    )
    .unwrap();
    let edited = format!("{orders}# edited\n");
    let quarantined = console.quarantine_one("acme").await;
    let group_fields = [
        ("client", group.client.as_str()),
        ("pipeline", group.pipeline.as_str()),
        ("error", group.error.as_str()),
    ];
    let changes: Vec<Change> = vec![
        (&ada, "/pipelines/acme/orders/pause".into(), vec![]),
        (&ada, "/pipelines/acme/orders/run".into(), vec![]),
        (&ada, format!("/passengers/{dead}/retry"), vec![]),
        (&ada, format!("/passengers/{dead}/replay"), vec![]),
        (&ada, format!("/passengers/{dead}/discard"), vec![]),
        (&ada, format!("/passengers/{dead}/steps/0/skip"), vec![]),
        (&ada, "/dead/replay".into(), group_fields.to_vec()),
        (&ada, "/dead/discard".into(), group_fields.to_vec()),
        (&ada, format!("/quarantine/{quarantined}/retry"), vec![]),
        (&ada, format!("/quarantine/{quarantined}/discard"), vec![]),
        (
            &ada,
            "/tokens".into(),
            vec![("name", "sneaky"), ("role", "operator")],
        ),
        (&ada, format!("/tokens/{spare}/revoke"), vec![]),
        (
            &ada,
            "/definitions/clients/acme/pipelines/orders.yaml".into(),
            vec![("content", edited.as_str())],
        ),
        (&ada, "/logout".into(), vec![]),
        (&root, "/system/pause".into(), vec![]),
        (&root, "/system/shutdown".into(), vec![]),
    ];
    let Who::Session {
        csrf: otto_csrf, ..
    } = &otto
    else {
        unreachable!()
    };
    let before = Snapshot::take(&console).await;
    let refused = csrf_refused();
    let mut failures = Vec::new();
    for (who, path, fields) in &changes {
        let variants: [(&str, Option<&str>); 4] = [
            ("no csrf field", None),
            ("an empty csrf field", Some("")),
            ("a wrong csrf field", Some("not-the-token")),
            ("another session's csrf token", Some(otto_csrf.as_str())),
        ];
        for (what, csrf) in variants {
            let mut fields = fields.clone();
            if let Some(csrf) = csrf {
                fields.push(("csrf", csrf));
            }
            let answer = console
                .request(who, Method::POST, path, form(&fields))
                .await;
            if answer.status != StatusCode::FORBIDDEN || !answer.body.contains(&refused.message) {
                failures.push(format!(
                    "POST {path} with {what}: expected 403 csrf, got {}: {}",
                    answer.status,
                    answer.body.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    // The API takes tokens, not cookies, so a session cannot be used there without CSRF.
    for path in [
        "/api/v1/pipelines/acme/orders/pause".to_string(),
        format!("/api/v1/passengers/{dead}/discard"),
    ] {
        let answer = console.request(&ada, Method::POST, &path, None).await;
        if answer.status != StatusCode::UNAUTHORIZED {
            failures.push(format!(
                "POST {path} with a session cookie: expected 401, got {}",
                answer.status
            ));
        }
    }
    // GET on an action's URL does nothing.
    // (A definition's URL is also its page: that GET shows it.)
    let mut gets: Vec<(&Who, String)> = changes
        .iter()
        .filter(|(_, path, _)| !path.starts_with("/definitions/"))
        .map(|(who, path, _)| (*who, path.clone()))
        .collect();
    gets.extend([
        (&ada_token, "/api/v1/pipelines/acme/orders/pause".into()),
        (&ada_token, "/api/v1/pipelines/acme/orders/run".into()),
        (&ada_token, format!("/api/v1/passengers/{dead}/replay")),
        (&ada_token, format!("/api/v1/passengers/{dead}/discard")),
        (
            &ada_token,
            format!("/api/v1/passengers/{dead}/steps/0/skip"),
        ),
        (&ada_token, "/api/v1/dead/discard".into()),
        (&root_token, "/api/v1/system/pause".into()),
        (&root_token, "/api/v1/system/shutdown".into()),
    ]);
    for (who, path) in &gets {
        let answer = console.get(who, path).await;
        let allowed = [StatusCode::METHOD_NOT_ALLOWED, StatusCode::NOT_FOUND];
        if !allowed.contains(&answer.status) {
            failures.push(format!(
                "GET {path}: expected 405 or 404, got {}",
                answer.status
            ));
        }
    }
    // And no GET of the table changes anything, whoever asks.
    let ada_user = User {
        label: "acme/ada".into(),
        session: ada.clone(),
        token: ada_token.clone(),
    };
    let root_user = User {
        label: "root/admin".into(),
        session: root.clone(),
        token: root_token.clone(),
    };
    let acme = Things::load(&console, "acme").await;
    for user in [&ada_user, &root_user] {
        for route in table().iter().filter(|r| r.method == Method::GET) {
            for path in fill(route, &acme) {
                console.get(user.who(&path), &path).await;
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = Snapshot::take(&console).await;
    if before != after {
        failures.push(format!(
            "state changed:\nbefore: {before:#?}\nafter: {after:#?}"
        ));
    }
    let stopping = std::time::Duration::from_millis(50);
    assert!(
        tokio::time::timeout(stopping, console.engine.stopping())
            .await
            .is_err(),
        "a refused shutdown stopped ferry"
    );
    assert_eq!(
        console.get(&ada, "/").await.status,
        StatusCode::OK,
        "the refused logout left the session alone"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // With the session's own token the same change is made: the refusals were the CSRF check.
    let done = console
        .post_form(&ada, "/pipelines/acme/orders/pause", &[])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        console
            .engine
            .is_paused(&PipelineKey::new("acme", "orders"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_form_needs_its_csrf_cookie_and_field() {
    let console = Console::start().await;
    let first = console.get(&Who::Anonymous, "/login").await;
    let second = console.get(&Who::Anonymous, "/login").await;
    let cookie = set_cookie(&first.headers, "ferry_login").unwrap();
    let csrf = hidden_csrf(&first.body);
    let other_csrf = hidden_csrf(&second.body);
    assert_ne!(csrf, other_csrf, "a fresh token per form");
    let refused = csrf_refused();
    let attempts = [
        ("no cookie", None, Some(csrf.as_str())),
        ("no field", Some(cookie.as_str()), None),
        ("an empty field", Some(cookie.as_str()), Some("")),
        (
            "another form's field",
            Some(cookie.as_str()),
            Some(other_csrf.as_str()),
        ),
        ("an empty cookie and field", Some(""), Some("")),
    ];
    for (what, cookie, csrf) in attempts {
        let answer = post_login(&console, cookie, csrf, "acme", "ada", "password-ada").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "login with {what}");
        assert!(answer.body.contains(&refused.message), "login with {what}");
        assert_eq!(
            set_cookie(&answer.headers, "ferry_session"),
            None,
            "login with {what}: no session"
        );
    }
    let answer = post_login(
        &console,
        Some(&cookie),
        Some(&csrf),
        "acme",
        "ada",
        "password-ada",
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert!(set_cookie(&answer.headers, "ferry_session").is_some());
}

// ---- (c) password guessing ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_slowed_down() {
    let console = Console::start().await;
    let mut failures = 0;
    loop {
        let answer = log_in(&console, "acme", "ada", "wrong-password").await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        failures += 1;
        assert!(
            failures <= 8,
            "{failures} wrong passwords in a row and still no delay"
        );
    }
    assert!(failures >= 3, "a typo or two is not punished");
    // Even the right password waits now, for this account from this address.
    for (client, user) in [("acme", "ada")] {
        let answer = log_in(&console, client, user, &format!("password-{user}")).await;
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{client}/{user}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("too many failed logins"),
            "{}",
            answer.body
        );
        assert_eq!(set_cookie(&answer.headers, "ferry_session"), None);
        let retry_after = answer
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "{client}/{user}: Retry-After in seconds, got headers {:?}",
            answer.headers
        );
    }
}

// ---- (d) secrets ----

/// Everything logged in this test process, from any thread.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_pages_answers_or_logs() {
    let log = captured_log();
    let console = Console::start().await;
    let root = User::new(&console, "root", "admin", "administrator").await;
    let ada = User::new(&console, "acme", "ada", "administrator").await;
    let otto = User::new(&console, "acme", "otto", "operator").await;
    // Someone types the connection's password into the login form.
    let wrong = log_in(&console, "acme", "otto", SECRET).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let acme = Things::load(&console, "acme").await;
    let globex = Things::load(&console, "globex").await;
    let mut token_secrets = Vec::new();
    for user in [&root, &ada, &otto] {
        if let Who::Token(secret) = &user.token {
            token_secrets.push(secret.clone());
        }
    }
    let mut secrets = vec![
        SECRET.to_string(),
        "password_hash".to_string(),
        "$argon2".to_string(),
    ];
    secrets.extend(token_secrets.iter().cloned());
    let mut failures = Vec::new();
    let mut crawled = 0;
    let routes = table();
    for (user, things) in [
        (&root, &acme),
        (&root, &globex),
        (&ada, &acme),
        (&otto, &acme),
    ] {
        for route in routes.iter().filter(|r| r.method == Method::GET) {
            let mut paths = fill(route, things);
            if route.path.contains("/export/") {
                let path = route.path;
                paths.extend(["csv", "json", "xlsx"].map(|f| format!("{path}?format={f}")));
            }
            for path in paths {
                let answer = console.get(user.who(&path), &path).await;
                crawled += 1;
                let headers = format!("{:?}", answer.headers);
                for secret in &secrets {
                    if answer.body.contains(secret.as_str()) || headers.contains(secret.as_str()) {
                        failures.push(format!(
                            "{}: GET {path} ({}) shows `{secret}`",
                            user.label, answer.status
                        ));
                    }
                }
            }
        }
    }
    // Prometheus scrapes with a token.
    let metrics = console.get(&root.token, "/metrics").await;
    if metrics.status != StatusCode::OK {
        failures.push(format!(
            "GET /metrics with a root token: expected 200, got {}",
            metrics.status
        ));
    }
    for secret in &secrets {
        if metrics.body.contains(secret.as_str()) {
            failures.push(format!("/metrics shows `{secret}`"));
        }
    }
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(log.contains("failed login"), "the log is captured:\n{log}");
    let mut logged = secrets.clone();
    logged.extend(["password-admin", "password-ada", "password-otto"].map(String::from));
    for secret in &logged {
        if log.contains(secret.as_str()) {
            let line = log.lines().find(|l| l.contains(secret.as_str())).unwrap();
            failures.push(format!("the log shows `{secret}`: {line}"));
        }
    }
    assert!(crawled > 50, "crawled {crawled} answers");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- (e) sessions and tokens ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_tokens_are_kept_safe() {
    let console = Console::start().await;
    let form_page = console.get(&Who::Anonymous, "/login").await;
    let login_cookie = set_cookie_header(&form_page.headers, "ferry_login").unwrap();
    let answer = log_in(&console, "acme", "ada", "password-ada").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let session_cookie = set_cookie_header(&answer.headers, "ferry_session").unwrap();
    for cookie in [&login_cookie, &session_cookie] {
        let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
        assert!(attributes.contains(&"HttpOnly"), "{cookie}");
        assert!(attributes.contains(&"SameSite=Strict"), "{cookie}");
        assert!(attributes.contains(&"Path=/"), "{cookie}");
    }
    let cookie = set_cookie(&answer.headers, "ferry_session").unwrap();
    let page = console
        .get(
            &Who::Session {
                cookie: cookie.clone(),
                csrf: String::new(),
            },
            "/",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let ada = Who::Session {
        cookie: cookie.clone(),
        csrf: hidden_csrf(&page.body),
    };
    // The store keeps a hash of the session id, not the id.
    let sessions = stored_text(&console, "sessions");
    assert!(!sessions.is_empty(), "sessions are stored");
    assert!(
        sessions.iter().any(|v| *v == digest(&cookie)),
        "{sessions:?}"
    );
    assert!(
        !sessions.iter().any(|v| v.contains(&cookie)),
        "{sessions:?}"
    );

    // A token made in the console works until it is revoked there.
    let created = console
        .post_form(&ada, "/tokens", &[("name", "deploy"), ("role", "operator")])
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let marker = "id=\"new-token\">";
    let start = created
        .body
        .find(marker)
        .expect("the new token is shown once")
        + marker.len();
    let form_secret = created.body[start..].split('<').next().unwrap().to_string();
    let form_token = Who::Token(form_secret.clone());
    assert_eq!(
        console.get(&form_token, "/api/v1/queue").await.status,
        StatusCode::OK
    );
    // A token made through the API works until it is revoked there.
    let admin_token = console.token("acme", "administrator").await;
    let answer = console
        .send_json(
            &admin_token,
            Method::POST,
            "/api/v1/tokens",
            &json!({ "name": "ci", "role": "operator" }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let created: Value = answer.json();
    let api_secret = created["secret"].as_str().unwrap().to_string();
    let api_token = Who::Token(api_secret.clone());
    assert_eq!(
        console.get(&api_token, "/api/v1/queue").await.status,
        StatusCode::OK
    );
    // Stored hashed: neither secret is in the store, their hashes are.
    let stored = stored_text(&console, "api_tokens");
    for secret in [&form_secret, &api_secret] {
        assert!(
            !stored.iter().any(|v| v.contains(secret.as_str())),
            "the secret is stored: {stored:?}"
        );
        assert!(stored.contains(&digest(secret)), "{stored:?}");
    }
    let tokens = console.store.tokens(Some("acme")).await.unwrap();
    let form_id = tokens.iter().find(|t| t.name == "deploy").unwrap().id;
    let revoked = console
        .post_form(&ada, &format!("/tokens/{form_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let api_id = created["id"].as_i64().unwrap();
    let revoked = console
        .request(
            &admin_token,
            Method::DELETE,
            &format!("/api/v1/tokens/{api_id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    for token in [&form_token, &api_token] {
        let answer = console.get(token, "/api/v1/queue").await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "revoked token works"
        );
    }

    // Logout ends the session on the server: the old cookie no longer opens anything.
    let out = console.post_form(&ada, "/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let cleared = set_cookie_header(&out.headers, "ferry_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = console.get(&ada, "/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.headers.get(header::LOCATION).unwrap(), "/login");
    let pause = console
        .post_form(&ada, "/pipelines/acme/orders/pause", &[])
        .await;
    assert_eq!(pause.status, StatusCode::SEE_OTHER);
    assert!(
        !console
            .engine
            .is_paused(&PipelineKey::new("acme", "orders")),
        "the old session changed something"
    );
    assert!(
        !stored_text(&console, "sessions")
            .iter()
            .any(|v| *v == digest(&cookie)),
        "the session is deleted from the store"
    );
}

/// A token acts with at most its maker's role of now: demoting the person takes the token's
/// administration away, removing them takes the token.
#[tokio::test]
async fn a_token_follows_its_makers_role() {
    let console = Console::start().await;
    let ada = console.login("acme", "ada").await;
    let created = console
        .post_form(
            &ada,
            "/tokens",
            &[("name", "deploy"), ("role", "administrator")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let marker = "id=\"new-token\">";
    let start = created.body.find(marker).expect("the new token is shown") + marker.len();
    let token = Who::Token(created.body[start..].split('<').next().unwrap().to_string());
    let status = |path: &'static str| {
        let (console, token) = (&console, &token);
        async move { console.get(token, path).await.status }
    };
    assert_eq!(status("/api/v1/audit").await, StatusCode::OK);

    let client_yaml = console.dir.path().join("clients/acme/client.yaml");
    let acme_role = |user: &'static str| {
        let engine = &console.engine;
        move || {
            let project = engine.project();
            project.clients["acme"].users.get(user).map(|u| u.role)
        }
    };
    std::fs::write(
        &client_yaml,
        support::users(&[("ada", "operator"), ("otto", "operator")]),
    )
    .unwrap();
    let ada_role = acme_role("ada");
    eventually("ada is an operator", || async {
        ada_role() == Some(ferry_core::config::UserRole::Operator)
    })
    .await;
    assert_eq!(status("/api/v1/audit").await, StatusCode::FORBIDDEN);
    assert_eq!(status("/api/v1/queue").await, StatusCode::OK);

    std::fs::write(&client_yaml, support::users(&[("otto", "operator")])).unwrap();
    eventually("ada is gone", || async { ada_role().is_none() }).await;
    assert_eq!(status("/api/v1/queue").await, StatusCode::UNAUTHORIZED);
}

/// Issue 12: a link cannot make a page of ferry say what its author wants; the address names a
/// notice from a fixed list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_come_from_a_fixed_list_not_from_the_address() {
    let console = Console::start().await;
    let ada = console.login("acme", "ada").await;
    let forged = console
        .get(
            &ada,
            "/?notice=Your%20session%20expired%3A%20log%20in%20at%20evil.example",
        )
        .await;
    assert_eq!(forged.status, StatusCode::OK);
    assert!(!forged.body.contains("evil.example"), "{}", forged.body);
    assert!(!forged.body.contains("class=\"notice\""), "{}", forged.body);
    let known = console.get(&ada, "/dead?notice=replayed&n=3").await;
    assert!(
        known
            .body
            .contains("Replaying 3 passenger(s) from the start."),
        "{}",
        known.body
    );
}
