//! The page shell every console page shares: the system alias, navigation, the demo-password
//! warning, notices, and error pages; plus small formatting helpers.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_core::Timestamp;
use ferry_core::config::Project;
use maud::{DOCTYPE, Markup, html};

use crate::AppState;
use crate::auth::{self, Principal};
use crate::error::ApiError;

/// Whether any account of the project still has the demo password. Checking a hash costs an
/// argon2 verification, so results are kept per hash.
#[derive(Default)]
pub struct DemoCheck {
    known: Mutex<HashMap<String, bool>>,
}

impl DemoCheck {
    pub fn any(&self, project: &Project) -> bool {
        let users = project.clients.values().flat_map(|c| c.users.values());
        let mut known = self.known.lock().expect("demo check lock");
        let mut any = false;
        for user in users {
            let demo = *known
                .entry(user.password_hash.clone())
                .or_insert_with(|| auth::verify_password(&user.password_hash, auth::DEMO_PASSWORD));
            any |= demo;
        }
        any
    }
}

/// What the shell around a page shows.
pub struct Chrome {
    pub alias: String,
    pub principal: Option<Principal>,
    pub demo_passwords: bool,
}

impl Chrome {
    pub fn of(state: &AppState, principal: Option<&Principal>) -> Chrome {
        let project = state.engine.project();
        Chrome {
            alias: project.system.alias.clone(),
            principal: principal.cloned(),
            demo_passwords: state.demo.any(&project),
        }
    }

    /// A hidden form field with the session's CSRF token.
    pub fn csrf(&self) -> Markup {
        let token = self.principal.as_ref().map_or("", |p| p.csrf());
        html! { input type="hidden" name="csrf" value=(token); }
    }

    /// A form with one button that POSTs to `action`; `confirm` asks first.
    pub fn button(&self, action: &str, label: &str, confirm: Option<&str>) -> Markup {
        html! {
            form.inline method="post" action=(action) data-confirm=[confirm] {
                (self.csrf())
                button type="submit" { (label) }
            }
        }
    }

    pub fn is_administrator(&self) -> bool {
        self.principal
            .as_ref()
            .is_some_and(Principal::is_administrator)
    }
}

/// A whole page: `title`, then `body` inside the shell.
pub fn page(chrome: &Chrome, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (chrome.alias) }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a.alias href="/" { (chrome.alias) }
                    @if let Some(p) = &chrome.principal {
                        nav {
                            a href="/" { "Dashboard" }
                            a href="/queue" { "Queue" }
                            a href="/dead" { "Dead letters" }
                            a href="/runs" { "Runs" }
                            a href="/definitions" { "Definitions" }
                            @if p.is_administrator() {
                                a href="/export" { "Export" }
                                a href="/users" { "Users" }
                                a href="/audit" { "Audit" }
                            }
                            @if p.is_root() {
                                a href="/system" { "System" }
                            }
                        }
                        div.who {
                            span { (p.name) " · " (p.client) " · " (p.role) }
                            (chrome.button("/logout", "Log out", None))
                        }
                    }
                }
                @if chrome.demo_passwords {
                    div.banner.warning role="alert" {
                        "Demo accounts still have their demo password. Set real passwords with "
                        code { "ferry user add CLIENT USER --role ROLE" }
                        " before anyone else can reach this console."
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Turns API errors of console routes into error pages.
pub async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // API calls and bearer-token calls (scrapers) get the JSON error.
    if auth::is_api(request.uri().path())
        || request
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
    {
        return next.run(request).await;
    }
    let principal = request.extensions().get::<Principal>().cloned();
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let chrome = Chrome::of(&state, principal.as_ref());
    let body = html! {
        p.error { (error.message) }
        p { a href="/" { "Dashboard" } }
    };
    // Keep what the answer said besides its body (Retry-After, cookies).
    let (mut parts, _) = response.into_parts();
    let mut page = (error.status, page(&chrome, "Something went wrong", body)).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in parts.headers.drain().filter_map(|(n, v)| Some((n?, v))) {
        page.headers_mut().entry(name).or_insert(value);
    }
    page
}

/// A time as the console shows it: UTC, to the second, never broken across lines.
pub fn when(at: Timestamp) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) } }
}

/// An optional time, or a dash.
pub fn maybe_when(at: Option<Timestamp>) -> Markup {
    match at {
        Some(at) => when(at),
        None => html! { "–" },
    }
}

/// A coloured label for a state.
pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge " (state) } { (state.replace('_', " ")) } }
}

/// `href` with `key=value` pairs appended as a query string (empty values left out).
pub fn link(path: &str, pairs: &[(&str, String)]) -> String {
    let query = serde_urlencoded::to_string(
        pairs
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Inline script-free SVG bars of `values` (oldest first).
pub fn bars(values: &[u64]) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let width = 4 * values.len().max(1);
    html! {
        svg.bars width=(width) height="24" viewBox={ "0 0 " (width) " 24" } role="img" {
            @for (i, value) in values.iter().enumerate() {
                @let height = (*value as f64 / max as f64 * 22.0).ceil() as u64;
                rect x=(i * 4) y=(24 - height) width="3" height=(height) {
                    title { (value) }
                }
            }
        }
    }
}

/// Static files: the stylesheet and the small script for live lists and confirmations.
pub async fn stylesheet() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/console.css"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("../static/console.js"),
    )
}
