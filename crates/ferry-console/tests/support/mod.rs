//! A console on a real engine and store, in a temporary project with three clients:
//! `root` (administrator `admin`), `acme` (administrator `ada`, operator `otto`) and `globex`
//! (administrator `gina`, operator `gus`). Every password is `password-<user>`.
//!
//! `acme/orders` and `globex/orders` generate passengers and write them to files;
//! `acme/broken` pushes into a path that is a file, so its passengers die at once.
//! `connections.yaml` holds a secret that must never be shown: [`SECRET`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use ferry_core::Registry;
use ferry_engine::{Engine, Options};
use ferry_store::{ApiToken, PassengerState, PipelineKey, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A password in connections.yaml; no page, answer or log line may show it.
pub const SECRET: &str = "S3cr3t-Conn-Pass-7731";

pub struct Console {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub app: Router,
}

/// Who sends a request.
#[derive(Clone, Debug)]
pub enum Who {
    Anonymous,
    /// A console login: the session cookie and its CSRF token.
    Session {
        cookie: String,
        csrf: String,
    },
    /// An API token.
    Token(String),
}

/// An answer, its body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn registry() -> Arc<Registry> {
    Arc::new(ferry_connectors::registry())
}

fn write(dir: &Path, path: &str, content: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The administrator of each client of the test project.
pub fn administrator(client: &str) -> &'static str {
    match client {
        "root" => "admin",
        "acme" => "ada",
        "globex" => "gina",
        _ => panic!("no client {client} in the test project"),
    }
}

pub fn users(list: &[(&str, &str)]) -> String {
    let mut text = String::from("queue_life_span: 1h\nusers:\n");
    for (name, role) in list {
        let hash = ferry_console::auth::hash_password(&format!("password-{name}"));
        text.push_str(&format!(
            "  {name}:\n    role: {role}\n    password_hash: \"{hash}\"\n"
        ));
    }
    text
}

/// `count` generated passengers, written as files into `to`, tried once.
pub fn pipeline(count: u64, to: &str) -> String {
    format!(
        "description: test pipeline\nschedule: manual\npullers:\n  - type: generate\n    count: {count}\n\
         pushers:\n  - type: file\n    path: {to}\n    name_template: \"{{external_id}}.json\"\n\
         retry: {{ max_attempts: 1, backoff: 100ms, max_backoff: 100ms }}\n"
    )
}

impl Console {
    /// Puts a new input item of `client`'s `orders` pipeline in quarantine, as its puller does
    /// with a file it cannot take; returns the item's id.
    pub async fn quarantine_one(&self, client: &str) -> i64 {
        let item = ferry_store::Untakeable {
            puller: "inbox".into(),
            item: format!("broken-{}.xml", uuid::Uuid::now_v7()),
            fingerprint: "1:1".into(),
            reason: "cannot decode it".into(),
        };
        let key = ferry_store::PipelineKey::new(client, "orders");
        let now = chrono::Utc::now();
        self.store.quarantine(&key, &[item], now).await.unwrap();
        let listed = self.store.quarantined(Some(&key), None).await.unwrap();
        listed.iter().map(|item| item.id).max().unwrap()
    }

    /// A running console; each `orders` pipeline is run once and `broken` too, so the queue
    /// holds complete and dead passengers of both clients.
    pub async fn start() -> Console {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "ferry.yaml",
            "system_alias: ferry TEST\nstore: sqlite://data/ferry.db\nworkers: 2\n\
             clients:\n  acme: { paths: [out/acme, out/acme-extra, blocked] }\n  \
             globex: { paths: [out/globex] }\n",
        );
        write(
            d,
            "connections.yaml",
            &format!(
                "warehouse:\n  type: postgres\n  url: postgres://loader:{SECRET}@db.example/warehouse\n"
            ),
        );
        write(
            d,
            "clients/root/client.yaml",
            &users(&[("admin", "administrator")]),
        );
        write(
            d,
            "clients/acme/client.yaml",
            &users(&[("ada", "administrator"), ("otto", "operator")]),
        );
        write(
            d,
            "clients/globex/client.yaml",
            &users(&[("gina", "administrator"), ("gus", "operator")]),
        );
        write(
            d,
            "clients/acme/pipelines/orders.yaml",
            &pipeline(5, "out/acme"),
        );
        write(
            d,
            "clients/acme/pipelines/broken.yaml",
            &pipeline(2, "blocked"),
        );
        write(
            d,
            "clients/globex/pipelines/orders.yaml",
            &pipeline(5, "out/globex"),
        );
        // A file where the broken pipeline expects a directory.
        write(d, "blocked", "not a directory");
        let project = ferry_engine::registrar::load(d, &registry()).expect("valid test project");
        let store = ferry_store::open(&project.system.store, d).await.unwrap();
        let options = Options {
            idle_poll: Duration::from_millis(50),
            reload_every: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            ..Options::default()
        };
        let engine = Engine::start(project, store.clone(), registry(), options)
            .await
            .unwrap();
        let app = ferry_console::router(engine.clone())
            .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let console = Console {
            dir,
            engine,
            store,
            app,
        };
        for (client, pipeline) in [("acme", "orders"), ("acme", "broken"), ("globex", "orders")] {
            console
                .engine
                .run_now(&PipelineKey::new(client, pipeline))
                .unwrap();
        }
        console
            .wait_for("acme", "orders", PassengerState::Complete, 5)
            .await;
        console
            .wait_for("globex", "orders", PassengerState::Complete, 5)
            .await;
        console
            .wait_for("acme", "broken", PassengerState::Dead, 2)
            .await;
        console
    }

    /// Seats `passenger` into `client/pipeline` as pulled now, and wakes the workers.
    pub async fn seat(&self, client: &str, pipeline: &str, mut passenger: ferry_core::Passenger) {
        let project = self.engine.project();
        let def = project
            .pipeline(client, pipeline)
            .expect("a pipeline of the test project");
        passenger.client = client.into();
        passenger.pipeline = pipeline.into();
        self.store
            .seat(
                &PipelineKey::new(client, pipeline),
                &def.version,
                &def.steps(),
                &[passenger],
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        self.engine.wake();
    }

    /// Waits until the pipeline has `n` passengers in `state`.
    pub async fn wait_for(&self, client: &str, pipeline: &str, state: PassengerState, n: u64) {
        let key = PipelineKey::new(client, pipeline);
        eventually(&format!("{n} {state} passengers in {key}"), || async {
            let counts = self.store.counts(Some(client)).await.unwrap();
            counts
                .get(&key)
                .and_then(|c| c.get(&state))
                .copied()
                .unwrap_or(0)
                >= n
        })
        .await;
    }

    /// Logs in through the login form.
    pub async fn login(&self, client: &str, user: &str) -> Who {
        let form = self
            .send(Request::get("/login").body(Body::empty()).unwrap())
            .await;
        let login_cookie = set_cookie(&form.headers, "ferry_login").expect("login CSRF cookie");
        let csrf = hidden_csrf(&form.body);
        let body = serde_urlencoded::to_string([
            ("csrf", csrf.as_str()),
            ("client", client),
            ("user", user),
            ("password", &format!("password-{user}")),
        ])
        .unwrap();
        let answer = self
            .send(
                Request::post("/login")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::COOKIE, format!("ferry_login={login_cookie}"))
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "login of {client}/{user}: {}",
            answer.body
        );
        let cookie = set_cookie(&answer.headers, "ferry_session").expect("session cookie");
        let page = self
            .get(
                &Who::Session {
                    cookie: cookie.clone(),
                    csrf: String::new(),
                },
                "/",
            )
            .await;
        Who::Session {
            cookie,
            csrf: hidden_csrf(&page.body),
        }
    }

    /// An API token of `client` with `role`, created in the store in the name of the client's
    /// administrator (a token acts with at most its maker's role).
    pub async fn token(&self, client: &str, role: &str) -> Who {
        let secret = format!("ferry_test_{client}_{role}_{}", rand_suffix());
        let token = ApiToken {
            id: 0,
            client: client.into(),
            name: format!("{role}-token"),
            role: role.into(),
            created_by: format!("{client}/{}", administrator(client)),
            created_at: chrono::Utc::now(),
            last_used_at: None,
        };
        self.store
            .create_token(&ferry_console::auth::digest(&secret), &token)
            .await
            .unwrap();
        Who::Token(secret)
    }

    pub async fn get(&self, who: &Who, path: &str) -> Answer {
        self.request(who, Method::GET, path, None).await
    }

    /// A console form POST; sessions send their CSRF token unless `fields` has one.
    pub async fn post_form(&self, who: &Who, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Who::Session { csrf, .. } = who
            && !fields.iter().any(|(k, _)| k == "csrf")
        {
            fields.push(("csrf".into(), csrf.clone()));
        }
        let body = serde_urlencoded::to_string(&fields).unwrap();
        self.request(
            who,
            Method::POST,
            path,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
    }

    /// An API call with a JSON body.
    pub async fn send_json(
        &self,
        who: &Who,
        method: Method,
        path: &str,
        json: &serde_json::Value,
    ) -> Answer {
        self.request(
            who,
            method,
            path,
            Some(("application/json", json.to_string())),
        )
        .await
    }

    pub async fn request(
        &self,
        who: &Who,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        match who {
            Who::Anonymous => {}
            Who::Session { cookie, .. } => {
                builder = builder.header(header::COOKIE, format!("ferry_session={cookie}"));
            }
            Who::Token(secret) => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {secret}"));
            }
        }
        let request = match body {
            Some((content_type, body)) => builder
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// A user with a console session and an API token of the same role.
pub struct User {
    pub label: String,
    pub session: Who,
    pub token: Who,
}

impl User {
    pub async fn new(console: &Console, client: &str, user: &str, role: &str) -> User {
        User {
            label: format!("{client}/{user}"),
            session: console.login(client, user).await,
            token: console.token(client, role).await,
        }
    }

    /// The credential a route takes: the token under `/api/`, the session elsewhere.
    pub fn who(&self, path: &str) -> &Who {
        if ferry_console::auth::is_api(path) {
            &self.token
        } else {
            &self.session
        }
    }
}

/// The value a `Set-Cookie` header gives cookie `name`.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The first hidden CSRF field of a page.
pub fn hidden_csrf(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page
        .find(marker)
        .map(|i| i + marker.len())
        .unwrap_or_else(|| panic!("no CSRF field in {page}"));
    page[start..].split('"').next().unwrap().to_string()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
